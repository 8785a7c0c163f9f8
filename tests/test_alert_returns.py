"""A condition that clears and comes back is news, not a repeat, both ways: every alert of a condition (a halt, a
breaker, a reconciliation hold, an exit refused, an order in doubt, stale data, a stalled loop or audit trail) and,
where there is one, the alert that says it cleared (REARMED, BREAKER_CLOSED, RECONCILE_OK) are each sent at once
the second time within `alerts.window_s`, when the condition cleared in between.

One shape for every pair: the condition, its clear, the condition again, its clear again, within the default
300 s window. Real parts: a paper engine opened in-process with its monitor and notifier (a real store, its
outbox), a webhook receiver on 127.0.0.1, and the engine's clock stepped forward for the conditions the monitor
looks for itself. The events are those the engine publishes, handed to the notifier as the bus hands them."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from conftest import engine_session, make_settings
from ffe_engine.events import BreakerChanged, EngineStateChanged, OrderEvent, ReconcileEvent
from live_helpers import SteppedClock, wait_for
from receiver import Receiver

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}
SYMBOL = "BTC/USDT"


@dataclass
class Rig:
    host: Any
    clock: SteppedClock

    @property
    def notifier(self) -> Any:
        return self.host.monitor.notifier

    def said(self, *events: Any) -> None:
        for ev in events:
            self.notifier.sink(ev, b"")

    def looks(self, times: int = 1) -> None:
        """The notifier's once-a-second look (its conditions, the orders long in doubt), `times` times."""
        for _ in range(times):
            self.notifier.tick()


Step = Callable[[Rig], None]


def events(*evs: Any) -> Step:
    return lambda rig: rig.said(*evs)


def stale_data(rig: Rig) -> None:
    rig.clock.forward(10)  # past monitor.data_stale_s (5 s) since the symbol's last bar
    rig.looks()


def fresh_data(rig: Rig) -> None:
    rig.host.engine.liveness.bar(SYMBOL)
    rig.looks()


def stalled_loop(rig: Rig) -> None:
    rig.clock.forward(10)  # past monitor.loop_stale_s (5 s) since the loop's last turn; seen twice
    rig.looks(2)


def loop_turns(rig: Rig) -> None:
    rig.host.engine.liveness.turn()
    rig.looks()


def stalled_audit(rig: Rig) -> None:
    rig.host.audit.waiting_since = rig.clock.monotonic() - 10  # a record waiting past monitor.audit_stale_s
    rig.looks(2)


def audit_written(rig: Rig) -> None:
    rig.host.audit.waiting_since = None
    rig.looks()


def in_doubt(rig: Rig) -> None:
    rig.said(OrderEvent(client_order_id="ffe-doubt-1", symbol=SYMBOL, side="buy", status="in_doubt"))
    rig.clock.forward(10)  # past alerts.in_doubt_s (5 s)
    rig.looks()


HALT = EngineStateChanged(state="HALTED", previous="RUNNING", reason="ffe ctl halt", by="ctl")
REARM = EngineStateChanged(state="RUNNING", previous="HALTED", reason="re-armed", by="ctl")
OPEN = BreakerChanged(venue="binance", state="open", previous="closed", failures=3, error="timeout")
CLOSED = BreakerChanged(venue="binance", state="closed", previous="half_open")
RISK = EngineStateChanged(state="PAUSED", previous="RUNNING", reason="DRAWDOWN 16.00% > 15%", by="risk")
RESUME = EngineStateChanged(state="RUNNING", previous="PAUSED", reason="resume", by="ctl")
AUTO = EngineStateChanged(state="RUNNING", previous="RUNNING", reason="approval mode auto", by="ctl")
MANUAL = EngineStateChanged(state="RUNNING", previous="RUNNING", reason="approval mode manual", by="ctl")
UNREACHABLE = ReconcileEvent(status="failed", differences=[{"kind": "venue_unreachable", "error": "refused"}])
DIFFERENCES = ReconcileEvent(status="differences", differences=[{"kind": "cash", "asset": "USDT"}])
AGREES = ReconcileEvent(status="ok", differences=[])
ACCEPTED = ReconcileEvent(status="accepted", differences=[{"kind": "cash", "asset": "USDT"}])
EXIT_REFUSED = OrderEvent(client_order_id="ffe-exit-1", symbol=SYMBOL, side="sell", status="rejected",
                          reason="stop_loss", quantity=0.01, error="market closed")
