"""Alerts: what the operator is told, when, and how it gets there without ever slowing the trading loop.

Every alert has a severity (page: act now; warn: look soon; info: for the record), a stable key (repeats of the
same thing share it) and a text that reads on a phone's lock screen. The notifier is an event sink: it turns
events into alerts synchronously and cheaply, then:

- noise control per key: the first alert of a key is sent; repeats within `alerts.window_s` are counted, and one
  summary (warn; a page when a page repeated) says how many there were when the window ends, or when the engine
  stops before; an alert more severe than the one sent for its key (a flatten's warning, then its failure) is news,
  sent at once. The window of a start's alert goes on across a restart (from the outbox) for the same alert of the
  same engine (host and data directory: an account restored or moved elsewhere is a new engine), so a crash loop is
  told once per window; a start's alert it holds back is said in the log. A storm of 500 breaker failures is one
  page and one summary. A condition that clears (a re-arm, a resume, the approval mode back to manual, the breaker
  closed, a reconciliation that agrees or is accepted, an order no longer in doubt, a flatten's follow-up, fresh
  data, a loop or audit trail turning again) ends the window of its alert at once: its summary goes then, and its
  return is news, sent at once. So does the return for the clear's own alert (RECONCILE_OK after a new hold).
- durable outbox: one row per alert and channel in the database, written with the event that raised it, so an
  alert raised just before a crash is delivered after the restart (not after a restore: those its backup held
  pending are withheld, as the engine it was taken from may have delivered them, and the restored start's alert
  names their kinds instead, a page when one was a page or the start is HALTED: restore.py). Beyond `alerts.outbox_max`
  undelivered rows a channel's least severe are dropped, oldest first (each logged with its text, its row kept as
  dropped), and the channel is told how many, of which kinds, when it takes alerts again (ALERTS_DROPPED). What it
  has not been told is read from the outbox (the dropped rows no delivered notice counted), never kept in memory
  only: every dropped alert is told exactly once across any number of restarts, or twice if the process dies
  between the receiver's answer to the notice and its record (at least once, as every alert: a count told twice
  rather than lost).
- delivery: one task per channel, off the trading loop, oldest first; a failing channel is retried with
  exponential backoff (tenacity) and holds its own queue only, so each alert arrives once and in order when the
  receiver is back (at least once if the process dies between the receiver's answer and the outbox update). An alert
  delivered whose sent mark cannot be written (a full disk) is kept beside the database (deliveries.py) and never
  delivered again; the first start that can write marks it sent.

Times: rate-limit windows and ages are real seconds (monotonic); alert timestamps are the engine clock's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import deliveries, flatten_owed, fmt, logs, present, sentalerts
from .ahead import LOST, Ahead
from .channels import Channel, DeliveryFailed, new_session
from .config import AlertSettings
from .events import (ApprovalEvent, BreakerChanged, EngineStateChanged, ErrorEvent, Event, KillSwitchEvent,
                     OrderEvent, ReconcileEvent, RecoveredEvent, RunEvent, VenueFault)
from .outage import CLOCK, outage, outage_only
from .outage import KINDS as OUTAGE_KINDS
from .reconcile import (OWN_COINS_COMMAND, blocked_text, coins_gone, hand_sale_command, in_doubt_only,
                        lagging_trades, own_coins_may_have_left, says_held, unexplained)
from .tasks import cancel_and_wait
from .venues.base import clock_refused

if TYPE_CHECKING:
    import aiohttp

log = logs.get_logger("ffe.alerts")

SEVERITIES = ("page", "warn", "info")
ALERTING = frozenset(cls.name for cls in (EngineStateChanged, KillSwitchEvent, BreakerChanged, ReconcileEvent,
                                           ApprovalEvent, ErrorEvent, RunEvent, OrderEvent, RecoveredEvent,
                                           VenueFault))
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str  # what happened, stable (HALTED, BREAKER_OPEN, ...): the README says what to do about each
    key: str  # kind plus what it is about (a venue, a symbol): the unit of noise control
    severity: str
    text: str
    # What makes a repeat the same alert across a restart, for those sent past the outbox (sentalerts.py): the text
    # when empty; one cause for all of a kind whose texts differ in details only (which file takes no write).
    cause: str = ""


DROPPED_KINDS_SHOWN = 6  # the kinds a notice of dropped alerts names; the others are counted


def dropped_text(untold: list[tuple[int, str, float]], outbox_max: int) -> str:
    """The ALERTS_DROPPED notice for the dropped alerts (id, kind, created_ts) it tells: how many, of which kinds,
    raised when, and where what they said is."""
    kinds: dict[str, list[float]] = {}
    for _, kind, ts in untold:
        kinds.setdefault(kind, []).append(ts)
    said = [f"{kind} x{len(ts)} (raised {fmt.iso(min(ts))}" + (f" to {fmt.iso(max(ts))})" if max(ts) > min(ts) else ")")
            for kind, ts in list(kinds.items())[:DROPPED_KINDS_SHOWN]]
    more = len(kinds) - DROPPED_KINDS_SHOWN
    return (f"ffe dropped {len(untold)} undelivered alert(s) for this channel while it could not be reached (outbox "
            f"full at alerts.outbox_max = {outbox_max}: the least severe and oldest first): {', '.join(said)}"
            + (f" and {more} more kind(s)" if more > 0 else "") + ". What each said is in the log line of its drop "
            "(\"alert dropped from the full outbox\") and in the database (alert_outbox, status dropped); the events "
            "that raised them are in the audit trail (`ffe audit tail`).")


def _stays(state: str | None) -> str:
    """What the engine's state does while the venue is out, said as it is."""
    if state == "RUNNING":
        return "the engine pauses"
    return f"the engine stays {state}" if state else "the engine's state is unchanged"


def _until_resumed(state: str | None) -> str:
    if state == "HALTED":
        return "the engine stays HALTED until re-armed"
    if state == "PAUSED":
        return "the engine stays PAUSED until resumed"
    return f"the engine is {state}" if state else "the engine's state is unchanged"


