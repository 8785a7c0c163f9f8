"""After a restore: what the account did at the venue after the backup was taken, brought into the journal.

`ffe restore` leaves a marker in the restored database (store.RESTORED_KEY: which backup, when it was taken). The
next start, before its reconciliation and before any order, asks the venue for every order on the engine's symbols
created since the backup (less a margin for clock skew, but not from before the account's records began:
another data directory on the same exchange account may have traded just before). An order that carries ffe's
client order id prefix and is not in the journal was placed by this account's engine after the backup: it is
journaled as the venue shows it, marked as recovered (its intent says `recovered`), and its fills are recorded
from the venue's word through the order path, so positions and trades follow. Nothing is sent.

Orders in the journal that were in flight at the backup are resolved by the start's usual recovery (by client
order id). Anything still unexplained (an order placed by hand, a transfer) is a difference for the reconciliation
that follows, which keeps the engine PAUSED until the operator accepts it. The marker is cleared once the venue
has answered; while it cannot be read, the marker stays and the start's reconciliation fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


from . import logs
from .clock import Clock
from .events import EventBus, RecoveredEvent
from .execution import OrderPath
from .ids import CLIENT_ID_PREFIX
from .model import VenueOrder
from .store import RESTORED_KEY, Store
from .venues.base import OrderHistoryVenue, SimulatedVenue, Venue, VenueError, VenueUnavailable

log = logs.get_logger("ffe.recovery")

SKEW_MS = 10 * 60_000  # orders up to this long before the backup's time are asked for too (clock skew)
# No order of this account reached the venue before its records began (its first start) less this: an exchange
# refuses a request whose time is further off its own than its receive window (at most a minute on Binance).
BEGAN_MARGIN_MS = 60_000


@dataclass(slots=True)
class Recovery:
    status: str  # none (no restore pending), recovered, failed
    orders: list[str] = field(default_factory=list)  # client order ids journaled from the venue
    fills: int = 0
    error: str = ""


async def recover_after_restore(*, store: Store, venue: Venue, orders: OrderPath, bus: EventBus, clock: Clock,
                                symbols: list[str]) -> Recovery:
    """Journal the orders the venue made for this account after the restored backup; see the module docstring."""
    marker: dict[str, Any] | None = await store.get_kv(RESTORED_KEY)
    if marker is None:
        return Recovery("none")
    backup = str(marker.get("backup", ""))
    if isinstance(venue, SimulatedVenue):
        # The paper venue's book is in the database: nothing happened anywhere after the backup.
        await store.delete_kv(RESTORED_KEY)
        bus.publish(RecoveredEvent(backup=backup, status="recovered", orders=[], fills=0,
                                   detail="paper venue: its book is the backup's"))
        return Recovery("recovered")
    if not isinstance(venue, OrderHistoryVenue):
        return _failed(bus, backup, f"{venue.name} cannot list past orders: check its account by hand, then "
                                    "accept the reconciliation's differences")
    since = int(marker.get("taken_ms", 0)) - SKEW_MS
    began = await store.first_event_ts()
    if began is not None:  # another account's orders on the same exchange account, made before this one began
        since = max(since, int(began * 1000) - BEGAN_MARGIN_MS)
    journal = await store.order_ids_on(venue.name)
    found = []
    try:
        for symbol in symbols:
            found += await venue.fetch_orders_since(symbol, since)
    except (VenueError, VenueUnavailable) as exc:
        return _failed(bus, backup, f"the venue's orders could not be read: {str(exc)[:200]}")
    recovered = Recovery("recovered")
    before = orders.fills_recorded
    note = {"recovered": {"backup": backup, "from": venue.name}}
    adopt: dict[str, VenueOrder] = {}
    for vo in sorted(found, key=lambda o: (o.ts or 0, o.exchange_id or "")):
        cid = vo.client_order_id
        if not cid.startswith(CLIENT_ID_PREFIX) or cid in journal or cid in adopt:
            continue  # not ffe's (a difference for the reconciliation), or known already
        # The venue's word is all there is on these orders: an answer that leaves out which way one went, what or
        # how much cannot be journaled (a sell read as a buy would add to the position), so none is.
        missing = [what for what, ok in (("side", vo.side_known), ("symbol", vo.symbol in symbols),
                                         ("amount", vo.quantity > 0)) if not ok]
        if missing:
            return _failed(bus, backup, f"order {cid} in {venue.name}'s order history shows no "
                                        f"{' or '.join(missing)}: check it by hand")
        adopt[cid] = vo
    for cid, vo in adopt.items():
        await orders.adopt(vo, note)
        recovered.orders.append(cid)
    recovered.fills = orders.fills_recorded - before
    await store.delete_kv(RESTORED_KEY)
    bus.publish(RecoveredEvent(backup=backup, status="recovered", orders=recovered.orders, fills=recovered.fills,
                               detail=f"orders since {since} on {', '.join(symbols)}"))
    log.warning("restored from a backup: orders made after it recovered from the venue", backup=backup,
                orders=len(recovered.orders), fills=recovered.fills)
    return recovered


def _failed(bus: EventBus, backup: str, error: str) -> Recovery:
    bus.publish(RecoveredEvent(backup=backup, status="failed", orders=[], fills=0, detail=error))
    log.error("restored from a backup: recovery from the venue failed", backup=backup, error=error)
    return Recovery("failed", error=error)
