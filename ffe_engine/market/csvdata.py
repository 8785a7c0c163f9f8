"""CSV market data: one file of candles per symbol.

The contract (docs/cli.md, "CSV market data"): UTF-8 text, plain or gzip-compressed (a name ending in `.gz`), no
line longer than MAX_LINE_BYTES; a header row naming at least timestamp, open, high, low, close and volume in any
order (case-insensitive, common aliases accepted, extra columns ignored; a `date` and a `time` column apart are
refused, never read as one or the other); timestamps in ISO-8601 (UTC when no offset
is given) or epoch seconds, milliseconds or microseconds in ASCII digits, a fraction after one point allowed (told
apart by size); numbers plain decimal
numbers (ASCII digits, a sign, a decimal point, an exponent; spaces around them allowed), not every text Python's
float() reads; quoting strict but for spaces around a quoted field; rows strictly increasing in time; times, prices
and volumes within the bounds ffe computes with (bounds.py).
A bad row is a `CsvError` naming the file and the line the row begins on, or is skipped and counted when lenient; a
quote never closed (or closed lines later) is an error even then, since the rows after it are no longer rows. Gaps are
allowed and reported; a candle off the grid of the candles either side of it is a bad row (off_grid).

Parsing is on the backtest's clock, so the common case takes a fast path: whole columns are converted at C speed
(`map(float, ...)`, cached date and time-of-day parts for ISO timestamps) and checked with a few whole-column
passes. Only when one of those checks fails does the row-by-row path run, and that path is the authority: it
finds the first bad row and its line number, or skips bad rows in lenient mode.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import math
import os
import re
import stat
import zlib
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from itertools import compress, islice, repeat
from operator import add, ge, itemgetter, le, lt, methodcaller, mod, sub
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from ..clock import DAY_MS, format_timeframe, timeframe_ms as parse_timeframe
from ..errors import ArgumentError, FfeError, kind_of
from ..fmt import counted
from ..model import Candle
from . import bounds

FIELDS = ("timestamp", "open", "high", "low", "close", "volume")

# Accepted header names per field, best first; names are compared lower-cased, with spaces and dashes as "_".
ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "datetime", "date_time", "time", "date", "ts", "open_time", "opentime", "unix",
                  "time_utc", "timestamp_utc"),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price"),
    "volume": ("volume", "vol", "v", "base_volume", "volume_base"),
}

MAX_SKIP_REASONS = 5
# No candle row comes near this; a longer line means the file is not candles (or is damaged), and reading on would
# only cost memory. Checked while reading, before anything is parsed.
MAX_LINE_BYTES = 65_536
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_FAR = 10**30  # ms, far beyond the bounds of candle times either way
# An epoch number's unit, by its size. From 1970: seconds below 1e11 (the year 5138 in seconds, 1973 in ms),
# milliseconds below 1e14, microseconds from it (Binance's dumps since 2025). Before 1970, where no unit runs past
# 2099, each unit is taken down to 1800 in it, so that a time in milliseconds from 1800 to 1969 is never taken for
# seconds before 1800. Only times within about three years of 1970 in ms or microseconds read in a smaller unit.
_S_BELOW = 100_000_000_000
_MS_BELOW = 100_000_000_000_000
_S_FROM = bounds.TIME_MIN_MS // 1000
_MS_FROM = bounds.TIME_MIN_MS
EPOCH_UNITS = ("(an epoch number is seconds, milliseconds or microseconds by its size: seconds below 1e11, "
               "milliseconds below 1e14, microseconds from 1e14; before 1970, seconds from -5364662400, milliseconds "
               "from -5364662400000, microseconds below)")
# What float() reads that is not a plain decimal number: "1_000", other scripts' digits, "nan", other spaces. A
# text float() reads and that holds none of these is ASCII digits, a sign, a point and an exponent.
_not_plain = re.compile(r"[^0-9.eE+\- \t]").search
_date_part = itemgetter(slice(None, 10))
_time_part = itemgetter(slice(10, None))


class CsvRows(Protocol):
    """What csv.reader gives: rows, and the number of the line last read."""

    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...
    def __next__(self) -> list[str]: ...


class CsvError(FfeError, ValueError):
    """A CSV file that cannot be used as market data. `str()` is one line: `path:line: what is wrong`."""

    exit_code = 2

    def __init__(self, path: str | os.PathLike[str], line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class CsvArgumentError(CsvError, ArgumentError):
    """A market data argument of the wrong form (`BTC/USD=`), before any file: a mistake on the command line, whose
    line ends with the command's --help."""


class CandleSeries:
    """One symbol's candles as parallel lists of plain numbers (cheap to iterate and to index)."""

    __slots__ = ("symbol", "path", "timeframe_ms", "ts", "open", "high", "low", "close", "volume",
                 "gaps", "skipped", "skip_reasons", "digest")

    def __init__(self, symbol: str, timeframe_ms: int, ts: list[int], open: list[float], high: list[float],
                 low: list[float], close: list[float], volume: list[float], *, path: str = "",
                 skipped: int = 0, skip_reasons: list[str] | None = None) -> None:
        self.symbol = symbol
        self.path = path
        self.ts = ts
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.skipped = skipped
        self.skip_reasons = skip_reasons or []
        self.timeframe_ms = timeframe_ms or infer_timeframe(ts)
        self.gaps = find_gaps(ts, self.timeframe_ms)
        self.digest = ""  # what the candles were read from, when a cache knows (datacache.py)

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def gap_count(self) -> int:
        return len(self.gaps)

    @property
    def missing_bars(self) -> int:
        """Bars the gaps leave out, counted in timeframe steps."""
        tf = self.timeframe_ms
        return sum((b - a) // tf - 1 for a, b in self.gaps) if tf else 0

    @property
    def longest_gap(self) -> tuple[int, int] | None:
        """(from_ts, to_ts) of the longest gap (the first of the longest), None without gaps."""
        return max(self.gaps, key=lambda g: g[1] - g[0]) if self.gaps else None

    def candles(self) -> Iterator[Candle]:
        sym = self.symbol
        for t, o, h, lo, c, v in zip(self.ts, self.open, self.high, self.low, self.close, self.volume):
            yield Candle(sym, t, o, h, lo, c, v)

    def head(self, n: int) -> CandleSeries:
        """The first n bars (all of them when n is larger)."""
        if n >= len(self.ts):
            return self
        return CandleSeries(self.symbol, self.timeframe_ms, self.ts[:n], self.open[:n], self.high[:n],
                            self.low[:n], self.close[:n], self.volume[:n], path=self.path, skipped=self.skipped,
                            skip_reasons=self.skip_reasons)

    def tail(self, start: int) -> CandleSeries:
        """The bars from index `start` on."""
        if start <= 0:
            return self
        return CandleSeries(self.symbol, self.timeframe_ms, self.ts[start:], self.open[start:], self.high[start:],
                            self.low[start:], self.close[start:], self.volume[start:], path=self.path,
                            skipped=self.skipped, skip_reasons=self.skip_reasons)

    def summary(self) -> str:
        """One line for an operator: symbol, bars, timeframe, span, gaps and skipped rows."""
        if not self.ts:
            return f"{self.symbol}: no bars"
        text = (f"{self.symbol}: {counted(len(self.ts), 'bar')} of {format_timeframe(self.timeframe_ms)} from "
                f"{iso(self.ts[0])} to {iso(self.ts[-1])}, {counted(self.gap_count, 'gap')} "
                f"({counted(self.missing_bars, 'missing bar')})")
        if self.skipped:
            text += f", {counted(self.skipped, 'bad row')} skipped"
        return text


def iso(ts_ms: int) -> str:
    """ISO-8601 UTC text of a timestamp in ms, for messages; "-" beyond the calendar (the years 1 to 9999)."""
    try:
        dt = _EPOCH + timedelta(milliseconds=ts_ms)
    except OverflowError:
        return "-"
    # The year padded by hand: strftime's %Y writes the year 1 as "1".
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}" + (f".{ts_ms % 1000:03d}Z" if ts_ms % 1000 else "Z")


def infer_timeframe(ts: list[int]) -> int:
    """The most common step between consecutive timestamps; 0 with fewer than two bars."""
    if len(ts) < 2:
        return 0
    step: int = Counter(map(sub, islice(ts, 1, None), ts)).most_common(1)[0][0]
    return step


def find_gaps(ts: list[int], step: int) -> list[tuple[int, int]]:
    """(from_ts, to_ts) for every step of two timeframes or more: at least one bar in between is missing. A step
    between one and two timeframes leaves no bar out, and is no gap (a file's candle off the grid is a bad row:
    off_grid)."""
    if step <= 0 or len(ts) < 2:
        return []
    late = map(ge, map(sub, islice(ts, 1, None), ts), repeat(2 * step))
    return [(ts[i], ts[i + 1]) for i in compress(range(len(ts) - 1), late)]


def off_grid(ts: list[int], step: int) -> list[int]:
    """The indexes of the candles off the grid of the candles either side of them: those two a whole number of
    timeframes (`step`) apart, and it not (10:00:00.5, or 10:30, between hourly candles at 9:00 and 11:00). Its time
    is damaged: read as it is, it would be a gap that misses no bar and a step shorter than the timeframe. A series
    whose steps are of several lengths (monthly candles: 28 to 31 days) or that moves to another grid after a gap
    (hourly candles at :30 from one day on) has no candle between two of one grid. That every step is a whole
    number of timeframes (the common case) is told by one pass at C speed."""
    if step <= 0 or len(ts) < 3 or not any(map(mod, map(sub, islice(ts, 1, None), ts), repeat(step))):
        return []
    steps = list(map(sub, islice(ts, 1, None), ts))
    return [i for i in range(1, len(ts) - 1) if steps[i - 1] % step and (steps[i - 1] + steps[i]) % step == 0]


def symbol_from_filename(path: str | os.PathLike[str]) -> str:
    """The file name up to its first "_", with "-" read as "/": `BTC-USD_1h_2020-2023.csv` and
    `BTC-USD_1h_2020-2023.csv.gz` are `BTC/USD`."""
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    head = name.split("_", 1)[0] if "_" in name else Path(name).stem
    if not head:
        raise CsvError(path, None, "cannot tell the symbol from the file name; pass SYMBOL=FILE")
    return head.replace("-", "/")


def parse_symbol_arg(arg: str) -> tuple[str, Path]:
    """`SYMBOL=FILE` or just `FILE` (the symbol then comes from the file name) -> (symbol, path)."""
    if not arg:  # "$FILE" with FILE unset: Path("") would be the current directory
        raise CsvArgumentError("''", None, "bad market data argument: an empty file name (expected SYMBOL=FILE or "
                                           "FILE)")
    if "=" in arg and not os.path.exists(arg):
        symbol, _, file = arg.partition("=")
        symbol = symbol.strip()
        if not symbol or not file:
            raise CsvArgumentError(repr(arg), None, "bad market data argument: expected SYMBOL=FILE or FILE")
        return symbol, Path(file)
    return symbol_from_filename(arg), Path(arg)


# --- timestamps -------------------------------------------------------------------------------------------------


def parse_timestamp(text: str) -> int:
    """ISO-8601 (UTC unless it carries an offset) or epoch seconds / milliseconds / microseconds -> ms since the
    epoch (UTC), within the bounds of candle times (bounds.py)."""
    s = text.strip()
    if not s:
        raise ValueError("timestamp is empty")
    body = s[1:] if s[0] == "-" else s
    number = body.isascii() and body.replace(".", "", 1).isdigit()  # str.isdigit() takes any script's digits
    if number:
        try:
            value = int(s) if body.isdigit() else float(s)
            ms = _epoch_ms(value)
        except OverflowError:  # digits beyond a float's range: far outside the bounds, on the side of its sign
            ms = -_FAR if s[0] == "-" else _FAR
    else:
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"bad timestamp: {text!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        ms = (dt - _EPOCH) // _ONE_MS
    problem = bounds.time_problem(ms, f"timestamp {text!r}")
    if problem is not None:
        if number:
            problem += " " + EPOCH_UNITS
        raise ValueError(problem)
    return ms


def _epoch_ms(value: int | float) -> int:
    """An epoch number in milliseconds, its unit told by its size (see _S_BELOW); microseconds to the nearest
    millisecond, a half up (as the fast path's whole column)."""
    seconds, millis = (value < _S_BELOW, value < _MS_BELOW) if value >= 0 else (value >= _S_FROM, value >= _MS_FROM)
    if seconds:
        return int(round(value * 1000))
    if millis:
        return int(round(value))
    return (value + 500) // 1000 if isinstance(value, int) else math.floor(value / 1000 + 0.5)


class _DayCache(dict[str, int]):
    """"YYYY-MM-DD" -> ms at that day's midnight UTC, parsed once per distinct day."""

    def __missing__(self, key: str) -> int:
        value = self[key] = (date.fromisoformat(key).toordinal() - _EPOCH_ORDINAL) * DAY_MS
        return value


class _TimeOfDayCache(dict[str, int]):
    """What follows the date ("T13:00:00Z", " 13:00+02:00", "") -> ms after midnight UTC, parsed once each."""

    def __missing__(self, key: str) -> int:
        if key:
            dt = datetime.fromisoformat("1970-01-01" + key)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            value = (dt - _EPOCH) // _ONE_MS
        else:
            value = 0
        self[key] = value
        return value


def _fast_timestamps(column: Sequence[str]) -> list[int]:
    """A whole timestamp column at C speed; ValueError when any value needs the careful path."""
    first = column[0]
    if first.isdigit():
        joined = "".join(column)
        if not (joined.isascii() and joined.isdigit()):  # int() reads "1_000", spaces and other scripts' digits
            raise ValueError("not plain epoch numbers")
        values = list(map(int, column))
        ts = [v * 1000 if v < _S_BELOW else v if v < _MS_BELOW else (v + 500) // 1000 for v in values]
    else:
        days, times = _DayCache(), _TimeOfDayCache()
        ts = list(map(add, map(days.__getitem__, map(_date_part, column)),
                      map(times.__getitem__, map(_time_part, column))))
    # The first and the last bound them all, once the column is checked to be increasing.
    if not (bounds.TIME_MIN_MS <= ts[0] and ts[-1] < bounds.TIME_END_MS):
        raise ValueError("timestamp out of range")
    return ts


# --- files ------------------------------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return not _not_plain(text)


def _header_columns(path: str, header: list[str], line: int) -> tuple[list[int], int]:
    if 2 * sum(map(_is_number, header)) > len(header):  # a file with no header row (Binance's dumps): its first row
        raise CsvError(path, line, "the first line is not a header (it holds numbers): add the header "
                                   + ",".join(FIELDS))
    names = [h.strip().lower().replace(" ", "_").replace("-", "_") for h in header]
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise CsvError(path, line, f"duplicate column {name!r} in the header")
        seen.add(name)
    apart = _date_and_time_apart(header, names)
    if apart is not None:
        raise CsvError(path, line, apart)
    index: list[int] = []
    missing: list[str] = []
    for field in FIELDS:
        for alias in ALIASES[field]:
            if alias in seen:
                index.append(names.index(alias))
                break
        else:
            missing.append(field)
    if missing:
        shown = ", ".join(" ".join(h.split()) for h in header)  # a quoted header cell may hold a newline
        raise CsvError(path, line, f"missing columns: {', '.join(missing)} (header has: {shown})")
    return index, len(header)


# Aliases of the timestamp that hold a whole time, before which `date` and `time` are never looked at.
_WHOLE_TIMES = ALIASES["timestamp"][:ALIASES["timestamp"].index("time")]


def _date_and_time_apart(header: list[str], names: list[str]) -> str | None:
    """A header with a `date` and a `time` column and no whole timestamp (an export that writes the day and its
    time of day apart): either column alone would be read as the timestamp, every row of a day at one time or a
    time of no day, so the file is refused rather than guessed at. None for any other header."""
    if "date" not in names or "time" not in names or any(n in names for n in _WHOLE_TIMES):
        return None
    date_col, time_col = (header[names.index(n)].strip() for n in ("date", "time"))
    return (f"the header has both a {date_col!r} and a {time_col!r} column: ffe reads the time of a candle from "
            f"one column; join them into one named timestamp (2021-01-01T13:00:00, UTC unless an offset is given)")


class _BadRow(Exception):
    pass


def _number(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _BadRow(f"{name} is not a number: {raw!r}") from None
    if math.isfinite(value) and _not_plain(raw):  # "nan" and "inf" are told as not finite, below
        raise _BadRow(f"{name} is not a plain decimal number: {raw!r}")
    problem = bounds.value_problem(name, value, raw.strip())
    if problem is not None:
        raise _BadRow(problem)
    return value


def _check_row(row: list[str], index: list[int], ncols: int, last_ts: int | None) -> tuple[Any, ...]:
    """One row, checked in a fixed order so the first problem is the one reported."""
    if len(row) != ncols:
        raise _BadRow(f"expected {ncols} columns, found {len(row)}")
    it, io_, ih, il, ic, iv = index
    raw_ts = row[it]
    try:
        t = parse_timestamp(raw_ts)
    except ValueError as e:
        raise _BadRow(str(e)) from None
    o = _number(row[io_], "open")
    h = _number(row[ih], "high")
    lo = _number(row[il], "low")
    c = _number(row[ic], "close")
    v = _number(row[iv], "volume")
    problem = bounds.order_problem(o, h, lo, c, [row[i].strip() for i in (io_, ih, il, ic)])
    if problem is not None:
        raise _BadRow(problem)
    if last_ts is not None and t <= last_ts:
        if t == last_ts:
            raise _BadRow(f"duplicate timestamp {iso(t)}")
        raise _BadRow(f"timestamp {iso(t)} is earlier than the previous row's {iso(last_ts)}")
    return t, o, h, lo, c, v


def gzipped(path: str) -> bool:
    """Whether the file is read as gzip: by its name, not its bytes."""
    return path.lower().endswith(".gz")


def _open_bytes(path: str) -> io.BufferedIOBase:
    """The file's bytes, decompressed on the fly when its name ends in `.gz`."""
    return gzip.open(path, "rb") if gzipped(path) else open(path, "rb")


# The names a pipe the shell opened goes by (`<(zcat FILE)` is /dev/fd/63, `| ffe backtest X=/dev/stdin`): read as
# a file is, its writer already there. A FIFO by any other name may have none, and would be waited on for ever.
_OWN_PIPE = re.compile(r"/dev/fd/\d+|/proc/self/fd/\d+|/dev/stdin")


def not_a_csv_file(path: str) -> str | None:
    """What keeps `path` from being read as a file of candles when it is neither a regular file nor a pipe the
    shell opened (a device, a FIFO, a socket, a directory, a link to one), said after the path; looked at without
    opening it, as a device would be read without end (/dev/urandom, gigabytes in seconds) and a FIFO nobody writes
    to waited on for ever. None when it may be read (or is not there: its open says so)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or (stat.S_ISFIFO(mode) and _OWN_PIPE.fullmatch(path)):
        return None
    return f"is {kind_of(path) or 'not a file'}, not a CSV file"


def _refuse_binary(path: str, chunk: bytes) -> None:
    """The file's first chunk, refused when it is not UTF-8 text (binary data: a pipe of it may never end, and a
    large file would be read whole before its decoding failed). A character cut at the chunk's end is no fault."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(chunk, final=False)
    except UnicodeDecodeError as e:
        raise CsvError(path, chunk.count(b"\n", 0, e.start) + 1, "not UTF-8 text") from None


def _read_text(path: str, length: int | None = None) -> str:
    """The whole file (or its first `length` bytes) as text, read in chunks so a line longer than MAX_LINE_BYTES
    stops the read as soon as it is seen (a file that is not candles, or a damaged one, can hold one enormous line;
    read at once it would take its whole size in memory, several times over, before any check could run).

    A chunk is at most MAX_LINE_BYTES long, so any line that starts and ends inside one chunk is short enough; only
    the line still open across chunk boundaries needs counting. The path is looked at before it is opened
    (not_a_csv_file), and the first chunk is checked to be text before more is read (_refuse_binary).
    """
    said = not_a_csv_file(path)
    if said is not None:
        raise CsvError(path, None, said)
    chunks: list[bytes] = []
    newlines = 0  # line breaks in the chunks kept so far
    open_line = 0  # bytes of the line not yet ended by a line break
    left = length
    try:
        with _open_bytes(path) as f:
            while chunk := f.read(MAX_LINE_BYTES if left is None else min(MAX_LINE_BYTES, left)):
                if not chunks:
                    _refuse_binary(path, chunk)
                if left is not None:
                    left -= len(chunk)
                first, last = chunk.find(b"\n"), chunk.rfind(b"\n")
                if first < 0:  # no line feed: old Mac line ends (a lone \r), or one long line
                    first, last = chunk.find(b"\r"), chunk.rfind(b"\r")
                if first < 0:
                    open_line += len(chunk)
                    too_long = open_line > MAX_LINE_BYTES
                else:
                    too_long = open_line + first > MAX_LINE_BYTES
                    open_line = len(chunk) - last - 1
                if too_long:
                    raise CsvError(path, newlines + 1, f"line is longer than {MAX_LINE_BYTES:,} bytes "
                                                       "(not a CSV file of candles?)")
                newlines += chunk.count(b"\n")
                chunks.append(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CsvError(path, None, f"cannot decompress: {e}") from None
    except OSError as e:
        raise CsvError(path, None, f"cannot read: {e.strerror or e}") from None
    data = b"".join(chunks)
    del chunks
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CsvError(path, line, "not UTF-8 text") from None


def load_csv(path: str | os.PathLike[str], symbol: str | None = None, lenient: bool = False, *,
             timeframe: str | int | None = None, length: int | None = None) -> CandleSeries:
    """Read one CSV file of candles. Raises CsvError (one line: file, line, problem).

    lenient: skip bad rows instead of failing; the count is `series.skipped` and the first few reasons are kept
    in `series.skip_reasons`. timeframe: "1h" or ms; by default the most common step between rows. length: read
    only the file's first `length` bytes (its complete lines, checked before an unended last line is cut off).
    """
    path = str(path)
    sym = symbol or symbol_from_filename(path)
    tf = parse_timeframe(timeframe) if isinstance(timeframe, str) else (timeframe or 0)
    text = _read_text(path, length)
    reader = _reader(text)
    header = _header_row(path, reader)
    if header is None:
        raise CsvError(path, 1, "file is empty (expected a header row: " + ",".join(FIELDS) + ")")
    header_line = reader.line_num
    index, ncols = _header_columns(path, header, header_line)

    if not lenient:
        columns = _split_columns(text, ncols, index) if header_line == 1 else None
        if columns is None:
            columns = _csv_columns(reader, ncols, index)
        series = _fast_path(columns) if columns else None
        if series is not None:
            # The steps between candles, counted once: the timeframe (as infer_timeframe finds it), and whether each
            # step is a whole number of it, which leaves no candle off the grid (off_grid) without another pass.
            ts = series[0]
            steps = Counter(map(sub, islice(ts, 1, None), ts))
            step = tf or (steps.most_common(1)[0][0] if steps else 0)
            if not step or not any(d % step for d in steps) or not off_grid(ts, step):
                return CandleSeries(sym, step, *series, path=path)
            # A candle off the grid: the row-by-row path names its line.
        reader = _reader(text)
        for _ in range(header_line):
            next(reader)
    return _careful_path(path, sym, tf, reader, index, ncols, lenient, header_line)


# Spaces or tabs between a quote and the comma or line end after it, or the comma or line start before it: allowed
# around a quoted field as around a number, and taken out before the strict reader sees them (it reads only a
# comma or a line end after a closing quote). Only spaces go, never a quote, comma or line break, so every row and
# field stays where it was and every line keeps its number.
_space_after_quote = re.compile(r'"[ \t]+(?=,|\r|\n|\Z)')
_space_before_quote = re.compile(r'(^|,)[ \t]+"', re.MULTILINE)
QUOTE_TEXT_AFTER = ("a quoted field has text after its closing quote: put the whole value inside the quotes, or "
                    "remove them (only spaces may follow a closing quote; a quote inside a quoted value is written "
                    "twice)")


def _reader(text: str) -> CsvRows:
    """Rows of the text. Strict: a character other than a space after a closing quote (`"155"5`, read as 1555
    otherwise) and a quote never closed are errors, not guesses."""
    if '"' in text:
        text = _space_before_quote.sub(r'\1"', _space_after_quote.sub('"', text))
    return csv.reader(io.StringIO(text, newline=""), strict=True)


def _header_row(path: str, reader: CsvRows) -> list[str] | None:
    """The first row that is not blank, None when there is none."""
    for row in _rows(path, reader):
        if any(cell.strip() for cell in row):
            return row
    return None


def _rows(path: str, reader: CsvRows) -> Iterator[list[str]]:
    """The rows, a CSV error raised as a CsvError naming the line its row begins on."""
    while True:
        line = reader.line_num + 1
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise CsvError(path, line, _open_quote(e, reader) or _unreadable(e)) from None


def _open_quote(e: csv.Error, reader: CsvRows) -> str | None:
    """What to say of a quoted field still open at the end of the file (the rest of the file is in it), or longer
    than the csv module holds (a long file's rest), when that is what `e` is; None otherwise."""
    if "unexpected end of data" in str(e):  # csv's words for it
        return f"a quote opened on this line is not closed before the end of the file (line {reader.line_num})"
    if "field larger than field limit" in str(e):
        return (f"a quote opened on this line is not closed within {csv.field_size_limit():,} characters (line "
                f"{reader.line_num}): the lines after it are one field, not rows")
    return None


def _swallowed(line: int, reader: CsvRows) -> str | None:
    """What to say of a row beginning on `line` that a quoted field ran over the lines after it (they would be
    rows), once read; None for a row on one line. A lenient read may skip a bad row, never the rows in one."""
    end = reader.line_num
    if end <= line:
        return None
    return (f"a quote opened on this line closes on line {end}: the {end - line + 1} lines are one field, not rows "
            "(a stray quote?)")


def _unreadable(e: csv.Error) -> str:
    """What to say of a row the csv module cannot read, in words that say what to change where it can."""
    if "expected after" in str(e):  # csv's words for a character after a closing quote
        return QUOTE_TEXT_AFTER
    return f"unreadable CSV: {e}"


_ends_line = methodcaller("endswith", "\n")
_without_line_break = methodcaller("removesuffix", "\n")


def _split_columns(text: str, ncols: int, index: list[int]) -> Sequence[Sequence[str]] | None:
    """The needed columns of a file without quoting, by plain string splitting (faster than the csv module).

    None when the file is not that simple: quotes, stray carriage returns, blank lines or a row with the wrong
    number of fields.
    """
    if '"' in text:
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    body = text.partition("\n")[2]
    if body.endswith("\n"):
        body = body[:-1]
    if not body:
        return None
    # One list of every field, each line's last field keeping its line break: every line has ncols fields exactly
    # when there are as many fields as lines times ncols and each line break ends the ncols-th field of its line
    # (a field holds one line break at most: a comma follows each).
    lines = body.count("\n") + 1
    flat = body.replace("\n", "\n,").split(",")
    if len(flat) != lines * ncols or not all(map(_ends_line, flat[ncols - 1:-1:ncols])):
        return None
    columns = [flat[i::ncols] for i in index]
    if ncols - 1 in index:  # the last column's fields without their line breaks
        last = index.index(ncols - 1)
        columns[last] = list(map(_without_line_break, columns[last]))
    return columns


def _csv_columns(reader: CsvRows, ncols: int, index: list[int]) -> list[tuple[str, ...]] | None:
    try:
        rows = list(reader)
    except csv.Error:
        return None
    if not rows or set(map(len, rows)) != {ncols}:
        return None
    columns = list(zip(*rows))
    return [columns[i] for i in index]


def _fast_path(columns: Sequence[Sequence[str]]) -> tuple[Any, ...] | None:
    """All columns converted and checked at once; None when anything is off (the careful path then explains)."""
    try:
        ts = _fast_timestamps(columns[0])
        o, h, lo, c, v = (list(map(float, col)) for col in columns[1:])
    except (ValueError, OverflowError):
        return None
    if any(_not_plain("".join(col)) for col in columns[1:]):
        return None
    ok = (all(map(lt, ts, islice(ts, 1, None)))
          and all(map(le, lo, o)) and all(map(le, o, h)) and all(map(le, lo, c)) and all(map(le, c, h))
          and bounds.columns_within(lo, h, v))
    return (ts, o, h, lo, c, v) if ok else None


def _careful_path(path: str, sym: str, tf: int, reader: CsvRows, index: list[int], ncols: int, lenient: bool,
                  header_line: int) -> CandleSeries:
    ts: list[int] = []
    o: list[float] = []
    h: list[float] = []
    lo: list[float] = []
    c: list[float] = []
    v: list[float] = []
    lines: list[int] = []  # the line each candle's row begins on
    skipped = 0
    reasons: list[str] = []
    last: int | None = None
    rows = iter(reader)
    while True:
        line = reader.line_num + 1  # a row is named by the line it begins on (a quoted field may span lines)
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as e:
            open_quote = _open_quote(e, reader) or (_swallowed(line, reader) if lenient else None)
            if open_quote is not None:  # the rows after it are no longer rows: not one row to skip
                raise CsvError(path, line, open_quote) from None
            reason = _unreadable(e)
        else:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            try:
                t, ro, rh, rl, rc, rv = _check_row(row, index, ncols, last)
            except _BadRow as e:
                reason = str(e)
                swallowed = _swallowed(line, reader) if lenient else None
                if swallowed is not None:
                    raise CsvError(path, line, swallowed) from None
            else:
                ts.append(t)
                o.append(ro)
                h.append(rh)
                lo.append(rl)
                c.append(rc)
                v.append(rv)
                lines.append(line)
                last = t
                continue
        if not lenient:
            raise CsvError(path, line, reason)
        skipped += 1
        if len(reasons) < MAX_SKIP_REASONS:
            reasons.append(f"line {line}: {reason}")
    if not ts:
        if skipped:
            raise CsvError(path, None, f"no usable rows: all {skipped} data rows are bad (first: {reasons[0]})")
        raise CsvError(path, header_line + 1, "no data rows after the header")
    step = tf or infer_timeframe(ts)
    off = off_grid(ts, step)
    if off:
        apart = set(off)
        said = [f"timestamp {iso(ts[i])} is off the {format_timeframe(step)} grid of the candles either side of it "
                f"({iso(ts[i - 1])} and {iso(ts[i + 1])}): a damaged time?" for i in off]
        if not lenient:
            raise CsvError(path, lines[off[0]], said[0])
        skipped += len(off)
        reasons += [f"line {lines[i]}: {reason}" for i, reason in zip(off, said)][: MAX_SKIP_REASONS - len(reasons)]
        kept = [i not in apart for i in range(len(ts))]
        ts = list(compress(ts, kept))
        o, h, lo, c, v = (list(compress(column, kept)) for column in (o, h, lo, c, v))
    return CandleSeries(sym, tf, ts, o, h, lo, c, v, path=path, skipped=skipped, skip_reasons=reasons)
