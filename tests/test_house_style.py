"""Two rules of the code, checked on its syntax tree:

- time comes from the injected clock: no module of the engine reads time.time() or time.monotonic() except
  clock.py (durations measured for a report, with time.perf_counter, are not time the engine acts on);
- no module uses another module's private names (a leading underscore): not by import, not as an attribute.
"""

from __future__ import annotations

import ast
from conftest import REPO

CLOCK_READS = {"time", "time_ns", "monotonic", "monotonic_ns"}


def _modules(*packages: str) -> list[tuple[str, ast.Module]]:
    out = []
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            out.append((rel, ast.parse(path.read_text(), filename=rel)))
    return out


def clock_reads(tree: ast.Module) -> list[int]:
    """Lines that read the time module's wall or monotonic clock, called or passed along."""
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "time"
                and node.attr in CLOCK_READS):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "time" and any(
                a.name in CLOCK_READS for a in node.names):
            lines.append(node.lineno)
    return lines


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def foreign_private_uses(tree: ast.Module) -> list[tuple[int, str]]:
    """Private names a module uses without defining them itself: imported, or read off another object."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            own.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            own.add(node.value)  # __slots__ entries
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            uses += [(node.lineno, a.name) for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                uses.append((node.lineno, node.attr))
    return uses


def test_the_engine_reads_the_time_only_through_its_clock():
    found = {rel: lines for rel, tree in _modules("ffe_engine") if rel != "ffe_engine/clock.py"
             for lines in [clock_reads(tree)] if lines}
    assert found == {}


def test_the_check_sees_a_direct_read_of_the_time():
    tree = ast.parse("import time\nfrom time import monotonic\n\ndef f(bus=time.time):\n    return time.monotonic()\n")
    assert sorted(clock_reads(tree)) == [2, 4, 5]


def test_no_module_uses_another_modules_private_names():
    found = {rel: uses for rel, tree in _modules("ffe_engine", "ffe_tui") for uses in [foreign_private_uses(tree)]
             if uses}
    assert found == {}


def test_the_check_sees_a_private_name_taken_from_another_module():
    tree = ast.parse("from ffe_engine.config import _origin_for\n\ndef f(engine, settings):\n"
                     "    engine._close_bar()\n    return settings._origins\n")
    assert sorted(foreign_private_uses(tree)) == [(1, "_origin_for"), (4, "_close_bar"), (5, "_origins")]
