"""Settings: config.toml, then .env, then FFE_ environment variables (later wins).

Environment keys carry the `FFE_` prefix and `__` between levels: `FFE_RISK__MAX_OPEN_POSITIONS=3`. Unknown keys are
errors at every level and in every source. Each source is read here, so that an error can name the file and line (or
the variable) it came from; the merged result is validated once by the sections below (schema.py:
`Settings(...)` takes only its arguments, so code and tests get plain defaults). Every problem surfaces as one
ConfigError whose message is a single line and never holds a secret.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from . import reach
from .clock import DAY_MS
from .errors import FfeError, StartError, UnreachablePath, kind_of, unreachable
from .redact import MIN_SECRET, REDACTED, Redactor
from .urls import base_url_problem, mask_url, mask_urls
from .settings_files import DEFAULT_CONFIG, MAX_SETTINGS_BYTES, regular_bytes, settings_paths
from .schema import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    Section,
    ValidationError,
    ValidationInfo,
    field_validator,
)

ENV_PREFIX = "FFE_"
ENV_DELIMITER = "__"
SECRET_MASK = REDACTED
ProviderName = Literal["trend", "momentum", "mean_reversion", "breakout", "llm"]
KNOWN_PROVIDERS: tuple[str, ...] = get_args(ProviderName)
DEFAULT_PROVIDERS: tuple[ProviderName, ...] = ("trend", "momentum", "mean_reversion", "breakout")

Path_ = tuple[str, ...]  # a key path: ("risk", "max_open_positions")

# A secret shorter than this is not scrubbed from surrounding text: replacing one or two characters everywhere
# would mangle messages, and no real credential is that short.
_MIN_SCRUB_LEN = 4


class ConfigError(FfeError):
    """Invalid configuration (exit code 2). str() is one line naming the source (file:line or variable) and the key."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None, key: str | None = None):
        super().__init__(message)
        self.source = source
        self.line = line
        self.key = key


# ---------------------------------------------------------------------------------------------------------------
# Where each value came from


@dataclass(frozen=True, slots=True)
class Origin:
    kind: str  # "toml" | "dotenv" | "env" | "cli"
    file: str | None = None
    line: int | None = None
    var: str | None = None  # the FFE_ variable for dotenv/env, the option for cli
    # A [table] header line: where the table starts, not where any key in it was set. A key under it that is at
    # fault was set by its own line, another source, or not at all (its default).
    table: bool = False

    @property
    def where(self) -> str:
        if self.kind == "env":
            return "environment"
        if self.kind == "cli":
            return "command line"
        return f"{self.file}:{self.line}" if self.line else f"{self.file}"

    @property
    def source(self) -> str:
        """The source alone, as a comment or an aside says it: "config.toml:3", ".env:2 FFE_A__B", "environment
        FFE_A__B", "--data-dir"."""
        if self.kind == "env":
            return f"environment {self.var}"
        if self.kind == "cli":
            return f"{self.var}"
        return f"{self.where} {self.var}" if self.var else self.where

    @property
    def rank(self) -> tuple[int, int]:
        return ({"toml": 0, "dotenv": 1, "env": 2}.get(self.kind, 3), self.line or 0)


# ---------------------------------------------------------------------------------------------------------------
# Field types


def _symbol(value: str) -> str:
    if not is_symbol(value):
        raise ValueError(f"{value!r} is not a BASE/QUOTE symbol such as 'BTC/USDT'")
    return value


def is_symbol(value: str) -> bool:
    """A market symbol as ccxt writes it: BASE/QUOTE (and :SETTLE for a contract)."""
    return _SYMBOL_RE.fullmatch(value) is not None


def allowed_timeframe(value: str) -> bool:
    """A timeframe the engine runs on: Nm, Nh or Nd, from 1m to 7d."""
    return bool(_TIMEFRAME_RE.fullmatch(value)) and int(value[:-1]) * _TIMEFRAME_MS[value[-1]] <= MAX_TIMEFRAME_MS


def _timeframe(value: str) -> str:
    if not _TIMEFRAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a timeframe such as '1m', '4h' or '1d'")
    if int(value[:-1]) * _TIMEFRAME_MS[value[-1]] > MAX_TIMEFRAME_MS:
        raise ValueError(f"{value!r} is longer than 7d")
    return value


def _path(value: str) -> str:
    # A NUL cannot be in a file name: the OS call would fail at start, after the configuration was approved.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if len(value.encode()) > 4096:
        raise ValueError("is longer than 4096 bytes")
    return value


