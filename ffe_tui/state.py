"""What the panes show, built from engine events alone (no textual here: plain data, easy to check).

`ConsoleState.apply(events)` folds a batch of events into: the log tail (bounded), the latest decision per symbol,
the last evaluated order's gates, the chart series and the last kill switch report and error. It
returns the names of the panes whose content changed, so the screen redraws only those.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

from ffe_engine import events as ev

from . import fmt

# Every event type the log can be filtered on (BarEvent is a per-candle UI update and never logged).
EVENT_NAMES: tuple[str, ...] = tuple(sorted(c.name for c in ev.Event.__subclasses__() if c is not ev.BarEvent))


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


def _votes(votes: list[dict[str, Any]]) -> str:
    return " ".join(f"{v.get('provider')}={fmt.enum_text(v.get('action'))}" for v in votes)


def describe(e: ev.Event) -> str:
    """One log line for an event, without its time."""
    n = e.name
    if isinstance(e, ev.EngineStateChanged):
        if e.state == e.previous:
            return f"{n} {e.state}: {e.reason} (by {e.by})"
        return f"{n} {e.previous} -> {e.state}: {e.reason} (by {e.by})"
    if isinstance(e, ev.DecisionMade):
        text = (f"{n} {e.symbol} {fmt.enum_text(e.action)} {e.confidence:.2f} tier {e.tier} -> {e.outcome or '-'}")
        if e.quantity:
            text += f" qty {fmt.qty(e.quantity)}"
        if e.failed:
            text += f" failed: {','.join(e.failed)}"
        if e.outcome not in ("hold", "") and e.reason:
            text += f" ({e.reason})"
        return text
    if isinstance(e, ev.OrderEvent):
        text = (f"{n} {e.symbol} {fmt.enum_text(e.side)} {fmt.qty(e.quantity)} {e.type} {fmt.enum_text(e.status)} "
                f"{fmt.enum_text(e.reason)} {e.client_order_id}")
        return text + (f" error: {e.error}" if e.error else "")
    if isinstance(e, ev.FillEvent):
        return f"{n} {e.symbol} {fmt.enum_text(e.side)} {fmt.qty(e.quantity)} @ {fmt.price(e.price)} fee {e.fee:.4g}"
    if isinstance(e, ev.PositionOpened):
        return (f"{n} {e.symbol} {e.side} {fmt.qty(e.quantity)} @ {fmt.price(e.entry_price)} "
                f"SL {fmt.price(e.stop_loss)} TP {fmt.price(e.take_profit)}")
    if isinstance(e, ev.PositionClosed):
        return (f"{n} {e.symbol} {fmt.qty(e.quantity)} {fmt.price(e.entry_price)} -> {fmt.price(e.exit_price)} "
                f"pnl {fmt.money(e.pnl, signed=True)} ({e.reason})")
    if isinstance(e, ev.BreakerChanged):
        text = f"{n} {e.venue} {e.previous} -> {e.state} failures {e.failures}"
        return text + (f": {e.error}" if e.error else "")
    if isinstance(e, ev.ApprovalEvent):
        text = (f"{n} {e.approval_id} {e.outcome} {e.symbol} {e.side} {fmt.qty(e.quantity)} @ {fmt.price(e.price)} "
                f"by {e.by}")
        return text + (f" ({e.reason})" if e.reason else "")
    if isinstance(e, ev.WeightsChanged):
        return f"{n} " + " ".join(f"{k}={v:.3f}" for k, v in e.weights.items())
    if isinstance(e, ev.ReconcileEvent):
        return f"{n} {e.status} ({len(e.differences)} difference(s))"
    if isinstance(e, ev.ErrorEvent):
        return f"{n} [{e.where}] {e.message}"
    if isinstance(e, ev.KillSwitchEvent):
        return f"{n} {e.action} {kill_summary(e)}"
    if isinstance(e, ev.RunEvent):
        d = e.detail
        keep = " ".join(f"{k}={d[k]}" for k in ("state", "approval", "positions", "recovered_orders", "bars", "equity")
                        if k in d)
        return f"{n} {e.phase} {e.mode} {keep}".rstrip()
    if isinstance(e, ev.LogEvent):
        return f"{n} {e.level} {e.message}"
    return f"{n} " + " ".join(f"{k}={v}" for k, v in e.payload().items())


def kill_summary(e: ev.KillSwitchEvent) -> str:
    parts = [f"by {e.by or '?'}: cancelled {len(e.cancelled)}"]
    if e.cancelled:
        parts.append(f"({', '.join(e.cancelled[:4])}{', …' if len(e.cancelled) > 4 else ''})")
    parts.append(f"failed {len(e.failed)}")
    if e.failed:
        parts.append("(" + ", ".join(f"{f.get('client_order_id') or f.get('symbol')}: {f.get('error')}"
                                     for f in e.failed[:3]) + ")")
    if e.action == "flatten":
        parts.append(f"closing {len(e.closing)}")
    if e.elapsed_ms:
        parts.append(f"in {e.elapsed_ms:.1f} ms")
    return " ".join(parts)


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
        self.error: ev.ErrorEvent | None = None
        self.approvals_done: list[ev.ApprovalEvent] = []  # outcomes since the last look (for notifications)

    def apply(self, batch: list[ev.Event]) -> set[str]:
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
            line = LogLine(e.name, f"{fmt.clock(e.ts)} {describe(e)}")
            self.lines.append(line)
            if keep(e.name):
                self.pending_lines.append(line)
                changed.add("log")
            if isinstance(e, ev.DecisionMade):
                self.decisions[e.symbol] = e
                changed.add("votes")
                if e.gates:
                    self.gates = {"title": f"{e.symbol} {fmt.enum_text(e.action)} {fmt.qty(e.quantity)} -> "
                                           f"{e.outcome}", "gates": e.gates}
                    changed.add("gates")
            elif isinstance(e, ev.ApprovalEvent):
                if e.outcome == "pending" and e.gates:
                    self.gates = {"title": f"{e.symbol} {e.side} {fmt.qty(e.quantity)} -> awaiting approval",
                                  "gates": e.gates}
                    changed.add("gates")
                elif e.outcome != "pending":
                    self.approvals_done.append(e)
                changed.add("approvals")
            elif isinstance(e, ev.KillSwitchEvent):
                self.kill = e
                changed.add("banner")
            elif isinstance(e, ev.ErrorEvent):
                self.error = e
                changed.add("banner")
            elif isinstance(e, (ev.EngineStateChanged, ev.PositionOpened, ev.PositionClosed, ev.FillEvent)):
                changed.add("status")
        if len(self.pending_lines) > self.lines.maxlen:
            del self.pending_lines[: len(self.pending_lines) - self.lines.maxlen]
        return changed

    def set_gates(self, title: str, gates: list[dict[str, Any]]) -> None:
        self.gates = {"title": title, "gates": gates}

    def set_filter(self, spec: str) -> list[LogLine]:
        """Apply a new filter (ValueError for an unknown type); returns the kept lines to show again."""
        self.filter = LogFilter(spec)
        self.pending_lines = []
        return [ln for ln in self.lines if self.filter(ln.name)]

    def take_lines(self) -> list[LogLine]:
        out, self.pending_lines = self.pending_lines, []
        return out
