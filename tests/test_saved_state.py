"""Saved state that takes precedence over the configuration at start is announced, and the safer one wins.

A data directory keeps what the last run left: the approval mode the operator set, the engine state, learned
weights. Where it disagrees with the configuration on whether the engine trades, the safer of the two wins (manual
over auto, HALTED over PAUSED over RUNNING), and every disagreement is said: a log line, an `override` event the
console's log shows, and `ffe config check` for a data directory that has saved state. Real host, real SQLite,
real subprocess for the CLI.
"""

from __future__ import annotations

import json

import pytest

from conftest import db_rows, engine_session, ffe_env, make_settings, run_ffe
from ffe_engine.model import EngineState
from ffe_tui.state import ConsoleState
from test_damaged_database import assert_one_line, damage_record


def overrides_recorded(db) -> list[dict]:
    return [json.loads(r[0]) for r in db_rows(db, "SELECT data FROM events WHERE event = 'override' ORDER BY seq")]


async def test_configured_manual_approval_wins_over_auto_saved_from_the_last_run_and_is_announced(tmp_path):
    async with engine_session(make_settings(tmp_path, engine={"approval": "manual"})) as running:
        await running.engine.set_approval_mode("auto", by="operator")  # saved: auto
    settings = make_settings(tmp_path, engine={"approval": "manual"})
    async with engine_session(settings) as running:
        assert running.engine.approval_mode == "manual"
        [o] = running.engine.overrides
        assert (o.setting, o.configured, o.saved, o.effective) == ("engine.approval", "manual", "auto", "manual")
        log = running.log.getvalue()
        assert "saved state over configuration" in log and "engine.approval" in log
    [ev] = overrides_recorded(settings.db_path)
    assert (ev["setting"], ev["configured"], ev["saved"], ev["effective"]) == ("engine.approval", "manual", "auto",
                                                                             "manual")


async def test_manual_approval_saved_from_the_last_run_wins_over_configured_auto_and_is_shown(tmp_path):
    async with engine_session(make_settings(tmp_path)) as running:
        await running.engine.set_approval_mode("manual", by="operator")
    settings = make_settings(tmp_path)  # engine.approval = "auto"
    async with engine_session(settings) as running:
        assert running.engine.approval_mode == "manual"
        assert [o.effective for o in running.engine.overrides] == ["manual"]
    # what the console's log shows for the event
    from ffe_engine import events as ev

    view = ConsoleState(["BTC/USDT"])
    [rec] = overrides_recorded(settings.db_path)
    view.apply([ev.OverrideEvent(**{k: rec[k] for k in ("setting", "configured", "saved", "effective", "message")})])
    [line] = [x.text for x in view.lines if x.name == "override"]
    assert "approval mode manual" in line and "engine.approval = auto" in line


async def test_manual_asked_while_the_configuration_alone_makes_it_manual_is_saved_over_a_saved_auto(tmp_path):
    # Saved auto; started manual by the configuration (the safer wins); the operator then asks for manual: that is
    # the operator's word, saved, so a start whose configuration says auto again stays manual.
    async with engine_session(make_settings(tmp_path)) as running:
        await running.engine.set_approval_mode("manual", by="operator")
        await running.engine.set_approval_mode("auto", by="operator")  # saved: auto
    async with engine_session(make_settings(tmp_path, engine={"approval": "manual"})) as running:
        assert running.engine.approval_mode == "manual"
        assert await running.engine.set_approval_mode("manual", by="operator") == "manual"
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT value FROM kv WHERE key = 'approval_mode'") == [('"manual"',)]
    async with engine_session(make_settings(tmp_path)) as running:  # engine.approval = "auto" again
        assert running.engine.approval_mode == "manual"


async def test_a_halted_engine_restarts_halted_and_says_so(tmp_path):
    settings = make_settings(tmp_path)
    async with engine_session(settings) as running:
        await running.engine.halt(reason="kill switch", by="operator")
    async with engine_session(settings) as running:
        assert running.engine.state is EngineState.HALTED
        [o] = running.engine.overrides
        assert (o.configured, o.saved, o.effective) == ("RUNNING", "HALTED", "HALTED")
        assert "kill switch" in o.message and "re-arm" in o.message


async def test_no_announcement_when_the_saved_state_agrees_with_the_configuration(tmp_path):
    settings = make_settings(tmp_path)
    async with engine_session(settings):
        pass
    async with engine_session(settings) as running:
        assert running.engine.overrides == []
    assert overrides_recorded(settings.db_path) == []


