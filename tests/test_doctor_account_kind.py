"""`ffe doctor` knows a live account from a paper one by its records, not by the configuration it is given: a live
account's cash is the exchange's balance, not a starting cash plus the fills, and is stored null while it is the
exchange's not yet reconciled (storage.md, kv `portfolio`); a paper account never stores a null cash. Real engine on
the fake Binance through real ccxt, real `ffe doctor` subprocesses, real SQLite."""

from __future__ import annotations

import json
import sqlite3

from conftest import engine_session, ffe_env, make_settings, run_ffe
from live_helpers import engine_loop, fx, wait_for  # noqa: F401
from test_live_books import climbing, strategy_order, strategy_settings


def null_cash(db) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        (value,) = conn.execute("SELECT value FROM kv WHERE key = 'portfolio'").fetchone()
        book = json.loads(value)
        book["cash"] = None
        conn.execute("UPDATE kv SET value = ? WHERE key = 'portfolio'", (json.dumps(book),))
    finally:
        conn.close()


def doctor_without_config(tmp_path, account) -> tuple[int, str]:
    """`ffe doctor` on the account's directories from a directory with no config file: the built-in defaults (a
    paper venue) are what it is given."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    proc = run_ffe(elsewhere, "doctor", "--data-dir", str(account / "data"), "--log-dir", str(account / "logs"),
                   env=ffe_env())
    return proc.returncode, proc.stdout + proc.stderr


async def test_a_live_account_is_not_judged_as_paper_by_a_doctor_given_the_defaults(tmp_path, fx):
    climbing(fx)
    account = tmp_path / "account"
    account.mkdir()
    settings = strategy_settings(account, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        async with engine_loop(running.engine):
            await strategy_order(fx)
            await wait_for(lambda: running.engine.portfolio.positions, timeout=30, what="the entry booked")
    code, out = doctor_without_config(tmp_path, account)
    assert code == 0 and "stored cash" not in out, out
    null_cash(settings.db_path)  # as stored while the cash is the exchange's, not yet reconciled
    code, out = doctor_without_config(tmp_path, account)
    assert code == 0 and "Traceback" not in out, out


async def test_a_paper_account_whose_stored_cash_is_null_is_damage_said_in_one_line(tmp_path):
    settings = make_settings(tmp_path)
    async with engine_session(settings):  # its books stored at the stop
        pass
    null_cash(settings.db_path)
    proc = run_ffe(tmp_path, "doctor", env=ffe_env())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cash" in proc.stderr, proc.stderr
