"""Discord and Telegram refuse a message past their length (2000 and 4096 characters). An alert longer than that
loses its middle, not its ending: what to do and the engine it comes from (`[HOST:DATA_DIR]`, config.md: every
alert's text on every channel ends with it) are at the end, and a mark says text was left out.

Real parts: an engine halted with a long reason, its monitor delivering to Discord- and Telegram-like receivers on
127.0.0.1.
"""

from __future__ import annotations

from conftest import engine_session, make_settings
from ffe_engine.channels import origin_of
from receiver import Receiver
from test_alert_returns import FAST
from test_monitor import until

REASON = "the operator's long reason " + "x" * 6000 + " ends here"


async def test_a_long_alert_keeps_its_head_and_its_ending_whole_on_discord_and_telegram(tmp_path):
    discord, tg = await Receiver().start(), await Receiver().start()
    tg.telegram = True
    settings = make_settings(tmp_path, alerts={
        "discord_url": discord.url + "/api/webhooks/1/abc", "telegram_token": "123456:telegram-token-abc",
        "telegram_chat_id": "-100200300", "telegram_api": tg.url, **FAST})
    suffix = origin_of(settings.data_dir).short
    try:
        async with engine_session(settings) as host:
            await host.engine.halt(reason=REASON, by="ctl")
            await until(lambda: all(any(t.startswith("[PAGE] ffe HALTED") for t in r.texts()) for r in (discord, tg)),
                        what="HALTED on both channels")
        [sent] = [t for t in discord.texts() if t.startswith("[PAGE] ffe HALTED")]
        [told] = [t for t in tg.texts() if t.startswith("[PAGE] ffe HALTED")]
        for text, limit in ((sent, 2000), (told, 4096)):
            assert len(text) <= limit, len(text)
            assert text.startswith("[PAGE] ffe HALTED by ctl: the operator's long reason xxx"), text[:80]
            assert text.endswith(f"ends here. New orders refused, open orders being cancelled; positions stay open. "
                                 f"{suffix}"), text[-200:]
            assert "characters left out" in text, text
    finally:
        await discord.stop()
        await tg.stop()


def test_a_start_failure_page_keeps_the_end_of_its_error_which_says_what_to_do():
    """A start that failed on a long error (the exchange's answer quoted, then what to do): the START_FAILED page
    keeps the error's end, not its first 160 characters cut mid-word, and an error ending in a period gets no
    second."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import RunEvent

    error = ("start failed on binance: fetch_ohlcv BTC/USDT answered " + "{} " * 60 + "(in maintenance?), or the "
             "market has none; nothing was sent: start again once it answers.")
    [alert] = alerts_for(RunEvent(phase="stop", mode="LIVE", detail={"error": error}))
    assert alert.kind == "START_FAILED", alert
    assert "nothing was sent: start again once it answers. The process exits 1" in alert.text, alert.text
    assert alert.text.startswith("ffe start FAILED (LIVE): start failed on binance: fetch_ohlcv"), alert.text
    assert ".." not in alert.text, alert.text
    cut = "start failed on binance: GET https://127.0.0.1:1/" + "seg8888888888/" * 40 + "..."
    [alert] = alerts_for(RunEvent(phase="stop", mode="LIVE", detail={"error": cut}))
    assert "seg8888888888/... The process exits 1" in alert.text, alert.text  # the mark of the cut kept


def test_the_breaker_keeps_the_end_of_a_long_error():
    """The breaker's last error (the reason of the PAUSED it sets, in status, health and why) keeps the start and
    the end of a long one, the exchange's answer last, not 200 characters cut mid-word."""
    from ffe_engine.breaker import CircuitBreaker

    breaker = CircuitBreaker("binance", failure_threshold=5, recovery_timeout_s=30.0, now=lambda: 0.0)
    error = "binance GET https://api.binance.com/api/v3/account " + "503 Service Unavailable " * 20 + "THE END"
    breaker.record_failure(error)
    assert breaker.last_error.startswith("binance GET") and breaker.last_error.endswith("THE END"), \
        breaker.last_error
    assert len(breaker.last_error) <= 200


async def test_a_start_refused_on_an_error_ending_in_a_period_pages_one_period(tmp_path):
    """The exchange's refusal of a live start's check ends in a period (Binance's messages do): the START_FAILED
    page sent past the outbox says it once, `... action. Nothing trades`, not `action.. Nothing trades`."""
    from ffe_engine.clock import WallClock
    from ffe_engine.errors import StartError
    from ffe_engine.monitor import start_refused

    hook = await Receiver().start()
    try:
        settings = make_settings(tmp_path, alerts={"webhook_url": hook.url + "/hook", **FAST})
        refusal = StartError("live start check failed on binance: -2015 Invalid API-key, IP, or permissions for "
                             "action.")
        await start_refused(settings, WallClock(), refusal)
        [page] = [r.body for r in hook.delivered]
        assert "permissions for action. Nothing trades until a start succeeds." in page["text"], page
    finally:
        await hook.stop()
