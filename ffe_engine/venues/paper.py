"""Paper venue: an in-process exchange.

It behaves like a spot exchange: balances per asset, funds reserved while an order is open, amount precision and
minimum notional enforced, and market orders that fill at the next price (the open of the next candle for the
symbol) with slippage (within the candle's range) and a fee in the quote currency, a buy no more than the cash
pays for at that price (the rest expires). Orders stay open until then and can be cancelled, exactly
as an order on a real venue can be in flight when the kill switch is pressed.

Its book is JSON-serialisable (`state()` / `load()`) so a paper account survives a restart.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import Candle, MarketInfo, OrderRequest, Side, VenueOrder, floor_to_step
from .base import VenueError, VenueUnavailable


def _split(symbol: str) -> tuple[str, str]:
    base, _, quote = symbol.partition("/")
    return base, quote


class PaperVenue:
    """A simulated exchange (venues.base.SimulatedVenue): fills market orders on the next candle's open."""

    name = "paper"
    settle_s = 0.0  # every answer arrives: an order is never in doubt for long

    def __init__(self, symbols: list[str], *, starting_cash: float, quote: str, fee_bps: float, slippage_bps: float,
                 min_notional: float = 10.0, amount_step: float = 1e-6) -> None:
        self.symbols = list(symbols)
        self.quote = quote
        self.fee = fee_bps / 10_000.0
        self.slip = slippage_bps / 10_000.0
        self.min_notional = min_notional
        self.amount_step = amount_step
        self.balances: dict[str, float] = {quote: starting_cash}
        self.reserved: dict[str, float] = {}
        self.orders: dict[str, VenueOrder] = {}
        self.open_ids: list[str] = []
        self._reservations: dict[str, tuple[str, float]] = {}  # client order id -> (asset, amount reserved)
        self.last: dict[str, float] = {}
        # The number of the last exchange id given (P1, P2, ...): saved with the book, which keeps only the recent
        # final orders, so that a restart never gives an id again.
        self.exchange_id_seq = 0
        self.now_ms = 0
        self.dirty = False

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def reload_markets(self) -> None:
        return None  # its markets never change

    def market(self, symbol: str) -> MarketInfo:
        base, quote = _split(symbol)
        return MarketInfo(symbol=symbol, base=base, quote=quote, amount_step=self.amount_step, price_step=1e-8,
                          min_qty=self.amount_step, min_notional=self.min_notional)

    # ------------------------------------------------------------------ market data
    def on_candle(self, c: Candle) -> int:
        """A new candle: fill the symbol's open market orders at its open, then rest at its close.
        Returns how many orders filled."""
        self.now_ms = c.ts
        filled = 0
        if self.open_ids:
            for cid in list(self.open_ids):
                o = self.orders[cid]
                # An order fills at the open of a candle that opened after it was placed: one placed on this very
                # candle (a replay's candle handed out again after a kill, the stop-loss it triggered placed before
                # the kill) or on another symbol's candle of this bar has its open behind it.
                if o.symbol != c.symbol or (o.ts is not None and o.ts >= c.ts):
                    continue
                if o.type == "market":
                    self._fill(o, c.open, low=c.low, high=c.high)
                    filled += 1
                elif o.price is not None and ((o.side is Side.BUY and c.low <= o.price)
                                              or (o.side is Side.SELL and c.high >= o.price)):
                    self._fill(o, o.price, slippage=False)
                    filled += 1
        self.last[c.symbol] = c.close
        return filled

    def set_price(self, symbol: str, price: float) -> None:
        self.last[symbol] = price

    def resume_at(self, ts_ms: int) -> None:
        self.now_ms = max(self.now_ms, ts_ms)

    # ------------------------------------------------------------------ orders
    def _round(self, qty: float) -> float:
        return floor_to_step(qty, self.amount_step)

    async def create_order(self, req: OrderRequest) -> VenueOrder:
        existing = self.orders.get(req.client_order_id)
        if existing is not None:
            if existing.status == "open":
                raise VenueError(f"duplicate client order id {req.client_order_id}")
            return existing
        if req.symbol not in self.symbols:
            raise VenueError(f"unknown symbol {req.symbol}")
        price = req.price if req.type == "limit" else self.last.get(req.symbol)
        if price is None or price <= 0:
            # Nothing said of the order: no candle of the symbol has come since the start (a restart sends its
            # orders in doubt again before the warm-up). It may go once one has; no failure of the venue's.
            raise VenueUnavailable(f"no price for {req.symbol} yet", sent=False)
        qty = self._round(req.quantity)
        if qty <= 0 or qty * price < self.min_notional:
            raise VenueError(f"order below minimum notional {self.min_notional} {self.quote}: {qty} {req.symbol}")
        base, quote = _split(req.symbol)
        if req.side is Side.BUY:
            need = qty * price * (1.0 + self.slip) * (1.0 + self.fee)
            asset = quote
        else:
            need = qty
            asset = base
        free = self.balances.get(asset, 0.0) - self.reserved.get(asset, 0.0)
        if need > free + 1e-9:
            raise VenueError(f"insufficient {asset} balance: need {need:.8g}, free {free:.8g}")
        self.reserved[asset] = self.reserved.get(asset, 0.0) + need
        self.exchange_id_seq += 1
        o = VenueOrder(client_order_id=req.client_order_id, symbol=req.symbol, side=req.side, quantity=qty,
                       status="open", type=req.type, price=req.price, exchange_id=f"P{self.exchange_id_seq}",
                       ts=self.now_ms)
        self.orders[o.client_order_id] = o
        self.open_ids.append(o.client_order_id)
        self._reservations[o.client_order_id] = (asset, need)
        self.dirty = True
        return _copy(o)

    def _release(self, cid: str) -> None:
        asset, amount = self._reservations.pop(cid, (None, 0.0))
        if asset is not None:
            self.reserved[asset] = max(0.0, self.reserved.get(asset, 0.0) - amount)

    def _fill(self, o: VenueOrder, ref: float, slippage: bool = True, low: float | None = None,
              high: float | None = None) -> None:
        """Fill `o` at `ref`, moved against it by the slippage but never past what the market traded in the bar
        (`low`..`high`). A buy takes no more than the cash pays for: reserved at the last close and filled at a
        dearer open, it fills what the account can pay (to the amount step; nothing below the minimum notional)
        and the rest expires, as a spot exchange's market order does."""
        base, quote = _split(o.symbol)
        px = ref
        if slippage:
            px = ref * (1.0 + self.slip) if o.side is Side.BUY else ref * (1.0 - self.slip)
            if high is not None and px > high:
                px = high
            if low is not None and px < low:
                px = low
        qty = o.quantity
        self._release(o.client_order_id)
        if o.side is Side.SELL:
            qty = min(qty, self.balances.get(base, 0.0))
        else:
            free = self.balances.get(quote, 0.0) - self.reserved.get(quote, 0.0)
            if qty * px + qty * px * self.fee > free:
                qty = self._round(max(0.0, free) / (px * (1.0 + self.fee)))
                while qty > 0 and qty * px + qty * px * self.fee > free:  # a rounding's last bit over
                    qty = self._round(qty - self.amount_step)
                if qty * px < self.min_notional:
                    qty = 0.0
        fee = qty * px * self.fee
        if o.side is Side.BUY:
            self.balances[quote] = self.balances.get(quote, 0.0) - qty * px - fee
            if qty > 0:
                self.balances[base] = self.balances.get(base, 0.0) + qty
        else:
            self.balances[base] = self.balances.get(base, 0.0) - qty
            self.balances[quote] = self.balances.get(quote, 0.0) + qty * px - fee
        o.filled = qty
        o.average = px if qty > 0 else None
        o.fee = fee
        o.status = "expired" if o.side is Side.BUY and qty < o.quantity else "closed"
        self.open_ids.remove(o.client_order_id)
        self.dirty = True

    async def cancel_order(self, client_order_id: str, symbol: str) -> VenueOrder:
        o = self.orders.get(client_order_id)
        if o is None:
            raise VenueError(f"unknown order {client_order_id}")
        if o.status == "open":
            o.status = "canceled"
            self._release(client_order_id)
            self.open_ids.remove(client_order_id)
            self.dirty = True
        return _copy(o)

    async def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        o = self.orders.get(client_order_id)
        return None if o is None else _copy(o)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return [_copy(self.orders[c]) for c in self.open_ids if symbol is None or self.orders[c].symbol == symbol]

    async def fetch_balance(self) -> dict[str, float]:
        return {k: v for k, v in self.balances.items() if abs(v) > 1e-12}

    async def fetch_balance_locked(self) -> tuple[dict[str, float], dict[str, float]]:
        return await self.fetch_balance(), dict(self.reserved)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {
            "balances": self.balances,
            "reserved": self.reserved,
            "reservations": {k: list(v) for k, v in self._reservations.items()},
            "last": self.last,
            "exchange_id_seq": self.exchange_id_seq,
            # open orders, and the most recent final ones so a lookup by client order id still answers
            "orders": [_order_dict(o) for o in list(self.orders.values())[-200:] if o.status != "open"]
            + [_order_dict(self.orders[c]) for c in self.open_ids],
        }

    def load(self, state: dict[str, Any]) -> None:
        self.balances = dict(state.get("balances", self.balances))
        self.reserved = dict(state.get("reserved", {}))
        self._reservations = {k: (v[0], v[1]) for k, v in state.get("reservations", {}).items()}
        self.last.update(state.get("last", {}))
        for d in state.get("orders", []):
            o = VenueOrder(client_order_id=d["client_order_id"], symbol=d["symbol"], side=Side(d["side"]),
                           quantity=d["quantity"], status=d["status"], filled=d["filled"], average=d["average"],
                           fee=d["fee"], exchange_id=d["exchange_id"], type=d["type"], price=d["price"], ts=d["ts"])
            self.orders[o.client_order_id] = o
            if o.status == "open":
                self.open_ids.append(o.client_order_id)
        # A book saved before the counter was: continue after the highest id it holds. The counter never goes back.
        held = [_exchange_id_number(o.exchange_id) for o in self.orders.values()]
        self.exchange_id_seq = max([self.exchange_id_seq, int(state.get("exchange_id_seq", 0)), *held])


def _exchange_id_number(exchange_id: str | None) -> int:
    """17 for "P17"; 0 for anything else."""
    match = re.fullmatch(r"P([0-9]+)", exchange_id or "")
    return int(match.group(1)) if match else 0


def _copy(o: VenueOrder) -> VenueOrder:
    return VenueOrder(client_order_id=o.client_order_id, symbol=o.symbol, side=o.side, quantity=o.quantity,
                      status=o.status, filled=o.filled, average=o.average, fee=o.fee, exchange_id=o.exchange_id,
                      type=o.type, price=o.price, ts=o.ts)


def _order_dict(o: VenueOrder) -> dict[str, Any]:
    return {"client_order_id": o.client_order_id, "symbol": o.symbol, "side": o.side.value, "quantity": o.quantity,
            "status": o.status, "filled": o.filled, "average": o.average, "fee": o.fee, "exchange_id": o.exchange_id,
            "type": o.type, "price": o.price, "ts": o.ts}
