"""A live engine killed with an order in flight, and the next start: real `ffe run --headless --live` subprocesses
against the fake Binance, SIGKILL, the same SQLite database.

The order is journaled, sent, and the exchange holds the request without answering (it hangs); the process is
killed before any reply. The next start finds the order in the journal with no outcome and resolves it by its
client order id before anything new is sent: an order the exchange executed is recorded as filled (fill and
position), never sent again; an order that never reached the exchange is sent again once, with the same id, after
the exchange's settle window. The fake's own book shows exactly one order either way.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ffe_engine.control import request
from live_helpers import (BTC, POST_ORDER, AsyncFfe, fx, live_config, live_env, processes, rows,  # noqa: F401
                          stored_events, wait_for, wait_for_bar, write_config)

RUN = ("run", "--headless", "--live")


async def start_engine(cwd, fx, processes, name: str) -> AsyncFfe:
    """Start `ffe run --headless --live` and wait until its control socket answers (a killed predecessor may have
    left its socket file behind)."""
    p = await AsyncFfe.start(cwd, *RUN, env=live_env(fx), name=name)
    processes.append(p)
    sock = cwd / "data" / "ffe.sock"

    async def answers() -> bool:
        if not p.alive():
            raise AssertionError(f"ffe exited {p.proc.returncode}: {p.stderr}")
        with contextlib.suppress(OSError):
            return (await request(sock, "status", timeout=5))["ok"]
        return False

    await wait_for(answers, timeout=60, what=f"{name} answering on its control socket", interval=0.05)
    return p


@pytest.mark.parametrize("reached", [True, False], ids=["executed", "never-reached"])
async def test_killed_between_journal_and_reply_then_restarted(tmp_path, fx, processes, reached):
    # the client waits 5 s for the reply: the test kills the process well inside that window
    # A periodic reconciliation every 5 s as well: the look with current balances after the fill comes by then
    # whatever else asked for one (the recheck the settle window after a change is the reconcile tests' concern).
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False, "reconcile_interval_s": 5},
                                       exchange={"timeout_ms": 5000}))
    db = tmp_path / "data" / "ffe.db"
    sock = tmp_path / "data" / "ffe.sock"

    first = await start_engine(tmp_path, fx, processes, "first")
    assert rows(db, "SELECT state FROM engine_state") == [("RUNNING",)]
    await wait_for_bar(sock, fx)
    fx.fault(POST_ORDER, "hang", seconds=20, execute=reached)
    placing = asyncio.ensure_future(request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.01}))

    journaled = await wait_for(lambda: fx.requests_to(POST_ORDER) and rows(
        db, "SELECT client_order_id, status FROM orders"), timeout=30, what="the order journaled and on the wire")
    await first.kill()
    ((cid, status_at_kill),) = journaled
    assert status_at_kill == "new"  # journaled, sent, no reply yet
    (sent,) = fx.requests_to(POST_ORDER)
    assert sent.params["newClientOrderId"] == cid and sent.status is None  # the exchange had not answered
    with contextlib.suppress(Exception):
        await placing  # the control connection died with the process
    assert rows(db, "SELECT status FROM orders") == [("new",)]
    assert rows(db, "SELECT COUNT(*) FROM fills") == [(0,)]
    assert [(o.client_id, o.status) for o in fx.orders] == ([(cid, "FILLED")] if reached else [])

    second = await start_engine(tmp_path, fx, processes, "second")
    await wait_for(lambda: rows(db, "SELECT status, filled FROM orders") == [("filled", 0.01)], timeout=30,
                   what="the order resolved as filled")
    await wait_for(lambda: [e for e in stored_events(db, "order") if e["status"] == "filled"], timeout=30,
                   what="its events flushed")  # the events table is written in batches, orders at once

    # the exchange's own book: one order with this client id, and no other
    assert [(o.client_id, o.status, o.filled) for o in fx.orders] == [(cid, "FILLED", 0.01)]
    post_ids = [r.params.get("newClientOrderId") for r in fx.requests_to(POST_ORDER)]
    assert post_ids == ([cid] if reached else [cid, cid])  # looked up; sent again only when surely absent
    assert rows(db, "SELECT client_order_id, side, quantity, price FROM fills") == [(cid, "buy", 0.01, 30_000.0)]
    # the buy's fee was taken in BTC: the position is what the account holds
    held = 0.01 * (1 - fx.fee_rate)
    assert rows(db, "SELECT symbol, side, quantity FROM positions") == [(BTC, "buy", pytest.approx(held))]

    # The second start: the lookup by client id is part of its reconciliation, before anything new is sent. The
    # balances it reads right after an order changed may lag that change: nothing in them counts ("unconfirmed"), and
    # a reconciliation the settle window later compares them and agrees ("ok").
    started = max(e["seq"] for e in stored_events(db, "run") if e["phase"] == "start")

    def looks() -> list[dict]:
        return [e for e in stored_events(db, "reconcile", "order", "fill") if e["seq"] > started]

    try:
        await wait_for(lambda: any(e.get("status") == "ok" for e in looks() if e["event"] == "reconcile"
                                   and e["seq"] > max(f["seq"] for f in looks() if f["event"] == "fill")),
                       timeout=30, what="a reconciliation with current balances after the fill")
    except AssertionError as exc:  # what the looks since the start were
        raise AssertionError(f"{exc}: {looks()}") from None
    after = looks()
    assert {e.get("client_order_id") for e in after if e["event"] != "reconcile"} == {cid}
    assert all(e["differences"] == [] for e in after if e["event"] == "reconcile")
    seen = [(e["event"], e.get("status")) for e in after]
    i = seen.index(("fill", None))
    assert seen[i:i + 2] == [("fill", None), ("order", "filled")]
    assert set(seen[:i] + seen[i + 2:]) <= {("reconcile", "ok"), ("reconcile", "unconfirmed")}, seen
    if reached:  # found filled at once, by the start's reconciliation: recorded before it read the balances
        assert i == 0 and seen[2] == ("reconcile", "unconfirmed")
    else:  # absent, and inside the settle window that proves nothing: sent again only after it; the cash is taken
        # from the venue by a reconciliation with current balances once it is settled
        assert seen[0][0] == "reconcile" and i > 0

    status = (await request(sock, "status"))["result"]
    assert [(p["symbol"], p["quantity"]) for p in status["positions"]] == [(BTC, pytest.approx(held))]
    assert status["orders"] == []
    assert await second.stop() == 0, second.stderr
    assert fx.secret not in second.stderr + first.stderr and fx.api_key not in second.stderr + first.stderr


async def killed_and_started_within_the_ban(tmp_path, fx, processes, first) -> None:
    """Once the ban is stored, `first` killed and the engine started again within it: the start sends nothing to the
    exchange (a ban grows with every request sent during it) and stops in one line saying so."""
    db = tmp_path / "data" / "ffe.db"
    await wait_for(lambda: rows(db, "SELECT value FROM kv WHERE key = 'venue_request_hold_until' AND value != 'null'"),
                   timeout=30, what="the ban stored")
    await first.kill()
    await started_within_the_ban(tmp_path, fx, processes)


async def started_within_the_ban(tmp_path, fx, processes) -> None:
    """The engine started again within the ban: it sends nothing to the exchange and stops in one line saying so."""
    sent = len(fx.requests)
    second = await AsyncFfe.start(tmp_path, *RUN, env=live_env(fx), name="second")
    processes.append(second)
    await wait_for(lambda: not second.alive() or len(fx.requests) > sent, timeout=60,
                   what="the start's end or its first request")
    assert [r.route for r in fx.requests[sent:]] == []  # nothing sent during the ban
    assert await second.wait(timeout=60) == 1, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert len(errors) == 1 and "Retry-After" in errors[0], second.stderr[-2000:]


async def test_an_exchange_s_ban_holds_the_next_start_too(tmp_path, fx, processes):
    """The exchange bans the address (418, Retry-After 600 s) while the engine runs, and the engine is killed and
    started again within the ban: the start sends nothing to the exchange (a ban grows with every request sent
    during it) and stops in one line saying until when."""
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
    first = await start_engine(tmp_path, fx, processes, "first")
    await wait_for_bar(tmp_path / "data" / "ffe.sock", fx)
    fx.fault("GET /api/v3/klines", "418", retry_after=600)
    fx.market_clock.step()  # the feed's next poll is answered with the ban
    await killed_and_started_within_the_ban(tmp_path, fx, processes, first)


async def test_an_exchange_s_ban_met_by_an_order_holds_the_next_start_too(tmp_path, fx, processes):
    """The exchange answers an order with a ban of the address (418, Retry-After 600 s), and the engine is killed and
    started again within it: the ban covers every request, so the start sends nothing either and stops in one line
    saying so, as after a read's ban."""
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
    sock = tmp_path / "data" / "ffe.sock"
    first = await start_engine(tmp_path, fx, processes, "first")
    await wait_for_bar(sock, fx)
    fx.fault(POST_ORDER, "418", retry_after=600)
    answer = await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.001, "by": "test"})
    assert answer["ok"] and not answer["result"]["accepted"], answer
    assert "VENUE_HOLD" in answer["result"]["reason"], answer
    await killed_and_started_within_the_ban(tmp_path, fx, processes, first)
    assert len(fx.requests_to(POST_ORDER)) == 1 and not fx.orders


