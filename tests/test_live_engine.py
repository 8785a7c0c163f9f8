"""The operator's controls and the circuit breaker on a live engine, against the fake Binance.

Real parts: an engine opened by `open_engine` in live mode (CcxtVenue over real ccxt, the exchange feed, the
circuit breaker, the SQLite database) and the fake exchange on 127.0.0.1, whose own book every test checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math

import pytest

from conftest import engine_session, ffe_env
from ffe_engine.errors import FfeError
from ffe_engine.model import EngineState, OrderReason, OrderStatus, Side
from ffe_engine.risk import OrderIntent
from receiver import Receiver
from test_alerts import FAST
from live_helpers import (BTC, DELETE_ORDER, GET_ORDER, M, POST_ORDER, SteppedClock, fx, live_settings,  # noqa: F401
                          engine_loop, next_bar, rows, run_ffe_async, stored_events, wait_for)

MANY = 50
HANG_S = 0.3  # how long the fake takes to answer each cancel in the kill switch tests

LOOSE = {"max_open_positions": MANY + 10, "max_orders_per_minute": MANY + 10, "max_daily_trades": MANY + 10,
         "max_concentration_pct": 100.0}


@contextlib.asynccontextmanager
async def running_live(tmp_path, fx, clock=None, **tables):
    """A live engine that has seen a closed candle and was resumed by the operator."""
    async with engine_session(live_settings(tmp_path, fx, **tables), live=True, clock=clock) as running:
        e = running.engine
        assert await next_bar(e, fx) == 1
        await e.resume(by="test")
        yield running


async def open_limit_orders(e, n: int) -> list[str]:
    """n resting buy orders far below the price, through the engine's single order path."""
    cids = []
    for i in range(n):
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.001, type="limit",
                                                price=20_000.0 + i, reason=OrderReason.OPERATOR,
                                                ref_price=30_000.0))
        assert sub.accepted and sub.order.status is OrderStatus.OPEN, sub.reason
        cids.append(sub.order.client_order_id)
    return cids


class InFlight:
    """Samples how many requests on a route the fake holds unanswered at once."""

    def __init__(self, fx, route: str) -> None:
        self.fx, self.route, self.most = fx, route, 0
        self._task = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        while True:
            pending = sum(1 for r in self.fx.requests_to(self.route) if r.status is None)
            self.most = max(self.most, pending)
            await asyncio.sleep(0.005)

    async def stop(self) -> int:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.most


# ---------------------------------------------------------------------------------------------------- kill switch
async def test_kill_switch_cancels_50_open_orders_concurrently_and_stores_halted(tmp_path, fx):
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e, db = running.engine, running.store.path
        cids = await open_limit_orders(e, MANY)
        assert sorted(o.client_id for o in fx.open_orders()) == sorted(cids)

        fx.fault(DELETE_ORDER, "hang", seconds=HANG_S, execute=True, times=MANY)  # every cancel answers slowly
        sampler = InFlight(fx, DELETE_ORDER)
        report = await e.halt(reason="test kill switch", by="test")
        most_at_once = await sampler.stop()

        # before halt() returned: HALTED in the database, every order cancelled in the fake's own book
        assert rows(db, "SELECT state, reason, by FROM engine_state") == [("HALTED", "test kill switch", "test")]
        assert fx.open_orders() == [] and {o.status for o in fx.orders} == {"CANCELED"} and len(fx.orders) == MANY
        assert sorted(report.cancelled) == sorted(cids) and report.failed == []
        assert rows(db, "SELECT DISTINCT status FROM orders") == [("canceled",)]
        assert e.orders.live == {}
        (event,) = stored_events(db, "kill_switch")
        assert sorted(event["cancelled"]) == sorted(cids) and event["failed"] == []
        # concurrent: many cancels were waiting on the exchange at the same moment, so the whole took a small
        # multiple of one slow answer rather than 50 of them
        assert most_at_once > 1
        assert report.elapsed_ms < MANY * HANG_S * 1000 / 2
        # HALTED refuses every new order; nothing more reaches the exchange
        refused = await e.operator_order(BTC, "buy", 0.01)
        assert not refused["accepted"] and refused["reason"].startswith("ENGINE_STATE")
        assert len(fx.requests_to(POST_ORDER)) == MANY


async def test_kill_switch_lists_the_orders_it_could_not_cancel(tmp_path, fx):
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e, db = running.engine, running.store.path
        cids = await open_limit_orders(e, MANY)
        # The first three cancels are answered "Unknown order sent." although the orders are open (the lookup that
        # follows finds them open): they cannot be cancelled now. The next five get a 503: transient, retried.
        fx.fault(DELETE_ORDER, "not_found_once", times=3)
        fx.fault(DELETE_ORDER, "5xx_not_executed", times=5)
        report = await e.halt(by="test")

        refused = [r.params["origClientOrderId"] for r in fx.requests_to(DELETE_ORDER) if r.fault == "not_found_once"]
        assert len(refused) == 3
        assert sorted(f["client_order_id"] for f in report.failed) == sorted(refused)
        assert all("still open" in f["error"] for f in report.failed)
        assert sorted(report.cancelled) == sorted(set(cids) - set(refused))
        # the fake's book agrees: exactly the refused ones are still open
        assert sorted(o.client_id for o in fx.open_orders()) == sorted(refused)
        assert rows(db, "SELECT state FROM engine_state") == [("HALTED",)]
        (event,) = stored_events(db, "kill_switch")
        assert sorted(f["client_order_id"] for f in event["failed"]) == sorted(refused)
        assert len(event["cancelled"]) == MANY - 3
        # still tracked: the engine has not lost sight of the orders it could not cancel
        assert sorted(e.orders.live) == sorted(refused)
        assert sorted(r[0] for r in rows(db, "SELECT client_order_id FROM orders WHERE status = 'open'")) == \
            sorted(refused)


