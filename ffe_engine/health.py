"""The health verdict: what GET /health answers and `ffe ctl health` prints.

healthy (HTTP 200, exit 0): the loop turns, every symbol has fresh bars, the audit trail is being written, the
    breaker is closed and reconciliation found no unexplained difference.
degraded (HTTP 503, exit 1): the engine runs but cannot be trusted to trade as configured: a symbol's data is stale
    (no bar for `monitor.data_stale_s`, by default three timeframes), the circuit breaker is open or probing,
    reconciliation holds unexplained differences, or the disk of the records runs low (below
    `monitor.disk_free_min_mb`: the engine stops HALTED when it is full).
down (HTTP 503, exit 2): the engine is still starting (the monitor answers from the start on), the main loop has not
    completed a turn for `monitor.loop_stale_s` (hung), the engine has stopped, or an audit record has waited
    `monitor.audit_stale_s` to be written. `ffe ctl health` also exits 2 when no engine answers.

PAUSED and HALTED are deliberate states and do not make the verdict worse on their own: the state is in the
answer, and the shipped Prometheus rules alert on an engine HALTED for too long.
"""

from __future__ import annotations

from typing import Any, Protocol

from . import fmt
from .config import MonitorSettings
from .liveness import Liveness

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}


class AuditLag(Protocol):
    def lag(self) -> float: ...


def data_stale_after(cfg: MonitorSettings, timeframe_ms: int) -> float:
    return cfg.data_stale_s if cfg.data_stale_s > 0 else 3 * timeframe_ms / 1000.0


def assess(*, state: str, stopped: bool, liveness: Liveness, symbols: list[str], breakers: list[dict[str, Any]],
           reconcile_blocked: int, pending_approvals: int, reconcile_text: str = "", audit: AuditLag | None,
           cfg: MonitorSettings, timeframe_ms: int, started: bool = True,
           disk_low: list[str] | None = None, reconcile_outage: str = "") -> dict[str, Any]:
    """The verdict. `started`: whether the engine's start is done; `disk_low`: what the monitor says of the disks
    running low (Monitor._disk_alerts). `reconcile_blocked`: the differences holding the engine; `reconcile_outage`:
    what kept the last reconciliation from comparing anything ("unreachable", "clock"), no difference to accept."""
    down: list[str] = []
    degraded: list[str] = []
    loop_age = liveness.loop_age()
    if stopped:
        down.append("engine stopped")
    elif not started:  # no turn of its loop yet, nor a bar: its ages would read fresh
        down.append("the engine is starting")
    elif loop_age > cfg.loop_stale_s:
        down.append(f"main loop stalled: no turn for {loop_age:.0f}s (limit {cfg.loop_stale_s:g}s)")
    audit_lag = audit.lag() if audit is not None else 0.0
    if audit_lag > cfg.audit_stale_s:
        down.append(f"audit stalled: a record has waited {audit_lag:.0f}s to be written (limit {cfg.audit_stale_s:g}s)")
    stale_after = data_stale_after(cfg, timeframe_ms)
    bar_ages = {s: liveness.bar_age(s) for s in symbols}
    for sym, age in bar_ages.items():
        if age > stale_after:
            degraded.append(f"{sym}: no bar for {age:.0f}s (limit {stale_after:g}s)")
    for b in breakers:
        if b.get("state") != "closed":
            degraded.append(f"breaker {b.get('state')} on {b.get('venue')}: {b.get('last_error') or 'failures'}")
    if reconcile_blocked or reconcile_outage:
        degraded.append(f"reconciliation: {reconcile_text or f'{reconcile_blocked} unexplained difference(s)'}")
    degraded += disk_low or []
    status = DOWN if down else DEGRADED if degraded else HEALTHY
    return {
        "status": status,
        "problems": down + degraded,
        "state": state,  # the last trading state, also once the engine has stopped (`stopped`)
        "stopped": stopped,
        "loop_age_s": round(loop_age, 3),
        "loop_stale_s": cfg.loop_stale_s,
        "bar_age_s": {s: round(a, 3) for s, a in bar_ages.items()},
        "data_stale_s": stale_after,
        "breakers": [{"venue": b.get("venue"), "state": b.get("state"), "failures": b.get("failures")}
                     for b in breakers],
        "reconcile": "differences" if reconcile_blocked else reconcile_outage or "ok",
        "reconcile_differences": reconcile_blocked,
        "pending_approvals": pending_approvals,
        "audit_lag_s": round(audit_lag, 3),
    }


def one_line(verdict: dict[str, Any]) -> str:
    """The verdict as `ffe ctl health` prints it."""
    state = fmt.run_state(verdict["state"], verdict.get("stopped"))
    head = f"{verdict['status'].upper()} {state}  loop {verdict['loop_age_s']:.1f}s ago"
    if verdict.get("problems"):
        return head + "  " + "; ".join(verdict["problems"])
    return head
