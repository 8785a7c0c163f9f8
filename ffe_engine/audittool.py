"""Read-side commands over the audit trail and the database.

- `ffe audit tail`: the last records of logs/audit.jsonl (and of its rotated files before it), filtered by event, one
  line each (or the raw JSON lines), and optionally following the file as it grows, is truncated or is replaced.
- `ffe audit show DECISION_ID`: the whole story of one decision from the database.
- `ffe audit verify`: the audit trail's hash chain, across its rotated files, and the chain head the database
  stores (chain.py).
- `ffe report providers` and `ffe report trades`: what the feedback loop has learned, and the closed trades.

These only read. The database is opened read-only (SQLite WAL lets them run next to a live engine) and the audit
file is never written. Only complete lines of the audit file are ever shown: a line still being written is
waited for, never printed in part.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, Iterator

import orjson
import zstandard

from . import ahead, fmt, present, reach
from .audit import has_records
from . import records as compact
from .chain import (ChainHead, VerifyResult, cut_record, last_line, packed, rotated_files, rotated_seqs, trail_files,
                    verify_trail)
from .control import starting_engine
from .errors import ArgumentError, DamagedDatabase, StorageError, UsageError, damaged_database, unreadable_database
from .events import EVENT_TYPES
from .store import (BACKTEST_ADAPTIVE_KEY, BACKTEST_RECORDS_KEY, EventHead, Records, check_files, events_end,
                    open_read_only, peek_foreign, refuse_damaged_wal, refuse_foreign, refuse_newer_schema,
                    refuse_headerless, refuse_not_a_file)

BLOCK = 64 * 1024  # bytes read at a time when walking the audit file backwards
POLL_S = 0.2  # how often `audit tail -f` looks at the file
READ_MAX = 1 << 20  # bytes taken at a time when following, so a burst never has to fit in memory at once


# ====================================================================================================== formatting
def format_record(rec: dict[str, Any]) -> str:
    """One audit record as one line: its time as recorded (ISO 8601 UTC), its seq, then the event in the words
    the console's log uses."""
    ts = rec.get("ts") if isinstance(rec.get("ts"), str) else "-"
    seq = rec.get("seq")
    return f"{ts} {seq if seq is not None else '-':>7} {present.line(str(rec.get('event')), rec)}"


# ====================================================================================================== audit tail
# The file is written before the database commits the same records (docs/storage.md), so its last lines may be
# records the database has not committed yet: being written, or written just before a kill, never to be committed
# (the next start sets those aside and cuts the file back to the database's last event). What `tail` shows is what
# happened: with the database at hand, a record past its last event is held back until it is committed (with -f)
# or left out (without). Without a database to ask, records are shown as the file holds them.
class _Lines:
    """Parses audit lines and applies the event filter; bad lines are counted, each file's said on stderr once
    (say_skipped), never printed: a file that is no trail (a report put in its place) would otherwise say every one
    of its thousands of lines."""

    def __init__(self, path: Path, events: set[str] | None) -> None:
        self.path = path
        self.events = events
        self.records = 0  # lines read that are records of the trail
        self.skipped: dict[Path, tuple[int, int]] = {}  # file -> (lines skipped, the first's offset), not said yet
        self.skipped_ever = 0

    def parse(self, line: bytes, offset: int, where: Path | None = None) -> dict[str, Any] | None:
        try:
            rec = orjson.loads(line)
            # A record of the trail: a JSON object with its seq and its event (a report is a JSON object too).
            if not (isinstance(rec, dict) and isinstance(rec.get("seq"), int) and isinstance(rec.get("event"), str)):
                raise ValueError("no record")
        except ValueError:
            path = where or self.path
            count, first = self.skipped.get(path, (0, offset))
            self.skipped[path] = (count + 1, min(first, offset))
            self.skipped_ever += 1
            return None
        self.records += 1
        return rec

    def say_skipped(self) -> None:
        """One warning per file for the lines skipped since the last one said."""
        for path, (count, first) in self.skipped.items():
            said = (f"skipped a line that is no audit record at byte {first}" if count == 1 else
                    f"skipped {count} lines that are no audit record (the first at byte {first})")
            print(fmt.printable(f"ffe: warning: {path}: {said}"), file=sys.stderr)
        self.skipped.clear()

    def refuse_no_record(self) -> None:
        """UsageError when every line read was skipped: the file is no audit trail (is --log-dir right?)."""
        if self.records == 0 and self.skipped_ever:
            lines = f"{self.skipped_ever} line{'s' if self.skipped_ever > 1 else ''}"
            raise UsageError(f"{self.path}: holds no audit record ({lines}, none a record of the trail): is "
                             "--log-dir right?")

    def wanted(self, rec: dict[str, Any]) -> bool:
        return self.events is None or rec.get("event") in self.events


def _seq(rec: dict[str, Any] | None) -> int | None:
    seq = rec.get("seq") if rec is not None else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _beyond(rec: dict[str, Any] | None, committed: int | None) -> bool:
    """Whether the record is past the database's last event (never, without a database to ask)."""
    seq = _seq(rec)
    return committed is not None and seq is not None and seq > committed


