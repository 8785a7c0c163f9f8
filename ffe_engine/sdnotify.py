"""The systemd notification protocol (sd_notify), spoken when NOTIFY_SOCKET is set (a Type=notify service).

READY=1 once the engine has started and reconciled; WATCHDOG=1 from the main loop's own liveness stamp (at half of
WATCHDOG_USEC), so a hung loop stops the pings and systemd restarts the service; STOPPING=1 when the ordered stop
begins. Without NOTIFY_SOCKET every call does nothing.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Mapping


class SystemdNotifier:
    def __init__(self, now: Callable[[], float], environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self._now = now
        self._sock: socket.socket | None = None
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr  # "@name": the abstract namespace
        if addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s = int(usec) / 1e6 / 2 if usec.isdigit() and int(usec) > 0 and (
            not pid or pid == str(os.getpid())) else None
        self.ready_sent = False
        self._next_ping = 0.0

    @property
    def active(self) -> bool:
        return self._sock is not None

    def _send(self, text: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(text.encode(), self._addr)
        except OSError:
            pass  # the service manager went away or its queue is full: never the engine's problem

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))
        self.ready_sent = True

    def watchdog(self) -> None:
        """Called on every loop turn; pings at most once per half watchdog period, and only once READY."""
        if self.watchdog_s is None or not self.ready_sent:
            return
        now = self._now()
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_s
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
