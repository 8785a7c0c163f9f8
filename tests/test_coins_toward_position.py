"""Coins the account held before ffe's first start are the reconciliation baseline: what counts toward the books'
position is the account's balance less it. Every check that weighs the account's coins against a position (a
reconciliation's differences, an accept's refusal over coins gone, a sale booked by hand, what the operator is told
to do) counts them so: an accept that weighed the whole balance took a sale made by hand for coins still there,
moved the baseline down over the operator's own coins, and then refused the sale's booking.

The same balances come from the operator withdrawing coins of their own, the position untouched: ffe cannot tell the
two apart, the operator can. The plain accept is refused naming both (`ffe ctl accept --own-coins`, which lowers the
baseline by what left and keeps the position; `ffe ctl sold-by-hand`, which books the sale); --own-coins is refused
where the baseline cannot cover what left."""

from __future__ import annotations

import json

import pytest

from conftest import engine_session
from fake_exchange import Balance
from ffe_engine.model import EngineState
from ffe_engine.reconcile import BASELINE_KEY
from live_helpers import (BTC, a_difference_of, engine_loop, fx, live_env, reconcile_twice,  # noqa: F401
                          reconcile_until, rows, run_ffe_async, stored_events, wait_for)
from test_live_books import (assert_books_agree, climbing, controlled_settings, strategy_entry,
                             strategy_settings)

OWN = 1.0  # BTC the operator held on the exchange before ffe first started: more than any position ffe takes
TABLES = {"engine": {"order_poll_s": 0.1}}


def books_equal_account(e, fx, own: float) -> None:
    """The books' cash is the account's, and their position the account's coins less the operator's own."""
    pos = e.portfolio.positions.get(BTC)
    assert (pos.quantity if pos else 0.0) == pytest.approx(fx.balances["BTC"].total - own, abs=1e-9)
    assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total, abs=0.005)


@pytest.mark.parametrize("own", [OWN, 0.0])
async def test_an_accept_over_coins_sold_by_hand_is_refused_and_the_sale_is_booked_as_the_account_shows_it(
        tmp_path, fx, own):
    """Half the position's coins sold on the exchange by hand: `ffe ctl accept` is refused (exit 1, one line naming
    what counts toward the position and the command that books the sale), nothing changed, with the operator's own
    coins in the account as without them. `ffe ctl sold-by-hand` then books the sale, the books equal the account
    again (the operator's coins left out), and an exit after it sells the position's coins, never the operator's."""
    climbing(fx)
    fx.balances["BTC"].free = own
    settings = controlled_settings(tmp_path, fx, **TABLES)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            assert (await e.store.get_kv(BASELINE_KEY))["BTC"] == pytest.approx(own)
            await strategy_entry(e, fx)
            held = e.portfolio.positions[BTC].quantity
            sold = round(held * 0.5, 5)
            fx.balances["BTC"].free -= sold
            fx.balances["USDT"].free += sold * 30_000.0 - 1.5  # the sale, less the exchange's fee
            assert [d["kind"] for d in await reconcile_twice(e)] == ["position", "cash", "equity"], e.reconcile_blocked
            baseline, blocked = await e.store.get_kv(BASELINE_KEY), list(e.reconcile_blocked)

            accept = await run_ffe_async(tmp_path, "ctl", "accept", env=live_env(fx), name="accept")
            assert accept.proc.returncode == 1, accept.stdout + accept.stderr
            (line,) = accept.stderr.strip().splitlines()
            assert "nothing accepted" in line and f"fewer coins than the books' {BTC} position" in line, line
            assert f"sold-by-hand {BTC}" in line, line
            if own:
                assert f"{held - sold:.8g} toward the position, its baseline +1" in line, line
            assert await e.store.get_kv(BASELINE_KEY) == baseline and e.reconcile_blocked == blocked
            assert "accepted" not in [r["status"] for r in stored_events(db, "reconcile")]
            assert e.portfolio.positions[BTC].quantity == held

            sale = await run_ffe_async(tmp_path, "ctl", "sold-by-hand", BTC, "--quantity", f"{sold}", "--price",
                                       "30000", "--fee", "1.5", "--yes", env=live_env(fx), name="sold")
            assert sale.proc.returncode == 0, sale.stdout + sale.stderr
            assert "reconciliation agrees with the venue" in sale.stdout, (sale.stdout, e.reconcile_blocked)
            assert e.portfolio.positions[BTC].quantity == pytest.approx(held - sold, abs=1e-9)
            books_equal_account(e, fx, own)
            assert await reconcile_twice(e) == [] and e.reconcile_blocked == []
            assert await e.store.get_kv(BASELINE_KEY) == baseline

            assert await e.resume(by="test") is EngineState.RUNNING
            report = await e.flatten()
            await wait_for(lambda: not e.orders.live, timeout=30, what="the closing order ended")
        assert report["failed"] == [] and e.portfolio.holding(BTC) is None, report
        # the operator's coins are all there, and of the position no more than dust below the amount step
        assert 0.0 <= fx.balances["BTC"].total - own < e.venue.market(BTC).amount_step
        assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total, abs=0.005)
    ((t_qty, t_reason),) = rows(db, "SELECT quantity, reason FROM trades WHERE reason = 'by_hand'")
    assert t_qty == sold
    # who booked it: in each of the sale's `order` records, and in its journaled intent
    ((cid, intent),) = rows(db, "SELECT client_order_id, intent FROM orders WHERE reason = 'by_hand'")
    assert json.loads(intent)["by"] == "ctl"
    said = [r for r in stored_events(db, "order") if r["client_order_id"] == cid]
    assert [r["status"] for r in said] == ["new", "filled"] and {r.get("by") for r in said} == {"ctl"}, said


