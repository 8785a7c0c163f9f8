"""A trade is charged once, however the exchange lists it. Binance's trade list (and a new order's answer, which
lists the order's fills) can name a trade twice, and in any order: the books' fees, cash and coins stay the
account's, fill by fill, whether the fill was read from the new order's answer, from a lookup that settled a lost
answer, or part by part as the order filled over time. Trades that add up to more than the order filled are no
account of it: nothing is booked from them until the exchange lists the order's trades as they are, and the log says
so once."""

from __future__ import annotations

import pytest

from conftest import engine_session
from fake_exchange import FakeBinance
from live_helpers import BTC, POST_ORDER, engine_loop, fx, rows, wait_for  # noqa: F401
from test_live_books import (MY_TRADES, answer_settings, climbing, filled_further_at_the_venue, resting_entry,
                             strategy_entry, strategy_order)
from test_venue_fees import assert_account_s_books, venue_fee

# How the exchange lists the order's trades: the first of them twice; and out of order; and without their ids (a
# trade is then known by its time, price, amount and fee).
LISTINGS = {"twice": {}, "twice-shuffled": {"shuffle": True}, "twice-without-ids": {"ids": False}}


def two_trades_paying_in_both_coins(fx: FakeBinance) -> None:
    """A market buy fills in two trades 1% apart, the first paying its fee in BTC, the second in USDT."""
    climbing(fx)
    fx.book_levels, fx.book_step, fx.mixed_buy_fees = 2, 0.01, True


def assert_order_charged_once(db, fx: FakeBinance, cid: str) -> None:
    (fee,) = rows(db, "SELECT fee FROM orders WHERE client_order_id = ?", (cid,))[0]
    (booked, quantity) = rows(db, "SELECT SUM(fee), SUM(quantity) FROM fills WHERE client_order_id = ?", (cid,))[0]
    (order,) = fx.orders_with(cid)
    assert quantity == pytest.approx(order.filled, abs=1e-12)
    assert fee == pytest.approx(venue_fee(fx, cid), abs=1e-9)
    assert booked == pytest.approx(venue_fee(fx, cid), abs=1e-9)


@pytest.mark.parametrize("listing", LISTINGS)
async def test_a_new_order_s_answer_listing_a_fill_twice_charges_it_once(tmp_path, fx, listing):
    two_trades_paying_in_both_coins(fx)
    fx.fault(POST_ORDER, "trade_twice", **LISTINGS[listing])
    settings = answer_settings(tmp_path, fx, "FULL")
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_entry(e, fx)
        assert fx.pending_faults(POST_ORDER) == 0
        assert_account_s_books(e, fx, settings.db_path, cid)


@pytest.mark.parametrize("listing", LISTINGS)
async def test_a_buy_settled_by_lookup_is_charged_each_trade_once(tmp_path, fx, listing):
    # The answer to the new order is lost: the order is found by its id, and the lookup's answer has no fees, so
    # they are read from the order's trades, which list its first trade (the one that paid in BTC) twice.
    two_trades_paying_in_both_coins(fx)
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(MY_TRADES, "trade_twice", times=10_000, **LISTINGS[listing])
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 0.2})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_entry(e, fx)
        assert fx.requests_to(MY_TRADES) and all(r.fault == "trade_twice" for r in fx.requests_to(MY_TRADES))
        assert_account_s_books(e, fx, settings.db_path, cid)


@pytest.mark.parametrize("listing", LISTINGS)
async def test_a_sale_settled_by_lookup_is_charged_each_trade_once(tmp_path, fx, listing):
    # The reported stop-loss: a sale whose answer is lost, settled by a lookup and the order's trades, which list
    # one of them twice. Its fee (in USDT) is what the exchange took, and the cash is the account's.
    climbing(fx)
    fx.buy_fee_in_quote = True  # the buy leaves no coins short of a step: the sale sells all of them
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 0.2})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            fx.book_levels, fx.book_step = 2, 0.01
            fx.fault(POST_ORDER, "drop_after")
            fx.fault(MY_TRADES, "trade_twice", times=10_000, **LISTINGS[listing])
            closed = await e.close_position(BTC, by="test")
            assert closed["accepted"], closed
            await wait_for(lambda: BTC not in e.portfolio.positions and not e.orders.live, timeout=30,
                           what="the sale settled")
        sale = fx.orders[-1]
        assert sale.side == "SELL" and len(sale.trades) == 2
        assert_order_charged_once(settings.db_path, fx, sale.client_id)
        assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)
        assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total, abs=1e-6)


def booked_fills(db, cid: str) -> list[tuple[float, float]]:
    return rows(db, "SELECT quantity, fee_base FROM fills WHERE client_order_id = ? ORDER BY id", (cid,))


