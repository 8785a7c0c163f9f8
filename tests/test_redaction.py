"""Secrets and the records. A value too short to be a secret (`true`, `0000`, `USDT`) is refused at load, in one
line naming the key, before anything is recorded. A configured secret is taken out of the text of the records, of
/health and of the events the console is sent, and nothing else of a record changes: every record stays one whole
JSON object with its own ts, seq, event and fields, even when the secret's text is also a piece of every record's
JSON or holds characters JSON escapes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import tomllib

import aiohttp
import pytest

from conftest import (BTC_CSV, audit_lines, db_rows, engine_session, ffe_env, ffe_in_process, make_settings, run_ffe,
                      sample_head, wait_until)
from ffe_engine import backup as bk
from ffe_engine.events import ErrorEvent

REDACTED = "********"
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# A piece of every record's JSON (`{"ts":"...","seq":1,...`): a secret may be any text, this one too.
LIKE_JSON = '","seq":'
# Characters JSON escapes: in an encoded record the secret's text is not the secret's own.
ESCAPED = 'pa"ss\\wo-rd-Zq81'


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert lines[0].startswith("ffe: error: "), lines[0]
    return lines[0]


def assert_whole(records: list[dict]) -> None:
    assert [r["seq"] for r in records] == list(range(records[0]["seq"], records[0]["seq"] + len(records)))
    for r in records:
        assert TS.fullmatch(r["ts"]), r
        assert REDACTED not in json.dumps(r), r  # the secret was in no record: nothing was masked


def strings(v) -> list[str]:
    """Every string value in decoded JSON (not its keys)."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, dict):
        return [s for x in v.values() for s in strings(x)]
    if isinstance(v, list):
        return [s for x in v for s in strings(x)]
    return []


# ---------------------------------------------------------------------------------------------------- too weak
def test_a_monitor_token_too_short_to_be_a_secret_stops_the_start_in_one_line(tmp_path):
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "400", env=ffe_env(FFE_MONITOR__TOKEN="true"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert line.startswith("ffe: error: environment: FFE_MONITOR__TOKEN: ") and "at least 8 characters" in line, line
    assert "true" not in line.lower()
    assert not (tmp_path / "logs" / "audit.jsonl").exists() and not (tmp_path / "data" / "ffe.db").exists()


@pytest.mark.parametrize("name, value", [
    ("FFE_EXCHANGE__API_KEY", "0000"), ("FFE_EXCHANGE__SECRET", "2026"), ("FFE_EXCHANGE__PASSWORD", "1234567"),
    ("FFE_ENSEMBLE__LLM__API_KEY", "null"), ("FFE_MONITOR__TOKEN", "USDT"), ("FFE_MONITOR__TOKEN", "abc"),
    ("FFE_ALERTS__TELEGRAM_TOKEN", "x"),
])
def test_every_secret_too_short_to_be_one_is_refused_by_config_check(tmp_path, name, value):
    (tmp_path / "config.toml").write_text("")
    proc = ffe_in_process(tmp_path, "config", "check", env=ffe_env(**{name: value}))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert line.startswith(f"ffe: error: environment: {name}: "), line
    assert value not in line.split(f"{name}: ", 1)[1], line
    assert proc.stdout == ""


@pytest.mark.parametrize("value", ["short", "value", "shorter"])
def test_a_secret_too_short_that_is_a_word_of_the_refusal_is_still_told_what_to_change(tmp_path, value):
    """A refusal whose words hold the secret's text is not shown (tests/test_config.py), but the operator is still
    told what a secret must be, in one line naming the file, line and key (unless those words hold it too)."""
    (tmp_path / "config.toml").write_text("")
    (tmp_path / ".env").write_text(f"FFE_EXCHANGE__SECRET={value}\n")
    proc = ffe_in_process(tmp_path, "config", "check")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert line.startswith("ffe: error: .env:1: FFE_EXCHANGE__SECRET: "), line
    assert "at least 8 characters" in line, line


def test_a_backtest_with_a_key_too_short_to_be_a_secret_stops_in_one_line(tmp_path):
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "--report", "r.json",
                   env=ffe_env(FFE_ENSEMBLE__LLM__API_KEY="null"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert line.startswith("ffe: error: environment: FFE_ENSEMBLE__LLM__API_KEY: "), line
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------------------------------- records whole
def test_a_secret_that_is_a_piece_of_every_records_json_leaves_every_record_whole(tmp_path):
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "60", env=ffe_env(FFE_MONITOR__TOKEN=LIKE_JSON))
    assert proc.returncode == 0, proc.stderr[-3000:]
    audit = tmp_path / "logs" / "audit.jsonl"
    records = audit_lines(audit)
    assert records[0]["seq"] == 1 and {"run", "decision"} <= {r["event"] for r in records}
    assert_whole(records)
    stored = [bytes(r[0]) if not isinstance(r[0], str) else r[0].encode()
              for r in db_rows(tmp_path / "data" / "ffe.db", "SELECT data FROM events ORDER BY seq")]
    assert stored == audit.read_bytes().splitlines()  # the database holds the same bytes
    verify = run_ffe(tmp_path, "audit", "verify", env=ffe_env(FFE_MONITOR__TOKEN=LIKE_JSON))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "10", env=ffe_env(FFE_MONITOR__TOKEN=LIKE_JSON))
    assert again.returncode == 0, again.stderr[-3000:]  # and the next start reads them back
    assert_whole(audit_lines(audit))


