"""A backtest computes indicators and vote actions once per series (batch.py) and decides only where a decision
can trade when it keeps no decision records. Its records are the same as when everything is computed bar by bar,
as the live engine does: the report, every table of the database and every line of the audit file, at `trades`
records on both whole sample files and at `full` records on a third of each."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest

from conftest import BTC_CSV, ETH_CSV
from ffe_engine import backtest as bt
from ffe_engine import chain, engine, records
from ffe_engine.config import Settings
from ffe_engine.indicators import IndicatorColumns
from ffe_engine.market.csvdata import CandleSeries

RUN_FIELDS = {"run_id", "database", "audit", "elapsed_s", "bars_per_s"}  # what differs between two runs
# When a row or record was written, in real time: different in every run. (A record's own "ts" is such a time;
# bar and order times are market time and are compared.)
WALL_COLUMNS = {("kv", "updated_ts"), ("engine_state", "updated_ts"), ("gate_results", "ts"), ("events", "ts")}
# As a JSON value, or quoted within a JSON text held as a value (an order's intent): "x" or \"x\".
ORDER_ID = re.compile(r'(?<=")ffe-[0-9a-f]{24}(?=\\?")')
DECISION_ID = re.compile(r'(?<=")d[0-9a-f]{6}([0-9]{6})(?=\\?")')  # d, the run's prefix, a number
PID = re.compile(r'"pid": ?[0-9]+')
RECORD_TS = re.compile(r'^\{"ts":"[^"]*",', re.MULTILINE)  # an audit record's first field: when it was written
PREV = re.compile(r',"prev":"[0-9a-f]{64}"')  # the hash chaining a record to the one before (write times too)


def comparable(obj) -> str:
    """obj as JSON text (floats written exactly, to the last bit), with order and decision ids numbered by first
    appearance (each run numbers them under a prefix of its own) and process ids left out."""
    return same_ids(obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True))


def same_ids(text: str) -> str:
    seen: dict[str, str] = {}
    text = ORDER_ID.sub(lambda m: seen.setdefault(m.group(0), f"id{len(seen)}"), text)
    text = DECISION_ID.sub(r"d\1", text)
    return PID.sub('"pid":0', text)


def everything(report: dict) -> dict[str, str]:
    """The run's report, every database table and the audit file, each made comparable. (The events table holds
    the audit file's records, compressed with a dictionary trained on them, write times included: its records
    are compared in the audit file.)"""
    out = {"report": comparable({k: v for k, v in report.items() if k not in RUN_FIELDS})}
    if report["database"]:
        conn = sqlite3.connect(report["database"])
        try:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for table in tables:
                cur = conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
                names = [d[0] for d in cur.description]
                keep = [i for i, name in enumerate(names) if (table, name) not in WALL_COLUMNS]
                header = [names[i] for i in keep]
                rows: list = [header]
                pick = itemgetter(*keep)
                for row in cur.fetchall():
                    values = list(pick(row))
                    if table == "events":
                        values[header.index("data")] = None  # the audit file's records, compared there
                    elif table == "kv":
                        # The record dictionary is trained on the run's first records, and the audit file's head
                        # hash chains them, write times included.
                        value = records.unpacked_value(json.loads(row[1]))
                        if row[0] == records.DICTIONARY_KEY:
                            value = None
                        elif row[0] == chain.HEAD_KEY:
                            value = {k: v for k, v in value.items() if k != "hash"}
                        values[1] = value
                    rows.append(values)
                out[table] = comparable(rows)
        finally:
            conn.close()
    if report["audit"]:
        lines = b"\n".join(records.read_lines(report["audit"])).decode()
        out["audit"] = comparable(PREV.sub("", RECORD_TS.sub("{", lines)))
    return out


def difference(a: str, b: str) -> str:
    """Where two texts first differ, with a little context; "" when they are the same. (pytest's own account of
    two unequal texts of megabytes takes minutes.)"""
    if a == b:
        return ""
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at {i} of {len(a)}/{len(b)}: {a[max(0, i - 200):i + 100]!r} != {b[max(0, i - 200):i + 100]!r}"


def run(tmp: Path, level: str, whole_series: bool, bars: int | None) -> dict[str, str]:
    settings = Settings().with_dirs(data_dir=tmp / "data", log_dir=tmp / "logs")
    series = bt.load_files([str(BTC_CSV), str(ETH_CSV)])
    if bars is not None:
        series = {symbol: s.head(bars) for symbol, s in series.items()}
    report = asyncio.run(bt.run_backtest(settings, series, records=level, whole_series=whole_series))
    return everything(report)


@pytest.mark.timeout(600)  # two backtests of the whole files and all they left compared: minutes on a loaded machine
def test_trades_records_are_the_same_as_bar_by_bar_on_the_whole_sample_files(tmp_path):
    fast = run(tmp_path / "whole", "trades", whole_series=True, bars=None)
    slow = run(tmp_path / "bars", "trades", whole_series=False, bars=None)
    report = json.loads(fast["report"])
    assert report["bars"] == 70_116 and report["trades"] > 100
    assert len(json.loads(fast["trades"])) == 1 + report["trades"] and len(json.loads(fast["fills"])) > 1  # + header
    assert fast.keys() == slow.keys()
    for part in fast:
        assert difference(fast[part], slow[part]) == "", part


@pytest.mark.timeout(600)  # two backtests with every decision recorded, compared record by record
def test_full_records_are_the_same_as_bar_by_bar(tmp_path):
    """Every decision record: a third of each sample file (each decision is checked on its own; the vote actions
    and indicators of every bar of the whole files are compared in test_indicator_columns.py)."""
    fast = run(tmp_path / "whole", "full", whole_series=True, bars=12_000)
    slow = run(tmp_path / "bars", "full", whole_series=False, bars=12_000)
    report = json.loads(fast["report"])
    assert report["bars"] == 24_000 and report["trades"] > 50 and report["gate_refusals"]
    assert len(json.loads(fast["decisions"])) == 1 + 24_000 - 2 * 50  # every bar once the indicators are warm
    assert fast["audit"].count("\n") > 24_000
    assert fast.keys() == slow.keys()
    for part in fast:
        assert difference(fast[part], slow[part]) == "", part


def part(s: CandleSeries, start: int, end: int) -> CandleSeries:
    return CandleSeries(s.symbol, s.timeframe_ms, s.ts[start:end], s.open[start:end], s.high[start:end],
                        s.low[start:end], s.close[start:end], s.volume[start:end], path=s.path)


def runs_three_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, series: dict[str, CandleSeries],
                    risk: dict[str, Any], venue: dict[str, Any] | None = None,
                    ) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """A trades run of `series` with idle stretches ("skip"), with every bar through on_candle on the precomputed
    signals ("each") and bar by bar ("bars"): each run's engine and everything it recorded."""
    engines: dict[str, Any] = {}
    build = bt.build_engine
    runs = {}
    for name, whole, skip in (("skip", True, True), ("each", True, False), ("bars", False, True)):
        def keep(*args, **kwargs):
            engines[name] = build(*args, **kwargs)
            return engines[name]

        monkeypatch.setattr(bt, "build_engine", keep)
        monkeypatch.setattr(engine, "BACKTEST", dataclasses.replace(engine.BACKTEST, skip_idle=skip))
        settings = Settings().with_dirs(data_dir=tmp_path / name / "data", log_dir=tmp_path / name / "logs")
        settings = settings.model_copy(update={"risk": settings.risk.model_copy(update=risk),
                                               "venue": settings.venue.model_copy(update=venue or {})})
        report = asyncio.run(bt.run_backtest(settings, series, records="trades", whole_series=whole))
        runs[name] = everything(report)
    return engines, runs


