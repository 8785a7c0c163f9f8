"""Bad input gets one clear line and exit code 2, and loses nothing already recorded: a malformed CSV row, a typo
in a config table; secrets set in .env never show in `ffe config check`, in a headless run's stderr, audit file,
events table or database, even when a reply from outside echoes one back."""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import shlex
import shutil
import threading
from pathlib import Path

import pytest

import forked_ffe
from conftest import (BTC_CSV, ETH_CSV, audit_lines, sample_head, db_rows, db_value, ffe_env, ffe_in_process,
                      run_bounded, run_ffe, wait_until)
from ffe_engine import logs
from ffe_engine.clock import WallClock
from ffe_engine.audit import setup_logging
from ffe_engine.redact import REDACTED, Redactor
from ffe_engine.events import ErrorEvent, EventBus


def snapshot(*dirs: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in dirs if d.exists() for p in sorted(d.rglob("*")) if p.is_file()}


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert lines[0].startswith("ffe: error: "), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------------- CSV
@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A directory where a paper engine already ran and recorded its decisions and orders."""
    cwd = tmp_path_factory.mktemp("recorded")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "60")
    assert proc.returncode == 0, proc.stderr
    assert db_value(cwd / "data" / "ffe.db", "SELECT COUNT(*) FROM decisions") > 0
    return cwd


def write_csv_with_bad_line_57(path: Path, bad: str) -> Path:
    lines = sample_head(BTC_CSV, 99)  # header (line 1) and 99 rows
    if bad == "not a number":
        ts = lines[56].split(",")[0]
        lines[56] = f"{ts},7200.5,7210.0,oops,7205.0,12.5\n"
    elif bad == "missing columns":
        lines[56] = lines[56].split(",")[0] + ",7200.5,7210.0\n"
    elif bad == "time going back":
        lines[56] = lines[50].split(",")[0] + "," + lines[56].split(",", 1)[1]
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("bad", ["not a number", "missing columns", "time going back"])
def test_a_malformed_csv_row_57_exits_2_naming_file_and_line_and_loses_nothing(recorded, bad):
    csv = write_csv_with_bad_line_57(recorded / f"BTC-USD_bad_{bad.replace(' ', '_')}.csv", bad)
    before = snapshot(recorded / "data", recorded / "logs")
    proc = run_ffe(recorded, "backtest", csv.name)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"{csv.name}:57:" in line, line
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(recorded / "data", recorded / "logs") == before  # the live records are untouched
    assert not (recorded / "data" / "backtests").exists()  # no run was started


def scaled_sample(path: Path, scale: float, rows: int = 400) -> Path:
    """The BTC sample's first rows with every price times `scale`: positive and finite all the same."""
    header, *lines = sample_head(BTC_CSV, rows)
    out = [header]
    for line in lines:
        ts, *prices, volume = line.rstrip("\n").split(",")
        out.append(",".join([ts, *(repr(float(p) * scale) for p in prices), volume]) + "\n")
    path.write_text("".join(out))
    return path


@pytest.mark.parametrize("scale", [1e304, 1e-304], ids=["near the largest float", "near the smallest"])
def test_a_csv_of_prices_ffe_cannot_compute_with_exits_2_naming_its_first_row_through_the_cache_too(tmp_path,
                                                                                                   scale):
    """Prices near 1e307 overflowed the indicators (a traceback, exit 1); near 1e-300 they underflowed and changed
    the trades without a word. Both are refused at load, in one line naming the file and row, the second time too
    (when the backtest cache could have answered) and with --lenient every row is skipped."""
    csv = scaled_sample(tmp_path / "M-USD_1h.csv", scale)
    said = []
    for _ in range(2):
        proc = run_ffe(tmp_path, "backtest", csv.name, "--records", "summary")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = one_error_line(proc.stderr)
        assert f"{csv.name}:2: open " in line and "price ffe computes with" in line, line
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        said.append(line)
    assert said[0] == said[1]
    assert not (tmp_path / "data" / "backtests").exists()  # no run was started
    proc = run_ffe(tmp_path, "backtest", csv.name, "--lenient", "--records", "summary")
    assert proc.returncode == 2 and "no usable rows: all 400 data rows are bad" in one_error_line(proc.stderr)


@pytest.mark.parametrize("where, stamp", [(402, "9999-12-31T23:00:00Z"), (2, "0001-01-01T00:00:00Z")],
                         ids=["past 2099 at the end", "before 1800 first"])
def test_a_csv_row_of_a_time_ffe_does_not_read_exits_2_naming_it_before_any_run_through_the_cache_too(
        tmp_path, where, stamp):
    """A last row at 9999-12-31T23:00Z passed the reader, then the report's close time (year 10000) was a
    traceback, exit 1, and the run was left behind as 'interrupted'; a first row at 0001-01-01 was a gap of 17.7
    million bars. Candle times are from 1800 to 2099: such a row is a bad row, one line naming the file and line,
    exit 2, before any run, the second time too (the cache could have answered)."""
    header, *rows = sample_head(BTC_CSV, 400)
    row = stamp + "," + rows[0].split(",", 1)[1]
    csv = tmp_path / "BIGDATE-USD_1h.csv"
    csv.write_text(header + "".join(rows + [row] if where > 2 else [row] + rows))
    said = []
    for _ in range(2):
        proc = run_ffe(tmp_path, "backtest", csv.name, "--records", "summary")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = one_error_line(proc.stderr)
        assert f"{csv.name}:{where}: timestamp '{stamp}' is " in line and "year of the candle times ffe reads" in line
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        said.append(line)
    assert said[0] == said[1]
    assert not (tmp_path / "data" / "backtests").exists()  # no run was started
    listed = run_ffe(tmp_path, "backtest", "--list")
    assert listed.returncode == 0 and "interrupted" not in listed.stdout, listed.stdout


def test_words_from_a_file_or_a_path_in_an_error_are_escaped_on_its_one_line(tmp_path):
    # A CSV header cell holding an escape sequence and a bell (a downloaded or damaged file) reached the terminal
    # as it was (the screen cleared, the title changed); a path holding a new line split the one line in two.
    csv = tmp_path / "BTC-USD_x.csv"
    csv.write_text("timestamp,open,high,low,close,\x1b[2J\x1b]0;owned\x07vol\n2024-01-01T00:00:00Z,1,1,1,1,1\n")
    proc = run_ffe(tmp_path, "backtest", str(csv))
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "\x1b" not in line and "\x07" not in line, line
    assert "\\x1b[2J\\x1b]0;owned\\x07vol" in line, line
    proc = run_ffe(tmp_path, "config", "check", "--config", "a\nb.toml")
    assert proc.returncode == 2
    assert "a\\nb.toml" in one_error_line(proc.stderr)


