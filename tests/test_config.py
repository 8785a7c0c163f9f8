"""Configuration: config.toml, then .env, then FFE_ environment variables; unknown keys and bad values are one-line
errors naming the source; secrets never shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import forked_ffe
from ffe_engine.config import ConfigError, Settings, load_settings, render_settings

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Value-9f8e7d6c"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs) -> ConfigError:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return info.value


# --- defaults and files --------------------------------------------------------------------------------------------


def test_defaults_load_with_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.source_files == []
    assert settings.mode == "paper"
    assert settings.market.source == "simulated"
    assert settings.engine.symbols == ["BTC/USDT", "ETH/USDT"]
    assert settings.risk.max_open_positions == 2
    assert settings.risk.max_position_pct == 10
    assert settings.risk.var_confidence == 0.95
    assert settings.ensemble.providers == ["trend", "momentum", "mean_reversion", "breakout"]
    assert settings.exchange.api_key is None
    assert settings.db_path == Path("data/ffe.db")
    assert settings.data_dir == Path("data")
    assert settings.audit_path == Path("logs/audit.jsonl")
    assert settings.socket_path == Path("data/ffe.sock")
    assert settings.engine.timeframe_ms == 60_000
    assert settings.secrets() == []


def test_repo_config_toml_holds_the_built_in_defaults_with_a_comment_per_key():
    settings = load_settings(config_path=REPO / "config.toml", env_file=REPO / ".env.example", environ={})
    assert settings.model_dump() == Settings().model_dump()
    for number, line in enumerate((REPO / "config.toml").read_text().splitlines(), start=1):
        if re.match(r"\s*[a-z_]+\s*=", line):
            assert "#" in line.split("=", 1)[1], f"config.toml:{number} has no comment"


def test_env_example_is_all_comments_and_names_the_credentials():
    text = (REPO / ".env.example").read_text()
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())
    for name in ("FFE_EXCHANGE__API_KEY", "FFE_EXCHANGE__SECRET", "FFE_EXCHANGE__PASSWORD"):
        assert name in text
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_explicit_config_file_must_exist(tmp_path):
    error = config_error(config_path=tmp_path / "nope.toml")
    assert str(error) == f"{tmp_path / 'nope.toml'}: config file not found"


def test_precedence_toml_then_dotenv_then_environment(tmp_path):
    config = write(
        tmp_path / "config.toml",
        '[risk]\nmax_open_positions = 4\nmax_daily_trades = 40\nmax_orders_per_minute = 7\n'
        '[engine]\napproval = "manual"\n',
    )
    write(tmp_path / ".env", "FFE_RISK__MAX_DAILY_TRADES=41\nFFE_RISK__MAX_ORDERS_PER_MINUTE=8\n")
    settings = load_settings(config_path=config, environ={"FFE_RISK__MAX_ORDERS_PER_MINUTE": "9"})
    assert settings.engine.approval == "manual"  # only in the file
    assert settings.risk.max_open_positions == 4  # only in the file
    assert settings.risk.max_daily_trades == 41  # .env over the file
    assert settings.risk.max_orders_per_minute == 9  # environment over both
    assert settings.source_files == [config, tmp_path / ".env"]


def test_dotenv_is_found_next_to_the_config_file_not_in_the_working_directory(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    config = write(conf_dir / "config.toml", "")
    write(conf_dir / ".env", "FFE_MARKET__SEED=1\n")
    write(tmp_path / ".env", "FFE_MARKET__SEED=2\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(config_path=config, environ={}).market.seed == 1


def test_environment_values_for_lists_tables_and_dict_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        environ={
            "FFE_ENGINE__SYMBOLS": "BTC/USDT, SOL/USDT",
            "FFE_ENSEMBLE__PROVIDERS": '["trend", "llm"]',
            "FFE_TUI__KEYS__pause": "P",
            "FFE_EXCHANGE__OPTIONS": '{"defaultType": "spot"}',
            "FFE_MODE": "live",
            "HOME": "/somewhere",
            "FFEX_RISK__NOTHING": "1",
        }
    )
    assert settings.engine.symbols == ["BTC/USDT", "SOL/USDT"]
    assert settings.ensemble.providers == ["trend", "llm"]
    assert settings.tui.keys == {"pause": "P"}
    assert settings.exchange.options == {"defaultType": "spot"}
    assert settings.mode == "live"


def test_with_dirs_moves_database_and_logs(tmp_path):
    config = write(tmp_path / "config.toml", '[storage]\npath = "state/main.db"\n')
    settings = load_settings(config_path=config, environ={})
    moved = settings.with_dirs(data_dir=tmp_path / "d", log_dir=tmp_path / "l")
    assert moved.db_path == tmp_path / "d" / "main.db"
    assert moved.data_dir == tmp_path / "d"
    assert moved.log_dir == tmp_path / "l"
    assert moved.audit_path == tmp_path / "l" / "audit.jsonl"
    assert moved.socket_path == tmp_path / "d" / "ffe.sock"
    assert settings.db_path == Path("state/main.db")  # the original is unchanged
    assert moved.source_files == [config]
    assert "--data-dir" in render_settings(moved)


# --- unknown keys --------------------------------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path):
    config = write(tmp_path / "config.toml", 'mode = "paper"\nmoed = "live"\n')
    error = config_error(config_path=config)
    assert str(error) == f"{config}:2: unknown key moed (did you mean mode?)"


def test_unknown_key_inside_risk_names_file_key_and_line(tmp_path):
    config = write(
        tmp_path / "config.toml",
        "# comment\n"
        "[engine]\n"
        "symbols = [\n"
        '  "BTC/USDT",   # max_open_positons = 1 inside an array is not a key\n'
        "]\n"
        'timeframe = """1m"""\n'
        "\n"
        "[risk]  # the gates\n"
        "max_open_positions = 3\n"
        "max_open_positons = 3\n",
    )
    error = config_error(config_path=config)
    assert str(error).startswith(f"{config}:10: unknown key risk.max_open_positons")
    assert "did you mean risk.max_open_positions?" in str(error)
    assert error.line == 10


def test_unknown_key_inside_ensemble_llm_table_and_inline_table(tmp_path):
    config = write(tmp_path / "config.toml", '[ensemble]\nmin_votes = 2\n\n[ensemble.llm]\nmodle = "x"\n')
    assert str(config_error(config_path=config)).startswith(f"{config}:5: unknown key ensemble.llm.modle")
    config = write(tmp_path / "config.toml", '[ensemble]\nmin_votes = 2\nllm = { model = "x", timeout = 3 }\n')
    assert str(config_error(config_path=config)).startswith(f"{config}:3: unknown key ensemble.llm.timeout")


@pytest.mark.parametrize("text, line, says", [
    ('mode = "paper"\nx.y = 1\n', 2, "unknown key x"),
    ('mode = "paper"\n\n[x.y]\nz = 1\n', 3, "unknown key x"),
    ('mode = "paper"\n\n[risk.limits.extra]\nx = 1\n', 3, "unknown key risk.limits"),
    ('mode = "paper"\nrisk.nosuch.deeper = 1\n', 2, "unknown key risk.nosuch"),
    ('[risk]\nnosuch.deeper = 1\n', 2, "unknown key risk.nosuch"),
    ('[engine]\n\nsymbols.x = 1\n', 3, "engine.symbols: "),
    ('[exchange]\noptions.a = 1\napi_key.x = "y"\n', 3, "exchange.api_key must come from .env"),
], ids=["a dotted key", "a nested header", "a header nested deeper", "a dotted key three deep",
        "a dotted key under a header", "a list set as a table", "a secret set as a table"])
def test_an_error_on_a_dotted_key_or_nested_table_names_the_line_of_the_key_at_fault(tmp_path, text, line, says):
    """The key at fault is part of a dotted key or of a [table.header]: its line is the line that wrote it, not
    the [table] header above it, nor none."""
    config = write(tmp_path / "config.toml", text)
    error = config_error(config_path=config)
    assert str(error).startswith(f"{config}:{line}: {says}"), str(error)
    assert error.line == line


def test_a_default_under_a_table_made_by_a_dotted_key_is_not_blamed_on_its_line(tmp_path):
    """`exchange.options.a = 1` writes exchange.options, not exchange.id: the values around it are defaults."""
    config = write(tmp_path / "config.toml", 'mode = "paper"\nexchange.options.a = 1\n')
    settings = load_settings(config_path=config, environ={})
    assert settings.set_at("exchange", "options") is not None and settings.set_at("exchange", "options").line == 2
    assert settings.set_at("exchange", "id") is None


def test_unknown_key_in_dotenv(tmp_path):
    config = write(tmp_path / "config.toml", "")
    write(tmp_path / ".env", "# credentials\nOTHER_TOOL_SETTING=1\n\nFFE_RISK__MAX_OPEN_POSITONS=3\n")
    error = config_error(config_path=config)
    assert str(error).startswith(
        f"{tmp_path / '.env'}:4: FFE_RISK__MAX_OPEN_POSITONS: unknown key risk.max_open_positons"
    )


@pytest.mark.parametrize("second", ["FFE_RISK__MAX_OPEN_POSITIONS=40", "ffe_risk__max_open_positions = 40",
                                    "export FFE_RISK__MAX_OPEN_POSITIONS=40"])
def test_a_variable_set_twice_in_dotenv_is_refused_naming_both_lines(tmp_path, second):
    """As config.toml refuses a key given twice: the last value quietly taken would be one of two the operator
    typed, a secret's among them (the value is never shown)."""
    config = write(tmp_path / "config.toml", "")
    write(tmp_path / ".env", f"FFE_RISK__MAX_OPEN_POSITIONS=4\n# more\n{second}\n")
    error = config_error(config_path=config)
    assert str(error) == (f"{tmp_path / '.env'}:3: {second.split('=')[0].split()[-1].strip()}: set twice (line 1 "
                          "too): keep one"), str(error)
    assert error.exit_code == 2


