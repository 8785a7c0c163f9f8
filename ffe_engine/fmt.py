"""How numbers and times read, everywhere: the console, `ffe ctl`, the audit tail, `audit show` and the reports.

One rule for each kind of value, so the same fill reads the same on every screen:

- prices and quantities: six significant digits, thousands separators, never scientific (60,118.1, 0.0123457);
- money (equity, P&L): two decimals with thousands separators, signed where it is a gain or a loss (+1,234.50);
  fees four decimals (0.0120), as they are often fractions of a cent;
- percentages: two decimals and a % sign (12.34%); sizes in B, KB, MB or GB (206.2 KB);
- times: UTC in ISO 8601 form with the zone shown (2026-01-02T03:04:05Z), market and wall time alike, the year
  always in four digits; the console's log column keeps only the time of day (03:04:05Z), and a position that no
  decision opened is named by its opening time to the millisecond (03:04:05.678). A time beyond the calendar (the
  years 1 to 9999: a damaged record's) reads "-", as a missing one does.
"""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any


def enum_text(x: Any) -> str:
    """Enum-valued fields (model.Action, Side, ...) as their plain value; audit records already hold the value."""
    return str(x.value if hasattr(x, "value") else x)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _significant(x: float, digits: int) -> str:
    """`digits` significant digits with thousands separators and no exponent; trailing zeros kept (3,008.10)."""
    if x == 0:
        return "0"
    places = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:,.{places}f}"


def price(x: Any) -> str:
    """60,118.1  3,008.10  0.123456"""
    return _significant(float(x), 6) if _finite(x) else "-"


def qty(x: Any, digits: int = 6) -> str:
    """Quantities lose their trailing zeros: 0.01, 1.5, 12,345.7."""
    if not _finite(x):
        return "-"
    text = _significant(float(x), digits)
    return text.rstrip("0").rstrip(".") if "." in text else text


def number(x: Any, digits: int = 6) -> str:
    """Any other figure (a gate's measured value, a sizing input): as a quantity; text as it is."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return qty(x, digits) if math.isfinite(x) else str(x)
    return str(x)


def apart(x: Any, limit: Any, digits: int = 4) -> tuple[str, str]:
    """A gate's value and its limit, as `number` says them, with as many more digits as keep the value on its own
    side of the limit and the two told apart (0.54998 beside 0.55, not 0.55 beside 0.55), as the record keeps it;
    the limit never with more digits than it has (0.3, not 0.29999999999999999)."""
    if isinstance(x, int) and not isinstance(x, bool):
        x = float(x)  # a count beside a limit with decimals: compared, and said, as a number
    if not isinstance(x, float) or not math.isfinite(x) or isinstance(limit, bool) \
            or not isinstance(limit, (int, float)) or not math.isfinite(limit):
        return number(x, digits), number(limit, digits)
    exact = next((d for d in range(digits, 18) if float(qty(limit, d).replace(",", "")) == limit), 17)
    side = (x > limit) - (x < limit)
    for d in range(digits, 18):
        value, bound = qty(x, d), qty(limit, min(d, exact))
        shown = float(value.replace(",", ""))
        if (shown > limit) - (shown < limit) == side and (side == 0 or value != bound):
            return value, bound
    return repr(x), repr(limit)


def counted(n: int, noun: str) -> str:
    """`n` and its noun, singular for one: "1 gap", "2,000 missing bars"."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def money(x: Any, signed: bool = False) -> str:
    if not _finite(x):
        return "-"
    return f"{x:+,.2f}" if signed else f"{x:,.2f}"


def beyond(value: float, limit: float) -> str:
    """`value`, which is over `limit`, with two decimals, or as many more (up to six) as it takes to show it over:
    "0.05% > 0.05%" said nothing."""
    for digits in range(2, 7):
        text = f"{value:.{digits}f}"
        if float(text) > limit:
            return text
    return f"{value:.6f}"


def fee(x: Any) -> str:
    return f"{x:,.4f}" if _finite(x) else "-"


def pct(x: Any, signed: bool = False) -> str:
    """A figure already in percent: 12.34%."""
    if not _finite(x):
        return "-"
    return f"{x:+,.2f}%" if signed else f"{x:,.2f}%"


def ratio(x: Any, signed: bool = False) -> str:
    """A fraction as a percentage: 0.1234 -> 12.34%."""
    return pct(x * 100, signed) if _finite(x) else "-"


def conf(x: Any) -> str:
    return f"{x:.2f}" if _finite(x) else "-"


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


def size(n: Any) -> str:
    """A size in bytes: 512 B, 3.4 KB, 12.0 MB, 1.2 GB (powers of 1,024)."""
    if not _finite(n):
        return "-"
    value = float(n)
    if abs(value) < 1024:
        return f"{int(value)} B"
    unit = "KB"
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if abs(value) < 1024:
            break
    return f"{value:,.1f} {unit}"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _utc(seconds: Any) -> datetime | None:
    """The UTC time of the second `seconds` (since the epoch) falls in; None when it is not a finite number or
    beyond the calendar (the years 1 to 9999)."""
    if not _finite(seconds):
        return None
    try:
        return _EPOCH + timedelta(seconds=math.floor(seconds))
    except OverflowError:
        return None


