"""The console while its own approve of a trade is under way (the order made of it on the wire): that trade is no
longer waiting for approval. It cannot expire (its time to live was checked before the order), and a flatten or kill
switch pressed meanwhile does not reject it: it ends `approved`, its order cancelled once the exchange has answered
it. The approvals pane, the status line and the flatten's dialog say so.

Real parts: the console under Pilot on an engine opened in live mode (real ccxt), its SQLite database, and the fake
Binance on 127.0.0.1, whose answer to the order hangs."""

from __future__ import annotations

import re

from ffe_tui.app import ConsoleApp
from ffe_tui.panes import ApprovalsTable
from live_helpers import BTC, POST_ORDER, fx, stored_events  # noqa: F401
from test_live_books import climbing, strategy_settings
from test_tui_helpers import screen_text, status_text, until

HANG_S = 10.0  # the order's answer: long enough to look at the console meanwhile, within the client's timeout


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


async def test_a_trade_whose_approve_is_under_way_is_not_said_waiting_nor_rejected_by_a_flatten(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"approval": "manual", "approval_ttl_s": 600.0},
                                 exchange={"timeout_ms": 20_000})
    app = ConsoleApp(settings, live=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.snap is not None and "RUNNING" in status_text(app), "the engine RUNNING")
        e = app.engine
        fx.market_clock.step()
        table = app.query_one("#approvals", ApprovalsTable)
        await until(pilot, lambda: table.row_count == 1, "a trade waiting for approval", timeout=60)
        (aid,) = [k.value for k in table.rows]
        await until(pilot, lambda: "approvals 1" in status_text(app), "the status line counting it")
        table.focus()
        await pilot.press("down", "up")
        assert table.selected() == aid
        fx.fault(POST_ORDER, "hang", seconds=HANG_S, execute=True)
        await pilot.press("a")
        await until(pilot, lambda: fx.requests_to(POST_ORDER), "the approve's order on the wire")

        await pilot.press("F")
        await until(pilot, lambda: "FLATTEN" in screen_text(app) and "then HALT" in screen_text(app),
                    "the flatten's dialog")
        said = _flat(screen_text(app))
        assert "waiting for approval" not in said and "rejected" not in said, said
        assert "being approved" in said and "cancelled once the exchange has answered it" in said, said
        await pilot.press("n")

        def row() -> str:
            return next((line for line in screen_text(app).splitlines() if aid in line), "")

        await until(pilot, lambda: "approving" in row(), "the pane saying its approve is under way")
        assert not re.search(r"\d+m\d\ds", row()), row()  # no countdown to an expiry that cannot come
        assert "approvals 0" in status_text(app), status_text(app)  # none waiting

        def ends() -> list[dict]:
            return [a for a in stored_events(settings.db_path, "approval") if a.get("outcome") != "pending"]

        # Its end stored, not only out of the pending ones: a quit while the end is being written cuts it off, as
        # a kill would (the next start ends it from its order).
        await until(pilot, lambda: aid not in e.approvals.pending and ends(), "the approve done",
                    timeout=HANG_S + 20)
    (ended,) = ends()
    assert ended["outcome"] == "approved" and ended["approval_id"] == aid, ended
    assert BTC in e.portfolio.positions
