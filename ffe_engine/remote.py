"""A running engine seen through its control socket: what `ffe attach` gives the console.

`RemoteEngine` has the engine's control surface (pause, resume, halt, flatten, approve, reject, ...) and a
`snapshot()`, each a request on the socket; its events arrive on a second connection (the `subscribe` stream) and
are published on a local EventBus as the same event classes, so the console works the same in or out of process.
Stopping the console never stops the engine it is attached to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from .api import STREAM
from .clock import Clock, WallClock
from .config import Settings
from .control import EARLIER, MAX_ANSWER_BYTES, SNAPSHOT, STREAM_END, connect, no_engine, not_answering, request
from .errors import ControlError
from .execution import CancelReport
from .events import EVENT_TYPES, EngineStateChanged, Event, EventBus, Subscription

def event_from(rec: dict[str, Any]) -> Event | None:
    cls = EVENT_TYPES.get(rec.get("event", ""))
    if cls is None:
        return None
    names = {f.name for f in fields(cls)} - {"seq", "ts"}
    ev = cls(**{k: v for k, v in rec.items() if k in names})
    ev.seq = int(rec.get("seq") or 0)
    ev.ts = float(rec.get("ts") or 0.0)
    return ev


CONNECT_TRIES = 3  # an engine busy past the request timeout is asked again before attaching gives up
DROPPED_RETRY_S = 0.2  # ... and one that dropped the connection (its socket full) after this pause
REFRESH_S = 0.5  # the snapshot is asked for this often, and at once after a change of state
ASK_AGAIN_S = 1.0  # an event stream lost: the engine is asked this often until it answers


class NoAnswer(ControlError):
    """The engine did not answer within the request timeout (stopped, or busy): it may be running."""


class Dropped(NoAnswer):
    """The engine accepted the connection, then closed it without an answer: it is there, its control socket full
    (the place kept for a halt went to a newer connection)."""


class StreamCut(Dropped):
    """The engine began the event stream (its snapshot came), then ended it before the events it begins with were
    all read: the connection was served, so no full socket ended it. An engine ends a stream so when the console
    leaves control.stream_buffer_kb of events unread; it cannot say so on the stream (what waits unread is ahead
    of any word), its log does."""


class EngineGone(ControlError):
    """Nothing answers on the socket: no engine runs there (any more)."""


class EngineStopped(Exception):
    """The engine at the other end of the socket stopped after an error."""


class RemoteEngine:
    def __init__(self, path: Path, bus: EventBus, *, data_dir: Path | None = None, timeout: float = 10.0,
                 clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.clock = clock if clock is not None else WallClock()
        self.bus = bus
        self.data_dir = data_dir  # an engine on another data directory refuses every command
        self.timeout = timeout
        self._snapshot: dict[str, Any] = {}
        self._stop = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.crashed: BaseException | None = None
        self.ended = False  # the engine said it stopped in order (not a dropped connection)
        # The event stream ended without its end line (the engine disconnected a console that fell behind, or was
        # killed, or the link broke): what happened and what asking the engine found, as words after "this console"
        # ("lost its event stream (...) and cannot reach the engine: ..."), until it is subscribed again. None while
        # the stream runs. No stop seen: the engine may run on.
        self.lost: str | None = None
        self.lost_at = 0.0
        self.subscriptions = 0  # the event streams subscribed after one was lost
        self.replaced: dict[str, Any] | None = None  # another run of an engine answers on the socket instead
        self._relayed = 0  # the seq of the engine's last event relayed: a stream subscribed again goes on from it
        self.answered_at = self.clock.monotonic()  # its last answer to a status request
        self.refusal: str | None = None  # why the last status request was refused, when it was (the engine answers)
        self.refused_at = 0.0  # ... and when (monotonic): a refusal says the engine is busy only while it is recent
        self.earlier: list[Event] = []  # the engine's latest events before the console attached
        self.identity: dict[str, Any] = {}  # which engine answers (pid, data directory, instance)
        # The changes of state the stream has told (counted), and how many of them the snapshot was asked after: a
        # snapshot asked before the last one may have an older state serial than the state it shows.
        self._state_events = 0
        self._snapshot_after = 0
        self._wake = asyncio.Event()  # a change of state: the refresher asks for the snapshot at once

    async def connect(self, more: Callable[[], bool] | None = None) -> None:
        """Ask the engine for its state and subscribe to its events; an engine that does not answer in time is
        asked CONNECT_TRIES times, and on while `more()` (the console's kill switch waits for it)."""
        tries = 0
        while True:
            tries += 1
            try:
                self._snapshot = await self._call("status")
                await self._open_stream()
                break
            except NoAnswer as exc:
                if tries >= CONNECT_TRIES and not (more is not None and more()):
                    raise
                if isinstance(exc, Dropped):
                    await asyncio.sleep(DROPPED_RETRY_S)
        self.answered_at = self.clock.monotonic()
        self._relayed = max([0, *(ev.seq for ev in self.earlier)])
        # The console's own events (an error it records) are numbered after the engine's, as for those relayed.
        self.bus.seq = max([self.bus.seq, *(ev.seq for ev in self.earlier)])

    async def _open_stream(self) -> None:
        self.identity = {}  # its requests are for no instance in particular until the stream names one
        self._reader, self._writer = await asyncio.open_unix_connection(sock=await connect(self.path),
                                                                        limit=MAX_ANSWER_BYTES)
        stream: dict[str, Any] = {"cmd": STREAM}
        if self.data_dir is not None:
            stream["data_dir"] = os.path.realpath(self.data_dir)
        try:
            self._writer.write((json.dumps(stream) + "\n").encode())
            await self._writer.drain()
            self.earlier = await asyncio.wait_for(self._read_earlier(), self.timeout)
        except BaseException as exc:
            self._writer.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise ControlError(f"the engine at {self.path} did not begin its event stream within "
                                   f"{self.timeout:g}s") from None
            if isinstance(exc, ConnectionError):
                raise Dropped(f"the engine at {self.path} closed the connection before its event stream: "
                              f"{exc}") from None
            raise

    async def _read_earlier(self) -> list[Event]:
        """The stream's first lines: the engine's snapshot, then the events before this connection."""
        assert self._reader is not None
        first = await self._reader.readline()
        if not first:
            raise ConnectionResetError("closed without a line")
        head = self._decoded(first)
        if isinstance(head, dict) and head.get("ok") is False:  # refused ("too many control connections")
            raise ControlError(f"the engine at {self.path} refused the event stream: {head.get('error')}")
        if not isinstance(head, dict) or head.get("event") != SNAPSHOT:
            raise ControlError(f"the engine at {self.path} began its event stream with {head!r:.80}")
        earlier: list[Event] = []
        count: int | None = None
        try:
            told = self._decoded(await self._whole_line())
            if not isinstance(told, dict) or told.get("event") != EARLIER:
                raise ControlError(f"the engine at {self.path} began its event stream with {[head, told]!r:.80}")
            count = int(told.get("count") or 0)
            for _ in range(count):
                ev = event_from(self._decoded(await self._whole_line()) or {})
                if ev is not None:
                    earlier.append(ev)
        except ConnectionError:  # the end of the stream, or a line it cut short
            of = f"{len(earlier)} of the {count} earlier events" if count is not None else "its snapshot"
            raise StreamCut(f"the engine at {self.path} closed its event stream after {of}, before this console "
                            "had read how it began: an engine ends the stream of a console that leaves "
                            "[control] stream_buffer_kb of events unread (its log then says `event stream "
                            "subscribers disconnected: not reading`)") from None
        self._snapshot = head.get("snapshot") or self._snapshot
        self.identity = head.get("engine") or {}
        return earlier

    async def _whole_line(self) -> bytes:
        """The stream's next line; ConnectionResetError when it ends first."""
        assert self._reader is not None
        line = await self._reader.readline()
        if not line:
            raise ConnectionResetError("the engine closed the connection")
        return line

    @staticmethod
    def _decoded(line: bytes) -> Any:
        """One line of the stream; a line cut short (the engine disconnected this reader in the middle of a write)
        or not JSON ends the connection, never the console."""
        try:
            return json.loads(line)
        except ValueError:
            raise ConnectionResetError(f"a line cut short or not JSON: {line[:60]!r}") from None

    async def _call(self, cmd: str, **args: Any) -> Any:
        # Every request names the run of the engine this console attached to (once its stream has named it): a
        # newer engine on the same socket refuses it, so nothing meant for the old one acts on it.
        instance = self.identity.get("instance")
        try:
            answer = await request(self.path, cmd, args, timeout=self.timeout, data_dir=self.data_dir,
                                   instance=str(instance) if instance else None)
        except asyncio.TimeoutError:
            raise NoAnswer(f"the engine at {self.path} did not answer {cmd} within {self.timeout:g}s; "
                           "it may still carry it out") from None
        except (FileNotFoundError, ConnectionRefusedError, ValueError) as exc:  # nobody listens: no engine
            raise EngineGone(f"engine at {self.path} is gone: {exc}") from None
        except ConnectionError as exc:  # accepted, then closed: an engine is there, its socket full
            raise Dropped(f"the engine at {self.path} closed the connection before answering {cmd} (its control "
                          f"socket full?): {exc}") from None
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error")))
        return answer.get("result")

    # ------------------------------------------------------------------ the engine's surface
    def snapshot(self) -> dict[str, Any]:
        return self._snapshot

    def snapshot_current(self) -> bool:
        """Whether the snapshot was asked for after the last change of state the stream told: its state serial is
        then that of the state shown (or newer), not of the one before."""
        return self._snapshot_after >= self._state_events

    async def fresh_snapshot(self) -> dict[str, Any]:
        """The snapshot, asked for now."""
        after = self._state_events
        self._snapshot = await self._call("status")
        self._snapshot_after = max(self._snapshot_after, after)
        return self._snapshot

    def refused_s(self) -> float | None:
        """Seconds since the engine last refused a status request (it answers, its socket full); None if the last
        status request was not refused."""
        return None if self.refusal is None else self.clock.monotonic() - self.refused_at

    async def run(self) -> None:
        """Relay the engine's events until it says it stopped or the console stops; refresh the snapshot meanwhile.
        A stream that ends without the engine's end line is a lost connection, not a stop: the engine is asked, and
        subscribed to again once it answers (until then `lost` says why it is not)."""
        assert self._reader is not None
        refresher = asyncio.ensure_future(self._refresh())
        try:
            while not self._stop.is_set():
                why = await self._follow()
                if why is None and self.ended:
                    await self._last_snapshot()
                if why is None or self._stop.is_set():
                    return
                self.lost = f"lost its event stream ({why}; no end line from the engine)"
                self.lost_at = self.clock.monotonic()
                if not await self._subscribe_again():
                    return
        finally:
            refresher.cancel()

    async def _last_snapshot(self) -> None:
        """The engine's figures once its run has ended in order, asked for once: the snapshot refreshed last may be
        from before its last bars and its stop's records. An engine that a console ran still answers on its socket;
        a headless one has gone with it, and the last snapshot stays what the console shows."""
        with contextlib.suppress(asyncio.TimeoutError, ControlError, OSError, ValueError):  # no answer, gone
            await asyncio.wait_for(self.fresh_snapshot(), self.timeout)

    async def _follow(self) -> str | None:
        """Relay the stream's events: None once it says the engine stopped in order (or the console stops), else
        why it ended."""
        assert self._reader is not None
        while not self._stop.is_set():
            try:
                line = await self._reader.readline()
            except (ConnectionError, ValueError) as exc:  # ValueError: a line past the reader's limit
                return f"{type(exc).__name__}: {exc}"
            if not line:
                return "the engine closed the connection"
            if not line.endswith(b"\n"):
                return "the engine closed the connection in the middle of a line"
            try:
                rec = json.loads(line)
            except ValueError:
                return f"a line that is not JSON: {line[:60]!r}"
            if rec.get("event") == STREAM_END:
                if rec.get("crashed"):
                    raise EngineStopped(f"the engine at {self.path} stopped after an error: {rec['crashed']}")
                self.ended = True
                return None
            self._relay(event_from(rec))
        return None

    def _relay(self, ev: Event | None) -> None:
        if ev is None:
            return
        if isinstance(ev, EngineStateChanged):
            # The state as the stream says it, at once: the snapshot's status requests may not be answered for a
            # while (the socket's places all taken), and the badge must not contradict the log. The next snapshot
            # brings the rest (its serial among them).
            self._snapshot = {**self._snapshot, "state": ev.state, "state_reason": ev.reason}
            self._state_events += 1
            self._wake.set()
        self._relayed = max(self._relayed, ev.seq)
        self.bus.relay(ev)  # with the engine's own seq and ts

    async def _subscribe_again(self) -> bool:
        """After a lost stream: ask the engine until it answers, then subscribe again, from a fresh snapshot, with
        the events sent meanwhile that the console has not had (those among the engine's latest). False when the
        console stops first, or another run of an engine answers on the socket (this one is gone)."""
        assert self.lost is not None
        lost = self.lost
        instance = self.identity.get("instance")
        while not self._stop.is_set():
            try:
                # Asked without the instance: the answer names whichever engine runs on the socket now.
                asked, answer = await self._unless_stopped(request(self.path, "status", timeout=self.timeout,
                                                                   data_dir=self.data_dir))
                if not asked:
                    return False
                engine = answer.get("engine") or {}
                if instance and engine.get("instance") not in (None, instance):
                    self.replaced = engine
                    return False
                opened, _ = await self._unless_stopped(self._open_stream())
                if not opened:
                    return False
                if instance and self.identity.get("instance") != instance:  # another run took the socket meanwhile
                    self.replaced = self.identity
                    if self._writer is not None:
                        self._writer.close()
                    return False
            except StreamCut as exc:  # it answered: reached, but its stream ended again as it began; asked again
                self.lost = f"{lost}, and subscribed again: {exc}"
            except Dropped as exc:  # there, its socket full: asked again
                self.lost = f"{lost} and cannot reach the engine: {exc}"
            except (asyncio.TimeoutError, NoAnswer):
                self.lost = f"{lost} and cannot reach the engine: no answer within {self.timeout:g}s"
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                self.lost = f"{lost} and cannot reach the engine: nothing answers on {self.path} ({exc.strerror})"
            except (OSError, ValueError, ControlError) as exc:
                self.lost = f"{lost} and cannot reach the engine: {exc}"
            else:
                self._snapshot_after = self._state_events  # the snapshot the stream began with is the state now
                for ev in self.earlier:  # what happened while this console was not subscribed, in order
                    if ev.seq > self._relayed:
                        self._relay(ev)
                self.bus.seq = max(self.bus.seq, self._relayed)
                self.lost = None
                self.answered_at = self.clock.monotonic()
                self.subscriptions += 1
                return True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), ASK_AGAIN_S)
        return False

    async def _unless_stopped(self, asked: Any) -> tuple[bool, Any]:
        """(True, what `asked` gives), or (False, None) once the console stops first: not waited for then."""
        task = asyncio.ensure_future(asked)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return False, None
        return True, task.result()

    async def _refresh(self) -> None:
        """The snapshot, asked for every half second. An engine that does not answer (frozen, busy past the request
        timeout), or is gone, is asked again (a lost event stream is said by `lost`, not here)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), REFRESH_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.fresh_snapshot()
            except (NoAnswer, EngineGone):
                continue  # a refusal before stays as old as it is: it says busy only while recent
            except ControlError as exc:  # answered, with a refusal ("too many control connections"): alive
                self.refusal = str(exc)
                self.refused_at = self.clock.monotonic()
                continue
            self.refusal = None
            self.answered_at = self.clock.monotonic()

    def silent_s(self) -> float:
        """Seconds since the engine last answered a status request."""
        return self.clock.monotonic() - self.answered_at

    def request_stop(self) -> None:
        self._stop.set()
        if self._writer is not None:
            self._writer.close()

    async def stop(self) -> None:
        self.request_stop()

    async def flush(self) -> None:
        return None

    async def pause(self, reason: str = "operator", by: str = "operator") -> Any:
        return await self._call("pause", reason=reason, by=by)

    async def resume(self, by: str = "operator", confirm: bool = False, state_serial: int | None = None,
                     timeout_s: float | None = None) -> Any:
        wait = min(timeout_s or self.timeout, self.timeout)  # the engine answers within half of it
        if state_serial is None:
            return await self._call("resume", by=by, confirm=confirm, timeout_s=wait)
        return await self._call("resume", by=by, confirm=confirm, state_serial=state_serial, timeout_s=wait)

    async def halt(self, reason: str = "kill switch", by: str = "operator",
                   timeout_s: float | None = None) -> CancelReport:
        wait = min(timeout_s or self.timeout, self.timeout)  # the engine answers within half of it
        r = await self._call("halt", reason=reason, by=by, timeout_s=wait) or {}
        return CancelReport(cancelled=r.get("cancelled", []), failed=r.get("failed", []),
                            filled=r.get("filled", []), elapsed_ms=r.get("elapsed_ms", 0.0),
                            under_way=r.get("under_way", []))

    async def flatten(self, by: str = "operator", timeout_s: float | None = None) -> Any:
        return await self._call("flatten", by=by, timeout_s=min(timeout_s or self.timeout, self.timeout))

    async def approve(self, approval_id: str, by: str = "operator") -> Any:
        return await self._call("approve", id=approval_id, by=by)

    async def reject(self, approval_id: str, by: str = "operator") -> Any:
        return await self._call("reject", id=approval_id, by=by)

    async def set_approval_mode(self, mode: str, by: str = "operator") -> Any:
        return await self._call("mode", mode=mode, by=by)

    async def accept_reconcile(self, by: str = "operator", timeout_s: float | None = None,
                               own_coins: bool = False) -> Any:
        return await self._call("accept", by=by, **({"timeout_s": timeout_s} if timeout_s is not None else {}),
                                **({"own_coins": True} if own_coins else {}))

    async def operator_order(self, symbol: str, side: str, quantity: float, by: str = "operator") -> Any:
        return await self._call("order", symbol=symbol, side=side, quantity=quantity, by=by)

    async def backup(self, to: str | None = None, by: str = "operator") -> Any:
        return await self._call("backup", to=to, by=by)

    async def operator_cancel(self, client_order_id: str, by: str = "operator") -> Any:
        return await self._call("cancel", id=client_order_id, by=by)

    async def settle_order(self, client_order_id: str, outcome: str, quantity: float | None = None,
                           price: float | None = None, by: str = "operator", fee: float | None = None,
                           fee_currency: str | None = None) -> Any:
        return await self._call("settle", id=client_order_id, outcome=outcome, quantity=quantity, price=price, by=by,
                                fee=fee, fee_currency=fee_currency)

    async def book_hand_sale(self, symbol: str, quantity: float, price: float, fee: float = 0.0,
                             by: str = "operator") -> Any:
        return await self._call("sold-by-hand", symbol=symbol, quantity=quantity, price=price, fee=fee, by=by)

    async def close_position(self, symbol: str, by: str = "operator", opened_ts: int | None = None,
                             timeout_s: float | None = None) -> Any:
        return await self._call("close", symbol=symbol, by=by, opened_ts=opened_ts,
                                timeout_s=min(timeout_s or self.timeout, self.timeout))

    async def balances(self) -> Any:
        return await self._call("balances")

    async def profit(self) -> Any:
        return await self._call("profit")

    async def why(self) -> Any:
        return await self._call("why")

    async def health(self) -> Any:
        """The engine's health verdict (asked of it: an attached console has no monitor of its own)."""
        return await self._call("health")


