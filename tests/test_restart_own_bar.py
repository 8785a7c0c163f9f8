"""A replay killed right after an order is committed goes on with the candles after the one that decided it: the paper
venue fills the order at the next candle's open, as the backtest does, never at the deciding candle's own open.

Seen before: the records' market time is a clock time, and a start hands out every candle closing at it that the
saved market (`seen`, stored with the books after the bar) did not hold. The engine commits an order (journal and paper
venue book) before it stores the books: killed in between, the restart handed the symbol its deciding candle again,
and the paper venue filled the order at that candle's open: a stop-loss at a price from before the stop was hit, a BUY
decided at a close filled at the open before it, an order the end of its symbol's file cancels filled after all. The
kill also left the order without the decision that placed it (its record was written after the order's journal), and
the trade it opened was then never learned from: the weights, and every decision after, went their own way. The
decision is now committed with the order's journal entry. And a new account killed right after journaling its first
order, before the paper venue had it, kept that order in doubt for good: its repeat, sent before the warm-up gave the
paper venue a price, was taken for a refusal. Real `ffe backtest` and `ffe run --headless` processes, killed as SIGKILL
kills (an os._exit right after the commit), over the sample files, real SQLite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ffe_engine.market.csvdata import load_csv

from conftest import BTC_CSV, ETH_CSV, db_rows, ffe_env, run_ffe, sample_head
from test_restart_midbar import backtest_db

HOUR = 3_600_000
BARS = 400
WARMUP = BARS  # the whole files as warm-up: the restart's decisions are then the backtest's to the last digit

DECISIONS = ("SELECT ts, symbol, action, confidence, tier, strategy, price, quantity, outcome FROM decisions "
             "ORDER BY ts, symbol")
ORDERS = ("SELECT symbol, side, type, quantity, price, reason, status, filled, average, fee, created_ts, updated_ts "
          "FROM orders ORDER BY created_ts, symbol, side, reason")
FILLS = "SELECT symbol, side, quantity, price, fee, ts FROM fills ORDER BY ts, symbol"
TRADES = ("SELECT symbol, side, quantity, entry_price, exit_price, pnl, fees, reason, opened_ts, closed_ts "
          "FROM trades ORDER BY closed_ts, symbol")
WEIGHTS = "SELECT value FROM kv WHERE key = 'weights'"

# `ffe ARGS` that dies as a SIGKILL kills (os._exit, nothing flushed or stored after) right after the KILL_AT-th order
# of reason KILL_REASON (and symbol KILL_SYMBOL, if set) is committed: KILL_ON `open` (the default), `journal` (new,
# before it is sent) or `fill`.
KILLER = '''
import os, sys
from ffe_engine import store
reason, symbol, at = os.environ["KILL_REASON"], os.environ.get("KILL_SYMBOL"), int(os.environ["KILL_AT"])
count = 0
def kill_after(method, order_of):
    """Store.`method` that kills the process after the commit of the KILL_AT-th order of the kind: `order_of(args)`
    gives (the order, the stamp said) or None for a commit that is not one."""
    real = getattr(store.Store, method)
    async def dying(self, *args, **kwargs):
        global count
        await real(self, *args, **kwargs)
        found = order_of(*args)
        if found is not None and found[0].reason.value == reason and symbol in (None, found[0].symbol):
            count += 1
            if count == at:
                print(f"KILLED after {found[0].client_order_id} {found[1]}", file=sys.stderr, flush=True)
                os._exit(137)
    setattr(store.Store, method, dying)
on = os.environ.get("KILL_ON", "open")
if on == "fill":
    kill_after("add_fill", lambda f, o, *rest: (o, f.ts))
elif on == "journal":
    kill_after("journal_order", lambda o, *rest: (o, o.created_ts))
else:
    kill_after("update_order", lambda o, *rest: (o, o.created_ts) if o.status.value == "open" else None)
from ffe_cli.entry import main
sys.argv = ["ffe", *sys.argv[1:]]
sys.exit(main())
'''


def write_market(cwd: Path, eth_bars: int = BARS) -> None:
    (cwd / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, BARS)))
    (cwd / "ETH-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, eth_bars)))
    (cwd / "config.toml").write_text(
        '[market]\nsource = "replay"\nreplay_files = { "BTC/USD" = "BTC-USD_1h.csv", "ETH/USD" = "ETH-USD_1h.csv" }\n'
        f'[engine]\nsymbols = ["BTC/USD", "ETH/USD"]\ntimeframe = "1h"\nwarmup_bars = {WARMUP}\napproval = "auto"\n'
        '[venue]\nquote = "USD"\n[risk]\nmin_confidence = 0.3\n')
    (cwd / "killer.py").write_text(KILLER)


def killed_run(cwd: Path, reason: str, at: int, symbol: str | None = None, **extra: str) -> str:
    """`ffe run --headless` killed right after that order is committed open: its client order id."""
    env = ffe_env(KILL_REASON=reason, KILL_AT=at, **({"KILL_SYMBOL": symbol} if symbol else {}))
    proc = subprocess.run([sys.executable, "killer.py", "run", "--headless"], cwd=cwd, env={**env, **extra},
                          capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 137, f"not killed at that order (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stderr.split("KILLED after ")[1].split()[0]


def assert_as_the_backtest(db: Path, expected: Path, cid: str, decided: bool = True) -> None:
    """The records the backtest's: every decision (the killed candle's committed with its order, and not decided
    again), order, fill and trade, and the weights the closed trades taught. Not `decided`: the order was no
    decision's (a stop-loss, placed before its candle's decision), and the kill lost that candle's decision, which
    the restart does not make again (the candle made an order: it is not handed out again)."""
    ((created, symbol),) = db_rows(db, "SELECT created_ts, symbol FROM orders WHERE client_order_id = ?", (cid,))
    killed = db_rows(db, "SELECT outcome FROM decisions WHERE ts = ? AND symbol = ?", (created - HOUR, symbol))
    assert len(killed) == (1 if decided else 0), f"the killed candle decided {len(killed)} times"
    for what, sql in (("fills", FILLS), ("trades", TRADES), ("orders", ORDERS), ("decisions", DECISIONS),
                      ("weights", WEIGHTS)):
        live, want = db_rows(db, sql), db_rows(expected, sql)
        if what == "decisions" and not decided:
            want = [r for r in want if r[:2] != (created - HOUR, symbol)]
        differ = [(a, b) for a, b in zip(want, live) if a != b]
        assert not differ and len(live) == len(want), (
            f"{what}: {len(live)} against the backtest's {len(want)}, {len(differ)} differ, first (backtest, "
            f"replay): {differ[:2]}")


def run_on(cwd: Path, reason: str, at: int, symbol: str | None = None, **extra: str) -> tuple[Path, str]:
    """The backtest's records of the market in `cwd`, and the client order id a run killed at that order (killed_run)
    was killed at, once a second run has gone on to the end."""
    expected = backtest_db(cwd)
    cid = killed_run(cwd, reason, at, symbol, **extra)
    second = run_ffe(cwd, "run", "--headless")
    assert second.returncode == 0, second.stderr
    return expected, cid


def test_a_stop_loss_committed_just_before_a_kill_fills_at_the_next_candles_open_as_the_backtests(tmp_path):
    write_market(tmp_path)
    expected, cid = run_on(tmp_path, "stop_loss", 1)
    db = tmp_path / "data" / "ffe.db"
    ((created, symbol),) = db_rows(db, "SELECT created_ts, symbol FROM orders WHERE client_order_id = ?", (cid,))
    decided = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = ? ORDER BY rowid", (symbol,))]
    assert decided == sorted(set(decided)), f"{symbol}: a bar decided twice after the restart"
    (fill,) = db_rows(db, "SELECT ts FROM fills WHERE client_order_id = ?", (cid,))
    assert fill[0] == created + HOUR, f"the stop-loss filled on the candle closing at {fill[0]}, not the next one"
    assert_as_the_backtest(db, expected, cid)


def test_a_stop_loss_journaled_just_before_a_kill_fills_at_the_next_candles_open_as_the_backtests(tmp_path):
    """Killed before the paper venue had the stop-loss (journaled `new`): sent again at the restart, it fills at the
    next candle's open, not at the open of the candle that triggered it, which is decided again."""
    write_market(tmp_path)
    expected, cid = run_on(tmp_path, "stop_loss", 1, KILL_ON="journal")
    db = tmp_path / "data" / "ffe.db"
    ((created,),) = db_rows(db, "SELECT created_ts FROM orders WHERE client_order_id = ?", (cid,))
    (fill,) = db_rows(db, "SELECT ts FROM fills WHERE client_order_id = ?", (cid,))
    assert fill[0] == created + HOUR, f"the stop-loss filled on the candle closing at {fill[0]}, not the next one"
    assert_as_the_backtest(db, expected, cid)


