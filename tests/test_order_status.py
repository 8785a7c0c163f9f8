"""Order status moves: a final status never changes and an order the venue has shown never goes back to doubt,
whatever order the sender's and the poll's answers arrive in. Real OrderPath and SQLite journal; the venue is a
scripted stand-in whose answers the test releases one at a time."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffe_engine.breaker import CircuitBreaker
from ffe_engine.clock import WallClock
from ffe_engine.config import RiskSettings
from ffe_engine.events import EventBus, OrderEvent
from ffe_engine.execution import OrderPath
from ffe_engine.model import EngineState, MarketInfo, OrderReason, OrderStatus, Side, VenueOrder
from ffe_engine.portfolio import Portfolio
from ffe_engine.risk import Gatekeeper, OrderIntent
from ffe_engine.store import Store
from ffe_engine.trading_state import TradingState
from ffe_engine.venues.base import OrderInDoubt

BTC = "BTC/USDT"
DATABASES = itertools.count()
FINAL = [s for s in OrderStatus if s.final]


@pytest.mark.parametrize("final", FINAL)
def test_a_final_status_never_changes(final):
    assert [s for s in OrderStatus if final.can_become(s)] == [final]


def test_an_order_seen_open_never_goes_back_to_new_or_doubt():
    assert not OrderStatus.OPEN.can_become(OrderStatus.IN_DOUBT)
    assert not OrderStatus.OPEN.can_become(OrderStatus.NEW)
    assert OrderStatus.OPEN.can_become(OrderStatus.FILLED)
    assert OrderStatus.IN_DOUBT.can_become(OrderStatus.NEW)  # sent again, same id, once surely absent


class ScriptedVenue:
    """create_order waits until the test releases it, then answers as scripted (or loses the answer); fetch_order
    answers the venue's current view of the order at once."""

    name = "scripted"
    settle_s = 0.0

    def __init__(self, send_outcome: str, venue_view: str) -> None:
        self.send_outcome = send_outcome  # "filled" | "open" | "lost"
        self.venue_view = venue_view  # what a lookup finds: "closed" | "open" | "absent"
        self.release = asyncio.Event()
        self.sent = asyncio.Event()

    def market(self, symbol: str) -> MarketInfo:
        return MarketInfo(symbol=symbol, base="BTC", quote="USDT", amount_step=0.00001, price_step=0.01,
                          min_qty=0.00001, min_notional=5.0)

    async def reload_markets(self) -> None:
        return None

    def _view(self, cid: str, status: str) -> VenueOrder:
        filled = 0.01 if status == "closed" else 0.0
        return VenueOrder(client_order_id=cid, symbol=BTC, side=Side.BUY, quantity=0.01, status=status,
                          filled=filled, average=30_000.0 if filled else None, fee=0.3 if filled else 0.0,
                          exchange_id="1")

    async def create_order(self, req) -> VenueOrder:
        self.sent.set()
        await self.release.wait()
        if self.send_outcome == "lost":
            raise OrderInDoubt("answer lost")
        return self._view(req.client_order_id, "closed" if self.send_outcome == "filled" else "open")

    async def fetch_order(self, cid: str, symbol: str) -> VenueOrder | None:
        return None if self.venue_view == "absent" else self._view(cid, self.venue_view)


def order_path(store: Store, venue: ScriptedVenue) -> tuple[OrderPath, list, list[OrderEvent]]:
    """A real order path over `store` and `venue`, RUNNING; with the fills it records and the order events it says."""
    clock = WallClock()
    bus = EventBus(clock)
    events: list[OrderEvent] = []
    bus.add_sink(lambda ev, line: events.append(ev) if isinstance(ev, OrderEvent) else None)
    pf = Portfolio(10_000.0)
    pf.last_price[BTC] = 30_000.0
    breaker = CircuitBreaker(venue.name, 3, 30.0, now=clock.monotonic, bus=bus)
    trading = TradingState(store, bus, clock, EngineState.RUNNING)
    gk = Gatekeeper(RiskSettings(), pf, trading=trading, breaker_allows=breaker.allows, now_ms=clock.now_ms,
                    last_bar_ts=lambda s: clock.now_ms() // 60_000 * 60_000 - 60_000,
                    entries_in_flight=lambda: [], timeframe_ms=60_000, live=False)
    fills: list = []

    async def on_fill(order, fill, intent):
        fills.append(fill)

    path = OrderPath(store=store, venue=venue, breaker=breaker, gatekeeper=gk, portfolio=pf, bus=bus, clock=clock,
                     trading=trading, on_fill=on_fill, settle_s=0.0)
    return path, fills, events


