"""The local control socket: `ffe ctl ...` and `ffe attach` talk to a running engine through it.

One JSON object per line each way. Request: {"cmd": "pause", "args": {...}, "data_dir": "/abs/data", "instance":
"1a2b3c"} ("data_dir" and "instance" are optional: when given, an engine on another data directory, or another run
of an engine, refuses the command). Answer: {"ok": true,
"result": ..., "engine": {...}} or {"ok": false, "error": "...", "engine": {...}}; "engine" names the engine that
answered (instance, data directory, pid).

The socket belongs to one engine: a lock file beside it (`<socket>.lock`) is held while the engine runs, a socket
left by a dead engine is removed only when nobody answers on it, and a stopping engine removes the socket only if
the path is still the one it bound. The socket is created private (umask 077 around bind) and every connection's
peer is checked (SO_PEERCRED): only the engine's own user and root are served.

Connections are bounded (`[control] max_connections`), idle ones are closed (`idle_timeout_s`), and one more
connection is always kept for a `halt`. Event-stream subscribers (`ffe attach`) that stop reading are disconnected
once what waits for one passes `stream_buffer_kb` plus the size of its stream's beginning (the snapshot and the
earlier events): the engine never waits for a reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable


from . import fmt, logs
from .api import STREAM, dispatch
from .errors import KINDS, ControlError, FfeError, StartError, directory_in_place
from .redact import Redactor

if TYPE_CHECKING:  # the client side (`ffe ctl`) needs no engine and no events: it starts faster without them
    from .engine import Engine
    from .events import Event, Subscription

log = logs.get_logger("ffe.control")

MAX_REQUEST_BYTES = 64 * 1024  # one request line; anything longer is refused and the connection closed
MAX_ANSWER_BYTES = 1 << 24  # what a client reads in one answer line (a status with many orders)
STREAM_INTERVAL_S = 0.02  # events are sent to subscribers in batches at most this often
PROBE_TIMEOUT_S = 2.0  # how long a starting engine waits for an engine already on its socket path
# Connections taken from the kernel at once, and the kernel's queue of connections not yet taken: small, so a
# flood never holds more descriptors than the limit plus this (each one past the limit is closed at once).
ACCEPT_BACKLOG = 32
STREAM_END = "stream_end"  # the last line of an event stream: the engine is stopping, and whether it crashed
# An event stream begins with the engine's snapshot, then this line and the `count` events before it (the latest
# EARLIER_EVENTS, bars left out): what an attaching console shows in its log as already past.
SNAPSHOT = "snapshot"
EARLIER = "earlier"
EARLIER_EVENTS = 1000
DATA_LOCK = "ffe.lock"  # in the data directory: held by its engine (host.acquire_lock), naming its pid
# How long a stop waits for the commands under way (a backup writing its file) to be carried out and answered, so
# their callers hear how they ended and their records are written before the store closes.
COMMANDS_AT_STOP_S = 10.0
KEEP_PATH_S = 2.0  # how often the server looks that its socket is still at its path (made again where removed)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 16  # besides these, one connection is kept for a halt
    idle_timeout_s: float = 30.0  # a connection that sends no request for this long is closed
    # What may wait for one subscriber besides its stream's beginning, before it is disconnected.
    stream_buffer_bytes: int = 4 << 20


def _jsonable(x: Any) -> Any:
    if hasattr(x, "__dataclass_fields__"):
        return {k: _jsonable(getattr(x, k)) for k in x.__dataclass_fields__}
    if isinstance(x, Enum):
        return x.value
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def engine_identity(instance: str, data_dir: Path) -> dict[str, Any]:
    """What every answer carries so the caller knows which engine it reached."""
    return {"instance": instance, "data_dir": os.path.realpath(data_dir), "pid": os.getpid()}


def describe(identity: Any) -> str:
    """`engine pid 123 on /srv/ffe/data (instance 1a2b3c)`, from an answer's "engine"; escaped as fmt.printable
    escapes words from outside: a directory's name may hold an escape sequence a terminal would act on."""
    if not isinstance(identity, dict):
        return "an unnamed engine"
    return fmt.printable(f"engine pid {identity.get('pid')} on {identity.get('data_dir')} "
                         f"(instance {identity.get('instance')})")


# ---------------------------------------------------------------------------------------------------- the socket path
def socket_lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