async def test_the_operator_s_own_coins_sold_with_no_position_are_accepted_and_no_sale_is_asked_for(tmp_path, fx):
    """Without a position, coins of the operator's own sold on the exchange (the account now below its baseline)
    are no coins of ffe's gone: the engine is held for the difference, told to accept it (not to book a sale of a
    position it does not hold), and the accept takes the account as it is."""
    fx.balances["BTC"].free = OWN
    settings = strategy_settings(tmp_path, fx, **TABLES)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.balances["BTC"].free -= 0.25
            fx.balances["USDT"].free += 0.25 * 30_000.0
            await reconcile_until(e, a_difference_of("position"), "the coins sold found")
            (held_by,) = [b for b in (await e.why())["blocking"] if b["gate"] == "RECONCILE"]
            assert "sold-by-hand" not in held_by["lifts"] and "accept them" in held_by["lifts"], held_by
            await e.accept_reconcile(by="test")
            assert (await e.store.get_kv(BASELINE_KEY))["BTC"] == pytest.approx(OWN - 0.25)
            books_equal_account(e, fx, OWN - 0.25)
            assert await reconcile_twice(e) == []


async def test_a_reconciliation_that_cannot_reach_the_exchange_records_its_kind(tmp_path, fx):
    """The `reconcile` record of an exchange that does not answer says what its difference is (`venue_unreachable`,
    with the error), as every difference's record does (docs/audit-events.md)."""
    settings = strategy_settings(tmp_path, fx, **TABLES)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        fx.down, fx.down_status = True, 503
        await e.reconcile()
        fx.down = False
    (failed,) = [r for r in stored_events(settings.db_path, "reconcile") if r["status"] == "failed"]
    assert [d["kind"] for d in failed["differences"]] == ["venue_unreachable"], failed
    assert failed["differences"][0]["error"], failed
    assert all("kind" in d for r in stored_events(settings.db_path, "reconcile") for d in r["differences"])


