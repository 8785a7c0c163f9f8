"""Replay of CSV market data: candles of several symbols merged into one time-ordered stream.

A backtest iterates `iter_candles()` (no event loop involved, nothing sleeps). The engine's loop uses
`candles()`, which paces at `speed` bars per second through the clock, or at speed 0 runs flat out and only
yields to the event loop every few thousand candles so other tasks stay responsive.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from heapq import heapify, heappop, heapreplace
from typing import Any, AsyncIterator, Callable, Iterator, Mapping

from ..clock import Clock, SimClock, format_timeframe
from ..config import Settings, check_replay
from ..errors import StartError
from ..model import Candle
from .base import check_source
from .csvdata import CandleSeries, load_csv

YIELD_EVERY = 4096  # candles between yields to the event loop at speed 0


class ReplayFeed:
    """Candles from one CandleSeries per symbol, in time order; equal timestamps come in `symbols` order.

    Before each candle is handed out the clock is advanced to its close time (ts + timeframe), so "now" is the
    moment that candle became known. `max_bars` caps the bars replayed per symbol.
    """

    def __init__(self, series_by_symbol: dict[str, CandleSeries], clock: Clock | None = None, speed: float = 0.0,
                 *, max_bars: int | None = None) -> None:
        if not series_by_symbol:
            raise ValueError("a replay needs at least one CSV series")
        frames = {s.timeframe_ms for s in series_by_symbol.values() if s.timeframe_ms}
        if len(frames) > 1:
            listed = ", ".join(f"{sym} {format_timeframe(s.timeframe_ms)}" for sym, s in series_by_symbol.items())
            raise ValueError(f"replay series have different timeframes: {listed}")
        if speed < 0:
            raise ValueError(f"replay speed must be >= 0, got {speed}")
        self.symbols = list(series_by_symbol)
        self.timeframe_ms = frames.pop() if frames else 0
        self.clock = clock if clock is not None else SimClock()
        self.speed = speed
        self.max_bars = max_bars
        self._whole = list(series_by_symbol.values())
        self.series = [s if max_bars is None else s.head(max_bars) for s in self._whole]
        self._closed = False
        self._seen: dict[str, int] = {}  # symbol -> the time of its last candle handed out (state())
        self._in_hand: Candle | None = None  # the last candle handed out, until the engine has processed it
        self._before_in_hand: int | None = None  # its symbol's place before it
        self._past: dict[str, list[Candle]] = {}  # symbol -> its candles before where a restart goes on
        starts = [s.ts[0] for s in self.series if len(s)]
        if starts:
            self.clock.advance(min(starts))  # before the first candle closes, it is the replay's first moment

    @property
    def total_bars(self) -> int:
        """Candles the replay will hand out, all symbols together."""
        return sum(len(s) for s in self.series)

    def early_ends(self) -> dict[str, int]:
        """The symbols whose candles end before the replay's: symbol -> the time of its last candle."""
        ends = {sym: s.ts[-1] for sym, s in zip(self.symbols, self.series) if len(s)}
        last = max(ends.values(), default=0)
        return {sym: ts for sym, ts in ends.items() if ts < last}

    def ended(self) -> dict[str, int]:
        """The symbols no candle is left of where the replay goes on (a file that ends before the market time, after
        a restart): symbol -> the time of its file's last candle. Not in early_ends, which hands out their last one."""
        return {sym: whole.ts[-1] for sym, whole, s in zip(self.symbols, self._whole, self.series)
                if not len(s) and len(whole)}

    def history(self, n: int) -> dict[str, list[Candle]]:
        """No warm-up bars before a replay's first bar: its own first bars are the warm-up. After a restart (`load`),
        the last n bars of each symbol before where it goes on."""
        return {sym: past[-n:] if n else [] for sym, past in self._past.items()}

    def state(self) -> dict[str, Any]:
        """Where the replay is (stored by the engine with its books): each symbol's last candle handed out and
        processed; the symbol of one still in hand is at the candle before it (ResumableFeed.processed)."""
        seen = dict(self._seen)
        if self._in_hand is not None:
            if self._before_in_hand is None:
                del seen[self._in_hand.symbol]
            else:
                seen[self._in_hand.symbol] = self._before_in_hand
        return {"version": 1, "source": "replay", "symbols": self.symbols, "timeframe_ms": self.timeframe_ms,
                "seen": seen}  # symbols: informative; the places in `seen` are what a restart reads

    def load(self, state: dict[str, Any]) -> None:
        """Go on from a stored state: each symbol from the candle after the last one handed out, and none from before
        the last bar the market reached (a symbol added since starts there, its earlier candles its warm-up). The
        stored places are times, so the symbols' order, the files or the timeframe may have changed: market time
        goes on. MarketStateError for another source's market; ValueError for a state that cannot be read."""
        check_source(state, "replay")
        try:
            seen = {str(k): int(v) for k, v in state["seen"].items()}
            saved_tf = int(state["timeframe_ms"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"seen or timeframe_ms unreadable ({type(exc).__name__}: {exc})") from None
        self._seen = dict(seen)
        self._in_hand = None
        if seen:
            last = max(seen.values())
            for sym in self.symbols:  # a symbol added since goes on after the market's last bar, as the others
                self._seen.setdefault(sym, last)
            # The clock at the stop stood at that bar's close: a bar of a shorter timeframe closing before it is past.
            self.not_before(last + saved_tf)

    def not_before(self, ts_ms: int, done: Mapping[str, int] | None = None) -> None:
        """The clock has reached ts_ms: no candle closing before it is handed out (none of a symbol at or before its
        own last one handed out either, nor at or before `done`'s close of it, its latest candle the records say was
        processed), the candles before each symbol's first one its warm-up (`history`). A candle closing at ts_ms is
        of the bar a stop fell in: one a symbol had not processed yet still is."""
        for sym, close in (done or {}).items():
            # A candle processed was handed out: the saved place can be a candle behind the records (an order or a
            # fill is committed before the market's place is stored with the books).
            if sym in self.symbols:
                self._seen[sym] = max(self._seen.get(sym, close - self.timeframe_ms), close - self.timeframe_ms)
        series = []
        for sym, whole in zip(self.symbols, self._whole):
            start = bisect_left(whole.ts, ts_ms - self.timeframe_ms)
            if sym in self._seen:
                start = max(start, bisect_right(whole.ts, self._seen[sym]))
            rest = whole.tail(start)
            series.append(rest if self.max_bars is None else rest.head(self.max_bars))
            self._past[sym] = list(whole.head(start).candles())
        self.series = series
        self.clock.advance(ts_ms)
        starts = [s.ts[0] for s in self.series if len(s)]
        if starts:
            self.clock.advance(min(starts))

    def iter_candles(self) -> Iterator[Candle]:
        """The merged candles, synchronously, advancing the clock; for backtests."""
        return self._merged(self.clock.advance)

    def order(self) -> bytes:
        """The symbol of each candle, by its position in `symbols`, in the order `iter_candles` hands them out (a
        symbol's candles come in the order of its series): for a run that takes the candles from `series` itself."""
        n = len(self.symbols)
        if n == 1:
            return bytes(len(self.series[0]))
        if n > 255:
            raise ValueError(f"a replay order holds at most 255 symbols, not {n}")
        first = self.series[0].ts
        if all(s.ts == first for s in self.series):  # every symbol has a candle at every time (the usual case)
            return bytes(range(n)) * len(first)
        # Time order, equal times in symbol order: the heap's order in _merged (each series rises strictly).
        keys = sorted(t * n + k for k, s in enumerate(self.series) for t in s.ts)
        return bytes(key % n for key in keys)

    def candle(self, k: int, i: int) -> Candle:
        """Candle i of symbol k (its position in `symbols`)."""
        s = self.series[k]
        return Candle(self.symbols[k], s.ts[i], s.open[i], s.high[i], s.low[i], s.close[i], s.volume[i])

    async def candles(self) -> AsyncIterator[Candle]:
        advance = self.clock.advance
        if self.speed > 0:
            interval = 1.0 / self.speed
            sleep = self.clock.sleep
            last_ts = None
            for candle in self._merged(None):
                if candle.ts != last_ts:
                    # One pause per bar time: all symbols' candles of the same bar arrive together.
                    if last_ts is not None:
                        await sleep(interval)
                        if self._closed:
                            return
                    last_ts = candle.ts
                advance(candle.ts + self.timeframe_ms)
                self._hand_out(candle)
                yield candle
        else:
            count = 0
            for candle in self._merged(advance):
                self._hand_out(candle)
                yield candle
                count += 1
                if count >= YIELD_EVERY:
                    count = 0
                    await asyncio.sleep(0)

    def processed(self, candle: Candle) -> None:
        if self._in_hand is not None and (self._in_hand.symbol, self._in_hand.ts) == (candle.symbol, candle.ts):
            self._in_hand = None

    def _hand_out(self, candle: Candle) -> None:
        # Handed out, and in hand until the engine says it processed it: it may store its books before it takes the
        # candle up, or while it works on it (another task: the housekeeping, a control).
        self._before_in_hand = self._seen.get(candle.symbol)
        self._seen[candle.symbol] = candle.ts
        self._in_hand = candle

    async def close(self) -> None:
        self._closed = True

    def _merged(self, advance: Callable[[int], None] | None) -> Iterator[Candle]:
        tf = self.timeframe_ms
        sources = [(sym, s.ts, s.open, s.high, s.low, s.close, s.volume, len(s))
                   for sym, s in zip(self.symbols, self.series)]
        if len(sources) == 1:
            sym, ts, o, h, lo, c, v, _ = sources[0]
            for row in zip(ts, o, h, lo, c, v):
                if self._closed:
                    return
                if advance is not None:
                    advance(row[0] + tf)
                yield Candle(sym, *row)
            return
        # Heap of (next ts, symbol position, row index): ties on ts go to the earlier symbol.
        heap = [(src[1][0], k, 0) for k, src in enumerate(sources) if src[7]]
        heapify(heap)
        while heap:
            if self._closed:
                return
            t, k, i = heap[0]
            sym, ts, o, h, lo, c, v, n = sources[k]
            candle = Candle(sym, t, o[i], h[i], lo[i], c[i], v[i])
            i += 1
            if i < n:
                heapreplace(heap, (ts[i], k, i))
            else:
                heappop(heap)
            if advance is not None:
                advance(t + tf)
            yield candle


def replay_series(settings: Settings) -> dict[str, CandleSeries]:
    """A replayed market's files, read and checked as the start replays them (StartError or CsvError, one line naming
    the file): what `ffe config check` says before a start."""
    check_replay(settings)
    files = settings.market.replay_files
    series = {s: load_csv(files[s], symbol=s) for s in settings.engine.symbols}
    for s in series.values():
        if len(s) < 2:
            raise StartError(f"{s.path}: {len(s)} candle(s): too few to replay (its timeframe cannot be told; "
                             "market.replay_files)")
    frames = {s.path: s.timeframe_ms for s in series.values()}
    if len(set(frames.values())) > 1:
        listed = ", ".join(f"{path} {format_timeframe(tf)}" for path, tf in frames.items())
        raise StartError(settings.blame(("market", "replay_files"), "market.replay_files: the files must share one "
                                        f"timeframe: {listed}"))
    (frame,) = set(frames.values())
    engine = settings.engine
    if frame != engine.timeframe_ms:  # bars a timeframe apart would be stale to the engine's DATA_STALE gate
        mismatch = (f"the files of market.replay_files are {format_timeframe(frame)} candles: set engine.timeframe "
                    f"= \"{format_timeframe(frame)}\" to replay them")
        if settings.set_at("engine", "timeframe") is None:  # the default: no line of the file set it
            raise StartError(f"{settings.said('engine', 'timeframe')}: {mismatch}")
        raise StartError(settings.blame(("engine", "timeframe"), f"engine.timeframe = \"{engine.timeframe}\": "
                                        f"{mismatch}"))
    return series
