"""`ffe attach` to an engine that another console runs (`ffe run`, with its screen). When that engine's run ends (its
last bar, `--max-bars`, or a crash), the hosting console keeps the process and the control socket up, to show the
stopped engine and answer `ffe ctl status`; the attached console is told the run has ended all the same, and says
how, as it does for a headless engine that stops (cli.md, `ffe attach`).

Real parts: the engine opened as a console opens it (EngineHost, headless=False) with its control socket, the
attached console under Pilot speaking to that socket, and the engine's SQLite database (locked by another
connection for the crash)."""

from __future__ import annotations

import asyncio
import sqlite3

from conftest import engine_session, make_settings, run_ffe
from test_tui_helpers import running, screen_text, status_text, until

from ffe_tui.app import ConsoleApp


async def test_an_attached_console_says_the_engine_stopped_when_the_console_running_it_ends_its_run(tmp_path):
    settings = make_settings(tmp_path, market={"speed": 20.0})
    async with engine_session(settings, headless=False, max_bars=60) as host:
        await host.start_control()
        run = asyncio.ensure_future(host.engine.run())
        app = ConsoleApp(settings, attach=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await running(pilot)
            await asyncio.wait_for(asyncio.shield(run), timeout=60)  # its last bar: the socket goes on answering
            status = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "status")
            assert "STOPPED" in status.stdout, status.stdout + status.stderr
            await until(pilot, lambda: "ENGINE STOPPED" in screen_text(app), "the stop on the attached screen")
            text = screen_text(app)
            assert "stopped in order" in text and "crash" not in text.lower(), text
            assert "STOPPED  was RUNNING" in status_text(app), status_text(app)
            # Its last picture is the engine's last: the figures after the run's last bar, not those before it.
            last = host.engine.snapshot()
            await until(pilot, lambda: app.snap["bars"] == last["bars"], "the engine's last figures")
            assert app.snap["equity"] == last["equity"], (app.snap["equity"], last["equity"])


async def test_an_attached_console_says_the_engine_crashed_when_the_console_running_it_crashes(tmp_path):
    settings = make_settings(tmp_path, market={"speed": 20.0})
    async with engine_session(settings, headless=False) as host:
        await host.start_control()
        run = asyncio.ensure_future(host.engine.run())
        app = ConsoleApp(settings, attach=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await running(pilot)
            locker = sqlite3.connect(settings.db_path, timeout=0.1)
            try:
                locker.execute("BEGIN EXCLUSIVE")  # another process holds the database: the next write fails
                done, _ = await asyncio.wait({run}, timeout=60)
                assert done, "the engine did not stop on a database it cannot write"
            finally:
                locker.rollback()
                locker.close()
            await until(pilot, lambda: "ENGINE CRASHED" in screen_text(app), "the crash on the attached screen")
            assert "StorageError" in screen_text(app), screen_text(app)


async def test_attached_after_the_engine_s_run_ended_the_console_does_not_say_it_runs_on(tmp_path):
    """Attached once the hosting console's engine has run its last bar: told its run has ended, not that quitting
    leaves it running."""
    settings = make_settings(tmp_path, market={"speed": 20.0})
    async with engine_session(settings, headless=False, max_bars=5) as host:
        await host.start_control()
        await asyncio.wait_for(host.engine.run(), timeout=60)
        app = ConsoleApp(settings, attach=True)
        async with app.run_test(size=(120, 40)) as pilot:
            said = lambda: [str(n.message) for n in app._notifications if "attached to" in str(n.message)]  # noqa: E731
            [notice] = await until(pilot, said, "the attach notice")
            assert "its run has ended" in notice and "leaves it running" not in notice, notice