async def test_an_outage_is_nothing_to_accept_and_a_resume_stays_refused_until_the_exchange_answers(tmp_path, fx):
    """While the exchange cannot be reached, reconciliation holds entries with nothing to accept (README, runbook):
    `why` named `ffe ctl accept`, the accept took the outage (a `reconcile` accepted record of it, no balance read),
    and a resume then ran the engine against an exchange nobody had compared the books with."""
    settings = strategy_settings(tmp_path, fx, **TABLES)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        fx.down, fx.down_status = True, 503
        await e.reconcile()
        assert [d["kind"] for d in e.reconcile_blocked] == ["venue_unreachable"], e.reconcile_blocked
        (held_by,) = [b for b in (await e.why())["blocking"] if b["gate"] == "RECONCILE"]
        assert "ffe ctl accept" not in held_by["lifts"] and "reaches the exchange" in held_by["lifts"], held_by
        with pytest.raises(Exception, match="nothing accepted: the exchange could not be reached"):
            await e.accept_reconcile(by="test")
        assert [d["kind"] for d in e.reconcile_blocked] == ["venue_unreachable"]
        with pytest.raises(Exception, match="unexplained difference|could not be reached"):
            await e.resume(by="test")
        assert e.state is not EngineState.RUNNING
        fx.down = False
        await reconcile_until(e, lambda held: held == [], "the exchange answering and agreeing")
        assert await e.resume(by="test") is EngineState.RUNNING
    assert not [r for r in stored_events(settings.db_path, "reconcile") if r["status"] == "accepted"]


async def test_an_accept_whose_balance_read_fails_takes_no_difference_of_the_balances(tmp_path, fx):
    """The exchange goes down during the accept itself, after a reconciliation that reached it found the cash short:
    the accept took the difference without reading a balance (no new baseline), and a resume then traded on books
    nobody had compared. Nothing is accepted; once the exchange answers the accept goes through."""
    settings = strategy_settings(tmp_path, fx, **TABLES)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        fx.balances["USDT"].free -= 250.0  # a withdrawal
        await reconcile_until(e, a_difference_of("cash"), "the withdrawal found")
        fx.down, fx.down_status = True, 503
        with pytest.raises(Exception, match="nothing accepted: the exchange's balances could not be read"):
            await e.accept_reconcile(by="test")
        assert "cash" in [d["kind"] for d in e.reconcile_blocked]  # held still
        fx.down = False
        assert await e.accept_reconcile(by="test")
        assert await reconcile_twice(e) == []


def one_refusal(run) -> str:
    """The one line a refused `ffe ctl` printed (exit 1)."""
    assert run.proc.returncode == 1, run.stdout + run.stderr
    (line,) = run.stderr.strip().splitlines()
    return line


async def held_for(e, fx, own: float, left: float) -> tuple[float, float | None, float | None]:
    """ffe's entry on an account that held `own` BTC before it, then `left` BTC of them gone from the account by
    hand (withdrawn), the position untouched: reconciliation holds the engine. The position, its stop-loss and
    take-profit."""
    assert (await e.store.get_kv(BASELINE_KEY))["BTC"] == pytest.approx(own)
    await strategy_entry(e, fx)
    pos = e.portfolio.positions[BTC]
    fx.balances["BTC"].free -= left
    assert [d["kind"] for d in await reconcile_twice(e)] == ["position", "equity"], e.reconcile_blocked
    return pos.quantity, pos.stop_loss, pos.take_profit


