"""`ffe ctl status|pause|resume|halt` against a running headless engine (a real subprocess, talked to over its unix
socket); each command's effect checked in the engine's own database. The first of each command runs as a real `ffe`
process, the rest in the test process (`ffe_in_process`, the same entry point without a process's start)."""

from __future__ import annotations

import json
import signal

from conftest import count_events, db_rows, db_value, ffe_env, ffe_in_process, run_ffe, wait_until


def test_ctl_status_pause_resume_halt_against_a_running_engine(tmp_path, spawn_ffe):
    db = tmp_path / "data" / "ffe.db"
    sock = tmp_path / "data" / "ffe.sock"
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(),
               timeout=60, what="the control socket")
    assert engine.alive(), engine.stderr

    def ctl(*args: str):
        return run_ffe(tmp_path, "ctl", *args, timeout=60)

    def ctl_here(*args: str):
        return ffe_in_process(tmp_path, "ctl", *args)

    status = ctl("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("PAPER RUNNING"), status.stdout
    raw = ctl_here("status", "--json")
    answer = json.loads(raw.stdout)
    assert answer["ok"] is True and answer["result"]["state"] == "RUNNING" and answer["result"]["mode"] == "PAPER"
    assert answer["result"]["bars"] >= 0 and "positions" in answer["result"]

    paused = ctl("pause")
    assert paused.returncode == 0 and paused.stdout.splitlines()[0] == "PAUSED", paused.stdout + paused.stderr
    assert db_value(db, "SELECT state FROM engine_state") == "PAUSED"
    assert db_value(db, "SELECT by FROM engine_state") == "ctl"
    assert ctl_here("status").stdout.startswith("PAPER PAUSED (ffe ctl pause)")
    # Paused, the engine's loop goes on: bars keep coming.
    seen = count_events(tmp_path / "logs" / "audit.jsonl", "decision")
    wait_until(lambda: count_events(tmp_path / "logs" / "audit.jsonl", "decision") > seen, timeout=30,
               what="a decision while paused")

    resumed = ctl("resume")
    assert resumed.returncode == 0 and resumed.stdout.splitlines()[0] == "RUNNING", resumed.stdout + resumed.stderr
    assert db_value(db, "SELECT state FROM engine_state") == "RUNNING"

    halted = ctl("halt", "--json")
    assert halted.returncode == 0, halted.stderr
    report = json.loads(halted.stdout)["result"]
    assert set(report) >= {"cancelled", "failed"} and report["failed"] == []
    # A second halt: nothing left to cancel. The report reads as the console's banner.
    again = ctl_here("halt").stdout.splitlines()[0]
    assert again.startswith("KILL SWITCH: HALTED by ctl: cancelled 0 failed 0"), again
    assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
    assert ctl_here("status").stdout.startswith("PAPER HALTED (ffe ctl halt)")

    refused = ctl_here("resume")  # re-arming a halted engine needs --yes
    assert refused.returncode == 1
    assert refused.stderr.startswith("ffe: error: ") and "confirm" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert db_value(db, "SELECT state FROM engine_state") == "HALTED"

    rearmed = ctl_here("resume", "--yes")
    assert rearmed.returncode == 0 and rearmed.stdout.splitlines()[0] == "RUNNING", rearmed.stdout + rearmed.stderr
    assert db_value(db, "SELECT state FROM engine_state") == "RUNNING"
    assert db_value(db, "SELECT reason FROM engine_state") == "re-armed"

    assert engine.alive(), engine.stderr
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=20) == 0, engine.stderr
    assert not sock.exists()  # the socket goes with the engine

    gone = ctl_here("status")
    assert gone.returncode == 1 and "no engine is running" in gone.stderr


