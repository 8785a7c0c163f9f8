"""The single order path on a live venue under the faults real exchanges produce.

Real parts end to end: OrderPath (journal in SQLite, circuit breaker, risk gates) -> CcxtVenue -> real ccxt ->
HTTP -> the fake Binance. Every scenario asserts on the fake's own book that exactly the intended orders exist: an
order whose answer was lost is looked up by its client order id and sent again (with the same id) only when it is
surely absent, never twice.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from fake_exchange import FakeBinance, exchange_settings
from ffe_engine.breaker import CircuitBreaker
from ffe_engine.clock import WallClock
from ffe_engine.config import RiskSettings
from ffe_engine.events import BreakerChanged, EventBus, OrderEvent, VenueFault
from ffe_engine.execution import CANCEL_DUE_KEY, OrderPath
from ffe_engine.model import EngineState, OrderReason, OrderStatus, Side
from ffe_engine.portfolio import Portfolio
from ffe_engine.risk import Gatekeeper, OrderIntent
from ffe_engine.store import Store
from ffe_engine.trading_state import TradingState
from ffe_engine.venues.ccxt_venue import CcxtVenue

BTC = "BTC/USDT"
POST_ORDER, GET_ORDER = "POST /api/v3/order", "GET /api/v3/order"
OPEN_ORDERS = "GET /api/v3/openOrders"
SETTLE_S = 0.5
M = 60_000


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


class Desk:
    """One engine's order path wired to the fake exchange, as the engine wires it."""

    def __init__(self, fx: FakeBinance, venue: CcxtVenue, store: Store, *, threshold: int, recovery_s: float,
                 risk: RiskSettings) -> None:
        self.fx, self.venue, self.store = fx, venue, store
        self.breaker_now = 1_000.0  # the breaker's clock, moved by the test
        self.events: list = []
        self.fills: list = []
        clock = WallClock()
        bus = EventBus(clock)
        bus.add_sink(lambda ev, line: self.events.append(ev))
        self.breaker = CircuitBreaker(venue.name, threshold, recovery_s, now=lambda: self.breaker_now, bus=bus)
        self.pf = Portfolio(10_000.0)
        self.pf.last_price[BTC] = 30_000.0
        now_ms = clock.now_ms
        self.trading = TradingState(store, bus, clock, EngineState.RUNNING)
        self.gatekeeper = Gatekeeper(risk, self.pf, trading=self.trading, breaker_allows=self.breaker.allows,
                                     now_ms=now_ms, last_bar_ts=lambda s: now_ms() // M * M - M,
                                     entries_in_flight=lambda: self.path.entries_in_flight(), timeframe_ms=M,
                                     live=False)
        self.path = OrderPath(store=store, venue=venue, breaker=self.breaker, gatekeeper=self.gatekeeper,
                              portfolio=self.pf, bus=bus, clock=clock, trading=self.trading, on_fill=self._on_fill,
                              settle_s=venue.settle_s)

    async def _on_fill(self, order, fill, intent) -> None:
        self.pf.apply_fill(fill, reason=order.reason.value, client_order_id=order.client_order_id)
        self.fills.append(fill)

    async def buy(self, qty: float = 0.01, **kw):
        sub = await self.path.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=qty,
                                                 reason=OrderReason.OPERATOR, ref_price=30_000.0, **kw))
        return sub

    async def stop_loss(self, qty: float = 0.00999):
        """A stop-loss exit selling `qty` of the position, as the engine's exits are sent."""
        return await self.path.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=qty,
                                                  reason=OrderReason.STOP_LOSS, ref_price=30_000.0, reduce_only=True))

    async def resolve(self, order, *, until=lambda o: o.status.final, rounds: int = 40) -> None:
        """Poll the order path (as the engine's loop does) until the order reaches the wanted state."""
        for _ in range(rounds):
            await self.path.poll()
            if until(order):
                return
            await asyncio.sleep(SETTLE_S / 4)
        raise AssertionError(f"order {order.client_order_id} still {order.status.value}: {order.error}")

    async def journal(self, cid: str):
        return [o for o in await self.store.orders() if o.client_order_id == cid]

    def sent_ids(self) -> list[str]:
        return [r.params.get("newClientOrderId", "") for r in self.fx.requests_to(POST_ORDER)]


