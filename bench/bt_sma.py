"""The reference point of `make bench`: backtrader's SMA cross (fast 10, slow 30, all in on a cross up, out on a
cross down) over the same CSV files, in one process, from parsing to the end of the run.

The files are parsed with ffe's own CSV reader (the same cost on both sides) and handed to backtrader as a data feed
of plain lists. Prints one JSON line: bars, trades, final value.

    .venv/bin/python bench/bt_sma.py FILE.csv.gz ...    (needs the `bench` extra: pip install -e '.[bench]')
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import backtrader as bt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ffe_engine.market.csvdata import CandleSeries, load_csv, parse_symbol_arg  # noqa: E402


class ListFeed(bt.feed.DataBase):
    """One symbol's candles from ffe's parsed columns."""

    def __init__(self, series: CandleSeries) -> None:
        super().__init__()
        self.series = series
        self.i = 0

    def _load(self) -> bool:
        s = self.series
        i = self.i
        if i >= len(s.ts):
            return False
        self.i = i + 1
        lines = self.lines
        lines.datetime[0] = bt.date2num(_utc(s.ts[i]))
        lines.open[0] = s.open[i]
        lines.high[0] = s.high[i]
        lines.low[0] = s.low[i]
        lines.close[0] = s.close[i]
        lines.volume[0] = s.volume[i]
        lines.openinterest[0] = 0.0
        return True


def _utc(ms: int):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)


class SmaCross(bt.Strategy):
    params = (("fast", 10), ("slow", 30))

    def __init__(self) -> None:
        self.cross = {d: bt.ind.CrossOver(bt.ind.SMA(d.close, period=self.p.fast),
                                          bt.ind.SMA(d.close, period=self.p.slow)) for d in self.datas}
        self.trades = 0

    def next(self) -> None:
        share = self.broker.getvalue() / len(self.datas)
        for d, cross in self.cross.items():
            pos = self.getposition(d).size
            if not pos and cross[0] > 0:
                self.buy(data=d, size=share * 0.95 / d.close[0])
            elif pos and cross[0] < 0:
                self.close(data=d)
                self.trades += 1


def main(args: list[str]) -> None:
    cerebro = bt.Cerebro(stdstats=False)
    bars = 0
    for arg in args:
        symbol, path = parse_symbol_arg(arg)
        series = load_csv(path, symbol=symbol)
        bars += len(series)
        cerebro.adddata(ListFeed(series), name=symbol)
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(10_000.0)
    cerebro.broker.setcommission(commission=0.001)
    strat = cerebro.run()[0]
    print(json.dumps({"bars": bars, "trades": strat.trades, "value": round(cerebro.broker.getvalue(), 2)}))


if __name__ == "__main__":
    main(sys.argv[1:])