# What the socket's lock file holds once its engine has served on the path (emptied when an engine claims it): a
# client finding no socket there while that engine runs knows it was removed and is being made again, not that the
# engine is still starting.
SERVING = b"serving\n"
# What it holds once that engine has stopped serving (its socket removed as it stops): a client finding no socket
# then knows the engine is stopping, and neither waits for the socket nor takes it for one starting.
STOPPED = b"stopped\n"


def _mark(fd: int, word: bytes) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, word, 0)
    except OSError:  # a full disk: a client then takes a removed socket for a start, as before
        pass


def _mark_serving(fd: int) -> None:
    _mark(fd, SERVING)


def _lock_says(path: Path) -> bytes | None:
    """What `path`'s lock file says (SERVING, STOPPED, or b"" for an engine not serving yet); None when it is gone
    (removed with the socket by a cleaner: the engine makes both again)."""
    try:
        with open(socket_lock_path(path), "rb") as f:
            return f.read(max(len(SERVING), len(STOPPED)))
    except FileNotFoundError:
        return None
    except OSError:
        return b""


def _may_have_served(path: Path) -> bool:
    """Whether the engine holding the data directory may serve on `path` again: its lock file says it served, or is
    gone. One the lock file names as not serving yet is starting; one it names as stopped is stopping."""
    return _lock_says(path) in (SERVING, None)


async def claim(path: Path) -> int:
    """Hold `<socket>.lock` for as long as an engine serves `path` (the returned descriptor); StartError naming the
    engine that holds it. The lock file is never removed: removing a lock file races with the next one to take
    it. A host claims its socket before its engine starts, so a refused start changes nothing: what is at the path
    is looked at here too (a file, a directory, another program's socket), not only once the engine has started."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:  # a file in the way, a loop of symbolic links: the configuration's fault, one line
        raise StartError(f"control socket {path}: its directory {path.parent} cannot be made "
                         f"({exc.strerror or exc}): choose another [control] socket") from None
    try:
        fd = _take_lock(path)
    except IsADirectoryError:
        raise directory_in_place(socket_lock_path(path)) from None
    if fd is None:
        raise StartError(f"control socket {path} belongs to {await _holder(path)}; give each engine its own "
                         "[control] socket (empty: <data dir>/ffe.sock)")
    try:
        os.ftruncate(fd, 0)  # not serving yet (an engine before this one may have left SERVING in it)
        _refuse_in_the_way(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _take_lock(path: Path) -> int | None:
    """`<socket>.lock` opened (made where missing) and held: its descriptor, or None when another engine holds it."""
    fd = os.open(socket_lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _take_lock_serving(path: Path) -> int | None:
    """`<socket>.lock` made again where it was removed, held and saying SERVING from the moment it exists at its path:
    made under a name of its own, then linked there. A client that finds the socket gone reads it, and would take
    an empty one for an engine still starting, refused at once instead of waiting for the socket. Where another
    lock file was made there meanwhile, or the file system makes no links, one is taken as _take_lock takes it (None
    when another engine holds it)."""
    lock = socket_lock_path(path)
    made = lock.with_name(f"{lock.name}.{os.getpid()}")
    fd = os.open(made, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file of its own: nobody else holds it
        _mark_serving(fd)
        os.link(made, lock)
        return fd
    except OSError:  # one made there meanwhile (FileExistsError), or a file system without hard links
        os.close(fd)
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(made)
    taken = _take_lock(path)
    if taken is not None:
        _mark_serving(taken)
    return taken


def _answers(path: Path) -> bool:
    """Whether something accepts connections on path. A refused connection means nobody listens: a socket left
    by an engine that died. A stopped (SIGSTOP) engine still accepts: its socket is not stale."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT_S)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        raise StartError(f"control socket {path}: cannot tell whether an engine is on it ({exc.strerror}); "
                         "remove it or choose another [control] socket") from None
    finally:
        probe.close()
    return True


