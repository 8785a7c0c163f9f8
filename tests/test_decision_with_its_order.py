"""A decision that makes an order is committed with the order's journal entry, not after the order has been sent.

The instant that matters is the one right after the journal entry's commit, while the order is on the wire: the
database a SIGKILL would leave then is copied (SQLite's online backup reads only committed data) and must hold the
decision the order was made of (its row and its `decision` event, naming the order). Otherwise a kill there leaves an
order of a decision that exists nowhere: `ffe audit show` cannot say why it was made, and the votes the weights learn
from when its trade closes are lost.

And an entry the exchange fills in its answer to the create (a market order on Binance) is booked while the order
path is still sending it: the learner must take that trade's votes from its decision then, not from records not
written yet.
"""

from __future__ import annotations

import asyncio
import json

from ffe_engine.clock import ManualClock
from ffe_engine.venues.ccxt_venue import CcxtVenue

from fake_exchange import exchange_settings
from live_helpers import BTC, fx  # noqa: F401
from pipeline_helpers import BUY, SELL, crashed_copy, make_settings, paper_venue, pipelines
from test_approval_ends_once import SlowVenue

_ = pipelines  # a fixture


def decision_of(db_path, copy_path, client_order_id: str) -> tuple[str | None, list, list]:
    """(the order's decision id, the decisions rows of it, its `decision` events) in the database a crash at this
    instant would leave."""
    with crashed_copy(db_path, copy_path) as db:
        [(decision_id,)] = db.execute("SELECT decision_id FROM orders WHERE client_order_id = ?",
                                      (client_order_id,)).fetchall()
        decided = db.execute("SELECT outcome, client_order_id FROM decisions WHERE decision_id = ?",
                             (decision_id,)).fetchall()
        events = [e for e in (json.loads(r[0]) for r in db.execute("SELECT data FROM events WHERE event = 'decision'"))
                  if e["decision_id"] == decision_id]
    return decision_id, [tuple(r) for r in decided], events


async def on_the_wire(p) -> asyncio.Task:
    """The next bar, its order held on the wire (create_order not answered) until the test releases it."""
    p.venue.hold = True
    p.venue.on_wire.clear()
    p.venue.release.clear()
    bar = asyncio.ensure_future(p.bars(1))
    await asyncio.wait_for(p.venue.on_wire.wait(), timeout=10)
    return bar


async def test_an_entry_on_the_wire_has_its_decision_committed_with_its_journal_entry(tmp_path, pipelines):
    s = make_settings(tmp_path, symbols=[BTC])
    script = {BTC: (BUY, 0.8)}
    p = await pipelines(s, script=script, venue=paper_venue(s, SlowVenue), clock=ManualClock())
    bar = await on_the_wire(p)
    [cid] = list(p.engine.orders.live)
    decision_id, rows, events = decision_of(s.db_path, tmp_path / "crash-entry.db", cid)
    assert decision_id is not None
    assert rows == [("submitted", cid)], rows
    assert [(e["outcome"], e["client_order_id"], e["action"]) for e in events] == [("submitted", cid, "BUY")], events
    p.venue.hold = False
    p.venue.release.set()
    await asyncio.wait_for(bar, timeout=10)
    await p.bars(1)  # filled at the next candle
    assert p.engine.portfolio.holding(BTC) is not None
    # Recorded once: the decision is not written again when its bar ends.
    assert await p.rows("SELECT outcome, client_order_id FROM decisions WHERE decision_id = ?",
                        (decision_id,)) == [("submitted", cid)]
    assert len([e for e in await p.events("decision") if e["decision_id"] == decision_id]) == 1

    # The strategy's exit, on the wire in its turn.
    script[BTC] = (SELL, 0.8)
    bar = await on_the_wire(p)
    [exit_cid] = [c for c, o in p.engine.orders.live.items() if o.reduce_only]
    decision_id, rows, events = decision_of(s.db_path, tmp_path / "crash-exit.db", exit_cid)
    assert rows == [("exit_submitted", exit_cid)], rows
    assert [(e["outcome"], e["client_order_id"]) for e in events] == [("exit_submitted", exit_cid)], events
    p.venue.hold = False
    p.venue.release.set()
    await asyncio.wait_for(bar, timeout=10)


