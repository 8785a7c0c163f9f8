"""A whole engine in one process, for the decision-pipeline proofs.

Real parts throughout: the Engine, its SQLite store (a file under the test's tmp_path), the paper venue, the
audit file, and a simulated or replayed market. The test drives the engine bar by bar through `on_candle`, the
same entry point its own loop uses, so it can step in between bars (pause, approve, open the breaker, ...).

`Scripted` is a vote provider like any other: it votes what the test put in its script for the symbol, so a
test can ask for exactly the decision whose gates it wants to see.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import heapq
import itertools
import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from ffe_engine.audit import AuditWriter
from ffe_engine.clock import SimClock
from ffe_engine.config import Settings
from ffe_engine.engine import BACKTEST, LIVE, Engine, EngineOptions
from ffe_engine.trading_state import TradingState
from ffe_engine.ensemble import Ensemble
from ffe_engine.events import EventBus
from ffe_engine.feedback import WeightLearner
from ffe_engine.market.csvdata import CandleSeries, load_csv
from ffe_engine.market.replay import ReplayFeed
from ffe_engine.market.simulated import SimulatedFeed
from ffe_engine.model import Action, EngineState, Vote
from ffe_engine.signals import make_providers
from ffe_engine.store import Store
from ffe_engine.venues.base import OrderInDoubt, VenueUnavailable
from ffe_engine.venues.paper import PaperVenue

BUY, SELL, HOLD = Action.BUY, Action.SELL, Action.HOLD
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
START_TS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
GATE_ORDER = ["ENGINE_STATE", "BREAKER_OPEN", "DATA_STALE", "MIN_CONFIDENCE", "MAX_OPEN_POSITIONS", "POSITION_SIZE",
              "CONCENTRATION", "LEVERAGE", "DRAWDOWN", "DAILY_LOSS", "VAR", "CORRELATION", "ORDER_RATE",
              "DAILY_TRADES"]  # the docs/gates.md table, top to bottom
SAMPLES = Path(__file__).resolve().parents[1] / "samples"

# Limits loose enough that only the gate a test is about can bind.
LOOSE_RISK = {"min_confidence": 0.5, "max_open_positions": 10, "max_position_pct": 10, "max_concentration_pct": 100,
              "max_leverage": 10, "max_drawdown_pct": 100, "daily_loss_limit_pct": 100, "max_var_pct": 100,
              "max_correlation": 1.0, "max_orders_per_minute": 1000, "max_daily_trades": 1000}


def make_settings(tmp_path: Path, *, symbols: Iterable[str] = ("BTC/USDT", "ETH/USDT"), timeframe: str = "1m",
                  risk: dict | None = None, engine: dict | None = None, ensemble: dict | None = None,
                  breaker: dict | None = None, venue: dict | None = None, market: dict | None = None,
                  loose: bool = True) -> Settings:
    r = dict(LOOSE_RISK) if loose else {}
    r.update(risk or {})
    return Settings(
        engine={"symbols": list(symbols), "timeframe": timeframe, "warmup_bars": 100, **(engine or {})},
        market={"speed": 0.0, **(market or {})},
        venue={"slippage_bps": 0.0, **(venue or {})},
        ensemble={"min_votes": 2, **(ensemble or {})},
        risk=r,
        breaker=breaker or {},
        storage={"path": str(tmp_path / "data" / "ffe.db")},
        logging={"dir": str(tmp_path / "logs")},
        monitor={"port": 0},  # any free port: an engine_session starts the monitor, and other engines may be up
    )


class Scripted:
    """A vote provider that votes `script[symbol] = (action, confidence)`; HOLD at 0.5 for anything else."""

    def __init__(self, name: str, script: dict[str, tuple[Action, float]]) -> None:
        self.name = name
        self.script = script

    def vote(self, ind) -> Vote:
        action, conf = self.script.get(ind.symbol, (HOLD, 0.5))
        return Vote(self.name, action, conf, "scripted")


class FlakyVenue(PaperVenue):
    """The paper exchange behind a network that can be cut: while `down`, every call fails before the exchange sees
    it (VenueUnavailable; for create_order OrderInDoubt instead when `lost_answers`, as when a request timed out).
    `calls` counts every create_order that reached this boundary, `fetches` every fetch_order."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.down = False
        self.lost_answers = False
        self.calls = 0
        self.fetches = 0
        self.sent: list[str] = []

    async def create_order(self, req):
        self.calls += 1
        self.sent.append(req.client_order_id)
        if self.down:
            if self.lost_answers:
                raise OrderInDoubt("request timed out")
            raise VenueUnavailable("connection reset by peer")
        return await super().create_order(req)

    async def fetch_order(self, client_order_id, symbol):
        self.fetches += 1
        if self.down:
            raise VenueUnavailable("connection reset by peer")
        return await super().fetch_order(client_order_id, symbol)


