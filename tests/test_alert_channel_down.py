"""A channel down for long, to a real HTTP receiver and a real SQLite outbox: the alerts its full outbox dropped are
told on it once it takes alerts again, every one exactly once, whatever restarts came between (the count is in the
outbox, not in a process's memory), and what they said can be found; a channel that answers 429 with Retry-After is
not tried again before it (bounded by alerts.retry_max_s)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from typing import Any, AsyncIterator, Iterator

import pytest

from conftest import db_rows, db_value
from ffe_engine import logs
from ffe_engine.alerts import Alert, Notifier
from ffe_engine.channels import channels_from
from ffe_engine.config import AlertSettings
from ffe_engine.store import MIGRATIONS, Store
from receiver import Receiver
from test_monitor import until

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}
WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def notices(hook: Receiver, since: float = 0.0) -> list[str]:
    """The ALERTS_DROPPED notices delivered (that arrived at or after `since`, time.monotonic)."""
    return [r.body["text"] for r in hook.delivered if r.body.get("kind") == "ALERTS_DROPPED" and r.at >= since]


def dropped(db: Any) -> int:
    return int(db_value(db, "SELECT COUNT(*) FROM alert_outbox WHERE status = 'dropped'"))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """The log lines written while the test runs, rendered as they are on stderr."""
    lines: list[str] = []
    logs.set_up(logging.INFO, lambda level, fields: lines.append(logs.render(fields)))
    try:
        yield lines
    finally:
        logs.set_up(logging.NOTSET, lambda level, fields: logs.write_line(sys.stderr, fields))


@contextlib.asynccontextmanager
async def a_run(db: Any, hook: Receiver, **alerts: Any) -> AsyncIterator[Notifier]:
    """One process's notifier on the outbox in `db`: opened, started, closed (its tasks ended, as a stop ends
    them) at the end."""
    cfg = AlertSettings(webhook_url=hook.url, min_severity="info", **{**FAST, **alerts})
    store = await Store.open(db)
    notifier = Notifier(cfg, store, channels_from(cfg), now=time.monotonic, wall=lambda: WALL)
    try:
        await notifier.start()
        yield notifier
    finally:
        await notifier.close(grace_s=0.0)
        await store.close()


def round_failed(db: Any, text: str) -> bool:
    """A round of tries of the alert saying `text` failed, and was recorded: its delivery is over (the outbox's lock
    is let go after the record, and a trim takes that lock)."""
    return bool(db_value(db, "SELECT attempts FROM alert_outbox WHERE text = ?", (text,)))


def logged_drops(lines: list[str]) -> int:
    """The drops said in the log, each with its text (written once the trim that dropped it has been recorded)."""
    return sum("alert dropped from the full outbox" in line for line in lines)


async def raise_warnings(notifier: Notifier, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        notifier.raise_alert(Alert("TEST", f"TEST:{i}", "warn", f"warning {i}"))
    await notifier.store.flush(audit_first=False)


async def test_alerts_dropped_before_a_restart_are_told_once_when_the_channel_takes_alerts_again(tmp_path,
                                                                                                log_lines):
    """Run 1 drops alerts while the channel is down; run 2 drops more; run 3, the channel back, drops none itself:
    its first notice counts every one of them, the metric's count holds across the restarts, and a fourth run
    tells nothing again."""
    db = tmp_path / "ffe.db"
    hook = await Receiver().start()
    hook.fail_with = 503
    # While the channel is down each run's first round of tries fails, then the channel is left alone (a long
    # retry_max_s): the outbox is filled once that round has failed, so no alert is on the wire when it is trimmed
    # (the one on the wire is spared, and another dropped for it).
    down = {"outbox_max": 3, "retry_max_s": 60.0}
    async with a_run(db, hook, **down) as first:
        await raise_warnings(first, 1)
        await until(lambda: round_failed(db, "warning 0"), what="run 1's first round of tries failed")
        await raise_warnings(first, 6, first=1)
        await until(lambda: dropped(db) == 4 and logged_drops(log_lines) == 4, what="run 1's outbox trimmed")
    async with a_run(db, hook, **down) as second:
        assert second.status_dict()["webhook"]["dropped"] == 4  # counted from the outbox at start
        await until(lambda: round_failed(db, "warning 4"), what="run 2's first round of tries failed")
        await raise_warnings(second, 2, first=7)
        await until(lambda: dropped(db) == 6 and logged_drops(log_lines) == 6, what="run 2's outbox trimmed")
    log = "\n".join(log_lines)
    hook.fail_with = None
    async with a_run(db, hook, outbox_max=3) as third:
        await until(lambda: len(notices(hook)) == 1 and len(hook.delivered) == 4,
                    what="the kept alerts and the notice delivered")
        await asyncio.sleep(0.5)  # its record written
        assert third.status_dict()["webhook"]["dropped"] == 6
    assert [r.body["text"] for r in hook.delivered if r.body["kind"] == "TEST"] == ["warning 6", "warning 7",
                                                                                    "warning 8"]
    [notice] = notices(hook)
    assert "ffe dropped 6 undelivered alert(s)" in notice, notice
    assert "TEST x6 (raised 2026-01-01T00:00:00Z)" in notice, notice  # what they were, and when
    # "What they said": each dropped alert's text is in the log line of its drop, and kept in the outbox.
    texts = [t for (t,) in db_rows(db, "SELECT text FROM alert_outbox WHERE status = 'dropped' ORDER BY id")]
    assert texts == [f"warning {i}" for i in range(6)]
    assert all(f"text='{t}'" in log or f'text="{t}"' in log for t in texts), log
    assert "alert dropped" in log and "alert_outbox" in notice, notice
    # The notice is kept with what the operator was told.
    assert db_rows(db, "SELECT status FROM alert_outbox WHERE kind = 'ALERTS_DROPPED'") == [("sent",)]
    async with a_run(db, hook, outbox_max=3) as fourth:
        await fourth.store.flush(audit_first=False)
        await raise_warnings(fourth, 1, first=20)
        await until(lambda: len(hook.delivered) == 5, what="a later alert")
        await asyncio.sleep(1.5)
        assert fourth.status_dict()["webhook"]["dropped"] == 6
    assert len(notices(hook)) == 1  # each dropped alert told exactly once
    await hook.stop()


async def test_a_notice_whose_answer_was_lost_to_a_stop_is_told_again_after_the_restart_not_lost(tmp_path):
    """The process ends with the notice on the wire (the receiver has it, ffe has no answer): nothing says it was
    told, so the next start tells the same count again. At least once: a count told twice rather than never."""
    db = tmp_path / "ffe.db"
    hook = await Receiver().start()
    hook.fail_with = 503
    async with a_run(db, hook, outbox_max=2) as first:
        await raise_warnings(first, 5)
        await until(lambda: dropped(db) == 3, what="the outbox trimmed")
        hook.hold, hook.hold_kind = asyncio.Event(), "ALERTS_DROPPED"
        hook.fail_with = None
        await until(lambda: any(r.body.get("kind") == "ALERTS_DROPPED" for r in hook.requests),
                    what="the notice on the wire")
    hook.hold.set()  # the receiver has it; the process that sent it is gone
    restarted = time.monotonic()
    async with a_run(db, hook, outbox_max=2):
        await until(lambda: len(notices(hook, restarted)) == 1, what="the notice told again", timeout=20)
        await asyncio.sleep(0.5)  # its record written
    assert "ffe dropped 3 undelivered alert(s)" in notices(hook, restarted)[0]
    again = time.monotonic()
    async with a_run(db, hook, outbox_max=2):  # told, and recorded: not again
        await asyncio.sleep(1.5)
    assert notices(hook, again) == []
    await hook.stop()


async def test_an_alert_read_for_delivery_when_the_outbox_is_trimmed_is_delivered_not_counted_dropped(tmp_path,
                                                                                                    log_lines):
    """The delivery has read the next alert from the outbox but not yet begun to send it when the ticker trims the
    full outbox (on a busy machine the tasks resume in any order): that alert is on its way, so another is dropped.
    An alert counted dropped (in the status, the log and the notice) is never delivered, and one delivered is never
    counted dropped."""
    db = tmp_path / "ffe.db"
    hook = await Receiver().start()
    async with a_run(db, hook, outbox_max=1) as run:
        store = run.store
        read, trim = store.next_alert, store.trim_alerts
        second_raised, trimmed = False, asyncio.Event()

        async def trim_seen(*args: Any, **kwargs: Any) -> Any:
            after_the_second = second_raised  # begun once the second alert was raised: it trims the outbox full
            dropped_rows = await trim(*args, **kwargs)
            if after_the_second:
                trimmed.set()
            return dropped_rows

        async def read_then_the_ticker_trims(*args: Any, **kwargs: Any) -> Any:
            nonlocal second_raised
            alert = await read(*args, **kwargs)
            if alert is not None and alert["text"] == "warning 0" and not second_raised:
                await raise_warnings(run, 1, first=1)  # the outbox over outbox_max now
                second_raised = True
                await trimmed.wait()  # the delivery task resumes only after the ticker's trim
            return alert

        store.next_alert, store.trim_alerts = read_then_the_ticker_trims, trim_seen
        await raise_warnings(run, 1)
        # Nothing left to deliver or to tell: each alert delivered, or dropped and told by a recorded notice.
        await until(lambda: trimmed.is_set() and not db_value(
            db, "SELECT COUNT(*) FROM alert_outbox WHERE status = 'pending' OR status = 'dropped' AND told_ts IS NULL"),
            what="the outbox delivered and its dropped alerts told")
        status = run.status_dict()["webhook"]
    delivered = [r.body["text"] for r in hook.delivered if r.body["kind"] == "TEST"]
    counted = [t for (t,) in db_rows(db, "SELECT text FROM alert_outbox WHERE status = 'dropped' ORDER BY id")]
    assert delivered == ["warning 0"], delivered  # the one on its way; the later one dropped for it
    assert counted == ["warning 1"], counted
    assert status["dropped"] == len(counted) == dropped(db), status
    told = [line for line in log_lines if "alert dropped from the full outbox" in line]
    assert len(told) == 1 and "warning 1" in told[0], told
    [notice] = notices(hook)
    assert "ffe dropped 1 undelivered alert(s)" in notice, notice
    await hook.stop()


async def test_dropped_alerts_of_a_database_from_before_the_count_was_kept_are_told_and_every_row_kept(tmp_path):
    """A schema version 3 database (an old account, an old backup) opens: its outbox rows are all kept, and the
    alerts it had dropped, which nothing says were told, are told once."""
    db = tmp_path / "ffe.db"
    conn = sqlite3.connect(db)
    for v in (1, 2, 3):
        for stmt in MIGRATIONS[v]:
            conn.execute(stmt)
    conn.execute("PRAGMA user_version = 3")
    rows = [("webhook", "HALTED", "HALTED", "page", "sent one", WALL - 90, "sent"),
            ("webhook", "TEST", "TEST", "warn", "dropped one", WALL - 60, "dropped"),
            ("webhook", "TEST", "TEST", "info", "dropped two", WALL - 30, "dropped")]
    conn.executemany("INSERT INTO alert_outbox (channel, key, kind, severity, text, created_ts, status) "
                     "VALUES (?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()
    hook = await Receiver().start()
    async with a_run(db, hook):
        await until(lambda: len(notices(hook)) == 1, what="the notice", timeout=20)
    assert "ffe dropped 2 undelivered alert(s)" in notices(hook)[0]
    kept = db_rows(db, "SELECT text, status FROM alert_outbox WHERE kind != 'ALERTS_DROPPED' ORDER BY id")
    assert kept == [("sent one", "sent"), ("dropped one", "dropped"), ("dropped two", "dropped")]
    await hook.stop()


async def test_a_channel_answering_429_is_tried_again_after_its_retry_after_bounded_by_retry_max_s(tmp_path):
    db = tmp_path / "ffe.db"
    hook = await Receiver().start()
    hook.fail_with, hook.retry_after = 429, "1"
    async with a_run(db, hook, retry_max_s=5.0) as run:
        await raise_warnings(run, 1)
        await until(lambda: len(hook.requests) >= 2, what="a second try", timeout=10)
        times = [r.at for r in hook.requests]
        assert times[1] - times[0] >= 0.9, times  # not 0.05 s later, as the backoff alone would
        hook.retry_after = "20"  # more than the cap: waited for no longer than alerts.retry_max_s
        # (a round of tries that failed leaves the channel alone for retry_max_s before the next: up to 5 + 5 s)
        await until(lambda: len(hook.requests) >= 4, what="two more tries", timeout=30)
        times = [r.at for r in hook.requests]
        assert times[3] - times[2] <= 6.0, times
    await hook.stop()


@pytest.mark.parametrize("damage", ["empty", "garbage", "directory"])
async def test_a_damaged_delivered_file_is_said_once_for_what_it_is(tmp_path, log_lines, damage):
    """ffe.alerts-delivered unreadable or damaged: the start says so once, in its own words (alerts delivered whose
    sent mark was not written are delivered again), not in the words of ffe.alerts-sent (repeats within a window),
    and goes on."""
    db = tmp_path / "ffe.db"
    delivered = tmp_path / "ffe.alerts-delivered"
    if damage == "directory":
        delivered.mkdir()
    else:
        delivered.write_bytes(b"" if damage == "empty" else b"\x00garbage\xff" * 40)
    hook = await Receiver().start()
    cfg = AlertSettings(webhook_url=hook.url, min_severity="info", **FAST)
    store = await Store.open(db)
    notifier = Notifier(cfg, store, channels_from(cfg), now=time.monotonic, wall=lambda: WALL,
                        sent_file=tmp_path / "ffe.alerts-sent")
    try:
        await notifier.start()
    finally:
        await notifier.close(grace_s=0.0)
        await store.close()
        await hook.stop()
    said = [line for line in log_lines if "ffe.alerts-delivered" in line]
    assert len(said) == 1, said
    assert "delivered again" in said[0] and "repeats" not in said[0], said[0]


def test_a_damaged_sent_alerts_file_is_said_once_at_a_start(tmp_path):
    """The file beside the database that keeps the windows of alerts sent past the outbox, damaged (garbage in it):
    its loss is said once in the start's log, not once per look the start takes at it."""
    from conftest import ffe_env, run_ffe

    assert run_ffe(tmp_path, "run", "--headless", "--max-bars", "3").returncode == 0
    (tmp_path / "data" / "ffe.alerts-sent").write_bytes(bytes(range(256)) * 16)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3",
                   env=ffe_env(FFE_ALERTS__WEBHOOK_URL="http://127.0.0.1:9/hook"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("damaged: alerts sent before this start") == 1, proc.stderr[-3000:]
