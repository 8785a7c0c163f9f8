"""The operator's controls on a real engine (opened by `open_engine`, real SQLite, paper venue, simulated market):
kill switch (halt), its durability across a restart and the confirmation needed to re-arm, the order that a halt
overtakes on its way to the venue, flatten, and pause (entries refused, stop-loss / take-profit exits still sent).

The paper venue fills a market order at the next candle's open for its symbol, so an order placed now stays open
at the venue until the test feeds that symbol's next candle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading

import pytest

from conftest import db_rows, db_value, engine_session, make_settings
from ffe_engine.engine import ControlError
from ffe_engine.model import Candle, EngineState, OrderReason, Side
from ffe_engine.risk import OrderIntent
from ffe_engine.venues.base import VenueUnavailable
from ffe_engine.venues.paper import PaperVenue

BTC, ETH = "BTC/USDT", "ETH/USDT"


async def feed(engine, candles, n: int = 1) -> None:
    """The next n candles of the engine's own feed, through the engine's bar entry point."""
    for _ in range(n):
        await engine.on_candle(next(candles))


async def feed_until(engine, candles, symbol: str, limit: int = 10) -> None:
    """Feed candles until one of `symbol` of a later bar than the last one fed has gone through (its open fills
    that symbol's market orders placed before it; the symbol's candle of the bar they were placed in opened before
    them, and fills none)."""
    since = max(engine.last_bar_ts.values(), default=0)
    for _ in range(limit):
        c = next(candles)
        await engine.on_candle(c)
        if c.symbol == symbol and c.ts > since:
            return
    raise AssertionError(f"no {symbol} candle in {limit}")


def events(db, name: str, after_seq: int = 0) -> list[dict]:
    """The stored records of the `name` events after `after_seq`, from the events table."""
    return [json.loads(r[0]) for r in db_rows(db, "SELECT data FROM events WHERE event = ? AND seq > ? ORDER BY seq",
                                               (name, after_seq))]


async def open_position_and_order(engine, candles) -> tuple[str, str]:
    """A filled BTC buy (an open position) and a second BTC buy still open at the venue."""
    first = await engine.operator_order(BTC, "buy", 0.01)
    assert first["accepted"], first
    await feed_until(engine, candles, BTC)
    assert BTC in engine.portfolio.positions
    second = await engine.operator_order(BTC, "buy", 0.01)
    assert second["accepted"], second
    cid = second["client_order_id"]
    assert engine.venue.orders[cid].status == "open"
    return first["client_order_id"], cid


# ---------------------------------------------------------------------------------------------------- halt
async def test_halt_cancels_open_orders_stores_halted_and_a_restart_stays_halted_until_confirmed(tmp_path):
    settings = make_settings(tmp_path, risk={"max_correlation": 1.0})  # ETH may be bought next to a BTC long
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await feed(e, candles, 2)
        _, open_cid = await open_position_and_order(e, candles)
        quote_reserved = e.venue.reserved.get("USDT", 0.0)
        assert quote_reserved > 0  # the open buy holds funds at the venue

        report = await e.halt(reason="test kill switch", by="test")

        # Before halt() returned: durable HALTED (read through a connection of our own), the order cancelled at
        # the venue with its funds released, and the journal saying so.
        assert db_rows(db, "SELECT state, reason, by FROM engine_state") == [("HALTED", "test kill switch", "test")]
        assert report.cancelled == [open_cid] and report.failed == []
        assert e.venue.orders[open_cid].status == "canceled"
        assert e.venue.open_ids == []
        assert e.venue.reserved.get("USDT", 0.0) == pytest.approx(0.0, abs=1e-9)
        assert db_value(db, "SELECT status FROM orders WHERE client_order_id = ?", (open_cid,)) == "canceled"
        kill = events(db, "kill_switch")
        assert len(kill) == 1
        assert kill[0]["action"] == "halt" and kill[0]["cancelled"] == [open_cid] and kill[0]["failed"] == []
        halted = [ev for ev in events(db, "engine_state") if ev["state"] == "HALTED"]
        assert halted and halted[0]["seq"] < kill[0]["seq"]  # new orders refused before the cancels went out

        # While halted: the operator's order is refused by ENGINE_STATE and the venue sees nothing.
        venue_orders = len(e.venue.orders)
        refused = await e.operator_order(ETH, "buy", 0.1)
        assert not refused["accepted"]
        gate = refused["gates"][0]
        assert (gate["code"], gate["value"], gate["passed"]) == ("ENGINE_STATE", "HALTED", False)
        assert len(e.venue.orders) == venue_orders
        orders_before_restart = db_value(db, "SELECT COUNT(*) FROM orders")

    # Restart on the same data directory.
    async with engine_session(settings) as running:
        e = running.engine
        assert e.state is EngineState.HALTED
        assert BTC in e.portfolio.positions  # the book came back too
        seq_at_restart = db_value(db, "SELECT MAX(seq) FROM events")
        candles = e.feed.iter_candles()
        await feed(e, candles, 60)  # the strategy runs, but nothing may be ordered
        refused = await e.operator_order(ETH, "buy", 0.1)
        assert not refused["accepted"] and refused["gates"][0]["value"] == "HALTED"
        assert db_value(db, "SELECT COUNT(*) FROM orders") == orders_before_restart
        assert e.venue.open_ids == []
        for d in events(db, "decision", after_seq=seq_at_restart):
            if d["action"] == "BUY" and d["outcome"] not in ("in_position", "hold"):
                assert d["outcome"] == "rejected" and d["gates"][0]["value"] == "HALTED", d

        with pytest.raises(ControlError, match="confirm"):
            await e.resume()
        assert e.state is EngineState.HALTED
        assert db_value(db, "SELECT state FROM engine_state") == "HALTED"

        assert await e.resume(confirm=True) is EngineState.RUNNING
        assert db_value(db, "SELECT state FROM engine_state") == "RUNNING"
        accepted = await e.operator_order(ETH, "buy", 0.1)
        assert accepted["accepted"], accepted
        assert e.venue.orders[accepted["client_order_id"]].status == "open"


async def test_two_kill_switches_pressed_at_once_record_halted_once_with_the_first_one_s_reason(tmp_path):
    """The console's K and `ffe ctl halt` (or SIGUSR1) at the same moment, as an engine that was not answering
    takes them: the second is a halt of a HALTED engine, which does not record the state again (states.md). It
    recorded HALTED -> HALTED with its own reason and by, so the stored state no longer said who halted."""
    settings = make_settings(tmp_path, risk={"max_correlation": 1.0})
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await feed(e, candles, 2)
        await open_position_and_order(e, candles)
        await asyncio.gather(e.halt(reason="ffe ctl halt", by="ctl"), e.halt(reason="kill switch", by="operator"))
        halted = [ev for ev in events(db, "engine_state") if ev["state"] == "HALTED"]
        assert [(ev["previous"], ev["reason"], ev["by"]) for ev in halted] == [("RUNNING", "ffe ctl halt", "ctl")]
        assert db_rows(db, "SELECT state, reason, by FROM engine_state") == [("HALTED", "ffe ctl halt", "ctl")]
        assert (e.state_reason, e.venue.open_ids) == ("ffe ctl halt", [])
        assert len(events(db, "kill_switch")) == 2  # each press says what it cancelled


async def test_a_kill_switch_pressed_while_the_stop_waits_for_commands_under_way_is_carried_out(tmp_path):
    """The stop waits for the control commands under way before the engine stops (its venue still open, its store
    too): a kill switch pressed then (ffe ctl halt on a connection already open, SIGUSR1) halts it, HALTED stored
    and kept for the next start, as the operator meant. It was refused as a change asked while stopping."""
    settings = make_settings(tmp_path, risk={"max_correlation": 1.0})
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await feed(e, candles, 2)
        _, open_cid = await open_position_and_order(e, candles)
        waiting = asyncio.Event()
        halted: list = []

        async def commands_under_way() -> None:  # as the control socket's wait for a backup still writing
            waiting.set()
            halted.append(await e.halt(reason="ffe ctl halt", by="ctl"))

        e.before_stop = commands_under_way
        e.request_stop()
        await e.run()
        assert waiting.is_set() and halted and halted[0].cancelled == [open_cid], halted
    assert db_rows(db, "SELECT state, reason, by FROM engine_state") == [("HALTED", "ffe ctl halt", "ctl")]


async def test_an_order_checked_before_a_halt_is_journaled_but_never_sent(tmp_path):
    """The gates passed while RUNNING; a halt lands before the send: the order path looks at the state again."""
    async with engine_session(make_settings(tmp_path)) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await feed(e, candles, 2)
        intent = OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, reason=OrderReason.OPERATOR,
                             ref_price=e.portfolio.last_price[BTC])
        gates = e.orders.check(intent)
        assert all(g.passed for g in gates)

        await e.halt(reason="kill switch", by="test")
        sent_before = dict(e.venue.orders)
        sub = await e.orders.submit(intent, gates)

        assert not sub.accepted
        assert sub.order is not None
        assert e.venue.orders == sent_before  # the venue never saw it
        row = db_rows(running.store.path, "SELECT status, error FROM orders WHERE client_order_id = ?",
                      (sub.order.client_order_id,))
        assert row and row[0][0] == "rejected" and "HALTED" in row[0][1]  # journaled, then refused
        assert sub.order.client_order_id not in e.orders.live


async def test_a_halt_racing_an_order_in_flight_keeps_it_from_the_venue(tmp_path):
    """submit() and halt() started together: submit has passed its gates and is writing its journal entry when
    the halt sets HALTED; nothing reaches the venue and nothing is left open."""
    async with engine_session(make_settings(tmp_path)) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await feed(e, candles, 2)
        intent = OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, reason=OrderReason.OPERATOR,
                             ref_price=e.portfolio.last_price[BTC])
        sub, report = await asyncio.gather(e.orders.submit(intent), e.halt(by="test"))
        assert all(g.passed for g in sub.gates)  # it was allowed when it was checked
        assert not sub.accepted
        assert e.venue.orders == {}
        assert db_value(running.store.path, "SELECT status FROM orders") == "rejected"
        assert e.orders.live == {} and report.failed == []


# ---------------------------------------------------------------------------------------------------- flatten
async def test_flatten_cancels_orders_closes_every_position_reduce_only_and_halts(tmp_path):
    settings = make_settings(tmp_path, risk={"max_correlation": 1.0, "max_open_positions": 3})
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await feed(e, candles, 2)
        eth = await e.operator_order(ETH, "buy", 0.2)
        assert eth["accepted"], eth
        await feed_until(e, candles, ETH)
        _, open_cid = await open_position_and_order(e, candles)
        assert set(e.portfolio.positions) == {BTC, ETH}
        held = {s: p.quantity for s, p in e.portfolio.positions.items()}

        result = await e.flatten(by="test")

        assert e.state is EngineState.HALTED
        assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
        assert open_cid in result["cancelled"] and e.venue.orders[open_cid].status == "canceled"
        assert result["failed"] == []
        closing = db_rows(db, "SELECT client_order_id, symbol, side, quantity, reduce_only, status FROM orders "
                              "WHERE reason = 'flatten'")
        assert {r[0] for r in closing} == set(result["closing"])
        assert {r[1]: r[3] for r in closing} == pytest.approx(held)
        assert all(r[2] == "sell" and r[4] == 1 and r[5] == "open" for r in closing)
        # The halt it begins with (its cancels), then the flatten's own: its closing orders, and how long it took.
        halt, kill = events(db, "kill_switch")
        assert (halt["action"], halt["by"], halt["cancelled"]) == ("halt", "test", [open_cid]), halt
        assert kill["action"] == "flatten" and sorted(kill["closing"]) == sorted(result["closing"])
        assert open_cid in kill["cancelled"] and kill["elapsed_ms"] >= halt["elapsed_ms"] > 0, (halt, kill)

        # The next candle of each symbol fills the closing orders: no position left, the trades recorded.
        await feed_until(e, candles, BTC)
        await feed_until(e, candles, ETH)
        assert e.portfolio.positions == {}
        assert db_rows(db, "SELECT * FROM positions") == []
        trades = db_rows(db, "SELECT symbol, quantity, reason FROM trades ORDER BY id")
        assert {t[0]: t[1] for t in trades} == pytest.approx(held)
        assert {t[2] for t in trades} == {"flatten"}
        assert e.venue.balances.get("BTC", 0.0) == pytest.approx(0.0, abs=1e-9)
        # Still halted afterwards: the strategy orders nothing.
        n_orders = db_value(db, "SELECT COUNT(*) FROM orders")
        await feed(e, candles, 40)
        assert db_value(db, "SELECT COUNT(*) FROM orders") == n_orders


async def test_a_flatten_cut_short_as_it_stores_halted_is_either_gone_on_with_or_never_recorded(tmp_path):
    # The process can end anywhere in a flatten: the HALTED it stores and the positions it is to close are one
    # record, so an engine started again either closes them or finds no flatten at all, never HALTED by a flatten
    # with its positions left open. Here the audit disk holds the first write after the halt, as a slow disk does,
    # and the process ends there.
    settings = make_settings(tmp_path)
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await feed(e, candles, 2)
        assert (await e.operator_order(BTC, "buy", 0.01))["accepted"]
        await feed_until(e, candles, BTC)
        assert BTC in e.portfolio.positions
        await e.flush()
        disk = threading.Event()  # set: the disk answers
        running.audit.thread.submit(disk.wait)
        flattening = asyncio.ensure_future(e.flatten(by="test"))
        try:
            for _ in range(100):  # as far as the flatten gets while the disk holds (two seconds at most)
                if db_value(db, "SELECT state FROM engine_state") == "HALTED":
                    break
                await asyncio.sleep(0.02)
            flattening.cancel()  # the process ends here
            with contextlib.suppress(asyncio.CancelledError):
                await flattening
        finally:
            disk.set()
    async with engine_session(settings) as running:
        e = running.engine
        if e.state is EngineState.HALTED:
            assert e.state_reason == "flatten"
            loop = asyncio.ensure_future(e.run())
            try:
                for _ in range(400):
                    if BTC not in e.portfolio.positions:
                        break
                    await asyncio.sleep(0.05)
            finally:
                e.request_stop()
                await loop
            assert BTC not in e.portfolio.positions, "HALTED by a flatten, its position left open"
        else:
            assert db_value(db, "SELECT COUNT(*) FROM orders WHERE reason = 'flatten'") == 0


# ---------------------------------------------------------------------------------------------------- pause
def _wave(i: int, base: float = 100.0) -> float:
    return base * (1.0 + 0.02 * math.sin(i / 5.0))


class Bars:
    """Candles made up by the test for one symbol, one minute apart, each opening at the previous close."""

    def __init__(self, engine, symbol: str) -> None:
        self.engine = engine
        self.symbol = symbol
        self.ts = engine.feed.start_ts
        self.prev = None

    async def bar(self, close: float, low: float | None = None, high: float | None = None) -> Candle:
        o = self.prev if self.prev is not None else close
        c = Candle(self.symbol, self.ts, o, high if high is not None else max(o, close) * 1.002,
                   low if low is not None else min(o, close) * 0.998, close, 1000.0)
        self.ts += 60_000
        self.prev = close
        self.engine.clock.advance(c.ts + 60_000)
        await self.engine.on_candle(c)
        return c


@pytest.mark.parametrize("exit_reason", ["stop_loss", "take_profit"])
async def test_pause_refuses_new_entries_but_stop_loss_and_take_profit_exits_still_go_out(tmp_path, exit_reason):
    settings = make_settings(tmp_path, engine={"symbols": [BTC], "warmup_bars": 0})
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        bars = Bars(e, BTC)
        i = 0
        while BTC not in e.portfolio.positions:  # the strategy enters on its own, with a stop and a target
            await bars.bar(_wave(i))
            i += 1
            assert i < 400, "the strategy never entered"
        pos = e.portfolio.positions[BTC]
        assert pos.stop_loss is not None and pos.take_profit is not None
        assert pos.stop_loss < bars.prev < pos.take_profit

        await e.pause(reason="test", by="test")
        assert db_value(db, "SELECT state FROM engine_state") == "PAUSED"
        if exit_reason == "stop_loss":
            await bars.bar(pos.stop_loss * 0.97, low=pos.stop_loss * 0.96)
        else:
            await bars.bar(pos.take_profit * 1.01, high=pos.take_profit * 1.02)
        exits = db_rows(db, "SELECT client_order_id, side, reduce_only, status FROM orders WHERE reason = ?",
                        (exit_reason,))
        assert len(exits) == 1 and exits[0][1:] == ("sell", 1, "open")  # sent while PAUSED
        await bars.bar(bars.prev)  # the next open fills it
        assert BTC not in e.portfolio.positions
        assert db_rows(db, "SELECT reason FROM trades") == [(exit_reason,)]

        # Still paused: the strategy keeps deciding, and every entry it wants is refused by ENGINE_STATE.
        entries_before = db_value(db, "SELECT COUNT(*) FROM orders WHERE reduce_only = 0")
        start = db_value(db, "SELECT MAX(seq) FROM events")
        for k in range(300):
            await bars.bar(_wave(i + k))
        buys = [d for d in events(db, "decision", after_seq=start) if d["action"] == "BUY"]
        assert buys, "no BUY decision while paused"
        for d in buys:
            assert d["outcome"] == "rejected", d
            g = d["gates"][0]
            assert (g["code"], g["value"], g["limit"], g["passed"]) == ("ENGINE_STATE", "PAUSED", "RUNNING", False)
        assert db_value(db, "SELECT COUNT(*) FROM orders WHERE reduce_only = 0") == entries_before
        assert e.state is EngineState.PAUSED


class CancelsFailVenue(PaperVenue):
    """The paper exchange behind a network that drops cancel requests while `down`."""

    down = False

    async def cancel_order(self, client_order_id: str, symbol: str):
        if self.down:
            raise VenueUnavailable("connection reset by peer")
        return await super().cancel_order(client_order_id, symbol)


async def test_a_cancel_that_fails_is_reported_and_the_engine_is_halted_all_the_same(tmp_path):
    settings = make_settings(tmp_path)
    venue = CancelsFailVenue([BTC, ETH], starting_cash=10_000.0, quote="USDT", fee_bps=10.0, slippage_bps=5.0)
    async with engine_session(settings, venue=venue) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        await feed(e, candles, 2)
        _, open_cid = await open_position_and_order(e, candles)
        venue.down = True
        report = await e.halt(by="test")
        assert report.cancelled == []
        assert [f["client_order_id"] for f in report.failed] == [open_cid]
        assert "connection reset" in report.failed[0]["error"]
        assert db_value(settings.db_path, "SELECT state FROM engine_state") == "HALTED"
        (kill,) = events(settings.db_path, "kill_switch")
        assert kill["cancelled"] == [] and kill["failed"] == report.failed  # the audit says what could not be
        assert venue.orders[open_cid].status == "open"  # still working at the venue, and known to be


async def test_paused_survives_a_restart(tmp_path):
    settings = make_settings(tmp_path)
    async with engine_session(settings) as running:
        await running.engine.pause(reason="lunch", by="test")
    async with engine_session(settings) as running:
        assert running.engine.state is EngineState.PAUSED and running.engine.state_reason == "lunch"
        refused = await running.engine.operator_order(BTC, "buy", 0.01)
        assert not refused["accepted"] and refused["gates"][0]["value"] == "PAUSED"
        assert await running.engine.resume() is EngineState.RUNNING  # a pause needs no confirmation
