"""`ffe data download`: closed candles from the fake Binance (real ccxt) into CSV files that load back.

The library is driven in-process with a market clock the test sets by hand; the command runs as a real subprocess
against the same fake, configured through a config file's [exchange] table as an operator would point it at a
testnet.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
from pathlib import Path

import pytest

from conftest import ffe_env, ffe_in_process, run_bounded, run_ffe
from fake_exchange import FakeBinance, ccxt_options, exchange_settings, kline, path_price
from ffe_engine.download import (DownloadError, DownloadInputError, NoProgress, ProgressBar, Request, Result,
                                 candle_file_name, download, progress_for)
from ffe_engine.market.csvdata import CsvError, iso, load_csv, symbol_from_filename
from live_helpers import run_ffe_async, write_config

H = 3_600_000
T0 = 1_700_000_000_000 // H * H  # 2023-11-14T22:00Z, an hour boundary
KLINES = "GET /api/v3/klines"


class FixedClock:
    """The time the downloader sees: the same as the fake's market time, moved by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now


@pytest.fixture
async def fx():
    async with FakeBinance() as fake:
        yield fake


def at(fx: FakeBinance, now: int) -> FixedClock:
    clock = FixedClock(now)
    fx.market_clock = clock.now_ms
    return clock


async def fetch(fx: FakeBinance, tmp_path: Path, clock: FixedClock, *, since: int | None = T0,
                until: int | None = None, symbols=("BTC/USDT",), progress=None) -> list:
    request = Request(exchange=exchange_settings(fx), symbols=list(symbols), timeframe="1h",
                      since=iso(since) if since is not None else None, until=iso(until) if until is not None else None,
                      out_dir=tmp_path)
    return await download(request, clock=clock, progress=progress, report=io.StringIO())


def csv_path(tmp_path: Path, symbol: str = "BTC/USDT") -> Path:
    return tmp_path / candle_file_name(symbol, "1h", "binance")


def expected_rows(first: int, last: int, symbol: str = "BTCUSDT") -> list[tuple]:
    return [kline(symbol, t, H)[1:5] for t in range(first, last + 1, H)]


def stored_rows(series) -> list[tuple]:
    return list(zip(series.open, series.high, series.low, series.close))


# ---------------------------------------------------------------------------------------------------- the library
async def test_pages_through_the_history_and_writes_closed_candles_that_load_back(fx, tmp_path):
    fx.klines_max = 50  # the exchange serves 50 candles per request: 180 candles take 4 pages
    clock = at(fx, T0 + 180 * H + 30 * 60_000)  # the 180th hour's candle is still forming
    [result] = await fetch(fx, tmp_path, clock)
    series = load_csv(csv_path(tmp_path))
    assert series.symbol == "BTC/USDT" and series.timeframe_ms == H
    assert series.ts == list(range(T0, T0 + 180 * H, H))
    assert stored_rows(series) == expected_rows(T0, T0 + 179 * H)
    assert result.written == 180 and result.gaps == [] and result.pages == 4
    starts = [int(r.params["startTime"]) for r in fx.requests_to(KLINES)]
    assert starts == [T0, T0 + 50 * H, T0 + 100 * H, T0 + 150 * H]


