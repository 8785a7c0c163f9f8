"""A live start whose exchange stops answering after the start check (rate limited when the start reads the
account's balance): one line naming the exchange and what failed, exit 1, nothing sent, the connection closed, no traceback.
Found by the live chaos soak. Real `ffe run --headless --live` against the fake Binance."""

from __future__ import annotations

import asyncio
import signal

from live_helpers import (AsyncFfe, fx, live_config, live_env, processes, rows, run_ffe_async, wait_for,  # noqa: F401
                          write_config)


async def test_a_venue_failure_during_the_start_is_one_line_and_exit_1(tmp_path, fx):  # noqa: F811
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
    fx.fault("GET /api/v3/account", "slow", seconds=0)  # the start check's balance read: answered
    fx.fault("GET /api/v3/account", "429", times=50, retry_after=0)  # then rate limited, every retry
    p = await run_ffe_async(tmp_path, "run", "--headless", "--live", env=live_env(fx), timeout=90)
    assert p.proc.returncode == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "Unclosed" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.rstrip().splitlines()[-1]
    assert last.startswith("ffe: error: ") and "binance" in last, last
    assert "engine started" not in p.stderr
    assert not fx.requests_to("POST /api/v3/order")
    assert rows(tmp_path / "data" / "ffe.db", "SELECT COUNT(*) FROM orders") == [(0,)]


async def waiting_on_the_exchange(tmp_path, fx) -> AsyncFfe:
    """A live engine whose start check waits on an exchange that does not answer its balance read."""
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
    fx.fault("GET /api/v3/account", "hang", seconds=30, times=50)
    p = await AsyncFfe.start(tmp_path, "run", "--headless", "--live", env=live_env(fx))
    try:
        await wait_for(lambda: fx.requests_to("GET /api/v3/account") or not p.alive(), timeout=60,
                       what="the start check asking for the balance")
        assert p.alive(), p.stderr
    except BaseException:
        await p.kill()
        raise
    return p


async def test_a_stop_signal_during_the_start_check_stops_in_order(tmp_path, fx):  # noqa: F811
    # `systemctl stop` while the start check waits on an exchange that does not answer: the start is given up in
    # order (one line saying so, exit 0, nothing sent), never the signal's default death with nothing said.
    p = await waiting_on_the_exchange(tmp_path, fx)
    try:
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait(timeout=30) == 0, p.stderr[-3000:]
    finally:
        await p.kill()
    assert "Traceback" not in p.stderr and "Unclosed" not in p.stderr, p.stderr[-3000:]
    [said] = [line for line in p.stderr.splitlines() if "stopped while starting" in line]
    assert "nothing was sent" in said and "SIGTERM" in said, said
    assert "engine started" not in p.stderr
    assert not fx.requests_to("POST /api/v3/order")


async def test_ffe_ctl_during_a_start_says_the_engine_is_starting_and_how_to_halt_it_now(tmp_path, fx):  # noqa: F811
    """The control socket is made once the engine has started; a live start waits on its exchange first (its start
    check, orders in doubt looked up, held cancels sent). `ffe ctl halt` meanwhile said `no engine is running`:
    the operator, wanting it stopped, was told there was nothing to stop. It names the starting engine and the
    signal that halts it now."""
    p = await waiting_on_the_exchange(tmp_path, fx)
    try:
        for action in ("status", "halt"):
            ctl = await run_ffe_async(tmp_path, "ctl", action, env=live_env(fx), name=action)
            assert ctl.proc.returncode == 1, ctl.stdout + ctl.stderr
            (line,) = ctl.stderr.splitlines()
            assert f"(pid {p.proc.pid}) is starting" in line and f"kill -USR1 {p.proc.pid}" in line, line
            assert "no engine is running" not in line, line
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait(timeout=30) == 0, p.stderr[-3000:]
    finally:
        await p.kill()
    ctl = await run_ffe_async(tmp_path, "ctl", "status", env=live_env(fx), name="after")
    assert ctl.proc.returncode == 1 and "no engine is running" in ctl.stderr, ctl.stderr