async def test_a_kill_switch_cancel_refused_by_the_exchange_s_retry_after_goes_out_once_it_ends(tmp_path, fx):
    """The exchange answers a cancel with a 418 and a Retry-After longer than a request waits for: HALTED is stored
    at once, the cancel is said as not done with what it waits for, and it is sent once the Retry-After is over."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        (resting,) = await open_limit_orders(e, 1)
        e.venue.reads.max_retry_after_s = 1.0  # a request waits for at most 1 s of a hold: 3 s are not waited for
        fx.fault(DELETE_ORDER, "418", retry_after=3)
        report = await e.halt(by="test")
        assert rows(db, "SELECT state FROM engine_state") == [("HALTED",)]
        (failed,) = report.failed
        assert failed["client_order_id"] == resting and "Retry-After" in failed["error"], failed
        assert fx.open_order(resting) is not None
        async with engine_loop(e):
            await wait_for(lambda: fx.open_order(resting) is None, timeout=20, what="the order cancelled")
            await wait_for(lambda: resting not in e.orders.live, timeout=20, what="the cancel recorded")
    assert [o.status for o in fx.orders] == ["CANCELED"]
    assert rows(db, "SELECT status FROM orders") == [("canceled",)]


async def test_a_cancel_held_by_the_exchange_s_retry_after_goes_out_after_a_restart(tmp_path, fx):
    """The engine stops while a kill switch's cancel waits for the exchange's Retry-After: the engine started again
    sends it once that time is over."""
    settings = live_settings(tmp_path, fx)
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        (resting,) = await open_limit_orders(e, 1)
        e.venue.reads.max_retry_after_s = 1.0  # a request waits for at most 1 s of a hold: 3 s are not waited for
        fx.fault(DELETE_ORDER, "418", retry_after=3)
        report = await e.halt(by="test")
        banned = fx.requests_to(DELETE_ORDER)[-1].received  # the answer that asked for 3 s without requests
        assert [f["client_order_id"] for f in report.failed] == [resting]
    # The start itself keeps to the stored Retry-After (it waits out the second or two left, then sends).
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        assert e.state is EngineState.HALTED
        assert min(r.received for r in fx.requests if r.received > banned) >= banned + 3 - 0.05
        async with engine_loop(e):
            await wait_for(lambda: fx.open_order(resting) is None, timeout=20, what="the order cancelled")
            await wait_for(lambda: resting not in e.orders.live, timeout=20, what="the cancel recorded")
    assert [o.status for o in fx.orders] == ["CANCELED"]
    assert rows(db, "SELECT status FROM orders") == [("canceled",)]


# ---------------------------------------------------------------------------------------------------- fresh data
@pytest.mark.parametrize("behind_bars, fresh", [(0, True), (13, False)], ids=["current", "old"])
async def test_right_after_a_start_data_stale_measures_the_warm_up_s_newest_bar(tmp_path, fx, behind_bars, fresh):
    """The warm-up history is market data: from the start on, DATA_STALE measures the age of its newest closed bar.
    An entry placed before the first new bar closes (up to an hour on 1h candles: an approval, an operator's buy)
    is let through when that bar is current, and refused with its age when the exchange's newest is old, never
    refused for want of an input the engine has."""
    fx.market_clock.now -= behind_bars * M
    async with engine_session(live_settings(tmp_path, fx), live=True) as running:
        e = running.engine
        await e.resume(by="test")
        got = await e.operator_order(BTC, "buy", 0.001)
        stale = next(g for g in got["gates"] if g["code"] == "DATA_STALE")
        assert stale["value"] is not None, stale
        assert stale["passed"] is fresh and got["accepted"] is fresh, got
        if fresh:
            assert stale["value"] == 0, stale
            assert [o.client_id for o in fx.orders] == [got["client_order_id"]]
        else:
            assert stale["value"] >= 9, stale
            assert not fx.orders


async def test_a_restart_keeps_the_entries_of_the_last_minute_for_order_rate(tmp_path, fx):
    """ORDER_RATE bounds the entries sent in any 60 s, across restarts too: an engine that crash-loops (a supervisor
    restarting it within seconds) cannot send an entry per start past the limit. The window is read back from the
    journal at the start; the restarts here take well under its minute."""
    settings = live_settings(tmp_path, fx, risk={"max_orders_per_minute": 2})
    sent = []
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        for _ in range(2):
            got = await e.operator_order(BTC, "buy", 0.001)
            assert got["accepted"], got
            sent.append(got["client_order_id"])
        got = await e.operator_order(BTC, "buy", 0.001)
        assert not got["accepted"] and got["reason"].startswith("ORDER_RATE"), got
        closed = await e.operator_order(BTC, "sell", 0.001)  # an exit is not an entry: neither bounded nor counted
        assert closed["accepted"], closed
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        got = await e.operator_order(BTC, "buy", 0.001)
        rate = next(g for g in got["gates"] if g["code"] == "ORDER_RATE")
        assert not got["accepted"] and (rate["value"], rate["passed"]) == (2, False), got
    assert [o.client_id for o in fx.orders if o.side == "BUY"] == sent


async def test_a_restart_keeps_the_wait_the_exchange_asked_for(tmp_path, fx):
    """Binance's limit on an account's new orders (429 -1015, "Too many new orders") lasts up to a day: the wait its
    Retry-After gave outlasts a restart, and no order goes out before it is over. It holds orders only: the restart's
    own requests (the markets, the reconciliation) go."""
    settings = live_settings(tmp_path, fx)
    fx.fault(POST_ORDER, "429", retry_after=120, code=-1015)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        got = await e.operator_order(BTC, "buy", 0.001)
        assert not got["accepted"] and "VENUE_HOLD" in got["reason"], got
    sent = len(fx.requests)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert len(fx.requests) > sent  # the start read the exchange
        await e.resume(by="test")
        got = await e.operator_order(BTC, "buy", 0.001)
        assert not got["accepted"] and got["reason"].startswith("VENUE_HOLD"), got
    assert len(fx.requests_to(POST_ORDER)) == 1 and not fx.orders


BAN_S = 120  # a Retry-After that lasts until the test moves the clocks past it
ACCOUNT, KLINES = "GET /api/v3/account", "GET /api/v3/klines"


def venue_on_clock(e, clock: SteppedClock) -> None:
    """The venue's Retry-After counted on the engine's stepped clock: over when the test moves it past."""
    e.venue.reads.monotonic, e.venue.reads.wall = clock.monotonic, clock.wall


@pytest.mark.parametrize("kind, code", [("418", None), ("429", -1003)], ids=["ban", "request-weight"])
async def test_a_ban_on_an_order_holds_every_request_until_its_retry_after(tmp_path, fx, kind, code):
    """Binance's 418 bans the address and its 429 -1003 is the address's request weight used up: both cover every
    request, and the exchange lengthens the ban for each one sent during it. An order refused so is rejected, the
    next order is held (VENUE_HOLD), and no candle poll, order lookup, balance read or cancel reaches the exchange
    before the Retry-After is over; all of them go on after it."""
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock=clock) as running:
        e = running.engine
        venue_on_clock(e, clock)
        (resting,) = await open_limit_orders(e, 1)
        fx.fault(POST_ORDER, kind, retry_after=BAN_S, **({} if code is None else {"code": code}))
        refused = await e.operator_order(BTC, "buy", 0.001)
        assert not refused["accepted"] and "VENUE_HOLD" in refused["reason"], refused
        assert [r.status for r in fx.requests_to(POST_ORDER)][-1] == int(kind)
        sent = len(fx.requests)

        held = await e.operator_order(BTC, "buy", 0.001)
        assert not held["accepted"] and held["reason"].startswith("VENUE_HOLD"), held
        assert await next_bar(e, fx) == 0  # the candle poll: not sent
        await e.orders.poll()  # the resting order's lookup: not sent
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING  # put off: its reads not sent
        ok, said = await e.orders.cancel(e.orders.live[resting], by="test")
        assert not ok and "Retry-After" in said, said
        assert fx.requests[sent:] == [], [r.route for r in fx.requests[sent:]]
        assert e.venue_hold()["holds"] == "requests", e.venue_hold()
        assert fx.open_order(resting) is not None

        clock.forward(BAN_S + 1)  # the Retry-After is over
        async with engine_loop(e):
            await wait_for(lambda: fx.open_order(resting) is None, timeout=20, what="the held cancel sent")
            await wait_for(lambda: fx.requests_to(KLINES)[-1:] and fx.requests_to(KLINES)[-1].status == 200,
                           timeout=20, what="a candle poll answered")
            assert await e.reconcile() == []
            assert [r for r in fx.requests[sent:] if r.route == ACCOUNT and r.status == 200]
            bought = await e.operator_order(BTC, "buy", 0.001)
            assert bought["accepted"], bought
        assert [o.status for o in fx.orders] == ["CANCELED", "FILLED"]


async def test_an_order_limit_on_an_order_holds_orders_and_leaves_the_reads_free(tmp_path, fx):
    """Binance's 429 -1015 ("Too many new orders") is the account's limit on new orders, seconds up to a day long:
    the orders wait for its Retry-After, while the feed, the lookups, the reconciliation and the kill switch's
    cancels go on."""
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock=clock) as running:
        e = running.engine
        venue_on_clock(e, clock)
        (resting,) = await open_limit_orders(e, 1)
        fx.fault(POST_ORDER, "429", retry_after=BAN_S, code=-1015)
        refused = await e.operator_order(BTC, "buy", 0.001)
        assert not refused["accepted"] and "VENUE_HOLD" in refused["reason"], refused
        assert "Too many new orders" in refused["reason"], refused
        posts = len(fx.requests_to(POST_ORDER))
        held = await e.operator_order(BTC, "buy", 0.001)
        assert not held["accepted"] and held["reason"].startswith("VENUE_HOLD"), held
        assert len(fx.requests_to(POST_ORDER)) == posts  # refused before the journal: not sent
        assert e.venue_hold()["holds"] == "orders", e.venue_hold()

        sent = len(fx.requests)
        assert await next_bar(e, fx) == 1  # the feed goes on
        await e.orders.poll()
        assert await e.reconcile() == []
        report = await e.halt(by="test")
        assert report.cancelled == [resting] and report.failed == [], report
        routes = {r.route for r in fx.requests[sent:] if r.status == 200}
        assert {KLINES, GET_ORDER, ACCOUNT, DELETE_ORDER} <= routes, routes
        assert fx.open_order(resting) is None
    assert len(fx.requests_to(POST_ORDER)) == posts


async def test_a_start_within_the_ban_an_order_met_sends_nothing(tmp_path, fx):
    """A 418 on an order bans the address for its Retry-After, stored with the books while the engine runs: a start
    within it sends nothing (the ban grows with every request sent during it) and stops saying so, as after a
    read's ban."""
    settings = live_settings(tmp_path, fx)
    db = settings.db_path
    hold = "SELECT value FROM kv WHERE key = 'venue_request_hold_until' AND value != 'null'"
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        fx.fault(POST_ORDER, "418", retry_after=BAN_S)
        refused = await e.operator_order(BTC, "buy", 0.001)
        assert not refused["accepted"] and "VENUE_HOLD" in refused["reason"], refused
        async with engine_loop(e):
            await wait_for(lambda: rows(db, hold), timeout=20, what="the ban stored")
    sent = len(fx.requests)
    with pytest.raises(FfeError) as again:
        async with engine_session(settings, live=True):
            pass
    assert len(fx.requests) == sent, [r.route for r in fx.requests[sent:]]
    assert "Retry-After" in str(again.value), again.value
    assert len(fx.requests_to(POST_ORDER)) == 1 and not fx.orders


async def test_an_order_still_in_doubt_after_a_restart_is_paged_when_it_stays_so(tmp_path, fx):
    """The operator is paged about an order that stays in doubt (alerts.in_doubt_s), whether it went in doubt
    before the engine's last start or after: the engine recovers it in doubt and says so."""
    hook = await Receiver().start()
    clock = SteppedClock()
    settings = live_settings(tmp_path, fx, alerts={"webhook_url": hook.url, "in_doubt_s": 60, **FAST})
    try:
        async with engine_session(settings, live=True, clock=clock) as running:
            e = running.engine
            await e.resume(by="test")
            fx.down = True
            placed = await e.operator_order(BTC, "buy", 0.001)  # its answer lost: in doubt
            cid = placed["client_order_id"]
            assert placed["accepted"] and e.orders.live[cid].status is OrderStatus.IN_DOUBT
        fx.down = False
        fx.fault(GET_ORDER, "5xx_not_executed", times=10_000)  # the exchange cannot say what became of it
        async with engine_session(settings, live=True, clock=clock) as running:
            e = running.engine
            async with engine_loop(e):
                assert e.orders.live[cid].status is OrderStatus.IN_DOUBT
                clock.forward(61)
                await wait_for(lambda: [r for r in hook.delivered if r.body["kind"] == "IN_DOUBT"], timeout=20,
                               what="the in-doubt page")
        (page,) = [r.body for r in hook.delivered if r.body["kind"] == "IN_DOUBT"]
        assert page["severity"] == "page" and cid in page["text"]
    finally:
        await hook.stop()


async def test_an_engine_that_starts_waiting_for_the_operator_says_so_as_a_warning(tmp_path, fx):
    """A live engine starts PAUSED after every start (an unattended restart too) and nothing new trades until the
    operator resumes it: the STARTED alert says so as a warning, which an operator who takes warnings and pages only
    (alerts.min_severity = "warn") still gets."""
    hook = await Receiver().start()
    settings = live_settings(tmp_path, fx, alerts={"webhook_url": hook.url, "min_severity": "warn", **FAST})
    try:
        for n in (1, 2):  # the first start, then a restart of an engine the operator had resumed
            async with engine_session(settings, live=True) as running:
                assert running.engine.state is EngineState.PAUSED
                await wait_for(lambda: len(hook.delivered) == n, timeout=20, what="the STARTED alert")
                await running.engine.resume(by="test")
        first, again = [r.body for r in hook.delivered]
        assert [(a["kind"], a["severity"]) for a in (first, again)] == [("STARTED", "warn")] * 2
        assert "PAUSED (fresh start)" in first["text"] and "PAUSED (live start)" in again["text"], again
        assert "`ffe ctl resume`" in again["text"], again
    finally:
        await hook.stop()


async def test_a_new_position_is_valued_at_the_latest_price_everywhere(tmp_path, fx):
    """Filled between bars at a price other than the last close, a new position's P&L, its % move and the equity
    all take the same price: the latest one the engine has."""
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        (pos,) = e.snapshot()["positions"]
        last, entry, qty = pos["last"], pos["entry"], pos["quantity"]
        assert last == e.portfolio.last_price[BTC] and entry != last, pos
        assert pos["unrealised"] == pytest.approx((last - entry) * qty), pos
        assert pos["pnl_pct"] == pytest.approx(100.0 * (last - entry) / entry), pos
        assert e.portfolio.unrealised() == pytest.approx(pos["unrealised"])
        assert e.snapshot()["equity"] == pytest.approx(e.portfolio.cash + qty * last)


# ---------------------------------------------------------------------------------------------------- flatten
@pytest.mark.parametrize("first_answer", ["429", "5xx_not_executed"])
async def test_flatten_closes_the_position_once_through_a_failed_first_attempt(tmp_path, fx, first_answer):
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        held = 0.02 * (1 - fx.fee_rate)  # Binance takes a buy's fee from the coins bought
        assert e.portfolio.positions[BTC].quantity == pytest.approx(held)
        resting = (await open_limit_orders(e, 1))[0]  # an open order, cancelled first

        # the first closing order fails: refused before matching (429), or a 503 that did not execute it
        fx.fault(POST_ORDER, first_answer, **({"retry_after": 0} if first_answer == "429" else {}))
        async with engine_loop(e):
            result = await e.flatten(by="test")
            assert result["cancelled"] == [resting] and result["failed"] == []
            assert rows(db, "SELECT state, reason FROM engine_state") == [("HALTED", "flatten")]
            await wait_for(lambda: BTC not in e.portfolio.positions, timeout=20, what="the position closed")

        sells = [o for o in fx.orders if o.side == "SELL"]
        assert [(o.type, o.status, o.filled) for o in sells] == [("MARKET", "FILLED", pytest.approx(held))]
        (closing,) = result["closing"]
        assert sells[0].client_id == closing
        posts = [r.params for r in fx.requests_to(POST_ORDER) if r.params.get("side") == "SELL"]
        if first_answer == "429":  # refused and not placed: flatten tried again with a new order
            assert len(posts) == 2 and posts[0]["newClientOrderId"] != closing
        else:  # in doubt: looked up by its id, sent again with the same id once surely absent
            assert [p["newClientOrderId"] for p in posts] == [closing, closing]
        assert rows(db, "SELECT symbol FROM positions") == []
        assert rows(db, "SELECT reason, quantity FROM trades") == [("flatten", pytest.approx(held))]
        assert e.state is EngineState.HALTED
        assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)  # sold exactly what was held


