"""A backtest says when and why its strategy stopped trading, and which rows `--lenient` skipped.

A DRAWDOWN gate that latched refuses every entry to the end of the run (a backtest never pauses and has no
operator to re-arm it): the summary and the JSON report give the refusals by gate with counts, the last entry and
the last closed trade, and since when no entry was sent. Checked against the run's own database. Real `ffe`
subprocesses over a slice of the sample data.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from conftest import BTC_CSV, db_rows, ffe_env, run_ffe, sample_head

ROWS = 2000


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary_line(stdout: str, label: str) -> str:
    m = re.search(rf"^\s*{label}\s+(.+)$", stdout, re.MULTILINE)
    assert m, f"no {label!r} line in:\n{stdout}"
    return m.group(1)


def test_a_latched_drawdown_gate_is_reported_with_when_and_why_trading_stopped(tmp_path):
    (tmp_path / "BTC-USD.csv").write_text("".join(sample_head(BTC_CSV, ROWS)))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD.csv", "--report", "r.json",
                   env=ffe_env(FFE_RISK__MAX_DRAWDOWN_PCT="1"))
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    db = Path(r["database"]) if Path(r["database"]).is_absolute() else tmp_path / r["database"]
    e = r["entries"]

    # refusals by gate, as the run's decisions record them
    rows = db_rows(db, "SELECT reason, ts FROM decisions WHERE action = 'BUY' AND outcome = 'rejected' ORDER BY ts")
    by_gate: dict[str, int] = {}
    for reason, _ in rows:
        code = reason.partition(":")[0]
        by_gate[code] = by_gate.get(code, 0) + 1
    assert e["refused"] == by_gate and by_gate.get("DRAWDOWN", 0) > 0
    sent = db_rows(db, "SELECT ts FROM decisions WHERE outcome = 'submitted' ORDER BY ts")
    assert e["sent"] == len(sent) > 0
    assert e["last_entry"] == iso(sent[-1][0])
    [(closed,)] = db_rows(db, "SELECT MAX(closed_ts) FROM trades")
    assert e["last_trade_closed"] == iso(closed)

    # it stopped: nothing sent after the last entry, and DRAWDOWN refused from then on to the last bar
    stopped = e["stopped"]
    after = [(reason, ts) for reason, ts in rows if ts > sent[-1][0]]
    assert stopped["since"] == iso(after[0][1])
    dd = stopped["refused"]["DRAWDOWN"]
    assert dd["count"] == sum(1 for reason, _ in after if reason.startswith("DRAWDOWN"))
    assert dd["reason"].startswith("DRAWDOWN: value=") and dd["reason"].endswith("limit=1.0")
    assert list(stopped["refused"])[0] == "DRAWDOWN"  # the one that refused most

    out = proc.stdout
    assert summary_line(out, "entries").startswith(f"{e['sent']} sent, {sum(by_gate.values())} refused: DRAWDOWN")
    assert e["last_entry"] in summary_line(out, "last entry")
    line = summary_line(out, "stopped")
    assert line.startswith(f"no entry from {stopped['since']} to the end") and "DRAWDOWN: value=" in line


def test_a_run_that_kept_trading_says_so(tmp_path):
    (tmp_path / "BTC-USD.csv").write_text("".join(sample_head(BTC_CSV, 600)))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD.csv", "--report", "r.json",
                   env=ffe_env(FFE_RISK__MIN_CONFIDENCE="0"))
    assert proc.returncode == 0, proc.stderr
    e = json.loads((tmp_path / "r.json").read_text())["entries"]
    assert e["sent"] > 0 and e["refused"] == {} and e["stopped"] is None
    assert "stopped" not in proc.stdout


def test_lenient_reports_the_rows_it_skipped_with_their_line_numbers(tmp_path):
    lines = sample_head(BTC_CSV, 300)
    lines[5] = "garbage,row\n"  # line 6 of the file
    lines[9] = "1,2,3\n"  # line 10
    (tmp_path / "BTC-USD.csv").write_text("".join(lines))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD.csv", "--lenient", "--report", "r.json")
    assert proc.returncode == 0, proc.stderr
    err = [x for x in proc.stderr.splitlines() if x.startswith("ffe: BTC/USD: 2 bad rows skipped")]
    assert len(err) == 1 and "line 6:" in err[0] and "line 10:" in err[0], proc.stderr
    skipped = summary_line(proc.stdout, "skipped rows")
    assert skipped.startswith("BTC/USD: 2 (line 6:") and "line 10:" in skipped
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["skipped_rows"]["BTC/USD"]["count"] == 2
    assert [x.split(":")[0] for x in r["skipped_rows"]["BTC/USD"]["first"]] == ["line 6", "line 10"]
    assert r["bars"] == 298


def test_lenient_says_the_rows_it_skipped_when_too_few_candles_are_left(tmp_path):
    """A file in descending time order read with --lenient keeps its first row and skips the rest: refused for too
    few candles, the one line says how many rows were skipped and why, with line numbers, not only "1 candle"."""
    head, *rows = sample_head(BTC_CSV, 300)
    (tmp_path / "BTC-USD.csv").write_text("".join([head, *reversed(rows)]))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD.csv", "--lenient")
    assert proc.returncode == 2, proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("ffe: error:")]
    assert "BTC-USD.csv: 1 candle: too few candles" in line, line
    assert "299 bad rows skipped (--lenient); first: line 3:" in line, line
