"""The circuit breaker around the venue, on a real engine with the paper exchange behind a network that can be cut.

Three consecutive venue failures open the breaker; while it is open no order reaches the venue (counted at the
venue boundary, whatever asks: the strategy, the operator); after the recovery timeout exactly one probe goes
through, and its outcome reopens or closes the breaker. Each transition is a `breaker` event.
"""

from __future__ import annotations

from ffe_engine.clock import ManualClock
from pipeline_helpers import BUY, MIN, FlakyVenue, make_settings, paper_venue, pipelines

_ = pipelines  # a fixture

BTC, ETH = "BTC/USDT", "ETH/USDT"
RECOVERY_S = 60.0  # on the test clock: nothing waits for it


def past_the_recovery_timeout(clock: ManualClock, breaker) -> None:
    """Move the clock past the breaker's probe time (monotonic seconds), as if the time had gone by."""
    clock.forward(max(0.0, breaker.retry_at - clock.monotonic()) + 0.05)


async def transitions(p) -> list[tuple[str, str, int]]:
    return [(e["previous"], e["state"], e["failures"]) for e in await p.events("breaker")]


async def outcomes(p) -> list[str]:
    return [d["outcome"] for d in await p.decisions("WHERE symbol = ? AND action = 'BUY'", (BTC,))]


async def journal_matches_the_wire(p, venue) -> None:
    """Every journaled order reached the venue once, and nothing reached the venue without a journal entry."""
    journaled = [r[0] for r in await p.rows("SELECT client_order_id FROM orders")]
    assert sorted(journaled) == sorted(venue.sent)
    assert len(set(venue.sent)) == len(venue.sent)


async def test_breaker_opens_blocks_the_venue_and_one_probe_reopens_or_closes_it(tmp_path, pipelines):
    s = make_settings(tmp_path, breaker={"failure_threshold": 3, "recovery_timeout_s": RECOVERY_S})
    venue = paper_venue(s, FlakyVenue)
    venue.down = True
    clock = ManualClock()
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=venue, clock=clock)
    e = p.engine

    # three consecutive failures: each entry reaches the venue and fails, the third opens the breaker
    await p.bars(3)
    assert venue.calls == 3
    assert await outcomes(p) == ["submitted"] * 3  # journaled and sent: their orders say what the venue did
    assert p.engine.entries.report()["refused"] == {"ORDER_REFUSED": 3}, p.engine.entries.report()
    assert e.breaker.state == "open"
    assert await transitions(p) == [("closed", "open", 3)]
    rejected = await p.rows("SELECT status, error FROM orders")
    assert [r[0] for r in rejected] == ["rejected"] * 3 and all("venue unavailable" in r[1] for r in rejected)

    # open: nothing reaches the venue, neither the strategy's entries nor the operator's order
    await e.resume()  # whether or not the open breaker paused the engine, the gates run with it RUNNING
    await p.bars(1)
    d = (await p.decisions("WHERE symbol = ?", (BTC,)))[-1]
    assert d["outcome"] == "rejected" and d["reason"].startswith("BREAKER_OPEN:")
    await e.resume()
    res = await e.operator_order(BTC, "buy", 0.001)
    assert not res["accepted"] and res["reason"].startswith("BREAKER_OPEN:")
    await p.bars(1)
    assert venue.calls == 3

    # just before the recovery timeout: still nothing goes through
    clock.forward(e.breaker.retry_at - clock.monotonic() - 0.1)
    await e.resume()
    assert not e.breaker.allows()
    await p.bars(1)
    assert venue.calls == 3

    # after the recovery timeout: one probe, which fails and opens the breaker again
    past_the_recovery_timeout(clock, e.breaker)
    await e.resume()
    assert e.breaker.allows()
    await p.bars(1)
    assert venue.calls == 4
    assert e.breaker.state == "open"
    assert await transitions(p) == [("closed", "open", 3), ("open", "half_open", 3), ("half_open", "open", 4)]
    await e.resume()
    await p.bars(1)
    assert venue.calls == 4  # open again for another full timeout

    # the network is back: the next probe succeeds and closes the breaker; orders flow again
    venue.down = False
    past_the_recovery_timeout(clock, e.breaker)
    await e.resume()
    await p.bars(1)
    assert venue.calls == 5
    assert e.breaker.state == "closed"
    assert (await transitions(p))[-2:] == [("open", "half_open", 4), ("half_open", "closed", 0)]
    assert (await p.decisions("WHERE symbol = ?", (BTC,)))[-1]["outcome"] == "submitted"
    await p.bars(1)
    assert BTC in e.portfolio.positions
    await journal_matches_the_wire(p, venue)


