"""Past backtest runs on disk: what `ffe backtest --list` shows and `ffe backtest --clean` removes, and the hold a
run keeps on its folders while it is written.

A run that keeps records has a folder under data/backtests/RUN (its database and report.json) and, at the full
level, one under logs/backtests/RUN (its audit file). RUN is the run id, which starts with the UTC time it began.
Only folders named like a run id are runs: nothing else there is listed or removed. A data directory's runs are the
run folders under its own backtests/: a folder under logs/backtests/ is part of a run only beside the run's data
folder (data directories that share a log directory each see their own runs, never another's trail). A run's
folders are the folders it has on disk, each once: a data directory that is its log directory, by name or by a link,
gives a run one folder, made, held, measured, listed and removed once (held twice, its second hold would be refused
by the first, and the run taken for running now by its own clean).

A run is removed log folder first and data folder last, its report last of all: a removal stopped partway (a file
that cannot be removed) leaves the run listed, with its report, for a clean to finish once the file can go.

A run holds its folders (flock on each) from before they appear under its name until its report is written: a
held run is running now and is never removed, whichever data directory's --clean meets it and whichever of its
folders shows the hold. A run without report.json was interrupted (or is running now). Runs with `--records
summary` leave nothing on disk and so are not listed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import fmt, reach
from .config import Settings
from .errors import ArgumentError, StartError, UsageError, storage_failure
from .store import backtest_records, in_use

RUN_ID = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]{6}")
REPORT_NAME = "report.json"
# The fields of a report the listing reads, what each is in a report ffe wrote, and the words for it (a report of an
# older ffe may lack some: a field missing or null is shown as "-").
REPORT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "records": ((str,), "text"), "from": ((str,), "text"), "to": ((str,), "text"),
    "bars": ((int,), "a whole number"), "trades": ((int,), "a whole number"),
    "return_pct": ((int, float), "a number"), "max_drawdown_pct": ((int, float), "a number"),
}
AGE_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


@dataclass
class Run:
    run_id: str
    started: datetime
    folders: list[Path] = field(default_factory=list)  # as named, the data folder first; each folder on disk once
    size: int = 0
    report: dict[str, Any] | None = None
    problem: str | None = None  # why there is no report to show
    running: bool = False
    level: str | None = None  # the record level: the report's, or (without one) what the database says


def run_records(settings: Settings) -> str | None:
    """What a data directory that is a backtest run's says of it: its record level, "" for a run that does not say
    (made before runs stored it, or its database being written and locked), None for no run. A run says so in its
    database wherever its folders were moved; an older one is told by its folder, data/backtests/RUN."""
    level = backtest_records(settings.db_path)
    if level is not None:
        return level
    data_dir = settings.data_dir
    return "" if data_dir.parent.name == "backtests" and RUN_ID.fullmatch(data_dir.name) else None


def not_an_account(settings: Settings, level: str) -> str:
    """The start of the refusal of a backtest run's data directory where an account's is due."""
    return f"{settings.data_dir}: a backtest run's records{f' ({level})' if level else ''}, not an account's"


def runs_folder(settings: Settings) -> str | None:
    """For a data directory that is the folder of an account's runs (data/backtests, or a link to it: it holds run
    folders, or is beside the account's database or backtest cache) and holds no account of its own (its database),
    the start of its refusal where an account's data directory is due; else None."""
    data_dir = settings.data_dir
    try:
        real = data_dir.resolve()
    except (OSError, RuntimeError):
        return None
    if real.name != "backtests" or (real / settings.db_path.name).exists():
        return None
    try:
        holds_runs = any(RUN_ID.fullmatch(p.name) and p.is_dir() for p in real.iterdir())
    except OSError:
        holds_runs = False
    account = real.parent
    if not holds_runs and not (account / settings.db_path.name).is_file() and not (account / "cache").is_dir():
        return None
    shown = data_dir.parent if real == data_dir.parent.resolve() / data_dir.name else account
    return (f"{data_dir}: the folder of an account's backtest runs, not an account's data directory "
            f"(--data-dir {shown} is the account's)")


