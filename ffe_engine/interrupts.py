"""SIGTERM and SIGINT during a command that stages files (backup, verify, restore): both raise KeyboardInterrupt
in the main thread, so the command's own clean-up runs (its staging removed) before `ffe` exits 130. Left to
Python, SIGTERM (what `kill` and systemd send) would end the process on the spot, its staging left behind.

A step that must not stop half way (a restore putting its files in place: moments) runs in `held()`: a signal
meanwhile interrupts nothing, and the command ends as it would have, right after.
"""

from __future__ import annotations

import contextlib
import signal
from types import FrameType
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
    holding = 0
    interrupted = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _State.holding or _State.interrupted:  # a second signal must not cut the clean-up of the first short
        return
    _State.interrupted = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Within: SIGTERM and SIGINT raise KeyboardInterrupt (main thread only, as Python's signal handlers)."""
    previous = {sig: signal.signal(sig, _on_signal) for sig in SIGNALS}
    _State.interrupted = False
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within: SIGTERM and SIGINT interrupt nothing."""
    _State.holding += 1
    try:
        yield
    finally:
        _State.holding -= 1
