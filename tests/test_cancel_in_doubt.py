"""A cancel of an order in doubt is stored before it goes out: the order is never sent again from the moment the
cancel is asked (order-path.md, Cancels), neither by the poll while the cancel is on the wire nor by an engine started
after a stop that cut the cancel off.

Real parts: OrderPath -> CcxtVenue -> ccxt -> HTTP -> the fake Binance, the journal in SQLite."""

from __future__ import annotations

import asyncio

import pytest

from fake_exchange import FakeBinance, exchange_settings
from test_live_faults import BTC, POST_ORDER, SETTLE_S, Desk, fx, make_desk, no_wait  # noqa: F401 (fixtures)
from ffe_engine.config import RiskSettings
from ffe_engine.execution import CANCEL_ASKED_KEY, MAX_RESENDS
from ffe_engine.model import EngineState, OrderStatus
from ffe_engine.venues.ccxt_venue import CcxtVenue

DELETE_ORDER = "DELETE /api/v3/order"


async def restarted(first: Desk, fx: FakeBinance, threshold: int = 3) -> Desk:
    """A new order path and venue, nothing in memory, on the first's records and books: the engine after a restart
    (which loads the books from the records)."""
    venue = CcxtVenue(exchange_settings(fx), [BTC], read_attempts=2, settle_s=SETTLE_S, sleep=no_wait)
    venue.exchange.enableRateLimit = False
    venue.exchange.timeout_on_exit = 0
    await venue.connect()
    desk = Desk(fx, venue, first.store, threshold=threshold, recovery_s=30.0, risk=RiskSettings())
    desk.pf.cash, desk.pf.positions = first.pf.cash, first.pf.positions
    return desk


async def test_the_poll_does_not_send_again_an_order_whose_cancel_is_on_the_wire(fx, make_desk):
    """Past its settle window an order in doubt is about to be proved absent and sent again; the operator cancels it
    and the exchange holds the DELETE. The poll that runs meanwhile must not send the order: it would fill."""
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_before")  # the first send never reaches the exchange
    o = (await desk.buy(0.01)).order
    assert o.status is OrderStatus.IN_DOUBT
    await asyncio.sleep(SETTLE_S * 1.2)
    await desk.path.poll()  # past the settle window, not found once
    fx.fault(DELETE_ORDER, "slow", seconds=0.9)
    cancel = asyncio.ensure_future(desk.path.cancel(o, by="ctl"))
    while not fx.requests_to(DELETE_ORDER):
        await asyncio.sleep(0.01)
    await desk.path.poll()  # the engine's loop goes on while the cancel is at the exchange
    await cancel
    for _ in range(6):
        await desk.path.poll()
        await asyncio.sleep(SETTLE_S / 3)
    assert fx.orders == [], [(x.client_id, x.status) for x in fx.orders]
    assert desk.sent_ids() == [o.client_order_id]  # the first send only
    assert o.status is OrderStatus.CANCELED and desk.fills == [], (o.status, o.error)


async def test_an_engine_started_after_a_cancel_cut_off_on_the_wire_does_not_send_the_order(fx, make_desk):
    """The process stops while the operator's cancel of a stop-loss exit in doubt is on the wire. The next engine
    (PAUSED, which lets exits go) must not send the exit: its cancel was asked, and is stored before it goes out."""
    first = await make_desk()
    bought = (await first.buy(0.01)).order
    assert bought.status is OrderStatus.FILLED
    fx.fault(POST_ORDER, "drop_before")
    o = (await first.stop_loss()).order
    assert o.status is OrderStatus.IN_DOUBT
    fx.fault(DELETE_ORDER, "hang", seconds=30, execute=False)
    cancel = asyncio.ensure_future(first.path.cancel(o, by="ctl"))
    while not fx.requests_to(DELETE_ORDER):
        await asyncio.sleep(0.01)
    cancel.cancel()  # the process ends here, the cancel unanswered
    with pytest.raises(asyncio.CancelledError):
        await cancel
    assert o.client_order_id in await first.store.get_kv(CANCEL_ASKED_KEY)

    second = await restarted(first, fx)
    second.trading.restore(EngineState.PAUSED, "live start", "engine")
    (recovered,) = await second.path.recover()
    for _ in range(8):
        await second.path.poll()
        await asyncio.sleep(SETTLE_S / 2)
    assert [x.client_id for x in fx.orders] == [bought.client_order_id]
    assert recovered.status is OrderStatus.CANCELED, (recovered.status, recovered.error)
    assert second.sent_ids() == [bought.client_order_id, o.client_order_id]  # the exit's first send, never again
    await second.venue.close()