def _utc_text(dt: datetime | None, time_of_day: str) -> str:
    # The year padded by hand: strftime's %Y writes the year 1 as "1".
    return "-" if dt is None else f"{dt.year:04d}-{dt:%m-%d}T{dt.strftime(time_of_day)}Z"


def iso(seconds: Any) -> str:
    """Seconds since the epoch (wall clock) as 2026-01-02T03:04:05Z."""
    return _utc_text(_utc(seconds), "%H:%M:%S")


def iso_ms(ts_ms: Any) -> str:
    """A market timestamp (integer milliseconds, UTC) as 2026-01-02T03:04:05Z."""
    return iso(ts_ms // 1000) if _finite(ts_ms) else "-"


def iso_ms_apart(a: Any, b: Any) -> tuple[str, str]:
    """Two market timestamps as iso_ms gives them, or to the millisecond (2026-01-02T03:04:05.678Z) when they fall
    in one second: a line saying one is before the other shows them apart."""
    if not (_finite(a) and _finite(b)) or a // 1000 != b // 1000 or iso_ms(a) == "-":
        return iso_ms(a), iso_ms(b)
    return f"{iso_ms(a)[:-1]}.{int(a) % 1000:03d}Z", f"{iso_ms(b)[:-1]}.{int(b) % 1000:03d}Z"


# The epoch times in the engine's answers that are not named `X_ts` (milliseconds): wall seconds.
WALL_SECONDS = ("until", "last_success")


def with_utc_times(data: Any) -> Any:
    """JSON data with each epoch time in it also in UTC ISO form, beside it, for a reader of the JSON: `X_ts`
    (milliseconds) as `X`, as the trades report gives `opened` beside `opened_ts`; a time in wall seconds (`until`,
    `last_success`) as `X_utc`. A name already taken is left as it is."""
    if isinstance(data, list):
        return [with_utc_times(item) for item in data]
    if not isinstance(data, dict):
        return data
    out = {key: with_utc_times(value) for key, value in data.items()}
    for key, value in data.items():
        if not _finite(value):
            continue
        if key.endswith("_ts") and len(key) > 3:
            out.setdefault(key[:-3], iso_ms(value))
        elif key in WALL_SECONDS:
            out.setdefault(f"{key}_utc", iso(value))
    return out


def time_ms(ts_ms: Any) -> str:
    """A market timestamp (integer milliseconds, UTC) as its time of day to the millisecond: 03:04:05.678."""
    dt = _utc(ts_ms // 1000) if _finite(ts_ms) else None
    return "-" if dt is None else f"{dt:%H:%M:%S}.{int(ts_ms) % 1000:03d}"


def market_time(ts_ms: Any) -> str:
    """The market clock on the status line, to the minute: 2026-01-02T03:04Z."""
    return _utc_text(_utc(ts_ms // 1000) if _finite(ts_ms) else None, "%H:%M")


_clock_cache: list[Any] = [-1, ""]


def clock(seconds: float) -> str:
    """The time of day of an event, 03:04:05Z. Events come many to a second: the text is reused within one."""
    sec = int(seconds)
    if sec != _clock_cache[0]:
        dt = _utc(sec)
        _clock_cache[0] = sec
        _clock_cache[1] = "-" if dt is None else dt.strftime("%H:%M:%SZ")
    return str(_clock_cache[1])


def compact(v: Any) -> str:
    """A nested value on one line (a reconcile difference, a run's detail)."""
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return number(v)
    return json.dumps(v, separators=(",", ":"), default=str)


def short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def run_state(state: str, ended: object) -> str:
    """A trading state as said of a run: `STOPPED (was STATE)` once it has ended (`ended`: truthy)."""
    return f"STOPPED (was {state})" if ended else state


def sentence(text: str) -> str:
    """`text` ended as a sentence: its own period kept, one added, never a second (nor one taking an ellipsis's
    place)."""
    return text if text.endswith(".") else text + "."


def ends(text: str, width: int) -> str:
    """`text` within `width` characters, its start and its end kept: an error says what was asked first and the
    other side's answer last, and a cut at the end would keep only the question."""
    if len(text) <= width:
        return text
    head = width // 3
    return text[:head] + "…" + text[len(text) - (width - head - 1):]


# What can forge or hide text on a terminal: the C0 and C1 controls (category Cc: TAB, LF, CR, ESC, DEL, NEL...),
# the line and paragraph separators, and the characters that turn the text's direction. Other spaces and format
# characters (a no-break space, the ideographic space, the zero-width joiners of emoji and Persian) are written text.
# A lone surrogate (a JSON request's "\\ud800") is escaped too: it cannot be written in UTF-8, to a terminal or a file.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SEPARATORS = frozenset("\u2028\u2029")


def _acts(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cs") or c in _BIDI or c in _SEPARATORS


def printable(text: str) -> str:
    """Words from outside (a model's reason, an exchange's or a gateway's message) as they may be shown: a character
    a terminal would act on (an escape sequence, a bell, a backspace, a new line, one that turns the text's
    direction) is shown as its escape (`\\x1b`, `\\u202e`), never passed on to act."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if _acts(c) else c for c in text)


def unprintable(text: str) -> str | None:
    """The first character of `text` that `printable` would escape, as its escape; None when there is none."""
    if text.isprintable():
        return None
    return next((_escape(c) for c in text if _acts(c)), None)


def _escape(c: str) -> str:
    return c.encode("unicode_escape").decode("ascii")
