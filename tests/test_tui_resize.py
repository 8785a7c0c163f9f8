"""After any sequence of resizes every pane shows what fits its width at once, as a console opened at that size
does: not what fitted the width it had when its data last came (until the next bar, an hour at 1h). The reported
case: three symbols, 80x24 -> 60x18 (too small: the panes shrink) -> 200x50 left the votes pane at "provider +3",
the width it had when the votes came (none: off screen) or too small for all three. Also with a dialog open over the
console while it is resized, and with the data coming while the screen is too small. The market ends before the
resizes, so no new data redraws a pane meanwhile. The banner too is fitted to the new width, from its whole text."""

from __future__ import annotations

import re
import time

import pytest
from conftest import make_settings
from rich.text import Text

from ffe_engine.clock import ManualClock
from ffe_engine.ids import IdSource
from ffe_engine.market.simulated import SimulatedFeed
from ffe_tui.app import BANNER_ROWS, ConsoleApp
from test_tui_helpers import START_TS, banner_text, bars_taken, console, running, screen_text, until

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
PANES = ("status", "positions", "approvals", "breaker", "votes", "gates")


def _console(tmp_path) -> ConsoleApp:
    """A console on a seeded market of three symbols that ends after 150 bars: the same panes every run."""
    settings = make_settings(tmp_path, engine={"warmup_bars": 100, "symbols": SYMBOLS},
                             market={"speed": 0.0, "seed": 7}, monitor={"enabled": False})
    clock = ManualClock()
    feed = SimulatedFeed(SYMBOLS, settings.engine.timeframe_ms, seed=7, clock=clock, speed=0.0, start_ts=START_TS,
                         max_bars=150)
    return ConsoleApp(settings, feed=feed, clock=clock, ids=IdSource(seed=7))


def panes_text(app: ConsoleApp) -> dict[str, str]:
    """What each pane on screen shows (its title line and its content), by pane."""
    lines = screen_text(app).split("\n")
    out = {}
    for name in PANES:
        region = app.panes[name].region
        if region.width and app.panes[name].display:
            out[name] = "\n".join(lines[y][region.x:region.right].rstrip() for y in range(region.y, region.bottom))
    return out


async def _ended(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.feed_ended and app.view.decisions.keys() == set(SYMBOLS)
                and "STOPPED" in screen_text(app), "the market to end with a decision for every symbol", timeout=60,
                progress=lambda: bars_taken(app))
    await pilot.pause(0.3)


async def _settled(pilot, expected: dict[str, str]) -> dict[str, str]:
    """The panes once the resize is laid out: as `expected` within a few redraws, else as they stay."""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and panes_text(pilot.app) != expected:
        await pilot.pause(0.1)
    return panes_text(pilot.app)


async def _fresh(tmp_path, size: tuple[int, int]) -> dict[str, str]:
    """The panes of a console opened at `size` on the same market."""
    app = _console(tmp_path / f"fresh{size[0]}x{size[1]}")
    async with app.run_test(size=size) as pilot:
        await _ended(pilot)
        return panes_text(app)


def _differences(got: dict[str, str], expected: dict[str, str]) -> str:
    return "\n".join(f"--- {name} after the resizes:\n{got.get(name)}\n--- {name} opened at that size:\n"
                     f"{expected.get(name)}" for name in sorted(set(got) | set(expected))
                     if got.get(name) != expected.get(name))


# (60x18 -> 200x50 is the first's last step.)
@pytest.mark.parametrize("sizes", [[(80, 24), (60, 18), (200, 50)], [(200, 50), (60, 18)],
                                   [(80, 24), (200, 50), (60, 18), (120, 40)]],
                         ids=lambda sizes: "-".join(f"{w}x{h}" for w, h in sizes))
async def test_after_resizes_every_pane_shows_what_fits_its_width(tmp_path, sizes):
    expected = await _fresh(tmp_path, sizes[-1])
    app = _console(tmp_path / "resized")
    async with app.run_test(size=sizes[0]) as pilot:
        await _ended(pilot)
        for size in sizes[1:]:
            await pilot.resize_terminal(*size)
            await pilot.pause(0.3)
        got = await _settled(pilot, expected)
    assert got == expected, _differences(got, expected)
    assert "…" not in got["votes"], got["votes"]  # a symbol with no room is counted, never cut
    if sizes[-1][0] >= 110:  # the votes of all three symbols, none counted as left out
        assert all(s in got["votes"] for s in SYMBOLS) and "+" not in got["votes"], got["votes"]


