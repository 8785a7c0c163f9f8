"""The approvals pane shows, for each pending trade, the price it was proposed at, the price now and the move
since: approving sizes the trade again at the price now (or refuses it when the price has moved past its stops),
so the operator sees what he approves. Fed with the snapshot rows of a real engine, in a real Textual app."""

from __future__ import annotations

from textual.app import App, ComposeResult

from ffe_tui.panes import ApprovalsTable

import re

import pytest

from pipeline_helpers import pipelines
from test_approvals import BTC, propose_at_60k
from test_tui_helpers import SIZE_IDS, SIZES, console, notices, pause, running, said_since, screen_text, until

_ = pipelines  # a fixture


class PaneApp(App):
    def compose(self) -> ComposeResult:
        yield ApprovalsTable(id="approvals")


def cells(table: ApprovalsTable, aid: str) -> dict[str, str]:
    return {str(col.key.value): str(table.get_cell(aid, col.key)) for col in table.columns.values()}


async def test_the_approvals_pane_shows_the_price_now_and_the_move_since_the_proposal(tmp_path, pipelines):
    p, a = await propose_at_60k(tmp_path, pipelines, [60_600.0] * 5)
    app = PaneApp()
    async with app.run_test(size=(100, 10)) as pilot:
        table = app.query_one(ApprovalsTable)
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[3:8] == ["qty", "proposed", "expires in", "now", "move"]
        table.show(p.engine.snapshot()["approvals"])
        await pilot.pause()
        row = cells(table, a["approval_id"])
        assert (row["symbol"], row["price"], row["last"], row["move"]) == (BTC, "60,000.0", "60,000.0", "+0.00%")
        await p.bars(1)  # the price rises 1% while the trade waits
        table.show(p.engine.snapshot()["approvals"])
        await pilot.pause()
        row = cells(table, a["approval_id"])
        assert (row["price"], row["last"], row["move"]) == ("60,000.0", "60,600.0", "+1.00%")
        assert table.row_count == 1


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_in_the_console_a_pending_trade_shows_its_countdown_and_move_on_screen(tmp_path, size):
    app = console(tmp_path, speed=20.0, approval="manual", ttl=600.0)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        table = app.query_one("#approvals")
        await until(pilot, lambda: table.row_count >= 1, "a pending approval on screen", timeout=60)
        aid = next(iter(table.rows)).value

        def row_on_screen() -> str:
            return next((line for line in screen_text(app).splitlines() if aid in line), "")

        # the countdown, the price now and the signed move since the proposal are on the approval's own line
        line = await until(pilot, lambda: re.search(r"\d+m\d\ds +[\d,.]+ +[+-]\d+\.\d\d%", row_on_screen())
                           and row_on_screen(),
                           "the countdown and the move on the approval's line")
        assert "move" in screen_text(app) and "expires in" in screen_text(app), line