@pytest.mark.parametrize("first, second", [
    ("FFE_RISK__MAX_OPEN_POSITIONS", "FFE_risk__max_open_positions"),
    ("FFE_EXCHANGE__SECRET", "ffe_exchange__Secret"),
], ids=["a setting", "a secret"])
def test_two_environment_variables_that_differ_only_in_case_are_refused_naming_both(tmp_path, first, second):
    """As in .env: one of them quietly taken (whichever sorts last) would be one of two values the operator set; the
    values are never shown, one may be a secret."""
    from conftest import ffe_env, run_ffe

    write(tmp_path / "config.toml", 'mode = "paper"\n')
    proc = run_ffe(tmp_path, "config", "check", env=ffe_env(**{first: "3-old-value-1", second: "5-new-value-2"}))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"ffe: error: environment: {first} and {second}: set twice (the names differ "
                                        "only in case): keep one"], proc.stderr
    assert "value" not in proc.stdout + proc.stderr


def test_unknown_key_in_environment(tmp_path):
    config = write(tmp_path / "config.toml", "")
    error = config_error(config_path=config, environ={"FFE_RISK__MAX_OPEN_POSITONS": "3", "PATH": "/bin"})
    assert str(error).startswith("environment: FFE_RISK__MAX_OPEN_POSITONS: unknown key risk.max_open_positons")
    error = config_error(config_path=config, environ={"FFE_MODE__X": "1"})
    assert str(error) == "environment: FFE_MODE__X: unknown key mode.x (mode is not a table)"


