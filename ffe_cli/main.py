"""`ffe`: the parser, one command table, and the one place where errors become exit codes.

Exit codes: 0 success; 2 usage or configuration error (one line naming the key, file and line); 1 runtime
failure; 130 interrupted. Every error an operator can cause derives from ffe_engine.errors.FfeError and carries
its code.
"""

from __future__ import annotations

import argparse
import errno
import functools
import io
import math
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import IO, Any, Callable, NoReturn

from ffe_engine import fmt
from ffe_engine.api import COMMANDS as CONTROL
from ffe_engine.errors import ArgumentError, FfeError, UsageError, unreachable_from
from ffe_engine.market.bounds import PRICE_MAX, PRICE_MIN

from . import commands
from .entry import EarlySignals

Handler = Callable[[argparse.Namespace], int]


GIVEN = "options_given"  # the namespace's set of the options given a value so far


class StoreOnce(argparse.Action):
    """argparse's `store`, but an option given a value twice is refused: `--data-dir A ... --data-dir B` must not
    quietly act on B, nor `--quantity` book the second figure typed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string is not None:
            given: set[str] = namespace.__dict__.setdefault(GIVEN, set())
            if self.dest in given:
                parser.error(f"argument {'/'.join(self.option_strings)}: given twice")
            given.add(self.dest)
        setattr(namespace, self.dest, values)


HELP_WIDTH = 80  # an operator on call often reads --help on an 80-column terminal over SSH


class Help(argparse.RawDescriptionHelpFormatter):
    """argparse's help, wrapped within 80 columns however wide the terminal (a wider one gains nothing: the help's
    lines are short; a narrower one wraps at its own width). The description and epilog are kept as written: a
    list of a command's actions, one to a line (action_list)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=help_width())


def help_width() -> int:
    """The width help is wrapped at: the terminal's, never more than HELP_WIDTH."""
    return min(shutil.get_terminal_size().columns, HELP_WIDTH) - 2


def action_list(title: str, entries: dict[str, str]) -> str:
    """`entries` (name: what it does) as a help's epilog, each wrapped within the help's width under its name."""
    lines = [f"{title}:"]
    for name, what in entries.items():
        lines += textwrap.wrap(f"{name}: {what}", help_width(), initial_indent="  ", subsequent_indent="      ")
    return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake said as the one line every other error is (`ffe: error: ...`, exit 2), not a usage
    block, no abbreviated options (a typo such as `--headles` is refused, never taken for `--headless`), and no
    option given twice."""

    commands: frozenset[str] = frozenset()  # the names of the commands, for the top-level parser

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", Help)
        super().__init__(*args, **kwargs)
        self.register("action", "store", StoreOnce)
        self.register("action", None, StoreOnce)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def print_help(self, file: IO[str] | None = None) -> None:
        # Written as any command's output is: argparse's own writer drops a failed write (a full disk, a closed
        # pipe), and the help would end as if shown.
        (file or sys.stdout).write(self.format_help())


def _path(text: str) -> Path:
    # Path("") is Path("."): `--data-dir "$DATA"` with DATA unset would start an account, or write, wherever the
    # command happens to run.
    if not text:
        raise argparse.ArgumentTypeError("must not be empty (an empty path would mean the current directory)")
    return Path(text)


def _file_path(text: str) -> Path:
    # Path("r.json/") and Path("r.json/.") are Path("r.json"): the slash or dot, which name a directory, would be
    # dropped and the file written.
    if text and os.path.basename(text) in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"{text}: names a directory (it ends in /, . or ..): give the file's name")
    return _path(text)


def _common(p: argparse.ArgumentParser, default: Any = None) -> None:
    """The options every command takes. A subcommand of a command that has them takes them too, with
    default=argparse.SUPPRESS: given before the subcommand's name, they are kept."""
    p.add_argument("--config", type=_path, default=default, help="config file (default ./config.toml)")
    p.add_argument("--env-file", type=_path, default=default, help="dotenv file (default .env next to the config)")
    p.add_argument("--data-dir", type=_path, default=default, help="runtime state directory (database)")
    p.add_argument("--log-dir", type=_path, default=default, help="audit and log directory")


def _whole(text: str) -> int:
    """ASCII digits with an optional sign, as config.toml and the environment take them: int() reads 1_0 as 10 and a
    digit of another script (٣, ３) as 3."""
    if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    try:
        return int(text)
    except ValueError:  # more digits than int() reads (4300): not echoed
        raise argparse.ArgumentTypeError(f"more digits than a whole number here can have ({len(text.strip())})") \
            from None


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


