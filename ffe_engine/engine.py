"""The engine: one loop over closed candles, and the operator's control surface.

Per bar: venue sees the candle (paper fills) -> in-flight orders polled -> marks -> stop-loss / take-profit ->
indicators -> votes -> ensemble -> sizing -> gates -> approval or the single order path -> decision recorded.

Control surface (the console and `ffe ctl` use only these): pause, resume, halt, flatten, approve, reject,
set_approval_mode, accept_reconcile, operator_order, operator_cancel, close_position, snapshot, and the reads of the
operator's views (balances, profit, why; views.py). Engine state changes are stored durably before the
call returns, and the engine starts in the state it was left in. Once its run has ended (crashed, or stopped: the
feed ended), every call that would change its state or place or cancel an order is refused; the reads still answer.

The engine composes parts that each own one piece of state: the trading state (trading_state.py), the order path
(execution.py), the approvals (approvals.py) and reconciliation (reconcile.py), which reports while the engine
decides. What a backtest does differently from a live or paper run is one `RunProfile`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Iterable, NamedTuple, TypeVar

from . import fmt, logs, present, tables
from . import __version__
from . import ahead, failed_cancels, flatten_owed, halt_asked
from .approvals import ApprovalDesk, moved_past
from .breaker import CLOSED as BREAKER_CLOSED
from .breaker import SEND as BREAKER_SEND
from .breaker import BreakerOpen, CircuitBreaker
from .breaker_pause import BreakerPause
from .clock import DAY_MS, Clock, SteadyClock, WallClock
from .config import Settings
from .ensemble import Ensemble, is_async_provider
from .controls import Controls, Press, answered_early
from .entrylog import EntryLog
from .errors import ControlError, FfeError, StartError, StorageError, damaged_database
from .events import (BarEvent, DecisionMade, ErrorEvent, EventBus, KillSwitchEvent, OverrideEvent, PositionClosed,
                     PositionOpened, ReconcileEvent, RunEvent, WeightsChanged)
from .execution import (CancelReport, OrderPath, below_minimum_at_stop, counts_in_daily_trades, dust_at_stop,
                        ended_unsold, side_to_close)
from .failed_cancels import FailedCancels
from .flatten_entries import entry_end
from .ids import IdSource
from .indicators import IndicatorSet
from .liveness import TURN_S, Liveness
from .api import UNDER_WAY
from .market.base import MarketStateError, QuotingFeed, ResumableFeed, check_books, check_source
from .market.replay import ReplayFeed
from .model import (Action, Candle, ClosedTrade, Decision, EngineState, Fill, GateResult, Order, OrderReason,
                    OrderStatus, Position, Side)
from . import overrides
from .overrides import Override
from .portfolio import RATE_WINDOW_MS, Portfolio, entry_day_of
from .outage import KINDS as OUTAGE_KINDS
from .outage import outage, outage_only
from .reconcile import (BALANCE_KINDS, BalancesMoved, Reconciler, blocked_text, difference_key, hold_reason,
                        in_doubt_only, lagging_trades, lifted_reason, paused_by_reconcile, says_held,
                        unexplained)
from .recovery import recover_after_restore
from .risk import EntryInFlight, Gatekeeper, OrderIntent, first_failure, size_entry
from .settled_fee import settled_fee
from .signals import close_providers
from .signals.base import BUY_CODE, SELL_CODE
from .store import (BOOKS_QUOTE_KEY, CASH_ACCEPTED_KEY, ENGINE_AUTHORS, MARKET_SOURCE_KEY, REQUEST_HOLD_KEY,
                    RESTORE_ALERTS_KEY, RESTORED_KEY, STARTING_CASH_KEY, FillRecord, Store)
from .tasks import cancel_and_wait
from .trading_state import TradingState
from . import views
from .venues.base import ProbedVenue, SimulatedVenue, VenueError, VenueUnavailable

from .batch import FIRST, flat_stops

if TYPE_CHECKING:
    from .batch import BarSignals
    from .feedback import WeightLearner

__all__ = ["BACKTEST", "LIVE", "ControlError", "Engine", "EngineOptions", "RunProfile"]

log = logs.get_logger("ffe.engine")
R = TypeVar("R")

REFUSED = frozenset(("rejected", "refused", "exit_refused"))  # decision outcomes where a gate said no
FLATTEN_ORDERS = 3  # closing orders one flatten tries per position at most: the first, and one for each rest left
FLATTEN_KEY = "flatten_under_way"  # kv: the flatten being followed up (symbol -> closing orders placed), or null
FLATTEN_OWED_KEY = "flatten_owed"  # kv: what its follow-up owes an answer to (symbol -> what was said), or null
# kv: the stop-loss and take-profit exits the venue's Retry-After held back (symbol -> [reason, reference price, the
# position's opening time]), or null: sent once it is over, by this run or the next.
EXITS_HELD_KEY = "exits_held"
# kv: the stop-loss and take-profit levels crossed whose positions are still held (the same shape), or null: their
# exits sent again at each bar until one sells the position, by this run or the next (Engine._monitor).
EXITS_OWED_KEY = "exits_owed"
# The symbols whose position a restore's recovery opened before the volatility to set its levels from was known.
LEVELS_OWED_KEY = "levels_owed"
# A loop back later than a turn's wait allows, by WAKE_S (seconds), was frozen or held: the next bar waits WAKE_S
# first, for the controls asked meanwhile (_run_paced).
WAKE_S = 0.5
WARMUP_TURN = 500  # warm-up candles fed between two turns of the event loop


@dataclass(frozen=True, slots=True)
class RunProfile:
    """What a run does around the bar: everything a backtest does differently from a paper or live run."""

    name: str
    # Books (portfolio, paper venue, learner) stored and the store flushed after every bar and with every fill,
    # so a restart resumes where the run stopped. A run that is never resumed stores them every `flush_every` bars.
    resumable: bool
    publish_bars: bool  # a `bar` event per candle, for the console
    pause_on_breach: bool  # a drawdown, daily-loss or breaker breach pauses the engine
    venue_checks: bool  # reconciliation at start and periodically, orders polled between bars (housekeeping)
    breaker_market_time: bool  # the breaker's recovery timeout in market time, not in real seconds
    synchronous_feed: bool  # the feed's candles taken without waiting (a file already read)
    equity_curve: bool  # the equity at each bar's close kept for the report
    # Every decision recorded (a `decision` event with its votes, gates and sizing). Without them the engine counts
    # the refusals per gate instead (an entry's gates after the first that refuses it are then not measured);
    # orders, fills, trades and weights are recorded either way.
    decision_records: bool = True
    # Stretches of a replay where no order is in flight and no bar can trade (the precomputed signals and the
    # positions' stops say so) are booked in one step, not bar by bar (Engine._idle_stretch): only for a run that
    # neither publishes, pauses nor stores anything per bar, for whom those bars only mark, count and close.
    skip_idle: bool = False

    def __post_init__(self) -> None:
        if self.skip_idle and (self.resumable or self.publish_bars or self.pause_on_breach or self.venue_checks):
            raise ValueError(f"run profile {self.name}: idle bars are skipped only in a run that does nothing per "
                             "bar but keep its books")


LIVE = RunProfile("live", resumable=True, publish_bars=True, pause_on_breach=True, venue_checks=True,
                  breaker_market_time=False, synchronous_feed=False, equity_curve=False)
# A backtest replays a file as fast as it can, never resumes, and never pauses: it has no operator to resume it.
BACKTEST = RunProfile("backtest", resumable=False, publish_bars=False, pause_on_breach=False, venue_checks=False,
                      breaker_market_time=True, synchronous_feed=True, equity_curve=True, skip_idle=True)


LAST_RUN_CUT = "ended without its stop record"
# kv: symbol -> when the venue placed the order that opened its position, on the venue's clock (Engine._priced_from)
PRICED_FROM_KEY = "priced_from"
# Why, when the start knows it: the last run emptied the disk reserve as it stopped (reserve.py).
LAST_RUN_UNWRITABLE = "it stopped on a record it could not write"


@dataclass(slots=True)
class EngineOptions:
    live: bool = False
    profile: RunProfile = LIVE
    flush_every: int = 1  # bars between store/audit flushes (a run that is not resumable)
    approval: str = "auto"
    approval_ttl_s: float = 120.0
    adaptive: bool = True
    start_state: EngineState = EngineState.RUNNING  # for a fresh database
    max_bars: int | None = None  # stop by itself after this many bars per symbol
    # What the start set aside of those records (audit.set_aside_summary), said in the start's record and page.
    set_aside: dict[str, Any] | None = None
    # The check of the audit trail's current file, under way beside the start (audit.trail_damage): awaited before
    # the start's record, which says what it found (`trail_damaged`), and so does its page.
    trail_check: Awaitable[dict[str, Any] | None] | None = None

    @classmethod
    def for_backtest(cls, *, flush_every: int, adaptive: bool, decision_records: bool = True) -> "EngineOptions":
        """A backtest: its profile, automatic approval, RUNNING from the first bar."""
        profile = BACKTEST if decision_records else dataclasses.replace(BACKTEST, decision_records=False)
        return cls(profile=profile, flush_every=flush_every, approval="auto", adaptive=adaptive,
                   start_state=EngineState.RUNNING)


class _Asked(NamedTuple):
    """When a resume was asked: the operator's pauses so far, the trading state's changes and the state."""

    pauses: int
    changes: int
    state: EngineState


def _close_said(o: Order, on_wire: bool) -> str:
    """Where a close's own order is, as its answer says it before the close has ended: as its journal has it (the
    order path's lookup can find it filled while the answer to its create is still on the wire)."""
    if o.status is OrderStatus.FILLED:
        return f"filled at the exchange at {fmt.price(o.average)}" if o.average else "filled at the exchange"
    if o.status.final:
        return f"{o.status.value} at the exchange: {o.error}" if o.error else f"{o.status.value} at the exchange"
    if on_wire:
        return "sent: the exchange has not answered it yet"
    return f"sent, {o.status.value} at the exchange"


