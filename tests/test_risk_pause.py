"""A DRAWDOWN or DAILY_LOSS breach pauses the engine, and an `engine_state` event says why.

Real engine, real paper venue, a replayed market with a crash in it. The pause is stored (a restart starts
PAUSED), exits go on while paused, the operator resumes, and the gates keep refusing entries while the breach
lasts. A daily-loss breach is measured against the UTC day's starting equity: the next UTC day starts afresh,
and a new breach that day pauses the engine again.
"""

from __future__ import annotations

import re

import pytest

from ffe_engine.clock import SimClock
from ffe_engine.model import EngineState

from pipeline_helpers import (BUY, HOUR, cash_after, crash_paths, fills, make_settings, open_pipeline, pipelines,
                              replay_feed, wave)

_ = pipelines  # a fixture

BTC, ETH = "BTC/USDT", "ETH/USDT"


async def risk_pauses(p) -> list[dict]:
    return [e for e in await p.events("engine_state") if e["by"] == "risk"]


def pct_in(reason: str, code: str, limit: float) -> float:
    m = re.fullmatch(rf"{code} (\d+\.\d\d+)% > {limit:g}%", reason)  # the limit as configured: 5%, not 5.0%
    assert m, reason
    return float(m.group(1))


async def test_a_drawdown_breach_pauses_the_engine_durably_and_says_why(tmp_path):
    paths = crash_paths()
    script: dict = {}
    s = make_settings(tmp_path, risk={"max_position_pct": 50, "max_drawdown_pct": 5, "take_profit_atr": 100})
    clock = SimClock()
    p = await open_pipeline(s, script=script, feed=replay_feed(tmp_path, paths, clock), clock=clock)
    try:
        await p.bars(60)
        script[BTC] = (BUY, 0.8)
        await p.bars(1)
        del script[BTC]
        await p.bars(15)  # the climb: a new peak, no pause
        assert p.engine.state is EngineState.RUNNING and await risk_pauses(p) == []
        await p.bars(1)  # bar 76: the crash
        assert p.engine.state is EngineState.PAUSED
        [ev] = await risk_pauses(p)
        assert (ev["state"], ev["previous"]) == ("PAUSED", "RUNNING")
        [(side, qty, px, fee)] = await fills(p, BTC)
        held_cash = cash_after(10_000.0, [(side, qty, px, fee)])
        peak = max(held_cash + qty * c for c in paths[BTC][61:76])
        now = held_cash + qty * paths[BTC][76]
        assert pct_in(ev["reason"], "DRAWDOWN", 5.0) == pytest.approx(100 * (peak - now) / peak, abs=0.006)
        assert await p.store.get_engine_state() == ("PAUSED", ev["reason"], "risk")

        await p.bars(1)  # paused, yet the stop-loss exit placed on the crash bar fills
        assert await p.rows("SELECT reason FROM trades") == [("stop_loss",)]
    finally:
        await p.close()

    clock = SimClock()
    p = await open_pipeline(s, script=script, feed=replay_feed(tmp_path / "again", paths, clock), clock=clock)
    try:
        assert p.engine.state is EngineState.PAUSED and "DRAWDOWN" in p.engine.state_reason
        await p.engine.resume()
        await p.bars(5)  # the replay goes on after the crash (market time never goes back across a restart)
        assert p.engine.state is EngineState.RUNNING  # the breach paused once; the operator's resume stands
        script[ETH] = (BUY, 0.8)
        await p.bars(1)
        d = (await p.decisions("WHERE symbol = ?", (ETH,)))[-1]
        assert d["outcome"] == "rejected" and d["reason"].startswith("DRAWDOWN:")
        assert len(await risk_pauses(p)) == 1
    finally:
        await p.close()


async def test_a_daily_loss_breach_pauses_the_engine_and_a_new_utc_day_starts_afresh(tmp_path, pipelines):
    # hourly bars from 2024-01-01T00:00Z. Jan 3: bought at 12:00 (bar 60), a 20% fall at 16:00 (bar 64).
    # Jan 4: bought again at 02:00 (bar 74), another 20% fall at 06:00 (bar 78).
    btc = wave(60, base=60_000.0, amp=0.002) + [60_000.0, 60_030.0, 60_060.0, 60_090.0, 48_000.0]
    btc += [round(48_000.0 * (1 + 0.0004 * (i % 3)), 6) for i in range(74 - len(btc))]
    btc += [48_000.0, 48_020.0, 48_040.0, 48_060.0, 38_400.0]
    btc += [round(38_400.0 * (1 + 0.0004 * (i % 3)), 6) for i in range(86 - len(btc))]
    paths = {BTC: btc, ETH: wave(86, base=3_000.0, amp=0.002)}
    script: dict = {}
    s = make_settings(tmp_path, timeframe="1h", risk={"max_position_pct": 50, "daily_loss_limit_pct": 5,
                                                      "take_profit_atr": 100})
    clock = SimClock()
    p = await pipelines(s, script=script, feed=replay_feed(tmp_path, paths, clock, step=HOUR), clock=clock)
    await p.bars(60)
    script[BTC] = (BUY, 0.8)
    await p.bars(1)
    del script[BTC]
    await p.bars(3)
    assert p.engine.state is EngineState.RUNNING
    await p.bars(1)  # 16:00 Jan 3
    assert p.engine.state is EngineState.PAUSED
    [first] = await risk_pauses(p)
    held_cash = cash_after(10_000.0, (await fills(p, BTC))[:1])
    qty = (await fills(p, BTC))[0][1]
    lost = 100.0 * (10_000.0 - (held_cash + qty * 48_000.0)) / 10_000.0
    assert pct_in(first["reason"], "DAILY_LOSS", 5.0) == pytest.approx(lost, abs=0.006)
    assert "DRAWDOWN" not in first["reason"]
    await p.engine.resume()

    await p.bars(9)  # to 01:00 Jan 4: the stop-loss exit filled; a new UTC day
    assert p.engine.portfolio.day_loss_pct() == 0.0
    script[BTC] = (BUY, 0.8)
    await p.bars(1)  # 02:00 Jan 4
    del script[BTC]
    assert (await p.decisions("WHERE symbol = ?", (BTC,)))[-1]["outcome"] == "submitted"
    await p.bars(3)
    assert p.engine.state is EngineState.RUNNING
    await p.bars(1)  # 06:00 Jan 4: the second fall, measured from this day's starting equity
    assert p.engine.state is EngineState.PAUSED
    first_, second = await risk_pauses(p)
    btc_fills = await fills(p, BTC)
    assert [f[0] for f in btc_fills] == ["buy", "sell", "buy"]
    day_start = cash_after(10_000.0, btc_fills[:2])
    now = cash_after(10_000.0, btc_fills) + btc_fills[2][1] * 38_400.0
    assert pct_in(second["reason"], "DAILY_LOSS", 5.0) == pytest.approx(100 * (day_start - now) / day_start,
                                                                          abs=0.006)
