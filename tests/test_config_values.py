"""Values that read well one by one but could never work are refused at load, by `ffe config check` and by the
start alike: one line naming the source (file:line, or the variable) and the key, exit 2, nothing started. A symbol
quoted in another currency than the account's (`venue.quote`), an alert URL that is not an http(s) URL with a host
(without ever showing it: it is a secret), a `monitor.host` that is neither a host name nor an IP address, an
`ensemble.min_votes` that the providers (those listed, or the default ones) can never reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ffe_env, ffe_in_process, run_ffe

# (id, config.toml, .env, environment, what the line starts with after "ffe: error: ", what it also says, secret)
REFUSED = [
    ("a symbol in another quote", '[venue]\nquote = "USDT"\n\n[engine]\nsymbols = ["BTC/USDT", "ETH/EUR"]\n', "", {},
     "config.toml:5: engine.symbols[1]: ", "venue.quote", None),
    ("the quote of no symbol", '[venue]\nquote = "EUR"\n', "", {},
     "config.toml:2: venue.quote: ", "engine.symbols[0]", None),
    ("symbols from the environment", "", "", {"FFE_ENGINE__SYMBOLS": "BTC/USDT,ETH/BTC"},
     "environment: FFE_ENGINE__SYMBOLS: engine.symbols[1]: ", "venue.quote", None),
    ("an empty symbol between commas", "", "", {"FFE_ENGINE__SYMBOLS": "BTC/USDT,,ETH/USDT"},
     "environment: FFE_ENGINE__SYMBOLS: ", "empty", None),
    ("a webhook url with spaces", "", "FFE_ALERTS__WEBHOOK_URL=not a url\n", {},
     ".env:1: FFE_ALERTS__WEBHOOK_URL: ", "http", "not a url"),
    ("an ftp slack url", "", "", {"FFE_ALERTS__SLACK_URL": "ftp://hooks.example.com/x"},
     "environment: FFE_ALERTS__SLACK_URL: ", "http", "ftp://hooks.example.com/x"),
    ("a bare word discord url", "", "# alerts\nFFE_ALERTS__DISCORD_URL=discordhook\n", {},
     ".env:2: FFE_ALERTS__DISCORD_URL: ", "http", "discordhook"),
    ("a heartbeat url with no host", "", "FFE_ALERTS__HEARTBEAT_URL=https:///ping/abc\n", {},
     ".env:1: FFE_ALERTS__HEARTBEAT_URL: ", "http", "https:///ping/abc"),
    ("a telegram api with no host", '[alerts]\ntelegram_api = "http://:443/"\n', "", {},
     "config.toml:2: alerts.telegram_api: ", "http", None),
    ("a host with spaces", '[monitor]\nhost = "not a host"\n', "", {},
     "config.toml:2: monitor.host: ", "host name or an IP address", None),
    ("a host that is an URL", '[monitor]\nenabled = true\nhost = "http://127.0.0.1"\n', "", {},
     "config.toml:3: monitor.host: ", "host name or an IP address", None),
    ("an IP address out of range", "", "", {"FFE_MONITOR__HOST": "300.1.2.3"},
     "environment: FFE_MONITOR__HOST: ", "host name or an IP address", None),
    # A NUL or another control character in a path, an URL or a credential sent in a header is refused at load: the
    # OS call, the URL parser or the HTTP request would fail at start, after the configuration was approved.
    ("a NUL in the control socket", '[control]\nsocket = "/tmp/ffe-a\\u0000b.sock"\n', "", {},
     "config.toml:2: control.socket: ", "NUL", None),
    ("a NUL in an exchange URL", '[exchange.api_urls]\npublic = "https://gw.example.com/api\\u0000x"\n', "", {},
     "config.toml:2: exchange.api_urls.public: ", "http", None),
    ("a control character in the telegram api", '[alerts]\ntelegram_api = "https://api.example.org/\\u0007"\n', "",
     {}, "config.toml:2: alerts.telegram_api: ", "http", None),
    ("a control character in the llm url", '[ensemble.llm]\nbase_url = "http://127.0.0.1:11434/v1\\u001b"\n', "",
     {}, "config.toml:2: ensemble.llm.base_url: ", "http", None),
    ("a control character in a webhook url", "", "", {"FFE_ALERTS__WEBHOOK_URL": "https://hooks.example.com/a\x01b"},
     "environment: FFE_ALERTS__WEBHOOK_URL: ", "control character", "hooks.example.com"),
    ("a control character in the api key", "", "", {"FFE_EXCHANGE__API_KEY": "key\x01secretpart"},
     "environment: FFE_EXCHANGE__API_KEY: ", "control character", "secretpart"),
    ("a tab in the monitor token", "", 'FFE_MONITOR__TOKEN="tok\\ten-secretpart"\n', {},
     ".env:1: FFE_MONITOR__TOKEN: ", "control character", "secretpart"),
    # Refused for another key's sake: named by its own source, with the other key's beside it (or `the default`).
    ("a quorum beyond the default providers", '[engine]\napproval = "auto"\n\n[ensemble]\nmin_votes = 5\n', "", {},
     "config.toml:5: ensemble.min_votes: ",
     "min_votes = 5 can never be reached with 4 provider(s) (ensemble.providers, the default)", None),
    ("providers below the default quorum", '[ensemble]\nproviders = ["trend"]\n', "", {},
     "config.toml:2: ensemble.providers: ",
     "min_votes = 2 can never be reached with 1 provider(s) (ensemble.min_votes, the default)", None),
    ("a quorum from .env beyond the providers of config.toml", '[ensemble]\nproviders = ["trend", "momentum"]\n',
     "FFE_ENSEMBLE__MIN_VOTES=5\n", {}, "config.toml:2: ensemble.providers: ",
     "min_votes = 5 can never be reached with 2 provider(s) (ensemble.min_votes from .env:1 FFE_ENSEMBLE__MIN_VOTES)",
     None),
    ("a telegram token from .env beside an empty chat in config.toml", '[alerts]\ntelegram_chat_id = ""\n',
     "FFE_ALERTS__TELEGRAM_TOKEN=tok-secretpart\n", {}, "config.toml:2: alerts.telegram_chat_id: ",
     "(alerts.telegram_token from .env:1 FFE_ALERTS__TELEGRAM_TOKEN)", "secretpart"),
    ("a quorum beyond the providers from the environment", "", "", {"FFE_ENSEMBLE__MIN_VOTES": "5"},
     "environment: FFE_ENSEMBLE__MIN_VOTES: ", "can never be reached with 4 provider(s)", None),
    # A number from the environment is written as a number is: Python would read 1_0 as 10 and a full-width digit
    # as a digit, and int() a float's text; a typo there would be a limit ten times what was meant.
    ("an integer with an underscore", "", "", {"FFE_RISK__MAX_OPEN_POSITIONS": "1_0"},
     "environment: FFE_RISK__MAX_OPEN_POSITIONS: ", "a whole number", None),
    ("an integer in full-width digits", "", "FFE_RISK__MAX_OPEN_POSITIONS=\uff13\n", {},
     ".env:1: FFE_RISK__MAX_OPEN_POSITIONS: ", "a whole number", None),
    ("an integer written as a float", "", "", {"FFE_RISK__MAX_DAILY_TRADES": "3.0"},
     "environment: FFE_RISK__MAX_DAILY_TRADES: ", "a whole number", None),
    ("a number with an underscore", "", "", {"FFE_RISK__MAX_POSITION_PCT": "1_0"},
     "environment: FFE_RISK__MAX_POSITION_PCT: ", "a number", None),
    # A .env saved as UTF-16 without a byte-order mark reads as UTF-8 with a NUL after every character: each name
    # would then be another program's variable, passed over, and every setting in it silently dropped.
    ("a .env in UTF-16", "", "".join(c + "\0" for c in "FFE_RISK__MAX_POSITION_PCT=1\n"), {},
     ".env:1: ", "NUL", None),
    # exchange.options go to ccxt as they are: what ccxt would read as something else than was written is refused.
    ("a receive window as text", '[exchange]\noptions = {recvWindow = "60000"}\n', "", {},
     "config.toml:2: exchange.options: ", "recvWindow", None),
    ("a receive window of NaN", '[exchange]\noptions = {recvWindow = nan}\n', "", {},
     "config.toml:2: exchange.options: ", "recvWindow", None),
    ("an infinite option", '[exchange]\noptions = {nested = {deeper = {x = 1e400}}}\n', "", {},
     "config.toml:2: exchange.options: ", "nested.deeper.x", None),
    ("a credential in the options", '[exchange]\noptions = {headers = {Authorization = "Bearer tok-secretpart"}}\n',
     "", {}, "config.toml:2: exchange.options: ", "headers.Authorization", "secretpart"),
    ("a secret in the options", "", "", {"FFE_EXCHANGE__OPTIONS__secret": "secretpart-42"},
     "environment: FFE_EXCHANGE__OPTIONS__secret: ", "FFE_EXCHANGE__SECRET", "secretpart"),
    # An exchange feed's exchange.id that ccxt does not know: said by `ffe config check` as by the start, naming
    # where it was set (the deploy that followed a clean check failed its start otherwise).
    ("an exchange id ccxt does not know", '[market]\nsource = "exchange"\n\n[exchange]\nid = "binanse"\n', "", {},
     "config.toml:5: exchange.id: ", "'binanse' is not a ccxt exchange id", None),
    ("an exchange id ccxt does not know, from the environment", '[market]\nsource = "exchange"\n', "",
     {"FFE_EXCHANGE__ID": "binanse"}, "environment: FFE_EXCHANGE__ID: exchange.id: ",
     "'binanse' is not a ccxt exchange id", None),
    # Credentials under other spellings than the plain words: a name that holds one of them is one.
    *[(f"a credential named {name} in the options", f'[exchange]\noptions = {{{option} = "secretpart-4242"}}\n',
       "", {}, "config.toml:2: exchange.options: ", shown, "secretpart")
      for name, option, shown in [("apiSecret", "apiSecret", "apiSecret"), ("secretKey", "secretKey", "secretKey"),
                                  ("X-MBX-APIKEY", 'headers = {"X-MBX-APIKEY" = "x"}, k', "headers.X-MBX-APIKEY"),
                                  ("twofa", "twofa", "twofa"), ("passphrase", "passphrase", "passphrase"),
                                  ("accessToken", "accessToken", "accessToken")]],
]


@pytest.mark.parametrize("config, dotenv, environ, starts, says, secret", [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_a_value_that_cannot_work_is_refused_by_check_and_by_the_start(tmp_path, config, dotenv, environ, starts,
                                                                       says, secret):
    (tmp_path / "config.toml").write_text(config)
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    env = ffe_env(**environ)
    ffe = run_ffe if config == REFUSED[0][1] else ffe_in_process  # the first as a real process
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "3")):
        proc = ffe(tmp_path, *command, env=env)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        [line] = [x for x in proc.stderr.splitlines() if x.strip()]
        where = line.removeprefix("ffe: error: ")
        if where.startswith(str(tmp_path)):
            where = where[len(str(tmp_path)) + 1:]
        assert where.startswith(starts) and says in where, line
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        if secret is not None:
            assert secret not in proc.stderr, line
        assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()


ACCEPTED = [
    ('[venue]\nquote = "EUR"\n\n[engine]\nsymbols = ["BTC/EUR", "ETH/EUR"]\n', {}),
    ("", {"FFE_ALERTS__WEBHOOK_URL": "https://hooks.example.com/services/T0/B0?x=1",
          "FFE_ALERTS__HEARTBEAT_URL": "http://127.0.0.1:8080/ping", "FFE_ALERTS__SLACK_URL": "https://[::1]:8443/s",
          "FFE_ALERTS__DISCORD_URL": "https://discord.com/api/webhooks/1/abc"}),
    ('[monitor]\nhost = "localhost"\n', {}),
    ('[monitor]\nhost = "LOCALHOST."\n', {}),  # a name in any case, fully qualified: loopback still
    ('[monitor]\nhost = "0.0.0.0"\n', {"FFE_MONITOR__TOKEN": "a-long-bearer-token-42"}),  # open: a token
    ('[monitor]\nhost = "::1"\n', {}),
    ('[monitor]\nhost = "monitor-1.internal.example.com"\n', {"FFE_MONITOR__TOKEN": "a-long-bearer-token-42"}),
    ('[exchange]\noptions = {recvWindow = 5000, adjustForTimeDifference = true}\n',
     {"FFE_RISK__MAX_OPEN_POSITIONS": " 3", "FFE_RISK__MAX_POSITION_PCT": "2.5e0", "FFE_MARKET__SEED": "+7"}),
]


@pytest.mark.parametrize("config, environ", ACCEPTED, ids=["symbols in the account's quote", "http(s) urls",
                                                           "localhost", "localhost in capitals", "any IPv4", "IPv6 loopback", "a host name",
                                                           "exchange options and numbers"])
def test_values_that_can_work_pass_the_check(tmp_path: Path, config, environ):
    (tmp_path / "config.toml").write_text(config)
    proc = ffe_in_process(tmp_path, "config", "check", env=ffe_env(**environ))
    assert proc.returncode == 0, proc.stderr
