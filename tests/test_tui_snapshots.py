"""Snapshots of the main screen at 80x24 and 120x40 on a deterministic engine: a seeded market from a fixed start,
run to a fixed number of bars. The log pane is filtered to an event type that did not occur, because log lines carry
wall-clock times; everything else on screen follows market time. The views (balances, profit, why no trades,
health, open trades and open orders) are taken on a ManualClock, whose wall and monotonic time stand still, and with
order and decision ids from a seeded id source: the ids shown are the same on every run."""

from __future__ import annotations

import pytest

import asyncio

from ffe_engine.clock import ManualClock
from ffe_engine.ids import IdSource
from ffe_engine.market.simulated import SimulatedFeed
from test_tui_helpers import SIZE_IDS, SIZES, bars_taken, console, screen_text, until

# The largest terminal an operator is likely to give it as well: the layout must use the room, not leave it blank.
SNAP_SIZES = [*SIZES, (200, 50)]
SNAP_SIZE_IDS = [*SIZE_IDS, "200x50"]


async def _settled(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.feed_ended, "the market feed to end", timeout=60,
                progress=lambda: bars_taken(app))
    await pilot.press("slash", *"kill_switch", "enter")
    await until(pilot, lambda: "filter: kill_switch" in screen_text(app), "the log filter")


@pytest.mark.parametrize("size", SNAP_SIZES, ids=SNAP_SIZE_IDS)
def test_main_screen(tmp_path, size, snap_compare):
    # The monitor's port is whichever was free: off here, so the status line is the same on every run.
    app = console(tmp_path, speed=0.0, max_bars=150, monitor={"enabled": False})
    assert snap_compare(app, terminal_size=size, run_before=_settled)


VIEW_KEYS = {"trades": ("2", "2 Trades"), "orders": ("3", "3 Orders"), "balances": ("4", "locked (in orders)"),
             "profit": ("5", "realised"), "why": ("6", "last market day"), "health": ("7", "last candle BTC/USDT")}


class _LastBarHeld(SimulatedFeed):
    """The simulated market, which waits after its last bar until `end` is set, then ends: an order placed then
    rests at the paper venue (which fills at the next bar) for good, and the engine that took it is still running."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.end = asyncio.Event()
        self.waiting = False

    async def candles(self):
        async for c in super().candles():
            yield c
        self.waiting = True
        await self.end.wait()


async def an_open_order(pilot) -> None:
    """A working order beside the open positions: half of one sold at market after the last bar, which rests at
    the paper venue, and then the market ends."""
    app = pilot.app
    await until(pilot, lambda: app.engine is not None and app.engine.feed.waiting and app.engine.bars == 300,
                "the last bar taken", timeout=60)
    feed = app.engine.feed
    pos = app.engine.snapshot()["positions"]
    assert pos and pos[0]["stop_loss"] and pos[0]["take_profit"], "the seeded market holds a position (relied on)"
    res = await app.engine.operator_order(pos[0]["symbol"], "sell", pos[0]["quantity"] / 2)
    assert res["accepted"], res
    feed.end.set()


@pytest.mark.parametrize("size", SNAP_SIZES, ids=SNAP_SIZE_IDS)
@pytest.mark.parametrize("view", list(VIEW_KEYS))
def test_view(tmp_path, view, size, snap_compare):
    # A ManualClock: the health view's uptime and candle ages are on the clock, which stands still here.
    key, shown = VIEW_KEYS[view]

    async def settled(pilot) -> None:
        app = pilot.app
        if view == "orders":
            await an_open_order(pilot)
        await until(pilot, lambda: app.feed_ended, "the market feed to end", timeout=60,
                progress=lambda: bars_taken(app))
        await pilot.press(key)
        await until(pilot, lambda: shown in screen_text(app), f"the {view} view")
        if view in ("trades", "orders"):  # the table filled from the next snapshot, not only its headings
            await until(pilot, lambda: app.query_one(f"#{view}").row_count > 0, f"the {view} rows")

    app = console(tmp_path, speed=0.0, max_bars=150, monitor={"enabled": False}, clock=ManualClock(),
                  ids=IdSource(seed=7), feed_class=_LastBarHeld if view == "orders" else SimulatedFeed)
    assert snap_compare(app, terminal_size=size, run_before=settled)
