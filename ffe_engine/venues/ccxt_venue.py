"""A real exchange through ccxt (async), configured by the [exchange] settings.

How ccxt's errors become ours (ccxt 4 hierarchy: OperationFailed > NetworkError > RequestTimeout,
ExchangeNotAvailable, DDoSProtection, RateLimitExceeded, InvalidNonce; ExchangeError > AuthenticationError,
InsufficientFunds, InvalidOrder > OrderNotFound, BadRequest, ...):

create_order is sent once and never retried here. Only the exchange's own refusal, its error in the body it wrote,
proves the order was not placed. ccxt also raises errors from an answer's HTTP status alone, when the body carries
no error of the exchange's (401, 407, 511 AuthenticationError, 422 ExchangeError, 418/429 a rate limit, most others
ExchangeNotAvailable): a page in front of the exchange (a proxy's, a captive portal's, a CDN's), which may answer a
request the exchange executed: such an error, marked as it is raised (_mark_status_only), proves nothing of the order.
The exchange's own error is Binance's shape whole, its code a negative integer and its message (`msg`): a JSON page
of a gateway's (an HTTP status for a code, a message alone) is no word of the exchange's, whatever ccxt makes of it.
- DDoSProtection / RateLimitExceeded (HTTP 429/418, Binance -1003, -1015) and InvalidNonce (timestamp outside the
  receive window): the exchange refused the request before matching it -> VenueUnavailable (with retry_after). Its
  Retry-After holds every request to the venue, as a read's does, unless it is the account's limit on new orders
  (Binance -1015), which the order path holds alone. A 418/429 page without the exchange's code: its Retry-After
  holds every request all the same, and the order may exist -> OrderInDoubt (with retry_after).
- any other OperationFailed (RequestTimeout, ExchangeNotAvailable for 5xx and lost connections, bare
  OperationFailed for Binance -1000/-1001/-1006, BadResponse), any error taken from the HTTP status alone, a ccxt
  error caused by the HTTP client (a truncated answer), or a network error that escaped ccxt: the order may or may
  not exist -> OrderInDoubt. The order path resolves it by client order id.
- DuplicateOrderId, or Binance's "Duplicate order sent." (-2010, which ccxt reports as InvalidOrder): an open order
  with this client order id exists already, as after a resend of an order whose lookup did not find it yet
  -> DuplicateOrder, an OrderInDoubt: the order path looks it up instead of recording a rejection.
- any other ExchangeError (InsufficientFunds, InvalidOrder, AuthenticationError such as Binance's -2015 for a key it
  does not take, PermissionDenied, BadRequest, ...), from the exchange's own words: a final answer -> VenueError.
  Binance's -2015 is one however ccxt raises it: after one authenticated call that worked, ccxt's binance raises it
  as DDoSProtection, which its code, not the class, tells apart from a rate limit (_key_refused), for reads too.

`settle_s` (exchange.settle_window_ms) is how long after an unanswered create_order a lookup that does not find
the order still proves nothing: Binance refuses a request whose timestamp is older than its receive window (ccxt's
option `recvWindow`, 10 s by default), so the window bounds when the original request could still be executed. The
order path only resends after it; a settle window shorter than the receive window is refused at start.

`exchange.api_urls` replaces ccxt's URL table, section by section (ccxt's own names: Binance spot is `public` and
`private`); a section left out is then unreachable, and ccxt's load_markets of some exchanges calls more sections
than spot trading needs unless its options keep it to spot. `check_settings` says at start which keys to set.

Reads and cancels retry (tenacity) on transient errors only, i.e. what create_order would call VenueUnavailable or
OrderInDoubt, with short exponential backoff, waiting at least what Retry-After asks for; they give up at once when
Retry-After asks for more than `max_retry_after_s`. After the last attempt they raise VenueUnavailable. A
Retry-After holds the whole venue, not only the request it answered: until that time no request goes to the exchange
(which bans an address that goes on asking, for longer each time), a read, cancel or order asked for meanwhile is
refused at once with VenueUnavailable (not sent, its retry_after the time left), or waited for when what is left is
within `max_retry_after_s`. A hold on every request that begins or lengthens is told to the engine
(tell_requests_held), which stores it before the answer that asked for it goes further. Final errors
raise VenueError at once. OrderNotFound is an ExchangeError in ccxt 4 (not an OperationFailed), so it is never
retried: fetch_order answers None for it, and cancel_order looks the order up to report what became of it.

No message built here contains a credential: exception texts are rebuilt from the exchange's error code and message
with URLs cut at the query string and every credential value masked, ccxt's own HTTP debug log goes through a
redacting logger, and no ccxt exception is chained to ours.
"""

from __future__ import annotations

import asyncio
import functools
import copy
import json
import logging
import re
from typing import Any, Awaitable, Callable, Iterable, TypeGuard, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from .. import fmt
from ..clock import WallClock
from ..market.bounds import price_problem
from ..market.ohlcv import candles_from, not_candles
from ..model import MarketInfo, OrderRequest, Side, VenueOrder
from ..urls import mask_urls
from . import trade_list
from .ccxt_loader import DECIMAL_PLACES, TICK_SIZE, exchange_class
from .ccxt_loader import errors as cx
from .base import PROBING, DuplicateOrder, OrderInDoubt, UnknownOrder, VenueError, VenueUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
MASK = "********"
_URL = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
_NETWORK = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, OSError)
# What ccxt raises on its way through a body that is not what was asked (an HTML page answered 200, `{}`, a list
# cut short): not one of its own errors.
_UNPARSED = (AttributeError, TypeError, KeyError, ValueError, IndexError)
DEFAULT_SETTLE_S = 10.0
TIME_READ_S = 2.0  # the longest the exchange's time is waited for (CcxtVenue.server_time)
# A Retry-After this long is a ban of the address rather than a pace (Binance's 418 lasts minutes to days): said once.
LONG_HOLD_S = 60.0
# Binance's code for the account's limit on new orders ("Too many new orders; current limit is N orders per ...").
ORDER_LIMIT_CODE = "-1015"
# Binance's refusal of the API key ("Invalid API-key, IP, or permissions for action."), final however ccxt raises it.
KEY_REFUSED_CODE = -2015
SAID_MAX = 1000  # how many orders' warnings said once per order are remembered (CcxtVenue._first)
# An order's trades are asked for this many at a time (Binance's most; its default is 500), page after page while a
# page comes back full, at most TRADES_PAGES_MAX pages per look: an order of more trades than they hold (20,000) is
# read as one whose trades lag its fill, as any list short of the order is.
TRADES_PAGE = 1000
TRADES_PAGES_MAX = 20
_NO_URL = re.compile(r"does not have a testnet/sandbox URL for (\w+) endpoints")
# The attribute set on a ccxt error taken from an answer's HTTP status alone (_mark_status_only).
STATUS_ONLY = "ffe_status_only"

# With exchange.api_urls set: the ccxt URL sections that spot trading uses, and the ccxt options that keep the
# exchange's load_markets on them, per exchange id.
SPOT_ONLY: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "binance": (("public", "private"),
                {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}),
}
# Of those, the sections a feed of market data reads (candles, ticker, the exchange's time: no account, no order).
MARKET_DATA_SECTIONS = ("public",)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


# Where orders may be placed. The order path settles an unanswered order by its own client order id: it looks the
# order up by that id, cancels by it, and sends it again with the same id once the receive window has passed, all
# as Binance's spot API (and the fake exchange the tests speak to) do. Elsewhere the id is refused (OKX takes
# [a-z0-9]{1,32}, Kraken a 32-bit integer) or an order cannot be found by it (Coinbase): an order in doubt could
# never be settled. Any ccxt exchange can still feed market data.
ORDER_EXCHANGES = ("binance",)