def alerts_for(ev: Event, *, state: str | None = None, in_doubt: Collection[str] = ()) -> list[Alert]:
    """The alerts an event raises (most raise none). `state`: the engine's state as last said by its events;
    `in_doubt`: the client order ids whose answer was lost and is not known yet."""
    if isinstance(ev, EngineStateChanged):
        if ev.restated:
            # A state stored without its record (a full disk, a restore): its page may never have gone out (a full
            # disk's RECORDS_UNWRITABLE has one try; a kill switch's outbox was in the records moved aside).
            if ev.state != "HALTED":
                return []
            # Its key names the halt: a start that fails again and again on it (a full log disk, as systemd restarts
            # it) pages it once per window (RESTART_KEYS); another halt kept from before is news.
            key = KEPT_HALTED + sentalerts.cause_digest(f"{ev.reason}\n{ev.by}")[:16]
            return [Alert("HALTED", key, "page", f"ffe starts HALTED, kept from before this start: {ev.reason} "
                                                 f"(by {ev.by}). New orders refused; positions stay open.")]
        if ev.state == ev.previous:
            if ev.reason == "approval mode auto":  # from now on trades are sent without a human
                return [Alert("APPROVAL_MODE", "APPROVAL_MODE", "warn",
                              f"ffe approval mode set to auto by {ev.by}: trades are sent without approval; "
                              "`ffe ctl mode manual` to go back.")]
            return []
        if ev.state == "HALTED":
            # Engine.flatten halts with this reason, then closes every position (its FLATTEN alert says how).
            positions = ("positions are being closed (FLATTEN follows)" if ev.reason == "flatten"
                         else "positions stay open")
            # A halt the engine makes itself (at a start, on what the last run left) cancels nothing. Said as HALTED
            # is stored, before the cancels' answers: a cancel that fails pages on its own (CANCEL_FAILED).
            cancelled = "" if ev.by == "engine" else "open orders being cancelled; "
            return [Alert("HALTED", "HALTED", "page", f"ffe HALTED by {ev.by}: {ev.reason}. New orders refused, "
                                                      f"{cancelled}{positions}.")]
        if ev.state == "PAUSED" and ev.by == "risk":
            return [Alert("RISK_PAUSE", "RISK_PAUSE", "page", f"ffe paused by risk limit: {ev.reason}. No new "
                                                              "entries until resumed.")]
        if ev.state == "RUNNING" and ev.previous == "HALTED":
            return [Alert("REARMED", "REARMED", "warn", f"ffe re-armed (HALTED -> RUNNING) by {ev.by}.")]
        return []
    if isinstance(ev, KillSwitchEvent) and ev.action == "halt" and ev.follow_up:
        # The answer to CANCEL_FAILED: an order it said still works has ended since. One that filled changed a
        # position after the halt: the operator's to look at.
        filled = ": check the position (`ffe ctl status`)" if ev.filled else ""
        return [Alert("CANCEL_ENDED", "CANCEL_ENDED", "page" if ev.filled else "warn",
                      f"ffe kill switch follow-up by {ev.by}: " + "; ".join(present.follow_up_parts(
                          {"cancelled": ev.cancelled, "filled": ev.filled}))
                      + f"; no longer working at the exchange{filled}.")]
    ended_flatten: list[Alert] = []
    if isinstance(ev, KillSwitchEvent) and ev.action == "halt" and ev.flatten_ended:
        # The last word of the flatten was that these would be closed (its WAITING page, say): no longer.
        ended_flatten = [Alert("FLATTEN", "FLATTEN:ended", "page",
                               f"ffe kill switch by {ev.by} ended the flatten under way: still held, no closing order "
                               f"goes out for them now: {', '.join(ev.flatten_ended)}; `ffe ctl flatten` closes "
                               "them.")]
        if not ev.failed:
            return ended_flatten
    if isinstance(ev, KillSwitchEvent) and ev.action == "halt" and ev.failed:
        # An order whose cancel failed still works at the exchange while the engine is HALTED: it may fill.
        first = ev.failed[0]
        named = f"{first.get('client_order_id')}: {_venue_said(str(first.get('error') or ''), 100)}"
        more = f" and {len(ev.failed) - 1} more" if len(ev.failed) > 1 else ""
        return [Alert("CANCEL_FAILED", "CANCEL_FAILED", "page",
                      f"ffe kill switch by {ev.by}: {len(ev.failed)} cancel(s) FAILED ({named}{more}): still working "
                      "at the exchange, they may still fill; the engine keeps asking their cancels, HALTED holds: "
                      "check the venue now (`ffe ctl orders`).")] + ended_flatten
    if isinstance(ev, KillSwitchEvent) and ev.action == "flatten":
        failed = len(ev.failed)
        # A closing order whose answer was lost may not have traded: the position is held until it is known.
        doubt = sum(1 for cid in ev.closing if cid in in_doubt)
        items = [f"{doubt} IN DOUBT (answer lost: the position is still held until the venue says)"
                 if doubt else "",
                 f"{failed} FAILED" if failed else "",
                 f"{len(ev.waiting)} WAITING for the exchange's Retry-After until "
                 f"{fmt.iso(ev.waiting[0].get('until'))} (closed once it is over)" if ev.waiting else "",
                 f"{len(ev.after_exit)} AFTER AN EXIT still working (its cancel not done: closed once it has "
                 "ended)" if ev.after_exit else ""]
        end = ": check the venue now." if failed or doubt else "."
        if ev.follow_up:
            # Not the operator's flatten again: what became of an entry on the wire, what its closing orders closed,
            # what more it placed, what is left.
            done = present.follow_up_parts({"closed": ev.closed, "closing": ev.closing, "dust": ev.dust,
                                            "entries": ev.entries, "answers": ev.answers, "held": ev.held})
            text = f"ffe flatten follow-up by {ev.by}: " + "; ".join(done + [i for i in items if i]) + end
        else:
            text = (f"ffe flatten by {ev.by}: {len(ev.closing)} closing order(s) placed, {len(ev.cancelled)} "
                    "cancelled" + "".join(f", {i}" for i in items if i) + end)
        # A position left open while the exchange takes no request (or an exit it was to cancel still works) is the
        # operator's to know at once, too.
        # The answer to a page (a position in doubt, waiting, failed) pages too: it goes wherever the page went.
        paged = failed or doubt or ev.waiting or ev.after_exit or flatten_owed.pages(ev.answers)
        return [Alert("FLATTEN", "FLATTEN", "page" if paged else "warn", text)]
    if isinstance(ev, BreakerChanged):
        if ev.state == "open" and ev.previous != "open":  # open -> open: a later failure, no new opening
            return [Alert("BREAKER_OPEN", f"BREAKER_OPEN:{ev.venue}", "page",
                          f"ffe circuit breaker OPEN on {ev.venue} after {ev.failures} failure(s): "
                          f"{_venue_said(ev.error, 240)}. "
                          f"Entries refused; {_stays(state)}.")]
        if ev.state == "closed":
            return [Alert("BREAKER_CLOSED", f"BREAKER_CLOSED:{ev.venue}", "info",
                          f"ffe circuit breaker closed on {ev.venue}: the venue answers again "
                          f"({_until_resumed(state)}).")]
        return []
    if isinstance(ev, RecoveredEvent) and ev.status == "recovered" and ev.orders:
        named = ", ".join(ev.orders[:5]) + (f" and {len(ev.orders) - 5} more" if len(ev.orders) > 5 else "")
        return [Alert("RECOVERED", "RECOVERED", "warn",
                      f"ffe after a restore: {len(ev.orders)} order(s) the exchange made since the backup were "
                      f"journaled from it, with {ev.fills} fill(s): {named}. The books hold them now; "
                      "`ffe audit tail --event recovered,order`.")]
    if isinstance(ev, ReconcileEvent) and ev.status in ("differences", "failed"):
        found = ev.differences
        if ev.status == "failed":  # nothing compared: its one difference says why (outage.py)
            found = [d for d in ev.differences if d.get("kind") in OUTAGE_KINDS] or [{"kind": "venue_unreachable"}]
        if outage_only(found):
            error = next((str(d["error"]) for d in ev.differences if d.get("error")), "")
            said = outage(found)
            if said is CLOCK:  # its words say what the exchange's refusal means and what to do: the refusal after
                told = f"; the exchange said: {fmt.ends(error, 160).rstrip('.')}" if error else ""
                return [Alert("RECONCILE", "RECONCILE:clock", "page",
                              f"ffe reconciliation: {said.what}{told}. Entries held; {_stays(state)}. {said.page}")]
            return [Alert("RECONCILE", "RECONCILE:unreachable", "page",
                          f"ffe reconciliation: {said.what}" + (f" ({_venue_said(error)})" if error else "")
                          + f". Entries held; {_stays(state)}. {said.page}")]
        if in_doubt_only(found):
            return [Alert("RECONCILE", "RECONCILE", "page",
                          f"ffe reconciliation: {blocked_text(found)}. Entries held; {_stays(state)}. Nothing to "
                          "accept: the hold lifts once the venue shows the order; look for it on the exchange, and "
                          "if the exchange lost it, settle it as its account shows it (`ffe ctl settle ID filled|"
                          "canceled`).")]
        lagging = lagging_trades(found)
        if lagging and not unexplained(found):
            return [Alert("RECONCILE", "RECONCILE", "page",
                          f"ffe reconciliation: {blocked_text(found)}. Entries held; {_stays(state)}. Nothing to "
                          "accept (the accept is refused meanwhile): the hold lifts once the exchange lists the "
                          "trades and the fill is booked (`ffe ctl orders` shows the order `trades behind` until "
                          "then); resume then.")]
        # What an order's lagging trades explain (a sell's fill) is no coins gone: only the rest is looked into.
        rest = unexplained(found)
        either = own_coins_may_have_left(rest)
        gone = "".join(f" The exchange holds fewer {sym.partition('/')[0]} than the books' {sym} position: if they "
                       f"were sold there by hand, book the sale ({hand_sale_command(sym)}); the accept is refused "
                       "for it." if sym not in either else
                       f" The exchange holds fewer {sym.partition('/')[0]} than the books' {sym} position and your "
                       "own coins beside it, at least the position: if your own left (withdrawn, sold), "
                       f"{OWN_COINS_COMMAND}; if the position's were sold there by hand, book the sale "
                       f"({hand_sale_command(sym)}); the plain accept is refused for it." for sym in coins_gone(rest))
        until = ("`ffe ctl accept`, which is refused until the exchange lists the order's trades" if lagging
                 else "`ffe ctl accept`")
        return [Alert("RECONCILE", "RECONCILE", "page", f"ffe reconciliation: {blocked_text(found)} between the "
                                                        f"journal and the venue. Entries held until {until}."
                                                        + gone)]
    if isinstance(ev, VenueFault) and ev.kind == "reappeared" and ev.phase == "fault":
        return [Alert("ORDER_REAPPEARED", f"ORDER_REAPPEARED:{ev.client_order_id}", "page",
                      f"ffe order {ev.client_order_id} worked at {ev.venue} after the journal ended it: {ev.detail}. "
                      "What it filled is booked against it; check the exchange's open orders and `ffe ctl trades`.")]
    if isinstance(ev, OrderEvent) and _exit_refused(ev):
        return [Alert("EXIT_REFUSED", f"EXIT_REFUSED:{ev.symbol}", "page",
                      f"ffe could not exit {ev.symbol}: its {ev.reason} sell of {fmt.qty(ev.quantity)} "
                      f"{'was refused' if ev.status == 'rejected' else 'ended there'} "
                      f"({_venue_said(ev.error, 240) or 'the venue gave no reason'}). The position stays open, tried "
                      "again at the next bar; check the exchange (a trading halt on the symbol, coins moved or "
                      "locked), close it by hand if need be.")]
    if isinstance(ev, ApprovalEvent) and ev.outcome == "pending":
        return [Alert("APPROVAL", f"APPROVAL:{ev.approval_id}", "warn",
                      f"ffe approval {ev.approval_id} waiting: {ev.side.upper()} {fmt.qty(ev.quantity)} {ev.symbol} at "
                      f"{fmt.price(ev.price)}, expires {fmt.iso(ev.expires_at)}. `ffe ctl approve {ev.approval_id}`.")]
    if isinstance(ev, ApprovalEvent) and _unanswered(ev):
        how = "expired" if ev.outcome == "expired" else f"{ev.outcome} by the engine"
        return [Alert("APPROVAL_ENDED", f"APPROVAL_ENDED:{ev.approval_id}", "warn",
                      f"ffe approval {ev.approval_id} {how} unanswered"
                      + (f" ({fmt.ends(ev.reason, 160)})" if ev.reason else "")
                      + f": the {ev.side.upper()} {fmt.qty(ev.quantity)} {ev.symbol} at {fmt.price(ev.price)} was not "
                        "made.")]
    if isinstance(ev, ErrorEvent) and ev.where == "engine loop":
        return [Alert("CRASH", "CRASH", "page", f"ffe engine CRASHED: {ev.message}. The process exits; orders and "
                                                "state are as stored.")]
    if isinstance(ev, ErrorEvent) and ev.where == "kill switch":
        # Its rest failed after the press was answered (HALTED stored, the rest said to follow): what it was still
        # to do may not be done.
        return [Alert("KILL_SWITCH_FAILED", "KILL_SWITCH_FAILED", "page",
                      f"ffe kill switch failed after it answered: {ev.message}. HALTED holds; orders it was "
                      "cancelling may still be open, pending approvals not rejected, a flatten's closing orders not "
                      "placed: check `ffe ctl orders` and the exchange, and press it again (`ffe ctl halt`).")]
    if isinstance(ev, RunEvent):
        if ev.phase == "start":
            state, recovered = ev.detail.get("state"), ev.detail.get("recovered_orders", 0)
            cut, why = ev.detail.get("last_run"), ev.detail.get("last_run_why")
            after = (f" after a run that {cut} ({why or 'killed, the machine stopped, a full disk, or a backup '
                                                    'restored'})" if cut else "")
            aside, urgent = _set_aside_text(ev.detail.get("set_aside"), why)
            earlier = _earlier_losses_text(ev.detail.get("set_aside_earlier"))
            if earlier:
                aside += earlier
                urgent = True
            damaged = _trail_damaged_text(ev.detail.get("trail_damaged"))
            if damaged:
                aside += damaged
                urgent = True
            unwatched = ev.detail.get("unwatched") or []
            if unwatched:
                aside += (f" Positions in {', '.join(unwatched)} are held but not traded (engine.symbols): no "
                          "price comes for them, so no stop-loss, take-profit or signal exits them.")
                urgent = True
            restored = ev.detail.get("restored")
            source, withheld, paged = _restored_text(restored)
            # The count is of the orders the records had in flight, taken up at start. After a restore the orders
            # the exchange made since the backup are journaled later in the start, and told by RECOVERED.
            recovered = f"{recovered} order(s) in flight recovered"
            since = (" The orders the exchange made since the backup, if any, follow in a RECOVERED alert."
                     if source else "")
            # A restored start HALTED, or one whose backup held a page pending, pages: the halt's own page may have
            # been pending in the backup, and the restore delivers none of those again.
            urgent = urgent or paged or (source != "" and state == "HALTED")
            if state in ("PAUSED", "HALTED"):  # it waits for the operator: a restart nobody watched needs someone
                resume = "ffe ctl resume --yes" if state == "HALTED" else "ffe ctl resume"
                return [Alert("STARTED", "STARTED", "page" if urgent else "warn",
                              f"ffe started ({ev.mode}){source} {state} ({ev.detail.get('reason', '')}){after}: "
                              f"nothing new trades until you resume it (`{resume}`); {recovered}."
                              f"{since}{withheld}{aside}")]
            source = source.rstrip(",")  # the sentence ends after it
            return [Alert("STARTED", "STARTED", "page" if urgent else "warn" if cut or aside or withheld else "info",
                          f"ffe started ({ev.mode}, {state}, {recovered}){source}{after}."
                          f"{since}{withheld}{aside}")]
        if ev.phase == "stop" and ev.detail.get("error"):
            return [Alert("START_FAILED", "START_FAILED", "page",
                          f"ffe start FAILED ({ev.mode}): {fmt.sentence(fmt.ends(str(ev.detail['error']), 400))} "
                          "The process exits 1 "
                          "(systemd starts it again); nothing trades until a start succeeds.")]
        if ev.phase == "stop":
            return [Alert("STOPPED", "STOPPED", "info", f"ffe stopped ({ev.mode}, {ev.detail.get('state')}).")]
    return []