def test_a_csv_of_one_candle_exits_2_naming_the_file_and_starts_no_run(tmp_path):
    csv = tmp_path / "BTC-USD_one.csv"
    csv.write_text("".join(sample_head(BTC_CSV, 1)))
    proc = run_ffe(tmp_path, "backtest", csv.name)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert csv.name in line and "too few candles" in line, line
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "data" / "backtests").exists()  # no run was started
    listed = run_ffe(tmp_path, "backtest", "--list")
    assert listed.returncode == 0 and "interrupted" not in listed.stdout, listed.stdout


def test_files_of_different_timeframes_exit_2_naming_both_and_start_no_run(tmp_path):
    hourly = tmp_path / "BTC-USD_1h.csv"
    hourly.write_text("".join(sample_head(BTC_CSV, 30)))
    header, *rows = sample_head(ETH_CSV, 30)
    minutes = tmp_path / "ETH-USD_1m.csv"
    minutes.write_text(header + "".join(f"2020-01-01T00:{i:02d}:00Z,{row.split(',', 1)[1]}"
                                        for i, row in enumerate(rows)))
    proc = run_ffe(tmp_path, "backtest", hourly.name, minutes.name)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"{hourly.name} holds 1h candles" in line and f"{minutes.name} 1m" in line, line
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "data" / "backtests").exists()


@pytest.mark.parametrize("args, symbol", [
    (["BTCUSD_1h.csv"], "BTCUSD"),  # a file name without BASE-QUOTE
    (["FOO=BTCUSD_1h.csv"], "FOO"),
    (["BTC-USD_1h.csv", "XBTEUR=BTCUSD_1h.csv"], "XBTEUR"),  # not "must share one quote currency, got , USD"
])
def test_a_symbol_that_is_not_base_quote_exits_2_naming_it_and_starts_no_run(tmp_path, args, symbol):
    """Without a quote currency there is no cash to buy with: such a run would refuse every entry and end as if
    the strategy never traded. It is refused before any file is read."""
    rows = "".join(sample_head(BTC_CSV, 60))
    (tmp_path / "BTCUSD_1h.csv").write_text(rows)
    (tmp_path / "BTC-USD_1h.csv").write_text(rows)
    proc = run_ffe(tmp_path, "backtest", "--records", "summary", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"{symbol!r} is not a BASE/QUOTE symbol" in line and "BTCUSD_1h.csv" in line, line
    assert proc.stdout == ""
    assert not (tmp_path / "data").exists()  # no run, and nothing read into the cache


@pytest.mark.parametrize("arg, says", [
    ("=BTC-USD_1h.csv", "'=BTC-USD_1h.csv': bad market data argument: expected SYMBOL=FILE or FILE"),
    ("BTC/USD=", "'BTC/USD=': bad market data argument: expected SYMBOL=FILE or FILE"),
    ("_1h.csv", "_1h.csv: cannot tell the symbol from the file name; pass SYMBOL=FILE"),
    ("nonexistent.csv", "nonexistent.csv: cannot read: No such file"),
    ("", "'': bad market data argument: an empty file name (expected SYMBOL=FILE or FILE)"),
    ("candles", "candles: is a directory, not a CSV file"),
    ("BTC-USD_1h", "BTC-USD_1h: is a directory, not a CSV file"),
])
def test_a_market_data_argument_that_names_no_symbol_or_no_file_exits_2_in_one_line(tmp_path, arg, says):
    (tmp_path / "candles").mkdir()
    (tmp_path / "BTC-USD_1h").mkdir()
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 60)))
    (tmp_path / "_1h.csv").write_text("".join(sample_head(BTC_CSV, 60)))
    proc = run_ffe(tmp_path, "backtest", "--records", "summary", arg)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert says in line, line
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_a_report_path_that_cannot_be_written_exits_2_before_the_run(tmp_path, where):
    csv = tmp_path / "BTC-USD_1h.csv"
    csv.write_text("".join(sample_head(BTC_CSV, 60)))
    (tmp_path / "reports").mkdir()
    (tmp_path / "notes.txt").write_text("kept\n")
    target = "reports" if where == "a directory" else "notes.txt/r.json"
    proc = run_ffe(tmp_path, "backtest", "--records", "trades", csv.name, "--report", target)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"--report {target}" in line, line
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "backtests").exists()  # refused before the run
    assert (tmp_path / "notes.txt").read_text() == "kept\n" and not any((tmp_path / "reports").iterdir())


@pytest.mark.parametrize("target, says", [
    ("BTC-USD_1h.csv", "is an input file of the run"),
    ("config.toml", "is a file the settings are read from"),
    (".env", "is a file the settings are read from"),
    ("data/ffe.db", "is inside the data directory data"),
    ("data/report.json", "is inside the data directory data"),
    ("logs/audit.jsonl", "is inside the log directory logs"),
    ("copy.db", "is an SQLite database"),
    ("link.json", "is inside the data directory data"),
    ("copy.db-wal", "is the -wal file of copy.db"),
    ("copy.db-shm", "is the -shm file of copy.db"),
    ("copy.db-journal", "is the -journal file of copy.db"),
    ("log.bin", "is an SQLite write-ahead log"),
], ids=["the input", "the config", "the env file", "the database", "a new file beside it", "the audit trail",
        "a database elsewhere", "a link to the database", "the log of a database elsewhere",
        "the shared memory of a database elsewhere", "the journal of a database elsewhere", "a write-ahead log"])
def test_a_report_path_that_would_overwrite_the_records_or_the_inputs_is_refused_and_nothing_touched(
        recorded, tmp_path, target, says):
    # The account's records, its configuration and the run's own input are never a report: written over, the
    # database reads as "file is not a database" (or, under a running engine, as damaged).
    account = tmp_path / "account"
    shutil.copytree(recorded, account)
    (account / ".env").write_text("FFE_LOGGING__LEVEL=INFO\n")
    (account / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 60)))
    shutil.copyfile(account / "data" / "ffe.db", account / "copy.db")
    (account / "link.json").symlink_to(account / "data" / "ffe.db")
    # A write-ahead log holds committed transactions not yet in its database: it starts with no SQLite header.
    (account / "log.bin").write_bytes(bytes.fromhex("377f0682002de218") + bytes(24))
    before = snapshot(account)
    proc = run_ffe(account, "backtest", "--records", "summary", "BTC-USD_1h.csv", "--report", target)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"--report {target}: {says}" in line, line
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert snapshot(account) == before  # nothing written, nothing made
    assert not (account / "data" / "backtests").exists() and not (account / "data" / "cache").exists()


