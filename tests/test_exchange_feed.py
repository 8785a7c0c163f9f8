"""ExchangeFeed over real ccxt and the fake Binance: closed candles only, each once, in order across symbols."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from fake_exchange import FakeBinance, exchange_settings, kline, path_price
from ffe_engine.market.exchange import ExchangeFeed
from ffe_engine.venues.base import VenueError, VenueUnavailable
from ffe_engine.venues.ccxt_venue import CcxtVenue

BTC, ETH = "BTC/USDT", "ETH/USDT"
IDS = {BTC: "BTCUSDT", ETH: "ETHUSDT"}
M = 60_000
T0 = 1_700_000_040_000  # a minute boundary
KLINES = "GET /api/v3/klines"


class StepClock:
    """Market time that moves only when the feed sleeps, shared with the fake exchange's klines."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.sleeps = 0

    def now_ms(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += int(seconds * 1000)
        await asyncio.sleep(0)


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def fx():
    async with FakeBinance() as fake:
        yield fake


@pytest.fixture
def clock(fx):
    c = StepClock(T0 + 30_000)
    fx.market_clock = c.now_ms
    return c


@pytest.fixture
async def venue(fx):
    v = CcxtVenue(exchange_settings(fx), [BTC, ETH], read_attempts=1, sleep=no_wait)
    v.exchange.enableRateLimit = False
    v.exchange.timeout_on_exit = 0
    yield v
    await v.close()


def expected(symbol: str, ts: int) -> tuple:
    return kline(IDS[symbol], ts, M)


def as_tuple(c) -> tuple:
    return (c.ts, c.open, c.high, c.low, c.close, c.volume)


async def test_history_then_live_candles_once_and_in_order(fx, venue, clock):
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
    assert (feed.symbols, feed.timeframe_ms, feed.timeframe) == ([BTC, ETH], M, "1m")
    hist = await feed.history(3)
    for sym in (BTC, ETH):
        assert [c.ts for c in hist[sym]] == [T0 - 3 * M, T0 - 2 * M, T0 - M]
        assert [as_tuple(c) for c in hist[sym]] == [pytest.approx(expected(sym, c.ts)) for c in hist[sym]]

    got = []
    gen = feed.candles()
    async for c in gen:
        assert c.ts + M <= clock.now_ms()  # never the candle still forming
        got.append(c)
        if (c.symbol, c.ts) == (ETH, T0 + 3 * M):
            break
    await gen.aclose()
    await feed.close()
    assert [(c.ts, c.symbol) for c in got] == [(T0 + i * M, s) for i in range(4) for s in (BTC, ETH)]
    for c in got:
        assert as_tuple(c) == pytest.approx(expected(c.symbol, c.ts))
    assert clock.sleeps >= 4  # paced by the clock between polls


async def test_without_history_it_starts_at_the_latest_closed_candle(venue, clock):
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
    first = await feed.poll()
    assert [(c.ts, c.symbol) for c in first] == [(T0 - M, BTC), (T0 - M, ETH)]
    assert await feed.poll() == []  # nothing new in the same minute


@pytest.fixture
async def retrying(fx):
    """A venue that retries a failed read as the engine's does (4 attempts), without waiting between them."""
    v = CcxtVenue(exchange_settings(fx), [BTC, ETH], read_attempts=4, sleep=no_wait)
    v.exchange.enableRateLimit = False
    v.exchange.timeout_on_exit = 0
    yield v
    await v.close()


@pytest.mark.parametrize("kind", ["empty_200", "page_200"])
async def test_a_warm_up_answer_that_is_no_candles_is_retried_and_the_history_is_the_exchange_s(fx, retrying, clock,
                                                                                                kind):
    # `{}` or a gateway's HTML page, answered 200: ccxt reads the first as no candles, the second character by
    # character (the "1" of "<h1>" as a candle at 1 ms). Neither is the exchange's history: a failed read.
    feed = ExchangeFeed(retrying, [BTC, ETH], M, poll_s=20, clock=clock)
    fx.fault(KLINES, kind)
    hist = await feed.history(3)
    assert [r.fault for r in fx.requests_to(KLINES)].count(kind) == 1
    for sym in (BTC, ETH):
        assert [c.ts for c in hist[sym]] == [T0 - 3 * M, T0 - 2 * M, T0 - M]
    clock.now += M
    assert [(c.ts, c.symbol) for c in await feed.poll()] == [(T0, BTC), (T0, ETH)]


@pytest.mark.parametrize("kind", ["empty_200", "page_200"])
async def test_warm_up_answers_that_stay_no_candles_fail_the_history_saying_so(fx, retrying, clock, kind):
    # Never a cold (or bogus) history taken without a word: the start that asked for it fails on it.
    feed = ExchangeFeed(retrying, [BTC, ETH], M, poll_s=20, clock=clock)
    fx.fault(KLINES, kind, times=1000)
    with pytest.raises(VenueUnavailable) as failed:
        await feed.history(3)
    assert [r.fault for r in fx.requests_to(KLINES)] == [kind] * 4  # retried as other failed reads are
    message = str(failed.value)
    assert message.startswith("binance fetch_ohlcv BTC/USDT: ") and "not its candles" in message, message
    assert "\n" not in message


@pytest.mark.parametrize(("per_request", "n", "gaps"), [(1000, 2500, []), (7, 30, [(T0 - 12 * M, T0 - 8 * M)])],
                         ids=["binance's 1000 a request", "7 a request, minutes without trades"])
async def test_a_warm_up_longer_than_a_page_gets_every_bar_once_and_in_order(fx, retrying, clock, per_request, n,
                                                                            gaps):
    """The exchange answers at most a page of candles a request (Binance: 1000), while engine.warmup_bars goes to
    100,000: the warm-up is read page by page, each page a checked read retried as any other (here a gateway's page
    served 200 for the second request), and gets all the n bars asked, in order, none twice at the pages' seams,
    passing over periods without trades as the exchange does."""
    fx.klines_max = per_request
    fx.kline_gaps = gaps
    served = []

    def second_request_fails(rows: list) -> list:
        served.append(len(rows))
        if len(served) == 1:
            fx.fault(KLINES, "page_200")
        return rows

    fx.klines_edit = second_request_fails
    feed = ExchangeFeed(retrying, [BTC, ETH], M, poll_s=20, clock=clock)
    hist = await feed.history(n)
    opens = [t for t in range(T0 - 2 * n * M, T0, M) if not any(a <= t < b for a, b in gaps)][-n:]
    for sym in (BTC, ETH):
        assert [c.ts for c in hist[sym]] == opens, (sym, len(hist[sym]))
        assert [as_tuple(c) for c in hist[sym]] == [pytest.approx(expected(sym, t)) for t in opens]
    asked = fx.requests_to(KLINES)
    assert [r.fault for r in asked].count("page_200") == 1
    assert len(asked) > 2 * 2 and all(int(r.params["limit"]) <= 1000 for r in asked), [r.params for r in asked]
    clock.now += M
    assert [(c.ts, c.symbol) for c in await feed.poll()] == [(T0, BTC), (T0, ETH)]


@pytest.mark.parametrize("n", [100, 2500])
async def test_a_market_with_fewer_candles_than_the_warm_up_asks_warms_up_on_them_and_says_so(fx, venue, clock,
                                                                                             caplog, n):
    """A market listed recently has fewer candles than engine.warmup_bars: the warm-up is what there is, said once
    per symbol (how many of how many), never a shorter history taken without a word."""
    listed = T0 - 40 * M
    fx.kline_gaps = [(T0 - 10_000_000 * M, listed)]  # no candle before: listed 40 minutes ago
    caplog.set_level(logging.WARNING, logger="ffe_engine.market.exchange")
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
    hist = await feed.history(n)
    for sym in (BTC, ETH):
        assert [c.ts for c in hist[sym]] == list(range(listed, T0, M))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    for sym, line in zip((BTC, ETH), said):
        assert sym in line and f"40 of the {n} bars" in line and "engine.warmup_bars" in line, line
    clock.now += M
    assert [(c.ts, c.symbol) for c in await feed.poll()] == [(T0, BTC), (T0, ETH)]


async def test_a_poll_answer_that_is_no_candles_is_not_taken_for_candles(fx, venue, clock, caplog):
    # A feed started without history: a gateway's page for its first read would have its "1" taken for the newest
    # candle, and the next read would ask for the candles after 1970's first minute.
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
    fx.fault(KLINES, "page_200", times=2)
    with caplog.at_level(logging.WARNING, logger="ffe_engine.market.exchange"):
        assert await feed.poll() == []
    assert [(c.ts, c.symbol) for c in await feed.poll()] == [(T0 - M, BTC), (T0 - M, ETH)]
    assert "BTC/USDT candles unavailable" in caplog.text and "not its candles" in caplog.text, caplog.text
    clock.now += M
    assert [(c.ts, c.symbol) for c in await feed.poll()] == [(T0, BTC), (T0, ETH)]


async def test_outage_then_catch_up_without_gaps_or_repeats(fx, venue, clock):
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
    await feed.history(2)
    fx.down = True
    clock.now += 5 * M
    assert await feed.poll() == []
    fx.down = False
    out = await feed.poll()
    assert [(c.ts, c.symbol) for c in out] == [(T0 + i * M, s) for i in range(5) for s in (BTC, ETH)]
    assert await feed.poll() == []


async def test_long_gap_is_fetched_page_by_page_without_waiting(fx, venue, clock):
    feed = ExchangeFeed(venue, [BTC], M, poll_s=20, clock=clock, page=3)
    await feed.history(1)
    clock.now += 7 * M
    got = []
    gen = feed.candles()
    async for c in gen:
        got.append(c.ts)
        if c.ts == T0 + 6 * M:
            break
    await gen.aclose()
    assert got == [T0 + i * M for i in range(7)]
    assert clock.sleeps == 0  # full pages are followed at once


async def test_a_symbol_behind_holds_the_others_back(fx, venue, clock):
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
    await feed.history(1)
    clock.now += M
    fx.fault("GET /api/v3/klines", "5xx_not_executed")  # BTC's read fails this round
    assert await feed.poll() == []  # ETH's new candle waits for BTC
    out = await feed.poll()
    assert [(c.ts, c.symbol) for c in out] == [(T0, BTC), (T0, ETH)]


async def test_a_symbol_far_behind_does_not_stall_the_feed(fx, venue, clock):
    """A symbol with no new candles (an illiquid market: its reads answer, with nothing new) does not hold the others
    back past `max_lag_bars`; nor does one whose reads keep failing, past `hold_failed_s` of its outage: the other
    symbols' stop-losses are checked on their candles."""
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock, max_lag_bars=2, hold_failed_s=60)
    await feed.history(1)
    clock.now += 3 * M
    fx.fault("GET /api/v3/klines", "5xx_not_executed")  # BTC's read, the first of the round
    assert await feed.poll() == []  # BTC unreadable: ETH's three bars wait for it a while
    clock.now += 61_000
    fx.fault("GET /api/v3/klines", "5xx_not_executed")  # still unreadable, for over a minute now: released
    out = await feed.poll()
    assert [(c.ts, c.symbol) for c in out] == [(T0 + i * M, ETH) for i in range(len(out))] and len(out) >= 3
    late = await feed.poll()  # BTC's older candles would now go out of order: dropped, never yielded late
    assert [(c.ts, c.symbol) for c in late] == [(out[-1].ts, BTC)]