EXIT_FILLED = OrderEvent(client_order_id="ffe-exit-2", symbol=SYMBOL, side="sell", status="filled",
                         reason="stop_loss", quantity=0.01, filled=0.01)
DOUBT_ENDS = OrderEvent(client_order_id="ffe-doubt-1", symbol=SYMBOL, side="buy", status="filled")

# name: (the condition, its clear, the condition's alert, the clear's alert or None)
PAIRS: dict[str, tuple[Step, Step, str, str | None]] = {
    "halt and re-arm": (events(HALT), events(REARM), "HALTED", "REARMED"),
    "breaker open and closed": (events(OPEN), events(CLOSED), "BREAKER_OPEN", "BREAKER_CLOSED"),
    "risk pause and resume": (events(RISK), events(RESUME), "RISK_PAUSE", None),
    "approval mode auto and manual": (events(AUTO), events(MANUAL), "APPROVAL_MODE", None),
    "exchange unreachable and back": (events(UNREACHABLE), events(AGREES), "RECONCILE", "RECONCILE_OK"),
    "differences and gone": (events(DIFFERENCES), events(AGREES), "RECONCILE", "RECONCILE_OK"),
    "differences and accepted": (events(DIFFERENCES), events(ACCEPTED), "RECONCILE", None),
    "exit refused and sold": (events(EXIT_REFUSED), events(EXIT_FILLED), "EXIT_REFUSED", None),
    "order in doubt and settled": (in_doubt, events(DOUBT_ENDS), "IN_DOUBT", None),
    "stale data and fresh": (stale_data, fresh_data, "STALE_DATA", None),
    "loop stalled and turning": (stalled_loop, loop_turns, "LOOP_STALLED", None),
    "audit stalled and written": (stalled_audit, audit_written, "AUDIT_STALLED", None),
}


@pytest.mark.parametrize("pair", list(PAIRS))
async def test_a_condition_that_clears_and_comes_back_is_sent_at_once_and_so_is_its_clear(tmp_path, pair):
    comes, clears, kind, cleared = PAIRS[pair]
    hook = await Receiver().start()
    settings = make_settings(tmp_path, engine={"symbols": [SYMBOL], "warmup_bars": 100},
                             monitor={"port": 0, "data_stale_s": 5.0, "loop_stale_s": 5.0, "audit_stale_s": 5.0},
                             alerts={"webhook_url": hook.url, "in_doubt_s": 5.0, **FAST})  # the default window
    mine = {kind, cleared, f"{kind}_REPEATED", f"{cleared}_REPEATED"}

    def got() -> list[str]:
        return [r.body["kind"] for r in hook.delivered if r.body.get("kind") in mine]

    expected = [kind, cleared] * 2 if cleared else [kind, kind]
    clock = SteppedClock()
    try:
        async with engine_session(settings, clock=clock) as host:
            rig = Rig(host, clock)
            for step in (comes, clears, comes, clears):
                step(rig)
                await host.store.flush()
            # well within the 300 s window: the second of each is news, sent at once
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: len(got()) >= len(expected), timeout=10, what=pair)
            await asyncio.sleep(0.3)
            assert got() == expected, [r.body.get("kind") for r in hook.delivered]
    finally:
        await hook.stop()


async def test_the_summary_of_a_hold_s_repeats_sent_as_it_clears_says_it_cleared_and_pages_no_one(tmp_path):
    """A reconciliation hold paged, its repeats summed up within the window, then the differences accepted: the
    summary sent as the window ends with the clear must not be the last word, a page saying entries are held. It
    says the hold cleared, as a warning (an operator who takes pages only is not paged for what is over)."""
    hook = await Receiver().start()
    settings = make_settings(tmp_path, engine={"symbols": [SYMBOL], "warmup_bars": 100}, monitor={"port": 0},
                             alerts={"webhook_url": hook.url, **FAST})
    try:
        async with engine_session(settings, clock=SteppedClock()) as host:
            rig = Rig(host, SteppedClock())
            rig.said(DIFFERENCES, DIFFERENCES, DIFFERENCES, ACCEPTED)
            await host.store.flush()
            await wait_for(lambda: any(r.body.get("kind") == "RECONCILE_REPEATED" for r in hook.delivered),
                           timeout=10, what="the summary")
    finally:
        await hook.stop()
    (summary,) = [r.body for r in hook.delivered if r.body.get("kind") == "RECONCILE_REPEATED"]
    assert summary["severity"] == "warn", summary
    assert "cleared since: reconcile accepted" in summary["text"], summary
