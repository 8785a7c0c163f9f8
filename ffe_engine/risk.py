"""The gatekeeper (ordered risk gates) and position sizing.

Every gate is evaluated, in the docs/gates.md order, and recorded (code, measured value, limit, passed); the first
failure is the reason shown. Entries face every gate. Exits and flatten orders (reduce-only) face only
ENGINE_STATE and BREAKER_OPEN: a risk limit must never stop the engine from getting out.

A gate whose input cannot be measured fails closed in live mode (detail INPUT_MISSING); in paper mode it passes
with the same detail recorded, so a fresh paper run can trade while its history fills.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .clock import DAY_MS
from .config import RiskSettings
from .model import GateResult, OrderReason, Side, floor_to_step
from .portfolio import Portfolio

if TYPE_CHECKING:
    from .trading_state import TradingState

INPUT_MISSING = "INPUT_MISSING"
SIZE_HEADROOM = 0.99

GATE_ORDER = ("ENGINE_STATE", "BREAKER_OPEN", "DATA_STALE", "MIN_CONFIDENCE", "MAX_OPEN_POSITIONS", "POSITION_SIZE",
              "CONCENTRATION", "LEVERAGE", "DRAWDOWN", "DAILY_LOSS", "VAR", "CORRELATION", "ORDER_RATE",
              "DAILY_TRADES")


@dataclass(slots=True)
class OrderIntent:
    """What a caller (strategy, operator, monitor, flatten, reconciliation) asks the order path to do."""

    symbol: str
    side: Side
    quantity: float
    reason: OrderReason
    decision_id: str | None = None
    confidence: float | None = None  # the ensemble's confidence; None for orders no decision produced
    ref_price: float | None = None  # the price the order was sized at
    type: str = "market"
    price: float | None = None
    reduce_only: bool = False
    stop_loss: float | None = None
    take_profit: float | None = None
    # Who asked for the order: the `by` of the control request (an operator's order, close, approve or flatten);
    # "" for the engine's own (the strategy, a stop, a follow-up). Journaled with it and said in each of its events.
    by: str = ""

    @property
    def is_entry(self) -> bool:
        return not self.reduce_only

    def as_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "side": self.side.value, "quantity": self.quantity,
                "reason": self.reason.value, "decision_id": self.decision_id, "confidence": self.confidence,
                "ref_price": self.ref_price, "type": self.type, "price": self.price,
                "reduce_only": self.reduce_only, "stop_loss": self.stop_loss, "take_profit": self.take_profit,
                **({"by": self.by} if self.by else {})}  # the engine's own orders (a backtest's) name nobody

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OrderIntent":
        return cls(symbol=d["symbol"], side=Side(d["side"]), quantity=d["quantity"], reason=OrderReason(d["reason"]),
                   decision_id=d.get("decision_id"), confidence=d.get("confidence"), ref_price=d.get("ref_price"),
                   type=d.get("type", "market"), price=d.get("price"), reduce_only=d.get("reduce_only", False),
                   stop_loss=d.get("stop_loss"), take_profit=d.get("take_profit"),
                   by=d.get("by") or "")  # journaled before who asked was recorded: nobody named


@dataclass(frozen=True, slots=True)
class EntryInFlight:
    """An entry sent and not done yet: the quantity of it that may still fill. The gates count it as held, since
    it becomes a position at the venue's word, which no later order waits for."""

    symbol: str
    side: Side
    quantity: float


def open_symbols(held: set[str], flight: list[EntryInFlight]) -> set[str]:
    """The symbols MAX_OPEN_POSITIONS counts as positions: those held and those an entry in flight may open."""
    return held | {e.symbol for e in flight}


def first_failure(gates: list[GateResult]) -> GateResult | None:
    for g in gates:
        if not g.passed:
            return g
    return None


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def _shown(x: float, limit: float, nd: int = 4) -> float:
    """`x` rounded to `nd` decimals for the record, or to as many more as keep it on its own side of `limit` (below,
    on or above it): a refusal that reads "value=0.55 limit=0.55" says nothing of why."""
    side = (x > limit) - (x < limit)
    for digits in range(nd, 16):
        shown = round(x, digits)
        if (shown > limit) - (shown < limit) == side:
            return shown
    return x


