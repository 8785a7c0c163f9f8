"""One vocabulary: an event reads the same in the console's log (a live event's fields, enums and all) and in
`ffe audit tail` (the same event's audit record, read back from JSON); numbers and times follow one rule."""

from __future__ import annotations

import orjson
import pytest

from ffe_engine import events as ev
from ffe_engine import fmt, present
from ffe_engine.clock import WallClock
from ffe_engine.model import Action, OrderReason, OrderStatus, Side

EVENTS = [
    ev.DecisionMade(decision_id="d1", symbol="BTC/USDT", action=Action.BUY, confidence=0.7312, tier=2,
                    strategy="trend", quantity=0.0125, outcome="submitted", reason="tier 2 entry",
                    client_order_id="c1", gates=[{"code": "DRAWDOWN", "passed": True}]),
    ev.OrderEvent(client_order_id="c1", decision_id="d1", symbol="BTC/USDT", side=Side.BUY, quantity=0.0125,
                  status=OrderStatus.FILLED, reason=OrderReason.SIGNAL, filled=0.0125, average=60118.12),
    ev.FillEvent(client_order_id="c1", symbol="BTC/USDT", side=Side.BUY, quantity=0.0125, price=60118.12,
                 fee=0.0751),
    ev.PositionOpened(symbol="BTC/USDT", side=Side.BUY, quantity=0.0125, entry_price=60118.12, stop_loss=59000.0,
                      take_profit=62000.5, decision_id="d1"),
    ev.PositionClosed(symbol="BTC/USDT", side=Side.BUY, quantity=0.0125, entry_price=60118.12, exit_price=62000.5,
                      pnl=1234.5678, fees=0.15, reason="take_profit", trade_id=7, decision_id="d1"),
    ev.EngineStateChanged(state="HALTED", previous="RUNNING", reason="kill switch", by="operator"),
    ev.ApprovalEvent(approval_id="a1", decision_id="d1", outcome="expired", by="ttl", symbol="ETH/USDT",
                     side=Side.SELL, quantity=0.5, price=3008.1, reason="no answer"),
    ev.KillSwitchEvent(action="flatten", cancelled=["c1", "c2"], failed=[{"client_order_id": "c3", "error": "x"}],
                       closing=["BTC/USDT"], by="ctl", elapsed_ms=12.34),
    ev.WeightsChanged(weights={"trend": 0.3, "momentum": 0.7}, reason="feedback"),
    ev.ReconcileEvent(status="differences", differences=[{"symbol": "BTC/USDT", "ours": 1.0, "venue": 0.5}]),
    ev.BreakerChanged(venue="paper", state="open", previous="closed", failures=3, error="timeout"),
    ev.ErrorEvent(message="boom", where="engine loop"),
    ev.RunEvent(phase="stop", mode="PAPER", detail={"state": "RUNNING", "equity": 10016.1}),
    ev.RecoveredEvent(backup="ffe-backup-20261203T150000Z.tar.zst", status="recovered", orders=["c9"], fills=1),
]


@pytest.mark.parametrize("event", EVENTS, ids=[e.name for e in EVENTS])
def test_a_live_event_and_its_audit_record_read_the_same(event):
    bus = ev.EventBus(WallClock())
    lines: list[bytes] = []
    bus.add_sink(lambda e, line: lines.append(line))
    bus.publish(event)
    record = orjson.loads(lines[0])
    live = present.line(event.name, event.payload())
    assert live == present.line(record["event"], record)
    assert live.startswith(event.name + " ") and "Side." not in live and "Action." not in live


def test_each_event_says_what_matters():
    said = {e.name: present.line(e.name, e.payload()) for e in EVENTS}
    assert said["decision"] == ("decision BTC/USDT BUY conf 0.73 tier 2 -> submitted qty 0.0125 (tier 2 entry) "
                                "order c1 decision d1")
    assert said["fill"] == "fill BTC/USDT buy 0.0125 @ 60,118.1 fee 0.0751 order c1"
    assert said["position_closed"] == ("position_closed BTC/USDT buy 0.0125 60,118.1 -> 62,000.5 pnl +1,234.57 "
                                       "fees 0.1500 (take_profit) trade 7 decision d1")
    assert said["engine_state"] == "engine_state RUNNING -> HALTED: kill switch (by operator)"
    assert said["approval"].startswith("approval a1 expired ETH/USDT sell 0.5 @ 3,008.10 by ttl (no answer)")
    assert said["kill_switch"] == ("kill_switch flatten by ctl: cancelled 2 (c1, c2) failed 1 (c3: x) closing 1 "
                                   "in 12.3 ms")
    assert present.kill_headline(EVENTS[7].payload()).startswith("FLATTEN, then HALTED, by ctl: cancelled 2")