@pytest.fixture
async def fx():
    async with FakeBinance() as fake:
        fake.set_price("BTCUSDT", 30_000.0)
        yield fake


@pytest.fixture
async def make_desk(fx, tmp_path):
    made = []

    async def make(*, threshold: int = 3, recovery_s: float = 30.0, risk: RiskSettings | None = None,
                   db: str = "ffe.db") -> Desk:
        venue = CcxtVenue(exchange_settings(fx), [BTC], read_attempts=2, settle_s=SETTLE_S, sleep=no_wait)
        venue.exchange.enableRateLimit = False
        venue.exchange.timeout_on_exit = 0
        await venue.connect()
        store = await Store.open(tmp_path / db)
        desk = Desk(fx, venue, store, threshold=threshold, recovery_s=recovery_s, risk=risk or RiskSettings())
        made.append(desk)
        return desk

    yield make
    for desk in made:
        await desk.venue.close()
        await desk.store.close()


def assert_one_filled_order(fx: FakeBinance, cid: str, qty: float = 0.01) -> None:
    """The fake's book: exactly one order, and it is this one, filled once."""
    assert [(o.client_id, o.status, o.filled) for o in fx.orders] == [(cid, "FILLED", qty)]
    assert fx.balances["BTC"].total == pytest.approx(qty * (1 - fx.fee_rate))


async def assert_journal_filled(desk: Desk, cid: str, qty: float = 0.01) -> None:
    (o,) = await desk.journal(cid)
    assert (o.status, o.filled) == (OrderStatus.FILLED, qty)
    assert [(f.client_order_id, f.quantity, f.price) for f in desk.fills] == [(cid, qty, 30_000.0)]
    # Binance takes a buy's fee from the coins bought: the position is what the account really holds.
    assert desk.pf.positions[BTC].quantity == pytest.approx(qty * (1 - desk.fx.fee_rate))


# -- answers lost: in doubt, resolved by client order id -------------------------------------------------------

async def test_answer_lost_after_the_order_was_placed(fx, make_desk):
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_after")
    sub = await desk.buy()
    o = sub.order
    assert sub.accepted and o.status is OrderStatus.IN_DOUBT
    await desk.resolve(o)
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)
    assert desk.sent_ids() == [o.client_order_id]  # looked up, never sent again


async def test_not_found_for_a_moment_after_a_lost_answer_is_not_resent(fx, make_desk):
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "not_found_once")  # the exchange has not indexed the order yet
    o = (await desk.buy()).order
    await desk.resolve(o)
    assert desk.sent_ids() == [o.client_order_id]  # a resend would have bought twice
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)


async def test_one_lookup_that_lags_after_the_settle_window_does_not_send_an_order_again(fx, make_desk):
    # The order was placed and filled, its answer lost. Past the settle window, one lookup answers from a replica
    # that does not have the order yet: on that answer alone the order would be sent again with the same id, which
    # the exchange takes as a new order once the first is filled (bought twice). Absent takes two answers in a row.
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_after")
    o = (await desk.buy()).order
    assert o.status is OrderStatus.IN_DOUBT
    fx.fault(GET_ORDER, "not_found_once")
    await desk.path.poll()  # the first look: the settle window starts
    assert o.status is OrderStatus.IN_DOUBT
    await asyncio.sleep(SETTLE_S + 0.05)
    fx.fault(GET_ORDER, "stale")  # the order's last change is its creation: the replica does not have it
    await desk.path.poll()
    assert desk.sent_ids() == [o.client_order_id]
    await desk.resolve(o)
    assert desk.sent_ids() == [o.client_order_id]
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)


