"""An order whose answer was lost, that the exchange's lookups never find although its balances show it placed,
stays in doubt: it is never sent again. Meanwhile its symbol, the cash and the equity cannot be compared with the
exchange. That must not last: past a bound the order is itself what holds the engine, so that a withdrawal made
meanwhile (or any other difference) is not traded through."""

from __future__ import annotations

import asyncio

import pytest

from conftest import engine_session, ffe_env
from ffe_engine.control import request
from ffe_engine.errors import ControlError
from ffe_engine.reconcile import STUCK_SETTLE_WINDOWS
from live_helpers import (BTC, GET_ORDER, POST_ORDER, AsyncFfe, fx, paused_by_reconciliation,  # noqa: F401
                          engine_loop, reconciled_ok, rows, run_ffe_async, stored_events, wait_for)
from receiver import Receiver
from test_live_books import climbing, strategy_settings

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}


async def an_entry_the_exchange_loses(fx, e) -> str:
    """The strategy's entry, placed and filled, its answer lost and its lookups never finding it: in doubt for good
    (the balance shows it placed). Its client order id, once it is in doubt."""
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "error", times=100_000, status=400, code=-2013, msg="Order does not exist.")
    fx.market_clock.step()
    await wait_for(lambda: any(o.status.value == "in_doubt" for o in e.orders.live.values()), timeout=30,
                   what="the entry in doubt")
    (cid,) = list(e.orders.live)
    return cid


