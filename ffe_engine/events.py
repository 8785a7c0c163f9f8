"""Typed engine events and a bounded fan-out bus.

Every audited event gets a strictly increasing `seq` (continued across restarts from the store) and a `ts`: the
wall time of the engine's clock (real time live, the hand-moved time of a test clock). Sinks (the store's events
table, the audit file) are called synchronously in publish order; subscribers (the console) get a bounded queue
each that drops its oldest entries rather than ever blocking the engine.
"""

from __future__ import annotations

import asyncio
import operator
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Iterable

import orjson

from .chain import GENESIS, chained, line_hash
from .clock import Clock
from .redact import Redactor


@dataclass(slots=True)
class Event:
    name: ClassVar[str] = "event"
    audit: ClassVar[bool] = True  # False: live UI updates only, not recorded
    seq: int = field(default=0, init=False)
    ts: float = field(default=0.0, init=False)  # the clock's wall time, seconds since epoch

    def payload(self) -> dict[str, Any]:
        names, get = _accessors(type(self))
        return dict(zip(names, get(self)))

    def record(self) -> dict[str, Any]:
        """The audit line: ts, seq, event, then the fields."""
        names, get = _accessors(type(self))
        rec: dict[str, Any] = {"ts": iso_ts(self.ts), "seq": self.seq, "event": self.name}
        rec.update(zip(names, get(self)))
        return rec


