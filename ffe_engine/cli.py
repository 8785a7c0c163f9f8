"""The `ffe` command.

Exit codes: 0 success, 2 usage or configuration error (one line naming the key, file and line), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UsageError(Exception):
    """Bad input from the operator: printed as one line, exit code 2."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="config file (default ./config.toml)")
    p.add_argument("--env-file", type=Path, default=None, help="dotenv file (default .env next to the config)")
    p.add_argument("--data-dir", type=Path, default=None, help="runtime state directory (database)")
    p.add_argument("--log-dir", type=Path, default=None, help="audit and log directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ffe", description="Finance Feedback Engine console")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the engine (console by default)")
    _common(run)
    run.add_argument("--headless", action="store_true", help="no UI; log lines on stderr")
    run.add_argument("--max-bars", type=int, default=None, help="stop after N bars per symbol")
    run.add_argument("--live", action="store_true", help="allow live trading (needs mode = \"live\" too)")

    att = sub.add_parser("attach", help="the console of a running headless engine")
    _common(att)

    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate and print the effective configuration")
    _common(check)

    bt = sub.add_parser("backtest", help="replay CSV files through the pipeline at full speed")
    _common(bt)
    bt.add_argument("files", nargs="+", metavar="[SYMBOL=]FILE.csv")
    bt.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    bt.add_argument("--lenient", action="store_true", help="skip bad CSV rows (counted) instead of stopping")

    ctl = sub.add_parser("ctl", help="control a running engine")
    _common(ctl)
    ctl.add_argument("action", choices=["status", "pause", "resume", "halt", "flatten", "approve", "reject", "mode",
                                        "accept"])
    ctl.add_argument("target", nargs="?", help="approval id (approve, reject) or auto|manual (mode)")
    ctl.add_argument("--yes", action="store_true", help="confirm re-arming a HALTED engine (resume)")
    ctl.add_argument("--json", action="store_true", help="print the raw answer as JSON")

    audit = sub.add_parser("audit", help="read the audit trail; the story of one decision")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    tail = audit_sub.add_parser("tail", help="the last audit records, filtered, or followed as they come")
    _common(tail)
    tail.add_argument("-n", dest="lines", type=int, default=20, metavar="N", help="how many records (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records until interrupted")
    tail.add_argument("--event", default=None, metavar="NAME,...", help="only these events, e.g. decision,order")
    tail.add_argument("--json", action="store_true", help="the raw JSON lines")
    show = audit_sub.add_parser("show", help="votes, gates, approval, orders, fills and P&L of one decision")
    _common(show)
    show.add_argument("decision_id", metavar="DECISION_ID", help="a decision id (or an order or approval id)")
    show.add_argument("--json", action="store_true", help="one JSON object")

    report = sub.add_parser("report", help="reports from the database")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    prov = report_sub.add_parser("providers", help="per provider: votes, trades backed, hit rate, return, weight")
    _common(prov)
    prov.add_argument("--last", type=int, default=20, metavar="N", help="also over the last N trades (default 20)")
    prov.add_argument("--json", action="store_true", help="one JSON object")
    trades = report_sub.add_parser("trades", help="closed trades with P&L, reason and entry decision")
    _common(trades)
    trades.add_argument("--last", type=int, default=50, metavar="N", help="the last N trades (default 50, 0 = all)")
    trades.add_argument("--json", action="store_true", help="one JSON object")

    return parser


def load_settings_from_args(args: argparse.Namespace):
    from .config import load_settings

    settings = load_settings(config_path=args.config, env_file=args.env_file)
    overrides = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "log_dir", None) is not None:
        overrides["log_dir"] = args.log_dir
    if overrides:
        settings = settings.with_dirs(**overrides)
    return settings


def cmd_config_check(args: argparse.Namespace) -> int:
    from .config import render_settings

    settings = load_settings_from_args(args)
    print(render_settings(settings))
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    import asyncio

    from .control import request

    settings = load_settings_from_args(args)
    try:
        asyncio.run(request(settings.socket_path, "status", timeout=5.0))
    except (OSError, asyncio.TimeoutError):
        print(f"ffe: error: no engine is running on {settings.socket_path}", file=sys.stderr)
        return 1
    from ffe_tui.app import run_console

    return run_console(settings, live=False, max_bars=None, attach=True)


def cmd_ctl(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from .control import request

    settings = load_settings_from_args(args)
    a: dict = {"by": "ctl"}
    if args.action in ("approve", "reject"):
        if not args.target:
            raise UsageError(f"ffe ctl {args.action} needs an approval id")
        a["id"] = args.target
    if args.action == "mode":
        if args.target not in ("auto", "manual"):
            raise UsageError("ffe ctl mode needs auto or manual")
        a["mode"] = args.target
    if args.action == "resume":
        a["confirm"] = args.yes
    path = settings.socket_path
    try:
        answer = asyncio.run(request(path, args.action, a))
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"ffe: error: no engine is running on {path}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=1, default=str))
    elif answer.get("ok"):
        result = answer.get("result")
        if args.action == "status":
            r = result
            print(f"{r['mode']} {r['state']} ({r['state_reason']})  equity {r['equity']:.2f}  "
                  f"positions {len(r['positions'])}  open orders {len(r['orders'])}  "
                  f"pending approvals {len(r['approvals'])}  approval {r['approval_mode']}")
        else:
            print(json.dumps(result, default=str) if not isinstance(result, str) else result)
    else:
        print(f"ffe: error: {answer.get('error')}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .market.csvdata import CsvError
    from .runner import StartError
    from .store import SchemaError

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    try:
        if args.command == "config":
            return cmd_config_check(args)
        if args.command == "run":
            from .runner import cmd_run

            return cmd_run(args)
        if args.command == "attach":
            return cmd_attach(args)
        if args.command == "backtest":
            from .backtest import cmd_backtest

            return cmd_backtest(args)
        if args.command == "ctl":
            return cmd_ctl(args)
        if args.command == "audit":
            from .audittool import cmd_audit

            return cmd_audit(args)
        if args.command == "report":
            from .audittool import cmd_report

            return cmd_report(args)
        parser.print_help()
        return 2
    except (ConfigError, UsageError, CsvError, StartError, SchemaError) as exc:
        print(f"ffe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