def test_an_approval_says_the_order_made_of_it_and_an_approve_whether_that_order_went_through():
    approved = ev.ApprovalEvent(approval_id="a2", decision_id="d2", outcome="approved", by="ctl", symbol="BTC/USDT",
                                side=Side.BUY, quantity=0.01, price=30_000.0, client_order_id="c9",
                                reason="its order c9 was refused: VENUE_HOLD: 429")
    assert present.line("approval", approved.payload()).endswith(
        "by ctl (its order c9 was refused: VENUE_HOLD: 429) order c9 decision d2")
    answer = {"approval_id": "a2", "client_order_id": "c9"}
    assert present.approve_answer({**answer, "accepted": True}) == "approved a2: order c9"
    assert present.approve_answer({**answer, "accepted": False, "reason": "VENUE_HOLD: 429"}) == (
        "approved a2: its order c9 was refused: VENUE_HOLD: 429")
    assert present.approve_answer({"approval_id": "a2", "client_order_id": None, "accepted": False,
                                   "reason": "ENGINE_STATE: PAUSED"}) == "a2 refused on re-check: ENGINE_STATE: PAUSED"


def test_a_record_of_an_unexpected_shape_never_fails_the_reader():
    assert present.line("fill", {"symbol": "X", "quantity": "lots", "price": None}) == "fill X None - @ - fee -"
    text = present.line("weights", {"weights": [1, 2]})
    assert text.startswith("weights ") and "[1,2]" in text
    assert present.line("something_new", {"ts": "t", "seq": 1, "a": 1.5}) == "something_new a=1.5"


def test_numbers_and_times_follow_one_rule():
    assert [fmt.price(x) for x in (60118.12, 3008.1, 0.1234564, 0, None, float("nan"))] == \
        ["60,118.1", "3,008.10", "0.123456", "0", "-", "-"]
    assert [fmt.qty(x) for x in (0.01, 1.5, 12345.678, 0.0000123)] == ["0.01", "1.5", "12,345.7", "0.0000123"]
    assert fmt.money(1234.5) == "1,234.50" and fmt.money(-0.5, signed=True) == "-0.50"
    assert fmt.pct(12.345) == "12.35%" and fmt.ratio(0.5, signed=True) == "+50.00%"
    assert fmt.number(1234) == "1,234" and fmt.number(True) == "yes" and fmt.number(0.61654, 4) == "0.6165"
    assert fmt.iso(1_700_000_040.9) == "2023-11-14T22:14:00Z" and fmt.iso_ms(1_700_000_040_000) == \
        "2023-11-14T22:14:00Z"
    assert fmt.market_time(1_700_000_040_000) == "2023-11-14T22:14Z" and fmt.clock(1_700_000_040.5) == "22:14:00Z"
    assert [fmt.duration(s) for s in (None, 42, 185, 7800, 273600)] == ["-", "42s", "3m05s", "2h10m", "3d04h"]


def test_a_time_prints_with_four_year_digits_and_one_no_calendar_shows_prints_as_missing():
    """`1-01-01T00:00:00Z` was printed for the year 1, and the year 10000 was a traceback (a backtest's report of a
    candle near 9999-12-31): every time text has four year digits, and a time beyond the calendar (1..9999) is "-"
    as a missing one is, never an error."""
    from ffe_engine.market.csvdata import iso

    year_one = -62_135_596_800  # 0001-01-01T00:00:00Z
    assert fmt.iso(year_one) == fmt.iso_ms(year_one * 1000) == iso(year_one * 1000) == "0001-01-01T00:00:00Z"
    assert fmt.market_time(year_one * 1000) == "0001-01-01T00:00Z"
    assert fmt.iso_ms(-1) == "1969-12-31T23:59:59Z"  # a second not yet ended is the one it is in
    year_10000 = 253_402_300_800
    for beyond in (year_10000, year_one - 1, 1e300, -1e300, 10**30):
        assert fmt.iso(beyond) == fmt.iso_ms(beyond * 1000) == fmt.market_time(beyond * 1000) == "-"
        assert iso(int(beyond) * 1000) == "-"
    assert fmt.iso(year_10000 - 1) == "9999-12-31T23:59:59Z"


