"""Alerts to real HTTP receivers on 127.0.0.1 (one per channel, recording requests and failing on a schedule):
formats of the four channels, a storm of breaker openings, a receiver down and back, alerts in the outbox across a
SIGKILL, `ffe alert test`, and secret channel URLs kept out of logs, audit and `ffe config check`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from typing import Any, AsyncIterator

import aiohttp
import pytest

import forked_ffe
from conftest import config_for_run, db_rows, db_value, engine_session, ffe_cmd, ffe_env, make_settings
from ffe_engine import fmt
from ffe_engine.alerts import Alert
from ffe_engine.redact import REDACTED
from ffe_engine.venues.base import VenueUnavailable
from live_helpers import SteppedClock, wait_for
from prometheus_client.parser import text_string_to_metric_families
from receiver import Receiver
from test_alert_channel_down import log_lines  # noqa: F401
from test_monitor import until

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}


def kinds(receiver: Receiver) -> list[str]:
    return [r.body.get("kind") for r in receiver.delivered if isinstance(r.body, dict)]


# A probe soon after each opening: the openings, on the engine's clock, all within one alert window.
QUICK_PROBES = {"failure_threshold": 3, "recovery_timeout_s": 0.001}


async def breaker_openings(breaker, clock: SteppedClock, n: int) -> None:
    """The exchange timing out: its calls fail until the breaker opens, then each probe past the recovery timeout
    fails and opens it again, until it has opened n times."""
    failed = 0

    async def timeout() -> None:
        raise VenueUnavailable(f"exchange timeout #{failed}")

    while breaker.openings < n:
        clock.forward(breaker.recovery_timeout_s)
        with contextlib.suppress(VenueUnavailable):
            await breaker.call(timeout)
        failed += 1


async def test_every_channel_gets_the_halted_page_in_its_own_format(tmp_path):
    hook, slack, discord, tg = [await Receiver().start() for _ in range(4)]
    tg.telegram = True
    settings = make_settings(tmp_path, alerts={
        "webhook_url": hook.url + "/hook", "slack_url": slack.url + "/services/T0/B0/xyz",
        "discord_url": discord.url + "/api/webhooks/1/abc", "telegram_token": "123456:telegram-token-abc",
        "telegram_chat_id": "-100200300", "telegram_api": tg.url, **FAST})
    async with engine_session(settings) as host:
        await host.engine.halt(reason="operator saw a bad fill", by="ctl")
        await until(lambda: all(any("HALTED" in t for t in r.texts()) for r in (hook, slack, discord, tg)),
                    what="HALTED on every channel")
        halted = [r for r in hook.delivered if r.body.get("kind") == "HALTED"][0].body
        assert halted["severity"] == "page" and halted["key"] == "HALTED"
        assert "HALTED by ctl: operator saw a bad fill" in halted["text"]
        assert any(t.startswith("[PAGE] ffe HALTED by ctl") for t in slack.texts())
        assert all(set(r.body) == {"text"} for r in slack.delivered)
        assert all(set(r.body) == {"content"} for r in discord.delivered)
        sent = [r for r in tg.delivered if "HALTED" in r.body["text"]][0]
        assert sent.path == "/bot123456:telegram-token-abc/sendMessage"
        assert sent.body["chat_id"] == "-100200300"
        status = host.engine.snapshot()["monitor"]["channels"]
        assert set(status) == {"webhook", "slack", "discord", "telegram"}
        assert all(st["ok"] and st["sent"] >= 1 for st in status.values())
    for r in (hook, slack, discord, tg):
        await r.stop()


async def test_a_storm_of_500_breaker_openings_is_one_page_and_one_summary(tmp_path):
    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, "window_s": 3.0, **FAST},
                             breaker=QUICK_PROBES)
    clock = SteppedClock()
    async with engine_session(settings, clock=clock) as host:
        breaker = host.engine.breaker
        sub = host.bus.subscribe()
        await breaker_openings(breaker, clock, 500)
        breaker.record_failure("exchange timeout of a call under way")  # no new opening: not paged, not counted
        events = [ev for ev in sub.drain() if ev.name == "breaker"]
        opened = sum(1 for ev in events if ev.state == "open" and ev.previous != "open")
        assert opened == 500 and events[-1].previous == "open"  # a probe that fails opens it again
        await until(lambda: "BREAKER_OPEN_REPEATED" in kinds(hook), what="the summary")
        await asyncio.sleep(0.5)  # anything else would have arrived with the summary
        bodies = [r.body for r in hook.delivered if r.body["kind"].startswith("BREAKER_OPEN")]
        assert [b["kind"] for b in bodies] == ["BREAKER_OPEN", "BREAKER_OPEN_REPEATED"]
        assert bodies[0]["severity"] == "page" and bodies[1]["severity"] == "page"  # it sums up pages
        # Every opening after the first was counted into the summary, none was lost.
        assert bodies[1]["text"].startswith(f"{opened - 1} more BREAKER_OPEN alert(s) in the last 3s")
    await hook.stop()


async def test_a_receiver_down_then_back_gets_every_alert_once_and_in_order(tmp_path):
    hook = await Receiver().start()
    hook.fail_with = 503
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, "min_severity": "warn", **FAST})
    async with engine_session(settings) as host:
        notifier = host.monitor.notifier
        texts = [f"alert number {i}" for i in range(6)]
        for i, text in enumerate(texts):
            notifier.raise_alert(Alert("TEST", f"TEST:{i}", "warn", text))
        # Counted once the notifier has the receiver's answer (the receiver has the request a moment before).
        webhook = lambda: host.engine.snapshot()["monitor"]["channels"]["webhook"]  # noqa: E731
        await until(lambda: len(hook.requests) >= 8 and webhook()["failures"] >= 8, what="several failed deliveries")
        assert hook.delivered == []
        st = webhook()
        assert not st["ok"] and st["failures"] >= 8 and st["pending"] == 6 and st["last_error"] == "HTTP 503"
        async with aiohttp.ClientSession() as s:
            async with s.get(host.monitor.url + "/metrics") as r:
                scraped = {smp.name: smp.value for fam in text_string_to_metric_families(await r.text())
                           for smp in fam.samples if smp.labels.get("channel") == "webhook"}
        assert scraped["ffe_alerts_pending"] == 6 and scraped["ffe_alerts_failed_total"] >= 8
        assert db_value(settings.db_path, "SELECT COUNT(*) FROM alert_outbox WHERE status = 'pending'") == 6
        hook.fail_with = None  # back
        await until(lambda: len(hook.delivered) >= 6, what="delivery once the receiver is back")
        await asyncio.sleep(0.5)
        where = f"[{socket.gethostname()}:{settings.data_dir.resolve()}]"
        assert hook.texts() == [f"{t} {where}" for t in texts]  # the text as raised, and which engine raised it
        st = host.engine.snapshot()["monitor"]["channels"]["webhook"]
        assert st["ok"] and st["pending"] == 0 and st["sent"] == 6
    assert [r[0] for r in db_rows(settings.db_path, "SELECT status FROM alert_outbox ORDER BY id")] == ["sent"] * 6
    await hook.stop()


async def test_a_full_outbox_keeps_the_pages_and_tells_the_operator_what_it_dropped(tmp_path):
    """A receiver down for long fills the outbox: the oldest of the least severe alerts go first, never a page
    while a warning is kept, and once the receiver is back it is told how many were dropped."""
    hook = await Receiver().start()
    hook.fail_with = 500
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, "min_severity": "info", "outbox_max": 4,
                                               **FAST})
    async with engine_session(settings) as host:
        notifier = host.monitor.notifier
        notifier.raise_alert(Alert("HALTED", "HALTED", "page", "the page"))
        for i in range(6):
            notifier.raise_alert(Alert("TEST", f"TEST:{i}", "warn", f"warning {i}"))
        notifier.raise_alert(Alert("NOTE", "NOTE", "info", "a note"))
        webhook = lambda: host.engine.snapshot()["monitor"]["channels"]["webhook"]  # noqa: E731
        await until(lambda: webhook()["dropped"] >= 5, what="the outbox trimmed")
        dropped = [t.split(" [")[0] for (t,) in db_rows(
            settings.db_path, "SELECT text FROM alert_outbox WHERE status = 'dropped' ORDER BY id")]
        # The two notes (the start's STARTED among them) and the oldest warnings; the page is kept. The STARTED
        # is kept instead when the trim found it on the wire (a retry of it under way): one warning more goes.
        started = [t for t in dropped if t.startswith("ffe started")]
        warnings = ["warning 0", "warning 1", "warning 2"] + ([] if started else ["warning 3"])
        assert dropped == started + warnings + ["a note"], dropped
        hook.fail_with = None
        await until(lambda: any("dropped" in t for t in hook.texts()), what="the notice of the dropped alerts")
        await asyncio.sleep(0.5)
    # The notice of the dropped ones may come before or after the page (when the channel takes alerts again).
    texts = [t.split(" [")[0] for t in hook.texts() if not t.startswith(("ffe started", "ffe dropped"))]
    assert texts[0] == "the page", texts  # kept, though older than every warning
    [notice] = [r.body for r in hook.delivered if r.body.get("kind") == "ALERTS_DROPPED"]
    assert notice["severity"] == "warn" and "dropped 5 undelivered alert(s)" in notice["text"], notice
    assert texts[1:] == (
        [f"warning {i}" for i in range(len(warnings), 6)] + ["ffe stopped (PAPER, RUNNING)."])
    await hook.stop()


async def test_an_alert_on_the_wire_when_the_outbox_is_trimmed_is_not_counted_dropped(tmp_path):
    """The alert being sent when the outbox fills is not dropped from under its delivery: an alert counted dropped
    is never delivered, and the notice's count is the number of alerts the channel never got."""
    hook = await Receiver().start()
    hook.hold = asyncio.Event()  # the first delivery (the start's STARTED) waits on the wire
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, "min_severity": "info", "outbox_max": 3,
                                               **{**FAST, "timeout_s": 30.0}})
    async with engine_session(settings) as host:
        await until(lambda: len(hook.requests) >= 1, what="the first alert on the wire")
        notifier = host.monitor.notifier
        for i in range(5):
            notifier.raise_alert(Alert("TEST", f"TEST:{i}", "warn", f"warning {i}"))
        webhook = lambda: host.engine.snapshot()["monitor"]["channels"]["webhook"]  # noqa: E731
        await until(lambda: webhook()["dropped"] >= 1, what="the outbox trimmed")
        hook.hold.set()
        await until(lambda: any("dropped" in t for t in hook.texts()), what="the notice of the dropped alerts")
        await asyncio.sleep(0.5)
    dropped = [t for (t,) in db_rows(settings.db_path, "SELECT text FROM alert_outbox WHERE status = 'dropped'")]
    texts = [t.split(" [")[0] for t in hook.texts()]  # less the host tag
    assert dropped and not set(dropped) & set(texts), (dropped, texts)
    [notice] = [r.body["text"] for r in hook.delivered if r.body.get("kind") == "ALERTS_DROPPED"]
    assert f"dropped {len(dropped)} undelivered alert(s)" in notice, (notice, dropped)
    assert texts[0].startswith("ffe started"), texts  # the one on the wire, delivered once its receiver answered
    await hook.stop()


