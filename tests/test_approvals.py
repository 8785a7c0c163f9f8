"""Manual approval, engine side, on a real engine.

With engine.approval = "manual" a decision that passes every gate becomes a pending approval instead of an order.
Approve re-runs the gates against the state at that moment and then uses the single order path; reject and expiry
are recorded with who or what ended them; an expired approval is never executed; pending approvals survive a
restart (still pending, or expired by then); the mode can be switched while running and the switch persists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time

import pytest

from ffe_engine.clock import ManualClock, SimClock
from ffe_engine.engine import ControlError
from ffe_engine.market.simulated import SimulatedFeed
from ffe_engine.model import EngineState
from ffe_engine.store import keep_state, mark_restored

from pipeline_helpers import (BUY, GATE_ORDER, MIN, START_TS, FlakyVenue, crash_paths, make_settings, open_pipeline,
                              paper_venue, pipelines, replay_feed, simulated_feed, wave)

_ = pipelines  # a fixture

BTC, ETH = "BTC/USDT", "ETH/USDT"


def manual(tmp_path, ttl: float = 300.0, **kw):
    engine = {"approval": "manual", "approval_ttl_s": ttl, **kw.pop("engine", {})}
    return make_settings(tmp_path, engine=engine, **kw)


async def approvals(p, status: str | None = None) -> list[dict]:
    await p.engine.flush()
    return await p.store.approvals(status)


async def approval_events(p, approval_id: str) -> list[dict]:
    return [e for e in await p.events("approval") if e["approval_id"] == approval_id]


async def orders_of(p, decision_id: str) -> list[tuple]:
    return await p.rows("SELECT client_order_id, side, reason, status FROM orders WHERE decision_id = ?",
                        (decision_id,))


async def recheck_gates(p, decision_id: str) -> list[dict]:
    """Gate results recorded under the decision after its own (the approval's re-check)."""
    rows = await p.rows("SELECT code, value, limit_value, passed, ts FROM gate_results WHERE decision_id = ? "
                        "ORDER BY rowid", (decision_id,))
    d = (await p.decisions("WHERE decision_id = ?", (decision_id,)))[0]
    later = [r for r in rows if r[4] != d["ts"] / 1000]
    return [{"code": r[0], "value": r[1], "limit": r[2], "passed": bool(r[3])} for r in later]


async def test_a_passing_decision_waits_for_approval_then_goes_through_the_single_order_path(tmp_path, pipelines):
    # sized by risk well under the POSITION_SIZE cap, so the price moving while it waits does not matter
    s = manual(tmp_path, risk={"max_position_pct": 20, "risk_per_trade_pct": 0.02})
    venue = paper_venue(s, FlakyVenue)
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=venue)
    await p.bars(1)
    d = (await p.decisions("WHERE symbol = ?", (BTC,)))[-1]
    assert d["outcome"] == "pending_approval" and d["approval_id"]
    assert venue.calls == 0 and await p.rows("SELECT count(*) FROM orders") == [(0,)]

    [a] = await approvals(p)
    assert a["approval_id"] == d["approval_id"] and a["decision_id"] == d["decision_id"]
    assert (a["symbol"], a["side"], a["status"]) == (BTC, "buy", "pending")
    assert a["quantity"] == pytest.approx(d["quantity"]) and a["quantity"] > 0
    assert a["price"] == pytest.approx(d["price"])
    assert a["expires_ts"] - a["created_ts"] == pytest.approx(300.0)
    assert [g["code"] for g in a["gates"]] == GATE_ORDER and all(g["passed"] for g in a["gates"])
    [ev] = await approval_events(p, a["approval_id"])
    assert (ev["outcome"], ev["by"], ev["decision_id"]) == ("pending", "engine", d["decision_id"])
    assert [x["approval_id"] for x in p.engine.snapshot()["approvals"]] == [a["approval_id"]]

    # while it waits, the same signal does not pile up more approvals
    await p.bars(2)
    assert [r["outcome"] for r in await p.decisions("WHERE symbol = ?", (BTC,))][1:] == ["awaiting_approval"] * 2
    assert len(await approvals(p)) == 1

    res = await p.engine.approve(a["approval_id"], by="alice")
    assert res["accepted"] and res["client_order_id"], res
    [a] = await approvals(p)
    assert (a["status"], a["by"], a["client_order_id"]) == ("approved", "alice", res["client_order_id"])
    assert [e["outcome"] for e in await approval_events(p, a["approval_id"])] == ["pending", "approved"]
    assert (await approval_events(p, a["approval_id"]))[-1]["by"] == "alice"
    # the re-check ran every gate again and was recorded under the decision
    gates = await recheck_gates(p, d["decision_id"])
    assert [g["code"] for g in gates] == GATE_ORDER and all(g["passed"] for g in gates)
    # through the single path: journaled under the decision, then sent to the venue
    assert await orders_of(p, d["decision_id"]) == [(res["client_order_id"], "buy", "signal", "open")]
    assert venue.sent == [res["client_order_id"]]
    await p.bars(1)
    pos = p.engine.portfolio.positions[BTC]
    assert pos.entry_decision_id == d["decision_id"]
    assert pos.quantity == pytest.approx(res["quantity"])  # sized again at the price when approved


