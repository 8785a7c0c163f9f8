"""How each event reads as one line of text: the console's log pane and `ffe audit tail` print the same words.

`line(name, fields)` takes an event's name and its fields: a live event's `payload()` or an audit record as read
back from the file (where enums are already plain strings and the time is text). Each line starts with the event's
name; the caller puts the time (and, in the audit tail, the sequence number) in front. What matters most to an
operator comes first, ids last, so a narrow screen cuts off the least useful part.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from . import fmt

Fields = Mapping[str, Any]


def _reason(f: Fields) -> str:
    return f" ({f['reason']})" if f.get("reason") else ""


def _ids(f: Fields, *names: str) -> str:
    """`order C1 decision D1`: the ids that are set, under their plain names."""
    labels = {"client_order_id": "order", "decision_id": "decision", "approval_id": "approval", "trade_id": "trade"}
    return "".join(f" {labels[n]} {f[n]}" for n in names if f.get(n) not in (None, ""))


def _decision(f: Fields) -> str:
    text = (f"{f.get('symbol')} {fmt.enum_text(f.get('action'))} conf {fmt.conf(f.get('confidence'))} "
            f"tier {f.get('tier')} -> {f.get('outcome') or '-'}")
    if f.get("quantity"):
        text += f" qty {fmt.qty(f.get('quantity'))}"
    if f.get("failed"):
        text += f" failed: {','.join(map(str, f['failed']))}"
    reason = f.get("reason")
    if reason and f.get("outcome") not in ("hold", "") and reason != f.get("strategy"):
        text += f" ({reason})"
    return text + _ids(f, "client_order_id", "approval_id", "decision_id")


def _order(f: Fields) -> str:
    text = (f"{f.get('symbol')} {fmt.enum_text(f.get('side'))} {fmt.qty(f.get('quantity'))} {f.get('type')} "
            f"{fmt.enum_text(f.get('status'))} {fmt.enum_text(f.get('reason'))}")
    if f.get("filled"):
        text += f" filled {fmt.qty(f.get('filled'))} @ {fmt.price(f.get('average'))}"
    if f.get("by"):  # who asked for it; the engine's own orders (and records older than this field) name nobody
        text += f" by {f['by']}"
    if f.get("cancel_by"):
        text += f" cancel by {f['cancel_by']}"
    if f.get("error"):
        text += f" error: {f['error']}"
    return text + _ids(f, "client_order_id", "decision_id")


def _fill(f: Fields) -> str:
    return (f"{f.get('symbol')} {fmt.enum_text(f.get('side'))} {fmt.qty(f.get('quantity'))} @ "
            f"{fmt.price(f.get('price'))} fee {fmt.fee(f.get('fee'))}" + _ids(f, "client_order_id"))


def _opened(f: Fields) -> str:
    return (f"{f.get('symbol')} {fmt.enum_text(f.get('side'))} {fmt.qty(f.get('quantity'))} @ "
            f"{fmt.price(f.get('entry_price'))} "
            f"SL {fmt.price(f.get('stop_loss'))} TP {fmt.price(f.get('take_profit'))}" + _ids(f, "decision_id"))


def _closed(f: Fields) -> str:
    return (f"{f.get('symbol')} {fmt.enum_text(f.get('side'))} {fmt.qty(f.get('quantity'))} "
            f"{fmt.price(f.get('entry_price'))} -> "
            f"{fmt.price(f.get('exit_price'))} pnl {fmt.money(f.get('pnl'), signed=True)} "
            f"fees {fmt.fee(f.get('fees'))} ({f.get('reason')})" + _ids(f, "trade_id", "decision_id"))


def _state(f: Fields) -> str:
    if f.get("restated"):  # said by a start, of a state stored before it: no change made then
        change = f"{f.get('state')} (kept from before this start)"
    elif f.get("state") == f.get("previous"):
        change = str(f.get("state"))
    else:
        change = f"{f.get('previous')} -> {f.get('state')}"
    return f"{change}: {f.get('reason')} (by {f.get('by') or '-'})"


def _breaker(f: Fields) -> str:
    change = (f"still {f.get('state')}" if f.get("previous") == f.get("state")  # a later failure: a new probe time
              else f"{f.get('previous')} -> {f.get('state')}")
    text = f"{f.get('venue')} {change} failures {f.get('failures')}"
    return text + (f": {f['error']}" if f.get("error") else "")


def _venue_fault(f: Fields) -> str:
    text = f"{f.get('venue')} {f.get('kind')} {f.get('phase')}"
    return text + (f": {f['detail']}" if f.get("detail") else "") + _ids(f, "client_order_id")


def _approval(f: Fields) -> str:
    return (f"{f.get('approval_id')} {f.get('outcome')} {f.get('symbol')} {fmt.enum_text(f.get('side'))} "
            f"{fmt.qty(f.get('quantity'))} @ {fmt.price(f.get('price'))} by {f.get('by') or '-'}"
            + _reason(f) + _ids(f, "client_order_id", "decision_id"))


def approve_answer(r: Fields) -> str:
    """What an approve did, as the operator reads it (`ffe ctl approve`, the console)."""
    if r.get("accepted") and r.get("in_doubt"):  # as a closing order's lost answer is said
        text = (f"approved {r.get('approval_id')}: its order {r.get('client_order_id')} is in doubt: the answer was "
                "lost; it is looked up by its id, and sent again only while its bar and its stops stand: check "
                "`ffe ctl orders`")
    elif r.get("accepted") and r.get("ended"):  # ended in its own answer, not all of it bought
        text = f"approved {r.get('approval_id')}: its order {r.get('client_order_id')} {r['ended']}"
    elif r.get("accepted"):
        text = f"approved {r.get('approval_id')}: order {r.get('client_order_id')}"
    elif r.get("client_order_id"):  # the re-check passed; the order made of it did not go through
        text = f"approved {r.get('approval_id')}: its order {r['client_order_id']} was refused: {r.get('reason')}"
    else:
        text = f"{r.get('approval_id')} refused on re-check: {r.get('reason')}"
    return fmt.printable(text)  # the refusal's reason may be an exchange's words


# How an order the exchange accepted and then ended on its own is worded (its error begins so; execution.py writes
# it): it expired (a time in force, self-trade prevention), the exchange cancelled it, or rejected it after accepting.
EXPIRED_THERE = "expired at the exchange"
CANCELED_THERE = "canceled at the exchange"
REJECTED_THERE = "ended rejected by the exchange"


def ended_by_exchange(error: str | None) -> bool:
    """Whether an order's error says the exchange ended it on its own (not ffe's cancel, not a refusal)."""
    return bool(error) and str(error).startswith((EXPIRED_THERE, CANCELED_THERE, REJECTED_THERE))


def order_ended(f: Fields) -> str:
    """What an order no longer open had become (its journal record: status, filled, average, symbol, error), for
    the answer to a cancel asked of it."""
    status, filled = f.get("status"), f.get("filled") or 0.0
    done = f"{fmt.qty(filled)} {f.get('symbol')} at {fmt.price(f.get('average'))}"
    if status == "filled":
        return f"it had filled {done}"
    if status == "canceled" and ended_by_exchange(f.get("error")):  # nobody's cancel: the exchange's own end
        return f"it had {f['error']}"
    if status == "canceled":
        return "it had been cancelled" + (f", after {done} filled" if filled else ", nothing filled")
    if status == "rejected":
        return "it had been rejected" + (f": {f['error']}" if f.get("error") else "")
    return f"it is {status} in the journal, and not an open order of this engine"


def _weights(f: Fields) -> str:
    weights = f.get("weights") or {}
    return " ".join(f"{k}={v:.3f}" if isinstance(v, (int, float)) else f"{k}={v}"
                    for k, v in weights.items()) + _reason(f)


def _reconcile(f: Fields) -> str:
    diffs = f.get("differences") or []
    text = f"{f.get('status')} ({len(diffs)} difference(s))" + (f" by {f['by']}" if f.get("by") else "")
    if diffs:
        text += ": " + "; ".join(fmt.compact(d) for d in diffs[:3]) + ("; …" if len(diffs) > 3 else "")
    own = f.get("own_coins")
    if isinstance(own, dict) and own:  # an accept with --own-coins: what it took as the operator's
        text += "; coins taken as the operator's own: " + ", ".join(f"{fmt.qty(q)} {c}" for c, q in own.items())
    return text


def _error(f: Fields) -> str:
    return f"[{f.get('where')}] {f.get('message')}"


def kill_summary(f: Fields, settled: frozenset[str] = frozenset()) -> str:
    """What a kill switch or flatten did: also the console's banner after one. `settled`: the orders whose failed
    cancel a later report ended, named without their error (no longer news)."""
    if f.get("follow_up"):
        return follow_up_summary(f)
    cancelled = list(f.get("cancelled") or [])
    failed = list(f.get("failed") or [])
    parts = [f"by {f.get('by') or '?'}: cancelled {len(cancelled)}"]
    if cancelled:
        parts.append(f"({', '.join(map(str, cancelled))})")
    parts.append(f"failed {len(failed)}")
    if failed:
        parts.append(_failures(failed, settled))
    filled = list(f.get("filled") or [])
    if filled:
        parts.append(f"filled before its cancel {len(filled)} ({', '.join(map(str, filled))})")
    if f.get("action") == "flatten":
        parts.append(f"closing {len(f.get('closing') or [])}")
    ended = [str(s) for s in f.get("flatten_ended") or []]
    if ended:
        parts.append(f"the flatten under way ended here, these still held: {', '.join(ended)} (`ffe ctl flatten` "
                     "closes them)")
    parts += _doubt(f) + _left(f)
    under_way = [u for u in f.get("under_way") or [] if isinstance(u, dict)]
    if under_way:  # answered before it was done: HALTED is stored, the rest follows (its own kill_switch event)
        parts.append("under way: " + "; ".join(
            f"{u['client_order_id']}: {u.get('detail')}" if u.get("client_order_id") else str(u.get("detail"))
            for u in under_way))
    if f.get("elapsed_ms"):
        parts.append(f"in {f['elapsed_ms']:.1f} ms")
    return fmt.printable(" ".join(parts))  # `by` and the errors are words from outside, as in line()


def follow_up_summary(f: Fields) -> str:
    """A flatten's follow-up, after some of its closing orders ended: what became of an entry on the wire when it
    began, what they closed, the closing orders placed for what they left, what failed, what is left as dust or
    waits. Not in the words of the flatten's own report: its `closing 0`, `cancelled 0` would read as nothing
    closed."""
    said = follow_up_parts(f)
    return fmt.printable(f"by {f.get('by') or '?'}: " + "; ".join(said or ["nothing more to do"]))


def follow_up_parts(f: Fields) -> list[str]:
    # What became of an entry on the wire when the flatten began first: a symbol whose entry bought nothing is
    # said so, not closed (no closing order was sent for it).
    parts = [f"the entry on the wire {x.get('client_order_id')} ({x.get('symbol')}): {x.get('detail')}"
             for x in f.get("entries") or [] if isinstance(x, dict)]
    # A kill switch's follow-up: orders whose cancel it reported failed, ended since.
    for what, key in (("cancelled since (its cancel reported failed)", "cancelled"),
                      ("filled before its cancel (reported failed)", "filled")):
        ids = [str(c) for c in f.get(key) or []]
        if ids:
            parts.append(f"{what} {len(ids)} ({', '.join(ids)})")
    closed = [str(s) for s in f.get("closed") or []]
    if closed:
        parts.append(f"the closing orders closed {', '.join(closed)}")
    # A position an earlier word left open that no closing order is known to have sold (an exit still working sold
    # it, or a closing order before a restart): what is known is that nothing is held any more.
    gone = [str(a.get("symbol")) for a in f.get("answers") or [] if isinstance(a, dict) and a.get("outcome") == "gone"]
    if gone:
        parts.append(f"nothing held any more in {', '.join(gone)}")
    closing = [str(c) for c in f.get("closing") or []]
    if closing:
        parts.append(f"{len(closing)} more closing order(s) placed for what they left ({', '.join(closing)})")
    failed = list(f.get("failed") or [])
    if failed:
        parts.append(f"failed {len(failed)} {_failures(failed)}")
    held = [str(s) for s in f.get("held") or []]
    if held:  # given up on earlier: the flatten is not done with them
        parts.append(f"still held, no closing order working on it: {', '.join(held)} (`ffe ctl close SYMBOL`)")
    return parts + _doubt(f) + _left(f)


def _doubt(f: Fields) -> list[str]:
    """Closing orders whose answer was lost: not closed as far as anyone knows, the operator's to check."""
    doubt = [str(c) for c in f.get("in_doubt") or []]
    if not doubt:
        return []
    return [f"in doubt {len(doubt)} ({', '.join(doubt)}): the answer was lost, "
            "the position is held until the exchange says: check the exchange"]


