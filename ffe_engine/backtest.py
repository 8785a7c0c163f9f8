"""Backtest: replay CSV candles through the same pipeline (same engine, gates, order path, paper venue) at full
speed, into a database and audit file of the run's own, then report.

What is written is the run's record level (`backtest.records`, `ffe backtest --records`):
- `full`: every event, every decision with its votes, gates and sizing (what `ffe audit show` tells);
- `trades`: orders, fills, closed trades, positions, the equity at every bar, weight changes, and the number of
  decisions each gate refused; no per-bar decision records;
- `summary`: the report only: no database or audit file is left behind.
The run itself is the same at every level: the same decisions are made (with the same ids), so the orders, fills,
trades, equity and weights are the same, bit for bit.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import batch, fmt, reach
from .clock import RunClock, format_timeframe
from .config import Settings, is_symbol
from .datacache import DataCache, cache_for
from . import records as compact
from .backtest_report import build_report
from .backtest_runs import REPORT_NAME, HeldFolders  # the report beside a kept run's database, without the curve
from .engine import EngineOptions
from .errors import StartError, storage_failure
from .events import EventBus
from .kernel import build_engine, paper_venue, providers_for
from .market.csvdata import CandleSeries, CsvError, load_csv, parse_symbol_arg
from .market.replay import ReplayFeed
from .redact import Redactor
from .sqlwriter import MEMORY
from .store import BACKTEST_ADAPTIVE_KEY, BACKTEST_RECORDS_KEY, Store

FLUSH_EVERY = 5000
RECORD_LEVELS = ("full", "trades", "summary")
AUDIT_NAME = "audit.jsonl.zst"
PRIVATE = 0o077  # the umask of a run, as of a live engine (host.py)


def load_files(args: list[str], lenient: bool = False, cache: DataCache | None = None) -> dict[str, CandleSeries]:
    """The candles of each `[SYMBOL=]FILE` argument; through `cache` (data_cache) when given. Refused, it waits for
    the cache's entries of the files read so far (no write goes on past the refusal)."""
    try:
        return _load_files(args, lenient, cache)
    except BaseException:
        if cache is not None:
            cache.wait()
        raise


def _load_files(args: list[str], lenient: bool, cache: DataCache | None) -> dict[str, CandleSeries]:
    # Every argument's symbol checked before any file is read.
    wanted: dict[str, Path] = {}
    for arg in args:
        symbol, path = parse_symbol_arg(arg)
        if not reach.exists(path):  # said before a symbol its name gives wrong
            raise CsvError(path, None, "cannot read: No such file")
        if reach.is_dir(path):
            raise CsvError(path, None, "is a directory, not a CSV file")
        _check_symbol(symbol, path)
        if symbol in wanted:
            raise StartError(f"{path}: symbol {symbol} is given twice")
        wanted[symbol] = path
    series: dict[str, CandleSeries] = {}
    for symbol, path in wanted.items():
        if cache is not None:
            loaded = cache.series(path, symbol, lenient=lenient)
        else:
            loaded = load_csv(path, symbol=symbol, lenient=lenient)
        if len(loaded) < 2:
            skipped = (f"; {fmt.counted(loaded.skipped, 'bad row')} skipped (--lenient); first: "
                       f"{'; '.join(loaded.skip_reasons)}" if loaded.skipped else "")
            raise CsvError(path, None, f"{len(loaded)} candle: too few candles to infer the timeframe (a backtest "
                                       f"needs at least 2){skipped}")
        series[symbol] = loaded
    loaded_series = list(series.values())
    for first, other in zip(loaded_series, loaded_series[1:]):
        if other.timeframe_ms != first.timeframe_ms:
            raise StartError(f"{first.path} holds {format_timeframe(first.timeframe_ms)} candles and {other.path} "
                             f"{format_timeframe(other.timeframe_ms)}: the files of a backtest must share one "
                             "timeframe")
    return series


def _check_symbol(symbol: str, path: object) -> None:
    """A backtest trades BASE/QUOTE: without a quote currency it would have no cash to buy with."""
    if not is_symbol(symbol):
        raise StartError(f"{path}: {symbol!r} is not a BASE/QUOTE symbol such as 'BTC/USD': name the file "
                         "BASE-QUOTE_... (BTC-USD_1h.csv) or give BASE/QUOTE=FILE")