async def _ffe(*args: str, env: dict[str, str], cwd) -> asyncio.subprocess.Process:
    config_for_run(cwd, args)
    return await forked_ffe.create_subprocess_exec(*ffe_cmd(*args), env=env, cwd=cwd,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


def ffe_ok(cwd, *args: str, env: dict[str, str]):
    """`ffe ARGS` run to its end in `cwd`, which must succeed."""
    from conftest import run_ffe

    proc = run_ffe(cwd, *args, env=env)
    assert proc.returncode == 0, (args, proc.stderr[-3000:])
    return proc


async def halted_with_its_page_pending(cwd, env: dict[str, str]) -> asyncio.subprocess.Process:
    """A headless engine in `cwd` halted by `ffe ctl halt` while its alert receiver fails: its HALTED page waits in
    the outbox. The engine, still running, for the caller to stop."""
    db = cwd / "data" / "ffe.db"
    engine = await _ffe("run", "--headless", env=env, cwd=cwd)
    try:
        await until(lambda: db.exists() and (cwd / "data" / "ffe.sock").exists(), what="the engine's socket")
        await asyncio.to_thread(ffe_ok, cwd, "ctl", "halt", env=env)
        await until(lambda: db_value(db, "SELECT COUNT(*) FROM alert_outbox WHERE kind = 'HALTED' AND "
                                         "status = 'pending'"), what="HALTED waiting in the outbox")
    except BaseException:
        engine.send_signal(signal.SIGTERM)
        await asyncio.wait_for(engine.communicate(), 60)
        raise
    return engine


async def test_alerts_in_the_outbox_at_sigkill_are_delivered_after_the_restart_and_the_url_stays_secret(tmp_path):
    hook = await Receiver().start()
    hook.fail_with = 503
    secret_url = hook.url + "/hooks/T000/B000/very-secret-webhook-path-4242"
    env = ffe_env(FFE_ALERTS__WEBHOOK_URL=secret_url, FFE_ALERTS__RETRY_INITIAL_S="0.05",
                  FFE_ALERTS__RETRY_MAX_S="0.2", FFE_MARKET__SPEED="20")
    db = tmp_path / "data" / "ffe.db"
    first = await _ffe("run", "--headless", env=env, cwd=tmp_path)
    try:
        await until(lambda: db.exists() and (tmp_path / "data" / "ffe.sock").exists(), what="the engine's socket")
        halt = await _ffe("ctl", "halt", env=env, cwd=tmp_path)
        assert await halt.wait() == 0
        # Oldest first: the STARTED notice is tried (and fails) while HALTED waits behind it.
        await until(lambda: db_value(db, "SELECT COUNT(*) FROM alert_outbox WHERE kind = 'HALTED' AND "
                                         "status = 'pending'") and db_value(
                        db, "SELECT MAX(attempts) FROM alert_outbox WHERE status = 'pending'"),
                    what="HALTED waiting in the outbox, the receiver failing")
    finally:
        first.send_signal(signal.SIGKILL)
        _, err1 = await first.communicate()
    assert hook.delivered == []
    hook.fail_with = None
    second = await _ffe("run", "--headless", env=env, cwd=tmp_path)
    try:
        await until(lambda: "HALTED" in kinds(hook) and kinds(hook).count("STARTED") == 2,
                    what="HALTED delivered after the restart, and the second start's notice after it")
    finally:
        second.send_signal(signal.SIGTERM)
        _, err2 = await second.communicate()
    # Once each, in the order they were raised: the first run's start, its HALTED page, then the second start.
    assert kinds(hook)[:3] == ["STARTED", "HALTED", "STARTED"]
    assert kinds(hook).count("HALTED") == 1
    # The URL is a credential: not in the log lines, the audit trail, the database or `ffe config check`.
    check = await _ffe("config", "check", env=env, cwd=tmp_path)
    shown, _ = await check.communicate()
    assert check.returncode == 0
    secret = "very-secret-webhook-path-4242"
    for text in (err1.decode(), err2.decode(), shown.decode(), (tmp_path / "logs" / "audit.jsonl").read_text()):
        assert secret not in text
    assert "HTTP 503" in err1.decode()  # the failure is told, without the URL
    assert "# webhook_url: not set" not in shown.decode() and "webhook_url = \"********\"" in shown.decode()
    assert not any(secret in str(r) for r in db_rows(db, "SELECT data FROM events"))
    await hook.stop()


async def test_a_receiver_that_redirects_has_not_taken_the_alert_and_it_is_sent_again_once_it_does(tmp_path):
    # A webhook behind a sign-in proxy (or moved) answers 302: following it reaches a page that answers 200 but
    # never took the alert. It is a failed delivery, retried, counted, and told; the heartbeat's alike.
    hook = await Receiver().start()
    hook.redirect = True
    env = ffe_env(FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook", FFE_ALERTS__HEARTBEAT_URL=hook.url + "/beat")
    proc = await _ffe("alert", "test", env=env, cwd=tmp_path)
    out, err = await proc.communicate()
    assert proc.returncode == 1, err
    assert out.decode().splitlines() == ["webhook: FAILED (HTTP 302)", "heartbeat: FAILED (HTTP 302)"]
    assert [(r.method, r.path) for r in hook.requests] == [("POST", "/hook"), ("GET", "/beat")]  # none followed
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST})
    async with engine_session(settings) as host:
        await host.engine.halt("operator", by="operator")
        webhook = lambda: host.engine.snapshot()["monitor"]["channels"]["webhook"]  # noqa: E731
        await until(lambda: webhook()["failures"] >= 2, what="failed deliveries")
        st = webhook()
        assert not st["ok"] and st["pending"] >= 1 and st["sent"] == 0 and st["last_error"] == "HTTP 302"
        assert db_value(settings.db_path, "SELECT status FROM alert_outbox WHERE kind = 'HALTED'") == "pending"
        hook.redirect = False  # the proxy lets it through again
        await until(lambda: "HALTED" in kinds(hook), what="the HALTED page delivered")
    assert db_value(settings.db_path, "SELECT status FROM alert_outbox WHERE kind = 'HALTED'") == "sent"
    await hook.stop()


async def test_a_disk_running_low_is_told_before_it_fills_once_per_episode_and_scraped(tmp_path):
    """Nothing else watches the free space of the disks the records go to: the first sign of one filling was the
    RECORDS_UNWRITABLE halt. Below `monitor.disk_free_min_mb` the operator is warned (DISK_LOW, once while it
    lasts; the data and log directories on one file system are one warning), its return after room was made is
    news, and /metrics has the free space of each."""
    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST},
                             monitor={"disk_free_min_mb": 1e9})  # more than any disk here: low from the start
    try:
        async with engine_session(settings) as host:
            await until(lambda: "DISK_LOW" in kinds(hook), what="the DISK_LOW warning")
            await asyncio.sleep(2.5)  # a few more looks: still low, not told again
            [low] = [r.body for r in hook.delivered if r.body["kind"] == "DISK_LOW"]
            assert low["severity"] == "warn" and str(settings.data_dir) in low["text"], low
            assert "MB free" in low["text"] and "RECORDS_UNWRITABLE" in low["text"], low
            async with aiohttp.ClientSession() as s:
                async with s.get(host.monitor.url + "/metrics") as r:
                    free = {smp.labels["dir"]: smp.value for fam in text_string_to_metric_families(await r.text())
                            for smp in fam.samples if smp.name == "ffe_disk_free_bytes"}
            assert set(free) == {"data", "logs"} and all(v > 0 for v in free.values()), free
            host.monitor.cfg = host.monitor.cfg.model_copy(update={"disk_free_min_mb": 0.0})  # room again
            await asyncio.sleep(1.5)
            host.monitor.cfg = host.monitor.cfg.model_copy(update={"disk_free_min_mb": 1e9})  # low again: news
            await until(lambda: kinds(hook).count("DISK_LOW") == 2, what="the second DISK_LOW warning")
        quiet = make_settings(tmp_path / "quiet", alerts={"webhook_url": hook.url, **FAST},
                              monitor={"disk_free_min_mb": 0.0})
        async with engine_session(quiet):
            await asyncio.sleep(2.5)
        assert kinds(hook).count("DISK_LOW") == 2  # 0: not watched
    finally:
        await hook.stop()


async def test_a_channel_configured_at_the_last_start_and_unset_now_is_told_once(tmp_path):
    """Alert channels are set only by `.env` or the environment: a `.env` lost or edited takes a channel away
    without a word, and the operator learns of it when a page never comes. A start that finds a channel of the last
    start unset says so: a page on the channels left, a warning in the log, the channel FAILING on the console's
    alerts line (its alerts kept in the outbox) for this run. The next start takes the channels as they are; the
    channel set again gets what waited for it."""
    hook, slack = await Receiver().start(), await Receiver().start()
    both = {"webhook_url": hook.url, "slack_url": slack.url, **FAST}
    try:
        async with engine_session(make_settings(tmp_path, alerts=both)) as host:
            await until(lambda: host.engine.snapshot()["monitor"]["channels"]["slack"]["sent"] >= 1,
                        what="an alert on slack")
        assert "ALERT_CHANNEL_LOST" not in kinds(hook)
        settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST})
        async with engine_session(settings) as host:
            await host.engine.halt(reason="the slack channel should have had this", by="ctl")
            await until(lambda: "ALERT_CHANNEL_LOST" in kinds(hook), what="the lost channel paged")
            lost = host.engine.snapshot()["monitor"]["channels"]["slack"]
        logged = host.log.getvalue()
        [page] = [r.body for r in hook.delivered if r.body["kind"] == "ALERT_CHANNEL_LOST"]
        assert page["severity"] == "page", page
        assert "slack" in page["text"] and "FFE_ALERTS__SLACK_URL" in page["text"], page
        assert not lost["ok"] and "FFE_ALERTS__SLACK_URL" in lost["last_error"], lost
        assert lost["pending"] == 0 and lost["sent"] == 0, lost  # nothing is queued for a channel not configured
        said = [line for line in logged.splitlines() if "alert channel" in line and "slack" in line]
        assert len(said) == 1 and slack.url not in logged + page["text"], said

        async with engine_session(settings) as host:  # told: the channels as they are now
            await asyncio.sleep(1.5)
            assert "slack" not in host.engine.snapshot()["monitor"]["channels"]
        async with engine_session(make_settings(tmp_path, alerts=both)) as host:  # set again: nothing lost
            await asyncio.sleep(1.5)
            assert host.engine.snapshot()["monitor"]["channels"]["slack"]["ok"]
        assert kinds(hook).count("ALERT_CHANNEL_LOST") == 1 and "alert channel" not in host.log.getvalue()
    finally:
        await hook.stop()
        await slack.stop()


async def test_a_start_with_every_channel_unset_says_so_in_its_log_and_status(tmp_path):
    """The whole `.env` lost: no channel is left to page, so the log and the console's alerts line say it."""
    hook = await Receiver().start()
    try:
        async with engine_session(make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST})) as host:
            await until(lambda: host.engine.snapshot()["monitor"]["channels"]["webhook"]["sent"] >= 1,
                        what="an alert on the webhook")
        async with engine_session(make_settings(tmp_path)) as host:
            channels = host.engine.snapshot()["monitor"]["channels"]
        assert set(channels) == {"webhook"} and not channels["webhook"]["ok"], channels
        assert "FFE_ALERTS__WEBHOOK_URL" in channels["webhook"]["last_error"], channels
        [said] = [line for line in host.log.getvalue().splitlines() if "alert channel" in line and "webhook" in line]
        assert "FFE_ALERTS__WEBHOOK_URL" in said and hook.url not in said, said
    finally:
        await hook.stop()


