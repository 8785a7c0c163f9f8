"""Every key that quits the console asks first, and help and README name each: `q`, and `ctrl+q` and `ctrl+c`,
which no binding remaps (ctrl+c is what an operator presses first to leave a program)."""

from __future__ import annotations

import pytest

from test_tui_helpers import console, running, screen_text, until
from test_tui_keys import help_keys, readme_console_keys

from ffe_tui import keys


@pytest.mark.parametrize("key", ["ctrl+c", "ctrl+q"])
async def test_ctrl_c_and_ctrl_q_ask_before_quitting_as_q_does(tmp_path, key):
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await pilot.press(key)
        await until(pilot, lambda: "Quit the console" in screen_text(app), f"the quit confirmation after {key}")
        assert not any("to quit the app" in str(n.message) for n in app._notifications)
        await pilot.press("n")
        await until(pilot, lambda: "Quit the console" not in screen_text(app), "the dialog to close")
        assert app.is_running
        await pilot.press(key)
        await until(pilot, lambda: "Quit the console" in screen_text(app), "the quit confirmation again")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the console to quit")
    assert app.return_code == 0


async def test_help_and_readme_name_ctrl_q_and_ctrl_c(tmp_path):
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: "ffe console keys" in screen_text(app), "the help dialog")
        listed = help_keys(app.screen.rows)
    assert {"ctrl+q", "ctrl+c"} <= listed, listed
    assert {"ctrl+q", "ctrl+c"} <= readme_console_keys()


def test_no_binding_may_take_ctrl_q_which_quits():
    with pytest.raises(keys.KeymapError, match="'ctrl\\+q' cannot be used"):
        keys.keymap({"pause": "ctrl+q"}, lambda bid: None)
