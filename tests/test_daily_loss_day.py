"""The day DAILY_LOSS and DAILY_TRADES measure is the UTC day of the engine's clock, from the moment the books open.

A live engine on the fake Binance, run as the operator runs it (`ffe run --headless --live`, `ffe ctl`), or opened
in-process where the test moves the engine's clock over a UTC midnight. A loss made before the run's first bar
stays the day's loss after that bar, and after a restart the same day; a restart on a later day, or the clock
a bar past midnight while no candle comes, starts a new day at the equity then.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest

from conftest import engine_session, make_settings
from fake_exchange import FakeBinance
from ffe_engine.clock import DAY_MS, utc_day
from ffe_engine.control import request
from live_helpers import (BTC, AsyncFfe, SteppedClock, engine_loop, fx, live_config, live_env,  # noqa: F401
                          live_settings, processes, rows, run_ffe_async, wait_for, write_config)
from live_helpers import next_bar as live_next_bar

RUN = ("run", "--headless", "--live")
LIMIT = 0.5  # % of the day's start equity
RISK = {"daily_loss_limit_pct": LIMIT, "max_position_pct": 100, "max_concentration_pct": 100, "max_var_pct": 100,
        "max_open_positions": 5}


@pytest.fixture(autouse=True)
def not_near_midnight():
    # A UTC midnight during the test would start a new day under it, as it should: the figures it checks are one
    # day's. The fake's market runs a few minutes ahead of the wall clock, so a test begun within six minutes of a
    # midnight waits for it to pass first (a skip would prove nothing, and fails the run).
    ms_left = DAY_MS - int(time.time() * 1000) % DAY_MS
    if ms_left < 6 * 60_000:
        time.sleep(ms_left / 1000 + 5)


def flat_at_set_price(fx: FakeBinance) -> None:
    """Klines at the price the test sets, as the fills are: the marks and the fills agree."""
    fx.price_path = lambda sid, ts: fx.prices[sid]


async def ctl(cwd, fx: FakeBinance, *args: str) -> str:
    p = await run_ffe_async(cwd, "ctl", *args, env=live_env(fx), name="ctl")
    assert p.proc.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


async def status(sock) -> dict:
    answer = await request(sock, "status")
    assert answer["ok"], answer
    return answer["result"]


async def buy(sock, quantity: float) -> dict:
    answer = await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": quantity, "by": "test"})
    assert answer["ok"], answer
    return answer["result"]


def gate(result: dict, code: str) -> tuple:
    (g,) = [g for g in result["gates"] if g["code"] == code]
    return g["value"], g["passed"]


async def start(tmp_path, fx: FakeBinance, processes, name: str = "ffe") -> AsyncFfe:
    p = await AsyncFfe.start(tmp_path, *RUN, env=live_env(fx), name=name)
    processes.append(p)
    await wait_for(lambda: "control socket ready" in p.stderr or not p.alive(), timeout=60, what="the control socket")
    assert p.alive(), p.stderr
    return p


async def lose_before_the_first_bar(tmp_path, fx: FakeBinance) -> float:
    """Resume, buy 0.03 BTC at 30,000 and close it at 28,000, all before the run's first bar: the day's P&L then
    (about -61.68, over half a percent of the 10,000 the account held)."""
    sock = tmp_path / "data" / "ffe.sock"
    db = tmp_path / "data" / "ffe.db"
    await ctl(tmp_path, fx, "resume")
    placed = await buy(sock, 0.03)
    assert placed["accepted"], placed
    await wait_for(lambda: rows(db, "SELECT COUNT(*) FROM positions") == [(1,)], timeout=30, what="the buy filled")
    fx.set_price("BTCUSDT", 28_000.0)
    await ctl(tmp_path, fx, "close", BTC, "--yes")
    await wait_for(lambda: rows(db, "SELECT COUNT(*) FROM trades") == [(1,)], timeout=30, what="the close filled")
    now = await status(sock)
    assert now["bars"] == 0 and now["positions"] == [], now
    assert now["day_pnl"] == pytest.approx(-61.68, abs=0.05), now
    return float(now["day_pnl"])


async def next_bar(sock, fx: FakeBinance, bars_before: int) -> dict:
    fx.market_clock.step()

    async def seen() -> dict | None:
        s = await status(sock)
        return s if s["bars"] > bars_before else None

    return await wait_for(seen, timeout=30, what="the next bar at the engine", interval=0.05)


async def test_a_loss_made_before_the_first_bar_is_still_the_day_s_loss_after_it(tmp_path, fx, processes):
    flat_at_set_price(fx)
    write_config(tmp_path, live_config(fx, risk=RISK))
    sock, db = tmp_path / "data" / "ffe.sock", tmp_path / "data" / "ffe.db"
    p = await start(tmp_path, fx, processes)
    lost = await lose_before_the_first_bar(tmp_path, fx)
    refused = await buy(sock, 0.01)
    assert refused["reason"].startswith("DAILY_LOSS:"), refused

    after = await next_bar(sock, fx, 0)
    assert after["day_pnl"] == pytest.approx(lost, abs=0.01), after
    # The breach pauses the engine once it is measured after a bar, as any breach.
    await wait_for(lambda: rows(db, "SELECT state, by FROM engine_state") == [("PAUSED", "risk")], timeout=30,
                   what="the DAILY_LOSS pause")
    assert "DAILY_LOSS" in (await status(sock))["state_reason"]
    assert "DAILY_LOSS" in await ctl(tmp_path, fx, "why")
    await ctl(tmp_path, fx, "resume")
    refused = await buy(sock, 0.01)
    assert not refused["accepted"] and refused["reason"].startswith("DAILY_LOSS:"), refused
    value, passed = gate(refused, "DAILY_LOSS")
    assert value > LIMIT and not passed
    assert gate(refused, "DAILY_TRADES")[0] == 1  # the entry before the first bar was made today too
    assert await p.stop() == 0, p.stderr


async def test_a_restart_the_same_day_keeps_a_loss_made_before_the_last_run_s_first_bar(tmp_path, fx, processes):
    flat_at_set_price(fx)
    write_config(tmp_path, live_config(fx, risk=RISK))
    sock, db = tmp_path / "data" / "ffe.sock", tmp_path / "data" / "ffe.db"
    p = await start(tmp_path, fx, processes)
    lost = await lose_before_the_first_bar(tmp_path, fx)
    assert await p.stop() == 0, p.stderr  # stopped before its first bar
    [(books,)] = rows(db, "SELECT value FROM kv WHERE key = 'portfolio'")
    assert json.loads(books)["day"] == utc_day(int(time.time() * 1000))  # the day is stored with the books

    p = await start(tmp_path, fx, processes, name="again")
    assert (await status(sock))["day_pnl"] == pytest.approx(lost, abs=0.01)
    after = await next_bar(sock, fx, 0)
    assert after["day_pnl"] == pytest.approx(lost, abs=0.01), after
    await ctl(tmp_path, fx, "resume")
    refused = await buy(sock, 0.01)
    assert not refused["accepted"] and refused["reason"].startswith("DAILY_LOSS:"), refused
    assert gate(refused, "DAILY_TRADES")[0] == 1
    why = await ctl(tmp_path, fx, "why")
    assert "DAILY_LOSS" in why and "nothing blocks entries now" not in why, why
    assert await p.stop() == 0, p.stderr


class DayClock(SteppedClock):
    """The wall clock, whose market time the test can move on by `shift_ms` (over a UTC midnight) once the engine
    has started; the exchange's time does not move with it, so no candle closes by it: the feed is stale."""

    def __init__(self) -> None:
        super().__init__()
        self.shift_ms = 0

    def now_ms(self) -> int:
        return super().now_ms() + self.shift_ms


