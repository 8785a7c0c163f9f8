"""A fake Binance spot exchange for the test suite: a real aiohttp server on 127.0.0.1, spoken to by real ccxt.

    async with FakeBinance() as fx:
        exchange = binance_client(fx)          # ccxt.async_support.binance wired to fx.url only
        fx.set_price("BTCUSDT", 30000.0)
        fx.fault("POST /api/v3/order", "drop_after")

It speaks the part of the Binance spot REST API that ccxt's `binance` uses for markets, tickers, klines, balances
and orders, checks the API key header, the HMAC-SHA256 signature and the timestamp/recvWindow like Binance does,
and keeps its own book: `fx.orders` (every order ever accepted, in order), `fx.balances` and `fx.requests`
(every request received, with the fault applied to it, if any). Tests assert on that book.

Behaviour that matters for the order path, as on Binance:
- a market order fills at once at the current price (`set_price`), against the balances, in one trade or (with
  `book_levels` above 1) in several at prices around it, as on a thin book;
- a buy's commission is taken from the coins received, as on Binance without BNB fee payment (or, with
  `buy_fee_in_quote`, from the quote currency, as exchanges that charge every fee in it do; or, with `fee_asset`,
  every commission from that token's balance, as with BNB fee payment);
- a limit order rests until the price crosses it (or fills at once if it already does);
- a new order is answered as its `newOrderRespType` asks: FULL (the order with its fills and their fees, the
  default), RESULT (the order: how much filled, not at what fees) or ACK (its ids only, nothing of its fills);
- a client order id is refused ("Duplicate order sent.") only while an order with that id is open: once it is
  filled or cancelled the id can be used again, so a blind resend of a filled order trades twice;
- unknown routes answer 400 with code -1020 (ccxt maps a bare 404 to a retryable error, Binance's code is final).

Faults are queued per route ("METHOD /path") and each is used once (or `times` times):
- "drop_after": run the request (an order is placed), then drop the connection without an answer;
- "drop_before": drop the connection without running the request;
- "hang": hold the request for `seconds` (past the client's timeout), or until `fx.end_hangs()`; `execute=True`
  runs it first;
- "slow": hold the request for `seconds` before running it, then answer normally;
- "5xx_executed": run the request, then answer `status` (503 by default) with a gateway error page;
- "5xx_not_executed": answer `status` without running the request; either with a Retry-After header of
  `page_retry_after` seconds when that is given (a proxy's or CDN's rate-limit page), and with `page_json` (a dict)
  for the page's body when that is given: an API gateway's error page written in JSON, not Binance's error;
- "429" / "418": answer Binance's rate-limit error with a Retry-After header (`retry_after` seconds): by default code
  -1003, the address's request weight (418: the address banned), or the Binance `code` given, e.g. -1015 ("Too
  many new orders", the account's limit on new orders, with its own message unless `msg` is given);
- "not_found_once": answer "Order does not exist." (-2013, GET) or "Unknown order sent." (-2011, DELETE) although
  the order exists, as Binance can for a moment after creating it;
- "error": answer `status` with Binance error `code` and `msg` without running the request;
- "stale": answer a read from the books as they stood before their last change, as a replica `seconds` behind can
  (once the last change is older than that, the replica has caught up and the read is answered as it is): the
  account's balances, the open orders, an order (as it stood before its own last change while that change is newer
  than the lag, whatever changed since; one that did not exist then: "Order does not exist.") or the trades
  (without the newest);
- "no_cost": run the request and answer its orders without what they cost (no `cummulativeQuoteQty`, no `fills`),
  as an exchange's terser answers can: how much filled, but not at what price;
- "fill_later": run the request, but a market order it places is answered NEW, nothing filled yet, and fills
  `seconds` later at the price then (unless cancelled first), as an exchange that fills market orders after it
  has acknowledged them;
- "expire": run the request, but the order it places is answered EXPIRED, nothing filled, as an order whose time in
  force found no liquidity, or that self-trade prevention ended, is;
- "page_200": answer 200 with an HTML page (a gateway's or a CDN's), after running the request unless
  `execute=False`; "empty_200": the same with `{}` for a body;
- "trade_twice": run the request and answer its trades (a trade list, or a new order's `fills`) with one of them
  listed twice (the trade whose id is `trade`, else the first), as Binance's trade list can; with `shuffle=True`
  the list is answered out of order too (newest first), and with `ids=False` without the trades' ids;
- "truncated": run the request and answer the first half of its body, as a connection cut short delivers it;
- "extra_trade": as "trade_twice", but the copy has an id of its own: the list names one more trade of the order than it
  made, so that its trades add up to more than the order filled;
- "cancel_later": a cancel (DELETE) is acknowledged with the order as it stands (NEW, or PARTIALLY_FILLED) and done
  `seconds` later, unless the order has filled meanwhile, as exchanges whose cancels are queued answer them;
- "cancel_unkept": a cancel is answered CANCELED, but the order stays open and can still fill, as an exchange whose
  answer raced a fill says the cancel it could not do was done.
`fx.quote_skew` (1.0: none) multiplies what every order answer says the order cost (`cummulativeQuoteQty`), its
trades, their fees and the balances left as they are: an answer whose cost disagrees with the trades the account made.
`fx.down = True` drops every connection (or answers `fx.down_status` when that is set) until set back to False.

Klines and the exchange's time (`/api/v3/time`) follow `fx.market_clock`; klines include the candle still open, as
Binance's do. `fx.klines_max` caps how many
one request answers (Binance: 1000) and `fx.kline_gaps` lists [from, to) periods without candles (no trades), which
a request passes over as Binance does.

Deliberate simplification: a partial fill requested with `partial_fill_next` leaves the remainder of any order,
market orders included, resting as PARTIALLY_FILLED until it is cancelled (or expires it with rest="expire"), so the
partial-fill path can be exercised with either order type.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable
from urllib.parse import parse_qsl

from aiohttp import web

FAULT_KINDS = ("drop_after", "drop_before", "hang", "slow", "5xx_executed", "5xx_not_executed", "429", "418", "expire",
               "not_found_once", "error", "stale", "no_cost", "fill_later", "page_200", "empty_200", "trade_twice",
               "extra_trade", "truncated", "cancel_later", "cancel_unkept")

# symbol id -> listing; prices are the starting points of the deterministic price path used by klines
LISTINGS: dict[str, dict[str, Any]] = {
    "BTCUSDT": {"base": "BTC", "quote": "USDT", "step": "0.00001", "min_qty": "0.00001", "tick": "0.01",
                "min_notional": "5", "price": 30000.0},
    "ETHUSDT": {"base": "ETH", "quote": "USDT", "step": "0.0001", "min_qty": "0.0001", "tick": "0.01",
                "min_notional": "5", "price": 2000.0},
}

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
ORDER_LIMIT = -1015  # Binance's code for the account's limit on new orders ("Too many new orders")
STALE = web.RequestKey("stale", float)  # answered from the books before a change less than this many seconds old
LATER = web.RequestKey("later", float)  # a market order the request places fills this many seconds later
EXPIRE = web.RequestKey("expire", bool)  # the order the request places expires in its answer, nothing filled
CANCEL_HOW = web.RequestKey("cancel_how", tuple)  # ("cancel_later" or "cancel_unkept", seconds): a cancel not done
INTERVAL_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class ApiError(Exception):
    """A Binance error answer: HTTP status plus {"code": ..., "msg": ...}."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class Balance:
    free: float
    locked: float = 0.0

    @property
    def total(self) -> float:
        return self.free + self.locked


