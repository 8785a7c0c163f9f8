"""The backtest cache (datacache.py): what it gives back is what reading the file and computing the indicators and
votes give, bit for bit; an entry that is damaged, or was made from another file, other parameters or other code,
is never used; the cache stays within its size; and a run that cannot write it runs all the same."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import stat
import sys
import threading
from pathlib import Path

import pytest

from conftest import BTC_CSV, ETH_CSV, ffe_env, make_settings, run_ffe, sample_head
from ffe_engine import backtest as bt
from ffe_engine import batch, datacache
from ffe_engine.indicators import IndicatorColumns
from ffe_engine.kernel import providers_for
from ffe_engine.market.csvdata import CandleSeries, CsvError, load_csv
from ffe_engine.signals.trend import TrendProvider

CANDLES = ("ts", "open", "high", "low", "close", "volume")


def same_series(a: CandleSeries, b: CandleSeries) -> None:
    for name in CANDLES:
        left, right = getattr(a, name), getattr(b, name)
        assert [type(x) for x in left[:3]] == [type(x) for x in right[:3]]
        assert left == right, name
    assert (a.symbol, a.path, a.timeframe_ms, a.gaps, a.skipped, a.skip_reasons) == \
        (b.symbol, b.path, b.timeframe_ms, b.gaps, b.skipped, b.skip_reasons)


def same_signals(a: batch.BarSignals, b: batch.BarSignals) -> None:
    assert list(a.by_symbol) == list(b.by_symbol) and a.every_decision == b.every_decision
    for symbol, left in a.by_symbol.items():
        right = b.by_symbol[symbol]
        assert left.warm_from == right.warm_from and left.codes == right.codes
        for name in IndicatorColumns.FIELDS:
            x, y = left.columns.columns[name], right.columns.columns[name]
            if name in CANDLES:
                assert list(x) == list(y), name
            else:  # bit for bit, NaN (not yet set) included
                assert x.tobytes() == y.tobytes(), name
        assert [(n, c, f.tobytes()) for n, c, f in left.votes] == [(n, c, f.tobytes()) for n, c, f in right.votes]


def entries(root: Path) -> list[Path]:
    return sorted(root.glob("*.bin"))


def test_candles_before_1970_through_the_cache_are_the_files(tmp_path: Path) -> None:
    """Negative epoch milliseconds (daily history from 1950) are kept and given back as they were read."""
    path = tmp_path / "SPX-USD_1d.csv"
    path.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n" + "".join(
        f"{day},{17 + i % 7},{18 + i % 7},{16 + i % 7},{17.5 + i % 7},{17.5 + i % 7},{1000 + i}\n"
        for i, day in enumerate(f"19{y}-{m:02d}-15" for y in range(50, 75) for m in range(1, 13))))
    direct = load_csv(path)
    assert direct.ts[0] < 0 < direct.ts[-1]
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    same_series(cache.series(path, "SPX/USD"), direct)
    cache.wait()
    again = datacache.DataCache(tmp_path / "cache", 1 << 30)
    same_series(again.series(path, "SPX/USD"), direct)
    assert again.hits == 1


def test_candles_through_the_cache_are_the_files(tmp_path: Path) -> None:
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    direct = load_csv(BTC_CSV, symbol="BTC/USD")
    first = cache.series(BTC_CSV, "BTC/USD")
    cache.wait()
    assert (cache.hits, cache.misses) == (0, 1) and len(entries(cache.root)) == 1
    again = datacache.DataCache(tmp_path / "cache", 1 << 30).series(BTC_CSV, "BTC/USD")
    same_series(first, direct)
    same_series(again, direct)
    assert again.digest == first.digest != ""
    # The symbol and path are the caller's, whatever run cached the file.
    other = cache.series(BTC_CSV, "XBT/USD")
    assert other.symbol == "XBT/USD" and cache.hits == 1


def test_skipped_rows_are_kept_and_lenient_is_its_own_entry(tmp_path: Path) -> None:
    lines = sample_head(ETH_CSV, 60)
    lines[10] = lines[10].replace(",", ",x", 1)  # a bad open
    path = tmp_path / "ETH-USD_1h_bad.csv"
    path.write_text("".join(lines))
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(Exception) as strict:
        cache.series(path, "ETH/USD")
    assert "ETH-USD_1h_bad.csv:11" in str(strict.value)
    direct = load_csv(path, symbol="ETH/USD", lenient=True)
    assert direct.skipped == 1
    cache.series(path, "ETH/USD", lenient=True)
    cache.wait()
    same_series(datacache.DataCache(cache.root, 1 << 30).series(path, "ETH/USD", lenient=True), direct)
    with pytest.raises(Exception):  # a lenient entry never answers a strict read
        datacache.DataCache(cache.root, 1 << 30).series(path, "ETH/USD")


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "BTC-USD_1h.csv"
    lines = sample_head(BTC_CSV, 200)
    path.write_text("".join(lines))
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    assert len(cache.series(path, "BTC/USD")) == 200
    cache.wait()
    path.write_text("".join(lines[:151]))
    shorter = datacache.DataCache(cache.root, 1 << 30)
    assert len(shorter.series(path, "BTC/USD")) == 150 and shorter.misses == 1


def test_the_same_bytes_read_otherwise_are_not_the_same_entry(tmp_path: Path) -> None:
    """A file is read by its name (gzip when it ends in .gz): the same bytes under a name read otherwise give what
    load_csv gives them (here its error), not the candles cached under the other name."""
    gz = tmp_path / "ETH-USD_1h.csv.gz"
    with gzip.open(gz, "wt", newline="") as f:
        f.writelines(sample_head(ETH_CSV, 300))
    plain = tmp_path / "ETH-USD_1h.csv"
    shutil.copy(gz, plain)
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    assert len(cache.series(gz, "ETH/USD")) == 300
    cache.wait()
    with pytest.raises(CsvError) as direct:
        load_csv(plain, symbol="ETH/USD")
    with pytest.raises(CsvError) as cached:
        datacache.DataCache(cache.root, 1 << 30).series(plain, "ETH/USD")
    assert str(cached.value) == str(direct.value)


def test_another_version_of_the_csv_reader_reads_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The candles are what the CSV reader made of the bytes: another version of it (the same file with one byte
    more) reads the file again, as another version of the indicators computes them again."""
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    cache.series(ETH_CSV, "ETH/USD")
    cache.wait()
    reader = sys.modules[load_csv.__module__]
    source = tmp_path / "csvdata.py"
    shutil.copy(reader.__file__, source)
    source.write_text(source.read_text() + "\n")
    monkeypatch.setattr(reader, "__file__", str(source))
    again = datacache.DataCache(cache.root, 1 << 30)
    same_series(again.series(ETH_CSV, "ETH/USD"), load_csv(ETH_CSV, symbol="ETH/USD"))
    assert (again.hits, again.misses) == (0, 1)


