"""The process around an engine: directory locks, store, audit file, control socket, signals, ordered stop.

Headless and console runs both hold their engine through an `EngineHost`, so the two start and stop the same
way. Stop order (safety-relevant): stop requested, engine loop ended, control socket closed, state and books
stored, audit flushed, store closed, log- and data-directory locks released.

Everything the engine's process creates is private to its user: the process runs under umask 077 from the
moment the host opens (directories 0700; database, lock, audit and socket 0600), whatever umask it was started
with. Files and directories that already exist keep their modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import IO, Any, Callable, Protocol

from . import halt_asked as halt_asked_file
from . import logs, overrides
from .ahead import aside_paths
from .audit import AuditWriter, has_records, repair_trail, setup_logging, trail_damage
from .backtest_runs import refuse_engine_on_run_folder
from .chain import trail_paths
from .clock import Clock, SimClock, WallClock
from .config import Settings
from .control import DATA_LOCK, EARLIER_EVENTS, ControlServer, Limits, claim, pid_alive, socket_lock_path
from .engine import Engine, EngineOptions
from .errors import (START_AGAIN, DamagedDatabase, DamagedRecords, FfeError, PortInUse, StartError, StorageError,
                     closed_to_reader, directory_in_place, is_unreachable, not_a_file, storage_failure, unreachable)
from .events import BackupEvent, BarEvent, ErrorEvent, Event, EventBus, LogEvent, Subscription
from .ids import IdSource
from .kernel import build_engine, check_credentials, make_feed, make_venue
from .market.base import Feed, ResumableFeed
from .model import EngineState
from .redact import Redactor
from .reserve import reserve_path
from .monitor import WATCHED, Monitor, check_bind, start_refused
from .sdnotify import SystemdNotifier
from .store import REQUEST_HOLD_KEY, TRAIL_DAMAGED_HALT, Store, restore_left_half_way, saved_state
from .venues.base import Venue, VenueError, VenueUnavailable

log = logs.get_logger("ffe.host")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LOG_LOCK = "audit.jsonl.lock"
PRIVATE = 0o077  # the umask while a host is open: the engine's records are its user's alone
START_EVENTS_MAX = 20_000  # the start's events kept until the first subscription (warm-up bars included)


Installed = dict[int, Any]  # each signal handled, with the handler it had before


def install_signals(on_stop: Callable[[str], None], on_halt: Callable[[], None]) -> Installed:
    """SIGTERM, SIGINT and SIGHUP stop in order (on_stop gets the signal's name); SIGUSR1 halts."""
    loop = asyncio.get_running_loop()
    installed: Installed = {sig: signal.getsignal(sig) for sig in (*STOP_SIGNALS, signal.SIGUSR1)}
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_stop, sig.name)
    loop.add_signal_handler(signal.SIGUSR1, on_halt)
    return installed


def quiet_signals(installed: Installed) -> None:
    """From the start of an ordered stop to its end: a further signal only says the stop is under way (with no
    handler at all, a late one, such as a terminal's hang-up after the operator's own SIGHUP, would kill the process
    in the middle of its stop)."""
    loop = asyncio.get_running_loop()
    for sig in installed:
        loop.add_signal_handler(sig, already_stopping, signal.Signals(sig).name)


def already_stopping(name: str) -> None:
    """What a stop signal does once an ordered stop is under way: it says so, and the stop goes on to its end."""
    log.warning("signal ignored: the engine is already stopping", signal=name)


def remove_signals(installed: Installed, *, exiting: bool = False) -> None:
    """The handlers go and the ones from before are put back (a start given up, or a host in a process that goes
    on). `exiting`: at the end of an ordered stop, in a process that exits next, the signals are ignored instead,
    since what they would stop has stopped, and the exit code stays the stop's (through the interpreter's own
    finalization, which puts a handler that does nothing back to the default and so to dying of a late signal)."""
    loop = asyncio.get_running_loop()
    while installed:
        sig, before = installed.popitem()
        loop.remove_signal_handler(sig)
        if exiting:
            signal.signal(sig, signal.SIG_IGN)
        elif before is not None:  # else not set from Python: left as the loop leaves it
            signal.signal(sig, before)


