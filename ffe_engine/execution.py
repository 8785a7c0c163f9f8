"""The single order path. Every order (strategy, operator, stop-loss/take-profit, flatten, reconciliation) goes
through `OrderPath.submit`; nothing else calls a venue's create_order or cancel_order.

submit: risk gates -> round to the venue's precision -> client order id -> journal (durable) -> re-check the
engine state (a halt may have landed meanwhile) -> venue call through the circuit breaker.

create_order is never retried blindly. When its answer is lost (timeout, 5xx, connection reset) the order is
IN_DOUBT: it is looked up by client order id, and sent again with the same id only when it is surely absent,
meaning a lookup made after the venue's settle window (the time after which the venue refuses the original
request) still does not find it. While its first send waits for an answer, only the sender may send it.

An order ended without the venue's word (absent by its lookups) is looked up for a while after: one the venue shows
after all is cancelled at once, whatever the engine's state, and what it filled booked against it, its status kept.

An order's status changes in one place (`_move`) and only forward (OrderStatus.can_become): the poll and the
sender may both hear about one order, in either order, and the later, older news never undoes the earlier.

After a rate limit with Retry-After, no order goes to the venue before that time: new orders are refused
(VENUE_HOLD, with the time on the Submission for a caller that sends it again then) and orders in doubt wait; a
cancel it kept from the exchange is sent by the poll once it is over. Each fault on the order route, and its end,
is said once (a venue_fault event and one log line).
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable


from . import fmt, logs
from .breaker import SEND, BreakerOpen, CircuitBreaker
from .clock import Clock
from .errors import ControlError
from .events import Event, EventBus, FillEvent, OrderEvent, OrderSettled, VenueFault
from .ids import IdSource
from .model import (Fill, GateResult, MarketInfo, Order, OrderReason, OrderRequest, OrderStatus, Side, VenueOrder,
                    floor_to_step)
from .portfolio import Portfolio, entry_day_of
from .present import CANCELED_THERE, EXPIRED_THERE, REJECTED_THERE
from .risk import EntryInFlight, Gatekeeper, OrderIntent, first_failure
from .settled_fee import NO_FEE, SettledFee
from .store import FillRecord, Store
from .tasks import to_its_end
from .trading_state import TradingState
from .turns import Turns
from .venues.base import DuplicateOrder, OrderInDoubt, Venue, VenueError, VenueUnavailable

MAX_RESENDS = 3
CANCEL_ASKED_KEY = "orders_cancel_asked"  # kv: the orders in doubt whose cancel was asked (see OrderPath.cancel)
REPEAT_REFUSED_KEY = "orders_repeat_refused"  # kv: the orders in doubt whose repeat the venue refused
RESENT_KEY = "orders_resent"  # kv: client order id -> times an order in doubt was sent again (at most MAX_RESENDS)
HOLD_KEY = "venue_hold_until"  # kv: the wall time before which the venue asked for no orders (Retry-After)
CANCEL_DUE_KEY = "orders_cancel_due"  # kv: cancels a Retry-After kept from the venue -> the wall time it ends
ENDED_KEY = "orders_ended_unseen"  # kv: orders ended without the venue's word -> the wall time they are watched until
ENDED_SAID_KEY = "orders_ended_said"  # kv: of those, the orders the venue said it cancelled with part unfilled
REAPPEARED_KEY = "orders_reappeared"  # kv: of those, the orders the venue has shown since: said once, across restarts
WATCH_WINDOWS = 30  # settle windows an order ended without the venue's word is looked up for after its end

log = logs.get_logger("ffe.orders")

FillHandler = Callable[[Order, Fill, OrderIntent], Awaitable["FillRecord | None"]]


@dataclass(slots=True)
class Submission:
    accepted: bool  # sent to the venue (or in doubt there)
    gates: list[GateResult]
    order: Order | None = None
    reason: str = ""  # why not accepted
    # Wall time of the venue's Retry-After when the order was refused because of it: it may go once that time is
    # over. None otherwise. `answered`: the exchange itself refused it so (a 418 or 429), rather than it being held
    # back unsent by a Retry-After given before.
    held_until: float | None = None
    answered: bool = False


@dataclass(slots=True)
class CancelReport:
    cancelled: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)  # open when the cancels began, filled before theirs reached them
    elapsed_ms: float = 0.0
    # What a kill switch or flatten answered before it was done (another control under way, or an order on the
    # wire): each {"detail": ...}, with the "client_order_id" of an order whose cancel waits for its create_order's
    # answer.
    under_way: list[dict[str, str]] = field(default_factory=list)
    # A halt's: the positions a flatten under way was closing, which this halt ended, still held.
    flatten_ended: list[str] = field(default_factory=list)


@dataclass(slots=True)
class OnTheWire:
    """An order whose create_order is on the wire, and the event set once the venue has answered it."""
    order: Order
    answered: asyncio.Event = field(default_factory=asyncio.Event)


def counts_in_daily_trades(reduce_only: bool, reason: OrderReason) -> bool:
    """Whether an order is an entry DAILY_TRADES counts: one from a signal or the operator, or one of theirs a restore's
    recovery journaled from the venue; not an exit (as Store.entries_since reads the journal)."""
    return not reduce_only and reason in (OrderReason.SIGNAL, OrderReason.OPERATOR, OrderReason.RECONCILE)


class OrderPath:
    def __init__(self, *, store: Store, venue: Venue, breaker: CircuitBreaker, gatekeeper: Gatekeeper,
                 portfolio: Portfolio, bus: EventBus, clock: Clock, trading: TradingState, on_fill: FillHandler,
                 settle_s: float = 0.0, cancel_timeout_s: float = 5.0,
                 book: Callable[[], dict[str, Any]] = dict, ids: IdSource | None = None,
                 base_fee_rate: float = 0.0) -> None:
        self.store = store
        self.venue = venue
        self.breaker = breaker
        self.gatekeeper = gatekeeper
        self.portfolio = portfolio  # what an exit may sell, the price to check minimums at; entries sent are counted
        self.bus = bus
        self.clock = clock
        self.now_ms = clock.now_ms
        self.trading = trading
        self.on_fill = on_fill
        # Book state the venue's answer may have changed (an in-process venue's own book), stored with each
        # journal entry: a kill right after an accept must not leave an order the venue forgot.
        self.book = book
        self.settle_s = settle_s
        self.base_fee_rate = base_fee_rate  # the fee a buy may take in the coin bought (dust_at_stop)
        self.cancel_timeout_s = cancel_timeout_s
        self.ids = ids or IdSource()  # the client order ids; random unless a test fixes them
        self.live: dict[str, Order] = {}  # orders that are not final
        self.intents: dict[str, OrderIntent] = {}
        self._doubt_deadline: dict[str, float] = {}
        self._resends: dict[str, int] = {}
        self._poll_lock = asyncio.Lock()
        self._placing = asyncio.Lock()  # held from sizing an order until it is in flight (see submit)
        self._placed = 0  # orders counted in flight so far: an entry gated before the last of them is gated again
        # The orders whose create_order is on the wire, by client order id, each with the event set once it is
        # answered. A lookup can end one before that answer (the exchange executed it and holds the answer: found
        # filled): no longer live, still on the wire.
        self._sending: dict[str, OnTheWire] = {}
        # One writer of an order at a time: a fill being booked changes its amounts in memory before they are
        # committed with it; another write of its state meanwhile (a cancel's end) would commit them without it.
        self._turns = Turns()
        # Cancels past their bound (collect), left to end: one cut off could be in the middle of recording what the
        # exchange answered (the order's end, a fill the books in memory already hold). The engine's stop waits
        # for them, as for its other work.
        self.late: set[asyncio.Task[tuple[bool, str]]] = set()
        self._doubted: set[str] = set()  # orders whose doubt was said and not yet its end
        # Entries DAILY_TRADES counts, while they are live: client order id -> the UTC day they count in. One that
        # ends rejected with nothing filled, whenever the venue says so, was not made: its day's count takes it back.
        self._counted: dict[str, int] = {}
        self.hold_until: float | None = None  # wall seconds: the venue asked (Retry-After) for no orders before
        self._held_back: dict[str, bool] = {}  # orders rejected for the venue's Retry-After -> the exchange answered
        # Cancels not done because the venue's Retry-After held them (not sent, or refused for it): client order id
        # -> wall time it ends; sent again by the poll once it has (see cancels_due).
        self._cancel_due: dict[str, float] = {}
        # The cancels at the venue now, by client order id, each resolved with its outcome: a second ask of the same
        # order (the operator's again, the poll's) waits for it rather than send another beside it.
        self._cancelling: dict[str, asyncio.Future[tuple[bool, str]]] = {}
        self.fills_recorded = 0  # how many fills this path has recorded: tells a reader whether one landed
        # When the books last took an order's change (a fill, a new status: a cancel frees locked funds), on the
        # clock's monotonic time. The venue's balance reads can lag its books by up to the settle window: one taken
        # sooner after it may not show it yet (Reconciler.run, Reconciler.accept). The operator's word on a change
        # the venue made long before (an order settled by hand, a sale made by hand) is no such change.
        self.changed_at: float | None = None
        # Orders in flight whose last look at the venue failed without an answer (the venue unavailable, the
        # breaker open): what they did there since is unknown (a reader comparing the venue's balances with the
        # books must not count on their fills being recorded).
        self._unread: set[str] = set()
        # Orders that lookups did not find, in a row: client order id -> (monotonic time of the first such lookup,
        # how many so far). An open order is taken as lost (`_lost`), one in doubt as absent (`_resolve`) on them.
        self._missing: dict[str, tuple[float, int]] = {}
        # Orders in doubt whose cancel was asked (stored before it goes out): never sent again; cancelled if they
        # appear, ended once surely absent (the original request may still reach the venue until the settle window
        # has passed).
        self._cancel_asked: set[str] = set()
        # Orders whose error is a lookup's the venue refused (a key refused for a moment): the venue's next view of
        # the order answers it, and the order no longer carries it (a filled order has no error).
        self._lookup_refused: set[str] = set()
        # Orders this engine sent a cancel for: a cancel the venue then shows is not said to be the exchange's own.
        self._cancels_sent: set[str] = set()
        # Orders in doubt whose repeat (sent again with the same id) the venue refused: the first send may be there
        # all the same (a lookup can lag behind the venue; a sell's repeat is refused for the coins it sold). Never
        # sent again, by this engine or the next (stored); ended only by the venue's word, or by a cancel once
        # surely absent.
        self._repeat_refused: set[str] = set()
        # Asked before an order in doubt is sent again: a reason to think the venue has it although lookups do not
        # find it (its balance moved as the order would move it), or None. Set by the engine (the reconciler).
        self.placed_evidence: Callable[[Order], Awaitable[str | None]] | None = None
        # Asked before an entry proven absent is sent again: "" when what decided it still stands, else why not (it
        # then ends rejected, "not sent again: ..."), or None when that cannot be told now (asked again at the next
        # poll). Set by the engine. An exit is sent again whatever it says: the position must be closed.
        self.entry_stands: Callable[[Order, OrderIntent], Awaitable[str | None]] | None = None
        self._evidence_said: set[str] = set()
        # Orders whose venue answer showed a fill without its price: not booked until an answer gives it.
        self._unpriced: set[str] = set()
        # Fills on their way to the books (_book): their orders already count them filled (a final one has left
        # `live`), the books not yet. Counted with the orders in flight until the books have taken them.
        self._booking: list[tuple[Order, Fill]] = []
        # Orders whose last answer showed a fill beyond their trades (read later): client order id -> monotonic
        # time the venue first showed it so.
        self._behind: dict[str, float] = {}
        # Of those, the orders the venue has said ended (cancelled, expired, filled) while their trades lag: known to
        # it, so lookups that do not find them (a replica behind) never make them lost (_lost); they wait for their
        # trades.
        self._ended_behind: set[str] = set()
        # Orders ended without the venue's word (absent by their lookups, or not sent again), which the venue may
        # have all the same: its lookups can lag past the settle window. Client order id -> the order and the wall
        # time until which each poll looks it up by its id. One the venue shows is taken in (`reappeared`): stored,
        # and watched until the venue shows it done.
        self._ended: dict[str, tuple[Order, float]] = {}
        self._reappeared: set[str] = set()  # those the venue has shown: said once, watched until done there
        # Of the orders watched, those the venue itself said it cancelled (or expired) with part of them unfilled: a
        # cancel's answer is not its last word (an exchange that queues cancels answers before it is done, one whose
        # answer raced a fill says so of an order that filled). Watched too, until a lookup a settle window after
        # their end shows them ended with nothing the books lack.
        self._said_ended: set[str] = set()
        # Of those, the ones a lookup has shown open: when it first did (monotonic). Taken in once lookups still show
        # it a settle window later: one lookup saying so may be a replica behind the cancel.
        self._said_open: dict[str, float] = {}
        # Orders taken in whose cancel this engine sent: when (monotonic), and whether its answer said it ended. That
        # answer is not the order's last word (a queued cancel is answered before it is done): a lookup says when it
        # is done. The cancel is sent again a settle window later, not before: a read before then may lag behind it.
        self._taken_in_cancel: dict[str, tuple[float, bool]] = {}
        # Orders ended by the venue's own word that a lookup has since shown open: when it first did (reappeared).
        self._open_after_end: dict[str, float] = {}

    # ------------------------------------------------------------------ queries
    def unread(self) -> list[Order]:
        """The orders in flight that the last poll could not look up at the venue."""
        return [o for cid, o in self.live.items() if cid in self._unread]

    def stuck_in_doubt(self, past_s: float) -> list[Order]:
        """The orders in doubt that the venue's lookups, past their settle window, have not found for more than
        `past_s`, and that were not sent again (the venue's balance shows them placed, or their repeat was refused).
        Time while no lookup reached the venue (it could not be reached, the breaker open) does not count until
        one has answered: nothing has said the order is absent. At a venue with no settle window (the paper venue,
        which answers from its own book) an order is in doubt only until it is sent again, once the venue can take
        it (it has a price): stuck only once its repeat was refused."""
        now = self.clock.monotonic()
        return [o for cid, o in self.live.items() if o.status is OrderStatus.IN_DOUBT
                and cid in self._missing and now - self._missing[cid][0] > past_s
                and (self.settle_s > 0 or cid in self._repeat_refused)]

    def trades_behind(self) -> list[Order]:
        """The orders in flight whose fill the venue has shown beyond their trades, for at most the venue's settle
        window since it first did: that fill is in the venue's balances and not yet in the journal (an exchange's
        trade history can trail its order book). Past the window, trades that still lag are not a lag."""
        now = self.clock.monotonic()
        return [o for cid, o in self.live.items()
                if cid in self._behind and now - self._behind[cid] < self.venue.settle_s]

    def trades_lagging(self) -> list[Order]:
        """The orders in flight whose fill the venue has shown beyond their trades, however long ago it first did.
        Past the settle window that lag is compared (`trades_behind`), but the venue's balances still hold a fill
        the journal books only once its trades are listed: taken into a baseline or the cash before then, it would
        be counted twice."""
        return [o for cid, o in self.live.items() if cid in self._behind]

    def watching(self) -> bool:
        """Whether an order the journal ended without the venue's word is still looked up at each poll."""
        return bool(self._ended)

    def reappearing(self) -> list[Order]:
        """Orders the journal has ended that the venue has shown since and not yet shown done (cancelled, with its
        trades): what they filled may be in the venue's balances and not yet in the books."""
        return [o for cid, (o, _) in self._ended.items() if cid in self._reappeared]

    def sending(self) -> list[str]:
        """The orders whose create_order is on the wire: the venue has not answered it yet."""
        return list(self._sending)

    def in_flight(self) -> list[Order]:
        """The orders not final, and those a lookup has ended while their create_order is still on the wire (found
        filled before the exchange answered it): what a kill switch pressed now reports on, cancelled or filled."""
        return [*self.live.values(), *(w.order for cid, w in self._sending.items() if cid not in self.live)]

    async def answered(self, orders: Iterable[Order]) -> None:
        """Once the exchange has answered the create_order of each of `orders` still on the wire, for as long as
        it takes (the send's own timeout bounds it)."""
        for o in orders:
            sending = self._sending.get(o.client_order_id)
            if sending is not None:
                await sending.answered.wait()

    def entries_in_flight(self) -> list[EntryInFlight]:
        """The entries still to fill, and the fills of entries on their way to the books."""
        return ([EntryInFlight(o.symbol, o.side, max(0.0, o.quantity - o.filled))
                 for o in self.live.values() if not o.reduce_only]
                + [EntryInFlight(f.symbol, f.side, f.quantity) for o, f in self._booking if not o.reduce_only])

    def entries(self, symbol: str) -> list[Order]:
        """The entries of `symbol` in flight (not reduce-only)."""
        return [o for o in self.live.values() if o.symbol == symbol and not o.reduce_only]

    def pending_entry(self, symbol: str) -> bool:
        """Whether an entry of `symbol` is in flight, or its fill on its way to the books."""
        return bool(self.entries(symbol)) or any(o.symbol == symbol and not o.reduce_only for o, _ in self._booking)

    def pending_exit_qty(self, symbol: str) -> float:
        """What the exits of `symbol` working have still to sell, and what their fills on their way to the books
        sold."""
        return (sum(o.quantity - o.filled for o in self.live.values() if o.symbol == symbol and o.reduce_only)
                + sum(f.quantity for o, f in self._booking if o.symbol == symbol and o.reduce_only))

    def _exit_room(self, symbol: str) -> float:
        """What an exit may sell: what the account holds of the position (Portfolio.sellable) less the exits working."""
        return self.portfolio.sellable(symbol) - self.pending_exit_qty(symbol)

    def exit_room(self, symbol: str, price: float | None) -> float:
        """What an exit could sell now, down to the venue's amount step; 0 when the venue takes no order for it (less
        than one step, or than its minimum quantity or value at `price`): coins beside the exits working that no order
        can sell, which `submit` would refuse."""
        market = self.venue.market(symbol)
        qty = floor_to_step(max(self._exit_room(symbol), 0.0), market.amount_step)
        return 0.0 if qty < market.amount_step or market.below_minimum(qty, price) else qty

    def exits_sell_all(self, symbol: str, price: float | None) -> bool:
        """Whether sells are working on `symbol` and sell all the venue could take of the position beside them: a
        crossed level's exit has nothing left to send (one working on a part leaves it the rest)."""
        return self.pending_exit_qty(symbol) > 0 and not self.exit_room(symbol, price)

    def check(self, intent: OrderIntent, *, until_refused: bool = False) -> list[GateResult]:
        return self.gatekeeper.evaluate(intent, until_refused=until_refused)

    def _emit(self, o: Order) -> None:
        self.bus.publish(_order_event(o))

    def _allowed_now(self, o: Order) -> bool:
        return self.trading.allows(o).passed

    # ------------------------------------------------------------------ submit
    async def submit(self, intent: OrderIntent, gates: list[GateResult] | None = None,
                     on_journal: Callable[[Order, list[GateResult]], object] | None = None) -> Submission:
        """Check the gates (unless `gates` were just evaluated for this very intent), then journal and send.
        `on_journal(order, gates)` is called as the order is journaled, before it is sent: the events it publishes
        (the strategy's decision) are committed with the journal entry, so that no crash leaves an order without
        what made it."""
        placed_before = self._placed
        if gates is None:
            gates = self.gatekeeper.evaluate(intent)
        failure = first_failure(gates)
        if failure is not None:
            return self._refused(intent, gates, failure.refusal())

        hold = await self._held()
        if hold:
            refused = self._refused(intent, gates, hold, code="VENUE_HOLD")
            refused.held_until = self.hold_until
            return refused

        # What an exit may sell is what the books hold less the exits already working: from that sum until the order
        # is counted among them (journaled, in flight), no other order is sized, or two exits asked for at once (a
        # stop-loss on the bar and the operator's close) would each sell the whole position.
        # An entry checked while another order was being placed, or before one was placed since, is checked again
        # once that one counts in flight: two entries asked for at once (the operator's and the strategy's) would
        # each pass the limits alone.
        contended = self._placing.locked()
        async with self._placing:
            if (contended or self._placed != placed_before) and not intent.reduce_only:
                gates = self.gatekeeper.evaluate(intent)
                failure = first_failure(gates)
                if failure is not None:
                    return self._refused(intent, gates, failure.refusal())
            # DAILY_TRADES: the day an entry counts in, journaled with it (its journal time alone cannot tell it at a
            # midnight: an entry of the day's last bar and one made as the next day began share it).
            counted = counts_in_daily_trades(intent.reduce_only, intent.reason)
            day = self.portfolio.day if counted else None
            placed = await self._journal(intent, gates, on_journal, entry_day=day)
        if isinstance(placed, Submission):
            return placed
        o = placed
        now = o.created_ts
        if not self._allowed_now(o):
            await self._finish(o, OrderStatus.REJECTED, f"engine {self.trading.state.value} before send")
            return Submission(False, gates, o, o.error)
        # DAILY_TRADES counts the entry from here, in flight: one checked meanwhile counts it; taken back if the
        # venue refuses it, at once or later (`_uncount`: an entry it refused was not made). In the day journaled
        # with it: a day begun since (the journal's write awaited) does not count it.
        counted = counted and self.portfolio.day == day
        if not intent.reduce_only:
            # ORDER_RATE: every entry sent, refused by the exchange or not, as its own rate limit counts requests
            self.portfolio.note_order(now)
        if counted and day is not None and not o.status.final:
            self.portfolio.entries_today += 1
            self._counted[o.client_order_id] = day
        await self._send(o)
        held_back = self.hold_until if o.client_order_id in self._held_back else None
        answered = self._held_back.pop(o.client_order_id, False)
        return Submission(o.status is not OrderStatus.REJECTED, gates, o, o.error, held_until=held_back,
                          answered=answered)

    async def _journal(self, intent: OrderIntent, gates: list[GateResult],
                       on_journal: Callable[[Order, list[GateResult]], object] | None = None,
                       entry_day: int | None = None) -> "Order | Submission":
        """Size, round and journal the order `intent` asks for, and count it in flight; or the refusal. `entry_day`:
        the UTC day an entry counts in for DAILY_TRADES, journaled with it where its journal time does not tell it
        (one made at a midnight as the new day began)."""
        market = self.venue.market(intent.symbol)
        qty = intent.quantity
        if intent.reduce_only:
            # Never sell more than the position still holds after the exits already working.
            # Nor more than the account holds of it (an accepted shortfall of coins: Portfolio.unbacked).
            left = self._exit_room(intent.symbol)
            if left < market.amount_step:
                held = fmt.qty(max(left, 0.0), 8)
                return self._refused(intent, gates, f"NOTHING_HELD: nothing to sell, the books hold {held} "
                                                    f"{intent.symbol.partition('/')[0]} after the sells working",
                                     code="NOTHING_HELD")
            qty = min(qty, left)
        qty = floor_to_step(qty, market.amount_step)
        # A limit order at its price; an entry at the price it was sized at (an approval's, read from the exchange
        # now: the last close may be a bar old); an exit where the market is (its reference is its level, which the
        # market may be well past: the venue measures its minimum at its own price).
        last = self.portfolio.last_price.get(intent.symbol)
        if intent.type == "limit" and intent.price:
            price = intent.price
        elif intent.reduce_only:
            price = last or intent.ref_price or 0.0
        else:
            price = intent.ref_price or last or 0.0
        if market.below_minimum(qty, price):
            return self._refused(intent, gates, f"below venue minimum (qty {qty:.8g}, min notional "
                                                f"{market.min_notional})", code="BELOW_MINIMUM")
        stop = 0.0 if intent.reduce_only else intent.stop_loss or 0.0
        if dust_at_stop(market, qty, stop, self.base_fee_rate):
            # Sold at its stop-loss the position would be less than the venue takes: dust there, which no exit sells.
            return self._refused(intent, gates, below_minimum_at_stop(qty, stop, market.min_notional),
                                 code="BELOW_MINIMUM")

        now = self.now_ms()
        o = Order(client_order_id=self.ids.client_order_id(), symbol=intent.symbol, side=intent.side, quantity=qty,
                  type=intent.type, reason=intent.reason, venue=self.venue.name, decision_id=intent.decision_id,
                  price=intent.price, reduce_only=intent.reduce_only, created_ts=now, updated_ts=now, by=intent.by)
        def publish() -> None:
            if on_journal is not None:
                on_journal(o, gates)
            if intent.reason is not OrderReason.SIGNAL:
                # The strategy's gates are recorded with its decision; every other caller's with the order, in its
                # journal entry's transaction: a kill right after it leaves no order without them.
                self.store.add_gates(gates, decision_id=None, client_order_id=o.client_order_id, ts=self.clock.wall())
            self._emit(o)

        record = intent.as_dict()
        if entry_day is not None and entry_day != entry_day_of(now):  # said only where its time does not tell it
            record["entry_day"] = entry_day
        await self.store.journal_order(o, record, publish=publish)
        self.live[o.client_order_id] = o
        self._placed += 1
        self.intents[o.client_order_id] = intent
        return o

    # ------------------------------------------------------------------ venue faults
    def _fault(self, kind: str, phase: str, o: Order | None = None, detail: str = "",
               until: float | None = None) -> None:
        """Say a fault on the order route (or its end) once: to the console and the audit trail, and in the log."""
        cid = o.client_order_id if o is not None else ""
        self.bus.publish(VenueFault(venue=self.venue.name, kind=kind, phase=phase, client_order_id=cid,
                                    detail=detail, until=until))
        if phase == "fault":
            log.warning("venue fault", venue=self.venue.name, kind=kind, order=cid or None, detail=detail)
        else:
            log.info("venue fault resolved", venue=self.venue.name, kind=kind, order=cid or None, detail=detail)

    async def _hold(self, retry_after_s: float) -> None:
        # Retry-After is real seconds, counted from when the answer came: the clock's wall time, not market time.
        # Stored, so that a restart waits too: an exchange bans an address that goes on sending for longer.
        now = self.clock.wall()
        until = self.hold_until = now + retry_after_s
        await self.store.put_kv(HOLD_KEY, until, now)
        self._fault("rate_limit", "fault", detail=f"Retry-After {retry_after_s:g}s: no order sent before "
                                                  f"{_clock_text(until)}", until=until)

    async def _held(self) -> str:
        """Why no order may go to the venue now ("" when one may); says so once when a hold has ended."""
        if self.hold_until is None:
            return ""
        if self.clock.wall() < self.hold_until:
            return (f"VENUE_HOLD: {self.venue.name} asked for no orders before {_clock_text(self.hold_until)} "
                    "(Retry-After)")
        await self._hold_ended("orders go to the venue again")
        return ""

    def held_until(self) -> float | None:
        """The wall time before which the venue asked (Retry-After) for no orders, while it lasts; None after."""
        if self.hold_until is None or self.clock.wall() >= self.hold_until:
            return None
        return self.hold_until

    async def _hold_ended(self, detail: str) -> None:
        # Said once: the stored hold goes with it, or the next start would find it and say it again.
        self.hold_until = None
        await self.store.put_kv(HOLD_KEY, None, self.clock.wall())
        self._fault("rate_limit", "resolved", detail=detail)

    def _refused(self, intent: OrderIntent, gates: list[GateResult], reason: str, code: str = "") -> Submission:
        if intent.reason is not OrderReason.SIGNAL:
            # The strategy's refusals are recorded on its decision; other callers' are recorded here.
            self.bus.publish(OrderEvent(client_order_id="", decision_id=intent.decision_id, symbol=intent.symbol,
                                        side=intent.side.value, type=intent.type, quantity=intent.quantity,
                                        status="refused", reason=intent.reason.value, error=reason,
                                        venue=self.venue.name, by=intent.by))
            self.store.add_gates(gates, decision_id=intent.decision_id, client_order_id=None, ts=self.clock.wall())
        return Submission(False, gates, None, reason)

    def _request(self, o: Order) -> OrderRequest:
        return OrderRequest(client_order_id=o.client_order_id, symbol=o.symbol, side=o.side,
                            quantity=o.quantity, type=o.type, price=o.price, reduce_only=o.reduce_only)

    async def _send(self, o: Order) -> None:
        # A cancel issued while this send is on the wire waits for its answer: cancelling first would find
        # nothing, and the order would then open at the venue untracked.
        sent = self._sending[o.client_order_id] = OnTheWire(o)
        try:
            await self._send_once(o)
        finally:
            sent.answered.set()
            self._sending.pop(o.client_order_id, None)

    async def _send_once(self, o: Order) -> None:
        repeat = o.client_order_id in self._resends
        try:
            vo = await self.breaker.call(lambda: self.venue.create_order(self._request(o)), SEND)
        except BreakerOpen as exc:
            if repeat:
                await self._repeat_not_placed(o, str(exc), refused=False)
                return
            await self._finish(o, OrderStatus.REJECTED, str(exc))
            return
        except DuplicateOrder as exc:
            # The venue has an order of this id: never sent again; it stays in doubt until a lookup finds it.
            await self._repeat_not_placed(o, str(exc), refused=True)
            return
        except OrderInDoubt as exc:
            if exc.retry_after:  # a rate-limit page that is not the exchange's word: its wait is kept all the same
                await self._hold(exc.retry_after)
            # The poll may have found the order at the venue while this answer was on its way: then the venue
            # has spoken and the lost answer changes nothing.
            if not self._move(o, OrderStatus.IN_DOUBT, str(exc)):
                self._fault("in_doubt", "fault", o, str(exc)[:300])
                self._fault("in_doubt", "resolved", o, f"{o.status.value}: the venue had shown it before")
                return
            self._doubt_deadline[o.client_order_id] = self.clock.monotonic() + self.settle_s
            await self._write_state(o, self.book(), publish=functools.partial(self._emit, o))
            return
        except VenueUnavailable as exc:  # refused before execution (rate limit, maintenance)
            if exc.retry_after:
                await self._hold(exc.retry_after)
            if repeat:
                if not exc.sent:  # held back (a Retry-After; the paper venue without a price yet): no send to count
                    self._resends[o.client_order_id] -= 1
                    await self._keep_resends()
                await self._repeat_not_placed(o, f"venue unavailable: {exc}", refused=False, held=not exc.sent)
            elif exc.retry_after:
                self._held_back[o.client_order_id] = exc.sent
                await self._finish(o, OrderStatus.REJECTED, f"{await self._held()}; {exc}")
            else:
                await self._finish(o, OrderStatus.REJECTED, f"venue unavailable: {exc}")
                self._fault("refused", "fault", o, f"not placed: {exc}"[:300])
            return
        except VenueError as exc:
            if repeat:
                await self._repeat_not_placed(o, str(exc), refused=True)
                return
            await self._finish(o, OrderStatus.REJECTED, str(exc))
            return
        await self._apply(o, vo)

    async def _repeat_not_placed(self, o: Order, why: str, *, refused: bool, held: bool = False) -> None:
        """A repeat of an order in doubt did not place it. That says nothing of its first send, which a lookup
        lagging behind the venue can miss: the order stays in doubt and is looked up until the venue shows it. A
        repeat the venue refused (a sell refused for the coins the first sold, a duplicate id) is not tried
        again. `held`: it was not sent (held back), which is recorded once for the same reason."""
        cid = o.client_order_id
        if refused:
            self._repeat_refused.add(cid)
            await self.store.put_kv(REPEAT_REFUSED_KEY, sorted(self._repeat_refused & set(self.live)),
                                    self.clock.wall())
        said = f"sent again, not placed: {why}"
        again = held and o.error == said  # the last try's word (kept through the resend): recorded already
        if not self._move(o, OrderStatus.IN_DOUBT, said):
            return
        self._doubt_deadline[cid] = self.clock.monotonic() + self.settle_s
        if again:
            # The paper venue without a price yet holds back the sends of a start at each poll: said once.
            return
        await self._write_state(o, self.book(), publish=functools.partial(self._emit, o))

    def _move(self, o: Order, status: OrderStatus, error: str | None = None, *, venue_news: bool = True) -> bool:
        """The one place an order's status changes. A move its current status does not allow (a final status
        changing, an order seen OPEN going back to IN_DOUBT) is refused: the caller then records nothing.
        An order going into doubt, and coming out of it with the venue's word, is said once each. `venue_news`:
        False for the operator's word on what the venue did long before (its balance reads show it already)."""
        prev = o.status
        if not prev.can_become(status):
            log.debug("order status kept", client_order_id=o.client_order_id, status=prev.value,
                      refused=status.value)
            return False
        o.status = status
        o.updated_ts = self.now_ms()
        if venue_news:
            self.changed_at = self.clock.monotonic()
        if error is not None:
            o.error = error[:300]
            self._lookup_refused.discard(o.client_order_id)
        cid = o.client_order_id
        if status is OrderStatus.IN_DOUBT and cid not in self._doubted:
            self._doubted.add(cid)
            self._fault("in_doubt", "fault", o, o.error or "no answer recorded: the engine stopped while it was sent")
        elif cid in self._doubted and status is not OrderStatus.IN_DOUBT and status is not OrderStatus.NEW:
            self._doubted.discard(cid)  # resolved by the venue's word (a resend is not that yet)
            if error is None and status is not OrderStatus.REJECTED:
                # The lost answer's words were the doubt's (its in_doubt record keeps them): an order the venue shows
                # open, filled or cancelled has no error. A rejected one keeps them: they say why.
                o.error = ""
            self._fault("in_doubt", "resolved", o,
                        f"{status.value}: {o.error}" if status is OrderStatus.REJECTED else status.value)
        return True

    async def _finish(self, o: Order, status: OrderStatus, error: str = "", note: Event | None = None, *,
                      unseen: bool = False, said: bool = False, venue_news: bool = True) -> None:
        """An order's final status; `note` (an event that says why) is committed with it. `unseen`: ended without
        the venue's word (absent by its lookups), so it is looked up for a while after, in the same transaction;
        `said`: ended by the venue's word, looked up so when it may yet trade (`_watch_said`). `venue_news`: as
        for `_move`. An order ends once: one ended meanwhile (the poll, while a cancel of it was at the venue) is
        left as it ended, and said no second time."""
        if o.status.final or not self._move(o, status, error, venue_news=venue_news):
            return
        self.live.pop(o.client_order_id, None)
        self._uncount(o)
        self._doubt_deadline.pop(o.client_order_id, None)

        def publish() -> None:
            self._emit(o)
            if note is not None:
                self.bus.publish(note)

        kv = self.book()
        if unseen:
            self._ended[o.client_order_id] = (o, self.clock.wall() + WATCH_WINDOWS * self.settle_s)
            kv = {**kv, **self._ended_kv()}
        elif said and self._watch_said(o):
            kv = {**kv, **self._ended_kv()}
        await self._write_state(o, kv, publish=publish)

    def _watch_said(self, o: Order) -> bool:
        """An order the venue has just said it cancelled or expired is watched as one ended unseen when part of it
        is unfilled and the venue's reads may lag (a settle window): True when it is (its record to store)."""
        if o.status is not OrderStatus.CANCELED or o.filled + 1e-12 >= o.quantity or self.settle_s <= 0:
            return False
        self._ended[o.client_order_id] = (o, self.clock.wall() + WATCH_WINDOWS * self.settle_s)
        self._said_ended.add(o.client_order_id)
        return True

    def _uncount(self, o: Order) -> None:
        """An order has ended: an entry DAILY_TRADES counted that the venue refused, nothing filled, was not made
        (in the day it counted in, while that day lasts)."""
        day = self._counted.pop(o.client_order_id, None)
        if day is not None and o.status is OrderStatus.REJECTED and o.filled <= 0 and self.portfolio.day == day:
            self.portfolio.entries_today = max(0, self.portfolio.entries_today - 1)

    # ------------------------------------------------------------------ venue answers
    async def _write_state(self, o: Order, kv: dict[str, Any] | None,
                           publish: Callable[[], object] | None = None) -> None:
        """The order's status and amounts written (Store.update_order), in its turn: never while a fill of it is
        being booked, nor a fill booked while it is written."""
        async with self._turns.of(o.client_order_id):
            await self.store.update_order(o, kv, publish=publish)

    async def _apply(self, o: Order, vo: VenueOrder, note: Event | None = None, *, venue_news: bool = True,
                     said: str | None = None) -> None:
        """Bring the journal in line with the venue's view of the order, recording any new fill. `note` (an event
        that says where the view came from) is committed with the fill. `venue_news`: as for `_move`. `said`: the
        order's words from here on, where the view is not the venue's (an operator's settle), in place of those the
        venue's end would give it. One at a time per order (its turn): a view is compared with the amounts its fills
        hold, and its fill committed before any other write of the order."""
        async with self._turns.of(o.client_order_id):
            await self._apply_view(o, vo, note, venue_news=venue_news, said=said)

    async def _apply_view(self, o: Order, vo: VenueOrder, note: Event | None, *, venue_news: bool,
                          said: str | None = None) -> None:
        self._missing.pop(o.client_order_id, None)  # found
        if o.client_order_id in self._lookup_refused:
            self._lookup_refused.discard(o.client_order_id)
            o.error = ""
        if vo.trades_behind:
            self._behind.setdefault(o.client_order_id, self.clock.monotonic())
        else:
            self._behind.pop(o.client_order_id, None)
        if vo.trades_behind and vo.venue_status in ("closed", "canceled", "expired"):
            self._ended_behind.add(o.client_order_id)
        else:
            self._ended_behind.discard(o.client_order_id)
        # The venue's amounts are decimals: what filled since the last answer is their difference to 12 places, as
        # the venue's trade says it (0.01382, not the float 0.013819999999999999).
        delta = round(vo.filled - o.filled, 12)
        if vo.trades_behind and vo.trades_unsure and o.filled > 0:
            # The venue's trades lag the order, some of its fill is booked already, and the venue knows of none of
            # its trades from before (a start since): those listed need not be those booked (an exchange can list a
            # later trade before an earlier one a new order's answer named), and the difference of their sums would
            # be booked at a price no trade had, the earlier trade again once listed. The rest is booked once the
            # trades cover the whole fill.
            delta = 0.0
        prev_status = o.status
        if vo.exchange_id:
            o.exchange_id = vo.exchange_id
        self._doubt_deadline.pop(o.client_order_id, None)
        status = {"open": OrderStatus.OPEN, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
                  "rejected": OrderStatus.REJECTED, "expired": OrderStatus.CANCELED}.get(vo.status, OrderStatus.OPEN)
        if status is OrderStatus.FILLED and vo.filled + 1e-12 < o.quantity and vo.filled <= 0:
            status = OrderStatus.CANCELED
        # An end the exchange gave on its own says why, in the journal and in every page and line that prints it.
        if said is not None:
            cause: str | None = said
        else:
            cause = _ended_by_venue(o, vo, o.client_order_id in self._cancels_sent) if status.final else None
        if delta > 1e-12 and vo.average is None and o.price is None:
            # A fill whose price neither the answer nor the order's trades gave: booked at no price, the coins would
            # cost nothing. The order stays as it was and is looked up again; if no answer ever says, the venue's
            # balances and the books differ and reconciliation pauses the engine. (A limit order's fill is booked
            # at its limit price.)
            if o.client_order_id not in self._unpriced:
                self._unpriced.add(o.client_order_id)
                log.warning("venue answer shows a fill without its price: not booked yet",
                            client_order_id=o.client_order_id, filled=vo.filled, venue=self.venue.name)
            return
        self._unpriced.discard(o.client_order_id)
        if delta > 1e-12:
            avg_new = vo.average or o.average or o.price or 0.0
            cost_before = (o.average or 0.0) * o.filled
            px = (avg_new * vo.filled - cost_before) / delta if o.filled else avg_new
            fee = max(0.0, vo.fee - o.fee)
            fee_base = max(0.0, round(vo.fee_base - o.fee_base, 12))
            fee_base_value = max(0.0, vo.fee_base_value - o.fee_base_value)
            o.fee_base = max(o.fee_base, vo.fee_base)  # an answer without the fees does not take back those known
            o.fee_base_value = max(o.fee_base_value, vo.fee_base_value)
            o.filled = vo.filled
            o.average = avg_new
            o.fee = max(o.fee, vo.fee)
            self._move(o, status, cause, venue_news=venue_news)  # a fill is a fact; a status it has passed is not
            o.updated_ts = self.now_ms()
            if o.status.final:
                self.live.pop(o.client_order_id, None)
                self._uncount(o)
            fill = Fill(client_order_id=o.client_order_id, symbol=o.symbol, side=o.side, quantity=delta, price=px,
                        fee=fee, ts=o.updated_ts, fee_base=fee_base, fee_base_value=fee_base_value, venue_ts=vo.ts)
            intent = self.intents.get(o.client_order_id) or _intent_of(o)
            # The owner applies the fill to its book in memory and says what else to record; the fill, the
            # order's new state and those records are written in one transaction.
            # The store publishes the fill's event and the order's (its new status and amount filled) and commits
            # them with the fill itself: a crash never leaves a fill in the books that the records do not mention,
            # its event without it, nor the order's new status without the event that says it.
            event = FillEvent(client_order_id=o.client_order_id, symbol=o.symbol, side=o.side.value, quantity=delta,
                              price=px, fee=fee)

            def publish() -> None:
                self.bus.publish(event)
                self._emit(o)
                if note is not None:
                    self.bus.publish(note)

            # An end the venue said with part unfilled is watched from here, stored with the fill that ends it.
            watched = o.status.final and not prev_status.final and said is None and self._watch_said(o)
            await self._book(o, fill, intent, publish, venue_news=venue_news,
                             kv=self._ended_kv() if watched else None)
            if o.status.final:
                self.intents.pop(o.client_order_id, None)
            return
        if status is not prev_status:
            if status.final:
                await self._finish(o, status, cause if cause is not None else "", said=said is None,
                                   venue_news=venue_news)
                self.intents.pop(o.client_order_id, None)
            elif self._move(o, status, venue_news=venue_news):
                self.live[o.client_order_id] = o  # open at the venue: tracked whatever was thought before
                await self._write_state(o, self.book(), publish=functools.partial(self._emit, o))

    async def _book(self, o: Order, fill: Fill, intent: OrderIntent, publish: Callable[[], object], *,
                    venue_news: bool, journal: dict[str, Any] | None = None, kv: dict[str, Any] | None = None) -> None:
        """A fill of `o` booked: the owner applies it to its books in memory and says what else to record (on_fill),
        then the fill, the order's new state and those records are committed in one transaction (Store.add_fill,
        `journal`: the order journaled with it; `kv`: book state of the order path's to store with it), then the
        follow-up its record asks for (an exit, the learner).
        Never cut off between the books in memory taking the fill and its commit (a stop past its time, a cancel
        past its bound): the books would be ahead of the records."""

        # Counted with its order from here (no await since the order took the fill) until the books have it (the
        # owner says so at once: taken), or on_fill ends.
        self._booking.append((o, fill))

        async def book() -> FillRecord | None:
            try:
                record = await self.on_fill(o, fill, intent)
            finally:
                self.taken(fill)
            if kv:
                record = record if record is not None else FillRecord(wall=self.clock.wall())
                record.kv.update(kv)
            await self.store.add_fill(fill, o, record, publish=publish, journal=journal)
            return record

        record = await to_its_end(book())
        self._fill_booked(venue_news=venue_news)
        if record is not None and record.then is not None:
            await record.then()

    def taken(self, fill: Fill) -> None:
        """The books have taken `fill` (on_fill's owner, as it applies it): no longer counted with its order."""
        self._booking = [b for b in self._booking if b[1] is not fill]

    def _fill_booked(self, *, venue_news: bool = True) -> None:
        self.fills_recorded += 1
        if venue_news:
            self.changed_at = self.clock.monotonic()

    async def poll(self) -> None:
        """Check every order in flight with the venue: record fills, resolve orders in doubt."""
        if not self.live and not self._ended:
            return
        async with self._poll_lock:
            await self._look_at_ended()
            await self.cancels_due()
            self._unread &= set(self.live)
            self._missing = {cid: seen for cid, seen in self._missing.items() if cid in self.live}
            self._cancel_asked &= set(self.live)
            self._cancels_sent &= set(self.live)
            self._lookup_refused &= set(self.live)
            self._unpriced &= set(self.live)
            self._behind = {cid: seen for cid, seen in self._behind.items() if cid in self.live}
            self._ended_behind &= set(self._behind)
            for o in list(self.live.values()):
                try:
                    if o.status is OrderStatus.IN_DOUBT or o.status is OrderStatus.NEW:
                        await self._resolve(o)
                    else:
                        vo = await self.breaker.call(
                            functools.partial(self.venue.fetch_order, o.client_order_id, o.symbol))
                        if vo is None and self._lost(o):
                            vo = await self._listed(o)
                            if vo is None:
                                await self._finish(o, OrderStatus.REJECTED, "venue no longer knows this order",
                                                   unseen=True)
                        if vo is None and not o.status.final:
                            self._unread.add(o.client_order_id)
                            continue
                        if vo is not None:
                            await self._apply(o, vo)
                    self._unread.discard(o.client_order_id)
                except (BreakerOpen, VenueUnavailable):
                    self._unread.add(o.client_order_id)
                except VenueError as exc:  # a final answer about the order is not a gap in what is known of it
                    self._unread.discard(o.client_order_id)
                    o.error = str(exc)[:300]
                    self._lookup_refused.add(o.client_order_id)

    async def _resolve(self, o: Order) -> None:
        cid = o.client_order_id
        vo = await self.breaker.call(lambda: self.venue.fetch_order(cid, o.symbol))
        if vo is not None:
            await self._venue_shows(o, vo)
            return
        deadline = self._doubt_deadline.get(cid)
        if deadline is None:  # first look after a restart: give the venue its settle window from now
            self._doubt_deadline[cid] = self.clock.monotonic() + self.settle_s
            if self.settle_s > 0:
                return
        elif self.clock.monotonic() < deadline:
            return
        if cid in self._sending:  # its first send is still waiting for an answer: only the sender sends
            return
        # Past the settle window, absent takes two answers in a row: one can come from a replica that does not
        # have the order yet, and sending it again (or ending it, cancelled) on that answer alone would buy twice
        # (or drop its fill). A venue with no settle window answers from its own book (the paper venue): one will do.
        _, looks = self._not_found(cid)
        if looks < (2 if self.settle_s > 0 else 1):
            return
        listed = await self._listed(o)
        if listed is not None:  # the venue's open orders have it: its word, whatever its lookups by id say
            await self._venue_shows(o, listed)
            return
        if cid in self._repeat_refused and cid not in self._cancel_asked:
            return  # only the venue's word, or a cancel, ends it
        if await self._held():
            return
        # Absent by its lookups. The venue's balance may say otherwise: then a repeat would be a second order (the
        # id is free again once the first has filled), and ending it cancelled would drop its fill; the order waits
        # in doubt for the lookups to find it.
        if self.placed_evidence is not None:
            why = await self.placed_evidence(o)
            if why is not None:
                if cid not in self._evidence_said:
                    self._evidence_said.add(cid)
                    log.warning("order in doubt not sent again", client_order_id=cid, symbol=o.symbol, why=why)
                return
        if cid in self._cancel_asked:
            await self._finish(o, OrderStatus.CANCELED, "absent at the venue", unseen=True)
            return
        # Surely absent. Send it again with the same id, unless the engine no longer allows it, or (an entry) what
        # decided it no longer stands.
        if not self._allowed_now(o):
            await self._finish(o, OrderStatus.REJECTED, f"not sent again: engine {self.trading.state.value}",
                               unseen=True)
            return
        if not o.reduce_only and self.entry_stands is not None:
            why_not = await self.entry_stands(o, self.intents.get(cid) or _intent_of(o))
            if why_not is None or cid not in self.live or o.status is not OrderStatus.IN_DOUBT:
                return  # not told now, or ended meanwhile
            if why_not:
                await self._finish(o, OrderStatus.REJECTED, f"not sent again: {why_not}", unseen=True)
                return
            if cid in self._cancel_asked or not self._allowed_now(o):
                return  # a cancel or a pause while the price was read: the next poll ends it
        n = self._resends.get(cid, 0) + 1
        if n > MAX_RESENDS:
            await self._finish(o, OrderStatus.REJECTED, "absent at the venue after repeated sends", unseen=True)
            return
        # Counted before it goes, and stored: the limit holds across restarts (a crash loop would send it again
        # MAX_RESENDS times after every start).
        self._resends[cid] = n
        await self._keep_resends()
        # Asked again after the wait: a cancel, a pause or a halt, or the order's end, may have come meanwhile.
        if cid in self._cancel_asked or not self._allowed_now(o) or self.live.get(cid) is not o:
            return  # the next poll ends it, as the cancel or the state says
        if not self._move(o, OrderStatus.NEW):  # its last word kept until the send's answer replaces it
            return
        self._missing.pop(cid, None)
        await self._send(o)

    async def _keep_resends(self) -> None:
        """The repeats of the orders in flight, stored (RESENT_KEY)."""
        self._resends = {cid: n for cid, n in self._resends.items() if cid in self.live}
        await self.store.put_kv(RESENT_KEY, self._resends, self.clock.wall())

    async def _venue_shows(self, o: Order, vo: VenueOrder) -> None:
        """An order in doubt the venue shows: its word recorded, then the cancel asked of it while it was in doubt."""
        await self._apply(o, vo)
        if o.client_order_id in self._cancel_asked and not o.status.final:
            await self.cancel(o)

    def _lost(self, o: Order) -> bool:
        """A lookup did not find an order the venue has shown. One such answer proves nothing (a lagging replica, a
        glitch), and ending the order on it would drop whatever it filled at the venue: the order is taken as lost
        only once lookups have not found it for the settle window and three times over."""
        cid = o.client_order_id
        if cid in self._ended_behind:  # the venue said how it ended: its trades are awaited, not its existence
            return False
        first, looks = self._not_found(cid)
        if looks == 1:
            log.warning("venue did not find an open order", client_order_id=cid, symbol=o.symbol)
        return looks >= 3 and self.clock.monotonic() - first >= self.settle_s

    async def _listed(self, o: Order) -> VenueOrder | None:
        """The order as the venue's open orders list it, for an order its lookups by id do not find (they can lag
        behind the list, or miss an order the venue has: it answered a repeat "duplicate"); None when the list does
        not have it. Taken as lost while listed, its later fills would never be booked."""
        cid = o.client_order_id
        for vo in await self.breaker.call(lambda: self.venue.fetch_open_orders(o.symbol)):
            if vo.client_order_id == cid:
                self._missing.pop(cid, None)
                return vo
        return None

    def _not_found(self, cid: str) -> tuple[float, int]:
        """A lookup did not find the order: when the lookups that did not find it in a row began, and how many."""
        first, looks = self._missing.get(cid, (self.clock.monotonic(), 0))
        self._missing[cid] = (first, looks + 1)
        return first, looks + 1

    # ------------------------------------------------------------------ ended, then shown by the venue
    def _ended_kv(self) -> dict[str, Any]:
        """The orders watched after their end, as stored (kv)."""
        return {ENDED_KEY: {cid: until for cid, (_, until) in self._ended.items()} or None,
                ENDED_SAID_KEY: sorted(self._said_ended) or None, REAPPEARED_KEY: sorted(self._reappeared) or None}

    async def _store_ended(self) -> None:
        await self.store.put_kvs(self._ended_kv(), self.clock.wall())

    async def _unwatch(self, cid: str) -> None:
        """An order watched after its end is let go: its watch and what the watch kept of it, stored so."""
        if self._ended.pop(cid, None) is None:
            return
        self._said_ended.discard(cid)
        self._reappeared.discard(cid)
        self._said_open.pop(cid, None)
        self._taken_in_cancel.pop(cid, None)
        await self._store_ended()

    def _open_long_enough(self, sightings: dict[str, float], cid: str) -> bool:
        """An order a lookup shows open after its end: whether lookups have shown it so for a settle window since the
        first did (`sightings`: when that was). One lookup saying so is no proof: a replica lagging behind the answer
        that ended it says the same."""
        first = sightings.setdefault(cid, self.clock.monotonic())
        return self.clock.monotonic() - first >= self.settle_s

    async def _look_at_ended(self) -> None:
        """Look up by id the orders ended without the venue's word (`_ended`); one it shows is taken in. One it
        has not shown by the end of its watch is let go (an order it lists open later is still taken in: the
        reconciliation hands it over). One the venue said it cancelled is taken in as `_said_news` tells."""
        now = self.clock.wall()
        for cid, (o, until) in list(self._ended.items()):
            try:
                vo = await self.breaker.call(functools.partial(self.venue.fetch_order, cid, o.symbol))
            except (BreakerOpen, VenueError, VenueUnavailable):
                continue  # looked up again at the next poll
            if vo is not None and cid in self._said_ended and cid not in self._reappeared:
                news = self._said_news(o, vo, until, now)
                if news == "done":
                    await self._unwatch(cid)
                elif news == "take in":
                    await self._take_in(o, vo)
            elif vo is not None:
                await self._take_in(o, vo)
            elif now >= until and cid not in self._reappeared:
                await self._unwatch(cid)

    def _said_news(self, o: Order, vo: VenueOrder, until: float, now: float) -> str:
        """What a lookup of an order the venue said it cancelled tells: "take in" when it shows a fill the books
        lack (a fill is a fact, whenever shown: booked once its trades show it), or shows it open and still did a
        settle window after the first lookup that did (no replica lags so long: the cancel was not done); "done"
        when it shows it ended, nothing lacking, a settle window after its end, or once its watch is over; else
        "wait" (a replica behind the cancel, or a queued cancel not done yet, still shows it open; or its trades
        fall short of what is booked) until the next poll."""
        cid = o.client_order_id
        shown = vo.venue_filled if vo.trades_behind and vo.venue_filled is not None else vo.filled
        if round(shown - o.filled, 12) > 0:
            return "take in"
        if now >= until:
            return "done"
        if vo.trades_behind:
            return "wait"
        if vo.status == "open":
            return "take in" if self._open_long_enough(self._said_open, cid) else "wait"
        self._said_open.pop(cid, None)
        settled = now - (until - WATCH_WINDOWS * self.settle_s) >= self.settle_s
        return "done" if settled else "wait"

    def listed_open(self, cids: set[str]) -> None:
        """The venue's open orders as just listed: an ended order's sighting (`reappeared`) that the list no longer
        shows is over, and a later one is a sighting of its own, timed from its start."""
        for cid in set(self._open_after_end) - cids:
            del self._open_after_end[cid]

    async def reappeared(self, vo: VenueOrder) -> bool:
        """The venue lists open an order the journal has ended (`vo`, from its open orders). True once it is done
        there (cancelled, its fills booked), or left to the lookups of its watch (one the venue said it cancelled:
        the list may lag behind that cancel); otherwise it is watched and tried again at each poll. An order the
        journal ended by the venue's own word is taken in only when its lookup by id says open too: a list that
        lags the venue's book shows an order open that has since filled."""
        async with self._poll_lock:
            cid = vo.client_order_id
            if cid in self._ended and (cid not in self._said_ended or cid in self._reappeared):
                # ended without the venue's word (the list is its first word), or taken in already
                return await self._take_in(self._ended[cid][0], vo)
            if cid in self._ended:
                # Ended by the venue's word, and watched: its lookups take it in if it still works a settle window
                # after the first that showed it open. A list that shows it meanwhile may lag behind its cancel.
                return True
            o = await self.store.order(cid)
            if o is None or not o.status.final or cid in self.live:
                return False
            try:
                looked = await self.breaker.call(functools.partial(self.venue.fetch_order, cid, o.symbol))
            except (BreakerOpen, VenueError, VenueUnavailable):
                return False
            if looked is None or looked.status != "open":
                self._open_after_end.pop(cid, None)
                return False
            if not self._open_long_enough(self._open_after_end, cid):
                return False
            self._open_after_end.pop(cid, None)
            return await self._take_in(o, looked)

    async def _take_in(self, o: Order, vo: VenueOrder) -> bool:
        """An order the journal has ended that the venue shows: the books do not hold it, so it must not work. Open,
        it is cancelled now, whatever the engine's state (a HALTED engine's cancel asked of it stands). What it
        filled is booked against it as the venue says, its status kept (a final status never changes): the books
        stay the venue's. Said once (a `reappeared` venue fault, which pages, across restarts), and its end once a
        lookup shows it done there: not open and its trades shown; until then it is watched (looked up at each poll,
        stored). True once done, or once the venue's last answer (its cancel's) says it no longer works."""
        cid = o.client_order_id
        if vo.status != "open" and round(vo.filled - o.filled, 12) <= 0 and not vo.trades_behind:
            if cid in self._reappeared:
                return await self._take_in_done(o, vo)
            await self._unwatch(cid)  # ended there too, with nothing the books lack: as journaled
            return True
        # An answer whose trades lag says "open" until they show: the venue's own status and fill are said, and
        # an order it has ended is not cancelled again.
        working = vo.status == "open" and vo.venue_status in (None, "open")
        if cid not in self._reappeared:
            self._reappeared.add(cid)
            shown = vo.venue_status or vo.status
            filled = vo.venue_filled if vo.venue_filled is not None else vo.filled
            self._fault("reappeared", "fault", o, f"ended {o.status.value} in the journal ({o.error or 'no error'}); "
                                                  f"the venue shows it {shown}, filled {fmt.qty(filled, 8)}: "
                                                  + ("cancelled now" if working else "its fill booked"))
        if cid not in self.intents:  # what it fills is booked as its order asked (an entry's stop-loss and take-profit)
            raw = (await self.store.order_intents([cid])).get(cid)
            self.intents[cid] = OrderIntent.from_dict(raw) if raw else _intent_of(o)
        sent = self._taken_in_cancel.get(cid)
        if working and (sent is None or self.clock.monotonic() - sent[0] >= self.settle_s):
            self._taken_in_cancel[cid] = sent = (self.clock.monotonic(), False)
            try:
                self._cancels_sent.add(cid)
                # Its answer's fills are booked; whether it is done, a lookup says: an exchange that queues cancels
                # answers before it is done, one whose answer raced a fill says done of an order that fills.
                vo = await self.venue.cancel_order(cid, o.symbol)
                self._taken_in_cancel[cid] = sent = (sent[0], vo.status != "open")
            except (VenueError, VenueUnavailable) as exc:
                log.warning("ended order open at the venue, its cancel not done: sent again at the next poll",
                            venue=self.venue.name, order=cid, detail=str(exc)[:160])
                self._taken_in_cancel.pop(cid, None)
                sent = None
        # What the venue shows it filled is in the account already: booked now, not once the cancel is done (the gates
        # would size entries on books that lack it). The final status stays.
        await self._apply(o, vo)
        self._ended[cid] = (o, max(self._ended.get(cid, (o, 0.0))[1], self.clock.wall()))
        await self._store_ended()
        # No longer working, as far as is known: the venue's view says so, or the answer to its cancel did a moment
        # ago (a view shown since may lag behind that cancel).
        answered = sent is not None and sent[1] and self.clock.monotonic() - sent[0] < self.settle_s
        return vo.status != "open" or answered

    async def _take_in_done(self, o: Order, vo: VenueOrder) -> bool:
        """A reappeared order done at the venue (not open, its trades shown, booked): its end said, its watch over."""
        self.intents.pop(o.client_order_id, None)
        self._fault("reappeared", "resolved", o, f"{vo.status} at the venue, filled {fmt.qty(o.filled, 8)} booked; "
                                                 f"the journal keeps it {o.status.value}")
        await self._unwatch(o.client_order_id)
        return True

    # ------------------------------------------------------------------ settled by hand
    async def settle(self, o: Order, outcome: str, *, quantity: float | None = None, price: float | None = None,
                     by: str, fee: SettledFee = NO_FEE) -> str:
        """The operator's word on an order in doubt that the venue never shows (its record lost at the exchange):
        `filled` (`quantity` at `price`, booked as a fill with its `fee`) or `canceled` (nothing filled). Nothing is
        sent to the venue. Refused (ControlError, nothing changed) when the order is not in doubt, within its settle
        window (the request may still reach the venue), when the venue cannot be asked about it, and when one more
        lookup finds it (the venue's word is then recorded instead). What the books then hold against the venue's
        balances is for reconciliation to compare, and for the operator to accept. Returns what the venue said of it.
        Or an order the venue shows filled beyond the trades it lists (_settle_unlisted)."""
        cid = o.client_order_id
        async with self._poll_lock:
            if self.live.get(cid) is o and cid in self._behind:
                return await self._settle_unlisted(o, outcome, quantity, price, by, fee)
            if o.status is not OrderStatus.IN_DOUBT or self.live.get(cid) is not o:
                raise ControlError(f"order {cid} is {o.status.value}, not in doubt: nothing settled")
            deadline = self._doubt_deadline.get(cid)
            if deadline is None or self.clock.monotonic() < deadline:
                raise ControlError(f"order {cid} is within its settle window: the venue may still place it; nothing "
                                   "settled (settle it once lookups have not found it past the window)")
            left = round(o.quantity - o.filled, 12)
            if outcome == "filled" and (quantity is None or price is None or not 0 < quantity <= left + 1e-12
                                        or not price > 0):
                raise ControlError(f"settle {cid} filled needs the quantity (at most {left:.8g}) and the price it "
                                   "filled at, as the exchange's account shows them (--quantity, --price): nothing "
                                   "settled")
            if outcome not in ("filled", "canceled"):
                raise ControlError(f"settle {cid}: filled or canceled, not {outcome!r}: nothing settled")
            try:
                vo = await self.breaker.call(lambda: self.venue.fetch_order(cid, o.symbol))
            except (BreakerOpen, VenueUnavailable) as exc:
                raise ControlError(f"the venue could not be asked about order {cid} ({str(exc)[:120]}): nothing "
                                   "settled; settle again once it answers") from None
            except VenueError as exc:  # a final answer that is not the order: the venue does not show it
                vo, looked = None, f"its lookup answered {str(exc)[:120]}"
            else:
                looked = "its lookup did not find it"
            if vo is not None:
                await self._apply(o, vo)
                raise ControlError(f"the venue shows order {cid} now ({vo.status}, filled {vo.filled:.8g}): its word "
                                   f"is recorded ({o.status.value}); nothing settled by hand")
            shows = await self.placed_evidence(o) if self.placed_evidence is not None else None
            detail = f"{looked}; {shows}" if shows else f"{looked}; its balance shows nothing of it"
            self._missing.pop(cid, None)
            if outcome == "canceled":
                note = OrderSettled(client_order_id=cid, symbol=o.symbol, side=o.side.value, outcome=outcome, by=by,
                                    detail=detail)
                # The operator's word on what the venue did long before: no balance read lags it.
                await self._finish(o, OrderStatus.CANCELED, f"settled canceled by {by}: {detail}", note=note,
                                   venue_news=False)
                return detail
            assert quantity is not None and price is not None
            # The rest of an order filled in part never fills: it ends cancelled, with what it filled.
            done = round(o.filled + quantity, 12) + 1e-12 >= o.quantity
            await self._settled_fill(o, quantity, price, "closed" if done else "canceled", by, detail, fee,
                                     said=f"settled filled by {by}: {detail}")
            return detail

    async def _settle_unlisted(self, o: Order, outcome: str, quantity: float | None, price: float | None,
                               by: str, fee: SettledFee) -> str:
        """The operator's word on the fill of an order the venue shows filled beyond the trades it lists, past the
        settle window: the fill is in the venue's balances, and the books take a fill only from its trades, so an
        exchange that never lists them would hold the engine for ever. `filled` books the rest the venue shows
        filled (`quantity`, which must be that rest) at `price`, as the exchange's account shows it, and ends the
        order as the venue has (filled, or cancelled with what it filled): it is looked up no more, so its trades
        listed later book nothing twice. Refused (ControlError, nothing changed) within the window, when the order
        still works at the venue, when one more lookup finds its trades listed (booked from them instead), and for
        another quantity. Called with the poll lock held."""
        cid = o.client_order_id
        if self.clock.monotonic() - self._behind[cid] < self.venue.settle_s:
            raise ControlError(f"order {cid} is within its settle window: the venue may list its trades yet; nothing "
                               "settled (settle it if they are not listed past the window)")
        if outcome != "filled":
            raise ControlError(f"order {cid} is filled at the venue beyond the trades it lists: settle it filled "
                               "(--quantity, --price), not canceled: nothing settled")
        try:
            vo = await self.breaker.call(lambda: self.venue.fetch_order(cid, o.symbol))
        except (BreakerOpen, VenueUnavailable, VenueError) as exc:
            raise ControlError(f"the venue could not be asked about order {cid} ({str(exc)[:120]}): nothing settled; "
                               "settle again once it answers") from None
        if vo is None:
            raise ControlError(f"the venue's lookup did not find order {cid} this time: nothing settled; settle again")
        await self._apply(o, vo)  # what its trades listed meanwhile cover, booked from them
        if not vo.trades_behind:
            raise ControlError(f"the venue lists the trades of order {cid} now: its fill is booked from them "
                               f"({o.status.value}, filled {o.filled:.8g}); nothing settled by hand")
        if vo.venue_status not in ("closed", "canceled", "expired"):
            raise ControlError(f"order {cid} still works at the venue ({vo.venue_status}): cancel it first (`ffe ctl "
                               "cancel`), then settle what it filled: nothing settled")
        rest = round((vo.venue_filled or 0.0) - o.filled, 12)
        if quantity is None or price is None or not abs(quantity - rest) <= 1e-9 * max(rest, 1.0) or not price > 0:
            raise ControlError(f"settle {cid} filled needs the quantity the venue shows filled beyond the trades it "
                               f"lists, {rest:.8g}, and the price it filled at, as the exchange's account shows them "
                               "(--quantity, --price): nothing settled")
        detail = f"the venue shows it filled {round(o.filled + rest, 12):.8g}, its trades list {o.filled:.8g}"
        # Ended by the venue (filled, or its rest expired or cancelled there): said in the venue's words, as its own
        # end would be (an exit the exchange ended with the position still open pages EXIT_REFUSED).
        await self._settled_fill(o, rest, price, vo.venue_status, by, detail, fee, said=None)
        return detail

    async def _settled_fill(self, o: Order, quantity: float, price: float, ended: str, by: str, detail: str,
                            fee: SettledFee, *, said: str | None) -> None:
        """`quantity` more of `o` filled at `price` by the operator's word, with its `fee` (settled_fee.py), and the
        order ended so (`closed`, `canceled` or `expired`), with its `order_settled` record; nothing sent to the
        venue. The fee is booked with the fill as the venue's own would be (in coins, or off the cash): what the
        venue took beyond it is a difference for reconciliation. `said`: the order's end in the settle's words; None
        where the venue ended it and its own words say how."""
        cid = o.client_order_id
        filled = round(o.filled + quantity, 12)
        average = ((o.average or 0.0) * o.filled + price * quantity) / filled
        paid, coins, coins_value = fee.booked(price)
        view = VenueOrder(client_order_id=cid, symbol=o.symbol, side=o.side, quantity=o.quantity, status=ended,
                          filled=filled, average=average, fee=o.fee + paid, exchange_id=o.exchange_id, type=o.type,
                          price=o.price, fee_base=round(o.fee_base + coins, 12),
                          fee_base_value=o.fee_base_value + coins_value)
        note = OrderSettled(client_order_id=cid, symbol=o.symbol, side=o.side.value, outcome="filled",
                            quantity=quantity, price=price, by=by, detail=detail, fee=fee.amount,
                            fee_currency=fee.currency)
        # The operator's word on what the venue did long before: no balance read lags it. For an order the venue
        # never showed, its end is theirs, not one the venue gave on its own (a settled part's rest is no cancel at
        # the exchange, and pages no exit refused).
        await self._apply(o, view, note=note, venue_news=False, said=said)

    # ------------------------------------------------------------------ sold by hand
    async def book_hand_sale(self, symbol: str, quantity: float, price: float, fee: float, *, by: str,
                             decision_id: str | None) -> Order:
        """A sale of `quantity` of `symbol` at `price` (its fee `fee`, in the quote currency) that the operator made
        on the exchange by hand, outside ffe, booked by their word (`ffe ctl sold-by-hand`; the caller has checked
        it against the venue's balances): an order of the journal (reason `by_hand`) that is never sent, with its
        fill, journaled filled by the fill's own transaction, so that no crash leaves it journaled as new (a
        restart would send it). Its records say it began (new) and ended (filled), as every order's do."""
        async with self._placing, self._poll_lock:
            working = [o for o in self.live.values() if o.symbol == symbol]
            if working:
                # Its fills would change the position the sale is booked against; an exit's would sell it twice.
                raise ControlError(f"order {working[0].client_order_id} is working in {symbol}: cancel it or let it "
                                   "end first (`ffe ctl orders`); nothing booked")
            now = self.now_ms()
            o = Order(client_order_id=self.ids.client_order_id(), symbol=symbol, side=Side.SELL, quantity=quantity,
                      type="market", reason=OrderReason.BY_HAND, venue=self.venue.name, decision_id=decision_id,
                      price=None, reduce_only=True, created_ts=now, updated_ts=now, by=by)
            intent = OrderIntent(symbol=symbol, side=Side.SELL, quantity=quantity, reason=OrderReason.BY_HAND,
                                 decision_id=decision_id, ref_price=price, reduce_only=True, by=by)
            began = _order_event(o)  # as journaled (new), before it is booked filled
            o.status, o.filled, o.average, o.fee = OrderStatus.FILLED, quantity, price, fee
            o.error = f"sold on the exchange by hand, booked by {by}: nothing was sent"
            fill = Fill(client_order_id=o.client_order_id, symbol=symbol, side=Side.SELL, quantity=quantity,
                        price=price, fee=fee, ts=now)
            event = FillEvent(client_order_id=o.client_order_id, symbol=symbol, side=Side.SELL.value,
                              quantity=quantity, price=price, fee=fee)

            def publish() -> None:
                self.bus.publish(began)
                self.bus.publish(event)
                self._emit(o)

            # The account showed the sale already (the caller checked): no news from the venue.
            await self._book(o, fill, intent, publish, venue_news=False, journal=intent.as_dict())
            return o

    # ------------------------------------------------------------------ cancels
    async def cancel(self, o: Order, by: str = "") -> tuple[bool, str]:
        """Cancel one order at the venue: (cancelled, why not). `by`: who asked (an operator's cancel), said in the
        order's events from here on (its end among them, whenever that comes in this run)."""
        if by:
            o.cancel_by = by
        cid = o.client_order_id
        sending = self._sending.get(cid)
        if sending is not None:
            await sending.answered.wait()
            if o.status.final:
                return _end_of(o)
        outcome: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._cancelling[cid] = outcome
        try:
            if o.status is OrderStatus.IN_DOUBT:
                # Stored before the cancel goes out: from the moment it is asked the order is never sent again, by
                # the poll while the cancel is on the wire, or by an engine started after a stop that cut it off.
                await self._keep_cancel_asked(cid)
                if o.status.final:  # ended meanwhile (the poll found it absent, its cancel asked): as it ended
                    outcome.set_result(_end_of(o))
                    return _end_of(o)
            done = await self._cancel_at_venue(o)
            outcome.set_result(done)
            return done
        finally:
            outcome.cancel()  # ended without an outcome (cut off): who waits for it sends their own
            if self._cancelling.get(cid) is outcome:
                del self._cancelling[cid]

    async def _keep_cancel_asked(self, cid: str) -> None:
        """An order in doubt whose cancel was asked: never sent again, ended cancelled if the venue never shows it,
        cancelled if it does. Stored, so that an engine started after a stop holds to it too."""
        if cid in self._cancel_asked:
            return
        self._cancel_asked = (self._cancel_asked | {cid}) & set(self.live)
        await self.store.put_kv(CANCEL_ASKED_KEY, sorted(self._cancel_asked), self.clock.wall())

    async def _cancel_at_venue(self, o: Order) -> tuple[bool, str]:
        try:
            self._cancels_sent.add(o.client_order_id)
            vo: VenueOrder | None = await self.venue.cancel_order(o.client_order_id, o.symbol)
        except (VenueError, VenueUnavailable) as exc:
            if isinstance(exc, VenueUnavailable) and exc.retry_after:
                return await self._cancel_held(o, exc.retry_after)
            # A cancel refused because the order is already gone: look it up to learn its real end.
            try:
                vo = await self.venue.fetch_order(o.client_order_id, o.symbol)
            except (VenueError, VenueUnavailable) as lookup:
                if isinstance(lookup, VenueUnavailable) and lookup.retry_after:
                    return await self._cancel_held(o, lookup.retry_after)
                # Refused, and not looked up: the order may still be open there (an exchange answers "unknown" for a
                # while of an order it has), so not known to be done.
                # Each error kept at both ends (what was asked, of what order, and the exchange's answer), neither
                # cut inside the other.
                return await self._cancel_again(o, f"{fmt.ends(str(exc), 200)}; its lookup failed: "
                                                   f"{fmt.ends(str(lookup), 200)}")
            if vo is None:
                if o.status is OrderStatus.IN_DOUBT:
                    # Not placed yet, or never: the request may still reach the venue within the settle window.
                    await self._keep_cancel_asked(o.client_order_id)
                    return False, "in doubt and not found yet: not sent again, and cancelled if it appears"
                if o.status is OrderStatus.OPEN and not self._lost(o):
                    self._unread.add(o.client_order_id)
                    return await self._cancel_again(o, "the venue did not find it")
                try:
                    listed = await self._listed(o)
                except (BreakerOpen, VenueError, VenueUnavailable) as lookup:
                    return await self._cancel_again(o, "the venue did not find it, and its open orders could not be "
                                                       f"read: {fmt.ends(str(lookup), 200)}")
                if listed is not None:  # open at the venue all the same: its word, and no cancel of it done
                    await self._apply(o, listed)
                    self._unread.add(o.client_order_id)
                    if o.status.final:
                        return _end_of(o)
                    return await self._cancel_again(o, "the venue's open orders list it, its cancel did not find it")
                await self._finish(o, OrderStatus.CANCELED, "absent at the venue", unseen=True)
                return _end_of(o)
            if vo.status == "open":
                await self._apply(o, vo)
                return await self._cancel_again(o, fmt.ends(str(exc), 200))
        assert vo is not None  # cancel_order answers an order; a lookup's None returned above
        await self._apply(o, vo)
        if o.status.final:
            return _end_of(o)
        if vo.trades_behind and vo.venue_status in ("canceled", "expired"):
            # Done at the venue: the order trades no more, and stays in flight here only until its trades show.
            return True, "cancelled at the venue; its last fill is recorded once the venue's trades show it"
        if vo.trades_behind and vo.venue_status == "closed":
            return False, FILLED_TRADES_BEHIND
        return await self._cancel_again(o, f"still {o.status.value}")

    async def cancel_within(self, o: Order, by: str = "") -> tuple[bool, str]:
        """`cancel`, answered within cancel_timeout_s (counted from the create_order's answer of an order on the
        wire), as the kill switch's cancels are: one the exchange has not answered by then goes on, is sent again by
        the poll, and is answered as not done. An operator's cancel or a close's must not hold the controls' turn
        through every retry of the cancel and of its lookup."""
        under_way = self._cancelling.get(o.client_order_id)
        if under_way is not None:  # asked again while a cancel of it is at the venue: its answer, not a second one
            if by:
                o.cancel_by = by
            await asyncio.wait([under_way], timeout=self.cancel_timeout_s)
            if not under_way.done():
                return False, self._not_answered()
            if not under_way.cancelled():
                return under_way.result()
        task = asyncio.ensure_future(self.cancel(o, by))
        await self.collect({o.client_order_id: task})
        if task.done():
            return task.result()
        return False, self._not_answered()

    def _not_answered(self) -> str:
        return (f"not answered within {self.cancel_timeout_s:g} s (the exchange is slow or unreachable): not done yet; "
                "sent again at the next poll")

    async def _cancel_held(self, o: Order, retry_after: float) -> tuple[bool, str]:
        """A cancel the venue's Retry-After kept from the exchange (or the exchange refused for it): not done now,
        and sent once that time is over (by the poll), whoever asked for it: the kill switch never waits for it.
        Stored: an engine started again before it is sent sends it."""
        until = self.clock.wall() + retry_after
        self._cancel_due[o.client_order_id] = max(until, self._cancel_due.get(o.client_order_id, until))
        await self._store_cancel_due()
        return False, (f"not done: {self.venue.name} asked for no requests before {_clock_text(until)} "
                       "(Retry-After); cancelled once that time is over")

    async def _cancel_again(self, o: Order, why: str) -> tuple[bool, str]:
        """A cancel that did not reach an order the venue may still have open (its id not found, the order listed):
        not done, and sent again at the next poll until the venue says how the order ended, whoever asked (the kill
        switch, the operator): an order they cancelled must not fill later. Stored, for a start after a stop."""
        self._cancel_due.setdefault(o.client_order_id, self.clock.wall())
        await self._store_cancel_due()
        return False, f"{why}: not done; sent again at the next poll"

    async def _store_cancel_due(self) -> None:
        await self.store.put_kv(CANCEL_DUE_KEY, self._live_cancels_due(), self.clock.wall())

    def _live_cancels_due(self) -> dict[str, float] | None:
        """The cancels due of orders still live, those of orders ended dropped (None for none): what is stored."""
        self._cancel_due = {cid: t for cid, t in self._cancel_due.items() if cid in self.live}
        return self._cancel_due or None

    def cancels_kept(self, until: float) -> dict[str, Any]:
        """Every order in flight marked as a cancel due from `until` (wall seconds) on, as the `kv` record to store
        with HALTED: the kill switch's cancels are sent again by an engine restarted before they were answered (a
        stop past engine.stop_timeout_s, a kill), and by the poll once `until` has passed without their answer.
        Cancels due already (a Retry-After's) keep their time. Not an order on the wire: its cancel waits for the
        exchange's answer to it, as long as that takes (a restart finds it in doubt, and resolves it first)."""
        for cid in self.live:
            if cid not in self._sending:
                self._cancel_due.setdefault(cid, until)
        return {CANCEL_DUE_KEY: dict(self._cancel_due) or None}

    def cancels_answered(self) -> dict[str, Any]:
        """The cancels kept due whose orders have ended dropped (a kill switch's, once answered), as the `kv` record
        to store with the books; empty when none has."""
        if all(cid in self.live for cid in self._cancel_due):
            return {}
        return {CANCEL_DUE_KEY: self._live_cancels_due()}

    async def cancels_due(self) -> None:
        """Send the cancels the venue's Retry-After held back, once it is over."""
        if not self._cancel_due:
            return
        if any(cid not in self.live for cid in self._cancel_due):  # ended meanwhile (a fill, the poll): not sent
            await self._store_cancel_due()
        now = self.clock.wall()
        for cid, until in list(self._cancel_due.items()):
            o = self.live.get(cid)
            if o is None or now < until or cid in self._cancelling:  # one at the venue now: its answer says
                continue
            # Kept in the stored map while on the wire: a stop before its answer leaves it to send.
            ok, why = await self.cancel(o)
            if self._cancel_due.get(cid, until) > until:
                continue  # held again by a Retry-After (stored again): said when it goes out
            if not ok and cid in self.live and cid not in self._cancel_asked and cid not in self._behind:
                # Not done (the exchange down, a 5xx on every try, the order not found by its id): it may still be
                # open there, and whoever asked is done. Sent again at the next poll, until the exchange says how it
                # ended.
                self._cancel_due[cid] = now
                log.warning("held cancel not done: sent again at the next poll", venue=self.venue.name, order=cid,
                            detail=why or o.status.value)
                await self._store_cancel_due()
                continue
            self._cancel_due.pop(cid, None)
            await self._store_cancel_due()  # only once answered
            if ok:
                log.info("held cancel done", venue=self.venue.name, order=cid)
            else:
                log.warning("held cancel not done", venue=self.venue.name, order=cid, detail=why or o.status.value)

    async def cancel_all(self, symbol: str | None = None, *, by: str = "",
                         on_wire: dict[str, asyncio.Task[tuple[bool, str]]] | None = None) -> CancelReport:
        """Cancel every order in flight, concurrently, bounded by cancel_timeout_s from the create_order's answer
        of an order on the wire (see collect). `by`: who asked (the kill switch's presser), as for cancel. `on_wire`:
        the cancels of orders whose create_order is still on the wire are not waited for but put there, under way
        (each waits for that answer, as long as the exchange takes, then cancels); `collect` reports them."""
        t0 = time.perf_counter()
        targets = [o for o in self.live.values() if symbol is None or o.symbol == symbol]
        tasks = {o.client_order_id: asyncio.ensure_future(self.cancel(o, by)) for o in targets}
        if on_wire is not None:
            for cid in [cid for cid in tasks if cid in self._sending]:
                on_wire[cid] = tasks.pop(cid)
        report = await self.collect(tasks)
        report.elapsed_ms = (time.perf_counter() - t0) * 1000.0
        return report

    async def collect(self, tasks: dict[str, asyncio.Task[tuple[bool, str]]]) -> CancelReport:
        """The report of cancels under way (client order id -> its task), waited for up to cancel_timeout_s: one
        still pending then is reported as failed ("cancel timed out") and sent again by the poll; it goes on (never
        cut off in the middle of a write: what it records lands once the exchange and the disk answer). The cancel of an
        order whose create_order is on the wire begins once the exchange has answered it (`cancel`), whoever sent
        it: its time counts from then, as long as the exchange takes to answer (the send's own timeout bounds it).
        Cut off before, the order it waits for would be said a failed cancel, then fill or open."""
        report = CancelReport()
        if not tasks:
            return report
        for cid in tasks:
            sending = self._sending.get(cid)
            if sending is not None:
                await sending.answered.wait()
        done, pending = await asyncio.wait(tasks.values(), timeout=self.cancel_timeout_s)
        late = False
        for cid, task in tasks.items():
            if task in pending:
                self.late.add(task)
                task.add_done_callback(self.late.discard)
                report.failed.append({"client_order_id": cid, "error": "cancel timed out"})
                # Not answered in time (waiting out the exchange's Retry-After, or a slow exchange): the order
                # may still be open there. Sent again by the poll, as a cancel the Retry-After held is.
                if cid in self.live:
                    self._cancel_due.setdefault(cid, self.clock.wall())
                    late = True
                continue
            exc = task.exception()
            if exc is not None:
                report.failed.append({"client_order_id": cid, "error": str(exc)[:200]})
                continue
            ok, err = task.result()
            if ok:
                report.cancelled.append(cid)
            elif err == FILLED_TRADES_BEHIND:  # filled before its cancel, as one whose trades are listed
                report.filled.append(cid)
            elif err not in NOTHING_TO_CANCEL:
                report.failed.append({"client_order_id": cid, "error": err})
        if late:
            await self._store_cancel_due()
        return report

    # ------------------------------------------------------------------ restart
    async def recover(self) -> list[Order]:
        """Load the journal's unfinished orders and resolve them against the venue before anything new is sent."""
        orders = await self.store.live_orders()
        intents = await self.store.order_intents([o.client_order_id for o in orders])
        until = await self.store.get_kv(HOLD_KEY)
        if isinstance(until, (int, float)):
            if until > self.clock.wall():
                self.hold_until = float(until)  # its fault was said before the restart; its end is said when it comes
            else:
                await self._hold_ended("orders go to the venue again (the hold ended while the engine was stopped)")
        asked = set(await self.store.get_kv(CANCEL_ASKED_KEY, []) or [])
        self._cancel_asked = asked & {o.client_order_id for o in orders}
        due = await self.store.get_kv(CANCEL_DUE_KEY) or {}
        live_ids = {o.client_order_id for o in orders}
        self._cancel_due = {str(cid): float(t) for cid, t in due.items() if cid in live_ids} \
            if isinstance(due, dict) else {}
        ended = await self.store.get_kv(ENDED_KEY) or {}
        for cid, until in ended.items() if isinstance(ended, dict) else ():
            o = await self.store.order(str(cid))
            if o is not None and o.status.final:
                self._ended[o.client_order_id] = (o, float(until))
        said = await self.store.get_kv(ENDED_SAID_KEY) or []
        self._said_ended = {str(cid) for cid in said if str(cid) in self._ended} if isinstance(said, list) else set()
        shown = await self.store.get_kv(REAPPEARED_KEY) or []
        self._reappeared = {str(cid) for cid in shown if str(cid) in self._ended} if isinstance(shown, list) else set()
        refused = set(await self.store.get_kv(REPEAT_REFUSED_KEY, []) or [])
        self._repeat_refused = refused & {o.client_order_id for o in orders}
        resent = await self.store.get_kv(RESENT_KEY) or {}
        self._resends = {str(cid): int(n) for cid, n in resent.items() if cid in live_ids} \
            if isinstance(resent, dict) else {}
        for o in orders:
            self.live[o.client_order_id] = o
            raw = intents.get(o.client_order_id)
            intent = self.intents[o.client_order_id] = OrderIntent.from_dict(raw) if raw else _intent_of(o)
            o.by = intent.by
            if counts_in_daily_trades(o.reduce_only, o.reason):
                # The start counted it in its day from the journal (Store.entries_since): taken back likewise.
                said = raw.get("entry_day") if raw else None
                self._counted[o.client_order_id] = said if isinstance(said, int) else entry_day_of(o.created_ts)
            if o.status is OrderStatus.IN_DOUBT:
                self._doubted.add(o.client_order_id)
            if o.status is OrderStatus.NEW and self._move(o, OrderStatus.IN_DOUBT):
                # Journaled, then the process stopped: it may or may not have reached the venue.
                await self._write_state(o, self.book(), publish=functools.partial(self._emit, o))
            elif o.status is OrderStatus.IN_DOUBT:
                # Said again at each start: whoever watches orders in doubt (the alerts) learns of it anew.
                self._emit(o)
        return orders


    async def adopt(self, vo: VenueOrder, note: dict[str, Any]) -> Order:
        """An order the venue has and the journal lacks (placed by this account's engine after the backup the
        journal was restored from): journaled as the venue shows it, its fills recorded from the venue's word,
        kept in flight while it is open. Nothing is sent. `note` is stored with it (its intent), saying where
        it came from."""
        now = self.now_ms()
        o = Order(client_order_id=vo.client_order_id, symbol=vo.symbol, side=vo.side, quantity=vo.quantity,
                  type=vo.type, reason=OrderReason.RECONCILE, venue=self.venue.name, decision_id=None,
                  price=vo.price, reduce_only=vo.side is Side.SELL, status=OrderStatus.OPEN,
                  exchange_id=vo.exchange_id, created_ts=vo.ts or now, updated_ts=now)
        intent = _intent_of(o)
        await self.store.journal_order(o, {**intent.as_dict(), **note}, publish=functools.partial(self._emit, o))
        self.live[o.client_order_id] = o
        self.intents[o.client_order_id] = intent
        await self._apply(o, vo)
        return o

