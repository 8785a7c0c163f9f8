"""Taking the configured secrets out of what the engine writes and shows.

Free text (a log line, an alert, an error) has every secret's text replaced by `********`. Structured data (a
record, the /health verdict, a log line's fields) has it replaced in its string values only: never in a key, a
number, a boolean, nor a record's own `ts`, `seq` and `event`. A mask over the encoded JSON would change its
structure wherever the secret's text is also a piece of it, and miss a secret JSON writes escaped (a `"` or a
`\\` in it). A secret is at least `MIN_SECRET` characters (config.py refuses a shorter one): a value like `true`,
`0000` or `USDT` is in every record, and no secret.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, TypeVar

import orjson

__all__ = ["MIN_SECRET", "REDACTED", "Redactor"]

REDACTED = "********"
MIN_SECRET = 8

HEADER = frozenset({"ts", "seq", "event"})  # a record's own fields, set by the bus

E = TypeVar("E")


class Redactor:
    """Replaces every known secret's text in strings: in free text, or in the string values of structured data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # How each secret's text can show in encoded JSON: as it is, and escaped (a quote, a backslash, a control
        # character). Either in an encoded record means a string value in it holds the secret.
        forms = {s.encode() for s in self.secrets} | {orjson.dumps(s)[1:-1] for s in self.secrets}
        self._encoded = sorted(forms, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, s: str) -> str:
        for secret in self.secrets:
            if secret in s:
                s = s.replace(secret, REDACTED)
        return s

    def value(self, v: Any) -> Any:
        """`v` with the secrets replaced in its strings, and in the string values of its dicts and lists (never in
        their keys); anything else as it is."""
        if not self.secrets:
            return v
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, tuple):
            return tuple(self.value(x) for x in v)
        return v

    def in_encoded(self, line: bytes) -> bool:
        """Whether an encoded record may hold a secret (its text may also be a piece of the JSON itself: then
        `record` finds nothing to replace, and the record stays as it is)."""
        return any(form in line for form in self._encoded)

    def record(self, line: bytes) -> bytes:
        """An encoded audit record (`in_encoded`) with the secrets replaced in its fields' string values, as JSON
        holds them (a value the encoder wrote as text, a path or an error, is text here); its keys, numbers, ts,
        seq and event as they were."""
        rec = orjson.loads(line)
        return orjson.dumps({k: x if k in HEADER else self.value(x) for k, x in rec.items()})

    def event(self, ev: E) -> E:
        """An event (a dataclass) for its subscribers: a copy with the secrets replaced in its fields' string values,
        or the event itself when none holds one."""
        if not self.secrets or not dataclasses.is_dataclass(ev):
            return ev
        changed = {}
        for f in dataclasses.fields(ev):
            if not f.init:
                continue
            x = getattr(ev, f.name)
            y = self.value(x)
            if y != x:
                changed[f.name] = y
        if not changed:
            return ev
        copy = dataclasses.replace(ev, **changed)  # type: ignore[type-var]
        for f in dataclasses.fields(ev):
            if not f.init:  # seq and ts: the bus's, kept
                setattr(copy, f.name, getattr(ev, f.name))
        return copy
