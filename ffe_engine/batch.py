"""A backtest's market-data work done once per series, before the run: indicators and vote actions.

Everything that depends on market data alone is the same whichever way it is computed, so a backtest computes it
for each symbol's whole series in one pass (indicators.IndicatorColumns, the providers' `vote_columns`) instead of
bar by bar. The engine then does per bar only what depends on its own state:
- with decision records (`full`), every decision as before: the bar's indicators are loaded into the symbol's
  IndicatorSet and the providers vote on them;
- without them, only the bars where a decision could trade: a BUY vote while the symbol has no position, a SELL
  vote while it has one, from the precomputed votes (their reasons, which nothing records then, left out).
  Elsewhere the ensemble can only say HOLD, or BUY while in a position, or SELL with none,
  and none of these leaves a trace at those record levels (the decision's id is still taken, so ids stay the
  same). The ensemble's verdict is always one of the actions voted, or HOLD. With no order in flight, the
  engine books the bars up to the next one that may trade in one step (`idle_marks`, Engine._idle_stretch).
The live engine keeps the incremental path (IndicatorSet.update, provider.vote every bar);
tests/test_indicator_columns.py checks that both give the same numbers and votes on every bar of the sample
files, and tests/test_backtest_columns.py that a backtest trades and records alike either way.
"""

from __future__ import annotations

from array import array
from itertools import repeat
from operator import ge, le, ne, or_
from typing import Any, Mapping

from .ensemble import Ensemble
from .indicators import IndicatorColumns, IndicatorSet
from .market.csvdata import CandleSeries
from .model import Action, Vote
from .signals.base import BUY_CODE, SELL_CODE


ACTIONS = (Action.HOLD, Action.BUY, Action.SELL)  # by code (signals/base.py)
# What a bar's decision can do (BarSignals.idle_marks).
WARMING, DUE, FIRST = 0, 4, 8
_DUE_MARKS = bytes(DUE | (code & (BUY_CODE | SELL_CODE)) for code in range(256))  # by the bar's vote codes
_FLAT_STOPS = bytes(1 if mark & (FIRST | BUY_CODE) else 0 for mark in range(256))  # by the candle's mark


def flat_stops(marks: bytes) -> bytes:
    """Per candle of `marks` (idle_marks, in the replay's order), 1 where a candle of a symbol without a position may
    trade (its first, or a BUY vote), else 0: a stretch of a backtest that holds nothing looks for the next 1."""
    return marks.translate(_FLAT_STOPS)


class SeriesSignals:
    """One symbol's precomputed indicators, the first bar its decisions start at, per bar which actions any
    provider votes (BUY_CODE | SELL_CODE bits), and each provider's action code and confidence per bar (none with
    decision records: the providers vote bar by bar then)."""

    __slots__ = ("columns", "ts", "warm_from", "codes", "votes", "names", "code_cols", "conf_cols")

    def __init__(self, columns: IndicatorColumns, votes: list[tuple[str, bytes, array[float]]]) -> None:
        self.columns = columns
        self.ts = columns.columns["ts"]
        self.warm_from = columns.warm_from
        codes = bytes(len(columns))
        for _, provider_codes, _ in votes:
            codes = bytes(map(or_, codes, provider_codes))
        self.codes = codes
        self.votes = votes
        self.names = [name for name, _, _ in votes]
        self.code_cols = [provider_codes for _, provider_codes, _ in votes]
        self.conf_cols = [confs for _, _, confs in votes]


