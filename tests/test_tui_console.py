"""The console on a real engine (simulated market, SQLite under tmp_path), driven through Textual's Pilot at 80x24
and 120x40: what the operator presses, what the screen then says, and what the engine's own database records."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import pytest

from textual import events

import forked_ffe
from conftest import audit_lines, db_value, engine_session, ffe_cmd, ffe_env, make_settings
from ffe_engine import logs
from ffe_engine.clock import ManualClock
from ffe_engine.events import EVENT_TYPES
from ffe_engine.market.simulated import SimulatedFeed
from ffe_tui.app import HISTORY_LINES, LOG_LINES
from ffe_tui.state import EVENT_NAMES
from test_tui_helpers import (SIZE_IDS, SIZES, audit_path, banner_text, bars_taken, console, db_path, running,
                              screen_text, status_text, until)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_pause_then_resume(tmp_path, size):
    app = console(tmp_path)
    db = db_path(tmp_path)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await pilot.press("p")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "PAUSED", "PAUSED stored")
        await until(pilot, lambda: "PAUSED" in status_text(app), "PAUSED on the status line")
        assert db_value(db, "SELECT by FROM engine_state") == "operator"
        await pilot.press("p")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "RUNNING", "RUNNING stored")
        await until(pilot, lambda: "RUNNING" in status_text(app), "RUNNING on the status line")


async def _open_order(pilot, app) -> str:
    """A market order the paper venue holds open until the next candle (the market is slowed down for this)."""
    await until(pilot, lambda: app.snap["bars"] >= 2, "the first live bar")
    res = await app.engine.operator_order("BTC/USDT", "buy", 0.01)
    assert res["accepted"], res
    await until(pilot, lambda: any(o["client_order_id"] == res["client_order_id"] for o in app.snap["orders"]),
                "the open order in the snapshot")
    return res["client_order_id"]


class _HeldFeed(SimulatedFeed):
    """The simulated market, held still while `hold` is set, as a quiet market would be: an order placed then
    stays open at the paper venue (which fills at the next candle) for as long as the test needs, however slowly
    a loaded machine runs it. `parked` is set while the feed waits, the engine then idle between bars."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold = False
        self.parked = asyncio.Event()

    async def candles(self):
        async for c in super().candles():
            while self.hold:
                self.parked.set()
                await asyncio.sleep(0.05)
            yield c


async def _held_open_order(pilot, app) -> str:
    """A console's engine running on a _HeldFeed, the market held still, with one order open at the paper venue."""
    await running(pilot)
    await until(pilot, lambda: app.snap["bars"] >= 2, "the first live bar")
    feed = app.engine.feed
    feed.hold = True
    await until(pilot, feed.parked.is_set, "the market held still")
    return await _open_order(pilot, app)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_kill_switch_K_then_y_halts_cancels_and_survives_a_restart(tmp_path, size):
    db = db_path(tmp_path)
    app = console(tmp_path, speed=4.0, feed_class=_HeldFeed)
    async with app.run_test(size=size) as pilot:
        cid = await _held_open_order(pilot, app)
        await pilot.press("K")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch confirmation")
        await pilot.press("enter")  # the default is cancel
        await until(pilot, lambda: "KILL SWITCH" not in screen_text(app), "the confirmation to close")
        assert db_value(db, "SELECT state FROM engine_state") == "RUNNING"
        await pilot.press("K")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch confirmation")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: db_value(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,))
                    == "canceled", "the open order cancelled in the journal")
        await until(pilot, lambda: "HALTED" in status_text(app), "HALTED on the status line")
        await until(pilot, lambda: cid in screen_text(app) and "cancelled 1" in screen_text(app),
                    "what was cancelled, on screen")
    # A new console on the same data directory: the engine starts HALTED and says so.
    again = console(tmp_path, speed=0.2)
    async with again.run_test(size=size) as pilot:
        await until(pilot, lambda: again.snap is not None and "HALTED" in status_text(again), "HALTED after restart")
        assert again.snap["state"] == "HALTED"
    assert db_value(db, "SELECT state FROM engine_state") == "HALTED"


