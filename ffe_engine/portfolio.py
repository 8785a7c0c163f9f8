"""The engine's own book: cash, positions, equity marks and the rolling inputs the risk gates measure.

Positions are built from fills only (never from what was asked for). Long-only spot: a sell fill reduces a long.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice, repeat
from operator import add, floordiv, mul, ne, sub, truediv
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

from .clock import DAY_MS
from .model import ClosedTrade, Fill, MarketInfo, Position, Side, floor_to_step

RATE_WINDOW_MS = 60_000  # ORDER_RATE counts the entries sent in this window
BULK_BARS = 8  # whole bars a stretch needs for them to be booked a column at a time (Portfolio.book_candles)
NO_DAY_YET = -1  # the day older books stored before their first bar (today's books always say their day)


def entry_day_of(created_ms: int) -> int:
    """The UTC day an entry journaled at `created_ms` (the clock's time) counted in for DAILY_TRADES, where its
    journal entry does not say it (`entry_day`, journaled since): one decided on a day's last bar is journaled at
    its close, midnight, and is that day's."""
    return (created_ms - 1) // DAY_MS


def _last(d: deque[float], n: int) -> list[float] | deque[float]:
    """The last n values of a return series, without copying it when that is all of it (the usual case once the
    window is full)."""
    return d if n >= len(d) else list(islice(d, len(d) - n, None))


def _quantile_pnl(confidence: float, weights: list[float], series: list[deque[float]], n: int) -> float:
    """The (k+1)-th smallest of the last n one-bar P&Ls (weight x return, summed over the exposures), k the tail
    the confidence leaves; sorting a few hundred floats in C is cheaper than heapq.nsmallest."""
    k = min(int(math.floor((1.0 - confidence) * n)), n - 1)
    if len(weights) == 1:  # the usual case: one position (or the entry alone); P&L is w x return
        (w,) = weights
        ranked = sorted(_last(series[0], n))
        return w * (ranked[k] if w > 0 else ranked[n - 1 - k])
    # Per bar, w x return summed over the exposures in their order, at C speed: the P&L is built as it is sorted,
    # not list by list.
    pnl: Iterator[float] | None = None
    for w, r in zip(weights, series):
        scaled = map(mul, repeat(w), _last(r, n))
        pnl = scaled if pnl is None else map(add, pnl, scaled)
    assert pnl is not None
    return sorted(pnl)[k]


def _largest_loss_pnl(weights: list[float], series: list[deque[float]], n: int) -> float:
    """A P&L no bar of the window falls below: each exposure's largest move of the window, up or down, against it at
    once (max and min compare in place; abs would make a float of every return)."""
    worst = 0.0
    for w, r in zip(weights, series):
        col = _last(r, n)
        worst += abs(w) * max(max(col), -min(col))
    return -worst


@dataclass(slots=True)
class FillResult:
    position: Position | None  # the position after the fill (None when it closed)
    opened: bool = False
    closed: ClosedTrade | None = None


class Portfolio:
    def __init__(self, starting_cash: float, *, returns_window: int = 250, amount_step: float = 1e-8) -> None:
        self.starting_cash = starting_cash
        self.cash = starting_cash
        # While the books are known to lack positions the cash already paid for (a restore's, until the exchange's
        # orders since the backup are recovered): their equity is no peak and no drawdown (close_bar).
        self.marks_held = False
        self.positions: dict[str, Position] = {}
        self.last_price: dict[str, float] = {}
        self.fees_paid = 0.0
        self.realised = 0.0
        self.peak_equity = starting_cash
        self.max_drawdown_pct = 0.0  # the deepest fall from a peak seen at a bar's close
        # The UTC day (days since the epoch) that the day's figures below are of: None until the books are opened
        # (Engine.start rolls it to the clock's day), then only ever later (roll_day).
        self.day: int | None = None
        self.day_start_equity = starting_cash
        self.day_realised = 0.0
        self.entries_today = 0
        self.dust = amount_step / 2
        # Per symbol, what the venue says of its orders: less than one amount step of a position (a fee taken in
        # coins leaves that much after an exit), or less than its minimum order value (a sell filled in part, the
        # rest expired), cannot be sold. It stays in the books, as in the account, but is not a position to trade
        # on (`holding`).
        self.markets: dict[str, MarketInfo] = {}
        # Coins the books' position in a symbol counts that the account does not hold (an accepted shortfall, from
        # reconciliation's baseline): never sold, and no part of a position to trade on.
        self.unbacked: dict[str, float] = {}
        # Per-symbol close-to-close returns and portfolio equity returns, for VaR and correlation.
        self.window = returns_window
        self.returns: dict[str, deque[float]] = {}
        # Each symbol's price as a candle of this process last marked it: what the returns are measured between.
        # Not last_price, which after a restart starts at the prices saved at the stop: the warm-up then replays bars
        # from before them, and a symbol without a candle in its first bar would take its price at the stop for the
        # close before it.
        self._closes: dict[str, float] = {}
        self._prev_close: dict[str, float] = {}
        self.order_times: deque[int] = deque()

    # ------------------------------------------------------------------ marks
    def mark(self, symbol: str, price: float) -> None:
        """`price` is `symbol`'s close now (a candle's): the books' last price and the returns' next close."""
        self.last_price[symbol] = price
        self._closes[symbol] = price
        pos = self.positions.get(symbol)
        if pos is not None:
            pos.last_price = price

    def record_returns(self) -> None:
        """After every symbol of a bar is marked: one return per symbol for the bar (0 for a symbol that had no
        candle). Recorded per bar, not per candle, so that the return series of all symbols end at the same bar:
        mid-bar, the symbols already marked would otherwise be one return ahead of the rest, and VaR and
        correlation would pair each symbol's returns with another's from the bar before. Only the symbols marked
        since the books were opened have returns, from their first bar marked on: a price loaded with the books is
        no close of the series."""
        for symbol, price in self._closes.items():
            prev = self._prev_close.get(symbol)
            if prev:
                r = self.returns.get(symbol)
                if r is None:
                    r = self.returns[symbol] = deque(maxlen=self.window)
                r.append(price / prev - 1.0)
            self._prev_close[symbol] = price

    def close_bar(self, returns: bool = True) -> float:
        """After every symbol of a bar is marked: record the bar's returns (unless `returns` is False: the bar is
        not the last of its period, see Engine.close_books) and update the peak."""
        if returns:
            self.record_returns()
        eq = self.equity()
        if self.marks_held:
            return eq
        if eq > self.peak_equity:
            self.peak_equity = eq
        dd = self._drawdown_at(eq)
        if dd > self.max_drawdown_pct:
            self.max_drawdown_pct = dd
        return eq

    def book_candles(self, symbols: list[str], series: list[Any], order: bytes, start: int, stop: int,
                     rows: list[int], bar_ts: int | None, timeframe_ms: int,
                     curve: list[tuple[int, float]] | None, aligned: bool = False) -> int:
        """Mark the candles `order[start:stop]` (symbol k's next candle at rows[k] of series[k], a CandleSeries) as
        the engine does one by one (Engine.on_candle): before the first candle of a later bar than `bar_ts`, the bar
        is closed (close_bar, with its returns at the end of a `timeframe_ms` period; its equity appended to `curve`
        when given) and the day rolled. For a stretch of a backtest in which no position changes
        (Engine._idle_stretch). `aligned`: the order gives every bar a candle of each symbol, in symbol order (the
        whole bars of a stretch that holds nothing are then booked a column at a time). Returns the time of the last
        bar marked; `rows` is advanced past the candles."""
        n = len(symbols)
        if aligned and not self.positions and stop - start >= BULK_BARS * n:
            first, last = -(-start // n), stop // n  # the stretch's whole bars
            bar_ts = self._book_each(symbols, series, order, start, first * n, rows, bar_ts, timeframe_ms, curve)
            if self._book_bars(symbols, series, rows, first, last, bar_ts, timeframe_ms, curve):
                start, bar_ts = last * n, series[0].ts[last - 1]
            else:
                start = first * n
        return self._book_each(symbols, series, order, start, stop, rows, bar_ts, timeframe_ms, curve)

    def _book_each(self, symbols: list[str], series: list[Any], order: bytes, start: int, stop: int,
                   rows: list[int], bar_ts: int | None, timeframe_ms: int,
                   curve: list[tuple[int, float]] | None) -> int:
        """book_candles, one candle at a time."""
        mark = self.mark
        closes = [s.close for s in series]
        times = [s.ts for s in series]
        for p in range(start, stop):
            k = order[p]
            i = rows[k]
            rows[k] = i + 1
            t = times[k][i]
            if t != bar_ts:
                if bar_ts is not None:
                    eq = self.close_bar(returns=t // timeframe_ms != bar_ts // timeframe_ms)  # a period ended
                    if curve is not None:
                        curve.append((bar_ts, eq))
                bar_ts = t
                if self.day is None or t // DAY_MS > self.day:
                    self.roll_day(t)
            mark(symbols[k], closes[k][i])
        assert bar_ts is not None
        return bar_ts

    def _book_bars(self, symbols: list[str], series: list[Any], rows: list[int], first: int, last: int,
                   bar_ts: int | None, timeframe_ms: int, curve: list[tuple[int, float]] | None) -> bool:
        """book_candles of the whole bars first..last-1 of aligned series (each symbol's candle j at row j), the
        books holding nothing and bar first-1 the bar in progress: the same figures, a column at a time (its
        equity the cash at every close, each symbol's returns the ratios of its closes). False, having done
        nothing, where that cannot tell them so: the symbols not all marked and closed before, a close of 0 (no
        return after it), or a bar that is not the next period's."""
        times = series[0].ts
        if (first < 1 or last - first < 1 or bar_ts != times[first - 1] or any(r != first for r in rows)
                or set(self._closes) != set(symbols)):
            return False
        prev_close, returns = self._prev_close, self.returns
        if not all(prev_close.get(s) and s in returns for s in symbols):
            return False
        tf = repeat(timeframe_ms)
        if not all(map(ne, map(floordiv, times[first:last], tf), map(floordiv, times[first - 1:last - 1], tf))):
            return False
        closed = [s.close[first - 1:last - 1] for s in series]  # each symbol's price at the bars' closes
        if any(0.0 in c for c in closed):
            return False
        for sym, c in zip(symbols, closed):
            before = [prev_close[sym], *c[:-1]]
            returns[sym].extend(map(sub, map(truediv, c, before), repeat(1.0)))
            prev_close[sym] = c[-1]
        eq = self.cash + 0
        if eq > self.peak_equity:
            self.peak_equity = eq
        dd = self._drawdown_at(eq)
        if dd > self.max_drawdown_pct:
            self.max_drawdown_pct = dd
        if curve is not None:
            curve.extend(zip(times[first - 1:last - 1], repeat(eq)))
        t = times[last - 1]
        if self.day is None or t // DAY_MS > self.day:
            self.roll_day(t)
        for sym, s in zip(symbols, series):
            self.mark(sym, s.close[last - 1])
        for k in range(len(rows)):
            rows[k] = last
        return True

    def begin_at_equity(self) -> None:
        """The peak and the day's start are the equity now: for books opened on an account that already holds
        money (a live start), whose history before ffe is no drawdown and no day's loss."""
        self.peak_equity = self.day_start_equity = self.equity()

    def take_cash(self, cash: float) -> None:
        """`cash` becomes the cash: what the account holds, as the operator accepted it (a deposit, a withdrawal, a
        difference the books cannot explain). No trade made or lost the difference: the peak and the day's start move
        with it, so that it is no gain, no drawdown and no day's loss (a withdrawal would otherwise pause the engine
        for a drawdown, and stay the deepest one in the records)."""
        moved = cash - self.cash
        self.cash = cash
        self.peak_equity += moved
        self.day_start_equity += moved

    def roll_day(self, ts_ms: int) -> bool:
        """When `ts_ms` is in a later UTC day than the day's figures (or they have none yet), a new day begins at
        the equity now. Never back to an earlier day: a candle that opened before a midnight the clock has already
        passed, or a clock set back, would otherwise begin the day again and forget its loss."""
        day = ts_ms // DAY_MS
        if self.day is not None and day <= self.day:
            return False
        self.day = day
        self.day_start_equity = self.equity()
        self.day_realised = 0.0
        self.entries_today = 0
        return True

    def holding(self, symbol: str) -> Position | None:
        """The position in `symbol` when it is one the venue can sell; None for none or dust."""
        pos = self.positions.get(symbol)
        if pos is None or self.is_dust(symbol):
            return None
        return pos

    def is_dust(self, symbol: str) -> bool:
        """Whether the books hold coins in `symbol` that the venue takes no order for: less than one amount step,
        or less than its minimum quantity or order value at the latest price."""
        return self.dust_at(symbol, self.last_price.get(symbol))

    def set_unbacked(self, unbacked: dict[str, float]) -> None:
        self.unbacked = unbacked

    def sellable(self, symbol: str) -> float:
        """What of the position in `symbol` the account holds to sell: the books' quantity less the unbacked."""
        pos = self.positions.get(symbol)
        if pos is None:
            return 0.0
        return pos.quantity - self.unbacked[symbol] if self.unbacked and symbol in self.unbacked else pos.quantity

    def dust_at(self, symbol: str, price: float | None) -> bool:
        """is_dust with `price` as the latest price (None: the entry price), before the books are marked with it (a
        backtest's idle stretch, Engine._idle_stretch)."""
        pos = self.positions.get(symbol)
        market = self.markets.get(symbol)
        if pos is None or market is None:
            return False
        sellable = floor_to_step(self.sellable(symbol), market.amount_step)
        return market.below_minimum(sellable, price or pos.entry_price)

    def held(self) -> int:
        """How many positions are held (dust left out)."""
        return len(self.held_symbols())

    def held_symbols(self) -> set[str]:
        """The symbols a position is held in (dust left out)."""
        return {s for s in self.positions if self.holding(s) is not None}

    # ------------------------------------------------------------------ measures
    def exposure(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        if pos is None:
            return 0.0
        return pos.quantity * (self.last_price.get(symbol) or pos.entry_price)

    def gross_exposure(self) -> float:
        return sum(self.exposure(s) for s in self.positions)

    def unrealised(self) -> float:
        total = 0.0
        for s, pos in self.positions.items():
            px = self.last_price.get(s) or pos.entry_price
            move = px - pos.entry_price if pos.side is Side.BUY else pos.entry_price - px
            total += move * pos.quantity
        return total

    def equity(self) -> float:
        if not self.positions:  # most bars of a run: nothing held (the sum below, of nothing, is 0)
            return self.cash + 0
        return self.cash + sum(
            (self.last_price.get(s) or p.entry_price) * p.quantity * (1 if p.side is Side.BUY else -1)
            for s, p in self.positions.items())

    def drawdown_pct(self) -> float:
        return self._drawdown_at(self.equity())

    def _drawdown_at(self, eq: float) -> float:
        return 0.0 if self.peak_equity <= 0 else max(0.0, 100.0 * (self.peak_equity - eq) / self.peak_equity)

    def day_pnl(self) -> float:
        return self.equity() - self.day_start_equity

    def day_loss_pct(self) -> float:
        """Today's loss (realised + unrealised since the start of the UTC day) as a percentage of start equity."""
        if self.day_start_equity <= 0:
            return 0.0
        return max(0.0, -100.0 * self.day_pnl() / self.day_start_equity)

    # ------------------------------------------------------------------ fills
    def apply_fill(self, f: Fill, *, decision_id: str | None = None, stop_loss: float | None = None,
                   take_profit: float | None = None, reason: str = "", client_order_id: str | None = None
                   ) -> FillResult:
        self.fees_paid += f.fee
        pos = self.positions.get(f.symbol)
        # A fee taken in the base asset is paid in kind: it leaves the cash alone and the position smaller.
        fee_in_cash = f.fee - f.fee_base_value
        if f.side is Side.BUY:
            self.cash -= f.quantity * f.price + fee_in_cash
            held = f.quantity - f.fee_base
            dust = dust_cost = dust_fees = 0.0
            continued = decision_id is not None and pos is not None and decision_id == pos.entry_decision_id
            if pos is not None and self.is_dust(f.symbol) and not continued:
                # Dust of an earlier position (not this entry's first part): a new one opens on this entry's
                # decision and stops, holding the dust too at its own cost (the entry price averages both, so the
                # closed trades' P&L add up to what the account made).
                dust, dust_cost, dust_fees = pos.quantity, pos.quantity * pos.entry_price, pos.fees
                pos = None
            if pos is None:
                total = held + dust
                entry = (f.price * held + dust_cost) / total if dust and total > 0 else f.price
                # Valued at the symbol's mark, as the equity values it: the fill's price is not a newer quote.
                pos = Position(symbol=f.symbol, side=Side.BUY, quantity=total, entry_price=entry,
                               opened_ts=f.ts, stop_loss=stop_loss, take_profit=take_profit,
                               entry_decision_id=decision_id, fees=f.fee + dust_fees,
                               last_price=self.last_price.get(f.symbol) or entry)
                self.positions[f.symbol] = pos
                return FillResult(pos, opened=True)
            total = pos.quantity + held
            pos.entry_price = (pos.entry_price * pos.quantity + f.price * held) / total
            pos.quantity = total
            pos.fees += f.fee
            if stop_loss is not None:
                pos.stop_loss = stop_loss
            if take_profit is not None:
                pos.take_profit = take_profit
            return FillResult(pos)
        # sell: reduces a long
        self.cash += f.quantity * f.price - fee_in_cash
        if pos is None:
            return FillResult(None)
        qty = min(f.quantity, pos.quantity)
        entry_fee_share = pos.fees * (qty / pos.quantity) if pos.quantity else 0.0
        pnl = (f.price - pos.entry_price) * qty - f.fee - entry_fee_share
        self.realised += pnl + f.fee + entry_fee_share  # realised price P&L; fees are already in cash
        self.day_realised += pnl
        pos.quantity -= min(pos.quantity, qty + f.fee_base)
        pos.fees -= entry_fee_share
        trade = ClosedTrade(symbol=f.symbol, side=pos.side, quantity=qty, entry_price=pos.entry_price,
                            exit_price=f.price, pnl=pnl, fees=f.fee + entry_fee_share, reason=reason,
                            opened_ts=pos.opened_ts, closed_ts=f.ts, entry_decision_id=pos.entry_decision_id,
                            exit_client_order_id=client_order_id)
        if pos.quantity <= self._residue(f.symbol):
            del self.positions[f.symbol]
            return FillResult(None, closed=trade)
        return FillResult(pos, closed=trade)

    def _residue(self, symbol: str) -> float:
        """What a position may be left with and be none: float residue, below half a step (the venue's, when finer
        than the books' own: its coins are then real, and the venue holds them)."""
        market = self.markets.get(symbol)
        return min(self.dust, market.amount_step / 2) if market is not None and market.amount_step > 0 else self.dust

    # ------------------------------------------------------------------ rolling statistics
    def note_order(self, ts_ms: int) -> None:
        self.order_times.append(ts_ms)

    def orders_in_last(self, now_ms: int, window_ms: int = RATE_WINDOW_MS) -> int:
        q = self.order_times
        while q and q[0] <= now_ms - window_ms:
            q.popleft()
        return len(q)

    def var_pct(self, confidence: float, extra: dict[str, float] | None = None, *, horizon_bars: float = 1.0,
                min_obs: int = 30, window: int | None = None) -> float | None:
        """Historical VaR over `horizon_bars` (square-root-of-time scaling of the 1-bar figure), as a percentage
        of equity, of the current positions plus `extra` (symbol -> added notional), from the joint window of
        symbol returns (at most `window` bars). None when the history is too short to measure."""
        return self._var(extra, horizon_bars, min_obs, window, partial(_quantile_pnl, confidence))

    def var_bound_pct(self, extra: dict[str, float] | None = None, *, horizon_bars: float = 1.0, min_obs: int = 30,
                      window: int | None = None) -> float | None:
        """At least what var_pct is, at any confidence, for the same arguments, and cheaper to tell: the loss if each
        exposure made its largest move of the window against the book at once (with a margin for rounding far above
        the few ulps var_pct's arithmetic can differ by). None where var_pct is None."""
        var = self._var(extra, horizon_bars, min_obs, window, _largest_loss_pnl)
        return None if var is None else var * (1.0 + 1e-9)

    def _var(self, extra: dict[str, float] | None, horizon_bars: float, min_obs: int, window: int | None,
             worst_pnl: Callable[[list[float], list[deque[float]], int], float]) -> float | None:
        """The loss `worst_pnl` finds among the one-bar P&Ls of the exposures (current positions plus `extra`, none
        zero; their return series; the bars of their joint window), scaled to `horizon_bars`, as a percentage of
        equity; None when the history is too short to measure."""
        exposures = {s: self.exposure(s) for s in self.positions}
        for s, notional in (extra or {}).items():
            exposures[s] = exposures.get(s, 0.0) + notional
        exposures = {s: v for s, v in exposures.items() if v}
        eq = self.equity()
        if not exposures:
            return 0.0
        series = [self.returns.get(s) for s in exposures]
        if any(r is None or len(r) < min_obs for r in series) or eq <= 0:
            return None
        n = min(len(r) for r in series)  # type: ignore[arg-type]
        if window is not None:
            n = min(n, window)
        worst = worst_pnl(list(exposures.values()), series, n)  # type: ignore[arg-type]
        loss = -worst * math.sqrt(horizon_bars)
        return max(0.0, 100.0 * loss / eq)

    def correlation(self, a: str, b: str, min_obs: int = 30, window: int | None = None) -> float | None:
        ra, rb = self.returns.get(a), self.returns.get(b)
        if ra is None or rb is None:
            return None
        n = min(len(ra), len(rb))
        if window is not None:
            n = min(n, window)
        if n < min_obs:
            return None
        xa, xb = _last(ra, n), _last(rb, n)
        ma, mb = sum(xa) / n, sum(xb) / n
        # The deviations, their products and squares at C speed: the same operations (x - m, their product, ** 2)
        # summed in the same order, so the same figure to the last bit.
        da = list(map(sub, xa, repeat(ma)))
        db = list(map(sub, xb, repeat(mb)))
        cov: float = sum(map(mul, da, db))
        va: float = sum(map(pow, da, repeat(2)))
        vb: float = sum(map(pow, db, repeat(2)))
        if va <= 0 or vb <= 0:
            return None
        return cov / math.sqrt(va * vb)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        out = {"cash": self.cash, "peak_equity": self.peak_equity, "max_drawdown_pct": self.max_drawdown_pct,
               "day_start_equity": self.day_start_equity, "day_realised": self.day_realised,
               "entries_today": self.entries_today, "fees_paid": self.fees_paid, "realised": self.realised,
               "last_price": self.last_price}
        if self.day is not None:
            out["day"] = self.day
        return out

    def load(self, state: dict[str, Any], positions: list[Position], now_ms: int) -> None:
        """The books stored by `state` (none: {}), at `now_ms` by the engine's clock."""
        cash = state.get("cash")
        if cash is not None:  # null: a live account's cash not yet taken from the venue (Engine._books_state)
            self.cash = cash
        self.peak_equity = state.get("peak_equity", self.peak_equity)
        self.max_drawdown_pct = state.get("max_drawdown_pct", 0.0)
        day = state.get("day")
        if state and (day is None or day == NO_DAY_YET):
            # Books that do not say which day their figures are of (stored by an older ffe, which wrote -1 until
            # its first bar) are taken as today's: a loss in them still counts, until the next UTC midnight.
            day = now_ms // DAY_MS
        self.day = day
        self.day_start_equity = state.get("day_start_equity", self.day_start_equity)
        self.day_realised = state.get("day_realised", 0.0)
        self.entries_today = state.get("entries_today", 0)
        self.fees_paid = state.get("fees_paid", 0.0)
        self.realised = state.get("realised", 0.0)
        self.last_price.update(state.get("last_price", {}))
        self.positions = {p.symbol: p for p in positions}
        for p in positions:
            p.last_price = self.last_price.get(p.symbol) or p.entry_price