@pytest.mark.parametrize("options, target", [
    ((), ".env"), ((), "config.toml"), (("--config", "site/ffe.toml"), "site/.env"),
], ids=[".env", "config.toml", "the .env beside --config"])
def test_a_report_path_the_settings_would_be_read_from_is_refused_though_no_file_is_there_yet(
        tmp_path, options, target):
    # Written, the report would be read as settings by every later command, and refused as such.
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 60)))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "ffe.toml").write_text("")
    proc = ffe_in_process(tmp_path, "backtest", *options, "--records", "summary", "BTC-USD_1h.csv",
                          "--report", target)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"--report {target}: is a file the settings are read from" in line, line
    assert not (tmp_path / "data").exists() and not (tmp_path / target).exists()


def test_a_report_to_a_fifo_or_a_pipe_is_written_in_place(tmp_path):
    # A report piped on (a FIFO, `>(cmd)`, /dev/stdout) is the user's to read: written into it, never opened to be
    # read (a FIFO would block for good) nor replaced by a file beside it (a pipe has no directory to rename in).
    import os
    import subprocess
    import threading

    from conftest import ffe_cmd

    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 60)))
    args = ("backtest", "--records", "summary", "BTC-USD_1h.csv", "--report")
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        proc = run_ffe(tmp_path, *args, fifo.name, timeout=60)
    finally:
        if reader.is_alive():  # give the reader a writer and an end, so that it ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(got[0])["bars"] == 60 and fifo.is_fifo()

    proc = run_ffe(tmp_path, *args, "/dev/stdout", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert '"bars": 60' in proc.stdout

    line = " ".join(map(shlex.quote, ffe_cmd(*args))) + " >(cat > piped.json)"
    proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=ffe_env(), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert wait_until(lambda: (tmp_path / "piped.json").read_text().endswith("}"), timeout=10)
    assert json.loads((tmp_path / "piped.json").read_text())["bars"] == 60


def test_a_report_through_a_link_is_written_to_the_file_it_links_to(tmp_path):
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 60)))
    (tmp_path / "reports").mkdir()
    (tmp_path / "latest.json").symlink_to(Path("reports") / "latest.json")
    for rows in (59, 60):  # made through the link, then an earlier report written over through it
        (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, rows)))
        proc = run_ffe(tmp_path, "backtest", "--records", "summary", "BTC-USD_1h.csv", "--report", "latest.json")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "latest.json").is_symlink()
        assert json.loads((tmp_path / "reports" / "latest.json").read_text())["bars"] == rows