def test_a_buy_committed_just_before_a_kill_fills_at_the_next_candles_open_with_its_decision_kept(tmp_path):
    write_market(tmp_path)
    expected = backtest_db(tmp_path)
    cid = killed_run(tmp_path, "signal", 2)
    db = tmp_path / "data" / "ffe.db"
    ((decision_id, side),) = db_rows(db, "SELECT decision_id, side FROM orders WHERE client_order_id = ?", (cid,))
    assert db_rows(db, "SELECT outcome, client_order_id FROM decisions WHERE decision_id = ?",
                   (decision_id,)) == [("submitted", cid)]
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0 and decision_id not in doctor.stdout, doctor.stderr + doctor.stdout
    second = run_ffe(tmp_path, "run", "--headless")
    assert second.returncode == 0, second.stderr
    assert side == "buy"
    ((created,),) = db_rows(db, "SELECT created_ts FROM orders WHERE client_order_id = ?", (cid,))
    (fill,) = db_rows(db, "SELECT ts FROM fills WHERE client_order_id = ?", (cid,))
    assert fill[0] == created + HOUR, f"the BUY filled on the candle closing at {fill[0]}, not the next one"
    assert_as_the_backtest(db, expected, cid)


def test_an_order_decided_on_its_files_last_candle_and_killed_is_cancelled_as_the_backtest_cancels_it(tmp_path):
    """ETH/USD's file ends at the candle that decided an entry: the backtest cancels the entry (market data ended);
    the replay killed right after committing it does the same at its restart, never filling it."""
    write_market(tmp_path)
    full = backtest_db(tmp_path)
    eth_first = load_csv(tmp_path / "ETH-USD_1h.csv", symbol="ETH/USD").ts[0]
    entries = [r[0] for r in db_rows(full, "SELECT created_ts FROM orders WHERE symbol = 'ETH/USD' AND reason = "
                                           "'signal' AND side = 'buy' ORDER BY created_ts")]
    assert entries, "the backtest made no ETH/USD entry to end the file at"
    created = entries[0]
    # The file's last candle closes when the entry was made.
    write_market(tmp_path, eth_bars=(created - HOUR - eth_first) // HOUR + 1)
    expected, cid = run_on(tmp_path, "signal", 1, "ETH/USD")
    db = tmp_path / "data" / "ffe.db"
    assert db_rows(db, "SELECT status, filled FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled", 0.0)]
    assert_as_the_backtest(db, expected, cid)


