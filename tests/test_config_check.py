"""`ffe config check` refuses what `ffe run` would refuse, and stops quietly when its reader goes away.

Key bindings are validated by the console (ffe_tui/keys.py) when it starts; config check runs the same
validation, so a binding that `run` would reject is reported by `config check` first, as one line naming the file,
line and key, exit 2. Real `ffe` subprocesses and real pipes.
"""

from __future__ import annotations

import os
import subprocess

import pytest

import forked_ffe
from conftest import ffe_cmd, ffe_env, ffe_in_process, run_ffe


def write_config(tmp_path, keys: str) -> None:
    (tmp_path / "config.toml").write_text(f'[engine]\napproval = "auto"\n\n[tui]\nkeys = {keys}\n')


@pytest.mark.parametrize("keys, says", [
    ('{kill = "ctrl+b"}', "'ctrl+b' cannot be used (the tmux prefix)"),
    ('{pause = "a"}', "key 'a' is bound to both"),
    ('{paws = "p"}', "unknown binding id 'paws'"),
    ('{pause = "j"}', "'j' cannot be used (it moves down in the focused pane)"),
    ('{decisions = "end"}', "'end' cannot be used (it scrolls the focused pane"),
    ('{pause = "pagedown"}', "'pagedown' cannot be used (it scrolls the focused pane"),
    ('{views = "1,2,3"}', "needs 7 keys, one per view"),
    ('{close_trade = "3"}', "key '3' is bound to both 'views' and 'close_trade'"),
    ('{pause = "notakey"}', "tui.keys.pause: 'notakey' is not a key name"),
    ('{flatten = "ctrl+notakey"}', "tui.keys.flatten: 'ctrl+notakey' is not a key name"),
    ('{pause = "shift+p"}', "tui.keys.pause: 'shift+p' cannot be used (a terminal sends 'P' for it: write 'P')"),
    ('{pause = "ctrl+shift+p"}', "tui.keys.pause: 'ctrl+shift+p' cannot be used (a terminal sends 'ctrl+p' for it"),
], ids=["taken by tmux", "bound twice", "unknown id", "a pane's move key", "the log's end key", "a page key",
        "too few view keys", "a view key",
        "no such key", "no such key with a modifier", "shift with a letter", "ctrl+shift with a letter"])
def test_config_check_rejects_the_key_bindings_the_console_would_reject(tmp_path, keys, says):
    write_config(tmp_path, keys)
    first = keys == '{kill = "ctrl+b"}'  # the first as a real process
    res = (run_ffe if first else ffe_in_process)(tmp_path, "config", "check")
    assert res.returncode == 2, res.stdout
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("ffe: error: ") and "config.toml:5: tui.keys" in line and says in line, line
    assert res.stdout == ""


@pytest.mark.parametrize("exchange, says", [
    ('id = "kraken"', "config.toml:5: exchange.id: ffe places orders on binance only ("),
    ('api_urls = {public = "http://127.0.0.1:9/api/v3"}', "config.toml:5: exchange.api_urls: set private too"),
], ids=["orders elsewhere than binance", "an URL section missing"])
def test_config_check_rejects_the_exchange_settings_a_live_start_would_reject(tmp_path, exchange, says):
    (tmp_path / "config.toml").write_text(f'[venue]\nkind = "ccxt"\n\n[exchange]\n{exchange}\n')
    first = exchange == 'id = "kraken"'  # the first as a real process
    res = (run_ffe if first else ffe_in_process)(tmp_path, "config", "check")
    assert res.returncode == 2, res.stdout
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("ffe: error: " + says), line
    assert res.stdout == ""
    # market data from any exchange: paper trading on kraken's candles passes
    (tmp_path / "config.toml").write_text('[market]\nsource = "exchange"\n\n[exchange]\nid = "kraken"\n')
    assert ffe_in_process(tmp_path, "config", "check").returncode == 0