@pytest.mark.parametrize("left", [0.5, 0.1])
async def test_the_operator_s_own_coins_withdrawn_beside_a_position_are_taken_as_theirs_with_accept_own_coins(
        tmp_path, fx, left):
    """The operator withdrew `left` of their own coins (held before ffe's first start) to a cold wallet; ffe's
    position is untouched. The balances look as a sale by hand of the position's coins would: the account holds the
    position, and less than the baseline with it. `ffe ctl accept` is refused with one line giving both readings and
    both commands, as `ffe ctl why` and the RECONCILE page do; `ffe ctl accept --own-coins` takes the coins gone as
    the operator's: the baseline is lowered by exactly what left, the position (with its stop-loss and take-profit)
    is kept, no sale is booked, two more reconciliations find nothing, and a flatten sells the position's coins only."""
    from ffe_engine.alerts import alerts_for
    from ffe_engine.events import ReconcileEvent

    climbing(fx)
    fx.balances["BTC"].free = OWN
    settings = controlled_settings(tmp_path, fx, **TABLES)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            held, stop, take = await held_for(e, fx, OWN, left)
            blocked = list(e.reconcile_blocked)

            line = one_refusal(await run_ffe_async(tmp_path, "ctl", "accept", env=live_env(fx), name="accept"))
            assert "nothing accepted" in line and "ffe ctl accept --own-coins" in line, line
            assert f"sold-by-hand {BTC}" in line, line
            assert await e.store.get_kv(BASELINE_KEY) == {"BTC": pytest.approx(OWN)}
            assert e.reconcile_blocked == blocked

            why = await run_ffe_async(tmp_path, "ctl", "why", "--json", env=live_env(fx), name="why")
            (held_by,) = [b for b in json.loads(why.stdout)["result"]["blocking"] if b["gate"] == "RECONCILE"]
            assert "ffe ctl accept --own-coins" in held_by["lifts"] and "sold-by-hand" in held_by["lifts"], held_by
            (found,) = [r for r in stored_events(db, "reconcile") if r["status"] == "differences"][-1:]
            (page,) = alerts_for(ReconcileEvent(status="differences", differences=found["differences"]),
                                 state="PAUSED")
            assert "ffe ctl accept --own-coins" in page.text and f"sold-by-hand {BTC}" in page.text, page.text

            own = await run_ffe_async(tmp_path, "ctl", "accept", "--own-coins", env=live_env(fx), name="own")
            assert own.proc.returncode == 0, own.stdout + own.stderr
            assert "accepted" in own.stdout, own.stdout
            assert (await e.store.get_kv(BASELINE_KEY))["BTC"] == pytest.approx(OWN - left, abs=1e-9)
            pos = e.portfolio.positions[BTC]
            assert (pos.quantity, pos.stop_loss, pos.take_profit) == (held, stop, take)
            books_equal_account(e, fx, OWN - left)
            assert e.reconcile_blocked == []
            (accepted,) = [r for r in stored_events(db, "reconcile") if r["status"] == "accepted"]
            assert accepted["own_coins"] == {"BTC": pytest.approx(left, abs=1e-9)}, accepted
            assert await reconcile_twice(e) == [] and await reconcile_twice(e) == [], e.reconcile_blocked

            assert await e.resume(by="test") is EngineState.RUNNING
            report = await e.flatten()
            await wait_for(lambda: not e.orders.live, timeout=30, what="the closing order ended")
        assert report["failed"] == [] and e.portfolio.holding(BTC) is None, report
        # the operator's coins left in the account are all there, and of the position no more than dust
        assert 0.0 <= fx.balances["BTC"].total - (OWN - left) < e.venue.market(BTC).amount_step
    assert rows(db, "SELECT quantity FROM trades WHERE reason = 'by_hand'") == []


@pytest.mark.parametrize("own, part", [(OWN, 0.5), (0.0, 0.5), (OWN, 0.005)],
                         ids=["half_of_the_position", "no_baseline", "within_the_fees_tolerance"])
async def test_accept_own_coins_is_refused_when_coins_of_the_position_are_gone_or_there_is_no_baseline(
        tmp_path, fx, own, part):
    """`ffe ctl accept --own-coins` takes coins gone as the operator's own only as far as the baseline covers them:
    when the account holds less than the position (more left than the operator held, or no coins of theirs at all),
    coins of the position are gone for sure. Exit 1, one line, nothing changed; the plain accept is refused as
    before, naming the sale to book, and not --own-coins."""
    climbing(fx)
    fx.balances["BTC"].free = own
    settings = controlled_settings(tmp_path, fx, **TABLES)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            assert (await e.store.get_kv(BASELINE_KEY))["BTC"] == pytest.approx(own)
            await strategy_entry(e, fx)
            held = e.portfolio.positions[BTC].quantity
            fx.balances["BTC"].free -= own + round(held * part, 8)  # all of the operator's, some of the position's
            assert [d["kind"] for d in await reconcile_twice(e)] == ["position", "equity"], e.reconcile_blocked
            baseline, blocked = await e.store.get_kv(BASELINE_KEY), list(e.reconcile_blocked)

            line = one_refusal(await run_ffe_async(tmp_path, "ctl", "accept", "--own-coins", env=live_env(fx),
                                                   name="own"))
            assert "nothing accepted" in line and f"sold-by-hand {BTC}" in line, line
            assert ("no coins of your own" if not own else "more than the baseline") in line, line
            line = one_refusal(await run_ffe_async(tmp_path, "ctl", "accept", env=live_env(fx), name="accept"))
            assert f"sold-by-hand {BTC}" in line and "--own-coins" not in line, line
            assert await e.store.get_kv(BASELINE_KEY) == baseline and e.reconcile_blocked == blocked
            assert "accepted" not in [r["status"] for r in stored_events(db, "reconcile")]
            assert e.portfolio.positions[BTC].quantity == held