# --- bad values ----------------------------------------------------------------------------------------------------


def test_wrong_type_names_key_file_and_line(tmp_path):
    config = write(tmp_path / "config.toml", '[risk]\nmin_confidence = 0.6\nmax_open_positions = "many"\n')
    error = config_error(config_path=config)
    assert str(error).startswith(f"{config}:3: risk.max_open_positions: Input should be a valid integer")


# A value of another TOML type is refused, never converted: `true` is no count, "3" no number.
WRONG_TYPES = [
    ("[risk]\nmax_open_positions = true\n", "risk.max_open_positions: Input should be a valid integer, not a boolean"),
    ('[risk]\nmax_open_positions = "3"\n', "risk.max_open_positions: Input should be a valid integer, not a string"),
    ("[risk]\nmax_open_positions = 3.0\n", "risk.max_open_positions: Input should be a valid integer, not a float"),
    ('[engine]\nlive_start_paused = "no"\n', "engine.live_start_paused: Input should be a valid boolean, not a string"),
    ("[engine]\nlive_start_paused = 0\n", "engine.live_start_paused: Input should be a valid boolean, not an integer"),
    ('[risk]\nmin_confidence = "0.6"\n', "risk.min_confidence: Input should be a valid number, not a string"),
    ("[risk]\nmin_confidence = true\n", "risk.min_confidence: Input should be a valid number, not a boolean"),
    ("[tui]\nkeys = {pause = 1}\n", "tui.keys.pause: Input should be a valid string, not an integer (put it in quotes)"),
    # In TOML's words, not Python's: a table, an array.
    ("\nrisk = 5\n", "risk: Input should be a table, not an integer"),
    ("[exchange]\noptions = 5\n", "exchange.options: Input should be a table, not an integer"),
    ('[engine]\nsymbols = "BTC/USDT"\n', "engine.symbols: Input should be an array, not a string"),
]


