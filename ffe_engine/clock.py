"""Clocks: wall time for live and paper trading, market time for replays and backtests.

Everything that asks "what time is it" or waits goes through a clock, so a backtest can run the same code as a
live engine without ever sleeping, and a test can move time by hand instead of waiting for it.

A clock tells three times:
- `now_ms()`: market time, integer milliseconds since the Unix epoch (UTC): what the bars and the gates see;
- `wall()`: seconds since the epoch, for the time a record was written (approvals, engine state, key/values);
- `monotonic()`: seconds that never go back, for durations: settle windows, breaker recovery, cadences.

Real network timeouts (`asyncio.wait_for` around a venue call) are not measured with a clock: a test clock must
never make a request time out, or wait forever for one.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Protocol

DAY_MS = 86_400_000

_TF_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}
_TF_RE = re.compile(r"(\d+)([smhdw])")


def timeframe_ms(tf: str) -> int:
    """Parse a timeframe such as "1m", "5m", "1h", "4h" or "1d" into milliseconds."""
    m = _TF_RE.fullmatch(tf.strip()) if isinstance(tf, str) else None
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"bad timeframe {tf!r}: expected a positive number and a unit s, m, h, d or w, like '1m'")
    return int(m.group(1)) * _TF_UNITS[m.group(2)]


def format_timeframe(ms: int) -> str:
    """The shortest timeframe string for a step in milliseconds (3_600_000 -> "1h"); "?" when unknown."""
    if ms <= 0:
        return "?"
    for unit in ("w", "d", "h", "m", "s"):
        size = _TF_UNITS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def utc_day(ts_ms: int) -> int:
    """Days since the epoch of a UTC timestamp: the key for "today" in daily limits."""
    return ts_ms // DAY_MS


def align(ts_ms: int, step_ms: int) -> int:
    """The start of the timeframe bucket holding ts_ms."""
    return ts_ms - ts_ms % step_ms


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...

    def advance(self, ts_ms: int) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    """Real time. `advance` is a no-op: the world moves by itself."""

    __slots__ = ()

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, ts_ms: int) -> None:
        pass

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SteadyClock:
    """A wall clock whose market time never goes back: the engine's, over the clock it is given (the system clock,
    which its owner or NTP may set back). `now_ms` holds at the latest time it told until the clock passes it
    again, and at `not_before`, the latest market time the records hold (seeded at the start), so that no fill,
    order, position or trade is stamped before one stamped earlier, in this run or before a restart: a clock that
    ran ahead and was corrected holds market time until it catches up. Wall and monotonic time are the clock's own:
    wall time stamps when a record was written, and says so as it is."""

    __slots__ = ("clock", "_floor")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._floor: int | None = None

    def now_ms(self) -> int:
        now = self.clock.now_ms()
        if self._floor is not None and now < self._floor:
            return self._floor
        self._floor = now
        return now

    def behind_ms(self) -> int:
        """How far the clock is behind the market time held (0 when it is not)."""
        return 0 if self._floor is None else max(0, self._floor - self.clock.now_ms())

    def not_before(self, ts_ms: int) -> None:
        """Market time never before ts_ms from now on: the records reached it."""
        if self._floor is None or ts_ms > self._floor:
            self._floor = ts_ms

    def wall(self) -> float:
        return self.clock.wall()

    def monotonic(self) -> float:
        return self.clock.monotonic()

    def advance(self, ts_ms: int) -> None:
        self.clock.advance(ts_ms)

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds)


class SimClock:
    """Market time: `now_ms` is the close time of the last candle the feed advanced it to.

    `sleep` returns at once; it yields to the event loop every `yield_every` calls so that a loop polling the
    clock cannot starve other tasks. With `paced=True` sleeps really wait (a replay shown at a given speed) while
    the time reported stays the market's. `wall` and `monotonic` are real time: an operator watching a replay
    waits in real seconds (an approval's time to live, a breaker's recovery).
    """

    __slots__ = ("_now", "_started", "_calls", "yield_every", "paced")

    def __init__(self, start_ms: int | None = None, *, paced: bool = False, yield_every: int = 1000) -> None:
        # Without a start, the first time it is advanced to is where it starts, whatever its sign: a market's
        # history may begin before 1970 (negative times), and a clock at 0 would stand still until 1970.
        self._now = 0 if start_ms is None else start_ms
        self._started = start_ms is not None
        self._calls = 0
        self.yield_every = yield_every
        self.paced = paced

    def now_ms(self) -> int:
        return self._now

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, ts_ms: int) -> None:
        # Never backwards: candles of several symbols may close at the same time.
        if ts_ms > self._now or not self._started:
            self._now = ts_ms
            self._started = True

    async def sleep(self, seconds: float) -> None:
        if self.paced:
            await asyncio.sleep(seconds)
            return
        self._calls += 1
        if self._calls >= self.yield_every:
            self._calls = 0
            await asyncio.sleep(0)



class RunClock(SimClock):
    """A backtest's clock: market time as SimClock's, and the wall time of the run to the second. The sub-second
    digits of a run going at thousands of bars a second say nothing, and would cost its records bytes that vary
    with the machine's load."""

    def wall(self) -> float:
        return float(int(time.time()))


class ManualClock(SimClock):
    """A clock for tests: market time as with SimClock (the feed advances it; `paced` as there), while wall and
    monotonic time stand still until the test moves them with `forward(seconds)`. A test that needs "two minutes
    later" says so instead of sleeping."""

    __slots__ = ("_wall", "_mono")

    def __init__(self, start_ms: int | None = None, *, wall: float = 1_700_000_000.0, paced: bool = False,
                 yield_every: int = 1000) -> None:
        super().__init__(start_ms, paced=paced, yield_every=yield_every)
        self._wall = wall
        self._mono = 1_000.0

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def forward(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._wall += seconds
        self._mono += seconds

    def step_wall(self, seconds: float) -> None:
        """The system clock set (an NTP step, a `date` by hand), either way: wall time jumps, elapsed time does
        not."""
        self._wall += seconds
