"""A trade closed in parts (the operator sells most of a position at a profit, the stop-loss the rest at a loss) is
scored once, as a whole: the providers that voted for its entry are scored on the P&L of every part over the cost
of the whole position, not on its last part. So after a restart between the parts."""

from __future__ import annotations

import pytest

from ffe_engine.clock import SimClock
from pipeline_helpers import make_settings, pipelines, replay_feed, strategy_buys, wave

_ = pipelines  # a fixture

BTC = "BTC/USDT"


def rising_then_falling() -> list[float]:
    path = wave(61, base=100.0, amp=0.02)
    path += [round(100.0 * (1 + 0.0035 * k), 6) for k in range(1, 5)]  # up: the operator's sale is at a profit
    return path + [98.25] * 10  # then through the stop-loss: its sale at a loss


async def opened(tmp_path, pipelines):
    s = make_settings(tmp_path, symbols=(BTC,), ensemble={"warmup_trades": 0})
    clock, script = SimClock(), {}
    p = await pipelines(s, script=script, feed=replay_feed(tmp_path, {BTC: rising_then_falling()}, clock),
                        clock=clock)
    await strategy_buys(p, script, BTC)
    await p.bars(3)
    pos = p.engine.portfolio.positions[BTC]
    res = await p.engine.operator_order(BTC, "sell", round(pos.quantity * 0.75, 6))
    assert res["accepted"], res
    await p.bars(1)
    assert BTC in p.engine.portfolio.positions  # a quarter still held
    return s, p


async def scored_whole(p) -> None:
    trades = await p.rows("SELECT id, quantity, entry_price, pnl FROM trades ORDER BY id")
    assert len(trades) == 2, trades
    pnl = sum(t[3] for t in trades)
    whole = 100.0 * pnl / sum(t[1] * t[2] for t in trades)
    assert trades[0][3] > 0 > trades[1][3] and pnl > 0, trades  # a profit as a whole, a loss on its last part
    scores = await p.rows("SELECT trade_id, provider, action, correct, return_pct FROM provider_scores")
    assert {(r[1], r[2]) for r in scores} == {("alpha", "BUY"), ("beta", "BUY")}, scores
    assert all(r[0] == trades[1][0] and r[3] == 1 and r[4] == pytest.approx(whole) for r in scores), (scores, whole)
    (recent,) = p.engine.learner.state()["stats"]["recent"]
    assert all(hit and signed == pytest.approx(whole) for hit, signed, _ in recent.values()), recent


async def test_a_trade_closed_in_parts_is_scored_as_a_whole(tmp_path, pipelines):
    _, p = await opened(tmp_path, pipelines)
    await p.until(lambda: BTC not in p.engine.portfolio.positions, max_bars=8, what="the stop-loss")
    await scored_whole(p)


async def test_so_after_a_restart_between_its_parts(tmp_path, pipelines):
    s, p = await opened(tmp_path, pipelines)
    await p.close()
    clock = SimClock()
    q = await pipelines(s, feed=replay_feed(tmp_path, {BTC: [98.25] * 120}, clock), clock=clock,
                        script={})
    await q.until(lambda: BTC not in q.engine.portfolio.positions, max_bars=8, what="the stop-loss")
    await scored_whole(q)
