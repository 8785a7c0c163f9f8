"""Every risk gate of the docs/gates.md table, on a real engine.

For each gate a trade that violates it is refused by that gate, and the stored record (gate_results rows, the
decision row and its `decision` event) holds the gate's code, measured value, limit and passed = false. Every gate
is evaluated and recorded, in the table's order, even after the first failure. The measured values are checked
against figures computed here from the market data and the stored fills: VaR and correlation from real BTC and
ETH hourly prices, drawdown from the peak equity, the daily loss from the UTC day's starting equity.
"""

from __future__ import annotations

import pytest

from ffe_engine.clock import SimClock
from ffe_engine.config import RiskSettings
from ffe_engine.model import EngineState, OrderReason, Side
from ffe_engine.portfolio import Portfolio
from ffe_engine.risk import INPUT_MISSING, SIZE_HEADROOM, Gatekeeper, OrderIntent, first_failure

from pipeline_helpers import (trading_state, BUY, DAY, GATE_ORDER, HOUR, MIN, SELL, START_TS, FlakyVenue, assert_all_gates_in_order,
                              by_code, cash_after, crash_paths, fills, historical_var_pct, make_settings,
                              paper_venue, pearson, pipelines, real_feed, real_series, replay_feed, returns, wave)

_ = pipelines  # a fixture

BTC, ETH, SOL = "BTC/USDT", "ETH/USDT", "SOL/USDT"
RBTC, RETH = "BTC/USD", "ETH/USD"


async def last_decision(p, symbol: str) -> dict:
    rows = await p.decisions("WHERE symbol = ?", (symbol,))
    assert rows, f"no decision for {symbol}"
    return rows[-1]


def check(g: dict, *, passed: bool, value=None, limit=None, approx: float | None = None) -> None:
    """A stored gate row: passed flag, and the measured value and limit (numbers compared as numbers)."""
    assert g["passed"] is passed, g
    if limit is not None:
        assert (float(g["limit"]) == pytest.approx(limit)) if isinstance(limit, (int, float)) else g["limit"] == limit
    if value is not None:
        if isinstance(value, str):
            assert g["value"] == value, g
        else:
            assert float(g["value"]) == pytest.approx(value, abs=approx if approx is not None else 1e-9), g


async def refused_by(p, symbol: str, code: str) -> dict:
    """The symbol's last decision, refused with `code` as the first failing gate; returns its gates by code."""
    d = await last_decision(p, symbol)
    assert d["outcome"] == "rejected", d
    assert d["reason"].startswith(code + ":"), d["reason"]
    gates = await p.gates(d["decision_id"])
    assert_all_gates_in_order(gates)
    assert next(g for g in gates if not g["passed"])["code"] == code
    # the decision event carries the same verdicts, in the same order
    ev = d["event"]
    assert [(x["code"], x["passed"]) for x in ev["gates"]] == [(x["code"], x["passed"]) for x in gates]
    assert ev["outcome"] == "rejected"
    return by_code(gates)


# --------------------------------------------------------------------------------------------- order and record
async def test_a_refused_entry_records_every_gate_in_design_order_after_the_first_failure(tmp_path, pipelines):
    s = make_settings(tmp_path, risk={"min_confidence": 0.9})
    p = await pipelines(s, script={BTC: (BUY, 0.8)})
    await p.engine.pause()
    await p.bars(1)
    g = await refused_by(p, BTC, "ENGINE_STATE")
    check(g["ENGINE_STATE"], passed=False, value="PAUSED", limit="RUNNING")
    # evaluated after the first failure, and failing on its own
    check(g["MIN_CONFIDENCE"], passed=False, value=0.8, limit=0.9)
    assert [c for c in GATE_ORDER if not g[c]["passed"]] == ["ENGINE_STATE", "MIN_CONFIDENCE"]
    d = await last_decision(p, BTC)
    assert d["reason"] == "ENGINE_STATE: value=PAUSED limit=RUNNING"
    assert [x["value"] for x in d["event"]["gates"]][:1] == ["PAUSED"]
    assert await p.rows("SELECT count(*) FROM orders") == [(0,)]


# --------------------------------------------------------------------------------------------- one test per gate
async def test_engine_state_refuses_entries_when_halted_and_passes_once_re_armed(tmp_path, pipelines):
    p = await pipelines(make_settings(tmp_path), script={BTC: (BUY, 0.8)})
    await p.engine.halt()
    await p.bars(1)
    g = await refused_by(p, BTC, "ENGINE_STATE")
    check(g["ENGINE_STATE"], passed=False, value="HALTED", limit="RUNNING")
    await p.engine.resume(confirm=True)
    await p.bars(1)
    d = await last_decision(p, BTC)
    assert d["outcome"] == "submitted"
    check(by_code(await p.gates(d["decision_id"]))["ENGINE_STATE"], passed=True, value="RUNNING")


