"""The control socket removed under a running engine (a cleaner of /tmp or /run, a stray `rm`): without it no `ffe
ctl` (its kill switch included) and no attached console reaches the engine, and `ffe ctl status` would take the
running engine for one still starting. The engine makes it again where nothing is, within seconds, and says so.

Real parts: a headless `ffe run` on the simulated market, `ffe ctl` processes, the files of its data directory."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess

import forked_ffe
from conftest import db_rows, ffe_cmd, ffe_env, run_ffe, wait_until


def test_a_removed_control_socket_is_made_again_and_answers(tmp_path, spawn_ffe):
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    sock = tmp_path / "data" / "ffe.sock"
    sock.unlink()
    # Sent at once, while nothing is at the path: the kill switch waits for the socket made again, not taken for an
    # engine gone or still starting (the console's goes the same way).
    halt = run_ffe(tmp_path, "ctl", "halt")
    assert halt.returncode == 0, halt.stdout + halt.stderr
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("HALTED",)]
    assert "control socket was removed: made again" in engine.stderr, engine.stderr[-3000:]
    assert run_ffe(tmp_path, "ctl", "status").returncode == 0
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]
    assert not sock.exists()


def test_a_kill_switch_sent_just_after_the_socket_and_its_lock_were_removed_waits_for_them(tmp_path, spawn_ffe):
    """The socket and its lock file beside it removed at once (a cleaner of the directory), and `ffe ctl halt` sent
    at once: it waits for the engine to make them again and halts it, not refused as an engine still starting."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    sock = tmp_path / "data" / "ffe.sock"
    sock.unlink()
    sock.with_name("ffe.sock.lock").unlink()
    halt = run_ffe(tmp_path, "ctl", "halt")
    assert halt.returncode == 0, halt.stdout + halt.stderr
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("HALTED",)]
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]


def test_a_path_another_process_took_is_left_to_it(tmp_path, spawn_ffe):
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    sock = tmp_path / "data" / "ffe.sock"
    sock.unlink()
    sock.write_text("someone else's")
    wait_until(lambda: "control socket path holds another file: left to it" in engine.stderr, timeout=30,
               what="the engine's word on it")
    # `ffe ctl` does not take the running engine for one still starting: it says what holds the path, and what to do.
    for args, code in ((("status",), 1), (("halt",), 1), (("health",), 2)):
        proc = run_ffe(tmp_path, "ctl", *args)
        said = proc.stdout + proc.stderr
        assert proc.returncode == code, said
        assert "is starting" not in said and "is not its control socket (a file is there)" in said, said
        assert "remove data/ffe.sock" in said and f"kill -USR1 {engine.proc.pid}" in said, said
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]
    assert sock.read_text() == "someone else's"


def test_a_socket_whose_directory_was_removed_is_made_again_with_it(tmp_path, spawn_ffe):
    """`control.socket` in a directory of its own (under /run, /tmp), removed whole with its lock file by a cleaner:
    the directory, the lock and the socket are made again, and the kill switch reaches the engine."""
    run_dir = tmp_path / "run"
    env = ffe_env(FFE_MARKET__SPEED="20", FFE_CONTROL__SOCKET=str(run_dir / "ffe.sock"))
    engine = spawn_ffe(tmp_path, "run", "--headless", env=env)
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    shutil.rmtree(run_dir)
    wait_until(lambda: (run_dir / "ffe.sock").exists(), timeout=30, what="the socket made again")
    assert (run_dir / "ffe.sock.lock").exists()
    halt = run_ffe(tmp_path, "ctl", "halt", env=env)
    assert halt.returncode == 0, halt.stdout + halt.stderr
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("HALTED",)]
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]


def test_a_kill_switch_waits_for_a_socket_made_again_by_an_engine_slow_to_get_to_it(tmp_path, spawn_ffe):
    """The socket removed while the engine gets no CPU for seconds (a loaded host, a swapping one; here frozen, then
    thawed): `ffe ctl halt` waits, within its own timeout, for the engine to make the socket again and halts it; it
    does not give up after the few seconds a quick engine takes, as if that engine were still starting."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    sock = tmp_path / "data" / "ffe.sock"
    engine.send(signal.SIGSTOP)
    try:
        sock.unlink()
        halt = forked_ffe.Popen(ffe_cmd("ctl", "halt", "--timeout", "30"), cwd=tmp_path, env=ffe_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
        try:
            halt.wait(5)  # longer than the engine takes to make the socket again when it runs
        except subprocess.TimeoutExpired:
            pass
    finally:
        engine.send(signal.SIGCONT)
    said, _ = halt.communicate(timeout=60)
    assert halt.returncode == 0 and "is starting" not in said, said
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("HALTED",)]
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]


def test_health_of_an_engine_stopped_with_sigstop_names_it_and_how_to_halt_it(tmp_path, spawn_ffe):
    """SIGSTOP (a debugger, a `kill -STOP` by mistake): the engine takes the connection and never answers. `ffe ctl
    health` says DOWN (exit 2), naming the engine's pid and how to halt it, as every `ffe ctl` does."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    engine.send(signal.SIGSTOP)
    try:
        health = run_ffe(tmp_path, "ctl", "health", "--timeout", "1")
    finally:
        engine.send(signal.SIGCONT)
    assert health.returncode == 2, health.stdout + health.stderr
    pid = engine.proc.pid
    assert health.stdout.startswith("DOWN  no answer from the engine") and f"kill -USR1 {pid}" in health.stdout, \
        health.stdout
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]


