"""Reconciliation: the journal against the venue, at start (before any new order) and every N seconds.

1. Orders: every order the journal has in flight is looked up by client order id (in-doubt orders resolved,
   fills that happened while the engine was down recorded) by the order path's poll.
2. Open orders at the venue that the journal does not know are differences, unless the operator accepted them.
3. Positions: for each traded symbol, the venue's base-asset balance less the baseline it had when ffe first
   started on this account must equal the position ffe holds.

An unexplained difference pauses the engine with a `reconcile` event saying what differs; it stays PAUSED until
the operator accepts the differences (which also takes the venue's balances as the new baseline).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .events import ReconcileEvent
from .model import EngineState, OrderStatus
from .venues.base import VenueError, VenueUnavailable

if TYPE_CHECKING:
    from .engine import Engine

BASELINE_KEY = "reconcile_baseline"
ACCEPTED_KEY = "reconcile_accepted_orders"  # open orders at the venue that the operator accepted as not ffe's


def _tolerance(engine: "Engine", symbol: str) -> float:
    step = engine.venue.market(symbol).amount_step
    return max(step, 1e-9)


async def baseline(engine: "Engine", balances: dict[str, float]) -> dict[str, float]:
    """The venue's balances that ffe did not put there: taken once, when ffe first meets the account."""
    saved = await engine.store.get_kv(BASELINE_KEY)
    if saved is None:
        held: dict[str, float] = {}
        for p in engine.portfolio.positions.values():
            base = p.symbol.partition("/")[0]
            held[base] = held.get(base, 0.0) + p.quantity
        saved = {a: balances.get(a, 0.0) - held.get(a, 0.0) for a in _bases(engine)}
        await engine.store.put_kv(BASELINE_KEY, saved, time.time())
    return saved


def _bases(engine: "Engine") -> list[str]:
    return sorted({s.partition("/")[0] for s in engine.symbols})


async def reconcile(engine: "Engine") -> list[dict[str, Any]]:
    """Compare and record; returns the unexplained differences (empty when everything agrees)."""
    venue = engine.venue
    in_doubt = [cid for cid, o in engine.orders.live.items() if o.status is OrderStatus.IN_DOUBT]
    await engine.orders.poll()
    differences: list[dict[str, Any]] = []
    live = engine.orders.live
    resolved = [cid for cid in in_doubt if cid not in live or live[cid].status is not OrderStatus.IN_DOUBT]
    try:
        open_at_venue = await venue.fetch_open_orders()
        balances = await venue.fetch_balance()
    except (VenueError, VenueUnavailable) as exc:
        engine.bus.publish(ReconcileEvent(status="failed", differences=[{"error": str(exc)[:200]}]))
        return [{"kind": "venue_unreachable", "error": str(exc)[:200]}]
    known = set(engine.orders.live)
    journal = {o.client_order_id for o in await engine.store.orders("WHERE venue = ?", (venue.name,))}
    accepted = set(await engine.store.get_kv(ACCEPTED_KEY, []) or [])
    for vo in open_at_venue:
        if vo.client_order_id in known or _order_key(vo) in accepted:
            continue
        differences.append({"kind": "unknown_open_order", "client_order_id": vo.client_order_id,
                            "symbol": vo.symbol, "side": vo.side.value, "quantity": vo.quantity,
                            "in_journal": vo.client_order_id in journal, "exchange_id": vo.exchange_id})
    still_open = accepted & {_order_key(vo) for vo in open_at_venue}
    if still_open != accepted:  # accepted orders that are gone: forget them
        await engine.store.put_kv(ACCEPTED_KEY, sorted(still_open), time.time())
    base_line = await baseline(engine, balances)
    for sym in engine.symbols:
        base = sym.partition("/")[0]
        pos = engine.portfolio.positions.get(sym)
        ours = pos.quantity if pos is not None else 0.0
        theirs = balances.get(base, 0.0) - base_line.get(base, 0.0)
        if abs(theirs - ours) > _tolerance(engine, sym):
            differences.append({"kind": "position", "symbol": sym, "journal": ours, "venue": round(theirs, 12)})
    status = "differences" if differences else ("resolved" if resolved else "ok")
    engine.bus.publish(ReconcileEvent(status=status, differences=differences))
    return differences


def _order_key(vo: Any) -> str:
    return vo.client_order_id or f"#{vo.exchange_id}"


async def accept(engine: "Engine") -> None:
    """The operator accepts the venue as it is: its balances become the new baseline, and the open orders found
    that are not ffe's are left out of later reconciliations (while they stay open)."""
    foreign = {d["client_order_id"] or f"#{d.get('exchange_id')}" for d in engine.reconcile_blocked
               if d.get("kind") == "unknown_open_order"}
    if foreign:
        accepted = set(await engine.store.get_kv(ACCEPTED_KEY, []) or [])
        await engine.store.put_kv(ACCEPTED_KEY, sorted(accepted | foreign), time.time())
    try:
        balances = await engine.venue.fetch_balance()
    except (VenueError, VenueUnavailable):
        balances = None
    if balances is not None:
        await engine.store.delete_kv(BASELINE_KEY)
        await baseline(engine, balances)


async def reconcile_and_hold(engine: "Engine") -> list[dict[str, Any]]:
    """Reconcile; on an unexplained difference keep the engine PAUSED until the operator accepts."""
    differences = await reconcile(engine)
    if differences:
        engine.reconcile_blocked = differences
        if engine.state is EngineState.RUNNING:
            await engine._set_state(EngineState.PAUSED, f"reconcile: {len(differences)} difference(s)", "reconcile")
    elif all(d.get("kind") == "venue_unreachable" for d in engine.reconcile_blocked):
        # The venue answers again and agrees with the journal: an outage is nothing for the operator to accept
        # (the engine stays PAUSED until resumed).
        engine.reconcile_blocked = []
    return differences
