"""Two exits of one position asked for at the same moment (a stop-loss on the bar while the operator closes the
position, or the exit a Retry-After held going out as the strategy's sell does): what they sell together never
exceeds what the books hold. Against the fake Binance, whose account holds coins of its own besides ffe's: a second
full sell would not be refused there, and would sell the account holder's coins."""

from __future__ import annotations

import asyncio

from fake_exchange import Balance
from ffe_engine.model import OrderReason, Side
from ffe_engine.risk import OrderIntent
from live_helpers import BTC, fx, wait_for  # noqa: F401
from test_live_engine import running_live


async def test_two_exits_at_once_sell_no_more_than_the_position(tmp_path, fx):  # noqa: F811
    fx.balances["BTC"] = Balance(0.5)  # the account holder's own coins, not ffe's
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        bought = await e.operator_order(BTC, "buy", 0.01)
        assert bought["accepted"], bought
        await wait_for(lambda: e.portfolio.holding(BTC) is not None, timeout=20, what="the buy filled")
        held = e.portfolio.positions[BTC].quantity
        stop = OrderIntent(symbol=BTC, side=Side.SELL, quantity=held, reason=OrderReason.STOP_LOSS,
                           ref_price=30_000.0, reduce_only=True)
        await asyncio.gather(e.orders.submit(stop), e.close_position(BTC), return_exceptions=True)
        sold = sum(o.qty for o in fx.orders if o.side == "SELL")
        assert sold <= held + 1e-12, (sold, held, [(o.client_id, o.qty) for o in fx.orders if o.side == "SELL"])
