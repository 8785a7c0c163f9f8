"""Dust: less than the venue's step, left by an exit (a fee taken in coins, a sell rounded down to the step). The
next entry holds it too, at its own cost, so the closed trades' P&L add up to what the account made."""

from __future__ import annotations

import pytest

from ffe_engine.model import Fill, MarketInfo, Side
from ffe_engine.portfolio import Portfolio

BTC = "BTC/USDT"


def fill(cid: str, side: Side, quantity: float, price: float, fee: float, ts: int, fee_base: float = 0.0) -> Fill:
    return Fill(client_order_id=cid, symbol=BTC, side=side, quantity=quantity, price=price, fee=fee, ts=ts,
                fee_base=fee_base, fee_base_value=fee_base * price)  # one trade: its coins valued at its price


def test_the_dust_an_exit_leaves_keeps_its_cost_in_the_next_entry_and_the_trades_add_up():
    pf = Portfolio(10_000.0, amount_step=0.001)
    pf.markets[BTC] = MarketInfo(BTC, "BTC", "USDT", amount_step=0.001)  # as the engine sets it from the venue
    pf.apply_fill(fill("a", Side.BUY, 1.0, 100.0, fee=0.05, ts=1, fee_base=0.0005), decision_id="d1")  # fee in BTC
    first = pf.apply_fill(fill("b", Side.SELL, 0.999, 110.0, fee=0.11, ts=2))  # down to the step: 0.0005 left
    assert pf.holding(BTC) is None and pf.positions[BTC].quantity == pytest.approx(0.0005)

    opened = pf.apply_fill(fill("c", Side.BUY, 1.0, 200.0, fee=0.2, ts=3), decision_id="d2")
    assert opened.opened and opened.position is not None
    assert opened.position.quantity == pytest.approx(1.0005)
    assert opened.position.entry_price == pytest.approx((0.0005 * 100.0 + 1.0 * 200.0) / 1.0005)
    assert opened.position.entry_decision_id == "d2"

    last = pf.apply_fill(fill("d", Side.SELL, 1.0005, 210.0, fee=0.21, ts=4))
    assert BTC not in pf.positions
    assert first.closed is not None and last.closed is not None
    # Flat again: the two trades' P&L, fees included, are the account's gain to the cent and beyond.
    assert first.closed.pnl + last.closed.pnl == pytest.approx(pf.cash - 10_000.0, abs=1e-9)
    assert pf.cash - 10_000.0 == pytest.approx(19.475, abs=1e-9)


def test_an_entry_without_dust_is_at_the_fill_price_exactly():
    pf = Portfolio(10_000.0, amount_step=0.001)
    pf.markets[BTC] = MarketInfo(BTC, "BTC", "USDT", amount_step=0.001)
    opened = pf.apply_fill(fill("a", Side.BUY, 0.01, 29_000.0, fee=0.29, ts=1, fee_base=0.00001), decision_id="d1")
    assert opened.position is not None and opened.position.entry_price == 29_000.0  # not 29000.000000000004


def test_coins_left_on_a_venue_whose_step_is_finer_than_the_books_default_stay_in_the_books():
    """A venue whose amount step is 1e-9: three sells one step short of their buys leave 3e-9 coins, three of its
    steps, which the venue holds. The books keep them (as dust), rather than forget them as float residue below
    half of their own default step."""
    pf = Portfolio(10_000.0)
    pf.markets[BTC] = MarketInfo(BTC, "BTC", "USDT", amount_step=1e-9)
    pf.apply_fill(fill("a", Side.BUY, 0.5, 100.0, fee=0.0, ts=1), decision_id="d1")
    pf.apply_fill(fill("b", Side.SELL, 0.499999997, 101.0, fee=0.0, ts=2))
    assert BTC in pf.positions and pf.positions[BTC].quantity == pytest.approx(3e-9, abs=1e-15)
