"""`ffe attach` to an engine that does not answer yet (frozen, or busy): the console is on the terminal at once,
says it is connecting and, past the request timeout, that the engine does not answer and how to halt it all the
same; its kill switch is reachable meanwhile and halts the engine as soon as it answers. A socket nobody listens
on is still said at once, in one line.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time

from conftest import db_value, ffe_env, run_ffe, starter_config, wait_until
from test_console_terminal import COLS, PATIENCE_S, ROWS, Terminal


def frozen_engine(tmp_path, spawn_ffe):
    """A headless engine on tmp_path's data directory, its control socket up, then stopped (SIGSTOP)."""
    starter_config(tmp_path)
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="6"), name="engine")
    sock = tmp_path / "data" / "ffe.sock"
    wait_until(lambda: sock.exists() or not engine.alive(), timeout=PATIENCE_S, what="the control socket")
    engine.send(signal.SIGSTOP)
    return engine


def on_screen(term: Terminal, text: str) -> bool:
    return any(text in row for row in term.rows())


def ended(term: Terminal) -> int:
    """The console's exit code, its terminal read meanwhile (a console writing to a full terminal waits)."""
    deadline = time.monotonic() + PATIENCE_S
    while term.proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([term.fd], [], [], 0.1)
        if ready:
            with contextlib.suppress(OSError):
                term.stream.feed(os.read(term.fd, 65536))
    return term.ended()


def attached(tmp_path, request_timeout_s: float) -> Terminal:
    """`ffe attach` on a real terminal, asking the engine for `request_timeout_s` each time."""
    env = ffe_env(TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS),
                  FFE_CONTROL__REQUEST_TIMEOUT_S=f"{request_timeout_s:g}")
    return Terminal(tmp_path, env, ("attach",))


def halted_then_detached(tmp_path, term: Terminal) -> None:
    """The kill switch asked while connecting made once the engine answered (HALTED stored and shown); then the
    console detached, exit 0."""
    db = tmp_path / "data" / "ffe.db"
    wait_until(lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", timeout=PATIENCE_S,
               what="HALTED stored once the engine answered")
    term.until(lambda: "HALTED" in term.rows()[0], "HALTED on the status line")
    term.press(b"q")
    term.until(lambda: on_screen(term, "Detach"), "the detach dialog")
    term.press(b"y")
    assert ended(term) == 0, "\n".join(term.rows())


def test_attaching_to_a_frozen_engine_draws_the_console_at_once_with_its_kill_switch(tmp_path, spawn_ffe):
    engine = frozen_engine(tmp_path, spawn_ffe)
    # The console asks for 8 s each time: with nothing on the terminal until it gave up, that was 24 s of a blank
    # screen and no key.
    term = attached(tmp_path, 8)
    try:
        try:
            term.until(lambda: "CONNECTING" in term.rows()[0], "the console saying it is connecting", timeout=20)
            term.until(lambda: on_screen(term, f"kill -USR1 {engine.pid}"),
                       "past the first request timeout: the engine not answering, and how to halt it", timeout=20)
            assert on_screen(term, "NOT ANSWERING"), "\n".join(term.rows())
            term.press(b"K")
            term.until(lambda: on_screen(term, "connecting to its engine"), "the kill switch's dialog")
            term.press(b"y")
            term.until(lambda: on_screen(term, "halted as soon as"), "the halt said to come once connected")
        finally:
            engine.send(signal.SIGCONT)
        halted_then_detached(tmp_path, term)
        assert engine.alive()
    finally:
        term.close()


def test_attaching_to_a_socket_nobody_listens_on_says_so_at_once_in_one_line(tmp_path):
    starter_config(tmp_path)
    (tmp_path / "data").mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "data" / "ffe.sock"))  # left by an engine killed: there, nobody listening
    stale.close()
    proc = run_ffe(tmp_path, "attach")
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr == "ffe: error: no engine is running on data/ffe.sock\n", proc.stderr


def test_a_kill_switch_asked_while_connecting_is_said_pending_and_a_quit_asks_before_dropping_it(tmp_path, spawn_ffe):
    """K confirmed while the engine does not answer: the banner says the kill switch asked here is to be made once
    it answers (not that K would make one), and q asks before it drops it; kept, the halt is made when the engine
    answers."""
    engine = frozen_engine(tmp_path, spawn_ffe)
    term = attached(tmp_path, 2)
    try:
        try:
            term.until(lambda: on_screen(term, "NOT ANSWERING"), "the engine not answering", timeout=20)
            assert not on_screen(term, "asked here"), "\n".join(term.rows())
            term.press(b"K")
            term.until(lambda: on_screen(term, "connecting to its engine"), "the kill switch's dialog")
            term.press(b"y")
            term.until(lambda: on_screen(term, "the kill switch asked here is made as soon as it answers"),
                       "the banner saying the kill switch waits for the engine", timeout=20)
            term.press(b"q")
            term.until(lambda: on_screen(term, "not made yet"), "the question before dropping the kill switch")
            assert term.proc.poll() is None, "\n".join(term.rows())
            term.press(b"n")
            term.until(lambda: not on_screen(term, "not made yet"), "the question answered no")
        finally:
            engine.send(signal.SIGCONT)
        halted_then_detached(tmp_path, term)
    finally:
        term.close()
