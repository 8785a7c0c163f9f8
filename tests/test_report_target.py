"""`ffe backtest --report PATH` writes only where nothing is lost: a new file, or a report an earlier `--report`
wrote. Any other file there (another account's audit trail, a rotated trail file, a trail's lock, a backup, a
file of the user's) is refused before the run, in one line naming the path and what it is, and left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import BTC_CSV, run_ffe, sample_head

RUN = ("backtest", "--records", "summary", "BTC-USD_1h.csv")


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """Another account, elsewhere: its records, a backup of it, and a rotated trail file kept."""
    account = tmp_path_factory.mktemp("other")
    proc = run_ffe(account, "run", "--headless", "--max-bars", "40")
    assert proc.returncode == 0, proc.stderr
    proc = run_ffe(account, "backup", "--to", "bk")
    assert proc.returncode == 0, proc.stderr
    (account / "kept").mkdir()
    shutil.copyfile(account / "logs" / "audit.jsonl", account / "kept" / "audit-000000000001.jsonl")
    return account


def account_with_csv(tmp_path: Path) -> Path:
    here = tmp_path / "here"
    here.mkdir()
    (here / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 60)))
    return here


@pytest.mark.parametrize("name, says", [
    ("logs/audit.jsonl", "is an audit trail"),
    ("kept/audit-000000000001.jsonl", "is an audit trail"),
    ("logs/audit.jsonl.lock", "is a lock file"),
    ("backup", "is a compressed archive (zstd)"),
    ("notes.txt", "is not a backtest report"),
    ("config.json", "is not a backtest report"),
    ("empty", "is not a backtest report (an empty file)"),
], ids=["a trail", "a rotated trail file", "a trail's lock", "a backup", "a text file", "other JSON",
        "an empty file"])
def test_a_report_path_over_a_file_that_is_not_a_report_is_refused_and_the_file_kept(other, tmp_path, name, says):
    here = account_with_csv(tmp_path)
    (other / "notes.txt").write_text("my notes\n")
    (other / "config.json").write_text('{"symbols": ["BTC/USD"], "bars": 3}\n')
    (other / "empty").write_bytes(b"")
    target = next((other / "bk").glob("ffe-backup-*.tar.zst")) if name == "backup" else other / name
    before = target.read_bytes()
    proc = run_ffe(here, *RUN, "--report", str(target))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"ffe: error: --report {target}: {says}; give another path"], proc.stderr
    assert target.read_bytes() == before
    assert not (here / "data").exists()  # refused before the run


def test_a_report_is_written_over_an_earlier_report(tmp_path):
    here = account_with_csv(tmp_path)
    for rows in (60, 59):
        (here / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, rows)))
        proc = run_ffe(here, *RUN, "--report", "r.json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads((here / "r.json").read_text())["bars"] == rows


@pytest.mark.parametrize("given, missing", [
    ("typo/reports/2026/x.json", "typo/reports/2026"),
    ("latest.json", "gone"),
], ids=["a path", "a link to a file in a directory not there"])
def test_a_report_path_whose_directory_is_not_there_is_refused_and_nothing_made(tmp_path, given, missing):
    # A mistyped path made a tree of directories before the run, left behind when the run then failed.
    here = account_with_csv(tmp_path)
    (here / "latest.json").symlink_to(Path("gone") / "latest.json")
    proc = run_ffe(here, *RUN, "--report", given)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    where = here / missing if given == "latest.json" else Path(missing)
    assert proc.stderr.splitlines() == [f"ffe: error: --report {given}: its directory {where} does not exist "
                                        "(make it first)"], proc.stderr
    assert not (here / "typo").exists() and not (here / "gone").exists() and not (here / "data").exists()


@pytest.mark.parametrize("given", ["reports/", "r.json/", "r.json/.", "."],
                         ids=["a directory not there", "an earlier report", "an earlier report, then a dot", "a dot"])
def test_a_report_path_ending_in_a_slash_names_a_directory_and_is_refused(tmp_path, given):
    # `reports/` wrote a report file named `reports`; `r.json/` wrote over r.json, as the system would not.
    here = account_with_csv(tmp_path)
    assert run_ffe(here, *RUN, "--report", "r.json").returncode == 0
    before = (here / "r.json").read_bytes()
    proc = run_ffe(here, *RUN, "--report", given)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line, = proc.stderr.splitlines()
    assert line.startswith(f"ffe: error: argument --report: {given}: names a directory"), line
    assert not (here / "reports").exists() and (here / "r.json").read_bytes() == before


@pytest.mark.parametrize("report, redirect", [("/dev/stdout", ">taken.json"), ("/dev/fd/3", "3>taken.json")],
                         ids=["stdout", "fd-3"])
def test_a_report_to_this_process_s_own_descriptor_redirected_to_a_file_is_written_into_it(tmp_path, report,
                                                                                           redirect):
    """`--report /dev/stdout > out.json` (or `/dev/fd/3 3> r.json`): the descriptor the shell opened on a file is
    written into, as a pipe is, not refused as a file that is no report nor the file replaced."""
    import subprocess

    from conftest import ffe_cmd, ffe_env

    here = account_with_csv(tmp_path)
    command = ffe_cmd("backtest", "BTC-USD_1h.csv", "--records", "summary", "--report", report)
    proc = subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", *command], cwd=here, env=ffe_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (here / "taken.json").read_text()
    start = text.index("{\n")  # after the summary, when the report shares stdout with it
    assert json.loads(text[start:])["bars"] == 60, text


@pytest.mark.parametrize("reader", ["true", "head -1"])
def test_the_report_is_written_when_the_summary_s_reader_went_away(tmp_path, reader):
    """`ffe backtest ... --report r.json | head -1`: the reader of the summary going away ends the command quietly,
    and the report the user asked for is written all the same (an exit of 0 tells a sweep that it was)."""
    import subprocess

    from conftest import ffe_cmd, ffe_env

    here = account_with_csv(tmp_path)
    command = ffe_cmd("backtest", "BTC-USD_1h.csv", "--records", "summary", "--report", "r.json")
    proc = subprocess.run(["bash", "-c", f'"$@" | {reader}', "sh", *command], cwd=here, env=ffe_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((here / "r.json").read_text())["bars"] == 60