def test_a_backtest_with_a_secret_that_is_a_piece_of_every_records_json_writes_whole_records(tmp_path):
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    proc = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "--report", "r.json",
                   env=ffe_env(FFE_ENSEMBLE__LLM__API_KEY=LIKE_JSON))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    records = audit_lines(tmp_path / report["audit"])
    assert records[0]["seq"] == 1 and "decision" in {r["event"] for r in records}
    assert_whole(records)


# ---------------------------------------------------------------------------------------------------- secret out
async def test_a_secret_json_escapes_is_taken_out_of_the_record_and_the_event_the_console_gets(tmp_path):
    settings = make_settings(tmp_path, monitor={"port": 0, "token": ESCAPED})
    async with engine_session(settings) as host:
        sub = host.subscribe(maxlen=100)
        host.engine.bus.publish(ErrorEvent(message=f"venue said: bad signature for {ESCAPED}", where="venue"))
        await host.audit.flush()
        sent = [ev for ev in sub.drain() if ev.name == "error"]
    raw = (tmp_path / "logs" / "audit.jsonl").read_bytes()
    escaped = json.dumps(ESCAPED)[1:-1].encode()
    assert ESCAPED.encode() not in raw and escaped not in raw
    [error] = [r for r in audit_lines(tmp_path / "logs" / "audit.jsonl") if r["event"] == "error"]
    assert error["message"] == f"venue said: bad signature for {REDACTED}" and error["where"] == "venue"
    assert [ev.message for ev in sent] == [f"venue said: bad signature for {REDACTED}"]


@pytest.mark.parametrize("token, error, problem", [
    ('"degraded"', "exchange timeout", "breaker open on paper: exchange timeout"),
    (ESCAPED, f"bad key {ESCAPED}", f"breaker open on paper: bad key {REDACTED}"),
], ids=["a piece of the verdict's JSON", "JSON escapes it"])
async def test_health_takes_a_secret_out_of_the_verdict_and_leaves_it_whole(tmp_path, token, error, problem):
    settings = make_settings(tmp_path, monitor={"port": 0, "token": token},
                             breaker={"failure_threshold": 1, "recovery_timeout_s": 600})
    async with engine_session(settings) as host:
        host.engine.breaker.record_failure(error)
        async with aiohttp.ClientSession() as s:
            async with s.get(host.monitor.url + "/health", headers={"Authorization": f"Bearer {token}"}) as r:
                status, body = r.status, await r.text()
        await asyncio.sleep(0)
    verdict = json.loads(body)
    assert not [s for s in strings(verdict) if token in s]  # in no value (its text may be a piece of the JSON)
    assert status == 503 and verdict["status"] == "degraded" and verdict["problems"] == [problem]