def _complete_end(f: BinaryIO, size: int) -> int:
    """Offset just past the last newline in the first `size` bytes (0 if none): a partial line is never read."""
    pos = size
    while pos > 0:
        start = max(0, pos - BLOCK)
        f.seek(start)
        chunk = f.read(pos - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return int(start + i + 1)
        pos = start
    return 0


def _lines_before(f: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of the non-blank lines before `end` (a line's end), last first, reading block by block."""
    pos = end
    carry = b""
    while pos > 0:
        start = max(0, pos - BLOCK)
        f.seek(start)
        chunk = f.read(pos - start) + carry
        parts = chunk.split(b"\n")
        # The first part may be the end of a line that starts in an earlier block: keep it for the next read.
        carry = parts[0] if start > 0 else b""
        first = 1 if start > 0 else 0
        offset = start + len(chunk)
        for i in range(len(parts) - 1, first - 1, -1):
            part = parts[i]
            offset -= len(part) + (1 if i < len(parts) - 1 else 0)
            if part.strip():
                yield offset, part
        pos = start


def _committed_end(f: BinaryIO, end: int, committed: int | None) -> tuple[int, int]:
    """Where the records the database has committed end in the first `end` bytes (a line's end), and how many
    records follow that it has not."""
    if committed is None:
        return end, 0
    past = 0
    for offset, line in _lines_before(f, end):
        rec = _loads(line)  # a bad line is said when it is shown (or not)
        if rec is None or not _beyond(rec, committed):
            return offset + len(line) + 1, past
        end, past = offset, past + 1
    return end, past


def last_records(f: BinaryIO, end: int, n: int, lines: _Lines,
                 where: Path | None = None) -> list[tuple[bytes, dict[str, Any]]]:
    """The last `n` accepted lines before `end`, oldest first, reading backwards block by block. `where`: the file
    `f` is, when not lines.path (a rotated file)."""
    found: list[tuple[bytes, dict[str, Any]]] = []
    if n <= 0:
        return found
    for offset, line in _lines_before(f, end):
        rec = lines.parse(line, offset, where)
        if rec is not None and lines.wanted(rec):
            found.append((line, rec))
            if len(found) == n:
                break
    found.reverse()
    return found


class _Out:
    """stdout as bytes; flushes each line when following."""

    def __init__(self, as_json: bool, flush_each: bool) -> None:
        self.buf = sys.stdout.buffer
        self.as_json = as_json
        self.flush_each = flush_each

    def emit(self, line: bytes, rec: dict[str, Any]) -> None:
        text = line if self.as_json else format_record(rec).encode("utf-8", "replace")
        self.buf.write(text + b"\n")
        if self.flush_each:
            self.buf.flush()


def parse_events(text: str | None) -> set[str] | None:
    """`--event a,b`: the names, each a known event (a typo would otherwise match nothing, silently)."""
    if text is None:
        return None
    names = {x.strip() for x in text.split(",") if x.strip()}
    if not names:
        raise ArgumentError("--event needs at least one event name, e.g. --event decision,order")
    recorded = sorted(name for name, cls in EVENT_TYPES.items() if cls.audit)  # a console-only event never is
    unknown = sorted(names - set(recorded))
    if unknown:
        raise ArgumentError(f"--event: unknown event {', '.join(unknown)} (known: {', '.join(recorded)})")
    return names


def tail(path: Path, n: int, events: set[str] | None, as_json: bool, follow: bool, db_path: Path | None = None) -> int:
    """`ffe audit tail`: the last `n` records (of the `events` named), then, with `follow`, each record as it comes.
    `db_path`: the database whose committed records are the ones shown (module comment above)."""
    if db_path is not None and (not trail_files(path) and not packed(path).exists() or _in_runs(db_path)):
        _no_trail_kept(db_path)  # (a trail beside a run's database is another's: the account's)
    lines = _Lines(path, events)
    out = _Out(as_json, flush_each=follow)
    head = EventHead(db_path) if db_path is not None else None
    try:
        return _tail(path, n, lines, out, follow, head)
    finally:
        if head is not None:
            head.close()


def _in_runs(db_path: Path) -> bool:
    """Whether the database is in a backtest run's data directory (data/backtests/RUN), where the trail beside it
    may be the account's."""
    return Path(db_path).parent.parent.name == "backtests"


def _no_trail_kept(db_path: Path, must_read: bool = False) -> None:
    """UsageError for a backtest run whose record level keeps no audit trail (trades, summary): said as such.
    `must_read`: the database is part of what the command checks (verify), so one it cannot read is said as it is
    with a trail beside it (exit 2; a damaged record exit 1); otherwise (tail) the command goes on without it and
    says so itself."""
    if not Path(db_path).is_file():
        return
    try:
        level = _records_level(db_path)
    except (StorageError, UsageError):
        if must_read:
            raise
        return
    if level in ("trades", "summary"):
        raise UsageError(f"{db_path}: a backtest run of {level} records: such runs keep no audit trail (only full "
                         "records do); its orders, fills and trades are in its database (`ffe report`, `ffe audit "
                         "show` of an order)")


def _records_level(db_path: Path) -> Any:
    """The backtest record level the database keeps (None for an engine's): a database that cannot be opened is
    UsageError, a damaged record in it DamagedDatabase, as `ffe audit verify` says them."""
    try:
        records = Records(db_path)
    except StorageError as exc:
        raise UsageError(str(exc)) from None
    try:
        return records.kv(BACKTEST_RECORDS_KEY)
    except DamagedDatabase:
        raise
    except StorageError as exc:
        raise UsageError(str(exc)) from None
    finally:
        records.close()


RECORD_START = b'{"ts":"'  # how every record of the trail begins (events.py writes its time first)


def _starts_a_record(path: Path) -> bool:
    """Whether the file starts as a record of the trail does (its time first): a record cut short by a kill."""
    try:
        with open(path, "rb") as f:
            return f.read(len(RECORD_START)) == RECORD_START
    except OSError:
        return False


def _tail(path: Path, n: int, lines: _Lines, out: _Out, follow: bool, head: EventHead | None) -> int:
    reach.is_a_file(path)  # a FIFO or a device there is one line, never waited on
    if not path.exists() and not rotated_files(path) and packed(path).exists():
        if follow:
            raise UsageError(f"{packed(path)}: a backtest run's compressed audit file cannot be followed: leave out "
                             "-f to print its records")
        return _tail_packed(packed(path), n, lines, out, head)
    try:
        f: BinaryIO | None = open(path, "rb")
    except FileNotFoundError:
        f = None
    except OSError as exc:
        raise UsageError(f"cannot read the audit file {path}: {exc.strerror}") from None
    if f is None and not rotated_files(path):
        if not follow:
            raise UsageError(f"no audit file at {path} (is --log-dir right?)")
        print(f"ffe: waiting for {path} to appear", file=sys.stderr, flush=True)
        return _follow(path, None, 0, None, lines, out, head)
    end = 0
    try:
        if f is not None:
            size = os.fstat(f.fileno()).st_size
            end = _complete_end(f, size)
            if end == 0 and size and not follow:
                _no_whole_line(f, size, lines)
        # The database is asked after the file is read: the file holds every record it has committed by then.
        committed = head.last_seq() if head is not None else None
        if head is not None and committed is None and head.path.exists():
            print(f"ffe: warning: cannot read the database {head.path}: the records are shown as the audit file "
                  "holds them, with any it never committed", file=sys.stderr)
        past = 0
        if f is not None:
            end, past = _committed_end(f, end, committed)
        shown, past_rotated = _last_across(path, f, end, n, lines, committed) if n > 0 else ([], 0)
        lines.refuse_no_record()
        lines.say_skipped()
        for line, rec in shown:
            out.emit(line, rec)
        out.buf.flush()
        past += past_rotated
        if past and not follow:
            print(f"ffe: {past} record{'s' if past > 1 else ''} after seq {committed} "
                  f"{'are' if past > 1 else 'is'} not in the database (being written, or written just before the "
                  "engine was killed and never committed): not shown", file=sys.stderr)
    except BaseException:
        if f is not None:
            f.close()
        raise
    if not follow:
        if f is not None:
            f.close()
        return 0
    return _follow(path, f, end, _last_seq_before(path, f, end), lines, out, head)


def _no_whole_line(f: BinaryIO, size: int, lines: _Lines) -> None:
    """A file with no whole line: an unfinished record (a kill cut the first one short) is passed over; anything
    else (a report written without its last newline, text) is counted as a line that is no record."""
    f.seek(0)
    data = f.read(min(size, READ_MAX))
    if cut_record(data):  # the start of a record, cut short, as a start's repair takes it
        return
    lines.parse(data, 0)


def _tail_packed(path: Path, n: int, lines: _Lines, out: _Out, head: EventHead | None) -> int:
    """The last `n` records of a backtest run's compressed audit file, read through once (it is read forwards
    only), of those its database committed."""
    committed = head.last_seq() if head is not None else None
    shown: collections.deque[tuple[bytes, dict[str, Any]]] = collections.deque(maxlen=max(n, 0))
    past = offset = 0
    try:
        with open(path, "rb") as raw:
            reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
            for line in reader:
                start, offset = offset, offset + len(line)
                if not line.endswith(b"\n"):  # a run cut short mid-frame: its last whole line is where it ends
                    break
                rec = lines.parse(line[:-1], start) if line.strip() else None
                if rec is None:
                    continue
                if _beyond(rec, committed):
                    past += 1
                elif lines.wanted(rec) and n > 0:
                    shown.append((line[:-1], rec))
    except OSError as exc:
        raise UsageError(f"cannot read the audit file {path}: {exc.strerror}") from None
    except zstandard.ZstdError as exc:  # a run killed mid-frame: its whole frames before are its records
        print(f"ffe: warning: {path}: read up to a frame that is cut off or damaged ({exc})", file=sys.stderr)
    lines.refuse_no_record()
    lines.say_skipped()
    for line, rec in shown:
        out.emit(line, rec)
    out.buf.flush()
    if past:
        print(f"ffe: {past} record{'s' if past > 1 else ''} after seq {committed} {'are' if past > 1 else 'is'} not "
              "in the database (the run was cut short before it committed them): not shown", file=sys.stderr)
    return 0


def _last_across(path: Path, f: BinaryIO | None, end: int, n: int, lines: _Lines,
                 committed: int | None) -> tuple[list[tuple[bytes, dict[str, Any]]], int]:
    """The last `n` accepted records of the trail that the database has committed (`committed`: its last seq;
    None: every record), the current file's, then, while more are wanted, those of the rotated files, newest
    first (seq runs on across them); and how many records past `committed` the rotated files hold (a rotation can
    fall among them). A file rotated since `f` was opened is the same file as `f`, and is not read twice."""
    found = last_records(f, end, n, lines) if f is not None else []
    past = 0
    seen = set()
    if f is not None:
        st = os.fstat(f.fileno())
        seen.add((st.st_dev, st.st_ino))
    for p in reversed(rotated_files(path)):
        if len(found) >= n:
            break
        try:
            g = open(p, "rb")
        except FileNotFoundError:
            continue
        with g:
            st = os.fstat(g.fileno())
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            g_end, g_past = _committed_end(g, _complete_end(g, st.st_size), committed)
            past += g_past
            older = last_records(g, g_end, n - len(found), lines, where=p)
        found = older + found
    return found, past


def _whole_lines(f: BinaryIO, pos: int, size: int) -> bytes:
    """The whole lines from `pos` on (up to READ_MAX bytes of them, or one longer line), without the bytes of an
    unfinished last line."""
    f.seek(pos)
    data = b""
    while pos + len(data) < size:
        data += f.read(min(size - pos - len(data), READ_MAX))
        cut = data.rfind(b"\n")
        if cut >= 0:
            return data[: cut + 1]
    return b""


def _follow(path: Path, f: BinaryIO | None, pos: int, last: int | None, lines: _Lines, out: _Out,
            head: EventHead | None) -> int:
    """Print the records appended to the trail from `pos` in `f` (the current file; None: none yet) on, `last`
    being the seq of the record just before, until SIGINT or SIGTERM.

    Like `tail -F`, in seq order across files: a file finished (rotated) is read to its end, then the trail goes
    on in the file that holds the next seq: the next rotated one (several rotations can fall between two looks),
    else the current one; a file created later is read from its start; a file cut back below what was shown (by
    an outside tool) from its new start. An unfinished last line is waited for. `pos` only ever passes records
    that were shown (or filtered out), so a record held back for its commit is read again at the next look: if
    the engine was killed before committing it, its next start cuts the file back to exactly there and writes on
    under the same seqs. A record read before its commit is shown only as the database committed it: that start
    can fall between the read and the look at the database.
    """
    stop = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    committed = head.last_seq() if head is not None else None
    try:
        while not stop:
            if f is None:
                try:
                    f = open(_next_file(path, last), "rb")
                except FileNotFoundError:
                    time.sleep(POLL_S)
                    continue
                if not _same_file(_next_file(path, last), f):
                    # A rotation fell between choosing the file and opening it: the name now holds a later file,
                    # and the one chosen has its rotated name. Chosen again, with the rotation in the listing.
                    f.close()
                    f = None
                    continue
                pos = 0
            size = os.fstat(f.fileno()).st_size
            if size < pos:  # cut back below what was shown (truncated in place by an outside tool)
                pos = 0
            moved, asked, held, changed = False, False, None, False
            read_at = committed
            data = _whole_lines(f, pos, size) if size > pos else b""
            for part in data.split(b"\n")[:-1]:
                rec = lines.parse(part, pos) if part.strip() else None
                if head is not None and rec is not None and not asked and (committed is None
                                                                           or _beyond(rec, committed)):
                    committed, asked = head.last_seq(), True
                if _beyond(rec, committed):
                    held = rec  # read again at the next look
                    break
                if head is not None and _beyond(rec, read_at) and not _as_committed(head, rec, part):
                    changed = True
                    break
                if rec is not None and lines.wanted(rec):
                    out.emit(part, rec)
                last = _seq(rec) if _seq(rec) is not None else last
                pos += len(part) + 1
                moved = True
            lines.say_skipped()  # a burst of lines that are no record: said once
            if changed:
                # Read before its commit, and not what the database committed: a start set the line aside in
                # between (the engine was killed before committing it) and wrote its own record under its seq. The
                # file is read again from here, after the commit; a file removed whole held only such lines.
                if os.fstat(f.fileno()).st_nlink == 0:
                    f.close()
                    f = None
                continue
            if moved:
                continue
            # A finished file (rotated, or deleted and created again) is left once it has nothing more to give. A
            # record held back in it waits there for its commit: a rotation can fall between a record's write and
            # its commit. If the engine was killed first, its next start cuts the file back to that record (nothing
            # more to give), or removes the file when none of its records was ever committed.
            if (_replaced(path, f) and (held is None or os.fstat(f.fileno()).st_nlink == 0)
                    and not _same_file(_next_file(path, last), f)):
                f.close()
                f = None
                continue
            time.sleep(POLL_S)
    finally:
        if f is not None:
            f.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0


def _as_committed(head: EventHead, rec: dict[str, Any] | None, line: bytes) -> bool:
    """Whether the line is the database's copy of its record (or there is none to compare it with)."""
    seq = _seq(rec)
    held = head.record(seq) if seq is not None else None
    return held is None or held == line


def _next_file(path: Path, last: int | None) -> Path:
    """The file that holds the record after seq `last` (None: the trail's first): the oldest rotated file that
    starts after it, else the current file."""
    for first, p in rotated_seqs(path):
        if last is None or first > last:
            return p
    return path


def _same_file(p: Path, f: BinaryIO) -> bool:
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)


def _last_seq_before(path: Path, f: BinaryIO | None, end: int) -> int | None:
    """The seq of the last record before `end` in the current file, or, when it holds none, the last rotated
    file's last."""
    if f is not None:
        for _, line in _lines_before(f, end):
            seq = _seq(_loads(line))
            if seq is not None:
                return seq
    rotated = rotated_files(path)
    final = last_line(rotated[-1]) if rotated else None
    return _seq(_loads(final)) if final is not None else None


def _loads(line: bytes) -> dict[str, Any] | None:
    try:
        rec = orjson.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _replaced(path: Path, f: BinaryIO) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False  # moved away and not recreated yet: keep reading the old one
    mine = os.fstat(f.fileno())
    return (st.st_ino, st.st_dev) != (mine.st_ino, mine.st_dev)


# ====================================================================================================== audit verify
def verify(path: Path, db_path: Path, as_json: bool) -> int:
    """`ffe audit verify`: 0 when the trail is intact, 1 when not (the first bad seq and why), 2 when there is no
    trail to check or the database cannot be read."""
    path = Path(path)
    reach.is_a_file(path)  # a FIFO or a device there is one line, never waited on
    if not trail_files(path) or _in_runs(db_path):  # a run that keeps none, whatever trail is beside it
        _no_trail_kept(db_path, must_read=not trail_files(path))
    if not trail_files(path):
        raise UsageError(f"no audit trail at {path} (is --log-dir right?)")
    head: ChainHead | None = None
    checked_db = Path(db_path).is_file()
    unsettled: str | None = None  # a loss a start set aside, not dealt with yet (ahead.unsettled)
    gap: str | None = None  # a committed event missing from among the events (Records.events_gap)
    run = False  # a backtest run's records, never started again
    if not checked_db:
        try:
            result = verify_trail(path.parent, None, name=path.name)
        except StorageError as exc:
            raise UsageError(str(exc)) from None
    else:  # the head first: a running engine writes the trail before it commits the head
        try:
            # Before it is opened: a lost one is said so, and (no engine writing it) a WAL SQLite would not read whole.
            check_files(db_path, new_ok=not has_records(path), whole_wal=starting_engine(db_path.parent) is None)
            records = Records(db_path)
        except StorageError as exc:
            raise UsageError(str(exc)) from None
        try:
            head = records.chain_head()
            lost = records.head_lost() if head is None else None
            if lost is not None:
                raise damaged_database(db_path, lost)
            result = verify_trail(path.parent, head, name=path.name, committed=records.event_seqs(),
                                  head_record=records.record_of(head.seq) if head is not None else None)
            if result.uncommitted is not None:  # an engine beside it may have committed since the read
                result.uncommitted.ahead.committed_since(events_end(db_path), result.uncommitted.db_last)
            unsettled = ahead.unsettled(path, records.kv(ahead.CHECKED_KEY), records.engine_state_row())
            gap = records.events_gap()
            run = records.kv(BACKTEST_RECORDS_KEY) is not None
        except DamagedDatabase:  # a record that is not what ffe wrote: as the doctor says it, exit 1
            raise
        except StorageError as exc:
            raise UsageError(str(exc)) from None
        finally:
            records.close()
    if result.ok and result.records == 0 and result.torn_bytes and not _starts_a_record(path):
        # One unfinished line that is no record cut short (a report written without its last newline): no trail.
        raise UsageError(f"{path}: holds no audit record (1 line, none a record of the trail): is --log-dir right?")
    # Records after the database's last event that are more than the moment before a kill: the database lost
    # committed records (as the start and `ffe doctor` judge them), whatever the chain says.
    lost = result.uncommitted.lost_records() if result.ok and result.uncommitted is not None else None
    said = f"database BEHIND the audit trail: {db_path}: {lost}" if lost is not None else None
    if result.ok and lost is None and unsettled is not None:  # the trail is whole; the books lack what was lost
        lost = unsettled
        said = f"the database lost committed records: {db_path}: {unsettled}"
    if result.ok and lost is None and gap is not None:  # a row deleted from among the events the trail holds
        lost = gap
        said = f"the database lost committed records: {db_path}: {gap}"
    if as_json:
        print(json.dumps(_verify_json(result, db_path if checked_db else None, lost)))
    elif said is not None:
        print(said)
    else:
        print(_verify_text(result, db_path if checked_db else None, run))
    return 0 if result.ok and lost is None else 1


def _verify_json(r: VerifyResult, db_path: Path | None, lost: str | None) -> dict[str, Any]:
    u = r.uncommitted
    return {"ok": r.ok and lost is None, "first_bad_seq": r.first_bad_seq, "reason": lost or r.reason,
            "records": r.records, "first_seq": r.first_seq, "last_seq": r.last_seq, "files": r.files,
            "database": str(db_path or ""), "head": {"seq": r.head.seq, "hash": r.head.hash} if r.head else None,
            "unchained": r.unchained, "torn_bytes": r.torn_bytes,
            "uncommitted": {"inside": u.inside, "after": u.after, "ahead": u.ahead.as_dict(),
                            "lost": u.ahead.lost} if u else None}


def _verify_text(r: VerifyResult, db_path: Path | None, run: bool) -> str:
    """The verdict, a line each (each escaped: a reason or a path names files, of a directory of any name)."""
    return "\n".join(map(fmt.printable, _verify_lines(r, db_path, run)))


def _verify_lines(r: VerifyResult, db_path: Path | None, run: bool) -> list[str]:
    files = f"{len(r.files)} file{'s' if len(r.files) != 1 else ''}"
    if not r.ok:
        return [f"audit trail NOT intact: first bad seq {r.first_bad_seq}: {r.reason}"]
    out = [f"audit trail intact: {r.records} records, seq {r.first_seq}..{r.last_seq} in {files}"]
    if db_path is None:
        out.append("no database found: the chain head was not checked (a trail cut short would not be seen)")
    elif r.head is None:
        out.append(f"{db_path} stores no chain head yet: the trail's end was not checked against it")
    elif r.torn_head:
        out.append(f"chain head in {db_path}: seq {r.head.seq}: the trail's last line is the start of seq "
                   f"{r.head.seq}, which the database holds, torn (a power loss): the next start sets it aside and "
                   f"appends seq {r.head.seq} from the database")
    else:
        out.append(f"chain head in {db_path}: seq {r.head.seq}, matches")
    if r.unchained:
        out.append(f"note: the first {r.unchained} records were written before the trail was chained: their order "
                   "is checked, their content only as far as the first chained record covers it")
    if r.torn_bytes and r.torn_blank:
        out.append(f"note: blank bytes after the last record ({r.torn_bytes} bytes, a crash or a power loss) are set "
                   "aside at the next start")
    elif r.torn_bytes:
        out.append(f"note: an unfinished last line ({r.torn_bytes} bytes, a crash mid-write) is set aside at the "
                   "next start")
    if r.uncommitted is not None:
        out.extend(r.uncommitted.notes(run))
    return out


# ====================================================================================================== database
def open_db(path: Path) -> sqlite3.Connection:
    """The database, read-only. Works next to a running engine (WAL)."""
    path = Path(path)
    refuse_not_a_file(path)
    if not reach.is_file(path):
        raise UsageError(f"no database at {path} (is --data-dir right?)")
    refuse_headerless(path)
    peek_foreign(path)
    if starting_engine(path.parent) is None:  # beside a running engine its WAL is being written
        refuse_damaged_wal(path)  # read without its newest commits, the records would be said wrong
    try:
        conn = open_read_only(path)
    except sqlite3.DatabaseError as exc:  # damaged or unreadable records (exit 1), not a command line mistake
        raise unreadable_database(path, exc) from None
    try:
        refuse_foreign(path, conn)
        refuse_newer_schema(path, conn.execute("PRAGMA user_version").fetchone()[0])
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.DatabaseError):
            raise unreadable_database(path, exc) from None
        raise
    if not {"decisions", "orders", "trades", "votes"} <= names:
        conn.close()
        raise UsageError(f"{path} is not an ffe database (no decisions table)")
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """The database read-only (open_db) for a command's reads: damage SQLite meets while they read (a page whose
    content is not what SQLite wrote) is said in one line as damage, exit 1, never a traceback."""
    conn = open_db(path)
    try:
        yield conn
    except sqlite3.DatabaseError as exc:
        raise unreadable_database(path, exc) from None
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sql, params)]


