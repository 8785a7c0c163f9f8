"""Circuit breaker around a venue.

closed -> (failure_threshold consecutive transient failures) -> open -> (recovery_timeout_s) -> half_open: one
probe call goes through; its failure opens the breaker again for another timeout, its success closes it unless the
kind of call that opened it has not yet worked.
Only transient failures (VenueUnavailable, which includes an order in doubt) count: a venue that answers
"insufficient funds", or refuses the API key, is healthy (VenueError). A request held back by the exchange's
Retry-After (VenueUnavailable, not sent) is neither a failure nor a success: it never reached the venue, whose own
answer (the 418 or 429 that asked for the wait) counted once already. Counted, the poll's lookups refused every half
second would open the breaker (and pause the engine) over one answer.

Failures are counted three ways: every call in a row, and each kind of call (order sends, reads) in a row of its
own kind. A venue that refuses every order while it answers every lookup (a 503 on its order route alone) fails
its sends in a row while the lookups between them work: counted only as calls in a row, each lookup would clear the
count, and the breaker would never open over a venue that places nothing. So a success clears the count of every
call and of its own kind, not the other kind's, and the breaker opens when any count reaches the threshold. For
the same reason it closes only on a success that leaves no count at the threshold: after sends that kept failing, a
read that works leaves it half open, and the next call is a probe again; a send that works closes it.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, TypeVar

from . import fmt
from .events import BreakerChanged, EventBus
from .venues.base import PROBING, VenueUnavailable

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
SEND, READ = "send", "read"  # kinds of call: one that places an order, and every other


class BreakerOpen(Exception):
    def __init__(self, venue: str, retry_in: float) -> None:
        super().__init__(f"circuit breaker for {venue} is open (probe in {retry_in:.1f}s)")
        self.venue = venue
        self.retry_in = retry_in


class CircuitBreaker:
    def __init__(self, venue: str, failure_threshold: int, recovery_timeout_s: float, now: Callable[[], float],
                 bus: EventBus | None = None) -> None:
        self.venue = venue
        self.failure_threshold = failure_threshold
        self.recovery_timeout_s = recovery_timeout_s
        self._now = now
        self.bus = bus
        self.state = CLOSED
        self.in_a_row = 0  # calls of any kind that failed in a row
        self.by_kind = {SEND: 0, READ: 0}  # calls of each kind that failed since one of that kind last worked
        self.opened_at: float | None = None
        self.last_error = ""
        # How many times it has opened in this run (a probe that fails opens it again): what the engine's pause
        # tells one opening from the next by (BreakerPause).
        self.openings = 0
        self._probing = False
        # Told of every call that went out: its duration and its error (None on success), for /metrics.
        self.observe: Callable[[float, BaseException | None], None] | None = None

    @property
    def failures(self) -> int:
        """The longest count of failures in a row: what opens the breaker, and what keeps it from closing."""
        return max(self.in_a_row, *self.by_kind.values())

    @property
    def retry_at(self) -> float | None:
        return None if self.opened_at is None else self.opened_at + self.recovery_timeout_s

    def allows(self) -> bool:
        """Whether a call may go through now (what the BREAKER_OPEN gate checks)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return self._now() >= (self.retry_at or 0.0)
        return not self._probing

    def _set(self, state: str) -> None:
        previous, self.state = self.state, state
        if previous != state:
            self._publish(previous)

    def _publish(self, previous: str) -> None:
        if self.bus is not None:
            self.bus.publish(BreakerChanged(venue=self.venue, state=self.state, previous=previous,
                                            failures=self.failures, error=self.last_error, retry_at=self.retry_at))

    async def call(self, fn: Callable[[], Awaitable[T]], kind: str = READ) -> T:
        """`fn` through the breaker; `kind` SEND for a call that places an order, READ for every other."""
        if self.state == OPEN:
            remaining = (self.retry_at or 0.0) - self._now()
            if remaining > 0:
                raise BreakerOpen(self.venue, remaining)
            self._set(HALF_OPEN)
        # Half open, this call is the probe, the only one through until it ends. A call under way since before the
        # breaker opened is none: it neither ends the probe nor decides the breaker in its place.
        probe = self.state == HALF_OPEN
        if probe:
            if self._probing:
                raise BreakerOpen(self.venue, 0.0)
            self._probing = True
        observe = self.observe
        started = time.perf_counter()  # a duration measured, not a time of day
        probing = PROBING.set(probe)
        try:
            result = await fn()
        except VenueUnavailable as exc:
            if exc.sent:
                self.record_failure(str(exc), kind, probe=probe)
                if observe is not None:
                    observe(time.perf_counter() - started, exc)
            raise
        except Exception as exc:
            if observe is not None:
                observe(time.perf_counter() - started, exc)
            raise
        finally:
            PROBING.reset(probing)
            if probe:
                self._probing = False
        if observe is not None:
            observe(time.perf_counter() - started, None)
        self.record_success(kind)
        return result

    def record_failure(self, error: str, kind: str = READ, probe: bool = True) -> None:
        """A call that reached the venue failed; `probe` False for one under way since before the breaker opened."""
        self.in_a_row += 1
        self.by_kind[kind] += 1
        self.last_error = fmt.ends(error, 200)  # what was asked first, the exchange's answer last
        if self.state == OPEN:
            # A call already under way when the breaker opened failed: no probe was made, the state stays; the probe
            # waits a full timeout from this failure, and its new time is published.
            self.opened_at = self._now()
            self._publish(OPEN)
        elif self.state == HALF_OPEN and not probe:
            # No new opening either: the probe in flight decides; with none in flight, open again for a full
            # timeout from this failure, as above.
            if not self._probing:
                self.opened_at = self._now()
                self._set(OPEN)
        elif self.state == HALF_OPEN or self.failures >= self.failure_threshold:
            self.opened_at = self._now()
            self.openings += 1
            self._set(OPEN)

    def record_success(self, kind: str = READ) -> None:
        self.in_a_row = 0
        self.by_kind[kind] = 0
        if self.state != CLOSED and self.failures < self.failure_threshold:
            self.opened_at = None
            self._set(CLOSED)

    def summary(self) -> dict[str, Any]:
        retry_at = self.retry_at
        return {"venue": self.venue, "state": self.state, "failures": self.failures, "retry_at": retry_at,
                "retry_in": None if retry_at is None else max(0.0, retry_at - self._now()),
                "last_error": self.last_error}
