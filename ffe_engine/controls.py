"""The operator's controls run one at a time (resume, approve, cancel, settle, accept, close, flatten, the kill
switch's cancels), and the one under way is known by name: a kill switch or a flatten pressed meanwhile does not wait
for it (it may wait on the exchange for as long as its timeout), and says what its rest waits for. A pause waits for
none: it is counted, and a resume asked before it that gets its turn after it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from .execution import CancelReport
from .model import Order, OrderStatus


class Controls:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._queued = 0  # controls waiting for their turn
        self.under_way = ""  # the control that has its turn, as said to the operator ("the approve of a1b2")
        self.pauses = 0  # the operator's pauses so far: a resume asked before the last one does not undo it

    def paused(self) -> None:
        self.pauses += 1

    def busy(self) -> bool:
        """Whether a control has its turn or waits for one: another asking now would wait."""
        return self._lock.locked() or self._queued > 0

    async def idle(self) -> None:
        """Once no control has its turn or waits for one (an orderly stop carries out the controls under way)."""
        while self.busy():
            async with self._lock:
                pass

    @contextlib.asynccontextmanager
    async def turn(self, what: str) -> AsyncIterator[None]:
        """Run `what` once no other control is under way."""
        release = await self.take(what)
        try:
            yield
        finally:
            release()

    async def take(self, what: str) -> Callable[[], None]:
        """The turn for `what`, once no other control is under way; returns what gives it back. Taken at once, with
        no wait, when none is (busy() False): a kill switch run as a task of its own takes it before any control
        asked in the same moment, and its task gives it back."""
        self._queued += 1
        try:
            await self._lock.acquire()
        finally:
            self._queued -= 1
        self.under_way = what

        def release() -> None:
            self.under_way = ""
            self._lock.release()

        return release


@dataclass
class Press:
    """What a kill switch or flatten did when pressed while another control (`under`; "" for none) was under way, or
    an order was on the wire: HALTED stored, and the cancels it sent then (`report`, None when it sent none: the
    engine was HALTED already, or another kill switch pressed in the same moment sent them), those of orders on the
    wire still waiting for their answer."""

    under: str
    at: float  # the engine clock's monotonic time of the press
    open_then: list[Order] = field(default_factory=list)
    report: CancelReport | None = None
    on_wire: dict[str, asyncio.Task[tuple[bool, str]]] = field(default_factory=dict)
    sent: asyncio.Event = field(default_factory=asyncio.Event)  # set once the press is done: its rest goes on
    failed: bool = False  # its HALTED could not be stored: a flatten's rest does nothing

    def answer(self, rest: str) -> CancelReport:
        """What is done now and what is still under way: `rest`, what waits for the control under way (or, with
        none, for the orders on the wire), and the cancel of each order whose create_order the exchange has not
        answered yet."""
        done = self.report or CancelReport()
        out = CancelReport(cancelled=list(done.cancelled), failed=list(done.failed),  # its time: the event's
                           filled=[o.client_order_id for o in self.open_then if o.status is OrderStatus.FILLED])
        waits = (f"{self.under} is under way: {rest} once it has ended" if self.under
                 else f"{rest} once the exchange has answered the orders on the wire")
        out.under_way = [{"detail": waits}]
        for cid, task in self.on_wire.items():
            if task.done() and not task.cancelled() and task.exception() is None and task.result()[0]:
                out.cancelled.append(cid)
            else:
                out.under_way.append({"client_order_id": cid, "detail": "its order is on the wire: cancelled once "
                                                                        "the exchange has answered it"})
        return out


def answered_early(open_then: list[Order], on_wire: list[str], rest: str) -> CancelReport:
    """What a kill switch or flatten pressed with nothing else under way has done when its answer is due before the
    exchange has answered all it sent (its cancels, a flatten's closing orders): HALTED is stored, the orders whose
    cancel has ended them (or that filled first), and what is still under way: `rest`, each cancel not answered yet,
    and each order on the wire (a flatten's closing order)."""
    out = CancelReport(cancelled=[o.client_order_id for o in open_then if o.status is OrderStatus.CANCELED],
                       filled=[o.client_order_id for o in open_then if o.status is OrderStatus.FILLED])
    out.under_way = [{"detail": f"{rest} once the exchange has answered"}]
    out.under_way += [{"client_order_id": o.client_order_id, "detail": "its cancel is sent: the exchange has not "
                       "answered it yet"} for o in open_then if not o.status.final]
    known = {o.client_order_id for o in open_then}
    out.under_way += [{"client_order_id": cid, "detail": "its order is on the wire: the exchange has not answered it "
                       "yet"} for cid in on_wire if cid not in known]
    return out
