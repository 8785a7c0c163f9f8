"""URLs and the credentials they may carry.

A base URL of the configuration (`ensemble.llm.base_url`, `exchange.api_urls`, `alerts.telegram_api`) is no secret:
`ffe config check` prints it, a backup keeps it, errors and logs name it. So it may carry no credential: no user name
or password, no query, no fragment (a path is appended to it, and neither would survive that anyway); its key goes
in a secret key, from .env or the environment. `base_url_problem` says so, at load (config.py) and in the provider
that sends to it (signals/llm.py), from one rule.

Text shown to a person that may hold a URL (a value of `exchange.options`, a refused value quoted in an error) has
each URL's user name and password, query values and fragment masked: `mask_url`, `mask_urls`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .redact import REDACTED as MASK

__all__ = ["base_url_problem", "mask_url", "mask_urls"]

# A URL within text: a scheme, then everything up to a blank, a quote or an angle bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def mask_url(text: str) -> str:
    """`text` with whatever may be a credential in it masked: all of `user:password@`, each query value (an item
    without `=` whole) and the fragment. Any text is taken, a valid URL or not, with or without a scheme: a refused
    value is quoted through this."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    # Through the last "@" anywhere, not only before the first "/", "?" or "#": a password with one of those in it
    # would otherwise be shown in part. A "@" in a path or a query masks a little too much, which is only a display.
    if "@" in rest:
        rest = MASK + "@" + rest.rpartition("@")[2]
    rest, hash_, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    if query:
        query = "&".join(_mask_item(item) for item in query.split("&"))
    if fragment:
        fragment = MASK
    return f"{scheme}{sep}{rest}{question}{query}{hash_}{fragment}"


def _mask_item(item: str) -> str:
    name, equals, value = item.partition("=")
    if not equals:
        return MASK if item else item
    return f"{name}={MASK}" if value else item


def mask_urls(text: str) -> str:
    """`text` with every URL in it masked (`mask_url`); the rest as it is."""
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text) if "://" in text else text


def base_url_problem(url: str, secret_keys: str) -> str | None:
    """Why `url`, an http(s) URL, cannot be a base URL (the URL quoted masked), or None. `secret_keys` names where its
    credential goes instead."""
    shown = mask_url(url)
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return (f"{shown!r} carries credentials (a user name or password), which would be shown and logged with "
                f"it: give the key as {secret_keys}, from .env or the environment")
    if "?" in url or "#" in url:
        return (f"{shown!r} has a query or a fragment: it is a base URL, the request's path is appended to it (a key "
                f"goes in {secret_keys}, from .env or the environment)")
    return None