async def test_breaker_open_refuses_entries_after_three_venue_failures(tmp_path, pipelines):
    s = make_settings(tmp_path, breaker={"failure_threshold": 3, "recovery_timeout_s": 3600})
    venue = paper_venue(s, FlakyVenue)
    venue.down = True
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=venue)
    await p.bars(3)
    assert venue.calls == 3
    # each entry's order was journaled and sent, and the venue refused it: the order says so
    assert [d["outcome"] for d in await p.decisions("WHERE symbol = ?", (BTC,))] == ["submitted"] * 3
    assert [r[0] for r in await p.rows("SELECT status FROM orders")] == ["rejected"] * 3
    assert p.engine.breaker.state == "open"
    if p.engine.state is EngineState.PAUSED:  # an open breaker also pauses the engine; the operator resumes
        await p.engine.resume()
    await p.bars(1)
    g = await refused_by(p, BTC, "BREAKER_OPEN")
    check(g["BREAKER_OPEN"], passed=False, value="open", limit="closed or probe")
    assert venue.calls == 3  # refused before the venue


async def test_data_stale_refuses_an_entry_on_a_late_candle(tmp_path, pipelines):
    script: dict = {}
    p = await pipelines(make_settings(tmp_path), script=script)
    await p.bars(1)
    # the market moved on ten bars while the feed lagged: the next candle arrives nine bars after it closed
    p.clock.advance(p.clock.now_ms() + 10 * MIN)
    script[BTC] = (BUY, 0.8)
    await p.bars(1)
    g = await refused_by(p, BTC, "DATA_STALE")
    check(g["DATA_STALE"], passed=False, value=9.0, limit=3)


async def test_why_no_trades_names_data_stale_while_the_feed_lags(tmp_path, pipelines):
    """The market's clock moves on while no candle comes (the feed down): DATA_STALE refuses every entry, and the
    why view says so, with the symbols and what lifts it, not "nothing blocks entries now"."""
    from ffe_engine.views import blocking

    p = await pipelines(make_settings(tmp_path), script={})
    await p.bars(1)
    assert [b for b in blocking(p.engine, p.clock.now_ms()) if b["gate"] == "DATA_STALE"] == []
    p.clock.advance(p.clock.now_ms() + 10 * MIN)
    (stale,) = [b for b in blocking(p.engine, p.clock.now_ms()) if b["gate"] == "DATA_STALE"]
    assert stale["now"].startswith(f"{BTC} 10 bars late, {ETH} 10 bars late (limit 3)"), stale
    assert "a new candle" in stale["lifts"], stale


async def test_min_confidence_refuses_a_lukewarm_decision(tmp_path, pipelines):
    p = await pipelines(make_settings(tmp_path, risk={"min_confidence": 0.5}), script={BTC: (BUY, 0.45)})
    await p.bars(1)
    g = await refused_by(p, BTC, "MIN_CONFIDENCE")
    check(g["MIN_CONFIDENCE"], passed=False, value=0.45, limit=0.5)
    assert (await last_decision(p, BTC))["confidence"] == pytest.approx(0.45)


async def test_max_open_positions_counts_entries_in_flight_and_open_positions(tmp_path, pipelines):
    p = await pipelines(make_settings(tmp_path, risk={"max_open_positions": 1}),
                        script={BTC: (BUY, 0.8), ETH: (BUY, 0.8)})
    await p.bars(1)
    assert (await last_decision(p, BTC))["outcome"] == "submitted"
    # BTC's order has not filled yet (it fills at the next BTC open): it already takes the one slot
    assert BTC not in p.engine.portfolio.positions
    g = await refused_by(p, ETH, "MAX_OPEN_POSITIONS")
    check(g["MAX_OPEN_POSITIONS"], passed=False, value=2, limit=1)
    await p.bars(1)
    assert list(p.engine.portfolio.positions) == [BTC]
    g = await refused_by(p, ETH, "MAX_OPEN_POSITIONS")
    check(g["MAX_OPEN_POSITIONS"], passed=False, value=2, limit=1)
    assert await p.rows("SELECT symbol FROM positions") == [(BTC,)]


async def test_position_size_refuses_an_oversized_operator_order(tmp_path, pipelines):
    p = await pipelines(make_settings(tmp_path), script={})
    await p.bars(1)
    price = p.closes[BTC][-1]
    qty = round(0.25 * 10_000.0 / price, 6)
    res = await p.engine.operator_order(BTC, "buy", qty)
    assert not res["accepted"] and res["reason"].startswith("POSITION_SIZE:")
    gates = (await p.gates(client_order_id=None))[-len(GATE_ORDER):]
    assert_all_gates_in_order(gates)
    assert [g["code"] for g in gates if not g["passed"]] == ["POSITION_SIZE"]
    check(by_code(gates)["POSITION_SIZE"], passed=False, value=100.0 * qty * price / 10_000.0, limit=10, approx=1e-3)
    refused = [e for e in await p.events("order") if e["status"] == "refused"]
    assert refused[-1]["reason"] == "operator" and refused[-1]["error"].startswith("POSITION_SIZE:")
    assert await p.rows("SELECT count(*) FROM orders") == [(0,)]


