"""A live engine whose cash is the exchange's quote balance, not yet taken by a reconciliation, with fills booked on
it that the balance may already hold (a restore's recovered orders): `ffe ctl status`, its JSON and `ffe ctl
profit` and a console attached to it show no cash, equity or drawdown that counts those fills twice, for as long as
the exchange's balances cannot be read. Real `ffe run --headless --live` and `ffe ctl` subprocesses against the fake
Binance, the same SQLite database.
"""

from __future__ import annotations

import pytest

from ffe_engine import fmt
from ffe_engine.control import request
from ffe_tui.app import ConsoleApp
from live_helpers import fx, live_env, live_settings, processes, rows, run_ffe_async, wait_for  # noqa: F401
from test_cash_taken_transfer import ACCOUNT, restored_without_a_cash
from test_first_start_recovered_fill import stored_cash
from test_tui_attach import detach
from test_tui_helpers import status_text, until

UNRECONCILED = "not yet reconciled"


async def ctl(tmp_path, fx, *args: str) -> str:
    p = await run_ffe_async(tmp_path, "ctl", *args, env=live_env(fx), name="ctl")
    assert p.proc.returncode == 0, p.stderr
    return p.stdout


async def test_status_and_profit_show_no_cash_counting_recovered_fills_twice(tmp_path, fx, processes):
    db = tmp_path / "data" / "ffe.db"
    sock = tmp_path / "data" / "ffe.sock"
    engine = await restored_without_a_cash(tmp_path, fx, processes)
    venue_cash = fx.balances["USDT"].total
    status = (await request(sock, "status"))["result"]
    held = sum(p["quantity"] * p["last"] for p in status["positions"])
    assert held > 0, status
    # The cash and equity shown, if any, are the account's: no figure charged again for the recovered fills.
    assert status["cash"] is None or status["cash"] == pytest.approx(venue_cash), status
    assert status["equity"] is None or status["equity"] == pytest.approx(venue_cash + held), status
    assert status["drawdown_pct"] is None or status["drawdown_pct"] < 0.5, status

    said = await ctl(tmp_path, fx, "status")
    assert UNRECONCILED in said or fmt.money(venue_cash + held) in said, said
    profit = await ctl(tmp_path, fx, "profit")
    drawdown = profit.split("drawdown now ", 1)[1].split()[0]
    assert UNRECONCILED in profit or drawdown == fmt.pct(0.0), profit
    app = ConsoleApp(live_settings(tmp_path, fx), attach=True)
    async with app.run_test(size=(120, 24)) as pilot:
        await until(pilot, lambda: app.snap is not None and "PAUSED" in status_text(app), "the engine's status line")
        line = status_text(app).split("\n")[0]
        assert UNRECONCILED in line or f"equity {fmt.money(venue_cash + held)}" in line, line
        await detach(pilot, app)

    # The exchange's balances readable again: a reconciliation takes its cash, and the figures are shown.
    fx.on_request = None
    fx.clear_faults(ACCOUNT)
    await wait_for(lambda: stored_cash(db) == pytest.approx(venue_cash), timeout=40,
                   what="the exchange's cash taken by a reconciliation and stored")
    status = (await request(sock, "status"))["result"]
    assert status["cash"] == pytest.approx(venue_cash)
    assert status["equity"] == pytest.approx(venue_cash + held, rel=2e-3)
    said = await ctl(tmp_path, fx, "status")
    assert UNRECONCILED not in said and f"equity {fmt.money(status['equity'])}" in said, said
    assert rows(db, "SELECT COUNT(*) FROM fills") == [(3,)]
    assert await engine.stop() == 0, engine.stderr