COUNT_MAX = 1_000_000_000  # more records or trades than any account holds; past 2**63, more than SQLite can read


def _count(text: str) -> int:
    """A number of records or trades: 0 or more, and within COUNT_MAX."""
    value = _whole(text)
    if not 0 <= value <= COUNT_MAX:
        raise argparse.ArgumentTypeError(f"must be 0 or more and at most {COUNT_MAX}, got {text}")
    return value


def _finite(text: str, what: str = "a number") -> float:
    """`text` as a float, written as config.toml and the environment take one (ASCII digits: float() reads 1_0 as
    10 and a digit of another script as one); inf and nan are refused as what they are, not as a value too big or
    too small."""
    if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", text.strip(),
                        flags=re.IGNORECASE):
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _seconds(text: str) -> float:
    value = _finite(text, "a number of seconds")
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600, got {text}")
    return value


def _amount(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _price(text: str) -> float:
    value = _amount(text)
    if not PRICE_MIN <= value <= PRICE_MAX:  # the prices ffe computes with (market data's bounds)
        raise argparse.ArgumentTypeError(f"must be from {PRICE_MIN:g} to {PRICE_MAX:g}, got {text}")
    return value


def _currency(text: str) -> str:
    if not text.strip() or text != text.strip():
        raise argparse.ArgumentTypeError(f"must name a currency (BTC, USDT), got {text!r}")
    return text


def _fee(text: str) -> float:
    value = _finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def subcommands(parser: Parser, name: str) -> Any:
    """The subcommands of `ffe NAME`, one of which must be given. Not as argparse requires it, whose refusal names
    its own field for it (`report_command`): with none given, the command names the ones to choose from."""
    subs = parser.add_subparsers(dest=f"{name}_command")
    parser.set_defaults(handler=functools.partial(choose_one, name, subs.choices))
    return subs


def choose_one(name: str, choices: dict[str, Any], args: argparse.Namespace) -> int:
    """The handler of `ffe NAME` given without its subcommand: a subcommand's own handler replaces it."""
    raise ArgumentError(f"ffe {name}: choose one of: {', '.join(choices)}")


def build_parser() -> Parser:
    parser = Parser(prog="ffe", description="Finance Feedback Engine console")
    sub = parser.add_subparsers(dest="command", metavar="command")

    run = sub.add_parser("run", help="run the engine (console by default)")
    _common(run)
    run.add_argument("--headless", action="store_true", help="no UI; log lines on stderr")
    run.add_argument("--max-bars", type=_positive, default=None, help="stop after N bars per symbol")
    run.add_argument("--live", action="store_true",
                     help="allow live trading (needs mode = \"live\", venue.kind = \"ccxt\" and exchange credentials "
                          "that pass the start check)")
    run.set_defaults(handler=commands.run)

    att = sub.add_parser("attach", help="the console of a running headless engine")
    _common(att)
    att.set_defaults(handler=commands.attach)

    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = subcommands(cfg, "config")
    check = cfg_sub.add_parser("check", help="validate and print the effective configuration")
    _common(check)
    check.set_defaults(handler=commands.config_check)

    doc = sub.add_parser("doctor", help="check every invariant of a data directory; names the first violation")
    _common(doc)
    doc.set_defaults(handler=commands.doctor)

    bt = sub.add_parser("backtest", help="replay CSV files through the pipeline at full speed")
    _common(bt)
    bt.add_argument("files", nargs="*", metavar="[SYMBOL=]FILE.csv[.gz]")
    bt.set_defaults(positionals="files")
    bt.add_argument("--report", type=_file_path, default=None, help="write the JSON report here")
    bt.add_argument("--lenient", action="store_true", help="skip bad CSV rows (counted) instead of stopping")
    bt.add_argument("--records", default=None, metavar="LEVEL",
                    help="what the run writes: full, trades or summary (default: backtest.records, full)")
    bt.add_argument("--list", action="store_true", help="list past runs: date, data, record level, size, result")
    bt.add_argument("--clean", action="store_true", help="remove past runs chosen by --keep and/or --older-than")
    bt.add_argument("--keep", default=None, metavar="N", help="with --clean: keep the newest N runs")
    bt.add_argument("--older-than", default=None, metavar="AGE",
                    help="with --clean: only runs begun more than AGE ago (30m, 12h, 7d, 2w)")
    bt.add_argument("--yes", action="store_true", help="with --clean: remove without asking")
    bt.set_defaults(handler=commands.backtest)

    names = [name for name, c in CONTROL.items() if c.ctl]
    ctl = sub.add_parser("ctl", help="control a running engine",
                         epilog=action_list("actions", {n: CONTROL[n].help for n in names}))
    _common(ctl)
    # Optional to argparse, so that `ffe ctl` alone names the actions to choose from (choose_one), as the commands
    # with subcommands do, instead of argparse's "arguments are required: action".
    ctl.add_argument("action", nargs="?", choices=names, metavar="action",
                     help="what to do (the actions are listed below)")
    ctl.add_argument("target", nargs="?", help="approval id (approve, reject), auto|manual (mode), "
                                                "client order id (cancel, settle) or symbol (close, sold-by-hand)")
    ctl.add_argument("second", nargs="?", metavar="filled|canceled", help="how the order ended (settle)")
    ctl.add_argument("--yes", action="store_true",
                     help="confirm without asking (resume of a HALTED engine, flatten, cancel, settle, close, "
                          "sold-by-hand)")
    ctl.add_argument("--quantity", type=_amount, default=None, metavar="Q",
                     help="settle ... filled: the quantity that filled; sold-by-hand: the quantity sold; as the "
                          "exchange's account shows it")
    ctl.add_argument("--price", type=_price, default=None, metavar="P",
                     help="settle ... filled, sold-by-hand: the price, as the exchange's account shows it")
    ctl.add_argument("--fee", type=_fee, default=None, metavar="F",
                     help="settle ... filled: the fill's fee, in --fee-currency; sold-by-hand: the sale's fee in the "
                          "quote currency; as the exchange's account shows it (default 0)")
    ctl.add_argument("--fee-currency", type=_currency, default=None, metavar="C",
                     help="settle ... filled: the currency of --fee, the symbol's base (e.g. BTC, a buy's fee on "
                          "Binance) or quote (default)")
    ctl.add_argument("--own-coins", action="store_true",
                     help="accept: the coins gone beside a position were your own (held before ffe), withdrawn or "
                          "sold, not the position's: the baseline is lowered by what left, the position kept")
    ctl.add_argument("--json", action="store_true", help="print the raw answer as JSON")
    ctl.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                     help="give up after S seconds without an answer (default [control] request_timeout_s)")
    ctl.set_defaults(handler=lambda args: commands.ctl(args) if args.action is not None
                     else choose_one("ctl", dict.fromkeys(names), args))

    alert = sub.add_parser("alert", help="alert channels")
    alert_sub = subcommands(alert, "alert")
    alert_test = alert_sub.add_parser("test", help="send a test alert to every configured channel, report each")
    _common(alert_test)
    alert_test.set_defaults(handler=commands.alert_test)

    audit = sub.add_parser("audit", help="read and verify the audit trail; the story of one decision")
    audit_sub = subcommands(audit, "audit")
    tail = audit_sub.add_parser("tail", help="the last audit records, filtered, or followed as they come")
    _common(tail)
    tail.add_argument("-n", dest="lines", type=_count, default=20, metavar="N", help="how many records (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records until interrupted")
    tail.add_argument("--event", default=None, metavar="NAME,...", help="only these events, e.g. decision,order")
    tail.add_argument("--json", action="store_true", help="the raw JSON lines")
    tail.set_defaults(handler=commands.audit_tail)
    show = audit_sub.add_parser("show", help="votes, gates, approval, orders, fills and P&L of one decision")
    _common(show)
    show.add_argument("decision_id", metavar="DECISION_ID", help="a decision id (or an order or approval id)")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(handler=commands.audit_show)
    verify = audit_sub.add_parser("verify", help="check the audit trail's hash chain and the database's chain head; "
                                                 "exit 1 names the first bad seq")
    _common(verify)
    verify.add_argument("--json", action="store_true", help="one JSON object")
    verify.set_defaults(handler=commands.audit_verify)

    report = sub.add_parser("report", help="reports from the database")
    report_sub = subcommands(report, "report")
    prov = report_sub.add_parser("providers", help="per provider: votes, trades backed, hit rate, return, weight")
    _common(prov)
    prov.add_argument("--last", type=_count, default=20, metavar="N", help="also over the last N trades (default 20)")
    prov.add_argument("--json", action="store_true", help="one JSON object")
    prov.set_defaults(handler=commands.report_providers)
    trades = report_sub.add_parser("trades", help="closed trades with P&L, reason and entry decision")
    _common(trades)
    trades.add_argument("--last", type=_count, default=50, metavar="N", help="the last N trades (default 50, 0 = all)")
    trades.add_argument("--json", action="store_true", help="one JSON object")
    trades.set_defaults(handler=commands.report_trades)

    data = sub.add_parser("data", help="market data files")
    data_sub = subcommands(data, "data")
    dl = data_sub.add_parser("download", help="closed candles from an exchange into CSV files (resumable)")
    _common(dl)
    dl.add_argument("symbols", nargs="+", metavar="SYMBOL", help="e.g. BTC/USDT")
    dl.set_defaults(positionals="symbols")
    dl.add_argument("--exchange", default=None, metavar="ID", help="ccxt exchange id (default: exchange.id)")
    dl.add_argument("--timeframe", default=None, help="candle length, e.g. 1h (default: engine.timeframe)")
    dl.add_argument("--since", default=None, metavar="DATE",
                    help="first candle, e.g. 2024-01-01 (UTC); not needed to continue a file")
    dl.add_argument("--until", default=None, metavar="DATE", help="candles opening before this (default: now)")
    where = dl.add_mutually_exclusive_group()
    where.add_argument("--out", type=_path, default=None, metavar="DIR",
                       help="directory of SYMBOL_TIMEFRAME_EXCHANGE.csv files (default: the data directory)")
    where.add_argument("--file", type=_file_path, default=None, help="write this one file (one symbol)")
    dl.set_defaults(handler=commands.data_download)

    bk = sub.add_parser("backup", help="one compressed file of the records (database, audit trail, configuration)")
    _common(bk)
    bk.add_argument("--to", type=_path, default=None, metavar="DIR",
                    help="write it into DIR (default: backup.dir); older backups there are pruned")
    bk.add_argument("--json", action="store_true",
                    help="print the file, the backups pruned, what interrupted backups left and the manifest as JSON")
    bk.set_defaults(handler=commands.backup)
    bk_sub = bk.add_subparsers(dest="backup_command")
    bk_verify = bk_sub.add_parser("verify", help="check a backup: checksums, integrity, audit trail, agreement")
    _common(bk_verify, default=argparse.SUPPRESS)
    bk_verify.add_argument("file", type=_path, metavar="FILE")
    bk_verify.set_defaults(handler=commands.backup_verify)

    rs = sub.add_parser("restore", help="verify a backup, then put it in place as the data and log directories")
    _common(rs)
    rs.add_argument("file", type=_path, metavar="FILE")
    rs.add_argument("--force", action="store_true", help="move existing records aside (never deleted) and restore")
    rs.set_defaults(handler=commands.restore)

    init = sub.add_parser("init", help="write a commented config.toml and .env.example for a new operator")
    init.add_argument("dir", nargs="?", type=_path, default=Path("."), metavar="DIR", help="where (default .)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(handler=commands.init)

    parser.commands = frozenset(sub.choices)
    return parser


def _help_of(args: argparse.Namespace | None) -> str:
    """The help that lists the options of the command in `args`: `ffe audit tail`, `ffe backtest`, `ffe`."""
    command = getattr(args, "command", None)
    words = [w for w in (command, getattr(args, f"{command}_command", None)) if w] if command else []
    return " ".join(["ffe", *words])


NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)  # what a write to a full or failing disk raises


