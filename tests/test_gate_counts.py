"""What the entry gates count, against what the books hold: positions by symbol, the day's entries made, and the
refusals the why view counts.

- MAX_OPEN_POSITIONS counts positions: the symbols held and those an entry in flight may open, this order's among
  them. An entry resting part-filled is one position, not two; an order in a symbol already held opens none.
- DAILY_TRADES counts entries made: one the exchange refused, at once or after it accepted it, was not made.
- `ffe ctl why` counts the strategy's entries a gate refused, an approval's re-check among them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

from conftest import db_value, engine_session
from fake_exchange import FakeBinance
from ffe_engine.clock import SimClock
from ffe_engine.model import OrderReason, OrderStatus, Side
from ffe_engine.risk import OrderIntent
from live_helpers import POST_ORDER, MarketClock, live_settings, next_bar, wait_for
from pipeline_helpers import BUY, HOLD, make_settings, open_pipeline, replay_feed, wave

BTC, ETH = "BTC/USDT", "ETH/USDT"
LOOSE = {"max_var_pct": 100, "max_correlation": 1.0, "max_concentration_pct": 100, "max_leverage": 10,
         "max_position_pct": 100}


def gate(gates, code):
    (g,) = [g for g in gates if g.code == code]
    return g


async def test_an_entry_resting_part_filled_counts_as_one_position(tmp_path):
    async with FakeBinance() as fx:
        fx.set_price("BTCUSDT", 30_000.0)
        fx.set_price("ETHUSDT", 2_000.0)
        fx.market_clock = MarketClock()
        s = live_settings(tmp_path, fx, engine={"symbols": [BTC, ETH], "order_poll_s": 0.2},
                          risk={"max_open_positions": 2, **LOOSE})
        async with engine_session(s, live=True) as running:
            e = running.engine
            await next_bar(e, fx)
            await e.resume(by="test")
            fx.partial_fill_next(0.5, rest="open")
            r = await e.operator_order(BTC, "buy", 0.02)
            assert r["accepted"], r
            (o,) = e.orders.live.values()
            assert o.status is OrderStatus.OPEN and 0 < o.filled < o.quantity  # held in part, the rest resting
            assert e.portfolio.held() == 1
            eth = OrderIntent(symbol=ETH, side=Side.BUY, quantity=0.01, reason=OrderReason.OPERATOR,
                              ref_price=e.portfolio.last_price[ETH])
            g = gate(e.orders.check(eth), "MAX_OPEN_POSITIONS")
            assert (g.value, g.passed) == (2, True)  # BTC (held, and resting) + ETH
            assert not [b for b in (await e.why())["blocking"] if b["gate"] == "MAX_OPEN_POSITIONS"]
            r2 = await e.operator_order(ETH, "buy", 0.01)
            assert r2["accepted"], r2
            # Now full: a third symbol would be refused, and the why view says so with the same count.
            g = gate(e.orders.check(eth), "MAX_OPEN_POSITIONS")
            assert (g.value, g.passed) == (2, True)  # an order in a symbol held opens no position
            blocks = [b for b in (await e.why())["blocking"] if b["gate"] == "MAX_OPEN_POSITIONS"]
            assert blocks and blocks[0]["now"].startswith("2 open, limit 2")


async def test_an_order_in_a_symbol_held_is_not_a_new_position(tmp_path):
    s = make_settings(tmp_path, risk={"max_open_positions": 1, **LOOSE})
    clock = SimClock()
    feed = replay_feed(tmp_path, {BTC: wave(200, base=100.0), ETH: wave(200, base=50.0, phase=1)}, clock)
    p = await open_pipeline(s, script={BTC: (HOLD, 0.5), ETH: (HOLD, 0.5)}, feed=feed, clock=clock)
    try:
        e = p.engine
        await p.bars(60)
        first = await e.operator_order(BTC, "buy", 1.0)
        assert first["accepted"], first
        await p.bars(1)
        assert e.portfolio.held() == 1
        more = OrderIntent(symbol=BTC, side=Side.BUY, quantity=1.0, reason=OrderReason.OPERATOR,
                           ref_price=e.portfolio.last_price[BTC])
        g = gate(e.orders.check(more), "MAX_OPEN_POSITIONS")
        assert (g.value, g.passed) == (1, True)
        other = OrderIntent(symbol=ETH, side=Side.BUY, quantity=1.0, reason=OrderReason.OPERATOR,
                            ref_price=e.portfolio.last_price[ETH])
        g = gate(e.orders.check(other), "MAX_OPEN_POSITIONS")
        assert (g.value, g.passed) == (2, False)
    finally:
        await p.close()


@contextlib.asynccontextmanager
async def live_account(tmp_path, **risk):
    """The fake Binance (BTC/USDT at 30,000) and the settings of a live engine on it, its orders polled every
    0.2 s."""
    async with FakeBinance() as fx:
        fx.set_price("BTCUSDT", 30_000.0)
        fx.market_clock = MarketClock()
        yield fx, live_settings(tmp_path, fx, engine={"order_poll_s": 0.2}, risk={**LOOSE, **risk})


@contextlib.asynccontextmanager
async def trading(fx, s):
    """The live engine, past its first bar and resumed."""
    async with engine_session(s, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        await e.resume(by="test")
        yield e


async def ended(e, cid: str) -> None:
    """Until the engine has seen the order end at the exchange."""
    async def seen() -> bool:
        await e.orders.poll()
        return cid not in e.orders.live

    await wait_for(seen, what=f"the end of {cid} seen")


async def test_an_entry_the_exchange_rejects_after_accepting_it_is_no_entry_of_the_day(tmp_path):
    async with live_account(tmp_path, max_daily_trades=1) as (fx, s):
        async with trading(fx, s) as e:
            fx.fault(POST_ORDER, "fill_later", seconds=30)
            r = await e.operator_order(BTC, "buy", 0.001)
            cid = r["client_order_id"]
            assert r["accepted"] and e.portfolio.entries_today == 1
            fx.end(cid, "REJECTED")
            await ended(e, cid)
            assert (await e.store.order(cid)).status is OrderStatus.REJECTED
            assert e.portfolio.entries_today == 0
            fx.clear_faults(POST_ORDER)
            again = await e.operator_order(BTC, "buy", 0.001)
            assert again["accepted"], again
            assert e.portfolio.entries_today == 1
        async with engine_session(s, live=True) as running:
            assert running.engine.portfolio.entries_today == 1


async def test_an_approval_a_gate_refuses_counts_in_the_why_view(tmp_path):
    s = make_settings(tmp_path, engine={"approval": "manual", "approval_ttl_s": 10_000},
                      risk={"max_open_positions": 1, **LOOSE})
    clock = SimClock()
    feed = replay_feed(tmp_path, {BTC: wave(300, base=100.0), ETH: wave(300, base=50.0, phase=1)}, clock)
    script = {BTC: (HOLD, 0.5), ETH: (HOLD, 0.5)}
    p = await open_pipeline(s, script=script, feed=feed, clock=clock)
    try:
        e = p.engine
        await p.bars(60)
        script[BTC] = (BUY, 0.9)
        await p.bars(1)
        script[BTC] = (HOLD, 0.5)
        (a,) = e.approvals.summary()
        bought = await e.operator_order(ETH, "buy", 1.0)
        assert bought["accepted"], bought
        await p.bars(1)
        res = await e.approve(a["approval_id"], by="test")
        assert not res["accepted"] and res["reason"].startswith("MAX_OPEN_POSITIONS:"), res
        why = await e.why()
        assert why["refused"]["hour"].get("MAX_OPEN_POSITIONS") == 1, why["refused"]
        assert why["refused"]["day"].get("MAX_OPEN_POSITIONS") == 1, why["refused"]
    finally:
        await p.close()


def stored_books_counting(db, entries: int) -> None:
    """The stored books as a kill before their next save leaves them: still counting `entries` for the day."""
    books = json.loads(db_value(db, "SELECT value FROM kv WHERE key = 'portfolio'"))
    books["entries_today"] = entries
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE kv SET value = ? WHERE key = 'portfolio'", (json.dumps(books),))
    conn.close()


async def test_an_entry_rejected_after_the_books_counted_it_is_not_counted_after_a_kill(tmp_path):
    async with live_account(tmp_path, max_daily_trades=5) as (fx, s):
        async with trading(fx, s) as e:
            fx.fault(POST_ORDER, "fill_later", seconds=30)
            cid = (await e.operator_order(BTC, "buy", 0.001))["client_order_id"]
            fx.end(cid, "REJECTED")
            await ended(e, cid)
            assert e.portfolio.entries_today == 0
        stored_books_counting(s.db_path, 1)  # saved while it counted; killed before the next save
        async with engine_session(s, live=True) as running:
            assert running.engine.portfolio.entries_today == 0


async def test_an_entry_part_filled_then_rejected_stays_counted_after_a_restart(tmp_path):
    async with live_account(tmp_path, max_daily_trades=5) as (fx, s):
        async with trading(fx, s) as e:
            sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.002, type="limit",
                                                    price=20_000.0, reason=OrderReason.OPERATOR, ref_price=30_000.0))
            cid = sub.order.client_order_id
            fx.fill(cid, qty=0.001)
            fx.end(cid, "REJECTED")
            await ended(e, cid)
            assert e.portfolio.entries_today == 1  # coins were bought: the entry was made
        stored_books_counting(s.db_path, 0)  # a kill before the books counted it
        async with engine_session(s, live=True) as running:
            assert running.engine.portfolio.entries_today == 1