@pytest.mark.parametrize("executed", [True, False])
async def test_request_hangs_past_the_timeout(fx, make_desk, executed):
    desk = await make_desk()
    fx.fault(POST_ORDER, "hang", seconds=5, execute=executed)
    o = (await desk.buy()).order
    assert o.status is OrderStatus.IN_DOUBT
    await desk.resolve(o)
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)
    # executed: found and never resent; not executed: resent once, with the same id, after the settle window
    assert desk.sent_ids() == [o.client_order_id] * (1 if executed else 2)


@pytest.mark.parametrize("executed", [True, False])
async def test_an_order_found_filled_after_its_answer_was_lost_keeps_no_error(fx, make_desk, executed):
    # The lost answer's words are the doubt's, said by its in_doubt fault record; once the exchange's answer has
    # resolved the doubt, the filled order's journal and its order record carry no error.
    desk = await make_desk()
    fx.fault(POST_ORDER, "hang", seconds=5, execute=executed)
    o = (await desk.buy()).order
    assert o.status is OrderStatus.IN_DOUBT and o.error
    await desk.resolve(o)
    (journaled,) = await desk.journal(o.client_order_id)
    assert (journaled.status, journaled.error) == (OrderStatus.FILLED, "")
    said = [e for e in desk.events if isinstance(e, OrderEvent) and e.client_order_id == o.client_order_id]
    assert said[-1].status == "filled" and said[-1].error == ""
    doubt = [e for e in desk.events if isinstance(e, VenueFault) and e.kind == "in_doubt"]
    assert [e.phase for e in doubt] == ["fault", "resolved"] and doubt[0].detail


@pytest.mark.parametrize("status", [502, 503])
async def test_5xx_that_executed(fx, make_desk, status):
    desk = await make_desk()
    fx.fault(POST_ORDER, "5xx_executed", status=status)
    o = (await desk.buy()).order
    assert o.status is OrderStatus.IN_DOUBT
    await desk.resolve(o)
    assert desk.sent_ids() == [o.client_order_id]
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)


async def test_5xx_that_did_not_execute(fx, make_desk):
    desk = await make_desk()
    fx.fault(POST_ORDER, "5xx_not_executed", status=503)
    o = (await desk.buy()).order
    assert o.status is OrderStatus.IN_DOUBT
    await desk.path.poll()  # inside the settle window a missing order proves nothing: not resent yet
    assert fx.orders == [] and desk.sent_ids() == [o.client_order_id]
    await desk.resolve(o)
    assert desk.sent_ids() == [o.client_order_id, o.client_order_id]
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)


# -- refusals: final, nothing placed ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind, code, retry_after, every_request", [
    ("429", -1015, 2, False),  # the account's limit on new orders: orders only
    ("429", -1003, 60, True),  # the address's request weight: every request
    ("418", None, 120, True),  # the address banned: every request
])
async def test_rate_limited_with_retry_after(fx, make_desk, kind, code, retry_after, every_request):
    desk = await make_desk()
    fx.fault(POST_ORDER, kind, retry_after=retry_after, **({} if code is None else {"code": code}))
    sub = await desk.buy()
    o = sub.order
    assert not sub.accepted and o.status is OrderStatus.REJECTED
    assert "not placed" in o.error and o.error.startswith("VENUE_HOLD"), o.error
    assert desk.path.held_until() is not None  # the order path's own hold, on orders
    assert (desk.venue.requests_held_until() is not None) is every_request
    assert fx.orders == [] and len(desk.sent_ids()) == 1  # refused before matching: nothing to resend
    assert desk.breaker.failures == 1  # a venue failure for the breaker
    await desk.path.poll()
    assert fx.orders == [] and len(desk.sent_ids()) == 1
    (journaled,) = await desk.journal(o.client_order_id)
    assert journaled.status is OrderStatus.REJECTED