class RemoteHost:
    """The console's host for an engine in another process: the same shape as host.EngineHost. Closing it
    detaches; the engine goes on."""

    def __init__(self, settings: Settings, engine: RemoteEngine, bus: EventBus) -> None:
        self.settings = settings
        self.engine = engine
        self.bus = bus

    @property
    def earlier(self) -> list[Event]:
        """The engine's latest events before the console attached."""
        return self.engine.earlier

    def subscribe(self, maxlen: int) -> Subscription:
        """The engine's events from now on, relayed."""
        return self.bus.subscribe(maxlen=maxlen)

    async def start_control(self) -> None:
        return None  # the engine's own process serves its socket

    async def close(self) -> None:
        self.engine.request_stop()


async def attach(settings: Settings, more: Callable[[], bool] | None = None) -> RemoteHost:
    """The engine on settings' socket, connected to (asked on past CONNECT_TRIES while `more()`)."""
    bus = EventBus(WallClock())  # the engine's events arrive stamped; only the console's own are stamped here
    engine = RemoteEngine(settings.socket_path, bus, data_dir=settings.data_dir,
                          timeout=settings.control.request_timeout_s)
    try:
        await engine.connect(more)
    except StreamCut as exc:  # served, so not a full socket: what ended the stream, as far as it can be told
        raise ControlError(f"attaching failed {CONNECT_TRIES} times: {exc}") from None
    except Dropped:
        raise ControlError(f"the engine on {settings.socket_path} is there but busy: it closed the connection "
                           f"before answering, {CONNECT_TRIES} times (its control socket full: [control] "
                           "max_connections); try again, see `ffe ctl status`") from None
    except NoAnswer:
        raise ControlError(not_answering(settings.socket_path, settings.data_dir, settings.control.request_timeout_s,
                                         tries=CONNECT_TRIES)) from None
    except (FileNotFoundError, ConnectionRefusedError, EngineGone) as exc:
        raise ControlError(no_engine(settings.socket_path, settings.data_dir, why=str(exc))) from None
    return RemoteHost(settings, engine, bus)
