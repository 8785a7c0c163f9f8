"""The console under pressure: what an on-call operator does during an incident, at 80x24 and 120x40, on a real
engine (simulated market, SQLite under tmp_path) driven through Textual's Pilot."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette
from textual.widgets import Input

from conftest import db_value
from test_tui_helpers import SIZE_IDS, SIZES, console, db_path, running, screen_text, until


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
