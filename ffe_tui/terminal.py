"""The console's terminal: Textual's Linux driver, except for a terminal that goes away.

When an operator's SSH connection drops, the terminal is gone: every write to it fails (EIO). Textual's writer
thread dies on the first failed write, the queue of frames in front of it fills, and the next frame blocks the
event loop for good: the engine stops trading and never stops, the data directory stays locked and the console's
input thread spins on the ended input. Here the output swallows the failure instead, and the console is told once,
so that it stops the engine in order and ends, as it does on SIGHUP (which may come before, after, or never).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, TextIO

from textual.drivers.linux_driver import LinuxDriver


class TerminalOutput:
    """The terminal's stream as Textual's writer thread sees it: once a write or flush fails, what follows is
    dropped and `lost` is called, once."""

    def __init__(self, stream: TextIO, lost: Callable[[], None]) -> None:
        self.stream = stream
        self.lost = lost
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.stream.write(text)
            except OSError:
                self._went_away()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except OSError:
                self._went_away()

    def fileno(self) -> int:
        return self.stream.fileno()

    def _went_away(self) -> None:
        self.gone = True
        self.lost()


class ConsoleDriver(LinuxDriver):
    """LinuxDriver writing through a TerminalOutput. The app's `terminal_lost()` is called on its event loop when
    the terminal goes away (the writer thread must not wait for the loop: the loop may be waiting for it)."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        loop = asyncio.get_running_loop()
        self._file = TerminalOutput(self._file, lambda: loop.call_soon_threadsafe(app.terminal_lost))
