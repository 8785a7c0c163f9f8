"""`ffe doctor`: the invariants of a data directory, checked from its records alone.

In order, stopping at the first violation (a `Violation`, exit 1, naming what is wrong and where):
1. the database passes SQLite's integrity check, and its records are what ffe writes: every table and column of
   its schema version, a known engine state, key-value records, order intents and approvals that are JSON, known
   statuses, sides and order reasons, no order filled beyond its quantity, and no key-value record a start
   restores missing beside the records written with it (the books beside orders and fills, the approval mode
   beside its recorded change, say): the checks a
   start makes, over every record (store.Records.damage);
2. the audit trail (its rotated files, then the current one) is whole lines, one JSON record each, with strictly
   increasing seq, and holds every event the database holds, byte for byte (it may hold more: lines written just
   before a kill, never committed, noted as `ffe audit verify` notes them, and a cut last line or blank bytes after
   the database's last event: one being written, or torn; or the start of the database's last record, torn by a power
   loss: chain.TornTail, as the start judges them); and its hash chain is whole up to the chain head the database stores
   (chain.verify_trail); records after the database's last event that are more than the moment before a kill (a run's
   boundary among them (a stop with records after it, a start with bar decisions beside it) or a whole run, or over a
   minute of records: ahead.Ahead, as the start judges them) are records the database lost, a violation; and so are
   such records a start set aside (`audit.jsonl.uncommitted-after-SEQ`) that no resume has checked since, or the
   engine still PAUSED for them (ahead.unsettled);
3. no order went back: in the audit trail an order that reached
   a final status never shows another one later, its filled quantity never shrinks, and the journal agrees with
   the last final status the trail shows;
4. every fill has its `fill` event (same order, side, quantity, price and fee) and every `fill` event its fill, one
   to one; and each order's filled quantity is the sum of its fills; each order's symbol, side and quantity are
   its `order` events', and an order that filled has its fills' symbol and side, average and fees (their sum);
   every closed trade has its `position_closed` event, alike, every such event its trade, and no trade id is
   claimed by two of them;
5. the positions are the fills, replayed;
6. paper account: the cash and equity rebuilt from the starting cash and the fills equal the stored book;
7. paper account: the venue's book knows every order the journal says is open, holds each client order id and
   exchange id once, and holds no order the journal never recorded;
8. the engine_state row is what the last `engine_state` event that says a state says (state and reason); HALTED
   stored on its own by design (records that could not be written, the disk reserve emptied; kept across a
   restore, its marker there) is said by the next start, and noted here until then;
9. every approval's decision is recorded (its row in the decisions table), its events end it once (no event after
   the one that says it approved, rejected or expired: a final status never changes), and its last `approval` event
   says its status.

A backtest run's records (`--data-dir data/backtests/RUN --log-dir logs/backtests/RUN`) are checked as what they
are (docs/storage.md#backtests): a full run's trail is compressed and its events rows compact, without `prev`; a
trades run keeps no events and no trail by design, so the checks of the trail (2, and 3 and 4 against it, 8) are
left out; and no run stores the paper venue's book (7).

Read-only: it can be run beside a running engine (the database is read in one transaction, before the audit file,
which is never behind it).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import zstandard

from . import ahead, reserve
from .audit import has_records
from .backtest_runs import RUN_ID
from .chain import (HEAD_KEY, TornTail, line_hash, missing_file, packed, trail_files, unchained, unreadable_trail,
                    verify_trail)
from .config import Settings
from .control import starting_engine
from .errors import FfeError, UnreachablePath, UsageError, first_problem
from .model import APPROVAL_PENDING, OrderStatus, trail_disagrees
from .store import (BACKTEST_RECORDS_KEY, CASH_ACCEPTED_KEY, RESTORED_KEY, STARTING_CASH_KEY, Records, check_files,
                    events_end, lost_database, order_figures, position_differs, replay_positions, restore_left_half_way,
                    state_unsaid_why)
from .trailcopy import prev_of

OrderRow = tuple[str, str, str, float, float, str]  # client_order_id, status, symbol, quantity, filled, venue
# client_order_id, symbol, side, quantity, average, fee
OrderFigures = tuple[str, str, str, float, float | None, float]
# client_order_id, symbol, side, qty, price, fee, fee_base, fee_base_value
FillRow = tuple[str, str, str, float, float, float, float, float]
OrderEvents = dict[str, list[tuple[str, dict[str, Any]]]]  # client_order_id -> (file:line, record)

FINAL = {s.value for s in OrderStatus if s.final}


class Violation(FfeError):
    """An invariant does not hold; the message names the first one found."""

    exit_code = 1


@dataclass
class Findings:
    """What was checked, for the report of a healthy directory."""

    events: int = 0
    audit_lines: int = 0
    orders: int = 0
    fills: int = 0
    positions: int = 0
    cut_tail: int = 0  # a cut last line after the database's last event (1 or 0)
    torn_seq: int | None = None  # the database's last event, whose start the trail ends in (torn by a power loss)
    level: str | None = None  # a backtest run's record level
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # records of the trail the database never committed

    def summary(self) -> str:
        tail = (", 1 line after the database's last event cut off (being written, or torn: the next start sets it "
                "aside)") if self.cut_tail else ""
        if self.torn_seq is not None:
            tail = (f", the last line the start of seq {self.torn_seq}, which the database holds, torn (a power loss): "
                    f"the next start sets it aside and appends seq {self.torn_seq} from the database")
        if self.level is not None:
            tail += f"; a backtest run, records {self.level}" + (
                " (no events nor audit trail, by design)" if self.level == "trades" else "")
        return (f"ok: {len(self.checks)} checks passed ({', '.join(self.checks)}); {self.events} events, "
                f"{self.audit_lines} audit lines, {self.orders} orders, {self.fills} fills, "
                f"{self.positions} positions in the books (dust included){tail}"
                + "".join("\n" + note for note in self.notes))


def check(settings: Settings) -> Findings:
    """Every invariant on settings.data_dir and settings.log_dir; raises Violation at the first one broken."""
    found = Findings()
    # Before the database is opened: a missing or empty one beside a trail with records is lost, as the start says,
    # and one beside a WAL that holds pages (which SQLite would delete on opening it) damaged: said so, left as they
    # are. A missing one with neither is no database here (--data-dir may be wrong).
    db = settings.db_path
    said = restore_left_half_way(db, settings.audit_path)  # as the start says it
    if said is not None:
        raise Violation(said)
    # The WAL read as SQLite would, where no engine writes it now (beside one it is being written).
    check_files(db, new_ok=not has_records(settings.audit_path),
                whole_wal=starting_engine(settings.data_dir) is None)
    try:
        records = Records(settings.db_path)
    except UsageError:  # no table in it: beside a trail with records that is a lost database, as the start says
        if has_records(settings.audit_path):
            raise lost_database(db, "holds no table") from None
        raise
    try:
        records.check_version()
        problems = records.integrity()
        if problems != ["ok"]:
            raise Violation(f"{settings.db_path}: integrity check failed: {first_problem(problems)}")
        found.checks.append("integrity")
        level = found.level = run_level(settings, records)
        # The account's market made in the process (simulated, a replay) stores its state with the books. Only a
        # paper account (its paper venue's book stored) can be on one: a live account trades on the exchange's
        # market, whatever the configuration this doctor was given says.
        own_market = settings.market.source != "exchange" and _paper_account(records)
        damage = records.damage(account=level is None, own_market=own_market)
        if damage is not None:
            raise Violation(f"{settings.db_path}: {damage}")
        found.checks.append("records")
        order_events: OrderEvents = {}
        if level == "full" and not trail_files(settings.audit_path):
            raise UsageError(_run_trail_elsewhere(settings))
        if level != "trades":
            order_events = _check_audit(records, settings.audit_path, found, compact_rows=level == "full")
            found.checks.append("audit trail")
        if level != "trades" and trail_files(settings.audit_path):
            head = records.chain_head()
            chain = verify_trail(settings.log_dir, head, name=settings.audit_path.name,
                                 committed=records.event_seqs(),
                                 head_record=records.record_of(head.seq) if head is not None else None)
            if not chain.ok:
                raise Violation(f"audit chain broken at seq {chain.first_bad_seq}: {chain.reason}")
            if chain.uncommitted is not None:
                chain.uncommitted.ahead.committed_since(events_end(settings.db_path), chain.uncommitted.db_last)
                lost = chain.uncommitted.lost_records()
                if lost is not None:  # as the start judges them, which pages for them
                    raise Violation(f"{settings.db_path}: {lost}")
                found.notes = chain.uncommitted.notes(run=level is not None)
        if level != "trades":
            found.checks.append("audit chain")
        if level is None:  # the trail level again, the loss a start set aside is still there until dealt with
            unsettled = ahead.unsettled(settings.audit_path, records.kv(ahead.CHECKED_KEY), records.engine_state_row())
            if unsettled is not None:
                raise Violation(unsettled)
        orders = records.orders()
        found.orders = len(orders)
        _check_orders(orders, order_events, settings.db_path)
        if level != "trades":  # a trades-level backtest run keeps no decisions, by design
            _note_lost_decisions(records, settings.db_path, found)
        found.checks.append("order statuses")
        fills = records.fills()
        found.fills = len(fills)
        _check_fills(orders, fills, None if level == "trades" else records.fill_events(), settings.db_path)
        _check_order_rows(order_figures(records), fills, order_events, settings.db_path)
        found.checks.append("fills")
        if level != "trades":
            _check_closed_trades(records.closed_trades(), records.closed_trade_events(), settings.db_path)
        else:  # a trades-level backtest run keeps no events to check its trades against: their own figures
            _check_closed_trades_alone(records.closed_trades(), fills, settings.db_path)
        found.checks.append("closed trades")
        held = _check_positions(records, fills, settings.db_path)
        found.positions = len(held)
        found.checks.append("positions")
        # A paper account by its records (its simulated exchange's book, its own starting cash), whatever the
        # configuration names now: a live account's cash is the exchange's balance, not a starting cash and the fills.
        if _paper_account(records):
            _check_cash(records, fills, held, settings)
            found.checks.append("cash and equity")
            if level is None:
                _check_paper_book(records, orders, settings.db_path)
                found.checks.append("paper venue book")
        if level != "trades":
            _check_state(records, settings, found)
            found.checks.append("engine state")
        _check_approvals(records, settings.db_path)
        found.checks.append("approvals")
    finally:
        records.close()
    return found


def check_against_events(records: Records, order_events: OrderEvents, db: Path) -> None:
    """An account's rows against their own audit records, as `check` judges them (`ffe backup verify` judges a
    backup's copy by it): the fills and their `fill` events one to one, each order's row against its `order` events
    (`order_events`: each order's, as `check` collects them from the trail) and its fills, and the closed trades and
    their `position_closed` events. Raises Violation naming the first row that differs, `db` naming its file."""
    orders = records.orders()
    fills = records.fills()
    _check_fills(orders, fills, records.fill_events(), db)
    _check_order_rows(order_figures(records), fills, order_events, db)
    _check_closed_trades(records.closed_trades(), records.closed_trade_events(), db)


def run_level(settings: Settings, records: Records) -> str | None:
    """The record level of a backtest run's records, as the run stored it (wherever its folders are now); for a run
    made before it did so, by its folder (data/backtests/RUN): `full` when it kept events or its compressed trail,
    else `trades`. None for an account's records."""
    stored = records.kv(BACKTEST_RECORDS_KEY)
    if stored in ("full", "trades"):
        return str(stored)
    if settings.data_dir.parent.name != "backtests" or not RUN_ID.fullmatch(settings.data_dir.name):
        return None
    return "full" if records.last_seq() or packed(settings.audit_path).exists() else "trades"


# ------------------------------------------------------------------------------------------------ the audit trail
def _run_trail_elsewhere(settings: Settings) -> str:
    """A full backtest run read with a log directory that holds no trail: its own log folder was not given (an
    account's trail gone is damage; a run's is only elsewhere, where it ran)."""
    run = settings.data_dir.name if RUN_ID.fullmatch(settings.data_dir.name) else "RUN"
    return (f"{settings.data_dir}: a backtest run's records (full), and no audit trail at {settings.audit_path}: a "
            f"run's audit file is in its own log folder, logs/backtests/{run}/audit.jsonl.zst: give that folder as "
            "--log-dir (`ffe backtest --list` names a run's folders)")


def _open_trail_file(p: Path) -> IO[bytes]:
    """A file of the trail to read line by line: a backtest run's compressed one decompressed as it is read."""
    try:
        f = open(p, "rb")
    except OSError as exc:
        said = unreadable_trail(p, exc)
        if isinstance(said, UnreachablePath):  # not a violation: this user cannot look (exit 2, as elsewhere)
            raise said from None
        raise Violation(str(said)) from None
    if p.suffix != ".zst":
        return f
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True, closefd=True))