async def in_process_loss(e, fx: FakeBinance) -> float:
    """An operator's buy of 0.03 BTC at 30,000 closed at 28,000 by the in-process engine `e`: the day's P&L."""
    placed = await e.operator_order(BTC, "buy", 0.03)
    assert placed["accepted"], placed
    await wait_for(lambda: BTC in e.portfolio.positions and not e.orders.live, timeout=30, what="the buy filled")
    fx.set_price("BTCUSDT", 28_000.0)
    await e.close_position(BTC, by="test")
    await wait_for(lambda: BTC not in e.portfolio.positions and not e.orders.live, timeout=30,
                   what="the close filled")
    assert e.portfolio.day_pnl() == pytest.approx(-61.68, abs=0.05)
    assert e.portfolio.entries_today == 1
    return e.portfolio.day_pnl()


async def test_midnight_by_the_engine_s_clock_starts_a_new_day_while_no_candle_comes(tmp_path, fx):
    flat_at_set_price(fx)
    clock = DayClock()
    settings = live_settings(tmp_path, fx, risk=RISK, engine={"live_start_paused": False})
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        today = utc_day(clock.now_ms())
        assert e.portfolio.day == today  # from the moment the books open, not from the first bar
        async with engine_loop(e):
            await in_process_loss(e, fx)
            equity = e.portfolio.equity()
            midnight = (today + 1) * DAY_MS
            clock.shift_ms = midnight + 1_000 - clock.now_ms()  # a second past the next midnight
            # The candle closing at midnight may still come, its price the day's start: the day waits for it, a
            # bar at most (housekeeping rounds every 0.2 s meanwhile).
            await asyncio.sleep(1.0)
            assert e.portfolio.day == today
            clock.shift_ms = midnight + e.timeframe_ms + 1_000 - (clock.now_ms() - clock.shift_ms)
            await wait_for(lambda: e.portfolio.day == today + 1, timeout=10, what="the new day by the clock")
            assert e.bars == 0  # no candle brought it
            assert e.portfolio.day_pnl() == 0.0 and e.portfolio.day_start_equity == equity
            assert (e.portfolio.day_realised, e.portfolio.entries_today) == (0.0, 0)
            measured = await e.operator_order(BTC, "buy", 0.01)  # refused for its stale data, measured all the same
            assert gate(measured, "DAILY_LOSS") == (0.0, True) and gate(measured, "DAILY_TRADES") == (0, True)
    books = json.loads(rows(settings.db_path, "SELECT value FROM kv WHERE key = 'portfolio'")[0][0])
    assert (books["day"], books["entries_today"]) == (today + 1, 0)
    assert books["day_start_equity"] == pytest.approx(equity)


