"""The feedback loop end to end, and the ensemble inside the engine.

A real engine trades the simulated market with the four built-in providers long enough to close dozens of
trades. Read back from its SQLite file: every closed trade links to its entry decision and that decision's votes;
each provider that voted is scored; the weights move only after the warm-up, stay at or above the floor and sum
to one; replaying the stored trades through a fresh learner gives exactly the `weights` events the engine emitted;
decisions apply the weights in force; the weights are persisted and a restarted engine applies them.

Ensemble integration: a provider that fails or times out is recorded as failed (votes row, `failed` list) and is
never counted as a HOLD; the tier of each decision is recorded.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from ffe_engine.clock import SimClock
from ffe_engine.feedback import WeightLearner
from ffe_engine.market.simulated import SimulatedFeed
from ffe_engine.model import Action, Vote

from pipeline_helpers import BUY, SELL, MIN, START_TS, Scripted, make_settings, open_pipeline, pipelines

_ = pipelines  # a fixture

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
PROVIDERS = ["trend", "momentum", "mean_reversion", "breakout"]
WARMUP, FLOOR, RATE = 3, 0.24, 0.3  # a high floor, so that it binds
BARS = 1500


def feedback_settings(tmp):
    return make_settings(tmp, symbols=SYMBOLS, market={"seed": 3},
                         ensemble={"warmup_trades": WARMUP, "weight_floor": FLOOR, "learning_rate": RATE},
                         risk={"min_confidence": 0.3})


async def _run(settings) -> dict:
    clock = SimClock()
    feed = SimulatedFeed(SYMBOLS, settings.engine.timeframe_ms, seed=3, clock=clock, speed=0.0, start_ts=START_TS,
                         max_bars=BARS)
    p = await open_pipeline(settings, feed=feed, clock=clock)
    try:
        await asyncio.wait_for(p.engine.run(), timeout=300)
    finally:
        await p.close()
    # a restart on the same database, later in market time
    clock = SimClock()
    feed = SimulatedFeed(SYMBOLS, settings.engine.timeframe_ms, seed=4, clock=clock, speed=0.0,
                         start_ts=START_TS + (BARS + 10) * MIN)
    p = await open_pipeline(settings, feed=feed, clock=clock)
    try:
        restarted = {"weights": p.engine.ensemble.weights, "learner": p.engine.learner.weights,
                     "trades": p.engine.learner.trades, "first_seq": p.engine.bus.seq,
                     "saved": await p.store.get_kv("weights")}
        await p.bars(5)
    finally:
        await p.close()
    return restarted


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(database path, what the restarted engine had loaded)."""
    settings = feedback_settings(tmp_path_factory.mktemp("feedback"))
    restarted = asyncio.run(_run(settings))
    return settings.db_path, restarted


def _q(path, sql, params=()):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(sql, params).fetchall()


def _events(path, name):
    return [(seq, json.loads(data)) for seq, data in _q(path, "SELECT seq, data FROM events WHERE event = ? "
                                                              "ORDER BY seq", (name,))]


def _trades_learned(saved: dict) -> int:
    """Closed trades the learner had scored, from the persisted 'weights' record (its stats are the learner's
    state(), which nests its own stats)."""
    stats = saved["stats"]
    return stats["stats"]["trades"] if "stats" in stats else stats["trades"]


def _trades(path):
    return _q(path, "SELECT id, symbol, entry_decision_id, pnl, entry_price, quantity FROM trades ORDER BY id")


def test_every_closed_trade_links_to_its_entry_decision_and_its_votes(run):
    path, _ = run
    trades = _trades(path)
    assert len(trades) >= 25, f"only {len(trades)} trades closed"
    for tid, sym, did, pnl, entry, qty in trades:
        assert did, f"trade {tid} has no entry decision"
        [(dsym, action, outcome)] = _q(path, "SELECT symbol, action, outcome FROM decisions WHERE decision_id = ?",
                                       (did,))
        assert (dsym, action, outcome) == (sym, "BUY", "submitted")
        votes = _q(path, "SELECT provider, action FROM votes WHERE decision_id = ? AND failed = 0", (did,))
        assert votes and {p for p, _ in votes} <= set(PROVIDERS)
        assert any(a == "BUY" for _, a in votes)  # someone backed the entry
        # the entry order is the decision's own
        assert _q(path, "SELECT count(*) FROM orders WHERE decision_id = ? AND reduce_only = 0", (did,)) == [(1,)]


