"""The console's risk gates pane shows each gate's value on its own side of the limit, as it is recorded
(docs/gates.md): a refusal that reads `0.55 0.55 FAIL` says nothing of why. The real pane under Pilot."""

from __future__ import annotations

import io

from rich.console import Console
from textual.app import App, ComposeResult

from ffe_tui.panes import GatesPane
from ffe_tui.state import ConsoleState

GATES = [
    {"code": "MIN_CONFIDENCE", "value": 0.54998, "limit": 0.55, "passed": False, "detail": ""},
    {"code": "DRAWDOWN", "value": 15.00004, "limit": 15.0, "passed": False, "detail": ""},
    {"code": "POSITION_SIZE", "value": 9.99996, "limit": 10.0, "passed": True, "detail": ""},
    {"code": "DAILY_LOSS", "value": 1.23456789, "limit": 5.0, "passed": True, "detail": ""},
    {"code": "VAR", "value": 0.12347, "limit": 0.12346, "passed": False, "detail": ""},  # a limit of 5 digits
    {"code": "CORRELATION", "value": 0.1 + 0.2, "limit": 0.3, "passed": False, "detail": ""},  # 0.30000000000000004
    {"code": "MAX_OPEN_POSITIONS", "value": 5, "limit": 4.99996, "passed": False, "detail": ""},  # an int beside
]


class _One(App):
    def compose(self) -> ComposeResult:
        pane = GatesPane(id="gates")
        pane.styles.width, pane.styles.height = 62, 11
        yield pane


async def test_a_gate_s_value_is_shown_on_its_own_side_of_the_limit():
    app = _One()
    async with app.run_test(size=(62, 11)) as pilot:
        state = ConsoleState(["BTC/USDT"])
        state.gates = {"title": "t", "gates": GATES}
        pane = app.query_one(GatesPane)
        pane.show(state)
        await pilot.pause()
        out = io.StringIO()
        Console(file=out, width=62, force_terminal=False).print(pane.content)
    rows = {line.split()[0]: line.split()[1:] for line in out.getvalue().splitlines() if line.strip()}
    assert rows["MIN_CONFIDENCE"] == ["0.54998", "0.55", "FAIL"], rows
    assert rows["DRAWDOWN"] == ["15.00004", "15", "FAIL"], rows
    assert rows["POSITION_SIZE"] == ["9.99996", "10", "ok"], rows
    assert rows["DAILY_LOSS"] == ["1.235", "5", "ok"], rows  # 4 digits where they tell its side
    assert rows["VAR"] == ["0.12347", "0.12346", "FAIL"], rows  # the limit as many digits as tell them apart
    value, limit, verdict = rows["CORRELATION"]
    assert value != limit and float(value.rstrip("…")) >= 0.3 and limit == "0.3" and verdict == "FAIL", rows
    assert rows["MAX_OPEN_POSITIONS"] == ["5", "4.99996", "FAIL"], rows  # the limit as configured, never below it
