"""Who owns the control socket, who may talk on it, and what `ffe ctl` does when nobody answers. Real headless
engines in subprocesses, real Unix sockets, another uid for the peer check. The first `ffe ctl` of each action is a
real `ffe` process; the later ones run in the test process (`ffe_in_process`), against the engine's process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest

import forked_ffe
from conftest import db_rows, db_value, ffe_cmd, ffe_env, ffe_in_process, run_ffe, wait_until

from ffe_engine.config import Settings
from ffe_engine.control import request


def _start(spawn_ffe, tmp_path: Path, data: str, sock: Path | None = None, name: str = "ffe", **env: str):
    extra = {"FFE_MARKET__SPEED": "20", **env}
    if sock is not None:
        extra["FFE_CONTROL__SOCKET"] = str(sock)
    engine = spawn_ffe(tmp_path, "run", "--headless", "--data-dir", data, "--log-dir", f"logs-{data}",
                       env=ffe_env(**extra), name=name)
    path = sock or tmp_path / data / "ffe.sock"
    wait_until(lambda: _answers(path) or not engine.alive(), timeout=60, what=f"{path} answering")
    assert engine.alive(), engine.stderr
    return engine


def _answers(path: Path) -> bool:
    try:
        return asyncio.run(request(path, "status", timeout=10))["ok"]
    except OSError:
        return False


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ffe: ")]


# ---------------------------------------------------------------------------------------------------- ownership
def test_a_second_engine_on_the_same_socket_is_refused_and_ctl_names_the_engine(tmp_path, spawn_ffe):
    sock = tmp_path / "ctl.sock"
    env = ffe_env(FFE_CONTROL__SOCKET=str(sock))
    one = _start(spawn_ffe, tmp_path, "data1", sock, name="one")
    inode = sock.stat().st_ino

    two = spawn_ffe(tmp_path, "run", "--headless", "--data-dir", "data2", "--log-dir", "logs-data2",
                    env=ffe_env(FFE_MARKET__SPEED="20", FFE_CONTROL__SOCKET=str(sock)), name="two")
    assert two.wait(timeout=60) == 2, two.stderr
    [line] = _error_lines(two.stderr)
    assert line.startswith(f"ffe: error: control socket {sock} belongs to engine pid {one.pid} on ")
    assert os.path.realpath(tmp_path / "data1") in line and "Traceback" not in two.stderr
    assert sock.stat().st_ino == inode and one.alive()  # the first engine's socket was left alone
    # Refused before its engine started: no database, no audit trail, no run recorded for data2.
    assert not (tmp_path / "data2" / "ffe.db").exists() and not (tmp_path / "logs-data2" / "audit.jsonl").exists()

    status = run_ffe(tmp_path, "ctl", "status", "--data-dir", "data1", env=env)
    assert status.returncode == 0, status.stderr
    first, named = status.stdout.splitlines()
    assert first.startswith("PAPER RUNNING")
    assert named.startswith(f"engine pid {one.pid} on {os.path.realpath(tmp_path / 'data1')} (instance ")
    answer = json.loads(ffe_in_process(tmp_path, "ctl", "status", "--json", "--data-dir", "data1", env=env).stdout)
    assert answer["engine"]["pid"] == one.pid and answer["engine"]["data_dir"] == os.path.realpath(tmp_path / "data1")
    assert len(answer["engine"]["instance"]) >= 8

    # Asking for data2's engine on this socket reaches data1's engine: it refuses, nothing is done.
    wrong = run_ffe(tmp_path, "ctl", "halt", "--data-dir", "data2", env=env)
    assert wrong.returncode == 1 and wrong.stdout == ""
    [line] = wrong.stderr.splitlines()
    assert "runs on data directory" in line and "nothing done" in line and f"engine pid {one.pid}" in line
    assert db_value(tmp_path / "data1" / "ffe.db", "SELECT state FROM engine_state") == "RUNNING"
    attach = run_ffe(tmp_path, "attach", "--data-dir", "data2", env=env)  # nor does the console attach to it
    assert attach.returncode == 1 and attach.stdout == "" and len(attach.stderr.splitlines()) == 1
    assert "runs on data directory" in attach.stderr

    one.send(signal.SIGTERM)
    assert one.wait(timeout=30) == 0, one.stderr
    assert not sock.exists()


def test_a_socket_left_by_a_killed_engine_is_taken_over(tmp_path, spawn_ffe):
    first = _start(spawn_ffe, tmp_path, "data", name="first")
    first.kill()
    sock = tmp_path / "data" / "ffe.sock"
    assert sock.exists()  # SIGKILL leaves it behind; nobody answers on it
    second = _start(spawn_ffe, tmp_path, "data", name="second")
    answer = asyncio.run(request(sock, "status", timeout=10))
    assert answer["engine"]["pid"] == second.pid


def test_a_stopping_engine_removes_only_its_own_socket(tmp_path, spawn_ffe):
    sock = tmp_path / "data" / "ffe.sock"
    engine = _start(spawn_ffe, tmp_path, "data")
    os.rename(sock, tmp_path / "moved.sock")  # the path now belongs to someone else
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(str(sock))
        inode = sock.stat().st_ino
        engine.send(signal.SIGTERM)
        assert engine.wait(timeout=30) == 0, engine.stderr
        assert sock.exists() and sock.stat().st_ino == inode
    finally:
        other.close()


# ---------------------------------------------------------------------------------------------------- permissions
def test_records_directories_and_socket_are_private_under_umask_000(tmp_path, spawn_ffe):
    old = os.umask(0)
    try:
        engine = _start(spawn_ffe, tmp_path, "data")
    finally:
        os.umask(old)
    wait_until(lambda: (tmp_path / "logs-data" / "audit.jsonl").exists(), what="the audit file")

    def mode(path: Path) -> int:
        return stat.S_IMODE(os.lstat(path).st_mode)

    assert mode(tmp_path / "data") == 0o700 and mode(tmp_path / "logs-data") == 0o700
    for name in ("ffe.db", "ffe.lock", "ffe.sock.lock"):
        assert mode(tmp_path / "data" / name) == 0o600, name
    assert mode(tmp_path / "logs-data" / "audit.jsonl") == 0o600
    assert mode(tmp_path / "data" / "ffe.sock") == 0o600  # as cli.md says: read and write, no execute
    for path in [*(tmp_path / "data").iterdir(), *(tmp_path / "logs-data").iterdir()]:
        assert mode(path) & 0o077 == 0, f"{path} is {oct(mode(path))}"
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.stderr


def _as_other_user(path: Path, line: bytes) -> bytes:
    """Connect to path as uid/gid 65534 (nobody) in a child process, send line, return what came back."""
    read_end, write_end = os.pipe()
    # Forked, not started from a file: the interpreter lives under /root, which uid 65534 cannot reach. The child
    # takes no lock another thread could hold (it only uses a socket and the pipe) and leaves with os._exit, so
    # the multi-threaded fork that Python warns of cannot deadlock here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(str(path))
            try:
                s.sendall(line)
            except BrokenPipeError:
                pass  # the engine may have answered and closed before the request went out
            got = b""
            while not got.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            os.write(write_end, got or b"<closed>")
        except BaseException as exc:
            os.write(write_end, f"<{type(exc).__name__}: {exc}>".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return b"".join(chunks)


def test_another_user_is_refused_even_on_a_socket_open_to_all(tmp_path, spawn_ffe):
    assert os.geteuid() == 0, "this test connects as another uid, which needs root"
    public = Path(tempfile.mkdtemp(prefix="ffe-ctl-"))  # short, and reachable by another user
    try:
        os.chmod(public, 0o711)
        sock = public / "ctl.sock"
        engine = _start(spawn_ffe, tmp_path, "data", sock)
        os.chmod(sock, 0o777)  # as if the mode were lost: the peer check has to hold on its own
        got = _as_other_user(sock, b'{"cmd": "pause", "args": {"by": "intruder"}}\n')
        answer = json.loads(got)
        assert answer["ok"] is False and answer["error"].startswith("refused"), got
        assert "engine" not in answer  # another user is not told which engine this is
        assert db_value(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == "RUNNING"
        assert "control connection from another user refused" in engine.stderr
        ours = run_ffe(tmp_path, "ctl", "pause", "--data-dir", "data", env=ffe_env(FFE_CONTROL__SOCKET=str(sock)))
        assert ours.returncode == 0 and ours.stdout.startswith("PAUSED"), ours.stderr
        engine.send(signal.SIGTERM)
        assert engine.wait(timeout=30) == 0, engine.stderr
    finally:
        for leftover in public.iterdir():
            leftover.unlink()
        public.rmdir()


# ---------------------------------------------------------------------------------------------------- a stopped engine
def test_ctl_halt_gives_up_on_a_stopped_engine_in_one_line_and_the_halt_applies_on_waking(tmp_path, spawn_ffe):
    engine = _start(spawn_ffe, tmp_path, "data")
    db = tmp_path / "data" / "ffe.db"
    engine.send(signal.SIGSTOP)
    try:
        status = ffe_in_process(tmp_path, "ctl", "status", "--data-dir", "data",
                                env=ffe_env(FFE_CONTROL__REQUEST_TIMEOUT_S="0.5"))
        halt = ffe_in_process(tmp_path, "ctl", "halt", "--data-dir", "data", "--timeout", "1")
        orders = ffe_in_process(tmp_path, "ctl", "orders", "--data-dir", "data", "--timeout", "1")
        attach = run_ffe(tmp_path, "attach", "--data-dir", "data", env=ffe_env(FFE_CONTROL__REQUEST_TIMEOUT_S="0.3"))
    finally:
        engine.send(signal.SIGCONT)
    # The console asks a few times before giving up (one late answer is a busy engine, not a missing one).
    # Each names the engine's pid and what halts it all the same, not the command that just went unanswered.
    pid = engine.pid
    wake = f"`kill -USR1 {pid}` halts it as soon as it runs (`kill -CONT {pid}` if it was stopped with SIGSTOP)"
    assert attach.returncode == 1 and attach.stdout == ""
    assert attach.stderr.splitlines() == [f"ffe: error: no answer from the engine on data/ffe.sock (pid {pid}) within "
                                          f"0.3s, asked 3 times (stopped or busy?); {wake}"]
    assert status.returncode == 1 and status.stdout == ""
    assert status.stderr.splitlines() == [f"ffe: error: no answer from the engine on data/ffe.sock (pid {pid}) within "
                                          f"0.5s (stopped or busy?); {wake}"]
    assert halt.returncode == 1 and halt.stdout == ""
    assert halt.stderr.splitlines() == [f"ffe: error: no answer from the engine on data/ffe.sock (pid {pid}) within 1s "
                                        f"(stopped or busy?); the halt may still apply when the engine wakes; {wake}"]
    # A question changes nothing: nothing of it applies later.
    assert orders.stderr.splitlines() == [f"ffe: error: no answer from the engine on data/ffe.sock (pid {pid}) within "
                                          f"1s (stopped or busy?); {wake}"]
    # It does: the request waited in the socket and the engine carries it out once it runs again.
    wait_until(lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", timeout=60, what="HALTED")
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.stderr


@pytest.mark.parametrize("how, speed, frozen_s", [
    ("SIGUSR1", "1", 4.0), ("ffe ctl halt", "1", 4.0),
    ("SIGUSR1", "1", 2.0),  # frozen for little more than a bar's time
    ("ffe ctl halt", "0.3", 5.0),  # bars 3.3 s apart: the loop's own wait ends first on waking, then the bar comes
], ids=["usr1", "ctl", "usr1 short", "ctl slow bars"])
def test_a_halt_asked_of_a_frozen_engine_comes_before_anything_it_does_on_waking(tmp_path, spawn_ffe, how, speed,
                                                                                    frozen_s):
    """Frozen (SIGSTOP) past its next bar, a halt asked meanwhile waits in the socket or as a signal: on waking the
    engine halts before it trades another bar (whose decisions could send an entry), and sends nothing before it.
    (A bar it was trading when frozen, its last symbols still to decide, may be finished as it halts: the order path
    refuses its orders once HALTED is in memory.)"""
    engine = _start(spawn_ffe, tmp_path, "data", FFE_MARKET__SPEED=speed)
    db = tmp_path / "data" / "ffe.db"
    frozen_bar = _freeze_between_bars(engine, db)
    asked = None
    try:
        frozen_at = db_value(db, "SELECT MAX(seq) FROM events")
        time.sleep(frozen_s)
        if how == "SIGUSR1":
            engine.send(signal.SIGUSR1)
        else:
            asked = forked_ffe.Popen(ffe_cmd("ctl", "halt", "--data-dir", "data", "--timeout", "30"), cwd=tmp_path,
                                     env=ffe_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # its request in the socket
    finally:
        engine.send(signal.SIGCONT)
    wait_until(lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", timeout=60, what="HALTED")
    if asked is not None:
        assert asked.wait(timeout=30) == 0
    after = db_rows(db, "SELECT event, data FROM events WHERE seq > ? ORDER BY seq", (frozen_at,))
    halted = next(i for i, (event, data) in enumerate(after)
                  if event == "engine_state" and json.loads(data)["state"] == "HALTED")
    before = after[:halted]
    assert not [e for e, _ in before if e not in ("decision", "bar")], before
    assert all(json.loads(d)["bar_ts"] <= frozen_bar for e, d in before if e == "decision"), (frozen_bar, before)
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.stderr


def _freeze_between_bars(engine, db: Path) -> int:
    """SIGSTOP the engine at rest, a bar's every decision recorded and the next bar not begun: the bar it had traded.
    The feed waits a bar's time (a second or more in these tests) after a bar's last candle is traded, and this looks
    every 20 ms. Frozen in the middle of a bar, it would finish that bar on waking, which its records at the freeze
    could not tell from a later bar traded."""
    symbols = len(Settings().engine.symbols)
    wait_until(lambda: db_value(db, "SELECT COUNT(*) FROM decisions"), timeout=60, what="a decision")
    first = db_value(db, "SELECT MAX(ts) FROM decisions")
    while True:
        bar, n = db_rows(db, "SELECT ts, COUNT(*) FROM decisions GROUP BY ts ORDER BY ts DESC LIMIT 1")[0]
        if bar != first and n >= symbols:  # a bar seen whole as it ends (not the one there when this began)
            engine.send(signal.SIGSTOP)
            return bar
        time.sleep(0.02)


def test_a_stop_that_wakes_a_frozen_engine_finishes_the_bar_it_began(tmp_path, spawn_ffe):
    """Stopped while frozen (SIGTERM, then SIGCONT): the engine wakes with the stop and a bar's first candle both
    there. It trades the bar's other symbols too before it stops, so the next start goes on from the bar after it:
    no bar some symbols never traded."""
    engine = _start(spawn_ffe, tmp_path, "data")
    db = tmp_path / "data" / "ffe.db"
    wait_until(lambda: db_value(db, "SELECT COUNT(*) FROM decisions") >= 4, timeout=60, what="decisions")
    engine.send(signal.SIGSTOP)
    time.sleep(4.0)  # past the next bar (20 a second at speed 20)
    engine.send(signal.SIGTERM)
    engine.send(signal.SIGCONT)
    assert engine.wait(timeout=60) == 0, engine.stderr
    before = db_value(db, "SELECT COUNT(*) FROM decisions")
    again = _start(spawn_ffe, tmp_path, "data", name="again")
    wait_until(lambda: db_value(db, "SELECT COUNT(*) FROM decisions") >= before + 4, timeout=60, what="decisions")
    again.send(signal.SIGTERM)
    assert again.wait(timeout=60) == 0, again.stderr
    for (symbol,) in db_rows(db, "SELECT DISTINCT symbol FROM decisions"):
        bars = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = ? ORDER BY ts", (symbol,))]
        steps = {b - a for a, b in zip(bars, bars[1:])}
        assert steps == {60_000}, (symbol, sorted(steps))


def test_a_socket_path_too_long_for_a_unix_socket_is_refused_at_load_before_anything_is_recorded(tmp_path):
    long_dir = tmp_path / ("d" * (120 - len(str(tmp_path))))
    sock = long_dir / "ctl.sock"
    (tmp_path / "config.toml").write_text(f'[control]\nsocket = "{sock}"\n')
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "1")):
        proc = run_ffe(tmp_path, *command)
        assert proc.returncode == 2, (command, proc.stderr[-3000:])
        assert proc.stderr.splitlines() == [
            f"ffe: error: config.toml:2: control.socket: {sock} is {len(str(sock))} bytes, longer than a Unix "
            "socket path can be (107): choose a shorter one"], proc.stderr
        assert proc.stdout == "" and not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()
    (tmp_path / "config.toml").write_text("")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "1", "--data-dir", str(long_dir))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        f"ffe: error: command line: --data-dir: the control socket {long_dir / 'ffe.sock'} is "
        f"{len(str(long_dir / 'ffe.sock'))} bytes, longer than a Unix socket path can be (107): choose a shorter "
        "data directory, or a [control] socket elsewhere"], proc.stderr
    assert not long_dir.exists() and not (tmp_path / "logs").exists()


# ---------------------------------------------------------------------------------------------------- in the way
def _records(*dirs: Path) -> dict[str, bytes]:
    """Every file but the lock files, which each start writes its pid in before it is refused or goes on."""
    return {str(p): p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file() and p.suffix != ".lock"}


def _a_file(path: Path) -> None:
    path.write_text("precious\n")


def _a_directory(path: Path) -> None:
    path.mkdir()


def _listened_on(path: Path) -> socket.socket:
    """A socket another program listens on: connections to it are taken (the kernel queues them unaccepted)."""
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen(8)
    return other


def test_what_is_in_the_socket_s_place_refuses_the_start_before_anything_is_written(tmp_path):
    """A file, a directory, or another program's socket at the control socket's path: the start stops with one
    line naming it, exit 2, before its engine starts: no run recorded, the records and the thing in the way left
    as they were (as for a socket another engine holds)."""
    assert run_ffe(tmp_path, "run", "--headless", "--max-bars", "3").returncode == 0
    sock = tmp_path / "data" / "ffe.sock"
    for make, said in ((_a_file, "exists and is not a socket"), (_a_directory, "exists and is not a socket"),
                       (_listened_on, "is in use by a process that answers on it")):
        held = make(sock)
        try:
            before = _records(tmp_path / "data", tmp_path / "logs")
            proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
            assert proc.returncode == 2, (make.__name__, proc.stderr[-3000:])
            assert _error_lines(proc.stderr) == [f"ffe: error: control socket data/ffe.sock {said}; "
                                                 f"{'stop it' if held else 'remove it'} or choose another [control] "
                                                 "socket"], proc.stderr[-3000:]
            assert "engine started" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
            assert _records(tmp_path / "data", tmp_path / "logs") == before, make.__name__
        finally:
            if held:
                held.close()
        if sock.is_dir():
            sock.rmdir()
        else:
            sock.unlink()


@pytest.mark.parametrize("way", ["a file", "a loop of symbolic links"])
def test_a_socket_whose_directory_cannot_be_one_is_refused_by_config_check_and_start_in_one_line(tmp_path, way):
    """The control socket's directory is a file, or a loop of symbolic links: `ffe config check` says it and a
    start stops on it, one line naming control.socket, exit 2, no traceback, as for any other path."""
    if way == "a file":
        (tmp_path / "afile").write_text("precious\n")
        where, said = tmp_path / "afile", "is not a directory"
    else:
        (tmp_path / "loopA").symlink_to(tmp_path / "loopB")
        (tmp_path / "loopB").symlink_to(tmp_path / "loopA")
        where, said = tmp_path / "loopA", "cannot be reached: a loop of symbolic links"
    env = ffe_env(FFE_CONTROL__SOCKET=str(where / "s.sock"))
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "1")):
        proc = run_ffe(tmp_path, *command, env=env)
        assert proc.returncode == 2, (command, proc.stderr[-3000:])
        [line] = _error_lines(proc.stderr)
        assert line.startswith("ffe: error: environment: FFE_CONTROL__SOCKET: ") and said in line, line
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if way == "a file":
        assert (tmp_path / "afile").read_text() == "precious\n"


def test_a_stop_trades_no_later_bar_where_a_replayed_file_has_ended(tmp_path, spawn_ffe):
    """Three files replayed, one ended early: its symbol lacks from every later bar. A stop then finishes no bar for
    it, and trades no candle of a later bar (a decision made after the stop was asked)."""
    from conftest import BTC_CSV, ETH_CSV, sample_head

    (tmp_path / "BTC-USD.csv").write_text("".join(sample_head(BTC_CSV, 400)))
    (tmp_path / "ETH-USD.csv").write_text("".join(sample_head(ETH_CSV, 400)))
    (tmp_path / "SOL-USD.csv").write_text("".join(sample_head(BTC_CSV, 60)))  # ends early
    (tmp_path / "config.toml").write_text(
        '[market]\nsource = "replay"\nspeed = 20.0\n'
        'replay_files = { "BTC/USD" = "BTC-USD.csv", "ETH/USD" = "ETH-USD.csv", "SOL/USD" = "SOL-USD.csv" }\n'
        '[engine]\nsymbols = ["BTC/USD", "ETH/USD", "SOL/USD"]\ntimeframe = "1h"\nwarmup_bars = 30\n'
        '[venue]\nquote = "USD"\n[monitor]\nport = 0\n')
    engine = spawn_ffe(tmp_path, "run", "--headless")
    db = tmp_path / "data" / "ffe.db"
    def decided() -> int:
        try:
            return db_value(db, "SELECT COUNT(*) FROM decisions WHERE symbol = 'BTC/USD'")
        except sqlite3.OperationalError:  # no database yet, or its tables not yet made
            return 0
    wait_until(lambda: decided() >= 40, timeout=90, what="bars after SOL's end")
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=60) == 0, engine.stderr
    last = db_value(db, "SELECT MAX(ts) FROM decisions")
    assert {r[0] for r in db_rows(db, "SELECT symbol FROM decisions WHERE ts = ?", (last,))} == {"BTC/USD", "ETH/USD"}
