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
