"""The control socket under abuse: a flood of connections, idle ones, malformed payloads and subscribers that never
read. The engine goes on trading, a halt still gets through, and nothing logs a traceback. Real headless engines
in subprocesses, real Unix sockets."""

from __future__ import annotations

import asyncio
import json
import resource
import select
import signal
import socket
from pathlib import Path

import pytest
from conftest import db_value, ffe_env, wait_until

from ffe_engine.control import request


def _start(spawn_ffe, tmp_path: Path, **env: str):
    engine = spawn_ffe(tmp_path, "run", "--headless", "--data-dir", "data", "--log-dir", "logs",
                       env=ffe_env(**{"FFE_MARKET__SPEED": "20", **env}))
    sock = tmp_path / "data" / "ffe.sock"
    wait_until(lambda: _ask(sock) is not None or not engine.alive(), timeout=60, what="the control socket")
    assert engine.alive(), engine.stderr
    return engine, sock


def _ask(sock: Path, cmd: str = "status", timeout: float = 10.0) -> dict | None:
    try:
        return asyncio.run(request(sock, cmd, timeout=timeout))
    except OSError:
        return None


def _connect(sock: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock))  # blocking: waits for room in the listen backlog instead of failing
    s.settimeout(60)
    return s


def _read_to_end(s: socket.socket) -> bytes:
    """What the engine sent until it closed. An engine that closes with part of an over-long request still unread
    resets the connection (the kernel's word for "not all you sent was read"), after its answer: that ends it too."""
    got = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            if not got:
                raise
            return got
        if not chunk:
            return got
        got += chunk


def _assert_clean_log(engine) -> None:
    log = engine.stderr
    assert "Unhandled exception" not in log and "Traceback" not in log, log[-3000:]


def test_a_halt_and_a_health_check_get_through_a_flood_of_connections_at_a_low_descriptor_limit(tmp_path, spawn_ffe):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))  # the engine inherits it
    try:
        # Idle connections stay for the whole test, however slow the machine: the limit is what is tested here.
        engine, sock = _start(spawn_ffe, tmp_path, FFE_CONTROL__IDLE_TIMEOUT_S="600")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    held = []
    try:
        for _ in range(300):  # far past both the connection limit (16) and the engine's descriptors
            held.append(_connect(sock))
        busy = _ask(sock, "status", timeout=30)
        assert busy is not None and busy["ok"] is False and "too many control connections" in busy["error"], \
            (busy, engine.stderr[-3000:])
        # The health check is answered too (a watchdog must not take a busy socket for a dead engine), then a halt.
        health = _ask(sock, "health", timeout=30)
        assert health is not None and health["ok"] is True, (health, engine.stderr[-3000:])
        halted = _ask(sock, "halt", timeout=30)
        assert halted is not None and halted["ok"] is True, (halted, engine.stderr[-3000:])
        assert db_value(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == "HALTED"
    finally:
        for s in held:
            s.close()
    wait_until(lambda: (_ask(sock) or {}).get("ok"), timeout=60, what="status served again")
    assert engine.stderr.count("control connections at their limit") <= 3  # not a line per connection
    _assert_clean_log(engine)
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.stderr


def test_an_idle_connection_is_closed(tmp_path, spawn_ffe):
    engine, sock = _start(spawn_ffe, tmp_path, FFE_CONTROL__IDLE_TIMEOUT_S="0.5")
    idle = _connect(sock)
    try:
        assert _read_to_end(idle) == b""  # closed by the engine, nothing said
    finally:
        idle.close()
    assert _ask(sock)["ok"] is True
    _assert_clean_log(engine)


MALFORMED = [
    b"{not json\n",
    b"\xff\xfe\x00\x01 binary\n",
    b"\n",
    b"[" * 50_000 + b"\n",  # nesting deep enough to exhaust the parser's recursion
    b"[" * 200_000,  # longer than a request may be, no newline
    b'"\\ud800"\n',
    b"1e99999\n",
    b'{"cmd": ["halt"]}\n',
    b'{"cmd": "halt", "args": {"by": "' + b"x" * 1000 + b'"}}\n',
    b'{"cmd": "resume", "args": {"confirm": "true"}}\n',
    b'{"cmd": "status", "args": {"by": null}}\n',
    b'{"cmd": "pause", "data_dir": 5}\n',
    b'{"cmd": "pause", "data_dir": "\\u0000"}\n',
    b'{"cmd": "subscribe", "data_dir": "/nowhere"}\n',
    b'{"cmd": "order", "args": {"symbol": "BTC/USDT", "side": "buy", "quantity": 1e400}}\n',
]


def test_malformed_payloads_are_answered_and_never_log_a_traceback(tmp_path, spawn_ffe):
    engine, sock = _start(spawn_ffe, tmp_path)
    for payload in MALFORMED:
        s = _connect(sock)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            lines = _read_to_end(s).splitlines()
        finally:
            s.close()
        assert lines, payload[:60]
        for line in lines:
            answer = json.loads(line)
            assert answer["ok"] is False and answer["error"], (payload[:60], answer)
    cut = _connect(sock)
    cut.sendall(b'{"cmd": "pau')  # a request cut off by its sender going away
    cut.close()
    status = _ask(sock)
    assert status["ok"] is True and status["result"]["state"] == "RUNNING"
    assert status["result"]["orders"] == [] and db_value(tmp_path / "data" / "ffe.db",
                                                         "SELECT COUNT(*) FROM orders") == 0
    _assert_clean_log(engine)


def _hung_up(socks: list[socket.socket]) -> int:
    """How many of socks the engine has closed (seen without reading what it sent them)."""
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLHUP | select.POLLRDHUP)
    return sum(1 for _, ev in poller.poll(0) if ev & (select.POLLHUP | select.POLLRDHUP))


@pytest.mark.timeout(400)  # a thousand connections filling their buffers take a while on a loaded machine
def test_subscribers_that_never_read_are_dropped_and_the_engine_goes_on(tmp_path, spawn_ffe):
    engine, sock = _start(spawn_ffe, tmp_path, FFE_MARKET__SPEED="0", FFE_CONTROL__MAX_CONNECTIONS="1100",
                          FFE_CONTROL__STREAM_BUFFER_KB="64")
    subscribers = []
    try:
        for _ in range(1000):
            s = _connect(sock)
            s.sendall(b'{"cmd": "subscribe"}\n')
            subscribers.append(s)
        bars = _ask(sock, timeout=60)["result"]["bars"]
        wait_until(lambda: _hung_up(subscribers) == len(subscribers), timeout=300, interval=0.5,
                   what="every subscriber that never reads disconnected")
        after = _ask(sock, timeout=60)["result"]["bars"]
        assert after > bars
        wait_until(lambda: _ask(sock, timeout=60)["result"]["bars"] > after, timeout=60, what="bars going on")
    finally:
        for s in subscribers:
            s.close()
    assert "event stream subscribers disconnected: not reading" in engine.stderr
    _assert_clean_log(engine)
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.stderr
