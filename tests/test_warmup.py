"""The warm-up's history is fed to the indicators without holding the event loop: the console's keys (q, the kill
switch) and the control socket are served while a long history is read, not after it."""

from __future__ import annotations

import asyncio

from ffe_engine.market.simulated import SimulatedFeed

from pipeline_helpers import make_settings, open_pipeline


class CountedHistory(SimulatedFeed):
    """The simulated market, whose warm-up history says how much of it the engine has taken so far."""

    taken = 0
    size = 0

    def history(self, n: int):  # type: ignore[override]
        candles = super().history(n)
        self.size = len(candles)

        def counted():
            for c in candles:
                self.taken += 1
                yield c

        return counted()


async def test_a_long_warm_up_lets_the_other_tasks_run_while_it_is_fed(tmp_path):
    settings = make_settings(tmp_path, engine={"warmup_bars": 3000})
    feed = CountedHistory(list(settings.engine.symbols), settings.engine.timeframe_ms, seed=3, speed=0.0)
    seen: list[int] = []
    opening = asyncio.ensure_future(open_pipeline(settings, feed=feed))
    while not opening.done():  # another task of the loop: what it sees of the warm-up each time it runs
        seen.append(feed.taken)
        await asyncio.sleep(0)
    p = opening.result()
    try:
        assert feed.size == 6000 and feed.taken == 6000
        during = sorted({n for n in seen if 0 < n < feed.size})
        assert len(during) >= 5, f"the loop ran only at {during} of {feed.size} warm-up candles"
        assert p.engine.started
    finally:
        await p.close()
