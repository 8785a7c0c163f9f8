"""One function per verb: settings, then a library call, then what is printed. Errors are raised, never printed
here (`ffe_cli.main` prints them and picks the exit code)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import signal
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Everything heavier than these (asyncio, the settings' sections, the engine, the audit tools, the console)
# is imported by the verbs that use it: every `ffe` process starts with only what its verb needs, and a mistake on
# the command line is said before any of it is loaded.
from ffe_engine import fmt, present, reach, settings_files, tables
from ffe_engine.api import COMMANDS as CONTROL, UNDER_WAY
from ffe_engine.errors import (ArgumentError, ControlError, FfeError, Interrupted, NotADatabase, StartError,
                              StorageError, UsageError)

if TYPE_CHECKING:
    from ffe_engine.config import Settings


# The secrets of the settings this command loaded: taken out of its error line, which may quote what it was given (a
# symbol or an id an operator pasted a key into, a file's bad cell).
_secrets: set[str] = set()


def settings_from(args: argparse.Namespace) -> Settings:
    from ffe_engine.config import load_settings

    settings = load_settings(config_path=args.config, env_file=args.env_file, data_dir=args.data_dir,
                             log_dir=args.log_dir)
    _secrets.update(settings.secrets())
    return settings


def masked(text: str) -> str:
    """`text` with the secrets of the settings this command loaded replaced, as its logs have them; before any was
    loaded (a mistake in the arguments), those the environment and the .env file the command names hold."""
    env_file = settings_files.named_in(sys.argv[1:])
    if not _secrets and not _may_quote_a_variable(text, env_file):
        return text  # the usual case, said without importing the settings (a usage error is said at once)
    from ffe_engine.config import secrets_around
    from ffe_engine.redact import Redactor

    return Redactor(_secrets or secrets_around(env_file)).text(text)


def _may_quote_a_variable(text: str, env_file: Path) -> bool:
    """Whether `text` may hold the value of an FFE_ variable of the environment or of the .env file (which are
    secrets is the settings' to say): a .env file with anything in it is read as the settings read it (its quotes,
    comments and ${VARIABLES}), not guessed at here."""
    values = [v for k, v in os.environ.items() if k.upper().startswith("FFE_")]
    return bool(settings_files.regular_bytes(env_file, head=True)) or any(len(v) >= 8 and v in text for v in values)


def _print(text: str) -> None:
    """A command's output, line by line: a character a terminal would act on (a path or a name of the user's with an
    escape sequence or a bell in it) shown as its escape, never passed on to act. A line whose words may hold a new
    line of their own is made printable whole first (fmt.printable), so that it stays one line."""
    sys.stdout.write("\n".join(map(fmt.printable, text.split("\n"))) + "\n")
    sys.stdout.flush()


def _line(text: str) -> None:
    """One line of output that quotes a path or a name of the user's: a new line in it is shown as its escape too."""
    _print(fmt.printable(text))


def _confirmed(question: str) -> bool:
    """Whether the operator answers `question` yes at the terminal; end of input (Ctrl-D) is a no."""
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        sys.stdout.write("\n")  # the prompt's line ended, as an answer would end it
        return False


# ---------------------------------------------------------------------------------------------------- run, attach
def run(args: argparse.Namespace) -> int:
    import asyncio

    from ffe_engine.config import require_config_file

    require_config_file(args.config)
    settings = settings_from(args)  # a bad configuration is said before the engine's modules are even imported
    from ffe_tui import keys

    keys.keymap(dict(settings.tui.keys), keys.where(settings))  # refused headless too, as `config check` does
    from ffe_engine.kernel import check_live

    live = check_live(settings, args.live)
    if not args.headless:
        _console_can_draw("ffe run --headless")
        from ffe_tui.app import run_console

        return run_console(settings, live=live, max_bars=args.max_bars)
    from ffe_engine.host import run_headless

    return asyncio.run(run_headless(settings, live=live, max_bars=args.max_bars, early=getattr(args, "early", None)))


def _console_can_draw(instead: str) -> None:
    """UsageError when the process has no standard error: the console draws on it (its writer would die on the
    first screen, and the loop the engine runs on would wait on it for ever)."""
    if sys.__stderr__ is None:
        raise UsageError(f"the console draws on standard error, which is closed (2>&-): give it a terminal, or run "
                         f"`{instead}`")