EXIT_REASONS = frozenset({"stop_loss", "take_profit", "signal"})
# The keys whose window goes on across a restart: a crash loop's, raised at every start. Any other condition a
# restart meets again (a halt re-armed and halted again) is news, as in one process. Those sent past the outbox
# (RECORDS_UNWRITABLE, START_FAILED on records that cannot be trusted) keep theirs in sentalerts' file.
RESTART_KEYS = frozenset({"STARTED", "START_FAILED"})
KEPT_HALTED = "HALTED:kept:"  # a HALTED a start restates (alerts_for): its window goes on across restarts too


_FIGURES = re.compile(r"\d+")
# What a start says of the records it set aside (_set_aside_text): their counts, times and file's seq differ at every
# start of a crash loop, and are no news.
_SET_ASIDE = re.compile(r"\d+ audit records the database does not hold \([^)]*\) were set aside in [^\s:]+")


def _same_words(text: str, before: str) -> bool:
    """Whether two texts of an alert are the same but for the figures of the records set aside (any other figure, the
    orders recovered, is news)."""
    def plain(t: str) -> str:
        return _SET_ASIDE.sub(lambda m: _FIGURES.sub("#", m.group()), t)

    return plain(text) == plain(before)


def _across_restarts(key: str) -> bool:
    return key in RESTART_KEYS or key.startswith(KEPT_HALTED)