async def test_a_symbol_whose_reads_fail_for_a_while_holds_the_others_back_and_loses_no_candle(fx, venue, clock):
    """Its klines answered 503 for 100 seconds, over two bars' closes, while the other symbol's answered: its
    candles are not dropped for arriving after the other's (their lows and highs are where its stop-loss and
    take-profit are checked); the other's wait for them, and both come out in order once it answers again."""
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock, max_lag_bars=0, hold_failed_s=150)
    await feed.history(1)
    got = []
    for _ in range(5):
        clock.now += 20_000
        fx.fault("GET /api/v3/klines", "5xx_not_executed")  # BTC's read, first of each round, fails
        got += await feed.poll()
    clock.now += 20_000
    got += await feed.poll()
    btc, eth = ([c.ts for c in got if c.symbol == s] for s in (BTC, ETH))
    assert len(eth) == 2 and btc == eth, got
    assert [c.ts for c in got] == sorted(c.ts for c in got)


async def test_a_symbol_the_exchange_refuses_to_serve_does_not_hold_the_others(fx, venue, clock):
    """A read refused for good (an unknown symbol, a delisting: not an outage) holds nothing back."""
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock, max_lag_bars=2)
    await feed.history(1)
    clock.now += 3 * M
    fx.fault("GET /api/v3/klines", "error", status=400, code=-1121, msg="Invalid symbol.")
    out = await feed.poll()
    assert [(c.ts, c.symbol) for c in out] == [(T0 + i * M, ETH) for i in range(3)]