def test_config_check_and_a_backup_mask_a_secret_in_values_only_and_stay_the_toml_they_were(tmp_path):
    """The effective configuration, printed by `ffe config check` and kept in a backup: a secret that is also a key's
    name leaves the key as it is, and one JSON escapes is masked where it was copied into an ordinary value."""
    env = ffe_env(FFE_EXCHANGE__PASSWORD="timeframe", FFE_EXCHANGE__SECRET=ESCAPED,
                  FFE_EXCHANGE__OPTIONS=json.dumps({"note": f"key {ESCAPED}"}))
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = ffe_in_process(tmp_path, "config", "check", env=env)
    assert check.returncode == 0, check.stderr
    backup = run_ffe(tmp_path, "backup", "--to", str(tmp_path / "b"), env=env)
    assert backup.returncode == 0, backup.stderr
    (path,) = (tmp_path / "b").glob("ffe-backup-*.tar.zst")
    (tmp_path / "x").mkdir()
    bk.unpack(path, tmp_path / "x")
    for text in (check.stdout, (tmp_path / "x" / bk.CONFIG_NAME).read_text()):
        config = tomllib.loads(text)
        assert config["engine"]["timeframe"] == "1m"
        assert config["exchange"]["password"] == config["exchange"]["secret"] == REDACTED
        assert config["exchange"]["options"] == {"note": f"key {REDACTED}"}
        assert not [s for s in strings(config) if ESCAPED in s]


KEY = "APIKEYsecretAAAA1111"


def test_an_error_line_that_quotes_what_was_typed_takes_a_secret_out(tmp_path, spawn_ffe):
    """An operator pastes the API key where a symbol or an id goes (a clipboard mix-up), or a file holds it: the
    error line quotes what it was given, and the secret is masked there as in the logs: in `ffe ctl`'s refusal
    (from the engine's answer too, asked by a client whose settings do not hold the secret), in a CSV's bad cell,
    in `ffe audit show`'s "no decision"."""
    from ffe_engine.control import request

    env = ffe_env(FFE_EXCHANGE__API_KEY=KEY, FFE_MARKET__SPEED="20")
    engine = spawn_ffe(tmp_path, "run", "--headless", env=env)
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    close = run_ffe(tmp_path, "ctl", "close", KEY, "--yes", env=env)
    assert close.returncode == 1 and KEY not in close.stdout + close.stderr, close.stderr
    assert f"no open position in {REDACTED}" in close.stderr, close.stderr
    answer = asyncio.run(request(tmp_path / "data" / "ffe.sock", "close", {"symbol": KEY}, timeout=30))
    assert KEY not in json.dumps(answer) and REDACTED in answer["error"], answer
    shown = run_ffe(tmp_path, "audit", "show", KEY, env=env)
    assert shown.returncode == 2 and KEY not in shown.stdout + shown.stderr, shown.stderr
    lines = sample_head(BTC_CSV, 60)
    lines[20] = lines[20].replace(lines[20].split(",")[1], KEY, 1)
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(lines))
    bad = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", env=env)
    line = one_error_line(bad.stderr)
    assert KEY not in line and REDACTED in line and "BTC-USD_1h.csv:21:" in line, line
    skipped = run_ffe(tmp_path, "backtest", "BTC-USD_1h.csv", "--lenient", env=env)
    assert skipped.returncode == 0, skipped.stderr
    assert KEY not in skipped.stdout + skipped.stderr and "line 21:" in skipped.stderr, skipped.stderr


def test_an_argument_mistake_said_before_the_settings_are_read_takes_a_secret_out(tmp_path):
    """A key pasted where an action, a number or a file goes: argparse's refusal, said before any settings are read,
    quotes it; the secrets of the environment and of the .env file are taken out of it all the same."""
    (tmp_path / ".env").write_text(f"FFE_EXCHANGE__SECRET={KEY}x\n")
    env = ffe_env(FFE_EXCHANGE__API_KEY=KEY)
    for args in (("ctl", KEY), ("ctl", "status", "--timeout", KEY), ("backtest", "--list", KEY + "x"),
                 ("config", "check", "--config", f"/tmp/{KEY}")):
        proc = run_ffe(tmp_path, *args, env=env)
        assert proc.returncode == 2, proc.stderr
        assert KEY not in proc.stdout + proc.stderr and REDACTED in proc.stderr, (args, proc.stderr)


