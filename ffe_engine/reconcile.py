"""Reconciliation: the journal against the venue, at start (before any new order) and every N seconds.

1. Orders: every order the journal has in flight is looked up by client order id (in-doubt orders resolved,
   fills that happened while the engine was down recorded) by the order path's poll.
2. Open orders at the venue that the journal does not know are differences, unless the operator accepted them. One
   the journal has ended (taken as absent while the venue's lookups lagged) goes to the order path, which cancels it
   and books what it filled (OrderPath.reappeared); a difference only while that is not done.
3. Positions: for each traded symbol, the venue's base-asset balance less the baseline it had when ffe first
   started on this account (`toward_position`) must equal the position ffe holds.
4. Cash and equity: ffe's cash must equal the venue's quote balance (to the cent), and ffe's equity the venue's
   (quote balance plus the positions above at ffe's last prices). A reconciliation asked to leave the cash out
   (the first after a live start, whose cash the engine then takes from the report) compares positions only.

An order still in doubt (or sent and not answered, or open and not readable when the poll looked it up, or shown
filled beyond the trades the venue lists for it yet, for the venue's settle window) after the poll may have traded
at the venue without the journal knowing yet: its symbol's position, and the cash and equity, are not compared
then, and the report says the balances are not settled (the engine takes no cash from them).

The balances are read after the orders are polled, and read again when a poll after them records a fill: a fill
landing between the poll and the balance would otherwise show as a difference that is not one.

Balances read within the venue's settle window after the last order change the books took (a fill, a cancel) may be
from before it: the venue's reads can lag its books by up to that window. What such a read shows in the positions,
the cash and the equity is reported as unconfirmed and counts for nothing: it does not confirm a difference, and
not finding one there does not end it (`ReconcileReport.current_from`, after which a read would be current, and the
engine looks again then). Orders filling one after the other would otherwise have each read show the balance from
before the latest fill: a different amount each time, in the same symbol.

A difference counts once a reconciliation at least the venue's settle window after the one that first found it
finds it again (the same kind, in the same symbol, asset or order), with current balances: an exchange's reads can
lag its books for a moment (a balance from before the last fill, an order still listed open after it filled), and a
difference seen once may be no more than that. Until then it is reported as unconfirmed, and the engine reconciles
again once the window has passed. A paper venue's answers never lag: its differences count at once.

The reconciler compares and reports (a `reconcile` event and a `ReconcileReport`, with the venue's quote balance);
it changes no trading state. The engine decides: an unexplained difference pauses it until the operator accepts
the differences (which also takes the venue's balances as the new baseline, and its quote balance as the cash).
An accept is refused while an order is in doubt or unanswered: the balances it would take may hold that order's
trade, which the journal records once the order is settled, and would then count twice; so is it while an order
is filled at the venue beyond the trades it lists, however long they lag (past the settle window the differences
they explain are compared, and name the order: `trades_behind`). And it reads the balances only
once the settle window has passed since the last order change the books took: a read that lags steadily answers the
same balances twice, from before a fill, whose coins would then stay in the baseline and whose proceeds leave the cash.

What of the account's coins counts toward a position is its balance less the baseline, wherever it is weighed (the
differences, an accept's refusal over coins gone, a sale booked by hand, an order in doubt looked for in the
balance): `toward_position`, the one definition. Coins the account held before ffe are the operator's; weighed with
them, a sale by hand of the position's coins was taken for coins still there.

Fewer coins toward a position than the books hold, while the account holds at least the position (the baseline
covers what left), reads two ways that the balances cannot tell apart: the position's coins were sold by hand (the
sale is to be booked: `ffe ctl sold-by-hand`), or coins of the operator's own left the account, the position
untouched (`ffe ctl accept --own-coins`: the baseline is lowered by what left, the position kept). The plain accept
is refused naming both; the operator says which (`own_coins_may_have_left`). Where the account holds less than the
position, or there is no baseline, coins of the position are gone for sure: --own-coins is refused too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .errors import ControlError
from .events import EventBus, ReconcileEvent
from .execution import OrderPath
from .model import Order, OrderStatus, Side
from .outage import outage, outage_only
from .portfolio import Portfolio
from .store import Store
from .venues.base import Venue, VenueError, VenueUnavailable, clock_refused

CENT = 0.01  # cash and equity agree to the cent of the quote currency
STUCK_SETTLE_WINDOWS = 2  # an order still in doubt this many settle windows past its own is a difference
BASELINE_KEY = "reconcile_baseline"
# A shortfall of coins beyond this share of a position is no fee or rounding: an accept is refused over it.
MISSING_COINS = 0.01
ACCEPTED_KEY = "reconcile_accepted_orders"  # open orders at the venue that the operator accepted as not ffe's
BALANCE_KINDS = ("position", "cash", "equity")  # the differences found in the venue's balances


class BalancesMoved(ControlError):
    """An accept refused: the venue's balances are not those the differences being accepted showed."""