def _refuse_in_the_way(path: Path) -> bool:
    """StartError for what at `path` the server could not replace: anything but a socket, or a socket some other
    program answers on (the socket's lock is held: no ffe engine serves it). Returns whether a socket nobody
    answers on is there (left by an engine that died)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise StartError(f"control socket {path} exists and is not a socket; remove it or choose another "
                         "[control] socket")
    if _answers(path):
        raise StartError(f"control socket {path} is in use by a process that answers on it; stop it or choose "
                         "another [control] socket")
    return True


def _clear_stale(path: Path) -> None:
    if _refuse_in_the_way(path):
        path.unlink()  # nobody answers: left by an engine that died (and we hold the socket's lock)


def _bind(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is private (0600) from the moment it exists: no window before a chmod
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise StartError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    sock.listen(ACCEPT_BACKLOG)
    sock.setblocking(False)
    return sock


def _same_file(path: Path, ident: tuple[int, int] | None) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return ident is not None and (st.st_dev, st.st_ino) == ident


def peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process on the other end (Linux SO_PEERCRED); None where it cannot be read."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    uid: int = struct.unpack("3i", raw)[1]
    return uid


# ---------------------------------------------------------------------------------------------------- the server
class ControlServer:
    def __init__(self, engine: Engine, path: Path, *, data_dir: Path | None = None, instance: str = "-",
                 limits: Limits = Limits(), earlier: Iterable[Event] = (), redactor: Redactor | None = None) -> None:
        self.engine = engine
        # The configured secrets, taken out of every answer: an error quotes what it was asked (a symbol, an id)
        # and an operator may have pasted a key there.
        self.redactor = redactor or Redactor()
        self.path = Path(path)
        self.limits = limits
        self.identity = engine_identity(instance, data_dir if data_dir is not None else self.path.parent)
        self._server: asyncio.AbstractServer | None = None
        self._lock_fd: int | None = None
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket this server created
        self._uid = os.geteuid()
        self._open = 0  # connections holding one of the max_connections places
        self._reserved: asyncio.StreamWriter | None = None  # the connection in the place kept for a halt
        self._halting = False  # ... and it is carrying out its halt
        self._full_logged = False
        self._writers: set[asyncio.StreamWriter] = set()
        # Each event-stream subscriber, with the size of its stream's beginning (room it has besides the buffer).
        self._streams: dict[asyncio.StreamWriter, int] = {}
        self._fan_out: asyncio.Task[None] | None = None
        self._end: bytes | None = None  # every stream's last line, once the engine's run has ended (end_streams)
        self._sub: Subscription | None = None  # the fan-out's subscription to the bus
        self._pending: list[Event] = []  # published, waiting for the database to commit them
        # The latest events but bars, for the next subscriber to begin with; from `earlier` (the engine's start) on.
        self._earlier: deque[bytes] = deque((event_line(ev) for ev in earlier), maxlen=EARLIER_EVENTS)
        self._dropped = 0  # subscribers disconnected for not reading, not yet logged
        self._under_way: dict[asyncio.Future[None], str] = {}  # commands being carried out, set done once answered
        self._keeper: asyncio.Task[None] | None = None  # makes the socket again where it was removed (_keep_path)
        self._path_said = ""  # what was last logged of the path (each said once, until it changes)

    async def start(self, claimed: int | None = None) -> None:
        """Serve on the path; `claimed` is the descriptor from `claim` (this server closes it at stop)."""
        self._lock_fd = claimed if claimed is not None else await claim(self.path)
        try:
            _clear_stale(self.path)
            sock = _bind(self.path)
            st = os.lstat(self.path)
            self._bound = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=MAX_REQUEST_BYTES,
                                                           backlog=ACCEPT_BACKLOG)
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        if self._lock_fd is not None:
            _mark_serving(self._lock_fd)
        self._fan_out = asyncio.ensure_future(self._send_events())
        self._keeper = asyncio.ensure_future(self._keep_path())
        log.info("control socket ready", path=str(self.path), **self.identity)

    async def _keep_path(self) -> None:
        """The socket made again where it was removed (a cleaner of /tmp or /run, a stray rm): without it no `ffe ctl`,
        its kill switch included, and no attached console reaches the engine, and `ffe ctl status` would take it for
        one still starting. Only where nothing is: a path another process put something at is left to it (said
        once). The connections open on the socket removed go on being served."""
        while self._server is not None:
            await asyncio.sleep(KEEP_PATH_S)
            if self._server is None:
                return
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                await self._make_again()
                continue
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != self._bound:
                self._say_path("control socket path holds another file: left to it; `ffe ctl` and consoles do not "
                               "reach this engine until it is removed")

    async def _make_again(self) -> None:
        try:
            if not self._lock_held():
                self._say_path("control socket was removed, and another engine has claimed its path since: left to "
                               "it; `ffe ctl` and consoles do not reach this engine")
                return
            sock = _bind(self.path)
        except (StartError, OSError) as exc:  # its directory unwritable: said once, tried again
            self._say_path(f"control socket was removed and cannot be made again: {exc}")
            return
        st = os.lstat(self.path)
        old, self._server = self._server, await asyncio.start_unix_server(
            self._handle, sock=sock, limit=MAX_REQUEST_BYTES, backlog=ACCEPT_BACKLOG)
        self._bound = (st.st_dev, st.st_ino)
        if old is not None:
            old.close()  # listens no more (no path leads to it); its connections stay open
        self._say_path("control socket was removed: made again")
        self._path_said = ""

    def _lock_held(self) -> bool:
        """Whether this server holds the socket's lock file at its path: the one it claimed, or, where that was
        removed (its directory with it: a cleaner of /tmp), one made and claimed again. False when another engine
        claimed a new one meanwhile."""
        lock = socket_lock_path(self.path)
        try:
            if self._lock_fd is not None and os.path.samestat(os.fstat(self._lock_fd), os.stat(lock)):
                return True
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = _take_lock_serving(self.path)
        if fd is None:
            return False
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._lock_fd = fd
        return True

    def _say_path(self, said: str) -> None:
        if said != self._path_said:
            self._path_said = said
            log.warning(said, path=str(self.path))

    async def commands_done(self) -> None:
        """The commands under way carried out and answered, for up to COMMANDS_AT_STOP_S: the engine's stop awaits
        this before its venue is closed and its books stored (Engine.before_stop). The socket goes on answering:
        a console shows an engine whose run has ended, and is asked about it."""
        if self._under_way:
            commands = sorted(set(self._under_way.values()))
            log.info("the stop waits for control commands under way", commands=commands, up_to_s=COMMANDS_AT_STOP_S)
            _, late = await asyncio.wait(list(self._under_way), timeout=COMMANDS_AT_STOP_S)
            if late:
                log.warning("control commands still under way when the stop went on without them: their callers "
                            "are answered as they end, if the process is still there", up_to_s=COMMANDS_AT_STOP_S,
                            commands=sorted(set(self._under_way.values())))

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        if self._server is not None:
            self._server.close()  # no new connection; those open keep being served while the stop waits
            self._server = None
        await self.commands_done()
        self.end_streams()
        for writer in list(self._writers):
            if not writer.transport.is_closing():
                writer.transport.abort()
        if self._lock_fd is not None:
            _mark(self._lock_fd, STOPPED)  # before the socket goes: a client finding it gone is told at once
        if _same_file(self.path, self._bound):
            # Only the socket this engine bound: if the path is now another engine's, it stays.
            try:
                self.path.unlink()
            except OSError as exc:  # its directory made read-only: the stop goes on, the next start replaces it
                log.warning("control socket could not be removed: the next start replaces it", path=str(self.path),
                            error=exc.strerror or str(exc))
        self._bound = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def end_streams(self) -> None:
        """The engine's run has ended: every event stream ends with its last line, and one asked for from now on
        ends with it after its beginning. The socket goes on answering requests while its process keeps it (a
        console shows the stopped engine). An attached console learns how the engine ended from that line, not
        from the connection dropping (which is what a crash or a kill -9 looks like); closing, unlike aborting,
        sends it first. The events committed since the fan-out's last turn go before it."""
        if self._end is not None:
            return
        if self._fan_out is not None:
            self._fan_out.cancel()
            self._fan_out = None
        from .events import BarEvent, encode

        events = self._committed(self._sub.drain() if self._sub is not None else [])
        last = [event_line(ev) for ev in events]
        self._earlier.extend(line for ev, line in zip(events, last) if ev.name != BarEvent.name)
        crashed = self.engine.crashed
        self._end = encode({"event": STREAM_END,
                            "crashed": None if crashed is None else f"{type(crashed).__name__}: {crashed}"}) + b"\n"
        for writer in list(self._streams):
            if not writer.transport.is_closing():
                writer.transport.write(b"".join(last) + self._end)
                writer.transport.close()
        self._streams.clear()

    # ------------------------------------------------------------------ connections
    def _take_place(self, writer: asyncio.StreamWriter) -> str | None:
        """A place for a new connection: one of max_connections, else the one kept for a halt. That one goes to
        the newest connection (one still waiting for its request gives it up), so a halt always gets in unless
        another halt is being carried out."""
        if self._open < self.limits.max_connections:
            self._open += 1
            self._full_logged = False
            return "normal"
        if not self._full_logged:  # once per episode: a flood of connections is not a flood of log lines
            log.warning("control connections at their limit: only a halt is served until some close",
                        max_connections=self.limits.max_connections)
            self._full_logged = True
        if self._reserved is not None:
            if self._halting:
                return None
            self._reserved.transport.abort()
        self._reserved = writer
        return "reserved"

    def _give_back(self, place: str | None, writer: asyncio.StreamWriter) -> None:
        if place == "normal":
            self._open -= 1
        elif place == "reserved" and self._reserved is writer:
            self._reserved = None
            self._halting = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        place: str | None = None
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid is not None and uid not in (self._uid, 0):
                log.warning("control connection from another user refused", uid=uid)
                writer.write(b'{"ok": false, "error": "refused: not the engine\'s user"}\n')
                return
            place = self._take_place(writer)
            if place is None:
                await self._reply(writer, {"ok": False, "error": "too many control connections; try again"})
                return
            await self._serve(reader, writer, halt_only=place == "reserved")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except Exception as exc:  # one line with its type; the socket stays up for the next caller
            log.warning("control connection failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._give_back(place, writer)
            self._writers.discard(writer)
            self._streams.pop(writer, None)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, halt_only: bool) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self.limits.idle_timeout_s)
            except asyncio.TimeoutError:
                return  # idle: its place goes to someone else
            except ValueError:  # no newline within the limit
                await self._reply(writer, {"ok": False,
                                           "error": f"a request is one line of at most {MAX_REQUEST_BYTES} bytes"})
                return
            if not line:
                return
            req, answer = self._parse(line)
            if req is not None:
                cmd = req["cmd"]
                if halt_only:
                    # The place kept for a halt also answers a health check: a watchdog (`ffe ctl health`, cron)
                    # must not take a socket full of connections for an engine that is down, and restart it.
                    if cmd not in ("halt", "health"):
                        await self._reply(writer, {"ok": False, "error": "too many control connections: only "
                                                                         "halt and health are served now; try again"})
                        return
                    self._halting = cmd == "halt"
                if cmd == STREAM:
                    await self._stream(reader, writer)
                    return
                await self._carry_out(writer, cmd, req.get("args"))
            else:
                await self._reply(writer, answer)
            if halt_only:
                return  # the place kept for a halt serves one request

    def _parse(self, line: bytes) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The request, or None and the answer that refuses it."""
        try:
            req = json.loads(line)
        except RecursionError:  # the parser's own recursion: the request nests far past any command's arguments
            return None, {"ok": False, "error": "not a JSON request: nested too deep"}
        except ValueError as exc:
            return None, {"ok": False, "error": f"not a JSON request: {type(exc).__name__}"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return None, {"ok": False, "error": 'a request is {"cmd": NAME, "args": {...}}'}
        wanted = req.get("data_dir")
        if wanted is not None:
            if not isinstance(wanted, str) or "\x00" in wanted:
                return None, {"ok": False, "error": "data_dir must be a path"}
            try:
                os.fsencode(wanted)
            except UnicodeEncodeError:  # a lone surrogate is valid JSON but no file name: realpath would raise
                return None, {"ok": False, "error": f"data_dir must be a path: {fmt.unprintable(wanted)} is in no "
                                                    "file name"}
            if os.path.realpath(wanted) != self.identity["data_dir"]:
                where = os.path.realpath(self.path)  # the engine's relative path would name another file elsewhere
                return None, {"ok": False, "error": f"the engine on {where} runs on data directory "
                                                    f"{self.identity['data_dir']}, not {wanted}: nothing done"}
        # A client attached to one run of an engine (`ffe attach`) names it: once that run has stopped, a newer one
        # on the same socket refuses what was meant for the old one (a re-arm asked about its halt). The state
        # serial a re-arm carries restarts at 0 with each run (TradingState.changes), so it cannot tell runs apart:
        # this does.
        instance = req.get("instance")
        if instance is not None and instance != self.identity["instance"]:
            return None, {"ok": False, "error": f"this is engine instance {self.identity['instance']}, not "
                                                f"{str(instance)[:40]}: the engine this was meant for has stopped; "
                                                "nothing done"}
        return req, {}

    async def _carry_out(self, writer: asyncio.StreamWriter, cmd: str, args: Any) -> None:
        """Carry out one command and answer it; a stop that begins meanwhile waits for both (COMMANDS_AT_STOP_S)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._under_way[done] = cmd
        try:
            await self._reply(writer, await self._answer(cmd, args))
        finally:
            del self._under_way[done]
            done.set_result(None)

    async def _reply(self, writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        answer = self.redactor.value(answer)
        writer.write((json.dumps({**answer, "engine": self.identity}, default=str) + "\n").encode())
        await asyncio.wait_for(writer.drain(), self.limits.idle_timeout_s)

    async def _answer(self, cmd: str, args: Any) -> dict[str, Any]:
        try:
            result = await dispatch(self.engine, cmd, args)
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except FfeError as exc:  # said to the operator as it is (a backup refused, records that cannot be written)
            log.warning("control command failed", cmd=cmd, error=str(exc))
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # the engine failed to carry it out: the caller is told what, the socket stays up
            log.warning("control command failed", cmd=cmd, error=f"{type(exc).__name__}: {exc}")
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "result": _jsonable(result)}

    # ------------------------------------------------------------------ the event stream
    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The snapshot, the latest events before it, then every event from now on, one JSON line each, until the
        client goes away or falls behind (ffe attach)."""
        from .events import encode

        earlier = list(self._earlier)
        beginning = (encode({"event": SNAPSHOT, "snapshot": _jsonable(self.engine.snapshot()),
                             "engine": self.identity}) + b"\n"
                     + encode({"event": EARLIER, "count": len(earlier)}) + b"\n" + b"".join(earlier))
        # Written whole, and room besides the buffer: a subscriber that has not read it yet has had no chance to, one
        # reading it while events come is reading, and its size (up to EARLIER_EVENTS events) is the engine's doing.
        if self._end is not None:  # the run has ended: nothing more comes
            writer.transport.write(beginning + self._end)
            writer.transport.close()
            return
        writer.transport.write(beginning)
        self._streams[writer] = len(beginning)  # at once: the events not yet in `earlier` are sent to it as they come
        if self._fan_out is None or self._fan_out.done():
            self._fan_out = asyncio.ensure_future(self._send_events())
        while await reader.read(4096):
            pass  # a subscriber sends nothing more; its end of file ends the stream

    async def _send_events(self) -> None:
        """One bus subscription for all subscribers, for as long as the socket is served: each event is encoded
        once and written to every subscriber without waiting for any; one whose unsent events pass the limit is
        disconnected. The latest events but bars are kept for the next subscriber to begin with."""
        from .events import BarEvent

        sub = self._sub = self.engine.bus.subscribe(maxlen=20_000)
        try:
            while True:
                batch = self._committed(await sub.get_batch(timeout=STREAM_INTERVAL_S if self._pending else 1.0))
                if self._dropped:  # one line for all those dropped since the last: a flood is not a flood of lines
                    log.warning("event stream subscribers disconnected: not reading", count=self._dropped,
                                limit_bytes=self.limits.stream_buffer_bytes)
                    self._dropped = 0
                if not self._streams:
                    batch = [ev for ev in batch if ev.name != BarEvent.name]  # nobody to draw a chart from them
                if not batch:
                    continue
                try:
                    lines = [event_line(ev) for ev in batch]
                except Exception as exc:  # an event that cannot be sent must not end the stream for the rest
                    log.warning("events not sent to subscribers", count=len(batch),
                                error=f"{type(exc).__name__}: {exc}")
                    continue
                self._earlier.extend(line for ev, line in zip(batch, lines) if ev.name != BarEvent.name)
                if not self._streams:
                    continue
                data = b"".join(lines)
                for writer in list(self._streams):
                    if writer.transport.is_closing():
                        self._streams.pop(writer, None)
                    else:
                        self._send(writer, data)
                await asyncio.sleep(STREAM_INTERVAL_S)
        finally:
            self.engine.bus.unsubscribe(sub)

    def _committed(self, batch: list[Event]) -> list[Event]:
        """What may be sent now, of the events waiting and `batch`, in order: up to the first audited one the
        database has not committed yet. An event is a record of what happened once it is committed; until then a
        kill would leave it unsaid (the next start says what happened instead), so no subscriber is told it."""
        pending = self._pending + batch if self._pending else batch
        committed = self.engine.store.committed_seq
        n = 0
        for ev in pending:
            if ev.audit and ev.seq > committed:
                break
            n += 1
        self._pending = pending[n:]
        return pending[:n]

    def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write to one subscriber without waiting; it is disconnected once what it has not read yet passes the
        limit and the size of its stream's beginning: one that reads nothing, once the limit's worth of events came
        after the beginning."""
        writer.transport.write(data)
        if writer.transport.get_write_buffer_size() <= self.limits.stream_buffer_bytes + self._streams[writer]:
            return
        self._streams.pop(writer, None)
        writer.transport.abort()
        self._dropped += 1


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def starting_engine(data_dir: Path) -> int | None:
    """The pid of an engine that holds `data_dir` (its lock file names it, and it runs), for a client whose
    control socket does not answer: the socket is made once the engine has started, and a live start waits on its
    exchange first. None when no engine does."""
    try:
        written = (Path(data_dir) / DATA_LOCK).read_text(errors="replace").split()
    except OSError:
        return None
    if not written or not written[0].isdigit() or written[1:2] not in ([], ["engine"]):
        return None
    pid = int(written[0])
    if not pid_alive(pid):
        return None
    try:  # where the system says what a process runs: an ffe (not a process that took a dead engine's pid)
        if b"ffe" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    except OSError:
        pass
    return pid


