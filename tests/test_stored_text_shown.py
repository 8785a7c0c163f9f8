"""Words stored from outside (a control request's `reason` and `by`, an older release's records, which took them as
they came) are shown with every character a terminal would act on escaped (fmt.printable): `ffe ctl status`, `ffe
audit tail` and the console's log and banner never pass on a colour, a new line that would read as a record of its
own, or a title change. The real console under Pilot with its control socket, `ffe ctl` and `ffe audit tail` as
subprocesses; the text stored by the engine's own calls, as the socket took it before it refused such text."""

from __future__ import annotations

import asyncio

from conftest import run_ffe, starter_config
from test_tui_helpers import console, running, screen_text, until

FORGED = "2026-12-05T00:00:00.000Z   9999 engine_state HALTED"
REASON = f"\x1b[31mFAKE\n{FORGED}"
BY = "old\x1b]0;owned\x07"
SHOWN_REASON = "\\x1b[31mFAKE\\n" + FORGED
SHOWN_BY = "old\\x1b]0;owned\\x07"


def _clean(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, repr(text)
    assert not any(line.startswith(FORGED) or line.startswith(" " + FORGED[:10]) for line in text.splitlines()), \
        text


async def test_a_stored_reason_and_by_holding_control_characters_are_shown_escaped(tmp_path):
    starter_config(tmp_path)  # `ffe ctl` and `ffe audit tail` run from tmp_path find the same data directory
    app = console(tmp_path, monitor={"enabled": False})
    async with app.run_test(size=(160, 40)) as pilot:
        await running(pilot)
        await app.engine.pause(reason=REASON, by=BY)
        said = await until(pilot, lambda: [line.text for line in app.view.lines if "PAUSED" in line.text
                                           and line.name == "engine_state"], "the pause in the log")
        for text in said:
            _clean(text)
            assert "\n" not in text and SHOWN_REASON in text and SHOWN_BY in text, text

        status = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "status")
        assert status.returncode == 0, status.stderr
        _clean(status.stdout)
        assert f"PAUSED ({SHOWN_REASON})" in status.stdout.splitlines()[0], status.stdout

        await app.engine.halt(reason=REASON, by=BY)
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch's banner")
        banner = screen_text(app)
        assert "\x1b" not in banner and f"by {SHOWN_BY}" in banner.replace("\n", ""), banner

        tail = await asyncio.to_thread(run_ffe, tmp_path, "audit", "tail", "-n", "1000", "--event",
                                       "engine_state,kill_switch")
        assert tail.returncode == 0, tail.stderr
        _clean(tail.stdout)
        lines = tail.stdout.splitlines()
        assert all(line[:4].isdigit() for line in lines), lines  # each record on a line of its own, its time first
        assert sum(SHOWN_REASON in line for line in lines) == 2, lines  # the pause, the halt
        await pilot.press("q")