@pytest.mark.parametrize("price", [7.1e307, 1e-300], ids=["near the largest float", "served as 0"])
async def test_a_candle_of_a_price_ffe_cannot_compute_with_is_refused_with_a_warning_and_the_feed_goes_on(
        fx, venue, clock, caplog, price):
    """A price beyond the bounds of the CSV files (or 0, as the exchange writes 1e-300 to 8 decimals) would crash
    the indicators or the sizing in the engine's loop: those candles are left out, each once with a warning naming
    it, in the warm-up as in the feed, and the feed goes on with the rest."""
    bad = T0 + 2 * M  # the close of BTC's candle at T0 + M and the open of the one at T0 + 2M
    fx.price_path = lambda sid, ts: price if (sid, ts) == (IDS[BTC], bad) else path_price(sid, ts)
    caplog.set_level(logging.WARNING, logger="ffe_engine.market.exchange")
    clock.now += 4 * M
    hist = await ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock).history(4)
    assert [c.ts for c in hist[BTC]] == [T0, T0 + 3 * M] and len(hist[ETH]) == 4
    clock.now -= 4 * M  # again from the start: the same candles as they close
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
    await feed.history(1)
    caplog.clear()
    clock.now += 4 * M
    out = await feed.poll()
    assert [(c.ts, c.symbol) for c in out] == [(T0, BTC), (T0, ETH), (T0 + M, ETH), (T0 + 2 * M, ETH),
                                               (T0 + 3 * M, BTC), (T0 + 3 * M, ETH)]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2 and all(BTC in m for m in refused), refused
    clock.now += M
    assert [(c.ts, c.symbol) for c in await feed.poll()] == [(T0 + 4 * M, BTC), (T0 + 4 * M, ETH)]
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 2  # each said once, not fetched again


