"""The Risk gates pane's title and the votes' outcome row say what became of a trade that was waiting for approval
once it has ended (rejected, expired, approved), not "awaiting approval" until the next decision (an hour on hourly
bars). Fed with the engine's own events, as the console gets them."""

from __future__ import annotations

from ffe_engine import events as ev
from ffe_tui.state import ConsoleState

BTC = "BTC/USDT"
GATES = [{"code": "ENGINE_STATE", "value": "RUNNING", "limit": "RUNNING", "passed": True, "detail": ""}]


def waiting(state: ConsoleState) -> None:
    state.apply([ev.DecisionMade(decision_id="d1", symbol=BTC, action="buy", quantity=0.5, gates=GATES,
                                 outcome="pending_approval", approval_id="a1"),
                 ev.ApprovalEvent(approval_id="a1", decision_id="d1", outcome="pending", symbol=BTC, side="buy",
                                  quantity=0.5, price=30_000.0, gates=GATES)])
    assert state.gates["title"] == f"{BTC} buy 0.5 -> awaiting approval", state.gates
    assert state.decisions[BTC].outcome == "pending_approval"


def test_a_rejected_approval_is_said_rejected_in_the_gates_title_and_the_votes():
    state = ConsoleState([BTC])
    waiting(state)
    changed = state.apply([ev.ApprovalEvent(approval_id="a1", decision_id="d1", outcome="rejected", by="ctl",
                                            symbol=BTC, side="buy", quantity=0.5, price=30_000.0)])
    assert {"gates", "votes"} <= changed, changed
    assert state.gates["title"] == f"{BTC} buy 0.5 -> approval rejected by ctl", state.gates
    assert state.gates["gates"] == GATES  # the verdicts it was waiting with stay shown
    assert state.decisions[BTC].outcome == "approval rejected"


def test_an_approval_that_ended_after_a_newer_decision_leaves_that_one_alone():
    state = ConsoleState([BTC])
    waiting(state)
    state.apply([ev.DecisionMade(decision_id="d2", symbol=BTC, action="sell", quantity=0.5, gates=GATES,
                                 outcome="filled")])
    state.apply([ev.ApprovalEvent(approval_id="a1", decision_id="d1", outcome="expired", by="ttl", symbol=BTC,
                                  side="buy", quantity=0.5, price=30_000.0)])
    assert state.gates["title"] == f"{BTC} sell 0.5 -> filled", state.gates
    assert state.decisions[BTC].outcome == "filled"


def test_an_approval_that_ended_before_the_console_showed_any_gates_is_taken_in():
    """A console opening on an engine whose approval expired at its start (by ttl, while it was down) gets that end
    before any gates were shown: taken in, nothing changed, not an error that stops the console before its engine
    runs."""
    state = ConsoleState([BTC])
    changed = state.apply([ev.ApprovalEvent(approval_id="a1", decision_id="d1", outcome="expired", by="ttl",
                                            symbol=BTC, side="buy", quantity=0.5, price=30_000.0)], news=False)
    assert state.gates is None and "approvals" in changed


def test_the_gates_title_says_the_side_alike_for_a_decision_and_an_approval():
    """A refused decision's title said `BUY` (the action's enum) where an approval's said `buy`: one word for it."""
    from ffe_engine.model import Action, Side
    state = ConsoleState([BTC])
    state.apply([ev.DecisionMade(decision_id="d1", symbol=BTC, action=Action.BUY, quantity=0.5, gates=GATES,
                                 outcome="rejected")])
    assert state.gates["title"] == f"{BTC} buy 0.5 -> rejected", state.gates
    state.apply([ev.ApprovalEvent(approval_id="a2", decision_id="d2", outcome="pending", symbol=BTC, side=Side.BUY,
                                  quantity=0.5, price=30_000.0, gates=GATES)])
    assert state.gates["title"] == f"{BTC} buy 0.5 -> awaiting approval", state.gates
