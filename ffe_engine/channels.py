"""Where alerts go: a generic JSON webhook, a Slack-compatible incoming webhook, Discord, Telegram's sendMessage.

The URLs and the bot token are credentials (anyone holding a webhook URL can post to the channel): they come from
.env or the environment only, and no error, log line or status names them. A failed request is described by its
HTTP status, the host and port it could not connect to and why, or what was wrong with the answer (Telegram's own
reason, the bot token masked), never by the URL it went to.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import fmt
from .config import AlertSettings
from .redact import Redactor

if TYPE_CHECKING:
    import aiohttp

SEVERITY_MARK = {"page": "PAGE", "warn": "WARN", "info": "INFO"}
# The longest message each chat takes, in characters: a longer one is refused, the alert never delivered.
LONGEST = {"discord": 2000, "telegram": 4096}


class DeliveryFailed(Exception):
    """One delivery attempt failed; the message is safe to log (no URL, no token). `retry_after`: the seconds the
    channel asked to be left alone for (HTTP Retry-After on a 429 or a 503), when it said so in seconds."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(value: str | None) -> float | None:
    """A Retry-After header's wait in seconds, or None: absent, or given as a date (a channel's rate limit says
    seconds; a date would need the clock, and the backoff covers it)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def new_session() -> aiohttp.ClientSession:
    """The HTTP client the channels and the heartbeat send with. aiohttp is imported here, by the runs that send:
    importing it costs about a tenth of a second, and most runs have no channel configured."""
    import aiohttp

    return aiohttp.ClientSession()


@dataclass(frozen=True, slots=True)
class Origin:
    """Which engine an alert comes from, so that engines sharing a channel are told apart."""

    host: str
    data_dir: str
    instance: str = ""

    @property
    def short(self) -> str:
        return f"[{self.host}:{self.instance or self.data_dir}]"

    @property
    def engine(self) -> str:
        """The engine itself, whatever its instance name: another host or data directory is another engine (an
        account restored or moved there), whose alerts hold no window of this one's."""
        return f"{self.host}:{self.data_dir}"


def origin_of(data_dir: Path, instance: str = "") -> Origin:
    return Origin(socket.gethostname(), str(data_dir.resolve()), instance)