def _audit_lines(path: Path, cut: list[tuple[str, TornTail]]) -> Iterator[tuple[str, int, bytes]]:
    """(file:line, seq, line) of every whole line of the trail, rotated files first; an unreadable line is a
    violation, and so is a cut or blank one except at the very end of the trail, where what a start sets aside as
    a torn tail (chain.TornTail: a record cut short, unfinished or closed by a newline, and blank bytes) is put in
    `cut` (what to say, and the tail) for the caller to judge: beside a running engine the writer may be half way
    through it."""
    files = trail_files(path)
    for p in files:
        with _open_trail_file(p) as f:
            tail = TornTail()
            held: list[tuple[str, bytes]] = []  # lines that may be a torn tail, until a record follows them
            for n, line in _numbered(f, p):
                where = f"{p}:{n}"
                closed = line.endswith(b"\n")
                raw = line[:-1] if closed else line
                is_json, seq = _seq_in(raw) if closed else (False, None)
                if p == files[-1] and seq is None and tail.add(raw, closed, where):
                    held.append((where, raw))
                    continue
                if held:
                    raise Violation(f"{held[0][0]}: not a JSON record: {held[0][1][:80]!r}")
                if not closed:
                    raise Violation(f"{where}: the last line is cut off ({len(line)} bytes, no newline)")
                if not is_json:
                    raise Violation(f"{where}: not a JSON record: {raw[:80]!r}")
                if seq is None:
                    raise Violation(f"{where}: a record without an integer seq")
                yield where, seq, raw
            if held:
                cut.append((f"{tail.where}: the last line is cut off ({tail.size} bytes after the last record)", tail))


