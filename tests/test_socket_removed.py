"""The control socket removed under a running engine (a cleaner of /tmp or /run, a stray `rm`): without it no `ffe
ctl` (its kill switch included) and no attached console reaches the engine, and `ffe ctl status` would take the
running engine for one still starting. The engine makes it again where nothing is, within seconds, and says so.

Real parts: a headless `ffe run` on the simulated market, `ffe ctl` processes, the files of its data directory."""

from __future__ import annotations

import signal

from conftest import db_rows, ffe_env, run_ffe, wait_until


def test_a_removed_control_socket_is_made_again_and_answers(tmp_path, spawn_ffe):
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    sock = tmp_path / "data" / "ffe.sock"
    sock.unlink()
    assert run_ffe(tmp_path, "ctl", "status").returncode == 1  # nobody at the path for now
    wait_until(lambda: run_ffe(tmp_path, "ctl", "status").returncode == 0, timeout=30, what="the socket made again")
    assert "control socket was removed: made again" in engine.stderr, engine.stderr[-3000:]
    halt = run_ffe(tmp_path, "ctl", "halt")
    assert halt.returncode == 0, halt.stdout + halt.stderr
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("HALTED",)]
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]
    assert not sock.exists()


def test_a_path_another_process_took_is_left_to_it(tmp_path, spawn_ffe):
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    sock = tmp_path / "data" / "ffe.sock"
    sock.unlink()
    sock.write_text("someone else's")
    wait_until(lambda: "control socket path holds another file: left to it" in engine.stderr, timeout=30,
               what="the engine's word on it")
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr[-3000:]
    assert sock.read_text() == "someone else's"