def _hold_lock(path: Path, holder: str, refused: Callable[[str], StartError]) -> int:
    """Hold the lock file `path` (its directory made private if new) and write `holder` in it, for the refusals of
    others to name this process; `refused(what the holder wrote)` is raised when another process holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except IsADirectoryError:
        raise directory_in_place(path) from None
    except OSError as exc:
        # A lock file there that this user cannot open is its owner's or mode's doing, not the disk's.
        raise closed_to_reader(path) or storage_failure(path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            written = os.read(fd, 4096).decode(errors="replace").strip()
        finally:
            os.close(fd)
        raise refused(written) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder}\n".encode())
    except OSError as exc:
        os.close(fd)
        raise storage_failure(path, exc) from None
    return fd


class DirectoryHeld(StartError):
    """The data directory's lock is held by another process: an engine (`holder` "engine"), or a backup or restore
    taken without one, which ends by itself."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


LOCK_WAIT_S = 90.0  # how long a start waits for a backup or restore to end: within systemd's TimeoutStartSec


def acquire_lock(data_dir: Path, holder: str = "engine") -> int:
    """One engine per data directory: two would journal orders into the same book. A backup or a restore of a
    stopped account holds it too (`holder`), written in the lock file beside the pid for the refusals to name."""

    def refused(written: str) -> StartError:
        pid, _, kind = written.partition(" ")
        kind = kind or "engine"  # a pid alone: an engine of a release before the holders were named
        if not pid.isdigit() or not pid_alive(int(pid)):
            # Read between the lock taken and its holder written (or what an earlier holder left): nobody to name.
            return DirectoryHeld(f"{data_dir}: another process holds this data directory (it names no holder "
                                 "yet)", "unknown")
        if kind == "engine":
            return DirectoryHeld(f"{data_dir}: another ffe engine (pid {pid}) is running on this data directory",
                                 kind)
        return DirectoryHeld(f"{data_dir}: a {kind} (pid {pid}) holds this data directory", kind)

    return _hold_lock(data_dir / DATA_LOCK, f"{os.getpid()} {holder}", refused)


async def acquire_engine_lock(data_dir: Path, clock: Clock) -> int:
    """The data directory for an engine: a backup or a restore that holds it (the hourly backup timer meeting a
    restart) is waited for, up to LOCK_WAIT_S of `clock`'s real seconds, then the start fails as a transient failure
    (exit 1: systemd starts it again), never as a configuration error; another engine is refused at once."""
    deadline = clock.monotonic() + LOCK_WAIT_S
    said = False
    while True:
        try:
            return acquire_lock(data_dir)
        except DirectoryHeld as exc:
            if exc.holder == "engine":
                raise
            if clock.monotonic() >= deadline:
                raise FfeError(f"{exc} still, after {LOCK_WAIT_S:.0f}s: start again once it has ended") from None
            if not said:
                said = True
                what = exc.holder if exc.holder != "unknown" else "process that holds it"
                log.warning(f"waiting for the {what} to end", detail=str(exc))
            await asyncio.sleep(0.5)