def same_last_state(engines: dict[str, Any]) -> None:
    """The last decision each symbol made, its id numbered as when every bar goes through on_candle and weighed
    with the weights of its own bar (a stretch records it only when something reads it, or the run ends), and the
    indicators each symbol's set holds at the end, as when every bar goes through on_candle."""
    last = [{s: (d.decision_id[7:], d.ts, d.price, d.outcome, d.ensemble.action, d.ensemble.confidence,
                 d.ensemble.tier, d.ensemble.weights) for s, d in engines[name].last_decision.items()}
            for name in ("skip", "each")]
    assert last[0] == last[1] and len(last[0]) == 2

    def indicators(e: Any) -> list[Any]:
        return [getattr(e.ind[s], f) for s in e.ind for f in (*IndicatorColumns.FIELDS, "bars")]

    assert indicators(engines["skip"]) == indicators(engines["each"])


@pytest.mark.timeout(600)
def test_idle_bars_booked_in_one_step_leave_the_run_as_bar_by_bar(tmp_path, monkeypatch):
    """A backtest books the bars up to the next one that may trade, or one of a symbol with an order in flight, in
    one step (Engine._idle_stretch). Here that happens hundreds of times: with the book flat and with positions
    open (up to a stop-loss, take-profit or SELL), across day rolls and flushes, around a symbol whose file starts
    later than the other's, and after a DRAWDOWN gate latched at 3% (refusing every entry to the end). Every trade,
    fill, order, equity point, weight change, refusal count and decision id is the same as when the run takes every
    bar through on_candle, with the precomputed signals and bar by bar; and so is each symbol's last state."""
    series = bt.load_files([str(BTC_CSV), str(ETH_CSV)])
    series = {"BTC/USD": part(series["BTC/USD"], 0, 6000), "ETH/USD": part(series["ETH/USD"], 700, 6000)}
    engines, runs = runs_three_ways(tmp_path, monkeypatch, series, {"max_drawdown_pct": 3.0})
    fast = engines["skip"]
    # (8,343 bars in stretches with a flat book alone: the rest have a position open)
    assert fast.idle_stretches > 500 and fast.idle_bars > 10_000 and fast.bars == 11_300
    assert all(e.idle_stretches == e.idle_bars == 0 and e.bars == 11_300 for e in (engines["each"], engines["bars"]))
    report = json.loads(runs["skip"]["report"])
    assert report["trades"] > 100 and report["entries"]["stopped"]["refused"]["DRAWDOWN"]["count"] > 150
    assert all(e.refusals == fast.refusals for e in engines.values()) and fast.refusals["DRAWDOWN"] > 150
    for name in ("each", "bars"):
        assert runs[name].keys() == runs["skip"].keys()
        for part_name in runs["skip"]:
            assert difference(runs["skip"][part_name], runs[name][part_name]) == "", (name, part_name)
    same_last_state(engines)