@pytest.mark.parametrize("action", ["flatten", "close"])
async def test_a_closing_order_whose_answer_was_lost_is_said_in_doubt_where_the_page_says_it(tmp_path, fx, action):
    """The closing order sent, its answer lost: the position is held until the exchange says what became of it.
    The FLATTEN page said `1 IN DOUBT`, but `ffe ctl flatten` printed `closing 1` and `ffe ctl close` `closing
    BTC/USDT: order ID`, both exit 0, and the console read the same: a script and an operator took the position for
    closed."""
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        await running.start_control()
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        fx.fault(POST_ORDER, "5xx_not_executed")
        ctl = await run_ffe_async(tmp_path, "ctl", action, *([BTC] if action == "close" else []), "--yes",
                                  "--data-dir", str(e.settings.data_dir), env=ffe_env(), name=action)
        (closing,) = [o.client_order_id for o in e.orders.live.values() if o.reduce_only]
        assert e.orders.live[closing].status is OrderStatus.IN_DOUBT
        assert ctl.proc.returncode == 1, ctl.stdout + ctl.stderr
        line = ctl.stdout.splitlines()[0]
        if action == "flatten":
            assert line.startswith("FLATTEN, then HALTED, by ctl: cancelled 0 failed 0 closing 1"), line
            assert f"in doubt 1 ({closing})" in line, line
        else:
            assert line.startswith(f"closing {BTC}: order {closing} in doubt: the answer was lost"), line
        assert "the position is held until the exchange says" in line, line


