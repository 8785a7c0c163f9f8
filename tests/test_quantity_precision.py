"""Quantities rounded down to a venue's step are the numbers the venue writes, with no float noise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ffe_engine.model import floor_to_step


@given(n=st.integers(1, 10**7), decimals=st.integers(0, 8))
def test_quantities_rounded_to_a_step_print_as_the_venue_writes_them(n, decimals):
    step = float(f"1e-{decimals}")
    qty = floor_to_step(n * step + step / 3, step)  # a bit over n steps: rounded down to n of them
    assert repr(qty) == repr(float(f"{n * 10 ** -decimals:.{decimals}f}"))


def test_a_large_quantity_that_is_a_whole_number_of_steps_keeps_every_step():
    """262243.434171 on a 1e-6 step is 262,243,434,171 steps exactly; their quotient in floats falls a hair below
    that, and flooring it dropped a whole step (an exit that leaves a step behind as dust). Every exact multiple of
    random large quantities keeps all its steps; what lies between two steps still goes down."""
    import random

    from ffe_engine.model import floor_to_step

    assert floor_to_step(262243.434171, 1e-6) == 262243.434171
    rng = random.Random(5)
    for _ in range(20_000):
        step = rng.choice((1e-8, 1e-6, 1e-5, 0.001))
        n = rng.randrange(10**9, 10**13)
        qty = float(f"{n * step:.10f}")
        assert round(floor_to_step(qty, step) / step) == n, (qty, step)
    assert floor_to_step(1.0000019, 1e-6) == 1.000001


@given(qty=st.floats(1e-8, 1e17, allow_nan=False, allow_infinity=False),
       step=st.sampled_from((1e-8, 1e-6, 1e-5, 0.001, 1.0)))
def test_a_quantity_floored_to_a_step_is_never_more_than_it_was(qty, step):
    """A sale of what the books hold floored to the step must not ask for more than they hold: rounded up by a
    hair, every exit of a position of 1e10 coins on a 1e-6 step was refused ("need 1.3759957e+10, free
    1.3759957e+10") and the position could never be sold. (Above it by no more than float noise a venue does not
    tell apart, 1e-9: 0.09999999999999998 on a 0.01 step is the 0.1 it stands for.)"""
    assert floor_to_step(qty, step) <= qty + 1e-9


def test_a_quantity_just_below_a_whole_number_of_steps_is_not_rounded_up():
    assert floor_to_step(1e9, 1e-6) == 1e9
    assert floor_to_step(123456789.987654, 1e-8) <= 123456789.987654
    assert floor_to_step(999_999_999.9999994, 1e-6) <= 999_999_999.9999994