def _which_differs(where: str, seq: int, line: bytes, record: bytes, next_prev: str | None,
                   by: str = "chains on to the next record") -> str:
    """A trail line unlike the database's record of its seq, and which of the two is the damaged one: the next
    record's `prev` (or the chain's head, after the last: `by` says which) is the hash of the one ffe wrote."""
    said = f"{where}: seq {seq} differs from the database's record of it"
    if next_prev is not None and next_prev == line_hash(line):
        return f"{said}: the database's record is the damaged one (the trail's line {by})"
    if next_prev is not None and next_prev == line_hash(record):
        return f"{said}: the trail's line is the damaged one (the database's record {by})"
    return said


def _seq_in(line: bytes) -> tuple[bool, int | None]:
    """Whether a whole line is JSON, and its seq (None: none, or not an integer)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return False, None
    seq = rec.get("seq") if isinstance(rec, dict) else None
    return True, seq if isinstance(seq, int) else None


def _numbered(f: IO[bytes], p: Path) -> Iterator[tuple[int, bytes]]:
    try:
        yield from enumerate(f, 1)
    except zstandard.ZstdError as exc:
        raise Violation(f"{p}: not a whole Zstandard file ({exc})") from None


def _check_audit(records: Records, path: Path, found: Findings, compact_rows: bool = False) -> OrderEvents:
    """First the file alone (whole lines, seq order), then the merge of the database's events (read first) and
    the file's lines, both in seq order. Returns each order's audit records (line number, record). `compact_rows`:
    the database's events rows leave `prev` out (a backtest run's)."""
    last = 0
    for where, seq, _line in _audit_lines(path, []):
        if seq <= last:
            raise Violation(f"{where}: seq {seq} after seq {last} (seq must strictly increase)")
        last = seq
    db_events = iter(records.events())
    want = next(db_events, None)
    # Beside a running engine the file goes on growing after the database was read: the order checks compare the
    # journal with the trail up to the database's last event only.
    snapshot_seq = records.last_seq()
    order_events: OrderEvents = {}
    cut: list[tuple[str, TornTail]] = []
    differs: tuple[str, int, bytes, bytes] | None = None  # a line unlike the database's record: judged at the next
    for where, seq, line in _audit_lines(path, cut):
        if differs is not None:
            raise Violation(_which_differs(*differs, prev_of(line)))
        found.audit_lines += 1
        if want is not None and want[0] < seq:
            # At a file's first line, the gap may be a whole rotated file gone: named after its first seq.
            gone = missing_file(path, where.endswith(":1"), want[0])
            file_gone = f": {gone} is missing" if gone is not None else ""
            raise Violation(f"{path}: seq {want[0]} is in the database but not in the audit trail{file_gone} "
                            f"(next line {where} has seq {seq})")
        if want is not None and want[0] == seq:
            if want[1] != (unchained(line) if compact_rows else line):
                if compact_rows:  # a backtest run's rows carry no chain to tell which copy is whole
                    raise Violation(f"{where}: seq {seq} differs from the database's record of it")
                differs = (where, seq, line, want[1])
                continue
            found.events += 1
            want = next(db_events, None)
        if seq <= snapshot_seq and b'"event":"order"' in line:
            rec = json.loads(line)
            if rec.get("client_order_id"):
                order_events.setdefault(rec["client_order_id"], []).append((where, rec))
    if differs is not None:  # the last line: the chain's head, kept with the database's last record, tells
        head = records.kv(HEAD_KEY)
        raise Violation(_which_differs(*differs, head.get("hash") if isinstance(head, dict) else None,
                                       "is the one the chain's head names"))
    if want is not None:
        if cut:
            said, tail = cut[0]
            # Not the start of the database's record of that seq: the record edited, as a start says it.
            if tail.edits(want[1]):
                raise Violation(f"{tail.where}: seq {want[0]} differs from the database's record of it")
            if next(db_events, None) is None:  # the database's last event, its start torn: the start repairs it
                found.torn_seq = want[0]
                return order_events
            raise Violation(said)
        raise Violation(f"{path}: seq {want[0]} is in the database but not in the audit trail "
                        f"(the file ends before it)")
    # Each event was whole in the file before the database committed it: a cut line after the last of them is a
    # record the writer is still appending, or a torn tail the next start sets aside (audit.repair_trail).
    found.cut_tail = len(cut)
    return order_events


# ------------------------------------------------------------------------------------------------ orders
def _check_orders(orders: list[OrderRow], order_events: OrderEvents, db: Path) -> None:
    # Each order's own columns (a known status, a filled quantity within its quantity) are judged with the records
    # a start restores (store.Records.damage), before this: these are its story in the audit trail.
    for cid, status, _symbol, _quantity, filled, _venue in orders:
        final_seen = None
        most = 0.0
        for n, rec in order_events.get(cid, []):
            if final_seen is not None and rec["status"] != final_seen:
                raise Violation(f"{n}: order {cid} went from {final_seen} back to {rec['status']}")
            if rec.get("filled", 0.0) < most - 1e-12:
                raise Violation(f"{n}: order {cid} filled quantity went down to {rec['filled']:g}")
            most = max(most, rec.get("filled", 0.0))
            if rec["status"] in FINAL:
                final_seen = rec["status"]
        if trail_disagrees(status, final_seen):
            raise Violation(f"{db}: order {cid} is {status} in the journal, {final_seen} in the audit trail")
        if filled < most - 1e-12:
            raise Violation(f"{db}: order {cid} filled {filled:g} in the journal, {most:g} in the audit trail")


def _note_lost_decisions(records: Records, db: Path, found: Findings) -> None:
    # A note, not a violation: the order's journal entry is committed before the decision that placed it is written
    # (with the bar's records, after it), so a kill in between leaves the order, rightly kept, without it.
    for cid, decision_id in records.orders_without_decision():
        found.notes.append(f"{db}: order {cid} has no record of its decision {decision_id}: the engine was killed "
                           "after the order was journaled and before its decision was written (`ffe audit show` "
                           "says its records are incomplete); the order and its fills are whole")


# ------------------------------------------------------------------------------------------------ fills
def _check_fills(orders: list[OrderRow], fills: list[FillRow], fill_events: list[bytes] | None, db: Path) -> None:
    """The fills and their events, one to one: a fill without its event was never audited, an event without its
    fill (or a second fill for one event) was charged to the books another way, or twice. The store commits a fill
    with its event in one transaction, so neither can be missing after a crash. `fill_events` None: records kept
    without events (a backtest run's trades level), whose fills are checked against their orders only."""
    events: Counter[tuple[str, str, float, float, float]] = Counter()
    for data in fill_events or []:
        rec = json.loads(data)
        events[(rec.get("client_order_id", ""), rec.get("side", ""), rec.get("quantity"), rec.get("price"),
                rec.get("fee"))] += 1
    recorded: Counter[tuple[str, str, float, float, float]] = Counter(
        (cid, side, qty, price, fee) for cid, _symbol, side, qty, price, fee, _fee_base, _value in fills)
    unsaid = recorded - events if fill_events is not None else Counter()  # fills no event says as they are
    unbooked = events - recorded  # events no fill is
    for key in unsaid:
        cid, side, qty, price, fee = key
        # An event of the same order that no fill is: the fill's row, or its event, holds other figures.
        told = next((e for e in unbooked if e[0] == cid), None)
        if told is not None:
            raise Violation(f"{db}: order {cid}: a {side} fill of {_figure(qty)} at {_figure(price)} (fee "
                            f"{_figure(fee)}) in the fills table, its fill event says {told[1]} {_figure(told[2])} at "
                            f"{_figure(told[3])} (fee {_figure(told[4])})")
        raise Violation(f"{db}: order {cid} has a {side} fill of {qty:g} at {price:g} without its fill event "
                        f"({recorded[key]} fill(s), {events[key]} event(s))")
    for key in unbooked:
        cid, side, qty, price, _fee = key
        raise Violation(f"{db}: a fill event of order {cid} ({side} {_figure(qty, 'g')} at {_figure(price, 'g')}) "
                        f"has no fill ({events[key]} event(s), {recorded[key]} fill(s))")
    filled: dict[str, float] = {}
    for cid, _symbol, _side, qty, *_ in fills:
        filled[cid] = filled.get(cid, 0.0) + qty
    for cid, _status, _symbol, _quantity, order_filled, _venue in orders:
        if not _close(order_filled, filled.pop(cid, 0.0), rel=1e-9, floor=1e-12):
            raise Violation(f"{db}: order {cid} filled {order_filled:g} in the journal, its fills add up to "
                            f"{sum(f[3] for f in fills if f[0] == cid):g}")
    if filled:
        cid = sorted(filled)[0]
        raise Violation(f"{db}: fills of order {cid}, which the journal never recorded")


def _check_order_rows(rows: list[OrderFigures], fills: list[FillRow], order_events: OrderEvents, db: Path) -> None:
    """Each order's row against what else says it: its symbol, side and quantity, fixed when it is journaled, are
    those of every `order` event of it; an order that filled has its fills' symbol and side, their price weighted by
    quantity as its average and the sum of their fees as its fee (each fill of an answer is what the venue's
    cumulative average and fee moved by since the last: execution.py, `_apply`). After the fills were checked
    against their own events. An order with no fill has no figure of them to agree with."""
    own: dict[str, list[FillRow]] = {}
    for fill in fills:
        own.setdefault(fill[0], []).append(fill)
    for row in rows:
        _order_row_against_events(row, order_events.get(row[0], []), db)
        if row[0] in own:
            _order_row_against_fills(row, own[row[0]], db)


def _order_row_against_events(row: OrderFigures, events: list[tuple[str, dict[str, Any]]], db: Path) -> None:
    cid, symbol, side, quantity, _average, _fee = row
    for where, rec in events:
        for name, stored in (("symbol", symbol), ("side", side), ("quantity", quantity)):
            told = rec.get(name, stored)  # a field the event does not carry says nothing
            same = (_close(stored, told, rel=1e-12, floor=1e-15)
                    if isinstance(stored, float) and isinstance(told, (int, float)) else told == stored)
            if not same:
                raise Violation(f"{db}: order {cid}: {name} {stored!r} in the orders table, {told!r} in its order "
                                f"event ({where})")


def _order_row_against_fills(row: OrderFigures, fills: list[FillRow], db: Path) -> None:
    cid, symbol, side, _quantity, average, fee = row
    for _cid, fill_symbol, fill_side, *_ in fills:
        for name, stored, told in (("symbol", symbol, fill_symbol), ("side", side, fill_side)):
            if told != stored:
                raise Violation(f"{db}: order {cid}: {name} {stored!r} in the orders table, {told!r} in its fills")
    quantity = sum(f[3] for f in fills)
    cost = sum(f[3] * f[4] for f in fills)
    if not isinstance(average, (int, float)) or not _close(average * quantity, cost, rel=1e-9, floor=1e-9):
        raise Violation(f"{db}: order {cid}: average {average!r} in the orders table, its fills make it "
                        f"{cost / quantity:.10g}")
    fees = sum(f[5] for f in fills)
    if not _close(fee, fees, rel=1e-9, floor=1e-9):
        raise Violation(f"{db}: order {cid}: fee {fee:.10g} in the orders table, its fills add up to {fees:.10g}")


def _figure(value: Any, spec: str = ".10g") -> str:
    """A figure of a record for a line: a number as `spec` says, anything else (an event's field missing, or not a
    number) as it is."""
    return format(value, spec) if isinstance(value, (int, float)) else repr(value)


# ------------------------------------------------------------------------------------------------ closed trades
def _check_closed_trades(trades: list[Any], closed_events: list[bytes], db: Path) -> None:
    """Each closed trade and its `position_closed` event, one to one and alike: the trades table is what `ffe
    report` and the learner read, the event what `ffe audit show` tells; the store commits both with the fill that
    closed the trade. The event's P&L and fees are rounded to 8 decimals."""
    said = _closed_trade_claims(closed_events, db)
    for tid, symbol, side, quantity, entry, exit_, pnl, fees, reason, _exit_order in trades:
        rec = said.pop(tid, None)
        if rec is None:
            raise Violation(f"{db}: closed trade {tid} ({symbol}) has no position_closed event")
        for name, stored, precise in (("quantity", quantity, True), ("entry_price", entry, True),
                                      ("exit_price", exit_, True), ("pnl", pnl, False), ("fees", fees, False)):
            told = rec.get(name)
            if not isinstance(told, (int, float)) or not _close(stored, told, floor=1e-12 if precise else 1e-8):
                raise Violation(f"{db}: closed trade {tid}: {name} {stored:.10g} in the trades table, {told!r} in "
                                "its position_closed event")
        for name, stored in (("symbol", symbol), ("side", side), ("reason", reason)):
            if rec.get(name) != stored:
                raise Violation(f"{db}: closed trade {tid}: {name} {stored!r} in the trades table, "
                                f"{rec.get(name)!r} in its position_closed event")
    if said:
        tid = sorted(said, key=str)[0]
        raise Violation(f"{db}: closed trade {tid} is in a position_closed event but not in the trades table")


def _check_closed_trades_alone(trades: list[Any], fills: list[FillRow], db: Path) -> None:
    """The closed trades of records without their `position_closed` events (a trades-level backtest run), against
    their own figures and their exit orders' fills: each is a long trade (ffe trades long only) whose P&L is what
    its figures make (the exit price less the entry's, times the quantity, less the fees: the books' reckoning), in
    its exit order's symbol, at a price one of that order's fills has; and the trades an exit order closed add up
    to what its fills sold, no more (a row copied, a quantity changed) and no less (a row deleted)."""
    exits: dict[str, tuple[str, list[float], float]] = {}  # exit order -> (symbol, fill prices, quantity sold)
    for cid, symbol, side, quantity, price, *_fees in fills:
        if side == "sell":
            _, prices, sold = exits.get(cid, (symbol, [], 0.0))
            exits[cid] = (symbol, [*prices, price], sold + quantity)
    closed: dict[str, float] = {}
    for tid, symbol, side, quantity, entry, exit_, pnl, fees, _reason, exit_order in trades:
        where = f"{db}: closed trade {tid} ({symbol})"
        if side != "buy":
            raise Violation(f"{where}: side {side!r}: ffe's trades are long (bought, then sold)")
        made = (exit_ - entry) * quantity - fees
        if not _close(pnl, made, floor=1e-8):
            raise Violation(f"{where}: pnl {pnl:.10g} in the trades table, but its own figures make {made:.10g} (exit "
                            f"{exit_:.10g} less entry {entry:.10g}, times {quantity:.10g}, less fees {fees:.10g})")
        if exit_order is None:
            continue
        if exit_order not in exits:
            raise Violation(f"{where}: its exit order {exit_order} sold nothing")
        sold_in, prices, _ = exits[exit_order]
        if sold_in != symbol:
            raise Violation(f"{where}: its exit order {exit_order} sold {sold_in}")
        if not any(_close(p, exit_, floor=1e-12) for p in prices):
            raise Violation(f"{where}: exit price {exit_:.10g} is no fill of its exit order {exit_order}")
        closed[exit_order] = closed.get(exit_order, 0.0) + quantity
    for cid, (symbol, _, sold) in exits.items():
        if not _close(closed.get(cid, 0.0), sold, rel=1e-9, floor=1e-9):
            raise Violation(f"{db}: exit order {cid} ({symbol}) sold {sold:.10g}, and the closed trades it ended add "
                            f"up to {closed.get(cid, 0.0):.10g}")


def _closed_trade_claims(closed_events: list[bytes], db: Path) -> dict[Any, dict[str, Any]]:
    """Each trade id's `position_closed` event. An id claimed twice is a closed trade whose row was lost: an ffe that
    numbered trades on from the highest id the trades table holds (or one whose sqlite_sequence was edited too)
    gave the next trade closed the deleted newest row's id, and its row then matches the later event while the
    earlier one is left with none."""
    said: dict[Any, dict[str, Any]] = {}
    for data in closed_events:
        rec = json.loads(data)
        tid = rec.get("trade_id")
        if tid in said:
            raise Violation(f"{db}: closed trade {tid} is claimed by two position_closed events (seq "
                            f"{said[tid].get('seq')} and seq {rec.get('seq')}): one of the two closed trades has "
                            "lost its row in the trades table")
        said[tid] = rec
    return said


# ------------------------------------------------------------------------------------------------ the book
def _replay(fills: list[FillRow]) -> tuple[dict[str, float], dict[str, float]]:
    """Positions from the fills, as the portfolio applies them, and what each symbol's fills moved
    (store.replay_positions)."""
    return replay_positions((symbol, side, qty, fee_base) for _cid, symbol, side, qty, _p, _f, fee_base, _v in fills)


def _close(a: float, b: float, rel: float = 1e-9, floor: float = 1e-9) -> bool:
    return abs(a - b) <= floor + rel * max(abs(a), abs(b))


def _check_positions(records: Records, fills: list[FillRow], db: Path) -> dict[str, float]:
    stored = records.positions()
    replayed, moved = _replay(fills)
    for symbol in sorted(set(stored) | set(replayed)):
        if position_differs(stored.get(symbol, 0.0), replayed.get(symbol, 0.0), moved.get(symbol, 0.0)):
            raise Violation(f"{db}: position {symbol} is {stored.get(symbol, 0.0):.10g}, the fills make it "
                            f"{replayed.get(symbol, 0.0):.10g}")
    return stored


def _paper_account(records: Records) -> bool:
    """A paper account by its records: its simulated exchange's book, or its own starting cash (stored at its first
    start, before any bar stores the book). A live account stores neither."""
    return records.kv("paper_venue") is not None or records.kv(STARTING_CASH_KEY) is not None


def _check_cash(records: Records, fills: list[FillRow], held: dict[str, float], settings: Settings) -> None:
    db = settings.db_path
    book = records.kv("portfolio")
    if book is None:
        if fills:
            raise Violation(f"{db}: fills are recorded but no portfolio book is stored")
        return
    if book["cash"] is None:  # stored so by a live account only, while its cash is the exchange's not yet taken
        raise Violation(f"{db}: stored cash is null in the books of a paper account: only a live account's is, while "
                        "it is the exchange's balance not yet reconciled")
    own = records.kv(STARTING_CASH_KEY)  # the account's own (a backtest run's, and an older account's: configured)
    starting = float(own) if isinstance(own, (int, float)) else settings.venue.starting_cash
    cash = starting + float(records.kv(CASH_ACCEPTED_KEY) or 0.0)
    for _cid, _symbol, side, qty, price, fee, _fee_base, fee_base_value in fills:
        in_cash = fee - fee_base_value
        cash += -(qty * price + in_cash) if side == "buy" else qty * price - in_cash
    if not _close(book["cash"], cash, rel=1e-9, floor=1e-6):
        raise Violation(f"{db}: stored cash {book['cash']:.8f}, the fills make it {cash:.8f}")
    prices: dict[str, Any] = book.get("last_price", {})
    replayed, _ = _replay(fills)
    stored_equity = book["cash"] + sum(q * prices.get(s, 0.0) for s, q in held.items())
    rebuilt_equity = cash + sum(q * prices.get(s, 0.0) for s, q in replayed.items())
    if not _close(stored_equity, rebuilt_equity, rel=1e-9, floor=1e-6):
        raise Violation(f"{db}: stored equity {stored_equity:.8f}, the fills make it {rebuilt_equity:.8f}")


def _check_state(records: Records, settings: Settings, found: Findings) -> None:
    """The engine_state row and the last event that says a state agree, but where HALTED was stored on its own by
    design (store.state_unsaid_why, which a start judges its row by too): noted, the next start records it."""
    judged = state_unsaid_why(records.engine_state_row(), records.last_state_event(),
                              reserve_used=reserve.used(settings.data_dir),
                              restored=records.kv(RESTORED_KEY) is not None)
    if judged is None:
        return
    unsaid, why = judged
    if why is None:
        raise Violation(f"{settings.db_path}: {unsaid}")
    found.notes.append(f"{settings.db_path}: {unsaid}: {why}; the next start records it")


def _check_approvals(records: Records, db: Path) -> None:
    """An approval is committed with its decision and the event that says its status: one without them is an
    approval of a decision recorded nowhere, or whose end the records do not say."""
    orphans = records.approvals_without_decision()
    if orphans:
        approval_id, decision_id = orphans[0]
        raise Violation(f"{db}: approval {approval_id} is for decision {decision_id}, which is not recorded")
    said: dict[str, str] = {}
    ended: dict[str, tuple[str, Any]] = {}  # approval id -> the first final outcome its events say, and its seq
    for data in records.approval_events():
        rec = json.loads(data)
        approval_id, outcome = str(rec.get("approval_id")), str(rec.get("outcome"))
        if approval_id in ended:  # an approval ends once: a final status never changes
            first, seq = ended[approval_id]
            raise Violation(f"{db}: approval {approval_id} ended {first} (seq {seq}), then {outcome} "
                            f"(seq {rec.get('seq')}): an approval ends once")
        if outcome != APPROVAL_PENDING:
            ended[approval_id] = (outcome, rec.get("seq"))
        said[approval_id] = outcome
    for approval_id, status in records.approval_statuses().items():
        if said.get(approval_id) != status:
            last = said.get(approval_id)
            raise Violation(f"{db}: approval {approval_id} is {status}, its last approval event says "
                            + ("nothing: there is none" if last is None else last))


def _check_paper_book(records: Records, orders: list[OrderRow], db: Path) -> None:
    book = records.kv("paper_venue")
    journal = {o[0]: o for o in orders}
    venue_orders = book.get("orders", []) if book else []
    seen: set[str] = set()
    exchange_ids: set[str] = set()
    for o in venue_orders:
        cid = o["client_order_id"]
        if cid in seen:
            raise Violation(f"{db}: the paper venue holds client order id {cid} twice")
        seen.add(cid)
        if o.get("exchange_id") in exchange_ids:
            raise Violation(f"{db}: the paper venue gave exchange id {o['exchange_id']} to two orders")
        exchange_ids.add(o.get("exchange_id"))
        if cid not in journal:
            raise Violation(f"{db}: the paper venue holds order {cid}, which the journal never recorded")
    for cid, status, *_ in orders:
        if status == "open" and journal[cid][5] == "paper" and cid not in seen:
            raise Violation(f"{db}: order {cid} is open in the journal but the paper venue does not know it")
