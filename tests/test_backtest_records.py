"""`ffe backtest --records full|trades|summary` as real subprocesses on both whole sample files: the three levels
trade alike, bit for bit, and each leaves only what it promises on disk, within its bytes-per-bar bound."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import forked_ffe
from conftest import BTC_CSV, ETH_CSV, db_rows, ffe_cmd, ffe_env, run_ffe
from ffe_engine import records
from ffe_engine.fmt import iso_ms

LEVELS = ("full", "trades", "summary")
FULL_BYTES_PER_BAR = 600
TRADES_BYTES_PER_BAR = 20
RUN_FIELDS = {"run_id", "records", "database", "audit", "elapsed_s", "bars_per_s"}  # what differs between runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    started = {}
    for level in LEVELS:  # the three at once, each a whole process of its own
        cwd = tmp_path_factory.mktemp(level)
        started[level] = cwd, forked_ffe.Popen(
            ffe_cmd("backtest", str(BTC_CSV), str(ETH_CSV), "--records", level, "--report", "report.json"), cwd=cwd,
            env=ffe_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for level, (cwd, proc) in started.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        report = json.loads((cwd / "report.json").read_text())
        out[level] = {"cwd": cwd, "report": report, "stdout": stdout}
    return out


def written(cwd: Path) -> int:
    """The bytes a run's records take: the data and log directories but for the backtest cache (datacache.py), which
    every run of the same files shares and `backtest.cache_mb` bounds."""
    cache = cwd / "data" / "cache"
    return sum(p.stat().st_size for d in ("data", "logs") for p in (cwd / d).rglob("*")
               if p.is_file() and cache not in p.parents)


class Ids:
    """Order and decision ids by order of first appearance: each run numbers them under a prefix of its own."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, x):
        if isinstance(x, str) and (x.startswith("ffe-") or (x[:1] == "d" and x[1:].isalnum() and len(x) == 13)):
            return self.seen.setdefault(x, f"id{len(self.seen)}")
        return x


def books(db: Path) -> dict[str, list]:
    ids = Ids()
    tables = {
        "orders": "SELECT client_order_id, decision_id, symbol, side, type, quantity, price, reduce_only, reason, "
                  "status, filled, average, fee, created_ts, updated_ts, error, fee_base FROM orders "
                  "ORDER BY created_ts, rowid",
        "fills": "SELECT client_order_id, symbol, side, quantity, price, fee, ts, fee_base FROM fills ORDER BY id",
        "trades": "SELECT * FROM trades ORDER BY id",
        "positions": "SELECT * FROM positions ORDER BY symbol",
        "provider_scores": "SELECT * FROM provider_scores ORDER BY rowid",
        "kv": "SELECT key, value FROM kv WHERE key IN ('equity_curve', 'weights', 'gate_refusals') ORDER BY key",
    }
    return {name: [tuple(ids(x) for x in row) for row in db_rows(db, sql)] for name, sql in tables.items()}


def test_every_level_reports_the_same_run_bit_for_bit(runs):
    full = {k: v for k, v in runs["full"]["report"].items() if k not in RUN_FIELDS}
    assert full["trades"] > 100 and full["bars"] == 70_116
    assert full["gate_refusals"], "the sample run has refused entries"
    for level in ("trades", "summary"):
        other = {k: v for k, v in runs[level]["report"].items() if k not in RUN_FIELDS}
        assert other == full, level  # results_sha256: every trade, the equity at every bar, the weights, exactly


def test_full_and_trades_records_hold_the_same_orders_fills_trades_equity_and_weights(runs):
    full = books(runs["full"]["cwd"] / runs["full"]["report"]["database"])
    trades = books(runs["trades"]["cwd"] / runs["trades"]["report"]["database"])
    assert len(full["orders"]) >= 2 * runs["full"]["report"]["trades"] and full["fills"]
    curve = records.unpacked_value(json.loads(dict(full["kv"])["equity_curve"]))
    assert len(curve["equity"]) == len(curve["steps"]) + 1 == 35_058  # one point per bar close of the two files
    assert curve["ts0"] == 1_577_836_800_000 and set(curve["steps"]) >= {3_600_000}
    assert json.loads(dict(full["kv"])["gate_refusals"]) == runs["full"]["report"]["gate_refusals"]
    assert trades == full


def test_the_weight_history_of_a_trades_run_is_the_full_runs_weights_events(runs):
    db = runs["trades"]["cwd"] / runs["trades"]["report"]["database"]
    history = records.unpacked_value(json.loads(db_rows(db, "SELECT value FROM kv WHERE key = 'weight_history'")[0][0]))
    full = runs["full"]
    events = [r for r in records.read_lines(full["cwd"] / full["report"]["audit"]) if b'"event":"weights"' in r]
    assert len(history) == len(events) > 100
    assert [[w, why] for _, w, why in history] == [[json.loads(e)["weights"], json.loads(e)["reason"]]
                                                   for e in events]


