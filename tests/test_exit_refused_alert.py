"""An exit the exchange refuses (a trading halt on the symbol: Binance's "Market is closed."), or accepts and then
ends on its own with nothing sold (expired, cancelled by the exchange), leaves the position unprotected while nobody
watches: the operator is paged, once per symbol and window, not at every refused try."""

from __future__ import annotations

import pytest

from conftest import engine_session
from fake_exchange import FakeBinance
from live_helpers import BTC, M, POST_ORDER, engine_loop, fx, rows, wait_for  # noqa: F401
from receiver import Receiver
from test_live_books import climbing, strategy_entry, strategy_settings

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}


def falling(fx: FakeBinance, drop: float) -> None:
    """From the next bar on, the klines (and the price market orders fill at) stand `drop` lower."""
    climb = fx.price_path
    turn = fx.market_clock()

    def path(sid: str, ts: int) -> float:
        return round(climb(sid, ts) * ((1.0 - drop) if ts > turn else 1.0), 2)

    fx.price_path = path


@pytest.mark.parametrize("code, msg, said", [
    (-1013, "Market is closed.", "Market is closed"),
    # refused for the machine's clock: the exchange's words come after a long prefix of ffe's (the order's id,
    # side, quantity and symbol), and the page says what to do about the clock
    (-1021, "Timestamp for this request is outside of the recvWindow.", "outside of the recvWindow"),
])
async def test_a_stop_loss_the_exchange_refuses_pages_the_operator(tmp_path, fx, code, msg, said):
    hook = await Receiver().start()
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, alerts={"webhook_url": hook.url + "/hook", **FAST})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            fx.fault(POST_ORDER, "error", times=100, status=400, code=code, msg=msg)
            falling(fx, 0.2)
            for _ in range(3):  # through the stop-loss: each bar's exit refused (a refused time counts toward the
                fx.market_clock.step()  # breaker, which opens on the third, and refuses the exits after it unsent)
                before = len(fx.requests_to(POST_ORDER))
                await wait_for(lambda: len(fx.requests_to(POST_ORDER)) > before or e.breaker.state == "open",
                               timeout=30, what="an exit")
            assert BTC in e.portfolio.positions
            pages = lambda: [r.body for r in hook.delivered if r.body.get("kind") == "EXIT_REFUSED"]  # noqa: E731
            await wait_for(lambda: pages(), timeout=15, what="the page")
            (page,) = pages()
            assert page["severity"] == "page" and page["key"] == f"EXIT_REFUSED:{BTC}"
            assert "stop_loss" in page["text"] and said in page["text"] and BTC in page["text"], page
            assert ("clock" in page["text"]) is (code == -1021), page
    await hook.stop()


async def exit_ended_by_the_exchange(tmp_path, fx, status: str):
    """A stop-loss the exchange accepts (answered NEW, nothing filled) and then ends on its own with `status`: the
    journal's row of it and the pages delivered."""
    hook = await Receiver().start()
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, alerts={"webhook_url": hook.url + "/hook", **FAST},
                                 engine={"order_poll_s": 0.2})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            fx.fault(POST_ORDER, "fill_later", seconds=60)
            falling(fx, 0.2)
            fx.market_clock.step()
            (sent,) = await wait_for(lambda: fx.requests_to(POST_ORDER)[1:], timeout=30, what="the exit")
            cid = sent.params["newClientOrderId"]
            await wait_for(lambda: cid in e.orders.live, timeout=30, what="the exit open")
            fx.end(cid, status)
            ended = "SELECT status, error FROM orders WHERE client_order_id = ? AND status IN ('rejected', 'canceled')"
            (row,) = await wait_for(lambda: rows(settings.db_path, ended, (cid,)), timeout=30,
                                    what="the exit's end journaled")
            await wait_for(lambda: [r for r in hook.delivered if r.body.get("kind") == "EXIT_REFUSED"],
                           timeout=15, what="the page")
            pages = [r.body for r in hook.delivered if r.body.get("kind") == "EXIT_REFUSED"]
            answer = await e.operator_cancel(cid)  # asked of it once ended: what it had become
    await hook.stop()
    assert not answer["cancelled"], answer
    return row, pages, answer["reason"]


async def test_an_exit_the_exchange_accepts_then_rejects_says_so_in_the_journal_and_the_page(tmp_path, fx):
    (status, error), pages, _answer = await exit_ended_by_the_exchange(tmp_path, fx, "REJECTED")
    assert status == "rejected"
    assert "rejected by the exchange after it was accepted" in error and "nothing filled" in error
    (page,) = pages
    assert "rejected by the exchange after it was accepted" in page["text"] and "()" not in page["text"]


@pytest.mark.parametrize("status, said", [("EXPIRED", "expired at the exchange"),
                                          ("CANCELED", "canceled at the exchange")])
async def test_an_exit_the_exchange_ends_on_its_own_says_why_in_the_journal_and_pages(tmp_path, fx, status, said):
    """Expired (a time in force, self-trade prevention) or cancelled by the exchange itself: the position stays open
    and unprotected as after a refusal, and the operator is paged the same way."""
    (ended, error), pages, answer = await exit_ended_by_the_exchange(tmp_path, fx, status)
    assert ended == "canceled"
    assert said in error and "nothing filled" in error
    (page,) = pages
    assert said in page["text"] and "stop_loss" in page["text"] and "stays open" in page["text"], page
    # A cancel asked of it then is not told it "had been cancelled": nobody cancelled it.
    assert answer.startswith(f"it had {said}") and answer.endswith("nothing filled"), answer
