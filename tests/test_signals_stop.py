"""Signals to a headless engine (a real subprocess on a paced simulated market): SIGTERM and SIGINT stop it in
order and a restart resumes; SIGUSR1 halts it while its loop goes on."""

from __future__ import annotations

import asyncio
import fcntl
import os
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import (BTC_CSV, ETH_CSV, STOP_SIGNALS, assert_strictly_increasing, audit_lines, count_events, db_rows,
                      db_value, engine_session, ffe_env, ffe_in_process, make_settings, run_ffe, starter_config,
                      wait_until)

PACED = {"FFE_MARKET__SPEED": "100"}  # bars per second: the run is still going when the signal arrives


def _started(p, audit, what: str, n: int = 1):
    wait_until(lambda: count_events(audit, what) >= n or not p.alive(), timeout=60, what=f"{n} {what} event(s)")
    assert p.alive(), p.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_mid_run_exits_0_with_everything_whole_and_a_restart_resumes(tmp_path, spawn_ffe, sig):
    audit = tmp_path / "logs" / "audit.jsonl"
    db = tmp_path / "data" / "ffe.db"
    p = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(**PACED))
    _started(p, audit, "order")  # trading is under way: orders have gone out
    p.send(sig)
    assert p.wait(timeout=20) == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert "engine stopped" in p.stderr

    assert db_value(db, "PRAGMA integrity_check") == "ok"
    first = audit_lines(audit)  # every line whole, the file ending in a newline
    assert_strictly_increasing([r["seq"] for r in first])
    assert first[-1]["event"] == "run" and first[-1]["phase"] == "stop"  # the orderly stop was recorded last
    bars_first = first[-1]["detail"]["bars"]
    assert bars_first > 0
    assert db_rows(db, "SELECT state, by FROM engine_state") == [("RUNNING", "engine")]
    assert db_value(db, "SELECT MAX(seq) FROM events") == first[-1]["seq"]  # the store has all the audit has
    positions = db_value(db, "SELECT COUNT(*) FROM positions")
    decisions = db_value(db, "SELECT COUNT(*) FROM decisions")
    orders = db_value(db, "SELECT COUNT(*) FROM orders")
    assert orders > 0
    assert db_value(db, "SELECT COUNT(*) FROM orders WHERE status IN ('new', 'in_doubt')") == 0

    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "40")
    assert again.returncode == 0, again.stderr
    assert db_value(db, "PRAGMA integrity_check") == "ok"
    records = audit_lines(audit)
    assert records[: len(first)] == first  # appended to, never rewritten
    assert_strictly_increasing([r["seq"] for r in records])  # seq continues across the restart
    second = records[len(first):]
    # The first restart of an account left in its first start's state says so (`restart`, no longer `fresh start`),
    # then records its start.
    said, start = second[0], second[1]
    assert (said["event"], said["state"], said["reason"]) == ("engine_state", "RUNNING", "restart"), said
    assert start["event"] == "run" and start["phase"] == "start"
    assert start["detail"]["state"] == "RUNNING" and start["detail"]["positions"] == positions
    assert second[-1]["event"] == "run" and second[-1]["detail"]["bars"] == 80  # 40 bars x 2 symbols
    assert sum(1 for r in second if r["event"] == "decision") > 0
    assert db_value(db, "SELECT COUNT(*) FROM decisions") > decisions


def test_stop_signals_that_keep_coming_during_the_ordered_stop_do_not_cut_it_short(tmp_path, spawn_ffe):
    """A terminal's hang-up after the operator's own SIGHUP, an impatient second SIGTERM or Ctrl-C: once the stop is
    under way, a further signal has nothing more to stop; the engine still stops in order and exits 0. The alert
    webhook takes connections and never answers, so the stop gives its STOPPED alert the full grace to leave (2 s):
    the signals surely come during the stop, however late a loaded host lets this process send them."""
    audit = tmp_path / "logs" / "audit.jsonl"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # never accepted: a request waits for an answer that does not come
    hook = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    p = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(**PACED, FFE_ALERTS__WEBHOOK_URL=hook))
    _started(p, audit, "order")
    p.send(signal.SIGTERM)
    sent = 0
    while p.alive():
        p.send((signal.SIGHUP, signal.SIGTERM, signal.SIGINT)[sent % 3])
        sent += 1
        time.sleep(0.001)
    assert sent > 3
    assert p.wait(timeout=20) == 0, p.stderr
    assert "Traceback" not in p.stderr
    silent.close()
    records = audit_lines(audit)
    assert records[-1]["event"] == "run" and records[-1]["phase"] == "stop"
    assert "the engine is already stopping" in p.stderr