class Gatekeeper:
    def __init__(self, risk: RiskSettings, portfolio: Portfolio, *, trading: "TradingState",
                 breaker_allows: Callable[[], bool], now_ms: Callable[[], int],
                 last_bar_ts: Callable[[str], int | None],
                 entries_in_flight: Callable[[], list[EntryInFlight]],
                 timeframe_ms: int, live: bool) -> None:
        self.risk = risk
        self.pf = portfolio
        self.trading = trading
        self.breaker_allows = breaker_allows
        self.now_ms = now_ms
        self.last_bar_ts = last_bar_ts
        self.entries_in_flight = entries_in_flight
        self.timeframe_ms = timeframe_ms
        self.live = live
        self.bars_per_day = max(1.0, DAY_MS / timeframe_ms)
        # Failed checks by gate, whoever asked (the strategy, an approval's re-check, the operator, an exit): every
        # caller's gates are evaluated here, so this is the one count of denials (GET /metrics reads it).
        self.denials: dict[str, int] = dict.fromkeys(GATE_ORDER, 0)

    def _missing(self, code: str, limit: Any) -> GateResult:
        return GateResult(code, None, limit, not self.live, INPUT_MISSING)

    def data_age(self, symbol: str) -> float | None:
        """DATA_STALE's figure: how many bars late the symbol's newest closed bar is (0 while it is current), on the
        engine's clock; None before its first bar."""
        last = self.last_bar_ts(symbol)
        if last is None:
            return None
        # `last` is the open time of the newest closed bar; it is current while now < its close + 1 bar.
        return max(0.0, (self.now_ms() - last - self.timeframe_ms) / self.timeframe_ms)

    def evaluate(self, it: OrderIntent, *, until_refused: bool = False) -> list[GateResult]:
        """The gates of `it`, in GATE_ORDER. With `until_refused`, the gates after the first that refuses are not
        measured, nor VAR when a bound of it passes (Portfolio.var_bound_pct): for a caller that keeps no more of a
        refusal than which gate made it and why, and nothing of a passing gate but that it passed (a backtest without
        decision records). The verdict and the first refusal are the same either way."""
        gates = []
        for g in self._gates(it, bounded=until_refused):
            gates.append(g)
            if not g.passed:
                self.denials[g.code] += 1
                if until_refused:
                    break
        return gates

    def _gates(self, it: OrderIntent, bounded: bool = False) -> Iterator[GateResult]:
        """Each gate in turn, measured when it is reached. With `bounded`, VAR is not measured when a bound of it
        already passes (for a caller that keeps no passing gate's figure)."""
        yield self.trading.allows(it)
        yield GateResult("BREAKER_OPEN", "allows" if self.breaker_allows() else "open", "closed or probe",
                         self.breaker_allows())
        if it.reduce_only:
            return
        r = self.risk
        pf = self.pf
        price = it.ref_price or pf.last_price.get(it.symbol)
        equity = pf.equity()

        age = self.data_age(it.symbol)
        if age is None:
            yield self._missing("DATA_STALE", r.stale_after_bars)
        else:
            yield GateResult("DATA_STALE", _shown(age, r.stale_after_bars, 2), r.stale_after_bars,
                             age <= r.stale_after_bars)

        conf = it.confidence
        if conf is None:
            if it.reason is OrderReason.OPERATOR:  # the operator is the judgement; recorded as such
                yield GateResult("MIN_CONFIDENCE", None, r.min_confidence, True, "operator order")
            else:
                yield self._missing("MIN_CONFIDENCE", r.min_confidence)
        else:
            yield GateResult("MIN_CONFIDENCE", _shown(conf, r.min_confidence), r.min_confidence,
                             conf >= r.min_confidence)

        flight = self.entries_in_flight()
        # Positions are symbols: those held, those an entry in flight may open, and this order's. An entry resting
        # part-filled, or an order in a symbol held, opens no second one.
        positions = len(open_symbols(pf.held_symbols(), flight) | {it.symbol})
        yield GateResult("MAX_OPEN_POSITIONS", positions, r.max_open_positions, positions <= r.max_open_positions)

        pending = self._valued(flight, it.symbol, price)
        if price is None or price <= 0 or equity <= 0 or pending is None:
            for code, limit in (("POSITION_SIZE", r.max_position_pct), ("CONCENTRATION", r.max_concentration_pct),
                                ("LEVERAGE", r.max_leverage)):
                yield self._missing(code, limit)
            notional = None
        else:
            notional = it.quantity * price
            size_pct = 100.0 * notional / equity
            yield GateResult("POSITION_SIZE", _shown(size_pct, r.max_position_pct), r.max_position_pct,
                             size_pct <= r.max_position_pct)
            conc = 100.0 * (pf.exposure(it.symbol) + abs(pending.get(it.symbol, 0.0)) + notional) / equity
            yield GateResult("CONCENTRATION", _shown(conc, r.max_concentration_pct), r.max_concentration_pct,
                             conc <= r.max_concentration_pct)
            lev = (pf.gross_exposure() + sum(map(abs, pending.values())) + notional) / equity
            # Within 1e-9 of the limit is at it (the arithmetic of an entry sized to the limit): shown as it.
            shown = _r(lev) if abs(lev - r.max_leverage) <= 1e-9 else _shown(lev, r.max_leverage)
            yield GateResult("LEVERAGE", shown, r.max_leverage, lev <= r.max_leverage + 1e-9)

        dd = pf.drawdown_pct()
        yield GateResult("DRAWDOWN", _shown(dd, r.max_drawdown_pct), r.max_drawdown_pct, dd <= r.max_drawdown_pct)
        dl = pf.day_loss_pct()
        yield GateResult("DAILY_LOSS", _shown(dl, r.daily_loss_limit_pct), r.daily_loss_limit_pct,
                         dl <= r.daily_loss_limit_pct)

        if notional is None or pending is None:
            yield self._missing("VAR", r.max_var_pct)
        else:
            extra = dict(pending)
            extra[it.symbol] = extra.get(it.symbol, 0.0) + (notional if it.side is Side.BUY else -notional)
            bound = pf.var_bound_pct(extra, horizon_bars=self.bars_per_day, window=r.var_window) if bounded else None
            if bound is not None and bound <= r.max_var_pct:
                yield GateResult("VAR", None, r.max_var_pct, True, f"at most {_r(bound)}: not measured")
            else:
                var = pf.var_pct(r.var_confidence, extra, horizon_bars=self.bars_per_day, window=r.var_window)
                if var is None:
                    yield self._missing("VAR", r.max_var_pct)
                else:
                    yield GateResult("VAR", _shown(var, r.max_var_pct), r.max_var_pct, var <= r.max_var_pct)

        yield self._correlation(it, flight)

        rate = pf.orders_in_last(self.now_ms())
        yield GateResult("ORDER_RATE", rate, r.max_orders_per_minute, rate < r.max_orders_per_minute)
        yield GateResult("DAILY_TRADES", pf.entries_today, r.max_daily_trades,
                         pf.entries_today < r.max_daily_trades)

    def _valued(self, flight: list[EntryInFlight], symbol: str, price: float | None) -> dict[str, float] | None:
        """The entries in flight as signed notionals by symbol, at the last prices (`price` for `symbol`); None when
        one cannot be valued."""
        out: dict[str, float] = {}
        for e in flight:
            px = price if e.symbol == symbol else self.pf.last_price.get(e.symbol)
            if px is None or px <= 0:
                return None
            v = e.quantity * px
            out[e.symbol] = out.get(e.symbol, 0.0) + (v if e.side is Side.BUY else -v)
        return out

    def _correlation(self, it: OrderIntent, flight: list[EntryInFlight]) -> GateResult:
        limit = self.risk.max_correlation
        others = [s for s, p in self.pf.positions.items()
                  if s != it.symbol and p.side is it.side and self.pf.holding(s) is not None]
        others += sorted({e.symbol for e in flight if e.symbol != it.symbol and e.side is it.side} - set(others))
        if not others:
            return GateResult("CORRELATION", 0.0, limit, True, "no open same-direction position")
        worst: float | None = None
        worst_sym = ""
        unmeasured: list[str] = []
        for sym in others:
            c = self.pf.correlation(it.symbol, sym, window=self.risk.correlation_window)
            if c is None:
                unmeasured.append(sym)
            elif worst is None or c > worst:
                worst, worst_sym = c, sym
        # One measured over the limit refuses, whatever could not be measured beside it.
        if worst is not None and (worst > limit or not unmeasured):
            return GateResult("CORRELATION", _shown(worst, limit), limit, worst <= limit, f"with {worst_sym}")
        return GateResult("CORRELATION", None, limit, not self.live, f"{INPUT_MISSING}: {', '.join(unmeasured)}")