def _set_aside_text(summary: Any, why: Any = None) -> tuple[str, bool]:
    """The start's audit records set aside as never committed, said to the operator, and whether they show that
    the database lost committed records rather than the last moment before a kill (ahead.Ahead judges, as for
    `ffe doctor` and `ffe audit verify`): then it pages."""
    if not isinstance(summary, dict) or not summary.get("records"):
        return "", False
    ahead = Ahead.of(summary)
    if ahead.lost:
        return _lost_text(summary), True
    # The start knows why the last run ended when it stopped on a record it could not write (`why`).
    return (f" {ahead.held()} were set aside in {Path(str(summary.get('file', ''))).name}: written just before the "
            f"last run {'ended: ' + str(why) if why else 'was killed'}."), False


def _lost_text(summary: dict[str, Any], when: str = "") -> str:
    """Records set aside that show the database lost committed ones (`when`: at which start, if not this one)."""
    name = Path(str(summary.get("file", ""))).name
    return (f" {Ahead.of(summary).held()} were set aside in {name}{when}: {LOST}: stop it and restore the newest "
            "backup, or check the books against the exchange (`ffe doctor`, `ffe ctl balances`).")


def _earlier_losses_text(summaries: Any) -> str:
    """The losses set aside at earlier starts that no resume has checked (their starts failed before saying them,
    or said them to nobody who has acted yet), said to the operator as the start's own are."""
    if not isinstance(summaries, list):
        return ""
    return "".join(_lost_text(summary, " at an earlier start") for summary in summaries
                   if isinstance(summary, dict) and summary.get("records"))


def _restored_text(restored: Any) -> tuple[str, str, bool]:
    """A start's first after a restore (store.RESTORE_ALERTS_KEY), said to the operator: which backup; the alerts
    pending in it that the restore did not deliver again, by kind, for the operator to check they reached them
    (the engine the backup was taken from may have delivered them, or not); and whether one of them was a page."""
    if not isinstance(restored, dict):
        return "", "", False
    source = f", restored from a backup ({restored.get('backup')}, taken {restored.get('taken')}),"
    alerts = restored.get("alerts")
    if not isinstance(alerts, dict) or not alerts:
        return source, "", False
    kinds = ", ".join(f"{kind} x{n}" for kind, n in alerts.items())
    return (source, f" Alerts pending in the backup, not delivered again: {kinds} (the engine it was taken from may "
                    "never have delivered them: check that they reached you; `ffe audit tail` has what raised them).",
            bool(restored.get("pages")))


def _trail_damaged_text(found: Any) -> str:
    """The audit trail's current file found damaged at start (audit.trail_damage), said to the operator."""
    if not isinstance(found, dict):
        return ""
    return (f" The audit trail is DAMAGED before its last records: {found.get('file')}, first bad seq "
            f"{found['seq']}: run `ffe audit verify`, then `ffe doctor`. The database holds every record, so the "
            "engine trades on; backups take the damaged records from it.")


def _venue_said(error: str, width: int = 160) -> str:
    """What a venue answered, for a page: its start (the request) and its end (the exchange's words) within `width`;
    a refusal of the request's time says it is the machine's clock."""
    said = fmt.ends(error, width)
    if clock_refused(error):
        said += (": the exchange refused the request's time: this machine's clock is off; set it right (NTP: "
                 "timedatectl, chrony)")
    return said


def _unanswered(ev: ApprovalEvent) -> bool:
    """An approval ended without the operator's answer: its time to live ran out, or the engine dropped it (at a
    start, its symbol no longer traded). One they approved, rejected or halted over is theirs already."""
    return ev.outcome == "expired" or (ev.outcome == "rejected" and ev.by == "engine")


def _exit_refused(ev: OrderEvent) -> bool:
    """The strategy's exit (a stop-loss, a take-profit, a SELL signal: every sell is an exit) ended rejected, or
    accepted and then ended by the exchange on its own (expired, cancelled there) with the position it was to close
    still open; not when a halt stopped it, which the operator asked for."""
    ended = ev.status == "rejected" or (ev.status == "canceled" and present.ended_by_exchange(ev.error))
    return ended and ev.side == "sell" and ev.reason in EXIT_REASONS and "engine HALTED" not in ev.error