def _json_blob(data: Any) -> dict[str, Any]:
    try:
        rec = json.loads(data)
    except (TypeError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _event_record(conn: sqlite3.Connection, data: Any) -> dict[str, Any]:
    """An events row's record, plain or compact (a backtest's: records.py). A damaged one reads as missing."""
    if compact.is_compact(data):
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (compact.DICTIONARY_KEY,)).fetchone()
        try:
            reader = compact.RecordReader(compact.dictionary_bytes(json.loads(row[0])) if row else None)
            data = reader.unpack(data)
        except (ValueError, TypeError, zstandard.ZstdError):
            return {}
    return _json_blob(data)


# ---------------------------------------------------------------------------------------------------- audit show
def _resolve_decision_id(conn: sqlite3.Connection, ident: str) -> str | None:
    """A decision id, or the decision behind an order id or an approval id. An order of no decision of its own (a
    flatten's) leads to the decision that opened the position it closed."""
    if conn.execute("SELECT 1 FROM decisions WHERE decision_id = ?", (ident,)).fetchone():
        return ident
    # A decision other records name, though the decisions table lacks it (records that keep none, such as a
    # backtest's trades level): found, so that its story says the records are incomplete.
    for sql in ("SELECT decision_id FROM orders WHERE client_order_id = ? OR decision_id = ?",
                "SELECT decision_id FROM approvals WHERE approval_id = ? OR decision_id = ?",
                "SELECT entry_decision_id FROM trades WHERE exit_client_order_id = ? OR entry_decision_id = ? "
                "ORDER BY id"):
        row = conn.execute(sql, (ident, ident)).fetchone()
        if row and row[0]:
            return str(row[0])
    return None


