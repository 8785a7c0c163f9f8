"""A kill switch pressed while an order is still on its way to the exchange.

The cancel must wait for the create's answer: cancelling first finds nothing at the exchange, and the order would
then open there with the journal believing it cancelled. Real ccxt, the fake Binance, the real order path.
"""

from __future__ import annotations

import asyncio

from fake_exchange import FakeBinance  # noqa: F401  (fixtures below come from test_live_faults' helpers)
from ffe_engine.model import OrderStatus
from test_live_faults import POST_ORDER, fx, make_desk  # noqa: F401


async def test_cancel_all_waits_for_an_order_still_on_the_wire(fx, make_desk):  # noqa: F811
    desk = await make_desk()
    fx.fault(POST_ORDER, "slow", seconds=0.4)  # reaches the book only after the cancel was asked for
    submit = asyncio.create_task(desk.buy(type="limit", price=20_000.0))  # rests: far below the market
    for _ in range(200):
        if fx.requests_to(POST_ORDER):
            break
        await asyncio.sleep(0.01)
    assert fx.requests_to(POST_ORDER) and not fx.orders  # on the wire, not yet at the exchange
    report = await desk.path.cancel_all()
    sub = await submit
    cid = sub.order.client_order_id
    assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "CANCELED")]
    (journaled,) = await desk.journal(cid)
    assert journaled.status is OrderStatus.CANCELED
    assert report.cancelled == [cid] and report.failed == []
    assert not desk.path.live


async def test_cancels_are_bounded_in_time_and_the_late_ones_reported(fx, make_desk):  # noqa: F811
    desk = await make_desk()
    resting = [(await desk.buy(type="limit", price=20_000.0)).order.client_order_id for _ in range(2)]
    desk.path.cancel_timeout_s = 0.3  # engine.cancel_timeout_s
    fx.fault("DELETE /api/v3/order", "slow", seconds=2.0, times=2)
    report = await desk.path.cancel_all()
    assert report.cancelled == []
    assert sorted(f["client_order_id"] for f in report.failed) == sorted(resting)
    assert {f["error"] for f in report.failed} == {"cancel timed out"}


async def test_the_time_for_a_cancel_counts_from_the_answer_of_an_order_on_the_wire(fx, make_desk):  # noqa: F811
    # The exchange holds the create past cancel_timeout_s: its cancel cannot begin before that answer, so it is not
    # said timed out, and the order it then finds open is cancelled.
    desk = await make_desk()
    desk.path.cancel_timeout_s = 0.3  # engine.cancel_timeout_s
    fx.fault(POST_ORDER, "slow", seconds=1.0)
    submit = asyncio.create_task(desk.buy(type="limit", price=20_000.0))
    for _ in range(200):
        if fx.requests_to(POST_ORDER):
            break
        await asyncio.sleep(0.01)
    report = await desk.path.cancel_all()
    cid = (await submit).order.client_order_id
    assert report.cancelled == [cid] and report.failed == [], report
    assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "CANCELED")]


async def test_a_cancel_and_its_lookup_that_both_fail_say_both_errors_whole(fx, make_desk):  # noqa: F811
    # The exchange failing both: the report cut the two errors at 160 characters, inside the lookup's own (the
    # operator read "its lookup failed: binance fetch_or"). Each keeps its start and its end.
    desk = await make_desk()
    cid = (await desk.buy(type="limit", price=20_000.0)).order.client_order_id  # rests: far below the market
    fx.fault("DELETE /api/v3/order", "5xx_not_executed", times=5)
    fx.fault("GET /api/v3/order", "5xx_not_executed", times=5)
    report = await desk.path.cancel_all()
    [failed] = report.failed
    assert failed["client_order_id"] == cid
    cancel, _, lookup = failed["error"].partition("; its lookup failed: ")
    assert cancel.startswith("binance cancel_order") and lookup.startswith("binance fetch_order"), failed["error"]
    assert "ExchangeNotAvailable" in lookup, failed["error"]  # what the lookup met, not only that it failed
