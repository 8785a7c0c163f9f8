"""`ffe restore`: a verified backup put in place as a data directory's database and a log directory's audit trail.

In order: the backup is checked in full (backup.check_unpacked) and refused if anything is wrong; the data
directory's lock is taken, then the database's own (host.lock_database: held by an engine whose lock files were
removed under it), then the log directory's (an engine running on either refuses the restore: a restore
must not replace the audit trail an engine is writing; one starting meanwhile is refused); files
already there are refused unless `force`, and with it they are moved aside (`<name>.before-restore-<time>`), never
deleted: the records a start set aside beside the trail (`audit.jsonl.uncommitted-after-SEQ`) with it; a link among
them is moved aside itself, never followed (one that loops or leads nowhere is not read, as a FIFO is not). The
database is marked as restored (store.RESTORED_KEY): the next start asks the venue for the orders the account made
after the backup before it sends any (recovery.py). The backup's configuration is written beside
the database as `config.from-backup.toml`, for reference: the operator's own configuration is not touched. The
alerts the backup held pending in its outbox are marked withheld, never delivered (store.withhold_pending_alerts):
the engine it was taken from may have delivered them. The restore says how many, and the restored start's first
alert names their kinds, a page when one of them was a page or the account is HALTED (alerts.py), so that a page
nobody delivered is not lost.

The backup is unpacked in a staging directory in the temporary directory (`.ffe-restore-XXXXXXXX`, staging.py),
removed at the end, or when SIGTERM or SIGINT interrupts the restore before it puts the files in place (putting
them in place, moments, is not interrupted: interrupts.py); what killed restores left there is removed first.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import orjson

from . import reach
from .ahead import CHECKED_KEY, aside_paths, unchecked_files
from .audit import halt_among, sync_dir
from .backtest_runs import not_an_account, run_records
from .backup import (CONFIG_NAME, DB_NAME, TRAIL_NAME, UNPACK_PREFIXES, Checked, Invalid, check_unpacked,
                     sweep_unpacked)
from .chain import BLANK, trail_files, trail_paths
from .config import Settings
from .errors import (LOG_DIR_RIGHT, FfeError, NotADatabase, NotAFile, StartError, StorageError, UnreachablePath,
                     UsageError)
from .host import acquire_lock, acquire_log_lock, lock_database, log_dir_holder, refuse_held_log_dir
from .interrupts import held
from .model import EngineState
from .staging import Staging
from .store import (RESTORE_ASIDE, RESTORE_PARTIAL, SIDE_FILES, Records, halted_in, keep_state,
                    mark_restored, operator_stops, peek_foreign, refuse_not_a_file, stops_in, wal_without_database,
                    withhold_pending_alerts)

CONFIG_COPY = "config.from-backup.toml"
SEQ = re.compile(rb'"seq":(\d+)')  # an audit record's seq, read without parsing the line
STOPS_LOST = "the records this restore replaced were "  # how the PAUSED that keeps the operator's stops begins
MANUAL_LOST = "in manual approval: set it again (`ffe ctl mode manual`) before you resume"
STOPS_KEPT = ", which the backup's were not: kept PAUSED"  # and how it ends
# Such a PAUSED as the records of a restore's stops read it back: what it kept, for a restore run over it again.
RESTORE_PAUSE = re.compile(re.escape(STOPS_LOST) + "(.*)" + re.escape(STOPS_KEPT) + r" \(by restore\)", re.S)
KEPT_NOTE = re.compile(r" \(by [^()]*, kept across a restore\)$")  # what _kept adds to a HALTED's reason


class Refused(FfeError):
    """The restore would overwrite records, or an engine holds the directory: nothing was changed."""

    exit_code = 1


def restore(file: Path, settings: Settings, *, force: bool, now: float) -> dict[str, Any]:
    run = run_records(settings)
    if run is not None:  # a wrong --data-dir: --force would move the run's database aside for an account's
        raise UsageError(f"{not_an_account(settings, run)}: a restore puts an account in place; give an account's "
                         "data directory (nothing restored)")
    swept = sweep_unpacked()
    with Staging(Path(tempfile.gettempdir()), UNPACK_PREFIXES[1]) as stage:
        try:
            checked = check_unpacked(file, stage.path)
        except Invalid as exc:  # damaged or cut short
            raise Invalid(f"{exc}: fails verify, nothing restored") from None
        if checked.problems:
            raise Invalid(f"{file} fails verify, nothing restored: " + "; ".join(checked.problems[:10]))
        with held():  # from here a signal would stop it between files, with records moved aside and none back
            done = _put_in_place(file, settings, stage.path, checked, force=force, now=now)
            stage.remove()
    return {**done, "swept": [str(p) for p in swept]}


def _put_in_place(file: Path, settings: Settings, work: Path, checked: Checked, *, force: bool,
                  now: float) -> dict[str, Any]:
    data_dir, db, trail = settings.data_dir, settings.db_path, settings.audit_path
    locks = _take_locks(data_dir, db, trail)
    try:
        # A kill switch pressed after the backup was taken is kept: the records it is in are moved aside, and the
        # restored account would otherwise start without it. Read first: opening the database can leave its -wal and
        # -shm files beside it, which are then moved aside with it.
        try:
            # What is there must be ffe's for --force to move it aside: another application's database (or a
            # directory) is a wrong --data-dir, and the restore would take its place.
            refuse_not_a_file(db)
            peek_foreign(db)
            halted, unreadable, found = _states_to_keep(db, trail, work / DB_NAME, checked.manifest["seq"]["last"])
            stops = None if halted is not None or halted_in(work / DB_NAME, strict=True) is not None else \
                _stops_lost(found, work / DB_NAME, settings.engine.approval == "manual")
        except NotADatabase as exc:
            raise NotADatabase(f"{exc}; nothing restored") from None
        # The records a start set aside beside the trail go with it: they belong to the records replaced (a loss
        # they show is what this restore remedies), and a later start's would otherwise be added to them.
        # Listed unchecked: whatever is there is moved aside, a FIFO or a directory among them too (never opened).
        sides = [db.with_name(db.name + side) for side in SIDE_FILES]
        there = [p for p in (db, *sides, trail, *trail_paths(trail)[:-1], *aside_paths(trail)) if _replaced(p, db)]
        if there and not force:
            raise Refused(f"{', '.join(str(p) for p in there)} already there: add --force to move them aside "
                          "and restore (nothing restored)")
        manifest = checked.manifest
        # The alerts the backup held pending may have been delivered by the engine it was taken from: delivered
        # again, one halt would page twice. Neither may one be lost: the restored start's first alert names them.
        withheld, paged = withhold_pending_alerts(
            work / DB_NAME, f"restored from a backup ({file.name}, taken {manifest.get('created')}): pending when "
                            "it was taken, not delivered again (the restored start's alert names them)",
            {"backup": file.name, "taken": manifest.get("created")}, now)
        mark_restored(work / DB_NAME, {"backup": file.name, "taken_ms": manifest["created_ms"],
                                       "seq": manifest["seq"]["last"], "restored_ms": int(now * 1000)}, now)
        if halted is not None:
            keep_state(work / DB_NAME, EngineState.HALTED, halted, now)
        elif stops is not None:
            keep_state(work / DB_NAME, EngineState.PAUSED, stops, now)
        trail.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The database last: the restore is done once it is in place. Killed before (a power cut), the start finds
        # no database beside the records moved aside and refuses, saying to restore again (store.py,
        # restore_left_half_way), rather than start on a database whose audit trail never came.
        puts = [(work / TRAIL_NAME, trail), (work / CONFIG_NAME, data_dir / CONFIG_COPY), (work / DB_NAME, db)]
        _check_room(puts)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        aside = _swap(there, puts, stamp)
    finally:
        for fd in locks:
            os.close(fd)
    return {"backup": str(file), "database": str(db), "audit_trail": str(trail),
            "config": str(data_dir / CONFIG_COPY), "moved_aside": aside, "seq": manifest["seq"],
            "taken": manifest.get("created"), "events": checked.events, "orders": checked.orders,
            "fills": checked.fills, "kept_halted": halted is not None,
            "stops_kept": stops,
            "unreadable": unreadable, "alerts_withheld": withheld, "alerts_withheld_pages": paged}


def _replaced(path: Path, db: Path) -> bool:
    """Whether `path` holds something the restore moves aside rather than writes over: anything there, looked at
    without following a link, so that a link that loops or leads nowhere is moved aside unread as a FIFO is (followed,
    it reads as nothing there, and would be left in place or written over); not an empty regular file, which holds
    no records (the database excepted: it is always moved aside)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:  # a directory on the way closed to this user
        raise reach.said(path, exc) from None
    return path == db or not stat.S_ISREG(info.st_mode) or info.st_size > 0


def _take_locks(data_dir: Path, db: Path, trail: Path) -> list[int]:
    """The data directory's lock, the database's own and the log directory's, held for the restore; Refused when an
    engine holds any of them (nothing changed)."""
    running = Refused(f"{data_dir}: an ffe engine is running on this data directory; stop it first (nothing "
                      "restored)")
    log_held = Refused(f"{trail.parent}: the audit trail there is written by {log_dir_holder(trail.parent)}; stop "
                       "it first or restore with another --log-dir (nothing restored)")
    try:
        refuse_held_log_dir(trail.parent, data_dir)
    except StartError:
        raise log_held from None
    try:
        locks = [acquire_lock(data_dir, holder="restore")]
    except StartError:
        raise running from None
    except StorageError as exc:
        raise _unwritable(exc) from None
    try:
        # The engine holds its database too: its lock files can be removed under it (a cleanup of `*.lock`), the
        # database it writes cannot be moved aside without losing what it writes next.
        locks.append(lock_database(db))
    except StartError:
        os.close(locks[0])
        raise running from None
    except (StorageError, UnreachablePath):
        pass  # no database (or none this user can open, so no engine of its own writes it): nothing to hold
    try:
        locks.append(acquire_log_lock(trail.parent, data_dir))
    except StartError:
        for fd in locks:
            os.close(fd)
        raise log_held from None
    except StorageError as exc:
        for fd in locks:
            os.close(fd)
        raise _unwritable(exc) from None
    return locks


def _unwritable(exc: StorageError) -> NoRoom:
    """A directory's lock that cannot be written (its disk full, read-only), said for a restore: nothing moved."""
    return NoRoom(f"{str(exc).removesuffix(', then start again')}, then restore again (nothing restored)")


def _kept(halted: tuple[str, str] | None) -> str | None:
    """The reason a HALTED kept across a restore is stored with; one kept across an earlier restore already says so,
    and says who halted: a note per restore would grow the text of every page and status line."""
    if halted is None:
        return None
    reason, by = halted
    return reason if KEPT_NOTE.search(reason) else f"{reason} (by {by}, kept across a restore)"


# The operator's stops short of HALTED: the reason (and who) of their PAUSED, and whether manual approval is set.
Stops = tuple[str | None, bool]
NO_STOPS: Stops = (None, False)


def _either(a: Stops, b: Stops) -> Stops:
    return a[0] or b[0], a[1] or b[1]


def _states_to_keep(db: Path, trail: Path, backup_db: Path, backup_last: int) -> tuple[str | None, bool, Stops]:
    """What the records this restore replaces hold that the restored account keeps: the reason of their HALTED (None:
    none), whether it is kept because they could not be read, and the operator's stops short of it. Read from the
    same records for both: the database in place and the audit records past its last event, or with none in place
    the database an earlier restore moved aside and the trail past the backup's last event; and the records a start
    set aside that no resume has checked. `backup_db` and `backup_last`: the backup's database and last seq."""
    # A WAL without its database holds records that cannot be read without it: unreadable, as a damaged database.
    no_database = not db.exists() and wal_without_database(db) is None
    stops = NO_STOPS
    if no_database:
        aside, unreadable, stops = _states_aside(db)
        if aside is not None:
            return aside, unreadable, stops
    try:
        if no_database:
            # Moved aside by hand (the runbook's step for a damaged one), or never there: the trail's records past
            # the backup's last event are what the restored account would lose. Which set-aside files a resume had
            # checked is read from the backup's database: one checked since counts as unchecked, and is read.
            halt, past = _states_past(trail, backup_last, _checked(backup_db), since="the backup's last event")
        else:
            halt = halted_in(db, strict=True)
            if halt is not None:
                return _kept(halt), False, NO_STOPS
            stops = stops_in(db)
            halt, past = _states_past(trail, *_last_and_checked(db), since="the database's last event")
    except StorageError as exc:
        # Damaged (the runbook's case for a restore): whether it was HALTED cannot be told, so the restored account
        # is HALTED all the same; a kill switch the damage hid is never re-armed by a restore.
        return (f"the records this restore replaced could not be read ({exc}), so whether they were HALTED could "
                "not be told: re-arm once satisfied"), True, NO_STOPS
    return _kept(halt), False, _either(stops, past)


def _stops_lost(found: Stops, backup_db: Path, manual: bool) -> str | None:
    """The reason of the PAUSED that keeps the operator's stops (`found`) of the records this restore replaces which
    the backup's lack: their PAUSED (the operator's: not one the engine set on its own, a risk limit, the breaker,
    reconciliation), and manual approval (unless the configuration's engine.approval is manual, which a start takes
    anyway). Restored without them, the account would trade at its next start as the operator had stopped it from
    trading; PAUSED, nothing enters until resumed (exits and stop-losses go on), and the reason says what to set
    again first. None when the backup's records hold them too, or there are none."""
    paused, manual_mode = found
    backup_paused, backup_manual = stops_in(backup_db)
    lost = []
    if paused is not None and backup_paused is None:
        earlier = RESTORE_PAUSE.fullmatch(paused)  # a restore's own: the stops it kept, said once
        lost.append(earlier.group(1) if earlier is not None else f"PAUSED ({paused})")
    if manual_mode and not backup_manual and not manual and not any(MANUAL_LOST in x for x in lost):
        lost.append(MANUAL_LOST)
    if not lost:
        return None
    return f"{STOPS_LOST}{' and '.join(lost)}{STOPS_KEPT}"


def _last_and_checked(db: Path) -> tuple[int, Any]:
    """The database's last seq and the set-aside files a resume recorded as checked (CHECKED_KEY)."""
    records = Records(db)
    try:
        return records.last_seq(), records.kv(CHECKED_KEY)
    finally:
        records.close()


def _checked(db: Path) -> Any:
    return _last_and_checked(db)[1]


def _states_past(trail: Path, last: int, checked: Any, *, since: str) -> tuple[tuple[str, str] | None, Stops]:
    """(reason, by) of a HALTED the records this restore moves aside hold past seq `last` (the database's last event,
    or with no database there the backup's), and the operator's stops they hold: an older copy of the database put
    back, or its WAL lost, or the database moved aside, after the kill switch was pressed or the operator paused;
    and in the records an earlier start set aside as never committed that no resume has checked since (`checked`;
    one that has was dealt with: re-armed, resumed, or kept in the database's own state). The start would keep them
    (states.md); so does the restore. StorageError when the records cannot be read: whether they hold one cannot
    be told."""

    try:
        # Each record of its own: the state the trail ends in, and the state each set-aside file ends in (its
        # records are of another moment than the trail's). Every one read: one that cannot be read is said so.
        sources = [_states_after(trail_files(trail), last),
                   *(_states_after([path], None) for path in unchecked_files(trail, checked))]
        halt = next((h for h in map(halt_among, sources) if h is not None), None)
        stops = NO_STOPS
        for states in sources:
            stops = _either(stops, operator_stops(states))
    except OSError as exc:
        raise StorageError(f"{trail}: cannot be read ({exc})") from None
    except (NotAFile, UnreachablePath) as exc:  # a FIFO, a device, a directory, a link that loops or leads
        # nowhere among them, never opened: not read either (moved aside with the rest)
        raise StorageError(str(exc).removesuffix(LOG_DIR_RIGHT)) from None
    if halt is None:
        return None, stops
    reason, by = halt
    return (f"{reason}: found in the audit records past {since}", by), stops


def _states_after(paths: list[Path], last: int | None) -> list[dict[str, Any]]:
    """The `engine_state` records of the audit lines in `paths` (read in order) past seq `last` (every one when None).
    Each line from the record of seq `last` on must read as a record: one that does not (damaged, or written over)
    could be the halt or the pause the restore must keep, so which state the records end in cannot be told
    (StorageError). A file's unfinished last line, or a line of blank bytes (what a crash or a power loss leaves), is
    no record yet, as the start sets it aside."""
    out: list[dict[str, Any]] = []
    checking = last is None
    for path in paths:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not checking:
                    if _seq(line) < (last or 0):
                        continue
                    checking = True
                if not line.endswith(b"\n") or not line.strip(BLANK + b"\n"):
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise StorageError(f"{path}:{number}: a record past seq {last or 0} cannot be read (damaged?)") \
                        from None
                if isinstance(rec, dict) and rec.get("event") == "engine_state":
                    out.append(rec)
    return out


def _seq(line: bytes) -> int:
    match = SEQ.search(line)
    return int(match.group(1)) if match else 0


def _states_aside(db: Path) -> tuple[str | None, bool, Stops]:
    """With no database in place, the HALTED state of the newest database a restore moved aside (one killed before
    it put the backup's in place, run again as the runbook says), which the account would otherwise lose, whether it
    is kept because those records cannot be read (an earlier restore's over a damaged database, kept for a
    post-mortem: whether it was HALTED cannot be told, so the restored account is), and the operator's stops they
    hold. Read from copies under the names SQLite reads a WAL by: a state stored just before a crash can be in the
    WAL alone."""
    stamps = sorted(p.name.rsplit(RESTORE_ASIDE, 1)[1] for p in db.parent.glob(f"{db.name}{RESTORE_ASIDE}*"))
    if not stamps:
        return None, False, NO_STOPS
    moved = db.with_name(f"{db.name}{RESTORE_ASIDE}{stamps[-1]}")
    wal = db.with_name(f"{db.name}-wal{RESTORE_ASIDE}{stamps[-1]}")
    if not wal.exists():  # killed before it moved the WAL: still under its own name
        wal = db.with_name(f"{db.name}-wal")
    try:
        with tempfile.TemporaryDirectory(prefix=".ffe-restore-read-") as tmp:
            shutil.copyfile(moved, Path(tmp) / db.name)
            if wal.exists():
                shutil.copyfile(wal, Path(tmp) / f"{db.name}-wal")
            copy = Path(tmp) / db.name
            try:
                return _kept(halted_in(copy, strict=True)), False, stops_in(copy)
            except StorageError as exc:  # the records themselves: said of the file moved aside, not of the copy
                said = str(exc).replace(str(copy), str(moved))
                return (f"the records a restore moved aside ({moved}) could not be read ({said}), so whether they "
                        "were HALTED could not be told: re-arm once satisfied"), True, NO_STOPS
    except OSError as exc:  # no room to read them where copies are made: their state must not be lost
        raise Refused(f"{moved}: the records a restore moved aside could not be copied to read their state ({exc}): "
                      f"free space in {tempfile.gettempdir()} and restore again, or move them away if they are lost "
                      "(nothing restored)") from None


class NoRoom(FfeError):
    """The restore's files would not fit, or could not be put in place: nothing was changed."""

    exit_code = 1


ROOM_MARGIN = 1.05  # what a disk must have free beyond the files' own size (its own bookkeeping, rounding to blocks)


def _check_room(puts: list[tuple[Path, Path]]) -> None:
    """NoRoom unless every disk the files go to has room for the copies of them it is given (the records they
    replace are moved aside on the same disk, freeing nothing)."""
    need: dict[int, tuple[Path, int]] = {}
    for src, dest in puts:
        dev = dest.parent.stat().st_dev
        where, size = need.get(dev, (dest.parent, 0))
        need[dev] = (where, size + src.stat().st_size)
    for where, size in need.values():
        free = shutil.disk_usage(where).free
        if free < size * ROOM_MARGIN:
            raise NoRoom(f"{where}: no room for the restored files ({size / 1e6:.1f} MB, {free / 1e6:.1f} MB free "
                         "on its disk): free space and restore again (nothing restored)")


def _swap(there: list[Path], puts: list[tuple[Path, Path]], stamp: str) -> list[str]:
    """The records `there` moved aside, then the restored files put in place; on any failure (a disk that fills
    meanwhile, a file that cannot be written), what was put in place is removed and what was moved aside is moved
    back (NoRoom, one line): the directories are as they were. Returns where the records were moved."""
    moved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    at = Path()  # the file being moved or written, for the message (a full disk's error names none)
    try:
        for at in there:
            aside = at.with_name(f"{at.name}{RESTORE_ASIDE}{stamp}")
            os.replace(at, aside)
            moved.append((at, aside))
        for src, at in puts:
            _put(src, at)
            placed.append(at)
    except OSError as exc:
        for dest in placed:
            dest.unlink(missing_ok=True)
        for p, aside in reversed(moved):
            os.replace(aside, p)
        raise NoRoom(f"{exc.filename or at}: cannot write ({exc.strerror or exc}): the records there are back in "
                     "place; free space or make the directory writable, then restore again (nothing restored)") \
            from None
    return [str(aside) for _, aside in moved]


def _put(src: Path, dest: Path) -> None:
    """Copy next to `dest`, sync, then rename over it: a crash leaves the old file or the new, whole."""
    partial = dest.with_name(dest.name + RESTORE_PARTIAL)
    try:
        with open(src, "rb") as s, open(partial, "wb") as d:
            shutil.copyfileobj(s, d)
            d.flush()
            os.fsync(d.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sync_dir(dest.parent)
