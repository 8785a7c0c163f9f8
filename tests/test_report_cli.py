"""`ffe audit show` (the story of one decision) and `ffe report providers|trades`, read from the database of a real
headless engine run, checked against direct SQL on the same database."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import forked_ffe
from conftest import ffe_in_process, starter_config
from ffe_engine import fmt
from pipeline_helpers import BUY, make_settings, pipelines

_ = pipelines  # a fixture
BTC = "BTC/USDT"

WAIT_S = 60  # a safety net against a hung process, never a speed assertion
PROVIDERS = ["trend", "momentum", "mean_reversion", "breakout"]  # the configured defaults


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFE_")}
    env["FFE_MONITOR__PORT"] = "0"  # any free port: engines of other tests may be up at the same time
    env.update(extra)
    return env


def ffe(cwd: Path, *args: str, real: bool = True) -> subprocess.CompletedProcess:
    """`ffe ARGS` as a real process; with real=False, in this process (ffe_in_process): for the reads after the
    first of each kind (`audit show`, `report providers`, `report trades`, as text and as JSON), which a process
    has already proven end to end."""
    if not real:
        return ffe_in_process(cwd, *args, env=clean_env())
    return forked_ffe.run([sys.executable, "-m", "ffe_cli", *args], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=WAIT_S)


def ffe_json(cwd: Path, *args: str, real: bool = True):
    proc = ffe(cwd, *args, "--json", real=real)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def run_engine(root: Path, **env: str) -> Path:
    starter_config(root)
    proc = forked_ffe.run([sys.executable, "-m", "ffe_cli", "run", "--headless", "--max-bars", "300",
                           "--data-dir", "data", "--log-dir", "logs"], cwd=root,
                          env=clean_env(FFE_MARKET__SPEED="0", **env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One headless engine run on the simulated market (data/ffe.db under the root). Weights move from the first
    closed trade on, so the report has learned weights to show."""
    return run_engine(tmp_path_factory.mktemp("engine"), FFE_ENSEMBLE__WARMUP_TRADES="1")


@pytest.fixture(scope="module")
def signal_exits(tmp_path_factory) -> Path:
    """A run with stop-loss and take-profit far away: positions are closed by SELL decisions."""
    return run_engine(tmp_path_factory.mktemp("engine"), FFE_RISK__STOP_LOSS_ATR="50",
                      FFE_RISK__TAKE_PROFIT_ATR="100")