async def test_a_stop_waits_for_a_close_whose_order_is_on_the_wire_and_answers_it_before_the_engine_stops(
        tmp_path, fx):
    """`systemctl stop` while `ffe ctl close` waits for the exchange's answer to its order: the engine's stop closed
    its connection to the exchange under the order (in doubt, its records after the run's stop record) and the
    caller was told `closing ...` of an order whose end nobody knew. The stop waits for it, within its bound."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        await running.start_control()
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        fx.fault(POST_ORDER, "slow", seconds=0.8)  # within the client's timeout (exchange.timeout_ms 1000)
        async with engine_loop(e):
            ctl = asyncio.ensure_future(run_ffe_async(tmp_path, "ctl", "close", BTC, "--yes", "--data-dir",
                                                      str(e.settings.data_dir), env=ffe_env(), name="close"))
            await wait_for(lambda: fx.requests_to(POST_ORDER)[1:], timeout=30, what="the closing order on the wire")
            e.request_stop()  # as SIGTERM does
        closed = await ctl
        assert closed.proc.returncode == 0, closed.stdout + closed.stderr
        assert "in doubt" not in closed.stdout, closed.stdout
    assert rows(db, "SELECT status FROM orders WHERE side = 'sell'") == [("filled",)]
    events = [json.loads(r[0]) for r in rows(db, "SELECT data FROM events ORDER BY seq")]
    (stop,) = [i for i, ev in enumerate(events) if ev["event"] == "run" and ev.get("phase") == "stop"]
    assert not [ev for ev in events[stop + 1:] if ev["event"] in ("order", "fill", "venue_fault")], events[stop:]


async def test_a_flatten_during_the_exchange_s_retry_after_closes_the_position_once_it_ends(tmp_path, fx):
    """An exchange's 418 (an IP ban) or long 429 holds every request until its Retry-After: the closing orders the
    flatten would send meanwhile are refused without being sent. They are no failure: the flatten says what it
    waits for, and closes the position once the exchange takes orders again."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        fx.fault(POST_ORDER, "418", retry_after=3)
        async with engine_loop(e):
            result = await e.flatten(by="test")
            assert result["failed"] == [] and result["closing"] == [], result
            (waiting,) = result["waiting"]
            assert waiting["symbol"] == BTC and "Retry-After" in waiting["detail"], waiting
            assert rows(db, "SELECT state, reason FROM engine_state") == [("HALTED", "flatten")]
            await wait_for(lambda: BTC not in e.portfolio.positions, timeout=20, what="the position closed")
        flattens = [k for k in stored_events(db, "kill_switch") if k["action"] == "flatten"]
        assert all(not k["failed"] for k in flattens), flattens
        assert flattens[0]["waiting"] and flattens[-1]["closing"], flattens
    posts = [r.params for r in fx.requests_to(POST_ORDER) if r.params.get("side") == "SELL"]
    assert len(posts) == 2  # the one the exchange refused, and the one sent once its Retry-After was over
    assert [o.status for o in fx.orders if o.side == "SELL"] == ["FILLED"]
    assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)
    assert e.state is EngineState.HALTED