def test_each_provider_that_voted_is_scored_on_the_trade(run):
    path, _ = run
    for tid, sym, did, pnl, entry, qty in _trades(path):
        votes = dict(_q(path, "SELECT provider, action FROM votes WHERE decision_id = ? AND failed = 0", (did,)))
        scores = _q(path, "SELECT provider, action, correct, return_pct FROM provider_scores WHERE trade_id = ?",
                    (tid,))
        assert {p: a for p, a, _, _ in scores} == votes, tid
        for provider, action, correct, ret in scores:
            assert correct == int((action == "BUY") == (pnl > 0))
            assert ret == pytest.approx(100.0 * pnl / (entry * qty))


def test_weights_move_after_the_warm_up_within_the_floor_normalised(run):
    path, _ = run
    closed = [seq for seq, _ in _events(path, "position_closed")]
    changes = _events(path, "weights")
    assert len(changes) >= 10
    first_seq = changes[0][0]
    assert sum(1 for seq in closed if seq < first_seq) >= WARMUP  # nothing moved during the warm-up
    for _, ev in changes:
        w = ev["weights"]
        assert set(w) == set(PROVIDERS)
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-3)
        assert min(w.values()) >= FLOOR - 1e-4
    previous = changes[-1][1]["weights"]
    assert max(abs(v - 0.25) for v in previous.values()) > 0.005  # they did adapt
    # the floor held a provider that did badly
    assert any(min(ev["weights"].values()) == pytest.approx(FLOOR, abs=1e-4) for _, ev in changes)


def test_replaying_the_stored_trades_reproduces_every_weights_event(run):
    path, _ = run
    learner = WeightLearner(PROVIDERS, warmup_trades=WARMUP, floor=FLOOR, learning_rate=RATE)
    replayed = []
    for tid, sym, did, pnl, entry, qty in _trades(path):
        votes = dict(_q(path, "SELECT provider, action FROM votes WHERE decision_id = ? AND failed = 0", (did,)))
        new = learner.record(votes, pnl, 100.0 * pnl / (entry * qty))
        if new is not None:
            replayed.append({k: round(v, 4) for k, v in new.items()})
    assert [ev["weights"] for _, ev in _events(path, "weights")] == replayed
    [(saved,)] = _q(path, "SELECT value FROM kv WHERE key = 'weights'")
    saved = json.loads(saved)
    assert saved["weights"] == pytest.approx(learner.weights)
    assert _trades_learned(saved) == len(_trades(path))


def test_decisions_apply_the_weights_in_force(run):
    path, _ = run
    changes = _events(path, "weights")
    checked = moved = 0
    for seq, d in _events(path, "decision"):
        if d["tier"] != 1 or d["strategy"] != "weighted" or not d["votes"]:
            continue
        before = [ev["weights"] for s, ev in changes if s < seq]
        w = before[-1] if before else {k: 0.25 for k in PROVIDERS}
        total = sum(w[v["provider"]] for v in d["votes"])
        for v in d["votes"]:
            assert v["weight"] == pytest.approx(w[v["provider"]] / total, abs=2e-3), (seq, d["votes"], w)
        checked += 1
        moved += bool(before)
    assert checked >= 100 and moved >= 50


