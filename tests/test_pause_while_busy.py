"""A pause asked while another control is under way (a close whose order the exchange holds, for up to its timeout)
takes effect at once: no new entry passes from the moment it is asked, and the operator is answered then, not once
the exchange has answered the other control. A resume asked before it, still waiting for its turn, does not undo it.
Real engines over real SQLite files against the fake Binance through ccxt, the real control socket, and `ffe ctl` as
a subprocess.
"""

from __future__ import annotations

import asyncio

import pytest

from ffe_engine.errors import ControlError
from ffe_engine.model import EngineState

from conftest import run_ffe
from live_helpers import BTC, POST_ORDER, fx, stored_events, wait_for  # noqa: F401
from test_live_engine import running_live

LOOSE = {"max_position_pct": 100, "max_concentration_pct": 100, "max_leverage": 5, "max_var_pct": 100}


def last_state_stored(db) -> str:
    return stored_events(db, "engine_state")[-1]["state"]


async def a_close_held_by_the_exchange(e, fx, seconds: float) -> asyncio.Task:  # noqa: F811
    posts = len(fx.requests_to(POST_ORDER))
    fx.fault(POST_ORDER, "hang", seconds=seconds, execute=True)
    close = asyncio.ensure_future(e.close_position(BTC, by="ctl"))
    await wait_for(lambda: len(fx.requests_to(POST_ORDER)) > posts, timeout=10, what="the closing order sent")
    return close


async def test_ffe_ctl_pause_behind_a_close_the_exchange_holds_answers_at_once_and_pauses(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        await running.start_control()
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        close = await a_close_held_by_the_exchange(e, fx, 4.0)
        paused = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "pause", "--data-dir", "data", "--timeout", "2")
        assert paused.returncode == 0, paused.stdout + paused.stderr
        assert "PAUSED" in paused.stdout, paused.stdout
        assert not close.done(), "the close was answered before the pause: the test did not hold it"
        assert e.state is EngineState.PAUSED and last_state_stored(db) == "PAUSED"
        closed = await close
        assert closed["accepted"], closed  # an exit: a pause lets it out
        assert e.state is EngineState.PAUSED


