"""`ffe run --headless --max-bars 300` on the simulated market, as a real subprocess: what it records in the
database and the audit file, and what it says on stderr."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from conftest import BTC_CSV, assert_strictly_increasing, audit_lines, db_rows, db_value, ffe_env, run_ffe

BARS = 300
SYMBOLS = ("BTC/USDT", "ETH/USDT")


@pytest.fixture(scope="module")
def headless_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("headless")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", str(BARS), env=ffe_env(FFE_MARKET__SEED=7))
    return cwd, proc


def test_exits_0_and_writes_human_readable_log_lines_to_stderr(headless_run):
    cwd, proc = headless_run
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert any("engine started" in ln for ln in lines), proc.stderr
    assert any("engine stopped" in ln for ln in lines), proc.stderr
    for ln in lines:
        # "2026-01-01T00:00:00.000000Z [info     ] engine started   mode=PAPER ..." - a line for people, not JSON
        assert not ln.lstrip().startswith("{"), ln
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", ln), ln
        assert re.search(r"\[(debug|info|warning|error|critical)\s*\]", ln), ln
    assert re.search(rf"engine stopped\s.*bars={BARS * len(SYMBOLS)}", proc.stderr), proc.stderr


def test_database_holds_decisions_orders_fills_positions_and_trades(headless_run):
    cwd, _ = headless_run
    db = cwd / "data" / "ffe.db"
    assert db_value(db, "PRAGMA integrity_check") == "ok"
    assert db_value(db, "PRAGMA journal_mode") == "wal"

    decisions = db_value(db, "SELECT COUNT(*) FROM decisions")
    assert decisions > 100
    assert {r[0] for r in db_rows(db, "SELECT DISTINCT symbol FROM decisions")} == set(SYMBOLS)
    # Decisions are stored with their context: votes of the providers and, for proposed orders, every gate.
    assert db_value(db, "SELECT COUNT(*) FROM votes") > 0
    submitted = db_rows(db, "SELECT decision_id, client_order_id FROM decisions WHERE outcome = 'submitted'")
    assert submitted, "no decision led to an order"
    for decision_id, cid in submitted:
        assert cid and db_value(db, "SELECT decision_id FROM orders WHERE client_order_id = ?", (cid,)) == decision_id
        codes = [r[0] for r in db_rows(db, "SELECT code FROM gate_results WHERE decision_id = ? ORDER BY position",
                                        (decision_id,))]
        assert codes[:7] == ["ENGINE_STATE", "BREAKER_OPEN", "DATA_STALE", "MIN_CONFIDENCE", "MAX_OPEN_POSITIONS",
                             "POSITION_SIZE", "CONCENTRATION"]

    orders = db_rows(db, "SELECT client_order_id, status, filled, quantity FROM orders")
    assert orders
    fills = db_rows(db, "SELECT client_order_id, quantity, price, fee FROM fills")
    assert fills
    filled_ids = {r[0] for r in orders if r[1] == "filled"}
    assert filled_ids == {f[0] for f in fills}
    assert all(f[1] > 0 and f[2] > 0 and f[3] > 0 for f in fills)  # a quantity, a price and a fee
    # At most the last bar's orders may still be open when the run stops; nothing is left in doubt or new.
    assert {r[1] for r in orders} <= {"filled", "open", "canceled", "rejected"}

    trades = db_rows(db, "SELECT symbol, quantity, entry_price, exit_price, pnl, fees, reason, exit_client_order_id "
                         "FROM trades")
    assert trades, "no round trip was closed in the run"
    for sym, qty, entry, exit_, pnl, fees, reason, exit_cid in trades:
        assert sym in SYMBOLS and qty > 0 and fees > 0
        assert reason in ("signal", "stop_loss", "take_profit")
        assert pnl == pytest.approx((exit_ - entry) * qty - fees, rel=1e-6, abs=1e-6)
        assert exit_cid in filled_ids

    # Positions still open are the net of the fills per symbol.
    net: dict[str, float] = {}
    for sym, side, qty in db_rows(db, "SELECT symbol, side, quantity FROM fills ORDER BY id"):
        net[sym] = net.get(sym, 0.0) + (qty if side == "buy" else -qty)
    positions = {r[0]: r[1] for r in db_rows(db, "SELECT symbol, quantity FROM positions")}
    for sym in SYMBOLS:
        assert positions.get(sym, 0.0) == pytest.approx(net.get(sym, 0.0), abs=1e-9)
    assert db_value(db, "SELECT state FROM engine_state WHERE id = 1") == "RUNNING"


def test_every_audit_line_is_json_with_ts_seq_event_and_mirrors_the_events_table(headless_run):
    cwd, _ = headless_run
    records = audit_lines(cwd / "logs" / "audit.jsonl")
    seqs = [r["seq"] for r in records]
    assert_strictly_increasing(seqs)
    assert seqs[0] >= 1
    for r in records:
        assert isinstance(r["seq"], int)
        ts = datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
        assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0
        assert isinstance(r["event"], str) and r["event"]
    names = {r["event"] for r in records}
    assert {"run", "engine_state", "decision", "order", "fill", "position_closed"} <= names

    by_name = {n: [r for r in records if r["event"] == n] for n in names}
    for d in by_name["decision"]:
        for key in ("decision_id", "symbol", "action", "confidence", "tier", "votes", "failed", "gates", "quantity"):
            assert key in d, key
    for o in by_name["order"]:
        for key in ("client_order_id", "decision_id", "symbol", "side", "type", "quantity", "status", "reason"):
            assert key in o, key
    for f in by_name["fill"]:
        for key in ("client_order_id", "symbol", "side", "quantity", "price", "fee"):
            assert key in f, key
    for p in by_name["position_closed"]:
        for key in ("symbol", "side", "quantity", "entry_price", "exit_price", "pnl", "reason"):
            assert key in p, key
    assert len(by_name["decision"]) == db_value(cwd / "data" / "ffe.db", "SELECT COUNT(*) FROM decisions")

    # The events table holds the same records, seq for seq.
    rows = db_rows(cwd / "data" / "ffe.db", "SELECT seq, event, data FROM events ORDER BY seq")
    assert [r[0] for r in rows] == seqs
    assert [r[1] for r in rows] == [r["event"] for r in records]
    assert [json.loads(r[2]) for r in rows] == records


def test_replays_a_compressed_sample_file_as_it_is(tmp_path):
    (tmp_path / "config.toml").write_text(
        f'[market]\nsource = "replay"\nreplay_files = {{ "BTC/USD" = "{BTC_CSV}" }}\n'
        '[engine]\nsymbols = ["BTC/USD"]\ntimeframe = "1h"\nwarmup_bars = 50\n[venue]\nquote = "USD"\n')
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "120")
    assert proc.returncode == 0, proc.stderr
    rows = db_rows(tmp_path / "data" / "ffe.db", "SELECT ts, price FROM decisions ORDER BY ts")
    assert rows
    # The file's own prices: early 2020 BTC traded between 6,000 and 9,000 dollars.
    assert 1_577_836_800_000 <= rows[0][0] < 1_578_441_600_000  # within its first week
    assert all(6_000 < price < 9_000 for _, price in rows)
