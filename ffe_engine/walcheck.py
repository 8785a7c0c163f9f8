"""Whether a database's write-ahead log (ffe.db-wal) can be read whole, before SQLite opens it.

SQLite reads a WAL's frames up to the first one whose checksum or salt does not match, and takes the commits before
it; a WAL whose header does not check out it ignores altogether. After a crash that is how a transaction cut short
is dropped. But a WAL damaged afterwards (a byte flipped, its header written over) loses commits that were whole:
the records newest to the account, not yet in the database file. Opened for writing, the WAL is then reset, and
those records are gone from the database without a word (a start would call them "never committed"). This reads the
WAL as SQLite would and says so when a frame of the same log follows a frame that fails: damage, not a tail cut
short (https://www.sqlite.org/fileformat2.html#the_write_ahead_log).
"""

from __future__ import annotations

import struct
from pathlib import Path

HEADER = 32
FRAME_HEADER = 24
MAGIC = (0x377F0682, 0x377F0683)  # the low bit: the checksums' words are big-endian
VERSION = 3007000


def damage(wal: Path) -> str | None:
    """What is damaged in the WAL at `wal` ("its header does not check out", "frame 12 of 40 ..."), or None for a
    WAL SQLite reads whole (or a tail cut short by a crash), an empty one, or none."""
    try:
        data = wal.read_bytes()
    except OSError:
        return None
    if len(data) < HEADER:
        return None  # no frame: SQLite starts the log again, nothing lost
    magic, version, page, _, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:HEADER])
    if magic not in MAGIC or version != VERSION or page < 512 or page > 65536 or page & (page - 1):
        return "its header is not a write-ahead log's"
    order = ">" if magic & 1 else "<"
    if _checksum(data[:24], order, 0, 0) != (c1, c2):
        return "its header does not check out: SQLite would ignore every commit in it"
    size = FRAME_HEADER + page
    frames = (len(data) - HEADER) // size
    s0, s1 = c1, c2
    for i in range(frames):
        at = HEADER + i * size
        _, _, f_salt1, f_salt2, f1, f2 = struct.unpack(">6I", data[at:at + FRAME_HEADER])
        if (f_salt1, f_salt2) == (salt1, salt2):
            s0, s1 = _checksum(data[at:at + 8], order, s0, s1)
            s0, s1 = _checksum(data[at + FRAME_HEADER:at + size], order, s0, s1)
            if (s0, s1) == (f1, f2):
                continue
        # SQLite stops here. Damage, when a whole commit of this log follows: frames that chain on from this one's
        # own checksum (as they were written after it) up to a commit frame. A transaction a crash or a full disk
        # cut short leaves frames that chain to no commit: dropped, as SQLite should.
        committed = _commit_after(data, i, frames, size, order, (salt1, salt2))
        if committed is not None:
            return (f"frame {i + 1} of its {frames} does not check out, while a commit written after it (frame "
                    f"{committed + 1}) does: SQLite would drop every commit from that frame on")
        return None
    return None


def _commit_after(data: bytes, bad: int, frames: int, size: int, order: str, salts: tuple[int, int]) -> int | None:
    """The first commit frame after frame `bad` reached by frames that each check out against the stored checksum of
    the one before (the chain as it was written), or None."""
    prev = struct.unpack(">2I", data[HEADER + bad * size + 16:HEADER + bad * size + 24])
    for j in range(bad + 1, frames):
        at = HEADER + j * size
        _, commit, f_salt1, f_salt2, f1, f2 = struct.unpack(">6I", data[at:at + FRAME_HEADER])
        if (f_salt1, f_salt2) != salts:
            return None
        s0, s1 = _checksum(data[at:at + 8], order, *prev)
        if _checksum(data[at + FRAME_HEADER:at + size], order, s0, s1) != (f1, f2):
            return None
        if commit:
            return j
        prev = (f1, f2)
    return None


def _checksum(data: bytes, order: str, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum of `data` (a multiple of 8 bytes), going on from (s0, s1)."""
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1
