"""The audit trail's records after the database's last event, and the one judgement of what they mean.

The store writes the trail before it commits the same events, so a kill leaves the trail ahead of the database by the
records of the moment before it, never committed: the next start sets them aside. More than that (a run's boundary among
them (a stop with records after it, a start with bar decisions beside it) or a whole run, or over a minute of records)
is no kill's last moment: the database lost records it had committed (an older copy put back, its WAL lost). The start
(its STARTED page), `ffe doctor`, `ffe audit verify` and `ffe backup` all judge them here, and say them in the same
words.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

# Records ahead spanning longer than this are more than the moment before a kill.
SPAN_S = 60.0
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
        return self.boundary or self.span_s() > SPAN_S

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