async def a_stop_loss_held_by_a_retry_after(e, fx, retry_after: float, kind: str = "418", **opts) -> None:
    """A position bought, whose stop-loss the next bar crosses and no later bar does, its exit refused by a 418 (or
    `kind`) and a Retry-After (not sent)."""
    bought = await e.operator_order(BTC, "buy", 0.02)
    assert bought["accepted"], bought
    pos = e.portfolio.positions[BTC]
    pos.stop_loss = 1e9  # this bar crosses it
    fx.fault(POST_ORDER, kind, retry_after=retry_after, **opts)
    assert await next_bar(e, fx) == 1
    pos.stop_loss = None  # and no later bar does (the stored position has none: nothing crosses after a start)
    assert [o.side for o in fx.orders] == ["BUY"] and len(fx.requests_to(POST_ORDER)) == 2


async def test_a_stop_loss_refused_for_the_exchange_s_retry_after_goes_out_once_it_ends(tmp_path, fx):
    """A stop-loss the exchange refuses with a 418 and a Retry-After is not dropped: the bar that crossed the level
    is gone once the ban is over, the exit it called for goes out then."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        await a_stop_loss_held_by_a_retry_after(e, fx, 3)
        async with engine_loop(e):
            await wait_for(lambda: BTC not in e.portfolio.positions, timeout=20, what="the position closed")
        assert rows(db, "SELECT reason, status FROM orders WHERE side = 'sell' ORDER BY created_ts") == \
            [("stop_loss", "rejected"), ("stop_loss", "filled")]
    assert [(o.side, o.status) for o in fx.orders] == [("BUY", "FILLED"), ("SELL", "FILLED")]
    assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)


async def test_a_stop_loss_held_by_the_exchange_s_retry_after_goes_out_after_a_restart(tmp_path, fx):
    """The engine stopped (or killed) while the exit waits for the Retry-After: the start goes on with it, and sends
    it once the hold is over, as the engine that held it would have. It was kept in memory only, and the position
    stayed open past its crossed stop-loss."""
    settings = live_settings(tmp_path, fx)
    async with running_live(tmp_path, fx) as running:
        await a_stop_loss_held_by_a_retry_after(running.engine, fx, 4)
    async with engine_session(settings, live=True) as running:  # PAUSED, as a live start is: exits go on
        e = running.engine
        async with engine_loop(e):
            await wait_for(lambda: BTC not in e.portfolio.positions, timeout=30, what="the position closed")
    assert rows(settings.db_path, "SELECT reason, status FROM orders WHERE side = 'sell' ORDER BY created_ts") == \
        [("stop_loss", "rejected"), ("stop_loss", "filled")]
    assert [(o.side, o.status) for o in fx.orders] == [("BUY", "FILLED"), ("SELL", "FILLED")]


async def test_a_halt_drops_a_stop_loss_held_by_the_exchange_s_retry_after(tmp_path, fx):
    """HALTED leaves positions to the operator (order-path.md): a held exit is dropped by the halt, in memory and in
    the records, so neither a re-arm within the hold nor a start after it sends it. It went out after a re-arm, with
    no bar crossing the level since."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        await a_stop_loss_held_by_a_retry_after(e, fx, 4)
        await e.halt(by="test")
        assert rows(db, "SELECT value FROM kv WHERE key = 'exits_held'") in ([], [("null",)])
        await e.resume(by="test", confirm=True)  # re-armed while the Retry-After still holds
        async with engine_loop(e):
            await asyncio.sleep(6)  # past the hold
        assert BTC in e.portfolio.positions
    assert rows(db, "SELECT reason, status FROM orders WHERE side = 'sell'") == [("stop_loss", "rejected")]
    assert [o.side for o in fx.orders] == ["BUY"]


async def test_a_start_that_comes_up_halted_by_a_kept_kill_switch_drops_a_held_stop_loss(tmp_path, fx):
    """The exit a Retry-After held, stored; then a kill switch kept for the next start (asked during a start that
    failed): that start is a halt, and drops the held exit as any halt does. It was loaded all the same and sent
    after the re-arm, no bar crossing the level since."""
    from ffe_engine import halt_asked

    settings = live_settings(tmp_path, fx)
    async with running_live(tmp_path, fx) as running:
        # Orders only (429 -1015): the start's reads go on meanwhile, and it comes up within the hold.
        await a_stop_loss_held_by_a_retry_after(running.engine, fx, 10, kind="429", code=-1015)
    assert halt_asked.keep(settings.data_dir, "SIGUSR1 (asked while a start failed)", "signal")
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.state is EngineState.HALTED
        assert rows(settings.db_path, "SELECT value FROM kv WHERE key = 'exits_held'") in ([], [("null",)])
        await e.resume(by="test", confirm=True)  # re-armed within the hold
        async with engine_loop(e):
            await asyncio.sleep(12)  # past the hold
        assert BTC in e.portfolio.positions
    assert [o.side for o in fx.orders] == ["BUY"]


