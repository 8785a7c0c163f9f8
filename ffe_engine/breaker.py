"""Circuit breaker around a venue.

closed -> (failure_threshold consecutive transient failures) -> open -> (recovery_timeout_s) -> half_open: one
probe call goes through; its success closes the breaker, its failure opens it again for another timeout.
Only transient failures (VenueUnavailable, which includes an order in doubt) count: a venue that answers
"insufficient funds" is healthy. A request held back by the exchange's Retry-After (VenueUnavailable, not sent) is
neither a failure nor a success: it never reached the venue, whose own answer (the 418 or 429 that asked for the
wait) counted once already. Counted, the poll's lookups refused every half second would open the breaker (and pause
the engine) over one answer.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, TypeVar

from .events import BreakerChanged, EventBus
from .venues.base import VenueUnavailable

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


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
        self.failures = 0
        self.opened_at: float | None = None
        self.last_error = ""
        # How many times it has opened in this run (a probe that fails opens it again): what the engine's pause
        # tells one opening from the next by (BreakerPause).
        self.openings = 0
        self._probing = False
        # Told of every call that went out: its duration and its error (None on success), for /metrics.
        self.observe: Callable[[float, BaseException | None], None] | None = None

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
        if previous != state and self.bus is not None:
            self.bus.publish(BreakerChanged(venue=self.venue, state=state, previous=previous,
                                            failures=self.failures, error=self.last_error, retry_at=self.retry_at))

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self.state == OPEN:
            remaining = (self.retry_at or 0.0) - self._now()
            if remaining > 0:
                raise BreakerOpen(self.venue, remaining)
            self._set(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self._probing:
                raise BreakerOpen(self.venue, 0.0)
            self._probing = True
        observe = self.observe
        started = time.perf_counter()  # a duration measured, not a time of day
        try:
            result = await fn()
        except VenueUnavailable as exc:
            if exc.sent:
                self.record_failure(str(exc))
                if observe is not None:
                    observe(time.perf_counter() - started, exc)
            raise
        except Exception as exc:
            if observe is not None:
                observe(time.perf_counter() - started, exc)
            raise
        finally:
            self._probing = False
        if observe is not None:
            observe(time.perf_counter() - started, None)
        self.record_success()
        return result

    def record_failure(self, error: str) -> None:
        self.failures += 1
        self.last_error = error[:200]
        if self.state == HALF_OPEN or self.failures >= self.failure_threshold:
            self.opened_at = self._now()
            if self.state != OPEN:
                self.openings += 1
            if self.state == OPEN:  # still open: publish the new probe time
                self.state = HALF_OPEN
            self._set(OPEN)

    def record_success(self) -> None:
        self.failures = 0
        if self.state != CLOSED:
            self.opened_at = None
            self._set(CLOSED)

    def summary(self) -> dict[str, Any]:
        retry_at = self.retry_at
        return {"venue": self.venue, "state": self.state, "failures": self.failures, "retry_at": retry_at,
                "retry_in": None if retry_at is None else max(0.0, retry_at - self._now()),
                "last_error": self.last_error}
