"""The audit trail's records after the database's last event, and the one judgement of what they mean.

The store writes the trail before it commits the same events, so a kill leaves the trail ahead of the database by the
records of the moment before it, never committed: the next start sets them aside. More than that (a run's boundary among
them (a stop with records after it, a start with bar decisions beside it) or a whole run, over a minute of records, or
more than one fill: each fill is committed in a transaction of its own before the next one's records are written) is
no kill's last moment: the database lost records it had committed (an older copy put back, its WAL lost). The start
(its STARTED page), `ffe doctor`, `ffe audit verify` and `ffe backup` all judge them here, and say them in the same
words.

The start moves such records into `audit.jsonl.uncommitted-after-SEQ`, and the trail is level with the database
again; the loss is still there, so it stays said (`unsettled`) until the operator has dealt with it: resumed the
engine (which records the set-aside files there then as checked, `CHECKED_KEY`) or restored a backup (which moves
them aside with the trail they came from). Until then the start pauses, the checks fail and no backup is taken.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from . import reach

# Records ahead spanning longer than this are more than the moment before a kill.
SPAN_S = 60.0
# The engine's pause for such records: its reason starts so (by `engine`).
PAUSE = "the database lost committed records"
# kv: the set-aside files the operator resumed over, {file name: size}; written with the resume (engine.py).
CHECKED_KEY = "set_aside_checked"
REMEDY = ("restore the newest backup (`ffe restore --force`), or check the books against the exchange and resume the "
          "engine (`ffe ctl resume`; a HALTED one re-armed, `ffe ctl resume --yes`)")
LOST = ("more than the moment before a kill, so the database lost committed records (an older copy put back, its "
        "WAL lost)")


@dataclass
class Ahead:
    """What records ahead of the database hold: how many, their fills, order updates and run records, the time of
    the first and the last."""

    records: int = 0
    fills: int = 0
    orders: int = 0
    runs: int = 0
    first: str | None = None
    last: str | None = None
    # Whether they cross a run's boundary: a run's stop with records after it, a run's start with bar decisions
    # (before it: an earlier run's; after it: the start commits all it wrote before the first bar), or a whole run
    # (its start and its stop). A kill leaves one moment of one run, which may be its start or its stop.
    boundary: bool = False
    # They may be the records of many transactions: a backtest's audit file is written in frames of many
    # (sqlwriter.py). Their fills' count tells nothing then.
    many_transactions: bool = False
    # The database committed more after it was read (an engine running beside the check, restarted even): records
    # past that read are its commits since, up to the moment being written now (`committed_since`), none lost.
    committed_after_read: bool = False
    started: bool = False
    stopped: bool = False
    decided: bool = False

    def add(self, line: bytes) -> None:
        self.records += 1
        if self.stopped:
            self.boundary = True
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(rec, dict):
            return
        event = rec.get("event")
        self.fills += event == "fill"
        self.orders += event == "order"
        self.runs += event == "run"
        if event == "decision":
            self.decided = True
        elif event == "run":
            if rec.get("phase") == "start":
                self.started = True
            elif rec.get("phase") == "stop":
                self.boundary = self.boundary or self.started
                self.stopped = True
        self.boundary = self.boundary or (self.started and self.decided)
        ts = rec.get("ts")
        if isinstance(ts, str):
            self.first = ts if self.first is None else min(self.first, ts)
            self.last = ts if self.last is None else max(self.last, ts)

    @classmethod
    def of(cls, summary: dict[str, Any]) -> "Ahead":
        """From what a start's `run` record says it set aside (`set_aside`: as_dict and the file)."""
        def count(key: str) -> int:
            value = summary.get(key)
            return value if isinstance(value, int) else 0

        def text(key: str) -> str | None:
            value = summary.get(key)
            return value if isinstance(value, str) else None

        boundary = summary.get("boundary")
        return cls(count("records"), count("fills"), count("orders"), count("runs"), text("first"), text("last"),
                   boundary=boundary if isinstance(boundary, bool) else count("runs") > 0)

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "fills": self.fills, "orders": self.orders, "runs": self.runs,
                "first": self.first, "last": self.last, "boundary": self.boundary}

    @property
    def lost(self) -> bool:
        """Whether they show the database lost committed records, rather than the last moment before a kill."""
        if self.committed_after_read:
            return False
        return self.boundary or self.span_s() > SPAN_S or (self.fills > 1 and not self.many_transactions)

    def committed_since(self, db_last_now: int, db_last_read: int) -> None:
        """The database's last event now, against the one it had when read: an engine beside the check committed
        since, so the records past the read are its commits (committed_after_read)."""
        if db_last_now > db_last_read:
            self.committed_after_read = True

    def span_s(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        with contextlib.suppress(ValueError):
            return (datetime.fromisoformat(self.last.replace("Z", "+00:00"))
                    - datetime.fromisoformat(self.first.replace("Z", "+00:00"))).total_seconds()
        return 0.0

    def held(self) -> str:
        """`N audit records the database does not hold (F fills, O order updates, FIRST to LAST)`."""
        return (f"{self.records} audit records the database does not hold ({self.fills} fills, {self.orders} order "
                f"updates, {self.first} to {self.last})")

    def lost_records(self, db_last: int) -> str:
        """The one line `ffe doctor`, `ffe audit verify` and `ffe backup` fail with when `lost`."""
        return (f"{self.held()} after the database's last event (seq {db_last}): {LOST}: stop any engine on it and "
                "restore the newest backup (`ffe restore --force`), or check the books against the exchange")


def pause_reason(records: int) -> str:
    return (f"{PAUSE} ({records} audit records it does not hold): restore the newest backup, or check the books and "
            "resume")


def aside_files(trail: Path) -> list[Path]:
    """The files a start set records the database never committed aside in, beside the trail (audit.py names
    them `<trail>.uncommitted-after-SEQ`), oldest first; not those a restore moved aside. Each must be a regular
    file: anything else there (a FIFO, a device, a directory) is errors.NotAFile, never opened (a FIFO would be
    waited on for ever); one that cannot be reached (a loop of symbolic links) is errors.UnreachablePath, as a file
    of the trail is (reach.is_a_file)."""
    found = aside_paths(trail)
    for p in found:
        reach.is_a_file(p)
    return found


def aside_paths(trail: Path) -> list[Path]:
    """The paths of the set-aside files, unchecked (for a start, which says what is not a file in its own words)."""
    name = re.compile(re.escape(trail.name) + r"\.uncommitted-after-(\d+)")
    try:
        found = [(int(m.group(1)), p) for p in trail.parent.iterdir() if (m := name.fullmatch(p.name))]
    except FileNotFoundError:
        return []
    return [p for _, p in sorted(found)]


def checked_now(trail: Path) -> dict[str, int]:
    """What a resume records as checked (CHECKED_KEY): every set-aside file there, by name and size (records
    added to one later make it unchecked again)."""
    out = {}
    for p in aside_files(trail):
        with contextlib.suppress(FileNotFoundError):
            out[p.name] = p.stat().st_size
    return out


def unchecked_files(trail: Path, checked: Any) -> list[Path]:
    """The set-aside files no resume has checked (CHECKED_KEY's value `checked`: a file grown since is unchecked)."""
    done = checked if isinstance(checked, dict) else {}
    out = []
    for p in aside_files(trail):
        with contextlib.suppress(FileNotFoundError):
            if done.get(p.name) != p.stat().st_size:
                out.append(p)
    return out


@dataclass
class Unchecked:
    """A set-aside file no resume has checked: what its records hold, and the strictest pause or halt among them
    (state, reason), or None."""

    path: Path
    ahead: Ahead
    stop: tuple[str, str] | None


def unchecked(trail: Path, checked: Any) -> list[Unchecked]:
    """The set-aside files no resume has checked, each read once. A file that cannot be read counts as lost: it
    cannot be told otherwise."""
    out = []
    for p in unchecked_files(trail, checked):
        ahead = Ahead()
        states: list[bytes] = []
        try:
            with open(p, "rb") as f:
                for line in f:
                    if line.strip():
                        ahead.add(line)
                        if b'"event":"engine_state"' in line:
                            states.append(line)
        except FileNotFoundError:
            continue
        except OSError:
            ahead.runs += 1  # unreadable: not shown to be a kill's last moment
        out.append(Unchecked(p, ahead, strictest_stop(states)))
    return out


def unchecked_losses(trail: Path, checked: Any) -> list[tuple[Path, Ahead]]:
    """The set-aside files whose records show the database lost committed ones and that no resume has checked."""
    return [(u.path, u.ahead) for u in unchecked(trail, checked) if u.ahead.lost]


def unsettled(trail: Path, checked: Any, state: Iterable[Any] | None) -> str | None:
    """The one line said while a loss of committed records is not dealt with: a set-aside file of lost records no
    resume has checked, or the engine's stored state still the pause for them; None otherwise."""
    losses = unchecked_losses(trail, checked)
    if losses:
        p, ahead = losses[0]
        more = f" (and {len(losses) - 1} more such files)" if len(losses) > 1 else ""
        return (f"{p}{more}: {ahead.held()}, set aside at a start: the database lost committed records, and nobody "
                f"has dealt with it yet: {REMEDY}")
    row = list(state) if state is not None else []
    if len(row) >= 2 and row[0] == "PAUSED" and str(row[1]).startswith(PAUSE):
        return f"the engine is PAUSED ({row[1]}) and nobody has dealt with it yet: {REMEDY}"
    return None


STRICTNESS = {"RUNNING": 0, "PAUSED": 1, "HALTED": 2}


def strictest_stop(records: Iterable[bytes]) -> tuple[str, str] | None:
    """The strictest pause or halt among records set aside as never committed, (state, reason). Only a kill between
    their write and their commit leaves such records, and then they were never answered; but a database that lost
    committed transactions (its write-ahead log deleted or damaged) leaves them too, and a halt the operator was told
    of must not be dropped with them."""
    strictest: tuple[str, str] | None = None
    for rec in states_in(records):
        state = str(rec.get("state"))
        if STRICTNESS.get(state, 0) > STRICTNESS.get(strictest[0] if strictest else "RUNNING", 0):
            strictest = (state, str(rec.get("reason", "")))
    return strictest


def strictest_of(files: Iterable[Unchecked]) -> tuple[str, str, str] | None:
    """The strictest pause or halt in set-aside files no resume has checked, the start's own and earlier ones':
    (state, reason, the file's name). Kept at every start until the operator resumes (which checks the files): a
    start that failed after setting records aside (a crash loop's, one the OOM killer ended) left its stop in them,
    and the next start must not come up without it."""
    found: tuple[str, str, str] | None = None
    for u in files:
        if u.stop is not None and STRICTNESS.get(u.stop[0], 0) > STRICTNESS.get(found[0] if found else "RUNNING", 0):
            found = (*u.stop, u.path.name)
    return found


def states_in(records: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The `engine_state` records among audit lines, parsed (a line that does not parse is skipped)."""
    for line in records:
        if b'"event":"engine_state"' not in line:
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            yield rec
