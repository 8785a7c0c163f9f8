"""The circuit breaker of a venue whose order sends keep failing while its reads work, on a live engine against the
fake Binance: every POST /api/v3/order answered 503 (not executed), every lookup of the order between its sends
answered ("order does not exist").

The breaker counts the failed sends apart from the reads that worked between them: the third send in a row that
fails opens it, which pauses the engine and pages BREAKER_OPEN. Past the recovery timeout, a read that works does
not close it (it says nothing of the sends); a send that works does. A call already on its way when the breaker
opened that fails after it moves the probe time on, and its record says the breaker is still open: no half-open
record of a probe that was never made.
"""

from __future__ import annotations

import asyncio

import pytest

from ffe_engine import present
from ffe_engine.errors import ControlError
from ffe_engine.model import EngineState
from live_helpers import (BTC, GET_ORDER, POST_ORDER, SteppedClock, engine_loop, fx, next_bar, rows,  # noqa: F401
                          stored_events, wait_for)
from receiver import Receiver
from test_alerts import FAST, kinds
from test_live_engine import running_live

BREAKER = {"failure_threshold": 3, "recovery_timeout_s": 60.0}  # on the stepped clock: not waited for
QUIET = {"reconcile_interval_s": 3600}  # no reconciliation meanwhile: the only calls are the order's
ACCOUNT = "GET /api/v3/account"


def transitions(db) -> list[tuple[str, str, int]]:
    return [(b["previous"], b["state"], b["failures"]) for b in stored_events(db, "breaker")]


def state_row(db) -> tuple:
    (row,) = rows(db, "SELECT state, by FROM engine_state")
    return row


async def sends_open_the_breaker(e, fx, db) -> None:
    """An operator's order whose every send is answered 503: sent, looked up (not found), sent again after the
    settle window, until the breaker opens on the third failed send and pauses the engine."""
    fx.fault(POST_ORDER, "5xx_not_executed", times=50)
    await e.operator_order(BTC, "buy", 0.001)
    await wait_for(lambda: state_row(db) == ("PAUSED", "breaker"), timeout=30, what="the engine paused by the breaker")
    sends = fx.requests_to(POST_ORDER)
    assert [r.status for r in sends] == [503] * 3, [(r.status, r.fault) for r in sends]
    # the lookups between the sends were answered: the venue reads, it does not take orders
    looked = [r for r in fx.requests_to(GET_ORDER) if sends[0].received < r.received < sends[-1].received]
    assert looked and all(r.status is not None and r.status < 500 for r in looked), [r.status for r in looked]
    assert e.breaker.state == "open"
    assert transitions(db) == [("closed", "open", 3)]


async def test_order_sends_that_keep_failing_open_the_breaker_pause_and_page_while_the_lookups_work(tmp_path, fx):
    hook = await Receiver().start()
    try:
        alerts = {"webhook_url": hook.url, "window_s": 3.0, **FAST}
        async with running_live(tmp_path, fx, clock=SteppedClock(), breaker=BREAKER, engine=QUIET,
                                alerts=alerts) as running:
            e, db = running.engine, running.store.path
            async with engine_loop(e):
                await sends_open_the_breaker(e, fx, db)
                assert e.state is EngineState.PAUSED and e.state_reason.startswith("breaker open on binance: ")
                await wait_for(lambda: "BREAKER_OPEN" in kinds(hook), timeout=10, what="the BREAKER_OPEN page")
                # open: nothing more is sent to the venue
                await asyncio.sleep(2 * e.venue.settle_s)
                assert len(fx.requests_to(POST_ORDER)) == 3
        (page,) = [r.body for r in hook.delivered if isinstance(r.body, dict) and r.body.get("kind") == "BREAKER_OPEN"]
        assert page["severity"] == "page", page
    finally:
        await hook.stop()


