"""The trading state: one rule for what each state allows, and a change recorded before anyone hears of it.

`set` changes the state in memory, stores it (another connection sees it) and only then publishes the
`engine_state` event; re-setting the same state records nothing unless forced. `allows` is the ENGINE_STATE gate
the gatekeeper records and the order path asks again just before a send.
"""

from __future__ import annotations

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


async def test_a_change_is_stored_before_it_is_published_and_stamped_with_the_clock(tmp_path):
    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    clock = ManualClock(wall=1_000.0)
    bus = EventBus(clock)
    seen: list[tuple] = []
    # What a subscriber sees at the moment the event is published: the stored row, read by another connection.
    bus.add_sink(lambda ev, line: seen.append((ev.state, ev.previous, db_rows(path, "SELECT state, reason, by, "
                                                                              "updated_ts FROM engine_state"))))
    trading = TradingState(store, bus, clock, RUNNING)
    try:
        await trading.set(HALTED, "kill switch", "alice")
        assert (trading.state, trading.reason) == (HALTED, "kill switch")
        assert seen == [("HALTED", "RUNNING", [("HALTED", "kill switch", "alice", 1_000.0)])]

        clock.forward(5.0)
        await trading.set(HALTED, "again", "bob")  # already HALTED: nothing recorded
        assert len(seen) == 1 and trading.reason == "kill switch"
        await trading.set(HALTED, "again", "bob", force=True)
        assert seen[-1] == ("HALTED", "HALTED", [("HALTED", "again", "bob", 1_005.0)])
    finally:
        await store.close()