def data_cache(settings: Settings) -> DataCache | None:
    """Where backtests keep the candles they read and the indicators and votes computed from them between runs
    (datacache.py); None when `backtest.cache_mb` is 0."""
    return cache_for(settings.data_dir, settings.backtest.cache_mb, settings.monitor.disk_free_min_mb)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_dirs(settings: Settings, run_id: str) -> tuple[Path, Path]:
    return settings.data_dir / "backtests" / run_id, settings.log_dir / "backtests" / run_id


async def run_backtest(settings: Settings, series: dict[str, CandleSeries], *, run_id: str | None = None,
                       records: str | None = None, whole_series: bool = True,
                       cache: DataCache | None = None) -> dict[str, Any]:
    """Run the backtest and return its report. `records` overrides the configured record level. With
    `whole_series` False the indicators and votes are computed bar by bar, as the live engine computes them, not
    once per series: the run is the same, only slower. The run's folders and files are made private to the user
    (0700, 0600), as the live records are, whatever umask ffe was started with; the writer process inherits it.
    `cache`: the backtest cache the series were read through (data_cache), whose entries still being written it
    waits for when the run ends; by default the settings' own."""
    umask = os.umask(PRIVATE)
    cache = cache or data_cache(settings)
    held = HeldFolders()  # the run's folders, held to its end: no --clean removes a held run (backtest_runs.py)
    try:
        return await _run_backtest(settings, series, run_id=run_id, records=records, whole_series=whole_series,
                                   cache=cache, held=held)
    finally:
        held.release()
        os.umask(umask)
        if cache is not None:
            cache.wait()  # the entries written while the run went on, however it ended


