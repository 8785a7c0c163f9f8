"""Starting ffe live: `ffe run --headless --live` as a real subprocess against the fake Binance.

Live trading needs mode = "live", the --live flag and credentials the exchange accepts, all at once. Anything
missing or wrong ends the start with exit code 2 and one line on stderr, and never becomes a paper run: no engine
state is recorded, no order reaches the exchange. With good credentials the engine starts PAUSED and reconciles
with the exchange before it sends any order.
"""

from __future__ import annotations

import pytest

from ffe_engine.control import request
from live_helpers import (BTC, AsyncFfe, fx, live_config, live_env, processes, rows, run_ffe_async,  # noqa: F401
                          stored_events, wait_for, wait_for_bar, write_config)

RUN = ("run", "--headless", "--live")


def error_line(p: AsyncFfe) -> str:
    """The whole of stderr, required to be exactly one `ffe: error:` line."""
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("ffe: error: "), lines[0]
    return lines[0]


def assert_nothing_started(tmp_path, fx, *, contacted: bool = False) -> None:
    """No paper fallback: no engine state, no order journaled, nothing sent to the exchange's order routes."""
    db = tmp_path / "data" / "ffe.db"
    assert rows(db, "SELECT state FROM engine_state") == []
    assert rows(db, "SELECT client_order_id FROM orders") == []
    assert fx.orders == [] and fx.requests_to("POST /api/v3/order") == []
    if not contacted:
        assert fx.requests == []


async def test_live_without_credentials_names_the_variables(tmp_path, fx):
    write_config(tmp_path, live_config(fx))
    p = await run_ffe_async(tmp_path, *RUN, env=live_env())
    assert p.proc.returncode == 2
    line = error_line(p)
    assert "FFE_EXCHANGE__API_KEY" in line and "FFE_EXCHANGE__SECRET" in line, line
    assert_nothing_started(tmp_path, fx)

    only_key = await run_ffe_async(tmp_path, *RUN, env=live_env(api_key=fx.api_key), name="key-only")
    assert only_key.proc.returncode == 2
    line = error_line(only_key)
    assert "FFE_EXCHANGE__SECRET" in line and "FFE_EXCHANGE__API_KEY" not in line, line
    assert fx.api_key not in only_key.stderr + only_key.stdout
    assert_nothing_started(tmp_path, fx)


async def test_live_mode_without_the_flag(tmp_path, fx):
    write_config(tmp_path, live_config(fx))
    p = await run_ffe_async(tmp_path, "run", "--headless", env=live_env(fx))
    assert p.proc.returncode == 2
    assert "--live" in error_line(p)
    assert_nothing_started(tmp_path, fx)


@pytest.mark.parametrize("flag, says", [((), 'venue.kind = "ccxt" places real orders'),
                                         (("--live",), '--live needs mode = "live"')], ids=["no-flag", "live-flag"])
async def test_ccxt_venue_in_paper_mode_is_refused(tmp_path, fx, flag, says):
    write_config(tmp_path, live_config(fx, mode="paper"))
    p = await run_ffe_async(tmp_path, "run", "--headless", *flag, env=live_env(fx))
    assert p.proc.returncode == 2
    assert says in error_line(p)
    assert_nothing_started(tmp_path, fx)


@pytest.mark.parametrize("which", ["secret", "api_key"])
async def test_credentials_the_exchange_rejects(tmp_path, fx, which):
    wrong = "wrong-" + which + "-Hq8sPz41"
    env = live_env(fx, secret=wrong) if which == "secret" else live_env(fx, api_key=wrong)
    write_config(tmp_path, live_config(fx))
    p = await run_ffe_async(tmp_path, *RUN, env=env)
    assert p.proc.returncode == 2, p.stderr
    line = error_line(p)
    assert "live start check failed" in line and "fetch_balance" in line, line
    # the exchange's own reason, as it gave it: a bad signature (-1022) or an unknown key (-2015)
    assert ("-1022" in line) if which == "secret" else ("-2015" in line), line
    # the check really asked the exchange, with signed requests that it refused
    refused = fx.requests_to("GET /api/v3/account")
    assert refused and all(r.status in (400, 401) for r in refused)
    assert_nothing_started(tmp_path, fx, contacted=True)
    # no credential anywhere the run wrote: not the wrong one, not the right one that went with it
    written = [p.stdout, p.stderr]
    for f in (tmp_path / "logs").glob("*"):
        written.append(f.read_text(errors="replace"))
    for f in (tmp_path / "data").glob("ffe.db*"):
        written.append(f.read_bytes().decode("latin-1"))
    for text in written:
        for secret in (wrong, fx.secret, fx.api_key):
            assert secret not in text