def refuse_run_folder(settings: Settings) -> None:
    """UsageError (exit 2) for a backtest run's data directory given to a backtest: its runs and its cache would go
    inside that run (its size on --list, and a --clean of it, taking them along); and for the folder of the runs
    themselves, where its run would go under backtests/backtests/, out of the account's sight. Said before anything
    is read or written."""
    level = run_records(settings)
    if level is not None:
        raise UsageError(f"{not_an_account(settings, level)}: a backtest keeps its runs in an account's data "
                         "directory (storage.path, --data-dir), under backtests/")
    runs = runs_folder(settings)
    if runs is not None:
        raise UsageError(f"{runs}: a backtest keeps its runs in an account's data directory, under backtests/")


def refuse_engine_on_run_folder(settings: Settings) -> None:
    """StartError (exit 2) for a backtest run's data directory, or the folder of the runs, given where an engine's is
    due: a wrong --data-dir, not damage, said before anything there is locked or written, by `ffe run` and by
    `ffe config check` alike."""
    run = run_records(settings)
    if run is not None:
        raise StartError(f"{not_an_account(settings, run)}: an engine runs on an account's data directory "
                         "(storage.path, --data-dir); `ffe doctor` checks a run")
    runs = runs_folder(settings)
    if runs is not None:
        raise StartError(f"{runs}: an engine runs on an account's data directory")


def account_logs(settings: Settings) -> bool:
    """Whether the log directory is an account's: its trail (a run's is compressed, audit.jsonl.zst), or its runs'
    log folders."""
    return settings.audit_path.exists() or (settings.log_dir / "backtests").is_dir()


def run_log_dir(settings: Settings) -> Path:
    """A backtest run's log folder, for its data directory: the log directory given, unless that is an account's
    (then the run's own folder in it, logs/backtests/RUN) or another run's (then the folder beside it named as the
    run)."""
    run, logs = settings.data_dir.name, settings.log_dir.name
    if RUN_ID.fullmatch(run) and RUN_ID.fullmatch(logs) and run != logs:
        return settings.log_dir.parent / run
    return settings.log_dir / "backtests" / run if account_logs(settings) else settings.log_dir


def trail_apart(settings: Settings) -> str | None:
    """A backtest run's data directory read beside an account's log directory: the one line that says so, for a
    command that reads a database with its audit trail (the account's trail beside a run's database would read as
    edited or cut short, or as the run's); None otherwise."""
    level = run_records(settings)
    if level is None:
        return None
    run, logs = settings.data_dir.name, settings.log_dir.name
    if RUN_ID.fullmatch(run) and RUN_ID.fullmatch(logs) and run != logs:  # another run's log folder
        return (f"{not_an_account(settings, level)}: its audit trail is in its own log folder, not {settings.log_dir} "
                f"(run {logs}'s); add --log-dir {settings.log_dir.parent / run} (`ffe backtest --list` names a run's "
                "folders)")
    if level != "full" or not account_logs(settings):  # a trades run keeps no trail: its database is all
        return None
    return (f"{not_an_account(settings, level)}: its audit trail is in its own log folder; add --log-dir "
            f"{run_log_dir(settings)} (`ffe backtest --list` names a run's folders)")


def parse_age(text: str) -> float:
    """`--older-than`: a whole number of 1 or more and a unit, m, h, d or w (30m, 12h, 7d, 2w), as seconds."""
    m = re.fullmatch(r"([0-9]+)([mhdw])", text.strip())  # ASCII digits: \d and int() take ٣ for 3
    if not m or int(m.group(1)) == 0:
        raise ArgumentError(f"--older-than needs an age such as 30m, 12h, 7d or 2w (a whole number of 1 or more and "
                            f"m, h, d or w), got {text!r}")
    return int(m.group(1)) * AGE_UNITS[m.group(2)]


def parse_keep(text: str) -> int:
    """`--keep`: how many of the newest runs stay, 0 or more, in ASCII digits (str.isdigit passes ², which int()
    refuses, and int() takes ٣ for 3: neither is a number typed for it)."""
    if not re.fullmatch(r"\+?[0-9]{1,18}", text.strip()):  # a sign as the other whole numbers take one
        raise ArgumentError(f"--keep needs a whole number of runs, 0 or more, got {text!r}")
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
    wrong = wrong_field(report)
    if wrong is not None:
        return None, f"report unreadable: {wrong}"
    return report, None