async def test_a_since_between_two_candles_starts_at_the_next_without_saying_none_came_before(fx, tmp_path):
    """--since at half past the hour: the first candle to take opens at the next hour (the one before opened before
    --since). No note that the exchange has no candles before it: it has, before --since."""
    clock = at(fx, T0 + 10 * H)
    [result] = await fetch(fx, tmp_path, clock, since=T0 + H // 2)
    assert load_csv(csv_path(tmp_path)).ts[0] == T0 + H
    assert not any("has no BTC/USDT candles before" in n for n in result.notes), result.notes
    fx.kline_gaps = [(T0 + 20 * H, T0 + 23 * H)]  # none from 20:00 to 23:00 after the first: that one is said
    clock.now = T0 + 30 * H
    [later] = await fetch(fx, tmp_path / "later", clock, since=T0 + 20 * H + H // 2)
    assert load_csv(csv_path(tmp_path / "later")).ts[0] == T0 + 23 * H
    assert any(f"has no BTC/USDT candles before {iso(T0 + 23 * H)}" in n for n in later.notes), later.notes


async def test_the_candle_still_forming_is_never_written_and_is_taken_once_it_has_closed(fx, tmp_path):
    clock = at(fx, T0 + 10 * H + 20 * 60_000)
    await fetch(fx, tmp_path, clock)
    path = csv_path(tmp_path)
    assert load_csv(path).ts[-1] == T0 + 9 * H  # the fake served the open 10th candle too; it was left out
    clock.now = fx_now = T0 + 11 * H + 5_000
    fx.market_clock = lambda: fx_now
    [result] = await fetch(fx, tmp_path, clock)
    series = load_csv(path)
    assert series.ts == list(range(T0, T0 + 11 * H, H))
    assert stored_rows(series)[-1] == expected_rows(T0 + 10 * H, T0 + 10 * H)[0]  # its final values
    assert result.written == 1


async def test_a_candle_that_closed_only_a_moment_ago_waits_for_the_next_run(fx, tmp_path):
    clock = at(fx, T0 + 5 * H + 500)  # the 5th candle closed half a second ago: the exchange may not agree yet
    await fetch(fx, tmp_path, clock)
    assert load_csv(csv_path(tmp_path)).ts[-1] == T0 + 3 * H


async def test_a_rerun_continues_after_the_last_stored_candle_without_duplicates(fx, tmp_path):
    clock = at(fx, T0 + 100 * H + 1_000_000)
    await fetch(fx, tmp_path, clock, until=T0 + 40 * H)
    path = csv_path(tmp_path)
    assert load_csv(path).ts[-1] == T0 + 39 * H
    fx.requests.clear()
    [again] = await fetch(fx, tmp_path, clock)  # the same --since: what is stored is not asked for again
    assert [int(r.params["startTime"]) for r in fx.requests_to(KLINES)] == [T0 + 40 * H]
    assert again.written == 60 and again.gaps == []
    [none_left] = await fetch(fx, tmp_path, clock, since=None)  # no --since: continue the file
    assert none_left.written == 0
    series = load_csv(path)  # strictly increasing, or it would not load
    assert series.ts == list(range(T0, T0 + 100 * H, H))
    assert stored_rows(series) == expected_rows(T0, T0 + 99 * H)
    assert path.read_text().count("timestamp") == 1  # one header


async def test_exchange_rows_of_prices_ffe_cannot_compute_with_are_left_out_and_counted(fx, tmp_path):
    """Rows the CSV files may not hold (a price beyond their bounds: positive and finite, but its square
    overflows) are not written, as a zero price is not: the file always loads, and the report counts them."""
    fx.price_path = lambda sid, ts: 7.1e307 if ts == T0 + 5 * H else path_price(sid, ts)
    clock = at(fx, T0 + 10 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)  # the candles at 4h and 5h hold that price
    series = load_csv(csv_path(tmp_path))
    assert series.ts == [T0 + i * H for i in range(10) if i not in (4, 5)] and max(series.high) < 1e6
    assert result.refused == 2 and "2 bad rows from the exchange left out" in result.lines()[0]


async def test_exchange_rows_past_2099_are_left_out_and_counted(fx, tmp_path):
    """Candle times are from 1800 to 2099 (market/bounds.py): the file must load, so rows past 2099 are not
    written, as rows of a zero price are not."""
    end = 4_102_444_800_000  # 2100-01-01T00:00:00Z
    clock = at(fx, end + 3 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock, since=end - 4 * H)
    series = load_csv(csv_path(tmp_path))
    assert series.ts == [end - 4 * H, end - 3 * H, end - 2 * H, end - H]
    assert result.refused == 3 and "3 bad rows from the exchange left out" in result.lines()[0]


async def test_exchange_rows_without_a_readable_time_are_left_out_and_counted(fx, tmp_path):
    """A row whose open time cannot be read is no candle (ccxt passes it over): the rows around it are written and
    its hour is told as a gap, not a traceback."""
    def unreadable(rows: list[list]) -> list[list]:
        return [["soon", *r[1:]] if r[0] == T0 + 3 * H else r for r in rows]

    fx.klines_edit = unreadable
    clock = at(fx, T0 + 10 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)
    assert load_csv(csv_path(tmp_path)).ts == [T0 + i * H for i in range(10) if i != 3]
    assert result.gaps == [(T0 + 2 * H, T0 + 4 * H)] and "gap" in " ".join(result.lines())


async def test_until_bounds_the_candles_and_the_requests(fx, tmp_path):
    fx.klines_max = 20
    clock = at(fx, T0 + 500 * H)
    [result] = await fetch(fx, tmp_path, clock, until=T0 + 30 * H)
    assert load_csv(csv_path(tmp_path)).ts == list(range(T0, T0 + 30 * H, H))
    assert result.pages == 2  # 20 + 10 candles; nothing after --until was asked for


def shifted(moves: dict[int, int]):
    """A klines_edit serving the candle opening at each key of `moves` that many ms later, or (a key of None) every
    candle from the first key on."""
    def edit(rows):
        return [[r[0] + moves.get(r[0], 0), *r[1:]] for r in rows]
    return edit


async def test_a_candle_off_the_grid_of_the_ones_either_side_is_left_out_and_counted(fx, tmp_path):
    """A time the file could not hold (load_csv's off_grid: a damaged time) is a bad row: left out, and the file
    written loads, now and after the next run."""
    fx.klines_edit = shifted({T0 + 5 * H: 1})
    clock = at(fx, T0 + 10 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)
    series = load_csv(csv_path(tmp_path))
    assert series.ts == [T0 + i * H for i in range(10) if i != 5]
    assert result.refused == 1 and "1 bad row from the exchange left out" in result.lines()[0]
    clock.now += 5 * H
    [again] = await fetch(fx, tmp_path, clock, since=None)
    assert again.written == 5 and load_csv(csv_path(tmp_path)).ts[-1] == T0 + 14 * H


async def test_a_candle_off_the_grid_at_the_end_of_a_page_does_not_skip_the_next(fx, tmp_path):
    """The next page is asked from just after it, not a timeframe after its damaged time: that would pass over the
    candle after it, which the exchange serves on the grid."""
    fx.klines_max = 7
    fx.klines_edit = shifted({T0 + 6 * H: 1})
    clock = at(fx, T0 + 12 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)
    assert load_csv(csv_path(tmp_path)).ts == [T0 + i * H for i in range(12) if i != 6]
    assert result.refused == 1 and result.gaps == [(T0 + 5 * H, T0 + 7 * H)]


async def test_the_first_candle_of_a_new_file_off_the_grid_of_those_after_it_is_left_out(fx, tmp_path):
    """A new file has no candle before its first to judge it by: the two after it do. Off their grid (a damaged
    time), it is left out and counted, and the file starts on the grid; one on the grid with the first, whose second
    is off it, keeps the first and leaves the second out."""
    fx.klines_edit = shifted({T0: 1})
    clock = at(fx, T0 + 10 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock, since=T0)
    assert load_csv(csv_path(tmp_path)).ts == [T0 + i * H for i in range(1, 10)]
    assert result.refused == 1, result.lines()
    fx.klines_edit = shifted({T0 + H: 1})
    [second] = await fetch(fx, tmp_path / "second", clock, since=T0)
    assert load_csv(csv_path(tmp_path / "second")).ts == [T0 + i * H for i in range(10) if i != 1]
    assert second.refused == 1, second.lines()


async def test_a_new_file_of_one_candle_keeps_it(fx, tmp_path):
    """Nothing after it to judge it by: written, as it is."""
    clock = at(fx, T0 + H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock, since=T0)
    assert load_csv(csv_path(tmp_path), timeframe=H).ts == [T0] and result.written == 1


async def test_candles_that_move_to_another_grid_are_kept(fx, tmp_path):
    fx.klines_edit = lambda rows: [[r[0] + (1_800_000 if r[0] >= T0 + 5 * H else 0), *r[1:]] for r in rows]
    clock = at(fx, T0 + 10 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)
    series = load_csv(csv_path(tmp_path))
    assert series.ts == [T0 + i * H for i in range(5)] + [T0 + i * H + 1_800_000 for i in range(5, 9)]
    assert result.refused == 0


async def test_a_newest_candle_off_the_grid_is_left_for_the_next_run_which_tells_by_the_one_after_it(fx, tmp_path):
    fx.klines_edit = shifted({T0 + 9 * H: 1})
    clock = at(fx, T0 + 10 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)
    path = csv_path(tmp_path)
    assert load_csv(path).ts == [T0 + i * H for i in range(9)]
    assert result.refused == 0
    assert any("off the 1h grid" in line and "left for the next run" in line for line in result.lines())
    clock.now += 3 * H
    [again] = await fetch(fx, tmp_path, clock, since=None)
    assert load_csv(path).ts == [T0 + i * H for i in range(13) if i != 9]
    assert again.refused == 1


async def test_gaps_are_reported_with_where_they_are(fx, tmp_path):
    fx.klines_max = 50
    fx.kline_gaps = [(T0 + 20 * H, T0 + 25 * H), (T0 + 48 * H, T0 + 53 * H)]  # the second spans a page edge
    clock = at(fx, T0 + 80 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)
    assert result.gaps == [(T0 + 19 * H, T0 + 25 * H), (T0 + 47 * H, T0 + 53 * H)]
    assert result.missing_bars == 10
    text = "\n".join(result.lines())
    assert "2 gaps (10 missing bars)" in text
    assert f"5 missing bars after {iso(T0 + 19 * H)}, next candle at {iso(T0 + 25 * H)}" in text
    series = load_csv(csv_path(tmp_path))
    assert series.gap_count == 2 and series.missing_bars == 10 and len(series) == 70


def test_one_candle_one_gap_and_one_bar_are_said_in_the_singular(tmp_path):
    result = Result("BTC/USDT", csv_path(tmp_path), H, written=1, first_ms=T0, last_ms=T0, pages=1,
                    gaps=[(T0 - 2 * H, T0)], refused=1)
    assert result.lines()[:2] == [
        f"BTC/USDT: 1 new 1h candle from {iso(T0)} to {iso(T0)} in 1 request, 1 gap (1 missing bar), 1 bad row "
        "from the exchange left out",
        f"  gap: 1 missing bar after {iso(T0 - 2 * H)}, next candle at {iso(T0)}"]


async def test_a_gap_at_the_seam_between_runs_is_reported(fx, tmp_path):
    clock = at(fx, T0 + 60 * H + 1_000_000)
    await fetch(fx, tmp_path, clock, until=T0 + 10 * H)
    fx.kline_gaps = [(T0 + 10 * H, T0 + 13 * H)]
    [result] = await fetch(fx, tmp_path, clock)
    assert result.gaps == [(T0 + 9 * H, T0 + 13 * H)] and result.missing_bars == 3


async def test_a_rate_limit_answer_is_waited_out_and_the_download_completes(fx, tmp_path):
    fx.klines_max = 50
    fx.fault(KLINES, "429", retry_after=0)
    clock = at(fx, T0 + 100 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)
    assert [r.status for r in fx.requests_to(KLINES)][:2] == [429, 200]
    assert result.written == 100 and load_csv(csv_path(tmp_path)).ts[-1] == T0 + 99 * H


class DownAfterFirstPage(NoProgress):
    def __init__(self, fx: FakeBinance) -> None:
        self.fx = fx

    def advance(self, symbol: str, last_ms: int, written: int) -> None:
        self.fx.down = True


async def test_a_network_failure_keeps_what_was_written_valid_and_a_rerun_completes_it(fx, tmp_path):
    fx.klines_max = 50
    clock = at(fx, T0 + 120 * H + 1_000_000)
    with pytest.raises(DownloadError) as failed:
        await fetch(fx, tmp_path, clock, progress=DownAfterFirstPage(fx))
    path = csv_path(tmp_path)
    assert f"{path} holds candles up to {iso(T0 + 49 * H)}; run the same command again to continue" in str(failed.value)
    assert "\n" not in str(failed.value)
    assert load_csv(path).ts == list(range(T0, T0 + 50 * H, H))
    fx.down = False
    [result] = await fetch(fx, tmp_path, clock)
    assert result.written == 70
    assert load_csv(path).ts == list(range(T0, T0 + 120 * H, H))


class FaultAfterPages(NoProgress):
    """Queues `kind` on the klines route once `pages` pages were written: the next request meets it."""

    def __init__(self, fx: FakeBinance, pages: int, kind: str, times: int) -> None:
        self.fx, self.pages, self.kind, self.times = fx, pages, kind, times
        self.seen = 0

    def advance(self, symbol: str, last_ms: int, written: int) -> None:
        self.seen += 1
        if self.seen == self.pages:
            self.fx.fault(KLINES, self.kind, times=self.times)


@pytest.mark.parametrize("kind", ["empty_200", "page_200"])
async def test_a_200_answer_that_is_no_list_of_candles_is_retried_and_the_download_completes(fx, tmp_path, kind):
    # `{}` or a gateway's HTML page, answered 200 (ccxt reads either as no candles): a failed request, retried as
    # others are, not the end of the exchange's data.
    fx.klines_max = 50
    clock = at(fx, T0 + 180 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock, progress=FaultAfterPages(fx, 2, kind, times=1))
    assert [r.fault for r in fx.requests_to(KLINES)].count(kind) == 1
    assert load_csv(csv_path(tmp_path)).ts == list(range(T0, T0 + 180 * H, H))
    assert result.written == 180 and result.gaps == []


@pytest.mark.parametrize("kind", ["empty_200", "page_200"])
async def test_answers_that_stay_no_list_of_candles_fail_the_download_saying_how_far_the_file_goes(fx, tmp_path,
                                                                                                  kind):
    fx.klines_max = 50
    clock = at(fx, T0 + 180 * H + 1_000_000)
    with pytest.raises(DownloadError) as failed:
        await fetch(fx, tmp_path, clock, progress=FaultAfterPages(fx, 2, kind, times=1000))
    path = csv_path(tmp_path)
    message = str(failed.value)
    assert f"no BTC/USDT candles from {iso(T0 + 100 * H)} on" in message, message
    assert f"{path} holds candles up to {iso(T0 + 99 * H)}; run the same command again to continue" in message, message
    assert "\n" not in message
    assert load_csv(path).ts == list(range(T0, T0 + 100 * H, H))
    fx.clear_faults(KLINES)
    [result] = await fetch(fx, tmp_path, clock)
    assert result.written == 80 and load_csv(path).ts == list(range(T0, T0 + 180 * H, H))


async def test_a_market_that_stopped_trading_ends_the_download_saying_so(fx, tmp_path):
    # No candle from 50h on (halted or delisted, still listed): the exchange's newest candle is the 49th hour's, so
    # an empty answer from 50h on is the truth, and the report says where the market's candles end.
    fx.kline_gaps = [(T0 + 50 * H, T0 + 10_000 * H)]
    clock = at(fx, T0 + 100 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock)
    assert load_csv(csv_path(tmp_path)).ts == list(range(T0, T0 + 50 * H, H))
    text = "\n".join(result.lines())
    assert f"binance has no BTC/USDT candles after {iso(T0 + 49 * H)}, its newest" in text, text


async def test_a_range_without_any_candle_writes_no_file_and_says_so(fx, tmp_path):
    # No trades in all of [since, until): nothing to write. No file holding a header only, which the next step
    # (this command's own check, a backtest) would call damaged.
    fx.kline_gaps = [(T0, T0 + 20 * H)]
    clock = at(fx, T0 + 100 * H + 1_000_000)
    [result] = await fetch(fx, tmp_path, clock, until=T0 + 10 * H)
    assert not csv_path(tmp_path).exists()
    assert result.written == 0 and result.file is None
    text = "\n".join(result.lines())
    assert f"binance has no BTC/USDT candles from {iso(T0)} to {iso(T0 + 10 * H)}" in text, text
    assert f"its next is at {iso(T0 + 20 * H)}" in text, text


async def test_a_line_cut_short_by_a_crash_is_dropped_and_fetched_again(fx, tmp_path):
    clock = at(fx, T0 + 20 * H + 1_000_000)
    await fetch(fx, tmp_path, clock, until=T0 + 10 * H)
    path = csv_path(tmp_path)
    with open(path, "a") as f:
        f.write(f"{iso(T0 + 10 * H)},3000")  # 30000.x cut off mid-number: it would load as a wrong price
    [result] = await fetch(fx, tmp_path, clock)
    series = load_csv(path)
    assert series.ts == list(range(T0, T0 + 20 * H, H))
    assert stored_rows(series) == expected_rows(T0, T0 + 19 * H)
    assert any("incomplete last line" in line for line in result.lines())


async def test_a_header_cut_short_by_a_crash_is_written_again(fx, tmp_path):
    clock = at(fx, T0 + 20 * H + 1_000_000)
    path = csv_path(tmp_path)
    path.write_text("timestamp,open,hi")
    [result] = await fetch(fx, tmp_path, clock)
    assert stored_rows(load_csv(path)) == expected_rows(T0, T0 + 19 * H)
    assert any("incomplete last line" in line for line in result.lines())


async def test_several_symbols_each_get_their_own_file_named_for_the_backtest(fx, tmp_path):
    clock = at(fx, T0 + 30 * H + 1_000_000)
    await fetch(fx, tmp_path, clock, symbols=("BTC/USDT", "ETH/USDT"))
    for symbol, sid in (("BTC/USDT", "BTCUSDT"), ("ETH/USDT", "ETHUSDT")):
        path = csv_path(tmp_path, symbol)
        assert path.name == f"{symbol.replace('/', '-')}_1h_binance.csv"
        assert symbol_from_filename(path) == symbol
        assert stored_rows(load_csv(path)) == expected_rows(T0, T0 + 29 * H, sid)


def test_the_progress_bar_is_drawn_in_place_on_a_terminal_only():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_for(io.StringIO()), NoProgress)
    screen = Tty()
    bar = progress_for(screen)
    assert isinstance(bar, ProgressBar)
    bar.begin("BTC/USDT", T0, T0 + 100 * H)
    bar.advance("BTC/USDT", T0 + 50 * H, 50)
    bar.end("BTC/USDT")
    text = screen.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "BTC/USDT [###############...............]  50% 50 candles" in text


# ---------------------------------------------------------------------------------------------------- the command
def fake_config(fx: FakeBinance) -> dict:
    return {"exchange": {"id": "binance", "timeout_ms": 2000, "options": ccxt_options(),
                         "api_urls": {"public": fx.url + "/api/v3", "private": fx.url + "/api/v3"}}}


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ffe: error: ")
    return lines[0]


async def test_ffe_data_download_writes_files_against_the_configured_exchange(fx, tmp_path):
    write_config(tmp_path, fake_config(fx))
    now = fx.market_clock()
    since = now // H * H - 30 * H
    p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "ETH/USDT", "--exchange", "binance",
                            "--timeframe", "1h", "--since", iso(since), "--out", "candles", env=ffe_env())
    assert p.proc.returncode == 0, p.stderr
    assert p.stderr == ""  # not a terminal: no progress bar
    for symbol in ("BTC/USDT", "ETH/USDT"):
        path = tmp_path / "candles" / candle_file_name(symbol, "1h", "binance")
        series = load_csv(path)
        assert series.ts[0] == since and series.gap_count == 0
        assert series.ts[-1] + H <= fx.market_clock()  # closed when it was written
        assert f"{symbol}: {len(series)} new 1h candles from {iso(since)}" in p.stdout
    # a second run continues the same files
    again = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "--timeframe", "1h", "--out", "candles",
                                env=ffe_env(), name="again")
    assert again.proc.returncode == 0, again.stderr
    assert load_csv(tmp_path / "candles" / candle_file_name("BTC/USDT", "1h", "binance")).ts[0] == since


