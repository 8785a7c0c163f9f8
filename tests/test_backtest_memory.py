"""A backtest's memory grows with its bars by a bounded amount per bar, at every record level, so a year of 1-minute
bars (525,600) stays well under 1 GB. Measured as the peak resident set of real `ffe backtest` processes on generated
minute bars, a short run against a five times longer one (the difference is what the extra bars cost)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ffe_cmd, ffe_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from minute_data import write_minutes  # noqa: E402

SHORT, LONG = 8_000, 40_000
YEAR = 525_600
BASE_BOUND_MB = 400  # the interpreter, the imports and the pipeline before any bar
PER_BAR_BOUND = 1_250  # bytes of peak RSS per extra bar: a year of minutes adds at most about 0.65 GB


# Started from a small interpreter, not from this test process: Linux keeps the peak of the memory a process
# had before its exec in its own peak (and a spawned child begins on its parent's memory), so a backtest started
# from a large test worker would report the worker's size.
LAUNCHER = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(code)\n")


def peak_rss_kb(cwd: Path, csv: Path, level: str) -> int:
    """The peak resident set (KiB) of the largest of the backtest's process and its record writer."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *ffe_cmd("backtest", f"SIM/USD={csv}", "--records", level)],
                          cwd=cwd, env=ffe_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


@pytest.mark.parametrize("level", ["full", "trades", "summary"])
def test_peak_memory_grows_by_a_bounded_amount_per_bar(tmp_path, level):
    short = write_minutes(tmp_path / "short.csv", SHORT)
    long = write_minutes(tmp_path / "long.csv", LONG)
    small = peak_rss_kb(tmp_path, short, level)
    big = peak_rss_kb(tmp_path, long, level)
    per_bar = (big - small) * 1024 / (LONG - SHORT)
    assert small / 1024 < BASE_BOUND_MB
    assert per_bar < PER_BAR_BOUND, f"{per_bar:.0f} bytes per bar"
    assert (small * 1024 + per_bar * (YEAR - SHORT)) / 2**30 < 1.0