class ClosedOutput(io.TextIOBase):
    """Standard output when the process was started without one (`>&-`: Python makes sys.stdout None): a write is
    refused as a write to a full disk is, said in one line by `main`, not as a traceback from wherever it came."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "it is closed")

    @property
    def buffer(self) -> "ClosedOutput":  # what writes bytes (ffe audit tail) meets the same
        return self

    def flush(self) -> None:
        pass


class DroppedErrors(io.TextIOBase):
    """Standard error when the process was started without one (`2>&-`: Python makes sys.stderr None): what is
    written to it (log lines, progress) is dropped, as a log line that cannot be written is (logs.write_line); the
    one-line error of a command that fails goes to standard output instead (`_error_stream`)."""

    def write(self, text: str) -> int:
        return len(text)

    def isatty(self) -> bool:
        return False


def _error_stream() -> Any:
    """Where the one-line error of a failed command goes: standard error, or standard output without one."""
    return sys.stdout if isinstance(sys.stderr, DroppedErrors) else sys.stderr


def _reader_gone() -> None:
    """stdout's reader went away (`| head`): stop quietly, and keep the interpreter's last flush from failing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _handled(handler: Handler, args: argparse.Namespace) -> int:
    """The command, with a path it meets that cannot be reached (a directory closed to this user, a name too long, a
    loop of symbolic links) said as the one line naming it, exit 2, wherever the command first touched it. Any other
    OSError or RuntimeError is an internal failure, left as it is, traceback included."""
    try:
        return handler(args)
    except (OSError, RuntimeError) as exc:
        said = unreachable_from(exc)
        if said is None:
            raise
        raise said from None


