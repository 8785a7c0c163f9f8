"""The books of a live engine when the strategy trades through faults and restarts, against the fake Binance.

In the lost-answer, restart, reconciliation and Retry-After cases the strategy places the orders: the fake's
klines follow a steady climb, on which the trend and breakout providers vote BUY as soon as the indicators are
warm, so the first closed bar after the start makes the engine enter. (The precision and log cases place operator
orders: they are about texts.) Each test checks the fake's own book (orders, balances, the requests it received)
and the engine's books (journal, fills, positions, cash and equity).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from typing import Any

import pytest

from conftest import engine_session
from fake_exchange import Balance, FakeBinance, binance_client
from ffe_engine import fmt
from ffe_engine.control import request
from ffe_engine.errors import FfeError
from live_helpers import (BTC, DELETE_ORDER, GET_ORDER, M, POST_ORDER, RECV_WINDOW_MS, AsyncFfe,  # noqa: F401
                          MarketClock, a_difference_of, engine_loop, exchange_options, fx, live_config, live_env,
                          live_settings, next_bar, paused_by_reconciliation, processes, reconciled_ok, rows,
                          run_ffe_async, stored_events, wait_for, wait_for_bar, write_config)

GET_ACCOUNT = "GET /api/v3/account"
START = 30_000.0
CLIMB = 0.001  # per bar: a trend the strategy buys
MY_TRADES, ACCOUNT = "GET /api/v3/myTrades", "GET /api/v3/account"


def climbing(fx: FakeBinance) -> None:
    """Klines that climb CLIMB per bar for the whole warm-up and after; market orders fill at the last close."""
    origin = fx.market_clock() - 200 * M

    def path(sid: str, ts: int) -> float:
        return round(START * (1.0 + CLIMB * (ts - origin) / M), 2)

    fx.price_path = path
    fx.set_price("BTCUSDT", path("BTCUSDT", fx.market_clock()))


def with_strategy(**tables) -> dict:
    """Config tables for a live engine whose strategy enters on the climb: warm at start (80 bars), two
    trend-following providers, running from the start; `tables` are merged over them."""
    base = {"engine": {"warmup_bars": 80, "live_start_paused": False},
            "ensemble": {"providers": ["trend", "breakout"], "min_votes": 2, "adaptive": False}}
    for key, value in tables.items():
        base.setdefault(key, {}).update(value)
    return base


def strategy_settings(tmp_path, fx: FakeBinance, **tables):
    return live_settings(tmp_path, fx, **with_strategy(**tables))


def answer_settings(tmp_path, fx: FakeBinance, answer: str = "RESULT", **tables):
    """As strategy_settings, on an exchange asked for Binance's `answer` to a new order: RESULT (how much filled and
    for how much, without the fills and their fees), FULL (with them) or ACK (the order's ids only)."""
    options = exchange_options(newOrderRespType={"market": answer, "limit": answer})
    return strategy_settings(tmp_path, fx, exchange={"options": options}, **tables)


async def strategy_approval(e: Any, fx: FakeBinance) -> dict[str, Any]:
    """The next bar, on which the strategy enters, in manual approval: the one trade it proposed, pending."""
    fx.market_clock.step()
    [a] = await wait_for(lambda: list(e.approvals.pending.values()), timeout=30, what="an approval")
    return a


async def strategy_order(fx: FakeBinance) -> str:
    """The next bar, on which the strategy enters: the client order id of the one order it sent."""
    fx.market_clock.step()
    (sent,) = await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=30, what="the strategy's order")
    return sent.params["newClientOrderId"]


async def strategy_entry(e, fx: FakeBinance) -> str:
    """The next bar's entry, filled and final (every answer it waits for settled): its client order id."""
    cid = await strategy_order(fx)
    await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the entry filled")
    await wait_for(lambda: not e.orders.live, timeout=30, what="the entry final")
    return cid


async def resting_entry(e, fx: FakeBinance) -> str:
    """The strategy's entry, filled in part (40%) with the rest open at the exchange, its first part in the books:
    its client order id."""
    fx.partial_fill_next(0.4)
    cid = await strategy_order(fx)
    await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the first part filled")
    return cid


async def halted_over_failing_cancels(e, fx: FakeBinance, fault: str, **opts):
    """The strategy's entry resting at the exchange, then the kill switch with the exchange's cancels faulted
    (FakeBinance.fault's `fault` and options), the cancel reported failed: its client order id and the report."""
    cid = await resting_entry(e, fx)
    fx.fault(DELETE_ORDER, fault, **opts)
    report = await e.halt(reason="ffe ctl halt", by="ctl")
    assert [f["client_order_id"] for f in report.failed] == [cid], report
    return cid, report


async def resting_exit(e, fx: FakeBinance) -> str:
    """The strategy's entry filled; then the operator's sell of half the position, filled in part (40%) with the
    rest open at the exchange: its client order id. An order a close of the symbol leaves working (it is an exit)."""
    await strategy_entry(e, fx)
    fx.partial_fill_next(0.4)
    half = math.floor(e.portfolio.positions[BTC].quantity / 2 * 1e5) / 1e5
    answer = await e.operator_order(BTC, "sell", half)
    assert answer["accepted"], answer
    return answer["client_order_id"]


async def filled_further_at_the_venue(e, fx: FakeBinance):
    """The resting entry, and half of what it still has open filled at the exchange since the engine's last look:
    its client order id and the fake's order."""
    cid = await resting_entry(e, fx)
    order = fx.open_order(cid)
    fx.fill(cid, qty=round(order.remaining / 2, 5))
    return cid, order


async def in_doubt(e, cid: str) -> None:
    await wait_for(lambda: cid in e.orders.live and e.orders.live[cid].status.value == "in_doubt", timeout=30,
                   what="the order in doubt")


async def poll_until_ended(e, cid: str, *, every: float = 0.1, at_most: int = 50) -> int:
    """The engine's orders polled, `every` seconds, until `cid` is no longer in flight (at most `at_most` polls):
    how many polls it took."""
    for n in range(at_most):
        if cid not in e.orders.live:
            return n
        await e.orders.poll()
        await asyncio.sleep(every)
    return at_most


def sends(fx: FakeBinance, cid: str) -> int:
    """How many times the order with client order id `cid` was sent to the exchange."""
    return len([r for r in fx.requests_to(POST_ORDER) if r.params["newClientOrderId"] == cid])


def assert_books_agree(e, fx: FakeBinance) -> None:
    """The engine's cash, position and equity are the fake account's, to the cent (and to the coin's step)."""
    usdt, btc = fx.balances["USDT"].total, fx.balances["BTC"].total
    pos = e.portfolio.positions.get(BTC)
    assert (pos.quantity if pos else 0.0) == pytest.approx(btc, abs=1e-9)
    assert e.portfolio.cash == pytest.approx(usdt, abs=0.005)
    price = e.portfolio.last_price[BTC]
    assert e.portfolio.equity() == pytest.approx(usdt + btc * price, abs=0.01)


def journaled(db, cid: str) -> tuple[str, float, float]:
    """The order's status and filled quantity in the journal, and what its fills add up to (0 with none)."""
    ((status, filled, booked),) = rows(db, "SELECT status, filled, (SELECT COALESCE(SUM(quantity), 0) FROM fills AS f "
                                           "WHERE f.client_order_id = o.client_order_id) FROM orders AS o "
                                           "WHERE client_order_id = ?", (cid,))
    return status, filled, booked


def order_statuses(db, cid: str) -> list[str]:
    return [e["status"] for e in stored_events(db, "order") if e.get("client_order_id") == cid]


class HungDisk:
    """The store's writes named wait, as on a disk that hangs, until `answer()`; `heal(name)` lets that write go
    through at once again while the others still wait."""

    def __init__(self, monkeypatch, store, *names: str) -> None:
        self._gate = asyncio.Event()
        self._monkeypatch, self._store = monkeypatch, store
        self._writes = {name: getattr(store, name) for name in names}
        for name, write in self._writes.items():
            async def hanging(*args, _write=write, **kwargs):
                await self._gate.wait()
                return await _write(*args, **kwargs)

            monkeypatch.setattr(store, name, hanging)

    def heal(self, name: str) -> None:
        self._monkeypatch.setattr(self._store, name, self._writes[name])

    def answer(self) -> None:
        self._gate.set()


# ---------------------------------------------------------------------------------------------------- what is sold
async def test_an_operator_sell_of_more_than_the_books_hold_is_refused(tmp_path, fx):
    # The strategy's entry has filled at the exchange and its answer is late: the books hold nothing yet, the
    # account holds the coins. A sell the operator asks for now would sell coins the books do not have (or, as
    # well, coins the account held before ffe): its fill could reduce no position, and the books would hold more
    # than the account for good. The books are long only: a sell is never more than they hold less the sells
    # already working.
    climbing(fx)
    fx.fault(POST_ORDER, "hang", seconds=1.5, execute=True)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600}, exchange={"timeout_ms": 3000})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await wait_for(lambda: fx.balances["BTC"].total > 0, timeout=30, what="the entry filled at the exchange")
            assert BTC not in e.portfolio.positions
            answer = await e.operator_order(BTC, "sell", 0.002)
            assert not answer["accepted"] and answer["reason"].startswith("NOTHING_HELD: nothing to sell"), answer
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the entry's late answer")
            held = e.portfolio.positions[BTC].quantity
            answer = await e.operator_order(BTC, "sell", held * 2)  # more than held: only what is held is sold
            assert answer["accepted"], answer
            await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=30, what="the sell filled (dust left)")
        assert [r.params["newClientOrderId"] for r in fx.requests_to(POST_ORDER)] == [cid, answer["client_order_id"]]
        assert_books_agree(e, fx)


# ---------------------------------------------------------------------------------------------------- lost answer
async def test_lost_answer_found_filled_by_the_poll_stays_filled(tmp_path, fx):
    climbing(fx)
    # the exchange places and fills the order, and holds the answer past the client's 3 s timeout; the engine
    # polls its orders every 0.1 s meanwhile
    fx.fault(POST_ORDER, "hang", seconds=6, execute=True)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1}, exchange={"timeout_ms": 3000})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.market_clock.step()
            (sent,) = await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=30, what="the strategy's order")
            cid = sent.params["newClientOrderId"]
            # the decision is recorded with the order's journal entry, before the send has its outcome
            (decision,) = await wait_for(lambda: stored_events(db, "decision"), timeout=30, what="the decision")
            await wait_for(lambda: fx.requests_to(GET_ORDER), timeout=30, what="the poll looking the order up")
            assert sent.answered is None  # the fake still holds the answer
            await wait_for(lambda: cid not in e.orders.live, timeout=30, what="the order resolved")
        assert (decision["action"], decision["outcome"], decision["client_order_id"]) == ("BUY", "submitted", cid)
        assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "FILLED")]
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        statuses = order_statuses(db, cid)
        assert statuses[-1] == "filled" and "in_doubt" not in statuses[statuses.index("filled"):], statuses
        assert rows(db, "SELECT COUNT(*) FROM fills") == [(1,)]
        assert rows(db, "SELECT symbol, quantity FROM positions") == [(BTC, pytest.approx(fx.balances["BTC"].total))]
        assert_books_agree(e, fx)
        # the lost answer is said once, and so is what became of the order
        assert [(f["kind"], f["phase"], f["client_order_id"]) for f in stored_events(db, "venue_fault")] == [
            ("in_doubt", "fault", cid), ("in_doubt", "resolved", cid)]
        said = [line for line in running.log.getvalue().splitlines() if "venue fault" in line]
        assert len(said) == 2 and "venue fault resolved" in said[1] and "filled" in said[1], said


def sends_of(fx: FakeBinance, cid: str) -> list:
    """The requests that sent the order `cid`."""
    return [r for r in fx.requests_to(POST_ORDER) if r.params["newClientOrderId"] == cid]


async def a_sale_the_venue_lags_behind(fx: FakeBinance, e, lag_s: float) -> str:
    """The strategy's entry, then a close whose answer is lost while the venue's lookups and its balance lag
    `lag_s` behind it (past the settle window, and so that the balance does not show the sale either: it would keep
    the repeat back). The close's client order id."""
    fx.market_clock.step()
    await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the strategy's entry")
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "stale", seconds=lag_s, times=10_000)
    fx.fault(GET_ACCOUNT, "stale", seconds=lag_s, times=10_000)
    return (await e.close_position(BTC, by="operator"))["client_order_id"]


async def test_a_resend_the_venue_refuses_leaves_the_first_send_in_doubt_until_the_venue_shows_it(tmp_path, fx):
    """A sell is placed and its answer lost; the venue's lookups (and its balance) lag past the settle window, so
    the engine takes it as absent and sends it again with the same id. The venue refuses the repeat (the first sale
    took the coins: insufficient balance). That refusal says nothing of the first send: the order stays in doubt,
    is not sent a third time, and once the lookups show it filled, its fill is in the books, which equal the
    venue's."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            cid = await a_sale_the_venue_lags_behind(fx, e, 4 * RECV_WINDOW_MS / 1000)
            await wait_for(lambda: len(sends_of(fx, cid)) == 2, timeout=30, what="the repeat")
            await wait_for(lambda: cid not in e.orders.live, timeout=30, what="the order resolved")
        sends = sends_of(fx, cid)
        assert len(sends) == 2 and sends[1].status == 400, [(r.status, r.fault) for r in sends]
        assert [(o.client_id, o.status) for o in fx.orders if o.client_id == cid] == [(cid, "FILLED")]
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        assert "rejected" not in order_statuses(db, cid), order_statuses(db, cid)
        assert rows(db, "SELECT COUNT(*) FROM fills WHERE client_order_id = ?", (cid,)) == [(1,)]
        assert e.portfolio.positions[BTC].quantity < 0.00001  # sold down to what is below the venue's step
        assert_books_agree(e, fx)


async def test_an_entry_whose_lookups_lag_past_the_settle_window_is_not_bought_twice(tmp_path, fx):
    """The strategy's buy is placed and filled, its answer lost, and the venue's order lookups lag past the settle
    window, so they do not find it. Its repeat would be a second buy (the id is free again once the first has
    filled). The venue's balance shows the coins it bought: the order is not sent again, and stays in doubt until
    the lookups find it, filled once."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "stale", seconds=4 * RECV_WINDOW_MS / 1000, times=10_000)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.market_clock.step()
            (sent,) = await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=30, what="the strategy's entry")
            cid = sent.params["newClientOrderId"]
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the entry found filled")
        assert len(fx.requests_to(POST_ORDER)) == 1, [(r.status, r.fault) for r in fx.requests_to(POST_ORDER)]
        assert [(o.client_id, o.side, o.status) for o in fx.orders] == [(cid, "BUY", "FILLED")]
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        assert_books_agree(e, fx)


