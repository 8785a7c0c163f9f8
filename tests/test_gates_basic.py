"""The gates of the paper engine (ENGINE_STATE, BREAKER_OPEN, DATA_STALE, MIN_CONFIDENCE, MAX_OPEN_POSITIONS,
POSITION_SIZE, CONCENTRATION), position sizing, and the circuit breaker on the single order path.

- The Gatekeeper against a real Portfolio (positions made by fills): each gate fails in a case built to violate
  it alone, recording code, measured value, limit and passed=false, with every gate evaluated in order.
- End to end: headless runs whose stored fills, decisions and gate rows show the limits held; operator orders
  refused on a real engine with their gate rows stored.
- The breaker driven through OrderPath.submit with a paper venue behind a network that fails at its
  create_order boundary.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import db_rows, db_value, engine_session, ffe_env, make_settings, run_ffe
from ffe_engine.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from ffe_engine.config import RiskSettings
from ffe_engine.errors import ControlError
from ffe_engine.events import EventBus
from ffe_engine.execution import OrderPath
from ffe_engine.market.csvdata import load_csv
from ffe_engine.market.replay import ReplayFeed
from ffe_engine.model import EngineState, Fill, OrderReason, OrderStatus, Side
from ffe_engine.portfolio import Portfolio
from ffe_engine.risk import GATE_ORDER, SIZE_HEADROOM, EntryInFlight, Gatekeeper, OrderIntent, first_failure, size_entry
from ffe_engine.clock import SimClock
from ffe_engine.store import Store
from ffe_engine.venues.base import VenueUnavailable
from ffe_engine.venues.paper import PaperVenue
from pipeline_helpers import trading_state

BTC, ETH = "BTC/USDT", "ETH/USDT"
MIN = 60_000
NOW = 1_700_000_000_000 - 1_700_000_000_000 % MIN
BASIC = GATE_ORDER[:7]
# Limits of the other gates opened wide, so only the gate under test can bind.
WIDE = {"max_leverage": 10.0, "max_drawdown_pct": 100, "daily_loss_limit_pct": 100, "max_var_pct": 100,
        "max_correlation": 1.0, "max_orders_per_minute": 1000, "max_daily_trades": 1000}


# ---------------------------------------------------------------------------------------------------- the Gatekeeper
def portfolio(*held: tuple[str, float, float]) -> Portfolio:
    """10,000 USDT, BTC at 100 and ETH at 50, and a long (symbol, quantity, price) per `held`, made by a fill."""
    pf = Portfolio(10_000.0)
    for k in range(40):  # some price history (VaR and correlation have inputs)
        pf.mark(BTC, 100.0 * (1 + 0.01 * math.sin(k)))
        pf.mark(ETH, 50.0 * (1 + 0.01 * math.cos(k)))
    pf.mark(BTC, 100.0)
    pf.mark(ETH, 50.0)
    for sym, qty, px in held:
        pf.apply_fill(Fill("f-" + sym, sym, Side.BUY, qty, px, 0.0, NOW))
    return pf


def gatekeeper(pf: Portfolio, *, state: EngineState = EngineState.RUNNING, breaker: CircuitBreaker | None = None,
               last_bar: int | None = NOW - MIN, pending: tuple[EntryInFlight, ...] = (), **risk) -> Gatekeeper:
    b = breaker or CircuitBreaker("paper", 3, 60.0, now=lambda: 0.0)
    return Gatekeeper(RiskSettings(**{**WIDE, **risk}), pf, trading=trading_state(state), breaker_allows=b.allows,
                      now_ms=lambda: NOW, last_bar_ts=lambda s: last_bar, entries_in_flight=lambda: list(pending),
                      timeframe_ms=MIN, live=False)


def entry(symbol: str = BTC, qty: float = 5.0, confidence: float | None = 0.8) -> OrderIntent:
    return OrderIntent(symbol=symbol, side=Side.BUY, quantity=qty, reason=OrderReason.SIGNAL, decision_id="d1",
                       confidence=confidence, ref_price=100.0 if symbol == BTC else 50.0)


def only_failure(gates, code: str, value, limit) -> None:
    assert [g.code for g in gates] == list(GATE_ORDER)  # every gate evaluated, in the docs/gates.md order
    failed = [g for g in gates if not g.passed]
    assert [g.code for g in failed] == [code], [(g.code, g.value, g.limit) for g in failed]
    g = first_failure(gates)
    assert (g.code, g.passed, g.limit) == (code, False, limit)
    assert g.value == (pytest.approx(value) if isinstance(value, float) else value)


def test_a_well_formed_entry_passes_every_gate():
    gates = gatekeeper(portfolio()).evaluate(entry())
    assert [g.code for g in gates] == list(GATE_ORDER) and all(g.passed for g in gates)


@pytest.mark.parametrize("state", [EngineState.PAUSED, EngineState.HALTED])
def test_engine_state_refuses_entries_unless_running(state):
    gates = gatekeeper(portfolio(), state=state).evaluate(entry())
    only_failure(gates, "ENGINE_STATE", state.value, "RUNNING")


def test_engine_state_lets_exits_out_while_paused_but_not_while_halted_except_flatten():
    pf = portfolio((BTC, 5.0, 100.0))
    exit_ = OrderIntent(symbol=BTC, side=Side.SELL, quantity=5.0, reason=OrderReason.STOP_LOSS, reduce_only=True)
    paused = gatekeeper(pf, state=EngineState.PAUSED).evaluate(exit_)
    assert [g.code for g in paused] == ["ENGINE_STATE", "BREAKER_OPEN"] and all(g.passed for g in paused)
    halted = gatekeeper(pf, state=EngineState.HALTED).evaluate(exit_)
    assert (halted[0].code, halted[0].value, halted[0].passed) == ("ENGINE_STATE", "HALTED", False)
    flatten = OrderIntent(symbol=BTC, side=Side.SELL, quantity=5.0, reason=OrderReason.FLATTEN, reduce_only=True)
    assert all(g.passed for g in gatekeeper(pf, state=EngineState.HALTED).evaluate(flatten))


def test_breaker_open_refuses_until_the_probe_is_due():
    t = [1000.0]
    breaker = CircuitBreaker("paper", 3, 60.0, now=lambda: t[0])
    for _ in range(3):
        breaker.record_failure("connection reset")
    gates = gatekeeper(portfolio(), breaker=breaker).evaluate(entry())
    only_failure(gates, "BREAKER_OPEN", "open", "closed or probe")
    t[0] += 60.0
    assert all(g.passed for g in gatekeeper(portfolio(), breaker=breaker).evaluate(entry()))


def test_until_refused_stops_at_the_first_refusal_with_the_same_verdict_and_reason():
    # A backtest without decision records keeps only an entry's first refusal: the gates after it are not measured.
    # Two refusals here (MIN_CONFIDENCE, then DRAWDOWN); the full evaluation measures both.
    pf = portfolio()
    pf.peak_equity = 20_000.0  # equity 10,000: a 50% drawdown
    gk = gatekeeper(pf, max_drawdown_pct=15, min_confidence=0.9)
    full = gk.evaluate(entry(confidence=0.8))
    assert [g.code for g in full] == list(GATE_ORDER)
    assert [g.code for g in full if not g.passed] == ["MIN_CONFIDENCE", "DRAWDOWN"]
    short = gk.evaluate(entry(confidence=0.8), until_refused=True)
    assert short == full[:len(short)] and short[-1] is first_failure(short)
    assert [g.code for g in short] == list(GATE_ORDER[:GATE_ORDER.index("MIN_CONFIDENCE") + 1])
    assert first_failure(short).refusal() == first_failure(full).refusal()
    # An entry that passes is measured by every gate either way.
    passing = gatekeeper(portfolio()).evaluate(entry(), until_refused=True)
    assert [g.code for g in passing] == list(GATE_ORDER) and all(g.passed for g in passing)


def test_until_refused_leaves_var_unmeasured_only_when_a_bound_of_it_passes():
    """Without decision records, VAR is not measured where Portfolio.var_bound_pct already passes: a passing gate's
    figure is kept nowhere then. Where the bound does not pass the limit, VAR is measured, to the same figure."""
    pf = Portfolio(10_000.0)
    for k in range(60):  # 60 bars of returns: VaR has its inputs
        pf.mark(BTC, 100.0 * (1 + 0.02 * math.sin(k)))
        pf.mark(ETH, 50.0 * (1 + 0.03 * math.cos(k / 2)))
        pf.close_bar()
    pf.apply_fill(Fill("f-eth", ETH, Side.BUY, 40.0, pf.last_price[ETH], 0.0, NOW))
    wide = gatekeeper(pf)
    full = wide.evaluate(entry())
    short = wide.evaluate(entry(), until_refused=True)
    assert [(g.code, g.passed) for g in short] == [(g.code, g.passed) for g in full] and all(g.passed for g in full)
    var_full, var_short = by_code(full)["VAR"], by_code(short)["VAR"]
    assert var_full.value > 0 and var_short.value is None and var_short.detail.endswith(": not measured")
    bound = float(var_short.detail.split()[2].rstrip(":"))
    assert bound >= var_full.value
    # A limit between VaR and its bound: measured, and passing as measured.
    tight = gatekeeper(pf, max_var_pct=(var_full.value + bound) / 2)
    measured = by_code(tight.evaluate(entry(), until_refused=True))["VAR"]
    assert (measured.value, measured.passed, measured.detail) == (var_full.value, True, var_full.detail)
    # Below VaR: refused, with the measured figure, as the full evaluation says.
    refusing = gatekeeper(pf, max_var_pct=var_full.value / 2)
    assert first_failure(refusing.evaluate(entry(), until_refused=True)).refusal() == \
        first_failure(refusing.evaluate(entry())).refusal()


def by_code(gates) -> dict:
    return {g.code: g for g in gates}


@given(held=st.lists(st.tuples(st.sampled_from([BTC, ETH]), st.floats(0.5, 80.0)), max_size=2, unique_by=lambda t: t[0]),
       symbol=st.sampled_from([BTC, ETH]), qty=st.floats(0.1, 120.0), limit=st.floats(0.01, 30.0),
       swings=st.lists(st.floats(-0.2, 0.2), min_size=30, max_size=80), bars_per_day=st.sampled_from([1, 24, 1440]))
@settings(max_examples=300, deadline=None)
def test_var_bound_is_never_below_var_and_the_first_refusal_is_the_same(held, symbol, qty, limit, swings,
                                                                       bars_per_day):
    pf = Portfolio(10_000.0)
    for k, x in enumerate(swings):  # a return history of the sizes the property draws
        pf.mark(BTC, 100.0 * (1 + x))
        pf.mark(ETH, 50.0 * (1 + swings[-1 - k] / 2))
        pf.close_bar()
    for sym, q in held:
        pf.apply_fill(Fill("f-" + sym, sym, Side.BUY, q, pf.last_price[sym], 0.0, NOW))
    extra = {symbol: qty * pf.last_price[symbol]}
    var = pf.var_pct(0.95, extra, horizon_bars=bars_per_day, window=250)
    bound = pf.var_bound_pct(extra, horizon_bars=bars_per_day, window=250)
    assert (var is None) == (bound is None)
    if var is not None:
        assert bound >= var
    gk = Gatekeeper(RiskSettings(**{**WIDE, "max_var_pct": limit, "max_position_pct": 100,
                                    "max_concentration_pct": 100}), pf, trading=trading_state(EngineState.RUNNING),
                    breaker_allows=lambda: True, now_ms=lambda: NOW, last_bar_ts=lambda s: NOW - MIN,
                    entries_in_flight=list, timeframe_ms=86_400_000 // bars_per_day, live=False)
    it = entry(symbol, qty)
    full, short = gk.evaluate(it), gk.evaluate(it, until_refused=True)
    assert (first_failure(full) is None) == (first_failure(short) is None)
    if first_failure(full) is not None:
        assert first_failure(short).refusal() == first_failure(full).refusal()


def test_data_stale_refuses_when_the_last_candle_is_older_than_the_limit():
    # The newest bar opened 5 minutes before "now": it closed 4 bars ago, over the limit of 3.
    gates = gatekeeper(portfolio(), last_bar=NOW - 5 * MIN).evaluate(entry())
    only_failure(gates, "DATA_STALE", 4.0, 3)
    assert all(g.passed for g in gatekeeper(portfolio(), last_bar=NOW - 4 * MIN).evaluate(entry()))  # 3 bars: ok


def test_min_confidence_refuses_a_lukewarm_decision():
    only_failure(gatekeeper(portfolio()).evaluate(entry(confidence=0.5)), "MIN_CONFIDENCE", 0.5, 0.55)
    assert all(g.passed for g in gatekeeper(portfolio()).evaluate(entry(confidence=0.55)))


def test_max_open_positions_counts_open_positions_and_entries_in_flight():
    pf = portfolio((BTC, 1.0, 100.0), (ETH, 1.0, 50.0))
    only_failure(gatekeeper(pf).evaluate(entry("SOL/USDT", 1.0)), "MAX_OPEN_POSITIONS", 3, 2)
    one = portfolio((BTC, 1.0, 100.0))
    in_flight = (EntryInFlight(ETH, Side.BUY, 1.0),)
    only_failure(gatekeeper(one, pending=in_flight).evaluate(entry("SOL/USDT", 1.0)), "MAX_OPEN_POSITIONS", 3, 2)
    assert all(g.passed for g in gatekeeper(one).evaluate(entry(ETH, 1.0)))
    # Positions are symbols: a second entry in ETH while one is in flight, or more BTC, opens no third one.
    assert all(g.passed for g in gatekeeper(one, pending=in_flight).evaluate(entry(ETH, 1.0)))
    assert all(g.passed for g in gatekeeper(pf).evaluate(entry(BTC, 1.0)))


def test_position_size_refuses_an_order_over_its_share_of_equity():
    # 15 BTC at 100 = 1,500 = 15% of 10,000 equity, over 10%.
    gates = gatekeeper(portfolio(), max_concentration_pct=100).evaluate(entry(qty=15.0))
    only_failure(gates, "POSITION_SIZE", 15.0, 10.0)


def test_concentration_counts_the_exposure_already_held_in_the_symbol():
    # 25 BTC held (2,500) + 8 more (800): 33% of equity in BTC, over 30%; the order alone is 8%, within 10%.
    pf = portfolio((BTC, 25.0, 100.0))
    assert pf.equity() == pytest.approx(10_000.0)
    only_failure(gatekeeper(pf).evaluate(entry(qty=8.0)), "CONCENTRATION", 33.0, 30.0)
    assert all(g.passed for g in gatekeeper(pf).evaluate(entry(ETH, 16.0)))  # another symbol: 8%


# ---------------------------------------------------------------------------------------------------- sizing
def test_sizing_is_equity_times_risk_over_the_atr_stop_rounded_down_to_the_step():
    risk = RiskSettings(risk_per_trade_pct=1.0, stop_loss_atr=2.0, take_profit_atr=3.0, max_position_pct=10)
    # 10,000 x 1% / (2 x 7) = 7.142857... -> 7.142 at a 0.001 step
    qty, rec = size_entry(risk, equity=10_000.0, cash=10_000.0, price=100.0, atr=7.0, fee_rate=0.001,
                          amount_step=0.001)
    assert qty == pytest.approx(7.142)
    assert rec["capped_by"] == "risk" and rec["raw_qty"] == pytest.approx(100.0 / 14.0)
    assert rec["stop_loss"] == pytest.approx(86.0) and rec["take_profit"] == pytest.approx(121.0)


def test_sizing_is_capped_by_position_size_and_by_cash():
    risk = RiskSettings(risk_per_trade_pct=1.0, stop_loss_atr=2.0, max_position_pct=10)
    # A tight stop asks for 50 units (5,000 = 50% of equity); POSITION_SIZE allows 10% = 10 units, and sizing
    # keeps 1% below it so the order still passes the gate after a tick up: 9.9 units.
    qty, rec = size_entry(risk, equity=10_000.0, cash=10_000.0, price=100.0, atr=1.0, fee_rate=0.001,
                          amount_step=0.001)
    assert qty == pytest.approx(10.0 * SIZE_HEADROOM) and rec["capped_by"] == "position_size"
    qty, rec = size_entry(risk, equity=10_000.0, cash=300.0, price=100.0, atr=1.0, fee_rate=0.001,
                          amount_step=0.001)
    assert qty <= 300.0 / (100.0 * 1.001) and qty == pytest.approx(2.994) and rec["capped_by"] == "cash"
    assert size_entry(risk, equity=10_000.0, cash=10_000.0, price=100.0, atr=None, fee_rate=0.0,
                      amount_step=0.001)[0] == 0.0  # no ATR yet: no size


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def one_position_run(tmp_path_factory) -> Path:
    """A long headless run on two symbols with max_open_positions = 1."""
    cwd = tmp_path_factory.mktemp("one_position")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "600",
                   env=ffe_env(FFE_RISK__MAX_OPEN_POSITIONS="1", FFE_RISK__MAX_CORRELATION="1.0"))
    assert proc.returncode == 0, proc.stderr
    return cwd / "data" / "ffe.db"


def test_never_more_open_positions_than_the_limit_from_the_stored_fills(one_position_run):
    db = one_position_run
    held: dict[str, float] = {}
    most = 0
    traded = set()
    for sym, side, qty in db_rows(db, "SELECT symbol, side, quantity FROM fills ORDER BY id"):
        held[sym] = held.get(sym, 0.0) + (qty if side == "buy" else -qty)
        traded.add(sym)
        most = max(most, sum(1 for q in held.values() if q > 1e-9))
    assert traded == {BTC, ETH}  # both symbols were traded, one at a time
    assert most == 1
    refused = db_rows(db, "SELECT g.value, g.limit_value, g.passed, d.outcome FROM gate_results g JOIN decisions d "
                          "USING (decision_id) WHERE g.code = 'MAX_OPEN_POSITIONS' AND g.passed = 0")
    assert refused, "the limit never had to refuse an entry"
    assert {(float(r[0]), float(r[1]), r[2], r[3]) for r in refused} == {(2, 1, 0, "rejected")}


def test_entries_are_sized_per_the_design_and_within_position_size(one_position_run):
    db = one_position_run
    risk = RiskSettings()
    rows = db_rows(db, "SELECT e.data, o.quantity FROM decisions d JOIN events e ON e.seq = d.event_seq "
                       "JOIN orders o ON o.client_order_id = d.client_order_id WHERE d.outcome = 'submitted'")
    assert len(rows) >= 5
    for data, ordered in rows:
        d = json.loads(data)
        s = d["sizing"]
        raw = s["equity"] * risk.risk_per_trade_pct / 100.0 / (risk.stop_loss_atr * s["atr"])
        cap = s["equity"] * risk.max_position_pct * SIZE_HEADROOM / 100.0 / d["price"]
        expected = min(raw, cap)
        assert s["raw_qty"] == pytest.approx(raw, rel=1e-4)
        assert ordered <= expected * (1 + 1e-6)  # rounded down, never up
        assert ordered == pytest.approx(s["quantity"])
        if s["capped_by"] != "cash":
            assert expected - ordered < 1e-6 + 1e-4 * expected  # the venue step (1e-6) is all that is lost
        size = next(g for g in d["gates"] if g["code"] == "POSITION_SIZE")
        assert size["passed"] and size["value"] <= 10.0


def test_a_size_below_the_venue_minimum_is_not_sent_and_the_decision_says_so(tmp_path):
    """Below the venue's minimum after the gates pass (docs/gates.md): every gate recorded, each passed."""
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "300", env=ffe_env(FFE_VENUE__MIN_NOTIONAL="100000"))
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "data" / "ffe.db"
    below = db_rows(db, "SELECT quantity, reason, decision_id FROM decisions WHERE outcome = 'below_minimum'")
    assert below, "no entry was sized"
    assert all(q > 0 and "minimum" in reason and "100000" in reason for q, reason, _ in below)
    for *_, decision_id in below:
        gates = db_rows(db, "SELECT code, passed FROM gate_results WHERE decision_id = ? ORDER BY rowid",
                        (decision_id,))
        assert [code for code, _ in gates] == list(GATE_ORDER) and all(passed for _, passed in gates), gates
    assert db_value(db, "SELECT COUNT(*) FROM orders") == 0


