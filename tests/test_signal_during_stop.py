"""A second stop signal while the engine's stop waits for a command under way (a buy the exchange holds, sent on
the control socket): it is logged as `signal ignored: the engine is already stopping` (cli.md), and the stop goes on
to its end, the command carried out and its exit code 0. It was passed over in silence while the stop waited (the
line came only once the engine had stopped).

Real parts: an `ffe run --headless --live` process and its control socket, the fake Binance on 127.0.0.1 (real ccxt), which
holds the buy's answer."""

from __future__ import annotations

import asyncio
import signal

from ffe_engine.control import request
from live_helpers import (BTC, POST_ORDER, AsyncFfe, fx, live_config, live_env, wait_for,  # noqa: F401
                          write_config)


async def test_a_second_sigterm_while_the_stop_waits_for_a_command_is_said_ignored(tmp_path, fx):
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}, exchange={"timeout_ms": 20_000}))
    engine = await AsyncFfe.start(tmp_path, "run", "--headless", "--live", env=live_env(fx), name="engine")
    try:
        await wait_for(lambda: "control socket ready" in engine.stderr or not engine.alive(), timeout=60,
                       what="the engine answering")
        assert engine.alive(), engine.stderr
        fx.fault(POST_ORDER, "hang", seconds=4.0, execute=True)
        order = asyncio.ensure_future(request(tmp_path / "data" / "ffe.sock", "order",
                                              {"symbol": BTC, "side": "buy", "quantity": 0.001}, timeout=60))
        await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=30, what="the buy at the exchange")
        assert engine.proc is not None
        engine.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: "the stop waits for control commands under way" in engine.stderr, timeout=10,
                       what="the stop waiting for the buy")
        engine.proc.send_signal(signal.SIGTERM)
        assert await engine.wait(60) == 0, engine.stderr
        answer = await order
        assert answer["ok"] and answer["result"]["accepted"], answer
    finally:
        await engine.kill()
    log = engine.stderr
    assert "signal ignored: the engine is already stopping" in log, log[-3000:]
    assert log.index("signal ignored: the engine is already stopping") < log.index("engine stopped"), log[-3000:]