async def test_a_halt_that_ends_a_flatten_waiting_for_the_exchange_says_what_it_leaves_held(tmp_path, fx):
    """The flatten waits for the exchange's Retry-After (its page: closed once it is over); a kill switch pressed
    meanwhile ends it, as a halt ends any flatten under way. Its report, its record and a FLATTEN page say which
    positions are still held and that nothing closes them now, instead of the flatten's promise standing."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import KillSwitchEvent
    from ffe_engine.present import kill_headline

    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        fx.fault(POST_ORDER, "418", retry_after=3)
        result = await e.flatten(by="test")
        assert [w["symbol"] for w in result["waiting"]] == [BTC], result
        report = await e.halt(reason="ffe ctl halt", by="ctl")
        assert report.flatten_ended == [BTC], report
        headline = kill_headline({**dataclasses.asdict(report), "action": "halt", "by": "ctl"})
        assert f"the flatten under way ended here, these still held: {BTC}" in headline, headline
        halt = [k for k in stored_events(db, "kill_switch") if k["action"] == "halt"][-1]
        assert halt["flatten_ended"] == [BTC], halt
        (alert,) = alerts_for(KillSwitchEvent(action="halt", by="ctl", flatten_ended=[BTC]))
        assert alert.severity == "page" and BTC in alert.text and "ended the flatten" in alert.text, alert
        assert e._flattening is None and BTC in e.portfolio.positions


async def flatten_goes_on_after_a_restart(settings, fx):
    """The next start of an engine halted while flattening a BTC position: HALTED still, the position still held,
    and once it runs the flatten goes on to one filled sell that leaves no BTC. The engine, stopped."""
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.state is EngineState.HALTED and BTC in e.portfolio.positions
        async with engine_loop(e):
            await wait_for(lambda: BTC not in e.portfolio.positions, timeout=20, what="the position closed")
    assert [o.status for o in fx.orders if o.side == "SELL"] == ["FILLED"]
    assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)
    return e


async def test_a_flatten_waiting_for_the_exchange_s_retry_after_goes_on_after_a_restart(tmp_path, fx):
    """The engine stops while its flatten waits for the exchange's Retry-After: the engine started again (before or
    after that time) closes the position once it is over."""
    settings = live_settings(tmp_path, fx)
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        fx.fault(POST_ORDER, "418", retry_after=3)
        result = await e.flatten(by="test")  # no engine loop: nothing follows it up before the stop
        assert result["failed"] == [] and [w["symbol"] for w in result["waiting"]] == [BTC], result
    await flatten_goes_on_after_a_restart(settings, fx)


async def held_with_a_partial_close_next(e, fx, rest: str = "open") -> None:
    """A position bought by the operator, and the exchange set to fill the next order (flatten's closing order) in
    part, the rest resting (or expired in its answer, with rest="expire")."""
    bought = await e.operator_order(BTC, "buy", 0.02)
    assert bought["accepted"], bought
    fx.partial_fill_next(0.5, rest=rest)


async def test_a_flatten_whose_closing_order_fills_in_part_and_expires_closes_the_rest_at_once(tmp_path, fx):
    """A market order can fill in part and expire in its own answer (an exchange short of liquidity, or its
    self-trade prevention): the flatten places another closing order for what is still held, there and then, and
    its report says the closing orders it placed, nothing failed."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        await held_with_a_partial_close_next(e, fx, rest="expire")
        async with engine_loop(e):
            result = await e.flatten(by="test")
            assert result["failed"] == [] and len(result["closing"]) == 2, result
            await wait_for(lambda: BTC not in e.portfolio.positions, timeout=20, what="the position closed")
        sells = [o for o in fx.orders if o.side == "SELL"]
        assert [o.status for o in sells] == ["EXPIRED", "FILLED"]
        assert [o.client_id for o in sells] == result["closing"]
        assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)
        assert [r for r, in rows(db, "SELECT reason FROM orders WHERE side = 'sell'")] == ["flatten", "flatten"]
        assert e.state is EngineState.HALTED


async def test_a_flatten_whose_closing_order_expires_unfilled_in_its_answer_tries_again_at_once(tmp_path, fx):
    """The exchange accepts the closing order and expires it in the same answer, nothing filled (a time in force that
    found no liquidity): the flatten does not leave the position under `closing` behind an order that has ended; it
    places another, and the position is closed when it answers."""
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        fx.fault(POST_ORDER, "expire")
        result = await e.flatten(by="test")
        assert result["failed"] == [] and len(result["closing"]) == 2, result
        assert BTC not in e.portfolio.positions, e.portfolio.positions
        assert [o.status for o in fx.orders if o.side == "SELL"] == ["EXPIRED", "FILLED"]
        assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)


async def test_a_flatten_whose_closing_orders_all_expire_says_it_failed_in_the_exchange_s_words(tmp_path, fx):
    """Every closing order expires in its own answer: the flatten says the position failed, with how the exchange
    ended the last of its orders, and `ffe ctl flatten` exits 1, rather than `closing SYMBOL`, exit 0, while nothing
    works on it."""
    from ffe_engine.present import kill_headline

    async with running_live(tmp_path, fx) as running:
        e = running.engine
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        fx.fault(POST_ORDER, "expire", times=3)
        result = await e.flatten(by="test")
        sells = [o for o in fx.orders if o.side == "SELL"]
        assert [o.status for o in sells] == ["EXPIRED"] * 3
        (failed,) = result["failed"]
        assert failed["symbol"] == BTC, result
        assert failed["error"] == (f"still held after 3 closing attempts: the last, its closing order "
                                   f"{sells[-1].client_id} expired at the exchange, nothing filled"), failed
        assert e.portfolio.holding(BTC) is not None and e.state is EngineState.HALTED
        assert "failed 1" in kill_headline({**result, "action": "flatten", "by": "test"})
        assert e._flattening is None  # nothing works on it: not followed up (the operator is told it failed)