def test_an_entry_a_gate_refuses_is_refused_by_that_gate_though_its_size_is_below_the_venue_minimum(tmp_path):
    """The gates come first: an entry of too little confidence is MIN_CONFIDENCE's refusal (so counted in the
    refusals by gate), whatever its size."""
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "300",
                   env=ffe_env(FFE_VENUE__MIN_NOTIONAL="100000", FFE_RISK__MIN_CONFIDENCE="0.99"))
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "data" / "ffe.db"
    outcomes = db_rows(db, "SELECT outcome, reason FROM decisions WHERE action = 'BUY'")
    assert outcomes, "no entry was decided"
    assert all(o == "rejected" and r.startswith("MIN_CONFIDENCE") for o, r in outcomes), outcomes


def test_min_confidence_end_to_end_refuses_and_records_every_entry(tmp_path):
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "300", env=ffe_env(FFE_RISK__MIN_CONFIDENCE="0.99"))
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "data" / "ffe.db"
    rows = db_rows(db, "SELECT g.value, g.limit_value, g.passed FROM gate_results g JOIN decisions d "
                       "USING (decision_id) WHERE d.action = 'BUY' AND g.code = 'MIN_CONFIDENCE'")
    assert rows
    assert all(float(v) < 0.99 and float(lim) == 0.99 and passed == 0 for v, lim, passed in rows)
    assert db_value(db, "SELECT COUNT(*) FROM orders") == 0
    assert {r[0] for r in db_rows(db, "SELECT DISTINCT outcome FROM decisions WHERE action = 'BUY'")} == {"rejected"}