async def test_a_timeframe_written_another_way_is_downloaded_as_the_engine_reads_it(fx, tmp_path):
    """engine.timeframe = "60m" is the engine's 1h, asked of the exchange as "1h": the download, which takes
    engine.timeframe when --timeframe is not given, asks it the same way, into the same file as --timeframe 1h."""
    write_config(tmp_path, {**fake_config(fx), "engine": {"timeframe": "60m"}})
    since = fx.market_clock() // H * H - 30 * H
    p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "--since", iso(since), "--out", "candles",
                            env=ffe_env())
    assert p.proc.returncode == 0, p.stderr
    path = tmp_path / "candles" / candle_file_name("BTC/USDT", "1h", "binance")
    assert load_csv(path, timeframe=H).ts[0] == since
    assert f"BTC/USDT: {len(load_csv(path))} new 1h candles from {iso(since)}" in p.stdout, p.stdout
    again = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "--timeframe", "60m", "--out", "candles",
                                env=ffe_env(), name="again")
    assert again.proc.returncode == 0, again.stderr
    assert os.listdir(tmp_path / "candles") == [path.name]


async def test_ffe_data_download_exits_1_with_one_line_when_the_exchange_is_unreachable(fx, tmp_path):
    write_config(tmp_path, fake_config(fx))
    fx.down = True
    p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "--timeframe", "1h", "--since", "2024-01-01",
                            "--file", "btc.csv", env=ffe_env())
    assert p.proc.returncode == 1
    assert "load_markets" in one_error_line(p.stderr)
    assert not (tmp_path / "btc.csv").exists()


