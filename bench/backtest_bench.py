"""End-to-end backtest speed on the sample data (samples/*.csv.gz, read compressed as shipped): CSV parse to report,
through the whole default pipeline.

Prints bars per second for the plain run (the figure the target is about), then a second, instrumented run that
splits the time per stage: feeds (CSV parse and replay), indicators, votes, ensemble, gates, execution (order
path and fills), store and audit (the engine's side of the records: events, flushes), and the engine's own
bookkeeping. The database writer process (sqlwriter.py) runs beside the engine; its CPU time is printed too.
The instrumented run is slower than the plain one (timers cost a little on every call); its split is what counts.
"""

from __future__ import annotations

import asyncio
import functools
import resource
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


async def plain_run(tmp: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    series = bt.load_files(FILES)
    report = await bt.run_backtest(settings_in(tmp), series)
    return time.perf_counter() - t0, report


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


async def split_run(tmp: str) -> tuple[float, dict[str, int]]:
    from ffe_engine import engine, ensemble, execution, indicators, market, risk, sqlwriter, store
    from ffe_engine.events import EventBus
    from ffe_engine.market import replay
    from ffe_engine.signals import breakout, mean_reversion, momentum, trend

    timers = Timers()
    timers.wrap(bt, "load_files", "feeds")
    timers.wrap(indicators.IndicatorSet, "update", "indicators")
    for mod, cls in ((trend, "TrendProvider"), (momentum, "MomentumProvider"),
                     (mean_reversion, "MeanReversionProvider"), (breakout, "BreakoutProvider")):
        timers.wrap(getattr(mod, cls), "vote", "votes")
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
    series = bt.load_files(FILES)
    await bt.run_backtest(settings_in(tmp), series)
    return time.perf_counter() - t0, timers.ns


def main() -> None:
    setup_logging("WARNING")  # the engine's own lines would interleave with the figures
    runs = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, report = asyncio.run(plain_run(tmp))
            runs.append(elapsed)
    best = min(runs)
    bars = report["bars"]
    print(f"backtest, both sample files: {bars:,} bars, {report['trades']} trades, "
          f"return {report['return_pct']:+.2f}%, max drawdown {report['max_drawdown_pct']:.2f}%")
    print(f"end to end (CSV parse to report): best {best:.2f} s = {bars / best:,.0f} bars/s "
          f"(runs: {', '.join(f'{r:.2f}' for r in runs)} s; target 20,000 bars/s)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        elapsed, ns = asyncio.run(split_run(tmp))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    writer_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    total = elapsed * 1e9
    accounted = sum(ns.values())
    print(f"time per stage (instrumented run, {elapsed:.2f} s):")
    for stage in ("feeds", "indicators", "votes", "ensemble", "gates", "execution", "store"):
        v = ns.get(stage, 0)
        print(f"  {stage:<11} {v / 1e9:6.2f} s  {100 * v / total:5.1f}%  {v / bars / 1000:6.2f} us/bar")
    rest = total - accounted
    print(f"  {'engine':<11} {rest / 1e9:6.2f} s  {100 * rest / total:5.1f}%  {rest / bars / 1000:6.2f} us/bar"
          "  (bar loop, marks, monitor, decision building)")
    print(f"  beside it: the database writer process, {writer_cpu:.2f} s of CPU on the other core "
          f"({writer_cpu * 1e6 / bars:.2f} us/bar: decision index rows, SQLite inserts)")


if __name__ == "__main__":
    main()
