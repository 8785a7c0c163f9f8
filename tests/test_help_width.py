"""Every `ffe ... --help` fits an 80-column terminal (an operator on call over SSH): no line wider than 80, with
COLUMNS=80 and with no COLUMNS at all (what a pipe or a cron job gives)."""

from __future__ import annotations

import pytest

from conftest import ffe_env, ffe_in_process, run_ffe
from ffe_cli.main import build_parser

WIDTH = 80


# The commands with subcommands of their own; every other command of the parser is one word.
SUBCOMMANDS = {"config": ("check",), "alert": ("test",), "audit": ("tail", "show", "verify"),
               "report": ("providers", "trades"), "data": ("download",), "backup": ("verify",)}


def commands() -> list[tuple[str, ...]]:
    """Every command and subcommand: (), ("run",), ("audit",), ("audit", "tail"), ..."""
    found: list[tuple[str, ...]] = [()]
    for name in sorted(build_parser().commands):
        found.append((name,))
        found.extend((name, sub) for sub in SUBCOMMANDS.get(name, ()))
    return found


def env_with(columns: str | None) -> dict[str, str]:
    env = ffe_env()
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    return env


def wide_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > WIDTH]


def test_ctl_help_lists_every_action_within_80_columns(tmp_path):
    proc = run_ffe(tmp_path, "ctl", "--help", env=env_with(None))
    assert proc.returncode == 0, proc.stderr
    for action in ("status", "health", "sold-by-hand", "why"):
        assert f"{action}:" in proc.stdout, proc.stdout
    assert wide_lines(proc.stdout) == [], proc.stdout


@pytest.mark.parametrize("columns", ["80", None], ids=["COLUMNS=80", "no COLUMNS"])
@pytest.mark.parametrize("words", commands(), ids=lambda w: " ".join(("ffe", *w)))
def test_every_help_fits_80_columns(tmp_path, words, columns):
    proc = ffe_in_process(tmp_path, *words, "--help", env=env_with(columns))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ffe"), proc.stdout
    assert wide_lines(proc.stdout) == [], proc.stdout


@pytest.mark.parametrize("columns", [60, 50])
@pytest.mark.parametrize("words", commands(), ids=lambda w: " ".join(("ffe", *w)))
def test_help_on_a_narrower_terminal_fits_its_width(tmp_path, words, columns):
    proc = ffe_in_process(tmp_path, *words, "--help", env=env_with(str(columns)))
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if len(line) > columns] == [], proc.stdout
