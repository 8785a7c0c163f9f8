"""The console's banner after a kill switch says what the halt did, press after press: a second press while the
engine stays HALTED (retrying a cancel that failed, or finding nothing left) and the halt's follow-up are said after
the first press's report, never in its place (the orders it cancelled stay said). A halt after a re-arm begins a new
banner. Fed with the engine's own events, as the console gets them."""

from __future__ import annotations

from ffe_engine import events as ev
from ffe_engine.present import halt_banner
from ffe_tui.state import ConsoleState


def banner(state: ConsoleState) -> str:
    return halt_banner(state.kill.payload(), [e.payload() for e in state.kill_later])


def halted(state: ConsoleState) -> None:
    state.apply([ev.EngineStateChanged(state="HALTED", previous="RUNNING", reason="kill switch", by="operator")])


def test_a_second_press_and_the_follow_up_are_said_after_the_first_press_s_report():
    state = ConsoleState(["BTC/USDT"])
    halted(state)
    state.apply([ev.KillSwitchEvent(action="halt", cancelled=["ffe-a", "ffe-b"],
                                    failed=[{"client_order_id": "ffe-c", "error": "cancel timed out"}],
                                    by="operator", elapsed_ms=4612.8)])
    state.apply([ev.KillSwitchEvent(action="halt", failed=[{"client_order_id": "ffe-c", "error": "cancel timed out"}],
                                    by="operator", elapsed_ms=3600.7)])
    text = banner(state)
    assert text.startswith("KILL SWITCH: HALTED by operator: cancelled 2 (ffe-a, ffe-b) failed 1"), text
    assert "pressed again by operator: cancelled 0 failed 1 (ffe-c: cancel timed out)" in text, text
    state.apply([ev.KillSwitchEvent(action="halt", cancelled=["ffe-c"], by="engine", follow_up=True)])
    text = banner(state)
    assert "cancelled 2 (ffe-a, ffe-b)" in text and "follow-up by engine: cancelled since" in text, text
    state.apply([ev.KillSwitchEvent(action="halt", by="ctl")])
    assert banner(state).endswith("pressed again by ctl: nothing more to cancel"), banner(state)


def test_a_halt_after_a_re_arm_begins_a_new_banner():
    state = ConsoleState(["BTC/USDT"])
    halted(state)
    state.apply([ev.KillSwitchEvent(action="halt", cancelled=["ffe-a"], by="operator")])
    state.apply([ev.EngineStateChanged(state="RUNNING", previous="HALTED", reason="re-armed", by="operator")])
    halted(state)
    state.apply([ev.KillSwitchEvent(action="halt", by="operator")])
    assert banner(state) == "KILL SWITCH: HALTED by operator: cancelled 0 failed 0", banner(state)


def test_a_failed_cancel_ended_since_is_said_short_so_its_end_shows_in_the_banner_s_rows():
    """A cancel that failed on an exchange that was down, then the follow-up that cancelled it: the exchange's long
    error is no longer news, and kept whole it pushed the follow-up out of the banner's three rows. The failure is
    named by its order only once a later report ends it; one still failing keeps its error."""
    error = "ExchangeNotAvailable: binance GET https://api.example/api/v3/order " + "x" * 200
    state = ConsoleState(["BTC/USDT"])
    halted(state)
    state.apply([ev.KillSwitchEvent(action="halt", failed=[{"client_order_id": "ffe-c", "error": error},
                                                           {"client_order_id": "ffe-d", "error": "timed out"}],
                                    by="operator")])
    assert error in banner(state)
    state.apply([ev.KillSwitchEvent(action="halt", cancelled=["ffe-c"], by="engine", follow_up=True)])
    text = banner(state)
    assert "ExchangeNotAvailable" not in text, text
    assert text.startswith("KILL SWITCH: HALTED by operator: cancelled 0 failed 2 (ffe-c, ffe-d: timed out)"), text
    assert text.endswith("follow-up by engine: cancelled since (its cancel reported failed) 1 (ffe-c)"), text