async def test_in_a_backtest_the_probe_waits_exactly_the_recovery_timeout_in_market_time(tmp_path, pipelines):
    # market time drives the breaker in a backtest: 10 one-minute bars of recovery
    s = make_settings(tmp_path, breaker={"failure_threshold": 3, "recovery_timeout_s": 600})
    venue = paper_venue(s, FlakyVenue)
    venue.down = True
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=venue, backtest=True)
    await p.bars(3)
    assert venue.calls == 3 and p.engine.breaker.state == "open"
    opened_at = p.clock.now_ms()
    probe = None
    for _ in range(30):
        await p.bars(1)
        if venue.calls > 3:
            probe = p.clock.now_ms()
            break
    assert probe is not None, "no probe after the recovery timeout"
    # the first bar whose decision comes at or after opened + 600 s is the probe, and nothing before it
    assert probe - MIN < opened_at + 600_000 <= probe
    assert venue.calls == 4 and p.engine.breaker.state == "open"
    states = [(e["previous"], e["state"]) for e in await p.events("breaker")]
    assert states == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    await journal_matches_the_wire(p, venue)


async def test_while_open_not_even_the_lookups_of_orders_in_doubt_reach_the_venue(tmp_path, pipelines):
    s = make_settings(tmp_path, breaker={"failure_threshold": 3, "recovery_timeout_s": RECOVERY_S})
    venue = paper_venue(s, FlakyVenue)
    venue.down = venue.lost_answers = True
    clock = ManualClock()
    p = await pipelines(s, script={BTC: (BUY, 0.8), ETH: (BUY, 0.8)}, venue=venue, clock=clock)
    e = p.engine
    # BTC's entry: answer lost (in doubt); ETH's candle: the lookup of BTC's order fails, then ETH's entry is
    # lost too: three failures in a row, the breaker opens
    await p.bars(1)
    assert e.breaker.state == "open" and (venue.calls, venue.fetches) == (2, 1)
    assert sorted(r[0] for r in await p.rows("SELECT status FROM orders")) == ["in_doubt", "in_doubt"]
    for _ in range(2):
        await e.resume()
        await p.bars(1)
    assert (venue.calls, venue.fetches) == (2, 1)  # the orders in doubt wait: nothing looked up or sent again

    # the network is back: one lookup probes and closes the breaker, then each order is resolved by its id
    venue.down = False
    past_the_recovery_timeout(clock, e.breaker)
    await e.resume()  # an entry in doubt is sent again only while the engine runs
    await p.bars(1)
    assert e.breaker.state == "closed"
    await p.bars(1)
    assert set(e.portfolio.positions) == {BTC, ETH}
    # The two entries in doubt since the outage, proven absent bars later, are not sent again (the strategy has
    # decided since, and entered anew): each order the exchange has is in its book once, under the id chosen before
    # its first send, and no id was sent twice.
    stale = await p.rows("SELECT error FROM orders WHERE status = 'rejected'")
    assert len(stale) == 2 and all(err.startswith("not sent again: made ") for (err,) in stale), stale
    placed = sorted(r[0] for r in await p.rows("SELECT client_order_id FROM orders WHERE status != 'rejected'"))
    assert sorted(venue.orders) == placed
    journaled = sorted(r[0] for r in await p.rows("SELECT client_order_id FROM orders"))
    assert sorted(venue.sent) == journaled