@dataclass
class Trade:
    trade_id: int
    price: float
    qty: float
    commission: float
    commission_asset: str
    time: int


@dataclass
class FakeOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT
    qty: float
    price: float | None  # limit price
    reserve_price: float  # price the locked quote was computed at (buys)
    time: int
    status: str = "NEW"  # NEW | PARTIALLY_FILLED | FILLED | CANCELED | EXPIRED
    filled: float = 0.0
    quote_filled: float = 0.0
    update_time: int = 0
    trades: list[Trade] = field(default_factory=list)
    before: dict[str, Any] | None = None  # its answer before its last change (None: it did not exist then)
    changed_at: float = field(default_factory=time.time)  # wall time of its last change (its creation at first)

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> float:
        return _round(self.qty - self.filled)


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    fault: str | None = None
    status: int | None = None  # None when the connection was dropped
    received: float = field(default_factory=time.time)  # wall time the request arrived (s)
    answered: float | None = None  # wall time its answer went out (s); None while held or when dropped

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Fault:
    kind: str
    times: int = 1
    status: int = 503
    retry_after: int = 1
    page_retry_after: int | None = None  # 5xx_executed, 5xx_not_executed: the page's Retry-After header
    page_json: dict[str, Any] | None = None  # 5xx_executed, 5xx_not_executed: the page's body, in JSON
    seconds: float = 30.0
    execute: bool = True
    code: int | None = None  # "error": -1000 when None; "429"/"418": -1003 when None
    msg: str | None = None  # "error": Binance's unknown error when None; "429"/"418": the code's own message
    trade: int | None = None  # trade_twice, extra_trade: the id of the trade listed again (None: the first)
    shuffle: bool = False  # trade_twice, extra_trade: the list answered newest first
    ids: bool = True  # trade_twice: False answers the trades without their ids


def _round(x: float) -> float:
    return round(x, 12)


def _commission(x: float) -> float:
    """A commission as Binance charges it: to the 8 decimals its answers carry, the balance taken the same."""
    return round(x, 8)


def _fmt(x: float | None) -> str:
    return f"{(x or 0.0):.8f}"


def interval_ms(interval: str) -> int:
    try:
        return int(interval[:-1]) * INTERVAL_UNITS_MS[interval[-1]]
    except (KeyError, ValueError):
        raise ApiError(400, -1120, "Invalid interval.") from None


def path_price(symbol: str, ts: int) -> float:
    """The deterministic price path klines are drawn from: a smooth wave around the listing price."""
    base = LISTINGS[symbol]["price"]
    i = ts // 60_000
    return round(base * (1.0 + 0.02 * math.sin(i / 50.0) + 0.005 * math.sin(i / 7.0)), 2)


