"""Turning provider votes into one decision: strategies, quorum and the fallback tiers.

Strategies (tier 1, the configured one):
- weighted (default): each vote adds weight x confidence to its action; the largest total wins. Its confidence
  is the winner's share of all weighted conviction, capped by the winners' own weighted mean confidence, so
  four agreeing but lukewarm votes stay lukewarm and a split vote is never confident. It cannot decide when
  the weights (or confidences) of the voters sum to zero, or when the top two totals tie.
- majority: one provider, one vote; an action backed by more than half of the valid votes wins, with the same
  share/strength confidence computed unweighted. It cannot decide without a strict majority.
- unanimous: acts only when every valid vote names the same action; its confidence is their mean confidence.
  Disagreement is a decision, not a failure: an operator who asks for unanimity wants nothing done unless
  everyone agrees, so it returns HOLD at tier 1 (reason NO_UNANIMITY) rather than falling through to majority.

When tier 1 cannot decide: tier 2 majority (needs at least 2 valid votes; skipped when it is the configured
strategy), tier 3 the action with the highest average confidence, tier 4 the single most confident vote. The
fallback tiers ignore weights (they exist for when weights cannot decide) and discount their confidence by the
fraction of votes backing the action, so a fallback never looks surer than its support. If the most
confident votes of tier 4 disagree, the result is HOLD.

A HOLD vote is a vote: it counts toward the quorum and weighs against BUY and SELL. A provider that failed or
timed out casts no vote at all; fewer than `min_votes` valid votes give HOLD at tier 0 (reason QUORUM).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from typing import Any, Iterable, Mapping, Sequence

from .model import Action, EnsembleResult, Vote

BUY = Action.BUY
SELL = Action.SELL
HOLD = Action.HOLD

STRATEGIES = ("weighted", "majority", "unanimous")

# One strategy's verdict: action, strength, the weight applied to each provider, and how it was reached.
Tally = tuple[Action, float, dict[str, float], str]

# Totals closer than this (relative) are a tie: a decision must not hinge on floating-point rounding.
TIE = 1e-9

_ASYNC_VOTE: dict[type, bool] = {}


def is_async_provider(provider: Any) -> bool:
    """True when the provider's `vote` is a coroutine function (cached per class)."""
    cls = type(provider)
    known = _ASYNC_VOTE.get(cls)
    if known is None:
        known = _ASYNC_VOTE[cls] = inspect.iscoroutinefunction(provider.vote)
    return known


def _valid(v: Any) -> bool:
    # `0 <= c <= 1` is also False for NaN, so a NaN confidence is rejected here.
    return isinstance(v, Vote) and v.action.__class__ is Action and 0.0 <= v.confidence <= 1.0


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, w in weights.items():
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise ValueError(f"ensemble weight for {name!r} must be a number, got {w!r}") from None
        if not math.isfinite(w) or w < 0.0:
            raise ValueError(f"ensemble weight for {name!r} must be a finite number >= 0, got {w!r}")
        out[str(name)] = w
    return out