async def test_a_second_kill_switch_press_does_not_hide_what_the_first_cancelled(tmp_path):
    """The operator presses the kill switch again (the first's answer slow, or to be sure): the second finds nothing
    left to cancel. The banner keeps the first's report (what it cancelled), saying the second found nothing more,
    rather than end on "cancelled 0"; the audit keeps both."""
    db = db_path(tmp_path)
    app = console(tmp_path, speed=4.0, feed_class=_HeldFeed)
    async with app.run_test(size=(120, 40)) as pilot:
        cid = await _held_open_order(pilot, app)
        for _ in range(2):
            await pilot.press("K")
            await until(pilot, lambda: "cancel every open order" in screen_text(app), "the kill switch confirmation")
            await pilot.press("y")
            await until(pilot, lambda: "cancel every open order" not in screen_text(app), "the confirmation closed")
        await until(pilot, lambda: db_value(db, "SELECT COUNT(*) FROM events WHERE event = 'kill_switch'") == 2,
                    "both presses recorded")
        await until(pilot, lambda: "pressed again" in banner_text(app), "the second press on the banner")
        text = banner_text(app)
        assert f"cancelled 1 ({cid})" in text and "nothing more to cancel" in text, text


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_ctrl_k_works_over_an_open_dialog(tmp_path, size):
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: "ffe console keys" in screen_text(app), "the help dialog")
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch over the help dialog")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        assert db_value(db, "SELECT reason FROM engine_state") == "kill switch"


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_flatten_closes_every_position(tmp_path, size):
    db = db_path(tmp_path)
    # Orders fill at the next bar. BTC and ETH move together on this market: once 30 bars of returns are in (a
    # loaded machine gets there before the orders), CORRELATION would rightly refuse the second buy.
    app = console(tmp_path, speed=4.0, risk={"max_correlation": 1.0})
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await until(pilot, lambda: app.snap["bars"] >= 2, "the first live bar")
        for symbol, qty in (("BTC/USDT", 0.01), ("ETH/USDT", 0.2)):
            res = await app.engine.operator_order(symbol, "buy", qty)
            assert res["accepted"], res
        positions = app.query_one("#positions")
        await until(pilot, lambda: positions.row_count == 2, "two open positions on screen")
        await pilot.press("F")
        await until(pilot, lambda: "FLATTEN" in screen_text(app), "the flatten confirmation")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: db_value(db, "SELECT COUNT(*) FROM positions") == 0, "no position stored")
        await until(pilot, lambda: positions.row_count == 0 and not app.snap["positions"], "no position on screen")
        await until(pilot, lambda: sorted((db_value(db, "SELECT group_concat(symbol) FROM orders WHERE reason = "
                                                    "'flatten' AND status = 'filled'") or "").split(","))
                    == ["BTC/USDT", "ETH/USDT"], "both flatten orders filled")
        await until(pilot, lambda: "FLATTEN" in screen_text(app) and "closing 2" in screen_text(app),
                    "the flatten report on screen")