def not_answering(socket: Path, data_dir: Path, within: float, *, tries: int = 1, late: str = "") -> str:
    """What a client says when the engine took its connection but did not answer in time (stopped, or busy): how
    to halt it all the same, not the command that just went unanswered. `late`: what may still happen when it
    does (the command, waiting in the socket)."""
    pid = starting_engine(data_dir)
    at = f" (pid {pid})" if pid is not None else ""
    times = f", asked {tries} times" if tries > 1 else ""
    then = f"; {late}" if late else ""
    return (f"no answer from the engine on {socket}{at} within {within:g}s{times} (stopped or busy?){then}; "
            f"{halt_by_signal(data_dir, pid)}")


def halt_by_signal(data_dir: Path, pid: int | None) -> str:
    """How to halt an engine that does not answer on its socket: the kill switch by signal (docs/runbook.md)."""
    if pid is None:
        return f"`kill -USR1` on the engine's pid (in {Path(data_dir) / DATA_LOCK}) halts it as soon as it runs"
    return f"`kill -USR1 {pid}` halts it as soon as it runs (`kill -CONT {pid}` if it was stopped with SIGSTOP)"


def carrying_out(socket: Path, action: str, within: float, identity: Any) -> str:
    """What a client says when its command went unanswered in time while the engine answers a status at once: it
    runs, and is carrying the command out; not stopped, nothing to wake. What it waits on (the exchange, a disk that
    hangs under its records, another control under way) the client cannot tell: none is named as the cause."""
    return (f"the {describe(identity)} is running but did not answer the {action} on {socket} within {within:g}s: it "
            "is carrying it out and waits on something it needs (the exchange, its records, another control under "
            "way: not known here which); it takes effect, or fails, once that is done; `ffe ctl status` and `ffe ctl "
            "orders` show what it did")