SPOT_OPTIONS = 'options = {fetchMarkets = {types = ["spot"]}, fetchCurrencies = false, fetchMargins = false}\n'
PUBLIC = 'api_urls = {public = "http://127.0.0.1:9/api/v3"}\n'


@pytest.mark.parametrize("exchange, says", [
    ('api_urls = {nosuch = "http://127.0.0.1:9/api/v3"}\n' + SPOT_OPTIONS,
     "config.toml:5: exchange.api_urls: ccxt's binance has no URL section 'nosuch'"),
    ('api_urls = {private = "http://127.0.0.1:9/api/v3"}\n' + SPOT_OPTIONS,
     "config.toml:5: exchange.api_urls: set public too"),
    (PUBLIC, "config.toml:4: exchange.options: with exchange.api_urls set, keep ccxt's binance to those sections"),
], ids=["a section ccxt does not have", "no public section", "no options keeping ccxt to it"])
def test_the_exchanges_market_data_refuses_url_sections_it_cannot_read_at_config_check_and_start(tmp_path, exchange,
                                                                                                   says):
    # Paper trading on the exchange's candles: the feed reads ccxt's public section only (its markets loaded from
    # it alone with the options). URLs it cannot read are the configuration's fault, said before anything starts
    # (exit 2), not a start that fails as if the exchange did not answer (exit 1, which a service manager restarts
    # for ever).
    (tmp_path / "config.toml").write_text(f'[market]\nsource = "exchange"\n\n[exchange]\n{exchange}')
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "1")):
        res = run_ffe(tmp_path, *command)
        assert res.returncode == 2, (command, res.stdout, res.stderr)
        [line] = res.stderr.strip().splitlines()
        assert line.startswith("ffe: error: " + says), (command, line)
    assert not (tmp_path / "data").exists()  # nothing made
    # the private section is for orders: a feed of market data does without it
    (tmp_path / "config.toml").write_text('[market]\nsource = "exchange"\n\n[exchange]\n' + PUBLIC + SPOT_OPTIONS)
    assert ffe_in_process(tmp_path, "config", "check").returncode == 0


@pytest.mark.parametrize("config, says", [
    ('[venue]\nkind = "ccxt"\n', 'venue.kind = "ccxt" places real orders: it needs mode = "live"'),
    ('mode = "live"\n', 'mode = "live" needs venue.kind = "ccxt"'),
], ids=["an order venue on a paper account", "a live account on the paper venue"])
def test_config_check_refuses_a_mode_and_venue_that_no_start_would_take(tmp_path, config, says):
    (tmp_path / "config.toml").write_text(config)
    for command in (("config", "check"), ("run", "--headless", "--live"), ("run", "--headless")):
        res = ffe_in_process(tmp_path, *command)
        assert res.returncode == 2, (command, res.stdout)
        [line] = res.stderr.strip().splitlines()
        if command == ("config", "check") or says in line:
            assert line.startswith("ffe: error: ") and says in line, (command, line)
        assert res.stdout == ""