async def test_candles_past_2099_are_refused_with_a_warning_once_and_a_page_of_them_is_not_fetched_again_at_once(
        fx, venue, caplog):
    """Candle times are from 1800 to 2099 wherever candles come from (market/bounds.py), as in the CSV files: an
    exchange's candles past 2099 are left out, each said once, never yielded; a full page of them is no reason to
    ask again without waiting (the feed would spin), and they do not count as fetched (a time past the bound would
    then stand for every later one, and the symbol's real candles would never be asked for)."""
    end = 4_102_444_800_000  # 2100-01-01T00:00:00Z
    clock = StepClock(end + 3 * M + 30_000)
    fx.market_clock = clock.now_ms
    caplog.set_level(logging.WARNING, logger="ffe_engine.market.exchange")
    feed = ExchangeFeed(venue, [BTC], M, poll_s=20, clock=clock, page=2)
    hist = await feed.history(5)
    assert [c.ts for c in hist[BTC]] == [end - 2 * M, end - M]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 3 and all("is past 2099, the last year of the candle times ffe reads" in m
                                     for m in refused), refused
    out = []

    async def take() -> None:
        async for c in feed.candles():
            out.append(c)

    task = asyncio.create_task(take())
    for _ in range(200):
        await asyncio.sleep(0)
        if clock.sleeps >= 3:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await feed.close()
    assert out == [] and clock.sleeps >= 3, (out, clock.sleeps)  # it waited between polls
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == len(set(refused)), refused  # each candle said once, however often it was served


async def test_last_price_is_the_ticker(fx, venue, clock):
    feed = ExchangeFeed(venue, [BTC], M, poll_s=20, clock=clock)
    fx.set_price("BTCUSDT", 31_234.5)
    assert await feed.last_price(BTC) == 31_234.5


@pytest.mark.parametrize("price", [7.1e307, 5e13])
async def test_a_ticker_price_ffe_cannot_compute_with_is_no_price(fx, venue, clock, price):
    """An approval is sized at the exchange's quote: one beyond the bounds is refused as an unreadable quote is,
    nothing sized at it."""
    feed = ExchangeFeed(venue, [BTC], M, poll_s=20, clock=clock)
    fx.set_price("BTCUSDT", price)
    with pytest.raises(VenueError, match=re.escape(f"ticker for {BTC}: price {price!r} is above 1e+12, the largest")):
        await feed.last_price(BTC)


