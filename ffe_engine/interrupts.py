"""SIGTERM and SIGINT during a command that stages files (backup, verify, restore): both raise KeyboardInterrupt
in the main thread, so the command's own clean-up runs (its staging removed) before `ffe` exits 130. Left to
Python, SIGTERM (what `kill` and systemd send) would end the process on the spot, its staging left behind.

A step that must not stop half way (a restore putting its files in place: moments) runs in `held()`: a signal
meanwhile interrupts nothing, and the command ends as it would have, right after.

A backtest runs in `run_cancelled_once`: its first ^C cancels the run, which closes its records in order; the
presses after it (a terminal sends ^C in bursts) are ignored, where asyncio.run would raise KeyboardInterrupt
wherever the close had got to (a frame half sent to the record writer, which then waits for the rest for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import FrameType
from typing import Any, Coroutine, Iterator, TypeVar

T = TypeVar("T")

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


def run_cancelled_once(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), SIGINT cancelling it once: it ends in order, then KeyboardInterrupt is raised. SIGINT is
    ignored from the first on, for the rest of the process (which is ending); and once `main` has returned, until
    the caller puts back the handler it had (what is left is to say what it did: a ^C then cuts nothing short)."""
    task: asyncio.Task[Any] | None = None
    interrupted = False

    async def tracked() -> T:
        nonlocal task
        task = asyncio.current_task()
        if interrupted:
            raise KeyboardInterrupt
        return await main

    with asyncio.Runner() as runner:
        loop = runner.get_loop()

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            nonlocal interrupted
            interrupted = True
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if task is not None:
                loop.call_soon_threadsafe(task.cancel)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            result = runner.run(tracked())
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            signal.signal(signal.SIGINT, previous)
            raise
        except BaseException:
            if not interrupted:
                signal.signal(signal.SIGINT, previous)
            raise
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return result
