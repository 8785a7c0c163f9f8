"""One task at a time per key, for the order path's writes of an order (execution.py): a fill being booked changes
the order's amounts in memory before it is committed, and a write of the order's state by another task meanwhile
(a cancel's end, a send's answer) would commit those amounts without the fill. The task whose turn it is may ask
for it again (a nested call), and is not held by itself."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator


class Turns:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # per key, the tasks holding or waiting for its lock: dropped at none
        self._owner: dict[str, asyncio.Task[Any] | None] = {}

    def __len__(self) -> int:
        """How many keys a task holds or waits for."""
        return len(self._users)

    @contextlib.asynccontextmanager
    async def of(self, key: str) -> AsyncIterator[None]:
        me = asyncio.current_task()
        if me is not None and self._owner.get(key) is me:
            yield
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                self._owner[key] = me
                try:
                    yield
                finally:
                    self._owner.pop(key, None)
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
