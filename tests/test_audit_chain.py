"""The audit trail is tamper-evident: every line carries the hash of the line before it and the database stores the
chain head, so `ffe audit verify` finds an edited, deleted, inserted or reordered line, or a trail cut short, and
names the first bad seq (exit 1; 0 when intact, 2 when there is nothing to check). Real engine runs write the
trails; the CLI runs as a subprocess for the first check of each kind (intact, tampered, --json, each refusal, a
torn line), and in the test process for the checks after it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from conftest import ffe_env, ffe_in_process, run_bounded, run_ffe, starter_config, wait_until
from ffe_engine.audit import verify_trail
from ffe_engine.chain import GENESIS, ChainHead, line_hash, rotated_files


def run_engine(root: Path, bars: int, **env: str) -> None:
    proc = run_ffe(root, "run", "--headless", "--max-bars", str(bars), "--data-dir", "data", "--log-dir", "logs",
                   env=ffe_env(**env), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def verify(root: Path, *extra: str, ffe=run_ffe) -> tuple[int, str, str]:
    proc = ffe(root, "audit", "verify", "--data-dir", "data", "--log-dir", "logs", *extra)
    return proc.returncode, proc.stdout, proc.stderr


def lines(root: Path) -> list[bytes]:
    return (root / "logs" / "audit.jsonl").read_bytes().split(b"\n")[:-1]


def write_lines(root: Path, new: list[bytes]) -> None:
    (root / "logs" / "audit.jsonl").write_bytes(b"".join(x + b"\n" for x in new))


def seq_of(line: bytes) -> int:
    return int(json.loads(line)["seq"])


@pytest.fixture(scope="module")
def trail(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trail")
    run_engine(root, 40)
    run_engine(root, 10)  # a restart: seq and the chain go on from the trail's last record
    return root


@pytest.fixture
def copy(trail, tmp_path) -> Path:
    for d in ("data", "logs"):
        shutil.copytree(trail / d, tmp_path / d, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    shutil.copy(trail / "config.toml", tmp_path / "config.toml")
    return tmp_path


def test_each_line_carries_the_hash_of_the_one_before_and_the_database_the_head(trail):
    raw = lines(trail)
    recs = [json.loads(x) for x in raw]
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert recs[0]["prev"] == GENESIS
    assert all(r["prev"] == line_hash(p) for r, p in zip(recs[1:], raw))
    assert sum(r["event"] == "run" and r["phase"] == "start" for r in recs) == 2  # two runs, one chain
    con = sqlite3.connect(trail / "data" / "ffe.db")
    head = json.loads(con.execute("SELECT value FROM kv WHERE key = 'audit_head'").fetchone()[0])
    db_last = con.execute("SELECT seq, data FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    con.close()
    assert head == {"seq": db_last[0], "hash": line_hash(bytes(db_last[1]))}
    assert head["seq"] == recs[-1]["seq"]


def test_an_intact_trail_verifies(trail):
    code, out, err = verify(trail)
    assert code == 0, out + err
    n = len(lines(trail))
    assert f"audit trail intact: {n} records, seq 1..{n} in 1 file" in out
    assert f"chain head in data/ffe.db: seq {n}, matches" in out
    result = verify_trail(trail / "logs", ChainHead(n, line_hash(lines(trail)[-1])))
    assert result.ok and result.first_bad_seq is None and result.last_seq == n


def edit(raw: list[bytes], k: int) -> list[bytes]:
    rec = json.loads(raw[k - 1])
    rec["ts"] = "2020-01-01T00:00:00.000Z"  # a record's content changed, its prev left as it was
    raw[k - 1] = json.dumps(rec, separators=(",", ":")).encode()
    return raw


def delete(raw: list[bytes], k: int) -> list[bytes]:
    del raw[k - 1]
    return raw


def insert_forged(raw: list[bytes], k: int) -> list[bytes]:
    """A line made to pass for seq k: the right seq and the hash of the line before it (a careful forger)."""
    forged = {"ts": "2020-01-01T00:00:00.000Z", "seq": k, "event": "error",
              "message": "nothing happened", "where": "engine", "prev": line_hash(raw[k - 2]) if k > 1 else GENESIS}
    raw.insert(k - 1, json.dumps(forged, separators=(",", ":")).encode())
    return raw


def insert_copy(raw: list[bytes], k: int) -> list[bytes]:
    """Seq k's line copied in again right after itself."""
    raw.insert(k, raw[k - 1])
    return raw


def reorder(raw: list[bytes], k: int) -> list[bytes]:
    raw[k - 1], raw[k] = raw[k], raw[k - 1]
    return raw


def edit_prev(raw: list[bytes], k: int) -> list[bytes]:
    rec = json.loads(raw[k - 1])
    rec["prev"] = "f" * 64
    raw[k - 1] = json.dumps(rec, separators=(",", ":")).encode()
    return raw


TAMPER = [(edit, 30), (delete, 30), (insert_forged, 30), (insert_copy, 30), (reorder, 30), (edit_prev, 30),
          (edit, 1), (delete, 1), (reorder, 1)]


@pytest.mark.parametrize("tamper,k", TAMPER, ids=[f"{t.__name__}-{k}" for t, k in TAMPER])
def test_tampering_is_found_and_the_first_bad_seq_named(copy, tamper, k):
    raw = lines(copy)
    assert seq_of(raw[k - 1]) == k
    write_lines(copy, tamper(raw, k))
    code, out, err = verify(copy, ffe=run_ffe if (tamper, k) == TAMPER[0] else ffe_in_process)  # the first: a process
    assert code == 1, out + err
    assert out.startswith(f"audit trail NOT intact: first bad seq {k}: "), out
    assert "audit.jsonl:" in out  # names the file and line
    result = verify_trail(copy / "logs")
    assert not result.ok and result.first_bad_seq == k


def test_a_rewritten_last_line_is_found_through_the_database_head(copy):
    raw = lines(copy)
    n = len(raw)
    write_lines(copy, edit(raw, n))
    code, out, _ = verify(copy, ffe=ffe_in_process)
    assert code == 1 and f"first bad seq {n}: " in out, out
    assert "chain head" in out


def test_a_second_to_last_line_edited_is_named_not_the_last(copy):
    raw = lines(copy)
    n = len(raw)
    write_lines(copy, edit(raw, n - 1))
    code, out, _ = verify(copy, ffe=ffe_in_process)
    assert code == 1 and f"first bad seq {n - 1}: " in out, out


def test_a_trail_cut_short_is_found_through_the_database_head(copy):
    raw = lines(copy)
    n = len(raw)
    write_lines(copy, raw[:n - 5])  # the last five records gone: the chain that remains is whole
    assert verify_trail(copy / "logs").ok  # on its own the trail cannot tell
    code, out, _ = verify(copy, "--json")
    assert code == 1
    answer = json.loads(out)
    assert answer["ok"] is False and answer["first_bad_seq"] == n - 4
    assert f"seq {n - 4} to {n} are missing" in answer["reason"]


def test_a_trail_written_before_the_chain_goes_on_chained_from_its_last_line(copy):
    # Records as an earlier release wrote them: no prev, no chain head in the database.
    raw = [json.dumps({k: v for k, v in json.loads(x).items() if k != "prev"}, separators=(",", ":")).encode()
           for x in lines(copy)]
    write_lines(copy, raw)
    con = sqlite3.connect(copy / "data" / "ffe.db")
    con.executemany("UPDATE events SET data = ? WHERE seq = ?", [(x, seq_of(x)) for x in raw])
    con.execute("DELETE FROM kv WHERE key = 'audit_head'")
    con.commit()
    con.close()
    run_engine(copy, 5)
    code, out, err = verify(copy, ffe=ffe_in_process)
    assert code == 0, out + err
    assert f"note: the first {len(raw)} records were written before the trail was chained" in out
    after = lines(copy)
    assert json.loads(after[len(raw)])["prev"] == line_hash(raw[-1])
    # the unchained records are still checked for order
    write_lines(copy, reorder(after, 5))
    code, out, _ = verify(copy, ffe=ffe_in_process)
    assert code == 1 and "first bad seq 5: " in out


