"""An approval ends exactly once, and its final status never changes.

An approve takes as long as the exchange takes to answer its order (seconds on a slow venue). Meanwhile the engine's
housekeeping expires approvals, a halt rejects them and the operator may reject one: none of them may end an
approval whose approve is under way. Once its order is journaled the approval is approved (its time to live was
checked before the order), and a halt meanwhile deals with that order, not with the approval. The store refuses to
write over a final status whoever asks, and `ffe doctor` names records in which one was.
Real engines, real SQLite files, the paper venue behind an exchange that holds create_order on the wire.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest

from ffe_engine import doctor
from ffe_engine.clock import ManualClock
from ffe_engine.engine import ControlError
from ffe_engine.events import ApprovalEvent
from ffe_engine.market.simulated import SimulatedFeed
from ffe_engine.model import EngineState

from conftest import run_ffe
from pipeline_helpers import BUY, START_TS, FlakyVenue, make_settings, open_pipeline, paper_venue, pipelines

_ = pipelines  # a fixture

BTC = "BTC/USDT"


class SlowVenue(FlakyVenue):
    """While `hold`, create_order stays on the wire (`on_wire` set) until the test sets `release`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold = False
        self.on_wire = asyncio.Event()
        self.release = asyncio.Event()

    async def create_order(self, req):
        if self.hold:
            self.on_wire.set()
            await self.release.wait()
        return await super().create_order(req)


def manual(tmp_path, **engine):
    return make_settings(tmp_path, engine={"approval": "manual", "approval_ttl_s": 120.0, **engine})


def approval_story(db_path, approval_id: str) -> list[tuple[str, str]]:
    """(outcome, by) of the approval's events, in seq order, as committed."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT data FROM events WHERE event = 'approval' ORDER BY seq").fetchall()
    return [(e["outcome"], e["by"]) for e in map(lambda r: json.loads(r[0]), rows) if e["approval_id"] == approval_id]


def approval_row(db_path, approval_id: str) -> tuple:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT status, by, client_order_id FROM approvals WHERE approval_id = ?",
                          (approval_id,)).fetchone()


async def on_the_wire(p, approval_id: str, by: str = "operator") -> asyncio.Task:
    """An approve of the approval, under way: its order's create_order held on the wire."""
    p.venue.hold = True
    approving = asyncio.create_task(p.engine.approve(approval_id, by=by))
    await asyncio.wait_for(p.venue.on_wire.wait(), timeout=10)
    return approving


async def test_an_approval_approved_in_its_last_second_ends_approved_once_though_its_time_runs_out_on_the_wire(
        tmp_path):
    # The reported case: a running engine (its housekeeping expires approvals every 50 ms), approved with one
    # second of the 120 s left, the exchange answering the order two seconds later.
    s = manual(tmp_path, order_poll_s=0.05)
    clock = ManualClock(paced=True)
    feed = SimulatedFeed(list(s.engine.symbols), s.engine.timeframe_ms, seed=7, clock=clock, speed=20.0,
                         start_ts=START_TS, max_bars=2000)
    p = await open_pipeline(s, script={BTC: (BUY, 0.8)}, feed=feed, clock=clock, venue=paper_venue(s, SlowVenue))
    run = asyncio.create_task(p.engine.run())
    try:
        deadline = time.monotonic() + 20
        while not p.engine.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        [aid] = p.engine.pending
        clock.forward(119.0)
        approving = await on_the_wire(p, aid)
        clock.forward(2.0)  # its time to live runs out while the order is on the wire
        await asyncio.sleep(0.5)  # housekeeping rounds meanwhile
        p.venue.release.set()
        res = await asyncio.wait_for(approving, timeout=10)
        assert res["accepted"], res
        await asyncio.sleep(0.3)  # and after
    finally:
        p.engine.request_stop()
        await asyncio.wait_for(run, timeout=20)
        await p.close()
    assert approval_story(s.db_path, aid) == [("pending", "engine"), ("approved", "operator")]
    assert approval_row(s.db_path, aid) == ("approved", "operator", res["client_order_id"])


