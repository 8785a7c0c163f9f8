"""CcxtVenue against the fake Binance: real ccxt, real HTTP, every fault mapped to the right exception."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fake_exchange import Balance, FakeBinance, ccxt_options, exchange_settings
from ffe_engine.model import OrderRequest, Side
from ffe_engine.venues.base import DuplicateOrder, OrderInDoubt, UnknownOrder, VenueError, VenueUnavailable
from ffe_engine.venues.ccxt_venue import CcxtVenue, build_exchange

BTC, ETH = "BTC/USDT", "ETH/USDT"
POST_ORDER, GET_ORDER, DELETE_ORDER = "POST /api/v3/order", "GET /api/v3/order", "DELETE /api/v3/order"


class Waits:
    """Stands in for asyncio.sleep between read retries: records the waits and moves its own time by them (the
    retries' monotonic clock, `now`), without waiting."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    async def __call__(self, s: float) -> None:
        self.seconds.append(s)
        self.t += s
        await asyncio.sleep(0)


@pytest.fixture
async def fx():
    async with FakeBinance() as fake:
        fake.set_price("BTCUSDT", 30_000.0)
        yield fake


@pytest.fixture
def waits():
    return Waits()


@pytest.fixture
async def venue(fx, waits):
    v = CcxtVenue(exchange_settings(fx), [BTC, ETH], read_attempts=4, sleep=waits)
    v.reads.monotonic = waits.now
    await v.connect()
    yield v
    await v.close()


def buy(cid: str, qty: float = 0.01, **kw) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=BTC, side=Side.BUY, quantity=qty, **kw)


async def test_market_info_from_the_exchange_filters(venue):
    m = venue.market(BTC)
    assert (m.base, m.quote) == ("BTC", "USDT")
    assert m.amount_step == 0.00001 and m.price_step == 0.01
    assert m.min_qty == 0.00001 and m.min_notional == 5.0
    assert venue.market(ETH).amount_step == 0.0001
    assert venue.name == "binance"


async def test_connect_names_a_symbol_the_exchange_does_not_list(fx):
    v = CcxtVenue(exchange_settings(fx), [BTC, "DOGE/USDT"])
    try:
        with pytest.raises(VenueError, match="DOGE/USDT"):
            await v.connect()
    finally:
        await v.close()


async def test_build_exchange_from_settings(fx):
    s = exchange_settings(fx, options={**ccxt_options(), "maxRetriesOnFailure": 3}, timeout_ms=1234)
    ex = build_exchange(s)
    try:
        assert ex.timeout == 1234
        assert ex.options["maxRetriesOnFailure"] == 0  # ccxt never retries behind our back
        assert set(ex.urls["api"]) == {"public", "private"}
        assert ex.apiKey == fx.api_key and ex.secret == fx.secret
        assert ex.exceptions["exact"]["-1008"] is ex.exceptions["spot"]["exact"]["-1008"]
        assert build_exchange(s, credentials=False).apiKey in (None, "")
    finally:
        await ex.close()
    with pytest.raises(VenueError, match="exchange.id"):
        build_exchange(exchange_settings(fx, id="nosuchexchange"))
    with pytest.raises(VenueError, match="exchange.sandbox"):
        build_exchange(exchange_settings(fx, id="kraken", sandbox=True, api_urls={}))


async def test_closing_waits_for_tls_connections_only_when_there_can_be_some(fx):
    # ccxt sleeps timeout_on_exit (250 ms) after closing its session, for TLS connections to finish closing: an
    # engine on plain-http URLs (a local gateway) has none, and stops without it.
    plain = CcxtVenue(exchange_settings(fx), [BTC])
    await plain.connect()
    await plain.close()
    assert plain.exchange.timeout_on_exit == 0
    tls = CcxtVenue(exchange_settings(fx, api_urls={"public": "https://gateway.invalid/api/v3",
                                                    "private": fx.url + "/api/v3"}), [BTC])
    await tls.close()
    assert tls.exchange.timeout_on_exit == 250
    default = CcxtVenue(exchange_settings(fx, id="kraken", api_urls={}), [BTC])  # ccxt's own https URLs
    await default.close()
    assert default.exchange.timeout_on_exit == 250


