"""The engine's own log lines (ffe_engine/logs.py): one line each, in the documented layout, at the configured
level and above, to the configured stream."""

from __future__ import annotations

import io
import re

from ffe_engine import logs
from ffe_engine.audit import setup_logging

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) \[(\w+) *\] (.*)$")


def test_a_line_is_time_level_padded_event_and_sorted_fields():
    assert logs.render({"timestamp": "T", "level": "info", "event": "engine started", "mode": "PAPER", "n": 3,
                        "f": 1.5, "note": "a b", "q": 'say "x"', "eq": "a=b", "d": {"a": "x"}, "none": None}) == (
        "T [info     ] engine started                 d={'a': 'x'} eq='a=b' f=1.5 mode=PAPER n=3 none=None "
        "note='a b' q='say \"x\"'")
    assert logs.render({"timestamp": "T", "level": "warning", "event": "an event longer than the thirty columns",
                        "x": 1}) == "T [warning  ] an event longer than the thirty columns x=1"
    assert logs.render({"timestamp": "T", "level": "error", "event": "alone"}) == "T [error    ] alone"


def test_lines_below_the_level_are_dropped_and_the_rest_written_whole_in_order():
    out = io.StringIO()
    setup_logging("WARNING", stream=out)
    try:
        log = logs.get_logger("ffe.test")
        log.debug("not shown")
        log.info("not shown either")
        log.warning("venue slow", seconds=2.5)
        log.error("order refused", reason="insufficient funds")
        log.log(50, "disk gone")
    finally:
        setup_logging("INFO", stream=io.StringIO())
    lines = out.getvalue().splitlines()
    assert [LINE.match(ln).group(2) for ln in lines] == ["warning", "error", "critical"], lines
    assert [LINE.match(ln).group(3).split()[0] for ln in lines] == ["venue", "order", "disk"]
    assert lines[0].endswith("seconds=2.5") and lines[1].endswith("reason='insufficient funds'")


def test_the_console_pane_gets_each_line_s_event_and_fields():
    seen: list[tuple[str, str]] = []
    setup_logging("INFO", stream=io.StringIO(), to_bus=lambda level, message: seen.append((level, message)))
    try:
        logs.get_logger("ffe.test").info("engine started", mode="PAPER", pid=7)
    finally:
        setup_logging("INFO", stream=io.StringIO())
    assert seen == [("info", "engine started mode=PAPER pid=7")]