def test_a_kill_right_after_a_fill_decides_that_candle_after_the_restart_as_the_backtest(tmp_path):
    """The paper venue fills an order at a candle's open, and the fill is committed before that candle's decision
    is written: killed in between, the candle is handed out again (the fill, stored with the venue's book, is not
    made twice) and decided, as the backtest decides it; taken for done (its fill stamped at its close), it was never
    decided, and an entry it would have made never was."""
    write_market(tmp_path)
    expected, cid = run_on(tmp_path, "stop_loss", 1, KILL_ON="fill")
    db = tmp_path / "data" / "ffe.db"
    for what, sql in (("fills", FILLS), ("trades", TRADES), ("orders", ORDERS), ("decisions", DECISIONS)):
        live, want = db_rows(db, sql), db_rows(expected, sql)
        differ = [(a, b) for a, b in zip(want, live) if a != b]
        assert not differ and len(live) == len(want), (
            f"{what} after the kill at {cid}'s fill: {len(live)} against the backtest's {len(want)}, {len(differ)} "
            f"differ, first (backtest, replay): {differ[:2]}")


def test_a_new_accounts_first_order_killed_right_after_its_journal_entry_fills_as_the_backtests(tmp_path):
    """Killed before the paper venue had the order (journaled `new`, nothing of the paper venue stored yet): the
    restart finds it absent and sends it again once the market has given the paper venue its prices, and it fills
    at the next candle's open, as the backtest's did; it never stays in doubt."""
    write_market(tmp_path)
    expected = backtest_db(tmp_path)
    cid = killed_run(tmp_path, "signal", 1, KILL_ON="journal")
    db = tmp_path / "data" / "ffe.db"
    assert db_rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("new",)]
    assert not db_rows(db, "SELECT 1 FROM kv WHERE key = 'paper_venue'")  # nothing of the paper venue stored yet
    second = run_ffe(tmp_path, "run", "--headless")
    assert second.returncode == 0, second.stderr
    ((created, status),) = db_rows(db, "SELECT created_ts, status FROM orders WHERE client_order_id = ?", (cid,))
    (fill,) = db_rows(db, "SELECT ts FROM fills WHERE client_order_id = ?", (cid,))
    assert status == "filled" and fill[0] == created + HOUR, (status, fill)
    assert_as_the_backtest(db, expected, cid)
    # Its sends held back while the paper venue had no price are not said again and again, each as a new record.
    said = [(r["status"], r.get("error")) for r in (json.loads(d) for (d,) in db_rows(
        db, "SELECT data FROM events WHERE event = 'order' ORDER BY seq")) if r["client_order_id"] == cid]
    assert all(a != b for a, b in zip(said, said[1:])), said


def test_an_order_journaled_just_before_a_kill_keeps_its_gates(tmp_path):
    """Every caller's gates but the strategy's (recorded with its decision) are recorded with the order: committed
    with its journal entry, so that a kill right after it leaves an order whose gates `ffe audit show` can tell."""
    write_market(tmp_path)
    cid = killed_run(tmp_path, "stop_loss", 1, KILL_ON="journal")
    db = tmp_path / "data" / "ffe.db"
    gates = db_rows(db, "SELECT code, passed FROM gate_results WHERE client_order_id = ? ORDER BY position", (cid,))
    assert gates and all(passed for _, passed in gates), gates
    # The story of the order tells its own gates with it, beside its entry decision's.
    shown = run_ffe(tmp_path, "audit", "show", cid, "--json")
    assert shown.returncode == 0, shown.stderr
    (order,) = [o for o in json.loads(shown.stdout)["orders"] if o["client_order_id"] == cid]
    assert [(g["code"], g["passed"]) for g in order.get("gates", [])] == [(c, bool(p)) for c, p in gates], order
    text = run_ffe(tmp_path, "audit", "show", cid).stdout
    line = next(i for i, t in enumerate(text.splitlines()) if t.strip().startswith(cid))
    assert text.splitlines()[line + 1].strip().startswith("gates "), text
