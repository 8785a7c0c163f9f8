"""Closed candles and last prices from a real exchange, by polling ccxt (fetch_ohlcv, fetch_ticker).

Exchanges serve the candle still being formed as the newest row of fetch_ohlcv; it is never yielded. A row is
taken as closed when a later row exists, or when its period ended `close_grace_ms` ago by the feed's clock and by the
exchange's own (for exchanges that do not serve the open candle, and markets without trades: no later row). The
exchange's time is asked for (ccxt's fetchTime) only then, once a round: a machine clock running ahead of the
exchange's would otherwise take the candle still forming for closed, and that candle's range would never be seen
whole. The read is one try, given up after two seconds, so a round's candles never wait long on it. When it cannot be
read, the newest row waits for the next round (or a later row); an exchange that tells no time, or refuses the
request for good, is judged by the feed's clock alone, and so is one whose time is before its own newest candle (a
time that is wrong). Each closed candle is yielded once, in non-decreasing time across
symbols: candles of a symbol that is ahead wait until the others have caught up, unless those lag by more than
`max_lag_bars` (an illiquid market with no trades: its reads answer, with nothing new), or a symbol whose reads fail
(the exchange not answering for it) has failed for more than `hold_failed_s`; a candle that arrives after newer ones
were yielded is dropped with a warning rather than yielded out of order. A short outage of one symbol's klines so
loses none of its candles (their lows and highs are where its stop-loss and take-profit are checked), and a longer
one does not keep the other symbols' candles, and their stop-losses, waiting for it. A read refused for good (an
unknown symbol) holds nothing back. The exchange's Retry-After (no requests for a while, every symbol alike) ends the
round without a symbol failing: said once per wait, and the candles are asked for once it is over. A candle whose
numbers ffe cannot compute with (not numbers, a zero price, low above high, a price beyond the bounds of the CSV
files: bounds.py) is left out with a warning, once, and counts as fetched: the indicators and the sizing never see
it. So is one whose time is outside the bounds of candle times (before 1800, past 2099), except that it does not
count as fetched: a time past the bound would stand for every later candle, and the symbol's real ones would never
be asked for again. The candles are read through CcxtVenue.fetch_ohlcv, which never answers a row that is no candle
(no time or prices as numbers: ccxt's reading of a gateway's page served 200) nor none for the newest candles (ccxt's
reading of `{}`): such an answer is a failed read, retried, then VenueUnavailable (market/ohlcv.py). history() so
raises it, and the start that asked for the warm-up fails saying so rather than trading on a cold or bogus history; a
round's read fails for the symbol, as any other, and is asked again the next round.

history() reads page by page: an exchange answers at most a page of candles a request (Binance: 1000), and
engine.warmup_bars goes to 100,000. Each page is such a checked read, retried, held by the exchange's Retry-After and
paced by ccxt's rate limiter; a page without any candle where an earlier read showed the exchange has some is no
answer either. A market with fewer candles than asked (listed recently) warms up on those it has, with one warning a
symbol saying how many of how many: not a refusal, since the exchange has no more to give.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Mapping

from .. import fmt
from ..clock import WallClock, format_timeframe
from ..model import Candle
from ..venues.base import VenueError, VenueUnavailable
from ..venues.ccxt_venue import CcxtVenue, build_exchange
from .bounds import TIME_MIN_MS, candle_problem, time_problem
from .csvdata import iso
from .ohlcv import page_size

log = logging.getLogger(__name__)

# Before every candle time (which may be negative: before 1970): the exchange's time when it could not be read (no
# row closes by time), and the newest candle fetched or yielded before there is one.
NEVER = TIME_MIN_MS - 1


class ExchangeFeed:
    """`source` is a CcxtVenue (shared with the order path) or a ccxt exchange. `clock` needs now_ms() and
    async sleep(seconds); the wall clock by default."""

    def __init__(self, source: Any, symbols: list[str], timeframe_ms: int, poll_s: float, clock: Any = None, *,
                 page: int = 500, max_lag_bars: int = 2, hold_failed_s: float = 60.0,
                 close_grace_ms: int = 2000) -> None:
        self.reader: CcxtVenue = source if isinstance(source, CcxtVenue) else CcxtVenue(None, symbols,
                                                                                        exchange=source)
        self.symbols = list(symbols)
        self.timeframe_ms = int(timeframe_ms)
        self.timeframe = format_timeframe(self.timeframe_ms)
        known = getattr(self.reader.exchange, "timeframes", None) or {}
        if known and self.timeframe not in known:
            raise VenueError(f"engine.timeframe: {self.reader.name} has no {self.timeframe!r} candles "
                             f"(it has {', '.join(known)})")
        self.poll_s = poll_s
        self.clock = clock if clock is not None else WallClock()
        self.page = page
        self.max_lag_bars = max_lag_bars
        self.hold_failed_ms = int(hold_failed_s * 1000)
        self._failing: dict[str, int] = {}  # symbol -> clock time of the first of the reads failing in a row
        self._refused: set[str] = set()  # symbols whose last read was refused for good (an unknown symbol)
        self.close_grace_ms = close_grace_ms
        self._owned: CcxtVenue | None = None
        self._fetched: dict[str, int] = {}  # symbol -> open time of the newest closed candle fetched
        self._pending: dict[tuple[str, int], Candle] = {}
        self._bad_times: set[tuple[str, int]] = set()  # (symbol, open time) of the candles refused for their time
        self._watermark = NEVER  # open time of the newest candle yielded
        self._order = {s: i for i, s in enumerate(self.symbols)}
        self._closed = False
        self._more = False  # the last poll filled a page: fetch again without waiting
        # The exchange's time, read at most once a round (_closed_by_time): None when it tells none.
        self._exchange_now: int | None = None
        self._exchange_read = False
        self._time_refused = False  # the exchange refused its time for good: the feed's clock judges alone
        self._time_failing = False  # its time could not be read at the last try (said once per outage)
        self._time_disbelieved = False  # its time was before its own newest candle (said once)
        self._waiting_said = False  # the exchange's Retry-After was said (once per wait)
        # symbol -> the earliest open time handed out (not_before: the market time the records reached)
        self._not_before: dict[str, int] = {}
        self._behind_said: set[str] = set()  # symbols whose candles before it were said passed over

    @classmethod
    def from_settings(cls, settings: Any, symbols: list[str], timeframe_ms: int, clock: Any = None,
                      **kw: Any) -> "ExchangeFeed":
        """A feed with its own public (credential-less) connection, closed with the feed."""
        venue = CcxtVenue(settings, symbols, exchange=build_exchange(settings, credentials=False))
        feed = cls(venue, symbols, timeframe_ms, settings.poll_s, clock, **kw)
        feed._owned = venue
        return feed

    async def close(self) -> None:
        self._closed = True
        if self._owned is not None:
            await self._owned.close()
            self._owned = None

    def not_before(self, ts_ms: int, done: Mapping[str, int] | None = None) -> None:
        """The records' market time reached ts_ms (as ResumableFeed.not_before): no candle closing before it is
        handed out, nor a symbol's closing at or before `done`'s close of it, its latest candle processed. An
        exchange whose clock was set back (a testnet reset, a gateway swapped) would otherwise be decided on again
        in a past the records have left: market time never goes back."""
        for sym in self.symbols:
            self._not_before[sym] = max(ts_ms - self.timeframe_ms, (done or {}).get(sym, NEVER))

    def _passed_over(self, sym: str, ts: int) -> bool:
        """Whether the candle of `sym` opening at `ts` is before the market time the records reached (said once)."""
        earliest = self._not_before.get(sym, NEVER)
        if ts >= earliest:
            return False
        if sym not in self._behind_said:
            self._behind_said.add(sym)
            log.warning("exchange feed: %s candles before the market time the records reached (%s) are passed over: "
                        "the exchange's clock is behind it (set back?); decisions go on once its candles reach it",
                        sym, iso(earliest))
        return True

    async def last_price(self, symbol: str) -> float:
        return await self.reader.last_price(symbol)

    async def history(self, n: int) -> dict[str, list[Candle]]:
        """The last n closed candles per symbol, for indicator warm-up; candles() continues after them. An answer
        that is not the exchange's candles raises VenueUnavailable (once its retries failed): never a cold history.
        A symbol the exchange has fewer candles of (a market listed recently) warms up on those, said in one warning
        (how many of how many)."""
        out: dict[str, list[Candle]] = {}
        now = self.clock.now_ms()
        self._exchange_read = False
        for sym in self.symbols:
            rows = await self._newest_rows(sym, n + 1)  # the newest may be the candle still forming
            closed = (await self._closed_by_time(sym, rows, now))[-n:] if n > 0 else []
            out[sym] = [c for c in (self._candle(sym, ts, r) for ts, r in closed) if c is not None]
            if closed:
                self._fetched[sym] = closed[-1][0]
            if len(closed) < n:
                # Not a refusal: the exchange has no more to give (a restart would not help), and the indicators,
                # VaR and correlation wait for the bars they need as they do on a fresh market. But the operator set
                # more: said, never a shorter history taken without a word.
                first = f", its first at {iso(closed[0][0])}" if closed else ""
                log.warning("exchange feed: %s warms up on %d of the %d bars asked (engine.warmup_bars): the exchange "
                            "has no more closed %s candles%s (a market listed recently?)", sym, len(out[sym]), n,
                            self.timeframe, first)
        if self._fetched:
            self._watermark = min(self._fetched.values())
        return out

    async def _newest_rows(self, sym: str, want: int) -> list[list[Any]]:
        """The exchange's newest `want` candles of `sym` in time order, fewer only when it has no more, read page by
        page: an exchange answers at most a page a request (Binance: 1000), whatever was asked, and a warm-up goes
        to 100,000 bars. Each page through CcxtVenue.fetch_ohlcv (checked, retried, held by a Retry-After; ccxt's
        rate limiter paces them). First the newest page; then, while candles are missing, the periods before the
        earliest held, forward from as many periods back as are missing, as `ffe data download` reads (ccxt asks
        from a time on): periods without trades passed over, the exchange asked again further back, until it has
        none before the earliest (its first candle)."""
        page = page_size(self.reader.exchange)
        newest = await self.reader.fetch_ohlcv(sym, self.timeframe, None, min(want, page))
        held = {int(r[0]): r for r in newest}  # open time -> row: a candle served on two pages is held once
        known = max(held)
        while len(held) < want:
            earliest = min(held)
            cursor = max(earliest - (want - len(held)) * self.timeframe_ms, TIME_MIN_MS)
            before = len(held)
            while cursor < earliest:
                # `known`: the exchange has candles from `cursor` on, so an answer with none is not its candles.
                rows = await self.reader.fetch_ohlcv(sym, self.timeframe, cursor, page, known=known)
                for r in rows:
                    if int(r[0]) < earliest:
                        held[int(r[0])] = r
                last = int(rows[-1][0])
                if last >= earliest:
                    break
                cursor = last + self.timeframe_ms
            if len(held) == before:
                break  # none before the earliest: the market's first candle
        return [held[ts] for ts in sorted(held)][-want:]

    async def candles(self) -> AsyncIterator[Candle]:
        while not self._closed:
            for candle in await self.poll():
                yield candle
                if self._closed:
                    return
            if not self._more:
                await self.clock.sleep(self.poll_s)

    async def poll(self) -> list[Candle]:
        """One round over every symbol: the closed candles that can be released now, in order."""
        now = self.clock.now_ms()
        self._more = False
        self._exchange_read = False
        for sym in self.symbols:
            since = self._fetched[sym] + self.timeframe_ms if sym in self._fetched else None
            try:
                rows = await self.reader.fetch_ohlcv(sym, self.timeframe, since, self.page if since else 2)
            except VenueUnavailable as exc:
                if exc.asked_to_wait:
                    # The exchange asked for no requests for a while: every symbol's read waits for it alike, and
                    # no candle is lost (each is asked for once it is over). Said once per wait.
                    self._say_waiting()
                    break
                log.warning("exchange feed: %s candles unavailable: %s", sym, exc)
                self._failing.setdefault(sym, now)  # an outage, which may end soon
                self._refused.discard(sym)
                continue
            except VenueError as exc:  # a refusal, which will not end soon
                log.warning("exchange feed: %s candles unavailable: %s", sym, exc)
                self._failing.pop(sym, None)
                self._refused.add(sym)
                continue
            self._waiting_said = False
            self._failing.pop(sym, None)
            self._refused.discard(sym)
            closed = await self._closed_by_time(sym, rows, now)
            if since is None:
                closed = closed[-1:]  # a feed started without history begins with the latest closed candle
            before = self._fetched.get(sym)
            for ts, r in closed:
                if ts > self._fetched.get(sym, NEVER):
                    self._fetched[sym] = ts
                    c = None if self._passed_over(sym, ts) else self._candle(sym, ts, r)
                    if c is not None:
                        self._pending[(sym, ts)] = c
            # A full page may hold more: ask again at once, but only when it moved the feed on (a page of candles
            # refused for their time, which do not count as fetched, would be asked for again and again).
            if since is not None and len(rows) >= self.page and self._fetched.get(sym) != before:
                self._more = True
        return self._release(now)

    def _say_waiting(self) -> None:
        if self._waiting_said:
            return
        self._waiting_said = True
        until = self.reader.requests_held_until()
        log.warning("exchange feed: waiting for the exchange's Retry-After: no candles are asked for before %s (none "
                    "is lost: each is asked for then)", fmt.iso(until) if until is not None else "it is over")

    async def _closed_by_time(self, sym: str, rows: list[list[Any]], now: int) -> list[tuple[int, list[Any]]]:
        """_closed_rows at `now` by the feed's clock; its newest row, when only the clock says it closed (no later
        row), also by the exchange's own time."""
        closed = self._closed_rows(sym, rows, now)
        if not closed or closed[-1][1] is not rows[-1]:
            return closed
        exchange_now = await self._exchange_time()
        if exchange_now is not None and exchange_now != NEVER and exchange_now < closed[-1][0]:
            # Its own newest candle opened after the time it tells: that time is wrong (a clock that lies, a cached
            # answer). The feed's clock judges.
            if not self._time_disbelieved:
                log.warning("exchange feed: the exchange's time %d, before its own newest %s candle (%d), is not "
                            "believed: candles with none after them are judged by this machine's clock",
                            exchange_now, sym, closed[-1][0])
            self._time_disbelieved = True
            return closed
        if exchange_now is None or exchange_now >= now:
            return closed
        return self._closed_rows(sym, rows, exchange_now)

    async def _exchange_time(self) -> int | None:
        """The exchange's time this round (read once a round): None when it tells none (it has no such request, or
        refused it for good: said once), NEVER when it could not be read now (an outage: said once per outage)."""
        if self._exchange_read:
            return self._exchange_now
        self._exchange_read = True
        if self._time_refused:
            self._exchange_now = None
            return None
        try:
            self._exchange_now = await self.reader.server_time()
            self._time_failing = False
        except VenueError as exc:
            log.warning("exchange feed: the exchange tells no time (%s): candles with none after them are judged by "
                        "this machine's clock", exc)
            self._time_refused = True
            self._exchange_now = None
        except VenueUnavailable as exc:
            if not self._time_failing:
                log.warning("exchange feed: the exchange's time could not be read (%s): a candle with none after it "
                            "waits until it can be, or until a later one comes", exc)
            self._time_failing = True
            self._exchange_now = NEVER
        return self._exchange_now

    def _closed_rows(self, sym: str, rows: list[list[Any]], now: int) -> list[tuple[int, list[Any]]]:
        """(open time, row) of the closed rows (each has a time: CcxtVenue.fetch_ohlcv answers no other)."""
        out = []
        last = len(rows) - 1
        for i, r in enumerate(rows):
            ts = int(r[0])
            if i == last and ts + self.timeframe_ms + self.close_grace_ms > now:
                break  # still forming (or too fresh to trust)
            problem = time_problem(ts, f"its time {iso(ts)}")
            if problem is not None:
                if (sym, ts) not in self._bad_times:  # served again at each poll: said once
                    self._bad_times.add((sym, ts))
                    log.warning("exchange feed: refused the %s candle at %d: %s", sym, ts, problem)
                continue
            out.append((ts, r))
        return out

    def _candle(self, sym: str, ts: int, r: list[Any]) -> Candle | None:
        """The candle of a closed row, or None (with a warning) when ffe cannot compute with its numbers: in the
        indicators a price near float64's largest overflows, and a zero one divides the sizing by zero."""
        try:
            o, h, lo, c = (float(x) for x in r[1:5])
            v = float(r[5] or 0.0) if len(r) > 5 else 0.0
        except (TypeError, ValueError, IndexError):
            problem: str | None = f"not numbers: {r[1:6]!r:.200}"
        else:
            problem = candle_problem(o, h, lo, c, v)
        if problem is not None:
            log.warning("exchange feed: refused the %s candle at %d: %s", sym, ts, problem)
            return None
        return Candle(sym, ts, o, h, lo, c, v)

    def _release(self, now: int) -> list[Candle]:
        if not self._pending:
            return []
        lead = max(self._fetched.values())
        floor = lead - self.max_lag_bars * self.timeframe_ms
        # A symbol holds the others while it answers and lags no more than max_lag_bars (its next candle is on its
        # way), or while its reads fail for less than hold_failed_ms; one whose read was refused holds nothing.
        patience = self.hold_failed_ms
        keeping_up = [ts for sym, ts in self._fetched.items() if sym not in self._refused and (
            now - self._failing[sym] < patience if sym in self._failing else ts >= floor)]
        bound = min(keeping_up) if keeping_up else lead  # none holds: all that is fetched goes out
        ready = sorted((c for c in self._pending.values() if c.ts <= bound),
                       key=lambda c: (c.ts, self._order.get(c.symbol, 0)))
        out = []
        for c in ready:
            del self._pending[(c.symbol, c.ts)]
            if c.ts < self._watermark:
                log.warning("exchange feed: dropped %s candle %d that arrived after newer candles", c.symbol, c.ts)
                continue
            self._watermark = c.ts
            out.append(c)
        return out