async def test_a_rejected_approval_is_recorded_with_who_and_never_sent(tmp_path, pipelines):
    p = await pipelines(manual(tmp_path), script={BTC: (BUY, 0.8)})
    await p.bars(1)
    [a] = await approvals(p, "pending")
    res = await p.engine.reject(a["approval_id"], by="bob")
    assert res["outcome"] == "rejected"
    [a] = await approvals(p)
    assert (a["status"], a["by"]) == ("rejected", "bob") and a["ended_ts"] is not None
    assert [(e["outcome"], e["by"]) for e in await approval_events(p, a["approval_id"])] == [
        ("pending", "engine"), ("rejected", "bob")]
    assert await orders_of(p, a["decision_id"]) == []
    with pytest.raises(ControlError):
        await p.engine.approve(a["approval_id"])  # it is over: approving it now does nothing
    assert await p.rows("SELECT count(*) FROM orders") == [(0,)]
    await p.bars(1)  # the signal is still there: a new approval, not the old one revived
    pending = await approvals(p, "pending")
    assert len(pending) == 1 and pending[0]["approval_id"] != a["approval_id"]


async def test_an_approval_approved_after_it_expired_is_never_executed(tmp_path, pipelines):
    clock = ManualClock()
    p = await pipelines(manual(tmp_path, ttl=120.0), script={BTC: (BUY, 0.8)}, clock=clock)
    await p.bars(1)
    [a] = await approvals(p, "pending")
    clock.forward(120.0)
    with pytest.raises(ControlError, match="expired"):
        await p.engine.approve(a["approval_id"])
    [a] = await approvals(p)
    assert (a["status"], a["by"]) == ("expired", "ttl")
    assert [(e["outcome"], e["by"]) for e in await approval_events(p, a["approval_id"])] == [
        ("pending", "engine"), ("expired", "ttl")]
    assert await orders_of(p, a["decision_id"]) == []
    assert await p.rows("SELECT count(*) FROM orders") == [(0,)]


async def test_an_approval_acted_on_after_it_ended_is_told_how_it_ended(tmp_path, pipelines):
    """The operator who answers an APPROVAL alert after the housekeeping expired it (or after someone else answered
    it) is told how it ended, when and by whom, not only that none is pending; an id never seen is told as such."""
    clock = ManualClock()
    p = await pipelines(manual(tmp_path, ttl=120.0), script={BTC: (BUY, 0.8), ETH: (BUY, 0.8)}, clock=clock)
    await p.bars(1)
    answered, late = await approvals(p, "pending")
    await p.engine.reject(answered["approval_id"], by="ctl")
    clock.forward(120.0)
    await p.engine.approvals.expire()
    when = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    with pytest.raises(ControlError, match=rf"^no pending approval {late['approval_id']}: it expired \(by ttl\) at "
                                           rf"{when}$"):
        await p.engine.approve(late["approval_id"])
    with pytest.raises(ControlError, match=rf"^no pending approval {answered['approval_id']}: it was rejected \(by "
                                           rf"ctl\) at {when}$"):
        await p.engine.reject(answered["approval_id"], by="operator")
    with pytest.raises(ControlError, match=r"^no pending approval nosuch$"):
        await p.engine.approve("nosuch")
    # Nothing written by the answers refused.
    ended = {a["approval_id"]: (a["status"], a["by"]) for a in await approvals(p)}
    assert ended == {answered["approval_id"]: ("rejected", "ctl"), late["approval_id"]: ("expired", "ttl")}
    assert [e["outcome"] for e in await approval_events(p, late["approval_id"])] == ["pending", "expired"]
    assert await p.rows("SELECT count(*) FROM orders") == [(0,)]


