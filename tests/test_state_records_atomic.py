"""A committed state change always has its `engine_state` event committed with it.

The instant that matters is the one right after the store commits the `engine_state` row (or the approval mode):
the database a SIGKILL would leave then is copied (SQLite's online backup reads only committed data) and its last
`engine_state` event must say what the row says. Otherwise a restart finds a pause or a halt the records never
mention, and the trail later shows the engine re-armed from a halt it never recorded. A state stored without its
event by design (HALTED on a full disk, HALTED kept across a restore) is said by the next start, and `ffe doctor`
names the difference until then.
"""

from __future__ import annotations

import json

from conftest import run_ffe, run_ffe_paging, starter_config
from ffe_engine import doctor
from ffe_engine.model import EngineState
from ffe_engine.store import keep_state, mark_restored

from pipeline_helpers import BUY, crashed_copy, make_settings, pipelines

_ = pipelines  # a fixture

BTC = "BTC/USDT"


def state_records(db_path, copy_path) -> tuple[tuple | None, tuple | None, str | None, str | None]:
    """(the engine_state row's state and reason, the last state event's, the approval mode stored, the last
    approval mode event's) in the database a crash at this instant would leave."""
    with crashed_copy(db_path, copy_path) as db:
        row = db.execute("SELECT state, reason FROM engine_state").fetchone()
        mode = db.execute("SELECT value FROM kv WHERE key = 'approval_mode'").fetchone()
        events = [json.loads(r[0]) for r in db.execute("SELECT data FROM events WHERE event = 'engine_state' "
                                                       "ORDER BY seq")]
    states = [(e["state"], e["reason"]) for e in events if not e["reason"].startswith("approval mode ")]
    modes = [e["reason"].removeprefix("approval mode ") for e in events if e["reason"].startswith("approval mode ")]
    return (tuple(row) if row else None, states[-1] if states else None, json.loads(mode[0]) if mode else None,
            modes[-1] if modes else None)


async def test_a_committed_state_change_has_its_engine_state_event_committed_with_it(tmp_path, pipelines):
    settings = make_settings(tmp_path)
    p = await pipelines(settings, script={BTC: (BUY, 0.8)})
    problems: list[str] = []
    checked: list[str] = []
    set_engine_state = p.store.set_engine_state

    async def set_then_crash_here(state, reason, *args, **kwargs):
        await set_engine_state(state, reason, *args, **kwargs)
        row, last, _mode, _mode_event = state_records(settings.db_path, tmp_path / f"crash{len(checked)}.db")
        if row != last:
            problems.append(f"{state} ({reason}) committed: the row says {row}, the last engine_state event {last}")
        checked.append(state)

    p.store.set_engine_state = set_then_crash_here
    await p.bars(1)
    await p.engine.pause("ffe ctl pause", by="ctl")
    await p.engine.resume(by="ctl")
    await p.engine.halt("ffe ctl halt", by="ctl")
    await p.engine.resume(by="ctl", confirm=True)
    assert checked == ["PAUSED", "RUNNING", "HALTED", "RUNNING"], checked
    assert not problems, "\n".join(problems)


async def test_an_approval_mode_change_has_its_event_committed_with_it(tmp_path, pipelines):
    settings = make_settings(tmp_path)
    p = await pipelines(settings, script={BTC: (BUY, 0.8)})
    problems: list[str] = []
    checked: list[str] = []
    put_kv = p.store.put_kv

    async def put_then_crash_here(key, value, *args, **kwargs):
        await put_kv(key, value, *args, **kwargs)
        if key != "approval_mode":
            return
        _row, _last, mode, mode_event = state_records(settings.db_path, tmp_path / f"crash{len(checked)}.db")
        if mode != mode_event:
            problems.append(f"approval mode {value} committed: stored {mode}, "
                            f"the last approval mode event {mode_event}")
        checked.append(value)

    p.store.put_kv = put_then_crash_here
    await p.engine.set_approval_mode("manual", by="ctl")
    await p.engine.set_approval_mode("auto", by="ctl")
    assert checked == ["manual", "auto"], checked
    assert not problems, "\n".join(problems)


async def test_a_state_stored_without_its_event_is_named_by_doctor_and_said_by_the_next_start(tmp_path, pipelines):
    """`ffe restore` keeps a HALTED it moved aside by storing the row alone (and a full disk stores HALTED alone):
    doctor notes the difference, and the next start records the event that says the state it starts in."""
    settings = make_settings(tmp_path)
    p = await pipelines(settings, script={BTC: (BUY, 0.8)})
    await p.bars(1)
    await p.close()
    mark_restored(settings.db_path, {"backup": "ffe-backup-test.tar.zst", "taken_ms": 0}, 1.0)  # as a restore
    keep_state(settings.db_path, EngineState.HALTED, "ffe ctl halt (by ctl, kept across a restore)", 1.0)
    notes = doctor.check(settings).notes
    assert [n for n in notes if "engine_state" in n and "HALTED kept across a restore, without its event" in n], notes

    p = await pipelines(settings, script={BTC: (BUY, 0.8)})
    await p.engine.flush()
    row, last, _mode, _mode_event = state_records(settings.db_path, tmp_path / "after.db")
    assert row == last == ("HALTED", "ffe ctl halt (by ctl, kept across a restore)")
    [said] = [e for e in await p.events("engine_state") if e["reason"].endswith("kept across a restore)")]
    assert (said["state"], said["previous"], said["by"]) == ("HALTED", "RUNNING", "restore")
    await p.close()
    doctor.check(settings)


async def test_a_halted_state_restated_at_start_is_paged_as_kept_not_as_a_kill_switch(tmp_path):
    """HALTED stored without its event (kept across a restore; on a full disk, where RECORDS_UNWRITABLE had a single
    try) is said by the next start in its records and paged once more, as a halt kept from before this start: not
    as if the kill switch had just cancelled the open orders. The page it had may never have reached anyone."""
    starter_config(tmp_path)
    first = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert first.returncode == 0, first.stderr
    mark_restored(tmp_path / "data" / "ffe.db", {"backup": "ffe-backup-test.tar.zst", "taken_ms": 0}, 1.0)
    keep_state(tmp_path / "data" / "ffe.db", EngineState.HALTED, "ffe ctl halt (by ctl, kept across a restore)",
               1.0)
    proc, hook = await run_ffe_paging(tmp_path, "run", "--headless", "--max-bars", "3")
    assert proc.returncode == 0, proc.stderr
    halted = [r.body for r in hook.delivered if r.body.get("kind") == "HALTED"]
    assert len(halted) == 1, [r.body for r in hook.delivered]
    text = halted[0]["text"]
    assert "kept from before this start" in text and "cancelled" not in text and "ffe ctl halt" in text, text
    assert halted[0]["severity"] == "page"
    tail = run_ffe(tmp_path, "audit", "tail", "--event", "engine_state")
    [said] = [line for line in tail.stdout.splitlines() if "kept across a restore" in line]
    assert "HALTED (kept from before this start)" in said and "->" not in said, said  # no change made then
