"""A backtest's paper account is a spot account: whatever the sizing allows and however far the market gaps between
a decision and its fill, the cash never goes below zero and no position is bought with money the account lacks.
Real `ffe backtest` subprocesses over a crafted file whose every bar, after a quiet start, opens above the last
close: each entry is sized at one close and filled at a dearer open."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import db_rows, ffe_env, run_ffe

START = 1_704_067_200  # 2024-01-01, seconds
CASH = 10_000.0


def gap_up_file(path: Path, quiet: int = 300, gaps: int = 300) -> Path:
    """`quiet` bars drifting up a little, then `gaps` bars each opening 2% above the close before it."""
    rows = ["timestamp,open,high,low,close,volume"]
    close = 100.0
    for i in range(quiet + gaps):
        open_ = close * (1.02 if i >= quiet else 1.0)
        close = open_ * (1.002 if i % 7 else 0.999)
        high, low = max(open_, close) * 1.001, min(open_, close) * 0.999
        rows.append(f"{START + 3600 * i},{open_:.6f},{high:.6f},{low:.6f},{close:.6f},5")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_an_all_in_entry_filled_at_a_gap_up_never_takes_the_cash_below_zero(tmp_path):
    gap_up_file(tmp_path / "GAPUP-USD_1h.csv")
    env = ffe_env(FFE_RISK__MAX_POSITION_PCT="100", FFE_RISK__MAX_CONCENTRATION_PCT="100",
                  FFE_RISK__RISK_PER_TRADE_PCT="50", FFE_RISK__MAX_VAR_PCT="100", FFE_RISK__MAX_DRAWDOWN_PCT="100",
                  FFE_RISK__DAILY_LOSS_LIMIT_PCT="100", FFE_VENUE__STARTING_CASH=str(CASH))
    proc = run_ffe(tmp_path, "backtest", "GAPUP-USD_1h.csv", "--records", "trades", "--report", "r.json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    db = Path(report["database"]) if Path(report["database"]).is_absolute() else tmp_path / report["database"]
    fills = db_rows(db, "SELECT side, quantity, price, fee FROM fills ORDER BY id")
    assert any(side == "buy" for side, *_ in fills)
    cash, lowest = CASH, CASH
    for side, qty, price, fee in fills:
        cash += (-qty * price if side == "buy" else qty * price) - fee
        lowest = min(lowest, cash)
    assert lowest >= -1e-6, f"the cash went to {lowest:.2f}"


def all_in_env(**extra: str) -> dict[str, str]:
    values = {"FFE_RISK__MAX_POSITION_PCT": "100", "FFE_RISK__MAX_CONCENTRATION_PCT": "100",
              "FFE_RISK__RISK_PER_TRADE_PCT": "50", "FFE_RISK__MAX_VAR_PCT": "100",
              "FFE_RISK__MAX_DRAWDOWN_PCT": "100", "FFE_RISK__DAILY_LOSS_LIMIT_PCT": "100",
              "FFE_VENUE__STARTING_CASH": str(CASH)}
    return ffe_env(**{**values, **extra})


def venue_refusals(tmp_path: Path, report: dict) -> list[tuple]:
    db = Path(report["database"]) if Path(report["database"]).is_absolute() else tmp_path / report["database"]
    return db_rows(db, "SELECT client_order_id, error FROM orders WHERE status = 'rejected'")


def test_an_entry_sized_to_the_cash_is_sized_for_the_paper_venue_s_slippage_too(tmp_path):
    """With 2% slippage, a buy sized to the cash after the fee alone needs more than the account has at the price
    the paper venue reserves it at, and would be refused ("insufficient balance") at every entry: no trade at all.
    Sized for the slippage too, it is placed and fills."""
    gap_up_file(tmp_path / "GAPUP-USD_1h.csv")
    env = all_in_env(FFE_VENUE__SLIPPAGE_BPS="200")
    proc = run_ffe(tmp_path, "backtest", "GAPUP-USD_1h.csv", "--records", "trades", "--report", "r.json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert venue_refusals(tmp_path, report) == []
    assert report["entries"]["sent"] > 0 and report["trades"] > 0, report["entries"]


def test_an_entry_is_sized_to_the_cash_left_by_the_entries_in_flight(tmp_path):
    """Two symbols enter on the same bar, each allowed 60% of the equity: the second is sized to what the first's
    order leaves of the cash (the paper venue holds it until the fill), not refused for want of it."""
    gap_up_file(tmp_path / "GAPUP-USD_1h.csv")
    (tmp_path / "GAPTWO-USD_1h.csv").write_text((tmp_path / "GAPUP-USD_1h.csv").read_text())
    env = all_in_env(FFE_RISK__MAX_POSITION_PCT="60", FFE_RISK__MAX_CORRELATION="1", FFE_RISK__MAX_LEVERAGE="2")
    proc = run_ffe(tmp_path, "backtest", "GAPUP-USD_1h.csv", "GAPTWO-USD_1h.csv", "--records", "trades",
                   "--report", "r.json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert venue_refusals(tmp_path, report) == []
    assert report["per_symbol"]["GAPTWO/USD"]["trades"] > 0 and report["per_symbol"]["GAPUP/USD"]["trades"] > 0
