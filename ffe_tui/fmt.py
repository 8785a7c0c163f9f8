"""Number, time and value formatting for the console's narrow columns."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any


def enum_text(x: Any) -> str:
    """Enum-valued event fields (model.Action, Side, ...) as their plain value."""
    return str(x.value if hasattr(x, "value") else x)


def price(x: float | None) -> str:
    """Six significant digits, never scientific: 60118.1, 3008.10, 0.123456."""
    if x is None or not math.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    digits = max(0, 5 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{digits}f}"


def qty(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.6g}"


def money(x: float | None, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:+,.2f}" if signed else f"{x:,.2f}"


def pct(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.2f}%"


def conf(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def duration(seconds: float | None) -> str:
    """Compact age or countdown: 42s, 3m05s, 2h10m, 3d04h."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def market_time(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "--:--"
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


_clock_cache = [-1, ""]


def clock(ts: float) -> str:
    """Wall time of an event, HH:MM:SS UTC (the audit trail is in UTC too). Events come many to a second."""
    sec = int(ts)
    if sec != _clock_cache[0]:
        _clock_cache[0] = sec
        _clock_cache[1] = datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%H:%M:%S")
    return _clock_cache[1]


def gate_value(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.4g}"
    return str(x)


def short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