async def test_an_order_in_doubt_for_good_pauses_the_engine_instead_of_trading_through(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await reconciled_ok(db, "a reconciliation that agrees")
            # the entry is placed and filled, its answer lost; the exchange's lookups never find it
            cid = await an_entry_the_exchange_loses(fx, e)
            fx.balances["USDT"].free -= 250.0  # and quote leaves the account (a withdrawal)
            await paused_by_reconciliation(db)
            assert cid in e.orders.live and e.orders.live[cid].status.value == "in_doubt"
            assert any(d.get("client_order_id") == cid for d in e.reconcile_blocked), e.reconcile_blocked
        assert len(fx.orders) == 1  # never sent again


async def test_an_order_whose_lookups_cannot_reach_the_exchange_is_not_said_lost(tmp_path, fx):
    """Its answer lost, then its lookups failing (the exchange out of reach, the breaker open) past the bound: the
    exchange has not been asked, so nothing may say it did not find the order. The RECONCILE page said "not found
    at the venue, not sent again" and sent the operator to settle by hand an order the exchange had filled, which
    the first lookup that reached it found seconds later."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3},
                                 breaker={"recovery_timeout_s": 1.0})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await reconciled_ok(db, "a reconciliation that agrees")
            fx.fault(POST_ORDER, "drop_after")
            fx.fault(GET_ORDER, "5xx_not_executed", times=100_000)
            fx.market_clock.step()
            await wait_for(lambda: any(o.status.value == "in_doubt" for o in e.orders.live.values()), timeout=30,
                           what="the entry in doubt")
            (cid,) = list(e.orders.live)
            bound = STUCK_SETTLE_WINDOWS * e.venue.settle_s
            await asyncio.sleep(e.venue.settle_s + bound + 1.0)
            assert e.orders.live[cid].status.value == "in_doubt"
            assert e.orders.stuck_in_doubt(bound) == []
            fx.clear_faults(GET_ORDER)
            await wait_for(lambda: cid not in e.orders.live, timeout=30, what="the order found filled")
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        said = [d for r in stored_events(db, "reconcile") for d in r.get("differences") or []]
        assert not [d for d in said if d.get("kind") == "order_in_doubt"], said
        assert len(fx.orders) == 1  # never sent again


async def test_the_operator_is_told_what_holds_the_engine_and_what_lifts_it(tmp_path, fx):
    """Not "accept" (refused while the order is in doubt): the order, and that it lifts once the order settles."""
    hook = await Receiver().start()
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3},
                                 alerts={"webhook_url": hook.url + "/hook", **FAST})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await an_entry_the_exchange_loses(fx, e)
            await paused_by_reconciliation(db, timeout=60)
            pages = lambda: [r.body for r in hook.delivered if r.body.get("kind") == "RECONCILE"]  # noqa: E731
            await wait_for(lambda: pages(), timeout=15, what="the page")
            text = pages()[0]["text"]
            assert cid in text and "in doubt" in text and "ffe ctl accept" not in text, text
            with pytest.raises(ControlError, match="in doubt") as info:
                await e.resume(by="test")
            assert "accept" not in str(info.value)
    await hook.stop()


async def test_the_operator_settles_an_order_the_exchange_lost_and_only_what_is_left_holds_the_engine(tmp_path, fx):
    """The exchange placed and filled the entry, lost its answer and, for good, its record: lookups never find it,
    its balances show it placed. Neither `ffe ctl cancel` nor `ffe ctl accept` ends it; `ffe ctl settle` does,
    through the order path, with the price and quantity the operator gives, and nothing is sent to the exchange.
    Then only what still differs holds the engine, to be accepted."""
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
            cid = await an_entry_the_exchange_loses(fx, e)
            await paused_by_reconciliation(db, timeout=60)
            (placed,) = fx.orders
            assert placed.client_id == cid and placed.status == "FILLED"
            price, quantity = placed.quote_filled / placed.filled, placed.filled

            # the ways out there were: both refused while the order is in doubt
            accept = await ctl("accept")
            assert accept.proc.returncode == 1 and "in doubt" in accept.stderr, accept.stderr
            cancel = await ctl("cancel", cid, "--yes")
            assert cancel.proc.returncode == 1 and cid in e.orders.live, cancel.stdout + cancel.stderr

            # refused in one line, nothing done: an unknown order, no confirmation, a fill without its price
            unknown = await ctl("settle", "ffe-000000000000000000000000", "canceled", "--yes")
            assert unknown.proc.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
            assert "no order ffe-000000000000000000000000 in doubt" in unknown.stderr
            unconfirmed = await ctl("settle", cid, "filled", "--price", f"{price}", "--quantity", f"{quantity}")
            assert unconfirmed.proc.returncode == 2 and "--yes" in unconfirmed.stderr, unconfirmed.stderr
            unpriced = await ctl("settle", cid, "filled", "--quantity", f"{quantity}", "--yes")
            assert unpriced.proc.returncode == 2 and "--price" in unpriced.stderr, unpriced.stderr  # nothing sent
            assert cid in e.orders.live and e.orders.live[cid].status.value == "in_doubt"

            settled = await ctl("settle", cid, "filled", "--price", f"{price}", "--quantity", f"{quantity}",
                                "--yes")
            assert settled.proc.returncode == 0, settled.stdout + settled.stderr
            assert cid in settled.stdout and "filled" in settled.stdout, settled.stdout
            assert "reconciliation agrees" not in settled.stdout, settled.stdout  # the exchange's fee still differs
            assert cid not in e.orders.live
            assert rows(db, "SELECT status FROM orders") == [("filled",)]
            assert rows(db, "SELECT quantity, price FROM fills") == [(pytest.approx(quantity),
                                                                      pytest.approx(price))]
            (note,) = stored_events(db, "order_settled")
            assert (note["client_order_id"], note["outcome"], note["by"]) == (cid, "filled", "ctl")
            again = await ctl("settle", cid, "canceled", "--yes")  # settled: no longer in doubt
            assert again.proc.returncode == 1 and "in doubt" in again.stderr, again.stderr

            # the order no longer holds the engine; what still differs (the fee the exchange took) does, until
            # accepted: the engine stays PAUSED meanwhile
            await wait_for(lambda: e.reconcile_blocked and not any(
                d.get("kind") == "order_in_doubt" for d in e.reconcile_blocked), timeout=30,
                what="only the remaining differences hold the engine")
            assert e.state.value == "PAUSED"
            accepted = await ctl("accept")
            assert accepted.proc.returncode == 0, accepted.stdout + accepted.stderr
            resumed = await ctl("resume")
            assert resumed.proc.returncode == 0, resumed.stdout + resumed.stderr
            assert e.state.value == "RUNNING"
            checks = len(stored_events(db, "reconcile"))
            await wait_for(lambda: len(stored_events(db, "reconcile")) >= checks + 2, timeout=20,
                           what="two more reconciliations")
            assert e.reconcile_blocked == [] and e.state.value == "RUNNING"
            assert BTC in e.portfolio.positions
        assert len(fx.orders) == 1  # never sent again


async def test_a_settle_whose_reconciliation_sees_the_fee_once_does_not_say_it_agrees(tmp_path, fx):
    """Settled before any reconciliation held the engine for it: the reconciliation the settle runs sees the fee
    the exchange took as a difference for the first time (confirmed only on a later look). The operator is told
    a difference is being looked at, not that the books agree with the exchange."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await an_entry_the_exchange_loses(fx, e)
            assert e.reconcile_blocked == []
            (placed,) = fx.orders
            price, quantity = placed.quote_filled / placed.filled, placed.filled

            async def settled() -> dict | None:
                try:
                    return await e.settle_order(cid, "filled", quantity=quantity, price=price, by="test")
                except ControlError as exc:  # refused, nothing done, while the venue may still place it
                    if "within its settle window" in str(exc):
                        return None
                    raise

            answer = await wait_for(settled, timeout=30, what="the order settled past its settle window")
            assert answer["status"] == "filled" and answer["reconcile_blocked"] == []
            assert "agrees with" not in answer["reconcile"] and "difference" in answer["reconcile"], answer
        assert len(fx.orders) == 1  # never sent again


async def test_an_order_settled_canceled_that_the_exchange_filled_is_a_difference_to_accept(tmp_path, fx):
    """Settled `canceled` (through the control socket) while the exchange's balances hold its fill: the books and
    the exchange differ by that fill, which holds the engine (resume refused) until the operator accepts it."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3})
    db, sock = settings.db_path, settings.socket_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            cid = await an_entry_the_exchange_loses(fx, e)
            await paused_by_reconciliation(db, timeout=60)
            answer = await request(sock, "settle", {"id": cid, "outcome": "canceled", "by": "alice"})
            assert answer["ok"], answer
            assert answer["result"]["status"] == "canceled" and answer["result"]["filled"] == 0
            assert rows(db, "SELECT status FROM orders") == [("canceled",)] and rows(db, "SELECT * FROM fills") == []
            (note,) = stored_events(db, "order_settled")
            assert (note["outcome"], note["by"]) == ("canceled", "alice")
            assert "as if it had been placed" in note["detail"], note
            await wait_for(lambda: [d["kind"] for d in e.reconcile_blocked if d["kind"] == "position"], timeout=30,
                           what="the fill the exchange holds, a difference")
            refused = await request(sock, "resume", {})
            assert not refused["ok"] and "accept" in refused["error"], refused
            assert (await request(sock, "accept", {}))["ok"]
            assert (await request(sock, "resume", {}))["ok"] and e.state.value == "RUNNING"
        assert len(fx.orders) == 1  # never sent again


async def test_the_venue_s_word_wins_over_a_settle_by_hand(tmp_path, fx):
    """The exchange finds the order again just as the operator settles it: its word is recorded (its own fill, at
    its own price), the operator's is refused, and nothing is settled by hand."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await an_entry_the_exchange_loses(fx, e)
            await paused_by_reconciliation(db, timeout=60)
            (placed,) = fx.orders
            fx.clear_faults(GET_ORDER)  # the exchange's lookups find it again
            with pytest.raises(ControlError, match="nothing settled"):
                await e.settle_order(cid, "filled", quantity=placed.filled, price=1.0, by="test")
            assert cid not in e.orders.live
            assert rows(db, "SELECT status FROM orders") == [("filled",)]
            (price,) = rows(db, "SELECT price FROM fills")[0]
            assert price == pytest.approx(placed.quote_filled / placed.filled)  # the venue's, not the operator's
            assert stored_events(db, "order_settled") == []
        assert len(fx.orders) == 1


async def test_an_order_within_its_settle_window_is_not_settled_by_hand(tmp_path, fx):
    """Within its settle window the request may still reach the exchange: no settle then."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            cid = await an_entry_the_exchange_loses(fx, e)
            with pytest.raises(ControlError, match="within its settle window"):
                await e.settle_order(cid, "canceled", by="test")
            assert e.orders.live[cid].status.value == "in_doubt" and stored_events(db, "order_settled") == []
