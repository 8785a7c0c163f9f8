"""The built-in simulated market: seeded, deterministic, several correlated symbols, changing regimes.

Returns are a common market factor plus idiosyncratic noise, so symbols move together (BTC and ETH correlate
around 0.7). A market-wide regime (trend up, trend down, range, volatile) drives drift, mean reversion,
volatility and volume; regimes follow a Markov chain with sampled durations, and a regime left out for too long
is chosen next, so that every regime shows up within a few hundred bars whatever the seed.

Warm-up history is generated backwards in time from the live start with its own random stream, so it ends
exactly at the live starting price, `history(200)[-100:] == history(100)`, and the live candles are the same
however much history is asked for.

Time. A bar's time is market time: the first live bar opens at the start (by default the wall-clock time when the
feed is made), and each bar is one timeframe later, however fast the bars come. At `market.speed` bars per second
of 1m bars, market time runs speed x 60 times faster than the wall clock (120x at the default 2.0): a paper "day"
(the DAILY_LOSS and DAILY_TRADES gates' UTC day) passes in 24 x 60 / 120 = 12 wall minutes.

Restarts. `state()` is what the engine stores with its books (key `market`); `load(state)` continues from it: the
same prices, regime and bar time, the recent bars as the warm-up history, and a random stream derived from the
seed and the bar count. Market time goes on from where it stopped, or from the wall clock if that is later (the
time the engine was down is then a gap with no bars, like a market closure). Positions carried across a restart
are therefore priced on the path they were opened on, never on a new one: the symbols are generated in their saved
order however `engine.symbols` lists them now, a symbol added starts at its own starting price, one removed keeps its
saved price. A replay's state is not one of these: the start is refused (base.check_source).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, Mapping

from ..clock import DAY_MS, Clock, WallClock, align
from ..model import Candle
from .base import check_source

TREND_UP = "trend_up"
TREND_DOWN = "trend_down"
RANGE = "range"
VOLATILE = "volatile"
REGIMES = (TREND_UP, TREND_DOWN, RANGE, VOLATILE)


@dataclass(frozen=True, slots=True)
class Regime:
    drift: float  # per bar, in units of the symbol's per-bar volatility
    vol: float  # volatility multiplier
    kappa: float  # pull toward the price at which the regime began, per bar (mean reversion)
    jump_prob: float  # chance per bar of a market-wide jump of 3-6 volatilities
    volume: float  # volume multiplier
    duration: tuple[int, int]  # bars, drawn uniformly


REGIME_PARAMS = {
    TREND_UP: Regime(drift=0.25, vol=0.9, kappa=0.0, jump_prob=0.0, volume=1.1, duration=(30, 80)),
    TREND_DOWN: Regime(drift=-0.25, vol=1.1, kappa=0.0, jump_prob=0.0, volume=1.3, duration=(30, 80)),
    RANGE: Regime(drift=0.0, vol=0.7, kappa=0.08, jump_prob=0.0, volume=0.8, duration=(30, 80)),
    VOLATILE: Regime(drift=0.0, vol=2.8, kappa=0.0, jump_prob=0.05, volume=2.5, duration=(10, 30)),
}

# Next-regime weights, in REGIMES order (the current regime's own weight is 0).
TRANSITIONS = {
    TREND_UP: (0.0, 0.2, 0.45, 0.35),
    TREND_DOWN: (0.2, 0.0, 0.45, 0.35),
    RANGE: (0.35, 0.35, 0.0, 0.3),
    VOLATILE: (0.25, 0.25, 0.5, 0.0),
}
STALE_BARS = 200  # a regime absent this long is the next one
LONG_KAPPA = 0.002  # weak pull toward the starting price, so long runs stay plausible


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    price: float  # starting price
    daily_vol: float  # standard deviation of daily log returns
    beta: float  # loading on the market factor (correlation of two symbols = product of their betas)
    daily_volume: float  # in base units


PROFILES = {
    "BTC": SymbolProfile(price=60_000.0, daily_vol=0.035, beta=0.88, daily_volume=30_000.0),
    "ETH": SymbolProfile(price=3_000.0, daily_vol=0.045, beta=0.85, daily_volume=400_000.0),
    "SOL": SymbolProfile(price=150.0, daily_vol=0.06, beta=0.78, daily_volume=3_000_000.0),
}
DEFAULT_PROFILE = SymbolProfile(price=100.0, daily_vol=0.05, beta=0.7, daily_volume=1_000_000.0)


def profile_for(symbol: str) -> SymbolProfile:
    base = symbol.split("/")[0].upper()
    for name, profile in PROFILES.items():
        if base == name or ("/" not in symbol and base.startswith(name)):
            return profile
    return DEFAULT_PROFILE


class _SymbolState:
    __slots__ = ("symbol", "price", "log_start", "anchor", "sigma", "beta", "idio", "bar_volume", "decimals")

    def __init__(self, symbol: str, timeframe_ms: int) -> None:
        p = profile_for(symbol)
        self.symbol = symbol
        self.price = p.price
        self.log_start = math.log(p.price)
        self.anchor = self.log_start
        self.sigma = p.daily_vol * math.sqrt(timeframe_ms / DAY_MS)
        self.beta = p.beta
        self.idio = math.sqrt(1.0 - p.beta * p.beta)
        self.bar_volume = p.daily_volume * timeframe_ms / DAY_MS
        self.decimals = 6 - math.floor(math.log10(p.price))  # six significant digits at the starting price


class MarketSimulator:
    """Bar-by-bar price generator. `step()` returns one (open, high, low, close, volume) per symbol.

    direction=-1 generates backwards in time: each step yields the bar before the previous one, ending at the
    starting prices.
    """

    def __init__(self, symbols: list[str], timeframe_ms: int, rng: random.Random, direction: int = 1) -> None:
        self.rng = rng
        self.direction = direction
        self._states = [_SymbolState(s, timeframe_ms) for s in symbols]
        self.bar = 0
        self.regime = rng.choice(REGIMES)
        self._left = rng.randint(*REGIME_PARAMS[self.regime].duration)
        self._last_seen = dict.fromkeys(REGIMES, 0)
        self._others: dict[str, Any] = {}  # saved prices of symbols not traded now, for when they come back

    def state(self) -> dict[str, Any]:
        return {"bar": self.bar, "regime": self.regime, "left": self._left, "last_seen": dict(self._last_seen),
                "symbols": {**self._others, **{s.symbol: [s.price, s.anchor] for s in self._states}}}

    def load(self, state: dict[str, Any], rng: random.Random) -> None:
        self.rng = rng
        self.bar = int(state["bar"])
        self.regime = state["regime"] if state["regime"] in REGIMES else RANGE
        self._left = int(state["left"])
        self._last_seen = {r: int(state["last_seen"].get(r, 0)) for r in REGIMES}
        saved = dict(state["symbols"])
        for s in self._states:
            if s.symbol in saved:  # a symbol added since starts at its own starting price
                price, anchor = saved.pop(s.symbol)
                s.price, s.anchor = float(price), float(anchor)
        self._others = saved

    def _switch(self) -> None:
        stale = [r for r in REGIMES if r != self.regime and self.bar - self._last_seen[r] > STALE_BARS]
        if stale:
            nxt = min(stale, key=self._last_seen.__getitem__)
        else:
            nxt = self.rng.choices(REGIMES, TRANSITIONS[self.regime])[0]
        self.regime = nxt
        self._left = self.rng.randint(*REGIME_PARAMS[nxt].duration)
        for s in self._states:
            s.anchor = math.log(s.price)

    def step(self) -> list[tuple[float, float, float, float, float]]:
        if self._left <= 0:
            self._switch()
        self._left -= 1
        rg = REGIME_PARAMS[self.regime]
        gauss = self.rng.gauss
        market = gauss(0.0, 1.0)
        jump = 0.0
        if rg.jump_prob and self.rng.random() < rg.jump_prob:
            jump = self.rng.choice((-1.0, 1.0)) * self.rng.uniform(3.0, 6.0)
        drift = self.direction * rg.drift
        bars = []
        for s in self._states:
            lp = math.log(s.price)
            sig = s.sigma
            # The log move in generation order (forward: open -> close; backward: close -> open).
            move = (sig * (drift + jump + rg.vol * (s.beta * market + s.idio * gauss(0.0, 1.0)))
                    - rg.kappa * (lp - s.anchor) - LONG_KAPPA * (lp - s.log_start))
            new = round(s.price * math.exp(move), s.decimals)
            o, c = (s.price, new) if self.direction > 0 else (new, s.price)
            wick = 0.5 * sig * rg.vol
            h = round(max(o, c) * math.exp(abs(gauss(0.0, 1.0)) * wick), s.decimals)
            lo = round(min(o, c) * math.exp(-abs(gauss(0.0, 1.0)) * wick), s.decimals)
            activity = 1.0 + 0.5 * abs(move) / sig
            v = round(s.bar_volume * rg.volume * activity * math.exp(0.35 * gauss(0.0, 1.0)), 4)
            s.price = new
            bars.append((o, h, lo, c, v))
        self.bar += 1
        self._last_seen[self.regime] = self.bar
        return bars


class SimulatedFeed:
    """The default market: deterministic for a seed, paced at `speed` bars per second by the clock.

    start_ts is the open time of the first live bar (aligned down to the timeframe); by default the current
    wall-clock time, so the warm-up history ends now. `max_bars` stops after that many live bars per symbol.
    """

    def __init__(self, symbols: list[str], timeframe_ms: int, seed: int = 7, clock: Clock | None = None,
                 speed: float = 2.0, start_ts: int | None = None, max_bars: int | None = None) -> None:
        if not symbols:
            raise ValueError("the simulated market needs at least one symbol")
        if timeframe_ms <= 0:
            raise ValueError(f"timeframe must be positive, got {timeframe_ms} ms")
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.symbols = list(symbols)
        self.timeframe_ms = timeframe_ms
        self.seed = seed
        self.clock = clock if clock is not None else WallClock()
        self.speed = speed
        self.max_bars = max_bars
        now = int(self.clock.wall() * 1000) if start_ts is None else start_ts
        self.start_ts = align(now, timeframe_ms)
        self._market = MarketSimulator(self.symbols, timeframe_ms, random.Random(seed))
        self._next_ts = self.start_ts
        self._closed = False
        self._emitted = 0  # live bars per symbol in this run (max_bars counts these)
        self._recent: deque[Candle] = deque(maxlen=0)  # the last bars, the warm-up history after a restart
        self._resumed = False
        self.clock.advance(self.start_ts)  # market time starts where the warm-up history ends

    def processed(self, candle: Candle) -> None:
        """Nothing to do: the market makes whole bars (state())."""

    def state(self) -> dict[str, Any]:
        """What a restart needs to continue this market (stored by the engine with its books). It makes whole bars:
        a candle still in hand is of the bar it stands at, which a restart does not make again (the next follows)."""
        return {"version": 1, "source": "simulated", "seed": self.seed, "timeframe_ms": self.timeframe_ms,
                "symbols": self.symbols, "next_ts": self._next_ts, "market": self._market.state(),
                "recent": [[c.symbol, c.ts, c.open, c.high, c.low, c.close, c.volume] for c in self._recent]}

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a stored state: the same prices, regime and bar time. The symbols are generated in their
        saved order (the same path however they are listed now); one added since starts at its own starting price,
        one removed keeps its saved price for its return. Market time goes on from where it stopped (to the next
        bar of another timeframe), or from now if that is later. MarketStateError for a replay's state, ValueError
        for one that cannot be read."""
        check_source(state, "simulated")
        try:
            saved_symbols = [str(sym) for sym in state["symbols"]]
            order = [sym for sym in saved_symbols if sym in self.symbols]
            order += [sym for sym in self.symbols if sym not in order]
            market = MarketSimulator(order, self.timeframe_ms, random.Random(self.seed))
            market.load(state["market"], random.Random(f"{state['seed']}:{state['market']['bar']}"))
            same_tf = int(state["timeframe_ms"]) == self.timeframe_ms
            recent = [Candle(r[0], int(r[1]), *map(float, r[2:7])) for r in state["recent"]
                      if same_tf and r[0] in self.symbols]  # another timeframe's bars are no warm-up
            next_ts = int(state["next_ts"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from None
        self.symbols = order
        self._market = market
        self._recent = deque(recent, maxlen=len(recent))
        self._resumed = True
        # Market time goes on from where it stopped, or from now if that is later (a gap while it was down).
        self.not_before(next_ts)

    def not_before(self, ts_ms: int, done: Mapping[str, int] | None = None) -> None:
        """The clock has reached ts_ms: the next bar opens there at the earliest (on the timeframe's grid), so none
        closes before it. The market makes whole bars: a bar whose close the clock has reached is not made again, so
        no symbol's candle the records hold (`done`, each at or before ts_ms) comes again either."""
        tf = self.timeframe_ms
        self._next_ts = self.start_ts = max(self._next_ts, -(-ts_ms // tf) * tf)
        self.clock.advance(self.start_ts)

    @property
    def regime(self) -> str:
        """The live market's current regime."""
        return self._market.regime

    def history(self, n: int) -> list[Candle]:
        """The n bars per symbol before the live start, oldest first; the last close is the first live open.
        After a restart (`load`), the last bars before it, as many as were kept (the n of the previous run)."""
        width = n * len(self.symbols)
        if self._resumed:
            out = list(self._recent)[-width:] if width else []
        else:
            back = MarketSimulator(self.symbols, self.timeframe_ms, random.Random(f"{self.seed}:history"), -1)
            steps = [back.step() for _ in range(n)]
            out = []
            tf = self.timeframe_ms
            for k in range(n - 1, -1, -1):
                ts = self.start_ts - (k + 1) * tf
                for sym, bar in zip(self.symbols, steps[k]):
                    out.append(Candle(sym, ts, *bar))
        self._recent = deque(out, maxlen=width)  # kept up to date with the live bars, for the next restart
        return out

    def iter_candles(self) -> Iterator[Candle]:
        """Live bars without pacing (for tests and fast runs); advances the clock like `candles()`."""
        while not self._closed and (self.max_bars is None or self._emitted < self.max_bars):
            yield from self._next_bar()

    async def candles(self) -> AsyncIterator[Candle]:
        interval = 1.0 / self.speed if self.speed > 0 else 0.0
        first = True
        while not self._closed and (self.max_bars is None or self._emitted < self.max_bars):
            if interval:
                if not first:
                    await self.clock.sleep(interval)
                    if self._closed:
                        return
            elif self._market.bar % 256 == 255:
                await asyncio.sleep(0)  # flat out, but let other tasks run now and then
            first = False
            for candle in self._next_bar():
                yield candle

    async def close(self) -> None:
        self._closed = True

    def _next_bar(self) -> list[Candle]:
        ts = self._next_ts
        self._next_ts = ts + self.timeframe_ms
        bars = self._market.step()
        self._emitted += 1
        self.clock.advance(ts + self.timeframe_ms)
        candles = [Candle(sym, ts, *bar) for sym, bar in zip(self.symbols, bars)]
        if self._recent.maxlen:
            self._recent.extend(candles)
        return candles
