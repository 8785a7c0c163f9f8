"""`ffe ctl settle ID filled` takes the fill's fee as the exchange's account shows it (`--fee F`, in the currency
`--fee-currency` names: the symbol's base coin, as Binance takes a buy's fee from the coins bought, or its quote
currency, the default, as `ffe ctl sold-by-hand` takes a sale's). Booked with the fill and recorded with the settle,
the books then equal the exchange's balances: no difference is left to accept, and an exit sells the whole position.
Without it the books held the fee's coins beyond the account's, and every exit was refused for want of funds.

Real parts: a live engine opened in-process on the fake Binance (its own SQLite database and control socket), its
own loop running; `ffe ctl` as subprocesses."""

from __future__ import annotations

import pytest

from conftest import engine_session, ffe_env
from fake_exchange import LISTINGS
from ffe_engine import fmt
from live_helpers import (BTC, GET_ORDER, AsyncFfe, engine_loop, fx, paused_by_reconciliation, rows,  # noqa: F401
                          run_ffe_async, stored_events, wait_for)
from test_live_books import climbing, strategy_settings
from test_reconcile_stuck_in_doubt import an_entry_the_exchange_loses


async def test_a_settle_with_the_fee_in_the_base_coin_leaves_the_books_equal_to_the_exchange(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3})
    db = settings.db_path

    async def ctl(*args: str) -> AsyncFfe:
        return await run_ffe_async(tmp_path, "ctl", *args, "--data-dir", str(settings.data_dir), env=ffe_env(),
                                   name="ctl")

    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            # the entry placed and filled, its answer lost, the exchange's record of it too
            cid = await an_entry_the_exchange_loses(fx, e)
            await paused_by_reconciliation(db, timeout=60)
            (placed,) = fx.orders
            price, quantity = placed.quote_filled / placed.filled, placed.filled
            (trade,) = placed.trades
            assert trade.commission_asset == "BTC" and trade.commission > 0  # taken from the coins bought
            fee = trade.commission

            # the fee's currency is the symbol's base or quote: another is refused, nothing settled
            other = await ctl("settle", cid, "filled", "--quantity", f"{quantity}", "--price", f"{price}", "--fee",
                              "0.01", "--fee-currency", "BNB", "--yes")
            assert other.proc.returncode == 1 and "BNB" in other.stderr, other.stdout + other.stderr
            assert e.orders.live[cid].status.value == "in_doubt"

            settled = await ctl("settle", cid, "filled", "--quantity", f"{quantity}", "--price", f"{price}",
                                "--fee", f"{fee}", "--fee-currency", "BTC", "--yes")
            assert settled.proc.returncode == 0, settled.stdout + settled.stderr
            assert f"fee {fmt.qty(fee, 8)} BTC" in settled.stdout, settled.stdout
            assert rows(db, "SELECT quantity, price, fee_base FROM fills") == [
                (pytest.approx(quantity), pytest.approx(price), pytest.approx(fee))]
            (note,) = stored_events(db, "order_settled")
            assert (note["outcome"], note["fee"], note["fee_currency"]) == ("filled", pytest.approx(fee), "BTC"), note

            # the books hold what the account holds: nothing is left to accept
            assert e.portfolio.positions[BTC].quantity == pytest.approx(fx.balances["BTC"].total, abs=1e-12)
            assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total, abs=1e-6)
            checks = len(stored_events(db, "reconcile"))
            await wait_for(lambda: len(stored_events(db, "reconcile")) >= checks + 3 and e.reconcile_blocked == [],
                           timeout=30, what="reconciliations that agree")
            assert [d for r in stored_events(db, "reconcile")[checks:] for d in r["differences"]] == []

            # an exit sells the whole position: every coin the account holds of it, to the amount step (the
            # exchange's lookups answer again, for the orders it has kept)
            fx.clear_faults(GET_ORDER)
            closed = await ctl("close", BTC, "--yes")
            assert closed.proc.returncode == 0, closed.stdout + closed.stderr
            await wait_for(lambda: BTC not in e.portfolio.positions or e.portfolio.is_dust(BTC), timeout=30,
                           what="the position closed")
            (sold,) = [o for o in fx.orders if o.side == "SELL"]
            step = float(LISTINGS["BTCUSDT"]["step"])
            assert sold.status == "FILLED" and quantity - fee - sold.filled < step, (sold, quantity - fee)
            # what is left is less than a step, in the account and in the books alike
            left = fx.balances["BTC"].total
            assert left < step
            assert (e.portfolio.positions[BTC].quantity if BTC in e.portfolio.positions else 0.0) == pytest.approx(
                left, abs=1e-12)