@dataclass(frozen=True, slots=True)
class Channel:
    name: str  # webhook | slack | discord | telegram
    url: str
    chat_id: str = ""
    origin: Origin | None = None
    secret: str = ""  # the bot token, masked in the words of Telegram's answer

    def body(self, alert: dict[str, Any]) -> dict[str, Any]:
        text = alert["text"] if self.origin is None else f"{alert['text']} {self.origin.short}"
        line = f"[{SEVERITY_MARK.get(alert['severity'], alert['severity'])}] {text}"
        if self.name == "slack":
            return {"text": line}
        if self.name == "discord":
            return {"content": within(line, LONGEST["discord"])}
        if self.name == "telegram":
            return {"chat_id": self.chat_id, "text": within(line, LONGEST["telegram"]),
                    "disable_web_page_preview": True}
        body = {"key": alert["key"], "kind": alert["kind"], "severity": alert["severity"], "text": text,
                "created_ts": alert["created_ts"], "source": "ffe",
                "created": fmt.iso(alert["created_ts"]) if alert["created_ts"] is not None else None}
        if self.origin is not None:
            body.update(host=self.origin.host, data_dir=self.origin.data_dir, instance=self.origin.instance)
        return body

    async def send(self, session: aiohttp.ClientSession, alert: dict[str, Any], timeout_s: float) -> None:
        import aiohttp  # already loaded: the session is aiohttp's

        try:
            # A redirect is not followed: the page it leads to (a sign-in proxy's, a moved hook's) answers 200 to
            # a GET without the alert; as a failure (HTTP 302) it is retried and told.
            async with session.post(self.url, json=self.body(alert), allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                if resp.status >= 300:
                    asked = retry_after(resp.headers.get("Retry-After")) if resp.status in (429, 503) else None
                    said = await self._telegram_said(resp) if self.name == "telegram" else None
                    raise DeliveryFailed(f"HTTP {resp.status}{f': {said}' if said else ''}", retry_after=asked)
                if self.name == "telegram":
                    try:
                        answer = json.loads(await resp.read())
                    except ValueError:
                        raise DeliveryFailed("the answer is not JSON") from None
                    if not isinstance(answer, dict) or not answer.get("ok"):
                        raise DeliveryFailed(self._refusal(answer) or "telegram answered ok=false")
        except DeliveryFailed:
            raise
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise DeliveryFailed(failure_reason(exc)) from None

    async def _telegram_said(self, resp: aiohttp.ClientResponse) -> str | None:
        """Telegram's own reason on a refusal (its HTTP 400 for a chat not found), when its answer gives one."""
        try:
            return self._refusal(json.loads(await resp.read()))
        except (ValueError, OSError):
            return None

    def _refusal(self, answer: Any) -> str | None:
        """`telegram answered: DESCRIPTION` from a Bot API answer, the token masked, its words never acting on a
        terminal; None when it gives no description."""
        said = answer.get("description") if isinstance(answer, dict) else None
        if not isinstance(said, str) or not said:
            return None
        return f"telegram answered: {fmt.printable(fmt.short(Redactor([self.secret]).text(said), 300))}"


def failure_reason(exc: BaseException) -> str:
    """Why a request failed, in words: the host and port it could not connect to and why, or what went wrong after.
    Never the URL, whose path and credentials are the secret; an exception's own text may quote it."""
    import aiohttp  # already loaded: the exception is aiohttp's

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        why = f"its certificate is not trusted ({getattr(cert, 'verify_message', None) or type(cert).__name__})"
        return f"cannot connect to {exc.host}:{exc.port}: {why}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection was closed before an answer came"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut short"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the URL is not one a request can be sent to"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"the answer could not be read (HTTP {exc.status})"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return type(exc).__name__


def _os_reason(exc: OSError) -> str:
    import ssl  # already loaded by aiohttp, which raised it

    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed ({(exc.reason or 'refused').lower().replace('_', ' ')})"
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:  # a name not found: no errno of the OS
        return str(exc.strerror or type(exc).__name__).lower()
    return os.strerror(exc.errno).lower()


def within(line: str, width: int) -> str:
    """`line` in at most `width` characters: its middle left out, a mark saying how much, its head (what happened)
    and its ending kept whole. The ending is what to do and the engine the alert comes from (`[HOST:DATA_DIR]`): a
    cut at the end would drop both."""
    if len(line) <= width:
        return line
    # The count's digits are at most those of the line's length: the mark said is never longer than the one
    # room was made for.
    keep = width - len(_left_out(len(line)))
    head = keep // 3
    return line[:head] + _left_out(len(line) - keep) + line[len(line) - (keep - head):]


def _left_out(count: int) -> str:
    return f" … [{count} characters left out] … "


# Where each channel's URL or token is set: `.env` or the environment only (a secret).
CHANNEL_VARIABLES = {"webhook": "FFE_ALERTS__WEBHOOK_URL", "slack": "FFE_ALERTS__SLACK_URL",
                     "discord": "FFE_ALERTS__DISCORD_URL", "telegram": "FFE_ALERTS__TELEGRAM_TOKEN"}


def channels_from(cfg: AlertSettings, origin: Origin | None = None) -> list[Channel]:
    """The channels whose URL or token is set; `origin`: the engine their alerts name."""
    out: list[Channel] = []
    for name in ("webhook", "slack", "discord"):
        secret = getattr(cfg, f"{name}_url")
        if secret is not None:
            out.append(Channel(name, secret.get_secret_value(), origin=origin))
    if cfg.telegram_token is not None:
        token = cfg.telegram_token.get_secret_value()
        out.append(Channel("telegram", f"{cfg.telegram_api.rstrip('/')}/bot{token}/sendMessage", cfg.telegram_chat_id,
                           origin, secret=token))
    return out


async def ping(session: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
    """A heartbeat: a GET whose arrival is the message (healthchecks.io, Uptime Kuma push, Cronitor, ...)."""
    import aiohttp  # already loaded: the session is aiohttp's

    try:
        async with session.get(url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status >= 300:
                raise DeliveryFailed(f"HTTP {resp.status}")
    except DeliveryFailed:
        raise
    except TimeoutError:
        raise DeliveryFailed(f"no answer within {timeout_s:g}s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise DeliveryFailed(failure_reason(exc)) from None


async def send_test(cfg: AlertSettings, text: str, origin: Origin | None = None,
                    now: float | None = None) -> list[tuple[str, str | None]]:
    """`ffe alert test`: one test alert, sent at wall time `now`, straight to every configured channel (and a
    heartbeat ping), not through the outbox. Each channel's result: None when delivered, else why not."""
    results: list[tuple[str, str | None]] = []
    alert = {"key": "TEST", "kind": "TEST", "severity": "info", "text": text, "created_ts": now}
    async with new_session() as session:
        for channel in channels_from(cfg, origin):
            try:
                await channel.send(session, alert, cfg.timeout_s)
                results.append((channel.name, None))
            except DeliveryFailed as exc:
                results.append((channel.name, str(exc)))
        if cfg.heartbeat_url is not None:
            try:
                await ping(session, cfg.heartbeat_url.get_secret_value(), cfg.timeout_s)
                results.append(("heartbeat", None))
            except DeliveryFailed as exc:
                results.append(("heartbeat", str(exc)))
    return results
