"""The start's check of the positions against the fills (store.positions_damage, and `ffe doctor`'s) allows the
rounding the books leave, whatever the quantities: a coin bought by the ten million (a venue step of 1, PEPE/USDT)
with the buy's fee taken in the coin left a position of dust 2e-9 from the fills' own sum, and a healthy account
was refused at its next start as damaged. The books are the real portfolio's, fill by fill; the check, the real
one, over a real SQLite table of those fills and positions."""

from __future__ import annotations

import random
import sqlite3

import pytest

from ffe_engine.model import Fill, MarketInfo, Side, floor_to_step
from ffe_engine.portfolio import Portfolio
from ffe_engine.store import fills_damage, positions_damage

SYMBOL = "PEPE/USDT"


def round_trips(seed: int, step: float, quantities: tuple[float, float], price: float, cycles: int = 40) -> list[str]:
    """Buys (the fee in the coin, as Binance charges it without BNB) and sales of what the venue takes, booked
    by the portfolio; what the check says after each fill (None: agreed)."""
    rnd = random.Random(seed)
    pf = Portfolio(1e9)
    pf.markets[SYMBOL] = MarketInfo(SYMBOL, "PEPE", "USDT", amount_step=step, min_qty=step, min_notional=5.0)
    pf.mark(SYMBOL, price)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY AUTOINCREMENT, symbol TEXT, side TEXT, quantity REAL, "
                 "fee_base REAL)")
    conn.execute("CREATE TABLE positions (symbol TEXT PRIMARY KEY, quantity REAL)")
    said = []

    def book(f: Fill) -> None:
        pf.apply_fill(f, decision_id=f"d{rnd.random()}")
        conn.execute("INSERT INTO fills (symbol, side, quantity, fee_base) VALUES (?,?,?,?)",
                     (SYMBOL, f.side.value, f.quantity, f.fee_base))
        conn.execute("DELETE FROM positions")
        conn.executemany("INSERT INTO positions VALUES (?,?)", [(p.symbol, p.quantity) for p in pf.positions.values()])
        problem = positions_damage(conn)
        if problem is not None:
            said.append(problem)

    for _ in range(cycles):
        q = floor_to_step(rnd.uniform(*quantities), step)
        fee_base = round(q * 0.001, 8)
        book(Fill("c", SYMBOL, Side.BUY, q, price, fee_base * price, 0, fee_base=fee_base,
                  fee_base_value=fee_base * price))
        sold = floor_to_step(pf.sellable(SYMBOL), step)
        book(Fill("c", SYMBOL, Side.SELL, sold, price, sold * price * 0.001, 0))
    return said


@pytest.mark.parametrize("step, quantities, price", [(1.0, (1e6, 5e7), 1e-5), (1e-5, (0.001, 0.05), 30_000.0)],
                         ids=["a coin by the ten million", "a coin by the hundredth"])
def test_the_books_rounding_is_no_damage_whatever_the_quantities(step, quantities, price):
    refused = {seed: said for seed in range(200) if (said := round_trips(seed, step, quantities, price))}
    assert not refused, next(iter(refused.items()))


def test_a_position_off_its_fills_by_more_than_rounding_is_still_found():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY AUTOINCREMENT, symbol TEXT, side TEXT, quantity REAL, "
                 "price REAL, fee REAL, fee_base REAL, fee_base_value REAL)")
    conn.execute("CREATE TABLE positions (symbol TEXT PRIMARY KEY, quantity REAL)")
    conn.execute("INSERT INTO fills (symbol, side, quantity, price, fee, fee_base, fee_base_value) "
                 "VALUES ('PEPE/USDT', 'buy', 1e7, 1e-5, 0.1, 1e4, 0.1)")
    conn.execute("INSERT INTO positions VALUES ('PEPE/USDT', 9990000.1)")  # a tenth of a coin more
    assert fills_damage(conn) is None
    assert positions_damage(conn) == "table positions, position PEPE/USDT: 9990000.1, its fills make it 9990000"
    conn.execute("UPDATE fills SET side = 'Sell'")  # found by the fills' own check, which runs first
    assert fills_damage(conn) == "table fills, fill 1: side 'Sell' is not a side"
