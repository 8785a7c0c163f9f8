"""Where order, decision and approval ids come from (ffe_engine/ids.py): random in every run unless a seed is given,
and with a seed the same sequence every time, in the shape the venue and the journal take."""

from __future__ import annotations

import re

from ffe_engine.ids import CLIENT_ID_PREFIX, IdSource

ORDER_ID = re.compile(r"ffe-[0-9a-f]{24}")  # <= 36 characters of [a-z0-9-]: every major exchange takes it
DECISION_ID = re.compile(r"d[0-9a-f]{6}[0-9]{6}")


def draw(ids: IdSource) -> list[str]:
    out = [ids.client_order_id(), ids.new("d"), ids.new("a"), ids.client_order_id()]
    ids.skip()
    return out + [ids.new("d")]


def test_a_seeded_source_draws_the_same_ids_every_time():
    assert draw(IdSource(seed=7)) == draw(IdSource(seed=7))
    assert draw(IdSource(seed=7)) != draw(IdSource(seed=8))


def test_ids_have_the_shape_the_venue_and_the_journal_take_seeded_or_not():
    for ids in (IdSource(), IdSource(seed=7)):
        order, decision, approval, order2, after_skip = draw(ids)
        assert ORDER_ID.fullmatch(order) and ORDER_ID.fullmatch(order2) and order.startswith(CLIENT_ID_PREFIX)
        assert len(order) <= 36 and order != order2
        assert DECISION_ID.fullmatch(decision) and decision.endswith("000001")
        assert approval == "a" + decision[1:7] + "000002"
        assert after_skip.endswith("000004")  # the skipped number is not given out


def test_every_run_without_a_seed_draws_ids_of_its_own():
    # What keeps a restart from sending a client order id an earlier run used: each run's ids are drawn afresh.
    runs = [IdSource() for _ in range(20)]
    orders = {ids.client_order_id() for ids in runs for _ in range(20)}
    assert len(orders) == 20 * 20
    assert len({ids.new("d") for ids in runs}) == 20
