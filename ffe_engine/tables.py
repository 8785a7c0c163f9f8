"""The operator's views as plain-text tables, for `ffe ctl` (the console draws the same data in its own panes).

Every figure goes through fmt, so a balance or a P&L reads the same in the console and here.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from . import fmt


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] = ()) -> str:
    """Columns padded to their widest cell; numbers (right=True) aligned right. A cell's control characters are
    shown escaped: an order's reason or error is words from outside."""
    rows = [[fmt.printable(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    align = list(right) + [False] * (len(headers) - len(right))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if a else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def order_status(o: dict[str, Any]) -> str:
    """An order's status as shown: with `trades behind` while the venue shows it filled beyond the trades it lists
    (the books hold its fill once they are listed; reconciliation's differences meanwhile are nothing to accept)."""
    return f"{o['status']}, trades behind" if o.get("trades_behind") else str(o["status"])


def order_rows(orders: list[dict[str, Any]]) -> list[list[str]]:
    return [[o["client_order_id"], o["symbol"], o["side"], fmt.qty(o["quantity"]), fmt.qty(o.get("filled")),
             o.get("type") or "market", fmt.price(o.get("price")), order_status(o), o["reason"],
             fmt.duration(o.get("age_s"))] for o in orders]


ORDER_HEADERS = ("order", "symbol", "side", "qty", "filled", "type", "price", "status", "reason", "age")


def orders(result: dict[str, Any]) -> str:
    rows = order_rows(result["orders"])
    return table(ORDER_HEADERS, rows, (False, False, False, True, True, False, True)) if rows else "no open order"


def position_age(p: dict[str, Any]) -> float | None:
    """A position's age in seconds, as the engine computed it (Engine.snapshot), None when it cannot say."""
    age = p.get("age_s")
    return None if age is None else float(age)


def position_id(p: dict[str, Any]) -> str:
    """A position's trade id as shown: the decision that opened it, or, for one no decision opened (an operator's
    order, an order taken in by reconciliation), the time it opened to the millisecond, which is what tells one
    position of a symbol from the next (the engine's close checks it)."""
    return str(p.get("id") or f"at {fmt.time_ms(p.get('opened_ts'))}")


def side_text(p: dict[str, Any]) -> str:
    """A position's side, or `dust` for coins the venue takes no order for (not a position)."""
    return "dust" if p.get("dust") else ("long" if p["side"] == "buy" else "short")


def dust_left(symbol: str, quantity: float, value: float) -> str:
    """Why dust is not closed: said alike by the engine's refusal and by the console, which refuses its close key on
    a dust row without asking the engine (no dialog offers to sell what no order can)."""
    coin = symbol.partition("/")[0]
    return (f"{symbol}: the {fmt.qty(quantity)} {coin} left (worth {value:.2f}) is below the venue's minimum order: "
            "left as dust")


def exit_prices(p: dict[str, Any]) -> tuple[str, str]:
    """A position's stop-loss and take-profit as shown: none for dust, for which no exit is watched."""
    if p.get("dust"):
        return "-", "-"
    return fmt.price(p.get("stop_loss")), fmt.price(p.get("take_profit"))


TRADE_HEADERS = ("id", "symbol", "side", "qty", "entry", "now", "%", "P&L", "age", "SL", "TP")


def trade_rows(positions: list[dict[str, Any]]) -> list[list[str]]:
    return [[position_id(p), p["symbol"], side_text(p), fmt.qty(p["quantity"]),
             fmt.price(p["entry"]), fmt.price(p["last"]), fmt.pct(p.get("pnl_pct"), signed=True),
             fmt.money(p.get("unrealised"), signed=True), fmt.duration(position_age(p)),
             *exit_prices(p)] for p in positions]


def trades(result: dict[str, Any]) -> str:
    rows = trade_rows(result["positions"])
    return table(TRADE_HEADERS, rows, (False, False, False) + (True,) * 8) if rows else "no open trade"


BALANCE_HEADERS = ("asset", "free", "locked", "total", "value")


def balance_rows(result: dict[str, Any]) -> list[list[str]]:
    """The quote currency's amounts as money, to the cent its value is said to; a coin's to ten significant digits
    (an exchange keeps eight decimals): each row's free and locked add up to its total as shown."""
    def amount(asset: str, x: Any) -> str:
        return fmt.money(x) if asset == result["quote"] else fmt.qty(x, 10)

    return [[b["asset"], *(amount(b["asset"], b[k]) for k in ("free", "locked", "total")), fmt.money(b["value"])]
            for b in result["assets"]]


def balances(result: dict[str, Any]) -> str:
    rows = balance_rows(result)
    rows.append(["all", "", "", "", fmt.money(result["value"])])
    return table(BALANCE_HEADERS[:-1] + (f"value ({result['quote']})",), rows, (False, True, True, True, True))


PERIOD_HEADERS = ("trades", "win %", "P&L", "fees", "mean time")
# Said instead of the equity while the cash in memory may count a recovered fill twice (Engine.cash_unreconciled).
CASH_UNRECONCILED = "the cash is the exchange's balance, not yet reconciled"


def period_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[str(r["key"]), str(r["trades"]), fmt.pct(r["win_rate"]), fmt.money(r["pnl"], signed=True),
             fmt.fee(r["fees"]), fmt.duration(r["avg_duration_s"])] for r in rows]


def profit_lines(p: dict[str, Any]) -> list[str]:
    """The headline figures of the profit view, one per line."""
    q = p["quote"]
    return [
        f"realised {fmt.money(p['realised'], signed=True)} {q}   unrealised {fmt.money(p['unrealised'], signed=True)}"
        f" {q}   fees {fmt.fee(p['fees'])} {q}",
        f"trades {p['trades']}   won {p['wins']} ({fmt.pct(p['win_rate'])})   mean time "
        f"{fmt.duration(p['avg_duration_s'])}   best {fmt.money(p['best'], signed=True)}   worst "
        f"{fmt.money(p['worst'], signed=True)}",
        f"drawdown now {fmt.pct(p['drawdown_pct'])}   deepest {fmt.pct(p['max_drawdown_pct'])}   equity "
        f"{fmt.money(p['equity'])} {q}" if not p.get("cash_unreconciled") else
        f"drawdown now -   deepest {fmt.pct(p['max_drawdown_pct'])}   equity -: {CASH_UNRECONCILED}",
    ]


def profit(p: dict[str, Any]) -> str:
    out = profit_lines(p)
    for name, label in (("day", "day (UTC)"), ("week", "week"), ("month", "month"), ("symbol", "symbol")):
        rows = period_rows(p[name])
        out += ["", table((label,) + PERIOD_HEADERS, rows, (False,) + (True,) * 5) if rows
                else f"{label}: no closed trade"]
    return "\n".join(out)


def refusal_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in counts.items()) or "none"


def why(w: dict[str, Any]) -> str:
    state = fmt.run_state(w["state"], w.get("ended"))
    # The newest bar by its opening time, as the status line shows it; an entry is sent at a bar's close.
    out = [f"engine {state}   last entry sent {fmt.iso_ms(w.get('last_entry_ts'))}   newest bar "
           f"{fmt.iso_ms(w.get('market_ts'))}",
           f"refused in the last market hour: {refusal_text(w['refused']['hour'])}",
           f"refused in the last market day:  {refusal_text(w['refused']['day'])}"]
    if w["blocking"]:
        out.append("blocking entries now:")
        out += [f"  {b['gate']}: {b['now']}; lifted by {b['lifts']}" for b in w["blocking"]]
    else:
        out.append("nothing blocks entries now")
    return "\n".join(map(fmt.printable, out))


def cancelled(r: dict[str, Any]) -> str:
    if r.get("cancelled"):
        note = f"; {r['reason']}" if r.get("reason") else ""  # its last fill not recorded yet, say
        return (f"cancelled {r['client_order_id']} ({r['symbol']}; filled before the cancel {fmt.qty(r['filled'])}"
                f"{note})")
    return f"{r['client_order_id']} not cancelled: {r.get('reason') or r.get('status')}"


def closed(r: dict[str, Any]) -> str:
    if r.get("under_way"):  # answered before the exchange (or another control under way) let it end
        order = f"order {r['client_order_id']} " if r.get("client_order_id") else ""
        return f"closing {r['symbol']}: {order}{r['under_way']}"
    if r.get("accepted") and r.get("ended"):  # its order ended in its own answer, the position not all sold
        return (f"close {r['symbol']} not done: its order {r.get('client_order_id')} {r['ended']}; the position "
                "stays open: close it again, or on the exchange" + entries_said(r))
    if r.get("accepted") and r.get("in_doubt"):  # as a flatten's closing order in doubt is said
        return (f"closing {r['symbol']}: order {r.get('client_order_id')} in doubt: the answer was lost, the position "
                "is held until the exchange says: check the exchange")
    if r.get("accepted"):
        return f"closing {r['symbol']}: order {r.get('client_order_id')}" + entries_said(r)
    return f"close {r['symbol']} refused: {r.get('reason')}" + entries_said(r)


def entries_said(r: dict[str, Any]) -> str:
    """The entries of the symbol a close cancelled first (or found filled), and those in doubt it cancels once the
    exchange shows them."""
    said = ""
    if r.get("cancelled"):
        said += f"; its entry {', '.join(r['cancelled'])} cancelled first"
    if r.get("filled"):
        said += f"; its entry {', '.join(r['filled'])} had filled: sold with the rest"
    if r.get("entries_in_doubt"):
        said += (f"; its entry {', '.join(r['entries_in_doubt'])} is in doubt: cancelled once the exchange shows it, "
                 "what it bought then closed by another close")
    return said


RENDER: dict[str, Callable[[Any], str]] = {"orders": orders, "trades": trades, "balances": balances,
                                           "profit": profit, "why": why, "cancel": cancelled, "close": closed}