class SettingRefused(VenueError):
    """An [exchange] setting that cannot work; `key` is the path under [exchange] of the key at fault, whose source
    check_venue_settings names (a key of a table, exchange.options.recvWindow, may come from another source than the
    table around it)."""

    def __init__(self, message: str, key: tuple[str, ...]):
        super().__init__(message)
        self.key = key


def check_settings(settings: Any, settle_from: str = "", orders: bool = True) -> None:
    """Raise VenueError naming the [exchange] key to set when the settings cannot work as written: an exchange the
    order path cannot place orders on, an URL section ccxt does not have, a section or option that spot trading
    needs with replaced URLs, a settle window shorter than the exchange's receive window (`settle_from`: where the
    settle window was set, or "the default", said beside it). `orders` False: for a feed of market data alone, which
    places no order on the exchange and reads only its public sections."""
    if orders and settings.id not in ORDER_EXCHANGES:
        build_exchange(settings, credentials=False)  # an id ccxt does not know is said as such first
        raise SettingRefused(f"exchange.id: ffe places orders on {', '.join(ORDER_EXCHANGES)} only (an unanswered "
                             "order is settled by ffe's own client order id, as Binance's spot API allows); orders "
                             f"on {settings.id!r} are not supported, its market data is: market.source = "
                             '"exchange" with venue.kind = "paper"', ("id",))
    exchange = build_exchange(settings, credentials=False)
    own = type(exchange)()  # ccxt's own settings of the exchange, before ffe's options
    check_option_spelling(settings, own)
    if settings.api_urls:
        check_api_urls(settings, own, orders)
    if orders:
        check_settle_window(settings, exchange, settle_from)


def check_option_spelling(settings: Any, own: Any) -> None:
    spelled = {name.lower(): name for name in getattr(own, "options", None) or {}}
    for name in settings.options or {}:
        # ccxt matches an option by its exact spelling and passes any other over without a word: one written in
        # another case (upper case by habit, from the environment) would set nothing.
        if name not in spelled.values() and str(name).lower() in spelled:
            raise SettingRefused(f"exchange.options: ccxt's {settings.id} has no option {name!r}: it reads "
                                 f"{spelled[str(name).lower()]!r} (options are matched by their exact spelling)",
                                 ("options", str(name)))


def check_api_urls(settings: Any, own: Any, orders: bool) -> None:
    """The sections of exchange.api_urls are ccxt's, and those spot trading (`orders`) or its market data reads are
    given, with the options that keep ccxt's market loading on them."""
    sections = sorted(getattr(own, "urls", {}).get("api", {}) or {})
    unknown = sorted(set(settings.api_urls) - set(sections)) if sections else []
    if unknown:
        raise SettingRefused(f"exchange.api_urls: ccxt's {settings.id} has no URL section "
                             f"{', '.join(map(repr, unknown))}; its sections are {', '.join(sections)}",
                             ("api_urls", unknown[0]))
    needs = SPOT_ONLY.get(settings.id)
    if needs is None:
        return
    wanted, options = needs
    if not orders:
        wanted = tuple(w for w in wanted if w in MARKET_DATA_SECTIONS)
    missing = [w for w in wanted if w not in settings.api_urls]
    if missing:
        use = "spot trading" if orders else "market data"
        raise SettingRefused(f"exchange.api_urls: set {' and '.join(missing)} too (ccxt's {settings.id} {use} "
                             f"uses the sections {', '.join(wanted)})", ("api_urls",))
    given = settings.options or {}
    if any(given.get(k) != v for k, v in options.items()):
        raise SettingRefused(f"exchange.options: with exchange.api_urls set, keep ccxt's {settings.id} to "
                             f"those sections: options = {mask_urls(_toml({**given, **options}))}",
                             ("options",))


def check_settle_window(settings: Any, exchange: Any, settle_from: str) -> None:
    window = (exchange.options or {}).get("recvWindow")
    if isinstance(window, (int, float)) and settings.settle_window_ms < window:
        aside = f" ({settle_from})" if settle_from else ""
        # The receive window is the key that made the conflict: its source is named first, where it was set.
        raise SettingRefused(f"exchange.settle_window_ms: {settings.settle_window_ms}{aside} is shorter than the "
                             f"exchange's receive window (options.recvWindow = {window:g} ms): an unanswered order "
                             f"could still execute after it; set exchange.settle_window_ms to at least {window:g}",
                             ("options", "recvWindow"))


def check_venue_settings(settings: Any, orders: bool = True) -> None:
    """check_settings on the whole settings (venue.kind = "ccxt"; `orders` False: an exchange feed beside the paper
    venue): the message also says where the key at fault was set (its own line or variable, not the [exchange]
    header or `options = {}` line of the table around it)."""
    settle = settings.set_at("exchange", "settle_window_ms")
    try:
        check_settings(settings.exchange, settle_from=settle.source if settle is not None else "the default",
                       orders=orders)
    except SettingRefused as exc:
        path = ("exchange", *exc.key)
        if exc.key == ("options", "recvWindow") and settings.set_at(*path) is None:
            path = ("exchange", "settle_window_ms")  # ccxt's own receive window: the settle window is at fault
        raise VenueError(settings.blame(path, str(exc))) from None
    except VenueError as exc:  # from ccxt's exchange itself (an id it does not know, no sandbox): named first
        message = str(exc)
        raise VenueError(settings.blame(tuple(message.partition(":")[0].split(".")), message)) from None


def _reveal(secret: Any) -> str | None:
    if secret is None:
        return None
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    return value or None


def build_exchange(settings: Any, *, credentials: bool = True) -> Any:
    """A ccxt.async_support exchange from [exchange] settings (id, timeout_ms, options, api_urls, sandbox, keys).

    ccxt's own retry option is forced to 0: retrying is decided here and in the order path, never blindly.
    """
    cls = exchange_class(settings.id)
    if cls is None:
        raise VenueError(f"exchange.id: {settings.id!r} is not a ccxt exchange id")
    options = copy.deepcopy(dict(settings.options or {}))
    options["maxRetriesOnFailure"] = 0
    options["maxRetriesOnFailureDelay"] = 0
    config: dict[str, Any] = {"timeout": int(settings.timeout_ms), "enableRateLimit": True, "options": options}
    if getattr(settings, "rate_limit_ms", None) is not None:
        config["rateLimit"] = int(settings.rate_limit_ms)
    if credentials:
        for key, attr in (("apiKey", "api_key"), ("secret", "secret"), ("password", "password")):
            value = _reveal(getattr(settings, attr, None))
            if value is not None:
                config[key] = value
    exchange = cls(config)
    if getattr(settings, "sandbox", False):
        try:
            exchange.set_sandbox_mode(True)
        except (cx.NotSupported, TypeError):  # TypeError: ccxt has no urls['test'] for it
            raise VenueError(f"exchange.sandbox: {settings.id} has no sandbox (testnet) URLs in ccxt") from None
    if settings.api_urls:
        exchange.urls["api"] = dict(settings.api_urls)
        _merge_error_tables(exchange)
    return exchange


def _merge_error_tables(exchange: Any) -> None:
    """Binance picks its error table by the URL's host (api. for spot, fapi. for futures, ...); with replaced URLs no
    host matches, so the spot table (ffe trades spot) is folded into the generic one, taking precedence as it would
    for a spot URL."""
    tables = exchange.exceptions
    spot = tables.get("spot") if isinstance(tables, dict) else None
    if not isinstance(spot, dict):
        return
    for kind in ("exact", "broad"):
        if isinstance(spot.get(kind), dict):
            tables.setdefault(kind, {}).update(spot[kind])


