"""The layer contracts in pyproject.toml ([tool.importlinter]), checked statically: the engine never imports the
front ends or textual, not even lazily inside a function; venues, feeds and providers never import the pipeline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, ffe_env

LINT = str(Path(sys.executable).parent / "lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = ffe_env(PYTHONPATH=str(root))
    return subprocess.run([LINT, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120, env=env)


def test_the_layer_contracts_hold():
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout


def test_a_deferred_import_of_the_console_from_the_engine_breaks_a_contract(tmp_path):
    for package in ("ffe_engine", "ffe_tui", "ffe_cli"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    engine = tmp_path / "ffe_engine" / "engine.py"
    engine.write_text(engine.read_text() + "\n\ndef _sneaky() -> None:\n    import ffe_tui.app  # noqa: F401\n")
    proc = _lint(tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "The engine never imports the front ends or textual (headless runs without them) BROKEN" in proc.stdout
    assert "ffe_engine.engine -> ffe_tui.app" in proc.stdout
