"""A kill switch's cancel the exchange's Retry-After held, sent once it is over, that the exchange then does not
answer (a 5xx on every try): it is not dropped. The order is still cancelled once the exchange answers again,
instead of being left open at the exchange while the engine is HALTED. Against the fake Binance."""

from __future__ import annotations

from live_helpers import DELETE_ORDER, engine_loop, fx, rows, wait_for  # noqa: F401
from test_live_engine import open_limit_orders, running_live


async def test_a_held_cancel_the_exchange_then_fails_is_sent_again(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        (resting,) = await open_limit_orders(e, 1)
        e.venue.reads.max_retry_after_s = 1.0  # a request waits for at most 1 s of a hold: 3 s are not waited for
        fx.fault(DELETE_ORDER, "418", retry_after=3)
        fx.fault(DELETE_ORDER, "5xx_not_executed", times=e.venue.reads.attempts)  # the held cancel's every try
        report = await e.halt(by="test")
        assert [f["client_order_id"] for f in report.failed] == [resting]
        async with engine_loop(e):
            await wait_for(lambda: not fx.pending_faults(DELETE_ORDER), timeout=30, what="the held cancel sent")
            await wait_for(lambda: fx.open_order(resting) is None, timeout=30, what="the order cancelled")
            await wait_for(lambda: resting not in e.orders.live, timeout=20, what="the cancel recorded")
    assert [o.status for o in fx.orders] == ["CANCELED"]
    assert rows(db, "SELECT status FROM orders") == [("canceled",)]
