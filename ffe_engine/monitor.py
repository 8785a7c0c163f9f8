"""The monitor of a running engine: GET /health and GET /metrics over HTTP, the heartbeat, the alerts.

The HTTP endpoint listens on `[monitor] host:port` (127.0.0.1 by default). Anywhere but a loopback address it
needs a bearer token (FFE_MONITOR__TOKEN), and with a token set every request must carry
`Authorization: Bearer <token>`. Binding elsewhere without one is refused at start.

The heartbeat ("dead man's switch") GETs `alerts.heartbeat_url` every `alerts.heartbeat_s` only while the main
loop is alive, so a receiver that expects it notices an engine that is dead or hung and can no longer say so.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import ipaddress
import os
import shutil
import socket
from typing import Any, Callable

import orjson

from . import fmt, logs
from .alerts import ALERTING, Alert, Notifier
from .channels import CHANNEL_VARIABLES, DeliveryFailed, channels_from, new_session, origin_of, ping
from .config import Settings
from .errors import DamagedRecords, PortInUse, StartError, StorageError
from .health import HEALTHY, assess, data_stale_after
from .httpd import HttpServer, Response
from .metrics import COUNTED, EngineMetrics
from .outage import differences, outage, outage_only
from .reconcile import blocked_text
from .redact import Redactor
from .sentalerts import sent_path
from .liveness import TURN_S
from .tasks import cancel_and_wait

log = logs.get_logger("ffe.monitor")

LOOK_S = 0.05  # how often the heartbeat looks for the loop's turn after the process was frozen


# RECORDS_UNWRITABLE's cause whatever file takes no write: a disk that fills again at every restart stops a run on
# the database, then a start on the audit trail.
UNWRITABLE = "the records cannot be written"
# kv: the directories ("data", "log", "data and log") whose file system DISK_LOW said low, not seen recover since
DISK_LOW_KEY = "disk_low"
CHANNELS_KEY = "alert_channels"  # the alert channels configured at the last start

# Events that move a counter or may raise an alert; the others (fills, positions, weights) pass by: the bus hands
# the monitor only these (EventBus.add_sink's names).
WATCHED = COUNTED | ALERTING


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":  # a name in any case, and its fully qualified form
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse an endpoint reachable from the network without a token (before anything starts; `ffe config check`
    too), saying where monitor.host was set: its line, or its variable in .env or the environment."""
    cfg = settings.monitor
    if cfg.enabled and not is_loopback(cfg.host) and cfg.token is None:
        # An address is known here; a name is resolved by the start, on the machine it runs on.
        reach = "is reachable" if _is_address(cfg.host) else "is no loopback address and may be reachable"
        raise StartError(settings.blame(("monitor", "host"), f"monitor.host = {cfg.host!r} {reach} from the "
                                        "network: set FFE_MONITOR__TOKEN (a bearer token) in .env or the environment, "
                                        "or bind to 127.0.0.1"))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def start_refused(settings: Settings, clock: Any, failure: Exception,
                        redact: Callable[[str], str] | None = None) -> None:
    """Page that a start stopped on its records (a disk that takes no write, a damaged database) or before them (a
    live start's exchange check, the monitor's port held by another process), however far it got (the monitor may
    not exist yet): nothing of the start could be recorded, the alerts' outbox neither, so the page leaves now, one
    try per channel, as for a disk that fills while running."""
    origin = origin_of(settings.data_dir, settings.alerts.instance)
    channels = channels_from(settings.alerts, origin)
    if not channels:
        return
    notifier = Notifier(settings.alerts, None, channels, now=clock.monotonic, wall=clock.wall, redact=redact,
                        sent_file=sent_path(settings.data_dir), engine=origin.engine)
    unwritable = isinstance(failure, StorageError) and not isinstance(failure, DamagedRecords)
    kind = "RECORDS_UNWRITABLE" if unwritable else "START_FAILED"
    text = f"ffe start FAILED: {fmt.sentence(str(failure))} Nothing trades until a start succeeds."
    await notifier.send_now(Alert(kind, kind, "page", text, cause=UNWRITABLE if unwritable else ""))


UNWRITABLE_AFTER_S = 2.0  # how long a RECORDS_UNWRITABLE page waits for the outbox's alerts to leave before it


# A request without the token, or with another: the scheme it needs said, as RFC 7235 asks of a 401.
UNAUTHORISED = Response(401, b"bearer token required\n", headers=(("WWW-Authenticate", 'Bearer realm="ffe"'),))