_ACCESSORS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def _accessors(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    """The event class's field names and one C-level getter for all their values (events are made per bar)."""
    acc = _ACCESSORS.get(cls)
    if acc is None:
        names = tuple(f.name for f in fields(cls) if f.name not in ("seq", "ts"))
        getter = operator.attrgetter(*names)
        get = getter if len(names) > 1 else (lambda obj, g=getter: (g(obj),))
        acc = _ACCESSORS[cls] = (names, get)
    return acc


def encode(obj: Any) -> bytes:
    return orjson.dumps(obj, default=str)


_iso_second: list[Any] = [-1, ""]
_iso_milli: list[Any] = [-1, ""]


def iso_ts(ts: float) -> str:
    """ISO-8601 UTC with milliseconds. The text is reused within a millisecond and its second: events come many
    to a millisecond in a backtest."""
    ms = int(ts * 1000)
    if ms == _iso_milli[0]:
        cached: str = _iso_milli[1]
        return cached
    sec = ms // 1000
    if sec != _iso_second[0]:
        _iso_second[0] = sec
        _iso_second[1] = datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    text = f"{_iso_second[1]}.{ms - sec * 1000:03d}Z"
    _iso_milli[0], _iso_milli[1] = ms, text
    return text


@dataclass(slots=True)
class EngineStateChanged(Event):
    name: ClassVar[str] = "engine_state"
    state: str = ""
    previous: str = ""
    reason: str = ""
    by: str = "engine"
    # Said by a start, of a state stored earlier without its event (HALTED on a full disk, kept across a restore): no
    # change made now (a HALTED is paged again as kept, not as a kill switch that just cancelled orders).
    restated: bool = False


@dataclass(slots=True)
class DecisionMade(Event):
    name: ClassVar[str] = "decision"
    decision_id: str = ""
    symbol: str = ""
    bar_ts: int = 0
    price: float = 0.0
    action: str = ""
    confidence: float = 0.0
    tier: int = 0
    strategy: str = ""
    votes: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    quantity: float = 0.0
    outcome: str = ""
    reason: str = ""
    sizing: dict[str, Any] = field(default_factory=dict)
    client_order_id: str | None = None
    approval_id: str | None = None


@dataclass(slots=True)
class OrderEvent(Event):
    name: ClassVar[str] = "order"
    client_order_id: str = ""
    decision_id: str | None = None
    symbol: str = ""
    side: str = ""
    type: str = "market"
    quantity: float = 0.0
    status: str = ""
    reason: str = ""
    filled: float = 0.0
    average: float | None = None
    error: str = ""
    venue: str = ""
    by: str = ""  # who asked for the order (a control request's `by`); "" for the engine's own
    cancel_by: str = ""  # who asked for its cancel (`ffe ctl cancel`); "" while nobody has


@dataclass(slots=True)
class FillEvent(Event):
    name: ClassVar[str] = "fill"
    client_order_id: str = ""
    symbol: str = ""
    side: str = ""
    quantity: float = 0.0
    price: float = 0.0
    fee: float = 0.0


@dataclass(slots=True)
class PositionOpened(Event):
    name: ClassVar[str] = "position_opened"
    symbol: str = ""
    side: str = ""
    quantity: float = 0.0
    entry_price: float = 0.0
    stop_loss: float | None = None
    take_profit: float | None = None
    decision_id: str | None = None


@dataclass(slots=True)
class PositionClosed(Event):
    name: ClassVar[str] = "position_closed"
    symbol: str = ""
    side: str = ""
    quantity: float = 0.0
    entry_price: float = 0.0
    exit_price: float = 0.0
    pnl: float = 0.0
    fees: float = 0.0
    reason: str = ""
    trade_id: int | None = None
    decision_id: str | None = None


@dataclass(slots=True)
class BreakerChanged(Event):
    name: ClassVar[str] = "breaker"
    venue: str = ""
    state: str = ""
    previous: str = ""
    failures: int = 0
    error: str = ""
    retry_at: float | None = None  # wall/market seconds when the half-open probe is allowed


@dataclass(slots=True)
class VenueFault(Event):
    """A fault on a venue's order route, and later its resolution: one record of each per fault."""
    name: ClassVar[str] = "venue_fault"
    venue: str = ""
    # rate_limit: orders held until `until` | in_doubt: an order's outcome unknown | refused | reappeared: an order
    # the journal had ended shown by the venue (cancelled there, its fills booked)
    kind: str = ""
    phase: str = ""  # fault | resolved
    client_order_id: str = ""
    detail: str = ""
    until: float | None = None  # rate_limit: wall seconds until which no order goes to the venue


@dataclass(slots=True)
class OrderSettled(Event):
    """An order in doubt the operator settled by hand (`ffe ctl settle`): the exchange never showed it, and its
    fill (or none) is the operator's word. Committed with the order's final status (and its fill)."""
    name: ClassVar[str] = "order_settled"
    client_order_id: str = ""
    symbol: str = ""
    side: str = ""
    outcome: str = ""  # filled | canceled
    quantity: float = 0.0  # filled: what the operator booked
    price: float | None = None  # filled: the price the operator gave
    fee: float = 0.0  # filled: the fee the operator gave, in fee_currency (booked with the fill)
    fee_currency: str = ""  # the symbol's base or quote currency; empty with no fee
    by: str = ""
    detail: str = ""  # what the venue said when it was looked up once more (lookup, balance)


@dataclass(slots=True)
class ApprovalEvent(Event):
    name: ClassVar[str] = "approval"
    approval_id: str = ""
    decision_id: str = ""
    outcome: str = ""  # pending | approved | rejected | expired
    by: str = ""
    symbol: str = ""
    side: str = ""
    quantity: float = 0.0
    price: float = 0.0
    expires_at: float = 0.0
    reason: str = ""
    gates: list[dict[str, Any]] = field(default_factory=list)
    client_order_id: str | None = None  # an approved one's order


@dataclass(slots=True)
class WeightsChanged(Event):
    name: ClassVar[str] = "weights"
    weights: dict[str, float] = field(default_factory=dict)
    reason: str = ""


@dataclass(slots=True)
class ReconcileEvent(Event):
    name: ClassVar[str] = "reconcile"
    status: str = ""  # ok | resolved | differences | unconfirmed | failed | accepted
    differences: list[dict[str, Any]] = field(default_factory=list)
    # accepted with --own-coins: the coins taken as the operator's own that left, asset -> what the baseline lost
    own_coins: dict[str, float] = field(default_factory=dict)
    by: str = ""  # accepted: who accepted (the control request's `by`); "" for the engine's own reconciliations


@dataclass(slots=True)
class RecoveredEvent(Event):
    """After a restore: the orders the venue made after the backup, journaled from the venue (recovery.py)."""

    name: ClassVar[str] = "recovered"
    backup: str = ""
    status: str = ""  # recovered | failed
    orders: list[str] = field(default_factory=list)  # client order ids journaled from the venue
    fills: int = 0  # fills recorded from the venue for them
    detail: str = ""


@dataclass(slots=True)
class BackupEvent(Event):
    """A backup was taken of the running engine's records (backup.py)."""

    name: ClassVar[str] = "backup"
    file: str = ""
    last_seq: int = 0  # the backup holds the records up to this seq
    bytes: int = 0
    held_ms: float = 0.0  # how long the store's writer waited for it (the flush and the pinning of the view)
    by: str = ""  # who asked for it (the control request's `by`)


@dataclass(slots=True)
class ErrorEvent(Event):
    name: ClassVar[str] = "error"
    message: str = ""
    where: str = ""


@dataclass(slots=True)
class KillSwitchEvent(Event):
    name: ClassVar[str] = "kill_switch"
    action: str = "halt"  # halt | flatten
    cancelled: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)  # open when it began, filled before their cancels reached them
    closing: list[str] = field(default_factory=list)
    # closing orders whose answer was lost: their positions are held until the venue says what became of them
    in_doubt: list[str] = field(default_factory=list)
    dust: list[dict[str, Any]] = field(default_factory=list)  # left unsold: below what the venue takes an order for
    # positions whose closing order waits for the venue's Retry-After (symbol, until: wall seconds, detail)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    # positions an exit still works on (its cancel not done), closed once it ends (symbol, quantity, detail)
    after_exit: list[dict[str, Any]] = field(default_factory=list)
    by: str = ""
    elapsed_ms: float = 0.0
    # A flatten's follow-up (by `engine`, once closing orders have ended): not the operator's flatten, whose report
    # it must not read as (its `closing` is what it placed more, `cancelled` nothing); `closed`: the symbols its
    # closing orders closed since (what is left of them, if anything, is `dust`).
    follow_up: bool = False
    closed: list[str] = field(default_factory=list)
    # On a follow-up: the entries on the wire (or in doubt) when the flatten began that have ended since, each with
    # what became of it (client_order_id, symbol, detail: cancelled, absent at the venue, filled and sold...).
    entries: list[dict[str, Any]] = field(default_factory=list)
    # On a follow-up: the positions an earlier word of the flatten left open (symbol, said: in_doubt, waiting,
    # after_exit, failed, closing) whose outcome it says (outcome: closed, gone: nothing held any more, failed).
    answers: list[dict[str, str]] = field(default_factory=list)
    # On a follow-up: the positions still held that no closing order of the flatten works on any more (one failed for
    # good earlier): the follow-up's word must not read as the whole flatten done.
    held: list[str] = field(default_factory=list)
    # A halt's: the positions a flatten under way was closing, which this halt ended (a halt ends a flatten), still
    # held: no closing order goes out for them any more.
    flatten_ended: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RunEvent(Event):
    name: ClassVar[str] = "run"
    phase: str = ""  # start | stop
    mode: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class OverrideEvent(Event):
    """Saved state that takes precedence over the configuration at start (overrides.py), or the other way round."""

    name: ClassVar[str] = "override"
    setting: str = ""
    configured: str = ""
    saved: str = ""
    effective: str = ""
    message: str = ""


