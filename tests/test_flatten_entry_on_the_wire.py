"""A flatten pressed while the strategy's entry is on the wire, in a symbol that holds dust (coins below the venue's
minimum, left by an earlier exit where fees are taken in the coin). The flatten waits for the entry; its follow-up
says what became of it, and names as closed only what a closing order of the flatten sold."""

from __future__ import annotations

from conftest import engine_session
from live_helpers import BTC, GET_ORDER, POST_ORDER, engine_loop, fx, stored_events, wait_for  # noqa: F401
from test_live_books import assert_books_agree, climbing, in_doubt, sell_to_dust, strategy_settings

from ffe_engine.present import kill_headline, line


async def entry_over_the_dust(e, fx, fault: str) -> str:
    """Dust in BTC/USDT, then the strategy's next entry sent with `fault` on its request: its client order id, once
    its answer is lost (in doubt)."""
    await sell_to_dust(e, fx)
    assert BTC in e.portfolio.positions and e.portfolio.holding(BTC) is None  # dust
    await e.resume()
    fx.fault(POST_ORDER, fault)
    fx.market_clock.step()
    (_, _, sent) = await wait_for(lambda: fx.requests_to(POST_ORDER)[2:] and fx.requests_to(POST_ORDER),
                                  timeout=30, what="the entry over the dust")
    cid = sent.params["newClientOrderId"]
    await in_doubt(e, cid)
    return cid


def climbing_settings(tmp_path, fx):
    """A climbing market, the strategy's settings, one position at most and orders looked up often."""
    climbing(fx)
    tables = {"risk": {"take_profit_atr": 0.3, "max_open_positions": 1}, "engine": {"order_poll_s": 0.1}}
    return strategy_settings(tmp_path, fx, **tables)


def follow_ups(db) -> list[dict]:
    return [k for k in stored_events(db, "kill_switch") if k.get("follow_up") and k["action"] == "flatten"]


async def test_an_entry_on_the_wire_that_never_reached_the_exchange_is_not_said_closed(tmp_path, fx):
    """The entry never reached the exchange's book (its request dropped before it), so no position ever existed and
    no closing order was sent: the follow-up says the entry ended absent with nothing bought, and closed nothing."""
    async with engine_session(climbing_settings(tmp_path, fx), live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            cid = await entry_over_the_dust(e, fx, "drop_before")
            await e.flatten()
            (said,) = await wait_for(lambda: follow_ups(db), timeout=30, what="the flatten's follow-up")
        assert [(o.side, o.status) for o in fx.orders] == [("BUY", "FILLED"), ("SELL", "EXPIRED")]  # no more
        assert said["closed"] == [], said
        (entry,) = said["entries"]
        assert entry["client_order_id"] == cid and entry["symbol"] == BTC, entry
        assert "absent" in entry["detail"] and "nothing bought" in entry["detail"], entry
        text = line("kill_switch", said)
        assert "closing orders closed" not in text and "closed" not in kill_headline(said), text
        assert f"the entry on the wire {cid} ({BTC}): " in text and "left as dust" in text, text
        assert_books_agree(e, fx)


async def test_an_entry_on_the_wire_that_filled_is_said_filled_and_closed_by_the_closing_order(tmp_path, fx):
    """The entry filled at the exchange, its answer lost, and the exchange's lookups do not show it for a while (the
    flatten's cancel finds nothing): once they show it filled, the follow-up's closing order sells what it bought,
    and the follow-ups say both: the entry filled, then the closing orders closed the symbol."""
    async with engine_session(climbing_settings(tmp_path, fx), live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.fault(GET_ORDER, "stale", seconds=3, times=10_000)
            cid = await entry_over_the_dust(e, fx, "drop_after")
            await e.flatten()
            await wait_for(lambda: [f for f in follow_ups(db) if f["closed"]], timeout=30,
                           what="the follow-up saying the symbol closed")
        assert [(o.side, o.status) for o in fx.orders][2:] == [("BUY", "FILLED"), ("SELL", "FILLED")]
        said = follow_ups(db)
        assert [f["closed"] for f in said] == [[], [BTC]], said
        (entry,) = [x for f in said for x in f["entries"]]
        assert entry["client_order_id"] == cid and entry["detail"].startswith("filled "), entry
        assert f"the entry on the wire {cid} ({BTC}): filled " in line("kill_switch", said[0]), said[0]
        assert f"the closing orders closed {BTC}" in line("kill_switch", said[1]), said[1]
        assert_books_agree(e, fx)