# (id, config.toml, .env, environment, the command, what the line says after "ffe: error: ", what it says too)
CROSS_KEY = [
    ("an order venue on line 2 of a paper account", 'mode = "paper"\nvenue.kind = "ccxt"\n', "", {},
     ("config", "check"), 'config.toml:2: venue.kind = "ccxt" places real orders', 'mode = "paper" from config.toml:1'),
    ("the same, started", 'mode = "paper"\nvenue.kind = "ccxt"\n', "", {}, ("run", "--headless"),
     'config.toml:2: venue.kind = "ccxt" places real orders', 'mode = "paper" from config.toml:1'),
    ("an order venue under a header, the default mode", '[venue]\nkind = "ccxt"\n', "", {}, ("config", "check"),
     'config.toml:2: venue.kind = "ccxt" places real orders', 'mode = "paper", the default'),
    ("an order venue from the environment", "", "", {"FFE_VENUE__KIND": "ccxt"}, ("config", "check"),
     'environment: FFE_VENUE__KIND: venue.kind = "ccxt" places real orders', None),
    ("an order venue from .env, started", "", "# the venue\nFFE_VENUE__KIND=ccxt\n", {}, ("run", "--headless"),
     '.env:2: FFE_VENUE__KIND: venue.kind = "ccxt" places real orders', None),
    ("a live account on the default venue", 'mode = "live"\n', "", {}, ("config", "check"),
     'config.toml:1: mode = "live" needs venue.kind = "ccxt"', 'venue.kind = "paper", the default'),
    ("the same, started live", 'mode = "live"\n', "", {}, ("run", "--headless", "--live"),
     'config.toml:1: mode = "live" needs venue.kind = "ccxt"', None),
    ("the same, started without --live", 'mode = "live"\n', "", {}, ("run", "--headless"),
     'config.toml:1: mode = "live" needs the --live flag', None),
    ("a live account from the environment on a paper venue set in config.toml", '[venue]\nkind = "paper"\n', "",
     {"FFE_MODE": "live"}, ("config", "check"), 'environment: FFE_MODE: mode = "live" needs venue.kind = "ccxt"',
     'venue.kind = "paper" from config.toml:2'),
    ("--live on a paper account", 'mode = "paper"\n', "", {}, ("run", "--headless", "--live"),
     '--live needs mode = "live"', 'mode = "paper" from config.toml:1'),
    # Real orders decided on a simulated random walk or replayed candles: refused, whatever the credentials.
    ("a live account on the default simulated market", 'mode = "live"\nvenue.kind = "ccxt"\n', "", {},
     ("config", "check"), 'config.toml:1: mode = "live" trades on the exchange\'s market only',
     'market.source = "simulated", the default'),
    ("a live account on a simulated market set so, started live", 'mode = "live"\nvenue.kind = "ccxt"\n'
     '[market]\nsource = "simulated"\n', "", {}, ("run", "--headless", "--live"),
     'config.toml:4: market.source = "simulated" cannot decide real orders', None),
    # The chat id a bot token needs: the token's variable is named, not the [alerts] header (which set nothing).
    ("a bot token from the environment without a chat id", "[alerts]\n", "",
     {"FFE_ALERTS__TELEGRAM_TOKEN": "123456:abcdefghijklmnopqrstuvwxyz"}, ("config", "check"),
     "environment: FFE_ALERTS__TELEGRAM_TOKEN: alerts.telegram_chat_id: is needed", None),
    ("a bot token from .env without a chat id", "", "FFE_ALERTS__TELEGRAM_TOKEN=123456:abcdefghijklmnopqrstuvwxyz\n",
     {}, ("config", "check"), ".env:1: FFE_ALERTS__TELEGRAM_TOKEN: alerts.telegram_chat_id: is needed", None),
]


@pytest.mark.parametrize("config, dotenv, environ, command, starts, says", [c[1:] for c in CROSS_KEY],
                         ids=[c[0] for c in CROSS_KEY])
def test_a_value_refused_for_another_key_s_sake_is_blamed_on_where_it_was_set(tmp_path, config, dotenv, environ,
                                                                               command, starts, says):
    """A value refused for another key's sake (a mode and a venue kind that no start takes, a bot token without the
    chat id it writes to) names where the value at fault was set (file and line, .env line and variable, or
    variable), as every configuration error does, and where the other one was, or that it is the default."""
    (tmp_path / "config.toml").write_text(config)
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    first = (config, command) == (CROSS_KEY[0][1], CROSS_KEY[0][4])  # the first as a real process
    res = (run_ffe if first else ffe_in_process)(tmp_path, *command, env=ffe_env(**environ))
    assert res.returncode == 2, (res.stdout, res.stderr)
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("ffe: error: " + starts), line
    if says is not None:
        assert says in line, line
    assert "123456:abc" not in line
    assert res.stdout == ""


def test_config_check_accepts_valid_key_bindings(tmp_path):
    write_config(tmp_path, '{pause = "space", kill = "X,ctrl+k"}')
    res = ffe_in_process(tmp_path, "config", "check")  # a real process checks a valid configuration below
    assert res.returncode == 0, res.stderr
    assert "[tui]" in res.stdout


