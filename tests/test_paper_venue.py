"""The paper venue behaves like a spot exchange: fills at the next candle's open with slippage and a fee, amount
precision and minimum notional enforced, funds reserved while an order is open and released by a cancel,
insufficient funds refused, and a book that survives state() -> JSON -> load()."""

from __future__ import annotations

import json

import pytest

from ffe_engine.model import Candle, OrderRequest, Side
from ffe_engine.venues.base import VenueError
from ffe_engine.venues.paper import PaperVenue

BTC, ETH = "BTC/USDT", "ETH/USDT"
FEE, SLIP = 0.001, 0.0005  # 10 and 5 basis points


def venue(cash: float = 10_000.0, **kw) -> PaperVenue:
    v = PaperVenue([BTC, ETH], starting_cash=cash, quote="USDT", fee_bps=10.0, slippage_bps=5.0,
                   min_notional=kw.pop("min_notional", 10.0), amount_step=kw.pop("amount_step", 0.001), **kw)
    v.on_candle(candle(BTC, 0, 100.0))
    v.on_candle(candle(ETH, 0, 20.0))
    return v


def candle(symbol: str, i: int, open_: float, close: float | None = None) -> Candle:
    c = open_ if close is None else close
    return Candle(symbol, 1_700_000_000_000 + i * 60_000, open_, max(open_, c) + 1, min(open_, c) - 1, c, 10.0)


def req(cid: str, side: Side, qty: float, symbol: str = BTC, **kw) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side, quantity=qty, **kw)


async def test_a_market_buy_fills_at_the_next_open_of_its_symbol_with_slippage_and_fee():
    v = venue()
    o = await v.create_order(req("b1", Side.BUY, 2.0))
    assert o.status == "open" and o.filled == 0.0
    v.on_candle(candle(ETH, 1, 21.0))  # another symbol's candle fills nothing
    assert (await v.fetch_order("b1", BTC)).status == "open"
    assert v.on_candle(candle(BTC, 1, 110.0, 111.0)) == 1
    f = await v.fetch_order("b1", BTC)
    assert f.status == "closed" and f.filled == 2.0
    assert f.average == pytest.approx(110.0 * (1 + SLIP))  # against the buyer
    assert f.fee == pytest.approx(2.0 * 110.0 * (1 + SLIP) * FEE)
    bal = await v.fetch_balance()
    assert bal["BTC"] == pytest.approx(2.0)
    assert bal["USDT"] == pytest.approx(10_000.0 - 2.0 * f.average - f.fee)
    assert await v.fetch_open_orders() == []


async def test_a_market_sell_fills_below_the_open_and_pays_the_fee_in_quote():
    v = venue()
    await v.create_order(req("b1", Side.BUY, 1.0))
    v.on_candle(candle(BTC, 1, 100.0))
    cash = v.balances["USDT"]
    await v.create_order(req("s1", Side.SELL, 1.0))
    v.on_candle(candle(BTC, 2, 120.0))
    s = await v.fetch_order("s1", BTC)
    assert s.average == pytest.approx(120.0 * (1 - SLIP))
    assert s.fee == pytest.approx(120.0 * (1 - SLIP) * FEE)
    assert v.balances["USDT"] == pytest.approx(cash + s.average - s.fee)
    assert v.balances["BTC"] == pytest.approx(0.0)


async def test_amount_precision_and_minimum_notional_are_enforced():
    v = venue()
    o = await v.create_order(req("p1", Side.BUY, 0.123456))
    assert o.quantity == pytest.approx(0.123)  # rounded down to the 0.001 step
    with pytest.raises(VenueError, match="minimum notional"):
        await v.create_order(req("p2", Side.BUY, 0.05))  # 0.05 x 100 = 5 < 10
    with pytest.raises(VenueError, match="minimum notional"):
        await v.create_order(req("p3", Side.BUY, 0.0004))  # rounds to 0
    assert v.market(BTC).min_notional == 10.0 and v.market(BTC).amount_step == 0.001
    with pytest.raises(VenueError, match="unknown symbol"):
        await v.create_order(req("p4", Side.BUY, 1.0, symbol="SOL/USDT"))


async def test_insufficient_funds_are_refused_for_buys_and_sells():
    v = venue(cash=1_000.0)
    with pytest.raises(VenueError, match="insufficient USDT"):
        await v.create_order(req("b1", Side.BUY, 10.0))  # 1000 + slippage + fee > 1000
    with pytest.raises(VenueError, match="insufficient BTC"):
        await v.create_order(req("s1", Side.SELL, 0.5))  # nothing to sell
    assert v.orders == {} and v.reserved.get("USDT", 0.0) == 0.0


