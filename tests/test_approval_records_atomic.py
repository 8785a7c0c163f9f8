"""A committed approval always has its decision and its `approval` event committed with it.

The instant that matters is the one right after the store commits an approval row: the database a SIGKILL would
leave then is copied (SQLite's online backup reads only committed data) and must hold the decision the approval
is for (its row and its `decision` event) and the `approval` event that says the approval's status. Otherwise the
next start restores an approval of a decision that exists nowhere, which can still be approved and filled.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from ffe_engine import doctor
from ffe_engine.store import Store

from conftest import run_ffe
from pipeline_helpers import BUY, crashed_copy, make_settings, pipelines

_ = pipelines  # a fixture

BTC = "BTC/USDT"


def manual(tmp_path):
    return make_settings(tmp_path, engine={"approval": "manual", "approval_ttl_s": 300.0})


def approval_records(db_path, copy_path, approval_id: str) -> tuple[str, bool, bool, str | None]:
    """(the approval's status, whether its decision row and its decision event are there, its last approval event's
    outcome) in the database a crash at this instant would leave."""
    with crashed_copy(db_path, copy_path) as db:
        status, decision_id = db.execute("SELECT status, decision_id FROM approvals WHERE approval_id = ?",
                                         (approval_id,)).fetchone()
        row = db.execute("SELECT count(*) FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone()[0]
        decision_events = [json.loads(r[0]) for r in db.execute("SELECT data FROM events WHERE event = 'decision'")]
        outcomes = [json.loads(r[0])["outcome"] for r in db.execute(
            "SELECT data FROM events WHERE event = 'approval' ORDER BY seq")
            if json.loads(r[0])["approval_id"] == approval_id]
    said = any(e["decision_id"] == decision_id and e["approval_id"] == approval_id for e in decision_events)
    return status, row == 1, said, outcomes[-1] if outcomes else None


async def test_a_committed_approval_has_its_decision_and_its_event_committed_with_it(tmp_path, pipelines):
    settings = manual(tmp_path)
    p = await pipelines(settings, script={BTC: (BUY, 0.8)})
    problems: list[str] = []
    checked: list[str] = []
    save_approval = p.store.save_approval

    async def save_then_crash_here(row, *args, **kwargs):
        await save_approval(row, *args, **kwargs)
        aid = row["approval_id"]
        status, decided, said, outcome = approval_records(settings.db_path, tmp_path / f"crash{len(checked)}.db",
                                                          aid)
        if not (decided and said):
            problems.append(f"approval {aid} {status} committed: decision row there {decided}, decision event "
                            f"there {said}")
        if outcome != status:
            problems.append(f"approval {aid} {status} committed: its last approval event says {outcome}")
        checked.append(status)

    p.store.save_approval = save_then_crash_here
    await p.bars(1)
    [pending] = p.engine.approvals.pending
    await p.engine.reject(pending, by="bob")
    await p.bars(1)
    [pending] = p.engine.approvals.pending
    res = await p.engine.approve(pending, by="alice")
    assert res["accepted"], res
    assert checked == ["pending", "rejected", "pending", "approved"], checked
    assert not problems, "\n".join(problems)


async def test_an_approval_without_its_decision_is_named_by_doctor_and_by_audit_show(tmp_path, pipelines):
    """Records a kill left so by an older release (the approval row committed, its decision never): doctor names
    it, and `ffe audit show` of the approval says in one line that its records are incomplete."""
    settings = manual(tmp_path)
    p = await pipelines(settings, script={BTC: (BUY, 0.8)})
    await p.bars(1)
    [row] = await p.store.approvals("pending")
    await p.close()
    doctor.check(settings)

    store = await Store.open(settings.db_path)
    try:
        await store.save_approval(dict(row, approval_id="a-orphan", decision_id="d-never-recorded"))
    finally:
        await store.close()
    with pytest.raises(doctor.Violation, match="approval a-orphan.*d-never-recorded"):
        doctor.check(settings)
    proc = run_ffe(tmp_path, "audit", "show", "a-orphan", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "d-never-recorded" in proc.stderr and "incomplete" in proc.stderr, proc.stderr


async def test_an_approval_whose_order_was_journaled_before_a_kill_is_not_pending_after_the_restart(
        tmp_path, pipelines):
    """A kill after an approval's order is journaled (it may be at the venue already) and before the approval is
    marked approved: the next start must not offer it again, or a second approve would send a second order for
    one decision. It starts as approved, with that order."""
    settings = manual(tmp_path)
    p = await pipelines(settings, script={BTC: (BUY, 0.8)})
    await p.bars(1)
    [pending] = p.engine.approvals.pending
    journal_order = p.store.journal_order
    crash = tmp_path / "crash.db"

    async def journal_then_crash_here(o, *args, **kwargs):
        await journal_order(o, *args, **kwargs)
        with crashed_copy(settings.db_path, crash):
            pass

    p.store.journal_order = journal_then_crash_here
    res = await p.engine.approve(pending, by="alice")
    assert res["accepted"], res
    await p.close()
    for stale in ("-wal", "-shm"):
        settings.db_path.with_name(settings.db_path.name + stale).unlink(missing_ok=True)
    crash.replace(settings.db_path)
    with sqlite3.connect(settings.db_path) as db:  # the state the kill left
        assert db.execute("SELECT status FROM approvals WHERE approval_id = ?", (pending,)).fetchone() == ("pending",)
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (1,)

    p = await pipelines(settings, script={})
    assert p.engine.approvals.pending == {}
    (row,) = await p.store.approvals()
    assert row["status"] == "approved" and row["client_order_id"] == res["client_order_id"], row
    with pytest.raises(Exception, match="no pending approval"):
        await p.engine.approve(pending, by="alice")


async def test_an_approval_event_the_disk_refused_is_not_committed_later_without_its_approval(tmp_path, pipelines):
    """The audit trail's disk refuses the write of an approval's end (full), the engine stops HALTED; the disk has
    room again by the time it closes (the disk reserve it empties, or anything freed meanwhile). The `approval` event
    that was never written with its row must not be committed then on its own: the records would say `rejected`
    while the approval stays pending, and `ffe doctor` would call them broken."""
    import errno

    from ffe_engine import audit
    from ffe_engine.errors import StorageError

    settings = manual(tmp_path)
    p = await pipelines(settings, script={BTC: (BUY, 0.8)})
    await p.bars(1)
    await p.engine.flush()
    [row] = await p.store.approvals("pending")
    append = audit.append_lines
    refused: list[int] = []

    def full_once(fd: int, lines: list[bytes]) -> None:
        if not refused:
            refused.append(len(lines))
            raise OSError(errno.ENOSPC, "No space left on device")
        append(fd, lines)

    audit.append_lines = full_once
    try:
        with pytest.raises(StorageError):
            await p.engine.reject(row["approval_id"], by="ctl")
        await p.engine._storage_failed(StorageError("audit.jsonl: cannot write (No space left on device)"))
    finally:
        audit.append_lines = append
    await p.close()
    assert refused, "the disk never refused a write"
    db = sqlite3.connect(settings.db_path)
    try:
        status = db.execute("SELECT status FROM approvals WHERE approval_id = ?", (row["approval_id"],)).fetchone()[0]
        said = [json.loads(d)["outcome"] for (d,) in db.execute(
            "SELECT data FROM events WHERE event = 'approval' ORDER BY seq") if row["approval_id"].encode() in d]
    finally:
        db.close()
    assert said[-1] == status, (status, said)
    doctor.check(settings)
