"""The exchange's Retry-After on a read (an order lookup, a candle poll) against the fake Binance: the hold it
starts delays what it holds back, and is no failure of the exchange. A request ffe chose not to send does not count
toward the circuit breaker, nor makes reconciliation find the exchange unreachable: the engine keeps RUNNING, nobody
is paged, and the lookups go out again once the hold is over. The one answer that asked for it counts once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conftest import engine_session
from ffe_engine.breaker import BreakerOpen
from ffe_engine.errors import FfeError
from ffe_engine.model import EngineState
from ffe_engine.store import REQUEST_HOLD_KEY
from ffe_engine.venues.base import VenueUnavailable
from ffe_engine.venues.ccxt_venue import CcxtVenue
from fake_exchange import exchange_settings
from live_helpers import GET_ORDER, fx, engine_loop, live_settings, rows, stored_events, wait_for  # noqa: F401
from receiver import Receiver
from test_alerts import FAST
from test_live_engine import open_limit_orders, running_live

OPEN_ORDERS = "GET /api/v3/openOrders"
HOLD_S = 4  # longer than a request waits for here (max_retry_after_s = 1): the requests meanwhile are not sent


async def test_a_418_on_an_order_lookup_neither_pauses_nor_pages_and_the_lookups_go_out_after_it(tmp_path, fx):
    hook = await Receiver().start()
    try:
        alerts = {"webhook_url": hook.url, "window_s": 3.0, **FAST}
        async with running_live(tmp_path, fx, alerts=alerts) as running:
            e, db = running.engine, running.store.path
            (resting,) = await open_limit_orders(e, 1)
            e.venue.reads.max_retry_after_s = 1.0
            fx.fault(GET_ORDER, "418", retry_after=HOLD_S)
            async with engine_loop(e):
                first = await wait_for(lambda: [r for r in fx.requests_to(GET_ORDER) if r.status == 418],
                                       timeout=20, what="the lookup answered 418")
                banned = first[0].answered  # requests already on their way then were sent before the hold
                # The order poll (every 0.2 s) and the feed go on meanwhile, refused inside ffe, not sent.
                await asyncio.sleep(1.5)
                assert e.breaker.state == "closed" and e.breaker.failures <= 1, e.breaker.summary()
                # A reconciliation within the hold: the exchange answered (it asked for a wait), it is not unreachable.
                assert await e.reconcile() == []
                assert e.reconcile_blocked == [] and e.state is EngineState.RUNNING
                assert not [r for r in stored_events(db, "reconcile") if r["status"] == "failed"]
                # Once the hold is over, the order's lookups go out again.
                await wait_for(lambda: [r for r in fx.requests_to(GET_ORDER) if r.received > banned + HOLD_S],
                               timeout=20, what="a lookup after the hold")
                fx.fill(resting)
                await wait_for(lambda: rows(db, "SELECT status FROM orders WHERE client_order_id = ?",
                                            (resting,)) == [("filled",)], timeout=20, what="the fill recorded")
                await asyncio.sleep(e.venue.settle_s)
                assert await e.reconcile() == [], "the books are not the exchange's"
                # Nothing was sent within the hold.
                within = [r for r in fx.requests if banned + 0.05 < r.received < banned + HOLD_S - 0.05]
                assert within == [], [(r.route, r.received - banned) for r in within]
                assert e.state is EngineState.RUNNING and e.breaker.state == "closed"
                assert rows(db, "SELECT state FROM engine_state") == [("RUNNING",)]
                assert stored_events(db, "breaker") == []
                await asyncio.sleep(0.5)  # alerts are delivered in the background
            log = running.log.getvalue()
        assert log.count("candles unavailable") == 0, log
        assert log.count("exchange feed: waiting for the exchange's Retry-After") == 1, log
        pages = [r.body for r in hook.delivered if isinstance(r.body, dict) and r.body.get("severity") == "page"]
        assert pages == [], pages
    finally:
        await hook.stop()


async def test_a_request_held_back_does_not_count_toward_the_breaker_and_one_418_alone_does_not_open_it(tmp_path,
                                                                                                           fx):
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        (resting,) = await open_limit_orders(e, 1)
        e.venue.reads.max_retry_after_s = 1.0
        fx.fault(GET_ORDER, "418", retry_after=HOLD_S)
        for _ in range(5):  # threshold 3: the answer that asked for the hold, then four held back
            try:
                await e.breaker.call(lambda: e.venue.fetch_order(resting, "BTC/USDT"))
            except (BreakerOpen, VenueUnavailable):
                pass
        assert len(fx.requests_to(GET_ORDER)) == 1
        assert e.breaker.state == "closed" and e.breaker.failures == 1, e.breaker.summary()


async def test_a_ban_of_minutes_is_said_once_as_a_warning(fx, caplog):
    venue = CcxtVenue(exchange_settings(fx), ["BTC/USDT"], read_attempts=1)
    venue.exchange.timeout_on_exit = 0
    caplog.set_level(logging.WARNING, logger="ffe_engine.venues.ccxt_venue")
    try:
        await venue.connect()
        fx.fault(GET_ORDER, "418", retry_after=300)
        for _ in range(4):
            try:
                await venue.fetch_order("no-such-order", "BTC/USDT")
            except VenueUnavailable:
                pass
        assert len(fx.requests_to(GET_ORDER)) == 1
        said = [r.getMessage() for r in caplog.records if "Retry-After" in r.getMessage()]
        assert len(said) == 1 and "300" in said[0], said
    finally:
        await venue.close()


async def test_a_start_whose_reconciliation_meets_a_ban_stops_and_the_next_start_waits_for_it(tmp_path, fx):
    """The start compares the books with the exchange before it trades: a reconciliation the exchange's Retry-After
    puts off stops the start, as its first request would (not a start on books never compared), with the wait
    stored for the next start."""
    settings = live_settings(tmp_path, fx)
    fx.fault(OPEN_ORDERS, "418", retry_after=120)
    with pytest.raises(FfeError) as refused:
        async with engine_session(settings, live=True):
            pass
    assert "start failed on binance" in str(refused.value) and "Retry-After" in str(refused.value), refused.value
    db = settings.db_path
    assert not [r for r in stored_events(db, "reconcile") if r["status"] == "failed"]
    (until,) = rows(db, "SELECT value FROM kv WHERE key = ?", (REQUEST_HOLD_KEY,))[0]
    assert until not in (None, "null")
    sent = len(fx.requests)
    with pytest.raises(FfeError) as again:
        async with engine_session(settings, live=True):
            pass
    assert len(fx.requests) == sent, "a start within the ban sent requests"
    said = str(again.value)  # the exchange answered: it asked for a wait, which a later start is past
    assert "did not answer" not in said and "asked for a wait" in said and "Retry-After" in said, said
