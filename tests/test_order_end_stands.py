"""An order ends once: a kill switch's cancel and the poller resolving the same order in doubt can both reach an
end for it, and the first end stands (found by the live chaos soak: an order rejected by the poller, "not sent
again: engine HALTED", was then recorded canceled by the cancel that had been waiting on a slow exchange).

Real parts: the order path, SQLite, real ccxt and the fake Binance."""

from __future__ import annotations

import asyncio

from fake_exchange import FakeBinance  # noqa: F401
from ffe_engine.events import OrderEvent
from ffe_engine.model import EngineState, OrderStatus
from test_live_faults import POST_ORDER, SETTLE_S, fx, make_desk  # noqa: F401

DELETE_ORDER = "DELETE /api/v3/order"


async def test_a_cancel_that_ends_after_the_poller_ended_the_order_changes_nothing(fx, make_desk):  # noqa: F811
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_before")  # never reached the exchange; the answer is lost: in doubt
    o = (await desk.buy()).order
    assert o.status is OrderStatus.IN_DOUBT
    await asyncio.sleep(SETTLE_S + 0.1)  # past the settle window: surely absent
    await desk.trading.set(EngineState.HALTED, "kill switch", "operator")  # no resend from here on
    fx.fault(DELETE_ORDER, "slow", seconds=1.0)
    cancelling = asyncio.create_task(desk.path.cancel_all())
    while not fx.requests_to(DELETE_ORDER):
        await asyncio.sleep(0.01)
    await desk.path.poll()  # resolves it meanwhile: absent (two lookups in a row), its cancel asked: not sent again
    await desk.path.poll()
    # The cancel was stored as it went out (an order in doubt whose cancel was asked is never sent again): the
    # poller ends it cancelled, absent at the venue; the cancel's own answer, later, changes nothing.
    assert o.status is OrderStatus.CANCELED and o.error == "absent at the venue"
    report = await cancelling
    assert report.failed == [], report
    (journaled,) = await desk.journal(o.client_order_id)
    assert (journaled.status, journaled.error) == (OrderStatus.CANCELED, "absent at the venue")
    ends = [e.status for e in desk.events if isinstance(e, OrderEvent) and e.status in ("rejected", "canceled")]
    assert ends == ["canceled"]
    assert fx.orders == []
