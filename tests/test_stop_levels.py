"""An entry's stop-loss and take-profit are where the volatility puts them (price -/+ k x ATR, docs/gates.md
Sizing) at any price: a coin priced far below a cent (a pair quoted in BTC, a meme coin) keeps them, and its sizing
record says the ATR and stop distance it was sized with, so its quantity can be recomputed from it."""

from __future__ import annotations

import math

from ffe_engine.clock import SimClock
from ffe_engine.config import RiskSettings
from ffe_engine.risk import size_entry

from pipeline_helpers import BUY, LOOSE_RISK, make_settings, pipelines, replay_feed

_ = pipelines  # a fixture

SYM = "MICRO/USDT"


def test_the_sizing_keeps_the_stop_levels_atr_and_distance_of_a_price_far_below_a_cent():
    risk = RiskSettings()
    price, atr = 3.067e-7, 1.234567e-8
    qty, sizing = size_entry(risk, equity=10_000.0, cash=10_000.0, price=price, atr=atr, fee_rate=0.001,
                             amount_step=1e-8)
    distance = risk.stop_loss_atr * atr
    assert sizing["atr"] == atr and sizing["stop_distance"] == distance
    assert sizing["stop_loss"] == price - distance
    assert sizing["take_profit"] == price + risk.take_profit_atr * atr
    assert sizing["raw_qty"] == 10_000.0 * risk.risk_per_trade_pct / 100.0 / sizing["stop_distance"]
    assert qty > 0


async def test_a_position_in_a_coin_priced_far_below_a_cent_exits_at_its_own_stops(tmp_path, pipelines):
    """At about 1e-10 a level rounded to 8 decimals is 0: every position "took its profit" at the next bar, at a
    loss as often as not."""
    clock = SimClock()
    closes = [1.5e-10 * (1 + 0.03 * math.sin(i / 4)) for i in range(90)]
    settings = make_settings(tmp_path, symbols=[SYM], risk=LOOSE_RISK)
    script: dict = {}
    p = await pipelines(settings, script=script, feed=replay_feed(tmp_path, {SYM: closes}, clock), clock=clock)
    await p.bars(60)
    script[SYM] = (BUY, 0.8)
    await p.bars(1)
    del script[SYM]
    atr, price = p.engine.ind[SYM].atr, p.closes[SYM][-1]
    await p.bars(1)  # the entry fills at the next bar's open
    pos = p.engine.portfolio.positions[SYM]
    r = settings.risk
    assert pos.stop_loss == price - r.stop_loss_atr * atr
    assert pos.take_profit == price + r.take_profit_atr * atr
    assert pos.take_profit > pos.entry_price > pos.stop_loss > 0
    assert await p.rows("SELECT count(*) FROM trades") == [(0,)]