async def test_market_order_round_trip(fx, venue):
    o = await venue.create_order(buy("m-1"))
    assert (o.client_order_id, o.status, o.filled, o.average) == ("m-1", "closed", 0.01, 30_000.0)
    assert o.exchange_id == str(fx.orders[0].order_id) and o.side is Side.BUY
    assert o.fee == pytest.approx(0.01 * fx.fee_rate * 30_000.0)  # paid in BTC, valued in USDT
    f = await venue.fetch_order("m-1", BTC)
    assert f is not None and (f.status, f.filled, f.exchange_id) == ("closed", 0.01, o.exchange_id)
    assert f.fee == pytest.approx(o.fee)  # an order query has no fee: it comes from the order's trades
    bal = await venue.fetch_balance()
    assert bal["USDT"] == pytest.approx(9_700.0) and bal["BTC"] == pytest.approx(0.00999)


async def test_sell_fee_is_in_quote(fx, venue):
    fx.balances["BTC"].free = 1.0
    o = await venue.create_order(OrderRequest("s-1", BTC, Side.SELL, 0.01))
    assert o.side is Side.SELL and o.fee == pytest.approx(300.0 * fx.fee_rate)


async def test_limit_order_open_then_cancelled(fx, venue):
    o = await venue.create_order(buy("l-1", type="limit", price=25_000.0))
    assert (o.status, o.filled, o.price, o.type) == ("open", 0.0, 25_000.0, "limit")
    assert [x.client_order_id for x in await venue.fetch_open_orders()] == ["l-1"]
    c = await venue.cancel_order("l-1", BTC)
    assert (c.client_order_id, c.status) == ("l-1", "canceled")
    assert fx.orders[0].status == "CANCELED" and await venue.fetch_open_orders() == []


async def test_open_orders_of_every_symbol(fx, venue):
    await venue.create_order(buy("a", type="limit", price=25_000.0))
    await venue.create_order(OrderRequest("b", ETH, Side.BUY, 0.01, type="limit", price=1_500.0))
    assert sorted(o.client_order_id for o in await venue.fetch_open_orders()) == ["a", "b"]
    assert [o.client_order_id for o in await venue.fetch_open_orders(ETH)] == ["b"]


async def test_partial_fill_then_cancel(fx, venue):
    fx.partial_fill_next(0.5)
    o = await venue.create_order(buy("p-1"))
    assert o.status == "open" and o.filled == pytest.approx(0.005)
    c = await venue.cancel_order("p-1", BTC)
    assert c.status == "canceled" and c.filled == pytest.approx(0.005)
    assert fx.orders[0].status == "CANCELED" and fx.orders[0].filled == pytest.approx(0.005)


async def test_cancel_of_a_filled_order_reports_it_filled(fx, venue):
    await venue.create_order(buy("f-1"))
    c = await venue.cancel_order("f-1", BTC)
    assert c.status == "closed" and c.filled == 0.01


async def test_cancel_of_an_unknown_order(venue):
    with pytest.raises(UnknownOrder):
        await venue.cancel_order("never", BTC)


async def test_fetch_order_is_none_for_an_unknown_id_after_one_request(fx, venue):
    assert await venue.fetch_order("never", BTC) is None
    assert len(fx.requests_to(GET_ORDER)) == 1  # OrderNotFound is final: not retried


# -- create_order: every fault, and never a second send --------------------------------------------------------

