"""The operator console: a Textual app that runs the engine in-process and shows what it does and why.

The console talks to the engine only through its control surface (pause, resume, halt, flatten, approve, reject,
set_approval_mode, operator_cancel, close_position, and the reads balances, profit, why and health behind the views
1-7), `snapshot()` and the event bus. Events are drained from a bounded subscription on a timer and
folded into the panes in batches, so a burst of log lines costs one redraw, not one per line.

Lifecycle (one place for errors): `_lifecycle` opens the engine, starts the control socket, and runs the engine
loop as a task shielded from the UI's teardown. Whatever ends the loop (quit, SIGTERM/SIGHUP, the feed ending, a
crash), `_close` finishes in the same order as the headless run: stop requested, loop ended, socket closed, state
and books stored, audit flushed, store closed, data-dir lock released.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from typing import Any, Callable

from rich.console import Group
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Container, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Input, Static

from ffe_engine import fmt, overrides, tables
from ffe_engine.config import Settings
from ffe_engine.control import describe, halt_by_signal, starting_engine
from ffe_engine.errors import ControlError, FfeError
from ffe_engine.events import ErrorEvent
from ffe_engine.host import (EngineHost, Installed, already_stopping, install_signals, kept_for_next_start,
                             quiet_signals, remove_signals)
from ffe_engine.model import EngineState
from ffe_engine.present import approve_answer, halt_banner, kill_headline
from ffe_engine.remote import ASK_AGAIN_S, EngineStopped, NoAnswer, RemoteEngine, RemoteHost
from ffe_engine.remote import attach as attach_engine

from . import keys as keydefs
from .dialogs import ConfirmScreen, FilterScreen, HelpScreen
from .panes import (ApprovalsTable, BreakerPane, ChartPane, GatesPane, KeyedTable, KeysFooter, LogPane,
                    PositionsTable, StatusLine, VotesPane, fit_rows, selected_position,
                    waiting_approvals)
from .state import ConsoleState
from .views import (OrdersTable, ScrollPane, TradesTable, balances_view, health_view, profit_view,
                    why_view)

TICK_S = 0.15  # event drain and redraw period
CHART_S = 0.5  # the chart is redrawn at most this often
LOG_LINES = 2000  # lines kept in the log pane (the console keeps a longer history for re-filtering)
HISTORY_LINES = 5000
# A decision per symbol per bar would push a fill off an 80x24 log within a second: decisions are shown on request.
LOG_FILTER = "-decision"
SUBSCRIPTION_MAX = 50_000  # events buffered between two drains before the oldest are dropped
NOT_ANSWERING_S = 3.0  # attached: an engine silent this long to the status requests (asked twice a second) is said
WIDE = (110, 32)  # from this size on, every pane is on screen at once
WIDER = 160  # columns from which the gates pane is wide enough to say values, limits and its title in full
LOW_ROWS = 16  # the votes, chart and gates row of the wide layout: every gate listed
ANSWER_POLL_S = 0.05  # how often an engine held for the kill switch's answer looks for it
# The kill switch and flatten answer within half of this when another control holds the engine (an approve on the
# wire): HALTED is stored at once, and the banner says what waits for that control.
PRESS_ANSWER_S = 1.0
BANNER_ROWS = 3  # the banner's rows at most (console.tcss #banner): at 80x24 the log keeps its four
WIDE_FIXED_ROWS = 16  # the status line (2), the footer (1), positions (7) and approvals beside the breaker (6)
LOG_ROWS = 5  # the log's title line and four lines, at least, in the wide layout
SMALLEST = (80, 24)  # below this the panes shrink so the log keeps some lines, and a line says so
DETAIL_VIEWS = ("votes", "approvals", "gates", "breaker", "chart")
VIEWS = keydefs.VIEWS
VIEW_TITLES = {"main": "Main", "trades": "Trades", "orders": "Orders", "balances": "Balances", "profit": "Profit",
               "why": "Why no trades", "health": "Health"}
TAB_TITLES = {**VIEW_TITLES, "why": "Why"}  # the tabs fit 80 columns
READ_VIEWS = ("balances", "profit", "why", "health")  # asked of the engine while shown, at most once per period
VIEW_REFRESH_S = 1.0
TITLES = {"positions": "Positions", "votes": "Ensemble votes", "chart": "Chart", "approvals": "Approvals",
          "breaker": "Circuit breaker", "gates": "Risk gates", "log": "Log"}


class ConsoleApp(App[int]):
    CSS_PATH = "console.tcss"
    TITLE = "ffe"
    BINDINGS = keydefs.bindings()

    def __init__(self, settings, *, live: bool = False, max_bars: int | None = None, feed=None, clock=None,
                 control: bool = True, handle_signals: bool = False, tick_s: float = TICK_S,
                 chart_s: float = CHART_S, attach: bool = False, ids=None) -> None:
        self.keymap_ids = keydefs.keymap(dict(settings.tui.keys), keydefs.where(settings))  # before anything starts
        super().__init__()
        self.settings = settings
        self.live = live
        self.max_bars = max_bars
        self._market_feed = feed
        self._market_clock = clock
        self._ids = ids  # the engine's id source (ffe_engine.ids); None: random ids, as every real run has
        self.attached = attach  # the engine runs in another process (ffe attach): quitting leaves it running
        self.control = control and not attach
        self.handle_signals = handle_signals
        self.tick_s = tick_s
        self.chart_s = chart_s
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            self.animation_level = "none"
        self.kill_keys = set(keydefs.keys_for("kill", self.keymap_ids))
        self.filter_keys = set(keydefs.keys_for("filter", self.keymap_ids))
        self._filter_opening: FilterScreen | None = None  # the log filter's dialog until its field has the focus
        self.confirm_keys = keydefs.keys_for("confirm", self.keymap_ids)
        self.view = ConsoleState(settings.engine.symbols, max_lines=HISTORY_LINES)
        self.view.set_filter(LOG_FILTER)
        self.running: EngineHost | RemoteHost | None = None
        self._halt_when_started: tuple[str, str] | None = None  # a halt asked for while the engine opened
        self.engine = None
        self.sub = None
        self.snap: dict[str, Any] | None = None
        self.start_error: str | None = None
        self.start_failure: FfeError | None = None
        self.crash: BaseException | None = None
        self._toggling: str | None = None  # "pause" or "resume" while p's request is under way
        self.feed_ended = False
        self.engine_stopped = False  # attached: the engine stopped in order in its own process
        self._subscriptions = 0  # attached: the event streams subscribed again after one was lost, as last seen
        self._changed: set[str] = set()  # panes to redraw at the next refresh besides those its events change
        # Notifications raised while a confirmation dialog is open: shown once it closes, not over what it asks.
        self._held_notes: list[tuple[str, str, float | None]] = []
        self.stopping = False
        self.stop_reason = ""
        self._open_task: asyncio.Task | None = None
        self._opened_at = 0.0  # when the engine began opening (attached: connecting)
        self._connecting_said: bool | None = None  # the NOT ANSWERING banner said, with a kill switch pending or not
        self._run_task: asyncio.Task | None = None
        self._engine_closed: asyncio.Future | None = None
        self._signals: Installed = {}
        self._chart_due = 0.0
        self._chart_dirty = False
        self._detail = "votes"
        self._approvals_seen: set[str | None] = set()  # the trades waiting at the last look (their pane shown)
        self._wide = False
        self._banner = ""
        self._status_note = ""
        self.panes: dict[str, Any] = {}
        self.current_view = "main"
        self.view_keys = keydefs.keys_for("views", self.keymap_ids)
        self._read_due = 0.0
        self._reading = False
        self._outcome: dict[str, Text] = {}  # the last cancel or close, under its table until the next one

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        yield Static(id="toosmall")
        yield Static(id="banner")
        yield Static(id="tabs")
        with ContentSwitcher(initial="view-main", id="views"):
            with Vertical(id="view-main"):
                with Container(id="main"):
                    yield PositionsTable(id="positions")
                    with Horizontal(id="mid"):
                        yield ApprovalsTable(id="approvals", classes="detail")
                        yield BreakerPane(id="breaker", classes="detail")
                    with Horizontal(id="low"):
                        with Vertical(id="lowleft"):
                            yield VotesPane(id="votes", classes="detail")
                            if self.settings.tui.chart:
                                yield ChartPane(id="chart", classes="detail")
                        yield GatesPane(id="gates", classes="detail")
                yield LogPane(id="log", max_lines=LOG_LINES, highlight=False)
            with Vertical(id="view-trades", classes="view"):
                yield TradesTable(id="trades")
                yield Static(id="trades-note", classes="note")
            with Vertical(id="view-orders", classes="view"):
                yield OrdersTable(id="orders")
                yield Static(id="orders-note", classes="note")
            for name in READ_VIEWS:
                with Vertical(id=f"view-{name}", classes="view"):
                    yield ScrollPane(id=name)
        yield KeysFooter(show_command_palette=False)

    def on_mount(self) -> None:
        self.set_keymap(self.keymap_ids)
        # Widgets are looked up once: a query during shutdown, when the screen is already gone, would fail.
        self.panes = {wid: self.query_one(f"#{wid}") for wid in TITLES if wid != "chart" or self.settings.tui.chart}
        self.panes["status"] = self.query_one(StatusLine)
        self.panes["banner"] = self.query_one("#banner", Static)
        self.panes["toosmall"] = self.query_one("#toosmall", Static)
        self.panes["tabs"] = self.query_one("#tabs", Static)
        self.panes["switcher"] = self.query_one("#views", ContentSwitcher)
        for name in ("trades", "orders", *READ_VIEWS):
            self.panes[name] = self.query_one(f"#{name}")
        self.panes["trades-note"] = self.query_one("#trades-note", Static)
        self.panes["orders-note"] = self.query_one("#orders-note", Static)
        self.panes["status"].show(None)
        for wid, title in TITLES.items():
            if wid in self.panes:
                self.panes[wid].border_title = Text(title)
        views_key = keydefs.display_keys(self.view_keys)
        self.panes["positions"].border_title = Text(f"Positions   [{views_key}: views  {self._key('help')}: help]")
        self._show_tabs()
        self.panes["log"].replace([], self.view.filter.spec)
        self._set_detail("votes")
        self._layout(self.size.width, self.size.height)
        self.panes["positions"].focus()
        if self.handle_signals:
            # before the engine opens: a SIGTERM while it starts still stops it in order
            self._signals = install_signals(self._signal_stop, self._signal_halt)
        self._opened_at = time.monotonic()
        self._open_task = asyncio.ensure_future(self._open())
        self.run_worker(self._lifecycle(), name="engine", group="engine", exit_on_error=False)
        self.set_interval(self.tick_s, self._tick, name="drain")

    def on_resize(self, event: events.Resize) -> None:
        self._layout(event.size.width, event.size.height)
        if "tabs" in self.panes:
            self._show_tabs(event.size.width)  # (the app's own size is not the new one yet)
        if self._banner and "banner" in self.panes:
            self._fit_banner(event.size.width)

    def _layout(self, width: int, height: int) -> None:
        self._wide = width >= WIDE[0] and height >= WIDE[1]
        tiny = width < SMALLEST[0] or height < SMALLEST[1]
        # The console's own screen, under any dialog open at the moment of the resize (the dialog is self.screen
        # then): the layout is the console's, and stays right once the dialog closes.
        main = self.screen_stack[0] if self.screen_stack else self.screen
        main.set_class(self._wide, "-wide")
        main.set_class(not self._wide, "-narrow")
        main.set_class(self._wide and width >= WIDER, "-wider")
        main.set_class(tiny, "-tiny")
        # Wide, the votes and chart beside the gates take what the log leaves them, up to the 16 rows that list
        # every gate: at 110x32 the log keeps five lines (the status line, the footer, positions and approvals
        # above). Narrow, the stylesheet's height again.
        with contextlib.suppress(NoMatches):
            main.query_one("#low").styles.height = (
                max(8, min(LOW_ROWS, height - WIDE_FIXED_ROWS - LOG_ROWS)) if self._wide else None)
        if self.panes:
            self.panes["toosmall"].update(Text(
                f"{width}x{height} is too small (the layout needs {SMALLEST[0]}x{SMALLEST[1]}): panes cut"
                if tiny else ""))
        self._retitle_detail()

    @property
    def detail_views(self) -> list[str]:
        return [v for v in DETAIL_VIEWS if v != "chart" or self.settings.tui.chart]

    def _set_detail(self, view: str) -> None:
        self._detail = view
        for v in self.detail_views:
            self.panes[v].set_class(v == view, "-current")
        self._retitle_detail()
        if view == "chart":
            self._chart_dirty = True

    def _retitle_detail(self) -> None:
        if not self.panes:
            return
        key = keydefs.display(keydefs.keys_for("view", self.keymap_ids)[0])
        for v in self.detail_views:
            title = TITLES[v]
            if v == "gates" and self.view.gates:
                title = f"{title}: {self.view.gates['title']}"
            self.panes[v].border_title = Text(title if self._wide else f"{title}  [{key}: next]")

    def pane_visible(self, view: str) -> bool:
        return self.current_view == "main" and (self._wide or self._detail == view)

    # ------------------------------------------------------------------ views
    def _show_tabs(self, width: int | None = None) -> None:
        """The views and their keys, on every view but the main one (whose log keeps that line at 80x24). Closer
        together when they do not fit (long remapped keys), then cut with a mark: never cut silently."""
        tabs = self.panes["tabs"]
        width = max((width or self.size.width) - 2, 1)  # the line's padding
        for pad in (" ", ""):
            parts: list[Any] = []
            for key, name in zip(self.view_keys, VIEWS):
                label = f"{keydefs.display(key)} {TAB_TITLES[name]}"
                parts += [(f" {label} ", "bold reverse") if name == self.current_view else f"{pad}{label}{pad}", " "]
            line = Text.assemble(*parts, no_wrap=True)
            if line.cell_len - 1 <= width:  # (the last space may go)
                break
        line.truncate(width, overflow="ellipsis")
        tabs.update(line)
        tabs.set_class(self.current_view != "main", "-shown")

    def action_show_view(self, name: str) -> None:
        if name not in VIEWS or not self.panes:
            return
        self.current_view = name
        self.panes["switcher"].current = f"view-{name}"
        self._show_tabs()
        focus = {"main": "positions", "trades": "trades", "orders": "orders"}.get(name, name)
        self.panes[focus].focus()
        self._read_due = 0.0  # a read view asks the engine at once
        self._tick()

    def _show_view_data(self, snap: dict[str, Any]) -> None:
        view = self.current_view
        if view == "trades":
            table = self.panes["trades"]
            table.show(snap["positions"])
            self._note_trade(snap)
        elif view == "orders":
            self.panes["orders"].show(snap["orders"])
            self._note_order(snap)
        elif view in READ_VIEWS and not self._reading and time.monotonic() >= self._read_due:
            self._reading = True
            self.run_worker(self._read_view(view), group="reads", exit_on_error=False)

    def _note_trade(self, snap: dict[str, Any]) -> None:
        p = selected_position(self.panes["trades"], snap["positions"])
        if p is None:
            text = Text(self._unchosen(self.panes["trades"], "trade", "has closed", "close_trade"), style="dim")
        else:
            # Dust is no position to close: the line says why instead of offering the close key.
            act = ("  dust: below the venue's minimum order, no order can sell it" if p.get("dust") else
                   f"  {self._key('close_trade')}: close at market")
            text = Text.assemble(("trade ", "dim"), (tables.position_id(p), "bold"), f"  {p['symbol']} opened ",
                                 fmt.iso_ms(p.get("opened_ts")), " (",
                                 fmt.duration(tables.position_age(p)), " ago)", act)
        self.panes["trades-note"].update(self._with_outcome("trades", text))

    def _note_order(self, snap: dict[str, Any]) -> None:
        cid = self.panes["orders"].selected()
        o = next((o for o in snap["orders"] if o["client_order_id"] == cid), None)
        if o is None:
            text = Text(self._unchosen(self.panes["orders"], "order", "is no longer open", "cancel_order"),
                        style="dim")
        else:
            text = Text.assemble(("order ", "dim"), (cid or "", "bold"), "  sent ", fmt.iso_ms(o.get("created_ts")),
                                 f"  {self._key('cancel_order')}: cancel it")
        self.panes["orders-note"].update(self._with_outcome("orders", text))

    def _unchosen(self, table: KeyedTable, what: str, ended: str, verb: str) -> str:
        """What to do when no row of `table` is chosen: an action acts only on a row the operator moved to."""
        if not table.row_count:
            return f"no open {what}"
        how = f"move to one (up/down or j/k in its pane, tab into it, or click it), then {self._key(verb)}"
        if table.ended is not None:
            return f"the {what} you had selected {ended}: {how}"
        return f"no {what} chosen: {how}"

    def _with_outcome(self, view: str, text: Text) -> Text:
        outcome = self._outcome.get(view)
        return text if outcome is None else Text("\n").join([text, outcome])

    def _set_outcome(self, view: str, text: str, ok: bool) -> None:
        """A cancel's or a close's outcome: a notification, and under the view's table until the next one (a
        refusal and its reason stay readable after the notification has gone)."""
        self.say(text, severity="information" if ok else "warning", timeout=None if ok else 15)
        self._outcome[view] = Text(text, style="bold" if ok else "bold red")

    async def _read_view(self, view: str) -> None:
        """One read of the shown view's data from the engine (in process or through its socket)."""
        try:
            engine = self.engine
            if view == "health":
                data = engine.health()
                if asyncio.iscoroutine(data):
                    data = await data
                body = health_view(data, self.snap or {})
            elif view == "balances":
                body = balances_view(await engine.balances())
            elif view == "profit":
                body = profit_view(await engine.profit(), self._wide)
            else:
                body = why_view(await engine.why())
        except ControlError as exc:
            body = Text(f"{VIEW_TITLES[view]}: {exc}", style="bold red")
        except Exception as exc:
            body = Text(f"{VIEW_TITLES[view]}: {type(exc).__name__}: {exc}", style="bold red")
        finally:
            self._reading = False
            self._read_due = time.monotonic() + VIEW_REFRESH_S
        if view == "health" and self._banner:  # the banner whole, however short its rows cut it
            body = Group(Text.assemble(("banner  ", "bold"), (self._banner, "bold red")), Text(""), body)
        if self.current_view == view:
            self.panes[view].set(body)

    # ------------------------------------------------------------------ engine lifecycle
    async def _open(self) -> EngineHost | RemoteHost:
        if self.attached:
            # A kill switch asked while connecting keeps the console asking, past the tries it gives up after.
            return await attach_engine(self.settings, more=lambda: self._halt_when_started is not None)
        return await EngineHost.open(self.settings, live=self.live, max_bars=self.max_bars, headless=False,
                                     feed=self._market_feed, clock=self._market_clock, ids=self._ids)

    async def _lifecycle(self) -> None:
        """Open, run, and handle every way the engine loop can end. The one place engine errors are handled."""
        try:
            # Shielded: if the console closes while the engine is opening, _close still gets the engine to close.
            self.running = await asyncio.shield(self._open_task)
        except FfeError as exc:
            self._start_failed(exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._start_failed(FfeError(f"{type(exc).__name__}: {exc}"))
            return
        self.engine = self.running.engine
        self.sub = self.running.subscribe(maxlen=SUBSCRIPTION_MAX)
        try:
            if self.control:  # `ffe ctl` (health, status, halt) reaches the engine from here on, held or running
                await self.running.start_control()
            if self._asking("kill") and self._halt_when_started is None and not self.attached:
                await self._held_for_the_answer()
            await self._halt_asked_while_opening()
            # What the engine published before this console subscribed: its start (shown as it happened), or,
            # attached, what a running engine did before (in the log as past: no banner, no notice). A failure here
            # ends the engine in order as any other, never leaving it opened and not run.
            self._changed |= self.view.apply(self.running.earlier, news=not self.attached)
        except Exception as exc:
            await self._engine_failed(exc)
            return
        if isinstance(self.engine, RemoteEngine):
            ended = self.engine.snapshot().get("ended")
            self.say(f"attached to {describe(self.engine.identity)}; "
                     + (f"its run has ended ({ended})" if ended else "quitting this console leaves it running"))
        try:
            # No turn of the loop since the halts asked while it opened were made: none can have been asked since.
            self._run_task = asyncio.ensure_future(self.engine.run())
            await asyncio.shield(self._run_task)
        except asyncio.CancelledError:
            raise  # the console is closing: _close ends the engine in order
        except Exception as exc:
            await self._engine_failed(exc)
            return
        if not self.attached and self.engine.crashed is not None:
            # Stopped by a failure it recorded and returned from (records it cannot write: HALTED, as headless
            # exits 1 on it): a crash, not a market feed that ended.
            await self._engine_failed(self.engine.crashed)
            return
        self._tick()
        if self.stopping:
            await self._finish()
        elif self.attached and self.engine.replaced is not None:
            # Another run of an engine answers on the socket: the one this console showed has stopped (how, it did
            # not say: its stream was lost). Not this console's engine: it acts on none from now on.
            self.engine_stopped = True
            self._status_note = "ENGINE STOPPED"
            self._set_banner(f"ENGINE STOPPED: the engine this console was attached to no longer runs: "
                             f"{describe(self.engine.replaced)} answers on its socket now; quit and `ffe attach` to "
                             f"show that one. {self._key('quit')} closes this console.", error=True)
            self._tick()
        elif self.attached:
            self.engine_stopped = True
            self._status_note = "ENGINE STOPPED"
            self._set_banner(f"ENGINE STOPPED: the engine stopped in order in its own process (`ffe run --headless` "
                             f"starts it again once that process has ended: a console that ran it shows it until "
                             f"it is quit). {self._key('quit')} closes this console.", error=True)
            self._tick()
        else:
            self.feed_ended = True
            self._status_note = f"STOPPED: {self._stopped_why()}"
            self._chart_due = 0.0  # the final picture, whatever the chart's redraw pace
            self._tick()

    async def _held_for_the_answer(self) -> None:
        """The kill switch asked while the engine opened, not answered yet: the engine does not run, nor trade,
        before the operator has answered it, or another has halted it (`ffe ctl halt`, which answers it). Held on
        purpose, it is no stalled loop (the monitor's LOOP_STALLED)."""
        self.say("the engine has started and waits for your answer to the kill switch", severity="warning")
        engine = self.engine
        while (self._asking("kill") and self._halt_when_started is None and not self.stopping
               and engine.state.value != "HALTED"):
            engine.liveness.turn()
            await asyncio.sleep(ANSWER_POLL_S)
        if engine.state.value == "HALTED":
            self._close_stale_dialogs()

    async def _halt_asked_while_opening(self) -> None:
        """The halts asked for while the engine opened (K and y, SIGUSR1), made before it runs, before it trades."""
        while self._halt_when_started is not None:
            reason, by = self._halt_when_started
            self._halt_when_started = None
            await self.engine.halt(reason=reason, by=by)
            self._close_stale_dialogs()  # a question still open (a signal halted it first) is answered now

    def _stopped_why(self) -> str:
        """Why the engine's run ended by itself, in the words `ffe ctl status` uses (its --max-bars, the feed)."""
        return (self.engine.ended() if self.engine is not None else None) or "the market feed ended"

    def _with_halt_kept(self, exc: FfeError) -> FfeError:
        """A failed start's error; with the kill switch asked while it opened kept for the next start, as its line
        says."""
        if self._halt_when_started is None:
            return exc
        reason, by = self._halt_when_started
        self._halt_when_started = None
        return kept_for_next_start(exc, self.settings, reason, by)

    def _start_failed(self, exc: FfeError) -> None:
        exc = self._with_halt_kept(exc)
        self.start_failure = exc
        self.start_error = str(exc)
        self.exit(exc.exit_code, return_code=exc.exit_code)

    async def _engine_failed(self, exc: BaseException) -> None:
        """An engine crash: on screen, in the audit log, and the console stays usable so the operator can quit."""
        self.crash = exc
        text = f"{type(exc).__name__}: {exc}"
        if self.engine is not None and self.engine.crashed is None:
            # The loop itself recorded nothing (the failure came from starting or stopping it): record it here.
            self.running.bus.publish(ErrorEvent(message=text, where="console engine worker"))
            try:
                await self.engine.flush()
            except Exception:
                pass
        if self.attached and not isinstance(exc, EngineStopped):
            # The console's own failure to follow the engine: the engine said nothing of a stop, and may run on.
            self._status_note = "CONSOLE ERROR"
            self._set_banner(f"CONSOLE ERROR: {text}. This console no longer follows its engine, which may still be "
                             f"running: `ffe ctl status` says whether it is. {self._key('quit')} quits.", error=True)
        else:
            self._status_note = "ENGINE STOPPED (crash)"
            self._set_banner(f"ENGINE CRASHED: {text}. The engine is stopped; orders and state are as stored. "
                             f"{self._key('quit')} quits.", error=True)
        self._tick()
        if self.stopping:
            await self._finish()

    async def _finish(self) -> None:
        await self._close()
        code = 1 if self.crash is not None or self.lost() else 0
        self.exit(code, return_code=code)

    def lost(self) -> str | None:
        """Attached: why this console has lost its engine's event stream and has not subscribed again (it cannot
        reach the engine); None otherwise. No stop seen: the engine may run on."""
        return self.engine.lost if isinstance(self.engine, RemoteEngine) else None

    def replaced(self) -> Any:
        """Attached: the identity of another run of an engine answering on the socket since this console's engine
        was lost (that one no longer runs); None otherwise."""
        return self.engine.replaced if isinstance(self.engine, RemoteEngine) else None

    async def _close(self) -> None:
        """End the engine in order (idempotent; awaited by quit, signals and the app's unmount)."""
        if self._engine_closed is not None:
            await asyncio.shield(self._engine_closed)
            return
        self._engine_closed = asyncio.get_running_loop().create_future()
        try:
            quiet_signals(self._signals)
            running = self.running
            if running is None and self._open_task is not None:
                if self.attached and not self._open_task.done():
                    # Nothing of an attached engine's to close in order: connecting is given up, not waited for
                    # (an engine that does not answer would hold the console as long as it is asked).
                    self._open_task.cancel()
                    if self._halt_when_started is not None:
                        self._halt_when_started = None
                        pid = starting_engine(self.settings.data_dir)
                        self.start_failure = ControlError(
                            "the kill switch asked while connecting was not made: the engine had not answered; "
                            f"{halt_by_signal(self.settings.data_dir, pid)}")
                try:
                    running = self.running = await self._open_task
                except BaseException as exc:
                    running = None
                    if self._halt_when_started is not None:  # quit while it opened, then the start failed
                        failed = exc if isinstance(exc, FfeError) else FfeError(f"{type(exc).__name__}: {exc}")
                        self.start_failure = self._with_halt_kept(failed)
            if running is None:
                return
            if self._halt_when_started is not None and self._run_task is None:
                # Opened as the console closes: the halt asked for while it opened is made first (HALTED stored).
                reason, by = self._halt_when_started
                with contextlib.suppress(Exception):
                    await running.engine.halt(reason=reason, by=by)
            running.engine.request_stop()
            if self._run_task is not None:
                try:
                    await self._run_task
                except BaseException:
                    pass  # already reported by _engine_failed
            await running.close()
        finally:
            remove_signals(self._signals, exiting=True)  # installed only for a console process, which exits next
            self._engine_closed.set_result(None)

    async def on_unmount(self) -> None:
        # Textual keeps the exception that ended the app (a failing handler in the console itself): record it in
        # the audit trail before the engine stops, as for an engine crash.
        ui_error = getattr(self, "_exception", None)
        if ui_error is not None and self.running is not None and self._engine_closed is None:
            self.running.bus.publish(ErrorEvent(message=f"{type(ui_error).__name__}: {ui_error}", where="console"))
        await self._close()

    def _signal_stop(self, name: str) -> None:
        if self.stopping:  # a second SIGTERM, a hang-up after the operator's own SIGHUP
            already_stopping(name)
            return
        self.request_stop(f"{name} received")

    def _signal_halt(self) -> None:
        if self.engine is not None and self._run_task is not None:
            self._control("halt", self._halt("SIGUSR1", "signal"))
        elif self.engine is not None or self._opening():  # opening, or opened and held for the kill switch's answer
            self._halt_once_started("SIGUSR1", "signal")

    def _opening(self) -> bool:
        """Whether the engine is being opened (not open yet, not failed), the console closing or not: a halt asked
        for now is made once it has opened, even to close it at once."""
        return self.running is None and self.start_failure is None

    def _starting(self) -> bool:
        """Whether the engine is being opened for the console to run (not closing)."""
        return self._opening() and not self.stopping

    def _has_stopped(self) -> bool:
        """Whether the engine has stopped (its run ended, it crashed, or, attached, its process stopped): said, for
        a key that would act on it, rather than asked and then refused. Asked again when a confirmation is answered
        (`_control`): a dialog opened before the engine stopped acts on nothing either, and, attached, on no engine
        started on the same socket since."""
        if not (self.feed_ended or self.engine_stopped or self.crash is not None):
            return False
        if self.crash is not None and not self._engine_crashed():
            self.say("this console no longer follows its engine (an error of its own): nothing was done; quit and "
                     "`ffe attach` again", severity="warning")
        elif isinstance(self.engine, RemoteEngine):  # another engine may run on the socket since: not this console's
            self.say("the engine this console was attached to has stopped: nothing was done; to act on an engine "
                     "started since, quit and `ffe attach` again", severity="warning")
        else:
            self.say("the engine has stopped: nothing runs to act on, nothing was done; it starts again in the state "
                     "it was left in", severity="warning")
        return True

    def _engine_crashed(self) -> bool:
        """Whether the engine stopped after an error: in process, or, attached, as its event stream said (the
        console's own error in following it is none: the engine may run on)."""
        return self.crash is not None and (not self.attached or isinstance(self.crash, EngineStopped))

    def _not_started(self) -> None:
        """A key that needs a running engine, pressed while it starts."""
        if self._starting():
            self.say(f"the engine is not running yet (starting); {self._key('kill')} halts it as soon as it has "
                     "started", severity="warning")

    def terminal_lost(self) -> None:
        """The terminal went away (an SSH connection dropped; ffe_tui/terminal.py): stop in order, as on SIGHUP."""
        if not self.stopping:
            self.request_stop("the terminal went away")

    def get_driver_class(self):
        driver = super().get_driver_class()
        if driver.__module__ == "textual.drivers.linux_driver":  # Linux and macOS: see ffe_tui/terminal.py
            from .terminal import ConsoleDriver

            return ConsoleDriver
        return driver

    def request_stop(self, reason: str) -> None:
        """Stop the engine in order, then leave (quit, SIGTERM, SIGHUP)."""
        self.stopping = True
        self.stop_reason = reason
        self._status_note = f"stopping ({reason})"
        if self.engine is None:
            self.exit(0)
            return
        self.engine.request_stop()
        if self._run_task is not None and self._run_task.done():
            self.run_worker(self._finish(), group="control", exit_on_error=False)

    # ------------------------------------------------------------------ redraw
    def _tick(self) -> None:
        if self._held_notes and not self._asking():
            held, self._held_notes = self._held_notes, []
            for message, severity, timeout in held:
                self.notify(message, severity=severity, timeout=timeout, markup=False)
        if self.engine is None:
            if self.attached and self._starting():
                self._say_connecting()
            return
        if self._banner.startswith("ENGINE NOT ANSWERING"):  # connected at last
            self._set_banner("")
        batch = self.sub.drain() if self.sub is not None else []
        changed, self._changed = self._changed, set()
        if batch:
            changed |= self.view.apply(batch)
        try:
            snap = self.engine.snapshot()
        except Exception as exc:  # a half-stopped engine: keep the last picture
            self._status_note = f"snapshot failed: {exc}"
            snap = self.snap
        if snap is None:
            return
        prev_state = self.snap["state"] if self.snap else None
        self.snap = snap
        for screen in self.screen_stack:
            if isinstance(screen, ConfirmScreen) and not screen.answered:
                screen.refresh_body()
        shown, note = snap, self._status_note
        if self._engine_crashed() or self.engine_stopped or self.feed_ended:
            # Nothing runs it now: the state it stopped in, and the one it starts in again where that is another (a
            # live engine starts PAUSED after every start, engine.live_start_paused).
            state = str(snap["state"])
            after = str(snap.get("starts_again") or self._starts_again(state))
            shown = {**snap, "state": "STOPPED",
                     "state_reason": f"was {state}" if after == state else f"next start {after}"}
        elif self.attached and not self.stopping and self.lost():
            note = f"CONNECTION LOST {self.engine.clock.monotonic() - self.engine.lost_at:.0f}s"
        elif self.attached and not self.stopping:
            silent = self.engine.silent_s()
            if silent >= NOT_ANSWERING_S:  # the picture is as old as that: said, not shown as if live
                # Refused ("too many control connections"): the engine answers, its socket has no place for this
                # console's requests; its state still comes on the event stream.
                # Only a recent refusal: an engine silent since (frozen) is not answering, not busy.
                refused = self.engine.refused_s() if isinstance(self.engine, RemoteEngine) else None
                busy = refused is not None and refused < NOT_ANSWERING_S
                note = f"CONTROL SOCKET BUSY {silent:.0f}s" if busy else f"ENGINE NOT ANSWERING {silent:.0f}s"
        where = f"attached pid {self.engine.identity.get('pid')}" if isinstance(self.engine, RemoteEngine) else ""
        self.panes["status"].show(shown, note=note, where=where)
        self.panes["positions"].show(snap["positions"])
        self.panes["approvals"].show(snap["approvals"],
                                     stopped=self.feed_ended or self.engine_stopped or self.crash is not None)
        self.panes["breaker"].show(snap["breakers"])
        if self.current_view != "main":
            self._show_view_data(snap)
        if "log" in changed:
            self.panes["log"].add([ln.text for ln in self.view.take_lines()[-LOG_LINES:]])
        if "votes" in changed:
            self.panes["votes"].show(self.view)
        if "gates" in changed:
            self._show_gates()
        if "chart" in changed:
            self._chart_dirty = True
        if self._chart_dirty and self.settings.tui.chart and self.pane_visible("chart"):
            now = time.monotonic()
            if now >= self._chart_due:
                self._chart_due = now + self.chart_s
                self._chart_dirty = False
                self.panes["chart"].show(self.view, self._chart_symbol())
        if isinstance(self.engine, RemoteEngine) and not self.engine_stopped:
            changed |= self._follow_connection()
        if "banner" in changed:
            if self.view.kill is not None and (self.view.error is None or self.view.kill.seq > self.view.error.seq):
                self._set_banner(halt_banner(self.view.kill.payload(), [e.payload() for e in self.view.kill_later]),
                                 error=True)
            elif self.view.error is not None and self.crash is None:
                self._set_banner(f"ERROR [{self.view.error.where}] {self.view.error.message}", error=True)
        if prev_state == "HALTED" and snap["state"] == "RUNNING":
            self._set_banner("")
        # A trade that has come to wait brings its pane into view, whether it came now or was waiting when the console
        # opened (a restart: no event says it).
        waiting = {a.get("approval_id") for a in snap["approvals"]}
        if waiting - self._approvals_seen and not self._wide and self._detail != "approvals":
            self._set_detail("approvals")
        self._approvals_seen = waiting
        for done in self.view.approvals_done:
            self.say(f"approval {done.approval_id} {done.outcome} ({done.symbol} {done.side}) by {done.by}"
                        + (f": {done.reason}" if done.reason else ""),
                        severity="warning" if done.outcome == "expired" else "information")
        self.view.approvals_done.clear()

    def _say_connecting(self) -> None:
        """Attached, while the console connects: that it does, and past the first request timeout that the engine
        does not answer and how to halt it all the same (the console's own kill switch too, once it answers)."""
        waited = time.monotonic() - self._opened_at
        within = self.settings.control.request_timeout_s
        where = self.settings.socket_path
        if waited < within:
            self.panes["status"].show(None, opening=("CONNECTING", f"to the engine on {where}…"))
            return
        self.panes["status"].show(None, opening=("NOT ANSWERING", f"{waited:.0f}s: the engine on {where}"))
        pending = self._halt_when_started is not None
        if self._connecting_said != pending:  # said once, and again once a kill switch asked here waits for it
            self._connecting_said = pending
            pid = starting_engine(self.settings.data_dir)
            asked = ("the kill switch asked here is made as soon as it answers" if self._halt_when_started else
                     f"{self._key('kill')} halts it as soon as it answers")
            self._set_banner(f"ENGINE NOT ANSWERING: no answer within {within:g}s (stopped or busy?): "
                             f"{halt_by_signal(self.settings.data_dir, pid)}; {asked}. Still asking; "
                             f"{self._key('quit')} quits.", error=True)

    def _follow_connection(self) -> set[str]:
        """Attached: say a lost event stream while it is lost (the engine is asked again meanwhile), and once it is
        subscribed again, that it was and why; the panes changed."""
        engine = self.engine
        lost = self.lost()
        if lost:
            pid = engine.identity.get("pid")
            halt = f"; `kill -USR1 {pid}` halts it" if pid else ""
            text = (f"CONNECTION LOST: this console {lost}. The engine may still be running, and trading: `ffe ctl "
                    f"status` says whether it is{halt}. Asked again every {ASK_AGAIN_S:g}s; {self._key('quit')} "
                    "closes this console.")
            if self._banner != fmt.printable(text):
                self._set_banner(text, error=True)
            return set()
        if engine.subscriptions == self._subscriptions:
            return set()
        self._subscriptions = engine.subscriptions
        self.say("this console fell behind the engine's events and the engine disconnected it (more than "
                 "control.stream_buffer_kb of them waiting); the engine runs on: subscribed again, the panes show "
                 "its state now and the log the events since", severity="warning", timeout=30)
        if self._banner.startswith("CONNECTION LOST"):
            self._set_banner("")
        return {"banner"}  # the kill switch's or an error's banner, if one stands, shown again

    def _show_gates(self) -> None:
        pane = self.panes["gates"]
        pane.show(self.view)
        if self.view.gates:
            pane.border_title = Text(f"{TITLES['gates']}: {self.view.gates['title']}")
        if not self._wide:
            self._retitle_detail()

    def _chart_symbol(self) -> str:
        table = self.panes["positions"]
        if table.row_count:
            row = min(max(table.cursor_row, 0), table.row_count - 1)
            return str(table.get_cell(table.coordinate_to_cell_key((row, 0)).row_key, "symbol"))
        return self.view.symbols[0]

    def _set_banner(self, text: str, error: bool = False) -> None:
        self._banner = fmt.printable(text)  # an error's message, a kill's by: words from outside
        banner = self.panes["banner"]
        self._fit_banner()
        banner.set_class(bool(text), "-shown")
        banner.set_class(error, "-error")
        if self.current_view == "health":
            self._read_due = 0.0  # the whole text there at once

    def _fit_banner(self, width: int | None = None) -> None:
        """The banner whole in its rows, or cut after a whole word and marked, the whole text in the Health view.
        `width`: the terminal's, during a resize (the app's own size is not the new one yet)."""
        width = (width or self.size.width) - 2  # its padding
        health = keydefs.display(self.view_keys[VIEWS.index("health")])
        more = f"(whole text: {health} Health)"
        self.panes["banner"].update(Text(fit_rows(self._banner, width, BANNER_ROWS, more, self.console)))

    def _key(self, binding_id: str) -> str:
        return keydefs.display(keydefs.keys_for(binding_id, self.keymap_ids)[0])

    # ------------------------------------------------------------------ keys
    async def on_event(self, event: events.Event) -> None:
        # The kill switch is taken before any widget or dialog sees the key, so it works over every dialog. A
        # printable kill key (K) is a letter while a text field (the log filter, the command palette) has focus:
        # there only ctrl+k kills.
        if isinstance(event, events.Key) and not event.is_forwarded and event.key in self.kill_keys:
            if not (event.is_printable and isinstance(self.focused, Input)):
                event.stop()
                self.action_kill()
                return
        if isinstance(event, events.Key) and not event.is_forwarded and (self._typed_into_filter(event)
                                                                         or self._view_key(event)):
            return
        await super().on_event(event)

    def _view_key(self, event: events.Key) -> bool:
        """A view's key switches the view here, as it arrives, as the filter key opens its dialog: handed to the
        widgets, a digit typed in one go with the filter key (tmux send-keys "1/") came back to the console after
        the dialog had opened, and was lost. Not over a dialog, nor while a text field has the focus (a digit typed
        into it is the field's). Whether the key was taken."""
        if event.key not in self.view_keys or self.screen is not self.screen_stack[0] or isinstance(self.focused,
                                                                                                   Input):
            return False
        event.stop()
        self.action_show_view(VIEWS[self.view_keys.index(event.key)])
        return True

    def _typed_into_filter(self, event: events.Key) -> bool:
        """The filter key opens its dialog here, at once, and what is typed in one go with it (tmux send-keys, a
        paste, a fast hand) goes into the dialog's field even before the field has the focus; a key handed to the
        widgets would reach them before the dialog opened, and be lost. Whether the key was taken."""
        opening = self._filter_opening
        if opening is not None:
            if self.screen is not opening or isinstance(self.focused, Input):
                self._filter_opening = None  # answered, or its field takes the keys itself now
            elif event.is_printable and event.character:
                event.stop()
                opening.type_early(event.character)
                return True
            return False
        on_main = self.screen is self.screen_stack[0] and not isinstance(self.focused, Input)
        if event.key in self.filter_keys and on_main:
            event.stop()
            self.action_filter_log()
            return True
        return False

    def _confirm(self, kind: str, title: str, body: str | Callable[[], str], verb: str | Callable[[], str],
                 on_confirm) -> None:
        if self._asking(kind):
            return  # already asking
        self.clear_notifications()  # at 80x24 they would cover the dialog's right half
        self.push_screen(ConfirmScreen(kind, title, body, self.confirm_keys, verb, on_confirm))

    def _asking(self, kind: str | None = None) -> bool:
        """Whether a confirmation (of `kind`, or of any kind) waits for its answer."""
        return any(isinstance(s, ConfirmScreen) and not s.answered and kind in (None, s.kind)
                   for s in self.screen_stack)

    def _counts(self) -> tuple[int, int]:
        """Open orders and positions, dust left out (coins no order can sell: no position to watch or close)."""
        snap = self.snap or {}
        return (len(snap.get("orders") or []),
                sum(1 for p in snap.get("positions") or [] if not p.get("dust")))

    def _dust(self) -> str:
        """The dust held, for a dialog that counts the positions without it."""
        symbols = [p["symbol"] for p in (self.snap or {}).get("positions") or [] if p.get("dust")]
        return (f" Dust in {', '.join(symbols)} (too little to sell) stays as it is." if symbols else "")

    def _approvals_ended(self, flatten: bool = False) -> str:
        """What a halt does to the trades waiting for approval, for its confirmation: they are rejected. Not a trade
        whose approve is under way (its order on the wire): it ends approved, and its order is cancelled once the
        exchange has answered it (what it filled is a position, which a flatten closes)."""
        rows = (self.snap or {}).get("approvals") or []
        n = waiting_approvals(self.snap or {})
        k = len(rows) - n
        said = (f" The {'trade' if n == 1 else f'{n} trades'} waiting for approval {'is' if n == 1 else 'are'} "
                "rejected." if n else "")
        if k:
            filled = "what it filled is closed" if flatten else "what it filled stays a position"
            said += (f" The {'trade' if k == 1 else f'{k} trades'} being approved (the order on the wire) "
                     f"{'ends' if k == 1 else 'end'} approved: {'its order is' if k == 1 else 'each order is'} "
                     f"cancelled once the exchange has answered it, and {filled}.")
        return said

    def action_kill(self) -> None:
        if self.engine is None:
            if not self._opening():
                self.say("the engine is not running", severity="warning")
                return
            if self._halt_when_started is not None:
                self.say(self._halt_coming(), severity="warning")
                return
            def body() -> str:  # written again as the engine opens (refresh_body)
                if self.attached:
                    now = ("This console is connecting to its engine, which runs on its own (it may be trading): halt "
                           "it as soon as it is connected.")
                elif self.engine is not None:
                    now = "The engine has started and waits for your answer before it runs: halt it before it trades."
                else:
                    now = "The engine is starting: halt it as soon as it has started, before it trades."
                return f"{now} HALTED is stored and survives a restart; re-arm with {self._key('pause')}."

            self._confirm("kill", "KILL SWITCH", body, "HALT",
                          lambda: self._halt_once_started("kill switch", "operator"))
            return
        if self._has_stopped():
            return
        def body() -> str:
            orders, positions = self._counts()
            return (f"Halt the engine now: cancel every open order ({orders} open) and refuse every new order."
                    f"{self._approvals_ended()}\n"
                    f"Positions ({positions}) stay open, with no stop-loss or take-profit watch while HALTED."
                    f"{self._dust()} HALTED is stored and survives a restart; re-arm with {self._key('pause')}.")

        self._confirm("kill", "KILL SWITCH", body, "HALT", self._kill_confirmed)

    def _halt_once_started(self, reason: str, by: str) -> None:
        """A halt asked for while the engine opens: made as soon as it has opened, before it runs."""
        if self.engine is not None and self._run_task is not None:  # running meanwhile
            self._control("halt", self._halt(reason, by))
            return
        if self._halt_when_started is None:  # the first asked is the one made (and recorded)
            self._halt_when_started = (reason, by)  # made by _lifecycle (or _close) before the engine runs
        self.say(self._halt_coming(), severity="warning")

    def _halt_coming(self) -> str:
        if self.attached:
            return "the engine is halted as soon as it answers this console (it is asked until it does)"
        return "the engine is halted as soon as it has started, before it trades"

    def _kill_confirmed(self) -> None:
        self._control("kill switch", self._halt("kill switch", "operator"))
        self.call_later(self._close_stale_dialogs)  # once the kill switch dialog itself has closed

    def _close_stale_dialogs(self) -> None:
        """The confirmations still open under the kill switch's were written for the engine before it."""
        while isinstance(self.screen, ConfirmScreen) and not self.screen.answered:
            stale = self.screen
            stale.answered = True
            stale.dismiss(False)
            self.say(f"{stale.title_text}: not asked any more, the engine is HALTED now", severity="warning")

    async def _halt(self, reason: str, by: str) -> None:
        report = await self._answered("KILL SWITCH", by, self.engine.halt(reason=reason, by=by,
                                                                          timeout_s=PRESS_ANSWER_S))
        if report is None:
            return
        self._tick()  # the kill_switch event (what was cancelled, what failed) is on the bus by now: show it
        if report.under_way:  # no event yet: HALTED is stored, and the rest waits for another control
            self._set_banner(kill_headline({**dataclasses.asdict(report), "action": "halt", "by": by}), error=True)

    async def _answered(self, what: str, by: str, asked: Any) -> Any:
        """The engine's answer to a kill switch or flatten; None when it gave none. Until it answers, the banner
        says the press was sent (from PRESS_ANSWER_S on), and once the console stops waiting, that it is not
        confirmed and what to do: the operator must never wonder whether the key did anything. The halt's own
        banner replaces it once the engine carries it out."""
        waiting = self.set_timer(PRESS_ANSWER_S, lambda: self._set_banner(
            f"{what} sent by {by}: not answered yet: the engine carries it out when it answers", error=True))
        try:
            return await asked
        except NoAnswer:
            # What to do first, on a line that a narrow screen cuts: not the socket's path (a long one pushed it off).
            remote = self.engine if isinstance(self.engine, RemoteEngine) else None
            pid = remote.identity.get("pid") if remote is not None else None
            within = f" within {remote.timeout:g}s" if remote is not None else ""
            also = f": `kill -USR1 {pid}` halts it all the same" if pid else ""
            self._set_banner(f"{what} NOT CONFIRMED: no answer{within}{also}; `ffe ctl status` says whether it was",
                             error=True)
            return None
        finally:
            waiting.stop()

    def action_pause(self) -> None:
        if self.engine is None or self.snap is None:
            self._not_started()
            return
        if self._has_stopped():
            return
        state = self.snap["state"]
        if self._toggling is not None and state in ("RUNNING", "PAUSED"):
            # The state shown is the one before it: taken on it, a second press would do the same again.
            self.say(f"a {self._toggling} is under way: press again once it is done", severity="warning")
        elif state == "RUNNING":
            self._toggle("pause", self.engine.pause(reason="operator pause", by="operator"))
        elif state == "PAUSED":
            self._toggle("resume", self.engine.resume(by="operator"))
        elif isinstance(self.engine, RemoteEngine):
            # The state serial of the halt on screen: from the engine's snapshot if it was asked for after the last
            # change of state the event stream told (the console's copy may be a tick older); else the dialog is
            # asked about the state as the engine gives it now, not with the serial of the state before.
            snap = self.engine.snapshot()
            if self.engine.snapshot_current() and snap.get("state") == "HALTED":
                self._ask_rearm(snap.get("state_serial"))
            else:
                self._control("re-arm", self._ask_rearm_afresh())
        else:
            self._ask_rearm(self.snap.get("state_serial"))

    def _toggle(self, what: str, coro: Any) -> None:
        """p's pause or resume, marked under way until it is done (and the state shown is its)."""
        self._toggling = what

        async def toggled() -> Any:
            try:
                return await coro
            finally:
                self._toggling = None

        self._control(what, toggled())

    async def _ask_rearm_afresh(self) -> None:
        snap = await self.engine.fresh_snapshot()
        if self._has_stopped():
            return
        if snap["state"] != "HALTED":
            reason = fmt.printable(str(snap.get("state_reason")))
            self.say(f"re-arm: the engine is {snap['state']} now ({reason}); nothing asked", severity="warning")
            return
        self._ask_rearm(snap.get("state_serial"))

    def _ask_rearm(self, serial: int | None) -> None:
        # The halt on screen now: a re-arm confirmed after the engine was re-armed and halted again meanwhile
        # (by ctl, SIGUSR1, a flatten) is refused by the engine, not applied to a halt the dialog never showed.
        self._confirm("rearm", "Re-arm the HALTED engine",
                      "New orders will be allowed again (state RUNNING), and stop-loss and take-profit are "
                      "watched again: a position whose stop-loss or take-profit was passed while HALTED, and "
                      "is still past it, is closed at market on the next bar.", "RE-ARM",
                      lambda: self._control("re-arm", self.engine.resume(by="operator", confirm=True,
                                                                         state_serial=serial)))

    def action_flatten(self) -> None:
        if self.engine is None:
            self._not_started()
            return
        if self._has_stopped():
            return
        def body() -> str:
            orders, positions = self._counts()
            return (f"Cancel every open order ({orders}), close every position ({positions}) with market orders, "
                    f"then HALT.{self._approvals_ended(flatten=True)}{self._dust()}")

        self._confirm("flatten", "FLATTEN", body, "FLATTEN", lambda: self._control("flatten", self._flatten()))

    async def _flatten(self) -> None:
        result = await self._answered("FLATTEN", "operator", self.engine.flatten(by="operator",
                                                                                 timeout_s=PRESS_ANSWER_S))
        if result is None:
            return
        self._tick()
        if isinstance(result, dict) and result.get("under_way"):  # HALTED stored; the closing orders wait
            self._set_banner(kill_headline({**result, "action": "flatten", "by": "operator"}), error=True)

    def _selected_approval(self, verb: str) -> str | None:
        if self.engine is None or self._has_stopped():
            return None
        table = self.panes["approvals"]
        if not table.row_count:
            self.say("no pending approval", severity="warning")
            return None
        if not self.pane_visible("approvals"):
            if self.current_view != "main":
                self.action_show_view("main")
            self._set_detail("approvals")
        aid = table.selected()
        if aid is None:
            table.focus()  # the moves that choose a trade go to its pane
            self.say(self._unchosen(table, "trade", "is no longer waiting", verb), severity="warning")
        return aid

    def action_approve(self) -> None:
        aid = self._selected_approval("approve")
        if aid is not None:
            self._control("approve", self._approve(aid))

    async def _approve(self, aid: str) -> None:
        res = await self.engine.approve(aid, by="operator")
        if res.get("gates"):
            # The re-check can pass and the order made of it be refused (the exchange's Retry-After).
            outcome = ("sent" if res["accepted"] else "passed, order refused" if res.get("client_order_id")
                       else "refused")
            self.view.set_gates(f"approval {aid} re-check -> {outcome}", res["gates"])
            self._show_gates()
        ok = res.get("accepted") and not res.get("in_doubt") and not res.get("ended")
        self.say(approve_answer(res), severity="information" if ok else "warning")
        self._tick()

    def action_reject(self) -> None:
        aid = self._selected_approval("reject")
        if aid is not None:
            self._control("reject", self.engine.reject(aid, by="operator"))

    def action_cancel_order(self) -> None:
        if self.engine is None or self.snap is None or self._has_stopped():
            return
        if self.current_view != "orders":
            self.action_show_view("orders")
            if self.snap["orders"]:
                self.say(f"move to the order (up/down or j/k, or click it), then {self._key('cancel_order')} to "
                         "cancel it")
            return
        table = self.panes["orders"]
        cid = table.selected()
        o = next((o for o in self.snap["orders"] if o["client_order_id"] == cid), None)
        if o is None or cid is None:
            table.focus()
            self.say(self._unchosen(table, "order", "is no longer open", "cancel_order"), severity="warning")
            return
        self._confirm("cancel", f"Cancel order {cid}", lambda: self._cancel_text(o, cid),
                      lambda: self._cancel_verb(cid), lambda: self._control("cancel", self._cancel_order(cid)))

    def _cancel_verb(self, cid: str) -> str:
        """The cancel dialog's key, as its words say: an order that ended while it was asked is not cancelled."""
        still = any(o["client_order_id"] == cid for o in (self.snap or {}).get("orders") or [])
        return "CANCEL ORDER" if still else "ASK WHAT IT BECAME"

    def _cancel_text(self, asked: dict[str, Any], cid: str) -> str:
        """The cancel dialog's words, from the engine's figures as they are: an order that ends while it is asked
        is said to be no longer open (the engine's answer then says what it became)."""
        o = next((o for o in (self.snap or {}).get("orders") or [] if o["client_order_id"] == cid), None)
        what = (f"{asked['symbol']} {asked['side']} {fmt.qty(asked['quantity'])} ({asked.get('type') or 'market'}, "
                f"{asked['reason']})")
        if o is None:
            return (f"{what}: no longer open, it ended while this was asked.\n{self._key('confirm')} asks the engine "
                    "what it became; nothing is cancelled.")
        filled = f", {fmt.qty(o.get('filled'))} filled so far" if o.get("filled") else ""
        return (f"{what}, {o['status']} for {fmt.duration(o.get('age_s'))}{filled}.\n"
                "The venue is asked to cancel it. What filled before the cancel stays filled (a position, its "
                "stop-loss and take-profit watched where it has them); the strategy may send a new order on a later "
                "signal.")

    async def _cancel_order(self, cid: str) -> None:
        res = await self.engine.operator_cancel(cid, by="operator")
        self._set_outcome("orders", tables.cancelled(res), bool(res.get("cancelled")))
        self._tick()

    def action_close_trade(self) -> None:
        if self.engine is None or self.snap is None or self._has_stopped():
            return
        if self.current_view not in ("trades", "main"):
            self.action_show_view("trades")
            if self.snap["positions"]:
                self.say(f"move to the trade (up/down or j/k, or click it), then {self._key('close_trade')} to "
                         "close it")
            return
        table = self.panes["trades" if self.current_view == "trades" else "positions"]
        p = selected_position(table, self.snap["positions"])
        if p is None:
            table.focus()
            self.say(self._unchosen(table, "position", "has closed", "close_trade"), severity="warning")
            return
        sym = p["symbol"]
        if p.get("dust"):
            # Refused here, as the engine refuses it: no dialog offers to sell what no order can.
            self.say(f"close: {tables.dust_left(sym, p['quantity'], p['quantity'] * p['last'])}", severity="warning")
            return
        quote = self.settings.venue.quote
        halted = ("\nThe engine is HALTED: the order path will refuse this close. Flatten closes every position "
                  "while HALTED; or re-arm first.") if self.snap["state"] == "HALTED" else ""
        # Entries (buys) of the symbol still working: the close cancels them first and sells what they bought too.
        entries = [o for o in self.snap["orders"] if o["symbol"] == sym and o["side"] == "buy"]
        if entries:
            halted += "\n" + "; ".join(
                f"its entry {o['client_order_id']} still works (filled {fmt.qty(o['filled'])} of "
                f"{fmt.qty(o['quantity'])})" for o in entries) + ": cancelled first, and what it bought sold too."
        self._confirm("close", f"Close {sym}",
                      f"Sell {fmt.qty(p['quantity'])} {sym} at market (trade {tables.position_id(p)}, opened "
                      f"{fmt.iso_ms(p.get('opened_ts'))}, entry {fmt.price(p['entry'])}, now "
                      f"{fmt.price(p['last'])}, {fmt.pct(p.get('pnl_pct'), signed=True)}, "
                      f"{fmt.money(p.get('unrealised'), signed=True)} {quote}); the fill price may differ.\n"
                      "A reduce-only order on the order path, gated as every exit: it goes out while paused, not "
                      f"once halted or while the breaker is open.{halted}", "CLOSE",
                      lambda: self._control("close", self._close_trade(sym, p["opened_ts"])))

    async def _close_trade(self, symbol: str, opened_ts: int) -> None:
        # The position shown, not whichever is open in the symbol when `y` comes.
        res = await self.engine.close_position(symbol, by="operator", opened_ts=opened_ts)
        self._set_outcome("trades", tables.closed(res),
                          bool(res.get("accepted")) and not res.get("in_doubt") and not res.get("ended"))
        self._tick()

    def action_approval_mode(self) -> None:
        if self.engine is None or self.snap is None or self._has_stopped():
            return
        if self.snap["approval_mode"] == "auto":  # back to manual tightens: at once
            self._control("approval mode", self.engine.set_approval_mode("manual", by="operator"))
            return
        waiting = waiting_approvals(self.snap)
        body = ("Trades the strategy decides are sent without approval from now on, as for an unattended run."
                + (f"\n{waiting} trade(s) already waiting still wait for approve, reject or their expiry."
                   if waiting else ""))
        self._confirm("approval_mode", "Automatic approval", body, "AUTO",
                      lambda: self._control("approval mode", self.engine.set_approval_mode("auto", by="operator")))

    def _main_view_shown(self) -> None:
        """A key that acts on the main view (its detail pane, its log), pressed in another: the main view is shown,
        for the change to be seen."""
        if self.current_view != "main":
            self.action_show_view("main")

    def action_filter_log(self) -> None:
        self._main_view_shown()

        def done(spec: str | None) -> None:
            self._filter_opening = None
            if spec is None:
                return
            try:
                lines = self.view.set_filter(spec)
            except ValueError as exc:
                self.say(str(exc), severity="error")
                return
            self.panes["log"].replace([ln.text for ln in lines[-LOG_LINES:]], self.view.filter.spec)

        self._filter_opening = FilterScreen(self.view.filter.spec)
        self.push_screen(self._filter_opening, done)

    def action_toggle_decisions(self) -> None:
        self._main_view_shown()
        lines = self.view.toggle("decision")
        self.panes["log"].replace([ln.text for ln in lines[-LOG_LINES:]], self.view.filter.spec)

    def action_focus_next(self) -> None:
        super().action_focus_next()
        self._tabbed_in()

    def action_focus_previous(self) -> None:
        super().action_focus_previous()
        self._tabbed_in()

    def _tabbed_in(self) -> None:
        """Tab into a table is a move to the row under its cursor: that row is chosen (and drawn so). The focus the
        console gives a table itself (at start, with a view or a key) chooses nothing."""
        if isinstance(self.focused, KeyedTable):
            self.focused.choose()

    def action_next_view(self) -> None:
        if self.current_view != "main":
            self.action_show_view("main")  # shown as it was: the next press moves it on
            return
        views = self.detail_views
        self._set_detail(views[(views.index(self._detail) + 1) % len(views)])
        self._tick()

    def action_help(self) -> None:
        rows = [(keydefs.display_keys(keydefs.keys_for(k.id, self.keymap_ids)), k.description, k.id)
                for k in keydefs.KEYS]
        rows += [(keydefs.display_keys(list(fixed)), does, "") for fixed, does in keydefs.FIXED_KEYS]
        notes = (f"An approval: {self._key('view')} shows the pane, tab to it, up/down, then {self._key('approve')} "
                 f"or {self._key('reject')}.")
        self.push_screen(HelpScreen(rows, self._key("palette"), notes))

    async def action_quit(self) -> None:
        if self.engine is None:
            def leave() -> None:
                self.exit(self.start_failure.exit_code if self.start_failure else 0)

            if self.attached and self._halt_when_started is not None:
                # Detaching before the engine answered drops the kill switch asked here: asked first, as any quit.
                self._confirm("quit", "Detach the console", self._halt_dropped_text, "QUIT", leave)
                return
            leave()
            return
        if self.attached and self.engine_stopped:
            self.request_stop("quit")  # nothing runs there now: nothing to confirm
            return
        title = "Detach the console" if self.attached else "Quit the console"
        self._confirm("quit", title, self._quit_text, "QUIT", lambda: self.request_stop("quit"))

    async def action_help_quit(self) -> None:
        # Textual binds ctrl+c to a notice that ctrl+q quits; the operator pressing it means to quit: the same
        # question as q and ctrl+q (a text field takes ctrl+c itself, as copy).
        await self.action_quit()

    def _halt_dropped_text(self) -> str:
        pid = starting_engine(self.settings.data_dir)
        return (f"The kill switch asked here is not made yet: the engine on {self.settings.socket_path} has not "
                f"answered. Detaching now drops it: nothing halts the engine, which may still be running and "
                f"trading; {halt_by_signal(self.settings.data_dir, pid)}.")

    def _quit_text(self) -> str:
        """What quitting leaves, from the engine's figures as they are."""
        orders, positions = self._counts()
        state = self.snap["state"] if self.snap else "?"
        if self.attached and self.lost():
            return (f"This console {self.lost()}. The engine may still be running in its own "
                    f"process, and trading: last seen {state}, with {orders} open order(s) and {positions} "
                    "position(s); `ffe ctl status` says whether it runs, `ffe attach` shows it again.")
        if self.attached and self.crash is not None and not isinstance(self.crash, EngineStopped):
            return (f"This console stopped following its engine after an error of its own ({type(self.crash).__name__}:"
                    f" {self.crash}). The engine may still be running, last seen {state}, with {orders} open order(s) "
                    f"and {positions} position(s); `ffe ctl status` says whether it runs.")
        if self.attached and self.crash is not None:
            # Said from what the stream last told: another run may answer on the socket since.
            return ("The engine this console was attached to has stopped after an error in its own process. Its "
                    f"last state was {state}, with {orders} open order(s) and {positions} position(s); "
                    "`ffe ctl status` says whether another run answers now, `ffe run --headless` starts one.")
        if self.attached:
            return (f"The engine keeps running {state} in its own process, with its {orders} open order(s) "
                    f"and {positions} position(s); `ffe attach` shows it again.")
        # An engine already stopped stops nothing more; HALTED after a record it could not write, stored or not
        # (the emptied disk reserve says it at the next start).
        how = ("The engine has already stopped after an error." if self.crash is not None else
               f"The engine has already stopped ({self._stopped_why()})." if self.feed_ended else
               "The engine stops in order.")
        waiting = waiting_approvals(self.snap or {})
        if not waiting:
            approvals = ""
        elif self._starts_again(state) == EngineState.HALTED.value:  # docs/states.md: such a start rejects them
            approvals = (f" The {waiting} trade(s) waiting for approval are rejected by the next start, which comes "
                         "up HALTED.")
        else:
            approvals = (f" The {waiting} trade(s) waiting for approval still wait at the next start (unless their "
                         "time has run out by then).")
        # HALTED watches no stop-loss or take-profit, and the next start of a HALTED engine is HALTED too.
        until = ("the engine is re-armed after the next start" if state == EngineState.HALTED.value else
                 "the next start")
        return (f"{how} {orders} open order(s) stay open at the venue and {positions} "
                f"position(s) stay open, with no stop-loss/take-profit watch until {until}.{self._dust()}"
                f"{approvals}\n{self._next_start(state)}")

    def _starts_again(self, state: str) -> str:
        """The state a start after this one's stop comes up in, by this console's configuration (an engine that
        does not say it in its snapshot)."""
        if state not in {s.value for s in EngineState}:
            return state
        return overrides.next_start(self.settings, EngineState(state), live=self.live).value

    def _next_start(self, state: str) -> str:
        """The state the next start comes up in: the one left, or the stricter one the configuration starts in (a
        live engine with engine.live_start_paused starts PAUSED after every start, docs/states.md)."""
        if state not in {s.value for s in EngineState}:
            return f"The engine will start again {state}."
        after = overrides.next_start(self.settings, EngineState(state), live=self.live)
        if after.value == state:
            return f"The engine will start again {state}."
        return (f"The engine will start again {after.value}, not {state}: a live engine starts PAUSED after every "
                "start (engine.live_start_paused), waiting for a resume.")

    def _control(self, what: str, coro) -> None:
        """Run a control call as a worker (the UI never waits on the engine); failures are shown and audited. An
        engine stopped meanwhile (a confirmation answered after it stopped) is sent nothing."""
        if self._has_stopped():
            coro.close()
            return

        async def run() -> None:
            try:
                result = await coro
            except ControlError as exc:
                self.say(f"{what}: {exc}", severity="warning")
                return
            except Exception as exc:
                self.report_error(f"{what} failed", exc)
                return
            if isinstance(result, str) or hasattr(result, "value"):
                self.say(f"{what}: {getattr(result, 'value', result)}")
            self._tick()

        self.run_worker(run(), group="control", exit_on_error=False)

    def say(self, message: str, *, severity: str = "information", timeout: float | None = None) -> None:
        """A notification, as plain text: engine messages carry ids and brackets that are not markup. Held while
        a confirmation dialog is open."""
        if self._asking():
            self._held_notes.append((message, severity, timeout))
            return
        self.notify(message, severity=severity, timeout=timeout, markup=False)

    def report_error(self, where: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.say(f"{where}: {text}", severity="error", timeout=15)
        if self.running is not None:
            self.running.bus.publish(ErrorEvent(message=text, where=f"console: {where}"))

    # ------------------------------------------------------------------ command palette
    def get_system_commands(self, screen: Screen):
        for k in keydefs.KEYS:
            if k.scope != "app" or k.id == "palette":
                continue
            yield SystemCommand(k.description, f"{k.id} ({self._key(k.id)})",
                                lambda action=k.action: self.run_action(action))
        for key, name in zip(self.view_keys, VIEWS):
            yield SystemCommand(f"View: {VIEW_TITLES[name]}", f"views ({keydefs.display(key)})",
                                lambda name=name: self.action_show_view(name))
        yield from (c for c in super().get_system_commands(screen) if c.title in ("Theme", "Keys"))


def run_console(settings: Settings, *, live: bool, max_bars: int | None, attach: bool = False) -> int:
    """`ffe` / `ffe run`: the console with the engine in-process; `ffe attach`: the console of a running headless
    engine. Returns 0 after an orderly stop; every other ending is raised as an FfeError carrying its exit code."""
    app = ConsoleApp(settings, live=live, max_bars=max_bars, handle_signals=True, attach=attach)
    app.run(mouse=False)
    ending = console_ending(app)
    if ending is not None:
        raise ending
    return 0


def console_ending(app: ConsoleApp) -> FfeError | None:
    """How a console that has ended ended: None after an orderly stop (exit 0), else the error saying it, carrying
    its exit code."""
    attach = app.attached
    if app.start_failure is not None:
        return app.start_failure
    if app.crash is not None and attach and not isinstance(app.crash, EngineStopped):
        return FfeError(f"the console stopped following its engine after an error: {type(app.crash).__name__}: "
                        f"{app.crash}; the engine may still be running: `ffe ctl status` says whether it is")
    if app.crash is not None:
        return FfeError(f"engine stopped after an error: {type(app.crash).__name__}: {app.crash}")
    replaced = app.replaced()
    if app.return_code and replaced is not None:
        # Its stream was lost, and another run answers on the socket since: the console's engine no longer runs.
        return FfeError(f"the engine this console was attached to no longer runs: {describe(replaced)} answers on "
                        "its socket now; `ffe attach` shows that one")
    if app.return_code and attach and app.lost():
        return FfeError(f"this console {app.lost()}; the engine may still be running: `ffe ctl status` says whether "
                        "it is")
    if app.return_code:
        if attach:  # the engine is the headless process's: it runs on
            return FfeError("the console stopped after an error; the engine it was attached to runs on (`ffe ctl "
                            "status`)")
        return FfeError("the console stopped after an error; the engine was stopped in order")
    return None
