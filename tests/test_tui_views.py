"""The console's views (keys 1-7) and the actions on them, on a real engine: a seeded simulated market held at a
bar the test chooses, the paper venue, SQLite under tmp_path and a ManualClock, driven through Pilot at 80x24 and
120x40. Cancel and close go through the engine's order path; what the screen says is checked against what the
engine's database records."""

from __future__ import annotations

import asyncio
import re
import sqlite3

import pytest

from conftest import db_value, make_settings
from ffe_engine import fmt
from ffe_engine.clock import ManualClock
from ffe_engine.errors import ControlError
from ffe_engine.market.simulated import SimulatedFeed
from textual.app import App

from ffe_tui.app import ConsoleApp
from ffe_tui.panes import PositionsTable, selected_position
from ffe_tui.views import OrdersTable, TradesTable
from test_tui_helpers import (SIZE_IDS, SIZES, START_TS, db_path, notices, said_since, screen_text, status_text,
                              until)

HOLD_AT = 150  # live bars the market runs flat out before it waits for the test


class HeldFeed(SimulatedFeed):
    """The seeded market, flat out to HOLD_AT bars, then one bar at a time as the test releases them: the engine
    keeps running (its control surface answers) while nothing moves."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.allowed = HOLD_AT
        self.more = asyncio.Event()
        self.bars_out = 0

    async def candles(self):
        n = 0
        for c in self.iter_candles():
            if n % len(self.symbols) == 0:  # the first symbol of a new bar
                while self.bars_out >= self.allowed:
                    self.more.clear()
                    await self.more.wait()
                self.bars_out += 1
                if self.bars_out % 64 == 0:
                    await asyncio.sleep(0)
            n += 1
            yield c

    def release(self, bars: int = 1) -> None:
        self.allowed += bars
        self.more.set()


def held_console(tmp_path, tick_s: float | None = None, **overrides) -> tuple[ConsoleApp, HeldFeed]:
    """The console as `ffe run` builds it (as test_tui_helpers.console), on the held market; `tick_s`, how often it
    redraws from the engine's snapshot (its own period unless given)."""
    settings = make_settings(tmp_path, engine={"warmup_bars": 100}, market={"speed": 0.0, "seed": 7},
                             monitor={"enabled": False}, **overrides)
    clock = ManualClock()
    feed = HeldFeed(list(settings.engine.symbols), settings.engine.timeframe_ms, seed=7, clock=clock, speed=0.0,
                    start_ts=START_TS)
    if tick_s is None:
        return ConsoleApp(settings, feed=feed, clock=clock), feed
    return ConsoleApp(settings, feed=feed, clock=clock, tick_s=tick_s), feed


async def held(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.snap is not None and app.snap["bars"] >= HOLD_AT * 2, "the market to hold",
                timeout=60)