async def test_each_part_of_an_order_filled_over_time_is_charged_its_own_trade_s_fee(tmp_path, fx):
    # A buy fills in three parts over time, each paying its fee in BTC. The lookup that finds the second part reads
    # trades listing it twice; the one that finds the third reads them out of order, the first listed twice. Each
    # fill is charged its own trade's fee (none twice, none nothing), and the position is the account's coins after
    # every part, so that reconciliation never sees a difference on the way.
    climbing(fx)
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 0.2})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        fx.partial_fill_next(0.34)
        bought = await e.operator_order(BTC, "buy", 0.0276)
        assert bought["accepted"], bought
        cid = bought["client_order_id"]
        await wait_for(lambda: len(booked_fills(db, cid)) == 1, timeout=30, what="the first part booked")
        order = fx.open_order(cid)
        assert order is not None
        price = fx.prices["BTCUSDT"]
        async with engine_loop(e):
            for part, (qty, listing) in enumerate([(0.01, {}), (None, {"shuffle": True})], start=2):
                fx.fill(cid, qty=qty, price=round(price * (1 + 0.02 * part), 2))
                trade = order.trades[-1 if part == 2 else 0].trade_id
                fx.fault(MY_TRADES, "trade_twice", times=10_000, **{**listing, "trade": trade})
                await wait_for(lambda: len(booked_fills(db, cid)) == len(order.trades), timeout=30,
                               what=f"part {part} booked")
                assert e.portfolio.positions[BTC].quantity == pytest.approx(fx.balances["BTC"].total, abs=1e-12)
                assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total, abs=1e-6)
                fx.clear_faults(MY_TRADES)
            await wait_for(lambda: not e.orders.live, timeout=30, what="the order filled")
        assert order.status == "FILLED" and [t.commission_asset for t in order.trades] == ["BTC"] * 3
        assert booked_fills(db, cid) == [(pytest.approx(t.qty, abs=1e-12), pytest.approx(t.commission, abs=1e-12))
                                         for t in order.trades]
        assert_account_s_books(e, fx, db, cid)


async def test_trades_adding_up_to_more_than_the_order_filled_are_not_booked_until_they_agree(tmp_path, fx):
    # The order's trades name one it did not make (another trade's copy under an id of its own): which of them are
    # the order's is not known, so none is booked. The order is recorded placed, looked up again, and said once in
    # the log; once the exchange lists its trades as they are, the fill is booked with the fee it paid.
    climbing(fx)
    fx.fault(MY_TRADES, "extra_trade", times=10_000)
    settings = answer_settings(tmp_path, fx, "RESULT", engine={"order_poll_s": 0.2})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_order(fx)
            await wait_for(lambda: len(fx.requests_to(MY_TRADES)) >= 5 or rows(db, "SELECT * FROM fills"), timeout=30,
                           what="the trades read again")
            assert cid in e.orders.live and e.orders.live[cid].status.value == "open"
            assert rows(db, "SELECT COUNT(*) FROM fills") == [(0,)] and BTC not in e.portfolio.positions
            fx.clear_faults(MY_TRADES)
            await wait_for(lambda: not e.orders.live, timeout=30, what="the fill booked")
        said = [line for line in running.log.getvalue().splitlines() if "more than" in line]
        assert len(said) == 1 and cid in said[0], said
        assert_account_s_books(e, fx, db, cid)


async def test_a_fill_first_seen_in_a_cancel_answer_is_charged_each_trade_once(tmp_path, fx):
    # The entry fills in part and rests; more of it fills between the engine's looks, and the operator's cancel is
    # where the engine first sees it. The cancel's answer has no fees: the order's trades, read for them, list the
    # new trade twice and out of order.
    climbing(fx)
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid, order = await filled_further_at_the_venue(e, fx)
            fx.fault(MY_TRADES, "trade_twice", times=10_000, trade=order.trades[-1].trade_id, shuffle=True)
            result = await e.operator_cancel(cid)
        assert result["cancelled"] and result["filled"] == pytest.approx(order.filled, abs=1e-12), result
        assert [(o.status, len(o.trades)) for o in fx.orders] == [("CANCELED", 2)]
        assert booked_fills(settings.db_path, cid) == [
            (pytest.approx(t.qty, abs=1e-12), pytest.approx(t.commission, abs=1e-12)) for t in order.trades]
        assert_account_s_books(e, fx, settings.db_path, cid)


