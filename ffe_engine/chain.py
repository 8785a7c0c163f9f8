"""The audit trail's hash chain, its files, and `verify_trail`.

Every audit line ends with `"prev":"<hex>"`: the SHA-256 of the previous line's exact bytes (without its newline),
GENESIS for the first line. Editing, deleting, inserting or reordering a line breaks the chain at that line; the
database stores the chain head (the last seq it holds and that line's hash) in the transaction that writes the
records, so a trail cut short, or whose last lines were rewritten, is found too.

A trail is one current file (`audit.jsonl`) and, once rotated, older files named after their first seq
(`audit-000000000001.jsonl`, ...): seq and the chain run on from one file into the next. A backtest's trail is one
compressed file, `audit.jsonl.zst`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import orjson
import zstandard

from .ahead import Ahead
from . import reach
from .errors import FfeError, StorageError, is_unreachable, unreachable

GENESIS = "0" * 64  # the `prev` of a trail's first line
HEAD_KEY = "audit_head"  # the database's kv key for the chain head: {"seq": n, "hash": hex}
CURRENT = "audit.jsonl"
_PREV = b',"prev":"'


def line_hash(line: bytes) -> str:
    """The hash the next line carries as its `prev`: SHA-256 of the line's bytes, newline excluded."""
    return hashlib.sha256(line).hexdigest()


def chained(line: bytes, prev: str) -> bytes:
    """An encoded record (a JSON object) with `prev` added as its last key, without encoding it again."""
    return b"".join((line[:-1], _PREV, prev.encode(), b'"}'))


def unchained(line: bytes) -> bytes:
    """A chained line without its `prev`: as a backtest run's compact events rows hold it."""
    cut = len(_PREV) + 64 + 2
    if line.endswith(b'"}') and line[-cut:-66] == _PREV:
        return line[:-cut] + b"}"
    return line


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


# ====================================================================================================== the files
def rotated_name(current: Path, first_seq: int) -> Path:
    """Where a rotated file goes: named after the first seq it holds, so names sort in seq order."""
    return current.with_name(f"{current.stem}-{first_seq:012d}{current.suffix}")


def rotated_files(current: Path) -> list[Path]:
    """The trail's rotated files, oldest first."""
    return [p for _, p in rotated_seqs(current)]


def rotated_seqs(current: Path) -> list[tuple[int, Path]]:
    """The trail's rotated files, oldest first, each with the first seq it holds (from its name). Each is looked at
    here (`reach.is_a_file`), before anyone opens it: every reader of the trail (audit verify and tail, doctor, backup,
    restore, a start's repair) lists its files here or through `trail_files`."""
    found = _rotated(current)
    for _, p in found:
        reach.is_a_file(p)
    return found


def _rotated(current: Path) -> list[tuple[int, Path]]:
    pattern = re.compile(re.escape(current.stem) + r"-(\d{12,})" + re.escape(current.suffix) + "$")
    found = []
    for name in reach.names_in(current.parent):
        m = pattern.match(name)
        if m:
            found.append((int(m.group(1)), current.parent / name))
    return sorted(found)


def missing_file(current: Path, first_line: bool, seq: int) -> Path | None:
    """The rotated file a gap in the trail leaves out: where the gap falls at a file's first line and the file
    named after the first seq missing (rotated_name) is not there, that file; else None (lines missing inside a
    file). `ffe doctor`, `ffe audit verify` and `ffe backup` name it so."""
    if not first_line:
        return None
    gone = rotated_name(current, seq)
    return None if reach.exists(gone) else gone


def trail_paths(current: Path) -> list[Path]:
    """The paths of the trail's files, unchecked: the rotated ones, then the current one (whether it is there or
    not). For a start, which says what is not a file in its own words before it writes."""
    return [p for _, p in _rotated(current)] + [current]


def trail_files(current: Path) -> list[Path]:
    """Every file of the trail, oldest first: the rotated ones, then the current one if it exists (a backtest's
    compressed file if that is what there is)."""
    files = rotated_files(current)
    if reach.is_a_file(current):
        files.append(current)
    elif not files and reach.is_a_file(packed(current)):
        files.append(packed(current))
    return files