async def test_ffe_alert_test_reports_each_channel(tmp_path):
    ok, down = await Receiver().start(), await Receiver().start()
    down.fail_with = 500
    env = ffe_env(FFE_ALERTS__SLACK_URL=ok.url + "/slack", FFE_ALERTS__DISCORD_URL=down.url + "/discord",
                  FFE_ALERTS__HEARTBEAT_URL=ok.url + "/beat")
    proc = await _ffe("alert", "test", env=env, cwd=tmp_path)
    out, err = await proc.communicate()
    assert proc.returncode == 1, err
    assert out.decode().splitlines() == ["slack: delivered", "discord: FAILED (HTTP 500)", "heartbeat: delivered"]
    assert [r.path for r in ok.requests] == ["/slack", "/beat"]
    assert "test alert" in ok.requests[0].body["text"]
    assert f"[{socket.gethostname()}:{(tmp_path / 'data').resolve()}]" in ok.requests[0].body["text"]
    down.fail_with = None
    proc = await _ffe("alert", "test", env=env, cwd=tmp_path)
    assert await proc.wait() == 0
    proc = await _ffe("alert", "test", env=ffe_env(), cwd=tmp_path)
    _, err = await proc.communicate()
    assert proc.returncode == 2 and err.decode().startswith("ffe: error: no alert channel is configured")
    await ok.stop()
    await down.stop()


async def test_ffe_alert_test_says_why_a_channel_failed_in_words_and_no_secret(tmp_path):
    """Why a delivery failed, in words the operator acts on: where the connection was refused, a name not found, a
    TLS handshake that failed, an answer that is not JSON, Telegram's own reason; never an exception's class name,
    and never the bot token or a hook's path."""
    bot = await Receiver().start()
    token = "123456:Telegram-Token-abcdefghij"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    port = bot.url.rsplit(":", 1)[1]
    env = ffe_env(FFE_ALERTS__TELEGRAM_TOKEN=token, FFE_ALERTS__TELEGRAM_CHAT_ID="-1001234",
                  FFE_ALERTS__TELEGRAM_API=bot.url, FFE_ALERTS__WEBHOOK_URL=f"http://127.0.0.1:{closed}/hook-path-4242",
                  FFE_ALERTS__SLACK_URL="http://nosuch.invalid/services/slack-path-4242",
                  FFE_ALERTS__DISCORD_URL=f"https://127.0.0.1:{port}/api/webhooks/discord-path-4242")
    refused = json.dumps({"ok": False, "error_code": 400, "description": f"Bad Request: chat not found {token}"})
    telegram = {(200, refused): f"telegram answered: Bad Request: chat not found {REDACTED}",
                (400, refused): f"HTTP 400: telegram answered: Bad Request: chat not found {REDACTED}",
                (200, "ok"): "the answer is not JSON"}
    try:
        for answer, says in telegram.items():
            bot.answer = answer
            proc = await _ffe("alert", "test", env=env, cwd=tmp_path)
            out, err = await proc.communicate()
            assert proc.returncode == 1, err
            lines = out.decode().splitlines()
            assert lines[0] == f"webhook: FAILED (cannot connect to 127.0.0.1:{closed}: connection refused)", lines
            assert lines[1].startswith("slack: FAILED (cannot connect to nosuch.invalid:80: "), lines
            assert lines[2].startswith(f"discord: FAILED (cannot connect to 127.0.0.1:{port}: the TLS handshake "
                                       "failed"), lines
            assert lines[3] == f"telegram: FAILED ({says})", lines
            assert "Error" not in out.decode() and "4242" not in out.decode() and token not in out.decode(), lines
    finally:
        await bot.stop()


async def test_a_secret_quoted_in_an_error_is_masked_in_the_alert_and_on_health(tmp_path):
    hook = await Receiver().start()
    key = "exchange-api-key-0123456789"
    settings = make_settings(tmp_path, exchange={"api_key": key, "secret": "exchange-secret-9876543210"},
                             alerts={"webhook_url": hook.url, **FAST}, breaker={"failure_threshold": 1})
    async with engine_session(settings) as host:
        host.engine.breaker.record_failure(f"401 Unauthorized for key {key}")
        await until(lambda: "BREAKER_OPEN" in kinds(hook), what="the breaker page")
        text = [r.body["text"] for r in hook.delivered if r.body["kind"] == "BREAKER_OPEN"][0]
        assert key not in text and "401 Unauthorized for key ********" in text
        async with aiohttp.ClientSession() as s:
            async with s.get(host.monitor.url + "/health") as r:
                body = await r.text()
        assert "breaker open" in body and key not in body
    assert not any(key in str(row) for row in db_rows(settings.db_path, "SELECT text FROM alert_outbox"))
    await hook.stop()


class ManualTime:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@contextlib.asynccontextmanager
async def a_notifier(tmp_path, **alerts) -> AsyncIterator[tuple[Receiver, Any, Any, "ManualTime"]]:
    """A notifier on a real store under tmp_path, delivering to a webhook receiver, its time manual: (receiver,
    store, notifier, time); all closed after."""
    from ffe_engine.alerts import Notifier
    from ffe_engine.channels import channels_from
    from ffe_engine.config import AlertSettings
    from ffe_engine.store import Store

    hook = await Receiver().start()
    cfg = AlertSettings(webhook_url=hook.url, **FAST, **alerts)
    store = await Store.open(tmp_path / "ffe.db")
    now = ManualTime()
    notifier = Notifier(cfg, store, channels_from(cfg), now=now, wall=lambda: 1_700_000_000.0)
    await notifier.start()
    try:
        yield hook, store, notifier, now
    finally:
        await notifier.close()
        await store.close()
        await hook.stop()



async def test_each_kind_of_event_raises_the_alert_an_operator_needs(tmp_path):
    """The rules, event by event, through a notifier on a real store delivering to a receiver; time is manual
    so the in-doubt delay is exact."""
    from ffe_engine.events import (ApprovalEvent, EngineStateChanged, ErrorEvent, KillSwitchEvent, OrderEvent,
                                   ReconcileEvent)

    async with a_notifier(tmp_path, in_doubt_s=60) as (hook, store, notifier, now):
        events = [
            EngineStateChanged(state="PAUSED", previous="RUNNING", reason="DRAWDOWN 16.00% > 15.0%", by="risk"),
            EngineStateChanged(state="PAUSED", previous="RUNNING", reason="operator", by="ctl"),  # asked for: quiet
            KillSwitchEvent(action="flatten", closing=["c1"], failed=[{"symbol": "ETH/USDT", "error": "x"}], by="tui"),
            ReconcileEvent(status="differences", differences=[{"asset": "BTC"}, {"asset": "USDT"}]),
            ApprovalEvent(approval_id="a1b2c3", outcome="pending", symbol="BTC/USDT", side="buy", quantity=0.01,
                          price=42000.0, expires_at=1_700_000_120.0),
            ErrorEvent(message="RuntimeError: boom", where="engine loop"),
            OrderEvent(client_order_id="ffe-doubt-1", symbol="BTC/USDT", status="in_doubt"),
            OrderEvent(client_order_id="ffe-doubt-2", symbol="ETH/USDT", status="in_doubt"),
        ]
        for ev in events:
            notifier.sink(ev, b"")
        notifier.sink(OrderEvent(client_order_id="ffe-doubt-2", symbol="ETH/USDT", status="filled"), b"")
        now.t += 59
        notifier.tick()
        now.t += 2  # the first order has now been in doubt for 61 s; the second was resolved
        notifier.tick()
        await store.flush()
        await until(lambda: len(hook.delivered) >= 6, what="the alerts")
        await asyncio.sleep(0.3)
        got = {r.body["kind"]: r.body for r in hook.delivered}
        assert list(got) == ["RISK_PAUSE", "FLATTEN", "RECONCILE", "APPROVAL", "CRASH", "IN_DOUBT"]
        assert got["RISK_PAUSE"]["severity"] == "page" and "DRAWDOWN 16.00% > 15.0%" in got["RISK_PAUSE"]["text"]
        assert got["FLATTEN"]["severity"] == "page" and "1 FAILED" in got["FLATTEN"]["text"]
        assert "2 unexplained difference(s)" in got["RECONCILE"]["text"]
        assert got["APPROVAL"]["text"] == ("ffe approval a1b2c3 waiting: BUY 0.01 BTC/USDT at 42,000.0, expires "
                                           "2023-11-14T22:15:20Z. `ffe ctl approve a1b2c3`.")
        assert got["CRASH"]["severity"] == "page" and "RuntimeError: boom" in got["CRASH"]["text"]
        assert "ffe-doubt-1" in got["IN_DOUBT"]["text"] and "61s" in got["IN_DOUBT"]["text"]
        assert all(len(r.body["text"]) < 300 for r in hook.delivered)  # a phone's lock screen, not a log


async def test_an_approval_that_ends_without_the_operator_s_answer_is_told_and_one_they_answered_is_not(tmp_path):
    """The operator paged that a trade waits for approval learns that it expired, or that the engine dropped it at a
    start, unanswered: the trade was not made. An approval they answered (approve, reject, a kill switch) is theirs
    already: nothing more is sent."""
    from ffe_engine.events import ApprovalEvent

    def approval(aid: str, outcome: str, by: str, reason: str = "") -> ApprovalEvent:
        return ApprovalEvent(approval_id=aid, outcome=outcome, by=by, reason=reason, symbol="BTC/USDT", side="buy",
                             quantity=0.01, price=42000.0, expires_at=1_700_000_120.0)

    async with a_notifier(tmp_path) as (hook, store, notifier, now):
        for ev in (approval("a1", "pending", "engine"), approval("a1", "expired", "ttl", "not approved within 120s"),
                   approval("a2", "pending", "engine"), approval("a2", "approved", "ctl"),
                   approval("a3", "pending", "engine"), approval("a3", "rejected", "ctl"),
                   approval("a4", "pending", "engine"), approval("a4", "rejected", "operator", "kill switch"),
                   approval("a5", "rejected", "engine", "its symbol BTC/USDT is no longer traded (engine.symbols): "
                                                        "it cannot be approved")):
            notifier.sink(ev, b"")
        await store.flush()
        await until(lambda: len(hook.delivered) >= 6, what="the alerts")
        await asyncio.sleep(0.3)
        ended = [(r.body["severity"], r.body["text"]) for r in hook.delivered if r.body["kind"] == "APPROVAL_ENDED"]
        assert ended == [
            ("warn", "ffe approval a1 expired unanswered (not approved within 120s): the BUY 0.01 BTC/USDT at "
                     "42,000.0 was not made."),
            ("warn", "ffe approval a5 rejected by the engine unanswered (its symbol BTC/USDT is no longer traded "
                     "(engine.symbols): it cannot be approved): the BUY 0.01 BTC/USDT at 42,000.0 was not made.")]
        assert [r.body["kind"] for r in hook.delivered].count("APPROVAL") == 4