def decision_story(conn: sqlite3.Connection, ident: str) -> dict[str, Any] | None:
    """Everything recorded about one decision, as JSON-safe values; None when there is no such decision."""
    did = _resolve_decision_id(conn, ident)
    if did is None:
        return None
    row = conn.execute("SELECT * FROM decisions WHERE decision_id = ?", (did,)).fetchone()
    level = _backtest_records(conn) if row is None else None
    if level in ("trades", "summary"):
        return _kept_story(conn, did, level)
    if row is None:
        raise StorageError(f"{ident}: the records are incomplete: its decision {did} is not in the decisions table "
                           "(`ffe doctor` checks every record)")
    d = dict(row)
    rec: dict[str, Any] = {}
    if d.get("event_seq") is not None:
        row = conn.execute("SELECT data FROM events WHERE seq = ?", (d["event_seq"],)).fetchone()
        rec = _event_record(conn, row[0]) if row else {}

    # Votes: the decision record holds every vote (HOLDs too) with the weight applied and its latency; the votes
    # table is the fallback for a record that is missing (or written before records carried the latency).
    table_votes = _rows(conn, "SELECT provider, action, confidence, weight, failed, reason, latency_ms FROM votes "
                              "WHERE decision_id = ?", (did,))
    latency = {v["provider"]: v["latency_ms"] for v in table_votes if not v["failed"]}
    if rec.get("votes") is not None:
        votes = [{"provider": v.get("provider"), "action": v.get("action"), "confidence": v.get("confidence"),
                  "weight": v.get("weight"), "reason": v.get("reason"),
                  "latency_ms": v["latency_ms"] if "latency_ms" in v else latency.get(v.get("provider"))}
                 for v in rec["votes"]]
        failed = list(rec.get("failed") or [])
    else:
        votes = [{k: v[k] for k in ("provider", "action", "confidence", "weight", "reason", "latency_ms")}
                 for v in table_votes if not v["failed"]]
        failed = [v["provider"] for v in table_votes if v["failed"]]

    # Gates: the ones evaluated for this decision, then any checked later under its id (an exit refused, ...).
    gate_rows = _rows(conn, "SELECT client_order_id, position, code, value, limit_value, passed, detail, ts "
                            "FROM gate_results WHERE decision_id = ? ORDER BY rowid", (did,))
    own_ts = d["ts"] / 1000
    if rec.get("gates") is not None:
        gates = [{"code": g.get("code"), "value": g.get("value"), "limit": g.get("limit"),
                  "passed": bool(g.get("passed")), "detail": g.get("detail") or ""} for g in rec["gates"]]
    else:
        gates = [_gate(g) for g in gate_rows if g["ts"] == own_ts]
    later = [dict(_gate(g), client_order_id=g["client_order_id"], ts=g["ts"])
             for g in gate_rows if g["ts"] != own_ts]

    approval = None
    arow = conn.execute("SELECT * FROM approvals WHERE decision_id = ? ORDER BY created_ts DESC",
                        (did,)).fetchone()
    if arow is not None:
        approval = dict(arow)
        try:
            approval["gates"] = json.loads(approval["gates"])
        except (TypeError, ValueError):
            approval["gates"] = []
        approval.pop("intent", None)
        approval["history"] = _approval_history(conn, approval, d.get("event_seq"))

    # Orders: this decision's own, the exits of the position it opened (stop-loss and take-profit orders carry the
    # entry decision's id; an exit placed by a later decision is found through the trade it closed).
    orders = _rows(conn, "SELECT * FROM orders WHERE decision_id = ? ORDER BY created_ts, rowid", (did,))
    trades = _rows(conn, "SELECT * FROM trades WHERE entry_decision_id = ? ORDER BY id", (did,))
    for t in trades:
        t["role"] = "opened"
    own_ids = {o["client_order_id"] for o in orders}
    extra = [t["exit_client_order_id"] for t in trades
             if t["exit_client_order_id"] and t["exit_client_order_id"] not in own_ids]
    if extra:
        marks = ",".join("?" * len(extra))
        orders += _rows(conn, f"SELECT * FROM orders WHERE client_order_id IN ({marks})", tuple(extra))
        orders.sort(key=lambda o: (o["created_ts"], o["client_order_id"]))
    # A decision that closed a position: the trade whose exit order it placed.
    seen = {t["id"] for t in trades}
    for o in orders:
        if o["decision_id"] == did and o["reduce_only"] and o["reason"] == "signal":
            for t in _rows(conn, "SELECT * FROM trades WHERE exit_client_order_id = ?", (o["client_order_id"],)):
                if t["id"] not in seen:
                    t["role"] = "closed"
                    trades.append(t)
                    seen.add(t["id"])
    for o in orders:
        _with_fills(conn, o)
        # Its own gates: an exit's, a close's, a flatten's (recorded under the order, not the decision).
        o["gates"] = [dict(_gate(g), ts=g["ts"]) for g in _rows(
            conn, "SELECT code, value, limit_value, passed, detail, ts FROM gate_results WHERE client_order_id = ? "
                  "AND decision_id IS NULL ORDER BY rowid", (o["client_order_id"],))]
    for t in trades:
        t["scores"] = _rows(conn, "SELECT provider, action, correct, return_pct FROM provider_scores "
                                  "WHERE trade_id = ?", (t["id"],))
        for s in t["scores"]:
            s["correct"] = bool(s["correct"])

    opened = [t for t in trades if t["role"] == "opened"]
    return {
        "decision_id": did, "symbol": d["symbol"], "bar_ts": d["ts"], "bar_time": fmt.iso_ms(d["ts"]),
        "recorded": rec.get("ts"), "seq": d.get("event_seq"), "price": d["price"], "action": d["action"],
        "confidence": d["confidence"], "tier": d["tier"], "strategy": d["strategy"], "outcome": d["outcome"],
        "reason": d["reason"], "quantity": d["quantity"], "client_order_id": d["client_order_id"],
        "approval_id": d["approval_id"], "votes": votes, "failed": failed, "sizing": rec.get("sizing") or {},
        "gates": gates, "later_gates": later, "approval": approval, "orders": orders, "trades": trades,
        "pnl": sum(t["pnl"] for t in opened) if opened else None,  # of the position this decision opened
    }