def rows(tmp_path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(db_path(tmp_path))
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


async def a_position(pilot) -> dict:
    app = pilot.app
    assert app.snap["positions"], "the seeded market holds a position at the hold (the test relies on it)"
    return app.snap["positions"][0]


# ---------------------------------------------------------------------------------------------------- the views
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_every_view_shows_the_engine_figures(tmp_path, size):
    app, feed = held_console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await held(pilot)
        pos = await a_position(pilot)

        await pilot.press("2")
        await until(pilot, lambda: "2 Trades" in screen_text(app) and pos["symbol"] in screen_text(app), "trades")
        await pilot.press("j", "k")  # the first trade, chosen: its id is on the line under the table at 80x24
        await until(pilot, lambda: pos["id"] in screen_text(app), "the chosen trade's id")
        text = screen_text(app)
        for cell in ("entry", "now", "%", "P&L", "SL", "TP", fmt.price(pos["entry"]), fmt.price(pos["stop_loss"]),
                     fmt.price(pos["take_profit"]), fmt.pct(pos["pnl_pct"], signed=True), pos["id"]):
            assert cell in text, cell

        await pilot.press("4")
        await until(pilot, lambda: "locked (in orders)" in screen_text(app), "balances")
        equity = fmt.money(app.snap["equity"])
        await until(pilot, lambda: equity in screen_text(app), "the balances' value equal to the equity")
        assert "USDT" in screen_text(app) and "BTC" in screen_text(app)

        await pilot.press("5")
        await until(pilot, lambda: "realised" in screen_text(app), "profit")
        n, wins, pnl = rows(tmp_path, "SELECT COUNT(*), SUM(pnl > 0), SUM(pnl) FROM trades")[0]
        text = screen_text(app)
        assert n > 0
        assert f"trades {n}   won {wins}" in text and fmt.money(pnl, signed=True) in text
        for heading in ("day (UTC)", "week", "month", "symbol", "win %", "fees", "drawdown now", "deepest"):
            assert heading in text, heading

        await pilot.press("6")
        await until(pilot, lambda: "refused by" in screen_text(app) or "no order of the strategy refused"
                    in screen_text(app), "why no trades")
        text = screen_text(app)
        (refused,) = rows(tmp_path, "SELECT COUNT(*) FROM decisions WHERE outcome IN ('rejected', 'refused')")[0]
        assert refused > 0 and "last market hour" in text and "last market day" in text
        assert "MAX_OPEN_POSITIONS" in text or "nothing blocks entries now" in text

        await pilot.press("7")
        await until(pilot, lambda: "last candle BTC/USDT" in screen_text(app), "health")
        text = screen_text(app)
        for words in ("HEALTHY", "engine running", "trading state RUNNING", "version", "up 0s", "breaker paper",
                      "CLOSED", "reconcile", "last candle ETH/USDT"):
            assert words in text, words

        await pilot.press("1")
        await until(pilot, lambda: "Ensemble votes" in screen_text(app) or "Log" in screen_text(app), "main view")
        assert "2 Trades" not in screen_text(app)  # no tab line on the main view: the log keeps it


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_why_no_trades_names_a_latched_drawdown_and_what_lifts_it(tmp_path, size):
    # A drawdown limit the seeded market breaches: the engine pauses once, and the gate refuses every entry.
    app, feed = held_console(tmp_path, risk={"max_drawdown_pct": 0.01})
    async with app.run_test(size=size) as pilot:
        await held(pilot)
        assert app.snap["state"] == "PAUSED" and "DRAWDOWN" in app.snap["state_reason"], app.snap["state_reason"]
        await pilot.press("6")
        # What lifts it: equity back above the floor, which only a held position can bring about.
        lifts = ("lifted by equity back above" if any(not p["dust"] for p in app.snap["positions"])
                 else "lifted by a higher risk.max_drawdown_pct (the configuration, then a restart): nothing is held")
        await until(pilot, lambda: lifts in " ".join(screen_text(app).split()), "the latched drawdown")
        text = screen_text(app)
        assert "DRAWDOWN" in text and "re-arm with time" in text
        # Over its limit as shown, with as many decimals as that takes (not "0.01% > 0.01%").
        shown, limit = re.search(r"DRAWDOWN\s+([\d.]+)% > ([\d.]+)%", " ".join(text.split())).groups()
        assert float(shown) > float(limit) == 0.01, (shown, limit)
        # The newest bar by its opening time, not "market time" beside an entry stamped at a bar's close after it.
        assert "newest bar" in text and "market time" not in text
        assert "ENGINE_STATE PAUSED" in text and "resume" in text
        refused = rows(tmp_path, "SELECT COUNT(*) FROM decisions WHERE outcome = 'rejected' AND reason LIKE "
                                 "'ENGINE_STATE:%'")[0][0]
        if refused:  # entries refused while PAUSED are counted under the gate that refused them
            assert "ENGINE_STATE" in text.split("blocking entries now")[0]


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_j_and_k_move_in_the_focused_table_and_digits_type_into_the_filter(tmp_path, size):
    # Both symbols held at the hold: they move together (the CORRELATION gate left open), and no exit closes them.
    app, feed = held_console(tmp_path, risk={"max_correlation": 1.0, "take_profit_atr": 100, "stop_loss_atr": 100})
    async with app.run_test(size=size) as pilot:
        await held(pilot)
        assert len(app.snap["positions"]) >= 2, "two positions at the hold (the test relies on it)"
        await pilot.press("2")
        table = app.query_one("#trades")
        await until(pilot, lambda: table.row_count >= 2, "the trades")
        assert app.focused is table and table.cursor_row == 0 and table.selected() is None
        await pilot.press("j")  # the first step lands on the row under the cursor, which was not drawn
        assert table.cursor_row == 0 and table.selected() is not None
        await pilot.press("j")
        assert table.cursor_row == 1
        await pilot.press("k")
        assert table.cursor_row == 0
        await pilot.press("down")
        assert table.cursor_row == 1
        await pilot.press("1")  # the main screen's positions pane takes the same moves
        positions = app.query_one(PositionsTable)
        assert app.focused is positions and positions.row_count >= 2 and positions.cursor_row == 0
        await pilot.press("k")
        assert positions.cursor_row == 0 and positions.selected() is not None
        await pilot.press("j")
        assert positions.cursor_row == 1
        await pilot.press("k")
        assert positions.cursor_row == 0
        await pilot.press("slash")
        await until(pilot, lambda: "Filter the log" in screen_text(app), "the filter dialog")
        await pilot.press("ctrl+u", "3", "K", "j")  # typed, not a view switch, a kill switch or a move
        assert app.screen.query_one("#filter-input").value == "3Kj"
        assert app.current_view == "main" and "KILL SWITCH" not in screen_text(app)


# ---------------------------------------------------------------------------------------------------- cancel one order
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_cancel_one_order_from_the_orders_view(tmp_path, size):
    app, feed = held_console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        # A working exit order: it rests at the paper venue until the next bar, which the market holds back.
        res = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"] / 2)
        assert res["accepted"], res
        cid = res["client_order_id"]
        await pilot.press("3")
        await until(pilot, lambda: "Orders" in screen_text(app) and pos["symbol"] in screen_text(app), "the order")
        await pilot.press("j")  # the order, chosen
        await pilot.press("c")
        await until(pilot, lambda: f"Cancel order {cid}" in screen_text(app), "the cancel confirmation")
        text = screen_text(app)
        assert "The venue is asked to cancel it" in text and "What filled before the cancel stays" in text
        await pilot.press("y")
        await until(pilot, lambda: f"cancelled {cid}" in screen_text(app), "the cancel reported")
        assert db_value(db_path(tmp_path), "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == "canceled"
        assert app.snap["orders"] == [] or all(o["client_order_id"] != cid for o in app.snap["orders"])
        assert any(p["symbol"] == pos["symbol"] and p["quantity"] == pos["quantity"]
                   for p in app.snap["positions"]), "the position is whole: nothing sold"
        await pilot.press("4")  # the paper venue released what the order held
        await until(pilot, lambda: "locked (in orders)" in screen_text(app), "balances")
        locked = (await app.engine.balances())["assets"]
        assert all(b["locked"] == 0 for b in locked), locked


async def test_an_order_that_fills_while_its_cancel_is_asked_changes_the_dialog_s_words_and_its_key(tmp_path):
    """The cancel dialog's body says an order that ended while it was asked is no longer open and that nothing is
    cancelled: its key then says what it does (asks what the order became), not CANCEL ORDER."""
    app, feed = held_console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        res = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"] / 2)
        await pilot.press("3")
        await until(pilot, lambda: app.query_one(OrdersTable).row_count == 1, "the orders view")
        await pilot.press("j", "c")
        await until(pilot, lambda: f"Cancel order {res['client_order_id']}" in screen_text(app), "the dialog")
        assert "CANCEL ORDER" in screen_text(app)
        feed.release()  # the next bar fills it
        await until(pilot, lambda: "no longer open" in screen_text(app), "the order ended, said in the dialog")
        assert "CANCEL ORDER" not in screen_text(app) and "ASK WHAT IT BECAME" in screen_text(app), screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: "Cancel order" not in screen_text(app), "the dialog closed")


async def test_any_other_key_cancels_the_cancel_and_the_order_stays(tmp_path):
    app, feed = held_console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        res = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"] / 2)
        await pilot.press("c")  # from the main view: shows the orders first
        await until(pilot, lambda: app.current_view == "orders" and app.query_one(OrdersTable).row_count == 1,
                    "the orders view")
        await pilot.press("j")  # the order, chosen
        await until(pilot, lambda: res["client_order_id"][:20] in screen_text(app), "the chosen order")
        await pilot.press("c")
        await until(pilot, lambda: "Cancel order" in screen_text(app), "the cancel confirmation")
        await pilot.press("n")
        await until(pilot, lambda: "Cancel order" not in screen_text(app), "the dialog closed")
        assert db_value(db_path(tmp_path), "SELECT status FROM orders WHERE client_order_id = ?",
                        (res["client_order_id"],)) == "open"


# ---------------------------------------------------------------------------------------------------- close one position
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_close_one_position_through_the_order_path(tmp_path, size):
    app, feed = held_console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        others = {p["symbol"] for p in app.snap["positions"]} - {pos["symbol"]}
        await pilot.press("2")
        await until(pilot, lambda: pos["symbol"] in screen_text(app), "the trades view")
        await pilot.press("j", "k")  # the first trade, chosen
        await pilot.press("x")
        await until(pilot, lambda: f"Close {pos['symbol']}" in screen_text(app), "the close confirmation")
        assert "order path" in screen_text(app) and "halt" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: f"closing {pos['symbol']}: order" in screen_text(app), "the closing order")
        (cid, reason, reduce_only) = rows(tmp_path, "SELECT client_order_id, reason, reduce_only FROM orders "
                                                    "WHERE reason = 'operator'")[0]
        assert reduce_only == 1
        feed.release(1)  # the next bar: the paper venue fills it
        await until(pilot, lambda: all(p["symbol"] != pos["symbol"] for p in app.snap["positions"]),
                    "the position closed")
        db = db_path(tmp_path)
        await until(pilot, lambda: db_value(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,))
                    == "filled", "the closing order filled, in the journal")
        assert db_value(db, "SELECT reason FROM trades WHERE exit_client_order_id = ?", (cid,)) == "operator"
        assert others <= {p["symbol"] for p in app.snap["positions"]}, "only the selected position was closed"


