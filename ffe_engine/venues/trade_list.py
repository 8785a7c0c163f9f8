"""An order's trades as an exchange lists them (ccxt's parse), each counted once.

A list of an order's trades (Binance's trade list, and the fills a new order's answer lists) can name a trade twice,
and in any order. Every sum over an order's trades (its amount, its average price, its fees and the coins they took)
is taken over `distinct` trades: summed as listed, a fee is charged twice and the position falls short of the
account's coins by the coins it took twice.

A trade is known by its id. One without an id is known by all it says (time, price, amount, fee): two alike in all
of that count once. Were they two trades, those counted add up to less than the order filled, which is read as
trades that trail the order (looked up again), never as a fee charged twice.
"""

from __future__ import annotations

from typing import Any, Iterable

# How far a sum of trades may be from the order's amount filled and still be it (float sums of decimal amounts).
RELATIVE, ABSOLUTE = 1e-9, 1e-12


def distinct(trades: Iterable[Any]) -> list[dict[str, Any]]:
    """The trades (the dicts among them), each once, in the order first listed."""
    seen: set[tuple[Any, ...]] = set()
    out: list[dict[str, Any]] = []
    for t in trades:
        if not isinstance(t, dict):
            continue
        key = _key(t)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def fees_of(t: dict[str, Any]) -> list[dict[str, Any]]:
    """A trade's fees (ccxt gives a list, or one fee)."""
    fees = t.get("fees") or ([t["fee"]] if t.get("fee") else [])
    return [f for f in fees if isinstance(f, dict)]


def amount(trades: list[dict[str, Any]]) -> float:
    return sum(float(t.get("amount") or 0.0) for t in trades)


def average(trades: list[dict[str, Any]]) -> float | None:
    """The trades' average price, None when they trade nothing."""
    total = amount(trades)
    cost = sum(float(t.get("amount") or 0.0) * float(t.get("price") or 0.0) for t in trades)
    return cost / total if total else None


def short_of(total: float, filled: float) -> bool:
    """Whether trades adding up to `total` cover less than `filled`."""
    return total < filled * (1 - RELATIVE) - ABSOLUTE


def beyond(total: float, filled: float) -> bool:
    """Whether trades adding up to `total` are more than `filled`: they are not all the order's."""
    return total > filled * (1 + RELATIVE) + ABSOLUTE


def _key(t: dict[str, Any]) -> tuple[Any, ...]:
    if t.get("id") is not None:
        return ("id", str(t["id"]))
    fees = sorted((str(f.get("currency")), _number(f.get("cost"))) for f in fees_of(t))
    return ("as listed", t.get("timestamp"), _number(t.get("price")), _number(t.get("amount")), tuple(fees))


def _number(value: Any) -> str:
    """A number as text that is the same for 0.1 and "0.1" (ccxt gives either)."""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return repr(value)