def test_another_version_of_the_candle_bounds_reads_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounds of a candle's prices and volume (market/bounds.py) are part of the reader: candles cached under
    other bounds are read again, and checked against these."""
    import importlib

    bounds = importlib.import_module("ffe_engine.market.bounds")
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    cache.series(ETH_CSV, "ETH/USD")
    cache.wait()
    source = tmp_path / "bounds.py"
    shutil.copy(bounds.__file__, source)
    source.write_text(source.read_text() + "\n")
    monkeypatch.setattr(bounds, "__file__", str(source))
    again = datacache.DataCache(cache.root, 1 << 30)
    same_series(again.series(ETH_CSV, "ETH/USD"), load_csv(ETH_CSV, symbol="ETH/USD"))
    assert (again.hits, again.misses) == (0, 1)


def test_prices_beyond_the_bounds_are_refused_through_the_cache_as_by_load_csv_and_never_kept(tmp_path: Path) -> None:
    lines = sample_head(ETH_CSV, 60)
    ts = lines[30].split(",")[0]
    lines[30] = f"{ts},7.1e307,7.2e307,7.0e307,7.15e307,5\n"
    path = tmp_path / "ETH-USD_1h_huge.csv"
    path.write_text("".join(lines))
    with pytest.raises(CsvError) as direct:
        load_csv(path, symbol="ETH/USD")
    assert f"{path.name}:31: open 7.1e307 is above" in str(direct.value)
    for _ in range(2):
        cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
        with pytest.raises(CsvError) as cached:
            cache.series(path, "ETH/USD")
        cache.wait()
        assert str(cached.value) == str(direct.value) and not entries(cache.root)
    cache.series(path, "ETH/USD", lenient=True)
    cache.wait()
    kept = datacache.DataCache(cache.root, 1 << 30).series(path, "ETH/USD", lenient=True)
    assert kept.skipped == 1 and len(kept) == 59 and max(kept.high) < 1e12


def test_a_pipe_is_read_as_without_the_cache(tmp_path: Path) -> None:
    """`ffe backtest ETH/USD=<(zcat ...)`: a pipe can be read once. The cache leaves it to load_csv, which reads
    its candles, as without the cache (hashing it first would leave nothing to read)."""
    text = "".join(sample_head(ETH_CSV, 300)).encode()
    read, write = os.pipe()

    def feed() -> None:
        with os.fdopen(write, "wb") as f:
            f.write(text)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
        series = bt.load_files([f"ETH/USD=/dev/fd/{read}"], cache=cache)
        cache.wait()
    finally:
        writer.join()
        os.close(read)
    assert len(series["ETH/USD"]) == 300 and not entries(cache.root)


def signals_both_ways(tmp_path: Path, every_decision: bool) -> tuple[batch.BarSignals, datacache.DataCache]:
    settings = make_settings(tmp_path)
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    series = {"BTC/USD": cache.series(BTC_CSV, "BTC/USD"), "ETH/USD": cache.series(ETH_CSV, "ETH/USD")}
    cache.wait()
    providers = providers_for(settings)
    computed = batch.precompute(series, providers, every_decision=every_decision)
    assert computed is not None
    first = cache.signals(series, providers, every_decision=every_decision)
    cache.wait()
    assert first is not None
    same_signals(first, computed)
    fresh = datacache.DataCache(cache.root, 1 << 30)
    series = {"BTC/USD": fresh.series(BTC_CSV, "BTC/USD"), "ETH/USD": fresh.series(ETH_CSV, "ETH/USD")}
    fresh.wait()
    cached = fresh.signals(series, providers, every_decision=every_decision)
    assert cached is not None and fresh.hits == 4 and fresh.misses == 0
    same_signals(cached, computed)
    return cached, fresh


@pytest.mark.parametrize("every_decision", [False, True])
def test_indicators_and_votes_from_the_cache_are_the_computed_ones(tmp_path: Path, every_decision: bool) -> None:
    cached, _ = signals_both_ways(tmp_path, every_decision)
    # What the engine reads of them: the loaded indicators of any bar, warming bars included.
    from ffe_engine.indicators import IndicatorSet

    s = cached.by_symbol["ETH/USD"]
    for i in (0, 5, s.warm_from - 1, s.warm_from, 20_000):
        got, want = IndicatorSet(), IndicatorSet()
        s.columns.load(got, i)
        computed = IndicatorColumns(*(s.columns.columns[name] for name in CANDLES))
        computed.load(want, i)
        assert [getattr(got, f) for f in (*IndicatorColumns.FIELDS, "bars", "warm")] == \
            [getattr(want, f) for f in (*IndicatorColumns.FIELDS, "bars", "warm")]


def test_other_provider_parameters_or_code_compute_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cache = signals_both_ways(tmp_path, False)
    series = {"BTC/USD": cache.series(BTC_CSV, "BTC/USD")}
    cache.wait()
    settings = make_settings(tmp_path)
    providers = [TrendProvider(min_spread=0.5) if p.name == "trend" else p for p in providers_for(settings)]
    hits = cache.hits
    got = cache.signals(series, providers, every_decision=False)
    cache.wait()
    assert cache.hits == hits, "another provider parameter must not find the entry"
    want = batch.precompute(series, providers, every_decision=False)
    assert got is not None and want is not None
    same_signals(got, want)
    # Another version of the code that computes them: the same file with one byte more.
    source = tmp_path / "indicators.py"
    shutil.copy(datacache.indicators.__file__, source)
    source.write_text(source.read_text() + "\n")
    monkeypatch.setattr(datacache.indicators, "__file__", str(source))
    hits = cache.hits
    cache.signals(series, providers_for(settings), every_decision=False)
    cache.wait()
    assert cache.hits == hits
    # Another Python (its arithmetic may differ, `sum` of floats did in 3.12): computed afresh too.
    monkeypatch.undo()
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")
    hits = cache.hits
    cache.signals(series, providers_for(settings), every_decision=False)
    cache.wait()
    assert cache.hits == hits


def eth_entry(tmp_path: Path) -> tuple[datacache.DataCache, CandleSeries, Path]:
    """A cache holding ETH's sample file, its candles as read without the cache, and the cache's one entry."""
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    want = load_csv(ETH_CSV, symbol="ETH/USD")
    cache.series(ETH_CSV, "ETH/USD")
    cache.wait()
    (entry,) = entries(cache.root)
    return cache, want, entry


@pytest.mark.parametrize("damage", ["payload", "block", "truncated", "header", "empty", "other_key"])
def test_a_damaged_entry_is_never_used(tmp_path: Path, damage: str) -> None:
    cache, want, entry = eth_entry(tmp_path)
    blob = bytearray(entry.read_bytes())
    if damage == "payload":  # one bit of one price
        blob[-1000] ^= 0x10
    elif damage == "block":  # a disk block of the arrays read back as zeros
        blob[-20_000:-20_000 + 4096] = bytes(4096)
    elif damage == "truncated":
        del blob[len(blob) // 2:]
    elif damage == "header":
        blob[len(datacache.MAGIC) + 10] ^= 0x01
    elif damage == "empty":
        blob = bytearray()
    else:  # another file's entry under this one's name
        other = datacache.DataCache(tmp_path / "other", 1 << 30)
        other.series(BTC_CSV, "ETH/USD")
        other.wait()
        blob = bytearray(entries(other.root)[0].read_bytes())
    entry.write_bytes(bytes(blob))
    again = datacache.DataCache(cache.root, 1 << 30)
    same_series(again.series(ETH_CSV, "ETH/USD"), want)
    again.wait()
    assert (again.hits, again.misses) == (0, 1)
    # Written again whole: the next run finds it.
    last = datacache.DataCache(cache.root, 1 << 30)
    same_series(last.series(ETH_CSV, "ETH/USD"), want)
    assert last.hits == 1


def rewritten_header(entry: Path, change) -> None:
    """The entry with its header (the JSON after the magic and its length) changed by `change`, its arrays as they
    were."""
    blob = entry.read_bytes()
    start = len(datacache.MAGIC)
    size = int.from_bytes(blob[start:start + 4], "big")
    header = json.loads(blob[start + 4:start + 4 + size])
    change(header)
    text = json.dumps(header).encode()
    entry.write_bytes(datacache.MAGIC + len(text).to_bytes(4, "big") + text + blob[start + 4 + size:])


def test_a_damaged_header_is_never_used(tmp_path: Path) -> None:
    """The header is part of the entry: one bit of its timeframe, or an array count far beyond the file (a foreign
    writer's), leaves a miss, never other candles or a failed run."""
    cache, want, entry = eth_entry(tmp_path)
    blob = bytearray(entry.read_bytes())
    at = blob.index(b'"timeframe_ms": 3600000') + len(b'"timeframe_ms": ')
    blob[at] ^= 0x01  # 3600000 -> 2600000: still a number
    entry.write_bytes(bytes(blob))
    again = datacache.DataCache(cache.root, 1 << 30)
    same_series(again.series(ETH_CSV, "ETH/USD"), want)
    again.wait()
    assert (again.hits, again.misses) == (0, 1)

    def huge(header: dict) -> None:
        header["arrays"][0][2] = 10 ** 17

    rewritten_header(entry, huge)
    last = datacache.DataCache(cache.root, 1 << 30)
    same_series(last.series(ETH_CSV, "ETH/USD"), want)
    assert (last.hits, last.misses) == (0, 1)


def test_a_damaged_array_name_in_a_header_computes_afresh(tmp_path: Path) -> None:
    """One bit of a provider's name in the header of an indicators-and-votes entry: computed afresh, not a run that
    fails on the name it cannot find."""
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    series = {"ETH/USD": cache.series(ETH_CSV, "ETH/USD")}
    providers = providers_for(make_settings(tmp_path))
    cache.signals(series, providers, every_decision=False)
    cache.wait()
    (entry,) = [p for p in entries(cache.root) if b'"codes:trend"' in p.read_bytes()]
    blob = bytearray(entry.read_bytes())
    blob[blob.index(b'"codes:trend"') + len(b'"codes:t')] ^= 0x01  # trend -> tsend
    entry.write_bytes(bytes(blob))
    again = datacache.DataCache(cache.root, 1 << 30)
    got = again.signals({"ETH/USD": again.series(ETH_CSV, "ETH/USD")}, providers, every_decision=False)
    again.wait()
    want = batch.precompute(series, providers, every_decision=False)
    assert got is not None and want is not None
    same_signals(got, want)
    assert again.misses == 1


def test_the_cache_keeps_within_its_size_least_recently_used_out_first(tmp_path: Path) -> None:
    files = []
    for n in range(4):
        path = tmp_path / f"F{n}-USD_1h.csv"
        path.write_text("".join(sample_head(BTC_CSV, 300 + n)))
        files.append(path)
    one = datacache.DataCache(tmp_path / "probe", 1 << 30)
    one.series(files[0], "F0/USD")
    one.wait()
    size = entries(one.root)[0].stat().st_size
    cache = datacache.DataCache(tmp_path / "cache", int(size * 3.5))
    for n in range(3):
        cache.series(files[n], "X/USD")
        cache.wait()
    assert len(entries(cache.root)) == 3
    cache.series(files[0], "X/USD")  # used again: now the most recent
    cache.wait()
    cache.series(files[3], "X/USD")  # a fourth: the least recently used (files[1]) goes
    cache.wait()
    assert len(entries(cache.root)) == 3
    hits = cache.hits
    cache.series(files[0], "X/USD")
    cache.series(files[2], "X/USD")
    cache.wait()
    assert cache.hits == hits + 2
    cache.series(files[1], "X/USD")
    cache.wait()
    assert cache.misses == 5


def test_a_load_or_run_that_fails_leaves_no_entry_half_written(tmp_path: Path) -> None:
    """Files of two timeframes are refused after both were read: the entries of what was read are whole when the
    refusal comes (nothing is still being written in a directory the caller may remove at once), and so are they
    when a run is refused at its start."""
    hourly = tmp_path / "A-USD_1h.csv"
    hourly.write_text("".join(sample_head(BTC_CSV, 50)))
    daily = tmp_path / "B-USD_1d.csv"
    lines = sample_head(ETH_CSV, 50 * 24)
    daily.write_text(lines[0] + "".join(lines[1::24]))
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(Exception, match="must share one timeframe"):
        bt.load_files([str(hourly), str(daily)], cache=cache)
    assert len(entries(cache.root)) == 2 and not list(cache.root.glob(".*.tmp"))
    settings = make_settings(tmp_path, backtest={"records": "summary"})
    run_cache = bt.data_cache(settings)
    series = bt.load_files([str(hourly)], cache=run_cache)
    with pytest.raises(Exception, match="--records"):
        asyncio.run(bt.run_backtest(settings, series, records="everything", cache=run_cache))
    assert len(entries(run_cache.root)) == 1 and not list(run_cache.root.glob(".*.tmp"))


def test_what_a_killed_writer_left_is_removed_once_an_hour_old(tmp_path: Path) -> None:
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    cache.root.mkdir()
    old, fresh = cache.root / ".abc.bin.123.456.tmp", cache.root / ".def.bin.123.789.tmp"
    old.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 100)
    hour_ago = cache.clock.wall() - datacache.STALE_WRITE_S - 1
    os.utime(old, (hour_ago, hour_ago))
    cache.series(ETH_CSV, "ETH/USD")
    cache.wait()
    assert not old.exists() and fresh.exists() and len(entries(cache.root)) == 1