def test_lenient_skips_the_bad_row_and_counts_it(recorded, tmp_path):
    csv = write_csv_with_bad_line_57(tmp_path / "BTC-USD_lenient.csv", "not a number")
    proc = run_ffe(tmp_path, "backtest", "--lenient", csv.name, "--report", "r.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["bars"] == 98  # 99 rows less the bad one


def test_options_between_the_files_of_a_backtest_are_taken_as_options(tmp_path):
    # `ffe backtest A.csv --lenient B.csv`: the files are every positional argument, wherever the options stand.
    btc = write_csv_with_bad_line_57(tmp_path / "BTC-USD_lenient.csv", "not a number")
    eth = tmp_path / "ETH-USD_head.csv"
    eth.write_text("".join(sample_head(ETH_CSV, 99)))
    proc = ffe_in_process(tmp_path, "backtest", btc.name, "--lenient", eth.name, "--report", "r.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["bars"] == 98 + 99
    # An option it does not know is still refused between them, in one line.
    proc = ffe_in_process(tmp_path, "backtest", btc.name, "--lenien", eth.name)
    assert proc.returncode == 2 and "unrecognized arguments: --lenien" in one_error_line(proc.stderr), proc.stderr


# ---------------------------------------------------------------------------------------------------- config
CONFIG_WITH_TYPO = """\
mode = "paper"

[engine]
symbols = ["BTC/USDT"]

[risk]
min_confidence = 0.6
max_open_positons = 3
"""


@pytest.mark.parametrize("command", [("run", "--headless", "--max-bars", "5"), ("config", "check")],
                         ids=["run", "config check"])
def test_a_typo_inside_risk_exits_2_naming_the_key_file_and_line(tmp_path, command):
    (tmp_path / "config.toml").write_text(CONFIG_WITH_TYPO)
    proc = run_ffe(tmp_path, *command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert "risk.max_open_positons" in line and "config.toml:8" in line, line
    assert proc.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing was started


def test_a_typo_in_an_environment_variable_exits_2_naming_it(tmp_path):
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", env=ffe_env(FFE_RISK__MAX_OPEN_POSITONS="3"))
    assert proc.returncode == 2
    assert "FFE_RISK__MAX_OPEN_POSITONS" in one_error_line(proc.stderr)


# ---------------------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize("args, says", [
    (("ctl", "status", "--timeout", "0"), "argument --timeout: must be more than 0"),
    (("ctl", "frobnicate"), "argument action: invalid choice: 'frobnicate'"),
    (("run", "--max-bars", "x"), "argument --max-bars: not a whole number: 'x'"),
    # ASCII digits only, as config.toml and the environment take them: int() would read 1_0 as 10 and ٣ as 3.
    (("run", "--max-bars", "1_0"), "argument --max-bars: not a whole number: '1_0'"),
    (("audit", "tail", "-n", "\u0663"), "argument -n: not a whole number: '\u0663'"),
    (("report", "providers", "--last", "\uff13"), "argument --last: not a whole number: '\uff13'"),
    (("ctl", "status", "--timeout", "1_0"), "argument --timeout: not a number of seconds: '1_0'"),
    (("ctl", "status", "--timeout", "\u0663"), "argument --timeout: not a number of seconds: '\u0663'"),
    (("audit", "tail", "-n", "0" * 5000 + "1"), "argument -n: more digits than a whole number here can have (5001)"),
    (("ctl", "status", "--timeout", "++inf"), "argument --timeout: not a number of seconds: '++inf'"),
    (("audit", "show"), "the following arguments are required: DECISION_ID"),
    (("frob",), "invalid choice: 'frob'"),
    (("run", "--headles"), "unrecognized arguments: --headles"),
    (("--config", "config.toml", "config", "check"),
     "options go after the command: `ffe config check --config config.toml`"),
    (("--live", "backup"), "`ffe backup` takes no --live (options go after the command; see `ffe backup --help`)"),
    (("--headless", "--max-bars", "3", "config", "check"),
     "`ffe config check` takes no --headless, --max-bars (options go after the command; see `ffe config check "
     "--help`)"),
    (("--json", "doctor"), "`ffe doctor` takes no --json (options go after the command; see `ffe doctor --help`)"),
    (("--json", "--data-dir", "d", "report", "trades"),
     "options go after the command: `ffe report trades --json --data-dir d`"),
    (("ctl", "sold-by-hand", "BTC/USDT", "--quantity", "1", "--price", "1e307", "--yes"),
     "argument --price: must be from 1e-12 to 1e+12, got 1e307"),
    (("ctl", "sold-by-hand", "BTC/USDT", "--quantity", "1", "--price", "inf", "--yes"),
     "argument --price: must be a finite number, got inf"),
    (("ctl", "sold-by-hand", "BTC/USDT", "--quantity", "1", "--price", "30000", "--fee", "inf", "--yes"),
     "argument --fee: must be a finite number, got inf"),
    (("ctl", "sold-by-hand", "BTC/USDT", "--quantity", "1", "--price", "30000", "--fee", "nan", "--yes"),
     "argument --fee: must be a finite number, got nan"),
    (("ctl", "settle", "X-1", "filled", "--quantity", "nan", "--price", "30000", "--yes"),
     "argument --quantity: must be a finite number, got nan"),
    (("ctl", "status", "--timeout", "nan"), "argument --timeout: must be a finite number, got nan"),
    (("ctl", "settle", "X-1", "canceled", "--quantity", "1", "--price", "30000", "--yes"),
     "ffe ctl settle ID canceled takes no --quantity or --price: nothing filled"),
    (("ctl", "settle", "X-1", "canceled", "--fee-currency", "BTC", "--yes"),
     "ffe ctl settle ID canceled takes no --fee-currency: nothing filled"),
    (("ctl", "settle", "X-1", "filled", "--quantity", "1", "--yes"),
     "ffe ctl settle ID filled needs --price, as the exchange's account shows it"),
    (("ctl", "settle", "X-1", "filled", "--quantity", "1", "--price", "3", "--fee", "0.1", "--fee-currency", "",
      "--yes"), "argument --fee-currency: must name a currency (BTC, USDT), got ''"),
    (("ctl", "settle", "X-1", "filled", "--quantity", "1", "--price", "3", "--fee", "0.1", "--fee-currency", "  ",
      "--yes"), "argument --fee-currency: must name a currency (BTC, USDT), got '  '"),
], ids=["bad value", "unknown action", "not a number", "underscores", "an Arabic-Indic digit", "a full-width digit",
        "a decimal with underscores", "a decimal of another script", "more digits than int() reads", "two signs",
        "missing argument", "unknown command", "abbreviation",
        "an option before the command", "a run option before a command without it",
        "run options before a command without them", "an option no command takes before one",
        "a command's own options before it", "a price beyond the bounds", "an infinite price", "an infinite fee",
        "a fee not a number", "a quantity not a number", "a timeout not a number", "a canceled settle's fill",
        "a canceled settle's fee currency",
        "a filled settle without its price", "an empty fee currency", "a blank fee currency"])
def test_a_command_line_mistake_is_one_line_and_starts_nothing(tmp_path, args, says):
    # An abbreviated option (--headles for --headless) is a typo too: it must not start an engine.
    (tmp_path / "config.toml").write_text("")
    # A real process for the first and for the abbreviation (which, taken for --headless, would start an engine);
    # the rest in this process, as the parser is the same.
    real = args[0] == "ctl" and args[-1] == "0" or "--headles" in args
    proc = (run_ffe if real else ffe_in_process)(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert says in line and "--help" in line, line
    assert proc.stdout == ""
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command, choices", [
    ("report", "providers, trades"), ("audit", "tail, show, verify"), ("data", "download"), ("alert", "test"),
    ("config", "check"), ("ctl", "status, health, pause, resume, halt, flatten, approve, reject, mode, accept, "
                                 "orders, cancel, settle, sold-by-hand, trades, close, balances, profit, why"),
])
def test_a_command_without_its_subcommand_names_the_ones_to_choose_from(tmp_path, command, choices):
    # argparse would name its own field for it (`report_command`), a word no help shows
    (tmp_path / "config.toml").write_text("")
    proc = (run_ffe if command == "report" else ffe_in_process)(tmp_path, command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == f"ffe: error: ffe {command}: choose one of: {choices} (see `ffe {command} --help`)\n"
    assert proc.stdout == ""


@pytest.mark.parametrize("args, option", [
    (("run", "--headless", "--max-bars", "1", "--data-dir", ""), "--data-dir"),
    (("config", "check", "--log-dir", ""), "--log-dir"),
    (("config", "check", "--config", ""), "--config"),
    (("doctor", "--env-file", ""), "--env-file"),
    (("backtest", "BTC-USD_1h.csv", "--report", ""), "--report"),
    (("data", "download", "BTC/USDT", "--since", "2024-01-01", "--out", ""), "--out"),
    (("data", "download", "BTC/USDT", "--since", "2024-01-01", "--file", ""), "--file"),
    (("backup", "--to", ""), "--to"),
    (("backup", "verify", ""), "FILE"),
    (("restore", ""), "FILE"),
    (("init", ""), "DIR"),
], ids=["run --data-dir", "config check --log-dir", "config check --config", "doctor --env-file", "backtest --report",
        "data download --out", "data download --file", "backup --to", "backup verify FILE", "restore FILE",
        "init DIR"])
def test_an_empty_path_on_the_command_line_is_refused_not_taken_for_the_current_directory(tmp_path, args, option):
    # `--data-dir "$DATA"` with DATA unset: an account started (or a file written) wherever the command ran would be
    # found by nobody.
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 60)))
    before = snapshot(tmp_path)
    # A real process where the command, were the path taken, would start an engine or take signals and locks.
    real = args[0] in ("run", "backup", "restore")
    proc = (run_ffe if real else ffe_in_process)(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"argument {option}: must not be empty" in line, line
    assert proc.stdout == ""
    assert sorted(tmp_path.iterdir()) == sorted(tmp_path / name for name in ("config.toml", "BTC-USD_1h.csv"))
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------------- secrets
SECRETS = {
    "FFE_EXCHANGE__API_KEY": "AKIA7FFEK3YQ2M4XW9ZP",
    "FFE_EXCHANGE__SECRET": "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
    "FFE_ENSEMBLE__LLM__API_KEY": "sk-ffe-0123456789abcdefLLMKEY",
}


class EchoModel(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that votes BUY and, careless, quotes the Authorization header it got."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.auth_seen.append(self.headers.get("Authorization", ""))  # type: ignore[attr-defined]
        answer = {"action": "BUY", "confidence": 0.9, "reason": f"you sent {self.headers.get('Authorization')}"}
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(answer)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo_model():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoModel)
    server.auth_seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))


