"""The operator's views and actions through `ffe ctl` and an attached console, against a headless engine in another
process (both real, over the control socket): the same commands of api.py, the same order path."""

from __future__ import annotations

import json
import signal
import socket

from conftest import db_rows, db_value, ffe_env, run_ffe, wait_until
from ffe_engine import fmt
from test_tui_attach import headless_engine
from test_tui_helpers import screen_text, until

from ffe_tui.app import ConsoleApp
from ffe_tui.panes import selected_position


def _ctl(tmp_path, *args: str):
    return run_ffe(tmp_path, "ctl", *args, timeout=60)


def _positions(tmp_path) -> list[dict]:
    """The engine's open positions, asked on its control socket: the tests poll this, and an `ffe ctl` process per
    poll would cost a third of a second of CPU each time (the `ffe ctl` verbs themselves are what the tests run)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(tmp_path / "data" / "ffe.sock"))
            sock.sendall(b'{"cmd": "trades", "args": {}}\n')
            answer = json.loads(sock.makefile("rb").readline() or b"{}")
    except OSError:
        return []
    return answer["result"]["positions"] if answer.get("ok") else []


def _halted_with_a_position(tmp_path) -> list[dict]:
    """HALTED with a position held: nothing closes it by itself (no stop-loss watch, no entries)."""
    for _ in range(5):
        wait_until(lambda: _positions(tmp_path), timeout=90, what="an open position")
        assert _ctl(tmp_path, "halt").returncode == 0
        held = _positions(tmp_path)
        if held:
            return held
        assert _ctl(tmp_path, "resume", "--yes").returncode == 0
    raise AssertionError("no position held at a halt in five tries")


def test_ctl_reads_the_views_and_closes_one_position_through_the_order_path(tmp_path, spawn_ffe):
    db = tmp_path / "data" / "ffe.db"
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: (tmp_path / "data" / "ffe.sock").exists() or not engine.alive(), timeout=60,
               what="the control socket")
    assert engine.alive(), engine.stderr
    wait_until(lambda: _positions(tmp_path), timeout=90, what="an open position")

    balances = _ctl(tmp_path, "balances")
    assert balances.returncode == 0, balances.stderr
    head = balances.stdout.splitlines()[0].split()
    assert head == ["asset", "free", "locked", "total", "value", "(USDT)"], head
    assert any(line.startswith("USDT") for line in balances.stdout.splitlines())

    trades = _ctl(tmp_path, "trades")  # positions come and go at 20 bars a second
    assert trades.returncode == 0, trades.stderr
    assert trades.stdout.split()[:4] == ["id", "symbol", "side", "qty"] or trades.stdout.startswith("no open trade")
    orders = _ctl(tmp_path, "orders")
    assert orders.returncode == 0, orders.stderr
    profit = _ctl(tmp_path, "profit")
    assert profit.returncode == 0 and profit.stdout.startswith("realised "), profit.stdout
    assert "drawdown now" in profit.stdout and "deepest" in profit.stdout
    why = _ctl(tmp_path, "why")
    assert why.returncode == 0 and "refused in the last market hour:" in why.stdout, why.stdout

    symbol = _halted_with_a_position(tmp_path)[0]["symbol"]
    unasked = _ctl(tmp_path, "close", symbol)  # not a terminal: --yes or nothing is sent
    assert unasked.returncode == 2 and "add --yes" in unasked.stderr, unasked.stderr
    missing = _ctl(tmp_path, "cancel", "ffe-no-such-order", "--yes")
    assert missing.returncode == 1 and "no open order ffe-no-such-order" in missing.stderr, missing.stderr
    # An order that has ended: what it became, from the engine's records (its entry filled), nothing cancelled.
    ended, filled, average, sym = db_rows(db, "SELECT client_order_id, filled, average, symbol FROM orders "
                                              "WHERE status = 'filled' ORDER BY created_ts LIMIT 1")[0]
    done = _ctl(tmp_path, "cancel", ended, "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"{ended} not cancelled: it had filled {fmt.qty(filled)} {sym} at "
                                  f"{fmt.price(average)}"), done.stdout + done.stderr

    refused = _ctl(tmp_path, "close", symbol, "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout.startswith(f"close {symbol} refused: ENGINE_STATE: value=HALTED"), refused.stdout
    assert db_value(db, "SELECT COUNT(*) FROM orders WHERE reason = 'operator'") == 0

    assert _ctl(tmp_path, "resume", "--yes").returncode == 0
    # Positions come and go at 20 bars a second: a close may find its position just closed by a stop-loss, or its
    # stop-loss order already working (the engine then refuses a second closing order).
    closing = None
    for _ in range(10):
        wait_until(lambda: _positions(tmp_path), timeout=90, what="an open position")
        held = _positions(tmp_path)
        if not held:
            continue
        closing = _ctl(tmp_path, "close", held[0]["symbol"], "--yes")
        if closing.returncode == 0:
            break
        assert ("no open position" in closing.stderr or "its closing order is already working" in closing.stderr), \
            closing.stdout + closing.stderr
    assert closing is not None and closing.returncode == 0, closing
    assert closing.stdout.startswith("closing "), closing.stdout
    cid = closing.stdout.split("order ")[1].split()[0]
    wait_until(lambda: db_value(db, "SELECT reason FROM trades WHERE exit_client_order_id = ?", (cid,))
               == "operator", timeout=30, what="the operator's close filled and recorded as a trade")
    engine.send(signal.SIGTERM)
    assert engine.wait() == 0, engine.stderr


async def test_the_attached_console_shows_the_views_and_its_close_meets_the_engines_order_path(tmp_path, spawn_ffe):
    engine, settings = headless_engine(spawn_ffe, tmp_path)
    symbol = _halted_with_a_position(tmp_path)[0]["symbol"]

    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.snap is not None and app.snap["positions"], "the attached snapshot")
        for key, shown in (("4", "locked (in orders)"), ("5", "realised"), ("6", "last market hour"),
                           ("7", "last candle BTC/USDT")):
            await pilot.press(key)
            await until(pilot, lambda: shown in screen_text(app), f"view {key} through the socket")
        await pilot.press("6")  # why no trades: the halt blocks entries, and what re-arms it
        await until(pilot, lambda: "ENGINE_STATE HALTED" in screen_text(app), "the halt among what blocks")
        await pilot.press("2")
        await until(pilot, lambda: symbol in screen_text(app), "the trades view")
        for _ in range(3):
            if (selected_position(app.panes["trades"], app.snap["positions"]) or {}).get("symbol") == symbol:
                break
            await pilot.press("j")
        await pilot.press("x")
        await until(pilot, lambda: f"Close {symbol}" in screen_text(app), "the close confirmation")
        assert "The engine is HALTED" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: f"close {symbol} refused: ENGINE_STATE" in screen_text(app),
                    "the engine's refusal, through the socket, on screen")
    assert engine.alive()
    assert symbol in [p["symbol"] for p in _positions(tmp_path)]
    engine.send(signal.SIGTERM)
    assert engine.wait() == 0, engine.stderr