def _failures(failed: list[Any], settled: frozenset[str] = frozenset()) -> str:
    def one(x: Any) -> str:
        if not isinstance(x, dict):
            return str(x)
        name = str(x.get("client_order_id") or x.get("symbol"))
        return name if name in settled else f"{name}: {x.get('error')}"

    return "(" + ", ".join(map(one, failed[:3])) + ")"


def _left(f: Fields) -> list[str]:
    """What a flatten leaves: dust no order can sell, positions waiting for the exchange or for an exit."""
    parts = []
    dust = list(f.get("dust") or [])
    if dust:
        parts.append("left as dust, below the venue's minimum order: " + ", ".join(
            f"{d.get('symbol')} {fmt.qty(d.get('quantity'))}" for d in dust if isinstance(d, dict)))
    waiting = [w for w in f.get("waiting") or [] if isinstance(w, dict)]
    if waiting:
        parts.append(f"waiting for the exchange's Retry-After until {fmt.iso(waiting[0].get('until'))} "
                     "(closed once it is over): " + ", ".join(str(w.get("symbol")) for w in waiting))
    after_exit = [w for w in f.get("after_exit") or [] if isinstance(w, dict)]
    if after_exit:
        parts.append("after an exit still working (its cancel not done: closed once it has ended): "
                     + ", ".join(str(w.get("symbol")) for w in after_exit))
    return parts