def buy() -> OrderIntent:
    return OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, reason=OrderReason.OPERATOR, ref_price=30_000.0)


async def run_interleaving(tmp_path, send_outcome: str, venue_view: str, polls_before: int, polls_after: int):
    store = await Store.open(tmp_path / f"ffe-{next(DATABASES)}.db")  # hypothesis runs many in one tmp_path
    try:
        venue = ScriptedVenue(send_outcome, venue_view)
        path, fills, events = order_path(store, venue)
        submit = asyncio.ensure_future(path.submit(buy()))
        await venue.sent.wait()
        for _ in range(polls_before):  # the poll runs while the send waits for its answer
            await path.poll()
        venue.release.set()
        await submit
        for _ in range(polls_after):
            await path.poll()
        (journaled,) = await store.orders()
        return [e.status for e in events], journaled, fills
    finally:
        await store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(send_outcome=st.sampled_from(["filled", "open", "lost"]), venue_view=st.sampled_from(["closed", "open"]),
       polls_before=st.integers(0, 3), polls_after=st.integers(0, 3))
async def test_statuses_only_move_forward_in_any_interleaving(tmp_path, send_outcome, venue_view, polls_before,
                                                              polls_after):
    # The venue's view is at least as far on as the send's answer (a lookup happens after the send was placed).
    if send_outcome == "filled" and venue_view == "open":
        venue_view = "closed"
    statuses, journaled, fills = await run_interleaving(tmp_path, send_outcome, venue_view, polls_before,
                                                        polls_after)
    seen = [OrderStatus(s) for s in statuses]
    for a, b in zip(seen, seen[1:]):
        assert a.can_become(b), statuses
    assert journaled.status is seen[-1]  # the journal says what was said last
    # once anyone saw it filled, it is filled, with exactly one fill recorded
    if OrderStatus.FILLED in seen:
        assert journaled.status is OrderStatus.FILLED and len(fills) == 1
    assert len(fills) <= 1
    assert sum(f.quantity for f in fills) == pytest.approx(journaled.filled)



class ReportingVenue(ScriptedVenue):
    """create_order answers the order open; each lookup answers the next of `reports` (filled, cumulative fee)."""

    def __init__(self, reports: list[tuple[float, float]]) -> None:
        super().__init__("open", "open")
        self.release.set()
        self.reports = list(reports)

    async def fetch_order(self, cid: str, symbol: str) -> VenueOrder | None:
        filled, fee = self.reports.pop(0)
        return VenueOrder(client_order_id=cid, symbol=BTC, side=Side.BUY, quantity=0.01,
                          status="closed" if filled >= 0.01 else "open", filled=filled,
                          average=30_000.0 if filled else None, fee=fee, exchange_id="1")


async def test_an_answer_without_the_fees_takes_back_none_of_those_recorded_so_none_is_charged_twice(tmp_path):
    # A venue that cannot say the fees of its fills (no trades to read) may answer a fill without them; the next
    # answer that has them says the order's fees in all. What was charged before is not charged again.
    reports = [(0.004, 0.12), (0.007, 0.0), (0.01, 0.3)]
    store = await Store.open(tmp_path / "ffe.db")
    try:
        path, fills, _ = order_path(store, ReportingVenue(reports))
        await path.submit(buy())
        for _ in reports:
            await path.poll()
        (journaled,) = await store.orders()
    finally:
        await store.close()
    assert [f.quantity for f in fills] == pytest.approx([0.004, 0.003, 0.003])
    assert sum(f.fee for f in fills) == pytest.approx(0.3)
    assert (journaled.status, journaled.fee) == (OrderStatus.FILLED, pytest.approx(0.3))
