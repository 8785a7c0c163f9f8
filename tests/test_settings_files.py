"""The files the settings are read from (`--config`, `--env-file`) are looked at before they are opened: anything
there but a regular file (a FIFO, a device, a link to one) is one line naming it, exit 2, never waited on nor read
without end; and a file larger than any settings file is refused in one line naming the limit, never read whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_bounded

MAX_SETTINGS_BYTES = 4 << 20  # the limit docs/config.md gives


def _make(tmp_path: Path, kind: str) -> tuple[str, str]:
    """The path given (relative to tmp_path) and what it is, as the refusal says it."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "settings.fifo")
        return "settings.fifo", "a FIFO"
    if kind == "device":
        return "/dev/zero", "a character device"
    (tmp_path / "zero").symlink_to("/dev/zero")
    return "zero", "a character device (a link to /dev/zero)"


@pytest.mark.parametrize("option, what_file", [("--config", "a config file"), ("--env-file", "a .env file")])
@pytest.mark.parametrize("kind", ["fifo", "device", "link_to_device"])
def test_a_settings_file_that_is_not_a_file_is_refused_in_one_line(tmp_path, option, what_file, kind):
    given, what = _make(tmp_path, kind)
    proc = run_bounded(tmp_path, "config", "check", option, given)
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert proc.stderr.splitlines() == [f"ffe: error: {given}: is {what}, not {what_file}"], proc.stderr[-2000:]


def test_a_start_from_a_config_fifo_is_refused_before_anything_is_waited_on(tmp_path):
    os.mkfifo(tmp_path / "cfg.fifo")
    proc = run_bounded(tmp_path, "run", "--headless", "--config", "cfg.fifo")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.splitlines() == ["ffe: error: cfg.fifo: is a FIFO, not a config file"], proc.stderr[-2000:]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("option, name, what_file", [("--config", "big.toml", "a config file"),
                                                     ("--env-file", "big.env", "a .env file")])
def test_a_settings_file_larger_than_the_limit_is_refused_naming_the_limit(tmp_path, option, name, what_file):
    line = b"# " + b"x" * 1021 + b"\n"  # comments only: read whole, the file would be taken as settings
    with open(tmp_path / name, "wb") as f:
        for _ in range(MAX_SETTINGS_BYTES // len(line) + 1):
            f.write(line)
    proc = run_bounded(tmp_path, "config", "check", option, name)
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert proc.stderr.splitlines() == [f"ffe: error: {name}: larger than {MAX_SETTINGS_BYTES >> 20} MiB: too large "
                                        f"for {what_file}"], proc.stderr[-2000:]


def test_a_settings_file_at_the_limit_is_read(tmp_path):
    line = b"# " + b"x" * 1021 + b"\n"
    with open(tmp_path / "full.toml", "wb") as f:
        f.write(line * (MAX_SETTINGS_BYTES // len(line)))
        f.write(b"#" * (MAX_SETTINGS_BYTES % len(line)))
    assert (tmp_path / "full.toml").stat().st_size == MAX_SETTINGS_BYTES
    proc = run_bounded(tmp_path, "config", "check", "--config", "full.toml")
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
