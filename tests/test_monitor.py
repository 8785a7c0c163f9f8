"""The monitor of a running engine, over real sockets: GET /health and GET /metrics on 127.0.0.1 (scraped and parsed
with prometheus-client's own parser), `ffe ctl health` as a subprocess, sd_notify on a Unix datagram socket, and
a main loop stalled on purpose by a venue that never answers while the process stays up."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from prometheus_client.parser import text_string_to_metric_families

import forked_ffe
from conftest import db_rows, db_value, engine_session, ffe_cmd, ffe_env, make_settings, run_ffe, starter_config
from ffe_engine.risk import GATE_ORDER
from ffe_engine.venues.base import VenueUnavailable
from ffe_engine.venues.paper import PaperVenue
from receiver import Receiver

REQUIRED = {
    "ffe_build_info", "ffe_engine_state", "ffe_loop_last_turn_timestamp_seconds", "ffe_breaker_state",
    "ffe_kill_switch_engaged", "ffe_orders_submitted_total", "ffe_orders_rejected_total",
    "ffe_orders_in_doubt_total", "ffe_risk_gate_denials_total", "ffe_reconcile_mismatches_total",
    "ffe_venue_request_duration_seconds_bucket", "ffe_venue_errors_total", "ffe_position_quantity", "ffe_equity",
    "ffe_drawdown_ratio", "ffe_alerts_pending", "ffe_audit_last_write_timestamp_seconds",
}
BOUNDED_LABELS = {"state", "venue", "symbol", "gate", "channel", "error", "status", "le", "version", "mode", "dir"}


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers=headers or {}) as r:
            return r.status, await r.text()


async def until(predicate, timeout: float = 60.0, what: str = ""):
    """Poll an async or plain predicate while the event loop (and the engine in it) keeps running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def exported(text: str) -> set[str]:
    """Every series name the scrape declares, with or without samples yet (a labelled counter that has not
    counted anything has only its HELP and TYPE lines)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


async def test_health_is_200_and_metrics_follow_the_naming_guide_on_a_running_engine(tmp_path):
    # Few entries pass a 0.99 confidence bar: the MIN_CONFIDENCE gate denies, and the counters can be checked.
    settings = make_settings(tmp_path, risk={"min_confidence": 0.99})
    async with engine_session(settings) as host:
        run = asyncio.ensure_future(host.engine.run())
        try:
            registry = host.monitor.metrics.registry
            await until(lambda: host.engine.bars >= 50 and host.engine.liveness.turns > 0 and registry.get_sample_value(
                "ffe_risk_gate_denials_total", {"gate": "MIN_CONFIDENCE"}), what="bars and a gate denial")
            url = host.monitor.url
            assert url.startswith("http://127.0.0.1:")
            status, body = await get(url + "/health")
            verdict = json.loads(body)
            assert status == 200, verdict
            assert verdict["status"] == "healthy" and verdict["problems"] == []
            assert verdict["state"] == "RUNNING"
            assert set(verdict["bar_age_s"]) == {"BTC/USDT", "ETH/USDT"}
            for key in ("loop_age_s", "breakers", "reconcile", "pending_approvals", "audit_lag_s"):
                assert key in verdict
            status, text = await get(url + "/metrics")
            assert status == 200
            found = samples(text)
            assert REQUIRED <= exported(text), REQUIRED - exported(text)
            gates = {s.labels["gate"] for s in found["ffe_risk_gate_denials_total"]}
            assert gates == set(GATE_ORDER) and len(gates) == 14
            state = {s.labels["state"]: s.value for s in found["ffe_engine_state"]}
            assert state == {"RUNNING": 1.0, "PAUSED": 0.0, "HALTED": 0.0}
            assert found["ffe_loop_last_turn_timestamp_seconds"][0].value > 0
            for name, rows in found.items():
                assert name.startswith("ffe_"), name
                for s in rows:
                    assert set(s.labels) <= BOUNDED_LABELS, (name, s.labels)  # never an order or decision id
            for family in text_string_to_metric_families(text):
                if family.type == "counter":
                    assert all(s.name.endswith("_total") for s in family.samples), family.name
            placed = await host.engine.operator_order("BTC/USDT", "buy", 0.002, by="test")
            assert placed["accepted"], placed
            # The kill switch shows at the next scrape.
            await host.engine.halt(reason="test", by="test")
            found = samples((await get(url + "/metrics"))[1])
            assert found["ffe_kill_switch_engaged"][0].value == 1.0
        finally:
            host.engine.request_stop()
            await run
        # The counters agree with the record: gate denials of the decisions, orders sent.
        found = samples((await get(url + "/metrics"))[1])
        denials = {s.labels["gate"]: s.value for s in found["ffe_risk_gate_denials_total"]}
        recorded = dict(db_rows(settings.db_path, "SELECT g.code, COUNT(*) FROM gate_results g JOIN decisions d "
                                                  "ON d.decision_id = g.decision_id WHERE g.passed = 0 "
                                                  "GROUP BY g.code"))
        assert recorded and {g: n for g, n in denials.items() if n} == recorded
        orders = db_value(settings.db_path, "SELECT COUNT(*) FROM orders")
        assert orders >= 1 and found["ffe_orders_submitted_total"][0].value == orders


class HangingVenue(PaperVenue):
    """An exchange that takes orders and never answers: the engine's loop hangs inside the order call, while the
    process, its control socket and its monitor stay up."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hung = asyncio.Event()

    async def create_order(self, req):
        self.hung.set()
        await asyncio.Event().wait()


