"""A `[y/N]` prompt answered with end of input (Ctrl-D on a terminal) is a "no": one line, exit 2, nothing sent or
removed; it ended in a Python traceback, exit 1."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess

import pytest

from conftest import db_value, ffe_cmd, ffe_env, wait_until
from test_ctl import an_operator_buy_then_stopped


def answered_with_eof(cwd, *args: str) -> subprocess.CompletedProcess:
    master, slave = pty.openpty()
    proc = subprocess.Popen(ffe_cmd(*args), cwd=cwd, env=ffe_env(), stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        os.write(master, b"\x04")  # Ctrl-D at the start of a line: end of input
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_end_of_input_at_a_ctl_prompt_confirms_nothing(tmp_path):
    proc = answered_with_eof(tmp_path, "ctl", "flatten")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "ffe: error: ffe ctl flatten: not confirmed, nothing sent", proc.stderr


def test_a_ctl_prompt_names_the_position_it_acts_on_and_asks_nothing_of_one_the_engine_does_not_have(
        tmp_path, spawn_ffe):
    """At 3 a.m. the question says what `ffe ctl close` or `cancel` is about to act on, as the engine has it now; a
    symbol without a position or an order id the engine does not have (a typo) is not asked about, the engine's
    refusal says so at once."""
    an_operator_buy_then_stopped(tmp_path, spawn_ffe)
    # Started again on a market that stays still meanwhile: the strategy closes nothing under the test.
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="0.01"))
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(), timeout=60,
               what="the control socket")

    proc = answered_with_eof(tmp_path, "ctl", "close", "BTC/USDT")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "ffe: error: ffe ctl close: not confirmed, nothing sent", proc.stderr
    assert re.search(r"close this position at market \(buy 0\.01(0*) BTC/USDT, entry [\d,.]+, now [\d,.]+, "
                     r"[+-][\d.]+%\)\? \[y/N\]", proc.stdout), proc.stdout
    assert db_value(tmp_path / "data" / "ffe.db", "SELECT COUNT(*) FROM positions WHERE symbol = ?", ("BTC/USDT",))

    for args, refusal in ((("close", "ETH/USDT"), "no open position in ETH/USDT"),
                          (("cancel", "ffe-typo"), "no open order ffe-typo")):
        proc = answered_with_eof(tmp_path, "ctl", *args)
        assert proc.returncode == 1, proc.stderr
        assert "[y/N]" not in proc.stdout and refusal in proc.stderr, proc.stdout + proc.stderr
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr
