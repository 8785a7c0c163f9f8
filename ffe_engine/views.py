"""What the operator's views show beyond the snapshot: balances per asset, profit, why no entries are made.

Plain data, computed here from the engine's books and the store's queries, so the console, `ffe ctl` and an
attached console (through api.py) show the same figures. Times are market time (the engine's clock): a paper
"day" is a market day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import fmt
from .clock import DAY_MS, utc_day
from .entrylog import refusal_code
from .fmt import iso, iso_ms
from .model import EngineState, Side
from .outage import outage, outage_only
from .reconcile import (OWN_COINS_COMMAND, blocked_text, coins_gone, hand_sale_command, in_doubt_only,
                        lagging_trades, own_coins_may_have_left, unexplained)
from .risk import open_symbols

if TYPE_CHECKING:
    from .engine import Engine

HOUR_MS = 3_600_000
DUST = 1e-9


# ==================================================================== balances
def locked_by_orders(orders: list[Any], prices: dict[str, float], quote: str) -> dict[str, float]:
    """What the open orders hold back, per asset: a buy its quote at its price, a sell its base asset. For a real
    venue whose balance answer does not say what is locked."""
    locked: dict[str, float] = {}
    for o in orders:
        left = max(0.0, o.quantity - o.filled)
        base, _, q = o.symbol.partition("/")
        if o.side is Side.BUY:
            px = o.price or prices.get(o.symbol) or 0.0
            locked[q or quote] = locked.get(q or quote, 0.0) + left * px
        else:
            locked[base] = locked.get(base, 0.0) + left
    return locked


def balance_rows(totals: dict[str, float], locked: dict[str, float], prices: dict[str, float],
                 quote: str) -> dict[str, Any]:
    """Per asset: free, locked (in orders), total, and the total's value in the quote currency (at the last price;
    None where the engine has no price for it). The quote currency first."""
    rows = []
    for asset in sorted(set(totals) | set(locked), key=lambda a: (a != quote, a)):
        total = totals.get(asset, 0.0)
        held = min(locked.get(asset, 0.0), max(total, 0.0))
        if held < DUST:  # what releasing a reservation leaves of float arithmetic: nothing is held
            held = 0.0
        price = 1.0 if asset == quote else prices.get(f"{asset}/{quote}")
        rows.append({"asset": asset, "free": total - held, "locked": held, "total": total,
                     "value": None if price is None else total * price})
    return {"quote": quote, "assets": rows, "value": sum(r["value"] or 0.0 for r in rows)}


# ==================================================================== profit
def _row(r: dict[str, Any]) -> dict[str, Any]:
    n = r["trades"]
    return {"key": r["key"], "trades": n, "wins": r["wins"], "win_rate": 100.0 * r["wins"] / n if n else None,
            "pnl": r["pnl"], "fees": r["fees"],
            "avg_duration_s": None if r["avg_duration_ms"] is None else r["avg_duration_ms"] / 1000.0,
            "best": r["best"], "worst": r["worst"]}


async def profit(engine: "Engine", periods: int = 7) -> dict[str, Any]:
    """Realised (closed trades, net of fees) and unrealised P&L, the tables by day, week, month and symbol, win
    rate, mean trade duration, fees, drawdown now and the deepest so far."""
    store = engine.store
    pf = engine.portfolio
    total = await store.trade_stats(None)
    overall = _row(total[0]) if total else _row({"key": "all", "trades": 0, "wins": 0, "pnl": 0.0, "fees": 0.0,
                                                  "avg_duration_ms": None, "best": None, "worst": None})
    open_fees = sum(p.fees for p in pf.positions.values())
    # While the cash in memory may count a recovered fill twice (Engine.cash_unreconciled), the equity and the
    # drawdown now are unknown (None), and the deepest is the one stored.
    unknown = engine.cash_unreconciled()
    return {
        "quote": engine.settings.venue.quote,
        "realised": overall["pnl"],
        "unrealised": pf.unrealised(),
        "equity": None if unknown else pf.equity(),
        "cash_unreconciled": unknown,
        "starting_cash": pf.starting_cash,
        "trades": overall["trades"],
        "wins": overall["wins"],
        "win_rate": overall["win_rate"],
        "avg_duration_s": overall["avg_duration_s"],
        "best": overall["best"],
        "worst": overall["worst"],
        "fees": overall["fees"] + open_fees,  # the open positions' entry fees are paid already
        "drawdown_pct": None if unknown else pf.drawdown_pct(),
        "max_drawdown_pct": pf.max_drawdown_pct if unknown else max(pf.max_drawdown_pct, pf.drawdown_pct()),
        "day": [_row(r) for r in await store.trade_stats("day", periods)],
        "week": [_row(r) for r in await store.trade_stats("week", periods)],
        "month": [_row(r) for r in await store.trade_stats("month", periods)],
        "symbol": [_row(r) for r in await store.trade_stats("symbol", 50)],
    }


# ==================================================================== why no trades
def blocking(engine: "Engine", now_ms: int) -> list[dict[str, str]]:
    """What refuses new entries right now and what lifts it: the engine state, a breached drawdown or daily loss
    (each paused the engine when it happened), the day's trade count, full positions, trades waiting for approval
    (a new entry in their symbol waits for them), market data gone stale (no candle past its limit), an open
    breaker, the exchange's Retry-After while it lasts, and reconciliation differences; or a run that has ended."""
    out: list[dict[str, str]] = []
    r = engine.settings.risk
    pf = engine.portfolio
    state = engine.state
    ended = engine.ended()
    if ended is not None:  # a console's engine whose run has ended: nothing of it trades any more
        out.append({"gate": "ENGINE_STATE", "now": f"STOPPED ({ended}), was {state.value}",
                    "lifts": "start it again (`ffe run`): it starts in the state it was left in"})
    elif state is EngineState.HALTED:
        out.append({"gate": "ENGINE_STATE", "now": f"HALTED ({engine.state_reason})",
                    "lifts": "re-arm: resume with confirmation (the pause key, then y; `ffe ctl resume --yes`)"})
    elif state is EngineState.PAUSED:
        # A resume is refused while reconciliation holds the engine (whatever paused it): said so beside it.
        held = ", once reconciliation's hold (below) has lifted" if engine.reconcile_blocked else ""
        out.append({"gate": "ENGINE_STATE", "now": f"PAUSED ({engine.state_reason})",
                    "lifts": f"resume (the pause key; `ffe ctl resume`){held}"})
    dd = pf.drawdown_pct()
    if dd > r.max_drawdown_pct:
        floor = pf.peak_equity * (1.0 - r.max_drawdown_pct / 100.0)
        # As many decimals as it takes to show it over the limit: "0.01% > 0.01%" said nothing.
        out.append({"gate": "DRAWDOWN", "now": f"{fmt.beyond(dd, r.max_drawdown_pct)}% > {r.max_drawdown_pct:g}% "
                                               f"below the peak {pf.peak_equity:,.2f}",
                    "lifts": (f"equity back above {floor:,.2f} (held positions recovering); it does not re-arm "
                              "with time") if pf.held() else
                             ("a higher risk.max_drawdown_pct (the configuration, then a restart): nothing is held "
                              f"that could bring equity back above {floor:,.2f}, and it does not re-arm with time")})
    next_day = (utc_day(now_ms) + 1) * DAY_MS
    dl = pf.day_loss_pct()
    if dl > r.daily_loss_limit_pct:
        out.append({"gate": "DAILY_LOSS", "now": f"{fmt.beyond(dl, r.daily_loss_limit_pct)}% > "
                                                 f"{r.daily_loss_limit_pct:g}% of the day's start",
                    "lifts": f"the next UTC day of market time, {iso_ms(next_day)}"})
    if pf.entries_today >= r.max_daily_trades:
        out.append({"gate": "DAILY_TRADES", "now": f"{pf.entries_today} entries today, limit {r.max_daily_trades}",
                    "lifts": f"the next UTC day of market time, {iso_ms(next_day)}"})
    open_now = len(open_symbols(pf.held_symbols(), engine.orders.entries_in_flight()))
    if open_now >= r.max_open_positions:
        out.append({"gate": "MAX_OPEN_POSITIONS", "now": f"{open_now} open, limit {r.max_open_positions}",
                    "lifts": "a position closing (stop-loss, take-profit, a sell signal, or the close key)"})
    waiting = engine.approvals.summary()
    if waiting:
        held = ", ".join(f"{a['symbol']} {a['side']} ({a['approval_id']}, "
                         + ("being approved: its order is on the wire)" if a.get("approving")
                            else f"{a['expires_in']:.0f}s left)") for a in waiting)
        out.append({"gate": "AWAITING_APPROVAL",
                    "now": f"{len(waiting)} trade(s) waiting for approval; a new entry in their symbol waits: {held}",
                    "lifts": "approve or reject each (the approve and reject keys; `ffe ctl approve|reject ID`), or "
                             "its expiry"})
    late = {sym: age for sym in engine.symbols
            if (age := engine.gatekeeper.data_age(sym)) is not None and age > r.stale_after_bars}
    if late:
        out.append({"gate": "DATA_STALE",
                    "now": ", ".join(f"{sym} {age:.3g} bars late" for sym, age in late.items())
                           + f" (limit {r.stale_after_bars}): no candle has come since",
                    "lifts": "a new candle from the market (the feed: the status line's market time, the "
                             "STALE_DATA alert)"})
    b = engine.breaker.summary()
    if b.get("state") != "closed":
        retry = b.get("retry_in")
        out.append({"gate": "BREAKER_OPEN", "now": f"{b.get('venue')} {b.get('state')}: {b.get('last_error')}",
                    "lifts": "a successful probe" + (f" in {retry:.0f}s" if retry is not None else "")})
    hold = engine.venue_hold()
    if hold is not None:
        until = iso(hold["until"])
        asked = ("no requests at all (candles, order lookups, cancels, orders)" if hold["holds"] == "requests"
                 else "no orders")
        out.append({"gate": "VENUE_HOLD",
                    "now": f"{hold['venue']} asked for {asked} before {until} (Retry-After); none is sent before then",
                    "lifts": f"itself at {until}: nothing to do, orders go to the exchange again then"})
    if engine.reconcile_blocked:
        # What an order whose trades lag explains is nothing to accept, nor coins gone (a sell's fill): it goes once
        # the exchange lists the trades. Only the rest is looked into.
        lagging = lagging_trades(engine.reconcile_blocked)
        rest = unexplained(engine.reconcile_blocked)
        # A position or the cash seen differing for the first time since: what an accept refuses until confirmed.
        seen_once = [d for d in engine.reconcile_unconfirmed if d.get("kind") in ("position", "cash")]
        gone = coins_gone(rest)
        either = own_coins_may_have_left(rest)
        listed = (f"the exchange listing the trades of order {', '.join(lagging)}: its fill is booked then "
                  "(`ffe ctl orders` shows it `trades behind` until then)")
        if outage_only(engine.reconcile_blocked):
            lifts = outage(engine.reconcile_blocked).lifts
        elif in_doubt_only(engine.reconcile_blocked):
            lifts = ("the order settling at the venue, or, if the exchange lost it, `ffe ctl settle ID filled|"
                     "canceled` as its account shows it (then accept what still differs); then resume")
        elif gone and set(gone) == set(either):
            lifts = ("coins left the account, which still holds the books' position: if they were your own "
                     f"(withdrawn, sold), {OWN_COINS_COMMAND} lowers the baseline by them and keeps the position; if "
                     "the position's were sold on the exchange by hand, book each sale ("
                     + ", ".join(map(hand_sale_command, gone)) + "), then accept what still differs; then resume")
        elif gone:
            lifts = ("coins the books hold left the account: if they were sold on the exchange by hand, book each "
                     "sale (" + ", ".join(map(hand_sale_command, gone))
                     + "), else put them back; then accept what still differs (`ffe ctl accept`) and resume")
        elif lagging and not rest:
            lifts = (f"{listed} and the differences go by themselves, nothing to accept (an accept is refused "
                     "meanwhile); then resume")
        elif seen_once:
            # Seen once since (coins arriving): an accept takes only what was shown, and is refused until then.
            lifts = (f"a second look at what it has just seen ({blocked_text(seen_once)}), the "
                     "settle window later (exchange.settle_window_ms); then accept what it shows (`ffe ctl accept`; "
                     "refused until then), then resume")
        else:
            lifts = "accept them (`ffe ctl accept`), then resume"
        if lagging and rest:
            lifts = f"first {listed}, as the accept is refused until the trades are listed; then {lifts}"
        out.append({"gate": "RECONCILE", "now": blocked_text(engine.reconcile_blocked), "lifts": lifts})
    return out


async def why(engine: "Engine") -> dict[str, Any]:
    """Why no trades: the strategy's refused orders by gate over the last market hour and day, what blocks entries
    now and what lifts it, and when the last entry was sent."""
    # The newest bar's time, as the status line shows it (the clock itself is at that bar's close).
    now = max(engine.last_bar_ts.values()) if engine.last_bar_ts else engine.clock.now_ms()
    windows: dict[str, dict[str, int]] = {}
    for name, span in (("hour", HOUR_MS), ("day", DAY_MS)):
        counts: dict[str, int] = {}
        for outcome, head, n in await engine.store.refusals_since(now - span):
            code = refusal_code(outcome, head or "")
            counts[code] = counts.get(code, 0) + n
        windows[name] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return {"market_ts": now, "refused": windows, "blocking": blocking(engine, now),
            "last_entry_ts": await engine.store.last_entry_ts(), "state": engine.state.value,
            "ended": engine.ended()}