async def test_insufficient_funds(fx, make_desk):
    desk = await make_desk()
    fx.balances["USDT"].free = 100.0  # the account holds less than the engine believes
    sub = await desk.buy()
    assert not sub.accepted and sub.order.status is OrderStatus.REJECTED
    assert "insufficient balance" in sub.order.error
    assert fx.orders == [] and len(desk.sent_ids()) == 1
    assert desk.breaker.failures == 0  # a clear answer: the venue is healthy
    assert desk.fills == [] and BTC not in desk.pf.positions


# -- partial fills and cancels ---------------------------------------------------------------------------------

async def test_partial_fill_then_cancel(fx, make_desk):
    desk = await make_desk()
    fx.partial_fill_next(0.5)
    o = (await desk.buy(type="limit", price=30_100.0)).order
    assert o.status is OrderStatus.OPEN and o.filled == pytest.approx(0.005)
    ok, err = await desk.path.cancel(o)
    assert ok, err
    assert [(x.client_id, x.status, x.filled) for x in fx.orders] == [(o.client_order_id, "CANCELED", 0.005)]
    assert fx.balances["USDT"].locked == pytest.approx(0.0)
    (journaled,) = await desk.journal(o.client_order_id)
    assert (journaled.status, journaled.filled) == (OrderStatus.CANCELED, pytest.approx(0.005))
    assert [f.quantity for f in desk.fills] == [pytest.approx(0.005)]
    assert desk.pf.positions[BTC].quantity == pytest.approx(0.005 * (1 - fx.fee_rate))


async def test_duplicate_client_id_rejected_while_open(fx, make_desk):
    """A resting order whose answer was lost, that lookups miss for a while: the resend with the same id is refused
    by the exchange because the first is open, and the path goes back to looking it up."""
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "not_found_once", times=3)
    fx.fault(OPEN_ORDERS, "stale", seconds=60, times=1000)  # the list does not show it yet either
    o = (await desk.buy(type="limit", price=25_000.0)).order
    assert o.status is OrderStatus.IN_DOUBT
    await desk.path.poll()  # not found, inside the settle window: wait
    await asyncio.sleep(SETTLE_S * 1.2)
    await desk.path.poll()  # not found after it, once: it may be a replica that lags
    assert desk.sent_ids() == [o.client_order_id]
    await desk.path.poll()  # and again: surely absent, so it is sent again with the same id
    assert o.status is OrderStatus.IN_DOUBT  # "Duplicate order sent.": it exists after all
    await desk.resolve(o, until=lambda o: o.status is OrderStatus.OPEN)
    assert desk.sent_ids() == [o.client_order_id, o.client_order_id]
    assert [r.status for r in fx.requests_to(POST_ORDER)] == [None, 400]  # lost, then "Duplicate order sent."
    assert [(x.client_id, x.status) for x in fx.orders] == [(o.client_order_id, "NEW")]
    (journaled,) = await desk.journal(o.client_order_id)
    assert journaled.status is OrderStatus.OPEN and journaled.exchange_id == str(fx.orders[0].order_id)


async def test_a_repeat_the_exchange_calls_a_duplicate_is_never_sent_again_nor_ended_as_absent(fx, make_desk):
    """Lookups that miss a resting order for long: its one repeat is answered "Duplicate order sent.", the venue's
    word that it has the order. It is not sent again, and not ended as absent after repeated sends: it stays in
    doubt until a lookup finds it (a rejected journal would leave its later fill out of the books)."""
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "not_found_once", times=1000)
    fx.fault(OPEN_ORDERS, "stale", seconds=60, times=1000)  # nor does the list show it yet
    o = (await desk.buy(type="limit", price=25_000.0)).order
    for _ in range(24):
        await desk.path.poll()
        await asyncio.sleep(SETTLE_S / 3)
    assert o.status is OrderStatus.IN_DOUBT, (o.status, o.error)
    assert desk.sent_ids() == [o.client_order_id] * 2
    fx.clear_faults(OPEN_ORDERS)
    fx.clear_faults(GET_ORDER)
    await desk.resolve(o, until=lambda o: o.status is OrderStatus.OPEN)
    fx.fill(o.client_order_id)
    await desk.resolve(o)
    assert o.status is OrderStatus.FILLED and [f.quantity for f in desk.fills] == [pytest.approx(0.01)]
    assert desk.sent_ids() == [o.client_order_id] * 2 and len(fx.orders) == 1


