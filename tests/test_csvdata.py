"""CSV market data: the contract in docs/cli.md ("CSV market data"), checked on real files written to disk and on
the sample data shipped in samples/."""

from __future__ import annotations

import gzip
import tracemalloc
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ffe_engine.model import Candle
from ffe_engine.market.csvdata import CandleSeries, CsvError, load_csv, parse_symbol_arg, symbol_from_filename

from ffe_engine.market.csvdata import MAX_LINE_BYTES

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
BTC = SAMPLES / "BTC-USD_1h_2020-2023.csv.gz"
ETH = SAMPLES / "ETH-USD_1h_2020-2023.csv.gz"
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_577_836_800_000  # 2020-01-01T00:00:00Z


EPOCH_NOTE = ("(an epoch number is seconds, milliseconds or microseconds by its size: seconds below 1e11, "
              "milliseconds below 1e14, microseconds from 1e14; before 1970, seconds from -5364662400, milliseconds "
              "from -5364662400000, microseconds below)")
QUOTE_TEXT_AFTER = ("a quoted field has text after its closing quote: put the whole value inside the quotes, or "
                    "remove them (only spaces may follow a closing quote; a quote inside a quoted value is written "
                    "twice)")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_of(ms: int) -> str:
    """ISO text of any time from the year 1 (datetime.fromtimestamp fails before 1970 on some platforms)."""
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%SZ")


def good_lines(n: int = 99) -> list[str]:
    """A header and n valid hourly rows: line k of the file (1-based) is data row k-1."""
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(n):
        p = 100.0 + i
        lines.append(f"{iso(T0 + i * HOUR)},{p},{p + 2},{p - 1},{p + 1},{10 + i}")
    return lines


