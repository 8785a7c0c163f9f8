"""`ffe` processes for the tests, forked by tests/ffe_fork_server.py (its docstring says why and how) with the
interface of subprocess.Popen that the tests use: pid, returncode, poll, wait, send_signal, terminate, kill, and
an awaitable wait for tests on an event loop.

A command is forked only when the environment it is given starts Python as the server's started: the variables
Python and coverage read at start-up (PYTHON*, the locale's, the subprocess coverage collector's) the same. Any
other, and a command run with interpreter flags, is started by exec as before. TESTS_EXEC_FFE=1 in the suite's
environment starts every one by exec.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

SERVER = Path(__file__).with_name("ffe_fork_server.py")
# What Python, its site module and the coverage collector read once, at start-up: a forked child keeps the server's.
START_UP = ("PYTHON", "LC_", "LANG", "SUBPROCESS_COVERAGE_DIR", "COVERAGE_", "HOME", "VIRTUAL_ENV")


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


def _fd(stream: Any, default: int) -> tuple[int, IO | None]:
    """A descriptor for one of the child's standard streams, and the file opened for it here, if any."""
    if stream is None:
        return default, None
    if stream == subprocess.DEVNULL:
        f = open(os.devnull, "r+b")
        return f.fileno(), f
    if isinstance(stream, int):
        return stream, None
    return stream.fileno(), None


class ForkedProcess:
    """A running `ffe` forked by the server."""

    def __init__(self, address: str, args: list[str], *, env: dict[str, str], cwd: str | os.PathLike,
                 stdin: Any = None, stdout: Any = None, stderr: Any = None, pass_fds: tuple[int, ...] = (),
                 rlimit_as: int | None = None) -> None:
        self.args = args
        self.returncode: int | None = None
        opened: list[IO] = []
        fds = []
        for stream, default in ((stdin, 0), (stdout, 1), (stderr, 2)):
            fd, f = _fd(stream, default)
            fds.append(fd)
            if f is not None:
                opened.append(f)
        umask = os.umask(0)
        os.umask(umask)
        request = {"args": [str(a) for a in args[3:]], "env": env, "cwd": os.path.abspath(cwd), "umask": umask,
                   "fds": [0, 1, 2, *pass_fds], "rlimit_as": rlimit_as}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.sock.connect(address)
            socket.send_fds(self.sock, [json.dumps(request).encode()], [*fds, *pass_fds])
            reply = self.sock.recv(4096)
        finally:
            for f in opened:
                f.close()
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
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            finally:
                if self.returncode is None and self.sock.fileno() >= 0:
                    self.sock.settimeout(None)
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


def start(env: dict[str, str]) -> None:
    """The server started now, for commands run with `env`'s start-up variables."""
    _SERVER.address(env)


def popen(cmd: list[str], *, env: dict[str, str], cwd: str | os.PathLike, stdin: Any = None, stdout: Any = None,
          stderr: Any = None, pass_fds: tuple[int, ...] = (), rlimit_as: int | None = None,
          ) -> ForkedProcess | None:
    """`cmd` (`python -m ffe_cli ARGS`, as conftest.ffe_cmd makes it) forked; None when it must be exec'd."""
    if cmd[1:3] != ["-m", "ffe_cli"]:
        return None
    address = _SERVER.address(env)
    if address is None:
        return None
    return ForkedProcess(address, cmd, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                         pass_fds=pass_fds, rlimit_as=rlimit_as)


def run(cmd: list[str], *, env: dict[str, str], cwd: str | os.PathLike, timeout: float | None = None,
        stdin: Any = subprocess.DEVNULL, pass_fds: tuple[int, ...] = (), rlimit_as: int | None = None,
        ) -> subprocess.CompletedProcess | None:
    """subprocess.run(cmd, capture_output=True, text=True, ...) for a forked `ffe`; None when it must be exec'd."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = popen(cmd, env=env, cwd=cwd, stdin=stdin, stdout=out, stderr=err, pass_fds=pass_fds,
                     rlimit_as=rlimit_as)
        if proc is None:
            return None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(cmd, timeout or 0, _text(out), _text(err)) from None
        return subprocess.CompletedProcess(cmd, code, _text(out), _text(err))


def _text(f: IO[bytes]) -> str:
    """What subprocess's text mode makes of a process's output: the locale's encoding, universal newlines."""
    import io

    f.seek(0)
    return io.TextIOWrapper(io.BytesIO(f.read()), encoding=None, newline=None).read()
