"""ffe in live mode against the fake Binance: config, engines in-process and as real subprocesses.

The fake runs in the test's own event loop, so everything that waits here waits asynchronously (a blocking wait
would stop the fake from answering the engine under test).

Market time: the fake's klines follow `MarketClock`, which stands still until the test moves it a bar forward.
With 40 bars of warm-up the indicators need more bars than any test feeds before they are warm (the slow EMA wants
51), so the strategy never decides anything: every order at the fake is one the test placed, and 40 bars of
returns are enough for the VAR gate, which fails closed in live mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import forked_ffe
from conftest import config_for_run, ffe_cmd, ffe_env, make_settings
from fake_exchange import FakeBinance, ccxt_options
from ffe_engine.clock import WallClock
from ffe_engine.control import request

BTC = "BTC/USDT"
POST_ORDER, GET_ORDER, DELETE_ORDER = "POST /api/v3/order", "GET /api/v3/order", "DELETE /api/v3/order"
M = 60_000
RECV_WINDOW_MS = 1500  # the venue's settle window: an unanswered order is resent only after it


class MarketClock:
    """The fake's market time: frozen, moved by the test one bar at a time.

    It starts a few minutes ahead of the wall clock: the exchange feed also takes a candle as closed once the wall
    clock has passed its end, and the candle the fake still has open must not close that way during a test.
    """

    def __init__(self) -> None:
        self.now = int(time.time() * 1000) // M * M + 3 * M + 30_000

    def __call__(self) -> int:
        return self.now

    def step(self, bars: int = 1) -> None:
        self.now += bars * M


class SteppedClock(WallClock):
    """The engine's clock for an in-process live engine: real market time and real waits (the exchange feed polls
    the fake), while the engine's wall and monotonic time also move when the test says `forward(seconds)`: a
    breaker's recovery, an approval's time to live or a reconciliation's interval pass without waiting for them."""

    def __init__(self) -> None:
        self.offset = 0.0

    def wall(self) -> float:
        return super().wall() + self.offset

    def monotonic(self) -> float:
        return super().monotonic() + self.offset

    def forward(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
async def fx():
    async with FakeBinance() as fake:
        fake.set_price("BTCUSDT", 30_000.0)
        fake.market_clock = MarketClock()
        yield fake


def exchange_options(**extra: Any) -> dict[str, Any]:
    """ccxt's options for binance on the fake (spot only, its receive window), with `extra` options."""
    return {**ccxt_options(), "recvWindow": RECV_WINDOW_MS, **extra}


def live_config(fx: FakeBinance, **tables: Any) -> dict[str, Any]:
    """Configuration values (no credentials) for a live engine trading BTC/USDT on the fake."""
    values: dict[str, Any] = {
        "mode": "live",
        "engine": {"symbols": [BTC], "warmup_bars": 40, "order_poll_s": 0.2, "reconcile_interval_s": 600},
        "market": {"source": "exchange"},
        "venue": {"kind": "ccxt"},
        # ccxt's pacing at 1 ms per unit of weight, not binance's 50: the fake does not limit, and at 50 each
        # private read waits ~0.2 s (most of a live test's time)
        "exchange": {"id": "binance", "timeout_ms": 1000, "poll_s": 0.2, "settle_window_ms": RECV_WINDOW_MS,
                     "rate_limit_ms": 1,
                     "options": exchange_options(),
                     "api_urls": {"public": fx.url + "/api/v3", "private": fx.url + "/api/v3"}},
        "breaker": {"failure_threshold": 3, "recovery_timeout_s": 60},
    }
    for key, value in tables.items():
        if isinstance(value, dict):
            values.setdefault(key, {}).update(value)
        else:
            values[key] = value
    return values


def live_settings(tmp_path: Path, fx: FakeBinance, **tables: Any):
    """Settings for an engine opened in-process, with the fake's credentials."""
    values = live_config(fx, **tables)
    values["exchange"] = {**values["exchange"], "api_key": fx.api_key, "secret": fx.secret}
    top = {k: v for k, v in values.items() if not isinstance(v, dict)}
    return make_settings(tmp_path, **top, **{k: v for k, v in values.items() if isinstance(v, dict)})


# ---------------------------------------------------------------------------------------------------- config file
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")


def write_config(cwd: Path, values: dict[str, Any]) -> Path:
    lines = [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for table, body in values.items():
        if isinstance(body, dict):
            lines.append(f"\n[{table}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in body.items()]
    path = cwd / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def live_env(fx: FakeBinance | None = None, *, api_key: str | None = None, secret: str | None = None) -> dict[str, str]:
    """The environment of an `ffe` subprocess: credentials only here, as an operator would pass them."""
    extra = {}
    key = api_key if api_key is not None else (fx.api_key if fx is not None else None)
    sec = secret if secret is not None else (fx.secret if fx is not None else None)
    if key is not None:
        extra["FFE_EXCHANGE__API_KEY"] = key
    if sec is not None:
        extra["FFE_EXCHANGE__SECRET"] = sec
    return ffe_env(**extra)


# ---------------------------------------------------------------------------------------------------- subprocesses
class AsyncFfe:
    """`ffe ARGS` as a real subprocess started from the test's event loop; output to files."""

    def __init__(self, cwd: Path, name: str) -> None:
        self.cwd = cwd
        self.stdout_path = cwd / f"{name}.stdout"
        self.stderr_path = cwd / f"{name}.stderr"
        self.proc: asyncio.subprocess.Process | forked_ffe.AsyncForked | None = None

    @classmethod
    async def start(cls, cwd: Path, *args: str, env: dict[str, str], name: str = "ffe") -> "AsyncFfe":
        p = cls(cwd, name)
        config_for_run(cwd, args)
        with open(p.stdout_path, "wb") as out, open(p.stderr_path, "wb") as err:
            p.proc = await forked_ffe.create_subprocess_exec(*ffe_cmd(*args), cwd=cwd, env=env, stdout=out,
                                                             stderr=err, stdin=asyncio.subprocess.DEVNULL)
        return p

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)


async def run_ffe_async(cwd: Path, *args: str, env: dict[str, str], name: str = "ffe",
                        timeout: float = 60.0) -> AsyncFfe:
    """Run `ffe ARGS` to the end while the loop keeps serving the fake."""
    p = await AsyncFfe.start(cwd, *args, env=env, name=name)
    try:
        await p.wait(timeout)
    finally:
        await p.kill()
    return p


@pytest.fixture
async def processes():
    """Every AsyncFfe a test registers is killed at teardown if still alive."""
    started: list[AsyncFfe] = []
    yield started
    for p in started:
        await p.kill()


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "",
                   interval: float = 0.02) -> Any:
    """Poll (asynchronously) until predicate() is truthy; return its value. The predicate may be async."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------------- database
def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(str(db), timeout=10)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    except sqlite3.OperationalError as exc:  # the schema is not there yet
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def stored_events(db: Path, *names: str) -> list[dict]:
    """The stored records of these events, in seq order."""
    marks = ",".join("?" * len(names))
    return [json.loads(r[0]) for r in rows(db, f"SELECT data FROM events WHERE event IN ({marks}) ORDER BY seq",
                                           names)]


@contextlib.asynccontextmanager
async def engine_loop(engine):
    """The engine's own loop (feed, housekeeping: order polls, reconciliation, breaker pause) running in the
    background, stopped at the end."""
    task = asyncio.ensure_future(engine.run())
    try:
        yield task
    finally:
        engine.request_stop()
        await task


async def reconciled_ok(db: Path, what: str, timeout: float = 20.0) -> None:
    """Until the last stored reconciliation agrees with the venue."""
    await wait_for(lambda: stored_events(db, "reconcile")[-1:] and stored_events(db, "reconcile")[-1]["status"] == "ok",
                   timeout=timeout, what=what)


async def paused_by_reconciliation(db: Path, what: str = "the engine paused by reconciliation",
                                   timeout: float = 30.0) -> None:
    """Until the stored engine state is PAUSED by reconciliation (durably: read from the database)."""
    await wait_for(lambda: rows(db, "SELECT state, by FROM engine_state") == [("PAUSED", "reconcile")],
                   timeout=timeout, what=what)


# ---------------------------------------------------------------------------------------------------- in-process
async def reconcile_twice(engine) -> list[dict]:
    """Reconcile, and again once the venue's settle window has passed: a difference the first finds counts only
    when the second finds it too (reconcile.py). The differences that count."""
    await engine.reconcile()
    await asyncio.sleep(engine.venue.settle_s)
    return await engine.reconcile()


def a_difference_of(kind: str) -> Callable[[list[dict]], bool]:
    """For reconcile_until: a difference of `kind` holds the engine."""
    return lambda held: any(d["kind"] == kind for d in held)


async def reconcile_until(engine, done: Callable[[list[dict]], bool], what: str, tries: int = 10) -> list[dict]:
    """Reconcile in pairs (reconcile_twice) until `done(engine.reconcile_blocked)`; what holds the engine then. A read
    of the venue that times out (a loaded machine) makes one look an outage, and a difference first found after it
    counts only once the next pair confirms it."""
    for _ in range(tries):
        await reconcile_twice(engine)
        if done(engine.reconcile_blocked):
            return engine.reconcile_blocked
    raise AssertionError(f"{what}: after {tries} pairs of reconciliations the engine is held by "
                         f"{engine.reconcile_blocked}")


async def next_bar(engine, fx: FakeBinance) -> int:
    """Move the market one bar on and pass the engine the candles its own feed releases. Returns how many."""
    fx.market_clock.step()
    n = 0
    for c in await engine.feed.poll():
        await engine.on_candle(c)
        n += 1
    return n


async def engine_status(sock: Path) -> dict:
    answer = await request(sock, "status")
    assert answer["ok"], answer
    return answer["result"]


async def wait_for_bar(sock: Path, fx: FakeBinance) -> None:
    """Move the market one bar on and wait until the engine behind `sock` has seen a closed candle."""
    fx.market_clock.step()

    async def seen() -> bool:
        return bool((await engine_status(sock))["market_ts"])

    await wait_for(seen, timeout=30, what="a closed candle at the engine", interval=0.05)