def packed(current: Path) -> Path:
    """A backtest's audit file: the trail compressed (Zstandard frames, records.py)."""
    return current.with_name(current.name + ".zst")


def last_line(path: Path) -> bytes | None:
    """The last complete line of a file (None if it has none): read backwards, block by block."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        end = os.fstat(f.fileno()).st_size
        block = 1 << 16
        while True:
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start)
            stop = data.rfind(b"\n")
            if stop < 0:
                if start == 0:
                    return None
                block *= 4
                continue
            begin = data.rfind(b"\n", 0, stop) + 1
            if begin > 0 or start == 0:
                return data[begin:stop]
            block *= 4


# ====================================================================================================== verify
@dataclass(frozen=True)
class Uncommitted:
    """Records of the trail the database never committed: `inside`, the seqs of those the trail went on after (an
    older ffe's start continued the chain after them), and `ahead`, those after the database's last event
    (`db_last`), judged as the start judges what it sets aside (ahead.Ahead): written just before a kill (or being
    committed, beside a running engine), noted; or records the database lost, `lost_records`. The one judgement
    `ffe doctor` and `ffe audit verify` both say."""

    inside: list[int]
    ahead: Ahead
    db_last: int

    @property
    def after(self) -> int:
        return self.ahead.records

    def lost_records(self) -> str | None:
        """What the database lacks and the remedy, when the records after its last event show it lost committed
        records; None when they are the moment before a kill (or there are none)."""
        return self.ahead.lost_records(self.db_last) if self.ahead.lost else None

    def notes(self, run: bool = False) -> list[str]:
        """What an operator reads of them; `run`: the records are a backtest run's, which is never started again."""
        out = []
        if self.inside:
            one = len(self.inside) == 1
            shown = ", ".join(map(str, self.inside[:10])) + (", ..." if len(self.inside) > 10 else "")
            out.append(f"note: seq {shown} {'is' if one else 'are'} in the audit trail but the database never "
                       f"committed {'it' if one else 'them'}: written just before a kill, and the trail went on "
                       "after (an older ffe): no record of what happened")
        if self.after and not self.ahead.lost:
            one = self.after == 1
            head = (f"note: {self.after} record{'' if one else 's'} after the database's last event (seq "
                    f"{self.db_last}) {'is' if one else 'are'} not in it: ")
            if run:
                out.append(head + "the run was cut short there (its writer ended before the commit, or is still "
                           "writing); a run is not started again: run the backtest again for its whole records")
            else:
                out.append(head + "written just before a kill and never committed (or being committed, beside a "
                           f"running engine); the next start sets {'it' if one else 'them'} aside")
        return out


@dataclass(frozen=True)
class VerifyResult:
    """What `verify_trail` found. `ok` is false when a line was edited, deleted, inserted or moved, or when the
    trail is shorter than the database's chain head; `first_bad_seq` then names the first record that is not as
    written and `reason` says what is wrong (with file and line)."""

    ok: bool
    first_bad_seq: int | None
    reason: str
    records: int  # lines read
    first_seq: int
    last_seq: int
    last_hash: str  # the hash of the last line read (the `prev` of the next one)
    files: list[str]
    head: ChainHead | None  # the database's chain head it was checked against
    unchained: int  # records at the start written before the trail was chained (seq order checked only)
    torn_bytes: int  # a torn tail (TornTail: a crash mid-write, a power loss): set aside at the next start
    uncommitted: Uncommitted | None = None  # checked against the database's event seqs (`committed`)
    torn_blank: bool = False  # the torn tail is blank bytes only, no record cut short
    # The torn tail is where the database's head record would be, the start of its copy (a power loss): the next
    # start sets it aside and appends that record from the database.
    torn_head: bool = False


class _Bad(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


@dataclass
class _Line:
    where: str
    raw: bytes
    seq: int | None
    prev: str | None

    @classmethod
    def parse(cls, where: str, raw: bytes) -> "_Line":
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return cls(where, raw, None, None)
        if not isinstance(rec, dict) or type(rec.get("seq")) is not int:
            return cls(where, raw, None, None)
        prev = rec.get("prev")
        return cls(where, raw, rec["seq"], prev if isinstance(prev, str) else None)


def open_trail(current: Path) -> list[tuple[Path, IO[bytes]]]:
    """The trail's files, opened, listed oldest first. The current one is opened first, so a rotation while this runs
    can only add a file that is already open (it is then read once, under the name it had when opened)."""
    opened: list[tuple[Path, IO[bytes]]] = []
    cur: IO[bytes] | None = None
    reach.is_a_file(current)
    try:
        cur = open(current, "rb")
    except FileNotFoundError:
        if not rotated_files(current) and reach.is_a_file(packed(current)):
            raw = _open_file(packed(current))
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
            return [(packed(current), io.BufferedReader(reader))]
    except OSError as exc:
        raise unreadable_trail(current, exc) from None
    seen = set()
    if cur is not None:
        st = os.fstat(cur.fileno())
        seen.add((st.st_dev, st.st_ino))
    for p in rotated_files(current):
        try:
            f = _open_file(p)
        except FileNotFoundError:
            continue
        except StorageError:
            for _, opened_file in opened:
                opened_file.close()
            if cur is not None:
                cur.close()
            raise
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) in seen:
            f.close()
            continue
        seen.add((st.st_dev, st.st_ino))
        opened.append((p, f))
    if cur is not None:
        opened.append((current, cur))
    return opened


def unreadable_trail(path: Path, exc: OSError) -> FfeError:
    """A file of the trail that cannot be read (a directory in its place; no permission: a path that cannot be
    reached, as every command says it), as one line."""
    if is_unreachable(exc):
        return unreachable(path, exc)
    return StorageError(f"{path}: cannot read the audit trail ({exc.strerror or exc})")


def _open_file(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise unreadable_trail(path, exc) from None


BLANK = b" \t\r\x00"  # what a power loss leaves besides a record's start: zeros, and lines of nothing


class TornTail:
    """What follows a trail's last whole record, as a start sets it aside (audit.repair_trail) and `ffe audit verify`
    and `ffe doctor` judge it: a kill or a power loss leaves there at most one record cut short (unfinished, or
    closed by the newline a writer opening the file adds: sqlwriter.open_lines_file) and blank bytes (a power
    loss's zeros, empty lines); a whole line of anything else, or a second cut record, was written over the trail.
    Fed a line at a time, forwards or backwards."""

    def __init__(self) -> None:
        self.cut = b""  # the record cut short there, its blank bytes stripped (b"": blank bytes only)
        self.where = ""  # where it is (file:line), or the tail's first line
        self.size = 0  # its bytes, newlines included

    def add(self, data: bytes, closed: bool, where: str = "") -> bool:
        """One line of it (`closed`: ended by a newline, `data` without it; else the unfinished end). False when
        no kill or power loss leaves it there."""
        found = data.strip(BLANK)
        if found:
            if self.cut or (closed and not cut_record(data)):
                return False
            self.cut, self.where = found, where
        elif not self.where:
            self.where = where
        self.size += len(data) + closed
        return True

    def edits(self, held: bytes | None) -> bool:
        """Whether the record cut short is not the start of `held`, the database's copy of the record after the
        last whole one (None: it holds none): that record edited (a byte changed, zeros written inside it), not cut.
        The store writes a record whole before it commits it, so a kill never cuts one the database holds, and a
        power loss leaves only its start."""
        return bool(self.cut) and held is not None and not held.startswith(self.cut)


def _lines(opened: Sequence[tuple[Path, Iterable[bytes]]], torn: list[TornTail]) -> Iterator[_Line]:
    """The trail's lines; what follows the last whole record of the last file, when it is a torn tail a start sets
    aside (TornTail), is put in `torn` instead."""
    last = len(opened) - 1
    for i, (path, f) in enumerate(opened):
        tail = TornTail()
        held: list[_Line] = []  # lines after the last record that may be a torn tail, until a record follows
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            closed = raw.endswith(b"\n")
            line = _Line.parse(where, raw[:-1]) if closed else _Line(where, raw, None, None)
            if i == last and (not closed or line.seq is None) and tail.add(line.raw, closed, where):
                held.append(_Line(where, line.raw, None, None))
                continue
            yield from held
            held, tail = [], TornTail()
            yield line
        if held:
            torn.append(tail)


def follows(line: bytes, before: bytes | None) -> bool:
    """Whether `line` chains on from `before`, the line before it (None: it is the trail's first), as `verify_trail`
    walks the chain: its `prev` is that line's hash (GENESIS for the first); a line without one only where the
    chain has not begun (`before` carries none either)."""
    prev = _fields(line)[1]
    if prev is None:
        return before is not None and _fields(before)[1] is None
    return prev == (line_hash(before) if before is not None else GENESIS)


def cut_record(line: bytes) -> bool:
    """A record cut short: the start of a JSON object that does not parse (no whole object is a prefix of one)."""
    if not line.lstrip(b"\x00").startswith(b"{"):
        return False
    try:
        json.loads(line)  # as the start's repair has always parsed it (json, not orjson: the same lines accepted)
    except ValueError:
        return True
    return False


def _fields(raw: bytes) -> tuple[int | None, str | None]:
    line = _Line.parse("", raw)
    return line.seq, line.prev


def verify_trail(log_dir: Path | str, head: ChainHead | None = None, *, name: str = CURRENT,
                 committed: Iterable[int] | None = None, head_record: bytes | None = None) -> VerifyResult:
    """Check the audit trail in `log_dir` (every rotated file, then the current one) line by line: seq runs on by
    one from 1, each line's `prev` is the hash of the line before it; and, with the database's chain `head`, that
    the trail reaches it and its line there hashes to it (a trail cut short, or whose last lines were rewritten,
    is found so). With `committed`, the seqs of the database's events in order, the records it never committed are
    counted (`uncommitted`). With `head_record`, the database's copy of the head's record, a torn tail where that
    record would be is judged as a start judges it (`_torn_head`). Never writes. The first bad seq is the first record
    found not as it was written: an edited line's own seq, a deleted (or moved) line's seq, an inserted line's
    place."""
    opened = open_trail(Path(log_dir) / name)
    torn: list[TornTail] = []
    state = _Walk(head)
    state.current = Path(log_dir) / name
    # A backtest's compressed audit file is written in frames of many transactions (Ahead.many_transactions).
    frames = any(p.suffix == ".zst" for p, _ in opened)
    match = _Match(committed, many_transactions=frames) if committed is not None else None
    bad: _Bad | None = None
    try:
        lines = _lines(opened, torn)
        state.run(match.walk(lines) if match is not None else lines)
        state.torn_head = _torn_head(head, head_record, state.expected, torn)
        state.finish()
    except _Bad as exc:
        bad = exc
    finally:
        for _, f in opened:
            f.close()
    return VerifyResult(ok=bad is None, first_bad_seq=bad.seq if bad else None, reason=bad.reason if bad else "",
                        records=state.records, first_seq=state.first_seq, last_seq=state.expected - 1,
                        last_hash=state.prev_hash, files=[str(p) for p, _ in opened], head=head,
                        unchained=state.unchained, torn_bytes=sum(t.size for t in torn),
                        uncommitted=match.result() if match is not None else None,
                        torn_blank=bool(torn) and not torn[0].cut, torn_head=state.torn_head)


def _torn_head(head: ChainHead | None, held: bytes | None, expected: int, torn: list[TornTail]) -> bool:
    """Whether the trail ends in a torn tail where the database's head record (`held`, its copy) would be: a power
    loss after the commit left the start of that record (then zeros), which the next start sets aside before it
    appends the record from the database. A record cut short there that is not the start of the database's copy is
    that record edited (TornTail.edits): _Bad, naming it."""
    if head is None or held is None or not torn or head.seq != expected:
        return False
    if torn[0].edits(held):
        raise _Bad(head.seq, f"{torn[0].where}: not the start of the database's record of seq {head.seq}, where it "
                             "was expected (a power loss leaves only its start, and a kill never cuts a record the "
                             "database committed): the line was edited")
    return True


def verify_current(current: Path, size: int) -> VerifyResult | None:
    """The trail's current file on its own, its first `size` bytes (what a start found there, before it wrote):
    each line's `prev` the hash of the line before it, the first line's that of the last rotated file's last line
    (the rotated files, written before, are `ffe audit verify`'s and `ffe doctor`'s to read). The start's check:
    a line damaged before the last two records, which the start compares with the database's copies
    (audit.repair_trail), is found here. First a quick pass over the hashes alone; where it finds a line that does
    not follow, or one without a hash, the walk `verify_trail` makes says what is wrong and where. None when whole."""
    state = _Walk(None)
    rotated = rotated_files(current)
    before = last_line(rotated[-1]) if rotated else None
    if before is not None:
        seq, prev = _fields(before)
        state.expected = (seq or 0) + 1
        state.prev_hash, state.chained = line_hash(before), prev is not None
        state.prev_where = f"{rotated[-1]} (its last line)"
    torn: list[TornTail] = []
    bad: _Bad | None = None
    with open(current, "rb") as f:
        if _chained_on(_upto(f, size), state.prev_hash):
            return None
        f.seek(0)
        try:
            state.run(_lines([(current, _upto(f, size))], torn))
        except _Bad as exc:
            bad = exc
    if bad is None:  # whole: records written before the chain began, at its start
        return None
    return VerifyResult(ok=False, first_bad_seq=bad.seq, reason=bad.reason, records=state.records,
                        first_seq=state.first_seq, last_seq=state.expected - 1, last_hash=state.prev_hash,
                        files=[str(current)], head=None, unchained=state.unchained,
                        torn_bytes=sum(t.size for t in torn))


_PREV_TAIL = len(_PREV) + 64 + 3  # `,"prev":"<64 hex digits>"}` and the newline


def _chained_on(lines: Iterable[bytes], prev: str) -> bool:
    """Whether every whole line carries, as its last key, the hash of the line before it (the first `prev`)."""
    want = prev.encode()
    for raw in lines:
        if not raw.endswith(b"\n"):
            return True  # an unfinished last line: a crash mid-write, set aside by the start
        if raw[-_PREV_TAIL:-67] != _PREV or raw[-67:-3] != want or raw[-3:] != b'"}\n':
            return False
        want = hashlib.sha256(raw[:-1]).hexdigest().encode()
    return True


def _upto(f: IO[bytes], size: int) -> Iterator[bytes]:
    """A file's lines within its first `size` bytes (a line running past them cut there: unfinished)."""
    left = size
    for raw in f:
        if left <= 0:
            return
        yield raw[:left]
        left -= len(raw)


class _Match:
    """The trail's seqs merged with the database's, both in order: the records the database never committed."""

    def __init__(self, committed: Iterable[int], many_transactions: bool = False) -> None:
        self.committed = iter(committed)
        self.next: int | None = next(self.committed, None)
        self.last = 0  # the database's last seq seen
        self.missing: list[int] = []
        self.ahead = Ahead(many_transactions=many_transactions)  # the records after the database's last event

    def walk(self, lines: Iterator[_Line]) -> Iterator[_Line]:
        for line in lines:
            if line.seq is not None:
                self.see(line.seq, line.raw)
            yield line

    def see(self, seq: int, raw: bytes) -> None:
        while self.next is not None and self.next < seq:
            self._advance()
        if self.next == seq:
            self._advance()
            return
        self.missing.append(seq)
        if self.next is None and seq > self.last:  # past the database's last event
            self.ahead.add(raw)

    def _advance(self) -> None:
        assert self.next is not None
        self.last = self.next
        self.next = next(self.committed, None)

    def result(self) -> Uncommitted:
        while self.next is not None:
            self._advance()
        inside = [s for s in self.missing if s < self.last]
        return Uncommitted(inside=inside, ahead=self.ahead, db_last=self.last)


class _Walk:
    """The check, one line at a time with one line of lookahead (enough to tell an edited line from an inserted
    one)."""

    def __init__(self, head: ChainHead | None) -> None:
        self.head = head
        self.expected = 1
        self.prev_hash = GENESIS
        self.chained = False
        self.unchained = 0
        self.records = 0
        self.first_seq = 0
        self.head_hash: str | None = None  # the hash of the line at the head's seq, once read
        self.prev_where = ""  # file:line of the line before
        self.head_where = ""
        self.torn_head = False  # the trail ends in the head record's start, torn (_torn_head)
        self.current: Path | None = None  # the trail's current file, to name a rotated file gone (missing_file)

    def run(self, lines: Iterator[_Line]) -> None:
        line: _Line | None = None
        for after in lines:
            if line is not None:
                self.check(line, after)
            line = after
        if line is not None:
            self.check(line, None)

    def check(self, line: _Line, after: _Line | None) -> None:
        e = self.expected
        if line.seq is None:
            raise _Bad(e, f"{line.where}: not an audit record where seq {e} was expected")
        if line.seq != e:
            if e == 1:
                raise _Bad(1, f"{line.where}: the trail starts at seq {line.seq}, not 1 (its first records are "
                              "missing)")
            gone = missing_file(self.current, line.where.endswith(":1"), e) if self.current is not None else None
            if line.seq > e and gone is not None:
                raise _Bad(e, f"{line.where}: seq {line.seq} follows seq {e - 1}: {gone} is missing (seq {e} to "
                              f"{line.seq - 1}: a rotated file deleted or moved)")
            if line.seq > e:
                raise _Bad(e, f"{line.where}: seq {line.seq} follows seq {e - 1}: seq {e} is missing here (a line "
                              "deleted or moved)")
            raise _Bad(e, f"{line.where}: seq {line.seq} again after seq {e - 1}, where seq {e} was expected (a "
                          "line inserted or moved)")
        if after is not None and after.seq == line.seq:
            raise _Bad(e, f"{after.where}: seq {e} a second time (a line inserted)")
        digest = line_hash(line.raw)
        if line.prev is None:
            if self.chained:
                raise _Bad(e, f"{line.where}: seq {e} carries no prev hash (a line inserted or edited)")
            self.unchained += 1
        else:
            self.chained = True
            if line.prev != self.prev_hash:
                bad = self._edited_or_inserted(line, digest, after)
                raise _Bad(bad, self._mismatch(line, bad))
        if self.head is not None and e == self.head.seq:
            self.head_hash, self.head_where = digest, line.where
        if self.records == 0:
            self.first_seq = e
        self.records += 1
        self.prev_hash = digest
        self.prev_where = line.where
        self.expected = e + 1

    def _mismatch(self, line: _Line, bad: int) -> str:
        e = self.expected
        if e == 1:
            return f"{line.where}: seq 1 does not start the chain (its prev hash is not the genesis value)"
        if bad < e:
            return (f"{self.prev_where}: seq {bad} was changed: its hash is not the prev hash seq {e} carries "
                    f"({line.where}), and the lines after seq {e} follow on from seq {e}")
        return (f"{line.where}: seq {e} does not follow seq {e - 1} (its prev hash is not that line's hash) and "
                "nothing after it follows it: a line inserted or edited")

    def _edited_or_inserted(self, line: _Line, digest: str, after: _Line | None) -> int:
        """The line's prev is not the hash of the line before it. If the next line follows this one (its prev is
        this line's hash), this line is as written and the one before it was edited; otherwise this one is not."""
        e = self.expected
        if e == 1:
            return 1
        if after is not None:
            confirmed = after.seq == e + 1 and after.prev == digest
        else:
            confirmed = self.head is not None and self.head.seq == e and self.head.hash == digest
        return e - 1 if confirmed else e

    def finish(self) -> None:
        head = self.head
        if head is None or head.seq == 0:
            return
        last = self.expected - 1
        if self.torn_head and last + 1 == head.seq:  # its start, torn: checked against the database's copy
            return
        if last < head.seq:
            raise _Bad(last + 1, f"the trail ends at seq {last} but the database's chain head is seq {head.seq}: "
                                 f"seq {last + 1} to {head.seq} are missing from the trail (cut short)")
        if self.head_hash != head.hash:
            raise _Bad(head.seq, f"{self.head_where}: seq {head.seq} does not hash to the database's chain head "
                                 "(the line was edited)")