async def test_alert_texts_say_the_state_as_it_is(tmp_path):
    """A breaker opening on a HALTED engine leaves it HALTED, an exchange out of reach clears by itself once it
    answers, and a flatten whose closing order's answer was lost has not closed the position: each alert says so."""
    from ffe_engine.events import (BreakerChanged, EngineStateChanged, KillSwitchEvent, OrderEvent, ReconcileEvent,
                                   RunEvent)

    async with a_notifier(tmp_path) as (hook, store, notifier, _):
        events = [
            RunEvent(phase="start", mode="live", detail={"state": "RUNNING", "reason": "resume"}),
            BreakerChanged(venue="binance", state="open", previous="closed", failures=3, error="timeout"),
            OrderEvent(client_order_id="ffe-close-1", symbol="BTC/USDT", status="in_doubt"),
            EngineStateChanged(state="HALTED", previous="PAUSED", reason="flatten", by="ctl"),
            KillSwitchEvent(action="flatten", closing=["ffe-close-1"], by="ctl"),
            BreakerChanged(venue="kraken", state="open", previous="closed", failures=3, error="503"),
            BreakerChanged(venue="kraken", state="closed", previous="half_open"),
            ReconcileEvent(status="failed", differences=[{"error": "connection refused"}]),
        ]
        for ev in events:
            notifier.sink(ev, b"")
        await store.flush()
        await until(lambda: len(hook.delivered) >= 7, what="the alerts")
        got = [(r.body["kind"], r.body["severity"], r.body["text"]) for r in hook.delivered]
        assert [kind for kind, _, _ in got] == ["STARTED", "BREAKER_OPEN", "HALTED", "FLATTEN", "BREAKER_OPEN",
                                                "BREAKER_CLOSED", "RECONCILE"]
        running_open, halted_open = got[1][2], got[4][2]
        assert "Entries refused; the engine pauses" in running_open, running_open
        assert "Entries refused; the engine stays HALTED" in halted_open and "paused" not in halted_open
        assert "stays HALTED" in got[5][2] and "paused" not in got[5][2], got[5][2]
        _, severity, flatten = got[3]
        assert severity == "page", flatten
        assert "1 IN DOUBT" in flatten and "still held" in flatten, flatten
        _, severity, reconcile = got[6]
        assert "the exchange could not be reached" in reconcile and "connection refused" in reconcile, reconcile
        assert "ffe ctl accept" not in reconcile and "once it answers" in reconcile, reconcile


async def test_the_exchange_s_reason_survives_a_long_prefix_and_a_refused_clock_is_named(tmp_path):
    """The venue's words come last in ffe's errors, after the request they refused (its order id, side, quantity and
    symbol): a page cut to its first characters kept ffe's prefix and lost the reason."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import ReconcileEvent

    error = ("binance fetch_balance: refused, not placed: InvalidNonce: binance "
             '{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}')
    (alert,) = alerts_for(ReconcileEvent(status="failed", differences=[{"kind": "venue_unreachable",
                                                                       "error": error}]))
    assert "outside of the recvWindow" in alert.text and "binance fetch_balance" in alert.text, alert.text
    assert "clock" in alert.text and "NTP" in alert.text, alert.text
    (plain,) = alerts_for(ReconcileEvent(status="failed", differences=[{"kind": "venue_unreachable",
                                                                       "error": "connection refused"}]))
    assert "(connection refused)" in plain.text and "clock" not in plain.text, plain.text


async def test_a_flatten_whose_closing_orders_were_answered_is_a_warning(tmp_path):
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import KillSwitchEvent

    (alert,) = alerts_for(KillSwitchEvent(action="flatten", closing=["ffe-close-1"], cancelled=["o1"], by="ctl"))
    assert (alert.severity, alert.text) == ("warn", "ffe flatten by ctl: 1 closing order(s) placed, 1 cancelled.")


async def test_a_flatten_waiting_for_the_exchange_s_retry_after_pages_saying_until_when(tmp_path):
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import KillSwitchEvent
    from ffe_engine.present import kill_headline

    waiting = [{"symbol": "BTC/USDT", "until": 1_800_000_000.0, "detail": "x"}]
    (alert,) = alerts_for(KillSwitchEvent(action="flatten", waiting=waiting, by="ctl"))
    assert alert.severity == "page" and "FAILED" not in alert.text, alert
    assert "1 WAITING for the exchange's Retry-After until 2027-01-15T08:00:00Z" in alert.text, alert
    said = kill_headline({"action": "flatten", "by": "ctl", "waiting": waiting})
    assert "failed 0" in said and "waiting for the exchange's Retry-After until 2027-01-15T08:00:00Z" in said, said
    assert said.endswith(": BTC/USDT"), said


async def test_a_halt_after_the_operator_re_armed_is_a_page_of_its_own_sent_at_once(tmp_path):
    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST})  # the default 300 s window
    async with engine_session(settings) as host:
        await host.engine.halt(reason="first look", by="ctl")
        await until(lambda: "HALTED" in kinds(hook), what="the first HALTED page")
        await host.engine.resume(by="ctl", confirm=True)
        await until(lambda: "REARMED" in kinds(hook), what="the re-arm")
        await host.engine.halt(reason="second look", by="ctl")
        await until(lambda: kinds(hook).count("HALTED") == 2, what="the second HALTED page, long before 300 s")
        second = [r.body for r in hook.delivered if r.body["kind"] == "HALTED"][1]
        assert second["severity"] == "page" and "second look" in second["text"]
    assert db_value(settings.db_path, "SELECT COUNT(*) FROM alert_outbox WHERE kind = 'HALTED'") == 2
    await hook.stop()


async def test_a_condition_that_cleared_and_came_back_pages_again_and_a_storm_without_a_clear_does_not(tmp_path):
    """Risk pause, breaker, reconciliation: each clears (resume, closed, ok or accepted) and comes back within
    the window; the second is a page of its own. Repeats with nothing cleared between stay one summary."""
    from ffe_engine.events import BreakerChanged, EngineStateChanged, ReconcileEvent

    paused = EngineStateChanged(state="PAUSED", previous="RUNNING", reason="DRAWDOWN 16.00% > 15.0%", by="risk")
    opened = BreakerChanged(venue="binance", state="open", previous="closed", failures=3, error="timeout")
    differences = ReconcileEvent(status="differences", differences=[{"asset": "BTC"}])
    unreachable = ReconcileEvent(status="failed", differences=[{"error": "connection refused"}])
    async with a_notifier(tmp_path) as (hook, store, notifier, _):
        events = [
            paused, EngineStateChanged(state="RUNNING", previous="PAUSED", reason="resume", by="ctl"), paused,
            opened, opened, BreakerChanged(venue="binance", state="closed", previous="half_open"), opened,
            differences, ReconcileEvent(status="accepted", differences=[{"asset": "BTC"}]), differences,
            unreachable, ReconcileEvent(status="ok"), unreachable,
        ]
        for ev in events:
            notifier.sink(ev, b"")
        await store.flush()
        await until(lambda: len(hook.delivered) >= 11, what="the alerts")
        await asyncio.sleep(0.3)
        got = [(r.body["kind"], r.body["severity"]) for r in hook.delivered]
        # (the venue agreeing again after it was out of reach is told once: RECONCILE_OK)
        assert got == [("RISK_PAUSE", "page"), ("RISK_PAUSE", "page"),
                       # the repeats' summary sent as the breaker closes says so, a warning: the page is over
                       ("BREAKER_OPEN", "page"), ("BREAKER_OPEN_REPEATED", "warn"), ("BREAKER_CLOSED", "info"),
                       ("BREAKER_OPEN", "page"), ("RECONCILE", "page"), ("RECONCILE", "page"),
                       ("RECONCILE", "page"), ("RECONCILE_OK", "warn"), ("RECONCILE", "page")], got


async def test_a_flatten_s_follow_up_after_its_page_is_sent_at_once_not_at_the_window_s_end(tmp_path):
    """The flatten paged (a closing order failed, or its answer was lost: check the venue now); its follow-up says
    what the closing orders closed since. The operator paged is told at once, not when the page's window ends (or
    the engine stops)."""
    from ffe_engine.events import KillSwitchEvent

    paged = KillSwitchEvent(action="flatten", closing=["ffe-close-1"], failed=[{"symbol": "ETH/USDT"}], by="ctl")
    follow_up = KillSwitchEvent(action="flatten", follow_up=True, closed=["BTC/USDT"], by="engine")
    async with a_notifier(tmp_path) as (hook, store, notifier, _):
        for ev in (paged, follow_up):
            notifier.sink(ev, b"")
        await store.flush()
        await until(lambda: len(hook.delivered) >= 2, what="the page and its follow-up")
        got = [(r.body["kind"], r.body["severity"]) for r in hook.delivered]
        assert got == [("FLATTEN", "page"), ("FLATTEN", "warn")], got
        assert "follow-up" in hook.delivered[1].body["text"], hook.delivered[1].body


async def test_a_more_severe_alert_within_a_window_is_sent_at_once_and_a_summary_of_pages_is_a_page(tmp_path):
    """Within a key's window, an alert more severe than the one sent (a flatten's warning, then its failure) is
    news sent at once; what repeats after it is counted, and a summary that holds a page pages: an operator who
    takes pages only (alerts.min_severity = "page") gets it."""
    from ffe_engine.events import BreakerChanged, KillSwitchEvent

    placed = KillSwitchEvent(action="flatten", closing=["c1"], by="ctl")
    failed = KillSwitchEvent(action="flatten", failed=[{"symbol": "BTC/USDT", "error": "0.01 still held after 3 "
                                                                                         "closing attempts"}],
                             by="engine")
    async with a_notifier(tmp_path) as (hook, store, notifier, now):
        for ev in (placed, placed, failed, failed):
            notifier.sink(ev, b"")
        await store.flush()
        await until(lambda: len(hook.delivered) >= 2, what="the warning and the page")
        now.t += 301  # the default window's end
        await until(lambda: "FLATTEN_REPEATED" in kinds(hook), what="the summary")
        got = [(r.body["kind"], r.body["severity"]) for r in hook.delivered]
        assert got == [("FLATTEN", "warn"), ("FLATTEN", "page"), ("FLATTEN_REPEATED", "page")], got
        assert "1 FAILED" in hook.delivered[1].body["text"] and "2 more FLATTEN" in hook.delivered[2].body["text"]
    opened = BreakerChanged(venue="binance", state="open", previous="closed", failures=3, error="timeout")
    async with a_notifier(tmp_path / "pages", min_severity="page") as (hook, store, notifier, now):
        for _ in range(3):
            notifier.sink(opened, b"")
        await store.flush()
        now.t += 301
        await until(lambda: "BREAKER_OPEN_REPEATED" in kinds(hook), what="the summary, a page")
        got = [(r.body["kind"], r.body["severity"]) for r in hook.delivered]
        assert got == [("BREAKER_OPEN", "page"), ("BREAKER_OPEN_REPEATED", "page")], got


async def test_the_halted_page_of_a_flatten_says_the_positions_are_being_closed(tmp_path):
    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST})
    async with engine_session(settings) as host:
        await host.engine.flatten(by="ctl")
        await until(lambda: "FLATTEN" in kinds(hook), what="the flatten's alerts")
        flatten_halt = [r.body["text"] for r in hook.delivered if r.body["kind"] == "HALTED"][0]
        assert "positions are being closed" in flatten_halt and "stay open" not in flatten_halt, flatten_halt
        await host.engine.resume(by="ctl", confirm=True)
        await host.engine.halt(reason="kill switch", by="ctl")
        await until(lambda: kinds(hook).count("HALTED") == 2, what="the kill switch's page")
        kill_halt = [r.body["text"] for r in hook.delivered if r.body["kind"] == "HALTED"][1]
        assert "positions stay open" in kill_halt and "being closed" not in kill_halt, kill_halt
    await hook.stop()


async def test_every_alert_names_the_host_and_the_data_directory_of_the_engine_that_sent_it(tmp_path):
    """Two engines posting to one webhook are told apart: the JSON carries the host and the data directory, and
    every text (chat channels too) ends with them in short."""
    hook, slack = await Receiver().start(), await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, "slack_url": slack.url, **FAST})
    data_dir = str(settings.data_dir.resolve())
    where = f"[{socket.gethostname()}:{data_dir}]"
    async with engine_session(settings) as host:
        await host.engine.halt(reason="operator saw a bad fill", by="ctl")
        await until(lambda: "HALTED" in kinds(hook) and any("HALTED" in t for t in slack.texts()),
                    what="HALTED on both channels")
    await until(lambda: "STOPPED" in kinds(hook), what="the stop")
    assert kinds(hook)[:2] == ["STARTED", "HALTED"]
    for body in (r.body for r in hook.delivered):
        assert body["source"] == "ffe" and body["host"] == socket.gethostname(), body
        assert body["data_dir"] == data_dir and body["text"].endswith(f". {where}"), body
        assert body["created"] == fmt.iso(body["created_ts"]) and body["created"].endswith("Z"), body  # UTC ISO
    assert slack.texts() and all(t.endswith(f". {where}") for t in slack.texts()), slack.texts()
    for r in (hook, slack):
        await r.stop()


def unreachable_exchange_config(tmp_path) -> None:
    """A config.toml whose market data come from an exchange at a closed local port: every start fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/api/v3"
    (tmp_path / "config.toml").write_text(f"""
[engine]
symbols = ["BTC/USDT"]
warmup_bars = 10

[market]
source = "exchange"

[exchange]
id = "binance"
timeout_ms = 1000
api_urls = {{public = "{closed}", private = "{closed}"}}
options = {{fetchMarkets = {{types = ["spot"]}}, fetchCurrencies = false, fetchMargins = false}}
""")


