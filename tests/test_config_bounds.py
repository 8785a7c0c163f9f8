"""Every numeric configuration key has documented bounds, and a value outside them is refused by `ffe config check`
and by the start alike: one line naming file, line and key, exit 2, nothing started. A value the engine could not
carry (an integer past 64 bits, a float that overflows, a timeframe of centuries, a NUL in a path, a warm-up that
grows memory without end) never gets as far as an order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ffe_env, ffe_in_process, run_ffe
from ffe_engine.config import Settings
from ffe_engine.schema import Section

REPO = Path(__file__).resolve().parents[1]

HOSTILE = [
    ("risk", "max_open_positions", "99999999999999999999"),
    ("venue", "starting_cash", "1e308"),
    ("engine", "timeframe", '"99999999999d"'),
    ("storage", "path", '"data/ff\\u0000e.db"'),
    ("engine", "warmup_bars", "1e8"),
    ("engine", "warmup_bars", "100000000"),
    ("market", "speed", "1e300"),
    ("market", "seed", "99999999999999999999"),
    ("engine", "approval_ttl_s", "1e300"),
    ("risk", "max_leverage", "1e30"),
    ("risk", "var_window", "1000000000"),
    ("exchange", "timeout_ms", "99999999999999"),
    ("breaker", "failure_threshold", "4294967296"),
    ("venue", "amount_step", "1e-300"),
    ("logging", "dir", '"lo\\u0000gs"'),
]


def write_config(tmp_path: Path, table: str, key: str, value: str) -> int:
    """A config file with the key on a known line; returns that line."""
    lines = ["# hostile value", f"[{table}]", f"{key} = {value}"]
    (tmp_path / "config.toml").write_text("\n".join(lines) + "\n")
    return 3


@pytest.mark.parametrize("table,key,value", HOSTILE, ids=[f"{t}.{k}={v}" for t, k, v in HOSTILE])
def test_an_out_of_bounds_value_is_refused_by_check_and_by_the_start(tmp_path, table, key, value):
    line = write_config(tmp_path, table, key, value)
    env = ffe_env()
    env.pop("FFE_MARKET__SPEED")  # the file's value is the one tested
    ffe = run_ffe if (table, key, value) == HOSTILE[0] else ffe_in_process  # the first as a real process
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "3")):
        proc = ffe(tmp_path, *command, env=env)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        errors = [x for x in proc.stderr.splitlines() if x.strip()]
        assert len(errors) == 1, proc.stderr
        assert f"config.toml:{line}" in errors[0] and f"{table}.{key}" in errors[0], errors[0]
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()


def test_an_out_of_bounds_environment_variable_is_refused_naming_it(tmp_path):
    proc = run_ffe(tmp_path, "config", "check", env=ffe_env(FFE_RISK__MAX_OPEN_POSITIONS="99999999999999999999"))
    assert proc.returncode == 2
    assert "FFE_RISK__MAX_OPEN_POSITIONS" in proc.stderr


def numeric_keys(model=Settings, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            out += numeric_keys(ann, (*prefix, name))
        elif ann in (int, float):
            out.append((*prefix, name))
    return out


def test_every_numeric_key_has_an_upper_and_a_lower_bound_documented_in_config_toml_and_docs():
    text = (REPO / "config.toml").read_text()
    keys = numeric_keys()
    assert len(keys) > 30
    unbounded = []
    for path in keys:
        model = Settings
        for part in path[:-1]:
            model = model.model_fields[part].annotation
        meta = model.model_fields[path[-1]].metadata
        lower = any(hasattr(m, "ge") or hasattr(m, "gt") for m in meta)
        upper = any(hasattr(m, "le") or hasattr(m, "lt") for m in meta)
        if not (lower and upper):
            unbounded.append(".".join(path))
    assert not unbounded, f"no bounds: {unbounded}"
    table = None
    undocumented = []
    for raw in text.splitlines():
        m = re.match(r"\[([a-z_.]+)\]", raw)
        if m:
            table = m.group(1)
            continue
        m = re.match(r"([a-z_]+)\s*=", raw)
        if m and table is not None and tuple(f"{table}.{m.group(1)}".split(".")) in keys:
            if not re.search(r"#.*[\[(][^\s\[\]()]*\.\.[^\s\[\]()]*[\])]", raw):
                undocumented.append(f"{table}.{m.group(1)}")
    assert not undocumented, f"bounds not documented in config.toml: {undocumented}"
    docs = (REPO / "docs" / "config.md").read_text()
    for path in keys:
        key = ".".join(path)
        row = re.search(rf"^\| `{re.escape(key)}` \|.*\|$", docs, re.MULTILINE)
        assert row and re.search(r"bounds `[\[(][^`]*\.\.[^`]*[\])]`", row.group(0)), f"docs/config.md: {key}"
