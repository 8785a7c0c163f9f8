"""What an answer to a new order proves, on the order path wired to the fake Binance through real ccxt.

ccxt raises an error from the HTTP status alone when the body carries no error of the exchange's (a proxy's,
captive portal's or CDN's page): 401, 407 and 511 as AuthenticationError, 422 as ExchangeError, 418 and 429 as a
rate limit, the rest as an exchange not available. Such an answer says nothing of whether the order was placed: the
order is in doubt and looked up by its client order id, whether the request had executed or not. Only the
exchange's own refusal, its code and message in the body it wrote, ends an order `rejected`.
"""

from __future__ import annotations

import pytest

from ffe_engine.model import OrderReason, OrderStatus, Side
from ffe_engine.risk import OrderIntent
from ffe_engine.venues.base import VenueError
from ffe_engine.venues.ccxt_loader import exchange_class
from test_live_faults import (BTC, GET_ORDER, POST_ORDER, assert_journal_filled,  # noqa: F401
                              assert_one_filled_order, fx, make_desk)

# Every status ccxt's binance maps to an error from the status alone: the base Exchange's table, which binance keeps,
# and 418 and 429, which binance's own error handler maps whatever the body.
STATUS_ONLY = sorted({int(s) for s in exchange_class("binance").httpExceptions} | {418, 429})


def test_the_statuses_are_ccxt_s():
    # The table read above is ccxt's own; these are the ones a refusal was once taken from.
    assert {401, 407, 422, 511, 418, 429, 400, 403, 404, 500, 502, 503, 504} <= set(STATUS_ONLY)


@pytest.mark.parametrize("executed", [True, False], ids=["executed", "not_executed"])
@pytest.mark.parametrize("status", STATUS_ONLY)
async def test_a_status_only_answer_to_a_buy_leaves_it_in_doubt(fx, make_desk, status, executed):
    desk = await make_desk()
    fx.fault(POST_ORDER, "5xx_executed" if executed else "5xx_not_executed", status=status)
    sub = await desk.buy()
    o = sub.order
    assert sub.accepted and o.status is OrderStatus.IN_DOUBT, (o.status, o.error)
    assert f" {status} " in o.error, o.error
    assert desk.breaker.failures == 1  # no answer from the exchange: a failure of the venue's
    await desk.resolve(o)
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)
    # executed: found by its client order id, never sent again; not executed: sent again once with the same id
    assert desk.sent_ids() == [o.client_order_id] * (1 if executed else 2)


async def sale_executed_and_answered(desk, fx, **fault):
    """A position bought, then sold whole with its answer faulted by `fault` (the sale executed): the sale in doubt,
    then found filled by its client order id, and nothing left in the books or the account. The buy's order."""
    bought = (await desk.buy()).order
    held = desk.pf.positions[BTC].quantity
    fx.fault(POST_ORDER, "5xx_executed", **fault)
    sub = await desk.path.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=held, reason=OrderReason.OPERATOR,
                                             ref_price=30_000.0))
    o = sub.order
    assert sub.accepted and o.status is OrderStatus.IN_DOUBT, (o.status, o.error)
    await desk.resolve(o)
    assert (o.status, o.filled) == (OrderStatus.FILLED, pytest.approx(held))
    assert BTC not in desk.pf.positions and fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)
    assert desk.sent_ids() == [bought.client_order_id, o.client_order_id]
    return bought


@pytest.mark.parametrize("status", STATUS_ONLY)
async def test_a_sell_executed_and_answered_by_status_alone_leaves_no_coins_in_the_books(fx, make_desk, status):
    bought = await sale_executed_and_answered(await make_desk(), fx, status=status)
    assert bought.status is OrderStatus.FILLED
    assert [(x.side, x.status) for x in fx.orders] == [("BUY", "FILLED"), ("SELL", "FILLED")]


@pytest.mark.parametrize("status, code, msg, said", [
    (401, -2015, "Invalid API-key, IP, or permissions for action.", "AuthenticationError"),
    (400, -2010, "Account has insufficient balance for requested action.", "InsufficientFunds"),
    (422, -1013, "Filter failure: LOT_SIZE", "InvalidOrder"),
    (511, -2015, "Invalid API-key, IP, or permissions for action.", "AuthenticationError"),
])
async def test_the_exchange_s_own_refusal_ends_the_order_rejected(fx, make_desk, status, code, msg, said):
    # Its code and message in the body it wrote, whatever the status: a refusal, final, the venue healthy.
    desk = await make_desk()
    fx.fault(POST_ORDER, "error", status=status, code=code, msg=msg)
    sub = await desk.buy()
    o = sub.order
    assert not sub.accepted and o.status is OrderStatus.REJECTED, (o.status, o.error)
    assert said in o.error, o.error
    assert desk.breaker.failures == 0
    await desk.path.poll()
    assert fx.orders == [] and desk.sent_ids() == [o.client_order_id]
    (journaled,) = await desk.journal(o.client_order_id)
    assert journaled.status is OrderStatus.REJECTED


