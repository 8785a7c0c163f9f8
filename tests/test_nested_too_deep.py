"""A value nested too deep (arrays in arrays, tables in tables: past what a setting ever needs, or past what the
parser can read at all) is refused with one line naming where it was set, exit 2, in config.toml, .env and the
environment alike, never a RecursionError's traceback. Real `ffe` processes for the first of each family, the
command's entry point in-process for the rest (conftest.ffe_in_process)."""

from __future__ import annotations

import pytest

from conftest import ffe_env, ffe_in_process, run_ffe

SAYS = "nested too deep (more than 32 levels of arrays and tables)"


def arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def objects(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ffe: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return lines[0]


@pytest.mark.parametrize("command", [("config", "check"), ("run", "--headless", "--max-bars", "5")],
                         ids=["config check", "run"])
def test_a_config_value_of_600_nested_arrays_is_one_line_naming_the_file_and_line(tmp_path, command):
    (tmp_path / "config.toml").write_text(f"# symbols\n[engine]\nsymbols = {arrays(600)}\n")
    line = one_error_line(run_ffe(tmp_path, *command))
    assert line == f"ffe: error: config.toml:3: engine.symbols: {SAYS}", line  # the key, as at 40 levels
    assert not (tmp_path / "data").exists()  # nothing was started


@pytest.mark.parametrize("toml, says", [
    (f"[engine]\nsymbols = {arrays(40)}\n", f"config.toml:2: engine.symbols: {SAYS}"),
    (f"[exchange]\noptions = {{ a = {arrays(300)} }}\n", f"config.toml:2: exchange.options: {SAYS}"),
    ("[exchange]\noptions." + "a." * 900 + "b = 1\n", f"config.toml:2: exchange.options: {SAYS}"),
    ("[exchange.options." + ".".join(["a"] * 900) + "]\nb = 1\n", f"config.toml:1: exchange.options: {SAYS}"),
], ids=["40 arrays", "300 arrays in an inline table", "a dotted key 900 deep", "a table header 900 deep"])
def test_a_config_value_nested_too_deep_names_its_line(tmp_path, toml, says):
    (tmp_path / "config.toml").write_text(toml)
    assert one_error_line(ffe_in_process(tmp_path, "config", "check")) == f"ffe: error: {says}"


def test_an_environment_list_of_2000_nested_arrays_is_one_line_naming_the_variable(tmp_path):
    proc = run_ffe(tmp_path, "config", "check", env=ffe_env(FFE_ENGINE__SYMBOLS=arrays(2000)))
    assert one_error_line(proc) == f"ffe: error: environment: FFE_ENGINE__SYMBOLS: {SAYS}"


@pytest.mark.parametrize("name, value", [
    ("FFE_ENGINE__SYMBOLS", arrays(900)), ("FFE_EXCHANGE__OPTIONS", objects(900)),
    ("FFE_EXCHANGE__OPTIONS", objects(2000)), ("FFE_EXCHANGE__OPTIONS__x", arrays(900)),
    ("FFE_EXCHANGE__OPTIONS__x", arrays(2000)), ("FFE_EXCHANGE__OPTIONS__x", objects(40)),
], ids=["symbols 900", "options 900", "options 2000", "an option 900", "an option 2000", "an option 40"])
def test_an_environment_or_dotenv_value_nested_too_deep_names_the_variable(tmp_path, name, value):
    proc = ffe_in_process(tmp_path, "config", "check", env=ffe_env(**{name: value}))
    assert one_error_line(proc) == f"ffe: error: environment: {name}: {SAYS}"
    (tmp_path / ".env").write_text(f"# exchange\n{name}={value}\n")
    proc = ffe_in_process(tmp_path, "config", "check")
    assert one_error_line(proc) == f"ffe: error: .env:2: {name}: {SAYS}"