@pytest.mark.parametrize("kind, opts, exc, placed", [
    ("drop_after", {}, OrderInDoubt, 1),
    ("drop_before", {}, OrderInDoubt, 0),
    ("hang", {"seconds": 5, "execute": True}, OrderInDoubt, 1),
    ("hang", {"seconds": 5, "execute": False}, OrderInDoubt, 0),
    ("5xx_executed", {"status": 502}, OrderInDoubt, 1),
    ("5xx_executed", {"status": 503}, OrderInDoubt, 1),
    ("5xx_not_executed", {"status": 503}, OrderInDoubt, 0),
    ("error", {"status": 500, "code": -1001, "msg": "Internal error; unable to process your request."},
     OrderInDoubt, 0),
    ("error", {"status": 503, "code": -1006, "msg": "An unexpected response was received. Execution status "
                                                    "unknown."}, OrderInDoubt, 0),
    ("429", {"retry_after": 3}, VenueUnavailable, 0),
    ("418", {"retry_after": 120}, VenueUnavailable, 0),
])
async def test_create_order_faults(fx, venue, kind, opts, exc, placed):
    fx.fault(POST_ORDER, kind, **opts)
    with pytest.raises(exc) as info:
        await venue.create_order(buy("c-1"))
    assert len(fx.orders_with("c-1")) == placed
    assert len(fx.requests_to(POST_ORDER)) == 1  # never retried
    if exc is VenueUnavailable:
        assert not isinstance(info.value, OrderInDoubt)
        assert info.value.retry_after == opts["retry_after"]
    assert "c-1" in str(info.value)


async def test_an_exchanges_message_reaches_no_terminal_as_control_characters(fx, venue):
    """An exchange's (or a gateway's) words are quoted in errors, logs, pages and the console: its control and
    direction characters are shown as their escapes."""
    fx.fault("POST /api/v3/order", "error", status=400, code=-1013, msg="Bad\x1b[2J order \u202eevil\x07")
    with pytest.raises(VenueError) as info:
        await venue.create_order(buy("esc-1"))
    assert str(info.value).isprintable(), repr(str(info.value))
    assert r"Bad\x1b[2J order \u202eevil\x07" in str(info.value), str(info.value)


async def test_create_order_when_the_exchange_is_down(fx, venue):
    fx.down = True
    with pytest.raises(OrderInDoubt):
        await venue.create_order(buy("d-1"))
    assert fx.orders == [] and len(fx.requests_to(POST_ORDER)) == 1


async def test_create_order_final_errors(fx, venue):
    with pytest.raises(VenueError, match="insufficient balance") as info:
        await venue.create_order(buy("big", qty=1.0))
    assert not isinstance(info.value, VenueUnavailable)
    with pytest.raises(VenueError):
        await venue.create_order(buy("tiny", qty=0.0001 / 1000))  # below the amount precision
    with pytest.raises(VenueError, match="NOTIONAL"):
        await venue.create_order(buy("cheap", qty=0.0001))  # 3 USDT < 5 USDT minimum
    assert fx.orders == []


async def test_duplicate_client_id_while_open_is_an_order_in_doubt(fx, venue):
    await venue.create_order(buy("dup", type="limit", price=20_000.0))
    with pytest.raises(DuplicateOrder, match="Duplicate order sent") as info:
        await venue.create_order(buy("dup", type="limit", price=20_000.0))
    assert isinstance(info.value, OrderInDoubt)  # it exists: look it up, do not record a rejection
    assert [o.client_id for o in fx.orders] == ["dup"]


async def test_settle_window_is_its_own_setting(fx):
    venues = [CcxtVenue(exchange_settings(fx), [BTC]),  # default 10 s: ccxt's binance default recvWindow
              CcxtVenue(exchange_settings(fx, settle_window_ms=3000), [BTC]),
              # the receive window does not move it (a settle window below it is refused at start)
              CcxtVenue(exchange_settings(fx, options={**ccxt_options(), "recvWindow": 3000}), [BTC]),
              CcxtVenue(exchange_settings(fx), [BTC], settle_s=0.5)]
    assert [v.settle_s for v in venues] == [10.0, 3.0, 10.0, 0.5]
    for v in venues:
        await v.close()


async def test_create_order_stale_timestamp_is_refused_not_in_doubt(fx, venue):
    venue.exchange.options["timeDifference"] = 70_000
    with pytest.raises(VenueUnavailable) as info:
        await venue.create_order(buy("late"))
    assert not isinstance(info.value, OrderInDoubt) and fx.orders == []


async def test_create_order_before_connect_is_refused_without_sending(fx):
    v = CcxtVenue(exchange_settings(fx), [BTC])
    try:
        with pytest.raises(VenueError, match="before connect"):
            await v.create_order(buy("early"))
    finally:
        await v.close()
    assert fx.requests == []