@pytest.mark.parametrize("where", ["--env-file", "--config"])
def test_an_argument_mistake_takes_out_the_secrets_of_the_env_file_the_command_names(tmp_path, where):
    """The .env file a command reads is the one it names (`--env-file`), or the one beside the config file it names
    (`--config`, as under systemd): its secrets are taken out of an argument mistake too, not only ./.env's."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.toml").write_text("")
    (tmp_path / "conf" / ("prod.env" if where == "--env-file" else ".env")).write_text(f"FFE_EXCHANGE__SECRET={KEY}\n")
    named = ("--env-file", "conf/prod.env") if where == "--env-file" else ("--config", "conf/config.toml")
    for args in (("report", "trades", "--last", KEY, *named), ("ctl", KEY, *named), ("run", "--max-bars", KEY, *named)):
        proc = run_ffe(tmp_path, *args, env=ffe_env())
        assert proc.returncode == 2, proc.stderr
        assert KEY not in proc.stdout + proc.stderr and REDACTED in proc.stderr, (args, proc.stderr)


def test_an_argument_mistake_beside_a_env_that_is_a_fifo_is_said_at_once(tmp_path):
    """A ./.env that is a FIFO is never opened by the look for secrets an argument mistake makes: it would wait on it
    for ever, deaf to SIGTERM (a device, read without end, is looked at the same way)."""
    os.mkfifo(tmp_path / ".env")
    (tmp_path / "config.toml").write_text("")
    for args in (("rnu",), ("report", "trades", "--last", "many"), ("run", "--headless", "--max-bars", "x")):
        proc = run_ffe(tmp_path, *args, env=ffe_env(), timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert len([x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")]) == 1, proc.stderr


def test_a_env_that_is_a_directory_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / ".env").mkdir()
    (tmp_path / "config.toml").write_text("")
    for args in (("audit", "tail", "-n", "3"), ("audit", "tail", "-n", "x"), ("doctor", "--env-file", str(tmp_path))):
        proc = run_ffe(tmp_path, *args, env=ffe_env())
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len([x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")]) == 1, proc.stderr


@pytest.mark.parametrize("line", [f"FFE_EXCHANGE__SECRET={KEY} # my key", f'FFE_EXCHANGE__SECRET="{KEY}"  # mine',
                                  "FFE_EXCHANGE__SECRET=${THE_KEY}"], ids=["comment", "quoted, comment", "expanded"])
def test_an_argument_mistake_takes_out_a_secret_however_the_env_line_writes_it(tmp_path, line):
    """A value as python-dotenv reads it (an inline comment, quotes, a ${VAR} of the file) is the secret."""
    (tmp_path / ".env").write_text(f"{line}\n")
    env = ffe_env()
    env["THE_KEY"] = KEY  # a variable of the environment the file's ${THE_KEY} takes
    proc = run_ffe(tmp_path, "audit", "tail", "-n", KEY, env=env)
    assert proc.returncode == 2, proc.stderr
    assert KEY not in proc.stdout + proc.stderr and REDACTED in proc.stderr, proc.stderr


@pytest.mark.parametrize("how", ["not UTF-8", "over 4 MiB"])
def test_an_argument_mistake_takes_out_a_secret_of_a_env_the_settings_would_refuse(tmp_path, how):
    """A .env the settings refuse (a comment saved in Latin-1, a file past 4 MiB) still holds the secret that an
    argument mistake may quote: taken out all the same."""
    text = f"FFE_EXCHANGE__API_KEY={KEY}\n".encode()
    extra = "# Zugangsdaten f\u00fcr Binance\n".encode("latin-1") if how == "not UTF-8" else b"#" * (5 << 20) + b"\n"
    (tmp_path / ".env").write_bytes(text + extra)
    proc = run_ffe(tmp_path, "ctl", "status", "--timeout", KEY, env=ffe_env())
    assert proc.returncode == 2, proc.stderr
    assert KEY not in proc.stdout + proc.stderr and REDACTED in proc.stderr, proc.stderr