def test_config_check_into_a_pipe_whose_reader_is_gone_ends_quietly(tmp_path):
    write_config(tmp_path, "{}")
    r, w = os.pipe()
    proc = forked_ffe.Popen(ffe_cmd("config", "check"), cwd=tmp_path, env=ffe_env(), stdout=w,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(w)
    os.close(r)  # the reader went away before ffe wrote a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_config_check_piped_into_head_ends_quietly(tmp_path):
    write_config(tmp_path, "{}")
    cmd = " ".join(ffe_cmd("config", "check")) + " | head -n 1"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=tmp_path, env=ffe_env(), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "# ffe effective configuration\n"
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr


def test_config_check_refuses_a_monitor_open_to_the_network_without_a_token_as_the_start_does(tmp_path):
    (tmp_path / "config.toml").write_text("[monitor]\nport = 0\n")
    (tmp_path / ".env").write_text("FFE_MONITOR__HOST=0.0.0.0\n")
    says = "ffe: error: .env:1: FFE_MONITOR__HOST: monitor.host = '0.0.0.0' is reachable from the network: set "
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "1")):
        res = run_ffe(tmp_path, *command)
        assert res.returncode == 2, (command, res.stderr)
        assert res.stderr.strip().splitlines()[-1].startswith(says), (command, res.stderr)
        assert res.stdout == ""
    assert not (tmp_path / "data" / "ffe.db").exists(), "nothing started"
    (tmp_path / ".env").write_text("FFE_MONITOR__HOST=0.0.0.0\nFFE_MONITOR__TOKEN=a-long-bearer-token-42\n")
    assert ffe_in_process(tmp_path, "config", "check").returncode == 0


def test_a_monitor_host_name_without_a_token_is_not_said_to_be_reachable_for_sure(tmp_path):
    """A name is resolved by the start, on its machine (a name that does not resolve here may there): without a token
    it is refused as it may be reachable from the network, not said to be."""
    (tmp_path / "config.toml").write_text('[monitor]\nhost = "no-such-host.invalid"\n')
    res = ffe_in_process(tmp_path, "config", "check")
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "ffe: error: config.toml:2: monitor.host = 'no-such-host.invalid' is no loopback address and may be reachable "
        "from the network: set FFE_MONITOR__TOKEN (a bearer token) in .env or the environment, or bind to 127.0.0.1"]


def test_a_bad_key_map_from_the_environment_is_named_so_and_refused_by_a_headless_run_too(tmp_path):
    """`[tui] keys` given by FFE_TUI__KEYS: the error names the variable, as every other environment error does;
    and `ffe run --headless` refuses what `ffe config check` and the console refuse (docs/config.md)."""
    (tmp_path / "config.toml").write_text('[engine]\napproval = "auto"\n')
    env = ffe_env(FFE_TUI__KEYS='{"pause": "ctrl+c"}')
    for args in (("config", "check"), ("run", "--headless", "--max-bars", "2")):
        res = run_ffe(tmp_path, *args, env=env)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        [line] = res.stderr.strip().splitlines()
        assert line.startswith("ffe: error: environment: FFE_TUI__KEYS: tui.keys.pause: 'ctrl+c' cannot be used"), line
    assert not (tmp_path / "data").exists()


def test_config_check_names_a_database_a_newer_ffe_wrote_as_one_the_next_start_stops_on(tmp_path):
    """The configuration is valid, the database beside it is not one this release can start on (a newer ffe wrote
    it): said in a comment, as for a damaged one, with the exit code the start will have."""
    import sqlite3

    run = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(tmp_path / "data" / "ffe.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    proc = run_ffe(tmp_path, "config", "check")
    assert proc.returncode == 0, proc.stderr
    comment = proc.stdout.strip().splitlines()[-1]
    assert comment.startswith("# ") and "schema version 99 is newer" in comment and "(exit 2)" in comment, comment