async def test_concentration_refuses_a_symbol_exposure_over_its_limit(tmp_path, pipelines):
    # the order alone is within POSITION_SIZE (20%) but puts 20% of equity in one symbol (limit 15%)
    p = await pipelines(make_settings(tmp_path, risk={"max_position_pct": 20, "max_concentration_pct": 15}),
                        script={BTC: (BUY, 0.8)})
    await p.bars(1)
    g = await refused_by(p, BTC, "CONCENTRATION")
    d = await last_decision(p, BTC)
    pct = 100.0 * d["quantity"] * d["price"] / 10_000.0
    assert 19.7 < pct <= 20.0 * SIZE_HEADROOM  # sized at the POSITION_SIZE cap, less its 1% headroom
    check(g["POSITION_SIZE"], passed=True, value=pct, limit=20, approx=1e-3)
    check(g["CONCENTRATION"], passed=False, value=pct, limit=15, approx=1e-3)


async def test_concentration_counts_the_exposure_already_held(tmp_path, pipelines):
    p = await pipelines(make_settings(tmp_path, risk={"max_position_pct": 10, "max_concentration_pct": 15}),
                        script={BTC: (BUY, 0.8)})
    await p.bars(2)
    pf = p.engine.portfolio
    held = pf.positions[BTC].quantity
    price, equity = pf.last_price[BTC], pf.equity()
    qty = round(0.08 * equity / price, 6)  # 8%: a small order on its own
    res = await p.engine.operator_order(BTC, "buy", qty)
    assert not res["accepted"] and res["reason"].startswith("CONCENTRATION:")
    g = by_code((await p.gates(client_order_id=None))[-len(GATE_ORDER):])
    check(g["POSITION_SIZE"], passed=True, value=100.0 * qty * price / equity, approx=1e-3)
    check(g["CONCENTRATION"], passed=False, value=100.0 * (held + qty) * price / equity, limit=15, approx=1e-3)


async def test_leverage_refuses_gross_exposure_over_its_limit(tmp_path, pipelines):
    script = {BTC: (BUY, 0.8)}
    p = await pipelines(make_settings(tmp_path, risk={"max_position_pct": 40, "max_leverage": 0.5}), script=script)
    await p.bars(1)
    script[ETH] = (BUY, 0.8)
    await p.bars(1)  # BTC fills on its candle, then ETH asks for another 40%
    g = await refused_by(p, ETH, "LEVERAGE")
    d = await last_decision(p, ETH)
    pf = p.engine.portfolio
    expected = (pf.exposure(BTC) + d["quantity"] * d["price"]) / pf.equity()
    assert expected > 0.75
    check(g["LEVERAGE"], passed=False, value=expected, limit=0.5, approx=1e-3)


async def entered_before_the_crash(tmp_path, pipelines, **risk):
    """The crash paths replayed (crash_paths: a climb from bar 61, the crash at bar 76), BTC entered at bar 60 with
    half the equity, its take-profit far away: the pipeline after that bar, its script (empty again), the paths and
    the clock."""
    paths = crash_paths()
    script: dict = {}
    s = make_settings(tmp_path, risk={"max_position_pct": 50, "take_profit_atr": 100, **risk})
    clock = SimClock()
    p = await pipelines(s, script=script, feed=replay_feed(tmp_path, paths, clock), clock=clock)
    await p.bars(60)
    script[BTC] = (BUY, 0.8)
    await p.bars(1)
    del script[BTC]
    return p, script, paths, clock


async def test_drawdown_from_peak_equity_refuses_entries(tmp_path, pipelines):
    p, script, paths, _ = await entered_before_the_crash(tmp_path, pipelines, max_drawdown_pct=5)
    await p.bars(16)  # the climb (the peak) and the crash at bar 76, which also stops the position out
    assert p.engine.state is EngineState.PAUSED  # the breach paused the engine (test_risk_pause.py)
    await p.engine.resume()
    await p.bars(1)
    script[ETH] = (BUY, 0.8)
    await p.bars(1)
    g = await refused_by(p, ETH, "DRAWDOWN")
    btc = await fills(p, BTC)
    assert [f[0] for f in btc] == ["buy", "sell"]
    side, qty, px, fee = btc[0]
    held_cash = cash_after(10_000.0, btc[:1])
    peak = max([10_000.0] + [held_cash + qty * c for c in paths[BTC][61:76]])
    now = cash_after(10_000.0, btc)
    expected = 100.0 * (peak - now) / peak
    assert expected > 10.0
    check(g["DRAWDOWN"], passed=False, value=expected, limit=5, approx=1e-3)