def lock_database(db_path: Path) -> int:
    """The database file itself held (flock, which SQLite's own byte-range locks do not touch) while an engine
    runs on it: the lock files can be removed under a running engine, the database cannot without losing the
    records, so a second engine is refused even then."""
    try:
        fd = os.open(db_path, os.O_RDONLY)
    except OSError as exc:
        # Opened to be read, not written: a file this user cannot read is said as such, not as a full disk.
        if is_unreachable(exc):
            raise unreachable(db_path, exc) from None
        raise StorageError(f"{db_path}: cannot open the database ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartError(f"{db_path}: another process holds this database (an ffe engine whose lock file "
                         f"{db_path.parent / 'ffe.lock'} was removed?); nothing was written") from None
    return fd


def acquire_log_lock(log_dir: Path, data_dir: Path) -> int:
    """One engine per log directory: two would write into one audit trail, and a restore must not replace the
    trail an engine is writing. The file says who holds it (pid, data directory) for the refusals to name it."""

    return _hold_lock(log_dir / LOG_LOCK, f"{os.getpid()} {data_dir.resolve()}", partial(_log_refused, log_dir))


def refuse_held_log_dir(log_dir: Path, data_dir: Path) -> None:
    """The refusal `acquire_log_lock` would give, found before the data directory's lock is taken where taking it
    would make its file (and the directory): a start or a restore refused for another engine's log directory leaves
    neither behind. Where the lock file is there, the data directory's own refusal comes first, as ever (the engine
    holding both is named as the one running on the data directory). Taking the lock still decides."""
    if (data_dir / DATA_LOCK).exists():
        return
    try:
        fd = os.open(log_dir / LOG_LOCK, os.O_RDONLY)
    except OSError:
        return  # no lock file (or none this user can open): taking the lock says what
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # closing the file lets it go
    except BlockingIOError:
        raise _log_refused(log_dir, os.read(fd, 4096).decode(errors="replace").strip()) from None
    finally:
        os.close(fd)


def _log_refused(log_dir: Path, written: str) -> StartError:
    return StartError(f"{log_dir}: the audit trail there is written by {_log_holder(written)}; give each engine its "
                      "own [logging] dir")


def log_dir_holder(log_dir: Path) -> str:
    """`the ffe engine pid 123 on /srv/ffe/data`, from the log directory's lock file."""
    try:
        return _log_holder((log_dir / LOG_LOCK).read_text())
    except OSError:
        return _log_holder("")


def _log_holder(written: str) -> str:
    pid, _, data_dir = written.strip().partition(" ")
    if not data_dir:  # held, and its holder not written yet
        return "a running ffe engine"
    return f"the ffe engine pid {pid} on {data_dir}"


def refuse_what_is_not_a_file(settings: Settings) -> None:
    """Anything but a regular file where one of the files a start writes or reads goes (the locks, the disk reserve,
    the audit trail, its rotated files and the records set aside beside it): a directory, a FIFO, a device, a
    socket, or a link to one, stops the start before anything is written: written to, a directory would read as a
    full disk (the start would store HALTED and empty the reserve for it, or go on without the log directory's
    lock), a device would take every record and keep none, and a FIFO or a device read would be waited on, or read,
    without end."""
    for path in (settings.data_dir / DATA_LOCK, reserve_path(settings.data_dir), socket_lock_path(settings.socket_path),
                 *trail_paths(settings.audit_path), *aside_paths(settings.audit_path), settings.log_dir / LOG_LOCK):
        said = not_a_file(path, START_AGAIN)
        if said is not None:
            raise said


def _no_restore_left_half_way(settings: Settings) -> None:
    """No database, and a restore's files there: refused (store.restore_left_half_way)."""
    said = restore_left_half_way(settings.db_path, settings.audit_path)
    if said is not None:
        raise DamagedRecords(f"{said}; nothing was started")


def _restore_request_hold(venue: Any, db_path: Path) -> None:
    """The exchange's Retry-After on every request, as the last run stored it: a start within it sends nothing
    (its first request is refused at once, or waits when a few seconds are left), as an exchange lengthens a ban
    for every request sent during it. Read before anything else of the database: the venue's requests come first."""
    hold = getattr(venue, "hold_requests", None)
    if hold is None:
        return
    try:
        saved = saved_state(db_path, check=False) or {}
    except StorageError:  # the start's own opening of the database checks it, and says what is wrong with it
        return
    until = saved.get(REQUEST_HOLD_KEY)
    if isinstance(until, (int, float)) and not isinstance(until, bool):
        hold(float(until))


class EngineHost:
    """Owns everything an engine needs from its process. Build it with `await EngineHost.open(...)`."""

    def __init__(self, settings: Settings, engine: Engine, store: Store, audit: AuditWriter, bus: EventBus,
                 lock_fd: int | None, umask: int | None = None, socket_lock: int | None = None,
                 log_lock: int | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.audit = audit
        self.bus = bus
        self._lock_fd = lock_fd
        self._db_lock: int | None = None  # the database file itself, held while the engine runs (lock_database)
        self._log_lock = log_lock
        self._umask = umask  # the process's umask before open, put back by close
        self.instance = uuid.uuid4().hex[:12]  # tells this run apart on the control socket and in its log
        self._server: ControlServer | None = None
        self._socket_lock = socket_lock  # the control socket's path, claimed at open; the server's once it serves
        self._signals: Installed = {}
        self._exits_after = False  # run by `ffe run`, whose process exits when the run ends
        self._halts: list[asyncio.Task[Any]] = []
        self._closed: asyncio.Future[None] | None = None
        self.monitor: Monitor | None = None
        self.systemd = SystemdNotifier(engine.clock.monotonic)
        self._start_events: Subscription | None = None  # the bus's events from its creation, until `earlier` is kept
        self.earlier: list[Event] = []  # the events from the start to the first subscription, bars left out

    @classmethod
    async def open(cls, settings: Settings, *, live: bool = False, max_bars: int | None = None,
                   headless: bool = True, log_stream: IO[str] | None = None, feed: Feed | None = None,
                   venue: Venue | None = None, clock: Clock | None = None, ids: IdSource | None = None) -> EngineHost:
        """Build every part from the settings and start the engine (state restored, orders recovered)."""
        check_bind(settings)
        refuse_engine_on_run_folder(settings)  # before the lock: nothing written there
        refuse_what_is_not_a_file(settings)
        secrets = settings.secrets()
        redactor = Redactor(secrets)
        redact = redactor.text if redactor else None  # for free text: a failed start's page
        refuse_held_log_dir(settings.log_dir, settings.data_dir)
        umask = os.umask(PRIVATE)
        try:
            lock_fd = await acquire_engine_lock(settings.data_dir, WallClock())  # real seconds, whatever the market's
        except BaseException as exc:
            os.umask(umask)
            if isinstance(exc, StorageError):  # the first write of a start: paged as the later ones are
                with contextlib.suppress(Exception):
                    await start_refused(settings, clock or WallClock(), exc, redact)
            raise
        log_lock: int | None = None
        try:
            log_lock = acquire_log_lock(settings.log_dir, settings.data_dir)
        except StorageError:
            pass  # a log directory that cannot be written: the audit trail's own failure below stores HALTED
        except BaseException:
            os.close(lock_fd)
            os.umask(umask)
            raise
        if clock is None:
            clock = WallClock() if settings.market.source == "exchange" else SimClock(paced=True)
        bus = EventBus(clock, redactor=redactor)
        # The start's events (the run, overrides, the start's reconciliation, orders recovered) are published
        # before anyone can subscribe: kept from here for the console's log and the control socket's stream.
        start_events = bus.subscribe(maxlen=START_EVENTS_MAX)
        store: Store | None = None
        audit: AuditWriter | None = None
        socket_lock: int | None = None
        monitor: Monitor | None = None
        engine: Engine | None = None
        db_lock: int | None = None
        trail_check: asyncio.Task[dict[str, Any] | None] | None = None
        try:
            socket_lock = await claim(settings.socket_path)  # another engine's socket: refused before anything

            def to_bus(level: str, message: str) -> None:
                bus.publish(LogEvent(level=level, message=message))

            if log_stream is None:
                log_stream = sys.stderr if headless else open(os.devnull, "w")  # the console shows them in its pane
            setup_logging(settings.logging.level, secrets=secrets, stream=log_stream,
                          to_bus=None if headless else to_bus)
            symbols = list(settings.engine.symbols)
            # The venue and the credentials first: a start they refuse leaves no database or audit file behind.
            if venue is None:
                venue = make_venue(settings, symbols)
            _restore_request_hold(venue, settings.db_path)
            if live:
                try:
                    await check_credentials(venue)
                except FfeError as exc:  # before any record: paged now (systemd gives up after a few starts)
                    with contextlib.suppress(Exception):
                        await start_refused(settings, clock, exc, redact)
                    raise
            if feed is None:
                feed = make_feed(settings, clock, max_bars, venue)
            # An audit trail with records means this is not a first start: the database must be there, whole.
            _no_restore_left_half_way(settings)  # no database, or an empty one, beside a restore's files
            if settings.db_path.exists():
                db_lock = lock_database(settings.db_path)
            # A market made in the process stores its state with the books: lost beside them, it is damage.
            store = await Store.open(settings.db_path, new_ok=not has_records(settings.audit_path),
                                     busy_timeout_s=settings.storage.busy_timeout_s,
                                     own_market=isinstance(feed, ResumableFeed))
            if db_lock is None:
                db_lock = lock_database(settings.db_path)
            # Before anything else is written: the audit trail level with the database, and the seq after both.
            repair = await repair_trail(settings.audit_path, store.events_after)
            if repair.torn is not None:
                log.warning("audit trail: a torn last line was set aside", file=str(repair.torn),
                            bytes=repair.torn_bytes)
            if repair.appended:
                log.warning("audit trail: records missing from the file appended from the database",
                            records=repair.appended, file=str(settings.audit_path))
            # The chain of the file as repaired read through beside the rest of the start, which awaits it before
            # its `run` record: a record damaged before the last two is told there and paged.
            trail_check = asyncio.ensure_future(trail_damage(settings.audit_path))
            if repair.last_seq >= bus.seq:  # seq and the hash chain go on from the trail's last record
                bus.resume(repair.last_seq, repair.last_hash)
            audit = AuditWriter(settings.audit_path, clock, rotate_bytes=settings.audit.rotate_bytes,
                                rotate_daily=settings.audit.rotate_daily)
            store.write_events_first(audit.flush, audit.written)
            bus.add_sink(store.add_event)
            bus.add_sink(audit)
            start_state = overrides.configured_start(settings, live=live)
            options = EngineOptions(live=live, approval=settings.engine.approval,
                                    approval_ttl_s=settings.engine.approval_ttl_s, adaptive=settings.ensemble.adaptive,
                                    start_state=start_state, max_bars=max_bars,
                                    set_aside=repair.uncommitted_summary, trail_check=trail_check)
            engine = build_engine(settings, feed=feed, venue=venue, store=store, bus=bus, clock=clock,
                                  options=options, timeframe_ms=settings.engine.timeframe_ms, audit=audit, ids=ids)
            host = cls(settings, engine, store, audit, bus, lock_fd, umask, socket_lock, log_lock)
            host._db_lock, db_lock = db_lock, None
            host._start_events = start_events
            files = [str(p.resolve()) for p in settings.source_files]
            log.info("settings", files=", ".join(files) or "none (built-in defaults)",
                     data_dir=str(settings.data_dir.resolve()), log_dir=str(settings.log_dir.resolve()))
            monitor = Monitor(settings, engine, audit=audit, store=store, redactor=redactor)
            # Before the start: the start and its reconciliation raise alerts.
            bus.add_sink(monitor.sink, names=WATCHED)
            engine.health_report = monitor.health
            engine.monitor_status = monitor.status
            engine.on_records_unwritable = monitor.records_unwritable
            engine.backup_hook = host.backup
            engine.liveness.on_turn = host.systemd.watchdog
            # A start refused by its books (another market, another quote currency) writes nothing: before the
            # monitor, whose alerts' bookkeeping writes.
            await engine.check_books()
            await monitor.start()  # bound before the engine starts: a port in use stops the start, not trading
            host.monitor = monitor
            await engine.start()
            monitor.start_succeeded()
            return host
        except BaseException as exc:
            # A failed start ends the process: the store's worker thread would keep it alive after the error.
            halted = False
            if trail_check is not None:
                trail_check.cancel()  # its thread reads on to the end of the file, its answer no longer wanted
            told: BaseException = exc  # the failure as the operator reads it, in the error line and the page alike
            if isinstance(exc, (VenueError, VenueUnavailable)) and venue is not None:
                # Past the start check, the exchange stopped answering (rate limit, outage): nothing was sent.
                told = FfeError(f"start failed on {venue.name}: {exc}; nothing was sent: start again once it "
                                "answers")
            try:
                if engine is not None:
                    # Before the monitor closes: the failure's record raises its alert, which gets its chance to leave.
                    with contextlib.suppress(Exception):
                        await engine.start_failed(told)
                if monitor is not None:
                    await monitor.close()
                # Its records could not be written, its alert neither; or it stopped before the engine started
                # (the monitor's port held by another process), which records nothing to raise one. Sent after
                # what the monitor had to send (this start's STARTED): the failure is the operator's last word.
                if isinstance(exc, (StorageError, PortInUse)):
                    with contextlib.suppress(Exception):
                        await start_refused(settings, clock, exc, redact)
                if store is not None:
                    # A record could not be written: HALTED, if it still can be. A damaged database is left as it is.
                    if isinstance(exc, StorageError) and not isinstance(exc, DamagedDatabase):
                        why = TRAIL_DAMAGED_HALT if isinstance(exc, DamagedRecords) else "records cannot be written"
                        halted = await store.record_halt(why, "engine", clock.wall(),
                                                         free_room=not isinstance(exc, DamagedRecords))
                    with contextlib.suppress(StorageError):  # the failure met again: it is the one reported
                        await store.close()
                if audit is not None:
                    with contextlib.suppress(StorageError):
                        audit.close()
            finally:
                if socket_lock is not None:
                    os.close(socket_lock)
                if log_lock is not None:
                    os.close(log_lock)
                if db_lock is not None:
                    os.close(db_lock)
                os.close(lock_fd)
                os.umask(umask)
                if venue is not None:  # its connections would outlive the failed start, reported unclosed
                    with contextlib.suppress(Exception):
                        await venue.close()
                close_feed = getattr(feed, "close", None)  # the exchange feed's ccxt client, likewise
                if close_feed is not None:
                    with contextlib.suppress(Exception):
                        await close_feed()
            if halted:
                raise StorageError(f"{exc}; HALTED stored") from None
            if isinstance(exc, StorageError) and store is not None and store.reserve_used:
                # The disk reserve emptied for a HALTED that could not be stored: the next start says it.
                raise StorageError(f"{exc}; HALTED could not be stored; the next start comes up HALTED all the "
                                   "same") from None
            if told is not exc:
                raise told from None
            raise

    # ------------------------------------------------------------------ backups
    async def backup(self, to: str | None, by: str) -> dict[str, Any]:
        """A backup of the records while the engine runs (`ffe backup` asks for it on the control socket): trading
        waits only while the buffered records are written and the read view is pinned (backup.py)."""
        from .backup import take_running  # only when asked: an engine starts without the backup's modules

        dest = Path(to) if to else Path(self.settings.backup.dir)
        clock = self.engine.clock
        made, held_ms = await take_running(self.store, self.settings, dest, clock.wall(),
                                           source=f"engine {self.instance}", monotonic=clock.monotonic)
        size = made.path.stat().st_size
        last_seq = made.manifest["seq"]["last"]
        self.bus.publish(BackupEvent(file=str(made.path), last_seq=last_seq, bytes=size, held_ms=round(held_ms, 3),
                                     by=by))
        log.info("backup taken", file=str(made.path), last_seq=last_seq, bytes=size, held_ms=round(held_ms, 3), by=by)
        for d in made.manifest["trail_damaged"]:
            log.warning("audit trail damaged: the backup holds the database's copy of these records; the trail is "
                        "left as it is: run `ffe doctor` (and `ffe audit verify`)", file=d["file"],
                        first_seq=d["first"], last_seq=d["last"])
        return {"file": str(made.path), "bytes": size, "held_ms": held_ms, "manifest": made.manifest,
                "swept": [str(p) for p in made.swept]}

    def subscribe(self, maxlen: int) -> Subscription:
        """The engine's events from now on; those from its start until now are in `earlier`."""
        self._keep_earlier()
        return self.bus.subscribe(maxlen=maxlen)

    def _keep_earlier(self) -> None:
        if self._start_events is not None:
            events = [ev for ev in self._start_events.drain() if ev.name != BarEvent.name]
            self.earlier = events[-EARLIER_EVENTS:]
            self.bus.unsubscribe(self._start_events)
            self._start_events = None

    # ------------------------------------------------------------------ control socket and signals
    async def start_control(self) -> None:
        self._keep_earlier()
        control = self.settings.control
        limits = Limits(max_connections=control.max_connections, idle_timeout_s=control.idle_timeout_s,
                        stream_buffer_bytes=control.stream_buffer_kb * 1024)
        self._server = ControlServer(self.engine, self.settings.socket_path, data_dir=self.settings.data_dir,
                                     instance=self.instance, limits=limits, earlier=self.earlier,
                                     redactor=Redactor(self.settings.secrets()))
        claimed, self._socket_lock = self._socket_lock, None
        await self._server.start(claimed)
        self.engine.before_stop = self._server.commands_done
        self.engine.after_stop = self._server.end_streams

    def install_signals(self) -> None:
        """Headless: the engine is told directly (the console installs handlers of its own, which say on its screen
        what is happening)."""
        self._signals = install_signals(self._stop_by_signal, self.halt_by_signal)

    def _stop_by_signal(self, name: str) -> None:
        if self.engine.stop_asked():  # a second SIGTERM, a hang-up after the operator's own SIGHUP
            already_stopping(name)
            return
        self.engine.request_stop()

    def halt_by_signal(self) -> None:
        self._halts.append(asyncio.ensure_future(self.engine.halt(reason="SIGUSR1", by="signal")))

    # ------------------------------------------------------------------ run and stop
    async def run(self, *, exits_after: bool = False) -> int:
        """Headless: control socket, signals, the engine loop to its end, then the ordered stop. The exit code.
        exits_after: the process exits when this returns, so the stop signals stay ignored to its end; else the
        handlers from before are put back (what this process starts next inherits them)."""
        self._exits_after = exits_after
        try:
            await self.start_control()
            self.install_signals()
            self.systemd.ready(f"{self.engine.mode} {self.engine.state.value}")
            await self.engine.run()
        finally:
            await self.close()
        if isinstance(self.engine.crashed, StorageError):
            raise self.engine.crashed  # the one line: which file, and what to do
        return 1 if self.engine.crashed else 0

    async def close(self) -> None:
        """End the engine in order (idempotent; a second caller waits for the first)."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = asyncio.get_running_loop().create_future()
        try:
            self.systemd.stopping()
            quiet_signals(self._signals)
            self.engine.request_stop()
            for task in self._halts:
                try:
                    await task
                except Exception as exc:
                    # A halt asked for by signal that failed is on the record, not dropped.
                    self.bus.publish(ErrorEvent(message=f"SIGUSR1 halt failed: {type(exc).__name__}: {exc}",
                                                where="signal"))
            try:
                try:
                    if self._server is not None:
                        await self._server.stop()
                        self._server = None
                finally:  # the engine's records are closed in order whatever became of the socket
                    await self.engine.stop()
            finally:
                try:
                    try:
                        if self.monitor is not None:
                            # After the engine's stop (its alert gets a short chance to leave), before the store.
                            await self.monitor.close()
                            self.monitor = None
                        await self.store.close()
                    finally:
                        try:
                            self.audit.close()
                        finally:
                            if self._socket_lock is not None:
                                os.close(self._socket_lock)
                                self._socket_lock = None
                            if self._log_lock is not None:
                                os.close(self._log_lock)
                                self._log_lock = None
                            if self._lock_fd is not None:
                                os.close(self._lock_fd)
                                self._lock_fd = None
                            if self._db_lock is not None:
                                os.close(self._db_lock)
                                self._db_lock = None
                            if self._umask is not None:
                                os.umask(self._umask)
                                self._umask = None
                            self.systemd.close()
                            remove_signals(self._signals, exiting=self._exits_after)
                except StorageError:
                    if not isinstance(self.engine.crashed, StorageError):
                        raise  # else: the failure the engine stopped for, met again while closing
        finally:
            self._closed.set_result(None)


class EarlySignals(Protocol):
    """Signals taken before this module was even imported (by the process's entry point)."""

    def hand_over(self) -> tuple[list[int], dict[int, Any]]:
        """The signals received, in order, and the handlers from before, to put back at the end."""
        ...


def keep_halt_asked(settings: Settings, reason: str, by: str) -> str:
    """The kill switch asked for during a start that failed or was given up, kept for the next start
    (halt_asked.py); the words that say so."""
    if halt_asked_file.keep(settings.data_dir, reason, by):
        return "the kill switch asked during the start is kept: the next start comes up HALTED"
    return (f"the kill switch asked during the start could not be kept ({halt_asked_file.path(settings.data_dir)} "
            "cannot be written): halt the next start at once")


def kept_for_next_start(exc: FfeError, settings: Settings, reason: str, by: str) -> FfeError:
    """The failure of a start during which the kill switch was asked for, the halt kept for the next start: its
    line says so, with its exit code."""
    said = FfeError(f"{exc}; {keep_halt_asked(settings, f'{reason} (asked while a start failed)', by)}")
    said.exit_code = exc.exit_code
    return said


async def run_headless(settings: Settings, *, live: bool, max_bars: int | None,
                       early: EarlySignals | None = None) -> int:
    """A live start can wait a while on its exchange (the start check's retries): a stop signal meanwhile gives the
    start up in order, and SIGUSR1 halts the engine as soon as it has started, before it trades. So do the signals
    `early` took before this was called."""
    opening = asyncio.ensure_future(EngineHost.open(settings, live=live, max_bars=max_bars, headless=True))
    stopped_by: list[str] = []
    halt_asked: list[bool] = []

    def started() -> EngineHost | None:
        return opening.result() if opening.done() and not opening.cancelled() and not opening.exception() else None

    def stop(name: str) -> None:  # until the host's own handlers replace these, in host.run
        stopped_by.append(name)
        host = started()
        if host is not None:
            host.engine.request_stop()
        else:
            opening.cancel()

    def halt() -> None:
        host = started()
        if host is not None:
            host.halt_by_signal()
        else:
            halt_asked.append(True)

    signals = install_signals(stop, halt)
    if early is not None:
        received, before = early.hand_over()
        signals.update(before)
        for sig in received:
            if sig == signal.SIGUSR1:
                halt()
            else:
                stop(signal.Signals(sig).name)
    try:
        host = await opening
    except asyncio.CancelledError:
        remove_signals(signals)
        if not stopped_by:
            raise
        # The kill switch asked as well: kept for the next start, as a failed start keeps it.
        kept = ("; " + keep_halt_asked(settings, "SIGUSR1 (asked while a start was given up)", "signal")
                if halt_asked else "")
        log.warning(f"stopped while starting: nothing was sent{kept}", signal=stopped_by[0])
        return 0
    except BaseException as exc:
        remove_signals(signals)
        if halt_asked and isinstance(exc, FfeError):  # the start failed: the halt is kept for the next start
            raise kept_for_next_start(exc, settings, "SIGUSR1", "signal") from None
        raise
    if halt_asked:
        host.halt_by_signal()
    if stopped_by:
        host.engine.request_stop()
    return await host.run(exits_after=True)