def _with_fills(conn: sqlite3.Connection, o: dict[str, Any]) -> dict[str, Any]:
    """An order row as a story tells it: its intent read, reduce_only a bool, and its fills."""
    o["intent"] = _json_blob(o.get("intent"))
    o["reduce_only"] = bool(o["reduce_only"])
    o["fills"] = _rows(conn, "SELECT quantity, price, fee, ts FROM fills WHERE client_order_id = ? ORDER BY id",
                       (o["client_order_id"],))
    return o


def order_story(conn: sqlite3.Connection, client_order_id: str) -> dict[str, Any] | None:
    """An order no decision placed (the operator's, a flatten's that closed no decision's position): the order with
    its fills, the gates it was checked against under its own id and the trade it closed; None when there is no such
    order."""
    orders = _rows(conn, "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
    if not orders:
        return None
    o = _with_fills(conn, orders[0])
    gates = [dict(_gate(g), ts=g["ts"]) for g in _rows(
        conn, "SELECT code, value, limit_value, passed, detail, ts FROM gate_results WHERE client_order_id = ? "
              "ORDER BY rowid", (client_order_id,))]
    trades = _rows(conn, "SELECT * FROM trades WHERE exit_client_order_id = ? ORDER BY id", (client_order_id,))
    for t in trades:
        t["role"] = "closed"
    return {"decision_id": None, "client_order_id": client_order_id, "symbol": o["symbol"], "reason": o["reason"],
            "gates": gates, "orders": orders, "trades": trades}


def _backtest_records(conn: sqlite3.Connection) -> str | None:
    """The record level of a backtest run's database; None for an engine's own."""
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (BACKTEST_RECORDS_KEY,)).fetchone()
    if row is None:
        return None
    try:
        level = json.loads(row[0])
    except (TypeError, ValueError):
        return None
    return level if isinstance(level, str) else None