async def test_a_refused_repeat_is_not_sent_a_third_time_after_a_restart(tmp_path, fx):
    """As above, and the engine stops (in order) while the order is in doubt after its refused repeat: the next
    engine looks it up and waits for the venue's word, never sending it again. (The balance lags too here: showing
    the sale, it would keep the repeat back, as the entry above shows.)"""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await a_sale_the_venue_lags_behind(fx, e, 8 * RECV_WINDOW_MS / 1000)
            await wait_for(lambda: e.orders.live.get(cid) and e.orders.live[cid].error.startswith("sent again"),
                           timeout=30, what="the repeat refused")
    db = settings.db_path
    assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("in_doubt",)]
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await wait_for(lambda: cid not in e.orders.live, timeout=30, what="the order resolved")
        sends = sends_of(fx, cid)
        assert len(sends) == 2, [(r.status, r.fault) for r in sends]
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        assert_books_agree(e, fx)


# ---------------------------------------------------------------------------------------------------- restart
RUN = ("run", "--headless", "--live")


def strategy_config(fx: FakeBinance, **tables):
    return live_config(fx, **with_strategy(**tables))


def controlled_settings(tmp_path, fx: FakeBinance, **tables):
    """strategy_settings for the engine opened in-process, written as tmp_path's config.toml too, for the `ffe ctl`
    processes that reach it."""
    settings = strategy_settings(tmp_path, fx, **tables)
    write_config(tmp_path, strategy_config(fx, **tables))
    return settings


async def start_engine(cwd, fx, processes, name: str) -> AsyncFfe:
    """`ffe run --headless --live`, once its control socket answers (a killed predecessor may have left the
    socket file behind)."""
    p = await AsyncFfe.start(cwd, *RUN, env=live_env(fx), name=name)
    processes.append(p)
    sock = cwd / "data" / "ffe.sock"

    async def answers() -> bool:
        if not p.alive():
            raise AssertionError(f"ffe exited {p.proc.returncode}: {p.stderr}")
        with contextlib.suppress(OSError):
            return (await request(sock, "status", timeout=5))["ok"]
        return False

    await wait_for(answers, timeout=60, what=f"{name} answering on its control socket", interval=0.05)
    return p


def assert_status_agrees(status: dict, fx: FakeBinance) -> None:
    """The engine's cash, position and equity (as `status` reports them) are the fake account's, to the cent."""
    usdt, btc = fx.balances["USDT"].total, fx.balances["BTC"].total
    (pos,) = status["positions"]
    assert (pos["symbol"], pos["quantity"]) == (BTC, pytest.approx(btc, abs=1e-9))
    assert status["cash"] == pytest.approx(usdt, abs=0.005)
    assert status["equity"] == pytest.approx(usdt + btc * pos["last"], abs=0.01)


@pytest.mark.parametrize("reached", [True, False], ids=["filled-while-down", "never-reached"])
async def test_a_buy_on_the_wire_when_the_engine_was_killed_is_charged_once(tmp_path, fx, processes, reached):
    climbing(fx)
    write_config(tmp_path, strategy_config(fx, exchange={"timeout_ms": 5000}))
    db, sock = tmp_path / "data" / "ffe.db", tmp_path / "data" / "ffe.sock"
    first = await start_engine(tmp_path, fx, processes, "first")
    # the exchange places and fills the strategy's buy (or never gets it), and holds the answer until the process
    # is gone
    fx.fault(POST_ORDER, "hang", seconds=20, execute=reached)
    fx.market_clock.step()
    (sent,) = await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=30, what="the strategy's buy on the wire")
    await first.kill()
    cid = sent.params["newClientOrderId"]
    assert [(o.client_id, o.status) for o in fx.orders] == ([(cid, "FILLED")] if reached else [])
    assert rows(db, "SELECT status, reason FROM orders") == [("new", "signal")]

    second = await start_engine(tmp_path, fx, processes, "second")
    await wait_for(lambda: rows(db, "SELECT status FROM orders") == [("filled",)], timeout=30,
                   what="the order resolved as filled")
    status = (await request(sock, "status"))["result"]
    assert_status_agrees(status, fx)
    assert status["state"] == "RUNNING" and status["reconcile_blocked"] == []

    # a bar later (the strategy holds: in position) the books still agree and no risk limit saw a loss
    await wait_for_bar(sock, fx)
    status = (await request(sock, "status"))["result"]
    assert_status_agrees(status, fx)
    assert status["state"] == "RUNNING"
    assert [o.client_id for o in fx.orders] == [cid]
    assert fx.orders[0].quote_filled > 500  # a real position: a double charge would be plain in cash and equity
    assert await second.stop() == 0, second.stderr
    assert not [e for e in stored_events(db, "engine_state") if e.get("by") == "risk"]


# ---------------------------------------------------------------------------------------------------- reconcile
async def test_periodic_reconciliation_compares_cash_and_equity(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.market_clock.step()
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the strategy's entry filled")
            assert_books_agree(e, fx)
            await reconciled_ok(db, "a reconciliation that agrees with the fill")
            assert e.state.value == "RUNNING"

            fx.balances["USDT"].free -= 250.0  # quote leaves the account (a withdrawal): no order of ffe's
            await paused_by_reconciliation(db, "the engine paused, durably", timeout=20)
            usdt = fx.balances["USDT"].total
            cash, equity = e.reconcile_blocked
            assert cash == {"kind": "cash", "asset": "USDT", "journal": pytest.approx(usdt + 250.0),
                            "venue": pytest.approx(usdt)}
            assert equity["kind"] == "equity" and equity["journal"] - equity["venue"] == pytest.approx(250, abs=0.01)

            await e.accept_reconcile(by="test")  # the venue's cash becomes the engine's
            assert_books_agree(e, fx)
            checks = len(stored_events(db, "reconcile"))
            await wait_for(lambda: len(stored_events(db, "reconcile")) >= checks + 2, timeout=20,
                           what="two more reconciliations")
            assert e.reconcile_blocked == [] and stored_events(db, "reconcile")[-1]["status"] == "ok"
        assert [o.side for o in fx.orders] == ["BUY"]


async def test_an_open_order_the_venue_cannot_be_asked_about_is_no_difference_until_it_can(tmp_path, fx):
    # The entry fills in part and rests; the rest fills at the venue, whose answers about the order then fail for a
    # while. The venue's balances hold the fill and the journal cannot yet: that is no difference to pause for (the
    # order explains it), and once the order can be read its fill is recorded and everything agrees.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600}, breaker={"recovery_timeout_s": 0.5})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            fx.fill(cid)
            fx.fault(GET_ORDER, "5xx_not_executed", times=12)  # every look at it during the reconciliation fails
            assert await e.reconcile() == []
            assert e.state.value == "RUNNING" and cid in e.orders.live
            await poll_until_ended(e, cid)  # the breaker the failures opened lets a look through after 0.5 s
            assert fx.pending_faults(GET_ORDER) == 0 and cid not in e.orders.live
            # read right after the fill was recorded, the balances may lag it: nothing in them counts until the
            # settle window has passed
            assert await e.reconcile() == []
            await e.flush()
            assert stored_events(db, "reconcile")[-1]["status"] == "unconfirmed"
            await asyncio.sleep(e.venue.settle_s)
            assert await e.reconcile() == []
            await e.flush()
            assert stored_events(db, "reconcile")[-1]["status"] == "ok"
        assert [o.status for o in fx.orders] == ["FILLED"]
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_an_open_order_the_venue_once_says_it_does_not_have_keeps_its_fill(tmp_path, fx):
    # An order the venue has shown is the venue's: a lookup that says it does not exist (a lagging replica, a
    # glitch) proves nothing. Recorded as rejected, the order's fill at the venue would never reach the books.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            fx.fill(cid)
            fx.fault(GET_ORDER, "not_found_once")
            await e.orders.poll()
            assert cid in e.orders.live and e.orders.live[cid].status.value == "open"
            assert await e.reconcile() == [] and e.state.value == "RUNNING"
            await e.orders.poll()
            assert cid not in e.orders.live
        assert order_statuses(db, cid)[-1] == "filled"
        assert [o.status for o in fx.orders] == ["FILLED"]
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_an_order_s_end_is_written_after_the_fill_being_booked_never_before_it(tmp_path, fx):
    # A poll books a fill of a resting order while the disk is slow, and a cancel of the same order is answered
    # meanwhile (cancelled, with that fill). The cancel's end was written at once, with the order's filled taken
    # from the fill not yet committed: a kill then left an order whose filled its fills do not make (the next start
    # refused the database), and a reader saw it so.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            order = fx.open_order(cid)
            fx.fill(cid, qty=round(order.remaining / 2, 5))
            writing, disk = asyncio.Event(), asyncio.Event()
            add_fill = e.store.add_fill

            async def slow_disk(*args, **kwargs):
                writing.set()
                await disk.wait()
                return await add_fill(*args, **kwargs)

            e.store.add_fill = slow_disk
            polled = asyncio.ensure_future(e.orders.poll())
            await asyncio.wait_for(writing.wait(), 30)
            cancelled = asyncio.ensure_future(e.operator_cancel(cid))
            await wait_for(lambda: fx.open_order(cid) is None, timeout=30, what="the cancel at the exchange")
            await asyncio.sleep(0.5)  # the cancel's answer taken in
            _, filled, booked = journaled(db, cid)
            assert filled == pytest.approx(booked, abs=1e-12), (filled, booked)
            disk.set()
            await polled
            answer = await cancelled
            e.store.add_fill = add_fill
        assert answer["status"] == "canceled", answer
        status, filled, booked = journaled(db, cid)
        assert status == "canceled" and filled == pytest.approx(booked, abs=1e-12)
        assert filled == pytest.approx(fx.orders_with(cid)[0].filled, abs=1e-12)
        assert order_statuses(db, cid)[-1] == "canceled"
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_a_state_written_while_the_store_is_busy_never_carries_a_fill_booked_meanwhile(tmp_path, fx):
    # A close's market order is answered NEW (the exchange fills it a moment later), and the write of its OPEN waits
    # for the store, busy with another write. Meanwhile the poll finds the order filled and books the fill, whose
    # commit waits for a slow disk. The OPEN write read the order once the store was free: it committed the order's
    # new filled before its fill, and a kill then left a database the next start refused.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            entry = await resting_entry(e, fx)
            await e.operator_cancel(entry)  # the entry's rest cancelled: a position of its first part
            fx.fault(POST_ORDER, "fill_later", seconds=0.3)
            busy, waiting, disk = asyncio.Event(), asyncio.Event(), asyncio.Event()
            update_order, add_fill = e.store.update_order, e.store.add_fill

            async def store_busy(o, *args, **kwargs):
                if o.reduce_only and o.status.value == "open":
                    waiting.set()
                    await busy.wait()
                return await update_order(o, *args, **kwargs)

            async def slow_disk(*args, **kwargs):
                await disk.wait()
                return await add_fill(*args, **kwargs)

            e.store.update_order, e.store.add_fill = store_busy, slow_disk
            closing = asyncio.ensure_future(e.close_position(BTC, by="test"))
            await asyncio.wait_for(waiting.wait(), 30)
            cid = next(c for c, o in e.orders.live.items() if o.reduce_only)
            await wait_for(lambda: fx.open_order(cid) is None, timeout=30, what="the close filled at the exchange")
            polled = asyncio.ensure_future(e.orders.poll())
            await asyncio.sleep(0.5)  # the poll at the order
            busy.set()
            await asyncio.sleep(0.5)  # the OPEN written
            _, filled, booked = journaled(db, cid)
            assert filled == pytest.approx(booked, abs=1e-12), (filled, booked)
            disk.set()
            await asyncio.gather(closing, polled)
            e.store.update_order, e.store.add_fill = update_order, add_fill
        status, filled, booked = journaled(db, cid)
        assert status == "filled" and filled == pytest.approx(booked, abs=1e-12)
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_a_cancel_of_an_open_order_the_venue_does_not_find_keeps_its_fill(tmp_path, fx):
    # The cancel is answered "unknown order" and both lookups after it "does not exist": the order had filled at
    # the venue. The cancel is not done, the order stays open, and the next poll records its fill.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            fx.fill(cid)
            fx.fault(DELETE_ORDER, "not_found_once")
            fx.fault(GET_ORDER, "not_found_once", times=2)
            result = await e.operator_cancel(cid)
            assert not result["cancelled"] and "did not find" in result["reason"], result
            assert result["status"] == "open" and e.state.value == "RUNNING"
            await e.orders.poll()
            assert cid not in e.orders.live
        assert order_statuses(db, cid)[-1] == "filled"
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_an_open_order_the_venue_has_lost_ends_after_the_settle_window_and_three_lookups(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            fx.expire(cid)  # the venue has dropped it: in no list of its open orders,
            fx.fault(GET_ORDER, "not_found_once", times=1000)  # and lost for good by its lookups
            started = asyncio.get_running_loop().time()
            looks = await poll_until_ended(e, cid, every=0.2, at_most=100)
            waited = asyncio.get_running_loop().time() - started
        assert looks >= 3 and waited >= RECV_WINDOW_MS / 1000  # the settle window (exchange.settle_window_ms)
        assert rows(db, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,)) == [
            ("rejected", "venue no longer knows this order")]


async def test_the_kill_switch_on_an_order_in_doubt_that_executes_later_records_its_fill(tmp_path, fx):
    # The order reaches the exchange slowly: the client gives up first (in doubt), the kill switch cancels while
    # the exchange has not placed it yet ("unknown order", and the lookup does not find it), and then the exchange
    # places and fills it. Ended as cancelled, its fill would never reach the books.
    climbing(fx)
    # The client waits 0.4 s; the exchange takes the order 1.3 s after it was signed, inside its 1.5 s receive
    # window (a request older than that it would refuse).
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600}, exchange={"timeout_ms": 400})
    db = settings.db_path
    fx.fault(POST_ORDER, "slow", seconds=1.3)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await in_doubt(e, cid)
            await e.halt()
            assert e.state.value == "HALTED"
            await wait_for(lambda: fx.orders, timeout=30, what="the exchange placing the order after all")
            await poll_until_ended(e, cid)
        assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "FILLED")]
        assert order_statuses(db, cid)[-1] == "filled"
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_a_cancelled_order_in_doubt_that_never_reached_the_exchange_ends_cancelled_and_is_never_resent(
        tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    fx.fault(POST_ORDER, "drop_before")
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await in_doubt(e, cid)
            result = await e.operator_cancel(cid)
            assert not result["cancelled"] and "not sent again" in result["reason"], result
            await poll_until_ended(e, cid)  # past the settle window, still absent: ended, not sent again
            assert e.state.value == "RUNNING"
        assert sends(fx, cid) == 1
        assert fx.orders_with(cid) == []
        assert rows(db, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,)) == [
            ("canceled", "absent at the venue")]
        assert_books_agree(e, fx)


