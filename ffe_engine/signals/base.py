"""What every vote provider looks like, and the small pieces the built-in ones share."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..indicators import IndicatorSet
from ..model import Action, Vote

BUY = Action.BUY
SELL = Action.SELL
HOLD = Action.HOLD


@runtime_checkable
class Provider(Protocol):
    """A vote provider: `vote` is either a plain method (built-in rules, called inline every bar) or a coroutine
    function (remote voters, run by the ensemble under a timeout). It must not mutate the indicator set."""

    name: str

    def vote(self, ind: IndicatorSet) -> Vote: ...


def clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def scaled(x: float, lo: float, hi: float, c_lo: float = 0.5, c_hi: float = 1.0) -> float:
    """Map x from [lo, hi] linearly onto [c_lo, c_hi], clamped at both ends."""
    if x <= lo:
        return c_lo
    if x >= hi:
        return c_hi
    return c_lo + (c_hi - c_lo) * (x - lo) / (hi - lo)


def check_positive(provider: str, **values: float) -> None:
    for key, v in values.items():
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
            raise ValueError(f"provider {provider!r}: {key} must be a positive number, got {v!r}")


# A vote's action as a small number, for whole-series votes (`vote_codes`): a backtest ORs the providers' codes per
# bar and so sees at once which bars have a BUY or a SELL vote at all.
HOLD_CODE = 0
BUY_CODE = 1
SELL_CODE = 2

# Confidence of a HOLD that means "my rule sees nothing here": an even-odds opinion that weighs against a lone
# signal from another provider. A provider still warming up says HOLD with confidence 0 instead.
NO_SIGNAL = 0.5
