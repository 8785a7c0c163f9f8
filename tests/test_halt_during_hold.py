"""The kill switch stores HALTED at once, whatever the operator's other controls are waiting for: a cancel asked
just before, which waits out the exchange's Retry-After, does not hold it up. Against the fake Binance."""

from __future__ import annotations

import asyncio

from ffe_engine.model import EngineState
from live_helpers import DELETE_ORDER, fx, rows, wait_for  # noqa: F401
from test_live_engine import open_limit_orders, running_live


async def test_the_kill_switch_does_not_wait_for_a_cancel_waiting_out_a_retry_after(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        (resting,) = await open_limit_orders(e, 1)
        fx.fault(DELETE_ORDER, "429", retry_after=4)  # within what a request waits for (max_retry_after_s)
        cancel = asyncio.ensure_future(e.operator_cancel(resting, by="test"))
        await wait_for(lambda: fx.requests_to(DELETE_ORDER), timeout=20, what="the cancel refused for Retry-After")
        halt = asyncio.ensure_future(e.halt(by="test"))
        await wait_for(lambda: e.state is EngineState.HALTED or cancel.done(), timeout=30,
                       what="HALTED, or the cancel done")
        stored_first = e.state is EngineState.HALTED and not cancel.done()
        if stored_first:  # stored, not only in memory: the store's own row says it
            await wait_for(lambda: halt_stored(running.store.path), timeout=30, what="HALTED stored")
            stored_first = not cancel.done()
        await asyncio.gather(cancel, halt, return_exceptions=True)
        assert stored_first, "HALTED was stored only once the cancel waiting out the Retry-After was done"


def halt_stored(db) -> bool:
    return rows(db, "SELECT state FROM engine_state") == [("HALTED",)]