def paper_venue(settings: Settings, cls=PaperVenue):
    v = settings.venue
    return cls(list(settings.engine.symbols), starting_cash=v.starting_cash, quote=v.quote, fee_bps=v.fee_bps,
               slippage_bps=v.slippage_bps, min_notional=v.min_notional, amount_step=v.amount_step)


def simulated_feed(settings: Settings, clock: SimClock, *, seed: int | None = None,
                   start_ts: int = START_TS) -> SimulatedFeed:
    return SimulatedFeed(list(settings.engine.symbols), settings.engine.timeframe_ms,
                         seed=settings.market.seed if seed is None else seed, clock=clock, speed=0.0,
                         start_ts=start_ts)


def write_csv(path: Path, rows: Iterable[tuple[int, float, float, float, float, float]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        for ts, o, h, lo, c, v in rows:
            w.writerow([ts, repr(o), repr(h), repr(lo), repr(c), repr(v)])
    return path


def bars_from_closes(closes: list[float], *, start_ts: int = START_TS, step: int = MIN, wick: float = 0.001):
    """OHLCV rows for a close path: each bar opens at the previous close, wicks `wick` beyond its body."""
    rows = []
    prev = closes[0]
    for i, c in enumerate(closes):
        hi, lo = max(prev, c) * (1 + wick), min(prev, c) * (1 - wick)
        rows.append((start_ts + i * step, prev, hi, lo, c, 100.0))
        prev = c
    return rows


def wave(n: int, *, base: float, amp: float = 0.01, period: float = 17.0, phase: float = 0.0,
         drift: float = 0.0) -> list[float]:
    """A smooth deterministic close path: base x (1 + amp sin) with a linear drift per bar (fraction of base)."""
    return [round(base * (1 + amp * math.sin(2 * math.pi * i / period + phase) + drift * i), 6) for i in range(n)]


def replay_feed(tmp_path: Path, paths: dict[str, list[float]], clock: SimClock, *, step: int = MIN,
                start_ts: int = START_TS) -> ReplayFeed:
    """Close paths written as real CSV files, loaded by the CSV loader and merged by the replay feed."""
    series = {}
    for sym, closes in paths.items():
        f = write_csv(tmp_path / "csv" / (sym.replace("/", "-") + ".csv"),
                      bars_from_closes(closes, start_ts=start_ts, step=step))
        series[sym] = load_csv(f, symbol=sym)
    return ReplayFeed(series, clock, speed=0.0)


@functools.lru_cache(maxsize=None)
def real_series(symbol: str) -> CandleSeries:
    """Real hourly candles from the sample data (BTC/USD or ETH/USD)."""
    name = symbol.replace("/", "-") + "_1h_2020-2023.csv.gz"
    return load_csv(SAMPLES / name, symbol=symbol)


def real_feed(clock: SimClock, n: int, symbols: Iterable[str] = ("BTC/USD", "ETH/USD")) -> ReplayFeed:
    return ReplayFeed({s: real_series(s).head(n) for s in symbols}, clock, speed=0.0)


def returns(closes: list[float]) -> list[float]:
    return [closes[i] / closes[i - 1] - 1.0 for i in range(1, len(closes))]


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def historical_var_pct(exposures: dict[str, float], rets: dict[str, list[float]], *, confidence: float,
                       horizon_bars: float, equity: float, window: int) -> float:
    """Historical VaR, written out from its definition: the (1 - confidence) quantile of the P&L the exposures
    would have made over the last `window` bars, scaled by sqrt(horizon), as a percentage of equity."""
    n = min(window, *(len(rets[s]) for s in exposures))
    pnl = [sum(w * rets[s][-n + i] for s, w in exposures.items()) for i in range(n)]
    k = min(int(math.floor((1.0 - confidence) * n)), n - 1)
    worst = heapq.nsmallest(k + 1, pnl)[k]
    return max(0.0, 100.0 * -worst * math.sqrt(horizon_bars) / equity)


class Pipeline:
    """One engine over one database, driven bar by bar."""

    def __init__(self, engine: Engine, *, store: Store, audit: AuditWriter, feed, clock: SimClock, venue,
                 settings: Settings) -> None:
        self.engine = engine
        self.store = store
        self.audit = audit
        self.feed = feed
        self.clock = clock
        self.venue = venue
        self.settings = settings
        self._candles = feed.iter_candles()
        self.n_symbols = len(settings.engine.symbols)
        self.closes: dict[str, list[float]] = {s: [] for s in settings.engine.symbols}  # live candles fed
        self.closed = False

    # ---------------------------------------------------------------- driving
    async def candles(self, n: int) -> int:
        """Feed the next n candles (all symbols counted); returns how many there were."""
        k = 0
        for c in itertools.islice(self._candles, n):
            self.closes[c.symbol].append(c.close)
            await self.engine.on_candle(c)
            k += 1
        return k

    async def bars(self, n: int = 1) -> int:
        """Feed the next n bar times, every symbol's candle of each."""
        return await self.candles(n * self.n_symbols)

    async def until(self, cond, *, max_bars: int, what: str = "the condition") -> int:
        """Feed bars until `await cond()` (or `cond()`) is true; fails after max_bars bar times."""
        for i in range(max_bars):
            res = cond()
            if hasattr(res, "__await__"):
                res = await res
            if res:
                return i
            if not await self.bars(1):
                break
        raise AssertionError(f"{what} did not happen within {max_bars} bars")

    # ---------------------------------------------------------------- reading the record
    async def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        await self.engine.flush()
        return [tuple(r) for r in await self.store.query(sql, params)]

    async def events(self, name: str | None = None) -> list[dict[str, Any]]:
        await self.engine.flush()
        if name is None:
            rows = await self.store.query("SELECT data FROM events ORDER BY seq")
        else:
            rows = await self.store.query("SELECT data FROM events WHERE event = ? ORDER BY seq", (name,))
        return [json.loads(r[0]) for r in rows]

    async def decisions(self, where: str = "", params: tuple = ()) -> list[dict[str, Any]]:
        """Decision rows as dicts, with the decision event's full record under 'event'."""
        await self.engine.flush()
        cur = await self.store.conn.execute(f"SELECT * FROM decisions {where} ORDER BY ts, rowid", params)
        cols = [d[0] for d in cur.description]
        out = []
        for r in await cur.fetchall():
            d = dict(zip(cols, r))
            ev = await self.store.query("SELECT data FROM events WHERE seq = ?", (d["event_seq"],))
            d["event"] = json.loads(ev[0][0]) if ev else None
            out.append(d)
        return out

    async def gates(self, decision_id: str | None = None, *, client_order_id: str | None = None) -> list[dict]:
        """Stored gate results of one decision (or one operator order), in the order they were evaluated."""
        if decision_id is not None:
            rows = await self.rows("SELECT position, code, value, limit_value, passed, detail FROM gate_results "
                                   "WHERE decision_id = ? ORDER BY position", (decision_id,))
        else:
            rows = await self.rows("SELECT position, code, value, limit_value, passed, detail FROM gate_results "
                                   "WHERE client_order_id IS ? AND decision_id IS NULL ORDER BY rowid",
                                   (client_order_id,))
        return [{"position": r[0], "code": r[1], "value": r[2], "limit": r[3], "passed": bool(r[4]), "detail": r[5]}
                for r in rows]

    # ---------------------------------------------------------------- lifecycle
    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.engine.stop()
        finally:
            await self.store.close()
            self.audit.close()


async def open_pipeline(settings: Settings, *, providers: list | None = None, script: dict | None = None,
                        feed=None, clock: SimClock | None = None, venue=None, live: bool = False,
                        backtest: bool = False, adaptive: bool | None = None, seed: int | None = None,
                        start_state: EngineState = EngineState.RUNNING, synchronous: str = "OFF") -> Pipeline:
    """Assemble an engine the way runner.open_engine does, with the providers given (default: two Scripted voters
    reading `script`, else the configured built-ins), then start it (state restored, warm-up history fed)."""
    clock = clock or SimClock()
    if feed is None:
        feed = simulated_feed(settings, clock, seed=seed)
    venue = venue or paper_venue(settings)
    if providers is None:
        if script is not None:
            providers = [Scripted("alpha", script), Scripted("beta", script)]
        else:
            providers = make_providers(list(settings.ensemble.providers))
    store = await Store.open(settings.db_path, synchronous=synchronous)
    audit = AuditWriter(settings.audit_path)
    store.write_events_first(audit.flush, audit.written)  # as the engine's host wires them
    bus = EventBus(clock)
    bus.add_sink(store.add_event)
    bus.add_sink(audit)
    e = settings.ensemble
    learner = WeightLearner([p.name for p in providers], warmup_trades=e.warmup_trades, floor=e.weight_floor,
                            learning_rate=e.learning_rate)
    opts = EngineOptions(live=live, profile=BACKTEST if backtest else LIVE, approval=settings.engine.approval,
                         approval_ttl_s=settings.engine.approval_ttl_s,
                         adaptive=e.adaptive if adaptive is None else adaptive, start_state=start_state)
    engine = Engine(settings, feed=feed, venue=venue, store=store, bus=bus, clock=clock, providers=providers,
                    ensemble=Ensemble(e.strategy, e.min_votes, None, e.provider_timeout_s), learner=learner,
                    audit=audit, options=opts, timeframe_ms=settings.engine.timeframe_ms)
    await engine.start()
    return Pipeline(engine, store=store, audit=audit, feed=feed, clock=clock, venue=venue, settings=settings)


def trading_state(state: EngineState = EngineState.RUNNING) -> TradingState:
    """A trading state for a gatekeeper or an order path tested on their own: read, never changed (no store)."""
    clock = SimClock()
    return TradingState(store=None, bus=EventBus(clock), clock=clock, state=state)  # type: ignore[arg-type]


def by_code(gates: list[dict]) -> dict[str, dict]:
    return {g["code"]: g for g in gates}


def assert_all_gates_in_order(gates: list[dict]) -> None:
    assert [g["code"] for g in gates] == GATE_ORDER
    if gates and "position" in gates[0]:
        assert [g["position"] for g in gates] == list(range(len(GATE_ORDER)))


def max_concurrent_positions(fills: list[tuple[str, str, float]], dust: float = 1e-9) -> tuple[int, int]:
    """Replay fills (symbol, side, quantity) in order; return (most symbols held at once, positions opened)."""
    held: dict[str, float] = {}
    most = opened = 0
    for sym, side, qty in fills:
        before = held.get(sym, 0.0)
        after = before + qty if side == "buy" else before - qty
        held[sym] = after
        if before <= dust < after:
            opened += 1
        most = max(most, sum(1 for q in held.values() if q > dust))
    return most, opened


def cash_after(start: float, fills: Iterable[tuple[str, float, float, float]]) -> float:
    """Quote cash after fills (side, quantity, price, fee), as a spot account books them."""
    cash = start
    for side, qty, px, fee in fills:
        cash += (-qty * px if side == "buy" else qty * px) - fee
    return cash


@pytest.fixture
async def pipelines():
    """Opens pipelines for a test (`await pipelines(settings, ...)`) and closes every one of them afterwards."""
    opened: list[Pipeline] = []

    async def _open(settings: Settings, **kw) -> Pipeline:
        p = await open_pipeline(settings, **kw)
        opened.append(p)
        return p

    yield _open
    for p in reversed(opened):
        await p.close()


async def strategy_buys(p: Pipeline, script: dict, symbol: str, *, after: int = 60) -> None:
    """`after` bars of warm-up, then the strategy's BUY of `symbol` on one bar (its scripted voters say so then)."""
    await p.bars(after)
    script[symbol] = (BUY, 0.9)
    await p.bars(1)
    del script[symbol]


def crash_paths(*, n: int = 100, entry: int = 60, rise: int = 15, crash: float = 0.25) -> dict[str, list[float]]:
    """BTC/USDT: a quiet range until `entry`, a steady climb of 0.2% a bar for `rise` bars (the equity peak),
    then one bar that falls `crash`, then quiet again. ETH/USDT: a quiet range throughout."""
    btc = wave(entry, base=60_000.0, amp=0.002)
    btc.append(60_000.0)
    btc += [round(60_000.0 * (1 + 0.002 * k), 6) for k in range(1, rise + 1)]
    low = round(btc[-1] * (1 - crash), 6)
    btc += [round(low * (1 + 0.0005 * math.sin(i)), 6) for i in range(n - len(btc))]
    return {"BTC/USDT": btc, "ETH/USDT": wave(n, base=3_000.0, amp=0.002)}


async def fills(p: Pipeline, symbol: str | None = None) -> list[tuple[str, float, float, float]]:
    """(side, quantity, price, fee) of the stored fills, oldest first."""
    if symbol is None:
        return await p.rows("SELECT side, quantity, price, fee FROM fills ORDER BY ts, id")
    return await p.rows("SELECT side, quantity, price, fee FROM fills WHERE symbol = ? ORDER BY ts, id", (symbol,))


@contextlib.contextmanager
def crashed_copy(db_path, copy_path) -> Iterator[sqlite3.Connection]:
    """The database a crash at this instant would leave, copied to `copy_path`, open."""
    src = sqlite3.connect(db_path)
    dst = sqlite3.connect(copy_path)
    try:
        src.backup(dst)
        yield dst
    finally:
        src.close()
        dst.close()
