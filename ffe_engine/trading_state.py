"""The trading state (RUNNING, PAUSED, HALTED) and what each state allows: one owner, one rule.

- RUNNING: every order may be sent (the other gates still apply).
- PAUSED: no new entry; exits (reduce-only) still go out, so a position can always be closed.
- HALTED: nothing is sent except the closing orders of a flatten.

`set` changes the state in memory first (from then on no new order passes), then stores it durably with what must
change with it and the `engine_state` event that says it, in one transaction, before it returns: the kill switch
relies on HALTED being recorded when halt returns, and a kill leaves the state and its event both or neither. A
looser state (a resume, a re-arm) whose write fails goes back to the state before, as the operator is told.
The gatekeeper's ENGINE_STATE gate and the order path's re-check just before a send both ask `allows`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol


from . import logs
from .clock import Clock
from .events import EngineStateChanged, EventBus
from .model import EngineState, GateResult, OrderReason
from .overrides import strictness

from .store import state_unsaid

if TYPE_CHECKING:
    from .store import Store

log = logs.get_logger("ffe.engine")

_EXITS_LIMIT = "not HALTED (flatten excepted)"
_ENTRIES_LIMIT = "RUNNING"


class Sendable(Protocol):
    """What the rule needs of an order or an intent: whether it only reduces a position, and who asked."""

    reduce_only: bool
    reason: OrderReason


class TradingState:
    def __init__(self, store: "Store", bus: EventBus, clock: Clock,
                 state: EngineState = EngineState.RUNNING, reason: str = "start") -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.state = state
        self.reason = reason
        self.by = "engine"  # who set the state: a pause is kept in step only by the one that made it
        # Every change of state in this run, and every halt of the HALTED engine, counted (a press once, not its rest
        # again): a confirmation asked about one state (the re-arm of a halt) names it, and is refused once the state
        # has changed since, even back to the same state, or the engine has been halted again.
        self.changes = 0
        # The state the records hold, or will once its write ends: the one in memory but after a write of a stricter
        # state that failed (a full disk), which the next `set` of that state stores (a kill switch pressed again
        # must not answer HALTED unstored).
        self.said = state

    def restore(self, state: EngineState, reason: str, by: str) -> None:
        """The state the engine was left in, read back at start (already stored: nothing to record)."""
        self.state = state
        self.reason = reason
        self.by = by
        self.said = state

    async def set(self, new: EngineState, reason: str, by: str, force: bool = False,
                  kv: dict[str, Any] | None = None, follow_up: bool = False) -> None:
        """`kv`: what is stored in the same transaction as the state (a flatten's positions to close), or on its
        own when the state does not change. `follow_up`: HALTED set again by the rest of a kill switch (or flatten)
        that was counted when it was pressed: no halt of its own."""
        prev = self.state
        if prev is new and not force and self.said is new:
            if new is EngineState.HALTED and not follow_up:
                # A halt of the HALTED engine (`ffe ctl halt`, SIGUSR1, a flatten) is a halt of its own: a re-arm
                # asked about the earlier one must not undo it. The rest of a press is that press, not another:
                # a re-arm asked between the two is no older than it.
                self.changes += 1
            if kv:
                await self.store.put_kvs(kv, self.clock.wall())
            return
        was = (prev, self.reason, self.by)
        self.state, self.reason, self.by = new, reason, by  # in memory first: from here on no new order passes
        self.changes += 1
        try:
            await self._write(new, reason, by, kv)
        except BaseException as exc:
            if strictness(new) < strictness(prev) and strictness(prev) > strictness(self.state):
                # A looser state (a resume, a re-arm) whose record failed: the engine goes back to the state it
                # was in, as the operator is told, unless one as strict was set meanwhile (a kill switch); a
                # stricter one holds in memory, stored or not. A pause set meanwhile (the breaker's) is not the
                # HALTED a failed re-arm leaves, and where it was stored, HALTED is stored again over it (best
                # effort: a store that fails again leaves it to the next `set`, as any state not stored).
                self.state, self.reason, self.by = was
                if isinstance(exc, Exception) and strictness(self.said) < strictness(prev):
                    with contextlib.suppress(Exception):
                        await self._write(*was)
            raise

    async def _write(self, new: EngineState, reason: str, by: str, kv: dict[str, Any] | None = None) -> None:
        """`new` stored, with `kv` and the `engine_state` event that says it, in one transaction. The event says it
        changed from the state the records hold: the last one set, stored or on its way to the disk (a kill switch
        while a re-arm is being stored changes from RUNNING). Not stored: `said` goes back, and the next `set` of
        it stores it."""
        before, self.said = self.said, new

        def publish() -> None:
            self.bus.publish(EngineStateChanged(state=new.value, previous=before.value, reason=reason, by=by))

        try:
            await self.store.set_engine_state(new.value, reason, by, self.clock.wall(), kv=kv, publish=publish)
        except BaseException:
            if self.said is new:
                self.said = before
            raise
        log.info("engine state", state=new.value, previous=before.value, reason=reason, by=by)

    async def say_stored(self, by: str) -> None:
        """At start, the state restored: when the records' last `engine_state` event does not say it (stored on its
        own: HALTED on a full disk, kept across a restore), the event that says it, from the state it says. Any other
        difference never gets here: the start's record checks refuse it (store.state_unsaid_why)."""
        last = await self.store.last_state_event()
        if state_unsaid((self.state.value, self.reason), last) is None:
            return
        prev = str(last["state"]) if last is not None else self.state.value
        await self.store.commit_events(lambda: self.bus.publish(EngineStateChanged(
            state=self.state.value, previous=prev, reason=self.reason, by=by, restated=True)))
        log.info("engine state", state=self.state.value, previous=prev, reason=self.reason, by=by,
                 said="stored without its event")

    async def halt_unrecordable(self, reason: str, by: str) -> bool:
        """A record could not be written (full disk, read-only directory): HALTED in memory at once, then stored
        on its own if the database can still take it; no event, since none could be recorded. Returns whether
        HALTED was stored."""
        self.state = EngineState.HALTED
        self.reason = reason
        self.by = by
        self.changes += 1
        stored = await self.store.record_halt(reason, by, self.clock.wall())
        if stored:
            self.said = EngineState.HALTED
        log.warning("engine state", state="HALTED", reason=reason, by=by, stored=stored)
        return stored

    def allows(self, order: Sendable) -> GateResult:
        """The ENGINE_STATE gate: may this order be sent in the current state?"""
        state = self.state
        if order.reduce_only:
            ok = state is not EngineState.HALTED or order.reason is OrderReason.FLATTEN
            return GateResult("ENGINE_STATE", state.value, _EXITS_LIMIT, ok)
        return GateResult("ENGINE_STATE", state.value, _ENTRIES_LIMIT, state is EngineState.RUNNING)