def test_a_start_given_up_leaves_the_signals_as_they_were_for_what_the_process_starts_next(tmp_path):
    """`ffe run` in a process that goes on (here, this one) and whose engine never started (another holds the data
    directory): the signals' handlers are put back as they were, never left ignored, which a process started
    later would inherit (a backtest that Ctrl-C could not stop)."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    starter_config(tmp_path)
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "ffe.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"{os.getpid()} engine\n")  # an engine's lock, naming it (a lock that names nobody is waited for)
        held.flush()
        proc = ffe_in_process(tmp_path, "run", "--headless", "--max-bars", "3")
    assert proc.returncode != 0 and "another ffe engine" in proc.stderr, proc
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_a_host_run_and_stopped_in_a_process_that_goes_on_leaves_its_signals_as_they_were(tmp_path, spawn_ffe):
    """A host's run and ordered stop in a process that does not exit next (here, this test's): the handlers from
    before are put back, never left ignored, or every process started after it inherits SIGINT ignored and a
    backtest there cannot be stopped by Ctrl-C. Only `ffe run`, whose process exits next, ends ignoring them."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    async def run_and_stop() -> int:
        async with engine_session(make_settings(tmp_path / "run"), max_bars=5) as host:
            return await host.run()

    assert asyncio.run(run_and_stop()) == 0
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before

    p = spawn_ffe(tmp_path, "backtest", BTC_CSV, ETH_CSV)
    wait_until(lambda: "engine started" in p.stderr, what="the backtest to start")
    p.send(signal.SIGINT)
    assert p.wait(timeout=60) == 130, p.stderr


def test_sigusr1_halts_a_headless_engine_whose_loop_goes_on_until_sigterm(tmp_path, spawn_ffe):
    audit = tmp_path / "logs" / "audit.jsonl"
    db = tmp_path / "data" / "ffe.db"
    p = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(**PACED))
    _started(p, audit, "decision", 20)
    p.send(signal.SIGUSR1)
    wait_until(lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", timeout=20,
               what="HALTED in the engine_state table")
    assert db_rows(db, "SELECT reason, by FROM engine_state") == [("SIGUSR1", "signal")]
    wait_until(lambda: count_events(audit, "kill_switch") == 1, timeout=20, what="the kill_switch event")

    # The loop goes on: decisions keep being made and recorded, while HALTED.
    after_halt = count_events(audit, "decision")
    wait_until(lambda: count_events(audit, "decision") >= after_halt + 20 or not p.alive(), timeout=30,
               what="decisions after the halt")
    assert p.alive(), p.stderr
    p.send(signal.SIGTERM)
    assert p.wait(timeout=20) == 0, p.stderr

    records = audit_lines(audit)
    kill = next(r for r in records if r["event"] == "kill_switch")
    later = [r for r in records if r["seq"] > kill["seq"]]
    assert sum(1 for r in later if r["event"] == "decision") >= 20
    assert not [r for r in later if r["event"] == "fill"]  # nothing was left working at the venue
    assert not [r for r in later if r["event"] == "order" and r["status"] in ("new", "open")]
    for d in (r for r in later if r["event"] == "decision" and r["gates"]):
        assert d["gates"][0]["code"] == "ENGINE_STATE" and d["gates"][0]["passed"] is False
    assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
    assert db_value(db, "SELECT COUNT(*) FROM orders WHERE status IN ('new', 'in_doubt', 'open')") == 0
    assert json.loads(db_value(db, "SELECT data FROM events ORDER BY seq DESC LIMIT 1"))["detail"]["state"] == "HALTED"