class BarSignals:
    """What the engine asks per bar, for the symbols of a backtest."""

    __slots__ = ("by_symbol", "every_decision")

    def __init__(self, by_symbol: dict[str, SeriesSignals], every_decision: bool) -> None:
        self.by_symbol = by_symbol
        self.every_decision = every_decision

    def bar(self, symbol: str, i: int, ts: int, ind: IndicatorSet, in_position: bool) -> bool | None:
        """Bar i of `symbol` (at `ts`): True when its decision is to be made, False while the indicators are warming
        up (no decision), None when a decision is due but cannot trade and leaves no record. With decision records
        the bar's indicators are loaded into `ind` for the providers; without them the votes come from `votes` and
        the indicators are loaded (`load`) only for a decision that acts."""
        s = self.by_symbol[symbol]
        if s.ts[i] != ts:  # the columns are not this feed's: never decide on them
            raise RuntimeError(f"{symbol}: precomputed bar {i} is at {s.ts[i]}, the feed's candle at {ts}")
        if i < s.warm_from:
            return False
        if not self.every_decision:
            code = s.codes[i]
            if not (code & SELL_CODE if in_position else code & BUY_CODE):
                return None
            return True
        s.columns.load(ind, i)
        return True

    def idle_marks(self, symbol: str, ts: list[int]) -> bytes | None:
        """Per bar of `symbol`, what its decision can do (a backtest books bars that cannot trade in one step,
        Engine._idle_stretch): WARMING (no decision), DUE plus the vote codes of its providers (BUY_CODE, SELL_CODE:
        a decision that may trade if the ensemble says BUY with no position, SELL with one; without that vote it
        cannot), or FIRST (the symbol's first bar, the first time the run sees it). None with decision records:
        every decision is recorded. `ts`: the feed's bar times of the symbol, which must be the precomputed ones (or
        their start)."""
        if self.every_decision:
            return None
        s = self.by_symbol[symbol]
        n = len(ts)  # the feed may replay the first bars only
        if n > len(s.ts) or any(map(ne, s.ts, ts)):
            raise RuntimeError(f"{symbol}: the feed's bars are not the precomputed ones")
        marks = bytearray(s.codes[:n].translate(_DUE_MARKS))
        warm = min(s.warm_from, n)
        marks[:warm] = bytes([WARMING]) * warm
        if marks:
            marks[0] = FIRST
        return bytes(marks)

    def load(self, symbol: str, i: int, ind: IndicatorSet) -> None:
        self.by_symbol[symbol].columns.load(ind, i)

    def action(self, symbol: str, i: int, ensemble: Ensemble) -> Action:
        """The ensemble's action at bar i of `symbol` on the precomputed votes: what `ensemble.decide(votes(symbol,
        i), []).action` is, mostly without building the votes and the result (Ensemble.action_of)."""
        s = self.by_symbol[symbol]
        action = ensemble.action_of(s.names, s.code_cols, s.conf_cols, i)
        return action if action is not None else ensemble.decide(self.votes(symbol, i), []).action

    def votes(self, symbol: str, i: int) -> list[Vote]:
        """The providers' votes at bar i, in their order, without reasons (for a run without decision records,
        where nothing keeps them)."""
        return [Vote(name, ACTIONS[codes[i]], confs[i]) for name, codes, confs in self.by_symbol[symbol].votes]


def precompute(series: Mapping[str, CandleSeries], providers: list[Any], *,
               every_decision: bool) -> BarSignals | None:
    """The signals of each series for these providers; None when a provider votes on more than market data (it
    has no `vote_columns`: a remote voter), and the run takes the incremental path. (None too if a confidence were
    outside 0..1: the ensemble would count that provider as failed, which only the incremental path records.)
    With `every_decision` the providers vote bar by bar on the loaded indicators, as their reasons are recorded,
    so their whole-series votes, which nothing would read, are not computed."""
    if not providers or not all(callable(getattr(p, "vote_columns", None)) for p in providers):
        return None
    out: dict[str, SeriesSignals] = {}
    for symbol, s in series.items():
        cols = IndicatorColumns(s.ts, s.open, s.high, s.low, s.close, s.volume)
        votes = []
        for p in providers if not every_decision else ():
            codes, confs = p.vote_columns(cols)
            if not (all(map(le, repeat(0.0), confs)) and all(map(ge, repeat(1.0), confs))):  # NaN fails too
                return None
            votes.append((p.name, bytes(codes), array("d", confs)))  # compact: a year of minutes stays small
        out[symbol] = SeriesSignals(cols, votes)
        cols.compact()
    return BarSignals(out, every_decision)
