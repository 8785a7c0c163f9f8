"""The kill switch and the flatten pressed while an order is on the wire (its create_order not answered yet) with
no control under way: an operator order (`ffe ctl order`, which takes no turn of the controls) or a strategy entry.
Its cancel waits for that answer, so it is said under way, never as a failed cancel ("cancel timed out") of an
order that then fills or opens; the kill_switch event that follows says how it ended (cancelled, or filled before
its cancel), and `ffe ctl halt` exits 0 (nothing failed). Real engines over real SQLite files: against the fake
Binance through ccxt, and the paper venue behind an exchange that holds create_order, with `ffe ctl` as a
subprocess on the real control socket.
"""

from __future__ import annotations

import asyncio

from ffe_engine.clock import ManualClock
from ffe_engine.model import EngineState

from live_helpers import BTC, POST_ORDER, engine_loop, fx, rows, stored_events, wait_for  # noqa: F401
from pipeline_helpers import BUY, make_settings, paper_venue, pipelines
from test_approval_ends_once import SlowVenue, manual, on_the_wire
from test_halt_while_busy import ETH, ctl, kill_events, served, until
from test_live_engine import running_live

_ = pipelines  # a fixture

LOOSE = {"max_position_pct": 100, "max_concentration_pct": 100, "max_leverage": 5, "max_var_pct": 100,
         "max_open_positions": 10, "max_orders_per_minute": 100}
WIRE_S = 1.3  # how long the fake holds create_order: past the kill switch's cancel_timeout_s


async def operator_buy_on_the_wire(e, fx):  # noqa: F811
    """`ffe ctl order BTC/USDT buy 0.001` under way, its POST held at the exchange past cancel_timeout_s."""
    e.orders.cancel_timeout_s = 1.0
    fx.fault(POST_ORDER, "slow", seconds=WIRE_S)
    buy = asyncio.ensure_future(e.operator_order(BTC, "buy", 0.001))
    await wait_for(lambda: any(r.status is None for r in fx.requests_to(POST_ORDER)), timeout=10,
                   what="the buy's POST held at the exchange")
    return buy


async def test_a_halt_while_an_operator_order_is_on_the_wire_says_it_under_way_then_filled(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        buy = await operator_buy_on_the_wire(e, fx)
        # The console's K: its answer within half of its second, the exchange still holding the order.
        report = await e.halt(by="test", timeout_s=1.0)
        bought = await buy
        cid = bought["client_order_id"]
        assert report.failed == [] and report.cancelled == [], report
        assert [u["client_order_id"] for u in report.under_way if u.get("client_order_id")] == [cid], report
        assert e.state is EngineState.HALTED
        async with engine_loop(e):
            await wait_for(lambda: stored_events(db, "kill_switch"), timeout=20, what="the kill switch's report")
        [event] = stored_events(db, "kill_switch")
    assert event["failed"] == [] and event["filled"] == [cid] and event["cancelled"] == [], event
    assert rows(db, "SELECT status, filled FROM orders WHERE client_order_id = ?", (cid,)) == [("filled", 0.001)]
    assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "FILLED")]


async def test_a_halt_answered_after_the_order_came_back_lists_it_filled_not_failed(tmp_path, fx):  # noqa: F811
    # `ffe ctl halt` (its answer within half of its 10 s): the exchange answers the buy within that.
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        buy = await operator_buy_on_the_wire(e, fx)
        report = await e.halt(by="test")
        cid = (await buy)["client_order_id"]
        await e.flush()
        [event] = stored_events(db, "kill_switch")
    assert report.failed == [] and report.filled == [cid] and report.under_way == [], report
    assert event["failed"] == [] and event["filled"] == [cid], event


async def test_a_flatten_while_an_operator_buy_is_on_the_wire_closes_what_it_bought_and_fails_nothing(
        tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        buy = await operator_buy_on_the_wire(e, fx)
        res = await e.flatten(by="test")
        cid = (await buy)["client_order_id"]
        assert res["failed"] == [] and res["filled"] == [cid], res
        assert len(res["closing"]) == 1, res
        async with engine_loop(e):
            await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=20, what="the position closed")
        await e.flush()
        [event] = [k for k in stored_events(db, "kill_switch") if k["action"] == "flatten"]
    assert event["failed"] == [] and event["filled"] == [cid] and event["closing"] == res["closing"], event
    assert e.state is EngineState.HALTED


async def strategy_entry_on_the_wire(p) -> asyncio.Task:
    """A bar whose strategy entry (BTC) is sent, its create_order held on the wire until the test releases it."""
    p.venue.hold = True
    bar = asyncio.ensure_future(p.bars(1))
    await asyncio.wait_for(p.venue.on_wire.wait(), timeout=10)
    return bar