def test_a_backtest_reads_through_the_cache_and_reports_the_same(tmp_path: Path) -> None:
    """Two `ffe backtest` runs of the same files: the second finds both files and their indicators and votes in
    the data directory's cache (private to the user), and its report is the first's."""
    for src, name in ((BTC_CSV, "BTC-USD_1h.csv"), (ETH_CSV, "ETH-USD_1h.csv")):
        (tmp_path / name).write_text("".join(sample_head(src, 3000)))
    reports = []
    for n in range(2):
        proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "ETH-USD_1h.csv", "--records", "trades",
                       "--report", f"r{n}.json")
        assert proc.returncode == 0, proc.stderr
        reports.append(json.loads((tmp_path / f"r{n}.json").read_text()))
    root = tmp_path / "data" / "cache"
    assert len(entries(root)) == 4  # two files' candles, two series' indicators and votes
    assert stat.S_IMODE(root.stat().st_mode) == stat.S_IMODE(root.parent.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in entries(root)} == {0o600}
    assert reports[0]["results_sha256"] == reports[1]["results_sha256"]
    assert reports[0]["trades"] == reports[1]["trades"] > 0
    # Every entry damaged: the third run computes afresh, with the same report.
    for p in entries(root):
        p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8)
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "ETH-USD_1h.csv", "--records", "trades",
                   "--report", "r2.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["results_sha256"] == reports[0]["results_sha256"]


