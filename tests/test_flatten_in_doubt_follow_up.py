"""A flatten whose closing order's answer was lost says the position is held until the exchange says: once the
exchange has said (the order filled, the position closed), a follow-up says so, once: its record, its alert (a page,
as the flatten's own was) and the console's banner. Its report was the last word before, whether the position had
closed or not; only a flatten that left dust was followed up. A flatten whose report was already the whole truth
(its closing order answered filled) gets no follow-up. So for a position the flatten left to an exit still working,
which then sells it all. Against the fake Binance, across a restart too."""

from __future__ import annotations

import pytest

from conftest import engine_session
from ffe_engine.model import EngineState, OrderStatus
from ffe_engine.present import kill_headline
from ffe_tui.app import ConsoleApp
from live_helpers import BTC, GET_ORDER, POST_ORDER, engine_loop, fx, live_settings, next_bar, reconciled_ok, rows, \
    stored_events, wait_for  # noqa: F401
from receiver import Receiver
from test_alerts import FAST
from test_live_engine import running_live
from test_tui_helpers import screen_text, until

CLOSED = f"the closing orders closed {BTC}"


def follow_ups(db) -> list[dict]:
    return [k for k in stored_events(db, "kill_switch") if k.get("follow_up") and k["action"] == "flatten"]


def flatten_pages(hook: Receiver) -> list[tuple[str, str]]:
    return [(b["severity"], b["text"]) for b in hook.delivered_of("FLATTEN")]


def not_followed(db) -> bool:
    return rows(db, "SELECT value FROM kv WHERE key = 'flatten_under_way'") in ([(None,)], [("null",)])


async def flatten_in_doubt(e, fx) -> str:
    """A position bought, then flattened with the closing order executed at the exchange and its answer lost (a 503
    after it filled): the report says it in doubt. Its client order id."""
    bought = await e.operator_order(BTC, "buy", 0.02)
    assert bought["accepted"], bought
    fx.fault(POST_ORDER, "5xx_executed")
    result = await e.flatten(by="test")
    (closing,) = result["closing"]
    assert result["in_doubt"] == [closing] and result["failed"] == [], result
    assert "the position is held until the exchange says" in kill_headline({**result, "action": "flatten"})
    return closing


def assert_closed_once(db, closing: str) -> None:
    """The order filled, the books hold nothing, and one follow-up said the closing orders closed the symbol."""
    assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (closing,)) == [("filled",)]
    assert rows(db, "SELECT symbol FROM positions") == []
    (said,) = follow_ups(db)
    assert said["closed"] == [BTC] and said["by"] == "engine", said
    assert kill_headline(said).startswith(f"FLATTEN follow-up, HALTED, by engine: {CLOSED}"), kill_headline(said)
    assert "held until" not in kill_headline(said), kill_headline(said)


async def test_a_closing_order_in_doubt_that_fills_is_followed_up_once_with_the_position_closed(tmp_path, fx):
    hook = await Receiver().start()
    try:
        async with running_live(tmp_path, fx, alerts={"webhook_url": hook.url, **FAST}) as running:
            e, db = running.engine, running.store.path
            closing = await flatten_in_doubt(e, fx)
            async with engine_loop(e):
                await wait_for(lambda: follow_ups(db), timeout=20, what="the follow-up once the order has filled")
                await wait_for(lambda: len(flatten_pages(hook)) >= 2, timeout=20, what="the follow-up's alert")
                await wait_for(lambda: not_followed(db), timeout=20, what="the flatten no longer followed up")
            assert e.state is EngineState.HALTED and e.portfolio.holding(BTC) is None
            assert_closed_once(db, closing)
            (first, answer) = flatten_pages(hook)
            assert first[0] == "page" and "IN DOUBT" in first[1], first
            # The page's answer goes where the page went: a page too, saying the position closed.
            assert answer[0] == "page" and CLOSED in answer[1] and "IN DOUBT" not in answer[1], answer
    finally:
        await hook.stop()


