"""The collector that measures the suite's `ffe` subprocesses (tests/subprocess_coverage): what it records is
what ran, it changes neither output nor exit code, and its data reaches coverage.py's report."""

from __future__ import annotations

import json
import subprocess
import sys

from coverage import CoverageData

from conftest import REPO, ffe_cmd, ffe_env

COLLECTOR = REPO / "tests" / "subprocess_coverage"

MONITORING = sys.version_info >= (3, 12)  # before it, coverage.py measures the subprocesses itself


def _recorded(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, list[int]]]:
    out = tmp_path / "lines"
    out.mkdir()
    env = ffe_env(PYTHONPATH=str(COLLECTOR), SUBPROCESS_COVERAGE_DIR=str(out))
    env.pop("COVERAGE_PROCESS_CONFIG", None)
    proc = subprocess.run(ffe_cmd(*args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    files = list(out.glob("*.json"))
    assert len(files) == (1 if MONITORING else 0), files
    return proc, json.loads(files[0].read_text()) if files else {}


def test_a_subprocess_records_the_lines_of_ffe_it_ran_and_nothing_else(tmp_path):
    plain = subprocess.run(ffe_cmd("config", "check", "--config", "missing.toml"), cwd=tmp_path, env=ffe_env(),
                           capture_output=True, text=True, timeout=60)
    proc, lines = _recorded(tmp_path, "config", "check", "--config", "missing.toml")
    assert (proc.returncode, proc.stdout, proc.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert proc.returncode == 2 and "missing.toml" in proc.stderr
    if not MONITORING:
        assert lines == {}
        return
    assert all(name.startswith(str(REPO / "ffe_")) for name in lines), sorted(lines)
    main = lines[str(REPO / "ffe_cli" / "main.py")]
    source = (REPO / "ffe_cli" / "main.py").read_text().splitlines()
    assert any(source[n - 1].startswith("def build_parser(") for n in main)  # the module's body ran
    assert any("parse_known_args(" in source[n - 1] for n in main)
    assert str(REPO / "ffe_engine" / "engine.py") not in lines  # a config check starts no engine


def test_the_recorded_lines_become_a_coverage_data_file(tmp_path):
    _, lines = _recorded(tmp_path, "--help")
    if not MONITORING:
        return
    proc = subprocess.run([sys.executable, "-m", "subprocess_coverage_data", str(tmp_path / "lines")],
                          cwd=tmp_path, env=ffe_env(PYTHONPATH=str(COLLECTOR)), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "coverage of 1 subprocesses" in proc.stdout
    data = CoverageData(basename=str(tmp_path / ".coverage.subprocesses"))
    data.read()
    assert set(data.measured_files()) == set(lines)
    for name, numbers in lines.items():
        assert sorted(data.lines(name) or []) == numbers