class Ensemble:
    """Votes in, one `EnsembleResult` out. See the module docstring for the rules.

    `weights` maps provider name to a non-negative weight (they need not sum to 1); a provider missing from
    the map gets the mean of the given weights, and with no map every provider weighs the same.
    `provider_timeout_s` bounds each async provider; a provider's own `timeout_s` attribute may only shorten it.
    """

    __slots__ = ("strategy", "min_votes", "provider_timeout_s", "errors", "failures", "_weights", "_default_weight",
                 "_tier1", "_listed")

    def __init__(self, strategy: str = "weighted", min_votes: int = 2, weights: Mapping[str, float] | None = None,
                 provider_timeout_s: float = 5.0) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"ensemble strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if not isinstance(min_votes, int) or isinstance(min_votes, bool) or min_votes < 1:
            raise ValueError(f"ensemble min_votes must be an integer >= 1, got {min_votes!r}")
        if not provider_timeout_s > 0:
            raise ValueError(f"ensemble provider_timeout_s must be positive, got {provider_timeout_s!r}")
        self.strategy = strategy
        self.min_votes = min_votes
        self.provider_timeout_s = float(provider_timeout_s)
        self.errors: dict[str, str] = {}  # provider -> why it last failed (no secrets: providers keep them out)
        self.failures: dict[str, int] = {}  # provider -> how many votes it failed to cast
        self._tier1 = {"weighted": self._weighted, "majority": self._majority,
                       "unanimous": self._unanimous}[strategy]
        self._weights: dict[str, float] = {}
        self._default_weight = 1.0
        self._listed: tuple[dict[str, float], Sequence[str], list[float]] | None = None  # action_of's weights
        self.set_weights(weights)

    # ---- weights ---------------------------------------------------------------------------------------------

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    def set_weights(self, weights: Mapping[str, float] | None) -> None:
        """Replace the weights (the feedback loop calls this when it learns new ones)."""
        w = check_weights(weights or {})
        self._weights = w
        self._default_weight = sum(w.values()) / len(w) if w else 1.0

    def weight(self, provider: str) -> float:
        w = self._weights.get(provider)
        return self._default_weight if w is None else w

    # ---- collecting votes ------------------------------------------------------------------------------------

    def collect_sync(self, providers: Iterable[Any], ind: Any) -> tuple[list[Vote], list[str]]:
        """Call synchronous providers inline: the every-bar fast path, with no event loop involved.

        A provider that raises, or returns something that is not a valid vote, is recorded as failed.
        """
        votes: list[Vote] = []
        failed: list[str] = []
        for p in providers:
            try:
                v = p.vote(ind)
            except Exception as e:  # a broken rule must not stop the others from voting
                failed.append(p.name)
                self._failed(p.name, f"{type(e).__name__}: {e}")
                continue
            # `_valid` written out: this runs for every provider on every bar.
            if isinstance(v, Vote) and v.action.__class__ is Action and 0.0 <= v.confidence <= 1.0:
                votes.append(v)
            else:
                failed.append(p.name)
                self._failed(p.name, f"invalid vote {v!r}")
        return votes, failed

    def _failed(self, provider: str, why: str) -> None:
        self.errors[provider] = why
        self.failures[provider] = self.failures.get(provider, 0) + 1

    async def gather(self, providers: Sequence[Any], ind: Any) -> tuple[list[Vote], list[str]]:
        """Collect one vote per provider: sync ones inline, async ones concurrently, each under its own timeout.

        A late or failing provider casts no vote and is listed in `failed`. Votes keep the providers' order.
        """
        slow = [p for p in providers if is_async_provider(p)]
        if not slow:
            return self.collect_sync(providers, ind)
        answers = await asyncio.gather(*(self._timed(p, ind) for p in slow))
        late = dict(zip((id(p) for p in slow), answers))
        votes: list[Vote] = []
        failed: list[str] = []
        for p in providers:
            if id(p) in late:
                v = late[id(p)]
                if v is None:
                    failed.append(p.name)
                else:
                    votes.append(v)
                continue
            one_votes, one_failed = self.collect_sync((p,), ind)
            votes.extend(one_votes)
            failed.extend(one_failed)
        return votes, failed

    async def _timed(self, provider: Any, ind: Any) -> Vote | None:
        own = getattr(provider, "timeout_s", None)
        timeout = min(own, self.provider_timeout_s) if own else self.provider_timeout_s
        t0 = time.perf_counter()
        try:
            v = await asyncio.wait_for(provider.vote(ind), timeout)
        except asyncio.TimeoutError:
            self._failed(provider.name, f"timed out after {timeout:g} s")
            return None
        except Exception as e:
            self._failed(provider.name, f"{type(e).__name__}: {e}")
            return None
        if not _valid(v):
            self._failed(provider.name, f"invalid vote {v!r}")
            return None
        vote: Vote = v
        vote.latency_ms = (time.perf_counter() - t0) * 1000.0
        return vote

    async def evaluate(self, providers: Sequence[Any], ind: Any) -> EnsembleResult:
        votes, failed = await self.gather(providers, ind)
        return self.decide(votes, failed)

    # ---- deciding --------------------------------------------------------------------------------------------

    def decide(self, votes: list[Vote], failed: list[str]) -> EnsembleResult:
        n = len(votes)
        if n < self.min_votes:
            return EnsembleResult(HOLD, 0.0, 0, self.strategy, votes, failed, {},
                                  f"QUORUM: {n} valid vote(s), {self.min_votes} required")
        decided = self._tier1(votes)
        if decided is not None:
            action, conf, weights, reason = decided
            return EnsembleResult(action, conf, 1, self.strategy, votes, failed, weights, reason)
        equal = {v.provider: 1.0 / n for v in votes}
        if n >= 2 and self.strategy != "majority":
            decided = self._majority(votes)
            if decided is not None:
                action, conf, _, _ = decided
                return EnsembleResult(action, conf, 2, self.strategy, votes, failed, equal,
                                      f"{self.strategy} undecided; majority")
        average, conf = _average_by_action(votes)
        if average is not None:
            return EnsembleResult(average, conf, 3, self.strategy, votes, failed, equal,
                                  f"{self.strategy} undecided; highest average confidence")
        action, conf = _best_single(votes)
        return EnsembleResult(action, conf, 4, self.strategy, votes, failed, equal,
                              f"{self.strategy} undecided; single most confident vote"
                              if action is not HOLD else "undecided at every tier: HOLD")

    def decide_with(self, weights: Mapping[str, float], votes: list[Vote]) -> EnsembleResult:
        """`decide` as it was under `weights` (the ones in force when a decision was made, recorded later)."""
        now = self._weights, self._default_weight
        self.set_weights(weights)
        try:
            return self.decide(votes, [])
        finally:
            self._weights, self._default_weight = now

    def _weighted(self, votes: list[Vote]) -> Tally | None:
        sb = ss = sh = 0.0  # weight x confidence per action
        wb = ws = wh = 0.0  # weight per action
        applied: dict[str, float] = {}
        get = self._weights.get
        default = self._default_weight
        for v in votes:
            w = get(v.provider)
            if w is None:
                w = default
            applied[v.provider] = w
            a = v.action
            if a is BUY:
                sb += w * v.confidence
                wb += w
            elif a is SELL:
                ss += w * v.confidence
                ws += w
            else:
                sh += w * v.confidence
                wh += w
        picked = _weighted_winner(sb, ss, sh, wb, ws, wh)
        if picked is None:
            return None
        action, top, wtop, total = picked
        wsum = wb + ws + wh
        for k in applied:
            applied[k] /= wsum
        share = top / total
        strength = top / wtop
        return action, (share if share < strength else strength), applied, "weighted"

    def action_of(self, names: Sequence[str], code_cols: Sequence[Sequence[int]],
                  conf_cols: Sequence[Sequence[float]], i: int) -> Action | None:
        """`decide`'s action for valid votes at index `i` of per-provider columns (`names[j]`'s action code at
        `code_cols[j][i]`, signals/base.py: 0 HOLD, 1 BUY, 2 SELL; its confidence at `conf_cols[j][i]`), without
        building the votes or the result; None when only `decide` can tell (another strategy, no quorum, or a
        weighted tie that falls to the next tiers). For bars whose verdict counts only as an action
        (Engine._idle_stretch): the same arithmetic as `_weighted`, in the same order, so the same action
        (tests/test_ensemble.py compares them on every bar of the sample files)."""
        if self.strategy != "weighted" or len(code_cols) < self.min_votes:
            return None
        listed = self._listed
        if listed is None or listed[0] is not self._weights or listed[1] is not names:
            # The weights in `names`' order, listed again only when the weights are replaced (set_weights makes a
            # new map), which a backtest does once per closed trade at most.
            get, default = self._weights.get, self._default_weight
            listed = self._listed = (self._weights, names, [default if (w := get(n)) is None else w for n in names])
        sb = ss = sh = 0.0
        wb = ws = wh = 0.0
        for w, codes, confs in zip(listed[2], code_cols, conf_cols):
            code = codes[i]
            if code == 1:
                sb += w * confs[i]
                wb += w
            elif code == 2:
                ss += w * confs[i]
                ws += w
            else:
                sh += w * confs[i]
                wh += w
        picked = _weighted_winner(sb, ss, sh, wb, ws, wh)
        return None if picked is None else picked[0]

    def _majority(self, votes: list[Vote]) -> Tally | None:
        n = len(votes)
        cb = cs = ch = 0
        sb = ss = sh = 0.0
        for v in votes:
            a = v.action
            if a is BUY:
                cb += 1
                sb += v.confidence
            elif a is SELL:
                cs += 1
                ss += v.confidence
            else:
                ch += 1
                sh += v.confidence
        if 2 * cb > n:
            action, top, count = BUY, sb, cb
        elif 2 * cs > n:
            action, top, count = SELL, ss, cs
        elif 2 * ch > n:
            action, top, count = HOLD, sh, ch
        else:
            return None
        total = sb + ss + sh
        strength = top / count
        share = top / total if total > 0.0 else 0.0
        return action, min(share, strength), {v.provider: 1.0 / n for v in votes}, "majority"

    def _unanimous(self, votes: list[Vote]) -> Tally | None:
        n = len(votes)
        first = votes[0].action
        equal = {v.provider: 1.0 / n for v in votes}
        for v in votes:
            if v.action is not first:
                return HOLD, 0.0, equal, "NO_UNANIMITY: providers disagree"
        return first, sum(v.confidence for v in votes) / n, equal, "unanimous"