async def test_an_approval_s_time_to_live_is_not_stretched_or_cut_by_the_system_clock_being_set(tmp_path, pipelines):
    # The system clock set back an hour (or forward a day) while an approval waits: its time to live is elapsed time,
    # so it neither waits an hour more (its pending entry holding a place among the open positions meanwhile) nor
    # expires at once.
    clock = ManualClock()
    p = await pipelines(manual(tmp_path, ttl=120.0), script={BTC: (BUY, 0.8), ETH: (BUY, 0.8)}, clock=clock)
    await p.bars(1)
    back, ahead = await approvals(p, "pending")
    clock.step_wall(-3600.0)
    assert [round(a["expires_in"]) for a in p.engine.approvals.summary()] == [120, 120]
    clock.forward(60.0)
    clock.step_wall(2 * 86_400.0)
    await p.engine.approvals.expire()
    assert [round(a["expires_in"]) for a in p.engine.approvals.summary()] == [60, 60]
    assert (await p.engine.approve(ahead["approval_id"]))["accepted"]
    clock.forward(60.0)
    await p.engine.approvals.expire()
    [a] = [a for a in await approvals(p) if a["approval_id"] == back["approval_id"]]
    assert (a["status"], a["by"]) == ("expired", "ttl")


async def test_a_running_engine_expires_an_unanswered_approval_by_itself(tmp_path):
    s = manual(tmp_path, ttl=120.0, engine={"order_poll_s": 0.05})
    clock = ManualClock(paced=True)
    feed = SimulatedFeed(list(s.engine.symbols), s.engine.timeframe_ms, seed=7, clock=clock, speed=20.0,
                         start_ts=START_TS, max_bars=2000)
    p = await open_pipeline(s, script={BTC: (BUY, 0.8)}, feed=feed, clock=clock)
    run = asyncio.create_task(p.engine.run())
    try:
        deadline = time.monotonic() + 20
        while not p.engine.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert p.engine.pending, "no approval was proposed"
        clock.forward(120.0)  # its time to live has run out; the engine's own housekeeping expires it
        expired: list = []
        while not expired and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            expired = [a for a in await approvals(p) if a["status"] == "expired"]
        assert expired, "the pending approval never expired"
        a = expired[0]
        assert a["by"] == "ttl"
        assert a["ended_ts"] >= a["expires_ts"]
        assert await orders_of(p, a["decision_id"]) == []
    finally:
        p.engine.request_stop()
        await asyncio.wait_for(run, timeout=20)
        await p.close()
    with sqlite3.connect(s.db_path) as db:  # nothing was ever sent for an approval nobody approved
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 0


async def test_approving_after_the_engine_was_paused_is_refused_by_the_re_check(tmp_path, pipelines):
    s = manual(tmp_path)
    venue = paper_venue(s, FlakyVenue)
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=venue)
    await p.bars(1)
    [a] = await approvals(p, "pending")
    await p.engine.pause()
    res = await p.engine.approve(a["approval_id"])
    assert not res["accepted"] and res["reason"] == "ENGINE_STATE: value=PAUSED limit=RUNNING"
    [a] = await approvals(p)
    assert (a["status"], a["by"]) == ("rejected", "re-check (operator)")
    ev = (await approval_events(p, a["approval_id"]))[-1]
    assert (ev["outcome"], ev["reason"]) == ("rejected", "ENGINE_STATE: value=PAUSED limit=RUNNING")
    gates = await recheck_gates(p, a["decision_id"])
    assert [g["code"] for g in gates] == GATE_ORDER
    assert [(g["code"], g["value"]) for g in gates if not g["passed"]] == [("ENGINE_STATE", "PAUSED")]
    assert venue.calls == 0 and await orders_of(p, a["decision_id"]) == []


async def test_approving_after_the_positions_filled_up_is_refused_by_the_re_check(tmp_path, pipelines):
    p = await pipelines(manual(tmp_path, risk={"max_open_positions": 1}), script={BTC: (BUY, 0.8), ETH: (BUY, 0.8)})
    await p.bars(1)
    pending = {a["symbol"]: a for a in await approvals(p, "pending")}
    assert set(pending) == {BTC, ETH}  # each passed its gates on its own
    assert (await p.engine.approve(pending[ETH]["approval_id"]))["accepted"]
    res = await p.engine.approve(pending[BTC]["approval_id"])
    assert not res["accepted"] and res["reason"] == "MAX_OPEN_POSITIONS: value=2 limit=1"
    btc = next(a for a in await approvals(p) if a["symbol"] == BTC)
    assert (btc["status"], btc["by"]) == ("rejected", "re-check (operator)")
    g = {x["code"]: x for x in await recheck_gates(p, btc["decision_id"])}
    assert (g["MAX_OPEN_POSITIONS"]["passed"], float(g["MAX_OPEN_POSITIONS"]["value"])) == (False, 2.0)
    await p.bars(1)
    assert list(p.engine.portfolio.positions) == [ETH]
    assert await orders_of(p, btc["decision_id"]) == []


