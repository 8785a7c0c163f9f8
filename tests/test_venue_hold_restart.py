"""A venue's hold (Retry-After: no order before a time) is stored, so a restart waits too. One that ended while the
engine was stopped is said to have ended at the next start, once: its fault is never left open in the records."""

from __future__ import annotations

import asyncio

from conftest import audit_lines, engine_session, make_settings
from ffe_engine.clock import ManualClock
from ffe_engine.execution import HOLD_KEY
from ffe_engine.store import Store


def _holds(settings) -> list[tuple[str, str]]:
    return [(r["phase"], r["detail"]) for r in audit_lines(settings.audit_path)
            if r.get("event") == "venue_fault" and r.get("kind") == "rate_limit"]


async def _start_and_stop(settings) -> object:
    async with engine_session(settings) as running:
        return await running.store.get_kv(HOLD_KEY)


def test_a_hold_that_ended_while_stopped_is_said_resolved_at_the_next_start_and_only_then(tmp_path):
    settings = make_settings(tmp_path)
    asyncio.run(_start_and_stop(settings))  # a data directory, its audit trail begun

    async def hold_ended_while_stopped() -> None:
        store = await Store.open(settings.db_path)
        try:
            await store.put_kv(HOLD_KEY, 1_000.0, 900.0)  # a hold that ended long ago
        finally:
            await store.close()

    asyncio.run(hold_ended_while_stopped())
    stored = asyncio.run(_start_and_stop(settings))
    assert stored is None, "the ended hold is still stored: every start would say it ended again"
    (resolved,) = _holds(settings)
    assert resolved[0] == "resolved" and "stopped" in resolved[1], resolved

    asyncio.run(_start_and_stop(settings))
    assert len(_holds(settings)) == 1, _holds(settings)


def test_a_hold_that_ends_while_running_is_said_resolved_once_and_not_again_at_the_next_start(tmp_path):
    settings = make_settings(tmp_path, engine={"symbols": ["BTC/USDT"], "warmup_bars": 100})
    asyncio.run(_start_and_stop(settings))
    clock = ManualClock()  # wall time stands still until the test moves it

    async def run_past_a_hold() -> object:
        store = await Store.open(settings.db_path)
        try:
            # asked for by the venue just before a restart: a minute more
            await store.put_kv(HOLD_KEY, clock.wall() + 60.0, clock.wall())
        finally:
            await store.close()
        async with engine_session(settings, clock=clock) as running:
            e = running.engine
            held = await e.operator_order("BTC/USDT", "buy", 0.01)
            assert not held["accepted"] and "VENUE_HOLD" in str(held), held
            clock.forward(61.0)
            placed = await e.operator_order("BTC/USDT", "buy", 0.01)
            assert placed["accepted"], placed
            return await running.store.get_kv(HOLD_KEY)

    assert asyncio.run(run_past_a_hold()) is None, "the ended hold is still stored"
    assert [phase for phase, _ in _holds(settings)] == ["resolved"]
    asyncio.run(_start_and_stop(settings))
    assert [phase for phase, _ in _holds(settings)] == ["resolved"]
