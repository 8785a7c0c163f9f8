"""Starts `ffe` processes for a test worker by forking them from a process that has imported ffe already.

An `ffe` process spends most of its CPU importing: about 0.2 s of Python's and ffe's modules before its first line,
and the suite starts some two thousand of them. This server imports those modules once, then forks a child for
each command it is asked to run. The child is a process of its own, as a `python -m ffe_cli` would be: it gets the
caller's arguments, environment, directory, umask, resource limits and open files (its stdin, stdout and stderr,
and the descriptors passed on), builds its standard streams on them as Python's start-up does, and runs `ffe_cli` as
`__main__`. Its
exit is the interpreter's own (atexit handlers, non-daemon threads joined, the exit code of its SystemExit, death by
an uncaught ^C). Signals sent to its pid reach it; it is nobody's child but this server's, which reaps it and tells
the caller its wait status.

Usage: python tests/ffe_fork_server.py SOCKET (tests/forked_ffe.py starts it, one per test worker, and is its only
client). The protocol, over a SOCK_SEQPACKET unix socket, one connection per process: the caller sends one message,
JSON {"args", "env", "cwd", "umask", "rlimits", "fds", "new_session", "limits"} with the descriptors named by "fds" attached;
the server answers {"pid": N} once the child is forked, and {"status": S} (its wait status) once it has ended. The server ends when its stdin, a pipe from the test worker, does (the worker
has ended); children still running are left to run, as subprocesses of an ended worker would be.
"""

from __future__ import annotations

import gc
import io
import json
import os
import resource
import selectors
import socket
import sys

PRELOAD = ("ffe_cli.main", "ffe_cli.commands", "ffe_engine.kernel", "ffe_engine.host", "ffe_engine.backtest",
           "ffe_engine.venues.ccxt_loader", "ffe_engine.venues.ccxt_venue")
MAX_MESSAGE = 1 << 20
MAX_FDS = 32


def preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    from ffe_engine.venues.ccxt_loader import exchange_class

    exchange_class("binance")  # the exchange the tests' fake speaks


def serve(path: str) -> tuple[dict, list[int]]:
    """Serve until killed; in a forked child, return what it is to run."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(128)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    sel.register(sys.stdin, selectors.EVENT_READ, "caller")
    conns: dict[int, socket.socket] = {}  # by fd: connections with a request still to come, or a child running
    exits: dict[int, tuple[int, socket.socket]] = {}  # by pidfd: the child's pid and its caller's connection
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "caller":
                if not os.read(0, 4096):
                    raise SystemExit(0)
            elif key.data is None:
                conn, _ = listener.accept()
                conns[conn.fileno()] = conn
                sel.register(conn, selectors.EVENT_READ, "request")
            elif key.data == "request":
                conn = conns[key.fd]
                sel.unregister(conn)
                try:
                    message, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, MAX_FDS)
                except OSError:
                    message, fds = b"", []
                if not message:
                    del conns[key.fd]
                    conn.close()
                    continue
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:
                    conns.pop(key.fd)
                    for other in conns.values():
                        other.close()
                    for pidfd in exits:
                        os.close(pidfd)
                    sel.close()
                    listener.close()
                    conn.close()
                    return request, fds
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                exits[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "exit")
                try:
                    conn.send(json.dumps({"pid": pid}).encode())
                except OSError:
                    pass
            else:
                pid, conn = exits.pop(key.fd)
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.send(json.dumps({"status": status}).encode())
                except OSError:
                    pass
                del conns[conn.fileno()]
                conn.close()


def place(fds: list[int], targets: list[int]) -> None:
    """The received descriptors at the numbers the caller gave them; every other descriptor closed."""
    high = max([*fds, *targets, 2]) + 1
    moved = [_dup_above(fd, high) for fd in fds]
    for fd in fds:
        os.close(fd)
    for src, dst in zip(moved, targets):
        os.dup2(src, dst, inheritable=True)
        os.close(src)
    keep = sorted(set(targets) | {0, 1, 2})
    start = 0
    for fd in keep:
        if fd > start:
            os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))


def _dup_above(fd: int, low: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)


def streams() -> None:
    """sys.stdin, sys.stdout and sys.stderr on descriptors 0-2, as Python's start-up makes them: line-buffered on
    a terminal, written through under PYTHONUNBUFFERED, with the encoding and error handlers this interpreter chose
    at its own start (the caller's locale variables are the server's: tests/forked_ffe.py checks)."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))

    def text(fd: int, mode: str, like: io.TextIOWrapper) -> io.TextIOWrapper:
        raw = io.FileIO(fd, mode, closefd=False)
        tty = raw.isatty()
        if mode == "rb":
            buffered: io.BufferedIOBase = io.BufferedReader(raw)
        elif unbuffered:
            buffered = raw  # type: ignore[assignment]
        else:
            buffered = io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding=like.encoding, errors=like.errors,  # type: ignore[arg-type]
                                line_buffering=tty and mode != "rb", write_through=unbuffered and mode != "rb")

    sys.stdin = sys.__stdin__ = text(0, "rb", sys.__stdin__)  # type: ignore[misc, arg-type]
    sys.stdout = sys.__stdout__ = text(1, "wb", sys.__stdout__)  # type: ignore[misc, arg-type]
    sys.stderr = sys.__stderr__ = text(2, "wb", sys.__stderr__)  # type: ignore[misc, arg-type]