async def test_a_closing_order_in_doubt_across_a_restart_is_followed_up_once_after_it(tmp_path, fx):
    """The engine stops before the exchange has said what became of the closing order: the next start looks it up,
    finds it filled, and says the position closed; a start after that says nothing more."""
    hook = await Receiver().start()
    settings = live_settings(tmp_path, fx, alerts={"webhook_url": hook.url, **FAST})
    try:
        async with running_live(tmp_path, fx, alerts={"webhook_url": hook.url, **FAST}) as running:
            closing = await flatten_in_doubt(running.engine, fx)  # no engine loop: nothing resolves it
            assert running.engine.orders.live[closing].status is OrderStatus.IN_DOUBT
            await wait_for(lambda: flatten_pages(hook), timeout=20, what="the flatten's page")
        db = settings.db_path
        assert follow_ups(db) == []
        async with engine_session(settings, live=True) as running:
            e = running.engine
            assert e.state is EngineState.HALTED
            async with engine_loop(e):
                await wait_for(lambda: follow_ups(db), timeout=20, what="the follow-up after the restart")
                await wait_for(lambda: len(flatten_pages(hook)) >= 2, timeout=20, what="the follow-up's alert")
                await wait_for(lambda: not_followed(db), timeout=20, what="the flatten no longer followed up")
        assert_closed_once(db, closing)
        assert [sev for sev, _ in flatten_pages(hook)] == ["page", "page"], flatten_pages(hook)
        async with engine_session(settings, live=True) as running:  # once said, not said again
            async with engine_loop(running.engine):
                await reconciled_ok(db, "the next start's reconciliation")
        assert_closed_once(db, closing)
        assert len(flatten_pages(hook)) == 2, flatten_pages(hook)
    finally:
        await hook.stop()


@pytest.mark.parametrize("restart", [False, True])
async def test_a_flatten_whose_report_was_the_whole_truth_is_not_followed_up(tmp_path, fx, restart):
    """The closing order answered filled: its report says so, and stands; no follow-up repeats it."""
    settings = live_settings(tmp_path, fx)
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        result = await e.flatten(by="test")
        assert len(result["closing"]) == 1 and result["in_doubt"] == [] and result["failed"] == [], result
        if not restart:
            async with engine_loop(e):
                await wait_for(lambda: not_followed(db), timeout=20, what="the flatten no longer followed up")
    if restart:
        async with engine_session(settings, live=True) as running:
            async with engine_loop(running.engine):
                await wait_for(lambda: not_followed(db), timeout=20, what="the flatten no longer followed up")
    assert rows(db, "SELECT symbol FROM positions") == []
    assert follow_ups(db) == []


async def test_the_console_banner_says_the_position_closed_once_the_closing_order_in_doubt_filled(tmp_path, fx):
    """The banner said `in doubt 1 (...): the answer was lost, the position is held until the exchange says`, and
    kept saying it after the engine learned the order had filled and the position was closed."""
    app = ConsoleApp(live_settings(tmp_path, fx), live=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.snap is not None and app.engine is not None, "the engine started")
        e = app.engine
        await e.resume(by="test")
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        fx.fault(POST_ORDER, "5xx_executed")
        # The exchange's lookups miss the order until the banner has been seen saying it in doubt (its balance
        # shows it sold: it is not sent again meanwhile).
        fx.fault(GET_ORDER, "error", status=400, code=-2013, msg="Order does not exist.", times=10_000)
        await pilot.press("F")
        await until(pilot, lambda: "FLATTEN" in screen_text(app) and "then HALT" in screen_text(app),
                    "the flatten's dialog")
        await pilot.press("y")
        await until(pilot, lambda: "in doubt 1" in app._banner, "the banner saying the closing order in doubt")
        fx.clear_faults(GET_ORDER)
        await until(pilot, lambda: app._banner.startswith(f"FLATTEN follow-up, HALTED, by engine: {CLOSED}"),
                    "the banner saying the position closed")
        assert e.portfolio.holding(BTC) is None and "held until" not in app._banner, app._banner


