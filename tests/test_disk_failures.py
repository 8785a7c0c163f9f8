"""A full disk, a read-only data or log directory, or a database another process keeps locked: the engine stops with
one line naming the file and what to do, exit 1, no traceback, HALTED stored if it still can be; a start that fails
never says "engine started".

Real mechanisms: a file size limit (RLIMIT_FSIZE, what a full disk looks like to the writer: a write that fails
part way), a directory that cannot be written (its mode, or for root, who ignores modes, a read-only bind mount),
and a second SQLite connection holding the database's write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import forked_ffe
from conftest import (BTC_CSV, ETH_CSV, assert_strictly_increasing, audit_lines, db_rows, db_value, engine_session,
                      ffe_cmd, ffe_env, ffe_in_process, make_settings, run_bounded, run_ffe, sample_head,
                      starter_config, wait_until, without_permission_overrides)
from receiver import Receiver


def run_limited(cwd: Path, *args: str, fsize: int, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    """`ffe ARGS` with no file allowed to grow past `fsize` bytes (writes past it fail with EFBIG); `extra`: more
    environment."""
    starter_config(cwd)
    # Not measured by coverage: its own data file could not be written past the limit either, and its error
    # would be taken for the engine's.
    env = {k: v for k, v in ffe_env(**extra).items() if not k.startswith("COVERAGE_")}
    return subprocess.run(ffe_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, preexec_fn=forked_ffe.Limits(fsize=fsize))


def run_on_a_small_disk(cwd: Path, *args: str, size: str, timeout: float = 180, starts: int = 1,
                        **extra: str) -> subprocess.CompletedProcess:
    """`ffe ARGS` with its data and log directories on a tmpfs of `size` (a disk that fills up for real: neither the
    WAL nor a checkpoint of it into the database finds room), mounted in a mount namespace of its own (unshare: no
    root needed, nothing left mounted). The directories are copied to cwd/data and cwd/logs when it ends.
    `starts`: started that many times one after the other on the same disk (as systemd restarts a failing service),
    each exit code a line of cwd/exits, the last one returned; `extra`: more environment."""
    disk = cwd / "disk"
    disk.mkdir()
    starter_config(cwd)
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; n=$3; shift 3; while [ "$n" -gt 0 ]; do '
              f'"$@"; rc=$?; echo $rc >> {cwd}/exits; n=$((n - 1)); done; '
              f'cp -a {disk}/data {disk}/logs {cwd}/ || exit 98; exit $rc')
    # As root, a mount namespace alone (the capability the read-only tests' bind mounts use); otherwise a user
    # namespace that maps this user to root in it.
    spaces = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    cmd = ["unshare", *spaces, "sh", "-c", script, "sh", size, str(disk), str(starts),
           *ffe_cmd(*args, "--data-dir", str(disk / "data"), "--log-dir", str(disk / "logs"))]
    return subprocess.run(cmd, cwd=cwd, env=ffe_env(**extra), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def run_steps_on_a_small_disk(cwd: Path, steps: str, size: str, timeout: float = 300,
                              **extra: str) -> subprocess.CompletedProcess:
    """The shell `steps` run with a tmpfs of `size` mounted at cwd/disk, in a mount namespace of its own (as
    run_on_a_small_disk). In them `ffe ARGS` runs ffe with its data directory on that disk (its log directory stays
    in cwd), `$DISK` is the disk; `extra`: more environment."""
    disk = cwd / "disk"
    disk.mkdir()
    starter_config(cwd)
    ffe = shlex.join(ffe_cmd())
    script = (f'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; DISK="$2"; '
              f'ffe() {{ {ffe} "$@" --data-dir "$DISK/data"; }}; {steps}')
    spaces = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    return subprocess.run(["unshare", *spaces, "sh", "-c", script, "sh", size, str(disk)], cwd=cwd,
                          env=ffe_env(**extra), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_failure_told_once_after_each_page(told: list[dict]) -> None:
    """RECORDS_UNWRITABLE paged once per window (a crash loop's restarts hold it back), again only after another
    alert went out since (a STARTED, a HALTED a restart kept from before), and the last word: the operator's last
    word is the failure."""
    kinds = [b["kind"] for b in told]
    assert kinds and kinds[-1] == "RECORDS_UNWRITABLE", told
    assert all(not (a == b == "RECORDS_UNWRITABLE") for a, b in zip(kinds, kinds[1:])), told


def step(cwd: Path, name: str) -> tuple[int, str]:
    """A step's exit code and stderr (run_steps_on_a_small_disk's steps write NAME.rc and NAME.err)."""
    return int((cwd / f"{name}.rc").read_text()), (cwd / f"{name}.err").read_text()


@contextlib.contextmanager
def read_only(directory: Path):
    """The directory and its files cannot be written by the engine's process."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [directory, *directory.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def the_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert proc.stderr.rstrip().endswith(errors[0])  # the last word
    assert "free space on its disk or make its directory writable" in errors[0], errors[0]
    return errors[0]


def the_page_quoting(hook: Receiver, line: str) -> None:
    """The receiver got one page, RECORDS_UNWRITABLE, quoting the process's error line."""
    pages = [r.body for r in hook.delivered if r.body.get("severity") == "page"]
    assert len(pages) == 1 and pages[0]["kind"] == "RECORDS_UNWRITABLE", [r.body for r in hook.delivered]
    assert line.removeprefix("ffe: error: ") in pages[0]["text"], (line, pages)


def assert_trail_holds_the_database(cwd: Path) -> None:
    records = audit_lines(cwd / "logs" / "audit.jsonl")
    seqs = [r["seq"] for r in records]
    assert_strictly_increasing(seqs)
    db_seqs = {r[0] for r in db_rows(cwd / "data" / "ffe.db", "SELECT seq FROM events")}
    assert not db_seqs - set(seqs)