async def test_an_open_order_reserves_funds_and_a_cancel_releases_them():
    v = venue(cash=1_000.0)
    await v.create_order(req("b1", Side.BUY, 6.0))
    need = 6.0 * 100.0 * (1 + SLIP) * (1 + FEE)
    assert v.reserved["USDT"] == pytest.approx(need)
    with pytest.raises(VenueError, match="insufficient USDT"):
        await v.create_order(req("b2", Side.BUY, 4.0))  # fits the cash, not the cash less the reservation
    c = await v.cancel_order("b1", BTC)
    assert c.status == "canceled" and c.filled == 0.0
    assert v.reserved["USDT"] == pytest.approx(0.0)
    assert v.balances["USDT"] == 1_000.0
    assert (await v.create_order(req("b2", Side.BUY, 4.0))).status == "open"
    v.on_candle(candle(BTC, 1, 100.0))
    assert (await v.fetch_order("b1", BTC)).status == "canceled"  # a cancelled order never fills
    assert (await v.fetch_order("b2", BTC)).status == "closed"
    assert (await v.cancel_order("b1", BTC)).status == "canceled"  # cancelling again changes nothing
    with pytest.raises(VenueError):
        await v.cancel_order("nope", BTC)


async def test_client_order_ids_are_unique_and_a_resend_of_a_finished_order_is_answered_not_repeated():
    v = venue()
    await v.create_order(req("c1", Side.BUY, 1.0))
    with pytest.raises(VenueError, match="duplicate"):
        await v.create_order(req("c1", Side.BUY, 1.0))
    v.on_candle(candle(BTC, 1, 100.0))
    again = await v.create_order(req("c1", Side.BUY, 1.0))
    assert again.status == "closed" and v.balances["BTC"] == pytest.approx(1.0)  # bought once
    assert await v.fetch_order("never-sent", BTC) is None


async def test_a_limit_order_fills_at_its_price_without_slippage_once_the_market_reaches_it():
    v = venue()
    await v.create_order(req("l1", Side.BUY, 1.0, type="limit", price=95.0))
    later = candle(BTC, 1, 100.0).ts  # the candles after the one it was placed on
    v.on_candle(Candle(BTC, later, 100.0, 101.0, 96.0, 97.0, 1.0))
    assert (await v.fetch_order("l1", BTC)).status == "open"
    v.on_candle(Candle(BTC, later + 60_000, 97.0, 98.0, 94.0, 95.5, 1.0))
    f = await v.fetch_order("l1", BTC)
    assert f.status == "closed" and f.average == 95.0 and f.fee == pytest.approx(95.0 * FEE)


async def test_state_goes_through_json_and_load_restores_the_book_and_the_open_orders():
    v = venue()
    await v.create_order(req("b1", Side.BUY, 3.0))
    v.on_candle(candle(BTC, 1, 100.0))
    await v.create_order(req("b2", Side.BUY, 10.0, symbol=ETH))  # still open when the state is saved
    saved = json.loads(json.dumps(v.state()))

    w = PaperVenue([BTC, ETH], starting_cash=1.0, quote="USDT", fee_bps=10.0, slippage_bps=5.0,
                   min_notional=10.0, amount_step=0.001)
    w.load(saved)
    assert w.balances == pytest.approx(v.balances)
    assert w.reserved == pytest.approx(v.reserved)
    assert [o.client_order_id for o in await w.fetch_open_orders()] == ["b2"]
    assert (await w.fetch_order("b1", BTC)).status == "closed"
    # The restored open order behaves as before: it fills on its symbol's next candle, and its reservation goes.
    w.on_candle(candle(ETH, 2, 20.0))
    assert (await w.fetch_order("b2", ETH)).status == "closed"
    assert w.balances["ETH"] == pytest.approx(10.0)
    assert w.reserved["USDT"] == pytest.approx(0.0)
    # A cancel after a restore releases the restored reservation.
    await w.create_order(req("b3", Side.BUY, 1.0))
    x = PaperVenue([BTC, ETH], starting_cash=1.0, quote="USDT", fee_bps=10.0, slippage_bps=5.0)
    x.load(json.loads(json.dumps(w.state())))
    await x.cancel_order("b3", BTC)
    assert x.reserved["USDT"] == pytest.approx(0.0)
    assert x.balances == pytest.approx(w.balances)


def restored(v: PaperVenue, drop: tuple[str, ...] = ()) -> PaperVenue:
    """A new venue loaded from v's saved book (through JSON, as the database holds it), less the keys in `drop`."""
    saved = {k: val for k, val in json.loads(json.dumps(v.state())).items() if k not in drop}
    w = PaperVenue([BTC, ETH], starting_cash=1.0, quote="USDT", fee_bps=10.0, slippage_bps=5.0,
                   min_notional=10.0, amount_step=0.001)
    w.load(saved)
    return w


async def place_and_cancel(v: PaperVenue, prefix: str, count: int) -> list[str]:
    """`count` orders accepted and cancelled (each a final order of the book); their exchange ids."""
    ids = []
    for i in range(count):
        ids.append((await v.create_order(req(f"{prefix}{i}", Side.BUY, 1.0))).exchange_id)
        await v.cancel_order(f"{prefix}{i}", BTC)
    return ids


async def test_exchange_ids_stay_unique_across_restarts_past_the_orders_the_saved_book_keeps():
    v = venue()
    given = await place_and_cancel(v, "a", 250)  # more than the 200 final orders a saved book keeps
    w = restored(v)
    given += await place_and_cancel(w, "b", 30)
    given += await place_and_cancel(restored(w), "c", 30)
    assert len(set(given)) == len(given), sorted(i for i in set(given) if given.count(i) > 1)