async def test_timeframe_the_exchange_does_not_offer(venue, clock):
    with pytest.raises(VenueError, match="engine.timeframe"):
        ExchangeFeed(venue, [BTC], 7 * M, poll_s=20, clock=clock)


async def test_from_settings_reads_public_data_without_credentials(fx, clock):
    feed = ExchangeFeed.from_settings(exchange_settings(fx), [BTC], M, clock)
    feed.reader.exchange.enableRateLimit = False
    feed.reader.exchange.timeout_on_exit = 0
    assert not feed.reader.exchange.apiKey and feed.poll_s == 1.0
    hist = await feed.history(2)
    assert [c.ts for c in hist[BTC]] == [T0 - 2 * M, T0 - M]
    await feed.close()
    assert feed.reader.exchange.session is None or feed.reader.exchange.session.closed
    assert all("X-MBX-APIKEY" not in r.params and "signature" not in r.params for r in fx.requests)


async def test_on_hourly_bars_a_symbol_s_outage_holds_the_other_s_candle_a_minute_not_two_bars(fx, venue):
    """Within `max_lag_bars` a failing symbol held the others as a lagging read would: two hours on hourly bars,
    their stop-losses unchecked all that while. Its outage holds them `hold_failed_s`; a refused read, not at all."""
    hour = 3_600_000
    for kind, opts, at_most in (("5xx_not_executed", {}, 120_000),
                                ("error", {"status": 400, "code": -1121, "msg": "Invalid symbol."}, 60_000)):
        clock = StepClock(1_700_002_800_000 + 30_000)  # half a minute into an hour
        fx.market_clock = clock.now_ms
        feed = ExchangeFeed(venue, [BTC, ETH], hour, poll_s=20, clock=clock, hold_failed_s=60)
        await feed.history(1)
        clock.now += hour  # the hour closed: ETH's candle is there, BTC's reads fail from now on
        waited, out = 0, []
        while not out and waited < 3 * hour:
            fx.clear_faults("GET /api/v3/klines")
            fx.fault("GET /api/v3/klines", kind, **opts)
            out = await feed.poll()
            if not out:
                clock.now += 30_000
                waited += 30_000
        assert out and {c.symbol for c in out} == {ETH}, (kind, out)
        assert waited <= at_most, f"{kind}: ETH's candle held {waited / 60_000:.1f} min"


async def test_a_clock_ahead_of_the_exchange_never_takes_the_candle_still_forming_for_closed(fx, venue, clock):
    # The machine's clock 150 s ahead of the exchange's (an NTP step, a clock set wrong): by it, the candle the
    # exchange still has open (T0, 30 s into its minute) ended two minutes ago. The exchange's own time says not.
    ahead = StepClock(clock.now + 150_000)
    feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=ahead)
    hist = await feed.history(2)
    assert [c.ts for c in hist[BTC]] == [T0 - 2 * M, T0 - M]
    assert await feed.poll() == []  # T0 is still forming at the exchange
    clock.now += M  # the exchange's minute T0 ends; T0 + M is forming
    ahead.now += M
    out = await feed.poll()
    assert [(c.ts, c.symbol) for c in out] == [(T0, BTC), (T0, ETH)]
    for c in out:  # its final values, not those of a moment in its minute
        assert as_tuple(c) == pytest.approx(expected(c.symbol, c.ts))


async def test_a_candle_with_none_after_it_is_closed_once_the_exchange_s_own_time_is_past_its_end(fx, venue, clock):
    # No trades since T0 - M ended: the exchange serves no later row, and only time can tell T0 - M has closed.
    fx.kline_gaps = [(T0, T0 + 10 * M)]
    feed = ExchangeFeed(venue, [BTC], M, poll_s=20, clock=clock)
    assert [c.ts for c in await feed.poll()] == [T0 - M]
    # A clock ahead of the exchange by more than a minute: the exchange's time says T0 + 2M has not ended.
    fx.kline_gaps = [(T0 + 3 * M, T0 + 10 * M)]
    ahead = StepClock(clock.now + 2 * M + 40_000)
    clock.now += 2 * M  # the exchange at T0 + 2M + 30 s: T0 and T0 + M closed, T0 + 2M forming (the last row)
    feed.clock = ahead
    assert [c.ts for c in await feed.poll()] == [T0, T0 + M]


