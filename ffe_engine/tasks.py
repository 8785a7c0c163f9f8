"""Ending background tasks in an orderly stop, and the writes a stop must not cut off."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Iterable, TypeVar

T = TypeVar("T")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every task, then wait for each to end. A stop goes on whatever they raise: each task reports its own
    failures while it runs, and at a stop there is no one left to tell."""
    pending = list(tasks)
    for t in pending:
        t.cancel()
    for t in pending:
        try:
            await t
        except (asyncio.CancelledError, Exception):
            pass


async def to_its_end(aw: Awaitable[T]) -> T:
    """`aw` run to its end even when the caller is cancelled meanwhile (a stop past its time, a bound on cancels):
    a write cut off half done would leave the books in memory ahead of the records. The cancel takes effect once it
    has ended."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result

