"""The errors an operator sees, each carrying its exit code.

Every error that reaches the command line derives from FfeError; `ffe_cli.main` prints it as one line
(`ffe: error: ...`) and exits with its `exit_code`. Nothing else decides an exit code.

- 2: the operator's input is wrong (usage, configuration, a CSV file, a key map, a refused start, a schema, a
  database path that names no ffe database).
- 1: a runtime failure (a command the engine refused, a venue or disk failure).
"""

from __future__ import annotations


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
                           "backup, or move it away to start a new account")


def unreadable_database(path: object, exc: BaseException) -> StorageError:
    """An SQLite error met while reading a database, as the one line the operator reads: an OperationalError (a
    lock, a WAL that cannot be read from here) says the database cannot be read there; any other is damage (what
    SQLite finds is not what it wrote)."""
    import sqlite3  # loaded already by whoever met the error; the commands that never open a database skip it

    if isinstance(exc, sqlite3.OperationalError):
        return StorageError(f"{path}: cannot read the database ({exc})")
    return damaged_database(path, str(exc))


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
    return StorageError(f"{path}: cannot write ({reason}): free space on its disk or make its directory writable, "
                        "then start again")


class Interrupted(FfeError):
    """^C during a command that keeps what it did so far (the message says where)."""

    exit_code = 130