async def test_an_unreachable_exchange_says_how_far_each_file_goes(fx, tmp_path):
    """The markets not loaded, nothing is asked of any symbol: the line still says what each file holds."""
    write_config(tmp_path, fake_config(fx))
    out = tmp_path / "candles"
    out.mkdir()
    held = out / candle_file_name("BTC/USDT", "1h", "binance")
    held.write_text("timestamp,open,high,low,close,volume\n"
                    f"{iso(T0)},1,2,0.5,1.5,10\n{iso(T0 + H)},1,2,0.5,1.5,10\n")
    before = held.read_bytes()
    fx.down = True
    p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "ETH/USDT", "--timeframe", "1h", "--since",
                            "2023-11-01", "--out", "candles", env=ffe_env())
    assert p.proc.returncode == 1, p.stderr
    line = one_error_line(p.stderr)
    assert "load_markets" in line, line
    new = out / candle_file_name("ETH/USDT", "1h", "binance")
    said = (f"{held.relative_to(tmp_path)} holds candles up to {iso(T0 + H)}; {new.relative_to(tmp_path)} not "
            "written; run the same command again to continue")  # named as --out gave them
    assert said in line, line
    assert held.read_bytes() == before and not new.exists()


async def test_an_exchange_answering_a_maintenance_page_for_its_markets_exits_1_not_2(fx, tmp_path):
    # Its market list comes back empty: that says nothing of the symbols asked for, and may pass by itself.
    write_config(tmp_path, fake_config(fx))
    fx.fault("GET /api/v3/exchangeInfo", "5xx_not_executed", status=200, times=50)
    p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "--timeframe", "1h", "--since", "2024-01-01",
                            "--file", "btc.csv", env=ffe_env())
    assert p.proc.returncode == 1, p.stderr
    line = one_error_line(p.stderr)
    assert "listed no markets at all" in line and "lists no market BTC/USDT" not in line, line
    assert not (tmp_path / "btc.csv").exists()