def _weighted_winner(sb: float, ss: float, sh: float, wb: float, ws: float,
                     wh: float) -> tuple[Action, float, float, float] | None:
    """The weighted strategy's winner from the weight x confidence totals (sb, ss, sh) and weights (wb, ws, wh) per
    action: (action, its total, its weight, the sum of totals); None when the totals are all zero or the top two
    tie."""
    total = sb + ss + sh
    if not total > 0.0:
        return None
    if sb >= ss and sb >= sh:
        action, top, wtop, second = BUY, sb, wb, (ss if ss > sh else sh)
    elif ss >= sh:
        action, top, wtop, second = SELL, ss, ws, (sb if sb > sh else sh)
    else:
        action, top, wtop, second = HOLD, sh, wh, (sb if sb > ss else ss)
    if top - second <= TIE * total:
        return None  # the two largest totals tie
    return action, top, wtop, total


def _average_by_action(votes: list[Vote]) -> tuple[Action | None, float]:
    n = len(votes)
    sums: dict[Action, float] = {}
    counts: dict[Action, int] = {}
    for v in votes:
        sums[v.action] = sums.get(v.action, 0.0) + v.confidence
        counts[v.action] = counts.get(v.action, 0) + 1
    means = sorted(((sums[a] / counts[a], a) for a in sums), key=lambda t: t[0], reverse=True)
    if len(means) > 1 and means[0][0] - means[1][0] <= TIE * means[0][0]:
        return None, 0.0
    mean, action = means[0]
    return action, mean * counts[action] / n


def _best_single(votes: list[Vote]) -> tuple[Action, float]:
    best = max(v.confidence for v in votes)
    actions = {v.action for v in votes if best - v.confidence <= TIE * best}
    if len(actions) > 1:
        return HOLD, 0.0
    return actions.pop(), best / len(votes)