async def test_a_start_that_fails_on_an_unreachable_exchange_is_paged_ends_its_run_record_and_says_one_line(tmp_path):
    """`market.source = "exchange"` with the exchange at a closed local port: `ffe run --headless` exits 1 with one
    error line (the ccxt client closed, nothing reported unclosed), the audit trail ends the run it began with the
    error, and the page saying the start failed follows the STARTED notice."""
    import json

    unreachable_exchange_config(tmp_path)
    hook = await Receiver().start()
    beat = await Receiver().start()  # the dead man's switch: a start that fails never ran the main loop
    proc = await _ffe("run", "--headless", env=ffe_env(
        **paging(hook), FFE_ALERTS__HEARTBEAT_URL=beat.url + "/ping", FFE_ALERTS__HEARTBEAT_S="0.05"), cwd=tmp_path)
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    stderr = err.decode()
    assert proc.returncode == 1, stderr
    for noise in ("requires to release all resources", "Unclosed", "client_session", "Traceback"):
        assert noise not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "fetch_ohlcv" in line or line.startswith("ffe: error")]
    assert len(errors) == 1 and errors[0].startswith("ffe: error: start failed on paper: "), stderr
    records = [json.loads(line) for line in (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()]
    runs = [(r["phase"], r["detail"]) for r in records if r["event"] == "run"]
    assert [phase for phase, _ in runs] == ["start", "stop"], runs
    assert "fetch_ohlcv" in runs[1][1]["error"], runs
    [error] = [r for r in records if r["event"] == "error"]
    assert error["where"] == "start" and "fetch_ohlcv" in error["message"], error
    assert kinds(hook) == ["STARTED", "START_FAILED"], kinds(hook)
    failed = hook.delivered[1].body
    assert failed["severity"] == "page" and "fetch_ohlcv" in failed["text"], failed
    assert failed["text"].startswith("ffe start FAILED (PAPER)"), failed
    # The page says what the error line says, to its end: what to do.
    assert errors[0].endswith("nothing was sent: start again once it answers"), errors
    assert "nothing was sent: start again once it answers. The process exits 1" in failed["text"], failed
    assert beat.requests == []
    await hook.stop()
    await beat.stop()


async def test_repeats_counted_in_a_window_are_summed_up_when_the_engine_stops_before_it_ends(tmp_path):
    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST},  # the default 300 s window
                             breaker=QUICK_PROBES)
    clock = SteppedClock()
    async with engine_session(settings, clock=clock) as host:
        await breaker_openings(host.engine.breaker, clock, 8)
        await until(lambda: "BREAKER_OPEN" in kinds(hook), what="the breaker page")
    assert db_value(settings.db_path, "SELECT COUNT(*) FROM alert_outbox WHERE kind = 'BREAKER_OPEN_REPEATED'") == 1
    [summary] = [r.body for r in hook.delivered if r.body["kind"] == "BREAKER_OPEN_REPEATED"]
    assert summary["severity"] == "page" and summary["text"].startswith("7 more BREAKER_OPEN alert(s)"), summary
    # The stop is the channel's last word: the summary goes before it.
    said = [r.body["kind"] for r in hook.delivered]
    assert said[-2:] == ["BREAKER_OPEN_REPEATED", "STOPPED"], said
    await hook.stop()


async def test_an_instance_name_in_the_configuration_names_the_engine_in_its_alerts(tmp_path):
    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, "instance": "btc-desk", **FAST})
    async with engine_session(settings) as host:
        await host.engine.halt(reason="kill switch", by="ctl")
        await until(lambda: "HALTED" in kinds(hook), what="the HALTED page")
    halted = [r.body for r in hook.delivered if r.body["kind"] == "HALTED"][0]
    assert halted["instance"] == "btc-desk" and halted["host"] == socket.gethostname()
    assert halted["data_dir"] == str(settings.data_dir.resolve())
    assert halted["text"].endswith(f". [{socket.gethostname()}:btc-desk]"), halted
    await hook.stop()
    for bad in ("two words", "x" * 65, "line\nbreak"):
        with pytest.raises(ValueError, match="alerts.instance"):
            make_settings(tmp_path, alerts={"instance": bad})


async def test_approval_mode_set_to_auto_is_a_warning_and_set_to_manual_is_not(tmp_path):
    """Trades go out without a human from the moment the approval mode is auto (`m` in a console, `ffe ctl mode`,
    perhaps another operator's attached console): the operator on call is told who did it; the way back to manual
    tightens and raises nothing."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import EngineStateChanged

    (alert,) = alerts_for(EngineStateChanged(state="RUNNING", previous="RUNNING", reason="approval mode auto",
                                             by="console"))
    assert alert.kind == "APPROVAL_MODE" and alert.severity == "warn", alert
    assert "auto" in alert.text and "console" in alert.text and "without approval" in alert.text, alert.text
    assert alerts_for(EngineStateChanged(state="RUNNING", previous="RUNNING", reason="approval mode manual",
                                         by="console")) == []


async def test_approval_mode_set_to_auto_again_after_manual_is_sent_at_once(tmp_path):
    """The operator on call was told the mode went auto and set it back to manual; set to auto again within the
    window (another operator's console, a script), trades go out without approval once more: that is news, sent as
    the first was, not a repeat summed up at the window's end."""
    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST, "window_s": 3600},
                             engine={"approval": "manual"})
    async with engine_session(settings) as host:
        await host.engine.set_approval_mode("auto", by="ctl")
        await until(lambda: "APPROVAL_MODE" in kinds(hook), what="the first approval mode alert")
        await host.engine.set_approval_mode("manual", by="operator")
        await host.engine.set_approval_mode("auto", by="bob")
        await until(lambda: kinds(hook).count("APPROVAL_MODE") == 2, what="the second approval mode alert",
                    timeout=10)
        texts = [r.body["text"] for r in hook.delivered if r.body["kind"] == "APPROVAL_MODE"]
        assert "by bob" in texts[1], texts
    await hook.stop()


def raised(receiver: Receiver) -> list[str]:
    """The kinds of the alerts a receiver was delivered, each alert once: one delivered again (its answer came after
    the sender's timeout, or after its process ended) has the same creation time."""
    seen: dict[tuple[str, float], None] = {}
    for r in receiver.delivered:
        if isinstance(r.body, dict):
            seen.setdefault((r.body["kind"], r.body["created_ts"]), None)
    return [kind for kind, _ in seen]


def paging(receiver: Receiver) -> dict[str, str]:
    """The variables of a start whose alerts go to `receiver`, its retries quick."""
    return {"FFE_ALERTS__WEBHOOK_URL": receiver.url, **{f"FFE_ALERTS__{k.upper()}": str(v) for k, v in FAST.items()}}


async def start_that_gets_through(cwd, env: dict[str, str], delivered: Any = None) -> None:
    """`ffe run` on an exchange that answers this once: the start gets through, then is stopped (SIGTERM), once
    `delivered()` is true when it is given (the start's alert at the receiver)."""
    from fake_exchange import FakeBinance

    async with FakeBinance() as fx:
        fx.set_price("BTCUSDT", 30_000.0)
        answering = {f"FFE_EXCHANGE__API_URLS__{section}": fx.url + "/api/v3" for section in ("public", "private")}
        proc = await _ffe("run", "--headless", env=ffe_env(**env, **answering), cwd=cwd)
        assert proc.stderr is not None
        while b"engine started" not in await asyncio.wait_for(proc.stderr.readline(), 60):
            pass
        if delivered is not None:
            await wait_for(delivered, timeout=20, what="the start's alert delivered")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-3000:]


async def crash_loop(tmp_path, receiver: Receiver, starts: int = 3) -> None:
    """`ffe run` started again and again on an exchange that never answers, as systemd would: each start fails."""
    if not (tmp_path / "config.toml").exists():
        unreachable_exchange_config(tmp_path)
    for _ in range(starts):
        proc = await _ffe("run", "--headless", env=ffe_env(**paging(receiver)), cwd=tmp_path)
        await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 1


async def test_a_crash_loop_pages_once_per_window_not_once_per_restart(tmp_path):
    """A start that fails again and again (as systemd restarts it) raises STARTED and START_FAILED each time. The
    window per key (`alerts.window_s`) holds across the restarts, as the outbox it is counted in does: the operator
    gets each once, not once per restart."""
    hook = await Receiver().start()
    try:
        await crash_loop(tmp_path, hook)
    finally:
        await hook.stop()
    assert raised(hook) == ["STARTED", "START_FAILED"], kinds(hook)


async def test_a_crash_loop_s_page_answered_after_the_timeout_is_delivered_again_as_the_same_alert(tmp_path):
    """The receiver takes START_FAILED but answers only after the sender's timeout (a loaded machine), by when the
    failed start has ended: the next start delivers it again, as it should (at least once), and it is the same alert
    (its creation time), not one raised again by each restart."""
    late = asyncio.Event()
    hook = await Receiver(hold=late, hold_kind="START_FAILED").start()
    try:
        await crash_loop(tmp_path, hook, starts=2)  # taken by the receiver, never answered in time
        late.set()
        await crash_loop(tmp_path, hook, starts=1)
    finally:
        late.set()
        await hook.stop()
    failed = [r.body["created_ts"] for r in hook.requests if isinstance(r.body, dict)
              and r.body.get("kind") == "START_FAILED"]
    assert len(failed) >= 2 and len(set(failed)) == 1, failed
    assert raised(hook) == ["STARTED", "START_FAILED"], kinds(hook)


async def test_a_start_that_fails_again_after_a_start_that_succeeded_is_paged_again(tmp_path):
    """The crash loop's window holds back the same START_FAILED only while no start gets through: a start that
    succeeded between (the exchange answered) ends it, so the next start failing the same way within
    `alerts.window_s` is news, paged."""
    unreachable_exchange_config(tmp_path)
    hook = await Receiver().start()
    env = paging(hook)
    try:
        await failed_start(tmp_path, env)
        await start_that_gets_through(tmp_path, env)
        await failed_start(tmp_path, env)
    finally:
        await hook.stop()
    assert kinds(hook).count("START_FAILED") == 2, kinds(hook)


