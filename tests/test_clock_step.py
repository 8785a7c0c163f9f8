"""The machine's clock set back (an NTP step, a clock that ran ahead and was corrected) never takes the market time
the records hold back with it: a live trade closed after the step closes at or after it opened, and `ffe doctor`
finds the records whole, within a run and across a restart.

Seen before: a 1.4 s step back between a live position's open and its close stored a trade closing before it
opened; `ffe doctor` called the database damaged and every backup was refused from then on.

Real parts: an engine opened in live mode (real ccxt) against the fake Binance on 127.0.0.1, its SQLite database,
`ffe doctor` as a subprocess. The engine's clock is the machine's as the test sets it: `offset` seconds off the
real time, moved by the test as an NTP step moves the system clock (wall and market time alike).
"""

from __future__ import annotations

from ffe_engine.clock import WallClock

from conftest import engine_session
from live_helpers import BTC, fx, live_config, live_env, live_settings, next_bar, rows, run_ffe_async  # noqa: F401
from live_helpers import write_config


class SetClock(WallClock):
    """The wall clock, `offset` seconds off real time: the system clock as its owner (or NTP) set it."""

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.offset = offset

    def now_ms(self) -> int:
        return super().now_ms() + round(self.offset * 1000)

    def wall(self) -> float:
        return super().wall() + self.offset


async def bought(e, fx) -> None:
    assert await next_bar(e, fx) == 1
    await e.resume(by="test")
    answer = await e.operator_order(BTC, "buy", 0.002)
    assert answer["accepted"], answer
    assert e.portfolio.holding(BTC) is not None


async def closed(e) -> None:
    answer = await e.close_position(BTC, by="test")
    assert answer["accepted"], answer
    assert e.portfolio.holding(BTC) is None


async def assert_doctor_passes(tmp_path, fx) -> None:
    db = tmp_path / "data" / "ffe.db"
    [(opened, closed_at)] = rows(db, "SELECT opened_ts, closed_ts FROM trades")
    assert closed_at >= opened, (opened, closed_at)
    doctor = await run_ffe_async(tmp_path, "doctor", env=live_env(fx), name="doctor")
    assert doctor.proc.returncode == 0, doctor.stderr


async def test_a_clock_stepped_back_between_a_live_open_and_its_close_leaves_whole_records(tmp_path, fx):
    clock = SetClock()
    write_config(tmp_path, live_config(fx))
    async with engine_session(live_settings(tmp_path, fx), live=True, clock=clock) as running:
        e = running.engine
        await bought(e, fx)
        clock.offset = -5.0  # the system clock stepped back 5 s
        await closed(e)
    await assert_doctor_passes(tmp_path, fx)


async def test_a_clock_that_ran_ahead_then_was_corrected_leaves_whole_records_after_a_restart(tmp_path, fx):
    # The newest candle an hour behind the clock is no stale market here: what is tested is the records' times.
    stale = {"risk": {"stale_after_bars": 200}}
    write_config(tmp_path, live_config(fx, **stale))
    settings = live_settings(tmp_path, fx, **stale)
    async with engine_session(settings, live=True, clock=SetClock(offset=3600.0)) as running:
        await bought(running.engine, fx)  # the clock an hour ahead: the position opened "an hour from now"
    async with engine_session(settings, live=True, clock=SetClock()) as running:  # set right, then restarted
        e = running.engine
        await e.resume(by="test")
        await closed(e)
    await assert_doctor_passes(tmp_path, fx)