def kill_headline(f: Fields, settled: frozenset[str] = frozenset()) -> str:
    """The kill switch's or flatten's report as the operator reads it first: the console's banner, `ffe ctl`
    (`settled`: as kill_summary)."""
    if f.get("follow_up") and f.get("action") == "halt":
        what = "KILL SWITCH follow-up"
    elif f.get("follow_up"):
        what = "FLATTEN follow-up, HALTED,"
    else:
        what = "FLATTEN, then HALTED," if f.get("action") == "flatten" else "KILL SWITCH: HALTED"
    return f"{what} {kill_summary(f, settled)}"


def found_nothing(f: Fields) -> bool:
    """Whether a kill switch's report says it found nothing to do: pressed again while an earlier press stands (its
    cancels done, or under way), every order left to cancel was the earlier's."""
    if f.get("action") != "halt" or f.get("follow_up"):
        return False
    return not any(f.get(k) for k in ("cancelled", "failed", "filled", "in_doubt", "flatten_ended", "under_way",
                                      "dust", "waiting", "after_exit", "closing"))


def halt_banner(first: Fields, later: list[Fields]) -> str:
    """The console's banner for a halt: its first press's report (`first`), then what each later press and the
    halt's follow-up did while the engine stayed HALTED (`later`), in order: none said in place of what came
    before (a second press that retries a failed cancel, or finds nothing left, would hide what the first
    cancelled). A failed cancel that a later report ended is named without its error there: the banner's rows then
    show how it ended."""
    text = kill_headline(first, _ended_after(later))
    for i, f in enumerate(later):
        if found_nothing(f):
            text += f"; pressed again by {f.get('by') or '?'}: nothing more to cancel"
        elif f.get("follow_up"):
            text += f"; follow-up {kill_summary(f)}"
        else:
            text += f"; pressed again {kill_summary(f, _ended_after(later[i + 1:]))}"
    return text