async def test_when_the_exchange_s_time_cannot_be_read_a_candle_with_none_after_it_waits_for_the_next_round(
        fx, venue, clock, caplog):
    fx.kline_gaps = [(T0, T0 + 10 * M)]  # no trades since T0 - M: only time tells that it has closed
    feed = ExchangeFeed(venue, [BTC], M, poll_s=20, clock=clock)
    fx.fault("GET /api/v3/time", "5xx_not_executed")
    with caplog.at_level(logging.WARNING):
        assert [c.ts for c in await feed.poll()] == [T0 - 2 * M]  # the newest row, T0 - M, waits
    assert "the exchange's time could not be read" in caplog.text
    assert [c.ts for c in await feed.poll()] == [T0 - M]  # the time read the next round


async def test_an_exchange_that_refuses_to_tell_its_time_is_judged_by_the_feed_s_clock(fx, venue, clock, caplog):
    # The time route refused for good (Binance's -1020 "not supported"): the feed's clock alone closes a candle with
    # none after it, on time, not a bar late; said once.
    fx.kline_gaps = [(T0, T0 + 10 * M)]
    feed = ExchangeFeed(venue, [BTC], M, poll_s=20, clock=clock)
    fx.fault("GET /api/v3/time", "error", status=400, code=-1020, msg="This operation is not supported.", times=5)
    with caplog.at_level(logging.WARNING):
        assert [c.ts for c in await feed.poll()] == [T0 - M]
        fx.kline_gaps = [(T0 + M, T0 + 10 * M)]
        clock.now += M
        assert [c.ts for c in await feed.poll()] == [T0]
    assert caplog.text.count("tells no time") == 1


async def test_an_exchange_time_before_its_own_newest_candle_is_not_believed(fx, venue, clock, caplog):
    # An exchange whose time answer is far behind the candles it serves (a clock that lies, a cached answer): its
    # own newest row opened after it, so it is wrong; the feed's clock judges, and the operator is told once.
    fx.kline_gaps = [(T0, T0 + 10 * M)]
    feed = ExchangeFeed(venue, [BTC], M, poll_s=20, clock=clock)
    fx.time_answer = lambda: 0  # the exchange's /api/v3/time says 1970; its klines go on at the market's time
    with caplog.at_level(logging.WARNING):
        assert [c.ts for c in await feed.poll()] == [T0 - M]
    assert "is not believed" in caplog.text


async def test_a_time_read_that_hangs_holds_the_round_briefly_not_for_the_exchange_s_whole_timeout(fx, clock):
    # The time route hangs: the round's candles closed by a later row are not kept waiting for the client's whole
    # timeout and its retries; the newest row with none after it waits for the next round.
    fx.kline_gaps = [(T0, T0 + 10 * M)]
    venue = CcxtVenue(exchange_settings(fx), [BTC, ETH], read_attempts=4, sleep=no_wait)
    venue.exchange.enableRateLimit = False
    venue.exchange.timeout = 30_000
    try:
        feed = ExchangeFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
        fx.fault("GET /api/v3/time", "hang", seconds=30, times=4)
        # Not the hang's 30 s, nor the client's timeout with its retries: the poll ends well before either.
        out = await asyncio.wait_for(feed.poll(), timeout=20)
        assert [(c.ts, c.symbol) for c in out] == [(T0 - 2 * M, BTC), (T0 - 2 * M, ETH)]  # T0 - M waits
        assert len(fx.requests_to("GET /api/v3/time")) == 1  # one read a round, not retried
    finally:
        await venue.close()


async def test_a_feed_of_candles_before_1970_yields_them(fx, venue):
    """Candle times from 1800 on are negative epoch milliseconds before 1970: a feed started without history takes
    the latest closed one and goes on from it (a newest-fetched time of -1, 'none yet', once stood above them all)."""
    start = -86_400_000 * 3650 + 40 * M  # 1960
    clock = StepClock(start + 30_000)
    fx.market_clock = clock.now_ms
    feed = ExchangeFeed(venue, [BTC], M, poll_s=60, clock=clock)
    first = await feed.poll()
    assert [c.ts for c in first] == [start - M]
    clock.now += 2 * M
    assert [c.ts for c in await feed.poll()] == [start, start + M]
    await feed.close()