def test_no_cache_when_its_size_is_zero_or_it_cannot_be_written(tmp_path: Path) -> None:
    path = tmp_path / "ETH-USD_1h.csv.gz"
    with gzip.open(path, "wt", newline="") as f:
        f.writelines(sample_head(ETH_CSV, 1500))
    settings = make_settings(tmp_path, backtest={"cache_mb": 0, "records": "summary"})
    assert bt.data_cache(settings) is None
    want = asyncio.run(bt.run_backtest(settings, bt.load_files([str(path)], cache=bt.data_cache(settings))))
    assert not (settings.data_dir / "cache").exists()
    # A cache that cannot be written (a file where its directory would be): the run goes on, the same.
    settings = make_settings(tmp_path, backtest={"records": "summary"})
    root = settings.data_dir / "cache"
    root.parent.mkdir(parents=True)
    root.write_text("not a directory")
    cache = bt.data_cache(settings)
    got = asyncio.run(bt.run_backtest(settings, bt.load_files([str(path)], cache=cache), cache=cache))
    assert got["results_sha256"] == want["results_sha256"]
    assert root.read_text() == "not a directory"


def test_a_run_holds_the_cache_to_its_limit_from_its_start_and_a_limit_of_zero_empties_it(tmp_path: Path) -> None:
    """`backtest.cache_mb` lowered since the entries were kept: the next run, though it finds every entry it needs
    (and so writes none), leaves no more than the new limit; 0 leaves none."""
    for src, name in ((BTC_CSV, "BTC-USD_1h.csv"), (ETH_CSV, "ETH-USD_1h.csv")):
        (tmp_path / name).write_text("".join(sample_head(src, 3000)))
    args = ("backtest", "BTC-USD_1h.csv", "ETH-USD_1h.csv", "--records", "summary")
    root = tmp_path / "data" / "cache"
    proc = run_ffe(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    sizes = sorted(p.stat().st_size for p in entries(root))
    assert len(sizes) == 4
    limit_mb = (sum(sizes) - 1) / 1024 / 1024  # one byte less than what is there
    proc = run_ffe(tmp_path, *args, env=ffe_env(FFE_BACKTEST__CACHE_MB=f"{limit_mb:.6f}"))
    assert proc.returncode == 0, proc.stderr
    left = [p.stat().st_size for p in entries(root)]
    assert 0 < len(left) < 4 and sum(left) <= limit_mb * 1024 * 1024, (left, sizes)
    proc = run_ffe(tmp_path, *args, env=ffe_env(FFE_BACKTEST__CACHE_MB="0"))
    assert proc.returncode == 0, proc.stderr
    assert entries(root) == []


def test_the_cache_leaves_the_room_below_disk_free_min_mb_to_the_runs_records(tmp_path: Path) -> None:
    """Less free on the file system than `monitor.disk_free_min_mb` (where DISK_LOW begins): the entries there are
    removed as a run starts and none is written, so that the runs' own records find the room (a cache that filled
    a small disk made every later run fail for a full disk). The runs' results are the same."""
    for src, name in ((BTC_CSV, "BTC-USD_1h.csv"), (ETH_CSV, "ETH-USD_1h.csv")):
        (tmp_path / name).write_text("".join(sample_head(src, 3000)))
    args = ("backtest", "BTC-USD_1h.csv", "ETH-USD_1h.csv", "--records", "trades")
    root = tmp_path / "data" / "cache"
    proc = run_ffe(tmp_path, *args, "--report", "r0.json")
    assert proc.returncode == 0, proc.stderr
    assert len(entries(root)) == 4
    more_than_free = shutil.disk_usage(tmp_path).free / 1e6 * 10
    low = ffe_env(FFE_MONITOR__DISK_FREE_MIN_MB=f"{more_than_free:.0f}")
    for n in (1, 2):  # the entries removed; then, from an empty cache, none written
        proc = run_ffe(tmp_path, *args, "--report", f"r{n}.json", env=low)
        assert proc.returncode == 0, proc.stderr
        assert entries(root) == []
        assert json.loads((tmp_path / f"r{n}.json").read_text())["results_sha256"] == \
            json.loads((tmp_path / "r0.json").read_text())["results_sha256"]


def test_an_entry_that_is_no_file_is_not_waited_on(tmp_path: Path) -> None:
    """A FIFO where an entry was (the cache is only a shortcut): the run computes afresh instead of waiting on it
    for ever, and writes the entry back as a file."""
    cache, want, entry = eth_entry(tmp_path)
    entry.unlink()
    os.mkfifo(entry)
    again = datacache.DataCache(cache.root, 1 << 30)
    got: list[CandleSeries] = []
    reader = threading.Thread(target=lambda: got.append(again.series(ETH_CSV, "ETH/USD")), daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # let the waiting open end, then fail
        os.close(os.open(entry, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("the cache waited on a FIFO at an entry's name")
    same_series(got[0], want)
    again.wait()
    assert (again.hits, again.misses) == (0, 1)
    assert stat.S_ISREG(entry.stat().st_mode)


def test_a_file_system_with_nothing_free_keeps_no_entry(tmp_path: Path) -> None:
    """Nothing free at all (0 bytes) is less than the room to keep: every entry goes as a run starts."""
    cache = datacache.DataCache(tmp_path / "cache", 1 << 30)
    cache.series(BTC_CSV, "BTC/USD")
    cache.wait()
    assert len(entries(cache.root)) == 1

    class Full(datacache.DataCache):
        def _free(self) -> int | None:  # the file system's answer on a full disk
            return 0

    Full(cache.root, 1 << 30, keep_free=20_000_000).prune()
    assert entries(cache.root) == []
