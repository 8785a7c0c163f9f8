"""The operator closes a position whose entry is still working at the exchange (filled in part, the rest open): a
close means flat, so the entry's rest is cancelled first and what it bought is sold with the rest of the position.
Left working, its rest would fill after the close and the position would come back while the operator thinks it
closed. Real parts: a live engine on the fake Binance through real ccxt."""

from __future__ import annotations

import pytest

from conftest import engine_session
from ffe_engine import tables
from ffe_engine.errors import ControlError
from live_helpers import BTC, DELETE_ORDER, POST_ORDER, engine_loop, fx, rows, wait_for  # noqa: F401
from test_live_books import assert_books_agree, climbing, resting_entry, strategy_entry, strategy_settings


async def test_a_close_cancels_the_symbol_s_working_entry_first_and_sells_all_it_bought(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            entry = await resting_entry(e, fx)
            res = await e.close_position(BTC, by="test")
            assert res["accepted"], res
            assert entry in res.get("cancelled", []), res
            assert fx.open_order(entry) is None  # its rest no longer works at the exchange
            await wait_for(lambda: not e.orders.live, timeout=30, what="every order final")
        assert BTC not in e.portfolio.positions or e.portfolio.is_dust(BTC)
        assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-5)
        assert_books_agree(e, fx)
        sells = [r for r in fx.requests_to(POST_ORDER) if r.params.get("side") == "SELL"]
        assert len(sells) == 1


MY_TRADES = "GET /api/v3/myTrades"


async def test_a_close_says_an_entry_that_filled_before_its_cancel_filled_and_sells_all_it_bought(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            entry = await resting_entry(e, fx)
            fx.fill(entry)  # its rest fills at the exchange before the engine hears of it
            res = await e.close_position(BTC, by="test")
            said = tables.closed(res)
            assert res["accepted"] and f"its entry {entry} had filled" in said, said
            assert "cancelled first" not in said, said
            await wait_for(lambda: not e.orders.live, timeout=30, what="every order final")
        assert rows(settings.db_path, "SELECT status FROM orders WHERE client_order_id = ?", (entry,)) == [
            ("filled",)]
        assert BTC not in e.portfolio.positions or e.portfolio.is_dust(BTC)
        assert_books_agree(e, fx)


@pytest.mark.parametrize("part", [0.5, 1.0], ids=["more-of-it", "all-of-it"])
async def test_a_close_whose_entry_filled_beyond_the_trades_listed_sends_nothing_and_says_when_to_close(tmp_path,
                                                                                                       fx, part):
    """What the entry filled since is in the exchange's balances, not in the books until its trades are listed: a
    sale sized now would leave it open, unsaid. Nothing is sent; the answer says why and when to close; a close
    then sells all of it."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            entry = await resting_entry(e, fx)
            fx.fill(entry, qty=fx.open_order(entry).remaining * part)
            fx.fault(MY_TRADES, "stale", seconds=1.0, times=100_000)  # its trades listed a second late
            with pytest.raises(ControlError) as refused:
                await e.close_position(BTC, by="test")
            said = str(refused.value)
            assert f"its entry {entry}" in said and "trades" in said and "no closing order was sent" in said, said
            assert "still works" not in said, said
            assert not [r for r in fx.requests_to(POST_ORDER) if r.params["side"] == "SELL"]
            fx.clear_faults(MY_TRADES)
            await wait_for(lambda: entry not in e.orders.live, timeout=30, what="the entry's fill booked")
            res = await e.close_position(BTC, by="test")
            assert res["accepted"], res
            await wait_for(lambda: not e.orders.live, timeout=30, what="the close final")
        assert BTC not in e.portfolio.positions or e.portfolio.is_dust(BTC)
        assert_books_agree(e, fx)


async def test_a_close_while_an_exit_for_the_whole_position_works_says_so(tmp_path, fx):
    climbing(fx)
    fx.buy_fee_in_quote = True  # the position is the order's quantity exactly, and a sale leaves a float's residue
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            await e.operator_order(BTC, "sell", 0.01)
            await wait_for(lambda: not e.orders.live, timeout=30, what="the sale final")
            fx.partial_fill_next(0.5, rest="open")
            await e.operator_order(BTC, "sell", round(e.portfolio.positions[BTC].quantity, 5))
            await wait_for(lambda: e.orders.live, timeout=30, what="the exit working")
            with pytest.raises(ControlError, match="its closing order is already working"):
                await e.close_position(BTC, by="test")


async def test_a_close_refused_after_it_cancelled_the_symbol_s_entry_says_it_cancelled_it(tmp_path, fx):
    """An exit for the whole position works, and an entry too: the close cancels the entry (a close means flat),
    then has nothing left to sell. Its refusal says the entry was cancelled: the operator is told all it did."""
    climbing(fx)
    fx.buy_fee_in_quote = True  # the position is the entry's quantity, on the amount step: a sale can be all of it
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            fx.partial_fill_next(0.4)
            sale = await e.operator_order(BTC, "sell", round(e.portfolio.positions[BTC].quantity, 5))
            assert sale["accepted"], sale
            fx.fault(POST_ORDER, "fill_later", seconds=60)
            entry = (await e.operator_order(BTC, "buy", 0.001))["client_order_id"]
            assert fx.open_order(entry) is not None
            with pytest.raises(ControlError) as refused:
                await e.close_position(BTC, by="test")
            said = str(refused.value)
            assert "its closing order is already working" in said and f"its entry {entry} cancelled first" in said, \
                said
            assert fx.open_order(entry) is None


async def test_a_close_answered_while_its_entry_s_cancel_waits_on_the_exchange_says_so(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            entry = await resting_entry(e, fx)
            fx.fault(DELETE_ORDER, "slow", seconds=3.0)
            res = await e.close_position(BTC, by="test", timeout_s=2)
            said = tables.closed(res)
            assert f"cancelling its entry {entry} first" in said, said
            await wait_for(lambda: not e.orders.live, timeout=30, what="the close carried out")
        assert BTC not in e.portfolio.positions or e.portfolio.is_dust(BTC)
        assert_books_agree(e, fx)


async def test_a_close_refused_on_its_second_entry_says_the_first_it_cancelled(tmp_path, fx):
    """Two entries work: the close cancels the first, the exchange refuses the second's cancel. Nothing is sold, and
    the refusal says the first was cancelled by this close, as well as the second that still works."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            first = await resting_entry(e, fx)
            fx.fault(POST_ORDER, "fill_later", seconds=60)
            second = (await e.operator_order(BTC, "buy", 0.001))["client_order_id"]
            assert list(e.orders.live) == [first, second]
            fx.fault(DELETE_ORDER, "slow", seconds=0.0)  # the first cancel goes through
            fx.fault(DELETE_ORDER, "error", status=400, times=100)  # the second is refused, every time
            with pytest.raises(ControlError) as refused:
                await e.close_position(BTC, by="test")
            said = str(refused.value)
            assert f"its entry {second} still works" in said and f"its entry {first} cancelled first" in said, said
            assert fx.open_order(first) is None and fx.open_order(second) is not None
            assert not [r for r in fx.requests_to(POST_ORDER) if r.params["side"] == "SELL"]
