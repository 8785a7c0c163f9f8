"""The console's views beyond the main screen: open trades, open orders, balances, profit, why no trades, health.

Each pane takes the plain data the engine answers (the snapshot, or its balances/profit/why/health reads, the same
in process and through the control socket) and only displays it: every figure is computed in the engine and written
through ffe_engine.fmt.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ffe_engine import fmt, tables
from ffe_engine.reconcile import accept_hint, blocked_text

from .panes import SCROLL_MOVES, KeyedTable, position_key


def signed(x: Any, text: str) -> Text:
    return Text(text, style="green" if isinstance(x, (int, float)) and x > 0 else
                ("red" if isinstance(x, (int, float)) and x < 0 else ""))


# Widths include one space of separation (the tables use no cell padding), for the usual figures (a price of
# 99,999.99, a P&L of -12,345.67); they are the least widths (columns.fit_columns). The side comes first after the
# symbol, as on the main screen: it is what tells dust (no position, nothing to close) from a position. At 80x24 the
# columns close up and the age and id, left out there, are also on the line under the table for the selected trade.
TRADE_COLUMNS = (("symbol", "symbol", 9), ("side", "side", 5), ("qty", "qty", 10), ("entry", "entry", 10),
                 ("last", "now", 10), ("pct", "%", 8), ("pnl", "P&L", 11), ("sl", "SL", 10), ("tp", "TP", 10),
                 ("age", "age", 7), ("id", "trade id", 16))


class TradesTable(KeyedTable):
    """Open trades: side (`dust` for coins no order can sell), entry, price now, % and quote P&L, age, stop-loss,
    take-profit, id. One row per position (position_key): at most one per symbol at a time."""

    COLUMNS = TRADE_COLUMNS

    def show(self, positions: list[dict[str, Any]]) -> None:
        rows = {}
        for p in positions:
            sl, tp = tables.exit_prices(p)
            rows[position_key(p)] = {
                "symbol": p["symbol"], "side": tables.side_text(p), "qty": fmt.qty(p["quantity"]),
                "entry": fmt.price(p["entry"]), "last": fmt.price(p["last"]),
                "pct": signed(p.get("pnl_pct"), fmt.pct(p.get("pnl_pct"), signed=True)),
                "pnl": signed(p.get("unrealised"), fmt.money(p.get("unrealised"), signed=True)),
                "age": fmt.duration(tables.position_age(p)), "sl": sl, "tp": tp, "id": tables.position_id(p)}
        self.put(rows)


# 79 columns before the id, which the line under the table also shows (left out at 80x24).
ORDER_COLUMNS = (("symbol", "symbol", 9), ("side", "side", 5), ("qty", "qty", 10), ("filled", "filled", 10),
                 ("type", "type", 7), ("price", "price", 10), ("status", "status", 9), ("reason", "reason", 12),
                 ("age", "age", 7), ("id", "client order id", 29))


# The columns of tables.order_rows, by the keys of ORDER_COLUMNS.
ORDER_CELLS = ("id", "symbol", "side", "qty", "filled", "type", "price", "status", "reason", "age")


class OrdersTable(KeyedTable):
    """Orders not yet final, by client order id: side, size, filled, type, limit price, status, why, age."""

    COLUMNS = ORDER_COLUMNS

    def show(self, orders: list[dict[str, Any]]) -> None:
        rows = {}
        # The cells of `ffe ctl orders` (tables.order_rows), by column: the two say an order alike.
        for o, cells in zip(orders, tables.order_rows(orders)):
            row = dict(zip(ORDER_CELLS, cells))
            row["status"] = Text(row["status"], style="bold yellow" if o["status"] == "in_doubt"
                                 or o.get("trades_behind") else "")
            rows[o["client_order_id"]] = row
        self.put(rows)


class ScrollPane(VerticalScroll, can_focus=True):
    """A view's text, scrolled with the arrow keys, j/k and page keys when the terminal is too short for it."""

    BINDINGS = SCROLL_MOVES

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.body = Static(Text("loading…", style="dim"))

    def compose(self) -> ComposeResult:
        yield self.body

    def set(self, renderable: Any) -> None:
        self.body.update(renderable)


def _table(*headers: str, right_from: int = 1) -> Table:
    t = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False, show_header=any(headers))
    for i, h in enumerate(headers):
        t.add_column(h, no_wrap=True, justify="right" if i >= right_from else "left")
    return t


def balances_view(b: dict[str, Any]) -> Any:
    t = _table("asset", "free", "locked (in orders)", "total", f"value ({b['quote']})")
    for asset, free, locked, total, value in tables.balance_rows(b):
        t.add_row(Text(asset, style="bold"), free, locked, total, value)
    t.add_row(Text("all", style="bold"), "", "", "", Text(fmt.money(b["value"]), style="bold"))
    return Group(t, Text(""), Text("value: each asset at its last price in the quote currency", style="dim"))


def _period_table(label: str, rows: list[dict[str, Any]]) -> Any:
    if not rows:
        return Text(f"{label}: no closed trade yet", style="dim")
    t = _table(label, *tables.PERIOD_HEADERS)
    for r, cells in zip(rows, tables.period_rows(rows)):
        t.add_row(*cells[:3], signed(r["pnl"], cells[3]), *cells[4:])
    return t


