"""The pause an open circuit breaker makes, kept in step with the breaker: the one place it changes.

- Each opening pauses a RUNNING engine once (by `breaker`): entries would be refused anyway, and the operator
  decides when to go on.
- A resume while the breaker is still open goes on through that opening: it is not paused again for it. A resume is
  not refused then: while the engine is PAUSED nothing may call the exchange (no entry, maybe no order to look up),
  so nothing would probe the breaker and close it. The entries wait at the BREAKER_OPEN gate; the first call after
  the recovery timeout is the probe, and a probe that fails is a new opening, which pauses the engine again.
- While the pause is the breaker's own (made by it, not since taken over by an operator, a risk limit or
  reconciliation), its reason says what the breaker is now: once it has closed, that it has and that a resume is
  what is left (the engine stays PAUSED); should it open again meanwhile, that it is open. When reconciliation holds
  the engine by then, the pause becomes reconciliation's, with its reason. `ffe ctl status`, the console's status
  bar and the next start's STARTED alert show that reason; left saying the breaker is open once it is not, it
  would tell the operator of a hold that is none. A new run starts its breaker closed, so a breaker's pause found
  at start says so from the start.
"""

from __future__ import annotations

from typing import Any

from .breaker import CLOSED, CircuitBreaker
from .model import EngineState
from .reconcile import hold_reason
from .trading_state import TradingState

BY = "breaker"


def open_reason(breaker: CircuitBreaker) -> str:
    return f"breaker open on {breaker.venue}: {breaker.last_error}"


def closed_reason(venue: str) -> str:
    return f"breaker closed again on {venue}; resume when ready"


class BreakerPause:
    def __init__(self, breaker: CircuitBreaker, trading: TradingState) -> None:
        self.breaker = breaker
        self.trading = trading
        # The last opening the engine was paused for, or resumed through: it pauses the engine no more.
        self.seen = 0

    def resumed(self) -> None:
        """The operator resumed (or re-armed) the engine: an opening under way now does not pause it again."""
        self.seen = self.breaker.openings

    async def keep_in_step(self, reconcile_blocked: list[dict[str, Any]]) -> None:
        b, trading = self.breaker, self.trading
        if b.state != CLOSED:
            if trading.state is EngineState.RUNNING and b.openings != self.seen:
                self.seen = b.openings
                await trading.set(EngineState.PAUSED, open_reason(b), BY)
            elif self._own() and trading.reason == closed_reason(b.venue):
                self.seen = b.openings
                await trading.set(EngineState.PAUSED, open_reason(b), BY, force=True)
        elif self._own() and trading.reason != closed_reason(b.venue):
            if reconcile_blocked:  # what holds the engine now is reconciliation's, which a resume cannot lift
                await trading.set(EngineState.PAUSED, hold_reason(reconcile_blocked), "reconcile", force=True)
            else:
                await trading.set(EngineState.PAUSED, closed_reason(b.venue), BY, force=True)

    def _own(self) -> bool:
        return self.trading.state is EngineState.PAUSED and self.trading.by == BY
