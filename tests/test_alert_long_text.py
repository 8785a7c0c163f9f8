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