def sql(root: Path, query: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(root / "data" / "ffe.db")
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def decision_record(root: Path, decision_id: str) -> dict:
    """The decision's full record, as the engine stored it in the events table."""
    (data,) = sql(root, "SELECT e.data FROM decisions d JOIN events e ON e.seq = d.event_seq "
                        "WHERE d.decision_id = ?", (decision_id,))[0]
    return json.loads(data)


# --------------------------------------------------------------------------------------------------- audit show
def closed_by_monitor(root: Path) -> tuple:
    """A trade closed by a stop-loss or take-profit: id, entry decision, pnl, exit order id."""
    rows = sql(root, "SELECT id, entry_decision_id, pnl, exit_client_order_id FROM trades "
                     "WHERE reason IN ('stop_loss', 'take_profit') ORDER BY id")
    assert rows, "the run closed no trade at a stop-loss or take-profit"
    return rows[0]


def test_show_tells_the_story_of_a_decision_that_became_a_closed_trade(run):
    trade_id, did, pnl, exit_id = closed_by_monitor(run)
    entry_id = sql(run, "SELECT client_order_id FROM orders WHERE decision_id = ? AND reduce_only = 0", (did,))[0][0]
    proc = ffe(run, "audit", "show", did, "--data-dir", "data")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    symbol, price = sql(run, "SELECT symbol, price FROM decisions WHERE decision_id = ?", (did,))[0]
    assert out.splitlines()[0].startswith(f"decision {did}  {symbol}") and f"price {fmt.price(price)}" in out
    for v in decision_record(run, did)["votes"]:  # every provider's vote, with the weight applied
        assert any(line.split()[:3] == [v["provider"], v["action"], fmt.conf(v['confidence'])]
                   and line.split()[3] == f"{v['weight']:.3f}" for line in out.splitlines()), v
    for (code, passed) in sql(run, "SELECT code, passed FROM gate_results WHERE decision_id = ? AND "
                                   "client_order_id = ? ORDER BY position", (did, entry_id)):
        assert passed and any(line.split()[:1] == [code] and "pass" in line.split() for line in out.splitlines())
    assert "sizing" in out and "stop distance" in out
    assert "approval: none" in out
    assert entry_id in out and exit_id in out
    for (fill_price,) in sql(run, "SELECT price FROM fills WHERE client_order_id IN (?, ?)", (entry_id, exit_id)):
        assert "fill " in out and f"@ {fmt.price(fill_price)}" in out
    assert f"#{trade_id} " in out and f"P&L {fmt.money(pnl, signed=True)}" in out


def test_show_json_holds_the_same_story(run):
    trade_id, did, pnl, exit_id = closed_by_monitor(run)
    story = ffe_json(run, "audit", "show", did, "--data-dir", "data")
    assert story["decision_id"] == did and story["action"] == "BUY" and story["outcome"] == "submitted"
    assert [v["provider"] for v in story["votes"]] == PROVIDERS
    record = decision_record(run, did)
    assert [v["weight"] for v in story["votes"]] == [v["weight"] for v in record["votes"]]
    assert sum(v["weight"] for v in story["votes"]) == pytest.approx(1.0)
    directional = sql(run, "SELECT provider, action, confidence FROM votes WHERE decision_id = ? AND failed = 0",
                      (did,))
    by_name = {v["provider"]: v for v in story["votes"]}
    for p, action, conf in directional:
        assert by_name[p]["action"] == action and by_name[p]["confidence"] == pytest.approx(conf)
    assert story["failed"] == []
    codes = [c for (c,) in sql(run, "SELECT code FROM gate_results WHERE decision_id = ? ORDER BY position", (did,))]
    assert [g["code"] for g in story["gates"]] == codes and len(codes) == 14
    assert all(g["passed"] for g in story["gates"])
    assert story["sizing"]["quantity"] == pytest.approx(story["quantity"])
    assert story["approval"] is None
    orders = {o["client_order_id"]: o for o in story["orders"]}
    assert exit_id in orders and orders[exit_id]["reduce_only"]
    assert len(orders) == 2
    for cid, o in orders.items():
        fills = sql(run, "SELECT quantity, price, fee FROM fills WHERE client_order_id = ?", (cid,))
        assert [(f["quantity"], f["price"], f["fee"]) for f in o["fills"]] == fills
    [trade] = story["trades"]
    assert trade["id"] == trade_id and trade["role"] == "opened" and story["pnl"] == pytest.approx(pnl)
    scored = sql(run, "SELECT provider, correct FROM provider_scores WHERE trade_id = ?", (trade_id,))
    assert sorted((s["provider"], s["correct"]) for s in trade["scores"]) == sorted((p, bool(c)) for p, c in scored)


def test_show_an_exit_decision_names_the_trade_it_closed(signal_exits):
    run = signal_exits
    rows = sql(run, "SELECT t.id, t.entry_decision_id, o.decision_id, t.pnl FROM trades t JOIN orders o ON "
                    "o.client_order_id = t.exit_client_order_id WHERE t.reason = 'signal'")
    assert rows, "the run closed no trade on a SELL signal"
    trade_id, entry, exit_decision, pnl = rows[0]
    assert exit_decision != entry
    out = ffe(run, "audit", "show", exit_decision, "--data-dir", "data", real=False).stdout
    assert "outcome exit_submitted" in out
    assert f"#{trade_id} " in out and f"pnl {fmt.money(pnl, signed=True)}" in out and f"closed by this decision, opened by {entry}" in out
    # and the entry decision's story includes the exit order that a later decision placed
    story = ffe_json(run, "audit", "show", entry, "--data-dir", "data", real=False)
    assert any(o["decision_id"] == exit_decision for o in story["orders"])
    assert story["pnl"] == pytest.approx(pnl)


def test_show_a_rejected_decision_shows_the_failing_gate(run):
    did, reason = sql(run, "SELECT decision_id, reason FROM decisions WHERE outcome = 'rejected' LIMIT 1")[0]
    code = reason.split(":")[0]
    out = ffe(run, "audit", "show", did, "--data-dir", "data", real=False).stdout
    assert "outcome rejected" in out
    assert any(line.split()[:1] == [code] and "FAIL" in line for line in out.splitlines())
    assert "orders\n  none" in out and "trade\n  none closed" in out


def test_show_accepts_an_order_id_for_its_decision(run):
    _, did, _, exit_id = closed_by_monitor(run)
    assert ffe_json(run, "audit", "show", exit_id, "--data-dir", "data", real=False)["decision_id"] == did


def test_show_unknown_id_or_missing_database_is_a_one_line_error(run, tmp_path):
    proc = ffe(run, "audit", "show", "d-no-such", "--data-dir", "data")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "d-no-such" in proc.stderr and "ffe.db" in proc.stderr
    proc = ffe(tmp_path, "audit", "show", "d1", "--data-dir", "nowhere", real=False)
    assert proc.returncode == 2 and str(Path("nowhere") / "ffe.db") in proc.stderr
    assert not (tmp_path / "nowhere").exists()  # a read tool creates nothing


@pytest.mark.parametrize("args", [("report", "trades"), ("report", "providers"), ("audit", "show", "d1")])
def test_a_damaged_database_is_exit_1_and_left_as_it_is(tmp_path, args):
    """A database that is not SQLite any more is damaged records (exit 1, as for `ffe run` and `ffe doctor`), not a
    mistake on the command line (exit 2); the read leaves it as it was found."""
    (tmp_path / "data").mkdir()
    damaged = bytes(range(256)) * 16
    (tmp_path / "data" / "ffe.db").write_bytes(damaged)
    proc = ffe(tmp_path, *args, "--data-dir", "data", real=False)
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and "the database is damaged" in proc.stderr, proc.stderr
    assert str(Path("data") / "ffe.db") in proc.stderr
    assert (tmp_path / "data" / "ffe.db").read_bytes() == damaged


def test_damage_inside_the_database_s_pages_is_one_line_exit_1_for_every_read_command(run, tmp_path):
    """Its header intact, its table pages overwritten: what SQLite finds while a command reads is said as damage,
    in one line (never a traceback), and `ffe config check` names it as the next start would."""
    shutil.copytree(run / "data", tmp_path / "data", ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    db = tmp_path / "data" / "ffe.db"
    blob = bytearray(db.read_bytes())
    for at in range(len(blob) // 2 // 4096 * 4096, len(blob), 4096):  # the schema's pages (the first) intact
        blob[at:at + 200] = bytes(range(200))
    db.write_bytes(bytes(blob))
    (did,) = [d for (d,) in sql(run, "SELECT decision_id FROM decisions ORDER BY rowid LIMIT 1")]
    for args in (("report", "providers"), ("audit", "show", did)):
        proc = ffe(tmp_path, *args, "--data-dir", "data", real=False)
        assert proc.returncode == 1 and proc.stdout == "", (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "the database is damaged" in proc.stderr, (args, proc.stderr)
    checked = ffe(tmp_path, "config", "check", "--data-dir", "data", real=False)
    assert checked.returncode == 0 and "the database is damaged" in checked.stdout, checked.stdout[-500:]


def test_show_follows_a_manual_approval_to_its_end(tmp_path):
    """Manual approval on a running engine: one proposal approved, one rejected, through `ffe ctl`."""
    starter_config(tmp_path)
    engine = forked_ffe.Popen([sys.executable, "-m", "ffe_cli", "run", "--headless", "--max-bars", "2000",
                               "--data-dir", "data", "--log-dir", "logs"], cwd=tmp_path,
                              env=clean_env(FFE_MARKET__SPEED="20", FFE_ENGINE__APPROVAL="manual"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ended, codes = {}, {}
        # Approved while PAUSED: refused on re-check, which is a failure for a script (exit 1), as a refused close.
        aid = wait_for_pending(tmp_path, exclude=set())
        assert ffe(tmp_path, "ctl", "pause", "--data-dir", "data").returncode == 0
        refused = ffe(tmp_path, "ctl", "approve", aid, "--data-dir", "data")
        assert refused.returncode == 1 and f"{aid} refused on re-check: " in refused.stdout, refused
        assert ffe(tmp_path, "ctl", "resume", "--data-dir", "data").returncode == 0
        ended[aid], codes[aid] = "approve", refused.returncode
        for action in ("approve", "reject"):
            aid = wait_for_pending(tmp_path, exclude=set(ended))
            # the second approve in this process (the first, above, was a real one)
            proc = ffe(tmp_path, "ctl", action, aid, "--data-dir", "data", real=action != "approve")
            assert proc.returncode in (0, 1), proc.stderr
            ended[aid], codes[aid] = action, proc.returncode
    finally:
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=WAIT_S) == 0, engine.stderr.read()[-2000:]

    for aid, action in ended.items():
        status, by, did, coid = sql(tmp_path, "SELECT status, by, decision_id, client_order_id FROM approvals "
                                              "WHERE approval_id = ?", (aid,))[0]
        story = ffe_json(tmp_path, "audit", "show", did, "--data-dir", "data")
        a = story["approval"]
        assert a["approval_id"] == aid and a["status"] == status and a["by"] == by
        assert [h["outcome"] for h in a["history"]] == ["pending", status]
        carried_out = status == "approved" or by == "ctl"  # approved, or rejected as asked (not by the re-check)
        assert codes[aid] == (0 if carried_out else 1), (aid, status, by, codes[aid])
        if action == "reject":
            assert status == "rejected" and by == "ctl"
        elif status == "approved":  # the order went out through the single path
            assert coid and [o["client_order_id"] for o in story["orders"]][0] == coid
        else:  # the re-check at approval time refused it: the reason is the failing gate
            assert by == "re-check (ctl)" and a["history"][-1]["reason"].split(":")[0].isupper()
        out = ffe(tmp_path, "audit", "show", aid, "--data-dir", "data").stdout
        assert f"approval {aid}: {status} by {by}" in out


def wait_for_pending(root: Path, exclude: set[str]) -> str:
    done = threading.Event()
    for _ in range(WAIT_S * 20):
        if (root / "data" / "ffe.db").exists():
            try:
                rows = sql(root, "SELECT approval_id FROM approvals WHERE status = 'pending' ORDER BY created_ts")
            except sqlite3.OperationalError:  # the schema is still being created
                rows = []
            for (aid,) in rows:
                if aid not in exclude:
                    return aid
        done.wait(0.05)
    raise AssertionError("no pending approval appeared")


# --------------------------------------------------------------------------------------------------- reports
def test_report_providers_lists_every_provider_with_figures_that_match_the_database(run):
    proc = ffe(run, "report", "providers", "--data-dir", "data")
    assert proc.returncode == 0, proc.stderr
    table = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.split()[:1] != []}
    (trades,) = sql(run, "SELECT COUNT(*) FROM trades")[0]
    assert proc.stdout.startswith(f"{trades} closed trades; weights as stored")
    weights = json.loads(sql(run, "SELECT value FROM kv WHERE key = 'weights'")[0][0])["weights"]
    for p in PROVIDERS:
        row = table[p]
        (votes,) = sql(run, "SELECT COUNT(*) FROM votes WHERE provider = ? AND failed = 0", (p,))[0]
        assert row[1] == f"{weights[p]:.3f}" and row[2] == str(votes) and row[3] == "0"

    r = ffe_json(run, "report", "providers", "--data-dir", "data")
    assert [p["provider"] for p in r["providers"]] == PROVIDERS and r["trades"] == trades
    # The provider that backed most trades (the engine takes long trades: BUY votes on their entries).
    name, backed = sql(run, "SELECT v.provider, COUNT(*) FROM trades t JOIN votes v ON "
                            "v.decision_id = t.entry_decision_id WHERE v.action = 'BUY' GROUP BY v.provider "
                            "ORDER BY 2 DESC LIMIT 1")[0]
    scored, hits, avg = sql(run, "SELECT COUNT(*), SUM(correct), AVG(CASE action WHEN 'BUY' THEN return_pct "
                                 "ELSE -return_pct END) FROM provider_scores WHERE provider = ?", (name,))[0]
    top = next(p for p in r["providers"] if p["provider"] == name)
    assert top["backed"] == backed
    assert (top["scored"], top["hits"]) == (scored, hits)
    assert top["hit_rate"] == pytest.approx(hits / scored)
    assert top["avg_return_pct"] == pytest.approx(avg)
    assert top["weight"] == pytest.approx(weights[name])
    # The learner's own totals (persisted with the weights) agree with what the report derives from the tables.
    totals = json.loads(sql(run, "SELECT value FROM kv WHERE key = 'weights'")[0][0])
    while "totals" not in totals:
        totals = totals["stats"]
    for p in r["providers"]:
        t = totals["totals"][p["provider"]]
        assert (p["backed"], p["scored"], p["hits"]) == (t["backed"], t["votes"], t["hits"])


def test_report_providers_over_the_last_n_trades(run):
    r = ffe_json(run, "report", "providers", "--last", "5", "--data-dir", "data", real=False)
    assert r["last"] == 5 and r["last_trades"] == 5
    ids = [i for (i,) in sql(run, "SELECT id FROM trades ORDER BY id DESC LIMIT 5")]
    marks = ",".join("?" * len(ids))
    for p in r["providers"]:
        scored, hits = sql(run, f"SELECT COUNT(*), COALESCE(SUM(correct), 0) FROM provider_scores "
                                f"WHERE provider = ? AND trade_id IN ({marks})", (p["provider"], *ids))[0]
        assert (p["last"]["scored"], p["last"]["hits"]) == (scored, hits)
        assert p["last"]["hit_rate"] == (pytest.approx(hits / scored) if scored else None)
    everything = ffe_json(run, "report", "providers", "--last", "100000", "--data-dir", "data", real=False)
    for p in everything["providers"]:
        assert {k: p["last"][k] for k in ("backed", "scored", "hits")} == {k: p[k] for k in ("backed", "scored", "hits")}


def test_report_providers_shows_equal_weights_before_any_are_learned(run, tmp_path):
    (tmp_path / "data").mkdir()
    shutil.copy(run / "data" / "ffe.db", tmp_path / "data" / "ffe.db")
    conn = sqlite3.connect(tmp_path / "data" / "ffe.db")
    conn.execute("DELETE FROM kv WHERE key = 'weights'")
    conn.commit()
    conn.close()
    proc = ffe(tmp_path, "report", "providers", "--data-dir", "data", real=False)
    assert proc.returncode == 0, proc.stderr
    assert "equal weights" in proc.stdout.splitlines()[0]
    r = ffe_json(tmp_path, "report", "providers", "--data-dir", "data", real=False)
    assert r["weights"] == "equal" and [p["weight"] for p in r["providers"]] == [0.25] * 4


@pytest.mark.parametrize("args", [("report", "trades", "--last"), ("report", "providers", "--last"),
                                  ("audit", "tail", "-n")], ids=lambda a: " ".join(a))
def test_a_count_too_large_to_mean_anything_is_one_line_naming_the_option(run, args):
    """A count past what any table holds (a digit held down, 2**63 and beyond) is refused in one line naming the
    option, exit 2, as a negative one is: it reached SQLite and ended in an OverflowError traceback."""
    real = args[0] == "audit"  # its records are written to stdout's bytes, which the test's own stdout has not
    for count in ("99999999999999999999", "1000000001"):
        proc = ffe(run, *args, count, "--data-dir", "data", real=real)
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"ffe: error: argument {args[-1]}: ") and count in line, line
        assert "at most 1000000000" in line, line
    assert ffe(run, *args, "1000000000", "--data-dir", "data", real=real).returncode == 0


def test_report_trades_lists_closed_trades_with_pnl_and_entry_decision(run):
    rows = sql(run, "SELECT id, pnl, reason, entry_decision_id FROM trades ORDER BY id")
    proc = ffe(run, "report", "trades", "--last", "0", "--data-dir", "data")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    body = lines[1:-1]
    assert len(body) == len(rows)
    for line, (tid, pnl, reason, did) in zip(body, rows):
        parts = line.split()
        assert parts[0] == str(tid) and fmt.money(pnl, signed=True) in parts and reason in parts and parts[-1] == did
    total = sum(p for _, p, _, _ in rows)
    assert lines[-1].startswith(f"{len(rows)} closed trades") and f"P&L {fmt.money(total, signed=True)}" in lines[-1]
    r = ffe_json(run, "report", "trades", "--last", "3", "--data-dir", "data")
    assert [t["id"] for t in r["trades"]] == [tid for tid, *_ in rows[-3:]]
    # Times as every report writes them (UTC ISO), beside the stored epoch milliseconds.
    assert all(t["opened"] == fmt.iso_ms(t["opened_ts"]) and t["closed"] == fmt.iso_ms(t["closed_ts"])
               and t["closed"].endswith("Z") for t in r["trades"])


def test_reports_of_one_closed_trade_say_it_in_the_singular(run, tmp_path):
    (tmp_path / "data").mkdir()
    shutil.copy(run / "data" / "ffe.db", tmp_path / "data" / "ffe.db")
    with sqlite3.connect(tmp_path / "data" / "ffe.db") as conn:
        conn.execute("DELETE FROM trades WHERE id != (SELECT MIN(id) FROM trades)")
    conn.close()
    proc = ffe(tmp_path, "report", "providers", "--last", "1", "--data-dir", "data", real=False)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()[:2]
    assert first.startswith("1 closed trade; ") and second.endswith("all trades | last 1 trade"), proc.stdout
    proc = ffe(tmp_path, "report", "trades", "--data-dir", "data", real=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("1 closed trade, "), proc.stdout


def test_reads_the_database_while_a_writer_holds_it(run, tmp_path):
    """WAL: the tools read the last committed state while a transaction is open, and write nothing."""
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "ffe.db"
    shutil.copy(run / "data" / "ffe.db", db)
    writer = sqlite3.connect(db, isolation_level=None)
    assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO trades (symbol, side, quantity, entry_price, exit_price, pnl, fees, reason, "
                   "opened_ts, closed_ts) VALUES ('X/Y', 'buy', 1, 1, 2, 1, 0, 'signal', 0, 1)")
    try:
        (count,) = sql(run, "SELECT COUNT(*) FROM trades")[0]
        r = ffe_json(tmp_path, "report", "trades", "--data-dir", "data")
        assert r["total"]["count"] == count
        _, did, _, _ = closed_by_monitor(run)
        assert ffe_json(tmp_path, "audit", "show", did, "--data-dir", "data")["decision_id"] == did
        assert ffe_json(tmp_path, "report", "providers", "--data-dir", "data")["trades"] == count
    finally:
        writer.execute("ROLLBACK")
        writer.close()


async def test_show_finds_the_decision_whose_position_a_flatten_closed(tmp_path, pipelines):
    # A flatten's closing order belongs to no decision of its own: its id leads to the decision that opened the
    # position it closed, whose story lists it among its orders, as an operator's close does.
    p = await pipelines(make_settings(tmp_path), script={BTC: (BUY, 0.8)})
    await p.until(lambda: BTC in p.engine.portfolio.positions, max_bars=50, what="the scripted entry")
    entry = p.engine.portfolio.positions[BTC].entry_decision_id
    result = await p.engine.flatten(by="test")
    (closing,) = result["closing"]
    await p.until(lambda: BTC not in p.engine.portfolio.positions, max_bars=5, what="the position closed")
    await p.close()
    shown = ffe(tmp_path, "audit", "show", closing, "--data-dir", "data", "--log-dir", "logs")
    assert shown.returncode == 0, shown.stderr
    assert f"decision {entry}" in shown.stdout.splitlines()[0] and closing in shown.stdout, shown.stdout
    assert "None" not in shown.stdout, shown.stdout


def test_report_providers_json_gives_the_weights_time_in_utc_iso_form(run):
    """Every time in ffe's JSON is a UTC ISO string, as the text form prints it: the weights' time was epoch
    seconds."""
    (stored,) = sql(run, "SELECT updated_ts FROM kv WHERE key = 'weights'")[0]
    r = ffe_json(run, "report", "providers", "--data-dir", "data", real=False)
    assert r["weights_updated"] == fmt.iso(stored) and r["weights_updated"].endswith("Z"), r["weights_updated"]
    assert r["weights_updated_ts"] == stored
    text = ffe(run, "report", "providers", "--data-dir", "data", real=False).stdout
    assert text.splitlines()[0].endswith(f"weights as stored {r['weights_updated']}"), text


def test_weights_as_stored_are_stamped_with_when_they_were_stored_not_the_market_time(tmp_path):
    # The simulated market runs ahead of the wall clock at speed 0 (a replay, years behind it): the weights stored
    # with a fill were stamped with the fill's market time, and `report providers` said them stored then.
    import time

    from conftest import ffe_env, run_ffe

    before = time.time()
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "300", env=ffe_env(FFE_ENSEMBLE__WARMUP_TRADES="1"))
    after = time.time()
    assert proc.returncode == 0, proc.stderr[-2000:]
    conn = sqlite3.connect(tmp_path / "data" / "ffe.db")
    try:
        market_ts = conn.execute("SELECT MAX(ts) FROM fills").fetchone()[0]
    finally:
        conn.close()
    assert market_ts / 1000 > after  # the market ran ahead of the wall clock: the two are told apart
    report = json.loads(ffe(tmp_path, "report", "providers", "--json").stdout)
    assert report["weights"] == "stored"
    assert before <= report["weights_updated_ts"] <= after, (before, report["weights_updated_ts"], after)
    assert report["weights_updated"] == fmt.iso(report["weights_updated_ts"])