def test_a_data_directory_named_with_an_escape_is_shown_escaped_by_ctl_and_the_engine_s_log(tmp_path, spawn_ffe):
    """A directory's name is anyone's: an escape sequence in it reaches neither `ffe ctl`'s terminal nor the
    headless log's as one it would act on (reverse video here), but as its escape, as `ffe init` shows it."""
    name = "da\x1b[7mta"
    engine = spawn_ffe(tmp_path, "run", "--headless", "--data-dir", name, "--log-dir", "lg")
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(),
               timeout=60, what="the control socket")
    assert engine.alive(), engine.stderr
    status = run_ffe(tmp_path, "ctl", "status", "--data-dir", name, "--log-dir", "lg", timeout=60)
    assert status.returncode == 0, status.stderr
    assert "\x1b" not in status.stdout, status.stdout
    assert f"on {tmp_path}/da\\x1b[7mta (instance " in status.stdout.splitlines()[-1], status.stdout
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=20) == 0, engine.stderr
    assert "\x1b" not in engine.stderr, engine.stderr
    said = [line for line in engine.stderr.splitlines() if "control socket ready" in line or "] settings" in line]
    assert len(said) == 2 and all("da\\x1b[7mta" in line for line in said), said


def test_ctl_health_of_no_engine_in_a_directory_named_with_an_escape_shows_it_escaped(tmp_path):
    name = "da\x1b[7mta"
    (tmp_path / name).mkdir()
    health = run_ffe(tmp_path, "ctl", "health", "--data-dir", name, timeout=60)
    assert health.returncode == 2, health.stdout + health.stderr
    assert "\x1b" not in health.stdout + health.stderr and "da\\x1b[7mta" in health.stdout, health.stdout


def an_operator_buy_then_stopped(tmp_path, spawn_ffe) -> str:
    """A headless paper engine that buys 0.01 BTC on the operator's order (the socket's `order`, no decision of
    its own), waits for its fill, then stops in order. The order's client order id."""
    import asyncio

    from ffe_engine.control import request

    sock = tmp_path / "data" / "ffe.sock"
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(),
               timeout=60, what="the control socket")
    answer = asyncio.run(request(sock, "order", {"symbol": "BTC/USDT", "side": "buy", "quantity": 0.01, "by": "test"}))
    assert answer.get("ok") and answer["result"].get("accepted"), answer
    cid = answer["result"]["client_order_id"]
    wait_until(lambda: db_value(tmp_path / "data" / "ffe.db", "SELECT COUNT(*) FROM fills WHERE client_order_id = ?",
                                (cid,)), timeout=60, what="its fill")
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.stderr
    return cid


def test_a_flatten_that_leaves_a_position_open_exits_1_and_the_start_names_the_unwatched_position(tmp_path,
                                                                                                   spawn_ffe):
    """A position in a symbol the configuration no longer trades has no price feed: no stop-loss or take-profit
    watches it, and the paper venue takes no order in it. The start says so (log and its STARTED page), and a
    flatten that could not close it exits 1, whatever it cancelled: a script must not read it as done."""
    db = tmp_path / "data" / "ffe.db"
    an_operator_buy_then_stopped(tmp_path, spawn_ffe)
    assert db_value(db, "SELECT COUNT(*) FROM positions WHERE symbol = 'BTC/USDT'") == 1

    second = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20",
                                                                   FFE_ENGINE__SYMBOLS='["ETH/USDT"]'))
    wait_until(lambda: "control socket ready" in second.stderr or not second.alive(),
               timeout=60, what="the control socket")
    wait_until(lambda: "engine started" in second.stderr, timeout=30, what="the start")
    assert "BTC/USDT" in second.stderr and "not traded" in second.stderr, second.stderr
    flat = run_ffe(tmp_path, "ctl", "flatten", "--yes", timeout=60)
    assert flat.returncode == 1, flat.stdout + flat.stderr
    assert "failed 1" in flat.stdout and "BTC/USDT" in flat.stdout, flat.stdout
    assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
    second.send(signal.SIGTERM)
    assert second.wait(timeout=30) == 0, second.stderr


