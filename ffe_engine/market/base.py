"""The feed interface: every market data source yields closed candles in time order."""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol, runtime_checkable

from ..model import Candle


class Feed(Protocol):
    symbols: list[str]
    timeframe_ms: int

    def candles(self) -> AsyncIterator[Candle]:
        """Closed candles, in non-decreasing time order across symbols, paced by the feed's clock."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class ResumableFeed(Protocol):
    """A market made or replayed in the process (the simulated one, a replay of CSV files): its state is stored with
    the engine's books, so a restart continues it instead of starting a new price path."""

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> bool:
        """Continue from a stored state; False when the state does not fit this feed (a new path then)."""
        ...


@runtime_checkable
class QuotingFeed(Protocol):
    """A market read from an exchange, which quotes the price it is at between its bars' closes."""

    async def last_price(self, symbol: str) -> float: ...
