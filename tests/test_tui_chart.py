"""The chart's axes label the lines where they are drawn: a flat series (equity with no position open, the usual
state overnight or HALTED; a market that does not move) is drawn against labels around its own value, not across an
axis spread half its value either side, where the line lands on a row labelled thousands away from it."""

from __future__ import annotations

import re

import pytest
from textual.app import App, ComposeResult

from ffe_tui.panes import ChartPane
from ffe_tui.state import ConsoleState

RIGHT = re.compile(r"├([-+\d.,e]+)\s*$")
LEFT = re.compile(r"^\s*([-+\d.,e]+)┤")

class ChartApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ChartPane(id="chart")


def _labels(text: str, side: str) -> list[float]:
    """The numbers the plot's left or right axis prints against its ticks."""
    tick = RIGHT if side == "right" else LEFT
    return [float(m.group(1).replace(",", "")) for line in text.splitlines() if (m := tick.search(line))]


async def drawn(symbol: str, prices: list[float], equity: list[float]) -> str:
    """The chart of these series, as the console draws it."""
    state = ConsoleState([symbol])
    state.prices[symbol].extend(prices)
    state.equity.extend(equity)
    app = ChartApp()
    async with app.run_test(size=(100, 16)) as pilot:
        chart = app.query_one(ChartPane)
        chart.show(state, symbol)
        await pilot.pause()
        return chart.render().plain


@pytest.mark.parametrize("equity", [9_894.50, 0.0, 123_456_789.0], ids=["account", "nothing", "large"])
async def test_a_flat_equity_is_labelled_with_its_own_value(equity):
    text = await drawn("BTC/USDT", [60_000 + (i % 7) * 50 for i in range(120)], [equity] * 120)
    right = _labels(text, "right")
    assert len(right) >= 2, text
    # Every label on the equity's axis within a thousandth of it (or of 1 around nothing).
    span = max(abs(equity) * 1e-3, 1.0)
    assert all(abs(v - equity) <= span for v in right), (right, text)
    left = _labels(text, "left")
    assert left and all(59_000 <= v <= 61_000 for v in left), (left, text)


async def test_flat_prices_are_labelled_with_their_own_value():
    text = await drawn("BTC/USDT", [60_473.8] * 50, [10_000 + i for i in range(50)])
    left = _labels(text, "left")
    assert len(left) >= 2 and all(abs(v - 60_473.8) <= 60.5 for v in left), (left, text)


@pytest.mark.parametrize("base", [0.00001, 0.1], ids=["a coin priced in hundred-thousandths", "a coin at 0.1"])
async def test_a_low_priced_coin_that_moves_is_drawn_on_its_own_range(base):
    # Taken for flat (a range under 0.005 whatever its price) it was drawn as a line at 0 on a band of +-0.5.
    text = await drawn("PEPE/USDT", [base * (1 + 0.03 * ((i % 9) - 4) / 4) for i in range(90)], [10_000.0] * 90)
    left = _labels(text, "left")
    assert len(left) >= 2 and max(left) - min(left) <= base * 0.2 and min(left) > 0, (left, text)


async def _console_chart(tmp_path, height: int) -> str:
    """The chart pane's content, as the console draws it at 110 columns and `height` rows (the wide layout, where
    every pane is on screen), once a seeded market has ended."""
    from ffe_engine.clock import ManualClock
    from test_tui_helpers import bars_taken, console, screen_text, until

    app = console(tmp_path, speed=0.0, max_bars=150, monitor={"enabled": False}, clock=ManualClock())
    async with app.run_test(size=(110, height)) as pilot:
        await until(pilot, lambda: app.feed_ended and "STOPPED" in screen_text(app), "the market feed to end",
                    timeout=60, progress=lambda: bars_taken(app))
        chart = app.query_one(ChartPane)
        await until(pilot, lambda: "ETH/USDT" in chart.render().plain or "too short" in chart.render().plain,
                    "the chart drawn")
        await pilot.pause(0.2)
        lines = screen_text(app).split("\n")
        region = chart.content_region
        return "\n".join(lines[y][region.x:region.right].rstrip() for y in range(region.y, region.bottom))


@pytest.mark.parametrize("height", [32, 33, 34])
async def test_a_chart_pane_too_short_to_draw_in_says_so(tmp_path, height):
    # 2 to 4 rows: plotext drew its axis labels reversed (the top one lower than the bottom one) and no line, or a
    # line on one row. The pane says it is too short instead of drawing what is not so.
    text = await _console_chart(tmp_path, height)
    assert text.strip().startswith("chart: too short"), text
    assert not re.search(r"\d┤|├\d", text), text


async def test_the_shortest_chart_drawn_labels_its_axis_top_down(tmp_path):
    text = await _console_chart(tmp_path, 35)
    left, right = _labels(text, "left"), _labels(text, "right")
    assert len(left) >= 2 and left == sorted(left, reverse=True), text
    assert len(right) >= 2 and right == sorted(right, reverse=True), text
    assert "too short" not in text
