"""A kill switch whose cancel fails leaves an order working at the exchange while the engine is HALTED: it may fill,
and nobody watching the console would know. The operator is paged, naming the order and the exchange's words, and
the HALTED page does not say the open orders were cancelled (it is sent as HALTED is stored, before any cancel).

Real parts: a live engine on the fake Binance, its monitor's notifier delivering to a webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio

from conftest import engine_session
from live_helpers import DELETE_ORDER, engine_loop, fx, wait_for  # noqa: F401
from receiver import Receiver
from test_alert_returns import FAST
from test_live_books import climbing, halted_over_failing_cancels, strategy_settings


async def test_a_kill_switch_whose_cancel_fails_pages_naming_the_order_still_working(tmp_path, fx):
    hook = await Receiver().start()
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600}, monitor={"port": 0},
                                 alerts={"webhook_url": hook.url, **FAST})

    try:
        async with engine_session(settings, live=True) as running:
            e = running.engine
            async with engine_loop(e):
                cid, _ = await halted_over_failing_cancels(e, fx, "5xx_not_executed", status=503, times=1000)
                asked = len(fx.requests_to(DELETE_ORDER))
                for _ in range(40):  # the engine's polls (engine.order_poll_s), past engine.cancel_timeout_s
                    await e.orders.poll()
                    if len(fx.requests_to(DELETE_ORDER)) > asked:
                        break
                    await asyncio.sleep(0.25)
                assert len(fx.requests_to(DELETE_ORDER)) > asked  # asked again, as the page says
                await running.store.flush()
                await wait_for(lambda: hook.delivered_of("CANCEL_FAILED") and hook.delivered_of("HALTED"), timeout=10,
                               what="the pages")
                await asyncio.sleep(0.3)
        [page] = hook.delivered_of("CANCEL_FAILED")
        assert page["severity"] == "page", page
        assert cid in page["text"] and "may still fill" in page["text"] and "503" in page["text"], page["text"]
        [halted] = hook.delivered_of("HALTED")
        assert "open orders cancelled" not in halted["text"], halted["text"]
        assert fx.open_order(cid) is not None  # still working at the exchange, as the page says
    finally:
        await hook.stop()
