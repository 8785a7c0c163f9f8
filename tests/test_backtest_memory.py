"""A backtest's memory grows with its bars by a bounded amount per bar, at every record level, so a year of 1-minute
bars (525,600) stays well under 1 GB. Measured as the peak resident set of real `ffe backtest` processes on generated
minute bars, a short run against a five times longer one (the difference is what the extra bars cost)."""

from __future__ import annotations

import os
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
PER_BAR_BOUND = 1_000  # bytes of peak RSS per extra bar: a year of minutes adds at most about 0.5 GB


def peak_rss_kb(cwd: Path, csv: Path, level: str) -> int:
    proc = subprocess.Popen(ffe_cmd("backtest", f"SIM/USD={csv}", "--records", level), cwd=cwd, env=ffe_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err.decode(errors="replace")
    return usage.ru_maxrss  # the largest of the process and its record writer


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
