"""The profit view's sums come from the store's trades (real SQLite): by UTC day, week and month of the close and
by symbol, each trade's P&L (net of fees) and fees counted once, and the mean duration in market time."""

from __future__ import annotations

from datetime import datetime, timezone

from ffe_engine.model import ClosedTrade, Fill, Order, OrderReason, OrderStatus, Side
from ffe_engine.store import FillRecord, Store

HOUR = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


# (symbol, pnl, fees, opened, closed): two on one day, one the next day in the same week, one in the next month.
TRADES = [("BTC/USDT", 12.5, 1.0, "2024-01-30T10:00", "2024-01-30T12:00"),
          ("ETH/USDT", -4.0, 0.5, "2024-01-30T13:00", "2024-01-30T14:00"),
          ("BTC/USDT", 3.0, 0.25, "2024-01-31T09:00", "2024-01-31T15:00"),
          ("ETH/USDT", 7.5, 0.75, "2024-02-05T00:00", "2024-02-05T04:00")]


async def _store_with_trades(tmp_path) -> Store:
    store = await Store.open(tmp_path / "ffe.db")
    for i, (sym, pnl, fees, opened, closed) in enumerate(TRADES):
        o = Order(client_order_id=f"ffe-exit-{i}", symbol=sym, side=Side.SELL, quantity=1.0, type="market",
                  reason=OrderReason.SIGNAL, venue="paper", reduce_only=True, created_ts=ms(closed))
        await store.journal_order(o)
        o.status, o.filled, o.average = OrderStatus.FILLED, 1.0, 100.0
        trade = ClosedTrade(symbol=sym, side=Side.BUY, quantity=1.0, entry_price=100.0, exit_price=100.0 + pnl,
                            pnl=pnl, fees=fees, reason="signal", opened_ts=ms(opened), closed_ts=ms(closed),
                            exit_client_order_id=o.client_order_id)
        fill = Fill(client_order_id=o.client_order_id, symbol=sym, side=Side.SELL, quantity=1.0, price=100.0,
                    fee=fees / 2, ts=ms(closed))
        await store.add_fill(fill, o, FillRecord(wall=0.0, trade=trade, closed_symbol=sym))
    return store


async def test_trade_sums_by_period_and_symbol(tmp_path):
    store = await _store_with_trades(tmp_path)
    try:
        [total] = await store.trade_stats(None)
        assert total["trades"] == 4 and total["wins"] == 3
        assert total["pnl"] == sum(t[1] for t in TRADES) and total["fees"] == sum(t[2] for t in TRADES)
        assert total["avg_duration_ms"] == sum(ms(t[4]) - ms(t[3]) for t in TRADES) / 4
        assert (total["best"], total["worst"]) == (12.5, -4.0)

        days = await store.trade_stats("day")
        assert [(d["key"], d["trades"], d["pnl"]) for d in days] == [
            ("2024-02-05", 1, 7.5), ("2024-01-31", 1, 3.0), ("2024-01-30", 2, 8.5)]  # newest first
        weeks = await store.trade_stats("week")
        assert [(w["key"], w["trades"]) for w in weeks] == [("2024-W06", 1), ("2024-W05", 3)]
        months = await store.trade_stats("month")
        assert [(m["key"], m["trades"], m["pnl"]) for m in months] == [("2024-02", 1, 7.5), ("2024-01", 3, 11.5)]
        symbols = await store.trade_stats("symbol")
        assert [(s["key"], s["trades"], s["wins"]) for s in symbols] == [("BTC/USDT", 2, 2), ("ETH/USDT", 2, 1)]
        assert len(await store.trade_stats("day", limit=2)) == 2
    finally:
        await store.close()


async def test_no_trade_yet_sums_to_nothing(tmp_path):
    store = await Store.open(tmp_path / "ffe.db")
    try:
        assert await store.trade_stats("day") == []
        assert await store.trade_stats("symbol") == []
        assert await store.last_entry_ts() is None
        assert await store.refusals_since(0) == []
    finally:
        await store.close()


async def test_weeks_are_iso_weeks_across_the_turn_of_the_year(tmp_path):
    """Monday to Sunday, numbered as ISO 8601 does: a week belongs to the year of its Thursday (2027-01-01, a Friday,
    is in 2026-W53; 2024-12-30, a Monday, in 2025-W01)."""
    closes = ["2026-12-03T10:00", "2026-12-05T23:59", "2027-01-01T00:00", "2027-01-03T23:00", "2027-01-04T00:00",
              "2024-12-30T12:00", "2021-01-03T12:00", "2020-12-28T00:30"]
    store = await Store.open(tmp_path / "ffe.db")
    try:
        for i, closed in enumerate(closes):
            o = Order(client_order_id=f"ffe-exit-{i}", symbol="BTC/USDT", side=Side.SELL, quantity=1.0,
                      type="market", reason=OrderReason.SIGNAL, venue="paper", reduce_only=True, created_ts=ms(closed))
            await store.journal_order(o)
            o.status, o.filled, o.average = OrderStatus.FILLED, 1.0, 100.0
            trade = ClosedTrade(symbol="BTC/USDT", side=Side.BUY, quantity=1.0, entry_price=100.0, exit_price=101.0,
                                pnl=1.0, fees=0.0, reason="signal", opened_ts=ms(closed) - HOUR, closed_ts=ms(closed),
                                exit_client_order_id=o.client_order_id)
            fill = Fill(client_order_id=o.client_order_id, symbol="BTC/USDT", side=Side.SELL, quantity=1.0,
                        price=101.0, fee=0.0, ts=ms(closed))
            await store.add_fill(fill, o, FillRecord(wall=0.0, trade=trade, closed_symbol="BTC/USDT"))
        weeks = await store.trade_stats("week", limit=20)
        assert [(w["key"], w["trades"]) for w in weeks] == [
            ("2027-W01", 1), ("2026-W53", 2), ("2026-W49", 2), ("2025-W01", 1), ("2020-W53", 2)]
        expected = {"{}-W{:02d}".format(*datetime.fromisoformat(c).isocalendar()[:2]) for c in closes}
        assert {w["key"] for w in weeks} == expected
    finally:
        await store.close()
