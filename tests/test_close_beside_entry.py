"""The operator closes a position whose entry is still working at the exchange (filled in part, the rest open): a
close means flat, so the entry's rest is cancelled first and what it bought is sold with the rest of the position.
Left working, its rest would fill after the close and the position would come back while the operator thinks it
closed. Real parts: a live engine on the fake Binance through real ccxt."""

from __future__ import annotations

import pytest

from conftest import engine_session
from live_helpers import BTC, POST_ORDER, engine_loop, fx, wait_for  # noqa: F401
from test_live_books import assert_books_agree, climbing, resting_entry, strategy_settings


async def test_a_close_cancels_the_symbol_s_working_entry_first_and_sells_all_it_bought(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            entry = await resting_entry(e, fx)
            res = await e.close_position(BTC, by="test")
            assert res["accepted"], res
            assert entry in res.get("cancelled", []), res
            assert fx.open_order(entry) is None  # its rest no longer works at the exchange
            await wait_for(lambda: not e.orders.live, timeout=30, what="every order final")
        assert BTC not in e.portfolio.positions or e.portfolio.is_dust(BTC)
        assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-5)
        assert_books_agree(e, fx)
        sells = [r for r in fx.requests_to(POST_ORDER) if r.params.get("side") == "SELL"]
        assert len(sells) == 1