def _number(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def _operator_gates(db: Path) -> dict[str, tuple]:
    """The gate rows of the latest refused operator order: code -> (value, limit, passed); numbers as floats."""
    rows = db_rows(db, "SELECT code, value, limit_value, passed FROM gate_results WHERE decision_id IS NULL "
                       "ORDER BY rowid DESC LIMIT 14")
    return {r[0]: (_number(r[1]), _number(r[2]), r[3]) for r in rows}


async def test_operator_orders_refused_by_position_size_and_concentration_are_recorded(tmp_path):
    settings = make_settings(tmp_path, engine={"symbols": [BTC]},
                             risk={**WIDE, "max_position_pct": 20, "max_concentration_pct": 25})
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await e.on_candle(next(candles))
        price = e.portfolio.last_price[BTC]
        at_venue = len(e.venue.orders)
        too_big = await e.operator_order(BTC, "buy", round(3000.0 / price, 6))  # 30% of equity
        assert not too_big["accepted"] and too_big["reason"].startswith("POSITION_SIZE")
        assert len(e.venue.orders) == at_venue
        code, value, limit, passed = ("POSITION_SIZE", *_operator_gates(settings.db_path)["POSITION_SIZE"])
        assert (limit, passed) == (20.0, 0) and value == pytest.approx(30.0, abs=0.1)

        first = await e.operator_order(BTC, "buy", round(1500.0 / price, 6))  # 15%: fine
        assert first["accepted"], first
        await e.on_candle(next(candles))
        assert BTC in e.portfolio.positions
        at_venue = len(e.venue.orders)
        second = await e.operator_order(BTC, "buy", round(1500.0 / e.portfolio.last_price[BTC], 6))
        assert not second["accepted"] and second["reason"].startswith("CONCENTRATION")
        gates = _operator_gates(settings.db_path)
        assert gates["POSITION_SIZE"][2] == 1
        value, limit, passed = gates["CONCENTRATION"]
        assert (limit, passed) == (25.0, 0) and value == pytest.approx(30.0, abs=0.5)
        assert len(e.venue.orders) == at_venue  # the refused order never reached the venue


async def test_an_operator_order_on_a_symbol_whose_data_stopped_is_refused_saying_so(tmp_path):
    """ETH's replay file ends while BTC's goes on: an order in ETH could never fill at the paper venue (it fills on
    the symbol's candles), so it is refused before the gates, saying why and what to do, and nothing is journaled;
    one in BTC goes through."""
    step = 3_600_000

    def write(name: str, n: int, base: float) -> Path:
        p = tmp_path / name
        p.write_text("timestamp,open,high,low,close,volume\n" + "".join(
            f"{NOW + i * step},{base},{base * 1.01},{base * 0.99},{base},1\n" for i in range(n)))
        return p

    series = {BTC: load_csv(write("btc.csv", 60, 100.0), symbol=BTC), ETH: load_csv(write("eth.csv", 20, 50.0),
                                                                                      symbol=ETH)}
    settings = make_settings(tmp_path, engine={"timeframe": "1h", "warmup_bars": 0}, risk=WIDE)
    clock = SimClock()
    async with engine_session(settings, feed=ReplayFeed(series, clock), clock=clock) as running:
        e = running.engine
        for c in e.feed.iter_candles():
            await e.on_candle(c)  # ETH's data ends at bar 20, BTC's goes on to bar 60
        fresh = await e.operator_order(BTC, "buy", 1.0)
        assert fresh["accepted"], fresh
        with pytest.raises(ControlError, match=r"ETH/USDT: no candle of it comes to the paper venue, .*nothing was "
                                               r"sent: its replay file has ended"):
            await e.operator_order(ETH, "buy", 1.0)
        assert [o.symbol for o in e.orders.live.values()] == [BTC]
        assert "DATA_STALE" in _operator_gates(settings.db_path)  # BTC's order passed it


# ---------------------------------------------------------------------------------------------------- the breaker
class NetworkVenue(PaperVenue):
    """The paper exchange behind a network that can fail: while `down`, create_order raises VenueUnavailable
    before the request reaches the book. `calls` counts the requests that reached this boundary."""

    def __init__(self, cash: float = 10_000.0) -> None:
        super().__init__([BTC, ETH], starting_cash=cash, quote="USDT", fee_bps=10.0, slippage_bps=5.0)
        self.down = False
        self.calls = 0
        self.hold: asyncio.Event | None = None
        self.set_price(BTC, 100.0)
        self.set_price(ETH, 50.0)

    async def create_order(self, req):
        self.calls += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            raise VenueUnavailable("connection reset by peer")
        return await super().create_order(req)


class Path_:
    """An OrderPath wired as the engine wires it, with a clock the test moves."""

    def __init__(self, store: Store, venue: NetworkVenue, threshold: int = 3, recovery_s: float = 60.0) -> None:
        self.t = 5_000.0
        clock = SimClock(NOW)
        self.bus = EventBus(clock)
        self.bus.add_sink(store.add_event)
        self.breaker = CircuitBreaker(venue.name, threshold, recovery_s, now=lambda: self.t, bus=self.bus)
        self.pf = portfolio()
        self.venue = venue
        self.store = store
        gk = Gatekeeper(RiskSettings(**WIDE), self.pf, trading=trading_state(EngineState.RUNNING),
                        breaker_allows=self.breaker.allows, now_ms=lambda: NOW, last_bar_ts=lambda s: NOW - MIN,
                        entries_in_flight=lambda: self.orders.entries_in_flight(), timeframe_ms=MIN, live=False)

        async def on_fill(order, fill, intent):
            self.pf.apply_fill(fill)

        self.orders = OrderPath(store=store, venue=venue, breaker=self.breaker, gatekeeper=gk, portfolio=self.pf,
                                bus=self.bus, clock=clock, trading=gk.trading, on_fill=on_fill)

    async def buy(self, qty: float = 1.0):
        return await self.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=qty,
                                                    reason=OrderReason.OPERATOR, ref_price=100.0))


