"""The disk reserve: a file of RESERVE_BYTES beside the database (`ffe.reserve`), kept so that HALTED can still be
stored when the disk is full.

On a full disk the database's WAL holds the records not yet checkpointed, and the checkpoint that would free room
needs room itself: nothing more can be written, HALTED included. When a write fails, the store empties the reserve
(truncated to 0 bytes: its room is free again) and then stores HALTED. The emptied file stays as the mark that a
run stopped on a record it could not write: a start that finds it empty comes up HALTED even if HALTED could not be
stored, and fills it again. A data directory without the file (a new one, one restored, one from an older release)
gets a full one.

Its bytes are random: a compressing or deduplicating filesystem would keep zeros in no room at all.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import storage_failure

RESERVE_NAME = "ffe.reserve"
RESERVE_BYTES = 128 * 1024  # a few WAL frames are all HALTED takes; small enough for any disk ffe runs on


def reserve_path(data_dir: Path) -> Path:
    return data_dir / RESERVE_NAME


def used(data_dir: Path) -> bool:
    """Whether a run emptied the reserve (it stopped on a record it could not write) and no start has filled it
    again since."""
    try:
        return os.stat(reserve_path(data_dir)).st_size == 0
    except FileNotFoundError:
        return False


def fill(data_dir: Path) -> None:
    """The reserve in full, written beside it and renamed over it, synced: it is whole or not there at all (an
    emptied one stays, still saying so, until a whole one replaces it). StorageError when the disk has no room."""
    path = reserve_path(data_dir)
    try:
        if os.stat(path).st_size >= RESERVE_BYTES:
            return
    except FileNotFoundError:
        pass
    part = path.with_name(path.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            data = memoryview(os.urandom(RESERVE_BYTES))
            while data:  # a write cut short by a full disk says so on the next one
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, path)
        dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise storage_failure(path, exc) from None


def release(data_dir: Path) -> bool:
    """Free the reserve's room (a write failed), leaving the empty file as the mark of it. Returns whether the
    mark is there (not when none was kept, or the directory takes no change at all)."""
    try:
        os.truncate(reserve_path(data_dir), 0)
    except OSError:
        return False
    return True