async def test_a_fill_recorded_while_the_venue_s_balances_are_read_is_no_difference(tmp_path, fx):
    # The account's answer is taken at once and arrives 0.6 s later. Meanwhile the order's last part fills and the
    # order path records it: the balances the reconciliation then holds are older than the journal, and the open
    # orders it read show an order the journal has since closed.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            reads = len(fx.requests_to(ACCOUNT))
            fx.fault(ACCOUNT, "hang", seconds=0.6, execute=True)
            reconciling = asyncio.ensure_future(e.reconcile())
            await wait_for(lambda: len(fx.requests_to(ACCOUNT)) > reads, timeout=30, what="the balances asked for")
            fx.fill(cid)
            await e.orders.poll()
            assert cid not in e.orders.live
            assert await reconciling == [] and e.state.value == "RUNNING"
        assert_books_agree(e, fx)


async def test_a_cancel_asked_of_an_order_in_doubt_holds_across_a_restart(tmp_path, fx):
    # The operator cancels an order in doubt that the exchange does not have (yet); the engine stops before the
    # settle window has passed. The engine that starts next, running, must not send it again: it was cancelled.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    fx.fault(POST_ORDER, "drop_before")
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await in_doubt(e, cid)
            result = await e.operator_cancel(cid)
            assert not result["cancelled"] and "not sent again" in result["reason"], result
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.state.value == "RUNNING" and cid in e.orders.live
        async with engine_loop(e):
            await poll_until_ended(e, cid)  # past the settle window, still absent: ended, not sent again
    assert sends(fx, cid) == 1
    assert fx.orders_with(cid) == []
    assert rows(db, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,)) == [
        ("canceled", "absent at the venue")]


async def test_a_cancel_that_finds_its_order_in_doubt_filled_says_what_filled(tmp_path, fx):
    # The order executed and its answer was lost: the cancel learns from its lookup that it filled. The operator is
    # told what filled and at what price, as of an order that had ended before the cancel was asked (docs/cli.md).
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    fx.fault(POST_ORDER, "drop_after")
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await in_doubt(e, cid)
            first = await e.operator_cancel(cid)
            again = await e.operator_cancel(cid)
    (placed,) = fx.orders_with(cid)
    assert placed.status == "FILLED"
    for answer in (first, again):
        assert not answer["cancelled"] and answer["status"] == "filled", answer
        assert answer["reason"].startswith(f"it had filled {fmt.qty(answer['filled'])} {BTC} at "), answer
    assert first["reason"] == again["reason"]
    assert sends(fx, cid) == 1
    assert_books_agree(e, fx)


# ---------------------------------------------------------------------------------------------------- Retry-After
RETRY_AFTER_S = 5  # long enough for the next bar's decision to come inside it on a loaded machine


async def test_orders_wait_for_the_time_a_429_gave(tmp_path, fx):
    """Binance's limit on the account's new orders (429 -1015) holds orders until its Retry-After; the feed goes on,
    and the strategy's next decision inside it is refused before the journal."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx)
    db = settings.db_path
    fx.fault(POST_ORDER, "429", retry_after=RETRY_AFTER_S, code=-1015)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.market_clock.step()  # the strategy enters: refused with 429 and a Retry-After
            (limited,) = await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=30, what="the first entry")
            await wait_for(lambda: len(stored_events(db, "decision")) == 1, timeout=30, what="its decision")
            fx.market_clock.step()  # inside the wait: the strategy wants in again
            await wait_for(lambda: len(stored_events(db, "decision")) == 2, timeout=30, what="the next decision")
            await asyncio.sleep(RETRY_AFTER_S)  # past the wait the venue asked for
            fx.market_clock.step()
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the entry after the wait")

        assert limited.status == 429 and limited.fault == "429"
        posts = fx.requests_to(POST_ORDER)
        assert len(posts) == 2
        # the ordering that matters: nothing reached the venue's order route before the time it gave
        assert all(r.received >= limited.answered + RETRY_AFTER_S for r in posts[1:])
        assert [(o.client_id, o.status) for o in fx.orders] == [(posts[1].params["newClientOrderId"], "FILLED")]

        first, held, entered = stored_events(db, "decision")
        assert (first["outcome"], held["outcome"], entered["outcome"]) == ("submitted", "refused", "submitted")
        # the first was journaled and sent; the exchange refused its order, which says why
        [(status, error)] = rows(db, "SELECT status, error FROM orders WHERE client_order_id = ?",
                                 (first["client_order_id"],))
        assert first["client_order_id"] == limited.params["newClientOrderId"] and status == "rejected"
        assert error.startswith("VENUE_HOLD") and "Too many new orders" in error, error
        assert held["reason"].startswith("VENUE_HOLD") and held["client_order_id"] is None
        # the why view counts both entries refused, by the exchange's hold
        assert running.engine.entries.report()["refused"] == {"VENUE_HOLD": 2}, running.engine.entries.report()
        assert [(outcome, head, n) for outcome, head, n in await running.store.refusals_since(0)] == [
            ("refused", "VENUE_HOLD", 2)]
        # said in the audit trail (and so on the console) and in the log: the hold, and its end
        faults = [(f["kind"], f["phase"]) for f in stored_events(db, "venue_fault")]
        assert faults == [("rate_limit", "fault"), ("rate_limit", "resolved")]
        (hold,) = [f for f in stored_events(db, "venue_fault") if f["phase"] == "fault"]
        assert hold["until"] >= limited.answered + RETRY_AFTER_S and hold["venue"] == "binance"
        audit = [json.loads(line) for line in settings.audit_path.read_text().splitlines()]
        assert [(a["kind"], a["phase"]) for a in audit if a["event"] == "venue_fault"] == faults
        said = [line for line in running.log.getvalue().splitlines() if "venue fault" in line]
        assert len(said) == 2 and "rate_limit" in said[0] and "venue fault resolved" in said[1], said
        assert_books_agree(e, fx)


# ---------------------------------------------------------------------------------------------------- precision
async def test_order_texts_show_quantities_at_the_venues_precision(tmp_path, fx):
    # 0.01001 is a whole number of BTC steps (0.00001); that number times the step is not 0.01001 in binary
    fx.fault(POST_ORDER, "error", status=400, code=-2010, msg="Account has insufficient balance for requested "
                                                              "action.")
    async with engine_session(live_settings(tmp_path, fx), live=True) as running:
        e = running.engine
        fx.market_clock.step()
        for c in await e.feed.poll():
            await e.on_candle(c)
        await e.resume(by="test")
        placed = await e.operator_order(BTC, "buy", 0.01001)
        assert not placed["accepted"] and placed["client_order_id"], placed
        (order,) = await running.store.orders()
        assert repr(order.quantity) == "0.01001"
        assert "buy 0.01001 BTC/USDT" in order.error, order.error
        assert fx.requests_to(POST_ORDER)[0].params["quantity"] == "0.01001"


# ---------------------------------------------------------------------------------------------------- the log
async def test_the_log_has_one_line_per_venue_fault_and_one_per_resolution(tmp_path, fx):
    # three failures in a row: the breaker is set not to open on them, so the poll can resolve the orders
    settings = live_settings(tmp_path, fx, breaker={"failure_threshold": 10})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        fx.market_clock.step()
        for c in await e.feed.poll():
            await e.on_candle(c)
        await e.resume(by="test")
        async with engine_loop(e):
            fx.fault(POST_ORDER, "429", retry_after=0)  # refused, not placed: nothing to resolve later
            refused = await e.operator_order(BTC, "buy", 0.001)
            fx.fault(POST_ORDER, "drop_after")  # placed and filled, the answer lost: found by the poll
            lost = await e.operator_order(BTC, "buy", 0.001)
            fx.fault(POST_ORDER, "5xx_not_executed")  # not placed, the answer a 503: sent again after the window
            absent = await e.operator_order(BTC, "buy", 0.001)
            await wait_for(lambda: not e.orders.live, timeout=30, what="both orders in doubt resolved")
        assert not refused["accepted"] and lost["accepted"] and absent["accepted"]
        assert [(o.client_id, o.status) for o in fx.orders] == [(lost["client_order_id"], "FILLED"),
                                                                (absent["client_order_id"], "FILLED")]
        said = [line for line in running.log.getvalue().splitlines() if "venue fault" in line]
        faults = [line for line in said if "venue fault resolved" not in line]
        resolved = [line for line in said if "venue fault resolved" in line]
        assert len(faults) == 3 and len(resolved) == 2, said
        assert "refused" in faults[0] and "in_doubt" in faults[1] and "in_doubt" in faults[2]
        assert all("filled" in line for line in resolved)
        recorded = stored_events(db, "venue_fault")
        per_order = {placed["client_order_id"] or "": [(f["kind"], f["phase"]) for f in recorded
                                                       if f["client_order_id"] == placed["client_order_id"]]
                     for placed in (lost, absent)}
        assert per_order == {lost["client_order_id"]: [("in_doubt", "fault"), ("in_doubt", "resolved")],
                             absent["client_order_id"]: [("in_doubt", "fault"), ("in_doubt", "resolved")]}
        assert [(f["kind"], f["phase"]) for f in recorded][0] == ("refused", "fault") and len(recorded) == 5
        assert_books_agree(e, fx)


# ---------------------------------------------------------------------------------------------------- fresh start
async def test_a_fresh_start_measures_drawdown_from_the_accounts_own_equity(tmp_path):
    # an account smaller than venue.starting_cash (the paper default, 10,000): its equity is the start of the
    # books, not a 90 % drawdown
    async with FakeBinance(balances={"USDT": 1_000.0, "BTC": 0.0}) as small:
        small.market_clock = MarketClock()
        climbing(small)
        async with engine_session(strategy_settings(tmp_path, small), live=True) as running:
            e, db = running.engine, running.store.path
            assert e.portfolio.drawdown_pct() == 0.0 and e.portfolio.cash == 1_000.0
            async with engine_loop(e):
                small.market_clock.step()
                await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the strategy's entry")
            assert e.state.value == "RUNNING"
            assert not [s for s in stored_events(db, "engine_state") if s["by"] == "risk"]
            assert_books_agree(e, small)


# ---------------------------------------------------------------------------------------------------- dust
async def test_the_coins_a_fee_leaves_after_an_exit_do_not_keep_the_strategy_out(tmp_path, fx):
    # The buy's fee is taken in BTC, so the position holds a little less than the order bought; the exit sells it
    # down to the venue's step, and less than a step stays in the account: as in the books, but not a position
    # the strategy holds. The next BUY enters again (on a new entry decision) rather than saying in_position, and
    # no exit is tried on the dust, which the venue cannot sell.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, risk={"take_profit_atr": 0.3})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        for _ in range(12):
            await next_bar(e, fx)
            if [o.side for o in fx.orders][:3] == ["BUY", "SELL", "BUY"]:
                break
        assert [o.side for o in fx.orders][:3] == ["BUY", "SELL", "BUY"], [(o.side, o.status) for o in fx.orders]
        assert_books_agree(e, fx)
        entries = [r[0] for r in rows(db, "SELECT decision_id FROM orders WHERE side = 'buy' ORDER BY created_ts")]
        assert len(set(entries)) == len(entries) >= 2
        assert e.portfolio.positions[BTC].entry_decision_id == entries[-1]
        assert not [ev for ev in stored_events(db, "order") if ev["status"] == "refused"]


def leave_above_a_step_below_min_notional(e, fx: FakeBinance) -> None:
    """The next sell fills all but 0.0001 BTC (ten steps, about 3.6 USDT: under the fake's 5 USDT minimum order
    value), and the rest expires."""
    order_qty = math.floor(e.portfolio.positions[BTC].quantity / 0.00001 + 1e-9) * 0.00001
    fx.partial_fill_next((order_qty - 0.0001) / order_qty, rest="expire")


async def sell_to_dust(e, fx: FakeBinance) -> None:
    """Bars until the strategy's entry and its take-profit, which leaves coins worth less than the venue takes; the
    engine is paused after the entry (exits go on), so that no new entry holds the dust meanwhile."""
    for _ in range(12):
        await next_bar(e, fx)
        if BTC in e.portfolio.positions and not e.orders.live and len(fx.orders) == 1:
            leave_above_a_step_below_min_notional(e, fx)
            await e.pause()
        if len(fx.orders) == 2 and not e.orders.live:
            break
    assert [(o.side, o.status) for o in fx.orders] == [("BUY", "FILLED"), ("SELL", "EXPIRED")]
    left = e.portfolio.positions[BTC].quantity
    assert 0.0001 <= left and left * e.portfolio.last_price[BTC] < 5.0, left


async def test_coins_left_below_the_venue_s_minimum_order_value_are_dust_not_a_position(tmp_path, fx):
    # A sell fills all but more than one step, and the rest expires: what is left is worth less than the exchange
    # takes an order for (its minimum notional), so no order can ever sell it. It is dust, as less than a step is:
    # no stop-loss or take-profit tries to sell it, it does not hold a place under MAX_OPEN_POSITIONS, `ctl status`
    # counts no position, a close says what it is, and the strategy enters again over it.
    climbing(fx)
    tables = {"risk": {"take_profit_atr": 0.3, "max_open_positions": 1}}
    settings = controlled_settings(tmp_path, fx, **tables)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        await sell_to_dust(e, fx)
        status = await run_ffe_async(tmp_path, "ctl", "status", env=live_env(fx), name="status")
        assert status.proc.returncode == 0, status.stderr
        assert "positions 0 " in status.stdout and "dust 1" in status.stdout, status.stdout
        trades = await run_ffe_async(tmp_path, "ctl", "trades", env=live_env(fx), name="trades")
        assert trades.proc.returncode == 0, trades.stderr
        (row,) = [line.split() for line in trades.stdout.splitlines() if BTC in line]
        assert row[2] == "dust" and row[-2:] == ["-", "-"], row  # no stop-loss or take-profit is watched for dust
        close = await run_ffe_async(tmp_path, "ctl", "close", BTC, "--yes", env=live_env(fx), name="close")
        assert close.proc.returncode == 1
        assert "below the venue's minimum" in close.stderr and "left as dust" in close.stderr, close.stderr
        for _ in range(3):  # paused: no entry, and no order tried on the dust
            await next_bar(e, fx)
        assert len(fx.orders) == 2
        await e.resume()
        for _ in range(6):
            await next_bar(e, fx)
            if len(fx.orders) == 3:
                break
        assert [o.side for o in fx.orders] == ["BUY", "SELL", "BUY"], [(o.side, o.status) for o in fx.orders]
        await wait_for(lambda: not e.orders.live, timeout=30, what="the new entry final")
        assert_books_agree(e, fx)  # the new position holds the dust too
        assert not [ev for ev in stored_events(db, "order") if ev["status"] == "refused"]


async def test_a_close_of_dust_asked_for_the_position_shown_says_it_is_dust(tmp_path, fx):
    # The console's close key and `ffe ctl close` at a terminal name the position shown by its opening time. Dust
    # keeps that time: the close is refused as dust, not as a position "no longer open" while its row is still there.
    climbing(fx)
    tables = {"risk": {"take_profit_atr": 0.3, "max_open_positions": 1}}
    settings = controlled_settings(tmp_path, fx, **tables)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await sell_to_dust(e, fx)
        (dust,) = [p for p in e.snapshot()["positions"] if p["symbol"] == BTC]
        assert dust["dust"], dust
        with pytest.raises(FfeError) as refused:
            await e.close_position(BTC, by="operator", opened_ts=dust["opened_ts"])
        said = str(refused.value)
        assert "below the venue's minimum order: left as dust" in said and "no longer open" not in said, said
        assert len(fx.orders) == 2  # nothing was sent for it


async def test_a_flatten_leaves_dust_below_the_venue_s_minimum_and_says_so(tmp_path, fx):
    climbing(fx)
    tables = {"risk": {"take_profit_atr": 0.3}}
    settings = controlled_settings(tmp_path, fx, **tables)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        await sell_to_dust(e, fx)
        flat = await run_ffe_async(tmp_path, "ctl", "flatten", "--yes", env=live_env(fx), name="flatten")
        assert flat.proc.returncode == 0, flat.stderr
        assert "failed 0" in flat.stdout and "closing 0" in flat.stdout, flat.stdout
        assert f"{BTC} " in flat.stdout and "left as dust" in flat.stdout, flat.stdout
        assert len(fx.orders) == 2  # nothing was sent for it
        (kill,) = [ev for ev in stored_events(db, "kill_switch") if ev["action"] == "flatten"]
        assert kill["failed"] == []
        assert e.state.value == "HALTED"  # as every flatten ends
        assert not [ev for ev in stored_events(db, "order") if ev["status"] == "refused"]



# ---------------------------------------------------------------------------------------------------- balances
async def test_the_balances_show_what_a_foreign_order_locks_as_the_exchange_says(tmp_path, fx):
    # An order placed at the exchange by someone else holds 200 USDT back: the balances view shows them locked, as
    # the exchange's balance answer says, not free as the engine's own orders alone would have it.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        other = binance_client(fx)
        try:
            await other.create_order(BTC, "limit", "buy", 0.01, 20_000.0, {"clientOrderId": "by-hand-1"})
        finally:
            await other.close()
        usdt = next(r for r in (await running.engine.balances())["assets"] if r["asset"] == "USDT")
        assert usdt["locked"] == pytest.approx(200.0) and usdt["total"] == pytest.approx(fx.balances["USDT"].total)
        assert usdt["free"] == pytest.approx(fx.balances["USDT"].free)

# ---------------------------------------------------------------------------------------------------- fees
def venue_fees(fx: FakeBinance) -> float:
    """What the fake charged, valued in USDT (a fee in BTC at its trade's price)."""
    return sum(t.commission * (t.price if t.commission_asset == "BTC" else 1.0) for o in fx.orders for t in o.trades)


def assert_fees_charged_once(db, fx: FakeBinance) -> None:
    (fee, quantity), = rows(db, "SELECT SUM(fee), SUM(quantity) FROM fills")
    assert quantity == pytest.approx(sum(o.filled for o in fx.orders), abs=1e-12)
    assert fee == pytest.approx(venue_fees(fx), abs=1e-6)


@pytest.mark.parametrize("answer", ["RESULT", "ACK"])
async def test_an_order_answer_without_its_fills_is_charged_its_fee(tmp_path, fx, answer):
    # Asked for the RESULT answer, Binance says how much filled and for how much, not the fills with their fees;
    # for ACK, only the order's ids. The fee (taken in BTC from a buy) is then learned from the order's trades
    # before the fill is recorded: the position is what the account holds, not what was bought.
    climbing(fx)
    settings = answer_settings(tmp_path, fx, answer)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.market_clock.step()
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the strategy's entry filled")
        (post,) = fx.requests_to(POST_ORDER)
        assert post.params["newOrderRespType"] == answer and [o.status for o in fx.orders] == ["FILLED"]
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_an_order_whose_fees_cannot_be_read_yet_is_recorded_open_and_its_fill_later_with_the_fee(tmp_path, fx):
    # The RESULT answer shows the fill without its fees, and the order's trades cannot be read for a while (longer
    # than the answer's own reads retry): the order is recorded as placed, not in doubt (the venue answered), and
    # the fill is recorded with its fee once the trades can be read.
    climbing(fx)
    settings = answer_settings(tmp_path, fx, engine={"order_poll_s": 0.2})
    db = settings.db_path
    fx.fault(MY_TRADES, "5xx_not_executed", times=8)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the fill, with its fee")
        assert fx.pending_faults(MY_TRADES) == 0
        statuses = order_statuses(db, cid)
        assert statuses[0] == "new" and statuses[-1] == "filled" and "in_doubt" not in statuses, statuses
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_an_order_whose_trades_lag_its_fill_is_charged_the_whole_fee(tmp_path, fx):
    # The RESULT answer shows the order filled; the trades, read for its fees, come from a replica that does not
    # have the fill's trade yet. Fees summed from them would be short of what the venue took, for good: the order is
    # filled, never looked up again. Trades that do not add up to the fill are not yet the order's fees.
    climbing(fx)
    settings = answer_settings(tmp_path, fx, engine={"order_poll_s": 0.2})
    db = settings.db_path
    fx.fault(MY_TRADES, "stale")
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the fill, with its fee")
        assert fx.pending_faults(MY_TRADES) == 0
        assert "in_doubt" not in order_statuses(db, cid)
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


def answers_without_the_cost(tmp_path, fx: FakeBinance):
    """Settings for the strategy's entry on the climb, on an exchange whose answers to the new order and to its
    lookups say how much filled but not for how much (no quote amount, no fills)."""
    climbing(fx)
    fx.fault(POST_ORDER, "no_cost")
    fx.fault(GET_ORDER, "no_cost", times=1000)
    return strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.2})