@pytest.mark.parametrize("how", ["halt", "flatten"])
async def test_a_halt_pressed_while_an_approve_s_order_is_on_the_wire_leaves_the_approval_approved_once(
        tmp_path, pipelines, how):
    # The approval's order is journaled: the approval is approved, and the halt deals with that order (a kill switch:
    # HALTED at the press, its cancels sent then); the approval is not rejected after, nor before, its approve.
    s = manual(tmp_path)
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=paper_venue(s, SlowVenue), clock=ManualClock())
    await p.bars(1)
    [aid] = p.engine.pending
    approving = await on_the_wire(p, aid)
    halting = asyncio.create_task(p.engine.halt(by="dave") if how == "halt" else p.engine.flatten(by="dave"))
    await asyncio.sleep(0.2)
    if how == "halt":
        assert p.engine.state is EngineState.HALTED  # at the press (a flatten waits for the approve to end)
    p.venue.release.set()
    res = await asyncio.wait_for(approving, timeout=10)
    await asyncio.wait_for(halting, timeout=10)
    assert res["client_order_id"], res
    await p.engine.flush()
    assert approval_story(s.db_path, aid) == [("pending", "engine"), ("approved", "operator")]
    assert approval_row(s.db_path, aid) == ("approved", "operator", res["client_order_id"])
    assert p.engine.pending == {} and p.engine.state is EngineState.HALTED
    assert await p.rows("SELECT status FROM orders WHERE client_order_id = ?", (res["client_order_id"],)) == [
        ("canceled",)]  # the halt's cancels took the approved order


@pytest.mark.parametrize("how", ["expire", "reject_all", "reject"])
async def test_nothing_ends_an_approval_whose_approve_is_under_way(tmp_path, pipelines, how):
    # The approval desk's own rule, whoever calls it (the engine's housekeeping calls expire without the controls):
    # expire passes over an approval being approved, a halt's reject_all and a reject wait for its approve's end.
    s = manual(tmp_path)
    clock = ManualClock()
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=paper_venue(s, SlowVenue), clock=clock)
    await p.bars(1)
    [aid] = p.engine.pending
    desk = p.engine.approvals
    approving = await on_the_wire(p, aid)
    if how == "expire":
        clock.forward(121.0)
        ending = asyncio.create_task(desk.expire())
    elif how == "reject_all":
        ending = asyncio.create_task(desk.reject_all("dave", "halted by dave (kill switch)"))
    else:
        ending = asyncio.create_task(desk.reject(aid, by="bob"))
    await asyncio.sleep(0.2)
    p.venue.release.set()
    res = await asyncio.wait_for(approving, timeout=10)
    assert res["accepted"], res
    if how == "reject":
        with pytest.raises(ControlError, match=f"approval {aid} .*approved"):
            await asyncio.wait_for(ending, timeout=10)
    else:
        ended = await asyncio.wait_for(ending, timeout=10)
        assert aid not in (ended or [])
    await p.engine.flush()
    assert approval_story(s.db_path, aid) == [("pending", "engine"), ("approved", "operator")]
    assert approval_row(s.db_path, aid) == ("approved", "operator", res["client_order_id"])


async def test_the_store_never_writes_over_an_approval_s_final_status(tmp_path, pipelines):
    s = manual(tmp_path)
    clock = ManualClock()
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, clock=clock)
    await p.bars(1)
    [row] = await p.store.approvals("pending")
    clock.forward(120.0)
    await p.engine.approvals.expire()
    published: list[str] = []
    for status in ("approved", "rejected", "expired", "pending"):
        with pytest.raises(ControlError, match=f"approval {row['approval_id']} ended expired"):
            await p.store.save_approval(dict(row, status=status, by="x", client_order_id="ffe-x"),
                                        publish=lambda: published.append("said"))
    assert published == []  # refused before its event was published: nothing says it either
    await p.engine.flush()
    assert approval_story(s.db_path, row["approval_id"]) == [("pending", "engine"), ("expired", "ttl")]
    assert approval_row(s.db_path, row["approval_id"]) == ("expired", "ttl", None)


async def test_doctor_names_an_approval_whose_events_end_it_twice(tmp_path, pipelines):
    # What the race left before: expired by the time to live, then approved, its row saying approved as its last
    # event does.
    s = manual(tmp_path)
    clock = ManualClock()
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, clock=clock)
    await p.bars(1)
    [row] = await p.store.approvals("pending")
    aid = row["approval_id"]
    clock.forward(120.0)
    await p.engine.approvals.expire()
    p.engine.bus.publish(ApprovalEvent(approval_id=aid, decision_id=row["decision_id"], outcome="approved",
                                       by="operator", symbol=BTC, side="buy", quantity=row["quantity"],
                                       price=row["price"], client_order_id="ffe-late"))
    await p.close()
    with sqlite3.connect(s.db_path) as db:
        db.execute("UPDATE approvals SET status = 'approved', by = 'operator', client_order_id = 'ffe-late' "
                   "WHERE approval_id = ?", (aid,))
    with pytest.raises(doctor.Violation, match=f"approval {aid} ended expired .*then approved"):
        doctor.check(s)
    proc = run_ffe(tmp_path, "doctor", "--data-dir", "data", "--log-dir", "logs")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("ffe: error: ") and f"approval {aid} ended expired" in line, line