async def test_a_close_confirmed_after_its_position_was_closed_and_another_opened_sends_nothing(tmp_path):
    """The dialog describes one position (its quantity, entry and P&L); `y` must close that one or nothing. Here it is
    closed from elsewhere (`ffe ctl close`) while the dialog is open, and a new position opens in the same symbol:
    the confirmation is refused, said on screen, and the new position stays open."""
    app, feed = held_console(tmp_path, risk={"max_correlation": 1.0, "max_open_positions": 5})  # room for an entry
    async with app.run_test(size=(120, 40)) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        sym = pos["symbol"]
        await pilot.press("2")
        await until(pilot, lambda: sym in screen_text(app), "the trades view")
        await pilot.press("j", "k")  # the first trade, chosen
        await pilot.press("x")
        await until(pilot, lambda: f"Close {sym}" in screen_text(app), "the close confirmation")
        assert (await app.engine.close_position(sym, by="ctl"))["accepted"]
        feed.release(1)
        await until(pilot, lambda: all(p["symbol"] != sym for p in app.snap["positions"]), "closed from elsewhere")
        bought = await app.engine.operator_order(sym, "buy", pos["quantity"])
        assert bought["accepted"], bought
        feed.release(1)
        await until(pilot, lambda: any(p["symbol"] == sym for p in app.snap["positions"]), "a new position")
        (new,) = [p for p in app.snap["positions"] if p["symbol"] == sym]
        assert new["opened_ts"] != pos["opened_ts"]
        sent = rows(tmp_path, "SELECT client_order_id FROM orders")
        await pilot.press("y")
        await until(pilot, lambda: any(f"{sym}: the position opened" in n.message and "no longer open" in n.message
                                       for n in app._notifications), "the refusal on screen")
        assert rows(tmp_path, "SELECT client_order_id FROM orders") == sent, "nothing was sent"
        assert [p["opened_ts"] for p in app.engine.snapshot()["positions"] if p["symbol"] == sym] == [new["opened_ts"]]
        # And with no position in the symbol at all, the one shown is said to be gone (not "no open position").
        assert (await app.engine.close_position(sym, by="ctl"))["accepted"]
        feed.release(1)
        await until(pilot, lambda: all(p["symbol"] != sym for p in app.snap["positions"]), "closed again")
        with pytest.raises(ControlError, match=f"{sym}: the position opened .* is no longer open; nothing was sent"):
            await app.engine.close_position(sym, by="operator", opened_ts=new["opened_ts"])


