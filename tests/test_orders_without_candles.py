"""An order in flight at the paper venue fills only on a candle of its symbol. At a start, a symbol no candle will
come for (its replay file ends before the market time, or it is no longer in engine.symbols) has its orders in
flight cancelled through the order path and said in a warning naming it, what to do on this account with it; its
position stays, and `ffe ctl close` of it says why it cannot close it now.

Seen before: a replay file swapped between restarts for one ending before the market time left that symbol's open
take_profit sell and its position as they were, its coins locked, with no word in the log; a symbol removed from
engine.symbols kept its exit order working for days, and `ffe ctl close` answered "its closing order is already
working". Real `ffe` processes over one data directory and real CSV files.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from conftest import BTC_CSV, ETH_CSV, db_rows, ffe_env, run_ffe, sample_head, wait_until

HOUR = 3_600_000
# The sample's first exit: a take_profit sell sent at the close of BTC's 65th bar, filled at the next candle.
EXIT_BAR = 65
OPEN = "status NOT IN ('filled', 'canceled', 'rejected', 'expired')"


def write_config(cwd: Path, symbols: list[str], files: dict[str, Path]) -> None:
    listed = ", ".join(f'"{s}"' for s in symbols)
    mapped = ", ".join(f'"{s}" = "{p}"' for s, p in files.items())
    (cwd / "config.toml").write_text(
        f'[market]\nsource = "replay"\nreplay_files = {{ {mapped} }}\n'
        f'[engine]\nsymbols = [{listed}]\ntimeframe = "1h"\nwarmup_bars = 50\n'
        '[venue]\nquote = "USD"\n[risk]\nmin_confidence = 0.3\n')


def head(cwd: Path, name: str, sample: Path, rows: int) -> Path:
    path = cwd / name
    path.write_text("".join(sample_head(sample, rows)))
    return path


def an_exit_left_working(cwd: Path) -> str:
    """A BTC/USD replay stopped right after the bar its take_profit sell was sent on: the position held, the sell
    open at the paper venue (it fills on BTC's next candle). Its client order id."""
    write_config(cwd, ["BTC/USD"], {"BTC/USD": BTC_CSV, "ETH/USD": ETH_CSV})
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", str(EXIT_BAR))
    assert proc.returncode == 0, proc.stderr
    db = cwd / "data" / "ffe.db"
    [(cid, reason)] = db_rows(db, f"SELECT client_order_id, reason FROM orders WHERE {OPEN}")
    assert reason == "take_profit"
    assert db_rows(db, "SELECT symbol FROM positions") == [("BTC/USD",)]
    return cid


def warnings_naming(stderr: str, symbol: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warn" in line.lower() and symbol in line]


def test_a_replay_file_ending_before_the_market_time_cancels_its_symbol_s_orders_and_says_so(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    cid = an_exit_left_working(tmp_path)
    # Restarted with BTC/USD's file swapped for one that ends before the market time, ETH/USD's going on.
    short = head(tmp_path, "btc-short.csv", BTC_CSV, 40)
    longer = head(tmp_path, "eth.csv", ETH_CSV, 200)
    write_config(tmp_path, ["BTC/USD", "ETH/USD"], {"BTC/USD": short, "ETH/USD": longer})
    proc = run_ffe(tmp_path, "run", "--headless")
    assert proc.returncode == 0, proc.stderr
    assert db_rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
    assert db_rows(db, "SELECT symbol FROM positions") == [("BTC/USD",)]  # the position stays
    said = [line for line in warnings_naming(proc.stderr, "BTC/USD") if cid in line]
    assert said and "market.replay_files" in said[0], proc.stderr


def test_a_symbol_removed_from_a_paper_account_has_its_exit_cancelled_and_ctl_close_says_why(tmp_path, spawn_ffe):
    db = tmp_path / "data" / "ffe.db"
    cid = an_exit_left_working(tmp_path)
    write_config(tmp_path, ["ETH/USD"], {"BTC/USD": BTC_CSV, "ETH/USD": ETH_CSV})
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(),
               timeout=60, what="the control socket")
    wait_until(lambda: "engine started" in engine.stderr or not engine.alive(), timeout=30, what="the start")
    assert engine.alive(), engine.stderr
    assert db_rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
    said = [line for line in warnings_naming(engine.stderr, "BTC/USD") if cid in line]
    assert said and "engine.symbols" in said[0] and "on the exchange" not in said[0], engine.stderr
    close = run_ffe(tmp_path, "ctl", "close", "BTC/USD", "--yes", timeout=60)
    assert close.returncode == 1, close.stdout + close.stderr
    assert "already working" not in close.stderr and "engine.symbols" in close.stderr, close.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM orders WHERE symbol = 'BTC/USD' AND " + OPEN) == [(0,)]
    assert db_rows(db, "SELECT COUNT(*) FROM positions WHERE symbol = 'BTC/USD'") == [(1,)]  # it stays
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.stderr


def test_a_flatten_of_a_symbol_removed_from_a_paper_account_sends_nothing_for_it_and_says_why(tmp_path, spawn_ffe):
    """A flatten treats the position as `ffe ctl close` does: no closing order is journaled for it (none could
    fill), and the flatten's report names it as not closed, with the same reason and what to do."""
    db = tmp_path / "data" / "ffe.db"
    an_exit_left_working(tmp_path)
    write_config(tmp_path, ["ETH/USD"], {"BTC/USD": BTC_CSV, "ETH/USD": ETH_CSV})
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(),
               timeout=60, what="the control socket")
    wait_until(lambda: "engine started" in engine.stderr or not engine.alive(), timeout=30, what="the start")
    assert engine.alive(), engine.stderr
    flatten = run_ffe(tmp_path, "ctl", "flatten", "--yes", timeout=60)
    said = flatten.stdout + flatten.stderr
    assert flatten.returncode == 1, said  # a position it could not close
    assert "unknown symbol" not in said and "BTC/USD" in said and "engine.symbols" in said, said
    assert db_rows(db, "SELECT COUNT(*) FROM orders WHERE symbol = 'BTC/USD' AND reason = 'flatten'") == [(0,)]
    [record] = [r for r in (json.loads(data) for (data,) in db_rows(db, "SELECT data FROM events WHERE event = "
                                                                         "'kill_switch'")) if r["action"] == "flatten"]
    [failed] = record["failed"]
    assert failed["symbol"] == "BTC/USD" and "nothing was sent" in failed["error"], record
    assert "engine.symbols" in failed["error"], record
    assert db_rows(db, "SELECT COUNT(*) FROM positions WHERE symbol = 'BTC/USD'") == [(1,)]  # it stays
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.stderr


def test_a_replay_ended_with_nothing_open_starts_again_without_a_warning_per_symbol(tmp_path):
    """A replay run to its files' end, then started again (a service manager restarting it): no candle comes for any
    symbol, but nothing is open in them either, so nothing is to be cancelled or said; one still holding a position
    is said."""
    short_btc = head(tmp_path, "btc.csv", BTC_CSV, 120)
    short_eth = head(tmp_path, "eth.csv", ETH_CSV, 120)
    write_config(tmp_path, ["BTC/USD", "ETH/USD"], {"BTC/USD": short_btc, "ETH/USD": short_eth})
    first = run_ffe(tmp_path, "run", "--headless")
    assert first.returncode == 0, first.stderr
    db = tmp_path / "data" / "ffe.db"
    held = {s for (s,) in db_rows(db, "SELECT symbol FROM positions")}
    again = run_ffe(tmp_path, "run", "--headless")
    assert again.returncode == 0, again.stderr
    for symbol in ("BTC/USD", "ETH/USD"):
        said = [line for line in warnings_naming(again.stderr, symbol) if "no candle of this symbol" in line]
        assert len(said) == (1 if symbol in held else 0), (symbol, held, said)