def write(tmp_path: Path, lines: list[str], name: str = "TEST-USD_1h.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def with_line(line_no: int, text: str) -> list[str]:
    lines = good_lines()
    lines[line_no - 1] = text
    return lines


# The epoch second of row 57 in Arabic-Indic digits: Python's int() reads them, a CSV's number is ASCII.
OTHER_DIGITS = "".join(chr(0x660 + int(d)) for d in str((T0 + 55 * HOUR) // 1000))

BAD_ROW_57 = {
    "non-numeric close": (f"{iso(T0 + 55 * HOUR)},155,157,154,abc,65", "close is not a number: 'abc'"),
    "empty volume": (f"{iso(T0 + 55 * HOUR)},155,157,154,156,", "volume is not a number: ''"),
    "too few columns": (f"{iso(T0 + 55 * HOUR)},155,157", "expected 6 columns, found 3"),
    "too many columns": (f"{iso(T0 + 55 * HOUR)},155,157,154,156,65,1", "expected 6 columns, found 7"),
    "high below low": (f"{iso(T0 + 55 * HOUR)},155,150,154,152,65", "high 150 is below low 154"),
    "negative low": (f"{iso(T0 + 55 * HOUR)},155,157,-154,156,65", "low is negative: '-154'"),
    "negative volume": (f"{iso(T0 + 55 * HOUR)},155,157,154,156,-65", "volume is negative: '-65'"),
    "close above high": (f"{iso(T0 + 55 * HOUR)},155,157,154,158,65", "close 158 is outside low..high 154..157"),
    "not a finite number": (f"{iso(T0 + 55 * HOUR)},nan,157,154,156,65", "open is not a finite number: 'nan'"),
    "price above the bound": (f"{iso(T0 + 55 * HOUR)},155,1e13,154,156,65",
                              "high 1e13 is above 1e+12, the largest price ffe computes with"),
    "price near the largest float": (f"{iso(T0 + 55 * HOUR)},7.1e307,7.2e307,7.0e307,7.15e307,65",
                                     "open 7.1e307 is above 1e+12, the largest price ffe computes with"),
    "price below the bound": (f"{iso(T0 + 55 * HOUR)},155,157,1e-13,156,65",
                              "low 1e-13 is below 1e-12, the smallest price ffe computes with"),
    "volume above the bound": (f"{iso(T0 + 55 * HOUR)},155,157,154,156,1e25",
                               "volume 1e25 is above 1e+24, the largest volume ffe computes with"),
    "bad timestamp": ("2020-01-03T25:00:00Z,155,157,154,156,65", "bad timestamp: '2020-01-03T25:00:00Z'"),
    "duplicate timestamp": (f"{iso(T0 + 54 * HOUR)},155,157,154,156,65", "duplicate timestamp 2020-01-03T06:00:00Z"),
    "earlier timestamp": (f"{iso(T0 + 10 * HOUR)},155,157,154,156,65",
                          "timestamp 2020-01-01T10:00:00Z is earlier than the previous row's 2020-01-03T06:00:00Z"),
    "timestamp past the bound": ("9999-12-31T23:00:00Z,155,157,154,156,65",
                                 "timestamp '9999-12-31T23:00:00Z' is past 2099, the last year of the candle times "
                                 "ffe reads"),
    "timestamp before the bound": ("0001-01-01T00:00:00Z,155,157,154,156,65",
                                   "timestamp '0001-01-01T00:00:00Z' is before 1800, the first year of the candle "
                                   "times ffe reads"),
    "epoch number past the bound": ("99999999999,155,157,154,156,65",
                                    "timestamp '99999999999' is past 2099, the last year of the candle times ffe reads "
                                    + EPOCH_NOTE),
    "epoch nanoseconds": ("1577836800000000000,155,157,154,156,65",
                          "timestamp '1577836800000000000' is past 2099, the last year of the candle times ffe reads "
                          + EPOCH_NOTE),
    "epoch number of other digits": (f"{OTHER_DIGITS},155,157,154,156,65", f"bad timestamp: '{OTHER_DIGITS}'"),
    "underscores in a number": (f"{iso(T0 + 55 * HOUR)},1_55,157,154,156,65",
                                "open is not a plain decimal number: '1_55'"),
    "other digits in a number": (f"{iso(T0 + 55 * HOUR)},155,157,154,156,\u0666\u0665",
                                 "volume is not a plain decimal number: '\u0666\u0665'"),
    "full-width digits in a number": (f"{iso(T0 + 55 * HOUR)},155,157,154,\uff11\uff15\uff16,65",
                                      "close is not a plain decimal number: '\uff11\uff15\uff16'"),
    "a no-break space after a number": (f"{iso(T0 + 55 * HOUR)},155,157\u00a0,154,156,65",
                                        "high is not a plain decimal number: '157\\xa0'"),
    "a hexadecimal number": (f"{iso(T0 + 55 * HOUR)},155,157,154,156,0x41", "volume is not a number: '0x41'"),
    "a quote inside a field": (f'{iso(T0 + 55 * HOUR)},"155"5,157,154,156,65', QUOTE_TEXT_AFTER),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROW_57))
def test_malformed_row_57_names_file_and_line(tmp_path: Path, kind: str) -> None:
    row, reason = BAD_ROW_57[kind]
    path = write(tmp_path, with_line(57, row))
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:57: {reason}"
    assert info.value.line == 57
    assert "\n" not in str(info.value)


FIRST_MS = -5_364_662_400_000  # 1800-01-01T00:00:00Z


def test_times_at_the_bounds_load_and_one_past_them_is_refused_by_both_paths(tmp_path: Path) -> None:
    """Candle times are from 1800 to 2099 (bounds.py), the first and the last row checked on the fast path too."""
    lines = ["timestamp,open,high,low,close,volume", "1800-01-01T00:00:00Z,1,2,0.5,1,3",
             "2099-12-31T23:00:00Z,1,2,0.5,1,3"]
    series = load_csv(write(tmp_path, lines))
    assert series.ts == [FIRST_MS, 4_102_441_200_000]
    before = write(tmp_path, [lines[0], "1799-12-31T23:00:00Z,1,2,0.5,1,3"] + lines[1:], name="EARLY-USD_1h.csv")
    with pytest.raises(CsvError) as info:
        load_csv(before)
    assert str(info.value) == (f"{before}:2: timestamp '1799-12-31T23:00:00Z' is before 1800, the first year of "
                               "the candle times ffe reads")
    path = write(tmp_path, lines + ["2100-01-01T00:00:00Z,1,2,0.5,1,3"])
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == (f"{path}:4: timestamp '2100-01-01T00:00:00Z' is past 2099, the last year of the "
                               "candle times ffe reads")
    assert load_csv(path, lenient=True).skipped == 1


def history_lines(stamps: list[str]) -> list[str]:
    return ["Date,Open,High,Low,Close,Adj Close,Volume"] + [
        f"{t},{17 + i},{18 + i},{16 + i},{17.5 + i},{17.5 + i},{1000 + i}" for i, t in enumerate(stamps)]


DAYS = ["1800-01-01", "1899-12-30", "1950-01-03", "1966-10-31", "1968-06-14", "1969-11-30", "1969-12-31",
        "1970-01-01", "1970-01-02", "1973-03-05", "2023-12-29"]


def test_market_history_from_1800_loads_alike_as_dates_and_as_epoch_numbers_of_each_unit(tmp_path: Path) -> None:
    """An index's or a commodity's daily history goes back decades before 1970 (yfinance's ^GSPC from 1927): its
    times are negative epoch milliseconds, read the same from ISO dates on both paths and from epoch seconds,
    milliseconds and microseconds; none is mistaken for another unit, from 1800 through the 1960s, the days either
    side of 1970 included."""
    expected = [(date.fromisoformat(d).toordinal() - date(1970, 1, 1).toordinal()) * 86_400_000 for d in DAYS]
    path = write(tmp_path, history_lines(DAYS), name="SPX-USD_1d.csv")
    for lenient in (False, True):
        series = load_csv(path, lenient=lenient)
        assert series.ts == expected and series.skipped == 0
        assert series.close[0] == 17.5 and iso_of(series.ts[0]) == "1800-01-01T00:00:00Z"
    near_1970 = [-62 * DAY <= ms < 100_000_000_000 for ms in expected]  # the only days a unit could be mistaken
    for unit, per_ms in (("seconds", 0.001), ("milliseconds", 1), ("microseconds", 1000)):
        kept = [ms for ms, near in zip(expected, near_1970) if unit == "seconds" or not near]
        stamps = [str(int(ms * per_ms)) for ms in kept]
        path = write(tmp_path, history_lines(stamps), name=f"SPX-USD_1d_{unit}.csv")
        for lenient in (False, True):
            assert load_csv(path, lenient=lenient).ts == kept, (unit, lenient)


def test_an_epoch_number_before_1800_is_refused_saying_how_each_unit_is_told(tmp_path: Path) -> None:
    too_early = str(FIRST_MS * 1000 - 1000)  # a microsecond count just before 1800
    path = write(tmp_path, history_lines([too_early, "-5364662400000"]), name="EARLY-USD_1d.csv")
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == (f"{path}:2: timestamp '{too_early}' is before 1800, the first year of the candle "
                               f"times ffe reads {EPOCH_NOTE}")


@pytest.mark.parametrize("stamp", ["1_577_840_400", "".join(chr(0x660 + int(d)) for d in "1577840400")],
                         ids=["underscores", "other digits"])
def test_epoch_timestamps_are_ascii_digits_on_the_fast_path_too(tmp_path: Path, stamp: str) -> None:
    """Python's int() reads "1_577_840_400" and Arabic-Indic digits; a whole column of epoch numbers is read at C
    speed by it, so the column is checked to be plain ASCII digits first."""
    lines = ["timestamp,open,high,low,close,volume", "1577836800,1,2,0.5,1,3", f"{stamp},1,2,0.5,1,3",
             "1577844000,1,2,0.5,1,3"]
    path = write(tmp_path, lines)
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:3: bad timestamp: {stamp!r}"
    every = write(tmp_path, ["timestamp,open,high,low,close,volume"] + [
        f"{''.join(chr(0x660 + int(d)) for d in str(1577836800 + 3600 * i))},1,2,0.5,1,3" for i in range(3)],
        name="DIGITS-USD_1h.csv")
    with pytest.raises(CsvError, match=r"DIGITS-USD_1h\.csv:2: bad timestamp: "):
        load_csv(every)


def test_plain_decimal_numbers_load_with_spaces_around_them_on_both_paths(tmp_path: Path) -> None:
    """A number is ASCII digits with a sign, a decimal point and an exponent as needed; spaces or tabs around it
    are allowed, as around a timestamp or a header name."""
    lines = ["timestamp, open, high, low, close, volume", f"{iso(T0)}, 100, 102.5 ,99.,+1.01e2,\t3\t",
             f"{iso(T0 + HOUR)},.5e3,501,500,500.0,0"]
    path = write(tmp_path, lines)
    for lenient in (False, True):
        series = load_csv(path, lenient=lenient)
        assert list(series.candles()) == [Candle("TEST/USD", T0, 100.0, 102.5, 99.0, 101.0, 3.0),
                                          Candle("TEST/USD", T0 + HOUR, 500.0, 501.0, 500.0, 500.0, 0.0)]


def test_a_number_is_checked_on_the_fast_path_too_wherever_its_column_is(tmp_path: Path) -> None:
    """The whole-column conversion (float()) reads "1_000", other digits and a line break; the careful path says
    which row. A quoted field with a line break in it is named by the line its row begins on."""
    lines = ["volume,open,high,low,close,timestamp"] + [
        f"{10 + i},{100 + i},{102 + i},{99 + i},{101 + i},{iso(T0 + i * HOUR)}" for i in range(60)]
    lines[40] = lines[40].replace(",", ",1_0", 1)
    path = write(tmp_path, lines)
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:41: open is not a plain decimal number: '1_0139'"
    lines = good_lines()
    lines[49] = f'{iso(T0 + 48 * HOUR)},"148\n",150,147,149,58'
    path = write(tmp_path, lines, name="BREAK-USD_1h.csv")
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:50: open is not a plain decimal number: '148\\n'"


@pytest.mark.parametrize("lenient", [False, True])
def test_a_quote_never_closed_is_named_by_the_line_it_opens_on(tmp_path: Path, lenient: bool) -> None:
    """A stray quote on line 50 makes the rest of the file one field: the line where it opens is named (not the
    file's last line), and even a lenient read stops there, since the rows after it are no longer rows."""
    lines = good_lines()
    lines[49] = '"' + lines[49]
    path = write(tmp_path, lines)
    with pytest.raises(CsvError) as info:
        load_csv(path, lenient=lenient)
    assert str(info.value) == f"{path}:50: a quote opened on this line is not closed before the end of the file " \
                              "(line 100)"


@pytest.mark.parametrize("lenient", [False, True])
def test_a_quote_never_closed_in_a_long_file_is_named_by_its_line_not_read_as_one_bad_row(tmp_path: Path,
                                                                                           lenient: bool) -> None:
    """Past 131,072 characters a quoted field is more than the csv module holds: the rest of a long file after a
    stray quote is no one bad row to skip (a lenient read took it as one and dropped thousands of rows after it)."""
    lines = good_lines(3000)
    lines[62] = '"' + lines[62]
    path = write(tmp_path, lines)
    with pytest.raises(CsvError) as info:
        load_csv(path, lenient=lenient)
    assert str(info.value).startswith(f"{path}:63: a quote opened on this line is not closed "), str(info.value)


def test_a_lenient_read_does_not_skip_a_quoted_field_that_swallowed_the_lines_after_it(tmp_path: Path) -> None:
    """Two stray quotes 40 lines apart make those lines one field: skipped as one bad row, 40 rows would go without
    a word. It is an error even with --lenient, naming both lines; a bad row on one line is still skipped."""
    lines = good_lines()
    lines[9] = '"' + lines[9]
    lines[49] = lines[49] + '"'
    path = write(tmp_path, lines)
    with pytest.raises(CsvError) as info:
        load_csv(path, lenient=True)
    assert str(info.value).startswith(f"{path}:10: a quote opened on this line closes on line 50"), str(info.value)
    lines = good_lines()
    lines[9] = lines[9].replace(",", ',"x",', 1)
    series = load_csv(write(tmp_path, lines), lenient=True)
    assert series.skipped == 1 and len(series) == 98
    # The quote closed lines later with text after it (a row the csv module cannot read): the same.
    lines = good_lines()
    lines[10] = lines[10].replace(",", ',"', 1)
    lines[39] = lines[39] + '"x'
    with pytest.raises(CsvError) as info:
        load_csv(write(tmp_path, lines), lenient=True)
    assert str(info.value).startswith(f"{tmp_path / 'TEST-USD_1h.csv'}:11: a quote opened on this line closes on "
                                      "line 40"), str(info.value)


def test_prices_and_volumes_at_the_bounds_load(tmp_path: Path) -> None:
    """The bounds are inclusive: a file of prices from 1e-12 to 1e12 and a volume of 1e24 is candles."""
    lines = ["timestamp,open,high,low,close,volume", f"{iso(T0)},1e-12,1e-12,1e-12,1e-12,0",
             f"{iso(T0 + HOUR)},1,1e12,1e-12,1e12,1e24"]
    series = load_csv(write(tmp_path, lines))
    assert (series.low, series.high, series.volume) == ([1e-12, 1e-12], [1e-12, 1e12], [0.0, 1e24])


def test_a_whole_file_of_prices_near_the_largest_float_stops_at_its_first_row(tmp_path: Path) -> None:
    """Positive and finite, but their squares (a variance) overflow: refused at the first row, not in the
    indicators."""
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"{iso(T0 + i * HOUR)},7.1e307,7.2e307,7.0e307,7.15e307,250" for i in range(50)]
    path = write(tmp_path, lines)
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:2: open 7.1e307 is above 1e+12, the largest price ffe computes with"
    tiny = write(tmp_path, [lines[0]] + [f"{iso(T0 + i * HOUR)},3e-300,4e-300,2e-300,3e-300,1" for i in range(50)],
                 name="TINY-USD_1h.csv")
    with pytest.raises(CsvError, match=r"TINY-USD_1h\.csv:2: open 3e-300 is below 1e-12, the smallest price"):
        load_csv(tiny)


def test_a_row_too_long_and_a_later_one_too_short_are_not_taken_as_whole_rows(tmp_path: Path) -> None:
    """Together they hold as many fields as two good rows: the rows between them would be read shifted by one."""
    lines = with_line(57, f"{iso(T0 + 55 * HOUR)},155,157,154,156,65,1")
    lines[59] = f"{iso(T0 + 58 * HOUR)},158,160,157,159"
    path = write(tmp_path, lines)
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:57: expected 6 columns, found 7"
    series = load_csv(path, lenient=True)
    assert series.skipped == 2 and len(series) == 97


@pytest.mark.parametrize("kind", sorted(BAD_ROW_57))
def test_lenient_skips_and_counts_bad_rows(tmp_path: Path, kind: str) -> None:
    row, reason = BAD_ROW_57[kind]
    lines = with_line(57, row)
    lines[20 - 1] = lines[20 - 1].replace(",", ";")  # a second bad row, earlier in the file
    series = load_csv(write(tmp_path, lines), lenient=True)
    assert series.skipped == 2
    assert len(series) == 99 - 2
    assert series.skip_reasons == ["line 20: expected 6 columns, found 1", f"line 57: {reason}"]
    # The rows around the bad ones are all there, in order.
    assert T0 + 17 * HOUR in series.ts and T0 + 19 * HOUR in series.ts
    assert all(a < b for a, b in zip(series.ts, series.ts[1:]))


def test_lenient_keeps_only_the_first_few_reasons(tmp_path: Path) -> None:
    lines = good_lines()
    for k in range(10, 30):
        lines[k] = lines[k].replace(",", ";")
    series = load_csv(write(tmp_path, lines), lenient=True)
    assert series.skipped == 20
    assert len(series.skip_reasons) == 5
    assert series.skip_reasons[0].startswith("line 11: ")


def test_lenient_with_no_usable_rows_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, ["timestamp,open,high,low,close,volume", "x,1,1,1,1,1", "y,1,1,1,1,1"])
    with pytest.raises(CsvError, match=r"no usable rows: all 2 data rows are bad \(first: line 2: bad timestamp"):
        load_csv(path, lenient=True)