async def test_the_selected_approval_stays_selected_when_one_above_it_ends(tmp_path):
    """The operator moves to the second trade waiting and weighs it; the first one ends meanwhile (expired, or
    rejected by `ffe ctl reject`). `a` approves the trade he selected, never the one that slid under the cursor."""
    from conftest import make_settings
    from ffe_engine.clock import SimClock
    from ffe_engine.market.simulated import SimulatedFeed
    from ffe_tui.app import ConsoleApp
    from test_tui_helpers import START_TS

    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    settings = make_settings(tmp_path, engine={"warmup_bars": 100, "approval": "manual", "approval_ttl_s": 600.0,
                                               "symbols": symbols},
                             market={"speed": 8.0, "seed": 7}, risk={"max_open_positions": 10, "max_correlation": 1.0,
                                                                     "max_concentration_pct": 100.0})
    clock = SimClock(paced=True)
    feed = SimulatedFeed(symbols, settings.engine.timeframe_ms, seed=7, clock=clock, speed=8.0, start_ts=START_TS)
    app = ConsoleApp(settings, feed=feed, clock=clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        table = app.query_one(ApprovalsTable)
        await until(pilot, lambda: table.row_count >= 3, "three trades waiting for approval", timeout=120)
        table.focus()
        # The approvals pane takes j and k as every table does; the first lands on the first trade, not drawn before.
        await pilot.press("j", "j", "j", "k")
        first, chosen, third = (table.coordinate_to_cell_key((r, 0)).row_key.value for r in range(3))
        assert table.selected() == chosen
        await app.engine.reject(first, by="ctl")  # another operator ends the first one
        await until(pilot, lambda: first not in [k.value for k in table.rows], "the first trade gone from the pane")
        assert table.selected() == chosen, (chosen, table.selected(), screen_text(app))
        await pilot.press("a")
        await until(pilot, lambda: chosen not in app.engine.pending, "the chosen trade approved (or refused)")
        assert third in app.engine.pending, "the trade below it was not touched"
        # The chosen trade has ended under the cursor: nothing is selected until the operator moves to one.
        await until(pilot, lambda: chosen not in [k.value for k in table.rows], "the chosen trade gone from the pane")
        assert not table.show_cursor, "no row is drawn selected while none is"
        await pilot.press("a")
        await until(pilot, lambda: any("no longer waiting" in n.message for n in app._notifications),
                    "the console says nothing is selected")
        assert third in app.engine.pending, "a trade the operator never chose was not approved"
        await pilot.press("down")
        assert table.selected() is not None and table.show_cursor


def one_symbol_console(tmp_path, speed: float):
    """The console as `ffe run` builds it, one symbol traded with manual approval: one trade waits at a time, so
    the pane is empty between two of them."""
    from conftest import make_settings
    from ffe_engine.clock import SimClock
    from ffe_engine.market.simulated import SimulatedFeed
    from ffe_tui.app import ConsoleApp
    from test_tui_helpers import START_TS

    settings = make_settings(tmp_path, engine={"warmup_bars": 100, "approval": "manual", "approval_ttl_s": 600.0,
                                               "symbols": [BTC]},
                             market={"speed": speed, "seed": 7}, risk={"risk_per_trade_pct": 0.01})
    clock = SimClock(paced=True)
    feed = SimulatedFeed([BTC], settings.engine.timeframe_ms, seed=7, clock=clock, speed=speed, start_ts=START_TS)
    return ConsoleApp(settings, feed=feed, clock=clock)


async def test_a_trade_that_comes_after_the_selected_one_ended_and_the_pane_emptied_is_not_selected(tmp_path):
    """The operator selects the one trade waiting and rejects it: the pane is empty until the strategy's next trade.
    That trade lands under the cursor, but he never chose it: `a` and `r` (no confirmation) act on nothing and say
    so, even after a move made while there was nothing to move to; a move onto it selects it."""
    app = one_symbol_console(tmp_path, speed=40.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        table = app.query_one(ApprovalsTable)
        await until(pilot, lambda: table.row_count == 1, "a trade waiting for approval", timeout=60)
        table.focus()
        await pilot.press("down", "up")
        chosen = table.selected()
        assert chosen is not None and table.show_cursor
        await pause(pilot, "PAUSED")  # no new trade meanwhile (entries refused): the pane empties for certain
        await pilot.press("r")
        await until(pilot, lambda: chosen not in app.engine.pending, "the chosen trade rejected")
        await until(pilot, lambda: table.row_count == 0, "the pane empty")
        await pilot.press("down")  # a move to nothing: the trade still to come is not chosen by it
        await pause(pilot, "RUNNING")
        await until(pilot, lambda: table.row_count == 1, "the strategy's next trade waiting", timeout=60)
        (after,) = [k.value for k in table.rows]
        assert table.selected() is None and not table.show_cursor, "a trade the operator never chose is selected"
        for key in ("a", "r"):
            said = notices(app)
            await pilot.press(key)
            await until(pilot, lambda: said_since(app, said, "no longer waiting"),
                        f"`{key}`: the console says nothing is selected")
            assert after in app.engine.pending, f"`{key}` acted on a trade the operator never chose"
        await pilot.press("up")
        assert table.selected() == after and table.show_cursor


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_the_first_trade_of_the_session_is_not_acted_on_until_the_operator_moves_to_it(tmp_path, size):
    """A fresh console: the first trade ever waiting comes into the pane (at 80x24 the pane comes up by itself), under
    the cursor. The operator never chose it: `a` and `r`, pressed once or twice, act on nothing and say what to do;
    the trade still waits. A move onto it (j) chooses it, and `a` then acts on it."""
    app = one_symbol_console(tmp_path, speed=40.0)
    async with app.run_test(size=size) as pilot:
        await running(pilot)
        table = app.query_one(ApprovalsTable)
        await until(pilot, lambda: table.row_count == 1 and app.pane_visible("approvals"),
                    "the first trade waiting, its pane on screen", timeout=60)
        (aid,) = [k.value for k in table.rows]
        assert table.selected() is None and not table.show_cursor, "a trade the operator never chose is selected"
        for key in ("a", "a", "r", "r"):
            said = notices(app)
            await pilot.press(key)
            await until(pilot, lambda: said_since(app, said, "no trade chosen"),
                        f"`{key}`: the console says no trade is chosen and what to do", timeout=10)
            assert aid in app.engine.pending, f"`{key}` acted on a trade the operator never chose"
        assert app.focused is table, "the approvals pane takes the moves that choose a trade"
        await pilot.press("j")
        assert table.selected() == aid and table.show_cursor
        await pilot.press("a")
        await until(pilot, lambda: aid not in app.engine.pending, "the chosen trade approved (or refused)")


async def test_a_trade_already_waiting_when_the_console_opens_brings_its_pane_up_at_80x24(tmp_path):
    """Trades wait across a restart: at 80x24, where the approvals pane shares its place with the votes, a trade
    already waiting when the console opens (its first look at the engine) brings the pane up, as one that comes
    later does."""
    first = one_symbol_console(tmp_path, speed=40.0)
    async with first.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await until(pilot, lambda: first.engine.pending, "a trade waiting", timeout=60)
        first.request_stop("quit")
        await until(pilot, lambda: first.engine.ended() is not None, "the engine stopped", timeout=30)
    again = one_symbol_console(tmp_path, speed=0.5)  # no new trade meanwhile: the one waiting from before
    async with again.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: again.snap is not None and again.snap["approvals"], "the trade still waiting",
                    timeout=60)
        await until(pilot, lambda: again.pane_visible("approvals"), "the approvals pane on screen", timeout=10)


async def test_tab_into_the_approvals_pane_chooses_the_row_it_lands_on(tmp_path):
    app = one_symbol_console(tmp_path, speed=40.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        table = app.query_one(ApprovalsTable)
        await until(pilot, lambda: table.row_count == 1, "a trade waiting", timeout=60)
        (aid,) = [k.value for k in table.rows]
        assert table.selected() is None
        await pilot.press("tab")
        assert app.focused is table and table.selected() == aid and table.show_cursor