async def test_a_wrong_api_key_is_a_refusal(fx, make_desk):
    # The exchange's real answer to a key it does not know: 401 with its code -2015. Nothing placed, nothing to look
    # up, and the breaker does not count it (the venue answered).
    desk = await make_desk()
    desk.venue.exchange.apiKey = "someone-else"
    sub = await desk.buy()
    o = sub.order
    assert not sub.accepted and o.status is OrderStatus.REJECTED, (o.status, o.error)
    assert "AuthenticationError: code -2015" in o.error, o.error
    assert [r.status for r in fx.requests_to(POST_ORDER)] == [401]
    assert fx.orders == [] and desk.breaker.failures == 0


async def test_a_rate_limit_page_without_the_exchange_s_code_keeps_its_retry_after_and_the_order_in_doubt(fx,
                                                                                                          make_desk):
    # A 429 page (no Binance code) with a Retry-After, after the order executed: the wait it asks for is kept, for
    # every request (the kind of limit is not told) and for orders, and the order is looked up once it is over.
    desk = await make_desk()
    fx.fault(POST_ORDER, "5xx_executed", status=429, page_retry_after=1)
    sub = await desk.buy()
    o = sub.order
    assert sub.accepted and o.status is OrderStatus.IN_DOUBT, (o.status, o.error)
    assert desk.path.held_until() is not None and desk.venue.requests_held_until() is not None
    await desk.resolve(o)
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)
    assert desk.sent_ids() == [o.client_order_id]



# A gateway's error page written in JSON: Binance's own error carries both its code, a negative integer, and its
# message, "msg". None of these is: a code of the gateway's own (an HTTP status, which Binance never uses as a code)
# with or without a message, or a message alone that ccxt matches to an exchange's error (insufficient funds, a
# filter failure).
GATEWAY_PAGES = {
    "gateway_code": {"code": 503, "message": "Service Temporarily Unavailable"},
    "http_code_and_msg": {"code": 503, "msg": "Service Unavailable"},
    "msg_alone": {"msg": "Account has insufficient balance for requested action."},
    "filter_msg_alone": {"msg": "Filter failure: LOT_SIZE"},
}


@pytest.mark.parametrize("page", sorted(GATEWAY_PAGES))
@pytest.mark.parametrize("status", [400, 401, 429, 503])
async def test_a_json_gateway_page_answering_an_executed_buy_leaves_it_in_doubt(fx, make_desk, status, page):
    desk = await make_desk()
    fx.fault(POST_ORDER, "5xx_executed", status=status, page_json=GATEWAY_PAGES[page])
    sub = await desk.buy()
    o = sub.order
    assert sub.accepted and o.status is OrderStatus.IN_DOUBT, (o.status, o.error)
    assert desk.breaker.failures == 1  # no answer from the exchange: a failure of the venue's
    await desk.resolve(o)
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)
    assert desk.sent_ids() == [o.client_order_id]  # found by its client order id, never sent again


@pytest.mark.parametrize("status", [401, 503])
async def test_a_json_gateway_page_answering_an_executed_sale_leaves_no_coins_in_the_books(fx, make_desk, status):
    await sale_executed_and_answered(await make_desk(), fx, status=status, page_json=GATEWAY_PAGES["gateway_code"])


KEY_REFUSED = dict(status=401, code=-2015, msg="Invalid API-key, IP, or permissions for action.")


async def test_the_key_refused_after_it_worked_is_a_refusal_the_breaker_does_not_count(fx, make_desk):
    # Once a client has made one authenticated call, ccxt's binance raises the exchange's -2015 as DDoSProtection (a
    # temporary ban, it guesses), not AuthenticationError. The exchange's code says what it is: its refusal of the
    # key, final, the order not placed, the venue healthy. Three in a row do not open the breaker, and the next
    # order, the key taken again, goes.
    desk = await make_desk(threshold=3)
    await desk.venue.fetch_balance()  # an authenticated call that works
    for _ in range(3):
        fx.fault(POST_ORDER, "error", **KEY_REFUSED)
        sub = await desk.buy()
        o = sub.order
        assert not sub.accepted and o.status is OrderStatus.REJECTED, (o.status, o.error)
        assert "-2015" in o.error, o.error
    assert (desk.breaker.state, desk.breaker.failures) == ("closed", 0)
    assert fx.orders == [] and [r.status for r in fx.requests_to(POST_ORDER)] == [401] * 3
    sub = await desk.buy()
    assert sub.accepted and sub.order.status is OrderStatus.FILLED, (sub.order.status, sub.order.error)
    assert_one_filled_order(fx, sub.order.client_order_id)


async def test_a_lookup_refused_for_the_key_after_it_worked_is_final_and_not_counted(fx, make_desk):
    # The same refusal on a read: the exchange's final word on the key, not sent again and not a failure of the venue.
    desk = await make_desk(threshold=3)
    o = (await desk.buy()).order  # authenticated calls that work
    fx.fault(GET_ORDER, "error", times=2, **KEY_REFUSED)
    with pytest.raises(VenueError, match="-2015"):
        await desk.breaker.call(lambda: desk.venue.fetch_order(o.client_order_id, BTC))
    assert len(fx.requests_to(GET_ORDER)) == 1 and desk.breaker.failures == 0
