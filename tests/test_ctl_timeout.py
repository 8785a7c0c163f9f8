"""`ffe ctl ACTION --timeout S` gives up S seconds after it asked: the status it asks to tell a busy engine from a
frozen one is asked within those S seconds, never after them. The other end of the control socket here is a stand-in
that speaks the engine's protocol and answers as the test chooses: the moments that matter (a command left
unanswered, a status answered only once the command was given up) are told by what the client does on its
connections, not by a clock."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from conftest import run_ffe

IDENTITY = {"pid": 4242, "data_dir": "/srv/ffe/data", "instance": "1a2b3c"}
WAIT_S = 60  # a safety net against a hung client, never a speed assertion


class StandIn:
    """A listener on the control socket path: every command is read and left unanswered until its client hangs up;
    a status is answered at once (`status_at_once`) or only after every unanswered command was hung up on."""

    def __init__(self, path: Path, status_at_once: bool) -> None:
        self.status_at_once = status_at_once
        self.commands_open = 0
        self.hung_up = threading.Condition()
        self.asked: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            line = reader.readline()
            if not line:
                return
            cmd = json.loads(line)["cmd"]
            with self.hung_up:
                self.asked.append(cmd)
            if cmd == "status":
                if not self.status_at_once:
                    with self.hung_up:
                        self.hung_up.wait_for(lambda: self.commands_open == 0 and len(self.asked) > 1, WAIT_S)
                answer = {"ok": True, "result": {"state": "RUNNING"}, "engine": IDENTITY}
                try:
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    pass  # the client gave up on it
                return
            with self.hung_up:
                self.commands_open += 1
            reader.read()  # until the client hangs up: never answered
            with self.hung_up:
                self.commands_open -= 1
                self.hung_up.notify_all()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def account(tmp_path) -> Path:
    (tmp_path / "config.toml").write_text('mode = "paper"\n')
    (tmp_path / "data").mkdir()
    return tmp_path


def test_a_status_answered_only_after_the_timeout_is_not_waited_for(account):
    # The engine answered nothing within S: the command is given up at S, the status asked beside it with it.
    stand_in = StandIn(account / "data" / "ffe.sock", status_at_once=False)
    try:
        proc = run_ffe(account, "ctl", "pause", "--data-dir", "data", "--timeout", "1", timeout=WAIT_S)
    finally:
        stand_in.close()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "ffe: error: no answer from the engine on data/ffe.sock within 1s (stopped or busy?); the pause may still "
        "apply when the engine wakes; `kill -USR1` on the engine's pid (in data/ffe.lock) halts it as soon as it runs"]
    assert stand_in.asked == ["pause", "status"]


def test_a_command_unanswered_while_a_status_is_answered_is_said_carried_out(account):
    # What the engine waits on is not known to the client (the exchange, a disk that hangs under its records,
    # another control): the answer names none of them as the cause.
    stand_in = StandIn(account / "data" / "ffe.sock", status_at_once=True)
    try:
        proc = run_ffe(account, "ctl", "pause", "--data-dir", "data", "--timeout", "1", timeout=WAIT_S)
    finally:
        stand_in.close()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "ffe: error: the engine pid 4242 on /srv/ffe/data (instance 1a2b3c) is running but did not answer the pause "
        "on data/ffe.sock within 1s: it is carrying it out and waits on something it needs (the exchange, its "
        "records, another control under way: not known here which); it takes effect, or fails, once that is done; "
        "`ffe ctl status` and `ffe ctl orders` show what it did"]
    assert stand_in.asked == ["pause", "status"]