def assert_bought_at_the_exchange_s_price(e, fx: FakeBinance) -> None:
    (order,) = fx.orders
    assert e.portfolio.positions[BTC].entry_price == pytest.approx(order.quote_filled / order.filled)


async def test_a_fill_answered_without_its_price_is_booked_at_the_price_of_its_trades(tmp_path, fx):
    # The order's trades say what the answers do not. A fill booked without its price would cost nothing: coins
    # bought for free in the books.
    settings = answers_without_the_cost(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_order(fx)
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the fill")
        assert fx.pending_faults(POST_ORDER) == 0
        assert_bought_at_the_exchange_s_price(e, fx)
        assert_fees_charged_once(settings.db_path, fx)
        assert_books_agree(e, fx)


async def test_a_market_order_acknowledged_then_filled_is_booked_once_at_its_fill_price(tmp_path, fx):
    # Some exchanges acknowledge a market order before they fill it: the answer says open, nothing filled. The
    # order stays open in the journal, nothing is booked and nothing is sent again; the fill, at whatever price it
    # came at, is booked once, from a later lookup.
    climbing(fx)
    fx.fault(POST_ORDER, "fill_later", seconds=1.5)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.2})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await wait_for(lambda: cid in e.orders.live and e.orders.live[cid].status.value == "open", timeout=30,
                           what="the order open in the journal")
            assert BTC not in e.portfolio.positions
            fx.set_price("BTCUSDT", fx.prices["BTCUSDT"] * 1.01)  # the market moves before it fills
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the fill, later")
            await wait_for(lambda: cid not in e.orders.live, timeout=30, what="the order final")
        (order,) = fx.orders
        assert order.status == "FILLED" and len(order.trades) == 1
        assert len(fx.requests_to(POST_ORDER)) == 1  # sent once
        assert_bought_at_the_exchange_s_price(e, fx)
        assert rows(settings.db_path, "SELECT COUNT(*) FROM fills") == [(1,)]
        assert_fees_charged_once(settings.db_path, fx)
        assert_books_agree(e, fx)
        assert order_statuses(settings.db_path, cid)[-1] == "filled"


@pytest.mark.parametrize("answer", ["FULL", "RESULT"])
async def test_a_buy_charged_its_fee_in_the_quote_currency_holds_every_coin_bought(tmp_path, fx, answer):
    # An exchange that takes a buy's fee from the cash, not from the coins: the position is every coin bought and
    # the fee comes out of the cash, whether the answer carries the fills (FULL) or the fee is read from the
    # order's trades (RESULT).
    climbing(fx)
    fx.buy_fee_in_quote = True
    settings = answer_settings(tmp_path, fx, answer)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
        (order,) = fx.orders
        assert order.trades[0].commission_asset == "USDT"
        assert e.portfolio.positions[BTC].quantity == pytest.approx(order.filled, abs=1e-12)
        assert_bought_at_the_exchange_s_price(e, fx)
        assert_fees_charged_once(settings.db_path, fx)
        assert_books_agree(e, fx)


async def test_each_fill_of_an_order_is_recorded_as_the_exchange_s_amount(tmp_path, fx):
    # A fill is what an answer shows filled beyond what was recorded: taken as a difference of two floats it would
    # be 0.013819999999999999 BTC for a trade of 0.01382. The journal holds the exchange's amounts as they are.
    settings = live_settings(tmp_path, fx, engine={"order_poll_s": 0.2})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        await next_bar(e, fx)
        await e.resume(by="test")
        fx.partial_fill_next(0.5)
        bought = await e.operator_order(BTC, "buy", 0.02763)
        assert bought["accepted"], bought
        order = fx.fill(bought["client_order_id"])  # the rest, at the exchange, found by the engine's poll
        async with engine_loop(e):
            await wait_for(lambda: not e.orders.live, timeout=30, what="the order's second fill")
        assert [t.qty for t in order.trades] == [0.01381, 0.01382]
        assert [q for q, in rows(db, "SELECT quantity FROM fills ORDER BY id")] == [0.01381, 0.01382]
        assert_books_agree(e, fx)


@pytest.mark.parametrize("answer", ["FULL", "RESULT", "ACK"])
async def test_market_orders_that_walk_the_book_are_booked_at_their_average_with_every_fee(tmp_path, fx, answer):
    # On a thin book a market order fills in several trades, each at its own price with its own commission: the
    # books hold what all of them bought and sold, at their average price, less every commission, whether the
    # answer lists the fills (FULL) or they are read from the order's trades (RESULT, ACK).
    climbing(fx)
    fx.book_levels = 3
    settings = answer_settings(tmp_path, fx, answer)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            (entry,) = fx.orders
            assert len(entry.trades) == 3 and len({t.price for t in entry.trades}) == 3
            assert_bought_at_the_exchange_s_price(e, fx)
            closed = await e.close_position(BTC, by="test")
            assert closed["accepted"], closed
            await wait_for(lambda: e.portfolio.holding(BTC) is None and not e.orders.live, timeout=30,
                           what="the position closed (less than a step, the buy's fee in coins, stays)")
        exit_ = fx.orders[1]
        assert exit_.side == "SELL" and exit_.status == "FILLED" and len(exit_.trades) == 3
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)
        (sold,) = rows(db, "SELECT quantity, price FROM fills WHERE side = 'sell'")
        assert sold == (pytest.approx(exit_.filled, abs=1e-12), pytest.approx(exit_.quote_filled / exit_.filled))