def datagrams(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_a_stalled_loop_is_down_the_watchdog_and_heartbeat_stop_and_ctl_health_exits_2(tmp_path, monkeypatch):
    notify_path = tmp_path / "notify.sock"
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd.bind(str(notify_path))
    sd.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s while the loop lives
    heartbeat = await Receiver().start()
    hook = await Receiver().start()
    settings = make_settings(tmp_path, monitor={"port": 0, "loop_stale_s": 1.0},
                             alerts={"heartbeat_url": heartbeat.url + "/ping", "heartbeat_s": 0.1,
                                     "webhook_url": hook.url + "/hook", "window_s": 60})
    from ffe_engine.kernel import paper_venue

    base = paper_venue(settings, list(settings.engine.symbols))
    venue = HangingVenue(list(settings.engine.symbols), starting_cash=10_000.0, quote="USDT", fee_bps=10.0,
                         slippage_bps=5.0, min_notional=base.market("BTC/USDT").min_notional, amount_step=1e-6)
    sent: list[str] = []
    async with engine_session(settings, venue=venue) as host:
        run = asyncio.ensure_future(host.run())
        try:
            await until(lambda: heartbeat.requests, what="a heartbeat while the loop is alive")
            sent += datagrams(sd)
            await until(lambda: (sent.extend(datagrams(sd)), "WATCHDOG=1" in sent)[1], what="a watchdog ping")
            assert sent[0].startswith("READY=1")
            await until(venue.hung.wait, timeout=120, what="the order call that hangs")
            url = host.monitor.url

            async def unhealthy():
                status, body = await get(url + "/health")
                return (status, json.loads(body)) if status == 503 else None
            status, verdict = await until(unhealthy, what="/health 503")
            assert verdict["status"] == "down"
            assert any("main loop stalled" in p for p in verdict["problems"]), verdict
            # The process is alive (this very test answered), and the command line says "down".
            proc = await forked_ffe.create_subprocess_exec(
                *ffe_cmd("ctl", "health", "--data-dir", str(settings.data_dir)), env=ffe_env(),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 2, (out, err)
            assert out.decode().startswith("DOWN"), out
            # Silence from the stalled loop: no watchdog ping and no heartbeat from now on.
            sent.extend(datagrams(sd))
            pings_then, beats_then = sent.count("WATCHDOG=1"), len(heartbeat.requests)
            await asyncio.sleep(1.0)  # ten heartbeat periods, five watchdog periods
            sent.extend(datagrams(sd))
            pings_later, beats_later = sent.count("WATCHDOG=1"), len(heartbeat.requests)
            await asyncio.sleep(1.0)
            sent.extend(datagrams(sd))
            assert sent.count("WATCHDOG=1") == pings_later and len(heartbeat.requests) == beats_later
            assert pings_later - pings_then <= 1 and beats_later - beats_then <= 1  # at most one already on its way
            # The operator is paged by the monitor, which does not depend on the stalled loop.
            await until(lambda: any("STALLED" in t for t in hook.texts()), what="the LOOP_STALLED page")
        finally:
            run.cancel()
            try:
                await run
            except BaseException:
                pass
    sent.extend(datagrams(sd))
    assert "STOPPING=1" in sent
    await heartbeat.stop()
    await hook.stop()
    sd.close()


async def test_a_process_suspended_then_resumed_is_no_stalled_loop(tmp_path, spawn_ffe):
    """SIGSTOP then SIGCONT (a paused VM, a debugger): on waking, every age has jumped at once, and the monitor may
    look before the main loop has had its turn. Its loop turns at once: nothing stalled, nobody paged to restart it."""
    hook = await Receiver().start()
    starter_config(tmp_path)
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(
        FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook", FFE_MONITOR__LOOP_STALE_S="2", FFE_MONITOR__AUDIT_STALE_S="2",
        FFE_ALERTS__HEARTBEAT_URL=hook.url + "/beat", FFE_ALERTS__HEARTBEAT_S="3"))
    kinds = lambda: [r.body["kind"] for r in hook.delivered if isinstance(r.body, dict)]  # noqa: E731
    try:
        await until(lambda: "STARTED" in kinds(), what="the engine started")
        await until(lambda: any(r.path == "/beat" for r in hook.requests), what="a heartbeat")
        skipped = await asyncio.to_thread(_heartbeats_skipped, tmp_path)
        engine.send(signal.SIGSTOP)
        await asyncio.sleep(4.0)  # twice the stale limits, past the heartbeat's time
        engine.send(signal.SIGCONT)
        woke = time.monotonic()
        await asyncio.sleep(4.0)  # time for a page to arrive, if one were raised
        assert engine.alive()
        assert [k for k in kinds() if "STALLED" in k] == []
        # The heartbeat due while it was frozen goes once its loop has turned, not a whole beat later.
        after = [r.at - woke for r in hook.requests if r.path == "/beat" and r.at > woke]
        assert after and after[0] < 2.5, after
        assert await asyncio.to_thread(_heartbeats_skipped, tmp_path) == skipped
    finally:
        engine.send(signal.SIGCONT)
        engine.send(signal.SIGTERM)
        await asyncio.to_thread(engine.wait)
        await hook.stop()


def _heartbeats_skipped(cwd: Path) -> int:
    status = run_ffe(cwd, "ctl", "status", "--json")
    return json.loads(status.stdout)["result"]["monitor"]["heartbeat"]["skipped"]


def test_ctl_health_exits_2_when_no_engine_runs(tmp_path):
    proc = run_ffe(tmp_path, "ctl", "health")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.startswith("DOWN") and "no engine is running" in proc.stdout


async def test_a_monitor_port_in_use_stops_the_start_in_one_line_pages_it_and_exits_for_a_retry(tmp_path):
    """A port another process holds can be free at the next start without any edit (a process that was leaving, an
    engine restarted before its old one let go): a runtime failure, exit 1, which systemd starts again (exit 2 it
    does not), paged START_FAILED as the other failed starts are, or the engine would stay down in silence."""
    hook = await Receiver().start()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            env = ffe_env(FFE_MONITOR__PORT=port, FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook")
            proc = await asyncio.to_thread(run_ffe, tmp_path, "run", "--headless", "--max-bars", "5", env=env)
    finally:
        await hook.stop()
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    # It names the setting and where it was set, and the way out (another account's engine holds the port).
    assert lines[-1].startswith("ffe: error: ") and "FFE_MONITOR__PORT" in lines[-1], proc.stderr
    assert f"monitor.port = {port}: cannot listen on 127.0.0.1:{port}: address already in use" in lines[-1], lines
    assert "monitor.port = 0" in lines[-1], lines
    assert "engine started" not in proc.stderr
    [page] = [r.body for r in hook.delivered]
    assert page["kind"] == "START_FAILED" and page["severity"] == "page", page
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in page["text"], page["text"]


@pytest.mark.parametrize("host, reason", [("192.0.2.1", "cannot assign requested address"),
                                          ("nosuch.invalid", "")])  # the resolver's words: its own
def test_a_monitor_address_no_interface_has_stops_the_start_as_a_configuration_error(tmp_path, host, reason):
    """An address none of the machine's interfaces has (or a name that is not found) cannot be listened on at any
    start until the configuration changes: exit 2, which systemd does not start again. The line names
    monitor.host where it was set, not the port, which is not at fault."""
    (tmp_path / "config.toml").write_text(f'[monitor]\nhost = "{host}"\n')
    env = ffe_env(FFE_MONITOR__TOKEN="t0ken-for-a-non-loopback-monitor")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", env=env)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ffe: error: config.toml:2: monitor.host = '{host}': cannot listen on {host}:0: "
                           f"{reason}"), last
    assert "monitor.port" not in last and "another account" not in last, last


def without_binding_low_ports() -> None:
    """A subprocess's preexec_fn: as root, it starts without CAP_NET_BIND_SERVICE (dropped from its bounding set),
    so a port below 1024 is refused as it is to any user."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 10, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_NET_BIND_SERVICE
        raise OSError(ctypes.get_errno(), "cannot drop CAP_NET_BIND_SERVICE")


def _privileged_port() -> int | None:
    """A port this machine keeps for the privileged (below net.ipv4.ip_unprivileged_port_start); None where every
    port is anyone's (a container may set it to 0)."""
    try:
        start = int(open("/proc/sys/net/ipv4/ip_unprivileged_port_start").read())
    except (OSError, ValueError):
        start = 1024
    return min(80, start - 1) if start > 1 else None


async def test_a_monitor_port_that_needs_privilege_names_the_port_and_no_other_engine(tmp_path):
    """A port below 1024 needs a privilege the engine lacks: no other engine holds it, and no restart helps."""
    port = _privileged_port()
    if port is None:  # the kernel refuses no port here: the refusal it would give, as the monitor says it
        settings = make_settings(tmp_path, monitor={"port": 0})
        async with engine_session(settings) as host:
            said = host.monitor._cannot_listen(PermissionError(errno.EACCES, "Permission denied"))
        assert "monitor.port = 0: cannot listen on 127.0.0.1:0: permission denied" in said, said
        assert "another account" not in said and "choose one above 1023" in said, said
        return
    starter_config(tmp_path)
    env = ffe_env(FFE_MONITOR__PORT=str(port))
    proc = await asyncio.to_thread(
        subprocess.run, ffe_cmd("run", "--headless", "--max-bars", "5"), cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=90, stdin=subprocess.DEVNULL, preexec_fn=without_binding_low_ports)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ffe: error: environment: FFE_MONITOR__PORT: monitor.port = {port}: cannot listen on "
                           f"127.0.0.1:{port}: permission denied"), last
    assert "another account" not in last and "monitor.port = 0" in last, last


