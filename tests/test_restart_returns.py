"""After a restart the VAR and CORRELATION gates measure the return series an uninterrupted run would: one return per
bar and symbol, aligned across the symbols, whatever candle the run before stopped at.

Seen before: a replay stopped after BTC/USD's candle of a bar and before ETH/USD's took BTC's price at the stop as the
previous close of its first warm-up bar (one bogus return), and closed the bar split by the stop twice (two half
returns): for the next correlation window an ETH entry the backtest refused (CORRELATION 0.782) went through (0.2647).
The exchange feed's warm-up split a bar the same way when one symbol's newest candle was not served yet.
Real `ffe backtest` and `ffe run --headless` processes over the sample files, real SQLite databases; the exchange
feed over real ccxt and the fake Binance.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import BTC_CSV, ETH_CSV, db_rows, run_ffe, sample_head
from fake_exchange import FakeBinance, exchange_settings, kline
from ffe_engine.market.exchange import ExchangeFeed
from ffe_engine.venues.ccxt_venue import CcxtVenue
from pipeline_helpers import make_settings, open_pipeline

BARS = 700
STOP_AT = 350  # the run before the restart stops after BTC/USD's candle of this bar, before ETH/USD's
# Windows short enough for the warm-up to hold them whole (warm-up > window + 1 bars): a restarted run then has
# every return an uninterrupted one measures.
RISK = {"var_window": 40, "correlation_window": 40, "min_confidence": 0.3}
WARMUP = 60

GATES = ("SELECT d.ts, d.symbol, d.outcome, g.code, g.value, g.passed FROM gate_results g "
         "JOIN decisions d USING (decision_id) WHERE g.code IN ('VAR', 'CORRELATION') ORDER BY d.ts, d.symbol, g.code")


def write_market(tmp_path) -> None:
    """The sample files' first bars, ETH/USD's starting one bar before BTC/USD's: `--max-bars n` (n bars of every
    symbol) then ends the run after BTC/USD's candle of a bar, before ETH/USD's of the same bar."""
    (tmp_path / "ETH-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, BARS)))
    header, _, *rows = sample_head(BTC_CSV, BARS)
    (tmp_path / "BTC-USD_1h.csv").write_text(header + "".join(rows))
    risk = "".join(f"{k} = {v}\n" for k, v in RISK.items())
    (tmp_path / "config.toml").write_text(
        '[market]\nsource = "replay"\nreplay_files = { "BTC/USD" = "BTC-USD_1h.csv", "ETH/USD" = "ETH-USD_1h.csv" }\n'
        f'[engine]\nsymbols = ["BTC/USD", "ETH/USD"]\ntimeframe = "1h"\nwarmup_bars = {WARMUP}\n'
        f'[venue]\nquote = "USD"\n[risk]\n{risk}')


def backtest_gates(tmp_path) -> list[tuple]:
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "ETH-USD_1h.csv", "--config", "config.toml",
                   "--records", "full", "--report", "bt.json")
    assert proc.returncode == 0, proc.stderr
    name = json.loads((tmp_path / "bt.json").read_text())["database"]
    return db_rows(name if name.startswith("/") else tmp_path / name, GATES)


def test_a_replay_stopped_between_two_symbols_candles_of_a_bar_measures_var_and_correlation_as_the_backtest(
        tmp_path):
    write_market(tmp_path)
    db = tmp_path / "data" / "ffe.db"
    first = run_ffe(tmp_path, "run", "--headless", "--max-bars", str(STOP_AT))
    assert first.returncode == 0, first.stderr
    last = dict(db_rows(db, "SELECT symbol, MAX(ts) FROM decisions GROUP BY symbol"))
    assert last["BTC/USD"] == last["ETH/USD"] + 3_600_000, last  # the bar split: BTC/USD's candle of it seen alone
    second = run_ffe(tmp_path, "run", "--headless")
    assert second.returncode == 0, second.stderr
    live = db_rows(db, GATES)
    expected = backtest_gates(tmp_path)
    after = [r for r in expected if r[0] >= last["ETH/USD"]]
    assert any(r[3] == "CORRELATION" and r[4] is not None for r in after), "no correlation measured after the stop"
    assert any(r[3] == "VAR" and r[4] is not None for r in after), "no VaR measured after the stop"
    differ = [(a, b) for a, b in zip(expected, live) if a != b]
    assert not differ and len(live) == len(expected), f"{len(differ)} differ, first: {differ[:3]}"


# ---------------------------------------------------------------------------------------------------- exchange feed
BTC, ETH = "BTC/USDT", "ETH/USDT"
IDS = {BTC: "BTCUSDT", ETH: "ETHUSDT"}
M = 60_000
T0 = 1_700_000_040_000  # a minute boundary


class StepClock:
    """Market time that moves only when the test moves it, shared with the fake exchange's klines."""

    def __init__(self, now: int) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


class PolledFeed(ExchangeFeed):
    """The exchange feed, its rounds polled by the test (the pipeline's own candles: none)."""

    def iter_candles(self):
        return iter(())


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


def close(symbol: str, ts: int) -> float:
    return kline(IDS[symbol], ts, M)[4]


async def test_an_exchange_warm_up_that_ends_between_two_symbols_candles_of_a_bar_keeps_the_returns_aligned(tmp_path):
    """At the start, ETH's newest closed candle is not served yet (BTC's is): the warm-up ends with BTC a bar ahead,
    and ETH's candle of that bar comes with the first live round. Each symbol's returns are then one per bar, its
    close against its close a bar before, as on an uninterrupted feed: no half bars."""
    async with FakeBinance() as fx:
        clock = StepClock(T0 + 30_000)
        fx.market_clock = clock.now_ms
        reads: list[int] = []

        def eth_behind(rows: list) -> list:
            reads.append(len(rows))
            # The warm-up reads BTC, then ETH: ETH's answer lacks its newest closed candle (the one before the open).
            return rows[:-2] + rows[-1:] if len(reads) == 2 else rows

        fx.klines_edit = eth_behind
        venue = CcxtVenue(exchange_settings(fx), [BTC, ETH], read_attempts=1, sleep=no_wait)
        venue.exchange.enableRateLimit = False
        feed = PolledFeed(venue, [BTC, ETH], M, poll_s=20, clock=clock)
        p = await open_pipeline(make_settings(tmp_path, engine={"warmup_bars": 20}), script={}, feed=feed)
        try:
            assert p.engine.last_bar_ts == {BTC: T0 - M, ETH: T0 - 2 * M}  # the bar split by the warm-up's end
            clock.now += 5 * M
            live = await feed.poll()
            assert [(c.ts, c.symbol) for c in live[:2]] == [(T0 - M, ETH), (T0, BTC)]
            for c in live:
                await p.engine.on_candle(c)
            # Closed so far: every bar up to the one before the newest (T0 + 4M, still open to more candles).
            bars = range(T0 - 12 * M, T0 + 4 * M, M)
            for sym in (BTC, ETH):
                want = [close(sym, t) / close(sym, t - M) - 1.0 for t in bars]
                got = list(p.engine.portfolio.returns[sym])[-len(want):]
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), sym
        finally:
            await p.close()
            await venue.close()