def test_a_restarted_engine_applies_the_learned_weights(run):
    path, restarted = run
    saved = restarted["saved"]  # what the first run left in the database
    assert restarted["weights"] == pytest.approx(saved["weights"])
    assert restarted["learner"] == pytest.approx(saved["weights"])
    assert restarted["trades"] == _trades_learned(saved) > WARMUP
    assert max(abs(v - 0.25) for v in restarted["weights"].values()) > 0.005  # not the equal starting weights
    # the decisions after the restart (until a trade closes and moves the weights again) apply them
    moved = [seq for seq, _ in _events(path, "weights") if seq > restarted["first_seq"]]
    until = moved[0] if moved else float("inf")
    after = [d for seq, d in _events(path, "decision") if restarted["first_seq"] < seq < until and d["tier"] == 1
             and d["votes"]]
    assert after, "no weighted decision after the restart"
    w = saved["weights"]
    for d in after:
        total = sum(w[v["provider"]] for v in d["votes"])
        for v in d["votes"]:
            assert v["weight"] == pytest.approx(w[v["provider"]] / total, abs=1e-6)


# --------------------------------------------------------------------------------------------- failed providers
class Broken:
    """A rule that raises."""

    name = "broken"

    def vote(self, ind) -> Vote:
        raise RuntimeError("indicator missing")


class Late:
    """A remote voter that answers after the ensemble's timeout."""

    name = "late"

    async def vote(self, ind) -> Vote:
        await asyncio.sleep(5)
        return Vote(self.name, Action.HOLD, 0.9, "too late")


@pytest.mark.parametrize("min_votes", [2, 3])
async def test_failed_and_late_providers_are_recorded_as_failed_never_as_hold(tmp_path, pipelines, min_votes):
    script = {"BTC/USDT": (BUY, 0.8)}
    s = make_settings(tmp_path, ensemble={"min_votes": min_votes, "provider_timeout_s": 0.05})
    providers = [Scripted("alpha", script), Broken(), Scripted("beta", script), Late()]
    p = await pipelines(s, providers=providers)
    await p.bars(1)
    [d] = await p.decisions("WHERE symbol = 'BTC/USDT'")
    ev = d["event"]
    assert ev["failed"] == ["broken", "late"]
    assert [v["provider"] for v in ev["votes"]] == ["alpha", "beta"]
    rows = await p.rows("SELECT provider, action, failed FROM votes WHERE decision_id = ? ORDER BY rowid",
                        (d["decision_id"],))
    assert sorted(rows) == [("alpha", "BUY", 0), ("beta", "BUY", 0), ("broken", None, 1), ("late", None, 1)]
    if min_votes == 2:
        # two valid votes, both BUY: the failed ones weigh nothing (as HOLDs they would halve each weight)
        assert (d["action"], d["tier"], ev["tier"]) == ("BUY", 1, 1)
        assert d["confidence"] == pytest.approx(0.8)
        assert [v["weight"] for v in ev["votes"]] == [pytest.approx(0.5), pytest.approx(0.5)]
        assert d["outcome"] == "submitted"
    else:
        # two valid votes do not make a quorum of three (four, had the failed ones been counted as HOLD)
        assert (d["action"], d["tier"], ev["tier"]) == ("HOLD", 0, 0)
        assert ev["reason"].startswith("QUORUM")


async def test_the_fallback_tier_is_recorded_with_the_decision(tmp_path, pipelines):
    # weighted ties (0.9 BUY against 0.6 + 0.3 SELL); majority decides: SELL, tier 2
    s = make_settings(tmp_path, ensemble={"min_votes": 2})
    providers = [Scripted("alpha", {"BTC/USDT": (BUY, 0.9)}), Scripted("beta", {"BTC/USDT": (SELL, 0.6)}),
                 Scripted("gamma", {"BTC/USDT": (SELL, 0.3)})]
    p = await pipelines(s, providers=providers)
    await p.bars(1)
    [d] = await p.decisions("WHERE symbol = 'BTC/USDT'")
    assert (d["action"], d["tier"], d["event"]["tier"]) == ("SELL", 2, 2)
    [eth] = await p.decisions("WHERE symbol = 'ETH/USDT'")
    assert (eth["action"], eth["tier"]) == ("HOLD", 1)  # everyone holds: decided by the configured strategy
