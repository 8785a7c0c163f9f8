"""An engine on the exchange's candles (market.source = "exchange") starts only on a warm-up history that is the
exchange's candles: answers that stay no candles (`{}` or a gateway's HTML page, served 200) fail the start as an
exchange that does not answer does, in one line, paged, with the run's record ending on the error; never an engine
trading on cold indicators (or a bogus candle) without a word. Real `ffe run --headless` against the fake Binance."""

from __future__ import annotations

import json

import pytest

from live_helpers import AsyncFfe, fx, live_config, live_env, wait_for, write_config  # noqa: F401
from receiver import Receiver

KLINES = "GET /api/v3/klines"


@pytest.mark.parametrize(("mode", "kind"), [("paper", "empty_200"), ("live", "page_200")])
async def test_a_start_whose_warm_up_answers_stay_no_candles_fails_in_one_line_and_is_paged(tmp_path, fx, mode,
                                                                                            kind):
    if mode == "live":
        write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
        args, venue = ("run", "--headless", "--live"), "binance"
    else:
        write_config(tmp_path, live_config(fx, mode="paper", venue={"kind": "paper"}))
        args, venue = ("run", "--headless"), "paper"
    fx.fault(KLINES, kind, times=1000)
    hook = await Receiver().start()
    p = await AsyncFfe.start(tmp_path, *args, env={**live_env(fx), "FFE_ALERTS__WEBHOOK_URL": hook.url + "/hook"})
    try:
        await wait_for(lambda: not p.alive() or "engine started" in p.stderr, timeout=60,
                       what="the start's end")
        assert "engine started" not in p.stderr, p.stderr[-3000:]
        assert await p.wait(30) == 1, p.stderr[-3000:]
    finally:
        await p.kill()
        await hook.stop()
    assert "Traceback" not in p.stderr and "Unclosed" not in p.stderr, p.stderr[-3000:]
    assert set(r.fault for r in fx.requests_to(KLINES)) == {kind}
    assert len(fx.requests_to(KLINES)) == 4  # retried as other failed reads are
    errors = [line for line in p.stderr.splitlines() if "fetch_ohlcv" in line or line.startswith("ffe: error")]
    assert len(errors) == 1, p.stderr[-3000:]
    line = errors[0]
    assert line.startswith(f"ffe: error: start failed on {venue}: binance fetch_ohlcv BTC/USDT: "), line
    assert "not its candles" in line and "nothing was sent" in line, line
    assert not fx.requests_to("POST /api/v3/order")
    records = [json.loads(r) for r in (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()]
    runs = [(r["phase"], r["detail"]) for r in records if r["event"] == "run"]
    assert [phase for phase, _ in runs] == ["start", "stop"], runs
    assert "not its candles" in runs[1][1]["error"], runs
    pages = [r.body for r in hook.delivered if r.body.get("kind") == "START_FAILED"]
    assert len(pages) == 1 and pages[0]["severity"] == "page", [r.body for r in hook.delivered]
    assert "fetch_ohlcv BTC/USDT" in pages[0]["text"] and "not its candles" in pages[0]["text"], pages[0]


async def test_a_start_on_a_market_with_fewer_candles_than_the_warm_up_asks_says_so_and_trades_on(tmp_path, fx):
    """engine.warmup_bars above the exchange's page (Binance: 1000 candles a request) on a market listed 30 minutes
    ago: the start reads the warm-up page by page, warms up on the 30 bars there are and says so in one line (how
    many of how many), a warning: the engine starts (the exchange has no more to give, a restart would not help)."""
    current = fx.market_clock() // 60_000 * 60_000  # the candle the fake still has open
    fx.kline_gaps = [(current - 10_000_000 * 60_000, current - 30 * 60_000)]  # no candle before
    write_config(tmp_path, live_config(fx, mode="paper", venue={"kind": "paper"}, engine={"warmup_bars": 2500}))
    p = await AsyncFfe.start(tmp_path, "run", "--headless", env=live_env(fx))
    try:
        await wait_for(lambda: not p.alive() or "engine started" in p.stderr, timeout=60, what="the start")
        assert "engine started" in p.stderr, p.stderr[-3000:]
        assert await p.stop() == 0, p.stderr[-3000:]
    finally:
        await p.kill()
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    said = [line for line in p.stderr.splitlines() if "warms up on" in line]
    assert len(said) == 1, p.stderr[-3000:]
    assert "BTC/USDT" in said[0] and "30 of the 2500 bars" in said[0] and "engine.warmup_bars" in said[0], said
    assert p.stderr.index(said[0]) < p.stderr.index("engine started")
