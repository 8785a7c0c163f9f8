"""Ending background tasks in an orderly stop."""

from __future__ import annotations

import asyncio
from typing import Any, Iterable


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
