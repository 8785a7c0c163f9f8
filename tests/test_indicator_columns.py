"""Indicators and votes computed for a whole series at once (a backtest's way) equal the incremental ones the live
engine computes bar by bar: on every bar of both sample files, every value, action and confidence to the last
bit."""

from __future__ import annotations

import pytest

from conftest import BTC_CSV, ETH_CSV
from ffe_engine.indicators import IndicatorColumns, IndicatorSet
from ffe_engine.market.csvdata import CandleSeries, load_csv
from ffe_engine.model import Action
from ffe_engine.signals import BUILTIN, make_providers
from ffe_engine.signals.base import BUY_CODE, HOLD_CODE, SELL_CODE

CODE = {Action.HOLD: HOLD_CODE, Action.BUY: BUY_CODE, Action.SELL: SELL_CODE}
VALUES = [name for name in IndicatorSet.__slots__ if not name.startswith("_") and name != "symbol"]
MARKET_DATA_PROVIDERS = [name for name in BUILTIN if name != "llm"]  # the LLM voter asks a model, not the data


def exact(ind: IndicatorSet) -> str:
    """Every value of the set, exactly: repr tells apart 0.0 and -0.0, 1 and 1.0, and None."""
    return repr([getattr(ind, name) for name in VALUES])


def columns(series: CandleSeries, **periods) -> IndicatorColumns:
    return IndicatorColumns(series.ts, series.open, series.high, series.low, series.close, series.volume, **periods)


def compare(series: CandleSeries, **periods) -> int:
    """Bar by bar, the incremental set and the loaded column values, the warm flag and each provider's action and
    confidence; returns the number of warm bars."""
    cols = columns(series, **periods)
    providers = make_providers(MARKET_DATA_PROVIDERS)
    votes = {p.name: p.vote_columns(cols) for p in providers}
    cols.compact()  # as a backtest keeps them, once the votes are computed
    ind = IndicatorSet(series.symbol, **periods)
    loaded = IndicatorSet(series.symbol, **periods)
    warm = 0
    for i, candle in enumerate(series.candles()):
        ind.update(candle)
        cols.load(loaded, i)
        assert exact(loaded) == exact(ind), f"{series.symbol} bar {i}"
        assert (i >= cols.warm_from) is ind.warm, f"{series.symbol} bar {i}"
        warm += ind.warm
        for p in providers:
            vote = p.vote(ind)
            codes, confs = votes[p.name]
            assert (codes[i], repr(confs[i])) == (CODE[vote.action], repr(vote.confidence)), \
                f"{p.name} at {series.symbol} bar {i}"
    return warm


@pytest.mark.parametrize("path", [BTC_CSV, ETH_CSV], ids=["BTC", "ETH"])
def test_every_bar_of_the_sample_files_is_the_same_either_way(path):
    series = load_csv(path)
    assert compare(series) == len(series) - 50  # warm once the slow EMA has a previous value
    for p in make_providers(MARKET_DATA_PROVIDERS):
        codes, _ = p.vote_columns(columns(series))
        assert set(codes) == {HOLD_CODE, BUY_CODE, SELL_CODE}, p.name  # the comparison saw every action


def test_other_periods_and_a_series_shorter_than_the_warm_up():
    series = load_csv(BTC_CSV)
    periods = dict(ema_fast=3, ema_slow=7, macd_fast=2, macd_slow=5, macd_signal=3, rsi=2, atr=3, bb_period=4,
                   bb_k=1.5, donchian=3)
    assert compare(series.head(3000), **periods) > 2900
    for n in (0, 1, 2, 19, 20, 21, 49, 50, 51):
        assert compare(series.head(n)) == max(0, n - 50)


def test_bad_periods_are_refused_as_by_the_incremental_set():
    series = load_csv(BTC_CSV).head(10)
    for periods in (dict(ema_fast=50, ema_slow=20), dict(macd_fast=26, macd_slow=12), dict(rsi=0), dict(atr=1.5),
                    dict(bb_period=-1), dict(bb_k=0.0), dict(donchian=0)):
        with pytest.raises(ValueError) as incremental:
            IndicatorSet("X", **periods)
        with pytest.raises(ValueError) as whole:
            columns(series, **periods)
        assert str(whole.value) == str(incremental.value)
