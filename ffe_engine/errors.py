"""The errors an operator sees, each carrying its exit code.

Every error that reaches the command line derives from FfeError; `ffe_cli.main` prints it as one line
(`ffe: error: ...`) and exits with its `exit_code`. Nothing else decides an exit code.

- 2: the operator's input is wrong (usage, configuration, a CSV file, a key map, a refused start, a schema, a
  database path that names no ffe database, something other than a regular file where one of ffe's files is).
- 1: a runtime failure (a command the engine refused, a venue or disk failure, a port another process holds).
"""

from __future__ import annotations

import errno
import os
import re
import stat


class FfeError(Exception):
    """Base of every error shown to the operator as one line."""

    exit_code = 1


class UsageError(FfeError):
    """Bad input on the command line (a missing id, a bad value)."""

    exit_code = 2


class ArgumentError(UsageError):
    """A mistake in a command's arguments that the command finds itself (options that do not go together, a value it
    cannot read): `ffe_cli.main` ends the line with the command's `--help`, as it does argparse's own mistakes, since
    only it knows which command was typed."""


class StartError(FfeError):
    """The engine cannot start as configured (live without --live, a held data directory, missing credentials)."""

    exit_code = 2


class PortInUse(FfeError):
    """A port the engine listens on is held by another process: a start refused now, not a configuration error (the
    port can be free at the next start with nothing edited), so exit 1, which systemd starts again."""

    exit_code = 1


class ControlError(FfeError):
    """An operator command that cannot be carried out now (the message says why)."""

    exit_code = 1


class StorageError(FfeError):
    """The records cannot be trusted or written: a damaged or lost database, a full disk, a read-only directory.
    The message names the file and what to do; a refused start leaves the file as it was found."""

    exit_code = 1


class DamagedRecords(StorageError):
    """The records cannot be trusted, though the disk takes writes: the audit trail is not the database's copy of
    them (edited, or its first records gone), or the database is gone while its trail remains. The operator is paged
    START_FAILED, not told of a disk."""


class DamagedDatabase(DamagedRecords):
    """The database holds records that are not what ffe wrote (it fails SQLite's checks, or a table, a column or a
    value is not one ffe writes). Nothing more is written to it, not even HALTED: it is left as it was found."""


class NotADatabase(FfeError):
    """What is at the database's path is not an ffe database: a directory, or another application's SQLite file. A
    wrong storage.path or --data-dir, not damage: it is left as it is, and no ffe record is written into it."""

    exit_code = 2


def not_ffe_database(path: object, what: str) -> NotADatabase:
    return NotADatabase(f"{path}: not an ffe database ({what}); it was left as it is: is storage.path (--data-dir) "
                        "right? ffe keeps its records in a database of its own")


def damaged_database(path: object, what: str) -> DamagedDatabase:
    """A damaged database as the one line the operator reads: the file, what is damaged and what to do."""
    return DamagedDatabase(f"{path}: the database is damaged ({what}); it was left as it is: restore it from a "
                           "backup, or move it and the audit trail away to start a new account")


def unreadable_database(path: object, exc: BaseException) -> FfeError:
    """An SQLite error met while reading a database, as the one line the operator reads: an OperationalError (a
    lock, a WAL that cannot be read from here) says the database cannot be read there; any other is damage (what
    SQLite finds is not what it wrote)."""
    import sqlite3  # loaded already by whoever met the error; the commands that never open a database skip it

    if isinstance(exc, sqlite3.OperationalError):
        return cannot_read_database(path, exc)
    return closed_to_reader(path) or damaged_database(path, str(exc))


def cannot_read_database(path: object, exc: BaseException) -> FfeError:
    """A database SQLite could not read here: one this user cannot open is a path that cannot be reached (exit 2,
    as every command says it); otherwise a lock, or a WAL that cannot be read from here (exit 1)."""
    return closed_to_reader(path) or StorageError(f"{path}: cannot read the database ({exc})")


def closed_to_reader(path: object) -> UnreachablePath | None:
    """The database, its WAL or its shared memory, that this user cannot open (SQLite says only `unable to open
    database file`), as the path that cannot be reached; None when each opens (or is not there)."""
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        try:
            os.close(os.open(name, os.O_RDONLY))
        except FileNotFoundError:
            continue
        except OSError as exc:
            if is_unreachable(exc):
                return unreachable(name, exc)
    return None


def first_problem(problems: list[str]) -> str:
    """What SQLite's check found, as part of one line: the first problem and how many more."""
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")


def storage_failure(path: object, exc: BaseException) -> StorageError:
    """A write that failed (full disk, read-only directory, file size limit, a database another process keeps
    locked), as the one line the operator reads."""
    if str(getattr(exc, "sqlite_errorname", "")).startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StorageError(f"{path}: cannot write (the database is locked by another process): end what holds it "
                            "(an sqlite3 shell left in a transaction, a tool writing to it), then start again")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOTDIR:  # no disk's doing: a file where a folder goes
        return StorageError(f"{path}: cannot write ({reason}): a part of its path is a file, not a directory: move "
                            "it away, then start again")
    return StorageError(f"{path}: cannot write ({reason}): free space on its disk or make its directory writable, "
                        "then start again")