def test_missing_header_columns_are_named_on_line_1(tmp_path: Path) -> None:
    path = write(tmp_path, ["time,open,close,vol", f"{iso(T0)},1,1,1"])
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:1: missing columns: high, low (header has: time, open, close, vol)"


NO_HEADER = ("the first line is not a header (it holds numbers): add the header "
             "timestamp,open,high,low,close,volume")


def test_a_file_without_header_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, good_lines()[1:])
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:1: {NO_HEADER}"


@pytest.mark.parametrize("stamp", ["1577836800000", "1577836800000000"], ids=["milliseconds", "microseconds"])
def test_a_headerless_binance_dump_says_it_has_no_header_and_with_one_its_times_read(tmp_path: Path,
                                                                                      stamp: str) -> None:
    """Binance's public data (data.binance.vision) has no header row; its spot files count open times in
    microseconds since 2025 (16 digits), in milliseconds before. Its first row used to be read as a header: "duplicate
    column '7165.72'" (open and close alike) or "missing columns". Microseconds are read (by their size, as seconds
    and milliseconds are), down to the millisecond."""
    scale = 1000 if len(stamp) == 16 else 1
    rows = [f"{(T0 + i * HOUR) * scale},7165.72,7170.0,7160.0,7165.72,12.5,{(T0 + (i + 1) * HOUR) * scale - 1},"
            "89570.1,1000,6.2,44427.2,0" for i in range(30)]
    path = write(tmp_path, rows, name="BTC-USD_binance_dump.csv")
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:1: {NO_HEADER}"
    fixed = write(tmp_path, ["timestamp,open,high,low,close,volume,close_time,quote_volume,count,taker_base,"
                             "taker_quote,ignore"] + rows, name="BTC-USD_binance_header.csv")
    for lenient in (False, True):
        series = load_csv(fixed, lenient=lenient)
        assert series.ts == [T0 + i * HOUR for i in range(30)] and series.skipped == 0


