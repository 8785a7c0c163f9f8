"""ccxt, imported for the one exchange a run speaks to.

ccxt's two package files (`ccxt` and `ccxt.async_support`) import every exchange ccxt has, each way: a few hundred
modules and about half a second of CPU at every start of an engine or a download, for one exchange. Importing this
module enters both packages into sys.modules as they are (their path, their files) without running their files yet.
A name asked of either package resolves from ccxt's base modules (its errors, its precision modes, its Exchange
classes), which is all that ccxt's own modules take from them; `exchange_class` imports one exchange's module by
its id. Any other name asked of either package, or the list of its names (`dir`), runs that package's file as ccxt
ships it, once, so code that uses ccxt whole (`ccxt.exchanges`, `ccxt.kraken` in a script) finds it whole. Where
ccxt was imported before this module, nothing is changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

# Where each package's names come from until its own file has run, in ccxt's order of precedence.
_BASES = {
    "ccxt": ("ccxt.base.errors", "ccxt.base.decimal_to_precision", "ccxt.base.exchange", "ccxt.base.precise"),
    "ccxt.async_support": ("ccxt.base.errors", "ccxt.base.decimal_to_precision",
                           "ccxt.async_support.base.exchange"),
}
_lock = threading.RLock()


def _enter(name: str) -> None:
    """The package `name` in sys.modules, its file not run: its names resolve from its base modules first."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package", name=name)
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    ran = False

    def run() -> dict[str, Any]:
        """The package's own file, run once: from then on its names are ccxt's."""
        nonlocal ran
        with _lock:
            if not ran:
                ran = True
                loader.exec_module(module)
        return vars(module)

    def resolve(attr: str) -> Any:
        if attr.startswith("__"):  # probes for module dunders (copy, inspect, pickle) must not run the package
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        with _lock:
            for base in _BASES[name]:
                found = vars(importlib.import_module(base))
                if attr in found:
                    return found[attr]
            names = run()
        if attr in names:
            return names[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = resolve  # type: ignore[method-assign]
    module.__dir__ = lambda: sorted(run())  # type: ignore[method-assign]
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


with _lock:
    _enter("ccxt")
    _enter("ccxt.async_support")

from ccxt.async_support.base.exchange import Exchange as _AsyncExchange  # noqa: E402
from ccxt.base import errors  # noqa: E402
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, TICK_SIZE  # noqa: E402

__all__ = ["DECIMAL_PLACES", "TICK_SIZE", "errors", "exchange_class"]


def exchange_class(exchange_id: str) -> type | None:
    """ccxt's asyncio class for an exchange id ("binance", "kraken", ...), or None when ccxt has no such exchange."""
    if not exchange_id.isidentifier() or exchange_id.startswith("_") or exchange_id == "base":
        return None
    package = sys.modules["ccxt.async_support"]
    cls = vars(package).get(exchange_id)  # the package's own file has run: its classes are its names
    if not isinstance(cls, type):
        name = f"ccxt.async_support.{exchange_id}"
        try:
            module: ModuleType = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the exchange's module exists and lacks something: that is not an unknown id
                raise
            return None
        cls = getattr(module, exchange_id, None)
        _name_classes(package)
    return cls if isinstance(cls, type) and issubclass(cls, _AsyncExchange) else None


def _name_classes(package: ModuleType) -> None:
    """Each exchange imported so far named in the package by its class, as the package's own file names them (the
    import system names each imported module in its package: `ccxt.async_support.binance` would be a module)."""
    with _lock:
        for attr, value in list(vars(package).items()):
            if isinstance(value, ModuleType) and value.__name__ == f"{package.__name__}.{attr}":
                cls = vars(value).get(attr)
                if isinstance(cls, type):
                    setattr(package, attr, cls)