async def test_the_repeats_of_an_order_in_doubt_are_counted_across_restarts(fx, make_desk):
    """Every send of an exit is lost before it reaches the exchange, and the engine restarts after each repeat (a
    crash loop). The order is sent at most 1 + MAX_RESENDS times in all, then ended rejected ("absent at the venue
    after repeated sends"), not sent MAX_RESENDS times more after every start."""
    first = await make_desk(threshold=1000)  # the lost sends are the breaker's failures: kept from opening it
    bought = (await first.buy(0.01)).order
    assert bought.status is OrderStatus.FILLED
    fx.fault(POST_ORDER, "drop_before", times=1000)
    o = (await first.stop_loss()).order
    desks, order = [first], o
    for _ in range(2 * MAX_RESENDS):
        sent = len(fx.requests_to(POST_ORDER))
        for _ in range(40):  # polls until the order is sent again, or ended
            await desks[-1].path.poll()
            if len(fx.requests_to(POST_ORDER)) > sent or order.status.final:
                break
            await asyncio.sleep(SETTLE_S / 4)
        if order.status.final:
            break
        desks.append(await restarted(first, fx, threshold=1000))  # the engine stops after each repeat
        desks[-1].trading.restore(EngineState.PAUSED, "live start", "engine")
        (order,) = [r for r in await desks[-1].path.recover() if r.client_order_id == o.client_order_id]
    for desk in desks[1:]:
        await desk.venue.close()
    assert [cid for cid in first.sent_ids() if cid == o.client_order_id] == [o.client_order_id] * (1 + MAX_RESENDS)
    (row,) = await first.journal(o.client_order_id)
    assert (row.status, row.error) == (OrderStatus.REJECTED, "absent at the venue after repeated sends")


async def test_a_cancel_asked_while_the_repeat_is_being_counted_keeps_the_order_from_going(fx, make_desk, tmp_path):
    """Another process holds the database for half a second (within busy_timeout_s) while the poll, having proved an
    order in doubt absent, stores its repeat's count before sending it again; the operator's cancel comes meanwhile.
    The order must not go out after its cancel was asked."""
    import sqlite3
    import threading

    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_before")
    o = (await desk.buy(0.01)).order
    await asyncio.sleep(SETTLE_S * 1.3)
    await desk.path.poll()  # past the window: not found once
    held, release = threading.Event(), threading.Event()

    def other_process() -> None:
        conn = sqlite3.connect(str(tmp_path / "ffe.db"), isolation_level=None, timeout=10)
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        release.wait(5)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    while not held.is_set():
        await asyncio.sleep(0.01)
    poll = asyncio.ensure_future(desk.path.poll())  # not found twice: its repeat counted, then sent
    await asyncio.sleep(0.2)
    cancel = asyncio.ensure_future(desk.path.cancel(o, by="ctl"))
    await asyncio.sleep(0.3)
    release.set()
    await poll
    await cancel
    holder.join()
    for _ in range(6):
        await desk.path.poll()
        await asyncio.sleep(SETTLE_S / 3)
    assert fx.orders == [], [(x.client_id, x.status) for x in fx.orders]
    assert desk.sent_ids() == [o.client_order_id]
    assert o.status is OrderStatus.CANCELED, (o.status, o.error)
