"""The kill switch and the flatten answer within their time while the exchange is slow to answer what they send
themselves, with no other control under way and no order on the wire: the cancels of the open orders (bounded by
`engine.cancel_timeout_s`, 5 s by default) and a flatten's closing orders (bounded by `exchange.timeout_ms`, 10 s).
HALTED is stored at once; the answer, within half the time its caller waits, says what is still under way, never
"no answer (stopped or busy?)" for an engine that has done what was asked; the kill_switch event follows with the
whole report. Real engines over real SQLite files against the fake Binance through ccxt, the real control socket,
and `ffe ctl` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from ffe_engine.errors import StorageError
from ffe_engine.model import EngineState, OrderReason, Side
from ffe_engine.risk import OrderIntent

from conftest import engine_session, run_ffe
from live_helpers import (BTC, DELETE_ORDER, GET_ORDER, POST_ORDER, engine_loop, fx, live_settings,  # noqa: F401
                          reconcile_twice, rows, stored_events, wait_for)
from receiver import Receiver
from test_live_engine import open_limit_orders, running_live

LOOSE = {"max_position_pct": 100, "max_concentration_pct": 100, "max_leverage": 5, "max_var_pct": 100}
# How long the exchange holds each request of the halt's or the flatten's: past the answer's half second, within the
# fake's receive window (a request held longer is refused as too old, and sent again).
HELD_S = 1.2


def halted_stored(db) -> bool:
    return any(e.get("state") == "HALTED" for e in stored_events(db, "engine_state"))


async def resting_with_slow_cancels(e, fx, seconds: float = HELD_S) -> str:
    """One resting order, whose cancel the exchange holds `seconds` (within the kill switch's bound, 8 s here)."""
    e.orders.cancel_timeout_s = 8.0
    [cid] = await open_limit_orders(e, 1)
    fx.fault(DELETE_ORDER, "slow", seconds=seconds)
    return cid


async def test_a_halt_answers_within_its_time_while_the_exchange_holds_its_cancels(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        cid = await resting_with_slow_cancels(e, fx)
        report = await e.halt(by="test", timeout_s=1.0)  # the console's K: answered within half a second
        assert e.state is EngineState.HALTED and halted_stored(db)
        assert report.cancelled == [] and report.failed == [], report
        assert [u["client_order_id"] for u in report.under_way if u.get("client_order_id")] == [cid], report
        assert not stored_events(db, "kill_switch")  # its cancel was still at the exchange when answered
        await wait_for(lambda: stored_events(db, "kill_switch"), timeout=20, what="the kill switch's report")
        [event] = stored_events(db, "kill_switch")
    assert event["cancelled"] == [cid] and event["failed"] == [], event
    assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]


async def test_a_flatten_answers_within_its_time_while_the_exchange_holds_its_closing_order(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        bought = await e.operator_order(BTC, "buy", 0.001)
        assert bought["accepted"] and e.portfolio.holding(BTC) is not None, bought
        fx.fault(POST_ORDER, "slow", seconds=HELD_S)
        res = await e.flatten(by="test", timeout_s=1.0)
        assert e.state is EngineState.HALTED and halted_stored(db)
        assert res["closing"] == [] and res["failed"] == [], res
        assert any("BTC/USDT" in str(u.get("detail")) or u.get("client_order_id") for u in res["under_way"]), res
        await wait_for(lambda: [k for k in stored_events(db, "kill_switch") if k["action"] == "flatten"],
                       timeout=20, what="the flatten's report")
        [event] = [k for k in stored_events(db, "kill_switch") if k["action"] == "flatten"]
        assert len(event["closing"]) == 1 and event["failed"] == [], event
        await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=20, what="the position closed")


async def test_ffe_ctl_halt_says_what_is_under_way_while_the_exchange_holds_its_cancels(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, settings = running.engine, running.settings
        cid = await resting_with_slow_cancels(e, fx, 3.5)  # past the answer's 2 s
        await running.start_control()  # the engine's control socket, as `ffe run` serves it
        halt = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "halt", "--data-dir", "data", "--timeout", "4")
        assert halt.returncode == 0, halt.stdout + halt.stderr
        headline = halt.stdout.splitlines()[0]
        assert headline.startswith("KILL SWITCH: HALTED by ctl: cancelled 0 failed 0"), headline
        assert "under way: " in headline and cid in headline, headline
        await wait_for(lambda: stored_events(settings.db_path, "kill_switch"), timeout=30,
                       what="the kill switch's report")
        [event] = stored_events(settings.db_path, "kill_switch")
    assert event["cancelled"] == [cid] and event["failed"] == [], event


async def test_two_kill_switches_at_once_both_answer_within_their_time_and_cancel_once(tmp_path, fx):  # noqa: F811
    # SIGUSR1 and `ffe ctl halt` handled in the same turn of the loop.
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        cid = await resting_with_slow_cancels(e, fx)
        first, second = await asyncio.gather(e.halt(by="signal", timeout_s=1.0), e.halt(by="ctl", timeout_s=1.0))
        assert e.state is EngineState.HALTED and halted_stored(db)
        for report in (first, second):  # neither waited for the cancel
            assert report.cancelled == [] and report.failed == [] and report.under_way, report
        assert not stored_events(db, "kill_switch")
        await wait_for(lambda: len(stored_events(db, "kill_switch")) == 2, timeout=20, what="both reports")
        events = stored_events(db, "kill_switch")
    assert sorted(k["by"] for k in events) == ["ctl", "signal"], events
    assert [c for k in events for c in k["cancelled"]] == [cid] and all(k["failed"] == [] for k in events), events
    assert len(fx.requests_to(DELETE_ORDER)) == 1  # one cancel sent, not one per press


async def test_a_kill_switch_whose_halted_cannot_be_stored_says_so_and_not_halted(tmp_path, fx,  # noqa: F811
                                                                                  monkeypatch):
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        await resting_with_slow_cancels(e, fx)

        async def full_disk(*args, **kwargs):
            raise StorageError(f"{db}: cannot write (No space left on device)")

        monkeypatch.setattr(e.store, "set_engine_state", full_disk)
        with pytest.raises(StorageError, match="No space left"):
            await e.halt(by="ctl", timeout_s=1.0)
        assert not halted_stored(db)
        assert [r.status for r in fx.requests_to(DELETE_ORDER)] == [None]  # answered before the cancel was
        monkeypatch.undo()
        await wait_for(lambda: all(r.status is not None for r in fx.requests_to(DELETE_ORDER)), timeout=20,
                       what="the cancel answered")


async def test_a_close_asked_in_the_same_moment_as_a_kill_switch_waits_for_it_and_is_refused(
        tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        posts = len(fx.requests_to(POST_ORDER))
        fx.fault(POST_ORDER, "slow", seconds=HELD_S)
        # Two control connections read in one turn of the loop: the kill switch first.
        report, closed = await asyncio.gather(e.halt(by="ctl", timeout_s=1.0), e.close_position(BTC, by="ctl"))
        assert e.state is EngineState.HALTED and halted_stored(db)
        assert report.failed == [], report
        assert not closed["accepted"] and "ENGINE_STATE" in closed["reason"], closed
        assert len(fx.requests_to(POST_ORDER)) == posts  # nothing sent after the press


async def test_a_kill_switch_after_one_whose_halted_could_not_be_stored_stores_it(tmp_path, fx,  # noqa: F811
                                                                                  monkeypatch):
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        works = e.store.set_engine_state
        failures = [StorageError(f"{db}: cannot write (No space left on device)")]

        async def fails_once(*args, **kwargs):
            if failures:
                raise failures.pop()
            return await works(*args, **kwargs)

        monkeypatch.setattr(e.store, "set_engine_state", fails_once)
        with pytest.raises(StorageError):
            await e.halt(by="ctl", timeout_s=1.0)
        assert not halted_stored(db)
        await e.halt(by="signal", timeout_s=1.0)  # the disk has room again
        assert halted_stored(db)
        assert rows(db, "SELECT state, by FROM engine_state") == [("HALTED", "signal")]


def slowed(monkeypatch, store, seconds: float) -> None:
    """Storing the engine's state takes `seconds` (a slow disk)."""
    works = store.set_engine_state

    async def slow(*args, **kwargs):
        await asyncio.sleep(seconds)
        return await works(*args, **kwargs)

    monkeypatch.setattr(store, "set_engine_state", slow)


def failing_once(monkeypatch, store) -> None:
    """The next store of the engine's state fails (a full disk); those after it work."""
    works = store.set_engine_state
    failures = [StorageError(f"{store.path}: cannot write (No space left on device)")]

    async def fails_once(*args, **kwargs):
        if failures:
            raise failures.pop()
        return await works(*args, **kwargs)

    monkeypatch.setattr(store, "set_engine_state", fails_once)


async def test_a_kill_switch_while_a_re_arm_is_being_stored_records_it_halted_from_running(tmp_path, fx,  # noqa: F811
                                                                                           monkeypatch):
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e, db = running.engine, running.store.path
        await e.halt(by="ctl")
        slowed(monkeypatch, running.store, 0.3)
        rearm = asyncio.ensure_future(e.resume(by="ctl", confirm=True))
        await asyncio.sleep(0.1)  # the re-arm's record on its way to the disk
        await e.halt(reason="SIGUSR1", by="signal")
        await rearm
        assert e.state is EngineState.HALTED and halted_stored(db)
        last = stored_events(db, "engine_state")[-1]
        assert (last["previous"], last["state"], last["by"]) == ("RUNNING", "HALTED", "signal"), last


async def test_a_re_arm_whose_record_fails_leaves_the_engine_halted(tmp_path, fx, monkeypatch):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e = running.engine
        await e.halt(by="ctl")
        posts = len(fx.requests_to(POST_ORDER))
        failing_once(monkeypatch, running.store)
        with pytest.raises(StorageError):
            await e.resume(by="ctl", confirm=True)
        assert e.state is EngineState.HALTED  # the operator was told the re-arm failed
        bought = await e.operator_order(BTC, "buy", 0.001)
        assert not bought["accepted"] and len(fx.requests_to(POST_ORDER)) == posts, bought


async def test_a_flatten_whose_halted_could_not_be_stored_closes_nothing_later(tmp_path, fx,  # noqa: F811
                                                                              monkeypatch):
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        posts = len(fx.requests_to(POST_ORDER))
        failing_once(monkeypatch, running.store)
        with pytest.raises(StorageError):
            await e.flatten(by="ctl", timeout_s=1.0)
        async with engine_loop(e):  # the housekeeping's rounds, where a flatten's follow-up would place its orders
            await asyncio.sleep(1.5)
        assert len(fx.requests_to(POST_ORDER)) == posts  # the operator was told the flatten failed
        assert e.portfolio.holding(BTC) is not None


async def test_a_kill_switch_cut_off_by_a_stop_has_its_cancels_sent_after_the_restart(tmp_path, fx):  # noqa: F811
    tables = {"risk": LOOSE, "exchange": {"timeout_ms": 8000}, "engine": {"stop_timeout_s": 0.5}}
    async with running_live(tmp_path, fx, **tables) as running:
        e = running.engine
        e.orders.cancel_timeout_s = 8.0
        [cid] = await open_limit_orders(e, 1)
        fx.fault(DELETE_ORDER, "hang", seconds=6, execute=False, times=1)
        report = await e.halt(by="ctl", timeout_s=1.0)
        assert [u["client_order_id"] for u in report.under_way if u.get("client_order_id")] == [cid], report
        # An orderly stop now: its cancel is still unanswered past engine.stop_timeout_s, and cut off.
    assert fx.open_order(cid) is not None
    async with engine_session(live_settings(tmp_path, fx, **tables), live=True) as again:
        assert again.engine.state is EngineState.HALTED
        async with engine_loop(again.engine):
            await wait_for(lambda: fx.open_order(cid) is None, timeout=20, what="the cancel sent after the restart")


async def test_a_kill_switch_that_fails_after_its_answer_pages_the_operator(tmp_path, fx, monkeypatch):  # noqa: F811
    hook = await Receiver().start()
    try:
        async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000},
                                alerts={"webhook_url": hook.url + "/hook", "retry_initial_s": 0.05}) as running:
            e = running.engine
            await resting_with_slow_cancels(e, fx)

            async def broken(*args, **kwargs):
                raise RuntimeError("approvals could not be read")

            monkeypatch.setattr(e.approvals, "reject_all", broken)
            report = await e.halt(by="ctl", timeout_s=1.0)
            assert report.under_way, report  # answered: its rest said to follow
            async with engine_loop(e):  # the alerts' delivery turns with the engine
                await wait_for(lambda: [r for r in hook.delivered if "HALTED" in json.dumps(r.body)], timeout=20,
                               what="the HALTED page")
                await wait_for(lambda: [r for r in hook.delivered if "KILL_SWITCH_FAILED" in json.dumps(r.body)],
                               timeout=10, what="the page of the kill switch's failure")
        [page] = [r for r in hook.delivered if "KILL_SWITCH_FAILED" in json.dumps(r.body)]
        assert "approvals could not be read" in json.dumps(page.body), page.body
    finally:
        await hook.stop()