async def test_a_book_saved_without_the_id_counter_continues_after_the_highest_exchange_id_it_holds():
    v = venue()
    given = await place_and_cancel(v, "a", 250)
    w = restored(v, drop=("exchange_id_seq",))
    new = await place_and_cancel(w, "b", 3)
    assert new == ["P251", "P252", "P253"], (given[-1], new)


async def test_a_market_buy_the_next_open_makes_dearer_than_the_cash_fills_what_the_cash_pays_and_expires_the_rest():
    """Reserved at the last close, a market buy fills at the next open: a gap up between them must not take the
    account below zero, as a spot exchange never lets it. What the cash pays for fills (amount step), the rest
    expires."""
    v = venue(cash=1_000.0)
    await v.create_order(req("b1", Side.BUY, 9.9))  # 9.9 x 100 x slippage and fee: 991.5, within the cash
    v.on_candle(candle(BTC, 1, 110.0))  # 9.9 x 110.06 = 1,089.5 with its fee: more than the account holds
    o = await v.fetch_order("b1", BTC)
    assert o.status == "expired"
    assert 0 < o.filled < 9.9 and round(o.filled / 0.001, 6).is_integer()
    assert o.filled * o.average + o.fee <= 1_000.0
    assert (o.filled + 0.001) * o.average * (1 + FEE) > 1_000.0  # all the cash could buy, to the amount step
    bal = await v.fetch_balance()
    assert 0.0 <= bal["USDT"] < 0.001 * o.average * (1 + FEE) and bal["BTC"] == pytest.approx(o.filled)
    assert v.reserved.get("USDT", 0.0) == 0.0 and await v.fetch_open_orders() == []


async def test_a_market_buy_whose_cash_pays_for_less_than_one_amount_step_at_the_open_expires_unfilled():
    v = venue(cash=1_000.0, amount_step=1.0)
    await v.create_order(req("b1", Side.BUY, 9.0))  # 901 reserved at 100
    v.on_candle(candle(BTC, 1, 1_000.0))  # the cash buys 0.99 of a coin now, and the exchange sells whole coins
    o = await v.fetch_order("b1", BTC)
    assert o.status == "expired" and o.filled == 0.0 and o.fee == 0.0
    assert v.balances["USDT"] == 1_000.0 and "BTC" not in await v.fetch_balance()
    assert v.reserved.get("USDT", 0.0) == 0.0


async def test_a_market_order_fills_within_its_bar_however_far_the_slippage_would_take_it():
    """Slippage moves the price against the order, but never outside what the market traded in the bar: a buy at
    an open that was the bar's high fills at that high, a sell at an open that was its low at that low."""
    v = venue()
    await v.create_order(req("b1", Side.BUY, 1.0))
    v.on_candle(Candle(BTC, 1_700_000_060_000, 110.0, 110.0, 105.0, 107.0, 10.0))  # opened at its high
    b = await v.fetch_order("b1", BTC)
    assert b.status == "closed" and b.average == 110.0
    await v.create_order(req("s1", Side.SELL, 1.0))
    v.on_candle(Candle(BTC, 1_700_000_120_000, 100.0, 104.0, 100.0, 103.0, 10.0))  # opened at its low
    s = await v.fetch_order("s1", BTC)
    assert s.status == "closed" and s.average == 100.0
    await v.create_order(req("b2", Side.BUY, 1.0))
    v.on_candle(Candle(BTC, 1_700_000_180_000, 100.0, 104.0, 99.0, 103.0, 10.0))  # room above the open
    assert (await v.fetch_order("b2", BTC)).average == pytest.approx(100.0 * (1 + SLIP))


async def test_an_order_fills_at_the_open_of_a_candle_that_opened_after_it_was_placed():
    """Placed on a candle (a restart's replay hands that candle out again; or the other symbol's candle of the same
    bar comes after it), it does not fill at that candle's open, which is behind it: it fills at the next one's."""
    v = venue()  # the last candles handed out opened at candle(.., 0)'s time
    await v.create_order(req("b1", Side.BUY, 1.0))
    await v.create_order(req("e1", Side.BUY, 1.0, symbol=ETH))
    assert v.on_candle(candle(BTC, 0, 101.0)) == 0  # that candle again
    assert v.on_candle(candle(ETH, 0, 21.0)) == 0
    assert (await v.fetch_order("b1", BTC)).status == "open"
    assert v.on_candle(candle(BTC, 1, 102.0)) == 1
    assert (await v.fetch_order("b1", BTC)).average == pytest.approx(102.0 * (1 + SLIP))
    v.resume_at(candle(ETH, 5, 1.0).ts)  # a restart whose records reached that bar: placed now, placed on it
    await v.create_order(req("e2", Side.BUY, 1.0, symbol=ETH))
    assert v.on_candle(candle(ETH, 5, 22.0)) == 1  # e1 only: it was placed before
    assert (await v.fetch_order("e2", ETH)).status == "open"
    assert v.on_candle(candle(ETH, 6, 23.0)) == 1
    assert (await v.fetch_order("e2", ETH)).status == "closed"
