"""A market's history from before 1970 (an index's, a commodity's: negative epoch milliseconds) backtests as the same
candles later in time do, at every level of records, through the backtest cache, the report and the books: the same
trades, the same equity, the times shifted and nothing else. The market clock used to start at 0 (1970) and stand
still until a candle closed after it, so every entry before 1970 was refused as DATA_STALE."""

from __future__ import annotations

import gzip
import json
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

import forked_ffe
from conftest import BTC_CSV, db_rows, ffe_cmd, ffe_env

BARS = 3000
DAY_MS = 86_400_000
# Whole days back, so every bar keeps its hour and weekday: to 1950 (all before 1970), and to 1969-11-01 (crossing it).
SHIFTS = {"1950": (date(2020, 1, 1) - date(1950, 1, 1)).days, "1969": (date(2020, 1, 1) - date(1969, 11, 1)).days}
SAME = ("bars", "trades", "wins", "win_rate_pct", "start_equity", "end_equity", "return_pct", "max_drawdown_pct",
        "fees", "gate_refusals", "sharpe", "per_symbol", "exits_by_reason")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def shifted_file(directory: Path, days: int) -> Path:
    """The sample's first BARS hours, `days` earlier, as a yfinance-shaped file (Date, Adj Close)."""
    with gzip.open(BTC_CSV, "rt") as f:
        lines = [next(f) for _ in range(BARS + 1)]
    out = ["Date,Open,High,Low,Close,Adj Close,Volume"]
    for line in lines[1:]:
        stamp, o, h, lo, c, v = line.strip().split(",")
        when = datetime.fromisoformat(stamp) - timedelta(days=days)
        out.append(f"{when:%Y-%m-%dT%H:%M:%SZ},{o},{h},{lo},{c},{c},{v}")
    path = directory / f"BTC-USD_1h_{days}.csv"
    path.write_text("\n".join(out) + "\n")
    return path


def start(cwd: Path, csv: Path, level: str) -> subprocess.Popen:
    return forked_ffe.Popen(ffe_cmd("backtest", f"BTC/USD={csv}", "--records", level, "--report", "report.json"),
                            cwd=cwd, env=ffe_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(cwd: Path, proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    report = json.loads((cwd / "report.json").read_text())
    report["cwd"], report["stdout"] = cwd, stdout
    return report


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """The original candles at `trades` level, and each shift at every level, two at a time."""
    files = tmp_path_factory.mktemp("files")
    plan = [("2020", "trades", shifted_file(files, 0))]
    for name, days in SHIFTS.items():
        csv = shifted_file(files, days)
        plan += [(name, level, csv) for level in ("full", "trades", "summary")]
    plan.append(("1950 again", "summary", shifted_file(files, SHIFTS["1950"])))  # the cache answers this time
    out = {}
    for i in range(0, len(plan), 2):
        started = []
        for name, level, csv in plan[i:i + 2]:
            cwd = tmp_path_factory.mktemp(f"{name}-{level}".replace(" ", "-"))
            if name == "1950 again":  # the same data directory as the first 1950 run: its cache
                cwd = out[("1950", "summary")]["cwd"]
            started.append(((name, level), cwd, start(cwd, csv, level)))
        for key, cwd, proc in started:
            out[key] = finish(cwd, proc)
    return out


def iso(ms: int) -> str:
    return f"{EPOCH + timedelta(milliseconds=ms):%Y-%m-%dT%H:%M:%SZ}"


@pytest.mark.parametrize("name", sorted(SHIFTS))
@pytest.mark.parametrize("level", ["full", "trades", "summary"])
def test_history_before_1970_trades_as_the_same_candles_later_do(runs, name, level):
    original, run = runs[("2020", "trades")], runs[(name, level)]
    assert original["trades"] > 10
    assert {k: run.get(k) for k in SAME} == {k: original.get(k) for k in SAME}
    first = (date(2020, 1, 1) - timedelta(days=SHIFTS[name])).isoformat()
    assert run["from"].startswith(first) and "period        " + first in run["stdout"]


@pytest.mark.parametrize("name", sorted(SHIFTS))
@pytest.mark.parametrize("level", ["full", "trades"])
def test_the_books_of_a_run_before_1970_hold_the_trades_at_their_own_times(runs, name, level):
    shift = SHIFTS[name] * DAY_MS

    def trades(run: dict) -> list[tuple]:
        return db_rows(run["cwd"] / run["database"],
                       "SELECT symbol, side, quantity, entry_price, exit_price, opened_ts, closed_ts, pnl FROM trades "
                       "ORDER BY id")

    original, run = trades(runs[("2020", "trades")]), trades(runs[(name, level)])
    assert len(run) == len(original) > 10
    assert run == [(*t[:5], t[5] - shift, t[6] - shift, t[7]) for t in original]
    assert any(t[5] < 0 for t in run)  # trades before 1970, at negative epoch milliseconds

    def fills(run: dict) -> list[tuple]:
        return db_rows(run["cwd"] / run["database"], "SELECT side, quantity, price, fee, ts FROM fills ORDER BY id")

    original_fills, run_fills = fills(runs[("2020", "trades")]), fills(runs[(name, level)])
    assert run_fills == [(*f[:4], f[4] - shift) for f in original_fills] and len(run_fills) >= 2 * len(run)


def test_a_second_run_of_history_before_1970_through_the_cache_is_the_same(runs):
    first, again = runs[("1950", "summary")], runs[("1950 again", "summary")]
    assert list((first["cwd"] / "data" / "cache").rglob("*")), "the first run kept the candles in the cache"
    assert {k: again.get(k) for k in SAME + ("from", "to", "results_sha256")} == \
        {k: first.get(k) for k in SAME + ("from", "to", "results_sha256")}