async def test_differences_found_while_a_resume_is_being_stored_pause_the_engine(tmp_path, fx,  # noqa: F811
                                                                                 monkeypatch):
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e = running.engine
        await e.pause(by="ctl")
        slowed(monkeypatch, running.store, 2.0)
        resume = asyncio.ensure_future(e.resume(by="ctl"))
        await asyncio.sleep(0.1)  # the resume's record on its way to the disk
        fx.balances["BTC"].free += 0.5  # coins come to the account from outside
        assert await reconcile_twice(e)
        await resume
        assert e.reconcile_blocked and e.state is EngineState.PAUSED, (e.state, e.state_reason)
        posts = len(fx.requests_to(POST_ORDER))
        bought = await e.operator_order(BTC, "buy", 0.001)
        assert not bought["accepted"] and len(fx.requests_to(POST_ORDER)) == posts, bought


def limit_buy() -> OrderIntent:
    return OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.001, type="limit", price=20_000.0,
                       reason=OrderReason.OPERATOR, ref_price=30_000.0)


async def test_a_kill_switch_cancels_an_order_on_the_wire_once(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e = running.engine
        e.orders.cancel_timeout_s = 0.5
        fx.fault(POST_ORDER, "slow", seconds=1.4)  # answered past the kill switch's cancel_timeout_s
        fx.fault(DELETE_ORDER, "slow", seconds=0.4, times=5)  # each cancel within it: slow, never lost
        placing = asyncio.ensure_future(e.orders.submit(limit_buy()))
        await wait_for(lambda: any(r.status is None for r in fx.requests_to(POST_ORDER)), timeout=10,
                       what="the buy held at the exchange")
        async with engine_loop(e):
            await e.halt(by="test", timeout_s=1.0)
            cid = (await placing).order.client_order_id
            await wait_for(lambda: fx.open_order(cid) is None, timeout=20, what="the order cancelled")
            await asyncio.sleep(2.0)  # the polls that would send it again
        assert len([r for r in fx.requests_to(DELETE_ORDER) if cid in str(r.params)]) == 1


async def test_the_cancels_a_kill_switch_kept_due_are_dropped_once_answered(tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e, db = running.engine, running.store.path
        await open_limit_orders(e, 2)
        report = await e.halt(by="test")
        assert len(report.cancelled) == 2, report
        assert rows(db, "SELECT value FROM kv WHERE key = 'orders_cancel_due'") in ([], [("null",)])


async def test_a_flatten_pressed_beside_an_order_on_the_wire_whose_halted_fails_closes_nothing(
        tmp_path, fx, monkeypatch):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        fx.fault(POST_ORDER, "slow", seconds=1.3)
        placing = asyncio.ensure_future(e.orders.submit(limit_buy()))
        await wait_for(lambda: any(r.status is None for r in fx.requests_to(POST_ORDER)), timeout=10,
                       what="the buy held at the exchange")
        failing_once(monkeypatch, running.store)
        with pytest.raises(StorageError):
            await e.flatten(by="ctl", timeout_s=1.0)
        await placing
        async with engine_loop(e):
            await asyncio.sleep(2.0)  # the flatten's rest and follow-up, had they gone on
        assert [o for o in fx.orders if o.side == "SELL"] == []
        assert e.portfolio.holding(BTC) is not None


async def test_ffe_ctl_close_waiting_on_the_exchange_answers_within_its_time_saying_the_order_is_sent(
        tmp_path, fx):  # noqa: F811
    """The close's order on the wire past half of `--timeout`: the answer says it was sent and the exchange has not
    answered it yet (exit 0), not that the engine did not answer; the close goes on and the position closes. With
    the default timeouts (the control's and the exchange's both 10 s) the answer came as the client gave up."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        await running.start_control()
        fx.fault(POST_ORDER, "hang", seconds=4.0, execute=True)  # the closing order's answer, past ctl's 2 s
        close = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "close", BTC, "--yes", "--data-dir", "data",
                                        "--timeout", "2")
        assert close.returncode == 0, close.stdout + close.stderr
        said = close.stdout.splitlines()[0]
        assert said.startswith(f"closing {BTC}: order ffe-"), close.stdout
        cid = said.split()[3]
        # Its create's answer still on the wire, the order path's own lookup may have found it filled meanwhile:
        # said as the journal has it.
        [(status,)] = rows(running.store.path, "SELECT status FROM orders WHERE client_order_id = ?", (cid,))
        if status == "filled":
            assert "filled at the exchange" in said and "not answered" not in said, (status, said)
        else:
            assert "sent: the exchange has not answered it yet" in said, (status, said)
        await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=20, what="the close carried out")


async def test_a_close_whose_order_a_lookup_found_filled_while_its_answer_is_on_the_wire_says_it_filled(
        tmp_path, fx):  # noqa: F811
    """The create's answer held (the order placed and filled at once), the order path's lookup finds it filled:
    the close's answer says so, never that the exchange has not answered."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        fx.fault(POST_ORDER, "hang", seconds=5.0, execute=True)
        close = asyncio.ensure_future(e.close_position(BTC, by="ctl", timeout_s=4.0))
        await asyncio.sleep(0.5)
        await e.orders.poll()  # the order path's lookups, as the engine makes them on its bars
        sells = "SELECT status FROM orders WHERE side = 'sell'"
        assert rows(running.store.path, sells) == [("filled",)], "the lookup did not find the closing order filled"
        assert not close.done()
        answer = await close
        assert answer["accepted"] and "filled at the exchange" in answer["under_way"], answer
        assert "not answered" not in answer["under_way"], answer


async def test_a_close_behind_another_control_answers_within_its_time_and_is_sent_after_it(
        tmp_path, fx):  # noqa: F811
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        cid = await resting_with_slow_cancels(e, fx, seconds=1.4)
        cancel = asyncio.ensure_future(e.operator_cancel(cid, by="ctl"))
        await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(e.close_position(BTC, by="ctl", timeout_s=1.0), timeout=0.9)
        assert answer["accepted"] is None and f"the cancel of {cid} is under way" in answer["under_way"], answer
        await cancel
        await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=20, what="the close carried out after it")


async def test_a_close_asked_twice_quickly_does_not_answer_with_the_first_close_s_order(tmp_path, fx):  # noqa: F811
    """The first close's order is on the wire; the second close waits for its turn: its answer says so, never the
    first close's order as its own."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.002))["accepted"]
        fx.fault(POST_ORDER, "hang", seconds=2.0, execute=True)
        first = await e.close_position(BTC, by="ctl", timeout_s=1.0)
        assert first["accepted"] and "sent: the exchange has not answered it yet" in first["under_way"], first
        second = await e.close_position(BTC, by="ctl", timeout_s=0.4)
        assert second["client_order_id"] != first["client_order_id"], (first, second)
        assert second["accepted"] is None and f"the close of {BTC} is under way" in second["under_way"], second
        await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=20, what="the close carried out")


async def test_a_close_whose_order_is_answered_while_it_is_recorded_gives_its_order(tmp_path, fx):  # noqa: F811
    """The close's order answered (filled) and being recorded when the answer is due (a slow disk): the answer names
    the order, sent, not "not sent yet" (which invites a second close)."""
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
        flush = e.flush

        async def slow_flush(*args, **kwargs):
            await asyncio.sleep(1.5)
            return await flush(*args, **kwargs)

        e.flush = slow_flush
        answer = await e.close_position(BTC, by="ctl", timeout_s=1.0)
        [sell] = [o for o in fx.orders if o.side == "SELL"]
        assert answer["accepted"] and answer["client_order_id"] == sell.client_id, answer
        await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=20, what="the close recorded")


async def test_a_re_arm_whose_record_fails_while_a_pause_comes_leaves_the_engine_halted(tmp_path, fx,  # noqa: F811
                                                                                        monkeypatch):
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e = running.engine
        await e.halt(by="ctl")
        works = running.store.set_engine_state
        writes: list[str] = []

        async def slow_then_full(state, *args, **kwargs):
            writes.append(state)
            if len(writes) == 1:  # the re-arm's
                await asyncio.sleep(0.3)
                raise StorageError(f"{running.store.path}: cannot write (No space left on device)")
            return await works(state, *args, **kwargs)

        monkeypatch.setattr(running.store, "set_engine_state", slow_then_full)
        rearm = asyncio.ensure_future(e.resume(by="ctl", confirm=True))
        await asyncio.sleep(0.1)  # the re-arm's record on its way to the disk, RUNNING in memory
        await e.trading.set(EngineState.PAUSED, "breaker open on binance", "breaker")  # as the breaker pauses
        with pytest.raises(StorageError):
            await rearm
        assert e.state is EngineState.HALTED  # as the operator is told: the re-arm failed
        bought = await e.operator_order(BTC, "buy", 0.001)
        assert not bought["accepted"], bought
        # What a restart reads says so too, not the pause stored meanwhile.
        assert rows(running.store.path, "SELECT state FROM engine_state") == [("HALTED",)]
        last = stored_events(running.store.path, "engine_state")[-1]
        assert (last["previous"], last["state"]) == ("PAUSED", "HALTED"), last


async def test_an_operator_cancel_the_exchange_holds_is_answered_in_its_bound_and_goes_on(tmp_path, fx):  # noqa: F811
    """The exchange holds the cancel and every lookup of the order past the client's timeout. The operator's cancel
    (`ffe ctl cancel`, the console's) is answered within engine.cancel_timeout_s as not done yet, while the cancel
    is still at the exchange: not after every retry of the cancel and then of its lookup, holding the controls'
    turn (an approve or a close behind it) all that time. The cancel goes on, and the order ends cancelled once the
    exchange answers."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 1000}) as running:
        e, db = running.engine, running.store.path
        e.orders.cancel_timeout_s = 1.0
        [cid] = await open_limit_orders(e, 1)
        for route in (DELETE_ORDER, GET_ORDER):
            fx.fault(route, "hang", seconds=120, times=100)
        answer = await asyncio.wait_for(e.operator_cancel(cid, by="ctl"), timeout=60)
        assert any(not task.done() for task in e.orders.late), "answered only once the exchange had"
        assert not answer["cancelled"] and answer["status"] == "open", answer
        assert "not answered within 1 s" in answer["reason"] and "sent again at the next poll" in answer["reason"]
        async with asyncio.timeout(5):  # the controls' turn is free: the next control is not held behind it
            async with e._controls.turn("the next control"):
                pass
        for route in (DELETE_ORDER, GET_ORDER):
            fx.clear_faults(route)
        fx.end_hangs()
        await wait_for(lambda: rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,))
                       == [("canceled",)], timeout=30, what="the cancel carried out")


