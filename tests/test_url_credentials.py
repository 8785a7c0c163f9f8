"""Credentials in a URL. The URLs of the configuration that are no secrets (`ensemble.llm.base_url`,
`exchange.api_urls`, `alerts.telegram_api`) are base URLs, shown by `ffe config check` and kept in backups: one that
carries a user name or password, a query or a fragment is refused at load by every command, in one line naming the
key and where it was set, exit 2, without the credential, before anything is made. Any other value that holds a URL
is printed with its user name, password, query and fragment masked. A backtest refused at its start leaves no run
folder. Real `ffe` processes, real files."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path

import pytest

from conftest import BTC_CSV, ffe_env, ffe_in_process, make_settings, run_ffe, sample_head
from ffe_engine import backtest as bt
from ffe_engine.errors import StartError

SECRET = "sk-SECRETVALUE123456"
QUERY_KEY = "sk-QUERYKEY987654"
LLM_WITH_USER = f"http://alice:{SECRET}@127.0.0.1:9/v1"
LLM = '["trend", "momentum", "llm"]'


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert lines[0].startswith("ffe: error: "), lines[0]
    return lines[0]


def files_holding(root: Path, *texts: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and any(t.encode() in p.read_bytes() for t in texts)]


def test_credentials_in_the_llm_url_are_refused_by_check_backtest_and_run_in_one_line_without_them(tmp_path):
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    env = ffe_env(FFE_ENSEMBLE__PROVIDERS=LLM, FFE_ENSEMBLE__LLM__BASE_URL=LLM_WITH_USER)
    for command in (("config", "check"), ("backtest", "BTC-USD_1h.csv"), ("run", "--headless", "--max-bars", "2")):
        proc = run_ffe(tmp_path, *command, env=env)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr[-3000:])
        line = one_error_line(proc.stderr)
        assert line.startswith("ffe: error: environment: FFE_ENSEMBLE__LLM__BASE_URL: "), (command, line)
        assert "'http://********@127.0.0.1:9/v1'" in line and "user name or password" in line, (command, line)
        assert "ensemble.llm.api_key" in line, line  # where the key goes instead
        assert SECRET not in proc.stdout + proc.stderr and "alice" not in line, (command, line)
        assert proc.stdout == "", command
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists(), "nothing was made"
    assert files_holding(tmp_path, SECRET) == []


@pytest.mark.parametrize("name, value, shown", [
    ("FFE_ENSEMBLE__LLM__BASE_URL", f"http://127.0.0.1:9/v1?key={QUERY_KEY}", "'http://127.0.0.1:9/v1?key=********'"),
    ("FFE_ENSEMBLE__LLM__BASE_URL", f"http://127.0.0.1:9/v1#{QUERY_KEY}", "'http://127.0.0.1:9/v1#********'"),
    ("FFE_ENSEMBLE__LLM__BASE_URL", f"ftp://{QUERY_KEY}@127.0.0.1/v1", "'ftp://********@127.0.0.1/v1'"),
    ("FFE_ENSEMBLE__LLM__BASE_URL", f"http://alice:pa/{QUERY_KEY}@127.0.0.1:9/v1",
     "'http://********@127.0.0.1:9/v1'"),
    ("FFE_ENSEMBLE__LLM__BASE_URL", f"http://alice:pa?{QUERY_KEY}@127.0.0.1:9/v1",
     "'http://********@127.0.0.1:9/v1'"),
    ("FFE_EXCHANGE__API_URLS__PUBLIC", f"https://{QUERY_KEY}@gw.example.com/api/v3",
     "'https://********@gw.example.com/api/v3'"),
    ("FFE_EXCHANGE__API_URLS__PRIVATE", f"https://gw.example.com/api/v3?apiKey={QUERY_KEY}&x",
     "'https://gw.example.com/api/v3?apiKey=********&********'"),
    ("FFE_ALERTS__TELEGRAM_API", f"https://bot:{QUERY_KEY}@tg.example.com", "'https://********@tg.example.com'"),
], ids=["llm query", "llm fragment", "not http, with a user", "a password with a slash",
        "a password with a question mark", "api url user", "api url query", "telegram api user"])
def test_every_url_key_refuses_credentials_at_load_and_names_them_masked(tmp_path, name, value, shown):
    (tmp_path / "config.toml").write_text("")
    env = ffe_env(**{name: value})
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "2")):
        proc = ffe_in_process(tmp_path, *command, env=env)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        line = one_error_line(proc.stderr)
        assert line.startswith(f"ffe: error: environment: {name}: {shown} "), line
        assert QUERY_KEY not in proc.stdout + proc.stderr, line
    assert not (tmp_path / "data").exists()


def test_a_url_key_with_credentials_in_config_toml_is_named_with_its_file_and_line(tmp_path):
    (tmp_path / "config.toml").write_text(f'[ensemble]\nproviders = {LLM}\n\n[ensemble.llm]\n'
                                          f'base_url = "{LLM_WITH_USER}"\n')
    proc = ffe_in_process(tmp_path, "config", "check")
    assert proc.returncode == 2, proc.stdout
    line = one_error_line(proc.stderr)
    assert line.startswith("ffe: error: config.toml:5: ensemble.llm.base_url: 'http://********@127.0.0.1:9/v1' "), line
    assert SECRET not in line


def test_config_check_masks_credentials_in_a_url_held_by_any_other_value(tmp_path):
    """exchange.options is free-form, passed to ccxt as it is: a URL in it is printed without its credentials."""
    (tmp_path / "config.toml").write_text("")
    options = {"proxy": f"see http://alice:{SECRET}@proxy.example.com:3128/p?token={QUERY_KEY}#{QUERY_KEY} now",
               "plain": "https://api.example.com/v1", "list": [f"https://{SECRET}@x.example.com"]}
    proc = ffe_in_process(tmp_path, "config", "check", env=ffe_env(FFE_EXCHANGE__OPTIONS=json.dumps(options)))
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout and QUERY_KEY not in proc.stdout and "alice" not in proc.stdout
    shown = tomllib.loads(proc.stdout)["exchange"]["options"]
    assert shown == {"proxy": "see http://********@proxy.example.com:3128/p?token=********#******** now",
                     "plain": "https://api.example.com/v1", "list": ["https://********@x.example.com"]}


def test_a_backtest_whose_providers_cannot_be_built_leaves_no_run_folder(tmp_path):
    """Settings made by a program, not loaded (so never checked at load): the provider refuses its URL, the run is
    refused in one line before its folders are made, and `ffe backtest --list` has no run to call interrupted."""
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    settings = make_settings(tmp_path, ensemble={"providers": ["trend", "momentum", "llm"]})
    llm = settings.ensemble.llm.model_copy(update={"base_url": LLM_WITH_USER})
    settings = settings.model_copy(update={"ensemble": settings.ensemble.model_copy(update={"llm": llm})})
    series = bt.load_files([str(tmp_path / "BTC-USD_1h.csv")])
    with pytest.raises(StartError) as err:
        asyncio.run(bt.run_backtest(settings, series))
    assert "\n" not in str(err.value) and SECRET not in str(err.value) and "base_url" in str(err.value)
    assert not (tmp_path / "data" / "backtests").exists() and not (tmp_path / "logs" / "backtests").exists()


def test_a_refused_exchange_options_line_masks_the_credentials_of_a_url_in_it(tmp_path):
    """With exchange.api_urls set, exchange.options is checked against what ccxt's binance needs, and the refusal
    quotes the options it wants: a proxy URL in them is quoted without its credentials (the line lands in the
    service manager's journal)."""
    (tmp_path / "config.toml").write_text(
        '[venue]\nkind = "ccxt"\n\n[exchange]\n'
        'api_urls = { public = "http://127.0.0.1:9/api/v3", private = "http://127.0.0.1:9/api/v3" }\n'
        f'options = {{ proxy = "http://user:{SECRET}@proxy.example:3128" }}\n')
    proc = ffe_in_process(tmp_path, "config", "check")
    assert proc.returncode == 2, proc.stdout
    line = one_error_line(proc.stderr)
    assert "exchange.options" in line and "http://********@proxy.example:3128" in line, line
    assert SECRET not in proc.stderr + proc.stdout and "user:" not in line, line
