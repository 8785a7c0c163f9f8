"""The alerts sent past the outbox, kept across restarts in a small file beside the database (`ffe.alerts-sent`).

RECORDS_UNWRITABLE, and START_FAILED on records that cannot be trusted, are sent when nothing can be recorded in
the database, so the outbox cannot hold their window across a restart; yet a service manager restarts the engine
into the same failure again and again. This file holds it instead: for each key, when it was last sent and a
digest of its cause. It is not the database, so a database that is damaged or takes no write does not lose it; and
it is always FILE_BYTES long, so on a full disk, where a new copy cannot be written beside it and renamed over it,
it is overwritten in place, which takes no new block.

It fails towards paging: a file missing, unreadable or damaged (its digest does not match, as a write cut short in
place leaves it), or one that cannot be written, holds no window, and the next start pages again rather than never.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson

from . import logs

log = logs.get_logger("ffe.alerts")

FILE_NAME = "ffe.alerts-sent"
FILE_BYTES = 4096  # a few keys: RECORDS_UNWRITABLE, START_FAILED, START_SUCCEEDED, REARMED, DELIVERED
# Not an alert: when a start last got through. A failure sent before it is news again when it comes back.
START_SUCCEEDED = "START_SUCCEEDED"
REARMED = "REARMED"  # not an alert either: when the operator last re-armed the engine
DELIVERED = "DELIVERED"  # nor this: when an alert last left through the outbox


def sent_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def cause_digest(cause: str) -> str:
    return hashlib.sha256(cause.encode()).hexdigest()[:32]


SENT_LOST = "alerts sent before this start: their repeats are sent again"


def read(path: Path, lost: str = SENT_LOST) -> dict[str, dict[str, Any]]:
    """Each key's last send: {"cause": digest, "ts": wall seconds}. Empty when nothing can be trusted in it, which
    is said once in the log with `lost`: what is not known then, and what follows (another file of this make says
    its own)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning(f"cannot be read: {lost}", file=str(path), error=exc.strerror or str(exc))
        return {}
    head, _, body = raw.rstrip().partition(b" ")
    entries: Any = None
    if hashlib.sha256(body).hexdigest().encode() == head:
        try:
            entries = orjson.loads(body)
        except orjson.JSONDecodeError:
            entries = None
    if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("cause"), str) and isinstance(e.get("ts"), (int, float))
            for e in entries.values()):
        said = (str(path), hashlib.sha256(raw).digest())
        if said not in _DAMAGE_SAID:  # read again at each look the process takes: said once
            _DAMAGE_SAID.add(said)
            log.warning(f"damaged: {lost}", file=str(path))
        return {}
    return entries


_DAMAGE_SAID: set[tuple[str, bytes]] = set()  # (file, its bytes' digest) of the damage said in this process


def _blob(entries: dict[str, dict[str, Any]]) -> bytes:
    body = orjson.dumps(entries)
    return hashlib.sha256(body).hexdigest().encode() + b" " + body + b"\n"


def fits(entries: dict[str, dict[str, Any]]) -> bool:
    """Whether `entries` fit in the file whole (`write` leaves the oldest out of what does not)."""
    return len(_blob(entries)) <= FILE_BYTES


def write(path: Path, entries: dict[str, dict[str, Any]],
          lost: str = "alert sent, but cannot be kept for the next start: a restart into the same failure sends it "
                      "again") -> bool:
    """`entries` as the whole file, the oldest left out if they do not fit. False (logged as `lost`) when it cannot
    be written at all: the next start then pages again. Any file of this make: `path` says which."""
    kept = dict(sorted(entries.items(), key=lambda kv: kv[1]["ts"], reverse=True))
    while True:
        blob = _blob(kept)
        if len(blob) <= FILE_BYTES or not kept:
            break
        kept.popitem()
    blob = blob.ljust(FILE_BYTES, b" ")
    try:
        _replace(path, blob)
        return True
    except OSError:
        pass
    try:
        _overwrite(path, blob)
        return True
    except OSError as exc:
        log.warning(lost, file=str(path), error=exc.strerror or str(exc))
        return False


