"""Vote providers on constructed price paths where the right answer is known, the registry, and the LLM voter
against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import math
from pathlib import Path

import pytest
from aiohttp import web

from ffe_engine.ensemble import Ensemble
from ffe_engine.indicators import IndicatorSet
from ffe_engine.model import Action, Candle, Vote
from ffe_engine.schema import SecretStr
from ffe_engine.signals import BUILTIN, close_providers, make_providers
from ffe_engine.signals.breakout import BreakoutProvider
from ffe_engine.signals.llm import LLMError, LLMProvider, parse_answer
from ffe_engine.signals.mean_reversion import MeanReversionProvider
from ffe_engine.signals.momentum import MomentumProvider
from ffe_engine.signals.trend import TrendProvider

BUY, SELL, HOLD = Action.BUY, Action.SELL, Action.HOLD
DATA = Path(__file__).resolve().parents[1] / "samples" / "BTC-USD_1h_2020-2023.csv.gz"
HOUR = 3_600_000


# ---- constructed paths ----------------------------------------------------------------------------------------

def votes_along(closes: list[float], provider, spread: float = 0.002) -> list[Vote]:
    """The provider's vote after each bar. Bars open at the previous close and span it and the close, widened by
    `spread` on each side."""
    ind = IndicatorSet("TEST/USD")
    prev = closes[0]
    out = []
    for i, c in enumerate(closes):
        ind.update(Candle("TEST/USD", i * HOUR, prev, max(prev, c) * (1 + spread), min(prev, c) * (1 - spread), c,
                          10.0))
        prev = c
        out.append(provider.vote(ind))
    return out


def uptrend(n: int = 200, start: float = 100.0, step: float = 0.004) -> list[float]:
    # Steady growth with a small wiggle, so bars are not all identical.
    return [start * (1 + step) ** i * (1 + 0.001 * math.sin(i)) for i in range(n)]


def downtrend(n: int = 200) -> list[float]:
    return [100.0 * (1 - 0.004) ** i * (1 + 0.001 * math.sin(i)) for i in range(n)]


def zigzag_range(n: int = 120, mid: float = 100.0, amp: float = 1.5, period: int = 12) -> list[float]:
    out = []
    for i in range(n):
        ph = (i % period) / period
        out.append(mid + amp * (4 * ph - 1 if ph < 0.5 else 3 - 4 * ph))
    return out


# ---- trend ----------------------------------------------------------------------------------------------------

def test_trend_buys_a_clean_uptrend_and_sells_a_downtrend():
    up = votes_along(uptrend(), TrendProvider())
    down = votes_along(downtrend(), TrendProvider())
    assert up[-1].action is BUY and 0.5 <= up[-1].confidence <= 1.0 and "EMA" in up[-1].reason
    assert down[-1].action is SELL and 0.5 <= down[-1].confidence <= 1.0
    # Once the slow EMA is warm and the trend established, the verdict never flips.
    assert all(v.action is BUY for v in up[80:])
    assert all(v.action is SELL for v in down[80:])


def test_trend_stays_out_of_a_range():
    votes = votes_along(zigzag_range(200), TrendProvider())
    assert all(v.action is HOLD or v.confidence < 0.6 for v in votes[60:])
    assert sum(v.action is HOLD for v in votes[60:]) > 0.8 * len(votes[60:])


def test_trend_confidence_grows_with_the_spread():
    gentle = votes_along(uptrend(step=0.001), TrendProvider())[-1]
    steep = votes_along(uptrend(step=0.006), TrendProvider())[-1]
    assert gentle.action is BUY and steep.action is BUY
    assert steep.confidence > gentle.confidence


# ---- momentum -------------------------------------------------------------------------------------------------

def test_momentum_sells_a_crash_and_buys_the_rebound():
    crash = uptrend(150) + [uptrend(150)[-1] * 0.97 ** k for k in range(1, 9)]
    votes = votes_along(crash, MomentumProvider())
    assert all(v.action is SELL for v in votes[-6:])
    assert votes[-1].confidence >= 0.9
    rebound = crash + [crash[-1] * 1.03 ** k for k in range(1, 9)]
    votes = votes_along(rebound, MomentumProvider())
    assert votes[-1].action is BUY


def test_momentum_cross_gets_the_bonus():
    plain = MomentumProvider(cross_bonus=0.0)
    bonus = MomentumProvider(cross_bonus=0.2)
    # A straight-line decline keeps the histogram below zero; the turn makes it cross.
    path = [200 - 0.5 * i for i in range(120)] + [140.5 + 1.0 * k for k in range(1, 30)]
    a = votes_along(path, plain)
    b = votes_along(path, bonus)
    assert all(v.action is not BUY for v in a[:120])
    cross = next(i for i, v in enumerate(a) if v.action is BUY)
    assert "crossed above zero" in a[cross].reason and cross < 125
    assert b[cross].confidence == pytest.approx(min(1.0, a[cross].confidence + 0.2))


# ---- mean reversion -------------------------------------------------------------------------------------------

def test_mean_reversion_buys_the_bottom_after_a_drop_and_sells_the_top_after_a_rise():
    base = zigzag_range(120)
    drop = base + [base[-1] - 0.8 * k for k in range(1, 7)]
    rise = base + [base[-1] + 0.8 * k for k in range(1, 9)]
    mr = MeanReversionProvider()
    at_bottom = votes_along(drop, mr)
    at_top = votes_along(rise, mr)
    assert at_bottom[-1].action is BUY and at_bottom[-1].confidence >= 0.55 and "oversold" in at_bottom[-1].reason
    assert at_top[-1].action is SELL and at_top[-1].confidence >= 0.55 and "overbought" in at_top[-1].reason
    # Inside the range, nothing is stretched: no mean-reversion signal.
    assert all(v.action is HOLD for v in votes_along(base, mr))


def test_mean_reversion_needs_the_band_as_well_as_rsi():
    # RSI alone oversold is not enough: the close must also be at the lower band.
    base = zigzag_range(120)
    drop = base + [base[-1] - 0.8 * k for k in range(1, 7)]
    strict = MeanReversionProvider(oversold=30, band_zone=0.0)
    loose_rsi = MeanReversionProvider(oversold=45, band_zone=0.0)
    assert votes_along(drop, strict)[-1].action is BUY  # the close is below the lower band
    recovering = drop + [drop[-1] + 1.0, drop[-1] + 2.0]
    v = votes_along(recovering, loose_rsi)[-1]
    assert v.action is HOLD  # RSI still low, but the price is back inside the band


# ---- breakout -------------------------------------------------------------------------------------------------

def test_breakout_buys_a_break_above_the_range_and_not_before():
    base = zigzag_range(120)
    path = base + [103.5]
    votes = votes_along(path, BreakoutProvider())
    assert all(v.action is HOLD for v in votes[:-1])
    assert votes[-1].action is BUY and votes[-1].confidence >= 0.55


def test_breakout_and_momentum_sell_a_crash():
    path = uptrend(150) + [uptrend(150)[-1] * 0.97 ** k for k in range(1, 9)]
    b = votes_along(path, BreakoutProvider())
    m = votes_along(path, MomentumProvider())
    assert b[-1].action is SELL and b[-1].confidence >= 0.55
    assert m[-1].action is SELL
    assert all(v.action is BUY for v in votes_along(path, TrendProvider())[100:150])  # it was a real uptrend


# ---- shared behaviour -----------------------------------------------------------------------------------------

def test_every_provider_holds_with_zero_confidence_while_warming_up():
    providers = make_providers(["trend", "momentum", "mean_reversion", "breakout"])
    for p in providers:
        votes = votes_along(uptrend(15), p)
        assert all(v.action is HOLD and v.confidence == 0.0 and v.provider == p.name for v in votes)


@pytest.fixture(scope="module")
def btc_candles():
    with gzip.open(DATA, "rt", newline="") as f:
        return [Candle("BTC/USD", i * HOUR, float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]),
                       float(r["volume"])) for i, r in enumerate(csv.DictReader(f))]


def test_votes_on_real_data_are_well_formed_and_the_default_ensemble_trades(btc_candles):
    providers = make_providers(["trend", "momentum", "mean_reversion", "breakout"])
    ens = Ensemble()
    ind = IndicatorSet("BTC/USD")
    seen: dict[str, set] = {p.name: set() for p in providers}
    entries = 0
    was_buy = False
    for c in btc_candles:
        ind.update(c)
        votes, failed = ens.collect_sync(providers, ind)
        assert not failed and len(votes) == 4
        for v in votes:
            assert 0.0 <= v.confidence <= 1.0 and v.reason
            seen[v.provider].add(v.action)
        r = ens.decide(votes, failed)
        is_buy = r.action is BUY and r.confidence >= 0.55
        entries += is_buy and not was_buy
        was_buy = is_buy
    assert all(actions == {BUY, SELL, HOLD} for actions in seen.values()), seen
    # Distinct confident BUY episodes over four years of hourly bars: an active but not frantic trader.
    assert 150 <= entries <= 2000, entries


def test_the_default_ensemble_trades_on_the_simulated_market():
    from ffe_engine.market.simulated import SimulatedFeed

    feed = SimulatedFeed(["BTC/USDT", "ETH/USDT"], 60_000, seed=7, start_ts=0, max_bars=600)
    providers = make_providers(["trend", "momentum", "mean_reversion", "breakout"])
    ens = Ensemble()
    sets = {s: IndicatorSet(s) for s in feed.symbols}
    confident: dict[str, set] = {s: set() for s in feed.symbols}
    for c in feed.iter_candles():
        ind = sets[c.symbol]
        ind.update(c)
        r = ens.decide(*ens.collect_sync(providers, ind))
        if r.confidence >= 0.55:
            confident[c.symbol].add(r.action)
    assert all({BUY, SELL} <= actions for actions in confident.values()), confident


def test_registry_builds_providers_and_rejects_unknown_names_and_parameters():
    assert set(BUILTIN) >= {"trend", "momentum", "mean_reversion", "breakout", "llm"}
    ps = make_providers(["breakout", "trend"], {"trend": {"min_spread": 0.5}, "momentum": {"full_hist": 9}})
    assert [p.name for p in ps] == ["breakout", "trend"] and ps[1].min_spread == 0.5
    with pytest.raises(ValueError, match="'sentiment'"):
        make_providers(["trend", "sentiment"])
    with pytest.raises(ValueError, match="'trend'.*'min_sprad'"):
        make_providers(["trend"], {"trend": {"min_sprad": 0.5}})
    with pytest.raises(ValueError, match="twice"):
        make_providers(["trend", "trend"])
    with pytest.raises(ValueError, match="oversold"):
        make_providers(["mean_reversion"], {"mean_reversion": {"oversold": 80, "overbought": 70}})


# ---- the LLM voter, against a real HTTP server ----------------------------------------------------------------

SECRET = "sk-test-0123456789abcdef"


class ChatServer:
    """A minimal OpenAI-compatible chat completions endpoint whose answer the test chooses."""

    def __init__(self) -> None:
        self.mode = "good"
        self.requests: list[dict] = []
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, "auth": request.headers.get("Authorization"), "body": body})
        if self.mode == "slow":
            try:
                await asyncio.wait_for(self.release.wait(), 10)
            except asyncio.TimeoutError:
                pass
        if self.mode == "error":
            return web.json_response({"error": {"message": "overloaded"}}, status=500)
        content = {
            "good": 'Sure.\n```json\n{"action": "sell", "confidence": 0.8, "reason": "RSI  high,\\n fading"}\n```',
            "slow": '{"action": "BUY", "confidence": 0.9, "reason": "late"}',
            "malformed": "I would probably buy here, confidence high.",
            "bad_conf": '{"action": "BUY", "confidence": 7, "reason": "very sure"}',
            # A reason that would drive the terminal it is printed on: clear the screen, set the window's title,
            # ring the bell, turn the text around, backspace over what is shown.
            "escapes": json.dumps({"action": "BUY", "confidence": 0.9, "reason": ESCAPES}),
        }[self.mode]
        return web.json_response({"id": "x", "object": "chat.completion",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"

    async def stop(self) -> None:
        self.release.set()
        await self.runner.cleanup()


ESCAPES = "\x1b[2J\x1b[31mHACKED\x1b]0;pwned\x07 [bold red]HALTED[/] \u202eevil\b\b\b"


async def test_an_llm_reason_reaches_no_terminal_as_control_characters(chat_server, warm_ind):
    """The model's words are shown by `ffe audit show` and stored in the records: its control and direction
    characters are shown as their escapes, never passed to a terminal to act on."""
    chat_server.mode = "escapes"
    llm = LLMProvider(base_url=chat_server.base_url, model="m", timeout_s=5)
    try:
        v = await llm.vote(warm_ind)
    finally:
        await llm.close()
    assert v.action is BUY and v.reason.isprintable(), repr(v.reason)
    assert v.reason == r"\x1b[2J\x1b[31mHACKED\x1b]0;pwned\x07 [bold red]HALTED[/] \u202eevil\x08\x08\x08", v.reason


@pytest.fixture
async def chat_server():
    server = ChatServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def warm_ind() -> IndicatorSet:
    ind = IndicatorSet("BTC/USD")
    for i, c in enumerate(uptrend(120)):
        ind.update(Candle("BTC/USD", i * HOUR, c, c * 1.002, c * 0.998, c, 1.0))
    assert ind.warm
    return ind


async def test_llm_vote_reads_the_answer_and_sends_model_key_and_snapshot(chat_server, warm_ind):
    llm = LLMProvider(base_url=chat_server.base_url, model="local-model", api_key=SecretStr(SECRET), timeout_s=5)
    try:
        v = await llm.vote(warm_ind)
    finally:
        await llm.close()
    assert (v.provider, v.action, v.confidence, v.reason) == ("llm", SELL, 0.8, "RSI high, fading")
    req = chat_server.requests[-1]
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == f"Bearer {SECRET}"
    assert req["body"]["model"] == "local-model"
    user = req["body"]["messages"][-1]["content"]
    assert "BTC/USD" in user and "RSI" in user


async def test_llm_without_key_sends_no_authorization(chat_server, warm_ind):
    llm = LLMProvider(base_url=chat_server.base_url, model="m")
    providers = make_providers(["trend"]) + [llm]
    try:
        await llm.vote(warm_ind)
        session = llm._session
    finally:
        await close_providers(providers)
    assert chat_server.requests[-1]["auth"] is None
    assert session.closed


def test_importing_the_providers_does_not_load_aiohttp():
    import subprocess
    import sys

    code = "import sys, ffe_engine.signals; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


async def test_llm_holds_without_asking_while_indicators_warm_up(chat_server):
    llm = LLMProvider(base_url=chat_server.base_url, model="m")
    v = await llm.vote(IndicatorSet("BTC/USD"))
    await llm.close()
    assert v.action is HOLD and v.confidence == 0.0 and chat_server.requests == []


async def test_ensemble_counts_a_good_llm_vote_with_its_latency(chat_server, warm_ind):
    llm = LLMProvider(base_url=chat_server.base_url, model="m", api_key=SECRET)
    providers = make_providers(["trend", "momentum"]) + [llm]
    ens = Ensemble(provider_timeout_s=5)
    try:
        votes, failed = await ens.gather(providers, warm_ind)
    finally:
        await llm.close()
    assert failed == []
    assert [v.provider for v in votes] == ["trend", "momentum", "llm"]
    assert votes[2].action is SELL and votes[2].latency_ms > 0.0


@pytest.mark.parametrize("mode", ["malformed", "bad_conf", "error"])
async def test_bad_llm_answers_fail_the_provider_without_leaking_the_key(chat_server, warm_ind, mode):
    chat_server.mode = mode
    llm = LLMProvider(base_url=chat_server.base_url, model="m", api_key=SecretStr(SECRET))
    try:
        with pytest.raises(LLMError) as err:
            await llm.vote(warm_ind)
        providers = make_providers(["trend", "momentum"]) + [llm]
        ens = Ensemble(provider_timeout_s=5)
        votes, failed = await ens.gather(providers, warm_ind)
    finally:
        await llm.close()
    assert SECRET not in str(err.value) and SECRET not in repr(err.value) and err.value.__cause__ is None
    assert failed == ["llm"] and [v.provider for v in votes] == ["trend", "momentum"]
    assert SECRET not in ens.errors["llm"] and ens.errors["llm"]
    assert SECRET not in repr(llm)


async def test_slow_llm_times_out_and_casts_no_vote(chat_server, warm_ind):
    chat_server.mode = "slow"
    llm = LLMProvider(base_url=chat_server.base_url, model="m", api_key=SECRET, timeout_s=30)
    rules = make_providers(["trend", "momentum"])
    ens = Ensemble(provider_timeout_s=0.3)
    try:
        votes, failed = await ens.gather(rules + [llm], warm_ind)
    finally:
        await llm.close()
    assert failed == ["llm"] and "timed out" in ens.errors["llm"]
    assert [v.provider for v in votes] == ["trend", "momentum"]
    # The late provider weighs nothing: the decision equals the one made without it.
    alone = ens.decide(*ens.collect_sync(rules, warm_ind))
    with_late = ens.decide(votes, failed)
    assert (with_late.action, with_late.confidence, with_late.tier) == (alone.action, alone.confidence, alone.tier)


async def test_unreachable_llm_fails_with_a_clean_message(warm_ind):
    # Bind a port, then close it: nothing listens there any more.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    llm = LLMProvider(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key=SECRET)
    try:
        with pytest.raises(LLMError) as err:
            await llm.vote(warm_ind)
    finally:
        await llm.close()
    assert "request to http://127.0.0.1" in str(err.value) and SECRET not in str(err.value)
    assert SECRET not in repr(llm)


def test_parse_answer_accepts_json_in_chatter_and_rejects_the_rest():
    assert parse_answer('{"action":"HOLD","confidence":0,"reason":"x"}') == (HOLD, 0.0, "x")
    assert parse_answer('Answer: {"action": " buy ", "confidence": 1}') == (BUY, 1.0, "")
    for bad in ['{"action":"LONG","confidence":0.5}', '{"action":"BUY","confidence":"high"}',
                '{"action":"BUY","confidence":NaN}', '{"action":"BUY","confidence":true}', "[1, 2]", "{oops}",
                None]:
        with pytest.raises(LLMError):
            parse_answer(bad)


def test_llm_configuration_errors_name_the_problem():
    with pytest.raises(ValueError, match="base_url"):
        LLMProvider(base_url="ftp://example.org")
    with pytest.raises(ValueError, match="timeout_s"):
        LLMProvider(timeout_s=0)
    with pytest.raises(ValueError, match="credentials") as err:
        LLMProvider(base_url=f"http://user:{SECRET}@127.0.0.1:9/v1")
    assert SECRET not in str(err.value)
    p = make_providers(["llm"], {"llm": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": SECRET}})[0]
    assert SECRET not in repr(p) and json.dumps(p.prompt(IndicatorSet("X")))