def _is_http_url(value: str) -> bool:
    if not _HTTP_URL_RE.fullmatch(value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # a port that is no number from 0 to 65535 raises
    except ValueError:
        return False
    return bool(parts.hostname)


def _base_url(secret_keys: str) -> AfterValidator:
    """An http(s) URL with a host and no credential in it (urls.py): it is shown and logged. A refused one is quoted
    masked, whatever it is."""

    def check(value: str) -> str:
        if not _is_http_url(value):
            raise ValueError(f"{mask_url(value)!r} is not an http:// or https:// URL with a host")
        problem = base_url_problem(value, secret_keys)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _secret_url(value: SecretStr | None) -> SecretStr | None:
    # A webhook's URL carries its credential: the message must not quote it.
    if value is not None and not _is_http_url(value.get_secret_value()):
        raise ValueError("must be an http:// or https:// URL with a host (the value is a secret: not shown)")
    return value


def _host(value: str) -> str:
    if not _is_host(value):
        raise ValueError(f"{value!r} is not a host name or an IP address")
    return value


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    name = value.removesuffix(".")
    labels = name.split(".")
    # An all-digit last label is no name: 300.1.2.3 is a mistyped address, not a host to look up.
    return len(name) <= 253 and all(_HOST_LABEL_RE.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def _empty_secret_is_unset(value: Any) -> Any:
    # `FFE_EXCHANGE__SECRET=` in a .env file means "not set", not "an empty password".
    if value == "" or (isinstance(value, SecretStr) and value.get_secret_value() == ""):
        return None
    return value


def _secret_is_clean(value: SecretStr | None) -> SecretStr | None:
    # A credential pasted with a stray space or newline fails at the exchange with an opaque signature error;
    # catch it here. The message must not quote the value.
    if value is not None:
        raw = value.get_secret_value()
        if raw != raw.strip() or "\n" in raw or "\r" in raw:
            raise ValueError("must not contain line breaks or leading/trailing whitespace")
        # Sent in a header or an URL (an API key, a bearer token, a bot token): a NUL or a tab there fails the
        # request, or is sent as part of the credential, only once the engine runs.
        if _CONTROL_RE.search(raw):
            raise ValueError("must not contain a control character (a NUL, a tab)")
        # A value like `true`, `0000` or `USDT` is no secret, and its text is in every record: masked there, the
        # records would no longer say what happened (redact.py).
        if len(raw) < MIN_SECRET:
            raise ValueError(f"must be at least {MIN_SECRET} characters long: a shorter one is no secret (the value "
                             "is not shown)")
    return value


# Option names that carry a credential: ccxt takes none from its options, and config.toml is no place for one. A
# name holding one of the words is one (apiSecret, secretKey, X-MBX-APIKEY, accessToken); the short ones only whole.
_CREDENTIAL_WORDS = ("apikey", "secret", "password", "passwd", "passphrase", "token", "privatekey", "authorization",
                     "twofa", "2fa")
_CREDENTIAL_NAMES = {"uid", "login", "otp"}


def _names_credential(key: str) -> bool:
    name = key.replace("-", "").replace("_", "").lower()
    return name in _CREDENTIAL_NAMES or any(word in name for word in _CREDENTIAL_WORDS)


RECV_WINDOW_MAX_MS = 60_000  # Binance refuses a longer receive window


def _exchange_options(value: dict[str, Any]) -> dict[str, Any]:
    """exchange.options go to ccxt as written: what ccxt would read otherwise than it reads here is refused (a
    receive window as text, which ccxt reads as a number and the settle window's check would not see), as is NaN or
    infinity at any depth, and a credential (never shown)."""
    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                if _names_credential(str(key)):
                    raise ValueError(f"{'.'.join(path + (str(key),))}: a credential has no place in exchange.options "
                                     "(ccxt takes none from there): FFE_EXCHANGE__API_KEY and FFE_EXCHANGE__SECRET, "
                                     "in .env or the environment (the value is not shown)")
                walk(child, path + (str(key),))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, path + (str(i),))
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{'.'.join(path)}: NaN and infinity are refused")

    walk(value, ())
    window = value.get("recvWindow")
    if "recvWindow" in value and (isinstance(window, bool) or not isinstance(window, int)
                                  or not 1 <= window <= RECV_WINDOW_MAX_MS):
        raise ValueError(f"recvWindow: a whole number of milliseconds from 1 to {RECV_WINDOW_MAX_MS}, got "
                         f"{window!r}{' (text)' if isinstance(window, str) else ''}")
    return value


_SYMBOL_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*/[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*(?::[A-Za-z0-9]+)?")
_TIMEFRAME_RE = re.compile(r"[1-9][0-9]*[mhd]")
# No whitespace and no control character (a NUL, an escape): the HTTP client would refuse the URL only when it
# sends the first request.
_HTTP_URL_RE = re.compile(r"https?://[^\s/\x00-\x1f\x7f]+(/[^\s\x00-\x1f\x7f]*)?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TIMEFRAME_MS = {"m": 60_000, "h": 3_600_000, "d": DAY_MS}
MAX_TIMEFRAME_MS = 7 * DAY_MS

Symbol = Annotated[str, AfterValidator(_symbol)]
Secret = Annotated[Union[SecretStr, None], BeforeValidator(_empty_secret_is_unset), AfterValidator(_secret_is_clean)]
SecretUrl = Annotated[Secret, AfterValidator(_secret_url)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
FilePath = Annotated[str, Field(min_length=1), AfterValidator(_path)]
FilePathOrEmpty = Annotated[str, AfterValidator(_path)]  # empty: a default path in its place
# Every number has a lower and an upper bound (documented in config.toml): a value past them would overflow, grow
# memory without end, or only ever be a typo. Integers stay far inside 64 bits, where SQLite stores them.
Seconds = Annotated[float, Field(gt=0, le=86_400)]  # at most a day
Pct = Annotated[float, Field(gt=0, le=100)]
Bps = Annotated[float, Field(ge=0, le=10_000)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]
Bars = Annotated[int, Field(ge=0, le=100_000)]
Money = Annotated[float, Field(ge=0, le=1e12)]


class _Section(Section):
    """A table of config.toml: unknown keys refused, numbers finite, every assignment checked (schema.py)."""


# ---------------------------------------------------------------------------------------------------------------
# The schema (names are the contract in docs/config.md)


class EngineSettings(_Section):
    symbols: list[Symbol] = Field(default_factory=lambda: ["BTC/USDT", "ETH/USDT"], min_length=1)
    timeframe: Annotated[str, AfterValidator(_timeframe)] = "1m"
    approval: Literal["auto", "manual"] = "auto"
    approval_ttl_s: Seconds = 120.0
    live_start_paused: bool = True
    warmup_bars: Bars = 100  # history fed to the indicators before trading starts
    reconcile_interval_s: Seconds = 30.0
    order_poll_s: Seconds = 2.0  # how often in-flight orders are checked with the venue
    stop_timeout_s: Seconds = 5.0
    cancel_timeout_s: Seconds = 5.0  # kill switch / flatten: the bound on all cancels together

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: list[str]) -> list[str]:
        dupes = sorted({s for s in value if value.count(s) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return value

    @property
    def timeframe_ms(self) -> int:
        return int(self.timeframe[:-1]) * _TIMEFRAME_MS[self.timeframe[-1]]


class MarketSettings(_Section):
    source: Literal["simulated", "replay", "exchange"] = "simulated"
    replay_files: dict[Symbol, FilePath] = Field(default_factory=dict, validate_default=True)
    speed: float = Field(2.0, ge=0, le=1_000_000)  # bars per second of wall time; 0 = as fast as possible
    seed: int = Field(7, ge=0, le=2**63 - 1)

    @field_validator("replay_files")
    @classmethod
    def _replay_needs_files(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.data.get("source") == "replay" and not value:
            raise ValueError('source = "replay" needs at least one symbol -> CSV file')
        return value


class VenueSettings(_Section):
    kind: Literal["paper", "ccxt"] = "paper"
    starting_cash: float = Field(10_000.0, gt=0, le=1e12)
    quote: NonEmptyStr = "USDT"
    fee_bps: Bps = 10.0
    slippage_bps: Bps = 5.0
    min_notional: Money = 10.0
    amount_step: float = Field(1e-6, ge=1e-12, le=1e6)  # paper venue amount precision


class LlmSettings(_Section):
    base_url: Annotated[str, _base_url("ensemble.llm.api_key")] = "http://127.0.0.1:11434/v1"
    model: NonEmptyStr = "llama3"
    api_key: Secret = None
    timeout_s: Seconds = 5.0


class EnsembleSettings(_Section):
    strategy: Literal["weighted", "majority", "unanimous"] = "weighted"
    min_votes: int = Field(2, ge=1, le=100)
    # Checked when left to its default too: min_votes alone may be beyond the default providers.
    providers: list[ProviderName] = Field(default_factory=lambda: list(DEFAULT_PROVIDERS), min_length=1,
                                          validate_default=True)
    adaptive: bool = True
    provider_timeout_s: Seconds = 2.0
    warmup_trades: int = Field(20, ge=0, le=1_000_000)
    weight_floor: float = Field(0.05, ge=0, lt=1)
    learning_rate: float = Field(0.1, gt=0, le=1)
    llm: LlmSettings = Field(default_factory=LlmSettings)

    @field_validator("providers")
    @classmethod
    def _providers_reach_quorum(cls, value: list[str], info: ValidationInfo) -> list[str]:
        dupes = sorted({p for p in value if value.count(p) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        min_votes = info.data.get("min_votes")
        if min_votes is not None and min_votes > len(value):
            # Every decision would be HOLD (QUORUM): almost certainly not what was meant.
            raise ValueError(f"min_votes = {min_votes} can never be reached with {len(value)} provider(s)")
        return value


class RiskSettings(_Section):
    # gates, in docs/gates.md order
    stale_after_bars: int = Field(3, ge=1, le=10_000)
    min_confidence: float = Field(0.55, ge=0, le=1)
    max_open_positions: int = Field(2, ge=1, le=10_000)
    max_position_pct: Pct = 10.0
    max_concentration_pct: Pct = 30.0
    max_leverage: float = Field(1.0, gt=0, le=100)
    max_drawdown_pct: Pct = 15.0
    daily_loss_limit_pct: Pct = 5.0
    max_var_pct: Pct = 5.0
    var_confidence: float = Field(0.95, gt=0.5, lt=1)
    max_correlation: float = Field(0.7, gt=-1, le=1)
    max_orders_per_minute: Count = 10
    max_daily_trades: Count = 50
    # sizing
    risk_per_trade_pct: Pct = 1.0
    stop_loss_atr: float = Field(2.0, gt=0, le=1_000)
    take_profit_atr: float = Field(3.0, gt=0, le=1_000)
    var_window: int = Field(250, ge=30, le=100_000)  # bars of returns (30 at least: fewer cannot measure a tail)
    correlation_window: int = Field(100, ge=30, le=100_000)


class ExchangeSettings(_Section):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "binance"
    timeout_ms: int = Field(10_000, ge=1, le=600_000)
    poll_s: Seconds = 5.0
    options: Annotated[dict[str, Any], AfterValidator(_exchange_options)] = Field(default_factory=dict)
    api_urls: dict[NonEmptyStr, Annotated[str, _base_url("exchange.api_key and exchange.secret")]] = Field(
        default_factory=dict)
    sandbox: bool = False
    # ccxt's pacing of requests: each waits the exchange's weight for it times this many ms (unset: ccxt's figure
    # for the exchange, binance 50). Raise it to stay further under an exchange's limits; 0 only for a gateway that
    # does its own pacing.
    rate_limit_ms: int | None = Field(None, ge=0, le=60_000)
    # After an unanswered create_order, a lookup that does not find the order proves it absent (and lets the
    # order be sent again with the same id) only once this long has passed: at least the exchange's receive
    # window (options.recvWindow on Binance), after which it refuses the original request.
    settle_window_ms: Count = 10_000
    api_key: Secret = None
    secret: Secret = None
    password: Secret = None


class BreakerSettings(_Section):
    failure_threshold: int = Field(3, ge=1, le=10_000)
    recovery_timeout_s: Seconds = 60.0


class BacktestSettings(_Section):
    # full: every decision with its votes and gates; trades: orders, fills, trades, equity, weights and refusal
    # counts per gate; summary: the report only (docs/config.md).
    records: Literal["full", "trades", "summary"] = "full"
    # The candles read and the indicators and votes computed from them, kept between runs in the data directory's
    # cache/ up to this size (least recently used removed first); 0 keeps none (datacache.py).
    cache_mb: float = Field(512.0, ge=0, le=1_048_576)


class StorageSettings(_Section):
    path: FilePath = "data/ffe.db"
    # How long a write waits for another process's lock on the database before the engine stops on it, HALTED.
    busy_timeout_s: float = Field(5.0, gt=0, le=3600)


class LoggingSettings(_Section):
    dir: FilePath = "logs"
    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = "INFO"


class AuditSettings(_Section):
    # Rotation of logs/audit.jsonl: seq and the hash chain run on across files (chain.py). Both may be on.
    rotate_mb: float = Field(0.0, ge=0, le=1_048_576)  # start a new file before one grows past this; 0 = never
    rotate_daily: bool = False  # start a new file with the first record of each UTC day

    @property
    def rotate_bytes(self) -> int:
        return int(self.rotate_mb * 1024 * 1024)


class BackupSettings(_Section):
    dir: FilePath = "backups"  # where `ffe backup` writes (--to overrides)
    keep_last: int = Field(14, ge=1, le=10_000)  # the newest N backups are kept
    keep_days: int = Field(30, ge=0, le=3650)  # and the newest of each day for D days; older ones are deleted


class ControlSettings(_Section):
    socket: FilePathOrEmpty = ""  # empty: <data dir>/ffe.sock
    request_timeout_s: float = Field(10.0, gt=0, le=3600)  # how long `ffe ctl` waits for an answer
    max_connections: int = Field(16, ge=1, le=10_000)  # one more is always kept for a halt
    idle_timeout_s: float = Field(30.0, gt=0, le=86_400)  # a connection with no request for this long is closed
    stream_buffer_kb: int = Field(4096, ge=16, le=1_048_576)  # unsent events before a subscriber is dropped


class TuiSettings(_Section):
    keys: dict[NonEmptyStr, NonEmptyStr] = Field(default_factory=dict)  # binding id -> key; ids checked by the TUI
    chart: bool = True


class MonitorSettings(_Section):
    enabled: bool = True  # the HTTP endpoint (/health, /metrics); health and alerts work without it
    host: Annotated[str, AfterValidator(_host)] = "127.0.0.1"  # a host name or an IP address
    port: int = Field(9310, ge=0, le=65535)  # 0: any free port (the address is shown in the console's status)
    token: Secret = None  # bearer token; required to bind anywhere but loopback (FFE_MONITOR__TOKEN)
    loop_stale_s: Seconds = 30.0  # no completed loop turn for this long: the engine is down
    # no bar for a symbol for this long: degraded; 0 = three timeframes
    data_stale_s: float = Field(0.0, ge=0, le=30 * 86_400)
    audit_stale_s: Seconds = 30.0  # an audit record waiting this long to be written: the engine is down
    # free space below this on the data or log directory's file system: DISK_LOW, before the records stop (0: off)
    disk_free_min_mb: float = Field(200.0, ge=0, le=1e9)


class AlertSettings(_Section):
    # Channels: each is on when its URL or token is set, from .env or the environment only (they are secrets).
    # The URLs are http(s) URLs with a host.
    webhook_url: SecretUrl = None  # generic JSON webhook (FFE_ALERTS__WEBHOOK_URL)
    slack_url: SecretUrl = None  # Slack-compatible incoming webhook (FFE_ALERTS__SLACK_URL)
    discord_url: SecretUrl = None  # Discord webhook (FFE_ALERTS__DISCORD_URL)
    telegram_token: Secret = None  # Telegram bot token (FFE_ALERTS__TELEGRAM_TOKEN)
    telegram_chat_id: str = Field("", validate_default=True)  # the chat the bot writes to
    telegram_api: Annotated[str, _base_url("alerts.telegram_token")] = "https://api.telegram.org"
    # Names the engine in its alerts in place of its data directory (which they carry all the same).
    instance: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{0,64}$")] = ""
    heartbeat_url: SecretUrl = None  # dead man's switch, pinged while the loop is alive (FFE_ALERTS__HEARTBEAT_URL)
    heartbeat_s: Seconds = 60.0
    min_severity: Literal["page", "warn", "info"] = "info"  # alerts below this are not sent
    window_s: Seconds = 300.0  # per alert key: one message, then a summary of the repeats at the window's end
    in_doubt_s: Seconds = 60.0  # an order in doubt this long is an alert
    outbox_max: Count = 1000  # undelivered alerts kept per channel; the oldest are dropped beyond it
    timeout_s: Seconds = 5.0  # one delivery request
    retry_attempts: Count = 3  # tries per round before the channel backs off
    retry_initial_s: Seconds = 1.0  # backoff between tries, doubling up to retry_max_s
    retry_max_s: Seconds = 60.0

    @field_validator("telegram_chat_id")
    @classmethod
    def _chat_id_plain(cls, value: str, info: ValidationInfo) -> str:
        if value and not re.fullmatch(r"-?[0-9]+|@[A-Za-z0-9_]{5,}", value):
            raise ValueError("must be a numeric chat id or @channelname (5 or more letters, digits or _ after @)")
        if not value and info.data.get("telegram_token") is not None:
            raise ValueError("is needed when the Telegram bot token (FFE_ALERTS__TELEGRAM_TOKEN) is set")
        return value


class Settings(Section):
    """The whole configuration: one section per table of config.toml (docs/config.md)."""

    mode: Literal["paper", "live"] = "paper"
    engine: EngineSettings = Field(default_factory=EngineSettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    venue: VenueSettings = Field(default_factory=VenueSettings)
    ensemble: EnsembleSettings = Field(default_factory=EnsembleSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    backtest: BacktestSettings = Field(default_factory=BacktestSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    tui: TuiSettings = Field(default_factory=TuiSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    _source_files: list[Path] = Field(default_factory=list)
    _sources: list[str] = Field(default_factory=list)
    _origins: dict[Path_, Origin] = Field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.path).parent

    @property
    def db_path(self) -> Path:
        return Path(self.storage.path)

    @property
    def log_dir(self) -> Path:
        return Path(self.logging.dir)

    @property
    def audit_path(self) -> Path:
        return self.log_dir / "audit.jsonl"

    @property
    def socket_path(self) -> Path:
        return Path(self.control.socket) if self.control.socket else self.data_dir / "ffe.sock"

    @property
    def source_files(self) -> list[Path]:
        """The files that were read (config file, .env), in the order they were applied."""
        return list(self._source_files)

    def origin_of(self, *path: str) -> Origin | None:
        """Where the value at `path` (e.g. "tui", "keys") was set, or the nearest enclosing key that was; None for a
        default."""
        return _origin_for(path, self._origins)

    def set_at(self, *path: str) -> Origin | None:
        """Where the value at `path` itself was set: its own line or variable, or the value of an enclosing key that
        holds it (an inline table, a table from one variable); None for a default, even under a [table] header."""
        return _own_origin(path, self._origins)

    def blame(self, path: tuple[str, ...], message: str) -> str:
        """`message` (which names the key at fault) after where the value at `path` was set: "config.toml:3: ...",
        "environment: FFE_A__B: ...", ".env:2: FFE_A__B: ..."; an enclosing [table] header only when nothing more
        specific set it, and the message alone for a default."""
        return _format(_origin_at(path, self._origins), path, message, names_key=True)

    def said(self, *path: str) -> str:
        """The value at `path` and where it was set, as an aside beside another key's error says it:
        'mode = "paper" from config.toml:1', 'venue.kind = "paper", the default'."""
        said = f"{_dotted(path)} = {_toml_value(_get_path(self, path))}"
        origin = self.set_at(*path)
        return f"{said} from {origin.source}" if origin is not None else f"{said}, the default"

    def with_dirs(self, data_dir: str | Path | None = None, log_dir: str | Path | None = None) -> Settings:
        """A copy with the database moved under data_dir (same file name) and the logs under log_dir."""
        update: dict[str, Any] = {}
        origins = dict(self._origins)
        if data_dir is not None:
            path = str(Path(data_dir) / Path(self.storage.path).name)
            update["storage"] = self.storage.model_copy(update={"path": path})
            origins[("storage", "path")] = Origin("cli", var="--data-dir")
        if log_dir is not None:
            update["logging"] = self.logging.model_copy(update={"dir": str(log_dir)})
            origins[("logging", "dir")] = Origin("cli", var="--log-dir")
        copy = self.model_copy(update=update)
        copy._origins = origins
        copy._source_files = list(self._source_files)
        copy._sources = list(self._sources)
        return copy

    def secrets(self) -> list[str]:
        """The plain value of every secret that is set, for redaction in logs and screens."""
        found = []
        for path in _secret_paths(type(self)):
            value = _get_path(self, path)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
        return found


@dataclass(slots=True)
class _Layer:
    kind: str  # "toml" | "dotenv" | "env"
    values: dict[str, Any]
    origins: dict[Path_, Origin]
    label: str  # for the "sources" comment of render_settings
    file: Path | None = None
    unknown: list[tuple[str, Origin]] = dataclasses.field(default_factory=list)  # FFE_ variables that name no setting


Problem = tuple[tuple[int, int, int], str, Origin | None, str]  # (sort key, message, origin, key)


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if part == "[key]":  # the marker of an invalid dict key (schema.py); the key itself is already in the path
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _env_name(path: Path_) -> str:
    return ENV_PREFIX + ENV_DELIMITER.join(p.upper() for p in path)


# ---------------------------------------------------------------------------------------------------------------
# Schema walking (unknown keys, secret fields, how to read an environment value)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _model_of(annotation: Any) -> type[Section] | None:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    return None


def _is_secret(annotation: Any) -> bool:
    annotation = _unwrap(annotation)
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _kind(annotation: Any) -> str:
    """'model', 'dict', 'list', 'secret', 'bool', 'int', 'float' or 'scalar'."""
    if _model_of(annotation):
        return "model"
    if _is_secret(annotation):
        return "secret"
    if _unwrap(annotation) is bool:
        return "bool"
    origin = get_origin(_unwrap(annotation))
    if origin is dict:
        return "dict"
    if origin is list:
        return "list"
    either = origin is Union or origin is UnionType  # Optional[int], int | None
    types = {_unwrap(t) for t in get_args(_unwrap(annotation))} - {type(None)} if either else {_unwrap(annotation)}
    if types == {int}:
        return "int"
    if types == {float}:
        return "float"
    return "scalar"


def _secret_paths(model: type[Section], prefix: Path_ = ()) -> list[Path_]:
    paths: list[Path_] = []
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None:
            paths.extend(_secret_paths(sub, prefix + (name,)))
        elif _is_secret(field.annotation):
            paths.append(prefix + (name,))
    return paths


def _get_path(obj: Any, path: Path_) -> Any:
    for part in path:
        if obj is None:
            return None
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


def _unknown_key(path: Path_, model: type[Section], depth: int) -> str:
    """'unknown key risk.max_open_positons (did you mean risk.max_open_positions?)'"""
    if not all(path):
        return "unknown key (an empty name between FFE_ and __)"
    text = f"unknown key {_dotted(path)}"
    if depth < len(path) - 1 and path[depth] in model.model_fields:
        return f"{text} ({_dotted(path[: depth + 1])} is not a table)"
    if depth < len(path):
        import difflib  # only for a misspelt key: not paid by every start

        close = difflib.get_close_matches(path[depth], list(model.model_fields), n=1)
        if close:
            text += f" (did you mean {_dotted(path[:depth] + (close[0],))}?)"
    return text


def _find_unknown(values: Any, model: type[Section], path: Path_ = ()) -> list[Path_]:
    """Every key in `values` that the schema does not have, at every level of tables."""
    if not isinstance(values, dict):
        return []  # the wrong type is reported by validation
    unknown: list[Path_] = []
    for key, value in values.items():
        field = model.model_fields.get(key)
        if field is None:
            unknown.append(path + (key,))
            continue
        sub = _model_of(field.annotation)
        if sub is not None:
            unknown.extend(_find_unknown(value, sub, path + (key,)))
    return unknown


def _model_at(path: Path_) -> tuple[type[Section], int]:
    """The deepest model along `path` and how many parts of the path it consumed."""
    model: type[Section] = Settings
    depth = 0
    for part in path:
        field = model.model_fields.get(part)
        sub = _model_of(field.annotation) if field else None
        if sub is None:
            break
        model, depth = sub, depth + 1
    return model, depth


# ---------------------------------------------------------------------------------------------------------------
# config.toml

# How deep arrays and tables may nest in a value read from config.toml, .env or the environment (the settings' own
# tables counted): a setting nests a few levels (exchange.options the most), and a value nested past Python's
# recursion limit would crash whatever reads it (the parser first) instead of being refused in one line.
MAX_NESTING = 32
NESTED_TOO_DEEP = f"nested too deep (more than {MAX_NESTING} levels of arrays and tables)"


def too_deep(value: Any, limit: int = MAX_NESTING) -> tuple[Any, ...] | None:
    """The path to a value nested deeper than `limit` arrays and tables (dicts, lists) in `value`, or None. Walked
    without recursion, so that any depth is found."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > limit:
            return path
        if isinstance(node, dict):
            stack.extend((child, (*path, key)) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, (*path, i)) for i, child in enumerate(node))
    return None



# The most a config file or a .env file may hold. Settings are a few kB (the config.toml `ffe init` writes is under
# 20 kB, comments and all): a file of megabytes is some other file named by mistake (a log, a data file), refused
# before it is read whole, as a device would be read without end.


def _settings_bytes(path: Path, shown: str, what: str) -> bytes:
    """The bytes of a settings file (`what`: "a config file", "a .env file"). Looked at before it is opened:
    anything there but a regular file (a directory, a FIFO, a device, a socket, a link to one) is refused, as a FIFO
    would be waited on for ever (deaf to SIGTERM) and a device read until memory runs out; a file larger than
    MAX_SETTINGS_BYTES is refused once that much is read, never read whole."""
    kind = kind_of(path)
    if kind is not None:
        raise ConfigError(f"{shown}: is {kind}, not {what}", source=shown)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SETTINGS_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror}", source=shown) from None
    if len(data) > MAX_SETTINGS_BYTES:
        raise ConfigError(f"{shown}: larger than {MAX_SETTINGS_BYTES >> 20} MiB: too large for {what}", source=shown)
    return data


def _read_toml(path: Path, shown: str) -> _Layer:
    data = _settings_bytes(path, shown, "a config file")
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is dropped. TOML 1.0 allows none, but it means
        # nothing else, and tomllib would call the first line an invalid statement.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{shown}:{line}: not valid UTF-8", source=shown, line=line) from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_syntax_error(exc, text, shown) from None
    except RecursionError:  # tomllib parses nested values by recursion: the file itself is past what it can read
        deep: list[int] = []
        keyed = _toml_key_lines(text, deep=deep)
        if not deep:
            raise ConfigError(f"{shown}: a value {NESTED_TOO_DEEP}", source=shown) from None
        # The key whose value it is: the last key line at or before it, named as at fewer levels.
        key = max(((line, k) for k, line in keyed.items() if line <= deep[0]), default=(0, ()))[1][:2]
        message = _format(Origin("toml", file=shown, line=deep[0]), key, NESTED_TOO_DEEP) if key else \
            f"{shown}:{deep[0]}: a value {NESTED_TOO_DEEP}"
        raise ConfigError(message, source=shown, line=deep[0], key=_dotted(key) if key else None) from None
    headers: set[Path_] = set()
    lines = _toml_key_lines(text, headers)
    origins = {key: Origin("toml", file=shown, line=line, table=key in headers) for key, line in lines.items()}
    deep_at = too_deep(values)
    if deep_at is not None:  # dotted keys (a.b.c = 1) nest without brackets; the key's line says where
        found = [(min(len(k), len(deep_at)), -line, k) for k, line in lines.items()
                 if k[: len(deep_at)] == deep_at[: len(k)]]
        origin = origins[max(found)[2]] if found else Origin("toml", file=shown)
        raise ConfigError(_format(origin, deep_at[:2], NESTED_TOO_DEEP), source=shown, line=origin.line,
                          key=_dotted(deep_at[:2]))
    return _Layer(kind="toml", values=values, origins=origins, label=shown, file=path)


def _toml_syntax_error(exc: tomllib.TOMLDecodeError, text: str, shown: str) -> ConfigError:
    message = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        line = int(match.group(1))
        message = f"{message[: match.start()]} (column {match.group(2)})"
    else:
        line = text.count("\n") + (0 if text.endswith("\n") else 1)
        message = re.sub(r"\s*\(at end of document\)$", " at end of file", message)
    return ConfigError(f"{shown}:{line}: invalid TOML: {message}", source=shown, line=line)


_KEY_PART = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*""")


def _parse_key(text: str) -> tuple[Path_, int] | None:
    """Parse a dotted TOML key at the start of `text`: (parts, end offset) or None."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _KEY_PART.match(text, pos)
        if not match or match.end() == pos:
            return None
        basic, literal, bare = match.groups()
        if basic is not None:
            try:
                parts.append(json.loads(f'"{basic}"'))
            except ValueError:
                parts.append(basic)
        else:
            parts.append(literal if literal is not None else bare)
        pos = match.end()
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        return tuple(parts), pos


def _toml_key_lines(text: str, headers: set[Path_] | None = None, deep: list[int] | None = None) -> dict[Path_, int]:
    """Line number of every table header and `key =` line (the headers' keys added to `headers`; the lines where a
    value's arrays and tables nest deeper than MAX_NESTING to `deep`). tomllib keeps no positions, so scan the
    text: track the current [table], and skip the insides of multi-line strings and arrays so their contents are
    not read as keys. Keys inside an inline table are not listed; lookups fall back to the line of the enclosing
    key. The tables a dotted key or header makes on the way (`x` of `x.y = 1` or `[x.y]`) are listed at the first
    line that makes them, as headers: an unknown `x` is named by that line, and a default beside `y` by it as a
    start of the file to look in, as a default under a [table] header is by the header's."""
    lines: dict[Path_, int] = {}

    def made_on_the_way(path: Path_, number: int) -> None:
        for n in range(1, len(path)):
            if path[:n] not in lines:
                lines[path[:n]] = number
                if headers is not None:
                    headers.add(path[:n])

    table: Path_ = ()
    depth = 0  # open [ or { of a value spanning lines
    in_string: str | None = None  # the delimiter of an open multi-line string
    for number, line in enumerate(text.splitlines(), start=1):
        rest = line
        if depth == 0 and in_string is None:
            stripped = line.lstrip()
            header = re.match(r"\[\[?", stripped)
            if header:
                parsed = _parse_key(stripped[header.end() :])
                if parsed:
                    table = parsed[0]
                    made_on_the_way(table, number)
                    if table not in lines and headers is not None:
                        headers.add(table)
                    lines.setdefault(table, number)
                continue
            parsed = _parse_key(stripped)
            if parsed and stripped[parsed[1] : parsed[1] + 1] == "=":
                made_on_the_way(table + parsed[0], number)
                lines.setdefault(table + parsed[0], number)
                rest = stripped[parsed[1] + 1 :]
            else:
                continue
        depth, in_string, deepest = _scan_value(rest, depth, in_string)
        if deep is not None and deepest > MAX_NESTING:
            deep.append(number)
    return lines


def _scan_value(text: str, depth: int, in_string: str | None) -> tuple[int, str | None, int]:
    """The nesting and the open multi-line string after `text`, and the deepest nesting within it."""
    deepest = depth
    i = 0
    n = len(text)
    while i < n:
        if in_string is not None:
            end = text.find(in_string, i)
            if end < 0:
                return depth, in_string, deepest
            i = end + 3
            in_string = None
            continue
        ch = text[i]
        if ch == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            in_string = text[i : i + 3]
            i += 3
            continue
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch == "'":
            end = text.find("'", i + 1)
            i = n if end < 0 else end
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, in_string, deepest


def check_mode(settings: Settings) -> None:
    """The mode and the venue agree: real orders only on a live account, a live account only on a real venue (what
    `ffe config check` says of a configuration, before any start's --live flag). The line names where the value at
    fault was set, and beside it where the other one was: either may be the one to change."""
    if settings.mode != "live" and settings.venue.kind == "ccxt":
        raise StartError(settings.blame(("venue", "kind"), f'venue.kind = "ccxt" places real orders: it needs '
                                        f'mode = "live" ({settings.said("mode")}) and the --live flag (paper '
                                        'trading uses venue.kind = "paper", on any market source)'))
    if settings.mode == "live" and settings.venue.kind != "ccxt":
        raise StartError(settings.blame(("mode",), f'mode = "live" needs venue.kind = "ccxt" '
                                                   f'({settings.said("venue", "kind")})'))
    if settings.mode == "live" and settings.market.source != "exchange":
        # Real orders decided on a random walk or on candles of the past: never what a live account means.
        source = settings.market.source
        message = (f'market.source = "{source}" cannot decide real orders: mode = "live" trades on the exchange\'s '
                   'market only; set market.source = "exchange"')
        if settings.set_at("market", "source") is None:
            raise StartError(settings.blame(("mode",), f'mode = "live" trades on the exchange\'s market only '
                                                       f'({settings.said("market", "source")}): set market.source = '
                                                       '"exchange"'))
        raise StartError(settings.blame(("market", "source"), message))


# ---------------------------------------------------------------------------------------------------------------
# .env and the environment


def _read_dotenv(path: Path, shown: str) -> _Layer:
    from dotenv.parser import parse_stream  # only where there is a .env file: python-dotenv imports much of its own

    data = _settings_bytes(path, shown, "a .env file")
    try:
        # A byte-order mark kept would be part of the first variable's name, which would then be passed over.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not valid UTF-8", source=shown) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # line ends as a file read as text has them
    if "\x00" in text:
        # UTF-16 without a byte-order mark reads as UTF-8 with a NUL beside every character: each name would be
        # another program's variable, passed over, and every setting in the file dropped without a word.
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ConfigError(f"{shown}:{line}: holds a NUL byte (saved as UTF-16? save it as UTF-8)", source=shown,
                          line=line)
    entries: list[tuple[str, str, Origin]] = []
    first: dict[str, int] = {}  # each variable's line, by its name in upper case (as it is read)
    for binding in parse_stream(io.StringIO(text)):
        # The parser counts blank lines before an entry as part of it; the entry itself starts after them.
        raw = binding.original.string
        line = binding.original.line + raw[: len(raw) - len(raw.lstrip())].count("\n")
        if binding.error:
            # The line is not quoted back: it may hold a secret.
            raise ConfigError(f"{shown}:{line}: cannot parse this line (expected NAME=value)", source=shown, line=line)
        if binding.key is None or not binding.key.upper().startswith(ENV_PREFIX):
            continue
        origin = Origin("dotenv", file=shown, line=line, var=binding.key)
        if binding.key.upper() in first:  # as config.toml refuses a key given twice; the value is never shown
            raise ConfigError(f"{shown}:{line}: {binding.key}: set twice (line {first[binding.key.upper()]} too): "
                              "keep one", source=shown, line=line, key=binding.key)
        first[binding.key.upper()] = line
        if binding.value is None:
            message = f"{shown}:{line}: {binding.key}: has no value (expected {binding.key}=value)"
            raise ConfigError(message, source=shown, line=line, key=binding.key)
        entries.append((binding.key, binding.value, origin))
    return _env_layer("dotenv", entries, label=shown, file=path)


def _read_environ(environ: Mapping[str, str]) -> _Layer:
    entries = [
        (name, value, Origin("env", var=name))
        for name, value in sorted(environ.items())
        if name.upper().startswith(ENV_PREFIX)
    ]
    first: dict[str, str] = {}  # each variable by its name in upper case (as it is read)
    for name, _, _ in entries:
        # As a .env refuses a variable set twice: whichever sorts last would win, one of two values the operator
        # set (a secret's among them: the values are never shown).
        other = first.setdefault(name.upper(), name)
        if other != name:
            raise ConfigError(f"environment: {other} and {name}: set twice (the names differ only in case): keep one",
                              source="environment", key=name)
    names = ", ".join(name for name, _, _ in entries)
    return _env_layer("env", entries, label=f"environment ({names})" if names else "environment")


def _env_layer(kind: str, entries: list[tuple[str, str, Origin]], label: str, file: Path | None = None) -> _Layer:
    """Build a nested dict from FFE_A__B=value entries; variables that name no setting are kept in .unknown."""
    values: dict[str, Any] = {}
    origins: dict[Path_, Origin] = {}
    unknown: list[tuple[str, Origin]] = []
    parsed = []
    for name, raw, origin in entries:
        target = _env_target(name)
        if target is None:
            unknown.append((name, origin))
            continue
        parsed.append((target, name, raw, origin))
    # Whole tables (FFE_RISK='{...}') first, so that a more specific variable refines them rather than being lost.
    parsed.sort(key=lambda item: len(item[0][0]))
    setters: dict[Path_, str] = {}  # a key's path -> the variable that set it
    for (path, target_kind), name, raw, origin in parsed:
        if len(path) > MAX_NESTING:  # an option's tables set a key at a time, as deep as the variable's name goes
            raise _too_deep_error(name, origin)
        # Empty is unset for a key whose default is unset, as it is for a secret (`FFE_EXCHANGE__RATE_LIMIT_MS=`
        # in a .env written from a template); for any other key it is a value, and refused as such.
        value = None if raw == "" and _unset_by_default(path) else _env_value(name, raw, target_kind, origin)
        node = values
        for depth, part in enumerate(path[:-1], 1):
            child = node.get(part)
            if child is not None and not isinstance(child, dict):
                # A value set by one variable, a table of it by another: neither is silently dropped.
                other = setters.get(path[:depth], "another variable")
                message = f"{origin.where}: {name}: {_dotted(path[:depth])} is set by {other}, not a table: keep one"
                raise ConfigError(message, source=origin.file or origin.where, line=origin.line, key=name)
            if child is None:
                child = node[part] = {}
            node = child
        setters[path] = name
        existing = node.get(path[-1])
        if isinstance(existing, dict) and isinstance(value, dict):
            _deep_merge(existing, value, path, [])
        else:
            node[path[-1]] = value
        origins[path] = origin
    return _Layer(kind=kind, values=values, origins=origins, label=label, file=file, unknown=unknown)


def _unset_by_default(path: Path_) -> bool:
    model, depth = _model_at(path)
    field = model.model_fields.get(path[depth]) if depth == len(path) - 1 else None
    return field is not None and field.default is None and field.default_factory is None


def _env_target(name: str) -> tuple[Path_, str] | None:
    """Map FFE_RISK__MAX_OPEN_POSITIONS to (('risk', 'max_open_positions'), kind), or None if unknown.
    Field names match case-insensitively; a key inside a dict field (FFE_TUI__KEYS__pause, and each level below
    one of any values: FFE_EXCHANGE__OPTIONS__fetchMarkets__types) is kept as written."""
    parts = name[len(ENV_PREFIX) :].split(ENV_DELIMITER)
    model: type[Section] = Settings
    path: list[str] = []
    for i, part in enumerate(parts):
        field_name = part.lower()
        field = model.model_fields.get(field_name)
        if field is None or not part:
            return None
        path.append(field_name)
        kind = _kind(field.annotation)
        rest = parts[i + 1 :]
        if kind == "model":
            if not rest:
                return tuple(path), "model"
            model = _model_of(field.annotation)  # type: ignore[assignment]
            continue
        if kind == "dict" and rest and all(rest):
            # Any value (exchange.options) may be a table of its own, set a key at a time at any depth.
            anything = _unwrap(get_args(_unwrap(field.annotation))[1]) is Any
            if len(rest) == 1 or anything:
                return tuple(path) + tuple(rest), "any" if anything else "scalar"
        return (tuple(path), kind) if not rest else None
    return None


def _env_value(name: str, raw: str, kind: str, origin: Origin) -> Any:
    if kind in ("scalar", "secret"):
        return raw
    if kind in ("int", "float"):
        # Written as a number is written in config.toml: Python would read 1_0 as 10, a full-width digit as a
        # digit and int() a float's text, and a typo would be a limit ten times what was meant.
        if (_INT_RE if kind == "int" else _FLOAT_RE).fullmatch(raw.strip()):
            return raw.strip()
        expected = "a whole number (digits, an optional sign)" if kind == "int" else "a number (such as 2.5 or 1e-3)"
        message = f"{origin.where}: {name}: expected {expected}"
        raise ConfigError(message, source=origin.file or origin.where, line=origin.line, key=name)
    if kind == "bool":
        # As in TOML: "yes", "off" or "0" would be read differently by different people.
        if raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        message = f"{origin.where}: {name}: expected true or false"
        raise ConfigError(message, source=origin.file or origin.where, line=origin.line, key=name)
    if kind == "any":
        try:
            return _not_too_deep(json.loads(raw), name, origin)
        except ValueError:
            return raw
        except RecursionError:
            raise _too_deep_error(name, origin) from None
    table = kind in ("model", "dict")
    try:
        value = _not_too_deep(json.loads(raw), name, origin)
    except RecursionError:  # the parser's own recursion: far past MAX_NESTING
        raise _too_deep_error(name, origin) from None
    except ValueError:
        if kind == "list":
            # FFE_ENGINE__SYMBOLS=BTC/USDT,ETH/USDT reads as well as the JSON form; an empty item is a typo, not
            # nothing (a trailing comma too: which symbol was meant is not for the engine to guess).
            items = [item.strip() for item in raw.split(",")]
            if raw.strip() and not all(items):
                message = f"{origin.where}: {name}: an empty item between its commas"
                raise ConfigError(message, source=origin.file or origin.where, line=origin.line, key=name)
            return [item for item in items if item]
    else:
        if not table or isinstance(value, dict):
            return value
    expected = f"a JSON object (a table: or set its keys one by one, {name}__KEY)" if table else "JSON"
    message = f"{origin.where}: {name}: expected {expected}"
    raise ConfigError(message, source=origin.file or origin.where, line=origin.line, key=name)


def _not_too_deep(value: Any, name: str, origin: Origin) -> Any:
    if too_deep(value) is not None:
        raise _too_deep_error(name, origin)
    return value


def _too_deep_error(name: str, origin: Origin) -> ConfigError:
    message = f"{origin.where}: {name}: {NESTED_TOO_DEEP}"
    return ConfigError(message, source=origin.file or origin.where, line=origin.line, key=name)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _deep_merge(dst: dict[str, Any], src: dict[str, Any], path: Path_, replaced: list[Path_]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_merge(dst[key], value, path + (key,), replaced)
        else:
            dst[key] = value
            replaced.append(path + (key,))


def _origin_for(loc: tuple[Any, ...], origins: Mapping[Path_, Origin]) -> Origin | None:
    """The source of the value at `loc`, or of the nearest enclosing key that has one."""
    for n in range(len(loc), 0, -1):
        origin = origins.get(tuple(loc[:n]))
        if origin is not None:
            return origin
    return None


def _own_origin(loc: tuple[Any, ...], origins: Mapping[Path_, Origin], below: int = 0) -> Origin | None:
    """The source of the value at `loc` itself, or of an enclosing value holding it (looked for only deeper than
    `below` parts): a [table] header above `loc` set none of the keys under it, so it is passed over."""
    for n in range(len(loc), below, -1):
        origin = origins.get(tuple(loc[:n]))
        if origin is not None and (n == len(loc) or not origin.table):
            return origin
    return None


def _origin_at(loc: tuple[Any, ...], origins: Mapping[Path_, Origin]) -> Origin | None:
    """Where to say the value at `loc` was set: its own source, else (a default under a header) the header, as a
    start of the file to look in."""
    return _own_origin(loc, origins) or _origin_for(loc, origins)


# When a value fails only because of another key, point at the key that was set.
_CAUSES: dict[Path_, Path_] = {
    ("market", "replay_files"): ("market", "source"),
    ("ensemble", "providers"): ("ensemble", "min_votes"),
    ("alerts", "telegram_chat_id"): ("alerts", "telegram_token"),
}


def _format(origin: Origin | None, key_path: tuple[Any, ...], problem: str, names_key: bool = False) -> str:
    """'<where>: [<variable>: ][<key>: ]<problem>'; the key is left out when the problem or the variable names it."""
    key = _dotted(key_path)
    if origin is None:
        return problem if names_key else f"{key}: {problem}"
    if origin.kind == "cli":
        return f"{origin.where}: {origin.var}: {problem}"
    if origin.kind in ("dotenv", "env"):
        var = origin.var or ""
        if names_key or var.upper() == _env_name(tuple(str(p) for p in key_path)).upper():
            return f"{origin.where}: {var}: {problem}"
        return f"{origin.where}: {var}: {key}: {problem}"
    return f"{origin.where}: {problem}" if names_key else f"{origin.where}: {key}: {problem}"


def _scrub(message: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= _MIN_SCRUB_LEN:
            message = message.replace(secret, SECRET_MASK)
    return message


def _raise_first(problems: list[Problem], secrets: list[str]) -> None:
    if not problems:
        return
    _, message, origin, key = min(problems, key=lambda p: p[0])
    if _scrub(message, secrets) != message:
        # The message holds a secret's text: quoted from a value, or by chance in its own words. A mask there
        # would say where it was, and in its own words what it is; so the message says nothing of why.
        path = tuple(key.split("."))
        model, depth = _model_at(path)
        field = model.model_fields.get(path[depth]) if depth < len(path) else None
        # What every secret must be, whichever rule this one broke: the operator is told what to check.
        rules = (f": a secret must be at least {MIN_SECRET} characters long, with no blank at either end and no "
                 "control character (a tab, a NUL, a return) anywhere" if field is not None
                 and _is_secret(field.annotation) else "")
        hidden = "the reason is not shown, as it would hold a credential's text"
        message = _format(origin, path, f"refused{rules}; {hidden}")
        if _scrub(message, secrets) != message:  # the rules' own words hold it too
            message = _format(origin, path, f"refused; {hidden}")
    raise ConfigError(
        message,
        source=(origin.file or origin.where) if origin else None,
        line=origin.line if origin else None,
        key=key,
    )


def load_settings(
    config_path: str | Path | None = None,
    env_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    data_dir: str | Path | None = None,
    log_dir: str | Path | None = None,
) -> Settings:
    """Read config_path (default ./config.toml; a missing default file means built-in defaults), then env_file
    (default .env next to the config file; missing is fine), then `environ` (default os.environ). Later wins.
    data_dir and log_dir (the command line's --data-dir, --log-dir) override all of them.
    Raises ConfigError with a one-line message."""
    layers = _read_layers(config_path, env_file, os.environ if environ is None else environ)
    secrets = [
        value
        for layer in layers
        for path in _secret_paths(Settings)
        if isinstance(value := _get_path(layer.values, path), str) and value
    ]
    # Unknown keys and misplaced credentials first: a typo is usually the cause of whatever else looks wrong.
    _raise_first(_key_problems(layers), secrets)
    _raise_first([p for layer in layers if layer.kind == "toml" for p in _toml_type_problems(layer)], secrets)
    merged, origins = _merge_layers(layers)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        _raise_first(_validation_problems(exc, origins), secrets)
        raise  # pragma: no cover - a ValidationError always has at least one error
    _raise_first(_quote_problems(settings, origins), secrets)
    settings._origins = origins
    settings._source_files = [layer.file for layer in layers if layer.file is not None]
    settings._sources = [layer.label for layer in layers]
    if data_dir is not None or log_dir is not None:
        settings = settings.with_dirs(data_dir=data_dir, log_dir=log_dir)
    _raise_first(_directory_problems(settings) + _socket_problems(settings), secrets)
    return settings


def require_config_file(config_path: str | Path | None) -> Path:
    """The config file an engine starts from: the one given, or ./config.toml. An engine started on the built-in
    defaults by accident (from the wrong directory) would open a database and trade where nobody looks, so a
    missing default file is an error here rather than the defaults it is for other commands."""
    config = Path(config_path) if config_path is not None else DEFAULT_CONFIG
    if config_path is None and not (config.exists() or config.is_symlink()):
        raise ConfigError(f"no config file: {config.absolute()} not found (write one with `ffe init`, or pass "
                          f"--config FILE)", source=str(config))
    return config


def secrets_around(env_file: str | Path | None = None) -> list[str]:
    """The values the secret variables hold in the environment and in the .env file (`env_file`, else the default
    one), for an error said before a command's settings were read (an argument mistyped): taken out of it as the
    logs take the settings' secrets. Best effort: a .env file that cannot be read adds none."""
    names = {_env_name(path) for path in _secret_paths(Settings)}
    found = [value for name, value in os.environ.items() if name.upper() in names]
    # Never a FIFO waited on, nor a device read on and on; a file the settings would refuse (not UTF-8, too large)
    # still holds the secrets a mistake may quote: read as far as it can be.
    data = regular_bytes(settings_paths(None, env_file)[1], head=True)
    try:
        from dotenv import dotenv_values

        text = data.decode("utf-8-sig", errors="replace") if data is not None else ""
        found += [value or "" for name, value in dotenv_values(stream=io.StringIO(text)).items()
                  if name.upper() in names]
    except Exception:  # its own read, when a command comes to it, says what is wrong with it
        pass
    return [value for value in found if len(value) >= MIN_SECRET]


def _read_layers(config_path: str | Path | None, env_file: str | Path | None,
                 environ: Mapping[str, str]) -> list[_Layer]:
    layers: list[_Layer] = []
    config, dotenv = settings_paths(config_path, env_file)
    if reach.exists(config) or config.is_symlink():
        layers.append(_read_toml(config, str(config)))
    elif config_path is not None:
        raise ConfigError(f"{config}: config file not found", source=str(config))

    if reach.exists(dotenv):
        layers.append(_read_dotenv(dotenv, str(dotenv)))
    elif env_file is not None:
        raise ConfigError(f"{dotenv}: .env file not found", source=str(dotenv))

    layer = _read_environ(environ)
    if layer.values or layer.unknown:
        layers.append(layer)
    return layers


def _key_problems(layers: list[_Layer]) -> list[Problem]:
    problems: list[Problem] = []
    for layer in layers:
        for index, (name, origin) in enumerate(layer.unknown):
            path = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_DELIMITER))
            model, depth = _model_at(path)
            message = _format(origin, path, _unknown_key(path, model, depth), names_key=True)
            problems.append(((*origin.rank, index), message, origin, name))
        for index, path in enumerate(_find_unknown(layer.values, Settings)):
            origin = _origin_for(path, layer.origins) or Origin(layer.kind, file=layer.label)
            model, depth = _model_at(path)
            message = _format(origin, path, _unknown_key(path, model, depth), names_key=True)
            problems.append(((*origin.rank, index), message, origin, _dotted(path)))
        if layer.kind == "toml":
            for index, path in enumerate(_secret_paths(Settings)):
                if _get_path(layer.values, path) is not None:
                    origin = _origin_for(path, layer.origins) or Origin("toml", file=layer.label)
                    problem = f"{_dotted(path)} must come from .env or the environment, not config.toml"
                    message = _format(origin, path, problem, names_key=True)
                    problems.append(((*origin.rank, index), message, origin, _dotted(path)))
    return problems


# Pydantic's strict errors for a value of another type; a TOML value has its type, and is never converted to another.
_TYPE_ERRORS = frozenset({"int_type", "float_type", "bool_type", "string_type", "list_type", "dict_type",
                          "model_type"})
# Said in TOML's words, not Python's.
_TOML_WORDS = {"list_type": "Input should be an array", "dict_type": "Input should be a table",
               "model_type": "Input should be a table"}
_TOML_TYPES = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (list, "an array"),
               (dict, "a table"))
NUMBERS = ("an integer", "a float")


def _toml_type_problems(layer: _Layer) -> list[Problem]:
    """Each value of config.toml is of its key's type (an integer is a number too): `max_open_positions = true`
    is refused rather than read as 1. The environment's values are text, read as their key's type by validation."""
    try:
        Settings.model_validate(layer.values, strict=True)
    except ValidationError as exc:
        problems: list[Problem] = []
        for index, error in enumerate(exc.errors(include_url=False)):
            if error["type"] not in _TYPE_ERRORS:
                continue  # refused or not, validation of the merged settings says the rest
            loc: tuple[Any, ...] = tuple(error["loc"])
            found = next((name for kind, name in _TOML_TYPES if isinstance(error["input"], kind)), "a date or time")
            # A chat id, a version: a number unquoted, where a text was meant.
            quote = " (put it in quotes)" if error["type"] == "string_type" and found in NUMBERS else ""
            origin = _origin_for(loc, layer.origins) or Origin("toml", file=layer.label)
            said = _TOML_WORDS.get(error["type"], error["msg"])
            message = _format(origin, loc, f"{said}, not {found}{quote}")
            problems.append(((*origin.rank, index), message, origin, _dotted(loc)))
        return problems
    return []


def _merge_layers(layers: list[_Layer]) -> tuple[dict[str, Any], dict[Path_, Origin]]:
    merged: dict[str, Any] = {}
    origins: dict[Path_, Origin] = {}
    for layer in layers:
        replaced: list[Path_] = []
        _deep_merge(merged, layer.values, (), replaced)
        for path in replaced:  # a replaced value, and everything below it, no longer comes from the earlier source
            for key in [k for k in origins if k[: len(path)] == path]:
                del origins[key]
        origins.update(layer.origins)
    return merged, origins


def _symbol_quote(symbol: str) -> str:
    """'USDT' for 'BTC/USDT', and for 'BTC/USDT:USDT' (a settlement currency after the colon)."""
    return symbol.partition("/")[2].partition(":")[0]


def _quote_problems(settings: Settings, origins: Mapping[Path_, Origin]) -> list[Problem]:
    """Every symbol is quoted in the account's currency: the books keep their cash in venue.quote alone, and an order
    in another currency would find no funds to pay with. The key named is the one that was set: the symbol, or
    venue.quote when the symbols are the defaults."""
    quote = settings.venue.quote
    problems: list[Problem] = []
    for index, symbol in enumerate(settings.engine.symbols):
        symbol_quote = _symbol_quote(symbol)
        if symbol_quote == quote:
            continue
        loc: tuple[Any, ...] = ("engine", "symbols", index)
        origin = _origin_for(loc, origins)
        problem = f"{symbol!r} is quoted in {symbol_quote}, not in the account's quote currency {quote} (venue.quote)"
        if origin is None:
            loc, origin = ("venue", "quote"), _origin_for(("venue", "quote"), origins)
            problem = (f"{quote!r} is not the quote currency of engine.symbols[{index}] {symbol!r}: every symbol "
                       f"is quoted in venue.quote")
        rank = origin.rank if origin else (3, 0)
        problems.append(((*rank, index), _format(origin, loc, problem), origin, _dotted(loc)))
    return problems


def _not_a_directory(directory: Path) -> str | None:
    """What is in the way of `directory`: itself, or the nearest existing ancestor, when that is no directory, or is
    a loop of symbolic links (said as a loop, as every path option says one: unreachable)."""
    for candidate in (directory, *directory.parents):
        if os.path.lexists(candidate):
            try:
                os.stat(candidate)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return str(unreachable(candidate, exc))
            return None if os.path.isdir(candidate) else f"{candidate} is not a directory"
    return None


def _directory_problems(settings: Settings) -> list[Problem]:
    """The data and log directories, and a control socket's own, are directories, or can be made: a regular file in
    the way would fail every command that opens them, part way."""
    problems: list[Problem] = []
    directories: list[tuple[Path_, Path]] = [(("storage", "path"), settings.data_dir),
                                             (("logging", "dir"), settings.log_dir)]
    if settings.control.socket:  # a socket of its own: its directory too (the data directory's is above)
        directories.append((("control", "socket"), settings.socket_path.parent))
    for index, (key, directory) in enumerate(directories):
        blocker = _not_a_directory(directory)
        if blocker is None:
            continue
        origin = settings.origin_of(*key)
        rank = origin.rank if origin else (3, 0)
        problems.append(((*rank, index), _format(origin, key, blocker), origin, _dotted(key)))
    return problems


# The longest path a Unix socket can be bound to or reached at: sun_path holds 108 bytes with the closing NUL.
MAX_SOCKET_PATH = 107


def _socket_problems(settings: Settings) -> list[Problem]:
    """The control socket's path fits a Unix socket's address: found only when the engine binds it, it would stop
    a start that has already recorded itself."""
    path = settings.socket_path
    size = len(os.fsencode(str(path)))
    if size <= MAX_SOCKET_PATH:
        return []
    too_long = f"{size} bytes, longer than a Unix socket path can be ({MAX_SOCKET_PATH})"
    if settings.control.socket:
        key: Path_ = ("control", "socket")
        problem = f"{path} is {too_long}: choose a shorter one"
    else:
        key = ("storage", "path")
        problem = (f"the control socket {path} is {too_long}: choose a shorter data directory, or a [control] "
                   "socket elsewhere")
    origin = settings.origin_of(*key)
    rank = origin.rank if origin else (3, 0)
    return [((*rank, 0), _format(origin, key, problem), origin, _dotted(key))]


def _validation_problems(exc: ValidationError, origins: Mapping[Path_, Origin]) -> list[Problem]:
    problems: list[Problem] = []
    # include_input=False: the rejected value may be a secret.
    for index, error in enumerate(exc.errors(include_url=False, include_input=False)):
        loc: tuple[Any, ...] = tuple(error["loc"])  # an int where the key is a list index
        problem, names_key = error["msg"], False
        origin = None
        if error["type"] == "value_error" and problem.startswith("Value error, "):
            problem = problem[len("Value error, ") :]
            # A refused table's message names the key at fault inside it first (options: "recvWindow: ..."). That
            # key's own source (FFE_EXCHANGE__OPTIONS__recvWindow, its line under [exchange.options]) is named
            # rather than the table's line (`options = {}`), which holds nothing wrong.
            origin = _own_origin(loc + tuple(problem.partition(": ")[0].split(".")), origins, below=len(loc))
        elif error["type"] == "extra_forbidden":
            model, depth = _model_at(loc)
            problem, names_key = _unknown_key(loc, model, depth), True
        # Refused for another key's sake: named by its own source, with the other key's beside it; a key left to
        # its default, by the other key's own source (a variable that set a whole table holding it too), not the
        # [table] header above the default, which set neither.
        named = loc
        # Only a problem that names the other key is that key's doing (not a provider listed twice).
        if origin is None and loc in _CAUSES and _CAUSES[loc][-1] in problem.lower():
            own, cause = _own_origin(loc, origins), _own_origin(_CAUSES[loc], origins)
            if own is not None and cause is not None and own != cause:
                problem = f"{problem} ({_dotted(_CAUSES[loc])} from {cause.source})"
            elif own is not None:
                problem = f"{problem} ({_dotted(_CAUSES[loc])}, the default)"
            elif cause is not None:
                problem = f"{problem} ({_dotted(loc)}, the default)"
                if cause.kind == "toml":  # a file's line is named with the key on it (a variable names its own)
                    named = _CAUSES[loc]
            origin = own or cause
        origin = origin or _own_origin(loc, origins) or _origin_for(loc, origins)
        message = _format(origin, named, problem, names_key)
        rank = origin.rank if origin else (3, 0)
        problems.append(((*rank, index), message, origin, _dotted(loc)))
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Rendering


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return json.dumps(SECRET_MASK)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        return '""'
    return json.dumps(str(value), ensure_ascii=False)


def _urls_masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_urls(value)
    if isinstance(value, (list, tuple)):
        return [_urls_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _urls_masked(v) for k, v in value.items()}
    return value


def render_settings(settings: Settings) -> str:
    """The effective configuration as TOML, secrets masked. Values set by .env, the environment or the command
    line carry a comment naming where they came from."""
    origins = settings._origins
    sources = settings._sources or []
    out = ["# ffe effective configuration", f"# sources, later wins: {', '.join(['defaults', *sources])}"]

    def annotate(path: Path_) -> str:
        # The value's own source, then those of the keys inside it set one by one (FFE_TUI__KEYS__pause): a table
        # from config.toml refined by the environment is not all config.toml's.
        found = [_origin_for(path, origins)]
        found += [origin for key, origin in origins.items() if len(key) > len(path) and key[: len(path)] == path]
        shown = [o.source for o in found if o is not None and o.kind != "toml"]
        return f"  # {', '.join(dict.fromkeys(shown))}" if shown else ""

    def section(model: Section, path: Path_) -> None:
        tables = []
        for name in type(model).model_fields:
            value = getattr(model, name)
            key_path = path + (name,)
            if isinstance(value, Section):
                tables.append((value, key_path))
            elif value is None and _is_secret(type(model).model_fields[name].annotation):
                out.append(f"# {name}: not set ({_env_name(key_path)})")
            elif value is None:  # TOML has no null: an unset key stays out, as a comment
                out.append(f"# {_toml_key(name)}: unset{annotate(key_path)}")
            else:
                # A secret copied into an ordinary value (a URL, an option) is masked there, in its strings before
                # they are written as TOML (escaped, it would not be found); only there, since a mask over a key
                # name or a comment equal to a secret would say what the secret is, and leave no TOML.
                # A URL anywhere in a value has its user name, password, query and fragment masked too.
                shown = _urls_masked(redactor.value(value))
                out.append(f"{_toml_key(name)} = {_toml_value(shown)}{annotate(key_path)}")
        for value, key_path in tables:
            out.append("")
            out.append("[" + ".".join(_toml_key(p) for p in key_path) + "]")
            section(value, key_path)

    redactor = Redactor(settings.secrets())
    section(settings, ())
    return "\n".join(out) + "\n"


def check_replay(settings: Settings) -> None:
    """A replayed market has a file for every traded symbol, and each is there (StartError naming the file, line and
    key that set them): what `ffe config check` says, and the start before it reads them."""
    market = settings.market
    if market.source != "replay":
        return
    key: Path_ = ("market", "replay_files")
    found = settings.origin_of(*key)
    missing = [s for s in settings.engine.symbols if s not in market.replay_files]
    if missing:
        raise StartError(_format(found, key, f"no file for {', '.join(missing)} (engine.symbols)"))
    for symbol in settings.engine.symbols:
        path = Path(market.replay_files[symbol])
        problem = _replay_file_problem(path)
        if problem is not None:
            raise StartError(_format(found, (*key, symbol), problem))


def _replay_file_problem(path: Path) -> str | None:
    """What keeps a replay file from being read, said after the key that names it; None when it is a file."""
    try:
        if reach.is_dir(path):
            return f"{path}: a directory, not a file"
        kind = kind_of(path)
        if kind is not None:  # never opened: a FIFO would be waited on, a device read without end
            return f"{path}: {kind}, not a file"
        if not reach.is_file(path):
            return f"{path}: no such file"
    except UnreachablePath as exc:  # a loop of symbolic links, a directory on the way closed to this user
        return str(exc)
    return None