@dataclass(frozen=True, slots=True)
class Acceptance:
    """What an accept takes from the venue: its quote balance, the engine's cash from now on (None when the venue
    could not be read), the records that change with it (the new baseline, the open orders accepted as not ffe's),
    for the engine to store with its books and the accept's record in one transaction, and the coins it took as the
    operator's own."""

    cash: float | None
    records: dict[str, Any]
    # The coins taken as the operator's own that left the account (`accept --own-coins`): asset -> how much the
    # baseline was lowered by.
    own: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class ReconcileReport:
    status: str  # ok, resolved (orders in doubt settled, nothing unexplained), differences, unconfirmed (found for the
    # first time, or balances read too soon after an order change to count), failed, superseded (an accept was
    # stored while it ran: not recorded, not acted on), waiting (the exchange asked for no requests for `wait_s` more
    # (Retry-After): nothing compared, not recorded; reconciled again once that is over)
    differences: list[dict[str, Any]] = field(default_factory=list)
    venue_cash: float | None = None  # the venue's quote balance, read after the orders in flight were resolved
    # No order was in doubt or unanswered when the balances were read: they and the journal's fills describe the
    # same trades. Otherwise an order the venue filled may be in the balances and not yet in the journal.
    settled: bool = True
    # Differences found for the first time, or not yet the settle window after that: they count if found again by
    # a reconciliation from `confirm_at` on (the clock's monotonic time).
    unconfirmed: list[dict[str, Any]] = field(default_factory=list)
    confirm_at: float | None = None
    # When (the clock's monotonic time) a read of the balances would show every order change the books had taken
    # when these were read: None when these did. Until then what they show counts for nothing (module docstring).
    current_from: float | None = None
    wait_s: float = 0.0  # status waiting: how long the exchange asked for no requests, from when the report was made

    @property
    def unreachable(self) -> bool:
        return self.status == "failed"

    @property
    def current(self) -> bool:
        """The balances were read the settle window after the last order change the books took."""
        return self.current_from is None


def in_doubt_only(differences: list[dict[str, Any]]) -> bool:
    """Orders long in doubt, and nothing else: they lift once those settle, nothing to accept."""
    return bool(differences) and all(d.get("kind") == "order_in_doubt" for d in differences)


def in_doubt_text(differences: list[dict[str, Any]]) -> str:
    ids = [str(d.get("client_order_id")) for d in differences if d.get("kind") == "order_in_doubt"]
    more = f" (and {len(ids) - 3} more)" if len(ids) > 3 else ""
    return (f"order {', '.join(ids[:3])}{more} in doubt for long (not found at the venue, not sent again): the "
            "positions and cash cannot be compared meanwhile")


def lagging_trades(differences: list[dict[str, Any]]) -> list[str]:
    """The orders filled at the venue beyond the trades it lists yet that explain some of the differences
    (`trades_behind`), by client order id, each once."""
    ids: list[str] = []
    for d in differences:
        ids += [str(cid) for cid in d.get("trades_behind") or [] if str(cid) not in ids]
    return ids


def unexplained(differences: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The differences no order whose trades lag explains: those are for the operator to look into and accept."""
    return [d for d in differences if not d.get("trades_behind")]


# The way out when an exchange never lists an order's trades (OrderPath.settle).
SETTLE_UNLISTED = ("never listed: `ffe ctl settle ID filled --quantity Q --price P --fee F --fee-currency C` from the "
                   "exchange's account")


def lagging_text(ids: list[str]) -> str:
    more = f" (and {len(ids) - 3} more)" if len(ids) > 3 else ""
    return f"order {', '.join(ids[:3])}{more}, filled at the exchange beyond the trades it lists yet"


def blocked_text(differences: list[dict[str, Any]]) -> str:
    """What holds the engine, said as the operator should take it. Differences an order whose trades lag explains
    are said apart: there is nothing to accept for them (the accept is refused while its trades lag), they go once
    the exchange lists its trades and the fill is booked."""
    if in_doubt_only(differences):
        return in_doubt_text(differences)
    if outage_only(differences):
        return outage(differences).what
    lagging = lagging_trades(differences)
    rest = unexplained(differences)
    if not lagging:
        return f"{len(differences)} unexplained difference(s)"
    explained = f"{len(differences) - len(rest)} difference(s) explained by {lagging_text(lagging)}"
    if not rest:
        return f"{explained}: nothing to accept, they go once its trades are listed ({SETTLE_UNLISTED})"
    return (f"{len(rest)} unexplained difference(s), and {explained} (nothing to accept for those: they go once its "
            f"trades are listed; {SETTLE_UNLISTED})")


def accept_hint(differences: list[dict[str, Any]]) -> str:
    """The command that lifts the differences, as a short hint beside blocked_text; empty when there is nothing to
    accept (an outage, orders in doubt, only differences an order's lagging trades explain)."""
    if not differences or in_doubt_only(differences) or outage_only(differences) or not unexplained(differences):
        return ""
    if lagging_trades(differences):
        return "`ffe ctl accept` once the trades are listed (refused until then)"
    return "`ffe ctl accept`"


# The state's reason while reconciliation pauses the engine: what holds it (hold_reason), or, once nothing does, what
# ended the hold and that a resume is what is left (lifted_reason). The engine keeps it in step (Engine._hold).
REASON = "reconcile: "
RESUME_LEFT = "resume when ready"


def hold_reason(blocked: list[dict[str, Any]]) -> str:
    return f"{REASON}{outage(blocked).reason if outage_only(blocked) else f'{len(blocked)} difference(s)'}"


def lifted_reason(what: str) -> str:
    return f"{REASON}{what}; {RESUME_LEFT}"


def paused_by_reconcile(reason: str) -> bool:
    """The state's reason is reconciliation's: holding the engine, or a hold that ended."""
    return reason.startswith(REASON)


def says_held(reason: str) -> bool:
    """The state's reason says reconciliation holds the engine (not that a hold ended): a restart that finds it
    owes the operator the hold's end when the venue agrees (RECONCILE_OK)."""
    return paused_by_reconcile(reason) and not reason.endswith(RESUME_LEFT)


def hand_sale_command(symbol: str) -> str:
    """The command that books a sale of `symbol`'s coins made on the exchange by hand, as the operator is told it."""
    return f"`ffe ctl sold-by-hand {symbol} --quantity Q --price P --fee F`"


def toward_position(symbol: str, balances: dict[str, float], base_line: dict[str, float]) -> float:
    """What of the account's balances counts toward the books' position in `symbol`: its base asset's balance less
    the baseline (the coins the account held before ffe, or an accepted shortfall below zero)."""
    base = symbol.partition("/")[0]
    return balances.get(base, 0.0) - base_line.get(base, 0.0)


OWN_COINS_COMMAND = "`ffe ctl accept --own-coins`"


# How far short of the position the account may be for coins gone to be the operator's own (float noise only): any
# more, and coins of the position are gone too, which no baseline can take (it would go below nothing).
COVERED = 1e-9


def own_coins_may_have_left(differences: list[dict[str, Any]]) -> list[str]:
    """Of `coins_gone`, the symbols whose coins gone the baseline covers: the account, with the operator's own coins,
    still holds the books' whole position (to COVERED). The operator's own coins may be what left (withdrawn,
    sold), the position untouched, as much as the position's coins sold by hand: the balances read the same."""
    return [d["symbol"] for d in differences if d.get("kind") == "position" and d.get("symbol") in coins_gone([d])
            and (baseline := float(d.get("baseline") or 0.0)) > 0
            and float(d.get("venue") or 0.0) + baseline >= float(d.get("journal") or 0.0) * (1.0 - COVERED)]


def coins_gone(differences: list[dict[str, Any]]) -> list[str]:
    """The symbols of the position differences where the books hold a position and the venue fewer coins toward it,
    by more than MISSING_COINS of it (sold or withdrawn outside ffe): an accept is refused for them, and the operator
    told to book the sale. Without a position, coins below the baseline are the operator's own: nothing to book."""
    return [d["symbol"] for d in differences if d.get("kind") == "position" and float(d.get("journal") or 0.0) > 0
            and float(d.get("venue") or 0.0) < float(d.get("journal") or 0.0) * (1.0 - MISSING_COINS)]


class Reconciler:
    def __init__(self, *, venue: Venue, store: Store, orders: OrderPath, portfolio: Portfolio, bus: EventBus,
                 symbols: list[str], clock: Clock, quote: str) -> None:
        self.venue = venue
        self.quote = quote
        self.store = store
        self.orders = orders
        self.portfolio = portfolio
        self.bus = bus
        self.symbols = symbols
        self.clock = clock
        self._first_seen: dict[str, float] = {}  # difference key -> when a reconciliation first found it
        self._accepted_missed: set[str] = set()  # accepted open orders the last read of the venue did not show
        # Accepts stored so far: a reconciliation under way across one compared the venue with the baseline it
        # replaced, and its differences are the ones accepted (`run` drops it: "superseded").
        self.accepts = 0

    def _confirm(self, report: ReconcileReport, started: float) -> ReconcileReport:
        """Split the report's differences into those that count and those not confirmed yet: a difference counts
        once it has been found by reconciliations that started the venue's settle window apart, without one in
        between that did not find it, the later with current balances. Balances that may lag the books neither
        confirm a difference in them nor end one: what earlier looks found there is kept as it was."""
        found = [(difference_key(d), d) for d in report.differences]
        kept = {} if report.current else {k: t for k, t in self._first_seen.items() if _in_balances(k)}
        self._first_seen = kept | {k: self._first_seen.get(k, started) for k, _ in found}
        settle = self.venue.settle_s

        def counts(k: str) -> bool:
            return started - self._first_seen[k] >= settle and (report.current or not _in_balances(k))

        waiting = [(k, d) for k, d in found if not counts(k)]
        report.differences = [d for k, d in found if counts(k)]
        report.unconfirmed = [d for _, d in waiting]
        if waiting:
            report.confirm_at = max(self._first_seen[k] for k, _ in waiting) + settle
            if not report.differences:
                report.status = "unconfirmed"
        if report.current_from is not None:  # looked at again once the reads are current
            report.confirm_at = max(report.confirm_at or 0.0, report.current_from)
            if not report.differences:  # not "ok": nothing in the balances was compared with current reads
                report.status = "unconfirmed"
        if not report.settled and report.status == "ok":
            # Not "ok" either: an order's fate unknown kept the cash and the equity (and its symbol) from being
            # compared; the engine looks again once none is (Engine._compare_waits).
            report.status = "unconfirmed"
        return report

    def unsettled(self) -> list[Order]:
        """The orders whose fate at the venue is unknown (in doubt, sent and not answered yet, or open and not
        readable at the last look) or whose trades trail their fill there for now: a trade of theirs may be in the
        venue's balances and not yet in the journal."""
        unread = {o.client_order_id for o in self.orders.unread()} | {
            o.client_order_id for o in self.orders.trades_behind()}
        return [o for o in self.orders.live.values()
                if o.status in (OrderStatus.IN_DOUBT, OrderStatus.NEW) or o.client_order_id in unread
                ] + self.orders.reappearing()

    def _tolerance(self, symbol: str) -> float:
        # The books take every amount from the venue's own figures (fills, fees in coins): they agree to the last
        # digit, but for the float arithmetic of their sum. A difference of an amount step is not rounding: a fee in
        # coins the books lack (a fill settled by the operator's word), which an exit of the whole position would
        # then try to sell and be refused.
        return max(self.venue.market(symbol).amount_step * 1e-3, 1e-12)

    def _bases(self) -> list[str]:
        return sorted({s.partition("/")[0] for s in self.symbols})

    def _held_by_base(self) -> dict[str, float]:
        """The books' positions summed per base asset."""
        held: dict[str, float] = {}
        for p in self.portfolio.positions.values():
            base = p.symbol.partition("/")[0]
            held[base] = held.get(base, 0.0) + p.quantity
        return held

    async def baseline(self, balances: dict[str, float]) -> dict[str, float]:
        """The venue's balances that ffe did not put there: taken once, when ffe first meets the account (an accept
        takes them again, stored with the accept: `accept`)."""
        saved: dict[str, float] | None = await self.store.get_kv(BASELINE_KEY)
        if saved is None:
            saved = self._new_baseline(balances)
            await self.store.put_kv(BASELINE_KEY, saved, self.clock.wall())
        self._take_baseline(saved)
        return saved

    def _new_baseline(self, balances: dict[str, float]) -> dict[str, float]:
        held = self._held_by_base()
        return {a: balances.get(a, 0.0) - held.get(a, 0.0) for a in self._bases()}

    def _take_baseline(self, saved: dict[str, float]) -> None:
        # Below zero, the account holds fewer coins than the books' positions (an accepted shortfall): an exit
        # sells what it holds, and what is left in the books is no position.
        self.portfolio.set_unbacked({s: -saved[b] for s in self.symbols
                                     if (b := s.partition("/")[0]) in saved and saved[b] < 0})

    async def shows_placed(self, o: Order) -> str | None:
        """Why an order in doubt that lookups do not find may be at the venue all the same (lookups can lag behind
        it): the venue's balance of its base asset, less the baseline, differs from the books' position by at least
        half of what it has left to fill, in its direction; or the balance could not be read. None when the balance
        shows nothing of it, or before the first reconciliation (no baseline): then it may be sent again."""
        base_line: dict[str, float] | None = await self.store.get_kv(BASELINE_KEY)
        if base_line is None:
            # Never reconciled: nothing to compare with. None is taken here, from balances that may hold the order.
            return None
        try:
            balances = await self.venue.fetch_balance()
        except (VenueError, VenueUnavailable) as exc:
            return f"the venue's balance could not be read to look for it ({exc})"
        ours, theirs = self._position_both_ways(o.symbol, balances, base_line)
        moved = theirs - ours
        if (moved if o.side is Side.BUY else -moved) >= 0.5 * (o.quantity - o.filled):
            return (f"the venue's {o.symbol.partition('/')[0]} balance is {moved:+.8g} off the books, as if it had "
                    "been placed")
        return None

    def _position_both_ways(self, symbol: str, balances: dict[str, float],
                            base_line: dict[str, float]) -> tuple[float, float]:
        """The position in `symbol` as the books hold it, and as the venue's balances show it (less the baseline)."""
        pos = self.portfolio.positions.get(symbol)
        return (pos.quantity if pos is not None else 0.0), toward_position(symbol, balances, base_line)

    def _position_differences(self, balances: dict[str, float], base_line: dict[str, float],
                              leave_out: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """The traded symbols (but `leave_out`) whose position the venue's balances, less the baseline, do not show
        to the amount step: what a reconciliation reports, and what an accept weighs for coins gone."""
        out: list[dict[str, Any]] = []
        for sym in self.symbols:
            if sym in leave_out:
                continue
            ours, theirs = self._position_both_ways(sym, balances, base_line)
            if abs(theirs - ours) > self._tolerance(sym):
                out.append({"kind": "position", "symbol": sym, "journal": ours, "venue": round(theirs, 12)})
                # The operator's own coins, beside it: whether they could be what left (own_coins_may_have_left).
                if baseline := base_line.get(sym.partition("/")[0], 0.0):
                    out[-1]["baseline"] = baseline
        return out

    @staticmethod
    def _holds(symbol: str, balances: dict[str, float], base_line: dict[str, float]) -> str:
        """What the account holds of `symbol`'s coin, as the operator is told it: with a baseline, what of it counts
        toward the position too."""
        base = symbol.partition("/")[0]
        held, baseline = balances.get(base, 0.0), base_line.get(base, 0.0)
        counted = (f" ({toward_position(symbol, balances, base_line):.8g} toward the position, its baseline "
                   f"{baseline:+.8g})" if baseline else "")
        return f"{held:.8g} {base}{counted}"

    async def _balances_after_fills(self) -> tuple[dict[str, float], bool, float]:
        """The venue's balances, whether they describe the same trades as the journal, and when (the clock's
        monotonic time) they were asked for. True when no fill was recorded from the moment they were asked for
        until a poll after them (a few tries). A fill recorded meanwhile, by this poll or by any other path (the
        periodic poll, a cancel's answer, an order's own answer), may be missing from balances the venue took
        before it. (A fill recorded before they were asked for may be missing too, when a read lags: `current_at`.)"""
        orders = self.orders
        balances: dict[str, float] = {}
        asked = 0.0
        for _ in range(3):
            seen = orders.fills_recorded
            asked = self.clock.monotonic()
            balances = await self.venue.fetch_balance()
            if orders.live:
                await orders.poll()
            if orders.fills_recorded == seen:
                return balances, True, asked
        return balances, False, asked

    def _cash_and_equity(self, balances: dict[str, float], base_line: dict[str, float]) -> list[dict[str, Any]]:
        pf = self.portfolio
        cash = balances.get(self.quote, 0.0)
        out: list[dict[str, Any]] = []
        if abs(pf.cash - cash) > CENT:
            out.append({"kind": "cash", "asset": self.quote, "journal": round(pf.cash, 8), "venue": round(cash, 8)})
        theirs = cash
        slack = CENT
        for sym in self.symbols:
            pos = pf.positions.get(sym)
            price = pf.last_price.get(sym) or (pos.entry_price if pos is not None else 0.0)  # as equity() does
            if price:
                theirs += toward_position(sym, balances, base_line) * price
                slack += self._tolerance(sym) * price  # what the position check lets pass
        # A position in a symbol not traded (no longer in engine.symbols: the start names it) has no price the
        # venue gives: both sides leave it out, as the venue's balances of its coin are left out above.
        ours = pf.equity() - sum(pf.exposure(s) for s in pf.positions if s not in self.symbols)
        if abs(ours - theirs) > slack:
            out.append({"kind": "equity", "asset": self.quote, "journal": round(ours, 2), "venue": round(theirs, 2)})
        return out

    def note_accepted(self, taken: Acceptance) -> None:
        """An accept's records are stored: a reconciliation under way since before it is superseded, and its baseline
        is the one the books go by from now on. Taken only now, not when the accept made it: a reconciliation that
        read the stored baseline while the accept was being written took the one it replaces, and the exits after
        the accept would have sold coins of an accepted shortfall, which the account does not hold."""
        self.accepts += 1
        baseline: dict[str, float] | None = taken.records.get(BASELINE_KEY)
        if baseline is not None:
            self._take_baseline(baseline)

    async def run(self, *, with_cash: bool = True) -> ReconcileReport:
        """Compare and record; the report's differences are empty when everything agrees. `with_cash=False` leaves
        the cash and equity out (the caller takes the cash from the report). One across which an accept was stored
        is neither recorded nor acted on (status "superseded"): it may have compared with the baseline replaced."""
        venue = self.venue
        accepts = self.accepts
        started = self.clock.monotonic()
        in_doubt = [cid for cid, o in self.orders.live.items() if o.status is OrderStatus.IN_DOUBT]
        await self.orders.poll()
        differences: list[dict[str, Any]] = []
        live = self.orders.live
        resolved = [cid for cid in in_doubt if cid not in live or live[cid].status is not OrderStatus.IN_DOUBT]
        # An order in flight when the venue's open orders are asked for may be ended (filled, cancelled) by another
        # path before they arrive: it is still the journal's, not an unknown open order.
        in_flight = set(live)
        try:
            open_at_venue = await venue.fetch_open_orders()
            self.orders.listed_open({vo.client_order_id for vo in open_at_venue})
            journal = await self.store.order_ids_on(venue.name)
            # An order of ffe's own that the journal has ended and the venue lists open (taken as absent while
            # the venue's lookups lagged): the order path cancels it now and books what it filled, before the
            # balances are read. Not done, it stays an unknown open order below, and is tried again.
            taken = {vo.client_order_id for vo in open_at_venue
                     if vo.client_order_id in journal and vo.client_order_id not in in_flight | set(live)
                     and await self.orders.reappeared(vo)}
            balances, quiet, asked = await self._balances_after_fills()
        except VenueUnavailable as exc:
            if exc.asked_to_wait:
                # The exchange answers: it asked for a wait (Retry-After), and what it holds back is only delayed.
                # Not an outage for the operator (no pause, no page): compared once the wait is over.
                return ReconcileReport("waiting", wait_s=exc.retry_after or 0.0)
            return self._unreachable(exc)
        except VenueError as exc:
            return self._unreachable(exc)
        known = in_flight | set(live) | taken
        accepted = set(await self.store.get_kv(ACCEPTED_KEY, []) or [])
        for vo in open_at_venue:
            if vo.client_order_id in known or _order_key(vo) in accepted:
                continue
            side = vo.side.value if vo.side_known else "unknown"
            differences.append({"kind": "unknown_open_order", "client_order_id": vo.client_order_id,
                                "symbol": vo.symbol, "side": side, "quantity": vo.quantity,
                                "in_journal": vo.client_order_id in journal, "exchange_id": vo.exchange_id})
        # Accepted orders that two reads in a row did not show are gone: forgotten. One read can lag behind the
        # venue (a replica) and miss an order still open, which would then be unknown again at the next read.
        missed = accepted - {_order_key(vo) for vo in open_at_venue}
        gone, self._accepted_missed = missed & self._accepted_missed, missed
        if gone:
            await self.store.put_kv(ACCEPTED_KEY, sorted(accepted - gone), self.clock.wall())
        # An order whose fate is unknown (in doubt, or sent and not answered yet) explains any difference in its
        # symbol and in the cash: those are compared once it is settled.
        unsettled = {o.symbol for o in self.unsettled()} if quiet else set(self.symbols)
        base_line = await self.baseline(balances)
        differences += self._position_differences(balances, base_line, unsettled)
        if with_cash and not unsettled:
            differences += self._cash_and_equity(balances, base_line)
        self._explain_by_lagging_trades(differences)
        # An order in doubt that neither settles nor is sent again would keep its symbol, the cash and the equity
        # from being compared for as long as it lasts, and a withdrawal (or any difference) would be traded
        # through: past twice the settle window beyond its own, it holds the engine itself, until it settles.
        for o in self.orders.stuck_in_doubt(STUCK_SETTLE_WINDOWS * venue.settle_s):
            differences.append({"kind": "order_in_doubt", "client_order_id": o.client_order_id, "symbol": o.symbol,
                                "side": o.side.value, "quantity": o.quantity})
        if self.accepts != accepts:
            self._take_baseline(await self.store.get_kv(BASELINE_KEY) or {})  # the accepted one, stored
            return ReconcileReport("superseded")
        status = "differences" if differences else ("resolved" if resolved else "ok")
        report = self._confirm(ReconcileReport(status, differences, balances.get(self.quote, 0.0),
                                               settled=not unsettled, current_from=self.current_at(asked)), started)
        self.bus.publish(ReconcileEvent(status=report.status, differences=report.differences or report.unconfirmed))
        return report

    def _explain_by_lagging_trades(self, differences: list[dict[str, Any]]) -> None:
        """Mark the differences in the balances that an order whose trades lag its fill at the venue explains (past
        the settle window they are compared): its symbol's position, the cash and the equity, with `trades_behind`,
        the ids of those orders. The fill is in the balances, and the journal books it once its trades are listed:
        nothing to accept meanwhile (the accept is refused while such an order is in flight)."""
        lagging = self.orders.trades_lagging()
        for d in differences:
            if d.get("kind") in BALANCE_KINDS:
                ids = [o.client_order_id for o in lagging if d["kind"] != "position" or o.symbol == d.get("symbol")]
                if ids:
                    d["trades_behind"] = ids

    def _unreachable(self, exc: Exception) -> ReconcileReport:
        # One list for the record and the report: the record says what the difference is, as every one does. An
        # exchange that refused this machine's clock answered: said apart, as the clock it is (outage.py).
        error = str(exc)
        unreachable = [{"kind": "clock_refused", "error": error[:200]} if clock_refused(error) else
                       {"kind": "venue_unreachable", "error": error[:200]}]
        self.bus.publish(ReconcileEvent(status="failed", differences=unreachable))
        return ReconcileReport("failed", unreachable)

    async def accept(self, differences: list[dict[str, Any]], *, wait_s: float = 0.0,
                     own_coins: bool = False, cash_of_the_books: bool = True) -> Acceptance:
        """The operator accepts the venue as it is: its balances become the new baseline, and the open orders found
        that are not ffe's are left out of later reconciliations (while they stay open). Returns the venue's quote
        balance, the engine's cash from now on (None when the venue could not be read), and those records, which
        the engine stores with its books and the accept's record (one transaction: a kill leaves all or none).

        Refused (ControlError, nothing changed) while an order is in doubt or unanswered after a last look: its trade
        may be in the balances already, and recording it later would count it a second time; and when the venue's
        balances are not the same at two reads in a row (a read can lag its books), up to four reads. The balances
        are read as a reconciliation reads them, after the orders in flight are polled, and only once the venue's
        settle window has passed since the last order change the books took (a fill, a cancel): a read that lags
        steadily answers the same balances twice, from before it. That wait is waited for when it ends within
        `wait_s`, and refused with when to accept again otherwise.

        Only what was shown is accepted: balances that moved since the differences were shown (a withdrawal after the
        one shown, coins arriving in a symbol shown agreeing) are refused (BalancesMoved), for a reconciliation to
        show them first. `cash_of_the_books`: whether the books hold a cash of their own to weigh the venue's
        against (not while they take the venue's, after a first start or a restore).

        Fewer coins toward a position than the books hold, which the baseline covers, is refused unless `own_coins`
        (the operator's word that coins of their own left): then the baseline of those coins is lowered by what left
        and the position kept, and no baseline is raised (`_refuse_coins_missing`)."""
        await self.orders.poll()
        self._refuse_while_unsettled()
        await self._wait_for_current_reads(wait_s)
        read_from = self.clock.monotonic()
        balances: dict[str, float] | None = None
        try:
            # An order sent meanwhile (an exit goes on while PAUSED) may trade around the read: the balances are
            # read again until no fill was recorded meanwhile. And a read can lag the venue's books: what becomes
            # the baseline is what two reads in a row agree on.
            balances, quiet, _ = await self._balances_after_fills()
            for _ in range(3):
                again, quiet_again, _ = await self._balances_after_fills()
                steady = again == balances
                balances, quiet = again, quiet_again
                if steady:
                    break
        except (VenueError, VenueUnavailable):
            balances, quiet, steady = None, True, True
        self._refuse_while_unsettled()
        if not quiet:
            raise ControlError("nothing accepted: orders kept filling while the venue's balances were read; "
                               "accept again")
        if not steady:
            raise ControlError("nothing accepted: the venue's balances changed at every read; accept again")
        if self.current_at(read_from) is not None:
            raise ControlError("nothing accepted: an order changed while the venue's balances were read, and they may "
                               "not show it yet; accept again")
        # Weighed against the baseline in force (none stored yet: every coin counts toward the positions).
        old: dict[str, float] = await self.store.get_kv(BASELINE_KEY) or {}
        if balances is not None:
            moved = self._moved_since_shown(balances, old, differences, cash_of_the_books)
            if moved:
                raise BalancesMoved(f"nothing accepted: the exchange's balances differ from the books by other "
                                    f"amounts than the differences shown ({'; '.join(moved)}): a reconciliation looks "
                                    "again now, and shows a difference it had not seen once a second look confirms "
                                    "it, the settle window later (exchange.settle_window_ms; `ffe ctl why`); accept "
                                    "what it shows then")
        taken = self._refuse_coins_missing(balances, old, own_coins) if balances is not None else []
        foreign = {d["client_order_id"] or f"#{d.get('exchange_id')}" for d in differences
                   if d.get("kind") == "unknown_open_order"}
        records: dict[str, Any] = {}
        if foreign:
            accepted = set(await self.store.get_kv(ACCEPTED_KEY, []) or [])
            records[ACCEPTED_KEY] = sorted(accepted | foreign)
        if balances is None:
            if own_coins:
                raise ControlError("nothing accepted: the exchange's balances could not be read, and --own-coins "
                                   "takes what left from them; accept again once it answers")
            if any(d.get("kind") in BALANCE_KINDS for d in differences):
                # A difference in the balances is accepted by taking them as the new baseline: unread, nothing is.
                raise ControlError("nothing accepted: the exchange's balances could not be read, and the differences "
                                   "are in them; accept again once it answers")
            return Acceptance(None, records)
        new = self._new_baseline(balances)
        if own_coins:  # the operator's word that these coins of theirs left: it lowers their baseline, never raises it
            # (any other difference shown is taken as the plain accept takes it: a deposit raises its coin's)
            new = {a: min(v, old.get(a, v)) if a in taken else v for a, v in new.items()}
        # Written over the old baseline in the same write: never missing in between, which the next start would
        # take for a first meeting with the account.
        records[BASELINE_KEY] = new  # the books take it once it is stored (note_accepted)
        return Acceptance(balances.get(self.quote, 0.0), records, {a: old[a] - new[a] for a in taken})

    def _moved_since_shown(self, balances: dict[str, float], base_line: dict[str, float],
                           differences: list[dict[str, Any]], cash_of_the_books: bool) -> list[str]:
        """Where the venue's balances now differ from the books by another amount than the differences being
        accepted showed (the books' own trades since move both sides alike): a traded symbol's position, or the
        cash, shown differing by one amount and differing by another now; one shown agreeing (or not compared
        then, an order in it unsettled) and differing now. The equity follows from these and the prices."""
        shown = {difference_key(d): d for d in differences if d.get("kind") in ("position", "cash")}

        def then(key: str) -> float:
            d = shown.get(key)
            return float(d["venue"]) - float(d["journal"]) if d is not None else 0.0

        moved = []
        for sym in self.symbols:
            ours, theirs = self._position_both_ways(sym, balances, base_line)
            was = then(f"position:{sym}")
            if abs((theirs - ours) - was) > self._tolerance(sym):
                moved.append(f"{sym}: the exchange {was:+.8g} off the books then, {theirs - ours:+.8g} now")
        if cash_of_the_books:
            cash, ours = balances.get(self.quote, 0.0), self.portfolio.cash
            was = then(f"cash:{self.quote}")
            if abs((cash - ours) - was) > CENT:
                moved.append(f"{self.quote}: the exchange {was:+.2f} off the books then, {cash - ours:+.2f} now")
        return moved

    def current_at(self, read_at: float) -> float | None:
        """When (the clock's monotonic time) a read of the venue's balances made at `read_at` would have been sure to
        show every order change the books have taken: the settle window after the last one, which the venue's reads
        can lag behind (exchange.settle_window_ms is sized above that lag). None when one made then is."""
        changed = self.orders.changed_at
        if changed is None or changed + self.venue.settle_s <= read_at:
            return None
        return changed + self.venue.settle_s

    async def _wait_for_current_reads(self, wait_s: float) -> None:
        """Until a read of the venue's balances shows every order change the books have taken: waited for when that
        comes within `wait_s`; ControlError saying when to accept again otherwise."""
        for _ in range(3):  # an order that changes during the wait starts it again
            now = self.clock.monotonic()
            at = self.current_at(now)
            if at is None:
                return
            if at - now > wait_s:
                raise ControlError(
                    f"nothing accepted: an order changed {now - (at - self.venue.settle_s):.1f}s ago, and the "
                    f"exchange's balance reads may not show it until its settle window ({self.venue.settle_s:g}s, "
                    f"exchange.settle_window_ms) has passed: accept again in {math.ceil(at - now)}s")
            await self.clock.sleep(at - now)

    def _refuse_coins_missing(self, balances: dict[str, float], base_line: dict[str, float],
                              own_coins: bool = False) -> list[str]:
        """The venue holds fewer coins toward a symbol's position (less the baseline) than the books' position, by
        more than fees and rounding explain (`coins_gone`, over the differences a reconciliation would report):
        sold or withdrawn by hand. As a baseline, the difference would leave the books a position with no coins of
        ffe's behind it: backed by the operator's own coins (an exit would sell those, and the sale by hand would
        never be booked as a trade), or by none (valued in the equity and in every size, its exits refused for want
        of funds). Refused: the coins must be there to be traded, or the sale booked.

        Where the baseline covers what left (`own_coins_may_have_left`), coins of the operator's own may be what
        left instead: refused naming both, unless `own_coins` says so. Returns the base assets then taken as the
        operator's own. `own_coins` is refused where coins of the position are gone for sure (the account holds
        less than the position, or there is no baseline), and where no coins are missing at all."""
        found = self._position_differences(balances, base_line)
        either = own_coins_may_have_left(found)
        sure = [sym for sym in coins_gone(found) if sym not in either]
        if sure:
            sym = sure[0]
            ours, _ = self._position_both_ways(sym, balances, base_line)
            holds = f"the exchange holds {self._holds(sym, balances, base_line)}"
            if not own_coins:
                why = "they left the account outside ffe"
            elif base_line.get(sym.partition("/")[0], 0.0) <= 0:
                why = ("with no coins of your own there before ffe (no baseline) that could have left instead: "
                       "coins of the position left the account outside ffe")
            else:
                why = ("what left is more than the baseline of your own coins covers: coins of the position left "
                       "the account outside ffe too")
            raise ControlError(
                f"nothing accepted: {holds}, fewer coins than the books' {sym} position of {ours:.8g}: {why}, and a "
                "position with no coins behind it cannot be sold. Put them back on the exchange (buy them there), "
                f"then accept; if they were sold there by hand, book the sale ({hand_sale_command(sym)}); or "
                "restore the records that match the account")
        if own_coins:
            if not either:
                raise ControlError("nothing accepted: no position is short of coins that coins of your own could be "
                                   "(coins of yours gone beside no position are taken as the account shows them): "
                                   "accept without --own-coins")
            return [sym.partition("/")[0] for sym in either]
        if either:
            sym = either[0]
            ours, theirs = self._position_both_ways(sym, balances, base_line)
            left = ours - theirs  # the coins short, toward the position and the baseline alike
            raise ControlError(
                f"nothing accepted: the exchange holds {self._holds(sym, balances, base_line)}, fewer coins than the "
                f"books' {sym} position of {ours:.8g} and your own coins beside it, {left:.8g} short; ffe cannot tell "
                f"which left. If coins of your own left (withdrawn, sold), take them as yours with "
                f"{OWN_COINS_COMMAND} (the baseline goes down by {left:.8g}, the position is kept); if the position's "
                f"coins were sold there by hand, book the sale ({hand_sale_command(sym)})")
        return []

    async def refuse_unless_sold(self, symbol: str, quantity: float) -> None:
        """ControlError unless the venue's account shows `quantity` of the books' position in `symbol` gone: what it
        holds of the symbol's base asset (less the baseline) is no more than the position less `quantity`, to the
        amount step. A sale by hand that the account does not show (a typo, another account, a sale not done yet)
        would leave the books fewer coins than the account, which no exit would ever sell."""
        base_line: dict[str, float] | None = await self.store.get_kv(BASELINE_KEY)
        if base_line is None:
            raise ControlError("no reconciliation has measured the exchange's account yet: nothing booked; book the "
                               "sale once one has (`ffe ctl why`)")
        try:
            balances = await self.venue.fetch_balance()
        except (VenueError, VenueUnavailable) as exc:
            raise ControlError(f"the exchange's balances could not be read ({str(exc)[:120]}): nothing booked; book "
                               "the sale once it answers") from None
        ours, theirs = self._position_both_ways(symbol, balances, base_line)
        if theirs > ours - quantity + self._tolerance(symbol):
            raise ControlError(f"the exchange's account still holds {self._holds(symbol, balances, base_line)}: a "
                               f"sale of {quantity:.8g} would leave the books' {symbol} position of {ours:.8g} at "
                               f"{ours - quantity:.8g}, fewer coins than the account; nothing booked")

    def _refuse_while_unsettled(self) -> None:
        # An order whose trades lag its fill blocks an accept for as long as they lag, not only for the settle
        # window the comparison gives it: its fill is in the balances the accept would take, and is booked again
        # once its trades are listed.
        lagging = self.orders.trades_lagging()
        behind = {o.client_order_id for o in lagging}
        waiting = lagging + [o for o in self.unsettled() if o.client_order_id not in behind]
        if not waiting:
            return
        o = waiting[0]
        more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
        if o.client_order_id in behind:
            raise ControlError(
                f"nothing accepted: order {o.client_order_id}{more} is filled at the venue beyond the trades it lists "
                "yet; the venue's balances hold its fill, which the journal books once its trades are listed, and "
                "taking them now would count it twice: accept again once its trades are listed (`ffe ctl orders` "
                "shows its fill booked); ffe books a fill only from the exchange's trades, so until the exchange lists "
                f"them nothing is accepted; if it never does, `ffe ctl settle {o.client_order_id} filled --quantity Q "
                "--price P --fee F --fee-currency C` books the fill and its fee as the exchange's account shows them")
        state = {OrderStatus.IN_DOUBT: "in doubt", OrderStatus.NEW: "sent and not answered yet"}.get(
            o.status, f"ended {o.status.value} in the journal and not done at the venue yet" if o.status.final
            else "not readable at the venue at the last look")
        raise ControlError(f"nothing accepted: order {o.client_order_id}{more} is {state}; the venue's balances may "
                           "hold its trade before the journal does: accept again once it is settled (`ffe ctl orders`)")


def _order_key(vo: Any) -> str:
    return vo.client_order_id or f"#{vo.exchange_id}"


def _in_balances(key: str) -> bool:
    """A difference (by its `difference_key`) found in the venue's balances."""
    return key.partition(":")[0] in BALANCE_KINDS


def difference_key(d: dict[str, Any]) -> str:
    """What a difference is about, whatever its amounts: a lagging read and the next one differ in them."""
    if d.get("kind") in ("unknown_open_order", "order_in_doubt"):
        about = d.get("client_order_id") or f"#{d.get('exchange_id')}"
    else:
        about = d.get("symbol") or d.get("asset") or ""
    return f"{d.get('kind')}:{about}"