def profit_view(p: dict[str, Any], wide: bool) -> Any:
    head = [Text(line) for line in tables.profit_lines(p)]
    parts = [_period_table(label, p[name]) for name, label in
             (("day", "day (UTC)"), ("week", "week"), ("month", "month"), ("symbol", "symbol"))]
    if wide:  # side by side: day | week, month | symbol
        grid = Table.grid(padding=(0, 4))
        grid.add_column()
        grid.add_column()
        grid.add_row(parts[0], parts[1])
        grid.add_row(Text(""), Text(""))
        grid.add_row(parts[2], parts[3])
        return Group(*head, Text(""), grid)
    body: list[Any] = [*head]
    for part in parts:
        body += [Text(""), part]
    return Group(*body)


def why_view(w: dict[str, Any]) -> Any:
    state = fmt.run_state(w["state"], w.get("ended"))
    head = Text.assemble("engine ", (state, "bold"), "   last entry sent ", fmt.iso_ms(w.get("last_entry_ts")),
                         "   newest bar ", fmt.iso_ms(w.get("market_ts")))
    hour, day = w["refused"]["hour"], w["refused"]["day"]
    codes = list(dict.fromkeys([*day, *hour]))
    if codes:
        t = _table("refused by", "last market hour", "last market day")
        for code in codes:
            t.add_row(Text(code, style="bold"), str(hour.get(code, 0)), str(day.get(code, 0)))
        refused: Any = t
    else:
        refused = Text("no order of the strategy refused in the last market day", style="dim")
    parts: list[Any] = [head, Text(""), refused, Text("")]
    if w["blocking"]:
        parts.append(Text("blocking entries now (and what lifts it):", style="bold"))
        for b in w["blocking"]:
            parts.append(Text.assemble((f"{b['gate']} ", "bold red"), b["now"]))
            parts.append(Text(f"    lifted by {b['lifts']}", style="italic"))
    else:
        parts.append(Text("nothing blocks entries now", style="green"))
    return Group(*parts)


HEALTH_STYLE = {"healthy": "bold black on green", "degraded": "bold black on yellow", "down": "bold white on red"}


def health_view(h: dict[str, Any], snap: dict[str, Any]) -> Any:
    status = str(h.get("status", "?"))
    # The trading state (RUNNING/PAUSED/HALTED) is kept when the engine's loop ends: said apart from whether the
    # engine runs at all, so a stopped engine never reads as "engine RUNNING".
    running = "engine stopped" not in (h.get("problems") or [])
    head = Text.assemble((f" {status.upper()} ", HEALTH_STYLE.get(status, "bold reverse")), "  ",
                         ("engine running" if running else ("engine STOPPED", "bold red")),
                         f"  trading state {snap.get('state')} ({snap.get('mode')})")
    # A line of its own: with the verdict it ran past an 80-column pane.
    about = Text(f"  version {snap.get('version', '?')}  up {fmt.duration(snap.get('uptime_s'))}", style="dim")
    parts: list[Any] = [head, about]
    for problem in h.get("problems") or []:
        parts.append(Text(f"  {problem}", style="bold red"))
    hold = snap.get("venue_hold")
    if hold:  # no failure of the exchange (the verdict leaves it out), but nothing is sent to it meanwhile
        asked = "no requests at all" if hold.get("holds") == "requests" else "no orders"
        parts.append(Text(f"  exchange hold: {hold.get('venue')} asked for {asked} before "
                          f"{fmt.iso(hold.get('until'))} (Retry-After); it lifts by itself then", style="bold yellow"))
    t = _table("", "", right_from=2)
    t.add_row("main loop", f"last turn {fmt.duration(h.get('loop_age_s'))} ago (limit {h.get('loop_stale_s')}s)")
    ages = h.get("bar_age_s") or {}
    for sym, age in ages.items():
        t.add_row(f"last candle {sym}", f"{fmt.duration(age)} ago (stale after {fmt.duration(h.get('data_stale_s'))})")
    for b in h.get("breakers") or []:
        st = str(b.get("state"))
        t.add_row(f"breaker {b.get('venue')}", Text(f"{st.upper()} ({b.get('failures', 0)} failures)",
                                                     style="green" if st == "closed" else "bold red"))
    rec = h.get("reconcile")
    # What holds it as `ffe ctl why` says it: an outage, an order in doubt or an order's lagging trades are nothing
    # to accept, and the accept command is named only where it lifts something.
    blocked = snap.get("reconcile_blocked") or []
    hint = accept_hint(blocked) if blocked else "`ffe ctl accept`"
    said = blocked_text(blocked) if blocked else f"{h.get('reconcile_differences')} unexplained difference(s)"
    t.add_row("reconcile", Text("ok" if rec == "ok" else said + (f": {hint}" if hint else ""),
                                style="green" if rec == "ok" else "bold red"))
    t.add_row("approvals pending", str(h.get("pending_approvals", 0)))
    t.add_row("market time", fmt.iso_ms(snap.get("market_ts")))
    # A long value (what holds reconciliation) wraps in its own column: the names beside it stay whole.
    t.columns[0].min_width = max(len(str(c)) for c in t.columns[0].cells)
    t.columns[1].no_wrap = False
    return Group(*parts, Text(""), t)