def wrong_field(report: dict[str, Any]) -> str | None:
    """The first field the listing reads that is not of its type in a report ffe wrote (valid JSON all the same),
    said as what it should be; None when each is, or is missing."""
    symbols = report.get("symbols")
    if symbols is not None and not (isinstance(symbols, list) and all(isinstance(s, str) for s in symbols)):
        return "'symbols' is not a list of names"
    for key, (types, words) in REPORT_FIELDS.items():
        value = report.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            return f"{key!r} is not {words}"
    return None


def run_began(name: str) -> datetime | None:
    """When the run of a folder so named began, from its name; None for a name that is no run id (a time no calendar
    has, such as a 30 February or a 25th hour, too: no ffe began that run)."""
    m = RUN_ID.fullmatch(name)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def find_runs(settings: Settings) -> list[Run]:
    """The data directory's runs on disk, oldest first: each with its data folder and, if there is one, its log
    folder of the same name."""
    root = settings.data_dir / "backtests"
    runs: list[Run] = []
    for folder in sorted(root / name for name in reach.names_in(root)) if reach.is_dir(root) else []:
        started = run_began(folder.name)
        if started is None or not folder.is_dir():
            continue
        run = Run(folder.name, started)
        run.folders = distinct([folder, settings.log_dir / "backtests" / folder.name])
        run.size = sum(folder_size(f) for f in run.folders)
        run.report, run.problem = read_report(folder / REPORT_NAME)
        # Its writer's hold on either folder, or (a run begun by an ffe before the holds) its database's lock.
        run.running = any(is_held(f) for f in run.folders) or in_use(folder / "ffe.db")
        if run.running:
            run.problem = "running now"
        if run.report is not None:
            run.level = str(run.report.get("records") or "") or None
        elif not run.running:
            run.level = backtest_records(folder / "ffe.db")
        runs.append(run)
    return sorted(runs, key=lambda r: (r.started, r.run_id))


def to_clean(runs: list[Run], *, keep: int | None, older_than_s: float | None, now: datetime) -> list[Run]:
    """The runs `--clean` removes: past the newest `keep`, and (if given) begun more than `older_than_s` ago;
    never one running now."""
    if keep is None and older_than_s is None:
        raise ArgumentError("ffe backtest --clean needs --keep N or --older-than AGE (or both)")
    chosen = runs[:max(0, len(runs) - keep)] if keep is not None else list(runs)
    if older_than_s is not None:
        chosen = [r for r in chosen if (now - r.started).total_seconds() > older_than_s]
    return [r for r in chosen if not r.running]