class Monitor:
    def __init__(self, settings: Settings, engine: Any, *, audit: Any, store: Any,
                 redactor: Redactor | None = None) -> None:
        self.settings = settings
        self.cfg = settings.monitor
        self.engine = engine
        self.audit = audit
        clock = engine.clock
        now, wall = clock.monotonic, clock.wall  # ages and windows in real seconds, even in a paced replay
        origin = origin_of(settings.data_dir, settings.alerts.instance)
        channels = channels_from(settings.alerts, origin)
        # The verdict quotes venue errors (to /health, which may face a network, `ffe ctl health` and the console).
        self._redactor = redactor if redactor else None
        redact = self._redactor.text if self._redactor is not None else None
        self.notifier = Notifier(settings.alerts, store, channels, now=now, wall=wall, redact=redact,
                                 sent_file=sent_path(settings.data_dir), engine=origin.engine)
        self.notifier.checks.append(self._condition_alerts)
        self.metrics = EngineMetrics(engine, mode=engine.mode, audit=audit, alert_status=self.notifier.status_dict,
                                     health=self.health)
        engine.breaker.observe = self.metrics.observe_venue(engine.breaker.venue)
        self.url: str | None = None
        self.heartbeat: dict[str, Any] = {"configured": settings.alerts.heartbeat_url is not None, "sent": 0,
                                          "failures": 0, "last_success": None, "skipped": 0}
        self._server: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stale: set[str] = set()
        self._stalled = False
        # The directories whose file system was said to run low (DISK_LOW), kept across restarts (DISK_LOW_KEY).
        self._low: set[str] = set()
        self._low_said: dict[str, str] = {}  # what the health verdict says of them, from the last look
        self._store = store
        self._low_writes: set[asyncio.Task[None]] = set()
        self._loop_suspect: int | None = None  # the loop's turn count when it was last seen stale
        self._audit_stalled = False
        self._audit_suspect = False  # the audit trail was seen stale at the last look
        self._unwritable: asyncio.Task[None] | None = None  # the RECORDS_UNWRITABLE page, sent once

    # ------------------------------------------------------------------ the verdict
    def health(self) -> dict[str, Any]:
        e = self.engine
        blocked = e.reconcile_blocked
        nothing_compared = outage(blocked).badge.lower() if outage_only(blocked) else ""
        verdict = assess(state=e.state.value, stopped=e.stopped, started=e.started, liveness=e.liveness,
                         symbols=e.symbols, breakers=[e.breaker.summary()], reconcile_blocked=len(differences(blocked)),
                         reconcile_text=blocked_text(blocked), reconcile_outage=nothing_compared,
                         pending_approvals=len(e.pending), audit=self.audit, cfg=self.cfg,
                         timeframe_ms=e.timeframe_ms, disk_low=list(self._low_said.values()))
        # The secrets out of its string values, never out of its JSON: a secret's text may be a piece of it.
        return self._redactor.value(verdict) if self._redactor is not None else verdict

    def loop_alive(self) -> bool:
        """Whether the main loop runs and turns: not before the start has completed (a start that fails, again and
        again under a service manager, must not feed the dead man's switch), nor after the engine stopped."""
        e = self.engine
        return e.started and not e.stopped and e.liveness.loop_age() <= self.cfg.loop_stale_s

    def records_unwritable(self, failure: StorageError) -> None:
        """The engine stopped because no record can be written: the page leaves now, past the alerts' outbox (which
        is in the database), whether the process ends now (headless) or later (a console left open)."""
        if self._unwritable is None:
            # Nothing is cancelled (a cancel's answer could not be recorded): what is open at the venue may fill.
            live = sorted(self.engine.orders.live.values(), key=lambda o: o.created_ts)
            if live:
                named = ", ".join(f"{o.client_order_id} ({o.side.value} {o.symbol})" for o in live[:5])
                more = f" and {len(live) - 5} more" if len(live) > 5 else ""
                left = (f"Orders still open at the exchange, not cancelled (nothing can be recorded): {named}{more}: "
                        "they may fill; cancel them there, or start the engine once the disk takes records.")
            else:
                left = "No order is open."
            self._unwritable = asyncio.ensure_future(self._page_last(Alert(
                "RECORDS_UNWRITABLE", "RECORDS_UNWRITABLE", "page",
                f"ffe HALTED and stopped: {failure}. Nothing new is sent until it is started again. {left}",
                cause=UNWRITABLE)))

    async def _page_last(self, alert: Alert) -> None:
        """`alert` past the outbox, after what the outbox holds has left (a STARTED raised a moment before, say):
        the operator's last word is the failure. Waited for a moment at most."""
        await self.notifier.drained(UNWRITABLE_AFTER_S)
        await self.notifier.send_now(alert)

    def start_succeeded(self) -> None:
        """The engine's start got through: the alerts of the failures before it end (Notifier.start_succeeded)."""
        self.notifier.start_succeeded(self.engine.state.value)

    def status(self) -> dict[str, Any]:
        """For the console's status line and `ffe ctl status` (a channel's last error may quote its URL)."""
        status = {"url": self.url, "channels": self.notifier.status_dict(), "heartbeat": dict(self.heartbeat)}
        return self._redactor.value(status) if self._redactor is not None else status

    def sink(self, ev: Any, line: bytes) -> None:
        # Most events (a decision per bar and symbol, fills, positions) move no counter and raise no alert: one set
        # lookup. Gate denials are the gatekeeper's counts, read at scrape time.
        if ev.name in WATCHED:
            self.metrics.sink(ev, line)
            self.notifier.sink(ev, line)

    def _condition_alerts(self) -> list[Alert]:
        """Conditions no event announces: a stalled loop or audit trail, a symbol without bars (raised once per
        episode)."""
        out: list[Alert] = []
        e = self.engine
        if not e.started or e.stopped:
            return out
        # A stall is paged when a second look finds it still there: a process that was suspended (SIGSTOP, a paused
        # VM) wakes with every age grown at once, and this may look before the main loop has had its first turn.
        age = e.liveness.loop_age()
        if age > self.cfg.loop_stale_s and not self._stalled:
            if self._loop_suspect == e.liveness.turns:  # stale at the last look too, and no turn since
                self._stalled = True
                out.append(Alert("LOOP_STALLED", "LOOP_STALLED", "page",
                                 f"ffe main loop STALLED: no turn for {age:.0f}s. The process is up but not trading; "
                                 "check the log, then restart it."))
            else:
                self._loop_suspect = e.liveness.turns
        elif age <= self.cfg.loop_stale_s:
            if self._stalled:  # turning again: a stall after this is news
                self.notifier.cleared("LOOP_STALLED")
            self._stalled = False
            self._loop_suspect = None
        lag = self.audit.lag() if self.audit is not None else 0.0
        if lag > self.cfg.audit_stale_s and not self._audit_stalled:
            if self._audit_suspect:
                self._audit_stalled = True
                out.append(Alert("AUDIT_STALLED", "AUDIT_STALLED", "page",
                                 f"ffe audit trail STALLED: a record has waited {lag:.0f}s to be written. Trading "
                                 "waits for it; check the log disk (space, I/O errors), then restart."))
            self._audit_suspect = True
        elif lag <= self.cfg.audit_stale_s:
            if self._audit_stalled:
                self.notifier.cleared("AUDIT_STALLED")
            self._audit_stalled = False
            self._audit_suspect = False
        limit = data_stale_after(self.cfg, e.timeframe_ms)
        for sym in e.symbols:
            bar_age = e.liveness.bar_age(sym)
            if bar_age > limit and sym not in self._stale:
                self._stale.add(sym)
                bars = fmt.counted(self.settings.risk.stale_after_bars, "bar")
                out.append(Alert("STALE_DATA", f"STALE_DATA:{sym}", "warn",
                                 f"ffe {sym}: no market data for {bar_age:.0f}s (limit {limit:g}s). Entries on it "
                                 f"are refused once its last bar is {bars} old (DATA_STALE)."))
            elif bar_age <= limit and sym in self._stale:
                self._stale.discard(sym)
                self.notifier.cleared(f"STALE_DATA:{sym}")
        out += self._disk_alerts()
        return out

    def _disk_alerts(self) -> list[Alert]:
        """A file system the records go to running low (below monitor.disk_free_min_mb), said once until it has
        10% more again: nothing else tells of a disk filling before the records stop on it."""
        floor = self.cfg.disk_free_min_mb * 1e6
        out: list[Alert] = []
        low_now: dict[str, str] = {}
        for which, where, free in disk_free(self.settings):
            key = f"DISK_LOW:{which}"
            said = (f"{which} directory {where}: {free / 1e6:,.0f} MB free (monitor.disk_free_min_mb = "
                    f"{self.cfg.disk_free_min_mb:g})")
            if floor and free < floor and which not in self._low:
                self._low.add(which)
                self._keep_low()
                # Said in the log too: with no alert channel (the shipped default) nothing else would say it.
                log.warning("disk running low: when it is full the engine stops HALTED; make room now",
                            directory=f"{which} directory {where}", free=f"{free / 1e6:,.0f} MB free",
                            disk_free_min_mb=self.cfg.disk_free_min_mb)
                out.append(Alert("DISK_LOW", key, "warn",
                                 f"ffe {said}. When it is full the engine stops HALTED (RECORDS_UNWRITABLE): make "
                                 "room now."))
            elif which in self._low and (not floor or free >= floor * 1.1):
                self._low.discard(which)
                self._keep_low()
                self.notifier.cleared(key)
            if which in self._low:
                low_now[which] = f"disk low: {said}"
        self._low_said = low_now
        return out

    def _keep_low(self) -> None:
        """What was said low, kept for the next start: an engine restarted while the disk stays low (a deploy,
        systemd after a crash) says it once, not at every start. Written in the background (a check is no
        coroutine); the writer keeps their order."""
        task = asyncio.ensure_future(self._store_low(sorted(self._low)))
        self._low_writes.add(task)
        task.add_done_callback(self._low_writes.discard)

    async def _store_low(self, low: list[str]) -> None:
        try:
            await self._store.put_kv(DISK_LOW_KEY, low or None, self.engine.clock.wall())
        except StorageError as exc:  # a disk too full for it: the next start says DISK_LOW once more
            log.warning("what DISK_LOW said could not be kept for the next start", error=str(exc))

    async def _said_low(self) -> None:
        """What a run before said low and has not seen recover since."""
        kept = await self._store.get_kv(DISK_LOW_KEY)
        self._low = {str(which) for which in kept} if isinstance(kept, list) else set()

    async def _channels_lost(self) -> None:
        """The alert channels configured at the last start (or, for an account from before they were kept, those its
        outbox has alerts for) that are not now: their URL or token is set in `.env` or the environment only, so a
        `.env` lost or edited takes a channel away without a word. Said once: a warning, the channel FAILING in the
        status for this run and a page on the channels left (Notifier.lost). The channels as they are now are kept
        for the next start."""
        kept = await self._store.get_kv(CHANNELS_KEY)
        before = [str(n) for n in kept] if isinstance(kept, list) else await self._store.alert_channels()
        now = [c.name for c in self.notifier.channels]
        lost = [n for n in before if n not in now]
        why = {n: (f"{n} was configured at the last start and is not now ({CHANNEL_VARIABLES.get(n, n)} unset: "
                   "the .env file lost or edited?)") for n in lost}
        for name in lost:
            log.warning("alert channel no longer configured: its alerts go nowhere", channel=name, why=why[name])
        self.notifier.lost(lost, why)
        if kept != now:
            try:
                await self._store.put_kv(CHANNELS_KEY, now, self.engine.clock.wall())
            except StorageError as exc:  # the next start says it again
                log.warning("the alert channels could not be kept for the next start", error=str(exc))

    # ------------------------------------------------------------------ running
    async def start(self) -> None:
        await self._said_low()  # before the checks begin
        await self.notifier.start()
        if self.cfg.enabled:
            await self._serve()
        await self._channels_lost()  # once nothing of the start's own can fail: a start refused says it again
        if self.settings.alerts.heartbeat_url is not None:
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="ffe-heartbeat"))

    async def _serve(self) -> None:
        server = HttpServer({"/health": self._health_handler, "/metrics": self._metrics_handler})
        try:
            port = await server.start(self.cfg.host, self.cfg.port)
        except OSError as exc:
            text = self._cannot_listen(exc)
            # A port held by another process may be free at the next start, nothing edited: a runtime failure,
            # paged, that systemd starts again. Any other refusal (an address no interface has) stays a
            # configuration error.
            raise (PortInUse(text) if exc.errno == errno.EADDRINUSE else StartError(text)) from None
        self._server = server
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        self.url = f"http://{host}:{port}"
        log.info("monitor listening", url=self.url)

    def _cannot_listen(self, exc: OSError) -> str:
        """Why the monitor cannot listen, blamed on the key at fault where it was set."""
        host, port = self.cfg.host, self.cfg.port
        # A name not found is a gaierror, whose errno is no errno os.strerror knows.
        if isinstance(exc, socket.gaierror) or not exc.errno:
            reason = str(exc.strerror or exc).lower()
        else:
            reason = os.strerror(exc.errno).lower()
        said = f"cannot listen on {host}:{port}: {reason}"
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            return self.settings.blame(("monitor", "host"), (
                f"monitor.host = {host!r}: {said} (an address of one of this machine's interfaces is needed: "
                "127.0.0.1 for this machine alone, 0.0.0.0 for every interface)"))
        if exc.errno == errno.EADDRINUSE:
            hint = (" (another account's engine on this machine? give each its own port, or monitor.port = 0 for any "
                    "free one)")
        elif exc.errno == errno.EACCES:
            hint = (" (a port below 1024 needs a privilege the engine is not given: choose one above 1023, or "
                    "monitor.port = 0 for any free one)")
        else:
            hint = ""
        return self.settings.blame(("monitor", "port"), f"monitor.port = {port}: {said}{hint}")

    def _authorised(self, headers: dict[str, str]) -> bool:
        token = self.cfg.token
        if token is None:
            return True
        scheme, _, given = headers.get("authorization", "").strip().partition(" ")
        # The scheme's name in any case (RFC 7235), the token as it is.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                   token.get_secret_value().encode())

    async def _health_handler(self, headers: dict[str, str]) -> Response:
        if not self._authorised(headers):
            return UNAUTHORISED
        verdict = self.health()
        body = orjson.dumps(verdict)
        return Response(200 if verdict["status"] == HEALTHY else 503, body, "application/json")

    async def _metrics_handler(self, headers: dict[str, str]) -> Response:
        if not self._authorised(headers):
            return UNAUTHORISED
        return Response(200, self.metrics.text(), self.metrics.content_type())

    async def _heartbeat(self) -> None:
        cfg = self.settings.alerts
        assert cfg.heartbeat_url is not None
        url = cfg.heartbeat_url.get_secret_value()
        hb = self.heartbeat
        clock = self.engine.clock
        late = False  # the last wait ended later than it was to: the process was frozen (SIGSTOP, a paused VM)
        async with new_session() as session:
            while True:
                if late and not self.loop_alive():
                    # Every age jumped as it woke, and the loop has not had its turn yet: given it (within a turn's
                    # wait) before a beat is held back for it.
                    await self._loop_turns()
                if self.loop_alive():
                    try:
                        await ping(session, url, cfg.timeout_s)
                        hb["sent"] += 1
                        hb["last_success"] = self.engine.clock.wall()
                    except DeliveryFailed as exc:
                        hb["failures"] += 1
                        log.warning("heartbeat failed", error=str(exc))
                else:
                    hb["skipped"] += 1  # silence is the message: the receiver raises the alarm
                asked = clock.monotonic()
                await asyncio.sleep(cfg.heartbeat_s)
                late = clock.monotonic() - asked > cfg.heartbeat_s + 1.0

    async def _loop_turns(self) -> None:
        """Until the main loop is seen alive, a turn's wait and a second at most (counted in the looks' own waits:
        a test's clock that stands still does not hold it)."""
        for _ in range(int((TURN_S + 1.0) / LOOK_S)):
            if self.loop_alive():
                return
            await asyncio.sleep(LOOK_S)

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._server is not None:
            await self._server.close()
            self._server = None
        failure = self.engine.crashed
        if isinstance(failure, StorageError):  # sent when it happened, unless nothing told the monitor then
            self.records_unwritable(failure)
        if self._unwritable is not None:
            await self._unwritable  # the page has its one try before the process ends
        await self.notifier.close()  # its checks end with it
        if self._low_writes:  # written before the records close
            await asyncio.gather(*self._low_writes, return_exceptions=True)


def disk_free(settings: Settings) -> list[tuple[str, str, float]]:
    """(which, directory, free bytes) for the file systems of the data and log directories: one, "data and log",
    when they share one. A directory that cannot be looked at is left out (its own failure says so elsewhere)."""
    seen: dict[int, int] = {}
    out: list[tuple[str, str, float]] = []
    for which, where in (("data", settings.data_dir), ("log", settings.log_dir)):
        try:
            device = os.stat(where).st_dev
            free = float(shutil.disk_usage(where).free)
        except OSError:
            continue
        if device in seen:
            name, shown, left = out[seen[device]]
            out[seen[device]] = (f"{name} and {which}", f"{shown} (and {where})", left)
            continue
        seen[device] = len(out)
        out.append((which, str(where), free))
    return out