def test_audit_show_tells_a_decision_of_a_full_run_from_its_compact_records(runs):
    full = runs["full"]
    db = full["cwd"] / full["report"]["database"]
    did, seq = db_rows(db, "SELECT decision_id, event_seq FROM decisions WHERE outcome = 'submitted' "
                           "ORDER BY ts DESC LIMIT 1")[0]
    assert records.is_compact(db_rows(db, "SELECT data FROM events WHERE seq = ?", (seq,))[0][0])
    line = next(r for r in records.read_lines(full["cwd"] / full["report"]["audit"]) if f'"seq":{seq},'.encode() in r)
    record = json.loads(line)
    proc = run_ffe(full["cwd"], "audit", "show", did, "--json", "--data-dir", str(db.parent))
    assert proc.returncode == 0, proc.stderr
    story = json.loads(proc.stdout)
    assert story["recorded"] == record["ts"] and story["sizing"] == record["sizing"] and story["sizing"]
    assert [(v["provider"], v["action"], v["confidence"], v["weight"], v["reason"]) for v in story["votes"]] == [
        (v["provider"], v["action"], v["confidence"], v["weight"], v["reason"]) for v in record["votes"]]
    assert [g["code"] for g in story["gates"]] == [g["code"] for g in record["gates"]] and story["orders"]


def test_audit_show_of_a_trades_run_tells_a_decision_s_orders_fills_and_trade_by_either_id(runs):
    """A trades run keeps no decision records (votes, gates) but keeps its orders, fills and trades: asked about a
    decision that placed an order, by the decision's id or by the order's, `ffe audit show` says the run keeps no
    decision record and tells what it kept (exit 0), as `ffe audit tail` of such a run points to; not "the records
    are incomplete", which `ffe doctor` then contradicts."""
    run = runs["trades"]
    db = run["cwd"] / run["report"]["database"]
    did, cid = db_rows(db, "SELECT decision_id, client_order_id FROM orders WHERE decision_id IS NOT NULL "
                           "AND status = 'filled' ORDER BY created_ts LIMIT 1")[0]
    [(trade_id, exit_cid)] = db_rows(db, "SELECT id, exit_client_order_id FROM trades WHERE entry_decision_id = ?",
                                     (did,))
    fills = db_rows(db, "SELECT quantity, price FROM fills WHERE client_order_id = ?", (cid,))
    [(created,)] = db_rows(db, "SELECT created_ts FROM orders WHERE client_order_id = ?", (cid,))
    for ident in (did, cid):
        proc = run_ffe(run["cwd"], "audit", "show", ident, "--data-dir", str(db.parent))
        assert proc.returncode == 0, (ident, proc.stdout + proc.stderr)
        assert "keeps no decision record" in proc.stdout and did in proc.stdout, proc.stdout
        assert cid in proc.stdout and exit_cid in proc.stdout and f"#{trade_id}" in proc.stdout, proc.stdout
        # The order's time is when it was placed, said so: its fill comes a bar later.
        [order_line] = [line for line in proc.stdout.splitlines() if line.startswith(f"order {cid}")]
        assert order_line.endswith(f"filled  placed {iso_ms(created)}"), order_line
        story = json.loads(run_ffe(run["cwd"], "audit", "show", ident, "--json", "--data-dir",
                                   str(db.parent)).stdout)
        assert story["decision_id"] == did and story["records"] == "trades"
        [entry] = [o for o in story["orders"] if o["client_order_id"] == cid]
        assert [(f["quantity"], f["price"]) for f in entry["fills"]] == fills
        assert [t["id"] for t in story["trades"]] == [trade_id]