@pytest.mark.parametrize("kind", ["empty_200", "page_200"])
async def test_a_first_page_that_stays_no_list_of_candles_exits_1_and_writes_no_file(fx, tmp_path, kind):
    write_config(tmp_path, fake_config(fx))
    fx.fault(KLINES, kind, times=1000)
    p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "--timeframe", "1h", "--since",
                            iso(fx.market_clock() // H * H - 30 * H), "--out", "o", env=ffe_env())
    assert p.proc.returncode == 1, (p.stdout, p.stderr)
    line = one_error_line(p.stderr)
    path = Path("o") / candle_file_name("BTC/USDT", "1h", "binance")
    assert "no BTC/USDT candles from" in line and f"{path} not written; run the same command again" in line, line
    assert not (tmp_path / path).exists()


async def test_ffe_data_download_exits_1_not_0_when_the_exchange_stops_answering_candles_midway(fx, tmp_path):
    # The reported run: from the third request on, every klines answer is `{}` (200). Exit 0 with a file that
    # ends days before now would be taken as complete by a cron job.
    write_config(tmp_path, fake_config(fx))
    fx.klines_max = 10
    answered = itertools.count()
    fx.klines_edit = lambda rows: rows if next(answered) < 2 else {}
    since = fx.market_clock() // H * H - 72 * H
    p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "--timeframe", "1h", "--since", iso(since),
                            "--out", "o", env=ffe_env())
    assert p.proc.returncode == 1, (p.stdout, p.stderr)
    line = one_error_line(p.stderr)
    path = Path("o") / candle_file_name("BTC/USDT", "1h", "binance")
    assert f"{path} holds candles up to {iso(since + 19 * H)}; run the same command again to continue" in line, line
    assert load_csv(tmp_path / path).ts == list(range(since, since + 20 * H, H))