async def test_a_position_left_to_an_exit_still_working_that_sells_it_all_is_followed_up_as_no_longer_held(
        tmp_path, fx):
    """The flatten left the position to a take-profit whose cancel was not done (`after an exit still working`, a
    page); that exit then fills, selling all of it: the follow-up says nothing is held any more (no closing order of
    the flatten sold it, so it is not said closed by them), a page as the flatten's was."""
    from test_flatten_beside_exit import held_beside_a_take_profit

    hook = await Receiver().start()
    try:
        async with running_live(tmp_path, fx, alerts={"webhook_url": hook.url, **FAST}) as running:
            e, db = running.engine, running.store.path
            _, take_profit = await held_beside_a_take_profit(e, fx, "none")
            result = await e.flatten(by="test")
            assert result["closing"] == [] and [w["symbol"] for w in result["after_exit"]] == [BTC], result
            fx.fill(take_profit)  # at the exchange, before its cancel is sent again
            async with engine_loop(e):
                await wait_for(lambda: follow_ups(db), timeout=20, what="the follow-up once the exit has filled")
                await wait_for(lambda: len(flatten_pages(hook)) >= 2, timeout=20, what="the follow-up's alert")
                await wait_for(lambda: not_followed(db), timeout=20, what="the flatten no longer followed up")
            assert e.portfolio.holding(BTC) is None
            assert [o.type for o in fx.orders if o.side == "SELL"] == ["LIMIT"]  # no closing order was needed
            (said,) = follow_ups(db)
            assert said["closed"] == [] and said["answers"] == [{"symbol": BTC, "said": "after_exit",
                                                                  "outcome": "gone"}], said
            assert kill_headline(said) == f"FLATTEN follow-up, HALTED, by engine: nothing held any more in {BTC}"
            (first, answer) = flatten_pages(hook)
            assert first[0] == "page" and "AFTER AN EXIT" in first[1], first
            assert answer[0] == "page" and f"nothing held any more in {BTC}" in answer[1], answer
    finally:
        await hook.stop()


async def test_a_follow_up_names_a_position_the_flatten_gave_up_on_as_still_held(tmp_path, fx):
    """Two positions flattened: BTC's closing order in doubt, ETH's refused for good (the exchange says the account
    lacks the funds). Once BTC's order has filled, the follow-up says BTC closed, and that ETH is still held with no
    closing order working on it: on its own, "closed BTC/USDT" reads as the flatten done while a position is open,
    HALTED, with no stop-loss watched."""
    eth = "ETH/USDT"
    settings = live_settings(tmp_path, fx, engine={"symbols": [BTC, eth]},
                             risk={"max_correlation": 1.0, "max_position_pct": 50.0, "max_concentration_pct": 60.0,
                                   "max_leverage": 3.0})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        assert await next_bar(e, fx) == 2
        await e.resume(by="test")
        for sym, quantity in ((BTC, 0.02), (eth, 0.05)):
            bought = await e.operator_order(sym, "buy", quantity)
            assert bought["accepted"], bought
        fx.fault(POST_ORDER, "5xx_executed")  # the first closing order: executed, its answer lost
        fx.fault(POST_ORDER, "error", status=400, code=-2010, times=5,
                 msg="Account has insufficient balance for requested action.")
        result = await e.flatten(by="test")
        assert len(result["in_doubt"]) == 1 and len(result["failed"]) == 1, result
        gave_up = result["failed"][0]["symbol"]
        async with engine_loop(e):
            await wait_for(lambda: follow_ups(db), timeout=20, what="the follow-up once the order has filled")
        (said,) = follow_ups(db)
    closed = ({BTC, eth} - {gave_up}).pop()
    assert said["closed"] == [closed] and said["held"] == [gave_up], said
    headline = kill_headline(said)
    assert f"the closing orders closed {closed}" in headline, headline
    assert f"still held, no closing order working on it: {gave_up}" in headline, headline
    assert rows(db, "SELECT symbol FROM positions") == [(gave_up,)]
