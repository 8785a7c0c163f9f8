"""While the order path books a fill (the owner's books take it, then the records commit it), the order already says
it filled, and a final order has left the orders in flight: for that moment neither the books nor the orders in
flight hold the fill. Whatever sizes or decides then (another task on the loop: the strategy's bar, the operator, a
stop-loss) must count it all the same: an exit may not sell the fill's coins again (coins of the account holder's
own would be sold), and a BUY is no new entry while an entry's fill is being booked."""

from __future__ import annotations

import asyncio

from fake_exchange import Balance
from ffe_engine.model import OrderReason, Side
from ffe_engine.risk import OrderIntent
from live_helpers import BTC, fx, wait_for  # noqa: F401
from test_live_engine import running_live


async def _every_turn_until(done, look) -> None:
    """`look()` at every turn of the loop until `done()`."""
    while not done():
        look()
        await asyncio.sleep(0)


async def test_an_exit_sized_while_an_exit_s_fill_is_booked_sells_no_coin_the_books_no_longer_hold(tmp_path, fx):
    fx.balances["BTC"] = Balance(0.5)  # the account holder's own coins, not ffe's
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        await wait_for(lambda: e.portfolio.holding(BTC) is not None and not e.orders.live, timeout=20,
                       what="the buy filled and booked")
        held = e.portfolio.positions[BTC].quantity
        fx.partial_fill_next(0.5, rest="open")
        first = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=held,
                                                  reason=OrderReason.TAKE_PROFIT, ref_price=30_000.0,
                                                  reduce_only=True))
        assert first.accepted, first.reason
        await wait_for(lambda: first.order.filled > 0, timeout=20, what="the exit filled in part")
        offered: list[float] = []

        def look() -> None:
            room = e.orders.exit_room(BTC, 30_000.0)
            if room > 0:
                offered.append(room)

        watching = asyncio.ensure_future(_every_turn_until(
            lambda: first.order.status.final and BTC not in e.portfolio.positions, look))
        fx.fill(first.order.client_order_id)  # the rest fills at the exchange; the poll books it
        await e.orders.poll()
        await asyncio.wait_for(watching, 10)
        assert offered == [], f"an exit could sell {offered[0]} BTC while the exit's fill was being booked"


async def test_a_buy_decided_while_an_entry_s_whole_fill_is_booked_is_no_new_entry(tmp_path, fx):
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, type="limit",
                                                price=20_000.0, reason=OrderReason.OPERATOR, ref_price=30_000.0))
        assert sub.accepted, sub.reason
        unheld: list[str] = []
        cash_before = e.portfolio.cash

        def look() -> None:
            if not e.orders.pending_entry(BTC):
                unheld.append(f"{sub.order.status.value} {sub.order.filled}")
            flight = sum(x.quantity for x in e.orders.entries_in_flight() if x.symbol == BTC)
            if e.portfolio.cash == cash_before and flight == 0:  # its cash neither spent nor held for it
                unheld.append("cash")

        watching = asyncio.ensure_future(_every_turn_until(lambda: e.portfolio.holding(BTC) is not None, look))
        fx.fill(sub.order.client_order_id)
        await e.orders.poll()
        await asyncio.wait_for(watching, 10)
        assert unheld == [], f"the entry neither held nor in flight while its fill was booked: {unheld}"


async def test_an_entry_s_fill_the_books_have_taken_is_no_longer_counted_in_flight_while_its_booking_goes_on(
        tmp_path, fx):
    """Once the books hold the fill, it counts there only: the owner's booking goes on (here it reads the votes of an
    entry decided bars before, as an approval or a resting limit order is), and the gates and sizing meanwhile must
    not count the entry twice (its position, and an entry in flight with its cash held)."""
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        seen: list[tuple[float | None, float]] = []
        reads = e.store.decision_votes

        async def votes_read_while_watched(decision_id: str):
            held = e.portfolio.holding(BTC)
            seen.append((held.quantity if held else None,
                         sum(x.quantity for x in e.orders.entries_in_flight() if x.symbol == BTC)))
            await asyncio.sleep(0.05)  # other tasks run meanwhile
            return await reads(decision_id)

        e.store.decision_votes = votes_read_while_watched
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, type="limit",
                                                price=20_000.0, reason=OrderReason.OPERATOR, ref_price=30_000.0,
                                                decision_id="d-decided-bars-before"))
        assert sub.accepted, sub.reason
        fx.fill(sub.order.client_order_id)
        await e.orders.poll()
        await wait_for(lambda: e.portfolio.holding(BTC) is not None and seen, timeout=10, what="the fill booked")
        [(held, in_flight)] = seen
        assert held and in_flight == 0, f"the books hold {held} and the entries in flight {in_flight} more"
