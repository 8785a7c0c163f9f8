"""Market time never goes back across a restart, whatever changed in the configuration.

Seen before: only reordering `engine.symbols` (the same two symbols) made the saved market "another market": a
replay started again from its files' first bar (2020-05-05 back to 2020-01-03), 450 bars were decided twice, the
orders stamped "in the future" filled ORDER_RATE's window, and a trade closed before it opened; the simulated
market went back from its market time to the wall clock. Real `ffe run` processes over one data directory, real
SQLite, the sample files.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from conftest import BTC_CSV, ETH_CSV, db_rows, run_ffe, starter_config

HOUR, MIN = 3_600_000, 60_000


def replay_config(cwd: Path, symbols: list[str]) -> None:
    listed = ", ".join(f'"{s}"' for s in symbols)
    (cwd / "config.toml").write_text(
        f'[market]\nsource = "replay"\nreplay_files = {{ "BTC/USD" = "{BTC_CSV}", "ETH/USD" = "{ETH_CSV}" }}\n'
        f'[engine]\nsymbols = [{listed}]\ntimeframe = "1h"\nwarmup_bars = 50\n'
        '[venue]\nquote = "USD"\n[risk]\nmin_confidence = 0.3\n')


def simulated_config(cwd: Path, symbols: list[str]) -> None:
    path = starter_config(cwd)
    listed = ", ".join(f'"{s}"' for s in symbols)
    lines = [f"symbols = [{listed}]" if line.startswith("symbols = ") else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def run(cwd: Path, bars: int) -> None:
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", str(bars))
    assert proc.returncode == 0, proc.stderr


def last_bars(db: Path) -> dict[str, int]:
    return {sym: ts for sym, ts in db_rows(db, "SELECT symbol, MAX(ts) FROM decisions GROUP BY symbol")}


def assert_time_went_on(db: Path) -> None:
    """Each symbol's bars rise (none decided twice, none back in time), every trade closes at or after it opened,
    and the orders are stamped in the order they were made."""
    for (symbol,) in db_rows(db, "SELECT DISTINCT symbol FROM decisions"):
        ts = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = ? ORDER BY rowid", (symbol,))]
        assert ts == sorted(set(ts)), f"{symbol}: a bar decided twice, or market time went back"
    assert db_rows(db, "SELECT id, opened_ts, closed_ts FROM trades WHERE closed_ts < opened_ts") == []
    stamps = [r[0] for r in db_rows(db, "SELECT created_ts FROM orders ORDER BY rowid")]
    assert stamps == sorted(stamps)


def test_a_replay_with_its_symbols_reordered_goes_on_from_where_it_stopped(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    replay_config(tmp_path, ["BTC/USD", "ETH/USD"])
    run(tmp_path, 300)
    before = last_bars(db)
    decided = db_rows(db, "SELECT COUNT(*) FROM decisions WHERE symbol = 'BTC/USD'")[0][0]
    replay_config(tmp_path, ["ETH/USD", "BTC/USD"])  # the same market, listed the other way round
    run(tmp_path, 200)
    assert_time_went_on(db)
    for symbol, last in before.items():
        ts = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = ? ORDER BY rowid", (symbol,))]
        assert ts[ts.index(last) + 1] == last + HOUR  # the next bar, not the files' first one
        assert len(ts) == decided + 200


def test_a_symbol_added_to_a_replay_starts_where_the_market_is_not_at_its_file_s_first_bar(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    replay_config(tmp_path, ["BTC/USD"])
    run(tmp_path, 300)
    [(_, last)] = last_bars(db).items()
    replay_config(tmp_path, ["BTC/USD", "ETH/USD"])
    run(tmp_path, 100)
    assert_time_went_on(db)
    eth = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = 'ETH/USD' ORDER BY rowid")]
    assert eth and eth[0] == last + HOUR, "ETH/USD started before the market's time"


def test_the_simulated_market_with_its_symbols_reordered_goes_on_from_its_market_time(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    simulated_config(tmp_path, ["BTC/USDT", "ETH/USDT"])
    run(tmp_path, 400)  # at speed 0 market time runs hours ahead of the wall clock
    before = last_bars(db)
    simulated_config(tmp_path, ["ETH/USDT", "BTC/USDT"])
    run(tmp_path, 50)
    assert_time_went_on(db)
    for symbol, last in before.items():
        ts = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = ? ORDER BY rowid", (symbol,))]
        assert ts[400] == last + MIN


def test_the_simulated_market_with_a_symbol_removed_goes_on_from_its_market_time(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    simulated_config(tmp_path, ["BTC/USDT", "ETH/USDT"])
    run(tmp_path, 400)
    btc = last_bars(db)["BTC/USDT"]
    simulated_config(tmp_path, ["BTC/USDT"])
    run(tmp_path, 50)
    assert_time_went_on(db)
    ts = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = 'BTC/USDT' ORDER BY rowid")]
    assert ts[400] == btc + MIN


def test_a_saved_market_of_another_source_refuses_the_start_naming_the_key(tmp_path):
    """A simulated market's books and orders are not carried onto a replay of other prices and other times: the
    start is refused (exit 2, one line naming market.source), the database left as it was."""
    db = tmp_path / "data" / "ffe.db"
    simulated_config(tmp_path, ["BTC/USDT", "ETH/USDT"])
    run(tmp_path, 100)
    decisions = db_rows(db, "SELECT COUNT(*) FROM decisions")
    replay_config(tmp_path, ["BTC/USD", "ETH/USD"])
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "50")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert len(errors) == 1 and "market.source" in errors[0], proc.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM decisions") == decisions


def test_a_saved_market_that_cannot_be_read_is_a_damaged_database_never_a_new_path(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    simulated_config(tmp_path, ["BTC/USDT", "ETH/USDT"])
    run(tmp_path, 100)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("UPDATE kv SET value = '{\"version\": 1, \"seed\": 7}' WHERE key = 'market'")
    finally:
        conn.close()
    decisions = db_rows(db, "SELECT COUNT(*) FROM decisions")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "50")
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert len(errors) == 1 and "table kv, key market" in errors[0], proc.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM decisions") == decisions


def test_doctor_fails_a_trade_that_closes_before_it_opens(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    replay_config(tmp_path, ["BTC/USD", "ETH/USD"])
    run(tmp_path, 300)
    assert run_ffe(tmp_path, "doctor").returncode == 0
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        (trade,) = conn.execute("SELECT MIN(id) FROM trades").fetchone()
        assert trade is not None, "the run closed no trade"
        conn.execute("UPDATE trades SET closed_ts = opened_ts - 86400000 WHERE id = ?", (trade,))
    finally:
        conn.close()
    proc = run_ffe(tmp_path, "doctor")
    assert proc.returncode == 1, proc.stdout
    assert f"trade {trade}" in proc.stderr and "before it opened" in proc.stderr, proc.stderr


def test_doctor_names_a_trade_s_times_to_the_millisecond_when_both_fall_in_one_second(tmp_path):
    """A trade closing 400 ms before it opened, within one second: the line tells the two times apart."""
    db = tmp_path / "data" / "ffe.db"
    replay_config(tmp_path, ["BTC/USD", "ETH/USD"])
    run(tmp_path, 300)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        (trade,) = conn.execute("SELECT MIN(id) FROM trades").fetchone()
        assert trade is not None, "the run closed no trade"
        conn.execute("UPDATE trades SET opened_ts = opened_ts - opened_ts % 1000 + 600, "
                     "closed_ts = opened_ts - opened_ts % 1000 + 200 WHERE id = ?", (trade,))
        (opened,) = conn.execute("SELECT opened_ts FROM trades WHERE id = ?", (trade,)).fetchone()
    finally:
        conn.close()
    proc = run_ffe(tmp_path, "doctor")
    assert proc.returncode == 1, proc.stdout
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(opened // 1000))
    assert f"closed at {second}.200Z, before it opened at {second}.600Z" in proc.stderr, proc.stderr


def test_doctor_fails_a_bar_decided_back_in_time(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    replay_config(tmp_path, ["BTC/USD", "ETH/USD"])
    run(tmp_path, 300)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        (decision,) = conn.execute("SELECT decision_id FROM decisions WHERE symbol = 'BTC/USD' "
                                   "ORDER BY rowid DESC LIMIT 1").fetchone()
        conn.execute("UPDATE decisions SET ts = ts - 86400000 WHERE decision_id = ?", (decision,))
    finally:
        conn.close()
    proc = run_ffe(tmp_path, "doctor")
    assert proc.returncode == 1, proc.stdout
    assert f"decision {decision}" in proc.stderr and "BTC/USD" in proc.stderr, proc.stderr


def test_config_check_names_a_saved_market_of_another_source_the_next_start_refuses(tmp_path):
    """`ffe config check` says, as a comment after the configuration (exit 0), the saved market the next start would
    stop on: simulated books under a replay, naming market.source and the start's exit code."""
    simulated_config(tmp_path, ["BTC/USDT", "ETH/USDT"])
    run(tmp_path, 20)
    replay_config(tmp_path, ["BTC/USD", "ETH/USD"])
    proc = run_ffe(tmp_path, "config", "check")
    assert proc.returncode == 0, proc.stderr
    # (the symbols moved to USD too: the books' quote currency, which the start would refuse next, is said after it)
    (comment,) = [line for line in proc.stdout.splitlines() if line.startswith("# ") and "market.source" in line]
    assert comment.endswith("(exit 2)"), proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("# venue.quote = 'USD'"), proc.stdout
