"""The console's panes. Each takes plain data (an engine snapshot or ConsoleState) and redraws only on change.

The status line and the detail panes (votes, gates, breaker) have a fixed size in every layout (console.tcss): their
new content is drawn without a layout pass of the whole screen, which they would otherwise cost at every redraw.
"""

from __future__ import annotations

import time
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.strip import Strip
from textual.widgets import DataTable, Footer, Log, Static
from textual_plotext import PlotextPlot

from ffe_engine import fmt, tables
from ffe_engine.outage import outage, outage_only

from .columns import counted_columns, fit_columns, mark_start
from .state import ConsoleState

NO_STYLE = Style()

STATE_STYLE = {"RUNNING": "bold black on green", "PAUSED": "bold black on yellow", "HALTED": "bold white on red"}
# NO_COLOR turns colours into shades of grey, where white on red is darker than black on green: without colour a
# stopped engine is the one filled badge on screen, and a running one plain text.
STATE_STYLE_NO_COLOR = {"RUNNING": "bold", "PAUSED": "bold underline", "HALTED": "bold reverse"}

# The forms of the state's reason on the status line, the fullest first: cut at so many characters.
REASON_WIDTHS = (200, 120, 100, 88, 80, 72, 64, 56, 48, 40, 32, 22, 16, 10)


def waiting_approvals(snap: dict[str, Any]) -> int:
    """The trades waiting for approval: not one whose approve is under way (its order on the wire), which ends
    approved or with its order's end, whatever is pressed meanwhile."""
    return sum(1 for a in snap.get("approvals") or [] if not a.get("approving"))


def monitor_text(snap: dict[str, Any]) -> str:
    """Whether the alert channels deliver (those failing, by name) and where /health and /metrics answer."""
    return "".join(forms[0].plain for forms in (_alerts_forms(snap), _monitor_forms(snap)) if forms)