async def test_the_kill_switch_signal_during_the_start_check_halts_before_any_trade(tmp_path, fx):  # noqa: F811
    p = await waiting_on_the_exchange(tmp_path, fx)
    try:
        p.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.2)  # the signal taken while the start still waits
        fx.clear_faults("GET /api/v3/account")  # the exchange answers the next try
        db = tmp_path / "data" / "ffe.db"
        await wait_for(lambda: db.exists() and rows(db, "SELECT state, reason, by FROM engine_state") == [
            ("HALTED", "SIGUSR1", "signal")], timeout=60, what="HALTED by the signal")
        assert p.alive(), p.stderr[-3000:]
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait(timeout=30) == 0, p.stderr[-3000:]
    finally:
        await p.kill()
    assert not fx.requests_to("POST /api/v3/order")


async def comes_up_halted_by_the_signal(tmp_path, fx) -> None:
    """The next start, the exchange answering: HALTED by the kill switch kept from the start before; then stopped."""
    fx.clear_faults("GET /api/v3/account")
    again = await AsyncFfe.start(tmp_path, "run", "--headless", "--live", env=live_env(fx), name="again")
    try:
        db = tmp_path / "data" / "ffe.db"
        await wait_for(lambda: "engine started" in again.stderr or not again.alive(), timeout=60, what="the start")
        assert rows(db, "SELECT state, by FROM engine_state") == [("HALTED", "signal")], again.stderr[-3000:]
        again.proc.send_signal(signal.SIGTERM)
        assert await again.wait(timeout=30) == 0, again.stderr[-3000:]
    finally:
        await again.kill()


async def test_the_kill_switch_signal_during_a_start_that_then_fails_holds_at_the_next_start(
        tmp_path, fx):  # noqa: F811
    """SIGUSR1 (`ffe ctl` names it as the way to halt a starting engine) taken while the start waits, then the start
    fails (the exchange stops answering, exit 1: the service starts it again): the halt was dropped, and the next
    start came up RUNNING and traded. It is kept for the next start, which comes up HALTED by it."""
    p = await waiting_on_the_exchange(tmp_path, fx)
    try:
        p.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.2)  # the signal taken while the start still waits
        fx.clear_faults("GET /api/v3/account")
        fx.fault("GET /api/v3/account", "429", times=50, retry_after=0)  # then the start fails
        assert await p.wait(timeout=90) == 1, p.stderr[-3000:]
    finally:
        await p.kill()
    assert "the next start comes up HALTED" in p.stderr, p.stderr[-3000:]
    await comes_up_halted_by_the_signal(tmp_path, fx)
    assert not fx.requests_to("POST /api/v3/order")


async def test_the_kill_switch_signal_then_a_stop_during_a_start_holds_at_the_next_start(tmp_path, fx):  # noqa: F811
    """SIGUSR1, then `systemctl stop`, while the start waits: the start is given up (exit 0), and the halt with it
    was dropped: the next start came up RUNNING. It is kept, and the stop's line says so."""
    p = await waiting_on_the_exchange(tmp_path, fx)
    try:
        p.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.2)
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait(timeout=30) == 0, p.stderr[-3000:]
    finally:
        await p.kill()
    [said] = [line for line in p.stderr.splitlines() if "stopped while starting" in line]
    assert "the next start comes up HALTED" in said, said
    await comes_up_halted_by_the_signal(tmp_path, fx)


async def test_a_maintenance_page_answered_for_the_market_list_at_the_start_is_exit_1_not_a_configuration_error(
        tmp_path, fx):  # noqa: F811
    # An exchange in maintenance can answer 200 with a page of its own for every request: its market list is then
    # empty, which says nothing of engine.symbols. Exit 1 (started again later, as the systemd unit does), never 2.
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}))
    fx.fault("GET /api/v3/exchangeInfo", "5xx_not_executed", status=200, times=50)
    p = await run_ffe_async(tmp_path, "run", "--headless", "--live", env=live_env(fx), timeout=90)
    assert p.proc.returncode == 1, p.stderr[-3000:]
    last = p.stderr.rstrip().splitlines()[-1]
    assert last.startswith("ffe: error: ") and "binance" in last and "engine.symbols" not in last, last
    assert "no markets" in last and "nothing was sent" in last, last
    assert "Traceback" not in p.stderr and not fx.requests_to("POST /api/v3/order")


def test_a_kept_kill_switch_whose_file_cannot_be_removed_halts_the_start_and_says_so_in_one_line(tmp_path):
    """A directory where the kept kill switch goes: the start comes up HALTED all the same (its record unreadable),
    and says in one line that it could not remove it, no traceback."""
    from conftest import run_ffe

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ffe.halt-asked").mkdir()
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("HALTED",)]
    assert any("ffe.halt-asked" in line and "could not be removed" in line for line in proc.stderr.splitlines())