def unknown_id(conn: sqlite3.Connection, ident: str, db_path: Path) -> str:
    """What `ffe audit show` says of an id no record names: a backtest run that keeps no decision records keeps
    nothing of a decision that placed no order, so there the id may well be one of its decisions."""
    level = _backtest_records(conn)
    if level in ("trades", "summary"):
        return (f"no order or trade of {ident!r} in {db_path}: a backtest run of {level} records keeps no record of "
                "a decision that placed no order (a HOLD, an entry refused): only full records do")
    return f"no decision or order {ident!r} in {db_path}"


def _kept_story(conn: sqlite3.Connection, did: str, level: str) -> dict[str, Any]:
    """A decision of a backtest run that keeps no decision records: what the run kept of it, its orders (with their
    fills) and the trades it opened, with the orders that closed them."""
    orders = _rows(conn, "SELECT * FROM orders WHERE decision_id = ? ORDER BY created_ts", (did,))
    trades = _rows(conn, "SELECT * FROM trades WHERE entry_decision_id = ? ORDER BY id", (did,))
    seen = {o["client_order_id"] for o in orders}
    for t in trades:
        t["role"] = "opened"
        cid = t.get("exit_client_order_id")
        if cid and cid not in seen:
            seen.add(cid)
            orders += _rows(conn, "SELECT * FROM orders WHERE client_order_id = ?", (cid,))
    return {"decision_id": did, "records": level, "symbol": orders[0]["symbol"] if orders else None,
            "orders": [_with_fills(conn, o) for o in orders], "trades": trades}


def render_kept_story(s: dict[str, Any]) -> str:
    out = [f"decision {s['decision_id']}  {s['symbol'] or ''}",
           f"  a backtest run of {s['records']} records keeps no decision record (its votes and gates: only full "
           "records do); its orders, fills and trades:"]
    for o in s["orders"]:
        out += ["", f"order {o['client_order_id']}  {o['side']} {fmt.qty(o['quantity'])} {o['type']}  {o['reason']}  "
                    f"{o['status']}  placed {fmt.iso_ms(o['created_ts'])}", *_filled_lines(o)]
    for t in s["trades"]:
        out += ["", "trade", f"{_trade_line(t)}  {t['reason']}  (closed by {t['exit_client_order_id'] or 'no order'})"]
    if not s["orders"] and not s["trades"]:
        out += ["", "  no order of it was recorded"]
    return "\n".join(map(fmt.printable, out))  # one line each: a stored reason's new line is escaped


def render_order_story(s: dict[str, Any]) -> str:
    o = s["orders"][0]
    out = [f"order {s['client_order_id']}  {s['symbol']}  {o['side']} {fmt.qty(o['quantity'])} {o['type']}  "
           f"{o['status']}  placed {fmt.iso_ms(o['created_ts'])}",
           f"  no decision (an {s['reason']} order): the gates below were checked under its own id", "", "gates"]
    if s["gates"]:
        out.append(f"  {'code':<20}{'value':<12}{'limit':<31}result")
        out += [_gate_line(g) + f"  at {fmt.iso(g['ts'])}" for g in s["gates"]]
    else:
        out.append("  none recorded")
    out += ["", "order", *_filled_lines(o)]
    for t in s["trades"]:
        out += ["", "trade", f"{_trade_line(t)}  (closed by this order, opened by "
                             f"{t['entry_decision_id'] or 'an order of no decision'})"]
    return "\n".join(map(fmt.printable, out))  # one line each: a stored reason's new line is escaped


def _filled_lines(o: dict[str, Any]) -> list[str]:
    """What an order filled, at what average and fee (and its error), then each of its fills."""
    return [f"  filled {fmt.qty(o['filled'])} @ {fmt.price(o['average'])}  fee {fmt.fee(o['fee'])}"
            + (f"  error: {o['error']}" if o["error"] else ""), *(_fill_line(f) for f in o["fills"])]


def _trade_line(t: dict[str, Any]) -> str:
    return (f"  #{t['id']} {t['side']} {fmt.qty(t['quantity'])} {t['symbol']}  {fmt.price(t['entry_price'])} -> "
            f"{fmt.price(t['exit_price'])}  pnl {fmt.money(t['pnl'], signed=True)}")


def _gate(g: dict[str, Any]) -> dict[str, Any]:
    return {"code": g["code"], "value": g["value"], "limit": g["limit_value"], "passed": bool(g["passed"]),
            "detail": g["detail"] or ""}


def _approval_history(conn: sqlite3.Connection, approval: dict[str, Any],
                      decision_seq: int | None) -> list[dict[str, Any]]:
    """The approval's events (pending, then how it ended, with the reason), read forward from the decision's own
    event and no further than the approval's end: the events table can be long."""
    if decision_seq is None:
        return []
    until = (approval.get("ended_ts") or approval.get("created_ts") or 0) + 5
    out = []
    cur = conn.execute("SELECT ts, CASE WHEN event = 'approval' THEN data END FROM events WHERE seq >= ? "
                       "ORDER BY seq", (decision_seq - 10,))
    for ts, data in cur:
        if ts > until:
            break
        if data is None:
            continue
        rec = _event_record(conn, data)
        if rec.get("approval_id") == approval["approval_id"]:
            out.append({"ts": rec.get("ts"), "outcome": rec.get("outcome"), "by": rec.get("by"),
                        "reason": rec.get("reason", "")})
    cur.close()
    return out