async def test_after_failed_sends_a_read_that_works_does_not_close_the_breaker_and_a_send_that_works_does(tmp_path,
                                                                                                          fx):
    """The order poll run by the test, one round at a time (the engine's loop not running): nothing calls the venue
    but what the test asks for, so the probe is the call the test makes."""
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock=clock, breaker=BREAKER, engine=QUIET) as running:
        e, db = running.engine, running.store.path
        fx.fault(POST_ORDER, "5xx_not_executed", times=50)
        await e.operator_order(BTC, "buy", 0.001)
        for _ in range(20):  # each round looks the order up; past its settle window it is sent again
            if e.breaker.state == "open":
                break
            clock.forward(e.venue.settle_s)
            await e.orders.poll()
        assert e.breaker.state == "open", e.breaker.summary()
        assert [r.status for r in fx.requests_to(POST_ORDER)] == [503] * 3
        fx.clear_faults(POST_ORDER)
        clock.forward(60.0)
        # past the recovery timeout: the balances are read, and that says nothing of the order sends
        await e.balances()
        assert e.breaker.state != "closed", e.breaker.summary()
        assert e.breaker.allows()  # the next call goes through: an order send decides
        res = await e.operator_order(BTC, "buy", 0.001)
        assert res["accepted"], res
        assert e.breaker.state == "closed", e.breaker.summary()
        (status,) = rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (res["client_order_id"],))
        assert status == ("filled",)
        await asyncio.sleep(0.5)  # the records written
        said = [(previous, state) for previous, state, _ in transitions(db)]
        assert said == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")], said


async def test_a_call_under_way_when_the_breaker_opened_that_fails_after_it_is_no_probe(tmp_path, fx):
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock=clock, breaker=BREAKER, engine=QUIET) as running:
        e, db = running.engine, running.store.path
        answered = asyncio.Event()

        async def balances_on_their_way():
            await answered.wait()  # sent before the breaker opened, answered after
            return await e.venue.fetch_balance_locked()

        async with engine_loop(e):
            on_their_way = asyncio.ensure_future(e.breaker.call(balances_on_their_way))
            fx.down = True
            await reads_open_the_breaker(e)
            assert e.breaker.state == "open" and not on_their_way.done()
            first = (await wait_for(lambda: stored_events(db, "breaker"), timeout=10, what="the opening stored"))[-1]
            fx.down = False
            fx.fault(ACCOUNT, "5xx_not_executed", times=10)
            clock.forward(5.0)
            answered.set()
            with pytest.raises(Exception):
                await on_their_way
            assert e.breaker.state == "open"
            # the probe waits the full timeout from the last failure
            assert e.breaker.retry_at == pytest.approx(clock.monotonic() + 60.0, abs=2.0)
            await asyncio.sleep(0.5)  # the records written
        records = stored_events(db, "breaker")
        said = [(b["previous"], b["state"]) for b in records]
        assert "half_open" not in {s for pair in said for s in pair}, said
        assert said[0] == ("closed", "open") and all(s == "open" for _, s in said), said
        assert records[-1]["retry_at"] > first["retry_at"], records
        shown = [present.line("breaker", r) for r in records]  # as `ffe audit tail` and the console's log say them
        assert not [t for t in shown if "half_open" in t], shown


async def reads_open_the_breaker(e) -> None:
    """Three balance reads that fail in a row (the exchange down, or failing the account's route) open the breaker."""
    for _ in range(3):
        with pytest.raises(ControlError):
            await e.balances()
    assert e.breaker.state == "open"


async def test_a_breaker_opened_by_reads_is_probed_by_the_engine_and_closes_once_the_exchange_answers(tmp_path, fx):
    """Nothing in flight, nobody asking: the engine itself probes an open breaker once its recovery time is over (a
    balance read), so that it closes (BREAKER_CLOSED) once the exchange answers again, not at the next order."""
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock=clock, breaker=BREAKER, engine=QUIET) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.down = True
            await reads_open_the_breaker(e)
            asked = len(fx.requests_to(ACCOUNT))
            await asyncio.sleep(1.0)  # turns of the loop before the recovery time: no probe
            assert len(fx.requests_to(ACCOUNT)) == asked and e.breaker.state == "open"
            fx.down = False
            clock.forward(61.0)
            await wait_for(lambda: e.breaker.state == "closed", timeout=15, what="the breaker closed by a probe")
            await asyncio.sleep(1.0)  # closed: no more probes
            assert len(fx.requests_to(ACCOUNT)) == asked + 1
            await asyncio.sleep(0.5)  # the records written
        said = [(previous, state) for previous, state, _ in transitions(db)]
        assert said == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")], said


