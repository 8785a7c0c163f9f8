"""Staging directories: the files of a backup, a verify or a restore on their way, in a directory its command holds
(`flock` on the directory) while it runs.

A command killed outright (SIGKILL, a power loss) leaves its staging behind, held by nobody: `sweep` removes such
leftovers, and never a staging directory that a command still holds, so two commands sharing a directory (two
backups into one destination) do not remove each other's work.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType


class Staging:
    """A new directory `<prefix>XXXXXXXX` in `parent`, held until `remove` (or the end of a `with` block)."""

    def __init__(self, parent: Path, prefix: str) -> None:
        while True:
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            fd = _hold(path)
            if fd is not None:
                break
            # A sweep took it between its making and its holding: make another.
        self.path = path
        self._fd: int | None = fd

    def remove(self) -> None:
        if self._fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)  # released only once it is gone: a sweep never meets it half removed
        self._fd = None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()


def _hold(path: Path) -> int | None:
    """The held directory's descriptor, or None when it is another's or no longer there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            return fd
    except OSError:  # held (BlockingIOError), or removed meanwhile
        pass
    os.close(fd)
    return None


def sweep(parent: Path, prefix: str) -> list[Path]:
    """Remove the staging directories named `<prefix>...` in `parent` that no command holds: what killed commands
    left. Returns those removed. What cannot be opened (another user's) is left alone."""
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    removed = []
    for name in names:
        if not name.startswith(prefix):
            continue
        path = parent / name
        fd = _hold(path)
        if fd is None:
            continue
        try:
            shutil.rmtree(path)
            removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
