"""The engine's own log lines, one per call, for people:

    2026-01-01T00:00:00.000000Z [info     ] engine started                 mode=PAPER state=RUNNING

the time in UTC, the level, the event padded to 30 characters, then the fields sorted by name (a string bare
unless it holds a space, a quote, an equals sign or a character that is not printable; anything else as Python
shows it). `audit.setup_logging` sets the level and where each line goes (the stream, through secret redaction,
and the console's log pane); lines below the level are dropped here. Before it is set up, every line goes to stderr.

A few lines of formatting rather than a logging library: the library (with rich, which it imports when rich is
installed, as the console's dependency makes it) cost every `ffe` process about 0.1 s to start.
"""

from __future__ import annotations

import logging
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Callable

EVENT_WIDTH = 30
LEVEL_WIDTH = 9  # "exception", the longest name a level line can carry
NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
         logging.CRITICAL: "critical"}
_QUOTED = frozenset(" \t=\r\n\"'")

Sink = Callable[[str, dict[str, Any]], None]  # (level name, the line's fields: event, level, timestamp, the rest)

_level = logging.NOTSET
_lock = threading.Lock()


def level_name(level: int) -> str:
    return NAMES.get(level) or logging.getLevelName(level).lower()


def timestamp() -> str:
    """Now, in UTC, to the microsecond: a log line's time is the wall's, as its reader's is."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _value(v: Any) -> str:
    if isinstance(v, str):
        # A value that is not all printable (a path with an escape sequence in its name) as Python shows it, its
        # control characters escaped: a log line read on a terminal never acts on it.
        return repr(v) if _QUOTED.intersection(v) or not v.isprintable() else v
    return repr(v)


def render(fields: dict[str, Any]) -> str:
    """One line from a log call's fields ("timestamp", "level" and "event" among them)."""
    rest = dict(fields)
    head = f"{rest.pop('timestamp')} [{rest.pop('level'):<{LEVEL_WIDTH}}] "
    event = str(rest.pop("event"))
    if not rest:
        return head + event
    return head + event.ljust(EVENT_WIDTH) + " " + " ".join(f"{k}={_value(rest[k])}" for k in sorted(rest))


def write_line(stream: Any, fields: dict[str, Any]) -> None:
    """A rendered line written whole to `stream` and flushed (threads log too). A line that cannot be written (the
    terminal went away with an SSH connection, a closed pipe) is dropped: a log line must never take the engine
    down in the middle of what it was saying; the records are in the database and the audit trail."""
    line = render(fields) + "\n"
    with _lock:
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):  # ValueError: the stream was closed
            pass


def _to_stderr(level: str, fields: dict[str, Any]) -> None:
    write_line(sys.stderr, fields)


_sink: Sink = _to_stderr


def set_up(level: int, sink: Sink) -> None:
    """Lines below `level` are dropped; the others go to `sink`."""
    global _level, _sink
    _level = level
    _sink = sink


class Logger:
    """A named logger with the methods for the levels the engine uses."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def log(self, level: int, event: str, **fields: Any) -> None:
        if level >= _level:
            name = level_name(level)
            _sink(name, {"event": event, **fields, "level": name, "timestamp": timestamp()})

    def debug(self, event: str, **fields: Any) -> None:
        self.log(logging.DEBUG, event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log(logging.INFO, event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log(logging.WARNING, event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log(logging.ERROR, event, **fields)


def get_logger(name: str) -> Logger:
    return Logger(name)