def no_engine(socket: Path, data_dir: Path, why: str = "") -> str:
    """What a client says when nobody answers on the control socket: an engine starting, or none (`why`, what the
    connection said, beside it)."""
    pid = starting_engine(data_dir)
    if pid is None:
        return f"no engine is running on {socket}" + (f" ({why})" if why else "")
    other = _not_a_socket(socket)
    if other is not None:  # put there under the running engine, which leaves it alone (ControlServer)
        return (f"the engine on {data_dir} (pid {pid}) runs, but {socket} is not its control socket ({other} is "
                f"there): remove {socket} and the engine makes its socket again within seconds; `kill -USR1 {pid}` "
                "halts it now")
    said = _lock_says(socket)
    if said == STOPPED:
        return (f"the engine on {data_dir} (pid {pid}) is stopping: it has closed {socket} and takes no commands "
                "any more, nor a kill switch by signal: its stop ends it in order")
    if said in (SERVING, None):  # removed under it, and not made again by the time the client gave up
        return (f"the engine on {data_dir} (pid {pid}) runs, but its control socket {socket} was removed and it has "
                f"not made it again (it does within seconds of running: stopped, or starved of CPU?); "
                f"{halt_by_signal(data_dir, pid)}")
    return (f"the engine on {data_dir} (pid {pid}) is starting: it answers on {socket} once started (a live "
            f"start waits for its exchange); `kill -USR1 {pid}` halts it now, before it trades")