@pytest.mark.parametrize("answer", ["FULL", "RESULT"])
async def test_an_order_whose_answer_says_another_cost_than_its_trades_is_booked_at_its_trades(tmp_path, fx, answer):
    # The account's balances follow the trades: a fill booked at the cost the order's answer says (1.3% above
    # them) left the books' cash short of the exchange's, a loss no trade made, which an accept then took in.
    climbing(fx)
    fx.quote_skew = 1.013
    settings = answer_settings(tmp_path, fx, answer)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_entry(e, fx)
            assert await e.reconcile() == []  # the books' cash and coins are the account's
        (entry,) = fx.orders
        traded = sum(t.qty * t.price for t in entry.trades) / sum(t.qty for t in entry.trades)
        ((average,),) = rows(settings.db_path, "SELECT average FROM orders WHERE client_order_id = ?", (cid,))
        ((price,),) = rows(settings.db_path, "SELECT price FROM fills WHERE client_order_id = ?", (cid,))
        assert average == pytest.approx(traded, rel=1e-12) and price == pytest.approx(traded, rel=1e-12)
        assert_account_s_books(e, fx, settings.db_path, cid)


def each_trade_booked_once(db, cid: str, order) -> None:
    """The order's fills are its trades at the exchange, in order: each once, at its own amount and price."""
    booked = rows(db, "SELECT quantity, price FROM fills WHERE client_order_id = ? ORDER BY id", (cid,))
    made = [(t.qty, t.price) for t in order.trades]
    assert booked == [pytest.approx(x) for x in made], (booked, made)


async def test_a_trade_listed_after_a_later_one_is_booked_once_at_its_own_price(tmp_path, fx):
    """An entry filled 40% in the new order's answer (its first trade named there), the rest filled later at another
    price. The exchange's trade list names the second trade before the first (listed late): the sums of what it
    lists are not the order's fill so far, and their difference with what is booked is no trade. Each trade is
    booked once, at its own price and amount, whatever order they are listed in; none at a price no trade had."""
    climbing(fx)
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            (order,) = fx.orders_with(cid)
            first = order.trades[0]
            fx.unlisted.add(first.trade_id)  # the first trade listed late
            fx.fill(cid, price=round(first.price * 1.003, 2))
            await e.orders.poll()
            fx.unlisted.clear()
            await e.orders.poll()
            await wait_for(lambda: not e.orders.live, timeout=30, what="the entry final")
        each_trade_booked_once(settings.db_path, cid, order)


async def test_trades_listed_in_order_but_the_newest_late_are_each_booked_at_their_own_price(tmp_path, fx):
    """The usual lag: the entry filled 40% in its answer (its first trade), then 30% and 30% more; the trade list
    names the first two and the third only later. What they cover is booked as it is listed, each trade once at its
    own price and amount, never two merged into one fill."""
    climbing(fx)
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
            (order,) = fx.orders_with(cid)
            price = order.trades[0].price
            fx.fill(cid, qty=round(order.remaining / 2, 5), price=round(price * 1.003, 2))
            fx.fill(cid, price=round(price * 1.006, 2))
            fx.unlisted.add(order.trades[2].trade_id)  # the newest listed late
            await e.orders.poll()
            listed = rows(settings.db_path, "SELECT COUNT(*) FROM fills WHERE client_order_id = ?", (cid,))
            assert listed == [(2,)], listed  # the second trade booked as soon as it was listed
            fx.unlisted.clear()
            await e.orders.poll()
            await wait_for(lambda: not e.orders.live, timeout=30, what="the entry final")
        each_trade_booked_once(settings.db_path, cid, order)


async def test_after_a_restart_a_trade_listed_late_is_not_booked_twice(tmp_path, fx):
    """The first trade named by the new order's answer and booked, then the engine restarted (it knows none of the
    order's trades any more), the rest filled, the first listed late: nothing is booked from the list until it
    covers the whole fill, then each trade once at its own price."""
    climbing(fx)
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await resting_entry(e, fx)
    (order,) = fx.orders_with(cid)
    fx.unlisted.add(order.trades[0].trade_id)
    fx.fill(cid, price=round(order.trades[0].price * 1.003, 2))
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.orders.poll()
        fx.unlisted.clear()
        await e.orders.poll()
        await wait_for(lambda: not e.orders.live, timeout=30, what="the entry final")
    each_trade_booked_once(settings.db_path, cid, order)


async def test_a_trade_list_cut_short_on_its_way_is_read_again_not_taken_for_trades(tmp_path, fx, caplog):
    """The order's trades answered with half a body (the connection closed early): ccxt reads its characters as as
    many empty trades. No trade list: read again, the order's trades booked once, nothing said of trades twice."""
    two_trades_paying_in_both_coins(fx)
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(MY_TRADES, "truncated", times=1)
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 0.2})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_entry(e, fx)
        assert any(r.fault == "truncated" for r in fx.requests_to(MY_TRADES))
        assert_account_s_books(e, fx, settings.db_path, cid)
    assert "more than once" not in caplog.text
