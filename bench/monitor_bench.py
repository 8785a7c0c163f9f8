"""What the monitor costs the engine: backtest speed with the monitor on and off, and the kill switch's latency
with every alert channel configured and one of them hanging.

1. Backtest: the same generated market (two symbols of hourly candles, a seeded random walk written to CSV in a
   temporary directory) run through the whole pipeline, alternately without and with the monitor's event sinks
   (metrics counters and alert rules) on the bus and a /metrics rendering every second. Bars per second, median
   of the runs. (The loop's liveness stamp is part of the engine and in both.)
2. Kill switch: a headless-style engine (EngineHost, paper venue, real SQLite) with the four channels and the
   heartbeat pointed at receivers on 127.0.0.1, the Slack one never answering. Each run: re-arm, place open
   orders, halt, and time from the call to HALTED stored (the engine_state event, published once the state is
   committed) and to the halt's return (every cancel issued and journaled). Milliseconds.

    .venv/bin/python bench/monitor_bench.py [--runs 7] [--bars 20000] [--halts 20]

Not a test: the figures depend on the machine. The targets: within 3% of off; HALTED stored under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from ffe_engine import backtest as bt  # noqa: E402
from ffe_engine.audit import setup_logging  # noqa: E402
from ffe_engine.config import Settings  # noqa: E402
from ffe_engine.events import EngineStateChanged  # noqa: E402
from ffe_engine.metrics import EngineMetrics  # noqa: E402
from ffe_engine.monitor import WATCHED, Monitor  # noqa: E402
from receiver import Receiver  # noqa: E402


def write_market(tmp: Path, bars: int) -> list[str]:
    files = []
    for symbol, start, seed in (("BTC/USDT", 30_000.0, 1), ("ETH/USDT", 2_000.0, 2)):
        rng = random.Random(seed)
        price = start
        lines = ["timestamp,open,high,low,close,volume"]
        t0 = 1_600_000_000 - 1_600_000_000 % 3600
        for i in range(bars):
            o = price
            price = max(1.0, price * math.exp(rng.gauss(0, 0.01)))
            hi, lo = max(o, price) * (1 + abs(rng.gauss(0, 0.002))), min(o, price) * (1 - abs(rng.gauss(0, 0.002)))
            lines.append(f"{t0 + 3600 * i},{o:.2f},{hi:.2f},{lo:.2f},{price:.2f},{rng.uniform(1, 100):.4f}")
        path = tmp / f"{symbol.replace('/', '-')}.csv"
        path.write_text("\n".join(lines) + "\n")
        files.append(f"{symbol}={path}")
    return files


class Monitored:
    """Wraps the backtest's build_engine to keep the engine; with `sinks`, the monitor's sinks go on its bus (what
    EngineHost does in a live run) and its /metrics is rendered every second while the run lasts."""

    def __init__(self, sinks: bool) -> None:
        self.sinks = sinks
        self.engine = None
        self.metrics: EngineMetrics | None = None
        self.build = bt.build_engine

    def __call__(self, settings, **kw):
        engine = self.engine = self.build(settings, **kw)
        if self.sinks:
            monitor = Monitor(settings, engine, audit=None, store=None)  # no channel: nothing to deliver
            self.metrics = monitor.metrics
            kw["bus"].add_sink(monitor.sink, names=WATCHED)
        return engine


SINK_CPU: list[tuple[float, int, float]] = []  # per measured run: sinks' CPU seconds, events, engine CPU seconds
LAST_METRICS: list[EngineMetrics] = []  # the metrics of the last monitored run, scraped again afterwards


async def backtest_once(files: list[str], monitored: bool, measure_sinks: bool = False) -> tuple[float, float]:
    """Bars per second, and the engine process's CPU seconds (steadier than wall time on a shared machine; the
    record writer child process is the same either way)."""
    with tempfile.TemporaryDirectory(prefix="ffe-monbench-") as tmp:
        settings = Settings().with_dirs(data_dir=Path(tmp) / "data", log_dir=Path(tmp) / "logs")
        series = bt.load_files(files)
        original = bt.build_engine
        hook = Monitored(monitored)
        bt.build_engine = hook  # type: ignore[assignment]
        scraper = None
        if monitored:
            async def scrape() -> None:
                while True:
                    await asyncio.sleep(1.0)
                    if hook.metrics is not None:
                        hook.metrics.text()
            scraper = asyncio.ensure_future(scrape())
        cpu = time.process_time()
        try:
            report = await bt.run_backtest(settings, series)
            cpu = time.process_time() - cpu
        finally:
            bt.build_engine = original  # type: ignore[assignment]
            if scraper is not None:
                scraper.cancel()
        if hook.metrics is not None:
            LAST_METRICS[:] = [hook.metrics]
        if measure_sinks:
            sink_s, events = sink_cpu_seconds(Path(report["audit"]), settings, hook.engine)
            SINK_CPU.append((sink_s, events, cpu))
        return float(report["bars_per_s"]), cpu


def sink_cpu_seconds(audit_path: Path, settings: Settings, engine, repeat: int = 5) -> tuple[float, int]:
    """The CPU time the monitor's sinks take for one run's events: the run's audit records replayed through them
    (as the bus hands them over: a decision as its stamp and record, other events as objects), best of `repeat`.
    CPU time of this process alone, so other load on the machine does not count."""
    import orjson

    from ffe_engine.events import EVENT_TYPES, _Stamp

    from ffe_engine.records import read_lines

    items = []
    lines = read_lines(audit_path) if audit_path.suffix == ".zst" else audit_path.read_bytes().splitlines()
    for line in lines:
        rec = orjson.loads(line)
        name = rec["event"]
        if name == "decision":
            items.append((_Stamp(name, rec["seq"], 0.0), line))
        else:
            cls = EVENT_TYPES[name]
            fields = {k: v for k, v in rec.items() if k not in ("ts", "seq", "event", "prev")}
            items.append((cls(**fields), line))
    best = float("inf")
    for _ in range(repeat):
        sink = Monitor(settings, engine, audit=None, store=None).sink
        t = time.process_time()
        for ev, line in items:
            sink(ev, line)
        best = min(best, time.process_time() - t)
    return best, len(items)


async def backtest_bench(runs: int, bars: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ffe-monbench-data-") as tmp:
        files = write_market(Path(tmp), bars)
        off: list[tuple[float, float]] = []
        on: list[tuple[float, float]] = []
        await backtest_once(files, False)  # warm the caches
        for n in range(runs):
            # Pairs, the order swapped every round: a machine that gets busier or quieter during the bench
            # slows both halves of a pair alike, and neither half always goes first.
            if n % 2:
                on.append(await backtest_once(files, True))
                off.append(await backtest_once(files, False, measure_sinks=n < 4))
            else:
                off.append(await backtest_once(files, False, measure_sinks=n < 4))
                on.append(await backtest_once(files, True))
        print(f"backtest, {2 * bars} bars, {runs} pairs of runs (monitor off / on, order swapped each pair):")
        for name, runs_ in (("monitor off", off), ("monitor on ", on)):
            print(f"  {name}  median {statistics.median(r[0] for r in runs_):8.0f} bars/s   engine CPU median "
                  f"{statistics.median(r[1] for r in runs_):6.2f} s   (bars/s: {', '.join(f'{r[0]:.0f}' for r in runs_)})")
        speed = statistics.median(b[0] / a[0] for a, b in zip(off, on)) - 1.0
        cpu = statistics.median(b[1] / a[1] for a, b in zip(off, on)) - 1.0
        print(f"  on vs off    bars/s {100.0 * speed:+.1f}%, engine CPU {100.0 * cpu:+.1f}% (median of the pairs; "
              "wall time moves with the machine's other load)")
        share = statistics.median(sink_s / engine_s for sink_s, _, engine_s in SINK_CPU)
        sink_s, events, _ = min(SINK_CPU)
        print(f"  the monitor's sink replayed on a run's {events} events: {1000 * sink_s:.1f} ms of CPU "
              f"({1e6 * sink_s / (2 * bars):.2f} us per bar), {100.0 * share:.2f}% of the run's engine CPU")
        scrape_s = scrape_cpu_seconds()
        print(f"  one /metrics scrape: {1000 * scrape_s:.2f} ms of CPU ({100.0 * scrape_s:.2f}% of a second: the "
              "share of one core a scrape every second takes)")
        calls, observe_s = venue_timing_cpu_seconds()
        run_s = statistics.median(2 * bars / r[0] for r in on)
        engine_s = statistics.median(r[1] for r in off)
        total = sink_s + calls * observe_s + run_s * scrape_s
        print(f"  venue call timings: {calls} calls x {1e6 * observe_s:.2f} us")
        print(f"  all the monitor's work in a run (sink + venue timings + a scrape a second): {1000 * total:.1f} ms "
              f"of CPU, {100.0 * total / engine_s:.2f}% of the engine's {engine_s:.2f} s (target: within 3%)")


def venue_timing_cpu_seconds(repeat: int = 100_000) -> tuple[int, float]:
    """How many venue calls the last monitored run timed, and the CPU seconds one timing takes."""
    metrics = LAST_METRICS[-1]
    calls = sum(t.n for t in metrics.venue_timings.values())  # one venue in a backtest
    observe = metrics.observe_venue("bench")  # after the run and its scrape: an extra venue changes neither
    t = time.process_time()
    for _ in range(repeat):
        observe(0.003, None)
    return calls, (time.process_time() - t) / repeat


def scrape_cpu_seconds(repeat: int = 200) -> float:
    """CPU seconds of one /metrics rendering of an engine that has run (best of `repeat`)."""
    metrics = LAST_METRICS[-1]
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        metrics.text()
        best = min(best, time.process_time() - t)
    return best


async def killswitch_bench(halts: int) -> None:
    from conftest import make_settings
    from ffe_engine.host import EngineHost

    receivers = [await Receiver().start() for _ in range(5)]
    hook, slack, discord, tg, beat = receivers
    slack.hang = True
    tg.telegram = True
    with tempfile.TemporaryDirectory(prefix="ffe-monbench-kill-") as tmp:
        settings = make_settings(
            Path(tmp), market={"speed": 0.2, "seed": 7},
            risk={"max_open_positions": 50, "max_orders_per_minute": 10_000, "max_daily_trades": 10_000,
                  "max_concentration_pct": 100.0, "max_correlation": 1.0},
            alerts={"webhook_url": hook.url + "/h", "slack_url": slack.url + "/s", "discord_url": discord.url + "/d",
                    "telegram_token": "1:bench-token", "telegram_chat_id": "1", "telegram_api": tg.url,
                    "heartbeat_url": beat.url + "/b", "heartbeat_s": 1.0, "timeout_s": 30.0,
                    "window_s": 0.001})  # no rate limit: every halt raises alerts to every channel
        stored, returned = [], []
        host = await EngineHost.open(settings, log_stream=io.StringIO())
        try:
            engine = host.engine
            run = asyncio.ensure_future(engine.run())
            sub = host.bus.subscribe(maxlen=100_000)
            while engine.bars < 2:
                await asyncio.sleep(0.02)
            for _ in range(halts):
                if engine.state.value != "RUNNING":
                    await engine.resume(by="bench", confirm=True)
                for symbol, qty in (("BTC/USDT", 0.002), ("ETH/USDT", 0.04)):
                    res = await engine.operator_order(symbol, "buy", qty, by="bench")
                    if not res["accepted"]:
                        raise SystemExit(f"monitor_bench: order refused: {res['reason']}")
                sub.drain()
                t0 = time.time()
                await engine.halt(reason="bench", by="bench")
                t1 = time.time()
                halted = [e for e in sub.drain() if isinstance(e, EngineStateChanged) and e.state == "HALTED"]
                stored.append((halted[0].ts - t0) * 1000.0)
                returned.append((t1 - t0) * 1000.0)
                await asyncio.sleep(0.2)  # let the alerts go out (or hang) between presses
            channels = engine.snapshot()["monitor"]["channels"]
            engine.request_stop()
            await run
        finally:
            await host.close()
        print(f"kill switch with 4 channels + heartbeat configured, slack hanging, {halts} halts, 2 open orders each:")
        print(f"  HALTED stored          median {statistics.median(stored):6.1f} ms   max {max(stored):6.1f} ms "
              "(target < 50 ms)")
        print(f"  halt returned          median {statistics.median(returned):6.1f} ms   max {max(returned):6.1f} ms")
        print("  channels: " + ", ".join(f"{n} sent {c['sent']} pending {c['pending']}" for n, c in channels.items()))
    for r in receivers:
        r.hang = False
        await r.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="pairs of backtests, monitor off and on")
    ap.add_argument("--bars", type=int, default=20_000, help="bars per symbol in the backtest")
    ap.add_argument("--halts", type=int, default=20)
    ap.add_argument("--only", choices=("backtest", "killswitch"), default=None)
    args = ap.parse_args()
    setup_logging("WARNING", stream=io.StringIO())  # the figures, not the engines' log lines
    if args.only != "killswitch":
        asyncio.run(backtest_bench(args.runs, args.bars))
    if args.only != "backtest":
        asyncio.run(killswitch_bench(args.halts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
