"""A replayed symbol whose data ends before the others' leaves no order in flight: nothing can fill it any more, and
kept, it would count as an entry in flight (MAX_OPEN_POSITIONS, CONCENTRATION, LEVERAGE) and keep its cash from the
other symbols' entries to the end of the run. It is cancelled through the order path after the symbol's last
candle. Real engine, store and paper venue, over real CSV files."""

from __future__ import annotations

import json
import math
from datetime import datetime

from ffe_engine.clock import SimClock

from conftest import BTC_CSV, ETH_CSV, db_rows, ffe_env, run_ffe, sample_head
from pipeline_helpers import BUY, LOOSE_RISK, make_settings, pipelines, replay_feed

_ = pipelines  # a fixture

LONG, SHORT = "AAA/USDT", "OFF/USDT"


def path(n: int, base: float) -> list[float]:
    return [base * (1 + 0.02 * math.sin(i / 6)) for i in range(n)]


async def test_an_entry_sent_on_a_symbol_s_last_candle_is_cancelled_when_its_data_ends(tmp_path, pipelines):
    clock = SimClock()
    settings = make_settings(tmp_path, symbols=[LONG, SHORT], risk=LOOSE_RISK)
    script: dict = {}
    feed = replay_feed(tmp_path, {LONG: path(100, 100.0), SHORT: path(70, 50.0)}, clock)
    p = await pipelines(settings, script=script, feed=feed, clock=clock)
    await p.candles(2 * 69)  # both symbols up to the short one's last bar
    script[SHORT] = (BUY, 0.9)
    await p.candles(2)  # its last candle: an entry is sent at its close
    del script[SHORT]
    [(cid, status)] = await p.rows("SELECT client_order_id, status FROM orders WHERE symbol = ?", (SHORT,))
    assert status == "canceled", status
    assert p.engine.orders.entries_in_flight() == [] and not p.engine.orders.live
    assert p.engine.portfolio.cash == 10_000.0  # nothing held back for it
    await p.candles(10)  # the long symbol goes on, with all its cash
    assert [r for r in await p.rows("SELECT status FROM orders WHERE symbol = ?", (SHORT,))] == [("canceled",)]


def test_a_backtest_whose_files_end_apart_cancels_the_entry_the_short_one_sent_on_its_last_bar(tmp_path):
    """Through `ffe backtest`, with the built-in strategy: the short file is cut at a bar where its strategy enters
    (found by a run of it alone), so its last candle sends an entry; it ends cancelled, not open."""
    (tmp_path / "AAA-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, 1500)))
    header, *rows = sample_head(BTC_CSV, 1500)
    (tmp_path / "OFF-USD_1h.csv").write_text(header + "".join(rows))
    env = ffe_env(**{f"FFE_RISK__{k.upper()}": str(v) for k, v in LOOSE_RISK.items()})
    alone = run_ffe(tmp_path, "backtest", "OFF-USD_1h.csv", "--records", "full", "--report", "alone.json", env=env)
    assert alone.returncode == 0, alone.stderr
    entries = db_rows(database(tmp_path, "alone.json"),
                      "SELECT ts FROM decisions WHERE outcome = 'submitted' ORDER BY ts")
    assert len(entries) >= 3, entries
    cut = entries[2][0]
    kept = [r for r in rows if iso_ms(r.split(",", 1)[0]) <= cut]
    (tmp_path / "OFF-USD_1h.csv").write_text(header + "".join(kept))
    proc = run_ffe(tmp_path, "backtest", "AAA-USD_1h.csv", "OFF-USD_1h.csv", "--records", "full",
                   "--report", "r.json", env=env)
    assert proc.returncode == 0, proc.stderr
    db = database(tmp_path, "r.json")
    last = db_rows(db, "SELECT o.status FROM decisions d JOIN orders o USING (client_order_id) "
                       "WHERE d.symbol = 'OFF/USD' AND d.ts = ?", (cut,))
    assert last == [("canceled",)], last
    assert db_rows(db, "SELECT count(*) FROM orders WHERE status NOT IN ('filled', 'canceled', 'rejected', "
                       "'expired') AND symbol = 'OFF/USD'") == [(0,)]


def database(tmp_path, report: str):
    name = json.loads((tmp_path / report).read_text())["database"]
    return name if name.startswith("/") else tmp_path / name


def iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
