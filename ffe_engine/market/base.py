"""The feed interface: every market data source yields closed candles in time order."""

from __future__ import annotations

from typing import AsyncIterator, Protocol

from ..model import Candle


class Feed(Protocol):
    symbols: list[str]
    timeframe_ms: int

    def candles(self) -> AsyncIterator[Candle]:
        """Closed candles, in non-decreasing time order across symbols, paced by the feed's clock."""
        ...

    async def close(self) -> None: ...
