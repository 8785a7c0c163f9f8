"""`ffe attach` when its event stream ends without the engine's `stream_end` line: a lost connection, not a stop.

An engine disconnects a console that falls behind (control.stream_buffer_kb of events waiting for it), and runs on;
a console whose engine was killed sees its stream end the same way. Neither is an engine the console saw stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from conftest import make_settings, run_ffe
from test_tui_attach import detach, headless_engine, stop_in_order
from test_tui_helpers import notices, running, said_since, screen_text, status_text, until

from ffe_engine.control import request
from ffe_tui.app import ConsoleApp, console_ending

DROPPED = "event stream subscribers disconnected: not reading"


def flood_until_dropped(settings, engine, pairs: int = 5000) -> None:
    """Pause and resume the engine over its socket (two state changes each) until it says it disconnected a
    subscriber that did not read, as an operator's script might; in a thread of its own with its own loop."""
    async def flood() -> None:
        for i in range(pairs):
            await request(settings.socket_path, "pause", {"reason": f"flood {i}"}, timeout=30)
            await request(settings.socket_path, "resume", {}, timeout=30)
            if i % 25 == 0 and DROPPED in engine.stderr:
                return
        raise AssertionError("the engine never disconnected the console that did not read")

    asyncio.run(flood())


def console_held(settings, engine) -> None:
    """The console's process held still while the engine floods it (a frozen SSH link, a laptop asleep): its event
    loop runs nothing, so it reads nothing, until the engine has disconnected it."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            flood_until_dropped(settings, engine)
        except BaseException as exc:  # said in the test's own thread
            failed.append(exc)

    flooder = threading.Thread(target=run)
    flooder.start()
    flooder.join()  # blocks the console's event loop: nothing is read meanwhile
    if failed:
        raise failed[0]


async def test_a_console_that_fell_behind_is_told_so_and_subscribes_again_while_the_engine_runs_on(tmp_path,
                                                                                                  spawn_ffe):
    engine, settings = headless_engine(spawn_ffe, tmp_path, engine_env={"FFE_CONTROL__STREAM_BUFFER_KB": "16"})
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        instance = app.engine.identity["instance"]
        before = notices(app)
        console_held(settings, engine)
        await until(pilot, lambda: said_since(app, before, "fell behind"), "the console saying it fell behind")
        text = screen_text(app)
        for wrong in ("CRASH", "STOPPED", "stopped"):
            assert wrong not in text, text
        assert app.crash is None and not app.engine_stopped
        assert app.engine.identity["instance"] == instance, "subscribed again to the same engine"
        paused = run_ffe(tmp_path, "ctl", "pause", "--data-dir", "data", "--log-dir", "logs")
        assert paused.returncode == 0, paused.stderr
        await until(pilot, lambda: "PAUSED" in status_text(app), "the engine's state followed again")
        await pilot.press("q")
        await until(pilot, lambda: "Detach" in screen_text(app), "the detach confirmation")
        assert "keeps running" in screen_text(app), screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to detach")
    assert app.return_code == 0
    assert engine.alive()
    stop_in_order(engine)


class CuttingProxy:
    """A socket in front of the engine's that passes every connection through, but ends the first event stream in
    the middle of a line once told to (as an engine that disconnects a subscriber mid-write leaves it)."""

    def __init__(self, engine_socket: Path, path: Path) -> None:
        self.engine_socket = engine_socket
        self.path = path
        self.cut = asyncio.Event()
        self.streams = 0
        self.server: asyncio.AbstractServer | None = None
        self.served: set[asyncio.Task] = set()

    async def __aenter__(self) -> "CuttingProxy":
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.served:
            task.cancel()
        await asyncio.gather(*self.served, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.served.add(asyncio.current_task())
        engine_r, engine_w = await asyncio.open_unix_connection(str(self.engine_socket), limit=2**24)
        first = await client_r.readline()
        engine_w.write(first)
        stream = b'"subscribe"' in first
        if stream:
            self.streams += 1
        cutting = stream and self.streams == 1
        upward = asyncio.ensure_future(self._pump(client_r, engine_w))
        try:
            while data := await engine_r.read(65536):
                if cutting and self.cut.is_set() and b"\n" in data[:-1]:
                    end = data.index(b"\n") + 1
                    client_w.write(data[:end + (len(data) - end) // 2])  # a line and half of the next
                    await client_w.drain()
                    client_w.transport.abort()
                    return
                client_w.write(data)
                await client_w.drain()
        except ConnectionError:
            pass
        finally:
            upward.cancel()
            engine_w.close()
            client_w.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


async def test_a_stream_cut_in_the_middle_of_a_line_is_a_lost_connection_not_a_traceback(tmp_path, spawn_ffe):
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    short = Path(tempfile.mkdtemp(prefix="ffe-proxy-"))  # a socket's path is short (sun_path)
    try:
        async with CuttingProxy(settings.socket_path, short / "p.sock") as proxy:
            app = ConsoleApp(make_settings(tmp_path, control={"socket": str(proxy.path)}), attach=True)
            async with app.run_test(size=(120, 40)) as pilot:
                await running(pilot)
                before = notices(app)
                proxy.cut.set()
                paused = run_ffe(tmp_path, "ctl", "pause", "--data-dir", "data", "--log-dir", "logs")
                assert paused.returncode == 0, paused.stderr
                await until(pilot, lambda: said_since(app, before, "subscribed again"),
                            "the console subscribed again")
                assert proxy.streams == 2
                text = screen_text(app)
                assert "JSONDecodeError" not in text and "CRASH" not in text and "STOPPED" not in text, text
                assert app.crash is None
                await until(pilot, lambda: "PAUSED" in status_text(app), "the engine's state, followed again")
                await detach(pilot, app)
            assert app.return_code == 0
    finally:
        shutil.rmtree(short, ignore_errors=True)
    stop_in_order(engine)


async def killed_under(pilot, app, engine) -> None:
    """The engine the console is attached to killed (SIGKILL: no `stream_end` line), until the console says it
    cannot reach it."""
    engine.send(signal.SIGKILL)
    engine.wait()
    await until(pilot, lambda: "cannot reach" in screen_text(app), "the lost connection on screen")


async def test_a_console_whose_engine_was_killed_says_it_cannot_reach_it_not_that_it_stopped(tmp_path, spawn_ffe):
    """No `stream_end` line: the console has not seen the engine stop. It asks the engine, which does not answer,
    and says so: it cannot reach it, and the engine may still run (a frozen engine and a dead one look the same
    from here)."""
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await killed_under(pilot, app, engine)
        await pilot.pause(0.5)
        text = screen_text(app)
        for wrong in ("CRASH", "STOPPED", "has stopped", "is stopped"):
            assert wrong not in text, text
        assert "CONNECTION LOST" in status_text(app), status_text(app)
        assert app.crash is None and not app.engine_stopped
        await pilot.press("q")
        await until(pilot, lambda: "Detach" in screen_text(app), "the detach confirmation")
        text = screen_text(app)
        assert "cannot reach" in text and "stopped" not in text and "keeps running" not in text, text
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to detach")
    assert app.return_code == 1


async def test_a_console_whose_engine_was_killed_and_another_started_says_its_own_no_longer_runs(tmp_path,
                                                                                                spawn_ffe):
    """The killed engine's socket taken by a new run: the console's engine has stopped (another run holds its
    socket); the console says so, names the new one and acts on it in nothing."""
    engine, settings = headless_engine(spawn_ffe, tmp_path, control={"request_timeout_s": 2.0})
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await killed_under(pilot, app, engine)
        again, _ = headless_engine(spawn_ffe, tmp_path)
        await until(pilot, lambda: "no longer runs" in screen_text(app), "the attached engine said gone")
        assert f"engine pid {again.pid}" in screen_text(app), screen_text(app)
        assert "CRASH" not in screen_text(app)
        await pilot.press("p")
        await pilot.pause(0.5)
        status = run_ffe(tmp_path, "ctl", "status", "--data-dir", "data", "--log-dir", "logs")
        assert "RUNNING" in status.stdout, status.stdout + status.stderr
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, "the console to close")
    stop_in_order(again)
    ending = console_ending(app)
    assert ending is not None and ending.exit_code == 1, ending
    said = str(ending)
    assert "no longer runs" in said and f"engine pid {again.pid}" in said, said
    assert "cannot reach" not in said and "may still be running" not in said, said
