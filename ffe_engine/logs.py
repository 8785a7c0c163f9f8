"""The engine's own log lines: structlog, imported when the first line at or above the configured level is logged.

structlog brings rich and more with it, a good part of the start of a short command; a backtest at WARNING logs
nothing and need not pay for it. `audit.setup_logging` sets the level and hands over how structlog is to be
configured; the configuration is applied before the first line goes out, and at once when structlog is already
imported (whoever imported it may log through it directly). Lines below the level are dropped here, as structlog's
filtering logger would drop them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

_level = logging.NOTSET  # nothing is dropped before logging is set up: structlog's defaults print every line
_configure: Callable[[], None] | None = None


def set_up(level: int, configure: Callable[[], None]) -> None:
    """Lines below `level` are dropped; `configure` configures structlog, now if it is imported, else before the
    first line."""
    global _level, _configure
    _level = level
    _configure = configure
    if "structlog" in sys.modules:
        structlog_module()


def structlog_module() -> Any:
    """structlog, configured as set up."""
    global _configure
    import structlog

    if _configure is not None:
        configure, _configure = _configure, None
        configure()
    return structlog


def ready(level: int) -> None:
    """structlog imported and configured now if lines at `level` go out (a backtest does it before its run, whose
    objects it keeps from the garbage collector: an import's own objects are made before them, not during it)."""
    if level >= _level:
        structlog_module()


class Logger:
    """A named logger with structlog's methods for the levels the engine uses."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def log(self, level: int, event: str, **fields: Any) -> None:
        if level >= _level:
            structlog_module().get_logger(self.name).log(level, event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        if logging.DEBUG >= _level:
            structlog_module().get_logger(self.name).debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        if logging.INFO >= _level:
            structlog_module().get_logger(self.name).info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        if logging.WARNING >= _level:
            structlog_module().get_logger(self.name).warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        if logging.ERROR >= _level:
            structlog_module().get_logger(self.name).error(event, **fields)


def get_logger(name: str) -> Logger:
    return Logger(name)