def rearmed(path: Path, ts: float) -> None:
    """The operator re-armed the engine: a disk that fills again (RECORDS_UNWRITABLE) is news, sent at once, and so
    is a HALTED a later start keeps from before (its window in the outbox began before `ts`: `last_rearm`)."""
    _mark(path, REARMED, ts, ("RECORDS_UNWRITABLE",), "a re-arm cannot be kept for the next start: a HALTED it "
          "keeps from before may not be paged again within alerts.window_s")


def last_rearm(path: Path) -> float | None:
    """When the engine was last re-armed, as `rearmed` kept it; None when not known."""
    return _marked(path, REARMED)


def start_succeeded(path: Path, ts: float, *, halted: bool) -> None:
    """A start got through (its records written): the failures that refused the starts before it are over, and
    their return is news. START_FAILED is forgotten, and RECORDS_UNWRITABLE unless the engine came up HALTED: a
    restart into a disk that fills again at once is still the failure that page told, the engine still HALTED.
    When it happened is kept (START_SUCCEEDED), for the START_FAILED windows the outbox holds (`last_start`)."""
    _mark(path, START_SUCCEEDED, ts, ("START_FAILED",) if halted else ("START_FAILED", "RECORDS_UNWRITABLE"),
          "a start that succeeded cannot be kept for the next start: a failure paged before it may not be paged "
          "again within alerts.window_s")


def last_start(path: Path) -> float | None:
    """When a start last got through, as `start_succeeded` kept it; None when not known."""
    return _marked(path, START_SUCCEEDED)


def delivered(path: Path, ts: float) -> None:
    """An alert left through the outbox (a STARTED, a HALTED a start restated): a failure sent past it before
    (`send_now`) is no longer the operator's last word, and is sent again if it comes again within its window."""
    _mark(path, DELIVERED, ts, (), "an alert's delivery cannot be kept for the next start: a failure paged before it "
          "may not be paged again within alerts.window_s")


def last_sent(path: Path, key: str) -> float | None:
    """When the alert `key` was last sent past the outbox (START_FAILED before anything could be recorded), unless a
    start that got through since forgot it; None when not known."""
    return _marked(path, key)


def _mark(path: Path, key: str, ts: float, forgotten: tuple[str, ...], unkept: str) -> None:
    """When `key` happened kept in the file (no alert: a moment the windows are measured against), the keys it
    ends forgotten; `unkept`: what is lost if the file cannot be written (logged)."""
    entries = read(path)
    for gone in forgotten:
        entries.pop(gone, None)
    entries[key] = {"cause": "", "ts": ts}
    write(path, entries, unkept)


def _marked(path: Path, key: str) -> float | None:
    entry = read(path).get(key)
    return float(entry["ts"]) if entry is not None else None


def prepare(path: Path, entries: dict[str, dict[str, Any]] | None = None) -> None:
    """The file made now, while the disk takes writes: when it fills later, it is overwritten in place. `entries`:
    what it holds, when the caller has read it already (else read here)."""
    try:
        if path.stat().st_size == FILE_BYTES:
            return
    except FileNotFoundError:
        pass
    except OSError:
        return  # written when an alert is sent past the outbox, or said then that it cannot be
    write(path, read(path) if entries is None else entries)


def _replace(path: Path, blob: bytes) -> None:
    part = path.with_name(path.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, blob)
        finally:
            os.close(fd)
        os.replace(part, path)
    except OSError:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _overwrite(path: Path, blob: bytes) -> None:
    """In place, over a file of the same length: no new block needed (a digest that no longer matches, should the
    write be cut short, reads as no window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size != len(blob):
            raise OSError(f"{path}: not {len(blob)} bytes long")
        _write_all(fd, blob)
    finally:
        os.close(fd)


def _write_all(fd: int, blob: bytes) -> None:
    data = memoryview(blob)
    while data:
        data = data[os.write(fd, data):]
    os.fsync(fd)