# Not audited: fast-moving updates for the console.
@dataclass(slots=True)
class BarEvent(Event):
    name: ClassVar[str] = "bar"
    audit: ClassVar[bool] = False
    symbol: str = ""
    bar_ts: int = 0
    close: float = 0.0
    equity: float = 0.0


@dataclass(slots=True)
class LogEvent(Event):
    name: ClassVar[str] = "log"
    audit: ClassVar[bool] = False
    level: str = "info"
    message: str = ""


Sink = Callable[[Event, bytes], None]  # the event and its audit record, encoded once for every sink


class Subscription:
    """A bounded queue of events for one consumer. Never blocks the publisher: the oldest entries are dropped."""

    def __init__(self, maxlen: int) -> None:
        self._items: deque[Event] = deque(maxlen=maxlen)
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, ev: Event) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(ev)
        self._ready.set()

    def drain(self) -> list[Event]:
        items = list(self._items)
        self._items.clear()
        self._ready.clear()
        return items

    async def get_batch(self, timeout: float | None = None) -> list[Event]:
        if not self._items:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except asyncio.TimeoutError:
                return []
        return self.drain()


class _Stamp:
    """What a sink needs of an event published from its fields: its name, seq and time."""

    __slots__ = ("name", "seq", "ts")

    def __init__(self, name: str, seq: int, ts: float) -> None:
        self.name, self.seq, self.ts = name, seq, ts


