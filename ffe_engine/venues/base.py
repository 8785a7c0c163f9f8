"""The venue interface: what the single order path (execution.py) needs from an exchange.

Only execution.py calls `create_order` and `cancel_order`. Everything else reads.

Two capabilities beyond it are declared here, so the engine asks `isinstance` instead of probing attributes:
- `SimulatedVenue`: an exchange inside the process (the paper venue). It fills on market data, so the engine
  shows it every candle; its book is the engine's to store and restore; there is no real account behind it.
- `CandleVenue`: a venue that also serves candles (`fetch_ohlcv`), which the exchange feed can share.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

from ..model import Candle, MarketInfo, OrderRequest, VenueOrder

# True while a call runs as a circuit breaker's probe (breaker.py): an exchange that may still be down is asked
# once, not given a read's retries; the probe's failure opens the breaker again.
PROBING: ContextVar[bool] = ContextVar("ffe_breaker_probing", default=False)


class VenueError(Exception):
    """A final answer from the venue: the order was refused (funds, invalid, auth), in the exchange's own words (an
    error taken from an HTTP status alone is no refusal: OrderInDoubt). Never retried."""


class UnknownOrder(VenueError):
    """The venue has no order with this client order id (cancelling an order it never had)."""


class VenueUnavailable(Exception):
    """A transient failure (network, timeout, 5xx, rate limit). Counts against the circuit breaker when sent.

    `retry_after` is the wait in seconds the venue asked for (HTTP Retry-After), when it said so. `sent` is False
    when the request was not sent at all, held back by an earlier Retry-After: the exchange did not refuse it (no
    failure of the exchange's: the breaker does not count it), and it goes out once that time is over.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None, sent: bool = True) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.sent = sent

    @property
    def asked_to_wait(self) -> bool:
        """The exchange asked for a wait (Retry-After): this request was refused with it, or held back for it. The
        exchange answers, so it is not unreachable; what was not done is done once the wait is over."""
        return bool(self.retry_after) or not self.sent


def clock_refused(text: str) -> bool:
    """An exchange's refusal of a request's timestamp (ccxt's InvalidNonce: Binance -1021, outside the receive
    window): the machine's clock, not the network."""
    return "InvalidNonce" in text or "recvWindow" in text


class OrderInDoubt(VenueUnavailable):
    """create_order failed in a way that leaves open whether the venue placed the order."""


class DuplicateOrder(OrderInDoubt):
    """create_order refused because the venue already has an open order with this client order id: the order
    exists, in a state the reply does not tell. Resolved like any order in doubt, by looking it up."""


class Venue(Protocol):
    name: str
    # After an unanswered create_order, how long until a lookup that does not find the order proves it absent
    # (the venue refuses the original request after that). 0 for a venue that answers in process.
    settle_s: float

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    def market(self, symbol: str) -> MarketInfo: ...

    async def reload_markets(self) -> None: ...

    async def create_order(self, req: OrderRequest) -> VenueOrder: ...

    async def cancel_order(self, client_order_id: str, symbol: str) -> VenueOrder: ...

    async def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        """The order as the venue knows it, or None when the venue surely does not have it."""
        ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[VenueOrder]: ...

    async def fetch_balance(self) -> dict[str, float]:
        """Total balance per asset."""
        ...

    async def fetch_balance_locked(self) -> tuple[dict[str, float], dict[str, float]]:
        """Total balance per asset, and what open orders hold of it where the venue says so."""
        ...


@runtime_checkable
class SimulatedVenue(Protocol):
    """An exchange simulated in the process."""

    dirty: bool  # its book changed since it was last stored

    def on_candle(self, c: Candle) -> int:
        """A closed candle: fill what it fills (orders of its own symbol only); returns how many orders filled. With
        no order of its symbol open a candle only moves the venue's price and time: a backtest hands it only the
        last of a stretch of such candles of each symbol (Engine._idle_stretch), and polls the orders in flight only
        after a candle that filled one."""
        ...

    def set_price(self, symbol: str, price: float) -> None:
        """A price known without a new candle (the warm-up history)."""
        ...

    def resume_at(self, ts_ms: int) -> None:
        """A restart's market goes on from the candle opening at ts_ms, which may be handed out again: an order
        placed from now on counts as placed on it, and fills from the next candle's open, never this one's."""
        ...

    def state(self) -> dict[str, Any]:
        """Its book, to store."""
        ...

    def load(self, state: dict[str, Any]) -> None:
        """Its book, as stored."""
        ...


@runtime_checkable
class CandleVenue(Protocol):
    async def fetch_ohlcv(self, symbol: str, timeframe: str, since: int | None = None,
                          limit: int | None = None) -> list[list[float]]: ...


@runtime_checkable
class ProbedVenue(Protocol):
    async def probe(self) -> None:
        """One read of the account, not retried: a circuit breaker's probe of a venue that failed (one request, not
        a read's retries, to an exchange known to be failing)."""
        ...


@runtime_checkable
class OrderHistoryVenue(Protocol):
    async def fetch_orders_since(self, symbol: str, since_ms: int) -> list[VenueOrder]:
        """Every order of the account on `symbol` created at or after `since_ms` (open and closed, oldest first,
        fees included): what a restored journal lacks."""
        ...