def test_microseconds_not_whole_milliseconds_round_to_the_millisecond(tmp_path: Path) -> None:
    lines = ["timestamp,open,high,low,close,volume", f"{T0 * 1000 + 400},1,2,0.5,1,3",
             f"{(T0 + HOUR) * 1000 + 600},1,2,0.5,1,3"]
    assert load_csv(write(tmp_path, lines)).ts == [T0, T0 + HOUR + 1]


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "EMPTY_1h.csv"
    empty.write_text("")
    with pytest.raises(CsvError, match=r"EMPTY_1h\.csv:1: file is empty"):
        load_csv(empty)
    header_only = write(tmp_path, ["timestamp,open,high,low,close,volume"])
    with pytest.raises(CsvError, match=r":2: no data rows after the header"):
        load_csv(header_only)


def test_missing_file_is_a_csv_error(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match=r"nope\.csv: cannot read"):
        load_csv(tmp_path / "nope.csv")


def test_duplicate_header_column_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, ["timestamp,open,high,low,close,close,volume"])
    with pytest.raises(CsvError, match=r":1: duplicate column 'close'"):
        load_csv(path)


def test_aliases_column_order_case_and_extra_columns(tmp_path: Path) -> None:
    path = write(tmp_path, [
        "\ufeffVolume,Close,Trades,Low,High,Open,Date Time",
        f"5,101,17,99,102,100,{iso(T0)}",
        f"6,103,18,100,104,101,{iso(T0 + HOUR)}",
    ])
    series = load_csv(path)
    assert list(series.candles()) == [
        Candle("TEST/USD", T0, 100.0, 102.0, 99.0, 101.0, 5.0),
        Candle("TEST/USD", T0 + HOUR, 101.0, 104.0, 100.0, 103.0, 6.0),
    ]