def _handles(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` now (Linux: the SigCgt mask of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    return bool(int(mask, 16) >> (sig - 1) & 1)


BARE = ("import signal, time\n"
        "for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):\n"
        "    signal.signal(sig, lambda *a: None)\n"
        "time.sleep(60)\n")


def _cpu_s(pid: int) -> float:
    """The CPU time process `pid` has had so far, in seconds (Linux: /proc/PID/schedstat, nanoseconds). A start
    measured in it is not stretched by a loaded host, as one measured on the clock is."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def _bare_interpreter_cpu_s() -> float:
    """How much CPU a bare interpreter, started as ffe is, takes to handle its first signals: the part of a start no
    program can take a signal in."""
    proc = subprocess.Popen([sys.executable, "-c", BARE], env=ffe_env(), stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: _handles(proc.pid, signal.SIGUSR1), timeout=30, interval=0.001, what="a bare start")
        return _cpu_s(proc.pid)  # it sleeps once it handles them: what it has had is what the start took
    finally:
        proc.kill()
        proc.wait()


def _signal_early(p, audit, sig: int, bare_cpu_s: float) -> None:
    """Send `sig` while `ffe run` is still starting (its settings, its imports: a quarter of a second of CPU or
    more), once the process handles it, or once it has had five times the CPU a bare interpreter takes to, and
    before the engine's first record."""
    budget = 5 * bare_cpu_s + 0.02
    while p.alive() and not _handles(p.pid, sig) and _cpu_s(p.pid) < budget:
        time.sleep(0.001)
    assert count_events(audit, "run") == 0  # the engine has not started yet
    p.send(sig)


def test_sigusr1_in_the_first_moments_of_a_start_halts_the_engine_once_started(tmp_path, spawn_ffe):
    audit = tmp_path / "logs" / "audit.jsonl"
    db = tmp_path / "data" / "ffe.db"
    bare_cpu_s = _bare_interpreter_cpu_s()
    p = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(**PACED))
    _signal_early(p, audit, signal.SIGUSR1, bare_cpu_s)
    def halted() -> bool:
        try:  # the database may be there before its tables are
            return db_value(db, "SELECT state FROM engine_state") == "HALTED"
        except sqlite3.OperationalError:
            return False

    wait_until(lambda: not p.alive() or db.exists() and halted(), timeout=30, what="HALTED in the engine_state table")
    assert p.alive(), f"exit {p.proc.returncode}: {p.stderr}"
    assert db_rows(db, "SELECT reason, by FROM engine_state") == [("SIGUSR1", "signal")]
    p.send(signal.SIGTERM)
    assert p.wait(timeout=20) == 0, p.stderr
    assert db_value(db, "SELECT COUNT(*) FROM fills") == 0  # halted before it could trade


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_in_the_first_moments_of_a_start_gives_the_start_up_in_order(tmp_path, spawn_ffe, sig):
    audit = tmp_path / "logs" / "audit.jsonl"
    bare_cpu_s = _bare_interpreter_cpu_s()
    p = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(**PACED))
    _signal_early(p, audit, sig, bare_cpu_s)
    assert p.wait(timeout=30) == 0, p.stderr
    assert "stopped while starting: nothing was sent" in p.stderr
    assert "Traceback" not in p.stderr
    assert count_events(audit, "order") == 0


def test_after_sigkill_nothing_is_torn_and_a_restart_resolves_what_was_in_flight(tmp_path, spawn_ffe):
    """No orderly stop at all: the audit file still holds only whole lines, the database is sound, and the
    restart picks up the journal (orders in flight resolved against the venue's book) and continues the seq."""
    audit = tmp_path / "logs" / "audit.jsonl"
    db = tmp_path / "data" / "ffe.db"
    p = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(**PACED))
    _started(p, audit, "fill", 3)
    p.send(signal.SIGKILL)
    assert p.wait(timeout=20) == -signal.SIGKILL

    assert db_value(db, "PRAGMA integrity_check") == "ok"
    before = audit_lines(audit)
    assert_strictly_increasing([r["seq"] for r in before])
    assert before[-1]["event"] != "run" or before[-1]["phase"] != "stop"  # it really did not stop in order

    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "10")
    assert again.returncode == 0, again.stderr
    records = audit_lines(audit)
    # Lines written just before the kill whose transaction never committed are set aside, not kept in the trail.
    aside = [r for f in sorted(audit.parent.glob("audit.jsonl.uncommitted-after-*")) for r in audit_lines(f)]
    kept = before[: len(before) - len(aside)]
    assert kept + aside == before
    assert records[: len(kept)] == kept
    assert_strictly_increasing([r["seq"] for r in records])
    assert records[-1]["event"] == "run" and records[-1]["phase"] == "stop"
    assert db_value(db, "SELECT COUNT(*) FROM orders WHERE status IN ('new', 'in_doubt')") == 0
    assert db_value(db, "PRAGMA integrity_check") == "ok"


def test_a_start_after_a_run_that_ended_without_its_stop_says_so(tmp_path, spawn_ffe):
    """SIGKILL (or the machine stopping) leaves the last run without its stop record: the next start says so, in
    its log and its run record, where an operator reading the trail sees that the last run was cut short, and
    a clean stop before a start leaves no such word."""
    audit = tmp_path / "logs" / "audit.jsonl"
    p = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(**PACED))
    _started(p, audit, "decision", 5)
    p.kill()
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert again.returncode == 0, again.stderr
    assert "the last run ended without its stop record" in again.stderr, again.stderr
    starts = [r for r in audit_lines(audit) if r["event"] == "run" and r["phase"] == "start"]
    assert starts[-1]["detail"]["last_run"] == "ended without its stop record"
    third = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert third.returncode == 0 and "ended without its stop record" not in third.stderr, third.stderr
    starts = [r for r in audit_lines(audit) if r["event"] == "run" and r["phase"] == "start"]
    assert "last_run" not in starts[-1]["detail"]
