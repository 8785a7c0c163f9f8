"""A backtest that ends holding a position says what it holds, and its figures add up: real `ffe backtest`
subprocesses over the first 1,009 hourly ETH bars of the sample, whose last bar fills an entry that no later bar
closes. The JSON report lists the position (as the run's own database holds it, valued at the last close), the end
equity is the cash plus what is held, the closed trades' P&L and the open position's add up to the change in
equity and their fees to the fees paid, the printed summary and its per-symbol table show it, and every record
level reports the same. A run that ends flat says it holds nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ETH_CSV, db_rows, run_ffe, sample_head

OPEN_ROWS = 1009  # the last bar fills an entry: the run ends holding ETH
FLAT_ROWS = 1004  # the same market, ended before that entry: nothing held
LEVELS = ("full", "trades", "summary")
RUN_FIELDS = {"run_id", "records", "database", "audit", "elapsed_s", "bars_per_s"}  # what differs between runs
OPENED = "2020-02-12T02:00:00Z"  # the fill of the entry, at the last bar's close


def backtest(cwd: Path, rows: int, level: str) -> tuple[dict, str]:
    (cwd / "ETH-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, rows)))
    proc = run_ffe(cwd, "backtest", "ETH-USD_1h.csv", "--records", level, "--report", "report.json")
    assert proc.returncode == 0, proc.stderr
    return json.loads((cwd / "report.json").read_text()), proc.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    out = {}
    for level in LEVELS:
        cwd = tmp_path_factory.mktemp(level)
        report, stdout = backtest(cwd, OPEN_ROWS, level)
        out[level] = {"cwd": cwd, "report": report, "stdout": stdout}
    return out


def last_close(cwd: Path) -> float:
    return float((cwd / "ETH-USD_1h.csv").read_text().splitlines()[-1].split(",")[4])


def symbol_table(stdout: str) -> dict[str, list[str]]:
    """The printed per-symbol table: its rows by name (`ETH/USD`, `ETH/USD open`, `total`), each row's cells."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["symbol", "trades"])
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        name = re.match(r"\s+(\S+(?: open)?)\s", line)
        assert name, line
        rows[name.group(1)] = line[name.end():].split()
    return rows


