"""What the JSON records ffe reads back look like inside: the key-value records a start restores (the books, the
holds, the orders it was cancelling, the restore marker) and a backup's manifest. A figure that is text or null, a
price list that is not a list, would be taken as it is, and the engine would trade on it or fail half-way through its
start. `damage` names the first value of a key-value record that is not what ffe writes, `mismatch` that of any value
against a shape; each returns None when all is as written.

A shape is one of: NUMBER (a finite number), INTEGER, TEXT, ANY, `one_of(...)` (one of these values); a dict (an
object with these keys, each checked when present, a key whose shape is `Needed(shape)` missing too); `Each(shape)`
(an object whose every value has the shape); `Items(shape)` (a list whose every item has it); a tuple (a list of
exactly these shapes in order); `Maybe(shape)` (null, or the shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class _Leaf:
    def __init__(self, name: str, test: Any) -> None:
        self.name = name
        self.test = test


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


NUMBER = _Leaf("a finite number", _is_number)
INTEGER = _Leaf("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
TEXT = _Leaf("text", lambda v: isinstance(v, str))
ANY = _Leaf("anything", lambda v: True)


def one_of(*values: str) -> _Leaf:
    return _Leaf(" or ".join(values), lambda v: isinstance(v, str) and v in values)


@dataclass(frozen=True)
class Each:
    shape: Any


@dataclass(frozen=True)
class Items:
    shape: Any


@dataclass(frozen=True)
class Maybe:
    shape: Any


@dataclass(frozen=True)
class Needed:
    """A key of a dict shape that must be there: without it, the record is not one."""

    shape: Any


_ORDER = {"client_order_id": TEXT, "symbol": TEXT, "side": TEXT, "quantity": NUMBER, "status": TEXT,
          "filled": NUMBER, "average": Maybe(NUMBER), "fee": NUMBER, "exchange_id": Maybe(TEXT), "type": TEXT,
          "price": Maybe(NUMBER), "ts": NUMBER}

SHAPES: dict[str, Any] = {
    # The cash, and the peak equity the drawdown is measured from: without them the books are not any. The cash is
    # null while a live account's is the venue's, not yet taken by a reconciliation (Engine._books_state).
    "portfolio": {"cash": Needed(Maybe(NUMBER)), "peak_equity": Needed(NUMBER), "max_drawdown_pct": NUMBER,
                  "day": INTEGER, "day_start_equity": NUMBER, "day_realised": NUMBER, "entries_today": INTEGER,
                  "fees_paid": NUMBER, "realised": NUMBER, "last_price": Each(NUMBER)},
    "paper_venue": {"balances": Needed(Each(NUMBER)), "reserved": Each(NUMBER), "reservations": Each((TEXT, NUMBER)),
                    "last": Each(NUMBER), "exchange_id_seq": INTEGER, "orders": Items(_ORDER)},
    "weights": {"weights": Each(NUMBER), "stats": dict},
    "reconcile_baseline": Each(NUMBER),
    "flatten_under_way": Maybe(Each(INTEGER)),
    "flatten_owed": Maybe(Each(TEXT)),
    "exits_held": Maybe(Each((one_of("stop_loss", "take_profit"), NUMBER, INTEGER))),
    "exits_owed": Maybe(Each((one_of("stop_loss", "take_profit"), NUMBER, INTEGER))),
    "audit_head": {"seq": INTEGER, "hash": TEXT},
    "events_whole_after": INTEGER,
    # Read by a start too: one of another type would stop it in a traceback, or be passed over as if not there (a
    # hold lifted, the manual approval the operator chose forgotten).
    "restored_from_backup": {"backup": Needed(TEXT), "taken_ms": Needed(INTEGER), "seq": INTEGER,
                             "restored_ms": INTEGER},
    "approval_mode": one_of("auto", "manual"),
    "cash_accepted": Maybe(NUMBER),
    "paper_starting_cash": Maybe(NUMBER),
    "books_quote": Maybe(TEXT),
    "venue_hold_until": Maybe(NUMBER),
    "venue_request_hold_until": Maybe(NUMBER),
    "orders_cancel_due": Maybe(Each(NUMBER)),
    "orders_ended_unseen": Maybe(Each(NUMBER)),
    "orders_ended_said": Maybe(Items(TEXT)),
    "orders_reappeared": Maybe(Items(TEXT)),
    "orders_cancel_asked": Maybe(Items(TEXT)),
    "orders_repeat_refused": Maybe(Items(TEXT)),
    "orders_resent": Maybe(Each(INTEGER)),
    "reconcile_accepted_orders": Maybe(Items(TEXT)),
}


def damage(key: str, value: Any) -> str | None:
    """Where `value`, stored under `key`, is not what ffe writes there ("cash 'abc' is not a finite number"), or
    None (None too for a key whose shape is not described here)."""
    shape = SHAPES.get(key)
    return None if shape is None else mismatch(shape, value)


def mismatch(shape: Any, value: Any) -> str | None:
    """Where `value` does not have `shape` ("seq.last '5' is not an integer", "created_ms is missing"), or None."""
    return _check(shape, value, "")


def _check(shape: Any, value: Any, path: str) -> str | None:
    where = path or "the value"
    if isinstance(shape, _Leaf):
        return None if shape.test(value) else _not(where, value, shape.name)
    if isinstance(shape, Maybe):
        return None if value is None else _check(shape.shape, value, path)
    if isinstance(shape, Needed):
        return _check(shape.shape, value, path)
    if shape is dict:
        return None if isinstance(value, dict) else _not(where, value, "a JSON object")
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return _not(where, value, "a JSON object")
        missing = next((name for name, sub in shape.items() if isinstance(sub, Needed) and name not in value), None)
        if missing is not None:
            return f"{_join(path, missing)} is missing"
        return _first(_check(sub, value[name], _join(path, name)) for name, sub in shape.items() if name in value)
    if isinstance(shape, Each):
        if not isinstance(value, dict):
            return _not(where, value, "a JSON object")
        return _first(_check(shape.shape, v, _join(path, str(k))) for k, v in value.items())
    if isinstance(value, list) and isinstance(shape, Items):
        return _first(_check(shape.shape, v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list) and isinstance(shape, tuple) and len(value) == len(shape):
        return _first(_check(sub, v, f"{path}[{i}]") for i, (sub, v) in enumerate(zip(shape, value)))
    return _not(where, value, "a list" if isinstance(shape, Items) else f"a list of {len(shape)}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _first(found: Any) -> str | None:
    return next((f for f in found if f is not None), None)


def _not(where: str, value: Any, expected: str) -> str:
    text = repr(value)
    return f"{where} {text if len(text) <= 40 else text[:37] + '...'} is not {expected}"