def _not_a_socket(path: Path) -> str | None:
    """What is at `path` where a socket is due ("a file", "a directory", "a link", ... as errors.KINDS names them);
    None for a socket or nothing. The path itself is looked at: a link is said as one, wherever it points."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a link"
    return next((what for test, what in KINDS if test(mode)), "a file")


async def _holder(path: Path) -> str:
    """The engine serving path, named by its own answer (for an error message: best effort)."""
    try:
        answer = await request(path, "status", timeout=PROBE_TIMEOUT_S)
    except (OSError, ValueError):
        return "another running engine"
    return describe(answer.get("engine"))


def event_line(ev: Event) -> bytes:
    """One event for a remote console: name, seq, ts and the event's fields."""
    from .events import encode

    rec = {"event": ev.name, "seq": ev.seq, "ts": ev.ts, "audit": ev.audit}
    rec.update(ev.payload())
    return encode(rec) + b"\n"


# ---------------------------------------------------------------------------------------------------- the client
async def connect(path: Path) -> socket.socket:
    """A connected socket to path. While the engine's queue of new connections is full (it is busy, or stopped)
    this keeps trying: the caller's timeout decides how long."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.connect(str(path))
                return sock
            except BlockingIOError:
                await asyncio.sleep(0.05)
    except BaseException:
        sock.close()
        raise


async def request(path: Path, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0,
                  data_dir: Path | None = None, instance: str | None = None) -> dict[str, Any]:
    """Send one command and read its answer, all within `timeout` (asyncio.TimeoutError past it). With
    `data_dir`, an engine on another data directory refuses the command instead of carrying it out; with
    `instance`, any engine but that run does."""
    message: dict[str, Any] = {"cmd": cmd, "args": args or {}}
    if data_dir is not None:
        message["data_dir"] = os.path.realpath(data_dir)
    if instance is not None:
        message["instance"] = instance

    waiting_for_path = False

    async def connected() -> socket.socket:
        # A socket removed under a running engine is made again within KEEP_PATH_S of the engine's running
        # (ControlServer._keep_path): a command sent meanwhile (the kill switch above all) waits for it, while the
        # engine that served on it holds the data directory, rather than taking that engine for gone or still
        # starting; for as long as the command's timeout, as an engine slow to answer is waited for (one starved of
        # CPU gets to its socket late). One still starting has not served yet: it is said at once.
        nonlocal waiting_for_path
        while True:
            try:
                sock = await connect(path)
                waiting_for_path = False
                return sock
            except FileNotFoundError:
                if data_dir is None or not _may_have_served(path) or starting_engine(data_dir) is None:
                    raise
                waiting_for_path = True
                await asyncio.sleep(0.1)

    async def exchange() -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(sock=await connected(), limit=MAX_ANSWER_BYTES)
        try:
            writer.write((json.dumps(message) + "\n").encode())
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        if not line:
            raise ConnectionResetError("the engine closed the connection without answering")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ValueError(f"not an answer: {line[:80]!r}")
        return answer

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        if waiting_for_path:  # never sent: no socket to send it on (no_engine says why)
            raise FileNotFoundError(errno.ENOENT, "no control socket", str(path)) from None
        raise


async def command_or_probe(path: Path, cmd: str, args: dict[str, Any], timeout: float,
                           data_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Send a command and wait `timeout` in all for its answer: (the answer, None), or, left unanswered, (None, the
    engine's answer to a status asked beside it, or None when it answered that neither). The status tells an engine
    that runs and is carrying the command out (waiting on the exchange, on another control) from one stopped or
    frozen; it is asked once half of `timeout` has gone by unanswered (a command answered sooner needs none) and
    waited for only until `timeout` ends, so the caller gives up when it said it would. Connection errors of the
    command are raised as `request` raises them."""
    command = asyncio.ensure_future(request(path, cmd, args, timeout=timeout, data_dir=data_dir))
    done, _ = await asyncio.wait({command}, timeout=timeout / 2)
    if done:
        return command.result(), None
    probe = asyncio.ensure_future(request(path, "status", {}, timeout=timeout / 2, data_dir=data_dir))
    try:
        await asyncio.wait({command})  # bounded by the command's own timeout
        if not isinstance(command.exception(), TimeoutError):
            return command.result(), None  # answered late, or failed as `request` fails: the probe is not needed
        if not probe.done():  # an answer after the timeout is not waited for, nor taken: the caller gives up now
            return None, None
        try:
            return None, probe.result()
        except (OSError, ValueError):  # TimeoutError is an OSError
            return None, None
    finally:
        probe.cancel()
        if probe.done() and not probe.cancelled():
            probe.exception()  # looked at: a failure of a probe not needed is no "exception never retrieved"