async def test_a_flatten_follow_up_that_placed_more_says_when_they_closed_the_position(tmp_path, fx):  # noqa: F811
    """The follow-up said one more closing order was placed for what the first left: once it fills, a follow-up says
    the closing orders closed the position (the banner, the record and the alert), rather than the last word being
    "1 more closing order placed" while nothing is held any more."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        await held_with_a_partial_close_next(e, fx)
        async with engine_loop(e):
            result = await e.flatten(by="test")
            fx.expire(result["closing"][0])  # the rest of the first closing order expires, later
            await wait_for(lambda: BTC not in e.portfolio.positions, timeout=20, what="the position closed")

            def followed() -> list[dict]:
                return [k for k in stored_events(db, "kill_switch") if k["by"] == "engine"]

            await wait_for(lambda: len(followed()) >= 2, timeout=20, what="the follow-up saying it closed")
        more, closed = followed()[:2]
        assert len(more["closing"]) == 1 and more["closed"] == [], more
        assert closed["closed"] == [BTC] and closed["closing"] == [], closed


async def test_a_flatten_that_still_holds_a_position_after_its_closing_attempts_is_paged_at_once(tmp_path, fx):
    """The flatten's closing order fills in part (its warning is sent: closing orders placed), and the follow-up's
    orders are refused: the position still held after the last closing attempt is a page sent at once, not a repeat
    of the flatten's warning counted into a summary at the end of its window (300 s, a warning)."""
    hook = await Receiver().start()
    try:
        async with running_live(tmp_path, fx, alerts={"webhook_url": hook.url, **FAST}) as running:
            e = running.engine
            await held_with_a_partial_close_next(e, fx)
            fx.fault(POST_ORDER, "slow", seconds=0.0)  # the flatten's own closing order goes through
            fx.fault(POST_ORDER, "error", status=400, code=-2010,
                     msg="Account has insufficient balance for requested action.", times=2)
            async with engine_loop(e):
                result = await e.flatten(by="test")
                assert result["failed"] == [] and len(result["closing"]) == 1
                fx.expire(result["closing"][0])
                await wait_for(lambda: [r for r in hook.delivered if r.body["kind"] == "FLATTEN"
                                        and "FAILED" in r.body["text"]], timeout=20, what="the flatten's failure")
            flattens = [(r.body["severity"], r.body["text"]) for r in hook.delivered if r.body["kind"] == "FLATTEN"]
            assert [sev for sev, _ in flattens] == ["warn", "page"], flattens
            assert "1 FAILED: check the venue now." in flattens[1][1], flattens
            assert BTC in e.portfolio.positions and e.state is EngineState.HALTED
    finally:
        await hook.stop()


async def test_a_flatten_goes_on_after_a_restart(tmp_path, fx):
    """The engine stopped (a crash, a restart) before it followed up a closing order that left part of the position:
    the flatten under way is stored with the HALTED state, and the engine started again closes the rest."""
    settings = live_settings(tmp_path, fx)
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        await held_with_a_partial_close_next(e, fx)
        result = await e.flatten(by="test")  # no engine loop: nothing follows it up before the stop
        assert result["failed"] == [] and BTC in e.portfolio.positions
    fx.expire(result["closing"][0])  # the rest of its closing order expires while the engine is stopped
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.state is EngineState.HALTED
        async with engine_loop(e):
            await wait_for(lambda: BTC not in e.portfolio.positions, timeout=20, what="the position closed")
    assert [o.status for o in fx.orders if o.side == "SELL"] == ["EXPIRED", "FILLED"]
    assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)


async def test_a_flatten_cut_short_before_its_closing_orders_is_finished_after_a_restart(tmp_path, fx):
    """The engine stopped in the middle of a flatten: HALTED stored, its cancels still out, no closing order placed
    yet. What the flatten was to close is stored with the HALTED state, so the engine started again closes it."""
    quick_stop = {"engine": {"stop_timeout_s": 0.3}}  # the stop cuts the flatten off while its cancel hangs
    settings = live_settings(tmp_path, fx, **quick_stop)
    async with running_live(tmp_path, fx, **quick_stop) as running:
        e = running.engine
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        (resting,) = await open_limit_orders(e, 1)  # the flatten's cancel of it hangs
        fx.fault(DELETE_ORDER, "hang", seconds=3.0, times=1)
        flattening = asyncio.ensure_future(e.flatten(by="test", timeout_s=1.0))
        await wait_for(lambda: fx.requests_to(DELETE_ORDER), timeout=10, what="the flatten's cancel sent")
        assert e.state is EngineState.HALTED
        answer = await flattening  # within its time, the cancel still out: the process ends here
        assert answer["closing"] == [] and answer["under_way"], answer
    assert [o for o in fx.orders if o.side == "SELL"] == []
    assert (await flatten_goes_on_after_a_restart(settings, fx)).state is EngineState.HALTED


async def test_a_flatten_closes_a_position_that_a_fill_opened_while_its_cancels_were_out(tmp_path, fx):
    """A resting buy fills at the exchange just as the flatten's cancel of it arrives: the cancel finds it filled,
    the fill opens a position, and the flatten closes that one too."""
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        (resting,) = await open_limit_orders(e, 1)
        fx.fault(DELETE_ORDER, "slow", seconds=1.0)

        async def fill_it_meanwhile() -> None:
            await wait_for(lambda: fx.requests_to(DELETE_ORDER), timeout=10, what="the cancel sent")
            fx.fill(resting)

        filler = asyncio.ensure_future(fill_it_meanwhile())
        result = await e.flatten(by="test")
        await filler
        assert BTC not in e.portfolio.positions or e.portfolio.holding(BTC) is None
        assert len(result["closing"]) == 1 and result["failed"] == [], result
        assert [(o.side, o.status) for o in fx.orders] == [("BUY", "FILLED"), ("SELL", "FILLED")]
        assert e.state is EngineState.HALTED


async def test_a_flatten_that_cannot_close_what_is_left_pages_the_operator(tmp_path, fx):
    """When what a closing order left cannot be closed (every further closing order refused), the flatten says
    which position is still open: a kill_switch record with it as failed, which is a page."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import KillSwitchEvent

    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        await held_with_a_partial_close_next(e, fx)
        async with engine_loop(e):
            result = await e.flatten(by="test")
            assert result["failed"] == []
            fx.fault(POST_ORDER, "error", status=400, code=-2010, msg="Account has insufficient balance for "
                     "requested action.", times=1000)
            fx.expire(result["closing"][0])

            def left_open() -> list[dict]:
                return [k for k in stored_events(db, "kill_switch") if k["action"] == "flatten" and k["failed"]]

            (said,) = await wait_for(left_open, timeout=20, what="the flatten saying what it left open")
        (failed,) = said["failed"]
        assert failed["symbol"] == BTC and "still held" in failed["error"], said
        assert "closing attempts: the last, its closing order was refused: " in failed["error"], failed
        assert failed["error"].endswith("Account has insufficient balance for requested action."), failed
        assert BTC in e.portfolio.positions and e.state is EngineState.HALTED
        (alert,) = alerts_for(KillSwitchEvent(action=said["action"], failed=said["failed"], by=said["by"]))
        assert alert.severity == "page" and "FAILED" in alert.text
        assert len([o for o in fx.orders if o.side == "SELL"]) == 1  # the refused ones never reached the book


async def test_a_flatten_s_follow_up_whose_orders_expire_in_their_answer_pages_in_the_exchange_s_words(tmp_path, fx):
    """What the first closing order left is tried again by the follow-up, whose orders the exchange expires in their
    own answers: no `more closing order(s) placed` for orders that have ended, and the page at the last attempt says
    how the exchange ended it."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        await held_with_a_partial_close_next(e, fx)
        async with engine_loop(e):
            result = await e.flatten(by="test")
            fx.fault(POST_ORDER, "expire", times=2)
            fx.expire(result["closing"][0])

            def followed() -> list[dict]:
                return [k for k in stored_events(db, "kill_switch") if k["by"] == "engine"]

            said = await wait_for(lambda: [k for k in followed() if k["failed"]], timeout=20,
                                  what="the follow-up's failure")
        sells = [o for o in fx.orders if o.side == "SELL"]
        assert [o.status for o in sells] == ["EXPIRED"] * 3
        assert all(k["closing"] == [] for k in followed()), followed()
        (failed,) = said[0]["failed"]
        assert failed["error"].endswith(f"still held after 3 closing attempts: the last, its closing order "
                                        f"{sells[-1].client_id} expired at the exchange, nothing filled"), failed
        assert e.portfolio.holding(BTC) is not None and e.state is EngineState.HALTED


