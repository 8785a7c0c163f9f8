"""An engine whose run has ended (its feed ended, or it crashed) while the console around it still answers on the
control socket: every command that would change its state or place or cancel an order is refused with one line,
nothing is stored, and `ffe ctl status` says it stopped. The real console under Pilot, its real control socket,
`ffe ctl` as a subprocess, and for the crash a second SQLite connection holding the database's write lock longer
than the engine waits (what a locked or full disk looks like to it)."""

from __future__ import annotations

import asyncio
import sqlite3

from conftest import db_rows, db_value, make_settings, run_ffe, starter_config
from ffe_engine.control import request
from ffe_tui.app import ConsoleApp
from receiver import Receiver
from test_tui_helpers import console, db_path, running, screen_text, status_text, until

# Every command that changes something, with arguments it would otherwise take.
CHANGES = [
    ("resume", {"confirm": True}), ("pause", {}), ("halt", {}), ("flatten", {}), ("mode", {"mode": "manual"}),
    ("accept", {}), ("order", {"symbol": "BTC/USDT", "side": "buy", "quantity": 0.01}),
    ("cancel", {"id": "ffe-none"}), ("close", {"symbol": "BTC/USDT"}), ("approve", {"id": "a-none"}),
    ("reject", {"id": "a-none"}), ("settle", {"id": "ffe-none", "outcome": "canceled"}),
]


async def _refuses_every_change(app, db, why: str) -> None:
    path = app.settings.socket_path
    orders_before = db_value(db, "SELECT COUNT(*) FROM orders")
    state_before = db_rows(db, "SELECT * FROM engine_state")
    for cmd, args in CHANGES:
        answer = await request(path, cmd, {"by": "ctl", **args}, timeout=10)
        assert answer["ok"] is False, (cmd, answer)
        assert answer["error"].startswith(f"the engine has stopped ({why}") and "start it again" in answer["error"], \
            (cmd, answer)
        assert "\n" not in answer["error"]
    # Reads still answer.
    for cmd in ("status", "orders", "trades", "why", "profit", "balances"):
        answer = await request(path, cmd, {"by": "ctl"}, timeout=10)
        assert answer["ok"] is True, (cmd, answer)
    assert db_value(db, "SELECT COUNT(*) FROM orders") == orders_before
    # No command changed the stored state (a crashed engine may still store its own HALTED, once it can).
    after = db_rows(db, "SELECT state, reason, by FROM engine_state")
    assert after == [r[1:4] for r in state_before] or after == [("HALTED", "records cannot be written", "engine")], \
        (state_before, after)
    assert app.engine.snapshot()["orders"] == []


async def _ctl(cwd, *args: str):
    return await asyncio.to_thread(run_ffe, cwd, "ctl", *args)


async def test_an_engine_whose_feed_ended_refuses_every_change_and_says_it_stopped(tmp_path):
    starter_config(tmp_path)  # `ffe ctl` run from tmp_path finds the same data directory
    app = console(tmp_path, speed=0.0, max_bars=5, monitor={"enabled": False})
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.feed_ended, "the feed ended")
        await _refuses_every_change(app, db_path(tmp_path), "the market feed ended")
        status = await _ctl(tmp_path, "status")
        assert status.returncode == 0, status.stderr
        first = status.stdout.splitlines()[0]
        assert first.startswith("PAPER STOPPED (the market feed ended): was RUNNING"), first
        resume = await _ctl(tmp_path, "resume", "--yes")
        assert resume.returncode == 1 and resume.stdout == "", resume
        [line] = resume.stderr.splitlines()
        assert "the engine has stopped (the market feed ended)" in line, line


async def test_a_console_run_with_max_bars_says_why_it_stopped_as_ffe_ctl_status_does(tmp_path):
    starter_config(tmp_path)
    settings = make_settings(tmp_path, engine={"warmup_bars": 100}, market={"speed": 0.0, "seed": 7},
                             monitor={"enabled": False})
    app = ConsoleApp(settings, max_bars=3)  # as `ffe run --max-bars 3` builds it
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.feed_ended, "the run to end")
        await until(pilot, lambda: "STOPPED: it ran its 3 bars (--max-bars)" in status_text(app), "the reason")
        assert "market feed ended" not in screen_text(app)
        status = await _ctl(tmp_path, "status")
        assert status.stdout.startswith("PAPER STOPPED (it ran its 3 bars (--max-bars)): was RUNNING"), status
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        assert "The engine has already stopped (it ran its 3 bars (--max-bars))." in screen_text(app)


# Each write the engine makes while another connection holds the lock waits for it first, 5 s by default: the
# engine meets several before it stops (the bar's records, the books, HALTED).
QUICK_TO_GIVE_UP = {"busy_timeout_s": 0.3}


async def crashed_on_a_locked_database(pilot, app, db) -> None:
    """The console's engine running, then crashed on its records: another connection holds the database's write
    lock longer than the engine waits for it, so nothing can be recorded."""
    await running(pilot)
    await until(pilot, lambda: app.snap["bars"] >= 2, "a live bar")
    holder = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")
        await until(pilot, lambda: app.crash is not None, "the engine crashed on its records", timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_an_engine_that_crashed_on_its_records_refuses_every_change_and_says_it_stopped(tmp_path):
    starter_config(tmp_path)
    app = console(tmp_path, speed=4.0, monitor={"enabled": False}, storage=QUICK_TO_GIVE_UP)
    db = db_path(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await crashed_on_a_locked_database(pilot, app, db)
        assert "StorageError" in f"{type(app.crash).__name__}"
        await _refuses_every_change(app, db, "crashed: StorageError")
        status = await _ctl(tmp_path, "status")
        assert status.returncode == 0, status.stderr
        first = status.stdout.splitlines()[0]
        assert first.startswith("PAPER STOPPED (crashed: StorageError") and "was HALTED" in first, first
        resume = await _ctl(tmp_path, "resume", "--yes")
        assert resume.returncode == 1 and "the engine has stopped (crashed: StorageError" in resume.stderr, resume
    # Nothing the refused commands asked for was stored: the next start is not RUNNING by a resume.
    assert db_value(db, "SELECT reason FROM engine_state") != "re-armed"


async def test_a_console_engine_that_crashed_on_its_records_pages_at_once_not_when_the_console_is_quit(tmp_path):
    # The alerts' outbox is in the database that takes no more records: RECORDS_UNWRITABLE leaves past it as soon as
    # the engine stops, whether anyone quits the console or not, and once.
    hook = await Receiver().start()
    try:
        app = console(tmp_path, speed=4.0, alerts={"webhook_url": hook.url + "/hook"}, storage=QUICK_TO_GIVE_UP)
        db = db_path(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await crashed_on_a_locked_database(pilot, app, db)
            await until(pilot, lambda: _pages(hook), "the RECORDS_UNWRITABLE page, the console still open")
            [page] = _pages(hook)
            assert page["severity"] == "page" and "HALTED" in page["text"] and "ffe.db" in page["text"], page
            assert app.is_running
        assert len(_pages(hook)) == 1, [r.body for r in hook.delivered]  # not again on the way out
    finally:
        await hook.stop()


def _pages(hook: Receiver) -> list[dict]:
    return [r.body for r in hook.delivered if r.body.get("kind") == "RECORDS_UNWRITABLE"]