@pytest.mark.parametrize("view", ["2", "1"], ids=["trades", "main"])
async def test_a_position_closed_and_opened_again_between_two_redraws_is_never_the_selected_one(tmp_path, view):
    """The console redraws from the engine's snapshot only, and here it is held between two redraws (as a console
    behind a stalled SSH session): meanwhile the selected position is closed (`ffe ctl close`) and another opens in
    the same symbol by an operator's order. At the next redraw the new position is a row of its own, which the
    operator never chose: `x` asks to close nothing and says so, and the new position stays open. In the trades view
    its trade id tells it from the one that closed, though no decision opened it."""
    app, feed = held_console(tmp_path, tick_s=3600.0, risk={"max_correlation": 1.0, "max_open_positions": 5})
    async with app.run_test(size=(120, 40)) as pilot:
        def engine_positions() -> list[dict]:
            return app.engine.snapshot()["positions"] if app.engine is not None else []

        await until(pilot, lambda: app.engine is not None and app.engine.snapshot()["bars"] >= HOLD_AT * 2
                    and engine_positions(), "the market to hold with a position", timeout=60)
        table = app.query_one(TradesTable) if view == "2" else app.query_one(PositionsTable)
        await pilot.press(view)  # a redraw
        await until(pilot, lambda: table.row_count == len(engine_positions()), "the positions on screen")
        await pilot.press("down", "up")  # the first row, chosen
        pos = engine_positions()[0]
        sym = pos["symbol"]
        ids = [str(c) for c in table.get_row_at(0)] if view == "2" else []
        await app.engine.set_approval_mode("manual", by="ctl")  # the strategy's entries wait: only ours goes out
        assert (await app.engine.close_position(sym, by="ctl"))["accepted"]
        feed.release(1)
        await until(pilot, lambda: all(p["symbol"] != sym for p in engine_positions()), "closed from elsewhere")
        bought = await app.engine.operator_order(sym, "buy", pos["quantity"])
        assert bought["accepted"], bought
        feed.release(1)
        await until(pilot, lambda: any(p["symbol"] == sym for p in engine_positions()), "a new position")
        (new,) = [p for p in engine_positions() if p["symbol"] == sym]
        assert new["opened_ts"] != pos["opened_ts"] and new["id"] is None
        await pilot.press(view)  # the next redraw: the position closed and the new one in a single step
        await until(pilot, lambda: table.row_count == len(engine_positions()), "the new position on screen")
        assert table.selected() is None and not table.show_cursor, "a position the operator never chose is selected"
        if view == "2":
            (row,) = [[str(c) for c in table.get_row(k)] for k in table.rows if table.get_row(k)[0] == sym]
            assert row[-1] not in ("-", ids[-1]), (row, ids)  # its id says it is another position
        sent = rows(tmp_path, "SELECT client_order_id FROM orders")
        said = notices(app)
        await pilot.press("x")
        await until(pilot, lambda: said_since(app, said, "the position you had selected has closed"),
                    "the console says nothing is selected", timeout=10)
        assert f"Close {sym}" not in screen_text(app), "a close asked of a position never chosen"
        assert rows(tmp_path, "SELECT client_order_id FROM orders") == sent, "nothing was sent"
        assert [p["opened_ts"] for p in engine_positions() if p["symbol"] == sym] == [new["opened_ts"]]


async def test_a_cancel_confirmed_after_its_order_filled_says_it_filled(tmp_path):
    """The cancel dialog describes an open order; the order fills while it is asked. The dialog then says it is no
    longer open, and `y` answers what the order became, from the engine's records: filled, how much, at what price."""
    app, feed = held_console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        res = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"] / 2)
        assert res["accepted"], res
        cid = res["client_order_id"]
        await pilot.press("3")
        await until(pilot, lambda: cid in screen_text(app), "the order")
        await pilot.press("j")  # the order, chosen
        await pilot.press("c")
        await until(pilot, lambda: f"Cancel order {cid}" in screen_text(app), "the cancel confirmation")
        feed.release(1)  # the next bar: the paper venue fills it while the dialog is open
        db = db_path(tmp_path)
        await until(pilot, lambda: db_value(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,))
                    == "filled", "the order filled, in the journal")
        await until(pilot, lambda: "no longer open" in app.screen.body, "the dialog says the order is no longer open")
        filled, average = rows(tmp_path, "SELECT filled, average FROM orders WHERE client_order_id = ?", cid)[0]
        await pilot.press("y")
        answer = f"{cid} not cancelled: it had filled {fmt.qty(filled)} {pos['symbol']} at {fmt.price(average)}"
        await until(pilot, lambda: any(answer in n.message for n in app._notifications), "what the order became")
        assert answer in " ".join(screen_text(app).split())  # and under the table, once the notification has gone