def test_quoted_fields_and_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "Q_1h.csv"
    path.write_bytes(b'"time","o","h","l","c","v","note"\r\n'
                     b'"2020-01-01T00:00:00Z","1","2","0.5","1.5","3","a, b"\r\n'
                     b'"2020-01-01T01:00:00Z","1.5","2","1","1.25","4","c"\r\n')
    series = load_csv(path)
    assert series.ts == [T0, T0 + HOUR]
    assert series.close == [1.5, 1.25]


def test_spaces_around_quoted_fields_are_allowed_as_around_numbers(tmp_path: Path) -> None:
    """Spaces or tabs may stand around a field, quoted or not: after a closing quote (before the comma or the end of
    the line, the header's too) and before an opening one. A strict reader refused `"2020-01-01T00:00:00Z" ,1,...`
    and a header ending in a space after its last quote; with --lenient, no usable rows."""
    path_rows = tmp_path / "X-USD_sp.csv"
    path_rows.write_text('timestamp,open,high,low,close,volume\n' + "".join(
        f'"{iso(T0 + i * HOUR)}" ,1, "2" ,0.5,\t"1.5"\t,10 \n' for i in range(3)))
    header = tmp_path / "Y-USD_hdrsp.csv"
    header.write_text('"timestamp","open","high","low","close","volume" \n' + "".join(
        f"{iso(T0 + i * HOUR)},1,2,0.5,1.5,10\n" for i in range(2)))
    for lenient in (False, True):
        series = load_csv(path_rows, lenient=lenient)
        assert series.ts == [T0, T0 + HOUR, T0 + 2 * HOUR] and series.high == [2.0] * 3 and series.skipped == 0
        assert load_csv(header, lenient=lenient).ts == [T0, T0 + HOUR]


