"""Value types shared by every part of the engine.

Plain dataclasses with slots: they are created once per bar on the hot path, so they stay cheap. Timestamps are
integer milliseconds since the Unix epoch (UTC) everywhere inside the engine.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from functools import lru_cache
from enum import Enum
from typing import Any


class Action(str, Enum):
    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"


class EngineState(str, Enum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    HALTED = "HALTED"


@lru_cache(maxsize=4096)  # the same position's quantity is checked on every bar it is held (Portfolio.dust_at)
def floor_to_step(qty: float, step: float) -> float:
    """qty rounded down to a whole number of steps, written with the step's decimals: 0.01001 on a 0.00001 step,
    not the 0.010010000000000002 that the product of the two floats gives."""
    if step <= 0:
        return qty
    if qty / step >= 2.0**53:  # past the floats' whole numbers: no step can be told from the next
        return qty
    n = math.floor(qty / step + 1e-9)
    # A whole number of steps may come out a hair below it (by a few ulps of the quotient, which grow past the 1e-9
    # above with a quantity of 1e11 steps and more): one step more when it is within float noise of the quantity.
    if (n + 1) * step <= qty * (1.0 + 4e-16):
        n += 1
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + 2  # a step like 0.0025 needs its own digits
    # Never more than was given, but for float noise below what a venue tells apart (1e-9): the product of so many
    # steps can round above the quantity, and a sale would ask for more coins than are held at every try.
    floored = round(n * step, decimals)
    return floored if floored <= qty + 1e-9 else qty


class OrderStatus(str, Enum):
    NEW = "new"  # journaled, not yet sent
    IN_DOUBT = "in_doubt"  # sent, answer lost: resolved by looking it up by client order id
    OPEN = "open"  # accepted by the venue, not (fully) filled
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"  # refused by a gate or by the venue

    @property
    def final(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED)

    def can_become(self, new: "OrderStatus") -> bool:
        """Whether an order in this status may move to `new`. A final status never changes, and an order the venue
        has shown (OPEN) never goes back to NEW or IN_DOUBT: a late, lost answer to its create_order says nothing
        the venue has not already said."""
        return new in _NEXT_STATUS[self]


_NEXT_STATUS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset(OrderStatus),
    OrderStatus.IN_DOUBT: frozenset(OrderStatus),  # NEW again: sent again with the same id once surely absent
    OrderStatus.OPEN: frozenset({OrderStatus.OPEN, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED}),
    OrderStatus.FILLED: frozenset({OrderStatus.FILLED}),
    OrderStatus.CANCELED: frozenset({OrderStatus.CANCELED}),
    OrderStatus.REJECTED: frozenset({OrderStatus.REJECTED}),
}

# An approval's status (approvals table): pending until it ends approved, rejected or expired.
APPROVAL_PENDING = "pending"
APPROVAL_STATUSES = (APPROVAL_PENDING, "approved", "rejected", "expired")


class OrderReason(str, Enum):
    SIGNAL = "signal"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    FLATTEN = "flatten"
    OPERATOR = "operator"
    RECONCILE = "reconcile"
    BY_HAND = "by_hand"  # a sale the operator made on the exchange, outside ffe, booked by their word: never sent


@dataclass(slots=True)
class Candle:
    symbol: str
    ts: int  # open time, ms UTC
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(slots=True)
class Vote:
    provider: str
    action: Action
    confidence: float  # 0..1
    reason: str = ""
    latency_ms: float = 0.0


@dataclass(slots=True)
class GateResult:
    code: str
    value: Any
    limit: Any
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "value": self.value, "limit": self.limit, "passed": self.passed,
                "detail": self.detail}

    def refusal(self) -> str:
        """The reason shown for an order this gate refused."""
        return f"{self.code}: value={self.value} limit={self.limit}"


@dataclass(slots=True)
class EnsembleResult:
    action: Action
    confidence: float
    tier: int  # 1 configured strategy, 2 majority, 3 average confidence, 4 single best vote; 0 = quorum HOLD
    strategy: str
    votes: list[Vote]
    failed: list[str]
    weights: dict[str, float]  # the weights actually applied to this decision
    reason: str = ""


@dataclass(slots=True)
class MarketInfo:
    """What a venue says about a symbol: precision and minimums."""

    symbol: str
    base: str
    quote: str
    amount_step: float = 1e-8  # quantity is rounded down to a multiple of this
    price_step: float = 1e-8
    min_qty: float = 0.0
    min_notional: float = 0.0

    def below_minimum(self, qty: float, price: float | None) -> bool:
        """Whether the venue would refuse this quantity (at this price, when one is known) as too small."""
        return qty <= 0 or qty < self.min_qty or bool(price and qty * price < self.min_notional)


@dataclass(slots=True)
class OrderRequest:
    """What the single order path asks a venue to do. The client order id is chosen before the first send."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    type: str = "market"  # market | limit
    price: float | None = None  # limit price
    reduce_only: bool = False


