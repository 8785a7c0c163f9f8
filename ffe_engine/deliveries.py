"""The outbox's alerts delivered whose `sent` mark could not be written, kept beside the database in
`ffe.alerts-delivered` until the outbox says so.

An alert leaves the outbox, the receiver takes it, then the update that marks it sent fails: the disk is full, or
another process holds the database's write lock. Left pending, it would be delivered again by every start after it,
and a service manager restarts the engine into the same full disk again and again: one page, told at every start.
This file says it was delivered: no start sends it again, and the first that can write marks it sent in the outbox,
with its attempts and the time it left, as if the mark had been written then.

The file is of sentalerts' make (FILE_BYTES always: replaced whole, or on a full disk overwritten in place, which
takes no new block), and fails the same way, towards telling: missing, damaged or unwritable, it holds nothing, and
what it would have held is delivered again (at least once, as every alert). An entry names its outbox row by id and
by a digest of the row, so a database put back from a backup, whose ids may name other alerts, is never taken for
it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import sentalerts

FILE_NAME = "ffe.alerts-delivered"
# As long as an entry gets: room for it is room for any one more.
LONGEST = ("telegram:999999999", {"cause": "0" * 32, "ts": 1234567890.1234567, "attempts": 999_999})


def delivered_path(beside: Path) -> Path:
    """The file, beside `beside` (the database's other file of this make, ffe.alerts-sent)."""
    return beside.with_name(FILE_NAME)


def entry_key(row: dict[str, Any]) -> str:
    return f"{row['channel']}:{row['id']}"


def row_digest(row: dict[str, Any]) -> str:
    """What makes an outbox row the one an entry was written for."""
    return sentalerts.cause_digest(f"{row['channel']}\n{row['key']}\n{float(row['created_ts'])!r}\n{row['text']}")


def read(path: Path) -> dict[str, dict[str, Any]]:
    """The entries: "channel:id" -> {"cause": the row's digest, "ts": when it left, "attempts": its tries}."""
    entries = sentalerts.read(path, lost="alerts delivered before this start whose sent mark was not written: they "
                                         "are delivered again")
    return {k: e for k, e in entries.items() if isinstance(e.get("attempts"), int) and k.rpartition(":")[2].isdigit()}


def keep(path: Path, entries: dict[str, dict[str, Any]]) -> bool:
    """The entries as the whole file; False when it cannot be written (logged: the next start delivers them
    again)."""
    return sentalerts.write(path, entries, "alert delivered, its sent mark not written, and it cannot be kept for "
                                           "the next start either: a restart delivers it again")


def room_for_one_more(entries: dict[str, dict[str, Any]]) -> bool:
    return sentalerts.fits({**entries, LONGEST[0]: LONGEST[1]})


def prepare(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """The file made now, holding `entries` (read at the start), while the disk takes writes."""
    sentalerts.prepare(path, entries)


def row_id(key: str) -> int:
    return int(key.rpartition(":")[2])
