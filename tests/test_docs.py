"""docs/ is the source of truth for the contracts, so it must keep up with the code: every config key (with its
default), event type, gate and command named in the code is named on its page, and the index links every page."""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any, Iterator

from ffe_cli.main import build_parser
from ffe_engine import events
from ffe_engine.config import Settings
from ffe_engine.schema import Section
from ffe_engine.risk import GATE_ORDER

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ("states.md", "gates.md", "order-path.md", "config.md", "cli.md", "audit-events.md", "storage.md",
         "runbook.md")


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def setting_keys(model: type[Section], prefix: str = "") -> Iterator[str]:
    """Every leaf key of the settings model, dotted: `mode`, `engine.symbols`, `ensemble.llm.model`, ..."""
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, Section):
            yield from setting_keys(sub, f"{prefix}{name}.")
        else:
            yield prefix + name


def default_of(key: str) -> Any:
    value: Any = Settings().model_dump()
    for part in key.split("."):
        value = value[part]
    return value


def config_rows() -> dict[str, str]:
    """key -> default cell of every table row of config.md."""
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|]+) \|", page("config.md"), re.MULTILINE)
    return {key: cell.strip() for key, cell in rows}


def test_the_index_links_every_page_and_every_page_exists() -> None:
    index = page("README.md")
    for name in PAGES:
        assert f"]({name})" in index, name
        assert (DOCS / name).is_file(), name


def test_every_setting_is_in_config_md_with_its_default() -> None:
    rows = config_rows()
    keys = list(setting_keys(Settings))
    assert len(keys) > 60
    missing = [k for k in keys if k not in rows]
    assert not missing, f"docs/config.md lacks: {', '.join(missing)}"
    unknown = sorted(set(rows) - set(keys))
    assert not unknown, f"docs/config.md names keys the settings do not have: {', '.join(unknown)}"
    for key in keys:
        cell = rows[key]
        if default_of(key) is None:  # a secret
            assert cell == "unset", key
            continue
        assert cell.startswith("`") and cell.endswith("`"), f"{key}: default {cell!r} is not a literal"
        documented = tomllib.loads(f"v = {cell[1:-1]}")["v"]
        assert documented == default_of(key), f"docs/config.md: {key} default {cell} != {default_of(key)!r}"


def test_every_event_type_is_in_audit_events_md() -> None:
    text = page("audit-events.md")
    names = {cls.name for cls in vars(events).values()
             if isinstance(cls, type) and issubclass(cls, events.Event) and cls is not events.Event}
    assert {"engine_state", "decision", "order", "fill", "kill_switch", "bar"} <= names
    missing = sorted(n for n in names if f"| `{n}` |" not in text)
    assert not missing, f"docs/audit-events.md lacks: {', '.join(missing)}"


def _top_level(cell: str) -> list[str]:
    """The names in backticks of a table cell, without what parentheses, brackets and braces hold (values, the
    fields of a nested record)."""
    before = None
    while before != cell:
        before = cell
        cell = re.sub(r"\([^()]*\)|\[[^\[\]]*\]|\{[^{}]*\}", "", cell)
    return re.findall(r"`([a-z_]+)`", cell)


def test_every_event_s_fields_are_listed_in_audit_events_md_in_the_order_of_its_records() -> None:
    """The page says a record holds `the event's fields, in the order listed`."""
    text = page("audit-events.md")
    differ = {}
    for cls in vars(events).values():
        if isinstance(cls, type) and issubclass(cls, events.Event) and cls is not events.Event:
            (cell,) = re.findall(rf"^\| `{cls.name}` \| (.*?) \|", text, re.MULTILINE)
            fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("ts", "seq")]
            if _top_level(cell) != fields:
                differ[cls.name] = (_top_level(cell), fields)
    assert not differ, f"docs/audit-events.md (listed, recorded): {differ}"


def test_every_gate_is_in_gates_md_in_order() -> None:
    text = page("gates.md")
    rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", text, re.MULTILINE)
    assert [code for _, code in rows] == list(GATE_ORDER)
    assert [int(n) for n, _ in rows] == list(range(1, len(GATE_ORDER) + 1))
    assert f"The {len(GATE_ORDER)} gates" in text


def commands(parser: argparse.ArgumentParser, path: str = "ffe") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(`ffe audit tail`, its parser) for every command and subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub
                yield from commands(sub, f"{path} {name}")


def test_every_command_option_and_ctl_action_is_in_cli_md() -> None:
    text = page("cli.md")
    found = list(commands(build_parser()))
    assert {"ffe run", "ffe backtest", "ffe ctl", "ffe audit tail"} <= {name for name, _ in found}
    missing: list[str] = []
    for name, parser in found:
        if f"`{name}" not in text:
            missing.append(name)
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help") and f"`{option}" not in text:
                    missing.append(f"{name} {option}")
            if action.choices and not isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {choice}" for choice in action.choices if f"`{name} {choice}" not in text]
    assert not missing, f"docs/cli.md lacks: {', '.join(missing)}"


def test_every_kind_of_reconciliation_difference_is_in_audit_events_md() -> None:
    """Each `kind` a difference is recorded with (reconcile.py, and the engine's own) is named in the `reconcile`
    row, and the row names no kind the code does not record."""
    engine = Path(__file__).resolve().parents[1] / "ffe_engine"
    source = (engine / "reconcile.py").read_text() + (engine / "engine.py").read_text()
    recorded = set(re.findall(r'\{"kind": "([a-z_]+)"', source))
    assert {"position", "venue_unreachable", "restore_unrecovered"} <= recorded
    (row,) = [line for line in page("audit-events.md").splitlines() if line.startswith("| `reconcile` |")]
    fields = row.split(" | ")[1]
    named = set(re.findall(r"`([a-z_]+)`", fields.partition("`kind`")[2].partition("...")[0]))
    assert named == recorded, f"recorded, not in the row: {sorted(recorded - named)}; " \
                              f"in the row, never recorded: {sorted(named - recorded)}"