@pytest.mark.parametrize("answer", ["FULL", "RESULT"])
async def test_fees_paid_in_the_exchange_s_token_leave_the_books_the_account_s_and_are_said(tmp_path, fx, answer):
    # With Binance's BNB fee payment every commission comes from the account's BNB, which the books do not hold:
    # the coins and the cash are the account's to the cent, and the operator reads once that those fees are not
    # in the books' P&L.
    climbing(fx)
    fx.fee_asset = "BNB"
    fx.balances["BNB"] = Balance(1.0)
    settings = answer_settings(tmp_path, fx, answer)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            assert e.portfolio.positions[BTC].quantity == pytest.approx(fx.orders[0].filled, abs=1e-12)
            closed = await e.close_position(BTC, by="test")
            assert closed["accepted"], closed
            await wait_for(lambda: BTC not in e.portfolio.positions and not e.orders.live, timeout=30,
                           what="the position closed")
        assert [t.commission_asset for o in fx.orders for t in o.trades] == ["BNB", "BNB"]
        assert fx.balances["BNB"].total < 1.0
        assert_books_agree(e, fx)
        said = [line for line in running.log.getvalue().splitlines() if "fees paid in BNB" in line]
        assert len(said) == 1 and "left out of the books" in said[0], said


@pytest.mark.parametrize("answer", ["RESULT", "no_cost"])
async def test_an_exchange_without_order_trades_charges_the_fee_from_the_account_s_trades(tmp_path, fx, answer):
    # An exchange that cannot list one order's trades but lists the account's: the fee (and, where the answers do
    # not say it, the price) of a fill comes from the account's trades of that order since it was placed, not
    # left out.
    if answer == "no_cost":
        settings = answers_without_the_cost(tmp_path, fx)
    else:
        climbing(fx)
        settings = answer_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        e.venue.exchange.has["fetchOrderTrades"] = False
        async with engine_loop(e):
            await strategy_entry(e, fx)
        asked = fx.requests_to("GET /api/v3/myTrades")
        assert asked and all("orderId" not in r.params and "startTime" in r.params for r in asked), asked
        assert_bought_at_the_exchange_s_price(e, fx)
        assert_fees_charged_once(settings.db_path, fx)
        assert_books_agree(e, fx)


async def test_a_fill_whose_price_cannot_be_read_is_not_booked_until_it_can(tmp_path, fx):
    # An exchange whose order trades cannot be asked for either: how much filled is known, for how much is not.
    # Nothing is booked (it would be coins for nothing) until an answer says.
    settings = answers_without_the_cost(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        e.venue.exchange.has["fetchOrderTrades"] = False
        e.venue.exchange.has["fetchMyTrades"] = False
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await wait_for(lambda: len(fx.requests_to(GET_ORDER)) >= 3, timeout=30, what="three lookups")
            assert BTC not in e.portfolio.positions and cid in e.orders.live
            assert rows(settings.db_path, "SELECT COUNT(*) FROM fills") == [(0,)]
            fx.clear_faults(GET_ORDER)  # the answers say what it cost again
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the fill, once priced")
        assert_bought_at_the_exchange_s_price(e, fx)
        assert rows(settings.db_path, "SELECT COUNT(*) FROM fills") == [(1,)]


async def test_a_fill_first_seen_in_a_cancel_answer_is_charged_its_fee(tmp_path, fx):
    # The entry fills in part and rests; more of it fills at the venue between the engine's polls; the operator
    # cancels it, and the cancel's answer is where the engine first sees that fill. Binance's cancel answer says
    # how much filled, never the fees.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid, order = await filled_further_at_the_venue(e, fx)
            result = await e.operator_cancel(cid)
        assert result["cancelled"] and result["filled"] == pytest.approx(order.filled, abs=1e-12)
        assert [(o.status, len(o.trades)) for o in fx.orders] == [("CANCELED", 2)]
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


async def test_a_cancel_the_exchange_carried_out_while_the_order_s_trades_lag_is_reported_cancelled(tmp_path, fx):
    # The exchange cancels the order; the trades read for the answer's fees lack the fill just made, so the order
    # stays in flight until they show. The operator is told what happened at the exchange (cancelled), not "still
    # open", and so is the kill switch's report: an order that will not trade again is not a failed cancel.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid, order = await filled_further_at_the_venue(e, fx)
            fx.fault(MY_TRADES, "stale")
            result = await e.operator_cancel(cid)
            assert result["cancelled"] and "trades" in result["reason"], result
            assert await poll_until_ended(e, cid) < 50
        assert [(o.status, len(o.trades)) for o in fx.orders] == [("CANCELED", 2)]
        assert order_statuses(db, cid)[-1] == "canceled"
        assert_books_agree(e, fx)


async def test_the_kill_switch_counts_a_cancel_whose_trades_lag_as_cancelled(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid, order = await filled_further_at_the_venue(e, fx)
            fx.fault(MY_TRADES, "stale")
            report = await e.halt(by="test")
            assert report.failed == [] and cid in report.cancelled, (report.failed, report.cancelled)
            assert await poll_until_ended(e, cid) < 50
        assert [o.status for o in fx.orders] == ["CANCELED"]
        assert_books_agree(e, fx)


async def test_a_cancel_answer_whose_trades_lag_its_fill_is_charged_the_whole_fee(tmp_path, fx):
    # As above, and the trades read for the cancel answer's fees lack the fill just made: the order is not ended on
    # that answer (the fill beyond its trades would be dropped with its fee), and the next poll ends it with both.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid, order = await filled_further_at_the_venue(e, fx)
            fx.fault(MY_TRADES, "stale")
            await e.operator_cancel(cid)
            assert await poll_until_ended(e, cid) < 50
        assert [(o.status, len(o.trades)) for o in fx.orders] == [("CANCELED", 2)]
        assert order_statuses(db, cid)[-1] == "canceled"
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)


# ------------------------------------------------------------------------------ answers that are not what was asked
# A gateway or a CDN in front of the exchange can answer HTTP 200 with its own page, or `{}`: ccxt then returns
# what it parsed of nothing, an order or a balance made of defaults. Read as the venue's word, it ends orders and
# empties accounts that are neither.

GET_OPEN_ORDERS = "GET /api/v3/openOrders"


@pytest.mark.parametrize("answer", ["page_200", "empty_200"])
async def test_a_cancel_answered_with_a_page_is_not_taken_for_done_and_the_order_s_later_fill_is_booked(
        tmp_path, fx, answer):
    """The kill switch cancels the strategy's entry, filled in part and resting; the exchange's cancel is answered
    with a page and never reached it. The order is not ended cancelled on that answer: once the rest fills at the
    exchange, the whole fill is in the books, which equal the exchange's."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            fx.fault(DELETE_ORDER, answer, execute=False, times=10_000)
            await e.halt()
            assert fx.open_order(cid) is not None  # still open at the exchange
            fx.fill(cid)
            await poll_until_ended(e, cid)
        assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "FILLED")]
        assert "canceled" not in order_statuses(db, cid), order_statuses(db, cid)
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        assert_books_agree(e, fx)


async def test_an_entry_in_doubt_is_not_sent_again_while_the_balance_is_answered_with_a_page(tmp_path, fx):
    """The strategy's buy is placed and filled, its answer lost, and the lookups lag past the settle window: the
    balance is what keeps a repeat back (the id is free again once the first has filled), and it is answered with
    a page. A balance that could not be read shows nothing either way: the order is not sent again."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.fault(POST_ORDER, "drop_after")
            fx.fault(GET_ORDER, "stale", seconds=4 * RECV_WINDOW_MS / 1000, times=10_000)
            fx.fault(GET_ACCOUNT, "page_200", times=10_000)
            fx.market_clock.step()
            (sent,) = await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=30, what="the strategy's entry")
            cid = sent.params["newClientOrderId"]
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the entry found filled")
        assert len(fx.requests_to(POST_ORDER)) == 1, [(r.status, r.fault) for r in fx.requests_to(POST_ORDER)]
        assert [(o.client_id, o.side, o.status) for o in fx.orders] == [(cid, "BUY", "FILLED")]
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        assert_books_agree(e, fx)


async def test_a_live_start_whose_open_orders_are_answered_once_with_a_page_reads_them_again(tmp_path, fx):
    """The open orders answered once with a page as the live engine starts: an answer that could not be read, asked
    again, never a traceback."""
    fx.fault(GET_OPEN_ORDERS, "page_200")
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert [r.fault for r in fx.requests_to(GET_OPEN_ORDERS)][:2] == ["page_200", None]
        assert await e.reconcile() == []
        assert_books_agree(e, fx)


async def test_a_live_start_whose_account_is_answered_with_a_page_does_not_start_on_an_empty_account(tmp_path, fx):
    """The account answered with a page (not a balance list) at every read as the live engine starts: the start
    stops, nothing sent, and says the exchange did not answer; it never starts with cash 0 (then a difference
    with the exchange, and a drawdown measured from nothing)."""
    fx.fault(GET_ACCOUNT, "page_200", times=10_000)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    with pytest.raises(FfeError) as failed:
        async with engine_session(settings, live=True):
            pass
    assert failed.value.exit_code == 1 and "balance" in str(failed.value), str(failed.value)
    assert fx.requests_to(POST_ORDER) == []


async def test_a_flatten_closes_the_position_an_entry_in_doubt_at_that_moment_opens_after_it(tmp_path, fx):
    """The strategy's buy is placed and filled, its answer lost, and the exchange's lookups do not show it for a
    while: the operator's flatten finds no position, and its cancel finds no order. When the lookups show the buy
    filled, the position it opened is closed all the same: a flatten closes what the account holds."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.fault(POST_ORDER, "drop_after")
            fx.fault(GET_ORDER, "stale", seconds=3, times=10_000)
            cid = await strategy_order(fx)
            await in_doubt(e, cid)
            assert BTC not in e.portfolio.positions
            await e.flatten()
            assert e.state.value == "HALTED"
            await wait_for(lambda: len(fx.orders) == 2 and not fx.open_orders(), timeout=30,
                           what="the position closed at the exchange")
            await wait_for(lambda: not e.orders.live and e.portfolio.holding(BTC) is None, timeout=30,
                           what="the books closed")
        assert [(o.client_id == cid, o.side, o.status) for o in fx.orders] == [(True, "BUY", "FILLED"),
                                                                              (False, "SELL", "FILLED")]
        assert fx.balances["BTC"].total < 0.00001
        assert_books_agree(e, fx)


async def test_a_flatten_closes_what_an_entry_in_doubt_buys_over_dust_the_books_hold(tmp_path, fx):
    """As above, with dust in the symbol (coins below the venue's minimum, left by an earlier exit: common where fees
    are taken in the coin). The dust is no position, so the flatten waits for the entry in doubt all the same, and
    closes what it bought once the exchange shows it, rather than end HALTED with an unwatched position."""
    climbing(fx)
    tables = {"risk": {"take_profit_atr": 0.3, "max_open_positions": 1}, "engine": {"order_poll_s": 0.1}}
    settings = strategy_settings(tmp_path, fx, **tables)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await sell_to_dust(e, fx)
            assert BTC in e.portfolio.positions and e.portfolio.holding(BTC) is None  # dust
            await e.resume()
            fx.fault(POST_ORDER, "drop_after")
            fx.fault(GET_ORDER, "stale", seconds=3, times=10_000)
            fx.market_clock.step()
            (_, _, sent) = await wait_for(lambda: fx.requests_to(POST_ORDER)[2:] and fx.requests_to(POST_ORDER),
                                          timeout=30, what="the entry over the dust")
            cid = sent.params["newClientOrderId"]
            await in_doubt(e, cid)
            await e.flatten()
            assert e.state.value == "HALTED"
            await wait_for(lambda: len(fx.orders) == 4 and not fx.open_orders(), timeout=30,
                           what="the position closed at the exchange")
            await wait_for(lambda: not e.orders.live and e.portfolio.holding(BTC) is None, timeout=30,
                           what="the books closed")
        assert [(o.side, o.status) for o in fx.orders][2:] == [("BUY", "FILLED"), ("SELL", "FILLED")]
        assert_books_agree(e, fx)


async def test_a_flatten_gets_out_after_the_exchange_changed_its_amount_step_while_running(tmp_path, fx, monkeypatch):
    """The exchange's amount step for BTC grows a hundredfold while a position is held (Binance changes its filters
    now and then): a sale of the position as the books hold it is refused ("Filter failure: LOT_SIZE"). The
    engine reads the markets again on that refusal, and the flatten's next attempt sells what the new step allows;
    what is left below it is dust, and the books equal the exchange's."""
    from fake_exchange import LISTINGS

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            await strategy_entry(e, fx)
            monkeypatch.setitem(LISTINGS["BTCUSDT"], "step", "0.001")
            monkeypatch.setitem(LISTINGS["BTCUSDT"], "min_qty", "0.001")
            report = await e.flatten()
            await wait_for(lambda: not e.orders.live, timeout=30, what="the closing order ended")
            await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=30, what="the position closed")
        assert report["failed"] == [], report
        assert fx.balances["BTC"].total < 0.001
        assert [o.status for o in fx.orders if o.side == "SELL"][-1] == "FILLED"
        assert_books_agree(e, fx)