async def test_a_symbol_the_exchange_does_not_list_exits_2_before_anything_is_written(fx, tmp_path):
    write_config(tmp_path, fake_config(fx))
    p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "DOGE/USDT", "--timeframe", "1h",
                            "--since", "2024-01-01", "--out", "candles", env=ffe_env())
    assert p.proc.returncode == 2
    assert "binance lists no market DOGE/USDT" in one_error_line(p.stderr)
    assert not (tmp_path / "candles").exists()


@pytest.mark.parametrize("args, message", [
    (("--exchange", "no_such_exchange"), "--exchange: 'no_such_exchange' is not a ccxt exchange id"),
    (("--timeframe", "1x"), "--timeframe: bad timeframe '1x': expected Nm, Nh or Nd, from 1m to 7d, like '1h'"),
    (("--timeframe", "30s"), "--timeframe: bad timeframe '30s': expected Nm, Nh or Nd, from 1m to 7d"),
    (("--timeframe", "1w"), "--timeframe: bad timeframe '1w': expected Nm, Nh or Nd, from 1m to 7d"),
    (("--timeframe", "8d"), "--timeframe: bad timeframe '8d': expected Nm, Nh or Nd, from 1m to 7d"),
    (("--since", "yesterday"), "--since: 'yesterday' is not a date"),
    (("--since", "1799-12-31"), "--since: '1799-12-31' is before 1800, the first year of the candle times ffe reads"),
    (("--since", "2100-01-01"), "--since: '2100-01-01' is past 2099, the last year of the candle times ffe reads"),
    (("--until", "2023-12-31"), "--until 2023-12-31 is not after --since 2024-01-01"),
    (("--until", "2024-13-01"), "--until: '2024-13-01' is not a date"),
    (("ETH/USDT", "--file", "a.csv"), "--file takes one symbol"),
    (("--file", "a.txt"), "a.txt: the file name must end in .csv"),
    (("BTCUSDT",), "'BTCUSDT' is not a BASE/QUOTE symbol such as 'BTC/USDT'"),
], ids=["exchange", "timeframe", "seconds", "weeks", "over 7d", "since", "since-1799", "since-2100",
        "until-before-since", "until",
        "file-two-symbols", "file-suffix", "symbol"])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    base = {"--exchange": "binance", "--timeframe": "1h", "--since": "2024-01-01"}
    opts = list(args)
    for key, value in base.items():
        if key not in opts:
            opts += [key, value]
    ffe = run_ffe if args == ("--exchange", "no_such_exchange") else ffe_in_process  # the first as a real process
    proc = ffe(tmp_path, "data", "download", "BTC/USDT", *opts)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    # A mistake in the command's arguments ends with the help to read (cli.md, Exit codes).
    assert message in line and line.endswith("(see `ffe data download --help`)"), line
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", [("--out", "afile"), ("--file", "afile/x.csv"), ("--file", "afile/deeper/x.csv")],
                         ids=["out", "file", "file-deeper"])
