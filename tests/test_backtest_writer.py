"""A backtest's database is written by a child process (sqlwriter.py). These tests hold it to the same records as
the live store, make it fail loudly, keep what it was sent when the engine's process dies, and check that a
backtest run makes no reference cycles (the run keeps the garbage collector at a rare threshold)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import BTC_CSV, ETH_CSV, db_rows, make_settings, sample_head
from ffe_engine import backtest as bt
from ffe_engine import records
from ffe_engine.chain import GENESIS, chained, line_hash
from ffe_engine.clock import WallClock
from ffe_engine.engine import Engine
from ffe_engine.events import DecisionMade, EngineStateChanged, EventBus, OrderEvent
from ffe_engine.model import (Action, ClosedTrade, EngineState, Fill, GateResult, Order, OrderReason, OrderStatus,
                              Position, Side)
from ffe_engine.sqlwriter import WriterError
from ffe_engine.store import FillRecord, Store

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("decisions", "votes", "gate_results", "orders", "fills", "positions", "trades", "kv", "engine_state",
          "provider_scores")


def _decision(i: int, action: Action, gates: list[GateResult] | None = None, failed: list[str] | None = None) -> dict:
    votes = [{"provider": "trend", "action": action, "confidence": 0.61 + i / 1000, "weight": 0.5,
              "reason": f"ema cross {i}", "latency_ms": 0.0},
             {"provider": "momentum", "action": Action.HOLD, "confidence": 0.0, "weight": 0.5,
              "reason": "flat", "latency_ms": 1.25}]
    return {"decision_id": f"d{i:04d}", "symbol": "BTC/USDT", "bar_ts": 1_600_000_000_000 + i * 3_600_000,
            "price": 100.0 + i, "action": action, "confidence": 0.61, "tier": 1, "strategy": "weighted",
            "votes": votes, "failed": failed or [], "gates": [g.as_dict() for g in gates or []],
            "quantity": 0.25 if gates else 0.0, "outcome": "submitted" if gates else "hold", "reason": "",
            "sizing": {"risk_pct": 1.0} if gates else None, "client_order_id": f"ffe-{i}" if gates else None,
            "approval_id": None}


async def _record_a_session(store: Store) -> None:
    """The same writes an engine makes, through a real bus: decisions (HOLD, gated BUY, a failed provider), an
    order journaled then filled with the position and a closed trade, gates checked later, state and key/value."""
    bus = EventBus(WallClock())
    bus.add_sink(store.add_event)
    gates = [GateResult("ENGINE_STATE", EngineState.RUNNING, "RUNNING", True),
             GateResult("POSITION_SIZE", 12.5, 20.0, True, "of equity"),
             GateResult("BREAKER_OPEN", "closed", None, True)]
    for i in range(40):
        if i == 7:
            bus.publish_fields(DecisionMade, _decision(i, Action.BUY, gates))
        elif i == 9:
            bus.publish_fields(DecisionMade, _decision(i, Action.SELL, failed=["llm"]))
        else:
            bus.publish_fields(DecisionMade, _decision(i, Action.HOLD))
    o = Order(client_order_id="ffe-7", symbol="BTC/USDT", side=Side.BUY, quantity=0.25, type="market",
              reason=OrderReason.SIGNAL, venue="paper", decision_id="d0007", created_ts=7, updated_ts=7)
    await store.journal_order(o, {"stop_loss": 95.0})
    bus.publish(OrderEvent(client_order_id="ffe-7", symbol="BTC/USDT", side="buy", quantity=0.25, status="new"))
    # A read between an event and the next flush (the engine reads the store mid-bar, for instance).
    assert await store.get_kv("nothing") is None
    bus.publish(OrderEvent(client_order_id="ffe-7", symbol="BTC/USDT", side="buy", quantity=0.25, status="open"))
    o.status, o.filled, o.average, o.fee = OrderStatus.FILLED, 0.25, 107.0, 0.03
    trades = []
    for n in range(3):
        t = ClosedTrade(symbol="ETH/USDT", side=Side.BUY, quantity=1.0, entry_price=10.0, exit_price=11.0 + n,
                        pnl=0.9 + n, fees=0.1, reason="take_profit", opened_ts=1, closed_ts=2 + n)
        trades.append(t)
        pos = Position(symbol="BTC/USDT", side=Side.BUY, quantity=0.25, entry_price=107.0, opened_ts=8,
                       stop_loss=95.0, take_profit=120.0, entry_decision_id="d0007", fees=0.03)
        scores = [("trend", "buy", True, 1.5), ("momentum", "hold", False, 0.0)] if n == 0 else []
        await store.add_fill(Fill(client_order_id="ffe-7", symbol="BTC/USDT", side=Side.BUY, quantity=0.25,
                                  price=107.0, fee=0.03, ts=8 + n), o,
                             FillRecord(wall=0.0, position=pos, trade=t, kv={"portfolio": {"n": n}}, scores=scores))
    assert [t.trade_id for t in trades] == [1, 2, 3]
    store.add_gates(gates[:2], decision_id=None, client_order_id="ffe-7", ts=9.0)
    await store.set_engine_state("PAUSED", "DRAWDOWN 16% > 15%", "risk", 10.0)
    bus.publish(EngineStateChanged(state="PAUSED", previous="RUNNING", reason="x", by="risk"))
    await store.flush()


def _table(path: Path, table: str) -> list[tuple]:
    rows = db_rows(path, f"SELECT * FROM {table}")
    if table == "kv":
        # updated_ts is the wall clock; so is each record's ts, which the chain head's hash covers: its seq is kept
        rows = [(k, json.loads(v)["seq"] if k == "audit_head" else v) for k, v, _ts in rows]
    return sorted(rows, key=repr)


async def test_the_writer_process_records_what_the_live_store_records(tmp_path):
    live_path, bt_path = tmp_path / "live.db", tmp_path / "backtest.db"
    live = await Store.open(live_path)
    await _record_a_session(live)
    await live.close()
    store = await Store.open(bt_path, backtest=True)
    await _record_a_session(store)
    # A read sees everything written before it, the index rows derived by the child included.
    rows = await store.query("SELECT decision_id, provider, action, failed FROM votes ORDER BY rowid")
    await store.close()

    assert [tuple(r) for r in rows] == [("d0007", "trend", "BUY", 0), ("d0009", "trend", "SELL", 0),
                                        ("d0009", "llm", None, 1)]
    for table in TABLES:
        assert _table(bt_path, table) == _table(live_path, table), table
    # Events: the same records in the same order (their ts is the wall clock of each run).
    assert [r[0] for r in db_rows(bt_path, "SELECT seq FROM events")] == list(range(1, 44))

    def records(path: Path) -> list[tuple]:
        out = []
        for seq, event, data in db_rows(path, "SELECT seq, event, data FROM events ORDER BY seq"):
            rec = json.loads(data)
            assert (rec.pop("seq"), rec.pop("event")) == (seq, event)
            rec.pop("ts")
            rec.pop("prev")  # the previous record's hash, and so of its wall-clock ts
            out.append((seq, event, rec))
        return out

    assert records(bt_path) == records(live_path)
    # Each decision is indexed from its record: the row points at the event that holds it.
    assert db_rows(bt_path, "SELECT d.decision_id, e.event FROM decisions d JOIN events e ON e.seq = d.event_seq "
                            "WHERE d.decision_id = 'd0007'") == [("d0007", "decision")]
    assert db_rows(bt_path, "SELECT code, value, limit_value, passed, detail FROM gate_results "
                            "WHERE decision_id = 'd0007' ORDER BY position") == [
        ("ENGINE_STATE", "RUNNING", "RUNNING", 1, ""), ("POSITION_SIZE", 12.5, 20.0, 1, "of equity"),
        ("BREAKER_OPEN", "closed", None, 1, "")]
    assert db_rows(bt_path, "SELECT latency_ms FROM votes WHERE decision_id = 'd0007'") == [(0.0,)]


async def test_a_failed_statement_stops_the_run_with_the_database_error_and_keeps_what_came_before(tmp_path):
    path = tmp_path / "ffe.db"
    store = await Store.open(path, backtest=True)
    o = Order(client_order_id="ffe-1", symbol="BTC/USDT", side=Side.BUY, quantity=1.0, type="market",
              reason=OrderReason.SIGNAL, venue="paper", decision_id=None, created_ts=1, updated_ts=1)
    await store.journal_order(o)
    with pytest.raises(sqlite3.OperationalError, match="no such table: missing_table"):
        await store.query("SELECT * FROM missing_table")  # a failed read is answered; writes go on
    await store.set_engine_state("RUNNING", "after a failed read", "test", 1.0)
    await store.flush()
    await store.journal_order(o)  # the same client order id twice
    with pytest.raises(WriterError, match="UNIQUE constraint failed: orders.client_order_id"):
        await store.flush()
        await store.flush()  # the answer comes at the latest with the next frame
    await store.close()  # the failure was said: the close ends the writer and says it no more
    assert db_rows(path, "SELECT client_order_id FROM orders") == [("ffe-1",)]
    assert db_rows(path, "SELECT reason FROM engine_state") == [("after a failed read",)]


async def test_a_writer_that_died_is_reported_not_waited_for(tmp_path):
    store = await Store.open(tmp_path / "ffe.db", backtest=True)
    store.conn._proc.kill()
    store.conn._proc.wait()
    with pytest.raises(WriterError, match=r"ffe.db: the backtest's database writer process ended \(killed by signal"):
        await store.set_engine_state("RUNNING", "x", "test", 1.0)
        await store.flush()
    await store.close()


def test_when_the_engine_process_dies_the_writer_keeps_what_it_was_sent_and_exits(tmp_path):
    path = tmp_path / "ffe.db"
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from ffe_engine.store import Store
        async def main():
            store = await Store.open({str(path)!r}, backtest=True)
            await store.set_engine_state("RUNNING", "before the crash", "test", 1.0)
            await store.flush()
            await store.set_engine_state("HALTED", "never sent", "test", 2.0)
            print(store.conn._proc.pid, flush=True)
            os.kill(os.getpid(), 9)
        asyncio.run(main())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert db_rows(path, "SELECT state, reason FROM engine_state") == [("RUNNING", "before the crash")]
    assert db_rows(path, "PRAGMA integrity_check") == [("ok",)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _slice(src: Path, dst: Path, rows: int) -> Path:
    dst.write_text("".join(sample_head(src, rows)))
    return dst


def test_a_backtest_run_makes_no_reference_cycles_and_indexes_every_decision(tmp_path, monkeypatch):
    series = bt.load_files([str(_slice(BTC_CSV, tmp_path / "BTC-USD_1h.csv", 2000)),
                            str(_slice(ETH_CSV, tmp_path / "ETH-USD_1h.csv", 2000))])
    found: dict[str, int] = {}
    run = Engine.run

    async def run_then_collect(self):
        await run(self)
        found["garbage"] = gc.collect()  # what the run left unreachable (everything before it is frozen)

    monkeypatch.setattr(Engine, "run", run_then_collect)
    gc.disable()  # only the explicit collection above counts
    try:
        report = asyncio.run(bt.run_backtest(make_settings(tmp_path), series))
    finally:
        gc.enable()
    assert report["trades"] > 0
    assert found["garbage"] == 0
    db = Path(report["database"])
    # The records are stored compact (records.py), with the dictionary the run trained on its first records.
    (dictionary,) = db_rows(db, "SELECT value FROM kv WHERE key = ?", (records.DICTIONARY_KEY,))[0]
    reader = records.RecordReader(records.dictionary_bytes(json.loads(dictionary)))
    decisions = db_rows(db, "SELECT seq, data FROM events WHERE event = 'decision'")
    assert len(decisions) > 3000
    assert sum(1 for _, data in decisions if records.is_compact(data)) > len(decisions) // 2
    assert db_rows(db, "SELECT COUNT(*) FROM decisions d JOIN events e ON e.seq = d.event_seq")[0][0] == len(decisions)
    directional = sum(1 for _, data in decisions for v in reader.load(data)["votes"] if v["action"] != "HOLD")
    assert db_rows(db, "SELECT COUNT(*) FROM votes WHERE failed = 0")[0][0] == directional
    assert db_rows(db, "SELECT COUNT(*) FROM trades")[0][0] == report["trades"]
    # The writer appends the same records to the run's audit file (compressed), one whole line each, chained: each
    # with the hash of the line before it as its prev (the rows leave prev out, chain.py).
    lines = records.read_lines(report["audit"])
    prev, chain = GENESIS, []
    for (data,) in db_rows(db, "SELECT data FROM events ORDER BY seq"):
        chain.append(chained(reader.unpack(data), prev))
        prev = line_hash(chain[-1])
    assert lines == chain
    head = json.loads(db_rows(db, "SELECT value FROM kv WHERE key = 'audit_head'")[0][0])
    assert head == {"seq": len(lines), "hash": prev}


def test_a_writer_whose_engine_dies_while_it_answers_keeps_what_it_was_sent_and_exits_without_a_traceback(tmp_path):
    """The engine's process killed (SIGKILL) with a frame on its way: the writer applies it, its answer finds the
    pipe closed. It keeps what it was sent and exits 1, as when its input closes, with nothing on the stderr it
    shares with the engine's terminal (a two-part BrokenPipeError traceback there read as a crash of ffe)."""
    import struct

    path = tmp_path / "ffe.db"
    proc = subprocess.Popen([sys.executable, "-m", "ffe_engine.sqlwriter", str(path)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the engine gone: nobody reads the answers
    ops = json.dumps([["x", "CREATE TABLE t (x)", []], ["x", "INSERT INTO t VALUES (1)", []]]).encode()
    payload = struct.pack(">I", len(ops)) + ops
    proc.stdin.write(struct.pack(">cI", b"W", len(payload)) + payload)
    proc.stdin.close()  # the frame stays in the pipe for the writer to read, apply and answer
    assert proc.wait(60) == 1
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert db_rows(path, "SELECT x FROM t") == [(1,)]
