"""Whether a file already at `ffe backtest --report PATH` is a report an earlier `--report` wrote: the only file the
report may replace. Anything else there is someone's record (another account's audit trail, a rotated trail file, a
lock, a backup) or the user's own file; replaced by a rename, it is lost for good, and a process still writing it
(an engine appending to its trail) goes on writing into the removed file. So it is refused, said as what it is."""

from __future__ import annotations

import json
from pathlib import Path

# Keys every report `--report` writes has (ffe_engine/backtest_report.py): figures present since the first release,
# so that a report an older ffe wrote is still one. A run's own report.json has them but the curve.
REPORT_KEYS = ("symbols", "bars", "from", "to", "trades", "return_pct")
CURVE_KEY = "equity_curve"
REPORT_MAX_BYTES = 64 << 20  # a report is a few hundred kB at most (a thinned curve): larger is no report
HEAD_BYTES = 512  # enough for the archive magics below (tar's sits at byte 257)
MAGICS = ((0, b"\x28\xb5\x2f\xfd", "is a compressed archive (zstd)"),
          (0, b"\x1f\x8b", "is a compressed file (gzip)"),
          (257, b"ustar", "is a tar archive"))


def not_a_report(path: Path) -> str | None:
    """What the regular file at `path` is, said as the end of a sentence, when it is not a report `--report` wrote;
    None for such a report, or when nothing is there."""
    if path.name.endswith(".lock"):
        return "is a lock file"
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            if not head:
                return "is not a backtest report (an empty file)"
            for offset, magic, what in MAGICS:
                if head[offset: offset + len(magic)] == magic:
                    return what
            if _is_trail(head + f.readline(REPORT_MAX_BYTES)):
                return "is an audit trail"
            f.seek(0)
            text = f.read(REPORT_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc}) to tell whether it is a report ffe wrote"
    if len(text) > REPORT_MAX_BYTES:
        return "is not a backtest report (larger than any report)"
    try:
        report = json.loads(text)
    except ValueError:
        return "is not a backtest report"
    if not isinstance(report, dict) or not all(key in report for key in REPORT_KEYS):
        return "is not a backtest report"
    if CURVE_KEY not in report:
        return "is the report.json a backtest run keeps beside its records"
    return None


def _is_trail(head: bytes) -> bool:
    """Whether the file's first line is an audit record: a JSON object with its seq and the hash before it."""
    try:
        first = json.loads(head.split(b"\n", 1)[0])
    except ValueError:
        return False
    return isinstance(first, dict) and "seq" in first and "prev" in first