async def test_a_position_made_dust_by_a_raised_minimum_is_a_position_again_once_the_exchange_lowers_it(
        tmp_path, fx, monkeypatch):
    """The exchange raises its minimum order value while a position is held: the position's sale is refused
    ("Filter failure: NOTIONAL"), the markets are read again, and what is held is below the minimum: dust, watched
    by no stop-loss. When the exchange lowers the minimum again, the engine finds out at its next reconciliation
    (it reads the markets again while it holds dust), and the position is a position again: a flatten closes it."""
    from fake_exchange import LISTINGS

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1, "reconcile_interval_s": 0.5})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            monkeypatch.setitem(LISTINGS["BTCUSDT"], "min_notional", "1000000000")
            refused = await e.close_position(BTC, by="test")
            assert not refused.get("accepted"), refused
            await wait_for(lambda: e.portfolio.holding(BTC) is None, timeout=30, what="the position made dust")
            monkeypatch.setitem(LISTINGS["BTCUSDT"], "min_notional", "5")
            await wait_for(lambda: e.portfolio.holding(BTC) is not None, timeout=30,
                           what="the position again, the minimum lowered")
            report = await e.flatten()
            await wait_for(lambda: not e.orders.live, timeout=30, what="the closing order ended")
        assert report["failed"] == [] and e.portfolio.holding(BTC) is None, report
        assert fx.balances["BTC"].total < 1e-4
        assert_books_agree(e, fx)


async def sold_by_hand(e, fx: FakeBinance, share: float) -> float:
    """The strategy's entry, settled; then `share` of its coins sold on the exchange by hand, not through ffe, and
    found by reconciliation as a difference in the position. The books' quantity before."""
    from live_helpers import reconcile_until

    await strategy_entry(e, fx)
    await wait_for(lambda: not e.orders.live, timeout=30, what="the entry settled")
    held = e.portfolio.positions[BTC].quantity
    sold = round(held * share, 5)
    fx.balances["BTC"].free -= sold
    fx.balances["USDT"].free += sold * 30_000.0
    await reconcile_until(e, a_difference_of("position"), "the coins sold by hand found")
    return held


async def test_an_accept_is_refused_when_the_exchange_holds_fewer_coins_than_the_position(tmp_path, fx):
    """The operator sells half the position's coins on the exchange by hand. Accepting the venue as it is would
    leave the books holding a position with no coins behind it: its value counted in the equity (and in every
    size), its exits refused for insufficient funds at every bar. The accept is refused, naming the symbol and
    what each side holds; nothing changes (the engine stays PAUSED). Coins beyond the position (a deposit) are
    accepted as before."""
    from ffe_engine.engine import ControlError
    from ffe_engine.model import EngineState
    from ffe_engine.reconcile import BASELINE_KEY

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            baseline = await e.store.get_kv(BASELINE_KEY)
            held = await sold_by_hand(e, fx, 0.5)
            assert e.state is EngineState.PAUSED
            with pytest.raises(ControlError, match=r"fewer coins than the books' BTC/USDT position"):
                await e.accept_reconcile(by="test")
            assert e.state is EngineState.PAUSED and await e.store.get_kv(BASELINE_KEY) == baseline
            assert e.portfolio.positions[BTC].quantity == held


async def resumed_and_flattened(e) -> dict:
    """The engine resumed after an accept, then flattened; the flatten's report once its closing order has ended."""
    from ffe_engine.model import EngineState

    assert await e.resume(by="test") is EngineState.RUNNING
    report = await e.flatten()
    await wait_for(lambda: not e.orders.live, timeout=30, what="the closing order ended")
    return report


def assert_the_account_sold_whole(e, fx: FakeBinance, report: dict) -> None:
    """The flatten's closing order sold what the account held (the exchange took it, nothing of it is left), and
    what is left in the books has no coins behind it: dust."""
    sells = [o for o in fx.orders if o.side == "SELL"]
    assert report["failed"] == [] and sells and sells[-1].status == "FILLED", (report, sells)
    assert fx.balances["BTC"].total < 1e-4
    assert e.portfolio.holding(BTC) is None


async def test_after_accepting_a_small_shortfall_of_coins_an_exit_sells_what_the_account_holds(tmp_path, fx):
    """The account holds a little less than the books' position (under 1%: a fee taken in the coin that a settled
    order did not say, a transfer): the accept takes it, and from then on an exit sells what the account holds of
    the position, not the books' whole quantity, which the exchange would refuse at every bar. What is left in the
    books with no coins behind it is dust."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await sold_by_hand(e, fx, 0.005)
            await e.accept_reconcile(by="test")
            report = await resumed_and_flattened(e)
        assert_the_account_sold_whole(e, fx, report)
        rejected = rows(running.store.path, "SELECT COUNT(*) FROM orders WHERE side = 'sell' AND status = 'rejected'")
        assert rejected == [(0,)], rejected


async def test_a_reconciliation_while_an_accepted_shortfall_is_being_stored_leaves_the_exit_selling_what_is_held(
        tmp_path, fx, monkeypatch):
    """A reconciliation that reads the stored baseline while an accept of a small shortfall of coins is still
    being written reads the baseline the accept replaces, which has no shortfall. Its books took that one over
    the accept's, and kept it once the accept was stored: the exits after the accept sold the books' whole
    quantity, more than the account holds, and the exchange refused them (until a later reconciliation took the
    stored baseline again). The books take the accepted shortfall once it is stored, whatever ran meanwhile."""
    from ffe_engine.reconcile import BASELINE_KEY

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await sold_by_hand(e, fx, 0.005)
            writing, stored = asyncio.Event(), asyncio.Event()
            put_kvs = running.store.put_kvs

            async def held_while_the_baseline_is_written(books, *args, **kwargs):
                if BASELINE_KEY in books:
                    writing.set()
                    await stored.wait()
                return await put_kvs(books, *args, **kwargs)

            monkeypatch.setattr(running.store, "put_kvs", held_while_the_baseline_is_written)
            accepting = asyncio.ensure_future(e.accept_reconcile(by="test"))
            await asyncio.wait_for(writing.wait(), 30)
            await e.reconcile()  # reads the stored baseline, the one being replaced
            stored.set()
            await asyncio.wait_for(accepting, 30)
            report = await resumed_and_flattened(e)
        assert_the_account_sold_whole(e, fx, report)


async def test_the_kill_switch_cancels_at_the_exchange_while_its_halted_is_still_being_stored(tmp_path, fx,
                                                                                                 monkeypatch):
    """The kill switch takes effect at once: HALTED in memory, and the cancels sent to the exchange, while the
    record of HALTED waits on a disk that hangs (a frozen or failing log disk). An order left open until the disk
    answers would fill meanwhile."""
    from ffe_engine.model import EngineState

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            disk = HungDisk(monkeypatch, running.store, "set_engine_state")
            halting = asyncio.ensure_future(e.halt(reason="test", by="test"))
            await wait_for(lambda: fx.requests_to(DELETE_ORDER), timeout=10, what="the cancel sent to the exchange")
            assert e.state is EngineState.HALTED and not halting.done()
            assert fx.open_order(cid) is None  # cancelled there, though HALTED is not stored yet
            disk.answer()
            report = await asyncio.wait_for(halting, 30)
        assert cid in report.cancelled, report
        assert rows(settings.db_path, "SELECT state FROM engine_state") == [("HALTED",)]


async def test_a_kill_switch_s_cancel_that_outlasts_its_bound_on_a_slow_disk_still_records_its_end_and_fill(
        tmp_path, fx, monkeypatch):
    # The exchange cancels the order and its answer shows a further fill; the cancel books it (the books in memory
    # take it) and waits for a disk that hangs, past engine.cancel_timeout_s. The cancel was then cut off in the
    # middle of its write: the order's end and its fill were never recorded, the books stored with its cash, and a
    # restart charged the fill a second time.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "cancel_timeout_s": 1.0})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            fx.fill(cid, qty=round(fx.open_order(cid).remaining / 2, 5))  # filled further, not polled yet
            # (its end's write waits too: the fill may have been taken in by then, the end never)
            disk = HungDisk(monkeypatch, running.store, "set_engine_state", "add_fill", "update_order")
            halting = asyncio.ensure_future(e.halt(reason="test", by="test"))
            await wait_for(lambda: fx.requests_to(DELETE_ORDER), timeout=10, what="the cancel sent to the exchange")
            await asyncio.sleep(1.5)  # past the cancels' bound
            disk.answer()
            report = await asyncio.wait_for(halting, 30)
            # Not known to be done within its bound; or, when the kill switch met an order of the strategy on the
            # wire and answered once the cancels were answered, cancelled.
            assert [f["client_order_id"] for f in report.failed] + report.cancelled == [cid], report
            await wait_for(lambda: rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [
                ("canceled",)], timeout=30, what="the cancel's end recorded")
        (placed,) = fx.orders_with(cid)
        _, filled, booked = journaled(db, cid)
        assert filled == pytest.approx(placed.filled, abs=1e-12) and booked == pytest.approx(placed.filled, abs=1e-12)
        assert order_statuses(db, cid)[-1] == "canceled"
        assert_fees_charged_once(db, fx)
        assert_books_agree(e, fx)
    doctor = await run_ffe_async(tmp_path, "doctor", env=live_env(fx), name="doctor")
    assert doctor.proc.returncode == 0, doctor.stdout + doctor.stderr
    async with engine_session(settings, live=True) as running:  # the next start books nothing again
        assert_books_agree(running.engine, fx)


async def test_an_orderly_stop_while_a_fill_waits_for_the_disk_records_it_and_ends_in_order(tmp_path, fx,
                                                                                                monkeypatch):
    # SIGTERM while the poll books a fill whose write waits for a slow disk longer than engine.stop_timeout_s: the
    # stop cut the booking off (the books in memory held the fill, its row was never written), then stored the
    # books with its cash, or ended on a false error that the books were ahead of the records.
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.2, "stop_timeout_s": 1.0})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        run = asyncio.ensure_future(e.run())
        cid = await resting_entry(e, fx)
        disk = HungDisk(monkeypatch, running.store, "add_fill")
        before = e.portfolio.positions[BTC].quantity
        fx.fill(cid, qty=round(fx.open_order(cid).remaining / 2, 5))  # the next poll books it
        await wait_for(lambda: e.portfolio.positions[BTC].quantity > before, timeout=30, what="the fill in memory")
        e.request_stop()  # what SIGTERM does
        await asyncio.sleep(1.5)  # past engine.stop_timeout_s
        disk.answer()
        await asyncio.wait_for(run, 30)  # in order: no error
        assert e.crashed is None
    (placed,) = fx.orders_with(cid)
    _, filled, booked = journaled(db, cid)
    assert filled == pytest.approx(placed.filled, abs=1e-12) and booked == pytest.approx(placed.filled, abs=1e-12)
    assert [r["phase"] for r in stored_events(db, "run")][-1] == "stop"
    doctor = await run_ffe_async(tmp_path, "doctor", env=live_env(fx), name="doctor")
    assert doctor.proc.returncode == 0, doctor.stdout + doctor.stderr
    async with engine_session(settings, live=True) as running:  # the next start books nothing again
        assert_books_agree(running.engine, fx)


async def test_the_page_of_records_that_cannot_be_written_names_the_orders_left_open_at_the_exchange(tmp_path, fx):
    """A disk that takes no more records stops the engine HALTED without cancelling (a cancel's answer could not be
    recorded): an order open at the exchange may still fill while it is down. The RECORDS_UNWRITABLE page says so
    and names it, rather than "nothing trades"."""
    from receiver import Receiver

    from ffe_engine.errors import StorageError

    climbing(fx)
    hook = await Receiver().start()
    try:
        settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1},
                                     alerts={"webhook_url": hook.url + "/hook"})
        async with engine_session(settings, live=True) as running:
            e = running.engine
            async with engine_loop(e):
                cid = await resting_entry(e, fx)
                running.monitor.records_unwritable(StorageError("ffe.db: database or disk is full"))
                await wait_for(lambda: hook.delivered, timeout=10, what="the page")
    finally:
        await hook.stop()
    (page,) = [r.body for r in hook.delivered if r.body.get("kind") == "RECORDS_UNWRITABLE"]
    assert cid in page["text"] and "still open at the exchange" in page["text"], page["text"]
    assert "Nothing trades" not in page["text"], page["text"]


async def test_a_kill_switch_pressed_before_a_flatten_does_not_end_it_when_it_has_the_controls_after(tmp_path, fx,
                                                                                                        monkeypatch):
    """K while a close holds the controls (its order waiting on a disk that hangs), then F: the flatten gets the
    controls first, its closing order held by the exchange's Retry-After, and the K's halt comes after it. That halt
    must not end the flatten the operator asked for later: its position is closed once the hold is over."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await resting_entry(e, fx)
            disk = HungDisk(monkeypatch, running.store, "journal_order")
            fx.fault(DELETE_ORDER, "slow", seconds=2.0)
            closing = asyncio.ensure_future(e.close_position(BTC, by="test"))
            await asyncio.sleep(0.2)
            pressed_k = asyncio.ensure_future(e.halt(reason="K", by="console"))
            await asyncio.sleep(0.3)
            disk.heal("journal_order")
            fx.fault(POST_ORDER, "429", retry_after=2)
            pressed_f = asyncio.ensure_future(e.flatten(by="console"))
            await asyncio.sleep(0.2)
            disk.answer()
            await asyncio.wait_for(asyncio.gather(pressed_k, pressed_f, closing), 30)
            await wait_for(lambda: e.portfolio.holding(BTC) is None and not e.orders.live, timeout=20,
                           what="the flatten's position closed after the hold")


async def test_an_order_the_kill_switch_s_late_cancel_ended_is_in_its_report(tmp_path, fx, monkeypatch):
    """Another control holds the controls; the kill switch's cancel is answered after its time (it times out), and
    a poll's retry ends the order cancelled before the kill switch has the controls. The order open at the press is
    in its report as cancelled, not left out of it."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1, "cancel_timeout_s": 0.5})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            disk = HungDisk(monkeypatch, running.store, "journal_order")
            fx.fault(DELETE_ORDER, "slow", seconds=1.0)
            closing = asyncio.ensure_future(e.close_position(BTC, by="test"))
            await asyncio.sleep(0.2)
            pressed = asyncio.ensure_future(e.halt(reason="K", by="console"))
            await wait_for(lambda: cid not in e.orders.live, timeout=10, what="the order ended")
            disk.heal("journal_order")
            disk.answer()
            report = await asyncio.wait_for(pressed, 30)
            await asyncio.wait_for(closing, 30)
        assert cid in report.cancelled or cid in report.filled, report


async def test_two_kill_switches_pressed_at_once_cancel_an_order_once(tmp_path, fx, monkeypatch):
    """`ffe ctl halt` and SIGUSR1 in the same moment, while another control holds the controls: the open order is
    cancelled once (one DELETE), and said cancelled by one of the two reports."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_exit(e, fx)
            disk = HungDisk(monkeypatch, running.store, "journal_order")
            closing = asyncio.ensure_future(e.close_position(BTC, by="test"))
            await asyncio.sleep(0.2)
            halts = asyncio.gather(e.halt(reason="ctl", by="ctl"), e.halt(reason="SIGUSR1", by="signal"))
            await wait_for(lambda: fx.open_order(cid) is None, timeout=10, what="the order cancelled")
            disk.answer()
            first, second = await asyncio.wait_for(halts, 30)
            await asyncio.wait_for(closing, 30)
        assert len(fx.requests_to(DELETE_ORDER)) == 1, fx.requests_to(DELETE_ORDER)
        assert [cid in first.cancelled, cid in second.cancelled].count(True) == 1, (first, second)


async def test_two_entries_sent_at_once_on_a_slow_exchange_count_under_daily_trades(tmp_path, fx):
    """DAILY_TRADES of 1 and two entries asked for at once (the strategy's and the operator's, say) while the
    exchange answers slowly: the second is checked with the first counted, in flight, and refused."""
    fx.set_price("BTCUSDT", 30_000.0)
    settings = live_settings(tmp_path, fx, engine={"order_poll_s": 0.1, "live_start_paused": False},
                             exchange={"timeout_ms": 5000},
                             risk={"max_daily_trades": 1, "max_position_pct": 100, "max_concentration_pct": 100,
                                   "max_open_positions": 10, "max_var_pct": 100})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.fault(POST_ORDER, "slow", seconds=1.0, times=2)
            a, b = await asyncio.gather(e.operator_order(BTC, "buy", 0.001), e.operator_order(BTC, "buy", 0.001))
            assert [a["accepted"], b["accepted"]].count(True) == 1, (a, b)
            assert "DAILY_TRADES" in (b["reason"] if a["accepted"] else a["reason"]), (a, b)
            assert e.portfolio.entries_today == 1


async def test_the_kill_switch_cancels_at_once_while_another_control_waits_on_a_hung_disk(tmp_path, fx, monkeypatch):
    """The operator's close is under way (it holds the controls, its order waiting to be journaled on a disk that
    hangs) when the kill switch is pressed: HALTED at once, and the open order's cancel sent to the exchange then,
    not once the close and the disk are done."""
    from ffe_engine.model import EngineState

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_exit(e, fx)
            disk = HungDisk(monkeypatch, running.store, "journal_order", "set_engine_state")
            closing = asyncio.ensure_future(e.close_position(BTC, by="test"))
            await asyncio.sleep(0.2)
            halting = asyncio.ensure_future(e.halt(reason="test", by="test"))
            await wait_for(lambda: fx.requests_to(DELETE_ORDER), timeout=10, what="the cancel sent to the exchange")
            assert e.state is EngineState.HALTED and fx.open_order(cid) is None
            disk.answer()
            report = await asyncio.wait_for(halting, 30)
            await asyncio.wait_for(closing, 30)
        assert cid in report.cancelled, report
        sells = [r.params["newClientOrderId"] for r in fx.requests_to(POST_ORDER) if r.params["side"] == "SELL"]
        assert sells == [cid], "the close was sent"


async def test_the_kill_switch_says_which_open_orders_filled_before_their_cancel(tmp_path, fx, monkeypatch):
    """An order open when the kill switch is pressed can fill before its cancel reaches it (the exchange matched it
    meanwhile): HALTED, and a position the operator did not expect. The kill switch's record and its words say that
    order filled, rather than "cancelled 0 failed 0"."""
    from ffe_engine import present

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            cancel_all = e.orders.cancel_all

            async def filled_first(*args, **kwargs):
                still = fx.open_order(cid)  # matched at the exchange before the cancel (here, or by the climb on a
                if still is not None:  # slow machine)
                    fx.fill(cid, qty=still.remaining)
                await e.orders.poll()
                return await cancel_all(*args, **kwargs)

            monkeypatch.setattr(e.orders, "cancel_all", filled_first)
            report = await e.halt(reason="test", by="test")
        assert report.filled == [cid] and report.cancelled == [], report
    (event,) = stored_events(settings.db_path, "kill_switch")
    assert event["filled"] == [cid], event
    assert f"filled before its cancel 1 ({cid})" in present.kill_summary(event), present.kill_summary(event)


async def test_an_entry_the_exchange_refuses_is_no_trade_of_the_day(tmp_path, fx):
    """DAILY_TRADES counts the entries made since the start of the UTC day: one the exchange refused (insufficient
    balance, a filter) was not made, and does not use up the day's trades. (ORDER_RATE counts every entry sent, as
    the exchange's own rate limit does.)"""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1}, risk={"max_daily_trades": 1})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.fault(POST_ORDER, "error", status=400, code=-2010, msg="Account has insufficient balance for "
                                                                       "requested action.")
            refused = await strategy_order(fx)
            await wait_for(lambda: rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (refused,)) == [
                ("rejected",)], timeout=30, what="the entry rejected")
            # taken back once the send's answer is in (the rejection's record is committed a moment before)
            await wait_for(lambda: e.portfolio.entries_today == 0, timeout=5, what="the refused entry not counted")
            fx.market_clock.step()
            await wait_for(lambda: len(fx.requests_to(POST_ORDER)) == 2, timeout=30, what="the next bar's entry")
            await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the next entry filled")
            assert e.portfolio.entries_today == 1


async def test_a_sale_made_by_hand_is_booked_by_the_operator_and_the_books_equal_the_exchange_again(tmp_path, fx):
    """The operator sold half the position's coins on the exchange by hand: the accept is refused (a position with
    no coins behind it). `ffe ctl sold-by-hand SYMBOL --quantity Q --price P --fee F` books that sale as the
    exchange's account shows it: an order of the journal, never sent (reason `by_hand`), its fill and the trade it
    closes, in one transaction with their audit records. The books equal the exchange's again, reconciliation
    agrees and the engine may be resumed; a restart finds nothing to send or recover."""
    from ffe_engine.model import EngineState

    climbing(fx)
    tables = {"engine": {"order_poll_s": 0.1}}
    settings = controlled_settings(tmp_path, fx, **tables)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            held = await sold_by_hand(e, fx, 0.5)
            sold = round(held * 0.5, 5)
            (held_by,) = [b for b in (await e.why())["blocking"] if b["gate"] == "RECONCILE"]
            assert f"`ffe ctl sold-by-hand {BTC} --quantity Q --price P --fee F`" in held_by["lifts"], held_by
            fx.balances["USDT"].free -= 1.2345  # the exchange's fee of the sale, in the quote currency
            posts = len(fx.requests_to(POST_ORDER))
            for args, words in ((("--quantity", f"{sold}", "--price", "30000"), "add --yes to confirm"),
                                (("--quantity", f"{sold}", "--yes"), "needs --price"),
                                (("--quantity", "0", "--price", "30000", "--yes"), "must be more than 0"),
                                (("--quantity", f"{sold}", "--price", "30000", "--fee", "-1", "--yes"),
                                 "must be 0 or more")):
                refused = await run_ffe_async(tmp_path, "ctl", "sold-by-hand", BTC, *args, env=live_env(fx),
                                              name="refused")
                assert refused.proc.returncode == 2 and words in refused.stderr, (args, refused.stderr)
                assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
            fee_elsewhere = await run_ffe_async(tmp_path, "ctl", "close", BTC, "--fee", "1", "--yes",
                                                env=live_env(fx), name="close")
            assert fee_elsewhere.proc.returncode == 2, fee_elsewhere.stderr
            assert "--fee goes with `ffe ctl settle` and `ffe ctl sold-by-hand`, not close" in fee_elsewhere.stderr
            sale = await run_ffe_async(tmp_path, "ctl", "sold-by-hand", BTC, "--quantity", f"{sold}", "--price",
                                       "30000", "--fee", "1.2345", "--yes", env=live_env(fx), name="sold")
            assert sale.proc.returncode == 0, sale.stderr
            booked = f"booked the sale of {sold:g} BTC/USDT at 30,000.0 (fee 1.2345) made by hand"  # fees to 4
            assert booked in sale.stdout, sale.stdout
            assert "reconciliation agrees with the venue" in sale.stdout, (sale.stdout, e.reconcile_blocked)
            assert len(fx.requests_to(POST_ORDER)) == posts  # nothing went to the exchange
            assert e.portfolio.positions[BTC].quantity == pytest.approx(held - sold, abs=1e-9)
            assert_books_agree(e, fx)
            assert e.reconcile_blocked == [] and e.state is EngineState.PAUSED
            assert await e.resume(by="test") is EngineState.RUNNING
    ((cid, status, reason, filled, average, fee),) = rows(
        db, "SELECT client_order_id, status, reason, filled, average, fee FROM orders WHERE reason = 'by_hand'")
    assert (status, reason, filled, average, fee) == ("filled", "by_hand", sold, 30_000.0, 1.2345)
    assert rows(db, "SELECT quantity, price, fee FROM fills WHERE client_order_id = ?", (cid,)) == [
        (sold, 30_000.0, 1.2345)]
    ((t_qty, exit_price, t_reason),) = rows(db, "SELECT quantity, exit_price, reason FROM trades")
    assert (t_qty, exit_price, t_reason) == (sold, 30_000.0, "by_hand")
    assert order_statuses(db, cid) == ["new", "filled"]
    assert [ev["client_order_id"] for ev in stored_events(db, "fill")].count(cid) == 1
    verify = await run_ffe_async(tmp_path, "audit", "verify", env=live_env(fx), name="verify")
    assert verify.proc.returncode == 0, verify.stdout + verify.stderr
    story = await run_ffe_async(tmp_path, "audit", "show", cid, env=live_env(fx), name="show")
    assert story.proc.returncode == 0, story.stdout + story.stderr
    assert "by_hand" in story.stdout and "sold on the exchange by hand, booked by ctl" in story.stdout, story.stdout
    async with engine_session(settings, live=True) as again:  # nothing of it is in flight, nothing sent
        assert again.engine.orders.live == {}
        assert again.engine.portfolio.positions[BTC].quantity == pytest.approx(held - sold, abs=1e-9)
    assert len(fx.requests_to(POST_ORDER)) == posts


async def test_a_sale_by_hand_clears_no_difference_its_reconciliation_could_not_compare(tmp_path, fx):
    """Held for the BTC position, the cash and the equity (half the BTC sold by hand, and 500 USDT withdrawn); an
    ETH exit is in doubt when the sale is booked, so the reconciliation that follows compares neither the cash nor
    the equity (the exit's trade may be in the balances already). The withdrawal it did not compare still holds
    the engine: resuming on cash the account does not have waits for the operator's accept."""
    from ffe_engine.engine import ControlError

    eth = "ETH/USDT"
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1, "symbols": [BTC, eth]},
                                 risk={"max_correlation": 1.0})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.market_clock.step()
            await wait_for(lambda: BTC in e.portfolio.positions and not e.orders.live, timeout=30, what="BTC held")
            if eth not in e.portfolio.positions:
                await e.operator_order(eth, "buy", 0.003, by="test")
            await wait_for(lambda: eth in e.portfolio.positions and not e.orders.live, timeout=30, what="ETH held")
            sold = round(e.portfolio.positions[BTC].quantity * 0.5, 5)
            fx.balances["BTC"].free -= sold
            fx.balances["USDT"].free += sold * 30_000.0 - 500.0  # and 500 USDT withdrawn
            from live_helpers import reconcile_until

            # until the ETH entry's trades have settled and the cash is compared too
            await reconcile_until(e, a_difference_of("cash"), "the withdrawal found")
            fx.fault(POST_ORDER, "hang", seconds=4, execute=False)
            await e.close_position(eth, by="test")  # its answer lost: in doubt
            result = await e.book_hand_sale(BTC, quantity=sold, price=30_000.0, by="test")
            assert "reconciliation agrees" not in result["reconcile"], result
            assert any(d["kind"] == "cash" for d in e.reconcile_blocked), e.reconcile_blocked
            with pytest.raises(ControlError):
                await e.resume(by="test")


async def test_a_sale_by_hand_booked_within_the_settle_window_says_the_reconciliation_looks_again(tmp_path, fx):
    """The sale is booked right after an exit the exchange refused (an order change the balances may lag): the
    reconciliation that follows cannot compare yet. It does not tell the operator to accept what it held before,
    which the next look, the books agreeing, clears by itself (an accept would be refused)."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            held = await sold_by_hand(e, fx, 0.5)
            sold = round(held * 0.5, 5)
            fx.fault(POST_ORDER, "error", times=1, status=400, code=-2010,
                     msg="Account has insufficient balance for requested action.")
            refused = await e.operator_order(BTC, "sell", held, by="test")
            assert not refused["accepted"], refused
            result = await e.book_hand_sale(BTC, quantity=sold, price=30_000.0, by="test")
            assert "accept them" not in result["reconcile"], result
            assert "looks again" in result["reconcile"], result
            from live_helpers import reconcile_until

            await reconcile_until(e, lambda _: not e.reconcile_blocked, "the books agreeing")


async def test_a_sale_by_hand_whose_reconciliation_finds_the_exchange_down_says_so(tmp_path, fx):
    """The sale's own balance check answered, then the exchange stops answering: the command says the exchange could
    not be reached (an outage, nothing to accept), not that its reads have to catch up."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            held = await sold_by_hand(e, fx, 0.5)

            # Down from the first read of the account after the sale is booked: the reconciliation that follows
            # it. (Counting reads would count one of the engine's own reconciliations, under way beside the sale.)
            def down_once_the_sale_is_booked(rec) -> None:
                if rec.route == GET_ACCOUNT and e.portfolio.positions[BTC].quantity < held - 1e-9:
                    fx.down = True

            fx.on_request = down_once_the_sale_is_booked
            result = await e.book_hand_sale(BTC, quantity=round(held * 0.5, 5), price=30_000.0, by="test")
            fx.down, fx.on_request = False, None
            assert "could not be reached" in result["reconcile"], result
            assert "caught up" not in result["reconcile"], result


