"""A market stopped inside a bar goes on with that bar's candles not handed out yet, whatever was stamped at the bar's
close, and never goes back.

Seen before: the market time a start took from the records mixed two units in one max: the last decision's bar (its
open time) and the orders', fills', trades' and positions' stamps (the clock, at the close of the bar that made them).
A replay stopped after BTC/USD's candle of a bar filled an order, and before ETH/USD's candle of that bar, started a
bar later: ETH/USD's candle of that bar was never handed out, ETH/USD never decided it, and its next return spanned
two bars. The simulated market whose saved state was lost went on from the last decision's open time: that bar was
generated and decided again (a lost market state is refused by the start now). Real `ffe backtest` and `ffe run
--headless` processes over the sample files, real SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ffe_engine.market.csvdata import load_csv

from conftest import BTC_CSV, ETH_CSV, db_rows, ffe_env, run_ffe, sample_head, starter_config

HOUR, MIN = 3_600_000, 60_000
BARS = 400
# The whole files as warm-up: a restart's indicators are then fed every candle before it, as an uninterrupted run's
# are, and its decisions can be compared with the backtest's to the last digit.
WARMUP = BARS
STOP_AFTER = 150  # the stop falls at the first bar after this many bars of BTC/USD where its candle fills an order

DECISIONS = ("SELECT ts, symbol, action, confidence, tier, strategy, price, quantity, outcome FROM decisions "
             "ORDER BY ts, symbol")
ORDERS = ("SELECT symbol, side, type, quantity, price, reason, status, filled, average, fee, created_ts, updated_ts "
          "FROM orders ORDER BY created_ts, symbol")
FILLS = "SELECT symbol, side, quantity, price, fee, ts FROM fills ORDER BY ts, symbol"
TRADES = ("SELECT symbol, side, quantity, entry_price, exit_price, pnl, fees, reason, opened_ts, closed_ts "
          "FROM trades ORDER BY closed_ts, symbol")


def write_market(cwd: Path) -> None:
    """The sample files' first bars, ETH/USD's starting one bar before BTC/USD's: `--max-bars n` (n bars of every
    symbol) then ends the run after BTC/USD's candle of a bar, before ETH/USD's of the same bar."""
    (cwd / "ETH-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, BARS)))
    header, _, *rows = sample_head(BTC_CSV, BARS)
    (cwd / "BTC-USD_1h.csv").write_text(header + "".join(rows))
    (cwd / "config.toml").write_text(
        '[market]\nsource = "replay"\nreplay_files = { "BTC/USD" = "BTC-USD_1h.csv", "ETH/USD" = "ETH-USD_1h.csv" }\n'
        f'[engine]\nsymbols = ["BTC/USD", "ETH/USD"]\ntimeframe = "1h"\nwarmup_bars = {WARMUP}\napproval = "auto"\n'
        '[venue]\nquote = "USD"\n[risk]\nmin_confidence = 0.3\n')


def backtest_db(cwd: Path) -> Path:
    proc = run_ffe(cwd, "backtest", "BTC-USD_1h.csv", "ETH-USD_1h.csv", "--config", "config.toml",
                   "--records", "full", "--report", "bt.json")
    assert proc.returncode == 0, proc.stderr
    name = json.loads((cwd / "bt.json").read_text())["database"]
    return Path(name) if name.startswith("/") else cwd / name


def test_a_replay_stopped_after_a_fill_between_two_symbols_candles_of_a_bar_decides_that_bar_once_as_the_backtest(
        tmp_path):
    write_market(tmp_path)
    expected = backtest_db(tmp_path)
    btc_first = load_csv(tmp_path / "BTC-USD_1h.csv", symbol="BTC/USD").ts[0]
    # A bar whose BTC/USD candle fills an order: the fill (at that candle's open) is stamped at the candle's close.
    fill = db_rows(expected, "SELECT MIN(ts) FROM fills WHERE symbol = 'BTC/USD' AND ts > ?",
                   (btc_first + STOP_AFTER * HOUR,))[0][0]
    assert fill is not None, "the backtest filled no BTC/USD order to stop at"
    stop = fill - HOUR  # the open of BTC/USD's candle that filled it
    db = tmp_path / "data" / "ffe.db"
    first = run_ffe(tmp_path, "run", "--headless", "--max-bars", str((stop - btc_first) // HOUR + 1))
    assert first.returncode == 0, first.stderr
    last = dict(db_rows(db, "SELECT symbol, MAX(ts) FROM decisions GROUP BY symbol"))
    assert last == {"BTC/USD": stop, "ETH/USD": stop - HOUR}, last  # the bar split: BTC/USD's candle of it seen alone
    assert db_rows(db, "SELECT symbol FROM fills WHERE ts = ?", (fill,)) == [("BTC/USD",)]  # stamped at its close
    second = run_ffe(tmp_path, "run", "--headless")
    assert second.returncode == 0, second.stderr
    eth = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = 'ETH/USD' ORDER BY rowid")]
    assert eth.count(stop) == 1, "ETH/USD's candle of the bar the stop fell in was not decided once after the restart"
    assert eth == sorted(set(eth)), "an ETH/USD bar decided twice, or market time went back"
    for what, sql in (("decisions", DECISIONS), ("orders", ORDERS), ("fills", FILLS), ("trades", TRADES)):
        live, want = db_rows(db, sql), db_rows(expected, sql)
        differ = [(a, b) for a, b in zip(want, live) if a != b]
        assert not differ and len(live) == len(want), (
            f"{what}: {len(live)} against the backtest's {len(want)}, {len(differ)} differ, first: {differ[:2]}")


def test_the_simulated_market_without_its_saved_state_is_refused_not_begun_again_under_the_books(tmp_path):
    """With the market's saved state lost beside the books stored with it, a start does not begin the market again
    (from its seed: another path, the bars after the last decided generated anew): it refuses, naming the record,
    and decides nothing. Even with no order or position yet, the books were stored with a market that is gone."""
    db = tmp_path / "data" / "ffe.db"
    starter_config(tmp_path)
    env = ffe_env(FFE_ENGINE__APPROVAL="manual")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "150", env=env)
    assert proc.returncode == 0, proc.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM orders") == [(0,)]
    decided = db_rows(db, "SELECT symbol, COUNT(*), MAX(ts) FROM decisions GROUP BY symbol ORDER BY symbol")
    assert len(decided) == 2, decided
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DELETE FROM kv WHERE key = 'market'")
    finally:
        conn.close()
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "20", env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "table kv has no key market" in proc.stderr, proc.stderr
    assert db_rows(db, "SELECT symbol, COUNT(*), MAX(ts) FROM decisions GROUP BY symbol ORDER BY symbol") == decided
