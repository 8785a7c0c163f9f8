"""Why a run stopped trading: the entries it sent and the ones refused, by gate, over time.

The engine notes the outcome of each entry decision: sent as an order, or refused by a gate or by the order path
(counted under the failing gate's code, or BELOW_MINIMUM). A backtest whose DRAWDOWN gate latched refuses every
entry to the end of the run; its report says since when and by what.
"""

from __future__ import annotations

from typing import Any

from . import fmt

SENT = "submitted"
REFUSED = ("rejected", "refused", "below_minimum")


def iso(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else fmt.iso_ms(ts_ms)


def refusal_code(outcome: str, reason: str) -> str:
    """A gate's code (`DRAWDOWN: value=...`), BELOW_MINIMUM, AWAITING_APPROVAL (an entry held by a trade in its
    symbol waiting for approval), or ORDER_REFUSED (the venue or the order path)."""
    if outcome == "below_minimum" or reason.startswith("below venue minimum"):
        return "BELOW_MINIMUM"
    if outcome == "awaiting_approval":
        return "AWAITING_APPROVAL"
    code = reason.partition(":")[0].strip()
    if code and code.replace("_", "").isalpha() and code.isupper():
        return code
    return "ORDER_REFUSED"


class EntryLog:
    """Counts entries sent and refused (by code), overall and since the last entry sent."""

    def __init__(self) -> None:
        self.sent = 0
        self.last_sent_ts: int | None = None
        self.refused: dict[str, int] = {}
        # refusals after the last entry sent: code -> [count, bar time of the first, its reason]
        self.since_last: dict[str, list[Any]] = {}

    def note(self, outcome: str, reason: str, bar_ts: int) -> None:
        """An entry decision's outcome (other outcomes, such as waiting for an approval, are not counted)."""
        if outcome == SENT:
            self.sent += 1
            self.last_sent_ts = bar_ts
            self.since_last = {}
        elif outcome in REFUSED:
            code = refusal_code(outcome, reason)
            self.refused[code] = self.refused.get(code, 0) + 1
            seen = self.since_last.get(code)
            if seen is None:
                self.since_last[code] = [1, bar_ts, reason]
            else:
                seen[0] += 1

    def report(self, last_trade_ts: int | None = None) -> dict[str, Any]:
        """Counts by code, most first. `stopped`: the refusals since the last entry sent (none sent after them)."""
        stopped = None
        if self.since_last:
            since = sorted(self.since_last.items(), key=lambda kv: (-kv[1][0], kv[0]))
            stopped = {"since": iso(min(v[1] for v in self.since_last.values())),
                       "refused": {code: {"count": v[0], "first": iso(v[1]), "reason": v[2]} for code, v in since}}
        return {"sent": self.sent, "refused": dict(sorted(self.refused.items(), key=lambda kv: (-kv[1], kv[0]))),
                "last_entry": iso(self.last_sent_ts), "last_trade_closed": iso(last_trade_ts), "stopped": stopped}


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The entries part of a backtest summary."""
    refused = r["refused"]
    text = f"{r['sent']} sent, {sum(refused.values())} refused"
    if refused:
        text += ": " + ", ".join(f"{code} {n}" for code, n in refused.items())
    lines = [f"  entries       {text}",
             f"  last entry    {r['last_entry'] or 'none'} (last trade closed {r['last_trade_closed'] or 'none'})"]
    stopped = r["stopped"]
    if stopped is not None:
        by = stopped["refused"]
        n = sum(v["count"] for v in by.values())
        first = next(iter(by.values()))
        lines.append(f"  stopped       no entry from {stopped['since']} to the end: {n} refused ("
                     + ", ".join(f"{code} {v['count']}" for code, v in by.items())
                     + f"); since {first['first']}: {first['reason']}")
    return lines
