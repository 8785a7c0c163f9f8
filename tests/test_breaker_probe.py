"""One probe at a time, and only the probe decides a half-open breaker: a call under way since before the breaker
opened (a slow lookup, a balance read) that ends while the probe is in flight neither lets another call through
nor counts as a new opening.
"""

from __future__ import annotations

import asyncio

import pytest

from ffe_engine.breaker import HALF_OPEN, OPEN, READ, SEND, BreakerOpen, CircuitBreaker
from ffe_engine.venues.base import VenueUnavailable

RECOVERY_S = 5.0


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Exchange:
    """What reached the exchange, by name; each call answers when it is released."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.answers: dict[str, asyncio.Future[str]] = {}

    def call(self, name: str):
        async def fn() -> str:
            self.reached.append(name)
            self.answers[name] = asyncio.get_running_loop().create_future()
            return await self.answers[name]
        return fn

    def answer(self, name: str, error: str | None = None) -> None:
        if error is None:
            self.answers[name].set_result(name)
        else:
            self.answers[name].set_exception(VenueUnavailable(error))


async def failing() -> None:
    raise VenueUnavailable("503 Service Unavailable")


async def opened_with_a_call_under_way(b: CircuitBreaker, ex: Exchange, clock: Clock) -> tuple[asyncio.Task, ...]:
    """A read under way (A), three sends failing in a row (the breaker opens), the recovery time over and a probe
    (a send) in flight."""
    a = asyncio.ensure_future(b.call(ex.call("A"), READ))
    await asyncio.sleep(0)
    for _ in range(3):
        with pytest.raises(VenueUnavailable):
            await b.call(failing, SEND)
    assert b.state == OPEN and b.openings == 1
    clock.t += RECOVERY_S + 0.1
    probe = asyncio.ensure_future(b.call(ex.call("probe"), SEND))
    await asyncio.sleep(0)
    assert b.state == HALF_OPEN and not b.allows()
    return a, probe


async def test_a_call_from_before_the_opening_that_works_lets_no_second_call_past_the_probe_in_flight():
    clock, ex = Clock(), Exchange()
    b = CircuitBreaker("binance", failure_threshold=3, recovery_timeout_s=RECOVERY_S, now=clock)
    a, probe = await opened_with_a_call_under_way(b, ex, clock)
    ex.answer("A")
    assert await a == "A"  # a read: the sends' count stays at the threshold, the breaker half open
    assert b.state == HALF_OPEN
    assert not b.allows()
    with pytest.raises(BreakerOpen):
        await b.call(ex.call("C"), SEND)
    assert ex.reached == ["A", "probe"]
    ex.answer("probe")
    assert await probe == "probe"
    assert b.state == "closed" and b.allows()


async def test_a_call_from_before_the_opening_that_fails_is_no_new_opening_and_leaves_the_probe_to_decide():
    clock, ex = Clock(), Exchange()
    b = CircuitBreaker("binance", failure_threshold=3, recovery_timeout_s=RECOVERY_S, now=clock)
    a, probe = await opened_with_a_call_under_way(b, ex, clock)
    ex.answer("A", "timed out")
    with pytest.raises(VenueUnavailable):
        await a
    assert b.openings == 1  # no new opening: an engine resumed meanwhile is not paused again over it
    assert b.state == HALF_OPEN and not b.allows()
    with pytest.raises(BreakerOpen):
        await b.call(ex.call("C"), SEND)
    ex.answer("probe")
    assert await probe == "probe"
    assert b.state == "closed" and ex.reached == ["A", "probe"]


async def test_the_probe_that_fails_opens_it_again_as_a_new_opening():
    clock, ex = Clock(), Exchange()
    b = CircuitBreaker("binance", failure_threshold=3, recovery_timeout_s=RECOVERY_S, now=clock)
    a, probe = await opened_with_a_call_under_way(b, ex, clock)
    ex.answer("probe", "503")
    with pytest.raises(VenueUnavailable):
        await probe
    assert b.state == OPEN and b.openings == 2
    ex.answer("A", "timed out")  # after the probe's failure: the breaker stays open, its time moved on
    with pytest.raises(VenueUnavailable):
        await a
    assert b.state == OPEN and b.openings == 2


async def test_a_call_from_before_the_opening_failing_with_no_probe_in_flight_opens_it_again_quietly():
    """Half open after a read worked while the sends are still at the threshold, no probe in flight: a failure of a
    call from before the opening sends it back to open for a full timeout, no new opening counted."""
    clock, ex = Clock(), Exchange()
    b = CircuitBreaker("binance", failure_threshold=3, recovery_timeout_s=RECOVERY_S, now=clock)
    a = asyncio.ensure_future(b.call(ex.call("A"), READ))
    await asyncio.sleep(0)
    for _ in range(3):
        with pytest.raises(VenueUnavailable):
            await b.call(failing, SEND)
    clock.t += RECOVERY_S + 0.1

    async def read() -> str:
        return "read"
    assert await b.call(read, READ) == "read"  # the probe: a read that works says nothing of the sends
    assert b.state == HALF_OPEN and b.allows()
    ex.answer("A", "timed out")
    with pytest.raises(VenueUnavailable):
        await a
    assert b.state == OPEN and b.openings == 1
    assert b.retry_at == pytest.approx(clock.t + RECOVERY_S)