def cleared_keys(ev: Event) -> tuple[str, ...]:
    """The alert keys whose condition this event ends: what comes back after it is sent as the first was."""
    if isinstance(ev, OrderEvent):
        # An order no longer in doubt (in doubt again later is news), a sell that filled (an exit refused after it).
        settled = () if ev.status == "in_doubt" else (f"IN_DOUBT:{ev.client_order_id}",)
        return settled + ((f"EXIT_REFUSED:{ev.symbol}",) if ev.side == "sell" and ev.status == "filled" else ())
    if isinstance(ev, EngineStateChanged) and ev.state != ev.previous:
        left = {"HALTED": ("HALTED", "FLATTEN"), "PAUSED": ("RISK_PAUSE",)}.get(ev.previous or "", ())
        return left + (("REARMED",) if ev.state == "HALTED" else ())
    if isinstance(ev, EngineStateChanged) and ev.reason == "approval mode manual":
        return ("APPROVAL_MODE",)  # back to manual: auto again after it is news
    if isinstance(ev, KillSwitchEvent) and ev.action == "halt" and ev.follow_up:
        return ("CANCEL_FAILED",)  # a cancel that fails after it is news again
    if isinstance(ev, KillSwitchEvent) and ev.action == "flatten" and ev.follow_up:
        return ("FLATTEN",)  # what the flatten's closing orders did since its alert: the answer to its page
    if isinstance(ev, BreakerChanged):
        if ev.state == "closed":
            return (f"BREAKER_OPEN:{ev.venue}",)
        if ev.state == "open" and ev.previous != "open":
            return (f"BREAKER_CLOSED:{ev.venue}",)
    if isinstance(ev, ReconcileEvent) and ev.status in ("ok", "resolved", "accepted"):
        return ("RECONCILE", "RECONCILE:unreachable", "RECONCILE:clock")
    if isinstance(ev, ReconcileEvent) and ev.status in ("differences", "failed"):
        return ("RECONCILE_OK",)  # held again: the end of this hold is news, told once it comes
    return ()


@dataclass(slots=True)
class _Window:
    until: float
    repeats: int = 0
    last_text: str = ""
    severity: str = "info"  # the most severe alert of the key sent in this window
    kind: str = ""
    repeated: str = "info"  # the most severe of the repeats counted
    inherited: bool = False  # opened by the process before a restart (its alert is in the outbox)
    raised: float = 0.0  # of an inherited window: when its alert was raised (wall seconds)


@dataclass(slots=True)
class ChannelStatus:
    pending: int = 0
    sent: int = 0
    failures: int = 0
    dropped: int = 0  # every alert the outbox dropped for the channel, in every run (read from the outbox at start)
    last_success: float | None = None
    last_error: str = ""
    ok: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "sent": self.sent, "failures": self.failures, "dropped": self.dropped,
                "last_success": self.last_success, "last_error": self.last_error, "ok": self.ok}


@dataclass(slots=True)
class _Doubt:
    since: float
    symbol: str
    alerted: bool = False