EVENT_TYPES: dict[str, type[Event]] = {
    cls.name: cls for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, Event) and cls is not Event
}
"""Every event class by its name, as it appears in the audit trail and on the control socket."""


class EventBus:
    def __init__(self, clock: Clock, *, start_seq: int = 0, redactor: Redactor | None = None,
                 chain: bool = True) -> None:
        self.seq = start_seq
        # The hash chain (chain.py): each record gets the hash of the one before as its `prev`. A backtest leaves it
        # to its record writer process, on the other core (sqlwriter.py).
        self.chain = chain
        self.head = GENESIS  # the hash of the last audit line: the next line's `prev`
        self._wall = clock.wall  # the time each record was written
        # The secrets are taken out of every record's string values before any sink or subscriber sees it.
        self._redactor = redactor if redactor else None
        self._sinks: list[tuple[Sink, frozenset[str] | None]] = []
        # Per event name, the sinks that take it. A record is encoded only when some sink takes it: a sink that
        # watches a few names (the monitor) does not make every event of a backtest be encoded for nothing.
        self._routes: dict[str, tuple[Sink, ...]] = {}
        self._subs: list[Subscription] = []

    def resume(self, seq: int, head: str) -> None:
        """Continue a trail: the next record is seq + 1, its `prev` the hash of the record at seq."""
        self.seq, self.head = seq, head

    def add_sink(self, sink: Sink, names: Iterable[str] | None = None) -> None:
        """`sink(event, line)` is called with every audited event, or only with those named in `names`."""
        self._sinks.append((sink, None if names is None else frozenset(names)))
        self._routes.clear()

    def _route(self, name: str) -> tuple[Sink, ...]:
        sinks = self._routes[name] = tuple(s for s, names in self._sinks if names is None or name in names)
        return sinks

    def subscribe(self, maxlen: int = 20_000) -> Subscription:
        sub = Subscription(maxlen)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish_fields(self, cls: type[Event], fields: dict[str, Any]) -> int:
        """Publish an event given as its fields: the record is built from them directly, and the event object only
        when someone subscribes (a backtest has no one to show it to). Returns the event's seq."""
        ts = self._wall()
        self.seq += 1
        sinks = self._routes.get(cls.name)
        if sinks is None:
            sinks = self._route(cls.name)
        if sinks:
            rec: dict[str, Any] = {"ts": iso_ts(ts), "seq": self.seq, "event": cls.name}
            rec.update(fields)
            line = encode(rec)
            if self._redactor is not None and self._redactor.in_encoded(line):
                line = self._redactor.record(line)
                fields = self._redactor.value(fields)
            if self.chain:  # after redaction: the line hashed is the line written
                line = chained(line, self.head)
                self.head = line_hash(line)
            ev = _Stamp(cls.name, self.seq, ts)
            for sink in sinks:
                sink(ev, line)  # type: ignore[arg-type]
        if self._subs:
            ev2 = cls(**fields)
            if not sinks and self._redactor is not None:  # no record was made to find a secret in
                ev2 = self._redactor.event(ev2)
            ev2.seq, ev2.ts = self.seq, ts
            for sub in self._subs:
                sub.put(ev2)
        return self.seq

    def relay(self, ev: Event) -> None:
        """Deliver an event stamped elsewhere (an engine in another process) to the subscribers only. The bus's own
        events are numbered after it, so that they read as later than what the engine did before them."""
        self.seq = max(self.seq, ev.seq)
        for sub in self._subs:
            sub.put(ev)

    def publish(self, ev: Event) -> bytes | None:
        """Deliver an event; returns its encoded audit record (None for events that are not audited)."""
        ev.ts = self._wall()
        line = None
        if ev.audit:
            self.seq += 1
            ev.seq = self.seq
            sinks = self._routes.get(ev.name)
            if sinks is None:
                sinks = self._route(ev.name)
            if sinks:
                line = encode(ev.record())
                if self._redactor is not None and self._redactor.in_encoded(line):
                    line = self._redactor.record(line)
                    ev = self._redactor.event(ev)  # for the sinks and the subscribers (the console)
                if self.chain:
                    line = chained(line, self.head)
                    self.head = line_hash(line)
                for sink in sinks:
                    sink(ev, line)
        if line is None and self._subs and self._redactor is not None:  # no record was made to find a secret in
            ev = self._redactor.event(ev)
        for sub in self._subs:
            sub.put(ev)
        return line