def write_config(tmp_path, approval: str) -> None:
    (tmp_path / "config.toml").write_text(
        f'[engine]\napproval = "{approval}"\n\n[storage]\npath = "{tmp_path / "data" / "ffe.db"}"\n\n'
        f'[logging]\ndir = "{tmp_path / "logs"}"\n')


async def test_config_check_names_the_saved_state_that_would_override_the_configuration(tmp_path):
    write_config(tmp_path, "auto")
    before = run_ffe(tmp_path, "config", "check")
    assert before.returncode == 0 and "saved state" not in before.stdout  # no data directory yet
    async with engine_session(make_settings(tmp_path)) as running:
        await running.engine.set_approval_mode("manual", by="operator")
        await running.engine.halt(reason="kill switch", by="operator")
    res = run_ffe(tmp_path, "config", "check")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("# saved state in"))
    notes = lines[head + 1:]
    assert any("engine.approval" in x and "manual" in x for x in notes), res.stdout
    assert any("HALTED" in x and "kill switch" in x for x in notes), res.stdout
    # the environment variable is configuration too: manual configured, auto saved -> manual, and said
    async with engine_session(make_settings(tmp_path)) as running:
        await running.engine.set_approval_mode("auto", by="operator")
    res = run_ffe(tmp_path, "config", "check", env=ffe_env(FFE_ENGINE__APPROVAL="manual"))
    assert res.returncode == 0, res.stderr
    assert any(x.startswith("#") and "engine.approval = manual overrides" in x for x in res.stdout.splitlines())


def test_config_check_says_when_the_database_a_start_would_read_is_damaged(tmp_path):
    """The configuration is valid (exit 0), but the next start would stop on the database: said as a comment."""
    write_config(tmp_path, "auto")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ffe.db").write_bytes(bytes(range(256)) * 16)
    res = run_ffe(tmp_path, "config", "check")
    assert res.returncode == 0, res.stderr
    notes = [x for x in res.stdout.splitlines() if x.startswith("#") and "ffe.db" in x]
    assert len(notes) == 1 and "damaged" in notes[0] and "the next start" in notes[0], res.stdout


# The approval mode the operator set, against the engine_state event committed with it: the record lost (deleted by
# hand, a bad merge of copies) or put back to auto would start the account in auto, and entries would go out without
# the approval the operator asked for.
APPROVAL_MODE_DAMAGED = {
    "missing": ("DELETE FROM kv WHERE key = 'approval_mode'", "has no key approval_mode"),
    "put_back_to_auto": ("UPDATE kv SET value = '\"auto\"' WHERE key = 'approval_mode'", "approval_mode auto"),
}


@pytest.mark.parametrize("damage", APPROVAL_MODE_DAMAGED)
async def test_an_approval_mode_unlike_its_recorded_change_stops_the_start_and_doctor_names_it(tmp_path, damage):
    statement, words = APPROVAL_MODE_DAMAGED[damage]
    write_config(tmp_path, "auto")
    async with engine_session(make_settings(tmp_path)) as running:
        await running.engine.set_approval_mode("manual", by="operator")
    db = tmp_path / "data" / "ffe.db"
    damage_record(db, statement)
    before = db.read_bytes()
    for args in (("doctor",), ("run", "--headless", "--max-bars", "5")):
        proc = run_ffe(tmp_path, *args, timeout=60)
        line = assert_one_line(proc, "ffe.db", words, "approval mode manual")
        assert "engine started" not in proc.stderr, proc.stderr[-3000:]
        assert db.read_bytes() == before, args
    assert "damaged" in line
    assert db_rows(db, "SELECT COUNT(*) FROM orders") == [(0,)]


async def test_an_approval_mode_that_agrees_with_its_recorded_change_starts_in_it(tmp_path):
    write_config(tmp_path, "auto")
    async with engine_session(make_settings(tmp_path)) as running:
        await running.engine.set_approval_mode("manual", by="operator")
        await running.engine.set_approval_mode("auto", by="operator")
        await running.engine.set_approval_mode("manual", by="operator")
    assert run_ffe(tmp_path, "doctor").returncode == 0
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3", timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "approval=manual" in proc.stderr, proc.stderr[-3000:]


async def test_a_restart_of_an_account_is_not_said_a_fresh_start(tmp_path):
    """`fresh start` is the reason of a database's first start only (states.md): a restart of an account left RUNNING
    since then says `restart`, in the state shown and the run's record, not that the records began anew."""
    settings = make_settings(tmp_path)
    async with engine_session(settings) as running:
        assert (running.engine.state.value, running.engine.trading.reason) == ("RUNNING", "fresh start")
    async with engine_session(settings) as running:
        assert (running.engine.state.value, running.engine.trading.reason) == ("RUNNING", "restart")
