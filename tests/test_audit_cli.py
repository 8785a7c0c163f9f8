"""`ffe audit tail`: the last records of the audit trail, filtered, as lines or raw JSON, and followed as the file
grows, is created, truncated or rotated; never a partial line. Real engine runs, real files, real processes; of the
refusals, those after the first run in the test process."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

import forked_ffe
from conftest import db_rows, ffe_in_process, starter_config, wait_until
from test_audit_trail_complete import an_uncommitted_fill, append_uncommitted

WAIT_S = 60  # a safety net against a hung process, never a speed assertion


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFE_")}
    env["FFE_MONITOR__PORT"] = "0"  # any free port: engines of other tests may be up at the same time
    env.update(extra)
    return env


def ffe(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return forked_ffe.run([sys.executable, "-m", "ffe_cli", *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=WAIT_S)


def run_engine(root: Path, bars: int = 300, **extra: str) -> subprocess.CompletedProcess:
    # Weights move from the first closed trade on, so a short run has `weights` events too.
    env = clean_env(FFE_MARKET__SPEED="0", FFE_ENSEMBLE__WARMUP_TRADES="1")
    env.update({k: v for k, v in extra.items() if k.startswith("FFE_AUDIT__")})
    starter_config(root)
    proc = forked_ffe.run([sys.executable, "-m", "ffe_cli", "run", "--headless", "--max-bars", str(bars),
                           "--data-dir", "data", "--log-dir", "logs"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One headless engine run on the simulated market; its audit file is logs/audit.jsonl under the root."""
    root = tmp_path_factory.mktemp("engine")
    run_engine(root)
    return root


def audit_lines(root: Path) -> list[bytes]:
    return (root / "logs" / "audit.jsonl").read_bytes().splitlines()


def records(root: Path) -> list[dict]:
    return [json.loads(x) for x in audit_lines(root)]