def test_config_check_masks_every_secret_set_in_dotenv(tmp_path):
    _dotenv(tmp_path)
    # A secret pasted into an ordinary field is caught too.
    env = ffe_env(FFE_EXCHANGE__OPTIONS=json.dumps({"note": SECRETS["FFE_EXCHANGE__SECRET"]}))
    proc = run_ffe(tmp_path, "config", "check", env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    for value in SECRETS.values():
        assert value not in out
    for name in SECRETS:
        assert f".env:{list(SECRETS).index(name) + 1} {name}" in out  # shown as set, from .env, masked
    assert out.count(REDACTED) >= 4


def test_secrets_from_dotenv_never_reach_stderr_audit_events_or_database_even_when_echoed(tmp_path, echo_model):
    _dotenv(tmp_path)
    port = echo_model.server_address[1]
    env = ffe_env(FFE_ENSEMBLE__PROVIDERS="trend,momentum,mean_reversion,breakout,llm",
                  FFE_ENSEMBLE__LLM__BASE_URL=f"http://127.0.0.1:{port}/v1", FFE_ENSEMBLE__LLM__TIMEOUT_S="5",
                  FFE_ENSEMBLE__PROVIDER_TIMEOUT_S="5")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "30", env=env)
    assert proc.returncode == 0, proc.stderr
    llm_key = SECRETS["FFE_ENSEMBLE__LLM__API_KEY"]
    assert echo_model.auth_seen and echo_model.auth_seen[0] == f"Bearer {llm_key}"  # the key was really used

    audit = tmp_path / "logs" / "audit.jsonl"
    records = audit_lines(audit)
    llm_votes = [v for r in records if r["event"] == "decision" for v in r["votes"] if v["provider"] == "llm"]
    assert llm_votes, "the llm provider never voted"
    # The echoed key reached the engine and was redacted on its way into the records.
    assert any(REDACTED in v["reason"] for v in llm_votes), llm_votes[:2]

    db = tmp_path / "data" / "ffe.db"
    events_text = "\n".join(r[0].decode() if isinstance(r[0], bytes) else r[0]
                            for r in db_rows(db, "SELECT data FROM events"))
    places = {"stderr": proc.stderr, "stdout": proc.stdout, "audit.jsonl": audit.read_text(),
              "events table": events_text}
    db_files = {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file()}
    for name, value in SECRETS.items():
        for where, text in places.items():
            assert value not in text, f"{name} appears in {where}"
        for fname, raw in db_files.items():
            assert value.encode() not in raw, f"{name} appears in {fname}"


def test_the_log_pipeline_redacts_a_secret_handed_to_it():
    """Log lines that do carry a secret (the engine's log fields, stdlib loggers such as ccxt's, event records) come
    out with the value replaced."""
    secret = SECRETS["FFE_EXCHANGE__SECRET"]
    out = io.StringIO()
    setup_logging("INFO", secrets=[secret], stream=out)
    logs.get_logger("ffe.test").error("request failed", url=f"https://x.test/api?signature={secret}",
                                      headers={"X-MBX-SECRET": secret}, args=[secret])
    logging.getLogger("ccxt.base").warning("POST failed with %s", secret)
    text = out.getvalue()
    assert "request failed" in text and "POST failed with" in text
    assert secret not in text
    assert text.count(REDACTED) >= 4

    bus = EventBus(WallClock(), redactor=Redactor([secret]))
    lines: list[bytes] = []
    bus.add_sink(lambda ev, line: lines.append(line))
    bus.publish(ErrorEvent(message=f"auth error for key {secret}", where="venue"))
    assert secret.encode() not in lines[0] and REDACTED.encode() in lines[0]


@pytest.mark.parametrize("case", ["different timeframes", "one candle", "empty", "a malformed row",
                                  "a price ffe cannot compute with", "a time ffe does not read"])
