"""Two entries asked for at the same moment (the operator's buy while the strategy's goes out) are checked against
the risk limits one after the other: with room for one more position, only one is sent. Against the fake
Binance."""

from __future__ import annotations

import asyncio

from conftest import engine_session
from live_helpers import fx, live_settings, next_bar  # noqa: F401


async def test_two_entries_at_once_do_not_pass_the_open_positions_limit_together(tmp_path, fx):  # noqa: F811
    settings = live_settings(tmp_path, fx, engine={"symbols": ["BTC/USDT", "ETH/USDT"]},
                             risk={"max_open_positions": 1, "max_concentration_pct": 100.0})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert await next_bar(e, fx) == 2
        await e.resume(by="test")
        got = await asyncio.gather(e.operator_order("BTC/USDT", "buy", 0.001),
                                   e.operator_order("ETH/USDT", "buy", 0.01))
        assert sum(1 for g in got if g["accepted"]) == 1, got
        assert len([o for o in fx.orders if o.side == "BUY"]) == 1, [(o.client_id, o.symbol) for o in fx.orders]