async def test_an_entry_refused_before_its_journal_is_recorded_refused_without_an_order(tmp_path, pipelines):
    """The order path refusing an entry after the gates (the engine paused meanwhile is one way; the exchange's
    Retry-After another): no order journaled, and the decision says `refused` with the reason."""
    s = make_settings(tmp_path, symbols=[BTC])
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, clock=ManualClock())
    p.engine.orders.hold_until = p.engine.clock.wall() + 3600.0  # the exchange's Retry-After
    await p.bars(1)
    assert await p.rows("SELECT count(*) FROM orders") == [(0,)]
    [(outcome, cid, reason)] = await p.rows("SELECT outcome, client_order_id, reason FROM decisions "
                                            "WHERE action = 'BUY'")
    assert outcome == "refused" and cid is None and "VENUE_HOLD" in reason, (outcome, cid, reason)


async def test_an_entry_filled_in_the_exchanges_answer_is_learned_from_with_its_decisions_votes(
        tmp_path, pipelines, fx):  # noqa: F811
    s = make_settings(tmp_path, symbols=[BTC])
    venue = CcxtVenue(exchange_settings(fx), [BTC])
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=venue, clock=ManualClock())
    fx.set_price("BTCUSDT", p.engine.portfolio.last_price[BTC])
    await p.bars(1)
    [(decision_id, status)] = await p.rows("SELECT decision_id, status FROM orders")
    assert status == "filled", status  # in the create's answer, while the order path was sending it
    assert p.engine.portfolio.holding(BTC) is not None
    assert p.engine.entry_votes == {decision_id: {"alpha": "BUY", "beta": "BUY"}}, p.engine.entry_votes


async def test_the_books_stored_while_a_candle_is_in_hand_place_the_replay_before_it(tmp_path, pipelines):
    """A replay hands a candle out, and the engine works on it (its entry on the wire here; a stop-loss's commit, a
    fill's) while another task stores the books (the housekeeping each second, an operator's cancel, a flatten).
    Stored then, the market's place said that candle was handed out: killed before its decision was recorded, the
    restart went on after it, and the candle was never decided. The place stored is before the candle in hand, and
    after it once the candle is done. The candles come from the replay as `ffe run` takes them (its generator)."""
    from ffe_engine.clock import SimClock
    from pipeline_helpers import replay_feed, wave

    eth = "ETH/USDT"
    s = make_settings(tmp_path, symbols=[BTC, eth])
    script: dict = {}
    clock = SimClock()
    feed = replay_feed(tmp_path, {BTC: wave(200, base=30_000.0, amp=0.002), eth: wave(200, base=2_000.0)}, clock)
    p = await pipelines(s, script=script, venue=paper_venue(s, SlowVenue), clock=clock, feed=feed)
    candles = feed.candles()

    async def feed_candles(n: int) -> None:
        for _ in range(n):
            await p.engine.on_candle(await candles.__anext__())

    await feed_candles(120)  # 60 bars, both symbols
    resting = await p.engine.operator_order(eth, "buy", 0.01)  # fills at ETH's next candle, which has not come
    script[BTC] = (BUY, 0.8)
    p.venue.hold = True
    bar = asyncio.ensure_future(feed_candles(1))  # BTC's candle: its entry goes on the wire
    await asyncio.wait_for(p.venue.on_wire.wait(), timeout=10)
    in_hand = p.engine.last_bar_ts[BTC]
    await p.engine.operator_cancel(resting["client_order_id"])  # stores the books, the BTC candle in hand
    with crashed_copy(s.db_path, tmp_path / "crash.db") as db:
        [(market,)] = db.execute("SELECT value FROM kv WHERE key = 'market'").fetchall()
    assert json.loads(market)["seen"][BTC] < in_hand, (market, in_hand)
    p.venue.hold = False
    p.venue.release.set()
    await asyncio.wait_for(bar, timeout=10)
    await feed_candles(1)  # the next asked for (ETH's), the BTC candle processed: stored with this one's books
    [(market,)] = await p.rows("SELECT value FROM kv WHERE key = 'market'")
    assert json.loads(market)["seen"][BTC] == in_hand, market