async def test_an_open_order_the_exchange_still_lists_is_not_ended_when_lookups_miss_it(fx, make_desk):
    """An order the venue answered open, whose lookups by id then miss it for long (a lagging replica): the venue's
    open orders still list it, so it is not ended as lost; its fill, when it comes, is booked."""
    desk = await make_desk()
    o = (await desk.buy(type="limit", price=25_000.0)).order
    assert o.status is OrderStatus.OPEN
    fx.fault(GET_ORDER, "not_found_once", times=1000)
    for _ in range(24):
        await desk.path.poll()
        await asyncio.sleep(SETTLE_S / 3)
    assert o.status is OrderStatus.OPEN and desk.path.live.get(o.client_order_id) is o, (o.status, o.error)
    (journaled,) = await desk.journal(o.client_order_id)
    assert journaled.status is OrderStatus.OPEN
    fx.fault("DELETE /api/v3/order", "not_found_once", times=1000)  # its cancel is lost by id as well
    for _ in range(5):  # past the settle window and three looks: the cancel alone would take it as lost
        ok, why = await desk.path.cancel(o)
        assert not ok and o.status is OrderStatus.OPEN, (why, o.status, o.error)
        await asyncio.sleep(SETTLE_S / 2)
    fx.clear_faults("DELETE /api/v3/order")
    fx.clear_faults(GET_ORDER)
    fx.fill(o.client_order_id)
    await desk.resolve(o)
    assert o.status is OrderStatus.FILLED and [f.quantity for f in desk.fills] == [pytest.approx(0.01)]


async def test_an_order_in_doubt_the_exchange_lists_open_is_resolved_from_the_list_and_never_ended_absent(
        fx, make_desk):
    """A resting order whose answer was lost, lookups by id missing it for good, its repeat answered "Duplicate order
    sent.": the exchange's open orders list it, so it is taken from the list (open), not left in doubt; a cancel the
    exchange cannot find by id does not end it as absent while the list has it; its fill is booked."""
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "not_found_once", times=1000)
    o = (await desk.buy(type="limit", price=25_000.0)).order
    for _ in range(24):
        await desk.path.poll()
        await asyncio.sleep(SETTLE_S / 3)
    assert o.status is OrderStatus.OPEN and o.exchange_id == str(fx.orders[0].order_id), (o.status, o.error)
    assert desk.sent_ids().count(o.client_order_id) <= 2
    fx.fault("DELETE /api/v3/order", "not_found_once", times=1000)
    for _ in range(5):
        ok, why = await desk.path.cancel(o)
        assert not ok and o.status is OrderStatus.OPEN, (why, o.status, o.error)
        await desk.path.poll()
        await asyncio.sleep(SETTLE_S / 2)
    assert o.status is OrderStatus.OPEN, (o.status, o.error)
    fx.clear_faults("DELETE /api/v3/order")
    fx.clear_faults(GET_ORDER)
    fx.fill(o.client_order_id)
    await desk.resolve(o)
    assert o.status is OrderStatus.FILLED and [f.quantity for f in desk.fills] == [pytest.approx(0.01)]


async def test_a_cancel_asked_of_an_order_in_doubt_stands_until_the_exchange_has_cancelled_it(fx, make_desk):
    """The kill switch's cancel of an order in doubt ("cancelled if it appears"): the order appears in the exchange's
    open orders, and its cancel by id misses it once more. The cancel stands: it is sent again at the polls after,
    until the exchange has cancelled the order, which then never fills."""
    desk = await make_desk()
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "not_found_once", times=1000)
    fx.fault("DELETE /api/v3/order", "not_found_once", times=2)  # the kill switch's cancel, and the next one
    o = (await desk.buy(type="limit", price=25_000.0)).order
    assert o.status is OrderStatus.IN_DOUBT
    ok, _ = await desk.path.cancel(o)
    assert not ok
    for _ in range(24):
        await desk.path.poll()
        await asyncio.sleep(SETTLE_S / 3)
    fx.clear_faults(GET_ORDER)
    await desk.resolve(o)
    assert o.status is OrderStatus.CANCELED and [x.status for x in fx.orders] == ["CANCELED"], (o.status, o.error)
    fx.set_price("BTCUSDT", 24_000.0)
    await desk.path.poll()
    assert desk.fills == []