def trail_disagrees(journal_status: str, trail_final: str | None) -> bool:
    """Whether an order's journal contradicts its audit trail (`trail_final`: the final status the trail shows for
    it, None when it shows none): only when the trail says the order ended, and the journal says otherwise. The
    journal may be ahead of the trail: a kill between storing an order's new status and writing its event leaves
    it so, and the next start goes on from the journal. `ffe doctor` and `ffe backup verify` judge by this alike."""
    return trail_final is not None and journal_status != trail_final


@dataclass(slots=True)
class VenueOrder:
    """A venue's view of one order. `filled`, `average` and `fee` are cumulative."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    status: str  # open | closed | canceled | rejected  (ccxt's unified statuses)
    filled: float = 0.0
    average: float | None = None
    fee: float = 0.0  # all fees, valued in the quote currency
    exchange_id: str | None = None
    type: str = "market"
    price: float | None = None
    ts: int | None = None
    fee_base: float = 0.0  # the part of the fee taken in the base asset, as an amount of it
    # What `fee` counts for `fee_base`: each trade's base fee at that trade's own price (fee - this: paid in cash).
    fee_base_value: float = 0.0
    side_known: bool = True  # False: the venue's answer did not say (`side` is then a placeholder)
    # The venue showed more filled than the order's trades cover yet: answered as far as they go, the rest read later.
    trades_behind: bool = False
    # With trades_behind: the status the venue gave the order (answered "open" until its trades show), e.g. canceled.
    venue_status: str | None = None
    # With trades_behind: how much the venue says the order filled (`filled` is what its trades cover).
    venue_filled: float | None = None
    # With trades_behind: the venue knows of none of the order's trades from before this answer (a start since it
    # placed the order): those it lists need not include those booked already.
    trades_unsure: bool = False


@dataclass(slots=True)
class Order:
    """The engine's journal entry for one order."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    type: str
    reason: OrderReason
    venue: str
    decision_id: str | None = None
    price: float | None = None
    reduce_only: bool = False
    status: OrderStatus = OrderStatus.NEW
    filled: float = 0.0
    average: float | None = None
    fee: float = 0.0
    exchange_id: str | None = None
    created_ts: int = 0
    updated_ts: int = 0
    error: str = ""
    fee_base: float = 0.0  # cumulative part of `fee` taken in the base asset, as an amount of it
    fee_base_value: float = 0.0  # cumulative: what `fee` counts for `fee_base`, each trade's at its own price
    by: str = ""  # who asked for it (its intent's `by`): "" for the engine's own
    cancel_by: str = ""  # who asked for its cancel, once someone has (in memory: not a column of the journal)


@dataclass(slots=True)
class Fill:
    client_order_id: str
    symbol: str
    side: Side
    quantity: float  # traded, gross
    price: float
    fee: float  # valued in the quote currency, whatever it was paid in
    ts: int
    fee_base: float = 0.0  # of which taken in the base asset (amount of it): the position holds that much less
    # What `fee` counts for `fee_base`, valued at the prices of the trades that paid it (not at `price`, the fill's
    # average): `fee - fee_base_value` is what the fill took from the cash.
    fee_base_value: float = 0.0
    # When the venue placed the order, on the venue's own clock (VenueOrder.ts; None when it did not say): the prices
    # a position it opens lives through begin there, on the clock the venue's candles keep. `ts` is this machine's.
    venue_ts: int | None = None


@dataclass(slots=True)
class Position:
    symbol: str
    side: Side  # BUY = long
    quantity: float
    entry_price: float
    opened_ts: int
    stop_loss: float | None = None
    take_profit: float | None = None
    entry_decision_id: str | None = None
    fees: float = 0.0  # entry fees, charged to the trade's P&L when it closes
    last_price: float = 0.0

    @property
    def unrealised(self) -> float:
        sign = 1.0 if self.side is Side.BUY else -1.0
        return sign * (self.last_price - self.entry_price) * self.quantity


@dataclass(slots=True)
class ClosedTrade:
    symbol: str
    side: Side
    quantity: float
    entry_price: float
    exit_price: float
    pnl: float  # net of entry and exit fees
    fees: float
    reason: str
    opened_ts: int
    closed_ts: int
    entry_decision_id: str | None = None
    exit_client_order_id: str | None = None
    trade_id: int | None = None

    @property
    def return_pct(self) -> float:
        cost = self.entry_price * self.quantity
        return 100.0 * self.pnl / cost if cost else 0.0


@dataclass(slots=True)
class Decision:
    """One decision with its full context, as stored and as shown."""

    decision_id: str
    symbol: str
    ts: int
    price: float
    ensemble: EnsembleResult
    quantity: float = 0.0
    sizing: dict[str, Any] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    outcome: str = "hold"  # hold | no_position | in_position | below_minimum | rejected | pending | submitted | ...
    reason: str = ""
    client_order_id: str | None = None
    approval_id: str | None = None
    recorded: bool = False  # its record published (with the approval it waits for, in the approval's transaction)

    @property
    def action(self) -> Action:
        return self.ensemble.action