def test_audit_show_of_a_trades_run_says_it_keeps_no_record_of_a_decision_that_placed_no_order(runs):
    """A trades run numbers its decisions as a full run does but keeps none that placed no order (a HOLD, an entry
    refused): asked about one, `ffe audit show` says the run keeps no record of such decisions (exit 2), not that
    there is no such decision, which a full run of the same data shows."""
    full, run = runs["full"], runs["trades"]
    full_db = full["cwd"] / full["report"]["database"]
    db = run["cwd"] / run["report"]["database"]
    [(first_full,)] = db_rows(full_db, "SELECT decision_id FROM decisions ORDER BY rowid LIMIT 1")
    assert not db_rows(full_db, "SELECT 1 FROM orders WHERE decision_id = ?", (first_full,))
    [(placed,)] = db_rows(db, "SELECT decision_id FROM orders WHERE decision_id IS NOT NULL LIMIT 1")
    first = placed[:-6] + first_full[-6:]
    assert first != placed and not db_rows(db, "SELECT 1 FROM orders WHERE decision_id = ?", (first,))
    shown = run_ffe(full["cwd"], "audit", "show", first_full, "--data-dir", str(full_db.parent))
    assert shown.returncode == 0 and "votes" in shown.stdout, shown.stdout + shown.stderr
    proc = run_ffe(run["cwd"], "audit", "show", first, "--data-dir", str(db.parent))
    assert proc.returncode == 2 and not proc.stdout, proc.stdout + proc.stderr
    assert first in proc.stderr and "trades records keeps no record of a decision that placed no order" in \
        proc.stderr, proc.stderr
    assert "no decision or order" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_audit_tail_of_a_trades_run_says_such_runs_keep_no_audit_trail(runs):
    """Asked for a trades run's audit trail, `ffe audit tail` says the run's record level keeps none (where its
    orders, fills and trades are), not "is --log-dir right?", which sends the user looking for a file that never
    was."""
    run = runs["trades"]
    db = run["cwd"] / run["report"]["database"]
    logs = run["cwd"] / "logs" / "backtests" / db.parent.name
    proc = run_ffe(run["cwd"], "audit", "tail", "--data-dir", str(db.parent), "--log-dir", str(logs))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "trades records" in proc.stderr and "keep no audit trail" in proc.stderr, proc.stderr
    assert "--log-dir right" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_report_providers_of_a_trades_run_says_its_votes_were_not_kept_rather_than_counting_none(runs):
    """A trades run keeps no votes: `ffe report providers` shows its vote, fail and backed columns as not kept
    (`-`, null in JSON) and says why, not as counts of 0 beside hit rates over hundreds of trades; its scores are the
    full run's."""
    reports = {}
    for level in ("full", "trades"):
        run = runs[level]
        data = (run["cwd"] / run["report"]["database"]).parent
        text = run_ffe(run["cwd"], "report", "providers", "--data-dir", str(data))
        assert text.returncode == 0, text.stderr
        as_json = run_ffe(run["cwd"], "report", "providers", "--data-dir", str(data), "--json")
        assert as_json.returncode == 0, as_json.stderr
        reports[level] = text.stdout, {p["provider"]: p for p in json.loads(as_json.stdout)["providers"]}
    full, trades = reports["full"][1], reports["trades"][1]
    assert all(p["votes"] > 0 for p in full.values()), full
    for name, p in trades.items():
        assert (p["votes"], p["failed"], p["backed"], p["last"]["backed"]) == (None, None, None, None), p
        assert (p["scored"], p["hits"]) == (full[name]["scored"], full[name]["hits"]), (p, full[name])
    text = reports["trades"][0]
    assert "not kept" in text and "trades records" in text, text
    assert not any(line.split()[2:5] == ["0", "0", "0"] for line in text.splitlines()[3:] if line.split()), text


def test_the_audit_file_of_a_full_run_is_hash_chained_up_to_its_databases_chain_head(runs):
    full = runs["full"]
    db = full["cwd"] / full["report"]["database"]
    audit = full["cwd"] / full["report"]["audit"]
    proc = run_ffe(full["cwd"], "audit", "verify", "--data-dir", str(db.parent), "--log-dir", str(audit.parent))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n = db_rows(db, "SELECT MAX(seq) FROM events")[0][0]
    assert f"audit trail intact: {n} records, seq 1..{n} in 1 file" in proc.stdout
    assert f"seq {n}, matches" in proc.stdout


def test_trades_level_has_no_decision_records_and_summary_writes_nothing(runs):
    full_db = runs["full"]["cwd"] / runs["full"]["report"]["database"]
    trades_db = runs["trades"]["cwd"] / runs["trades"]["report"]["database"]
    assert db_rows(full_db, "SELECT COUNT(*) FROM decisions")[0][0] > 60_000
    assert db_rows(trades_db, "SELECT COUNT(*) FROM decisions")[0][0] == 0
    assert db_rows(trades_db, "SELECT COUNT(*) FROM votes")[0][0] == 0
    assert db_rows(trades_db, "SELECT COUNT(*) FROM events")[0][0] == 0
    assert runs["trades"]["report"]["audit"] is None and not (runs["trades"]["cwd"] / "logs").exists()
    summary = runs["summary"]
    assert summary["report"]["database"] is None and summary["report"]["audit"] is None
    assert written(summary["cwd"]) == 0
    assert [p.parent.name for p in (summary["cwd"] / "data").rglob("*") if p.is_file()] == ["cache"] * 4
    assert "the report only" in summary["stdout"]



def test_bytes_per_bar_stay_within_each_levels_bound(runs):
    bars = runs["full"]["report"]["bars"]
    assert written(runs["full"]["cwd"]) / bars <= FULL_BYTES_PER_BAR
    assert written(runs["trades"]["cwd"]) / bars <= TRADES_BYTES_PER_BAR


def test_a_backtest_s_records_carry_the_time_of_the_run_to_the_second(runs):
    """Sub-second digits of a run going at thousands of bars a second say nothing, and cost its records bytes that
    vary with the machine's load: a backtest's records are stamped to the second."""
    full = runs["full"]
    stamps = [json.loads(r)["ts"] for r in records.read_lines(full["cwd"] / full["report"]["audit"])]
    assert stamps and all(ts.endswith(".000Z") for ts in stamps), [ts for ts in stamps if not ts.endswith(".000Z")][:5]
