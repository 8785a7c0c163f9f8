"""The database connection of a paper or live run: one thread owns the SQLite connection and runs the statements
the event loop hands it, in order.

A hand-over costs two thread switches and a wake-up of the loop, about 70 us of CPU, more than most statements
take. So inside a transaction the statements that return nothing are held, and handed over together with the next
statement that must be answered now: the COMMIT, or a read. A bar's transaction (its events, their decision rows,
the books, the chain head) is one hand-over instead of seven.

A held statement that fails fails its transaction: the COMMIT raises its error instead of committing, and the store
rolls the transaction back, as it would have on the statement itself. So it does when another task's read handed
the statements over (the read is answered all the same, having seen what the statements before the failure wrote,
as it would have). Nothing after the failure in the same transaction runs. A ROLLBACK drops what is still held; one
before anything of the transaction reached the database runs nothing, and so does one after SQLite ended the
transaction itself (a COMMIT the disk refused): every caller's ROLLBACK is safe, whatever failed before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .sqlwriter import NO_ROWS, Rows, returns_rows

Statement = tuple[str, Any, bool]  # sql, params (rows for executemany), executemany


def _head(sql: str) -> str:
    return sql.lstrip()[:8].upper()


class Connection:
    """An SQLite connection in autocommit mode (transactions are the caller's BEGIN and COMMIT), used from one
    event loop."""

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._thread = thread
        # The event loop's side: the open transaction's statements not handed over yet.
        self._held: list[Statement] = []
        self._in_tx = False
        # The thread's side (statements run there in the order handed over, whichever task handed them): the error
        # of a held statement of the open transaction, which its COMMIT raises.
        self._failed: sqlite3.Error | None = None

    @classmethod
    async def connect(cls, path: str) -> "Connection":
        # One worker: every statement runs on the thread that opened the connection, in the order handed over.
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ffe-sqlite")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(thread, _open, path)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(conn, thread)

    async def execute(self, sql: str, params: Any = ()) -> Rows:
        return await self._statement((sql, params, False))

    async def executemany(self, sql: str, rows: Any) -> Rows:
        return await self._statement((sql, rows, True))

    async def _statement(self, st: Statement) -> Rows:
        head = _head(st[0])
        ends = head.startswith(("COMMIT", "ROLLBACK"))
        if head.startswith("BEGIN"):
            self._in_tx = True
        if self._in_tx and not ends and not returns_rows(st[0]):
            self._held.append(st)
            return NO_ROWS
        if ends:
            self._in_tx = False
        held, self._held = self._held, []
        rows: Rows = await asyncio.get_running_loop().run_in_executor(self._thread, self._run, held, st, head)
        return rows

    def _run(self, held: list[Statement], last: Statement, head: str) -> Rows:
        """On the connection's thread: the held statements, then `last` (its first words `head`), whose rows are
        returned."""
        if head.startswith("ROLLBACK"):
            self._failed = None
            if held and _head(held[0][0]).startswith("BEGIN"):
                return NO_ROWS  # nothing of the transaction reached the database
            if not self._conn.in_transaction:
                # SQLite ended it already (a COMMIT or a statement the full disk refused rolls it back): a ROLLBACK
                # would raise, and hide the failure it follows.
                return NO_ROWS
            return _execute(self._conn, last)
        for st in held:
            if self._failed is not None:
                break  # the transaction failed: nothing more of it runs
            try:
                _execute(self._conn, st)
            except sqlite3.Error as exc:
                self._failed = exc
        if head.startswith("COMMIT") and self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        return _execute(self._conn, last)

    async def copy_to(self, target: str) -> None:
        """The whole database as this connection reads it (its WAL's commits included) written to `target`, a new
        file (SQLite's backup)."""
        def copy() -> None:
            dest = sqlite3.connect(target)
            try:
                self._conn.backup(dest)
            finally:
                dest.close()

        await asyncio.get_running_loop().run_in_executor(self._thread, copy)

    async def close(self, checkpoint: bool = True) -> None:
        """Closed; without `checkpoint`, its WAL is left as it is, not written into the database file (SQLite's
        checkpoint on close; Python 3.12 and newer, where its setting is reached)."""
        self._held, self._in_tx = [], False

        def close() -> None:
            no_checkpoint = getattr(sqlite3, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE", None)
            setconfig = getattr(self._conn, "setconfig", None)
            if not checkpoint and no_checkpoint is not None and setconfig is not None:
                with contextlib.suppress(sqlite3.Error):
                    setconfig(no_checkpoint, True)
            self._conn.close()

        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, close)
        finally:
            self._thread.shutdown(wait=False)


def _open(path: str) -> sqlite3.Connection:
    # Used on the connection's thread only; the flag lets it be closed from elsewhere should that thread be gone.
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def _execute(conn: sqlite3.Connection, st: Statement) -> Rows:
    sql, params, many = st
    cur = conn.executemany(sql, params) if many else conn.execute(sql, params)
    return Rows(cur.fetchall() if cur.description else [], cur.description, cur.rowcount)
