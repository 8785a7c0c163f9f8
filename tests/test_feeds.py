"""Feeds: CSV replay (merge order, max_bars, pacing) and the simulated market (determinism, correlation,
regimes, consistent bars)."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from pathlib import Path

import pytest

from ffe_engine.clock import SimClock
from ffe_engine.market.csvdata import load_csv
from ffe_engine.market.replay import YIELD_EVERY, ReplayFeed
from ffe_engine.market.simulated import REGIMES, TREND_DOWN, TREND_UP, VOLATILE, MarketSimulator, SimulatedFeed
from ffe_engine.model import Candle

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
HOUR = 3_600_000
MINUTE = 60_000
T0 = 1_577_836_800_000  # 2020-01-01T00:00:00Z
START = 1_700_000_040_000  # a minute boundary


class RecordingClock(SimClock):
    """Market time that writes down every sleep it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


def write_series(tmp_path: Path, name: str, hours: list[int], base: float) -> Path:
    lines = ["timestamp,open,high,low,close,volume"]
    for h in hours:
        p = base + h
        lines.append(f"{(T0 + h * HOUR) // 1000},{p},{p + 1},{p - 1},{p + 0.5},{h + 1}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def two_symbols(tmp_path: Path) -> dict:
    # AAA misses hour 3; BBB starts an hour later and misses hour 6.
    aaa = load_csv(write_series(tmp_path, "AAA-USD_1h.csv", [0, 1, 2, 4, 5, 6, 7], 100.0))
    bbb = load_csv(write_series(tmp_path, "BBB-USD_1h.csv", [1, 2, 3, 4, 5, 7], 500.0))
    return {"AAA/USD": aaa, "BBB/USD": bbb}


# --- replay -----------------------------------------------------------------------------------------------------


def test_replay_merges_symbols_in_time_order(two_symbols: dict) -> None:
    clock = SimClock()
    feed = ReplayFeed(two_symbols, clock)
    assert clock.now_ms() == T0  # market time starts at the replay's first moment
    seen = []
    for candle in feed.iter_candles():
        # The clock reads the candle's close time when it is handed out.
        assert clock.now_ms() == candle.ts + HOUR
        seen.append(((candle.ts - T0) // HOUR, candle.symbol))
    assert seen == [
        (0, "AAA/USD"), (1, "AAA/USD"), (1, "BBB/USD"), (2, "AAA/USD"), (2, "BBB/USD"), (3, "BBB/USD"),
        (4, "AAA/USD"), (4, "BBB/USD"), (5, "AAA/USD"), (5, "BBB/USD"), (6, "AAA/USD"), (7, "AAA/USD"),
        (7, "BBB/USD"),
    ]
    assert feed.symbols == ["AAA/USD", "BBB/USD"]
    assert feed.timeframe_ms == HOUR
    assert feed.total_bars == 13


def test_equal_timestamps_follow_the_given_symbol_order(two_symbols: dict) -> None:
    feed = ReplayFeed({"BBB/USD": two_symbols["BBB/USD"], "AAA/USD": two_symbols["AAA/USD"]})
    first_common = [c.symbol for c in feed.iter_candles() if c.ts == T0 + HOUR]
    assert first_common == ["BBB/USD", "AAA/USD"]


def test_replay_candles_carry_the_file_values(two_symbols: dict) -> None:
    candles = list(ReplayFeed(two_symbols).iter_candles())
    assert candles[2] == Candle("BBB/USD", T0 + HOUR, 501.0, 502.0, 500.0, 501.5, 2.0)


def test_replay_order_and_candle_by_index_give_what_iter_candles_hands_out(two_symbols: dict) -> None:
    """A backtest takes the replay's candles by index (order, candle): the same candles in the same order, with and
    without gaps and later starts, and in the given symbol order at equal times."""
    same_times = {"BBB/USD": two_symbols["BBB/USD"], "CCC/USD": two_symbols["BBB/USD"]}
    for series in (two_symbols, same_times, {"BBB/USD": two_symbols["BBB/USD"], "AAA/USD": two_symbols["AAA/USD"]}):
        feed = ReplayFeed(series)
        rows = [0] * len(series)
        by_index = []
        for k in feed.order():
            by_index.append(feed.candle(k, rows[k]))
            rows[k] += 1
        assert by_index == list(ReplayFeed(series).iter_candles())
    assert ReplayFeed(same_times).order() == bytes([0, 1] * 6)
    assert ReplayFeed(two_symbols, max_bars=3).order() == bytes([0, 0, 1, 0, 1, 1])


def test_replay_honours_max_bars_per_symbol(two_symbols: dict) -> None:
    feed = ReplayFeed(two_symbols, max_bars=3)
    candles = list(feed.iter_candles())
    assert [c.symbol for c in candles].count("AAA/USD") == 3
    assert [c.symbol for c in candles].count("BBB/USD") == 3
    assert max(c.ts for c in candles if c.symbol == "BBB/USD") == T0 + 3 * HOUR
    assert feed.total_bars == 6


async def test_replay_at_speed_zero_never_sleeps(two_symbols: dict) -> None:
    clock = RecordingClock()
    feed = ReplayFeed(two_symbols, clock, speed=0)
    candles = [c async for c in feed.candles()]
    assert candles == list(ReplayFeed(two_symbols).iter_candles())
    assert clock.sleeps == []
    assert clock.now_ms() == T0 + 8 * HOUR


async def test_paced_replay_sleeps_once_per_bar_time(two_symbols: dict) -> None:
    clock = RecordingClock()
    feed = ReplayFeed(two_symbols, clock, speed=4.0)
    times = []
    async for candle in feed.candles():
        times.append(candle.ts)
    # 8 distinct bar times (hours 0..7): a pause of 1/speed between consecutive ones, none before the first.
    assert clock.sleeps == [0.25] * 7
    assert len(times) == 13


async def test_closing_a_replay_stops_it(two_symbols: dict) -> None:
    feed = ReplayFeed(two_symbols, RecordingClock(), speed=10.0)
    got = []
    async for candle in feed.candles():
        got.append(candle)
        if len(got) == 3:
            await feed.close()
    assert len(got) == 3


async def test_replay_of_the_sample_files_yields_to_the_loop_now_and_then() -> None:
    series = {"BTC/USD": load_csv(SAMPLES / "BTC-USD_1h_2020-2023.csv.gz"),
              "ETH/USD": load_csv(SAMPLES / "ETH-USD_1h_2020-2023.csv.gz")}
    feed = ReplayFeed(series, SimClock())
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    turns = 0
    count = 0
    last = 0
    async for candle in feed.candles():
        assert candle.ts >= last
        last = candle.ts
        count += 1
    task.cancel()
    assert count == 70_116
    # The loop got a turn every YIELD_EVERY candles: neither starved nor handed the loop on every bar.
    assert turns == count // YIELD_EVERY


def test_replay_rejects_mixed_timeframes(tmp_path: Path) -> None:
    hourly = load_csv(write_series(tmp_path, "A_1h.csv", [0, 1, 2], 10.0))
    two_hourly = load_csv(write_series(tmp_path, "B_2h.csv", [0, 2, 4], 10.0))
    with pytest.raises(ValueError, match="different timeframes: A 1h, B 2h"):
        ReplayFeed({"A": hourly, "B": two_hourly})


# --- simulated market -------------------------------------------------------------------------------------------

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "DOGE/USDT"]


def live(seed: int, n: int, symbols: list[str] = SYMBOLS, tf: int = MINUTE) -> list[Candle]:
    feed = SimulatedFeed(symbols, tf, seed=seed, clock=SimClock(), speed=0, start_ts=START, max_bars=n)
    return list(feed.iter_candles())


def closes(candles: list[Candle], symbol: str) -> list[float]:
    return [c.close for c in candles if c.symbol == symbol]


def log_returns(prices: list[float]) -> list[float]:
    return [math.log(b / a) for a, b in zip(prices, prices[1:])]


def test_simulated_market_is_deterministic_per_seed() -> None:
    a = live(7, 300)
    assert a == live(7, 300)
    assert len(a) == 300 * len(SYMBOLS)
    other = live(8, 300)
    assert [c.close for c in other] != [c.close for c in a]


def test_simulated_prices_start_where_the_symbol_trades() -> None:
    first = {c.symbol: c.open for c in live(3, 1)}
    assert first == {"BTC/USDT": 60_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0, "DOGE/USDT": 100.0}


def test_every_simulated_bar_is_consistent_and_plausible() -> None:
    feed = SimulatedFeed(SYMBOLS, MINUTE, seed=11, clock=SimClock(), speed=0, start_ts=START, max_bars=2000)
    bars = feed.history(500) + list(feed.iter_candles())
    assert len(bars) == 2500 * len(SYMBOLS)
    previous: dict[str, Candle] = {}
    for c in bars:
        assert 0 < c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high, c
        assert c.volume > 0, c
        if c.symbol in previous:
            prev = previous[c.symbol]
            assert c.ts == prev.ts + MINUTE
            assert c.open == prev.close  # no jumps between bars: the next bar opens at the last close
        previous[c.symbol] = c
    start = {"BTC/USDT": 60_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0, "DOGE/USDT": 100.0}
    for sym, p0 in start.items():
        prices = [c.close for c in bars if c.symbol == sym]
        assert 0.6 * p0 < min(prices) and max(prices) < 1.4 * p0, sym  # 2500 minutes: no absurd levels
    btc_volume = statistics.mean(c.volume for c in bars if c.symbol == "BTC/USDT")
    assert 5 < btc_volume < 100  # BTC per minute on a large exchange


def test_btc_and_eth_returns_are_correlated() -> None:
    for seed in (1, 7, 42):
        candles = live(seed, 1500)
        btc = log_returns(closes(candles, "BTC/USDT"))
        eth = log_returns(closes(candles, "ETH/USDT"))
        doge = log_returns(closes(candles, "DOGE/USDT"))
        assert 0.6 <= statistics.correlation(btc, eth) <= 0.85, seed
        assert 0.4 <= statistics.correlation(btc, doge) <= 0.8, seed


def regime_run(seed: int, n: int) -> tuple[list[str], list[float]]:
    """Regime of each bar and BTC's log return over it."""
    market = MarketSimulator(["BTC/USDT", "ETH/USDT"], MINUTE, random.Random(seed))
    regimes, returns = [], []
    for _ in range(n):
        o, _h, _l, c, _v = market.step()[0]
        regimes.append(market.regime)
        returns.append(math.log(c / o))
    return regimes, returns


def test_every_regime_occurs_within_500_bars() -> None:
    for seed in range(20):
        regimes, _ = regime_run(seed, 500)
        assert set(regimes) == set(REGIMES), seed
        switches = sum(1 for a, b in zip(regimes, regimes[1:]) if a != b)
        assert switches >= 4, seed


def test_regimes_differ_in_volatility_and_drift() -> None:
    regimes, returns = regime_run(7, 500)
    by = {r: [x for g, x in zip(regimes, returns) if g == r] for r in REGIMES}
    vol = {r: statistics.pstdev(xs) for r, xs in by.items()}
    calm = max(vol[r] for r in REGIMES if r != VOLATILE)
    assert vol[VOLATILE] > 2 * calm
    # Over longer runs the trends drift the way they are named.
    regimes, returns = regime_run(7, 5000)
    mean = {r: statistics.mean(x for g, x in zip(regimes, returns) if g == r) for r in (TREND_UP, TREND_DOWN)}
    assert mean[TREND_UP] > 0 > mean[TREND_DOWN]


def test_history_ends_at_the_live_start_and_does_not_change_live_bars() -> None:
    feed = SimulatedFeed(["BTC/USDT", "ETH/USDT"], MINUTE, seed=5, clock=SimClock(), speed=0, start_ts=START + 123,
                         max_bars=50)
    assert feed.start_ts == START  # aligned down to the timeframe
    history = feed.history(100)
    assert len(history) == 200
    assert [c.symbol for c in history[:2]] == ["BTC/USDT", "ETH/USDT"]
    assert history[0].ts == START - 100 * MINUTE
    assert history[-1].ts == START - MINUTE
    assert feed.history(300)[-200:] == history  # more history only reaches further back
    bars = feed.iter_candles()
    first_live = next(bars)
    assert first_live.ts == START
    assert first_live.open == history[-2].close  # BTC: the warm-up leads straight into the live bars
    # Asking for history leaves the live market exactly as it is without it.
    assert [first_live, *bars] == live(5, 50, ["BTC/USDT", "ETH/USDT"])


async def test_simulated_feed_paces_with_the_clock_and_advances_it() -> None:
    clock = RecordingClock()
    feed = SimulatedFeed(["BTC/USDT", "ETH/USDT"], MINUTE, seed=7, clock=clock, speed=2.0, start_ts=START,
                         max_bars=5)
    assert clock.now_ms() == START  # where the warm-up history ends
    got = [c async for c in feed.candles()]
    assert len(got) == 10
    assert clock.sleeps == [0.5] * 4  # between bar times, not before the first
    assert clock.now_ms() == START + 5 * MINUTE
    assert got == live(7, 5, ["BTC/USDT", "ETH/USDT"])


async def test_simulated_feed_at_speed_zero_never_sleeps_and_stops_on_close() -> None:
    clock = RecordingClock()
    feed = SimulatedFeed(["BTC/USDT"], MINUTE, seed=7, clock=clock, speed=0, start_ts=START)
    count = 0
    async for _ in feed.candles():
        count += 1
        if count == 1000:
            await feed.close()
    assert count == 1000
    assert clock.sleeps == []
