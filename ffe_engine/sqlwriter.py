"""The decision index, and a backtest's record writer: a child process that owns the SQLite connection and
appends the run's audit lines.

The decisions, votes and gate_results tables index the `decision` events: their rows are derived from each event's
audit record (`index_rows`), so a decision is written once, as its record, and what the tables say can never
disagree with the audit trail. The live store derives them in process when it flushes.

A backtest writes about four rows per bar, and binding and inserting them costs a third of the run on one core.
Its database is its own (written once, never resumed, never shared), so `WriterProcess` hands it to a child
process on the machine's other core: the engine queues statements and event records, sends them as one frame at
each commit, and reads that frame's acknowledgement one frame later, so a failed write stops the run within two
flushes. Reads wait for everything sent before them. The child also appends the event records to the run's
audit file, whole lines per frame, as the AuditWriter does in a live run: the records cross to it once.

Frames, both ways: kind (1 byte), payload length (4 bytes, big-endian), payload. JSON throughout, no pickle.
- `W` write: header length (4 bytes), header JSON `[op, ...]`, then the event records end to end. An op is
  `["x", sql, params]`, `["m", sql, rows]` (executemany), `["e", [[seq, ts, name, length], ...]]` (events rows,
  their records taken in turn from after the header, plus the index rows of the decisions among them) or
  `["o", {option: value}]`, the run's record options from here on: `compact` (store the event records compact,
  records.py), `chain` (the engine's bus left the hash chain to the writer: each record gets its `prev` here, the
  audit file the chained lines, the kv table the chain head with each frame; compact rows are kept without `prev`,
  64 hex digits of entropy no dictionary compresses), `events_table` (false: event records go to the audit file
  only), `gate_rows` (false: the gate results of each order are not kept), `vacuum` (rewrite the database in
  small, full pages when it is closed).
  Answered `{"ok": true}`.
- `Q` query: `[sql, params]`, answered `{"rows": [...], "columns": [...]}`.
- `C` close: commit and close, answered `{"ok": true}`; the child then exits.
Any answer may be `{"error": "...", "file": "..."}` (what failed, and in which file: the database or the audit
file): the first failed write, after which the child writes nothing more and rolls back the transaction it was in
(what earlier flushes committed stays), or a failed read (writes go on).

Run as `python -m ffe_engine.sqlwriter DATABASE [AUDIT_FILE]`. An audit file named `.zst` is written compressed, one
Zstandard frame per write frame (a file of frames reads as one stream: `zstd -dc`). If the engine's process dies,
the child commits what it was sent and exits when its input closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Iterable

import orjson

from . import records as compact
from .errors import StorageError, storage_failure
from .chain import GENESIS, HEAD_KEY, chained, line_hash

SQL_EVENT = "INSERT INTO events (seq, ts, event, data) VALUES (?,?,?,?)"
SQL_DECISION = ("INSERT OR REPLACE INTO decisions (decision_id, ts, symbol, action, confidence, tier, strategy, price, "
                "quantity, outcome, reason, client_order_id, approval_id, event_seq) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
SQL_VOTE = ("INSERT INTO votes (decision_id, provider, action, confidence, weight, failed, reason, latency_ms) "
            "VALUES (?,?,?,?,?,?,?,?)")
SQL_GATE = ("INSERT INTO gate_results (decision_id, client_order_id, position, code, value, limit_value, passed, "
            "detail, ts) VALUES (?,?,?,?,?,?,?,?,?)")

SQL_KV = "INSERT OR REPLACE INTO kv (key, value, updated_ts) VALUES (?,?,?)"

_HEAD = struct.Struct(">cI")
_LEN = struct.Struct(">I")


class WriterError(StorageError):
    """The writer process failed or reported a failed statement: one line naming the file (the run's database, its
    audit file) and what failed."""


MEMORY = ":memory:"  # a summary run's database: kept in the writer's memory, no file


def _named(path: str) -> str:
    return "the backtest's records (kept in memory)" if path == MEMORY else path


def _ended(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def open_lines_file(path: str | Path) -> int:
    """A JSON-lines file opened for appending whole lines (O_APPEND). A last line cut by a kill or a power loss (a
    batch may take more than one write) is closed first, so the next line stays whole."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    size = os.fstat(fd).st_size
    if size:
        with open(path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                os.write(fd, b"\n")
    return fd


def append_lines(fd: int, lines: list[bytes]) -> None:
    """Records appended as whole lines, in one batch (the audit file of a live run and of a backtest).

    A write that fails part way (a full disk) is taken back to where it started, so the file never keeps a cut
    line that later lines would follow."""
    start = os.fstat(fd).st_size
    try:
        _write_all(fd, [b"\n".join(lines), b"\n"])
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def scalar(x: Any) -> Any:
    """A gate's measured value or limit as SQLite stores it: numbers as numbers, anything else as text."""
    if x is None or isinstance(x, (int, float)):
        return x
    return str(x.value if hasattr(x, "value") else x)


def index_rows(events: Iterable[tuple[Any, ...]], decisions: list[Any], votes: list[Any], gates: list[Any]) -> None:
    """Append the decisions, votes and gate_results rows of the `decision` events among `events`
    ((seq, ts, name, record) tuples, the record as its audit line).

    The votes table indexes the directional votes (what the feedback loop scores and the provider report counts)
    and the providers that failed; every vote, HOLDs included, is in the record. A failed provider cast no vote,
    so no weight was applied to it.
    """
    loads = orjson.loads
    for seq, _ts, name, line in events:
        if name != "decision":
            continue
        r = loads(line)
        did = r["decision_id"]
        action = r["action"]
        decisions.append((did, r["bar_ts"], r["symbol"], action, r["confidence"], r["tier"], r["strategy"],
                          r["price"], r["quantity"], r["outcome"], r["reason"], r.get("client_order_id"),
                          r.get("approval_id"), seq))
        for v in r["votes"]:
            if v["action"] != "HOLD":
                votes.append((did, v["provider"], v["action"], v["confidence"], v.get("weight"), 0, v.get("reason"),
                              v.get("latency_ms")))
        for p in r.get("failed") or ():
            votes.append((did, p, None, None, None, 1, "failed", None))
        if r.get("gates"):
            cid = r.get("client_order_id")
            ts = r["bar_ts"] / 1000
            gates.extend([(did, cid, i, g["code"], scalar(g.get("value")), scalar(g.get("limit")),
                           1 if g["passed"] else 0, g.get("detail"), ts) for i, g in enumerate(r["gates"])])


# ====================================================================== the engine's side
class Rows:
    """What a statement returned, read in full, behind the cursor calls the store makes (of this writer and of the
    live store's connection, sqlthread.py)."""

    def __init__(self, rows: list[Any], description: Any = None, rowcount: int = -1) -> None:
        self._rows = rows
        self.description = description
        self.rowcount = rowcount

    async def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    async def fetchall(self) -> list[Any]:
        return self._rows


NO_ROWS = Rows([])


def returns_rows(sql: str) -> bool:
    """Whether a statement the store makes is answered with rows (a query), not only run (a write)."""
    head = sql.lstrip()[:8].upper()
    return head.startswith(("SELECT", "WITH")) or (head.startswith("PRAGMA") and "=" not in sql)


class WriterProcess:
    """The store's connection for a backtest: statements are queued and run by the child process, in order."""

    def __init__(self, path: str, audit_path: str | None = None) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        args = [sys.executable, "-m", "ffe_engine.sqlwriter", path] + ([audit_path] if audit_path else [])
        # Its own session: a ^C reaches the engine, which closes the run in order; the child never sees it.
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0,
                                      start_new_session=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None  # both asked for as pipes
        self._stdin: IO[bytes] = self._proc.stdin
        self._stdout: IO[bytes] = self._proc.stdout
        with contextlib.suppress(OSError, AttributeError):  # fewer wake-ups per frame where Linux allows it
            fcntl.fcntl(self._stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        self._ops: list[list[Any]] = []
        self._events: list[tuple[Any, ...]] = []  # (seq, ts, name, length) of the records not yet placed in an op
        self._unplaced: list[bytes] = []  # and those records
        self._records: list[bytes] = []  # the records of the ops queued so far, in order
        self._unanswered = 0
        self._closed = False
        self._path = path
        self._failed: WriterError | None = None  # said once; every later call says it again, the close does not

    # ---- the connection calls the store makes (sqlthread.Connection's)
    async def execute(self, sql: str, params: Any = ()) -> Rows:
        if returns_rows(sql):
            return self._query(sql, params)
        self._ops.append(["x", sql, params])
        if sql == "COMMIT":  # a flush: send it, and hear how the one before it went
            self._send_writes()
        return NO_ROWS

    async def executemany(self, sql: str, rows: list[Any]) -> Rows:
        self._ops.append(["m", sql, rows])
        return NO_ROWS

    def add_event(self, ev: Any, line: bytes) -> None:
        """The store's event sink: an events row, and the index rows of a decision, which the child derives."""
        self._events.append((ev.seq, ev.ts, ev.name, len(line)))
        self._unplaced.append(line)

    def set_options(self, *, compact: bool = False, events_table: bool = True, gate_rows: bool = True,
                    vacuum: bool = False, chain: bool = False) -> None:
        """How the run's records are kept from here on (a backtest's own database): event records compact
        (records.py), event records in the audit file only, no gate results per order, the database packed
        tightly when it is closed, the records chained here (the bus did not)."""
        self._ops.append(["o", {"compact": compact, "events_table": events_table, "gate_rows": gate_rows,
                                "vacuum": vacuum, "chain": chain}])

    def write_events(self) -> None:
        """Place the events received so far at this point of the statements (a record travels with its op)."""
        if self._events:
            self._ops.append(["e", self._events])
            self._records.extend(self._unplaced)
            self._events, self._unplaced = [], []

    async def close(self) -> None:
        """Commit and end the writer. After a failure already raised, only the writer is ended: the run that failed
        has said why, once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._failed is None:
                self._send_writes()
                self._frame(b"C", [])
                while self._unanswered:
                    self._answer()
        finally:
            with contextlib.suppress(OSError):  # a writer that is gone: its end of the pipe is closed
                self._stdin.close()
            self._proc.wait()
            self._stdout.close()

    # ---- frames
    def _query(self, sql: str, params: Any) -> Rows:
        self._send_writes()
        self._frame(b"Q", [orjson.dumps([sql, params])])
        while self._unanswered > 1:
            self._answer()
        reply = self._answer()
        columns = reply.get("columns")
        return Rows([tuple(r) for r in reply["rows"]],
                    [(c, None, None, None, None, None, None) for c in columns] if columns else None)

    def _send_writes(self) -> None:
        if not self._ops:
            return
        ops, records = self._ops, self._records
        self._ops, self._records = [], []
        header = orjson.dumps(ops)
        self._frame(b"W", [_LEN.pack(len(header)), header, *records])
        while self._unanswered > 1:  # one write in flight: the child works on it while the engine goes on
            self._answer()

    def _frame(self, kind: bytes, parts: list[bytes]) -> None:
        if self._failed is not None:
            raise self._failed
        if self._proc.poll() is not None:
            raise self._gone()
        parts.insert(0, _HEAD.pack(kind, sum(map(len, parts))))
        try:
            _write_all(self._stdin.fileno(), parts)
        except BrokenPipeError:
            raise self._gone() from None
        self._unanswered += 1

    def _answer(self) -> dict[str, Any]:
        kind, payload = _read_frame(self._proc.stdout)
        if kind is None:
            raise self._gone()
        self._unanswered -= 1
        reply: dict[str, Any] = orjson.loads(payload)
        if "error" in reply:
            name = _named(reply.get("file") or self._path)
            if reply.get("read"):  # a failed read, as sqlite3 raises it: answered, and writes go on
                raise sqlite3.OperationalError(reply["error"])
            self._failed = WriterError(str(storage_failure(name, WriterError(reply["error"]))))
            raise self._failed
        return reply

    def _gone(self) -> WriterError:
        """The writer process ended (the out-of-memory killer's choice, a kill -9): the run stops."""
        self._failed = WriterError(f"{_named(self._path)}: the backtest's database writer process ended "
                                   f"({_ended(self._proc.wait())}): the run stopped")
        return self._failed


def _write_all(fd: int, parts: list[bytes]) -> None:
    """The parts end to end, without joining them (a frame holds a few thousand records), in few system calls."""
    i = 0
    while i < len(parts):
        chunk = parts[i:i + 512]
        done = os.writev(fd, chunk)
        i += len(chunk)
        if done < sum(map(len, chunk)):  # a partial write: the rest of this chunk, then go on
            rest = b"".join(chunk)[done:]
            while rest:
                rest = rest[os.write(fd, rest):]


def _read_exactly(f: Any, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            return None
        got += k
    return bytes(buf)


def _read_frame(f: Any) -> tuple[bytes | None, bytes]:
    head = _read_exactly(f, _HEAD.size)
    if head is None:
        return None, b""
    kind, n = _HEAD.unpack(head)
    payload = _read_exactly(f, n) if n else b""
    if payload is None:
        return None, b""
    return kind, payload


# ====================================================================== the child
class _Child:
    """The writer's side: the connection, the audit file, and how records are stored."""

    def __init__(self, conn: sqlite3.Connection, audit_path: str | None) -> None:
        self.conn = conn
        self.packed_audit = bool(audit_path and audit_path.endswith(".zst"))
        if audit_path is None:
            self.audit_fd = None
        elif self.packed_audit:
            self.audit_fd = os.open(audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        else:
            self.audit_fd = open_lines_file(audit_path)
        self.compact = False
        self.events_table = True
        self.gate_rows = True
        self.vacuum = False
        self.chain = False
        self.head = GENESIS  # the hash of the last record chained
        self.packer: compact.RecordPacker | None = None

    def chained(self, events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The records with their `prev` (chain.py), in order."""
        prev = self.head
        out = []
        for seq, ts, name, line in events:
            line = chained(line, prev)
            prev = line_hash(line)
            out.append((seq, ts, name, line))
        self.head = prev
        return out

    def store_head(self, last: tuple[Any, ...]) -> None:
        """The chain head, in the transaction of the records it covers, as the live store keeps it."""
        seq, ts, _name, line = last
        digest = self.head if self.chain else line_hash(line)
        self.conn.execute(SQL_KV, (HEAD_KEY, orjson.dumps({"seq": seq, "hash": digest}).decode(), ts))

    def append_audit(self, lines: list[bytes]) -> None:
        if self.audit_fd is None or not lines:
            return
        if self.packed_audit:  # one whole frame per write: a cut file still reads up to its last whole frame
            _write_all(self.audit_fd, [compact.compress_lines(lines)])
        else:
            append_lines(self.audit_fd, lines)

    def stored(self, events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The events rows as stored: compact records once the run's dictionary is known."""
        if not self.compact:
            return events
        if self.packer is None:
            dictionary = compact.train([e[3] for e in events])
            if dictionary is None:
                return events
            text = orjson.dumps(compact.dictionary_text(dictionary)).decode()
            self.conn.execute(SQL_KV, (compact.DICTIONARY_KEY, text, 0.0))
            self.packer = compact.RecordPacker(dictionary)
        pack = self.packer.pack
        return [(seq, ts, name, pack(line)) for seq, ts, name, line in events]

    def close(self) -> None:
        self.conn.close()
        if self.audit_fd is not None:
            os.close(self.audit_fd)


def _apply_writes(child: _Child, payload: bytes) -> None:
    conn = child.conn
    (hlen,) = _LEN.unpack_from(payload)
    ops = orjson.loads(payload[4:4 + hlen])
    at = 4 + hlen
    for op in ops:
        kind = op[0]
        if kind == "x":
            conn.execute(op[1], op[2])
        elif kind == "m":
            if child.gate_rows or op[1] != SQL_GATE:
                conn.executemany(op[1], op[2])
        elif kind == "o":
            child.compact = op[1]["compact"]
            child.events_table = op[1]["events_table"]
            child.gate_rows = op[1]["gate_rows"]
            child.vacuum = op[1]["vacuum"]
            child.chain = op[1].get("chain", False)
        else:
            events = []
            for seq, ts, name, n in op[1]:
                events.append((seq, ts, name, payload[at:at + n]))
                at += n
            trail = events
            if child.chain and events:
                trail = child.chained(events)
                if not child.compact:  # plain rows are the trail's lines, byte for byte; compact ones leave prev out
                    events = trail
            child.append_audit([e[3] for e in trail])
            if trail:
                child.store_head(trail[-1])
            decisions: list[Any] = []
            votes: list[Any] = []
            gates: list[Any] = []
            index_rows(events, decisions, votes, gates)
            if child.events_table:
                conn.executemany(SQL_EVENT, child.stored(events))
            conn.executemany(SQL_DECISION, decisions)
            conn.executemany(SQL_VOTE, votes)
            conn.executemany(SQL_GATE, gates)


def _reply(out: Any, obj: Any) -> None:
    body = orjson.dumps(obj)
    out.write(_HEAD.pack(b"A", len(body)) + body)
    out.flush()


def _plain(rows: list[Any]) -> list[Any]:
    """Rows as JSON can carry them: a BLOB (an event record) as its text."""
    return [[x.decode(errors="replace") if isinstance(x, bytes) else x for x in r] for r in rows]


def _query(conn: sqlite3.Connection, payload: bytes) -> dict[str, Any]:
    """A read's rows, or why it failed (a failed read is answered, and writes go on)."""
    sql, params = orjson.loads(payload)
    try:
        cur = conn.execute(sql, params)
        columns = [d[0] for d in cur.description] if cur.description else None
        return {"rows": _plain(cur.fetchall()), "columns": columns}
    except sqlite3.Error as exc:
        return {"error": str(exc), "read": True}


def main(argv: list[str]) -> int:
    conn = sqlite3.connect(argv[0], isolation_level=None)
    child = _Child(conn, argv[1] if len(argv) > 1 else None)
    inp, out = sys.stdin.buffer.raw, sys.stdout.buffer  # type: ignore[union-attr]  # an unbuffered read end
    error: dict[str, str] | None = None
    finished = False
    try:
        while True:
            kind, payload = _read_frame(inp)
            if kind is None:  # the engine is gone: keep what it sent
                return _engine_gone(conn, error)
            try:
                if kind == b"W":
                    if error is None:
                        _apply_writes(child, payload)
                    _reply(out, error or {"ok": True})
                elif kind == b"Q":
                    _reply(out, error or _query(conn, payload))
                elif kind == b"C":
                    if error is None and conn.in_transaction:
                        conn.execute("COMMIT")
                    if error is None and child.vacuum:  # a small database: small pages waste less of each
                        conn.execute("PRAGMA page_size=2048")
                        conn.execute("VACUUM")
                    finished = error is None
                    _reply(out, error or {"ok": True})
                    return 0
            except BrokenPipeError:
                raise
            except Exception as exc:  # the first failure is kept and answered from then on
                error = _failure(exc, argv)
                _reply(out, error)
    except BrokenPipeError:  # the engine died while this answered: as when its input closes
        return _engine_gone(conn, error)
    finally:
        child.close()
        if finished:
            _remove_empty_journal(argv[0])


def _failure(exc: Exception, argv: list[str]) -> dict[str, str]:
    """The answer that says a failed write: why, and which file (the audit file's writes are the OSErrors)."""
    if isinstance(exc, OSError) and len(argv) > 1:
        return {"error": exc.strerror or str(exc), "file": argv[1]}
    return {"error": str(exc) or type(exc).__name__, "file": argv[0]}


def _engine_gone(conn: sqlite3.Connection, error: dict[str, str] | None) -> int:
    """The engine's process is gone: what it sent is kept (unless a write failed), and the answers it can no longer
    read are dropped, so the exit's flush of them raises nothing on the terminal the engine shared."""
    if conn.in_transaction and error is None:
        conn.execute("COMMIT")
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 1


def _remove_empty_journal(db_path: str) -> None:
    """The journal a finished run leaves (journal_mode=TRUNCATE: empty, so no rollback is owed) is no record of
    the run: removed, so the run's folder holds its records only."""
    journal = Path(db_path + "-journal")
    try:
        if journal.stat().st_size == 0:
            journal.unlink()
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
