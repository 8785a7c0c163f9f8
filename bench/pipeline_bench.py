"""Per-bar cost of the judgement pipeline: IndicatorSet.update + the four built-in votes + Ensemble.decide.

Reads the sample BTC hourly file (samples/BTC-USD_1h_2020-2023.csv.gz), parses it once outside the timed
part, then replays every bar several times and prints bars per second and microseconds per bar for each stage
(best of the repeats), plus how often the default ensemble would act (confidence >= 0.55).

    .venv/bin/python bench/pipeline_bench.py [CSV] [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ffe_engine.ensemble import Ensemble  # noqa: E402
from ffe_engine.indicators import IndicatorSet  # noqa: E402
from ffe_engine.market.csvdata import load_csv  # noqa: E402
from ffe_engine.model import Action, Candle  # noqa: E402
from ffe_engine.signals import make_providers  # noqa: E402

DEFAULT_CSV = ROOT / "samples" / "BTC-USD_1h_2020-2023.csv.gz"
PROVIDERS = ["trend", "momentum", "mean_reversion", "breakout"]


def load(path: Path) -> list[Candle]:
    return list(load_csv(path, symbol="BTC/USD").candles())


def run_indicators(candles: list[Candle]) -> float:
    ind = IndicatorSet("BTC/USD")
    update = ind.update
    t0 = time.perf_counter()
    for c in candles:
        update(c)
    return time.perf_counter() - t0


def run_votes(candles: list[Candle]) -> float:
    ind = IndicatorSet("BTC/USD")
    providers = make_providers(PROVIDERS)
    collect = Ensemble().collect_sync
    update = ind.update
    t0 = time.perf_counter()
    for c in candles:
        update(c)
        collect(providers, ind)
    return time.perf_counter() - t0


def run_pipeline(candles: list[Candle], counts: Counter | None = None) -> float:
    ind = IndicatorSet("BTC/USD")
    providers = make_providers(PROVIDERS)
    ens = Ensemble()
    collect = ens.collect_sync
    decide = ens.decide
    update = ind.update
    t0 = time.perf_counter()
    for c in candles:
        update(c)
        votes, failed = collect(providers, ind)
        r = decide(votes, failed)
        if counts is not None:
            counts[(r.action, r.tier, r.confidence >= 0.55)] += 1
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not args.csv.is_file():
        print(f"pipeline_bench: no such file: {args.csv}", file=sys.stderr)
        return 2
    candles = load(args.csv)
    n = len(candles)
    print(f"{args.csv.name}: {n} bars, best of {args.repeat} runs")
    stages = [("indicators", run_indicators), ("indicators + 4 votes", run_votes),
              ("indicators + 4 votes + decide", run_pipeline)]
    for label, fn in stages:
        best = min(fn(candles) for _ in range(args.repeat))
        print(f"  {label:32s} {n / best:12,.0f} bars/s  {best / n * 1e6:6.2f} us/bar")
    counts: Counter = Counter()
    run_pipeline(candles, counts)
    acts = Counter()
    tiers = Counter()
    for (action, tier, confident), k in counts.items():
        tiers[tier] += k
        if confident and action is not Action.HOLD:
            acts[action.value] += k
    print(f"  decisions with confidence >= 0.55: BUY {acts['BUY']}, SELL {acts['SELL']}; "
          f"tiers used: {', '.join(f'{t}: {k}' for t, k in sorted(tiers.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