def _failing(snap: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    channels = (snap.get("monitor") or {}).get("channels") or {}
    return channels, [name for name, st in channels.items() if not st.get("ok")]


def _alerts_forms(snap: dict[str, Any]) -> list[Text]:
    if not snap.get("monitor"):
        return []
    channels, failing = _failing(snap)
    if failing:
        forms = [Text.assemble("  alerts ", (f"{', '.join(failing)} FAILING", "bold red"))]
        if len(failing) > 1:
            forms.append(Text.assemble("  alerts ", (f"{len(failing)} FAILING", "bold red")))
        return forms
    if not channels:
        return [Text.assemble("  alerts ", ("none", "yellow")), Text()]
    return [Text(f"  alerts ok ({len(channels)})"), Text("  alerts ok"), Text()]


def _monitor_forms(snap: dict[str, Any]) -> list[Text]:
    mon = snap.get("monitor")
    if not mon:
        return []
    url = mon.get("url")
    return [Text(f"  monitor {url.removeprefix('http://') if url else 'off'}"), Text()]


def _rounded(figure: float | None) -> float | None:
    """A figure to the cent, None (not known) as it is."""
    return None if figure is None else round(figure, 2)


def fit(parts: dict[str, list[Text]], order: list[str], width: int) -> Text:
    """One line of `parts` (each its forms, the fullest first, each form with the spaces that lead it; an empty form
    leaves the part out): while the line is wider than `width`, the part named next in `order` takes its next
    shorter form; then each step that is no longer needed is taken back. What still does not fit is cut at the end."""
    at = dict.fromkeys(parts, 0)

    first = next(iter(parts))

    def line() -> Text:
        shown = [(name, t) for name, forms in parts.items() if (t := forms[at[name]]).plain]
        if shown and shown[0][0] != first:  # the first part left out: the next one starts the line, not its spaces
            t = shown[0][1]
            shown[0] = (first, t[len(t.plain) - len(t.plain.lstrip(" ")):])
        return Text("").join(t for _, t in shown)

    steps = []
    for name in order:
        if line().cell_len <= width:
            break
        if name in parts and at[name] < len(parts[name]) - 1:
            at[name] += 1
            steps.append(name)
    for name in reversed(steps):
        at[name] -= 1
        if line().cell_len > width:
            at[name] += 1
    text = line()
    text.truncate(width, overflow="ellipsis")
    return text


def fit_rows(text: str, width: int, rows: int, more: str, console: Console) -> str:
    """`text` as it fits `rows` lines of `width` columns, wrapped as a Static wraps it: whole when it fits, else cut
    after its last whole word that leaves room for `more` (which says where the rest is), the cut marked with …."""

    def lines(t: str) -> int:
        return len(Text(t).wrap(console, max(1, width)))

    if lines(text) <= rows:
        return text
    words = text.split(" ")
    low, high = 0, len(words)  # the most words that fit with the mark: at least `low`, fewer than `high`
    while high - low > 1:
        mid = (low + high) // 2
        if lines(" ".join(words[:mid]) + f" … {more}") <= rows:
            low = mid
        else:
            high = mid
    return (" ".join(words[:low]).rstrip(" ,:;") + f" … {more}").lstrip()


OPENING = ("STARTING", "opening the engine…")  # the status line before the engine is open: what, and its words


class StatusLine(Static):
    """Mode, engine state in words, equity, today's P&L, drawdown, breakers, market clock, approvals.

    Laid out for 80 columns: what needs the operator (a note such as ENGINE NOT ANSWERING, a breaker not closed,
    the exchange's Retry-After, trades waiting for approval, alert channels failing, why the engine is not RUNNING)
    keeps its place; the rest is shortened or left out first."""

    _last: tuple = ()
    _shown: tuple[dict[str, Any] | None, str, str, tuple[str, str]] = (None, "", "", OPENING)

    def on_resize(self, event: events.Resize) -> None:
        snap, note, where, opening = self._shown
        self.show(snap, note=note, where=where, opening=opening)

    def show(self, snap: dict[str, Any] | None, *, note: str = "", where: str = "",
             opening: tuple[str, str] = OPENING) -> None:
        """`note` leads the second line (a condition to see at once); `where` ends the first (an attached console:
        which engine it shows, `attached pid N`); `opening`, before there is a snapshot: what is under way, and
        its words."""
        self._shown = (snap, note, where, opening)
        width = self.content_size.width or max(1, self.app.size.width - 2)
        key = (width, note, opening) if snap is None else (width, where,
            snap["mode"], snap["state"], snap.get("state_reason"), _rounded(snap["equity"]),
            _rounded(snap["day_pnl"]), _rounded(snap["drawdown_pct"]), snap.get("market_ts"), snap["approval_mode"],
            waiting_approvals(snap), len(snap.get("approvals") or []), snap.get("bars"), note,
            len(snap.get("reconcile_blocked") or []),
            tuple((b.get("venue"), b.get("state")) for b in snap.get("breakers") or []), monitor_text(snap),
            str(snap.get("venue_hold")))
        if key == self._last:
            return  # nothing visible changed: no redraw
        self._last = key
        if snap is None:
            text = Text.assemble(("ffe ", "bold"), (opening[0], "bold reverse"), f"  {opening[1]}")
        else:
            text = Text("\n").join([self._first(snap, where, width), self._second(snap, note, width)])
        self.update(text, layout=False)

    def _first(self, snap: dict[str, Any], where: str, width: int) -> Text:
        state = snap["state"]
        reason = fmt.printable(snap.get("state_reason") or "")  # as a request gave it (an older release kept any)
        mode = snap["mode"]
        no_color = self.app.no_color
        styles = STATE_STYLE_NO_COLOR if no_color else STATE_STYLE
        live = "bold underline" if no_color else "bold reverse"
        figures = self._figures(snap, no_color)
        if state != "RUNNING":
            # Given way to the reason as one part, the drawdown first, then the day's P&L, then the equity: a figure
            # is never shown while one ranked above it is left out (each part's steps are taken back as they fit).
            eq, day, dd = figures["equity"], figures["day"][0], figures["dd"][0]
            figures = {"figures": [Text.assemble(eq[0], day, dd), Text.assemble(eq[1], day, dd),
                                   Text.assemble(eq[1], day), eq[1], Text()]}
        parts = {
            "state": [Text.assemble((f" {mode} ", live if mode == "LIVE" else "bold"), " ",
                                    (f" {state} ", styles.get(state, "bold reverse")))],
            # Whole where the line has room for it (what lifts a pause is often at its end), else shortened.
            "reason": [Text.assemble(" ", (fmt.short(reason, n), "italic")) for n in REASON_WIDTHS],
            **figures,
            "where": [Text(f"  {where}"), Text(f"  {where.split(' ', 1)[-1]}"), Text()] if where else [Text()],
        }
        # Why the engine is not RUNNING outranks its figures (the Positions and Balances views have them) and, once
        # shortened, which engine it is (the pid stays at 80 columns, as the README says): what lifts a pause is
        # often at the reason's end. Why it runs does not.
        to_22 = ["reason"] * REASON_WIDTHS.index(22)  # the steps down to the 22 characters the line began with
        if state == "RUNNING":
            order = ["where", "equity", *to_22, "reason", "where", "reason", "reason", "dd"]
        else:
            order = ["where", *["figures"] * 4, *to_22, "reason", "where", "reason", "reason"]
        return fit(parts, order, width)

    @staticmethod
    def _figures(snap: dict[str, Any], no_color: bool) -> dict[str, list[Text]]:
        """The equity, the day's P&L and the drawdown; while the cash may count a recovered fill twice (the
        engine's cash_unreconciled) none of them, but what the cash is."""
        if snap.get("cash_unreconciled"):
            said = ("cash: the exchange's, not yet reconciled", "bold")
            return {"equity": [Text.assemble("  ", said), Text.assemble("  ", ("cash unreconciled", "bold")), Text()],
                    "day": [Text()], "dd": [Text()]}
        equity = (fmt.money(snap["equity"]), "bold")
        # Without colour red is a grey a step from the background: a loss is bold, in the line's own colour.
        day_style = ("" if snap["day_pnl"] >= 0 else "bold") if no_color else \
            ("green" if snap["day_pnl"] >= 0 else "red")
        day = (fmt.money(snap["day_pnl"], signed=True), day_style)
        return {"equity": [Text.assemble("  equity ", equity), Text.assemble("  eq ", equity), Text()],
                "day": [Text.assemble("  day ", day), Text()],
                "dd": [Text(f"  dd {fmt.pct(snap['drawdown_pct'])}"), Text()]}

    def _second(self, snap: dict[str, Any], note: str, width: int) -> Text:
        bad = [b for b in snap.get("breakers") or [] if b.get("state") != "closed"]
        n_appr = waiting_approvals(snap)
        approving = len(snap.get("approvals") or []) - n_appr
        market = fmt.market_time(snap.get("market_ts"))
        if bad:
            states = (", ".join(f"{b['venue']} {b['state'].upper()}" for b in bad), "bold red")
            breaker = [Text.assemble("  breaker ", states), Text.assemble("  brk ", states)]
        else:
            breaker = [Text("  breaker ok"), Text("  brk ok"), Text()]
        count = (str(n_appr), "bold yellow" if n_appr else "")
        being = f", {approving} being approved" if approving else ""
        approvals = [Text.assemble("  approvals ", count, f"{being} ({snap['approval_mode']})"),
                     Text.assemble("  approvals ", count), Text.assemble("  appr ", count)]
        if not n_appr:
            approvals.append(Text())
        blocked = snap.get("reconcile_blocked") or []
        # Held entries and a blocked resume, whatever the state: a halt for another reason hides them from its reason.
        # Nothing compared (unreachable, a clock the exchange refuses) is said as what it is, not counted.
        said = outage(blocked).badge if outage_only(blocked) else str(len(blocked))
        held = [Text.assemble("  ", (f"RECONCILE {said}", "bold red"))] if blocked else [Text()]
        # The exchange's Retry-After: nothing goes to it before then (the Why view says what and until when).
        hold = snap.get("venue_hold")
        until = fmt.clock(hold["until"]) if hold else ""
        retry = [Text.assemble("  ", (f"HOLD to {until}", "bold red")), Text.assemble("  ", ("HOLD", "bold red"))]
        parts = {
            "note": [Text(note, "bold reverse"), Text(fmt.short(note, 30), "bold reverse")] if note else [Text()],
            "reconcile": held,
            "hold": retry if hold else [Text()],
            "breaker": breaker,
            "market": [Text(f"  market {market}"), Text(f"  market {market[11:] or market}"), Text()],
            "approvals": approvals,
            "bars": [Text(f"  bars {snap.get('bars', 0)}"), Text()],
            "alerts": _alerts_forms(snap) or [Text()],
            "monitor": _monitor_forms(snap) or [Text()],
        }
        order = ["monitor", "bars", "market", "approvals", "market", "alerts", "alerts", "approvals", "breaker",
                 "approvals", "breaker", "hold", "reconcile", "note"]
        return fit(parts, order, width)


class KeysFooter(Footer):
    """Textual's footer of keys, laid out again only when the keys it shows change. Textual lays it out again at
    every change of focus (each view shown, each table focused), mounting every key anew: most of a key press's
    redraw, for the same keys."""

    _shown: tuple[Any, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        shown = tuple((b.key, b.action, b.description, enabled, tooltip)
                      for _, b, enabled, tooltip in screen.active_bindings.values() if b.show)
        if shown == self._shown:
            return
        super().bindings_changed(screen)
        if screen.app.app_focus and self.is_attached and screen is self.screen:  # it will be laid out again
            self._shown = shown


# Widths include one space of separation (the tables use no cell padding), for a price of 99,999.99 and a P&L to
# -9,999.99: 80 columns in all, for 80x24 (the trades view, key 2, has room for larger P&L). They are the least
# widths: a wider figure widens its column (columns.fit_columns).
POSITION_COLUMNS = (("symbol", "symbol", 9), ("side", "side", 6), ("qty", "qty", 9), ("entry", "entry", 10),
                    ("last", "last", 10), ("upnl", "uPnL", 10), ("sl", "SL", 10), ("tp", "TP", 10), ("age", "age", 6))


# j/k beside the arrow keys, in every table (keys.PANE_KEYS keeps them for this).
TABLE_MOVES = [Binding("j", "cursor_down", "Down", show=False), Binding("k", "cursor_up", "Up", show=False)]
# The same in every pane that scrolls rather than moves a cursor: the log, the read views.
SCROLL_MOVES = [Binding("j", "scroll_down", "Down", show=False), Binding("k", "scroll_up", "Up", show=False)]


class KeyedTable(DataTable):
    """A table of rows keyed by an id (COLUMNS: key, label, width), updated in place so the operator's cursor stays on
    its row. The console's tables all are, and all move their cursor with the arrow keys and j/k.

    The selected row is the one the operator chose, by moving to it (the arrow keys, j/k, page keys, Tab into the
    table, a click): it stays selected as other rows come and go. Until he has chosen one, and again once his row has
    ended (a trade approved or expired, a position closed, an order done), nothing is selected: the row under the
    cursor (the first one to come into the table, the one the cursor fell onto) is one he never chose, and is not
    drawn as selected. An action on the selection then acts on nothing and says so.

    Every figure is shown whole, with a blank before the next: a column widens to its widest cell, and one the pane
    has no room for is left out whole, from the right, its heading named at the end of the headings
    (columns.fit_columns)."""

    COLUMNS: tuple[tuple[str, str, int], ...] = ()
    BINDINGS = TABLE_MOVES

    def __init__(self, **kw: Any) -> None:
        super().__init__(cell_padding=0, show_cursor=False, **kw)
        self.chosen: str | None = None  # the row the operator moved to, while it lasts
        self.ended: str | None = None  # the row he had chosen, once it has ended, until he chooses another
        self.widest: dict[str, int] = {}  # each column's widest cell, by key
        self.left_out = ""  # what the heading says of the columns left out, if any

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, label, width in self.COLUMNS:
            self.add_column(label, key=key, width=width)

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> None:
        """Each column as wide as its figures need in the pane's width, less a vertical scrollbar when one is shown
        (one that comes with a new row is counted at the next redraw)."""
        room = self.scrollable_content_region.width
        if room <= 0:  # not on screen (another detail pane or view): fitted when it is
            return
        widths, self.left_out = fit_columns(self.COLUMNS, self.widest, room)
        columns = [self.columns[key] for key, _, _ in self.COLUMNS]
        if [c.width for c in columns] == widths:
            return
        for column, width in zip(columns, widths):
            column.width = width
        self._clear_caches()  # the cells were drawn at their old widths
        self._require_update_dimensions = True
        self.refresh()

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if self.left_out and any(seg.style is None for seg in strip):
            # A column left out (width 0) is drawn as an empty segment without a style, which a console without
            # colour (NO_COLOR: textual's monochrome filter) cannot take: it stopped the console.
            strip = Strip([seg if seg.style is not None else Segment(seg.text, NO_STYLE, seg.control) for seg in strip],
                          strip.cell_length)
        if y or not self.show_header or not self.left_out:
            return strip
        # The headings' line: the names of the columns left out, after the last one shown.
        at = mark_start([(str(c.label), c.width) for c in self.columns.values()]) - self.scroll_offset.x
        mark = Strip([Segment(self.left_out, self.get_component_rich_style("datatable--header"))])
        return Strip.join([strip.crop(0, at), mark, strip.crop(at + len(self.left_out))])

    def put(self, rows: dict[str, dict[str, Any]]) -> None:
        """Each row's cells by column key: changed cells updated, new rows added, rows no longer given removed. The
        cursor stays on the chosen row, by key: a row removed above it does not slide the next one under it."""
        for rid, cells in rows.items():
            if rid in self.rows:
                for key, value in cells.items():
                    if str(self.get_cell(rid, key)) != str(value):
                        self.update_cell(rid, key, value)
            else:
                self.add_row(*(cells[k] for k, _, _ in self.COLUMNS), key=rid)
        for key in [k for k in self.rows if k.value not in rows]:
            self.remove_row(key)
        self.widest = {k: max((cell_len(str(cells[k])) for cells in rows.values()), default=0)
                       for k, _, _ in self.COLUMNS}
        self.fit()
        if self.chosen is not None and self.chosen not in rows:  # ended, whether other rows remain or none
            self.ended, self.chosen = self.chosen, None
        if self.chosen is None:
            self.show_cursor = False
            return
        index = self.get_row_index(self.chosen)
        if index != self.cursor_row:
            self.move_cursor(row=index)

    def selected(self) -> str | None:
        """The row the operator chose, or None when he has chosen none (or his has ended)."""
        return self.chosen if self.chosen is not None and self.chosen in self.rows else None

    def choose(self, row: int | None = None) -> None:
        """The operator moves to a row (`row`, or the one under the cursor): it is selected, and drawn so. A move in
        an empty table chooses none of the rows still to come."""
        if not self.row_count:
            return
        row = min(max(self.cursor_row if row is None else row, 0), self.row_count - 1)
        self.chosen = self.coordinate_to_cell_key((row, 0)).row_key.value
        self.ended = None
        self.show_cursor = True

    def _move(self, move: Any) -> None:
        if self.row_count:
            self.show_cursor = True  # first: Textual scrolls a table whose cursor is hidden instead of moving it
        move()
        self.choose()

    def action_cursor_up(self) -> None:
        self._step(super().action_cursor_up)

    def action_cursor_down(self) -> None:
        self._step(super().action_cursor_down)

    def _step(self, move: Any) -> None:
        """Up or down: with no row chosen and none drawn, the first step lands on the row under the cursor (the first
        to come, or the one the cursor fell onto) rather than the one past it, which the operator never saw."""
        if self.chosen is None and not self.show_cursor and self.row_count:
            self.choose()
        else:
            self._move(move)

    def action_page_up(self) -> None:
        self._move(super().action_page_up)

    def action_page_down(self) -> None:
        self._move(super().action_page_down)

    def action_scroll_top(self) -> None:
        self._move(super().action_scroll_top)

    def action_scroll_bottom(self) -> None:
        self._move(super().action_scroll_bottom)

    def on_click(self, event: events.Click) -> None:
        row = event.style.meta.get("row")
        if isinstance(row, int) and 0 <= row < self.row_count:  # on a row, not the header or below the rows
            self.choose(row)  # the table's own handler moves the cursor there next


def position_key(p: dict[str, Any]) -> str:
    """A position's row: its symbol and the time it opened, as the engine tells one position of a symbol from the next
    (its close checks the opening time). A position closed and another opened in its symbol between two redraws is
    then a row of its own: the selected one has ended, and nothing slides under the cursor in its place."""
    return f"{p['symbol']} {p.get('opened_ts')}"


def selected_position(table: KeyedTable, positions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The position of the table's selected row among `positions` (the engine's), or None."""
    key = table.selected()
    return next((p for p in positions if position_key(p) == key), None)


class PositionsTable(KeyedTable):
    """Open positions, one row per position (position_key)."""

    COLUMNS = POSITION_COLUMNS

    def show(self, positions: list[dict[str, Any]]) -> None:
        rows = {}
        for p in positions:
            upnl = p.get("unrealised") or 0.0
            sl, tp = tables.exit_prices(p)
            rows[position_key(p)] = {
                "symbol": p["symbol"], "side": tables.side_text(p),
                "qty": fmt.qty(p["quantity"]), "entry": fmt.price(p["entry"]), "last": fmt.price(p["last"]),
                "upnl": Text(fmt.money(upnl, signed=True), style="green" if upnl >= 0 else "red"),
                "sl": sl, "tp": tp, "age": fmt.duration(tables.position_age(p)),
            }
        self.put(rows)


# What the operator weighs first comes first: the move since the proposal, the price now and the time left fit the
# half-width pane of 120x40; the proposed price (the price now less the move) and the proposed size (approving sizes
# the trade again at the price now) follow. Widths include one space of separation.
# What is approved comes first (how much, at what price, how long is left), then the market since: a narrow pane
# cuts the row from the right.
APPROVAL_COLUMNS = (("id", "approval", 14), ("symbol", "symbol", 9), ("side", "side", 5), ("qty", "qty", 10),
                    ("price", "proposed", 10), ("expires", "expires in", 11), ("last", "now", 10), ("move", "move", 8))


def approval_move(a: dict[str, Any]) -> Text:
    """The price move since the trade was proposed: approving sizes it again at the price now."""
    move = a.get("move_pct")
    if move is None:
        return Text("-")
    return Text(fmt.pct(move, signed=True), style="green" if move > 0 else ("red" if move < 0 else ""))


class ApprovalsTable(KeyedTable):
    """Pending trades in manual mode: the price proposed at, the price now and the move since, and a live countdown
    to expiry."""

    COLUMNS = APPROVAL_COLUMNS

    def show(self, approvals: list[dict[str, Any]], stopped: bool = False) -> None:
        """`stopped`: the engine has stopped: nothing counts down any more (the next start decides them)."""
        rows = {}
        for a in approvals:
            left = a.get("expires_in")
            # An approve under way (its order on the wire) no longer waits, and cannot expire: no countdown.
            if a.get("approving"):
                expires = Text("approving", style="bold")
            elif stopped:
                expires = Text("stopped")
            else:
                expires = Text(fmt.duration(left), style="bold red" if left is not None and left < 10 else "")
            rows[a["approval_id"]] = {
                "id": a["approval_id"], "symbol": a["symbol"], "side": a["side"], "move": approval_move(a),
                "last": fmt.price(a.get("last")), "expires": expires,
                "price": fmt.price(a["price"]), "qty": fmt.qty(a["quantity"])}
        self.put(rows)


class VotesPane(Static):
    """The latest decision per symbol: each provider's vote, confidence and applied weight, failures, tier, action.

    The symbols shown are those the pane has room for at each draw (VotesTable), so a resize, or the pane coming on
    screen, fits them at once rather than at the next decision."""

    def show(self, state: ConsoleState) -> None:
        decisions = [state.decisions[s] for s in state.symbols if s in state.decisions]
        if not decisions:
            self.update(Text("no decision yet (indicators warming up)", style="dim"), layout=False)
            return
        providers: list[str] = []
        for d in decisions:
            for v in d.votes:
                if v.get("provider") not in providers:
                    providers.append(v.get("provider"))
            for p in d.failed:
                if p not in providers:
                    providers.append(p)
        rows: list[list[Any]] = []
        for p in providers:
            row: list[Any] = [p]
            for d in decisions:
                vote = next((v for v in d.votes if v.get("provider") == p), None)
                if vote is not None:
                    w = vote.get("weight")
                    row.append(f"{fmt.enum_text(vote.get('action')):<4} {fmt.conf(vote.get('confidence'))} "
                               f"w{'-' if w is None else f'{w:.2f}'}")
                elif p in d.failed:
                    row.append(Text("FAILED", style="bold red"))
                else:
                    row.append("-")
            rows.append(row)
        rows.append(["final"] + [Text(f"{fmt.enum_text(d.action)} {fmt.conf(d.confidence)} tier {d.tier}",
                                      style="bold") for d in decisions])
        rows.append(["outcome"] + [fmt.short(d.outcome or "-", 22) for d in decisions])
        self.update(VotesTable(["provider"] + [d.symbol for d in decisions], rows), layout=False)


class VotesTable:
    """The votes' table, fitted to the width it is drawn at: the pane's width when the votes came is not the one it
    has at the next draw (a resize, a layout that hid the pane and shows it again), and Rich gives that width to
    each draw. A symbol with no room is counted, never cut to "HOLD 0.…"."""

    def __init__(self, heads: list[str], rows: list[list[Any]]) -> None:
        self.heads = heads
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        heads, rows = self.heads, self.rows
        shown = columns_that_fit(heads, rows, options.max_width)
        t = Table(box=None, padding=(0, 1), show_edge=False, expand=False)
        for head in heads[:shown]:
            t.add_column(head, no_wrap=True)
        if shown < len(heads):  # the symbols with no room, counted
            t.add_column(f"+{len(heads) - shown}", no_wrap=True)
        for row in rows:
            t.add_row(*row[:shown], *([""] if shown < len(heads) else []))
        yield t


def columns_that_fit(heads: list[str], rows: list[list[Any]], width: int) -> int:
    """How many of the columns (the providers' first, then a symbol's each) a pane `width` wide shows whole, with room
    left for the count of those it leaves out (columns.counted_columns); at least the providers'."""
    widest = {head: max(cell_len(str(c)) for c in [head] + [row[i] for row in rows]) + 1  # the left padding
              for i, head in enumerate(heads)}
    # The count's own column takes its padding on both sides; each column one blank after it.
    return counted_columns([widest[head] + 1 for head in heads], width - 2)


GATE_CELL = 8  # characters of a gate's value or limit
GATE_CELL_WIDE = 16
GATES_WIDE = 60  # pane width from which values and limits get GATE_CELL_WIDE: 18 + 2 x 16 + 4 + padding


class GatesPane(Static):
    """Every gate of the last evaluated order: code, measured value, limit, pass/fail (in words).

    Failing gates come first, so the gate that refused an order is on screen at any size; the gates that do not fit
    are counted in a last line rather than left out silently.
    """

    _state: ConsoleState | None = None

    def on_resize(self) -> None:
        if self._state is not None:
            self.show(self._state)  # how many gates fit, and in how many columns, depends on the size

    def show(self, state: ConsoleState) -> None:
        self._state = state
        g = state.gates
        if not g:
            self.update(Text("no order evaluated yet", style="dim"), layout=False)
            return
        gates = sorted(g["gates"], key=lambda x: bool(x.get("passed")))  # stable: failing first, else in order
        rows_free = max(1, self.size.height - 1)  # below the header
        cols = 2 if self.size.width >= 78 and len(gates) > rows_free else 1
        room = cols * rows_free
        hidden = gates[room - 1:] if len(gates) > room else []
        shown = gates[: room - 1] if hidden else gates
        per = -(-(len(shown) + (1 if hidden else 0)) // cols)
        # A value or limit in words ("closed or probe") is cut to fit, unless the pane is wide enough for it.
        cell = GATE_CELL_WIDE if cols == 1 and self.size.width >= GATES_WIDE else GATE_CELL
        t = Table(box=None, padding=(0, 1), show_edge=False, show_header=True)
        for _ in range(cols):
            t.add_column("gate", no_wrap=True)
            t.add_column("value", no_wrap=True, justify="right", max_width=cell)
            t.add_column("limit", no_wrap=True, justify="right", max_width=cell)
            t.add_column("", no_wrap=True)
        cells: list[list[Any]] = [
            [x.get("code", "?"), *(fmt.short(text, cell) for text in fmt.apart(x.get("value"), x.get("limit"))),
             Text("ok", style="green") if x.get("passed") else Text("FAIL", style="bold red")] for x in shown]
        if hidden:
            failing = sum(1 for x in hidden if not x.get("passed"))
            cells.append([Text(f"+{len(hidden)} more" + (f", {failing} FAIL" if failing else ", all ok"),
                               style="bold red" if failing else "dim"), "", "", ""])
        for i in range(per):
            row: list[Any] = []
            for c in range(cols):
                k = c * per + i
                row += cells[k] if k < len(cells) else ["", "", "", ""]
            t.add_row(*row)
        self.update(t, layout=False)


class BreakerPane(Static):
    """Circuit breaker per venue: state, consecutive failures, time until the half-open probe, last error."""

    _last: tuple = ()

    def show(self, breakers: list[dict[str, Any]]) -> None:
        rows = []
        for b in breakers:
            retry_in = b.get("retry_in")
            if retry_in is None and b.get("retry_at") is not None:
                # A running engine's breaker keeps retry_at on the monotonic clock (market time only in backtests).
                retry_in = max(0.0, b["retry_at"] - time.monotonic())
            rows.append((b.get("venue", "?"), b.get("state", "?"), str(b.get("failures", 0)),
                         "-" if retry_in is None else fmt.duration(retry_in),
                         # A breaker closed again: its last error is over (the log keeps it).
                         "-" if b.get("state") == "closed" else fmt.printable(b.get("last_error") or "-")))
        key = tuple(rows)
        if key == self._last:
            return
        self._last = key
        self.update(BreakerTable(rows), layout=False)


class BreakerTable:
    """The breakers' table, fitted to the width it is drawn at (columns.fit_columns): the figures whole, the last
    error in what is left, cut with an ellipsis; in a pane too narrow for ERROR_LEAST of it, the columns that do not
    fit are left out from the right, and the heading names them (`+last error`)."""

    HEADS = ("venue", "state", "failures", "probe in", "last error")
    ERROR_LEAST = 12

    def __init__(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widest = {h: max([cell_len(h), *(cell_len(r[i].upper() if i == 1 else r[i]) for r in self.rows)])
                  for i, h in enumerate(self.HEADS)}
        widest["last error"] = min(widest["last error"], self.ERROR_LEAST)
        room = options.max_width - 1  # the blank before the first column
        widths, mark = fit_columns([(h, h, 0) for h in self.HEADS], widest, room)
        if widths[-1]:  # shown: the last error takes the room left, its start and its end (the exchange's words)
            widths[-1] = max(widths[-1], room - sum(widths[:-1]))
        shown = [i for i, w in enumerate(widths) if w]
        rows = [(*row[:4], fmt.ends(row[4], max(1, widths[-1] - 1))) if widths[-1] else row for row in self.rows]
        t = Table(box=None, padding=(0, 0, 0, 1), show_edge=False, expand=False)
        for i in shown:
            t.add_column(self.HEADS[i], no_wrap=True, width=widths[i] - 1,
                         overflow="ellipsis" if self.HEADS[i] == "last error" else "fold")
        if mark:
            t.add_column(mark, no_wrap=True)
        for row in rows:
            cells: list[Any] = [Text(row[i].upper(), style="green" if row[i] == "closed" else "bold red")
                                if i == 1 else row[i] for i in shown]
            t.add_row(*cells, *([""] if mark else []))
        yield t


# The title, the frame's top and bottom lines and two rows of plot: in fewer rows plotext labels its axis reversed
# (the top label lower than the bottom one) and draws no line, or a line on one row.
CHART_ROWS = 5


class ChartPane(PlotextPlot):
    """Close prices of one symbol and the account's equity (right axis), redrawn at most twice a second. Shorter than
    CHART_ROWS (the wide layout from 110x32 to 110x34, a terminal too small for the layout) it says so instead."""

    def render(self) -> RenderResult:
        rows = self.size.height
        if rows < CHART_ROWS:
            return Text(f"chart: too short, {rows} rows (it takes {CHART_ROWS})", style="dim")
        return super().render()

    def show(self, state: ConsoleState, symbol: str) -> None:
        plt = self.plt
        plt.clear_data()
        prices = list(state.prices.get(symbol, ()))
        equity = list(state.equity)
        for values, side, label in ((prices, "left", symbol), (equity, "right", "equity")):
            plt.ylim(*_flat_range(values), yside=side)
            if values:
                plt.plot(values, label=label, yside=side, marker="braille")
        plt.xticks([])
        plt.title(f"{symbol} close · equity (right) · last {fmt.counted(max(len(prices), len(equity)), 'bar')}")
        self.refresh()


def _flat_range(values: list[float]) -> tuple[float | None, float | None]:
    """An axis around a series that does not move (equity with no position open, a market at rest), where plotext
    would spread it half its value either side and label the line thousands away from it; None, None: plotext's
    own range."""
    if not values:
        return None, None
    low, high = min(values), max(values)
    span = abs(high) * 5e-4 or 0.5  # relative to the value: a coin priced in millionths moves in millionths
    if high - low > span / 100:
        return None, None
    middle = (low + high) / 2
    return middle - span, middle + span


class LogPane(Log):
    """Tail of the audit events and engine log lines, written in batches.

    It follows the newest line unless the operator scrolled up on purpose (a key or the mouse wheel), and then its
    title says so; scrolling back to the end, End, or a new filter follows again. Following is kept here rather
    than read from the scroll position: a pane that changes height (a banner appearing after a kill switch) or is
    refilled (a new filter) is no longer at its end, yet must go on following.
    """

    BINDINGS = SCROLL_MOVES  # through action_scroll_up/down below: k stops the following as up does

    def __init__(self, **kw: Any) -> None:
        super().__init__(auto_scroll=False, **kw)
        self.following = True
        self.filter_spec = ""

    # ------------------------------------------------------------------ what is written
    def add(self, lines: list[str]) -> None:
        if lines:
            before = self.line_count
            self.write_lines(lines, scroll_end=False)
            dropped = before + len(lines) - self.line_count  # the oldest, past max_lines
            if dropped > 0 and not self.following:
                # Scrolled up: the lines being read stay where they are on screen.
                self.scroll_to(y=max(0, self.scroll_y - dropped), animate=False, immediate=True)
            self._keep_up()

    def replace(self, lines: list[str], filter_spec: str) -> None:
        """Show other lines (a new filter): the pane follows again."""
        self.clear()
        self.filter_spec = filter_spec
        self.write_lines(lines, scroll_end=False)
        self._set_following(True)

    def _keep_up(self) -> None:
        if self.following:
            # After the next layout: the pane's height may be changing in the same refresh (a banner appearing).
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True, x_axis=False)

    def on_resize(self) -> None:
        self._keep_up()

    # ------------------------------------------------------------------ the operator's scrolling
    def _set_following(self, on: bool) -> None:
        self.following = on
        self._retitle()
        self._keep_up()

    def _retitle(self) -> None:
        parts = ["Log"]
        if self.filter_spec:
            parts.append(f"[filter: {self.filter_spec}]")
        if not self.following:
            parts.append("[scrolled up, not following: End in the log follows]")
        self.border_title = Text("  ".join(parts))

    def _after_user_scroll(self) -> None:
        """A scroll towards the end: following again once the end is reached."""
        self.call_after_refresh(self._follow_at_end)

    def _follow_at_end(self) -> None:
        if not self.following and self.is_vertical_scroll_end:
            self._set_following(True)

    def _stop_following(self) -> None:
        if self.following:
            self.following = False
            self._retitle()

    def action_scroll_up(self) -> None:
        self._stop_following()
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self._stop_following()
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self._stop_following()
        super().action_scroll_home()

    def action_scroll_down(self) -> None:
        super().action_scroll_down()
        self._after_user_scroll()

    def action_page_down(self) -> None:
        super().action_page_down()
        self._after_user_scroll()

    def action_scroll_end(self) -> None:
        self._set_following(True)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._stop_following()  # the wheel's scrolling itself is the widget's own handler

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._after_user_scroll()

    def render_line(self, y: int) -> Strip:
        """A line wider than the pane ends with an ellipsis where it is cut, never mid-number unmarked (a price of
        30,000.0 read as 30); Right and Left scroll the log sideways to the rest."""
        strip = super().render_line(y)
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width  # the vertical scrollbar's column left out
        lines = self.lines
        index = scroll_y + y
        if width > 1 and index < len(lines) and cell_len(self._process_line(lines[index])) > scroll_x + width:
            strip = Strip.join([strip.crop(0, width - 1), Strip([Segment("…", self.rich_style)])])
        return strip

    def _update_size(self, updates: int, lines: list[str]) -> None:
        # Textual's Log measures new lines in a thread worker that looks up the app from the widget; a batch written
        # as the console quits then fails the app (the pane is already detached). The batches here are bounded,
        # so they are measured in place.
        if lines:
            self._update_maximum_width(updates, max(cell_len(self._process_line(line)) for line in lines))