async def test_accept_own_coins_with_no_position_says_the_plain_accept_takes_them(tmp_path, fx):
    """With no position, coins of the operator's own gone are taken by the plain accept (the baseline follows the
    account): --own-coins is refused saying so, not that the account holds every coin of the baseline."""
    climbing(fx)
    fx.balances["BTC"].free = OWN
    settings = controlled_settings(tmp_path, fx, **TABLES)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            fx.balances["BTC"].free -= 0.3
            await reconcile_until(e, a_difference_of("position"), "the coins gone found")
            line = one_refusal(await run_ffe_async(tmp_path, "ctl", "accept", "--own-coins", env=live_env(fx),
                                                   name="own"))
            assert "nothing accepted" in line and "accept without --own-coins" in line, line
            assert "holds the coins of every position and of the baseline" not in line, line
            await e.accept_reconcile(by="test")
            assert (await e.store.get_kv(BASELINE_KEY))["BTC"] == pytest.approx(OWN - 0.3)
            # Nothing waits now: --own-coins is refused (exit 1, docs/cli.md: "when no coins are missing"), where
            # the plain accept says there was nothing to accept.
            line = one_refusal(await run_ffe_async(tmp_path, "ctl", "accept", "--own-coins", env=live_env(fx),
                                                   name="own-again"))
            assert "nothing accepted: " in line and "no coins are missing" in line, line
            plain = await run_ffe_async(tmp_path, "ctl", "accept", env=live_env(fx), name="plain-again")
            assert plain.proc.returncode == 0 and "nothing to accept" in plain.stdout, plain.stdout + plain.stderr


async def test_an_accept_with_own_coins_takes_a_deposit_shown_beside_them_as_the_plain_accept_would(tmp_path, fx):
    """The operator's own BTC withdrawn beside ffe's position, and ETH deposited beside ffe's ETH position: the plain
    accept is refused for the BTC; `ffe ctl accept --own-coins` takes the BTC as the operator's and the ETH as the
    plain accept takes a deposit. It says, and records, what it took: every difference it names accepted is in the
    new baseline, and the next reconciliations find nothing."""
    eth = "ETH/USDT"
    climbing(fx)
    fx.balances["BTC"].free = OWN
    tables = {"engine": {"order_poll_s": 0.1, "symbols": [BTC, eth]}, "risk": {"max_correlation": 1.0}}
    settings = controlled_settings(tmp_path, fx, **tables)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            fx.market_clock.step()  # the strategy enters both
            await wait_for(lambda: BTC in e.portfolio.positions and eth in e.portfolio.positions, timeout=30,
                           what="both entries filled")
            await wait_for(lambda: not e.orders.live, timeout=30, what="both entries final")
            fx.balances["BTC"].free -= 0.5
            fx.balances.setdefault("ETH", Balance(0.0)).free += 0.05
            await reconcile_until(e, lambda ds: {d.get("symbol") for d in ds if d["kind"] == "position"} == {BTC, eth},
                                  "both coins' differences found")
            await reconcile_twice(e)
            shown = list(e.reconcile_blocked)

            own = await run_ffe_async(tmp_path, "ctl", "accept", "--own-coins", env=live_env(fx), name="own")
            assert own.proc.returncode == 0, own.stdout + own.stderr
            baseline = await e.store.get_kv(BASELINE_KEY)
            assert baseline["BTC"] == pytest.approx(OWN - 0.5, abs=1e-9)
            assert baseline["ETH"] == pytest.approx(0.05, abs=1e-9)
            assert f"accepted {len(shown)} difference" in own.stdout, own.stdout
            assert await reconcile_twice(e) == [] and e.reconcile_blocked == []
    (accepted,) = [r for r in stored_events(db, "reconcile") if r["status"] == "accepted"]
    assert {d.get("symbol") for d in accepted["differences"] if d["kind"] == "position"} == {BTC, eth}, accepted