async def test_a_start_that_gets_through_after_a_failed_one_is_told_though_a_start_before_was_within_the_window(
        tmp_path):
    """A start got through (STARTED), the next failed (START_FAILED: "nothing trades until a start succeeds"), the
    next got through again, within `alerts.window_s` of the first: the operator's last word must not be the failure.
    Its STARTED is sent, though the same text was sent for the first start within the window; a crash loop (whose
    starts never get through) stays quiet after its first STARTED and START_FAILED."""
    unreachable_exchange_config(tmp_path)
    hook = await Receiver().start()
    env = paging(hook)

    def started_told() -> bool:
        return bool(hook.delivered) and kinds(hook)[-1] != "START_FAILED"

    try:
        await start_that_gets_through(tmp_path, env, started_told)
        await failed_start(tmp_path, env)
        await failed_start(tmp_path, env)
        await start_that_gets_through(tmp_path, env, started_told)
    finally:
        await hook.stop()
    assert raised(hook) == ["STARTED", "STOPPED", "START_FAILED", "STARTED", "STOPPED"], kinds(hook)


async def test_a_start_that_gets_through_after_one_refused_before_its_records_is_told(tmp_path):
    """The START_FAILED of a start refused before it could record anything (the monitor's port held by another
    process: paged past the outbox, kept in data/ffe.alerts-sent) is a failure after the last STARTED as well: the
    next start that gets through within alerts.window_s sends its STARTED."""
    hook = await Receiver().start()
    env = paging(hook)

    async def paper_start(**extra: str) -> int:
        proc = await _ffe("run", "--headless", "--max-bars", "3", env=ffe_env(**env, **extra), cwd=tmp_path)
        await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode is not None
        return proc.returncode

    try:
        assert await paper_start() == 0
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            assert await paper_start(FFE_MONITOR__PORT=str(held.getsockname()[1])) == 1
        assert await paper_start() == 0
    finally:
        await hook.stop()
    assert raised(hook) == ["STARTED", "STOPPED", "START_FAILED", "STARTED", "STOPPED"], kinds(hook)


async def test_a_start_after_an_orderly_stop_within_the_window_is_told(tmp_path):
    """Started, stopped in order (STOPPED), started again within `alerts.window_s`: the operator's last word must not
    be the stop while the engine runs. Each start's STARTED is sent, as after a failed start; only a crash loop's
    starts (no stop between them) are told once per window."""
    hook = await Receiver().start()
    env = paging(hook)
    try:
        for _ in range(3):
            proc = await _ffe("run", "--headless", "--max-bars", "3", env=ffe_env(**env), cwd=tmp_path)
            await asyncio.wait_for(proc.communicate(), 90)
            assert proc.returncode == 0
            await until(lambda: kinds(hook)[-1:] == ["STOPPED"], what="the stop delivered")
    finally:
        await hook.stop()
    assert raised(hook) == ["STARTED", "STOPPED"] * 3, kinds(hook)


async def failed_start(cwd, env: dict[str, str]) -> None:
    proc = await _ffe("run", "--headless", env=ffe_env(**env), cwd=cwd)
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 1, err.decode()[-3000:]


async def test_the_test_alert_s_webhook_body_carries_when_it_was_sent(tmp_path):
    """`created_ts` (seconds since the epoch) and `created` (UTC ISO) in the test alert too, as in every alert the
    webhook gets (docs/config.md): a receiver that reads them is tested with them."""
    import time

    hook = await Receiver().start()
    try:
        before = time.time()
        proc = await _ffe("alert", "test", env=ffe_env(FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook"), cwd=tmp_path)
        await proc.communicate()
        assert proc.returncode == 0
    finally:
        await hook.stop()
    [body] = [r.body for r in hook.delivered]
    assert before - 1 <= body["created_ts"] <= time.time() + 1, body
    assert body["created"].endswith("Z") and body["created"][:4].isdigit(), body


async def test_the_operator_is_told_when_reconciliation_no_longer_holds_a_paused_engine(tmp_path):
    """The exchange could not be reached (paged, entries held, the engine PAUSED): once it answers and agrees, the
    hold lifts by itself, but the engine stays PAUSED until resumed. The operator is told then, once: nobody would
    know to resume it otherwise. Periodic agreements after it say nothing."""
    from ffe_engine.events import EngineStateChanged, ReconcileEvent, RunEvent

    async with a_notifier(tmp_path) as (hook, store, notifier, _):
        for ev in [RunEvent(phase="start", mode="live", detail={"state": "RUNNING", "reason": "resume"}),
                   ReconcileEvent(status="ok", differences=[]),
                   ReconcileEvent(status="failed", differences=[{"error": "connection refused"}]),
                   EngineStateChanged(state="PAUSED", previous="RUNNING", by="reconcile",
                                      reason="reconcile: the exchange could not be reached"),
                   ReconcileEvent(status="ok", differences=[]),
                   ReconcileEvent(status="ok", differences=[])]:
            notifier.sink(ev, b"")
        await store.flush()
        await until(lambda: len(hook.delivered) >= 3, what="the alerts")
        await asyncio.sleep(0.3)
        got = [(r.body["kind"], r.body["severity"], r.body["text"]) for r in hook.delivered]
        assert [kind for kind, _, _ in got] == ["STARTED", "RECONCILE", "RECONCILE_OK"], got
        _, severity, text = got[2]
        assert severity == "warn" and "stays PAUSED" in text and "ffe ctl resume" in text, text


async def test_across_a_restart_only_the_start_s_alerts_keep_their_window_and_a_reconcile_hold_is_remembered(
        tmp_path):
    """The window that holds across a restart is for a crash loop's alerts (STARTED, START_FAILED): a halt paged,
    re-armed, then halted again after a restart is paged again, as it would be in one process. And an engine that
    starts PAUSED by reconciliation is told when the venue agrees again (RECONCILE_OK), though the page was sent by
    the process before."""
    from ffe_engine.alerts import Notifier
    from ffe_engine.channels import channels_from
    from ffe_engine.config import AlertSettings
    from ffe_engine.events import EngineStateChanged, ReconcileEvent, RunEvent
    from ffe_engine.store import Store

    hook = await Receiver().start()
    cfg = AlertSettings(webhook_url=hook.url, **FAST)
    store = await Store.open(tmp_path / "ffe.db")
    halt = EngineStateChanged(state="HALTED", previous="RUNNING", reason="ffe ctl halt", by="ctl")
    try:
        first = Notifier(cfg, store, channels_from(cfg), now=ManualTime(), wall=lambda: 1_700_000_000.0)
        await first.start()
        first.sink(halt, b"")
        first.sink(EngineStateChanged(state="RUNNING", previous="HALTED", reason="re-armed", by="ctl"), b"")
        await store.flush()
        await until(lambda: "REARMED" in kinds(hook), what="the first process's alerts")
        await first.close()
        second = Notifier(cfg, store, channels_from(cfg), now=ManualTime(), wall=lambda: 1_700_000_030.0)
        await second.start()
        second.sink(RunEvent(phase="start", mode="live",
                             detail={"state": "PAUSED", "reason": "reconcile: the exchange could not be reached"}),
                    b"")
        second.sink(halt, b"")
        second.sink(ReconcileEvent(status="ok", differences=[]), b"")
        await store.flush()
        await until(lambda: kinds(hook).count("HALTED") == 2 and "RECONCILE_OK" in kinds(hook),
                    what="the halt paged again, and the hold's end told")
        await second.close()
    finally:
        await store.close()
        await hook.stop()


def test_a_reconcile_page_for_coins_gone_from_the_account_says_how_to_book_a_sale_made_by_hand():
    """The exchange holds fewer coins than the books' position (sold there by hand): the accept would be refused, so
    the page says what the operator can do, naming the symbol; coins beyond the position (a deposit) are an
    accept's."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import ReconcileEvent

    sold = [{"kind": "position", "symbol": "BTC/USDT", "journal": 0.5, "venue": 0.2},
            {"kind": "cash", "asset": "USDT", "journal": 100.0, "venue": 9100.0}]
    (alert,) = alerts_for(ReconcileEvent(status="differences", differences=sold), state="PAUSED")
    assert alert.severity == "page" and "2 unexplained difference(s)" in alert.text, alert.text
    assert ("The exchange holds fewer BTC than the books' BTC/USDT position: if they were sold there by hand, book "
            "the sale (`ffe ctl sold-by-hand BTC/USDT --quantity Q --price P --fee F`)") in alert.text, alert.text
    deposit = [{"kind": "position", "symbol": "BTC/USDT", "journal": 0.5, "venue": 0.7}]
    (alert,) = alerts_for(ReconcileEvent(status="differences", differences=deposit), state="PAUSED")
    assert "sold-by-hand" not in alert.text and "`ffe ctl accept`" in alert.text, alert.text


def test_orders_the_exchange_made_since_a_restored_backup_are_told_when_journaled_from_it():
    """After `ffe restore`, the start journals the orders the exchange made since the backup (with their fills): the
    STARTED alert before it counts only the orders the backup had in flight ("0 order(s) in flight recovered"), so
    this one says what was journaled. Nothing to tell when the exchange made none."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import RecoveredEvent

    ev = RecoveredEvent(backup="ffe-backup-20261204T100000Z.tar.zst", status="recovered", orders=["ffe-a", "ffe-b"],
                        fills=3)
    (alert,) = alerts_for(ev, state="PAUSED")
    assert alert.kind == "RECOVERED" and alert.severity == "warn", alert
    assert "2 order(s)" in alert.text and "3 fill(s)" in alert.text and "ffe-a, ffe-b" in alert.text, alert.text
    assert alerts_for(RecoveredEvent(status="recovered", orders=[], fills=0), state="PAUSED") == []
    from ffe_engine.monitor import WATCHED

    assert RecoveredEvent.name in WATCHED  # the bus hands the monitor the event


def test_started_says_its_count_is_of_the_orders_in_flight_and_where_those_since_a_restored_backup_are_told():
    """After `ffe restore`, STARTED said "0 order(s) recovered" while the RECOVERED alert of the same start said two
    orders and their fills were journaled: STARTED counts the orders the records had in flight only, and says so;
    after a restore it says where the orders the exchange made since the backup are told."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import RunEvent

    restored = {"backup": "ffe-backup-20261204T100000Z.tar.zst", "taken": "2026-12-04T10:00:00Z"}
    for state in ("RUNNING", "PAUSED"):
        detail = {"state": state, "reason": "live start", "recovered_orders": 0, "restored": restored}
        (alert,) = alerts_for(RunEvent(phase="start", mode="LIVE", detail=detail), state=state)
        assert "0 order(s) in flight recovered" in alert.text, alert.text
        assert "since the backup" in alert.text and "RECOVERED" in alert.text, alert.text
    detail = {"state": "RUNNING", "reason": "resume", "recovered_orders": 1}
    (alert,) = alerts_for(RunEvent(phase="start", mode="LIVE", detail=detail), state="RUNNING")
    assert "1 order(s) in flight recovered" in alert.text and "backup" not in alert.text, alert.text


def test_a_halt_the_engine_makes_at_start_is_paged_without_saying_orders_were_cancelled():
    """The start halts the engine itself (HALTED found only in audit records the database never committed, a disk
    reserve the last run emptied): it cancels nothing, and its page does not say it did, as a kill switch's does."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import EngineStateChanged

    (by_engine,) = alerts_for(EngineStateChanged(state="HALTED", previous="RUNNING", by="engine",
                                                 reason="the last run stopped on a record it could not write"))
    assert by_engine.kind == "HALTED" and "cancelled" not in by_engine.text, by_engine.text
    assert "could not write" in by_engine.text and "positions stay open" in by_engine.text
    (kill,) = alerts_for(EngineStateChanged(state="HALTED", previous="RUNNING", by="ctl", reason="ffe ctl halt"))
    assert "open orders being cancelled" in kill.text


def test_a_halted_restated_at_start_is_paged_whatever_state_the_last_record_said():
    """A backup taken while HALTED, resumed, halted again with no page delivered, then restored: the start restates
    HALTED over a last record that said HALTED too (another halt). It is paged as kept all the same."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import EngineStateChanged

    (alert,) = alerts_for(EngineStateChanged(state="HALTED", previous="HALTED", by="restore", restated=True,
                                             reason="ffe ctl halt (by ctl, kept across a restore)"))
    assert alert.kind == "HALTED" and "kept from before this start" in alert.text, alert.text


async def test_a_flatten_after_the_operator_re_armed_is_a_page_of_its_own_sent_at_once(tmp_path):
    """Flatten, re-arm, flatten again: the second flatten is the operator's new action, not a repeat of the first
    to be summed up at the end of its window (the pager's last word would otherwise be that positions stay open)."""
    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST})  # the default 300 s window
    async with engine_session(settings) as host:
        await host.engine.flatten(by="ctl")
        await until(lambda: "FLATTEN" in kinds(hook), what="the first FLATTEN alert")
        await host.engine.resume(by="ctl", confirm=True)
        await until(lambda: "REARMED" in kinds(hook), what="the re-arm")
        await host.engine.flatten(by="ctl")
        await until(lambda: kinds(hook).count("FLATTEN") == 2, what="the second FLATTEN alert, long before 300 s")
    await hook.stop()


async def test_records_unwritable_after_a_re_arm_is_news_though_sent_within_its_window_before(tmp_path):
    """A RECORDS_UNWRITABLE sent past the outbox holds back the same cause at the next start within the window (a
    disk that fills again at every restart); once the operator re-arms the engine, the disk filling again is news,
    sent at once. Each notifier is a process of its own: only the file beside the database goes from one to the
    next."""
    from ffe_engine.alerts import Alert, Notifier
    from ffe_engine.channels import channels_from
    from ffe_engine.config import AlertSettings
    from ffe_engine.events import EngineStateChanged

    hook = await Receiver().start()
    cfg = AlertSettings(webhook_url=hook.url, **FAST, window_s=3600, min_severity="page")  # no REARMED to store
    page = Alert("RECORDS_UNWRITABLE", "RECORDS_UNWRITABLE", "page", "ffe HALTED and stopped: disk full",
                 cause="the records cannot be written")
    walls = iter(1_700_000_000.0 + 60 * n for n in range(10))
    try:
        for rearm in (False, False, True, False):
            notifier = Notifier(cfg, None, channels_from(cfg), now=ManualTime(), wall=lambda: next(walls),
                                sent_file=tmp_path / "ffe.alerts-sent")
            if rearm:
                notifier.sink(EngineStateChanged(state="RUNNING", previous="HALTED", reason="re-armed", by="ctl"),
                              b"")
            await notifier.send_now(page)
    finally:
        await hook.stop()
    assert kinds(hook) == ["RECORDS_UNWRITABLE", "RECORDS_UNWRITABLE"], kinds(hook)


async def test_a_halted_kept_from_before_is_paged_once_per_window_across_restarts_and_again_after_a_re_arm(tmp_path):
    """A start that restates a HALTED stored without its record (a full log disk) pages it; a restart that does
    so again within `alerts.window_s` (the disk still full, as systemd restarts it) does not; once the operator has
    re-armed, the same HALTED kept by a later start is news. Each session is a process's notifier on the same
    records."""
    from ffe_engine.events import EngineStateChanged

    hook = await Receiver().start()
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST, "window_s": 3600})
    kept = EngineStateChanged(state="HALTED", previous="HALTED", reason="records cannot be written", by="engine",
                              restated=True)
    other = EngineStateChanged(state="HALTED", previous="HALTED", reason="kill switch", by="ctl", restated=True)

    def halted() -> list[str]:
        return [r.body["text"] for r in hook.delivered if r.body["kind"] == "HALTED"]

    try:
        for restarts, rearm, events, pages in ((1, False, [kept], 1), (2, False, [kept], 1), (3, True, [], 1),
                                                (4, False, [kept], 2), (5, False, [kept, other], 3)):
            async with engine_session(settings) as host:
                notifier = host.monitor.notifier
                if rearm:
                    notifier.sink(EngineStateChanged(state="RUNNING", previous="HALTED", reason="re-armed", by="ctl"),
                                  b"")
                for ev in events:
                    notifier.sink(ev, b"")
                await until(lambda: len(halted()) >= pages and not host.engine.snapshot()["monitor"]["channels"][
                    "webhook"]["pending"], what=f"start {restarts}: its pages delivered")
                await asyncio.sleep(0.3)
                assert len(halted()) == pages, (restarts, halted())
    finally:
        await hook.stop()
    assert all("kept from before this start" in text for text in halted())