async def test_approving_after_a_drawdown_breach_is_refused_by_the_re_check(tmp_path, pipelines):
    paths = crash_paths()
    script: dict = {}
    s = manual(tmp_path, risk={"max_position_pct": 50, "max_drawdown_pct": 5, "take_profit_atr": 100})
    clock = SimClock()
    p = await pipelines(s, script=script, feed=replay_feed(tmp_path, paths, clock), clock=clock)
    await p.bars(60)
    script[BTC] = (BUY, 0.8)
    await p.bars(1)
    del script[BTC]
    [btc] = await approvals(p, "pending")
    assert (await p.engine.approve(btc["approval_id"]))["accepted"]
    await p.bars(5)
    script[ETH] = (BUY, 0.8)
    await p.bars(1)  # bar 66: ETH proposed while the account is at its best
    del script[ETH]
    [eth] = await approvals(p, "pending")
    assert eth["symbol"] == ETH and all(g["passed"] for g in eth["gates"])
    await p.bars(10)  # the crash at bar 76 breaches the drawdown limit and pauses the engine
    assert p.engine.state is EngineState.PAUSED
    await p.engine.resume()
    res = await p.engine.approve(eth["approval_id"])
    assert not res["accepted"]
    [eth] = [a for a in await approvals(p) if a["approval_id"] == eth["approval_id"]]
    assert (eth["status"], eth["by"]) == ("rejected", "re-check (operator)")
    gates = await recheck_gates(p, eth["decision_id"])
    failed = [g for g in gates if not g["passed"]]
    assert res["reason"].startswith(failed[0]["code"] + ":")
    # the account is now worse than when ETH was proposed: the drawdown (and the size it was given, now a bigger
    # share of a smaller equity) fail
    g = {x["code"]: x for x in gates}
    assert g["DRAWDOWN"]["passed"] is False and float(g["DRAWDOWN"]["value"]) > 5
    assert await orders_of(p, eth["decision_id"]) == []


async def test_a_pending_approval_survives_a_restart_and_can_be_approved_there(tmp_path):
    s = manual(tmp_path)
    p = await open_pipeline(s, script={BTC: (BUY, 0.8)})
    await p.bars(1)
    [a] = await approvals(p, "pending")
    await p.close()

    clock = SimClock()
    feed = simulated_feed(s, clock, start_ts=START_TS + 10 * MIN)
    p = await open_pipeline(s, script={BTC: (BUY, 0.8)}, feed=feed, clock=clock)
    try:
        assert list(p.engine.pending) == [a["approval_id"]]
        assert [x["approval_id"] for x in p.engine.snapshot()["approvals"]] == [a["approval_id"]]
        assert await p.rows("SELECT count(*) FROM orders") == [(0,)]  # not executed by the restart
        await p.bars(1)
        assert (await p.decisions("WHERE symbol = ?", (BTC,)))[-1]["outcome"] == "awaiting_approval"
        res = await p.engine.approve(a["approval_id"], by="carol")
        assert res["accepted"]
        await p.bars(1)
        assert p.engine.portfolio.positions[BTC].entry_decision_id == a["decision_id"]
        [a] = await approvals(p)
        assert (a["status"], a["by"]) == ("approved", "carol")
    finally:
        await p.close()


async def test_a_pending_approval_whose_time_ran_out_during_a_restart_is_expired_not_executed(tmp_path):
    s = manual(tmp_path, ttl=120.0)
    first = ManualClock()
    p = await open_pipeline(s, script={BTC: (BUY, 0.8)}, clock=first)
    await p.bars(1)
    [a] = await approvals(p, "pending")
    await p.close()

    clock = ManualClock(wall=first.wall() + 121.0)  # restarted two minutes later
    p = await open_pipeline(s, script={}, feed=simulated_feed(s, clock, start_ts=START_TS + 10 * MIN), clock=clock)
    try:
        assert p.engine.pending == {}
        [a] = await approvals(p)
        assert (a["status"], a["by"]) == ("expired", "ttl")
        assert [e["outcome"] for e in await approval_events(p, a["approval_id"])] == ["pending", "expired"]
        with pytest.raises(ControlError):
            await p.engine.approve(a["approval_id"])
        await p.bars(2)
        assert await p.rows("SELECT count(*) FROM orders") == [(0,)]
    finally:
        await p.close()