async def test_approve_and_reject_pending_trades_in_manual_mode(tmp_path):
    db = db_path(tmp_path)
    # Small trades (sizing well under the POSITION_SIZE cap) and a far take-profit, so the re-check at approval
    # passes on a moved price (the market runs 40 bars a second while the operator moves to the trade).
    app = console(tmp_path, speed=40.0, approval="manual", risk={"risk_per_trade_pct": 0.01, "take_profit_atr": 50})
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        table = app.query_one("#approvals")
        table.focus()  # where the operator's moves go (he tabs to it, or a first `a` puts him there)
        await until(pilot, lambda: table.row_count >= 1, "a pending approval on screen", timeout=60)
        aid = next(iter(table.rows)).value
        # The operator moves to the trade (nothing is chosen for him) and approves it, at once: the market runs 40
        # bars a second, and the re-check is made at the price then.
        await pilot.press("j" if table.row_count == 1 else "k", "a")
        await until(pilot, lambda: db_value(db, "SELECT status FROM approvals WHERE approval_id = ?", (aid,))
                    == "approved", f"{aid} approved")
        assert db_value(db, "SELECT by FROM approvals WHERE approval_id = ?", (aid,)) == "operator"
        order = db_value(db, "SELECT client_order_id FROM approvals WHERE approval_id = ?", (aid,))
        assert db_value(db, "SELECT decision_id FROM orders WHERE client_order_id = ?", (order,)) == \
            db_value(db, "SELECT decision_id FROM approvals WHERE approval_id = ?", (aid,))
        await until(pilot, lambda: aid not in table.rows, "the approved trade to leave the pane")

        await until(pilot, lambda: table.row_count >= 1, "another pending approval", timeout=60)
        # The selected trade has ended: the operator moves to the next one (nothing is selected for him).
        table.focus()
        await pilot.press("up")
        other = table.selected()
        assert other is not None
        await pilot.press("r")
        await until(pilot, lambda: db_value(db, "SELECT status FROM approvals WHERE approval_id = ?", (other,))
                    == "rejected", f"{other} rejected")
        assert db_value(db, "SELECT by FROM approvals WHERE approval_id = ?", (other,)) == "operator"
        assert db_value(db, "SELECT client_order_id FROM approvals WHERE approval_id = ?", (other,)) is None
        await until(pilot, lambda: other not in table.rows, "the rejected trade to leave the pane")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_a_pending_approval_shows_its_size_and_price_on_screen_at_every_size(tmp_path, size):
    # What the operator approves: how much, at what price, and how long is left, on the row itself.
    app = console(tmp_path, speed=40.0, approval="manual")
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        table = app.query_one("#approvals")
        await until(pilot, lambda: table.row_count >= 1, "a pending approval on screen", timeout=60)
        aid = next(iter(table.rows)).value
        qty, price = str(table.get_cell(aid, "qty")), str(table.get_cell(aid, "price"))

        def row_on_screen() -> str | None:
            # The pane's row, read within the pane: the log names the approval too, with its quantity and price,
            # and on a busy machine its line may be drawn before the pane's row is.
            lines, region = screen_text(app).splitlines(), table.content_region
            rows = (lines[y][region.x:region.right] for y in range(region.y, min(region.bottom, len(lines))))
            return next((ln for ln in rows if aid in ln and qty in ln), None)

        row = await until(pilot, row_on_screen, f"the approval's row on screen with its quantity {qty}")
        assert price in row and re.search(r"\b\d+(m\d+)?s\b", row.replace(aid, "")), row
        for key, title in (("K", "KILL SWITCH"), ("F", "FLATTEN")):  # each says what becomes of what waits
            await pilot.press(key)
            await until(pilot, lambda: title in screen_text(app), f"the {title} confirmation")
            body = app.screen.body  # the confirmation's own text, as the dialog wraps it on screen
            assert re.search(r"The (trade|\d+ trades) waiting for approval (is|are) rejected", body), body
            await pilot.press("n")
            await until(pilot, lambda: title not in screen_text(app), f"the {title} confirmation gone")


