"""A venue fault and its end, as the console's log pane shows them."""

from __future__ import annotations

from ffe_engine.events import VenueFault
from ffe_tui.state import ConsoleState


def test_a_rate_limit_hold_and_its_end_are_two_log_lines():
    state = ConsoleState(["BTC/USDT"])
    changed = state.apply([
        VenueFault(venue="binance", kind="rate_limit", phase="fault",
                   detail="Retry-After 3s: no order sent before 22:01:05.120Z", until=1_800_000_000.12),
        VenueFault(venue="binance", kind="in_doubt", phase="resolved", client_order_id="ffe-abc", detail="filled"),
    ])
    assert "log" in changed
    texts = [line.text.split(" ", 1)[1] for line in state.lines]
    assert texts == ["venue_fault binance rate_limit fault: Retry-After 3s: no order sent before 22:01:05.120Z",
                     "venue_fault binance in_doubt resolved ffe-abc: filled"]
