"""Backups: one compressed file per backup holding a consistent snapshot of an account's records.

A backup (`ffe-backup-<UTC time>.tar.zst`, a tar archive compressed with zstd) holds:
- `ffe.db`: the database, copied with SQLite's online backup from a read view pinned at one moment (store.pin_file);
- `audit.jsonl`: the audit trail up to exactly the last seq that database holds, each record as written: a line
  damaged or missing in the trail is the database's own copy of the record, counted and named in the manifest
  (trailcopy.py), so that no backup holds a trail its own verify refuses;
- `config.toml`: the effective configuration, secrets masked;
- `manifest.json`: versions, the seq range, row counts and the sha256 of each file above.

A running engine takes its own backup when asked on its control socket (host.EngineHost.backup): it waits only
while the buffered records are written and the read view is opened, a few milliseconds; the copy and the
compression run on another thread. A stopped data directory is backed up by `ffe backup` itself, holding the
directory's lock so that an engine starting meanwhile is refused, and the database's own: an engine whose lock files
were removed under it holds that one still, and takes the backup itself.

`verify` checks a backup on its own; `restore` verifies first, then puts it in place (restore.py).

A backup holds an account, which a restore puts in place for the next start. A backtest run is not one: it keeps
no books to restore and its trail is a compressed file of its own (storage.md, Backtests), and it is its folders,
copied as they are. So a backtest run's folder is refused before anything is taken (refuse_backtest_run), and a
backup that holds a run's database (an earlier release took one) fails its checks saying so.

A backup's files are made in a staging directory in the destination (`.ffe-backup-XXXXXXXX`, held by the backup
while it runs: staging.py), the archive among them, then renamed into place. Each backup first removes what
interrupted backups left in its destination; a verify or a restore, what interrupted ones left in the temporary
directory, where they unpack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterator, cast

import zstandard

from . import __version__, ahead, reach
from .audit import has_records, sync_dir
from .backtest_runs import not_an_account, run_log_dir, run_records
from .bookshapes import INTEGER, TEXT, Each, Items, Needed, mismatch
from .chain import rotated_files, verify_trail
from .config import Settings, render_settings
from .doctor import OrderEvents, Violation, check_against_events
from .errors import DamagedRecords, FfeError, NotADatabase, StorageError, UsageError, first_problem
from .model import OrderStatus, trail_disagrees
from .staging import Staging, sweep
from .store import (SCHEMA_VERSION, Records, Store, backtest_records, check_files, copy_pinned, events_end,
                    pin_file)
from .trailcopy import TrailCopy, copy_trail

FORMAT = 1
PREFIX = "ffe-backup-"
SUFFIX = ".tar.zst"
DB_NAME = "ffe.db"
TRAIL_NAME = "audit.jsonl"
CONFIG_NAME = "config.toml"
MANIFEST_NAME = "manifest.json"
MEMBERS = (MANIFEST_NAME, DB_NAME, TRAIL_NAME, CONFIG_NAME)
ZSTD_LEVEL = 10
STAGING_PREFIX = ".ffe-backup-"
UNPACK_PREFIXES = (".ffe-verify-", ".ffe-restore-")
_NAME = re.compile(re.escape(PREFIX) + r"(\d{8}T\d{6})(\d{3})Z" + re.escape(SUFFIX) + "$")
_SEQ = re.compile(rb'"seq":(\d+)')
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What a manifest of FORMAT holds (bookshapes.py): each field verify, restore or the next start reads (the restore
# marker takes `created_ms` and `seq.last`) is needed and of its type, the others of theirs when there.
MANIFEST = {
    "format": Needed(INTEGER), "ffe_version": Needed(TEXT), "schema_version": Needed(INTEGER),
    "sqlite_version": TEXT, "python": TEXT, "created": Needed(TEXT), "created_ms": Needed(INTEGER), "host": TEXT,
    "source": TEXT, "seq": Needed({"first": Needed(INTEGER), "last": Needed(INTEGER)}),
    "trail_records_from_database": INTEGER, "trail_damaged": Items({"file": TEXT, "first": INTEGER, "last": INTEGER}),
    "rows": Needed(Each(INTEGER)), "files": Needed(Each({"sha256": TEXT, "bytes": INTEGER})),
}


class Invalid(FfeError):
    """A backup that fails its checks (exit 1); the message lists what is wrong."""

    exit_code = 1


@dataclass(frozen=True)
class Made:
    path: Path
    manifest: dict[str, Any]
    swept: list[Path] = field(default_factory=list)  # what interrupted backups had left in the destination


# ------------------------------------------------------------------------------------------------ names, retention
def archive_name(ts: float) -> str:
    return f"{PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime(ts))}{int(ts * 1000) % 1000:03d}Z{SUFFIX}"


def taken_at(name: str) -> float | None:
    """The time in a backup's file name (seconds, UTC), or None for a file that is not one."""
    m = _NAME.match(name)
    if m is None:
        return None
    when = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    return when.timestamp() + int(m.group(2)) / 1000.0


def prune(directory: Path, keep_last: int, keep_days: int, now: float, made: Path | None = None) -> list[Path]:
    """Delete the backups in `directory` that retention does not keep: the newest `keep_last`, and the newest of
    each of the last `keep_days` UTC days, and always `made` (the backup just taken: it holds the newest records).
    A name after `now` (a clock that was ahead when it was taken, set back since) ranks after every backup taken up
    to now, and its day is no day kept: ranked by its name it would outrank every backup taken since, for good.
    Files not named like a backup are never touched. Returns the deleted."""
    found = sorted(((t <= now, t, p) for p in directory.iterdir() if (t := taken_at(p.name)) is not None),
                   reverse=True)
    keep = {p for _, _, p in found[:keep_last]} | {p for _, _, p in found if made is not None and p.name == made.name}
    days: set[str] = set()
    oldest_day = time.strftime("%Y-%m-%d", time.gmtime(now - (keep_days - 1) * 86_400)) if keep_days else "9"
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    for _, t, p in found:
        day = time.strftime("%Y-%m-%d", time.gmtime(t))
        if oldest_day <= day <= today and day not in days:
            days.add(day)
            keep.add(p)
    deleted = [p for _, _, p in found if p not in keep]
    for p in deleted:
        p.unlink()
    return deleted


# ------------------------------------------------------------------------------------------------ taking a backup
async def take_running(store: Store, settings: Settings, dest: Path, now: float, source: str,
                       monotonic: Callable[[], float]) -> tuple[Made, float]:
    """A backup of a running engine's records: the read view is pinned in the loop (the store's writes wait a
    moment), everything else happens on another thread. Also returns how long the pinning held the store, in
    milliseconds (the flush of the buffered records included)."""
    conn, _, held = await store.pin_snapshot(monotonic)
    config = _config_text(settings)
    made = await asyncio.to_thread(_write_archive, conn, settings.db_path, settings.audit_path, config, dest, now,
                                   source)
    return made, held * 1000.0


def refuse_backtest_run(settings: Settings) -> None:
    """UsageError (exit 2) for a backtest run's data directory, before anything is written there (a lock file
    neither): a backup holds an account (backtest_runs.run_records tells a run)."""
    level = run_records(settings)
    if level is None:
        return
    data_dir = settings.data_dir
    raise UsageError(f"{not_an_account(settings, level)}: a backup holds an account; a run is its folders, copy "
                     f"them as they are ({data_dir} and {run_log_dir(settings)}): `ffe doctor` checks them "
                     "wherever they are")


def take_stopped(settings: Settings, dest: Path, now: float) -> Made:
    """A backup of a data directory no engine runs on (the caller holds its lock)."""
    refuse_backtest_run(settings)
    # Before it is opened: a damaged or lost one is said so (a missing one beside its WAL or a trail with records),
    # and so are no records here (missing, empty, no table: --data-dir may be wrong) and another application's
    # database, as `ffe doctor` says them.
    db = settings.db_path
    check_files(db, new_ok=not has_records(settings.audit_path), whole_wal=True)
    records = Records(db)
    try:  # a newer release's (after a rollback): this release's own verify would refuse the backup
        records.check_version()
    finally:
        records.close()
    conn, _ = pin_file(settings.db_path, read_only=True)
    return _write_archive(conn, settings.db_path, settings.audit_path, _config_text(settings), dest, now, "directory")


def _config_text(settings: Settings) -> str:
    # render_settings masks every secret, one copied into another value too; a mask over the whole text would also
    # cover a key or a comment that equals a secret, and leave no TOML to restore from.
    return render_settings(settings)


def _write_archive(conn: sqlite3.Connection, db: Path, trail: Path, config: str, dest: Path, now: float,
                   source: str) -> Made:
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        swept = sweep_leftovers(dest)  # first: the room they take is the new backup's
        stage = Staging(dest, STAGING_PREFIX)
    except OSError as exc:
        conn.close()
        raise StorageError(f"{dest}: cannot write a backup here ({exc.strerror or exc})") from None
    with stage:
        return _stage_archive(conn, db, trail, config, dest, now, source, stage.path, swept)


def _stage_archive(conn: sqlite3.Connection, db: Path, trail: Path, config: str, dest: Path, now: float,
                   source: str, work: Path, swept: list[Path]) -> Made:
    try:
        facts = copy_pinned(conn, work / DB_NAME, keys=(ahead.CHECKED_KEY,))
        copied = _copy_trail(trail, work, facts.last_seq, db)
        # Beside a running engine the trail is copied after the read view was pinned: what it committed since is
        # past that view too.
        copied.ahead.committed_since(events_end(db), facts.last_seq)
        if copied.ahead.lost:
            # A backup of records that lost committed ones would hold the loss, and retention then deletes the
            # backups that do not: refused, as `ffe doctor` refuses them.
            raise DamagedRecords(f"{trail}: {copied.ahead.lost_records(facts.last_seq)}: no backup was written")
        unsettled = ahead.unsettled(trail, facts.kv.get(ahead.CHECKED_KEY), facts.engine_state)
        if unsettled is not None:
            # Those records set aside by a start, the trail is level again, but the books still lack them: refused
            # alike until the operator has dealt with it (the caller prunes nothing either).
            raise DamagedRecords(f"{unsettled}: no backup was written and none pruned; to take one of these books "
                                 "anyway, resume the engine once they are checked, then back up again")
        (work / CONFIG_NAME).write_text(config)
        manifest = {
            "format": FORMAT, "ffe_version": __version__, "schema_version": facts.schema_version,
            "sqlite_version": sqlite3.sqlite_version, "python": platform.python_version(),
            "created": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),  # UTC written as everywhere else in ffe
            "created_ms": int(now * 1000), "host": platform.node(), "source": source,
            "seq": {"first": copied.first, "last": copied.last},
            "trail_records_from_database": copied.from_database, "trail_damaged": copied.damaged,
            "rows": facts.rows,
            "files": {name: _digest(work / name) for name in (DB_NAME, TRAIL_NAME, CONFIG_NAME)},
        }
        # Its own verify's checks on the copy: records it would refuse (a value ffe never writes, rows that
        # disagree with their audit records) are refused now, no backup of them could be restored, and retention
        # would then delete the good backups for it.
        checked = Checked(manifest)
        check_records(work, manifest, checked)
        if checked.problems:
            problem = checked.problems[0].removeprefix(f"{DB_NAME}: ")
            raise DamagedRecords(f"{db}: {problem}: no backup was written and none pruned")
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
        path = dest / archive_name(now)
        partial = work / (path.name + ".partial")  # in the staging directory: removed with it, if interrupted
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            _pack(work, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        sync_dir(dest)
        return Made(path, manifest, swept)
    except OSError as exc:
        raise StorageError(f"{dest}: the backup could not be written ({exc.strerror or exc})") from None


def _copy_trail(trail: Path, work: Path, last_seq: int, db: Path) -> TrailCopy:
    """The trail copied into `work` beside the database's copy there (copy_trail). Damage found in that copy is
    named as the database `db` it was taken from: the copy goes with the staging directory."""
    try:
        return copy_trail(trail, work / TRAIL_NAME, last_seq, work / DB_NAME)
    except DamagedRecords as exc:
        raise type(exc)(str(exc).replace(str(work / DB_NAME), str(db))) from None


def sweep_leftovers(dest: Path) -> list[Path]:
    """Remove what interrupted backups left in `dest`: staging directories no backup holds, and archives cut
    short (`NAME.partial`: a backup now writes its archive in its staging directory, so none is under way)."""
    removed = sweep(dest, STAGING_PREFIX)
    for p in sorted(dest.glob(f"{PREFIX}*{SUFFIX}.partial")):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def sweep_unpacked() -> list[Path]:
    """Remove the staging directories that interrupted verifies and restores left in the temporary directory."""
    tmp = Path(tempfile.gettempdir())
    return [p for prefix in UNPACK_PREFIXES for p in sweep(tmp, prefix)]


def trail_lines(path: Path) -> Iterator[bytes]:
    """The audit trail's whole lines (newline included), oldest first: its rotated files, then the current one.
    A torn last line is not one."""
    for part in [*rotated_files(path), path]:
        if not reach.is_a_file(part):
            continue
        with open(part, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    return
                yield line


def seq_of(line: bytes) -> int | None:
    m = _SEQ.search(line)
    return int(m.group(1)) if m else None


def _digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"sha256": h.hexdigest(), "bytes": path.stat().st_size}


def _pack(work: Path, f: IO[bytes]) -> None:
    with zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1).stream_writer(f, closefd=False) as z:
        with tarfile.open(fileobj=z, mode="w|") as tar:
            for name in MEMBERS:  # the manifest first: a reader learns what follows before it comes
                info = tar.gettarinfo(str(work / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(work / name, "rb") as member:
                    tar.addfile(info, member)


# ------------------------------------------------------------------------------------------------ reading one
def unpack(file: Path, into: Path) -> dict[str, Any]:
    """Extract a backup's files into `into` and return its manifest. A file that is not an ffe backup at all is
    bad input (UsageError, exit 2); a backup damaged or cut short is records that fail their checks (Invalid,
    exit 1), and so is what is wrong inside one (for `check`)."""
    if reach.is_dir(file):
        raise UsageError(f"{file}: is a directory, not a backup file")
    if not file.exists():  # a pipe is read as well: `<(ssh host cat BACKUP)`
        raise UsageError(f"{file}: no such backup file")
    members = 0
    frame: _Frame | None = None
    try:
        with open(file, "rb", buffering=0) as f:
            head = _read_exactly(f, len(ZSTD_MAGIC))
            if head and head != ZSTD_MAGIC and ZSTD_MAGIC.startswith(head):
                # The first bytes of a Zstandard file, then its end: a copy that stopped at once, not another file.
                raise Invalid(f"{file}: damaged or cut short (it ends part way through)")
            if head != ZSTD_MAGIC:
                raise UsageError(f"{file}: not an ffe backup (not Zstandard-compressed)")
            frame = _Frame(_Rest(head, f))
            with tarfile.open(fileobj=cast(IO[bytes], frame), mode="r|") as tar:
                for member in tar:
                    if member.name not in MEMBERS or not member.isfile():
                        raise UsageError(f"{file}: not an ffe backup (unexpected member {member.name!r})")
                    src = tar.extractfile(member)
                    assert src is not None
                    with open(into / member.name, "wb") as out:
                        shutil.copyfileobj(src, out)
                    members += 1
            while frame.read(_Frame.CHUNK):  # what follows the archive, to the frame's end
                pass
            if not frame.complete:
                raise Invalid(f"{file}: damaged or cut short (it ends part way through)")
    except zstandard.ZstdError as exc:
        raise Invalid(f"{file}: damaged ({exc})") from None
    except (tarfile.TarError, EOFError) as exc:
        if frame is not None and not frame.complete:  # a backup that stopped part way, however early
            raise Invalid(f"{file}: damaged or cut short (it ends part way through)") from None
        if not members:  # Zstandard, whole, but no tar archive of ours in it
            raise UsageError(f"{file}: not an ffe backup ({exc})") from None
        raise Invalid(f"{file}: damaged or cut short ({exc})") from None
    except OSError as exc:
        raise UsageError(f"{file}: cannot be read ({exc.strerror or exc})") from None
    try:
        manifest = json.loads((into / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        raise UsageError(f"{file}: not an ffe backup (no {MANIFEST_NAME})") from None
    except ValueError as exc:
        raise Invalid(f"{file}: {MANIFEST_NAME} is not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise Invalid(f"{file}: {MANIFEST_NAME} is not an object")
    return manifest


def _read_exactly(f: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size and (more := f.read(size - len(data))):
        data += more
    return data


class _Rest:
    """The rest of a file whose first bytes were read already (a pipe cannot go back to them)."""

    def __init__(self, head: bytes, f: IO[bytes]) -> None:
        self.head = head
        self.f = f

    def read(self, size: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.f.read(size)


class _Frame:
    """The decompressed bytes of the Zstandard frame read from `src`, as a file to read from. A file cut short just
    ends, without an error from the decompressor: `complete` says whether the frame's end was read."""

    CHUNK = 1 << 16

    def __init__(self, src: _Rest) -> None:
        self._src = src
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._out = b""
        self._pos = 0
        self.complete = False

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(self.CHUNK), b""))
        while self._pos == len(self._out) and not self.complete:
            chunk = self._src.read(self.CHUNK)
            if not chunk:
                break
            self._out, self._pos = self._obj.decompress(chunk), 0
            self.complete = self._obj.eof
        end = min(len(self._out), self._pos + size)
        data = self._out[self._pos:end]
        self._pos = end
        return data


@dataclass
class Checked:
    manifest: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    events: int = 0
    orders: int = 0
    fills: int = 0


def verify(file: Path) -> Checked:
    """Every check of a backup: raises Invalid naming what is wrong, or returns what was checked."""
    with Staging(Path(tempfile.gettempdir()), UNPACK_PREFIXES[0]) as stage:
        checked = check_unpacked(file, stage.path)
    if checked.problems:
        raise Invalid(f"{file}: {len(checked.problems)} problem(s): " + "; ".join(checked.problems[:10]))
    return checked


def check_unpacked(file: Path, work: Path) -> Checked:
    """Unpack `file` into `work` and check it there (the files stay, for a restore)."""
    manifest = unpack(file, work)
    checked = Checked(manifest)
    problems = checked.problems
    if manifest.get("format") != FORMAT:
        problems.append(f"format {manifest.get('format')!r}, this ffe reads format {FORMAT}")
        return checked
    shape = mismatch(MANIFEST, manifest)
    if shape is not None:
        problems.append(f"{MANIFEST_NAME}: {shape}")
        return checked
    schema = manifest["schema_version"]
    if schema > SCHEMA_VERSION:
        problems.append(f"written by ffe {manifest.get('ffe_version')} with database schema {schema}, newer than this "
                        f"ffe's ({SCHEMA_VERSION}): verify and restore it with that release")
        return checked
    files = manifest["files"]
    for name in sorted(set(files) - {DB_NAME, TRAIL_NAME, CONFIG_NAME}):
        problems.append(f"{MANIFEST_NAME}: files lists {name}, which no backup holds")
    for name in (DB_NAME, TRAIL_NAME, CONFIG_NAME):
        want = files.get(name)
        if not (work / name).exists():
            problems.append(f"{name} is missing")
        elif not isinstance(want, dict) or _digest(work / name) != want:
            problems.append(f"{name}: checksum differs from the manifest's")
    if problems:
        return checked
    level = backtest_records(work / DB_NAME)
    if level is not None:  # an account's checks would call its books lost
        problems.append(f"{DB_NAME}: a backtest run's records ({level}), not an account's: nothing to restore (a "
                        "run is its folders, copied as they are)")
        return checked
    check_records(work, manifest, checked)
    return checked


def check_records(work: Path, manifest: dict[str, Any], checked: Checked) -> None:
    """A backup's records in `work` (its database and trail beside each other, as `manifest` describes them) checked
    as its verify checks them; what is wrong goes to `checked.problems`. A backup runs it on its copy before it
    writes anything (no backup its verify would refuse), a verify on what it unpacked."""
    problems = checked.problems
    try:
        records = Records(work / DB_NAME)
    except (StorageError, NotADatabase) as exc:
        problems.append(str(exc))
        return
    try:
        integrity = records.integrity()
        if integrity != ["ok"]:
            problems.append(f"{DB_NAME}: integrity check failed: {first_problem(integrity)}")
            return
        damage = records.damage() or records.books_damage()
        if damage is not None:
            problems.append(f"{DB_NAME}: {damage}")
            return
        if records.schema_version() != manifest["schema_version"]:
            problems.append(f"{DB_NAME}: schema version {records.schema_version()}, the manifest says "
                            f"{manifest['schema_version']}")
        if records.row_counts() != manifest["rows"]:
            problems.append(f"{DB_NAME}: row counts differ from the manifest's")
        # The trail's own continuity and hash chain, up to the chain head the database stored.
        trail = verify_trail(work, records.chain_head(), name=TRAIL_NAME)
        if not trail.ok:
            reason = trail.reason.replace(f"{work}{os.sep}", "")  # the unpacked copy's place means nothing to a reader
            problems.append(f"{TRAIL_NAME}: seq {trail.first_bad_seq}: {reason}")
            return
        _agree(records, work / TRAIL_NAME, manifest, checked)
    finally:
        records.close()


def _agree(records: Records, trail: Path, manifest: dict[str, Any], checked: Checked) -> None:
    """The database and the audit trail tell the same story: the database's event records are the trail's, byte
    for byte, to the same last seq; every order has its records in the trail, with the journal's final status;
    and the rows agree with their records as `ffe doctor` judges them (doctor.check_against_events): every fill
    its `fill` record, alike, each order's row its `order` records and fills, every closed trade its
    `position_closed` record. A line the database lacks (written just before a kill, its transaction never
    committed) tells nothing, an order journaled `new` may have no record yet (the kill lost it before it was
    written; the next start settles the order), and an order's status may be ahead of its records (model.
    trail_disagrees, as `ffe doctor` judges it): what a kill leaves, the next start takes as it is."""
    problems = checked.problems
    db_last = records.last_seq()
    if db_last != manifest["seq"]["last"]:
        problems.append(f"the database's last seq is {db_last}, the manifest says {manifest['seq']['last']}")
    first = last = 0
    order_seen: set[str] = set()
    order_final: dict[str, str] = {}  # the first final status the trail shows for each order
    order_events: OrderEvents = {}
    db_events = iter(records.events())  # merged with the trail's lines, both in seq order
    want = next(db_events, None)
    for line in trail_lines(trail):
        s = seq_of(line)
        if s is None:
            continue
        first = first or s
        last = s
        if want is not None and want[0] < s:
            problems.append(f"seq {want[0]} is in the database but not in the audit trail")
            return
        if want is None or want[0] != s:
            continue  # not in the database
        checked.events += 1
        if line[:-1] != want[1]:
            problems.append(f"seq {s} differs between the database and the audit trail")
            return
        want = next(db_events, None)
        if b'"event":"order"' in line:
            rec = json.loads(line)
            cid = rec.get("client_order_id")
            if not cid:
                continue
            order_seen.add(cid)
            order_events.setdefault(cid, []).append((f"{TRAIL_NAME} seq {s}", rec))
            status = rec.get("status", "")
            if status in _FINAL:
                order_final.setdefault(cid, status)
    if first != manifest["seq"]["first"]:  # the range the ok line says is the trail's own
        problems.append(f"{MANIFEST_NAME}: seq.first is {manifest['seq']['first']}, the audit trail's first is {first}")
    if want is not None:
        problems.append(f"seq {want[0]} is in the database but not in the audit trail (it ends before)")
    if last != db_last:
        problems.append(f"the audit trail ends at seq {last}, the database at seq {db_last}")
    orders = records.orders()
    checked.orders = len(orders)
    for cid, status, *_ in orders:
        if cid not in order_seen:
            if status != OrderStatus.NEW.value:
                problems.append(f"order {cid} ({status}) has no record in the audit trail")
        elif trail_disagrees(status, order_final.get(cid)):
            problems.append(f"order {cid} is {status} in the database, {order_final[cid]} in the audit trail")
    checked.fills = sum(records.fill_counts().values())
    if problems:  # the rows are judged by their records once the database and the trail tell one story
        return
    try:
        check_against_events(records, order_events, Path(DB_NAME))
    except Violation as exc:
        problems.append(str(exc))


_FINAL = tuple(s.value for s in OrderStatus if s.final)


