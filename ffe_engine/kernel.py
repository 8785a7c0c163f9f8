"""Building an engine from settings: the one place where the parts are chosen and wired.

Headless, console and backtest all get their engine from `build_engine`; what differs between them is passed in
(feed, venue, clock, options). The process around an engine (lock, store, audit, control socket, signals, ordered
stop) is `host.EngineHost`.
"""

from __future__ import annotations

from typing import Any

from .clock import Clock
from .config import Settings, check_mode
from .engine import Engine, EngineOptions
from .ensemble import Ensemble
from .errors import FfeError, StartError
from .events import EventBus
from .feedback import WeightLearner
from .ids import IdSource
from .market.base import Feed, check_market
from .signals import make_providers
from .store import Store
from .venues.base import CandleVenue, Venue, VenueError, VenueUnavailable, clock_refused
from .venues.paper import PaperVenue


def check_live(settings: Settings, live_flag: bool) -> bool:
    """Live trading needs mode = "live", the --live flag and a real venue, all at once. Never falls back to paper."""
    if settings.mode == "live" and not live_flag:
        raise StartError(settings.blame(("mode",), 'mode = "live" needs the --live flag on the command line'))
    if live_flag and settings.mode != "live":
        # The flag is the command line's own; where the mode it needs was set (or that it is the default) goes beside.
        raise StartError(f'--live needs mode = "live" in the configuration ({settings.said("mode")})')
    check_mode(settings)
    check_market(settings)
    if settings.mode != "live":
        return False
    missing = [k for k in ("api_key", "secret") if getattr(settings.exchange, k) is None]
    if missing:
        raise StartError("live trading needs exchange credentials: set "
                         + ", ".join(f"FFE_EXCHANGE__{k.upper()}" for k in missing) + " in .env or the environment")
    return True


async def check_credentials(venue: Venue) -> None:
    """Live start: the markets load and the balance can be read with these credentials, or nothing starts."""
    try:
        await venue.connect()
        await venue.fetch_balance()
    except VenueError as exc:  # refused: the credentials, the account or the settings are at fault
        await venue.close()
        raise StartError(f"live start check failed on {venue.name}: {exc}") from None
    except VenueUnavailable as exc:  # no answer: nothing is wrong with the configuration, a later start may work
        await venue.close()
        if clock_refused(str(exc)):
            raise FfeError(f"live start check failed on {venue.name}: the exchange refused the request's time "
                           f"({exc}): this machine's clock is off; set it right (NTP: timedatectl, chrony), then "
                           "start again; nothing was sent") from None
        if exc.asked_to_wait:  # it answered, asking for a wait (a Retry-After, stored): a start after it goes on
            raise FfeError(f"live start check failed on {venue.name}: the exchange asked for a wait ({exc}); "
                           "nothing was sent; a start after it goes on") from None
        raise FfeError(f"live start check failed on {venue.name}: the exchange did not answer ({exc}); nothing "
                       "was sent") from None


def providers_for(settings: Settings) -> list[Any]:
    params: dict[str, dict[str, Any]] = {}
    if "llm" in settings.ensemble.providers:
        llm = settings.ensemble.llm
        params["llm"] = {"base_url": llm.base_url, "model": llm.model, "api_key": llm.api_key,
                         "timeout_s": llm.timeout_s}
    try:
        return make_providers(list(settings.ensemble.providers), params)
    except ValueError as exc:  # a provider that cannot be built refuses the start, in one line (never a secret)
        raise StartError(str(exc)) from None


def paper_venue(settings: Settings, symbols: list[str], quote: str | None = None) -> PaperVenue:
    cfg = settings.venue
    return PaperVenue(symbols, starting_cash=cfg.starting_cash, quote=quote or cfg.quote, fee_bps=cfg.fee_bps,
                      slippage_bps=cfg.slippage_bps, min_notional=cfg.min_notional, amount_step=cfg.amount_step)


def make_venue(settings: Settings, symbols: list[str]) -> Venue:
    if settings.venue.kind == "ccxt":
        from .venues.ccxt_venue import CcxtVenue, check_venue_settings

        try:
            check_venue_settings(settings)
            return CcxtVenue(settings.exchange, symbols)
        except VenueError as exc:
            raise StartError(str(exc)) from None
    return paper_venue(settings, symbols)


def make_feed(settings: Settings, clock: Clock, max_bars: int | None, venue: Venue | None = None) -> Feed:
    market = settings.market
    tf = settings.engine.timeframe_ms
    symbols = list(settings.engine.symbols)
    if market.source == "simulated":
        from .market.simulated import SimulatedFeed

        return SimulatedFeed(symbols, tf, seed=market.seed, clock=clock, speed=market.speed, max_bars=max_bars)
    if market.source == "replay":
        from .market.replay import ReplayFeed, replay_series

        return ReplayFeed(replay_series(settings), clock, speed=market.speed, max_bars=max_bars)
    from .market.exchange import ExchangeFeed

    if isinstance(venue, CandleVenue):
        return ExchangeFeed(venue, symbols, tf, settings.exchange.poll_s, clock)
    try:
        return ExchangeFeed.from_settings(settings.exchange, symbols, tf, clock)
    except VenueError as exc:
        raise StartError(str(exc)) from None


def build_engine(settings: Settings, *, feed: Feed, venue: Venue, store: Store, bus: EventBus, clock: Clock,
                 options: EngineOptions, timeframe_ms: int, audit: Any = None, ids: IdSource | None = None,
                 providers: list[Any] | None = None) -> Engine:
    """The pipeline behind every front end: providers (unless given, made for these settings), ensemble and
    learner from the settings, around the given feed, venue, store, bus and clock (and ids: random when not given,
    ids.py)."""
    if providers is None:
        providers = providers_for(settings)
    cfg = settings.ensemble
    ensemble = Ensemble(cfg.strategy, cfg.min_votes, None, cfg.provider_timeout_s)
    learner = WeightLearner([p.name for p in providers], warmup_trades=cfg.warmup_trades, floor=cfg.weight_floor,
                            learning_rate=cfg.learning_rate)
    return Engine(settings, feed=feed, venue=venue, store=store, bus=bus, clock=clock, providers=providers,
                  ensemble=ensemble, learner=learner, audit=audit, options=options, timeframe_ms=timeframe_ms, ids=ids)
