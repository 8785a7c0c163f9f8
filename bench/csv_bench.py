"""CSV parse speed on the sample hourly files (samples/*.csv.gz, decompression included): rows per second, best of
several runs.

Run: .venv/bin/python bench/csv_bench.py [FILE.csv[.gz] ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ffe_engine.market.csvdata import load_csv  # noqa: E402

SAMPLES = ROOT / "samples"
RUNS = 7


def best_time(path: Path, lenient: bool) -> tuple[float, int]:
    best = float("inf")
    rows = 0
    for _ in range(RUNS):
        start = time.perf_counter()
        series = load_csv(path, lenient=lenient)
        best = min(best, time.perf_counter() - start)
        rows = len(series)
    return best, rows


def main() -> None:
    files = [Path(a) for a in sys.argv[1:]] or sorted(SAMPLES.glob("*.csv.gz"))
    if not files:
        sys.exit(f"no CSV files found in {SAMPLES}")
    for lenient in (False, True):
        label = "row by row (lenient)" if lenient else "default"
        total_s = 0.0
        total_rows = 0
        for path in files:
            seconds, rows = best_time(path, lenient)
            total_s += seconds
            total_rows += rows
            print(f"{label:22} {path.name:32} {rows:8d} rows {seconds * 1000:8.1f} ms {rows / seconds:12,.0f} rows/s")
        print(f"{label:22} {'total':32} {total_rows:8d} rows {total_s * 1000:8.1f} ms "
              f"{total_rows / total_s:12,.0f} rows/s")
    for path in files:
        print(load_csv(path).summary())


if __name__ == "__main__":
    main()
