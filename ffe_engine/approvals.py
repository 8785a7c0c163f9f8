"""Manual approval: the pending approvals and the approval mode, with one owner.

In manual mode a decision that passes every gate becomes a pending approval instead of an order. Approving sizes
the trade again at the current price (quantity, stop-loss and take-profit, as a new entry would be), runs the
gates again on that, against the state at that moment, and then uses the single order path. When the price has
already moved past the stop-loss or the take-profit the trade was proposed with, the approval is refused with that
reason: the trade it described no longer exists. Rejecting and expiring are recorded with who or what ended the
approval; a halt (kill switch or flatten) rejects every pending approval. An approval past its time to live is
never executed. The time to live is elapsed time (the clock's monotonic time), so the system clock being set
neither stretches nor cuts it; the wall times stored with the approval carry it across a restart, where what is
left of it is taken from them, never more than the time to live.

An approval ends exactly once. An approve under way owns its approval until it is done (the engine's housekeeping
expires approvals outside the controls' lock): expiry passes over it, a halt's reject_all and a reject wait for it.
Its time to live is checked before its order; once that order is journaled the approval is approved, however long
the exchange then takes to answer (a halt meanwhile cancels the order, as it cancels every other). The store
refuses to write over a final status (store.save_approval), whoever asks.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterable

from . import fmt, logs
from .clock import Clock
from .events import ApprovalEvent, EngineStateChanged, EventBus
from .execution import OrderPath, ended_unsold
from .model import Decision, GateResult, Order, OrderStatus, Side
from .overrides import Override, approval_mode
from .portfolio import Portfolio
from .risk import OrderIntent
from .store import Store
from .errors import ControlError
from .trading_state import TradingState

log = logs.get_logger("ffe.approvals")

MODES = ("auto", "manual")

# (symbol, price) -> (quantity, sizing record with stop_loss and take_profit): an entry sized as the engine sizes it
Sizer = Callable[[str, float], "tuple[float, dict[str, Any]]"]
PriceNow = Callable[[str], Awaitable[float | None]]


def moved_past(intent: OrderIntent, price: float) -> str:
    """Why an entry proposed with these stops can no longer be taken at `price` ("" when it still can)."""
    buy = intent.side is Side.BUY
    tp, sl = intent.take_profit, intent.stop_loss
    if tp is not None and (price >= tp if buy else price <= tp):
        return f"PRICE_MOVED: price moved past the take-profit: now {fmt.price(price)}, take-profit {fmt.price(tp)}"
    if sl is not None and (price <= sl if buy else price >= sl):
        return f"PRICE_MOVED: price moved past the stop-loss: now {fmt.price(price)}, stop-loss {fmt.price(sl)}"
    return ""


class ApprovalDesk:
    def __init__(self, *, store: Store, bus: EventBus, orders: OrderPath, portfolio: Portfolio,
                 trading: TradingState, clock: Clock, ttl_s: float, mode: str, new_id: Callable[[str], str],
                 size: Sizer, price_now: PriceNow) -> None:
        self.store = store
        self.bus = bus
        self.orders = orders
        self.portfolio = portfolio
        self.trading = trading
        self.clock = clock
        self.ttl_s = ttl_s
        self.mode = mode
        # The mode the operator last set, as stored (kv approval_mode); None while never set. The mode in effect may
        # be manual by the configuration alone (the safer wins): the operator's word is saved all the same.
        self.saved: str | None = None
        self.new_id = new_id
        self.size = size
        self.price_now = price_now  # the market's price at this moment (ControlError when it cannot be read)
        self.pending: dict[str, dict[str, Any]] = {}  # approval id -> approval row
        self._deadline: dict[str, float] = {}  # approval id -> when it expires, on the clock's monotonic time
        self._approving: dict[str, asyncio.Event] = {}  # approval id -> set when its approve under way is done

    async def restore(self, *, mode: bool, traded: Iterable[str]) -> Override | None:
        """Pending approvals as they were stored, and, with `mode`, the approval mode: the safer of the configured
        and the stored one (manual over auto). Returns the disagreement, if any, to announce. One in a symbol not
        `traded` (no longer in engine.symbols) is rejected by the engine: no candle of it comes, so nothing could
        size its entry again when approved, or fill it."""
        traded = set(traded)
        override = None
        if mode:
            stored = await self.store.get_kv("approval_mode")
            self.saved = stored if stored in MODES else None
            self.mode, override = approval_mode(self.mode, stored)
        now = self.clock.wall()
        for row in await self.store.approvals("pending"):
            sent = await self.store.entry_order_of(row["decision_id"])
            if sent is not None:
                # Approved, and its order journaled, just before the last run ended, before the approval was
                # marked: offered again, a second approve would send a second order for the decision.
                self.pending[row["approval_id"]] = row
                self._deadline[row["approval_id"]] = self.clock.monotonic()
                await self._end(row, "approved", "restart", f"its order {sent} was sent before the last stop",
                                client_order_id=sent)
                continue
            self.pending[row["approval_id"]] = row
            left = min(max(row["expires_ts"] - now, 0.0), self.ttl_s)
            self._deadline[row["approval_id"]] = self.clock.monotonic() + left
            if row["symbol"] not in traded:
                reason = f"its symbol {row['symbol']} is no longer traded (engine.symbols): it cannot be approved"
                log.warning("pending approval rejected at the start", approval_id=row["approval_id"],
                            symbol=row["symbol"], reason=reason)
                await self._end(row, "rejected", "engine", reason)
        return override

    def _left(self, approval_id: str) -> float:
        """Seconds until the approval expires (0 or less: it has)."""
        return self._deadline[approval_id] - self.clock.monotonic()

    def waiting_for(self, symbol: str) -> bool:
        return any(a["symbol"] == symbol for a in self.pending.values())

    async def propose(self, d: Decision, intent: OrderIntent, record: Callable[[], object] = lambda: None) -> None:
        """`record()` publishes the decision's record: committed with the approval row and its `pending` event, so a
        kill never leaves an approval of a decision that is recorded nowhere."""
        now = self.clock.wall()
        aid = self.new_id("a")
        expires = now + self.ttl_s
        gates = [g.as_dict() for g in d.gates]
        row: dict[str, Any] = {
            "approval_id": aid, "decision_id": d.decision_id, "symbol": d.symbol, "side": intent.side.value,
            "quantity": intent.quantity, "price": d.price, "created_ts": now, "expires_ts": expires,
            "status": "pending", "by": None, "ended_ts": None, "intent": intent.as_dict(), "gates": gates}
        d.approval_id = aid
        d.outcome = "pending_approval"

        def publish() -> None:
            record()
            self.bus.publish(ApprovalEvent(approval_id=aid, decision_id=d.decision_id, outcome="pending",
                                           by="engine", symbol=d.symbol, side=intent.side.value,
                                           quantity=intent.quantity, price=d.price, expires_at=expires, gates=gates))

        await self.store.save_approval(row, publish=publish)
        self.pending[aid] = row
        self._deadline[aid] = self.clock.monotonic() + self.ttl_s

    async def _end(self, row: dict[str, Any], outcome: str, by: str, reason: str = "",
                   client_order_id: str | None = None, approved: tuple[float, float] | None = None) -> None:
        """The approval's one end. `approved`: (quantity, price) of what was approved, which its event says (the
        quantity sized again at the price it was checked at); any other end says what was proposed."""
        aid = row["approval_id"]
        if self.pending.get(aid) is not row:
            raise ControlError(f"approval {aid} ended {row['status']} (by {row['by']}) already: not {outcome}")
        # Out of `pending` before anything is awaited: from here no other end can take it.
        self.pending.pop(aid)
        self._deadline.pop(aid, None)
        row.update(status=outcome, by=by, ended_ts=self.clock.wall(), client_order_id=client_order_id)
        quantity, price = approved if approved is not None else (row["quantity"], row["price"])
        await self.store.save_approval(row, publish=lambda: self.bus.publish(ApprovalEvent(
            approval_id=aid, decision_id=row["decision_id"], outcome=outcome, by=by, symbol=row["symbol"],
            side=row["side"], quantity=quantity, price=price, expires_at=row["expires_ts"], reason=reason,
            gates=row["gates"], client_order_id=client_order_id)))

    async def _approves_done(self, approval_ids: list[str]) -> None:
        """Wait for the approves under way of these approvals to end (each ends its approval itself)."""
        for aid in approval_ids:
            done = self._approving.get(aid)
            if done is not None:
                await done.wait()

    async def expire(self) -> None:
        """End every approval whose time to live has run out, but one being approved: its approve checked the
        time to live before its order, and ends it itself."""
        for row in list(self.pending.values()):
            aid = row["approval_id"]
            if self.pending.get(aid) is row and aid not in self._approving and self._left(aid) <= 0:
                # Its own time to live (offered before a restart with another, it keeps its own, or a shorter one).
                ttl = min(row["expires_ts"] - row["created_ts"], self.ttl_s)
                await self._end(row, "expired", "ttl", f"not approved within {ttl:g}s")

    async def _row(self, approval_id: str) -> dict[str, Any]:
        row = self.pending.get(approval_id)
        if row is None:
            # An answer to an alert that came late (the housekeeping expired it) or second: told how it ended.
            ended = await self.store.approval_end(approval_id)
            if ended is None:
                raise ControlError(f"no pending approval {approval_id}")
            status, by, ts = ended
            how = "expired" if status == "expired" else f"was {status}"
            at = f" at {fmt.iso(ts)}" if ts is not None else ""
            raise ControlError(f"no pending approval {approval_id}: it {how} (by {by}){at}")
        return row

    async def approve(self, approval_id: str, by: str) -> dict[str, Any]:
        row = await self._row(approval_id)
        if approval_id in self._approving:
            raise ControlError(f"approval {approval_id} is being approved already")
        done = self._approving[approval_id] = asyncio.Event()
        try:
            return await self._approve(row, approval_id, by)
        finally:
            del self._approving[approval_id]
            done.set()

    async def _held_since(self, row: dict[str, Any], approval_id: str, by: str, symbol: str) -> dict[str, Any] | None:
        """An entry is proposed with nothing held: one made since (the operator's, or recovered from the exchange
        after a restore: this decision's own, made after the backup) is not added to. The refusal, or None."""
        if self.portfolio.holding(symbol) is None and not self.orders.pending_entry(symbol):
            return None
        reason = f"IN_POSITION: {symbol} is held (an entry was made since this was proposed)"
        await self._end(row, "rejected", f"re-check ({by})", reason)
        return {"approval_id": approval_id, "accepted": False, "reason": reason, "client_order_id": None, "gates": []}

    async def _approve(self, row: dict[str, Any], approval_id: str, by: str) -> dict[str, Any]:
        if self._left(approval_id) <= 0:
            await self._end(row, "expired", "ttl", "expired before approval")
            raise ControlError(f"approval {approval_id} expired")
        proposed = OrderIntent.from_dict(row["intent"])
        held = await self._held_since(row, approval_id, by, proposed.symbol)
        if held is not None:
            return held
        # The price the market is at now: the last bar's close can be a bar's length old.
        price = await self.price_now(proposed.symbol)
        # The read can take a while (an exchange's Retry-After): the approval may have ended or expired meanwhile,
        # or an entry been made in its symbol.
        if self.pending.get(approval_id) is not row:
            raise ControlError(f"approval {approval_id} ended while the exchange's price was read ({row.get('status')}"
                               "): nothing approved")
        if self._left(approval_id) <= 0:
            await self._end(row, "expired", "ttl", "expired while the exchange's price was read")
            raise ControlError(f"approval {approval_id} expired")
        held = await self._held_since(row, approval_id, by, proposed.symbol)
        if held is not None:
            return held
        reason = moved_past(proposed, price) if price else "NO_PRICE: no current price"
        if reason or not price:
            reason += f" (proposed at {fmt.price(row['price'])})"
            await self._end(row, "rejected", f"re-check ({by})", reason)
            return {"approval_id": approval_id, "accepted": False, "reason": reason, "client_order_id": None,
                    "gates": []}
        intent = self.resized(proposed, price, by=by)
        if intent.quantity <= 0:
            reason = f"NOT_SIZED: could not be sized at {fmt.price(price)} (proposed at {fmt.price(row['price'])})"
            await self._end(row, "rejected", f"re-check ({by})", reason)
            return {"approval_id": approval_id, "accepted": False, "reason": reason, "client_order_id": None,
                    "gates": []}
        def with_its_journal(order: Order, gates: list[GateResult]) -> None:
            # The re-check is an evaluation of its own: recorded under the decision, after the decision's gates, and
            # committed with the order's journal entry (a kill right after it leaves no order without them).
            self.store.add_gates(gates, decision_id=row["decision_id"], client_order_id=order.client_order_id,
                                 ts=self.clock.wall())

        # The gates again, on the new size, against the state at this moment.
        sub = await self.orders.submit(intent, on_journal=with_its_journal)
        if sub.order is None and sub.held_until is not None:
            # The exchange asked for no orders for a while (Retry-After): nothing was sent, and the trade is no
            # less what it was; it waits, as it does when the price cannot be read.
            raise ControlError(f"{sub.reason}: nothing approved; the trade stays pending: approve it again once the "
                               "wait is over (before it expires)")
        cid = sub.order.client_order_id if sub.order else None
        if sub.order is None:  # refused before any order was journaled
            self.store.add_gates(sub.gates, decision_id=row["decision_id"], client_order_id=None, ts=self.clock.wall())
        if sub.order is not None:
            # The re-check passed and the order is journaled: the approval is done, and names its order. What became
            # of that order (the exchange refused it, say) is the order's own end; the reason repeats it here.
            said = "" if sub.accepted else f"its order {cid} was refused: {sub.reason}"
            await self._end(row, "approved", by, said, client_order_id=cid, approved=(sub.order.quantity, price))
        else:
            await self._end(row, "rejected", f"re-check ({by})", sub.reason)
        in_doubt = sub.order is not None and sub.order.status is OrderStatus.IN_DOUBT
        # Ended in its own answer without buying all it was for (expired: a time in force, self-trade prevention).
        ended = ended_unsold(sub.order) if sub.accepted else None
        return {"approval_id": approval_id, "accepted": sub.accepted, "reason": sub.reason, "in_doubt": in_doubt,
                "ended": ended, "client_order_id": cid, "gates": [g.as_dict() for g in sub.gates],
                "quantity": intent.quantity, "price": price, "stop_loss": intent.stop_loss, "take_profit": intent.take_profit}

    def resized(self, proposed: OrderIntent, price: float, by: str) -> OrderIntent:
        """The proposed entry sized again at `price`: the quantity the engine would give it now (within the
        POSITION_SIZE cap at this price, so the re-check measures what was sized), and its stops from this price;
        `by` who approved it, the order's asker."""
        qty, sizing = self.size(proposed.symbol, price)
        return OrderIntent(symbol=proposed.symbol, side=proposed.side, quantity=qty, reason=proposed.reason,
                           decision_id=proposed.decision_id, confidence=proposed.confidence, ref_price=price,
                           stop_loss=sizing.get("stop_loss"), take_profit=sizing.get("take_profit"), by=by)

    async def reject_all(self, by: str, reason: str) -> list[str]:
        """End every pending approval (a halt): none may be approved after the engine is re-armed. An approve under
        way is waited for first: it ends its approval itself (approved once its order is journaled, the halt
        cancelling that order; rejected by its re-check when the halt came before its gates)."""
        ended: list[str] = []
        while self.pending:
            await self._approves_done(list(self._approving))
            for aid, row in list(self.pending.items()):
                if self.pending.get(aid) is row and aid not in self._approving:  # (one may begin meanwhile)
                    ended.append(aid)
                    await self._end(row, "rejected", by, reason)
        return ended

    async def reject(self, approval_id: str, by: str) -> dict[str, Any]:
        row = await self._row(approval_id)
        await self._approves_done([approval_id])  # its approve under way decides; then there is nothing to reject
        if self.pending.get(approval_id) is not row:
            raise ControlError(f"approval {approval_id} ended {row['status']} (by {row['by']}) meanwhile: "
                               "not rejected")
        await self._end(row, "rejected", by)
        return {"approval_id": approval_id, "outcome": "rejected"}

    async def set_mode(self, mode: str, by: str) -> str:
        if mode not in MODES:
            raise ControlError(f"approval mode must be auto or manual, not {mode!r}")
        if mode == self.mode and mode == (self.saved or self.mode):
            return mode  # nothing changes: nothing to record, as a second pause records nothing
        # Recorded too when the mode in effect is already `mode` by the configuration alone but the stored one says
        # otherwise: a start whose configuration changes back would take the stored one.
        self.mode = self.saved = mode

        def publish() -> None:
            state = self.trading.state.value
            self.bus.publish(EngineStateChanged(state=state, previous=state, reason=f"approval mode {mode}", by=by))

        await self.store.put_kv("approval_mode", mode, self.clock.wall(), publish=publish)
        return mode

    def summary(self) -> list[dict[str, Any]]:
        """The pending approvals as the console shows them. `approving`: its approve is under way (the order made of
        it on the wire): no longer waiting, and it cannot expire (its time to live was checked before the order)."""
        out = []
        for a in self.pending.values():
            last = self.portfolio.last_price.get(a["symbol"])
            move = 100.0 * (last / a["price"] - 1.0) if last and a["price"] else None
            out.append({"approval_id": a["approval_id"], "symbol": a["symbol"], "side": a["side"],
                        "quantity": a["quantity"], "price": a["price"], "last": last,
                        "move_pct": None if move is None else round(move, 4),
                        "expires_in": max(0.0, self._left(a["approval_id"])), "decision_id": a["decision_id"],
                        "approving": a["approval_id"] in self._approving})
        return out