async def _run_backtest(settings: Settings, series: dict[str, CandleSeries], *, run_id: str | None,
                        records: str | None, whole_series: bool, cache: DataCache | None,
                        held: HeldFolders) -> dict[str, Any]:
    t0 = time.perf_counter()
    records = records or settings.backtest.records
    if records not in RECORD_LEVELS:
        raise StartError(f"--records must be one of {', '.join(RECORD_LEVELS)}, got {records!r}")
    # The symbols of a bar are gated one after the other (an entry of the first counts against the next's open
    # positions, concentration and correlation): in one fixed order, sorted by symbol, so that the run does not
    # depend on the order its files were given in.
    series = {symbol: series[symbol] for symbol in sorted(series)}
    symbols = list(series)
    for symbol, s in series.items():
        _check_symbol(symbol, s.path or symbol)
    quotes = {s.partition("/")[2] for s in symbols}
    if len(quotes) != 1:
        raise StartError(f"backtest symbols must share one quote currency, got {', '.join(sorted(quotes))}")
    tfs = {s.timeframe_ms for s in series.values()}
    timeframe = min(tfs)
    run_id = run_id or new_run_id()
    data_dir, log_dir = run_dirs(settings, run_id)
    engine_settings = settings.model_copy(update={
        "engine": settings.engine.model_copy(update={"symbols": symbols, "approval": "auto"})})
    # The store's writer process writes the database and the audit file, from the same records. A full run keeps
    # its event records compact in the database and its audit file compressed (records.py): a few hundred bytes
    # per bar, not kilobytes. A trades run has a database only, with what its tables tell (orders, fills, trades,
    # positions, provider scores) and the equity curve, weight history and refusal counts, packed tightly at the
    # end. A summary run keeps its database in the writer's memory: the order path journals as always, and nothing
    # reaches the disk.
    full = records == "full"
    kept = records != "summary"
    db_path: Path | str = data_dir / "ffe.db" if kept else MEMORY
    audit_path = log_dir / AUDIT_NAME if full else None
    # Providers that cannot be built refuse the run before its folders are made.
    providers = providers_for(engine_settings)
    held.make(([data_dir] if kept else []) + ([log_dir] if full else []))
    try:
        store, signals = await _open_run(series, providers, db_path, audit_path, whole_series, full, cache)
    except Exception:
        # Nothing ran: a folder left would be listed as a run interrupted. An interrupt (^C) keeps it, as said.
        held.discard()
        raise
    # The writer process chains the records (chain.py), on the other core: a hash per record is a few percent of
    # the engine's time.
    store.conn.set_options(compact=True, events_table=full, gate_rows=full, vacuum=records == "trades", chain=full)
    if kept:  # what the records are, wherever the run's folders are moved (ffe doctor)
        await store.put_kv(BACKTEST_RECORDS_KEY, records, 0.0)
        await store.put_kv(BACKTEST_ADAPTIVE_KEY, settings.ensemble.adaptive, 0.0)  # what `ffe report` shows
    if full:  # built whole when the run is closed: full pages, and no index to keep up during the run
        await store.defer_decision_indexes()
    redactor = Redactor(settings.secrets())
    clock = RunClock()
    bus = EventBus(clock, redactor=redactor, chain=False)
    weight_history: list[list[Any]] = []  # [market time ms, weights, reason] of each change

    def weights_changed(ev: Any, line: bytes | None) -> None:
        weight_history.append([clock.now_ms(), ev.weights, ev.reason])

    if full:
        bus.add_sink(store.add_event)
    elif kept:
        # Routed the `weights` events only: the bus makes no audit line for an event no sink takes.
        bus.add_sink(weights_changed, names=("weights",))
    feed = ReplayFeed(series, clock, speed=0.0)
    venue = paper_venue(settings, symbols, quote=quotes.pop())
    options = EngineOptions.for_backtest(flush_every=FLUSH_EVERY, adaptive=settings.ensemble.adaptive,
                                         decision_records=records == "full")
    engine = build_engine(engine_settings, feed=feed, venue=venue, store=store, bus=bus, clock=clock,
                          options=options, timeframe_ms=timeframe, providers=providers)
    engine.signals = signals
    # Everything built so far lives to the end of the run: keep the collector from walking it again and again.
    # The run itself makes no reference cycles (a full run over the shared data leaves none to collect; a test
    # checks a shorter one), so the collector is only a backstop here, at a rare threshold. What is frozen is not
    # collected first (a full collection walks every object the process holds, for the few cycles the start left):
    # unfrozen after the run, they are the collector's again.
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(1_000_000, 1000, 1000)
    try:
        await engine.run()
        report = build_report(engine, series, timeframe)
        if kept:
            # The whole curve, one equity per bar close, and what the gates refused (the report thins the curve).
            await store.put_kv("equity_curve", compact.packed_value(equity_columns(engine.equity_curve)), 0.0)
            await store.put_kv("gate_refusals", engine.refusals, 0.0)
            if not full:  # a full run has them as `weights` events
                await store.put_kv("weight_history", compact.packed_value(weight_history), 0.0)
        # The last bar closes the books: an open position is valued at the last price.
        report.update(run_id=run_id, records=records, database=str(data_dir / "ffe.db") if kept else None,
                      audit=str(log_dir / AUDIT_NAME) if full else None,
                      elapsed_s=round(time.perf_counter() - t0, 3))
        report["bars_per_s"] = round(report["bars"] / report["elapsed_s"], 1) if report["elapsed_s"] else None
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        await store.close()
    if kept:
        # Written once the records are closed: a run folder without it is a run that did not finish.
        path = data_dir / REPORT_NAME
        try:
            path.write_text(json.dumps({k: v for k, v in report.items() if k != "equity_curve"}, indent=1))
        except OSError as exc:
            raise storage_failure(path, exc) from None
    return report


async def _open_run(series: dict[str, CandleSeries], providers: list[Any], db_path: Path | str,
                    audit_path: Path | None, whole_series: bool, full: bool,
                    cache: DataCache | None) -> tuple[Store, Any]:
    """The run's store, and the signals computed ahead (None: bar by bar)."""
    # The writer process first: its interpreter comes up on the other core while this one computes what depends
    # on the market data alone, once per series (batch.py: indicators and vote actions).
    writer = Store.backtest_writer(db_path, audit_path)
    try:
        if not whole_series:
            signals = None
        elif cache is not None:
            signals = cache.signals(series, providers, every_decision=full)
        else:
            signals = batch.precompute(series, providers, every_decision=full)
        return await Store.open(db_path, backtest=True, audit_path=audit_path, writer=writer), signals
    except BaseException:
        await writer.close()  # at most once: a store that failed to open has closed it already
        raise


def equity_columns(curve: list[tuple[int, float]]) -> dict[str, Any]:
    """The equity curve as it is stored: the first bar's time, the steps between bar times (nearly all alike, so they
    pack to almost nothing), and the equity at each bar close, exact."""
    ts = [t for t, _ in curve]
    return {"ts0": ts[0] if ts else None, "steps": [b - a for a, b in zip(ts, ts[1:])],
            "equity": [eq for _, eq in curve]}