def test_a_run_s_equity_is_said_as_money_with_its_two_decimals():
    """`run stop PAPER equity=10,006.2` read as a price; the console's log and `ffe audit tail` say money with two
    decimals everywhere else."""
    text = present.line("run", {"phase": "stop", "mode": "PAPER",
                                "detail": {"state": "RUNNING", "bars": 40, "equity": 10006.2}})
    assert "equity=10,006.20" in text and "bars=40" in text, text
    assert "equity=10,000.00" in present.line("run", {"phase": "stop", "mode": "PAPER",
                                                      "detail": {"equity": 10000}})


def test_a_start_s_warnings_come_first_in_its_line():
    """A start after a kill says so (`last_run`) among its figures: first, so that a console 80 columns wide, which
    cuts the line, still shows it."""
    text = present.line("run", {"phase": "start", "mode": "LIVE", "detail": {
        "state": "PAUSED", "recovered_orders": 0, "positions": 1, "equity": 10000.0, "symbols": ["BTC/USDT"],
        "last_run": "ended without its stop record", "breached": ["DRAWDOWN 16.00% > 15%"]}})
    assert text.startswith("run start LIVE last_run=ended without its stop record breached="), text
    assert "state=PAUSED" in text and "equity=10,000.00" in text, text


def test_a_figure_over_its_limit_is_said_with_the_decimals_that_show_it_over():
    """A risk pause's reason said `DRAWDOWN 0.05% > 0.05%`: 0.0507 rounded to two decimals. Two decimals where they
    tell the figure from its limit, more where they do not."""
    assert fmt.beyond(16.0, 15.0) == "16.00"
    assert fmt.beyond(0.0507, 0.05) == "0.051"
    assert fmt.beyond(15.0000001, 15.0) == "15.000000"  # at most six: the comparison said over, the text says why


def test_an_accept_of_the_operator_s_own_coins_names_them_in_its_reconcile_line():
    """runbook.md: the accept's `reconcile` record names the coins taken as the operator's, and `ffe audit tail
    --event reconcile` shows them: its line says them, rounded as quantities are, not only in --json."""
    said = present.line("reconcile", {"status": "accepted", "by": "ctl", "differences": [{"kind": "position"}],
                                      "own_coins": {"BTC": 0.020000000000000004}})
    assert said.endswith("; coins taken as the operator's own: 0.02 BTC"), said


def test_a_kill_switch_report_names_every_order_not_the_first_four():
    """`ffe ctl halt`, the audit line and the console's whole text (Health) are where the operator reads which
    orders a kill switch cancelled, which filled first and which are in doubt: each one, not four and an ellipsis."""
    ids = [f"ffe-{i:02d}" for i in range(7)]
    said = present.kill_headline({"action": "flatten", "by": "ctl", "cancelled": ids, "failed": [], "filled": ids,
                                  "closing": ids, "in_doubt": ids})
    for cid in ids:
        assert said.count(cid) >= 3, said
    assert "…" not in said, said
    follow = present.kill_headline({"action": "flatten", "by": "engine", "follow_up": True, "closing": ids,
                                    "failed": [], "cancelled": [], "filled": []})
    assert all(cid in follow for cid in ids) and "…" not in follow, follow


def test_balances_show_the_quote_currency_to_the_cent_and_coins_to_their_last_digit():
    """The quote currency's free, locked and total as money (to the cent, as its value), not six significant digits
    (123,457 for 123,456.78): free and locked add up to the total on screen; a coin keeps its exchange decimals."""
    from ffe_engine import tables, views
    result = views.balance_rows({"USDT": 123_456.78, "BTC": 0.01234567}, {"USDT": 989.234}, {"BTC/USDT": 30_000.0},
                                "USDT")
    usdt, btc = tables.balance_rows(result)
    assert usdt == ["USDT", "122,467.55", "989.23", "123,456.78", "123,456.78"], usdt
    assert btc == ["BTC", "0.01234567", "0", "0.01234567", "370.37"], btc
