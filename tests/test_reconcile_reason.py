"""The reason of an engine paused by reconciliation says what is true now, wherever it is shown: the differences
that hold it while they do; once nothing holds it (the operator accepted them, the exchange answers again, what
differed agrees again, even while the engine was stopped), that and that a resume is what is left. In `ffe ctl
status` and `ffe ctl why` (real subprocesses), the snapshot, the stored `engine_state` row and the STARTED alert of
the next start; and each new hold's end is told at once (RECONCILE_OK), not held back as a repeat.

Real parts: a live engine opened in-process on the fake Binance (its own SQLite database and control socket),
webhook receivers on 127.0.0.1 for the alerts."""

from __future__ import annotations

from conftest import engine_session, ffe_env
from ffe_engine.model import EngineState
from live_helpers import (fx, live_settings, reconcile_twice, rows, run_ffe_async, stored_events,  # noqa: F401
                          wait_for)
from receiver import Receiver

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}
ACCEPTED = "reconcile: 2 difference(s) accepted; resume when ready"
BACK = "reconcile: the exchange answers again; resume when ready"
AGREES = "reconcile: the exchange agrees with the journal again; resume when ready"


def kinds(hook: Receiver) -> list[str]:
    return [r.body.get("kind") for r in hook.delivered if isinstance(r.body, dict)]


def stored_reason(db) -> list[tuple]:
    return rows(db, "SELECT state, reason FROM engine_state")


async def paused_by_a_deposit(e, fx) -> None:
    """500 USDT arrive at the exchange behind the engine's back: the cash and the equity differ."""
    fx.balances["USDT"].free += 500.0
    assert len(await reconcile_twice(e)) == 2
    assert e.state is EngineState.PAUSED and e.state_reason == "reconcile: 2 difference(s)"


async def test_accepted_differences_leave_a_reason_that_says_so_in_status_why_and_the_next_start(tmp_path, fx):
    settings = live_settings(tmp_path, fx)
    db = settings.db_path

    async def ctl(*args: str):
        return await run_ffe_async(tmp_path, "ctl", *args, "--data-dir", str(settings.data_dir), env=ffe_env(),
                                   name=args[0])

    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        await e.resume(by="test")
        await paused_by_a_deposit(e, fx)
        accept = await ctl("accept")
        assert accept.proc.returncode == 0 and "accepted 2 differences" in accept.stdout, accept.stderr
        assert await reconcile_twice(e) == [] and e.reconcile_blocked == []
        # nothing holds it now: PAUSED still (a resume is the operator's), and its reason says why
        assert e.state is EngineState.PAUSED and e.state_reason == ACCEPTED
        assert e.snapshot()["state_reason"] == ACCEPTED
        assert stored_reason(db) == [("PAUSED", ACCEPTED)]
        status = await ctl("status")
        assert status.stdout.startswith(f"LIVE PAUSED ({ACCEPTED})"), status.stdout
        why = await ctl("why")
        assert f"PAUSED ({ACCEPTED})" in why.stdout and "difference(s))" not in why.stdout, why.stdout
    hook = await Receiver().start()
    try:
        paging = live_settings(tmp_path, fx, alerts={"webhook_url": hook.url, **FAST})
        async with engine_session(paging, live=True) as running:
            assert running.engine.state_reason == ACCEPTED
            await wait_for(lambda: "STARTED" in kinds(hook), timeout=10, what="the STARTED alert")
            (started,) = [r.body["text"] for r in hook.delivered if r.body.get("kind") == "STARTED"]
            assert f"PAUSED ({ACCEPTED})" in started, started
        # the hold ended before the restart, by the operator's accept: no RECONCILE_OK for it after the start
        assert "RECONCILE_OK" not in kinds(hook), kinds(hook)
    finally:
        await hook.stop()


async def test_an_outage_that_ends_leaves_a_reason_that_says_so_and_each_hold_s_end_is_told_at_once(tmp_path, fx):
    hook = await Receiver().start()
    settings = live_settings(tmp_path, fx, alerts={"webhook_url": hook.url, **FAST})  # the default 300 s window
    db = settings.db_path
    try:
        async with engine_session(settings, live=True) as running:
            e = running.engine
            await e.resume(by="test")
            for n in (1, 2):
                fx.down = True
                (difference,) = await e.reconcile()
                assert difference["kind"] == "venue_unreachable"
                assert e.state_reason == "reconcile: the exchange could not be reached"
                await e.flush()
                await wait_for(lambda: kinds(hook).count("RECONCILE") == n, timeout=10, what=f"RECONCILE page {n}")
                fx.down = False
                assert await e.reconcile() == []
                assert e.state is EngineState.PAUSED and e.state_reason == BACK
                assert stored_reason(db) == [("PAUSED", BACK)]
                await e.flush()
                # the second hold's end is news: sent at once, not summed up at the window's end
                await wait_for(lambda: kinds(hook).count("RECONCILE_OK") == n, timeout=10,
                               what=f"RECONCILE_OK {n}, at once: {kinds(hook)}")
            assert [(s["state"], s["reason"]) for s in stored_events(db, "engine_state")][-4:] == [
                ("PAUSED", "reconcile: the exchange could not be reached"), ("PAUSED", BACK),
                ("PAUSED", "reconcile: the exchange could not be reached"), ("PAUSED", BACK)]
    finally:
        await hook.stop()


async def test_differences_that_agree_again_leave_a_reason_that_says_so_also_across_a_restart(tmp_path, fx):
    settings = live_settings(tmp_path, fx)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        await paused_by_a_deposit(e, fx)
        fx.balances["USDT"].free -= 500.0  # gone again: nothing left to accept
        assert await reconcile_twice(e) == [] and e.reconcile_blocked == []
        assert e.state is EngineState.PAUSED and e.state_reason == AGREES
        # held again: the reason says so again
        await paused_by_a_deposit(e, fx)
        assert stored_reason(db) == [("PAUSED", "reconcile: 2 difference(s)")]
    fx.balances["USDT"].free -= 500.0  # gone while the engine is stopped
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.reconcile_blocked == [] and e.state is EngineState.PAUSED and e.state_reason == AGREES
        assert stored_reason(db) == [("PAUSED", AGREES)]
