"""What a flatten's follow-up says of an entry that was on the wire (or in doubt) when the flatten began.

The flatten waits for such an entry: it may have bought something (then its closing orders sell it) or nothing
(cancelled, found absent at the venue, refused). The follow-up says which, so that a symbol is never said closed by
closing orders that were never sent."""

from __future__ import annotations

from typing import Any

from .model import Order, OrderStatus, Side


def entry_end(o: Order, sold: bool) -> dict[str, Any]:
    """The entry `o`, ended, as the follow-up's `entries` name it; `sold`: a closing order of the flatten sold what
    its symbol held since."""
    if o.filled > 0:
        done = f"filled {o.filled:g}" if o.status is OrderStatus.FILLED else \
            f"filled {o.filled:g} of {o.quantity:g}, the rest {_ended(o)}"
        detail = done + ("; sold by the closing orders" if sold else "")
    else:
        nothing = "nothing bought" if o.side is Side.BUY else "nothing sold"
        detail = f"{_ended(o)}{f' ({o.error})' if o.error else ''}, {nothing}"
    return {"client_order_id": o.client_order_id, "symbol": o.symbol, "detail": detail}


def _ended(o: Order) -> str:
    return {OrderStatus.CANCELED: "cancelled", OrderStatus.REJECTED: "refused"}.get(o.status, o.status.value)