# -- reads and cancels: retry transient failures only ----------------------------------------------------------

@pytest.mark.parametrize("kind, opts", [
    ("5xx_not_executed", {}), ("drop_before", {}), ("drop_after", {}),
    ("error", {"status": 500, "code": -1001, "msg": "Internal error; unable to process your request."}),
    ("hang", {"seconds": 5, "execute": True}),
])
async def test_reads_retry_through_transient_faults(fx, venue, waits, kind, opts):
    await venue.create_order(buy("r-1"))
    fx.fault(GET_ORDER, kind, times=2, **opts)
    o = await venue.fetch_order("r-1", BTC)
    assert o is not None and o.status == "closed"
    assert [r.status for r in fx.requests_to(GET_ORDER)][-1] == 200 and fx.pending_faults(GET_ORDER) == 0
    assert len(fx.requests_to(GET_ORDER)) == 3
    # A dropped connection too: each try is the read retry's, after its backoff (aiohttp sends none itself).
    assert waits.seconds == [0.2, 0.4]


async def test_reads_wait_what_retry_after_asks(fx, venue, waits):
    fx.fault("GET /api/v3/account", "429", retry_after=2)
    assert (await venue.fetch_balance())["USDT"] == 10_000.0
    assert waits.seconds == [2.0]


async def test_reads_give_up_when_retry_after_is_too_long(fx, venue, waits):
    fx.fault("GET /api/v3/account", "418", retry_after=600)
    with pytest.raises(VenueUnavailable) as info:
        await venue.fetch_balance()
    assert info.value.retry_after == 600 and waits.seconds == []
    assert len(fx.requests_to("GET /api/v3/account")) == 1


async def test_reads_give_up_after_the_last_attempt(fx, venue, waits):
    fx.fault("GET /api/v3/openOrders", "5xx_not_executed", times=10)
    with pytest.raises(VenueUnavailable):
        await venue.fetch_open_orders(BTC)
    assert len(fx.requests_to("GET /api/v3/openOrders")) == 4
    assert waits.seconds == [0.2, 0.4, 0.8]


async def test_each_retry_is_a_debug_line_not_a_warning(fx, venue, waits, caplog):
    # During an outage every call retries: a warning per attempt would bury the events that tell the operator what
    # happens (the venue's faults, the breaker) in the console's log pane.
    caplog.set_level(logging.DEBUG, logger="ffe_engine.venues.ccxt_venue")
    fx.fault("GET /api/v3/openOrders", "5xx_not_executed", times=10)
    with pytest.raises(VenueUnavailable):
        await venue.fetch_open_orders(BTC)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 3 and {r.levelno for r in retries} == {logging.DEBUG}


async def test_reads_do_not_retry_final_errors(fx, venue, waits):
    fx.fault("GET /api/v3/account", "error", status=400, code=-1121, msg="Invalid symbol.")
    with pytest.raises(VenueError) as info:
        await venue.fetch_balance()
    assert not isinstance(info.value, VenueUnavailable)
    assert len(fx.requests_to("GET /api/v3/account")) == 1 and waits.seconds == []


async def test_fetch_order_not_found_for_a_moment_answers_none(fx, venue):
    await venue.create_order(buy("settle"))
    fx.fault(GET_ORDER, "not_found_once")
    assert await venue.fetch_order("settle", BTC) is None
    assert (await venue.fetch_order("settle", BTC)).status == "closed"


async def test_cancel_retried_after_a_lost_answer_reports_cancelled(fx, venue):
    await venue.create_order(buy("k-1", type="limit", price=20_000.0))
    fx.fault(DELETE_ORDER, "drop_after")  # cancelled, answer lost; the retry hears "Unknown order sent."
    c = await venue.cancel_order("k-1", BTC)
    assert (c.client_order_id, c.status) == ("k-1", "canceled")
    assert len(fx.requests_to(DELETE_ORDER)) == 2 and fx.orders[0].status == "CANCELED"


async def test_cancel_retries_through_5xx(fx, venue):
    await venue.create_order(buy("k-2", type="limit", price=20_000.0))
    fx.fault(DELETE_ORDER, "5xx_not_executed")
    assert (await venue.cancel_order("k-2", BTC)).status == "canceled"
    assert len(fx.requests_to(DELETE_ORDER)) == 2


