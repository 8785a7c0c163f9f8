"""What the panes show, built from engine events alone (no textual here: plain data, easy to check).

`ConsoleState.apply(events)` folds a batch of events into: the log tail (bounded), the latest decision per symbol,
the last evaluated order's gates, the chart series and the last kill switch report and error. It
returns the names of the panes whose content changed, so the screen redraws only those.
"""

from __future__ import annotations

import dataclasses

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

from ffe_engine import events as ev
from ffe_engine import fmt, present

# Every event type the log can be filtered on, by the names the audit trail uses (BarEvent is a per-candle UI
# update and never logged).
EVENT_NAMES: tuple[str, ...] = tuple(sorted(name for name, c in ev.EVENT_TYPES.items() if c is not ev.BarEvent))


@dataclass(slots=True)
class LogLine:
    name: str
    text: str


class LogFilter:
    """`order,fill` shows only those types; `-decision` hides decisions; empty shows everything."""

    __slots__ = ("include", "exclude", "spec")

    def __init__(self, spec: str = "") -> None:
        include: set[str] = set()
        exclude: set[str] = set()
        for word in spec.replace(",", " ").split():
            neg = word.startswith(("-", "!"))
            name = word[1:] if neg else word
            if name not in EVENT_NAMES:
                raise ValueError(f"unknown event type {name!r} (known: {', '.join(EVENT_NAMES)})")
            (exclude if neg else include).add(name)
        self.include = include
        self.exclude = exclude
        self.spec = " ".join(sorted(include) + sorted("-" + n for n in exclude))

    def __call__(self, name: str) -> bool:
        if self.include and name not in self.include:
            return False
        return name not in self.exclude


def gates_title(symbol: str, side: Any, quantity: float, outcome: str) -> str:
    """The Risk gates pane's title: what the gates were checked for, and what became of it. The side in the words
    the approvals and orders say it in (buy, sell), whether a decision's action or an order's side says it."""
    return f"{symbol} {fmt.enum_text(side).lower()} {fmt.qty(quantity)} -> {outcome}"


class ConsoleState:
    def __init__(self, symbols: Iterable[str], *, max_lines: int = 5000, chart_points: int = 240) -> None:
        self.symbols = list(symbols)
        self.lines: deque[LogLine] = deque(maxlen=max_lines)
        self.filter = LogFilter()
        self.pending_lines: list[LogLine] = []  # matched the filter, not yet on screen
        self.decisions: dict[str, ev.DecisionMade] = {}
        self.gates: dict[str, Any] | None = None  # {"title": str, "gates": [...]}
        self.prices: dict[str, deque[float]] = {s: deque(maxlen=chart_points) for s in self.symbols}
        self.equity: deque[float] = deque(maxlen=chart_points)
        self._equity_ts: int | None = None
        self.kill: ev.KillSwitchEvent | None = None
        # What the kill switch pressed again and the halt's follow-ups did while the engine stayed HALTED since
        # `kill`: said after `kill`, which says what the halt cancelled first, never in its place.
        self.kill_later: list[ev.KillSwitchEvent] = []
        self._halted_since_kill = False
        self.error: ev.ErrorEvent | None = None
        self.approvals_done: list[ev.ApprovalEvent] = []  # outcomes since the last look (for notifications)

    def apply(self, batch: list[ev.Event], news: bool = True) -> set[str]:
        """Fold events in; `news=False` for events from before this console (an attached engine's recent past):
        they go to the log, votes and gates, but raise no banner and no notice."""
        changed: set[str] = set()
        keep = self.filter
        for e in batch:
            if isinstance(e, ev.BarEvent):
                series = self.prices.get(e.symbol)
                if series is not None:
                    series.append(e.close)
                if e.bar_ts != self._equity_ts:
                    self._equity_ts = e.bar_ts
                    self.equity.append(e.equity)
                else:
                    self.equity[-1] = e.equity
                changed.add("chart")
                continue
            line = LogLine(e.name, f"{fmt.clock(e.ts)} {present.line(e.name, e.payload())}")
            self.lines.append(line)
            if keep(e.name):
                self.pending_lines.append(line)
                changed.add("log")
            if isinstance(e, ev.DecisionMade):
                self.decisions[e.symbol] = e
                changed.add("votes")
                if e.gates:
                    self.gates = {"title": gates_title(e.symbol, e.action, e.quantity, e.outcome), "gates": e.gates}
                    changed.add("gates")
            elif isinstance(e, ev.ApprovalEvent):
                if e.outcome == "pending" and e.gates:
                    self.gates = {"title": gates_title(e.symbol, e.side, e.quantity, "awaiting approval"),
                                  "gates": e.gates, "approval": e.approval_id}
                    changed.add("gates")
                elif e.outcome != "pending":
                    changed |= self._approval_ended(e)
                    if news:
                        self.approvals_done.append(e)
                changed.add("approvals")
            elif isinstance(e, ev.KillSwitchEvent) and news:
                if (self.kill is not None and self._halted_since_kill and e.action == "halt"
                        and self.kill.action == "halt"):
                    self.kill_later.append(e)
                else:
                    self.kill, self.kill_later = e, []
                self._halted_since_kill = True
                changed.add("banner")
            elif isinstance(e, ev.ErrorEvent) and news:
                self.error = e
                changed.add("banner")
            elif isinstance(e, (ev.EngineStateChanged, ev.PositionOpened, ev.PositionClosed, ev.FillEvent)):
                if isinstance(e, ev.EngineStateChanged) and e.state != "HALTED":
                    self._halted_since_kill = False
                changed.add("status")
        if len(self.pending_lines) > self.lines.maxlen:
            del self.pending_lines[: len(self.pending_lines) - self.lines.maxlen]
        return changed

    def _approval_ended(self, e: ev.ApprovalEvent) -> set[str]:
        """What the gates' title and the votes said of a trade waiting for approval, brought up to its end (nothing
        when a newer decision has replaced them)."""
        changed = set()
        ended = f"approval {e.outcome}" + (f" by {e.by}" if e.by else "")
        if self.gates is not None and self.gates.get("approval") == e.approval_id:
            self.gates = {**self.gates, "title": gates_title(e.symbol, e.side, e.quantity, ended),
                          "approval": None}
            changed.add("gates")
        d = self.decisions.get(e.symbol)
        if d is not None and d.decision_id == e.decision_id and d.outcome == "pending_approval":
            self.decisions[e.symbol] = dataclasses.replace(d, outcome=f"approval {e.outcome}")
            changed.add("votes")
        return changed

    def set_gates(self, title: str, gates: list[dict[str, Any]]) -> None:
        self.gates = {"title": title, "gates": gates}

    def set_filter(self, spec: str) -> list[LogLine]:
        """Apply a new filter (ValueError for an unknown type); returns the kept lines to show again."""
        self.filter = LogFilter(spec)
        self.pending_lines = []
        return [ln for ln in self.lines if self.filter(ln.name)]

    def toggle(self, name: str) -> list[LogLine]:
        """Show or hide one event type, keeping the rest of the filter; returns the kept lines to show again."""
        words = self.filter.spec.split()
        if self.filter(name):
            words = [w for w in words if w != name]
            if not any(not w.startswith("-") for w in words):
                words.append("-" + name)
        else:
            words = [w for w in words if w != "-" + name]
            if any(not w.startswith("-") for w in words):
                words.append(name)
        return self.set_filter(" ".join(words))

    def take_lines(self) -> list[LogLine]:
        out, self.pending_lines = self.pending_lines, []
        return out
