"""The status line at 80x24: what needs the operator (an engine not answering or stopped, a breaker open, trades
waiting for approval, alert channels failing, why the engine is HALTED) stays on its two lines; the rest is
shortened first."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from conftest import db_value
from receiver import Receiver
from test_tui_attach import detach, headless_engine, stop_in_order
from test_tui_helpers import console, db_path, running, screen_text, status_text, until

import ffe_tui
from ffe_tui.app import ConsoleApp
from ffe_tui.panes import StatusLine


def lines(app) -> list[str]:
    """The status line's two lines, as on screen."""
    return status_text(app).split("\n")


async def test_failing_alert_channels_and_the_halt_reason_are_on_the_status_line_at_80_columns(tmp_path):
    hook, slack = await Receiver().start(), await Receiver().start()
    hook.fail_with = slack.fail_with = 503
    db = db_path(tmp_path)
    app = console(tmp_path, speed=20.0, alerts={"webhook_url": hook.url + "/h", "slack_url": slack.url + "/s",
                                                "retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2})
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await until(pilot, lambda: "webhook, slack FAILING" in lines(app)[1], "the failing channels on line 2")
        assert lines(app)[0].lstrip().startswith("PAPER"), lines(app)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch confirmation")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "HALTED  kill switch" in lines(app)[0], "HALTED and why, on line 1")
        assert "webhook, slack FAILING" in lines(app)[1], lines(app)
        await pilot.press("q")
    await hook.stop()
    await slack.stop()


async def test_an_attached_console_at_80_columns_keeps_both_lines_and_says_the_engine_is_not_answering(
        tmp_path, spawn_ffe):
    engine, settings = headless_engine(spawn_ffe, tmp_path, control={"request_timeout_s": 1.0})
    app = ConsoleApp(settings, attach=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await until(pilot, lambda: f"pid {engine.pid}" in lines(app)[0], "which engine, on line 1")
        assert "breaker ok" in lines(app)[1], lines(app)
        engine.send(signal.SIGSTOP)
        try:
            await until(pilot, lambda: "ENGINE NOT ANSWERING" in lines(app)[1], "the silence on line 2")
        finally:
            engine.send(signal.SIGCONT)
        await until(pilot, lambda: "NOT ANSWERING" not in status_text(app), "the engine answering again")
        await detach(pilot, app)
    stop_in_order(engine)


class StatusOnly(App):
    """The console's status line alone, with the console's styles."""

    CSS_PATH = str(Path(ffe_tui.__file__).parent / "console.tcss")

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")


def worst_case(channels: int) -> dict:
    """Every state that needs the operator at once, with long figures."""
    names = ["webhook", "slack", "discord", "telegram"][:channels]
    return {
        "mode": "LIVE", "state": "HALTED", "state_reason": "records unwritable: disk full on /srv/ffe/data",
        "equity": -1_234_567.89, "day_pnl": -234_567.89, "drawdown_pct": 99.99, "market_ts": 1_700_000_040_000,
        "approval_mode": "manual", "approvals": [{}] * 12, "bars": 1_234_567,
        "breakers": [{"venue": "binance", "state": "open"}],  # an engine has one venue, so one breaker
        "monitor": {"url": "http://127.0.0.1:65535", "channels": {n: {"ok": False} for n in names}},
    }


@pytest.mark.parametrize("channels", [1, 2, 4])
async def test_at_80_columns_every_state_that_needs_the_operator_is_on_the_two_lines(channels):
    app = StatusOnly()
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one(StatusLine).show(worst_case(channels), note="ENGINE NOT ANSWERING 123s",
                                       where="attached pid 4194304")
        await pilot.pause()
        one, two = screen_text(app).split("\n")[:2]
        assert screen_text(app).split("\n")[2].strip() == "", "nothing wraps past the two lines"
        assert "LIVE" in one and "HALTED" in one and "records unwr" in one, one
        assert "ENGINE NOT ANSWERING 123s" in two, two
        assert "binance OPEN" in two, two
        assert "12" in two.split("appr")[1], two
        assert "FAILING" in two, two
        if channels == 1:
            assert "webhook FAILING" in two, two


@pytest.mark.parametrize("state", ["RUNNING", "PAUSED", "HALTED"])
async def test_differences_reconciliation_holds_are_on_the_status_line_whatever_the_state(state):
    """Unexplained differences between the books and the venue hold entries and block a resume; the status line
    says so in every state, not only when they are what paused the engine (a halt for another reason hides them
    from the state's reason)."""
    app = StatusOnly()
    snap = {**worst_case(1), "state": state, "state_reason": "kill switch", "approvals": [],
            "breakers": [{"venue": "binance", "state": "closed"}], "monitor": None,
            "reconcile_blocked": [{"kind": "cash"}, {"kind": "position"}]}
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one(StatusLine).show(snap)
        await pilot.pause()
        two = screen_text(app).split("\n")[1]
        assert "RECONCILE 2" in two, two
        app.query_one(StatusLine).show({**snap, "reconcile_blocked": []})
        await pilot.pause()
        assert "RECONCILE" not in screen_text(app), screen_text(app)


@pytest.mark.parametrize("state, equity, day", [("PAUSED", 9_992.98, -7.02), ("HALTED", 9_992.98, -7.02),
                                                ("PAUSED", 1_984_802.45, -15_197.55)])
async def test_an_attached_console_at_80_columns_names_its_engine_beside_a_long_reason(state, equity, day):
    """README: an attached console names its engine, `pid N` at 80 columns: a long reason for not RUNNING is
    shortened first, and still said; with large figures the drawdown gives way (the profit view has it)."""
    app = StatusOnly()
    snap = {**worst_case(1), "mode": "PAPER", "state": state,
            "state_reason": "maintenance window until the exchange is back", "equity": equity, "day_pnl": day,
            "drawdown_pct": 0.17, "approvals": [], "breakers": [{"venue": "paper", "state": "closed"}],
            "monitor": None}
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one(StatusLine).show(snap, where="attached pid 374")
        await pilot.pause()
        one = screen_text(app).split("\n")[0]
        assert "pid 374" in one and state in one and "maint" in one, one


@pytest.mark.parametrize("state", ["PAUSED", "HALTED"])
async def test_the_figures_give_way_to_the_reason_in_their_rank_at_every_width(state):
    """While the engine is not RUNNING its figures give way to the reason: the drawdown first, then the day's P&L,
    then the equity. At no width and no length of the reason is a figure shown while one ranked above it is not."""
    app = StatusOnly()
    async with app.run_test(size=(120, 24)):
        status = app.query_one(StatusLine)
        snap = {**worst_case(1), "state": state}
        for length in range(10, 130, 3):
            snap["state_reason"] = ("why " * 40)[:length]
            for width in range(80, 121):
                line = status._first(snap, "", width).plain
                shown = ["  eq" in line, " day " in line, " dd " in line]
                assert shown == sorted(shown, reverse=True), (length, width, line)