def test_a_symbol_that_ends_first_keeps_its_last_decision_as_weighed_then(tmp_path, monkeypatch):
    """BTC's file ends after 2,500 bars, ETH's goes on trading to 6,000: BTC's last decision, made in an idle
    stretch, is recorded when the run ends, after ETH's trades have changed the weights; it is weighed with the
    weights of its own bar, as on_candle weighed it."""
    series = bt.load_files([str(BTC_CSV), str(ETH_CSV)])
    series = {"BTC/USD": part(series["BTC/USD"], 0, 2500), "ETH/USD": part(series["ETH/USD"], 0, 6000)}
    engines, runs = runs_three_ways(tmp_path, monkeypatch, series, {})
    fast = engines["skip"]
    assert series["BTC/USD"].ts[-24] <= fast.last_decision["BTC/USD"].ts and fast.idle_stretches > 100
    weights_then = engines["each"].last_decision["BTC/USD"].ensemble.weights
    assert fast.ensemble.weights != weights_then, "no weight change after BTC's last bar"
    for name in ("each", "bars"):
        for part_name in runs["skip"]:
            assert difference(runs["skip"][part_name], runs[name][part_name]) == "", (name, part_name)
    same_last_state(engines)


def test_a_dust_position_is_no_position_in_an_idle_stretch_as_in_on_candle(tmp_path, monkeypatch):
    """Positions of 1 % of equity (about 100 USD) against a venue minimum of 95 USD: one that falls 5 % is dust, less
    than the venue takes an order for. on_candle holds it as no position (Portfolio.holding): no stop-loss or
    take-profit watched, a SELL has nothing to close, a BUY may enter. An idle stretch takes it the same way, so the
    run is the same as when every bar goes through on_candle."""
    series = bt.load_files([str(BTC_CSV), str(ETH_CSV)])
    series = {symbol: part(s, 0, 3000) for symbol, s in series.items()}
    risk = {"max_position_pct": 1.0, "stop_loss_atr": 30.0, "take_profit_atr": 60.0, "max_correlation": 1.0}
    engines, runs = runs_three_ways(tmp_path, monkeypatch, series, risk, venue={"min_notional": 95.0})
    assert engines["skip"].idle_stretches > 100
    assert all(e.refusals == engines["each"].refusals for e in engines.values())
    for name in ("each", "bars"):
        for part_name in runs["skip"]:
            assert difference(runs["skip"][part_name], runs[name][part_name]) == "", (name, part_name)