@contextlib.asynccontextmanager
async def withdrawn_after_entry(tmp_path, fx: FakeBinance, amount: float):
    """A live engine running on the climbing market, its strategy entry filled and final, then `amount` of quote
    withdrawn from the account by hand: the engine."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            fx.balances["USDT"].free -= amount
            yield e


async def test_an_outage_over_a_held_difference_lifts_once_the_venue_answers_and_agrees(tmp_path, fx):
    """A withdrawal holds the engine; the exchange goes down (reconciliation cannot read it), the coins come back,
    the exchange answers and agrees with the journal: nothing holds the engine any more, the outage least of all,
    and the resume it waits for goes through."""
    from live_helpers import reconcile_until

    from ffe_engine.model import EngineState

    async with withdrawn_after_entry(tmp_path, fx, 250.0) as e:
        await reconcile_until(e, a_difference_of("cash"), "the withdrawal found")
        fx.down, fx.down_status = True, 503
        await e.reconcile()
        assert any(d["kind"] == "venue_unreachable" for d in e.reconcile_blocked), e.reconcile_blocked
        fx.down = False
        fx.balances["USDT"].free += 250.0  # put back
        await reconcile_until(e, lambda held: held == [], "the coins back")
        assert await e.resume(by="test") is EngineState.RUNNING


async def test_a_withdrawal_first_found_by_the_look_that_ends_an_outage_holds_the_engine_once_confirmed(tmp_path, fx):
    """The reads of the first look after a withdrawal time out (an outage, for as long as it lasts); the next look
    finds the cash short for the first time, which counts once a look the settle window later finds it again: the
    engine looks again by itself, and the withdrawal holds it then."""
    from ffe_engine.model import EngineState

    async with withdrawn_after_entry(tmp_path, fx, 250.0) as e:
        fx.fault(GET_ACCOUNT, "hang", seconds=1.5, times=5)  # every try of the look's balance read
        await e.reconcile()
        assert [d["kind"] for d in e.reconcile_blocked] == ["venue_unreachable"], e.reconcile_blocked
        await asyncio.sleep(e.venue.settle_s)
        assert await e.reconcile() == [] and e.reconcile_blocked == []  # found once: not confirmed yet
        withdrawn = a_difference_of("cash")
        await wait_for(lambda: withdrawn(e.reconcile_blocked), timeout=10, what="the withdrawal held")
        assert e.state is EngineState.PAUSED and e.state_reason.startswith("reconcile"), e.state_reason


async def test_a_crash_at_any_instant_of_a_sale_by_hand_leaves_no_order_journaled_new(tmp_path, fx, monkeypatch):
    """The order a sale by hand books is never to be sent: journaled `new` and killed there, a restart would look it
    up, not find it at the exchange and send it, selling coins a second time. The database a crash would leave at
    each write the booking makes holds either nothing of it or the order filled with its fill and its events."""
    from pipeline_helpers import crashed_copy

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    db = settings.db_path
    seen: list[tuple] = []
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            held = await sold_by_hand(e, fx, 0.5)
            conn = running.store.conn
            execute = conn.execute

            async def each_write(sql, *args, **kwargs):
                if not sql.lstrip().upper().startswith("SELECT"):
                    with crashed_copy(db, tmp_path / f"crash{len(seen)}.db") as copy:
                        seen.append((copy.execute("SELECT status, filled FROM orders WHERE reason = 'by_hand'")
                                     .fetchall(), copy.execute("SELECT COUNT(*) FROM fills").fetchone()[0]))
                return await execute(sql, *args, **kwargs)

            monkeypatch.setattr(conn, "execute", each_write)
            await e.book_hand_sale(BTC, quantity=round(held * 0.5, 5), price=30_000.0, by="test")
            monkeypatch.setattr(conn, "execute", execute)
    sold = round(held * 0.5, 5)
    fills_before = seen[0][1]
    assert seen and all(orders in ([], [("filled", sold)]) for orders, _ in seen), seen
    assert all((orders == []) == (fills == fills_before) for orders, fills in seen), seen
    assert rows(db, "SELECT status FROM orders WHERE reason = 'by_hand'") == [("filled",)]


async def test_a_sale_by_hand_the_exchange_s_account_does_not_show_is_refused_and_changes_nothing(tmp_path, fx):
    """What the operator books as sold by hand must be gone from the exchange's account: a sale it does not show
    (a typo, the wrong account, a sale not done yet) is refused, as is one of more than the position holds, one
    in a symbol with no position, and one while an order of the symbol is working. Nothing is recorded."""
    from ffe_engine.engine import ControlError

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            held = await sold_by_hand(e, fx, 0.25)
            sold = round(held * 0.25, 5)
            before = rows(db, "SELECT COUNT(*) FROM orders"), rows(db, "SELECT COUNT(*) FROM fills")
            with pytest.raises(ControlError, match=r"the exchange's account still holds .* BTC"):
                await e.book_hand_sale(BTC, quantity=round(held * 0.5, 5), price=30_000.0, by="test")
            with pytest.raises(ControlError, match=r"more than the books' BTC/USDT position"):
                await e.book_hand_sale(BTC, quantity=held * 2, price=30_000.0, by="test")
            with pytest.raises(ControlError, match=r"no position in ETH/USDT"):
                await e.book_hand_sale("ETH/USDT", quantity=sold, price=30_000.0, by="test")
            fx.fault(POST_ORDER, "hang", seconds=5, execute=False)
            closing = asyncio.ensure_future(e.close_position(BTC, by="test"))
            await wait_for(lambda: e.orders.live, timeout=10, what="the closing order in flight")
            with pytest.raises(ControlError, match=r"is working in BTC/USDT"):
                await e.book_hand_sale(BTC, quantity=sold, price=30_000.0, by="test")
            await closing
            assert e.portfolio.positions[BTC].quantity == held
            assert (rows(db, "SELECT COUNT(*) FROM orders WHERE reason = 'by_hand'"), before[1]) == (
                [(0,)], rows(db, "SELECT COUNT(*) FROM fills"))


async def test_a_flatten_whose_closing_order_the_exchange_refuses_on_its_minimum_says_it_failed(
        tmp_path, fx, monkeypatch):
    """The exchange raised its minimum order value past what the position is worth: the flatten's closing order is
    refused ("Filter failure: NOTIONAL") and the markets read again make the position dust. The flatten says it
    could not close it (failed, so `ffe ctl flatten` exits 1 and the FLATTEN alert pages), not nothing."""
    from fake_exchange import LISTINGS

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            await wait_for(lambda: not e.orders.live, timeout=30, what="the entry settled")
            monkeypatch.setitem(LISTINGS["BTCUSDT"], "min_notional", "1000000000")
            report = await e.flatten()
        assert [f["symbol"] for f in report["failed"]] == [BTC], report
        assert "minimum" in report["failed"][0]["error"], report
        assert fx.balances["BTC"].total > 0.001  # still held at the exchange


async def approved_after_the_market_moved(tmp_path, fx, to) -> tuple[dict, Any]:
    """A live engine in manual approval; its first entry waiting for approval; the exchange's price moved inside the
    open bar to `to(approval)`; then approved: the answer, and the settings."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual"})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            fx.set_price("BTCUSDT", to(a))
            return await e.approve(a["approval_id"]), settings


async def test_an_approval_is_checked_at_the_exchange_s_price_now_not_the_last_bar_s_close(tmp_path, fx):
    """Bars can be an hour old when the operator approves: the re-check and the new size are taken at the price the
    exchange quotes now. A jump past the take-profit inside the open bar refuses the approval; nothing is sent."""
    res, _ = await approved_after_the_market_moved(tmp_path, fx, lambda a: round(a["intent"]["take_profit"] * 1.02, 2))
    assert not res["accepted"] and res["reason"].startswith("PRICE_MOVED"), res
    assert fx.requests_to(POST_ORDER) == []


async def test_an_approval_is_sized_at_the_exchange_s_price_now(tmp_path, fx):
    def inside(a: dict) -> float:  # up, inside the stops
        return round((a["price"] + a["intent"]["take_profit"]) / 2, 2)

    res, settings = await approved_after_the_market_moved(tmp_path, fx, inside)
    assert res["accepted"], res
    now = res["price"]
    assert fx.prices["BTCUSDT"] == now and res["stop_loss"] < now < res["take_profit"]
    r = settings.risk
    assert res["take_profit"] - now == pytest.approx(r.take_profit_atr / r.stop_loss_atr * (now - res["stop_loss"]))


async def test_an_order_filled_at_the_exchange_that_lookups_lose_for_good_ends_and_reconciliation_sees_it(tmp_path,
                                                                                                        fx):
    """The rest of a resting entry fills at the exchange, and lookups by id miss the order from then on (the
    exchange lists it no more: it is done). It is taken as lost after the settle window and three lookups, and
    reconciliation, which compares again, finds the coins and cash its fill moved: the engine does not go on blind."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            fx.fault(GET_ORDER, "not_found_once", times=100_000)
            fx.fill(cid)
            await poll_until_ended(e, cid, every=0.3, at_most=40)
            assert cid not in e.orders.live
            from live_helpers import reconcile_twice

            differences = await reconcile_twice(e)  # a difference counts once a second look confirms it
        assert differences, "reconciliation compared nothing"
        assert rows(settings.db_path, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [
            ("rejected",)]


async def test_an_approval_that_expires_while_the_exchange_s_price_is_read_is_not_approved(tmp_path, fx):
    """The exchange holds the ticker read (Retry-After) past the approval's time to live: the approval has expired
    meanwhile, and nothing is sent."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual",
                                                       "approval_ttl_s": 3})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            fx.fault("GET /api/v3/ticker/24hr", "429", retry_after=4)
            with contextlib.suppress(FfeError):
                res = await e.approve(a["approval_id"])
                assert not res["accepted"], res
        assert fx.requests_to(POST_ORDER) == []
        outcomes = [x["outcome"] for x in stored_events(settings.db_path, "approval")
                    if x.get("approval_id") == a["approval_id"]]
        assert "approved" not in outcomes, outcomes


async def test_an_approved_entry_the_exchange_refuses_ends_approved_with_its_order(tmp_path, fx):
    """The approval's re-check passes and its order is journaled and sent; the exchange refuses it (429, Retry-After).
    The operator approved it and an order was made of it: the approval ends approved, naming that order (as a
    restart ends one whose order was sent), and the order's own end says the exchange refused it."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual"})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            fx.fault(POST_ORDER, "429", retry_after=3)
            res = await e.approve(a["approval_id"], by="test")
        (sent,) = fx.requests_to(POST_ORDER)
        cid = sent.params["newClientOrderId"]
        assert sent.status == 429 and res["client_order_id"] == cid and not res["accepted"], res
        assert res["reason"].startswith("VENUE_HOLD"), res
        assert rows(db, "SELECT status, by, client_order_id FROM approvals WHERE approval_id = ?",
                    (a["approval_id"],)) == [("approved", "test", cid)]
        (ended,) = [x for x in stored_events(db, "approval")
                    if x["approval_id"] == a["approval_id"] and x["outcome"] != "pending"]
        assert (ended["outcome"], ended["by"], ended["client_order_id"]) == ("approved", "test", cid), ended
        assert "refused" in ended["reason"] and "VENUE_HOLD" in ended["reason"], ended
        [(status, error)] = rows(db, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,))
        assert status == "rejected" and "Too many requests" in error, error


async def test_an_approved_entry_the_exchange_ends_at_once_unsold_is_said_so_not_bought(tmp_path, fx):
    """The exchange accepts the approved entry and ends it in the same answer, half of it bought (expired: a time in
    force, self-trade prevention). The approval is approved with its order; the answer says how the order ended,
    not only its id, and a script is told it was not carried out whole."""
    from ffe_engine import present

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual"})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            fx.partial_fill_next(0.5, rest="expire")
            res = await e.approve(a["approval_id"])
    assert res["accepted"] and "expired at the exchange" in res["ended"], res
    said = present.approve_answer(res)
    aid, cid = a["approval_id"], res["client_order_id"]
    assert said.startswith(f"approved {aid}: its order {cid} expired at the exchange"), said


async def test_a_sale_made_by_hand_booked_while_halted_says_to_re_arm_not_resume(tmp_path, fx):
    """The same sale booked while the engine is HALTED: reconciliation agrees, and the answer says how to go on
    from HALTED (a re-arm, `ffe ctl resume --yes`), not "resume when ready", which a HALTED engine refuses."""
    climbing(fx)
    tables = {"engine": {"order_poll_s": 0.1}}
    settings = controlled_settings(tmp_path, fx, **tables)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            held = await sold_by_hand(e, fx, 0.5)
            await e.halt(by="test")
            fx.balances["USDT"].free -= 1.2345
            sale = await run_ffe_async(tmp_path, "ctl", "sold-by-hand", BTC, "--quantity", f"{round(held * 0.5, 5)}",
                                       "--price", "30000", "--fee", "1.2345", "--yes", env=live_env(fx), name="sold")
            assert sale.proc.returncode == 0, sale.stderr
            assert "reconciliation agrees with the venue; re-arm when ready (`ffe ctl resume --yes`)" in sale.stdout, \
                sale.stdout
