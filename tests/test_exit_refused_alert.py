"""An exit the exchange refuses (a trading halt on the symbol: Binance's "Market is closed.") leaves the position
unprotected while nobody watches: the operator is paged, once per symbol and window, not at every refused try."""

from __future__ import annotations

from conftest import engine_session
from fake_exchange import FakeBinance
from live_helpers import BTC, M, POST_ORDER, engine_loop, fx, wait_for  # noqa: F401
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


async def test_a_stop_loss_the_exchange_refuses_pages_the_operator(tmp_path, fx):
    hook = await Receiver().start()
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, alerts={"webhook_url": hook.url + "/hook", **FAST})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            fx.fault(POST_ORDER, "error", times=100, status=400, code=-1013, msg="Market is closed.")
            falling(fx, 0.2)
            for _ in range(3):  # through the stop-loss: each bar's exit refused
                fx.market_clock.step()
                before = len(fx.requests_to(POST_ORDER))
                await wait_for(lambda: len(fx.requests_to(POST_ORDER)) > before, timeout=30, what="an exit")
            assert BTC in e.portfolio.positions
            pages = lambda: [r.body for r in hook.delivered if r.body.get("kind") == "EXIT_REFUSED"]  # noqa: E731
            await wait_for(lambda: pages(), timeout=15, what="the page")
            (page,) = pages()
            assert page["severity"] == "page" and page["key"] == f"EXIT_REFUSED:{BTC}"
            assert "stop_loss" in page["text"] and "Market is closed" in page["text"] and BTC in page["text"]
    await hook.stop()