async def test_an_exchange_that_does_not_answer_the_start_check_is_a_runtime_failure_not_a_bad_config(tmp_path, fx):
    """Down at the start (503 to every request): nothing about the configuration is wrong, and the same start may
    work a minute later. Exit 1, as every venue failure (systemd starts it again; exit 2, a configuration error, it
    does not: deploy/systemd/ffe.service), with one line naming the exchange; nothing started, nothing sent."""
    write_config(tmp_path, live_config(fx))
    fx.down, fx.down_status = True, 503
    p = await run_ffe_async(tmp_path, *RUN, env=live_env(fx), timeout=90)
    assert p.proc.returncode == 1, p.stderr
    line = error_line(p)
    assert "live start check failed on binance" in line and "did not answer" in line, line
    assert fx.requests and all(r.fault == "down" for r in fx.requests)
    assert_nothing_started(tmp_path, fx, contacted=True)


async def test_good_credentials_start_paused_and_reconcile_before_any_order(tmp_path, fx, processes):
    write_config(tmp_path, live_config(fx))
    db = tmp_path / "data" / "ffe.db"
    sock = tmp_path / "data" / "ffe.sock"
    p = await AsyncFfe.start(tmp_path, *RUN, env=live_env(fx))
    processes.append(p)
    await wait_for(lambda: "control socket ready" in p.stderr or not p.alive(), timeout=60, what="the control socket")
    assert p.alive(), p.stderr

    assert rows(db, "SELECT state FROM engine_state") == [("PAUSED",)]
    status = (await request(sock, "status"))["result"]
    assert (status["mode"], status["state"]) == ("LIVE", "PAUSED")
    (first,) = stored_events(db, "reconcile")
    assert first["status"] == "ok" and first["differences"] == []

    # PAUSED: an operator entry is refused at the ENGINE_STATE gate and nothing reaches the exchange
    refused = (await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.01}))["result"]
    assert refused["accepted"] is False and refused["reason"].startswith("ENGINE_STATE"), refused
    assert fx.requests_to("POST /api/v3/order") == []

    assert (await request(sock, "resume", {"by": "test"}))["result"] == "RUNNING"
    await wait_for_bar(sock, fx)
    placed = await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.01, "by": "test"})
    assert placed["ok"] and placed["result"]["accepted"], placed
    cid = placed["result"]["client_order_id"]
    await wait_for(lambda: rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)],
                   timeout=30, what="the order filled")
    assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "FILLED")]

    # the events table is written in batches (orders at once): wait for the fill's event to land
    await wait_for(lambda: stored_events(db, "fill"), timeout=30, what="the fill event")
    events = stored_events(db, "reconcile", "order", "fill")
    first_seq = {}
    for e in events:
        first_seq.setdefault(e["event"], e["seq"])
    assert first_seq["reconcile"] < first_seq["order"] < first_seq["fill"], events
    assert await p.stop() == 0, p.stderr


async def test_a_live_start_the_exchange_check_fails_pages_the_operator(tmp_path, fx):
    """Under systemd a live start that fails its exchange check is started again a few times, then given up:
    nobody watching would know the engine is down but for the heartbeat's silence. Each failed start pages
    START_FAILED with its one line."""
    from receiver import Receiver

    hook = await Receiver().start()
    try:
        write_config(tmp_path, live_config(fx))
        fx.down, fx.down_status = True, 503
        p = await run_ffe_async(tmp_path, *RUN, env={**live_env(fx), "FFE_ALERTS__WEBHOOK_URL": hook.url + "/hook"},
                                timeout=90)
        assert p.proc.returncode == 1, p.stderr
    finally:
        await hook.stop()
    pages = [r.body for r in hook.delivered if r.body.get("kind") == "START_FAILED"]
    assert len(pages) == 1 and pages[0]["severity"] == "page", [r.body for r in hook.delivered]
    assert "live start check failed on binance" in pages[0]["text"], pages[0]


async def test_a_live_start_refused_for_its_clock_says_the_clock_not_the_network(tmp_path, fx):
    """The exchange answers, but refuses the request's timestamp (Binance -1021: outside the receive window): this
    machine's clock is off. The one line says so, not that the exchange did not answer (which sends the operator
    to the network)."""
    write_config(tmp_path, live_config(fx))
    fx.fault("GET /api/v3/account", "error", times=50, status=400, code=-1021,
             msg="Timestamp for this request is outside of the recvWindow.")
    p = await run_ffe_async(tmp_path, *RUN, env=live_env(fx), timeout=90)
    assert p.proc.returncode == 1, p.stderr
    line = error_line(p)
    assert "clock" in line and "did not answer" not in line, line
