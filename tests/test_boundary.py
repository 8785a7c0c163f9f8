"""The engine never loads textual: not when ffe_engine (every module of it) is imported in a fresh interpreter,
and not in a whole `ffe run --headless` (every import the process made, as `python -X importtime` lists it)."""

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
    return [m for m in modules if m == "textual" or m.startswith("textual.")]


def test_importing_every_ffe_engine_module_in_a_fresh_interpreter_does_not_load_textual():
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=ffe_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    imported = set(result["imported"])
    # The walk found the engine's modules, so the check below covers them.
    assert {"ffe_engine.engine", "ffe_engine.runner", "ffe_engine.cli", "ffe_engine.execution",
            "ffe_engine.venues.paper", "ffe_engine.market.simulated"} <= imported
    assert _textual(result["modules"]) == []


def test_ffe_run_headless_never_imports_textual(tmp_path):
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", python_flags=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # "import time:   self [us] | cumulative | imported package", one line per module the process imported
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", proc.stderr, re.MULTILINE)
    assert "ffe_engine.engine" in imported and "ffe_engine.runner" in imported and "aiosqlite" in imported
    assert "engine stopped" in proc.stderr  # the run went to the end
    assert _textual(imported) == []
