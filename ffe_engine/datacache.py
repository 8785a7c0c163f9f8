"""A backtest's market-data work kept between runs: the parsed candles of each file and the indicators and votes
computed over them (batch.py), in the data directory's `cache/` (`backtest.cache_mb`, 0 to keep none).

A sweep runs the same files again and again with other settings: each run would parse the same CSV text and compute
the same indicator columns, a quarter of a `trades` run. What is kept is keyed by what it was made from, and by
nothing else: the candles by the file's bytes, how they are read (gzip or not, by the file's name; whether bad rows
are skipped) and the source of the reader and of the bounds it checks prices against (market/bounds.py: candles are
kept only once they were read within them), the indicators and votes by those candles, the providers' parameters,
the source of the code that computes them and the Python that runs it. A file that changed, a provider set
otherwise, a new ffe or another Python computes afresh.

An entry is its arrays' bytes behind a header that names the key and a CRC-32 of what the header says and of
those bytes: an entry that is damaged (its header too), cut short, made by another machine's byte order or for
another key is not used (computed afresh and written again). Entries are written whole to a temporary name and
renamed; the least recently used are removed once the cache holds more than its limit, as a run starts and after
each write (a limit lowered holds from the next run; 0 empties it). Nor does it take the room its file system has
left below `monitor.disk_free_min_mb` (where DISK_LOW begins): an entry that would is not written, and the least
recently used are removed while there is less free, so that the runs' own records find the room. The cache is only
ever a shortcut: a run that cannot read or write it computes what it needs, and its results are the same bit for bit
either way (tests/test_datacache.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
import sys
import threading
import zlib
from array import array
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO, Mapping, cast

from . import batch, indicators, model
from .clock import Clock, WallClock
from .indicators import IndicatorColumns
from .signals import base
from .market import bounds, csvdata
from .market.csvdata import CandleSeries, load_csv

MAGIC = b"ffe-cache-3\n"  # 2: the check covers the header's content too; 3: a CRC-32, not a SHA-256
STALE_WRITE_S = 3600.0
CANDLE_FIELDS = ("ts", "open", "high", "low", "close", "volume")


def _digest(path: Path) -> str | None:
    """The SHA-256 of a file's bytes; None when it cannot be read, or is not a regular file: a pipe (`<(zcat ...)`)
    can be read only once, and that once is load_csv's."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _code_of(modules: list[Any]) -> str:
    """A digest of the source files of `modules`: the code that made an entry is part of its key."""
    paths = []
    for module in modules:
        path = getattr(module, "__file__", None)
        if not path:
            raise OSError(f"{module.__name__} has no source file")
        paths.append(path)
    return _sources_digest(tuple(paths))


@functools.lru_cache(maxsize=32)
def _sources_digest(paths: tuple[str, ...]) -> str:
    """Read once a process: every file read and every series' entries keyed by the same code, which the process
    loaded once."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def _parameters(provider: Any) -> list[Any]:
    """A provider's class and every attribute it holds, as text (its parameters)."""
    cls = type(provider)
    names: set[str] = set(getattr(provider, "__dict__", {}))
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
    return [cls.__module__, cls.__qualname__, [[n, repr(getattr(provider, n, None))] for n in sorted(names)]]


class DataCache:
    """The entries under `root`, at most `limit_bytes` of them (least recently used removed first), leaving at least
    `keep_free` bytes free on their file system."""

    def __init__(self, root: Path, limit_bytes: int, clock: Clock | None = None, keep_free: int = 0) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self.keep_free = keep_free
        self.clock = clock or WallClock()
        self.hits = 0
        self.misses = 0
        self._writers: list[threading.Thread] = []

    # ------------------------------------------------------------------ candles
    def series(self, path: Path, symbol: str, *, lenient: bool = False) -> CandleSeries:
        """The candles of the CSV file `path`, as `load_csv` reads them (the same errors, the same numbers)."""
        digest = _digest(path)
        try:
            reader = _code_of([csvdata, bounds])  # the bounds are the reader's: candles are cached once within them
        except OSError:
            digest = None
        if digest is None:
            return load_csv(path, symbol=symbol, lenient=lenient)  # a pipe, or it says what is wrong with the file
        # The same bytes read otherwise (gzip by the name, a bad row skipped or an error, another reader) are
        # other candles.
        key = f"candles|{int(lenient)}|{int(csvdata.gzipped(str(path)))}|{reader}|{digest}"
        found = self._read(key)
        if found is not None:
            meta, arrays = found
            s = CandleSeries(symbol, meta["timeframe_ms"], *(arrays[f].tolist() for f in CANDLE_FIELDS),
                             path=str(path), skipped=meta["skipped"], skip_reasons=meta["skip_reasons"])
        else:
            s = load_csv(path, symbol=symbol, lenient=lenient)
            if _digest(path) != digest:  # the file changed while it was read: what was read is not that file's
                return s
            self._write(key, {"timeframe_ms": s.timeframe_ms, "skipped": s.skipped, "skip_reasons": s.skip_reasons},
                        {"ts": array("q", s.ts), **{f: array("d", getattr(s, f)) for f in CANDLE_FIELDS[1:]}})
        s.digest = key
        return s

    # ------------------------------------------------------------------ indicators and votes
    def signals(self, series: Mapping[str, CandleSeries], providers: list[Any], *,
                every_decision: bool) -> batch.BarSignals | None:
        """batch.precompute's result, from the cache for each series that has it (a series read through `series`)."""
        try:
            modules = {m.__name__: m for m in (indicators, batch, model, sys.modules[base.__name__],
                                               *(sys.modules[type(p).__module__] for p in providers))}
            code = _code_of([modules[name] for name in sorted(modules)])
        except (OSError, KeyError):
            return batch.precompute(series, providers, every_decision=every_decision)
        params = json.dumps([_parameters(p) for p in providers], sort_keys=True)
        wanted = {}
        for symbol, s in series.items():
            if not getattr(s, "digest", ""):
                return batch.precompute(series, providers, every_decision=every_decision)
            wanted[symbol] = "signals|" + hashlib.sha256(
                "\n".join([s.digest, str(int(every_decision)), params, code, sys.version]).encode()).hexdigest()
        out: dict[str, batch.SeriesSignals] = {}
        for symbol, s in series.items():
            found = self._read(wanted[symbol])
            if found is not None:
                out[symbol] = _signals_from(s, *found)
                continue
            computed = batch.precompute({symbol: s}, providers, every_decision=every_decision)
            if computed is None:
                return None
            one = computed.by_symbol[symbol]
            self._write(wanted[symbol], *_signals_to(one))
            out[symbol] = one
        return batch.BarSignals(out, every_decision)

    # ------------------------------------------------------------------ entries
    def _file(self, key: str) -> Path:
        return self.root / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".bin")

    def _read(self, key: str) -> tuple[dict[str, Any], dict[str, array[Any]]] | None:
        path = self._file(key)
        try:
            # Opened without waiting, and read only as a file: a FIFO put at an entry's name would be waited on for
            # ever, a device read without end.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            with open(fd, "rb") as f:
                found = _load(f, key) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except OSError:
            found = None
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._used(path)
        return found

    def _write(self, key: str, meta: dict[str, Any], arrays: dict[str, array[Any]]) -> None:
        """Keep an entry, on a thread of its own: hashing and writing its arrays leave the interpreter to the run
        meanwhile (they release the GIL). The arrays are not changed after (columns once computed never are)."""
        writer = threading.Thread(target=self._write_now, args=(key, meta, arrays), name="ffe-cache-write")
        self._writers.append(writer)
        writer.start()

    def wait(self) -> None:
        """Until the entries asked for are written (or given up)."""
        while self._writers:
            self._writers.pop().join()

    def _write_now(self, key: str, meta: dict[str, Any], arrays: dict[str, array[Any]]) -> None:
        layout = [[name, a.typecode, len(a)] for name, a in arrays.items()]
        crc = zlib.crc32(_said(key, sys.byteorder, meta, layout))
        for a in arrays.values():
            crc = zlib.crc32(memoryview(a), crc)  # the arrays' own memory: no copy of them is made to write them
        header = json.dumps({"key": key, "byteorder": sys.byteorder, "meta": meta, "arrays": layout,
                             "crc32": crc}).encode()
        size = len(MAGIC) + 4 + len(header) + sum(a.itemsize * len(a) for a in arrays.values())
        free = self._free()
        if free is not None and free - size < self.keep_free:
            return  # the room left is the records': the run goes on without keeping it
        path = self._file(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            # Private to the user, as every record of ffe: directories 0700, files 0600 (by their own modes: the
            # umask is the whole process's, and this runs beside it).
            missing = [d for d in (self.root, *self.root.parents) if not d.exists()]
            for d in reversed(missing):
                d.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + len(header).to_bytes(4, "big") + header)
                for a in arrays.values():
                    a.tofile(f)
            os.replace(tmp, path)
            self._used(path)
        except OSError:  # a full disk or a read-only directory: the run goes on without keeping it
            try:
                tmp.unlink()
            except OSError:
                pass
            return
        self.prune()

    def _used(self, path: Path) -> None:
        """Mark an entry used now (its modification time, to the nanosecond: the file system's own clock is coarser,
        and entries used one after the other must keep their order)."""
        now = int(self.clock.wall() * 1e9)
        try:
            os.utime(path, ns=(now, now))
        except OSError:
            pass

    def _free(self) -> int | None:
        """The bytes free on the cache's file system (of the nearest directory there is); None when not known."""
        where = next((d for d in (self.root, *self.root.parents) if d.exists()), self.root)
        try:
            return shutil.disk_usage(where).free
        except OSError:
            return None

    def prune(self) -> None:
        """The least recently used entries out, down to the limit; and what a writer killed while writing left (a
        temporary file an hour old: a live one is written in seconds). After each write, and as a run starts
        (cache_for): a limit lowered since holds from the next run, though it finds every entry it needs."""
        stale = self.clock.wall() - STALE_WRITE_S
        for p in self.root.glob(".*.tmp"):
            try:
                if p.stat().st_mtime < stale:
                    p.unlink()
            except OSError:  # gone meanwhile (another run's writer renamed or removed it)
                continue
        entries = []
        try:
            for p in self.root.glob("*.bin"):
                try:
                    entries.append((p.stat(), p))
                except OSError:  # removed meanwhile by another run's prune
                    continue
        except OSError:
            return
        total = sum(st.st_size for st, _ in entries)
        free = self._free() if self.keep_free else None
        short = max(0, self.keep_free - free) if free is not None else 0  # (none free at all is short too)
        for st, p in sorted(entries, key=lambda e: e[0].st_mtime_ns):
            if total <= self.limit_bytes and short <= 0:
                break
            try:
                p.unlink()
            except OSError:
                continue
            total -= st.st_size
            short -= st.st_size


def _said(key: str, byteorder: str, meta: Any, layout: Any) -> bytes:
    """What a header says, as the check takes it in before the arrays: a header damaged into other valid JSON (a
    digit of the timeframe, a letter of an array's name) then fails the check like damaged arrays do."""
    return json.dumps([key, byteorder, meta, layout]).encode()


def _load(f: BinaryIO, key: str) -> tuple[dict[str, Any], dict[str, array[Any]]] | None:
    """An entry's metadata and arrays, read straight into the arrays; None when it is not a whole, intact entry
    for `key`."""
    if f.read(len(MAGIC)) != MAGIC:
        return None
    size = int.from_bytes(f.read(4), "big")
    try:
        header = json.loads(f.read(size))
        if header["key"] != key or header["byteorder"] != sys.byteorder:
            return None
        layout = header["arrays"]
        # A check against damage (a disk's, a copy's, a kill's), not against a forger, who could write the check
        # too: a CRC-32 finds every error of up to 32 bits in a row and misses other damage once in 4 billion, at
        # several times the speed of a SHA-256 (reading an entry is mostly the check of its bytes).
        crc = zlib.crc32(_said(key, header["byteorder"], header["meta"], layout))
        # The arrays must fill the rest of the file exactly: a count read from a damaged or foreign header is not
        # an amount of memory to ask for.
        left = os.fstat(f.fileno()).st_size - f.tell()
        if sum(array(typecode).itemsize * count for _, typecode, count in layout) != left:
            return None
        arrays: dict[str, array[Any]] = {}
        for name, typecode, count in layout:
            a = array(typecode)
            a.fromfile(f, count)
            crc = zlib.crc32(memoryview(a), crc)
            arrays[name] = a
        if f.read(1) or crc != header["crc32"]:
            return None
        return header["meta"], arrays
    except (ValueError, KeyError, TypeError, EOFError, OverflowError):
        return None


def _signals_to(one: batch.SeriesSignals) -> tuple[dict[str, Any], dict[str, array[Any]]]:
    cols = one.columns  # compacted (batch.precompute): each computed column an array of doubles
    arrays: dict[str, array[Any]] = {name: cast("array[Any]", cols.columns[name])
                                     for name in IndicatorColumns.FIELDS[6:]}
    names = []
    for name, codes, confs in one.votes:
        names.append(name)
        arrays[f"codes:{name}"] = array("B", codes)
        arrays[f"confs:{name}"] = confs
    return {"warm_from": cols.warm_from, "providers": names}, arrays


def _signals_from(s: CandleSeries, meta: dict[str, Any], arrays: dict[str, array[Any]]) -> batch.SeriesSignals:
    computed = {name: arrays[name] for name in IndicatorColumns.FIELDS[6:]}
    cols = IndicatorColumns.restored(s.ts, s.open, s.high, s.low, s.close, s.volume, computed, meta["warm_from"])
    votes = [(name, bytes(arrays[f"codes:{name}"]), arrays[f"confs:{name}"]) for name in meta["providers"]]
    return batch.SeriesSignals(cols, votes)



def cache_for(data_dir: Path, limit_mb: float, keep_free_mb: float = 0.0) -> DataCache | None:
    """The cache of a data directory, pruned to `backtest.cache_mb` and to `keep_free_mb` free on its file system;
    None when the limit is 0, what entries there were removed (0 keeps none, so none is left to fill the disk)."""
    cache = DataCache(data_dir / "cache", int(limit_mb * 1024 * 1024), keep_free=int(keep_free_mb * 1e6))
    if cache.root.is_dir():
        cache.prune()
    if limit_mb > 0:
        return cache
    with suppress(OSError):  # empty now, unless a run of another limit is writing there
        cache.root.rmdir()
    return None
