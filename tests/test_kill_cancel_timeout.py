"""A kill switch's cancel that is still waiting out the exchange's Retry-After when the kill switch stops waiting
for it (cancel_timeout_s) is not dropped: the order is cancelled once the exchange takes requests again, instead
of being left open at the exchange while the engine is HALTED. Against the fake Binance."""

from __future__ import annotations

from live_helpers import DELETE_ORDER, engine_loop, fx, rows, wait_for  # noqa: F401
from test_live_engine import open_limit_orders, running_live


async def test_a_kill_switch_cancel_timed_out_on_a_retry_after_is_sent_once_it_ends(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        (resting,) = await open_limit_orders(e, 1)
        e.orders.cancel_timeout_s = 1.0
        # within what a request waits for (max_retry_after_s): the cancel waits it out, past the kill switch's wait
        fx.fault(DELETE_ORDER, "429", retry_after=2, times=2)
        report = await e.halt(by="test")
        assert [f["client_order_id"] for f in report.failed] == [resting], report
        async with engine_loop(e):
            await wait_for(lambda: fx.open_order(resting) is None, timeout=30, what="the order cancelled")
            await wait_for(lambda: resting not in e.orders.live, timeout=20, what="the cancel recorded")
    assert [o.status for o in fx.orders] == ["CANCELED"]
    assert rows(db, "SELECT status FROM orders") == [("canceled",)]
