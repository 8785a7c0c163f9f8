"""`ffe` processes for the tests, forked by tests/ffe_fork_server.py (its docstring says why and how), behind the
calls the tests make: `run`, `Popen` and `create_subprocess_exec` take the arguments of subprocess.run,
subprocess.Popen and asyncio.create_subprocess_exec and give what they give (a CompletedProcess; a process with
pid, returncode, poll, wait, communicate, send_signal, terminate, kill, and pipes where asked for).

A command is forked when it is `python -m ffe_cli ...` (conftest.ffe_cmd, no interpreter flags) and the environment
it is given starts Python as the server's started: the variables Python and coverage read at start-up (PYTHON*,
the locale's, the subprocess coverage collector's) the same. What a child does before it runs is given as Limits
(a preexec_fn the server's child applies as data); any other preexec_fn, or a command the server cannot start as
asked, is started by exec as before, as is every command when TESTS_EXEC_FFE=1 is in the suite's environment.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import ffe_fork_server

SERVER = Path(ffe_fork_server.__file__)
# What Python, its site module and the coverage collector read once, at start-up: a forked child keeps the server's.
START_UP = ("PYTHON", "LC_", "LANG", "SUBPROCESS_COVERAGE_DIR", "COVERAGE_", "HOME", "VIRTUAL_ENV")
# The resource limits a child inherits from its caller (a test lowers one for the engine it starts).
RLIMITS = tuple(name for name in dir(resource) if name.startswith("RLIMIT_"))


@dataclass(frozen=True)
class Limits:
    """A child's limits (ffe_fork_server.limit says each): a preexec_fn for an exec, data for the server."""
    fsize: int | None = None
    address_space: int | None = None
    no_permission_overrides: bool = False

    def __call__(self) -> None:
        ffe_fork_server.limit(asdict(self))


def _start_up(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(START_UP)}


