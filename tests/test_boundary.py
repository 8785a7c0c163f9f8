"""The engine never loads the console's libraries (textual, and rich, which it draws with): not when ffe_engine
(every module of it) is imported in a fresh interpreter, and not in a whole `ffe run --headless` (every import the
process made, as `python -X importtime` lists it). A headless engine has no screen, and each would cost its start
a tenth of a second or more. Nor does a paper run load what only some runs use (the exchange library, the alerts'
retries, the backup's modules)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import REPO, ffe_env, run_ffe

IMPORT_ALL = r"""
import importlib, json, pkgutil, sys
import ffe_engine
names = sorted(m.name for m in pkgutil.walk_packages(ffe_engine.__path__, "ffe_engine."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def _textual(modules) -> list[str]:
    return [m for m in modules if m.split(".")[0] in ("textual", "rich")]


def test_importing_every_ffe_engine_module_in_a_fresh_interpreter_does_not_load_textual_or_rich():
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=ffe_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    imported = set(result["imported"])
    # The walk found the engine's modules, so the check below covers them.
    assert {"ffe_engine.engine", "ffe_engine.host", "ffe_engine.kernel", "ffe_engine.execution",
            "ffe_engine.venues.paper", "ffe_engine.market.simulated"} <= imported
    assert _textual(result["modules"]) == []


def test_ffe_run_headless_never_imports_textual_or_rich(tmp_path):
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", python_flags=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # "import time:   self [us] | cumulative | imported package", one line per module the process imported
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", proc.stderr, re.MULTILINE)
    assert "ffe_engine.engine" in imported and "ffe_engine.host" in imported and "ffe_engine.sqlthread" in imported
    assert "engine stopped" in proc.stderr  # the run went to the end
    assert _textual(imported) == []
    assert [m for m in imported if m.split(".")[0] in ("ccxt", "tenacity") or m == "ffe_engine.backup"] == []


def test_only_the_order_path_calls_a_venue_to_place_or_cancel_orders():
    """execution.OrderPath is the single order path: no other module of the engine or the console calls
    create_order or cancel_order (the venue adapters' own calls into their exchange library excepted)."""
    import ast

    calls: dict[str, list[int]] = {}
    for package in ("ffe_engine", "ffe_tui"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("create_order", "cancel_order")):
                    calls.setdefault(rel, []).append(node.lineno)
    assert "ffe_engine/execution.py" in calls  # the check sees the calls that do exist
    outside = {f: lines for f, lines in calls.items()
               if f != "ffe_engine/execution.py" and not f.startswith("ffe_engine/venues/")}
    assert outside == {}