def test_audit_show_tells_an_operator_order_that_no_decision_placed(tmp_path, spawn_ffe):
    """A manual order (the console's order, the socket's `order`) has no decision of its own: `ffe audit show` of
    its client order id tells the order, its gates (checked under its id), its fills and the trade it closed,
    rather than calling a known order an unknown decision."""
    cid = an_operator_buy_then_stopped(tmp_path, spawn_ffe)
    shown = run_ffe(tmp_path, "audit", "show", cid)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.startswith(f"order {cid}  BTC/USDT"), out
    assert "no decision (an operator order)" in out and "ENGINE_STATE" in out and "    fill 0.01" in out, out
    as_json = json.loads(run_ffe(tmp_path, "audit", "show", cid, "--json").stdout)
    assert as_json["client_order_id"] == cid and as_json["decision_id"] is None and as_json["gates"], as_json
    unknown = run_ffe(tmp_path, "audit", "show", "ffe-000000000000000000000000")
    assert unknown.returncode == 2 and "no decision or order 'ffe-000000000000000000000000'" in unknown.stderr
    empty = run_ffe(tmp_path, "audit", "show", "")  # named as given, an empty one too
    assert empty.returncode == 2 and "no decision or order '' in" in empty.stderr, empty.stderr


def test_a_position_in_a_symbol_no_longer_traded_is_no_reconciliation_difference(tmp_path, spawn_ffe):
    """Its coins are the account's, but no price comes for them (the start names the position): the books and the
    venue both leave it out of the equity they compare, rather than hold entries for a difference an accept could
    never end (the venue values the coins at nothing, the books at their last price)."""
    db = tmp_path / "data" / "ffe.db"
    an_operator_buy_then_stopped(tmp_path, spawn_ffe)
    second = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20",
                                                                   FFE_ENGINE__SYMBOLS='["ETH/USDT"]'))
    wait_until(lambda: "control socket ready" in second.stderr or not second.alive(),
               timeout=60, what="the control socket")
    wait_until(lambda: "engine started" in second.stderr, timeout=30, what="the start")
    status = run_ffe(tmp_path, "ctl", "status", timeout=30)
    assert status.returncode == 0 and "RECONCILE" not in status.stdout, status.stdout
    reconciled = [json.loads(r[0]) for r in db_rows(db, "SELECT data FROM events WHERE event = 'reconcile'")]
    assert reconciled and all(r["status"] != "differences" for r in reconciled), reconciled
    second.send(signal.SIGTERM)
    assert second.wait(timeout=30) == 0, second.stderr


def times_beside(answer: object) -> list[tuple[str, object, object]]:
    """Every epoch time in a JSON answer (`X_ts` in milliseconds, `until` in seconds) with the UTC ISO form beside
    it, as (name, value, ISO form)."""
    from ffe_engine import fmt

    found = []
    if isinstance(answer, dict):
        for key, value in answer.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if key.endswith("_ts"):
                    found.append((key, answer.get(key[:-3]), fmt.iso_ms(value)))
                elif key in ("until", "last_success"):
                    found.append((key, answer.get(f"{key}_utc"), fmt.iso(value)))
            found.extend(times_beside(value))
    elif isinstance(answer, list):
        for item in answer:
            found.extend(times_beside(item))
    return found


def test_ctl_json_gives_each_time_in_utc_iso_form_beside_its_epoch_number(tmp_path, spawn_ffe):
    """The engine's answers carry epoch numbers (market time, when a position opened, an order was made); `--json`
    gives each in UTC ISO form beside it, as every JSON output of ffe does."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="50"))
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(),
               timeout=60, what="the control socket")
    assert engine.alive(), engine.stderr
    wait_until(lambda: json.loads(ffe_in_process(tmp_path, "ctl", "status", "--json").stdout)["result"]["market_ts"],
               timeout=60, what="a bar")
    first = run_ffe(tmp_path, "ctl", "status", "--json", timeout=60)
    assert first.returncode == 0, first.stderr
    seen = times_beside(json.loads(first.stdout))
    for action in ("trades", "orders", "why"):
        proc = ffe_in_process(tmp_path, "ctl", action, "--json")
        assert proc.returncode == 0, proc.stderr
        seen += times_beside(json.loads(proc.stdout))
    assert "market_ts" in {name for name, _, _ in seen}, seen
    for name, beside, iso in seen:
        assert beside == iso and iso.endswith("Z"), (name, beside, iso)
