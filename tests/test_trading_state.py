"""The trading state: one rule for what each state allows, and a change recorded with the event that says it.

`set` changes the state in memory, then stores it and its `engine_state` event in one transaction (another
connection sees both once it returns); re-setting the same state records nothing unless forced. `allows` is the
ENGINE_STATE gate the gatekeeper records and the order path asks again just before a send.
"""

from __future__ import annotations

import json

import pytest

from conftest import db_rows
from ffe_engine.clock import ManualClock
from ffe_engine.events import EventBus
from ffe_engine.model import EngineState, OrderReason, Side
from ffe_engine.risk import OrderIntent
from ffe_engine.store import Store
from ffe_engine.trading_state import TradingState
from pipeline_helpers import trading_state

RUNNING, PAUSED, HALTED = EngineState.RUNNING, EngineState.PAUSED, EngineState.HALTED


def intent(reduce_only: bool, reason: OrderReason = OrderReason.SIGNAL) -> OrderIntent:
    return OrderIntent(symbol="BTC/USDT", side=Side.SELL if reduce_only else Side.BUY, quantity=1.0, reason=reason,
                       reduce_only=reduce_only)


@pytest.mark.parametrize("state, entry, exit_, flatten", [
    (RUNNING, True, True, True),
    (PAUSED, False, True, True),  # exits still go out: a position can always be closed
    (HALTED, False, False, True),  # nothing but the closing orders of a flatten
])
def test_what_each_state_allows(state, entry, exit_, flatten):
    trading = trading_state(state)
    verdicts = [trading.allows(intent(False)), trading.allows(intent(True)),
                trading.allows(intent(True, OrderReason.FLATTEN))]
    assert [g.passed for g in verdicts] == [entry, exit_, flatten]
    assert {g.code for g in verdicts} == {"ENGINE_STATE"} and {g.value for g in verdicts} == {state.value}
    assert [g.limit for g in verdicts] == ["RUNNING", "not HALTED (flatten excepted)", "not HALTED (flatten excepted)"]


async def test_a_change_is_stored_with_its_event_and_stamped_with_the_clock(tmp_path):
    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    clock = ManualClock(wall=1_000.0)
    bus = EventBus(clock)
    bus.add_sink(store.add_event)

    def committed() -> tuple[list[tuple], list[tuple]]:
        """The stored row and the state events, read by another connection."""
        rows = db_rows(path, "SELECT state, reason, by, updated_ts FROM engine_state")
        events = [json.loads(r[0]) for r in db_rows(path, "SELECT data FROM events WHERE event = 'engine_state' "
                                                          "ORDER BY seq")]
        return rows, [(e["state"], e["previous"], e["reason"], e["by"]) for e in events]

    trading = TradingState(store, bus, clock, RUNNING)
    try:
        await trading.set(HALTED, "kill switch", "alice")
        assert (trading.state, trading.reason) == (HALTED, "kill switch")
        assert committed() == ([("HALTED", "kill switch", "alice", 1_000.0)],
                               [("HALTED", "RUNNING", "kill switch", "alice")])

        clock.forward(5.0)
        await trading.set(HALTED, "again", "bob")  # already HALTED: nothing recorded
        assert len(committed()[1]) == 1 and trading.reason == "kill switch"
        await trading.set(HALTED, "again", "bob", force=True)
        rows, events = committed()
        assert (rows, events[-1]) == ([("HALTED", "again", "bob", 1_005.0)], ("HALTED", "HALTED", "again", "bob"))
    finally:
        await store.close()
