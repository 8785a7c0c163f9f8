"""A seeded chaos soak of a live session against the fake Binance: real `ffe run --headless --live` subprocesses
placing operator orders while the exchange answers with a fault on every order and account route (dropped,
hung, slow, 5xx executed or not, rate limits, a missing order), the process is killed, frozen and thawed, halted,
resumed, and restarted. After every ending and at the end the doctor's checks pass (run in this process, and
at the very end as `ffe doctor`), and the exchange's own book never holds two orders with one client order id (a
blind resend would trade twice).

The schedule comes from one seed (FFE_CHAOS_SEED, printed with the counts). Bounded: a fixed number of rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

from ffe_engine.config import load_settings
from ffe_engine.control import request
from ffe_engine.doctor import check
from live_helpers import (BTC, AsyncFfe, fx, live_config, live_env, processes, rows,  # noqa: F401
                          run_ffe_async, wait_for, write_config)

ROUNDS = 6
SEED = int(os.environ.get("FFE_CHAOS_SEED", "20261201"))
NETWORK = ("drop_after", "drop_before", "hang", "slow", "5xx_executed", "5xx_not_executed", "429")
FAULTS = {  # route -> the faults an exchange gives on it
    "POST /api/v3/order": NETWORK,
    "GET /api/v3/order": (*NETWORK, "not_found_once"),
    "DELETE /api/v3/order": (*NETWORK, "not_found_once"),
    "GET /api/v3/openOrders": NETWORK,
    "GET /api/v3/account": NETWORK,
}


async def doctor(cwd: Path, fx, counts: Counter, when: str) -> None:
    """The doctor's checks on the records (no engine runs: nothing waits on the fake meanwhile)."""
    counts["doctor"] += 1
    settings = load_settings(cwd / "config.toml", environ=live_env(fx), data_dir=cwd / "data", log_dir=cwd / "logs")
    try:
        check(settings)
    except Exception as exc:
        raise AssertionError(f"[chaos seed={SEED} {dict(counts)}] doctor {when}: {exc}") from exc
    ids = [o.client_id for o in fx.orders]
    twice = sorted({c for c in ids if ids.count(c) > 1})
    assert not twice, f"[chaos seed={SEED}] the exchange holds client order ids twice: {twice}"


async def start(cwd: Path, fx, processes, counts: Counter) -> AsyncFfe:
    """Start the live engine; a start the exchange's faults refused (one line, exit 2 or 1) is tried again."""
    sock = cwd / "data" / "ffe.sock"
    for _ in range(10):
        counts["starts"] += 1
        p = await AsyncFfe.start(cwd, "run", "--headless", "--live", env=live_env(fx),
                                 name=f"live{counts['starts']}")
        processes.append(p)

        async def answers() -> bool:
            if not p.alive():
                return True
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                return (await request(sock, "status", timeout=5))["ok"]
            return False

        await wait_for(answers, timeout=60, what="the engine answering on its control socket", interval=0.05)
        if p.alive():
            return p
        code = await p.wait()
        last = p.stderr.rstrip().splitlines()[-1] if p.stderr.strip() else ""
        refused = (code == 2 and last.startswith("ffe: error: live start check failed")) or (
            code == 1 and last.startswith("ffe: error: start failed on binance"))
        assert refused and "Traceback" not in p.stderr, (
            f"[chaos seed={SEED} {dict(counts)}] ffe exited {code}: {p.stderr[-2000:]}")
        counts["start check refused"] += 1
    raise AssertionError(f"[chaos seed={SEED} {dict(counts)}] the engine never started")


async def call(sock: Path, counts: Counter, command: str, args: dict | None = None) -> dict | None:
    counts[command] += 1
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        return await request(sock, command, {"by": "ctl", **(args or {})}, timeout=10)
    return None


async def test_a_live_session_under_faults_kills_and_restarts_keeps_every_invariant(tmp_path, fx, processes):
    rng = random.Random(SEED)
    counts: Counter[str] = Counter()
    print(f"chaos seed={SEED} (replay with FFE_CHAOS_SEED={SEED})")
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False, "cancel_timeout_s": 3},
                                       exchange={"timeout_ms": 1000},
                                       breaker={"failure_threshold": 5, "recovery_timeout_s": 2}))
    sock = tmp_path / "data" / "ffe.sock"
    price = 30_000.0
    for n in range(ROUNDS):
        proc = await start(tmp_path, fx, processes, counts)
        await call(sock, counts, "resume", {"confirm": True})
        until = time.monotonic() + rng.uniform(2.0, 4.0)
        while time.monotonic() < until and proc.alive():
            roll = rng.random()
            if roll < 0.30:
                price *= 1 + rng.uniform(-0.01, 0.01)
                fx.set_price("BTCUSDT", round(price, 2))
                fx.market_clock.step()
                counts["bars"] += 1
            elif roll < 0.55:
                side = "buy" if rng.random() < 0.6 else "sell"
                await call(sock, counts, "order", {"symbol": BTC, "side": side,
                                                   "quantity": round(rng.uniform(0.001, 0.01), 5)})
            elif roll < 0.70:
                counts["faults"] += 1
                route = rng.choice(sorted(FAULTS))
                fx.fault(route, rng.choice(FAULTS[route]), seconds=rng.uniform(0.2, 2.0), execute=True)
            elif roll < 0.76:
                counts["sigstop"] += 1
                proc.proc.send_signal(signal.SIGSTOP)
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                proc.proc.send_signal(signal.SIGCONT)
            elif roll < 0.82:
                await call(sock, counts, "halt")
            elif roll < 0.90:
                await call(sock, counts, "resume", {"confirm": True})
            elif roll < 0.94:
                await call(sock, counts, "pause")
            else:
                await asyncio.sleep(rng.uniform(0.05, 0.3))
        assert proc.alive(), f"[chaos seed={SEED} {dict(counts)}] the engine stopped by itself: {proc.stderr[-3000:]}"
        if rng.random() < 0.75:
            counts["sigkill"] += 1
            await proc.kill()
        else:
            counts["sigterm"] += 1
            code = await proc.stop(timeout=60)
            assert code == 0, f"[chaos seed={SEED} {dict(counts)}] orderly stop exited {code}: {proc.stderr[-3000:]}"
        await doctor(tmp_path, fx, counts, f"after round {n}")
    # The end: one more start that settles what is in flight, an orderly stop, the doctor.
    proc = await start(tmp_path, fx, processes, counts)
    await asyncio.sleep(2.0)
    counts["sigterm"] += 1
    assert await proc.stop(timeout=60) == 0, proc.stderr[-3000:]
    await doctor(tmp_path, fx, counts, "at the end")
    p = await run_ffe_async(tmp_path, "doctor", env=live_env(fx), name="doctor", timeout=120)  # as an operator runs it
    assert p.proc.returncode == 0, f"[chaos seed={SEED} {dict(counts)}] ffe doctor at the end: {p.stderr.strip()}"
    db = tmp_path / "data" / "ffe.db"
    orders, fills = rows(db, "SELECT COUNT(*) FROM orders")[0][0], rows(db, "SELECT COUNT(*) FROM fills")[0][0]
    print(f"chaos seed={SEED} rounds={ROUNDS} orders={orders} fills={fills} exchange_orders={len(fx.orders)} "
          f"{dict(sorted(counts.items()))}")
    assert counts["sigkill"] >= 2 and counts["faults"] > 0 and orders > 0 and fills > 0, dict(counts)