async def test_ffe_ctl_halt_while_a_strategy_entry_is_on_the_wire_exits_0_and_cancels_it_once_answered(
        tmp_path, pipelines):
    s = make_settings(tmp_path, engine={"cancel_timeout_s": 0.5})
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=paper_venue(s, SlowVenue), clock=ManualClock())
    async with served(p):
        bar = await strategy_entry_on_the_wire(p)
        [cid] = list(p.engine.orders.live)
        halt = await ctl(tmp_path, "halt")
        assert halt.returncode == 0, halt.stdout + halt.stderr
        headline = halt.stdout.splitlines()[0]
        assert headline.startswith("KILL SWITCH: HALTED by ctl: cancelled 0 failed 0"), headline
        assert "under way: " in headline and f"{cid}: its order is on the wire" in headline, headline
        assert "control" not in headline, headline  # none was under way
        assert p.engine.state is EngineState.HALTED and not bar.done()

        p.venue.release.set()
        await asyncio.wait_for(bar, timeout=10)
        await until(lambda: kill_events(s.db_path), "the kill switch's report")
    [event] = kill_events(s.db_path)
    assert event["cancelled"] == [cid] and event["failed"] == [], event
    assert await p.rows("SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]


async def test_ffe_ctl_flatten_while_a_strategy_entry_is_on_the_wire_exits_0_and_closes_once_answered(
        tmp_path, pipelines):
    # ETH held; the strategy's BTC entry on the wire when the flatten is pressed.
    s = make_settings(tmp_path, engine={"cancel_timeout_s": 0.5})
    script = {ETH: (BUY, 0.8)}
    p = await pipelines(s, script=script, venue=paper_venue(s, SlowVenue), clock=ManualClock())
    await p.bars(2)
    assert p.engine.portfolio.holding(ETH) is not None
    del script[ETH]
    script[BTC] = (BUY, 0.8)
    async with served(p):
        bar = await strategy_entry_on_the_wire(p)
        [cid] = list(p.engine.orders.live)
        flat = await ctl(tmp_path, "flatten", "--yes")
        assert flat.returncode == 0, flat.stdout + flat.stderr
        headline = flat.stdout.splitlines()[0]
        assert headline.startswith("FLATTEN, then HALTED, by ctl: cancelled 0 failed 0"), headline
        assert f"{cid}: its order is on the wire" in headline, headline

        p.venue.release.set()
        await asyncio.wait_for(bar, timeout=10)
        await until(lambda: any(e["action"] == "flatten" for e in kill_events(s.db_path)), "the flatten's report")
    [event] = [e for e in kill_events(s.db_path) if e["action"] == "flatten"]
    assert event["cancelled"] == [cid] and event["failed"] == [] and event["closing"], event
    await p.bars(2)
    assert p.engine.portfolio.holding(ETH) is None
    assert p.engine.state is EngineState.HALTED


async def test_ffe_ctl_halt_after_a_lookup_found_the_order_on_the_wire_filled_reports_it_filled_once_answered(
        tmp_path, fx):  # noqa: F811
    """The exchange has executed the operator's buy and holds its answer; a lookup finds it filled meanwhile, so it
    is no longer open, its create_order still on the wire. `ffe ctl halt` names it filled, and the kill_switch
    event, recorded once the exchange has answered it, does too."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        await running.start_control()
        # Held until the halt has answered (fx.end_hangs), however long `ffe ctl` takes to start on a busy machine.
        fx.fault(POST_ORDER, "hang", seconds=7.5, execute=True)
        buy = asyncio.ensure_future(e.operator_order(BTC, "buy", 0.001))
        await wait_for(lambda: any(r.status is None for r in fx.requests_to(POST_ORDER)), timeout=10,
                       what="the buy's POST held at the exchange")
        [cid] = e.orders.sending()
        await e.orders.poll()
        assert cid not in e.orders.live, "the lookup did not find it filled: the test did not set it up"
        halt = await ctl(tmp_path, "halt")
        assert halt.returncode == 0, halt.stdout + halt.stderr
        headline = halt.stdout.splitlines()[0]
        assert headline.startswith("KILL SWITCH: HALTED by ctl: cancelled 0 failed 0"), headline
        assert cid in headline, headline
        assert not buy.done(), "the exchange answered the buy before the halt's answer: the test did not hold it"
        assert stored_events(db, "kill_switch") == []  # recorded once the exchange has answered the buy
        fx.end_hangs()
        assert (await buy)["client_order_id"] == cid
        await wait_for(lambda: stored_events(db, "kill_switch"), timeout=20, what="the kill switch's report")
        [event] = stored_events(db, "kill_switch")
    assert event["filled"] == [cid] and event["cancelled"] == [] and event["failed"] == [], event
    assert rows(db, "SELECT status, filled FROM orders WHERE client_order_id = ?", (cid,)) == [("filled", 0.001)]


class ExecutedThenHeld(SlowVenue):
    """While `hold`, create_order is carried out at once, a market order filled at the last price then (an
    exchange's own market order fills as it is placed), and its answer held until `release`."""

    async def create_order(self, req):
        if not self.hold:
            return await super().create_order(req)
        self.hold = False
        await super().create_order(req)
        self._fill(self.orders[req.client_order_id], self.last[req.symbol])
        self.on_wire.set()
        await self.release.wait()
        return await self.fetch_order(req.client_order_id, req.symbol)


async def test_a_halt_during_an_approve_whose_order_a_lookup_found_filled_reports_it_filled(tmp_path, pipelines):
    s = manual(tmp_path)
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=paper_venue(s, ExecutedThenHeld), clock=ManualClock())
    await p.bars(1)
    [aid] = p.engine.pending
    approving = await on_the_wire(p, aid)
    [cid] = p.engine.orders.sending()
    await p.engine.orders.poll()
    assert cid not in p.engine.orders.live, "the lookup did not find it filled: the test did not set it up"
    report = await p.engine.halt(by="test", timeout_s=1.0)
    assert report.filled == [cid] and report.failed == [], report
    assert not approving.done() and kill_events(s.db_path) == []
    p.venue.release.set()
    assert (await asyncio.wait_for(approving, timeout=10))["client_order_id"] == cid
    await until(lambda: kill_events(s.db_path), "the kill switch's report")
    [event] = kill_events(s.db_path)
    assert event["filled"] == [cid] and event["cancelled"] == [] and event["failed"] == [], event
    assert p.engine.portfolio.holding(BTC) is not None