def test_a_quote_problem_says_what_to_change(tmp_path: Path) -> None:
    """Python csv's "',' expected after '\"'" tells a user nothing to do: the message says what to change, in the
    header too."""
    path = write(tmp_path, ['"timestamp"x,open,high,low,close,volume', f"{iso(T0)},1,2,0.5,1,3"])
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}:1: {QUOTE_TEXT_AFTER}"


@pytest.mark.parametrize("stamps", [
    ["1577836800", "1577840400", "1577844000"],  # epoch seconds
    ["1577836800000", "1577840400000", "1577844000000"],  # epoch milliseconds
    ["1577836800", "1577840400000", "1577844000.0"],  # mixed, decided per value by magnitude
    ["2020-01-01T00:00:00Z", "2020-01-01T01:00:00Z", "2020-01-01T02:00:00Z"],
    ["2020-01-01T00:00:00", "2020-01-01 01:00:00", "2020-01-01T02:00"],  # no offset: UTC
    ["2020-01-01T02:00:00+02:00", "2020-01-01T00:00:00-01:00", "2020-01-01T07:30:00+05:30"],
    ["2020-01-01T00:00:00.000Z", "2020-01-01T01:00:00.000+00:00", "2020-01-01T02:00:00.000000Z"],
])
def test_timestamp_formats(tmp_path: Path, stamps: list[str]) -> None:
    lines = ["timestamp,open,high,low,close,volume"] + [f"{s},1,2,0.5,1,3" for s in stamps]
    series = load_csv(write(tmp_path, lines))
    assert series.ts == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert series.timeframe_ms == HOUR


def test_date_only_timestamps(tmp_path: Path) -> None:
    lines = ["date,open,high,low,close,volume", "2020-01-01,1,2,0.5,1,3", "2020-01-02,1,2,0.5,1,3"]
    series = load_csv(write(tmp_path, lines))
    assert series.ts == [T0, T0 + 86_400_000]
    assert series.timeframe_ms == 86_400_000


def test_gaps_are_counted_and_reported(tmp_path: Path) -> None:
    lines = good_lines(20)
    del lines[5:8]  # rows 4, 5 and 6 (0-based data rows) missing: one gap of three bars
    del lines[10]  # data row 12: one more single-bar gap further on
    series = load_csv(write(tmp_path, lines))
    assert series.timeframe_ms == HOUR
    assert series.gaps == [(T0 + 3 * HOUR, T0 + 7 * HOUR), (T0 + 11 * HOUR, T0 + 13 * HOUR)]
    assert series.gap_count == 2
    assert series.missing_bars == 4
    assert "2 gaps (4 missing bars)" in series.summary()


def test_one_gap_of_one_bar_and_one_bad_row_are_said_in_the_singular(tmp_path: Path) -> None:
    lines = good_lines(20)
    del lines[5]  # one missing bar
    lines.append("not,a,candle,row,at,all")
    series = load_csv(write(tmp_path, lines), lenient=True)
    assert (series.gap_count, series.missing_bars, series.skipped) == (1, 1, 1)
    assert series.summary().endswith(", 1 gap (1 missing bar), 1 bad row skipped"), series.summary()


@pytest.mark.parametrize("stamp", ["1577854800.5", "2020-01-01T05:00:00.500Z", "2020-01-01T05:30:00Z"],
                         ids=["epoch-fraction", "iso-fraction", "half-hour"])
def test_a_candle_off_the_files_grid_is_a_bad_row(tmp_path: Path, stamp: str) -> None:
    """An hourly file whose row at 05:00 is stamped between the hours: its time is damaged, not a gap of no bar.
    The row is named (or skipped and counted with --lenient: the bar is then missing, a gap of one)."""
    lines = good_lines(20)
    lines[6] = lines[6].replace(iso(T0 + 5 * HOUR), stamp)
    path = write(tmp_path, lines)
    at = {"1577854800.5": "2020-01-01T05:00:00.500Z"}.get(stamp, stamp)
    with pytest.raises(CsvError) as info:
        load_csv(path)
    assert str(info.value) == (f"{path}:7: timestamp {at} is off the 1h grid of the candles either side of it "
                               "(2020-01-01T04:00:00Z and 2020-01-01T06:00:00Z): a damaged time?"), str(info.value)
    series = load_csv(path, lenient=True)
    assert series.skipped == 1 and len(series) == 19
    assert series.skip_reasons[0].startswith("line 7: timestamp "), series.skip_reasons
    assert series.gaps == [(T0 + 4 * HOUR, T0 + 6 * HOUR)] and series.missing_bars == 1


