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


def test_a_close_asked_about_one_position_does_not_close_another_opened_while_the_question_waited(tmp_path,
                                                                                                   spawn_ffe):
    """The question names the position as it was; the close answered `y` after that one closed and another opened
    in the symbol (a stop-loss, another operator, then an entry) is refused by the engine, nothing sent: it closed
    the new position, of another size, that the operator was never shown."""
    import asyncio

    from ffe_engine.control import request

    db = tmp_path / "data" / "ffe.db"
    an_operator_buy_then_stopped(tmp_path, spawn_ffe)
    engine = spawn_ffe(tmp_path, "run", "--headless",  # the strategy's entries wait for an approval never given
                       env=ffe_env(FFE_MARKET__SPEED="5", FFE_ENGINE__APPROVAL="manual"))
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(), timeout=60,
               what="the control socket")
    sock = tmp_path / "data" / "ffe.sock"
    master, slave = pty.openpty()
    asked = subprocess.Popen(ffe_cmd("ctl", "close", "BTC/USDT"), cwd=tmp_path, env=ffe_env(), stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        os.set_blocking(asked.stdout.fileno(), False)
        shown = b""

        def prompt() -> bool:
            nonlocal shown
            shown += asked.stdout.read() or b""
            return b"[y/N]" in shown
        wait_until(prompt, timeout=60, what="the question")
        assert b"buy 0.01" in shown, shown
        closed = asyncio.run(request(sock, "close", {"symbol": "BTC/USDT", "by": "test"}))
        assert closed["ok"] and closed["result"]["accepted"], closed
        wait_until(lambda: not db_value(db, "SELECT COUNT(*) FROM positions WHERE symbol = 'BTC/USDT'"), timeout=60,
                   what="the position shown closed")
        bought = asyncio.run(request(sock, "order", {"symbol": "BTC/USDT", "side": "buy", "quantity": 0.015,
                                                     "by": "test"}))
        assert bought["ok"] and bought["result"]["accepted"], bought
        wait_until(lambda: db_value(db, "SELECT quantity FROM positions WHERE symbol = 'BTC/USDT'"), timeout=60,
                   what="another position opened")
        os.write(master, b"y\n")
        _, err = asked.communicate(timeout=60)
    finally:
        os.close(master)
    assert asked.returncode == 1, err
    assert b"is no longer open" in err and b"nothing was sent" in err, err
    assert db_value(db, "SELECT quantity FROM positions WHERE symbol = 'BTC/USDT'") > 0.014
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr


def test_a_ctl_close_of_dust_asks_nothing_and_says_it_is_left_as_dust(tmp_path, spawn_ffe):
    """Dust is no position: `ffe ctl close` of it at a terminal does not ask to close it at market, it goes, and
    the engine's refusal says it is below the venue's minimum order and left as dust."""
    import asyncio

    from ffe_engine.control import request

    db = tmp_path / "data" / "ffe.db"
    sock = tmp_path / "data" / "ffe.sock"
    an_operator_buy_then_stopped(tmp_path, spawn_ffe)
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="5"))
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(), timeout=60,
               what="the control socket")
    paused = asyncio.run(request(sock, "pause", {"by": "test"}))  # no entry over the dust meanwhile
    assert paused["ok"], paused
    status = asyncio.run(request(sock, "status", {"by": "test"}))
    (pos,) = [p for p in status["result"]["positions"] if p["symbol"] == "BTC/USDT"]
    left = 5.0 / pos["last"]  # worth 5, under the paper venue's minimum order value (10)
    sold = asyncio.run(request(sock, "order", {"symbol": "BTC/USDT", "side": "sell",
                                               "quantity": pos["quantity"] - left, "by": "test"}))
    assert sold["ok"] and sold["result"]["accepted"], sold

    def dust() -> bool:
        answer = asyncio.run(request(sock, "status", {"by": "test"}))
        return [(p["symbol"], p["dust"]) for p in answer["result"]["positions"]] == [("BTC/USDT", True)]
    wait_until(dust, timeout=60, what="the sale filled, dust left")
    orders = db_value(db, "SELECT COUNT(*) FROM orders")

    proc = answered_with_eof(tmp_path, "ctl", "close", "BTC/USDT")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[y/N]" not in proc.stdout, proc.stdout
    assert "below the venue's minimum order: left as dust" in proc.stderr, proc.stderr
    assert db_value(db, "SELECT COUNT(*) FROM orders") == orders  # nothing sent
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr
