"""Closed candles from an exchange into the CSV files backtests read (`ffe data download`).

ccxt's fetch_ohlcv is called page by page (since + limit, the exchange's own page size), with ccxt's rate limiter
on and reads retried on transient errors (429 included) as for the exchange feed. Only closed candles are written:
a candle is closed once its period ended `close_grace_ms` ago by the clock and by the exchange's own time (ccxt's
fetchTime, when the exchange tells it; not asked for a range that ended a day before), so the one still forming is
never stored; when that time cannot be read now, only a candle with a later one served after it is written. Each
page is appended to the file as whole lines before the next is asked for, so a run that stops on an error or ^C
leaves a file that loads; the next run continues after its last candle and never writes one twice. A file is
created only with its first candles: a run that fails or finds none leaves no file holding a header only.

The exchange answers the candles from `since` on, passing over periods without trades (Binance does), so an answer
holding none is not taken for the end of its data: ccxt reads `{}` or a gateway's HTML page served 200 as no
candles. The exchange's newest candle is asked for: before `since`, the market has not traded since (halted,
delisted) and the download ends saying so; otherwise the answer was not its candles, and the page is a failed
request, retried as others are, then DownloadError saying how far the file goes. An answer whose candles all open
after the range asked for ends the download too, saying that the exchange has none in it, and where its next is.

The file is the CSV market data contract (ffe_engine/market/csvdata.py): `timestamp,open,high,low,close,volume`,
ISO-8601 UTC timestamps, strictly increasing. A row from the exchange that breaks the contract (a zero price, low
above high, a price or a time beyond the bounds of market/bounds.py, a time off the grid of the candles either side
of it) is left out and counted rather than written: the file must always load. Each folder written into is held
(flock) for the whole download: a second download appending to the same file would interleave their lines.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Iterator, Protocol, TextIO

from .clock import DAY_MS, WallClock, format_timeframe, timeframe_ms
from . import reach
from .fmt import counted
from .backtest_runs import hold
from .config import allowed_timeframe, is_symbol
from .errors import ArgumentError, FfeError, UsageError, kind_of, storage_failure
from .market.bounds import candle_problem, time_problem
from .market.csvdata import CandleSeries, CsvError, find_gaps, iso, load_csv, symbol_from_filename
from .market.ohlcv import Page, candles_from, page_size
from .venues.base import VenueError, VenueUnavailable

if TYPE_CHECKING:
    from .venues.ccxt_venue import CcxtVenue

HEADER = "timestamp,open,high,low,close,volume"
AGAIN = "run the same command again to continue"  # a failed download: --since included, when the file had none
MAX_GAPS_SHOWN = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class DownloadInputError(UsageError):
    """Bad input from the operator (exchange, timeframe, date, symbol, file): one line, exit code 2."""


class DownloadArgumentError(DownloadInputError, ArgumentError):
    """A mistake in the command's own arguments (a timeframe, a date, a symbol, --file with several symbols), not in
    a file or an exchange they name: the line ends with `ffe data download --help`."""


class DownloadError(FfeError):
    """The exchange or the network failed: one line, exit code 1. What was written so far stays valid."""

    exit_code = 1


# --- input ------------------------------------------------------------------------------------------------------


def parse_date(text: str, option: str) -> int:
    """`2024-01-01`, `2024-01-01T12:00` or with an offset (UTC when none) -> ms since the epoch."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DownloadArgumentError(f"{option}: {text!r} is not a date such as 2024-01-01 or 2024-01-01T12:00")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int((dt - _EPOCH).total_seconds() * 1000)


def candle_file_name(symbol: str, timeframe: str, exchange_id: str) -> str:
    """`BTC/USDT` on binance in 1h -> `BTC-USDT_1h_binance.csv`: `ffe backtest` reads the symbol back from it."""
    return f"{symbol.replace('/', '-')}_{timeframe}_{exchange_id}.csv"