@pytest.mark.parametrize("answer", ["exchange418", "exchange429", "page418", "page429"])
async def test_killed_as_soon_as_an_order_met_a_ban_the_next_start_sends_nothing(tmp_path, fx, processes, answer):
    """An order answered with a Retry-After on every request (the exchange's 418, its 429 -1003 for the address's
    request weight, or a 418 or 429 page without its code), and the engine killed as soon as the order's answer is
    given, nothing else waited for: the ban was stored when it was set, so the start within it sends nothing."""
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
    sock = tmp_path / "data" / "ffe.sock"
    first = await start_engine(tmp_path, fx, processes, "first")
    await wait_for_bar(sock, fx)
    status = int(answer[-3:])
    if answer.startswith("exchange"):
        fx.fault(POST_ORDER, str(status), retry_after=600)
    else:
        fx.fault(POST_ORDER, "5xx_not_executed", status=status, page_retry_after=600)
    reply = await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.001, "by": "test"})
    assert reply["ok"] and [r.status for r in fx.requests_to(POST_ORDER)] == [status], reply
    await first.kill()
    await started_within_the_ban(tmp_path, fx, processes)
    assert len(fx.requests_to(POST_ORDER)) == 1 and not fx.orders


async def test_a_ban_over_by_the_next_start_is_forgotten_there(tmp_path, fx, processes):
    """A Retry-After that ends while the engine is down holds nothing at the next start, which trades on, and its
    stored time is cleared."""
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
    db = tmp_path / "data" / "ffe.db"
    hold = "SELECT value FROM kv WHERE key = 'venue_request_hold_until'"
    first = await start_engine(tmp_path, fx, processes, "first")
    await wait_for_bar(tmp_path / "data" / "ffe.sock", fx)
    fx.fault("GET /api/v3/klines", "429", retry_after=2)
    fx.market_clock.step()
    await wait_for(lambda: rows(db, hold) not in ([], [("null",)]), timeout=30, what="the hold stored")
    await first.kill()
    await asyncio.sleep(2.5)  # the hold is over
    await start_engine(tmp_path, fx, processes, "second")
    await wait_for_bar(tmp_path / "data" / "ffe.sock", fx)
    await wait_for(lambda: rows(db, hold) == [("null",)], timeout=30, what="the stored hold cleared")


async def test_a_ban_met_by_a_start_that_fails_holds_the_next_start(tmp_path, fx, processes):
    """The exchange bans the address while a start reads its warm-up history: that start fails, and the next one,
    within the ban, sends nothing either."""
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
    fx.fault("GET /api/v3/klines", "429", retry_after=90)
    first = await AsyncFfe.start(tmp_path, *RUN, env=live_env(fx), name="first")
    processes.append(first)
    assert await first.wait(timeout=60) == 1, first.stderr
    sent = len(fx.requests)
    second = await AsyncFfe.start(tmp_path, *RUN, env=live_env(fx), name="second")
    processes.append(second)
    assert await second.wait(timeout=60) == 1, second.stderr
    assert len(fx.requests) == sent, [r.path for r in fx.requests[sent:]]
    assert "Retry-After" in second.stderr, second.stderr[-2000:]