def _options_before_the_command(parser: Parser, given: list[str], extra: list[str]) -> NoReturn:
    """`ffe --config X config check`: the options were taken as run's, or refused, and the command left over. The
    line says the command with the options after it, when it takes them; else which of them it does not take."""
    command = next(word for word in extra if word in parser.commands)
    at = len(given) - len(extra) + extra.index(command) if given[-len(extra):] == extra else given.index(command)
    moved = given[at:] + given[:at]
    try:
        parsed, left = parser.parse_known_args(moved)
    except (UsageError, SystemExit):  # a value it refuses: the options it does not take are not known
        parsed, left = None, [word for word in given[:at] if word.startswith("-")]
    if not left:
        parser.error(f"unrecognized arguments: {' '.join(extra)}; options go after the command: "
                     f"`ffe {' '.join(moved)}`")
    name = _help_of(parsed) if parsed is not None else f"ffe {command}"
    refused = ", ".join(word for word in left if word.startswith("-"))
    raise UsageError(f"`{name}` takes no {refused} (options go after the command; see `{name} --help`)")


def _said_after_the_command(parser: Parser, given: list[str]) -> None:
    """`ffe --data-dir a --data-dir b config check`: a mistake in the options before a command, refused as run's, is
    refused as the command's when it is one there too (its line names the command's help); else nothing is said."""
    command = next((word for word in given if word in parser.commands), None)
    if command is not None:
        at = given.index(command)
        parser.parse_known_args(given[at:] + given[:at])