async def test_an_approval_expired_at_a_restart_with_a_longer_time_to_live_says_its_own(tmp_path):
    """Offered for 120 s, the engine restarted after it with approval_ttl_s 600: its end says the 120 s it had, not
    the configuration's 600 (a longer time to live does not lengthen an approval offered before)."""
    first = ManualClock()
    p = await open_pipeline(manual(tmp_path, ttl=120.0), script={BTC: (BUY, 0.8)}, clock=first)
    await p.bars(1)
    [a] = await approvals(p, "pending")
    await p.close()

    s = manual(tmp_path, ttl=600.0)
    clock = ManualClock(wall=first.wall() + 121.0)
    p = await open_pipeline(s, script={}, feed=simulated_feed(s, clock, start_ts=START_TS + 10 * MIN), clock=clock)
    try:
        ended = (await approval_events(p, a["approval_id"]))[-1]
        assert (ended["outcome"], ended["reason"]) == ("expired", "not approved within 120s"), ended
    finally:
        await p.close()


async def test_approval_mode_switches_while_running_and_the_switch_persists(tmp_path):
    s = make_settings(tmp_path)  # approval = "auto" in the configuration
    script = {BTC: (BUY, 0.8)}
    p = await open_pipeline(s, script=script)
    try:
        await p.bars(1)
        assert (await p.decisions("WHERE symbol = ?", (BTC,)))[-1]["outcome"] == "submitted"
        assert await p.engine.set_approval_mode("manual", by="erin") == "manual"
        script[ETH] = (BUY, 0.8)
        await p.bars(1)
        assert (await p.decisions("WHERE symbol = ?", (ETH,)))[-1]["outcome"] == "pending_approval"
        assert [(e["reason"], e["by"]) for e in await p.events("engine_state")][-1] == ("approval mode manual",
                                                                                         "erin")
        with pytest.raises(ControlError):
            await p.engine.set_approval_mode("sometimes")
        assert p.engine.approval_mode == "manual"
        # The mode it has already: nothing changes, nothing is recorded (as a second pause records nothing).
        before = await p.events("engine_state")
        assert await p.engine.set_approval_mode("manual", by="frank") == "manual"
        assert await p.events("engine_state") == before
    finally:
        await p.close()

    async def restart(minutes: int):
        clock = SimClock()
        return await open_pipeline(s, script={ETH: (BUY, 0.8)}, clock=clock,
                                   feed=simulated_feed(s, clock, start_ts=START_TS + minutes * MIN))

    p = await restart(10)
    try:
        assert p.engine.approval_mode == "manual"  # the operator's switch outlives the configuration
        [a] = await approvals(p, "pending")
        await p.engine.reject(a["approval_id"], by="erin")
        await p.bars(1)
        assert (await p.decisions("WHERE symbol = ?", (ETH,)))[-1]["outcome"] == "pending_approval"
        [a] = await approvals(p, "pending")
        await p.engine.reject(a["approval_id"], by="erin")
        await p.engine.set_approval_mode("auto")
        await p.bars(1)
        assert (await p.decisions("WHERE symbol = ?", (ETH,)))[-1]["outcome"] == "submitted"
    finally:
        await p.close()

    p = await restart(20)
    try:
        assert p.engine.approval_mode == "auto"
    finally:
        await p.close()


# ---------------------------------------------------------------- the price moves while an approval waits

def waiting_paths(after: list[float]) -> dict[str, list[float]]:
    """BTC/USDT: a quiet range for 60 bars ending at 60,000 (where the approval is proposed), then `after`.
    ETH/USDT: a quiet range throughout."""
    btc = wave(60, base=60_000.0, amp=0.002) + [60_000.0] + after
    return {BTC: btc, ETH: wave(len(btc), base=3_000.0, amp=0.002)}


async def propose_at_60k(tmp_path, pipelines, after: list[float], **risk):
    script: dict = {}
    clock = SimClock()
    s = manual(tmp_path, risk=risk)
    p = await pipelines(s, script=script, feed=replay_feed(tmp_path, waiting_paths(after), clock), clock=clock)
    await p.bars(60)
    script[BTC] = (BUY, 0.8)
    await p.bars(1)
    del script[BTC]
    [a] = await approvals(p, "pending")
    assert a["price"] == pytest.approx(60_000.0)
    return p, a