async def test_a_cancel_the_exchange_does_not_find_of_an_order_a_lookup_finds_open_is_sent_again(fx, make_desk):
    """The exchange answers a cancel "Unknown order sent." for a moment after the order was created, and the lookup
    after it finds the order open: the cancel is not done, and goes out again at the next poll, until the order is
    cancelled at the exchange (a cancelled order must not fill later)."""
    desk = await make_desk()
    o = (await desk.buy(type="limit", price=25_000.0)).order
    assert o.status is OrderStatus.OPEN
    fx.fault("DELETE /api/v3/order", "not_found_once")
    ok, _ = await desk.path.cancel(o)
    assert not ok
    await desk.resolve(o)
    assert o.status is OrderStatus.CANCELED and [x.status for x in fx.orders] == ["CANCELED"], (o.status, o.error)


async def test_a_cancel_due_stays_stored_while_it_is_on_the_wire(fx, make_desk):
    """A cancel the poll sends again stays in the stored map until answered: another order's cancel stored
    meanwhile must not write the map without it, or a crash then would lose it."""
    desk = await make_desk(db="due.db")
    a = (await desk.buy(type="limit", price=25_000.0)).order
    b = (await desk.buy(type="limit", price=25_000.0)).order
    fx.fault("DELETE /api/v3/order", "not_found_once")
    ok, _ = await desk.path.cancel(a)
    assert not ok and a.client_order_id in await desk.store.get_kv(CANCEL_DUE_KEY)
    fx.fault("DELETE /api/v3/order", "hang", seconds=1.5)  # a's cancel from the poll: on the wire
    fx.fault("DELETE /api/v3/order", "not_found_once")  # b's, not found
    poll = asyncio.ensure_future(desk.path.poll())
    await asyncio.sleep(0.2)
    await desk.path.cancel(b)
    stored = await desk.store.get_kv(CANCEL_DUE_KEY)
    poll.cancel()
    with contextlib.suppress(BaseException):
        await poll
    assert a.client_order_id in stored and b.client_order_id in stored, stored


# -- an outage longer than the breaker threshold -----------------------------------------------------------------

async def test_exchange_down_past_the_breaker_threshold_then_back(fx, make_desk):
    desk = await make_desk(threshold=3, recovery_s=30.0)
    fx.down = True
    a = (await desk.buy()).order
    assert a.status is OrderStatus.IN_DOUBT and desk.breaker.failures == 1
    await desk.path.poll()
    await desk.path.poll()
    assert desk.breaker.state == "open"
    seen = len(fx.requests)
    b = await desk.buy()  # refused by the BREAKER_OPEN gate: never journaled, never sent
    assert not b.accepted and b.order is None and "BREAKER_OPEN" in b.reason
    await desk.path.poll()  # lookups wait for the breaker too
    assert len(fx.requests) == seen
    fx.down = False
    desk.breaker_now += 31.0
    await asyncio.sleep(SETTLE_S)
    await desk.resolve(a)  # the half-open probe finds nothing, so the order is sent again with its own id
    assert desk.breaker.state == "closed"
    assert [e.state for e in desk.events if isinstance(e, BreakerChanged)] == ["open", "half_open", "closed"]
    assert_one_filled_order(fx, a.client_order_id)
    await assert_journal_filled(desk, a.client_order_id)
    assert [r.params.get("newClientOrderId") for r in fx.requests_to(POST_ORDER) if r.status == 200] == \
        [a.client_order_id]