def money(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_the_report_lists_the_position_held_at_the_end_as_the_run_s_database_holds_it(runs):
    run = runs["trades"]
    r = run["report"]
    assert r["open_positions"] == 1  # still the count, as before
    (held,) = r["held_at_end"]
    db = run["cwd"] / r["database"]
    ((side, quantity, entry_price, opened_ts, stop_loss, take_profit, fees),) = db_rows(
        db, "SELECT side, quantity, entry_price, opened_ts, stop_loss, take_profit, fees FROM positions "
            "WHERE symbol = 'ETH/USD'")
    last = last_close(run["cwd"])
    assert held["symbol"] == "ETH/USD" and held["side"] == side == "buy"
    assert held["quantity"] == quantity == 3.991634 and held["entry_price"] == entry_price
    assert held["opened"] == OPENED and opened_ts == 1_581_472_800_000
    assert held["stop_loss"] == stop_loss and held["take_profit"] == take_profit
    assert stop_loss < entry_price < take_profit
    assert held["entry_fees"] == pytest.approx(fees, abs=1e-4)
    assert held["last_price"] == last == 245.97
    assert held["value"] == pytest.approx(quantity * last, abs=0.005)
    assert held["unrealised_pnl"] == pytest.approx((last - entry_price) * quantity, abs=0.005)
    # Net of its entry fees, as a closed trade's P&L is of its fees.
    assert held["pnl"] == pytest.approx((last - entry_price) * quantity - fees, abs=0.005)


def test_the_end_equity_is_the_cash_from_the_fills_plus_what_is_held_at_the_last_price(runs):
    run = runs["trades"]
    r = run["report"]
    cash = r["start_equity"]
    for side, qty, price, fee in db_rows(run["cwd"] / r["database"],
                                         "SELECT side, quantity, price, fee FROM fills ORDER BY id"):
        cash += (qty * price if side == "sell" else -qty * price) - fee
    assert r["end_cash"] == pytest.approx(cash, abs=0.005)
    assert r["end_cash"] == pytest.approx(9_018.26, abs=0.005)
    held = sum(p["quantity"] * p["last_price"] for p in r["held_at_end"])
    assert r["end_equity"] == pytest.approx(r["end_cash"] + held, abs=0.01) == 10_000.08


def test_closed_trades_and_the_open_position_add_up_to_the_change_in_equity_and_the_fees_paid(runs):
    r = runs["trades"]["report"]
    closed_pnl = sum(row["pnl"] for row in r["per_symbol"].values())
    closed_fees = sum(row["fees"] for row in r["per_symbol"].values())
    open_pnl = sum(p["pnl"] for p in r["held_at_end"])
    open_fees = sum(p["entry_fees"] for p in r["held_at_end"])
    assert closed_pnl == pytest.approx(10.13, abs=0.005) and open_pnl < 0
    assert closed_pnl + open_pnl == pytest.approx(r["end_equity"] - r["start_equity"], abs=0.015)
    assert sum(p["unrealised_pnl"] for p in r["held_at_end"]) - open_fees == pytest.approx(open_pnl, abs=0.015)
    assert closed_fees + open_fees == pytest.approx(r["fees"], abs=0.005)
    total = r["per_symbol_total"]
    assert total["trades"] == r["trades"] == sum(row["trades"] for row in r["per_symbol"].values())
    assert total["pnl"] == pytest.approx(closed_pnl + open_pnl, abs=0.015)
    assert total["pnl"] == pytest.approx(r["end_equity"] - r["start_equity"], abs=0.01)
    assert total["fees"] == pytest.approx(closed_fees + open_fees, abs=1e-4)
    assert total["fees"] == r["fees"]  # all the fees paid, one figure: to four decimals, as every fee


def test_the_printed_summary_says_what_is_held_and_its_table_adds_up_to_the_totals(runs):
    r, out = runs["trades"]["report"], runs["trades"]["stdout"]
    lines = [line for line in out.splitlines() if line.startswith("  held at end ")]
    assert len(lines) == 1, out
    (held,) = r["held_at_end"]
    line = lines[0]
    for text in ("ETH/USD", "3.991634", "248.24", OPENED, "last 245.97", "value 981.82",
                 f"unrealised {held['unrealised_pnl']:+,.2f}", f"entry fees {held['entry_fees']:,.4f}",
                 "stop loss ", "take profit "):
        assert text in line, (text, line)
    assert re.search(r"^  end cash +9,018\.26 \+ 981\.82 held = 10,000\.08$", out, re.MULTILINE), out
    table = symbol_table(out)
    assert list(table) == ["ETH/USD", "ETH/USD open", "total"], table
    closed, opened, total = table["ETH/USD"], table["ETH/USD open"], table["total"]
    assert opened[2] == f"{held['pnl']:+,.2f}" and opened[3] == f"{held['entry_fees']:,.4f}"
    assert total[0] == str(r["trades"])
    assert money(total[1]) == pytest.approx(money(closed[2]) + money(opened[2]), abs=0.015)
    assert money(total[1]) == pytest.approx(r["end_equity"] - r["start_equity"], abs=0.01)
    assert money(total[2]) == pytest.approx(money(closed[3]) + money(opened[3]), abs=1e-4)
    fees = re.search(r"^  fees +(\S+)$", out, re.MULTILINE)
    assert fees and fees.group(1) == total[2] == f"{r['fees']:,.4f}", out  # the summary's fees are the total row's


def test_every_fee_in_the_report_is_to_four_decimals_as_the_run_s_database_holds_it(runs):
    run = runs["trades"]
    r = run["report"]
    db = run["cwd"] / r["database"]
    ((paid,),) = db_rows(db, "SELECT SUM(fee) FROM fills")
    assert r["fees"] == r["per_symbol_total"]["fees"] == round(paid, 4) != round(paid, 2)
    for symbol, row in r["per_symbol"].items():
        ((closed,),) = db_rows(db, "SELECT COALESCE(SUM(fees), 0) FROM trades WHERE symbol = ?", (symbol,))
        assert row["fees"] == round(closed, 4)
    for reason, row in r["exits_by_reason"].items():
        ((closed,),) = db_rows(db, "SELECT SUM(fees) FROM trades WHERE reason = ?", (reason,))
        assert row["fees"] == round(closed, 4)
    ((entry,),) = db_rows(db, "SELECT fees FROM positions WHERE symbol = 'ETH/USD'")
    assert r["held_at_end"][0]["entry_fees"] == round(entry, 4)



    full = {k: v for k, v in runs["full"]["report"].items() if k not in RUN_FIELDS}
    assert full["held_at_end"] and full["per_symbol_total"]
    for level in ("trades", "summary"):
        other = {k: v for k, v in runs[level]["report"].items() if k not in RUN_FIELDS}
        assert other == full, level
    held = {level: [line for line in run["stdout"].splitlines()
                    if line.startswith(("  held at end ", "  end cash ", "  ETH/USD", "  total "))]
            for level, run in runs.items()}
    assert len(held["full"]) == 5 and held["trades"] == held["full"] == held["summary"]


def test_a_run_that_ends_flat_says_it_holds_nothing(tmp_path):
    r, out = backtest(tmp_path, FLAT_ROWS, "summary")
    assert r["open_positions"] == 0 and r["held_at_end"] == []
    assert r["end_cash"] == r["end_equity"]
    assert re.search(r"^  held at end +none$", out, re.MULTILINE), out
    table = symbol_table(out)
    assert list(table) == ["ETH/USD", "total"], table
    assert table["total"][1] == table["ETH/USD"][2] == f"{r['per_symbol']['ETH/USD']['pnl']:+,.2f}"
    assert r["per_symbol_total"]["pnl"] == pytest.approx(r["end_equity"] - r["start_equity"], abs=0.01)