@pytest.fixture
async def order_path(tmp_path):
    store = await Store.open(tmp_path / "ffe.db")
    yield Path_(store, NetworkVenue())
    await store.close()


async def test_consecutive_failures_open_the_breaker_and_then_nothing_reaches_the_venue(order_path):
    p = order_path
    p.venue.down = True
    for n in range(1, 4):
        sub = await p.buy()
        assert not sub.accepted and sub.order.status is OrderStatus.REJECTED
        assert "venue unavailable" in sub.order.error
        assert p.venue.calls == n
    assert p.breaker.state == OPEN and p.breaker.failures == 3

    refused = await p.buy()  # the gate sees the open breaker
    assert not refused.accepted and refused.order is None
    g = first_failure(refused.gates)
    assert (g.code, g.value, g.limit, g.passed) == ("BREAKER_OPEN", "open", "closed or probe", False)
    # Gates evaluated just before the breaker opened: the breaker itself still stops the call.
    gates_before = [g for g in refused.gates]
    for gr in gates_before:
        gr.passed = True
    late = await p.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=1.0, reason=OrderReason.OPERATOR,
                                             ref_price=100.0), gates_before)
    assert not late.accepted and "circuit breaker" in late.order.error
    assert p.venue.calls == 3  # nothing more reached the venue
    await p.store.flush()
    breaker_events = [json.loads(r[0]) for r in db_rows(p.store.path, "SELECT data FROM events WHERE event = 'breaker'")]
    assert [(e["state"], e["previous"], e["failures"]) for e in breaker_events] == [(OPEN, CLOSED, 3)]