@pytest.mark.parametrize("text, says", WRONG_TYPES)
def test_a_value_of_the_wrong_toml_type_is_refused_not_converted(tmp_path, text, says):
    config = write(tmp_path / "config.toml", "# limits\n" + text)
    assert str(config_error(config_path=config)) == f"{config}:3: {says}"


def test_an_integer_where_a_number_is_expected_is_that_number(tmp_path):
    config = write(tmp_path / "config.toml", "[risk]\nmin_confidence = 1\n[audit]\nrotate_mb = 2\n")
    settings = load_settings(config_path=config, environ={})
    assert settings.risk.min_confidence == 1.0 and settings.audit.rotate_mb == 2.0


def test_environment_text_is_read_as_the_key_type(tmp_path):
    config = write(tmp_path / "config.toml", "")
    write(tmp_path / ".env", "FFE_ENGINE__LIVE_START_PAUSED=False\nFFE_RISK__MIN_CONFIDENCE=0.6\n")
    settings = load_settings(config_path=config, environ={"FFE_RISK__MAX_OPEN_POSITIONS": "3",
                                                          "FFE_TUI__CHART": "false"})
    assert settings.risk.max_open_positions == 3 and settings.risk.min_confidence == 0.6
    assert settings.engine.live_start_paused is False and settings.tui.chart is False


@pytest.mark.parametrize("value", ["no", "yes", "0", "1", "off"])
def test_an_environment_boolean_is_true_or_false(tmp_path, value):
    config = write(tmp_path / "config.toml", "")
    error = config_error(config_path=config, environ={"FFE_ENGINE__LIVE_START_PAUSED": value})
    assert str(error) == "environment: FFE_ENGINE__LIVE_START_PAUSED: expected true or false"