class Follower:
    """`ffe audit tail -f` as a child process, its stdout read line by line on a thread."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = forked_ffe.Popen([sys.executable, "-m", "ffe_cli", "audit", "tail", "-f", *args],
                                     cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.errors), daemon=True).start()

    @staticmethod
    def _pump(stream, into: queue.Queue) -> None:
        for line in stream:
            into.put(line.rstrip("\n"))

    def line(self) -> str:
        try:
            return self.lines.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError("no line from `ffe audit tail -f`") from None

    def error_line(self) -> str:
        try:
            return self.errors.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError("no line on the stderr of `ffe audit tail -f`") from None

    def read_bytes_so_far(self) -> int:
        """Bytes this process has read with read(2) so far (Linux /proc): tells when it has looked at the file."""
        for row in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if row.startswith("rchar:"):
                return int(row.split()[1])
        raise AssertionError("no rchar in /proc/PID/io")

    def wait_until_read(self, before: int, n: int) -> None:
        """Block until the follower has read at least `n` more bytes than `before` (it polls the file)."""
        done = threading.Event()
        for _ in range(WAIT_S * 100):
            if self.read_bytes_so_far() >= before + n:
                return
            done.wait(0.01)
        raise AssertionError("the follower never read the appended bytes")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=WAIT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def follower_factory():
    made: list[Follower] = []

    def make(cwd: Path, *args: str) -> Follower:
        f = Follower(cwd, *args)
        made.append(f)
        return f

    yield make
    for f in made:
        f.kill()


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def rec_line(seq: int, event: str = "error", **fields) -> bytes:
    rec = {"ts": "2026-01-02T03:04:05.678Z", "seq": seq, "event": event, **fields}
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


# --------------------------------------------------------------------------------------------------- last N records
def test_the_engine_run_left_a_varied_audit_trail(run):
    events = {r["event"] for r in records(run)}
    assert {"engine_state", "decision", "order", "fill", "position_opened", "position_closed", "weights"} <= events


def test_tail_n_prints_the_last_n_records_one_line_each(run):
    proc = ffe(run, "audit", "tail", "-n", "5", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == 5
    last = records(run)[-5:]
    for line, rec in zip(out, last):
        assert line.startswith(rec["ts"] + " ")  # the recorded time, ISO 8601 UTC with its zone
        assert line.split()[1] == str(rec["seq"]) and line.split()[2] == rec["event"]


def test_tail_defaults_to_twenty_records(run):
    proc = ffe(run, "audit", "tail", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    assert [int(x.split()[1]) for x in proc.stdout.splitlines()] == [r["seq"] for r in records(run)[-20:]]


def test_json_prints_the_raw_lines_with_increasing_seq(run):
    proc = ffe(run, "audit", "tail", "-n", "120", "--json", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.encode().splitlines()
    assert out == audit_lines(run)[-120:]
    seqs = [json.loads(x)["seq"] for x in out]
    assert all(b > a for a, b in zip(seqs, seqs[1:]))


def test_event_filter_keeps_only_the_named_events(run):
    proc = ffe(run, "audit", "tail", "-n", "100000", "--event", "order,position_closed", "--json", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(x) for x in proc.stdout.splitlines()]
    want = [r for r in records(run) if r["event"] in ("order", "position_closed")]
    assert got == want and len(got) > 10

    proc = ffe(run, "audit", "tail", "-n", "3", "--event", " fill , order ", "--log-dir", "logs")
    lines = proc.stdout.splitlines()
    want_seqs = [r["seq"] for r in records(run) if r["event"] in ("fill", "order")][-3:]
    assert [int(x.split()[1]) for x in lines] == want_seqs

    # A typo is refused with the known names, rather than matching nothing and exiting 0.
    proc = ffe(run, "audit", "tail", "--event", "fills", "--log-dir", "logs")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("ffe: error: --event: unknown event fills (known: ") and "fill" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_human_lines_carry_the_fields_that_matter(run):
    recs = records(run)

    def line_for(rec: dict) -> str:
        proc = ffe(run, "audit", "tail", "-n", "100000", "--event", rec["event"], "--log-dir", "logs")
        for line in proc.stdout.splitlines():
            if line.split()[1] == str(rec["seq"]):
                return line
        raise AssertionError(f"seq {rec['seq']} not printed")

    d = next(r for r in recs if r["event"] == "decision" and r["outcome"] == "submitted")
    line = line_for(d)
    for text in (d["decision_id"], d["symbol"], d["action"], f"conf {d['confidence']:.2f}", f"tier {d['tier']}",
                 "submitted", d["client_order_id"]):
        assert text in line

    rej = next(r for r in recs if r["event"] == "decision" and r["outcome"] == "rejected")
    assert rej["reason"].split(":")[0] in line_for(rej)  # the failing gate's code

    o = next(r for r in recs if r["event"] == "order" and r["reason"] in ("stop_loss", "take_profit"))
    line = line_for(o)
    for text in (o["client_order_id"], o["side"], o["symbol"], o["status"], o["reason"], o["decision_id"]):
        assert text in line

    c = next(r for r in recs if r["event"] == "position_closed")
    line = line_for(c)
    assert f"pnl {c['pnl']:+,.2f}" in line and c["reason"] in line and c["symbol"] in line

    s = next(r for r in recs if r["event"] == "engine_state")
    change = s["state"] if s["state"] == s["previous"] else f"{s['previous']} -> {s['state']}"  # a restart: once
    assert f"engine_state {change}: {s['reason']}" in line_for(s)

    w = next(r for r in recs if r["event"] == "weights")
    line = line_for(w)
    assert all(f"{k}={v:.3f}" in line for k, v in w["weights"].items())


def test_missing_audit_file_is_a_one_line_error_naming_it(tmp_path):
    proc = ffe(tmp_path, "audit", "tail", "--log-dir", "nowhere")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and str(Path("nowhere") / "audit.jsonl") in proc.stderr


def test_bad_arguments_are_usage_errors(run):
    # Refused before the file is read: in this process, as the refusals above (--event fills, a missing file) run
    # as real processes.
    assert ffe_in_process(run, "audit", "tail", "-n", "-1", "--log-dir", "logs", env=clean_env()).returncode == 2
    proc = ffe_in_process(run, "audit", "tail", "--event", ",", "--log-dir", "logs", env=clean_env())
    assert proc.returncode == 2 and "--event" in proc.stderr


def test_a_partial_trailing_line_is_never_printed(run, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    whole = audit_lines(run)[-3:]
    (logs / "audit.jsonl").write_bytes(b"\n".join(whole) + b'\n{"ts":"2026-01-01T00:00:00.000Z","seq":99')
    proc = ffe(tmp_path, "audit", "tail", "-n", "5", "--json", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode().splitlines() == whole


def test_long_lines_across_read_blocks_and_a_bad_line(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [rec_line(i, "error", message="x" * (i * 50_000), where="here") for i in range(1, 6)]
    lines.insert(2, b"this is not json\n")
    (logs / "audit.jsonl").write_bytes(b"".join(lines))
    proc = ffe(tmp_path, "audit", "tail", "-n", "4", "--json", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode().splitlines() == [x.rstrip(b"\n") for x in lines if x.startswith(b"{")][-4:]
    offset = sum(len(x) for x in lines[:2])
    assert f"no audit record at byte {offset}" in proc.stderr


def test_lines_that_are_no_record_are_said_once_with_their_count(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [rec_line(i, message=f"m{i}", where="w") for i in range(1, 6)]
    for at in (4, 2, 1):
        lines.insert(at, b"not a record\n")
    (logs / "audit.jsonl").write_bytes(b"".join(lines))
    proc = ffe(tmp_path, "audit", "tail", "-n", "10", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    assert [x.split()[-1] for x in proc.stdout.splitlines()] == ["m1", "m2", "m3", "m4", "m5"]
    offset = len(lines[0])  # the first of them
    assert proc.stderr.splitlines() == [f"ffe: warning: {Path('logs') / 'audit.jsonl'}: skipped 3 lines that are no "
                                        f"audit record (the first at byte {offset})"]


def test_a_file_that_holds_no_record_is_bad_input_said_in_one_line(tmp_path):
    # A report or any other text put where the trail is: thousands of lines, none a record. One line, exit 2.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text(json.dumps({"bars": 60, "curve": list(range(3000))}, indent=1))
    proc = ffe(tmp_path, "audit", "tail", "-n", "1", "--log-dir", "logs")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"ffe: error: {Path('logs') / 'audit.jsonl'}: holds no audit record (3004 "
                                        "lines, none a record of the trail): is --log-dir right?"]


def test_a_report_on_one_line_where_the_trail_is_holds_no_record(tmp_path):
    # A JSON object, but no record of the trail (no seq, no event): not shown as one.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text(json.dumps({"symbols": ["BTC/USD"], "bars": 599}) + "\n")
    proc = ffe(tmp_path, "audit", "tail", "-n", "1", "--log-dir", "logs")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"ffe: error: {Path('logs') / 'audit.jsonl'}: holds no audit record (1 "
                                        "line, none a record of the trail): is --log-dir right?"]


def test_the_last_lines_of_a_huge_file_are_read_from_its_end(tmp_path):
    """64 GiB of (sparse) leading bytes: reading the whole file, or keeping it in memory, could not finish."""
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "audit.jsonl"
    tail_lines = [rec_line(i, "error", message=f"m{i}", where="w") for i in range(1, 4)]
    with open(path, "wb") as f:
        f.write(rec_line(0))
        f.seek(64 * 2**30)
        f.write(b"\n" + b"".join(tail_lines))
    assert path.stat().st_size > 64 * 2**30
    proc = ffe(tmp_path, "audit", "tail", "-n", "3", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    assert [x.split()[-1] for x in proc.stdout.splitlines()] == ["m1", "m2", "m3"]


# --------------------------------------------------------------------------------------------------- follow
def test_follow_prints_appended_lines_holds_back_a_partial_one_and_stops_on_sigterm(tmp_path, follower_factory):
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "audit.jsonl"
    path.write_bytes(rec_line(1, message="one", where="w") + rec_line(2, message="two", where="w"))
    f = follower_factory(tmp_path, "-n", "1", "--json", "--log-dir", "logs")
    assert json.loads(f.line())["seq"] == 2

    append(path, rec_line(3, message="three", where="w") + rec_line(4, "order", client_order_id="c4"))
    assert json.loads(f.line())["seq"] == 3
    assert json.loads(f.line())["client_order_id"] == "c4"

    # Half a line: the follower reads it, holds it back, and prints it only once its newline has arrived.
    whole = rec_line(5, message="five", where="w")
    before = f.read_bytes_so_far()
    append(path, whole[:40])
    f.wait_until_read(before, 40)
    append(path, whole[40:])
    assert f.line().encode() + b"\n" == whole

    assert f.stop(signal.SIGTERM) == 0
    assert f.lines.empty()


def test_follow_stops_on_sigint_with_exit_0_and_filters_events(tmp_path, follower_factory):
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "audit.jsonl"
    fill = dict(symbol="X", side="buy", quantity=1.5, price=10.0, fee=0.01)
    path.write_bytes(rec_line(1, "fill", client_order_id="c1", **fill) + rec_line(2))
    f = follower_factory(tmp_path, "-n", "1", "--event", "fill", "--log-dir", "logs")
    first = f.line()
    assert first.split()[1:3] == ["1", "fill"] and first.endswith("order c1")  # started, at the end of the file
    append(path, rec_line(3, "decision", decision_id="d3") + rec_line(4, "fill", client_order_id="c4", **fill))
    line = f.line()
    assert line.split()[1:] == ["4", "fill", "X", "buy", "1.5", "@", "10.0000", "fee", "0.0100", "order", "c4"]
    assert f.stop(signal.SIGINT) == 0
    assert f.lines.empty()


def test_follow_waits_for_the_file_and_survives_truncation_and_rotation(tmp_path, follower_factory):
    logs = tmp_path / "logs"
    path = logs / "audit.jsonl"
    f = follower_factory(tmp_path, "--json", "--log-dir", "logs")
    assert f.error_line() == f"ffe: waiting for {Path('logs') / 'audit.jsonl'} to appear"
    logs.mkdir()
    path.write_bytes(rec_line(1, message="created later", where="w"))
    assert json.loads(f.line())["message"] == "created later"

    append(path, rec_line(2, message="x" * 200, where="w"))
    assert json.loads(f.line())["seq"] == 2
    path.write_bytes(rec_line(3, message="after truncation", where="w"))  # shorter than before: truncated
    assert json.loads(f.line())["message"] == "after truncation"

    path.rename(logs / "audit.jsonl.1")
    path.write_bytes(rec_line(4, message="rotated", where="w"))
    assert json.loads(f.line())["message"] == "rotated"
    append(path, rec_line(5, message="after rotation", where="w"))
    assert json.loads(f.line())["message"] == "after rotation"

    assert f.stop() == 0


def test_follow_a_running_engine_from_before_it_starts(tmp_path, follower_factory):
    f = follower_factory(tmp_path, "--json", "--log-dir", "logs")
    assert "waiting for" in f.error_line()
    run_engine(tmp_path, bars=60)
    want = audit_lines(tmp_path)
    got = [f.line().encode() for _ in want]
    assert got == want
    seqs = [json.loads(x)["seq"] for x in got]
    assert seqs == list(range(1, len(want) + 1))
    assert f.stop() == 0


# ------------------------------------------------------------------------------------- follow across engine restarts
def committed_lines(root: Path) -> list[bytes]:
    """The database's records, in seq order: what the trail holds of what happened."""
    return [bytes(data) for _, data in db_rows(root / "data" / "ffe.db", "SELECT seq, data FROM events ORDER BY seq")]