def render_story(s: dict[str, Any]) -> str:
    if "records" in s:  # a run that keeps no decision records
        return render_kept_story(s)
    out: list[str] = []
    add = out.append
    add(f"decision {s['decision_id']}  {s['symbol']}  bar {s['bar_time']}  price {fmt.price(s['price'])}"
        + (f"  (recorded {s['recorded']}, seq {s['seq']})" if s.get("recorded") else ""))
    add(f"  {s['action']}  confidence {fmt.conf(s['confidence'])}  tier {s['tier']}  strategy {s['strategy']}"
        f"  outcome {s['outcome']}" + (f"  ({s['reason']})" if s['reason'] and s['reason'] != s['strategy'] else ""))

    add("")
    add("votes")
    add(f"  {'provider':<16}{'action':<7}{'conf':>6}{'weight':>8}  reason")
    for v in s["votes"]:
        add(f"  {str(v['provider']):<16}{str(v['action']):<7}{fmt.conf(v['confidence']):>6}"
            f"{_weight(v['weight']):>8}  {v.get('reason') or ''}")
    if not s["votes"]:
        add("  (no valid votes)")
    add(f"  failed: {', '.join(s['failed']) if s['failed'] else 'none'}")

    if s["sizing"]:
        add("")
        add("sizing")
        add("  " + "  ".join(f"{k.replace('_', ' ')} {fmt.number(v)}" for k, v in s["sizing"].items()))

    add("")
    add("gates")
    if s["gates"]:
        add(f"  {'code':<20}{'value':<12}{'limit':<31}result")
        for g in s["gates"]:
            add(_gate_line(g))
    else:
        add("  none (no order was proposed)")
    if s["later_gates"]:
        add("  checked later under this decision:")
        for g in s["later_gates"]:
            add(_gate_line(g) + f"  at {fmt.iso(g['ts'])}")

    add("")
    a = s["approval"]
    if a is None:
        add("approval: none (not proposed for approval)")
    else:
        add(f"approval {a['approval_id']}: {a['status']}" + (f" by {a['by']}" if a.get("by") else "")
            + f"  proposed {fmt.iso(a['created_ts'])}  expires {fmt.iso(a['expires_ts'])}"
            + (f"  ended {fmt.iso(a['ended_ts'])}" if a.get("ended_ts") else "")
            + (f"  order {a['client_order_id']}" if a.get("client_order_id") else ""))
        for h in a["history"]:
            add(f"  {h['ts']} {h['outcome']} by {h['by']}" + (f": {h['reason']}" if h['reason'] else ""))

    add("")
    add("orders")
    if not s["orders"]:
        add("  none")
    for o in s["orders"]:
        via = f" (decision {o['decision_id']})" if o["decision_id"] not in (None, s["decision_id"]) else ""
        add(f"  {o['client_order_id']}  {o['side']} {fmt.qty(o['quantity'])} {o['symbol']} {o['type']}  {o['reason']}"
            f"  {o['status']}  filled {fmt.qty(o['filled'])} @ {fmt.price(o['average'])}  fee {fmt.fee(o['fee'])}"
            f"  placed {fmt.iso_ms(o['created_ts'])}{via}" + (f"  error: {o['error']}" if o["error"] else ""))
        if o.get("gates"):
            add(f"    gates at {fmt.iso(o['gates'][0]['ts'])}")
            for g in o["gates"]:
                add("  " + _gate_line(g))
        for f in o["fills"]:
            add(_fill_line(f))

    add("")
    add("trade")
    if not s["trades"]:
        add("  none closed")
    for t in s["trades"]:
        role = "opened by this decision" if t["role"] == "opened" else \
            f"closed by this decision, opened by {t['entry_decision_id']}"
        add(f"  #{t['id']} {t['side']} {fmt.qty(t['quantity'])} {t['symbol']}  {fmt.price(t['entry_price'])} -> "
            f"{fmt.price(t['exit_price'])}  pnl {fmt.money(t['pnl'], signed=True)}  fees {fmt.fee(t['fees'])}  "
            f"{t['reason']}  "
            f"{fmt.iso_ms(t['opened_ts'])} -> {fmt.iso_ms(t['closed_ts'])}  ({role})")
        if t["scores"]:
            add("    scored: " + ", ".join(f"{x['provider']} {x['action']} {'hit' if x['correct'] else 'miss'}"
                                          for x in t["scores"]))
    if s["pnl"] is not None:
        add(f"  P&L {fmt.money(s['pnl'], signed=True)}")
    return "\n".join(map(fmt.printable, out))  # one line each: a stored reason's new line is escaped


def _fill_line(f: dict[str, Any]) -> str:
    return (f"    fill {fmt.qty(f['quantity'])} @ {fmt.price(f['price'])}  fee {fmt.fee(f['fee'])}  "
            f"at {fmt.iso_ms(f['ts'])}")


def _gate_line(g: dict[str, Any]) -> str:
    detail = f"  {g['detail']}" if g.get("detail") else ""
    return (f"  {str(g['code']):<20}{fmt.number(g['value']):<12}{fmt.number(g['limit']):<31}"
            f"{'pass' if g['passed'] else 'FAIL'}{detail}")


# ---------------------------------------------------------------------------------------------------- reports
def _last_trade_ids(conn: sqlite3.Connection, n: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM trades ORDER BY id DESC LIMIT ?", (n,))]


_BACKED = ("FROM trades t JOIN votes v ON v.decision_id = t.entry_decision_id AND v.failed = 0 "
           "AND v.action = CASE t.side WHEN 'buy' THEN 'BUY' ELSE 'SELL' END")
# A vote's return as seen from its side: the trade's return for a vote that backed it, minus that for one against.
_SIGNED = ("s.return_pct * (CASE s.action WHEN 'BUY' THEN 1 ELSE -1 END) "
           "* (CASE t.side WHEN 'buy' THEN 1 ELSE -1 END)")


def _scores(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p, backed in conn.execute(f"SELECT v.provider, COUNT(DISTINCT t.entry_decision_id) {_BACKED} "
                                  f"WHERE 1=1 {where} GROUP BY v.provider", params):
        out.setdefault(p, {})["backed"] = backed
    for p, votes in conn.execute("SELECT v.provider, COUNT(*) FROM trades t JOIN votes v ON "
                                 "v.decision_id = t.entry_decision_id AND v.failed = 0 "
                                 f"WHERE 1=1 {where} GROUP BY v.provider", params):
        out.setdefault(p, {})["votes"] = votes
    for p, scored, hits, avg in conn.execute(
            f"SELECT s.provider, COUNT(*), SUM(s.correct), AVG({_SIGNED}) FROM provider_scores s "
            f"JOIN trades t ON t.id = s.trade_id WHERE 1=1 {where} GROUP BY s.provider", params):
        out.setdefault(p, {}).update(scored=scored, hits=hits, avg_return_pct=avg)
    return out


def _run_adaptive(conn: sqlite3.Connection) -> bool | None:
    """Whether a backtest run applied the weights it learned, as it stored it; None for an account's records (and
    a run of an ffe that did not store it)."""
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (BACKTEST_ADAPTIVE_KEY,)).fetchone()
    try:
        value = json.loads(row[0]) if row is not None else None
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, bool) else None


