"""Vote providers: the built-in rule sets, the LLM voter, and the registry that builds them from config."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from .base import Provider
from .breakout import BreakoutProvider
from .llm import LLMProvider
from .mean_reversion import MeanReversionProvider
from .momentum import MomentumProvider
from .trend import TrendProvider

BUILTIN: dict[str, type] = {
    "trend": TrendProvider,
    "momentum": MomentumProvider,
    "mean_reversion": MeanReversionProvider,
    "breakout": BreakoutProvider,
    "llm": LLMProvider,
}


def make_providers(names: list[str], params: Mapping[str, Mapping[str, Any]] | None = None) -> list[Any]:
    """Build the named providers, in order. `params` maps a provider name to its constructor keywords.

    An unknown provider name, a name given twice, or an unknown parameter raises ValueError naming it.
    Parameters for providers that are not selected are ignored (a disabled provider may keep its settings).
    """
    params = params or {}
    out: list[Any] = []
    seen: set[str] = set()
    for name in names:
        cls = BUILTIN.get(name)
        if cls is None:
            raise ValueError(f"unknown vote provider {name!r} (known: {', '.join(sorted(BUILTIN))})")
        if name in seen:
            raise ValueError(f"vote provider {name!r} is listed twice")
        seen.add(name)
        kwargs = dict(params.get(name) or {})
        accepted = inspect.signature(cls).parameters
        for key in kwargs:
            if key not in accepted:
                raise ValueError(f"vote provider {name!r}: unknown parameter {key!r} "
                                 f"(known: {', '.join(accepted) or 'none'})")
        out.append(cls(**kwargs))
    return out


async def close_providers(providers: list[Any]) -> None:
    """Release what providers hold open (the LLM voter's HTTP session). Call once when the engine stops."""
    for p in providers:
        close = getattr(p, "close", None)
        if close is not None:
            await close()


__all__ = ["BUILTIN", "Provider", "make_providers", "close_providers", "TrendProvider", "MomentumProvider",
           "MeanReversionProvider", "BreakoutProvider", "LLMProvider"]
