"""After a restart, an exchange whose candles are older than the market time the records reached (its clock set
back: a testnet reset, a gateway swapped) is not decided on again: market time never goes back (architecture.md),
the candles before it are passed over, said once, and the engine decides again from where the records left off.
`ffe doctor` passes after it. A real engine over a real SQLite file against the fake Binance through ccxt.
"""

from __future__ import annotations

import asyncio

from conftest import engine_session, ffe_env, run_ffe
from live_helpers import BTC, M, fx, live_config, live_env, live_settings, next_bar, rows, write_config  # noqa: F401


async def test_candles_before_the_records_market_time_are_not_decided_after_a_restart(tmp_path, fx):  # noqa: F811
    settings = live_settings(tmp_path, fx, engine={"warmup_bars": 300})  # warm indicators: every bar is decided
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        await running.engine.resume(by="test")  # a live start comes up PAUSED
        for _ in range(3):
            assert await next_bar(running.engine, fx) == 1
    [(reached,)] = rows(db, "SELECT MAX(ts) FROM decisions WHERE symbol = ?", (BTC,))
    decided = len(rows(db, "SELECT 1 FROM decisions"))
    fx.market_clock.now -= 10 * M  # the exchange's clock set back past what the records reached
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        for _ in range(5):  # still behind the records: nothing to decide
            assert await next_bar(e, fx) == 0
        assert "before the market time the records reached" in running.log.getvalue(), running.log.getvalue()[-2000:]
        for _ in range(10):  # past it again: decided from where the records left off
            await next_bar(e, fx)
    times = [ts for (ts,) in rows(db, "SELECT ts FROM decisions WHERE symbol = ? ORDER BY rowid", (BTC,))]
    assert times == sorted(times) and len(set(times)) == len(times), times
    assert times[-1] > reached and len(times) > decided
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_paper_books_of_the_simulated_market_are_not_taken_on_to_an_exchange_s_market(tmp_path):
    """A data directory whose books and orders were made on the simulated market, started with market.source =
    "exchange": refused before anything is asked of the exchange (as a replay's or the simulated market's start on
    another source's books is), not left waiting days for the exchange's clock to reach the simulated market's."""
    first = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert first.returncode == 0, first.stderr
    db = tmp_path / "data" / "ffe.db"
    before = db.read_bytes()
    # Refused before the exchange is asked anything (none answers here).
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", env=ffe_env(FFE_MARKET__SOURCE="exchange"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert 'market.source = "exchange"' in line and "simulated" in line, line
    assert line.startswith("ffe: error: environment: FFE_MARKET__SOURCE: "), line  # where it was set, as others say
    assert db.read_bytes() == before


def test_ffe_config_check_names_the_simulated_books_an_exchange_s_market_would_refuse(tmp_path):
    first = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert first.returncode == 0, first.stderr
    proc = run_ffe(tmp_path, "config", "check", env=ffe_env(FFE_MARKET__SOURCE="exchange"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'market.source = "exchange"' in proc.stdout and "the next start will stop on it (exit 2)" in proc.stdout, (
        proc.stdout)


async def test_a_live_account_s_books_are_not_taken_on_to_the_simulated_market(tmp_path, fx):  # noqa: F811
    """The other way: a live account's books and orders, made on the exchange's market (which stores no market state
    with them), started in paper mode on the simulated market. Refused as another source's books, exit 2, one line
    naming market.source, as `ffe config check` says beforehand; not taken for a database whose market record was
    lost (exit 1, `restore it from a backup`), which `ffe doctor` does not find either."""
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        await running.engine.resume(by="test")
        await next_bar(running.engine, fx)
    db = settings.db_path
    before = db.read_bytes()
    proc = await asyncio.to_thread(run_ffe, tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert 'market.source = "simulated"' in line and "an exchange's market" in line, line
    assert "damaged" not in line, line
    assert db.read_bytes() == before
    check = await asyncio.to_thread(run_ffe, tmp_path, "config", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "an exchange's market" in check.stdout and "the next start will stop on it (exit 2)" in check.stdout, (
        check.stdout)


async def test_a_paper_account_s_books_of_an_exchange_s_market_are_not_taken_on_to_the_simulated_market(
        tmp_path, fx):  # noqa: F811
    """A paper account trading on the exchange's market (venue.kind paper, market.source exchange) keeps a paper
    venue's book and its own starting cash, but no market state: the exchange's market stores none. Started on the
    simulated market, it is refused as another market's books, exit 2 naming market.source, as ffe config check
    says beforehand; not taken for a database that lost its market record (exit 1), which neither a backup nor moving
    the records away would mend."""
    settings = live_settings(tmp_path, fx, mode="paper", venue={"kind": "paper"})
    async with engine_session(settings) as running:
        await next_bar(running.engine, fx)
    values = live_config(fx, mode="paper", venue={"kind": "paper"})
    values["market"] = {"source": "simulated"}
    write_config(tmp_path, values)
    db = settings.db_path
    before = db.read_bytes()
    proc = await asyncio.to_thread(run_ffe, tmp_path, "run", "--headless", "--max-bars", "5", env=live_env(fx))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert 'market.source = "simulated"' in line and "an exchange's market" in line, line
    assert db.read_bytes() == before
    check = await asyncio.to_thread(run_ffe, tmp_path, "config", "check", env=live_env(fx))
    assert "an exchange's market" in check.stdout and "the next start will stop on it (exit 2)" in check.stdout, (
        check.stdout + check.stderr)
    doctor = await asyncio.to_thread(run_ffe, tmp_path, "doctor", env=live_env(fx))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