@pytest.fixture(scope="module")
def traded(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("traded")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "40", env=ffe_env(FFE_MARKET__SEED=7))
    assert proc.returncode == 0, proc.stderr
    return cwd


def copy_of(traded: Path, tmp_path: Path) -> Path:
    shutil.copytree(traded / "data", tmp_path / "data")
    shutil.copytree(traded / "logs", tmp_path / "logs")
    return tmp_path


def test_a_disk_that_fills_while_trading_stops_the_engine_halted_with_one_line(tmp_path):
    proc = run_limited(tmp_path, "run", "--headless", fsize=300_000)  # no --max-bars: only the failure ends it
    line = the_error_line(proc)
    assert "ffe.db" in line or "audit.jsonl" in line, line
    assert "the engine stopped HALTED" in line, line
    assert db_value(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == "HALTED"
    # Room again: the next start comes up HALTED, with every committed event in the audit trail.
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert again.returncode == 0, again.stderr
    assert "state=HALTED" in again.stderr
    assert_trail_holds_the_database(tmp_path)
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stderr


def test_a_disk_that_fills_up_for_real_stores_halted_and_the_next_start_comes_up_halted(tmp_path):
    # A real full disk: the database's WAL holds every record of the run, so the checkpoint that would free room
    # needs room itself. The engine's reserve in the data directory gives HALTED its room.
    proc = run_on_a_small_disk(tmp_path, "run", "--headless", size="3m")  # only the failure ends it
    line = the_error_line(proc)
    assert "the engine stopped HALTED" in line, line
    assert db_value(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == "HALTED"
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "state=HALTED" in again.stderr, again.stderr[-3000:]
    assert_trail_holds_the_database(tmp_path)


def test_a_start_after_a_run_that_used_its_disk_reserve_comes_up_halted(traded, tmp_path):
    # Should even the reserve not have been room enough for HALTED, the reserve it used says so at the next start.
    cwd = copy_of(traded, tmp_path)
    assert db_value(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == "RUNNING"
    reserve = cwd / "data" / "ffe.reserve"
    assert reserve.stat().st_size > 0
    os.truncate(reserve, 0)  # as a write that failed left it
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "state=HALTED" in proc.stderr, proc.stderr[-3000:]
    assert db_value(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == "HALTED"
    assert "could not write" in db_value(cwd / "data" / "ffe.db", "SELECT reason FROM engine_state")
    assert reserve.stat().st_size > 0  # kept again for the next failure


async def test_a_disk_that_fills_pages_the_operator_though_nothing_can_be_recorded(tmp_path):
    # The alerts' outbox is in the database the disk no longer takes: the page is sent at once instead, on the way
    # out. Without it the operator hears nothing until someone looks.
    hook = await Receiver().start()
    try:
        proc = await asyncio.to_thread(run_limited, tmp_path, "run", "--headless", fsize=300_000,
                                       FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook")
        line = the_error_line(proc)
        pages = [r.body for r in hook.delivered if r.body.get("kind") == "RECORDS_UNWRITABLE"]
        assert len(pages) == 1, [r.body for r in hook.delivered]
        assert pages[0]["severity"] == "page" and "HALTED" in pages[0]["text"], pages
        assert line.removeprefix("ffe: error: ") in pages[0]["text"], (line, pages)
    finally:
        await hook.stop()


async def test_a_disk_that_fills_again_at_every_restart_pages_once_per_window(tmp_path):
    """A disk that fills up for real, the engine restarted on it again and again as systemd restarts a failing
    service: every run stops on it (or its start does), and nothing of it can be recorded, the alerts' outbox
    neither. The operator is paged RECORDS_UNWRITABLE once per `alerts.window_s`, not once per restart. The
    starts between say why the last run ended: it stopped on a record it could not write, it was not killed. A
    restart that pages the HALTED it keeps from before (through the outbox) before it stops on the disk again pages
    the failure again: the operator's last word is that it stopped, not that it starts."""
    hook = await Receiver().start()
    try:
        proc = await asyncio.to_thread(run_on_a_small_disk, tmp_path, "run", "--headless", size="6m", starts=3,
                                       timeout=400, FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook")
    finally:
        await hook.stop()
    exits = (tmp_path / "exits").read_text().split()
    assert exits == ["1", "1", "1"], (exits, proc.stderr[-3000:])
    told = [r.body for r in hook.delivered]
    assert_failure_told_once_after_each_page(told)
    # The restarts say why the last run ended, in their log; and in their STARTED alert, when the alert left before
    # the disk filled again (it goes through the outbox, which needs room: on a loaded machine it may not).
    assert "the last run ended without its stop record (it stopped on a record it could not write)" in proc.stderr, \
        proc.stderr[-3000:]
    assert "(killed, the machine stopped" not in proc.stderr, proc.stderr[-3000:]
    after = [b["text"] for b in told if b["kind"] == "STARTED" and "after a run" in b["text"]]
    for started in after:
        assert "killed" not in started and "stopped on a record it could not write" in started, started


async def test_a_disk_that_fills_after_a_start_succeeded_pages_though_a_start_before_was_refused_by_it(tmp_path):
    """A start refused by a full disk pages RECORDS_UNWRITABLE ('nothing trades until a start succeeds'). The
    operator frees room; the next start succeeds and trades until the disk fills again, and the engine stops
    HALTED within `alerts.window_s` of that first page: this is news, paged (its text names the orders left open
    at the exchange). Only a start that comes up HALTED (a restart into the same full disk) holds it back."""
    hook = await Receiver().start()
    steps = (f'ffe run --headless --max-bars 30 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc; '
             'dd if=/dev/zero of="$DISK/filler" bs=4k 2>/dev/null; '
             f'ffe run --headless --max-bars 30 2> {tmp_path}/refused.err; echo $? > {tmp_path}/refused.rc; '
             'rm "$DISK/filler"; '
             f'ffe run --headless 2> {tmp_path}/filled.err; echo $? > {tmp_path}/filled.rc')
    try:
        await asyncio.to_thread(run_steps_on_a_small_disk, tmp_path, steps, size="8m",
                                FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook")
    finally:
        await hook.stop()
    assert step(tmp_path, "first")[0] == 0, step(tmp_path, "first")[1][-3000:]
    rc, refused = step(tmp_path, "refused")
    assert rc == 1 and "engine started" not in refused, refused[-3000:]
    rc, filled = step(tmp_path, "filled")
    assert rc == 1 and "state=RUNNING" in filled, filled[-3000:]
    pages = [r.body for r in hook.delivered if r.body.get("kind") == "RECORDS_UNWRITABLE"]
    assert [p["text"].split(":")[0] for p in pages] == ["ffe start FAILED", "ffe HALTED and stopped"], pages
    held = [line for line in filled.splitlines() if "alert not sent again" in line]
    assert not [line for line in held if "kind=RECORDS_UNWRITABLE" in line], filled[-3000:]


async def test_a_first_start_on_a_full_disk_stops_with_one_line_and_pages(tmp_path):
    """A new account's first start on a disk with no room for its database's tables: one line naming the file,
    exit 1, no traceback, RECORDS_UNWRITABLE paged; once room is made the next start makes the account."""
    hook = await Receiver().start()
    try:
        proc = await asyncio.to_thread(run_on_a_small_disk, tmp_path, "run", "--headless", "--max-bars", "5",
                                       size="64k", FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook")
    finally:
        await hook.stop()
    line = the_error_line(proc)
    assert "ffe.db" in line and "engine started" not in proc.stderr, proc.stderr[-3000:]
    the_page_quoting(hook, line)
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert again.returncode == 0, again.stderr[-3000:]


def test_a_disk_already_full_at_start_stops_before_the_engine_starts(traded, tmp_path):
    cwd = copy_of(traded, tmp_path)
    db_before = (cwd / "data" / "ffe.db").read_bytes()
    proc = run_limited(cwd, "run", "--headless", "--max-bars", "5", fsize=4000)
    line = the_error_line(proc)
    assert "engine started" not in proc.stderr
    assert "audit.jsonl" in line or "ffe.db" in line, line
    assert_trail_holds_the_database(cwd)
    assert (cwd / "data" / "ffe.db").read_bytes()[:100] == db_before[:100]


async def test_a_start_refused_by_a_full_disk_pages_the_operator_and_feeds_no_heartbeat(traded, tmp_path):
    """An engine that cannot start has no main loop: the dead man's switch hears nothing from it (a service
    restarted again and again must not keep it fed), and the operator is paged, past the outbox the full disk
    cannot take, as when the disk fills while trading."""
    cwd = copy_of(traded, tmp_path)
    hook = await Receiver().start()
    beat = await Receiver().start()
    try:
        proc = await asyncio.to_thread(run_limited, cwd, "run", "--headless", "--max-bars", "5", fsize=4000,
                                       FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook",
                                       FFE_ALERTS__HEARTBEAT_URL=beat.url + "/ping", FFE_ALERTS__HEARTBEAT_S="0.05")
        line = the_error_line(proc)
        assert "engine started" not in proc.stderr
        the_page_quoting(hook, line)
        assert beat.requests == []
    finally:
        await hook.stop()
        await beat.stop()


def test_a_read_only_data_directory_stops_the_start_with_one_line(traded, tmp_path):
    cwd = copy_of(traded, tmp_path)
    with read_only(cwd / "data"):
        proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    line = the_error_line(proc)
    assert "engine started" not in proc.stderr
    assert str(Path("data")) in line, line


async def test_a_start_refused_by_a_read_only_data_directory_pages_the_operator(traded, tmp_path):
    """Refused as it takes the data directory's lock, before anything else: paged all the same."""
    cwd = copy_of(traded, tmp_path)
    hook = await Receiver().start()
    try:
        with read_only(cwd / "data"):
            proc = await asyncio.to_thread(run_ffe, cwd, "run", "--headless", "--max-bars", "5",
                                           env=ffe_env(FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook"))
        line = the_error_line(proc)
        the_page_quoting(hook, line)
    finally:
        await hook.stop()


async def test_a_halted_kept_from_before_is_paged_once_per_window_though_every_restart_fails_again(tmp_path):
    """The log disk is full, the data disk is not: each start, as systemd restarts it, restates the HALTED the run
    before stored without its record, pages it, and stops again on the trail. Paged once per `alerts.window_s`, as
    README says of a disk that fills again at every restart, not once per restart."""
    hook = await Receiver().start()
    ffe = shlex.join(ffe_cmd("run", "--headless", "--data-dir", str(tmp_path / "data")))
    t = tmp_path
    steps = (f'{ffe} --log-dir "$DISK/logs" 2> {t}/first.err; echo $? > {t}/first.rc; '
             f'for n in 1 2 3; do {ffe} --log-dir "$DISK/logs" --max-bars 30 2> {t}/again$n.err; '
             f'echo $? > {t}/again$n.rc; done')
    try:
        await asyncio.wait_for(asyncio.to_thread(run_steps_on_a_small_disk, tmp_path, steps, size="1m",
                                                 FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook",
                                                 FFE_ALERTS__WINDOW_S="3600"), 400)
    finally:
        await hook.stop()
    rc, first = step(t, "first")
    assert rc == 1 and "audit.jsonl" in first, first[-3000:]
    for n in (1, 2, 3):
        rc, again = step(t, f"again{n}")
        assert rc == 1 and "audit.jsonl" in again, again[-3000:]
    told = [(r.body["kind"], r.body["text"]) for r in hook.delivered]
    kept = [text for kind, text in told if kind == "HALTED" and "kept from before this start" in text]
    assert len(kept) == 1, told


READ_COMMANDS = (("doctor",), ("audit", "verify"), ("report", "trades", "--last", "0"), ("report", "providers"),
                 ("config", "check"))


def test_the_read_commands_read_a_database_on_a_read_only_directory(traded, tmp_path):
    """A disk remounted read-only after errors is when an operator runs `ffe doctor`. A cleanly stopped engine left
    no -wal or -shm file beside the database, and none can be created there: the read commands still read it, and
    say what they say of a copy on a writable directory."""
    copies = {}
    for name in ("writable", "read-only"):
        cwd = copies[name] = copy_of(traded, tmp_path / name)
        with contextlib.closing(sqlite3.connect(cwd / "data" / "ffe.db")) as conn, conn:
            # saved state that `config check` lists
            conn.execute("INSERT OR REPLACE INTO kv (key, value, updated_ts) VALUES ('approval_mode', '\"manual\"', 0)")
    # On the writable copy the first command runs as a real process and the rest in this process (what they say
    # there is what every other test of them proves); on the read-only directory each is a real process.
    writable = {args: (run_ffe if args == READ_COMMANDS[0] else ffe_in_process)(copies["writable"], *args)
                for args in READ_COMMANDS}
    for args, proc in writable.items():
        assert proc.returncode == 0, (args, proc.stderr)
    assert "manual" in writable[("config", "check")].stdout.split("# saved state")[1]
    cwd = copies["read-only"]
    data = cwd / "data"
    assert not [p.name for p in data.iterdir() if p.name.startswith("ffe.db-")]
    files = {p.name: p.read_bytes() for p in data.iterdir()}
    with read_only(data):
        read = {args: run_ffe(cwd, *args) for args in READ_COMMANDS}
    for args, proc in read.items():
        want = writable[args].stdout.replace(str(copies["writable"]), str(cwd))
        assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", want), args
    assert {p.name: p.read_bytes() for p in data.iterdir()} == files


def test_records_a_killed_engine_left_in_the_wal_are_read_on_a_read_only_directory(tmp_path, spawn_ffe):
    """Killed, the engine leaves its last records in ffe.db-wal, read through ffe.db-shm: on a read-only directory
    they are read from there, never skipped. Without the -shm file (which cannot be created there) they could not
    be: one line says so, rather than an answer that leaves them out."""
    engine = spawn_ffe(tmp_path, "run", "--headless")
    data = tmp_path / "data"
    wait_until(lambda: decided(data / "ffe.db"), timeout=60, what="a decision recorded")
    engine.kill()
    assert (data / "ffe.db-wal").stat().st_size > 0 and (data / "ffe.db-shm").exists()
    copy = tmp_path / "copy"  # counted in a copy: a writable connection closed last would empty the -wal file
    copy.mkdir()
    for name in ("ffe.db", "ffe.db-wal", "ffe.db-shm"):
        shutil.copy(data / name, copy / name)
    events = db_value(copy / "ffe.db", "SELECT COUNT(*) FROM events")
    with read_only(data):
        doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert f"; {events} events, " in doctor.stdout, (events, doctor.stdout)
    (data / "ffe.db-shm").unlink()
    with read_only(data):
        doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 1 and doctor.stdout == "", doctor.stderr
    assert doctor.stderr.splitlines() == [
        f"ffe: error: {Path('data', 'ffe.db')}: cannot read the database (its directory cannot be written and "
        "ffe.db-wal holds records, which are read only with the ffe.db-shm file that cannot be created there: copy "
        "the data directory to a writable place and read the copy)"]


def test_a_read_only_log_directory_stops_the_start_and_stores_halted(traded, tmp_path):
    cwd = copy_of(traded, tmp_path)
    audit_before = (cwd / "logs" / "audit.jsonl").read_bytes()
    with read_only(cwd / "logs"):
        proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    line = the_error_line(proc)
    assert "engine started" not in proc.stderr
    assert "audit.jsonl" in line and "HALTED stored" in line, line
    assert (cwd / "logs" / "audit.jsonl").read_bytes() == audit_before
    assert db_value(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == "HALTED"
    # The check afterwards says why HALTED is stored without its event as it was: no disk was full.
    doctor = run_ffe(cwd, "doctor")
    assert doctor.returncode == 0, doctor.stderr
    (note,) = [x for x in doctor.stdout.splitlines() if "without its event" in x]
    assert "HALTED stored when the records could not be written" in note and "full disk" not in note, note


def decided(db: Path) -> bool:
    """Whether the engine has recorded a decision in the database (made, its tables too, as it starts)."""
    try:
        return bool(db.exists() and db_value(db, "SELECT COUNT(*) FROM decisions"))
    except sqlite3.OperationalError:
        return False


@pytest.mark.parametrize("configured, waits_ms", [(None, 5000), (0.25, 250), (90, 90_000)])
async def test_the_engine_waits_for_another_process_s_lock_as_long_as_storage_busy_timeout_s(tmp_path, configured,
                                                                                            waits_ms):
    tables = {} if configured is None else {"storage": {"busy_timeout_s": configured}}
    async with engine_session(make_settings(tmp_path, **tables)) as running:
        rows = await running.store.conn.execute("PRAGMA busy_timeout")
        assert await rows.fetchone() == (waits_ms,)


def test_a_database_another_process_keeps_locked_stops_the_engine_halted_with_one_line(tmp_path):
    # Someone holds the database's write lock (an sqlite3 shell left in a transaction) longer than the engine
    # waits for it (5 s): no record can be written, so no order may go out. The engine stops HALTED with one line
    # that says what holds it up, not a traceback; once the lock is gone the next start comes up HALTED.
    starter_config(tmp_path)
    db = tmp_path / "data" / "ffe.db"
    proc = forked_ffe.Popen(ffe_cmd("run", "--headless"), cwd=tmp_path, env=ffe_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not decided(db):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        holder = sqlite3.connect(db, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, until the engine has given up waiting
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=7)
        holder.execute("ROLLBACK")
        holder.close()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert done.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("ffe: error: ")]
    assert stderr.rstrip().endswith(line)
    assert "ffe.db" in line and "locked by another process" in line and "the engine stopped HALTED" in line, line
    assert "within a transaction" not in stderr, stderr[-3000:]
    assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert again.returncode == 0 and "state=HALTED" in again.stderr, again.stderr[-3000:]
    assert_trail_holds_the_database(tmp_path)
    assert run_ffe(tmp_path, "doctor").returncode == 0


# -------------------------------------------------------------------------------------------------- a backtest's report
def test_a_report_the_disk_cannot_hold_leaves_the_previous_report_whole(tmp_path):
    # The report is written beside its place and then put there: a write that fails part way leaves the report a
    # previous run wrote as it was, never a report cut short, and nothing of its own.
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    previous = json.dumps({"run_id": "previous", "symbols": ["BTC/USD"], "bars": 300, "from": "2020-01-01T00:00:00Z",
                           "to": "2020-01-13T11:00:00Z", "trades": 0, "return_pct": 0.0,
                           "equity_curve": [["2020-01-01T01:00:00Z", 10000.0]] * 50}, indent=1)
    (tmp_path / "r.json").write_text(previous)
    proc = run_limited(tmp_path, "backtest", "--records", "summary", "BTC-USD_1h.csv", "--report", "r.json",
                       fsize=1024, FFE_BACKTEST__CACHE_MB="0")
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert len(errors) == 1 and errors[0].startswith("ffe: error: --report r.json: cannot write"), proc.stderr
    assert "Traceback" not in proc.stderr and "return" in proc.stdout  # the run's summary was said
    assert (tmp_path / "r.json").read_text() == previous
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["BTC-USD_1h.csv", "config.toml", "r.json"]


def test_a_backtest_whose_records_outgrow_the_disk_stops_with_one_line(tmp_path):
    # The records are written by the backtest's writer process: its failed write is the run's one line naming the
    # database, as the live engine's is, never a traceback (nor one per record the run still had to write).
    proc = run_limited(tmp_path, "backtest", "--records", "full", str(BTC_CSV), str(ETH_CSV), fsize=4_000_000,
                       FFE_BACKTEST__CACHE_MB="0")
    line = the_error_line(proc)
    (run,) = (tmp_path / "data" / "backtests").iterdir()
    assert line.startswith(f"ffe: error: {Path('data', 'backtests', run.name, 'ffe.db')}: cannot write ("), line
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def writer_of(pid: int) -> int | None:
    """The pid of the backtest's database writer process (python -m ffe_engine.sqlwriter) started by `pid`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rpartition(")")[2].split()[1])
            if parent == pid and b"ffe_engine.sqlwriter" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


@pytest.mark.parametrize("records", ["full", "summary"])
def test_a_backtest_whose_writer_process_is_killed_stops_with_one_line(tmp_path, spawn_ffe, records):
    # The out-of-memory killer's choice, or a kill -9: the run stops with one line that says what ended and where
    # the records so far are, exit 1, never a traceback, never a report.
    starter_config(tmp_path)
    env = ffe_env(FFE_BACKTEST__CACHE_MB="0")
    p = spawn_ffe(tmp_path, "backtest", "--records", records, str(BTC_CSV), str(ETH_CSV), env=env)
    writer = wait_until(lambda: writer_of(p.pid), timeout=60, what="the backtest's writer process")
    wait_until(lambda: "engine started" in p.stderr, timeout=60, what="the run under way")
    if records == "full":  # in the middle of a transaction: its journal holds the pages it changed
        journals = tmp_path / "data" / "backtests"
        wait_until(lambda: any(j.stat().st_size for j in journals.glob("*/ffe.db-journal")), timeout=60,
                   interval=0.01, what="a transaction of the run's writer")
    os.kill(writer, signal.SIGKILL)
    assert p.wait(timeout=120) == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert len(errors) == 1 and p.stderr.rstrip().endswith(errors[0]), p.stderr[-3000:]
    assert "writer process ended (killed by signal 9)" in errors[0], errors[0]
    if records == "full":
        (run,) = (tmp_path / "data" / "backtests").iterdir()
        assert errors[0].startswith(f"ffe: error: {Path('data', 'backtests', run.name, 'ffe.db')}: "), errors[0]
        # What it committed is read as a run cut short: its database whole (the writer's last transaction rolled
        # back, no journal left for a start that never comes), listed with its record level, and its trades told.
        assert not (run / "ffe.db-journal").exists() or (run / "ffe.db-journal").stat().st_size == 0
        listed = run_ffe(tmp_path, "backtest", "--list")
        assert listed.returncode == 0, listed.stderr
        (line,) = [x for x in listed.stdout.splitlines() if x.startswith(run.name)]
        assert line.split()[2] == "full", line
        report = run_ffe(tmp_path, "report", "trades", "--data-dir", f"data/backtests/{run.name}", "--log-dir",
                         f"logs/backtests/{run.name}")
        assert report.returncode == 0, report.stderr
    else:
        assert errors[0].startswith("ffe: error: the backtest's records (kept in memory): "), errors[0]
    assert p.stdout == ""


# ---------------------------------------------------------------------------------------------------- a file in the way
WAY_COMMANDS = (("run", "--headless", "--max-bars", "1"), ("audit", "verify"), ("audit", "tail"), ("doctor",),
                ("config", "check"), ("backup",), ("report", "trades"))
# Refused before they read anything: each command's --log-dir variant runs as a real process, its --data-dir
# variant in this process, but for `run` and `backup` (an engine, a lock and signals, were it not refused), always
# real processes.
IN_PROCESS = {("audit", "verify"), ("audit", "tail"), ("doctor",), ("config", "check"), ("report", "trades")}


@pytest.mark.parametrize("option", ["--log-dir", "--data-dir"])
@pytest.mark.parametrize("command", WAY_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_regular_file_given_as_a_directory_is_one_line_naming_it(tmp_path, command, option):
    starter_config(tmp_path)
    (tmp_path / "afile").write_text("not a directory\n")
    real = option == "--log-dir" or command not in IN_PROCESS
    proc = (run_ffe if real else ffe_in_process)(tmp_path, *command, option, str(tmp_path / "afile"))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"ffe: error: command line: {option}: {tmp_path / 'afile'} is not a directory"], proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()


def test_a_directory_below_a_regular_file_in_the_config_names_the_file_and_its_line(tmp_path):
    (tmp_path / "config.toml").write_text('[storage]\npath = "data/ffe.db"\n\n[logging]\ndir = "afile/logs"\n')
    (tmp_path / "afile").write_text("not a directory\n")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == ["ffe: error: config.toml:5: logging.dir: afile is not a directory"]
    assert not (tmp_path / "data").exists()


IN_PLACE_OF = ("data/ffe.lock", "data/ffe.reserve", "data/ffe.sock.lock", "logs/audit.jsonl", "logs/audit.jsonl.lock")


@pytest.mark.parametrize("name", IN_PLACE_OF)
def test_a_directory_where_a_file_of_the_records_goes_stops_the_start_naming_it_with_nothing_written(traded, tmp_path,
                                                                                                  name):
    """A directory in the place of a lock file, the disk reserve or the audit trail is a path to put right, not a
    full disk: one line naming it, exit 2, before anything is written (no HALTED stored, no reserve emptied, nothing
    recorded), as for a directory at the database's path. The next start, once it is moved away, comes up as the
    last run left the account."""
    cwd = copy_of(traded, tmp_path)
    in_the_way = cwd / name
    if in_the_way.exists():
        in_the_way.unlink()
    (in_the_way / "kept").mkdir(parents=True)
    records = {str(p): p.read_bytes() for d in ("data", "logs") for p in sorted((cwd / d).rglob("*")) if p.is_file()}
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "3", timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "engine started" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [f"ffe: error: {name}: is a directory, not a file; it was left as it is: "
                                        "move it away, then start again"], proc.stderr[-3000:]
    assert {str(p): p.read_bytes() for d in ("data", "logs") for p in sorted((cwd / d).rglob("*"))
            if p.is_file()} == records
    assert (in_the_way / "kept").is_dir()
    shutil.rmtree(in_the_way)
    again = run_ffe(cwd, "run", "--headless", "--max-bars", "3", timeout=60)
    assert again.returncode == 0, again.stderr[-3000:]
    assert db_value(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == "RUNNING"


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_device_where_the_audit_trail_goes_stops_the_start_naming_it_with_nothing_written(traded, tmp_path,
                                                                                          device):
    """The audit trail a link to a device: written into /dev/null every record would go nowhere, and /dev/zero would
    be read without end. Not a file: one line naming it, exit 2, before anything is written or started, as for a
    directory there."""
    cwd = copy_of(traded, tmp_path)
    trail = cwd / "logs" / "audit.jsonl"
    trail.unlink()
    trail.symlink_to(device)
    records = {str(p): p.read_bytes() for d in ("data", "logs") for p in sorted((cwd / d).rglob("*")) if p.is_file()}
    # Bounded: a start that read the device without end would fail here instead of taking the machine's memory.
    proc = run_bounded(cwd, "run", "--headless", "--max-bars", "3", timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.splitlines() == [f"ffe: error: {Path('logs') / 'audit.jsonl'}: is a character device (a link "
                                        f"to {device}), not a file; it was left as it is: move it away, then start "
                                        "again"], proc.stderr[-3000:]
    assert {str(p): p.read_bytes() for d in ("data", "logs") for p in sorted((cwd / d).rglob("*"))
            if p.is_file()} == records
    assert os.readlink(trail) == device


@pytest.mark.parametrize("kind", ["fifo", "link_to_nowhere"])
def test_a_fifo_or_a_link_to_nowhere_where_the_audit_trail_goes_is_bad_input_not_a_full_disk(traded, tmp_path,
                                                                                           kind):
    """A FIFO where the trail goes, or a link to a file whose directory is not there: not a disk that refuses
    writes (told to free space, HALTED stored, the next start HALTED for it) but a path to put right: one line
    saying what is there, exit 2, nothing written, no HALTED. Once moved away, the start comes up as the last run
    left the account."""
    cwd = copy_of(traded, tmp_path)
    trail = cwd / "logs" / "audit.jsonl"
    trail.unlink()
    if kind == "fifo":
        os.mkfifo(trail)
        said = "is a FIFO, not a file; it was left as it is: move it away, then start again"
    else:
        trail.symlink_to(tmp_path / "gone" / "audit.jsonl")
        said = (f"is a link to {tmp_path / 'gone' / 'audit.jsonl'}, whose directory is not there; it was left as it "
                "is: move it away or make that directory, then start again")
    records = {str(p): p.read_bytes() for d in ("data", "logs") for p in sorted((cwd / d).rglob("*")) if p.is_file()}
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "3", timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.splitlines() == [f"ffe: error: {Path('logs') / 'audit.jsonl'}: {said}"], proc.stderr[-3000:]
    assert {str(p): p.read_bytes() for d in ("data", "logs") for p in sorted((cwd / d).rglob("*"))
            if p.is_file()} == records
    assert db_value(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == "RUNNING"
    trail.unlink()
    again = run_ffe(cwd, "run", "--headless", "--max-bars", "3", timeout=60)
    assert again.returncode == 0, again.stderr[-3000:]
    assert db_value(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == "RUNNING"


def test_a_second_engine_is_refused_even_after_the_lock_files_were_removed(tmp_path, spawn_ffe):
    """The lock files removed under a running engine (a clean-up script, `rm data/*.lock`) must not let a second
    engine start on the same records: two would append to one trail and journal into one book. The database
    itself is held: the second start is refused in one line, exit 2, and the first goes on, its trail whole."""
    from conftest import audit_lines, count_events, wait_until

    audit = tmp_path / "logs" / "audit.jsonl"
    first = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="50"))
    wait_until(lambda: count_events(audit, "decision") >= 5 or not first.alive(), what="the first engine running")
    for held in (tmp_path / "data" / "ffe.lock", tmp_path / "data" / "ffe.sock.lock",
                 tmp_path / "logs" / "audit.jsonl.lock", tmp_path / "data" / "ffe.sock"):
        held.unlink(missing_ok=True)
    second = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert second.returncode == 2, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    (line,) = [ln for ln in second.stderr.splitlines() if ln.startswith("ffe: error: ")]
    assert "ffe.db" in line and "another" in line, line
    assert first.alive(), first.stderr
    first.send(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, first.stderr
    seqs = [r["seq"] for r in audit_lines(audit)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_stopped_account_on_a_read_only_directory_can_still_be_backed_up(traded, tmp_path):
    """A disk remounted read-only is when a backup is wanted most: with no engine on it (none can start there),
    `ffe backup` takes it under the database file's own lock (an engine holds that one too), not the lock file it
    cannot create, and the backup verifies."""
    cwd = copy_of(traded, tmp_path)
    with read_only(cwd / "data"):
        proc = run_ffe(cwd, "backup", "--to", str(tmp_path / "backups"))
    assert proc.returncode == 0, proc.stderr
    [made] = list((tmp_path / "backups").glob("ffe-backup-*.tar.zst"))
    verify = run_ffe(cwd, "backup", "verify", str(made))
    assert verify.returncode == 0, verify.stdout + verify.stderr



async def release_when(hook: Receiver, kind: str, t: Path) -> None:
    """The receiver holds the first alert of `kind` on the wire: once it is there, {t}/held is written for the steps;
    it is answered once the steps have written {t}/filled."""
    while not any(isinstance(r.body, dict) and r.body.get("kind") == kind for r in hook.requests):
        await asyncio.sleep(0.05)
    (t / "held").touch()
    while not (t / "filled").exists():
        await asyncio.sleep(0.05)
    assert hook.hold is not None
    hook.hold.set()


async def test_a_halted_paged_from_the_outbox_when_its_sent_mark_cannot_be_written_is_not_paged_again(tmp_path):
    """A RUNNING engine whose data disk fills up stops HALTED, stored alone in the room of the disk reserve. Room
    again: the next start restates that HALTED and pages it from the outbox; while the page is on the wire the disk
    fills up again and the engine stops on it, so the page is delivered but its `sent` mark cannot be written. The
    starts on the full disk that follow (as systemd restarts it), and the start once room is back, do not page it
    again: it was delivered once, and the outbox says so once it can (sent, one attempt, when it left)."""
    hook = await Receiver().start()
    hook.hold, hook.hold_kind = asyncio.Event(), "HALTED"
    t = tmp_path
    steps = (f'ffe run --headless 2> {t}/run.err & pid=$!; '
             f'until grep -q "engine started" {t}/run.err; do sleep 0.1; done; '
             'sleep 1; dd if=/dev/zero of="$DISK/filler" bs=4k 2>/dev/null; '
             f'wait $pid; echo $? > {t}/run.rc; rm "$DISK/filler"; '
             f'ffe run --headless 2> {t}/paged.err & pid=$!; '
             f'until [ -f {t}/held ]; do sleep 0.05; done; '
             f'dd if=/dev/zero of="$DISK/filler" bs=4k 2>/dev/null; '
             f'until grep -q "state=HALTED stored=" {t}/paged.err; do sleep 0.05; done; touch {t}/filled; '
             f'wait $pid; echo $? > {t}/paged.rc; '
             # Full again before each start: the stop before it may have given room back (its WAL checkpointed).
             f'for n in 1 2; do dd if=/dev/zero of="$DISK/filler$n" bs=4k 2>/dev/null; '
             f'ffe run --headless --max-bars 30 2> {t}/full$n.err; echo $? > {t}/full$n.rc; done; '
             f'rm "$DISK"/filler*; date +%s.%N > {t}/room.ts; '
             f'ffe run --headless --max-bars 3 2> {t}/room.err; echo $? > {t}/room.rc; '
             f'cp -a "$DISK/data" {t}/after')
    release = asyncio.ensure_future(release_when(hook, "HALTED", t))
    try:
        # At a bounded speed: as fast as it can, the first run's records alone could fill the disk on a fast
        # machine before the filler does (2,000 bars a second: 8 MB), leaving no room for the start once room is back.
        await asyncio.wait_for(asyncio.to_thread(run_steps_on_a_small_disk, tmp_path, steps, size="8m",
                                                 FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook",
                                                 FFE_MARKET__SPEED="200"), 400)
    finally:
        release.cancel()
        hook.hold.set()
        await hook.stop()
    rc, run = step(t, "run")
    assert rc == 1 and "the engine stopped HALTED" in run, run[-3000:]
    rc, paged = step(t, "paged")
    assert rc == 1 and "state=HALTED" in paged and "cannot write" in paged, paged[-3000:]
    for n in (1, 2):  # stopped on the full disk (before or just after it started: as much room as it found)
        rc, full = step(t, f"full{n}")
        assert rc == 1 and "cannot write" in full, full[-3000:]
    rc, room = step(t, "room")
    assert rc == 0 and "state=HALTED" in room, room[-3000:]
    told = [r.body for r in hook.delivered]
    halted = [b for b in told if b["kind"] == "HALTED"]
    assert len(halted) == 1 and "kept from before this start" in halted[0]["text"], halted
    # The start that paged the HALTED it kept, then stopped on the disk, said so after it: not held back as the
    # failure paged before, which would leave "ffe starts HALTED" the operator's last word.
    assert [b["kind"] for b in told if b["severity"] == "page"] == ["RECORDS_UNWRITABLE", "HALTED",
                                                                     "RECORDS_UNWRITABLE"], told
    rows = db_rows(t / "after" / "ffe.db", "SELECT status, attempts, created_ts, sent_ts FROM alert_outbox "
                                           "WHERE kind = 'HALTED'")
    assert [(status, attempts, created) for status, attempts, created, _ in rows] == \
        [("sent", 1, halted[0]["created_ts"])], rows
    assert rows[0][3] < float((t / "room.ts").read_text()), rows  # when it left, not when the outbox could say so


def test_a_data_directory_made_read_only_under_a_running_engine_still_lets_it_stop_in_order(tmp_path):
    """Its files stay writable (the database, the WAL), but the directory no longer lets the control socket be
    removed at the stop: that is said in a warning, and the stop goes on in order (the engine's records closed, the
    stop record written, exit 0), not a traceback in its place."""
    starter_config(tmp_path)
    data = tmp_path / "data"
    proc = forked_ffe.Popen(ffe_cmd("run", "--headless"), cwd=tmp_path, env=ffe_env(FFE_MARKET__SPEED="20"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=without_permission_overrides)
    try:
        wait_until(lambda: (data / "ffe.sock").exists() or proc.poll() is not None, timeout=60,
                   what="the control socket")
        assert proc.poll() is None
        data.chmod(0o500)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        data.chmod(0o700)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "ffe.sock" in err and "could not be removed" in err, err[-3000:]
    last = audit_lines(tmp_path / "logs" / "audit.jsonl")[-1]
    assert (last["event"], last.get("phase")) == ("run", "stop"), last
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_a_read_only_database_file_stops_the_start_saying_the_next_one_comes_up_halted(traded, tmp_path):
    """The database file alone cannot be written (its mode; its directory can): the start empties the disk reserve
    to store HALTED, which cannot be stored either. The next start comes up HALTED all the same, and the error line
    says so, as a failure while trading says it."""
    cwd = copy_of(traded, tmp_path)
    starter_config(cwd)
    db = cwd / "data" / "ffe.db"
    db.chmod(0o400)
    try:
        proc = forked_ffe.run(ffe_cmd("run", "--headless", "--max-bars", "5"), cwd=cwd, env=ffe_env(),
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              preexec_fn=without_permission_overrides)
    finally:
        db.chmod(0o600)
    line = the_error_line(proc)
    assert "ffe.db" in line and "the next start comes up HALTED" in line, line
    again = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "state=HALTED" in again.stderr, again.stderr[-3000:]


async def test_a_start_that_fails_on_a_record_it_cannot_write_is_the_last_word_at_the_receiver(tmp_path):
    """The start's STARTED is raised (its run record went into the outbox) and then a record cannot be written (the
    trail at a file size limit): the start stops, paging RECORDS_UNWRITABLE past the outbox. What the monitor had
    to send goes first, so the operator's last word is the failure, not `ffe started (PAPER, RUNNING, ...)`."""
    hook = await Receiver().start()
    try:
        first = await asyncio.to_thread(run_limited, tmp_path, "run", "--headless", "--max-bars", "60",
                                        fsize=1 << 30)
        assert first.returncode == 0, first.stderr[-3000:]
        trail = tmp_path / "logs" / "audit.jsonl"
        proc = await asyncio.to_thread(run_limited, tmp_path, "run", "--headless", fsize=trail.stat().st_size + 200,
                                       FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook", FFE_ALERTS__WINDOW_S="1")
        assert proc.returncode == 1 and "cannot write" in proc.stderr, proc.stderr[-3000:]
        kinds = [r.body["kind"] for r in hook.delivered]
        assert kinds[-1] == "RECORDS_UNWRITABLE", kinds
        assert "start FAILED" in hook.delivered[-1].body["text"], hook.delivered[-1].body
    finally:
        await hook.stop()


async def test_a_disk_that_fills_just_after_a_start_pages_after_that_start_s_started(tmp_path):
    """The start gets through and raises STARTED into the outbox; a moment later a record cannot be written. The
    RECORDS_UNWRITABLE page, sent past the outbox, goes after what the outbox held, so the last word is the
    failure, not `ffe started (PAPER, RUNNING, ...)`."""
    hook = await Receiver().start()
    try:
        proc = await asyncio.to_thread(run_limited, tmp_path, "run", "--headless", fsize=300 * 1024,
                                       FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook")
        assert proc.returncode == 1 and "cannot write" in proc.stderr, proc.stderr[-3000:]
        assert "engine started" in proc.stderr, proc.stderr[-3000:]
        kinds = [r.body["kind"] for r in hook.delivered]
        assert kinds[-1] == "RECORDS_UNWRITABLE" and "STARTED" in kinds, kinds
    finally:
        await hook.stop()