async def test_after_the_recovery_timeout_one_probe_goes_through_and_its_success_closes_the_breaker(order_path):
    p = order_path
    p.venue.down = True
    for _ in range(3):
        await p.buy()
    p.t += 59.0
    assert not (await p.buy()).accepted and p.venue.calls == 3  # not yet
    p.t += 1.0
    p.venue.down = False
    probe = await p.buy()
    assert probe.accepted and probe.order.status is OrderStatus.OPEN and p.venue.calls == 4
    assert p.breaker.state == CLOSED and p.breaker.failures == 0
    assert (await p.buy()).accepted and p.venue.calls == 5  # business as usual


async def test_a_failed_probe_opens_the_breaker_again_for_another_timeout(order_path):
    p = order_path
    p.venue.down = True
    for _ in range(3):
        await p.buy()
    p.t += 60.0
    probe = await p.buy()
    assert not probe.accepted and p.venue.calls == 4  # the probe went out, and failed
    assert p.breaker.state == OPEN and p.breaker.retry_at == pytest.approx(p.t + 60.0)
    assert not (await p.buy()).accepted and p.venue.calls == 4
    p.t += 60.0
    p.venue.down = False
    assert (await p.buy()).accepted and p.breaker.state == CLOSED


async def test_only_one_probe_at_a_time_while_half_open(order_path):
    p = order_path
    p.venue.down = True
    for _ in range(3):
        await p.buy()
    p.t += 60.0
    p.venue.down = False
    p.venue.hold = asyncio.Event()
    first = asyncio.ensure_future(p.buy())
    while p.venue.calls < 4:  # the probe is at the venue, waiting for its answer
        await asyncio.sleep(0.001)
    assert p.breaker.state == HALF_OPEN
    second = await p.buy()
    assert not second.accepted and p.venue.calls == 4
    p.venue.hold.set()
    assert (await first).accepted and p.breaker.state == CLOSED


