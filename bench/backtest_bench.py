"""End-to-end backtest speed on the sample data (samples/*.csv.gz, read compressed as shipped): CSV parse to report,
through the whole default pipeline, at each record level, side by side with backtrader's SMA cross (bt_sma.py) on
the same files.

Every run is a whole process, timed from its start to its exit; the runs take turns (full, trades, summary,
full and trades again with the backtest cache filled, backtrader; three rounds) so a noisy machine slows them
alike, and the best of the three counts. The first three read the CSV files and compute their indicators and votes
(and fill a cache of their own, which they then throw away); the `cached` runs find them in the backtest cache
(datacache.py), as the runs of a sweep after its first do. The table gives bars per second, the ratio to
backtrader, wall and CPU seconds (the CPU of the record writer process included), megabytes of records left on disk
(the cache is no record: it is left out) and the peak resident set size of the largest process.

Then two instrumented runs (full and trades records, in this process) split the time per stage: feeds (CSV parse
and replay), indicators (computed once per series, loaded for each decision), votes, ensemble, gates, execution
(order path and fills), store and audit (the engine's side of the records: events, flushes), idle (stretches of
bars that cannot trade, booked in one step: their marks, closes and the decisions they weigh), and the engine's
own bookkeeping, with the run's wall and CPU seconds. The database writer process (sqlwriter.py) runs beside the
engine; its CPU time is printed too.
The instrumented run is slower than the plain one (timers cost a little on every call); its split is what counts.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ffe_engine import backtest as bt  # noqa: E402
from ffe_engine.audit import setup_logging  # noqa: E402
from ffe_engine.config import Settings  # noqa: E402

SAMPLES = ROOT / "samples"
FILES = [str(SAMPLES / "BTC-USD_1h_2020-2023.csv.gz"), str(SAMPLES / "ETH-USD_1h_2020-2023.csv.gz")]


def settings_in(tmp: str) -> Settings:
    return Settings().with_dirs(data_dir=Path(tmp) / "data", log_dir=Path(tmp) / "logs")


LEVELS = ("full", "trades", "summary")
CACHED = ("full", "trades")  # also run with the files' candles and indicators in the backtest cache (datacache.py)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def one_run(level: str, files: list[str], home: str | None) -> None:
    """A worker: one backtest at `level` in a temporary directory, or in `home` (whose backtest cache earlier runs
    filled); prints its report's figures and the bytes its records take (the cache left out: it is no record)."""
    setup_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_in(home or tmp)
        run_id = bt.new_run_id()
        cache = bt.data_cache(settings)
        report = asyncio.run(bt.run_backtest(settings, bt.load_files(files, cache=cache), run_id=run_id,
                                             records=level, cache=cache))
        written = sum(disk_bytes(d) for d in bt.run_dirs(settings, run_id) if d.exists())
        print(json.dumps({"bars": report["bars"], "trades": report["trades"], "return_pct": report["return_pct"],
                          "max_drawdown_pct": report["max_drawdown_pct"], "bytes": written}))