def test_a_follower_shows_each_committed_record_once_across_a_kill_and_the_start_that_sets_aside_the_rest(
        tmp_path, follower_factory):
    """A kill between the audit write and the commit leaves records in the file that the database never committed
    (here a fill and its order's status); the next start sets them aside, cutting the file back, and the trail goes
    on from the database's last event under the same seqs. A follower shows what happened: each committed record
    once, in seq order, and nothing the database never committed; `tail` without -f leaves those out too."""
    run_engine(tmp_path, bars=40)
    audit = tmp_path / "logs" / "audit.jsonl"
    f = follower_factory(tmp_path, "-n", "1000000", "--json")
    shown = [f.line().encode() for _ in committed_lines(tmp_path)]
    assert shown == committed_lines(tmp_path)
    last = json.loads(shown[-1])["seq"]

    before = f.read_bytes_so_far()
    ahead = append_uncommitted(audit, an_uncommitted_fill(tmp_path, last))
    f.wait_until_read(before, sum(len(line) + 1 for line in ahead))
    now = ffe(tmp_path, "audit", "tail", "-n", "2", "--json")
    assert now.returncode == 0, now.stderr
    assert now.stdout.encode().splitlines() == shown[-2:]
    assert now.stderr == (f"ffe: 2 records after seq {last} are not in the database (being written, or written just "
                          "before the engine was killed and never committed): not shown\n")

    run_engine(tmp_path, bars=5)  # sets the two aside, then goes on from seq last + 1
    committed = committed_lines(tmp_path)
    assert len(committed) > len(shown)
    shown += [f.line().encode() for _ in committed[len(shown):]]
    assert f.stop() == 0
    assert shown == committed
    assert f.lines.empty(), f.lines.get()


