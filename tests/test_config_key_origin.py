"""A refused key is blamed on its own source: a key of a table set one by one (FFE_EXCHANGE__OPTIONS__recvWindow,
FFE_TUI__KEYS__pause, in .env or the environment) or a key set alone (FFE_MONITOR__HOST) is named by its variable,
never by the config.toml line of the table around it (the `options = {}` or `keys = {}` of the starter config, or
the `[exchange]` header), which holds nothing wrong. `ffe config check`
names where such a key came from, as it does for a whole table. An empty value from .env or the environment leaves
a key whose default is unset (exchange.rate_limit_ms) unset, as it does a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ffe_env, ffe_in_process, run_ffe, starter_config

LIVE = {"FFE_MODE": "live", "FFE_VENUE__KIND": "ccxt"}

# (id, config.toml (None: the starter config), .env, environment, what the line starts with after "ffe: error: ",
#  what it also says, what it must not say)
REFUSED = [
    ("an option from the environment, the starter config", None, "", {"FFE_EXCHANGE__OPTIONS__recvWindow": "abc"},
     "environment: FFE_EXCHANGE__OPTIONS__recvWindow: ", "a whole number of milliseconds", "config.toml"),
    ("an option from .env, the starter config", None,
     '# credentials\nFFE_EXCHANGE__OPTIONS__headers={"Authorization": "Bearer tok-secretpart"}\n', {},
     ".env:2: FFE_EXCHANGE__OPTIONS__headers: ", "headers.Authorization", "secretpart"),
    ("an option from the environment under an [exchange] header", '[exchange]\nid = "binance"\n', "",
     {"FFE_EXCHANGE__OPTIONS__recvWindow": "abc"},
     "environment: FFE_EXCHANGE__OPTIONS__recvWindow: ", "a whole number of milliseconds", "config.toml"),
    ("an option on its own line under an [exchange.options] header",
     '[exchange.options]\nadjustForTimeDifference = true\nrecvWindow = "abc"\n', "", {},
     "config.toml:3: exchange.options: ", "recvWindow", None),
    ("an option in ccxt's wrong case from the environment", None, "",
     {**LIVE, "FFE_EXCHANGE__OPTIONS__RECVWINDOW": "5000"},
     "environment: FFE_EXCHANGE__OPTIONS__RECVWINDOW: ", "it reads 'recvWindow'", "config.toml"),
    ("an option in ccxt's wrong case from .env", None, "FFE_EXCHANGE__OPTIONS__RECVWINDOW=5000\n", LIVE,
     ".env:1: FFE_EXCHANGE__OPTIONS__RECVWINDOW: ", "it reads 'recvWindow'", "config.toml"),
    # The settle window against the receive window: the line names where the receive window was set (the key that
    # made the conflict) and where the settle window was, or that it is the default.
    ("a receive window from the environment past the default settle window", '[exchange]\nid = "binance"\n', "",
     {**LIVE, "FFE_EXCHANGE__OPTIONS__recvWindow": "20000"},
     "environment: FFE_EXCHANGE__OPTIONS__recvWindow: exchange.settle_window_ms: 10000 (the default) is shorter",
     "at least 20000", "config.toml"),
    ("a receive window from the environment past a settle window set in config.toml",
     '[exchange]\nid = "binance"\nsettle_window_ms = 12000\n', "",
     {**LIVE, "FFE_EXCHANGE__OPTIONS__recvWindow": "20000"},
     "environment: FFE_EXCHANGE__OPTIONS__recvWindow: exchange.settle_window_ms: 12000 (config.toml:3) is shorter",
     "at least 20000", None),
    ("a receive window in config.toml past the default settle window",
     '[exchange]\nid = "binance"\noptions = { recvWindow = 20000 }\n', "", LIVE,
     "config.toml:3: exchange.settle_window_ms: 10000 (the default) is shorter", "at least 20000", None),
    ("a settle window from .env under a receive window in config.toml",
     '[exchange]\nid = "binance"\noptions = { recvWindow = 20000 }\n', "FFE_EXCHANGE__SETTLE_WINDOW_MS=15000\n", LIVE,
     "config.toml:3: exchange.settle_window_ms: 15000 (.env:1 FFE_EXCHANGE__SETTLE_WINDOW_MS) is shorter",
     "at least 20000", None),
    # A key binding set one at a time, and monitor.host: named by their variable, as the options above.
    ("a key binding from the environment, the starter config", None, "", {"FFE_TUI__KEYS__pause": "j"},
     "environment: FFE_TUI__KEYS__pause: 'j' cannot be used", "it moves down", "config.toml"),
    ("a key binding from .env, the starter config", None, "# keys\nFFE_TUI__KEYS__pause=j\n", {},
     ".env:2: FFE_TUI__KEYS__pause: 'j' cannot be used", "it moves down", "config.toml"),
    ("a key binding from the environment beside a keys line", '[tui]\nkeys = { help = "?" }\n', "",
     {"FFE_TUI__KEYS__views": "1,2"}, "environment: FFE_TUI__KEYS__views: '1,2' needs 7 keys", "main", "config.toml"),
    ("a key from the environment bound twice", None, "", {"FFE_TUI__KEYS__pause": "a"},
     "environment: FFE_TUI__KEYS__pause: key 'a' is bound to both", "'pause'", "config.toml"),
    ("an unknown binding from .env", None, "FFE_TUI__KEYS__panic=x\n", {},
     ".env:1: FFE_TUI__KEYS__panic: unknown binding id 'panic'", "known: ", "config.toml"),
    ("a whole key table from .env", None, 'FFE_TUI__KEYS={"pause": "j"}\n', {},
     ".env:1: FFE_TUI__KEYS: tui.keys.pause: 'j' cannot be used", "it moves down", "config.toml"),
    ("monitor.host from the environment", None, "", {"FFE_MONITOR__HOST": "0.0.0.0"},
     "environment: FFE_MONITOR__HOST: monitor.host = '0.0.0.0' is reachable", "FFE_MONITOR__TOKEN", "config.toml"),
    ("monitor.host from .env", None, "# monitor\nFFE_MONITOR__HOST=0.0.0.0\n", {},
     ".env:2: FFE_MONITOR__HOST: monitor.host = '0.0.0.0' is reachable", "FFE_MONITOR__TOKEN", "config.toml"),
    # An empty value is unset only for a key whose default is unset: an empty limit is a typo, not nothing.
    ("an empty whole number", "", "", {"FFE_RISK__MAX_OPEN_POSITIONS": ""},
     "environment: FFE_RISK__MAX_OPEN_POSITIONS: ", "expected a whole number", None),
]


def _error_line(tmp_path: Path, proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return line.removeprefix("ffe: error: ").removeprefix(str(tmp_path) + "/")


@pytest.mark.parametrize("config, dotenv, environ, starts, says, not_said", [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_a_refused_key_is_blamed_on_its_own_source(tmp_path, config, dotenv, environ, starts, says, not_said):
    if config is None:
        starter_config(tmp_path)
    else:
        (tmp_path / "config.toml").write_text(config)
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    ffe = run_ffe if environ is REFUSED[0][3] else ffe_in_process  # the first as a real process
    line = _error_line(tmp_path, ffe(tmp_path, "config", "check", env=ffe_env(**environ)))
    assert line.startswith(starts) and says in line, line
    if not_said is not None:
        assert not_said not in line, line


def test_config_check_names_where_each_key_of_a_table_set_one_by_one_came_from(tmp_path):
    starter_config(tmp_path)  # options = {} and keys = {} are in it
    (tmp_path / ".env").write_text("FFE_TUI__KEYS__flatten=F\n")
    env = ffe_env(FFE_TUI__KEYS__pause="P", FFE_EXCHANGE__OPTIONS__recvWindow="5000")
    proc = run_ffe(tmp_path, "config", "check", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "options = { recvWindow = 5000 }  # environment FFE_EXCHANGE__OPTIONS__recvWindow" in lines, proc.stdout
    [keys] = [x for x in lines if x.startswith("keys = ")]
    assert "# " in keys and "environment FFE_TUI__KEYS__pause" in keys and ".env:1 FFE_TUI__KEYS__flatten" in keys, keys


@pytest.mark.parametrize("dotenv, environ, comment", [
    ("", {"FFE_EXCHANGE__RATE_LIMIT_MS": ""}, "environment FFE_EXCHANGE__RATE_LIMIT_MS"),
    ("FFE_EXCHANGE__RATE_LIMIT_MS=\n", {}, ".env:1 FFE_EXCHANGE__RATE_LIMIT_MS"),
    ("FFE_EXCHANGE__RATE_LIMIT_MS=250\n", {"FFE_EXCHANGE__RATE_LIMIT_MS": ""},
     "environment FFE_EXCHANGE__RATE_LIMIT_MS"),
], ids=["environment", ".env", "the environment over .env"])
def test_an_empty_value_leaves_a_key_whose_default_is_unset_unset(tmp_path, dotenv, environ, comment):
    (tmp_path / "config.toml").write_text("[exchange]\nrate_limit_ms = 100\n")
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    proc = ffe_in_process(tmp_path, "config", "check", env=ffe_env(**environ))
    assert proc.returncode == 0, proc.stderr
    assert f"# rate_limit_ms: unset  # {comment}" in proc.stdout.splitlines(), proc.stdout


def test_an_option_nested_in_a_table_of_options_is_set_key_by_key_from_the_environment(tmp_path):
    """`options = {fetchMarkets = {types = ["spot"]}}` from variables: each level of the option's own tables named
    in ccxt's spelling, its value JSON or text, beside the options the file sets."""
    (tmp_path / "config.toml").write_text('[exchange]\noptions = { recvWindow = 5000 }\n')
    env = ffe_env(FFE_EXCHANGE__OPTIONS__fetchMarkets__types='["spot"]', FFE_EXCHANGE__OPTIONS__fetchMarkets__x="y")
    proc = run_ffe(tmp_path, "config", "check", env=env)
    assert proc.returncode == 0, proc.stderr
    [options] = [x for x in proc.stdout.splitlines() if x.startswith("options = ")]
    assert options.startswith('options = { recvWindow = 5000, fetchMarkets = { types = ["spot"], x = "y" } }'), options
    bad = ffe_env(FFE_EXCHANGE__OPTIONS__a____b="1")
    proc = run_ffe(tmp_path, "config", "check", env=bad)
    assert proc.returncode == 2 and "FFE_EXCHANGE__OPTIONS__a____b" in proc.stderr, proc.stderr


@pytest.mark.parametrize("variables, says", [
    ({"FFE_EXCHANGE__OPTIONS__fetchCurrencies": "true", "FFE_EXCHANGE__OPTIONS__fetchCurrencies__x": "1"},
     "environment: FFE_EXCHANGE__OPTIONS__fetchCurrencies__x: exchange.options.fetchCurrencies is set by "
     "FFE_EXCHANGE__OPTIONS__fetchCurrencies, not a table: keep one"),
    ({"FFE_EXCHANGE__OPTIONS__" + "__".join(["a"] * 40): "1"},
     "environment: FFE_EXCHANGE__OPTIONS__" + "__".join(["a"] * 40) + ": nested too deep"),
    ({"FFE_EXCHANGE__OPTIONS__" + "__".join(["a"] * 1500): "1"}, ": nested too deep"),
], ids=["a value and a table of it", "40 levels", "1500 levels"])
def test_an_option_set_key_by_key_that_cannot_be_one_table_is_refused(tmp_path, variables, says):
    (tmp_path / "config.toml").write_text("")
    proc = run_ffe(tmp_path, "config", "check", env=ffe_env(**variables))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stderr.splitlines()
    assert says in line, line