def stored_books(db) -> dict:
    return json.loads(rows(db, "SELECT value FROM kv WHERE key = 'portfolio'")[0][0])


def store_books(db, books: dict) -> None:
    """The stored books replaced, as a run stopped on another day (or an older ffe) left them."""
    conn = sqlite3.connect(str(db))
    with conn:
        conn.execute("UPDATE kv SET value = ? WHERE key = 'portfolio'", (json.dumps(books),))
    conn.close()


async def test_a_restart_on_a_later_utc_day_starts_that_day_at_the_equity_then(tmp_path, fx):
    flat_at_set_price(fx)
    settings = live_settings(tmp_path, fx, risk=RISK, engine={"live_start_paused": False})
    async with engine_session(settings, live=True) as running:
        await in_process_loss(running.engine, fx)
    books = stored_books(settings.db_path)
    today = utc_day(int(time.time() * 1000))
    assert books["day"] == today and books["entries_today"] == 1
    store_books(settings.db_path, {**books, "day": today - 1})  # the run stopped yesterday
    with sqlite3.connect(str(settings.db_path)) as conn:  # and its entry was made then (the journal counts it)
        conn.execute("UPDATE orders SET created_ts = created_ts - ?", (DAY_MS,))
    conn.close()
    async with engine_session(settings, live=True) as running:
        pf = running.engine.portfolio
        assert pf.day == today
        assert pf.day_pnl() == 0.0 and pf.day_start_equity == pytest.approx(pf.equity())
        assert (pf.day_realised, pf.entries_today) == (0.0, 0)
        assert pf.equity() == pytest.approx(10_000.0 - 61.68, abs=0.05)  # the loss is in the books, of yesterday
    assert stored_books(settings.db_path)["day"] == today


@pytest.mark.parametrize("day", ["missing", -1])
async def test_books_stored_without_their_day_keep_their_loss_as_today_s(tmp_path, fx, day):
    """Books an older ffe stored (no day, or -1 before its first bar) do not say which day their figures are of:
    they are taken as today's, so that a loss in them still counts (until the next UTC midnight), not forgotten."""
    flat_at_set_price(fx)
    settings = live_settings(tmp_path, fx, risk=RISK, engine={"live_start_paused": False})
    async with engine_session(settings, live=True) as running:
        lost = await in_process_loss(running.engine, fx)
    books = stored_books(settings.db_path)
    if day == "missing":
        del books["day"]
    else:
        books["day"] = day
    store_books(settings.db_path, books)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await live_next_bar(e, fx)
        assert e.bars > 0
        assert e.portfolio.day == utc_day(int(time.time() * 1000))
        assert e.portfolio.day_pnl() == pytest.approx(lost, abs=0.01)
        assert e.portfolio.entries_today == 1


async def test_a_paper_engine_s_day_begins_when_its_books_open_not_at_its_first_bar(tmp_path):
    settings = make_settings(tmp_path, risk={"max_var_pct": 100})
    async with engine_session(settings) as running:
        e = running.engine
        assert e.portfolio.day == utc_day(e.clock.now_ms())
        symbol = e.symbols[0]
        placed = await e.operator_order(symbol, "buy", round(500.0 / e.portfolio.last_price[symbol], 4))
        assert placed["accepted"], placed
        assert e.portfolio.entries_today == 1
        candles = e.feed.iter_candles()
        for _ in e.symbols:
            await e.on_candle(next(candles))
        assert e.bars == len(e.symbols) and symbol in e.portfolio.positions
        assert e.portfolio.entries_today == 1  # the entry made before the first bar was made today