def test_a_replayed_market_of_unusable_files_stops_the_start_in_one_line(tmp_path, case):
    """`market.source = "replay"` with files an engine cannot replay (of different timeframes; one candle, whose
    timeframe cannot be told; an empty file; a row that is no candle): one line naming the file, exit 2, no
    traceback, before anything is recorded; and `ffe config check` says so first, in the same line."""
    hourly = tmp_path / "BTC-USD_1h.csv"
    hourly.write_text("".join(sample_head(BTC_CSV, 30 if case == "different timeframes" else 1)))
    if case == "empty":
        hourly.write_text("")
    elif case == "a malformed row":
        header, *rows = sample_head(BTC_CSV, 30)
        rows[11] = "2020-01-01T11:00:00Z,not a price\n"
        hourly.write_text(header + "".join(rows))
    elif case == "a price ffe cannot compute with":  # positive and finite, but it overflowed the engine's loop
        header, *rows = sample_head(BTC_CSV, 30)
        rows[11] = "2020-01-01T11:00:00Z,7.1e307,7.2e307,7.0e307,7.15e307,5\n"
        hourly.write_text(header + "".join(rows))
    elif case == "a time ffe does not read":  # it passed, and the year 10000 of its close was a traceback
        header, *rows = sample_head(BTC_CSV, 30)
        rows[-1] = "9999-12-31T23:00:00Z," + rows[-1].split(",", 1)[1]
        hourly.write_text(header + "".join(rows))
    header, *rows = sample_head(ETH_CSV, 30)
    minutes = tmp_path / "ETH-USD_1m.csv"
    minutes.write_text(header + "".join(f"2020-01-01T00:{i:02d}:00Z,{row.split(',', 1)[1]}"
                                        for i, row in enumerate(rows)))
    (tmp_path / "config.toml").write_text(
        f'[market]\nsource = "replay"\nreplay_files = {{ "BTC/USD" = "{hourly.name}", "ETH/USD" = "{minutes.name}" }}\n'
        '[engine]\nsymbols = ["BTC/USD", "ETH/USD"]\n[venue]\nquote = "USD"\n')
    said = []
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "5")):
        proc = run_ffe(tmp_path, *command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ffe: error: ")]
        assert hourly.name in line, line
        said.append(line)
    assert said[0] == said[1]
    if case == "a price ffe cannot compute with":
        assert f"{hourly.name}:13: open 7.1e307 is above 1e+12, the largest price ffe computes with" in said[0]
    if case == "a time ffe does not read":
        assert f"{hourly.name}:31: timestamp '9999-12-31T23:00:00Z' is past 2099, the last year" in said[0]
    assert not (tmp_path / "data" / "ffe.db").exists()


@pytest.mark.parametrize("command", [("doctor",), ("report", "trades"), ("audit", "show", "d1"), ("backup",)],
                         ids=lambda c: " ".join(c))
def test_a_data_directory_with_no_database_is_the_same_usage_error_for_every_command(tmp_path, command):
    """A --data-dir that holds no database is most likely the wrong one: every command that reads one says so in
    the same words and with the same exit code (2)."""
    (tmp_path / "elsewhere").mkdir()
    proc = run_ffe(tmp_path, *command, "--data-dir", "elsewhere")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    line = one_error_line(proc.stderr)
    assert "(is --data-dir right?)" in line and "elsewhere" in line, line


@pytest.mark.parametrize("args, help_of", [
    (("ctl", "status", "--tim", "3"), "ffe ctl"),
    (("audit", "tail", "--ev", "fill"), "ffe audit tail"),
    (("report", "trades", "--la", "1"), "ffe report trades"),
    (("report", "providers", "--last", "-1"), "ffe report providers"),
    (("ctl", "cancel"), "ffe ctl"),
    (("backtest", "--recrods", "full"), "ffe backtest"),
])
def test_an_unknown_option_points_to_the_help_that_lists_the_command_s_options(tmp_path, args, help_of):
    proc = ffe_in_process(tmp_path, *args)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert line.endswith(f"(see `{help_of} --help`)") and line.count("(see ") == 1, line


@pytest.mark.parametrize("args, help_of", [
    (("audit", "tail", "--event", "nosuch"), "ffe audit tail"),
    (("audit", "tail", "--event", ","), "ffe audit tail"),
    (("audit", "tail", "-n", "-1"), "ffe audit tail"),
    (("backtest",), "ffe backtest"),
    (("backtest", "--keep", "3"), "ffe backtest"),
    (("backtest", "--older-than", "7d", "BTC-USD_1h.csv"), "ffe backtest"),
    (("backtest", "--yes"), "ffe backtest"),
    (("backtest", "--records", "most", "BTC-USD_1h.csv"), "ffe backtest"),
    (("backtest", "BTC/USD="), "ffe backtest"),
    (("backtest", "--clean"), "ffe backtest"),
    (("backtest", "--clean", "--keep", "-1"), "ffe backtest"),
    (("backtest", "--clean", "--older-than", "7x"), "ffe backtest"),
    (("backtest", "--list", "foo.csv"), "ffe backtest"),
    (("backtest", "--list", "--clean"), "ffe backtest"),
    (("backtest", "--list", "--report", "r.json"), "ffe backtest"),
    (("backtest", "--list", "--keep", "3"), "ffe backtest"),
    (("data", "download", "BTC/USDT", "--timeframe", "7x"), "ffe data download"),
    (("data", "download", "BTC/USDT", "--since", "notadate"), "ffe data download"),
    (("data", "download", "BTC/USDT", "--since", "2200-01-01"), "ffe data download"),
    # A typo for 2020: no candle has closed there yet, nothing to fetch, and no file to start.
    (("data", "download", "BTC/USDT", "--since", "2099-01-01"), "ffe data download"),
    (("data", "download", "BTC/USDT", "--timeframe", "", "--since", "2024-01-01"), "ffe data download"),
    (("data", "download", "BTC/USDT", "--since", "2024-01-02", "--until", "2024-01-01"), "ffe data download"),
    (("data", "download", "BTC/USDT", "BTC/USDT"), "ffe data download"),
    (("data", "download", "BTCUSDT"), "ffe data download"),
    (("data", "download", "BTC/USDT", "ETH/USDT", "--file", "x.csv"), "ffe data download"),
    (("ctl", "mode", "fast"), "ffe ctl"),
    (("report", "trades", "--last", "-1"), "ffe report trades"),
    # An option given twice is a mistake, not the last one winning: the account, the run or the quantity acted on
    # would be other than one of the two typed.
    (("config", "check", "--data-dir", "a", "--data-dir", "b"), "ffe config check"),
    (("--data-dir", "a", "--data-dir", "b", "config", "check"), "ffe config check"),  # before the command too
    (("backtest", "--records", "full", "BTC-USD_1h.csv", "--records", "summary"), "ffe backtest"),
    (("ctl", "settle", "ffe-x", "filled", "--quantity", "1", "--price", "2", "--quantity=3"), "ffe ctl"),
    (("restore", "--data-dir", "a", "b.tar.zst", "--data-dir", "c"), "ffe restore"),
], ids=lambda a: " ".join(a) if isinstance(a, tuple) else None)
def test_a_bad_argument_of_a_command_points_to_the_command_s_help(tmp_path, args, help_of):
    """A mistake in a command's arguments that the command itself finds (options that do not go together, a value
    it cannot read) is said as argparse's own are: one line, exit 2, ending with the help that lists the options.
    Nothing is written: the mistake is found before any file is read or made."""
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 30)))
    first = args == ("backtest", "--clean")  # the first as a real process
    proc = (run_ffe if first else ffe_in_process)(tmp_path, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = one_error_line(proc.stderr)
    assert line.endswith(f"(see `{help_of} --help`)") and line.count("(see ") == 1, line
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BTC-USD_1h.csv"]


@pytest.mark.parametrize("case", ["a symbol without its file", "a file that is not there"])
def test_a_replayed_market_config_that_run_would_refuse_is_refused_by_config_check_too_naming_its_line(tmp_path,
                                                                                                      case):
    """`ffe config check` says what `ffe run` would refuse, and both name the file, line and key: a traded symbol
    with no file in `market.replay_files`, or a file that is not there."""
    hourly = tmp_path / "BTC-USD_1h.csv"
    hourly.write_text("".join(sample_head(BTC_CSV, 30)))
    files = (f'"BTC/USD" = "{hourly.name}"' if case == "a symbol without its file"
             else f'"BTC/USD" = "{hourly.name}", "ETH/USD" = "missing.csv"')
    (tmp_path / "config.toml").write_text(
        f'[engine]\nsymbols = ["BTC/USD", "ETH/USD"]\n[venue]\nquote = "USD"\n'
        f'[market]\nsource = "replay"\nreplay_files = {{ {files} }}\n')
    words = "no file for ETH/USD" if case == "a symbol without its file" else "missing.csv"
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "5")):
        proc = run_ffe(tmp_path, *command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ffe: error: ")]
        assert "config.toml:7: market.replay_files" in line and words in line, (command, line)
    assert not (tmp_path / "data" / "ffe.db").exists()


def test_replay_files_of_another_timeframe_than_the_engine_s_are_refused_by_config_check_and_the_start(tmp_path):
    """Hourly files replayed by an engine of minute bars would have every entry refused as DATA_STALE (the bars an
    hour apart): refused before a start, naming both timeframes and the key to set."""
    hourly = tmp_path / "BTC-USD_1h.csv"
    hourly.write_text("".join(sample_head(BTC_CSV, 30)))
    (tmp_path / "config.toml").write_text(
        f'[engine]\nsymbols = ["BTC/USD"]\ntimeframe = "1m"\n[venue]\nquote = "USD"\n'
        f'[market]\nsource = "replay"\nreplay_files = {{ "BTC/USD" = "{hourly.name}" }}\n')
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "5")):
        proc = run_ffe(tmp_path, *command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ffe: error: ")]
        assert "1h" in line and "engine.timeframe" in line and "1m" in line, (command, line)
        assert line.startswith('ffe: error: config.toml:3: engine.timeframe = "1m"'), (command, line)  # its line
    assert not (tmp_path / "data" / "ffe.db").exists()
    # Not set at all: said as the default, not blamed on the [engine] table's header, where it was never written.
    (tmp_path / "config.toml").write_text(
        f'[engine]\nsymbols = ["BTC/USD"]\n[venue]\nquote = "USD"\n'
        f'[market]\nsource = "replay"\nreplay_files = {{ "BTC/USD" = "{hourly.name}" }}\n')
    proc = run_ffe(tmp_path, "config", "check")
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ffe: error: ")]
    assert line.startswith('ffe: error: engine.timeframe = "1m", the default: the files of market.replay_files '
                           'are 1h candles'), line


def test_replay_files_of_two_timeframes_are_refused_naming_the_line_that_set_them(tmp_path):
    hourly = sample_head(BTC_CSV, 30)
    (tmp_path / "BTC-USD_1h.csv").write_text("".join(hourly))
    (tmp_path / "ETH-USD_2h.csv").write_text("".join(hourly[:1] + hourly[1::2]))  # every other hour
    (tmp_path / "config.toml").write_text(
        '[engine]\nsymbols = ["BTC/USD", "ETH/USD"]\ntimeframe = "1h"\n[venue]\nquote = "USD"\n[market]\n'
        'source = "replay"\nreplay_files = { "BTC/USD" = "BTC-USD_1h.csv", "ETH/USD" = "ETH-USD_2h.csv" }\n')
    for command in (("config", "check"), ("run", "--headless", "--max-bars", "5")):
        proc = run_ffe(tmp_path, *command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        line = one_error_line(proc.stderr)
        assert line.startswith("ffe: error: config.toml:8: market.replay_files: the files must share one "
                               "timeframe"), (command, line)
        assert "BTC-USD_1h.csv 1h" in line and "ETH-USD_2h.csv 2h" in line, (command, line)
    assert not (tmp_path / "data" / "ffe.db").exists()


def test_a_replayed_market_set_in_the_environment_names_the_variable_and_a_directory_is_no_file(tmp_path):
    """The replay files set by FFE_MARKET__REPLAY_FILES: a missing one is said with the variable that set it; a
    directory given as a file is said as such, not as "no such file"."""
    (tmp_path / "config.toml").write_text('[engine]\nsymbols = ["BTC/USD"]\n[venue]\nquote = "USD"\n'
                                          '[market]\nsource = "replay"\n')
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "c.fifo")
    for files, words in (('{"BTC/USD": "nope.csv"}', "environment: FFE_MARKET__REPLAY_FILES: "
                                                     "market.replay_files.BTC/USD: nope.csv: no such file"),
                         ('{"BTC/USD": "adir"}', "market.replay_files.BTC/USD: adir: a directory, not a file"),
                         ('{"BTC/USD": "c.fifo"}', "market.replay_files.BTC/USD: c.fifo: a FIFO, not a file")):
        proc = run_ffe(tmp_path, "config", "check", env=ffe_env(FFE_MARKET__REPLAY_FILES=files))
        assert proc.returncode == 2, (files, proc.stdout, proc.stderr)
        assert words in proc.stderr, (files, proc.stderr)


def test_a_csv_with_both_date_and_time_columns_exits_2_naming_the_file_and_both_columns(tmp_path):
    """A common export (`Date,Time,Open,...`, the day and its time of day apart) would have its timestamp read
    from one of the two columns alone: every row of a day the same time, or a time with no day. Refused in one
    line naming the file, its header line and both columns, before any run."""
    csv = tmp_path / "BTC-USD_export.csv"
    rows = ["Date,Time,Open,High,Low,Close,Volume\n"]
    for hour in range(48):
        day, at = divmod(hour, 24)
        rows.append(f"2021-01-0{day + 1},{at:02d}:00:00,100,101,99,100.5,12\n")
    csv.write_text("".join(rows))
    proc = run_ffe(tmp_path, "backtest", csv.name)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"{csv.name}:1:" in line and "'Date'" in line and "'Time'" in line, line
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "data" / "backtests").exists()  # no run was started


