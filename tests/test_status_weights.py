"""The provider weights `ffe ctl status` (and an attached console) show are the ones the votes are weighed with: as
a decision's votes record them, shares of the whole, not the ensemble's raw figures."""

from __future__ import annotations

import pytest

from pipeline_helpers import BUY, make_settings, pipelines

_ = pipelines  # a fixture

BTC = "BTC/USDT"


async def test_the_status_weights_are_the_shares_a_decision_s_votes_are_weighed_with(tmp_path, pipelines):
    p = await pipelines(make_settings(tmp_path, symbols=(BTC,)), script={BTC: (BUY, 0.8)})
    await p.bars(1)
    shown = p.engine.snapshot()["weights"]
    assert shown == {"alpha": pytest.approx(0.5), "beta": pytest.approx(0.5)}, shown
    [decision] = [d for d in await p.events("decision") if d["symbol"] == BTC][-1:]
    assert {v["provider"]: v["weight"] for v in decision["votes"]} == {k: pytest.approx(v) for k, v in shown.items()}