def test_ffe_config_check_refuses_a_wrong_toml_type_with_one_line(tmp_path):
    write(tmp_path / "config.toml", "[engine]\napproval = \"auto\"\n\n[risk]\nmax_open_positions = true\n")
    result = run_ffe(tmp_path, "config", "check", "--config", str(tmp_path / "config.toml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"ffe: error: {tmp_path / 'config.toml'}:5: risk.max_open_positions: "
                                          "Input should be a valid integer, not a boolean"]
    assert result.stdout == ""


def test_a_provider_listed_twice_is_blamed_on_the_list_alone_and_a_number_for_a_text_says_to_quote_it(tmp_path):
    config = write(tmp_path / "config.toml", '[ensemble]\nproviders = ["trend", "trend", "momentum"]\n')
    assert str(config_error(config_path=config)) == f"{config}:2: ensemble.providers: listed more than once: trend"
    config = write(tmp_path / "config.toml", "[alerts]\ntelegram_chat_id = -1001234567\n")
    assert str(config_error(config_path=config)) == (f"{config}:2: alerts.telegram_chat_id: Input should be a valid "
                                                     "string, not an integer (put it in quotes)")


def test_out_of_range_and_bad_choices(tmp_path):
    config = write(tmp_path / "config.toml", "[risk]\nmax_position_pct = 0\n")
    assert str(config_error(config_path=config)) == f"{config}:2: risk.max_position_pct: Input should be greater than 0"
    config = write(tmp_path / "config.toml", "")
    error = config_error(config_path=config, environ={"FFE_ENGINE__APPROVAL": "sometimes"})
    assert str(error) == "environment: FFE_ENGINE__APPROVAL: Input should be 'auto' or 'manual'"
    config = write(tmp_path / "config.toml", '[engine]\nsymbols = ["BTC/USDT", "ETHUSDT"]\n')
    assert str(config_error(config_path=config)).startswith(f"{config}:2: engine.symbols[1]: 'ETHUSDT' is not")
    config = write(tmp_path / "config.toml", '[engine]\ntimeframe = "5x"\n')
    assert str(config_error(config_path=config)).startswith(f"{config}:2: engine.timeframe:")
    config = write(tmp_path / "config.toml", '[ensemble]\nproviders = ["trend", "vibes"]\n')
    assert str(config_error(config_path=config)).startswith(f"{config}:2: ensemble.providers[1]: Input should be")


def test_toml_syntax_error_names_file_and_line(tmp_path):
    config = write(tmp_path / "config.toml", '[risk]\nmax_open_positions = 2\nmax_position_pct = \n')
    error = config_error(config_path=config)
    assert str(error).startswith(f"{config}:3: invalid TOML: ")
    assert error.line == 3


def test_files_saved_with_a_utf8_byte_order_mark_are_read_as_without_it(tmp_path):
    """Windows editors save UTF-8 with a byte-order mark. TOML 1.0 has no room for one, but what it means is plain:
    config.toml and .env are read without it, their line numbers as they are; the first .env line's variable is
    not passed over as an unknown name."""
    bom = "\ufeff"
    config = write(tmp_path / "config.toml", f"{bom}[risk]\nmax_daily_trades = 41\n")
    write(tmp_path / ".env", f"{bom}FFE_MARKET__SEED=3\n")
    settings = load_settings(config_path=config, environ={})
    assert settings.risk.max_daily_trades == 41 and settings.market.seed == 3
    assert settings.origin_of("risk", "max_daily_trades").line == 2
    proc = run_ffe(tmp_path, "config", "check")  # the real command, below
    assert proc.returncode == 0, proc.stderr
    assert "max_daily_trades = 41" in proc.stdout and "seed = 3" in proc.stdout, proc.stdout

    write(tmp_path / "config.toml", f"{bom}[risk]\nmax_position_pct = 0\n")
    assert str(config_error(config_path=config)).startswith(f"{config}:2: risk.max_position_pct: ")
    write(tmp_path / "config.toml", f"{bom}[risk]\nmax_position_pct = \n")
    assert str(config_error(config_path=config)).startswith(f"{config}:2: invalid TOML: ")


def test_replay_without_files_is_rejected(tmp_path):
    config = write(tmp_path / "config.toml", '[market]\nseed = 1\nsource = "replay"\n')
    error = config_error(config_path=config)
    assert str(error).startswith(f"{config}:3: market.source: ")
    config = write(tmp_path / "config.toml", '[market]\nsource = "replay"\nreplay_files = { "BTC/USD" = "btc.csv" }\n')
    assert load_settings(config_path=config, environ={}).market.replay_files == {"BTC/USD": "btc.csv"}


def test_min_votes_beyond_the_providers_is_rejected(tmp_path):
    config = write(tmp_path / "config.toml", '[ensemble]\nmin_votes = 3\nproviders = ["trend", "momentum"]\n')
    assert "min_votes = 3 can never be reached" in str(config_error(config_path=config))


# --- secrets -------------------------------------------------------------------------------------------------------


def test_credentials_in_config_toml_are_rejected(tmp_path):
    config = write(tmp_path / "config.toml", f'[exchange]\nid = "kraken"\nsecret = "{SECRET}"\n')
    error = config_error(config_path=config)
    assert str(error) == f"{config}:3: exchange.secret must come from .env or the environment, not config.toml"
    config = write(tmp_path / "config.toml", f'ensemble.llm.api_key = "{SECRET}"\n')
    assert "ensemble.llm.api_key must come from .env" in str(config_error(config_path=config))


def test_secret_from_dotenv_is_masked_in_render(tmp_path):
    config = write(tmp_path / "config.toml", '[exchange]\nid = "kraken"\n')
    write(tmp_path / ".env", f"FFE_EXCHANGE__API_KEY=key-{SECRET}\nFFE_EXCHANGE__SECRET={SECRET}\n")
    settings = load_settings(config_path=config, environ={})
    assert settings.exchange.secret.get_secret_value() == SECRET
    assert sorted(settings.secrets()) == sorted([SECRET, f"key-{SECRET}"])
    text = render_settings(settings)
    assert SECRET not in text
    assert SECRET[:6] not in text and SECRET[-6:] not in text  # not even partially
    assert 'secret = "********"' in text
    assert 'api_key = "********"' in text
    assert str(config) in text.splitlines()[1]  # the sources are listed at the top


def test_secret_never_in_error_message(tmp_path):
    config = write(tmp_path / "config.toml", "")
    # A trailing space inside quotes is kept by the .env parser and refused by the secret's validation.
    write(tmp_path / ".env", f'FFE_EXCHANGE__PASSWORD="{SECRET} "\n')
    error = config_error(config_path=config)
    assert str(error).startswith(f"{tmp_path / '.env'}:1: FFE_EXCHANGE__PASSWORD: must not contain")
    assert SECRET not in str(error) and SECRET not in repr(error.args)
    error = config_error(config_path=config, environ={"FFE_EXCHANGE": f'{{"secret": "{SECRET}", "nope": 1}}'})
    assert "unknown key exchange.nope" in str(error)
    assert SECRET not in str(error)


@pytest.mark.parametrize("secret", [" lead", "trailing ", "line ", " whitespace"])
def test_a_secret_that_is_a_word_of_the_message_is_not_given_away_by_a_mask_over_that_word(tmp_path, secret):
    # The message about a secret with a stray space says nothing of its value; but a mask put over the
    # message's own words where they equal the secret ("or ********ing/trailing whitespace") tells the reader it.
    config = write(tmp_path / "config.toml", "")
    text = str(config_error(config_path=config, environ={"FFE_EXCHANGE__SECRET": secret}))
    assert text.startswith("environment: FFE_EXCHANGE__SECRET: "), text
    assert "********" not in text and secret.strip() not in text, text


def test_a_secret_equal_to_a_key_name_is_not_given_away_by_a_mask_over_that_key_in_the_render(tmp_path):
    # Masking everywhere in the rendered TOML would put the mask over a key named as the secret: "******** = [".
    config = write(tmp_path / "config.toml", "")
    settings = load_settings(config_path=config, environ={"FFE_EXCHANGE__PASSWORD": "timeframe"})
    text = render_settings(settings)
    assert re.search(r"^timeframe = ", text, re.MULTILINE), text
    masked = [line for line in text.splitlines() if "********" in line]
    assert len(masked) == 1 and masked[0].startswith('password = "********"'), masked
    assert tomllib.loads(text)["engine"]["timeframe"] == settings.engine.timeframe


def test_render_is_toml_that_loads_back_to_the_same_settings(tmp_path):
    config = write(
        tmp_path / "config.toml",
        '[market]\nsource = "replay"\nreplay_files = { "BTC/USD" = "a b.csv" }\n[tui]\nkeys = { pause = "p" }\n',
    )
    settings = load_settings(config_path=config, environ={"FFE_RISK__MAX_OPEN_POSITIONS": "5"})
    text = render_settings(settings)
    assert "max_open_positions = 5  # environment FFE_RISK__MAX_OPEN_POSITIONS" in text
    again = load_settings(config_path=write(tmp_path / "rendered.toml", text), environ={})
    assert again.model_dump() == settings.model_dump()
    assert tomllib.loads(text)["market"]["replay_files"] == {"BTC/USD": "a b.csv"}


# --- the real command ----------------------------------------------------------------------------------------------


def ffe_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("FFE_")}