def timed_process(args: list[str]) -> dict:
    """Run a whole process; its wall time, CPU time (its children's included), peak RSS and what it printed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{err.decode(errors='replace')}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result.update(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mb=usage.ru_maxrss / 1024)
    return result


def compare(files: list[str], rounds: int, with_backtrader: bool, home: str) -> dict[str, dict]:
    """Each run `rounds` times, taking turns; the best of each. A run of each level reads the files and computes
    their indicators; a `cached` run finds them in the backtest cache of `home`, as a sweep's runs after the first
    do (one untimed run fills it first)."""
    runs: dict[str, list[dict]] = {}
    commands = {level: [sys.executable, __file__, "--one", level, *files] for level in LEVELS}
    for level in CACHED:
        commands[f"{level} cached"] = [sys.executable, __file__, "--one", level, "--home", home, *files]
    if with_backtrader:
        commands["backtrader"] = [sys.executable, str(ROOT / "bench" / "bt_sma.py"), *files]
    for level in CACHED:
        timed_process(commands[f"{level} cached"])
    for _ in range(rounds):
        for name, cmd in commands.items():
            runs.setdefault(name, []).append(timed_process(cmd))
    return {name: min(rs, key=lambda r: r["wall"]) for name, rs in runs.items()}


def minute_runs(bars: int) -> None:
    """Each record level once over `bars` generated 1-minute bars of one symbol: the memory bound."""
    from minute_data import write_minutes

    with tempfile.TemporaryDirectory() as tmp:
        path = write_minutes(Path(tmp) / "SIM-USD_1m.csv.gz", bars)
        best = {level: timed_process([sys.executable, __file__, "--one", level, str(path)]) for level in LEVELS}
    print_table(f"{bars:,} generated 1-minute bars, one run each (peak RSS must stay under 1 GB)", best)


def print_table(title: str, best: dict[str, dict]) -> None:
    ref = best.get("backtrader")
    print(title)
    print(f"  {'run':<19} {'bars/s':>10} {'x bt':>6} {'wall s':>7} {'CPU s':>7} {'MB':>8} {'B/bar':>7} {'RSS MB':>7}")
    for name, r in best.items():
        rate = r["bars"] / r["wall"]
        ratio = f"{rate / (ref['bars'] / ref['wall']):.2f}" if ref else "-"
        written = r.get("bytes")
        mb = f"{written / 1e6:.1f}" if written is not None else "-"
        per_bar = f"{written / r['bars']:.0f}" if written is not None else "-"
        label = name + " SMA" if name == "backtrader" else f"ffe {name}"
        print(f"  {label:<19} {rate:>10,.0f} {ratio:>6} {r['wall']:>7.2f} {r['cpu']:>7.2f} {mb:>8} {per_bar:>7} "
              f"{r['rss_mb']:>7.0f}")


class Timers:
    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.depth = 0  # nested timed calls are charged to the outermost stage only

    def wrap(self, owner, name: str, stage: str) -> None:
        fn = getattr(owner, name)
        timers = self
        if asyncio.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def timed(*a, **k):
                if timers.depth:
                    return await fn(*a, **k)
                timers.depth += 1
                t = time.perf_counter_ns()
                try:
                    return await fn(*a, **k)
                finally:
                    timers.ns[stage] = timers.ns.get(stage, 0) + time.perf_counter_ns() - t
                    timers.depth -= 1
        else:
            @functools.wraps(fn)
            def timed(*a, **k):
                if timers.depth:
                    return fn(*a, **k)
                timers.depth += 1
                t = time.perf_counter_ns()
                try:
                    return fn(*a, **k)
                finally:
                    timers.ns[stage] = timers.ns.get(stage, 0) + time.perf_counter_ns() - t
                    timers.depth -= 1
        setattr(owner, name, timed)


async def split_run(tmp: str, level: str) -> tuple[float, float, dict[str, int]]:
    from ffe_engine import batch, engine, ensemble, execution, indicators, market, risk, sqlwriter, store
    from ffe_engine.events import EventBus
    from ffe_engine.market import replay
    from ffe_engine.signals import breakout, mean_reversion, momentum, trend

    timers = Timers()
    timers.wrap(bt, "load_files", "feeds")
    # Indicators: computed once per series (batch.py) and loaded into the symbol's set for each decision.
    timers.wrap(indicators.IndicatorColumns, "__init__", "indicators")
    timers.wrap(indicators.IndicatorColumns, "load", "indicators")
    timers.wrap(indicators.IndicatorSet, "update", "indicators")  # the incremental path (not taken here)
    for mod, cls in ((trend, "TrendProvider"), (momentum, "MomentumProvider"),
                     (mean_reversion, "MeanReversionProvider"), (breakout, "BreakoutProvider")):
        timers.wrap(getattr(mod, cls), "vote", "votes")
        timers.wrap(getattr(mod, cls), "vote_columns", "votes")
    timers.wrap(batch.BarSignals, "votes", "votes")
    timers.wrap(ensemble.Ensemble, "decide", "ensemble")
    timers.wrap(risk.Gatekeeper, "evaluate", "gates")
    timers.wrap(risk, "size_entry", "gates")
    for name in ("submit", "poll", "_apply"):
        timers.wrap(execution.OrderPath, name, "execution")
    timers.wrap(engine.Engine, "_on_fill", "execution")
    for name in ("flush", "add_event", "add_gates"):
        timers.wrap(store.Store, name, "store")
    timers.wrap(sqlwriter.WriterProcess, "add_event", "store")  # a backtest store's event sink
    timers.wrap(EventBus, "publish", "store")
    timers.wrap(engine.Engine, "_persist_books", "store")
    # Stretches of bars that cannot trade, booked in one step (their closes, marks and the decisions they weigh).
    timers.wrap(engine.Engine, "_idle_stretch", "idle")
    timers.wrap(replay.ReplayFeed, "order", "feeds")
    timers.wrap(replay.ReplayFeed, "candle", "feeds")

    # The replay feed's iteration: time spent producing candles between the engine's bars.
    orig = replay.ReplayFeed.candles

    async def timed_candles(self):
        it = orig(self).__aiter__()
        while True:
            t = time.perf_counter_ns()
            try:
                c = await it.__anext__()
            except StopAsyncIteration:
                timers.ns["feeds"] = timers.ns.get("feeds", 0) + time.perf_counter_ns() - t
                return
            timers.ns["feeds"] = timers.ns.get("feeds", 0) + time.perf_counter_ns() - t
            yield c

    replay.ReplayFeed.candles = timed_candles
    t0 = time.perf_counter()
    c0 = time.process_time()
    series = bt.load_files(FILES)
    await bt.run_backtest(settings_in(tmp), series, records=level)
    return time.perf_counter() - t0, time.process_time() - c0, timers.ns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", choices=LEVELS, help=argparse.SUPPRESS)  # a worker process
    ap.add_argument("--home", help=argparse.SUPPRESS)  # a worker's data directory, its cache filled before
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--minutes", type=int, default=0, metavar="BARS",
                    help="also run this many generated 1-minute bars at each level (525600: a year)")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if args.one:
        one_run(args.one, args.files, args.home)
        return
    setup_logging("WARNING")  # the engine's own lines would interleave with the figures
    # ffe's modules compiled first, as an installed package's are (pip compiled backtrader's when it installed it):
    # where PYTHONDONTWRITEBYTECODE keeps Python from caching them, each worker (and its record writer) would
    # otherwise compile some sixty modules from source, about 0.1 s that no installed ffe spends.
    compileall.compile_dir(ROOT / "ffe_engine", quiet=1)
    files = args.files or FILES
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        import backtrader  # noqa: F401
        with_bt = True
    except ImportError:
        with_bt = False
        print("backtrader is not installed (pip install -e '.[bench]'): no reference run")
    with tempfile.TemporaryDirectory() as home:
        best = compare(files, args.rounds, with_bt, home)
    r = best["full"]
    bars = r["bars"]
    print(f"backtest, {len(files)} file(s): {bars:,} bars, {r['trades']} trades, "
          f"return {r['return_pct']:+.2f}%, max drawdown {r['max_drawdown_pct']:.2f}% (the same at every level)")
    print_table(f"whole processes, best of {args.rounds} (CPU: the process and its record writer)", best)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.minutes:
        minute_runs(args.minutes)
    for level in ("full", "trades"):
        split(level, bars)


def split(level: str, bars: int) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        elapsed, cpu, ns = asyncio.run(split_run(tmp, level))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    writer_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    total = elapsed * 1e9
    accounted = sum(ns.values())
    print(f"time per stage ({level} records, instrumented run in this process: {elapsed:.2f} s wall, "
          f"{cpu:.2f} s CPU):")
    for stage in ("feeds", "indicators", "votes", "ensemble", "gates", "execution", "store", "idle"):
        v = ns.get(stage, 0)
        print(f"  {stage:<11} {v / 1e9:6.2f} s  {100 * v / total:5.1f}%  {v / bars / 1000:6.2f} us/bar")
    rest = total - accounted
    print(f"  {'engine':<11} {rest / 1e9:6.2f} s  {100 * rest / total:5.1f}%  {rest / bars / 1000:6.2f} us/bar"
          "  (bar loop, marks, monitor, decision building, report)")
    print(f"  beside it: the database writer process, {writer_cpu:.2f} s of CPU on the other core "
          f"({writer_cpu * 1e6 / bars:.2f} us/bar: decision index rows, SQLite inserts)")

if __name__ == "__main__":
    main()