async def test_an_account_moved_to_a_new_data_directory_pages_its_first_start_there_as_a_new_engine(tmp_path):
    """The runbook's move to a new machine: the HALTED account stopped, backed up, verified and restored into a new
    data directory, started there within `alerts.window_s` of its last start in the old one. The outbox came with the
    records, but the window of a start's alert is the engine's (its host and data directory, as the alert's text
    ends with): the first start in the new directory is told (STARTED, waiting for the operator), and the next one
    there says it is no longer the restored start (another text: news), and the one after it, the same engine
    again after the one before stopped in order, is told too: the operator's last word was that stop."""
    from conftest import run_ffe

    hook = await Receiver().start()
    env = ffe_env(FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook")
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()

    def run(cwd, *args):
        proc = run_ffe(cwd, *args, env=env)
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
        return proc

    try:
        proc = await _ffe("run", "--headless", env=env, cwd=old)
        await until(lambda: "STARTED" in kinds(hook), what="the first start")
        proc.send_signal(signal.SIGUSR1)  # halted by signal, then stopped in order
        await until(lambda: "HALTED" in kinds(hook), what="the halt")
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        await asyncio.to_thread(run, old, "run", "--headless", "--max-bars", "3")
        await asyncio.to_thread(run, old, "backup", "--to", str(tmp_path / "move"))
        (archive,) = (tmp_path / "move").glob("ffe-backup-*.tar.zst")
        (new / "config.toml").write_text((old / "config.toml").read_text())
        await asyncio.to_thread(run, new, "backup", "verify", str(archive))
        await asyncio.to_thread(run, new, "restore", str(archive), "--data-dir", str(new / "data"), "--log-dir",
                                str(new / "logs"))
        first = await asyncio.to_thread(run, new, "run", "--headless", "--max-bars", "3")
        await asyncio.to_thread(run, new, "run", "--headless", "--max-bars", "3")
        again = await asyncio.to_thread(run, new, "run", "--headless", "--max-bars", "3")
        await asyncio.sleep(0.2)
    finally:
        await hook.stop()
    waiting = [(b["data_dir"], b["text"]) for b in (r.body for r in hook.delivered)
               if b["kind"] == "STARTED" and "HALTED (SIGUSR1)" in b["text"]]
    moved = str((new / "data").resolve())
    assert [d for d, _ in waiting] == [str((old / "data").resolve()), moved, moved, moved], waiting
    assert "restored from a backup" in waiting[1][1] and "restored" not in waiting[2][1], waiting
    assert waiting[3] == waiting[2], waiting
    assert "alert not sent again" not in first.stderr + again.stderr, again.stderr[-3000:]


async def test_an_alert_delivered_when_its_sent_mark_cannot_be_written_is_not_delivered_again(tmp_path):
    """Any alert, whatever its kind: the receiver took it, then its `sent` mark could not be written (here another
    process holds the database's write lock; a full disk is the same, test_disk_failures). The next process, on the
    same data directory, does not deliver it again, and the outbox says it was sent, once, when it left. Each
    notifier is a process of its own: only the database and the files beside it go from one to the next."""
    import sqlite3

    from ffe_engine.alerts import Notifier
    from ffe_engine.channels import channels_from
    from ffe_engine.config import AlertSettings
    from ffe_engine.errors import StorageError
    from ffe_engine.store import Store

    loop = asyncio.get_running_loop()  # real seconds: a close gives a pending alert its grace
    hook = await Receiver().start()
    hook.hold = asyncio.Event()
    cfg = AlertSettings(webhook_url=hook.url, **FAST)
    beside = {"sent_file": tmp_path / "ffe.alerts-sent"}  # the files beside the database
    db = tmp_path / "ffe.db"
    opened = await Store.open(db, busy_timeout_s=0.1)
    try:
        first = Notifier(cfg, opened, channels_from(cfg), now=loop.time, wall=lambda: 1_700_000_000.0, **beside)
        await first.start()
        first.raise_alert(Alert("BREAKER_OPEN", "BREAKER_OPEN:binance", "page", "ffe circuit breaker OPEN on binance"))
        await opened.flush()
        await until(lambda: hook.requests, what="the alert on the wire")
        locker = sqlite3.connect(db)
        locker.execute("BEGIN IMMEDIATE")  # another process's write lock: the mark cannot be written
        hook.hold.set()
        await until(lambda: hook.delivered, what="the alert delivered")
        await asyncio.sleep(0.5)  # the mark tried, and refused
        await first.close()
        with contextlib.suppress(StorageError):
            await opened.close()
        locker.rollback()
        locker.close()
        opened = await Store.open(db)
        second = Notifier(cfg, opened, channels_from(cfg), now=loop.time, wall=lambda: 1_700_000_060.0, **beside)
        await second.start()
        await asyncio.sleep(1.0)
        await second.close()
    finally:
        await opened.close()
        await hook.stop()
    assert kinds(hook) == ["BREAKER_OPEN"], kinds(hook)
    assert db_rows(db, "SELECT kind, status, attempts, sent_ts FROM alert_outbox") == [
        ("BREAKER_OPEN", "sent", 1, 1_700_000_000.0)]


async def test_starts_held_back_across_restarts_are_not_summed_up_when_their_window_ends(tmp_path, log_lines):
    """A halted engine killed and started again and again within `alerts.window_s`: the first start is told, each
    later one is held back by the window kept from before it, saying so in its own log. Each start is a process of
    its own, so none of them is summed up: the last one, running on past the window's end, sends no
    STARTED_REPEATED (it would count only itself, and say it as a repeat within its own run)."""
    from ffe_engine.alerts import Notifier
    from ffe_engine.channels import channels_from
    from ffe_engine.config import AlertSettings
    from ffe_engine.events import RunEvent
    from ffe_engine.store import Store

    hook = await Receiver().start()
    cfg = AlertSettings(webhook_url=hook.url, window_s=60.0, **FAST)
    db = tmp_path / "ffe.db"
    start = RunEvent(phase="start", mode="paper", detail={"state": "HALTED", "reason": "ffe ctl halt"})
    try:
        for n in range(4):  # each notifier a process of its own: only the database goes from one to the next
            store = await Store.open(db)
            now = ManualTime()
            notifier = Notifier(cfg, store, channels_from(cfg), now=now, wall=lambda n=n: 1_700_000_000.0 + 5 * n)
            await notifier.start()
            notifier.sink(start, b"")
            await store.flush()
            if n == 3:  # the last stays up past the window's end
                now.t += 61
                notifier.tick()
                await store.flush()
                await asyncio.sleep(0.5)
            await notifier.close()
            await store.close()
    finally:
        await hook.stop()
    assert kinds(hook) == ["STARTED"], kinds(hook)
    assert db_rows(db, "SELECT kind FROM alert_outbox") == [("STARTED",)]
    held = [line for line in log_lines if "alert not sent again" in line]
    assert len(held) == 3 and all("kind=STARTED" in line for line in held), held


async def started_in_a_process_of_its_own(db, cfg, n: int, start) -> None:
    """`start` (a RunEvent) raised by the notifier of a process of its own, the `n`th of a crash loop (5 s apart):
    only the database goes from one process to the next."""
    from ffe_engine.alerts import Notifier
    from ffe_engine.channels import channels_from
    from ffe_engine.store import Store

    store = await Store.open(db)
    notifier = Notifier(cfg, store, channels_from(cfg), now=ManualTime(), wall=lambda: 1_700_000_000.0 + 5 * n)
    await notifier.start()
    notifier.sink(start, b"")
    await store.flush()
    await notifier.close()
    await store.close()


async def test_a_crash_loop_s_starts_that_differ_only_in_the_records_they_set_aside_are_told_once(tmp_path):
    """A disk that fills again at every restart: each start sets aside the records its killed run wrote just before
    it (another count, another file's seq, other times), the rest of its STARTED the same. Those figures are no news:
    the loop is told once per window, or each STARTED going out would send the full disk's page again after it."""
    from ffe_engine.config import AlertSettings
    from ffe_engine.events import RunEvent

    hook = await Receiver().start()
    cfg = AlertSettings(webhook_url=hook.url, window_s=60.0, **FAST)
    db = tmp_path / "ffe.db"
    try:
        for n in range(1, 4):  # each notifier a process of its own: only the database goes from one to the next
            aside = {"records": 3 * n, "fills": 0, "orders": 0, "runs": 0, "boundary": False,
                     "first": f"2026-12-07T14:0{n}:00.000Z", "last": f"2026-12-07T14:0{n}:00.500Z",
                     "file": f"logs/audit.jsonl.uncommitted-after-{673 + 95 * n}"}
            await started_in_a_process_of_its_own(db, cfg, n, RunEvent(
                phase="start", mode="paper", detail={"state": "HALTED", "reason": "records cannot be written",
                                                     "set_aside": aside}))
    finally:
        await hook.stop()
    assert kinds(hook) == ["STARTED"], kinds(hook)
    assert "uncommitted-after-768" in hook.delivered[0].body["text"]


async def test_a_crash_loop_s_start_that_recovered_other_orders_is_told(tmp_path):
    """Only the figures of the records set aside are no news: a start of the loop that found an order in flight
    where the last found none is told (the operator's last word must not be "0 order(s) in flight")."""
    from ffe_engine.config import AlertSettings
    from ffe_engine.events import RunEvent

    hook = await Receiver().start()
    cfg = AlertSettings(webhook_url=hook.url, window_s=60.0, **FAST)
    db = tmp_path / "ffe.db"
    try:
        for n in range(3):
            await started_in_a_process_of_its_own(db, cfg, n, RunEvent(
                phase="start", mode="live", detail={"state": "RUNNING", "recovered_orders": min(n, 1),
                                                    "last_run": "ended without its stop record"}))
    finally:
        await hook.stop()
    said = [r.body["text"] for r in hook.delivered]
    assert len(said) == 2 and "0 order(s) in flight" in said[0] and "1 order(s) in flight" in said[1], said


async def test_alerts_pending_in_a_backup_are_not_delivered_again_after_the_runbook_s_restore(tmp_path):
    """The receiver is down when the kill switch is pressed: the HALTED page waits in the outbox, and a backup taken
    then holds it pending. The receiver comes back and the engine delivers it; the engine is stopped and the backup
    restored over its records (docs/runbook.md). The restored start pages its own state (HALTED, kept from before
    it) and does not deliver the backup's pending alerts again: one halt, not two HALTED pages for it. The restored
    outbox keeps them as not sent, saying why, and the restore says how many there were."""
    hook = await Receiver().start()
    hook.fail_with = 503
    env = ffe_env(FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook", FFE_ALERTS__RETRY_INITIAL_S="0.05",
                  FFE_ALERTS__RETRY_MAX_S="0.2")
    db = tmp_path / "data" / "ffe.db"
    try:
        engine = await halted_with_its_page_pending(tmp_path, env)
        try:
            await asyncio.to_thread(ffe_ok, tmp_path, "backup", "--to", str(tmp_path / "backups"), env=env)
            hook.fail_with = None
            await until(lambda: "HALTED" in kinds(hook), what="the HALTED page delivered once the receiver is back")
        finally:
            engine.send_signal(signal.SIGTERM)
            await asyncio.wait_for(engine.communicate(), 60)
        assert engine.returncode == 0
        (archive,) = (tmp_path / "backups").glob("ffe-backup-*.tar.zst")
        restored = await asyncio.to_thread(ffe_ok, tmp_path, "restore", str(archive), "--force", env=env)
        await asyncio.to_thread(ffe_ok, tmp_path, "run", "--headless", "--max-bars", "3", env=env)
        await asyncio.sleep(0.2)
    finally:
        await hook.stop()
    halted = [r.body["text"] for r in hook.delivered if r.body["kind"] == "HALTED"]
    assert len(halted) == 2, halted
    assert halted[0].startswith("ffe HALTED by ctl") and halted[1].startswith("ffe starts HALTED, kept from before")
    withheld = db_rows(db, "SELECT kind, status, last_error FROM alert_outbox WHERE status NOT IN ('sent', 'pending')")
    assert [k for k, _, _ in withheld] == ["STARTED", "HALTED"], withheld
    assert all(s == "withheld" and "restored from a backup" in e and archive.name in e for _, s, e in withheld), \
        withheld
    assert "2 alert(s) pending in the backup (STARTED x1, HALTED x1) not delivered again" in restored.stdout, \
        restored.stdout


async def test_a_halt_whose_page_waited_in_the_backup_is_paged_by_the_restored_start_on_a_new_machine(tmp_path):
    """The runbook's move to a new machine with the receiver down: the kill switch pressed (its HALTED page waits in
    the outbox), the engine stopped, a backup taken and restored into a new data directory, the receiver back. Nobody
    delivered the HALTED page: the restored start, which does not deliver the backup's pending alerts again (the
    engine it was taken from may have), pages that it starts from a restored backup, HALTED and why, and which
    alerts pending in the backup were not delivered again, so that an operator who takes pages only hears of it."""
    from conftest import starter_config

    hook = await Receiver().start()
    hook.fail_with = 503
    env = ffe_env(FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook", FFE_ALERTS__RETRY_INITIAL_S="0.05",
                  FFE_ALERTS__RETRY_MAX_S="0.2", FFE_ALERTS__MIN_SEVERITY="page")
    new = tmp_path / "new"
    new.mkdir()
    starter_config(new)
    try:
        engine = await halted_with_its_page_pending(tmp_path, env)
        engine.send_signal(signal.SIGTERM)
        await asyncio.wait_for(engine.communicate(), 60)
        assert engine.returncode == 0
        await asyncio.to_thread(ffe_ok, tmp_path, "backup", "--to", str(tmp_path / "backups"), env=env)
        (archive,) = (tmp_path / "backups").glob("ffe-backup-*.tar.zst")
        restored = await asyncio.to_thread(ffe_ok, new, "restore", str(archive), env=env)
        hook.fail_with = None
        await asyncio.to_thread(ffe_ok, new, "run", "--headless", "--max-bars", "3", env=env)
        await asyncio.sleep(0.2)
    finally:
        await hook.stop()
    state, reason = db_rows(new / "data" / "ffe.db", "SELECT state, reason FROM engine_state")[0]
    assert state == "HALTED", (state, reason)
    pages = [r.body for r in hook.delivered]
    assert len(pages) == 1 and pages[0]["severity"] == "page" and pages[0]["kind"] == "STARTED", pages
    text = pages[0]["text"]
    assert "restored from a backup" in text and archive.name in text, text
    assert f"HALTED ({reason})" in text and "HALTED x1" in text, (text, reason)
    # The restore says it, and where the operator will read which they were.
    assert "HALTED x1" in restored.stdout and "first alert" in restored.stdout, restored.stdout


def test_a_breaker_opened_by_the_exchange_refusing_this_machine_s_clock_says_it_is_the_clock():
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import BreakerChanged

    error = ('InvalidNonce: binance {"code":-1021,"msg":"Timestamp for this request was 1000ms ahead of the '
             'server\'s time."}')
    (alert,) = alerts_for(BreakerChanged(venue="binance", state="open", previous="closed", failures=3, error=error),
                          state="RUNNING")
    assert alert.kind == "BREAKER_OPEN"
    assert "this machine's clock is off; set it right (NTP" in alert.text, alert.text



@pytest.mark.parametrize("between", [("HALTED", "page", "ffe starts HALTED, kept from before"),
                                     ("STARTED", "warn", "ffe started (PAPER, HALTED)")], ids=["halted", "started"])
async def test_a_failure_sent_past_the_outbox_again_after_another_alert_went_out_is_sent_though_within_its_window(
        tmp_path, between):
    """A start restated a HALTED, or said it started (delivered through the outbox), then failed on the disk that
    halted the last run: its RECORDS_UNWRITABLE, the same as paged within alerts.window_s, is the operator's last word
    only if it is sent again. Held back, the last they heard would say the engine starts. Without an alert in between
    it is held back as before (a crash loop is told once per window). Each notifier is a process of its own."""
    from ffe_engine.alerts import Alert, Notifier
    from ffe_engine.channels import channels_from
    from ffe_engine.config import AlertSettings
    from ffe_engine.store import Store

    loop = asyncio.get_running_loop()
    hook = await Receiver().start()
    cfg = AlertSettings(webhook_url=hook.url, **FAST, window_s=3600)
    failure = Alert("RECORDS_UNWRITABLE", "RECORDS_UNWRITABLE", "page", "ffe start FAILED: disk full",
                    cause="the records cannot be written")
    beside = {"sent_file": tmp_path / "ffe.alerts-sent"}
    walls = iter(1_700_000_000.0 + 60 * n for n in range(10))
    store = await Store.open(tmp_path / "ffe.db")
    try:
        for paged_between in (False, False, True):
            wall = next(walls)
            notifier = Notifier(cfg, store, channels_from(cfg), now=loop.time, wall=lambda w=wall: w, **beside)
            await notifier.start()
            if paged_between:
                kind, severity, text = between
                notifier.raise_alert(Alert(kind, f"{kind}:x", severity, text))
                await store.flush()
                await until(lambda: kind in kinds(hook), what="the alert between delivered")
            await notifier.send_now(failure)
            await notifier.close()
    finally:
        await store.close()
        await hook.stop()
    assert kinds(hook) == ["RECORDS_UNWRITABLE", between[0], "RECORDS_UNWRITABLE"], kinds(hook)


async def test_a_disk_running_low_is_said_without_any_alert_channel(tmp_path):
    """The shipped default has no alert channel: a disk running low must still reach the operator, as a warning in
    the log (the console's log pane, a headless run's stderr) and as a problem of the health verdict (DEGRADED:
    `ffe ctl health`, /health, the console's Health view), until it has room again."""
    settings = make_settings(tmp_path, monitor={"disk_free_min_mb": 1e9})  # more than any disk here: low at once
    async with engine_session(settings) as host:
        await until(lambda: host.monitor.health()["status"] == "degraded", what="the verdict degraded")
        [problem] = host.monitor.health()["problems"]
        assert problem.startswith("disk low: data and log directory") and "MB free" in problem, problem
        said = [line for line in host.log.getvalue().splitlines() if "disk running low" in line]
        assert len(said) == 1 and "MB free" in said[0] and "WARN" in said[0].upper(), host.log.getvalue()
        host.monitor.cfg = host.monitor.cfg.model_copy(update={"disk_free_min_mb": 0.0})  # room again
        await until(lambda: host.monitor.health()["status"] == "healthy", what="healthy again")
