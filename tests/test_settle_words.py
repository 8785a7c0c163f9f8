"""An order settled filled by the operator (`ffe ctl settle ID filled`: an order in doubt the exchange never shows)
ends in the settle's words: `settled filled by WHO: ...`, in its journal row and its last `order` record. A part
settled leaves the rest cancelled by that word, not "canceled at the exchange" (which the exchange never did, and
which would page an exit refused for a stop-loss); a whole fill keeps the words too.

Real parts: OrderPath -> CcxtVenue -> ccxt -> HTTP -> the fake Binance, the journal in SQLite."""

from __future__ import annotations

import asyncio

import pytest

from test_live_faults import POST_ORDER, SETTLE_S, fx, make_desk  # noqa: F401 (fixtures)
from ffe_engine import present
from ffe_engine.events import OrderEvent
from ffe_engine.model import OrderStatus


async def settled(desk, o, quantity: float):
    """`o`, in doubt and never placed, past its settle window (its balance said to show it: not sent again), then
    settled filled for `quantity` at 30,000 by `ctl`; its journal row and its last order record."""
    async def balance_shows(order):
        return f"its balance shows {quantity} BTC of it"

    desk.path.placed_evidence = balance_shows
    await asyncio.sleep(SETTLE_S * 1.3)
    for _ in range(3):
        await desk.path.poll()
    assert o.status is OrderStatus.IN_DOUBT
    await desk.path.settle(o, "filled", quantity=quantity, price=30_000.0, by="ctl")
    (row,) = await desk.journal(o.client_order_id)
    last = [e for e in desk.events if isinstance(e, OrderEvent) and e.client_order_id == o.client_order_id][-1]
    return row, last


@pytest.mark.parametrize("quantity, status", [(0.01, OrderStatus.FILLED), (0.004, OrderStatus.CANCELED)])
async def test_a_settled_fill_ends_in_the_settle_s_words(fx, make_desk, quantity, status):
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_before")
    o = (await desk.buy(0.01)).order
    row, last = await settled(desk, o, quantity)
    assert (row.status, row.filled) == (status, pytest.approx(quantity))
    for said in (row.error, last.error):
        assert said.startswith("settled filled by ctl: "), said
        assert not present.ended_by_exchange(said), said
    assert fx.orders == []


async def test_a_stop_loss_settled_in_part_is_not_said_ended_by_the_exchange(fx, make_desk):
    desk = await make_desk()
    bought = (await desk.buy(0.01)).order
    assert bought.status is OrderStatus.FILLED
    fx.fault(POST_ORDER, "drop_before")
    o = (await desk.stop_loss()).order
    row, last = await settled(desk, o, 0.004)
    assert (last.status, last.side, last.reason) == ("canceled", "sell", "stop_loss")
    assert last.error.startswith("settled filled by ctl: ") and not present.ended_by_exchange(last.error), last.error


async def test_an_exit_the_exchange_expired_settled_beyond_its_listed_trades_keeps_the_exchange_s_words(fx, make_desk):
    """A stop-loss exit fills in part and the exchange expires the rest; its trades are never listed (trades behind).
    The operator settles the part the venue shows filled: the exchange ended the exit on its own with the position
    still open, and its end says so (EXIT_REFUSED pages on it), not the settle's words."""
    from ffe_engine.alerts import alerts_for
    desk = await make_desk()
    bought = (await desk.buy(0.01)).order
    assert bought.status is OrderStatus.FILLED
    fx.partial_fill_next(0.5, rest="expire")
    fx.fault(POST_ORDER, "no_cost")
    fx.fault("GET /api/v3/myTrades", "stale", seconds=600, times=10_000)
    o = (await desk.stop_loss()).order
    for _ in range(10):
        await desk.path.poll()
        await asyncio.sleep(SETTLE_S / 3)
    rest = round(fx.orders[-1].filled - o.filled, 12)
    assert rest > 0 and not o.status.final, (o.status, o.filled, rest)
    await desk.path.settle(o, "filled", quantity=rest, price=30_000.0, by="ctl")
    last = [e for e in desk.events if isinstance(e, OrderEvent) and e.client_order_id == o.client_order_id][-1]
    assert last.status == "canceled" and present.ended_by_exchange(last.error), last.error
    assert "EXIT_REFUSED" in [a.kind for a in alerts_for(last)]