def limit(limits: dict) -> None:
    """What a child of the tests is limited to before it runs (tests/forked_ffe.py's Limits, as data): a file size
    (SIGXFSZ ignored: a failed write, not a killed process), an address space, and, as root, no capability that
    passes files' permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER dropped from its bounding set), so a
    directory or file made read-only refuses it for real, as it would any user."""
    import signal

    if limits.get("fsize") is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize"], limits["fsize"]))
    if limits.get("address_space") is not None:
        resource.setrlimit(resource.RLIMIT_AS, (limits["address_space"], limits["address_space"]))
    if limits.get("no_permission_overrides") and os.geteuid() == 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2, 3):
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: none of them comes back at an exec
                raise OSError(ctypes.get_errno(), f"cannot drop capability {cap}")
        # Nor does this process keep them: an exec would take them from the bounding set, a fork keeps its own.
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        data = (ctypes.c_uint32 * 6)()  # two of (effective, permitted, inheritable)
        if libc.capget(header, data) != 0:
            raise OSError(ctypes.get_errno(), "cannot read the capabilities")
        kept = ~0b1110 & 0xFFFFFFFF  # bits 1-3: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        data[0] &= kept
        data[1] &= kept
        if libc.capset(header, data) != 0:
            raise OSError(ctypes.get_errno(), "cannot drop the capabilities")


def become(request: dict, fds: list[int]) -> None:
    """This forked child made into the process the caller asked for."""
    if request.get("new_session"):
        os.setsid()
    place(fds, request["fds"])
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    tz = os.environ.get("TZ")
    os.environ.clear()
    os.environ.update(request["env"])
    if os.environ.get("TZ") != tz:
        import time

        time.tzset()
    for name, (soft, hard) in request["rlimits"].items():  # those the caller set for what it starts
        which = getattr(resource, name)
        if resource.getrlimit(which) != (soft, hard):
            resource.setrlimit(which, (soft, hard))
    limit(request.get("limits") or {})
    streams()
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = request["cwd"]  # as `python -m` puts the directory it was started in first


if __name__ == "__main__":
    sock_path = sys.argv[1]
    preload()
    gc.collect()
    gc.freeze()  # the children would otherwise copy every page the collector walks
    req, received = serve(sock_path)
    become(req, received)
    del sock_path, req, received
    import runpy

    runpy.run_module("ffe_cli", run_name="__main__", alter_sys=True)
