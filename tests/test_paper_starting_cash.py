"""A paper account's starting cash is its own, stored at its first start: `venue.starting_cash` applies to a fresh
data directory (docs/states.md). Changed on an existing account, it took effect at the next start: the books' cash
rebuilt from the new figure (40,000 more than the simulated exchange held), the reconciliation pausing the engine on
it, nothing said, and `ffe doctor` passing, its cash check rebuilt from the same figure. And the doctor chose the
paper checks by the configuration, not by the records: a paper account's damaged cash passed once config.toml named
a live exchange. Real subprocesses, real SQLite files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import db_rows, db_value, ffe_env, run_ffe

BARS = "300"


@pytest.fixture(scope="module")
def account(tmp_path_factory) -> Path:
    """A paper account that traded from the default 10,000."""
    cwd = tmp_path_factory.mktemp("paper")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", BARS, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert db_value(cwd / "data" / "ffe.db", "SELECT COUNT(*) FROM fills") > 0
    return cwd


def copy_of(account: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(account, to / "acct")
    return to / "acct"


def books_cash(cwd: Path) -> float:
    return json.loads(db_value(cwd / "data" / "ffe.db", "SELECT value FROM kv WHERE key = 'portfolio'"))["cash"]


def cash_of_the_fills(cwd: Path, starting: float) -> float:
    cash = starting
    for side, qty, price, fee, fee_base_value in db_rows(cwd / "data" / "ffe.db",
                                                         "SELECT side, quantity, price, fee, fee_base_value "
                                                         "FROM fills"):
        in_cash = fee - (fee_base_value or 0.0)
        cash += -(qty * price + in_cash) if side == "buy" else qty * price - in_cash
    return cash


def test_a_starting_cash_changed_on_an_existing_paper_account_is_announced_and_its_own_is_kept(account, tmp_path):
    cwd = copy_of(account, tmp_path)
    db = cwd / "data" / "ffe.db"
    assert db_value(db, "SELECT value FROM kv WHERE key = 'paper_starting_cash'") == "10000.0"
    changed = ffe_env(FFE_VENUE__STARTING_CASH="50000")
    check = run_ffe(cwd, "config", "check", env=changed)
    assert check.returncode == 0, check.stderr
    [said] = [x for x in check.stdout.splitlines() if x.startswith("#   venue.starting_cash:")]
    assert "10,000" in said and "fresh data directory" in said, said
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "20", env=changed, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # The books' cash is the account's own starting cash and its fills, as the simulated exchange's is.
    assert books_cash(cwd) == pytest.approx(cash_of_the_fills(cwd, 10_000.0), rel=1e-12)
    venue = json.loads(db_value(db, "SELECT value FROM kv WHERE key = 'paper_venue'"))
    assert books_cash(cwd) == pytest.approx(venue["balances"]["USDT"], rel=1e-9)
    assert db_value(db, "SELECT state FROM engine_state") == "RUNNING"  # nothing for reconciliation to hold
    [override] = [json.loads(d) for (d,) in db_rows(db, "SELECT data FROM events WHERE event = 'override'")
                  if json.loads(d)["setting"] == "venue.starting_cash"]
    assert (override["configured"], override["saved"], override["effective"]) == ("50000.0", "10000.0", "10000.0")
    assert "venue.starting_cash" in proc.stderr
    doctor = run_ffe(cwd, "doctor", env=changed)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_the_doctor_checks_a_paper_account_s_cash_whatever_the_configuration_names(account, tmp_path):
    cwd = copy_of(account, tmp_path)
    db = cwd / "data" / "ffe.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE kv SET value = json_set(value, '$.cash', json_extract(value, '$.cash') + 5000) "
                     "WHERE key = 'portfolio'")
    conn.close()
    paper = run_ffe(cwd, "doctor")
    assert paper.returncode == 1 and "stored cash" in paper.stdout + paper.stderr, paper.stdout + paper.stderr
    live = run_ffe(cwd, "doctor", env=ffe_env(FFE_MODE="live", FFE_VENUE__KIND="ccxt", FFE_EXCHANGE__ID="binance"))
    assert live.returncode == 1, live.stdout + live.stderr
    assert "stored cash" in live.stdout + live.stderr
    # A changed starting cash does not excuse it either: the account's own is the one checked.
    other = run_ffe(cwd, "doctor", env=ffe_env(FFE_VENUE__STARTING_CASH="15000"))
    assert other.returncode == 1 and "stored cash" in other.stdout + other.stderr


def test_an_account_that_never_booked_anything_takes_the_starting_cash_configured_now(tmp_path):
    # A first start killed once it had stored its starting cash, before any books: still a fresh account. The
    # next start, with another figure configured, took the stored one for the announcement and the configured one
    # for the books and the simulated exchange: the doctor found the cash 40,000 off, and the start after it paused
    # on a drawdown that never was.
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "1")
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "data" / "ffe.db"
    assert db_value(db, "SELECT COUNT(*) FROM orders") == 0
    with sqlite3.connect(db) as conn:  # as a kill before the first books leaves it
        conn.execute("DELETE FROM kv WHERE key IN ('portfolio', 'paper_venue', 'weights')")
    conn.close()
    changed = ffe_env(FFE_VENUE__STARTING_CASH="50000")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", BARS, env=changed, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "venue.starting_cash" not in proc.stderr  # nothing overridden: the account takes it
    assert db_value(db, "SELECT value FROM kv WHERE key = 'paper_starting_cash'") == "50000.0"
    assert db_value(db, "SELECT COUNT(*) FROM fills") > 0
    assert books_cash(tmp_path) == pytest.approx(cash_of_the_fills(tmp_path, 50_000.0), rel=1e-12)
    doctor = run_ffe(tmp_path, "doctor", env=changed)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3", env=changed)
    assert again.returncode == 0 and "DRAWDOWN" not in again.stderr, again.stderr



@pytest.mark.parametrize("kept", ["stored", "from the orders"])
def test_a_quote_currency_changed_on_an_existing_account_stops_the_start(account, tmp_path, kept):
    # The books hold their cash in the quote currency the account began with: counted as another currency, the
    # reconciliation found the whole cash missing and an accept wrote it off. `kept`: the account's quote as its
    # first start stored it, or (a database of an ffe that did not store it) as the symbols it traded say.
    cwd = copy_of(account, tmp_path)
    db = cwd / "data" / "ffe.db"
    assert db_value(db, "SELECT value FROM kv WHERE key = 'books_quote'") == '"USDT"'
    if kept == "from the orders":
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM kv WHERE key = 'books_quote'")
        conn.close()
    before = db.read_bytes()
    changed = ffe_env(FFE_VENUE__QUOTE="USDC", FFE_ENGINE__SYMBOLS='["BTC/USDC", "ETH/USDC"]')
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", env=changed, timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "engine started" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr[-3000:]
    assert "venue.quote" in errors[0] and "USDT" in errors[0] and "USDC" in errors[0], errors[0]
    assert db.read_bytes() == before
    if kept == "stored":  # what `ffe config check` says of it, as a comment
        check = run_ffe(cwd, "config", "check", env=changed)
        assert check.returncode == 0, check.stderr
        assert "\n# venue.quote = 'USDC', but the data directory's books keep their cash in USDT" in check.stdout
        assert check.stdout.rstrip().endswith("the next start will stop on it (exit 2)"), check.stdout[-500:]
    again = run_ffe(cwd, "run", "--headless", "--max-bars", "5", timeout=60)  # as it was: it goes on
    assert again.returncode == 0, again.stderr[-3000:]
    assert db_value(db, "SELECT value FROM kv WHERE key = 'books_quote'") == '"USDT"'



def test_a_starting_cash_record_lost_from_an_account_that_stored_it_stops_the_start(account, tmp_path):
    """`paper_starting_cash` deleted from an account whose starts stored it: the start took its absence for an
    account made before ffe stored it, stored the configured figure, and rebuilt the books' cash from it (10,000 more
    with `venue.starting_cash = 20000`), after which `ffe doctor` passed. It is damage, as any record lost beside
    those written after it: the start, the doctor and a backup refuse it, naming the key, nothing written."""
    cwd = copy_of(account, tmp_path)
    db = cwd / "data" / "ffe.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM kv WHERE key = 'paper_starting_cash'")
    conn.close()
    before = db.read_bytes()
    changed = ffe_env(FFE_VENUE__STARTING_CASH="20000")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", env=changed, timeout=60)
    assert proc.returncode != 0, proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "paper_starting_cash" in x]
    assert "ffe.db" in line and "lost" in line, proc.stderr
    assert db.read_bytes() == before
    doctor = run_ffe(cwd, "doctor", env=changed)
    assert doctor.returncode == 1 and "paper_starting_cash" in doctor.stdout + doctor.stderr
    backup = run_ffe(cwd, "backup", env=changed)
    assert backup.returncode != 0 and "paper_starting_cash" in backup.stdout + backup.stderr


def test_a_start_refused_for_its_quote_currency_writes_nothing_not_even_the_alerts_bookkeeping(account, tmp_path):
    """The account was started with an alert channel; the refused start (another venue.quote, exit 2) has none
    configured. It stops before anything is written: not the alert channels it would have said lost (the next good
    start says so), not a delivery of the outbox. Every row of the database is as it was."""
    cwd = copy_of(account, tmp_path)
    db = cwd / "data" / "ffe.db"
    with_channel = ffe_env(FFE_ALERTS__WEBHOOK_URL="http://127.0.0.1:9/hook")
    first = run_ffe(cwd, "run", "--headless", "--max-bars", "2", env=with_channel, timeout=60)
    assert first.returncode == 0, first.stderr[-3000:]
    assert db_value(db, "SELECT value FROM kv WHERE key = 'alert_channels'") == '["webhook"]'

    def rows() -> list[str]:
        conn = sqlite3.connect(db)
        try:
            return list(conn.iterdump())
        finally:
            conn.close()

    before = rows()
    changed = ffe_env(FFE_VENUE__QUOTE="USDC", FFE_ENGINE__SYMBOLS='["BTC/USDC", "ETH/USDC"]')
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", env=changed, timeout=60)
    assert proc.returncode == 2 and "venue.quote" in proc.stderr, proc.stderr[-3000:]
    assert rows() == before
    again = run_ffe(cwd, "run", "--headless", "--max-bars", "2", timeout=60)  # no channel now: said at this start
    assert again.returncode == 0 and "alert channel no longer configured" in again.stderr, again.stderr[-3000:]