async def test_a_drawdown_with_nothing_held_says_equity_cannot_recover_and_what_lifts_it(tmp_path, pipelines):
    """The drawdown gate latched with no position open: no held position can bring equity back above the floor, so
    "why no trades" must not promise that; it names what does lift it (a higher limit)."""
    from ffe_engine.views import blocking

    p, _, _, clock = await entered_before_the_crash(tmp_path, pipelines, max_drawdown_pct=5)
    await p.bars(16)  # the crash stops the position out: nothing is held, the drawdown stays
    await p.engine.resume()
    await p.bars(2)
    assert p.engine.portfolio.held() == 0
    (dd,) = [b for b in blocking(p.engine, clock.now_ms()) if b["gate"] == "DRAWDOWN"]
    assert "held positions recovering" not in dd["lifts"], dd
    assert "nothing is held" in dd["lifts"] and "risk.max_drawdown_pct" in dd["lifts"], dd


async def test_daily_loss_counts_from_the_utc_day_start_and_resets_at_utc_midnight(tmp_path, pipelines):
    # hourly bars from 2024-01-01T00:00Z: bar 60 is 12:00 on Jan 3, bar 72 is midnight Jan 4
    btc = wave(60, base=60_000.0, amp=0.002) + [60_000.0, 60_030.0, 60_060.0, 60_090.0, 48_000.0]
    btc += [round(48_000.0 * (1 + 0.0005 * (i % 3)), 6) for i in range(80 - len(btc))]
    paths = {BTC: btc, ETH: wave(80, base=3_000.0, amp=0.002)}
    script: dict = {}
    s = make_settings(tmp_path, timeframe="1h", risk={"max_position_pct": 50, "daily_loss_limit_pct": 5,
                                                      "take_profit_atr": 100})
    clock = SimClock()
    p = await pipelines(s, script=script, feed=replay_feed(tmp_path, paths, clock, step=HOUR), clock=clock)
    await p.bars(60)
    script[BTC] = (BUY, 0.8)
    await p.bars(1)
    del script[BTC]
    await p.bars(4)  # the fall at 16:00 stops the position out
    assert p.engine.state is EngineState.PAUSED
    await p.engine.resume()
    await p.bars(1)
    script[ETH] = (BUY, 0.8)
    await p.bars(6)  # 18:00 .. 23:00 UTC, Jan 3
    day_start = 10_000.0  # equity at 00:00 UTC Jan 3: nothing traded yet
    lost = 100.0 * (day_start - cash_after(10_000.0, await fills(p, BTC))) / day_start
    assert lost > 5.0
    rows = await p.decisions("WHERE symbol = ? AND action = 'BUY'", (ETH,))
    assert [r["ts"] for r in rows] == [START_TS + 2 * DAY + h * HOUR for h in range(18, 24)]
    for r in rows:
        assert r["outcome"] == "rejected" and r["reason"].startswith("DAILY_LOSS:")
        check(by_code(await p.gates(r["decision_id"]))["DAILY_LOSS"], passed=False, value=lost, limit=5,
              approx=1e-3)
    await p.bars(1)  # 00:00 UTC Jan 4: a new day, a new starting equity
    d = await last_decision(p, ETH)
    assert d["ts"] == START_TS + 3 * DAY and d["outcome"] == "submitted"
    check(by_code(await p.gates(d["decision_id"]))["DAILY_LOSS"], passed=True, value=0.0)


async def test_var_measures_the_portfolio_with_the_order_on_real_prices(tmp_path, pipelines):
    # hourly BTC and ETH of early 2020; ETH is bought at bar 279, BTC asked for at bar 281
    closes = {s: real_series(s).close[:300] for s in (RBTC, RETH)}
    window = 120

    def var(exposures, upto, equity=10_000.0):
        return historical_var_pct(exposures, {s: returns(closes[s][:upto]) for s in exposures}, confidence=0.95,
                                  horizon_bars=24, equity=equity, window=window)

    alone, joint = var({RETH: 1_000.0}, 279), var({RETH: 1_000.0, RBTC: 1_000.0}, 281)
    assert joint > 1.3 * alone  # BTC adds risk: a limit between the two lets ETH in and keeps BTC out
    limit = round((alone + joint) / 2, 3)
    s = make_settings(tmp_path, symbols=[RBTC, RETH], timeframe="1h", venue={"quote": "USD"},
                      risk={"max_var_pct": limit, "var_window": window, "correlation_window": 250})
    script: dict = {}
    clock = SimClock()
    p = await pipelines(s, script=script, feed=real_feed(clock, 300), clock=clock)
    await p.bars(279)
    script[RETH] = (BUY, 0.8)
    await p.bars(1)
    del script[RETH]
    d_eth = await last_decision(p, RETH)
    assert d_eth["outcome"] == "submitted"
    # the returns of the completed bars (0..278): the bar being decided has not closed for every symbol yet
    check(by_code(await p.gates(d_eth["decision_id"]))["VAR"], passed=True,
          value=var({RETH: d_eth["quantity"] * d_eth["price"]}, 279), limit=limit, approx=1e-3)
    await p.bars(1)  # ETH fills at bar 280's open
    script[RBTC] = (BUY, 0.8)
    await p.bars(1)
    g = await refused_by(p, RBTC, "VAR")
    d = await last_decision(p, RBTC)
    eth = await fills(p, RETH)
    eth_qty = eth[0][1]
    equity = cash_after(10_000.0, eth) + eth_qty * closes[RETH][280]
    expected = var({RETH: eth_qty * closes[RETH][280], RBTC: d["quantity"] * d["price"]}, 281, equity)
    check(g["VAR"], passed=False, value=expected, limit=limit, approx=1e-3)