def distinct(folders: list[Path]) -> list[Path]:
    """The folders that are there, each folder on disk once, by the first of its names (the same directory named
    twice, through a link, or mounted twice)."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for folder in folders:
        try:
            st = folder.stat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            found.append(folder)
    return found


def remove(run: Run) -> str | None:
    """Remove the run's folders; None once they are gone, else why not, in one line naming the path in full. A
    folder that is a link (run folders moved to another disk and linked back) goes with the folder it links to when
    that is named as the run, as moving it leaves it; a link to anything else may be to anything (a whole disk) and
    is not followed: the run is left as it is. Each folder is held while it is removed: one a run holds is not
    removed. A folder that cannot be taken out of the directory it is in (that directory read-only) leaves the run
    as it is; the log folder goes first and the data folder last, its report last of all, so that a removal stopped
    partway leaves the run listed with its report, for a clean to finish."""
    taken: list[tuple[Path, Path, int]] = []
    try:
        for folder in run.folders:
            target = folder.resolve() if folder.is_symlink() else folder
            if target != folder and target.name != run.run_id:
                return (f"{folder} is a link to {target}, a folder not named as the run: remove the link, and what it "
                        "links to if that is the run's, yourself")
            for entry in dict.fromkeys((folder, target)):
                if not os.access(entry.parent, os.W_OK | os.X_OK):
                    return f"cannot remove {entry} ({entry.parent} is not writable)"
            fd = hold(target)
            if fd is None:
                return f"{folder} is held by the run's writer: running now"
            taken.append((folder, target, fd))
        for folder, target, _ in reversed(taken):  # the data folder, the first, last: the run is listed by it
            erase(target, last=REPORT_NAME)
            if target != folder:
                folder.unlink()
    except OSError as exc:
        return f"cannot remove {exc.filename or run.folders[0]} ({exc.strerror or exc})"
    finally:
        for _, _, fd in taken:
            os.close(fd)
    return None


def erase(folder: Path, *, last: str | None = None) -> None:
    """The folder and all in it removed, links in it not followed; `last`, a file in it, after all else. An error
    names the path in full (shutil.rmtree's names the file alone)."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name == last)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            erase(Path(entry.path))
        else:
            Path(entry.path).unlink()
    folder.rmdir()


# ---------------------------------------------------------------------------------------------------- holds
def hold(folder: Path) -> int | None:
    """The folder held (its descriptor, to close to let go), or None when another process holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return fd


def is_held(folder: Path) -> bool:
    """Whether another process holds the folder now (a run being written)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


class HeldFolders:
    """A run's folders, made and held while it is written, until `release`."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._made: list[Path] = []

    def make(self, folders: list[Path]) -> None:
        """Each folder made under a name that is no run's, held, then given its own name: it is never seen unheld.
        One that cannot be made (its disk full or read-only, a file where a directory should be) is StorageError,
        naming it, and leaves none of them behind. A folder that is one made already (the data directory the log
        directory, by name or by a link) is that folder, made and held once."""
        made: list[Path] = []
        for folder in folders:
            if any(same_folder(folder, m) for m in made):
                continue
            try:
                self._fds.append(_make_held(folder))
            except OSError as exc:
                self.release()
                for m in made:
                    with suppress(OSError):
                        m.rmdir()
                raise storage_failure(folder, exc) from None
            made.append(folder)
        self._made.extend(made)

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def discard(self) -> None:
        """Release the folders and remove them with what is in them: for a run that never began."""
        self.release()
        while self._made:
            shutil.rmtree(self._made.pop(), ignore_errors=True)


def same_folder(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # one of them not there
        return False


def _make_held(folder: Path) -> int:
    new = folder.with_name(f".{folder.name}.new")
    new.mkdir(parents=True)
    try:
        fd = hold(new)
        if fd is None:
            raise BlockingIOError(f"{new}: held by another process")
        try:
            new.rename(folder)
        except OSError:
            os.close(fd)
            raise
    except OSError:
        with suppress(OSError):
            new.rmdir()
        raise
    return fd


def data_text(r: dict[str, Any]) -> str:
    period = f"{str(r.get('from') or '-')[:10]} -> {str(r.get('to') or '-')[:10]}"
    return f"{', '.join(r.get('symbols') or [])} {period}, {fmt.number(r.get('bars'))} bars"


def result_text(r: dict[str, Any]) -> str:
    return (f"return {fmt.pct(r.get('return_pct'), signed=True)}, {fmt.number(r.get('trades'))} trades, "
            f"max drawdown {fmt.pct(r.get('max_drawdown_pct'))}")


def run_line(run: Run) -> str:
    r = run.report
    # A report is a file anyone may have edited: what a terminal would act on is shown as its escape.
    level = fmt.printable(run.level or "-")
    what = fmt.printable(f"{data_text(r)}; {result_text(r)}" if r else str(run.problem))
    return (f"{run.run_id:<23}  {fmt.iso(run.started.timestamp()):<20}  {level:<7}  {fmt.size(run.size):>9}  "
            f"{what}")


def list_lines(runs: list[Run], where: Path) -> list[str]:
    if not runs:
        return [f"no backtest runs in {where}"]
    lines = [f"{'RUN':<23}  {'BEGUN (UTC)':<20}  {'RECORDS':<7}  {'SIZE':>9}  DATA; RESULT"]
    lines += [run_line(run) for run in runs]
    lines.append(f"{len(runs)} run{'' if len(runs) == 1 else 's'}, {fmt.size(sum(r.size for r in runs))}")
    return lines