async def test_a_venue_that_answers_no_is_healthy_and_does_not_open_the_breaker(tmp_path):
    store = await Store.open(tmp_path / "ffe.db")
    p = Path_(store, NetworkVenue(cash=50.0))
    for _ in range(5):
        sub = await p.buy(qty=1.0)  # 100 USDT of 50: insufficient funds, a final answer from a working venue
        assert not sub.accepted and "insufficient" in sub.order.error
    assert p.breaker.state == CLOSED and p.breaker.failures == 0 and p.venue.calls == 5
    await store.close()


async def test_breaker_open_through_the_engine_refuses_operator_orders_and_records_the_gate(tmp_path):
    settings = make_settings(tmp_path, engine={"symbols": [BTC]}, breaker={"failure_threshold": 2})
    venue = NetworkVenue()
    async with engine_session(settings, venue=venue) as running:
        e = running.engine
        await e.on_candle(next(e.feed.iter_candles()))
        venue.down = True
        for _ in range(2):
            assert not (await e.operator_order(BTC, "buy", 0.01))["accepted"]
        assert venue.calls == 2 and e.breaker.state == OPEN
        refused = await e.operator_order(BTC, "buy", 0.01)
        assert not refused["accepted"] and refused["reason"].startswith("BREAKER_OPEN")
        assert venue.calls == 2
        assert _operator_gates(settings.db_path)["BREAKER_OPEN"] == ("open", "closed or probe", 0)
        assert db_value(settings.db_path, "SELECT COUNT(*) FROM orders WHERE status = 'rejected'") == 2


