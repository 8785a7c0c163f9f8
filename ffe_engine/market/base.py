"""The feed interface: every market data source yields closed candles in time order."""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping, Protocol, runtime_checkable

from ..errors import StartError
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

    def state(self) -> dict[str, Any]:
        """Where the market is, to store with the books: a candle handed out that the engine has not processed yet
        (another task stores the books meanwhile) is not in it, so that a restart hands it out again if the records
        do not say it was decided."""
        ...

    def processed(self, candle: Candle) -> None:
        """The engine is done with `candle` (decided, its orders placed): state() holds it as handed out from now."""
        ...

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a stored state, whatever the order of the symbols, and never from before the market time it
        reached. MarketStateError when it is another source's market, ValueError when it cannot be read."""
        ...

    def not_before(self, ts_ms: int, done: Mapping[str, int] | None = None) -> None:
        """The clock has reached ts_ms (the latest time the records say it reached): no candle closing before it,
        market time never goes back; a symbol's candle closing at it, not processed yet, still comes. `done`: symbol
        -> the close of its latest candle the records say was processed (Store.candles_done): none closing at or
        before it comes again."""
        ...


class MarketStateError(StartError):
    """The saved market is another source's: the books and orders recorded on it do not go on on this one."""


def check_source(state: dict[str, Any], source: str) -> None:
    """MarketStateError unless `state` is a version-1 state of `source` (a simulated market's may predate the key);
    ValueError for a state that is not one."""
    if not isinstance(state, dict) or state.get("version") != 1:
        raise ValueError(f"version {state.get('version') if isinstance(state, dict) else None!r} is not 1")
    saved = state.get("source", "simulated")
    if saved != source:
        raise _made_on(source, saved)


def check_books(market: dict[str, Any] | None, exchange_books: bool, source: str) -> None:
    """The market an account's books and orders were made on against market.source: `market`, the state stored
    with them by a market made in the process (check_source), or none stored, where `exchange_books` were made on
    an exchange's (a live account's, or one whose records say so). MarketStateError when another source's;
    ValueError for a state that is not one."""
    if market:
        check_source(market, source)
    elif exchange_books and source != "exchange":
        raise _made_on(source, "exchange")


def _made_on(source: str, saved: str) -> MarketStateError:
    market = "an exchange's" if saved == "exchange" else f"a {saved}"
    return MarketStateError(
        f"market.source = \"{source}\", but the data directory's books and orders were made on {market} market: "
        f"they go on only on it; set market.source = \"{saved}\" back, or use a new storage.path for another market")


@runtime_checkable
class QuotingFeed(Protocol):
    """A market read from an exchange, which quotes the price it is at between its bars' closes."""

    async def last_price(self, symbol: str) -> float: ...


def check_market(settings: Any) -> None:
    """An exchange feed's exchange.id names an exchange ccxt has, and its [exchange] settings let it read the
    market data (Settings; what `ffe config check` says too): StartError before anything is made, naming where the
    key at fault was set. ccxt is imported only for such a market."""
    if settings.market.source != "exchange":
        return
    from ..venues.base import VenueError
    from ..venues.ccxt_loader import exchange_class
    from ..venues.ccxt_venue import check_venue_settings

    if exchange_class(settings.exchange.id) is None:
        raise StartError(settings.blame(("exchange", "id"),
                                        f"exchange.id: {settings.exchange.id!r} is not a ccxt exchange id"))
    if settings.venue.kind == "ccxt":
        return  # the order venue's own check covers the feed's sections, with what orders need besides
    try:
        check_venue_settings(settings, orders=False)
    except VenueError as exc:  # an URL table the feed cannot read: the configuration's fault, not the exchange's
        raise StartError(str(exc)) from None