async def test_a_resize_under_a_dialog_shows_what_fits_once_it_closes(tmp_path):
    """60x18 -> 200x50 with the help open over the console: once it closes, the panes are those of 200x50."""
    expected = await _fresh(tmp_path, (200, 50))
    app = _console(tmp_path / "resized")
    async with app.run_test(size=(60, 18)) as pilot:
        await _ended(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: len(app.screen_stack) > 1, "the help open")
        await pilot.resize_terminal(200, 50)
        await pilot.pause(0.3)
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the help closed")
        got = await _settled(pilot, expected)
    assert got == expected, _differences(got, expected)
    assert all(s in got["votes"] for s in SYMBOLS) and "+" not in got["votes"], got["votes"]


async def test_a_pane_hidden_while_its_data_came_shows_what_fits_once_on_screen(tmp_path):
    """At 80x24 one detail pane is on screen at a time: the votes come while another one is, and the console is then
    widened to show every pane."""
    expected = await _fresh(tmp_path, (200, 50))
    app = _console(tmp_path / "resized")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("v")
        await _ended(pilot)
        assert not app.pane_visible("votes")
        await pilot.resize_terminal(200, 50)
        got = await _settled(pilot, expected)
    assert got == expected, _differences(got, expected)


async def test_after_resizes_the_banner_is_fitted_to_the_new_width_from_its_whole_text(tmp_path):
    """The reported case: a kill switch's banner whole at 100x30, then 20x6 and back to 100x30 (and on to 200x60)
    stayed cut as at 20 columns, `KILL SWITCH: HALTED by … (whole text: 7 Health)`; and a banner whole at 100 columns
    resized to 22x8 lost its end with no mark. Each time it was fitted to the width before the resize."""
    more = "… (whole text: 7 Health)"
    app = console(tmp_path, speed=2.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await running(pilot)
        await pilot.press("K", "y")
        await until(pilot, lambda: "KILL SWITCH: HALTED by operator" in banner_text(app), "the kill switch's banner")
        whole = banner_text(app)
        assert "…" not in whole and re.fullmatch(r"KILL SWITCH: HALTED by operator: .* in [\d.]+ ms", whole), whole
        for size in [(20, 6), (100, 30), (200, 60)]:
            await pilot.resize_terminal(*size)
            await pilot.pause(0.3)
            shown = str(app.panes["banner"].content)
            if size[0] == 20:
                assert shown.endswith(more) and whole.startswith(shown.removesuffix(more).rstrip()), shown
                assert len(Text(shown).wrap(app.console, 18)) <= BANNER_ROWS, shown
            else:
                assert shown == whole and banner_text(app) == whole, (size, shown, banner_text(app))
    app = console(tmp_path / "again", speed=2.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await running(pilot)
        await pilot.press("K", "y")
        await until(pilot, lambda: "KILL SWITCH: HALTED by operator" in banner_text(app), "the kill switch's banner")
        whole = banner_text(app)
        await pilot.resize_terminal(22, 8)
        await pilot.pause(0.3)
        shown = str(app.panes["banner"].content)
        assert shown.endswith(more) and whole.startswith(shown.removesuffix(more).rstrip()), shown
        assert len(Text(shown).wrap(app.console, 20)) <= BANNER_ROWS, shown
        assert banner_text(app) == shown, banner_text(app)


async def test_the_status_line_shows_the_whole_reason_where_it_has_room(tmp_path):
    """A pause's reason often ends in what lifts it ("...; resume when ready"): at 200 columns the status line shows
    it whole; at 80 too, the equity, the day's P&L and the drawdown left out for it (the views have them)."""
    reason = "reconcile: the exchange answers again; resume when ready"
    app = console(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await running(pilot)
        await app.engine.pause(reason=reason, by="engine")
        await until(pilot, lambda: reason in status_line(app), "the whole reason at 200 columns")
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: "PAUSED" in status_line(app) and reason in status_line(app),
                    "the whole reason at 80 columns")


async def test_a_reason_too_long_for_the_line_takes_the_room_the_figures_gave_way_to(tmp_path):
    """A reason that does not fit whole even without the figures is cut where the line ends, not at a step that
    leaves room for the figures to come back beside it."""
    reason = "drawdown alarm from ops; flatten by hand if needed, then re-arm: ffe ctl resume --yes"
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await app.engine.pause(reason=reason, by="operator")
        await until(pilot, lambda: "PAUSED" in status_line(app) and "…" in status_line(app), "the reason cut")
        line = status_line(app)
        shown = line[line.index("drawdown"):line.index("…")]
        assert len(shown) + 1 >= 56 and "day" not in line and "eq " not in line, line  # the mark counts


def status_line(app) -> str:
    return screen_text(app).split("\n")[0]
