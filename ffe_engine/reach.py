"""The first look at a path the operator gave (or configured): a path that cannot be reached is one line naming it
and why, exit 2 (errors.UnreachablePath), never a traceback. Python's Path.exists, is_file and is_dir answer False
for a path that is not there, but raise for one they cannot look at (a directory on the way closed to this user, a
name too long), and answer False for a loop of symbolic links too, which is said here as one; Path.resolve raises
RuntimeError for a loop."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

from .errors import LOG_DIR_RIGHT, is_unreachable, not_a_file, unreachable


def exists(path: Path, given: str = "") -> bool:
    return _looked(path.exists, path, given)


def is_file(path: Path, given: str = "") -> bool:
    return _looked(path.is_file, path, given)


def is_dir(path: Path, given: str = "") -> bool:
    return _looked(path.is_dir, path, given)


def is_a_file(path: Path) -> bool:
    """Whether a file of the records (the audit trail's, the records set aside beside it) is there (False: nothing
    there), looked at before it is opened. Anything there but a regular file (a directory, a FIFO, a device, a socket,
    a link to one) is errors.NotAFile: opened, a FIFO would be waited on for ever and a device read without end; one
    that cannot be reached (a loop of symbolic links) is errors.UnreachablePath: said as the file at fault by every
    reader, never as a backup's destination."""
    said = not_a_file(path, LOG_DIR_RIGHT)
    if said is not None:
        raise said
    return exists(path)


def _looked(look: Callable[[], bool], path: Path, given: str) -> bool:
    try:
        found = look()
    except OSError as exc:
        raise said(path, exc, given) from None
    if not found:
        _not_a_loop(path, given)
    return found


def _not_a_loop(path: Path, given: str) -> None:
    """Path.exists, is_file and is_dir answer False for a loop of symbolic links as for a path not there (from
    Python 3.8): a loop is said as one, not as a file missing."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise said(path, exc, given) from None


def resolved(path: Path, given: str = "") -> Path:
    """path.resolve(), a loop of symbolic links or a name too long on the way said as the path at fault."""
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:
        raise said(path, exc, given) from None


def names_in(directory: Path) -> list[str]:
    """The names in `directory`; none when it is not there."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise said(directory, exc) from None


def said(path: Path, exc: BaseException, given: str = "") -> BaseException:
    """`exc` as the operator's one line when it says the path cannot be reached; any other, as it is."""
    return unreachable(path, exc, given) if is_unreachable(exc) else exc
