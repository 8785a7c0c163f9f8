"""`ffe backtest` as a real subprocess on slices of the sample BTC and ETH hourly data: the printed summary, the
JSON report (checked against the run's own database and equity curve), where the run's records go, how
symbols are named, and a ^C in the middle of a run."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import BTC_CSV, ETH_CSV, audit_lines, sample_head, db_rows, db_value, run_ffe, wait_until, ffe_env

ROWS = 3000  # per symbol: ~4 months of hourly bars


def write_slice(src: Path, dst: Path, rows: int) -> Path:
    dst.write_text("".join(sample_head(src, rows)))
    return dst


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("backtest")
    write_slice(BTC_CSV, cwd / "BTC-USD_1h_slice.csv", ROWS)
    write_slice(ETH_CSV, cwd / "ETH-USD_1h_slice.csv", ROWS)
    (cwd / "out").mkdir()
    proc = run_ffe(cwd, "backtest", "BTC-USD_1h_slice.csv", "ETH-USD_1h_slice.csv", "--report", "out/report.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((cwd / "out" / "report.json").read_text())
    return cwd, proc, report


def summary_value(stdout: str, label: str) -> str:
    m = re.search(rf"^\s*{label}\s+(.+)$", stdout, re.MULTILINE)
    assert m, f"no {label!r} line in:\n{stdout}"
    return m.group(1)


def number(text: str) -> float:
    return float(re.match(r"[+-]?[\d,]*\.?\d+", text.strip()).group(0).replace(",", ""))


def test_prints_bars_trades_return_drawdown_sharpe_win_rate_and_fees(backtest):
    _, proc, report = backtest
    out = proc.stdout
    assert out.startswith("backtest "), out  # the summary is stdout; log lines go to stderr
    assert number(summary_value(out, "bars")) == 2 * ROWS == report["bars"]
    trades = summary_value(out, "trades")
    assert number(trades) == report["trades"] > 0
    win_rate = re.search(r"win rate ([\d.]+)%", trades)
    assert win_rate and float(win_rate.group(1)) == pytest.approx(report["win_rate_pct"], abs=0.05)
    assert number(summary_value(out, "return").rstrip("%")) == pytest.approx(report["return_pct"], abs=0.005)
    assert number(summary_value(out, "max drawdown")) == pytest.approx(report["max_drawdown_pct"], abs=0.005)
    assert number(summary_value(out, "sharpe")) == pytest.approx(report["sharpe"], abs=0.005)
    assert summary_value(out, "fees") == f"{report['fees']:,.4f}"  # a fee is often cents: four decimals


def test_report_carries_the_figures_and_the_equity_curve_consistent_with_the_run_database(backtest):
    cwd, _, r = backtest
    for key in ("bars", "trades", "return_pct", "max_drawdown_pct", "sharpe", "win_rate_pct", "fees", "equity_curve",
                "start_equity", "end_equity", "symbols"):
        assert key in r, key
    assert r["symbols"] == ["BTC/USD", "ETH/USD"]  # from the file names: BTC-USD_... is BTC/USD

    db = Path(r["database"]) if Path(r["database"]).is_absolute() else cwd / r["database"]
    trades = db_rows(db, "SELECT pnl FROM trades")
    assert len(trades) == r["trades"]
    wins = sum(1 for (pnl,) in trades if pnl > 0)
    assert r["win_rate_pct"] == pytest.approx(100.0 * wins / len(trades), abs=0.01)
    assert r["fees"] == pytest.approx(db_value(db, "SELECT SUM(fee) FROM fills"), abs=5e-5)
    assert r["return_pct"] == pytest.approx(100.0 * (r["end_equity"] / r["start_equity"] - 1.0), abs=0.001)
    assert {row[0] for row in db_rows(db, "SELECT DISTINCT symbol FROM decisions")} == {"BTC/USD", "ETH/USD"}
    # The same pipeline as a live engine: every proposed entry went through the gates.
    assert db_value(db, "SELECT COUNT(DISTINCT decision_id) FROM gate_results") > 0

    curve = r["equity_curve"]
    assert len(curve) == ROWS  # one point per bar time (thinned only past ~2000 points per step)
    assert all(len(p) == 2 for p in curve)
    ts = [p[0] for p in curve]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert curve[-1][1] == pytest.approx(r["end_equity"], abs=0.01)
    # Max drawdown and Sharpe follow from the curve.
    peak, max_dd, rets, prev = r["start_equity"], 0.0, [], r["start_equity"]
    for _, eq in curve:
        peak = max(peak, eq)
        max_dd = max(max_dd, (peak - eq) / peak)
        rets.append(eq / prev - 1.0)
        prev = eq
    assert r["max_drawdown_pct"] == pytest.approx(100.0 * max_dd, abs=0.01)
    mean = sum(rets) / len(rets)
    sd = math.sqrt(sum((x - mean) ** 2 for x in rets) / (len(rets) - 1))
    assert r["sharpe"] == pytest.approx(mean / sd * math.sqrt(365.25 * 24), abs=0.02)  # hourly bars, annualised


def epoch_numbers(value, path="report") -> list[str]:
    """Where a JSON value holds a number as large as epoch milliseconds (or seconds) of a recent date."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in epoch_numbers(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in epoch_numbers(v, f"{path}[{i}]")]
    return [path] if isinstance(value, int) and not isinstance(value, bool) and value > 900_000_000 else []