class _Server:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.path = ""
        self.env: dict[str, str] = {}

    def address(self, env: dict[str, str]) -> str | None:
        """The server's socket, the server started on first use; None when `env` cannot be forked from it."""
        if os.environ.get("TESTS_EXEC_FFE") == "1":
            return None
        with self.lock:
            if self.proc is None:
                self.start(env)
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the ffe fork server ended (exit {self.proc.returncode})")
        return self.path if _start_up(env) == _start_up(self.env) else None

    def start(self, env: dict[str, str]) -> None:
        where = tempfile.mkdtemp(prefix="ffe-fork-")
        self.path = os.path.join(where, "server.sock")
        self.env = dict(env)
        # Its stdin is this worker's: it ends when the worker does. Its own output is the worker's stderr.
        self.proc = subprocess.Popen([sys.executable, str(SERVER), self.path], env=env, cwd=where,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready.strip() != b"ready":
            raise RuntimeError(f"the ffe fork server did not start (exit {self.proc.wait()})")
        atexit.register(self.stop, where)

    def stop(self, where: str) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for name in os.listdir(where):
            os.unlink(os.path.join(where, name))
        os.rmdir(where)


_SERVER = _Server()


def start(env: dict[str, str]) -> None:
    """The server started now, for commands run with `env`'s start-up variables."""
    _SERVER.address(env)


def _address(cmd: Any, env: dict[str, str] | None, preexec_fn: Any, kwargs: dict[str, Any]) -> str | None:
    """Where to fork `cmd` from; None when it is to be exec'd."""
    if not isinstance(cmd, (list, tuple)) or list(cmd[:3]) != [sys.executable, "-m", "ffe_cli"]:
        return None
    if preexec_fn is not None and not isinstance(preexec_fn, Limits):
        return None
    if set(kwargs) - {"cwd", "text", "universal_newlines", "close_fds", "start_new_session"}:
        return None  # input, encoding, user, process_group...: subprocess's own
    return _SERVER.address(dict(os.environ) if env is None else env)


class ForkedProcess:
    """A running `ffe` forked by the server: subprocess.Popen's interface. stdin, stdout and stderr are pipes where
    asked for (PIPE), binary unless `text`."""

    def __init__(self, address: str, args: list[str], *, env: dict[str, str] | None, cwd: Any = None,
                 stdin: Any = None, stdout: Any = None, stderr: Any = None, pass_fds: tuple[int, ...] = (),
                 preexec_fn: Limits | None = None, text: bool = False, universal_newlines: bool = False,
                 start_new_session: bool = False, close_fds: bool = True) -> None:
        self.args = args
        self.returncode: int | None = None
        where = os.path.abspath(cwd if cwd is not None else os.getcwd())
        if not os.path.isdir(where):  # refused here, as subprocess refuses it, not by a child that fails
            raise FileNotFoundError(2, "No such file or directory", str(cwd))
        self.stdin: IO | None = None
        self.stdout: IO | None = None
        self.stderr: IO | None = None
        text = text or universal_newlines
        mine: list[int] = []  # descriptors opened here for the child: closed here once it has them
        fds: list[int] = []
        for n, stream in enumerate((stdin, stdout, stderr)):
            if stream is None:
                fds.append(n)
            elif stream == subprocess.DEVNULL:
                fds.append(os.open(os.devnull, os.O_RDWR))
                mine.append(fds[-1])
            elif stream == subprocess.STDOUT:
                fds.append(fds[1])
            elif stream == subprocess.PIPE:
                r, w = os.pipe()
                child, here = (r, w) if n == 0 else (w, r)
                fds.append(child)
                mine.append(child)
                f: IO = open(here, "wb" if n == 0 else "rb")
                if text:
                    f = io.TextIOWrapper(f, write_through=n == 0)  # type: ignore[arg-type]
                setattr(self, ("stdin", "stdout", "stderr")[n], f)
            else:
                fds.append(stream if isinstance(stream, int) else stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        request = {"args": [str(a) for a in args[3:]], "env": dict(os.environ) if env is None else env,
                   "cwd": where, "umask": umask, "rlimits": {name: resource.getrlimit(getattr(resource, name))
                                                              for name in RLIMITS},
                   "fds": [0, 1, 2, *pass_fds], "new_session": start_new_session,
                   "limits": asdict(preexec_fn) if preexec_fn is not None else None}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.sock.connect(address)
            socket.send_fds(self.sock, [json.dumps(request).encode()], [*fds, *pass_fds])
            reply = self.sock.recv(4096)
        finally:
            for fd in mine:
                os.close(fd)
        if not reply:
            raise RuntimeError("the ffe fork server did not fork")
        self.pid: int = json.loads(reply)["pid"]

    def _ended(self, message: bytes) -> int:
        if not message:
            raise RuntimeError(f"the ffe fork server ended before pid {self.pid} did")
        self.returncode = os.waitstatus_to_exitcode(json.loads(message)["status"])
        self.sock.close()
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                message = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            self._ended(message)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.sock.settimeout(timeout)
            try:
                message = self.sock.recv(4096)
            except TimeoutError:
                self.sock.settimeout(None)
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
            self._ended(message)
        assert self.returncode is not None
        return self.returncode

    async def wait_async(self) -> int:
        """wait(), on the running event loop: the loop keeps serving while the process runs."""
        if self.returncode is None:
            loop = asyncio.get_running_loop()
            ended: asyncio.Future[None] = loop.create_future()
            fd = self.sock.fileno()
            loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
            try:
                await ended
            finally:
                loop.remove_reader(fd)
            self.poll()
        assert self.returncode is not None
        return self.returncode

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        """What the process wrote to its stdout and stderr pipes (None for one that is no pipe), read to their
        end; `input` written to its stdin pipe first, which is then closed."""
        if self.stdin is not None:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        got: dict[Any, list] = {}
        with selectors.DefaultSelector() as sel:
            for f in (self.stdout, self.stderr):
                if f is not None:
                    sel.register(f.fileno(), selectors.EVENT_READ, f)
                    got[f] = []
            while sel.get_map():
                ready = sel.select(timeout)
                if not ready:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in ready:
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        got[key.data].append(chunk)
                    else:
                        sel.unregister(key.fd)
        self.wait(timeout)
        out = [self._decoded(f, got[f]) if f is not None else None for f in (self.stdout, self.stderr)]
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        return out[0], out[1]

    @staticmethod
    def _decoded(f: IO, chunks: list[bytes]) -> Any:
        data = b"".join(chunks)
        return _text(data) if isinstance(f, io.TextIOWrapper) else data

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # ended since: reaped by the server
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> ForkedProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()
        self.wait()


def _text(data: bytes) -> str:
    """What subprocess's text mode makes of a process's output: the locale's encoding, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(data), encoding=None, newline=None).read()


def Popen(cmd: Any, *, env: dict[str, str] | None = None, stdin: Any = None, stdout: Any = None,  # noqa: N802
          stderr: Any = None, pass_fds: tuple[int, ...] = (), preexec_fn: Any = None,
          **kwargs: Any) -> ForkedProcess | subprocess.Popen:
    """subprocess.Popen(cmd, ...), forked where it can be."""
    address = _address(cmd, env, preexec_fn, kwargs)
    if address is None:
        return subprocess.Popen(cmd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=pass_fds,
                                preexec_fn=preexec_fn, **kwargs)
    return ForkedProcess(address, list(cmd), env=env, stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=pass_fds,
                         preexec_fn=preexec_fn, **kwargs)


def run(cmd: Any, *, env: dict[str, str] | None = None, capture_output: bool = False, timeout: float | None = None,
        check: bool = False, stdin: Any = None, stdout: Any = None, stderr: Any = None,
        pass_fds: tuple[int, ...] = (), preexec_fn: Any = None, **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, ...), forked where it can be. Captured output goes to unnamed files, read at the end."""
    address = _address(cmd, env, preexec_fn, kwargs)
    if address is None:
        return subprocess.run(cmd, env=env, capture_output=capture_output, timeout=timeout, check=check, stdin=stdin,
                              stdout=stdout, stderr=stderr, pass_fds=pass_fds, preexec_fn=preexec_fn, **kwargs)
    text = bool(kwargs.get("text") or kwargs.get("universal_newlines"))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        streams = {"stdout": stdout, "stderr": stderr}
        for name, f in (("stdout", out), ("stderr", err)):
            if capture_output or streams[name] == subprocess.PIPE:
                streams[name] = f
        proc = ForkedProcess(address, list(cmd), env=env, stdin=stdin, pass_fds=pass_fds, preexec_fn=preexec_fn,
                             **streams, **kwargs)

        def said(f: IO[bytes], stream: Any) -> Any:
            if stream is not f:
                return None
            f.seek(0)
            return _text(f.read()) if text else f.read()

        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(cmd, timeout or 0, said(out, streams["stdout"]),
                                            said(err, streams["stderr"])) from None
        done = subprocess.CompletedProcess(cmd, code, said(out, streams["stdout"]), said(err, streams["stderr"]))
    if check:
        done.check_returncode()
    return done


class AsyncForked:
    """asyncio.subprocess.Process's interface for a forked `ffe`: its pipes are asyncio streams."""

    def __init__(self, proc: ForkedProcess) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.stdin = self.stdout = self.stderr = None

    @classmethod
    async def start(cls, proc: ForkedProcess) -> AsyncForked:
        self = cls(proc)
        loop = asyncio.get_running_loop()
        for name in ("stdout", "stderr"):
            f = getattr(proc, name)
            if f is not None:
                reader = asyncio.StreamReader(loop=loop)
                await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), f)
                setattr(self, name, reader)
        return self

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    async def wait(self) -> int:
        return await self.proc.wait_async()

    async def communicate(self, input: bytes | None = None) -> tuple[bytes | None, bytes | None]:
        async def read(stream: asyncio.StreamReader | None) -> bytes | None:
            return await stream.read() if stream is not None else None

        out, err = await asyncio.gather(read(self.stdout), read(self.stderr))
        await self.wait()
        return out, err

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        self.proc.kill()


async def create_subprocess_exec(*cmd: Any, env: dict[str, str] | None = None, stdin: Any = None,
                                 stdout: Any = None, stderr: Any = None, pass_fds: tuple[int, ...] = (),
                                 preexec_fn: Any = None, **kwargs: Any) -> Any:
    """asyncio.create_subprocess_exec(*cmd, ...), forked where it can be."""
    address = _address(list(cmd), env, preexec_fn, kwargs)
    if address is None or stdin == subprocess.PIPE or kwargs.get("text") or kwargs.get("universal_newlines"):
        return await asyncio.create_subprocess_exec(*cmd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                                                    pass_fds=pass_fds, preexec_fn=preexec_fn, **kwargs)
    proc = ForkedProcess(address, list(cmd), env=env, stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=pass_fds,
                         preexec_fn=preexec_fn, **kwargs)
    return await AsyncForked.start(proc)
