"""Every table of the console (positions, approvals, open trades, open orders) shows each figure whole with at least
one blank before the next, whatever width the formatters give it: a dust quantity (0.00000313), a coin priced like
PEPE (0.0000123400), a price in the hundreds of millions, a long symbol, a large loss, a long id. A column the pane
has no room for is left out whole, from the right (the least important last), and its heading says so; no figure
is cut or runs into the next one. On the real console, at 80x24 and 120x40, with the engine's snapshot carrying
those values."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ffe_engine.clock import ManualClock
from ffe_engine.ids import IdSource
from ffe_tui.panes import KeyedTable
from test_tui_helpers import SIZE_IDS, SIZES, bars_taken, console, screen_text, until

DAY_MS = 86_400_000


def _positions(template: dict[str, Any], market_ts: int) -> list[dict[str, Any]]:
    def pos(symbol: str, qty: float, entry: float, last: float, pnl: float, sl: float | None, tp: float | None,
            age_ms: int, **more: Any) -> dict[str, Any]:
        return {**template, "symbol": symbol, "side": "buy", "quantity": qty, "entry": entry, "last": last,
                "unrealised": pnl, "pnl_pct": (last / entry - 1) * 100, "stop_loss": sl, "take_profit": tp,
                "opened_ts": market_ts - age_ms, "age_s": age_ms / 1000, "dust": False, **more}

    return [
        # the rows once seen run together
        pos("BTC/USDT", 0.0282917, 34_950.0, 34_912.5, -1.06, 34_251.0, 36_348.0, 61_000, id="d52e6b4000294"),
        pos("BTC/USDT", 0.00000313, 34_650.0, 35_737.5, 0.0034, None, None, 3_600_000, dust=True, id=None),
        # a coin priced in millionths, held by the ten million, a large loss, open for months
        pos("1000PEPE/USDT", 12_345_678.9, 0.00001234, 0.00001199, -1_234_567.89, 0.00001111, 0.00001357,
            123 * DAY_MS + 4 * 3_600_000, id="d52e6b4000295"),
        # a price in the hundreds of millions
        pos("YFI/USDT", 0.000123457, 123_456_789.0, 123_456_788.0, -0.0001, 120_000_000.0, 130_000_000.0, 5_000),
    ]


def _orders() -> list[dict[str, Any]]:
    return [{"client_order_id": "ffe-922766581e27a1c08a6a63ec", "symbol": "1000PEPE/USDT", "side": "sell",
             "quantity": 12_345_678.9, "filled": 0.00000313, "type": "limit", "price": 0.00001234,
             "status": "in_doubt", "reason": "reconcile", "age_s": 123 * 86_400.0, "created_ts": 1_700_000_040_000},
            {"client_order_id": "ffe-922766581e27a1c08a6a63ed", "symbol": "YFI/USDT", "side": "buy",
             "quantity": 0.000123457, "filled": 0.0, "type": "limit", "price": 123_456_789.0,
             "status": "open", "reason": "operator", "age_s": 5.0, "created_ts": 1_700_000_040_000}]


def _approvals() -> list[dict[str, Any]]:
    return [{"approval_id": "a3f9c1e2b7d4a", "symbol": "1000PEPE/USDT", "side": "buy", "quantity": 12_345_678.9,
             "price": 0.00001234, "last": 0.00001199, "move_pct": -2.84, "expires_in": 86_399.0},
            {"approval_id": "a3f9c1e2b7d4b", "symbol": "YFI/USDT", "side": "buy", "quantity": 0.000123457,
             "price": 123_456_789.0, "last": 123_456_788.0, "move_pct": -0.0, "expires_in": 5.0}]


def _widest(snap: dict[str, Any]) -> dict[str, Any]:
    template = snap["positions"][0]
    return {**snap, "positions": _positions(template, snap["market_ts"]), "orders": _orders(),
            "approvals": _approvals()}


def _words(values: list[str]) -> list[str]:
    return [w for v in values for w in v.split()]


def check_whole(app, table: KeyedTable, least: int) -> None:
    """Each row of `table` on screen reads as its first columns' values, whole, each set apart by blanks, at least
    `least` columns of them; the heading names the columns left out, if any."""
    lines = screen_text(app).split("\n")
    region = table.content_region
    rows = [lines[y][region.x:region.right] for y in range(region.y, region.bottom)]
    labels = [str(c.label) for c in table.columns.values()]
    keys = list(table.columns)
    shown_counts = set()
    for i, row_key in enumerate(table.rows):
        values = [str(table.get_cell(row_key, k)) for k in keys]
        words = rows[1 + i].split()
        shown = next((n for n in range(len(values), 0, -1) if words == _words(values[:n])), None)
        assert shown is not None, (f"{table.id}: the row reads {rows[1 + i]!r}, not its values whole "
                                   f"{values}\n{screen_text(app)}")
        shown_counts.add(shown)
    assert len(shown_counts) == 1, (table.id, shown_counts, rows)
    shown = shown_counts.pop()
    assert shown >= least, (f"{table.id}: only {labels[:shown]} shown\n{screen_text(app)}")
    heading = rows[0].split()
    assert heading[:len(_words(labels[:shown]))] == _words(labels[:shown]), (table.id, rows[0])
    rest = " ".join(heading[len(_words(labels[:shown])):])
    left_out = labels[shown:]
    if left_out:  # named, or counted in words: a bare `+1` says nothing of what is missing
        assert rest in ("+" + ", ".join(left_out), f"+{len(left_out)} more"), (table.id, rows[0])
    else:
        assert not rest, (table.id, rows[0])


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_every_table_shows_each_figure_whole_and_apart(tmp_path, size):
    app = console(tmp_path, speed=0.0, max_bars=150, monitor={"enabled": False}, clock=ManualClock(),
                  ids=IdSource(seed=7))
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.feed_ended, "the market feed to end", timeout=60,
                    progress=lambda: bars_taken(app))
        engine = app.engine
        real = engine.snapshot
        assert real()["positions"], "the seeded market holds a position (its fields are the template)"
        engine.snapshot = lambda: _widest(real())
        wide = size[0] >= 110
        positions = app.query_one("#positions", KeyedTable)
        await until(pilot, lambda: positions.row_count == 4,
                    "the widest positions on screen")
        # at 80 columns the symbol, side, quantity, entry, price now and P&L, at 120 every column
        await pilot.pause(0.2)
        check_whole(app, positions, 9 if wide else 6)

        # at 80 columns the approvals pane comes up in place of the votes by itself: trades wait
        approvals = app.query_one("#approvals", KeyedTable)
        await until(pilot, lambda: approvals.row_count == 2 and app.pane_visible("approvals"),
                    "the widest approvals on screen")
        await pilot.pause(0.2)
        check_whole(app, approvals, 6)  # the trade, how much, at what price and how long is left

        await pilot.press("2")
        trades = app.query_one("#trades", KeyedTable)
        await until(pilot, lambda: trades.row_count == 4,
                    "the widest trades on screen")
        await pilot.pause(0.2)
        check_whole(app, trades, 9 if wide else 6)  # to the %; at 120 the P&L, stop-loss and take-profit too

        await pilot.press("3")
        orders = app.query_one("#orders", KeyedTable)
        await until(pilot, lambda: orders.row_count == 2,
                    "the widest orders on screen")
        await pilot.pause(0.2)
        check_whole(app, orders, 9 if wide else 7)  # to the status; at 120 the reason and age too


async def test_the_trades_view_at_80x24_names_or_counts_the_columns_it_leaves_out_in_words(tmp_path):
    """The seeded market's own positions, of usual figures, open for 16 minutes: at 80 columns every column but the
    age and the trade id fits, and the heading names those two; the chosen trade's age and id are on the line under
    the table."""
    app = console(tmp_path, speed=0.0, max_bars=150, monitor={"enabled": False}, clock=ManualClock(),
                  ids=IdSource(seed=7))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.feed_ended, "the market feed to end", timeout=60,
                    progress=lambda: bars_taken(app))
        engine = app.engine
        real = engine.snapshot

        def aged() -> dict[str, Any]:
            snap = real()
            opened = snap["market_ts"] - 16 * 60_000
            return {**snap, "positions": [{**p, "opened_ts": opened, "age_s": 16 * 60.0} for p in snap["positions"]]}

        assert real()["positions"], "the seeded market holds a position"
        engine.snapshot = aged
        await pilot.press("2")
        trades = app.query_one("#trades", KeyedTable)
        await until(pilot, lambda: trades.row_count > 0, "the open trades on screen")
        await pilot.press("j")  # the first trade, chosen: its age and id under the table
        await until(pilot, lambda: "16m00s ago" in screen_text(app), "the chosen trade's age under the table")
        await pilot.pause(0.2)
        assert trades.left_out == "+age, trade id", trades.left_out
        check_whole(app, trades, 9)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_the_votes_pane_shows_each_symbol_s_votes_whole_or_names_those_left_out(tmp_path, size):
    """With more symbols than its width holds, the votes pane shows the symbols that fit whole (every vote, its
    confidence and weight) and says how many it left out, rather than cutting every column to "HOLD 0.…"."""
    from conftest import make_settings
    from ffe_engine.clock import SimClock
    from ffe_engine.market.simulated import SimulatedFeed
    from ffe_tui.app import ConsoleApp
    from test_tui_helpers import START_TS

    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "DOT/USDT"]
    settings = make_settings(tmp_path, engine={"warmup_bars": 100, "symbols": symbols}, market={"speed": 8.0, "seed": 7},
                             monitor={"enabled": False})
    clock = SimClock(paced=True)
    feed = SimulatedFeed(symbols, settings.engine.timeframe_ms, seed=7, clock=clock, speed=8.0, start_ts=START_TS)
    app = ConsoleApp(settings, feed=feed, clock=clock)
    async with app.run_test(size=size) as pilot:
        # Every symbol's votes in, and the pane drawn from them: the first symbol's "final" row alone is on screen
        # while the later symbols' decisions of the bar are still coming (a busy machine: "+3" of five left out).
        def drawn_from_every_symbol() -> bool:  # the symbols shown, and those the header counts as left out
            header = next((ln for ln in screen_text(app).split("\n") if ln.lstrip(" │").startswith("prov")), "")
            left_out = re.search(r"\+(\d+)", header)
            return sum(s in header for s in symbols) + (int(left_out.group(1)) if left_out else 0) == len(symbols)

        await until(pilot, lambda: app.pane_visible("votes") and "final" in screen_text(app)
                    and app.view.decisions.keys() == set(symbols) and drawn_from_every_symbol(),
                    "every symbol's votes", timeout=60, progress=lambda: len(app.view.decisions))
        text = screen_text(app)
        top = [line for line in text.split("\n") if line.lstrip(" │").startswith("prov")]
        rows = [line for line in text.split("\n") if line.lstrip(" │").startswith(("trend", "momentum", "final"))]
        assert top and rows, text
        assert not any("…" in line for line in rows + top), "\n".join(top + rows)
        shown = [s for s in symbols if s in top[0]]
        assert shown, top
        if len(shown) < len(symbols):
            assert f"+{len(symbols) - len(shown)}" in top[0], top[0]