def main(argv: list[str] | None = None, *, early: EarlySignals | None = None) -> int:
    """`early`: the signals taken since the process began (ffe_cli.entry), for a headless run to act on; every
    other command gets them back at once."""
    if sys.stdout is None:
        sys.stdout = ClosedOutput()
    if sys.stderr is None:
        sys.stderr = DroppedErrors()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    given = argv
    args: argparse.Namespace | None = None  # until parsed: a mistake found before then has its help in its line
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    try:
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as done:
            if not done.code:  # the help, printed: flushed here, so that a full standard output is said as below
                sys.stdout.flush()
            raise
        except UsageError:
            if argv is not given:  # options before a command, taken as run's: the command's own help says them
                _said_after_the_command(parser, given)
            raise
        if extra and given and given[0].startswith("-") and any(word in parser.commands for word in extra):
            _options_before_the_command(parser, given, extra)
        # argparse gives a list positional the arguments before the first option only: the files of
        # `ffe backtest A.csv --lenient B.csv` are A.csv and B.csv.
        listed = getattr(args, "positionals", None)
        if extra and listed is not None and not any(x.startswith("-") for x in extra):
            getattr(args, listed).extend(extra)
        elif extra:  # the help that lists the command's own options (`ffe --help` when no command was named)
            help_of = _help_of(args if argv is given else None)
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see `{help_of} --help`)")
        handler: Handler | None = getattr(args, "handler", None)
        if early is not None:
            if handler is commands.run and args.headless:
                args.early = early
            else:
                early.release()
        if handler is None:
            parser.print_help()
            sys.stdout.flush()
            return 2
        code = _handled(handler, args)
        sys.stdout.flush()  # what is still buffered: a write that fails is said below, not by the interpreter's exit
        return code
    except FfeError as exc:
        message = str(exc)
        if isinstance(exc, ArgumentError):  # found by the command, which cannot know how it was typed
            message += f" (see `{_help_of(args)} --help`)"
        # One line, whatever it quotes (a file's header cells, a path): a character a terminal would act on, a new
        # line among them, is shown as its escape.
        message = fmt.printable(commands.masked(message))
        print(f"ffe: error: {message}" if exc.exit_code != 130 else f"ffe: {message}", file=_error_stream())
        return exc.exit_code
    except BrokenPipeError:
        _reader_gone()
        return 0
    except OSError as exc:
        # A write that found no room, with no file named: standard output on a full disk (`> /dev/full`), which no
        # command wraps (the records' own failures name their file), or closed. One line; stdout's last flush would
        # fail again.
        closed = isinstance(sys.stdout, ClosedOutput) and exc.errno == errno.EBADF
        if not closed and (exc.errno not in NO_ROOM or exc.filename is not None):
            raise
        if not closed:
            _reader_gone()
        print(f"ffe: error: standard output cannot be written: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the command could say what it was doing (its modules still loading)
        print("ffe: interrupted", file=_error_stream())
        return 130


if __name__ == "__main__":
    sys.exit(main())
