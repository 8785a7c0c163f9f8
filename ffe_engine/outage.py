"""A reconciliation that compared nothing, for want of the exchange's answers, said one way wherever it is shown:
the state's reason (`ffe ctl status`, the console's status line), `ffe ctl why` and the console's Why view, the Health
view, the RECONCILE page, and the refusals of a resume and an accept all take their words from `outage()`.

Two causes, which need different things of the operator:
- the exchange could not be reached (`venue_unreachable`: no answer, a timeout, a 5xx): an outage, which lifts by
  itself once a reconciliation reaches the exchange and agrees;
- the exchange answered and refused this machine's clock (`clock_refused`: ccxt's InvalidNonce, Binance -1021, the
  request's timestamp outside its receive window). The exchange is up; every signed request is refused (orders, exits
  too) for as long as the clock is off, so the hold does not lift until the operator sets the clock right; it lifts
  once a reconciliation after that is answered and agrees.

Neither is a difference to accept: nothing was compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNREACHABLE_KIND = "venue_unreachable"
CLOCK_KIND = "clock_refused"
KINDS = (UNREACHABLE_KIND, CLOCK_KIND)
SET_CLOCK = "set this machine's clock right (NTP: timedatectl, chrony)"


@dataclass(frozen=True, slots=True)
class Outage:
    what: str  # what holds the engine (the operator's `now`, a page's subject)
    reason: str  # the same, short, with what to do, for the state's reason after "reconcile: "
    lifts: str  # what lifts the hold, after "lifted by"
    lifted: str  # what ended the hold, in the state's reason once it has
    resume: str  # a resume's refusal meanwhile
    accept: str  # an accept's refusal meanwhile
    page: str  # the RECONCILE page's end, after what holds it and the engine's state
    badge: str  # the console's status line, after RECONCILE (differences are counted there instead)


UNREACHABLE = Outage(
    what="the exchange could not be reached",
    reason="the exchange could not be reached",
    lifts="itself, once a reconciliation reaches the exchange and agrees: an outage is nothing to accept; then resume",
    lifted="the exchange answers again",
    resume="reconciliation: the exchange could not be reached; resume once it answers and agrees",
    accept=("nothing accepted: the exchange could not be reached at the last reconciliation, and an outage is nothing "
            "to accept; the hold lifts once a reconciliation reaches it and agrees (`ffe ctl why`)"),
    page="Nothing to accept: the hold lifts once it answers and agrees with the journal.",
    badge="UNREACHABLE")

CLOCK = Outage(
    what=("the exchange refuses this machine's clock (it answers, and refuses every signed request, orders and exits "
          f"too, as sent outside its receive window): {SET_CLOCK}"),
    reason="the exchange refuses this machine's clock; set it right (NTP)",
    lifts=("setting this machine's clock right: the hold stays while the clock is off; once it is right, it lifts "
           "when a reconciliation is answered and agrees with the journal (nothing to accept); then resume"),
    lifted="the exchange takes this machine's clock again",
    resume=(f"reconciliation: the exchange refuses this machine's clock; {SET_CLOCK}, then resume once a "
            "reconciliation is answered and agrees"),
    accept=("nothing accepted: the exchange refuses this machine's clock, and nothing was compared, nothing to "
            f"accept; {SET_CLOCK}: the hold lifts once a reconciliation after that is answered and agrees (`ffe ctl "
            "why`)"),
    page=("The hold stays until the clock is right, and lifts once a reconciliation after that is answered and agrees "
          "with the journal. Nothing to accept."),
    badge="CLOCK")


def outage_only(differences: list[dict[str, Any]]) -> bool:
    """Nothing was compared (the exchange could not be reached, or refused this machine's clock), and nothing else
    was found: not a difference for the operator to look into and accept."""
    return bool(differences) and all(d.get("kind") in KINDS for d in differences)


def differences(blocked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What reconciliation holds the engine for, its outage left out: the differences found by comparing."""
    return [d for d in blocked if d.get("kind") not in KINDS]


def outage(differences: list[dict[str, Any]]) -> Outage:
    """How an outage among `differences` is said: the clock's words when the exchange refused this machine's clock."""
    return CLOCK if any(d.get("kind") == CLOCK_KIND for d in differences) else UNREACHABLE
