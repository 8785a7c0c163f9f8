"""Saved state that takes precedence over the configuration at start: found, resolved, announced.

A data directory keeps what the last run left (docs/states.md, "Saved state and the configuration"). Where a
saved value and the configuration disagree on something that decides whether the engine trades, the safer of the
two wins: manual approval over auto, HALTED over PAUSED over RUNNING. Every such disagreement, whichever side
wins, is an `Override`: the engine logs it and publishes it as an `override` event at start, and `ffe config
check` lists it for a data directory that has saved state. The rules are here once, for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import EngineState

_STRICTNESS = {EngineState.RUNNING: 0, EngineState.PAUSED: 1, EngineState.HALTED: 2}


def strictness(state: EngineState) -> int:
    """How much a state holds back: RUNNING 0, PAUSED 1, HALTED 2."""
    return _STRICTNESS[state]


@dataclass(frozen=True, slots=True)
class Override:
    setting: str  # what the configuration calls it
    configured: str
    saved: str
    effective: str  # what the engine runs with
    message: str  # one line for the operator

    def as_dict(self) -> dict[str, str]:
        return {"setting": self.setting, "configured": self.configured, "saved": self.saved,
                "effective": self.effective, "message": self.message}


def approval_mode(configured: str, saved: Any) -> tuple[str, Override | None]:
    """The approval mode to start in: manual when either the configuration or the saved mode says manual. No saved
    mode is an account whose mode was never changed: one lost beside its recorded change never gets here (the
    start's record checks refuse it, store.record_checks)."""
    if saved not in ("auto", "manual") or saved == configured:
        return configured, None
    if saved == "manual":
        msg = ("approval mode manual, saved from the last run, overrides engine.approval = auto (the safer wins); "
               "switch with m or `ffe ctl mode auto`")
    else:
        msg = ("engine.approval = manual overrides the approval mode auto saved from the last run (the safer wins)")
    return "manual", Override("engine.approval", configured, str(saved), "manual", msg)


def configured_start(settings: Any, *, live: bool) -> EngineState:
    """The state a start comes up in by the configuration alone: PAUSED for a live engine with
    engine.live_start_paused (after every start), else RUNNING."""
    return EngineState.PAUSED if live and settings.engine.live_start_paused else EngineState.RUNNING


def next_start(settings: Any, left: EngineState, *, live: bool) -> EngineState:
    """The state the next start comes up in after a run left `left`: the stricter of the two (see start_state)."""
    configured = configured_start(settings, live=live)
    return left if _STRICTNESS[left] > _STRICTNESS[configured] else configured


def start_state(configured: EngineState, saved: EngineState, saved_reason: str, saved_by: str,
                live: bool) -> Override | None:
    """A saved state stricter than the one the configuration starts in: the engine stays in it."""
    if _STRICTNESS[saved] <= _STRICTNESS[configured]:
        return None
    setting = "engine.live_start_paused" if live else "start state"
    how = "re-arm to trade" if saved is EngineState.HALTED else "resume to trade"
    msg = (f"engine state {saved.value} saved from the last run ({saved_reason}, by {saved_by}) is kept: a start "
           f"would otherwise be {configured.value}; {how}")
    return Override(setting, configured.value, saved.value, saved.value, msg)


def weights(adaptive: bool, saved: Any) -> Override | None:
    """Learned provider weights saved from the last run replace the starting (equal) weights when adaptive."""
    if not adaptive or not isinstance(saved, dict) or not saved.get("weights"):
        return None
    learned = saved["weights"]
    if len({round(float(w), 6) for w in learned.values()}) <= 1:
        return None  # still equal: nothing learned yet that changes a vote
    shown = " ".join(f"{k}={float(v):.3f}" for k, v in sorted(learned.items()))
    return Override("ensemble.adaptive", "equal weights", shown, shown,
                    f"provider weights learned in earlier runs are used, not equal weights: {shown}")


def market(seed: int, saved: Any) -> Override | None:
    """A simulated market saved from the last run continues its own price path (started from its own seed)."""
    if not isinstance(saved, dict) or "seed" not in saved:
        return None
    if saved["seed"] == seed:
        return None
    return Override("market.seed", str(seed), str(saved["seed"]), str(saved["seed"]),
                    f"the simulated market continues the price path it saved (seed {saved['seed']}); market.seed = "
                    f"{seed} applies to a fresh data directory")


def starting_cash(configured: float, saved: Any) -> Override | None:
    """A paper account keeps the starting cash it was made with: its books and its simulated exchange's balances go
    on from it."""
    if not isinstance(saved, (int, float)) or isinstance(saved, bool) or float(saved) == configured:
        return None
    return Override("venue.starting_cash", str(float(configured)), str(float(saved)), str(float(saved)),
                    f"the paper account keeps the starting cash it was made with, {float(saved):,.2f}; "
                    f"venue.starting_cash = {configured:,.2f} applies to a fresh data directory")


def quote_refused(configured: str, saved: Any) -> str | None:
    """Why a start with venue.quote `configured` is refused on books that keep their cash in `saved` (kv
    books_quote), or None: counted in another currency, the whole cash would be a difference an accept writes off."""
    if saved is None or saved == configured:
        return None
    return (f"venue.quote = {configured!r}, but the data directory's books keep their cash in {saved}: they go on only "
            f"in it; set venue.quote = {saved!r} back (and the symbols quoted in it), or use a new storage.path for an "
            f"account in {configured}")


def find(settings: Any, saved: dict[str, Any], *, live: bool) -> list[Override]:
    """What the saved state of a data directory (`store.saved_state`) would override at the next start."""
    found: list[Override | None] = []
    _, o = approval_mode(settings.engine.approval, saved.get("approval_mode"))
    found.append(o)
    row = saved.get("engine_state")
    if row is not None and row[0] in {s.value for s in EngineState}:
        configured = configured_start(settings, live=live)
        found.append(start_state(configured, EngineState(row[0]), row[1], row[2], live))
    found.append(weights(settings.ensemble.adaptive, saved.get("weights")))
    if settings.market.source == "simulated":
        found.append(market(settings.market.seed, saved.get("market")))
    if settings.venue.kind == "paper":
        found.append(starting_cash(settings.venue.starting_cash, saved.get("paper_starting_cash")))
    return [o for o in found if o is not None]