@pytest.mark.parametrize("command", [("--help",), ("config", "check"), ("doctor",), ("audit", "tail", "-n", "1")],
                         ids=["help", "config-check", "doctor", "audit-tail"])
def test_a_closed_standard_output_is_one_line_not_a_traceback(tmp_path, command):
    import shlex
    import subprocess

    from conftest import ffe_cmd

    if command[0] in ("doctor", "audit"):  # records to look at
        assert run_ffe(tmp_path, "run", "--headless", "--max-bars", "3").returncode == 0
    proc = subprocess.run(["bash", "-c", shlex.join(ffe_cmd(*command)) + " >&-"], cwd=tmp_path, env=ffe_env(),
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == ["ffe: error: standard output cannot be written: it is closed"], proc.stderr


@pytest.mark.parametrize("command", [("config", "check"), ("doctor",), ("--help",), ("backtest", "--help")],
                         ids=["config-check", "doctor", "help", "backtest-help"])
def test_standard_output_on_a_full_disk_is_one_line_not_a_traceback(tmp_path, command):
    import subprocess

    from conftest import ffe_cmd

    if command == ("doctor",):  # records to look at
        assert run_ffe(tmp_path, "run", "--headless", "--max-bars", "3").returncode == 0
    with open("/dev/full", "w") as full:
        proc = forked_ffe.run(ffe_cmd(*command), cwd=tmp_path, env=ffe_env(), stdin=subprocess.DEVNULL, stdout=full,
                              stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == ["ffe: error: standard output cannot be written: No space left on device"], \
        proc.stderr


def test_a_candle_time_off_the_files_grid_exits_2_naming_its_line_not_a_gap_of_no_bar(tmp_path):
    """One hourly row stamped half a second late: a damaged time, named with its line, never a gap that misses no
    bar in the summary."""
    t0 = 1641013200
    rows = [f"{t0 + i * 3600}{'.5' if i == 5 else ''},100,101,99,100.5,10" for i in range(300)]
    (tmp_path / "BTC-USDT_1h.csv").write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    proc = run_ffe(tmp_path, "backtest", "--records", "summary", "BTC-USDT_1h.csv")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == ["ffe: error: BTC-USDT_1h.csv:7: timestamp 2022-01-01T10:00:00.500Z is off the "
                                        "1h grid of the candles either side of it (2022-01-01T09:00:00Z and "
                                        "2022-01-01T11:00:00Z): a damaged time?"], proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("kind", ["device", "fifo", "link_to_device"])
def test_a_market_data_file_that_is_not_a_file_exits_2_in_one_line_never_read(tmp_path, kind):
    """`ffe backtest BTC/USDT=/dev/urandom` read without end (gigabytes in seconds); a FIFO nobody writes to was
    waited on for ever. Anything there but a regular file or a pipe the shell opened (`<(zcat ...)`) is refused in
    one line, never opened."""
    if kind == "device":
        given, what = "/dev/urandom", "a character device"
    elif kind == "fifo":
        os.mkfifo(tmp_path / "candles.fifo")
        given, what = "candles.fifo", "a FIFO"
    else:
        (tmp_path / "BTC-USDT_1h.csv").symlink_to("/dev/zero")
        given, what = "BTC-USDT_1h.csv", "a character device (a link to /dev/zero)"
    proc = run_bounded(tmp_path, "backtest", "--records", "summary", f"BTC/USDT={given}")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.splitlines() == [f"ffe: error: {given}: is {what}, not a CSV file"], proc.stderr[-2000:]
    assert proc.stdout == ""


def test_binary_data_is_refused_at_its_first_chunk_not_after_the_whole_file(tmp_path):
    """A file whose first bytes are not UTF-8 is not candles: refused once they are read, before the rest (here a
    line longer than any row further on, which a whole read would have come to first)."""
    head = bytes(range(128, 256)) * 64 + b"\n"  # not UTF-8; line breaks keep each line short
    path = tmp_path / "BTC-USDT_1h.csv"
    path.write_bytes(head * 64 + b"x" * 200_000 + b"\n")
    proc = run_bounded(tmp_path, "backtest", "--records", "summary", path.name)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.splitlines() == ["ffe: error: BTC-USDT_1h.csv:1: not UTF-8 text"], proc.stderr[-2000:]


def test_an_endless_pipe_of_binary_data_is_refused_at_its_first_chunk(tmp_path):
    """`ffe backtest BTC/USDT=<(cat /dev/urandom)`: a pipe is read (it is how a compressed or remote file is given),
    and refused once its first bytes are seen not to be text, not read until memory runs out."""
    read, write = os.pipe()

    def feed() -> None:
        chunk = bytes(range(128, 256)) * 512
        try:
            with os.fdopen(write, "wb") as f:
                while True:
                    f.write(chunk)
        except (BrokenPipeError, ValueError):
            pass  # the reader is gone: what the test waits for

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        proc = run_bounded(tmp_path, "backtest", "--records", "summary", f"BTC/USDT=/dev/fd/{read}", pass_fds=(read,))
    finally:
        os.close(read)
    writer.join(timeout=10)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.splitlines() == [f"ffe: error: /dev/fd/{read}:1: not UTF-8 text"], proc.stderr[-2000:]


def test_a_closed_standard_error_drops_the_log_lines_and_the_commands_go_on(tmp_path):
    """Started without a standard error (`2>&-`: Python makes sys.stderr None), a run and a backtest do their work,
    their log lines dropped as a line that cannot be written is; a command's one-line error goes to standard output."""
    import subprocess

    from conftest import ffe_cmd, starter_config

    def closed_stderr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", shlex.join(ffe_cmd(*args)) + " 2>&-"], cwd=tmp_path, env=ffe_env(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, timeout=120)

    starter_config(tmp_path)
    run = closed_stderr("run", "--headless", "--max-bars", "3")
    assert run.returncode == 0, run.stdout
    stops = [r for r in audit_lines(tmp_path / "logs" / "audit.jsonl") if r["event"] == "run" and r["phase"] == "stop"]
    assert len(stops) == 1
    csv = tmp_path / "BTC-USD_1h.csv"
    csv.write_text("".join(sample_head(BTC_CSV, 300)))
    backtest = closed_stderr("backtest", csv.name, "--report", "r.json")
    assert backtest.returncode == 0, backtest.stdout
    assert "trades" in backtest.stdout and json.loads((tmp_path / "r.json").read_text())["bars"] == 300
    for console in (("run",), ("attach",)):  # the console draws on standard error: refused, not frozen
        proc = closed_stderr(*console)
        assert proc.returncode == 2 and "the console draws on standard error, which is closed" in proc.stdout, proc
    refused = closed_stderr("doctor", "--no-such-option")
    assert refused.returncode == 2 and refused.stdout.startswith("ffe: error: unrecognized arguments"), refused.stdout


@pytest.mark.parametrize("odd", ["\x1b]0;x\x07", "\nFAKE"], ids=["escape", "new-line"])
def test_a_path_with_characters_a_terminal_acts_on_is_shown_escaped_by_every_command(tmp_path, odd):
    """A directory named with an escape sequence or a bell (one that sets the terminal's title): `ffe backup`,
    `ffe backup verify`, `ffe restore`, a backtest's summary and `ffe backtest --clean` show it escaped (`\\x1b`),
    as the errors and `ffe doctor` do, never passed on to the terminal."""
    assert run_ffe(tmp_path, "run", "--headless", "--max-bars", "3").returncode == 0
    outputs = []
    backup = run_ffe(tmp_path, "backup", "--to", f"bk{odd}")
    outputs.append(backup)
    (archive,) = (tmp_path / f"bk{odd}").glob("*.zst")
    outputs.append(run_ffe(tmp_path, "backup", "verify", str(archive)))
    outputs.append(run_ffe(tmp_path, "restore", str(archive), "--data-dir", f"rr{odd}", "--log-dir", "rrl"))
    csv = tmp_path / "BTC-USD_1h.csv"
    csv.write_text("".join(sample_head(BTC_CSV, 100)))
    outputs.append(run_ffe(tmp_path, "backtest", csv.name, "--records", "trades", "--data-dir", f"bt{odd}"))
    outputs.append(run_ffe(tmp_path, "backtest", "--list", "--data-dir", f"bt{odd}"))
    outputs.append(run_ffe(tmp_path, "backtest", "--clean", "--keep", "0", "--yes", "--data-dir", f"bt{odd}"))
    for n, proc in enumerate(outputs):
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout, proc.stdout
        assert not any(line.startswith("FAKE") for line in proc.stdout.splitlines()), proc.stdout
        if n != 4:  # --list names no folder
            assert ("\\x1b" if "\x1b" in odd else "\\nFAKE") in proc.stdout, proc.stdout