def test_a_non_loopback_monitor_without_a_token_is_refused_in_one_line(tmp_path):
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", env=ffe_env(FFE_MONITOR__HOST="0.0.0.0"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    # the variable that set it named first, as for any key the environment sets
    assert len(lines) == 1 and lines[0].startswith(
        "ffe: error: environment: FFE_MONITOR__HOST: monitor.host = '0.0.0.0'"), proc.stderr
    assert "FFE_MONITOR__TOKEN" in lines[0]
    assert not (tmp_path / "data" / "ffe.db").exists()  # refused before anything started


async def test_with_a_token_every_request_needs_it_and_the_token_is_never_logged(tmp_path):
    token = "s3cr3t-monitor-token-0123456789"
    settings = make_settings(tmp_path, monitor={"port": 0, "host": "0.0.0.0", "token": token})
    async with engine_session(settings) as host:
        port = host.monitor.url.rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        assert (await get(base + "/health"))[0] == 401
        assert (await get(base + "/metrics", {"Authorization": "Bearer wrong"}))[0] == 401
        status, text = await get(base + "/metrics", {"Authorization": f"Bearer {token}"})
        assert status == 200 and "ffe_engine_state" in text
        # The scheme's name in any case (RFC 7235); a 401 says which scheme it needs.
        assert (await get(base + "/health", {"Authorization": f"bearer {token}"}))[0] == 200
        assert (await get(base + "/health", {"Authorization": f"Basic {token}"}))[0] == 401
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/metrics") as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="ffe"'
        logged = host.log.getvalue()
    assert token not in logged
    assert token not in (tmp_path / "logs" / "audit.jsonl").read_text()


