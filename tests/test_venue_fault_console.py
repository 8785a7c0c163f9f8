"""A venue fault and its end, as the console's log pane and `ffe audit tail` show them: one line each."""

from __future__ import annotations

from ffe_engine.events import VenueFault
from ffe_engine.present import line
from ffe_tui.state import ConsoleState

HOLD = VenueFault(venue="binance", kind="rate_limit", phase="fault",
                  detail="Retry-After 3s: no order sent before 22:01:05.120Z", until=1_800_000_000.12)
RESOLVED = VenueFault(venue="binance", kind="in_doubt", phase="resolved", client_order_id="ffe-abc", detail="filled")
LINES = ["venue_fault binance rate_limit fault: Retry-After 3s: no order sent before 22:01:05.120Z",
         "venue_fault binance in_doubt resolved: filled order ffe-abc"]


def test_the_console_shows_a_hold_and_a_resolution_as_one_line_each():
    state = ConsoleState(["BTC/USDT"])
    assert "log" in state.apply([HOLD, RESOLVED])
    assert [text.split(" ", 1)[1] for text in (entry.text for entry in state.lines)] == LINES


def test_the_audit_record_reads_the_same():
    assert [line(e.name, e.record()) for e in (HOLD, RESOLVED)] == LINES