async def test_a_confirmation_s_counts_follow_the_engine_while_it_is_open(tmp_path):
    """The quit dialog says how many orders and positions stay open; one that opens while it is asked is counted
    when `y` comes, not left as it was when the dialog opened."""
    app, feed = held_console(tmp_path, risk={"max_correlation": 1.0, "max_open_positions": 5})
    async with app.run_test(size=(120, 40)) as pilot:
        await held(pilot)
        held_now = len(app.snap["positions"])
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        assert f"{held_now} position(s) stay open" in app.screen.body, app.screen.body
        sym = next(s for s in app.settings.engine.symbols if s not in {p["symbol"] for p in app.snap["positions"]})
        bought = await app.engine.operator_order(sym, "buy", 200.0 / app.engine.portfolio.last_price[sym])
        assert bought["accepted"], bought
        feed.release(1)
        await until(pilot, lambda: len(app.snap["positions"]) == held_now + 1, "another position")
        await until(pilot, lambda: f"{held_now + 1} position(s) stay open" in app.screen.body, "the count followed")
        await pilot.press("n")


async def test_dust_shows_no_stop_loss_or_take_profit_on_the_main_screen_and_the_trades_view(tmp_path):
    """Coins left below what the venue takes an order for are dust: no stop-loss or take-profit is watched for them,
    so none is shown, where a position shows both."""
    app, feed = held_console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        sym, price = pos["symbol"], pos["last"]
        left = 5.0 / price  # worth 5, under the paper venue's minimum order value (10)
        sold = await app.engine.operator_order(sym, "sell", pos["quantity"] - left)
        assert sold["accepted"], sold
        feed.release(1)  # the next bar: the paper venue fills it
        await until(pilot, lambda: any(p["symbol"] == sym and p["dust"] for p in app.snap["positions"]), "dust")

        def row_of(table) -> list[str]:
            (row,) = [[str(c) for c in table.get_row(key)] for key in table.rows if str(key.value).split()[0] == sym]
            return row

        positions = app.query_one(PositionsTable)
        await until(pilot, lambda: "dust" in row_of(positions), "the dust row")
        assert row_of(positions)[-3:-1] == ["-", "-"], row_of(positions)
        await pilot.press("2")
        trades = app.query_one(TradesTable)
        await until(pilot, lambda: trades.row_count > 0, "the trades view")
        sl, tp = (trades.get_column_index(c) for c in ("sl", "tp"))
        assert [row_of(trades)[sl], row_of(trades)[tp]] == ["-", "-"], row_of(trades)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_the_trades_view_shows_dust_as_dust_and_its_close_key_refuses_it_without_a_dialog(tmp_path, size):
    """Dust is no position to close: the trades view gives it the side `dust`, the line under the table offers no
    close, and the close key says it is below the venue's minimum order and left as dust (as `ffe ctl close` does),
    with no dialog offering to sell it and nothing sent."""
    app, feed = held_console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await held(pilot)
        await app.engine.pause(reason="test", by="test")  # no new entry over the dust meanwhile
        first, *others = app.snap["positions"]
        for pos in others:
            sold = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"])
            assert sold["accepted"], sold
        sym, price = first["symbol"], first["last"]
        sold = await app.engine.operator_order(sym, "sell", first["quantity"] - 5.0 / price)  # 5 left: under 10
        assert sold["accepted"], sold
        feed.release(2)
        await until(pilot, lambda: [(p["symbol"], p["dust"]) for p in app.snap["positions"]] == [(sym, True)],
                    "only dust held")
        await pilot.press("2")
        trades = app.query_one(TradesTable)
        await until(pilot, lambda: trades.row_count == 1, "the dust row in the trades view")
        (row,) = [[str(c) for c in trades.get_row(key)] for key in trades.rows]
        assert row[trades.get_column_index("side")] == "dust", row
        await pilot.press("j")
        await until(pilot, lambda: "below the venue's minimum order" in screen_text(app), "the dust said under it")
        assert "close at market" not in screen_text(app)
        sent = rows(tmp_path, "SELECT client_order_id FROM orders")
        before = notices(app)
        await pilot.press("x")
        await until(pilot, lambda: said_since(app, before, "left as dust"), "the close refused as dust")
        assert said_since(app, before, "below the venue's minimum order")
        assert not said_since(app, before, "no longer open")
        assert f"Close {sym}" not in screen_text(app) and "at market" not in screen_text(app)
        assert rows(tmp_path, "SELECT client_order_id FROM orders") == sent  # nothing sent


