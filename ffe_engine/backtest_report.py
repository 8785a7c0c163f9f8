"""A backtest's report: the figures of the run (ffe_engine/performance.py) as one JSON-ready dict, and the same
as the summary `ffe backtest` prints.

Times are UTC ISO strings (fmt.iso_ms) in both, never epoch milliseconds. The report is built from the trades,
the equity curve and the candles only, so it is the same at every record level.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from typing import Any

from . import fmt, performance
from .engine import Engine
from .entrylog import summary_lines as entry_lines
from .market.csvdata import CandleSeries
from .model import Side
from .portfolio import Portfolio

CURVE_POINTS = 2000  # the report's equity curve is thinned to about this many points
STOP_LEVELS = (("stop loss", "stop_loss"), ("take profit", "take_profit"))  # a held position's, when it has them
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def build_report(engine: Engine, series: dict[str, CandleSeries], timeframe_ms: int) -> dict[str, Any]:
    engine.close_books()
    pf = engine.portfolio
    curve = engine.equity_curve
    start = pf.starting_cash
    end = pf.equity()
    trades = engine.trades
    wins = sum(1 for t in trades if t.pnl > 0)
    figures = performance.curve_figures(curve, start, timeframe_ms)
    hold = performance.buy_and_hold(
        {s: (ser.ts, ser.close, ser.open[0] if len(ser) else 0.0) for s, ser in series.items()}, start, timeframe_ms)
    per_symbol = {s: performance.trade_table([t for t in trades if t.symbol == s], "symbol").get(s, empty_row())
                  for s in series}
    for s, row in per_symbol.items():
        row["buy_and_hold_pct"] = hold["per_symbol"].get(s, 0.0)
    return_pct = round(100.0 * (end / start - 1.0), 3) if start else 0.0
    step = max(1, len(curve) // CURVE_POINTS)
    return {
        "symbols": list(series),
        "bars": sum(len(s) for s in series.values()),
        "from": fmt.iso_ms(min(s.ts[0] for s in series.values() if len(s))) if curve else None,
        "to": fmt.iso_ms(max(s.ts[-1] for s in series.values() if len(s))) if curve else None,
        "trades": len(trades),
        "wins": wins,
        "win_rate_pct": round(100.0 * wins / len(trades), 2) if trades else 0.0,
        "start_equity": round(start, 2),
        "end_equity": round(end, 2),
        "return_pct": return_pct,
        "cagr_pct": figures["cagr_pct"],
        "max_drawdown_pct": figures["max_drawdown_pct"],
        "drawdown": figures["drawdown"],
        "sharpe": figures["sharpe"],
        "sortino": figures["sortino"],
        "calmar": figures["calmar"],
        "fees": round(pf.fees_paid, 4),  # four decimals, as every fee: a fee is often cents
        "end_cash": round(pf.cash, 2),
        # what is held at the end (the end equity is the cash and these at the last price)
        "held_at_end": held_report(pf),
        "buy_and_hold": {**hold, "strategy_minus_hold_pct": round(return_pct - hold["return_pct"], 3)},
        "per_symbol": per_symbol,
        # the per-symbol table's total: the closed trades and the positions held at the end together
        "per_symbol_total": {"trades": len(trades), "pnl": round(end - start, 2), "fees": round(pf.fees_paid, 4)},
        "exits_by_reason": performance.trade_table(trades, "reason"),
        "monthly_returns_pct": figures["returns_pct"]["monthly"],
        "yearly_returns_pct": figures["returns_pct"]["yearly"],
        "gate_refusals": dict(sorted(engine.refusals.items())),
        # providers that failed to vote (an endpoint that did not answer): how often, and the last reason
        "provider_failures": {name: {"count": n, "last_error": engine.ensemble.errors.get(name)}
                              for name, n in sorted(engine.ensemble.failures.items())},
        "open_positions": len(pf.positions),  # how many: `held_at_end` tells what they are
        "gaps": {s: gaps_report(ser) for s, ser in series.items()},
        # entries sent and refused by gate, the last entry, and since when none was sent
        "entries": engine.entries.report(trades[-1].closed_ts if trades else None),
        "skipped_rows": {s: {"count": ser.skipped, "first": list(ser.skip_reasons)}
                         for s, ser in series.items() if getattr(ser, "skipped", 0)},
        # the equity at each bar's close, at the close time
        "equity_curve": [[fmt.iso_ms(ts + timeframe_ms), round(eq, 2)] for ts, eq in _thinned(curve, step)],
        "results_sha256": results_digest(engine),
    }


def held_report(pf: Portfolio) -> list[dict[str, Any]]:
    """The positions held at the end, each valued at its symbol's last price, as the end equity values it. `pnl` is
    the unrealised P&L less the entry fees, as a closed trade's P&L is net of its fees: the closed trades' P&L and
    these add up to the change in equity, their fees and these entry fees to the fees paid."""
    out = []
    for symbol in sorted(pf.positions):
        pos = pf.positions[symbol]
        last = pf.last_price.get(symbol) or pos.entry_price
        sign = 1.0 if pos.side is Side.BUY else -1.0
        unrealised = sign * (last - pos.entry_price) * pos.quantity
        out.append({"symbol": symbol, "side": pos.side.value, "quantity": pos.quantity,
                    "entry_price": pos.entry_price, "opened": fmt.iso_ms(pos.opened_ts), "last_price": last,
                    "value": round(sign * pos.quantity * last, 2), "unrealised_pnl": round(unrealised, 2),
                    "entry_fees": round(pos.fees, 4), "pnl": round(unrealised - pos.fees, 2),
                    "stop_loss": pos.stop_loss, "take_profit": pos.take_profit})
    return out


def gaps_report(series: CandleSeries) -> dict[str, Any]:
    """A file's gaps: how many, the bars they leave out, and where the longest is (a gap of years, files of two
    periods joined, is data all the same, but it is told where it is)."""
    out: dict[str, Any] = {"count": series.gap_count, "missing_bars": series.missing_bars}
    longest = series.longest_gap
    if longest is not None:
        a, b = longest
        out["longest"] = {"missing_bars": (b - a) // series.timeframe_ms - 1, "after": fmt.iso_ms(a),
                          "next": fmt.iso_ms(b)}
    return out


def empty_row() -> dict[str, Any]:
    return {"trades": 0, "wins": 0, "win_rate_pct": 0.0, "pnl": 0.0, "fees": 0.0, "avg_return_pct": 0.0,
            "avg_hold_hours": 0.0}


def results_digest(engine: Engine) -> str:
    """A fingerprint of what the run did, exact to the last bit: every closed trade, the equity at every bar close
    and the provider weights at the end. Two runs with the same digest traded alike (at any record level). Order and
    decision ids are left out: each run numbers them under a prefix of its own."""
    h = hashlib.sha256()
    for t in engine.trades:
        h.update(f"{t.symbol},{t.side.value},{t.quantity.hex()},{t.entry_price.hex()},{t.exit_price.hex()},"
                 f"{t.pnl.hex()},{t.fees.hex()},{t.reason},{t.opened_ts},{t.closed_ts},{t.trade_id}\n".encode())
    # The equity curve, one (time, equity) per bar, as little-endian 64-bit integers and doubles: every bit, and
    # far quicker to hash than a line of text per bar.
    times = array("q", [ts for ts, _ in engine.equity_curve])
    equities = array("d", [eq for _, eq in engine.equity_curve])
    if sys.byteorder != "little":
        times.byteswap()
        equities.byteswap()
    h.update(len(times).to_bytes(8, "little"))
    h.update(times)
    h.update(equities)
    weights = engine.learner.weights if engine.learner is not None else {}
    for name in sorted(weights):
        h.update(f"{name},{float(weights[name]).hex()}\n".encode())
    return h.hexdigest()


def ratio_text(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, (int, float)) else "-"


def drawdown_lines(r: dict[str, Any]) -> list[str]:
    """The max drawdown, its peak and trough, and whether and when it recovered."""
    dd = r["drawdown"]
    if not dd["peak"]:
        return [f"  max drawdown  {fmt.pct(r['max_drawdown_pct'])}"]
    duration = fmt.duration(round(dd["duration_days"] * 86_400))
    longest = fmt.duration(round(dd["longest_days"] * 86_400))
    recovered = (f"{dd['recovered']}, {duration} after the peak" if dd["recovered"]
                 else f"no, {duration} under that peak by the end")
    return [f"  max drawdown  {fmt.pct(r['max_drawdown_pct'])}  peak {dd['peak']}, trough {dd['trough']}",
            f"  recovered     {recovered}; longest time under a peak {longest}"]


COLUMNS = (("trades", 6), ("win rate", 8), ("P&L", 12), ("fees", 10), ("avg ret", 8), ("avg hold", 8))


def table_lines(title: str, rows: dict[str, dict[str, Any]], extra: str | None = None,
                more: dict[str, list[str]] | None = None) -> list[str]:
    """A per-symbol or per-exit-reason table, one row each; then the rows of `more`, their cells already text."""
    cells = {name: row_cells(r, extra) for name, r in rows.items()} | (more or {})
    columns = COLUMNS + ((("buy&hold", 10),) if extra else ())
    width = max([len(title)] + [len(name) for name in cells])
    lines = [f"  {title:<{width}}" + "".join(f"  {head:>{w}}" for head, w in columns)]
    for name, row in cells.items():
        lines.append(f"  {name:<{width}}" + "".join(f"  {cell:>{w}}" for cell, (_, w) in zip(row, columns)))
    return lines


def row_cells(r: dict[str, Any], extra: str | None) -> list[str]:
    cells = [str(r["trades"]), fmt.pct(r["win_rate_pct"]), fmt.money(r["pnl"], signed=True), fmt.fee(r["fees"]),
             fmt.pct(r["avg_return_pct"], signed=True), fmt.duration(r["avg_hold_hours"] * 3600)]
    return cells + [fmt.pct(r[extra], signed=True)] if extra else cells


def symbol_table_lines(r: dict[str, Any]) -> list[str]:
    """The per-symbol table of the closed trades, a row per position held at the end (its P&L unrealised, net of
    its entry fees, as the closed trades' is of theirs) and the total of both, which is the change in equity and
    the fees paid: the rows add up to it."""
    more = {f"{p['symbol']} open": ["-", "-", fmt.money(p["pnl"], signed=True), fmt.fee(p["entry_fees"]), "-", "-",
                                    "-"] for p in r["held_at_end"]}
    total = r["per_symbol_total"]
    more["total"] = [str(total["trades"]), "", fmt.money(total["pnl"], signed=True), fmt.fee(total["fees"])]
    return table_lines("symbol", r["per_symbol"], extra="buy_and_hold_pct", more=more)


def held_lines(r: dict[str, Any]) -> list[str]:
    """A line per position held at the end (or `none`), and the end equity as the cash and what is held."""
    held = r["held_at_end"]
    if not held:
        return ["  held at end   none"]
    lines = []
    for p in held:
        levels = [f"{name} {fmt.price(p[key])}" for name, key in STOP_LEVELS if p[key] is not None]
        lines.append(f"  held at end   {p['symbol']} {fmt.qty(p['quantity'], 10)} "
                     f"{'bought' if p['side'] == 'buy' else 'sold'} at {fmt.price(p['entry_price'])} on "
                     f"{p['opened']}, last {fmt.price(p['last_price'])}: value {fmt.money(p['value'])}, unrealised "
                     f"{fmt.money(p['unrealised_pnl'], signed=True)}, entry fees {fmt.fee(p['entry_fees'])}"
                     + ("; " + ", ".join(levels) if levels else ""))
    value = sum(p["value"] for p in held)
    lines.append(f"  end cash      {fmt.money(r['end_cash'])} + {fmt.money(value)} held = "
                 f"{fmt.money(r['end_equity'])}")
    return lines


def month_lines(monthly: dict[str, float], yearly: dict[str, float]) -> list[str]:
    """Monthly returns, a row a year, a column a month, and the year's return last."""
    lines = ["  monthly returns (%, UTC months)",
             "  year " + "".join(f"{m:>7}" for m in MONTHS) + f"{'year':>8}"]
    for year, total in yearly.items():
        cells = "".join(f"{monthly[key]:>+7.2f}" if key in monthly else f"{'':>7}"
                        for key in (f"{year}-{i:02d}" for i in range(1, 13)))
        lines.append(f"  {year} {cells}{total:>+8.2f}")
    return lines


def format_summary(r: dict[str, Any]) -> str:
    hold = r["buy_and_hold"]
    lines = [
        f"backtest {r['run_id']}: {', '.join(r['symbols'])}",
        f"  period        {r.get('from') or '-'} -> {r.get('to') or '-'}",
        f"  bars          {fmt.number(r['bars'])}",
        f"  trades        {r['trades']} ({r['wins']} won, win rate {fmt.pct(r['win_rate_pct'])})",
        f"  return        {fmt.pct(r['return_pct'], signed=True)}  ({fmt.money(r['start_equity'])} -> "
        f"{fmt.money(r['end_equity'])}); CAGR {fmt.pct(r['cagr_pct'], signed=True)}",
        f"  buy and hold  {fmt.pct(hold['return_pct'], signed=True)} ("
        + ", ".join(f"{s} {fmt.pct(p, signed=True)}" for s, p in hold["per_symbol"].items())
        + f"; max drawdown {fmt.pct(hold['max_drawdown_pct'])}); strategy "
        f"{hold['strategy_minus_hold_pct']:+,.2f} points",
        *drawdown_lines(r),
        f"  sharpe        {ratio_text(r['sharpe'])}  (sortino {ratio_text(r['sortino'])}, "
        f"calmar {ratio_text(r['calmar'])})",
        f"  fees          {fmt.fee(r['fees'])}",
        *held_lines(r),
    ]
    lines += entry_lines(r["entries"])
    if r["provider_failures"]:
        lines.append("  providers     " + "; ".join(
            f"{name} failed {f['count']:,} times (last: {f['last_error']})"
            for name, f in r["provider_failures"].items()))
    for sym, gaps in r["gaps"].items():
        if gaps["count"]:
            text = (f"  gaps          {sym}: {fmt.counted(gaps['count'], 'gap')}, "
                    f"{fmt.counted(gaps['missing_bars'], 'missing bar')}")
            longest = gaps.get("longest")  # not in the reports of older versions
            if longest:
                text += (f" (the longest: {longest['missing_bars']:,} after {longest['after']}, next candle at "
                         f"{longest['next']})")
            lines.append(text)
    for sym, skipped in r["skipped_rows"].items():
        lines.append(f"  skipped rows  {sym}: {skipped['count']} ({'; '.join(skipped['first'])})")
    lines += [
        f"  speed         {r['bars_per_s'] or 0:,.0f} bars/s ({r['elapsed_s']:.2f} s)",
    ]
    if r.get("gate_refusals"):
        lines.append("  refused       " + ", ".join(f"{code} {n}" for code, n in r["gate_refusals"].items()))
    if r.get("database"):
        lines.append(f"  database      {fmt.printable(str(r['database']))}")
        if r.get("audit"):
            lines.append(f"  audit         {fmt.printable(str(r['audit']))}")
    else:
        lines.append(f"  records       {r.get('records', 'summary')}: the report only")
    lines.append("")
    lines += symbol_table_lines(r)
    if r["exits_by_reason"]:
        lines.append("")
        lines += table_lines("exit", r["exits_by_reason"])
    if r["yearly_returns_pct"]:
        lines.append("")
        lines += month_lines(r["monthly_returns_pct"], r["yearly_returns_pct"])
    return "\n".join(lines)


def _thinned(curve: list[tuple[int, float]], step: int) -> list[tuple[int, float]]:
    """Every `step`-th point of the curve, and its last (the run's end) whatever `step` divides."""
    points = curve[::step]
    if curve and (len(curve) - 1) % step:
        points.append(curve[-1])
    return points
