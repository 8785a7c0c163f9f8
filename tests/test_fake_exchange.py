"""The fake Binance spot exchange, driven by real ccxt over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from fake_exchange import FakeBinance, binance_client, kline
from ffe_engine.venues.ccxt_loader import errors as ccxt_errors

BTC = "BTC/USDT"


@pytest.fixture
async def fx():
    async with FakeBinance() as fake:
        yield fake


@pytest.fixture
async def ex(fx):
    exchange = binance_client(fx, timeout_ms=1000)
    await exchange.load_markets()
    yield exchange
    await exchange.close()


async def test_markets_come_from_exchange_info_filters(ex):
    assert set(ex.markets) == {"BTC/USDT", "ETH/USDT"}
    m = ex.markets[BTC]
    assert m["spot"] and m["id"] == "BTCUSDT"
    assert m["precision"]["amount"] == 0.00001 and m["precision"]["price"] == 0.01
    assert m["limits"]["amount"]["min"] == 0.00001 and m["limits"]["cost"]["min"] == 5.0


async def test_balance_is_signed_and_read(fx, ex):
    bal = await ex.fetch_balance()
    assert bal["total"]["USDT"] == 10_000.0 and bal["total"]["BTC"] == 0.0
    req = fx.requests_to("GET /api/v3/account")[-1]
    assert "signature" in req.params and "timestamp" in req.params


async def test_market_order_fills_at_the_current_price_against_balances(fx, ex):
    fx.set_price("BTCUSDT", 25_000.0)
    o = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "c-1"})
    assert o["status"] == "closed" and o["clientOrderId"] == "c-1"
    assert o["filled"] == 0.01 and o["average"] == 25_000.0
    assert [(x.client_id, x.status, x.filled) for x in fx.orders] == [("c-1", "FILLED", 0.01)]
    assert fx.balances["USDT"].total == pytest.approx(10_000.0 - 250.0)
    assert fx.balances["BTC"].total == pytest.approx(0.01 * (1 - fx.fee_rate))
    fetched = await ex.fetch_order(None, BTC, {"clientOrderId": "c-1"})
    assert fetched["id"] == o["id"] and fetched["status"] == "closed"
    sell = await ex.create_order(BTC, "market", "sell", 0.005, None, {"clientOrderId": "c-2"})
    assert sell["status"] == "closed"
    assert fx.balances["USDT"].total == pytest.approx(10_000.0 - 250.0 + 125.0 * (1 - fx.fee_rate))


async def test_limit_order_rests_until_the_price_crosses(fx, ex):
    fx.set_price("BTCUSDT", 30_000.0)
    o = await ex.create_order(BTC, "limit", "buy", 0.01, 29_000.0, {"clientOrderId": "lim-1"})
    assert o["status"] == "open"
    assert fx.balances["USDT"].locked == pytest.approx(290.0)
    assert [x["clientOrderId"] for x in await ex.fetch_open_orders(BTC)] == ["lim-1"]
    fx.set_price("BTCUSDT", 29_500.0)
    assert fx.open_order("lim-1") is not None
    fx.set_price("BTCUSDT", 28_900.0)
    done = await ex.fetch_order(None, BTC, {"clientOrderId": "lim-1"})
    assert done["status"] == "closed" and done["average"] == 29_000.0
    assert fx.balances["USDT"].locked == 0.0 and fx.balances["USDT"].total == pytest.approx(10_000.0 - 290.0)


async def test_cancel_by_client_id_releases_funds(fx, ex):
    await ex.create_order(BTC, "limit", "buy", 0.01, 20_000.0, {"clientOrderId": "lim-2"})
    c = await ex.cancel_order(None, BTC, {"clientOrderId": "lim-2"})
    assert c["status"] == "canceled" and c["info"]["origClientOrderId"] == "lim-2"
    assert fx.orders[0].status == "CANCELED"
    assert fx.balances["USDT"].free == 10_000.0 and fx.balances["USDT"].locked == 0.0
    with pytest.raises(ccxt_errors.OrderNotFound):  # cancelling it again: -2011
        await ex.cancel_order(None, BTC, {"clientOrderId": "lim-2"})


async def test_partial_fill_then_cancel_keeps_the_filled_part(fx, ex):
    fx.set_price("BTCUSDT", 30_000.0)
    fx.partial_fill_next(0.4)
    o = await ex.create_order(BTC, "limit", "buy", 0.01, 30_100.0, {"clientOrderId": "p-1"})
    assert o["status"] == "open" and o["filled"] == pytest.approx(0.004)
    c = await ex.cancel_order(None, BTC, {"clientOrderId": "p-1"})
    assert c["status"] == "canceled" and c["filled"] == pytest.approx(0.004)
    assert fx.balances["USDT"].locked == pytest.approx(0.0)
    assert fx.balances["USDT"].total == pytest.approx(10_000.0 - 0.004 * 30_000.0)


async def test_unknown_order_is_order_not_found(ex):
    with pytest.raises(ccxt_errors.OrderNotFound):
        await ex.fetch_order(None, BTC, {"clientOrderId": "never-sent"})


async def test_insufficient_balance_is_rejected_without_an_order(fx, ex):
    with pytest.raises(ccxt_errors.InsufficientFunds):
        await ex.create_order(BTC, "market", "buy", 1.0, None, {"clientOrderId": "big"})
    assert fx.orders == []


async def test_lot_size_filter(fx, ex):
    fx.set_price("BTCUSDT", 30_000.0)
    with pytest.raises(ccxt_errors.InvalidOrder):
        await ex.privatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                   "quantity": "0.000015", "newClientOrderId": "odd"})
    assert fx.orders == []


async def test_duplicate_client_id_is_refused_only_while_the_first_order_is_open(fx, ex):
    fx.set_price("BTCUSDT", 30_000.0)
    await ex.create_order(BTC, "limit", "buy", 0.01, 25_000.0, {"clientOrderId": "dup"})
    with pytest.raises(ccxt_errors.InvalidOrder, match="Duplicate order sent"):
        await ex.create_order(BTC, "limit", "buy", 0.01, 25_000.0, {"clientOrderId": "dup"})
    assert len(fx.orders_with("dup")) == 1
    await ex.cancel_order(None, BTC, {"clientOrderId": "dup"})
    await ex.create_order(BTC, "limit", "buy", 0.01, 25_000.0, {"clientOrderId": "dup"})
    assert [o.status for o in fx.orders_with("dup")] == ["CANCELED", "NEW"]
    # a filled market order's id is free again: a blind resend trades twice
    await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "mkt"})
    await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "mkt"})
    assert [o.status for o in fx.orders_with("mkt")] == ["FILLED", "FILLED"]


async def test_wrong_secret_fails_the_signature_check(fx):
    bad = binance_client(fx, secret="not-the-secret")
    try:
        with pytest.raises(ccxt_errors.AuthenticationError):
            await bad.fetch_balance()
    finally:
        await bad.close()
    assert fx.requests_to("GET /api/v3/account")[-1].status == 400


async def test_wrong_api_key_is_refused(fx):
    bad = binance_client(fx, api_key="someone-else")
    try:
        with pytest.raises(ccxt_errors.AuthenticationError):
            await bad.fetch_balance()
    finally:
        await bad.close()
    assert fx.requests_to("GET /api/v3/account")[-1].status == 401


async def test_stale_timestamp_is_outside_the_recv_window(fx, ex):
    ex.options["timeDifference"] = 70_000  # ccxt signs with a timestamp 70 s in the past
    with pytest.raises(ccxt_errors.InvalidNonce):
        await ex.fetch_balance()


async def test_unknown_route_answers_1020_which_is_final(fx, ex):
    with pytest.raises(ccxt_errors.BadRequest) as info:
        await ex.publicGetAvgPrice({"symbol": "BTCUSDT"})
    assert not isinstance(info.value, ccxt_errors.OperationFailed)
    assert fx.requests_to("GET /api/v3/avgPrice")[-1].status == 400


async def test_other_api_sections_fail_before_any_network_io(fx, ex):
    before = len(fx.requests)
    with pytest.raises(ccxt_errors.NotSupported):
        await ex.sapiGetCapitalConfigGetall()
    with pytest.raises(ccxt_errors.NotSupported):
        await ex.fapiPublicGetExchangeInfo()
    assert len(fx.requests) == before


async def test_klines_are_deterministic_and_include_the_open_candle(fx, ex):
    now = 1_700_000_000_000 + 25_000  # 25 s into a minute
    fx.market_clock = lambda: now
    rows = await ex.fetch_ohlcv(BTC, "1m", limit=4)
    open_ms = now // 60_000 * 60_000
    assert [r[0] for r in rows] == [open_ms - 180_000, open_ms - 120_000, open_ms - 60_000, open_ms]
    for r in rows[:-1]:
        assert tuple(r) == pytest.approx(kline("BTCUSDT", r[0], 60_000))
    since = await ex.fetch_ohlcv(BTC, "1m", since=open_ms - 120_000, limit=10)
    assert [r[0] for r in since] == [open_ms - 120_000, open_ms - 60_000, open_ms]


async def test_ticker_follows_set_price(fx, ex):
    fx.set_price("ETHUSDT", 2_345.5)
    t = await ex.fetch_ticker("ETH/USDT")
    assert t["last"] == 2_345.5


# -- faults ------------------------------------------------------------------------------------------------------

async def test_drop_after_places_the_order_and_loses_the_answer(fx, ex):
    fx.fault("POST /api/v3/order", "drop_after")
    with pytest.raises(ccxt_errors.NetworkError):
        await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "lost"})
    assert [o.status for o in fx.orders_with("lost")] == ["FILLED"]
    assert fx.requests_to("POST /api/v3/order")[-1].status is None


async def test_hang_times_the_client_out_with_or_without_execution(fx, ex):
    fx.fault("POST /api/v3/order", "hang", seconds=5, execute=True)
    fx.fault("POST /api/v3/order", "hang", seconds=5, execute=False)
    with pytest.raises(ccxt_errors.RequestTimeout):
        await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "h-1"})
    with pytest.raises(ccxt_errors.RequestTimeout):
        await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "h-2"})
    assert len(fx.orders_with("h-1")) == 1 and fx.orders_with("h-2") == []


@pytest.mark.parametrize("status", [502, 503])
async def test_5xx_after_or_without_execution(fx, ex, status):
    fx.fault("POST /api/v3/order", "5xx_executed", status=status)
    fx.fault("POST /api/v3/order", "5xx_not_executed", status=status)
    for cid in ("x-1", "x-2"):
        with pytest.raises(ccxt_errors.ExchangeNotAvailable):
            await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": cid})
    assert len(fx.orders_with("x-1")) == 1 and fx.orders_with("x-2") == []
    assert [r.status for r in fx.requests_to("POST /api/v3/order")] == [status, status]


@pytest.mark.parametrize("kind", ["429", "418"])
async def test_rate_limit_answers_carry_retry_after(fx, ex, kind):
    fx.fault("POST /api/v3/order", kind, retry_after=7)
    with pytest.raises(ccxt_errors.DDoSProtection):
        await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "rl"})
    assert ex.last_response_headers["Retry-After"] == "7"
    assert fx.orders == []


@pytest.mark.parametrize("kind, code, said", [("429", None, -1003), ("418", None, -1003), ("429", -1015, -1015)])
async def test_rate_limit_answers_say_binance_s_code(fx, ex, kind, code, said):
    """-1003 (the address's request weight) unless the fault names another code, -1015 for the account's new
    orders."""
    fx.fault("POST /api/v3/order", kind, retry_after=7, **({} if code is None else {"code": code}))
    with pytest.raises(ccxt_errors.DDoSProtection) as info:
        await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "rl"})
    assert f'"code": {said}' in str(info.value) or f'"code":{said}' in str(info.value), str(info.value)
    assert ("Too many new orders" in str(info.value)) is (said == -1015), str(info.value)


async def test_not_found_once_then_found(fx, ex):
    await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "settle"})
    fx.fault("GET /api/v3/order", "not_found_once")
    with pytest.raises(ccxt_errors.OrderNotFound):
        await ex.fetch_order(None, BTC, {"clientOrderId": "settle"})
    assert (await ex.fetch_order(None, BTC, {"clientOrderId": "settle"}))["status"] == "closed"


async def test_stale_reads_answer_the_books_before_their_last_change(fx, ex):
    fx.set_price("BTCUSDT", 30_000.0)
    await ex.create_order(BTC, "limit", "buy", 0.01, 29_000.0, {"clientOrderId": "lag"})
    for route in ("GET /api/v3/order", "GET /api/v3/openOrders", "GET /api/v3/account"):
        fx.fault(route, "stale")
    with pytest.raises(ccxt_errors.OrderNotFound):  # its last change is its creation
        await ex.fetch_order(None, BTC, {"clientOrderId": "lag"})
    assert await ex.fetch_open_orders(BTC) == []
    assert (await ex.fetch_balance())["total"]["USDT"] == 10_000.0 and fx.balances["USDT"].free < 10_000.0
    fx.set_price("BTCUSDT", 28_000.0)  # it fills
    for route in ("GET /api/v3/order", "GET /api/v3/openOrders", "GET /api/v3/account", "GET /api/v3/myTrades"):
        fx.fault(route, "stale")
    before = await ex.fetch_order(None, BTC, {"clientOrderId": "lag"})
    assert before["status"] == "open" and before["filled"] == 0.0
    assert [o["clientOrderId"] for o in await ex.fetch_open_orders(BTC)] == ["lag"]
    assert (await ex.fetch_balance())["total"]["BTC"] == 0.0
    assert await ex.fetch_my_trades(BTC) == []
    assert (await ex.fetch_order(None, BTC, {"clientOrderId": "lag"}))["status"] == "closed"  # the fault used
    assert len(await ex.fetch_my_trades(BTC)) == 1


async def test_a_stale_read_of_an_order_shows_it_as_it_stood_a_lag_ago_whatever_changed_since(fx, ex):
    # An order cancelled longer ago than the replica's lag reads cancelled, though another order changed the books
    # just now; one placed longer ago and never changed since reads as it is.
    fx.set_price("BTCUSDT", 30_000.0)
    await ex.create_order(BTC, "limit", "buy", 0.01, 29_000.0, {"clientOrderId": "old"})
    await ex.create_order(BTC, "limit", "buy", 0.01, 28_000.0, {"clientOrderId": "resting"})
    await ex.cancel_order(None, BTC, {"clientOrderId": "old"})
    await asyncio.sleep(0.4)
    await ex.create_order(BTC, "limit", "buy", 0.01, 27_000.0, {"clientOrderId": "new"})
    for cid, status in (("old", "canceled"), ("resting", "open")):
        fx.fault("GET /api/v3/order", "stale", seconds=0.3)
        assert (await ex.fetch_order(None, BTC, {"clientOrderId": cid}))["status"] == status, cid
    fx.fault("GET /api/v3/order", "stale", seconds=0.3)
    with pytest.raises(ccxt_errors.OrderNotFound):  # newer than the lag
        await ex.fetch_order(None, BTC, {"clientOrderId": "new"})


async def test_a_stale_read_lags_by_its_seconds_and_then_the_replica_has_caught_up(fx, ex):
    await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "bought"})
    fx.fault("GET /api/v3/account", "stale", seconds=0.3)
    assert (await ex.fetch_balance())["total"]["BTC"] == 0.0  # the buy is newer than the lag
    await asyncio.sleep(0.4)
    fx.fault("GET /api/v3/account", "stale", seconds=0.3)
    assert (await ex.fetch_balance())["total"]["BTC"] == pytest.approx(0.01 - 0.00001)  # caught up (less the fee)
    assert [r.fault for r in fx.requests_to("GET /api/v3/account")] == ["stale", "stale"]


async def test_no_cost_answers_say_how_much_filled_but_not_for_how_much(fx, ex):
    fx.set_price("BTCUSDT", 30_000.0)
    fx.fault("POST /api/v3/order", "no_cost")
    placed = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "terse"})
    assert placed["filled"] == 0.01 and placed["cost"] is None and placed["average"] is None
    assert placed["trades"] == [] and not placed["fees"]
    fx.fault("GET /api/v3/order", "no_cost")
    looked = await ex.fetch_order(None, BTC, {"clientOrderId": "terse"})
    assert looked["filled"] == 0.01 and looked["average"] is None
    whole = await ex.fetch_order(None, BTC, {"clientOrderId": "terse"})  # the fault used
    assert whole["average"] == pytest.approx(fx.orders[0].quote_filled / 0.01)
    assert len(await ex.fetch_my_trades(BTC)) == 1  # the trades say what it cost


async def test_trade_lists_can_name_a_trade_twice_out_of_order_without_ids_or_one_the_order_did_not_make(fx, ex):
    fx.book_levels = 2
    ex.enableLastJsonResponse = True
    fx.fault("POST /api/v3/order", "trade_twice")
    placed = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "twice"})
    first, second = (str(t.trade_id) for t in fx.orders[0].trades)
    assert sorted(t["id"] for t in placed["trades"]) == [first, first, second]  # (ccxt sorts trades by time)
    fx.fault("GET /api/v3/myTrades", "trade_twice", trade=int(second), shuffle=True)
    assert sorted(t["id"] for t in await ex.fetch_my_trades(BTC)) == [first, second, second]
    assert [r["id"] for r in ex.last_json_response] == [int(second), int(second), int(first)]  # as answered
    fx.fault("GET /api/v3/myTrades", "trade_twice", ids=False)
    listed = await ex.fetch_my_trades(BTC)
    assert [t["id"] for t in listed] == [None] * 3 and listed[0]["amount"] == listed[2]["amount"]
    fx.fault("GET /api/v3/myTrades", "extra_trade")
    extra = await ex.fetch_my_trades(BTC)
    assert len({t["id"] for t in extra}) == 3 and sum(t["amount"] for t in extra) > 0.01
    assert [t["id"] for t in await ex.fetch_my_trades(BTC)] == [first, second]  # the faults used


async def test_a_market_order_filled_later_is_answered_open_and_fills_at_the_price_then(fx, ex):
    fx.set_price("BTCUSDT", 30_000.0)
    fx.fault("POST /api/v3/order", "fill_later", seconds=0.3)
    placed = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "later"})
    assert placed["status"] == "open" and placed["filled"] == 0.0
    assert (await ex.fetch_balance())["used"]["USDT"] == pytest.approx(300.0)  # held for it meanwhile
    assert [o["clientOrderId"] for o in await ex.fetch_open_orders(BTC)] == ["later"]
    fx.set_price("BTCUSDT", 31_000.0)
    await asyncio.sleep(0.5)
    filled = await ex.fetch_order(None, BTC, {"clientOrderId": "later"})
    assert filled["status"] == "closed" and filled["filled"] == 0.01 and filled["average"] == 31_000.0
    balance = await ex.fetch_balance()
    assert balance["total"]["USDT"] == pytest.approx(10_000.0 - 310.0) and balance["used"]["USDT"] == 0.0
    fx.fault("POST /api/v3/order", "fill_later", seconds=0.3)
    await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "cancelled"})
    await ex.cancel_order(None, BTC, {"clientOrderId": "cancelled"})
    await asyncio.sleep(0.5)
    assert fx.orders[-1].status == "CANCELED" and fx.orders[-1].filled == 0.0  # cancelled first: never filled


async def test_fault_times_and_error_kind(fx, ex):
    fx.fault("GET /api/v3/account", "error", status=500, code=-1001, msg="Internal error; unable to process.",
             times=2)
    assert fx.pending_faults("GET /api/v3/account") == 2
    for _ in range(2):
        with pytest.raises(ccxt_errors.OperationFailed):
            await ex.fetch_balance()
    assert (await ex.fetch_balance())["total"]["USDT"] == 10_000.0
    assert [r.fault for r in fx.requests_to("GET /api/v3/account")] == ["error", "error", None]
    with pytest.raises(ValueError):
        fx.fault("GET /api/v3/account", "explode")


async def test_down_drops_every_request_until_back(fx, ex):
    fx.down = True
    with pytest.raises(ccxt_errors.ExchangeNotAvailable):
        await ex.fetch_balance()
    fx.down_status = 503
    with pytest.raises(ccxt_errors.ExchangeNotAvailable):
        await ex.fetch_ticker(BTC)
    fx.down = False
    assert (await ex.fetch_balance())["total"]["USDT"] == 10_000.0