async def test_a_pending_approval_counts_down_and_expires_on_screen(tmp_path):
    db = db_path(tmp_path)
    clock = ManualClock(paced=True)  # the approval's two minutes pass when the test moves the clock
    app = console(tmp_path, speed=40.0, approval="manual", ttl=120.0, clock=clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        table = app.query_one("#approvals")
        await until(pilot, lambda: table.row_count >= 1, "a pending approval on screen", timeout=60)
        aid = next(iter(table.rows)).value
        shown: list[str] = []

        def gone() -> bool:
            if aid in table.rows:
                text = str(table.get_cell(aid, "expires"))
                if not shown or shown[-1] != text:
                    shown.append(text)
                return False
            return True

        gone()
        clock.forward(60.0)
        await until(pilot, lambda: gone() or len(shown) >= 2, "the countdown to move on")
        clock.forward(60.5)
        await until(pilot, gone, "the approval to leave the pane")
        assert len(shown) >= 2 and shown[0] != shown[-1], shown  # the countdown moved on screen
        # The pane follows the engine's memory; the store's write of the same change may land a moment later.
        await until(pilot, lambda: db_value(db, "SELECT status FROM approvals WHERE approval_id = ?", (aid,))
                    == "expired", "the expiry stored")
        log = app.query_one("#log")
        await until(pilot, lambda: any(f"approval {aid} expired" in line for line in log.lines), "the expiry logged")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_quit_asks_first_and_says_what_stays_open(tmp_path, size):
    app = console(tmp_path, speed=0.2)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await _open_order(pilot, app)
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        text = screen_text(app)
        assert "1 open order(s) stay open" in text and "position(s) stay open" in text
        await pilot.press("n")
        await until(pilot, lambda: "Quit the console" not in screen_text(app), "the dialog to close")
        assert app.is_running and not app.engine.stopped
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to exit")
    assert app.return_code == 0
    assert app.engine.stopped
    last = audit_lines(audit_path(tmp_path))[-1]
    assert last["event"] == "run" and last["phase"] == "stop"


async def test_a_burst_of_5000_log_lines_reaches_the_pane_bounded_and_the_kill_key_still_works(tmp_path):
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        log = logs.get_logger("ffe.burst")
        for n in range(5000):  # through the engine's own logging, into the bus, all between two redraws
            log.info("burst line", n=n)
        await pilot.press("K", "y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        pane = app.query_one("#log")
        await until(pilot, lambda: any("burst line n=4999" in line for line in pane.lines), "the last burst line")
        assert app.sub.dropped == 0  # every event reached the console
        assert len(pane.lines) == LOG_LINES  # the pane keeps its bound...
        assert len(app.view.lines) == HISTORY_LINES  # ...and so does the history the filter re-reads
        await until(pilot, lambda: "HALTED" in status_text(app), "HALTED on the status line")


async def test_log_filter_by_event_type(tmp_path):
    app = console(tmp_path, speed=4.0)  # a quieter market: Pilot waits for an idle process after each key
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        pane = app.query_one("#log")
        await pilot.press("d")  # decisions are off at start
        await until(pilot, lambda: any(" decision " in line for line in pane.lines), "decisions in the log")
        await pilot.press("p")  # an engine_state line
        await until(pilot, lambda: any(" engine_state " in line for line in pane.lines), "the pause in the log")
        await pilot.press("slash")
        await until(pilot, lambda: "Filter the log" in screen_text(app), "the filter dialog")
        await pilot.press(*"engine_state", "enter")
        await until(pilot, lambda: "filter: engine_state" in screen_text(app), "the filter in the pane title")
        assert pane.lines and all(" engine_state " in line for line in pane.lines)
        await pilot.press("slash", *"bogus", "enter")
        await until(pilot, lambda: any("unknown event type 'bogus'" in n.message for n in app._notifications),
                    "the error for a bad type")
        await pilot.press("slash", "ctrl+u", *"-decision", "enter")
        await until(pilot, lambda: "filter: -decision" in screen_text(app), "the exclusion in the pane title")
        assert not any(" decision " in line for line in pane.lines)


def test_the_log_filter_knows_each_logged_event_type_once_by_its_audit_trail_name():
    # As `ffe audit tail --event` knows them; the per-candle `bar` update is never logged, so never filtered on.
    assert list(EVENT_NAMES) == sorted(set(EVENT_TYPES) - {"bar"})
    # Whenever the garbage collector has run: a class made with slots leaves the class it replaced behind, a
    # subclass of Event until collected ("known: ..., decision, decision, ...").
    fresh = subprocess.run([sys.executable, "-c", "import gc; gc.disable(); from ffe_tui import state; "
                            "print(' '.join(state.EVENT_NAMES))"], capture_output=True, text=True, check=True)
    assert fresh.stdout.split() == list(EVENT_NAMES)


async def test_what_is_typed_in_one_go_with_the_filter_key_goes_into_the_filter(tmp_path):
    # As tmux send-keys "/fill" (or a paste, or a fast hand) delivers them: every key reaches the app before the
    # dialog has opened, let alone given its field the focus.
    app = console(tmp_path, speed=0.0, max_bars=5, monitor={"enabled": False})
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        for key, character in (("slash", "/"), ("o", "o"), ("r", "r"), ("d", "d"), ("e", "e"), ("r", "r")):
            app.post_message(events.Key(key, character))
        await until(pilot, lambda: "Filter the log" in screen_text(app), "the filter dialog")
        await until(pilot, lambda: app.screen.query_one("#filter-input").value == "order", "what was typed, in it")
        await pilot.press("enter")
        await until(pilot, lambda: "filter: order" in screen_text(app), "the filter applied")


async def test_a_view_key_typed_in_one_go_with_the_filter_key_switches_the_view_before_the_dialog_opens(tmp_path):
    # As tmux send-keys "1/" delivers them: the digit must not be lost behind the dialog its next key opens.
    app = console(tmp_path, speed=0.0, max_bars=5, monitor={"enabled": False})
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await pilot.press("7")
        await until(pilot, lambda: app.current_view == "health", "the health view")
        for key, character in (("1", "1"), ("slash", "/")):
            app.post_message(events.Key(key, character))
        await until(pilot, lambda: "Filter the log" in screen_text(app), "the filter dialog")
        await pilot.press("escape")
        await until(pilot, lambda: "Filter the log" not in screen_text(app), "the filter dialog closed")
        assert app.current_view == "main", app.current_view


class _FailingFeed(SimulatedFeed):
    """The simulated market, whose connection drops after a few bars."""

    async def candles(self):
        n = 0
        async for c in super().candles():
            yield c
            n += 1
            if n == 10:
                raise ConnectionError("market data connection lost")


async def test_an_engine_crash_shows_on_screen_lands_in_the_audit_and_the_console_stays_usable(tmp_path):
    app = console(tmp_path, feed_class=_FailingFeed)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "ENGINE CRASHED" in screen_text(app), "the crash on screen")
        assert "market data connection lost" in screen_text(app)
        errors = [r for r in audit_lines(audit_path(tmp_path)) if r["event"] == "error"]
        assert any("market data connection lost" in r["message"] for r in errors), errors
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to exit")
    assert app.return_code == 1
    assert app.engine.stopped


async def test_ffe_ctl_talks_to_the_console(tmp_path):
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        proc = await forked_ffe.create_subprocess_exec(*ffe_cmd("ctl", "pause"), cwd=tmp_path, env=ffe_env(),
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and out.decode().splitlines()[0] == "PAUSED", (out, err)
        await until(pilot, lambda: "PAUSED" in status_text(app) and "ffe ctl pause" in status_text(app),
                    "the pause from ffe ctl on the status line")


async def test_positions_update_in_place_and_the_cursor_stays_put(tmp_path):
    # BTC and ETH move together on this market: on a loaded machine the BTC buy can fill before the ETH buy is
    # placed, and CORRELATION would then rightly refuse the second one.
    app = console(tmp_path, speed=8.0, risk={"max_correlation": 1.0})
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await until(pilot, lambda: app.snap["bars"] >= 2, "the first live bar")
        for symbol, qty in (("BTC/USDT", 0.01), ("ETH/USDT", 0.2)):
            res = await app.engine.operator_order(symbol, "buy", qty)
            assert res["accepted"], res
        table = app.query_one("#positions")
        await until(pilot, lambda: table.row_count == 2, "two positions on screen")
        await pilot.press("down", "down")  # the first lands on the first row, not drawn as chosen before it
        chosen = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        assert table.cursor_row == 1
        seen = {str(table.get_cell(chosen, "last"))}
        await until(pilot, lambda: seen.add(str(table.get_cell(chosen, "last"))) or len(seen) >= 3,
                    "the last price to change twice")
        assert table.cursor_row == 1
        assert table.coordinate_to_cell_key((1, 0)).row_key.value == chosen


async def test_approval_mode_switch_and_the_detail_views_at_80x24(tmp_path):
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press("m")
        await until(pilot, lambda: "(manual)" in status_text(app), "manual approval on the status line")
        assert db_value(db_path(tmp_path), "SELECT value FROM kv WHERE key = 'approval_mode'") == '"manual"'
        titles = []
        for _ in range(5):
            titles.append(next(line for line in screen_text(app).split("\n") if "[v: next]" in line))
            await pilot.press("v")
        for title in ("Ensemble votes", "Approvals", "Risk gates", "Circuit breaker", "Chart"):
            assert any(title in t for t in titles), titles


async def test_a_data_dir_in_use_is_a_one_line_error_and_exit_code_2(tmp_path):
    first = console(tmp_path, speed=4.0)
    async with first.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        second = console(tmp_path, speed=4.0)
        async with second.run_test(size=(80, 24)) as pilot2:
            await until(pilot2, lambda: not second.is_running, "the second console to give up")
        assert second.return_code == 2
        assert f"another ffe engine (pid {os.getpid()}) is running on this data directory" in second.start_error
        assert "RUNNING" in status_text(first)  # the first one is untouched


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_without_the_chart_the_other_panes_still_show_and_cycle(tmp_path, size):
    app = console(tmp_path, speed=4.0, chart=False)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        for _ in range(5):
            await pilot.press("v")
        text = screen_text(app)
        assert "Chart" not in text and "Positions" in text and "Log" in text
        assert app.is_running


async def test_at_200x50_the_gates_pane_shows_every_value_limit_and_its_title_whole(tmp_path):
    """On a wide terminal the gates pane has the room to say a gate's value and limit in full ("closed or probe",
    not "closed …") and what the gates were checked for, where 120 columns must shorten them."""
    app = console(tmp_path, speed=0.0, max_bars=150, monitor={"enabled": False})
    async with app.run_test(size=(200, 50)) as pilot:
        await until(pilot, lambda: app.feed_ended, "the market feed to end", timeout=60,
                    progress=lambda: bars_taken(app))
        gates = app.view.gates
        assert gates, "the seeded market evaluates an order (relied on)"
        await until(pilot, lambda: "closed or probe" in screen_text(app), "the BREAKER_OPEN limit in full")
        text = screen_text(app)
        assert f"Risk gates: {gates['title']}" in text
        for g in gates["gates"]:
            line = next(ln for ln in text.split("\n") if f" {g['code']} " in ln)
            assert "…" not in line.split(g["code"])[1], line


async def test_the_console_s_log_begins_with_the_engine_s_start(tmp_path):
    # The start's events (the run starting, a saved setting that overrides the configuration, the orders recovered)
    # are published before the console has its engine: its log shows them all the same.
    async with engine_session(make_settings(tmp_path)) as before:
        await before.engine.set_approval_mode("manual", by="operator")  # saved: manual
    app = console(tmp_path)  # engine.approval = "auto"
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        pane = app.panes["log"]

        def logged(name: str) -> list[str]:
            return [line for line in pane.lines if f"Z {name} " in line]

        await until(pilot, lambda: logged("override"), "the override in the log")
        [override] = logged("override")
        assert "approval mode manual" in override and "engine.approval = auto" in override, override
        assert any(" start " in line for line in logged("run")), pane.lines
        await pilot.press("q")


async def test_the_switch_to_automatic_approval_asks_first_and_the_switch_back_does_not(tmp_path):
    """From automatic approval on, trades go out without a human: the console asks before it switches to it (any
    key but y leaves it manual), as it asks before a re-arm; back to manual tightens, and is done at once."""
    app = console(tmp_path, speed=4.0, approval="manual")
    db = db_path(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press("m")
        await until(pilot, lambda: "without approval" in screen_text(app), "the question")
        await pilot.press("n")
        await pilot.pause()
        assert "(manual)" in status_text(app) and app.engine.approval_mode == "manual"
        await pilot.press("m")
        await until(pilot, lambda: "without approval" in screen_text(app), "the question again")
        await pilot.press("y")
        await until(pilot, lambda: "(auto)" in status_text(app), "automatic approval")
        assert db_value(db, "SELECT value FROM kv WHERE key = 'approval_mode'") == '"auto"'
        await pilot.press("m")
        await until(pilot, lambda: "(manual)" in status_text(app), "manual again, without a question")
        await pilot.press("q")


@pytest.mark.parametrize("size", [(110, 32), (110, 34), (160, 32), (110, 36), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_pane_is_on_screen_from_110x32_with_lines_of_log(tmp_path, size):
    """From 110x32 every pane is on screen at once (README), the log with them: it is where the kill switch, the
    orders and the fills are told. At least four lines of it, at the smallest wide size too."""
    app = console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await pilot.pause()
        for pane in ("#positions", "#approvals", "#breaker", "#votes", "#chart", "#gates", "#log"):
            widget = app.query_one(pane)
            assert widget.display and widget.region.height >= 3, (pane, widget.region)
        log = app.query_one("#log")
        assert log.region.height - 1 >= 4, log.region  # the border's title line, then the lines of log
        assert log.region.y + log.region.height <= size[1] - 1  # above the footer


async def test_a_console_resized_from_wide_to_80x24_and_back_keeps_each_layout(tmp_path):
    app = console(tmp_path)
    async with app.run_test(size=(110, 32)) as pilot:
        await running(pilot)
        for size in ((80, 24), (110, 34), (80, 24)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            log = app.query_one("#log")
            assert log.region.height >= 5 and log.region.y + log.region.height <= size[1] - 1, (size, log.region)


async def test_a_confirmation_dialog_is_not_covered_by_notifications_at_80x24(tmp_path):
    """What is being confirmed must be readable before `y`: the notifications on screen are cleared when a dialog
    opens, and those raised while it is open wait until it closes."""
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        for _ in range(3):
            await pilot.press("a")  # nothing pending: a notification each
        await until(pilot, lambda: len(app._notifications) >= 1, "the notifications")
        await pilot.press("K")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch confirmation")
        assert len(app._notifications) == 0
        app.say("raised while the dialog is open")
        await pilot.pause()
        assert len(app._notifications) == 0
        await pilot.press("escape")
        await until(pilot, lambda: "KILL SWITCH" not in screen_text(app), "the dialog to close")
        await until(pilot, lambda: any("raised while the dialog is open" in n.message for n in app._notifications),
                    "the held notification, once the dialog closed")


async def test_quit_says_the_trades_waiting_for_approval_wait_on_at_the_next_start(tmp_path):
    """Manual approval with a trade waiting: quitting neither approves nor rejects it. The dialog says it still waits
    at the next start (unless its time has run out by then), as it does."""
    app = console(tmp_path, approval="manual")
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await until(pilot, lambda: app.engine.pending, "a trade waiting for approval", timeout=120)
        # As the operator sees it: on screen (the console's view of the engine), not only in the engine.
        await until(pilot, lambda: (app.snap or {}).get("approvals"), "the trade on screen")
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        text = screen_text(app)
        assert "waiting for approval still wait" in text, text
        await pilot.press("n")


async def test_a_log_line_wider_than_the_pane_is_marked_where_it_is_cut_and_scrolls_sideways(tmp_path):
    """At 80x24 an order's line runs past the pane: its price must not read as another number ("@ 30" for
    30,000.0). The cut is marked with an ellipsis, and Right scrolls the log sideways to the rest, Left back."""
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await app.engine.pause(by="test")  # no trade's lines push the wide one out of sight
        pane = app.query_one("#log")
        logs.get_logger("ffe.wide").info("a wide line " + "x" * 100, price="30,000.0")
        await until(pilot, lambda: any("price=30,000.0" in line for line in pane.lines), "the wide line")
        pane.focus()
        await until(pilot, lambda: any(line.rstrip().endswith("…") and "a wide line" in line
                                       for line in screen_text(app).splitlines()), "the cut marked")
        assert not any("price=30,000.0" in line for line in screen_text(app).splitlines())
        def rest_shown() -> bool:
            return any("price=30,000.0" in line for line in screen_text(app).splitlines())

        for _ in range(120):  # a column at a time, as far as the end of the line
            if rest_shown():
                break
            await pilot.press("right")
        assert pane.scroll_x > 0 and rest_shown(), screen_text(app)
        await pilot.press("ctrl+pageup", "ctrl+pageup", "ctrl+pageup")
        await until(pilot, lambda: pane.scroll_x == 0, "back to the start of the lines")


async def test_an_engine_stopped_halted_by_its_records_is_a_crash_on_screen_and_in_the_exit_code(tmp_path):
    """The audit trail removed under the console's own engine: the engine stops HALTED (records it cannot write, as
    headless). The console says it as a crash, with the error in full, not as a market feed that ended; its quit
    dialog says the next start rejects the approvals waiting; quitting exits 1, as `ffe run --headless` does."""
    app = console(tmp_path, speed=4.0, approval="manual", ttl=600.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await until(pilot, lambda: app.engine.approvals.pending, "an approval waiting", timeout=60)
        os.unlink(audit_path(tmp_path))
        await until(pilot, lambda: "ENGINE CRASHED" in screen_text(app), "the crash on screen", timeout=30)
        assert "the audit trail was removed" in banner_text(app), banner_text(app)
        assert app.engine.state.value == "HALTED"
        # Nothing counts down on a stopped engine: the next start decides the approvals.
        table = app.panes["approvals"]
        await until(pilot, lambda: table.row_count >= 1 and all("stopped" in map(str, table.get_row_at(i))
                                                                for i in range(table.row_count)),
                    "the approvals' countdowns ended")  # one, or more if the next bar proposed another first
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        said = screen_text(app)
        assert "still wait" not in said and "are rejected by the" in said, said
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to exit")
    assert app.return_code == 1


async def test_p_pressed_again_while_its_pause_or_resume_is_under_way_is_not_taken_on_the_state_shown(tmp_path):
    """`p p` in one write (tmux send-keys): the second press came before the first's resume was done, and acted on the
    state still shown (PAUSED), resuming again. It is said to be under way instead; the engine changes state once."""
    app = console(tmp_path, speed=0.0, max_bars=2000, monitor={"enabled": False})
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await app.engine.pause(reason="operator pause", by="operator")
        await until(pilot, lambda: app.snap["state"] == "PAUSED", "PAUSED on screen")
        before = [r for r in audit_lines(audit_path(tmp_path)) if r["event"] == "engine_state"]
        for _ in range(2):
            app.post_message(events.Key("p", "p"))
        await until(pilot, lambda: app.snap["state"] == "RUNNING", "RUNNING on screen")
        await pilot.pause(0.5)
        await app.engine.flush()
        after = [r for r in audit_lines(audit_path(tmp_path)) if r["event"] == "engine_state"]
        assert [r["state"] for r in after[len(before):]] == ["RUNNING"], after[len(before):]
        notes = [n.message for n in app._notifications]
        assert sum(1 for n in notes if n.startswith("resume:")) == 1, notes
        assert any("under way" in n for n in notes), notes
