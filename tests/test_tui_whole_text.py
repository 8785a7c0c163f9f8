"""What the console says is whole at 80x24: help scrolls to its last line and closes only on another key; a banner
longer than its rows ends in a mark and is whole one key away; the quit dialog of a live engine says the state its
next start really comes up in."""

from __future__ import annotations

import re

import pytest

from ffe_engine.events import ErrorEvent
from ffe_tui import keys
from ffe_tui.app import ConsoleApp
from live_helpers import fx, live_settings  # noqa: F401
from test_tui_helpers import console, pause, running, screen_text, status_text, until


def _flat(text: str) -> str:
    """Screen text with its wrapping undone: one space for every run of blanks and line ends."""
    return re.sub(r"\s+", " ", text)


def _help_rows(app: ConsoleApp) -> str:
    """The help dialog's lines as on screen: the text between its side borders."""
    out = []
    for row in screen_text(app).split("\n"):
        cells = row.split("█")
        if len(cells) >= 3:
            out.append(cells[1].strip())
    return "\n".join(out)


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=["80x24", "100x30"])
async def test_help_scrolls_to_its_last_line_and_the_scroll_keys_do_not_close_it(tmp_path, size):
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: "ffe console keys" in screen_text(app), "the help dialog")
        seen = _help_rows(app)
        for key in ("down", "j", "pagedown", "down", "j", "down", "down", "down", "down", "down", "end"):
            await pilot.press(key)
            await pilot.pause(0.05)
            assert "ffe console keys" in screen_text(app), f"{key} closed help"
            seen += "\n" + _help_rows(app)
        flat = _flat(seen)
        for k in keys.KEYS:
            assert k.id in flat, k.id
        for fixed, does in keys.FIXED_KEYS:
            assert _flat(does) in flat, does
        assert "An approval: v shows the pane, tab to it, up/down, then a or r." in flat, flat
        assert "any other key closes" in flat.lower(), flat
        for key in ("up", "k", "pageup", "home"):
            await pilot.press(key)
            await pilot.pause(0.05)
            assert "ffe console keys" in screen_text(app), f"{key} closed help"
        await pilot.press("x")
        await until(pilot, lambda: "ffe console keys" not in screen_text(app), "help to close on another key")


def _banner(app: ConsoleApp) -> str:
    """The banner's rows: between the status line and the first pane's title."""
    rows = screen_text(app).split("\n")[2:]
    out = []
    for row in rows:
        if row.startswith("─"):
            break
        out.append(row.strip())
    return "\n".join(out)


ERROR_HEAD = ("binance create_order ffe-d645d67b1bb14233824164e7 buy 0.3786 ETH/USDT: refused, not placed: "
              "DDoSProtection: code -1003: Way too many requests; IP banned until later, the rest")


async def test_a_banner_of_three_lines_is_shown_whole_at_80x24(tmp_path):
    message = ERROR_HEAD + " is said here."
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        app.engine.bus.publish(ErrorEvent(message=message, where="test"))
        await until(pilot, lambda: "ERROR [test]" in screen_text(app), "the error banner")
        assert _flat(_banner(app)) == f"ERROR [test] {message}", _banner(app)


async def test_a_banner_longer_than_its_rows_ends_in_a_mark_and_is_whole_one_key_away(tmp_path):
    message = " ".join([ERROR_HEAD] * 4) + " and ends HERE."
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        app.engine.bus.publish(ErrorEvent(message=message, where="test"))
        await until(pilot, lambda: "ERROR [test]" in screen_text(app), "the error banner")
        shown = _flat(_banner(app))
        assert "…" in shown and "7" in shown.split("…")[-1], shown  # the mark, and the key to the whole text
        assert "ends HERE." not in shown
        await pilot.press("7")
        await until(pilot, lambda: "ends HERE." in _flat(screen_text(app)), "the whole banner one key away")
        assert f"ERROR [test] {message}" in _flat(screen_text(app))


async def test_quitting_a_running_live_console_says_it_starts_again_paused_and_it_does(tmp_path, fx):  # noqa: F811
    settings = live_settings(tmp_path, fx)
    app = ConsoleApp(settings, live=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.snap is not None and "PAUSED" in status_text(app), "the live start PAUSED")
        await pause(pilot, "RUNNING")
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        said = _flat(screen_text(app))
        assert "start again RUNNING" not in said, said
        assert "The engine will start again PAUSED" in said, said
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to exit")

    again = ConsoleApp(live_settings(tmp_path, fx), live=True)
    async with again.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: again.snap is not None and again.snap["state"] != "?", "the next start")
        assert again.snap["state"] == "PAUSED", again.snap["state"]
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(again), "the quit confirmation")
        said = _flat(screen_text(again))
        assert "The engine will start again PAUSED" in said, said
        await pilot.press("y")
        await until(pilot, lambda: not again.is_running, "the console to exit")


async def test_quitting_a_halted_console_says_positions_stay_unwatched_until_a_re_arm(tmp_path):
    """The next start comes up HALTED too, and HALTED watches no stop-loss or take-profit: the positions stay
    unwatched until the operator re-arms, not only until the next start."""
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch dialog")
        await pilot.press("y")
        await until(pilot, lambda: app.snap is not None and app.snap["state"] == "HALTED", "HALTED")
        await pilot.press("q")
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation")
        said = _flat(screen_text(app))
        assert "The engine will start again HALTED" in said, said
        assert "re-armed after the next start" in said, said  # (the dialog's border may cut the line before it)
        await pilot.press("n")