async def test_the_dialogs_count_dust_as_dust_not_as_a_position_left_open(tmp_path):
    """Coins below what the venue takes an order for are no position to watch or close: the kill switch, flatten
    and quit dialogs count the positions without them, and name the dust apart."""
    app, feed = held_console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await held(pilot)
        await app.engine.pause(reason="test", by="test")  # no new entry meanwhile; sales go on
        first, *others = app.snap["positions"]
        for pos in others:
            sold = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"])
            assert sold["accepted"], sold
        sym, price = first["symbol"], first["last"]
        sold = await app.engine.operator_order(sym, "sell", first["quantity"] - 5.0 / price)  # 5 left: under 10
        assert sold["accepted"], sold
        feed.release(2)
        await until(pilot, lambda: [(p["symbol"], p["dust"]) for p in app.snap["positions"]] == [(sym, True)],
                    "only dust held")
        for key, title in (("K", "KILL SWITCH"), ("F", "FLATTEN"), ("q", "Quit the console")):
            await pilot.press(key)
            await until(pilot, lambda: title in screen_text(app), f"the {title} confirmation")
            body = " ".join(app.screen.body.split())
            assert "Positions (1)" not in body and "1 position(s)" not in body, (title, body)
            assert f"dust in {sym}".lower() in body.lower(), (title, body)
            await pilot.press("n")
            await until(pilot, lambda: title not in screen_text(app), f"the {title} confirmation closed")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_a_halted_engine_refuses_the_close_and_the_reason_is_shown(tmp_path, size):
    app, feed = held_console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        await pilot.press("K")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch confirmation")
        await pilot.press("y")
        await until(pilot, lambda: app.snap["state"] == "HALTED", "HALTED")
        await pilot.press("2")
        await until(pilot, lambda: pos["symbol"] in screen_text(app), "the trades view")
        await pilot.press("j", "k")  # the first trade, chosen
        await pilot.press("x")
        await until(pilot, lambda: f"Close {pos['symbol']}" in screen_text(app), "the close confirmation")
        assert "The engine is HALTED" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: f"close {pos['symbol']} refused: ENGINE_STATE" in screen_text(app),
                    "the refusal and its reason on screen")
        assert "HALTED" in screen_text(app)
        assert rows(tmp_path, "SELECT * FROM orders WHERE reason = 'operator'") == [], "nothing was journaled"
        assert any(p["symbol"] == pos["symbol"] for p in app.snap["positions"])
        # The refusal is in the audit trail with its gates, as for every caller of the order path.
        gates = rows(tmp_path, "SELECT code, passed FROM gate_results WHERE decision_id = ? AND passed = 0",
                     pos["id"])
        assert ("ENGINE_STATE", 0) in gates


async def test_the_health_of_an_engine_whose_feed_ended_says_stopped_never_running(tmp_path):
    """The trading state stays RUNNING when the market feed ends; the engine itself has stopped, and the health view
    must say that first."""
    settings = make_settings(tmp_path, engine={"warmup_bars": 100}, market={"speed": 0.0, "seed": 7},
                             monitor={"enabled": False})
    clock = ManualClock()
    feed = SimulatedFeed(list(settings.engine.symbols), settings.engine.timeframe_ms, seed=7, clock=clock, speed=0.0,
                         start_ts=START_TS, max_bars=20)
    app = ConsoleApp(settings, feed=feed, clock=clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.feed_ended, "the market feed to end")
        await pilot.press("7")
        await until(pilot, lambda: "last candle BTC/USDT" in screen_text(app), "health")
        text = screen_text(app)
        assert "DOWN" in text and "engine STOPPED" in text and "trading state RUNNING" in text, text
        assert "engine RUNNING" not in text and "engine running" not in text, text
        # The status line too: the state it stopped in, as `ffe ctl status` and an attached console say it.
        status = status_text(app)
        assert "STOPPED" in status and "was RUNNING" in status, status
        # Nothing runs to halt or flatten: said at once, not asked, then refused.
        for key in ("K", "F"):
            await pilot.press(key)
            await until(pilot, lambda: any("has stopped" in n.message for n in app._notifications),
                        f"{key}: the engine has stopped")
            assert "KILL SWITCH" not in screen_text(app) and "FLATTEN" not in screen_text(app)
            app.clear_notifications()


class _Tables(App):
    """The trades, orders and positions tables alone, at the console's widest columns."""

    CSS = "DataTable { height: 3; }"

    def compose(self):
        yield TradesTable(id="trades")
        yield OrdersTable(id="orders")
        yield PositionsTable(id="positions")


