"""Who asked: every control request that changes something records its `by` in the audit events that say what it
changed, in the database and the audit file alike (docs/cli.md: "Every request carries `by`, recorded with what it
changed"). An order the operator asked for (`order`, `close`, an approved entry, a flatten's closing order) says
who asked in each of its own `order` events and in its journaled intent; a cancel says who asked for it in the
order's events from then on; an accept in its `reconcile` record; a backup in its `backup` record.

Real engines over real SQLite files and audit files, asked on their real control socket: a paper engine (scripted
providers, manual approval) and a live engine on the fake Binance; `ffe audit tail` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from conftest import audit_lines, engine_session, run_ffe
from ffe_engine.api import COMMANDS
from ffe_engine.control import request
from live_helpers import (BTC, engine_loop, fx, live_settings, next_bar, reconcile_twice, rows,  # noqa: F401
                          stored_events, wait_for)
from pipeline_helpers import BUY, pipelines
from test_approvals import approvals, manual
from test_halt_while_busy import served

_ = pipelines  # a fixture

ETH = "ETH/USDT"

# The commands that only read; every other one changes something and must record who asked. A command added to the
# table is one of these or is covered below (the test naming it), or this module fails.
READ_ONLY = {"status", "health", "orders", "trades", "balances", "profit", "why"}
COVERED = {
    "approve": "paper", "reject": "paper", "order": "paper, live", "cancel": "paper, live", "close": "paper, live",
    "flatten": "paper, live", "resume": "paper, live", "pause": "paper", "mode": "paper", "halt": "paper",
    "accept": "live", "backup": "live",
    "settle": "test_reconcile_stuck_in_doubt (order_settled.by)",
    "sold-by-hand": "test_coins_toward_position (the by_hand order's by)",
}


def test_every_command_that_changes_something_is_checked_for_who_asked():
    assert set(COMMANDS) - READ_ONLY == set(COVERED)


async def ask(sock: Path, cmd: str, **args: Any) -> Any:
    answer = await request(sock, cmd, args)
    assert answer["ok"], (cmd, answer)
    return answer["result"]


def order_events(events: list[dict], cid: str) -> list[dict]:
    return [e for e in events if e["event"] == "order" and e["client_order_id"] == cid]


def intent_by(db: Path, cid: str) -> Any:
    ((intent,),) = rows(db, "SELECT intent FROM orders WHERE client_order_id = ?", (cid,))
    return json.loads(intent).get("by")


def both_records(db: Path, audit: Path) -> list[list[dict]]:
    """The events as the database holds them and as the audit file holds them: each is checked."""
    stored = [json.loads(r[0]) for r in rows(db, "SELECT data FROM events ORDER BY seq")]
    trail = audit_lines(audit)
    assert [e["seq"] for e in stored] == [e["seq"] for e in trail]
    return [stored, trail]


def assert_order_asked_by(events: list[dict], db: Path, cid: str, by: str) -> None:
    said = order_events(events, cid)
    assert said and [e.get("by") for e in said] == [by] * len(said), said
    assert intent_by(db, cid) == by


def assert_cancel_asked_by(events: list[dict], cid: str, by: str, cancel_by: str) -> None:
    said = order_events(events, cid)
    assert said[-1]["status"] == "canceled", said
    assert said[-1].get("by") == by and said[-1].get("cancel_by") == cancel_by, said[-1]


def states_by(events: list[dict]) -> list[tuple[str, str, str]]:
    return [(e["state"], e["reason"], e["by"]) for e in events if e["event"] == "engine_state"]


async def test_paper_every_change_asked_on_the_socket_says_who_asked(tmp_path, pipelines):
    s = manual(tmp_path, risk={"max_position_pct": 20, "risk_per_trade_pct": 0.02})
    p = await pipelines(s, script={BTC: (BUY, 0.8), ETH: (BUY, 0.8)})
    await p.bars(1)
    pending = {a["symbol"]: a["approval_id"] for a in await approvals(p, "pending")}
    sock = p.settings.socket_path
    async with served(p):
        approved = await ask(sock, "approve", id=pending[BTC], by="kim-approve")
        assert approved["accepted"], approved
        await ask(sock, "reject", id=pending[ETH], by="lee-reject")
        await p.bars(1)
        assert p.engine.portfolio.holding(BTC) is not None

        closed = await ask(sock, "close", symbol=BTC, by="bob-close")
        assert closed["accepted"], closed
        await p.bars(1)
        assert p.engine.portfolio.holding(BTC) is None

        first = await ask(sock, "order", symbol=BTC, side="buy", quantity=0.01, by="alice-order")
        assert first["accepted"], first
        cancelled = await ask(sock, "cancel", id=first["client_order_id"], by="carol-cancel")
        assert cancelled["cancelled"], cancelled  # the paper venue fills at the next bar: still open here
        second = await ask(sock, "order", symbol=BTC, side="buy", quantity=0.01, by="alice-order")
        assert second["accepted"], second
        await p.bars(1)
        assert p.engine.portfolio.holding(BTC) is not None

        flat = await ask(sock, "flatten", by="jack-flatten")
        (closing,) = flat["closing"]
        await ask(sock, "resume", confirm=True, by="ivy-rearm")
        await ask(sock, "mode", mode="auto", by="erin-mode")  # it was manual: a change
        await ask(sock, "pause", by="dave-pause")
        await ask(sock, "resume", by="ann-resume")
        open_at_halt = await ask(sock, "order", symbol=ETH, side="buy", quantity=0.01, by="alice-order")
        assert open_at_halt["accepted"], open_at_halt  # still open at the paper venue: the halt cancels it
        await ask(sock, "halt", by="hank-halt")
        await p.engine.flush()

    db = p.settings.db_path
    for events in both_records(db, p.settings.audit_path):
        said = [(e["approval_id"], e["outcome"], e["by"]) for e in events if e["event"] == "approval"
                and e["outcome"] != "pending" and e["approval_id"] in pending.values()]
        assert said[:2] == [(pending[BTC], "approved", "kim-approve"), (pending[ETH], "rejected", "lee-reject")]
        assert_order_asked_by(events, db, approved["client_order_id"], "kim-approve")
        assert_order_asked_by(events, db, closed["client_order_id"], "bob-close")
        assert_order_asked_by(events, db, first["client_order_id"], "alice-order")
        assert_cancel_asked_by(events, first["client_order_id"], "alice-order", "carol-cancel")
        assert_order_asked_by(events, db, second["client_order_id"], "alice-order")
        assert_order_asked_by(events, db, closing, "jack-flatten")
        assert_cancel_asked_by(events, open_at_halt["client_order_id"], "alice-order", "hank-halt")
        # a flatten's kill switch, then its closing orders; then the halt
        assert [(e["action"], e["by"]) for e in events if e["event"] == "kill_switch"] == [
            ("halt", "jack-flatten"), ("flatten", "jack-flatten"), ("halt", "hank-halt")]
        assert states_by(events)[-6:] == [
            ("HALTED", "flatten", "jack-flatten"), ("RUNNING", "re-armed", "ivy-rearm"),
            ("RUNNING", "approval mode auto", "erin-mode"), ("PAUSED", "ffe ctl pause", "dave-pause"),
            ("RUNNING", "resume", "ann-resume"), ("HALTED", "ffe ctl halt", "hank-halt")]
        # the strategy's own orders name nobody
        assert all(e.get("by", "") == "" for e in events if e["event"] == "order" and e["reason"] == "signal"
                   and e["client_order_id"] != approved["client_order_id"])


async def test_live_every_change_asked_on_the_socket_says_who_asked_in_the_records_and_the_audit_tail(tmp_path, fx):
    settings = live_settings(tmp_path, fx, risk={"max_position_pct": 100, "max_concentration_pct": 100,
                                                 "max_orders_per_minute": 100})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert await next_bar(e, fx) == 1
        await running.start_control()
        sock = settings.socket_path
        async with engine_loop(e):
            await ask(sock, "resume", by="ann-resume")
            bought = await ask(sock, "order", symbol=BTC, side="buy", quantity=0.002, by="alice-order")
            assert bought["accepted"], bought
            await wait_for(lambda: e.portfolio.holding(BTC) is not None, timeout=20, what="the buy filled")

            fx.partial_fill_next(0.4)
            resting = await ask(sock, "order", symbol=BTC, side="buy", quantity=0.002, by="alice-order")
            cid = resting["client_order_id"]
            assert resting["accepted"] and fx.open_order(cid) is not None, resting
            cancelled = await ask(sock, "cancel", id=cid, by="carol-cancel")
            assert cancelled["cancelled"], cancelled

            closed = await ask(sock, "close", symbol=BTC, by="bob-close")
            assert closed["accepted"], closed
            await wait_for(lambda: e.portfolio.holding(BTC) is None and not e.orders.live, timeout=20,
                           what="the position closed")

            fx.balances["USDT"].free += 7.0  # a difference for the operator to accept
            assert [d["kind"] for d in await reconcile_twice(e)] == ["cash", "equity"], e.reconcile_blocked
            assert await ask(sock, "accept", by="fay-accept")
            await ask(sock, "backup", to=str(tmp_path / "backups"), by="gina-backup")

            if e.state.value != "RUNNING":  # held by the differences until resumed
                await ask(sock, "resume", by="ann-resume")
            again = await ask(sock, "order", symbol=BTC, side="buy", quantity=0.002, by="alice-order")
            assert again["accepted"], again
            await wait_for(lambda: e.portfolio.holding(BTC) is not None, timeout=20, what="the buy filled")
            flat = await ask(sock, "flatten", by="jack-flatten")
            (closing,) = flat["closing"]
            await wait_for(lambda: not e.orders.live, timeout=20, what="the closing order ended")
            await e.flush()

    for events in both_records(db, settings.audit_path):
        assert_order_asked_by(events, db, bought["client_order_id"], "alice-order")
        assert_order_asked_by(events, db, cid, "alice-order")
        assert_cancel_asked_by(events, cid, "alice-order", "carol-cancel")
        assert_order_asked_by(events, db, closed["client_order_id"], "bob-close")
        assert_order_asked_by(events, db, again["client_order_id"], "alice-order")
        assert_order_asked_by(events, db, closing, "jack-flatten")
        assert [(r["status"], r.get("by")) for r in events if r["event"] == "reconcile"
                and r["status"] == "accepted"] == [("accepted", "fay-accept")]
        assert [r.get("by") for r in events if r["event"] == "backup"] == ["gina-backup"]
        assert ("RUNNING", "resume", "ann-resume") in states_by(events)

    tail = await asyncio.to_thread(run_ffe, tmp_path, "audit", "tail", "-n", "1000", "--event", "order",
                                   "--log-dir", str(settings.audit_path.parent))
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert any(bought["client_order_id"] in ln and "by alice-order" in ln for ln in lines), tail.stdout
    assert any(cid in ln and "CANCELED" in ln.upper() and "cancel by carol-cancel" in ln for ln in lines), tail.stdout
    assert any(closing in ln and "by jack-flatten" in ln for ln in lines), tail.stdout


def test_an_order_record_without_who_asked_still_reads():
    """Records written before `by` was recorded: an intent and an `order` event without it load and read."""
    from ffe_engine import present
    from ffe_engine.risk import OrderIntent

    old = {"symbol": BTC, "side": "buy", "quantity": 0.01, "reason": "operator", "decision_id": None}
    assert OrderIntent.from_dict(old).by == ""
    line = present.line("order", {"client_order_id": "ffe-1", "symbol": BTC, "side": "buy", "quantity": 0.01,
                                  "type": "market", "status": "filled", "reason": "operator"})
    assert line.startswith("order BTC/USDT") and " by " not in line, line
