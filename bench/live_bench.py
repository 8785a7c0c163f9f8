"""Per-bar cost of the live engine: `ffe run --headless` (paper venue, simulated market, unpaced) as a whole
process, the way an operator runs it: every bar stored, flushed and synced before the next.

Two runs differ only in their length (--max-bars); the difference of their wall and CPU times divided by the extra
bars is the per-bar cost, start-up and warm-up taken out. Best of three pairs.

    .venv/bin/python bench/live_bench.py [--bars 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHORT = 20


def run(bars: int) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFE_")}
    # Any free port for the monitor: an engine already running here holds the default one.
    env.update(FFE_MARKET__SPEED="0", FFE_LOGGING__LEVEL="WARNING", FFE_MONITOR__PORT="0", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # The repository's config.toml (ffe run refuses to start without one); the environment above wins over it.
        proc = subprocess.Popen([sys.executable, "-m", "ffe_cli", "run", "--headless", "--max-bars", str(bars),
                                 "--config", str(ROOT / "config.toml"),
                                 "--data-dir", f"{tmp}/data", "--log-dir", f"{tmp}/logs"], cwd=tmp, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ffe run failed:\n{err.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1000, help="bars per symbol of the long run")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    best_wall = best_cpu = float("inf")
    for _ in range(args.rounds):
        short_wall, short_cpu = run(SHORT)
        long_wall, long_cpu = run(args.bars)
        bars = 2 * (args.bars - SHORT)  # the default market has two symbols
        best_wall = min(best_wall, (long_wall - short_wall) / bars)
        best_cpu = min(best_cpu, (long_cpu - short_cpu) / bars)
    print(f"live engine, paper venue, simulated market: {best_wall * 1e6:,.0f} us/bar wall, "
          f"{best_cpu * 1e6:,.0f} us/bar CPU (best of {args.rounds}; every bar stored and synced)")


if __name__ == "__main__":
    main()