def run_ffe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return forked_ffe.run(
        [sys.executable, "-m", "ffe_cli", *args],
        cwd=tmp_path,
        env=ffe_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def in_process(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`ffe ARGS` in this process (conftest.ffe_in_process), in the environment run_ffe gives its process."""
    from conftest import ffe_in_process

    return ffe_in_process(tmp_path, *args, env=ffe_env())


def test_ffe_config_check_prints_effective_config_with_masked_secrets(tmp_path):
    write(tmp_path / "config.toml", "[risk]\nmax_open_positions = 3\n")
    write(tmp_path / ".env", f"FFE_EXCHANGE__SECRET={SECRET}\n")
    result = run_ffe(tmp_path, "config", "check", "--config", str(tmp_path / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert "max_open_positions = 3" in result.stdout
    assert 'secret = "********"' in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_ffe_config_check_typo_in_risk_exits_2_with_one_line(tmp_path):
    write(tmp_path / "config.toml", "[engine]\napproval = \"auto\"\n\n[risk]\nmax_open_positons = 3\n")
    # a refusal as a real process: test_ffe_config_check_refuses_a_wrong_toml_type_with_one_line
    result = in_process(tmp_path, "config", "check", "--config", str(tmp_path / "config.toml"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ffe: error: {tmp_path / 'config.toml'}:5: unknown key risk.max_open_positons")
    assert result.stdout == ""


@pytest.mark.parametrize("name, raw", [("FFE_ENGINE", "1"), ("FFE_TUI__KEYS", '"p"'), ("FFE_RISK", "[1, 2]")])
def test_a_table_given_a_value_that_is_no_table_names_the_variable_and_how_to_set_it(name, raw):
    """FFE_ENGINE=1 said `Input should be a valid dictionary or instance of EngineSettings`: the variable names a
    table, whose keys are set one by one (FFE_ENGINE__KEY) or as a JSON object."""
    error = config_error(environ={name: raw})
    assert str(error) == (f"environment: {name}: expected a JSON object (a table: or set its keys one by one, "
                          f"{name}__KEY)"), str(error)


def test_an_env_file_named_with_env_file_that_is_missing_is_an_error_the_default_one_is_not(tmp_path):
    assert run_ffe(tmp_path, "config", "check").returncode == 0  # no .env beside the config: the defaults
    result = run_ffe(tmp_path, "config", "check", "--env-file", "nope.env")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["ffe: error: nope.env: .env file not found"]