def size_entry(risk: RiskSettings, *, equity: float, cash: float, price: float, atr: float | None, fee_rate: float,
               amount_step: float, slippage: float = 0.0) -> tuple[float, dict[str, Any]]:
    """quantity = equity x risk_per_trade_pct / stop distance, capped by POSITION_SIZE and by the cash a spot
    account has (`cash`: what the entries in flight leave of it), at the price a market buy is expected to pay
    (`slippage`: the paper venue's), rounded down to the venue's step. Returns (quantity, the sizing record)."""
    if not atr or atr <= 0 or price <= 0 or equity <= 0:
        return 0.0, {"error": INPUT_MISSING, "atr": atr, "price": price}
    stop_distance = risk.stop_loss_atr * atr
    raw = equity * risk.risk_per_trade_pct / 100.0 / stop_distance
    # 1% below the POSITION_SIZE limit: an order sized at the limit itself would fail the gate on the first
    # tick up before it is sent or approved.
    cap_size = equity * risk.max_position_pct * SIZE_HEADROOM / 100.0 / price
    cap_cash = max(0.0, cash) / (price * (1.0 + slippage) * (1.0 + fee_rate) * 1.001)
    qty = min(raw, cap_size, cap_cash)
    capped = "risk" if qty == raw else ("position_size" if qty == cap_size else "cash")
    qty = floor_to_step(qty, amount_step)
    # The levels are the position's own, unrounded: a fixed number of decimals would put them at 0 for a coin priced
    # far below a cent. The ATR and distance are kept whole too, so the quantity can be recomputed from the record.
    return qty, {"equity": round(equity, 2), "atr": atr, "stop_distance": stop_distance,
                 "risk_pct": risk.risk_per_trade_pct, "raw_qty": raw, "capped_by": capped, "quantity": qty,
                 "stop_loss": price - stop_distance, "take_profit": price + risk.take_profit_atr * atr}