def check_csv_path(path: Path) -> None:
    if path.suffix != ".csv":
        raise DownloadArgumentError(f"{path}: the file name must end in .csv")  # only --file names one
    # The folders it would be made in: one that is a file is told now, not after the candles were fetched.
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                # --out or --file names it: a mistake in the arguments
                raise DownloadArgumentError(f"{folder}: is not a directory (the candles would go to {path})")
            break


# --- progress ---------------------------------------------------------------------------------------------------


class Progress(Protocol):
    def begin(self, symbol: str, start_ms: int, end_ms: int) -> None: ...

    def advance(self, symbol: str, last_ms: int, written: int) -> None: ...

    def end(self, symbol: str) -> None: ...


class NoProgress:
    """What a pipe or a log file gets: nothing while it runs, only the summary at the end."""

    def begin(self, symbol: str, start_ms: int, end_ms: int) -> None:
        pass

    def advance(self, symbol: str, last_ms: int, written: int) -> None:
        pass

    def end(self, symbol: str) -> None:
        pass


class ProgressBar:
    """One line per symbol, redrawn in place with a carriage return: for a terminal only."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self._span = (0, 1)

    def begin(self, symbol: str, start_ms: int, end_ms: int) -> None:
        self._span = (start_ms, max(end_ms, start_ms + 1))
        self.advance(symbol, start_ms, 0)

    def advance(self, symbol: str, last_ms: int, written: int) -> None:
        start, end = self._span
        done = min(1.0, max(0.0, (last_ms - start) / (end - start)))
        filled = int(done * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{symbol} [{bar}] {done:4.0%} {written} candles, at {iso(last_ms)[:16]}Z")
        self.stream.flush()

    def end(self, symbol: str) -> None:
        self.stream.write("\n")
        self.stream.flush()


def progress_for(stream: TextIO) -> Progress:
    """A progress bar when `stream` is a terminal, nothing otherwise."""
    isatty = getattr(stream, "isatty", None)
    return ProgressBar(stream) if isatty is not None and isatty() else NoProgress()


# --- one symbol -------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """What one symbol's download did, and what its file holds afterwards."""

    symbol: str
    path: Path
    timeframe_ms: int
    written: int = 0
    first_ms: int | None = None  # first and last candle written by this run
    last_ms: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # in what this run wrote, the seam included
    refused: int = 0  # exchange rows left out because they break the CSV contract
    pages: int = 0
    notes: list[str] = field(default_factory=list)
    file: CandleSeries | None = None

    @property
    def missing_bars(self) -> int:
        return sum((b - a) // self.timeframe_ms - 1 for a, b in self.gaps)

    def lines(self) -> list[str]:
        """The report for an operator: one summary line, then one line per gap (the first few) and per note."""
        tf = format_timeframe(self.timeframe_ms)
        if self.written:
            head = (f"{self.symbol}: {counted(self.written, f'new {tf} candle')} from {iso(self.first_ms or 0)} to "
                    f"{iso(self.last_ms or 0)} in {counted(self.pages, 'request')}, {counted(len(self.gaps), 'gap')} "
                    f"({counted(self.missing_bars, 'missing bar')})")
        else:
            head = f"{self.symbol}: no new closed {tf} candles"
        if self.refused:
            head += f", {counted(self.refused, 'bad row')} from the exchange left out"
        out = [head]
        for a, b in self.gaps[:MAX_GAPS_SHOWN]:
            out.append(f"  gap: {counted((b - a) // self.timeframe_ms - 1, 'missing bar')} after {iso(a)}, "
                       f"next candle at {iso(b)}")
        if len(self.gaps) > MAX_GAPS_SHOWN:
            out.append(f"  ... and {counted(len(self.gaps) - MAX_GAPS_SHOWN, 'more gap')}")
        out.extend(f"  {note}" for note in self.notes)
        if self.file is not None:
            out.append(f"  {self.path}: {self.file.summary()}")
        return out


def _row_line(row: list[Any]) -> str | None:
    """One CSV line for an exchange row, or None when the row breaks the contract."""
    try:
        ts = int(row[0])
        o, h, lo, c = (float(x) for x in row[1:5])
        v = float(row[5]) if len(row) > 5 and row[5] is not None else 0.0
    except (TypeError, ValueError, IndexError):
        return None
    if candle_problem(o, h, lo, c, v) is not None or time_problem(ts, "") is not None:
        return None
    return f"{iso(ts)},{o!r},{h!r},{lo!r},{c!r},{v!r}\n"


class _Grid:
    """Which of the exchange's candles go into the file, so that it keeps loading. A candle whose time is off the
    grid of the candle before it (a step of no whole number of timeframes) is held until the next one tells: when
    that one is on the grid of the candle before the held one, the held one's time is damaged (load_csv's off_grid)
    and it is left out; otherwise the exchange moved to another grid (hourly candles at :30 from then on), and it
    is kept. One still held when the run ends is not written: the next run fetches it again with the candle after
    it. A new file's first candle has none before it: it waits for the candles after it, and is left out when the
    two after it share a grid it is off (kept when there are no two to tell)."""

    def __init__(self, tf_ms: int, last_ms: int | None) -> None:
        self.tf = tf_ms
        self.last = last_ms  # the last candle kept: in the file, or written by this run
        self.first: tuple[int, str] | None = None  # a new file's first candle, until the candles after it tell
        self.held: tuple[int, str] | None = None

    @property
    def newest(self) -> int | None:
        pending = self.held or self.first
        return pending[0] if pending is not None else self.last

    def take(self, ts: int, line: str) -> tuple[list[tuple[int, str]], int]:
        """The candles to write now, in order, and how many were left out (0 or 1)."""
        out: list[tuple[int, str]] = []
        refused = 0
        if self.last is None and self.first is None:
            self.first = (ts, line)
            return out, 0
        if self.first is not None:
            first = self.first
            if self.held is None and (ts - first[0]) % self.tf != 0:
                self.held = (ts, line)  # the first and the second disagree: the third tells which is off
                return out, 0
            if self.held is not None and (ts - self.held[0]) % self.tf == 0 and (ts - first[0]) % self.tf != 0:
                refused, out, self.last = 1, [self.held], self.held[0]  # the first is off the grid after it
                self.held = None
            else:
                out.append(first)  # on the grid of what follows: as if it had been in the file
                self.last = first[0]
            self.first = None
        if self.held is not None and self.last is not None:
            if (ts - self.last) % self.tf == 0:
                refused = 1
            else:
                out.append(self.held)
                self.last = self.held[0]
            self.held = None
        if self.last is None or (ts - self.last) % self.tf == 0:
            out.append((ts, line))
            self.last = ts
        else:
            self.held = (ts, line)
        return out, refused

    def finish(self) -> list[tuple[int, str]]:
        """At the end of the run: a new file's first candle with no two after it to judge it, kept as it is."""
        if self.first is None:
            return []
        kept, self.first = self.first, None
        self.last = kept[0]
        return [kept]


def _existing(path: Path, symbol: str, tf_ms: int, notes: list[str]) -> CandleSeries | None:
    """The candles already in `path` (None when there are none). An unended last line (a write cut short by a
    crash) is cut off, once the lines before it are checked as candles of this timeframe, or it is the header cut
    short; anything else wrong with the file is a CsvError naming its line, and the file is left whole (it may be
    anyone's)."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        size, keep = _complete_length(f)
        f.seek(0)
        complete_head = f.read(min(keep, 4_096))
        complete = complete_head.strip()  # enough to tell blank lines, the header, or the header only
        f.seek(keep)
        unended = f.read(len(HEADER) + 1)
        if not complete and unended and not HEADER.encode().startswith(unended):
            # Nothing but an unended line, and not the header cut short: not ours.
            f.seek(0)
            line = f.read(keep).count(b"\n") + 1  # after blank lines only
            raise CsvError(str(path), line, "a line without a line break and nothing before it: not a file of "
                                             "candles")
    series = None
    if complete and complete != HEADER.encode():
        series = load_csv(path, symbol=symbol, length=keep)  # a CsvError naming the line before anything is cut
        if len(series) >= 2 and series.timeframe_ms != tf_ms:
            raise DownloadInputError(f"{path}: holds {format_timeframe(series.timeframe_ms)} candles, not "
                                     f"{format_timeframe(tf_ms)}")
        # Read by name, in any order, by load_csv; the candles are appended in ffe's own order.
        blank = len(complete_head) - len(complete_head.lstrip())
        first = complete.split(b"\n", 1)[0].strip().removeprefix(b"\xef\xbb\xbf").decode(errors="replace")
        if first.replace(" ", "").lower() != HEADER:
            line = complete_head[:blank].count(b"\n") + 1
            raise DownloadInputError(f"{path}:{line}: its columns are {first}, not {HEADER}: candles are added only "
                                     "to a file of this layout (download into a new file)")
    if keep < size:
        with open(path, "r+b") as f:
            f.truncate(keep)
        notes.append(f"cut off an incomplete last line of {path} ({size - keep} bytes)")
    return series


def _complete_length(f: BinaryIO) -> tuple[int, int]:
    """The file's size and the length of its complete lines (up to its last line break), read from its end."""
    size = end = f.seek(0, os.SEEK_END)
    while end > 0:
        start = max(0, end - 65_536)
        f.seek(start)
        at = f.read(end - start).rfind(b"\n")
        if at >= 0:
            return size, start + at + 1
        end = start
    return size, 0


def _open_for_candles(path: Path, *, fresh_file: bool) -> TextIO:
    """`path` opened for its first new candles: a file without candles (new, empty, or a header only) is started
    afresh, with its header; otherwise appended to. Opened only once there are candles to write, so that a run that
    fails or finds none leaves no file holding a header only (which loads as no data: a damaged file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "w" if fresh_file else "a", encoding="utf-8", newline="")
    except OSError as exc:  # a read-only folder, a full disk: one line, what was written before kept
        raise storage_failure(path, exc) from None
    if fresh_file:
        f.write(HEADER + "\n")
    return f


class Downloader:
    """Downloads closed candles of one timeframe from one connected exchange (a CcxtVenue), symbol by symbol."""

    def __init__(self, venue: CcxtVenue, timeframe: str, *, clock: Any = None, page: int | None = None,
                 close_grace_ms: int = 2000, progress: Progress | None = None) -> None:
        self.venue = venue
        self.tf_ms = timeframe_ms(timeframe)
        # Asked of the exchange as the engine's feed asks it: "60m" as "1h", which is what exchanges list.
        self.timeframe = format_timeframe(self.tf_ms)
        self.clock = clock if clock is not None else WallClock()
        self.page = page or page_size(venue.exchange)
        self.close_grace_ms = close_grace_ms
        self.progress = progress or NoProgress()

    async def connect(self, symbols: Iterable[str]) -> None:
        """Load the markets; an unlisted symbol or a timeframe the exchange does not serve is bad input."""
        try:
            await self.venue.reads("load_markets", lambda: self.venue.exchange.load_markets())
        except (VenueError, VenueUnavailable) as exc:
            raise DownloadError(str(exc)) from None
        name = self.venue.name
        if not self.venue.exchange.markets:  # not its market list (a maintenance page served as 200)
            raise DownloadError(f"{name} listed no markets at all (its answer was not its market list; in "
                                "maintenance?)")
        known = getattr(self.venue.exchange, "timeframes", None) or {}
        if known and self.timeframe not in known:
            raise DownloadInputError(f"--timeframe: {name} has no {self.timeframe!r} candles "
                                     f"(it has {', '.join(known)})")
        missing = [s for s in symbols if s not in (self.venue.exchange.markets or {})]
        if missing:
            raise DownloadInputError(f"{name} lists no market {', '.join(missing)}")

    async def symbol(self, symbol: str, path: Path, since_ms: int | None, until_ms: int | None) -> Result:
        """Append the closed candles of [since, until) that `path` does not hold yet. since may be None only when
        the file has candles already (the run continues after them)."""
        tf = self.tf_ms
        result = Result(symbol, path, tf)
        stored = _existing(path, symbol, tf, result.notes)
        last_stored = stored.ts[-1] if stored is not None else None
        if last_stored is None and since_ms is None:
            raise DownloadArgumentError(f"{path}: no candles yet: --since is needed to start it")
        if stored is not None and since_ms is not None and since_ms < stored.ts[0]:
            result.notes.append(f"{path} starts at {iso(stored.ts[0])}: candles before it are not fetched "
                                f"(download into a new file for them)")
        # Not rounded to a multiple of the timeframe: exchanges align some candles otherwise (Binance's weeks start
        # on Mondays, the epoch on a Thursday). The exchange answers the candles opening at or after `since`.
        start = max(x for x in (since_ms, None if last_stored is None else last_stored + tf) if x is not None)
        # A candle opening at t has closed once t + timeframe + grace <= now: those opening before `end`. Now by the
        # machine's clock and by the exchange's own, the earlier: a clock running ahead of the exchange's would
        # otherwise write the candle still forming, and the next run would continue after it.
        local = self.clock.now_ms()
        # A range that ended a day before this machine's time holds no candle still forming: no time is asked.
        now, unsure = (local, False) if until_ms is not None and until_ms <= local - DAY_MS else \
            await self._now(local, result.notes)
        end = now - self.close_grace_ms - tf + 1
        if until_ms is not None:
            end = min(end, until_ms)
        if start >= end:
            result.file = stored
            return result

        self.progress.begin(symbol, start, end)
        seam = last_stored
        grid = _Grid(tf, last_stored)
        written_ts: list[int] = []
        cursor = start
        out: TextIO | None = None
        try:
            while cursor < end:
                page = await self._page(symbol, cursor)
                result.pages += 1
                result.refused += page.unreadable
                fresh = [r for r in page.rows if int(r[0]) < end]
                if unsure and fresh:  # only a candle with a later one served after it is known closed
                    newest = int(page.rows[-1][0])
                    fresh = [r for r in fresh if int(r[0]) < newest]
                    if not fresh:
                        break
                if not fresh:
                    if cursor + tf < end:  # (the last candle alone may not be served yet)
                        result.notes.append(self._none_from(symbol, cursor, end, page))
                    break
                lines = []
                for r in fresh:
                    ts = int(r[0])
                    kept_last = grid.newest
                    if kept_last is not None and ts <= kept_last:
                        continue  # a row served twice
                    line = _row_line(r)
                    if line is None:
                        result.refused += 1
                        continue
                    kept, refused = grid.take(ts, line)
                    result.refused += refused
                    for kept_ts, kept_line in kept:
                        lines.append(kept_line)
                        written_ts.append(kept_ts)
                if lines:
                    out = self._write(out, path, stored is None, lines)
                # The next page from a timeframe after the last row, or just after it when its time is off the grid
                # of the last candle kept (held, or left out): a timeframe after a damaged time would pass over the
                # candle after it, served on the grid.
                last_ts = int(fresh[-1][0])
                cursor = last_ts + (tf if grid.last is None or (last_ts - grid.last) % tf == 0 else 1)
                self.progress.advance(symbol, cursor, len(written_ts))
            ending = grid.finish()
            if ending:
                out = self._write(out, path, stored is None, [line for _, line in ending])
                written_ts += [ts for ts, _ in ending]
            if out is not None:
                os.fsync(out.fileno())
            if grid.held is not None:
                result.notes.append(f"the newest candle, at {iso(grid.held[0])}, is off the "
                                    f"{format_timeframe(tf)} grid of the one before it ({iso(grid.last or 0)}): "
                                    "left for the next run, which tells by the candle after it whether its time is "
                                    "damaged")
        except DownloadError as exc:
            held = written_ts[-1] if written_ts else last_stored
            raise DownloadError(f"{exc} ({_how_far(path, held)}; {AGAIN})") from None
        finally:
            if out is not None:
                out.close()
            self.progress.end(symbol)
        if written_ts:
            result.written = len(written_ts)
            result.first_ms, result.last_ms = written_ts[0], written_ts[-1]
            result.gaps = find_gaps(([seam] if seam is not None else []) + written_ts, tf)
            # A --since between two candles' opens starts at the next: none is missing before it unless a whole
            # timeframe passed first.
            if since_ms is not None and seam is None and written_ts[0] >= start + tf:
                result.notes.append(f"{self.venue.name} has no {symbol} candles before {iso(written_ts[0])}")
        if written_ts or stored is not None:
            result.file = load_csv(path, symbol=symbol, timeframe=tf)  # what was written reads back
        return result

    @staticmethod
    def _write(out: TextIO | None, path: Path, fresh_file: bool, lines: list[str]) -> TextIO:
        """`lines` appended to the candle file (opened at its first), flushed: the file it is open as."""
        if out is None:
            out = _open_for_candles(path, fresh_file=fresh_file)
        out.write("".join(lines))
        out.flush()
        return out

    def how_far(self, symbol: str, path: Path) -> str:
        """How far `path` goes, read without touching it (a download that failed before its symbol's turn)."""
        try:
            held = load_csv(path, symbol=symbol, timeframe=self.tf_ms).ts if path.exists() else []
        except (FfeError, OSError, ValueError):
            return f"{path} left as it was"  # what is wrong with it is said at its turn
        return _how_far(path, held[-1] if held else None)

    def _none_from(self, symbol: str, cursor: int, end: int, page: Page) -> str:
        """Why the download ended before `end`: the exchange has no candle in [cursor, end), which it told."""
        name = self.venue.name
        if page.rows:
            return (f"{name} has no {symbol} candles from {iso(cursor)} to {iso(end)}: its next is at "
                    f"{iso(int(page.rows[0][0]))}")
        return (f"{name} has no {symbol} candles after {iso(page.newest or 0)}, its newest: the market has not "
                "traded since (halted or delisted?)")

    async def _now(self, local: int, notes: list[str]) -> tuple[int, bool]:
        """The time candles are judged closed by: the earlier of this machine's (`local`) and the exchange's, when it
        tells it; and whether only a candle with a later one after it can be known closed (the exchange's time could
        not be read now, or is a day behind this machine's: a wrong clock, on one side or the other). Said in
        `notes`."""
        name = self.venue.name
        try:
            exchange_now = await self.venue.server_time()
        except VenueError as exc:
            notes.append(f"{name} tells no time ({exc}): candles are judged closed by this machine's clock")
            return local, False
        except VenueUnavailable as exc:
            notes.append(f"{name}'s time could not be read ({exc}): its newest candle is left for the next run")
            return local, True
        if exchange_now is None:
            return local, False
        if exchange_now < local - DAY_MS:
            notes.append(f"{name}'s time {iso(exchange_now)} is more than a day behind this machine's "
                         f"{iso(local)}: one of the clocks is wrong; the newest candle is left for the next run")
            return local, True
        return min(local, exchange_now), False

    async def _page(self, symbol: str, since: int) -> Page:
        """The exchange's page of candles from `since` on. An answer without any is believed only when the exchange's
        newest candle is before `since` (the market has not traded since): the exchange answers the candles from
        `since` on, passing over periods without trades, so with candles after `since` it was no answer (`{}` or a
        gateway's page served 200, which ccxt reads as no candles), and is retried as a failed request."""
        exchange, name = self.venue.exchange, self.venue.name

        async def read() -> Page:
            page = candles_from(await exchange.fetch_ohlcv(symbol, self.timeframe, since, self.page), since)
            if page.rows:
                return page
            latest = candles_from(await exchange.fetch_ohlcv(symbol, self.timeframe, None, self.page), None).rows
            if not latest:
                raise VenueUnavailable(f"{name} answered no {symbol} candles from {iso(since)} on, nor any when "
                                       "asked for its newest (its answers are not candles: in maintenance?)")
            newest = int(latest[-1][0])
            if newest >= since:
                raise VenueUnavailable(f"{name} answered no {symbol} candles from {iso(since)} on, though its "
                                       f"newest is at {iso(newest)} (its answer was not its candles)")
            return Page([], page.unreadable, newest)

        try:
            return await self.venue.reads(f"fetch_ohlcv {symbol}", read)
        except (VenueError, VenueUnavailable) as exc:
            raise DownloadError(str(exc)) from None


# --- the whole command ------------------------------------------------------------------------------------------


@dataclass
class Request:
    """`ffe data download` as data: where from, what, which period, and where to."""

    exchange: Any  # ExchangeSettings: id, timeout_ms, options, api_urls, sandbox
    symbols: list[str]
    timeframe: str
    since: str | None = None
    until: str | None = None
    out_dir: Path = Path("data")
    file: Path | None = None
    exchange_named: str = "--exchange"  # how a refusal of the exchange's id names it (the key and where it was set)

    def validated(self, now_ms: int) -> tuple[int | None, int | None, list[tuple[str, Path]]]:
        """Check everything that needs no network: (since ms, until ms, [(symbol, path)]). Raises
        DownloadInputError with one line."""
        # The timeframes engine.timeframe takes, as the configuration checks them.
        if not allowed_timeframe(self.timeframe):
            raise DownloadArgumentError(f"--timeframe: bad timeframe {self.timeframe!r}: expected Nm, Nh or Nd, "
                                        "from 1m to 7d, like '1h'")
        tf = format_timeframe(timeframe_ms(self.timeframe))  # "60m" and "1h" continue the same file
        since = parse_date(self.since, "--since") if self.since is not None else None
        problem = time_problem(since, f"--since: {self.since!r}") if since is not None else None
        if problem is not None:  # the exchange has no candle there, and the file could not hold one
            raise DownloadArgumentError(problem)
        if since is not None and since >= now_ms:  # a typo for an earlier year, most likely
            raise DownloadArgumentError(f"--since {self.since} is not before now ({iso(now_ms)}): no candle has "
                                        "closed there yet")
        until = parse_date(self.until, "--until") if self.until is not None else None
        if since is not None and until is not None and until <= since:
            raise DownloadArgumentError(f"--until {self.until} is not after --since {self.since}")
        if not self.symbols or len(set(self.symbols)) != len(self.symbols):
            raise DownloadArgumentError("name each symbol once, e.g. BTC/USDT ETH/USDT")
        for symbol in self.symbols:
            if not is_symbol(symbol):
                raise DownloadArgumentError(f"{symbol!r} is not a BASE/QUOTE symbol such as 'BTC/USDT'")
        if self.file is not None:
            if len(self.symbols) != 1:
                raise DownloadArgumentError("--file takes one symbol; use --out DIR for several")
            plan = [(self.symbols[0], self.file)]
            named = _named_symbol(self.file)
            if named is not None and named.upper() != self.symbols[0].upper():
                # `ffe backtest` reads the symbol back from the name: the candles would be taken for another's.
                raise DownloadArgumentError(f"--file {self.file}: its name reads back as {named}, not "
                                            f"{self.symbols[0]} (name it "
                                            f"{candle_file_name(self.symbols[0], tf, self.exchange.id)})")
        else:
            plan = [(s, self.out_dir / candle_file_name(s, tf, self.exchange.id)) for s in self.symbols]
        for _, path in plan:
            check_csv_path(path)
            if reach.is_dir(path):
                raise DownloadInputError(f"{path}: is a directory")
            kind = kind_of(path)
            if kind is not None:  # its candles are read first: a FIFO would be waited on, a device read without end
                raise DownloadInputError(f"{path}: is {kind}, not a CSV file")
            if since is None and not path.exists():
                raise DownloadArgumentError(f"{path}: no candles yet: --since is needed to start it")
        # Last: ccxt takes a few tenths of a second to import, and a mistyped argument above is told without it.
        from .venues.ccxt_loader import exchange_class

        if exchange_class(self.exchange.id) is None:
            # A mistake in the arguments when --exchange named it; in the configuration (where it was set) otherwise.
            error = DownloadArgumentError if self.exchange_named == "--exchange" else DownloadInputError
            raise error(f"{self.exchange_named}: {self.exchange.id!r} is not a ccxt exchange id")
        return since, until, plan


async def download(request: Request, *, clock: Any = None, progress: Progress | None = None,
                   page: int | None = None, report: TextIO | None = None) -> list[Result]:
    """Run a download: validate, connect (public data, no credentials), then each symbol in turn. Each symbol's
    report lines go to `report` (stdout by default) as soon as it is done."""
    since, until, plan = request.validated((clock if clock is not None else WallClock()).now_ms())
    out = report if report is not None else sys.stdout
    with _folders_held(path for _, path in plan):
        return await _download(request, plan, since, until, clock, progress, page, out)


async def _download(request: Request, plan: list[tuple[str, Path]], since: int | None, until: int | None,
                    clock: Any, progress: Progress | None, page: int | None, out: TextIO) -> list[Result]:
    from .venues.ccxt_venue import CcxtVenue, build_exchange

    venue = CcxtVenue(None, [s for s, _ in plan], exchange=build_exchange(request.exchange, credentials=False))
    results = []
    try:
        loader = Downloader(venue, request.timeframe, clock=clock, page=page, progress=progress)
        try:
            await loader.connect([s for s, _ in plan])
        except DownloadError as exc:
            where = "; ".join(loader.how_far(symbol, path) for symbol, path in plan)
            raise DownloadError(f"{exc} ({where}; {AGAIN})") from None
        for symbol, path in plan:
            result = await loader.symbol(symbol, path, since, until)
            results.append(result)
            out.write("\n".join(result.lines()) + "\n")
            out.flush()
    finally:
        await venue.close()
    return results


def _named_symbol(path: Path) -> str | None:
    """The symbol `ffe backtest` reads from the file's name, when it names one (BASE-QUOTE_...)."""
    try:
        named = symbol_from_filename(path)
    except CsvError:
        return None
    return named if is_symbol(named) else None


class DownloadHeld(DownloadError):
    """Another download is writing into the folder: its files are left to it."""


@contextmanager
def _folders_held(paths: Iterable[Path]) -> Iterator[None]:
    """Hold each folder the candles go to (flock) while they are read and written: two downloads appending to one
    file would interleave their lines, and each continue after the last candle it read. A folder made for them and
    left empty is removed again."""
    made: list[Path] = []
    fds: list[int] = []
    try:
        for folder in sorted({p.parent for p in paths}):
            missing = [f for f in (folder, *folder.parents) if not f.exists()]
            try:
                folder.mkdir(parents=True, exist_ok=True)
                made.extend(missing)
                fd = hold(folder)
            except OSError as exc:
                raise storage_failure(folder, exc) from None
            if fd is None:
                raise DownloadHeld(f"{folder}: another ffe data download is writing candles here; run this one "
                                   "again once it has ended")
            fds.append(fd)
        yield
    finally:
        for fd in fds:
            os.close(fd)
        for folder in made:  # deepest first
            with suppress(OSError):
                folder.rmdir()


def _how_far(path: Path, held: int | None) -> str:
    """What a failed download says of a file: the last candle it holds."""
    if held is not None:
        return f"{path} holds candles up to {iso(held)}"
    return f"{path} holds no candles" if path.exists() else f"{path} not written"


