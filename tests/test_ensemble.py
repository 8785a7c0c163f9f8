"""The ensemble: strategies, quorum, fallback tiers, and collecting votes from sync and async providers."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffe_engine.ensemble import STRATEGIES, Ensemble
from ffe_engine.model import Action, Vote

BUY, SELL, HOLD = Action.BUY, Action.SELL, Action.HOLD
NAMES = [f"p{i}" for i in range(7)]
settings.register_profile("ffe", deadline=None, max_examples=300)
settings.load_profile("ffe")


def V(provider: str, action: Action, conf: float) -> Vote:
    return Vote(provider, action, conf, "test")


# ---- providers used to exercise gather(): real objects speaking the provider protocol ---------------------------

class Fixed:
    """A sync provider that always casts the same vote."""

    def __init__(self, name: str, action: Action, conf: float) -> None:
        self.name, self.action, self.conf = name, action, conf

    def vote(self, ind) -> Vote:
        return Vote(self.name, self.action, self.conf, "fixed")


class Broken:
    """A sync provider that fails in one of the ways a provider can fail."""

    def __init__(self, name: str, how: str) -> None:
        self.name, self.how = name, how

    def vote(self, ind):
        if self.how == "raise":
            raise ZeroDivisionError("division by zero")
        if self.how == "nan":
            return Vote(self.name, BUY, math.nan, "nan")
        if self.how == "range":
            return Vote(self.name, SELL, 1.5, "too sure")
        return "BUY"  # not a Vote at all


class AsyncFixed:
    def __init__(self, name: str, action: Action, conf: float, delay: float = 0.0, fail: bool = False,
                 timeout_s: float | None = None) -> None:
        self.name, self.action, self.conf, self.delay, self.fail = name, action, conf, delay, fail
        self.timeout_s = timeout_s
        self.cancelled = False

    async def vote(self, ind) -> Vote:
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail:
            raise ConnectionError("endpoint refused")
        return Vote(self.name, self.action, self.conf, "async")


# ---- hypothesis strategies --------------------------------------------------------------------------------------

actions = st.sampled_from([BUY, SELL, HOLD])
confidences = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
strategies_ = st.sampled_from(STRATEGIES)


@st.composite
def vote_lists(draw, min_size=0, max_size=7):
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    names = draw(st.permutations(NAMES))[:n]
    return [V(name, draw(actions), draw(confidences)) for name in names]


weight_maps = st.none() | st.dictionaries(st.sampled_from(NAMES), st.floats(min_value=0.0, max_value=10.0),
                                          max_size=7)


def same(a, b) -> bool:
    return (a.action, a.confidence, a.tier, a.weights, a.reason) == (b.action, b.confidence, b.tier, b.weights,
                                                                     b.reason)


# ---- properties -------------------------------------------------------------------------------------------------

@given(strategy=strategies_, action=actions, confs=st.lists(confidences, min_size=1, max_size=7),
       weights=weight_maps, min_votes=st.integers(1, 3))
def test_a_unanimous_set_decides_that_action_under_every_strategy(strategy, action, confs, weights, min_votes):
    votes = [V(NAMES[i], action, c) for i, c in enumerate(confs)]
    r = Ensemble(strategy, min_votes=min_votes, weights=weights).decide(votes, [])
    if len(votes) < min_votes:
        assert (r.action, r.tier) == (HOLD, 0)
    else:
        assert r.action is action and r.tier >= 1


CODES = {HOLD: 0, BUY: 1, SELL: 2}  # signals/base.py


@given(strategy=strategies_, votes=vote_lists(), weights=weight_maps, min_votes=st.integers(1, 4),
       tie=st.booleans())
def test_action_of_is_the_action_decide_gives(strategy, votes, weights, min_votes, tie):
    """Ensemble.action_of (a backtest's bars that count only as an action) says what decide says, or defers to it;
    with `tie`, the last two votes mirror the first two, so weighted totals often tie and fall to the next tiers."""
    if tie and len(votes) >= 4:
        votes[2] = V(votes[2].provider, votes[1].action, votes[0].confidence)
        votes[3] = V(votes[3].provider, votes[0].action, votes[1].confidence)
    ensemble = Ensemble(strategy, min_votes=min_votes, weights=weights)
    got = ensemble.action_of([v.provider for v in votes], [[CODES[v.action]] for v in votes],
                             [[v.confidence] for v in votes], 0)
    want = ensemble.decide(votes, [])
    assert got is None or got is want.action
    if strategy == "weighted" and len(votes) >= min_votes and want.tier == 1:
        assert got is want.action  # it defers only where decide's tier 1 cannot decide


def test_action_of_weighs_with_the_weights_set_since_it_was_last_asked():
    """action_of keeps the weights listed in the providers' order between calls: replaced weights count at once."""
    names, codes, confs = ["a", "b", "c"], [[1, 2], [2, 1], [2, 1]], [[0.9, 0.7], [0.6, 0.9], [0.6, 0.9]]
    ensemble = Ensemble("weighted", weights={"a": 1.0, "b": 1.0, "c": 1.0})
    assert [ensemble.action_of(names, codes, confs, i) for i in (0, 1)] == [SELL, BUY]
    ensemble.set_weights({"a": 3.0, "b": 1.0, "c": 1.0})
    assert [ensemble.action_of(names, codes, confs, i) for i in (0, 1)] == [BUY, SELL]
    ensemble.set_weights({"a": 1.0})  # b and c weigh the mean of the given weights
    assert ensemble.action_of(names, codes, confs, 0) is SELL
    ensemble.decide_with({"a": 9.0}, [V("a", BUY, 0.9), V("b", SELL, 0.6), V("c", SELL, 0.6)])
    assert ensemble.action_of(names, codes, confs, 0) is SELL  # decide_with leaves the weights as they were


def test_decide_with_weighs_with_the_weights_given_and_keeps_its_own():
    votes = [V("a", BUY, 0.9), V("b", SELL, 0.6), V("c", SELL, 0.6)]
    ensemble = Ensemble("weighted", weights={"a": 1.0, "b": 1.0, "c": 1.0})
    assert ensemble.decide(votes, []).action is SELL
    past = ensemble.decide_with({"a": 3.0, "b": 1.0, "c": 1.0}, votes)
    assert (past.action, past.weights) == (BUY, {"a": 0.6, "b": 0.2, "c": 0.2})
    assert past == Ensemble("weighted", weights={"a": 3.0, "b": 1.0, "c": 1.0}).decide(votes, [])
    assert ensemble.weights == {"a": 1.0, "b": 1.0, "c": 1.0} and ensemble.decide(votes, []).action is SELL


def test_action_of_on_every_bar_of_the_sample_files():
    """On the precomputed votes of both sample files, under the default weights and under learned-looking ones,
    BarSignals.action (Ensemble.action_of, or decide where it defers) is decide's action on every bar."""
    from conftest import BTC_CSV, ETH_CSV
    from ffe_engine import batch
    from ffe_engine.market.csvdata import load_csv
    from ffe_engine.signals import make_providers

    providers = make_providers(["trend", "momentum", "mean_reversion", "breakout"], {})
    series = {"BTC/USD": load_csv(BTC_CSV, symbol="BTC/USD"), "ETH/USD": load_csv(ETH_CSV, symbol="ETH/USD")}
    signals = batch.precompute(series, providers, every_decision=False)
    assert signals is not None
    for weights in (None, {"trend": 0.4, "momentum": 0.1, "mean_reversion": 0.35, "breakout": 0.15},
                    {"trend": 1.0, "momentum": 1.0, "mean_reversion": 1.0}):
        ensemble = Ensemble("weighted", min_votes=2, weights=weights)
        deferred = 0
        for symbol, s in signals.by_symbol.items():
            for i in range(s.warm_from, len(s.ts)):
                votes = signals.votes(symbol, i)
                fast = ensemble.action_of(s.names, s.code_cols, s.conf_cols, i)
                want = ensemble.decide(votes, []).action
                deferred += fast is None
                assert signals.action(symbol, i, ensemble) is want and fast in (None, want), (symbol, i)
        assert deferred < 0.05 * sum(len(s.ts) for s in signals.by_symbol.values())


@given(votes=vote_lists(min_size=2), zero=st.sampled_from([0.0, -0.0]))
def test_weights_summing_to_zero_fall_back(votes, zero):
    weights = {v.provider: zero for v in votes}
    r = Ensemble("weighted", min_votes=2, weights=weights).decide(votes, [])
    assert r.tier > 1
    assert sum(r.weights.values()) == pytest.approx(1.0)  # the fallback records the equal weights it used


@given(strategy=strategies_, votes=vote_lists(), weights=weight_maps, min_votes=st.integers(1, 4),
       failed=st.lists(st.sampled_from(["llm", "x"]), max_size=2, unique=True))
def test_a_result_is_always_a_valid_decision(strategy, votes, weights, min_votes, failed):
    r = Ensemble(strategy, min_votes=min_votes, weights=weights).decide(votes, failed)
    assert r.action in (BUY, SELL, HOLD)
    assert 0.0 <= r.confidence <= 1.0 and not math.isnan(r.confidence)
    assert r.tier in (0, 1, 2, 3, 4) and r.strategy == strategy
    assert r.failed == failed and r.votes == votes
    assert (r.tier == 0) == (len(votes) < min_votes)
    assert set(r.weights) <= {v.provider for v in votes}
    assert r.reason


@given(strategy=strategies_, good=st.lists(st.tuples(actions, confidences), max_size=5),
       broken=st.lists(st.sampled_from(["raise", "nan", "range", "junk"]), min_size=1, max_size=4),
       positions=st.lists(st.integers(0, 9), min_size=4, max_size=4), weights=weight_maps)
def test_failed_providers_never_change_the_result(strategy, good, broken, positions, weights):
    ens = Ensemble(strategy, min_votes=2, weights=weights)
    clean = [Fixed(NAMES[i], a, c) for i, (a, c) in enumerate(good)]
    mixed = list(clean)
    for k, how in enumerate(broken):
        mixed.insert(positions[k] % (len(mixed) + 1), Broken(f"bad{k}", how))
    votes, failed = ens.collect_sync(mixed, None)
    assert sorted(failed) == sorted(f"bad{k}" for k in range(len(broken)))
    assert all(f in ens.errors for f in failed)
    with_failures = ens.decide(votes, failed)
    without = ens.decide(*ens.collect_sync(clean, None))
    assert same(with_failures, without)


@given(votes=vote_lists(min_size=1), strategy=strategies_)
def test_failed_providers_do_not_count_toward_the_quorum(votes, strategy):
    ens = Ensemble(strategy, min_votes=len(votes) + 1)
    r = ens.decide(votes, ["a", "b", "c", "d"])
    assert (r.action, r.confidence, r.tier) == (HOLD, 0.0, 0) and r.reason.startswith("QUORUM")


# ---- the strategies on worked examples ------------------------------------------------------------------------

def test_weighted_example():
    votes = [V("trend", BUY, 0.8), V("momentum", BUY, 0.6), V("mean_reversion", HOLD, 0.5),
             V("breakout", SELL, 0.7)]
    r = Ensemble().decide(votes, [])
    # totals: BUY 1.4, HOLD 0.5, SELL 0.7 -> share 1.4/2.6, strength 0.7
    assert (r.action, r.tier, r.strategy) == (BUY, 1, "weighted")
    assert r.confidence == pytest.approx(1.4 / 2.6)
    assert r.weights == {"trend": 0.25, "momentum": 0.25, "mean_reversion": 0.25, "breakout": 0.25}


def test_weighted_follows_the_weights():
    votes = [V("a", BUY, 0.8), V("b", BUY, 0.8), V("c", SELL, 0.8)]
    assert Ensemble().decide(votes, []).action is BUY
    r = Ensemble(weights={"a": 0.1, "b": 0.1, "c": 0.8}).decide(votes, [])
    assert r.action is SELL and r.weights == pytest.approx({"a": 0.1, "b": 0.1, "c": 0.8})
    assert r.confidence == pytest.approx(0.8 * 0.8 / 0.8)  # share 0.64/0.8 = 0.8, strength 0.8


def test_lukewarm_agreement_stays_lukewarm():
    votes = [V(n, BUY, 0.2) for n in "abcd"]
    r = Ensemble().decide(votes, [])
    assert r.action is BUY and r.confidence == pytest.approx(0.2)


def test_a_provider_without_a_weight_gets_the_mean_weight():
    ens = Ensemble(weights={"a": 0.6, "b": 0.2})
    assert ens.weight("c") == pytest.approx(0.4)
    r = ens.decide([V("a", BUY, 1.0), V("c", SELL, 1.0)], [])
    assert r.weights == pytest.approx({"a": 0.6, "c": 0.4})
    ens.set_weights({"a": 1.0})
    assert ens.weights == {"a": 1.0} and ens.weight("zzz") == 1.0


def test_weighted_tie_falls_back_to_majority_then_average():
    tie = [V("a", BUY, 0.6), V("b", SELL, 0.6), V("c", BUY, 0.3), V("d", SELL, 0.3)]
    r = Ensemble().decide(tie, [])
    # BUY and SELL tie at every tier until the single-vote tier, where the best votes also disagree: HOLD.
    assert (r.action, r.tier) == (HOLD, 4)
    lean = [V("a", BUY, 0.4), V("b", SELL, 0.6), V("c", BUY, 0.2), V("d", HOLD, 0.0)]
    # weighted: BUY 0.6 vs SELL 0.6 tie; majority: no action has 3 of 4; average: SELL 0.6 beats BUY 0.3.
    r = Ensemble().decide(lean, [])
    assert (r.action, r.tier) == (SELL, 3)
    assert r.confidence == pytest.approx(0.6 * 1 / 4)  # discounted by the share of votes behind it
    assert "highest average confidence" in r.reason


def test_zero_weights_fall_back_to_majority():
    votes = [V("a", BUY, 0.9), V("b", BUY, 0.7), V("c", SELL, 0.9)]
    r = Ensemble(weights={"a": 0, "b": 0, "c": 0}).decide(votes, [])
    assert (r.action, r.tier) == (BUY, 2) and "majority" in r.reason
    assert r.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert r.confidence == pytest.approx(min(1.6 / 2.5, 0.8))


def test_tier_4_takes_the_single_most_confident_vote():
    # Zero weights: weighted cannot decide; 2 BUY vs 2 SELL is no majority; both average 0.5, so tier 3 cannot
    # decide either; the single most confident vote (a, BUY 0.9) decides, discounted to a quarter.
    votes = [V("a", BUY, 0.9), V("b", BUY, 0.1), V("c", SELL, 0.5), V("d", SELL, 0.5)]
    r = Ensemble(weights={"a": 0, "b": 0, "c": 0, "d": 0}).decide(votes, [])
    assert (r.action, r.tier) == (BUY, 4) and r.confidence == pytest.approx(0.9 / 4)
    assert "single most confident vote" in r.reason


def test_majority_needs_more_than_half():
    assert Ensemble("majority").decide([V("a", BUY, 0.7), V("b", BUY, 0.7), V("c", SELL, 0.9)], []).tier == 1
    r = Ensemble("majority").decide([V("a", BUY, 0.7), V("b", BUY, 0.7), V("c", SELL, 0.9), V("d", HOLD, 0.5)],
                                    [])
    assert r.tier == 3  # 2 of 4 is no majority; tier 2 (majority again) is skipped


def test_unanimous_disagreement_is_a_hold_decision_not_a_fallback():
    ens = Ensemble("unanimous")
    r = ens.decide([V("a", BUY, 0.9), V("b", BUY, 0.9), V("c", HOLD, 0.5)], [])
    assert (r.action, r.tier, r.confidence) == (HOLD, 1, 0.0) and "NO_UNANIMITY" in r.reason
    r = ens.decide([V("a", SELL, 0.9), V("b", SELL, 0.6)], ["llm"])
    assert (r.action, r.tier) == (SELL, 1) and r.confidence == pytest.approx(0.75) and r.failed == ["llm"]


def test_quorum_hold():
    r = Ensemble(min_votes=2).decide([V("a", BUY, 1.0)], ["b", "c"])
    assert (r.action, r.tier, r.confidence) == (HOLD, 0, 0.0)
    assert r.reason == "QUORUM: 1 valid vote(s), 2 required" and r.failed == ["b", "c"]


def test_bad_settings_are_rejected_with_their_name():
    with pytest.raises(ValueError, match="strategy"):
        Ensemble("average")
    with pytest.raises(ValueError, match="min_votes"):
        Ensemble(min_votes=0)
    with pytest.raises(ValueError, match="'trend'"):
        Ensemble(weights={"trend": -1.0})
    with pytest.raises(ValueError, match="'trend'"):
        Ensemble(weights={"trend": math.inf})
    with pytest.raises(ValueError, match="'trend'"):
        Ensemble(weights={"trend": "heavy"})


# ---- collecting votes -------------------------------------------------------------------------------------------

async def test_gather_runs_sync_and_async_providers_and_keeps_their_order():
    providers = [Fixed("a", BUY, 0.8), AsyncFixed("b", SELL, 0.6, delay=0.01), Fixed("c", HOLD, 0.5)]
    votes, failed = await Ensemble().gather(providers, None)
    assert [v.provider for v in votes] == ["a", "b", "c"] and failed == []
    assert votes[1].latency_ms >= 10.0 * 0.5  # asleep for ~10 ms; a generous lower bound, not a timing test


async def test_late_and_failing_async_providers_cast_no_vote():
    slow = AsyncFixed("slow", BUY, 0.9, delay=30.0)
    providers = [Fixed("a", SELL, 0.7), slow, AsyncFixed("down", BUY, 0.9, fail=True), Fixed("b", SELL, 0.7)]
    ens = Ensemble(provider_timeout_s=0.2)
    votes, failed = await ens.gather(providers, None)
    assert [v.provider for v in votes] == ["a", "b"] and failed == ["slow", "down"]
    assert slow.cancelled  # the late call was stopped, not left running
    assert "timed out after 0.2 s" in ens.errors["slow"] and "ConnectionError" in ens.errors["down"]
    r = ens.decide(votes, failed)
    assert (r.action, r.tier) == (SELL, 1) and r.confidence == pytest.approx(0.7)


async def test_a_providers_own_timeout_can_only_shorten_the_ensembles():
    short = AsyncFixed("short", BUY, 0.9, delay=30.0, timeout_s=0.05)
    long_ = AsyncFixed("long", BUY, 0.9, delay=0.3, timeout_s=60.0)
    ens = Ensemble(provider_timeout_s=0.15)
    votes, failed = await ens.gather([short, long_], None)
    assert votes == [] and failed == ["short", "long"]
    assert "0.05 s" in ens.errors["short"] and "0.15 s" in ens.errors["long"]


async def test_evaluate_is_gather_then_decide():
    ens = Ensemble()
    r = await ens.evaluate([Fixed("a", BUY, 0.9), AsyncFixed("b", BUY, 0.7), Broken("c", "raise")], None)
    assert (r.action, r.tier, r.failed) == (BUY, 1, ["c"]) and r.confidence == pytest.approx(0.8)


def test_collect_sync_records_why_a_provider_failed():
    ens = Ensemble()
    votes, failed = ens.collect_sync([Broken("x", "raise"), Fixed("y", BUY, 0.5)], None)
    assert failed == ["x"] and ens.errors["x"] == "ZeroDivisionError: division by zero"
    assert [v.provider for v in votes] == ["y"]