def test_a_start_that_sets_records_aside_while_the_follower_asks_about_them_shows_only_committed_ones(
        tmp_path, monkeypatch):
    """A follower holding back records the database has not committed asks the database about them after reading
    them from the file. A start falling just between (it sets them aside, cuts the file back and commits its own
    records under the same seqs) made it print the bytes read before, which the database never committed, as
    those seqs; its place in the file then fell inside the new lines, and the committed records were skipped.
    Here that start runs at the follower's question about the records it holds back."""
    from ffe_engine import audittool
    from ffe_engine.store import EventHead

    run_engine(tmp_path, bars=40)  # with a fill
    audit = tmp_path / "logs" / "audit.jsonl"
    last = json.loads(committed_lines(tmp_path)[-1])["seq"]
    uncommitted = append_uncommitted(audit, an_uncommitted_fill(tmp_path, last))
    real_last_seq = EventHead.last_seq
    asked, restarted = [], []

    def last_seq(head: EventHead) -> int | None:
        asked.append(True)
        if len(asked) == 3:  # tail's look, the follow's first look, then its question about the records held back
            run_engine(tmp_path, bars=5)
            restarted.append(True)
        return real_last_seq(head)

    monkeypatch.setattr(EventHead, "last_seq", last_seq)
    shown = tmp_path / "shown.jsonl"

    def engine() -> None:
        try:
            wait_until(lambda: restarted, timeout=WAIT_S, what="the start")
            deadline = time.monotonic() + 10  # the assertions below say what is missing
            while len(shown.read_bytes().splitlines()) < len(committed_lines(tmp_path)) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # ends the follower, as ^C does

    with open(shown, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        writer = threading.Thread(target=engine, daemon=True)
        writer.start()
        try:
            assert audittool.tail(audit, 1000000, None, True, True, tmp_path / "data" / "ffe.db") == 0
        finally:
            monkeypatch.undo()
    writer.join(WAIT_S)
    assert restarted and list((tmp_path / "logs").glob("audit.jsonl.uncommitted-after-*"))
    committed = committed_lines(tmp_path)
    assert not set(uncommitted) & set(committed)
    assert shown.read_bytes().splitlines() == committed


@pytest.mark.parametrize("rotate_mb", ["0", "0.02"], ids=["one file", "rotated every 20 KB"])
def test_a_follower_through_kills_and_restarts_of_a_trading_engine_shows_the_database_s_records_once(
        tmp_path, follower_factory, spawn_ffe, rotate_mb):
    """`ffe audit tail -f` running while a trading engine is killed at random moments and started again: what it
    shows is exactly the database's records, each once, in seq order (the audit trail as the database has it),
    the trail in one file or rotated among the kills."""
    rng = random.Random(3)
    starter_config(tmp_path)
    f = follower_factory(tmp_path, "--json", "-n", "0")
    assert "waiting for" in f.error_line()
    env = clean_env(FFE_MARKET__SEED="7", FFE_ENGINE__WARMUP_BARS="50", FFE_MARKET__SPEED="200",
                    FFE_AUDIT__ROTATE_MB=rotate_mb)
    for n in range(4):
        proc = spawn_ffe(tmp_path, "run", "--headless", env=env, name=f"run{n}")
        wait_until(lambda: "engine started" in proc.stderr, timeout=60, what="the engine to start")
        time.sleep(rng.uniform(0.2, 1.0))
        proc.kill()
    run_engine(tmp_path, bars=5, **env)
    committed = committed_lines(tmp_path)
    if rotate_mb != "0":
        assert len(list((tmp_path / "logs").glob("audit-*.jsonl"))) > 1
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT COUNT(*) FROM orders")[0][0] > 0
    shown = [f.line().encode() for _ in committed]
    assert f.stop() == 0
    assert shown == committed
    assert f.lines.empty(), f.lines.get()


def test_a_follower_goes_on_with_a_database_put_in_place_of_the_one_it_started_with(tmp_path, follower_factory):
    """A database replaced by another file while a follower runs (a restore puts its copy in place): the follower
    asks the new file what is committed, and shows the records of the next run."""
    run_engine(tmp_path, bars=20)
    f = follower_factory(tmp_path, "-n", "1000000", "--json")
    shown = [f.line().encode() for _ in committed_lines(tmp_path)]
    db = tmp_path / "data" / "ffe.db"
    copy = sqlite3.connect(tmp_path / "copy.db")
    with closing(sqlite3.connect(db)) as source:
        source.backup(copy)
    copy.close()
    os.replace(tmp_path / "copy.db", db)
    run_engine(tmp_path, bars=5)
    committed = committed_lines(tmp_path)
    shown += [f.line().encode() for _ in committed[len(shown):]]
    assert f.stop() == 0
    assert shown == committed


def test_records_never_committed_are_left_out_across_a_rotation_that_fell_among_them(tmp_path):
    """A kill can leave records never committed at the end of a rotated file and in the file after it: `tail`
    shows the last committed ones, from the rotated file, and counts the others once."""
    run_engine(tmp_path, bars=40)  # with a fill
    logs = tmp_path / "logs"
    audit = logs / "audit.jsonl"
    shown = committed_lines(tmp_path)
    last = json.loads(shown[-1])["seq"]
    first, second = an_uncommitted_fill(tmp_path, last)
    append_uncommitted(audit, [first])
    audit.rename(logs / f"audit-{1:012d}.jsonl")
    append_uncommitted(audit, [second])
    now = ffe(tmp_path, "audit", "tail", "-n", "3", "--json")
    assert now.returncode == 0, now.stderr
    assert now.stdout.encode().splitlines() == shown[-3:]
    assert now.stderr.startswith(f"ffe: 2 records after seq {last} are not in the database"), now.stderr


def test_with_a_database_that_cannot_be_read_the_records_are_shown_as_the_file_holds_them(tmp_path):
    run_engine(tmp_path, bars=20)
    (tmp_path / "data" / "ffe.db").write_bytes(b"this is no database " * 100)
    for name in ("ffe.db-wal", "ffe.db-shm"):
        (tmp_path / "data" / name).unlink(missing_ok=True)
    now = ffe(tmp_path, "audit", "tail", "-n", "2", "--json")
    assert now.returncode == 0, now.stderr
    assert now.stdout.encode().splitlines() == audit_lines(tmp_path)[-2:]
    assert now.stderr == (f"ffe: warning: cannot read the database {Path('data') / 'ffe.db'}: the records are shown "
                          "as the audit file holds them, with any it never committed\n")


def test_a_follower_waits_in_a_rotated_file_for_the_commit_of_the_records_it_ends_with(tmp_path, follower_factory):
    """The trail is written ahead of the database, and a rotation can fall between a record's write and its commit:
    a follower holding such a record in the file just rotated waits there for the commit, and only then goes on in
    the new file, in seq order."""
    logs, data = tmp_path / "logs", tmp_path / "data"
    logs.mkdir()
    data.mkdir()
    db = sqlite3.connect(data / "ffe.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    lines = {seq: rec_line(seq, message=f"record {seq}", where="w") for seq in range(1, 8)}

    def commit(*seqs: int) -> None:
        db.executemany("INSERT INTO events VALUES (?, ?)", [(seq, lines[seq].rstrip(b"\n")) for seq in seqs])

    audit = logs / "audit.jsonl"
    audit.write_bytes(b"".join(lines[seq] for seq in range(1, 6)))
    commit(1, 2, 3)
    f = follower_factory(tmp_path, "-n", "10", "--json")
    assert [json.loads(f.line())["seq"] for _ in range(3)] == [1, 2, 3]
    audit.rename(logs / f"audit-{1:012d}.jsonl")
    audit.write_bytes(lines[6] + lines[7])
    before = f.read_bytes_so_far()
    f.wait_until_read(before, 3 * len(lines[4] + lines[5]))  # it has looked again a few times
    commit(4, 5, 6, 7)
    assert [json.loads(f.line())["seq"] for _ in range(4)] == [4, 5, 6, 7]
    assert f.stop() == 0
    db.close()


def test_a_rotation_between_choosing_the_next_file_and_opening_it_skips_no_record(tmp_path, monkeypatch):
    """A follower done with a rotated file chooses the file holding the next record (the current one, when no
    rotated file starts after it), then opens it by name. A rotation falling in between (the engine renames the
    current file and starts a new one; a loaded machine can deschedule the follower there) made it open the new
    current file: a whole file of records skipped, and nothing said. Here that rotation falls at the open."""
    from ffe_engine import audittool

    logs = tmp_path / "logs"
    logs.mkdir()
    audit = logs / "audit.jsonl"
    append(logs / f"audit-{1:012d}.jsonl", b"".join(rec_line(seq, message="m", where="w") for seq in (1, 2, 3)))
    append(audit, b"".join(rec_line(seq, message="m", where="w") for seq in (4, 5, 6)))

    def rotate(first: int, seqs: tuple[int, ...]) -> None:  # as the engine's writer: rename, then a new file
        audit.rename(logs / f"audit-{first:012d}.jsonl")
        append(audit, b"".join(rec_line(seq, message="m", where="w") for seq in seqs))

    pending = []
    real_open = open

    def opening(file, *args, **kw):
        if pending and Path(file) == audit:
            pending.pop()
            rotate(7, (10, 11, 12))  # after the follower chose audit.jsonl for seq 7, before it opens it
        return real_open(file, *args, **kw)

    monkeypatch.setattr(audittool, "open", opening, raising=False)
    shown = tmp_path / "shown.jsonl"

    def seqs() -> list[int]:
        return [json.loads(line)["seq"] for line in shown.read_text().splitlines() if line.strip()]

    def engine() -> None:
        wait_until(lambda: len(seqs()) == 6, timeout=WAIT_S, what="the first records shown")
        pending.append(True)
        rotate(4, (7, 8, 9))
        try:
            wait_until(lambda: len(seqs()) >= 12, timeout=10, what="every record shown")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # ends the follower, as ^C does

    with open(shown, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        writer = threading.Thread(target=engine, daemon=True)
        writer.start()
        assert audittool.tail(audit, 100, None, True, True) == 0
        monkeypatch.undo()
    writer.join(WAIT_S)
    assert not pending and seqs() == list(range(1, 13))


def test_a_log_directory_of_any_name_is_said_escaped_on_one_line_by_tail_and_verify(tmp_path):
    # The warning of a line skipped and verify's verdict named the trail's path as it was: a new line in the
    # directory's name split them, an escape sequence in it reached the terminal.
    logs = tmp_path / "lo\ng\x1b[2J"
    logs.mkdir()
    (logs / "audit.jsonl").write_bytes(rec_line(1, message="m", where="w") + b"not json\n"
                                       + rec_line(2, message="m", where="w"))
    tail = ffe(tmp_path, "audit", "tail", "--log-dir", str(logs))
    verify = ffe(tmp_path, "audit", "verify", "--log-dir", str(logs))
    [warning] = [line for line in tail.stderr.splitlines() if "skipped a line" in line]
    assert "lo\\ng\\x1b[2J" in warning and "\x1b" not in tail.stderr, tail.stderr
    assert verify.returncode == 1 and "\x1b" not in verify.stdout, verify.stdout
    [verdict] = verify.stdout.splitlines()
    assert verdict.startswith("audit trail NOT intact") and "lo\\ng\\x1b[2J" in verdict, verdict


def test_audit_tail_names_only_the_events_the_trail_records():
    """`--event log` matched nothing, silently: log lines go to the console and the log, never to the trail. Only
    the events the audit trail records are names --event takes, and the error lists those."""
    from ffe_engine.audittool import parse_events
    from ffe_engine.errors import UsageError
    from ffe_engine.events import EVENT_TYPES

    with pytest.raises(UsageError) as info:
        parse_events("order,log")
    assert "unknown event log" in str(info.value) and "order" in str(info.value)
    assert ", log," not in str(info.value) and "bar," not in str(info.value)
    assert parse_events("order,fill") == {"order", "fill"}
    assert not EVENT_TYPES["log"].audit


def test_a_report_without_its_last_newline_where_the_trail_is_holds_no_record(tmp_path):
    # Not an unfinished record (a kill cuts one short of its end, and a whole JSON object is no such cut): exit 2.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text(json.dumps({"symbols": ["BTC/USD"], "bars": 599}))
    proc = ffe(tmp_path, "audit", "tail", "-n", "1", "--log-dir", "logs")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"ffe: error: {Path('logs') / 'audit.jsonl'}: holds no audit record (1 "
                                        "line, none a record of the trail): is --log-dir right?"]


@pytest.mark.parametrize("command", [("audit", "tail", "-n", "1"), ("audit", "verify")], ids=["tail", "verify"])
def test_a_fifo_where_the_trail_is_is_refused_in_one_line_not_waited_on(tmp_path, command):
    import os

    logs = tmp_path / "logs"
    logs.mkdir()
    os.mkfifo(logs / "audit.jsonl")
    proc = ffe(tmp_path, *command, "--log-dir", "logs")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"ffe: error: {Path('logs') / 'audit.jsonl'}: is a FIFO, not a file; it was "
                                        "left as it is: move it away (is --log-dir right?)"], proc.stderr


def test_verify_of_a_report_without_its_last_newline_where_the_trail_is_holds_no_record(tmp_path):
    """One line, unfinished, that is no record cut short (a record starts with its time): not a trail with an
    unfinished last line, but no trail. A record cut short alone still verifies, with its note."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text(json.dumps({"symbols": ["BTC/USD"], "bars": 599}))
    proc = ffe(tmp_path, "audit", "verify", "--log-dir", "logs")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"ffe: error: {Path('logs') / 'audit.jsonl'}: holds no audit record (1 "
                                        "line, none a record of the trail): is --log-dir right?"]
    (logs / "audit.jsonl").write_bytes(b'{"ts":"2026-01-01T00:00:00.000Z","seq":1,"ev')
    proc = ffe(tmp_path, "audit", "verify", "--log-dir", "logs")
    assert proc.returncode == 0 and "unfinished last line" in proc.stdout, proc.stdout + proc.stderr