async def test_a_lock_file_made_again_says_its_engine_served_from_the_moment_it_exists(tmp_path, monkeypatch):
    """A client that finds no socket reads the lock file beside it: one saying its engine served means the socket is
    being made again (the kill switch waits for it), an empty one an engine still starting (said at once). The lock
    file made again after a cleaner removed it with the socket was empty for a moment after it appeared: a kill
    switch that read it then, on a loaded machine, was refused as one sent to an engine still starting."""
    import fcntl

    from conftest import engine_session, make_settings
    from ffe_engine import control

    settings = make_settings(tmp_path)
    sock, lock = settings.socket_path, control.socket_lock_path(settings.socket_path)
    seen: list[bytes] = []  # what the lock file at its path held each time a lock was taken
    real_flock = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        if lock.exists():
            seen.append(lock.read_bytes())
        real_flock(fd, operation)

    async with engine_session(settings) as running:
        await running.start_control()
        assert sock.exists() and lock.read_bytes() == control.SERVING
        monkeypatch.setattr(fcntl, "flock", flock)
        sock.unlink()
        lock.unlink()
        deadline = asyncio.get_running_loop().time() + 30
        while not sock.exists():
            assert asyncio.get_running_loop().time() < deadline, "the socket was not made again"
            await asyncio.sleep(0.05)
        monkeypatch.undo()
        assert lock.read_bytes() == control.SERVING
        assert b"" not in seen, seen


async def test_a_command_sent_to_an_engine_that_is_stopping_is_refused_at_once_saying_so(tmp_path, spawn_ffe):
    """An engine stopping in order has closed its socket, and holds its data directory until its stop has ended
    (here its stop alert waits on a webhook that does not answer, and the engine is then frozen). `ffe ctl halt`
    sent meanwhile is neither kept waiting for a socket the engine will not make again nor told the engine is
    starting: it exits 1 at once saying the engine is stopping."""
    from receiver import Receiver

    held = asyncio.Event()  # the webhook answers nothing until the end
    hook = await Receiver(hold=held).start()
    try:
        engine = spawn_ffe(tmp_path, "run", "--headless",
                           env=ffe_env(FFE_MARKET__SPEED="20", FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook"))
        await asyncio.to_thread(wait_until, lambda: "control socket ready" in engine.stderr, 60, 0.05,
                                "the engine answering")
        lock = tmp_path / "data" / "ffe.sock.lock"
        engine.send(signal.SIGTERM)
        await asyncio.to_thread(wait_until, lambda: lock.read_bytes() == b"stopped\n", 60, 0.01,
                                "the socket closed by the stop")
        engine.send(signal.SIGSTOP)
        try:
            assert not (tmp_path / "data" / "ffe.sock").exists()
            # Bounded well below the command's own timeout: waiting for the socket would outlast it.
            halt = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "halt", "--timeout", "120", timeout=60)
        finally:
            engine.send(signal.SIGCONT)
        assert halt.returncode == 1, halt.stdout + halt.stderr
        pid = engine.proc.pid
        assert f"the engine on data (pid {pid}) is stopping" in halt.stderr and "is starting" not in halt.stderr, \
            halt.stderr
        assert await asyncio.to_thread(engine.wait, 60) == 0, engine.stderr[-3000:]
    finally:
        held.set()
        await hook.stop()


def test_a_kill_switch_whose_socket_is_not_made_again_in_its_time_says_so_and_how_to_halt(tmp_path, spawn_ffe):
    """The socket removed under an engine frozen for longer than `ffe ctl halt` waits: the halt was never sent, and
    the line says why (the socket gone, not made again: stopped or starved) and how to halt the engine all the same,
    not that it is starting, nor that the halt may still apply."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    engine.send(signal.SIGSTOP)
    try:
        (tmp_path / "data" / "ffe.sock").unlink()
        halt = run_ffe(tmp_path, "ctl", "halt", "--timeout", "1")
    finally:
        engine.send(signal.SIGCONT)
    pid = engine.proc.pid
    assert halt.returncode == 1, halt.stdout + halt.stderr
    assert (f"the engine on data (pid {pid}) runs, but its control socket data/ffe.sock was removed and it has not "
            "made it again" in halt.stderr and f"`kill -USR1 {pid}` halts it" in halt.stderr), halt.stderr
    assert "may still apply" not in halt.stderr and "is starting" not in halt.stderr, halt.stderr
    wait_until(lambda: "control socket was removed: made again" in engine.stderr, timeout=60, what="the socket back")
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("RUNNING",)]
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]
