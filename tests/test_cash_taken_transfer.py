"""Quote moved in or out of a live account while its books carry no cash of their own: the start takes the
exchange's cash (after `ffe restore`, or over books stored with a null cash, the engine killed before a
reconciliation took it), and the books' peak and day's start are from before. The quote moved since is a transfer,
not a trade: no drawdown, no day's P&L, no deepest drawdown stored, and entries are not refused for it.

The null-cash restart (a restored start whose balance reads fail after its own, killed): real `ffe run --headless
--live` subprocesses against the fake Binance, SIGKILL, the same SQLite database. The restore: engines opened
in-process on real SQLite files, the fake Binance through real ccxt.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import engine_session
from ffe_engine import backup as bk
from ffe_engine.control import request
from ffe_engine.model import EngineState
from ffe_engine.restore import restore
from live_helpers import (BTC, AsyncFfe, fx, live_config, live_env, live_settings, next_bar, processes,  # noqa: F401
                          reconcile_twice, rows, run_ffe_async, stored_events, wait_for, write_config)
from test_first_start_recovered_fill import stored_cash
from test_live_restart import start_engine

ACCOUNT = "GET /api/v3/account"


def stored_books(db) -> dict:
    (books,) = rows(db, "SELECT value FROM kv WHERE key = 'portfolio'")
    return json.loads(books[0])


async def restored_without_a_cash(tmp_path, fx, processes) -> AsyncFfe:
    """A live engine restored from a backup, the orders made since it recovered and their fills stored with books
    that carry no cash: its balance reads fail after the start's own (a 503 each, until the test clears
    `ACCOUNT`'s faults and `fx.on_request`), so no reconciliation takes the exchange's cash. Left running."""
    write_config(tmp_path, live_config(fx, engine={"order_poll_s": 0.5, "reconcile_interval_s": 5},
                                       exchange={"timeout_ms": 3000}))
    db = tmp_path / "data" / "ffe.db"
    sock = tmp_path / "data" / "ffe.sock"
    engine = await start_engine(tmp_path, fx, processes, "first")
    assert (await request(sock, "resume", {"confirm": True}))["ok"]
    assert (await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.02}))["ok"]
    await wait_for(lambda: rows(db, "SELECT COUNT(*) FROM fills") == [(1,)], what="the first buy's fill")
    assert await engine.stop() == 0, engine.stderr
    backup = await run_ffe_async(tmp_path, "backup", env=live_env(fx))
    assert backup.proc.returncode == 0, backup.stderr
    (archive,) = (tmp_path / "backups").glob("*.tar.zst")
    engine = await start_engine(tmp_path, fx, processes, "after the backup")
    assert (await request(sock, "resume", {"confirm": True}))["ok"]
    assert (await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.01}))["ok"]
    assert (await request(sock, "order", {"symbol": BTC, "side": "sell", "quantity": 0.005}))["ok"]
    await wait_for(lambda: rows(db, "SELECT COUNT(*) FROM fills") == [(3,)], what="the later orders' fills")
    assert await engine.stop() == 0, engine.stderr
    restored = await run_ffe_async(tmp_path, "restore", str(archive), "--force", env=live_env(fx))
    assert restored.proc.returncode == 0, restored.stderr

    # The restored start reads the exchange's balance once; every read after it fails, so no reconciliation takes
    # the cash: the later orders are recovered and their fills stored with books that carry none.
    reads = {"n": 0}

    def balances_fail_after_the_start_s_own(rec) -> None:
        if rec.method == "GET" and rec.path.endswith("/account"):
            reads["n"] += 1
            if reads["n"] == 3:
                fx.fault(ACCOUNT, "5xx_not_executed", status=503, times=10_000)

    fx.on_request = balances_fail_after_the_start_s_own
    engine = await start_engine(tmp_path, fx, processes, "restored")
    await wait_for(lambda: rows(db, "SELECT COUNT(*) FROM fills") == [(3,)] and stored_cash(db) is None, timeout=30,
                   what="the later orders recovered, the books stored without a cash")
    return engine


@pytest.mark.parametrize("moved", [-2000.0, 1500.0], ids=["withdrawn", "deposited"])
async def test_quote_moved_while_the_stored_books_carry_no_cash_is_no_drawdown_or_profit(tmp_path, fx, processes,
                                                                                        moved):
    db = tmp_path / "data" / "ffe.db"
    sock = tmp_path / "data" / "ffe.sock"
    engine = await restored_without_a_cash(tmp_path, fx, processes)
    await engine.kill()
    fx.on_request = None
    fx.clear_faults(ACCOUNT)
    peak = stored_books(db)["peak_equity"]

    fx.balances["USDT"].free += moved  # the operator's transfer while the engine is down
    engine = await start_engine(tmp_path, fx, processes, "next")
    await wait_for(lambda: stored_cash(db) == pytest.approx(fx.balances["USDT"].total), timeout=40,
                   what="the exchange's cash taken by a reconciliation and stored")
    status = (await request(sock, "status"))["result"]
    equity = status["equity"]
    assert equity == pytest.approx(peak + moved, rel=5e-3)
    assert status["drawdown_pct"] < 1.0, status
    assert abs(status["day_pnl"]) < 0.01 * abs(moved), status
    books = stored_books(db)
    assert books["max_drawdown_pct"] < 1.0, books
    assert books["peak_equity"] == pytest.approx(equity, rel=5e-3), books
    assert books["day_start_equity"] == pytest.approx(equity, rel=5e-3), books
    (start,) = [r for r in stored_events(db, "run") if r["phase"] == "start"][-1:]
    assert "breached" not in start["detail"], start
    assert (await request(sock, "resume", {"confirm": True}))["ok"]
    answer = await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.001})
    assert answer["ok"] and answer["result"]["accepted"], answer
    assert await engine.stop() == 0, engine.stderr


@pytest.mark.parametrize("moved", [-2000.0, 1500.0], ids=["withdrawn", "deposited"])
async def test_quote_moved_between_a_backup_and_its_restore_is_no_drawdown_or_profit(tmp_path, fx, moved):
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False}, risk={"max_open_positions": 10})
    async with engine_session(settings, live=True) as running:
        await next_bar(running.engine, fx)
        answer = await running.engine.operator_order(BTC, "buy", 0.01)
        assert answer["accepted"], answer
        peak = running.engine.portfolio.peak_equity
    archive = bk.take_stopped(settings, tmp_path / "backups", time.time()).path
    fx.balances["USDT"].free += moved  # the operator's transfer before the restore
    restore(archive, settings, force=True, now=time.time())
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await reconcile_twice(e)
        pf = e.portfolio
        assert pf.cash == pytest.approx(fx.balances["USDT"].total)
        assert pf.equity() == pytest.approx(peak + moved, rel=5e-3)
        assert pf.drawdown_pct() < 1.0 and pf.max_drawdown_pct < 1.0
        assert abs(pf.day_pnl()) < 0.01 * abs(moved)
        (start,) = [r for r in stored_events(db, "run") if r["phase"] == "start"][-1:]
        assert "breached" not in start["detail"], start
        assert e.state is EngineState.RUNNING
        await next_bar(e, fx)
        answer = await e.operator_order(BTC, "buy", 0.001)
        assert answer["accepted"], answer
    books = stored_books(db)
    assert books["max_drawdown_pct"] < 1.0 and books["peak_equity"] == pytest.approx(peak + moved, rel=5e-3)