async def test_a_close_whose_order_the_exchange_ends_at_once_unsold_is_no_close(tmp_path, fx):  # noqa: F811
    """The exchange accepts the closing order and ends it in the same answer, half of it sold (expired: a time in
    force, self-trade prevention). The position is still open: the close is not said done ("closing ...", exit 0),
    but not done, with what the exchange said; the position stays in the books at what is left."""
    from ffe_engine import tables

    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.002))["accepted"]
        held = e.portfolio.holding(BTC).quantity
        fx.partial_fill_next(0.5, rest="expire")
        answer = await e.close_position(BTC, by="ctl")
        assert "expired at the exchange" in answer["ended"], answer
        said = tables.closed(answer)
        cid = answer["client_order_id"]
        assert said.startswith(f"close {BTC} not done: its order {cid} expired at the exchange"), said
        assert "the position stays open" in said, said
        assert 0 < e.portfolio.holding(BTC).quantity < held


async def test_an_operator_cancel_whose_answer_is_late_but_whose_order_a_lookup_finds_cancelled_is_said_done(
        tmp_path, fx):  # noqa: F811
    """The exchange carries the cancel out at once and holds its answer; the order path's lookup finds the order
    cancelled before the cancel's bound. Nobody else cancelled it: the operator is told it was cancelled (exit 0),
    not "not cancelled: it had been cancelled"."""
    async with running_live(tmp_path, fx, risk=LOOSE, exchange={"timeout_ms": 8000}) as running:
        e, db = running.engine, running.store.path
        e.orders.cancel_timeout_s = 3.0
        [cid] = await open_limit_orders(e, 1)
        fx.fault(DELETE_ORDER, "hang", seconds=30, execute=True)
        cancel = asyncio.ensure_future(e.operator_cancel(cid, by="ctl"))
        await wait_for(lambda: fx.requests_to(DELETE_ORDER), timeout=10, what="the cancel at the exchange")
        await e.orders.poll()  # the lookup, as the engine makes it on its bars
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
        answer = await cancel
        fx.end_hangs()
    assert answer["cancelled"] and answer["status"] == "canceled", answer


async def test_a_cancel_asked_again_while_the_first_is_at_the_exchange_sends_no_second(tmp_path, fx):  # noqa: F811
    """The operator's cancel is answered "not done yet" while the exchange still holds it; the operator asks again
    (and the poll goes on meanwhile). The second ask waits for the cancel already at the exchange instead of sending
    another of the same order beside it: one DELETE, and the order ends cancelled."""
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e, db = running.engine, running.store.path
        e.orders.cancel_timeout_s = 0.3
        [cid] = await open_limit_orders(e, 1)
        fx.fault(DELETE_ORDER, "slow", seconds=0.8)  # within the client's timeout (1 s): answered, late
        async with engine_loop(e):
            first = await e.operator_cancel(cid, by="ctl")
            assert not first["cancelled"] and "not answered within" in first["reason"], first
            await e.operator_cancel(cid, by="ctl")  # while the first is still held at the exchange
            await wait_for(lambda: rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,))
                           == [("canceled",)], timeout=30, what="the cancel carried out")
            await asyncio.sleep(1.0)  # a poll or two after it
        assert len(fx.requests_to(DELETE_ORDER)) == 1, fx.requests_to(DELETE_ORDER)
