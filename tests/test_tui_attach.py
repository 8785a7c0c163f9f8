"""`ffe attach`: the console of a headless engine running in another process, through its control socket.

The console shows the engine's state and events, its keys act on that engine, and quitting the console leaves the
engine running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
from typing import BinaryIO, Iterator

import pytest

from conftest import db_rows, db_value, ffe_env, ffe_in_process, make_settings, run_ffe, wait_until
from live_helpers import (AsyncFfe, fx, live_config, live_env, live_settings, processes,  # noqa: F401
                          wait_for, write_config)
from test_tui_helpers import SIZE_IDS, SIZES, notices, pause, running, said_since, screen_text, status_text, until

from ffe_engine.control import EARLIER, EARLIER_EVENTS, STREAM_END
from ffe_tui.app import ConsoleApp


def headless_engine(spawn_ffe, tmp_path, engine_env: dict[str, str] | None = None, **tables):
    """A headless engine in a process of its own on tmp_path's data directory (`engine_env` added to its
    environment), its control socket up; and the console's settings for the same directory (so the same socket),
    with `tables` over them."""
    engine = spawn_ffe(tmp_path, "run", "--headless", "--data-dir", "data", "--log-dir", "logs",
                       env=ffe_env(FFE_MARKET__SPEED="20", **(engine_env or {})), name="headless")
    settings = make_settings(tmp_path, **tables)
    wait_until(settings.socket_path.exists, what="the engine's control socket")
    return engine, settings


def stop_in_order(engine) -> None:
    """SIGTERM, as systemd stops it: the engine ends in order, exit 0."""
    engine.send(signal.SIGTERM)
    assert engine.wait() == 0, engine.stderr


async def detach(pilot, app) -> None:
    """Quit the attached console through its confirmation; the engine goes on."""
    await pilot.press("q")
    await until(pilot, lambda: "Detach" in screen_text(app), "the detach confirmation")
    await pilot.press("y")
    await until(pilot, lambda: not app.is_running, "the console to detach")


async def test_attach_shows_and_controls_a_headless_engine(tmp_path, spawn_ffe):
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    db = tmp_path / "data" / "ffe.db"

    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        assert f"attached pid {engine.pid}" in status_text(app), "which engine this console shows, at a glance"
        data_dir = (tmp_path / "data").resolve()
        assert any(f"attached to engine pid {engine.pid} on {data_dir}" in str(n.message) for n in app._notifications)
        bars = app.snap["bars"]
        await until(pilot, lambda: app.snap["bars"] > bars, "the engine's bars going on, seen from here")
        await pilot.press("p")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "PAUSED", "PAUSED stored")
        await until(pilot, lambda: "PAUSED" in status_text(app), "PAUSED on the status line")
        await pilot.press("K")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch confirmation")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "HALTED" in status_text(app), "HALTED on the status line")
        await detach(pilot, app)
    assert engine.alive(), "quitting an attached console must not stop the engine"
    status = run_ffe(tmp_path, "ctl", "status", "--data-dir", "data", "--log-dir", "logs")
    assert status.returncode == 0 and "HALTED" in status.stdout, status.stderr
    stop_in_order(engine)


async def test_attach_without_an_engine_says_so(tmp_path):
    proc = run_ffe(tmp_path, "attach", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 1
    assert proc.stderr == "ffe: error: no engine is running on data/ffe.sock\n" and proc.stdout == ""


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_a_normal_stop_of_the_engine_reads_as_a_clean_stop_in_the_attached_console(tmp_path, spawn_ffe, size):
    engine, settings = headless_engine(spawn_ffe, tmp_path)

    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        stop_in_order(engine)
        await until(pilot, lambda: "ENGINE STOPPED" in screen_text(app), "the stop on screen")
        text = screen_text(app)
        assert "crash" not in text.lower() and "stopped in order" in text, text
        assert app.crash is None
        await pilot.press("q")
        await until(pilot, lambda: "Detach" in screen_text(app) or not app.is_running, "the detach dialog")
        if app.is_running:
            assert "keeps running" not in screen_text(app) and "has stopped" in screen_text(app)
            await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to exit")
    assert app.return_code == 0
    assert "Traceback" not in engine.stderr and "ConnectionError" not in engine.stderr, engine.stderr


async def test_a_key_on_a_console_whose_engine_stopped_says_to_attach_again_to_the_one_started_since(tmp_path,
                                                                                                  spawn_ffe):
    """The engine stopped, another started on the same socket: a key pressed on the old console acts on nothing
    (it was attached to the stopped one) and says how to reach the new one, not that nothing runs."""
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        stop_in_order(engine)
        await until(pilot, lambda: "ENGINE STOPPED" in screen_text(app), "the stop on screen")
        again, _ = headless_engine(spawn_ffe, tmp_path)
        before = notices(app)
        await pilot.press("p")
        await until(pilot, lambda: said_since(app, before, "quit and `ffe attach` again"), "what to do said")
        assert not said_since(app, before, "nothing runs")
        assert db_value(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == "RUNNING"
        await pilot.press("q")
        await until(pilot, lambda: "Detach" in screen_text(app) or not app.is_running, "the detach dialog")
        if app.is_running:
            await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to exit")
    stop_in_order(again)


async def test_the_attached_log_keeps_following_after_ffe_ctl_flatten(tmp_path, spawn_ffe):
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    db = tmp_path / "data" / "ffe.db"

    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        pane = app.query_one("#log")
        await pilot.press("d")  # decisions on: a line per symbol per bar keeps coming after the flatten
        await until(pilot, lambda: len(pane.lines) > pane.size.height + 5, "a log longer than its pane")
        flatten = run_ffe(tmp_path, "ctl", "flatten", "--yes", "--data-dir", "data", "--log-dir", "logs")
        assert flatten.returncode == 0, flatten.stderr
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "FLATTEN, then HALTED" in screen_text(app), "the flatten report")
        seen = len(pane.lines)

        def newest_on_screen() -> bool:  # lines of one second look alike at 80 columns: the scroll position tells
            return len(pane.lines) >= seen + 10 and pane.scroll_y == pane.max_scroll_y > 0

        await until(pilot, newest_on_screen, "the newest line on screen, well after the flatten")
        await detach(pilot, app)
    stop_in_order(engine)


async def test_an_attached_console_whose_engine_stopped_answering_a_while_shows_it_as_it_is_after(tmp_path, spawn_ffe):
    # The engine frozen (SIGSTOP: a stuck host, a debugger) past the console's request timeout: the console says it
    # is not answering rather than showing the last picture as if it were live, and once the engine answers again
    # it shows the engine as it is, here HALTED by `ffe ctl halt` meanwhile, so that `p` offers to re-arm it.
    engine, settings = headless_engine(spawn_ffe, tmp_path, control={"request_timeout_s": 1.0})

    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        engine.send(signal.SIGSTOP)
        try:
            await until(pilot, lambda: "NOT ANSWERING" in status_text(app), "the silence on the status line")
        finally:
            engine.send(signal.SIGCONT)
        await until(pilot, lambda: "NOT ANSWERING" not in status_text(app), "the engine answering again")
        halted = run_ffe(tmp_path, "ctl", "halt", "--data-dir", "data", "--log-dir", "logs")
        assert halted.returncode == 0, halted.stderr
        await until(pilot, lambda: "HALTED" in status_text(app), "HALTED on the status line")
        await pilot.press("p")
        await until(pilot, lambda: "Re-arm the HALTED engine" in screen_text(app), "the re-arm confirmation")
        await pilot.press("n")
        await detach(pilot, app)
    stop_in_order(engine)


async def test_a_kill_switch_the_engine_does_not_answer_stays_said_on_the_banner_until_it_does(tmp_path, spawn_ffe):
    """K and y while the engine is frozen: the banner says at once (within the press's second) that the kill switch
    was sent and is not answered yet, then that it is not confirmed and how to halt the engine all the same, and
    keeps saying it until the engine answers. The screen said nothing for the whole request timeout, then a toast
    for five seconds, then nothing, RUNNING still on the status line: the operator could not tell it was pressed."""
    engine, settings = headless_engine(spawn_ffe, tmp_path, control={"request_timeout_s": 3.0})
    db = tmp_path / "data" / "ffe.db"
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        engine.send(signal.SIGSTOP)
        try:
            await pilot.press("K")
            await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch confirmation")
            await pilot.press("y")
            await until(pilot, lambda: "KILL SWITCH sent by operator: not answered yet" in screen_text(app),
                        "the banner saying the kill switch is on its way", timeout=2.5)
            await until(pilot, lambda: "KILL SWITCH NOT CONFIRMED" in screen_text(app),
                        "the banner saying it is not confirmed", timeout=10)
            assert (f"KILL SWITCH NOT CONFIRMED: no answer within 3s: `kill -USR1 {engine.pid}` halts it all the "
                    "same") in screen_text(app), screen_text(app)
            await pilot.pause(6.0)  # past a toast's life: the banner stays
            assert "KILL SWITCH NOT CONFIRMED" in screen_text(app), screen_text(app)
        finally:
            engine.send(signal.SIGCONT)
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "KILL SWITCH: HALTED by operator" in screen_text(app), "the halt's own banner")
        assert "NOT CONFIRMED" not in screen_text(app)
        await detach(pilot, app)
    stop_in_order(engine)


async def test_a_console_attaching_to_an_engine_busy_past_the_request_timeout_asks_again(tmp_path, spawn_ffe):
    # An engine that does not answer the console's first question in time (busy, or a loaded host) is asked again:
    # one late answer does not turn into "no engine is running" while the engine runs.
    engine, settings = headless_engine(spawn_ffe, tmp_path, control={"request_timeout_s": 2.0})
    engine.send(signal.SIGSTOP)
    try:
        # Not answering at all: the console ends with one line saying so (exit 1, as `ffe attach`), not "no engine".
        quick = ConsoleApp(make_settings(tmp_path, control={"request_timeout_s": 0.3}), attach=True)
        async with quick.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: quick.start_error, "the console giving up")
        assert quick.return_code == 1
        pid = engine.pid
        assert quick.start_error == (f"no answer from the engine on {settings.socket_path} (pid {pid}) within 0.3s, "
                                     f"asked 3 times (stopped or busy?); `kill -USR1 {pid}` halts it as soon as it "
                                     f"runs (`kill -CONT {pid}` if it was stopped with SIGSTOP)")

        app = ConsoleApp(settings, attach=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(2.5)  # past the first question's timeout
            engine.send(signal.SIGCONT)
            await running(pilot)
            await detach(pilot, app)
    finally:
        engine.send(signal.SIGCONT)
    stop_in_order(engine)


async def test_an_attached_console_s_log_begins_with_what_the_engine_did_before_it(tmp_path, spawn_ffe):
    # The operator attaching after something happened sees it in the log, as the console that runs the engine does;
    # but a kill switch since re-armed is a line there, not a banner, and nothing old pops up as new.
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    # This module's first halt ran as a real `ffe ctl` process: this one runs in the test process, in a thread (the
    # event loop has nothing else to run yet; `ffe ctl` runs its own).
    halted = await asyncio.to_thread(ffe_in_process, tmp_path, "ctl", "halt", "--data-dir", "data", "--log-dir", "logs")
    assert halted.returncode == 0, halted.stderr
    for action in (("resume", "--yes"), ("pause",)):
        done = run_ffe(tmp_path, "ctl", *action, "--data-dir", "data", "--log-dir", "logs")
        assert done.returncode == 0, done.stderr

    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snap is not None and "PAUSED" in status_text(app), "PAUSED, attached")
        pane = app.panes["log"]
        await until(pilot, lambda: any(line.startswith(tuple("0123456789")) and "kill_switch" in line
                                       for line in pane.lines), "the kill switch from before, in the log")
        earlier = [line for line in pane.lines if "engine_state" in line and " -> " in line]
        assert [line.split(" -> ")[1].split(":")[0] for line in earlier][-3:] == ["HALTED", "RUNNING", "PAUSED"]
        assert not app.panes["banner"].has_class("-shown"), "a kill switch since re-armed is not a banner"
        await detach(pilot, app)
    stop_in_order(engine)


@contextlib.contextmanager
def subscribed(settings, timeout: float = 30) -> Iterator[tuple[list[dict], BinaryIO]]:
    """The engine's event stream, as `ffe attach` asks for it: its first two lines (the snapshot, then how many
    earlier events follow) and the reader of the rest."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(settings.socket_path))
        s.settimeout(timeout)
        s.sendall(b'{"cmd": "subscribe"}\n')
        lines = s.makefile("rb")
        yield [json.loads(lines.readline()) for _ in range(2)], lines


