"""Clocks: wall time really waits, market time never does; timeframe parsing."""

from __future__ import annotations

import asyncio
import time

import pytest

from ffe_engine.clock import ManualClock, SimClock, WallClock, align, format_timeframe, timeframe_ms, utc_day


@pytest.mark.parametrize("text, ms", [
    ("1m", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000), ("4h", 14_400_000),
    ("1d", 86_400_000), ("30s", 30_000), ("1w", 604_800_000),
])
def test_timeframe_ms(text: str, ms: int) -> None:
    assert timeframe_ms(text) == ms
    assert format_timeframe(ms) == text


@pytest.mark.parametrize("bad", ["", "m", "0m", "5x", "1.5h", "-1m", "h1", "1 hour"])
def test_bad_timeframe_names_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match=f"bad timeframe {bad!r}"):
        timeframe_ms(bad)


def test_utc_day_and_align() -> None:
    assert utc_day(0) == 0
    assert utc_day(1_577_836_800_000) == 18_262  # 2020-01-01
    assert utc_day(1_577_836_800_000 + 86_399_999) == 18_262
    assert utc_day(1_577_836_800_000 + 86_400_000) == 18_263
    assert align(1_577_836_812_345, 60_000) == 1_577_836_800_000


def test_wall_clock_reads_the_time_and_ignores_advance() -> None:
    clock = WallClock()
    before = int(time.time() * 1000)
    clock.advance(before + 10**12)  # market time does not move the wall
    now = clock.now_ms()
    after = int(time.time() * 1000)
    assert before <= now <= after


async def test_wall_clock_sleep_really_waits() -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(WallClock().sleep(30), timeout=0.05)


async def test_sim_clock_follows_candles_and_never_sleeps() -> None:
    clock = SimClock(start_ms=1_000)
    assert clock.now_ms() == 1_000
    clock.advance(5_000)
    clock.advance(4_000)  # a candle of another symbol closing earlier never moves time back
    assert clock.now_ms() == 5_000
    # An hour of sleeping returns at once (wait_for would time out if it waited).
    await asyncio.wait_for(clock.sleep(3600), timeout=5)
    assert clock.now_ms() == 5_000


async def test_sim_clock_yields_to_the_loop_every_n_sleeps() -> None:
    clock = SimClock(yield_every=5)
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    for _ in range(10):
        await clock.sleep(1)
    task.cancel()
    assert ran == 2  # the other task got the loop exactly at the 5th and 10th sleep


async def test_paced_sim_clock_waits_but_keeps_market_time() -> None:
    clock = SimClock(start_ms=7, paced=True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(clock.sleep(30), timeout=0.05)
    assert clock.now_ms() == 7


def test_wall_and_sim_clocks_tell_real_wall_and_monotonic_time() -> None:
    for clock in (WallClock(), SimClock(5_000)):
        before_wall, before_mono = time.time(), time.monotonic()
        wall, mono = clock.wall(), clock.monotonic()
        assert before_wall <= wall <= time.time()
        assert before_mono <= mono <= time.monotonic()


async def test_manual_clock_moves_wall_and_monotonic_time_only_by_hand() -> None:
    clock = ManualClock(60_000, wall=1_000.0)
    wall, mono = clock.wall(), clock.monotonic()
    await clock.sleep(30.0)  # returns at once, and moves nothing
    assert (clock.wall(), clock.monotonic()) == (wall, mono)
    clock.forward(90.0)
    assert (clock.wall(), clock.monotonic()) == (1_090.0, mono + 90.0)
    # market time is the feed's, as with SimClock: never backwards, not moved by forward
    assert clock.now_ms() == 60_000
    clock.advance(120_000)
    clock.advance(90_000)
    assert clock.now_ms() == 120_000 and clock.wall() == 1_090.0
    with pytest.raises(ValueError, match="does not go back"):
        clock.forward(-1.0)


async def test_every_record_of_a_running_engine_is_stamped_with_the_engine_clock(tmp_path) -> None:
    """The audit trail's times come from the engine's clock, like every other time the engine tells: a test clock
    that stands still stamps every record with its own time, and moving it moves the stamps."""
    from conftest import audit_lines, engine_session, make_settings
    from ffe_engine.events import iso_ts

    clock = ManualClock(wall=1_700_000_000.0)
    settings = make_settings(tmp_path)
    async with engine_session(settings, max_bars=3, clock=clock) as running:
        await running.engine.pause(reason="test")
        clock.forward(90.0)
        await running.engine.resume(confirm=True)
    records = audit_lines(settings.audit_path)
    states = [r for r in records if r["event"] == "engine_state"]
    assert [r["state"] for r in states[-2:]] == ["PAUSED", "RUNNING"]
    assert states[-2]["ts"] == iso_ts(1_700_000_000.0) and states[-1]["ts"] == iso_ts(1_700_000_090.0)
    assert {r["ts"] for r in records} <= {iso_ts(1_700_000_000.0), iso_ts(1_700_000_090.0)}