def test_monthly_candles_and_a_move_to_another_grid_after_a_gap_are_read_as_they_are(tmp_path: Path) -> None:
    """Steps of several lengths (calendar months) and a move to another grid after a gap (hourly candles at :30 from
    one day on) put no candle between two of one grid: read as they are."""
    months = [f"20{y}-{m:02d}-15" for y in range(20, 23) for m in range(1, 13)]
    monthly = load_csv(write(tmp_path, history_lines(months), name="SPX-USD_1mo.csv"))
    assert len(monthly) == 36 and monthly.skipped == 0
    lines = good_lines(20)
    moved = lines[:11] + [line.replace(":00:00Z", ":30:00Z", 1) for line in lines[13:]]
    shifted = load_csv(write(tmp_path, moved))
    assert len(shifted) == 18 and shifted.gaps == [(T0 + 9 * HOUR, T0 + 12 * HOUR + HOUR // 2)]


def test_a_step_longer_than_the_timeframe_that_misses_no_bar_is_no_gap() -> None:
    """Candles from elsewhere than a file (an exchange's) are not checked against a grid: a step of one and a half
    timeframes leaves no bar out, and is never reported as a gap of none."""
    ts = [T0, T0 + HOUR * 3 // 2, T0 + HOUR * 5 // 2, T0 + HOUR * 9 // 2]
    series = CandleSeries("X/Y", HOUR, ts, [1.0] * 4, [2.0] * 4, [0.5] * 4, [1.0] * 4, [3.0] * 4)
    assert series.gaps == [(T0 + HOUR * 5 // 2, T0 + HOUR * 9 // 2)] and series.missing_bars == 1


def test_sample_files_parse_with_their_real_gaps() -> None:
    btc = load_csv(BTC)
    eth = load_csv(ETH)
    assert btc.symbol == "BTC/USD" and eth.symbol == "ETH/USD"
    assert len(btc) == len(eth) == 35_058
    assert btc.timeframe_ms == eth.timeframe_ms == HOUR
    assert btc.ts[0] == T0
    assert iso(btc.ts[-1]) == "2023-12-31T23:00:00Z"
    # The sample files miss 6 hourly bars in 4 places (one of them a 3-hour hole on 2023-03-04).
    assert btc.gap_count == 4 and btc.missing_bars == 6
    assert (1_677_949_200_000, 1_677_963_600_000) in btc.gaps
    assert eth.gaps == btc.gaps
    assert btc.skipped == 0
    first = next(btc.candles())
    assert first == Candle("BTC/USD", T0, 7165.72, 7165.72, 7136.05, 7150.35, 250.84981195)


def test_fast_and_row_by_row_paths_agree_on_the_sample_file() -> None:
    fast = load_csv(BTC)
    careful = load_csv(BTC, lenient=True)  # lenient mode always reads row by row
    assert careful.skipped == 0
    for name in ("ts", "open", "high", "low", "close", "volume"):
        assert getattr(fast, name) == getattr(careful, name), name


def test_symbol_given_and_timeframe_override(tmp_path: Path) -> None:
    series = load_csv(write(tmp_path, good_lines(3)), symbol="FOO/BAR", timeframe="1m")
    assert series.symbol == "FOO/BAR"
    assert series.timeframe_ms == 60_000
    assert series.gap_count == 2  # hourly rows read as a 1m series: every step is a gap


def test_head_keeps_the_first_bars() -> None:
    series = load_csv(BTC).head(10)
    assert len(series) == 10
    assert series.ts[-1] == T0 + 9 * HOUR


def test_symbol_from_filename() -> None:
    assert symbol_from_filename("BTC-USD_1h_2020-2023.csv") == "BTC/USD"
    assert symbol_from_filename("/some/dir/ETH-USDT_5m.csv") == "ETH/USDT"
    assert symbol_from_filename("SOLUSDT.csv") == "SOLUSDT"
    assert symbol_from_filename("BTC-USD_1h_2020-2023.csv.gz") == "BTC/USD"
    assert symbol_from_filename("/some/dir/ETH-USDT.csv.gz") == "ETH/USDT"
    assert symbol_from_filename("SOLUSDT.gz") == "SOLUSDT"
    with pytest.raises(ValueError, match="cannot tell the symbol"):
        symbol_from_filename("_1h.csv")


def test_parse_symbol_arg(tmp_path: Path) -> None:
    assert parse_symbol_arg("XBT/EUR=data/btc.csv") == ("XBT/EUR", Path("data/btc.csv"))
    assert parse_symbol_arg("data/BTC-USD_1h.csv") == ("BTC/USD", Path("data/BTC-USD_1h.csv"))
    odd = tmp_path / "A=B_1h.csv"  # an existing file whose name holds "=" is a file, not SYMBOL=FILE
    odd.write_text("")
    assert parse_symbol_arg(str(odd)) == ("A=B", odd)
    with pytest.raises(ValueError, match="expected SYMBOL=FILE"):
        parse_symbol_arg("=x.csv")


# ---- compressed files ------------------------------------------------------------------------------------------


def write_gz(tmp_path: Path, lines: list[str], name: str = "TEST-USD_1h.csv.gz") -> Path:
    path = tmp_path / name
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_a_gzip_file_reads_like_the_plain_one(tmp_path: Path) -> None:
    plain = load_csv(write(tmp_path, good_lines()))
    packed = load_csv(write_gz(tmp_path, good_lines()))
    assert packed.symbol == "TEST/USD"
    for name in ("ts", "open", "high", "low", "close", "volume"):
        assert getattr(packed, name) == getattr(plain, name), name


def test_a_bad_row_in_a_gzip_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_gz(tmp_path, with_line(57, f"{iso(T0 + 55 * HOUR)},1,2,oops,1,1"))
    with pytest.raises(CsvError) as e:
        load_csv(path)
    assert str(e.value) == f"{path}:57: low is not a number: 'oops'"
    assert load_csv(path, lenient=True).skipped == 1


def test_a_damaged_gzip_file_is_a_csv_error(tmp_path: Path) -> None:
    whole = write_gz(tmp_path, good_lines(2000)).read_bytes()
    cut = tmp_path / "CUT-USD_1h.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CsvError) as e:
        load_csv(cut)
    assert str(e.value).startswith(f"{cut}: cannot decompress: ")
    plain = tmp_path / "PLAIN-USD_1h.csv.gz"
    plain.write_text("\n".join(good_lines()))
    with pytest.raises(CsvError) as e:
        load_csv(plain)
    assert str(e.value).startswith(f"{plain}: cannot decompress: ")


# ---- line length bound -----------------------------------------------------------------------------------------

HUGE = 48 * 1024 * 1024  # far beyond the bound, and far beyond the memory a bounded reader may use


def write_huge_line(path: Path, opener) -> None:
    """Six good rows, then line 8: a timestamp followed by HUGE bytes and no newline until its end."""
    block = b"9" * (1024 * 1024)
    with opener(path, "wb") as f:
        f.write(("\n".join(good_lines(6)) + "\n").encode())
        f.write(f"{iso(T0 + 6 * HOUR)},".encode())
        for _ in range(HUGE // len(block)):
            f.write(block)
        f.write(b",1,2,1,1\n")


@pytest.mark.parametrize("name, opener", [("HUGE-USD_1h.csv", open), ("HUGE-USD_1h.csv.gz", gzip.open)],
                         ids=["plain", "gzip"])
@pytest.mark.parametrize("lenient", [False, True])
def test_a_huge_line_stops_the_read_with_file_and_line_in_bounded_memory(tmp_path: Path, name: str, opener,
                                                                        lenient: bool) -> None:
    path = tmp_path / name
    write_huge_line(path, opener)
    tracemalloc.start()
    try:
        with pytest.raises(CsvError) as e:
            load_csv(path, lenient=lenient)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(e.value) == f"{path}:8: line is longer than {MAX_LINE_BYTES:,} bytes (not a CSV file of candles?)"
    assert peak < 8 * MAX_LINE_BYTES  # the read stops soon after the bound, never holding the whole line


def test_a_line_just_within_the_bound_is_read(tmp_path: Path) -> None:
    lines = good_lines(3)
    lines[0] += "," + "x" * (MAX_LINE_BYTES - len(lines[0]) - 1)  # a header exactly MAX_LINE_BYTES long
    lines[1:] = [row + ",1" for row in lines[1:]]
    series = load_csv(write(tmp_path, lines))
    assert len(series) == 3


def test_a_long_file_with_old_mac_line_ends_is_not_one_long_line(tmp_path: Path) -> None:
    path = tmp_path / "MAC-USD_1h.csv"
    path.write_bytes("\r".join(good_lines(3000)).encode() + b"\r")
    assert path.stat().st_size > 2 * MAX_LINE_BYTES
    assert len(load_csv(path)) == 3000


def test_a_header_with_both_date_and_time_is_refused_naming_both_columns(tmp_path: Path) -> None:
    path = write(tmp_path, ["Date,Time,Open,High,Low,Close,Volume", "2021-01-01,13:00:00,1,1,1,1,1",
                            "2021-01-01,14:00:00,1,1,1,1,1"])
    for lenient in (False, True):
        with pytest.raises(CsvError) as info:
            load_csv(path, lenient=lenient)
        said = str(info.value)
        assert said.startswith(f"{path}:1: ") and "'Date'" in said and "'Time'" in said, said


def test_a_timestamp_column_beside_date_and_time_is_the_one_read(tmp_path: Path) -> None:
    path = write(tmp_path, ["timestamp,date,time,open,high,low,close,volume",
                            "2021-01-01T13:00:00Z,2021-01-01,13:00:00,1,1,1,1,1",
                            "2021-01-01T14:00:00Z,2021-01-01,14:00:00,1,1,1,1,1"])
    assert [iso(ts) for ts in load_csv(path).ts] == ["2021-01-01T13:00:00Z", "2021-01-01T14:00:00Z"]