def test_nothing_to_verify_is_bad_input(tmp_path):
    proc = run_ffe(tmp_path, "audit", "verify", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"ffe: error: no audit trail at logs/audit.jsonl (is --log-dir "
                                                f"right?)"]


def test_a_database_that_cannot_be_read_is_bad_input(copy):
    (copy / "data" / "ffe.db").write_bytes(b"this is not a database, just some bytes of text" * 100)
    for p in (copy / "data").glob("ffe.db-*"):
        p.unlink()
    code, out, err = verify(copy)
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1 and "data/ffe.db" in err


def test_a_database_that_cannot_be_read_is_bad_input_with_no_trail_beside_it_too(copy):
    (copy / "data" / "ffe.db").write_bytes(b"this is not a database, just some bytes of text" * 100)
    for p in (copy / "data").glob("ffe.db-*"):
        p.unlink()
    with_trail = verify(copy, ffe=ffe_in_process)
    shutil.rmtree(copy / "logs")
    without = verify(copy)
    assert with_trail[0] == without[0] == 2, (with_trail, without)
    assert without[2] == with_trail[2] == (
        "ffe: error: data/ffe.db: the database is damaged (is no SQLite database: it does not begin with SQLite's "
        "header); it was left as it is: restore it from a backup, or move it and the audit trail away to start a new "
        "account\n")
    # `ffe audit tail` goes on without the database, as the file holds the records: there is no file here
    tail = run_ffe(copy, "audit", "tail", "--data-dir", "data", "--log-dir", "logs")
    assert tail.returncode == 2, tail.stderr
    assert tail.stderr.strip().splitlines()[-1] == "ffe: error: no audit file at logs/audit.jsonl (is --log-dir right?)"


def test_a_crash_mid_write_leaves_a_torn_line_that_is_set_aside_and_the_chain_stays_whole(copy, spawn_ffe):
    # A running engine killed outright, then the last write cut short (a power loss cuts it; a kill of the process
    # never does: lines go in whole batches).
    engine = spawn_ffe(copy, "run", "--headless", "--data-dir", "data", "--log-dir", "logs",
                       env=ffe_env(FFE_MARKET__SPEED="20"))
    before = len(lines(copy))
    wait_until(lambda: len(lines(copy)) > before + 10, timeout=60, what="records written")
    engine.send(signal.SIGKILL)
    engine.wait()
    raw = lines(copy)
    last = seq_of(raw[-1])
    torn = json.dumps({"ts": "2026-01-01T00:00:00.000Z", "seq": last + 1, "event": "error",
                       "message": "cut"}).encode()[:40]
    with open(copy / "logs" / "audit.jsonl", "ab") as f:
        f.write(torn)
    code, out, err = verify(copy)
    assert code == 0, out + err
    assert f"an unfinished last line ({len(torn)} bytes" in out
    run_engine(copy, 5)
    assert (copy / "logs" / f"audit.jsonl.torn-after-{last}").read_bytes() == torn
    code, out, err = verify(copy)
    assert code == 0, out + err
    assert "unfinished" not in out
    recs = [json.loads(x) for x in lines(copy)]
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))


