"""The books are the account's, fee by fee: an order filled in several trades at different prices, some paying
their fee in the coins bought and others in the quote currency, is booked with each trade's fee valued at that
trade's own price, the cash less exactly the fees paid in it and the position less exactly the coins taken."""

from __future__ import annotations

import pytest

from conftest import engine_session
from fake_exchange import FakeBinance
from live_helpers import BTC, engine_loop, fx, rows, wait_for  # noqa: F401
from test_live_books import answer_settings, climbing, strategy_entry


def venue_fee(fx: FakeBinance, cid: str) -> float:
    """What the exchange charged an order, each trade's fee in the quote currency at that trade's price."""
    (order,) = fx.orders_with(cid)
    return sum(t.commission * (t.price if t.commission_asset == "BTC" else 1.0) for t in order.trades)


def assert_account_s_books(e, fx: FakeBinance, db, cid: str) -> None:
    (fee,) = rows(db, "SELECT fee FROM orders WHERE client_order_id = ?", (cid,))[0]
    assert fee == pytest.approx(venue_fee(fx, cid), abs=1e-9)
    (booked,) = rows(db, "SELECT SUM(fee) FROM fills WHERE client_order_id = ?", (cid,))[0]
    assert booked == pytest.approx(venue_fee(fx, cid), abs=1e-9)
    pos = e.portfolio.positions.get(BTC)
    assert (pos.quantity if pos else 0.0) == pytest.approx(fx.balances["BTC"].total, abs=1e-12)
    assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total, abs=1e-6)


@pytest.mark.parametrize("answer", ["FULL", "RESULT", "ACK"])
async def test_a_buy_whose_trades_pay_fees_in_both_coins_is_booked_at_each_trade_s_price(tmp_path, fx, answer):
    climbing(fx)
    fx.book_levels, fx.book_step, fx.mixed_buy_fees = 2, 0.01, True
    settings = answer_settings(tmp_path, fx, answer)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await strategy_entry(e, fx)
        (entry,) = fx.orders
        assert [t.commission_asset for t in entry.trades] == ["BTC", "USDT"]
        assert entry.trades[0].price < entry.trades[1].price
        assert_account_s_books(e, fx, settings.db_path, cid)


async def test_later_fills_paying_their_fees_in_both_coins_are_booked_at_their_own_prices(tmp_path, fx):
    climbing(fx)
    fx.mixed_buy_fees = True
    settings = answer_settings(tmp_path, fx, "FULL", engine={"order_poll_s": 0.2})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        fx.partial_fill_next(0.5)
        bought = await e.operator_order(BTC, "buy", 0.02763)
        assert bought["accepted"], bought
        cid = bought["client_order_id"]
        await wait_for(lambda: BTC in e.portfolio.positions, timeout=30, what="the first trade booked")
        # The rest, in two trades at other prices seen by one lookup: the first's fee in USDT, the second's in BTC.
        price = fx.prices["BTCUSDT"]
        fx.fill(cid, qty=0.00691, price=round(price * 1.02, 2))
        fx.fill(cid, price=round(price * 1.04, 2))
        async with engine_loop(e):
            await wait_for(lambda: not e.orders.live, timeout=30, what="the order's second fill")
        (order,) = fx.orders
        assert [t.commission_asset for t in order.trades] == ["BTC", "USDT", "BTC"]
        assert_account_s_books(e, fx, settings.db_path, cid)
