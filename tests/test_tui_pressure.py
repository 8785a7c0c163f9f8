"""The console under pressure: what an on-call operator does during an incident, at 80x24 and 120x40, on a real
engine (simulated market, SQLite under tmp_path) driven through Textual's Pilot."""

from __future__ import annotations

import re

import pytest
from textual.color import Color
from textual.command import CommandPalette
from textual.filter import monochrome_style
from textual.widgets import Input

from ffe_engine import logs

from conftest import db_value
from test_tui_helpers import SIZE_IDS, SIZES, console, db_path, running, screen_text, status_text, until


# ------------------------------------------------------------------------------------------ keys in text fields
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_letters_type_into_the_log_filter_and_ctrl_k_still_kills(tmp_path, size):
    """A capital K typed into the log filter is a letter, and the y after it too: nothing halts. ctrl+k is the
    kill key from inside the field."""
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await pilot.press("slash")
        await until(pilot, lambda: "Filter the log" in screen_text(app), "the filter dialog")
        field = app.screen.query_one("#filter-input", Input)
        field.value = ""
        await pilot.press("o", "K", "F", "p", "y")
        await until(pilot, lambda: field.value == "oKFpy", "the letters in the field")
        assert "KILL SWITCH" not in screen_text(app)
        assert db_value(db, "SELECT state FROM engine_state") == "RUNNING"
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch over the filter dialog")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")


async def test_letters_type_into_the_command_palette_and_ctrl_k_still_kills(tmp_path):
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await pilot.press("K", "i", "l", "l", "y")
        field = app.screen.query_one(Input)
        await until(pilot, lambda: field.value == "Killy", "the letters in the palette")
        assert "KILL SWITCH" not in screen_text(app)
        assert db_value(db, "SELECT state FROM engine_state") == "RUNNING"
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch over the palette")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")


# ------------------------------------------------------------------------------------------ the log follows
def _say(n: int, what: str) -> None:
    """Log lines through the engine's own logging: they reach the log pane as events, like any other."""
    log = logs.get_logger("ffe.incident")
    for i in range(n):
        log.info(what, n=i)


async def _newest_on_screen(pilot, what: str) -> None:
    app = pilot.app
    _say(12, what)
    await until(pilot, lambda: f"{what} n=11" in screen_text(app), f"the newest log line ({what}) on screen")


async def _log_full(pilot) -> None:
    pane = pilot.app.query_one("#log")
    _say(60, "warming up")
    await until(pilot, lambda: len(pane.lines) > pane.size.height + 10, "a log longer than its pane")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_the_log_keeps_following_after_a_kill_switch(tmp_path, size):
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await _log_full(pilot)
        await _newest_on_screen(pilot, "before the kill")
        await pilot.press("ctrl+k", "y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "KILL SWITCH: HALTED" in screen_text(app), "the kill report in the banner")
        await _newest_on_screen(pilot, "after the kill")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_the_log_keeps_following_after_a_flatten(tmp_path, size):
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await _log_full(pilot)
        await pilot.press("F")
        await until(pilot, lambda: "FLATTEN" in screen_text(app), "the flatten confirmation")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "FLATTEN, then HALTED" in screen_text(app), "the flatten report")
        await _newest_on_screen(pilot, "after the flatten")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_the_log_keeps_following_after_a_filter_is_applied_and_cleared(tmp_path, size):
    app = console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await _log_full(pilot)
        await pilot.press("slash", "ctrl+u", *"log", "enter")
        await until(pilot, lambda: "filter: log" in screen_text(app), "the filter in the pane title")
        await _newest_on_screen(pilot, "filtered")
        await pilot.press("slash", "ctrl+u", "enter")
        await until(pilot, lambda: "filter:" not in screen_text(app), "the filter cleared")
        await _newest_on_screen(pilot, "unfiltered")


async def test_scrolled_up_the_log_stays_put_and_says_so_until_end(tmp_path):
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        pane = app.query_one("#log")
        await _log_full(pilot)
        pane.focus()
        await pilot.press("home")
        await until(pilot, lambda: "not following" in screen_text(app), "the pane saying it stopped following")
        # Said as true whichever pane has the focus: End moves the focused pane (a table's End is its last row).
        assert "End in the log follows" in screen_text(app)
        top = pane.scroll_y
        _say(12, "while scrolled up")
        await until(pilot, lambda: any("while scrolled up n=11" in line for line in pane.lines), "the new lines")
        await pilot.pause(0.3)
        assert pane.scroll_y == top and "while scrolled up n=11" not in screen_text(app)
        await pilot.press("end")
        await until(pilot, lambda: "not following" not in screen_text(app), "following again")
        await _newest_on_screen(pilot, "after end")