def test_a_trail_whose_first_records_were_cut_away_stops_the_start_until_it_is_moved_away(copy):
    # A log rotation by an outside tool (logrotate's copytruncate) empties the file under the running engine, which
    # goes on appending: the file then starts in the middle of the trail. The next start refuses it with one line
    # that says what to do; the file moved away, the engine writes the whole trail again from the database.
    raw = lines(copy)
    write_lines(copy, raw[20:])
    proc = run_ffe(copy, "run", "--headless", "--max-bars", "3", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ffe: error: ")]
    assert "audit.jsonl" in line and "starts at seq 21, not 1" in line and "move this file away" in line, line
    assert lines(copy) == raw[20:]  # left as it was found
    (copy / "logs" / "audit.jsonl").rename(copy / "logs" / "cut.jsonl")
    run_engine(copy, 3)
    assert lines(copy)[:len(raw)] == raw
    code, out, err = verify(copy, ffe=ffe_in_process)
    assert code == 0, out + err


def test_rotation_under_a_running_engine_keeps_seq_and_the_chain_across_files(tmp_path):
    root = tmp_path
    config = root / "config.toml"
    starter_config(root)  # the documented defaults, then a small rotation size
    text = config.read_text()
    assert "rotate_mb = 0 " in text
    config.write_text(text.replace("rotate_mb = 0 ", "rotate_mb = 0.01", 1))  # about 10 KB a file
    run_engine(root, 60)
    run_engine(root, 20)
    logs = root / "logs"
    rotated = rotated_files(logs / "audit.jsonl")
    assert len(rotated) >= 5
    recs = []
    for p in [*rotated, logs / "audit.jsonl"]:
        raw = p.read_bytes()
        assert len(raw) <= 10 * 1024 + 4096  # a file may pass the size by less than one batch of records
        first = json.loads(raw.split(b"\n", 1)[0])
        if p != logs / "audit.jsonl":
            assert p.name == f"audit-{first['seq']:012d}.jsonl"
        recs += [(x, json.loads(x)) for x in raw.split(b"\n")[:-1]]
    assert [r["seq"] for _, r in recs] == list(range(1, len(recs) + 1))
    assert all(r["prev"] == line_hash(x) for (_, r), (x, _) in zip(recs[1:], recs))
    code, out, err = verify(root, ffe=ffe_in_process)
    assert code == 0, out + err
    assert f"seq 1..{len(recs)} in {len(rotated) + 1} files" in out

    # tail reads back across the files, in seq order
    proc = run_ffe(root, "audit", "tail", "-n", str(len(recs) + 10), "--json", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["seq"] for x in proc.stdout.splitlines()] == list(range(1, len(recs) + 1))
    proc = run_ffe(root, "audit", "tail", "-n", "3", "--json", "--log-dir", "logs")
    assert [json.loads(x)["seq"] for x in proc.stdout.splitlines()] == [len(recs) - 2, len(recs) - 1, len(recs)]

    # show: a decision whose record is in the oldest file
    did = next(r["decision_id"] for _, r in recs if r["event"] == "decision")
    proc = run_ffe(root, "audit", "show", did, "--json", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["decision_id"] == did

    # a line deleted from a rotated file is found there
    second = rotated[1]
    raw = second.read_bytes().split(b"\n")[:-1]
    gone = seq_of(raw[1])
    second.write_bytes(b"".join(x + b"\n" for x in raw[:1] + raw[2:]))
    code, out, _ = verify(root, ffe=ffe_in_process)
    assert code == 1 and f"first bad seq {gone}: " in out and second.name in out, out


async def test_a_day_rotation_starts_a_new_file_with_the_day(tmp_path):
    from ffe_engine.audit import AuditWriter
    from ffe_engine.clock import ManualClock
    from ffe_engine.events import ErrorEvent, EventBus

    times = [86_400.0 * 3 + 10, 86_400.0 * 3 + 20, 86_400.0 * 4 + 1, 86_400.0 * 4 + 2]
    clock = ManualClock(wall=times[0])
    bus = EventBus(clock)
    writer = AuditWriter(tmp_path / "audit.jsonl", rotate_daily=True)
    bus.add_sink(writer)
    for i in range(4):
        clock.forward(times[i] - clock.wall())
        bus.publish(ErrorEvent(message=f"m{i}", where="test"))
        if i % 2:
            await writer.flush()  # rotation falls between batches
    writer.close()
    rotated = rotated_files(tmp_path / "audit.jsonl")
    assert [p.name for p in rotated] == ["audit-000000000001.jsonl"]
    assert [json.loads(x)["ts"][:10] for x in rotated[0].read_bytes().splitlines()] == ["1970-01-04"] * 2
    assert [json.loads(x)["ts"][:10] for x in (tmp_path / "audit.jsonl").read_bytes().splitlines()] == \
        ["1970-01-05"] * 2
    assert verify_trail(tmp_path).ok


def test_a_database_with_a_newer_schema_is_refused_untouched(copy):
    db = copy / "data" / "ffe.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.execute("PRAGMA journal_mode = DELETE")  # a newer release's choice: switching it back would be a write
    con.close()
    before = db.read_bytes()
    proc = run_ffe(copy, "run", "--headless", "--max-bars", "3", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 2, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("ffe: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "schema version 99 is newer than this ffe" in errors[0] and "data/ffe.db" in errors[0]
    assert "left as it is" in errors[0]
    assert db.read_bytes() == before
    assert not (copy / "data" / "ffe.db-wal").exists()


@pytest.mark.parametrize("damage", ["last edited", "prev of the last edited"])
def test_a_start_over_a_last_line_that_is_not_the_database_s_stops_and_leaves_it_as_found(copy, damage):
    """The start's repair must not chain new records onto a last line that is not what the database holds: after it,
    `ffe audit verify` would call the trail intact (its head then the new records') and the edit would be hidden
    for good. The start stops with one line naming the file and the seq; the trail is left as it was found."""
    raw = lines(copy)
    n = len(raw)
    if damage == "last edited":
        bad = edit(raw, n)
    else:
        rec = json.loads(raw[-1])
        rec["prev"] = "0" * 64
        bad = raw[:-1] + [json.dumps(rec, separators=(",", ":")).encode()]
    write_lines(copy, bad)
    proc = run_ffe(copy, "run", "--headless", "--max-bars", "3", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ffe: error: ")]
    assert "audit.jsonl" in line and f"seq {n}" in line, line
    assert lines(copy) == bad
    code, out, _ = verify(copy, ffe=ffe_in_process)
    assert code == 1, out


@pytest.mark.parametrize("damage", ["repeated", "after a gap"])
def test_a_last_record_out_of_its_place_is_set_aside_and_the_trail_goes_on_from_the_database(copy, damage):
    """A last record that is the database's own but out of its place (written twice; written while the two before
    it were not, a flush cut short): set aside beside the trail, and the records from there on appended from the
    database's copies. The trail verifies whole, and holds every record once, in order."""
    raw = lines(copy)
    n = len(raw)
    bad = raw + [raw[-1]] if damage == "repeated" else raw[:n - 3] + [raw[-1]]
    write_lines(copy, bad)
    run_engine(copy, 3)
    after = lines(copy)
    assert after[:n] == raw and [seq_of(x) for x in after] == list(range(1, len(after) + 1))
    prev = n if damage == "repeated" else n - 3
    assert (copy / "logs" / f"audit.jsonl.out-of-order-after-{prev}").read_bytes() == raw[-1] + b"\n"
    code, out, err = verify(copy, ffe=ffe_in_process)
    assert code == 0, out + err


@pytest.fixture(scope="module")
def rotated_trail(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rotated")
    run_engine(root, 40, FFE_AUDIT__ROTATE_MB="0.01")  # about 10 KB a file
    assert len(rotated_files(root / "logs" / "audit.jsonl")) >= 3
    return root


@pytest.mark.parametrize("kind", ["fifo", "directory", "link_to_dev_zero"])
def test_a_rotated_file_of_the_trail_that_is_not_a_file_is_said_in_one_line_by_every_reader(rotated_trail,
                                                                                          tmp_path, kind):
    """A rotated file of the trail that is a FIFO, a directory or a device: every command that reads the trail says
    it in one line naming it, exit 2, never waiting on it nor reading it without end, as it says the current file;
    a start refuses it the same way before anything is written."""
    for d in ("data", "logs"):
        shutil.copytree(rotated_trail / d, tmp_path / d, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    shutil.copy(rotated_trail / "config.toml", tmp_path / "config.toml")
    rotated = rotated_files(tmp_path / "logs" / "audit.jsonl")[-1]
    rotated.unlink()
    if kind == "fifo":
        os.mkfifo(rotated)
        what = "a FIFO"
    elif kind == "directory":
        rotated.mkdir()
        what = "a directory"
    else:
        rotated.symlink_to("/dev/zero")
        what = "a character device (a link to /dev/zero)"
    name = Path("logs") / rotated.name
    for args in (("audit", "verify"), ("audit", "tail", "-n", "300"), ("doctor",),
                 ("backup", "--to", str(tmp_path / "backups"))):
        proc = run_bounded(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert [x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")] == [
            f"ffe: error: {name}: is {what}, not a file; it was left as it is: move it away (is --log-dir right?)"], \
            (args, proc.stderr[-2000:])
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").iterdir())
    start = run_bounded(tmp_path, "run", "--headless", "--max-bars", "3")
    assert start.returncode == 2, start.stderr[-3000:]
    assert start.stderr.splitlines() == [f"ffe: error: {name}: is {what}, not a file; it was left as it is: move it "
                                         "away, then start again"], start.stderr[-3000:]


def test_a_set_aside_file_that_is_not_a_file_is_said_in_one_line_by_every_reader(rotated_trail, tmp_path):
    """The records a start set aside beside the trail (`audit.jsonl.uncommitted-after-SEQ`) are read by doctor,
    audit verify, backup and the start: a FIFO there is said in one line naming it, exit 2, never waited on."""
    for d in ("data", "logs"):
        shutil.copytree(rotated_trail / d, tmp_path / d, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    shutil.copy(rotated_trail / "config.toml", tmp_path / "config.toml")
    aside = tmp_path / "logs" / "audit.jsonl.uncommitted-after-5"
    os.mkfifo(aside)
    name = Path("logs") / aside.name
    for args in (("audit", "verify"), ("doctor",), ("backup", "--to", str(tmp_path / "backups"))):
        proc = run_bounded(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        assert [x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")] == [
            f"ffe: error: {name}: is a FIFO, not a file; it was left as it is: move it away (is --log-dir right?)"], \
            (args, proc.stderr[-2000:])
    start = run_bounded(tmp_path, "run", "--headless", "--max-bars", "3")
    assert start.returncode == 2, start.stderr[-3000:]
    assert start.stderr.splitlines() == [f"ffe: error: {name}: is a FIFO, not a file; it was left as it is: move it "
                                         "away, then start again"], start.stderr[-3000:]


def test_a_set_aside_file_that_is_a_loop_of_links_is_said_as_one_by_every_reader(rotated_trail, tmp_path):
    """A set-aside file that is a link looping back to itself cannot be reached: audit verify, doctor and backup
    all say so in the same line naming it, exit 2; backup does not blame its destination, and writes nothing."""
    for d in ("data", "logs"):
        shutil.copytree(rotated_trail / d, tmp_path / d, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    shutil.copy(rotated_trail / "config.toml", tmp_path / "config.toml")
    aside = tmp_path / "logs" / "audit.jsonl.uncommitted-after-5"
    aside.symlink_to(aside.name)
    name = Path("logs") / aside.name
    for args in (("audit", "verify"), ("doctor",), ("backup", "--to", str(tmp_path / "backups"))):
        proc = run_bounded(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        assert [x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")] == [
            f"ffe: error: {name}: cannot be reached: a loop of symbolic links"], (args, proc.stderr[-2000:])
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").iterdir())


def test_a_rotated_file_gone_from_the_middle_of_the_trail_is_named_as_missing_by_every_reader(rotated_trail,
                                                                                            tmp_path):
    """Rotated files are named after their first seq: where a gap falls at a file's first line and the file named
    after the missing seq is not there, `ffe doctor`, `ffe audit verify` and `ffe backup` all name that file as
    missing, not the file after it."""
    for d in ("data", "logs"):
        shutil.copytree(rotated_trail / d, tmp_path / d, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    shutil.copy(rotated_trail / "config.toml", tmp_path / "config.toml")
    gone, after = rotated_files(tmp_path / "logs" / "audit.jsonl")[1:3]
    gone.unlink()
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 1 and f"{gone.name} is missing" in doctor.stderr, doctor.stdout + doctor.stderr
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode == 1 and f"{gone.name} is missing" in verify.stdout, verify.stdout + verify.stderr
    backup = run_ffe(tmp_path, "backup", "--to", str(tmp_path / "backups"))
    assert backup.returncode == 0, backup.stderr
    [warning] = [x for x in backup.stderr.splitlines() if x.startswith("warning: the audit trail is damaged")]
    assert f"{gone.name} is missing" in warning and after.name not in warning, warning
