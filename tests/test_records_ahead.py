"""What audit records after the database's last event mean (ffe_engine/ahead.py): the last moment before a kill,
or records the database had committed and lost. The records are the trail's own lines, as the store writes them.

A kill leaves one uncommitted moment of one run: its start record with what the start wrote (killed while starting),
its stop record (killed while stopping, a service manager's stop timeout), or what it was doing. Records across a
run's boundary (a stop with more after it, a start with bar decisions before or after it), a whole run (its start
and its stop), or over a minute of records are no kill's moment: the database lost them."""

from __future__ import annotations

import orjson
import pytest

from ffe_engine.ahead import Ahead

T0 = "2026-12-05T11:38:46.308Z"


def line(event: str, ts: str = T0, **fields) -> bytes:
    return orjson.dumps({"seq": 1, "ts": ts, "event": event, **fields})


def ahead(*lines: bytes) -> Ahead:
    a = Ahead()
    for one in lines:
        a.add(one)
    return a


@pytest.mark.parametrize("records", [
    [line("run", phase="start")],  # killed right after the start's record was written
    [line("run", phase="start"), line("engine_state", state="PAUSED"), line("reconcile", status="ok")],
    [line("decision"), line("order"), line("fill")],
    [line("decision"), line("run", phase="stop")],  # killed while its stop record was committed
    [line("run", phase="stop")],
    [line("order", status="canceled"), line("run", phase="start")],  # an order the start recovered, then its record
], ids=["start", "start-and-its-first-records", "a-bar", "its-last-records-and-stop", "stop", "recovered-then-start"])
def test_a_kill_s_last_moment_is_not_lost_records(records):
    assert not ahead(*records).lost


@pytest.mark.parametrize("records", [
    [line("run", phase="start"), line("decision"), line("run", phase="stop")],  # a whole run
    [line("decision"), line("run", phase="stop"), line("run", phase="start")],  # a run ended, another began
    [line("run", phase="stop"), line("decision")],
    [line("decision"), line("run", phase="start")],  # an earlier run's bar
    [line("run", phase="start"), line("engine_state", state="RUNNING"), line("decision")],  # the start, then a bar
    [line("decision"), line("fill", ts="2026-12-05T11:40:00.000Z")],  # over a minute
], ids=["whole-run", "stop-then-start", "after-a-stop", "a-bar-then-a-start", "a-start-then-a-bar", "over-a-minute"])
def test_records_of_a_run_boundary_a_whole_run_or_over_a_minute_are_lost(records):
    assert ahead(*records).lost
