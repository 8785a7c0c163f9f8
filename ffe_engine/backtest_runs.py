"""Past backtest runs on disk: what `ffe backtest --list` shows and `ffe backtest --clean` removes.

A run that keeps records has a folder under data/backtests/RUN (its database and report.json) and, at the full
level, one under logs/backtests/RUN (its audit file). RUN is the run id, which starts with the UTC time it began.
Only folders named like a run id are runs: nothing else there is listed or removed. A run whose database is
locked by its writer is running now and is never removed. A run without report.json was interrupted (or is
running now). Runs with `--records summary` leave nothing on disk and so are not listed.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import fmt
from .config import Settings
from .errors import UsageError
from .store import in_use

RUN_ID = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]{6}")
REPORT_NAME = "report.json"
AGE_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


@dataclass
class Run:
    run_id: str
    started: datetime
    folders: list[Path] = field(default_factory=list)
    size: int = 0
    report: dict[str, Any] | None = None
    problem: str | None = None  # why there is no report to show
    running: bool = False


def parse_age(text: str) -> float:
    """`--older-than`: a whole number and a unit, m, h, d or w (30m, 12h, 7d, 2w), as seconds."""
    m = re.fullmatch(r"(\d+)([mhdw])", text.strip())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"--older-than needs an age such as 30m, 12h, 7d or 2w, got {text!r}")
    return int(m.group(1)) * AGE_UNITS[m.group(2)]


def parse_keep(text: str) -> int:
    """`--keep`: how many of the newest runs stay, 0 or more."""
    if not text.strip().isdigit():
        raise UsageError(f"--keep needs a whole number of runs, 0 or more, got {text!r}")
    return int(text)


def folder_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:  # a running run's writer may remove a file (its journal) between the listing and here
            total += p.stat().st_size if p.is_file() else 0
        except FileNotFoundError:
            continue
    return total


def read_report(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, "no report: interrupted, or running now"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"report unreadable: {exc}"
    if not isinstance(report, dict):
        return None, "report unreadable: not a JSON object"
    return report, None


def find_runs(settings: Settings) -> list[Run]:
    """Every run on disk, oldest first."""
    runs: dict[str, Run] = {}
    for root in (settings.data_dir / "backtests", settings.log_dir / "backtests"):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            m = RUN_ID.fullmatch(folder.name)
            if not m or not folder.is_dir():
                continue
            started = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            run = runs.setdefault(folder.name, Run(folder.name, started))
            run.folders.append(folder)
            run.size += folder_size(folder)
    for run in runs.values():
        data = settings.data_dir / "backtests" / run.run_id
        run.report, run.problem = read_report(data / REPORT_NAME)
        run.running = in_use(data / "ffe.db")
        if run.running:
            run.problem = "running now"
    return sorted(runs.values(), key=lambda r: (r.started, r.run_id))


def to_clean(runs: list[Run], *, keep: int | None, older_than_s: float | None, now: datetime) -> list[Run]:
    """The runs `--clean` removes: past the newest `keep`, and (if given) begun more than `older_than_s` ago;
    never one running now."""
    if keep is None and older_than_s is None:
        raise UsageError("ffe backtest --clean needs --keep N or --older-than AGE (or both)")
    chosen = runs[:max(0, len(runs) - keep)] if keep is not None else list(runs)
    if older_than_s is not None:
        chosen = [r for r in chosen if (now - r.started).total_seconds() > older_than_s]
    return [r for r in chosen if not r.running]


def remove(run: Run) -> None:
    for folder in run.folders:
        shutil.rmtree(folder)


def data_text(r: dict[str, Any]) -> str:
    period = f"{str(r.get('from') or '-')[:10]} -> {str(r.get('to') or '-')[:10]}"
    return f"{', '.join(r.get('symbols') or [])} {period}, {fmt.number(r.get('bars'))} bars"


def result_text(r: dict[str, Any]) -> str:
    return (f"return {fmt.pct(r.get('return_pct'), signed=True)}, {fmt.number(r.get('trades'))} trades, "
            f"max drawdown {fmt.pct(r.get('max_drawdown_pct'))}")


def run_line(run: Run) -> str:
    r = run.report
    level = str(r.get("records", "-")) if r else "-"
    what = f"{data_text(r)}; {result_text(r)}" if r else str(run.problem)
    return (f"{run.run_id:<23}  {fmt.iso(run.started.timestamp()):<20}  {level:<7}  {fmt.size(run.size):>9}  "
            f"{what}")


def list_lines(runs: list[Run], where: Path) -> list[str]:
    if not runs:
        return [f"no backtest runs in {where}"]
    lines = [f"{'RUN':<23}  {'BEGUN (UTC)':<20}  {'RECORDS':<7}  {'SIZE':>9}  DATA; RESULT"]
    lines += [run_line(run) for run in runs]
    lines.append(f"{len(runs)} run{'' if len(runs) == 1 else 's'}, {fmt.size(sum(r.size for r in runs))}")
    return lines
