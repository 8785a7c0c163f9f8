"""An exchange that refuses this machine's clock (Binance -1021: the request's timestamp outside its receive window)
answers: it is no outage, and the hold it puts on the engine does not lift by itself while the clock stays off.
Reconciliation's hold says so wherever it is shown, from one place: the state's reason (`ffe ctl status`), `ffe ctl
why`, the console's Why and Health views, the RECONCILE page, the refusals of a resume and an accept; and it says
when the hold lifts: once the clock is set right and a reconciliation is then answered and agrees.

Real parts: a live engine opened in-process on the fake Binance (its own SQLite database and control socket), whose
clock is moved ahead of this machine's, `ffe ctl` as subprocesses, the console attached under Pilot, a webhook
receiver on 127.0.0.1 for the alerts."""

from __future__ import annotations

import time

import pytest

from conftest import engine_session, ffe_env
from ffe_engine.errors import ControlError
from ffe_engine.model import EngineState
from ffe_tui.app import ConsoleApp
from live_helpers import fx, live_settings, rows, run_ffe_async, stored_events, wait_for  # noqa: F401
from receiver import Receiver
from test_tui_helpers import screen_text, status_text, until

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}
HELD = "reconcile: the exchange refuses this machine's clock; set it right (NTP)"
LIFTED = "reconcile: the exchange takes this machine's clock again; resume when ready"


def flat(text: str) -> str:
    """`text` with its wrapping undone."""
    return " ".join(text.split())


def says_the_clock(text: str) -> bool:
    """Said as the clock it is, with what to do, and not as an outage that lifts by itself."""
    text = flat(text)
    return ("refuses this machine's clock" in text and "NTP" in text and "could not be reached" not in text
            and "by itself" not in text and "outage" not in text)


async def test_a_clock_the_exchange_refuses_is_said_as_such_and_lifts_once_set_right(tmp_path, fx):
    hook = await Receiver().start()
    settings = live_settings(tmp_path, fx, alerts={"webhook_url": hook.url, **FAST})
    db = settings.db_path

    async def ctl(*args: str):
        return await run_ffe_async(tmp_path, "ctl", *args, "--data-dir", str(settings.data_dir), env=ffe_env(),
                                   name=args[0])

    try:
        async with engine_session(settings, live=True) as running:
            e = running.engine
            await running.start_control()
            await e.resume(by="test")
            fx.now_ms = lambda: int(time.time() * 1000) + 60_000  # the exchange's clock a minute ahead of ours
            (difference,) = await e.reconcile()
            assert difference["kind"] == "clock_refused" and "-1021" in difference["error"], difference
            (record,) = stored_events(db, "reconcile")[-1:]
            assert record["status"] == "failed" and record["differences"][0]["kind"] == "clock_refused", record
            assert e.state is EngineState.PAUSED and e.state_reason == HELD
            assert rows(db, "SELECT state, reason FROM engine_state") == [("PAUSED", HELD)]

            status = await ctl("status")
            assert status.stdout.startswith(f"LIVE PAUSED ({HELD})"), status.stdout
            assert "RECONCILE: the exchange refuses this machine's clock" in status.stdout, status.stdout
            why = await ctl("why")
            (gate,) = [line for line in why.stdout.splitlines() if "RECONCILE:" in line]
            assert says_the_clock(gate) and "lifted by setting this machine's clock right" in gate, why.stdout
            # the pause it made is lifted by a resume only once the hold has lifted: said so, not "resume" alone
            (state,) = [line for line in why.stdout.splitlines() if "ENGINE_STATE:" in line]
            assert "once reconciliation's hold (below) has lifted" in state, why.stdout
            with pytest.raises(ControlError) as resume:
                await e.resume(by="test")
            assert says_the_clock(str(resume.value)), resume.value
            accept = await ctl("accept")
            assert accept.proc.returncode == 1 and says_the_clock(accept.stderr), accept.stdout + accept.stderr

            await e.flush()
            await wait_for(lambda: any(r.body.get("kind") == "RECONCILE" for r in hook.delivered), timeout=10,
                           what="the RECONCILE page")
            (page,) = [r.body for r in hook.delivered if r.body.get("kind") == "RECONCILE"]
            assert page["severity"] == "page" and says_the_clock(page["text"]), page
            assert "once it answers" not in page["text"] and "-1021" in page["text"], page

            app = ConsoleApp(settings, attach=True)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.snap is not None, "the attached snapshot")
                await until(pilot, lambda: "RECONCILE CLOCK" in status_text(app), "the clock on the status line")
                await pilot.press("6")
                # (the status line names RECONCILE CLOCK before the view has loaded its lines)
                await until(pilot, lambda: "refuses this machine's clock" in flat(screen_text(app)),
                            "the hold in the Why view")
                text = flat(screen_text(app))
                assert says_the_clock(text[text.index("RECONCILE"):]), text
                await pilot.press("7")
                await until(pilot, lambda: "approvals pending" in screen_text(app), "the Health view")
                text = flat(screen_text(app))
                row = text[text.index("reconcile "):text.index("approvals pending")]
                assert says_the_clock(row), text

            del fx.now_ms  # the clock set right: the exchange answers, and agrees with the journal
            assert await e.reconcile() == []
            assert e.state is EngineState.PAUSED and e.state_reason == LIFTED
            status = await ctl("status")
            assert status.stdout.startswith(f"LIVE PAUSED ({LIFTED})"), status.stdout
            assert await e.resume(by="test") is EngineState.RUNNING
    finally:
        await hook.stop()