# -- secrets ---------------------------------------------------------------------------------------------------

async def test_no_credential_in_exception_messages_or_logs(fx, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_secret = "wr0ng-secret-Pq77"
    v = CcxtVenue(exchange_settings(fx, secret=wrong_secret), [BTC], read_attempts=2, sleep=Waits())
    try:
        await v.connect()
        errors: list[BaseException] = []
        with pytest.raises(VenueError) as info:
            await v.fetch_balance()  # -1022 bad signature
        errors.append(info.value)
        fx.fault("GET /api/v3/account", "hang", seconds=5, times=2)
        with pytest.raises(VenueUnavailable) as info2:
            await v.fetch_balance()  # timeouts: ccxt's message carries the signed URL
        errors.append(info2.value)
        with pytest.raises(VenueError) as info3:
            await v.create_order(buy("s-1"))
        errors.append(info3.value)
    finally:
        await v.close()
    assert "X-MBX-APIKEY" in caplog.text  # ccxt did log its request headers ...
    for text in [str(e) for e in errors] + [caplog.text]:
        assert fx.api_key not in text and wrong_secret not in text  # ... with the credentials masked
    for e in errors:
        assert "signature=" not in str(e) and "timestamp=" not in str(e)
        assert e.__cause__ is None and e.__suppress_context__  # no ccxt text chained into tracebacks
    assert "code -1022" in str(errors[0])


async def test_a_long_retry_after_holds_every_request_to_the_venue(fx, venue, waits):
    """An exchange that answers 418 (an IP ban) or 429 with a Retry-After bans for longer each time it is asked again
    before then: no read, cancel or order goes to it until that time, refused here at once as the exchange would."""
    fx.fault("GET /api/v3/klines", "418", retry_after=600)
    with pytest.raises(VenueUnavailable):
        await venue.fetch_ohlcv(BTC, "1m", None, 2)
    sent = len(fx.requests)
    calls = [lambda: venue.fetch_ohlcv(BTC, "1m", None, 2), venue.fetch_balance,
             lambda: venue.fetch_order("h-1", BTC), lambda: venue.fetch_open_orders(BTC),
             lambda: venue.cancel_order("h-1", BTC), lambda: venue.last_price(BTC),
             lambda: venue.create_order(buy("h-2"))]
    for call in calls:
        with pytest.raises(VenueUnavailable) as info:
            await call()
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 600
        assert not isinstance(info.value, OrderInDoubt)  # not sent: surely not placed
    assert len(fx.requests) == sent and waits.seconds == []


def every_request(venue) -> list:
    """A read, a lookup, a cancel and an order of each kind the engine sends."""
    return [lambda: venue.fetch_ohlcv(BTC, "1m", None, 2), venue.fetch_balance,
            lambda: venue.fetch_order("h-1", BTC), lambda: venue.fetch_open_orders(BTC),
            lambda: venue.cancel_order("h-1", BTC), lambda: venue.last_price(BTC),
            lambda: venue.create_order(buy("h-2"))]


@pytest.mark.parametrize("kind, code", [("418", None), ("429", -1003), ("429", -1034)],
                         ids=["ban", "request-weight", "not-told"])
async def test_a_ban_or_a_request_limit_on_an_order_holds_every_request_to_the_venue(fx, venue, waits, kind, code):
    """Binance's 418 bans the address, its 429 -1003 is the address's request weight used up: both cover every
    request, and the exchange lengthens the ban for each one sent during it. An order refused so (or with a rate
    limit not known to be on orders only) holds reads, lookups, cancels and orders alike, as a read's would."""
    fx.fault(POST_ORDER, kind, retry_after=600, **({} if code is None else {"code": code}))
    with pytest.raises(VenueUnavailable) as refused:
        await venue.create_order(buy("b-1"))
    assert refused.value.retry_after == 600 and not isinstance(refused.value, OrderInDoubt)
    assert venue.requests_held_until() is not None  # stored by the engine: a restart within it sends nothing
    sent = len(fx.requests)
    for call in every_request(venue):
        with pytest.raises(VenueUnavailable) as info:
            await call()
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 600
        assert not info.value.sent and not isinstance(info.value, OrderInDoubt)
    assert len(fx.requests) == sent and waits.seconds == [] and fx.orders == []
    waits.t += 600  # the Retry-After is over: requests go again
    assert venue.requests_held_until() is None
    assert (await venue.fetch_balance())["USDT"] == 10_000.0
    assert len(fx.requests) == sent + 1


async def test_a_request_ccxt_paced_past_a_retry_after_another_got_meanwhile_is_not_sent(fx, waits):
    """A request waits its turn in ccxt's pacing after the hold was looked at: a lookup asked while an order was on
    the wire went out just after the order's answer, a 429 -1003 covering every request (Binance lengthens a ban for
    each one sent during it). The hold is looked at again as the request leaves: not sent. (ccxt's pace here, 0.5 s,
    is longer than the order's answer takes on a loaded machine: the lookup leaves after it, as the case is.)"""
    v = CcxtVenue(exchange_settings(fx, rate_limit_ms=500), [BTC, ETH], read_attempts=1, sleep=waits)
    v.reads.monotonic = waits.now
    await v.connect()
    try:
        fx.fault(POST_ORDER, "429", retry_after=600)
        order = asyncio.ensure_future(v.create_order(buy("p-1")))
        await asyncio.sleep(0)  # the order asked first: ccxt sends it, and paces what is asked after it
        lookup = asyncio.ensure_future(v.fetch_order("p-1", BTC))
        answers = await asyncio.gather(order, lookup, return_exceptions=True)
        assert all(isinstance(a, VenueUnavailable) for a in answers), answers
        assert not answers[1].sent and answers[1].retry_after, answers[1]
        assert fx.requests_to(POST_ORDER) and not fx.requests_to("GET /api/v3/order")
    finally:
        await v.close()


async def test_fees_paid_in_a_coin_ffe_trades_are_said_to_take_that_position_s_coins(fx, venue, caplog):
    """Binance's BNB fee payment with BNB/USDT traded: the fees are left out of the books like any exchange token's,
    but here they take coins the books count toward that position, which reconciliation then finds missing after
    every trade. The warning says so, and what to do, not that the books stay the account's."""
    fx.fee_asset = "ETH"  # ETH/USDT is one of the venue's symbols
    fx.balances["ETH"] = Balance(1.0)
    with caplog.at_level("WARNING"):
        await venue.create_order(buy("f-1"))
    [said] = [r.getMessage() for r in caplog.records if "fees paid in ETH" in r.getMessage()]
    assert "which ffe trades (ETH/USDT)" in said and "engine.symbols" in said, said


async def test_a_read_dropped_after_a_ban_began_is_not_sent_again_inside_it(fx, venue, waits):
    """A balance read hangs at the exchange; meanwhile the candles' poll is answered 418 with a Retry-After (the
    address banned). Then the read's connection is dropped. aiohttp sends a GET that failed so on a reused
    connection again at once, below ccxt, where no hold is looked at: it reached the exchange inside the ban, which
    the exchange lengthens for each request sent during it. Nothing is sent until the ban ends."""
    assert (await venue.fetch_balance())["USDT"] == 10_000.0  # a kept-alive connection, as a running engine has
    fx.fault("GET /api/v3/account", "hang", seconds=0.5, execute=False)
    read = asyncio.ensure_future(venue.fetch_balance())
    while not any(r.route == "GET /api/v3/account" and r.fault == "hang" for r in fx.requests):
        await asyncio.sleep(0.01)
    fx.fault("GET /api/v3/klines", "418", retry_after=600)
    with pytest.raises(VenueUnavailable):
        await venue.fetch_ohlcv(BTC, "1m", None, 2)
    banned = len(fx.requests)
    with pytest.raises(VenueUnavailable) as held:
        await read
    assert held.value.retry_after, held.value
    assert [r.route for r in fx.requests[banned:]] == [], "a request reached the exchange inside its ban"


async def test_an_order_count_limit_on_an_order_leaves_every_other_request_free(fx, venue, waits):
    """Binance's 429 -1015 ("Too many new orders") is the account's limit on new orders, seconds up to a day long:
    it holds no read, lookup or cancel (the order path holds the orders)."""
    resting = await venue.create_order(buy("r-1", type="limit", price=20_000.0))
    assert resting.status == "open"
    fx.fault(POST_ORDER, "429", retry_after=86_400, code=-1015)
    with pytest.raises(VenueUnavailable) as refused:
        await venue.create_order(buy("n-1"))
    assert refused.value.retry_after == 86_400 and "Too many new orders" in str(refused.value), refused.value
    assert venue.requests_held_until() is None
    sent = len(fx.requests)
    assert len(await venue.fetch_ohlcv(BTC, "1m", None, 2)) == 2
    assert (await venue.fetch_balance())["USDT"] > 0
    assert (await venue.fetch_order("r-1", BTC)).status == "open"
    assert [o.client_order_id for o in await venue.fetch_open_orders(BTC)] == ["r-1"]
    assert (await venue.cancel_order("r-1", BTC)).status == "canceled"
    assert fx.open_order("r-1") is None
    routes = [r.route for r in fx.requests[sent:]]
    for route in ("GET /api/v3/klines", "GET /api/v3/account", GET_ORDER, "GET /api/v3/openOrders", DELETE_ORDER):
        assert route in routes, routes
    assert waits.seconds == []


async def test_a_short_retry_after_is_waited_for_by_the_next_request(fx, venue, waits):
    fx.fault("GET /api/v3/klines", "429", retry_after=600)
    with pytest.raises(VenueUnavailable):
        await venue.fetch_ohlcv(BTC, "1m", None, 2)
    venue.reads.hold_until -= 598  # two seconds left: waited for, then sent
    assert (await venue.fetch_balance())["USDT"] == 10_000.0
    assert len(waits.seconds) == 1 and 0 < waits.seconds[0] <= 2.0


async def test_a_retry_waits_for_a_retry_after_another_request_got_while_it_backed_off(fx, venue, waits):
    """A read fails (a 5xx) and backs off; meanwhile another request is answered 429 with a Retry-After of 3 s. The
    retry is not sent before that time either: an exchange bans an address that goes on asking (order-path.md)."""
    fx.fault("GET /api/v3/account", "5xx_not_executed")

    async def backoff_meanwhile_banned(s: float) -> None:
        await waits(s)
        if len(waits.seconds) == 1:
            venue.reads.hold(3.0)  # another request's 429, answered while this one backs off

    venue.reads.sleep = backoff_meanwhile_banned
    assert (await venue.fetch_balance())["USDT"] == 10_000.0
    assert len(waits.seconds) == 2 and 2.5 < waits.seconds[1] <= 3.0, waits.seconds


async def test_a_retry_waits_out_a_longer_retry_after_another_request_got_before_its_own(fx, venue, waits):
    """Another request is given Retry-After 3 s while this one is on the wire; this one's own answer is a 429 with
    Retry-After 1 s. Its retry waits for the longer hold, not only its own: nothing is sent before it ends."""
    fx.fault("GET /api/v3/account", "429", retry_after=1)

    def meanwhile_banned(rec) -> None:
        if rec.route == "GET /api/v3/account" and not waits.seconds:
            venue.reads.hold(3.0)  # another request's 429, answered while this one is on the wire

    fx.on_request = meanwhile_banned
    assert (await venue.fetch_balance())["USDT"] == 10_000.0
    assert sum(waits.seconds) == pytest.approx(3.0), waits.seconds


async def test_a_quantity_off_the_exchange_s_amount_step_is_not_sent_cut_to_it(fx, venue):
    """The order path journals a quantity on the exchange's amount step. One off it (an order in doubt sent again
    after the exchange changed its step) is refused before it is sent: ccxt would send it cut to the step, under the
    same client order id, an order other than the one journaled."""
    with pytest.raises(VenueError, match="amount step"):
        await venue.create_order(buy("odd", qty=0.0100005))
    assert fx.requests_to(POST_ORDER) == []
    await venue.create_order(buy("even", qty=0.01))
    assert len(fx.requests_to(POST_ORDER)) == 1