async def test_a_resume_asked_before_a_pause_both_behind_a_close_leaves_the_engine_paused(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        await e.pause(by="ctl")
        close = await a_close_held_by_the_exchange(e, fx, 3.0)
        resume = asyncio.ensure_future(e.resume(by="ctl"))
        await asyncio.sleep(0.05)  # asked, waiting for the close's turn to end
        assert not resume.done()
        assert await asyncio.wait_for(e.pause(by="ctl"), timeout=1.0) is EngineState.PAUSED
        await close
        with pytest.raises(ControlError, match="paused since"):
            await resume
        assert e.state is EngineState.PAUSED and last_state_stored(db) == "PAUSED"


async def test_a_pause_while_a_resume_is_under_way_is_not_undone_by_it(tmp_path, fx, monkeypatch):  # noqa: F811
    """The resume has its turn and is looking at the records set aside before it stores RUNNING (a read of the
    disk): a pause asked then, which waits for no turn, holds."""
    import time

    from ffe_engine import ahead

    checked_now = ahead.checked_now

    def slow(*args):
        time.sleep(0.5)
        return checked_now(*args)

    monkeypatch.setattr(ahead, "checked_now", slow)
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e, db = running.engine, running.store.path
        await e.pause(by="ctl")
        resume = asyncio.ensure_future(e.resume(by="ctl"))
        await asyncio.sleep(0.2)
        assert not resume.done()
        await e.pause(by="ctl")
        with pytest.raises(ControlError, match="paused since"):
            await resume
        assert e.state is EngineState.PAUSED and last_state_stored(db) == "PAUSED"


async def test_ffe_ctl_resume_behind_a_close_the_exchange_holds_says_it_waits_and_resumes_after(
        tmp_path, fx):  # noqa: F811
    """The resume waits for the close under way (it takes the controls' turn): its answer comes within half of
    `--timeout`, saying it waits for the close and resumes once that has ended (exit 1: not resumed yet), never
    that a running engine did not answer; then the engine resumes."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e = running.engine
        await running.start_control()
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        await e.pause(by="ctl")
        close = await a_close_held_by_the_exchange(e, fx, 4.0)
        resumed = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "resume", "--data-dir", "data", "--timeout", "2")
        assert resumed.returncode == 1, resumed.stdout + resumed.stderr
        said = resumed.stdout.splitlines()[0]
        assert f"the close of {BTC} is under way" in said and "resumes once it has ended" in said, said
        assert "did not answer" not in resumed.stdout + resumed.stderr
        assert e.state is EngineState.PAUSED
        await close
        await wait_for(lambda: e.state is EngineState.RUNNING, timeout=10, what="the resume carried out")


async def test_a_re_arm_waiting_behind_a_close_does_not_undo_a_kill_switch_pressed_after_it(tmp_path, fx):  # noqa: F811
    """`ffe ctl resume --yes` answered "under way" behind a close, then the kill switch: when the resume's turn comes
    it is refused. The operator's last word holds: no RUNNING is ever stored after that HALTED."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        await e.pause(by="ctl")
        close = await a_close_held_by_the_exchange(e, fx, 3.0)
        answer = await e.resume(by="ctl", confirm=True, timeout_s=1.0)
        assert str(answer).startswith("under way: "), answer
        await e.halt(by="ctl", timeout_s=1.0)
        await close
        # The resume's turn came before the kill switch's rest, whose record follows it.
        await wait_for(lambda: stored_events(db, "kill_switch"), timeout=10, what="the kill switch's report")
        states = [ev["state"] for ev in stored_events(db, "engine_state")]
        assert states[-1] == "HALTED" and "RUNNING" not in states[states.index("HALTED"):], states


async def test_a_resume_behind_a_close_that_would_be_refused_now_is_refused_at_once(tmp_path, fx):  # noqa: F811
    """HALTED and no confirmation: the refusal is known when it is asked, and said then, not an answer that the
    engine resumes once the close has ended."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        close = await a_close_held_by_the_exchange(e, fx, 3.0)
        await e.halt(by="ctl", timeout_s=1.0)
        with pytest.raises(ControlError, match="re-arming needs confirmation"):
            await asyncio.wait_for(e.resume(by="ctl", timeout_s=1.0), timeout=1.0)
        await close


@pytest.mark.parametrize("press", ["halt", "flatten"])
async def test_a_re_arm_asked_after_a_kill_switch_pressed_behind_a_close_re_arms_once_the_close_has_ended(
        tmp_path, fx, press):  # noqa: F811
    """The kill switch (or flatten) pressed behind a close is answered first; `resume --yes` asked after that answer
    is answered "under way". Once the close has ended, the press's own rest (its cancels, its report) is no later
    word from the operator: the re-arm is carried out, and RUNNING is the last state stored."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        close = await a_close_held_by_the_exchange(e, fx, 3.0)
        await (e.halt(by="ctl", timeout_s=1.0) if press == "halt" else e.flatten(by="ctl", timeout_s=1.0))
        assert e.state is EngineState.HALTED
        answer = await e.resume(by="ctl", confirm=True, timeout_s=1.0)
        assert str(answer).startswith("under way: "), answer
        await close
        await wait_for(lambda: stored_events(db, "kill_switch"), timeout=10, what="the kill switch's report")
        # RUNNING is set in memory before it is stored: the stored state is what says the re-arm has ended.
        await wait_for(lambda: last_state_stored(db) == "RUNNING", timeout=10, what="the re-arm carried out")
        assert e.state is EngineState.RUNNING


async def test_a_re_arm_waiting_behind_a_close_does_not_undo_a_second_kill_switch_pressed_after_it(
        tmp_path, fx):  # noqa: F811
    """HALTED when the re-arm was asked, and the kill switch pressed again after it: that later halt holds."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        close = await a_close_held_by_the_exchange(e, fx, 3.0)
        await e.halt(by="ctl", timeout_s=1.0)
        answer = await e.resume(by="ctl", confirm=True, timeout_s=1.0)
        assert str(answer).startswith("under way: "), answer
        await e.halt(by="ctl", timeout_s=1.0)
        await close
        await wait_for(lambda: len(stored_events(db, "kill_switch")) == 2, timeout=10, what="both reports")
        assert e.state is EngineState.HALTED
        states = [ev["state"] for ev in stored_events(db, "engine_state")]
        assert states[-1] == "HALTED" and "RUNNING" not in states[states.index("HALTED"):], states