def _ended_after(reports: list[Fields]) -> frozenset[str]:
    """The orders these reports say cancelled or filled."""
    return frozenset(str(c) for f in reports for key in ("cancelled", "filled") for c in f.get(key) or [])


def _kill(f: Fields) -> str:
    return f"{f.get('action')}{' follow-up' if f.get('follow_up') else ''} {kill_summary(f)}"


_MONEY_DETAIL = frozenset({"equity", "cash"})  # a run's detail figures that are money


# What a start says that needs the operator (a run cut short, a limit breached, records set aside or damaged,
# positions nothing watches): first in its line, which a narrow screen cuts.
_RUN_WARNINGS = ("last_run", "last_run_why", "trail_damaged", "breached", "set_aside", "set_aside_earlier",
                 "unwatched")


def _run(f: Fields) -> str:
    detail = f.get("detail") or {}
    first = [k for k in _RUN_WARNINGS if k in detail]
    keep = " ".join(f"{k}={fmt.money(detail[k]) if k in _MONEY_DETAIL else fmt.compact(detail[k])}"
                    for k in first + [k for k in detail if k not in first])
    return f"{f.get('phase')} {f.get('mode')} {keep}".rstrip()


def _log(f: Fields) -> str:
    return f"{f.get('level')} {f.get('message')}"


def _override(f: Fields) -> str:
    return str(f.get("message"))


_SKIP = ("ts", "seq", "event", "audit", "prev")  # prev: the audit chain's hash, not the event's


def _generic(f: Fields) -> str:
    text = " ".join(f"{k}={fmt.compact(v)}" for k, v in f.items() if k not in _SKIP)
    return fmt.short(text, 300)


BODIES: dict[str, Callable[[Fields], str]] = {
    "decision": _decision, "order": _order, "fill": _fill, "position_opened": _opened, "position_closed": _closed,
    "engine_state": _state, "breaker": _breaker, "approval": _approval, "weights": _weights,
    "reconcile": _reconcile, "error": _error, "kill_switch": _kill, "run": _run, "log": _log,
    "venue_fault": _venue_fault,
    "override": _override,
}


def line(name: str, fields: Fields) -> str:
    """One line for one event, starting with its name. A record of an unexpected shape (an older file, a damaged
    line) is shown field by field rather than failing the reader."""
    body = BODIES.get(name, _generic)
    try:
        text = body(fields)
    except (TypeError, ValueError, AttributeError, KeyError):
        text = _generic(fields)
    # Words stored from outside (a request's reason and by, an exchange's error; a record of an older release, which
    # took them as they came) are shown with what a terminal would act on escaped: a new line would forge a record.
    return fmt.printable(f"{name} {text}".rstrip())