async def test_a_flatten_s_follow_up_says_what_its_closing_orders_closed_and_what_is_left_as_dust(tmp_path, fx):
    """The flatten's closing order fills all but coins worth less than the exchange takes an order for (its minimum
    order value), and the rest expires. The follow-up's kill_switch record says it is the follow-up, what the
    closing orders closed and what is left as dust; the console's banner and the FLATTEN alert built from it say so,
    not `closing 0` (nothing closed) after the operator's flatten closed the position."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import KillSwitchEvent
    from ffe_engine.present import kill_headline, line

    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        order_qty = math.floor(e.portfolio.positions[BTC].quantity / 0.00001 + 1e-9) * 0.00001
        fx.partial_fill_next((order_qty - 0.0001) / order_qty, rest="expire")  # about 3 USDT left: under 5
        async with engine_loop(e):
            result = await e.flatten(by="operator")
            assert result["failed"] == [] and len(result["closing"]) == 1, result
            assert kill_headline({**result, "action": "flatten", "by": "operator"}).startswith(
                "FLATTEN, then HALTED, by operator: cancelled 0 failed 0 closing 1")

            def followed() -> list[dict]:
                return [k for k in stored_events(db, "kill_switch") if k["by"] == "engine"]

            (said,) = await wait_for(followed, timeout=20, what="the flatten's follow-up")
        assert e.portfolio.holding(BTC) is None and BTC in e.portfolio.positions  # dust
        assert said["action"] == "flatten" and said["follow_up"] is True, said
        assert said["closed"] == [BTC] and [d["symbol"] for d in said["dust"]] == [BTC], said
        banner = kill_headline(said)
        assert "closing 0" not in banner and "cancelled 0" not in banner, banner
        assert banner.startswith(f"FLATTEN follow-up, HALTED, by engine: the closing orders closed {BTC}; left as "
                                 f"dust, below the venue's minimum order: {BTC} 0.0001"), banner
        assert line("kill_switch", said).startswith(f"kill_switch flatten follow-up by engine: the closing orders "
                                                    f"closed {BTC}"), line("kill_switch", said)
        (alert,) = alerts_for(KillSwitchEvent(action=said["action"], closing=said["closing"], dust=said["dust"],
                                              by=said["by"], follow_up=said["follow_up"], closed=said["closed"]))
        assert alert.text.startswith(f"ffe flatten follow-up by engine: the closing orders closed {BTC}; left as "
                                     f"dust, below the venue's minimum order: {BTC} 0.0001"), alert.text
        assert "0 closing order(s) placed" not in alert.text, alert.text
    # The next start's record counts positions as the status does: the dust apart.
    async with engine_session(live_settings(tmp_path, fx), live=True):
        pass
    start = [r for r in stored_events(db, "run") if r["phase"] == "start"][-1]
    assert (start["detail"]["positions"], start["detail"]["dust"]) == (0, 1), start


# ---------------------------------------------------------------------------------------------------- breaker
async def test_exchange_down_past_the_breaker_threshold_then_back(tmp_path, fx):
    clock = SteppedClock()
    breaker = {"failure_threshold": 3, "recovery_timeout_s": 60.0}  # on the stepped clock: not waited for
    async with running_live(tmp_path, fx, clock, breaker=breaker) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.down = True
            placed = await e.operator_order(BTC, "buy", 0.01)  # its answer is lost: failure 1, in doubt
            cid = placed["client_order_id"]
            assert placed["accepted"] and e.orders.live[cid].status is OrderStatus.IN_DOUBT
            # the engine's own polls look the order up and fail too: the breaker opens, the engine pauses
            await wait_for(lambda: e.breaker.state == "open", timeout=30, what="the breaker open")
            await wait_for(lambda: rows(db, "SELECT state, by FROM engine_state") == [("PAUSED", "breaker")],
                           timeout=10, what="the engine paused, durably")
            assert e.state is EngineState.PAUSED and e.state_reason.startswith("breaker open on binance")

            # while it is open nothing is sent: an operator entry is refused at the gates
            posts = len(fx.requests_to(POST_ORDER))
            gets = len(fx.requests_to(GET_ORDER))
            refused = await e.operator_order(BTC, "buy", 0.01)
            gates = {g["code"]: g["passed"] for g in refused["gates"]}
            assert not refused["accepted"] and gates["ENGINE_STATE"] is False and gates["BREAKER_OPEN"] is False
            await asyncio.sleep(0.3)  # polls go on meanwhile, held back by the open breaker
            assert e.breaker.state == "open"
            assert len(fx.requests_to(POST_ORDER)) == posts and len(fx.requests_to(GET_ORDER)) == gets

            fx.down = False
            # after recovery_timeout_s one probe goes through (the lookup of the order in doubt) and closes it
            assert e.breaker.state == "open"
            clock.forward(60.0)
            await wait_for(lambda: e.breaker.state == "closed", timeout=20, what="the breaker closed")
            await wait_for(lambda: rows(db, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,)) == [
                ("rejected", "not sent again: engine PAUSED")], timeout=20, what="the order in doubt resolved")
            # The order never reached the exchange (the connection was dropped before it), and the paused engine
            # does not send an entry again on its own: recorded as not sent, nothing at the exchange.
            assert fx.orders == [] and cid not in e.orders.live

            # the operator resumes once the exchange is back, and orders go through again
            assert e.state is EngineState.PAUSED
            assert await e.resume(by="test") is EngineState.RUNNING
            again = await e.operator_order(BTC, "buy", 0.01)
            assert again["accepted"], again
            assert [(o.client_id, o.status) for o in fx.orders] == [(again["client_order_id"], "FILLED")]

        states = [(b["previous"], b["state"]) for b in stored_events(db, "breaker")]
        assert states == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