@pytest.mark.parametrize("held", [RETH, RBTC])
async def test_correlation_with_an_open_same_direction_position_on_real_prices(tmp_path, pipelines, held):
    other = RBTC if held == RETH else RETH
    window = 120
    s = make_settings(tmp_path, symbols=[RBTC, RETH], timeframe="1h", venue={"quote": "USD"},
                      risk={"max_correlation": 0.7, "correlation_window": window, "var_window": 250})
    script: dict = {}
    clock = SimClock()
    p = await pipelines(s, script=script, feed=real_feed(clock, 300), clock=clock)
    await p.bars(279)
    script[held] = (BUY, 0.8)
    await p.bars(1)
    del script[held]
    d = await last_decision(p, held)
    assert d["outcome"] == "submitted"
    check(by_code(await p.gates(d["decision_id"]))["CORRELATION"], passed=True, value=0.0)
    await p.bars(1)
    assert held in p.engine.portfolio.positions
    script[other] = (BUY, 0.8)
    await p.bars(1)  # bar 281
    g = await refused_by(p, other, "CORRELATION")
    # aligned returns of the completed bars (up to bar 280), over the configured window
    r = {sym: returns(real_series(sym).close[:281])[-window:] for sym in (RBTC, RETH)}
    expected = pearson(r[other], r[held])
    assert expected > 0.7
    check(g["CORRELATION"], passed=False, value=expected, limit=0.7, approx=1e-3)
    assert g["CORRELATION"]["detail"] == f"with {held}"


async def test_an_entry_in_flight_counts_in_concentration_leverage_var_and_correlation(tmp_path, pipelines):
    # Both symbols decide on the close of bar 280 and their orders fill at the next open: ETH is gated while BTC's
    # entry is in flight, and must be measured as if BTC were held (on real prices they move together).
    window = 120
    s = make_settings(tmp_path, symbols=[RBTC, RETH], timeframe="1h", venue={"quote": "USD"},
                      risk={"max_position_pct": 30, "max_concentration_pct": 35, "max_leverage": 0.5,
                            "max_correlation": 0.7, "correlation_window": window, "var_window": window})
    script: dict = {}
    clock = SimClock()
    p = await pipelines(s, script=script, feed=real_feed(clock, 300), clock=clock)
    await p.bars(280)
    script[RBTC] = script[RETH] = (BUY, 0.8)
    await p.bars(1)
    script.clear()
    btc = await last_decision(p, RBTC)
    assert btc["outcome"] == "submitted" and RBTC not in p.engine.portfolio.positions
    g = await refused_by(p, RETH, "LEVERAGE")
    eth = await last_decision(p, RETH)
    btc_notional = btc["quantity"] * btc["price"]
    eth_notional = eth["quantity"] * eth["price"]
    check(g["LEVERAGE"], passed=False, value=(btc_notional + eth_notional) / 10_000.0, limit=0.5, approx=1e-3)
    r = {sym: returns(real_series(sym).close[:280])[-window:] for sym in (RBTC, RETH)}
    check(g["CORRELATION"], passed=False, value=pearson(r[RETH], r[RBTC]), limit=0.7, approx=1e-3)
    assert g["CORRELATION"]["detail"] == f"with {RBTC}"
    rets = {sym: returns(real_series(sym).close[:280]) for sym in (RBTC, RETH)}
    var = historical_var_pct({RBTC: btc_notional, RETH: eth_notional}, rets, confidence=0.95, horizon_bars=24,
                             equity=10_000.0, window=window)
    check(g["VAR"], passed=var <= RiskSettings().max_var_pct, value=var, approx=1e-3)
    # the operator adding to BTC while its entry is still in flight: the symbol's exposure counts that entry
    qty = round(0.1 * 10_000.0 / btc["price"], 6)
    res = await p.engine.operator_order(RBTC, "buy", qty)
    assert not res["accepted"] and res["reason"].startswith("CONCENTRATION:"), res
    g = by_code((await p.gates(client_order_id=None))[-len(GATE_ORDER):])
    check(g["CONCENTRATION"], passed=False, value=100.0 * (btc_notional + qty * btc["price"]) / 10_000.0,
          limit=35, approx=1e-2)