# -- restart with an order in flight ---------------------------------------------------------------------------

@pytest.mark.parametrize("reached", [True, False])
async def test_restart_with_an_order_in_flight(fx, make_desk, reached):
    """The process stops between journaling an order and hearing back; the next start resolves it, once."""
    first = await make_desk()
    fx.fault(POST_ORDER, "hang", seconds=5, execute=reached)
    task = asyncio.create_task(first.buy())
    while not fx.requests_to(POST_ORDER):
        await asyncio.sleep(0.01)
    task.cancel()  # the engine dies with the request in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    (cid,) = [o.client_order_id for o in await first.store.live_orders()]

    second = await make_desk()  # same database
    recovered = await second.path.recover()
    assert [(o.client_order_id, o.status) for o in recovered] == [(cid, OrderStatus.IN_DOUBT)]
    await second.resolve(recovered[0])
    assert_one_filled_order(fx, cid)
    assert second.sent_ids() == [cid] * (1 if reached else 2)
    (journaled,) = await second.journal(cid)
    assert (journaled.status, journaled.filled) == (OrderStatus.FILLED, 0.01)


# -- kill switch: many open orders cancelled concurrently ------------------------------------------------------

async def test_cancel_all_with_50_open_orders(fx, make_desk):
    risk = RiskSettings(max_open_positions=60, max_orders_per_minute=60, max_daily_trades=60,
                        max_concentration_pct=100.0)
    desk = await make_desk(risk=risk)
    fx.balances["USDT"].free = 1_000_000.0
    orders = []
    for i in range(50):
        sub = await desk.buy(qty=0.001, type="limit", price=20_000.0 + i)
        assert sub.accepted, sub.reason
        orders.append(sub.order)
    assert len(fx.open_orders()) == 50
    report = await desk.path.cancel_all()
    assert sorted(report.cancelled) == sorted(o.client_order_id for o in orders) and report.failed == []
    assert fx.open_orders() == [] and {o.status for o in fx.orders} == {"CANCELED"}
    assert desk.path.live == {}


# -- a new order's answer that names a trade the order did not make ----------------------------------------------

async def test_a_full_answer_naming_a_trade_too_many_is_booked_from_the_exchange_s_trade_list(fx, make_desk):
    """A new order's FULL answer names one trade more than the order made; the exchange's own list of the order's
    trades is right from the start. The answer's trades are no account of the order (they add up to more than it
    filled): the order is booked from the list, not held unbooked for as long as the engine runs."""
    desk = await make_desk()
    fx.fault(POST_ORDER, "extra_trade")
    o = (await desk.buy(0.01)).order
    await desk.resolve(o, rounds=20)
    assert (o.status, o.filled) == (OrderStatus.FILLED, 0.01)
    assert_one_filled_order(fx, o.client_order_id)
    await assert_journal_filled(desk, o.client_order_id)
    assert desk.pf.cash == pytest.approx(fx.balances["USDT"].total)


async def test_a_lookup_the_exchange_refused_once_leaves_no_error_on_the_order_that_then_fills(fx, make_desk):
    """One lookup of an open order is refused (the key refused for a moment, -2015): the order says so while it is
    all that is known. The exchange then shows it filled: its journal row and its last record carry no error."""
    desk = await make_desk()
    o = (await desk.buy(0.01, type="limit", price=29_000.0)).order
    assert o.status is OrderStatus.OPEN
    fx.fault(GET_ORDER, "error", status=401, code=-2015, msg="Invalid API-key, IP, or permissions for action.")
    await desk.path.poll()
    assert "-2015" in o.error, o.error
    fx.set_price("BTCUSDT", 28_900.0)  # the limit fills
    await desk.resolve(o)
    (journaled,) = await desk.journal(o.client_order_id)
    (last,) = [e for e in desk.events if isinstance(e, OrderEvent) and e.client_order_id == o.client_order_id
               and e.status == "filled"]
    assert (journaled.status, journaled.error, last.error) == (OrderStatus.FILLED, "", "")