async def test_scrolled_up_in_a_full_log_the_lines_read_stay_put_as_the_oldest_are_dropped(tmp_path):
    """The pane keeps its newest LOG_LINES lines: scrolled up in a full pane, the oldest dropped for new ones must not
    slide the lines being read away."""
    from ffe_tui.app import LOG_LINES

    app = console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        pane = app.query_one("#log")
        _say(LOG_LINES + 50, "filling")
        await until(pilot, lambda: len(pane.lines) == LOG_LINES and "filling n=" in pane.lines[-1], "a full log")
        pane.focus()
        await pilot.press("pageup", "pageup")
        await until(pilot, lambda: "not following" in screen_text(app), "the pane saying it stopped following")
        await pilot.pause(0.2)
        read = re.findall(r"filling n=\d+", screen_text(app))
        assert read, screen_text(app)
        _say(300, "more")
        await until(pilot, lambda: "more n=299" in pane.lines[-1], "the new lines in the pane")
        await pilot.pause(0.3)
        assert re.findall(r"filling n=\d+", screen_text(app)) == read


async def test_j_and_k_scroll_the_focused_log_as_down_and_up_do(tmp_path):
    """The reported case: in the log pane, reached by Tab, up and pageup scrolled it and k and j did nothing."""
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        pane = app.query_one("#log")
        await _log_full(pilot)
        for _ in range(4):
            if app.focused is pane:
                break
            await pilot.press("tab")
        assert app.focused is pane, app.focused
        await pilot.press("up")
        await until(pilot, lambda: "not following" in screen_text(app), "up to stop the following")
        top = pane.scroll_y
        await pilot.press("k", "k")
        await pilot.pause(0.1)
        assert pane.scroll_y == top - 2, (top, pane.scroll_y)
        await pilot.press("j")
        await pilot.pause(0.1)
        assert pane.scroll_y == top - 1, (top, pane.scroll_y)
        await pilot.press("j", "j")  # back to the end: following again, as down does there
        await until(pilot, lambda: "not following" not in screen_text(app), "following again at the end")
        await _newest_on_screen(pilot, "after j")


# ------------------------------------------------------------------------------------------ gates
async def test_a_failing_gate_is_always_on_screen_at_80x24(tmp_path):
    """DAILY_TRADES is the last of 14 gates: at 80x24 the gates pane has room for fewer, and the one refusing
    every entry must still be the one the operator sees."""
    app = console(tmp_path, speed=8.0, risk={"max_daily_trades": 1})
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        while not app.pane_visible("gates"):
            await pilot.press("v")

        def failing_on_screen() -> bool:
            gates = (app.view.gates or {}).get("gates") or []
            failing = [g["code"] for g in gates if not g.get("passed")]
            text = screen_text(app)
            return "DAILY_TRADES" in failing and all(f"{code}" in text for code in failing) and "FAIL" in text

        await until(pilot, failing_on_screen, "a refusal by DAILY_TRADES visible in the gates pane", timeout=60)
        assert "more" in screen_text(app)  # the gates that did not fit are counted, not dropped silently


# ------------------------------------------------------------------------------------------ what the log shows
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_the_log_shows_orders_fills_and_state_changes_by_default_and_decisions_on_d(tmp_path, size):
    """A decision per symbol per bar would push a fill off an 80x24 log in a second: they are off by default."""
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        pane = app.query_one("#log")
        await until(pilot, lambda: sum(ln.name == "decision" for ln in app.view.lines) >= 6, "decisions made")
        assert (await app.engine.operator_order("BTC/USDT", "buy", 0.01))["accepted"]
        await until(pilot, lambda: any(" fill BTC/USDT buy 0.01 @ " in line for line in pane.lines), "the fill")
        await pilot.press("p")
        await until(pilot, lambda: any(" engine_state RUNNING -> PAUSED" in line for line in pane.lines), "the pause")
        lines = list(pane.lines)
        assert any(" order BTC/USDT buy 0.01 market " in line for line in lines)
        assert not any(" decision " in line for line in lines)
        assert "fill BTC/USDT" in screen_text(app) or "PAUSED" in screen_text(app)
        await pilot.press("d")
        await until(pilot, lambda: any(" decision " in line for line in pane.lines), "decisions, switched on")
        await pilot.press("d")
        await until(pilot, lambda: not any(" decision " in line for line in pane.lines), "decisions, off again")