async def test_approving_after_the_price_rose_past_the_take_profit_is_refused_with_the_reason(tmp_path, pipelines):
    p, a = await propose_at_60k(tmp_path, pipelines, [61_500.0] * 5)
    tp = a["intent"]["take_profit"]
    assert 60_000 < tp < 61_500
    await p.bars(1)  # the price is now above the take-profit the trade was proposed with
    res = await p.engine.approve(a["approval_id"], by="alice")
    assert not res["accepted"]
    assert res["reason"].startswith("PRICE_MOVED: price moved past the take-profit: now 61,500.0, take-profit ")
    assert res["reason"].endswith("(proposed at 60,000.0)"), res["reason"]
    [a] = await approvals(p)
    assert (a["status"], a["by"]) == ("rejected", "re-check (alice)")
    assert (await approval_events(p, a["approval_id"]))[-1]["reason"] == res["reason"]
    assert await orders_of(p, a["decision_id"]) == []
    await p.bars(2)
    assert p.engine.portfolio.positions == {}


async def test_approving_after_the_price_fell_past_the_stop_loss_is_refused_with_the_reason(tmp_path, pipelines):
    p, a = await propose_at_60k(tmp_path, pipelines, [58_000.0] * 5)
    assert a["intent"]["stop_loss"] > 58_000
    await p.bars(1)
    res = await p.engine.approve(a["approval_id"])
    assert not res["accepted"] and res["reason"].startswith("PRICE_MOVED: price moved past the stop-loss"), res
    assert await orders_of(p, a["decision_id"]) == []


async def test_an_approval_is_sized_with_its_stops_from_the_price_when_approved(tmp_path, pipelines):
    p, a = await propose_at_60k(tmp_path, pipelines, [60_300.0] * 5)
    proposed = a["intent"]
    await p.bars(1)  # +0.5%, still inside the stops it was proposed with
    atr = p.engine.ind[BTC].atr
    res = await p.engine.approve(a["approval_id"])
    assert res["accepted"], res
    [intent] = [json.loads(r[0]) for r in await p.rows("SELECT intent FROM orders WHERE client_order_id = ?",
                                                        (res["client_order_id"],))]
    r = p.settings.risk
    assert intent["ref_price"] == pytest.approx(60_300.0)
    assert intent["stop_loss"] == pytest.approx(60_300.0 - r.stop_loss_atr * atr)
    assert intent["take_profit"] == pytest.approx(60_300.0 + r.take_profit_atr * atr)
    assert intent["take_profit"] > proposed["take_profit"] and intent["stop_loss"] > proposed["stop_loss"]
    assert (res["price"], res["stop_loss"], res["take_profit"]) == (
        intent["ref_price"], intent["stop_loss"], intent["take_profit"])
    await p.bars(2)
    pos = p.engine.portfolio.positions[BTC]
    assert pos.take_profit > pos.entry_price > pos.stop_loss  # not closed at once as a "take-profit" at a loss
    assert pos.take_profit == pytest.approx(intent["take_profit"])
    assert await p.rows("SELECT count(*) FROM trades") == [(0,)]


async def test_an_approval_sized_at_the_position_size_cap_passes_its_re_check_after_an_uptick(tmp_path, pipelines):
    # sized by the POSITION_SIZE cap (a large risk per trade), and stops far enough that a 2% rise is inside them
    p, a = await propose_at_60k(tmp_path, pipelines, [61_200.0] * 5, risk_per_trade_pct=50, take_profit_atr=100)
    d = (await p.decisions("WHERE decision_id = ?", (a["decision_id"],)))[0]
    assert d["event"]["sizing"]["capped_by"] == "position_size"
    await p.bars(1)  # +2%: the quantity proposed would now be more than the cap
    assert a["quantity"] * 61_200.0 / p.engine.portfolio.equity() * 100 > p.settings.risk.max_position_pct
    res = await p.engine.approve(a["approval_id"])
    assert res["accepted"], res
    g = {x["code"]: x for x in await recheck_gates(p, a["decision_id"])}
    assert g["POSITION_SIZE"]["passed"] and float(g["POSITION_SIZE"]["value"]) <= p.settings.risk.max_position_pct
    assert res["quantity"] < a["quantity"]


