"""A language model as a voter, over any OpenAI-compatible chat completions endpoint (local or remote)."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any
from urllib.parse import urlsplit

from .. import fmt
from ..redact import REDACTED
from ..urls import base_url_problem, mask_url
from ..indicators import IndicatorSet
from ..model import Action, Vote
from ..schema import SecretStr
from .base import HOLD

SYSTEM_PROMPT = (
    "You are one voter in a trading ensemble. From the indicator snapshot, decide whether to BUY, SELL or HOLD "
    "the symbol over the next few bars. Reply with exactly one JSON object and nothing else: "
    '{"action": "BUY" | "SELL" | "HOLD", "confidence": a number from 0 to 1, "reason": "at most ten words"}.'
)


class LLMError(RuntimeError):
    """The model could not be asked or its answer could not be used. Never carries the API key."""


def parse_answer(content: Any) -> tuple[Action, float, str]:
    """Read {"action", "confidence", "reason"} from a model reply, tolerating code fences and chatter around
    the object. Raises LLMError saying what is wrong."""
    if not isinstance(content, str):
        raise LLMError("reply has no text content")
    start = content.find("{")
    end = content.rfind("}")
    if start < 0 or end < start:
        raise LLMError("reply holds no JSON object")
    try:
        obj = json.loads(content[start:end + 1])
    except json.JSONDecodeError as e:
        raise LLMError(f"reply is not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(obj, dict):
        raise LLMError("reply JSON is not an object")
    action = obj.get("action")
    if not isinstance(action, str) or action.strip().upper() not in ("BUY", "SELL", "HOLD"):
        raise LLMError(f"reply action must be BUY, SELL or HOLD, got {str(action)[:20]!r}")
    conf = obj.get("confidence")
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not math.isfinite(conf) \
            or not 0.0 <= conf <= 1.0:
        raise LLMError(f"reply confidence must be a number from 0 to 1, got {str(conf)[:20]!r}")
    reason = obj.get("reason", "")
    reason = reason if isinstance(reason, str) else str(reason)
    return Action(action.strip().upper()), float(conf), fmt.printable(" ".join(reason.split()))[:120]


class LLMProvider:
    """Asks a chat model for a vote on the current indicator snapshot: POST {base_url}/chat/completions with the
    model and messages, and reads a JSON object {"action", "confidence", "reason"} from the reply. Any HTTP error,
    malformed reply or timeout raises, so the ensemble records the provider as failed (it never becomes a HOLD).
    HOLD without a request while the indicators are warming up."""

    __slots__ = ("name", "base_url", "model", "timeout_s", "temperature", "max_tokens", "json_mode", "_api_key",
                 "_url", "_public", "_session")

    def __init__(self, base_url: str = "http://127.0.0.1:11434/v1", model: str = "llama3.1",
                 api_key: SecretStr | str | None = None, timeout_s: float = 10.0, temperature: float = 0.0,
                 max_tokens: int = 120, json_mode: bool = False, name: str = "llm") -> None:
        if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https") \
                or not urlsplit(base_url).hostname:
            raise ValueError(f"provider {name!r}: base_url must be an http(s) URL, got {mask_url(str(base_url))!r}")
        problem = base_url_problem(base_url, "api_key")  # the rule config.py applies at load
        if problem:
            raise ValueError(f"provider {name!r}: base_url {problem}")
        if not model:
            raise ValueError(f"provider {name!r}: model must be set")
        if not timeout_s > 0:
            raise ValueError(f"provider {name!r}: timeout_s must be positive, got {timeout_s!r}")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.json_mode = bool(json_mode)
        self._api_key = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        self._url = self.base_url + "/chat/completions"
        self._public = mask_url(self._url)
        self._session: Any = None

    def __repr__(self) -> str:
        return f"LLMProvider(name={self.name!r}, model={self.model!r}, url={self._public!r})"

    def prompt(self, ind: IndicatorSet) -> str:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.6g}"

        return (f"symbol {ind.symbol or 'unknown'}, bar {ind.bars}: close {f(ind.close)} (previous "
                f"{f(ind.prev_close)}); EMA fast {f(ind.ema_fast)}, EMA slow {f(ind.ema_slow)}; MACD "
                f"{f(ind.macd)}, signal {f(ind.macd_signal)}, histogram {f(ind.macd_hist)}; RSI {f(ind.rsi)}; "
                f"ATR {f(ind.atr)}; Bollinger {f(ind.bb_lower)} / {f(ind.bb_mid)} / {f(ind.bb_upper)}; "
                f"Donchian low {f(ind.dc_low)}, high {f(ind.dc_high)}")

    async def vote(self, ind: IndicatorSet) -> Vote:
        if not ind.warm:
            return Vote(self.name, HOLD, 0.0, "warming up")
        import aiohttp  # imported here: loading aiohttp is not free and most runs have no LLM voter

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": self.prompt(ind)}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            payload["response_format"] = {"type": "json_object"}
        headers = {}
        if self._api_key is not None and self._api_key.get_secret_value():
            headers["Authorization"] = "Bearer " + self._api_key.get_secret_value()
        try:
            async with self._session.post(self._url, json=payload, headers=headers) as resp:
                if resp.status != 200:
                    raise LLMError(f"{self.name}: HTTP {resp.status} from {self._public}")
                body = await resp.read()
        except aiohttp.ClientError as e:
            # `from None`: aiohttp errors carry the request, headers included; keep them out of tracebacks.
            raise LLMError(f"{self.name}: request to {self._public} failed ({type(e).__name__})") from None
        except asyncio.TimeoutError:
            raise LLMError(f"{self.name}: no answer from {self._public} within {self.timeout_s:g} s") from None
        try:
            data = json.loads(body)
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"{self.name}: response from {self._public} is not a chat completion") from None
        key = self._api_key.get_secret_value() if self._api_key is not None else ""
        if key and isinstance(content, str):
            content = content.replace(key, REDACTED)  # a reply quoting the key must not carry it into the records
        try:
            action, conf, reason = parse_answer(content)
        except LLMError as e:
            raise LLMError(f"{self.name}: {e}") from None
        return Vote(self.name, action, conf, reason)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