def test_the_event_stream_joins_the_events_before_it_to_those_after_it_without_a_gap_or_a_repeat(tmp_path, spawn_ffe):
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    wait_until(lambda: db_value(tmp_path / "data" / "ffe.db", "SELECT COUNT(*) FROM decisions") >= 20,
               what="some decisions before subscribing")
    with subscribed(settings) as (head, lines):
        assert [rec["event"] for rec in head] == ["snapshot", EARLIER]
        earlier = [json.loads(lines.readline()) for _ in range(head[1]["count"])]
        later = []
        while sum(rec["audit"] for rec in later) < 20:
            later.append(json.loads(lines.readline()))
    assert 20 <= len(earlier) <= EARLIER_EVENTS and not any(rec["event"] == "bar" for rec in earlier)
    assert any(rec["event"] == "bar" for rec in later), "a subscriber gets the bars from now on"
    seqs = [rec["seq"] for rec in earlier + later if rec["audit"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "audited events, each once and in order"
    stop_in_order(engine)


def test_the_event_stream_carries_only_what_the_database_has_committed(tmp_path, spawn_ffe):
    """A bar's events are published, then committed with the bar's records. Here another connection takes the
    database's write lock, so the engine cannot commit the bar it is on and stops on its records: what an attached
    console was sent must be what happened, so every audited event the stream carried is in the database (as a
    kill before the commit would leave it, the engine's memory is no record)."""
    # Each write the engine makes while the lock is held waits for it (storage.busy_timeout_s), 5 s by default.
    engine, settings = headless_engine(spawn_ffe, tmp_path, engine_env={"FFE_STORAGE__BUSY_TIMEOUT_S": "0.3"})
    db = tmp_path / "data" / "ffe.db"
    wait_until(lambda: db_value(db, "SELECT COUNT(*) FROM decisions") >= 5, what="some decisions before subscribing")
    streamed: list[dict] = []
    with subscribed(settings, timeout=60) as (head, lines):
        streamed += [json.loads(lines.readline()) for _ in range(head[1]["count"])]
        while sum(rec["audit"] for rec in streamed) < head[1]["count"] + 3:  # a few as they come
            streamed.append(json.loads(lines.readline()))
        holder = sqlite3.connect(db, isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN IMMEDIATE")
            while (line := lines.readline()) and json.loads(line)["event"] != STREAM_END:
                streamed.append(json.loads(line))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert engine.wait() == 1 and "cannot write (the database is locked" in engine.stderr, engine.stderr[-2000:]
    committed = {seq for (seq,) in db_rows(db, "SELECT seq FROM events")}
    audited = [rec for rec in streamed if rec.get("audit")]
    assert len(audited) > head[1]["count"], "events came after the subscription"
    never = [(rec["seq"], rec["event"]) for rec in audited if rec["seq"] not in committed]
    assert not never, f"streamed, never committed: {never[:10]}"


async def test_the_attached_console_s_keys_record_the_console_s_reasons(tmp_path, spawn_ffe):
    # `p` and the kill switch from an attached console are the operator's pause and kill switch, as in the console
    # that runs the engine itself: recorded so, not as `ffe ctl` commands.
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    db = tmp_path / "data" / "ffe.db"

    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await pilot.press("p")
        await until(pilot, lambda: db_value(db, "SELECT reason FROM engine_state") == "operator pause",
                    "the pause stored with the console's reason")
        await pilot.press("K")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch confirmation")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED",
                    "HALTED stored")
        assert db_value(db, "SELECT reason FROM engine_state") == "kill switch"
        await detach(pilot, app)
    stop_in_order(engine)


async def test_an_attached_console_shows_the_lost_connection_over_an_earlier_flatten_once_the_engine_is_killed(
        tmp_path, spawn_ffe):
    # A flatten seen by the console, the engine re-armed, then killed: the banner says the console cannot reach the
    # engine, not the flatten of before (test_attach_lost_stream.py: a lost connection is no stop seen).
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        for action in (("flatten", "--yes"), ("resume", "--yes")):
            done = run_ffe(tmp_path, "ctl", *action, "--data-dir", "data", "--log-dir", "logs")
            assert done.returncode == 0, done.stderr
        await until(pilot, lambda: "RUNNING" in status_text(app) and app.view.kill is not None,
                    "the flatten seen, and the engine RUNNING again")
        engine.send(signal.SIGKILL)
        engine.wait()
        banner = app.panes["banner"]
        await until(pilot, lambda: "cannot reach" in str(banner.render()), "the lost connection seen")
        await pilot.pause(0.5)  # a few redraws after it
        assert str(banner.render()).startswith("CONNECTION LOST"), str(banner.render())
        assert "FLATTEN" not in screen_text(app).split("\n")[2], screen_text(app)
        await pilot.press("q")
        await until(pilot, lambda: "Detach" in screen_text(app) or not app.is_running, "the detach dialog")
        if app.is_running:
            await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to exit")


async def test_an_attached_console_keeps_its_screen_after_a_stop_in_order_and_q_closes_it(tmp_path, spawn_ffe):
    # The operator sees that the engine stopped, and how it was left, until they close the console: one key, as the
    # banner says, since nothing runs there any more; exit 0.
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        stop_in_order(engine)
        await until(pilot, lambda: "ENGINE STOPPED" in screen_text(app), "the stop on screen")
        await pilot.pause(0.5)
        assert app.is_running and "q closes this console" in screen_text(app), screen_text(app)
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running or "Detach" in screen_text(app), "the console to close")
        assert not app.is_running, screen_text(app)
    assert app.return_code == 0


async def test_an_attached_console_follows_the_engine_s_state_while_its_control_socket_is_full(tmp_path, spawn_ffe):
    """Every place on the control socket held (idle clients): the console's status requests are answered "too many
    control connections", but its event stream is open. A halt meanwhile (SIGUSR1) shows as HALTED from the stream,
    and an engine that answers, even "too many", is said to be busy, not to be not answering."""
    engine, settings = headless_engine(spawn_ffe, tmp_path, engine_env={"FFE_CONTROL__MAX_CONNECTIONS": "3",
                                                                         "FFE_CONTROL__IDLE_TIMEOUT_S": "120"})
    from ffe_tui.app import NOT_ANSWERING_S
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        hogs = []
        try:
            for _ in range(6):  # the places, and the one kept for a halt
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(settings.socket_path))
                hogs.append(s)
            await pilot.pause(1.0)
            engine.send(signal.SIGUSR1)
            await until(pilot, lambda: db_value(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state")
                        == "HALTED", "HALTED stored")
            await until(pilot, lambda: "HALTED" in status_text(app), "HALTED on the status line")
            await pilot.pause(NOT_ANSWERING_S + 1.5)
            assert "NOT ANSWERING" not in status_text(app) and "CONTROL SOCKET BUSY" in status_text(app), \
                status_text(app)
            assert "HALTED" in status_text(app)
        finally:
            for s in hogs:
                s.close()
        await detach(pilot, app)
    stop_in_order(engine)


def ctl_status(tmp_path) -> dict:
    """`ffe ctl status --json` of the engine on tmp_path's data directory."""
    proc = run_ffe(tmp_path, "ctl", "status", "--json", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def test_a_console_whose_engine_stopped_acts_on_no_engine_started_after_it(tmp_path, spawn_ffe):
    # The re-arm asked about engine 1's halt, answered after engine 1 stopped and engine 2 started on the same socket
    # (HALTED, and halted again by SIGUSR1 until its state serial is the one the dialog was asked with: the serials
    # restart with each run): nothing is done to engine 2, whose halts stand. Nor does any key act on it.
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    db = tmp_path / "data" / "ffe.db"
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        assert run_ffe(tmp_path, "ctl", "halt", "--data-dir", "data", "--log-dir", "logs").returncode == 0
        await until(pilot, lambda: "HALTED" in status_text(app), "HALTED on the status line")
        serial = ctl_status(tmp_path)["result"]["state_serial"]
        await pilot.pause(1.0)  # the console's snapshot has the halt's serial: the dialog is asked about that halt
        await pilot.press("p")
        await until(pilot, lambda: "Re-arm the HALTED engine" in screen_text(app), "the re-arm confirmation")
        stop_in_order(engine)
        await until(pilot, lambda: app.engine_stopped, "the console seeing its engine stop")
        second, _ = headless_engine(spawn_ffe, tmp_path)
        wait_until(lambda: run_ffe(tmp_path, "ctl", "status", "--data-dir", "data", "--log-dir", "logs")
                   .returncode == 0, what="engine 2 answering")
        while ctl_status(tmp_path)["result"]["state_serial"] < serial:
            before = ctl_status(tmp_path)["result"]["state_serial"]
            second.send(signal.SIGUSR1)
            wait_until(lambda: ctl_status(tmp_path)["result"]["state_serial"] > before, what="engine 2 halted again")
        status = ctl_status(tmp_path)
        assert status["result"]["state"] == "HALTED" and status["result"]["state_serial"] == serial
        await pilot.press("y")
        await pilot.pause(2.0)
        assert db_value(db, "SELECT state FROM engine_state") == "HALTED", "engine 2 re-armed by engine 1's console"
        assert any("has stopped" in str(n.message) for n in app._notifications)
        assert ctl_status(tmp_path)["result"]["state"] == "HALTED"
        for key in ("p", "K", "F", "m", "a"):  # nothing opens a dialog nor sends a command to engine 2
            await pilot.press(key)
            await pilot.pause(0.3)
            assert "Re-arm" not in screen_text(app) and "KILL SWITCH" not in screen_text(app), (key, screen_text(app))
            if "FLATTEN" in screen_text(app) or "Automatic approval" in screen_text(app):
                await pilot.press("y")
        await pilot.pause(1.0)
        assert ctl_status(tmp_path)["result"]["state_serial"] == serial, "a key of the old console acted on engine 2"
        assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running or "Detach" in screen_text(app), "the console to close")
        if app.is_running:
            await pilot.press("y")
    stop_in_order(second)


async def test_a_client_attached_to_one_engine_is_refused_by_the_next_on_the_same_socket(tmp_path, spawn_ffe):
    # Whatever the console does, its requests name the engine it attached to: a newer engine on the socket refuses
    # them (nothing done), while `ffe ctl`, asked once, acts on whichever engine runs.
    from ffe_engine.events import EventBus
    from ffe_engine.clock import WallClock
    from ffe_engine.errors import ControlError
    from ffe_engine.remote import RemoteEngine

    engine, settings = headless_engine(spawn_ffe, tmp_path)
    remote = RemoteEngine(settings.socket_path, EventBus(WallClock()), data_dir=settings.data_dir, timeout=10)
    await remote.connect()
    first = remote.identity["instance"]
    assert first and (await remote.pause())
    stop_in_order(engine)
    second, _ = headless_engine(spawn_ffe, tmp_path)
    wait_until(lambda: run_ffe(tmp_path, "ctl", "status", "--data-dir", "data", "--log-dir", "logs")
               .returncode == 0, what="engine 2 answering")
    with pytest.raises(ControlError, match=f"not {first}"):
        await remote.resume(confirm=True)
    with pytest.raises(ControlError, match=f"not {first}"):
        await remote.halt()
    assert ctl_status(tmp_path)["result"]["state"] == "PAUSED", "engine 2 as engine 1 was left"
    resumed = run_ffe(tmp_path, "ctl", "resume", "--data-dir", "data", "--log-dir", "logs")
    assert resumed.returncode == 0, resumed.stderr
    remote.request_stop()
    stop_in_order(second)


async def test_a_re_arm_asked_right_after_a_halt_re_arms_that_halt(tmp_path, spawn_ffe):
    # p pressed as soon as the status line says HALTED (from the event stream, before the next status request):
    # the dialog is about that halt, and y re-arms it; nobody acted after the dialog opened.
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    db = tmp_path / "data" / "ffe.db"
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        for _ in range(3):
            assert run_ffe(tmp_path, "ctl", "halt", "--data-dir", "data", "--log-dir", "logs").returncode == 0
            await until(pilot, lambda: "HALTED" in status_text(app), "HALTED on the status line")
            await pilot.press("p")
            await until(pilot, lambda: "Re-arm the HALTED engine" in screen_text(app), "the re-arm confirmation")
            await pilot.press("y")
            await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "RUNNING", "re-armed",
                        timeout=5)
            await until(pilot, lambda: "RUNNING" in status_text(app), "RUNNING on the status line")
        assert not any("state changed" in str(n.message) for n in app._notifications)
        await detach(pilot, app)
    stop_in_order(engine)