NOTHING_TO_CANCEL = ("already filled", "never opened")
# A cancel's answer for an order the exchange shows filled whose trades are not listed yet: it stays in flight here
# until they are (its fill is booked from them), and is no failed cancel.
FILLED_TRADES_BEHIND = "already filled (recorded once the venue's trades show it)"


def _order_event(o: Order) -> OrderEvent:
    """The `order` event that says the order as it is now."""
    return OrderEvent(client_order_id=o.client_order_id, decision_id=o.decision_id, symbol=o.symbol,
                      side=o.side.value, type=o.type, quantity=o.quantity, status=o.status.value,
                      reason=o.reason.value, filled=o.filled, average=o.average, error=o.error, venue=o.venue,
                      by=o.by, cancel_by=o.cancel_by)


def _clock_text(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def ended_unsold(o: Order | None) -> str | None:
    """How an order the exchange ended in its own answer before it filled whole (expired: a time in force,
    self-trade prevention; rejected after it was accepted) ended; None for one working, in doubt or filled. A close
    or an approval made of such an order is not done."""
    if o is None or not o.status.final or o.status is OrderStatus.FILLED:
        return None
    return o.error or o.status.value


def _ended_by_venue(o: Order, vo: VenueOrder, cancel_sent: bool) -> str | None:
    """Why the venue ended an order it had accepted, with what filled; None for an end that needs no reason (filled,
    or cancelled after ffe asked it to)."""
    if vo.status == "rejected":
        return f"{REJECTED_THERE} after it was accepted, {_filled_text(o, vo)}"
    if vo.status == "expired":
        return f"{EXPIRED_THERE}, {_filled_text(o, vo)}"
    if vo.status == "canceled" and not cancel_sent:
        return f"{CANCELED_THERE}, no cancel sent by ffe since it started, {_filled_text(o, vo)}"
    return None


def _filled_text(o: Order, vo: VenueOrder) -> str:
    return f"{fmt.qty(vo.filled, 8)} of {fmt.qty(o.quantity, 8)} filled" if vo.filled > 0 else "nothing filled"


def _end_of(o: Order) -> tuple[bool, str]:
    """A cancel's outcome for an order that has ended: (cancelled, why not)."""
    if o.status is OrderStatus.CANCELED:
        return True, ""
    return False, "already filled" if o.status is OrderStatus.FILLED else "never opened"


def _intent_of(o: Order) -> OrderIntent:
    return OrderIntent(symbol=o.symbol, side=o.side, quantity=o.quantity, reason=o.reason,
                       decision_id=o.decision_id, type=o.type, price=o.price, reduce_only=o.reduce_only)


def dust_at_stop(market: MarketInfo, qty: float, stop_loss: float, fee_rate: float) -> bool:
    """Whether an entry of `qty` would be below the venue's minimum sold at its stop-loss: what the position holds
    after a fee taken in the coin bought, in whole amount steps. A stop-loss at or below zero is never crossed."""
    if stop_loss <= 0.0:
        return False
    return market.below_minimum(floor_to_step(qty * (1.0 - fee_rate), market.amount_step), stop_loss)


def below_minimum_at_stop(qty: float, stop_loss: float, min_notional: float) -> str:
    """Why an entry is not sent whose stop-loss exit would be below the venue's minimum order."""
    return (f"below venue minimum at its stop-loss (qty {qty:.8g} at {stop_loss:.8g}, min notional {min_notional}): "
            "its exit there could not be sold")


def side_to_close(side: Side) -> Side:
    return Side.SELL if side is Side.BUY else Side.BUY
