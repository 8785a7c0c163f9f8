"""The audit trail and the engine's logging.

- `AuditWriter`: the events as JSON lines in logs/audit.jsonl. Lines are buffered and written in whole batches on
  an O_APPEND descriptor; a kill can still cut the last line (a batch may take more than one write), which the
  next start repairs (`repair_trail`). The store calls its `flush` before it commits events, so the file is never
  behind the database (it may be ahead: lines written, then a kill before the commit; the next start sets them
  aside and continues after the database's last seq).
- `repair_trail`: at start, before anything else is written, the file is brought level with the database: a torn
  last line (a kill mid-write, a power loss, a full disk) and the records the database never committed are set
  aside in side files, and the events the database holds after the file's last record are appended.
- `trail_damage`: at start, beside it, the current file's chain read through: a record damaged before the last
  two (which the repair compares with the database's copies) is told, in the log and the start's record and page.
- `verify_trail` (chain.py): the hash chain checked across every file of the trail, and against the chain head the
  database stores (`ffe audit verify`).
- `setup_logging`: the engine's own log lines (logs.py: human-readable on stderr when headless, or into the
  console's log pane), with every configured secret redacted from every line (redact.py).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator

from . import logs
from .ahead import Ahead
from .chain import (GENESIS, TornTail, VerifyResult, follows, last_line, line_hash, rotated_files, rotated_name,
                    trail_files, unreadable_trail, verify_current, verify_trail)
from .clock import Clock
from .errors import START_AGAIN, DamagedRecords, FfeError, StorageError, not_a_file, storage_failure
from .events import Event
from .redact import Redactor
from .sqlwriter import append_lines, open_lines_file

__all__ = ["AuditWriter", "TrailRepair", "VerifyResult", "has_records", "read_audit", "repair_trail",
           "setup_logging", "trail_damage", "verify_trail"]

log = logs.get_logger("ffe.audit")


class AuditWriter:
    """Event sink writing logs/audit.jsonl (the bus has already encoded, redacted and chained each record).

    Lines are kept until `flush()` (the engine flushes after every bar of a paper or live run) and appended as
    whole lines in one batch, on the writer's own thread: a disk that hangs holds up whoever waits for the flush
    (the bar loop, a store commit: the file is never behind the database), never the event loop, so /health,
    the control socket and the kill switch still answer and the growing lag shows the stall. A backtest's audit
    file is written by its record writer process instead (sqlwriter.py), from the same records.

    Rotation (`rotate_bytes`, `rotate_daily`): before a batch that would take the file past `rotate_bytes`, or
    whose first record falls on another UTC day than the file's first record, the file is renamed after its
    first seq (chain.rotated_name) and a new one is started, on the same thread. Rotation happens between whole
    batches, so seq and the hash chain run on from the last line of one file to the first of the next.
    """

    def __init__(self, path: Path, clock: Clock | None = None, *, rotate_bytes: int = 0,
                 rotate_daily: bool = False) -> None:
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = open_lines_file(self.path)
            self._size = os.fstat(self._fd).st_size
            self._first = _first_record(self.path) if self._size else None  # (seq, UTC day) of the file's first
        except OSError as exc:
            raise opening_failure(self.path, exc) from None
        self._lines: list[bytes] = []
        self._batch_first: tuple[int, str] | None = None  # (seq, UTC day) of the first line waiting
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ffe-audit")
        self._writing = asyncio.Lock()  # one batch on its way at a time: lines reach the file in order
        # For the monitor (with a clock): since when the oldest record not yet in the file has waited (monotonic;
        # kept until a write succeeds, so a failing or hung disk shows as a growing lag) and when the file was
        # last appended to (wall).
        self.clock = clock
        self.waiting_since: float | None = None
        self._batch_since: float | None = None  # the batch being written, while it is
        self.last_write: float | None = None
        self._last_seq = 0  # of the newest record handed over
        self.written_seq = 0  # of the newest record in the file (that this writer wrote)

    def __call__(self, ev: Event, line: bytes) -> None:
        if not self._lines:
            if self.waiting_since is None and self.clock is not None:
                self.waiting_since = self.clock.monotonic()
            self._batch_first = (ev.seq, _utc_day(ev.ts))
        self._lines.append(line)
        self._last_seq = ev.seq

    async def flush(self) -> None:
        async with self._writing:
            if not self._lines:
                return
            lines, since, seq, first = self._lines, self.waiting_since, self._last_seq, self._batch_first
            self._lines, self.waiting_since, self._batch_since = [], None, since
            job = self.thread.submit(self._append, lines, first)
            try:
                await asyncio.wrap_future(job)
            except OSError as exc:
                # The lines go back in front, for the next flush; their wait goes on.
                self._lines = lines + self._lines
                self.waiting_since = since
                self._batch_first = first
                raise storage_failure(self.path, exc) from None
            except asyncio.CancelledError:
                # Cancelled while queued behind a batch the disk holds, the batch never runs: its lines go back
                # in front, or the trail would skip them. Once running, it writes them.
                if job.cancelled():
                    self._lines = lines + self._lines
                    self.waiting_since = since
                    self._batch_first = first
                raise
            finally:
                self._batch_since = None
            self.written_seq = seq
            if self.clock is not None:
                self.last_write = self.clock.wall()

    def written(self) -> int:
        return self.written_seq

    def _append(self, lines: list[bytes], first: tuple[int, str] | None) -> None:
        """On the writer's thread (one batch at a time): rotate if due, then the lines, as one batch."""
        size = sum(map(len, lines)) + len(lines)
        if self._size and self._rotation_due(size, first):
            self._rotate()
        append_lines(self._fd, lines)
        if not self._size:
            self._first = first
        self._size += size

    def _rotation_due(self, adding: int, first: tuple[int, str] | None) -> bool:
        if self.rotate_bytes and self._size + adding > self.rotate_bytes:
            return True
        return bool(self.rotate_daily and self._first and first and self._first[1] != first[1])

    def _rotate(self) -> None:
        first = self._first[0] if self._first else _first_record(self.path)[0]
        target = rotated_name(self.path, first)
        if target.exists():  # never overwrite a part of the trail
            raise FileExistsError(errno.EEXIST, f"{target} already exists", str(target))
        os.rename(self.path, target)
        sync_dir(self.path.parent)
        fd = open_lines_file(self.path)
        os.close(self._fd)
        self._fd, self._size, self._first = fd, 0, None

    def check_in_place(self) -> None:
        """StorageError when the trail's file is no longer at its path (removed, or another file put there, while
        the engine ran): what is appended from then on would reach no file anyone reads (`ffe audit verify` finds
        none), and would vanish with the process; or when it is shorter than what this writer wrote to it (emptied
        in place). The records are all in the database too: the next start writes the trail again from it. Not
        looked at while a batch is being written (a rotation renames the file)."""
        if self._writing.locked():
            return
        try:
            ours = os.fstat(self._fd)
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino):
                if st.st_size >= self._size:
                    return
                how = "cut short"  # emptied or truncated in place (`: > audit.jsonl`): its records gone from it
            else:
                how = "replaced by another file"
        except FileNotFoundError:
            how = "removed"
        except OSError:
            return  # the directory cannot be looked at now: its writes say what is wrong, if anything
        then = ("move the file away and start again: the start writes the trail again from the database, which "
                "holds every record" if how == "cut short" else
                "the records appended since reach no file; the database holds them all, and the next start writes "
                "the trail again from it (move away any other file put in its place first)")
        raise StorageError(f"{self.path}: the audit trail was {how} while the engine ran: {then}")

    def lag(self) -> float:
        """Seconds the oldest record not yet in the file has been waiting (0 when all are written)."""
        since = self._batch_since if self._batch_since is not None else self.waiting_since
        if since is None or self.clock is None:
            return 0.0
        return self.clock.monotonic() - since

    def close(self) -> None:
        """The last lines written here and now (the loop has stopped), after any batch still on the thread."""
        self.thread.shutdown(wait=True)
        try:
            if self._lines:
                try:
                    self._append(self._lines, self._batch_first)
                except OSError as exc:
                    raise storage_failure(self.path, exc) from None
                self._lines = []
        finally:
            os.close(self._fd)