def attach(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _console_can_draw("ffe ctl status")
    _listened_on(settings)
    if not sys.stderr.isatty():
        # No terminal to draw the console on (a script, a pipe): the engine's answer first, so that what ends it is
        # one line, as for `ffe ctl`. On a terminal the console is drawn at once and says it is connecting.
        from ffe_engine.remote import CONNECT_TRIES

        answer = _ask(settings, "status", {}, settings.control.request_timeout_s, tries=CONNECT_TRIES)
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error")))
    from ffe_tui.app import run_console

    return run_console(settings, live=False, max_bars=None, attach=True)


def _listened_on(settings: Settings) -> None:
    """A connection to the engine's socket, made and closed at once, asking nothing: no socket, or nobody listening
    on it, is said here in one line. An engine that takes the connection but does not answer yet (frozen, busy) is
    the console's to say, with its kill switch on screen meanwhile."""
    import socket

    from ffe_engine.control import no_engine

    path = settings.socket_path
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(str(path))
    except BlockingIOError:
        pass  # its queue of new connections full: an engine is there, busy
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(no_engine(path, settings.data_dir)) from None
    except PermissionError:
        raise ControlError(f"{path}: permission denied (the engine runs as another user?)") from None
    except OSError as exc:
        raise ControlError(f"the engine on {path} did not answer: {exc}") from None
    finally:
        probe.close()


def config_check(args: argparse.Namespace) -> int:
    from ffe_engine import overrides
    from ffe_engine.backtest_runs import refuse_engine_on_run_folder
    from ffe_engine.config import check_mode, render_settings
    from ffe_engine.market.base import check_market
    from ffe_engine.monitor import check_bind
    from ffe_engine.store import SchemaError, saved_state

    from ffe_tui import keys

    settings = settings_from(args)
    # The console validates [tui] keys when it starts: the same check here, so what run would refuse is said now.
    keys.keymap(dict(settings.tui.keys), keys.where(settings))
    if settings.venue.kind == "ccxt":  # the [exchange] settings an order venue needs, as the start checks them
        from ffe_engine.venues.base import VenueError
        from ffe_engine.venues.ccxt_venue import check_venue_settings

        try:
            check_venue_settings(settings)
        except VenueError as exc:
            raise StartError(str(exc)) from None
    check_mode(settings)  # the mode and the venue, as every start checks them
    check_market(settings)  # an exchange feed's exchange, likewise
    check_bind(settings)  # the monitor's endpoint, as the start checks it
    refuse_engine_on_run_folder(settings)  # a backtest run's folder: no start comes there to take its saved state
    if settings.market.source == "replay":  # a replayed market's files, read and checked as the start does
        from ffe_engine.market.replay import replay_series

        replay_series(settings)
    text = render_settings(settings)
    from ffe_engine.store import hot_journal

    if hot_journal(settings.db_path) is not None:  # what it holds is known once the next start has rolled it back
        _print(f"{text}\n\n# {settings.db_path}: a transaction a killed start never committed is beside it; the next "
               "start rolls it back, then goes on")
        return 0
    try:
        saved = saved_state(settings.db_path)
    except (StorageError, SchemaError, NotADatabase) as exc:  # the configuration is valid; the database is not
        _print(f"{text}\n\n# {exc}; the next start will stop on it (exit {exc.exit_code})")
        return 0
    found = overrides.find(settings, saved, live=settings.mode == "live") if saved else []
    if saved:  # a start goes on from its own source's market only (an exchange's: books made on none)
        from ffe_engine.market.base import MarketStateError, check_books
        from ffe_engine.store import EXCHANGE_BOOKS

        try:
            check_books(saved.get("market"), bool(saved.get(EXCHANGE_BOOKS)), settings.market.source)
        except MarketStateError as exc:  # the start refuses it: said as a damaged database is, exit 0
            text += f"\n\n# {exc}; the next start will stop on it (exit {exc.exit_code})"
        except ValueError:
            pass  # not a market state this check can read; the start says what it finds
    refused = overrides.quote_refused(settings.venue.quote, (saved or {}).get("books_quote"))
    if refused is not None:
        text += f"\n\n# {refused}; the next start will stop on it (exit {StartError.exit_code})"
    if found:
        # As comments, so the output stays a valid configuration file.
        text += (f"\n\n# saved state in {settings.db_path} takes precedence at the next start:\n"
                 + "\n".join(f"#   {o.setting}: {o.message}" for o in found))
    _print(text)
    return 0


def doctor(args: argparse.Namespace) -> int:
    from ffe_engine.doctor import check

    settings = settings_from(args)
    _run_beside_its_trail(settings)
    _print(check(settings).summary())
    return 0


# ---------------------------------------------------------------------------------------------------- backtest
def backtest(args: argparse.Namespace) -> int:
    from ffe_engine import backtest as bt
    from ffe_engine.backtest_report import format_summary
    from ffe_engine.backtest_runs import refuse_run_folder
    from ffe_engine.audit import setup_logging
    from ffe_engine.interrupts import run_cancelled_once

    if args.list or args.clean:
        return backtest_runs(args)
    for option, given in (("--keep", args.keep), ("--older-than", args.older_than), ("--yes", args.yes)):
        if given not in (None, False):
            raise ArgumentError(f"ffe backtest {option} goes with --clean")
    if not args.files:
        raise ArgumentError("ffe backtest needs at least one [SYMBOL=]FILE.csv (or --list, --clean)")
    if args.records is not None and args.records not in bt.RECORD_LEVELS:
        # Said before the files are read and the run's folder is made, as the other options' mistakes are.
        raise ArgumentError(f"--records must be one of {', '.join(bt.RECORD_LEVELS)}, got {args.records!r}")
    settings = settings_from(args)
    refuse_run_folder(settings)
    report_path = _report_path(args, settings) if args.report else None
    # stdout is the summary; the engine's log lines go to stderr, with the configured secrets redacted.
    setup_logging(settings.logging.level, secrets=settings.secrets(), stream=sys.stderr)
    cache = bt.data_cache(settings)
    try:
        series = bt.load_files(args.files, lenient=args.lenient, cache=cache)
    except KeyboardInterrupt:
        raise Interrupted("backtest interrupted while it read its files: nothing written") from None
    for symbol, ser in series.items():
        if ser.skipped:  # said at once, on stderr, and again in the summary
            sys.stderr.write(masked(f"ffe: {symbol}: {fmt.counted(ser.skipped, 'bad row')} skipped (--lenient); first: "
                                    f"{'; '.join(ser.skip_reasons)}\n"))
    run_id = bt.new_run_id()
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        report = run_cancelled_once(bt.run_backtest(settings, series, run_id=run_id, records=args.records,
                                                    cache=cache))
    except KeyboardInterrupt:
        data_dir, log_dir = bt.run_dirs(settings, run_id)
        level = args.records or settings.backtest.records
        if level == "summary":
            raise Interrupted(f"backtest {run_id} interrupted (records: summary, nothing written)") from None
        if level == "trades":
            raise Interrupted(f"backtest {run_id} interrupted; its records so far are in "
                              f"{data_dir / 'ffe.db'}") from None
        raise Interrupted(f"backtest {run_id} interrupted; its records so far are in {data_dir / 'ffe.db'} and "
                          f"{log_dir / bt.AUDIT_NAME}") from None
    try:  # the run done, ^C is ignored until what it did is said (run_cancelled_once)
        try:
            _print(masked(format_summary(report)))  # its skipped rows quote the file's cells
        finally:  # written when the summary's reader went away (`| head`) too: the user asked for it
            if report_path is not None:
                try:
                    _write_whole(report_path, json.dumps(report, indent=1))
                except OSError as exc:  # checked before the run: the disk filled or the directory changed since
                    raise StorageError(f"--report {args.report}: cannot write ({exc.strerror or exc})") from None
    finally:
        signal.signal(signal.SIGINT, interrupt)
    return 0


def _write_whole(path: Path, text: str) -> None:
    """`text` as the file at `path`, whole or not at all: written beside it, then put in its place, so that a write
    that fails part way (a full disk) leaves what was there before, never a file cut short. A FIFO, a pipe or a
    device (/dev/stdout, `>(cmd)`) is written into: it is the user's way of taking the report on, not a file to
    replace."""
    fd = own_descriptor(str(path))
    if fd is not None:  # the descriptor the shell opened (a redirect to a file included): written at its offset
        if fd == 1:
            sys.stdout.flush()  # after the summary already printed there
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
        return
    if _is_special(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(part, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


SQLITE_HEADER = b"SQLite format 3\x00"
# A write-ahead log starts with one of these (big-endian): it holds committed transactions its database lacks yet.
WAL_MAGICS = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
# The files SQLite keeps beside a database, named after it: writing one loses or corrupts the database's changes.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _overwrites(path: Path, settings: Settings, inputs: list[Path], read_from: list[Path]) -> str | None:
    """What writing a file of the user's at `path` would destroy, said as the end of a sentence; None when nothing of
    the account's or the run's. Refused: an input of the run, a file the settings are read from (`read_from`, there
    or not yet: a report written there would be read as settings), the control
    socket, anything in the data, log or backup directory (the database, its -wal and -shm, the audit trail, the
    locks, a backtest's records, the backups), any SQLite database, however it is named or linked to, and the -wal,
    -shm or -journal file beside one (another account's) or a write-ahead log, and any other file but a report an
    earlier --report wrote (report_file.py): another account's audit trail, a lock, a backup, a file of the user's."""
    target = path.resolve()
    for what, files in (("is an input file of the run", inputs),
                        ("is a file the settings are read from", [*settings.source_files, *read_from]),
                        ("is the engine's control socket", [settings.socket_path])):
        for file in files:
            if target == file.resolve() or _same_file(target, file):
                return what
    for what, directory in (("the data directory", settings.data_dir), ("the log directory", settings.log_dir),
                            ("the backup directory", Path(settings.backup.dir))):
        if target.is_relative_to(directory.resolve()):
            return f"is inside {what} {directory}"
    for suffix in SQLITE_SIDE_FILES:
        if target.name.endswith(suffix) and target.name != suffix:
            database = target.with_name(target.name[: -len(suffix)])
            if database.exists() or database.is_symlink():
                return f"is the {suffix} file of {str(path)[: -len(suffix)]}"
    if _is_special(target):
        return None  # never opened to be read: a FIFO would block until someone writes to it
    try:
        with open(target, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError:
        return None  # no file there yet, or one that cannot be read: the checks of the path itself say what follows
    if head == SQLITE_HEADER:
        return "is an SQLite database"
    if head[:4] in WAL_MAGICS:
        return "is an SQLite write-ahead log"
    from .report_file import not_a_report

    return not_a_report(target) if target.is_file() else None


def own_descriptor(text: str) -> int | None:
    """The number of this process's own descriptor a path names (/dev/stdout, /dev/stderr, /dev/fd/N,
    /proc/self/fd/N), whatever it is open on; None for any other path. Opened by name it would be opened anew (a
    file redirected to truncated, or replaced by a rename): it is written into as it is."""
    named = {"/dev/stdout": 1, "/dev/stderr": 2}
    if text in named:
        return named[text]
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return int(text[len(prefix):])
    return None


def _is_special(path: Path) -> bool:
    """A FIFO, a pipe, a device: something at `path` that is neither a regular file nor a directory."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names (a hard link): its content is the same whichever name is written."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _input_files(args: list[str]) -> list[Path]:
    """The files of a backtest's `[SYMBOL=]FILE` arguments; one that names none is refused when the files are read."""
    from ffe_engine.market.csvdata import parse_symbol_arg

    found = []
    for arg in args:
        try:
            found.append(parse_symbol_arg(arg)[1])
        except FfeError:
            continue
    return found


def _report_path(args: argparse.Namespace, settings: Settings) -> Path:
    """Where `--report` writes, checked before the run, so that a run is not lost to a path it cannot write at its
    end: nothing of the account's or the run's (_overwrites), not a directory, in a directory that is there (never
    made: a file standing where a directory should be, or no directory, refused). A FIFO, a pipe or a device is
    returned as given, to be written in place; a link, as the file it links to."""
    from ffe_engine.settings_files import settings_paths

    text = args.report
    path = Path(text)
    fd = own_descriptor(str(text))
    if fd is not None:  # the user's own redirect: written into as it is (_write_whole), whatever it is open on
        try:
            writable = (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
        except OSError:
            raise UsageError(f"--report {text}: descriptor {fd} is not open") from None
        if not writable:
            raise UsageError(f"--report {text}: descriptor {fd} is not open for writing")
        return path
    read_from = list(settings_paths(args.config, args.env_file))
    reach.resolved(path, "--report")  # a loop of links on the way said first, as the path given
    overwrites = _overwrites(path, settings, _input_files(args.files), read_from)
    if overwrites is not None:
        raise UsageError(f"--report {text}: {overwrites}; give another path")
    if reach.is_dir(path, "--report"):
        raise UsageError(f"--report {text}: is a directory; give the path of a file")
    if _is_special(path):  # written in place (_write_whole): its directory is not written to
        if not os.access(path, os.W_OK):
            raise UsageError(f"--report {text}: cannot be written (permissions)")
        return path
    if path.is_symlink():  # the file it links to is written (and made), the link kept
        path = path.resolve()
    for parent in reversed([path.parent, *path.parent.parents]):
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--report {text}: {parent} is not a directory")
    # Never made: a mistyped path would leave a tree of directories behind, the run's failure or not.
    if not reach.is_dir(path.parent, "--report"):
        raise UsageError(f"--report {text}: its directory {path.parent} does not exist (make it first)")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--report {text}: cannot be written (permissions)")
    return path


def backtest_runs(args: argparse.Namespace) -> int:
    """`--list` and `--clean`: the past runs on disk (ffe_engine/backtest_runs.py)."""
    from datetime import datetime, timezone

    from ffe_engine import backtest_runs as past

    if args.list and args.clean:
        raise ArgumentError("ffe backtest takes --list or --clean, not both")
    verb = "--list" if args.list else "--clean"
    if args.files:
        raise ArgumentError(f"ffe backtest {verb} takes no files (got {args.files[0]})")
    if args.records is not None or args.report is not None or args.lenient:
        raise ArgumentError(f"ffe backtest {verb} takes no --records, --report or --lenient")
    settings = settings_from(args)
    past.refuse_run_folder(settings)  # a run's folder, or the runs' own: none of the account's runs are in it
    runs = past.find_runs(settings)
    where = settings.data_dir / "backtests"
    if args.list:
        for option, given in (("--keep", args.keep), ("--older-than", args.older_than), ("--yes", args.yes)):
            if given not in (None, False):
                raise ArgumentError(f"ffe backtest {option} goes with --clean, not --list")
        _print("\n".join(map(fmt.printable, past.list_lines(runs, where))))
        return 0
    keep = past.parse_keep(args.keep) if args.keep is not None else None
    older = past.parse_age(args.older_than) if args.older_than is not None else None
    chosen = past.to_clean(runs, keep=keep, older_than_s=older, now=datetime.now(timezone.utc))
    if not chosen:
        _line(f"nothing to remove: {fmt.counted(len(runs), 'run')} in {where} (none chosen by the options)")
        return 0
    total = fmt.size(sum(r.size for r in chosen))
    _print(f"{'removing' if args.yes else 'would remove'} {len(chosen)} of {fmt.counted(len(runs), 'run')}, {total}:")
    for run in chosen:
        _print("  " + past.run_line(run))
        for folder in run.folders:
            _line(f"    {folder} -> {folder.resolve()}" if folder.is_symlink() else f"    {folder}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("ffe backtest --clean would remove these runs: add --yes to confirm")
        if not _confirmed(f"remove {len(chosen)} runs? [y/N] "):
            raise UsageError("ffe backtest --clean: not confirmed, nothing removed")
    # A run that cannot be removed is said in one line, and the others are removed all the same.
    refused = [f"{run.run_id} not removed: {why}" for run in chosen if (why := past.remove(run)) is not None]
    left = f"{len(refused)} not removed; " if refused else ""
    _print(f"removed {fmt.counted(len(chosen) - len(refused), 'run')}; {left}{len(runs) - len(chosen)} kept")
    if refused:
        raise FfeError("; ".join(refused))
    return 0


# ---------------------------------------------------------------------------------------------------- init, data
def init(args: argparse.Namespace) -> int:
    from ffe_engine.scaffold import write_starter_files

    for path in write_starter_files(args.dir, force=args.force):
        _print(f"wrote {fmt.printable(str(path))}")  # a name is the user's: never an escape the terminal acts on
    ffe = _ffe_as_run()
    if args.dir != Path("."):
        ffe = os.path.abspath(ffe) if os.sep in ffe else ffe  # it follows a cd
    # Quoted for the shell: pasted as printed, a name with a space or a non-ASCII letter stays one word.
    ffe = shlex.quote(ffe)
    # A name starting with "-" is read by cd as an option (`cd -` goes back): "./" before it makes it a path.
    where = str(args.dir) if not str(args.dir).startswith("-") else f"./{args.dir}"
    run = f"{ffe} run" if args.dir == Path(".") else f"cd {_shell_word(where)} && {ffe} run"
    _print(fmt.printable(f"next: edit config.toml; credentials go in .env (see .env.example); then {run}"))
    return 0


def _shell_word(text: str) -> str:
    """`text` as one word for the shell, pasted as printed: quoted (shlex), or where it holds a character a terminal
    would act on (a new line, an escape), in bash's $'...' quoting, which says such characters as escapes."""
    if fmt.unprintable(text) is None:
        return shlex.quote(text)
    return "$'" + "".join(_ansi_c(c) for c in text) + "'"


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _ansi_c(c: str) -> str:
    if c in "\\'":
        return "\\" + c
    if fmt.unprintable(c) is None:
        return c
    if c in _NAMED:
        return _NAMED[c]
    if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte of the name that is no UTF-8 (a surrogate escape): that byte itself
        return f"\\x{ord(c) - 0xDC00:02x}"
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"


def _ffe_as_run() -> str:
    """How to type ffe again: `ffe` when that is the one on the PATH (or ffe runs as a module), else the script that
    was run (`make install` puts it in .venv/bin, not on the PATH)."""
    import shutil

    script = sys.argv[0]
    if Path(script).name != "ffe" or shutil.which("ffe") == os.path.abspath(script):
        return "ffe"
    return script


def data_download(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from ffe_engine.download import Request, download, progress_for

    settings = settings_from(args)
    exchange = settings.exchange
    if args.exchange is not None and args.exchange != exchange.id:
        # The configured URLs, options and sandbox belong to the configured exchange, not to this one.
        exchange = type(exchange)().model_copy(update={"id": args.exchange, "timeout_ms": exchange.timeout_ms})
    # The exchange's id as the line that refuses it names it: the flag, or the key and where it was set.
    named = "--exchange" if args.exchange is not None else settings.blame(("exchange", "id"), "exchange.id")
    timeframe = args.timeframe if args.timeframe is not None else settings.engine.timeframe  # "" is refused
    request = Request(exchange=exchange, exchange_named=named, symbols=list(args.symbols), timeframe=timeframe,
                      since=args.since, until=args.until,
                      out_dir=args.out if args.out is not None else settings.data_dir, file=args.file)
    # The reads' "retrying" warnings would otherwise land on stderr through logging's last resort; the outcome
    # (done, or one line saying what failed) is what the operator reads.
    venues = logging.getLogger("ffe_engine.venues")
    if not any(isinstance(h, logging.NullHandler) for h in venues.handlers):
        venues.addHandler(logging.NullHandler())
    asyncio.run(download(request, progress=progress_for(sys.stderr)))
    return 0


# ---------------------------------------------------------------------------------------------------- ctl
TARGET_WORDS = {"approve": "an approval id", "reject": "an approval id", "mode": "auto or manual",
                "cancel": "an order's client order id (from `ffe ctl orders`)",
                "settle": "an order's client order id (from `ffe ctl orders`), then filled or canceled",
                "close": "a symbol with an open position (from `ffe ctl trades`)",
                "sold-by-hand": "the symbol of the position whose coins were sold (from `ffe ctl trades`)"}


def _ctl_args(args: argparse.Namespace) -> dict[str, Any]:
    command = CONTROL[args.action]
    request: dict[str, Any] = {"by": "ctl"}
    if command.target is not None:
        if not args.target:
            raise ArgumentError(f"ffe ctl {args.action} needs {TARGET_WORDS.get(args.action, command.target)}")
        if command.target == "mode" and args.target not in ("auto", "manual"):
            raise ArgumentError("ffe ctl mode needs auto or manual")
        request[command.target] = args.target
    elif args.target:
        raise ArgumentError(f"ffe ctl {args.action} takes no argument (got {args.target!r})")
    if command.second is not None:
        if args.second not in ("filled", "canceled"):
            raise ArgumentError(f"ffe ctl {args.action} needs {TARGET_WORDS.get(args.action, command.second)}")
        request[command.second] = args.second
    elif args.second:
        raise ArgumentError(f"ffe ctl {args.action} takes {'one argument' if command.target else 'no argument'} "
                            f"(got {args.second!r})")
    given: dict[str, Any] = {k: v for k in ("quantity", "price", "fee", "fee_currency")
                             if (v := getattr(args, k, None)) is not None}
    if getattr(args, "own_coins", False):
        given["own_coins"] = True
    for name in given:
        if name not in command.options:
            takers = [f"ffe ctl {c.name}" for c in CONTROL.values() if name in c.options]
            raise ArgumentError(f"--{name.replace('_', '-')} goes with {' and '.join(f'`{t}`' for t in takers)}, "
                                f"not {args.action}")
    if args.action == "settle":  # the outcome says which it takes: a fill's quantity, price and fee, or none
        if args.second == "canceled" and given:
            named = [f"--{name.replace('_', '-')}" for name in given]
            said = ", ".join(named[:-1]) + f" or {named[-1]}" if len(named) > 1 else named[0]
            raise ArgumentError(f"ffe ctl settle ID canceled takes no {said}: nothing filled")
        if "fee_currency" in given and "fee" not in given:
            raise ArgumentError("--fee-currency names the currency of --fee: give the fee too")
        unsaid = [f"--{name}" for name in ("quantity", "price") if args.second == "filled" and name not in given]
        if unsaid:
            raise ArgumentError(f"ffe ctl settle ID filled needs {' and '.join(unsaid)}, as the exchange's account "
                                "shows it")
    missing = [f"--{name}" for name in command.required if name not in given]
    if missing:
        raise ArgumentError(f"ffe ctl {args.action} needs {' and '.join(missing)}, as the exchange's account shows "
                            "them")
    request.update(given)
    if args.action == "resume":
        request["confirm"] = args.yes
    if command.confirm is not None and not args.yes and not sys.stdin.isatty():
        raise UsageError(f"ffe ctl {args.action} would {command.confirm}: add --yes to confirm")
    return request


def _confirm(args: argparse.Namespace, settings: Settings, request: dict[str, Any], timeout: float) -> None:
    """At a terminal, the question a command that needs --yes asks, naming the order or position it acts on as the
    engine has it now. Nothing is asked about an order or position the engine does not have: the command goes,
    and the engine's refusal says so."""
    command = CONTROL[args.action]
    if command.confirm is None or args.yes:
        return
    about = ""
    if command.target in ("id", "symbol"):
        try:
            answer = _ask(settings, "status", {"by": "ctl"}, timeout)
        except ControlError as exc:  # asked before the command: say it was not sent
            raise ControlError(f"{exc}; the {args.action} was not sent") from None
        if not answer.get("ok"):
            return  # the command's own answer says what is wrong
        status = answer.get("result") or {}
        about = _target_now(status, command.target, request[command.target])
        if not about:
            return
        if args.action == "close":
            # The position shown, by its opening time: one opened in the symbol since (the shown one closed while
            # the question waited) is refused by the engine, nothing sent, not closed unseen.
            (shown,) = [p for p in status["positions"] if p.get("symbol") == request["symbol"]]
            request["opened_ts"] = shown["opened_ts"]
    if not _confirmed(f"{command.confirm}{about}? [y/N] "):
        raise UsageError(f"ffe ctl {args.action}: not confirmed, nothing sent")


def _target_now(status: dict[str, Any], kind: str, target: str) -> str:
    """' (what the order or position is now)', or "" when the engine has none of that id or symbol (dust is none)."""
    if kind == "id":
        for o in status.get("orders") or []:
            if o.get("client_order_id") == target:
                at = f" at {fmt.price(o['price'])}" if o.get("price") is not None else ""
                return (f" ({fmt.printable(target)}: {o['side']} {fmt.qty(o['quantity'])} {o['symbol']} {o['type']}"
                        f"{at}, filled {fmt.qty(o['filled'])}, {o['status']}, {fmt.duration(o.get('age_s'))} old)")
        return ""
    for p in status.get("positions") or []:
        # Dust is no position to close at market: not asked about, the engine's refusal says what it is.
        if p.get("symbol") == target and not p.get("dust"):
            return (f" ({p['side']} {fmt.qty(p['quantity'])} {target}, entry {fmt.price(p['entry'])}, now "
                    f"{fmt.price(p['last'])}, {fmt.pct(p['pnl_pct'], signed=True)})")
    return ""


def _render(action: str, result: Any) -> str:
    if action == "status":
        from ffe_engine.outage import outage, outage_only

        r = result
        state = f"{r['state']} ({fmt.printable(str(r['state_reason']))})"  # stored as a request gave it
        if r.get("ended"):  # nothing runs it now: the state it was left in is the one it starts in again
            state = f"STOPPED ({r['ended']}): was {state}"
        dust = sum(1 for p in r["positions"] if p.get("dust"))
        blocked = r.get("reconcile_blocked") or []
        # Nothing compared (the exchange unreachable, or refusing this machine's clock) is no difference: said as
        # what it is, whatever the state's reason says (a halt hides reconciliation's).
        held = (f"  RECONCILE: {outage(blocked).reason} (ffe ctl why)" if outage_only(blocked) else
                f"  RECONCILE {len(blocked)} difference(s) hold entries (ffe ctl why)" if blocked else "")
        hold = r.get("venue_hold")
        # No equity while the cash may count a recovered fill twice: said instead of a figure made from it.
        equity = (f"equity -: {tables.CASH_UNRECONCILED}" if r.get("cash_unreconciled")
                  else f"equity {fmt.money(r['equity'])}")
        return (f"{r['mode']} {state}  {equity}  "
                f"positions {len(r['positions']) - dust}{f'  dust {dust}' if dust else ''}  "
                f"open orders {len(r['orders'])}  pending approvals {len(r['approvals'])}  "
                f"approval {r['approval_mode']}"
                + held
                + (f"  HOLD to {fmt.clock(hold['until'])}: the exchange's Retry-After (ffe ctl why)" if hold else ""))
    if action in ("halt", "flatten"):  # the words of the console's banner
        return present.kill_headline({**result, "action": action, "by": "ctl"})
    if action == "approve":
        return present.approve_answer(result)
    if action == "reject":
        return f"rejected {result['approval_id']}"
    if action == "accept":
        return f"accepted {len(result)} differences" if result else "nothing to accept"
    if action == "settle":
        r = result
        how = f"filled {fmt.qty(r['filled'])} at {fmt.price(r['average'])}" if r["status"] != "canceled" or r[
            "filled"] else "canceled"
        if r.get("fee"):  # the fee the operator gave, as they gave it
            how += f" (fee {fmt.qty(r['fee'], 8)} {r['fee_currency']})"
        return f"settled {r['client_order_id']} {r['symbol']}: {how} (the venue: {r['venue']}); {r['reconcile']}"
    if action == "sold-by-hand":
        r = result
        fee = f" (fee {fmt.fee(r['fee'])})" if r["fee"] else ""
        return (f"booked the sale of {fmt.qty(r['quantity'])} {r['symbol']} at {fmt.price(r['price'])}{fee} made by "
                f"hand: order {r['client_order_id']}, nothing sent; {fmt.qty(r['position_left'])} left in the "
                f"position; {r['reconcile']}")
    if action in tables.RENDER:
        return tables.RENDER[action](result)
    if isinstance(result, dict):
        return json.dumps(result, default=str)
    return str(result)


def _ctl_health(args: argparse.Namespace, settings: Settings) -> int:
    """For cron, monit or a load balancer: 0 healthy, 1 degraded, 2 down or no engine answering (within 5 s or
    --timeout: an engine whose event loop is blocked does not answer at all)."""
    import asyncio

    from ffe_engine.control import no_engine, not_answering, request
    from ffe_engine.health import EXIT_CODES, one_line

    path = settings.socket_path
    timeout = args.timeout if args.timeout is not None else 5.0
    try:
        answer = asyncio.run(request(path, "health", {"by": "ctl"}, timeout=timeout, data_dir=settings.data_dir))
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        # An engine that does not answer (stopped with SIGSTOP, its loop blocked): its pid and how to halt it.
        problem = (not_answering(path, settings.data_dir, timeout) if isinstance(exc, asyncio.TimeoutError)
                   else no_engine(path, settings.data_dir))
        said = json.dumps({"status": "down", "problems": [problem]}) if args.json else f"DOWN  {problem}"
        _print(fmt.printable(said))
        return 2
    if not answer.get("ok"):
        _print(fmt.printable(f"DOWN  {answer.get('error')}"))
        return 2
    verdict = answer["result"]
    _print(json.dumps(verdict, indent=1, default=str) if args.json else one_line(verdict))
    return EXIT_CODES.get(verdict.get("status"), 2)


def _ask(settings: Settings, action: str, payload: dict[str, Any], timeout: float,
         tries: int = 1) -> dict[str, Any]:
    """One command to the engine of settings' data directory, within timeout, asked up to `tries` times while it
    does not answer (for a question: a command may still apply late); every failure as one line."""
    import asyncio

    from ffe_engine.control import carrying_out, command_or_probe, no_engine, not_answering, request

    path = settings.socket_path
    question = action not in CONTROL or CONTROL[action].reads
    for asked in range(1, tries + 1):
        try:
            if question:
                return asyncio.run(request(path, action, payload, timeout=timeout, data_dir=settings.data_dir))
            # A command may wait on the exchange (its order on the wire), its records or another control: an engine that
            # answers a status meanwhile runs, and is carrying it out; not one to wake or halt by signal. The status
            # is asked within the timeout, so that the whole wait is the timeout.
            answer, status = asyncio.run(command_or_probe(path, action, payload, timeout, settings.data_dir))
            if answer is not None:
                return answer
            if status is not None and status.get("ok"):
                raise ControlError(carrying_out(path, action, timeout, status.get("engine")))
            raise TimeoutError
        except TimeoutError:  # before OSError: TimeoutError is one
            if asked < tries:
                continue
            late = "" if question else f"the {action} may still apply when the engine wakes"
            raise ControlError(not_answering(path, settings.data_dir, timeout, tries=tries, late=late)) from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(no_engine(path, settings.data_dir)) from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (the engine runs as another user?)") from None
        except (OSError, ValueError) as exc:
            raise ControlError(f"the engine on {path} did not answer: {exc}") from None
    raise UsageError(f"tries must be at least 1, not {tries}")


def ctl(args: argparse.Namespace) -> int:
    from ffe_engine.control import describe

    settings = settings_from(args)
    payload = _ctl_args(args)
    if args.action == "health":
        return _ctl_health(args, settings)
    timeout = args.timeout if args.timeout is not None else settings.control.request_timeout_s
    _confirm(args, settings, payload, timeout)
    if args.action in ("accept", "halt", "flatten", "close", "resume"):
        # An accept waits for the exchange's settle window, a halt, flatten or close for a control under way (a
        # close for its order on the wire too), only as long as it is waited for.
        payload["timeout_s"] = timeout
    answer = _ask(settings, args.action, payload, timeout)
    if args.json:
        _print(json.dumps(fmt.with_utc_times(answer), indent=1, default=str))
    if not answer.get("ok"):
        raise ControlError(f"{answer.get('error')} [{describe(answer.get('engine'))}]")
    if not args.json:
        _print(_render(args.action, answer.get("result")))
        _print(describe(answer.get("engine")))
    return 0 if _carried_out(args.action, answer.get("result")) else 1


def _carried_out(action: str, result: Any) -> bool:
    """A close the order path refused, an approval the re-check refused, a cancel that did not cancel, or a halt or
    flatten that left an order it could not cancel or a position it could not close, or whose closing order's answer
    was lost (HALTED stored all the same), is a failure for a script (exit 1)."""
    if action == "close":
        return bool(result.get("accepted")) and not result.get("in_doubt") and not result.get("ended")
    if action == "resume":  # answered while it waits for another control under way: not resumed yet
        return not str(result).startswith(UNDER_WAY)
    if action == "approve":
        return bool(result.get("accepted")) and not result.get("in_doubt") and not result.get("ended")
    if action == "cancel":
        return bool(result.get("cancelled"))
    if action in ("halt", "flatten"):
        return not result.get("failed") and not result.get("in_doubt")
    return True


# ---------------------------------------------------------------------------------------------------- audit, report
def _run_beside_its_trail(settings: Any) -> None:
    """A backtest run's database is read with its own audit trail only (backtest_runs.trail_apart)."""
    from ffe_engine.backtest_runs import trail_apart

    apart = trail_apart(settings)
    if apart is not None:
        raise UsageError(apart)


def audit_tail(args: argparse.Namespace) -> int:
    from ffe_engine import audittool

    settings = settings_from(args)
    _run_beside_its_trail(settings)
    return audittool.tail(settings.audit_path, args.lines, audittool.parse_events(args.event), args.json,
                          args.follow, db_path=settings.db_path)


def audit_show(args: argparse.Namespace) -> int:
    from ffe_engine import audittool

    settings = settings_from(args)
    with audittool.reading(settings.db_path) as conn:
        story = audittool.decision_story(conn, args.decision_id)
        order = audittool.order_story(conn, args.decision_id) if story is None else None
        if story is None and order is None:
            raise UsageError(audittool.unknown_id(conn, args.decision_id, settings.db_path))
    if args.json:
        _print(json.dumps(story or order, indent=1, default=str))
    else:
        _print(audittool.render_story(story) if story is not None else audittool.render_order_story(order or {}))
    return 0


def audit_verify(args: argparse.Namespace) -> int:
    from ffe_engine import audittool

    settings = settings_from(args)
    _run_beside_its_trail(settings)
    return audittool.verify(settings.audit_path, settings.db_path, args.json)


def _report(args: argparse.Namespace, which: str) -> int:
    from ffe_engine import audittool

    settings = settings_from(args)
    with audittool.reading(settings.db_path) as conn:
        if which == "providers":
            r = audittool.provider_report(conn, list(settings.ensemble.providers), args.last,
                                          settings.ensemble.adaptive)
            text = audittool.render_provider_report(r)
        else:
            r = audittool.trades_report(conn, args.last)
            text = audittool.render_trades(r)
    _print(json.dumps(r, indent=1, default=str) if args.json else text)
    return 0


def report_providers(args: argparse.Namespace) -> int:
    return _report(args, "providers")


def report_trades(args: argparse.Namespace) -> int:
    return _report(args, "trades")


# ---------------------------------------------------------------------------------------------------- alert
def alert_test(args: argparse.Namespace) -> int:
    """A test alert to every configured channel, each result on its own line; exit 1 when any failed."""
    import asyncio

    from ffe_engine.channels import origin_of, send_test
    from ffe_engine.clock import WallClock

    settings = settings_from(args)
    text = "ffe test alert: this channel works."
    results = asyncio.run(send_test(settings.alerts, text, origin_of(settings.data_dir, settings.alerts.instance),
                                    now=WallClock().wall()))
    if not results:
        raise UsageError("no alert channel is configured: set FFE_ALERTS__WEBHOOK_URL, FFE_ALERTS__SLACK_URL, "
                         "FFE_ALERTS__DISCORD_URL, FFE_ALERTS__TELEGRAM_TOKEN or FFE_ALERTS__HEARTBEAT_URL "
                         "in .env or the environment")
    for name, error in results:
        _print(f"{name}: {'delivered' if error is None else 'FAILED (' + error + ')'}")
    return 1 if any(error is not None for _, error in results) else 0


# ---------------------------------------------------------------------------------------------------- backup, restore
BACKUP_TIMEOUT_S = 3600.0  # a backup of a large database takes a while; the engine trades on meanwhile


def backup(args: argparse.Namespace) -> int:
    """Ask the running engine for its backup; with no engine on the data directory, take it here under its lock."""
    from ffe_engine import backup as bk
    from ffe_engine.clock import WallClock
    from ffe_engine.host import DirectoryHeld, acquire_lock, lock_database
    from ffe_engine.interrupts import stopped_by_signals

    settings = settings_from(args)
    bk.refuse_backtest_run(settings)  # before the lock: nothing is written into a run's folder
    dest = reach.resolved(args.to, "--to") if args.to is not None else reach.resolved(Path(settings.backup.dir))
    clock = WallClock()
    if not settings.db_path.is_file():
        from ffe_engine.audit import has_records
        from ffe_engine.store import check_files

        # Missing beside a WAL that holds pages: damaged; beside a trail with records: lost; said as the start says.
        check_files(settings.db_path, new_ok=not has_records(settings.audit_path))
        raise UsageError(f"{settings.db_path}: no database here (is --data-dir right?)")
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest}: not a directory (--to names the directory the backups go into)")
    lock: list[int] | None  # what the backup holds while it takes it; None: the engine takes it
    try:
        directory = acquire_lock(settings.data_dir, holder="backup")
    except DirectoryHeld as exc:
        if exc.holder != "engine" and exc.holder != "unknown":
            raise FfeError(f"{exc}: take the backup once it has ended") from None
        lock = None  # an engine holds the directory (or is taking it): it takes the backup itself
    except StorageError:
        # A directory that takes no write (a disk remounted read-only), where no engine can start: the database
        # file's own lock, which a running engine holds too, instead of the lock file that cannot be made.
        lock = [lock_database(settings.db_path)]
    else:
        lock = _and_the_database(directory, settings.db_path)
    try:
        with stopped_by_signals():
            if lock is None:
                _answering(settings)
                answer = _ask(settings, "backup", {"by": "ctl", "to": str(dest)}, BACKUP_TIMEOUT_S)
                if not answer.get("ok"):
                    raise ControlError(f"the engine took no backup: {answer.get('error')}")
                result = answer["result"]
                path, manifest, held = Path(result["file"]), result["manifest"], result["held_ms"]
                swept = [Path(p) for p in result.get("swept", [])]
            else:
                try:
                    made = bk.take_stopped(settings, dest, clock.wall())
                finally:
                    for fd in lock:
                        os.close(fd)
                path, manifest, held, swept = made.path, made.manifest, None, made.swept
    except KeyboardInterrupt:
        if lock is None:
            raise Interrupted(f"backup interrupted: the engine on {settings.data_dir} goes on with the backup into "
                              f"{dest} it was asked for") from None
        raise Interrupted(f"backup interrupted: nothing written to {dest}, what it had staged removed") from None
    pruned = bk.prune(dest, settings.backup.keep_last, settings.backup.keep_days, clock.wall(), made=path)
    if args.json:
        _print(json.dumps({"file": str(path), "pruned": [str(p) for p in pruned], "swept": [str(p) for p in swept],
                           "manifest": manifest}, indent=1))
        _said_trail_damaged(manifest)
        return 0
    _said_swept("backups", swept)
    seq = manifest["seq"]
    _line(f"{path}: {path.stat().st_size} bytes, records to seq {seq['last']} "
          f"({manifest['rows'].get('orders', 0)} orders, {manifest['rows'].get('fills', 0)} fills), "
          + (f"from the running engine (its writes waited {held:.1f} ms)" if held is not None
             else "from the stopped data directory"))
    for p in pruned:
        _line(f"pruned {p}")
    _said_trail_damaged(manifest)
    return 0


def _and_the_database(directory: int, db: Path) -> list[int] | None:
    """The data directory's lock `directory` and the database's own, for a backup of a stopped directory; None (the
    first let go) when an engine holds the database: its lock file was removed under it (a cleanup of `*.lock`), and
    it takes the backup itself, as any running engine does, rather than its records being copied from under it."""
    from ffe_engine.host import lock_database

    try:
        database = lock_database(db)
    except BaseException as exc:
        os.close(directory)
        if isinstance(exc, StartError):
            return None
        raise
    return [directory, database]


def _said_trail_damaged(manifest: dict[str, Any]) -> None:
    """The records of the audit trail the backup took from the database, the trail's being damaged or missing: one
    line per file, naming the seqs (the first ten runs of them)."""
    by_file: dict[str, list[str]] = {}
    for d in manifest.get("trail_damaged") or []:
        by_file.setdefault(str(d["file"]), []).append(
            f"{d['first']}" if d["first"] == d["last"] else f"{d['first']}-{d['last']}")
    for file, runs in by_file.items():
        more = f" and {len(runs) - 10} more" if len(runs) > 10 else ""
        # On stderr, with --json too: what needs the operator reaches them where stdout is thrown away (the shipped
        # cron job keeps only stderr, which cron mails).
        # A rotated file gone (trailcopy names it where a gap falls at a file's first line) is said as missing.
        seqs = f"seq {', '.join(runs[:10])}{more}"
        said = f"{file} is missing ({seqs})" if not Path(file).exists() else f"{file}: {seqs} not as written (or " \
            "missing)"
        sys.stderr.write(fmt.printable(f"warning: the audit trail is damaged: {said}: the backup holds the database's "
                                       "copy of those records; the trail is left as it is: run `ffe doctor` (and "
                                       "`ffe audit verify`)") + "\n")


def _answering(settings: Settings) -> None:
    """The engine answers a question within the time a `ffe ctl` command waits: a frozen one (stopped, its loop
    hung) is said at once, not after the hour a backup of a large database may take."""
    import asyncio

    from ffe_engine.control import not_answering, request

    timeout = settings.control.request_timeout_s
    try:
        asyncio.run(request(settings.socket_path, "status", {}, timeout=timeout, data_dir=settings.data_dir))
    except TimeoutError:
        raise ControlError(not_answering(settings.socket_path, settings.data_dir, timeout,
                                         late="no backup taken")) from None
    except OSError:
        pass  # gone meanwhile, or not answering for another reason: the backup's own request says which


def _said_swept(what: str, swept: list[Path]) -> None:
    if swept:
        _line(f"removed what interrupted {what} left: {', '.join(str(p) for p in swept)}")


def backup_verify(args: argparse.Namespace) -> int:
    from ffe_engine import backup as bk
    from ffe_engine.interrupts import stopped_by_signals

    for option, given in (("--to", args.to is not None), ("--json", args.json)):
        if given:  # taken by `ffe backup` before the word verify: said, not ignored
            raise ArgumentError(f"{option} is `ffe backup`'s own option, not its verify's")
    try:
        with stopped_by_signals():
            swept = bk.sweep_unpacked()
            checked = bk.verify(args.file)
    except KeyboardInterrupt:
        raise Interrupted("backup verify interrupted: what it had unpacked removed") from None
    m = checked.manifest
    _line(f"ok: {args.file}: checksums, integrity, audit trail seq {m['seq']['first']}..{m['seq']['last']}, "
          f"{checked.events} events, {checked.orders} orders and {checked.fills} fills agree "
          f"(taken {m.get('created')} by ffe {m.get('ffe_version')}, schema {m.get('schema_version')})")
    _said_swept("verifies and restores", swept)
    return 0


def restore(args: argparse.Namespace) -> int:
    from ffe_engine.clock import WallClock
    from ffe_engine.interrupts import stopped_by_signals
    from ffe_engine.restore import restore as put_back

    settings = settings_from(args)
    done: dict[str, Any] | None = None
    try:
        with stopped_by_signals():
            done = put_back(args.file, settings, force=args.force, now=WallClock().wall())
    except KeyboardInterrupt:
        if done is None:  # putting the files in place is never interrupted (ffe_engine.interrupts.held)
            raise Interrupted("restore interrupted: nothing restored, what it had unpacked removed") from None
    assert done is not None
    _said_swept("verifies and restores", [Path(p) for p in done["swept"]])
    for moved in done["moved_aside"]:
        _line(f"moved aside {moved}")
    _line(f"restored {done['backup']} (taken {done['taken']}, records to seq {done['seq']['last']}): "
          f"{done['database']}, {done['audit_trail']}; its configuration in {done['config']}")
    if done["kept_halted"] and done["unreadable"]:
        _print("the records moved aside could not be read, so whether they were HALTED could not be told: the "
               "restored account is HALTED (re-arm it with `ffe ctl resume --yes` once you are satisfied)")
    elif done["kept_halted"]:
        _print("the records moved aside were HALTED: the restored account is HALTED too (re-arm it with "
               "`ffe ctl resume --yes` once you are satisfied)")
    elif done["stops_kept"]:
        _print(f"{done['stops_kept']}: the restored account is PAUSED (resume it with `ffe ctl resume` once you are "
               "satisfied)")
    withheld = done["alerts_withheld"]
    if withheld:
        said = ", ".join(f"{kind} x{n}" for kind, n in withheld.items())
        page = (" (a page, as one of them was)" if done["alerts_withheld_pages"] else
                " (a page if the account is HALTED)")
        _print(f"{sum(withheld.values())} alert(s) pending in the backup ({said}) not delivered again, as the engine "
               "it was taken from may have delivered them; it may not have: the restored start's first alert names "
               f"them{page}, check that they reached you. They are kept in {done['database']} (alert_outbox, status "
               "withheld)")
    _print("next: start the engine; before any order it records from the venue what the account did after the "
           "backup, and stays PAUSED on any difference it cannot explain (see docs/runbook.md)")
    return 0