async def test_the_widest_figures_keep_a_space_between_columns():
    """Prices of six figures, a P&L of -12,345.67 (-9,999.99 on the main pane), an age of days, a take_profit order:
    every figure stays apart from the next column's (the tables have no cell padding; each width holds one space)."""
    t0 = 1_700_000_000_000
    pos = {"symbol": "BTC/USDT", "side": "buy", "quantity": 0.1234567, "entry": 99_999.99, "last": 99_999.9,
           "pnl_pct": -12.34, "unrealised": -12_345.67, "opened_ts": t0, "age_s": 3 * 86_400.0,
           "stop_loss": 100_000.1, "take_profit": 123_456.7, "id": "d0123456789ab"}
    order = {"client_order_id": "ffe-" + "a" * 24, "symbol": "BTC/USDT", "side": "sell", "quantity": 0.1234567,
             "filled": 0.0123456, "type": "limit", "price": 123_456.7, "status": "in_doubt", "reason": "take_profit",
             "age_s": 3 * 86_400.0}
    app = _Tables()
    async with app.run_test(size=(200, 20)) as pilot:
        app.query_one(TradesTable).show([pos])
        app.query_one(OrdersTable).show([order])
        app.query_one(PositionsTable).show([{**pos, "unrealised": -9_999.99}])
        await pilot.pause()
        lines = screen_text(app).splitlines()
    rows = {
        "trades": [pos["symbol"], "long", fmt.qty(pos["quantity"]), fmt.price(99_999.99), fmt.price(99_999.9),
                   "-12.34%", "-12,345.67", fmt.price(100_000.1), fmt.price(123_456.7), "3d00h", "d0123456789ab"],
        "orders": ["BTC/USDT", "sell", fmt.qty(0.1234567), fmt.qty(0.0123456), "limit", fmt.price(123_456.7),
                   "in_doubt", "take_profit", "3d00h", order["client_order_id"]],
        "positions": ["BTC/USDT", "long", fmt.qty(0.1234567), fmt.price(99_999.99), fmt.price(99_999.9), "-9,999.99",
                      fmt.price(100_000.1), fmt.price(123_456.7), "3d00h"],
    }
    for name, cells in rows.items():
        assert any(line.split() == cells for line in lines), (name, cells, lines)


# ---------------------------------------------------------------------------------------------------- what is selected
async def test_x_and_c_act_on_no_row_the_operator_never_moved_to(tmp_path):
    """A fresh console: the positions pane has the focus and its first row is under the cursor, the trades and orders
    views show their rows the same way; the operator never moved to one. `x` and `c` ask about nothing and say what
    to do; a move onto a row chooses it."""
    app, feed = held_console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        res = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"] / 2)
        assert res["accepted"], res
        positions = app.query_one(PositionsTable)
        await until(pilot, lambda: positions.row_count > 0, "the positions")
        assert positions.selected() is None and not positions.show_cursor, "a position never chosen is selected"
        for view in ("1", "2"):
            await pilot.press(view)
            said = notices(app)
            await pilot.press("x")
            await until(pilot, lambda: said_since(app, said, "no position chosen"),
                        f"view {view}: the console says no position is chosen", timeout=10)
            assert "Close " not in screen_text(app), f"view {view}: a close asked of a position never chosen"
        await pilot.press("3")
        orders = app.query_one(OrdersTable)
        await until(pilot, lambda: orders.row_count == 1, "the order in the orders view")
        assert orders.selected() is None and not orders.show_cursor
        said = notices(app)
        await pilot.press("c")
        await until(pilot, lambda: said_since(app, said, "no order chosen"), "the console says no order is chosen",
                    timeout=10)
        assert "Cancel order" not in screen_text(app), "a cancel asked of an order never chosen"
        await pilot.press("j")
        await pilot.press("c")
        await until(pilot, lambda: f"Cancel order {res['client_order_id']}" in screen_text(app),
                    "the cancel confirmation, once chosen")
        await pilot.press("n")
        assert db_value(db_path(tmp_path), "SELECT status FROM orders WHERE client_order_id = ?",
                        (res["client_order_id"],)) == "open"


async def test_a_position_that_opens_after_the_selected_one_closed_and_the_table_emptied_is_not_selected(tmp_path):
    """The operator selects a position; every position closes (from elsewhere, `ffe ctl close`), and a new one opens
    later (the strategy may open others on the same bar). One lands under the cursor, in the trades view and on the
    main screen, but he never chose it: `x` asks to close nothing and says so, even after a move made while there was
    nothing to move to; a move onto one selects it."""
    app, feed = held_console(tmp_path, risk={"max_correlation": 1.0, "max_open_positions": 5})
    async with app.run_test(size=(80, 24)) as pilot:
        await held(pilot)
        await pilot.press("2")
        trades = app.query_one(TradesTable)
        await until(pilot, lambda: trades.row_count == len(app.snap["positions"]) > 0, "the trades view")
        await pilot.press("j", "k")
        chosen = selected_position(trades, app.snap["positions"])
        assert chosen is not None
        for p in app.snap["positions"]:
            assert (await app.engine.close_position(p["symbol"], by="ctl"))["accepted"]
        feed.release(1)
        await until(pilot, lambda: trades.row_count == 0 and not app.snap["positions"], "every position closed")
        await pilot.press("j")  # a move to nothing: the position still to come is not chosen by it
        sym = next(s for s in app.settings.engine.symbols if s != chosen["symbol"])
        bought = await app.engine.operator_order(sym, "buy", 200.0 / app.engine.portfolio.last_price[sym])
        assert bought["accepted"], bought
        feed.release(1)
        positions = app.query_one(PositionsTable)
        # The trades view's chosen position has closed; on the main screen none was ever chosen.
        for view, table, words in (("2", trades, "the position you had selected has closed"),
                                   ("1", positions, "no position chosen")):
            await pilot.press(view)
            await until(pilot, lambda: sym in [str(k.value).split()[0] for k in table.rows],
                        f"the new position shown (view {view})")
            assert table.selected() is None and not table.show_cursor, f"view {view}: a position never chosen"
            said = notices(app)
            await pilot.press("x")
            await until(pilot, lambda: said_since(app, said, words),
                        f"view {view}: the console says nothing is selected", timeout=10)
            assert f"Close {sym}" not in screen_text(app), f"view {view}: a close asked of a position never chosen"
        await pilot.press("down")
        now = selected_position(positions, app.snap["positions"])
        assert now is not None and positions.show_cursor
        await pilot.press("x")
        await until(pilot, lambda: f"Close {now['symbol']}" in screen_text(app), "the close confirmation, once chosen")
        await pilot.press("n")
        await until(pilot, lambda: f"Close {now['symbol']}" not in screen_text(app), "the dialog closed")
        assert sym in [p["symbol"] for p in app.engine.snapshot()["positions"]]


