"""Assembling an engine from settings, and the headless run.

The console (ffe_tui) uses `open_engine` too, so the headless engine and the one behind the screen are the same.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from .audit import AuditWriter, Redactor, setup_logging
from .clock import SimClock, WallClock
from .engine import Engine, EngineOptions
from .ensemble import Ensemble
from .events import EventBus, LogEvent
from .feedback import WeightLearner
from .model import EngineState
from .signals import make_providers
from .store import Store

log = structlog.get_logger("ffe.runner")


class StartError(Exception):
    """The engine cannot start as configured (printed as one line, exit code 2)."""


@dataclass
class Running:
    engine: Engine
    store: Store
    audit: AuditWriter
    bus: EventBus
    lock_fd: int | None = None

    def release(self) -> None:
        self.audit.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def acquire_lock(data_dir: Path) -> int:
    """One engine per data directory: two would journal orders into the same book."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "ffe.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartError(f"{data_dir}: another ffe engine is running on this data directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def check_live(settings, live_flag: bool) -> bool:
    """Live trading needs mode = "live", the --live flag and a real venue, all at once. Never falls back to paper."""
    if settings.mode == "live" and not live_flag:
        raise StartError('mode = "live" needs the --live flag on the command line')
    if live_flag and settings.mode != "live":
        raise StartError('--live needs mode = "live" in the configuration')
    if settings.mode != "live":
        if settings.venue.kind == "ccxt":
            raise StartError('venue.kind = "ccxt" places real orders: it needs mode = "live" and the --live flag '
                             '(paper trading uses venue.kind = "paper", on any market source)')
        return False
    if settings.venue.kind != "ccxt":
        raise StartError('mode = "live" needs venue.kind = "ccxt"')
    missing = [k for k in ("api_key", "secret") if getattr(settings.exchange, k) is None]
    if missing:
        raise StartError("live trading needs exchange credentials: set "
                         + ", ".join(f"FFE_EXCHANGE__{k.upper()}" for k in missing) + " in .env or the environment")
    return True


async def check_credentials(venue) -> None:
    """Live start: the markets load and the balance can be read with these credentials, or nothing starts."""
    from .venues.base import VenueError, VenueUnavailable

    try:
        await venue.connect()
        await venue.fetch_balance()
    except (VenueError, VenueUnavailable) as exc:
        await venue.close()
        raise StartError(f"live start check failed on {venue.name}: {exc}") from None


def make_providers_from(settings) -> list:
    params: dict[str, dict[str, Any]] = {}
    if "llm" in settings.ensemble.providers:
        llm = settings.ensemble.llm
        params["llm"] = {"base_url": llm.base_url, "model": llm.model, "api_key": llm.api_key,
                         "timeout_s": llm.timeout_s}
    return make_providers(list(settings.ensemble.providers), params)


def make_venue(settings, symbols: list[str]):
    if settings.venue.kind == "ccxt":
        from .venues.ccxt_venue import CcxtVenue

        return CcxtVenue(settings.exchange, symbols)
    from .venues.paper import PaperVenue

    v = settings.venue
    return PaperVenue(symbols, starting_cash=v.starting_cash, quote=v.quote, fee_bps=v.fee_bps,
                      slippage_bps=v.slippage_bps, min_notional=v.min_notional, amount_step=v.amount_step)


def make_feed(settings, clock, max_bars: int | None, venue=None):
    m = settings.market
    tf = settings.engine.timeframe_ms
    symbols = list(settings.engine.symbols)
    if m.source == "simulated":
        from .market.simulated import SimulatedFeed

        return SimulatedFeed(symbols, tf, seed=m.seed, clock=clock, speed=m.speed, max_bars=max_bars)
    if m.source == "replay":
        from .market.csvdata import load_csv
        from .market.replay import ReplayFeed

        missing = [s for s in symbols if s not in m.replay_files]
        if missing:
            raise StartError(f"market.replay_files has no file for {', '.join(missing)}")
        series = {s: load_csv(m.replay_files[s], symbol=s) for s in symbols}
        return ReplayFeed(series, clock, speed=m.speed, max_bars=max_bars)
    from .market.exchange import ExchangeFeed

    if venue is not None and hasattr(venue, "fetch_ohlcv"):
        return ExchangeFeed(venue, symbols, tf, settings.exchange.poll_s, clock)
    return ExchangeFeed.from_settings(settings.exchange, symbols, tf, clock)


async def open_engine(settings, *, live: bool = False, max_bars: int | None = None, headless: bool = True,
                      log_stream=None, feed=None, venue=None, clock=None) -> Running:
    """Build every part from the settings and start the engine (state restored, orders recovered)."""
    lock_fd = acquire_lock(settings.data_dir)
    secrets = settings.secrets()
    bus = EventBus(redact=Redactor(secrets).text if secrets else None)
    store = audit = None
    try:
        to_bus = None if headless else (lambda level, msg: bus.publish(LogEvent(level=level, message=msg)))
        if log_stream is None:
            log_stream = sys.stderr if headless else open(os.devnull, "w")  # the console shows them in its pane
        setup_logging(settings.logging.level, secrets=secrets, stream=log_stream, to_bus=to_bus)
        store = await Store.open(settings.db_path)
        audit = AuditWriter(settings.audit_path)
        bus.add_sink(store.add_event)
        bus.add_sink(audit)
        symbols = list(settings.engine.symbols)
        if clock is None:
            clock = WallClock() if settings.market.source == "exchange" else SimClock(paced=True)
        if venue is None:
            venue = make_venue(settings, symbols)
        if live:
            await check_credentials(venue)
        if feed is None:
            feed = make_feed(settings, clock, max_bars, venue)
        providers = make_providers_from(settings)
        e = settings.ensemble
        ensemble = Ensemble(e.strategy, e.min_votes, None, e.provider_timeout_s)
        learner = WeightLearner([p.name for p in providers], warmup_trades=e.warmup_trades, floor=e.weight_floor,
                                learning_rate=e.learning_rate)
        start_state = EngineState.PAUSED if live and settings.engine.live_start_paused else EngineState.RUNNING
        opts = EngineOptions(live=live, approval=settings.engine.approval,
                             approval_ttl_s=settings.engine.approval_ttl_s, adaptive=e.adaptive,
                             start_state=start_state, max_bars=max_bars)
        engine = Engine(settings, feed=feed, venue=venue, store=store, bus=bus, clock=clock, providers=providers,
                        ensemble=ensemble, learner=learner, audit=audit, options=opts,
                        timeframe_ms=settings.engine.timeframe_ms)
        running = Running(engine, store, audit, bus, lock_fd)
        await engine.start()
        return running
    except BaseException:
        # A failed start ends the process: the store's worker thread would keep it alive after the error.
        if store is not None:
            await store.close()
        if audit is not None:
            audit.close()
        os.close(lock_fd)
        raise


async def run_headless(settings, *, live: bool, max_bars: int | None) -> int:
    from .control import ControlServer

    running = await open_engine(settings, live=live, max_bars=max_bars, headless=True)
    engine = running.engine
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, engine.request_stop)
    loop.add_signal_handler(signal.SIGINT, engine.request_stop)
    loop.add_signal_handler(signal.SIGHUP, engine.request_stop)
    halts: list[asyncio.Task] = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: halts.append(
        asyncio.ensure_future(engine.halt(reason="SIGUSR1", by="signal"))))
    server = ControlServer(engine, settings.socket_path)
    await server.start()
    try:
        await engine.run()
    finally:
        for t in halts:
            try:
                await t
            except Exception:
                pass
        await server.stop()
        await engine.stop()
        await running.store.close()
        running.release()
    return 1 if engine.crashed else 0


def cmd_run(args) -> int:
    from .cli import load_settings_from_args

    settings = load_settings_from_args(args)
    try:
        live = check_live(settings, bool(getattr(args, "live", False)))
    except StartError as exc:
        print(f"ffe: error: {exc}", file=sys.stderr)
        return 2
    if not args.headless:
        from ffe_tui.app import run_console

        return run_console(settings, live=live, max_bars=args.max_bars)
    try:
        return asyncio.run(run_headless(settings, live=live, max_bars=args.max_bars))
    except StartError as exc:
        print(f"ffe: error: {exc}", file=sys.stderr)
        return 2