def directory_in_place(path: object) -> StartError:
    """A directory where one of the engine's files goes (a lock, the disk reserve, the audit trail): a path to put
    right, not a disk that failed, as the write to it would say."""
    return StartError(f"{path}: is a directory, not a file; it was left as it is: move it away, then start again")


class NotAFile(FfeError):
    """Something other than a regular file where one of ffe's files is (a directory, a FIFO, a device, a socket, or
    a link to one): a path to put right, not damage nor a full disk. Written into, a device takes every record and
    keeps none; read, a FIFO is waited on for ever and a device read without end."""

    exit_code = 2


# What a start says to do once a path that is not a file is put right; and a command that reads the records.
START_AGAIN = ", then start again"
LOG_DIR_RIGHT = " (is --log-dir right?)"
KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_a_file(path: object, then: str) -> NotAFile | None:
    """What is at `path` when it is there and is not a regular file, as the one line the operator reads, which
    ends with `then` (what to do once it is moved away); None for a regular file, or nothing there (opening it says
    what is wrong with a path that cannot be reached)."""
    name = os.fspath(path)  # type: ignore[call-overload]
    try:
        os.stat(name)
    except FileNotFoundError:
        return _link_to_nowhere(path, name, then)
    except OSError:
        return None
    kind = kind_of(name)
    if kind is None:
        return None
    return NotAFile(f"{path}: is {kind}, not a file; it was left as it is: move it away{then}")


def kind_of(path: object) -> str | None:
    """What is at `path` when it is there and is not a regular file, as the operator reads it (`a FIFO`, `a character
    device (a link to /dev/zero)`); None for a regular file, nothing there, or a path that cannot be looked at (its
    open says why). Looked at without opening it: opened, a FIFO is waited on and a device may be read without end."""
    name = os.fspath(path)  # type: ignore[call-overload]
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in KINDS if test(mode)), "not a file")
    if os.path.islink(name):
        kind += f" (a link to {os.readlink(name)})"
    return kind


def _link_to_nowhere(path: object, name: str, then: str) -> NotAFile | None:
    """A link whose target's directory is not there: nothing can be made through it (opened to be written, the open
    says only `No such file or directory`, which reads as a disk failing). A link to a file not there yet, in a
    directory that is, is not said: the file is made through it, as it would be without the link."""
    try:
        target = os.readlink(name)
    except OSError:
        return None  # no link: nothing there
    folder = os.path.dirname(os.path.join(os.path.dirname(name), target))
    if os.path.isdir(folder or "."):
        return None
    return NotAFile(f"{path}: is a link to {target}, whose directory is not there; it was left as it is: move it away "
                    f"or make that directory{then}")


class UnreachablePath(FfeError):
    """A path the operator gave (or configured) that cannot be reached: a directory on the way or the file closed to
    this user, a name longer than the file system takes, a loop of symbolic links. Where to look, not damage."""

    exit_code = 2


NO_PERMISSION = "permission denied (check its owner and mode: another user's? run ffe as the user that owns it)"
UNREACHABLE_WHY = {
    errno.EACCES: NO_PERMISSION,
    errno.EPERM: NO_PERMISSION,
    errno.ENAMETOOLONG: "file name too long for the file system",
    errno.ELOOP: "a loop of symbolic links",
}
# Path.resolve says a loop of symbolic links as a RuntimeError (Python 3.12 and older), naming where it began.
SYMLINK_LOOP = re.compile(r"Symlink loop from '(.*)'$", re.S)


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says a path cannot be reached (UNREACHABLE_WHY), rather than a disk or internal failure."""
    if isinstance(exc, OSError):
        return exc.errno in UNREACHABLE_WHY
    return isinstance(exc, RuntimeError) and SYMLINK_LOOP.match(str(exc)) is not None


def unreachable(path: object, exc: BaseException, given: str = "") -> UnreachablePath:
    """`path` that cannot be reached, as the one line the operator reads: the path (after the option that gave it,
    when the caller knows it) and why."""
    why = UNREACHABLE_WHY.get(exc.errno or 0, exc.strerror or str(exc)) if isinstance(exc, OSError) \
        else UNREACHABLE_WHY[errno.ELOOP]
    return UnreachablePath(f"{given + ' ' if given else ''}{path}: cannot be reached: {why}")


def unreachable_from(exc: BaseException) -> UnreachablePath | None:
    """The one line for an error that says a path cannot be reached, naming the path the error names; None for any
    other error, or one that names no path."""
    if not is_unreachable(exc):
        return None
    if isinstance(exc, OSError):
        return unreachable(exc.filename, exc) if exc.filename is not None else None
    found = SYMLINK_LOOP.match(str(exc))
    return unreachable(found.group(1), exc) if found else None


class Interrupted(FfeError):
    """^C during a command that keeps what it did so far (the message says where)."""

    exit_code = 130