async def test_the_approved_event_says_the_quantity_sized_again_and_the_price_it_was_checked_at(tmp_path, pipelines):
    p, a = await propose_at_60k(tmp_path, pipelines, [61_200.0] * 5, risk_per_trade_pct=50, take_profit_atr=100)
    await p.bars(1)  # +2%: sized again, the quantity is less than the one proposed
    res = await p.engine.approve(a["approval_id"])
    assert res["accepted"], res
    [(qty,)] = await p.rows("SELECT quantity FROM orders WHERE client_order_id = ?", (res["client_order_id"],))
    pending, approved = await approval_events(p, a["approval_id"])
    assert (pending["quantity"], pending["price"]) == (a["quantity"], a["price"])  # what was proposed
    assert approved["outcome"] == "approved" and approved["client_order_id"] == res["client_order_id"]
    assert approved["quantity"] == qty == pytest.approx(res["quantity"]) and qty < a["quantity"]
    assert approved["price"] == res["price"] == pytest.approx(61_200.0)


async def test_the_snapshot_shows_each_approval_with_the_current_price_and_the_move_since_proposed(tmp_path,
                                                                                                  pipelines):
    p, a = await propose_at_60k(tmp_path, pipelines, [60_600.0] * 5)
    [row] = p.engine.snapshot()["approvals"]
    assert (row["price"], row["last"], row["move_pct"]) == (60_000.0, 60_000.0, 0.0)
    await p.bars(1)
    [row] = p.engine.snapshot()["approvals"]
    assert row["last"] == pytest.approx(60_600.0) and row["move_pct"] == pytest.approx(1.0)


# ---------------------------------------------------------------- a halt ends every approval

@pytest.mark.parametrize("how", ["halt", "flatten"])
async def test_a_halt_rejects_every_pending_approval_so_none_is_approved_after_re_arming(tmp_path, pipelines, how):
    p = await pipelines(manual(tmp_path), script={BTC: (BUY, 0.8), ETH: (BUY, 0.8)})
    await p.bars(1)
    pending = await approvals(p, "pending")
    assert len(pending) == 2
    if how == "halt":
        await p.engine.halt(reason="kill switch", by="dave")
    else:
        await p.engine.flatten(by="dave")
    assert p.engine.pending == {} and p.engine.snapshot()["approvals"] == []
    for a in await approvals(p):
        assert (a["status"], a["by"]) == ("rejected", "dave")
        [ev] = [e for e in await approval_events(p, a["approval_id"]) if e["outcome"] == "rejected"]
        assert ev["by"] == "dave" and ev["reason"] == f"halted by dave ({'kill switch' if how == 'halt' else how})"
    await p.engine.resume(confirm=True)
    for a in pending:
        with pytest.raises(ControlError):
            await p.engine.approve(a["approval_id"])
    assert await p.rows("SELECT count(*) FROM orders WHERE reduce_only = 0") == [(0,)]


async def test_why_no_trades_names_the_pending_approvals_that_hold_entries_and_counts_an_approved_entry(tmp_path,
                                                                                                       pipelines):
    """Trades proposed in manual mode stay pending after a switch to auto, and the strategy's new entries in their
    symbols wait for them: "why no trades" must say so (not "nothing blocks entries"), count those decisions, and
    an entry sent by an approval is an entry sent."""
    s = manual(tmp_path, risk={"max_position_pct": 20, "risk_per_trade_pct": 0.02})
    p = await pipelines(s, script={BTC: (BUY, 0.8)})
    await p.bars(1)
    [a] = await approvals(p, "pending")
    await p.engine.set_approval_mode("auto", by="operator")
    await p.bars(2)
    held = await p.decisions("WHERE symbol = ? AND outcome = 'awaiting_approval'", (BTC,))
    assert len(held) == 2
    why = await p.engine.why()
    [blocker] = [b for b in why["blocking"] if b["gate"] == "AWAITING_APPROVAL"]
    assert BTC in blocker["now"] and a["approval_id"] in blocker["now"], blocker
    assert "approve" in blocker["lifts"] and "reject" in blocker["lifts"], blocker
    assert why["refused"]["day"].get("AWAITING_APPROVAL") == 2, why["refused"]
    assert why["last_entry_ts"] is None

    approved = await p.engine.approve(a["approval_id"], by="operator")
    assert approved["accepted"], approved
    [(created_ts,)] = await p.rows("SELECT created_ts FROM orders WHERE decision_id = ?", (a["decision_id"],))
    why = await p.engine.why()
    assert why["last_entry_ts"] == created_ts == p.clock.now_ms()
    assert not [b for b in why["blocking"] if b["gate"] == "AWAITING_APPROVAL"]