async def test_a_frozen_engine_on_a_full_socket_reads_as_not_answering_not_as_busy(tmp_path, spawn_ffe):
    # "busy" is said of an engine that refused lately (it answers); one that went silent since is not answering,
    # after the same NOT_ANSWERING_S, not after the whole request timeout.
    engine, settings = headless_engine(spawn_ffe, tmp_path, control={"request_timeout_s": 20.0},
                                       engine_env={"FFE_CONTROL__MAX_CONNECTIONS": "3",
                                                   "FFE_CONTROL__IDLE_TIMEOUT_S": "120"})
    from ffe_tui.app import NOT_ANSWERING_S
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        hogs = []
        try:
            for _ in range(6):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(settings.socket_path))
                hogs.append(s)
            await until(pilot, lambda: "CONTROL SOCKET BUSY" in status_text(app), "busy on the status line")
            engine.send(signal.SIGSTOP)
            try:
                await until(pilot, lambda: "NOT ANSWERING" in status_text(app), "the silence on the status line",
                            timeout=NOT_ANSWERING_S + 2.0)
            finally:
                engine.send(signal.SIGCONT)
        finally:
            for s in hogs:
                s.close()
        await detach(pilot, app)
    stop_in_order(engine)


async def test_attaching_to_a_socket_that_drops_its_connections_says_it_is_busy_not_gone(tmp_path):
    # A connection accepted, then closed before an answer (the place kept for a halt given to a newer connection)
    # is an engine that is there: `ffe attach` says the socket is busy, never that no engine runs.
    settings = make_settings(tmp_path)
    settings.socket_path.parent.mkdir(parents=True, exist_ok=True)

    async def drop(reader, writer) -> None:
        writer.transport.abort()

    server = await asyncio.start_unix_server(drop, path=str(settings.socket_path))
    try:
        app = ConsoleApp(make_settings(tmp_path, control={"request_timeout_s": 1.0}), attach=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.start_error, "the console giving up")
    finally:
        server.close()
    assert app.return_code == 1
    assert "no engine is running" not in app.start_error and "busy" in app.start_error, app.start_error
    assert "try again" in app.start_error