def test_a_regular_file_on_the_way_to_the_candles_exits_2_with_one_line_before_anything_is_asked(tmp_path, where):
    """The folder the candles would go to is a file (or has a file on its way): told in one line naming it, exit 2,
    before the exchange is asked anything (here it could not be: no network), the file left as it was."""
    (tmp_path / "afile").write_text("mine\n")
    proc = run_ffe(tmp_path, "data", "download", "BTC/USDT", "--exchange", "binance", "--since", "2024-01-01",
                   *where)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "afile: is not a directory" in line and line.endswith("(see `ffe data download --help`)"), line
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine\n"


def test_an_exchange_id_from_the_configuration_that_ccxt_does_not_know_is_said_where_it_was_set(tmp_path):
    """No --exchange given: the configured exchange.id is at fault, and the line says where it was set, not a flag
    that was never given."""
    (tmp_path / "config.toml").write_text('[exchange]\nid = "binanse"\n')
    proc = ffe_in_process(tmp_path, "data", "download", "BTC/USDT", "--since", "2024-01-01")
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "config.toml:2: exchange.id: 'binanse' is not a ccxt exchange id" in line and "--exchange" not in line, line


def test_a_new_file_needs_since(tmp_path):
    proc = run_ffe(tmp_path, "data", "download", "BTC/USDT", "--exchange", "binance", "--file", "btc.csv")
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "btc.csv: no candles yet: --since is needed to start it" in line, line
    assert line.endswith("(see `ffe data download --help`)"), line


async def test_a_damaged_file_is_refused_naming_its_line_and_left_as_it_is(fx, tmp_path):
    clock = at(fx, T0 + 20 * H + 1_000_000)
    path = csv_path(tmp_path)
    path.write_text(f"timestamp,open,high,low,close,volume\n{iso(T0)},1,2,0.5,1.5,3\n{iso(T0 + H)},1,2,3,1.5,3\n")
    before = path.read_text()
    with pytest.raises(CsvError, match=r"_1h_binance\.csv:3: high 2 is below low 3"):
        await fetch(fx, tmp_path, clock)
    assert path.read_text() == before and fx.requests_to(KLINES) == []


@pytest.mark.parametrize("text, error", [
    ("name,price\nbread,3", r":1: .*header"),  # another program's CSV, its last line without a line break
    ("a note without a line break", r"csv:1: a line without a line break and nothing before it: not a file of candles"),
    (f"timestamp,open,high,low,close,volume\n{iso(T0)},1,2,0.5,1.5,3\n{iso(T0 + H)},1,2,3,1.5,3\n{iso(T0 + 2 * H)},1",
     r":3: high 2 is below low 3"),
    ("timestamp,open,high,low,close,volume\n" + "".join(f"{iso(T0 + k * 60_000)},1,2,0.5,1.5,3\n" for k in range(3))
     + f"{iso(T0 + 3 * 60_000)},1,2", r"holds 1m candles, not 1h"),
])
async def test_a_file_that_is_not_this_download_s_candles_is_left_whole_even_with_an_unended_last_line(
        fx, tmp_path, text, error):
    # The last line of a file this command appends to is cut off when a crash left it unended; but only once the
    # rest of the file is checked as candles of this timeframe: anyone else's file keeps every byte.
    clock = at(fx, T0 + 20 * H + 1_000_000)
    path = csv_path(tmp_path)
    path.write_text(text)
    with pytest.raises((CsvError, DownloadInputError), match=error):
        await fetch(fx, tmp_path, clock)
    assert path.read_text() == text and fx.requests_to(KLINES) == []



@pytest.mark.parametrize("header", ["Date,Open,High,Low,Close,Adj Close,Volume",  # yfinance's, as cli.md cites
                                    "timestamp,volume,close,low,high,open"])
async def test_a_file_of_candles_in_another_column_layout_is_refused_before_anything_is_asked(fx, tmp_path, header):
    """It loads (load_csv reads columns by name); but the rows are appended in ffe's layout, which would break it."""
    clock = at(fx, T0 + 20 * H + 1_000_000)
    path = csv_path(tmp_path)
    row = {"Date": iso(T0), "Open": "1", "High": "2", "Low": "0.5", "Close": "1.5", "Adj Close": "1.5",
           "Volume": "3", "timestamp": iso(T0), "volume": "3", "close": "1.5", "low": "0.5", "high": "2", "open": "1"}
    text = header + "\n" + ",".join(row[c] for c in header.split(",")) + "\n"
    path.write_text(text)
    load_csv(path)
    with pytest.raises(DownloadInputError, match=rf"_1h_binance\.csv:1: its columns are {header}, not "
                                                 r"timestamp,open,high,low,close,volume"):
        await fetch(fx, tmp_path, clock)
    assert path.read_text() == text and fx.requests_to(KLINES) == []


