"""A `[y/N]` prompt answered with end of input (Ctrl-D on a terminal) is a "no": one line, exit 2, nothing sent or
removed; it ended in a Python traceback, exit 1."""

from __future__ import annotations

import os
import pty
import subprocess

import pytest

from conftest import ffe_cmd, ffe_env


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


@pytest.mark.parametrize("args", [("ctl", "flatten"), ("ctl", "close", "BTC/USDT"), ("ctl", "cancel", "ffe-x")])
def test_end_of_input_at_a_ctl_prompt_confirms_nothing(tmp_path, args):
    proc = answered_with_eof(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"ffe: error: ffe ctl {args[1]}: not confirmed, nothing sent", proc.stderr
