"""How wide each column of a console table is, so that every figure is shown whole or not at all.

The formatters give figures of any width (a dust quantity 0.00000313, a price 0.0000123400, a symbol 1000PEPE/USDT):
no fixed width is enough, and a figure cut to its column reads as another number. A column is as wide as its widest
cell or heading plus one blank, and never narrower than the width it is laid out with (its usual figures keep their
places). Where the pane has no room for them all, every column gives back its spare room; the columns that still do
not fit are left out whole, from the right (the tables put the least important last), and the heading names them.
"""

from __future__ import annotations

from typing import Sequence


def left_out_mark(labels: Sequence[str], room: int) -> str | None:
    """What the heading says of the columns left out: their names, or their count where the names do not fit
    (`+2 more`, `+2`); None where not even that fits."""
    for mark in ("+" + ", ".join(labels), f"+{len(labels)} more", f"+{len(labels)}"):
        if len(mark) <= room:
            return mark
    return None


def fit_columns(columns: Sequence[tuple[str, str, int]], widest: dict[str, int],
                room: int) -> tuple[list[int], str]:
    """The width of each of `columns` (key, label, width laid out with) in a pane `room` characters wide, given the
    widest cell of each (by key), and the mark for the heading (empty when every column is shown). A column left out
    has width 0. The first column is always shown."""
    need = [max(widest.get(key, 0), len(label)) + 1 for key, label, _ in columns]
    usual = [max(width, n) for (_, _, width), n in zip(columns, need)]
    if sum(usual) <= room:
        return usual, ""
    if sum(need) <= room:
        return need, ""
    for shown in range(len(columns) - 1, 0, -1):
        mark = left_out_mark([label for _, label, _ in columns[shown:]], room - sum(need[:shown]))
        if mark is not None:
            return need[:shown] + [0] * (len(columns) - shown), mark
    return need[:1] + [0] * (len(columns) - 1), ""