class JournalWitness(NetworkVenue):
    """Looks in the database, through a connection of its own, for each order it is asked to place."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.seen: list[tuple] = []

    async def create_order(self, req):
        self.seen.extend(db_rows(self.db, "SELECT client_order_id, status, quantity FROM orders "
                                          "WHERE client_order_id = ?", (req.client_order_id,)))
        return await super().create_order(req)


async def test_every_order_is_journaled_with_its_client_order_id_before_the_venue_sees_it(tmp_path):
    store = await Store.open(tmp_path / "ffe.db")
    venue = JournalWitness(tmp_path / "ffe.db")
    p = Path_(store, venue)
    try:
        subs = [await p.buy(0.5), await p.buy(0.25)]
        assert all(s.accepted for s in subs)
        ids = [s.order.client_order_id for s in subs]
        assert len(set(ids)) == 2 and all(i.startswith("ffe-") for i in ids)
        assert venue.seen == [(ids[0], "new", 0.5), (ids[1], "new", 0.25)]  # committed, then sent
        assert sorted(venue.orders) == sorted(ids)  # the venue knows them by the same ids
    finally:
        await store.close()


@pytest.mark.parametrize("confidence, limit", [(0.549981, 0.55), (0.55002, 0.55), (0.55546, 0.55547)])
def test_a_recorded_gate_value_is_on_the_same_side_of_its_limit_as_the_value_measured(confidence, limit):
    """Values are recorded to 4 decimals, except where that would put them on the limit or past it: a refusal that
    read "MIN_CONFIDENCE: value=0.55 limit=0.55" said nothing of why."""
    [g] = [g for g in gatekeeper(portfolio(), min_confidence=limit).evaluate(entry(confidence=confidence))
           if g.code == "MIN_CONFIDENCE"]
    assert g.passed == (confidence >= limit)
    assert (g.value > limit) == (confidence > limit) and (g.value < limit) == (confidence < limit), g.refusal()
    assert g.value == pytest.approx(confidence, abs=1e-4)
    assert len(str(g.value)) <= len(str(confidence))


def test_a_recorded_gate_value_keeps_four_decimals_away_from_its_limit():
    [g] = [g for g in gatekeeper(portfolio(), min_confidence=0.55).evaluate(entry(confidence=0.123456789))
           if g.code == "MIN_CONFIDENCE"]
    assert g.value == 0.1235
