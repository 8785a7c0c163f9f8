"""The feedback loop's arithmetic: score providers on closed trades and learn ensemble weights from the scores.

Pure logic, no I/O: the engine feeds it each closed trade with the votes cast on its entry, persists `state()`
and restores it with `load()`.

Scoring. A trade's outcome says which way the market went: for a long trade a profit means up, a loss down
(mirrored for a short); a trade that closed at exactly zero P&L says nothing and scores no one. A BUY or SELL
vote on the entry is a hit when its direction matches that move; its signed return is the trade's return
as seen from the vote's side (+return_pct for a BUY on a long trade, -return_pct for a SELL). HOLD votes are
counted but not scored. A vote "backed" the trade when it pointed the way the trade was taken.

Learning. Each provider's quality over the last `window` trades is the mean of its hit rate and a squashed
average signed return, 0.5 * hits/votes + 0.5 * sigmoid(avg_return / return_scale), or 0.5 when it cast no
scored vote in the window. After `warmup_trades` trades, each trade moves the weights a step of
`learning_rate` toward the qualities normalised to sum to 1; then every weight is held at or above `floor`
and the weights are normalised to sum to 1 again (so a provider that was wrong for a while can recover).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterable, Mapping

from .model import Action, Side


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def apply_floor(weights: Mapping[str, float], floor: float) -> dict[str, float]:
    """Normalise to sum 1 with no weight below `floor` (needs floor * len(weights) <= 1).

    Weights under the floor are pinned to it and the rest share what is left in proportion, repeated until no
    free weight falls under the floor.
    """
    names = list(weights)
    if not names:
        return {}
    total = sum(weights.values())
    w = {k: (weights[k] / total if total > 0 else 1.0 / len(names)) for k in names}
    pinned: set[str] = set()
    while True:
        low = [k for k in names if k not in pinned and w[k] < floor]
        if not low:
            return w
        pinned.update(low)
        free = [k for k in names if k not in pinned]
        left = 1.0 - floor * len(pinned)
        free_total = sum(w[k] for k in free)
        for k in pinned:
            w[k] = floor
        for k in free:
            w[k] = w[k] / free_total * left if free_total > 0 else left / len(free)


class WeightLearner:
    """Scores providers on closed trades and turns the scores into ensemble weights (see the module docstring).

    `providers` are the names that get weights; votes from other names are ignored.
    """

    def __init__(self, providers: Iterable[str], warmup_trades: int = 20, floor: float = 0.05,
                 learning_rate: float = 0.1, window: int = 50, return_scale: float = 1.0) -> None:
        names = list(dict.fromkeys(providers))
        if not names:
            raise ValueError("feedback: at least one provider is needed")
        if not isinstance(warmup_trades, int) or warmup_trades < 0:
            raise ValueError(f"feedback: warmup_trades must be an integer >= 0, got {warmup_trades!r}")
        if not 0.0 <= floor or floor * len(names) > 1.0:
            raise ValueError(f"feedback: floor must be within 0..1/{len(names)} for {len(names)} providers, "
                             f"got {floor!r}")
        if not 0.0 < learning_rate <= 1.0:
            raise ValueError(f"feedback: learning_rate must be within (0, 1], got {learning_rate!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"feedback: window must be an integer >= 1, got {window!r}")
        if not return_scale > 0:
            raise ValueError(f"feedback: return_scale must be positive, got {return_scale!r}")
        self.providers = names
        self.warmup_trades = warmup_trades
        self.floor = float(floor)
        self.learning_rate = float(learning_rate)
        self.window = window
        self.return_scale = float(return_scale)
        self.trades = 0
        self._weights = {k: 1.0 / len(names) for k in names}
        # Lifetime totals per provider: holds, votes (scored), backed, hits, return_sum.
        self._totals = {k: self._zero() for k in names}
        # The last `window` trades: per trade, provider -> [hit, signed_return, backed] for its scored vote.
        self._recent: deque[dict[str, list[Any]]] = deque(maxlen=window)

    @staticmethod
    def _zero() -> dict[str, Any]:
        return {"holds": 0, "votes": 0, "backed": 0, "hits": 0, "return_sum": 0.0}

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    # ---- learning ----------------------------------------------------------------------------------------------

    def record(self, trade_votes: Mapping[str, Action | str], pnl: float, return_pct: float,
               side: Side | str = Side.BUY) -> dict[str, float] | None:
        """Score one closed trade; return the new weights if they changed, else None."""
        if not (math.isfinite(pnl) and math.isfinite(return_pct)):
            raise ValueError(f"feedback: trade P&L and return must be finite numbers, got {pnl!r}, {return_pct!r}")
        direction = 1 if Side(side) is Side.BUY else -1
        market = 0 if pnl == 0 else (direction if pnl > 0 else -direction)
        scored: dict[str, list[Any]] = {}
        for name, action in trade_votes.items():
            if name not in self._totals:
                continue
            try:
                action = Action(action)
            except ValueError:
                raise ValueError(f"feedback: provider {name!r} has an unknown action {action!r}") from None
            t = self._totals[name]
            if action is Action.HOLD:
                t["holds"] += 1
                continue
            if market == 0:
                continue
            vote = 1 if action is Action.BUY else -1
            hit = vote == market
            signed = return_pct * vote * direction
            backed = vote == direction
            t["votes"] += 1
            t["hits"] += hit
            t["backed"] += backed
            t["return_sum"] += signed
            scored[name] = [hit, signed, backed]
        self._recent.append(scored)
        self.trades += 1
        if self.trades < self.warmup_trades:
            return None
        return self._learn()

    def _recent_figures(self, name: str) -> tuple[int, int, float, int]:
        """A provider's scored votes, hits, summed signed return and backed votes over the last `window` trades."""
        votes = hits = backed = 0
        ret = 0.0
        for trade in self._recent:
            s = trade.get(name)
            if s is not None:
                votes += 1
                hits += s[0]
                ret += s[1]
                backed += s[2]
        return votes, hits, ret, backed

    def quality(self, name: str) -> float:
        votes, hits, ret, _ = self._recent_figures(name)
        if votes == 0:
            return 0.5
        return 0.5 * hits / votes + 0.5 * _sigmoid(ret / votes / self.return_scale)

    def _learn(self) -> dict[str, float] | None:
        q = {k: self.quality(k) for k in self.providers}
        total = sum(q.values())
        lr = self.learning_rate
        moved = {k: (1.0 - lr) * self._weights[k] + lr * q[k] / total for k in self.providers}
        new = apply_floor(moved, self.floor)
        if all(abs(new[k] - self._weights[k]) <= 1e-12 for k in new):
            return None
        self._weights = new
        return dict(new)

    # ---- reporting and persistence -----------------------------------------------------------------------------

    def report(self) -> list[dict[str, Any]]:
        """Per provider: lifetime and last-`window`-trades figures, and the current weight."""
        rows = []
        for k in self.providers:
            t = self._totals[k]
            r_votes, r_hits, r_ret, r_backed = self._recent_figures(k)
            rows.append({
                "provider": k, "weight": self._weights[k], "holds": t["holds"], "votes": t["votes"],
                "backed": t["backed"], "hits": t["hits"],
                "hit_rate": t["hits"] / t["votes"] if t["votes"] else None,
                "avg_return": t["return_sum"] / t["votes"] if t["votes"] else None,
                "recent_trades": len(self._recent), "recent_votes": r_votes, "recent_backed": r_backed,
                "recent_hit_rate": r_hits / r_votes if r_votes else None,
                "recent_avg_return": r_ret / r_votes if r_votes else None,
            })
        return rows

    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as JSON-safe values."""
        return {
            "weights": dict(self._weights),
            "stats": {
                "trades": self.trades,
                "totals": {k: dict(v) for k, v in self._totals.items()},
                "recent": [{k: list(v) for k, v in trade.items()} for trade in self._recent],
            },
        }

    def _normalised(self, w: Mapping[str, float]) -> bool:
        """Weights for exactly these providers, none under the floor, summing to 1 (to within rounding)."""
        return (set(w) == set(self.providers) and all(v >= self.floor for v in w.values())
                and abs(math.fsum(w.values()) - 1.0) <= 1e-9)

    def load(self, weights: Mapping[str, float], stats: Mapping[str, Any]) -> None:
        """Restore from `state()` output: `stats` is its "stats" part (the whole `state()` dict is accepted
        too). Providers no longer configured are dropped; new ones start from the mean weight. Malformed input
        raises ValueError naming the part at fault, and leaves this learner as it was."""
        inner = stats.get("stats")
        if isinstance(inner, Mapping) and "trades" not in stats:
            stats = inner
        w = {}
        for k, v in weights.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"feedback state: weight of {k!r} must be a finite number >= 0, got {v!r}")
            if k in self._totals:
                w[k] = float(v)
        trades = stats.get("trades", 0)
        if not isinstance(trades, int) or isinstance(trades, bool) or trades < 0:
            raise ValueError(f"feedback state: trades must be an integer >= 0, got {trades!r}")
        totals = {k: self._zero() for k in self.providers}
        for k, t in (stats.get("totals") or {}).items():
            if k not in totals:
                continue
            if not isinstance(t, Mapping):
                raise ValueError(f"feedback state: totals of {k!r} must be an object")
            for field, zero in self._zero().items():
                v = t.get(field, zero)
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    raise ValueError(f"feedback state: {field} of {k!r} must be a number, got {v!r}")
                totals[k][field] = type(zero)(v)
        recent: deque[dict[str, list[Any]]] = deque(maxlen=self.window)
        for i, trade in enumerate(stats.get("recent") or []):
            if not isinstance(trade, Mapping):
                raise ValueError(f"feedback state: recent trade {i} must be an object")
            kept = {}
            for k, s in trade.items():
                if k not in totals:
                    continue
                if not (isinstance(s, (list, tuple)) and len(s) == 3 and isinstance(s[1], (int, float))
                        and math.isfinite(s[1])):
                    raise ValueError(f"feedback state: recent trade {i}, provider {k!r}: expected "
                                     f"[hit, return, backed], got {s!r}")
                kept[k] = [bool(s[0]), float(s[1]), bool(s[2])]
            recent.append(kept)
        if self._normalised(w):
            # As saved: they sum to 1 only to within rounding, and normalising them again would move some by an ulp,
            # so the ensemble would weigh differently after a restart than without one.
            self._weights = {k: w[k] for k in self.providers}
        else:
            mean = sum(w.values()) / len(w) if w else 1.0
            for k in self.providers:
                w.setdefault(k, mean)
            self._weights = apply_floor(w, self.floor)
        self.trades = trades
        self._totals = totals
        self._recent = recent
