"""The orders a kill switch reported as failed cancels, followed until each has ended.

A kill switch's report says an order whose cancel had not ended within engine.cancel_timeout_s failed: still
working at the exchange, it may fill (the CANCEL_FAILED page). The engine keeps asking its cancel, and the cancel
it sent may simply have been slow: the order ends later, cancelled (or filled, or ended by the exchange). That page
must not stay the operator's last word: once an order it named has ended, a follow-up `kill_switch` record (by
`engine`, `follow_up`) says how, and the CANCEL_ENDED alert with it. The orders followed are kept in `kv`
(`cancels_failed`), so an engine restarted before they ended says it all the same.
"""

from __future__ import annotations

from typing import Any

from .events import KillSwitchEvent
from .model import Order, OrderStatus

KEY = "cancels_failed"  # kv: the client order ids of the kill switch's failed cancels not followed up yet, or null


class FailedCancels:
    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}  # client order id -> the order, as the order path keeps it

    def load(self, stored: Any, live: dict[str, Order], journal: dict[str, Order]) -> None:
        """After a start: the ids kept, each with its order (in flight, or as the journal has it)."""
        for cid in stored if isinstance(stored, list) else ():
            o = live.get(str(cid)) or journal.get(str(cid))
            if o is not None:
                self.orders[o.client_order_id] = o

    def note(self, failed: list[dict[str, str]], open_then: list[Order]) -> dict[str, Any]:
        """The orders a kill switch's report says failed, to follow; the `kv` record to store with it."""
        by_id = {o.client_order_id: o for o in open_then}
        for f in failed:
            o = by_id.get(str(f.get("client_order_id")))
            if o is not None and not o.status.final:
                self.orders[o.client_order_id] = o
        return self.record()

    def record(self) -> dict[str, Any]:
        return {KEY: sorted(self.orders) or None}

    def ended(self) -> KillSwitchEvent | None:
        """The follow-up of the orders followed that have ended (dropped from those followed), or None when none
        has: cancelled (or ended by the exchange, its `order` record says how) or filled before its cancel."""
        done = [o for o in self.orders.values() if o.status.final]
        if not done:
            return None
        for o in done:
            del self.orders[o.client_order_id]
        return KillSwitchEvent(action="halt", by="engine", follow_up=True,
                               cancelled=[o.client_order_id for o in done if o.status is not OrderStatus.FILLED],
                               filled=[o.client_order_id for o in done if o.status is OrderStatus.FILLED])