async def test_a_re_arm_asked_before_the_console_has_read_the_halt_s_state_asks_the_engine_first(tmp_path, spawn_ffe):
    # HALTED from the event stream while every place on the socket is taken: the console's snapshot (its state
    # serial) is from before the halt. p asks the engine for its state before the dialog opens (refused here: the
    # socket is full, said so, no dialog with a stale serial); once the socket has room, p asks about that halt and
    # y re-arms it.
    engine, settings = headless_engine(spawn_ffe, tmp_path, engine_env={"FFE_CONTROL__MAX_CONNECTIONS": "3",
                                                                         "FFE_CONTROL__IDLE_TIMEOUT_S": "120"})
    db = tmp_path / "data" / "ffe.db"
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        hogs = []
        try:
            for _ in range(6):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(settings.socket_path))
                hogs.append(s)
            await pilot.pause(1.0)
            engine.send(signal.SIGUSR1)
            await until(pilot, lambda: "HALTED" in status_text(app), "HALTED on the status line")
            await pilot.press("p")
            await until(pilot, lambda: any("too many control connections" in str(n.message)
                                           for n in app._notifications), "the busy socket said")
            assert "Re-arm the HALTED engine" not in screen_text(app)
        finally:
            for s in hogs:
                s.close()
        await pilot.pause(1.0)
        await pilot.press("p")
        await until(pilot, lambda: "Re-arm the HALTED engine" in screen_text(app), "the re-arm confirmation")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "RUNNING", "re-armed")
        assert not any("state changed" in str(n.message) for n in app._notifications)
        await detach(pilot, app)
    stop_in_order(engine)


