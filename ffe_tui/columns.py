"""How wide each column of a console table is, so that every figure is shown whole or not at all.

The formatters give figures of any width (a dust quantity 0.00000313, a price 0.0000123400, a symbol 1000PEPE/USDT):
no fixed width is enough, and a figure cut to its column reads as another number. A column is as wide as its widest
cell or heading plus one blank, and never narrower than the width it is laid out with (its usual figures keep their
places). Where the pane has no room for them all, every column gives back its spare room; the columns that still do
not fit are left out whole, from the right (the tables put the least important last), and the heading names them,
or counts them in words (`+2 more`).
"""

from __future__ import annotations

from typing import Sequence


def left_out_mark(labels: Sequence[str], room: int) -> str | None:
    """What the heading says of the columns left out: their names, or their count in words where the names do not
    fit (`+2 more`); None where neither fits (a bare `+2` would not say what it counts)."""
    for mark in ("+" + ", ".join(labels), f"+{len(labels)} more"):
        if len(mark) <= room:
            return mark
    return None


def fit_columns(columns: Sequence[tuple[str, str, int]], widest: dict[str, int],
                room: int) -> tuple[list[int], str]:
    """The width of each of `columns` (key, label, width laid out with) in a pane `room` characters wide, given the
    widest cell of each (by key), and the mark for the heading (empty when every column is shown). A column left out
    has width 0. The first column is always shown. Where the mark does not fit beside the columns, one more is left
    out to make room for it."""
    need = [max(widest.get(key, 0), len(label)) + 1 for key, label, _ in columns]
    usual = [max(width, n) for (_, _, width), n in zip(columns, need)]
    if sum(usual) <= room:
        return usual, ""
    if sum(need) <= room:
        return need, ""
    labels = [label for _, label, _ in columns]
    for shown in range(len(columns) - 1, 0, -1):
        if sum(need[:shown]) > room:
            continue
        # The mark is written in the headings' line after the last heading shown and a blank (mark_start): what
        # that column's figures take beyond its heading is room for the mark too.
        free = room - sum(need[:shown]) + need[shown - 1] - len(labels[shown - 1]) - 1
        mark = left_out_mark(labels[shown:], free)
        if mark is not None:
            return need[:shown] + [0] * (len(columns) - shown), mark
    return need[:1] + [0] * (len(columns) - 1), ""


def mark_start(headings: Sequence[tuple[str, int]]) -> int:
    """Where the mark of the columns left out begins in the headings' line, given each column's heading and width (0
    for one left out, as fit_columns gives them): after the last heading shown and a blank."""
    shown = [(label, width) for label, width in headings if width]
    if not shown:
        return 0
    return sum(width for _, width in shown[:-1]) + len(shown[-1][0]) + 1


def counted_columns(need: Sequence[int], room: int) -> int:
    """How many of the columns `need` wide (each with its blank) fit whole in `room`, the first always, with room
    after them for the bare count of the others (`+5`): a pane whose count is a column of its own, under no heading
    it would be read as (the votes pane's symbols)."""
    for shown in range(len(need), 1, -1):
        left = len(need) - shown
        if sum(need[:shown]) + (len(f"+{left}") if left else 0) <= room:
            return shown
    return 1