async def test_order_rate_refuses_the_order_over_the_per_minute_limit_in_a_rolling_window(tmp_path, pipelines):
    script = {BTC: (BUY, 0.8), ETH: (BUY, 0.8), SOL: (BUY, 0.8)}
    p = await pipelines(make_settings(tmp_path, symbols=[BTC, ETH, SOL], risk={"max_orders_per_minute": 2}),
                        script=script)
    await p.bars(1)
    assert [(await last_decision(p, s))["outcome"] for s in (BTC, ETH)] == ["submitted", "submitted"]
    g = await refused_by(p, SOL, "ORDER_RATE")
    check(g["ORDER_RATE"], passed=False, value=2, limit=2)
    await p.bars(1)  # a minute later the two orders have left the window
    d = await last_decision(p, SOL)
    assert d["outcome"] == "submitted"
    check(by_code(await p.gates(d["decision_id"]))["ORDER_RATE"], passed=True, value=0)


async def test_daily_trades_refuses_entries_over_the_limit_until_the_next_utc_day(tmp_path, pipelines):
    script: dict = {}
    s = make_settings(tmp_path, timeframe="1h", risk={"max_daily_trades": 2, "take_profit_atr": 100,
                                                      "stop_loss_atr": 100})
    p = await pipelines(s, script=script)
    for _ in range(2):  # two round trips: enter, fill, exit, fill
        script[BTC] = (BUY, 0.8)
        await p.bars(2)
        script[BTC] = (SELL, 0.8)
        await p.bars(2)
    assert [f[0] for f in await fills(p, BTC)] == ["buy", "sell", "buy", "sell"]
    script[BTC] = (BUY, 0.8)
    await p.bars(1)
    g = await refused_by(p, BTC, "DAILY_TRADES")
    check(g["DAILY_TRADES"], passed=False, value=2, limit=2)
    ts = (await last_decision(p, BTC))["ts"]
    await p.until(lambda: p.engine.portfolio.day > ts // DAY, max_bars=30, what="the next UTC day")
    d = await last_decision(p, BTC)
    assert d["ts"] // DAY == ts // DAY + 1 and d["ts"] % DAY == 0
    assert d["outcome"] == "submitted"
    check(by_code(await p.gates(d["decision_id"]))["DAILY_TRADES"], passed=True, value=0)


# --------------------------------------------------------------------------------------------- missing inputs
def _gatekeeper(pf: Portfolio, *, live: bool, last_bar: dict[str, int], now: int) -> Gatekeeper:
    return Gatekeeper(RiskSettings(), pf, trading=trading_state(), breaker_allows=lambda: True,
                      now_ms=lambda: now, last_bar_ts=last_bar.get, entries_in_flight=lambda: [], timeframe_ms=HOUR,
                      live=live)


@pytest.mark.parametrize("live", [True, False])
def test_a_gate_without_its_input_fails_closed_in_live_mode_and_passes_recorded_in_paper(live):
    series = real_series(RBTC)
    pf = Portfolio(10_000.0)
    for c in series.close[:10]:  # ten real marks: nine returns, too few to measure VaR (30)
        pf.mark(RBTC, c)
        pf.close_bar()
    now = series.ts[9] + HOUR
    gk = _gatekeeper(pf, live=live, last_bar={RBTC: series.ts[9]}, now=now)

    def missing(gates, codes):
        g = by_code([x.as_dict() for x in gates])
        assert [x.code for x in gates] == GATE_ORDER
        for code in codes:
            assert g[code]["value"] is None and g[code]["detail"].startswith(INPUT_MISSING), g[code]
            assert g[code]["passed"] is (not live)
        others = [x for x in gates if x.code not in codes]
        assert all(x.passed for x in others), others
        first = first_failure(gates)
        assert (first.code if first else None) == (codes[0] if live else None)

    intent = OrderIntent(symbol=RBTC, side=Side.BUY, quantity=0.01, reason=OrderReason.SIGNAL, confidence=0.8,
                         ref_price=series.close[9])
    missing(gk.evaluate(intent), ["VAR"])
    # a symbol never seen: no last bar, no price
    unseen = OrderIntent(symbol="SOL/USD", side=Side.BUY, quantity=1.0, reason=OrderReason.SIGNAL, confidence=0.8)
    missing(gk.evaluate(unseen), ["DATA_STALE", "POSITION_SIZE", "CONCENTRATION", "LEVERAGE", "VAR"])
    # a strategy order without a confidence
    blind = OrderIntent(symbol=RBTC, side=Side.BUY, quantity=0.01, reason=OrderReason.SIGNAL,
                        ref_price=series.close[9])
    missing(gk.evaluate(blind), ["MIN_CONFIDENCE", "VAR"])


@pytest.mark.parametrize("live", [True, False])
async def test_correlation_without_a_measurable_partner_fails_closed_live_and_passes_in_paper(
        tmp_path, pipelines, live):
    # USDC/USDT never moves: its correlation with anything is undefined
    usdc = "USDC/USDT"
    paths = {BTC: wave(90, base=60_000.0, amp=0.003), usdc: [1.0] * 90}
    script: dict = {}
    s = make_settings(tmp_path, symbols=[BTC, usdc])
    clock = SimClock()
    p = await pipelines(s, script=script, feed=replay_feed(tmp_path, paths, clock), clock=clock, live=live)
    await p.bars(70)
    res = await p.engine.operator_order(usdc, "buy", 500.0)
    assert res["accepted"], res
    await p.bars(1)
    assert usdc in p.engine.portfolio.positions
    script[BTC] = (BUY, 0.8)
    await p.bars(1)
    d = await last_decision(p, BTC)
    gates = await p.gates(d["decision_id"])
    assert_all_gates_in_order(gates)
    g = by_code(gates)["CORRELATION"]
    assert g["value"] is None and g["detail"] == f"{INPUT_MISSING}: {usdc}"
    assert g["passed"] is (not live)
    if live:
        assert d["outcome"] == "rejected" and d["reason"].startswith("CORRELATION:")
    else:
        assert d["outcome"] == "submitted"


@pytest.mark.parametrize("live", [True, False])
@pytest.mark.parametrize("flat_first", [True, False])
def test_a_position_whose_correlation_cannot_be_measured_does_not_hide_one_over_the_limit(live, flat_first):
    """CORRELATION is the highest correlation with any position held in the same direction: one held symbol that
    never moved (no correlation can be measured with it) leaves the others' measured, and one over the limit
    refuses the entry, live or paper, whichever is held first."""
    import random
    from collections import deque

    from ffe_engine.model import Position

    rng = random.Random(1)
    base = [rng.gauss(0, 0.01) for _ in range(200)]
    rets = {"A/USDT": base, "B/USDT": [x + rng.gauss(0, 0.0005) for x in base], "C/USDT": [0.0] * 200}
    pf = Portfolio(10_000.0)
    held = ["C/USDT", "A/USDT"] if flat_first else ["A/USDT", "C/USDT"]
    for sym in [*held, "B/USDT"]:
        pf.returns[sym] = deque(rets[sym], maxlen=250)
        pf.last_price[sym] = 100.0
    for sym in held:
        pf.positions[sym] = Position(symbol=sym, side=Side.BUY, quantity=1.0, entry_price=100.0, opened_ts=0,
                                     last_price=100.0)
    gk = Gatekeeper(RiskSettings(max_open_positions=5, max_correlation=0.7), pf, trading=trading_state(),
                    breaker_allows=lambda: True, now_ms=lambda: 0, last_bar_ts=lambda s: 0,
                    entries_in_flight=lambda: [], timeframe_ms=HOUR, live=live)
    it = OrderIntent(symbol="B/USDT", side=Side.BUY, quantity=1.0, reason=OrderReason.SIGNAL, confidence=0.9,
                     ref_price=100.0)
    [g] = [r for r in gk.evaluate(it) if r.code == "CORRELATION"]
    assert g.passed is False and g.value == pytest.approx(pf.correlation("B/USDT", "A/USDT", window=100), abs=1e-4)
    assert g.value > 0.99 and g.detail == "with A/USDT"


# --------------------------------------------------------------------------------------------- exits
async def test_exits_face_only_engine_state_and_breaker(tmp_path, pipelines):
    script = {BTC: (BUY, 0.8)}
    p = await pipelines(make_settings(tmp_path, risk={"min_confidence": 0.6}), script=script)
    await p.bars(2)
    assert BTC in p.engine.portfolio.positions
    # everything an entry would fail on: paused, stale data, a confidence under the limit
    await p.engine.pause()
    p.clock.advance(p.clock.now_ms() + 10 * MIN)
    script[BTC] = (SELL, 0.3)
    script[ETH] = (BUY, 0.3)
    await p.bars(1)
    d = await last_decision(p, BTC)
    assert d["outcome"] == "exit_submitted", d
    gates = await p.gates(d["decision_id"])
    assert [(x["code"], x["passed"]) for x in gates] == [("ENGINE_STATE", True), ("BREAKER_OPEN", True)]
    assert gates[0]["value"] == "PAUSED"
    g = await refused_by(p, ETH, "ENGINE_STATE")
    assert [c for c in GATE_ORDER if not g[c]["passed"]] == ["ENGINE_STATE", "DATA_STALE", "MIN_CONFIDENCE"]
    await p.bars(1)
    assert BTC not in p.engine.portfolio.positions
    assert await p.rows("SELECT reason FROM trades") == [("signal",)]


async def test_halted_refuses_every_exit_but_the_operators_flatten(tmp_path, pipelines):
    script = {BTC: (BUY, 0.8)}
    p = await pipelines(make_settings(tmp_path), script=script)
    await p.bars(2)
    assert BTC in p.engine.portfolio.positions
    await p.engine.halt()
    script[BTC] = (SELL, 0.9)
    await p.bars(1)
    d = await last_decision(p, BTC)
    assert d["outcome"] == "exit_refused" and d["reason"].startswith("ENGINE_STATE:")
    gates = await p.gates(d["decision_id"])
    assert [g["code"] for g in gates] == ["ENGINE_STATE", "BREAKER_OPEN"]
    check(gates[0], passed=False, value="HALTED", limit="not HALTED (flatten excepted)")
    res = await p.engine.operator_order(BTC, "sell", p.engine.portfolio.positions[BTC].quantity)
    assert not res["accepted"] and res["reason"].startswith("ENGINE_STATE:")
    assert await p.rows("SELECT count(*) FROM orders WHERE side = 'sell'") == [(0,)]

    out = await p.engine.flatten()
    assert len(out["closing"]) == 1 and not out["failed"]
    gates = await p.gates(client_order_id=out["closing"][0])
    assert [(g["code"], g["value"], g["passed"]) for g in gates] == [("ENGINE_STATE", "HALTED", True),
                                                                    ("BREAKER_OPEN", "allows", True)]
    await p.bars(1)
    assert BTC not in p.engine.portfolio.positions
    assert await p.rows("SELECT reason FROM trades") == [("flatten",)]
    assert p.engine.state is EngineState.HALTED


async def test_halted_refuses_a_stop_loss_exit_too(tmp_path, pipelines):
    p, _, paths, _ = await entered_before_the_crash(tmp_path, pipelines)
    await p.bars(2)
    entry = p.engine.portfolio.positions[BTC].entry_decision_id
    await p.engine.halt()
    await p.bars(14)  # through the crash at bar 76: its low is far under the stop
    assert p.engine.portfolio.positions[BTC].stop_loss > min(paths[BTC][70:80])
    assert BTC in p.engine.portfolio.positions  # the kill switch leaves the position to the operator
    assert await p.rows("SELECT count(*) FROM orders WHERE side = 'sell'") == [(0,)]
    out = await p.engine.flatten()
    assert len(out["closing"]) == 1
    await p.bars(1)
    assert BTC not in p.engine.portfolio.positions
    assert await p.rows("SELECT reason, entry_decision_id FROM trades") == [("flatten", entry)]


async def test_a_start_past_a_lowered_drawdown_limit_says_the_breach(tmp_path, pipelines):
    """The account is 10% under its peak; the operator lowers risk.max_drawdown_pct below that and restarts. The
    DRAWDOWN gate refuses every entry from then on, so the start says so: in its `run` record and in a warning,
    with the figure and the limit (nothing paused it, as the breach did not come while the engine ran)."""
    from ffe_engine import fmt

    p, script, paths, _ = await entered_before_the_crash(tmp_path, pipelines, max_drawdown_pct=50)
    await p.bars(20)  # the crash at bar 76
    dd = p.engine.portfolio.drawdown_pct()
    assert 5 < dd < 50 and p.engine.state is EngineState.RUNNING, dd
    await p.close()

    strict = make_settings(tmp_path, risk={"max_position_pct": 50, "max_drawdown_pct": 5, "take_profit_atr": 100})
    clock = SimClock()
    p = await pipelines(strict, script=script, feed=replay_feed(tmp_path, paths, clock), clock=clock)
    [start] = [e for e in await p.events("run") if e["phase"] == "start"][-1:]
    assert start["detail"].get("breached") == [f"DRAWDOWN {fmt.beyond(dd, 5.0)}% > 5%"], start["detail"]


async def test_why_no_trades_of_an_engine_whose_run_has_ended_says_it_stopped(tmp_path):
    """A console left open after its run ended (--max-bars, the feed's end): every command is refused, and the why
    view says so, not `engine RUNNING ... nothing blocks entries now`."""
    from conftest import engine_session
    from ffe_engine import tables
    from ffe_engine.views import why

    async with engine_session(make_settings(tmp_path)) as running:
        e = running.engine
        await e.stop()
        w = await why(e)
        (stopped,) = [b for b in w["blocking"] if b["gate"] == "ENGINE_STATE"]
        assert stopped["now"].startswith("STOPPED (") and "start it again" in stopped["lifts"], stopped
        assert tables.why(w).startswith("engine STOPPED (was RUNNING)"), tables.why(w)
