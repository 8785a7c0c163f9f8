"""The exchange's Retry-After, while it lasts, is among what blocks entries: `ffe ctl why` and the console's Why view
name it (what the exchange asked, until when, that it lifts by itself then), and the status line and the Health
view show it. A live engine run as the operator runs it (`ffe run --headless --live`) on the fake Binance, read with
`ffe ctl` and with an attached console at 80x24."""

from __future__ import annotations

import re

from ffe_engine.control import request
from ffe_tui.app import ConsoleApp
from live_helpers import (BTC, POST_ORDER, AsyncFfe, fx, live_config, live_env, live_settings,  # noqa: F401
                          processes, run_ffe_async, wait_for, write_config)
from test_tui_helpers import screen_text, status_text, until

KLINES = "GET /api/v3/klines"
HOLD_S = 60  # longer than the test: the hold lasts while it reads


async def _start(tmp_path, fx, processes) -> AsyncFfe:
    write_config(tmp_path, live_config(fx))
    p = await AsyncFfe.start(tmp_path, "run", "--headless", "--live", env=live_env(fx))
    processes.append(p)
    await wait_for(lambda: "control socket ready" in p.stderr or not p.alive(), timeout=60, what="the control socket")
    assert p.alive(), p.stderr
    await _ctl(tmp_path, fx, "resume")
    return p


async def _ctl(cwd, fx, *args: str) -> str:
    p = await run_ffe_async(cwd, "ctl", *args, env=live_env(fx), name="ctl")
    assert p.proc is not None and p.proc.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


async def _buy(tmp_path) -> dict:
    answer = await request(tmp_path / "data" / "ffe.sock", "order",
                           {"symbol": BTC, "side": "buy", "quantity": 0.001, "by": "test"})
    assert answer["ok"], answer
    return answer["result"]


def _until_text(reason: str) -> str:
    """The time the refusal names, as HH:MM:SS."""
    found = re.search(r"before (?:\S*T)?(\d\d:\d\d:\d\d)", reason)
    assert found, reason
    return found.group(1)


def _seconds(hms: str) -> int:
    h, m, s = map(int, hms.split(":"))
    return h * 3600 + m * 60 + s


def _names(text: str, until_text: str) -> bool:
    """Whether `text` says "before" the time `until_text`, give or take a second: an order refused for a read's hold
    holds orders to the same time, counted from its own moment."""
    return abs(_seconds(_until_text(text)) - _seconds(until_text)) <= 1


def _from(text: str, words: str) -> str:
    """The screen's text from `words` on, its wrapping undone."""
    flat = " ".join(text.split())
    assert words in flat, text
    return flat[flat.index(words):]


async def test_why_and_the_console_name_the_hold_a_418_on_a_candle_poll_started(tmp_path, fx, processes):
    p = await _start(tmp_path, fx, processes)
    fx.fault(KLINES, "418", retry_after=HOLD_S)
    await wait_for(lambda: [r for r in fx.requests_to(KLINES) if r.status == 418], timeout=30,
                   what="a candle poll answered 418")
    refused = await _buy(tmp_path)
    assert not refused["accepted"] and refused["reason"].startswith("VENUE_HOLD"), refused
    until_text = _until_text(refused["reason"])

    why = await _ctl(tmp_path, fx, "why")
    assert "nothing blocks entries now" not in why, why
    (line,) = [ln for ln in why.splitlines() if "VENUE_HOLD" in ln]
    assert "Retry-After" in line and _names(line, until_text) and "by itself" in line, line

    app = ConsoleApp(live_settings(tmp_path, fx), attach=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.snap is not None, "the attached snapshot")
        await until(pilot, lambda: "HOLD" in status_text(app), "the hold on the status line")
        await pilot.press("6")
        await until(pilot, lambda: "VENUE_HOLD" in screen_text(app), "the hold in the Why view")
        text = screen_text(app)
        assert "nothing blocks entries now" not in text and _names(_from(text, "VENUE_HOLD"), until_text), text
        await pilot.press("7")
        await until(pilot, lambda: "exchange hold" in screen_text(app), "the hold in the Health view")
        said = _from(screen_text(app), "exchange hold")
        assert "Retry-After" in said and "by itself" in said and _names(said, until_text), said
    assert await p.stop() == 0, p.stderr


async def test_why_names_the_hold_an_order_limit_on_an_order_started(tmp_path, fx, processes):
    """Binance's 429 -1015 ("Too many new orders") holds orders only: said as such."""
    p = await _start(tmp_path, fx, processes)
    fx.fault(POST_ORDER, "429", retry_after=HOLD_S, code=-1015)
    refused = await _buy(tmp_path)
    assert not refused["accepted"] and "VENUE_HOLD" in refused["reason"], refused
    why = await _ctl(tmp_path, fx, "why")
    assert "nothing blocks entries now" not in why, why
    (line,) = [ln for ln in why.splitlines() if "VENUE_HOLD" in ln]
    assert "no orders" in line and "Retry-After" in line and "by itself" in line, line
    status = await _ctl(tmp_path, fx, "status")  # the one line an operator reads first says it too
    assert "HOLD to " in status and "ffe ctl why" in status, status
    assert await p.stop() == 0, p.stderr