# ------------------------------------------------------------------------------------------ loud when stopped
def _loudness(style) -> float:
    """How much a cell stands out on a monochrome terminal (NO_COLOR): contrast between its text and background,
    more for bold, much more for a filled background. Default colours are a light text on a dark background."""
    st = monochrome_style(style)
    fg = Color.from_rich_color(st.color).brightness if st.color is not None and not st.color.is_default else 0.75
    bg = Color.from_rich_color(st.bgcolor).brightness if st.bgcolor is not None and not st.bgcolor.is_default \
        else 0.0
    if st.reverse:
        fg, bg = bg, fg
    return abs(fg - bg) + (0.5 if st.bold else 0.0) + (1.0 if bg > 0.2 else 0.0)


def _loudest(app, word: str) -> tuple[float, float]:
    """The loudness of `word` where it is loudest on screen, and the loudest of everything else."""
    mine, others = 0.0, 0.0
    for strip in app.screen._compositor.render_strips():
        for seg in strip:
            if not seg.text.strip() or seg.style is None:
                continue
            loud = _loudness(seg.style)
            if word in seg.text:
                mine = max(mine, loud)
            else:
                others = max(others, loud)
    return mine, others


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_with_no_color_halted_is_the_loudest_thing_on_screen(tmp_path, size, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        running_loud, _ = _loudest(app, "RUNNING")
        await pilot.press("ctrl+k", "y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "HALTED" in status_text(app) and "KILL SWITCH" in screen_text(app), "HALTED")
        halted_loud, others = _loudest(app, "HALTED")
        assert halted_loud > running_loud, (halted_loud, running_loud)
        assert halted_loud >= others, (halted_loud, others)


async def test_with_no_color_a_day_s_loss_on_the_status_line_reads_as_plainly_as_a_gain(tmp_path, monkeypatch):
    """Red without colour is a grey a step from the background: the day's loss was drawn near invisible under
    NO_COLOR while a gain read as plain text."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        app.engine.portfolio.day_start_equity += 500.0  # the day down 500 from its start
        await until(pilot, lambda: "day -" in status_text(app), "the day's loss on the status line")
        (loss,) = [seg for strip in app.screen._compositor.render_strips() for seg in strip
                   if seg.text.strip().startswith("-") and "500" in seg.text.replace(",", "")]
        assert _loudness(loss.style) >= 0.75, (loss.text, monochrome_style(loss.style))


# ------------------------------------------------------------------------------------------ too small
async def test_a_terminal_too_small_for_the_layout_says_so(tmp_path):
    app = console(tmp_path)
    async with app.run_test(size=(70, 18)) as pilot:
        await running(pilot)
        await until(pilot, lambda: "too small" in screen_text(app), "the size warning")
        text = screen_text(app)
        assert "70x18" in text and "80x24" in text, text
        assert "HALTED" not in text and "RUNNING" in status_text(app)  # the state stays on screen
        assert "Kill switch" in text  # and so does the footer with the kill key
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: "too small" not in screen_text(app), "the warning gone at 80x24")


@pytest.mark.parametrize(("first", "then"), [((120, 40), (80, 24)), ((80, 24), (120, 40)), ((120, 40), (70, 18))],
                         ids=["120x40-to-80x24", "80x24-to-120x40", "120x40-to-70x18"])
async def test_a_resize_while_a_dialog_is_open_lays_out_the_console_for_the_new_size(tmp_path, first, then):
    """The terminal resized while a confirmation asks (tmux attached from another terminal): once the dialog
    closes, the console is laid out for the size it now has, the log in view, the size warning said."""
    app = console(tmp_path)
    async with app.run_test(size=first) as pilot:
        await running(pilot)
        await pilot.press("K")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app) or "Kill switch" in screen_text(app),
                    "the kill switch dialog")
        await pilot.resize_terminal(*then)
        await pilot.press("n")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the dialog closed")
        await pilot.pause(0.2)
        wide = then[0] >= 110 and then[1] >= 32
        assert app.screen.has_class("-wide") is wide, (then, app.screen.classes)
        assert app.screen.has_class("-narrow") is not wide, (then, app.screen.classes)
        assert app.screen.has_class("-tiny") is (then[0] < 80 or then[1] < 24), (then, app.screen.classes)
        log = app.query_one("#log")
        assert log.region.height > 0, ("the log off screen", screen_text(app))
        assert ("too small" in screen_text(app)) is (then[0] < 80 or then[1] < 24), screen_text(app)
