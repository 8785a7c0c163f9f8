"""A kill switch's cancel that has not ended within engine.cancel_timeout_s is reported failed, and the operator is
paged that the order still works at the exchange. Two ways that page must not stand as the last word:

- the cancel completed before the report was recorded (the records' writer held up the report, not the cancel):
  the report recorded and paged says it cancelled;
- the cancel completed after the report (a slow exchange): a follow-up record, by `engine`, and an alert say the
  order has ended since.

Real parts: a live engine on the fake Binance, its SQLite database locked by another connection for a while, its
monitor's notifier delivering to a webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sqlite3

from conftest import engine_session
from live_helpers import DELETE_ORDER, engine_loop, fx, stored_events, wait_for  # noqa: F401
from receiver import Receiver
from test_alert_returns import FAST
from test_live_books import climbing, halted_over_failing_cancels, resting_entry, strategy_settings

QUICK_CANCELS = {"order_poll_s": 600, "cancel_timeout_s": 0.3}


def _settings(tmp_path, fx, hook: Receiver, **engine):
    climbing(fx)
    return strategy_settings(tmp_path, fx, engine=QUICK_CANCELS | engine, monitor={"port": 0},
                             alerts={"webhook_url": hook.url, **FAST})


async def test_a_cancel_done_before_the_report_is_recorded_is_reported_cancelled_not_failed(tmp_path, fx):
    hook = await Receiver().start()
    settings = _settings(tmp_path, fx, hook)
    try:
        async with engine_session(settings, live=True) as running:
            e = running.engine
            async with engine_loop(e):
                cid = await resting_entry(e, fx)
                await running.store.flush()
                holder = sqlite3.connect(settings.db_path, isolation_level=None, timeout=30)
                try:
                    holder.execute("BEGIN IMMEDIATE")  # the records' writer waits for it: HALTED, the order's end
                    halting = asyncio.ensure_future(e.halt(reason="ffe ctl halt", by="ctl"))
                    # The exchange cancels the order at once; what records it waits, past engine.cancel_timeout_s.
                    await wait_for(lambda: fx.open_order(cid) is None, timeout=10, what="the cancel at the exchange")
                    await asyncio.sleep(1.0)
                finally:
                    holder.execute("ROLLBACK")
                    holder.close()
                report = await halting
                await running.store.flush()
                await wait_for(lambda: hook.delivered_of("HALTED"), timeout=10, what="the HALTED page")
                await asyncio.sleep(0.5)
        [switch] = stored_events(settings.db_path, "kill_switch")
        assert switch["cancelled"] == [cid] and switch["failed"] == [], switch
        assert report.cancelled == [cid] and report.failed == [], report
        assert hook.delivered_of("CANCEL_FAILED") == []
    finally:
        await hook.stop()


async def test_a_cancel_reported_failed_that_goes_through_later_is_followed_by_a_record_and_an_alert(tmp_path, fx):
    hook = await Receiver().start()
    settings = _settings(tmp_path, fx, hook, order_poll_s=1.0)
    try:
        async with engine_session(settings, live=True) as running:
            e = running.engine
            async with engine_loop(e):
                # Every cancel answered seconds past the timeout: the kill switch's (and its retries) time out; the
                # one it keeps due is sent again by the poll once they have ended, and goes through.
                cid, _ = await halted_over_failing_cancels(e, fx, "slow", seconds=3, times=5)
                await wait_for(lambda: hook.delivered_of("CANCEL_ENDED"), timeout=30, what="the follow-up's alert")
        first, follow = stored_events(settings.db_path, "kill_switch")
        assert [f["client_order_id"] for f in first["failed"]] == [cid], first
        assert follow["action"] == "halt" and follow["follow_up"] is True and follow["by"] == "engine", follow
        assert follow["cancelled"] == [cid] and follow["failed"] == [] and follow["filled"] == [], follow
        [page] = hook.delivered_of("CANCEL_FAILED")
        assert cid in page["text"] and "still working" in page["text"], page["text"]
        [ended] = hook.delivered_of("CANCEL_ENDED")
        assert cid in ended["text"] and "cancelled" in ended["text"], ended["text"]
        assert "no longer working at the exchange" in ended["text"], ended["text"]
        assert fx.open_order(cid) is None
    finally:
        await hook.stop()


async def test_a_failed_cancel_whose_order_ends_while_the_engine_is_stopped_is_followed_up_after_its_start(
        tmp_path, fx):
    """The orders followed are kept with the report: an engine stopped before they ended says it after its start."""
    hook = await Receiver().start()
    settings = _settings(tmp_path, fx, hook)
    try:
        async with engine_session(settings, live=True) as running:
            e = running.engine
            async with engine_loop(e):
                cid, _ = await halted_over_failing_cancels(e, fx, "5xx_not_executed", status=503, times=1000)
        fx.clear_faults(DELETE_ORDER)
        fx.end(cid, "CANCELED")  # cancelled at the exchange by hand while the engine was stopped
        async with engine_session(settings, live=True) as running:
            async with engine_loop(running.engine):
                await wait_for(lambda: hook.delivered_of("CANCEL_ENDED"), timeout=10, what="the follow-up's alert")
        follow = stored_events(settings.db_path, "kill_switch")[-1]
        assert follow["follow_up"] is True and follow["cancelled"] == [cid], follow
        [ended] = hook.delivered_of("CANCEL_ENDED")
        assert cid in ended["text"], ended["text"]
    finally:
        await hook.stop()
