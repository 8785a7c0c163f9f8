"""What the screen says follows the engine as it is now: a breaker closed again shows no old error, a dialog written
for the state before a kill switch does not stay open, and the kill and re-arm dialogs say what happens to the
stop-loss and take-profit watch."""

from __future__ import annotations

from pathlib import Path

import pytest

from textual.app import App, ComposeResult

from conftest import db_value
from test_tui_helpers import console, db_path, running, screen_text, until

import ffe_tui
from ffe_tui.dialogs import ConfirmScreen
from ffe_tui.panes import BreakerPane


class BreakerOnly(App):
    CSS_PATH = str(Path(ffe_tui.__file__).parent / "console.tcss")

    def compose(self) -> ComposeResult:
        yield BreakerPane(id="breaker")


async def test_the_breaker_pane_shows_no_last_error_once_the_breaker_is_closed_again():
    app = BreakerOnly()
    async with app.run_test(size=(120, 10)) as pilot:
        pane = app.query_one(BreakerPane)
        pane.show([{"venue": "paper", "state": "open", "failures": 5, "retry_in": 3.0,
                    "last_error": "VenueUnavailable: connection reset"}])
        await pilot.pause()
        assert "connection reset" in screen_text(app)
        pane.show([{"venue": "paper", "state": "closed", "failures": 0, "retry_in": None,
                    "last_error": "VenueUnavailable: connection reset"}])
        await pilot.pause()
        assert "CLOSED" in screen_text(app) and "connection reset" not in screen_text(app), screen_text(app)


@pytest.mark.parametrize("width", [30, 38, 46, 60, 120])
async def test_the_breaker_pane_shows_its_last_error_or_says_it_left_it_out(width):
    """In a pane too narrow for the last error (the console's at 120x40 shares its row), the column is left out and
    its heading says so (`+last error`), as the other tables do; no heading is cut (`probe` for `probe in`)."""
    app = BreakerOnly()
    async with app.run_test(size=(width, 10)) as pilot:
        pane = app.query_one(BreakerPane)
        pane.show([{"venue": "binance", "state": "open", "failures": 3, "retry_in": 52.0,
                    "last_error": "binance fetch_order ffe-1a21afeb772f42: 503 Service Unavailable"}])
        await pilot.pause()
        text = screen_text(app)
        heading = next(line for line in text.splitlines() if "venue" in line)
        assert "state" in heading, text
        if "last error" in heading and "+last error" not in heading:
            # shown, cut in its middle where it must be: its start and the exchange's words at its end
            row = next(line for line in text.splitlines() if "OPEN" in line)
            assert "bina" in row and row.rstrip().endswith("able"), text
        else:
            assert "+" in heading, text  # left out, and said so
        for word in ("failures", "probe in"):
            assert word in heading or "+" in heading, text


async def test_a_kill_switch_confirmed_over_the_flatten_dialog_closes_it(tmp_path):
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press("F")
        await until(pilot, lambda: "then HALT" in screen_text(app), "the flatten dialog")
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch over it")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: not any(isinstance(s, ConfirmScreen) for s in app.screen_stack),
                    "no dialog left open")
        assert "then HALT" not in screen_text(app)


async def test_the_kill_and_re_arm_dialogs_say_what_happens_to_stop_loss_and_take_profit(tmp_path):
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch dialog")
        assert "no stop-loss or take-profit watch" in " ".join(screen_text(app).split()), screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "HALTED" in screen_text(app).split("\n")[0], "HALTED on the status line")
        await pilot.press("p")
        await until(pilot, lambda: "Re-arm the HALTED engine" in screen_text(app), "the re-arm dialog")
        text = " ".join(screen_text(app).split())
        assert "passed while HALTED" in text and "closed at market" in text, text
        await pilot.press("n")


@pytest.mark.parametrize("how", ["re-armed and halted again", "halted again", "flattened"])
async def test_a_re_arm_confirmed_after_a_later_halt_does_not_re_arm_that_halt(tmp_path, how):
    """The re-arm dialog asks about the halt on screen when it opened. Halted again meanwhile, whether re-armed in
    between (another operator's `ffe ctl resume --yes`, then `ffe ctl halt`) or still HALTED (`ffe ctl halt`,
    SIGUSR1, or a flatten, which ends HALTED), its `y` must not undo a halt it never showed (a flatten's closing
    orders would be followed by the strategy's next entry): the engine stays HALTED."""
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await pilot.press("ctrl+k", "y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "HALTED" in screen_text(app).split("\n")[0], "HALTED on the status line")
        await pilot.press("p")
        await until(pilot, lambda: "Re-arm the HALTED engine" in screen_text(app), "the re-arm dialog")
        if how == "re-armed and halted again":
            await app.engine.resume(by="ctl", confirm=True)  # another operator, through the control socket
        if how == "flattened":
            await app.engine.flatten(by="ctl")
        else:
            await app.engine.halt(reason="ffe ctl halt", by="ctl")
        await pilot.press("y")
        await until(pilot, lambda: not any(isinstance(s, ConfirmScreen) for s in app.screen_stack), "dialog closed")
        await pilot.pause(0.3)
        assert app.engine.state.value == "HALTED", screen_text(app)
        assert db_value(db, "SELECT state FROM engine_state") == "HALTED", screen_text(app)
        if how == "re-armed and halted again":  # recorded anew, by ctl (a halt of the HALTED engine is not)
            assert db_value(db, "SELECT by FROM engine_state") == "ctl"