async def ctl_health(settings) -> tuple[int, str]:
    """`ffe ctl health` as a subprocess, while this event loop (and the engine in it) keeps running."""
    proc = await forked_ffe.create_subprocess_exec(
        *ffe_cmd("ctl", "health", "--data-dir", str(settings.data_dir)), env=ffe_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def test_an_open_breaker_is_degraded_503_and_ctl_health_exits_1(tmp_path):
    settings = make_settings(tmp_path, breaker={"failure_threshold": 2, "recovery_timeout_s": 600})
    async with engine_session(settings) as host:
        await host.start_control()
        run = asyncio.ensure_future(host.engine.run())
        try:
            await until(lambda: host.engine.bars >= 10, what="bars")
            assert (await ctl_health(settings))[0] == 0
            host.engine.breaker.record_failure("exchange timeout")
            host.engine.breaker.record_failure("exchange timeout")
            status, body = await get(host.monitor.url + "/health")
            verdict = json.loads(body)
            assert status == 503 and verdict["status"] == "degraded"
            assert verdict["problems"] == ["breaker open on paper: exchange timeout"]
            code, out = await ctl_health(settings)
            assert code == 1 and out.startswith("DEGRADED") and "breaker open on paper" in out
        finally:
            host.engine.request_stop()
            await run


async def test_a_symbol_without_bars_is_stale_data_degraded_and_a_warning_is_sent(tmp_path):
    hook = await Receiver().start()
    # One bar every five seconds against a one-second staleness limit.
    settings = make_settings(tmp_path, market={"speed": 0.2, "seed": 7}, monitor={"port": 0, "data_stale_s": 1.0},
                             alerts={"webhook_url": hook.url}, risk={"stale_after_bars": 1})
    async with engine_session(settings) as host:
        run = asyncio.ensure_future(host.engine.run())
        try:
            async def stale():
                status, body = await get(host.monitor.url + "/health")
                verdict = json.loads(body)
                return verdict if status == 503 and any("no bar for" in p for p in verdict["problems"]) else None
            verdict = await until(stale, what="stale data on /health")
            assert verdict["status"] == "degraded"
            await until(lambda: [r for r in hook.delivered if r.body.get("kind") == "STALE_DATA"], what="the alert")
            alert = [r.body for r in hook.delivered if r.body.get("kind") == "STALE_DATA"][0]
            assert alert["severity"] == "warn" and "no market data" in alert["text"]
            assert "once its last bar is 1 bar old (DATA_STALE)" in alert["text"], alert["text"]
        finally:
            host.engine.request_stop()
            await run
    await hook.stop()


def denials_of(text: str) -> dict[str, float]:
    return {s.labels["gate"]: s.value for s in samples(text).get("ffe_risk_gate_denials_total", [])}


async def test_every_callers_gate_denials_are_counted_by_gate(tmp_path):
    # Denials from the operator's side of the single order path: an approval re-checked while paused, a manual
    # order too large for the account, a position closed by hand while HALTED.
    # Ten bars a second: the waiting trade's price has little time to run past its stops before the re-check.
    settings = make_settings(tmp_path, engine={"approval": "manual", "approval_ttl_s": 600},
                             market={"speed": 10.0, "seed": 7})
    async with engine_session(settings) as host:
        engine = host.engine
        url = host.monitor.url
        run = asyncio.ensure_future(engine.run())
        try:
            await until(lambda: engine.pending, what="a trade waiting for approval")
            await engine.pause(by="test")
            approval_id, waiting = next(iter(engine.pending.items()))
            approved = await engine.approve(approval_id, by="test")
            assert not approved["accepted"] and approved["reason"].startswith("ENGINE_STATE"), approved
            await engine.resume(by="test")
            too_big = await engine.operator_order("BTC/USDT", "buy", 1000.0, by="test")
            assert not too_big["accepted"] and too_big["reason"].startswith("POSITION_SIZE"), too_big
            bought = await engine.operator_order("ETH/USDT", "buy", 0.04, by="test")
            assert bought["accepted"], bought
            await until(lambda: "ETH/USDT" in engine.portfolio.positions, what="the position")
            await engine.halt(reason="test", by="test")
            closed = await engine.operator_order("ETH/USDT", "sell", 0.04, by="test")
            assert not closed["accepted"] and closed["reason"].startswith("ENGINE_STATE"), closed
        finally:
            engine.request_stop()
            await run
        denials = denials_of((await get(url + "/metrics"))[1])
    assert set(denials) == set(GATE_ORDER)
    # Every failed gate check recorded, whoever asked (the strategy's decisions, the approval's re-check, the
    # operator's orders), is counted once under its gate.
    recorded = dict(db_rows(settings.db_path, "SELECT code, COUNT(*) FROM gate_results WHERE passed = 0 "
                                              "GROUP BY code"))
    assert {g: n for g, n in denials.items() if n} == recorded
    operators = dict(db_rows(settings.db_path, "SELECT code, COUNT(*) FROM gate_results WHERE passed = 0 AND "
                                               "(decision_id IS NULL OR decision_id = ?) GROUP BY code",
                             (waiting["decision_id"],)))
    assert operators["POSITION_SIZE"] >= 1 and operators["ENGINE_STATE"] >= 2, operators


async def test_a_stalled_audit_writer_is_down_pages_the_operator_and_recovers(tmp_path):
    hook = await Receiver().start()
    settings = make_settings(tmp_path, market={"speed": 5.0, "seed": 7},
                             monitor={"port": 0, "audit_stale_s": 1.0, "loop_stale_s": 600},
                             alerts={"webhook_url": hook.url + "/hook", "window_s": 60})
    disk = threading.Event()  # set: the disk answers
    async with engine_session(settings) as host:
        await host.start_control()
        engine = host.engine
        url = host.monitor.url
        run = asyncio.ensure_future(engine.run())
        try:
            await until(lambda: engine.bars >= 3, what="bars")
            assert (await get(url + "/health"))[0] == 200
            # The audit writer's own thread held, as a hung disk holds a write: records wait to be written, the
            # bar loop waits for them (nothing trades unrecorded), and the process still answers.
            host.audit.thread.submit(disk.wait)

            async def audit_stalled():
                status, body = await get(url + "/health")
                verdict = json.loads(body)
                return verdict if status == 503 and any("audit stalled" in p for p in verdict["problems"]) else None
            verdict = await until(audit_stalled, what="/health 503 for the audit trail")
            # Past the limit, shown to the millisecond: a lag of 1.0004 s is down and reads 1.0.
            assert verdict["status"] == "down" and verdict["audit_lag_s"] >= 1.0, verdict
            code, out = await ctl_health(settings)
            assert code == 2 and out.startswith("DOWN") and "audit stalled" in out, out
            # The page leaves while the trail is stalled: the outbox does not wait for the audit trail.
            await until(lambda: [r for r in hook.delivered if r.body.get("kind") == "AUDIT_STALLED"],
                        what="the AUDIT_STALLED page")
            page = [r.body for r in hook.delivered if r.body.get("kind") == "AUDIT_STALLED"][0]
            assert page["severity"] == "page" and "audit trail STALLED" in page["text"]
            # The kill switch takes effect at once; HALTED is stored once the disk answers.
            halting = asyncio.ensure_future(engine.halt(reason="audit stalled", by="test"))
            await until(lambda: engine.state.value == "HALTED", what="HALTED in memory")
            assert not halting.done()
            bars = engine.bars
        finally:
            disk.set()
        await halting
        assert db_rows(settings.db_path, "SELECT state FROM engine_state") == [("HALTED",)]
        # The disk answers again: the waiting records are written, the loop goes on, the verdict is healthy.
        status, verdict = await until(lambda: _healthy(url), what="/health 200 again")
        assert verdict["audit_lag_s"] < 1.0
        await until(lambda: engine.bars >= bars + 3, what="bars after the stall")
        engine.request_stop()
        await run
    await hook.stop()
    # Every record reached the file, in order, and the file agrees with the database.
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


async def _healthy(url: str):
    status, body = await get(url + "/health")
    return (status, json.loads(body)) if status == 200 else None


class DownVenue(PaperVenue):
    """An exchange that refuses every new order as unavailable (a 503), and answers everything else."""

    async def create_order(self, req):
        raise VenueUnavailable("503 Service Unavailable")


async def test_venue_calls_errors_and_breaker_changes_are_counted_on_the_scrape(tmp_path):
    # The strategy's entries wait for approval: only the test's two orders reach the order path (a strategy entry
    # refused by the open breaker before the scrape would count a third rejection).
    settings = make_settings(tmp_path, breaker={"failure_threshold": 2, "recovery_timeout_s": 600},
                             engine={"approval": "manual"})
    from ffe_engine.kernel import paper_venue

    base = paper_venue(settings, list(settings.engine.symbols))
    venue = DownVenue(list(settings.engine.symbols), starting_cash=10_000.0, quote="USDT", fee_bps=10.0,
                      slippage_bps=5.0, min_notional=base.market("BTC/USDT").min_notional, amount_step=1e-6)
    async with engine_session(settings, venue=venue) as host:
        run = asyncio.ensure_future(host.engine.run())
        try:
            await until(lambda: host.engine.bars >= 5, what="bars")
            for _ in range(2):
                placed = await host.engine.operator_order("BTC/USDT", "buy", 0.002, by="test")
                assert not placed["accepted"], placed
            assert host.engine.breaker.state == "open"
            found = samples((await get(host.monitor.url + "/metrics"))[1])
        finally:
            host.engine.request_stop()
            await run
    errors = {(s.labels["venue"], s.labels["error"]): s.value for s in found["ffe_venue_errors_total"]}
    assert errors == {("paper", "VenueUnavailable"): 2.0}
    assert [(s.labels, s.value) for s in found["ffe_breaker_transitions_total"]] == [
        ({"venue": "paper", "state": "open"}, 1.0)]
    count = found["ffe_venue_request_duration_seconds_count"][0]
    assert count.labels == {"venue": "paper"} and count.value >= 2  # the two orders, and any lookups
    buckets = [s for s in found["ffe_venue_request_duration_seconds_bucket"] if s.labels["venue"] == "paper"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == count.value
    assert all(a.value <= b.value for a, b in zip(buckets, buckets[1:]))  # cumulative
    assert found["ffe_orders_rejected_total"][0].value == 2.0, db_rows(settings.db_path,
                                                                       "SELECT reason, status, error FROM orders")


def test_a_sink_given_names_gets_only_those_events_and_nothing_is_encoded_for_no_one():
    """The monitor watches a few event names: the bus hands it only those, and an event no sink takes is not
    encoded at all (a backtest without records has nothing to write)."""
    from ffe_engine.clock import ManualClock
    from ffe_engine.events import EngineStateChanged, EventBus, FillEvent

    bus = EventBus(ManualClock(), chain=False)
    seen: list[str] = []
    bus.add_sink(lambda ev, line: seen.append(ev.name), names={"engine_state"})
    assert bus.publish(FillEvent(client_order_id="a", symbol="BTC/USDT", side="buy", quantity=1.0, price=1.0)) is None
    line = bus.publish(EngineStateChanged(state="HALTED", previous="RUNNING", reason="kill switch", by="operator"))
    assert seen == ["engine_state"] and line is not None and b'"HALTED"' in line
    everything: list[str] = []
    bus.add_sink(lambda ev, line: everything.append(ev.name))
    bus.publish(FillEvent(client_order_id="b", symbol="BTC/USDT", side="buy", quantity=1.0, price=1.0))
    assert seen == ["engine_state"] and everything == ["fill"]
    assert bus.seq == 3  # every audited event takes its seq, taken by a sink or not


def test_health_of_an_engine_whose_run_has_ended_says_stopped_not_its_last_state():
    """A console left open after its run ended (--max-bars): `ffe ctl status` says STOPPED, was RUNNING; `ffe ctl
    health`'s line says the same, not `DOWN RUNNING`, which reads as an engine trading while down."""
    from ffe_engine.config import MonitorSettings
    from ffe_engine.health import assess, one_line
    from ffe_engine.liveness import Liveness

    verdict = assess(state="RUNNING", stopped=True, liveness=Liveness(lambda: 10.0, lambda: 10.0), symbols=[],
                     breakers=[], reconcile_blocked=0, pending_approvals=0, audit=None, cfg=MonitorSettings(),
                     timeframe_ms=60_000)
    assert verdict["status"] == "down" and verdict["state"] == "RUNNING"  # the last state, for what reads it
    assert one_line(verdict).startswith("DOWN STOPPED (was RUNNING)"), one_line(verdict)


def test_health_of_an_engine_still_starting_is_down_as_ffe_ctl_health_says_it():
    """The monitor answers while the engine starts (a live start waits on the exchange for seconds): no loop has
    turned and no bar has come, so it is not healthy: down, saying it is starting, as `ffe ctl health` says then
    (`the engine ... is starting`)."""
    from ffe_engine.config import MonitorSettings
    from ffe_engine.health import assess, one_line
    from ffe_engine.liveness import Liveness

    verdict = assess(state="PAUSED", stopped=False, started=False, liveness=Liveness(lambda: 1.0, lambda: 1.0),
                     symbols=["BTC/USDT"], breakers=[], reconcile_blocked=0, pending_approvals=0, audit=None,
                     cfg=MonitorSettings(), timeframe_ms=3_600_000)
    assert verdict["status"] == "down" and verdict["problems"] == ["the engine is starting"], verdict
    assert one_line(verdict).startswith("DOWN"), one_line(verdict)


def test_a_loop_not_turned_yet_is_aged_from_the_end_of_the_start_not_from_before_it():
    """A live start waits on the exchange for seconds: the loop that has not turned yet right after it is neither
    healthy on an age the start took (16 s against a limit of 30), nor stalled on it (against a limit of 3)."""
    from ffe_engine.config import MonitorSettings
    from ffe_engine.health import assess
    from ffe_engine.liveness import Liveness

    now = [100.0]
    live = Liveness(lambda: now[0], lambda: now[0])
    now[0] += 16.0  # the start took 16 s
    live.started()
    now[0] += 0.5
    verdict = assess(state="PAUSED", stopped=False, started=True, liveness=live, symbols=["BTC/USDT"], breakers=[],
                     reconcile_blocked=0, pending_approvals=0, audit=None, cfg=MonitorSettings(loop_stale_s=3.0),
                     timeframe_ms=3_600_000)
    assert verdict["status"] == "healthy" and verdict["loop_age_s"] == 0.5, verdict


async def test_a_loop_held_by_the_database_is_paged_loop_stalled_once_it_can_be_recorded(tmp_path):
    """Another process holds the database's lock for longer than monitor.loop_stale_s (not long enough to be a
    failed write): the loop waits on it, and so did the monitor's own once-a-second look, which then never saw the
    stall. The stall is seen while it lasts, and paged once the outbox can be written."""
    hook = await Receiver().start()
    settings = make_settings(tmp_path, market={"speed": 20.0}, monitor={"port": 0, "loop_stale_s": 1.0},
                             alerts={"webhook_url": hook.url + "/hook", "retry_initial_s": 0.05,
                                                               "retry_max_s": 0.2, "timeout_s": 2.0})
    async with engine_session(settings) as host:
        run = asyncio.ensure_future(host.engine.run())
        try:
            await until(lambda: host.engine.bars >= 3, what="bars")
            held = threading.Event()

            def hold_the_lock() -> None:
                conn = sqlite3.connect(settings.db_path, timeout=10)
                conn.execute("BEGIN EXCLUSIVE")
                held.set()
                time.sleep(3.5)
                conn.rollback()
                conn.close()
            holder = threading.Thread(target=hold_the_lock)
            holder.start()
            await asyncio.get_running_loop().run_in_executor(None, held.wait)
            await asyncio.get_running_loop().run_in_executor(None, holder.join)
            await until(lambda: any(r.body.get("kind") == "LOOP_STALLED" for r in hook.delivered), timeout=30,
                        what="the LOOP_STALLED page")
            assert host.engine.state.value == "RUNNING"
        finally:
            host.engine.request_stop()
            await run
    await hook.stop()
