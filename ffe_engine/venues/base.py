"""The venue interface: what the single order path (execution.py) needs from an exchange.

Only execution.py calls `create_order` and `cancel_order`. Everything else reads.
"""

from __future__ import annotations

from typing import Protocol

from ..model import MarketInfo, OrderRequest, VenueOrder


class VenueError(Exception):
    """A final answer from the venue: the order was refused (funds, invalid, auth). Never retried."""


class UnknownOrder(VenueError):
    """The venue has no order with this client order id (cancelling an order it never had)."""


class VenueUnavailable(Exception):
    """A transient failure (network, timeout, 5xx, rate limit). Counts against the circuit breaker.

    `retry_after` is the wait in seconds the venue asked for (HTTP Retry-After), when it said so.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OrderInDoubt(VenueUnavailable):
    """create_order failed in a way that leaves open whether the venue placed the order."""


class DuplicateOrder(OrderInDoubt):
    """create_order refused because the venue already has an open order with this client order id: the order
    exists, in a state the reply does not tell. Resolved like any order in doubt, by looking it up."""


class Venue(Protocol):
    name: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    def market(self, symbol: str) -> MarketInfo: ...

    async def create_order(self, req: OrderRequest) -> VenueOrder: ...

    async def cancel_order(self, client_order_id: str, symbol: str) -> VenueOrder: ...

    async def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        """The order as the venue knows it, or None when the venue surely does not have it."""
        ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[VenueOrder]: ...

    async def fetch_balance(self) -> dict[str, float]:
        """Total balance per asset."""
        ...