def kline(symbol: str, open_ms: int, iv_ms: int,
          path: Callable[[str, int], float] = path_price) -> tuple[int, float, float, float, float, float]:
    """(open time, open, high, low, close, volume) of the candle starting at open_ms, as /klines serves it."""
    o = path(symbol, open_ms)
    c = path(symbol, open_ms + iv_ms)
    h = round(max(o, c) * 1.001, 2)
    lo = round(min(o, c) * 0.999, 2)
    vol = float(1 + (open_ms // iv_ms) % 10)
    return open_ms, o, h, lo, c, vol


class FakeBinance:
    def __init__(self, *, api_key: str = "fake-api-key-7Qw2", secret: str = "fake-secret-Zx93kLm0",
                 balances: dict[str, float] | None = None, fee_rate: float = 0.001) -> None:
        self.api_key = api_key
        self.secret = secret
        self.fee_rate = fee_rate
        # Where a buy's commission is taken from: the coins received (Binance without BNB fee payment), or the
        # quote currency, as exchanges that charge every fee in it do.
        self.buy_fee_in_quote = False
        # Or, per trade, one then the other: a buy's first trade pays in the coins received, its second in the quote
        # currency, and so on, as an account whose fee payment changes between the trades of one order.
        self.mixed_buy_fees = False
        # Or every commission in the exchange's own token (Binance's BNB fee payment), at this price in the quote.
        self.fee_asset: str | None = None
        self.quote_skew = 1.0  # what order answers say the orders cost, against their trades (module doc)
        self.fee_asset_price = 300.0
        # How many trades a market order fills in: one at the price, or (walking the book) several, each at its own
        # price `book_step` apart around the price (each with its own commission), as on a thin book.
        self.book_levels = 1
        self.book_step = 0.0005
        self.my_trades_page = 500  # the trades myTrades answers when asked for no `limit` (Binance's default)
        # Trade ids the trade list leaves out for now (listed late), as an exchange can list a later trade of an order
        # before an earlier one that a new order's answer already named.
        self.unlisted: set[int] = set()
        self.balances: dict[str, Balance] = {
            asset: Balance(float(amount))
            for asset, amount in (balances if balances is not None else {"USDT": 10_000.0, "BTC": 0.0,
                                                                          "ETH": 0.0}).items()}
        self.prices: dict[str, float] = {s: info["price"] for s, info in LISTINGS.items()}
        self.orders: list[FakeOrder] = []
        self.requests: list[Recorded] = []
        self.on_request: Callable[[Recorded], None] | None = None  # called as each request arrives, before its answer
        self.down = False
        self.down_status: int | None = None
        # klines and tickers use this clock (ms); signatures are always checked against the real time
        self.market_clock: Callable[[], int] = lambda: int(time.time() * 1000)
        self.time_answer: Callable[[], int] | None = None  # what /api/v3/time answers, when not the market clock
        # what orders and trades are stamped with, when not the real time: the market clock, for a test whose orders
        # must keep the clock the klines keep, as an exchange's do (requests' timestamps are checked all the same)
        self.order_clock: Callable[[], int] | None = None
        self.klines_max = 1000  # the most candles /klines serves per request (Binance: 1000)
        self.kline_gaps: list[tuple[int, int]] = []  # [from, to) open times with no candle: no trades then
        # klines follow this path (symbol id, ms -> price): a test can give the strategy a market it acts on
        self.price_path: Callable[[str, int], float] = path_price
        # what /klines answers is passed through this last (a test serves rows no exchange should: an unreadable time)
        self.klines_edit: Callable[[list[list[Any]]], list[list[Any]]] = lambda rows: rows
        self._faults: dict[str, deque[Fault]] = {}
        self._partial: tuple[float, str] | None = None
        # The books before their last change, which a "stale" read answers from.
        self._balances_before = {a: (b.free, b.locked) for a, b in self.balances.items()}
        self._open_before: list[dict[str, Any]] = []
        self._changed_at = 0.0  # when the books last changed (time.time())
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._release = asyncio.Event()  # set at shutdown (or by end_hangs): ends every hanging request
        self._later: list[asyncio.TimerHandle] = []  # market orders to fill later ("fill_later")
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def __aenter__(self) -> "FakeBinance":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/api/v3/ping", self._ping)
        r.add_get("/api/v3/time", self._time)
        r.add_get("/api/v3/exchangeInfo", self._exchange_info)
        r.add_get("/api/v3/ticker/24hr", self._ticker_24hr)
        r.add_get("/api/v3/ticker/price", self._ticker_price)
        r.add_get("/api/v3/klines", self._klines)
        r.add_get("/api/v3/account", self._signed(self._account))
        r.add_post("/api/v3/order", self._signed(self._post_order))
        r.add_get("/api/v3/order", self._signed(self._get_order))
        r.add_delete("/api/v3/order", self._signed(self._delete_order))
        r.add_get("/api/v3/openOrders", self._signed(self._open_orders))
        r.add_get("/api/v3/allOrders", self._signed(self._all_orders))
        r.add_delete("/api/v3/openOrders", self._signed(self._cancel_all))
        r.add_get("/api/v3/myTrades", self._signed(self._my_trades))
        r.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        self._release.set()
        for handle in self._later:
            handle.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- test controls -----------------------------------------------------------------------------------------
    def end_hangs(self) -> None:
        """End the requests hanging now (answered if they ran, else dropped), as their `seconds` would; a hang
        that begins later waits its own time."""
        self._release.set()
        self._release = asyncio.Event()

    def fault(self, route: str, kind: str, **opts: Any) -> None:
        """Queue a fault for the next request(s) on `route`, e.g. fault("POST /api/v3/order", "429")."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        self._faults.setdefault(route, deque()).append(Fault(kind, **opts))

    def clear_faults(self, route: str) -> None:
        self._faults.pop(route, None)

    def pending_faults(self, route: str) -> int:
        return sum(f.times for f in self._faults.get(route, ()))

    def set_price(self, symbol: str, price: float) -> None:
        """Move the market: resting limit orders that the new price crosses fill at their limit price."""
        self.prices[symbol] = float(price)
        for order in [o for o in self.orders if o.open and o.symbol == symbol and o.type == "LIMIT"]:
            assert order.price is not None
            if (order.side == "BUY" and price <= order.price) or (order.side == "SELL" and price >= order.price):
                self._fill(order, order.remaining, order.price)

    def partial_fill_next(self, fraction: float, rest: str = "open") -> None:
        """The next fill fills only `fraction` of the order; the rest stays open (or expires with rest="expire")."""
        if not 0.0 < fraction < 1.0 or rest not in ("open", "expire"):
            raise ValueError("fraction must be in (0, 1) and rest 'open' or 'expire'")
        self._partial = (fraction, rest)

    def fill(self, client_id: str, qty: float | None = None, price: float | None = None) -> FakeOrder:
        """Fill (part of) an open order by hand, at its limit price or the current price."""
        order = self.open_order(client_id)
        if order is None:
            raise KeyError(client_id)
        self._fill(order, qty if qty is not None else order.remaining,
                   price if price is not None else (order.price or self.prices[order.symbol]))
        return order

    def expire(self, client_id: str) -> FakeOrder:
        """End an open order on the exchange's own (EXPIRED), releasing what it holds, as an exchange that drops an
        order: it is then in no list of open orders."""
        return self.end(client_id, "EXPIRED")

    def end(self, client_id: str, status: str) -> FakeOrder:
        """End an open order on the exchange's own, with `status` (EXPIRED, REJECTED, CANCELED), releasing what it
        holds, as an exchange that ends an order it had accepted."""
        order = self.open_order(client_id)
        if order is None:
            raise KeyError(client_id)
        self._close(order, status)
        return order

    def orders_with(self, client_id: str) -> list[FakeOrder]:
        return [o for o in self.orders if o.client_id == client_id]

    def open_order(self, client_id: str) -> FakeOrder | None:
        return next((o for o in self.orders if o.client_id == client_id and o.open), None)

    def open_orders(self) -> list[FakeOrder]:
        return [o for o in self.orders if o.open]

    def requests_to(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def _order_time(self) -> int:
        return (self.order_clock or self.now_ms)()

    # -- plumbing ----------------------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        params = dict(request.query)
        body = await request.text()
        if body:
            params.update(parse_qsl(body, keep_blank_values=True))
        rec = Recorded(request.method, request.path, params)
        self.requests.append(rec)
        if self.on_request is not None:
            self.on_request(rec)
        if self.down:
            rec.fault = "down"
            if self.down_status is None:
                return self._drop(request)
            rec.status = self.down_status
            return web.Response(status=self.down_status, text="Service Unavailable")
        fault = self._take_fault(rec.route)
        if fault is None:
            resp = await self._run(handler, request)
        else:
            rec.fault = fault.kind
            resp = await self._apply(fault, handler, request)
        rec.status = resp.status if not getattr(resp, "dropped", False) else None
        if rec.status is not None:
            rec.answered = time.time()
        return resp

    async def _run(self, handler: Callable, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return self._error(e.status, e.code, e.msg)

    async def _apply(self, f: Fault, handler: Callable, request: web.Request) -> web.StreamResponse:
        if f.kind == "drop_after":
            await self._run(handler, request)
            return self._drop(request)
        if f.kind == "drop_before":
            return self._drop(request)
        if f.kind == "hang":
            resp = await self._run(handler, request) if f.execute else None
            try:
                await asyncio.wait_for(self._release.wait(), f.seconds)
            except asyncio.TimeoutError:
                pass
            return resp if resp is not None else self._drop(request)
        if f.kind == "slow":  # the request waits `seconds` on the way in, then runs and is answered
            await asyncio.sleep(f.seconds)
            return await self._run(handler, request)
        if f.kind in ("5xx_executed", "5xx_not_executed"):
            if f.kind == "5xx_executed":
                await self._run(handler, request)
            if f.page_json is not None:
                page = web.Response(status=f.status, text=json.dumps(f.page_json), content_type="application/json")
            else:
                page = web.Response(status=f.status, text=f"<html><body><h1>{f.status} Service Unavailable</h1>"
                                                          "</body></html>", content_type="text/html")
            if f.page_retry_after is not None:
                page.headers["Retry-After"] = str(f.page_retry_after)
            return page
        if f.kind in ("429", "418"):
            code = f.code if f.code is not None else -1003
            if f.msg is not None:
                msg = f.msg
            elif code == ORDER_LIMIT:
                msg = "Too many new orders; current limit is 100 orders per 10 SECOND."
            elif f.kind == "429":
                msg = "Too many requests; current limit of IP is 6000 requests per minute."
            else:
                msg = "Way too many requests; IP banned until later."
            resp = self._error(int(f.kind), code, msg)
            resp.headers["Retry-After"] = str(f.retry_after)
            return resp
        if f.kind == "stale":
            request[STALE] = f.seconds
            return await self._run(handler, request)
        if f.kind == "fill_later":
            request[LATER] = f.seconds
            return await self._run(handler, request)
        if f.kind == "expire":
            request[EXPIRE] = True
            return await self._run(handler, request)
        if f.kind in ("cancel_later", "cancel_unkept"):
            request[CANCEL_HOW] = (f.kind, f.seconds)
            return await self._run(handler, request)
        if f.kind == "no_cost":
            resp = await self._run(handler, request)
            if resp.status != 200 or not isinstance(resp, web.Response) or resp.text is None:
                return resp
            body = json.loads(resp.text)
            for order in body if isinstance(body, list) else [body]:
                if isinstance(order, dict):
                    order.pop("cummulativeQuoteQty", None)
                    order.pop("fills", None)
            return web.json_response(body)
        if f.kind in ("trade_twice", "extra_trade"):
            resp = await self._run(handler, request)
            if resp.status != 200 or not isinstance(resp, web.Response) or resp.text is None:
                return resp
            body = json.loads(resp.text)
            trades = body if isinstance(body, list) else body.get("fills") if isinstance(body, dict) else None
            if trades:
                self._list_again(trades, f)
            return web.json_response(body)
        if f.kind == "truncated":  # its body cut half way, as a connection that closed early delivers it
            resp = await self._run(handler, request)
            if not isinstance(resp, web.Response) or resp.text is None:
                return resp
            return web.Response(status=resp.status, text=resp.text[: len(resp.text) // 2],
                                content_type="application/json")
        if f.kind in ("page_200", "empty_200"):
            if f.execute:
                await self._run(handler, request)
            if f.kind == "empty_200":
                return web.json_response({})
            return web.Response(status=200, text="<html><body><h1>Please wait</h1></body></html>",
                                content_type="text/html")
        if f.kind == "not_found_once":
            if request.method == "DELETE":
                return self._error(400, -2011, "Unknown order sent.")
            return self._error(400, -2013, "Order does not exist.")
        return self._error(f.status, f.code if f.code is not None else -1000,  # "error"
                           f.msg if f.msg is not None else "An unknown error occurred while processing the request.")

    def _list_again(self, trades: list[dict[str, Any]], f: Fault) -> None:
        """One of `trades` listed a second time, as the fault `f` says (see the module docstring)."""
        key = "id" if "id" in trades[0] else "tradeId"
        again = dict(next((t for t in trades if t.get(key) == f.trade), trades[0]))
        if f.kind == "extra_trade":
            again[key] = max(t.trade_id for o in self.orders for t in o.trades) + 1000
        trades.append(again)
        if f.shuffle:
            trades.reverse()
        if not f.ids:
            for t in trades:
                t.pop(key, None)

    def _take_fault(self, route: str) -> Fault | None:
        queue = self._faults.get(route)
        if not queue:
            return None
        f = queue[0]
        f.times -= 1
        if f.times <= 0:
            queue.popleft()
        return f

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        resp = web.Response(status=599)
        resp.dropped = True  # type: ignore[attr-defined]
        return resp

    @staticmethod
    def _error(status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _signed(self, handler: Callable) -> Callable:
        async def checked(request: web.Request) -> web.StreamResponse:
            key = request.headers.get("X-MBX-APIKEY")
            if not key:
                raise ApiError(401, -2014, "API-key format invalid.")
            if not hmac.compare_digest(key, self.api_key):
                raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
            total = request.query_string + (await request.text())
            parts = [p for p in total.split("&") if p]
            sent = [p[len("signature="):] for p in parts if p.startswith("signature=")]
            payload = "&".join(p for p in parts if not p.startswith("signature="))
            expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if len(sent) != 1 or not hmac.compare_digest(sent[0], expected):
                raise ApiError(400, -1022, "Signature for this request is not valid.")
            params = dict(parse_qsl(payload, keep_blank_values=True))
            try:
                ts = int(params["timestamp"])
                window = int(params.get("recvWindow", "5000"))
            except (KeyError, ValueError):
                raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, "
                                           "or malformed.") from None
            if window > 60_000:
                raise ApiError(400, -1131, "recvWindow must be less than 60000")
            now = self.now_ms()
            if ts > now + 1000 or now - ts > window:
                raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
            return await handler(request, params)

        return checked

    # -- public routes -----------------------------------------------------------------------------------------
    async def _unknown(self, request: web.Request) -> web.Response:
        raise ApiError(400, -1020, "This operation is not supported.")

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        # The exchange's clock, which its klines follow (signatures are checked against the real time all the same),
        # unless a test makes it answer otherwise (`time_answer`: a clock that lies).
        return web.json_response({"serverTime": (self.time_answer or self.market_clock)()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for sid, info in LISTINGS.items():
            symbols.append({
                "symbol": sid, "status": "TRADING", "baseAsset": info["base"], "baseAssetPrecision": 8,
                "quoteAsset": info["quote"], "quotePrecision": 8, "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": info["tick"], "maxPrice": "1000000.00000000",
                     "tickSize": info["tick"]},
                    {"filterType": "LOT_SIZE", "minQty": info["min_qty"], "maxQty": "9000.00000000",
                     "stepSize": info["step"]},
                    {"filterType": "NOTIONAL", "minNotional": info["min_notional"], "applyMinToMarket": True,
                     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
                "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            })
        return web.json_response({"timezone": "UTC", "serverTime": self.now_ms(), "rateLimits": [],
                                  "exchangeFilters": [], "symbols": symbols})

    def _symbol(self, params: dict[str, str], required: bool = True) -> str | None:
        sid = params.get("symbol")
        if sid is None:
            if required:
                raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                           "or malformed.")
            return None
        if sid not in LISTINGS:
            raise ApiError(400, -1121, "Invalid symbol.")
        return sid

    def _ticker(self, sid: str) -> dict[str, Any]:
        now = self.market_clock()
        last = self.prices[sid]
        open_ = path_price(sid, now - 86_400_000)
        return {"symbol": sid, "priceChange": _fmt(last - open_),
                "priceChangePercent": f"{100 * (last - open_) / open_:.3f}", "weightedAvgPrice": _fmt(last),
                "prevClosePrice": _fmt(open_), "lastPrice": _fmt(last), "lastQty": "0.01000000",
                "bidPrice": _fmt(last), "bidQty": "1.00000000", "askPrice": _fmt(last), "askQty": "1.00000000",
                "openPrice": _fmt(open_), "highPrice": _fmt(max(last, open_)), "lowPrice": _fmt(min(last, open_)),
                "volume": "1000.00000000", "quoteVolume": _fmt(1000 * last), "openTime": now - 86_400_000,
                "closeTime": now, "firstId": 1, "lastId": 1000, "count": 1000}

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        sid = self._symbol(dict(request.query), required=False)
        if sid is None:
            return web.json_response([self._ticker(s) for s in LISTINGS])
        return web.json_response(self._ticker(sid))

    async def _ticker_price(self, request: web.Request) -> web.Response:
        sid = self._symbol(dict(request.query), required=False)
        if sid is None:
            return web.json_response([{"symbol": s, "price": _fmt(self.prices[s])} for s in LISTINGS])
        return web.json_response({"symbol": sid, "price": _fmt(self.prices[sid])})

    async def _klines(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        sid = self._symbol(q)
        assert sid is not None
        if "interval" not in q:
            raise ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        iv = interval_ms(q["interval"])
        limit = min(int(q.get("limit", "500")), self.klines_max)
        now = self.market_clock()
        current = now // iv * iv  # the candle still open: Binance serves it too
        last = min(current, int(q["endTime"]) // iv * iv) if "endTime" in q else current
        # Binance answers the first `limit` candles from startTime (or the last `limit` up to endTime or now),
        # passing over periods without trades.
        if "startTime" in q:
            first = -(-int(q["startTime"]) // iv) * iv
            opens = list(itertools.islice((t for t in range(first, last + 1, iv) if not self._no_trades(t)), limit))
        else:
            # (times before 1970 too: a feed of older candles is tested against it)
            opens = [t for t in range(last, last - 2 * limit * iv, -iv) if not self._no_trades(t)][:limit][::-1]
        rows = []
        for t in opens:
            t0, o, h, lo, c, v = kline(sid, t, iv, self.price_path)
            if t == current:  # the open candle closes at the current market price so far
                c = self.price_path(sid, now)
                h, lo = max(h, c), min(lo, c)
            rows.append([t0, _fmt(o), _fmt(h), _fmt(lo), _fmt(c), _fmt(v), t0 + iv - 1, _fmt(v * c), 10,
                         _fmt(v / 2), _fmt(v * c / 2), "0"])
        return web.json_response(self.klines_edit(rows))

    def _no_trades(self, open_ms: int) -> bool:
        return any(a <= open_ms < b for a, b in self.kline_gaps)

    # -- signed routes -----------------------------------------------------------------------------------------
    async def _account(self, request: web.Request, params: dict[str, str]) -> web.Response:
        books = (self._balances_before if self._stale(request)
                 else {a: (b.free, b.locked) for a, b in self.balances.items()})
        return web.json_response({
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "updateTime": self.now_ms(), "accountType": "SPOT",
            "balances": [{"asset": a, "free": _fmt(free), "locked": _fmt(locked)}
                         for a, (free, locked) in books.items()],
            "permissions": ["SPOT"], "uid": 1})

    def _balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance(0.0))

    def _stale(self, request: web.Request) -> bool:
        """Whether a "stale" read answers from the books before their last change: while that change is newer than
        the replica's lag (the fault's `seconds`); after it, the replica has caught up."""
        lag = request.get(STALE)
        return lag is not None and time.time() - self._changed_at < lag

    def _changing(self, *orders: FakeOrder) -> None:
        """The books are about to change (and these orders): remember them as they stand, for stale reads."""
        self._changed_at = time.time()
        self._balances_before = {a: (b.free, b.locked) for a, b in self.balances.items()}
        self._open_before = [self._order_json(o) for o in self.orders if o.open]
        for o in orders:
            o.before = self._order_json(o)
            o.changed_at = self._changed_at

    @staticmethod
    def _decimal(params: dict[str, str], key: str) -> Decimal:
        try:
            value = Decimal(params[key])
        except (KeyError, InvalidOperation):
            raise ApiError(400, -1102, f"Mandatory parameter '{key}' was not sent, was empty/null, "
                                       "or malformed.") from None
        if not value.is_finite() or value <= 0:
            raise ApiError(400, -1013, "Invalid quantity." if key == "quantity" else "Invalid price.")
        return value

    async def _post_order(self, request: web.Request, params: dict[str, str]) -> web.Response:
        sid = self._symbol(params)
        assert sid is not None
        info = LISTINGS[sid]
        side = params.get("side", "")
        otype = params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        if otype not in ("MARKET", "LIMIT"):
            raise ApiError(400, -1116, "Invalid orderType.")
        qty_d = self._decimal(params, "quantity")
        if qty_d < Decimal(info["min_qty"]) or qty_d % Decimal(info["step"]) != 0:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        price: float | None = None
        if otype == "LIMIT":
            if params.get("timeInForce") not in ("GTC", "IOC", "FOK"):
                raise ApiError(400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, "
                                           "or malformed.")
            price_d = self._decimal(params, "price")
            if price_d % Decimal(info["tick"]) != 0:
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
            price = float(price_d)
        qty = float(qty_d)
        market_price = self.prices[sid]
        reserve = price if price is not None else market_price
        if qty * reserve < float(info["min_notional"]):
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        order_id = next(self._ids)
        client_id = params.get("newClientOrderId") or f"web_{order_id}"
        if self.open_order(client_id) is not None:
            raise ApiError(400, -2010, "Duplicate order sent.")
        self._changing()
        base, quote = self._balance(info["base"]), self._balance(info["quote"])
        if side == "BUY":
            need = _round(qty * reserve)
            if quote.free + 1e-9 < need:
                raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
            quote.free, quote.locked = _round(quote.free - need), _round(quote.locked + need)
        else:
            if base.free + 1e-12 < qty:
                raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
            base.free, base.locked = _round(base.free - qty), _round(base.locked + qty)
        now = self._order_time()
        order = FakeOrder(order_id, client_id, sid, side, otype, qty, price, reserve, now, update_time=now)
        self.orders.append(order)
        crosses = otype == "MARKET" or (side == "BUY" and market_price <= reserve) or (
            side == "SELL" and market_price >= reserve)
        later = request.get(LATER)
        if request.get(EXPIRE):
            self._close(order, "EXPIRED", changing=False)
        elif later is not None and otype == "MARKET":
            self._later.append(asyncio.get_running_loop().call_later(later, self._fill_later, order))
        elif otype == "MARKET":
            self._fill_market(order, market_price, new=True)
        elif crosses:
            self._fill(order, qty, market_price, new=True)
        answer = params.get("newOrderRespType", "FULL")
        if answer == "ACK":  # Binance's shortest answer: placed, and nothing of how far it filled
            return web.json_response({"symbol": sid, "orderId": order.order_id, "orderListId": -1,
                                      "clientOrderId": order.client_id, "transactTime": order.update_time})
        body = self._order_json(order)
        body["transactTime"] = order.update_time
        if answer == "FULL":
            body["fills"] = [{"price": _fmt(t.price), "qty": _fmt(t.qty), "commission": _fmt(t.commission),
                              "commissionAsset": t.commission_asset, "tradeId": t.trade_id} for t in order.trades]
        return web.json_response(body)

    def _cancel_later(self, order: FakeOrder) -> None:
        if order.open:
            self._close(order, "CANCELED")

    def _fill_later(self, order: FakeOrder) -> None:
        if order.open:
            self._fill_market(order, self.prices[order.symbol])

    def _fill_market(self, order: FakeOrder, price: float, new: bool = False) -> None:
        """A market order filled at `price`, in `book_levels` trades when the book is walked (not when the next fill
        is set to fill in part): the levels sit `book_step` apart (to the tick), centred on the price, so the average
        stays near it; the last level takes what is left to the step."""
        levels = self.book_levels if self._partial is None else 1
        step = float(LISTINGS[order.symbol]["step"])
        chunk = math.floor(order.remaining / levels / step + 1e-9) * step
        if levels <= 1 or chunk < float(LISTINGS[order.symbol]["min_qty"]):
            self._fill(order, order.remaining, price, new=new)
            return
        tick = float(LISTINGS[order.symbol]["tick"])
        for i in range(levels):
            level = round(price * (1.0 + (i - (levels - 1) / 2) * self.book_step) / tick) * tick
            self._fill(order, order.remaining if i == levels - 1 else chunk, round(level, 8), new=new or i > 0)

    def _fill(self, order: FakeOrder, qty: float, price: float, new: bool = False) -> None:
        if not new:  # an order filled in the request that placed it was changed with the books just before
            self._changing(order)
        expire_rest = False
        if self._partial is not None:
            fraction, rest = self._partial
            self._partial = None
            step = float(LISTINGS[order.symbol]["step"])
            qty = max(step, math.floor(qty * fraction / step + 1e-9) * step)
            expire_rest = rest == "expire"
        qty = _round(min(qty, order.remaining))
        info = LISTINGS[order.symbol]
        base, quote = self._balance(info["base"]), self._balance(info["quote"])
        if self.fee_asset is not None:  # paid in the exchange's own token, from its balance
            commission, asset = _commission(qty * price * self.fee_rate / self.fee_asset_price), self.fee_asset
            token = self._balance(asset)
            token.free = _round(token.free - commission)
            if order.side == "BUY":
                quote.locked = _round(quote.locked - qty * order.reserve_price)
                quote.free = _round(quote.free + qty * (order.reserve_price - price))
                base.free = _round(base.free + qty)
            else:
                base.locked = _round(base.locked - qty)
                quote.free = _round(quote.free + qty * price)
        elif order.side == "BUY" and (self.buy_fee_in_quote or (self.mixed_buy_fees and len(order.trades) % 2)):
            commission, asset = _commission(qty * price * self.fee_rate), info["quote"]
            quote.locked = _round(quote.locked - qty * order.reserve_price)
            quote.free = _round(quote.free + qty * (order.reserve_price - price) - commission)
            base.free = _round(base.free + qty)
        elif order.side == "BUY":
            # the commission is taken from the asset received, as on Binance without BNB fee payment
            commission, asset = _commission(qty * self.fee_rate), info["base"]
            quote.locked = _round(quote.locked - qty * order.reserve_price)
            quote.free = _round(quote.free + qty * (order.reserve_price - price))
            base.free = _round(base.free + qty - commission)
        else:
            commission, asset = _commission(qty * price * self.fee_rate), info["quote"]
            base.locked = _round(base.locked - qty)
            quote.free = _round(quote.free + qty * price - commission)
        now = self._order_time()
        order.trades.append(Trade(next(self._trade_ids), price, qty, commission, asset, now))
        order.filled = _round(order.filled + qty)
        order.quote_filled = _round(order.quote_filled + qty * price)
        order.update_time = now
        if order.remaining <= 0:
            order.status = "FILLED"
        else:
            order.status = "PARTIALLY_FILLED"
            if expire_rest:
                self._close(order, "EXPIRED", changing=False)

    def _close(self, order: FakeOrder, status: str, changing: bool = True) -> None:
        """Cancel or expire an open order and release what it still holds."""
        if changing:
            self._changing(order)
        info = LISTINGS[order.symbol]
        if order.side == "BUY":
            quote = self._balance(info["quote"])
            held = _round(order.remaining * order.reserve_price)
            quote.locked, quote.free = _round(quote.locked - held), _round(quote.free + held)
        else:
            base = self._balance(info["base"])
            base.locked, base.free = _round(base.locked - order.remaining), _round(base.free + order.remaining)
        order.status = status
        order.update_time = self._order_time()

    def _order_json(self, o: FakeOrder) -> dict[str, Any]:
        return {"symbol": o.symbol, "orderId": o.order_id, "orderListId": -1, "clientOrderId": o.client_id,
                "price": _fmt(o.price), "origQty": _fmt(o.qty), "executedQty": _fmt(o.filled),
                "cummulativeQuoteQty": _fmt(o.quote_filled * self.quote_skew), "status": o.status,
                "timeInForce": "GTC", "type": o.type, "side": o.side, "stopPrice": _fmt(0.0),
                "icebergQty": _fmt(0.0), "time": o.time, "updateTime": o.update_time, "isWorking": True,
                "workingTime": o.time, "origQuoteOrderQty": _fmt(0.0), "selfTradePreventionMode": "EXPIRE_MAKER"}

    def _find(self, params: dict[str, str], sid: str) -> FakeOrder | None:
        if "orderId" in params:
            return next((o for o in self.orders if str(o.order_id) == params["orderId"] and o.symbol == sid), None)
        if "origClientOrderId" in params:
            # the newest order with that client id: an id can be reused once its first order is closed
            return next((o for o in reversed(self.orders)
                         if o.client_id == params["origClientOrderId"] and o.symbol == sid), None)
        raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")

    async def _get_order(self, request: web.Request, params: dict[str, str]) -> web.Response:
        sid = self._symbol(params)
        assert sid is not None
        order = self._find(params, sid)
        lag = request.get(STALE)
        if order is not None and lag is not None and time.time() - order.changed_at < lag:  # a replica behind it
            if order.before is None:
                raise ApiError(400, -2013, "Order does not exist.")
            return web.json_response(order.before)
        if order is None:
            raise ApiError(400, -2013, "Order does not exist.")
        return web.json_response(self._order_json(order))

    async def _delete_order(self, request: web.Request, params: dict[str, str]) -> web.Response:
        sid = self._symbol(params)
        assert sid is not None
        order = self._find(params, sid)
        if order is None or not order.open:
            raise ApiError(400, -2011, "Unknown order sent.")
        how = request.get(CANCEL_HOW)
        if how is None:
            self._close(order, "CANCELED")
        elif how[0] == "cancel_later":
            self._later.append(asyncio.get_running_loop().call_later(how[1], self._cancel_later, order))
        body = self._order_json(order)
        if how is not None and how[0] == "cancel_unkept":
            body["status"] = "CANCELED"
        body["origClientOrderId"] = order.client_id
        body["clientOrderId"] = params.get("newClientOrderId") or f"cancel-{order.order_id}"
        body["transactTime"] = order.update_time
        return web.json_response(body)

    async def _open_orders(self, request: web.Request, params: dict[str, str]) -> web.Response:
        sid = self._symbol(params, required=False)
        if self._stale(request):
            return web.json_response([o for o in self._open_before if sid is None or o["symbol"] == sid])
        return web.json_response([self._order_json(o) for o in self.orders
                                  if o.open and (sid is None or o.symbol == sid)])

    async def _all_orders(self, request: web.Request, params: dict[str, str]) -> web.Response:
        """Every order of a symbol, oldest first, from startTime on, at most `limit` (Binance: 500 by default)."""
        sid = self._symbol(params)
        start = int(params.get("startTime", 0))
        limit = int(params.get("limit", 500))
        found = [o for o in self.orders if o.symbol == sid and o.time >= start][:limit]
        return web.json_response([self._order_json(o) for o in found])

    async def _cancel_all(self, request: web.Request, params: dict[str, str]) -> web.Response:
        sid = self._symbol(params)
        out = []
        for o in [o for o in self.orders if o.open and o.symbol == sid]:
            self._close(o, "CANCELED")
            body = self._order_json(o)
            body["origClientOrderId"] = o.client_id
            out.append(body)
        if not out:
            raise ApiError(400, -2011, "Unknown order sent.")
        return web.json_response(out)

    async def _my_trades(self, request: web.Request, params: dict[str, str]) -> web.Response:
        sid = self._symbol(params)
        rows = []
        for o in self.orders:
            if o.symbol != sid or ("orderId" in params and str(o.order_id) != params["orderId"]):
                continue
            for t in o.trades:
                if "startTime" in params and t.time < int(params["startTime"]):
                    continue
                if "fromId" in params and t.trade_id < int(params["fromId"]):
                    continue
                rows.append({"symbol": sid, "id": t.trade_id, "orderId": o.order_id, "orderListId": -1,
                             "price": _fmt(t.price), "qty": _fmt(t.qty), "quoteQty": _fmt(t.qty * t.price),
                             "commission": _fmt(t.commission), "commissionAsset": t.commission_asset,
                             "time": t.time, "isBuyer": o.side == "BUY", "isMaker": o.type == "LIMIT",
                             "isBestMatch": True})
        rows = [r for r in rows if r["id"] not in self.unlisted]
        rows.sort(key=lambda r: r["id"])
        newest = max((t.trade_id for o in self.orders for t in o.trades), default=None)
        if self._stale(request):
            rows = [r for r in rows if r["id"] != newest]
        # A page, as Binance gives it: `limit` trades (500 by default, 1000 at most), the oldest from `fromId` (or
        # `startTime`) on; without either, the most recent ones.
        limit = min(int(params.get("limit", self.my_trades_page)), 1000)
        if "fromId" in params or "startTime" in params:
            return web.json_response(rows[:limit])
        return web.json_response(rows[-limit:])


def ccxt_options() -> dict[str, Any]:
    """The ccxt options that keep `binance` on the spot endpoints the fake serves."""
    return {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


def binance_client(fx: FakeBinance, *, timeout_ms: int = 2000, secret: str | None = None,
                   api_key: str | None = None) -> Any:
    """A real ccxt.async_support.binance that can reach nothing but the fake.

    Only the `public` and `private` URL sections are set: any other section (sapi, fapi, ...) fails inside ccxt
    before any network I/O. Binance picks its spot error table by URL host, so the spot table is merged into the
    generic one for the fake's URL.
    """
    from ffe_engine.venues.ccxt_loader import exchange_class  # ccxt with its binance module only, as ffe has it

    binance = exchange_class("binance")
    assert binance is not None
    exchange = binance({
        "apiKey": fx.api_key if api_key is None else api_key,
        "secret": fx.secret if secret is None else secret,
        "timeout": timeout_ms,
        "enableRateLimit": False,
        "options": ccxt_options(),
    })
    exchange.urls["api"] = {"public": fx.url + "/api/v3", "private": fx.url + "/api/v3"}
    exchange.timeout_on_exit = 0  # plain HTTP: no TLS shutdown to wait for on close()
    exchange.exceptions["exact"].update(exchange.exceptions["spot"]["exact"])
    exchange.exceptions["broad"].update(exchange.exceptions["spot"].get("broad", {}))
    return exchange


def exchange_settings(fx: FakeBinance, **overrides: Any) -> Any:
    """[exchange] settings pointing ccxt's binance at the fake, as an operator would write them for a testnet, but
    for ccxt's pacing: 1 ms per unit of weight, as the fake sets no limit."""
    from ffe_engine.config import ExchangeSettings

    values: dict[str, Any] = {
        "id": "binance", "timeout_ms": 1000, "poll_s": 1.0, "options": ccxt_options(), "rate_limit_ms": 1,
        "api_urls": {"public": fx.url + "/api/v3", "private": fx.url + "/api/v3"},
        "api_key": fx.api_key, "secret": fx.secret,
    }
    values.update(overrides)
    return ExchangeSettings(**values)
