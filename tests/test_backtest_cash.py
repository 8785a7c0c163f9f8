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