def iso_time(text: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_json_report_has_utc_iso_times_and_no_epoch_milliseconds(backtest):
    _, _, r = backtest
    assert epoch_numbers(r) == []
    assert iso_time(r["from"]) == datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert iso_time(r["equity_curve"][0][0]) == datetime(2020, 1, 1, 1, tzinfo=timezone.utc)  # the first close
    for key in ("peak", "trough"):
        iso_time(r["drawdown"][key])


def test_drawdown_dates_cagr_sortino_calmar_and_months_follow_from_the_equity_curve(backtest):
    _, _, r = backtest
    curve = [(iso_time(t), eq) for t, eq in r["equity_curve"]]  # every bar close: not thinned at this length
    start = r["start_equity"]
    peak, peak_at, deepest, at = start, iso_time(r["from"]), 0.0, None
    for t, eq in curve:
        if eq >= peak:
            peak, peak_at = eq, t
        elif (peak - eq) / peak > deepest:
            deepest, at = (peak - eq) / peak, (peak_at, t, peak)
    dd = r["drawdown"]
    assert dd["max_pct"] == r["max_drawdown_pct"] == pytest.approx(100 * deepest, abs=0.01)
    assert (iso_time(dd["peak"]), iso_time(dd["trough"])) == at[:2]
    recovered = next((t for t, eq in curve if t > at[1] and eq >= at[2]), None)
    assert (iso_time(dd["recovered"]) if dd["recovered"] else None) == recovered
    assert dd["duration_days"] == pytest.approx(((recovered or curve[-1][0]) - at[0]).total_seconds() / 86400,
                                                abs=0.01)
    years = (curve[-1][0] - iso_time(r["from"])).total_seconds() / (365.25 * 86400)
    cagr = (r["end_equity"] / start) ** (1 / years) - 1
    assert r["cagr_pct"] == pytest.approx(100 * cagr, abs=0.01)
    assert r["calmar"] == pytest.approx(cagr / deepest, abs=0.01)
    rets = [b / a - 1 for a, b in zip([start] + [eq for _, eq in curve], [eq for _, eq in curve])]
    downside = math.sqrt(sum(min(x, 0) ** 2 for x in rets) / len(rets))
    assert r["sortino"] == pytest.approx(sum(rets) / len(rets) / downside * math.sqrt(365.25 * 24), abs=0.02)
    # Each month's return is its last close against the month before's: together they make the run's return.
    month_end = {}
    for t, eq in curve:
        month_end[(t - timedelta(hours=1)).strftime("%Y-%m")] = eq  # by the bar's open time
    assert list(r["monthly_returns_pct"]) == list(month_end)
    prev = start
    for month, eq in month_end.items():
        assert r["monthly_returns_pct"][month] == pytest.approx(100 * (eq / prev - 1), abs=0.01), month
        prev = eq
    assert math.prod(1 + m / 100 for m in r["monthly_returns_pct"].values()) == pytest.approx(
        1 + r["return_pct"] / 100, abs=1e-4)


def test_per_symbol_exit_and_buy_and_hold_tables_agree_with_the_database_and_the_files(backtest):
    cwd, _, r = backtest
    db = cwd / r["database"]
    for symbol in r["symbols"]:
        pnls = [pnl for (pnl,) in db_rows(db, "SELECT pnl FROM trades WHERE symbol = ?", (symbol,))]
        row = r["per_symbol"][symbol]
        assert row["trades"] == len(pnls) and row["wins"] == sum(1 for p in pnls if p > 0)
        assert row["pnl"] == pytest.approx(sum(pnls), abs=0.01)
    reasons = dict(db_rows(db, "SELECT reason, COUNT(*) FROM trades GROUP BY reason"))
    assert {k: v["trades"] for k, v in r["exits_by_reason"].items()} == reasons
    # Buy and hold: bought at the first bar's open, sold at the last close, half the equity in each file.
    hold = {}
    for name, symbol in (("BTC-USD_1h_slice.csv", "BTC/USD"), ("ETH-USD_1h_slice.csv", "ETH/USD")):
        rows = (cwd / name).read_text().splitlines()[1:]
        first_open, last_close = float(rows[0].split(",")[1]), float(rows[-1].split(",")[4])
        hold[symbol] = 100 * (last_close / first_open - 1)
        assert r["per_symbol"][symbol]["buy_and_hold_pct"] == pytest.approx(hold[symbol], abs=0.001)
    assert r["buy_and_hold"]["return_pct"] == pytest.approx(sum(hold.values()) / 2, abs=0.001)
    assert r["buy_and_hold"]["strategy_minus_hold_pct"] == pytest.approx(
        r["return_pct"] - r["buy_and_hold"]["return_pct"], abs=0.001)


def test_the_printed_report_shows_the_tables_and_readable_dates(backtest):
    _, proc, r = backtest
    out = proc.stdout
    assert summary_value(out, "period") == f"{r['from']} -> {r['to']}"
    dd = r["drawdown"]
    assert f"peak {dd['peak']}, trough {dd['trough']}" in summary_value(out, "max drawdown")
    assert summary_value(out, "recovered").startswith(f"{dd['recovered']}, " if dd["recovered"] else "no, ")
    assert f"CAGR {r['cagr_pct']:+.2f}%" in summary_value(out, "return")
    assert f"sortino {r['sortino']:.2f}" in summary_value(out, "sharpe")
    assert number(summary_value(out, "buy and hold")) == pytest.approx(r["buy_and_hold"]["return_pct"], abs=0.005)
    for symbol, row in r["per_symbol"].items():
        cells = summary_value(out, re.escape(symbol)).split()
        assert int(cells[0]) == row["trades"] and cells[-1] == f"{row['buy_and_hold_pct']:+.2f}%"
    for reason, row in r["exits_by_reason"].items():
        assert int(summary_value(out, reason).split()[0]) == row["trades"]
    year = summary_value(out, "2020").split()
    assert [float(x) for x in year[:-1]] == [round(v, 2) for v in r["monthly_returns_pct"].values()]
    assert float(year[-1]) == pytest.approx(r["yearly_returns_pct"]["2020"], abs=0.005)
    assert not re.search(r"\b1[5-9]\d{11}\b", out)  # no epoch milliseconds


def test_the_run_records_in_a_folder_of_its_own_never_in_the_live_database(backtest):
    cwd, proc, r = backtest
    db = cwd / r["database"]
    audit = cwd / r["audit"]
    assert db.parent.parent == cwd / "data" / "backtests"
    assert audit.parent.parent == cwd / "logs" / "backtests"
    assert db.parent.name == audit.parent.name == r["run_id"]
    assert not (cwd / "data" / "ffe.db").exists() and not (cwd / "logs" / "audit.jsonl").exists()
    assert db_value(db, "PRAGMA integrity_check") == "ok"
    records = audit_lines(audit)
    seqs = [x["seq"] for x in records]
    assert seqs == sorted(set(seqs))
    assert sum(1 for x in records if x["event"] == "position_closed") == r["trades"]
    assert [row[0] for row in db_rows(db, "SELECT seq FROM events ORDER BY seq")] == seqs


def test_a_finished_run_has_the_decision_indexes_and_a_lookup_by_decision_uses_them(backtest):
    # The run builds them when it ends (store.defer_decision_indexes): the same definitions as a live database's.
    cwd, _, r = backtest
    db = cwd / r["database"]
    indexes = dict(db_rows(db, "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    assert indexes["votes_decision"] == "CREATE INDEX votes_decision ON votes (decision_id)"
    assert indexes["gate_results_decision"] == "CREATE INDEX gate_results_decision ON gate_results (decision_id)"
    did = db_value(db, "SELECT decision_id FROM gate_results WHERE decision_id IS NOT NULL LIMIT 1")
    for table, index in (("votes", "votes_decision"), ("gate_results", "gate_results_decision")):
        plan = " ".join(str(row[-1]) for row in db_rows(db, f"EXPLAIN QUERY PLAN SELECT * FROM {table} "
                                                            "WHERE decision_id = ?", (did,)))
        assert f"USING INDEX {index}" in plan, plan
    assert db_value(db, "SELECT COUNT(*) FROM gate_results WHERE decision_id = ?", (did,)) > 0


def test_symbol_eq_file_names_the_symbol_and_each_run_gets_its_own_folder(backtest):
    cwd, _, first = backtest
    write_slice(BTC_CSV, cwd / "prices.csv", 600)
    proc = run_ffe(cwd, "backtest", "XBT/EUR=prices.csv", "--report", "second.json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((cwd / "second.json").read_text())
    assert r["symbols"] == ["XBT/EUR"] and r["bars"] == 600
    assert "XBT/EUR" in proc.stdout
    assert r["run_id"] != first["run_id"]
    assert {p.name for p in (cwd / "data" / "backtests").iterdir()} == {first["run_id"], r["run_id"]}
    assert {row[0] for row in db_rows(cwd / r["database"], "SELECT DISTINCT symbol FROM decisions")} == {"XBT/EUR"}


def test_ctrl_c_stops_a_backtest_within_a_flush_and_keeps_consistent_records(tmp_path, spawn_ffe):
    # Both whole sample files (70,116 bars, read compressed): seconds of work, so the ^C lands in the middle of the run.
    p = spawn_ffe(tmp_path, "backtest", BTC_CSV, ETH_CSV)
    wait_until(lambda: "engine started" in p.stderr, what="the backtest to start")
    p.send(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    line = [x for x in p.stderr.splitlines() if "interrupted" in x]
    assert line, p.stderr
    m = re.search(r"backtest (\S+) interrupted; its records so far are in (\S+) and (\S+)$", line[0])
    assert m, line[0]
    run_id, db, audit = m.group(1), tmp_path / m.group(2), tmp_path / m.group(3)
    assert run_id in str(db) and db.exists() and audit.exists()
    bars = int(re.search(r"engine stopped\s+bars=(\d+)", p.stderr).group(1))
    assert 0 < bars < 70_116
    assert p.stdout == ""  # no summary for a run that did not finish
    assert db_value(db, "PRAGMA integrity_check") == "ok"
    records = audit_lines(audit)
    assert [row[0] for row in db_rows(db, "SELECT seq FROM events ORDER BY seq")] == [x["seq"] for x in records]
    assert db_value(db, "SELECT COUNT(*) FROM decisions") == sum(1 for x in records if x["event"] == "decision") > 0
    # The writer process is gone with the run.
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, str(db.name))
                and _cmdline_has(pid, run_id)]


def test_more_ctrl_c_while_a_backtest_closes_its_records_cut_nothing_short(tmp_path, spawn_ffe):
    """A terminal sends ^C in bursts, and an operator presses it again while the run closes its records: the presses
    after the first change nothing (none interrupts the close half way: a writer waiting for the rest of a frame
    would wait for ever); the run ends as after one, exit 130, its records whole."""
    p = spawn_ffe(tmp_path, "backtest", "--records", "full", BTC_CSV, ETH_CSV)
    wait_until(lambda: "engine started" in p.stderr, what="the backtest to start")
    time.sleep(0.3)
    p.send(signal.SIGINT)
    deadline = time.monotonic() + 2.0
    while p.alive() and time.monotonic() < deadline:
        p.send(signal.SIGINT)
        time.sleep(0.002)
    assert p.wait(timeout=60) == 130, p.stderr
    lines = [x for x in p.stderr.splitlines() if "[info" not in x and x.strip()]
    assert len(lines) == 1 and "interrupted; its records so far are in" in lines[0], p.stderr
    db = tmp_path / re.search(r"are in (\S+) and", lines[0]).group(1)
    assert db_value(db, "PRAGMA integrity_check") == "ok"


def _has_open(pid: int, name: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_ctrl_c_while_a_backtest_reads_its_files_says_so_in_one_line(tmp_path, spawn_ffe):
    p = spawn_ffe(tmp_path, "backtest", BTC_CSV, ETH_CSV, env=ffe_env(FFE_BACKTEST__CACHE_MB="0"))
    wait_until(lambda: _has_open(p.pid, Path(BTC_CSV).name) or not p.alive(), interval=0.002, what="the file read")
    p.send(signal.SIGINT)
    assert p.wait(timeout=30) == 130
    lines = [x for x in p.stderr.splitlines() if "[info" not in x and x.strip()]
    assert lines == ["ffe: backtest interrupted while it read its files: nothing written"], p.stderr
    assert not (tmp_path / "data" / "backtests").exists()


def test_a_ctrl_c_taken_before_the_command_began_says_it_was_interrupted_in_one_line(tmp_path, capsys,
                                                                                      monkeypatch):
    """A ^C while ffe's modules were still loading is held from its first step and handed back to the command as it
    begins: exit 130 with one line, as any ^C, not silence."""
    from ffe_cli.entry import EarlySignals
    from ffe_cli.main import main

    monkeypatch.chdir(tmp_path)
    early = EarlySignals()
    early.received.append(signal.SIGINT)  # as its handler records a ^C
    assert main(["backtest", "--list"], early=early) == 130
    assert capsys.readouterr().err == "ffe: interrupted\n"


def test_ctrl_c_once_the_run_is_done_cuts_nothing_short(tmp_path, spawn_ffe):
    """The run done, what is left is to say what it did: a ^C then (the report written into a pipe nobody reads
    yet) is ignored; the summary and the report are whole, exit 0."""
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    report = tmp_path / "report.fifo"
    os.mkfifo(report)
    p = spawn_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "--records", "summary", "--report", str(report))
    wait_until(lambda: "backtest " in p.stdout or not p.alive(), timeout=60, what="the summary")
    for _ in range(5):
        p.send(signal.SIGINT)
        time.sleep(0.05)
    # The report is written only now, its reader come (should ffe have gone, a writer of the test's own ends the wait).
    unblock = threading.Timer(30.0, lambda: os.close(os.open(report, os.O_WRONLY | os.O_NONBLOCK)))
    unblock.start()
    try:
        with open(report) as f:
            text = f.read()
    finally:
        unblock.cancel()
    assert p.wait(timeout=30) == 0, p.stderr
    assert json.loads(text)["bars"] == 300
    assert "interrupted" not in p.stderr and "Traceback" not in p.stderr


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_a_file_too_short_to_annualise_its_move_is_reported_without_a_cagr(tmp_path):
    """Two hourly candles, the price tripled: its CAGR is beyond a float. The report says so (no value, "-"), not a
    traceback at the end of the run."""
    (tmp_path / "X-USD_1h.csv").write_text("timestamp,open,high,low,close,volume\n"
                                           "2024-01-01T00:00:00Z,100,100,100,100,1\n"
                                           "2024-01-01T01:00:00Z,300,300,300,300,1\n")
    proc = run_ffe(tmp_path, "backtest", "X-USD_1h.csv", "--records", "summary", "--report", "r.json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["buy_and_hold"]["cagr_pct"] is None and r["buy_and_hold"]["return_pct"] == 200.0
    assert "buy and hold" in proc.stdout.lower()


def test_a_gzip_file_is_read_directly_and_names_its_symbol(tmp_path):
    (tmp_path / "ETH-USD_1h_head.csv.gz").write_bytes(gzip.compress("".join(sample_head(ETH_CSV, 300)).encode()))
    proc = run_ffe(tmp_path, "backtest", "ETH-USD_1h_head.csv.gz", "--report", "r.json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["symbols"] == ["ETH/USD"] and r["bars"] == 300


def test_a_thinned_equity_curve_still_ends_at_the_last_bar_close_and_the_end_equity(tmp_path):
    """Past about 2,000 bars the report's curve keeps every n-th point; its last is the run's last bar close, the
    end equity, whatever n divides."""
    write_slice(BTC_CSV, tmp_path / "BTC-USD_1h.csv", 4_002)
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "--records", "summary", "--report", "r.json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    curve = r["equity_curve"]
    assert 2_000 <= len(curve) <= 2_002
    last_close = iso_time(r["to"]) + timedelta(hours=1)
    assert iso_time(curve[-1][0]) == last_close and curve[-1][1] == pytest.approx(r["end_equity"], abs=0.005)
    assert iso_time(curve[0][0]) == iso_time(r["from"]) + timedelta(hours=1)


def test_gaps_in_a_file_are_reported_with_their_count_and_missing_bars_in_the_summary_and_the_json(tmp_path):
    """A file with holes is accepted, and the run says so: how many gaps and how many bars they leave out, and
    where the longest is."""
    lines = sample_head(BTC_CSV, 400)
    kept = lines[:101] + lines[131:251] + lines[253:]  # 30 bars missing after row 100, 2 after row 250
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(kept))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "--records", "summary", "--report", "r.json")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^\s+gaps\s+BTC/USD: 2 gaps, 32 missing bars \(the longest: 30 after 2020-01-05T03:00:00Z, "
                     r"next candle at 2020-01-06T10:00:00Z\)$", proc.stdout, re.MULTILINE), proc.stdout
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["gaps"] == {"BTC/USD": {"count": 2, "missing_bars": 32, "longest": {
        "missing_bars": 30, "after": "2020-01-05T03:00:00Z", "next": "2020-01-06T10:00:00Z"}}}


def test_a_gap_of_years_is_told_with_its_size_and_place(tmp_path):
    """Rows of 2020, then rows of 2023 in the same file: not an error (files joined from two downloads are data
    with a gap), but the report says it plainly: tens of thousands of missing bars, and between which candles."""
    header, *rows = sample_head(BTC_CSV, 400)
    later = []
    for row in rows[200:]:
        stamp, rest = row.split(",", 1)
        later.append(f"2023{stamp[4:]},{rest}")
    (tmp_path / "BTC-USD_1h.csv").write_text(header + "".join(rows[:200] + later))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "--records", "summary")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^\s+gaps\s+BTC/USD: 1 gap, 26,304 missing bars \(the longest: 26,304 after "
                     r"2020-01-09T07:00:00Z, next candle at 2023-01-09T08:00:00Z\)$", proc.stdout, re.MULTILINE), \
        proc.stdout


def test_a_provider_that_fails_on_every_bar_is_said_in_the_summary_and_the_json(tmp_path):
    """An LLM provider whose endpoint does not answer casts no vote: the run goes on with the others, and says how
    often the provider failed and why, rather than ending as if it had voted."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: every request is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_slice(BTC_CSV, tmp_path / "BTC-USD_1h.csv", 120)
    env = ffe_env(FFE_ENSEMBLE__PROVIDERS='["trend", "momentum", "llm"]',
                  FFE_ENSEMBLE__LLM__BASE_URL=f"http://127.0.0.1:{port}/v1")
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "--records", "trades", "--report", "r.json", env=env)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    failures = r["provider_failures"]
    assert list(failures) == ["llm"] and failures["llm"]["count"] > 50, failures
    assert failures["llm"]["last_error"], failures
    line = summary_value(proc.stdout, "providers")
    assert line.startswith(f"llm failed {failures['llm']['count']:,} times"), line


def test_sharpe_is_annualised_by_the_step_of_the_equity_curve_when_files_close_at_different_minutes(tmp_path):
    """Two hourly files, one closing on the hour and one at half past: the books close a bar every 30 minutes, and
    the ratios are annualised by those steps, not by the files' timeframe."""
    write_slice(BTC_CSV, tmp_path / "BTC-USD_1h.csv", 400)
    rows = sample_head(ETH_CSV, 400)
    shifted = [rows[0]] + [line.replace(":00:00Z", ":30:00Z", 1) for line in rows[1:]]
    (tmp_path / "ETH-USD_1h.csv").write_text("".join(shifted))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "ETH-USD_1h.csv", "--records", "summary",
                   "--report", "r.json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    curve = r["equity_curve"]
    steps = {(iso_time(b[0]) - iso_time(a[0])).total_seconds() for a, b in zip(curve, curve[1:])}
    assert steps == {1800.0}
    rets, prev = [], r["start_equity"]
    for _, eq in curve:
        rets.append(eq / prev - 1.0)
        prev = eq
    mean = sum(rets) / len(rets)
    sd = math.sqrt(sum((x - mean) ** 2 for x in rets) / (len(rets) - 1))
    assert r["sharpe"] == pytest.approx(mean / sd * math.sqrt(365.25 * 48), abs=0.02)


def test_files_that_close_at_different_minutes_measure_correlation_and_var_on_each_files_own_bars(tmp_path):
    """BTC closing on the hour and ETH at half past: each symbol's returns are one per hour of its own (not one per
    30-minute step of the books, half of them 0 and out of phase with the other's), so CORRELATION measures the
    pair's co-movement as it does with both files on the hour, and VAR the same risk."""
    rows = 1500
    write_slice(BTC_CSV, tmp_path / "BTC-USD_1h.csv", rows)
    eth = sample_head(ETH_CSV, rows)
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    (aligned / "ETH-USD_1h.csv").write_text("".join(eth))
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    (shifted / "ETH-USD_1h.csv").write_text("".join([eth[0]] + [x.replace(":00:00Z", ":30:00Z", 1) for x in eth[1:]]))
    measured = {}
    for name in ("aligned", "shifted"):
        proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", f"{name}/ETH-USD_1h.csv", "--records", "full",
                       "--data-dir", f"data-{name}", "--report", f"{name}.json")
        assert proc.returncode == 0, proc.stderr
        (db,) = (tmp_path / f"data-{name}").glob("backtests/*/ffe.db")
        measured[name] = {code: [v for (v,) in db_rows(db, "SELECT value FROM gate_results WHERE code = ? AND "
                                                       "value IS NOT NULL AND value != 0", (code,))]
                          for code in ("CORRELATION", "VAR")}
    for name, gates in measured.items():
        assert len(gates["CORRELATION"]) > 20, (name, gates)
    med = {name: sorted(g["CORRELATION"])[len(g["CORRELATION"]) // 2] for name, g in measured.items()}
    assert med["aligned"] > 0.6 and med["shifted"] > 0.6, med  # the pair moves together however its files close
    var = {name: sorted(g["VAR"])[len(g["VAR"]) // 2] for name, g in measured.items()}
    assert var["shifted"] == pytest.approx(var["aligned"], rel=0.15), var


def test_the_same_market_at_either_end_of_the_price_bounds_trades_the_same(tmp_path):
    """The price bounds (market/bounds.py) keep the arithmetic exact: the BTC sample with its prices written in a
    unit 2**51 times larger (down to 1.7e-12) or 2**26 times smaller (up to 7e11, with the cash scaled the same, or
    no step of the coin could be bought) gives the same trades, the same returns and the same statistics. Outside
    the bounds this failed: near 1e-300 the indicators underflowed and the trades changed, near 1e307 they
    overflowed."""
    header, *rows = sample_head(BTC_CSV, ROWS)
    reports = []
    for scale in (1.0, 2.0 ** -51, 2.0 ** 26):
        lines = [header]
        for row in rows:
            ts, *prices, volume = row.rstrip("\n").split(",")
            lines.append(",".join([ts, *(repr(float(p) * scale) for p in prices), volume]) + "\n")
        (tmp_path / "M-USD_1h.csv").write_text("".join(lines))
        cash = repr(10_000.0 * max(scale, 1.0))
        proc = run_ffe(tmp_path, "backtest", "M-USD_1h.csv", "--records", "summary", "--report", "r.json",
                       env=ffe_env(FFE_VENUE__STARTING_CASH=cash, FFE_BACKTEST__CACHE_MB="0"))
        assert proc.returncode == 0, proc.stderr
        reports.append(json.loads((tmp_path / "r.json").read_text()))
    one = reports[0]
    assert one["trades"] > 20
    for other in reports[1:]:
        for key in ("trades", "wins", "return_pct", "max_drawdown_pct", "sharpe", "sortino", "monthly_returns_pct",
                    "gate_refusals", "entries"):
            assert other[key] == one[key], key
        assert [(r["trades"], r["wins"], r["avg_return_pct"]) for r in other["exits_by_reason"].values()] == \
            [(r["trades"], r["wins"], r["avg_return_pct"]) for r in one["exits_by_reason"].values()]


def test_the_order_of_the_files_does_not_change_the_run(tmp_path):
    """The symbols of a bar are gated one after the other (the first's entry counts against the second's positions,
    concentration, correlation): a backtest takes them in one fixed order, sorted by symbol, whatever the order of
    its files on the command line. One position at a time, so that the symbol gated first takes the place."""
    write_slice(BTC_CSV, tmp_path / "BTC-USD_1h_slice.csv", ROWS)
    write_slice(ETH_CSV, tmp_path / "ETH-USD_1h_slice.csv", ROWS)
    (tmp_path / "config.toml").write_text("[risk]\nmax_open_positions = 1\nmin_confidence = 0.3\n")
    reports = []
    for files in (("BTC-USD_1h_slice.csv", "ETH-USD_1h_slice.csv"), ("ETH-USD_1h_slice.csv", "BTC-USD_1h_slice.csv")):
        name = f"{files[0][:3]}.json"
        proc = run_ffe(tmp_path, "backtest", *files, "--records", "summary", "--report", name)
        assert proc.returncode == 0, proc.stderr
        reports.append(json.loads((tmp_path / name).read_text()))
    btc_first, eth_first = reports
    assert btc_first["trades"] > 0
    for key in ("results_sha256", "return_pct", "trades", "gate_refusals", "max_drawdown_pct"):
        assert btc_first[key] == eth_first[key], (key, btc_first[key], eth_first[key])
