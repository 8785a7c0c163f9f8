"""What an exchange's answer for candles (ccxt's fetch_ohlcv) holds: its candles, and the rows that are none.

ccxt reads a body that is not candles as none (`{}` served 200), or as rows without numbers (a gateway's HTML page
served 200, character by character: the "1" of "<h1>" reads as a candle at 1 ms with no prices). Every reader of an
exchange's candles takes its answers through `candles_from`, so that no such row is taken for a candle: the exchange
feed through CcxtVenue.fetch_ohlcv, where an answer `not_candles` finds fault with is a failed read, and `ffe data
download`, which leaves such rows out and counts them.

An exchange answers at most a page of candles a request (Binance: 1000), whatever was asked: a reader of more (the
download, the exchange feed's warm-up) asks page by page, from a time on, `page_size` candles each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .csvdata import iso

DEFAULT_PAGE = 500  # when ccxt does not know the exchange's page size


@dataclass
class Page:
    """One answer for the candles from a time on: its candles from then on, in time order, and how many of its rows
    were none (no time or prices as numbers); when it has no candles, the open time of the exchange's newest (when
    its reader asked for it)."""

    rows: list[list[Any]]
    unreadable: int = 0
    newest: int | None = None


def open_time(row: Any) -> int | None:
    """The open time of a row that is a candle (its time and four prices numbers), None for any other."""
    try:
        ts = int(row[0])
        for x in row[1:5]:
            float(x)
        return ts if len(row) >= 5 else None
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        return None


def candles_from(rows: Any, since: int | None) -> Page:
    """The candles of a ccxt answer opening at or after `since` (all when None), and how many rows were none."""
    if not isinstance(rows, list):
        return Page([])
    timed, unreadable = [], 0
    for r in rows:
        ts = open_time(r)
        if ts is None:
            unreadable += 1
        elif since is None or ts >= since:
            timed.append((ts, r))
    return Page([r for _, r in sorted(timed, key=lambda pair: pair[0])], unreadable)


def not_candles(page: Page, since: int | None, known: int | None = None) -> str | None:
    """Why an answer for the candles from `since` on (the newest when None) is not the exchange's candles, None when
    it may be: rows that are no candles are never the exchange's, and neither is no candle at all when its newest
    were asked for (a market that trades has them), nor when a candle of the exchange's at or after `since` is
    `known` (its open time, read before). Otherwise none from `since` on may be the truth: no trades since."""
    if page.unreadable:
        return (f"answered {page.unreadable} row(s) that are no candles (no time or prices as numbers): its answer "
                "was not its candles (a gateway's page?)")
    if since is None and not page.rows:
        return ("answered no candles when asked for its newest: its answer was not its candles (in maintenance?), "
                "or the market has none")
    if since is not None and known is not None and known >= since and not page.rows:
        return (f"answered no candles from {iso(since)} on, though it has one at {iso(known)}: its answer was not its "
                "candles")
    return None


def page_size(exchange: Any) -> int:
    """The most candles the exchange serves per request, as ccxt knows it (DEFAULT_PAGE when it does not)."""
    features = getattr(exchange, "features", None) or {}
    for market_type in ("spot", "swap", "future"):
        section = features.get(market_type) or {}
        limit = (section.get("fetchOHLCV") or {}).get("limit") if isinstance(section, dict) else None
        if isinstance(limit, int) and limit > 0:
            return limit
    return DEFAULT_PAGE
