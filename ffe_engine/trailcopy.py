"""The audit trail as a backup holds it: one file of every record up to the backup database's last seq, each as
written, which the backup's own verify takes.

The trail's lines are read (its rotated files, then the current one) beside the database's copy of each record
(`events`), in seq order. A line that is the database's copy is taken as it is; one that is not (a byte flipped, a
line edited), or missing (deleted, the trail behind the database), is taken from the database, counted and named
(file and seqs) for the operator: the backup holds the records as written, and the trail is left as found for
`ffe doctor`. A line the database holds no copy of (a record an older ffe wrote, whose transaction was never
committed, the trail going on after it) is taken from the trail only if the chain holds it; damaged, nothing can
stand in for it, and the backup fails with one line naming the file and seq. Every line taken is checked as
`ffe audit verify` checks it: seq goes on by one, and each `prev` is the hash of the line before. The lines after
the database's last seq are not copied; what they hold is returned (`ahead`), for the caller to judge.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .ahead import Ahead
from .chain import GENESIS, missing_file, open_trail
from .errors import DamagedRecords
from .store import Records

_SEQ = re.compile(rb'"seq":(\d+)[,}]')
_PREV = b',"prev":"'


@dataclass
class TrailCopy:
    first: int = 0  # the first and last seq written
    last: int = 0
    from_database: int = 0  # records taken from the database's copy
    damaged: list[dict[str, Any]] = field(default_factory=list)  # {file, first, last}: what those were, in the trail
    ahead: Ahead = field(default_factory=Ahead)  # the trail's records after the database's last event

    def note_damaged(self, where: str, seq: int) -> None:
        """The trail file `where` damaged at `seq`: joined to the range before it when it goes on from it."""
        damaged = self.damaged
        if damaged and damaged[-1]["file"] == where and damaged[-1]["first"] <= seq <= damaged[-1]["last"] + 1:
            damaged[-1]["last"] = max(seq, damaged[-1]["last"])
        else:
            damaged.append({"file": where, "first": seq, "last": seq})


def copy_trail(trail: Path, out: Path, last_seq: int, db: Path) -> TrailCopy:
    """The audit trail's records up to `last_seq` into `out`, each as written: the trail's line where it is the
    database's copy (in `db`, the backup's database) or a record the database lacks, else the database's copy.
    DamagedRecords, naming the file and seq, when a record is damaged or missing in the trail and the database
    holds no copy of it."""
    records = Records(db)
    try:
        copies = _Copies(records)
        with open(out, "wb") as w:
            writer = _Writer(w, db)
            current = str(trail.absolute())
            last_where = ""  # the file of the line before
            for where, line in _lines(trail):
                first_line, last_where = where != last_where, where
                e = writer.next
                if e > last_seq:  # after the database's last event: judged by the caller
                    writer.result.ahead.add(line)
                    continue
                m = _SEQ.search(line, 0, 200)
                s = int(m.group(1)) if m else None
                if s is not None and s < e:
                    # A line repeated, or written over by a lower seq: its seq's record is written; left out, and
                    # said as damage (`ffe audit verify` refuses the trail for it).
                    writer.result.note_damaged(where, s)
                    continue
                if s == e:
                    copy = copies.at(e)
                    if copy is None or copy == line:
                        writer.put(line, None if copy is not None else where)
                    else:
                        writer.from_database(where, e, copy)
                    continue
                if s is not None and s <= last_seq and copies.at(s) == line:
                    # The lines before it missing here; at a file's first line, maybe the rotated file before it.
                    gone = missing_file(trail, first_line, e)
                    for gap in range(e, s):
                        writer.from_database(str(gone.absolute()) if gone else where, gap, copies.at(gap))
                    writer.put(line, None)
                    continue
                # No record, or not its seq's (a byte flipped in it): the damaged line in the place of seq e.
                writer.from_database(where, e, copies.at(e))
            for gap in range(writer.next, last_seq + 1):  # the trail ends before the database: behind it
                writer.from_database(current, gap, copies.at(gap))
        return writer.result
    finally:
        records.close()


def _lines(trail: Path) -> Iterator[tuple[str, bytes]]:
    """(file, line without its newline) of the trail's whole lines, oldest first: its files opened before any is
    read, so a rotation meanwhile (a running engine's) adds no file and skips none. The current file's unfinished
    last line (being written, or torn by a kill) is not one; an unfinished line elsewhere is damage."""
    opened = open_trail(trail)
    try:
        for i, (path, f) in enumerate(opened):
            where = str(path.absolute())
            for raw in f:
                if not raw.endswith(b"\n"):
                    if i == len(opened) - 1:
                        return
                    yield where, raw
                    continue
                yield where, raw[:-1]
    finally:
        for _, f in opened:
            f.close()


class _Copies:
    """The database's event records, read forward by seq (going back reads from there on again)."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self._rows: Iterator[tuple[int, bytes]] = iter(records.events())
        self._row = next(self._rows, None)
        self._asked = 0

    def at(self, seq: int) -> bytes | None:
        if seq < self._asked:
            self._rows = iter(self.records.events(after=seq - 1))
            self._row = next(self._rows, None)
        self._asked = seq
        while self._row is not None and self._row[0] < seq:
            self._row = next(self._rows, None)
        return self._row[1] if self._row is not None and self._row[0] == seq else None


class _Writer:
    """The lines written, seq by seq, each checked to follow the one before it in the hash chain."""

    def __init__(self, out: Any, db: Path) -> None:
        self.out = out
        self.db = db
        self.next = 1
        self.result = TrailCopy()
        self._hash = GENESIS
        self._chained = False
        self._trail_only: tuple[str, int] | None = None  # the last line written that the database has no copy of

    def put(self, line: bytes, trail_only: str | None) -> None:
        """Write the record of seq `next`: the database's copy, or (`trail_only`: its file) a line it lacks."""
        seq = self.next
        prev = prev_of(line)
        if (prev is None and self._chained) or (prev is not None and prev != self._hash):
            # The database's copies are the records as written: the line it lacks is the one that is not.
            if self._trail_only is not None and self._trail_only[1] == seq - 1:
                raise _no_copy(*self._trail_only)
            if trail_only is not None:
                raise _no_copy(trail_only, seq)
            raise DamagedRecords(f"{self.db}: the database's records of seq {seq - 1} and {seq} do not follow each "
                                 "other in the hash chain (the database is damaged): no backup was written; run "
                                 "`ffe doctor`")
        self._chained = self._chained or prev is not None
        self._hash = hashlib.sha256(line).hexdigest()
        self._trail_only = (trail_only, seq) if trail_only is not None else None
        self.out.write(line + b"\n")
        self.result.first = self.result.first or seq
        self.result.last = seq
        self.next = seq + 1

    def from_database(self, where: str, seq: int, copy: bytes | None) -> None:
        """The record of seq `next` damaged or missing in the trail file `where`: the database's copy of it."""
        if copy is None:
            raise _no_copy(where, seq)
        self.put(copy, None)
        self.result.from_database += 1
        self.result.note_damaged(where, seq)


def _no_copy(where: str, seq: int) -> DamagedRecords:
    return DamagedRecords(f"{where}: seq {seq} is damaged or missing in the audit trail and the database holds no copy "
                          "of it: no backup was written (its verify would refuse it); `ffe audit verify` names what "
                          "is wrong")


def prev_of(line: bytes) -> str | None:
    """A record's `prev` (its last key, as the bus writes it), or None for a record written before the chain."""
    if line.endswith(b'"}') and line[-66 - len(_PREV):-66] == _PREV:
        return line[-66:-2].decode("ascii", "replace")
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    prev = rec.get("prev") if isinstance(rec, dict) else None
    return prev if isinstance(prev, str) else None