def test_a_file_named_for_another_symbol_is_refused_before_anything_is_asked(tmp_path):
    # `ffe backtest` reads the symbol back from the name: BTC candles in it would be taken for ETH's.
    proc = run_ffe(tmp_path, "data", "download", "BTC/USDT", "--exchange", "binance", "--since", "2024-01-01",
                   "--file", "ETH-USDT_1h_binance.csv")
    assert proc.returncode == 2
    assert ("--file ETH-USDT_1h_binance.csv: its name reads back as ETH/USDT, not BTC/USDT"
            in one_error_line(proc.stderr))
    assert not (tmp_path / "ETH-USDT_1h_binance.csv").exists()


async def test_a_second_download_into_a_folder_being_written_is_refused_and_the_first_s_file_left_whole(
        fx, tmp_path):
    import fcntl

    write_config(tmp_path, fake_config(fx))
    out = tmp_path / "candles"
    out.mkdir()
    held = os.open(out, os.O_RDONLY | os.O_DIRECTORY)  # as the first download holds it
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        p = await run_ffe_async(tmp_path, "data", "download", "BTC/USDT", "--timeframe", "1h", "--since",
                                iso(fx.market_clock() // H * H - 30 * H), "--out", "candles", env=ffe_env())
    finally:
        os.close(held)
    assert p.proc.returncode == 1
    assert ("candles: another ffe data download is writing candles here; run this one again once it has ended"
            in one_error_line(p.stderr))
    assert list(out.iterdir()) == [] and fx.requests_to(KLINES) == []


def test_downloads_in_one_process_leave_one_log_handler_not_one_each(tmp_path):
    # A process that runs the download more than once (a script, the test suite) does not pile up handlers.
    venues = logging.getLogger("ffe_engine.venues")
    before = len(venues.handlers)
    for _ in range(3):
        proc = ffe_in_process(tmp_path, "data", "download", "BTC/USDT", "--exchange", "binance", "--timeframe", "1x",
                              "--since", "2024-01-01")
        assert proc.returncode == 2, proc.stderr
    assert len(venues.handlers) <= max(before, 1)


async def test_a_clock_ahead_of_the_exchange_never_writes_the_candle_still_forming(fx, tmp_path):
    # The exchange is 20 minutes into the 10th hour; the machine's clock, 45 minutes ahead of it, has that hour
    # ended long ago. The exchange's own time says it has not: the file ends at the 9th.
    market = at(fx, T0 + 10 * H + 20 * 60_000)
    ahead = FixedClock(market.now + 45 * 60_000)
    await download(Request(exchange=exchange_settings(fx), symbols=["BTC/USDT"], timeframe="1h", since=iso(T0),
                           until=None, out_dir=tmp_path), clock=ahead, report=io.StringIO())
    assert load_csv(csv_path(tmp_path)).ts[-1] == T0 + 9 * H


async def test_a_range_long_past_is_downloaded_without_asking_the_exchange_s_time(fx, tmp_path):
    clock = at(fx, T0 + 1000 * H)
    fx.fault("GET /api/v3/time", "5xx_not_executed", times=10)
    [result] = await fetch(fx, tmp_path, clock, until=T0 + 48 * H)
    assert load_csv(csv_path(tmp_path)).ts == list(range(T0, T0 + 48 * H, H))
    assert fx.requests_to("GET /api/v3/time") == []


async def test_an_exchange_that_refuses_to_tell_its_time_is_judged_by_the_machine_s_clock(fx, tmp_path):
    clock = at(fx, T0 + 10 * H + 20 * 60_000)
    fx.fault("GET /api/v3/time", "error", status=400, code=-1020, msg="This operation is not supported.", times=10)
    [result] = await fetch(fx, tmp_path, clock)
    assert load_csv(csv_path(tmp_path)).ts[-1] == T0 + 9 * H
    assert any("tells no time" in n for n in result.notes), result.notes


async def test_when_the_exchange_s_time_cannot_be_read_the_newest_candle_is_left_for_the_next_run(fx, tmp_path):
    # The exchange's time unreadable now (an outage of that route), the machine's clock ahead of it: only candles
    # with a later one served after them are known closed. The newest (here the one still forming) waits.
    market = at(fx, T0 + 10 * H + 20 * 60_000)
    ahead = FixedClock(market.now + 45 * 60_000)
    fx.fault("GET /api/v3/time", "5xx_not_executed", times=10)
    [result] = await download(Request(exchange=exchange_settings(fx), symbols=["BTC/USDT"], timeframe="1h",
                                      since=iso(T0), until=None, out_dir=tmp_path), clock=ahead, report=io.StringIO())
    assert load_csv(csv_path(tmp_path)).ts[-1] == T0 + 9 * H
    assert any("next run" in n for n in result.notes), result.notes


@pytest.mark.parametrize("kind", ["fifo", "link_to_device"])
def test_a_candle_file_that_is_not_a_file_exits_2_with_one_line_before_anything_is_asked(tmp_path, kind):
    """`--file` naming a FIFO or a device: the candles already there are read before new ones are appended, and a
    FIFO would be waited on for ever, a device read without end. Told in one line naming it, exit 2, before the
    exchange is asked anything (here it could not be: no network)."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "c.csv")
        what = "a FIFO"
    else:
        (tmp_path / "c.csv").symlink_to("/dev/zero")
        what = "a character device (a link to /dev/zero)"
    proc = run_bounded(tmp_path, "data", "download", "BTC/USDT", "--exchange", "binance", "--since", "2024-01-01",
                       "--file", "c.csv")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.splitlines() == [f"ffe: error: c.csv: is {what}, not a CSV file"], proc.stderr[-2000:]
