"""The engine: one loop over closed candles, and the operator's control surface.

Per bar: venue sees the candle (paper fills) -> in-flight orders polled -> marks -> stop-loss / take-profit ->
indicators -> votes -> ensemble -> sizing -> gates -> approval or the single order path -> decision recorded.

Control surface (the console and `ffe ctl` use only these): pause, resume, halt, flatten, approve, reject,
set_approval_mode, accept_reconcile, operator_order, snapshot. Engine state changes are stored durably before the
call returns, and the engine starts in the state it was left in.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from .breaker import CircuitBreaker
from .ensemble import Ensemble, is_async_provider
from .errors import ControlError
from .events import (ApprovalEvent, BarEvent, DecisionMade, EngineStateChanged, ErrorEvent, EventBus,
                     KillSwitchEvent, PositionClosed, PositionOpened, ReconcileEvent, RunEvent, WeightsChanged)
from .execution import CancelReport, OrderPath, side_to_close
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from .feedback import WeightLearner
from .indicators import IndicatorSet
from .model import (Action, Candle, ClosedTrade, Decision, EngineState, Fill, Order, OrderReason, Side)
from .portfolio import Portfolio
from .reconcile import accept as accept_differences
from .reconcile import reconcile_and_hold
from .risk import Gatekeeper, OrderIntent, first_failure, size_entry
from .signals import close_providers
from .store import FillRecord, Store

log = structlog.get_logger("ffe.engine")


@dataclass(slots=True)
class EngineOptions:
    live: bool = False
    backtest: bool = False
    flush_every: int = 1  # bars between store/audit flushes
    approval: str = "auto"
    approval_ttl_s: float = 120.0
    adaptive: bool = True
    start_state: EngineState = EngineState.RUNNING  # for a fresh database
    max_bars: int | None = None  # stop by itself after this many bars per symbol


class Engine:
    def __init__(self, settings, *, feed, venue, store: Store, bus: EventBus, clock, providers: list,
                 ensemble: Ensemble, learner: WeightLearner | None, audit=None, options: EngineOptions | None = None,
                 timeframe_ms: int = 60_000) -> None:
        self.settings = settings
        self.opts = options or EngineOptions()
        self.feed = feed
        self.venue = venue
        self.store = store
        self.bus = bus
        self.clock = clock
        self.providers = providers
        self.async_providers = any(is_async_provider(p) for p in providers)
        self.ensemble = ensemble
        self.learner = learner
        self.audit = audit
        self.timeframe_ms = timeframe_ms
        self.symbols = list(settings.engine.symbols)
        self.mode = "LIVE" if self.opts.live else "PAPER"
        self.state = self.opts.start_state
        self.state_reason = "start"
        self.approval_mode = self.opts.approval
        risk = settings.risk
        self.portfolio = Portfolio(settings.venue.starting_cash, returns_window=max(risk.var_window,
                                                                                   risk.correlation_window))
        self.breaker = CircuitBreaker(venue.name, settings.breaker.failure_threshold,
                                      settings.breaker.recovery_timeout_s, now=self._breaker_now, bus=bus)
        self.last_bar_ts: dict[str, int] = {}
        self.gatekeeper = Gatekeeper(risk, self.portfolio, state=lambda: self.state,
                                     breaker_allows=self.breaker.allows, now_ms=clock.now_ms,
                                     last_bar_ts=self.last_bar_ts.get, pending_entries=self._pending_entries,
                                     timeframe_ms=timeframe_ms, live=self.opts.live)
        self.orders = OrderPath(store=store, venue=venue, breaker=self.breaker, gatekeeper=self.gatekeeper, bus=bus,
                                now_ms=clock.now_ms, state=lambda: self.state, on_fill=self._on_fill,
                                settle_s=getattr(venue, "settle_s", 0.0),
                                cancel_timeout_s=settings.engine.cancel_timeout_s)
        self.ind = {s: IndicatorSet(s) for s in self.symbols}
        self._venue_on_candle = getattr(venue, "on_candle", None)  # an in-process venue fills on market data
        self.fee_rate = settings.venue.fee_bps / 10_000.0
        self.last_decision: dict[str, Decision] = {}
        self.pending: dict[str, dict[str, Any]] = {}  # approval id -> approval row
        self.entry_votes: dict[str, dict[str, str]] = {}  # decision id -> {provider: action} for open trades
        self.bars = 0
        self.bars_by_symbol: dict[str, int] = {s: 0 for s in self.symbols}
        self.equity_curve: list[tuple[int, float]] = []
        self.trades: list[ClosedTrade] = []
        self.reconcile_blocked: list[dict] = []
        self._bar_ts: int | None = None
        self._since_flush = 0
        self._stop = asyncio.Event()
        self._dd_breached = False
        self._learner_dirty = False
        self._dl_breached = False
        self._id_prefix = uuid.uuid4().hex[:6]
        self._id_n = 0
        self._control_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self.started = False
        self.stopped = False
        self.crashed: BaseException | None = None

    # ================================================================== helpers
    def _breaker_now(self) -> float:
        # The breaker's recovery timeout is in real seconds, except in a backtest where it follows market time.
        return self.clock.now_ms() / 1000.0 if self.opts.backtest else time.monotonic()

    def _pending_entries(self) -> int:
        return self.orders.pending_entries()

    def _new_id(self, prefix: str) -> str:
        self._id_n += 1
        return f"{prefix}{self._id_prefix}{self._id_n:06d}"

    # ================================================================== lifecycle
    async def start(self) -> None:
        """Restore the state the engine was left in, recover orders in flight, then warm the indicators."""
        self.bus.seq = max(self.bus.seq, await self.store.last_seq())
        row = await self.store.get_engine_state()
        if row is None:
            await self._set_state(self.opts.start_state, "fresh start", "engine", force=True)
        else:
            self.state = EngineState(row[0])
            self.state_reason = row[1]
            if self.opts.live and self.opts.start_state is EngineState.PAUSED and self.state is EngineState.RUNNING:
                # A live engine waits for the operator after every start, not only the first.
                await self._set_state(EngineState.PAUSED, "live start", "engine")
        mode = await self.store.get_kv("approval_mode")
        if mode in ("auto", "manual") and not self.opts.backtest:
            self.approval_mode = mode
        positions = await self.store.positions()
        self.portfolio.load(await self.store.get_kv("portfolio", {}), positions)
        # Cash is what the fills say it is: the starting cash plus every sale less every purchase and every fee
        # paid in cash (a fee taken in coins is not).
        rows = await self.store.query("SELECT side, SUM(quantity * price), SUM(fee - fee_base * price) FROM fills "
                                      "GROUP BY side")
        if rows:
            flows = {r[0]: (r[1] or 0.0, r[2] or 0.0) for r in rows}
            bought, buy_fees = flows.get("buy", (0.0, 0.0))
            sold, sell_fees = flows.get("sell", (0.0, 0.0))
            self.portfolio.cash = self.settings.venue.starting_cash - bought + sold - buy_fees - sell_fees
        # A breach that was there before the restart already paused the engine, or the operator resumed it since:
        # it is not a new breach, and does not pause the engine again.
        risk = self.settings.risk
        self._dd_breached = self.portfolio.drawdown_pct() > risk.max_drawdown_pct
        self._dl_breached = self.portfolio.day_loss_pct() > risk.daily_loss_limit_pct
        venue_state = await self.store.get_kv("paper_venue") if hasattr(self.venue, "load") else None
        if venue_state:
            self.venue.load(venue_state)
        await self._load_weights()
        for p in positions:
            if p.entry_decision_id:
                self.entry_votes[p.entry_decision_id] = await self._decision_votes(p.entry_decision_id)
        for row in await self.store.approvals("pending"):
            self.pending[row["approval_id"]] = row
        await self.venue.connect()
        if self._venue_on_candle is None and not self.opts.backtest:
            # A real account: its cash is what the venue holds in the quote currency.
            balances = await self.venue.fetch_balance()
            self.portfolio.cash = balances.get(self.settings.venue.quote, 0.0)
        recovered = await self.orders.recover()
        self.bus.publish(RunEvent(phase="start", mode=self.mode, detail={
            "state": self.state.value, "approval": self.approval_mode, "recovered_orders": len(recovered),
            "positions": len(positions), "pid": os.getpid(), "backtest": self.opts.backtest}))
        if not self.opts.backtest:
            # Before any new order: the journal against the venue (orders in flight, fills while down, positions).
            await reconcile_and_hold(self)
        await self._expire_approvals()
        history = getattr(self.feed, "history", None)
        if history is not None and self.settings.engine.warmup_bars > 0:
            bar_ts = None
            warmup = await _maybe_await(history(self.settings.engine.warmup_bars))
            if isinstance(warmup, dict):  # per symbol (the exchange feed): into one time order
                warmup = sorted((c for candles in warmup.values() for c in candles), key=lambda c: c.ts)
            for c in warmup:
                if bar_ts is not None and c.ts != bar_ts:
                    self.portfolio.record_returns()  # the history's returns feed VaR and correlation
                bar_ts = c.ts
                self.ind[c.symbol].update(c)
                self.portfolio.mark(c.symbol, c.close)
                if hasattr(self.venue, "set_price"):
                    self.venue.set_price(c.symbol, c.close)
            if bar_ts is not None:
                self.portfolio.record_returns()
        self.started = True
        await self.flush()
        log.info("engine started", mode=self.mode, state=self.state.value, approval=self.approval_mode,
                 symbols=",".join(self.symbols))

    async def _load_weights(self) -> None:
        saved = await self.store.get_kv("weights")
        if saved and self.learner is not None:
            self.learner.load(saved.get("weights", {}), saved.get("stats", {}))
            if self.opts.adaptive:
                self.ensemble.set_weights(self.learner.weights)

    async def _decision_votes(self, decision_id: str) -> dict[str, str]:
        rows = await self.store.query("SELECT provider, action FROM votes WHERE decision_id = ? AND failed = 0",
                                      (decision_id,))
        return {r[0]: r[1] for r in rows}

    async def run(self) -> None:
        """Consume the feed until it ends or a stop is requested."""
        if not self.started:
            await self.start()
        if not self.opts.backtest:
            self._tasks.append(asyncio.create_task(self._housekeeping(), name="ffe-housekeeping"))
        try:
            if self.opts.backtest:
                # A backtest never waits for its feed: take the candles synchronously.
                on_candle, stop = self.on_candle, self._stop
                for c in self.feed.iter_candles():
                    await on_candle(c)
                    if stop.is_set():
                        break
            else:
                await self._run_paced()
        except Exception as exc:
            self.crashed = exc
            self.bus.publish(ErrorEvent(message=f"{type(exc).__name__}: {exc}", where="engine loop"))
            log.error("engine loop failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            await self.stop()

    async def _run_paced(self) -> None:
        it = self.feed.candles().__aiter__()
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                nxt = asyncio.ensure_future(it.__anext__())
                done, _ = await asyncio.wait({nxt, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    break
                try:
                    c = nxt.result()
                except StopAsyncIteration:
                    break
                await self.on_candle(c)
        finally:
            stop_wait.cancel()

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        """Orderly stop: state and books stored, nothing cancelled (the engine starts in the state it was left in)."""
        if self.stopped:
            return
        self.stopped = True
        self._stop.set()
        if self._tasks:
            # Housekeeping ends after its current round: cancelled, it could lose a journal write half done (an
            # order resolved in memory, not yet in the database). Forced after engine.stop_timeout_s.
            await asyncio.wait(self._tasks, timeout=self.settings.engine.stop_timeout_s)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self._persist_books()
            self.bus.publish(RunEvent(phase="stop", mode=self.mode, detail={
                "state": self.state.value, "bars": self.bars, "equity": round(self.portfolio.equity(), 2)}))
            await self.flush()
        finally:
            try:
                await close_providers(self.providers)
                await self.venue.close()
            finally:
                close = getattr(self.feed, "close", None)
                if close is not None:
                    await close()
        log.info("engine stopped", state=self.state.value, bars=self.bars)

    async def flush(self) -> None:
        await self.store.flush()
        if self.audit is not None:
            self.audit.flush()
        self._since_flush = 0

    async def _persist_books(self) -> None:
        await self.store.put_kv("portfolio", self.portfolio.state(), time.time())
        await self._save_venue()
        await self._save_learner()

    async def _save_venue(self) -> None:
        """The paper venue's book is the in-process exchange's own state; a backtest is never resumed."""
        if getattr(self.venue, "dirty", False) and not self.opts.backtest:
            await self.store.put_kv("paper_venue", self.venue.state(), time.time())
            self.venue.dirty = False

    async def _housekeeping(self) -> None:
        """Work that goes on between bars: orders in flight, approval expiry, periodic reconciliation."""
        poll_s = self.settings.engine.order_poll_s
        reconcile_s = self.settings.engine.reconcile_interval_s
        next_poll = next_reconcile = time.monotonic()
        next_reconcile += reconcile_s
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), min(1.0, poll_s))
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self._expire_approvals()
                now = time.monotonic()
                if self.orders.live and self._venue_on_candle is None and now >= next_poll:
                    next_poll = now + poll_s
                    await self.orders.poll()
                if now >= next_reconcile:
                    next_reconcile = now + reconcile_s
                    await reconcile_and_hold(self)
                await self._breaker_pause()
                await self._persist_books()
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # housekeeping must keep going; the failure is recorded
                self.bus.publish(ErrorEvent(message=f"{type(exc).__name__}: {exc}", where="housekeeping"))

    # ================================================================== the bar
    async def on_candle(self, c: Candle) -> None:
        sym = c.symbol
        if self._bar_ts is not None and c.ts != self._bar_ts:
            self._close_bar()
        self._bar_ts = c.ts
        self.last_bar_ts[sym] = c.ts
        self.bars += 1
        self.bars_by_symbol[sym] = self.bars_by_symbol.get(sym, 0) + 1
        pf = self.portfolio
        if pf.roll_day(c.ts) and not self.opts.backtest:
            self._dl_breached = False
        if self._venue_on_candle is not None:
            self._venue_on_candle(c)
        if self.orders.live:
            await self.orders.poll()
        pf.mark(sym, c.close)
        pos = pf.positions.get(sym)
        if pos is not None:
            await self._monitor(c, pos)
        ind = self.ind[sym]
        ind.update(c)
        if ind.warm:
            if self.async_providers:
                votes, failed = await self.ensemble.gather(self.providers, ind)
            else:
                votes, failed = self.ensemble.collect_sync(self.providers, ind)
            res = self.ensemble.decide(votes, failed)
            d = Decision(decision_id=self._new_id("d"), symbol=sym, ts=c.ts, price=c.close, ensemble=res)
            if res.action is Action.HOLD:  # most bars: nothing to act on
                d.outcome = "hold"
            else:
                await self._act(d, c, ind)
            self._record_decision(d)
        if self.opts.max_bars is not None and min(self.bars_by_symbol.values()) >= self.opts.max_bars:
            self._stop.set()
        if self.opts.backtest:
            self._since_flush += 1
            if self._since_flush >= self.opts.flush_every:
                await self._persist_books()
                await self.flush()
                # The bar loop never waits otherwise: give the loop a turn, so a ^C (a cancel) lands here.
                await asyncio.sleep(0)
        else:
            self.bus.publish(BarEvent(symbol=sym, bar_ts=c.ts, close=c.close, equity=pf.equity()))
            await self._risk_pauses()
            await self._breaker_pause()
            await self._persist_books()
            await self.flush()

    def _close_bar(self) -> None:
        eq = self.portfolio.close_bar()
        if self.opts.backtest:
            self.equity_curve.append((self._bar_ts or 0, eq))

    async def _breaker_pause(self) -> None:
        """An open breaker pauses the engine (entries would be refused anyway; the operator resumes)."""
        if self.breaker.state == "open" and self.state is EngineState.RUNNING:
            await self._set_state(EngineState.PAUSED, f"breaker open on {self.breaker.venue}: "
                                                      f"{self.breaker.last_error}", "breaker")

    async def _risk_pauses(self) -> None:
        """A DRAWDOWN or DAILY_LOSS breach pauses the engine once, when it happens."""
        r = self.settings.risk
        pf = self.portfolio
        dd = pf.drawdown_pct()
        breached = dd > r.max_drawdown_pct
        if breached and not self._dd_breached and self.state is EngineState.RUNNING:
            await self._set_state(EngineState.PAUSED, f"DRAWDOWN {dd:.2f}% > {r.max_drawdown_pct}%", "risk")
        self._dd_breached = breached
        dl = pf.day_loss_pct()
        breached = dl > r.daily_loss_limit_pct
        if breached and not self._dl_breached and self.state is EngineState.RUNNING:
            await self._set_state(EngineState.PAUSED, f"DAILY_LOSS {dl:.2f}% > {r.daily_loss_limit_pct}%", "risk")
        self._dl_breached = breached

    async def _monitor(self, c: Candle, pos) -> None:
        """Stop-loss and take-profit on the bar's range: an exit order through the single path.
        HALTED means cancels only: the kill switch leaves positions to the operator (flatten)."""
        if self.state is EngineState.HALTED or self.orders.pending_exit_qty(c.symbol) > 0:
            return
        reason = None
        if pos.stop_loss is not None and c.low <= pos.stop_loss:
            reason, ref = OrderReason.STOP_LOSS, pos.stop_loss
        elif pos.take_profit is not None and c.high >= pos.take_profit:
            reason, ref = OrderReason.TAKE_PROFIT, pos.take_profit
        if reason is None:
            return
        await self.orders.submit(OrderIntent(symbol=c.symbol, side=side_to_close(pos.side), quantity=pos.quantity,
                                             reason=reason, ref_price=ref, reduce_only=True,
                                             decision_id=pos.entry_decision_id))

    async def _act(self, d: Decision, c: Candle, ind: IndicatorSet) -> None:
        """A BUY or SELL decision: an entry (sized, gated, approved or sent), an exit, or the reason it is neither."""
        res = d.ensemble
        pos = self.portfolio.positions.get(c.symbol)
        if res.action is Action.BUY:
            if pos is not None or self.orders.pending_entry(c.symbol):
                d.outcome = "in_position"
            elif any(a["symbol"] == c.symbol for a in self.pending.values()):
                d.outcome = "awaiting_approval"
            else:
                await self._enter(d, ind)
        else:  # SELL: long-only spot, so a SELL closes a long and is otherwise nothing to do
            if pos is None:
                d.outcome = "no_position"
            elif self.orders.pending_exit_qty(c.symbol) > 0:
                d.outcome = "exit_working"
            else:
                sub = await self.orders.submit(OrderIntent(
                    symbol=c.symbol, side=side_to_close(pos.side), quantity=pos.quantity, reason=OrderReason.SIGNAL,
                    decision_id=d.decision_id, confidence=res.confidence, ref_price=c.close, reduce_only=True))
                d.gates = sub.gates
                d.quantity = sub.order.quantity if sub.order else 0.0
                d.client_order_id = sub.order.client_order_id if sub.order else None
                d.outcome = "exit_submitted" if sub.accepted else "exit_refused"
                d.reason = sub.reason

    async def _enter(self, d: Decision, ind: IndicatorSet) -> None:
        pf = self.portfolio
        market = self.venue.market(d.symbol)
        qty, sizing = size_entry(self.settings.risk, equity=pf.equity(), cash=pf.cash, price=d.price, atr=ind.atr,
                                 fee_rate=self.fee_rate, amount_step=market.amount_step)
        d.sizing = sizing
        d.quantity = qty
        if qty <= 0 or qty < market.min_qty or qty * d.price < market.min_notional:
            d.outcome = "below_minimum"
            d.reason = f"size {qty:.8g} below venue minimum (min notional {market.min_notional})"
            return
        intent = OrderIntent(symbol=d.symbol, side=Side.BUY, quantity=qty, reason=OrderReason.SIGNAL,
                             decision_id=d.decision_id, confidence=d.ensemble.confidence, ref_price=d.price,
                             stop_loss=sizing.get("stop_loss"), take_profit=sizing.get("take_profit"))
        gates = self.orders.check(intent)
        d.gates = gates
        failure = first_failure(gates)
        if failure is not None:
            d.outcome = "rejected"
            d.reason = f"{failure.code}: value={failure.value} limit={failure.limit}"
            return
        if self.approval_mode == "manual":
            await self._propose(d, intent)
            return
        sub = await self.orders.submit(intent, gates)
        d.client_order_id = sub.order.client_order_id if sub.order else None
        d.outcome = "submitted" if sub.accepted else "refused"
        d.reason = sub.reason

    def _record_decision(self, d: Decision) -> None:
        self.last_decision[d.symbol] = d
        res = d.ensemble
        weights = res.weights
        # The store indexes the decision from this record (decisions, votes and gate_results tables).
        self.bus.publish_fields(DecisionMade, {
            "decision_id": d.decision_id, "symbol": d.symbol, "bar_ts": d.ts, "price": d.price, "action": res.action,
            "confidence": res.confidence, "tier": res.tier, "strategy": res.strategy,
            "votes": [{"provider": v.provider, "action": v.action, "confidence": v.confidence,
                       "weight": weights.get(v.provider), "reason": v.reason, "latency_ms": v.latency_ms}
                      for v in res.votes],
            "failed": res.failed, "gates": [g.as_dict() for g in d.gates] if d.gates else [],
            "quantity": d.quantity, "outcome": d.outcome, "reason": d.reason or res.reason, "sizing": d.sizing,
            "client_order_id": d.client_order_id, "approval_id": d.approval_id})

    # ================================================================== fills -> positions -> feedback
    async def _on_fill(self, order: Order, fill: Fill, intent: OrderIntent) -> FillRecord:
        """Apply a fill to the book in memory; the order path records it with the fill in one transaction."""
        pf = self.portfolio
        res = pf.apply_fill(fill, decision_id=order.decision_id if not order.reduce_only else None,
                            stop_loss=intent.stop_loss, take_profit=intent.take_profit, reason=order.reason.value,
                            client_order_id=order.client_order_id)
        record = FillRecord(position=res.position, trade=res.closed)
        if res.position is None and fill.symbol not in pf.positions:
            record.closed_symbol = fill.symbol
        if not self.opts.backtest:  # a backtest stores its books at each flush; it is never resumed
            record.kv["portfolio"] = pf.state()
            if getattr(self.venue, "dirty", False):
                record.kv["paper_venue"] = self.venue.state()
                self.venue.dirty = False
        if res.opened and res.position is not None and res.position.entry_decision_id:
            p = res.position
            d = self.last_decision.get(p.symbol)
            if d is not None and d.decision_id == p.entry_decision_id:
                self.entry_votes[p.entry_decision_id] = {v.provider: v.action.value for v in d.ensemble.votes}
            else:
                self.entry_votes[p.entry_decision_id] = await self._decision_votes(p.entry_decision_id)

        async def then() -> None:
            if res.opened and res.position is not None:
                p = res.position
                self.bus.publish(PositionOpened(symbol=p.symbol, side=p.side.value, quantity=p.quantity,
                                                entry_price=p.entry_price, stop_loss=p.stop_loss,
                                                take_profit=p.take_profit, decision_id=p.entry_decision_id))
            if res.closed is not None:
                await self._on_trade_closed(res.closed)

        record.then = then
        return record

    async def _on_trade_closed(self, t: ClosedTrade) -> None:
        """A trade is recorded (it carries its trade_id): tell the world and score the providers that voted."""
        self.trades.append(t)
        self.bus.publish(PositionClosed(symbol=t.symbol, side=t.side.value, quantity=t.quantity,
                                        entry_price=t.entry_price, exit_price=t.exit_price, pnl=round(t.pnl, 8),
                                        fees=round(t.fees, 8), reason=t.reason, trade_id=t.trade_id,
                                        decision_id=t.entry_decision_id))
        if self.learner is None or not t.entry_decision_id:
            return
        if t.symbol in self.portfolio.positions:  # partly closed: score the trade when it is fully closed
            return
        votes = self.entry_votes.pop(t.entry_decision_id, None)
        if not votes:
            return
        actions = {p: Action(a) for p, a in votes.items()}
        new = self.learner.record(actions, t.pnl, t.return_pct)
        scores = [(p, a.value, (a is Action.BUY) == (t.pnl > 0), t.return_pct)
                  for p, a in actions.items() if a is not Action.HOLD]
        if scores:
            await self.store.add_provider_scores(t.trade_id, scores)
        if new is not None:
            if self.opts.adaptive:
                self.ensemble.set_weights(new)
            self.bus.publish(WeightsChanged(weights={k: round(v, 4) for k, v in new.items()},
                                            reason=f"trade {t.trade_id} closed"))
        self._learner_dirty = True
        if not self.opts.backtest:
            await self._save_learner()

    async def _save_learner(self) -> None:
        if self._learner_dirty and self.learner is not None:
            await self.store.put_kv("weights", {"weights": self.learner.weights, "stats": self.learner.state()},
                                    time.time())
            self._learner_dirty = False

    # ================================================================== approvals
    async def _propose(self, d: Decision, intent: OrderIntent) -> None:
        now = time.time()
        aid = self._new_id("a")
        row = {"approval_id": aid, "decision_id": d.decision_id, "symbol": d.symbol, "side": intent.side.value,
               "quantity": intent.quantity, "price": d.price, "created_ts": now,
               "expires_ts": now + self.opts.approval_ttl_s, "status": "pending", "by": None, "ended_ts": None,
               "intent": intent.as_dict(), "gates": [g.as_dict() for g in d.gates]}
        await self.store.save_approval(row)
        self.pending[aid] = row
        d.approval_id = aid
        d.outcome = "pending_approval"
        self.bus.publish(ApprovalEvent(approval_id=aid, decision_id=d.decision_id, outcome="pending", by="engine",
                                       symbol=d.symbol, side=intent.side.value, quantity=intent.quantity,
                                       price=d.price, expires_at=row["expires_ts"], gates=row["gates"]))

    async def _end_approval(self, row: dict, outcome: str, by: str, reason: str = "",
                            client_order_id: str | None = None) -> None:
        row.update(status=outcome, by=by, ended_ts=time.time(), client_order_id=client_order_id)
        self.pending.pop(row["approval_id"], None)
        await self.store.save_approval(row)
        self.bus.publish(ApprovalEvent(approval_id=row["approval_id"], decision_id=row["decision_id"],
                                       outcome=outcome, by=by, symbol=row["symbol"], side=row["side"],
                                       quantity=row["quantity"], price=row["price"], expires_at=row["expires_ts"],
                                       reason=reason, gates=row["gates"]))

    async def _expire_approvals(self) -> None:
        now = time.time()
        for row in list(self.pending.values()):
            if now >= row["expires_ts"]:
                await self._end_approval(row, "expired", "ttl", f"not approved within {self.opts.approval_ttl_s:g}s")

    # ================================================================== control surface
    async def _set_state(self, new: EngineState, reason: str, by: str, force: bool = False) -> None:
        prev = self.state
        if prev is new and not force:
            return
        self.state = new  # in memory first: from here on no new order passes the gates
        self.state_reason = reason
        await self.store.set_engine_state(new.value, reason, by, time.time())
        self.bus.publish(EngineStateChanged(state=new.value, previous=prev.value, reason=reason, by=by))
        log.info("engine state", state=new.value, previous=prev.value, reason=reason, by=by)

    async def pause(self, reason: str = "operator", by: str = "operator") -> EngineState:
        async with self._control_lock:
            if self.state is EngineState.HALTED:
                raise ControlError("engine is HALTED; resume with confirmation to re-arm")
            await self._set_state(EngineState.PAUSED, reason, by)
            await self.flush()
            return self.state

    async def resume(self, by: str = "operator", confirm: bool = False) -> EngineState:
        async with self._control_lock:
            if self.state is EngineState.HALTED and not confirm:
                raise ControlError("engine is HALTED: re-arming needs confirmation")
            if self.reconcile_blocked:
                raise ControlError(f"reconciliation found {len(self.reconcile_blocked)} unexplained difference(s); "
                                   "accept them first")
            await self._set_state(EngineState.RUNNING, "re-armed" if self.state is EngineState.HALTED else "resume",
                                  by)
            await self.flush()
            return self.state

    async def halt(self, reason: str = "kill switch", by: str = "operator") -> CancelReport:
        """Kill switch: refuse every new order, record HALTED durably, cancel every open order; then return."""
        t0 = time.perf_counter()
        async with self._control_lock:
            await self._set_state(EngineState.HALTED, reason, by, force=self.state is not EngineState.HALTED)
            report = await self.orders.cancel_all()
            report.elapsed_ms = (time.perf_counter() - t0) * 1000.0
            self.bus.publish(KillSwitchEvent(action="halt", cancelled=report.cancelled, failed=report.failed, by=by,
                                             elapsed_ms=round(report.elapsed_ms, 2)))
            await self._persist_books()
            await self.flush()
        log.warning("kill switch", cancelled=len(report.cancelled), failed=len(report.failed),
                    elapsed_ms=round(report.elapsed_ms, 1))
        return report

    async def flatten(self, by: str = "operator", attempts: int = 3) -> dict:
        """Cancel all, close every position with reduce-only market orders (bounded retries), end HALTED."""
        report = await self.halt(reason="flatten", by=by)
        closing: list[str] = []
        failed: list[dict] = []
        async with self._control_lock:
            for sym, pos in list(self.portfolio.positions.items()):
                for attempt in range(attempts):
                    remaining = pos.quantity - self.orders.pending_exit_qty(sym)
                    if remaining <= 0:
                        break
                    sub = await self.orders.submit(OrderIntent(
                        symbol=sym, side=side_to_close(pos.side), quantity=remaining, reason=OrderReason.FLATTEN,
                        ref_price=self.portfolio.last_price.get(sym), reduce_only=True))
                    if sub.accepted and sub.order is not None:
                        closing.append(sub.order.client_order_id)
                        break
                    if attempt + 1 < attempts:
                        await asyncio.sleep(0.2 * (attempt + 1))
                else:
                    failed.append({"symbol": sym, "error": "could not place the closing order"})
            self.bus.publish(KillSwitchEvent(action="flatten", cancelled=report.cancelled,
                                             failed=report.failed + failed, closing=closing, by=by))
            await self._persist_books()
            await self.flush()
        return {"cancelled": report.cancelled, "failed": report.failed + failed, "closing": closing}

    async def approve(self, approval_id: str, by: str = "operator") -> dict:
        async with self._control_lock:
            row = self.pending.get(approval_id)
            if row is None:
                raise ControlError(f"no pending approval {approval_id}")
            if time.time() >= row["expires_ts"]:
                await self._end_approval(row, "expired", "ttl", "expired before approval")
                raise ControlError(f"approval {approval_id} expired")
            intent = OrderIntent.from_dict(row["intent"])
            intent.ref_price = self.portfolio.last_price.get(intent.symbol, intent.ref_price)
            sub = await self.orders.submit(intent)  # the gates again, against the state at this moment
            # The re-check is an evaluation of its own: recorded under the decision, after the decision's gates.
            self.store.add_gates(sub.gates, decision_id=row["decision_id"],
                                 client_order_id=sub.order.client_order_id if sub.order else None, ts=time.time())
            if sub.accepted and sub.order is not None:
                await self._end_approval(row, "approved", by, client_order_id=sub.order.client_order_id)
            else:
                await self._end_approval(row, "rejected", f"re-check ({by})", sub.reason)
            await self.flush()
            return {"approval_id": approval_id, "accepted": sub.accepted, "reason": sub.reason,
                    "client_order_id": sub.order.client_order_id if sub.order else None,
                    "gates": [g.as_dict() for g in sub.gates]}

    async def reject(self, approval_id: str, by: str = "operator") -> dict:
        async with self._control_lock:
            row = self.pending.get(approval_id)
            if row is None:
                raise ControlError(f"no pending approval {approval_id}")
            await self._end_approval(row, "rejected", by)
            await self.flush()
            return {"approval_id": approval_id, "outcome": "rejected"}

    async def set_approval_mode(self, mode: str, by: str = "operator") -> str:
        if mode not in ("auto", "manual"):
            raise ControlError(f"approval mode must be auto or manual, not {mode!r}")
        self.approval_mode = mode
        await self.store.put_kv("approval_mode", mode, time.time())
        self.bus.publish(EngineStateChanged(state=self.state.value, previous=self.state.value,
                                            reason=f"approval mode {mode}", by=by))
        await self.flush()
        return mode

    async def operator_order(self, symbol: str, side: str, quantity: float, by: str = "operator") -> dict:
        """A manual order from the operator: the same single path and gates as every other order."""
        if symbol not in self.symbols:
            raise ControlError(f"unknown symbol {symbol}")
        s = Side(side.lower())
        pos = self.portfolio.positions.get(symbol)
        reduce = pos is not None and s is not pos.side
        sub = await self.orders.submit(OrderIntent(symbol=symbol, side=s, quantity=quantity,
                                                   reason=OrderReason.OPERATOR, reduce_only=reduce,
                                                   ref_price=self.portfolio.last_price.get(symbol)))
        await self.flush()
        return {"accepted": sub.accepted, "reason": sub.reason,
                "client_order_id": sub.order.client_order_id if sub.order else None,
                "gates": [g.as_dict() for g in sub.gates]}

    async def accept_reconcile(self, by: str = "operator") -> list[dict]:
        """Accept the differences reconciliation found (the venue's balances become the new baseline)."""
        async with self._control_lock:
            accepted = list(self.reconcile_blocked)
            await accept_differences(self)
            self.reconcile_blocked = []
            self.bus.publish(ReconcileEvent(status="accepted", differences=accepted))
            await self.flush()
            return accepted

    def snapshot(self) -> dict[str, Any]:
        """Everything the console's panes show, as plain data."""
        pf = self.portfolio
        now = time.time()
        return {
            "mode": self.mode,
            "state": self.state.value,
            "state_reason": self.state_reason,
            "approval_mode": self.approval_mode,
            "equity": pf.equity(),
            "cash": pf.cash,
            "day_pnl": pf.day_pnl(),
            "drawdown_pct": pf.drawdown_pct(),
            "market_ts": max(self.last_bar_ts.values()) if self.last_bar_ts else None,
            "positions": [{"symbol": p.symbol, "side": p.side.value, "quantity": p.quantity,
                           "entry": p.entry_price, "last": pf.last_price.get(p.symbol, p.entry_price),
                           "unrealised": p.unrealised, "stop_loss": p.stop_loss, "take_profit": p.take_profit,
                           "opened_ts": p.opened_ts} for p in pf.positions.values()],
            "orders": [{"client_order_id": o.client_order_id, "symbol": o.symbol, "side": o.side.value,
                        "quantity": o.quantity, "status": o.status.value, "reason": o.reason.value}
                       for o in self.orders.live.values()],
            "breakers": [self.breaker.summary()],
            "approvals": [{"approval_id": a["approval_id"], "symbol": a["symbol"], "side": a["side"],
                           "quantity": a["quantity"], "price": a["price"],
                           "expires_in": max(0.0, a["expires_ts"] - now), "decision_id": a["decision_id"]}
                          for a in self.pending.values()],
            "weights": {p.name: self.ensemble.weight(p.name) for p in self.providers},
            "bars": self.bars,
            "reconcile_blocked": list(self.reconcile_blocked),
        }


async def _maybe_await(x):
    if asyncio.iscoroutine(x):
        return await x
    return x