async def test_an_engine_starting_halted_rejects_the_approvals_still_pending(tmp_path):
    """A halt rejects every pending approval. A HALTED stored without the engine (ffe restore keeping the kill switch
    of the records it moved aside, the backup having a trade pending; a full disk storing HALTED alone) left them
    pending: the start in HALTED rejects them, recorded, so that a re-arm cannot bring a trade from before the halt
    back to approve."""
    s = manual(tmp_path)
    p = await open_pipeline(s, script={BTC: (BUY, 0.8)})
    await p.bars(1)
    [a] = await approvals(p, "pending")
    await p.close()
    # what ffe restore does: its marker, and the kill switch of the records it moved aside
    mark_restored(s.db_path, {"backup": "ffe-backup-test.tar.zst", "taken_ms": START_TS}, 1.0)
    keep_state(s.db_path, EngineState.HALTED, "ffe ctl halt (by ctl, kept across a restore)", 1.0)

    clock = SimClock()
    p = await open_pipeline(s, script={}, feed=simulated_feed(s, clock, start_ts=START_TS + 10 * MIN), clock=clock)
    try:
        assert p.engine.state == EngineState.HALTED
        assert p.engine.pending == {} and p.engine.snapshot()["approvals"] == []
        [a] = await approvals(p)
        assert a["status"] == "rejected" and a["ended_ts"] is not None, a
        assert [e["outcome"] for e in await approval_events(p, a["approval_id"])] == ["pending", "rejected"]
        await p.engine.resume(by="ctl", confirm=True)
        with pytest.raises(ControlError):
            await p.engine.approve(a["approval_id"])
        assert await orders_of(p, a["decision_id"]) == []
    finally:
        await p.close()


async def test_a_pending_approval_in_a_symbol_no_longer_traded_is_rejected_at_the_start_and_said(tmp_path):
    """ETH/USDT waits for approval; the engine restarts with ETH/USDT out of engine.symbols. Nothing can size or fill
    an entry there any more (no candle of it comes): the start rejects the approval, by the engine, saying why, in its
    record and in the log, instead of offering one whose approve fails."""
    s = manual(tmp_path)
    p = await open_pipeline(s, script={ETH: (BUY, 0.8)})
    await p.bars(1)
    [a] = await approvals(p, "pending")
    assert a["symbol"] == ETH
    await p.close()

    only_btc = manual(tmp_path, symbols=[BTC])
    clock = SimClock()
    p = await open_pipeline(only_btc, script={}, feed=simulated_feed(only_btc, clock, start_ts=START_TS + 10 * MIN),
                            clock=clock)
    try:
        assert p.engine.pending == {}
        [a] = await approvals(p)
        assert (a["status"], a["by"]) == ("rejected", "engine"), a
        [pending, ended] = await approval_events(p, a["approval_id"])
        assert ended["outcome"] == "rejected" and "ETH/USDT" in ended["reason"] and "engine.symbols" in ended["reason"]
        with pytest.raises(ControlError, match="no pending approval"):
            await p.engine.approve(a["approval_id"])
        await p.bars(2)
        assert await p.rows("SELECT count(*) FROM orders") == [(0,)]
    finally:
        await p.close()


async def test_an_approved_order_s_re_check_is_committed_with_its_journal_entry(tmp_path, pipelines):
    """What the database holds the moment the approved order's journal entry is committed (what a kill right after
    it would leave): the re-check's gates under the decision and the order, not only the proposal's."""
    s = manual(tmp_path, risk={"max_position_pct": 20, "risk_per_trade_pct": 0.02})
    p = await pipelines(s, script={BTC: (BUY, 0.8)})
    await p.bars(1)
    [a] = await approvals(p)
    store = p.engine.store
    journal_order = store.journal_order
    held: dict[str, list[tuple]] = {}

    async def journaled_then_read(o, *args, **kwargs):
        await journal_order(o, *args, **kwargs)
        with contextlib.closing(sqlite3.connect(str(s.db_path))) as conn:
            held[o.client_order_id] = conn.execute("SELECT code, passed FROM gate_results WHERE client_order_id = ? "
                                                   "ORDER BY position", (o.client_order_id,)).fetchall()

    store.journal_order = journaled_then_read
    res = await p.engine.approve(a["approval_id"], by="alice")
    assert res["accepted"], res
    assert held[res["client_order_id"]] == [(code, 1) for code in GATE_ORDER]
    gates = await recheck_gates(p, a["decision_id"])  # recorded once, not again after the send
    assert [g["code"] for g in gates] == GATE_ORDER