class Engine:
    def __init__(self, settings: Settings, *, feed: Any, venue: Any, store: Store, bus: EventBus, clock: Clock,
                 providers: list[Any], ensemble: Ensemble, learner: WeightLearner | None, audit: Any = None,
                 options: EngineOptions | None = None, timeframe_ms: int = 60_000, ids: IdSource | None = None) -> None:
        self.settings = settings
        self.opts = options or EngineOptions()
        self.profile = self.opts.profile
        self.feed = feed
        self.venue = venue
        self.store = store
        self.bus = bus
        if isinstance(clock, WallClock):
            # Market time read off the system clock would go back with it (an NTP step, a clock set right after
            # running ahead): the records' times would too. A market's own clock (SimClock) never goes back.
            clock = SteadyClock(clock)
        self.clock = clock
        self.providers = providers
        self.async_providers = any(is_async_provider(p) for p in providers)
        self.ensemble = ensemble
        self.learner = learner
        self.audit = audit
        self._books_checked = False  # check_books made (a start's refusals that write nothing)
        self._market_override: Override | None = None  # what check_books found the stored market overrides
        self.timeframe_ms = timeframe_ms
        self.ids = ids or IdSource()  # order, decision and approval ids (ids.py): random unless a test fixes them
        self.symbols = list(settings.engine.symbols)
        self.mode = "LIVE" if self.opts.live else "PAPER"
        self.trading = TradingState(store, bus, clock, self.opts.start_state)
        risk = settings.risk
        self.portfolio = Portfolio(settings.venue.starting_cash, returns_window=max(risk.var_window,
                                                                                   risk.correlation_window))
        # The breaker's recovery timeout runs on the clock's monotonic seconds, or on market time in a backtest.
        breaker_now: Callable[[], float] = ((lambda: clock.now_ms() / 1000.0) if self.profile.breaker_market_time
                                            else clock.monotonic)
        self.breaker = CircuitBreaker(venue.name, settings.breaker.failure_threshold,
                                      settings.breaker.recovery_timeout_s, now=breaker_now, bus=bus)
        self.breaker_pause = BreakerPause(self.breaker, self.trading)
        self.last_bar_ts: dict[str, int] = {}
        # Each symbol's newest candle whose work is done (marked, exits watched, decided): a day begun by the clock
        # waits for them (_marked_at). last_bar_ts has a candle from the moment it is taken in hand.
        self._marked_ts: dict[str, int] = {}
        self.gatekeeper = Gatekeeper(risk, self.portfolio, trading=self.trading,
                                     breaker_allows=self.breaker.allows, now_ms=clock.now_ms,
                                     last_bar_ts=self.last_bar_ts.get,
                                     entries_in_flight=self._entries_in_flight,
                                     timeframe_ms=timeframe_ms, live=self.opts.live)
        self.orders = OrderPath(store=store, venue=venue, breaker=self.breaker, gatekeeper=self.gatekeeper,
                                portfolio=self.portfolio, bus=bus, clock=clock, trading=self.trading,
                                on_fill=self._on_fill, settle_s=venue.settle_s,
                                cancel_timeout_s=settings.engine.cancel_timeout_s, book=self._venue_book,
                                ids=self.ids,
                                # What a buy's fee may take of the coin bought: an exchange's (Binance takes it so,
                                # unless paid in BNB), as venue.fee_bps estimates it; the paper venue charges its
                                # fee in the quote currency.
                                base_fee_rate=(0.0 if isinstance(venue, SimulatedVenue)
                                               else settings.venue.fee_bps / 10_000.0))
        self.approvals = ApprovalDesk(store=store, bus=bus, orders=self.orders, portfolio=self.portfolio,
                                      trading=self.trading, clock=clock, ttl_s=self.opts.approval_ttl_s,
                                      mode=self.opts.approval, new_id=self.ids.new, size=self._size,
                                      price_now=self._price_now)
        self.reconciler = Reconciler(venue=venue, store=store, orders=self.orders, portfolio=self.portfolio, bus=bus,
                                     symbols=self.symbols, clock=clock, quote=settings.venue.quote)
        # Before an order in doubt goes again, the venue's balance is asked whether it holds it already.
        self.orders.placed_evidence = self.reconciler.shows_placed
        self.orders.entry_stands = self._entry_stands
        self.ind = {s: IndicatorSet(s) for s in self.symbols}
        # A backtest's indicators and vote actions computed for its whole series (batch.py); None: bar by bar.
        self.signals: BarSignals | None = None
        # An exchange in the process fills on market data and has no real account behind it.
        self.sim_venue: SimulatedVenue | None = venue if isinstance(venue, SimulatedVenue) else None
        self._sim_on_candle = self.sim_venue.on_candle if self.sim_venue is not None else None
        # A market made in the process continues across a restart: its state is stored with the books.
        self.sim_feed: ResumableFeed | None = (feed if self.profile.resumable and isinstance(feed, ResumableFeed)
                                               else None)
        self.fee_rate = settings.venue.fee_bps / 10_000.0
        # What a market buy on the paper venue pays above the price it is sized at (a real exchange's is unknown).
        self.slippage = settings.venue.slippage_bps / 10_000.0 if self.sim_venue is not None else 0.0
        self.last_decision: dict[str, Decision] = {}
        # What a stretch of idle bars (_idle_stretch) leaves as on_candle would, made only when something reads it
        # or the replay ends (nothing in a run without decision records reads them in between): per symbol, its last
        # decision (id number, bar, outcome, the weights it was weighed with) and the bar of its last indicators.
        self._stretch_decided: dict[str, tuple[int, int, str, dict[str, float]]] = {}
        self._stretch_loaded: dict[str, int] = {}
        # A replay's symbols whose candles end before the others' (symbol -> its last candle's time): after it, their
        # orders in flight are cancelled, as no candle will fill them (set at the start, where the replay goes on).
        self._data_ends: dict[str, int] = {}
        # The symbols no candle comes for any more to the paper venue (symbol -> what the operator can do): an order
        # in one can never fill there, so none is kept in flight (cancelled) or sent (refused, saying this).
        self._no_candles: dict[str, str] = {}
        self.entry_votes: dict[str, dict[str, str]] = {}  # decision id -> {provider: action} for open trades
        # decision id -> (P&L, entry cost) of the parts of its position sold so far: a trade closed in parts is
        # scored as a whole once its last part is sold (_score).
        self._parts_sold: dict[str, tuple[float, float]] = {}
        self.bars = 0
        self.bars_by_symbol: dict[str, int] = {s: 0 for s in self.symbols}
        self.idle_stretches = 0  # stretches of idle bars booked in one step (RunProfile.skip_idle), and their bars
        self.idle_bars = 0
        self.equity_curve: list[tuple[int, float]] = []
        self.trades: list[ClosedTrade] = []
        self.entries = EntryLog()  # entries sent and refused, by gate: why a run stopped trading
        self.refusals: dict[str, int] = {}  # gate code -> orders it refused (entries and exits)
        self.reconcile_blocked: list[dict[str, Any]] = []
        # The open orders (unknown, in doubt) that held the engine and the last reconciliation no longer found: lifted
        # only when the next one does not find them either (one read of the open orders can lag the exchange).
        self._blocked_missed: set[str] = set()
        # The exchange's Retry-After on requests, as last stored; unknown at the start, so that the first storing of
        # the books says it as it is (a hold that ended while the engine was down is cleared).
        self._request_hold_stored: float | None | str = "unknown"
        # and stored as soon as the exchange asks for it, before its answer goes further (_store_request_hold)
        tell = getattr(venue, "tell_requests_held", None)
        if tell is not None:
            tell(self._store_request_hold)
        # Differences the last reconciliation saw for the first time: looked at again before they hold the engine.
        self.reconcile_unconfirmed: list[dict[str, Any]] = []
        self._reconciled_whole = False  # the last reconciliation compared every position, the cash and the equity
        self._flattens_begun = 0  # flattens pressed: a halt pressed before one does not end it
        # A kill switch sending its cancels at the press, while another control is under way (Engine.halt): set once
        # its HALTED is stored and its cancels sent. Or one pressed with nothing under way (`_alone`): set once its
        # HALTED is stored.
        self._pressing: asyncio.Future[None] | None = None
        # Kill switches' and flattens' rests, waiting for the control under way at their press (_after_controls).
        self._rests: set[asyncio.Task[Any]] = set()
        # Set by the process around the engine (host.EngineHost): takes a backup into a directory.
        self.backup_hook: Callable[[str | None, str], Awaitable[dict[str, Any]]] | None = None
        # A real account's cash is the venue's quote balance at the first start on it (and after a restore's
        # recovered fills), taken from the first reconciliation that finds no order in doubt: a fill they bring is
        # in that balance already. When one was, the next reconciliation comes as soon as the orders in flight are
        # settled (`_compare_waits`). A restart keeps the books' cash, compared with the venue's (start()). Until it
        # is taken, the books are stored without a cash (`_books_state`).
        self._cash_from_venue = False
        # A fill was booked on that cash: it may be one the venue's balance already held, and the cash in memory may
        # count it twice. Not shown as the account's until a reconciliation takes the cash (cash_unreconciled).
        self._cash_charged = False
        # The last reconciliation compared neither the cash nor the equity (nor an order's symbol) for an order whose
        # fate was unknown: the next comes as soon as none is, not at the next periodic one (a start with an order
        # in doubt would trade meanwhile on quote moved while it was stopped).
        self._compare_waits = False
        self._reconciled_at = clock.monotonic()
        self._recheck_at: float | None = None  # when to look again at differences found once (reconcile.py)
        # The last reconciliation compared nothing: the exchange asked for no requests then (Retry-After).
        self.reconcile_waits = False
        # The flatten under way: symbol -> closing orders placed for it (see _follow_flatten); None when none is.
        self._flattening: dict[str, int] | None = None
        self._failed_cancels = FailedCancels()  # a kill switch's failed cancels, followed until their orders end
        self._flatten_wait_said: float | None = None  # the venue's Retry-After the flatten last said it waits for
        # The flatten's positions its last word left open (in doubt, waiting, more closing orders placed...): symbol
        # -> what it said; the follow-up says each one's outcome once it is known (flatten_owed.py).
        self._flatten_owed: dict[str, str] = {}
        # Symbols a flatten's closing order sold in (a fill), not yet said closed by its follow-up: only these are
        # said closed, not a symbol whose entry on the wire ended with nothing bought (no closing order was sent).
        self._flatten_sold: set[str] = set()
        self._flatten_last_word: dict[str, str] = {}  # symbol: how its last closing order a follow-up placed went wrong
        # The entries on the wire (or in doubt) in a flatten's symbols, by client order id: what became of each is
        # said by the follow-up once it has ended (flatten_entries.py).
        self._flatten_entries: dict[str, Order] = {}
        # Stop-loss and take-profit exits refused only because of the venue's Retry-After, unsent: symbol -> the
        # exit, sent once that time is over (see _exits_after_hold).
        self._exits_held: dict[str, OrderIntent] = {}
        # Stop-loss and take-profit levels crossed: symbol -> the exit it called for and the opening time of the
        # position it is owed to, until that position is sold. An exit the breaker or a gate refused, the exchange
        # refused, or the exchange ended before it sold everything (expired) is sent again at the symbol's next bar,
        # whether or not that bar crosses the level again: the price may be back by then, the crossing stands.
        # Stored (kv exits_owed) as last stored in `_owed_stored`, by a run that resumes.
        self._exits_owed: dict[str, tuple[OrderIntent, int]] = {}
        self._levels_owed: set[str] = set()  # recovered positions still without levels (LEVELS_OWED_KEY)
        self._next_probe = 0.0  # the engine's own probe of an open breaker, not before (monotonic: _probe_breaker)
        self._owed_stored: dict[str, list[Any]] = {}
        # symbol -> when the venue placed the order that opened its position, on the venue's clock (Fill.venue_ts):
        # where the prices its stop-loss and take-profit watch begin (_range_since).
        self._priced_from: dict[str, int] = {}
        # Whether a restored journal may still lack the venue's later orders (recovery.py): looked at by the first
        # reconciliation, and by every one after until the venue has answered.
        self._restore_pending = True
        # Whether the day's figures wait for the whole books (_books_whole): the venue's cash taken over stored books
        # (a restore's, books stored without a cash), until a reconciliation has taken it with the positions of the
        # venue's orders since a restored backup.
        self._day_awaits_recovery = False
        self._bar_ts: int | None = None
        self._since_flush = 0
        self._stop = asyncio.Event()
        self._dd_breached = False
        self._learner_dirty = False
        self._dl_breached = False
        # DAILY_TRADES: the entries journaled before this run, by the day they count in (the floor of that day's
        # count, read at start).
        self._entries_before: dict[int, int] = {}
        self._controls = Controls()
        self._tasks: list[asyncio.Task[Any]] = []
        self.overrides: list[Override] = []  # saved state that disagreed with the configuration at start
        self.started = False
        self._run_recorded = False  # the `run` start record is out: the run's end is owed to the trail
        self.stopped = False
        self.crashed: BaseException | None = None
        self._stopped_why = "stopped in order"  # why the run ended, when it did not crash (ended())
        self.liveness = Liveness(now=clock.monotonic, wall=clock.wall)
        self.started_at = clock.monotonic()  # the uptime on the health view counts from here
        # Set by the process around the engine (host.EngineHost): /health's verdict and the monitor's status.
        self.health_report: Callable[[], dict[str, Any]] | None = None
        self.monitor_status: Callable[[], dict[str, Any]] | None = None
        # Set by the process around the engine: told at once when the engine stops because nothing can be recorded
        # (its page cannot wait in the alerts' outbox, which is in the database).
        self.on_records_unwritable: Callable[[StorageError], None] | None = None
        # Set by the process around the engine: awaited once the loop has ended, before the engine stops (its venue
        # closed, its books stored): the control commands under way (a close whose order is on the wire, a backup)
        # are carried out and answered first.
        self.before_stop: Callable[[], Awaitable[None]] | None = None
        self.after_stop: Callable[[], None] | None = None  # the run has ended, its last records written (or not)
        self._finishing = False  # the loop has ended: the stop is under way

    # ================================================================== helpers
    @property
    def state(self) -> EngineState:
        return self.trading.state

    @property
    def state_reason(self) -> str:
        return self.trading.reason

    @property
    def approval_mode(self) -> str:
        return self.approvals.mode

    @property
    def pending(self) -> dict[str, dict[str, Any]]:
        """Pending approvals by id."""
        return self.approvals.pending

    def _entries_in_flight(self) -> list[EntryInFlight]:
        return self.orders.entries_in_flight()

    def _cash_of_entries_in_flight(self) -> float:
        """The cash the buys in flight will take (what they have left to fill, at the last prices, with the fee and
        the slippage): the venue holds it for them until they fill. Not the books' until then."""
        pf = self.portfolio
        per_unit = (1.0 + self.slippage) * (1.0 + self.fee_rate)
        return sum(e.quantity * (pf.last_price.get(e.symbol) or 0.0) * per_unit
                   for e in self.orders.entries_in_flight() if e.side is Side.BUY)

    # ================================================================== lifecycle
    async def check_books(self) -> None:
        """The refusals of a start that writes nothing (MarketStateError, a venue.quote the books do not keep: exit
        2), made before anything else is: the host asks for them before its monitor starts (whose alerts' bookkeeping
        writes), and `start` makes them if it has not. The clock is set at the books' market time."""
        if self._books_checked:
            return
        head = await self.store.chain_head()
        if head is not None and head.seq > self.bus.seq:  # the trail goes on from the records already stored
            self.bus.resume(head.seq, head.hash)
        try:
            if self.sim_feed is not None:
                self._market_override = await self._load_market()
            else:
                await self._feed_not_before()
        except MarketStateError as exc:  # said after where market.source was set, as other refused keys are
            raise MarketStateError(self.settings.blame(("market", "source"), str(exc))) from None
        if self.profile.resumable:
            await self._check_quote()
        self._books_checked = True

    async def start(self) -> None:
        """Restore the state the engine was left in, recover orders in flight, then warm the indicators."""
        await self.check_books()
        found: list[Override | None] = [self._market_override]  # saved state that disagrees with the configuration
        if self.profile.resumable:
            if self.sim_feed is None and await self.store.get_kv(MARKET_SOURCE_KEY) is None:
                # An exchange's market stores no market state with the books: the account says where they were made.
                await self.store.put_kv(MARKET_SOURCE_KEY, "exchange", self.clock.wall())
        row = await self.store.get_engine_state()
        if row is None:
            await self.trading.set(self.opts.start_state, "fresh start", "engine", force=True)
        else:
            self.trading.restore(EngineState(row[0]), row[1], row[2])
            await self.trading.say_stored(row[2])
            if row[1] == "fresh start":  # the first start's reason is no restart's: the records did not begin anew
                await self.trading.set(self.state, "restart", "engine", force=True)
            if self.profile.resumable:
                found.append(overrides.start_state(self.opts.start_state, self.state, row[1], row[2],
                                                   self.opts.live))
            if self.opts.live and self.opts.start_state is EngineState.PAUSED and self.state is EngineState.RUNNING:
                # A live engine waits for the operator after every start, not only the first.
                await self.trading.set(EngineState.PAUSED, "live start", "engine")
            if self.profile.pause_on_breach:  # this run's breaker starts closed: a pause it made says so
                await self._breaker_pause()
        kept = halt_asked.asked(self.settings.data_dir) if self.profile.resumable else None
        if kept is not None:  # a kill switch asked during a start that failed (halt_asked.py)
            if self.state is not EngineState.HALTED:
                await self.trading.set(EngineState.HALTED, *kept)
            if not halt_asked.done(self.settings.data_dir):
                log.warning("the kill switch kept for this start could not be removed: the next start halts again",
                            file=str(halt_asked.path(self.settings.data_dir)))
        stopped_unwritable = self.store.reserve_used  # kept: the reserve is filled again below
        if self.store.reserve_used and self.state is not EngineState.HALTED:
            # The last run emptied the disk reserve to store HALTED, and may not have managed even that.
            await self.trading.set(EngineState.HALTED, "the last run stopped on a record it could not write",
                                   "engine")
        aside = await self._unchecked()
        strictest = ahead.strictest_of(aside)
        stop = (EngineState(strictest[0]), strictest[1], strictest[2]) if strictest is not None else None
        if stop is not None and (self.state is EngineState.RUNNING or stop[0] is EngineState.HALTED):
            if self.state is not stop[0]:
                await self.trading.set(stop[0], f"{stop[1]}: found only in audit records the database never "
                                       f"committed, set aside in {stop[2]}", "engine")
        losses = [(u.path, u.ahead) for u in aside if u.ahead.lost]
        if losses:
            # The books lack records the database had committed (fills, maybe): nothing new trades on them until
            # the operator has looked. A pause, not a halt: what is held keeps its stop-loss and take-profit. Set
            # aside at this start or at an earlier one no resume has checked (killed before it paused, say). A halt
            # stays, its reason saying the loss first.
            reason = ahead.pause_reason(sum(a.records for _, a in losses))
            if self.state is EngineState.HALTED:
                if not self.state_reason.startswith(ahead.PAUSE):
                    await self.trading.set(EngineState.HALTED, f"{reason.removesuffix('resume')}re-arm; halted "
                                           f"before: {self.state_reason}", "engine", force=True)
            elif (self.state, self.state_reason) != (EngineState.PAUSED, reason):
                await self.trading.set(EngineState.PAUSED, reason, "engine", force=self.state is EngineState.PAUSED)
        await self.store.keep_reserve()
        if self.state is EngineState.HALTED:
            under_way = await self.store.get_kv(FLATTEN_KEY)
            if isinstance(under_way, dict) and under_way:
                self._flattening = {str(k): int(v) for k, v in under_way.items()}
                self._flatten_owed = flatten_owed.loaded(await self.store.get_kv(FLATTEN_OWED_KEY))
        positions = await self.store.positions()
        saved_books = await self.store.get_kv("portfolio")
        self.portfolio.load(saved_books or {}, positions, self.clock.now_ms())
        owed_levels = await self.store.get_kv(LEVELS_OWED_KEY)
        self._levels_owed = {s for s in owed_levels if isinstance(s, str)} if isinstance(owed_levels, list) else set()
        held = await self.store.get_kv(EXITS_HELD_KEY)
        owed = await self.store.get_kv(EXITS_OWED_KEY)
        if self.state is EngineState.HALTED:  # HALTED leaves positions to the operator: a held exit is dropped
            for key, stored in ((EXITS_HELD_KEY, held), (EXITS_OWED_KEY, owed)):
                if stored:
                    await self.store.put_kv(key, None, self.clock.wall())
        else:
            self._exits_held = self._held_exits_of(held)
            pf = self.portfolio
            self._exits_owed = {sym: (i, pf.positions[sym].opened_ts) for sym, i in self._held_exits_of(owed).items()}
            self._owed_stored = self._owed_record()
        priced = await self.store.get_kv(PRICED_FROM_KEY)
        if isinstance(priced, dict):  # (a value of another shape is no time: those candles count whole)
            self._priced_from = {str(sym): ts for sym, ts in priced.items() if sym in self.portfolio.positions
                                 and isinstance(ts, int) and not isinstance(ts, bool)}
        # ORDER_RATE's window goes on across a restart: an engine restarted in a loop sends no more than the limit.
        for ts in await self.store.entry_times_since(self.clock.now_ms() - RATE_WINDOW_MS):
            self.portfolio.note_order(ts)
        # So does DAILY_TRADES' count: an entry is journaled before the books that count it are stored (with the
        # bar, or its fill), and a kill between the two leaves them counting one fewer, or still of the day before
        # a midnight the run had passed; one rejected since they were stored, one more. The journal's entries of
        # each day from the books' on are that day's count, whenever it begins (`_roll_day`).
        if self.portfolio.day is not None:
            for ts, counted_in in await self.store.entries_since(self.portfolio.day * DAY_MS):
                day = counted_in if counted_in is not None else entry_day_of(ts)
                self._entries_before[day] = self._entries_before.get(day, 0) + 1
            self._count_entries_before()
        if self.sim_venue is not None:
            found.append(await self._own_starting_cash(saved_books))
        # Cash is what the fills say it is: the starting cash plus every sale less every purchase and every fee
        # paid in cash (a fee taken in coins is not).
        flows = await self.store.cash_flows()
        if flows:
            bought, buy_fees = flows.get("buy", (0.0, 0.0))
            sold, sell_fees = flows.get("sell", (0.0, 0.0))
            self.portfolio.cash = self.portfolio.starting_cash - bought + sold - buy_fees - sell_fees
            if self.sim_venue is not None:  # what the operator accepted of the simulated exchange's cash
                self.portfolio.cash += float(await self.store.get_kv(CASH_ACCEPTED_KEY, 0.0) or 0.0)
        if self.sim_venue is not None:
            venue_state = await self.store.get_kv("paper_venue")
            if venue_state:
                self.sim_venue.load(venue_state)
        found.append(await self._load_weights())
        if isinstance(self.feed, ReplayFeed):
            self._data_ends = self.feed.early_ends()
        for p in positions:
            if p.entry_decision_id:
                self.entry_votes[p.entry_decision_id] = await self.store.decision_votes(p.entry_decision_id)
                parts = await self.store.parts_sold(p.entry_decision_id, p.opened_ts)
                if parts is not None:
                    self._parts_sold[p.entry_decision_id] = parts
        # A run that is not resumed takes its approval mode from its options only.
        found.append(await self.approvals.restore(mode=self.profile.resumable, traded=self.symbols))
        await self.venue.connect()
        self._read_markets()
        recovered = await self.orders.recover()
        await self._load_failed_cancels()
        if self.sim_venue is None:
            # A real account: its cash is what the venue holds in the quote currency. The first start on it takes
            # it from the venue, and so does the first after a restore (the backup's books lack what the venue did
            # since), and one after books stored before the venue's cash was taken (without a cash: _books_state).
            # A restart keeps the books' own (the journal's, stored with every fill, and the fills of the orders in
            # flight recorded as they settle): reconciliation compares it with the venue's once nothing is in doubt,
            # so that quote moved in or out while the engine was stopped is a difference to accept, not taken over
            # without a word.
            saved_cash = (saved_books or {}).get("cash")
            restored = await self.store.get_kv(RESTORED_KEY, None) is not None
            if saved_cash is not None and not restored:
                self.portfolio.cash = saved_cash
            elif recovered and saved_cash is not None:
                self.portfolio.cash = saved_cash
                self._cash_from_venue = True
            else:
                balances = await self.venue.fetch_balance()
                self.portfolio.cash = balances.get(self.settings.venue.quote, 0.0)
                self._cash_from_venue = True
            # Over stored books (after a restore, or books stored with no cash), the venue's cash holds what its
            # orders since paid and received, and any quote moved in or out since: the books' peak and day's start
            # are from before, and the books may lack the positions of those orders until the reconciliation
            # recovers them. The day's figures wait for the whole books, which begin them at what the account holds
            # (_books_whole): a transfer made meanwhile is no drawdown, no day's loss and no profit.
            self._day_awaits_recovery = self.portfolio.marks_held = self._cash_from_venue and saved_books is not None
            if saved_books is None:  # the first start on this account: its books begin at what it holds
                self.portfolio.begin_at_equity()
        # The day of DAILY_LOSS and DAILY_TRADES is the clock's UTC day from the moment the books are open, not from
        # the first bar (an operator's loss before it is the day's): the stored books' own when they are of today,
        # a new one at the equity now when they are of an earlier day, or new. Within a bar after a midnight, the
        # day before until the warm-up has marked the bar closing at it (below): its marks begin the day.
        self._roll_day(self.clock.now_ms() - self.timeframe_ms)
        # A breach that was there before the restart already paused the engine, or the operator resumed it since:
        # it is not a new breach, and does not pause the engine again.
        risk = self.settings.risk
        dd, dl = self.portfolio.drawdown_pct(), self.portfolio.day_loss_pct()
        if not self._day_awaits_recovery:
            self._dd_breached = dd > risk.max_drawdown_pct
            self._dl_breached = dl > risk.daily_loss_limit_pct
        detail: dict[str, Any] = {
            "state": self.state.value, "reason": self.state_reason, "approval": self.approval_mode,
            # Positions as `ffe ctl status` counts them: dust (less than the venue takes an order for) apart.
            "recovered_orders": len(recovered), "positions": len(self.portfolio.held_symbols()),
            "dust": sum(1 for sym in self.portfolio.positions if self.portfolio.is_dust(sym)), "pid": os.getpid(),
            "backtest": self.profile.name == BACKTEST.name}
        # Not paused for (it may be a limit lowered since the last run): said, as the gate refuses every entry now.
        breached = []
        if self._dd_breached:
            breached.append(f"DRAWDOWN {fmt.beyond(dd, risk.max_drawdown_pct)}% > {risk.max_drawdown_pct:g}%")
        if self._dl_breached:
            breached.append(f"DAILY_LOSS {fmt.beyond(dl, risk.daily_loss_limit_pct)}% > "
                            f"{risk.daily_loss_limit_pct:g}%")
        if breached and self.profile.resumable:
            detail["breached"] = breached
            log.warning(f"{' and '.join(breached)}: the gates refuse every entry until it is back within the limit "
                        "(risk.max_drawdown_pct, risk.daily_loss_limit_pct)")
        if self.profile.resumable and await self.store.last_run_phase() == "start":
            # Killed, or the machine stopped: what it did is as committed, and the orders it had in flight were
            # recovered above; the operator reading the trail or the page should know the run was cut short.
            detail["last_run"] = LAST_RUN_CUT
            why = "killed, the machine stopped, a full disk, or a backup restored"
            if stopped_unwritable:  # no stop record either could be written
                why = detail["last_run_why"] = LAST_RUN_UNWRITABLE
            log.warning(f"the last run {LAST_RUN_CUT} ({why}); its records are as committed and its orders in "
                        "flight were recovered")
        if self.opts.set_aside is not None:
            detail["set_aside"] = self.opts.set_aside
        # A loss set aside at an earlier start that no resume has checked (that start failed, or was killed, before
        # its record and page): said again, as the pause it holds the engine in is for it.
        own = os.path.basename(str(self.opts.set_aside.get("file", ""))) if self.opts.set_aside else None
        earlier = [{**a.as_dict(), "file": str(p)} for p, a in losses if p.name != own]
        if earlier:
            detail["set_aside_earlier"] = earlier
        if self.opts.trail_check is not None:
            damaged = await self.opts.trail_check
            if damaged is not None:
                detail["trail_damaged"] = damaged
        unwatched = sorted(set(self.portfolio.positions) - set(self.settings.engine.symbols))
        if unwatched:
            # Held, but no candle of theirs comes: no stop-loss or take-profit watches them, no signal exits them.
            detail["unwatched"] = unwatched
            # The paper venue fills on the symbol's candles only: there, adding it back is the only way to close it.
            where = ("add the symbols back to engine.symbols to close them (the paper venue fills no order without "
                     "their candles)" if self.sim_venue is not None else "add the symbols back or close them on the "
                     "exchange")
            log.warning("positions in symbols not traded (engine.symbols): no price comes for them, so no stop-loss, "
                        f"take-profit or signal exits them; {where}", symbols=",".join(unwatched))
        # The first start after a restore says so, and names the alerts the backup held pending that the restore
        # did not deliver again: nobody may have delivered them (alerts.py pages then).
        restored = await self.store.get_kv(RESTORE_ALERTS_KEY, None)
        if isinstance(restored, dict):
            detail["restored"] = restored
        self.bus.publish(RunEvent(phase="start", mode=self.mode, detail=detail))
        self._run_recorded = True
        if restored is not None:
            await self.store.delete_kv(RESTORE_ALERTS_KEY)  # after the start's record and its alert are written
        self.overrides = [o for o in found if o is not None]
        for o in self.overrides:
            self.bus.publish(OverrideEvent(**o.as_dict()))
            log.warning("saved state over configuration", setting=o.setting, configured=o.configured,
                        saved=o.saved, effective=o.effective, detail=o.message)
        await self._without_candles()
        if self.profile.venue_checks:
            # Before any new order: the journal against the venue (orders in flight, fills while down, positions),
            # and a difference found then looked at again before the engine trades.
            await self._start_reconcile()
            for _ in range(3):
                if self._recheck_at is None:
                    break
                await self.clock.sleep(max(0.0, self._recheck_at - self.clock.monotonic()))
                await self._start_reconcile()
        await self.approvals.expire()
        if self.state is EngineState.HALTED:
            # A halt rejects every pending approval; a HALTED stored without the engine (kept across a restore, or
            # stored alone on a full disk) could not: none may be approved after a re-arm.
            await self.approvals.reject_all("engine", f"the engine started HALTED ({self.state_reason})")
        history = getattr(self.feed, "history", None)
        if history is not None and self.settings.engine.warmup_bars > 0:
            bar_ts = None
            warmup = await _maybe_await(history(self.settings.engine.warmup_bars))
            if isinstance(warmup, dict):  # per symbol (the exchange feed): into one time order
                warmup = sorted((c for candles in warmup.values() for c in candles), key=lambda c: c.ts)
            for n, c in enumerate(warmup, 1):
                if not n % WARMUP_TURN:
                    await asyncio.sleep(0)  # the loop's other tasks (the console's keys, the control socket) run
                if bar_ts is not None and self._period_ends(bar_ts, c.ts):
                    self.portfolio.record_returns()  # the history's returns feed VaR and correlation
                bar_ts = c.ts
                # The history is market data: DATA_STALE measures its newest bar until a new one closes.
                self.last_bar_ts[c.symbol] = self._marked_ts[c.symbol] = c.ts
                self.ind[c.symbol].update(c)
                self.portfolio.mark(c.symbol, c.close)
                if self.sim_venue is not None:
                    self.sim_venue.set_price(c.symbol, c.close)
            # The history's last bar stays open, as on_candle leaves every bar: the feed's next bar closes it. A
            # candle of it may still come (a restart between two symbols' candles of one bar, an exchange that had
            # not served one symbol's newest candle yet): closed here, the bar would give each symbol two returns,
            # one of them 0, out of step with the other symbols'.
            self._bar_ts = bar_ts
        if self._levels_owed:
            await self._give_levels()
        # A midnight by the clock that the warm-up marked the bar closing at (or more than a bar ago) begins the day.
        self._roll_day(self._marked_at(self.clock.now_ms()))
        if self.sim_venue is not None and self.orders.live:
            # The paper venue has its prices from the warm-up now: an order in doubt that it never had (a kill right
            # after the journal entry) goes to it again before the next candle, which fills it at its open.
            await self.orders.poll()
        self.started = True
        self.liveness.started()
        await self.flush()
        log.info("engine started", mode=self.mode, state=self.state.value, approval=self.approval_mode,
                 symbols=",".join(self.symbols))

    async def _load_market(self) -> Override | None:
        """A market made or replayed in the process continues from its stored state (the simulated one: prices, bar
        time, recent bars; a replay: the candle after the last one handed out), whatever the order of the symbols,
        and never from before the latest time the records say the clock reached: positions and orders are not
        replayed on a past again, while a symbol's candle of the bar a stop fell in, not processed yet, still is.
        Another source's market refuses the start (MarketStateError, exit 2); one that cannot be read is a damaged
        database."""
        assert self.sim_feed is not None
        saved = await self.store.get_kv("market")
        if not saved:  # books made on an exchange's market go on only on it
            check_books(None, await self.store.exchange_books(), self.settings.market.source)
        if saved:
            try:
                self.sim_feed.load(saved)
            except ValueError as exc:
                raise damaged_database(self.store.path, f"table kv, key market: {exc}") from None
        # The last bar decided was decided at its close: its open plus the timeframe of the market it was decided on
        # (the saved one's, which a load has read; without a saved market, this one's).
        decided_tf = int(saved["timeframe_ms"]) if saved else self.timeframe_ms
        reached = await self.store.market_time(decided_tf)
        if reached is not None:
            # Each symbol's own candles processed too: a kill after an order was committed and before the books were
            # stored leaves the saved market a candle behind that order's (its fill would be at the deciding open).
            self.sim_feed.not_before(reached, await self.store.candles_done(self.symbols, decided_tf))
            if self.sim_venue is not None:
                # The bar the records reached may be handed out again (decided anew): an order sent again at the
                # start (journaled just before a kill) is no older than that bar, and fills from the next one.
                self.sim_venue.resume_at(reached - decided_tf)
        return overrides.market(self.settings.market.seed, saved) if saved else None

    async def _feed_not_before(self) -> None:
        """An exchange's candles go on by its own clock, never from before the market time the records reached
        (ExchangeFeed.not_before): one set back is not decided on again in a past the records have left. Books made
        on a market of the process's own (the simulated one, a replay: its state saved with them) go on only on it:
        MarketStateError (exit 2), as that market's start refuses another source's books."""
        floor = getattr(self.feed, "not_before", None)
        if floor is None:
            return
        saved = await self.store.get_kv("market")
        if saved:
            try:
                check_source(saved, "exchange")
            except ValueError as exc:
                raise damaged_database(self.store.path, f"table kv, key market: {exc}") from None
        reached = await self.store.market_time(self.timeframe_ms)
        if reached is not None:
            floor(reached, await self.store.candles_done(self.symbols, self.timeframe_ms))
        await self._clock_not_before()

    async def _clock_not_before(self) -> None:
        """Market time read off the system clock goes on from the latest the books hold (SteadyClock): a clock
        behind it (set back, or set right after running ahead) holds market time there until it catches up, said
        once here; entries meanwhile measure their market as stale, as they did while the clock ran ahead. Only the
        clock's own stamps count: an exchange's candles go by its clock, which may run ahead of this machine's."""
        if not isinstance(self.clock, SteadyClock):
            return
        reached = await self.store.stamped_time()
        if reached is None:
            return
        self.clock.not_before(reached)
        behind = self.clock.behind_ms()
        if behind:
            log.warning("the clock is behind the market time the records reached: market time holds there until "
                        "the clock catches up", reached=fmt.iso_ms(reached), behind_s=round(behind / 1000, 3))

    async def _check_quote(self) -> None:
        """The books keep their cash in the quote currency the account began with: counted in another, the whole
        cash would be a difference, and an accept would write it off. A venue.quote changed on an account with books
        refuses the start (nothing written); a fresh account takes the configured one. An account of an ffe that did
        not store it is known by the symbols its orders and positions are in."""
        configured = self.settings.venue.quote
        stored = saved = await self.store.get_kv(BOOKS_QUOTE_KEY)
        if saved is None:
            traded = await self.store.quotes_traded()
            saved = traded[0] if len(traded) == 1 else None
        refused = overrides.quote_refused(configured, saved)
        if refused is not None:
            raise StartError(self.settings.blame(("venue", "quote"), refused))
        if stored is None:
            await self.store.put_kv(BOOKS_QUOTE_KEY, configured, self.clock.wall())

    async def _own_starting_cash(self, saved_books: Any) -> Override | None:
        """A paper account's own starting cash, taken for its books: stored at its first start (the first of an ffe
        that stores it takes the configured figure it ran with; a backtest run's, for `ffe doctor`), and kept over
        a `venue.starting_cash` changed since, which applies to a fresh data directory: the simulated exchange's
        balances go on from it too. An account with no books and no simulated exchange's book yet (a first start
        killed at once) is fresh still: it takes the configured figure."""
        configured = self.settings.venue.starting_cash
        saved = await self.store.get_kv(STARTING_CASH_KEY)
        fresh = saved_books is None and await self.store.get_kv("paper_venue") is None
        if saved is None or fresh:
            if saved != configured:
                await self.store.put_kv(STARTING_CASH_KEY, configured, self.clock.wall())
            return None
        own = self.portfolio.starting_cash = float(saved)  # a finite number: the start's record checks (bookshapes)
        if saved_books is None:  # nothing booked yet (an order placed, then a kill): the books begin at it too
            pf = self.portfolio
            pf.cash = pf.peak_equity = pf.day_start_equity = own
        return overrides.starting_cash(configured, saved)

    async def _load_weights(self) -> Override | None:
        saved = await self.store.get_kv("weights")
        if saved and self.learner is not None:
            self.learner.load(saved.get("weights", {}), saved.get("stats", {}))
            if self.opts.adaptive:
                self.ensemble.set_weights(self.learner.weights)
                if self.profile.resumable:
                    return overrides.weights(True, {"weights": self.learner.weights})
        return None

    async def run(self) -> None:
        """Consume the feed until it ends or a stop is requested."""
        if not self.started:
            await self.start()
        if self.profile.venue_checks:
            self._tasks.append(asyncio.create_task(self._housekeeping(), name="ffe-housekeeping"))
        try:
            if self.profile.synchronous_feed:
                # A backtest never waits for its feed: take the candles synchronously.
                if self.profile.skip_idle and self.signals is not None and isinstance(self.feed, ReplayFeed):
                    await self._replay(self.feed, self.signals)
                    return
                on_candle, stop = self.on_candle, self._stop
                for c in self.feed.iter_candles():
                    await on_candle(c)
                    if stop.is_set():
                        break
            else:
                await self._run_paced()
        except StorageError as exc:
            raise await self._storage_failed(exc) from None
        except Exception as exc:
            self.crashed = exc
            self.bus.publish(ErrorEvent(message=f"{type(exc).__name__}: {exc}", where="engine loop"))
            log.error("engine loop failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._finishing = True  # no new command changes anything from here: the stop is under way
            if self.before_stop is not None:
                await self.before_stop()
            try:
                await self.stop()
            finally:
                if self.after_stop is not None:
                    self.after_stop()

    async def _run_paced(self) -> None:
        it = self.feed.candles().__aiter__()
        stop_wait = asyncio.ensure_future(self._stop.wait())
        nxt: asyncio.Future[Candle] | None = None
        stamp = self.liveness.turn
        clock = self.clock
        woke = False  # the loop came back later than its waits allow: frozen (SIGSTOP, a paused VM) or held
        bar: list[Candle] = []  # the candles of the newest bar traded (one a symbol, one after the other)
        try:
            while not self._stop.is_set():
                if nxt is None:
                    nxt = asyncio.ensure_future(it.__anext__())
                # Bounded waits: a quiet market still turns the loop, so only a hung loop stops stamping.
                asked = clock.monotonic()
                done, _ = await asyncio.wait({nxt, stop_wait}, timeout=TURN_S, return_when=asyncio.FIRST_COMPLETED)
                woke = woke or clock.monotonic() - asked > TURN_S + WAKE_S
                if not done:
                    stamp()
                    continue
                if nxt not in done:
                    break
                got, nxt = nxt, None
                try:
                    c = got.result()
                except StopAsyncIteration:
                    self._stopped_why = "the market feed ended"
                    break
                if woke or self.liveness.loop_age() > TURN_S + WAKE_S:
                    # The process was frozen or held meanwhile: what the operator asked then (a halt waiting in the
                    # control socket, SIGUSR1) goes before the bar is traded.
                    woke = False
                    await clock.sleep(WAKE_S)
                await self.on_candle(c)
                stamp()
                bar = [*bar, c] if bar and bar[0].ts == c.ts else [c]
            # A stop asked in the middle of a bar (a frozen engine woken with the stop and a candle both there): its
            # other symbols' candles are traded first, as many as it lacks, so that the next start does not begin
            # after a bar some symbols never traded. At most one a symbol, each waited for a turn at most; a candle
            # of a later bar (a symbol whose file ended lacks from every bar) is left to the next start, which the
            # feed's state hands it to as it was not traded.
            for _ in range(len(self.symbols) - len(bar) if self._stop.is_set() and bar else 0):
                if nxt is None:
                    nxt = asyncio.ensure_future(it.__anext__())
                finished, _ = await asyncio.wait({nxt}, timeout=TURN_S)
                if not finished:
                    break
                got, nxt = nxt, None
                try:
                    c = got.result()
                except StopAsyncIteration:
                    break
                if c.ts != bar[0].ts:
                    break
                await self.on_candle(c)
                stamp()
        finally:
            if nxt is not None:
                nxt.cancel()
            stop_wait.cancel()

    def request_stop(self) -> None:
        self._stop.set()

    def stop_asked(self) -> bool:
        """Whether an orderly stop has been asked for (it may be under way)."""
        return self._stop.is_set()

    def ended(self) -> str | None:
        """Why the engine's run has ended (it crashed, or stopped), None while it has not. An ended engine takes no
        command that would change its state or place or cancel an order: nothing runs its orders any more."""
        if self.crashed is not None:
            return f"crashed: {type(self.crashed).__name__}: {self.crashed}"
        return self._stopped_why if self.stopped else None

    def _still_running(self, halting: bool = False) -> None:
        """ControlError unless the engine runs. `halting`: a kill switch, taken while the stop waits for the
        commands under way too (the venue and the store still open): HALTED stored is what the operator meant."""
        why = self.ended()
        if why is not None:
            raise ControlError(f"the engine has stopped ({why}); nothing was done: start it again")
        if self._finishing and not halting:
            raise ControlError("the engine is stopping (the commands under way are carried out first); nothing was "
                               "done: it starts again in the state it is left in")

    async def stop(self) -> None:
        """Orderly stop: state and books stored, nothing cancelled (the engine starts in the state it was left in)."""
        if self.stopped:
            return
        self.stopped = True
        self._stop.set()
        under_way = [*self._tasks, *self._rests, *self.orders.late]
        if self._controls.busy():
            # A control under way (an approve, a cancel, a close: its caller's own task) is carried out too, its
            # order answered and booked before the venue's connection is closed under it.
            under_way.append(asyncio.ensure_future(self._controls.idle()))
        if under_way:
            # Housekeeping ends after its current round: cancelled, it could lose a journal write half done (an
            # order resolved in memory, not yet in the database). A kill switch's or flatten's rest is done too
            # (its cancels, its closing orders, and those past their bound). Forced after engine.stop_timeout_s.
            await asyncio.wait(under_way, timeout=self.settings.engine.stop_timeout_s)
        await cancel_and_wait(under_way)
        try:
            if not isinstance(self.crashed, StorageError):  # else nothing more can be written
                await self._persist_books()
                self.bus.publish(RunEvent(phase="stop", mode=self.mode, detail={
                    "state": self.state.value, "bars": self.bars, "equity": round(self.portfolio.equity(), 2)}))
                await self.flush()
        finally:
            await self._close_connections()
        log.info("engine stopped", state=self.state.value, bars=self.bars)

    async def start_failed(self, exc: BaseException) -> None:
        """The start did not complete: the run it recorded ends on the record (with the error, unless it was
        given up by a stop signal), and its connections are closed. Nothing is stored of the books."""
        self.stopped = True
        try:
            hold = self._request_hold_change() if not isinstance(exc, StorageError) else {}
            if hold:  # a ban met by the start (its warm-up's history, say) holds the next one too
                with contextlib.suppress(StorageError):
                    await self.store.put_kvs(hold, self.clock.wall())
                    self._request_hold_stored = hold[REQUEST_HOLD_KEY]
            if self._run_recorded and not isinstance(exc, StorageError):
                detail: dict[str, Any] = {"state": self.state.value, "bars": 0,
                                          "equity": round(self.portfolio.equity(), 2)}
                if isinstance(exc, Exception):
                    # The host's own words for the failure (FfeError) as they are; another error with its kind.
                    message = str(exc) if type(exc) is FfeError else f"{type(exc).__name__}: {exc}"
                    self.bus.publish(ErrorEvent(message=message, where="start"))
                    detail["error"] = message
                self.bus.publish(RunEvent(phase="stop", mode=self.mode, detail=detail))
                await self.flush()
        finally:
            await self._close_connections()

    async def _close_connections(self) -> None:
        """The providers', the venue's and the feed's connections, the feed's even if the others fail to close."""
        try:
            await close_providers(self.providers)
            await self.venue.close()
        finally:
            close = getattr(self.feed, "close", None)
            if close is not None:
                await close()

    async def _storage_failed(self, exc: StorageError) -> StorageError:
        """A record could not be written (full disk, read-only directory): no order may go out that the journal
        cannot hold. HALTED in memory at once, stored if it still can be, and the engine stops. Returns the
        failure as reported (the first one, if the bar loop and housekeeping both met it)."""
        if isinstance(self.crashed, StorageError):
            return self.crashed
        if not self.profile.resumable:  # a backtest: nothing trades after it, and no start comes after it to halt
            self.crashed = exc
            self._stop.set()
            return exc
        stored = await self.trading.halt_unrecordable("records cannot be written", "engine")
        if stored:
            outcome = "HALTED"
        elif self.store.reserve_used:  # the emptied disk reserve says it at the next start
            outcome = "(HALTED could not be stored; the next start comes up HALTED all the same)"
        else:
            outcome = "(HALTED could not be stored)"
        failure = StorageError(f"{exc}; the engine stopped {outcome}")
        self.crashed = failure
        self._stop.set()
        if self.on_records_unwritable is not None:
            self.on_records_unwritable(failure)
        return failure

    async def flush(self) -> None:
        await self.store.flush()
        if self.audit is not None:
            await self.audit.flush()
        self._since_flush = 0

    async def _persist_books(self, records: dict[str, Any] | None = None, *, drop: tuple[str, ...] = (),
                             publish: Callable[[], object] | None = None) -> None:
        """The books as they stand, in one transaction (one sync a bar, not one per key): a crash never leaves the
        portfolio, the simulated market, the paper venue or the weights a bar ahead of the others. `records` (and
        `drop`, keys deleted) change with the books, and `publish` publishes the events that say so: all in it."""
        books: dict[str, Any] = {"portfolio": self._books_state(), **(records or {})}
        if self.sim_feed is not None:
            # Stored by another task while a candle is in hand (the housekeeping, a control), the market's place is
            # before it (ResumableFeed.processed): a restart hands it out again unless the records say it was decided.
            books["market"] = self.sim_feed.state()
        books.update(self._venue_book())
        books.update(self._request_hold_change())
        learner = self.learner if self._learner_dirty else None
        if learner is not None:
            books["weights"] = _learner_record(learner)
        await self.store.put_kvs(books, self.clock.wall(), drop=drop, publish=publish)
        if REQUEST_HOLD_KEY in books:
            self._request_hold_stored = books[REQUEST_HOLD_KEY]
        if learner is not None:
            self._learner_dirty = False

    def _books_state(self) -> dict[str, Any]:
        """The portfolio as it is stored. While its cash is the venue's balance not yet taken by a reconciliation
        (`_cash_from_venue`), a fill booked on it may be one that balance had already paid for or received (an order
        in flight recovered at the start, a restore's order recovered): that cash may count the fill twice, and is
        stored as none (null). A start after a kill meanwhile takes the venue's cash again, as the first did; the
        reconciliation that takes it stores the books at once."""
        state = self.portfolio.state()
        if self._cash_from_venue:
            state["cash"] = None
        return state

    def cash_unreconciled(self) -> bool:
        """The cash is the venue's quote balance, not yet taken by a reconciliation, and fills were booked on it that
        the balance may already hold (a restore's recovered orders, an order in flight recovered by the start): the
        cash, the equity, the day's P&L and the drawdown in memory may count them twice, and are not shown as the
        account's (status, profit, the console) until a reconciliation takes the cash."""
        return self._cash_from_venue and self._cash_charged

    async def _store_request_hold(self, until: float) -> None:
        """The exchange's Retry-After on every request, stored as soon as the venue is given it: before the answer
        that asked for it goes further, so before anything else is sent (as the order path stores its hold on
        orders). With the books only, an engine killed in between let the next start send within the ban."""
        if until == self._request_hold_stored:
            return
        await self.store.put_kvs({REQUEST_HOLD_KEY: until}, self.clock.wall())
        self._request_hold_stored = until

    def _request_hold_change(self) -> dict[str, Any]:
        """The exchange's Retry-After on every request (until when, or None once over) when it changed since it was
        last stored: a start within it sends nothing (the host restores it)."""
        held = getattr(self.venue, "requests_held_until", None)
        if held is None:
            return {}
        until = held()
        return {REQUEST_HOLD_KEY: until} if until != self._request_hold_stored else {}

    def _venue_book(self) -> dict[str, Any]:
        """The paper venue's book if it changed since it was last stored, to store with the journal entry or fill
        that changed it (a run that is not resumed skips it)."""
        sim = self.sim_venue
        if sim is None or not sim.dirty or not self.profile.resumable:
            return {}
        sim.dirty = False
        return {"paper_venue": sim.state()}

    async def _housekeeping(self) -> None:
        """Work that goes on between bars: orders in flight, approval expiry, periodic reconciliation."""
        poll_s = self.settings.engine.order_poll_s
        reconcile_s = self.settings.engine.reconcile_interval_s
        clock = self.clock
        next_poll = clock.monotonic()
        while not self._stop.is_set():
            # The rounds are paced in real time; what each round does is decided on the clock's time.
            try:
                await asyncio.wait_for(self._stop.wait(), min(1.0, poll_s))
                return
            except asyncio.TimeoutError:
                pass
            try:
                self.store.check_in_place()  # the database file removed under the engine: it stops, HALTED
                if self.audit is not None:
                    self.audit.check_in_place()  # so does the audit trail's
                # A UTC midnight by the clock begins a new day, whether a candle comes or not (a stale feed).
                self._roll_day(self._marked_at(clock.now_ms()))
                await self.approvals.expire()
                now = clock.monotonic()
                # Orders in flight, and those ended without the venue's word (watched: one that shows up open is
                # cancelled at once, HALTED too, when nothing else is in flight).
                if (self.orders.live or self.orders.watching()) and self.sim_venue is None and now >= next_poll:
                    next_poll = now + poll_s
                    await self.orders.poll()
                settled = self._compare_waits and not self.reconciler.unsettled()
                recheck = self._recheck_at is not None and now >= self._recheck_at
                if settled or recheck or now >= self._reconciled_at + reconcile_s:  # from the last one, the start's
                    await self.reconcile()
                self._read_markets()
                await self._exits_after_hold()
                await self._follow_flatten()
                await self._follow_failed_cancels()
                await self._probe_breaker()  # here only, never in a bar's way: it may wait on the exchange
                await self._breaker_pause()
                await self._persist_books()
                await self.flush()
            except asyncio.CancelledError:
                raise
            except StorageError as exc:  # nothing can be recorded: the engine stops
                await self._storage_failed(exc)
                return
            except Exception as exc:  # housekeeping must keep going; the failure is recorded
                self.bus.publish(ErrorEvent(message=f"{type(exc).__name__}: {exc}", where="housekeeping"))

    # ================================================================== the bar
    async def on_candle(self, c: Candle) -> None:
        sym = c.symbol
        if self._bar_ts is not None and c.ts != self._bar_ts:
            self.close_books(c.ts)
        self._bar_ts = c.ts
        self.last_bar_ts[sym] = c.ts
        self.bars += 1
        self.bars_by_symbol[sym] = self.bars_by_symbol.get(sym, 0) + 1
        pf = self.portfolio
        profile = self.profile
        self._roll_day(c.ts)
        # A backtest's paper venue changes an order only when a candle of its symbol fills it (it answers the order
        # path's own requests at once): a candle that filled nothing has no news for the orders in flight.
        news = self._sim_on_candle(c) if self._sim_on_candle is not None else 1
        if self.orders.live and (news or not profile.synchronous_feed):
            await self.orders.poll()
        pf.mark(sym, c.close)
        if self._levels_owed:
            await self._give_levels()
        pos = pf.holding(sym)  # dust (less than the venue can sell) has no exits to watch
        if pos is not None:
            await self._monitor(c, pos)
        ind = self.ind[sym]
        signals = self.signals
        if signals is None:
            ind.update(c)
            decide: bool | None = ind.warm
        else:
            i = self.bars_by_symbol[sym] - 1
            # Without a position before the exits were watched there is none now (only an exit changes it then).
            held = pos is not None and pf.holding(sym) is not None
            decide = signals.bar(sym, i, c.ts, ind, held)
            if decide is None:
                self.ids.skip()  # a decision that cannot trade, unrecorded: its id is taken all the same
        if decide:
            failed: list[str] = []
            if signals is not None and not signals.every_decision:
                votes = signals.votes(sym, i)
            elif self.async_providers:
                votes, failed = await self.ensemble.gather(self.providers, ind)
            else:
                votes, failed = self.ensemble.collect_sync(self.providers, ind)
            res = self.ensemble.decide(votes, failed)
            d = Decision(decision_id=self.ids.new("d"), symbol=sym, ts=c.ts, price=c.close, ensemble=res)
            if res.action is Action.HOLD:  # most bars: nothing to act on
                d.outcome = "hold"
            else:
                if signals is not None and not signals.every_decision:
                    signals.load(sym, i, ind)  # the bar's indicators, which sizing reads
                    self._stretch_loaded.pop(sym, None)
                await self._act(d, c, ind)
            self._record_decision(d)
        self._marked_ts[sym] = c.ts
        self.liveness.bar(sym)
        if self.opts.max_bars is not None and min(self.bars_by_symbol.values()) >= self.opts.max_bars:
            self._stopped_why = f"it ran its {self.opts.max_bars} bars (--max-bars)"
            self._stop.set()
        if self._data_ends and self._data_ends.get(sym) == c.ts:
            await self._data_ended(sym)
        if profile.publish_bars:
            self.bus.publish(BarEvent(symbol=sym, bar_ts=c.ts, close=c.close, equity=pf.equity()))
        if profile.pause_on_breach:
            await self._risk_pauses()
            await self._breaker_pause()
        # Done with: the books stored from here on hold it as handed out.
        if self.sim_feed is not None:
            self.sim_feed.processed(c)
        if profile.resumable:
            await self._persist_books()
            await self.flush()
        else:
            self._since_flush += 1
            if self._since_flush >= self.opts.flush_every:
                await self._persist_books()
                await self.flush()
                # The bar loop never waits otherwise: give the loop a turn, so a ^C (a cancel) lands here.
                await asyncio.sleep(0)

    async def _data_ended(self, symbol: str) -> None:
        """`symbol`'s last candle of a replay that goes on with other symbols: its orders in flight are cancelled
        through the order path, since nothing can fill them now; kept, an entry would count as one in flight and hold
        its cash to the end of the run. Its position stays, marked at its last close."""
        self._no_candles[symbol] = "its replay file has ended: point market.replay_files at one that goes on"
        if not any(o.symbol == symbol for o in self.orders.live.values()):
            return
        report = await self.orders.cancel_all(symbol)
        log.warning("market data ended: its orders in flight cancelled", symbol=symbol,
                    cancelled=",".join(report.cancelled), failed=len(report.failed))

    async def _without_candles(self) -> None:
        """At the start, on the paper venue: the symbols no candle will come for (not in engine.symbols, or a replay
        file that ends before the market time) have their orders in flight cancelled through the order path, as
        _data_ended does, since the paper venue fills an order only on its symbol's candles; kept, an exit would
        stay working for ever and refuse every close. Each is said in a warning with what the operator can do on
        this account; its position stays, marked at its last price. A real exchange fills without candles: there
        its orders are left working (the start's warning about symbols not traded says the rest)."""
        if self.sim_venue is None:
            return
        traded = set(self.symbols)
        held = set(self.portfolio.positions) | {o.symbol for o in self.orders.live.values()}
        for sym in sorted(held - traded):
            self._no_candles[sym] = "it is not in engine.symbols: add it back to engine.symbols to trade or close it"
        if isinstance(self.feed, ReplayFeed):
            for sym, last in self.feed.ended().items():
                self._no_candles[sym] = (f"its replay file ends at {fmt.iso_ms(last)}, before the market time: point "
                                         "market.replay_files at one that goes on from there to trade or close it")
        for sym, why in sorted(self._no_candles.items()):
            pos = self.portfolio.positions.get(sym)
            if pos is None and not any(o.symbol == sym for o in self.orders.live.values()):
                continue  # nothing open in it (a replay run to its end, started again): nothing to cancel or say
            report = await self.orders.cancel_all(sym)
            said = {"cancelled": ",".join(report.cancelled), "failed": len(report.failed),
                    "position": f"{pos.quantity:.8g}" if pos is not None else ""}
            log.warning("no candle of this symbol comes to the paper venue, so no order in it can fill: its orders "
                        f"in flight cancelled, its position kept; {why}", symbol=sym,
                        **{k: v for k, v in said.items() if v})
        if self._no_candles:
            await self._persist_books()
            await self.flush()

    def _without_candles_said(self, symbol: str) -> str | None:
        """Why no order in `symbol` can be sent, when the paper venue could never fill it (no candle of its symbol
        comes to it), with what the operator can do; None otherwise. The one rule for a close, an operator's order
        and a flatten (with its follow-up), which send nothing for it."""
        why = self._no_candles.get(symbol)
        if why is None:
            return None
        return f"no candle of it comes to the paper venue, so no order in it can fill there; nothing was sent: {why}"

    def _refuse_without_candles(self, symbol: str) -> None:
        """ControlError for an order the paper venue could never fill: no candle of its symbol comes to it."""
        said = self._without_candles_said(symbol)
        if said is not None:
            raise ControlError(f"{symbol}: {said}")

    async def _replay(self, feed: ReplayFeed, signals: BarSignals) -> None:
        """A replay's candles through on_candle, except while no approval is pending: then the candles up to the
        next one that may trade, or one of a symbol with an order in flight, are booked in one step (_idle_stretch),
        with the same result."""
        symbols = feed.symbols
        order = feed.order()
        n = len(order)
        per_symbol = [signals.idle_marks(sym, s.ts) for sym, s in zip(symbols, feed.series)]
        if self.opts.max_bars is not None or any(m is None for m in per_symbol):
            marks = bytes([FIRST]) * n  # every candle through on_candle
        else:
            # Each candle's mark from its symbol's: the order names the symbol, whose marks come in bar order.
            each = [iter(m) for m in per_symbol if m is not None]
            marks = bytes(map(next, map(each.__getitem__, order)))
        stops = flat_stops(marks)
        # Every bar a candle of each symbol, in symbol order (the files share their bar times): the usual case.
        aligned = n % len(symbols) == 0 and order == bytes(range(len(symbols))) * (n // len(symbols))
        orders, approvals = self.orders, self.approvals
        candle, advance, tf, stop = feed.candle, self.clock.advance, feed.timeframe_ms, self._stop
        rows = [self.bars_by_symbol[sym] for sym in symbols]  # the next candle's index in each series
        p = 0
        while p < n:
            if not marks[p] & FIRST and not approvals.pending:
                # The symbols whose candles go through on_candle while their orders are in flight: a candle of
                # another symbol changes nothing of those orders at the paper venue (only its own fills them).
                busy = {symbols.index(o.symbol) for o in orders.live.values()} if orders.live else set()
                # Up to where the next flush is due at most, so that it stores the books as they are then.
                limit = min(n, p + self.opts.flush_every - self._since_flush)
                q = p if order[p] in busy else await self._idle_stretch(feed, signals, order, marks, rows, p,
                                                                          limit, busy, stops, aligned)
                if q > p:
                    p = q
                    if stop.is_set() or p == n:
                        break
                    if p == limit:
                        continue
                    # Short of its limit, a stretch stops at a candle that goes to on_candle.
            k = order[p]
            i = rows[k]
            rows[k] = i + 1
            c = candle(k, i)
            advance(c.ts + tf)
            await self.on_candle(c)
            p += 1
            if stop.is_set():
                break
        self._stretch_records()

    async def _idle_stretch(self, feed: ReplayFeed, signals: BarSignals, order: bytes, marks: bytes,
                            rows: list[int], start: int, limit: int, busy: set[int], stops: bytes,
                            aligned: bool) -> int:
        """The replay's candles from `start` up to the first that may trade, the first of a `busy` symbol (one with
        an order in flight) or `limit`: what on_candle would do with each (close the bars, roll the days, mark,
        count, decide and take the decisions' ids, flush when due), in one step. A candle may trade when it is a
        symbol's first, when it reaches its position's stop-loss or take-profit, or when the ensemble says BUY with
        no position (or dust) or SELL with one; the ensemble's weights change only when a trade closes. Returns where
        it stopped. `stops`: batch.flat_stops of `marks`; `aligned`: the order gives every bar a candle of each
        symbol, in symbol order."""
        pf = self.portfolio
        positions, dust_at = pf.positions, pf.dust_at
        symbols, series = feed.symbols, feed.series
        action, ensemble = signals.action, self.ensemble
        before = list(rows)
        decided: dict[int, tuple[int, int, str]] = {}  # symbol -> its last decision: id, bar, outcome
        loaded: dict[int, int] = {}  # symbol -> the bar of its last decision that loaded the indicators
        ids = self.ids.taken  # decision numbers taken so far
        # The candles up to the first that may trade, found first; then booked (Portfolio.book_candles): nothing
        # the books change in a stretch (marks, closed bars, days) decides where it ends.
        p = start
        if not positions and not busy:
            # Holding nothing, only a symbol's first candle or a BUY could trade: the candles up to the next of
            # those (found at C speed) take their decisions' ids, and only those are looked at.
            while p < limit:
                q = stops.find(1, p, limit)
                if q < 0:
                    q = limit
                if q > p:
                    ids += q - p - marks.count(0, p, q)  # a decision at every candle marked but WARMING
                    for k in range(len(rows)):
                        rows[k] += order.count(k, p, q)
                    p = q
                    if p == limit:
                        break
                if marks[p] & FIRST:
                    break
                k = order[p]
                i = rows[k]
                sym = symbols[k]
                verdict = action(sym, i, ensemble)
                if verdict is Action.BUY:
                    break
                decided[k] = (ids + 1, i, "hold" if verdict is Action.HOLD else "no_position")
                if verdict is not Action.HOLD:
                    loaded[k] = i
                ids += 1
                rows[k] = i + 1
                p += 1
        else:
            while p < limit:
                mark = marks[p]
                if mark & FIRST:
                    break
                k = order[p]
                if k in busy:
                    break
                i = rows[k]
                sym = symbols[k]
                s = series[k]
                pos = positions.get(sym)
                if pos is not None and dust_at(sym, s.close[i]):
                    pos = None  # dust, which on_candle holds as no position (Portfolio.holding at the candle's close)
                if pos is None:  # only a BUY could trade
                    code, trades, refused = BUY_CODE, Action.BUY, "no_position"
                else:  # only a SELL, or the position's stop-loss or take-profit
                    if ((pos.stop_loss is not None and s.low[i] <= pos.stop_loss)
                            or (pos.take_profit is not None and s.high[i] >= pos.take_profit)):
                        break
                    code, trades, refused = SELL_CODE, Action.SELL, "in_position"
                if mark & code:
                    verdict = action(sym, i, ensemble)
                    if verdict is trades:
                        break
                    decided[k] = (ids + 1, i, "hold" if verdict is Action.HOLD else refused)
                    if verdict is not Action.HOLD:
                        loaded[k] = i  # on_candle loads the bar's indicators for any verdict but HOLD
                if mark:
                    ids += 1
                rows[k] = i + 1
                p += 1
        if p == start:
            return p
        bar_ts = self._bar_ts = pf.book_candles(symbols, series, order, start, p, list(before), self._bar_ts,
                                                 feed.timeframe_ms, self.equity_curve if self.profile.equity_curve
                                                 else None, aligned)
        last = {k: order.rfind(k, start, p) for k in range(len(symbols)) if rows[k] != before[k]}  # last candles
        self.bars += p - start
        self.idle_bars += p - start
        self.idle_stretches += 1
        self.ids.skip(ids - self.ids.taken)
        for k in sorted(last, key=last.__getitem__):  # the venue's time ends at the stretch's last candle
            sym = symbols[k]
            i = rows[k] - 1
            self.bars_by_symbol[sym] += rows[k] - before[k]
            self.last_bar_ts[sym] = self._marked_ts[sym] = series[k].ts[i]
            if self._sim_on_candle is not None:
                self._sim_on_candle(feed.candle(k, i))
            self.liveness.bar(sym)
        for k, i in loaded.items():
            self._stretch_loaded[symbols[k]] = i
        if decided:
            weights = ensemble.weights
            for k, (n, i, outcome) in decided.items():  # the symbol's last decision, as on_candle leaves it
                self._stretch_decided[symbols[k]] = (n, i, outcome, weights)
        self.clock.advance(bar_ts + feed.timeframe_ms)
        self._since_flush += p - start
        if self._since_flush >= self.opts.flush_every:
            await self._persist_books()
            await self.flush()
            await asyncio.sleep(0)
        return p

    def _stretch_records(self, symbol: str | None = None) -> None:
        """Make what idle stretches left of `symbol` (of every symbol when None) as on_candle would have: its last
        decision (recorded) and its last indicators (loaded)."""
        signals = self.signals
        if signals is None:
            return
        for sym in [symbol] if symbol is not None else list(self._stretch_loaded):
            i = self._stretch_loaded.pop(sym, None)
            if i is not None:
                signals.load(sym, i, self.ind[sym])
        for sym in [symbol] if symbol is not None else list(self._stretch_decided):
            made = self._stretch_decided.pop(sym, None)
            if made is None:
                continue
            n, i, outcome, weights = made
            bar = signals.by_symbol[sym].columns.columns
            d = Decision(decision_id=self.ids.numbered("d", n), symbol=sym, ts=bar["ts"][i], price=bar["close"][i],
                         ensemble=self.ensemble.decide_with(weights, signals.votes(sym, i)))
            d.outcome = outcome
            self._record_decision(d)

    def close_books(self, next_ts: int | None = None) -> None:
        """Close the bar in progress, before the candle of `next_ts` (None: the last): its equity enters the equity
        curve (when kept), and, at the end of a timeframe's period, the symbols' returns. A backtest calls it once
        more after its last candle, so the last bar counts."""
        closing = self._bar_ts
        eq = self.portfolio.close_bar(returns=next_ts is None or closing is None or self._period_ends(closing, next_ts))
        if self.profile.equity_curve:
            self.equity_curve.append((self._bar_ts or 0, eq))

    def _period_ends(self, bar_ts: int, next_ts: int) -> bool:
        """Whether the candle of `next_ts` opens another timeframe period than the bar of `bar_ts`. The returns of
        VaR and correlation are one per symbol and period: files that close at different minutes (one on the hour,
        one at half past) make the books close a bar at each, and a return per bar would be 0 for the symbol without
        a candle in it, every other bar, out of phase with the other symbol's."""
        tf = self.timeframe_ms
        return next_ts // tf != bar_ts // tf

    async def _breaker_pause(self) -> None:
        """An opening of the breaker pauses a RUNNING engine once; the pause's reason follows the breaker while it
        is the breaker's own (breaker_pause.py)."""
        await self.breaker_pause.keep_in_step(self.reconcile_blocked)

    async def _probe_breaker(self) -> None:
        """An exchange's breaker open past its recovery time is probed with a balance read, when a read's success can
        close it (its order sends are not what opened it: only a send that works closes it then): an idle engine,
        nothing in flight and nobody asking, would otherwise wait for the next order to hear that the exchange
        answers again, its pause saying the breaker is open all the while. A probe that fails opens it again for
        another recovery time: at most one read per `breaker.recovery_timeout_s`."""
        b = self.breaker
        if self.sim_venue is not None or b.state == BREAKER_CLOSED or not b.allows():
            return
        if b.by_kind[BREAKER_SEND] >= b.failure_threshold or self.clock.monotonic() < self._next_probe:
            return
        # Its own pace too: an answer that is neither a failure nor a success (the exchange refusing the key) leaves
        # the breaker as it was, letting a call through.
        self._next_probe = self.clock.monotonic() + b.recovery_timeout_s
        probe = self.venue.probe if isinstance(self.venue, ProbedVenue) else self.venue.fetch_balance
        with contextlib.suppress(VenueError, VenueUnavailable, BreakerOpen):
            await b.call(probe)

    def _marked_at(self, now_ms: int) -> int:
        """The time the books' marks are at, for a new day begun by the clock: the clock's once every symbol's
        newest bar closed by it is done with, else the oldest close the marks are at (a day begun between two
        symbols' candles of the bar closing at midnight, or in the middle of one, would start at the equity of one
        unmarked, and differ by run), but never more than a bar behind the clock: a candle that late is not waited
        for."""
        tf = self.timeframe_ms
        # A symbol with no candle done in this run (no warm-up, none served) holds marks of unknown age: the day
        # waits for its candle as for a late one, a bar at most.
        behind = now_ms - tf
        marked = min((self._marked_ts[s] + tf if s in self._marked_ts else behind for s in self.symbols),
                     default=now_ms)
        return min(now_ms, max(marked, behind))

    async def _count_recovered_entries(self, cids: list[str]) -> None:
        """The entries a restore's recovery journaled count in the day they were made (DAILY_TRADES), as they did
        then: in that day's count before this run, whenever that day begins (`_roll_day`), and now if it is today."""
        for cid in cids:
            o = await self.store.order(cid)
            if o is None or not counts_in_daily_trades(o.reduce_only, o.reason):
                continue
            day = entry_day_of(o.created_ts)
            self._entries_before[day] = self._entries_before.get(day, 0) + 1
            if day == self.portfolio.day:
                self.portfolio.entries_today += 1

    def _count_entries_before(self) -> None:
        """The day's entries counted as those journaled in it before this run (`_entries_before`): the journal holds
        every entry before it is counted, and its end, so the books' stored count (one fewer after a kill between
        the journal's write and theirs, or one more after a kill between an entry's rejection and their save) is
        not taken over it."""
        pf = self.portfolio
        if pf.day is not None:
            pf.entries_today = self._entries_before.get(pf.day, 0)

    def _books_whole(self) -> bool:
        """The books hold the venue's cash, taken over stored books (a restore's, books stored without a cash), and
        the positions of its orders since a restored backup: their equity counts for the peak and the drawdown
        again. The peak and the day's start were stored before that cash, and quote moved in or out since is in it:
        no trade made it, so both begin at this equity, as a first start's do (a withdrawal is no drawdown and no
        day's loss, a deposit no profit). A DRAWDOWN or DAILY_LOSS breach is one already there (as at any start),
        not a new one. Whether the books changed (to be stored)."""
        if not self._day_awaits_recovery or self._restore_pending:
            return False
        self._day_awaits_recovery = self.portfolio.marks_held = False
        pf, risk = self.portfolio, self.settings.risk
        pf.begin_at_equity()
        pf.close_bar(returns=False)  # the deepest drawdown, from the whole books
        self._dd_breached = pf.drawdown_pct() > risk.max_drawdown_pct
        self._dl_breached = pf.day_loss_pct() > risk.daily_loss_limit_pct
        return True

    def _roll_day(self, ts_ms: int) -> None:
        """A new UTC day when `ts_ms` is in one (Portfolio.roll_day): a breach of the day before is over."""
        rolled = self.portfolio.roll_day(ts_ms)
        if rolled and self._entries_before:
            self._count_entries_before()
        if rolled and self.profile.pause_on_breach:
            self._dl_breached = False

    async def _risk_pauses(self) -> None:
        """A DRAWDOWN or DAILY_LOSS breach pauses the engine once, when it happens (not while the books are known to
        lack positions the cash already paid for: _books_whole)."""
        if self._day_awaits_recovery:
            return
        r = self.settings.risk
        pf = self.portfolio
        dd = pf.drawdown_pct()
        breached = dd > r.max_drawdown_pct
        if breached and not self._dd_breached and self.state is EngineState.RUNNING:
            await self.trading.set(EngineState.PAUSED, f"DRAWDOWN {fmt.beyond(dd, r.max_drawdown_pct)}% > "
                                                       f"{r.max_drawdown_pct:g}%", "risk")
        self._dd_breached = breached
        dl = pf.day_loss_pct()
        breached = dl > r.daily_loss_limit_pct
        if breached and not self._dl_breached and self.state is EngineState.RUNNING:
            await self.trading.set(EngineState.PAUSED, f"DAILY_LOSS {fmt.beyond(dl, r.daily_loss_limit_pct)}% > "
                                                       f"{r.daily_loss_limit_pct:g}%", "risk")
        self._dl_breached = breached

    async def _monitor(self, c: Candle, pos: Position) -> None:
        """Stop-loss and take-profit on the bar's range: an exit order through the single path.
        HALTED means cancels only: the kill switch leaves positions to the operator (flatten). The exits working
        (a stop-loss sent before, an operator's sell of a part) leave it nothing to do only where they sell all the
        venue could take: a crossed level sells the rest."""
        if self.state is EngineState.HALTED:
            return
        if self.orders.exits_sell_all(c.symbol, c.close):
            return
        if c.symbol in self._exits_held:
            return  # an exit already waits for the venue's Retry-After to end
        owed = self._exits_owed.get(c.symbol)
        if owed is not None and owed[1] == pos.opened_ts:
            intent = dataclasses.replace(owed[0], quantity=pos.quantity)
        else:
            low, high = self._range_since(c, self._priced_from.get(c.symbol))
            if low is None or high is None:
                return
            if pos.stop_loss is not None and low <= pos.stop_loss:
                reason, ref = OrderReason.STOP_LOSS, pos.stop_loss
            elif pos.take_profit is not None and high >= pos.take_profit:
                reason, ref = OrderReason.TAKE_PROFIT, pos.take_profit
            else:
                return
            intent = OrderIntent(symbol=c.symbol, side=side_to_close(pos.side), quantity=pos.quantity, reason=reason,
                                 ref_price=ref, reduce_only=True, decision_id=pos.entry_decision_id)
            self._exits_owed[c.symbol] = (intent, pos.opened_ts)
        sub = await self.orders.submit(intent)
        if sub.held_until is not None:
            self._exits_held[c.symbol] = intent
            await self._store_exits_held()
            log.warning("exit waits for the exchange's Retry-After", symbol=c.symbol, reason=intent.reason.value,
                        until=fmt.iso(sub.held_until))
        elif not sub.accepted and owed is None:
            log.warning("exit not placed: sent again at the next bar", symbol=c.symbol, reason=intent.reason.value,
                        error=sub.reason)
        await self._store_exits_owed()

    async def _store_exits_owed(self) -> None:
        """The exits owed, stored when they changed, by a run that resumes."""
        if not self.profile.resumable:
            return
        owed = self._owed_record()
        if owed != self._owed_stored:
            self._owed_stored = owed
            await self.store.put_kv(EXITS_OWED_KEY, owed or None, self.clock.wall())

    def _owed_record(self) -> dict[str, list[Any]]:
        """The exits owed as stored: of the positions still held as they were when their level was crossed."""
        pf = self.portfolio
        return {sym: [i.reason.value, i.ref_price, opened] for sym, (i, opened) in self._exits_owed.items()
                if sym in pf.positions and pf.positions[sym].opened_ts == opened}

    async def _store_exits_held(self) -> None:
        """The held exits as they stand, stored: a restart sends them once the hold is over, as this run would."""
        held = {sym: [i.reason.value, i.ref_price, self.portfolio.positions[sym].opened_ts]
                for sym, i in self._exits_held.items() if sym in self.portfolio.positions}
        await self.store.put_kv(EXITS_HELD_KEY, held or None, self.clock.wall())

    def _held_exits_of(self, stored: Any) -> dict[str, OrderIntent]:
        """The held exits a run stored, of the positions still held as they were then (one closed, or opened
        again since, is no longer the position whose level was crossed)."""
        exits: dict[str, OrderIntent] = {}
        for sym, (reason, ref, opened_ts) in (stored or {}).items():
            pos = self.portfolio.positions.get(sym)
            if pos is not None and pos.opened_ts == opened_ts:
                exits[sym] = OrderIntent(symbol=sym, side=side_to_close(pos.side), quantity=pos.quantity,
                                         reason=OrderReason(reason), ref_price=ref, reduce_only=True,
                                         decision_id=pos.entry_decision_id)
        return exits

    def _range_since(self, c: Candle, since: int | None) -> tuple[float | None, float | None]:
        """The low and high of candle `c` that a position whose order the venue placed at `since` (the venue's
        clock, which its candles keep) lived through: the whole range of a candle begun since; of the candle it was
        placed in, only the close (its low or high may come before the fill); nothing of a candle that ended before
        (a feed polled late, after an approval's or an operator's fill). Where `since` is not known (the venue did
        not say; a position from before a restart), the whole range. The paper venue places an order at the open
        of the candle that decided it and fills it at the next one's open: that candle counts whole."""
        if since is None or since <= c.ts:
            return c.low, c.high
        if since >= c.ts + self.timeframe_ms:
            return None, None
        return c.close, c.close

    async def _exits_after_hold(self) -> None:
        """Send the stop-loss and take-profit exits the venue's Retry-After held back, once it is over: the bar that
        crossed the level is gone by then, the exit it called for is not. A halt drops them (the kill switch leaves
        positions to the operator), as does a position closed or already being closed meanwhile."""
        if not self._exits_held or self.orders.held_until() is not None:
            return
        for sym, intent in list(self._exits_held.items()):
            pos = self.portfolio.holding(sym)
            # Being closed already: the sells working sell all the venue could take (as _monitor sees it).
            closing = self.orders.exits_sell_all(sym, self.portfolio.last_price.get(sym))
            if self.state is EngineState.HALTED or pos is None or closing:
                del self._exits_held[sym]
                continue
            sub = await self.orders.submit(dataclasses.replace(intent, quantity=pos.quantity))
            if sub.held_until is None:
                del self._exits_held[sym]
        await self._store_exits_held()

    async def _act(self, d: Decision, c: Candle, ind: IndicatorSet) -> None:
        """A BUY or SELL decision: an entry (sized, gated, approved or sent), an exit, or the reason it is neither."""
        res = d.ensemble
        pos = self.portfolio.holding(c.symbol)
        if res.action is Action.BUY:
            if pos is not None or self.orders.pending_entry(c.symbol):
                d.outcome = "in_position"
            elif self.approvals.waiting_for(c.symbol):
                d.outcome = "awaiting_approval"
            else:
                self.entries.note(*await self._enter(d), d.ts)
        else:  # SELL: long-only spot, so a SELL closes a long and is otherwise nothing to do
            if pos is None:
                d.outcome = "no_position"
            elif self.orders.pending_exit_qty(c.symbol) > 0:
                d.outcome = "exit_working"
            else:
                sub = await self.orders.submit(OrderIntent(
                    symbol=c.symbol, side=side_to_close(pos.side), quantity=pos.quantity, reason=OrderReason.SIGNAL,
                    decision_id=d.decision_id, confidence=res.confidence, ref_price=c.close, reduce_only=True),
                    on_journal=functools.partial(self._journaled, d, "exit_submitted"))
                if d.client_order_id is None:  # refused before an order was journaled
                    d.gates = sub.gates
                    d.quantity = 0.0
                    d.outcome = "exit_refused"
                    d.reason = sub.reason

    def _size(self, symbol: str, price: float) -> tuple[float, dict[str, Any]]:
        """An entry in `symbol` sized at `price` with the account and the volatility as they are now."""
        pf = self.portfolio
        return size_entry(self.settings.risk, equity=pf.equity(), cash=pf.cash - self._cash_of_entries_in_flight(),
                          price=price, slippage=self.slippage,
                          atr=self.ind[symbol].atr, fee_rate=self.fee_rate,
                          amount_step=self.venue.market(symbol).amount_step)

    async def _price_now(self, symbol: str) -> float | None:
        """The price the market is at now, which an approval is checked and sized at: the exchange's quote when the
        market is read from an exchange (ControlError, nothing changed, when it cannot be read), else the last close
        (a simulated or replayed market moves at its bars' closes)."""
        if not isinstance(self.feed, QuotingFeed):
            return self.portfolio.last_price.get(symbol)
        try:
            return await self.feed.last_price(symbol)
        except (VenueError, VenueUnavailable) as exc:
            if isinstance(exc, VenueUnavailable) and exc.asked_to_wait:
                # Every request held (a ban, the address's limit): the same until it is over.
                raise ControlError(f"VENUE_HOLD: the exchange's price of {symbol} could not be read "
                                   f"({str(exc)[:160]}): nothing approved; the trade stays pending: approve it again "
                                   "once the wait is over (before it expires)") from None
            raise ControlError(f"the exchange's price of {symbol} could not be read ({str(exc)[:120]}): nothing "
                               "approved; approve it again") from None

    async def _entry_stands(self, o: Order, intent: OrderIntent) -> str | None:
        """Whether an entry proven absent may be sent again (OrderPath.entry_stands): "" while what decided it still
        stands; not once more than a bar has passed since it was made (the strategy, or the operator, has decided
        again on the bars since), nor once the price has moved past the stops it was made with (a trade nobody
        chose: the exchange's quote, on an exchange's market); None while the price cannot be read."""
        age_ms = self.clock.now_ms() - o.created_ts
        if age_ms > self.timeframe_ms:  # its own bar's next candle is still the one it was made for
            return (f"made {fmt.duration(age_ms / 1000)} ago, more than a bar: what decided it was decided again "
                    "since")
        if not isinstance(self.feed, QuotingFeed):
            # A simulated or replayed market: the paper venue fills it at the next candle's open, as it would have
            # had the answer come (a run killed and started again trades as the backtest of its market does).
            return ""
        try:
            price = await self._price_now(o.symbol)
        except ControlError:
            return None
        return moved_past(intent, price) if price else None

    async def _enter(self, d: Decision) -> tuple[str, str]:
        """An entry decision taken: sized, gated, then proposed for approval or sent. What the entry log counts it
        as: its outcome and reason, or for an order journaled that the venue then refused, that refusal."""
        market = self.venue.market(d.symbol)
        qty, sizing = self._size(d.symbol, d.price)
        d.sizing = sizing
        d.quantity = qty
        intent = OrderIntent(symbol=d.symbol, side=Side.BUY, quantity=qty, reason=OrderReason.SIGNAL,
                             decision_id=d.decision_id, confidence=d.ensemble.confidence, ref_price=d.price,
                             stop_loss=sizing.get("stop_loss"), take_profit=sizing.get("take_profit"))
        # Without decision records nothing keeps a refused entry's gates past the one that refused it (its code
        # and reason are counted): the gates after it are not measured.
        gates = self.orders.check(intent, until_refused=not self.profile.decision_records)
        d.gates = gates
        failure = first_failure(gates)
        if failure is not None:
            d.outcome = "rejected"
            d.reason = failure.refusal()
            return d.outcome, d.reason
        if market.below_minimum(qty, d.price):  # after the gates, as the order path says it for other callers
            d.outcome = "below_minimum"
            d.reason = f"size {qty:.8g} below venue minimum (min notional {market.min_notional})"
            return d.outcome, d.reason
        stop = intent.stop_loss or 0.0
        if dust_at_stop(market, qty, stop, self.orders.base_fee_rate):
            d.outcome = "below_minimum"
            d.reason = below_minimum_at_stop(qty, stop, market.min_notional)
            return d.outcome, d.reason
        if self.approvals.mode == "manual":
            await self.approvals.propose(d, intent, lambda: self._record_decision(d))
            return d.outcome, d.reason or ""
        sub = await self.orders.submit(intent, gates, on_journal=functools.partial(self._journaled, d, "submitted"))
        if d.client_order_id is None:  # refused before an order was journaled
            d.gates = sub.gates
            d.outcome = "refused"
            d.reason = sub.reason
        # Journaled, then refused (by the venue, or the engine stopped before the send): the order says so, and the
        # why view counts it refused (Store.refusals_since, the same from the records).
        return ("submitted", "") if sub.accepted else ("refused", sub.reason)

    def _journaled(self, d: Decision, outcome: str, order: Order, gates: list[GateResult]) -> None:
        """The decision `d` made `order`: recorded as the order is journaled, in its transaction (OrderPath.submit),
        so that no crash leaves the order without it; `outcome` whatever then becomes of the order (the order's own
        records say that)."""
        d.gates = gates
        if order.reduce_only:  # what the exit sells (the position less the exits working); an entry keeps its sizing's
            d.quantity = order.quantity
        d.client_order_id = order.client_order_id
        d.outcome = outcome
        if self.profile.resumable:
            self._record_decision(d)
        # A backtest never resumes: its decision is recorded with its bar's others (in its flush, which packs its
        # records tighter than the journal's own transaction would), the same record.

    def _record_decision(self, d: Decision) -> None:
        if d.recorded:  # with the approval it waits for
            return
        d.recorded = True
        self.last_decision[d.symbol] = d
        if self._stretch_decided:
            self._stretch_decided.pop(d.symbol, None)  # a later decision than the stretch's last
        if d.gates and d.outcome in REFUSED:
            failure = first_failure(d.gates)
            if failure is not None:
                self.refusals[failure.code] = self.refusals.get(failure.code, 0) + 1
        if not self.profile.decision_records:
            return
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

    def _recovered_levels(self, symbol: str, price: float) -> tuple[float | None, float | None]:
        """The stop-loss and take-profit of a position a restore's recovery opens from the venue's orders (the
        decision that made its entry is not in the restored database): a strategy entry's at its price, from the
        volatility now, so that the position is watched as any. None before the volatility is known (the start's
        recovery comes before its warm-up): owed then (`_levels_owed`), and given by `_give_levels`."""
        ind = self.ind.get(symbol)  # (none for a symbol no longer traded: owed until it is again)
        atr = ind.atr if ind is not None else None
        if not atr or atr <= 0:
            return None, None
        risk = self.settings.risk
        return price - risk.stop_loss_atr * atr, price + risk.take_profit_atr * atr

    async def _give_levels(self) -> None:
        """The levels owed to recovered positions, given (and stored) once their volatility is known."""
        pf = self.portfolio
        for sym in sorted(self._levels_owed):
            pos = pf.positions.get(sym)
            stop_loss, take_profit = self._recovered_levels(sym, pos.entry_price) if pos is not None else (None, None)
            if pos is not None and stop_loss is None:
                continue
            self._levels_owed.discard(sym)
            owed = {LEVELS_OWED_KEY: sorted(self._levels_owed) or None}
            if pos is None:
                await self.store.put_kvs(owed, self.clock.wall())
                continue
            pos.stop_loss, pos.take_profit = stop_loss, take_profit
            await self.store.put_position(pos, owed, self.clock.wall())
            log.warning("recovered position given a stop-loss and take-profit", symbol=sym,
                        stop_loss=fmt.price(stop_loss), take_profit=fmt.price(take_profit))

    # ================================================================== fills -> positions -> feedback
    async def _on_fill(self, order: Order, fill: Fill, intent: OrderIntent) -> FillRecord:
        """Apply a fill to the book in memory; the order path records it with the fill in one transaction."""
        pf = self.portfolio
        stop_loss, take_profit = intent.stop_loss, intent.take_profit
        unleveled = False
        if order.reason is OrderReason.RECONCILE and not order.reduce_only and pf.holding(fill.symbol) is None:
            # (nothing held but dust, maybe, of an earlier position: a new one opens over it)
            stop_loss, take_profit = self._recovered_levels(fill.symbol, fill.price)
            unleveled = stop_loss is None
        res = pf.apply_fill(fill, decision_id=order.decision_id if not order.reduce_only else None,
                            stop_loss=stop_loss, take_profit=take_profit, reason=order.reason.value,
                            client_order_id=order.client_order_id)
        self.orders.taken(fill)  # in the books now: counted there only, whatever this awaits below
        record = FillRecord(wall=self.clock.wall(), position=res.position, trade=res.closed)
        if order.reason is OrderReason.FLATTEN:
            self._flatten_sold.add(fill.symbol)
        if res.opened:
            if fill.venue_ts is None:
                self._priced_from.pop(fill.symbol, None)
            else:
                self._priced_from[fill.symbol] = fill.venue_ts
        if unleveled or (fill.symbol in self._levels_owed and res.position is None):
            # Given at the first bar that has them (or dropped: sold), in the fill's transaction either way.
            (self._levels_owed.add if unleveled else self._levels_owed.discard)(fill.symbol)
            record.kv[LEVELS_OWED_KEY] = sorted(self._levels_owed) or None
        # The exit a crossed level called for has sold all it was sent for (the rest beside a sell working on a part
        # of the position): owed no more; what is left is watched again from the next bar.
        done_exit = order.reason in (OrderReason.STOP_LOSS, OrderReason.TAKE_PROFIT) \
            and order.status is OrderStatus.FILLED
        if res.position is None and fill.symbol not in pf.positions or done_exit:
            if res.position is None and fill.symbol not in pf.positions:
                record.closed_symbol = fill.symbol
                self._priced_from.pop(fill.symbol, None)
            if self._exits_owed.pop(fill.symbol, None) is not None and fill.symbol in self._owed_stored:
                self._owed_stored = self._owed_record()  # sold: owed no more, with the fill that sold it
                record.kv[EXITS_OWED_KEY] = self._owed_stored or None
        if self._cash_from_venue:
            self._cash_charged = True
        if self.profile.resumable:  # otherwise the books are stored at each flush
            record.kv["portfolio"] = self._books_state()
            if self.sim_feed is not None:
                # The market goes with the books, as at every bar: a fill before the first bar's books were stored
                # (an order recovered at a start) never leaves them without it, which a start takes for one lost.
                record.kv["market"] = self.sim_feed.state()
            record.kv.update(self._venue_book())
            # with the fill: a restart inside the candle of the fill still knows where the position's prices begin
            record.kv[PRICED_FROM_KEY] = dict(self._priced_from)
        if res.opened and res.position is not None and res.position.entry_decision_id:
            p = res.position
            entry = res.position.entry_decision_id
            self._stretch_records(p.symbol)
            d = self.last_decision.get(p.symbol)
            if d is not None and d.decision_id == entry:
                self.entry_votes[entry] = {v.provider: v.action.value for v in d.ensemble.votes}
            else:
                self.entry_votes[entry] = await self.store.decision_votes(entry)
        learned = self._score(res.closed, record) if res.closed is not None else None

        def announce() -> None:  # committed with the fill (Store.add_fill); the trade's id is set by then
            if res.opened and res.position is not None:
                p = res.position
                self.bus.publish(PositionOpened(symbol=p.symbol, side=p.side.value, quantity=p.quantity,
                                                entry_price=p.entry_price, stop_loss=p.stop_loss,
                                                take_profit=p.take_profit, decision_id=p.entry_decision_id))
            if res.closed is not None:
                t = res.closed
                self.bus.publish(PositionClosed(symbol=t.symbol, side=t.side.value, quantity=t.quantity,
                                                entry_price=t.entry_price, exit_price=t.exit_price,
                                                pnl=round(t.pnl, 8), fees=round(t.fees, 8), reason=t.reason,
                                                trade_id=t.trade_id, decision_id=t.entry_decision_id))
                if learned is not None and self.opts.adaptive:  # learned, not applied, is no change of weights
                    self.bus.publish(WeightsChanged(weights={k: round(v, 4) for k, v in learned.items()},
                                                    reason=f"trade {t.trade_id} closed"))

        async def then() -> None:
            if res.closed is not None:
                self.trades.append(res.closed)
            if learned is not None and self.opts.adaptive:
                self.ensemble.set_weights(learned)

        record.announce = announce
        record.then = then
        return record

    def _score(self, t: ClosedTrade, record: FillRecord) -> dict[str, float] | None:
        """Score the providers that voted for a fully closed trade's entry, in the transaction of the fill that
        closes it: their scores and the learner's state go with the fill's record (a kill right after its commit
        must not leave a trade the feedback loop never learns from). The new weights, if they changed."""
        if self.learner is None or not t.entry_decision_id:
            return None
        pnl, cost = self._parts_sold.pop(t.entry_decision_id, (0.0, 0.0))
        pnl, cost = pnl + t.pnl, cost + t.entry_price * t.quantity
        if self.portfolio.holding(t.symbol) is not None:  # partly closed: the trade is scored whole once closed
            self._parts_sold[t.entry_decision_id] = (pnl, cost)
            return None
        votes = self.entry_votes.pop(t.entry_decision_id, None)
        if not votes:
            return None
        return_pct = 100.0 * pnl / cost if cost else 0.0
        actions = {p: Action(a) for p, a in votes.items()}
        new = self.learner.record(actions, pnl, return_pct)
        record.scores = [(p, a.value, (a is Action.BUY) == (pnl > 0), return_pct)
                         for p, a in actions.items() if a is not Action.HOLD]
        if self.profile.resumable:
            record.kv["weights"] = _learner_record(self.learner)
        else:  # stored at the next flush, with the other books
            self._learner_dirty = True
        return new

    # ================================================================== reconciliation
    async def reconcile(self) -> list[dict[str, Any]]:
        """Reconcile the journal with the venue; an unexplained difference keeps the engine PAUSED until the operator
        accepts it. Returns the differences (empty when everything agrees)."""
        self._reconciled_at = self.clock.monotonic()
        if any(self.portfolio.is_dust(s) for s in self.portfolio.positions):
            # Dust by the minimums known: the exchange may have lowered one it raised (a refusal had them read
            # again), and then the coins are a position again, for the stop-loss, the take-profit and a flatten.
            await self.venue.reload_markets()
            self._read_markets()
        unrecovered: list[dict[str, Any]] = []
        if self._restore_pending:
            # After a restore, first the orders the venue made since the backup: they explain what it holds.
            # The venue's quote balance already holds what their fills paid and received: the cash is taken from it
            # again, as after a start. Set before they are booked: the books stored with their fills carry no cash
            # (`_books_state`), not one that counts them twice (the venue's, taken by an earlier reconciliation).
            taken = self._cash_from_venue
            if self.sim_venue is None:
                self._cash_from_venue = True
            recovery = await recover_after_restore(store=self.store, venue=self.venue, orders=self.orders,
                                                   bus=self.bus, clock=self.clock, symbols=self.symbols)
            if recovery.status == "failed":
                unrecovered = [{"kind": "restore_unrecovered", "error": recovery.error}]
            else:
                self._restore_pending = False
            await self._count_recovered_entries(recovery.orders)
            if not recovery.fills:  # nothing booked: the cash is as it was
                self._cash_from_venue = taken
            if not self._cash_from_venue and self._books_whole():  # the cash taken before the recovery
                await self._persist_books()
        adopt = self._cash_from_venue
        report = await self.reconciler.run(with_cash=not adopt)
        if report.status == "superseded":  # an accept was stored meanwhile: the next one compares with its baseline
            return []
        self.reconcile_waits = report.status == "waiting"
        if self.reconcile_waits:
            # The exchange asked for no requests for a while (Retry-After): it is not unreachable, and nothing was
            # compared. What held the engine before holds it still; it reconciles again once the wait is over (a
            # start's stops the start: _start_reconcile).
            self._recheck_at = self.clock.monotonic() + report.wait_s
            return []
        self.reconcile_unconfirmed = report.unconfirmed
        # Whether it compared everything: every symbol's position, the cash and the equity (none left out for an
        # order whose trade the balances may hold already, nor taken from the venue instead), with balances read
        # the settle window after the books' last order change (earlier ones may lag it).
        self._reconciled_whole = report.settled and report.current and not adopt and report.status != "failed"
        # Differences found once are looked at again when the venue's reads have had time to catch up.
        self._recheck_at = report.confirm_at
        self._compare_waits = not report.settled
        # Taken only from balances read when no order was in doubt (a fill found later would be counted twice),
        # and that showed no difference, even one not confirmed yet (they may lag the venue's books).
        if adopt and report.venue_cash is not None and report.settled and report.current and not report.unconfirmed:
            self.portfolio.cash = report.venue_cash
            self._cash_from_venue = self._cash_charged = False
            # Stored at once: the books stored since the cash was taken from the venue carry none (_books_state).
            self._books_whole()
            await self._persist_books()
        differences = report.differences + unrecovered
        before = self.reconcile_blocked
        if differences:
            if not self._reconciled_whole and report.status != "failed":
                # What it could not compare (the cash and equity, a symbol with an order unsettled) still holds the
                # engine as found before: a subset of the differences must not lift the others unseen. (An outage
                # holds it by itself, and lifts once the venue answers and agrees.)
                found = {difference_key(d) for d in differences}
                differences += [d for d in before if d.get("kind") in BALANCE_KINDS
                                and difference_key(d) not in found]
            await self._hold(differences)
        elif before and (outage_only(before) or any(d.get("kind") == "restore_unrecovered" for d in before)):
            # The venue answers again: an outage is nothing for the operator to accept, nor are the differences a
            # restore showed before the venue's later orders could be recovered (the engine stays PAUSED until
            # resumed). A difference found for the first time now holds the engine once confirmed.
            await self._hold([], outage(before).lifted if outage_only(before)
                             else "the exchange's orders since the backup are recovered")
        elif not report.unconfirmed:
            # Nothing found: what was found before and is no longer there is nothing to accept (coins that left
            # again, an order long in doubt that has settled). Only what this one could not compare (the cash and
            # equity, a symbol with an order unsettled, balances that may lag the books) holds the engine as before.
            # The engine stays PAUSED until resumed. (A difference found for the first time, not confirmed yet,
            # keeps what was found before holding it: it is not traded through meanwhile.)
            kept = [] if self._reconciled_whole else [d for d in before if d.get("kind") in BALANCE_KINDS]
            # An open order no longer found holds the engine until a second look in a row does not find it either: a
            # read of the open orders can lag the exchange's books, as a read of its balances can.
            gone = {difference_key(d) for d in before if d.get("kind") not in BALANCE_KINDS}
            kept += [d for d in before
                     if d.get("kind") not in BALANCE_KINDS and difference_key(d) not in self._blocked_missed]
            self._blocked_missed = gone
            # A reason that still names differences with none held before (a restart, which keeps the state but not
            # what held it) is lifted only by a reconciliation that compared everything.
            await self._hold(kept, "the exchange agrees with the journal again" if before or self._reconciled_whole
                             else None)
            return differences
        self._blocked_missed = set()
        return differences

    async def _start_reconcile(self) -> None:
        """A reconciliation of the start's. One the exchange's Retry-After put off stops the start, as its first
        request does: the engine does not trade on books it has not compared, and the start is not held for longer
        than a request waits (the control socket is not up yet: a halt could not be asked for meanwhile)."""
        await self.reconcile()
        if self.reconcile_waits:
            left = max(0.0, (self._recheck_at or 0.0) - self.clock.monotonic())
            raise VenueUnavailable(f"{self.venue.name}: the start's reconciliation is not done: the exchange asked "
                                   f"for no requests for {left:.0f}s more (Retry-After)", retry_after=left, sent=False)

    async def _hold(self, blocked: list[dict[str, Any]], lifted: str | None = None, by: str = "reconcile") -> None:
        """What reconciliation holds the engine for now, and the state's reason kept in step with it: the one place
        both change. Differences pause a RUNNING engine; an engine reconciliation paused has its reason name what
        holds it now; once nothing does (`lifted`: what ended the hold), the reason says that and that a resume is
        what is left (the engine stays PAUSED until resumed). `ffe ctl status`, `why` and the next start's alert
        show that reason: left naming differences no longer there, it would tell the operator of a hold that is
        none. Stored as every state is (TradingState.set: PAUSED to PAUSED, an `engine_state` event)."""
        self.reconcile_blocked = blocked
        reason = self.state_reason
        if blocked:
            held = hold_reason(blocked)
            if self.state is EngineState.RUNNING:
                await self.trading.set(EngineState.PAUSED, held, by)
            elif self.state is EngineState.PAUSED and paused_by_reconcile(reason) and reason != held:
                await self.trading.set(EngineState.PAUSED, held, by, force=True)
        elif lifted is not None and self.state is EngineState.PAUSED and says_held(reason):
            await self.trading.set(EngineState.PAUSED, lifted_reason(lifted), by, force=True)

    # ================================================================== control surface

    async def pause(self, reason: str = "operator", by: str = "operator") -> EngineState:
        """No new entry from the moment it is asked. It does not wait for the turn of a control under way (a close
        whose order the exchange holds may take the exchange's whole timeout): a stricter state is safe beside any
        of them, as the breaker's pause is; a resume asked before it and still waiting for its turn is refused."""
        self._still_running()
        if self.state is EngineState.HALTED:
            raise ControlError("engine is HALTED; resume with confirmation to re-arm")
        self._controls.paused()
        # Paused already by the engine itself (a risk limit, the breaker, reconciliation, records found lost): the
        # operator's pause is recorded over it, as theirs: it stays until they resume, whatever lifts the other.
        own = self.state is EngineState.PAUSED and self.trading.by in ENGINE_AUTHORS and by not in ENGINE_AUTHORS
        await self.trading.set(EngineState.PAUSED, reason, by, force=own)
        await self.flush()
        return self.state

    async def _unchecked(self) -> list[ahead.Unchecked]:
        """The files of records set aside at this start or an earlier one that no resume has checked
        (ahead.unchecked): the losses among them, and the pauses and halts they hold, kept until a resume."""
        if not self.profile.resumable:
            return []
        checked = await self.store.get_kv(ahead.CHECKED_KEY)
        return await asyncio.to_thread(ahead.unchecked, self.settings.audit_path, checked)

    async def resume(self, by: str = "operator", confirm: bool = False, state_serial: int | None = None,
                     timeout_s: float | None = None) -> EngineState | str:
        """`state_serial`: the state the operator was asked about (`state_serial` of the snapshot that asked); when
        the state has changed since (re-armed and halted again by someone else), nothing is done.

        It takes the controls' turn, which a close whose order the exchange holds may keep for the exchange's whole
        timeout: it runs as the engine's own task, and its answer waits for it half the time its caller waits at most
        (`timeout_s`, or `control.request_timeout_s`), as the kill switch's does; then it says what it waits for
        (UNDER_WAY and the control under way), and resumes once that has ended (or is refused then, in the log)."""
        at = self.clock.monotonic()
        self._still_running()
        self._refuse_resume(confirm, state_serial)  # what refuses it now is said now, not once its turn has come
        asked = _Asked(self._controls.pauses, self.trading.changes, self.state)
        work = self._after_controls(self._resume(by, confirm, state_serial, asked), asked="a resume")
        done = await self._answer_within(work, at, timeout_s)
        if done is not None:
            return done
        under = self._controls.under_way or "another control"
        return f"{UNDER_WAY}{under} is under way: the engine resumes once it has ended (`ffe ctl status` shows it)"

    def _refuse_resume(self, confirm: bool, state_serial: int | None) -> None:
        """ControlError when a resume is refused in the state the engine is in (or the one it was asked about)."""
        if state_serial is not None and state_serial != self.trading.changes:
            raise ControlError(f"not resumed: the engine's state changed since you were asked (now "
                               f"{self.state.value}: {self.state_reason}); look again, then ask again")
        if self.state is EngineState.HALTED and not confirm:
            raise ControlError("engine is HALTED: re-arming needs confirmation (`ffe ctl resume --yes`, or "
                               "the pause key and y in the console)")
        if self.reconcile_blocked:
            if in_doubt_only(self.reconcile_blocked):
                raise ControlError(f"reconciliation: {blocked_text(self.reconcile_blocked)}; resume once it "
                                   "has settled (`ffe ctl orders`), or settle it as the exchange's account shows "
                                   "it if the exchange lost it (`ffe ctl settle`)")
            if lagging_trades(self.reconcile_blocked):
                # An accept is refused while they lag: telling the operator to accept would send them to a
                # refusal. What they explain goes by itself once the trades are listed; the rest is accepted then.
                then = ("resume then (`ffe ctl orders` shows the order `trades behind` until its fill is booked)"
                        if not unexplained(self.reconcile_blocked) else
                        "the accept is refused until then: accept what still differs then (`ffe ctl accept`, "
                        "once the exchange's side is right: `ffe ctl status`), and resume")
                raise ControlError(f"reconciliation: {blocked_text(self.reconcile_blocked)}; {then}")
            raise ControlError(outage(self.reconcile_blocked).resume if outage_only(self.reconcile_blocked) else
                               f"reconciliation found {blocked_text(self.reconcile_blocked)}; accept them first "
                               "(`ffe ctl accept`, once the exchange's side is right: `ffe ctl status`)")

    def _refuse_since(self, asked: "_Asked") -> None:
        """ControlError when the operator's word came after the resume was asked: a pause, or a kill switch (a halt
        of an engine not HALTED then, or another halt of a HALTED one). Looked at last, just before RUNNING is
        stored: neither takes the controls' turn before it changes the state, so either may come at any await."""
        if self._controls.pauses != asked.pauses:
            raise ControlError(f"not resumed: the engine was paused since you asked (now {self.state.value}: "
                               f"{self.state_reason}); resume again if it should run")
        if self.state is EngineState.HALTED and (asked.state is not EngineState.HALTED
                                                 or self.trading.changes != asked.changes):
            raise ControlError(f"not re-armed: the engine was halted since you asked ({self.state_reason}); "
                               "re-arm again once satisfied")

    async def _resume(self, by: str, confirm: bool, state_serial: int | None, asked: "_Asked") -> EngineState:
        async with self._controls.turn("a resume"):
            self._still_running()
            self._refuse_resume(confirm, state_serial)
            # The operator's word on the books: the records set aside at a start as lost (ahead.py) are checked
            # with it, in the same transaction, and are not said again.
            checked = ({ahead.CHECKED_KEY: await asyncio.to_thread(ahead.checked_now, self.settings.audit_path)}
                       if self.state is not EngineState.RUNNING and self.profile.resumable else None)
            self._refuse_since(asked)
            await self.trading.set(EngineState.RUNNING, "re-armed" if self.state is EngineState.HALTED else "resume",
                                   by, kv=checked)
            self.breaker_pause.resumed()  # an opening under way does not pause it again (breaker_pause.py)
            await self.flush()
            return self.state

    async def halt(self, reason: str = "kill switch", by: str = "operator",
                   timeout_s: float | None = None) -> CancelReport:
        """Kill switch: refuse every new order, record HALTED durably, cancel every open order; then return.

        Another control under way may wait on the exchange for as long as its timeout (an approve whose order is on
        the wire, a cancel waiting out a Retry-After, a disk that hangs), and so may an order on the wire whoever
        sent it (the operator's order, a strategy entry): the kill switch does not wait for either. HALTED is stored
        at the press and every open order's cancel sent then (an order on the wire is cancelled once the exchange
        has answered it); the rest (what is still open cancelled, the pending approvals rejected, the kill_switch
        event) follows once that control has ended and those orders are answered. The answer waits for that rest
        for half the time its caller waits for it at most (`timeout_s`, or `control.request_timeout_s`, never more
        than the latter), counted from the press, then says what is done and what is still under way
        (`under_way`)."""
        self._still_running(halting=True)
        pressed = time.perf_counter()
        if not self._pressing_now():
            at, open_then = self.clock.monotonic(), self.orders.in_flight()
            whole, stored = await self._alone("a kill switch",
                                              lambda stored: self._halt(reason, by, pressed=pressed, stored=stored))
            report = await self._answer_once_stored(whole, at, timeout_s, stored)
            return report if report is not None else answered_early(
                open_then, list(self.orders.sending()), "the pending approvals are rejected and the report recorded")
        press = self._pressed()
        rest = self._after_controls(self._halt_rest(reason, by, press, self._flattens_begun, pressed))
        await self._press(press, reason, by)
        done = await self._answer_within(rest, press.at, timeout_s)
        return done if done is not None else press.answer(
            "the pending approvals are rejected and what is still open cancelled")

    async def _halt_rest(self, reason: str, by: str, press: Press, flattens_then: int,
                         pressed: float) -> CancelReport:
        async with self._controls.turn("a kill switch pressed before"):
            await press.sent.wait()
            # A flatten pressed after this halt goes on: the later word.
            return await self._halt(reason, by, early=await self._pressed_cancels(press),
                                    ends_flatten=self._flattens_begun == flattens_then, pressed=pressed,
                                    follow_up=True)

    def _pressing_now(self) -> bool:
        """Whether a kill switch or flatten pressed now answers at the press, its rest following (`_press`): another
        control is under way, or an order's create_order is on the wire (its cancel waits for that answer, for as
        long as the exchange takes: cut off at cancel_timeout_s, the order would be said a failed cancel)."""
        return self._controls.busy() or bool(self.orders.sending()) or self._pressing is not None

    def _pressed(self) -> Press:
        """A kill switch or flatten pressed while another control is under way, or an order is on the wire; its rest
        is queued for the controls at once, before anything else asked for meanwhile (a flatten's follow-up), and
        waits for `press.sent`."""
        under = (self._controls.under_way or "another control") if self._controls.busy() else ""
        return Press(under, self.clock.monotonic())

    async def _alone(self, what: str, work: Callable[[asyncio.Future[None]], Coroutine[Any, Any, R]]
                     ) -> tuple[asyncio.Task[R], asyncio.Future[None]]:
        """A kill switch or flatten pressed with nothing else under way, run as the engine's own task (`work`, given
        the future its HALTED's storing resolves, with the store's failure when it fails), under the controls'
        turn, taken here at once (none is under way): a control asked in the same moment (an approve, a close)
        waits for it. Until HALTED is stored, a kill switch or flatten pressed in the same moment waits for that
        HALTED (`_pressing`) rather than send cancels of its own beside it; its rest follows this one."""
        release = await self._controls.take(what)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pressing = stored

        def said(_: asyncio.Future[None]) -> None:
            if self._pressing is stored:
                self._pressing = None
            if not stored.cancelled():
                stored.exception()  # looked at: answered by whoever waits for it, or by the task's own end

        def ended(task: asyncio.Task[R]) -> None:
            release()
            if not stored.done():  # ended before HALTED was stored: its failure says why
                failure = None if task.cancelled() else task.exception()
                if failure is None:
                    stored.set_exception(ControlError(f"{what} ended before HALTED was stored"))
                else:
                    stored.set_exception(failure)

        stored.add_done_callback(said)
        whole = self._after_controls(work(stored))
        whole.add_done_callback(ended)
        return whole, stored

    async def _press(self, press: Press, reason: str, by: str, kv: dict[str, Any] | None = None) -> None:
        """A kill switch (or flatten, `kv` its positions to close) pressed while another control is under way, or an
        order is on the wire: HALTED stored with `kv` at once, and every open order's cancel sent, an order on the
        wire's waiting for its answer. One kill switch cancels at the press at a time: another pressed in the same
        moment (ctl and SIGUSR1), or once the engine is HALTED, leaves what is still open to its rest, under the
        controls."""
        try:
            await self._press_now(press, reason, by, kv)
        except BaseException:
            press.failed = True  # HALTED not stored (a full disk): the caller is told so
            raise
        finally:
            press.sent.set()

    async def _press_now(self, press: Press, reason: str, by: str, kv: dict[str, Any] | None) -> None:
        if press.under:
            log.warning("kill switch pressed while another control is under way: HALTED now, the rest once it has "
                        "ended", under_way=press.under, reason=reason, by=by)
        else:
            log.warning("kill switch pressed while an order is on the wire: HALTED now, the rest once the exchange "
                        "has answered it", orders=",".join(self.orders.sending()), reason=reason, by=by)
        if self.state is EngineState.HALTED or self._pressing is not None:
            if self._pressing is not None:
                await asyncio.shield(self._pressing)  # that halt's HALTED stored
            await self.trading.set(EngineState.HALTED, reason, by, kv=kv)  # a halt of its own; `kv` stored
            return
        pressing = self._pressing = asyncio.get_running_loop().create_future()
        # Every order open or on the wire: one a lookup found filled while its create_order is on the wire is no
        # longer live, and its report (filled) waits for that answer all the same (_halt).
        press.open_then = self.orders.in_flight()
        try:
            press.report = await self._cancel_while_halting(reason, by, kv=kv, on_wire=press.on_wire)
        finally:
            pressing.set_result(None)
            self._pressing = None

    async def _pressed_cancels(self, press: Press | None) -> tuple[list[Order], CancelReport] | None:
        """The cancels a press sent, with those of the orders that were on the wire then, once answered."""
        if press is None or press.report is None:
            return None
        wire = await self.orders.collect(press.on_wire)
        return press.open_then, CancelReport(cancelled=press.report.cancelled + wire.cancelled,
                                             failed=press.report.failed + wire.failed)

    def _after_controls(self, work: Coroutine[Any, Any, R], asked: str | None = None) -> asyncio.Task[R]:
        """A press's rest, or a control `asked` by the operator (a close, a resume), run once the control under way
        has ended: the engine's own task, so it goes on whether its caller waits for it or not (a client that gave
        up, an answer given first); a stop waits for it. A press's rest that fails pages (KILL_SWITCH_FAILED); a
        control refused after its answer said it under way is said in the log."""
        task = asyncio.ensure_future(work)
        self._rests.add(task)
        task.add_done_callback(lambda t: self._rest_ended(t, asked))
        return task

    def _rest_ended(self, task: asyncio.Task[Any], asked: str | None) -> None:
        self._rests.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        message = f"{type(exc).__name__}: {exc}"
        if asked is not None:
            log.warning(f"{asked} asked by the operator was not carried out", error=message)
            return
        log.error("a kill switch's rest failed", error=message)
        self.bus.publish(ErrorEvent(message=message, where="kill switch"))

    async def _answer_within(self, rest: asyncio.Task[R], at: float, timeout_s: float | None) -> R | None:
        """The rest's own answer when it ends within half the time the caller waits (halt), counted from the press
        (`at`, the clock's monotonic time); else None: the answer is what the press did."""
        answer_s = self.settings.control.request_timeout_s
        if timeout_s is not None:
            answer_s = min(answer_s, timeout_s)
        left = answer_s / 2 - (self.clock.monotonic() - at)
        if left > 0:
            await asyncio.wait({rest}, timeout=left)
        return rest.result() if rest.done() else None

    async def _answer_once_stored(self, whole: asyncio.Task[R], at: float, timeout_s: float | None,
                                  stored: asyncio.Future[None]) -> R | None:
        """A kill switch's or flatten's own answer, pressed with nothing else under way, when it ends within half
        the time its caller waits; else None once HALTED is stored (`stored`; at once but on a disk that hangs),
        while the exchange has not answered what it sent: the answer then says what is still under way. HALTED
        not stored (the store failed): that failure is the answer."""
        done = await self._answer_within(whole, at, timeout_s)
        if done is not None:
            return done
        either: set[asyncio.Future[Any]] = {whole, stored}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if whole.done():
            return whole.result()
        stored.result()
        return None

    async def _cancel_while_halting(self, reason: str, by: str, kv: dict[str, Any] | None = None,
                                    on_wire: dict[str, asyncio.Task[tuple[bool, str]]] | None = None,
                                    stored: asyncio.Future[None] | None = None,
                                    follow_up: bool = False) -> CancelReport:
        """HALTED in memory at once (no order passes the gates from here), and every open order's cancel sent while
        its record (with `kv`) is stored: on a disk that hangs they would otherwise wait for it, and an open order
        fill meanwhile. `on_wire`: see OrderPath.cancel_all. `stored`: set once the record is stored. `follow_up`:
        the rest of a press, whose HALTED was set (and counted) at the press (TradingState.set)."""
        # HALTED is recorded unless the engine is HALTED when the store's turn comes (not when this was asked):
        # a kill switch pressed in the same moment may have halted it first, and a halt of a HALTED engine does
        # not record the state again.
        if self._exits_held:  # HALTED leaves positions to the operator: the exits a Retry-After held are dropped
            self._exits_held = {}
            kv = {**(kv or {}), EXITS_HELD_KEY: None}
        if self._exits_owed:  # and those owed: a start or a re-arm watches the levels again from the next bar
            self._exits_owed = {}
            if self._owed_stored:
                self._owed_stored = {}
                kv = {**(kv or {}), EXITS_OWED_KEY: None}
        if self.orders.live:  # kept with HALTED: a stop or a kill before their answers leaves them to send
            kv = {**(kv or {}), **self.orders.cancels_kept(self.clock.wall() + self.orders.cancel_timeout_s)}
        storing = asyncio.ensure_future(self.trading.set(EngineState.HALTED, reason, by, kv=kv, follow_up=follow_up))
        if stored is not None:
            storing.add_done_callback(functools.partial(_pass_on, stored))
        await asyncio.sleep(0)  # TradingState.set's first step: the state in memory
        try:
            return await self.orders.cancel_all(by=by, on_wire=on_wire)
        finally:
            await storing

    async def _halt(self, reason: str, by: str, flattening: dict[str, int] | None = None,
                    early: tuple[list[Order], CancelReport] | None = None, ends_flatten: bool = True,
                    pressed: float | None = None, stored: asyncio.Future[None] | None = None,
                    follow_up: bool = False) -> CancelReport:
        """The kill switch, with the controls. `flattening`: the positions a flatten is about to close, stored
        with HALTED before anything else, so that an engine stopped before its closing orders goes on with them.
        `early`: the orders open when the kill switch was pressed and the report of their cancels, sent before the
        control lock was had. `ends_flatten` False: a flatten under way began after this halt was pressed, and
        goes on. `pressed`: when the kill switch was pressed (perf_counter), which its elapsed time counts from.
        `follow_up`: this is the rest of a press, which set HALTED already: a re-arm asked since the press is asked
        after it, and this rest's HALTED is no later halt that refuses it."""
        t0 = pressed if pressed is not None else time.perf_counter()
        # What a fill may beat its cancel to, from the press on, and the orders on the wire then.
        open_then = early[0] if early is not None else self.orders.in_flight()
        follow: dict[str, Any] | None = None
        was_flattening, was_owed = self._flattening, self._flatten_owed
        # A halt that ends a flatten under way (one waiting for the exchange's Retry-After, or following up what a
        # closing order left): what it leaves held is said in the halt's report, not dropped without a word.
        ended_flatten = sorted(sym for sym in was_flattening or {} if self.portfolio.holding(sym) is not None) \
            if flattening is None and ends_flatten else []
        if flattening is not None or (self._flattening is not None and ends_flatten):
            # A halt ends a flatten under way; a flatten's begins its own: stored with HALTED, in its transaction.
            # Either way nothing is owed of the one before (a flatten's report says what it owes).
            self._flattening, self._flatten_owed = flattening, {}
            follow = {FLATTEN_KEY: flattening, FLATTEN_OWED_KEY: None}
        try:
            report = await self._cancel_while_halting(reason, by, kv=follow, stored=stored, follow_up=follow_up)
        except BaseException:
            # Not stored (a full disk): neither the flatten begun nor the one ended is, and the operator is told it
            # failed; the follow-up does not close positions for it later.
            if follow is not None and self._flattening is flattening:
                self._flattening, self._flatten_owed = was_flattening, was_owed
            raise
        if early is not None:  # the cancels sent at the press, then what was still open under the lock
            done = set(report.cancelled) | {f.get("client_order_id") for f in report.failed}
            report.cancelled = [c for c in early[1].cancelled if c not in done] + report.cancelled
            report.failed = [f for f in early[1].failed if f.get("client_order_id") not in done
                             and f.get("client_order_id") in self.orders.live] + report.failed
        # Reported once the exchange has answered each order that was on the wire at the press, as the press said:
        # one a lookup found filled meanwhile has no cancel to wait for, and would be left out of the report.
        await self.orders.answered(open_then)
        behind = set(report.filled) | (set(early[1].filled) if early is not None else set())
        report.filled = [o.client_order_id for o in open_then if o.status is OrderStatus.FILLED
                         or o.client_order_id in behind]  # or shown filled, its trades not listed yet
        # A cancel said failed (not ended within engine.cancel_timeout_s) whose order has ended by now, before this
        # report is recorded (its answer came late, or the records' writer held this report up): said as it ended,
        # not as still working. One ended by the exchange otherwise (expired) works no more either: its own
        # `order` record says how.
        ended = {o.client_order_id: o for o in open_then if o.status.final}
        late = [f.get("client_order_id") for f in report.failed if f.get("client_order_id") in ended]
        report.failed = [f for f in report.failed if f.get("client_order_id") not in ended]
        said = set(report.cancelled) | set(report.filled) | {f.get("client_order_id") for f in report.failed}
        report.cancelled += [cid for cid, o in ended.items() if cid not in said and (
            o.status is OrderStatus.CANCELED or (cid in late and o.status is not OrderStatus.FILLED))]
        # Nothing decided before the halt may be sent after re-arming: every pending approval ends here (after
        # the cancels, which come first; HALTED already refuses an approval's re-check meanwhile).
        await self.approvals.reject_all(by, f"halted by {by} ({reason})")
        report.elapsed_ms = (time.perf_counter() - t0) * 1000.0
        report.flatten_ended = ended_flatten
        self.bus.publish(KillSwitchEvent(action="halt", cancelled=report.cancelled, failed=report.failed,
                                         filled=report.filled, by=by, elapsed_ms=round(report.elapsed_ms, 2),
                                         flatten_ended=ended_flatten))
        # The cancels it kept due, those answered dropped; the failed ones followed until their orders end.
        await self._persist_books({**self.orders.cancels_answered(),
                                   **self._failed_cancels.note(report.failed, open_then)})
        await self.flush()
        log.warning("kill switch", cancelled=len(report.cancelled), failed=len(report.failed),
                    elapsed_ms=round(report.elapsed_ms, 1))
        return report

    async def flatten(self, by: str = "operator", timeout_s: float | None = None,
                      attempts: int = 3) -> dict[str, Any]:
        """Cancel all, close every position with reduce-only market orders (bounded retries), end HALTED. A closing
        order held back by the venue's Retry-After is no attempt: the position is said as waiting until then, and
        the follow-up (_follow_flatten) places its order once it is over. Pressed while another control is under
        way, or while an order is on the wire, HALTED is stored at once with the positions to close, and the cancels
        sent, as the kill switch's (halt); the closing orders follow once that control has ended and those orders
        are answered, and `timeout_s` bounds the answer's wait for them as halt's does (`under_way` says what
        waits)."""
        self._still_running()
        self._flattens_begun += 1
        if not self._pressing_now():
            at, open_then = self.clock.monotonic(), self.orders.in_flight()
            held = ", ".join(self._to_close()) or "no position held"
            whole, stored = await self._alone("a flatten", lambda stored: self._flatten(by, attempts, stored=stored))
            done = await self._answer_once_stored(whole, at, timeout_s, stored)
            return done if done is not None else _flatten_answer(answered_early(
                open_then, list(self.orders.sending()), f"the positions ({held}) are closed and the report recorded"))
        was_flattening, was_owed = self._flattening, self._flatten_owed
        to_close = self._flattening = self._to_close() or None  # stored with HALTED: a restart goes on with it
        self._flatten_owed = {}  # nothing owed of a flatten before: this one's report says what it owes
        press = self._pressed()
        rest = self._after_controls(self._flatten_rest(by, attempts, press))
        try:
            await self._press(press, "flatten", by, kv={FLATTEN_KEY: to_close, FLATTEN_OWED_KEY: None})
        except BaseException:
            # Its HALTED not stored: the operator is told the flatten failed, and nothing closes for it later.
            if self._flattening is to_close:
                self._flattening, self._flatten_owed = was_flattening, was_owed
            raise
        done = await self._answer_within(rest, press.at, timeout_s)
        if done is not None:
            return done
        return _flatten_answer(press.answer(
            f"the closing orders ({', '.join(to_close or {}) or 'no position held'}) are placed"))

    async def _flatten_rest(self, by: str, attempts: int, press: Press) -> dict[str, Any]:
        async with self._controls.turn("a flatten pressed before"):
            await press.sent.wait()
            if press.failed:  # told the operator it failed: no flatten follows
                return _flatten_answer(CancelReport())
            return await self._flatten(by, attempts, press)

    async def _flatten(self, by: str, attempts: int, press: Press | None = None,
                       stored: asyncio.Future[None] | None = None) -> dict[str, Any]:
        """The flatten, with the controls; `press`: what it did when pressed, before it had them. `stored`: set
        once HALTED is stored."""
        started = time.perf_counter()  # a duration measured, not a time of day
        closing: list[str] = []
        failed: list[dict[str, Any]] = []
        placed: dict[str, int] = {}
        self._flatten_sold, self._flatten_entries = set(), {}  # this flatten's own, from its closing orders on
        self._flatten_last_word = {}
        report = await self._halt("flatten", by, flattening=self._to_close() or None,
                                  early=await self._pressed_cancels(press), stored=stored,
                                  follow_up=press is not None)
        held = self._to_close()  # a fill that came in with the cancels may have opened one more
        if held != (self._flattening or {}):
            await self._flatten_under_way(held or None)
        waits: list[str] = []  # positions whose closing order waits for the venue's Retry-After to end
        after_exit: list[str] = []  # positions all of whose sellable coins an exit still works on
        for sym in held:
            unfillable = self._without_candles_said(sym)
            if unfillable is not None:
                # As a close of it is refused: no closing order is journaled (each would be refused, and none could
                # fill), the position is said as not closed with why and what to do, and not followed up.
                failed.append({"symbol": sym, "error": unfillable})
                continue
            tries = 0  # attempts the venue answered (or the gates refused): one held back unsent is none
            refusal = ""
            ended = False  # the last attempt's order the exchange ended in its own answer before it filled whole
            while tries < attempts:
                self._read_markets()
                pos = self.portfolio.holding(sym)
                if pos is None:
                    if ended:  # what its closing orders left is dust, or nothing: the follow-up says they closed it
                        placed[sym] = tries
                    elif tries and sym in self.portfolio.positions:
                        # Refused, and the markets read again since make what is held dust: a minimum the
                        # exchange raised. Not closed, and no flatten can: said as a failure.
                        failed.append({"symbol": sym, "error": "the venue refused the closing order and what "
                                                               "is held is below its minimum order now: close "
                                                               "it on the exchange"})
                    break
                price = self.portfolio.last_price.get(sym)
                room = self.orders.exit_room(sym, price or pos.entry_price)
                if room <= 0:
                    # An exit still works on the position (its cancel not done: sent again at each poll), and what
                    # is beside it no order can sell: nothing to try, and no failure. The follow-up closes what is
                    # held once that exit has ended.
                    placed[sym] = tries
                    after_exit.append(sym)
                    break
                sub = await self.orders.submit(OrderIntent(
                    symbol=sym, side=side_to_close(pos.side), quantity=room, reason=OrderReason.FLATTEN,
                    ref_price=price, reduce_only=True, by=by))
                if sub.accepted and sub.order is not None:
                    closing.append(sub.order.client_order_id)
                    why = ended_unsold(sub.order)
                    if why is None:
                        placed[sym] = tries + 1
                        break
                    # Ended by the exchange in its own answer (a time in force, self-trade prevention, a book short
                    # of liquidity): an attempt, which closed what it filled; what is left is tried again.
                    ended, refusal = True, f"its closing order {sub.order.client_order_id} {why}"
                elif sub.held_until is not None and not sub.answered:  # placed by the follow-up after the hold
                    placed[sym] = tries
                    waits.append(sym)
                    break
                else:
                    ended, refusal = False, f"could not place the closing order: {sub.reason}"
                tries += 1
                if tries < attempts:
                    await asyncio.sleep(0.2 * tries)
            else:
                failed.append({"symbol": sym, "error": f"still held after {tries} closing attempts: the last, "
                                                       f"{refusal}" if ended else refusal})
                if self.orders.pending_exit_qty(sym) > 0:
                    # An exit still works on it: followed up all the same, so that what is held once that exit has
                    # ended is said (no attempt is left for it).
                    placed[sym] = tries
        for sym in held:
            # (dust, which no order can sell, is no position here either: the entry's coins will be one)
            if sym not in placed and self.portfolio.holding(sym) is None and self.orders.pending_entry(sym):
                placed[sym] = 0  # an entry still in doubt: closed once the venue shows what it bought
        self._watch_entries(placed)
        if placed != held:  # closed, or said as failed with no order working on it: not followed up
            await self._flatten_under_way(placed or None)
        waiting = self._flatten_waits(waits)
        behind = self._after_exit(after_exit)
        dust = self._dust(sym for sym in self.portfolio.positions if sym not in held)
        doubt = self._in_doubt(closing)
        # What the report leaves open, for the follow-up to answer once it is known; nothing when it is the whole
        # truth (its closing orders answered): stored with the report's record, in one transaction.
        said = {self.orders.live[cid].symbol: "in_doubt" for cid in doubt}
        said |= {x["symbol"]: "waiting" for x in waiting} | {x["symbol"]: "after_exit" for x in behind}
        said |= {x["symbol"]: "failed" for x in failed if x.get("symbol") in placed}  # beside an exit still working
        await self._flatten_said(said, KillSwitchEvent(
            action="flatten", cancelled=report.cancelled, failed=report.failed + failed, filled=report.filled,
            closing=closing, in_doubt=doubt, dust=dust, waiting=waiting, after_exit=behind, by=by,
            elapsed_ms=round((time.perf_counter() - started) * 1000.0, 2)))
        await self._persist_books()
        await self.flush()
        return {"cancelled": report.cancelled, "failed": report.failed + failed, "filled": report.filled,
                "closing": closing, "in_doubt": doubt, "dust": dust, "waiting": waiting, "after_exit": behind}

    def _in_doubt(self, cids: list[str]) -> list[str]:
        """Of these orders, those whose answer was lost (sent; what became of them unknown until looked up)."""
        return [cid for cid in cids if (o := self.orders.live.get(cid)) is not None
                and o.status is OrderStatus.IN_DOUBT]

    def _after_exit(self, symbols: list[str]) -> list[dict[str, Any]]:
        """The positions a flatten places no order for because an exit still works on all it could sell (its cancel
        not done), as the flatten says them: closed by the follow-up once that exit has ended unfilled."""
        detail = "an exit still works on it (its cancel not done): closed once that exit has ended"
        return [{"symbol": sym, "quantity": self.portfolio.positions[sym].quantity, "detail": detail}
                for sym in symbols if sym in self.portfolio.positions]

    def _flatten_waits(self, symbols: list[str]) -> list[dict[str, Any]]:
        """The positions whose closing order waits for the venue's Retry-After (no order goes to the exchange before
        it ends, and none is tried meanwhile), as the flatten says them; said in the log too, once per hold."""
        until = self.orders.held_until()
        if not symbols or until is None:
            return []
        detail = f"waits for the exchange's Retry-After until {fmt.iso(until)}: closed once it is over"
        if self._flatten_wait_said != until:
            self._flatten_wait_said = until
            log.warning("flatten waits for the exchange's Retry-After", until=fmt.iso(until), symbols=symbols)
        return [{"symbol": sym, "until": until, "detail": detail} for sym in symbols]

    def _dust(self, symbols: Iterable[str]) -> list[dict[str, Any]]:
        """Of `symbols`, what the books hold that the venue takes no order for (below one amount step, or below its
        minimum order): left as it is, said with what it is worth."""
        pf = self.portfolio
        out = []
        for sym in symbols:
            if pf.is_dust(sym):
                pos = pf.positions[sym]
                value = pos.quantity * (pf.last_price.get(sym) or pos.entry_price)
                out.append({"symbol": sym, "quantity": pos.quantity, "value": round(value, 8)})
        return out

    def _read_markets(self) -> None:
        """The venue's amount steps and minimums, which size and round orders and tell dust from a position (a venue
        reads them again when it refuses an order on them)."""
        for s in self.symbols:
            self.portfolio.markets[s] = self.venue.market(s)

    def _to_close(self) -> dict[str, int]:
        """What a flatten closes (dust, less than the venue can sell, is not), no closing order placed yet: the
        positions held, and the symbols of entries still in flight (in doubt: the cancel could not end them), whose
        fills the flatten closes when the venue shows them."""
        held = {sym: 0 for sym in self.portfolio.positions if self.portfolio.holding(sym) is not None}
        for e in self.orders.entries_in_flight():
            held.setdefault(e.symbol, 0)
        return held

    async def _follow_flatten(self) -> None:
        """A flatten's closing order can end with part of the position still held (filled in part, the rest expired:
        an exchange short of liquidity, or its self-trade prevention). Once no closing order is working on it, what
        is still held gets another, up to FLATTEN_ORDERS per position; a position still held after those is said as
        the flatten's failure (a kill_switch record naming it: a page). Re-arming the engine ends the follow-up."""
        placed = self._flattening
        if placed is None or self._controls.busy():
            return
        if self.state is not EngineState.HALTED:
            await self._flatten_under_way(None)
            return
        closing: list[str] = []
        closed: list[str] = []
        failed: list[dict[str, Any]] = []
        waits: list[str] = []
        more: set[str] = set()  # the symbols it places one more closing order for
        owed = dict(self._flatten_owed)
        answers: list[dict[str, str]] = []  # the outcomes, known now, of what an earlier word left open
        async with self._controls.turn("a flatten's follow-up"):
            self._watch_entries(placed)  # after a restart too: the entries recovered in doubt
            left = dict(placed)
            for sym in placed:
                pos = self.portfolio.holding(sym)
                if pos is None and self.orders.pending_entry(sym):
                    continue  # an entry still in doubt: what it bought is closed once the venue shows it
                if pos is None:  # nothing (or dust, less than the venue takes an order for) is held any more
                    sold = sym in self._flatten_sold
                    if sold:  # closed by a closing order; not an entry that bought nothing
                        closed.append(sym)
                    answers += flatten_owed.answer(owed, sym, "closed" if sold else "gone")
                    del left[sym]
                    continue
                unfillable = self._without_candles_said(sym)
                if unfillable is not None:  # a flatten stored before a restart that removed its symbol
                    failed.append({"symbol": sym, "error": unfillable})
                    answers += flatten_owed.answer(owed, sym, "failed")
                    del left[sym]
                    continue
                if self.orders.pending_exit_qty(sym) > 0:
                    continue  # a closing order is still working on it
                if placed[sym] >= FLATTEN_ORDERS:
                    last = self._flatten_last_word.pop(sym, None)
                    held_on = f"{pos.quantity:g} still held after {placed[sym]} closing attempts"
                    failed.append({"symbol": sym, "error": f"{held_on}: the last, {last}" if last else held_on})
                    answers += flatten_owed.answer(owed, sym, "failed")
                    del left[sym]
                    continue
                if self.orders.held_until() is not None:
                    waits.append(sym)  # no order goes to the venue before its Retry-After ends: none is tried
                    continue
                sub = await self.orders.submit(OrderIntent(
                    symbol=sym, side=side_to_close(pos.side), quantity=pos.quantity, reason=OrderReason.FLATTEN,
                    ref_price=self.portfolio.last_price.get(sym), reduce_only=True))
                if sub.held_until is not None and not sub.answered:  # held back unsent: not an attempt
                    waits.append(sym)
                    continue
                left[sym] += 1
                why = ended_unsold(sub.order) if sub.accepted else None
                if why is not None and sub.order is not None:
                    # Ended by the exchange in its own answer: an attempt, said with the failure if it is the last.
                    self._flatten_last_word[sym] = f"its closing order {sub.order.client_order_id} {why}"
                elif sub.accepted and sub.order is not None:
                    closing.append(sub.order.client_order_id)
                    more.add(sym)
                else:
                    self._flatten_last_word[sym] = f"its closing order was refused: {sub.reason}"
            waiting = self._flatten_waits(waits) if self._flatten_wait_said != self.orders.held_until() else []
            dust = self._dust(sym for sym in placed if sym not in left)
            entries = self._entries_ended(closed)
            doubt = self._in_doubt(closing)
            # A position an earlier word left open (in doubt, waiting, more closing orders placed) whose outcome is
            # known now is said too (`answers`), or that word would stand as the operator's last.
            if closing or failed or dust or waiting or answers or entries:
                said = {sym: "closing" for sym in more} | {self.orders.live[cid].symbol: "in_doubt" for cid in doubt}
                said |= {x["symbol"]: "waiting" for x in waiting}
                # Positions the flatten gave up on earlier (their closing orders failed for good), still held.
                gave_up = {str(f.get("symbol")) for f in failed}
                held = sorted(sym for sym in self.portfolio.positions if self.portfolio.holding(sym) is not None
                              and sym not in left and sym not in gave_up and not self.orders.pending_exit_qty(sym))
                await self._flatten_said(flatten_owed.said_now(owed, said), KillSwitchEvent(
                    action="flatten", failed=failed, closing=closing, in_doubt=doubt, dust=dust, waiting=waiting,
                    by="engine", follow_up=True, closed=closed, entries=entries, answers=answers, held=held))
            self._flatten_sold -= set(closed)
            if left != placed:
                await self._flatten_under_way(left or None)

    async def _follow_failed_cancels(self) -> None:
        """A kill switch's cancel reported failed whose order has ended since (a slow cancel that went through, a
        fill, the exchange's own end): said by a follow-up record, in the transaction that stops following it."""
        ended = self._failed_cancels.ended()
        if ended is None:
            return
        log.warning("kill switch follow-up: orders whose cancel was reported failed have ended",
                    cancelled=",".join(ended.cancelled), filled=",".join(ended.filled))
        await self._persist_books(self._failed_cancels.record(), publish=lambda: self.bus.publish(ended))

    async def _load_failed_cancels(self) -> None:
        """The kill switch's failed cancels a stopped engine was still following (failed_cancels.py)."""
        kept = await self.store.get_kv(failed_cancels.KEY)
        if not isinstance(kept, list):
            return
        journal = {}
        for cid in kept:
            o = await self.store.order(str(cid))
            if o is not None:
                journal[o.client_order_id] = o
        self._failed_cancels.load(kept, self.orders.live, journal)

    def _watch_entries(self, placed: dict[str, int]) -> None:
        """Keep the entries in flight in the flatten's symbols, so that its follow-up says what became of them."""
        for sym in placed:
            for o in self.orders.entries(sym):
                self._flatten_entries.setdefault(o.client_order_id, o)

    def _entries_ended(self, closed: list[str]) -> list[dict[str, Any]]:
        """The watched entries that have ended since the follow-up last looked, as it says them (and no longer
        watched); `closed`: the symbols the closing orders closed since."""
        ended = [o for cid, o in self._flatten_entries.items() if cid not in self.orders.live]
        for o in ended:
            del self._flatten_entries[o.client_order_id]
        return [entry_end(o, sold=o.symbol in closed) for o in ended]

    async def _flatten_said(self, owed: dict[str, str], report: KillSwitchEvent) -> None:
        """Publish a flatten's report (or follow-up) with what its follow-up owes after it, in one transaction: a
        start after a stop answers what the last record left open, and nothing it answered already."""
        self._flatten_owed = owed
        await self.store.put_kv(FLATTEN_OWED_KEY, owed or None, self.clock.wall(),
                                publish=lambda: self.bus.publish(report))

    async def _flatten_under_way(self, placed: dict[str, int] | None) -> None:
        """Keep the flatten being followed up (None: none is), in memory and durably: a restart goes on with it."""
        self._flattening = placed
        await self.store.put_kv(FLATTEN_KEY, placed, self.clock.wall())
        if placed is None and self._flatten_owed:  # ended (re-armed): nothing is owed of it any more
            self._flatten_owed = {}
            await self.store.put_kv(FLATTEN_OWED_KEY, None, self.clock.wall())

    async def approve(self, approval_id: str, by: str = "operator") -> dict[str, Any]:
        async with self._controls.turn(f"the approve of {approval_id}"):
            self._still_running()
            try:
                return await self.approvals.approve(approval_id, by)
            finally:
                await self.flush()

    async def reject(self, approval_id: str, by: str = "operator") -> dict[str, Any]:
        async with self._controls.turn(f"the reject of {approval_id}"):
            self._still_running()
            res = await self.approvals.reject(approval_id, by)
            await self.flush()
            return res

    async def set_approval_mode(self, mode: str, by: str = "operator") -> str:
        self._still_running()
        await self.approvals.set_mode(mode, by)
        await self.flush()
        return mode

    async def operator_order(self, symbol: str, side: str, quantity: float, by: str = "operator") -> dict[str, Any]:
        """A manual order from the operator: the same single path and gates as every other order."""
        self._still_running()
        if symbol not in self.symbols:
            raise ControlError(f"unknown symbol {symbol}")
        self._refuse_without_candles(symbol)
        s = Side(side.lower())
        # The books are long only: a sell reduces what they hold, and never sells coins they do not have (another
        # order's fill not recorded yet, or what the account held before ffe), whose fill no position could take.
        reduce = s is Side.SELL
        sub = await self.orders.submit(OrderIntent(symbol=symbol, side=s, quantity=quantity,
                                                   reason=OrderReason.OPERATOR, reduce_only=reduce,
                                                   ref_price=self.portfolio.last_price.get(symbol), by=by))
        await self.flush()
        return {"accepted": sub.accepted, "reason": sub.reason,
                "client_order_id": sub.order.client_order_id if sub.order else None,
                "gates": [g.as_dict() for g in sub.gates]}

    async def operator_cancel(self, client_order_id: str, by: str = "operator") -> dict[str, Any]:
        """Cancel one open order through the order path. Whatever filled before the cancel stays filled."""
        async with self._controls.turn(f"the cancel of {client_order_id}"):
            self._still_running()
            o = self.orders.live.get(client_order_id)
            if o is None:
                # Ended meanwhile (filled while the operator was asked, say): what it became, from the journal.
                ended = await self.store.order(client_order_id)
                if ended is None:
                    raise ControlError(f"no open order {client_order_id}")
                return _cancel_answer(ended, False, _ended_text(ended))
            ok, why = await self.orders.cancel_within(o, by=by)
            log.info("operator cancel", client_order_id=client_order_id, by=by, cancelled=ok, reason=why or None)
            owed = self._exits_owed.get(o.symbol)
            if owed is not None and o.reduce_only and o.reason is owed[0].reason:
                # The operator's word on the stop's exit, not the exchange's: owed no more (the levels are watched
                # again from the next bar).
                del self._exits_owed[o.symbol]
                await self._store_exits_owed()
            await self._persist_books()
            await self.flush()
            if not ok and o.status is OrderStatus.CANCELED and not present.ended_by_exchange(o.error):
                # Its cancel's answer is late (or the poll's resend of it answered first), and a lookup found it
                # cancelled meanwhile: by a cancel ffe sent since this one was asked, nobody else's.
                ok, why = True, ""
            elif not ok and o.status.final:  # it had ended at the venue (its lookup said so): what it became
                why = _ended_text(o)
            return _cancel_answer(o, ok, why)

    async def settle_order(self, client_order_id: str, outcome: str, quantity: float | None = None,
                           price: float | None = None, by: str = "operator", fee: float | None = None,
                           fee_currency: str | None = None) -> dict[str, Any]:
        """The operator's word on an order in doubt that the exchange lost (`ffe ctl settle`): ended `filled` (the
        quantity and price given, booked as its fill, with its fee `fee` in `fee_currency`: the symbol's base or
        quote currency, the quote by default) or `canceled`, through the order path; nothing is sent. Or on the fill
        of an order the exchange shows filled beyond the trades it lists (OrderPath.settle). A reconciliation
        follows at once: the order holds the engine no more, and whatever the books and the venue still differ by
        holds it until accepted."""
        async with self._controls.turn(f"the settle of {client_order_id}"):
            self._still_running()
            o = self.orders.live.get(client_order_id)
            if o is None or (o.status is not OrderStatus.IN_DOUBT and o not in self.orders.trades_lagging()):
                now = f" (it is {o.status.value})" if o is not None else ""
                raise ControlError(f"no order {client_order_id} in doubt or filled beyond the trades the exchange lists"
                                   f"{now}: nothing settled")
            if outcome == "canceled" and (quantity is not None or price is not None or fee is not None):
                raise ControlError(f"settle {client_order_id} canceled takes no quantity, price or fee: nothing "
                                   "settled")
            paid = settled_fee(o.symbol, fee, fee_currency, quantity)
            detail = await self.orders.settle(o, outcome, quantity=quantity, price=price, by=by, fee=paid)
            log.warning("order settled by hand", client_order_id=client_order_id, outcome=outcome, by=by,
                        quantity=quantity, price=price, fee=paid.amount, fee_currency=paid.currency, venue=detail)
            after = await self._reconcile_after_by_hand(client_order_id)
            return {"client_order_id": client_order_id, "symbol": o.symbol, "status": o.status.value,
                    "filled": o.filled, "average": o.average, "fee": paid.amount, "fee_currency": paid.currency,
                    "venue": detail, "reconcile": after, "reconcile_blocked": list(self.reconcile_blocked)}

    async def book_hand_sale(self, symbol: str, quantity: float, price: float, fee: float = 0.0,
                             by: str = "operator") -> dict[str, Any]:
        """A sale the operator made on the exchange by hand, outside ffe (`ffe ctl sold-by-hand`): `quantity` of the
        position in `symbol` sold at `price`, its fee `fee` in the quote currency, as the exchange's account shows
        them. Booked through the order path as an order never sent, its fill and the trade it closes; nothing goes
        to the exchange. Refused (ControlError, nothing booked) on the simulated exchange (it trades only through
        ffe), for more than the books' position, while an order of the symbol is working, and when the exchange's
        account does not show the coins gone. A reconciliation follows at once; the engine stays as it was (PAUSED
        by the difference, until resumed)."""
        async with self._controls.turn(f"the sale by hand of {symbol}"):
            self._still_running()
            if self.sim_venue is not None:
                raise ControlError("the simulated exchange trades only through ffe: nothing can have been sold there "
                                   "by hand; nothing booked")
            if not (quantity > 0 and price > 0 and fee >= 0):
                raise ControlError("a sale by hand needs a quantity and a price above 0 and a fee of 0 or more: "
                                   "nothing booked")
            pos = self.portfolio.positions.get(symbol)
            if pos is None:
                raise ControlError(f"no position in {symbol}: nothing booked")
            if quantity > pos.quantity + 1e-12:
                raise ControlError(f"{quantity:.8g} is more than the books' {symbol} position of {pos.quantity:.8g}: "
                                   "nothing booked")
            await self.reconciler.refuse_unless_sold(symbol, quantity)
            o = await self.orders.book_hand_sale(symbol, quantity, price, fee, by=by,
                                                 decision_id=pos.entry_decision_id)
            log.warning("sale by hand booked", client_order_id=o.client_order_id, symbol=symbol, quantity=quantity,
                        price=price, fee=fee, by=by)
            after = await self._reconcile_after_by_hand(o.client_order_id)
            left = self.portfolio.positions.get(symbol)
            return {"client_order_id": o.client_order_id, "symbol": symbol, "quantity": quantity, "price": price,
                    "fee": fee, "position_left": left.quantity if left is not None else 0.0, "reconcile": after,
                    "reconcile_blocked": list(self.reconcile_blocked)}

    async def _reconcile_after_by_hand(self, client_order_id: str) -> str:
        """After the operator's word on an order (settled, or a sale by hand booked): the books stored, a
        reconciliation at once, and what it says for the operator. Differences held until then hold the engine no
        more when that reconciliation finds the books and the venue agreeing (reconcile), nothing left to look at
        again: the venue made the change the operator booked long before, and its reads show it."""
        await self._persist_books()
        await self.flush()
        differences = await self.reconcile()
        await self.flush()
        held = self.reconcile_blocked
        if self.reconcile_waits:
            return ("reconciliation waits for the exchange's Retry-After (it asked for no requests for now) and "
                    "compares once it is over: `ffe ctl why` then")
        if not held and self.reconcile_unconfirmed:
            return (f"reconciliation sees {len(self.reconcile_unconfirmed)} difference(s) it looks at again once the "
                    "venue's reads have caught up: accept them if they stay (`ffe ctl why`)")
        if not held:
            then = ("re-arm when ready (`ffe ctl resume --yes`)" if self.state is EngineState.HALTED else
                    "resume when ready")
            return f"reconciliation agrees with the venue; {then}"
        if in_doubt_only(held) or not unexplained(held):
            return f"reconciliation: {blocked_text(held)}"
        if any(d.get("kind") in OUTAGE_KINDS for d in held):  # it could not reach the exchange: nothing compared
            return f"reconciliation: {outage(held).what}; it looks again once it answers (`ffe ctl why`)"
        if any(d.get("client_order_id") == client_order_id for d in held) or not self._reconciled_whole:
            # It could not compare everything yet (balances read within the settle window of an order change may
            # lag the books): what held the engine before is looked at again, not to be accepted as it stands.
            return ("reconciliation looks again once the venue's reads have caught up; entries stay held until it "
                    "agrees or finds what to accept (`ffe ctl why`)")
        return f"reconciliation found {blocked_text(held)}: accept them once checked (`ffe ctl why`)"

    async def close_position(self, symbol: str, by: str = "operator", opened_ts: int | None = None,
                             timeout_s: float | None = None) -> dict[str, Any]:
        """Close one position with a reduce-only market order on the single order path: the gates, the engine
        state (a HALTED engine refuses it), the breaker and the venue hold apply as for every other order.
        `opened_ts`: the position the operator was shown (its opening time); if the symbol's position now is
        another one (that one closed, a new one opened since), nothing is sent.

        The exchange may hold the closing order for its whole timeout, and another control under way may hold the
        turn as long: the close runs as the engine's own task, and its answer waits for it half the time its
        caller waits at most (`timeout_s`, or `control.request_timeout_s`), as the kill switch's does; then it says
        what is under way (`under_way`), `accepted` True once its order is sent, None while it waits for its turn."""
        at = self.clock.monotonic()
        mine: dict[str, Any] = {}  # "turn" once it has the controls' turn, "order" once its order is journaled
        work = self._after_controls(self._close(symbol, by, opened_ts, mine), asked="a close")
        done = await self._answer_within(work, at, timeout_s)
        if done is not None:
            return done
        o = mine.get("order")
        if o is not None:
            said = _close_said(o, o.client_order_id in self.orders.sending())
            return {"symbol": symbol, "accepted": True, "client_order_id": o.client_order_id,
                    "in_doubt": o.status is OrderStatus.IN_DOUBT, "gates": [],
                    "under_way": f"{said} (`ffe ctl orders` shows how it ends)"}
        under = self._controls.under_way or "another control"
        cancelling = mine.get("cancelling")
        if cancelling:
            waits = (f"cancelling its entry {', '.join(cancelling)} first: the closing order is sent once the "
                     "exchange has answered; if that cancel does not go through, nothing is sent and the entry still "
                     "works (said in the log)")
        else:
            waits = ("being placed: its order is not sent yet" if mine.get("turn") else
                     f"{under} is under way: the close is checked and sent once it has ended")
        return {"symbol": symbol, "accepted": None, "client_order_id": None, "in_doubt": False, "gates": [],
                "under_way": f"{waits} (`ffe ctl orders` shows it)"}

    async def _close(self, symbol: str, by: str, opened_ts: int | None, mine: dict[str, Any]) -> dict[str, Any]:
        async with self._controls.turn(f"the close of {symbol}"):
            mine["turn"] = True
            self._still_running()
            pos = self.portfolio.holding(symbol)
            # Dust first, whoever asks: it keeps the opening time of the position it is left of, so a close of the
            # row shown (the console's, `ffe ctl close` at a terminal) finds no position and is told what the row is.
            dust = self._dust([symbol]) if pos is None else []
            if dust:
                raise ControlError(tables.dust_left(symbol, dust[0]["quantity"], dust[0]["value"]))
            if opened_ts is not None and (pos is None or pos.opened_ts != opened_ts):
                now = "" if pos is None else f" (the one open now was opened {fmt.iso_ms(pos.opened_ts)})"
                raise ControlError(f"{symbol}: the position opened {fmt.iso_ms(opened_ts)} is no longer open{now}; "
                                   "nothing was sent")
            if pos is None:
                raise ControlError(f"no open position in {symbol}")
            self._refuse_without_candles(symbol)
            working = self.orders.entries(symbol)
            mine["cancelling"] = [o.client_order_id for o in working]
            entries = await self._cancel_entries(symbol, working, by)
            mine.pop("cancelling")
            done = tables.entries_said(entries)  # said with a refusal too: the entries' cancels are done
            pos = self.portfolio.holding(symbol)  # with what the entries filled before their cancels
            if pos is None:
                raise ControlError(f"no open position in {symbol}{done}")
            remaining = pos.quantity - self.orders.pending_exit_qty(symbol)
            # Within a float's residue of the exits working (sums of fills and sales): nothing is left to close.
            if remaining <= 1e-9 * pos.quantity:
                raise ControlError(f"{symbol}: its closing order is already working{done}")
            sub = await self.orders.submit(OrderIntent(
                symbol=symbol, side=side_to_close(pos.side), quantity=remaining, reason=OrderReason.OPERATOR,
                ref_price=self.portfolio.last_price.get(symbol), reduce_only=True,
                decision_id=pos.entry_decision_id, by=by), on_journal=lambda order, _gates: mine.update(order=order))
            log.info("operator close", symbol=symbol, by=by, accepted=sub.accepted, reason=sub.reason or None)
            await self.flush()
            o = sub.order
            return {"symbol": symbol, "accepted": sub.accepted, "reason": sub.reason,
                    "client_order_id": o.client_order_id if o else None,
                    "in_doubt": o is not None and o.status is OrderStatus.IN_DOUBT,
                    # Ended in its own answer before it sold all: the position still open, the close not done.
                    "ended": ended_unsold(o),
                    "gates": [g.as_dict() for g in sub.gates], **entries}

    async def _cancel_entries(self, symbol: str, working: list[Order], by: str) -> dict[str, list[str]]:
        """A close means flat: an entry of the symbol still working (`working`: filled in part, the rest open) would
        fill after the close, and the position come back. Each is cancelled first (what it filled before is closed
        with the rest); one in doubt is cancelled once the exchange shows it. Refused, no closing order sent, when an
        entry's cancel did not go through (it still works), or its fill at the exchange is beyond the trades listed
        yet (a sale sized now would leave that part open). For the answer: the entries cancelled (`cancelled`), those
        that had filled (`filled`), those waiting for the exchange's word (`entries_in_doubt`)."""
        said: dict[str, list[str]] = {"cancelled": [], "filled": [], "entries_in_doubt": []}
        for o in working:
            cid = o.client_order_id
            ok, why = await self.orders.cancel_within(o, by)
            if cid not in self.orders.live:  # ended, every fill of it booked
                said["filled" if o.status is OrderStatus.FILLED else "cancelled"].append(cid)
                continue
            if o.status is OrderStatus.IN_DOUBT:
                said["entries_in_doubt"].append(cid)
                continue
            # Refused: what this close did before (entries it cancelled) is said with it.
            before = tables.entries_said({k: v for k, v in said.items() if v})
            if o in self.orders.trades_lagging():
                how = "cancelled by this close at" if ok else "ended at"
                raise ControlError(f"{symbol}: its entry {cid} has {how} the exchange, which has not listed the "
                                   "trades of its last fill yet: the books do not hold all it bought; no closing "
                                   f"order was sent: close once its fill is booked (`ffe ctl orders`: not `trades "
                                   f"behind`){before}")
            raise ControlError(f"{symbol}: its entry {cid} still works at the exchange and its cancel did not go "
                               f"through ({why}); no closing order was sent: cancel it (`ffe ctl cancel`), then "
                               f"close{before}")
        return {k: v for k, v in said.items() if v}

    async def balances(self) -> dict[str, Any]:
        """Per asset: free, locked in open orders, total and its value in the quote currency."""
        quote = self.settings.venue.quote
        prices = self.portfolio.last_price
        sim = self.sim_venue
        if sim is not None:  # the paper venue knows what each open order reserved
            book = sim.state()
            totals, locked = book["balances"], book.get("reserved", {})
        else:
            try:
                totals, said = await self.breaker.call(self.venue.fetch_balance_locked)
            except Exception as exc:
                raise ControlError(f"the venue did not give its balances: {exc}") from None
            # The venue's figure where it gives one (it counts orders placed elsewhere too); ffe's own orders else.
            locked = {**views.locked_by_orders(list(self.orders.live.values()), prices, quote), **said}
        return views.balance_rows(dict(totals), dict(locked), prices, quote)

    async def profit(self) -> dict[str, Any]:
        return await views.profit(self)

    async def why(self) -> dict[str, Any]:
        return await views.why(self)

    async def accept_reconcile(self, by: str = "operator", timeout_s: float | None = None,
                               own_coins: bool = False) -> list[dict[str, Any]]:
        """Accept the differences reconciliation found (the venue's balances become the new baseline, its quote
        balance the cash). Nothing when nothing is waiting (refused with `own_coins`). Refused, with the reason,
        while an order is in doubt or unanswered, or over coins gone from a position (Reconciler.accept).
        `own_coins`: the operator's word that the coins gone were their own, the position untouched (the baseline is
        lowered, never raised; the record says which). `timeout_s`: how long the client waits for the answer, when
        it said."""
        async with self._controls.turn("an accept of reconciliation's differences"):
            self._still_running()
            accepted = list(self.reconcile_blocked)
            if any(d.get("kind") in OUTAGE_KINDS for d in accepted):
                # Nothing was compared: the books against an account nobody has read. It lifts once a reconciliation
                # reaches the exchange (and shows what, if anything, is left to accept); a clock the exchange
                # refuses, once the operator has set it right.
                raise ControlError(outage(accepted).accept)
            if not accepted:
                # Only what a reconciliation showed is accepted: a change at the venue since then (coins arriving)
                # is for the next reconciliation to show, never taken into the baseline unseen. The operator's word
                # that coins of theirs left is refused where nothing says coins left at all.
                if own_coins:
                    raise ControlError("nothing accepted: no coins are missing (reconciliation found no difference "
                                       "to accept)")
                return []
            # The balances wait for the settle window after the last order change: waited for when that fits well
            # within the time the client gives an answer (its own, or `ffe ctl`'s default), refused with when to
            # accept again otherwise: never carried out after the client has given up on it.
            answer_s = self.settings.control.request_timeout_s
            if timeout_s is not None:
                answer_s = min(answer_s, timeout_s)
            try:
                taken = await self.reconciler.accept(accepted, wait_s=answer_s / 2, own_coins=own_coins,
                                                     cash_of_the_books=not self._cash_from_venue)
            except BalancesMoved:
                self._recheck_at = self.clock.monotonic()  # the balances as they are now, shown at once
                raise
            records, cash = dict(taken.records), taken.cash
            drop: tuple[str, ...] = ()
            if any(d.get("kind") == "restore_unrecovered" for d in accepted):
                # The operator has checked the account's later orders by hand: the restore is behind us.
                drop = (RESTORED_KEY,)
                self._restore_pending = False
            if cash is not None:  # read when nothing was in doubt: what the venue's cash waited for is done
                if self.sim_venue is not None:
                    # A paper account's cash is rebuilt from its fills at every start: the accepted difference is
                    # kept beside them, or the next start would bring the difference back.
                    added = float(await self.store.get_kv(CASH_ACCEPTED_KEY, 0.0) or 0.0)
                    records[CASH_ACCEPTED_KEY] = added + cash - self.portfolio.cash
                if self._cash_from_venue:  # the books had no cash of their own yet (a start's, a restore's)
                    self.portfolio.cash = cash
                else:  # what the books held differs from the account by no trade: no peak, drawdown or day's loss
                    self.portfolio.take_cash(cash)
                self._cash_from_venue = self._compare_waits = self._cash_charged = False
                self._books_whole()
            # The new baseline, the books' cash and peak and the accept's record in one transaction: a kill leaves
            # all or none (the baseline stored with the old cash, a restart would find the difference again).
            await self._persist_books(records, drop=drop, publish=lambda: self.bus.publish(
                ReconcileEvent(status="accepted", differences=accepted, own_coins=dict(taken.own), by=by)))
            # Only once stored: a reconciliation under way meanwhile, against the baseline replaced, holds the engine
            # for nothing accepted, and one that ends after this is dropped by the reconciler (superseded). The books
            # take the new baseline (an accepted shortfall of coins, which the exits do not sell) only now too.
            self.reconciler.note_accepted(taken)
            await self._hold([], f"{len(accepted)} difference(s) accepted", by=by)
            await self.flush()
            return accepted

    async def backup(self, to: str | None = None, by: str = "operator") -> dict[str, Any]:
        """A backup of this engine's records while it runs (the host takes it: it owns the store and audit)."""
        if self.backup_hook is None:
            raise ControlError("this engine takes no backups (no host around it)")
        return await self.backup_hook(to, by)

    def _weight_shares(self) -> dict[str, float]:
        """The providers' weights as a decision's votes are weighed with them: shares of the whole."""
        raw = {p.name: self.ensemble.weight(p.name) for p in self.providers}
        total = sum(raw.values())
        return {name: w / total for name, w in raw.items()} if total > 0 else raw

    def snapshot(self) -> dict[str, Any]:
        """Everything the console's panes show, as plain data."""
        pf = self.portfolio
        now_ms = self.clock.now_ms()
        behind = {o.client_order_id for o in self.orders.trades_lagging()}
        market_ts = max(self.last_bar_ts.values()) if self.last_bar_ts else None
        # A position's age runs to now on the clock its opening was stamped with. On an exchange's market (live, or
        # paper on its candles) a fill is stamped with the clock's wall time, and market_ts, the last closed
        # candle's open time, is one to two timeframes behind it; on a simulated or replayed market both are market
        # time.
        aged_to = now_ms if self.settings.market.source == "exchange" else market_ts
        return {
            "mode": self.mode,
            "version": __version__,
            "uptime_s": self.clock.monotonic() - self.started_at,
            "state": self.state.value,
            "state_reason": self.state_reason,
            "state_serial": self.trading.changes,
            # The state a start after a stop now comes up in, by this engine's configuration (a live engine's is
            # PAUSED after every start, engine.live_start_paused): an attached console's own may differ.
            "starts_again": overrides.next_start(self.settings, self.state, live=self.opts.live).value,
            "ended": self.ended(),
            "approval_mode": self.approval_mode,
            "overrides": [o.as_dict() for o in self.overrides],
            # None while the cash in memory may count a fill twice (cash_unreconciled): no figure made from it.
            **dict.fromkeys(("equity", "cash", "day_pnl", "drawdown_pct"), None),
            **({} if self.cash_unreconciled() else {"equity": pf.equity(), "cash": pf.cash, "day_pnl": pf.day_pnl(),
                                                     "drawdown_pct": pf.drawdown_pct()}),
            "cash_unreconciled": self.cash_unreconciled(),
            "market_ts": market_ts,
            "positions": [{"symbol": p.symbol, "side": p.side.value, "quantity": p.quantity,
                           "entry": p.entry_price, "last": pf.last_price.get(p.symbol, p.entry_price),
                           "unrealised": p.unrealised, "stop_loss": p.stop_loss, "take_profit": p.take_profit,
                           "opened_ts": p.opened_ts, "id": p.entry_decision_id,
                           "age_s": _age_s(p.opened_ts, aged_to),
                           "pnl_pct": _move_pct(p.side, p.entry_price, pf.last_price.get(p.symbol, p.entry_price)),
                           "dust": pf.is_dust(p.symbol)}
                          for p in pf.positions.values()],
            "orders": [{"client_order_id": o.client_order_id, "symbol": o.symbol, "side": o.side.value,
                        "quantity": o.quantity, "filled": o.filled, "type": o.type, "price": o.price,
                        "status": o.status.value, "reason": o.reason.value, "created_ts": o.created_ts,
                        "age_s": max(0.0, (now_ms - o.created_ts) / 1000.0) if o.created_ts else None,
                        # filled at the venue beyond the trades it lists: its fill is booked once they are
                        "trades_behind": o.client_order_id in behind}
                       for o in self.orders.live.values()],
            "breakers": [self.breaker.summary()],
            "venue_hold": self.venue_hold(),
            "approvals": self.approvals.summary(),
            "weights": self._weight_shares(),
            "bars": self.bars,
            "reconcile_blocked": list(self.reconcile_blocked),
            "monitor": self.monitor_status() if self.monitor_status is not None else None,
        }

    def venue_hold(self) -> dict[str, Any] | None:
        """The exchange's Retry-After while it lasts, None when there is none: {"venue", "until" (wall seconds),
        "holds"}. "requests" when it asked for no request at all (a read answered 418 or 429: no candle, lookup,
        cancel or order goes before then), else "orders" (an order answered so: only new orders wait). The later
        of the two is the one said: nothing is sent before it ends either way."""
        wall = self.clock.wall()
        reads = getattr(self.venue, "requests_held_until", None)
        requests = reads() if reads is not None else None
        if requests is not None and requests <= wall:
            requests = None
        orders = self.orders.held_until()
        if requests is None and orders is None:
            return None
        # An order refused for a read's hold holds orders to the same time, give or take the clocks' rounding.
        if requests is not None and (orders is None or requests >= orders - 1.0):
            return {"venue": self.venue.name, "until": requests, "holds": "requests"}
        return {"venue": self.venue.name, "until": orders, "holds": "orders"}

    def health(self) -> dict[str, Any]:
        """The monitor's verdict (what GET /health answers), for `ffe ctl health`."""
        if self.health_report is None:
            raise ControlError("this engine has no health report (it runs without its process host)")
        return self.health_report()


def _pass_on(to: asyncio.Future[None], done: asyncio.Future[Any]) -> None:
    """`done`'s end passed on to `to`: its failure, or that it is done."""
    if to.done():
        return
    if done.cancelled():
        to.cancel()
    elif done.exception() is not None:
        to.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        to.set_result(None)


def _flatten_answer(r: CancelReport) -> dict[str, Any]:
    """A flatten's answer given before its closing orders are answered: what its cancels did, what is under way."""
    return {"cancelled": r.cancelled, "failed": r.failed, "filled": r.filled, "closing": [], "dust": [],
            "waiting": [], "after_exit": [], "under_way": r.under_way}


def _learner_record(learner: Any) -> dict[str, Any]:
    """The adaptive weights as stored (kv `weights`), read back at start."""
    return {"weights": learner.weights, "stats": learner.state()}


def _move_pct(side: Side, entry: float, last: float) -> float | None:
    """A position's move since its entry, in percent, in its favour when positive."""
    if not entry:
        return None
    return (1.0 if side is Side.BUY else -1.0) * 100.0 * (last - entry) / entry


def _age_s(opened_ts: int, to_ms: int | None) -> float | None:
    """Seconds from a position's opening to `to_ms`, at least 0; None with no time to count to."""
    if to_ms is None or not opened_ts:
        return None
    return max(0.0, (to_ms - opened_ts) / 1000.0)


async def _maybe_await(x: Any) -> Any:
    if asyncio.iscoroutine(x):
        return await x
    return x


def _ended_text(o: Order) -> str:
    """What an order no longer open had become, for the answer to a cancel asked of it."""
    return present.order_ended({"status": o.status.value, "filled": o.filled, "average": o.average,
                                "symbol": o.symbol, "error": o.error})


def _cancel_answer(o: Order, cancelled: bool, reason: str) -> dict[str, Any]:
    return {"client_order_id": o.client_order_id, "symbol": o.symbol, "cancelled": cancelled, "reason": reason,
            "status": o.status.value, "filled": o.filled}