def provider_report(conn: sqlite3.Connection, configured: list[str], last: int, adaptive: bool) -> dict[str, Any]:
    """`adaptive`: ensemble.adaptive as configured, which an account's start applies the learned weights by; a
    backtest run says its own."""
    cast = {p: (n, f) for p, n, f in conn.execute(
        "SELECT provider, SUM(failed = 0), SUM(failed = 1) FROM votes GROUP BY provider")}
    all_time = _scores(conn, "", ())
    ids = _last_trade_ids(conn, last)
    recent = _scores(conn, f"AND t.id IN ({','.join('?' * len(ids))})", tuple(ids)) if ids else {}
    total_trades = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]

    run_adaptive = _run_adaptive(conn)
    applied = adaptive if run_adaptive is None else run_adaptive
    # Learned weights not applied are not the weights in force: the equal ones are.
    row = conn.execute("SELECT value, updated_ts FROM kv WHERE key = 'weights'").fetchone() if applied else None
    stored = _json_blob(row[0]).get("weights") if row else None
    have = isinstance(stored, dict) and bool(stored)
    names = list(dict.fromkeys([*configured, *(stored or {}), *cast, *all_time]))
    if have and stored:
        weights = {k: v for k, v in stored.items() if isinstance(v, (int, float))}
    else:
        weights = {k: 1.0 / len(configured) for k in configured} if configured else {}

    def figures(src: dict[str, Any]) -> dict[str, Any]:
        scored = src.get("scored", 0)
        hits = src.get("hits", 0) or 0
        return {"votes": src.get("votes", 0), "backed": src.get("backed", 0), "scored": scored, "hits": hits,
                "hit_rate": hits / scored if scored else None, "avg_return_pct": src.get("avg_return_pct")}

    # A backtest run of trades records keeps no votes: its vote counts are unknown, not none (null, `-`).
    votes_kept = _backtest_records(conn) != "trades"

    def unkept(figs: dict[str, Any]) -> dict[str, Any]:
        return figs if votes_kept else {**figs, "votes": None, "failed": None, "backed": None}

    providers = []
    for p in names:
        n, f = cast.get(p, (0, 0))
        base = figures(all_time.get(p, {}))
        base["votes"] = n or 0  # every directional vote cast, not only those on trade entries
        providers.append({"provider": p, "configured": p in configured, "weight": weights.get(p),
                          **unkept({**base, "failed": f or 0}),
                          "last": unkept(figures(recent.get(p, {})))})
    return {"trades": total_trades, "last": last, "last_trades": len(ids),
            "weights": "stored" if have else "equal", "weights_updated": fmt.iso(row[1]) if row else None,
            "weights_updated_ts": row[1] if row else None,  # as stored: wall seconds
            "adaptive": applied, "votes_kept": votes_kept, "providers": providers}


def render_provider_report(r: dict[str, Any]) -> str:
    """Fits 80 columns: all-time figures, then the same over the last N trades."""
    if r["weights"] == "stored":
        src = f"weights as stored {r['weights_updated']}"
    elif not r.get("adaptive", True):
        src = "equal weights (ensemble.adaptive = false)"
    else:
        src = "equal weights (none stored yet)"
    lines = [f"{fmt.counted(r['trades'], 'closed trade')}; {src}",
             f"{'':<41}all trades | last {fmt.counted(r['last_trades'], 'trade')}",
             f"{'provider':<15}{'weight':>7}{'votes':>6}{'fail':>5}{'backed':>7}{'hit':>6}{'ret%':>8} |"
             f"{'backed':>7}{'hit':>6}{'ret%':>8}"]
    for p in r["providers"]:
        name = p["provider"] + ("" if p["configured"] else "*")
        last = p["last"]
        lines.append(f"{name:<15}{_weight(p['weight']):>7}{_count(p['votes']):>6}{_count(p['failed']):>5}"
                     f"{_count(p['backed']):>7}{_hit(p['hit_rate']):>6}{_ret(p['avg_return_pct']):>8} |"
                     f"{_count(last['backed']):>7}{_hit(last['hit_rate']):>6}{_ret(last['avg_return_pct']):>8}")
    if any(not p["configured"] for p in r["providers"]):
        lines.append("* not a configured provider (history only)")
    if not r.get("votes_kept", True):
        lines.append("votes, fail, backed: not kept (a backtest run of trades records keeps no votes)")
    if not r.get("adaptive", True):
        lines.append("weight: the equal weights in force; the learned ones are not applied")
    lines.append("votes: BUY/SELL votes cast; fail: failed or timed out; backed: entries it voted for;")
    lines.append("hit: its votes on entries whose direction matched the outcome; ret%: the trade's")
    lines.append("return from the vote's side, average")
    return "\n".join(lines)


def _count(x: int | None) -> str:
    return "-" if x is None else str(x)


def _ret(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def _weight(x: Any) -> str:
    """An ensemble weight: three decimals, as the weights event shows them."""
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


def _hit(x: float | None) -> str:
    """A hit rate in a 6-wide column: whole percent."""
    return "-" if x is None else f"{x * 100:.0f}%"


def trades_report(conn: sqlite3.Connection, last: int) -> dict[str, Any]:
    sql = ("SELECT id, symbol, side, quantity, entry_price, exit_price, pnl, fees, reason, opened_ts, closed_ts, "
           "entry_decision_id, exit_client_order_id FROM trades ORDER BY id DESC")
    rows = _rows(conn, sql + (" LIMIT ?" if last > 0 else ""), (last,) if last > 0 else ())
    rows.reverse()
    for t in rows:  # the times as every report writes them, beside the stored milliseconds
        t["opened"], t["closed"] = fmt.iso_ms(t["opened_ts"]), fmt.iso_ms(t["closed_ts"])
    count, wins, pnl = conn.execute("SELECT COUNT(*), SUM(pnl > 0), COALESCE(SUM(pnl), 0) FROM trades").fetchone()
    return {"trades": rows, "total": {"count": count, "wins": wins or 0, "pnl": pnl}}


def render_trades(r: dict[str, Any]) -> str:
    lines = [f"{'#':>5} {'closed':<20} {'symbol':<10}{'side':<5}{'quantity':>12}{'entry':>13}{'exit':>13}"
             f"{'pnl':>10}  {'reason':<12}entry decision"]
    for t in r["trades"]:
        lines.append(f"{t['id']:>5} {fmt.iso_ms(t['closed_ts']):<20} {t['symbol']:<10}{t['side']:<5}"
                     f"{fmt.qty(t['quantity']):>12}{fmt.price(t['entry_price']):>13}"
                     f"{fmt.price(t['exit_price']):>13}{fmt.money(t['pnl'], signed=True):>10}  {t['reason']:<12}"
                     f"{t['entry_decision_id'] or '-'}")
    tot = r["total"]
    rate = f" ({tot['wins'] / tot['count'] * 100:.0f}%)" if tot["count"] else ""
    lines.append(f"{fmt.counted(tot['count'], 'closed trade')}, {tot['wins']} won{rate}, "
                 f"P&L {fmt.money(tot['pnl'], signed=True)}"
                 + (f"; {len(r['trades'])} shown" if len(r["trades"]) < tot["count"] else ""))
    return "\n".join(lines)