def _utc_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _first_record(path: Path) -> tuple[int, str]:
    """(seq, UTC day) of a file's first record ((0, "") if it cannot be read as one)."""
    with open(path, "rb") as f:
        first = f.readline()
    try:
        rec = json.loads(first)
        return int(rec["seq"]), str(rec["ts"])[:10]
    except (ValueError, KeyError, TypeError):
        return 0, ""


def sync_dir(path: Path) -> None:
    """A rename (or a new file) made durable: the directory's entry synced. The audit trail's rotation, backups and
    restores use it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TrailRepair:
    last_seq: int  # the seq of the trail's last record after the repair
    last_hash: str  # that record's hash: the next record's `prev` (chain.GENESIS for an empty trail)
    appended: int  # records appended from the database
    torn: Path | None  # where a torn last line was set aside
    torn_bytes: int
    uncommitted: Path | None = None  # where the records the database never committed were set aside
    uncommitted_records: int = 0
    # What those records hold, for the operator: set_aside_summary.
    uncommitted_summary: dict[str, Any] | None = None


async def repair_trail(path: Path, events_after: Callable[[int], Awaitable[list[tuple[int, bytes]]]]) -> TrailRepair:
    """Bring the audit trail level with the database's events: set aside a torn tail and the records the database
    never committed (written just before a kill), append what is missing.

    `events_after(seq)` returns the next records ((seq, line) pairs, in seq order) after `seq`, an empty list at
    the end. Only the tail is repaired: the file is append-only, and a record is never written out of order. The
    chain stays whole: a torn line was never followed by another, the records past the database's last event are
    no record of what happened (the trail then ends where the database does, and seq and the chain go on from
    there), and the records appended are the database's copies of the very lines the trail lacks, `prev`
    included."""
    path = Path(path)
    try:
        return await _repair(path, events_after)
    except OSError as exc:
        raise opening_failure(path, exc) from None


def opening_failure(path: Path, exc: OSError) -> FfeError:
    """The trail that could not be opened or read at start, as the one line the operator reads: something there
    that is not a file (put there since the start looked: a FIFO, a link to a directory that is not there) is a
    path to put right (exit 2, no HALTED stored for it); anything else, a disk that failed."""
    return not_a_file(path, START_AGAIN) or storage_failure(path, exc)


async def _repair(path: Path, events_after: Callable[[int], Awaitable[list[tuple[int, bytes]]]]) -> TrailRepair:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # put there since the start looked (host.py): left alone
            raise not_a_file(path, START_AGAIN) or StorageError(f"{path}: not a file")
        _check_head(fd, path)
        last_seq, last, torn, aside = await _set_aside_torn_tail(fd, path, events_after)
        uncommitted, moved = await _set_aside_uncommitted(fd, path, events_after)
        if uncommitted:
            last_seq, last = _last_record(fd)
        if last is None:  # the current file holds no record (just rotated): the trail ends in the last rotated file
            last_seq, last = _last_rotated(path)
        if moved is not None:
            log.warning("audit trail: records the database never committed were set aside (written just before a "
                        "kill, or the database lost committed records: an older copy put back, its WAL lost); the "
                        "trail goes on from the database's last event", file=str(moved),
                        records=len(uncommitted), after_seq=last_seq)
        out_of_order = await _check_last_records(fd, path, events_after)
        if out_of_order is not None:
            last_seq, last = _last_record(fd)
            if last is None:
                last_seq, last = _last_rotated(path)
            log.warning("audit trail: records out of their place were set aside; the trail goes on from the "
                        "database's copies", file=str(out_of_order), after_seq=last_seq)
        appended = 0
        while True:
            rows = await events_after(last_seq)
            if not rows:
                break
            append_lines(fd, [line for _, line in rows])
            appended += len(rows)
            last_seq, last = rows[-1]
        return TrailRepair(last_seq=last_seq, last_hash=line_hash(last) if last is not None else GENESIS,
                           appended=appended, torn=aside, torn_bytes=len(torn), uncommitted=moved,
                           uncommitted_records=len(uncommitted),
                           uncommitted_summary=set_aside_summary(uncommitted, moved))
    finally:
        os.close(fd)


async def trail_damage(path: Path) -> dict[str, Any] | None:
    """The current file of the trail, as the start left it once repaired, checked through its hash chain on another
    thread while the start goes on (chain.verify_current, several hundred MB a second; the rotated files
    are left to `ffe doctor` and `ffe audit verify`). None when whole; else what the start's `run` record holds as
    `trail_damaged` ({`file`, `seq`: the first bad one, `reason`}), said in one log line. The start does not stop
    for it: the database holds every record (a backup takes the damaged ones from it), and the trail is left as
    found for the operator to look at."""
    path = Path(path)
    try:
        size = os.stat(path).st_size
        found = await asyncio.to_thread(verify_current, path, size)
    except FileNotFoundError:
        return None
    except OSError as exc:  # the start read it a moment ago: a failing disk
        raise unreadable_trail(path, exc) from None
    if found is None:
        return None
    log.error(f"audit trail damaged before its last records: {path}, first bad seq {found.first_bad_seq}; left as "
              "found, and the engine starts (the database holds every record): run `ffe audit verify`, then "
              "`ffe doctor`", detail=found.reason)
    return {"file": str(path.absolute()), "seq": found.first_bad_seq, "reason": found.reason}


async def _set_aside_uncommitted(fd: int, path: Path,
                                 events_after: Callable[[int], Awaitable[list[tuple[int, bytes]]]]
                                 ) -> tuple[list[bytes], Path | None]:
    """The records at the end of the trail that the database never committed (none of its events has their seq or
    a later one), moved to `audit.jsonl.uncommitted-after-SEQ` (SEQ: the database's last event) and cut off, across
    rotated files if a rotation fell among them: a file that holds only such records is removed. Returns them,
    oldest first, and the file they were moved to."""
    found: list[bytes] = []
    cuts: list[tuple[Path, int]] = []  # (file, offset to cut it at), newest first
    kept: bytes | None = None  # the last record before them, which the database holds
    for p in [path, *reversed(rotated_files(path))]:
        pfd = fd if p == path else os.open(p, os.O_RDONLY)
        try:
            cut, kept = await _uncommitted_in(pfd, events_after, found)
        finally:
            if pfd != fd:
                os.close(pfd)
        if cut is not None:
            cuts.append((p, cut))
        if kept is not None:
            break
    if not found:
        return [], None
    # Records beyond the database's are set aside only from a trail of its own: the last record it keeps must be
    # the database's copy. Another account's trail (or one written over) is refused as found, nothing cut.
    seq = _seq_of(kept) if kept is not None else None
    if kept is not None and seq is not None:
        held = dict((await events_after(seq - 1))[:1])
        if seq in held and held[seq] != kept:
            raise _not_the_databases(path, seq)
    found.reverse()
    db_last = seq if seq is not None else (_seq_of(found[0]) or 1) - 1  # all the trail's records are such
    _continued(path, db_last, found)
    if kept is None and db_last:  # none of the trail's records is the database's: its copy of its last one
        kept = dict((await events_after(db_last - 1))[:1]).get(db_last)
    _chained_on(path, db_last, kept, found)
    aside = path.with_name(f"{path.name}.uncommitted-after-{db_last}")
    with open(aside, "ab") as f:
        f.write(b"".join(line + b"\n" for line in found))
        f.flush()
        os.fsync(f.fileno())
    os.chmod(aside, 0o600)
    for p, cut in cuts:
        if p == path:
            os.ftruncate(fd, cut)
            os.fsync(fd)
        elif cut == 0:
            os.unlink(p)
        else:
            with open(p, "r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
    sync_dir(path.parent)
    return found, aside


def _continued(path: Path, db_last: int, found: list[bytes]) -> None:
    """Records after the database's last event (`db_last`) go on from its seq one by one: the store writes them in
    seq order, just before it would commit them, so that is all a kill leaves. One that does not (seq 99999 after
    the database's last, a gap among them) was written over the trail: refused as found, naming it."""
    before = db_last
    for line in found:
        seq = _seq_of(line)
        if seq != before + 1:
            which = ", the database's last event" if before == db_last else ""
            raise DamagedRecords(f"{path}: seq {seq} after seq {before}{which}: "
                                 "records a kill leaves after the database's last event go on from its seq one by "
                                 "one, so this line was written over the trail; it was left as it is: `ffe audit "
                                 "verify` names the damage")
        before = seq


def _chained_on(path: Path, db_last: int, kept: bytes | None, found: list[bytes]) -> None:
    """Records after the database's last event (`db_last`, whose record is `kept`) chain on from it one by one: the
    store chains each record onto the one before it as it writes them, so that is all a kill leaves. One whose
    `prev` does not (chain.follows) was written over the trail: refused as found, naming it, as `ffe audit verify`
    and `ffe doctor` call it."""
    before, before_seq = kept, db_last
    for line in found:
        if not follows(line, before):
            which = ", the database's last event" if before is kept else ""
            raise DamagedRecords(f"{path}: seq {_seq_of(line)} does not chain on from seq {before_seq}{which} (its "
                                 "prev hash is not that record's hash): records a kill leaves after the database's "
                                 "last event chain on from it one by one, so this line was inserted or edited; it "
                                 "was left as it is: `ffe audit verify` names the damage")
        before, before_seq = line, _seq_of(line) or before_seq + 1


async def _uncommitted_in(fd: int, events_after: Callable[[int], Awaitable[list[tuple[int, bytes]]]],
                          found: list[bytes]) -> tuple[int | None, bytes | None]:
    """A file's last records the database never committed, last first, added to `found`: where to cut the file
    (None: nowhere), and the record before them, which the database holds (None: all its records are such)."""
    cut: int | None = None
    for offset, line in _lines_backwards(fd):
        seq = _seq_of(line)
        if seq is None or await events_after(seq - 1):  # the database holds it or a later one
            return cut, line
        found.append(line)
        cut = offset
    return cut, None


def set_aside_summary(records: list[bytes], file: Path | None) -> dict[str, Any] | None:
    """What records set aside as never committed hold (ahead.Ahead: how many, their fills, orders' updates and run
    records, the time of the first and the last) and the file they are in. None for none."""
    if not records or file is None:
        return None
    ahead = Ahead()
    for line in records:
        ahead.add(line)
    return {**ahead.as_dict(), "file": str(file)}


def halt_among(states: Iterable[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, by) of the HALTED `engine_state` records (in seq order) end in, or None: what a restore keeps of the
    records it moves aside that the database it replaces never held. One the operator re-armed over since (a later
    state that is not HALTED) is not kept."""
    halt = None
    for rec in states:
        halt = (str(rec.get("reason", "")), str(rec.get("by", ""))) if rec.get("state") == "HALTED" else None
    return halt


async def _check_last_records(fd: int, path: Path,
                              events_after: Callable[[int], Awaitable[list[tuple[int, bytes]]]]) -> Path | None:
    """The file's last two records must be the database's copies of them, in order: new records chained onto a
    line edited or written over would make the trail verify as intact from then on, the edit hidden for good. Such
    a trail is refused as found (`ffe doctor` names the line that differs). A last record that is the database's own
    but out of its place (repeated, or after a gap: written while the records before it were not) is set aside in
    `audit.jsonl.out-of-order-after-SEQ`, as often as needed; the records from the gap on are then appended from
    the database. Returns that side file, if any."""
    aside: Path | None = None
    while True:
        last: list[tuple[int, bytes]] = []
        for offset, line in _lines_backwards(fd):
            last.append((offset, line))
            if len(last) == 2:
                break
        seqs = [_seq_of(line) for _, line in last]
        if not last or seqs[0] is None:
            return aside
        end = seqs[0]
        held = dict((await events_after(end - len(last)))[:len(last)])
        for seq, (_, line) in zip(seqs, last):
            if seq is not None and seq in held and held[seq] != line:
                raise _not_the_databases(path, seq)
        if len(last) < 2 or seqs[1] is None or seqs[1] == end - 1:
            return aside
        if end not in held and end > seqs[1]:
            return aside  # past the database's records: never committed, set aside before
        offset, line = last[0]
        aside = path.with_name(f"{path.name}.out-of-order-after-{seqs[1]}")
        with open(aside, "ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(aside, 0o600)
        os.ftruncate(fd, offset)
        os.fsync(fd)


def _not_the_databases(path: Path, seq: int) -> DamagedRecords:
    """The refusal of a trail whose record of `seq` differs from the database's copy: nothing in it is changed."""
    return DamagedRecords(f"{path}: the record of seq {seq} is not the database's copy of it (edited, or written "
                          "over); it was left as it is: `ffe doctor` names the line that differs")


def _lines_backwards(fd: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of a file's whole lines, last first (the file ends in a newline, or is empty)."""
    pos = os.fstat(fd).st_size
    buf = b""
    block = 1 << 16
    while pos > 0 or buf:
        if pos > 0:
            start = max(0, pos - block)
            buf = os.pread(fd, pos - start, start) + buf
            pos = start
        while True:
            nl = buf.rfind(b"\n", 0, len(buf) - 1)
            if nl < 0:
                break
            yield pos + nl + 1, buf[nl + 1:-1]
            buf = buf[:nl + 1]
        if pos == 0:
            if buf:
                yield 0, buf[:-1]
            return


def _last_record(fd: int) -> tuple[int, bytes | None]:
    for _offset, line in _lines_backwards(fd):
        seq = _seq_of(line)
        if seq is not None:
            return seq, line
        break
    return 0, None


def _check_head(fd: int, path: Path) -> None:
    """The file's first record must follow the last rotated file's (or be seq 1): a trail whose first records are
    missing (its older files moved away, or the file emptied under the running engine by a rotation outside ffe,
    which appended on) is refused as found, as `ffe audit verify` would find it. Moved away, the file is written
    again from the database's copies of the records."""
    head = os.pread(fd, 1 << 16, 0)
    end = head.find(b"\n")
    seq = _seq_of(head[:end]) if end >= 0 else None
    if seq is None:  # empty, or a first line that is no record: `ffe audit verify` names what is wrong
        return
    expected = _last_rotated(path)[0] + 1
    if seq != expected:
        raise DamagedRecords(f"{path}: the trail starts at seq {seq}, not {expected}: its first records are missing "
                           "(its older files moved away, or the file emptied by a rotation outside ffe); it was "
                           "left as it is: put them back, or move this file away and start again, and the engine "
                           "writes the trail again from the database (ffe rotates it itself: [audit] rotate_mb, "
                           "rotate_daily)")


def _last_rotated(path: Path) -> tuple[int, bytes | None]:
    rotated = rotated_files(path)
    line = last_line(rotated[-1]) if rotated else None
    seq = _seq_of(line) if line is not None else None
    return (seq, line) if seq is not None else (0, None)


async def _set_aside_torn_tail(fd: int, path: Path, events_after: Callable[[int], Awaitable[list[tuple[int, bytes]]]]
                               ) -> tuple[int, bytes | None, bytes, Path | None]:
    """The seq and bytes of the last whole record, and the torn bytes after it (moved to a side file, and cut
    off). What a kill or a power loss leaves there is chain.TornTail's to judge, as `ffe audit verify` and `ffe
    doctor` do: anything else was written over the trail, which is refused as found (set aside, the trail would
    verify as intact). So is a cut record where the database holds the record after the last whole one and it is
    not the start of its copy (`_not_cut_short`)."""
    size = os.fstat(fd).st_size
    block = 1 << 16
    while True:
        start = max(0, size - block)
        tail = os.pread(fd, size - start, start)
        # The last whole record is the last line that ends in a newline and reads as a record.
        end = tail.rfind(b"\n")
        found = TornTail()
        found.add(tail[end + 1:], closed=False)  # the unfinished bytes after the last newline
        while end >= 0:
            begin = tail.rfind(b"\n", 0, end) + 1
            if begin == 0 and start > 0:
                break  # this line starts before the block: read a larger one
            line = tail[begin:end]
            seq = _seq_of(line)
            if seq is not None:
                await _not_cut_short(path, seq, found, events_after)
                return _cut(fd, path, start + end + 1, tail[end + 1:], seq, line)
            if not found.add(line, closed=True):
                raise DamagedRecords(f"{path}: the line at byte {start + begin} is no record of the trail, "
                                     "and a kill leaves no whole line after the last one (written over); it "
                                     "was left as it is: `ffe audit verify` names the damage")
            end = begin - 1
        else:
            if start == 0:
                await _not_cut_short(path, 0, found, events_after)
                return _cut(fd, path, 0, tail, 0, None)
        block *= 4


async def _not_cut_short(path: Path, seq: int, found: TornTail,
                         events_after: Callable[[int], Awaitable[list[tuple[int, bytes]]]]) -> None:
    """What looks like a record cut short after the record of `seq`, when the database holds the record after it:
    one that is not the start of its copy (TornTail.edits) is that record edited: refused as found, naming its
    seq."""
    if not found.cut:
        return
    held = (await events_after(seq))[:1]
    if held and held[0][0] == seq + 1 and found.edits(held[0][1]):
        raise _not_the_databases(path, seq + 1)


def _seq_of(line: bytes) -> int | None:
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None


def _cut(fd: int, path: Path, keep: int, torn: bytes, seq: int,
         line: bytes | None) -> tuple[int, bytes | None, bytes, Path | None]:
    if not torn:
        return seq, line, b"", None
    aside = path.with_name(f"{path.name}.torn-after-{seq}")
    with open(aside, "ab") as f:
        f.write(torn)
        f.flush()
        os.fsync(f.fileno())
    os.ftruncate(fd, keep)
    return seq, line, torn, aside


def setup_logging(level: str = "INFO", *, secrets: Iterable[str] = (), stream: Any = None,
                  to_bus: Callable[[str, str], None] | None = None) -> Redactor:
    """The engine's log lines (logs.py), and stdlib logging's (ccxt and aiohttp use it), at `level` and above to
    `stream` (stderr by default), with every secret redacted. `to_bus(level, message)` receives each line's
    event and fields, for the console's log pane."""
    redactor = Redactor(secrets)
    threshold = getattr(logging, level.upper(), logging.INFO)
    out = stream if stream is not None else sys.stderr

    def write(method: str, fields: dict[str, Any]) -> None:
        fields = redactor.value(fields)
        if to_bus is not None:
            extras = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("event", "level", "timestamp"))
            to_bus(method, f"{fields.get('event', '')} {extras}".strip())
        logs.write_line(out, fields)

    logs.set_up(threshold, write)
    # Third-party libraries log through stdlib logging: route them through the same redaction.
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_ffe", False):
            root.removeHandler(h)
    handler = _StdlibBridge(redactor)
    handler._ffe = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    return redactor


class _StdlibBridge(logging.Handler):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.redactor.text(record.getMessage())
            logs.get_logger(record.name).log(record.levelno, msg)
        except Exception:  # logging must never take the engine down
            pass


def has_records(path: Path) -> bool:
    """Whether an audit trail holds anything (missing or empty files do not): its current file or a rotated one."""
    for p in trail_files(Path(path)):
        try:
            if os.stat(p).st_size > 0:
                return True
        except FileNotFoundError:
            continue
    return False


def read_audit(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                out.append(json.loads(raw))
    return out
