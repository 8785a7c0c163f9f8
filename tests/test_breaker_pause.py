"""The pause an open circuit breaker makes, on a live engine against the fake Binance.

An opening pauses a RUNNING engine once (by `breaker`). Once the breaker has closed, the pause that is still the
breaker's own says so (the engine stays PAUSED: the operator resumes), as a reconciliation's does; an operator's
pause keeps its own reason. A resume while the breaker is still open is not undone by the same opening (nothing
probes the breaker while the engine is PAUSED with no order out, so a refusal could keep it PAUSED for good); a
new opening (a probe that fails) pauses it again.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import engine_session
from ffe_engine.errors import ControlError
from ffe_engine.model import EngineState
from test_live_engine import running_live
from live_helpers import (BTC, SteppedClock, fx, live_config, live_env, engine_loop,  # noqa: F401
                          next_bar, rows, run_ffe_async, stored_events, wait_for, write_config)

BREAKER = {"failure_threshold": 3, "recovery_timeout_s": 60.0}  # on the stepped clock: not waited for
QUIET = {"reconcile_interval_s": 3600}  # no reconciliation of the exchange while it is down
CLOSED_AGAIN = "breaker closed again on binance; resume when ready"


def state_row(db) -> tuple:
    (row,) = rows(db, "SELECT state, reason, by FROM engine_state")
    return row


def states(db) -> list[tuple[str, str, str, str]]:
    return [(s["previous"], s["state"], s["reason"], s["by"]) for s in stored_events(db, "engine_state")]


async def ask_balances(e) -> None:
    """A call to the exchange through the breaker that any state makes (the operator's balances view)."""
    with pytest.raises(ControlError):
        await e.balances()


async def open_the_breaker(e, fx) -> None:
    """The exchange down: three calls through the breaker fail, and it opens."""
    fx.down = True
    for _ in range(3):
        await ask_balances(e)
    assert e.breaker.state == "open"


async def close_the_breaker(e, fx, clock) -> None:
    """The exchange back, past the recovery timeout: the next call is the probe, which closes the breaker."""
    fx.down = False
    clock.forward(60.0)
    await e.balances()
    assert e.breaker.state == "closed"


async def test_the_breaker_s_pause_says_so_once_the_breaker_has_closed(tmp_path, fx):
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock, breaker=BREAKER, engine=QUIET) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            await open_the_breaker(e, fx)
            await wait_for(lambda: state_row(db)[0::2] == ("PAUSED", "breaker"), timeout=10, what="paused")
            assert state_row(db)[1].startswith("breaker open on binance: ")
            await close_the_breaker(e, fx, clock)
            await wait_for(lambda: state_row(db) == ("PAUSED", CLOSED_AGAIN, "breaker"), timeout=10,
                           what="the pause's reason in step with the breaker")
            assert e.state is EngineState.PAUSED and e.state_reason == CLOSED_AGAIN
        said = states(db)
        assert said[-1] == ("PAUSED", "PAUSED", CLOSED_AGAIN, "breaker"), said
        assert len([s for s in said if s[2] == CLOSED_AGAIN]) == 1, said  # said once


async def test_a_restart_while_the_breaker_is_open_starts_with_it_closed_and_says_so(tmp_path, fx):
    """The breaker is the run's own (a new run starts it closed): the pause it made says so from the start, in the
    state and in the run's start record (the STARTED alert), not that a breaker is open that no run holds open."""
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock, breaker=BREAKER, engine=QUIET) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            await open_the_breaker(e, fx)
            await wait_for(lambda: state_row(db)[0::2] == ("PAUSED", "breaker"), timeout=10, what="paused")
    fx.down = False
    async with engine_session(e.settings, live=True) as running:
        e = running.engine
        assert e.breaker.state == "closed"
        assert e.state is EngineState.PAUSED and e.state_reason == CLOSED_AGAIN
        start = [r for r in stored_events(db, "run") if r["phase"] == "start"][-1]
        assert start["detail"]["reason"] == CLOSED_AGAIN, start


async def test_an_operator_s_pause_keeps_its_reason_through_the_breaker(tmp_path, fx):
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock, breaker=BREAKER, engine=QUIET) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            await e.pause(reason="operator pause", by="operator")
            await open_the_breaker(e, fx)
            await close_the_breaker(e, fx, clock)
            await asyncio.sleep(1.5)  # housekeeping rounds after it
            assert state_row(db) == ("PAUSED", "operator pause", "operator")
        assert not [s for s in states(db) if s[3] == "breaker"]


async def test_a_resume_while_the_breaker_is_open_stays_resumed_until_it_opens_again(tmp_path, fx):
    """`ffe ctl resume` (the console's `p` asks the same) while the breaker is still open: RUNNING, and it stays
    so; entries wait for the breaker's probe at the gates. A probe that fails opens the breaker again: that new
    opening pauses the engine again."""
    clock = SteppedClock()
    tables = {"breaker": BREAKER, "engine": QUIET}
    write_config(tmp_path, live_config(fx, **tables))
    async with running_live(tmp_path, fx, clock, **tables) as running:
        e, db = running.engine, running.store.path
        await running.start_control()
        async with engine_loop(e):
            await open_the_breaker(e, fx)
            await wait_for(lambda: state_row(db)[0::2] == ("PAUSED", "breaker"), timeout=10, what="paused")
            resumed = await run_ffe_async(tmp_path, "ctl", "resume", env=live_env(fx), name="resume")
            assert resumed.proc.returncode == 0, resumed.stderr
            assert "RUNNING" in resumed.stdout, resumed.stdout
            await asyncio.sleep(2.5)  # housekeeping rounds
            assert e.breaker.state == "open"
            assert e.state is EngineState.RUNNING, e.state_reason
            assert state_row(db) == ("RUNNING", "resume", "ctl")
            assert states(db)[-1][1:] == ("RUNNING", "resume", "ctl"), states(db)

            clock.forward(60.0)
            await ask_balances(e)  # the probe fails: the breaker opens again
            await wait_for(lambda: state_row(db)[0::2] == ("PAUSED", "breaker"), timeout=20,
                           what="paused by the breaker's new opening")
        transitions = [(b["previous"], b["state"]) for b in stored_events(db, "breaker")]
        assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "open")], transitions
        said = [s for s in states(db) if s[3] in ("breaker", "ctl")]
        assert [s[1] for s in said] == ["PAUSED", "RUNNING", "PAUSED"], said
