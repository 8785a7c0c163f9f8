"""Generated 1-minute candles: a seeded random walk written as CSV (epoch milliseconds), for runs longer than the
sample files (a year of minutes is 525,600 bars)."""

from __future__ import annotations

import gzip
import math
import random
from pathlib import Path

MINUTE_MS = 60_000
START_MS = 1_672_531_200_000  # 2023-01-01T00:00:00Z


def write_minutes(path: Path, bars: int, seed: int = 11, start_price: float = 20_000.0) -> Path:
    """`bars` consecutive 1-minute candles into `path` (gzip-compressed when it ends in .gz)."""
    rng = random.Random(seed)
    price = start_price
    rows = ["timestamp,open,high,low,close,volume"]
    for i in range(bars):
        o = price
        c = o * math.exp(rng.gauss(0.0, 0.0012))
        hi = max(o, c) * (1.0 + abs(rng.gauss(0.0, 0.0006)))
        lo = min(o, c) * (1.0 - abs(rng.gauss(0.0, 0.0006)))
        rows.append(f"{START_MS + i * MINUTE_MS},{o:.2f},{hi:.2f},{lo:.2f},{c:.2f},{rng.uniform(1, 50):.4f}")
        price = c
    text = "\n".join(rows) + "\n"
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", compresslevel=1) as f:
            f.write(text)
    else:
        path.write_text(text)
    return path