async def test_the_attached_console_selects_no_trade_that_came_after_the_selected_one_ended(tmp_path, spawn_ffe):
    """The attached console's approvals pane is the in-process one, fed through the socket: the operator rejects the
    one trade waiting (one symbol), the pane is empty, the strategy's next trade comes under the cursor; `a` approves
    nothing and says so, and the trade still waits in the engine."""
    engine, settings = headless_engine(spawn_ffe, tmp_path, engine_env={
        "FFE_ENGINE__APPROVAL": "manual", "FFE_ENGINE__APPROVAL_TTL_S": "600", "FFE_ENGINE__SYMBOLS": "BTC/USDT"})
    db = tmp_path / "data" / "ffe.db"

    def status(aid: str) -> str | None:
        return db_value(db, "SELECT status FROM approvals WHERE approval_id = ?", (aid,))

    app = ConsoleApp(settings, attach=True)
    # Wide: the approvals pane on screen whenever the console attaches (at 80x24 it comes forward for a trade that
    # comes while attached; `a` first brings it forward for one already waiting).
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        table = app.query_one("#approvals")
        await until(pilot, lambda: table.row_count == 1, "a trade waiting for approval", timeout=60)
        table.focus()
        await pilot.press("down", "up")
        chosen = table.selected()
        assert chosen is not None
        await pause(pilot, "PAUSED")  # no new trade meanwhile (entries refused): the pane empties for certain
        await pilot.press("r")
        await until(pilot, lambda: status(chosen) == "rejected", "the chosen trade rejected")
        await until(pilot, lambda: table.row_count == 0, "the pane empty")
        await pause(pilot, "RUNNING")
        await until(pilot, lambda: table.row_count == 1, "the strategy's next trade waiting", timeout=60)
        (after,) = [k.value for k in table.rows]
        said = notices(app)
        await pilot.press("a")
        await until(pilot, lambda: said_since(app, said, "no longer waiting"),
                    "the console says nothing is selected", timeout=10)
        assert status(after) == "pending", "a trade the operator never chose was approved"
        await detach(pilot, app)
    stop_in_order(engine)


async def test_an_attached_console_of_a_stopped_live_engine_says_the_state_it_starts_in_again(
        tmp_path, fx, processes):  # noqa: F811
    """A live engine left RUNNING starts PAUSED again (engine.live_start_paused): its attached console, once the
    engine has stopped, says that, not that it was RUNNING (the state it would start in again)."""
    write_config(tmp_path, live_config(fx, engine={"warmup_bars": 40, "live_start_paused": True}))
    engine = await AsyncFfe.start(tmp_path, "run", "--headless", "--live", env=live_env(fx), name="engine")
    processes.append(engine)
    settings = live_settings(tmp_path, fx)
    await wait_for(settings.socket_path.exists, timeout=60, what="the engine's control socket")
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "PAUSED" in status_text(app), "the live start PAUSED")
        await pilot.press("p")
        await until(pilot, lambda: "RUNNING" in status_text(app), "RUNNING after the resume")
        assert await engine.stop() == 0, engine.stderr
        await until(pilot, lambda: "ENGINE STOPPED" in screen_text(app), "the stop on screen")
        line1 = status_text(app).split("\n")[0]
        assert "STOPPED" in line1 and "next start PAUSED" in line1 and "RUNNING" not in line1, line1
        await pilot.press("q")