async def test_an_order_sent_after_the_selected_one_ended_and_the_table_emptied_is_not_selected(tmp_path):
    """The operator selects an open order; it is cancelled from elsewhere (`ffe ctl cancel`) and the orders view is
    empty until another order is sent. That order lands under the cursor, but he never chose it: `c` asks to cancel
    nothing and says so; a move onto it selects it."""
    app, feed = held_console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        first = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"] / 2)
        assert first["accepted"], first
        await pilot.press("3")
        orders = app.query_one(OrdersTable)
        await until(pilot, lambda: orders.row_count == 1, "the order in the orders view")
        await pilot.press("j", "k")
        assert orders.selected() == first["client_order_id"]
        assert (await app.engine.operator_cancel(first["client_order_id"], by="ctl")).get("cancelled")
        again = await app.engine.operator_cancel(first["client_order_id"], by="ctl")  # what it became, said
        assert not again["cancelled"] and again["reason"] == "it had been cancelled, nothing filled", again
        await until(pilot, lambda: orders.row_count == 0, "the orders view empty")
        await pilot.press("j")  # a move to nothing
        second = await app.engine.operator_order(pos["symbol"], "sell", pos["quantity"] / 2)
        assert second["accepted"], second
        cid = second["client_order_id"]
        await until(pilot, lambda: orders.row_count == 1, "the new order in the orders view")
        assert orders.selected() is None and not orders.show_cursor, "an order the operator never chose is selected"
        said = notices(app)
        await pilot.press("c")
        await until(pilot, lambda: said_since(app, said, "the order you had selected is no longer open"),
                    "the console says nothing is selected", timeout=10)
        assert f"Cancel order {cid}" not in screen_text(app), "a cancel asked of an order never chosen"
        await pilot.press("k")
        await pilot.press("c")
        await until(pilot, lambda: f"Cancel order {cid}" in screen_text(app), "the cancel confirmation, once chosen")
        await pilot.press("n")
        await until(pilot, lambda: "Cancel order" not in screen_text(app), "the dialog closed")
        assert db_value(db_path(tmp_path), "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == "open"


def test_the_health_view_s_first_lines_fit_an_80_column_pane_whatever_the_uptime():
    # At 80x24 the pane has 76 columns: the verdict, the engine and its trading state, the version and the uptime
    # on one line ran past them, and a long uptime wrapped onto the next line on its own.
    from rich.console import Console

    from ffe_tui.views import health_view

    h = {"status": "healthy", "problems": [], "loop_age_s": 0.2, "loop_stale_s": 60, "bar_age_s": {},
         "data_stale_s": 180, "breakers": [], "reconcile": "ok"}
    snap = {"state": "RUNNING", "mode": "PAPER", "version": "0.2.0", "uptime_s": 3 * 86_400 + 4 * 3600 + 5 * 60}
    console = Console(width=76, record=True, color_system=None)
    console.print(health_view(h, snap))
    lines = console.export_text().splitlines()
    assert any("HEALTHY" in line and "trading state RUNNING (PAPER)" in line for line in lines), lines
    [uptime] = [line for line in lines if "version 0.2.0" in line]
    assert uptime.rstrip().endswith(f"up {fmt.duration(snap['uptime_s'])}"), lines


async def test_the_close_dialog_says_the_symbol_s_working_entry_is_cancelled_first_and_the_close_does_it(tmp_path):
    """A buy of the symbol still works (the paper venue fills it at the next candle, which the held market does not
    bring): the close dialog says it is cancelled first, and `y` cancels it and sells the position."""
    app, feed = held_console(tmp_path, risk={"max_position_pct": 30, "max_concentration_pct": 60, "max_var_pct": 100})
    async with app.run_test(size=(120, 40)) as pilot:
        await held(pilot)
        pos = await a_position(pilot)
        res = await app.engine.operator_order(pos["symbol"], "buy", pos["quantity"] / 10)
        assert res["accepted"], res
        entry = res["client_order_id"]
        await pilot.press("2")
        await until(pilot, lambda: app.query_one(TradesTable).row_count > 0, "the trades")
        await pilot.press("j")
        await pilot.press("x")
        await until(pilot, lambda: f"Close {pos['symbol']}" in screen_text(app), "the close dialog")
        assert f"its entry {entry} still works" in screen_text(app), screen_text(app)
        assert "cancelled first" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: rows(tmp_path, "SELECT status FROM orders WHERE client_order_id = ?", entry)
                    == [("canceled",)], "the entry cancelled")
        await until(pilot, lambda: "cancelled first" in " ".join(notices(app)) or "cancelled first" in
                    screen_text(app), "the outcome saying the entry was cancelled first")