async def test_any_read_that_is_the_breaker_s_probe_asks_the_exchange_once(tmp_path, fx):
    """Past its recovery time, the next read through the breaker is its probe, whoever asks (here the operator's
    balances): one request, not a read's tries, to an exchange that may still be down; its failure opens it again."""
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock=clock, breaker=BREAKER, engine=QUIET) as running:
        e = running.engine
        fx.down = True
        await reads_open_the_breaker(e)
        fx.down = False
        fx.fault(ACCOUNT, "5xx_not_executed", times=1000)
        asked = len(fx.requests_to(ACCOUNT))
        clock.forward(61.0)
        with pytest.raises(ControlError):
            await e.balances()
        assert len(fx.requests_to(ACCOUNT)) == asked + 1
        assert e.breaker.state == "open"
        fx.clear_faults(ACCOUNT)
        clock.forward(61.0)
        await e.balances()
        assert e.breaker.state == "closed"
        fx.fault(ACCOUNT, "5xx_not_executed", times=1)  # closed again: a read's tries as before
        await e.balances()
        assert len(fx.requests_to(ACCOUNT)) == asked + 4


async def test_the_engine_s_probe_answered_neither_way_is_not_repeated_before_another_recovery_time(tmp_path, fx):
    """The probe's balance read answered with a refusal that neither closes nor fails the breaker (the exchange
    refusing the key): the engine reads no more than once per recovery time all the same, not at every turn."""
    clock = SteppedClock()
    quick = {**QUIET, "order_poll_s": 0.1}
    async with running_live(tmp_path, fx, clock=clock, breaker=BREAKER, engine=quick) as running:
        e = running.engine
        async with engine_loop(e):
            fx.down = True
            await reads_open_the_breaker(e)
            fx.down = False
            fx.fault(ACCOUNT, "error", times=1000, status=401, code=-2015,
                     msg="Invalid API-key, IP, or permissions for action.")
            asked = len(fx.requests_to(ACCOUNT))
            clock.forward(61.0)
            await wait_for(lambda: len(fx.requests_to(ACCOUNT)) > asked, timeout=15, what="the probe")
            await asyncio.sleep(2.0)  # twenty turns of the loop's upkeep
            assert len(fx.requests_to(ACCOUNT)) == asked + 1
            clock.forward(61.0)
            await wait_for(lambda: len(fx.requests_to(ACCOUNT)) > asked + 1, timeout=15, what="the next probe")


async def test_a_bar_never_waits_for_the_engine_s_probe(tmp_path, fx):
    """The probe is the loop's upkeep, never a bar's: an account route that hangs once the breaker is past its
    recovery time holds up no bar (a bar waiting for a read and its retries would stall the loop)."""
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock=clock, breaker=BREAKER, engine=QUIET) as running:
        e = running.engine
        fx.fault(ACCOUNT, "5xx_not_executed", times=1000)
        await reads_open_the_breaker(e)
        fx.clear_faults(ACCOUNT)
        fx.fault(ACCOUNT, "hang", seconds=3600, times=1000)
        asked = len(fx.requests_to(ACCOUNT))
        clock.forward(61.0)
        try:
            assert await asyncio.wait_for(next_bar(e, fx), timeout=5.0)
            assert len(fx.requests_to(ACCOUNT)) == asked
        finally:
            fx.end_hangs()


async def test_the_engine_s_probe_of_an_exchange_still_down_is_one_request(tmp_path, fx):
    """A probe is one request to an exchange known to be failing, not a read's retries."""
    clock = SteppedClock()
    async with running_live(tmp_path, fx, clock=clock, breaker=BREAKER, engine=QUIET) as running:
        e = running.engine
        async with engine_loop(e):
            fx.down = True
            await reads_open_the_breaker(e)
            asked = len(fx.requests_to(ACCOUNT))
            clock.forward(61.0)
            await wait_for(lambda: len(fx.requests_to(ACCOUNT)) > asked, timeout=15, what="the probe")
            await asyncio.sleep(2.0)  # a read's retries would have come by now
            assert len(fx.requests_to(ACCOUNT)) == asked + 1
            assert e.breaker.state == "open"