class Notifier:
    """Raises alerts from events (a bus sink) and delivers them from the store's outbox. `start()` / `close()`."""

    def __init__(self, cfg: AlertSettings, store: Any, channels: list[Channel], *,
                 now: Callable[[], float], wall: Callable[[], float],
                 redact: Callable[[str], str] | None = None, sent_file: Path | None = None,
                 engine: str = "") -> None:
        self.cfg = cfg
        self._sent_file = sent_file  # the window of the alerts sent past the outbox, across restarts
        # Beside it: the outbox's alerts delivered whose sent mark could not be written (deliveries.py).
        self._delivered_file = deliveries.delivered_path(sent_file) if sent_file is not None else None
        self._delivered: dict[str, dict[str, Any]] = {}  # its entries: never delivered again
        # Which engine this is (host and data directory): the windows across a restart are its own.
        self._engine = engine
        # Sinks get the event as published (the bus redacts only the records it encodes): alert texts quote
        # errors and reasons, so they are redacted here before they are stored or sent anywhere.
        self._redact = redact
        self.store = store
        self.channels = channels
        self._now = now
        self._wall = wall
        self.status: dict[str, ChannelStatus] = {c.name: ChannelStatus() for c in channels}
        self.suppressed = 0
        self._windows: dict[str, _Window] = {}
        self._doubts: dict[str, _Doubt] = {}
        self._state: str | None = None  # the engine's state as its last events said, for the alerts' texts
        self._reconcile_held = False  # a reconciliation held entries (paged): its end is told, once
        # A START_FAILED was raised after the last STARTED, before a restart: the STARTED this start's window held
        # back (the same text as that last one) is sent once the start gets through (start_succeeded).
        self._ended_since_started = False
        self._started_held: Alert | None = None
        self._raised = 0  # rows added since the last flush the notifier itself made
        self._wake = {c.name: asyncio.Event() for c in channels}
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.checks: list[Callable[[], list[Alert]]] = []  # periodic conditions (stale data, stalled loop)

    # ------------------------------------------------------------------ raising
    def sink(self, ev: Event, line: bytes) -> None:
        if ev.name not in ALERTING:  # decisions, fills, ...: most events, and none raises an alert
            return
        if isinstance(ev, OrderEvent):
            self._track_doubt(ev)
            for key in cleared_keys(ev):
                self._end_window(key, self._now(), cleared=ev)
            for alert in alerts_for(ev, state=self._state, in_doubt=self._doubts):
                self.raise_alert(alert)
            return
        if isinstance(ev, EngineStateChanged):
            if ev.previous == "HALTED" and ev.state != "HALTED":
                # Re-armed (rare, the operator's doing: the small write is worth it): a disk that fills again is
                # news, and so is a HALTED a start keeps from before, in this run or after a restart.
                for key in [k for k in self._windows if k.startswith(KEPT_HALTED)]:
                    self._end_window(key, self._now())
                if self._sent_file is not None:
                    sentalerts.rearmed(self._sent_file, self._wall())
            self._state = ev.state
        elif isinstance(ev, RunEvent) and ev.phase == "stop" and not ev.detail.get("error"):
            # An orderly stop is the channel's last word: the repeats counted so far are summed up before it (but
            # those of the windows that go on across a restart, which close() leaves to the next start's count).
            for key in [k for k in self._windows if k not in RESTART_KEYS and not k.startswith(KEPT_HALTED)]:
                self._end_window(key, self._now())
        elif isinstance(ev, RunEvent) and ev.phase == "start":
            self._state = ev.detail.get("state")
            # Paused by reconciliation before the restart (its page sent then): the hold's end is still news.
            # (Not one whose hold ended before the restart: its reason says so, and its end was told then.)
            self._reconcile_held = says_held(str(ev.detail.get("reason", "")))
        for key in cleared_keys(ev):
            self._end_window(key, self._now(), cleared=ev)
        for alert in alerts_for(ev, state=self._state, in_doubt=self._doubts):
            self.raise_alert(alert)
        if isinstance(ev, ReconcileEvent):
            self._reconcile_told(ev)

    def start_succeeded(self, state: str) -> None:
        """The start got through, in `state`: a start failing after it is news (START_FAILED), and so is a disk
        that fills again (RECORDS_UNWRITABLE) unless the engine came up HALTED, as a restart into the same full
        disk does (sentalerts.start_succeeded). Kept for the next start, which may be that failure."""
        now = self._now()
        self._end_window("START_FAILED", now)
        if self.channels and self._sent_file is not None:
            sentalerts.start_succeeded(self._sent_file, self._wall(), halted=state == "HALTED")
        held, self._started_held = self._started_held, None
        if held is not None and self._ended_since_started:
            # The last the operator heard was the failure ("nothing trades until a start succeeds"), or the stop:
            # this one got through.
            # (A crash loop's starts never get here: its STARTED stays held back, once per window.)
            self._windows["STARTED"] = _Window(until=now + self.cfg.window_s, severity=held.severity,
                                               kind=held.kind)
            self._enqueue(held)

    def _reconcile_told(self, ev: ReconcileEvent) -> None:
        """A reconciliation that held entries (paged) is followed by one that agrees: the hold lifts by itself,
        but an engine it paused stays PAUSED until resumed, which nobody would know to do unless told."""
        if ev.status in ("differences", "failed"):
            self._reconcile_held = True
        elif ev.status == "accepted":
            self._reconcile_held = False  # the operator's own doing
        elif ev.status in ("ok", "resolved") and self._reconcile_held:
            self._reconcile_held = False
            then = ("The engine stays PAUSED until resumed: `ffe ctl resume`." if self._state == "PAUSED"
                    else f"The engine is {self._state or 'running'}.")
            self.raise_alert(Alert("RECONCILE_OK", "RECONCILE_OK", "warn",
                                   "ffe reconciliation: the venue answers and agrees with the journal again; it "
                                   f"holds entries no longer. {then}"))

    def raise_alert(self, alert: Alert) -> None:
        if _RANK[alert.severity] > _RANK[self.cfg.min_severity]:
            return
        now = self._now()
        w = self._windows.get(alert.key)
        # A window opened before a restart holds back the same alert again (a crash loop's start failing the same
        # way at every restart); news is sent: another text (a start that waits for the operator for another
        # reason), not the same words with other figures (the records each start of a loop sets aside).
        if w is not None and w.inherited and not _same_words(self._stored_text(alert), w.last_text):
            w = None
        if w is not None and now < w.until and _RANK[alert.severity] < _RANK[w.severity]:
            # More severe than what was sent for its key (a flatten's warning, then its failure): news, sent at
            # once; the window goes on at the new severity, its repeats so far still summed up at its end.
            w.severity = alert.severity
            self._enqueue(alert)
            return
        if w is not None and now < w.until:
            if w.inherited:
                if alert.key == "STARTED":
                    self._started_held = alert
                    if self._ended_since_started:
                        return  # sent once the start gets through (start_succeeded): it is no repeat then
                # Each start held back is a process of its own, said in its own log: not counted, as a summary at
                # the window's end would tell this start alone, as a repeat within its run.
                log.warning("alert not sent again: the same was sent within alerts.window_s (before a restart)",
                            kind=alert.kind, sent=fmt.iso(w.raised), text=self._stored_text(alert))
                self.suppressed += 1
                return
            w.repeats += 1
            w.last_text = alert.text
            if _RANK[alert.severity] < _RANK[w.repeated]:
                w.repeated = alert.severity
            self.suppressed += 1
            return
        self._windows[alert.key] = _Window(until=now + self.cfg.window_s, severity=alert.severity, kind=alert.kind)
        self._enqueue(alert)

    def cleared(self, key: str) -> None:
        """A condition that no event announces (stale data, a stalled loop or audit trail: the checks) cleared: its
        window ends at once, as for those cleared by an event (cleared_keys), so its return is news."""
        self._end_window(key, self._now())

    def _stored_text(self, alert: Alert) -> str:
        return self._redact(alert.text) if self._redact is not None else alert.text

    def _end_window(self, key: str, now: float, cleared: Event | None = None) -> None:
        """The window of a key ends (its time is up, or its condition cleared: `cleared`, the event that cleared
        it): the summary of its repeats."""
        w = self._windows.pop(key, None)
        if w is None or not w.repeats:
            return
        span = f"{self.cfg.window_s:g}" if now >= w.until else f"{now - (w.until - self.cfg.window_s):.0f}"
        # A page among the repeats keeps its severity: an operator who takes pages only still hears of it. Unless
        # the condition has cleared: its last text (entries held, say) is then no longer so, and the summary says so
        # as a warning, not as the page that would stand as the operator's last word.
        severity = "page" if w.repeated == "page" and cleared is None else "warn"
        since = f"; cleared since: {fmt.short(present.line(cleared.name, cleared.payload()), 120)}" \
            if cleared is not None else ""
        self.raise_alert(Alert(f"{w.kind}_REPEATED", f"{key}:summary", severity,
                               f"{w.repeats} more {w.kind} alert(s) in the last {span}s{since}; last: {w.last_text}"))

    def _enqueue(self, alert: Alert) -> None:
        ts = self._wall()
        text = self._stored_text(alert)
        for c in self.channels:
            self.store.add_alert(c.name, alert.key, alert.kind, alert.severity, text, ts, self._engine)
            self.status[c.name].pending += 1
            self._wake[c.name].set()
        self._raised += 1

    def _track_doubt(self, ev: OrderEvent) -> None:
        if ev.status == "in_doubt":
            self._doubts.setdefault(ev.client_order_id, _Doubt(self._now(), ev.symbol))
        else:
            self._doubts.pop(ev.client_order_id, None)

    def tick(self) -> None:
        """Once a second: summaries of windows that ended, orders long in doubt, the periodic checks."""
        now = self._now()
        for key, w in list(self._windows.items()):
            if now >= w.until:
                self._end_window(key, now)
        for cid, d in self._doubts.items():
            if not d.alerted and now - d.since >= self.cfg.in_doubt_s:
                d.alerted = True
                self.raise_alert(Alert("IN_DOUBT", f"IN_DOUBT:{cid}", "page",
                                       f"ffe order {cid} ({d.symbol}) still in doubt after {now - d.since:.0f}s: "
                                       "the venue has not confirmed or denied it. Check the venue's open orders."))
        for check in self.checks:
            for alert in check():
                self.raise_alert(alert)

    # ------------------------------------------------------------------ delivering
    async def start(self) -> None:
        # The windows of the alerts raised before a restart go on: a crash loop (a start failing again and again
        # as systemd restarts it) is told once per window, not once per restart.
        wall, now = self._wall(), self._now()
        # A start that got through since ended the loop: the same failure after it is news.
        succeeded = (sentalerts.last_start(self._sent_file) if self.channels and self._sent_file is not None
                     else None)
        rearmed = (sentalerts.last_rearm(self._sent_file) if self.channels and self._sent_file is not None
                   else None)
        recent = await self.store.recent_alerts(wall - self.cfg.window_s, self._engine)
        last_raised = {key: raised for key, _, _, _, raised in recent}
        # A start that failed after the last STARTED: raised in the outbox (after its records), or sent past it (a
        # start refused before anything could be recorded: the monitor's port held, a live start's exchange check).
        past_outbox = (sentalerts.last_sent(self._sent_file, "START_FAILED")
                       if self.channels and self._sent_file is not None else None)
        # Or a stop in order after it (STOPPED): the operator's last word is then that the engine stopped. The
        # outbox's in the order raised (a short run raises its STARTED and STOPPED within the same second).
        raised_order = [key for key, *_ in recent]
        started = raised_order.index("STARTED") if "STARTED" in raised_order else None
        self._ended_since_started = started is not None and (
            any(key in ("START_FAILED", "STOPPED") for key in raised_order[started + 1:])
            or (past_outbox or 0.0) > last_raised["STARTED"])
        for key, kind, severity, text, raised in recent:
            left = min(self.cfg.window_s, self.cfg.window_s - (wall - raised))
            if key == "START_FAILED" and succeeded is not None and raised <= succeeded:
                continue
            if key.startswith(KEPT_HALTED) and rearmed is not None and raised <= rearmed:
                continue
            if left > 0 and _across_restarts(key) and key not in self._windows:
                self._windows[key] = _Window(until=now + left, last_text=text, severity=severity, kind=kind,
                                             inherited=True, raised=raised)
        if self.channels and self._sent_file is not None and self._delivered_file is not None:
            sentalerts.prepare(self._sent_file)
            await self._mark_delivered()
            deliveries.prepare(self._delivered_file, self._delivered)
        if self.channels:
            self._session = new_session()
        for c in self.channels:
            self.status[c.name].pending = await self.store.pending_alerts(c.name)
            self.status[c.name].dropped = await self.store.dropped_alerts(c.name)
            self._tasks.append(asyncio.create_task(self._deliver(c), name=f"ffe-alerts-{c.name}"))
        self._tasks.append(asyncio.create_task(self._ticker(), name="ffe-alerts-tick"))
        self._tasks.append(asyncio.create_task(self._keeper(), name="ffe-alerts-outbox"))

    async def _ticker(self) -> None:
        """The once-a-second look (tick), which never waits on the database: a loop held by it (another process's
        lock) is a stall to see while it lasts; what it raises is written by the keeper once it can be."""
        while not self._closing.is_set():
            await self._a_second()
            try:
                self.tick()
            except Exception as exc:  # the ticker must keep going; the failure is logged
                log.error("alert tick failed", error=f"{type(exc).__name__}: {exc}")

    async def _a_second(self) -> None:
        """A second, or less when the notifier closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), 1.0)

    async def _keeper(self) -> None:
        """Once a second: the alerts raised between bars written, the outbox trimmed to alerts.outbox_max."""
        while not self._closing.is_set():
            await self._a_second()
            try:
                if self._raised:
                    # Alerts raised between bars (a summary, a stalled loop) are written now, not at the next bar.
                    self._raised = 0
                    await self.store.flush(audit_first=False)  # not held up by a stalled audit trail
                for c in self.channels:
                    st = self.status[c.name]
                    # Never the alert the delivery has taken (Store.next_alert): it is on its way, not dropped.
                    dropped = await self.store.trim_alerts(c.name, self.cfg.outbox_max)
                    for row in dropped:  # what it said, where the notice says to look for it
                        log.warning("alert dropped from the full outbox", channel=c.name, kind=row["kind"],
                                    severity=row["severity"], raised=fmt.iso(row["created_ts"]), text=row["text"])
                    if dropped:
                        st.dropped += len(dropped)
                        st.pending = max(0, st.pending - len(dropped))
                        log.warning("alert outbox full: least severe and oldest alerts dropped", channel=c.name,
                                    dropped=len(dropped))
            except Exception as exc:  # the keeper must keep going; the failure is logged
                log.error("alert outbox upkeep failed", error=f"{type(exc).__name__}: {exc}")

    async def _deliver(self, channel: Channel) -> None:
        st = self.status[channel.name]
        wake = self._wake[channel.name]
        while not self._closing.is_set():
            try:
                alert = await self.store.next_alert(channel.name, self._delivered_ids(channel.name))
            except Exception as exc:
                log.error("alert outbox read failed", channel=channel.name, error=f"{type(exc).__name__}: {exc}")
                alert = None
            if alert is None:
                if not await self._tell_dropped(channel, st):  # nothing else to send: the notice is tried alone
                    await self._back_off()
                    continue
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), 1.0)
                    await asyncio.sleep(0.05)  # let the bar's flush write the row before looking again
                except TimeoutError:
                    pass
                continue
            attempts = alert["attempts"]
            try:
                attempts = await self._send_with_retries(channel, alert, st)
            except DeliveryFailed as exc:
                attempts = alert["attempts"] + self.cfg.retry_attempts
                st.ok = False
                await self.store.alert_failed(alert["id"], attempts, str(exc))
                log.warning("alert not delivered; backing off", channel=channel.name, kind=alert["kind"],
                            error=str(exc), attempts=attempts)
                await self._back_off()
                continue
            sent_ts = self._wall()
            try:
                await self.store.alert_sent(alert["id"], attempts, sent_ts)
            except BaseException as exc:
                # Delivered all the same: kept beside the database, so that no start sends it again (a full disk
                # restarted into again and again), and marked sent by the first that can write.
                room = self._keep_delivered(alert, attempts, sent_ts)
                if not isinstance(exc, Exception):
                    raise  # cancelled: the mark may have been written; the next start sees which
                log.error("alert delivered, its sent mark not written: kept beside the database until it can be",
                          channel=channel.name, kind=alert["kind"], error=f"{type(exc).__name__}: {exc}")
                if not room:
                    log.warning("alerts delivered without their sent mark fill the file that keeps them: the rest "
                                "wait in the outbox for a start that can write", channel=channel.name)
                    return
            if self._sent_file is not None:  # the operator's last word now (send_now)
                sentalerts.delivered(self._sent_file, sent_ts)
            st.sent += 1
            st.pending = max(0, st.pending - 1)
            st.last_success = sent_ts
            st.ok = True
            st.last_error = ""
            await self._tell_dropped(channel, st)

    def _delivered_ids(self, channel: str) -> list[int]:
        return [deliveries.row_id(k) for k in self._delivered if k.rpartition(":")[0] == channel]

    def _keep_delivered(self, alert: dict[str, Any], attempts: int, sent_ts: float) -> bool:
        """An alert delivered whose sent mark was not written, kept (in memory, and in the file if it can be).
        Whether the file has room for another."""
        self._delivered[deliveries.entry_key(alert)] = {"cause": deliveries.row_digest(alert), "ts": sent_ts,
                                                        "attempts": attempts}
        if self._delivered_file is not None:
            deliveries.keep(self._delivered_file, self._delivered)
        return deliveries.room_for_one_more(self._delivered)

    async def _mark_delivered(self) -> None:
        """At start: the alerts a process before delivered without writing their sent mark are marked sent now, as
        they were then; those that still cannot be are kept, and not delivered again. Entries whose row is no longer
        that alert pending (marked after all, or a database put back from a backup) are let go."""
        assert self._delivered_file is not None
        found = deliveries.read(self._delivered_file)
        if not found:
            return
        rows = {deliveries.entry_key(r): r for r in await self.store.outbox_rows(
            [deliveries.row_id(k) for k in found])}
        kept: dict[str, dict[str, Any]] = {}
        writable = True
        for key, entry in found.items():
            row = rows.get(key)
            if row is None or row["status"] != "pending" or deliveries.row_digest(row) != entry["cause"]:
                continue
            if writable:
                try:
                    # Its attempts as counted when it left (those of the rounds before it included).
                    await self.store.alert_sent(row["id"], entry["attempts"], float(entry["ts"]))
                    continue
                except Exception as exc:  # still no room: kept, and not delivered again
                    writable = False
                    log.warning("alerts delivered before this start: their sent mark cannot be written yet",
                                error=f"{type(exc).__name__}: {exc}")
            kept[key] = entry
        self._delivered = kept
        if kept != found:
            deliveries.keep(self._delivered_file, kept)

    async def _back_off(self) -> None:
        """A failed round: the channel is left alone for `retry_max_s` (or until the notifier closes)."""
        try:
            await asyncio.wait_for(self._closing.wait(), self.cfg.retry_max_s)
        except TimeoutError:
            pass

    async def _tell_dropped(self, channel: Channel, st: ChannelStatus) -> bool:
        """The channel takes alerts: it is told of the alerts dropped for it that no delivered notice counted yet, in
        any run (the outbox says which), with their kinds and times. Recorded with the alerts it counted once the
        receiver answered. False when it was not delivered (tried again after the next delivery, or after a
        back-off when nothing else waits)."""
        try:
            untold = await self.store.untold_alerts(channel.name)
        except Exception as exc:
            log.error("alert outbox read failed", channel=channel.name, error=f"{type(exc).__name__}: {exc}")
            return False
        if not untold:
            return True
        row = {"key": "ALERTS_DROPPED", "kind": "ALERTS_DROPPED", "severity": "warn", "created_ts": self._wall(),
               "attempts": 0, "text": dropped_text(untold, self.cfg.outbox_max)}
        try:
            await self._send_with_retries(channel, row, st)
        except DeliveryFailed as exc:
            st.ok = False
            log.warning("alert not delivered", channel=channel.name, kind="ALERTS_DROPPED", error=str(exc))
            return False
        told = self._wall()
        st.sent += 1
        st.ok = True
        st.last_success = told
        try:
            await self.store.alerts_told([i for i, _, _ in untold], (channel.name, row["key"], row["kind"],
                                                                   row["severity"], row["text"], row["created_ts"]),
                                         told)
        except Exception as exc:  # not recorded: told again by the next notice (at least once)
            log.error("alert outbox update failed", channel=channel.name, error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def _send_with_retries(self, channel: Channel, alert: dict[str, Any], st: ChannelStatus) -> int:
        # Imported by the first delivery: an engine with no alert channel never needs it.
        from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt,
                              wait_exponential)

        assert self._session is not None
        cfg = self.cfg
        tried = int(alert["attempts"])

        def failed(rs: RetryCallState) -> None:
            st.failures += 1
            exc = rs.outcome.exception() if rs.outcome is not None else None
            st.last_error = str(exc)

        backoff = wait_exponential(multiplier=cfg.retry_initial_s, max=cfg.retry_max_s)

        def wait(rs: RetryCallState) -> float:
            # The channel's own Retry-After (a 429), as the exchange's is honoured: no try before it, though never
            # longer than the configured cap (a channel asking for an hour is tried again at retry_max_s).
            exc = rs.outcome.exception() if rs.outcome is not None else None
            asked = exc.retry_after if isinstance(exc, DeliveryFailed) else None
            return max(backoff(rs), min(asked, cfg.retry_max_s)) if asked is not None else backoff(rs)

        retrying = AsyncRetrying(stop=stop_after_attempt(cfg.retry_attempts), wait=wait,
                                 retry=retry_if_exception_type(DeliveryFailed), before_sleep=failed, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    tried += 1
                    await channel.send(self._session, alert, cfg.timeout_s)
        except DeliveryFailed as exc:
            st.failures += 1  # the last try of the round (before_sleep saw the others)
            st.last_error = str(exc)
            raise
        return tried

    async def send_now(self, alert: Alert) -> None:
        """Send past the outbox, one try per channel, for when nothing can be recorded (the outbox is in the
        database): the alert leaves now or not at all. The same cause sent within `alerts.window_s` before, by this
        process or one before a restart (a service manager restarting it into the same failure), is held back."""
        if not self.channels or _RANK[alert.severity] > _RANK[self.cfg.min_severity]:
            return
        text = self._redact(alert.text) if self._redact is not None else alert.text
        wall = self._wall()
        said = self._redact(alert.cause) if alert.cause and self._redact is not None else alert.cause or text
        cause = sentalerts.cause_digest(f"{self._engine}\n{said}")  # this engine's (a data directory copied whole
        # to another machine is another engine, whose first failure is news)
        sent = sentalerts.read(self._sent_file) if self._sent_file is not None else {}
        last = sent.get(alert.key)
        # Held back while it is still the last word the operator got: an alert since (a STARTED, a HALTED a start
        # restated) would be their last word otherwise.
        delivered = sent.get(sentalerts.DELIVERED)
        since = delivered is not None and delivered["ts"] > (last or {}).get("ts", wall)
        if last is not None and last["cause"] == cause and 0 <= wall - last["ts"] < self.cfg.window_s and not since:
            log.warning("alert not sent again: the same was sent within alerts.window_s (before a restart)",
                        kind=alert.kind, sent=fmt.iso(last["ts"]), text=text)
            return
        row = {"key": alert.key, "kind": alert.kind, "severity": alert.severity, "text": text, "created_ts": wall}
        told = False
        session = self._session if self._session is not None else new_session()
        try:
            for channel in self.channels:
                try:
                    await channel.send(session, row, self.cfg.timeout_s)
                except DeliveryFailed as exc:
                    log.warning("alert not delivered", channel=channel.name, kind=alert.kind, error=str(exc))
                else:
                    told = True
                    self.status[channel.name].sent += 1
        finally:
            if session is not self._session:
                await session.close()
        if told and self._sent_file is not None:  # not delivered anywhere: the next start tries again
            sent[alert.key] = {"cause": cause, "ts": wall}
            sentalerts.write(self._sent_file, sent)

    def lost(self, names: list[str], why: dict[str, str]) -> None:
        """Channels the account had that are not configured now: FAILING in the status for this run, saying `why`
        of each (nothing is queued for them), and a page on the channels left."""
        for name in names:
            self.status[name] = ChannelStatus(ok=False, last_error=why[name])
        if not names:
            return
        said = "; ".join(why[name] for name in names)
        self.raise_alert(Alert("ALERT_CHANNEL_LOST", "ALERT_CHANNEL_LOST", "page",
                               f"ffe alerts no longer go to {', '.join(names)}: {said}. Set it again in .env (or the "
                               "environment) and restart ffe to have them there."))

    def status_dict(self) -> dict[str, dict[str, Any]]:
        return {name: st.as_dict() for name, st in self.status.items()}

    async def drained(self, grace_s: float) -> None:
        """Until what is in the outbox has left on every channel that works, `grace_s` at most."""
        deadline = self._now() + grace_s
        while self._now() < deadline and any(st.pending and st.ok for st in self.status.values()):
            await asyncio.sleep(0.05)

    async def close(self, grace_s: float = 2.0) -> None:
        """Give what is in the outbox a short chance to leave (the stop alert), then end the tasks. What has not
        left stays in the outbox for the next start."""
        now = self._now()
        # The repeats counted so far go to the outbox, not lost with the process (a window kept from before a
        # restart counts none: the starts it holds back are not summed up).
        for key in list(self._windows):
            self._end_window(key, now)
        if self._raised:
            self._raised = 0
            try:
                await self.store.flush(audit_first=False)
            except Exception:
                pass
        await self.drained(grace_s)
        self._closing.set()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