class _RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """ccxt logs request headers (the API key among them) at debug level: mask credentials before they land."""

    def __init__(self, logger: logging.Logger, secrets: list[str]) -> None:
        super().__init__(logger, {})
        self.secrets = secrets

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                text = " ".join([str(msg), *map(str, args)])
            self.logger.log(level, _mask(text, self.secrets))


def _mask(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and s in text:
            text = text.replace(s, MASK)
    return text


def describe(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One line about a ccxt error without credentials, signatures or query strings, nor a character a terminal
    would act on (fmt.printable)."""
    name = type(exc).__name__
    text = fmt.printable(str(exc))
    no_url = _NO_URL.search(text)
    if no_url:  # exchange.api_urls replaced ccxt's URLs and left out a section this call needs
        return (f"{name}: exchange.api_urls has no URL for ccxt's {no_url.group(1)!r} section; add it, or keep "
                "ccxt to the sections given with exchange.options (see README, Live trading)")
    body = _error_body(text)
    if _exchange_wrote(body):  # the exchange's own error, said by its code and message; any other body as it reads
        return _mask(fmt.printable(f"{name}: code {body['code']}: {body['msg']}".strip()), secrets)
    text = _URL.sub(r"\1", text)
    text = re.sub(r"<[^>]*>", " ", text)  # gateway error pages
    text = " ".join(text.split())
    if len(text) > 240:
        text = text[:237] + "..."
    cause = exc.__cause__
    if cause is not None and not text.strip():
        text = type(cause).__name__
    return _mask(f"{name}: {text}" if text else name, secrets)


def _off_step(amount: str, quantity: float) -> bool:
    """Whether the exchange's precision (`amount`, ccxt's amount_to_precision) changes `quantity` by more than a
    float's own error."""
    try:
        sent = float(amount)
    except ValueError:
        return False
    return abs(sent - quantity) > 1e-9 * max(abs(quantity), 1.0)


def _retry_after(exchange: Any) -> float | None:
    headers = getattr(exchange, "last_response_headers", None) or {}
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except (TypeError, ValueError):
                return None
    return None


def _orders_only(exc: BaseException, name: str) -> bool:
    """Whether a rate limit refusing a new order is the account's limit on new orders (Binance's code -1015, "Too
    many new orders"), which leaves the other requests free. A 418 is a ban of the address whatever its body says."""
    text = str(exc)
    if re.match(rf"{re.escape(name)} 418\b", text):  # ccxt's binance: "binance 418 <reason> <body>"
        return False
    body = _error_body(text)
    return body is not None and str(body.get("code")) == ORDER_LIMIT_CODE


def _error_body(text: str) -> dict[str, Any] | None:
    """The exchange's JSON answer that ccxt's error message carries (Binance's {"code": ..., "msg": ...}), if any."""
    found = re.search(r"\{.*\}", text)
    if not found:
        return None
    try:
        body = json.loads(found.group(0))
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _exchange_wrote(response: Any) -> TypeGuard[dict[str, Any]]:
    """A body (as ccxt parsed it) that is the exchange's own error: Binance's {"code": -2015, "msg": "..."}, both its
    code, a negative integer, and its message. A page in front of the exchange can be JSON too (an API gateway's):
    a code of its own, an HTTP status Binance never uses as one ({"code": 503, "message": ...}), or a message alone,
    which ccxt may still match to an exchange's error ("insufficient balance"). Such a body is not the exchange's
    word, and neither is what ccxt raises from it: an order it answered may have executed. Anything short of the
    exchange's shape leaves the order in doubt, which a lookup resolves; taken as a refusal, a fill would be lost."""
    if not isinstance(response, dict):
        return False
    code, msg = response.get("code"), response.get("msg")
    return type(code) is int and code < 0 and isinstance(msg, str) and msg.strip() != ""


def _key_refused(exc: BaseException) -> bool:
    """Whether this is the exchange's own refusal of the API key (Binance's -2015), told by its code, not ccxt's
    class: once a client has made one authenticated call, ccxt's binance raises it as DDoSProtection (it guesses a
    temporary ban), which would read as a rate limit, a failure of the venue's. The exchange answered, and refused:
    the request was not carried out, and sending it again before the key is set right gets the same answer."""
    body = _error_body(str(exc))
    return _exchange_wrote(body) and body["code"] == KEY_REFUSED_CODE and not _status_only(exc)


def _status_only(exc: BaseException) -> bool:
    """Whether ccxt took this error from the answer's HTTP status alone (see _mark_status_only)."""
    return bool(getattr(exc, STATUS_ONLY, False))


def _no_resend(session: Any) -> None:
    """aiohttp sends a GET or a DELETE again at once, itself, when a kept-alive connection drops it: below ccxt and
    below the hold looked at as each request leaves (CcxtVenue._hold_every_send), so a read in flight when a ban
    began reached the exchange inside it, and a cancel was sent twice unseen. Turned off: a request that fails so
    fails, and is asked again, if at all, through the read retries and the order path, which look at the hold.
    (aiohttp 3.14 keeps the switch in the session, with no public setting for it.)"""
    if session is not None and getattr(session, "_retry_connection", False):
        session._retry_connection = False


def _mark_status_only(exchange: Any) -> None:
    """Mark the errors ccxt raises from an answer's HTTP status alone, with no error of the exchange's in its body.

    ccxt reads an error answer twice: the exchange's own handler (handle_errors) raises the error its body names
    (Binance's code and message), then its status table (handle_http_status_code) raises one for a status left
    over, from the status alone: 401, 407 and 511 AuthenticationError, 422 ExchangeError, most others
    ExchangeNotAvailable. Binance's handler also takes 418 and 429 as a rate limit whatever the body. Such an error
    may be a page put in front of the exchange (a proxy's, a captive portal's, a CDN's), which can answer a request
    the exchange executed: it says nothing of what the exchange did. Marked, create_order takes it as such."""
    handle_errors = exchange.handle_errors
    handle_status = exchange.handle_http_status_code

    def errors(code: Any, reason: Any, url: Any, method: Any, headers: Any, body: Any, response: Any,
               request_headers: Any, request_body: Any) -> Any:
        try:
            return handle_errors(code, reason, url, method, headers, body, response, request_headers, request_body)
        except cx.BaseError as exc:
            if not _exchange_wrote(response):
                setattr(exc, STATUS_ONLY, True)
            raise

    def status(code: Any, reason: Any, url: Any, method: Any, body: Any) -> Any:
        try:
            return handle_status(code, reason, url, method, body)
        except cx.BaseError as exc:
            setattr(exc, STATUS_ONLY, True)
            raise

    exchange.handle_errors = errors
    exchange.handle_http_status_code = status


def _lost_answer(exc: BaseException) -> bool:
    """ccxt raises a bare ExchangeError for HTTP client errors other than connection errors (a cut-off body)."""
    return isinstance(exc.__cause__, _NETWORK)


class ReadRetry:
    """Runs a read or a cancel, retrying transient failures only (see the module docstring)."""

    def __init__(self, exchange: Any, name: str, secrets: list[str], *, attempts: int = 4, backoff_s: float = 0.2,
                 max_backoff_s: float = 2.0, max_retry_after_s: float = 5.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 monotonic: Callable[[], float] | None = None, wall: Callable[[], float] | None = None) -> None:
        self.exchange = exchange
        self.name = name
        self.secrets = secrets
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.sleep = sleep
        self.monotonic = monotonic if monotonic is not None else WallClock().monotonic
        self.wall = wall if wall is not None else WallClock().wall
        self.hold_until: float | None = None  # monotonic time before which the exchange asked for no requests
        self.hold_until_wall: float | None = None  # the same time in wall seconds (stored across restarts)
        # Told each time a hold begins or lengthens (its wall time), before the answer that asked for it goes further:
        # the engine stores it then, so that a start after a kill within it sends nothing either (see tell).
        self.on_hold: Callable[[float], Awaitable[None]] | None = None
        self._told: float | None = None

    def hold(self, retry_after: float | None, answer: str = "") -> None:
        """The exchange asked for no requests for `retry_after` seconds: none goes to it before then. `answer`: the
        exchange's answer that asked for it; a hold of LONG_HOLD_S or more that it begins is said once, as a
        warning (a ban of the address: market data, lookups and orders all wait for it)."""
        if retry_after is not None and retry_after > 0:
            held = self.held_for() > 0
            until = self.monotonic() + retry_after
            if self.hold_until is None or until > self.hold_until:
                self.hold_until = until
                self.hold_until_wall = self.wall() + retry_after
            if answer and not held and retry_after >= LONG_HOLD_S:
                log.warning("%s asked for no requests for %.0fs (Retry-After): none is sent to it before %s; market "
                            "data, order lookups, cancels and orders wait until then (%s)", self.name, retry_after,
                            fmt.iso(self.hold_until_wall), answer)

    async def tell(self) -> None:
        """Tell on_hold of a hold begun or lengthened since it was last told. Awaited where the answer that asked for
        it is read, before that answer goes to the caller: stored only with the engine's next storing of its books,
        an engine killed in between (an order answered 418, the operator told so at once) left the next start free
        to send within the ban, which the exchange lengthens for every request sent during it."""
        until = self.hold_until_wall
        if self.on_hold is None or until is None or until == self._told:
            return
        self._told = until
        await self.on_hold(until)

    def held_for(self) -> float:
        """Seconds left of the exchange's Retry-After (0 when requests may go)."""
        if self.hold_until is None:
            return 0.0
        left = self.hold_until - self.monotonic()
        if left <= 0:
            self.hold_until = self.hold_until_wall = None
            return 0.0
        return left

    async def wait_hold(self, what: str) -> None:
        """Wait out a short Retry-After; refuse at once, not sent, while a longer one lasts."""
        left = self.held_for()
        if left > self.max_retry_after_s:
            raise VenueUnavailable(f"{self.name} {what}: not sent: the exchange asked for no requests for "
                                   f"{left:.0f}s more (Retry-After)", retry_after=left, sent=False)
        if left > 0:
            await self.sleep(left)

    def translate(self, exc: BaseException, what: str) -> Exception:
        """A ccxt or network error as VenueUnavailable (transient) or VenueError (final)."""
        msg = f"{self.name} {what}: {describe(exc, self.secrets)}"
        if _key_refused(exc):
            return VenueError(msg)
        if isinstance(exc, (cx.DDoSProtection, cx.RateLimitExceeded)):
            asked = _retry_after(self.exchange)
            self.hold(asked, msg)
            return VenueUnavailable(msg, retry_after=asked)
        if isinstance(exc, cx.OperationFailed) or isinstance(exc, _NETWORK) or _lost_answer(exc):
            return VenueUnavailable(msg)
        return VenueError(msg)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        wait = min(self.backoff_s * 2 ** (state.attempt_number - 1), self.max_backoff_s)
        asked = getattr(exc, "retry_after", None)
        return float(max(wait, asked)) if asked is not None else float(wait)

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.attempts:
            return True
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        return asked is not None and asked > self.max_retry_after_s

    def _before_sleep(self, state: RetryCallState) -> None:
        # Debug only: what the operator needs of an outage is what the last attempt's failure becomes (the venue's
        # fault event, the breaker), not a line per attempt that buries them in the console's log.
        exc = state.outcome.exception() if state.outcome else None
        log.debug("%s: attempt %d failed, retrying: %s", self.name, state.attempt_number, exc)

    async def __call__(self, what: str, call: Callable[[], Awaitable[T]],
                       passthrough: tuple[type[BaseException], ...] = (), *, once: bool = False) -> T:
        """Run `call`; exceptions of the `passthrough` types are re-raised untouched for the caller to handle. `once`:
        one attempt, not retried (a read its caller can do without this time, or the breaker's probe)."""
        once = once or PROBING.get()

        async def attempt() -> T:
            # Every attempt waits out what is left of a hold: none of its own answer's, which its backoff waited
            # for, but another request's may be longer, or given while this one backed off.
            await self.wait_hold(what)
            try:
                return await call()
            except passthrough:
                raise
            except (cx.BaseError, *_NETWORK) as exc:
                error = self.translate(exc, what)
            except _UNPARSED as exc:  # a body that is not the exchange's answer (a gateway's page): not read
                raise VenueUnavailable(f"{self.name} {what}: the answer could not be read "
                                       f"({type(exc).__name__})") from None
            await self.tell()  # a Retry-After the answer asked for is stored before anything else is sent
            raise error from None

        retrying = AsyncRetrying(stop=(lambda _state: True) if once else self._stop, wait=self._wait,
                                 retry=retry_if_exception_type(VenueUnavailable), before_sleep=self._before_sleep,
                                 reraise=True, sleep=self.sleep)
        return await retrying(attempt)


class CcxtVenue:
    """The Venue protocol over a ccxt exchange. `exchange` may be given (already configured) instead of built."""

    def __init__(self, settings: Any, symbols: Iterable[str], *, exchange: Any = None, read_attempts: int = 4,
                 backoff_s: float = 0.2, max_backoff_s: float = 2.0, max_retry_after_s: float = 5.0,
                 settle_s: float | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.exchange = exchange if exchange is not None else build_exchange(settings)
        self.name: str = self.exchange.id
        if settle_s is None:
            window_ms = getattr(settings, "settle_window_ms", None)
            settle_s = window_ms / 1000.0 if window_ms is not None else DEFAULT_SETTLE_S
        self.settle_s = settle_s
        self.symbols = list(symbols)
        self._secrets = [s for s in (_reveal(getattr(settings, a, None)) if settings is not None else None
                                     for a in ("api_key", "secret", "password")) if s]
        self._secrets += [s for s in (getattr(self.exchange, a, None) for a in ("apiKey", "secret", "password"))
                          if isinstance(s, str) and len(s) >= 4 and s not in self._secrets]
        self.exchange.logger = _RedactingLogger(logging.getLogger(__name__ + ".http"), self._secrets)
        _mark_status_only(self.exchange)
        self.reads = ReadRetry(self.exchange, self.name, self._secrets, attempts=read_attempts, backoff_s=backoff_s,
                               max_backoff_s=max_backoff_s, max_retry_after_s=max_retry_after_s, sleep=sleep)
        self._hold_every_send()
        self._markets: dict[str, MarketInfo] = {}
        self._exchange_ids: dict[str, str] = {}  # client order id -> exchange order id, as learnt
        self._fees_left_out: set[str] = set()  # currencies fees were paid in that the books do not count
        self._trades_behind: set[str] = set()  # orders whose trades were last seen short of their fill
        # The trades (with their ids) this process has seen of each order, from its new order's answer on, or from a
        # list that covered its whole fill: a trade seen before and listed late is the order's all the same.
        self._trades_seen: dict[str, list[dict[str, Any]]] = {}
        self._said: dict[tuple[str, str], None] = {}  # (warning, client order id) said, oldest first

    def _hold_every_send(self) -> None:
        """The exchange's Retry-After looked at again as each request leaves ccxt, not only before it is asked: one
        that waited its turn in ccxt's pacing meanwhile (a lookup asked while an order was on the wire, the order
        answered 429 -1003) is not sent, as the exchange lengthens a ban for every request sent during it (a short
        hold is waited out, as before asking)."""
        exchange = self.exchange
        send = exchange.fetch
        reads = self.reads

        async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            await reads.wait_hold(f"{method} request")
            exchange.open(True)  # ccxt's session, made as ccxt makes it (its fetch does the same first)
            _no_resend(exchange.session)
            return await send(url, method, headers, body)

        self.exchange.fetch = fetch

    # -- the exchange's Retry-After, across restarts ---------------------------------------------------------------
    def tell_requests_held(self, listener: Callable[[float], Awaitable[None]]) -> None:
        """`listener` is given until when (wall seconds) the exchange asked for no requests at all, each time such a
        hold begins or lengthens, and awaited before the answer that asked for it goes further (ReadRetry.tell)."""
        self.reads.on_hold = listener

    def requests_held_until(self) -> float | None:
        """Until when (wall seconds) the exchange asked for no requests at all, None when they may go: stored by the
        engine, so that a start within it sends nothing either (an exchange's ban grows with every request sent
        during it)."""
        return self.reads.hold_until_wall if self.reads.held_for() > 0 else None

    def hold_requests(self, until_wall: float) -> None:
        """No request before `until_wall` (wall seconds), as a Retry-After stored by the last run asked."""
        self.reads.hold(until_wall - self.reads.wall())

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Load the markets and check that every configured symbol is listed."""
        await self.reads("load_markets", lambda: self.exchange.load_markets())
        if not self.exchange.markets:
            # An answer that was not its market list (a maintenance page served as 200): the exchange is not
            # answering as itself, which says nothing of the symbols configured.
            raise VenueUnavailable(f"{self.name} listed no markets at all (its answer was not its market list; "
                                   "in maintenance?)")
        missing = [s for s in self.symbols if s not in self.exchange.markets]
        if missing:
            raise VenueError(f"{self.name} lists no market {', '.join(missing)} (engine.symbols)")
        self._markets = {s: self._market_info(s) for s in self.symbols}

    async def close(self) -> None:
        # ccxt sleeps timeout_on_exit after closing its session, for TLS connections to finish closing; endpoints
        # that are all plain http (a local gateway) leave none to wait for.
        urls = (self.exchange.urls or {}).get("api")
        if isinstance(urls, dict) and urls and all(str(u).startswith("http://") for u in urls.values()):
            self.exchange.timeout_on_exit = 0
        await self.exchange.close()

    async def reload_markets(self) -> None:
        """The exchange's markets read again (amount step, minimum, price tick, which it changes now and then): after
        it refused an order on them, so that the next order (an exit) is sized and rounded as it now asks, and while
        the books hold dust by them, which a lowered minimum makes a position again. A failure to read them leaves
        the ones known."""
        try:
            await self.reads("load_markets", lambda: self.exchange.load_markets(True))
        except (VenueError, VenueUnavailable):
            return
        if all(s in (self.exchange.markets or {}) for s in self.symbols):
            self._markets = {s: self._market_info(s) for s in self.symbols}

    def market(self, symbol: str) -> MarketInfo:
        info = self._markets.get(symbol)
        if info is None:
            if not self.exchange.markets or symbol not in self.exchange.markets:
                raise VenueError(f"{self.name}: no market {symbol!r} (not connected or not listed)")
            info = self._markets[symbol] = self._market_info(symbol)
        return info

    def _market_info(self, symbol: str) -> MarketInfo:
        m = self.exchange.markets[symbol]
        precision, limits = m.get("precision") or {}, m.get("limits") or {}
        return MarketInfo(symbol=symbol, base=m["base"], quote=m["quote"],
                          amount_step=self._step(precision.get("amount")),
                          price_step=self._step(precision.get("price")),
                          min_qty=float((limits.get("amount") or {}).get("min") or 0.0),
                          min_notional=float((limits.get("cost") or {}).get("min") or 0.0))

    def _step(self, p: Any) -> float:
        if p is None:
            return 1e-8
        mode = getattr(self.exchange, "precisionMode", TICK_SIZE)
        if mode == DECIMAL_PLACES:
            return 10.0 ** -int(p)
        if mode == TICK_SIZE:
            return float(p)
        return 1e-8  # significant digits: no fixed step

    # -- orders ------------------------------------------------------------------------------------------------
    async def create_order(self, req: OrderRequest) -> VenueOrder:
        """Send once. Raises OrderInDoubt, VenueUnavailable or VenueError as the module docstring says."""
        if not self._markets:
            # a load_markets failing inside create_order would look like an order in doubt
            raise VenueError(f"{self.name}: create_order before connect()")
        m = self.exchange.markets.get(req.symbol)
        if m is None:
            raise VenueError(f"{self.name}: no market {req.symbol!r}")
        params: dict[str, Any] = {"clientOrderId": req.client_order_id}
        if req.reduce_only and m.get("contract"):
            params["reduceOnly"] = True  # spot has no reduce-only flag: a spot sell cannot open a short anyway
        price = req.price if req.type == "limit" else None
        amount = self._amount_text(req)
        what = f"create_order {req.client_order_id} {req.side.value} {amount} {req.symbol}"
        if _off_step(amount, req.quantity):
            # ccxt would send it cut to the step, under the same client order id: an order other than the one
            # journaled (one in doubt sent again after the exchange changed its step). Refused, not sent.
            raise VenueError(f"{self.name} {what}: not sent: {req.quantity:.12g} is not a whole number of the "
                             "exchange's amount step (changed since the order was journaled?)")
        left = self.reads.held_for()
        if left > 0:  # the exchange asked for no requests before then (a read's Retry-After): not sent
            raise VenueUnavailable(f"{self.name} {what}: not sent, not placed: the exchange asked for no requests "
                                   f"for {left:.0f}s more (Retry-After)", retry_after=left, sent=False)
        try:
            raw = await self.exchange.create_order(req.symbol, req.type, req.side.value, req.quantity, price, params)
        except (cx.DDoSProtection, cx.RateLimitExceeded) as exc:
            if _key_refused(exc):  # the exchange's refusal of the key, whatever ccxt calls it: final, not placed
                raise VenueError(f"{self.name} {what}: the API key refused, not placed: "
                                 f"{describe(exc, self._secrets)}") from None
            asked = _retry_after(self.exchange)
            if _status_only(exc):
                # A 418 or 429 page without the exchange's code (a proxy's, a CDN's): the wait it asks for is kept,
                # for every request (whose limit it is, it does not tell), but it may have answered a request the
                # exchange executed.
                message = f"{self.name} {what}: outcome unknown: {describe(exc, self._secrets)}"
                self.reads.hold(asked, message)
                await self.reads.tell()
                raise OrderInDoubt(message, retry_after=asked) from None
            message = f"{self.name} {what}: refused, not placed: {describe(exc, self._secrets)}"
            # Held by the order path either way. Only the account's limit on new orders (Binance -1015) leaves the
            # other requests free, and the kill switch's cancels, the lookups and the feed need them through a
            # limit that can last a day. Anything else (a 418, the address's request weight -1003, a limit whose
            # kind is not told) is taken as covering every request, as a read's Retry-After is: Binance lengthens a
            # ban for every request sent during it, and a read held back needlessly costs less than a longer ban.
            if not _orders_only(exc, self.name):
                self.reads.hold(asked, message)
                await self.reads.tell()
            raise VenueUnavailable(message, retry_after=asked) from None
        except cx.InvalidNonce as exc:
            raise VenueUnavailable(f"{self.name} {what}: refused, not placed: {describe(exc, self._secrets)}") \
                from None
        except cx.OperationFailed as exc:
            raise OrderInDoubt(f"{self.name} {what}: outcome unknown: {describe(exc, self._secrets)}") from None
        except cx.BaseError as exc:
            # Only the exchange's own refusal, in the body it wrote, ends the order: an error ccxt took from the
            # HTTP status alone (401, 407, 511, 422 on a proxy's or captive portal's page) says nothing of it.
            if _lost_answer(exc) or _status_only(exc):
                raise OrderInDoubt(f"{self.name} {what}: outcome unknown: {describe(exc, self._secrets)}") \
                    from None
            if isinstance(exc, cx.DuplicateOrderId) or "Duplicate order sent" in str(exc):
                raise DuplicateOrder(f"{self.name} {what}: already open: {describe(exc, self._secrets)}") from None
            if "Filter failure" in str(exc):
                await self.reload_markets()
            raise VenueError(f"{self.name} {what}: {describe(exc, self._secrets)}") from None
        except _NETWORK as exc:
            raise OrderInDoubt(f"{self.name} {what}: outcome unknown: {type(exc).__name__}") from None
        except _UNPARSED as exc:
            raise OrderInDoubt(f"{self.name} {what}: outcome unknown: the answer could not be read "
                               f"({type(exc).__name__})") from None
        if not _is_order(raw):
            raise OrderInDoubt(f"{self.name} {what}: outcome unknown: the answer was not an order")
        order = self.to_venue_order(raw, req.client_order_id)
        if order.exchange_id:
            self._exchange_ids[req.client_order_id] = order.exchange_id
        # Seen from its start: the trades its answer names (none, for an answer without them) are all it made yet;
        # unless they add up to more than it says filled: then they are no account of it, and nothing is kept of
        # them (kept, they would be added to every later list of its trades, which could then never agree with it).
        named = trade_list.distinct([t for t in raw.get("trades") or [] if isinstance(t, dict)])
        if not trade_list.beyond(trade_list.amount(named), order.filled):
            self._seen(req.client_order_id, named)
        try:
            return await self._with_fees(order, raw)
        except (VenueError, VenueUnavailable):
            # Placed, and filled at least in part, but the fees of its fills could not be read: it is answered as
            # placed and not yet filled, and the order path's next look at it reads the fills with their fees.
            order.status, order.filled, order.average = "open", 0.0, None
            return order

    def _amount_text(self, req: OrderRequest) -> str:
        """The quantity as the exchange is sent it (its own precision), not as a float prints."""
        try:
            return str(self.exchange.amount_to_precision(req.symbol, req.quantity))
        except cx.BaseError:
            return f"{req.quantity:.12g}"

    async def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        """The order by client order id, or None when the exchange answers that it does not exist."""
        try:
            what = f"fetch_order {client_order_id}"
            raw = await self.reads(what, lambda: self._order(what, self.exchange.fetch_order(
                None, symbol, {"clientOrderId": client_order_id})), passthrough=(cx.OrderNotFound,))
        except cx.OrderNotFound:
            return None
        order = self.to_venue_order(raw, client_order_id)
        if order.exchange_id:
            self._exchange_ids[client_order_id] = order.exchange_id
        return await self._with_fees(order, raw)

    async def cancel_order(self, client_order_id: str, symbol: str) -> VenueOrder:
        """Cancel by client order id. When the exchange no longer has it open, report what became of it (filled or
        cancelled before); UnknownOrder when it never had it."""
        try:
            what = f"cancel_order {client_order_id}"
            raw = await self.reads(what, lambda: self._order(what, self.exchange.cancel_order(
                self._exchange_ids.get(client_order_id), symbol, {"clientOrderId": client_order_id})),
                passthrough=(cx.OrderNotFound,))
        except cx.OrderNotFound:
            known = await self.fetch_order(client_order_id, symbol)
            if known is None:
                raise UnknownOrder(f"{self.name}: no order {client_order_id} on {symbol}") from None
            return known
        order = self.to_venue_order(raw, client_order_id)
        if order.status == "open":  # some exchanges answer a cancel before it is done
            order.status = "canceled"
        return await self._with_fees(order, raw)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        """Open orders of one symbol, or of every configured symbol (one request each: cheaper than the
        account-wide query on most exchanges)."""
        out: list[VenueOrder] = []
        for sym in [symbol] if symbol else self.symbols:
            what = f"fetch_open_orders {sym}"
            raws = await self.reads(what, lambda: self._orders(what, self.exchange.fetch_open_orders(sym)))
            for raw in raws:
                order = self.to_venue_order(raw)
                if order.exchange_id and order.client_order_id:
                    self._exchange_ids[order.client_order_id] = order.exchange_id
                out.append(await self._with_fees(order, raw))
        return out

    async def fetch_orders_since(self, symbol: str, since_ms: int, page: int = 500) -> list[VenueOrder]:
        """The account's orders on `symbol` from `since_ms` on, page by page (an exchange answers a few hundred at
        most per request), each with its fees."""
        out: list[VenueOrder] = []
        seen: set[str] = set()
        since = since_ms
        while True:
            what = f"fetch_orders {symbol}"
            raws = await self.reads(what, lambda: self._orders(what, self.exchange.fetch_orders(symbol, since, page)))
            fresh = [r for r in raws if str(r.get("id")) not in seen]
            for raw in fresh:
                seen.add(str(raw.get("id")))
                order = self.to_venue_order(raw)
                if order.exchange_id and order.client_order_id:
                    self._exchange_ids[order.client_order_id] = order.exchange_id
                out.append(await self._with_fees(order, raw))
            if len(raws) < page or not fresh:
                break
            since = max(int(r.get("timestamp") or since) for r in raws)
        out.sort(key=lambda o: (o.ts or 0, o.exchange_id or ""))
        return out

    async def _order(self, what: str, answer: Awaitable[Any]) -> Any:
        """An order answer, or VenueUnavailable when the body was not one (a page, `{}`): read as an order, its
        defaults would say the order is open, or a cancel done, with nothing filled."""
        raw = await answer
        if not _is_order(raw):
            raise VenueUnavailable(f"{self.name} {what}: the answer was not an order")
        return raw

    async def _orders(self, what: str, answer: Awaitable[Any]) -> list[Any]:
        raws = await answer
        if not isinstance(raws, list) or not all(map(_is_order, raws)):
            raise VenueUnavailable(f"{self.name} {what}: the answer was not a list of orders")
        return raws

    async def _balance(self) -> Any:
        raw = await self.exchange.fetch_balance()
        # An account lists its assets (Binance: every one, at zero too): an answer listing none was not read.
        if not isinstance(raw, dict) or not raw.get("info") or not isinstance(raw.get("total"), dict) \
                or not raw["total"]:
            raise VenueUnavailable(f"{self.name} fetch_balance: the answer was not a balance list")
        return raw

    async def fetch_balance(self) -> dict[str, float]:
        return (await self.fetch_balance_locked())[0]

    async def probe(self) -> None:
        await self.reads("fetch_balance", self._balance, once=True)

    async def fetch_balance_locked(self) -> tuple[dict[str, float], dict[str, float]]:
        raw = await self.reads("fetch_balance", self._balance)
        totals, used = raw.get("total") or {}, raw.get("used") or {}
        return ({asset: float(v) for asset, v in totals.items() if v is not None},
                {asset: float(v) for asset, v in used.items() if v is not None})

    # -- market data (used by the exchange feed) ---------------------------------------------------------------
    async def fetch_ohlcv(self, symbol: str, timeframe: str, since: int | None = None,
                          limit: int | None = None, *, known: int | None = None) -> list[list[float]]:
        """The exchange's candles from `since` on (its newest when None), in time order: rows whose time and prices
        are numbers only. An answer that is not its candles (market/ohlcv.py: rows that are no candles, or none when
        its newest were asked for, or none from `since` on though it has the candle at `known`, read before; ccxt's
        reading of `{}` or a gateway's page served 200) is a failed read, retried as others are, then
        VenueUnavailable: never taken for candles, nor for a market without any."""
        what = f"fetch_ohlcv {symbol}"

        async def read() -> list[list[float]]:
            page = candles_from(await self.exchange.fetch_ohlcv(symbol, timeframe, since, limit), since)
            problem = not_candles(page, since, known)
            if problem is not None:
                raise VenueUnavailable(f"{self.name} {what}: {problem}")
            return page.rows

        return await self.reads(what, read)

    async def server_time(self, timeout_s: float = TIME_READ_S) -> int | None:
        """The exchange's own time (ms since the epoch), or None when it tells none (ccxt's fetchTime). One attempt,
        given up after `timeout_s` (VenueUnavailable): its callers can do without it this time, and must not wait the
        client's whole timeout, with retries, for it."""
        if not (getattr(self.exchange, "has", None) or {}).get("fetchTime"):
            return None

        async def read() -> Any:
            try:
                return await asyncio.wait_for(self.exchange.fetch_time(), timeout_s)
            except asyncio.TimeoutError:
                raise VenueUnavailable(f"{self.name} fetch_time: no answer within {timeout_s:g}s") from None

        answer = await self.reads("fetch_time", read, once=True)
        try:
            return int(answer)
        except (TypeError, ValueError, OverflowError):
            raise VenueError(f"{self.name}: its time is not a number: {answer!r:.60}") from None

    async def last_price(self, symbol: str) -> float:
        ticker = await self.reads(f"fetch_ticker {symbol}", lambda: self.exchange.fetch_ticker(symbol))
        last = ticker.get("last") or ticker.get("close")
        if last is None:
            raise VenueError(f"{self.name}: ticker for {symbol} has no last price")
        try:
            price = float(last)
        except (TypeError, ValueError):
            raise VenueError(f"{self.name}: ticker for {symbol} has no last price: {last!r:.100}") from None
        # An approval is sized at it: a price ffe cannot compute with (bounds.py) is no price to size at.
        problem = price_problem(price)
        if problem is not None:
            raise VenueError(f"{self.name}: ticker for {symbol}: {problem}")
        return price

    # -- mapping -----------------------------------------------------------------------------------------------
    def to_venue_order(self, o: dict[str, Any], client_order_id: str | None = None) -> VenueOrder:
        info = o.get("info") or {}
        # a Binance cancel answer carries the cancel request's own id as clientOrderId
        cid = client_order_id or info.get("origClientOrderId") or o.get("clientOrderId") or ""
        filled = float(o.get("filled") or 0.0)
        average = o.get("average")
        if average is None and filled and o.get("cost"):
            average = float(o["cost"]) / filled
        otype = o.get("type") or "market"
        price = o.get("price")
        # Some answers (a cancel's, on some exchanges) leave the side out: the journal knows it for ffe's own orders.
        side = o.get("side")
        known = side in ("buy", "sell")
        return VenueOrder(
            client_order_id=cid, symbol=o.get("symbol") or "", side=Side(side) if known else Side.BUY, side_known=known,
            quantity=float(o.get("amount") or 0.0), status=_STATUS.get(o.get("status") or "open", "open"),
            filled=filled, average=float(average) if average else None,
            exchange_id=str(o["id"]) if o.get("id") is not None else None, type=otype,
            price=float(price) if price and otype == "limit" else None, ts=o.get("timestamp"))

    def _answer_fees(self, order: VenueOrder, raw: dict[str, Any]) -> tuple[float, float, float] | None:
        """The fees an order answer gives, as _trade_fees says; None where it gives none to go by.

        An answer that lists the order's trades (Binance's FULL answer: its fills) gives theirs, each trade once,
        when every one says its fee and they add up to what the order filled: ccxt's own list of the answer's fees
        counts a trade as often as the list names it, and sums each currency over trades at different prices (a fee
        in the base currency there has no one price to be valued at). ccxt also sums the amounts and the cost the
        answer leaves out over that list: an answer that names a trade twice is priced from its distinct trades,
        or by _with_fees from the order's trades. An answer that lists none gives its list of fees."""
        listed = [t for t in raw.get("trades") or [] if isinstance(t, dict)]
        if not listed:
            fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
            return self._fees(fees, order.symbol, None) if fees else None
        trades = self._counted_once(order, listed)
        total = trade_list.amount(trades)
        agrees = not trade_list.short_of(total, order.filled) and not trade_list.beyond(total, order.filled)
        if agrees:  # the account's balances follow the trades, whatever cost the answer says
            order.average = trade_list.average(trades)
        elif len(trades) < len(listed):
            order.average = None
        if agrees and all(trade_list.fees_of(t) for t in trades):
            return self._trade_fees(trades, order.symbol)
        return None

    def _trade_fees(self, trades: list[dict[str, Any]], symbol: str | None) -> tuple[float, float, float]:
        """The fees of an order's trades, each valued at its own trade's price."""
        fee = fee_base = fee_base_value = 0.0
        for t in trades:
            f, b, v = self._fees(trade_list.fees_of(t), symbol, t.get("price"))
            fee, fee_base, fee_base_value = fee + f, fee_base + b, fee_base_value + v
        return fee, fee_base, fee_base_value

    def _fees(self, fees: list[dict[str, Any]], symbol: str | None, price: Any) -> tuple[float, float, float]:
        """(all fees valued in the quote currency, the part paid in the base currency as an amount of it, what the
        first counts for that part), of one trade at `price`.

        A fee in the base currency (Binance takes a buy's fee from the coins bought) is valued at its trade's price
        (None: not known, left out of the first and the third), and its amount is reported too: the position holds
        that much less than was bought. A fee in any other currency (an exchange token) cannot be valued without a
        rate and is left out."""
        m = self.exchange.markets.get(symbol) if symbol and self.exchange.markets else None
        if not fees or m is None:
            return 0.0, 0.0, 0.0
        total = base = base_value = 0.0
        for f in fees:
            cost, cur = f.get("cost"), f.get("currency")
            if cost is None:
                continue
            if cur is None or cur == m["quote"]:
                total += float(cost)
            elif cur == m["base"]:
                base += float(cost)
                if price:
                    total += float(cost) * float(price)
                    base_value += float(cost) * float(price)
            elif float(cost) and cur not in self._fees_left_out:
                self._fees_left_out.add(cur)
                traded = [s for s in self.symbols if s.partition("/")[0] == cur]
                if traded:
                    # The coins a traded position is counted in pay them: the account holds less of it than the
                    # books, and reconciliation holds the engine on that difference again after every trade.
                    log.warning("%s: fees paid in %s, which ffe trades (%s), are left out of the books: they take "
                                "coins the account holds toward that position, which reconciliation then finds "
                                "missing; turn off paying fees in %s at the exchange, or take %s out of "
                                "engine.symbols", self.name, cur, ", ".join(traded), cur, ", ".join(traded))
                else:
                    log.warning("%s: fees paid in %s are left out of the books (a fee is counted in the quote or the "
                                "base currency only): the P&L is higher than the account's by them", self.name, cur)
        return total, base, base_value

    async def _with_fees(self, order: VenueOrder, raw: dict[str, Any]) -> VenueOrder:
        """The order answer `raw` (mapped as `order`) with its fees, and its price where it gives none: from the
        answer (_answer_fees), else from the order's trades. Order answers often carry no fee (Binance's lookups and
        cancels never do, nor its RESULT answer to a new order), and some not the price either. Every answer goes
        through here: a fill recorded without its fee would never be charged it, as later answers only add the fees
        beyond those already recorded.

        The order's trades are counted once each (trade_list). Trades that add up to less than the order filled
        are the order so far; trades that add up to more are no account of it: answered as nothing filled."""
        answered = self._answer_fees(order, raw)
        if answered is not None:
            order.fee, order.fee_base, order.fee_base_value = answered
        # fees in the base currency the answer gives no trade's price for are not known yet: the trades say
        known = answered is not None and not (order.fee_base > 0 and order.fee_base_value <= 0)
        if order.filled <= 0 or (order.average is not None and known) or not order.exchange_id:
            return order
        listed = await self._order_trades(order)
        if listed is None:
            if order.fee_base > 0 and order.fee_base_value <= 0 and order.average:
                # An exchange that lists no trades: its base fee valued at the only price it gives, the average.
                order.fee_base_value = order.fee_base * order.average
                order.fee += order.fee_base_value
            return order
        trades = self._counted_once(order, listed)
        seen = self._trades_seen.get(order.client_order_id)
        late = _listed_late(seen or [], trades)
        if late and not trade_list.beyond(trade_list.amount(trades + late), order.filled):
            trades = trades + late  # named before (the new order's answer), not listed yet: the order's trades still
        total, traded_at = trade_list.amount(trades), trade_list.average(trades)
        if trade_list.beyond(total, order.filled):
            # Trades the order did not make are among them, and which is not known: none is booked (its fee would
            # be charged, its coins counted), and the order is looked up again until its trades agree with it.
            if self._first("beyond", order.client_order_id):
                log.warning("%s: the trades of order %s add up to %.12g, more than its %.12g filled: none of them is "
                            "booked until they agree with it", self.name, order.client_order_id, total, order.filled)
            order.fee = order.fee_base = order.fee_base_value = 0.0
            return _answered_so_far(order, 0.0, None)
        if seen is not None or not trade_list.short_of(total, order.filled):  # (none the order did not make)
            self._seen(order.client_order_id, trades)
        order.fee, order.fee_base, order.fee_base_value = self._trade_fees(trades, order.symbol)
        # The price is the trades' when they cover the fill (the balances follow them, not the cost an answer says),
        # or when the answer says how much filled but not for how much.
        if order.average is None or not trade_list.short_of(total, order.filled):
            order.average = traded_at
        if trade_list.short_of(total, order.filled):
            # The trades lag the order (an exchange's trade history can trail its order book): the fees of the
            # fill beyond them are not known yet. The order is answered as far as its trades go, and open, so
            # that the order path records that much and looks it up again for the rest.
            if order.client_order_id not in self._trades_behind:  # said once per order, not at every look
                self._trades_behind.add(order.client_order_id)
                log.warning("%s: the trades of order %s cover %.12g of its %.12g filled; the rest is read later",
                            self.name, order.client_order_id, total, order.filled)
            order = _answered_so_far(order, total, traded_at)
            order.trades_unsure = seen is None
            return order
        self._trades_behind.discard(order.client_order_id)
        return order

    def _seen(self, client_order_id: str, trades: list[dict[str, Any]]) -> None:
        """Remember the order's trades (those with an id: a trade without one cannot be told from another listed
        later), the oldest orders forgotten past SAID_MAX."""
        self._trades_seen.pop(client_order_id, None)
        self._trades_seen[client_order_id] = [t for t in trades if t.get("id") is not None]
        while len(self._trades_seen) > SAID_MAX:
            del self._trades_seen[next(iter(self._trades_seen))]

    def _counted_once(self, order: VenueOrder, listed: list[Any]) -> list[dict[str, Any]]:
        """The order's trades `listed`, each once (trade_list.distinct); a list that names a trade twice is said
        once per order."""
        listed = [t for t in listed if isinstance(t, dict)]
        trades = trade_list.distinct(listed)
        if len(trades) < len(listed) and self._first("repeated", order.client_order_id):
            log.warning("%s: the trades of order %s name a trade more than once (%d listed, %d distinct): each is "
                        "counted once", self.name, order.client_order_id, len(listed), len(trades))
        return trades

    async def _paged_order_trades(self, order: VenueOrder) -> list[dict[str, Any]]:
        """Every trade of the order, a page (TRADES_PAGE, Binance's most) at a time: a page that comes back full may
        not be the last, and an order with more trades than a page read as whole would be booked in part, its trades
        looked up again and again as if they lagged."""
        trades: list[dict[str, Any]] = []
        # From the first trade id on, oldest first: asked from none, Binance answers the most recent trades, and
        # the pages after them would hold nothing while the oldest were never read.
        start: int | None = 0
        what = f"fetch_order_trades {order.client_order_id}"
        for _ in range(TRADES_PAGES_MAX):
            params = {"fromId": start}

            async def read() -> list[dict[str, Any]]:
                got = await self.exchange.fetch_order_trades(order.exchange_id, order.symbol, None, TRADES_PAGE,
                                                             params)
                # A body that is no list (cut short on its way, a gateway's text): ccxt reads each of its characters
                # as an empty trade. Not read: tried again.
                if not isinstance(got, list) or not all(isinstance(t, dict) and isinstance(t.get("info"), dict)
                                                        for t in got):
                    raise VenueUnavailable(f"{self.name} {what}: the answer was not a trade list")
                return got

            page = await self.reads(what, read)
            trades += page
            start = _next_trade_id(page) if len(page) >= TRADES_PAGE else None
            if start is None:
                break
        return trades

    def _first(self, warning: str, client_order_id: str) -> bool:
        """Whether `warning` is said of the order now: once per order (of the last SAID_MAX), not at every look."""
        key = (warning, client_order_id)
        if key in self._said:
            return False
        self._said[key] = None
        while len(self._said) > SAID_MAX:
            del self._said[next(iter(self._said))]
        return True

    async def _order_trades(self, order: VenueOrder) -> list[dict[str, Any]] | None:
        """The order's trades: asked of the order where the exchange can, else picked by order id from the
        account's trades in the symbol since the order was placed; None where the exchange lists neither."""
        has = self.exchange.has
        if has.get("fetchOrderTrades"):
            return await self._paged_order_trades(order)
        if not has.get("fetchMyTrades") or order.ts is None:
            return None
        mine: list[dict[str, Any]] = await self.reads(
            f"fetch_my_trades {order.client_order_id}",
            lambda: self.exchange.fetch_my_trades(order.symbol, order.ts))
        return [t for t in mine if t.get("order") is not None and str(t["order"]) == order.exchange_id]


def _next_trade_id(page: list[Any]) -> int | None:
    """The id the next page of an order's trades starts from (Binance's `fromId`: the trades from that id on),
    or None when the page's trades carry no numeric id to go on from."""
    ids = [str(t.get("id")) for t in page if isinstance(t, dict)]
    try:
        return max(int(i) for i in ids) + 1 if ids else None
    except (TypeError, ValueError):
        return None


def _listed_late(seen: list[dict[str, Any]], listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trades seen of an order before that a list of its trades leaves out, when every trade listed has an id
    to tell them apart by (without ids, one could be counted twice: none is added)."""
    ids = {str(t.get("id")) for t in listed}
    if not seen or any(t.get("id") is None for t in listed):
        return []
    return [t for t in seen if str(t.get("id")) not in ids]


def _answered_so_far(order: VenueOrder, filled: float, average: float | None) -> VenueOrder:
    """`order` answered as filled only as far as its trades account for (`filled` at `average`) and open, its
    status at the venue kept aside: the order path records that much and looks it up again."""
    order.venue_filled, order.filled, order.average = order.filled, filled, average
    order.venue_status, order.status = order.status, "open"
    order.trades_behind = True
    return order


def _is_order(raw: Any) -> bool:
    """Whether ccxt's parse of an answer is an order: it has a status, or at least the exchange's id for it (an
    acknowledgement that says nothing of its fills)."""
    return isinstance(raw, dict) and (raw.get("status") in _STATUS or raw.get("id") is not None)


_STATUS = {"open": "open", "closed": "closed", "canceled": "canceled", "cancelled": "canceled",
           "expired": "expired", "rejected": "rejected", "canceling": "open"}
