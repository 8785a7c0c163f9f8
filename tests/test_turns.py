"""Turns (turns.py): one task at a time per key, the task whose turn it is let in again, other keys not held, and
nothing kept once no task holds or waits for a key."""

from __future__ import annotations

import asyncio

from ffe_engine.turns import Turns


async def test_one_task_at_a_time_per_key_and_the_holder_let_in_again():
    turns = Turns()
    seen: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with turns.of("a"):
            seen.append("first in")
            async with turns.of("a"):  # its own turn again: not held by itself
                seen.append("first again")
            first_in.set()
            await release.wait()
            seen.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with turns.of("a"):
            seen.append("second in")

    async def other_key() -> None:
        await first_in.wait()
        async with turns.of("b"):
            seen.append("b in")

    tasks = [asyncio.ensure_future(f()) for f in (first, second, other_key)]
    await first_in.wait()
    await asyncio.sleep(0.05)
    assert seen == ["first in", "first again", "b in"]  # the second waits for the first; another key does not
    release.set()
    await asyncio.gather(*tasks)
    assert seen == ["first in", "first again", "b in", "first out", "second in"]
    assert len(turns) == 0  # nothing kept of the keys once no task holds or waits for them
