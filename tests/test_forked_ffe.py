"""The tests' `ffe` processes are forked from a server that has imported ffe (tests/forked_ffe.py): a forked one
must be the process an exec'd one is, to the tests that read it: the same output and exit code, its own pid that
signals reach, the caller's directory, environment, umask and descriptors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import forked_ffe
from conftest import ffe_cmd, ffe_env, starter_config, wait_until


@pytest.fixture(autouse=True)
def forking(monkeypatch):
    """The fork server's processes, also in a suite run with every other process exec'd (TESTS_EXEC_FFE=1)."""
    monkeypatch.delenv("TESTS_EXEC_FFE", raising=False)


def both_ways(cwd: Path, *args: str, **kwargs) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    forked = forked_ffe.run(ffe_cmd(*args), cwd=cwd, env=ffe_env(), capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, **kwargs)
    execd = subprocess.run(ffe_cmd(*args), cwd=cwd, env=ffe_env(), capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, **kwargs)
    return forked, execd


def test_a_forked_command_says_and_exits_as_an_exec_d_one(tmp_path):
    for args in (("config", "check", "--config", "missing.toml"), ("--version",), ("ctl", "status"),
                 ("run", "--headless", "--max-bars", "2", "--data-dir", "d")):
        starter_config(tmp_path)
        forked, execd = both_ways(tmp_path, *args)
        assert forked.returncode == execd.returncode, (args, forked.stderr, execd.stderr)
        if args[0] == "run":  # its log lines carry times and pids: their messages are compared
            strip = [line.split("]", 1)[-1].split()[0] for line in forked.stderr.splitlines()]
            assert strip == [line.split("]", 1)[-1].split()[0] for line in execd.stderr.splitlines()]
        else:
            assert (forked.stdout, forked.stderr) == (execd.stdout, execd.stderr), args


def test_a_forked_engine_is_a_process_of_its_own_that_signals_reach(tmp_path):
    starter_config(tmp_path)
    with open(tmp_path / "err", "wb") as err:
        proc = forked_ffe.Popen(ffe_cmd("run", "--headless"), cwd=tmp_path, env=ffe_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    assert isinstance(proc, forked_ffe.ForkedProcess)  # forked, not exec'd: the server's process, not python -m
    assert b"ffe_fork_server" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    wait_until(lambda: b"engine started" in (tmp_path / "err").read_bytes(), what="the engine started")
    assert (tmp_path / "data" / "ffe.lock").read_text().split()[0] == str(proc.pid)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert b"engine stopped" in (tmp_path / "err").read_bytes()
    killed = forked_ffe.Popen(ffe_cmd("run", "--headless"), cwd=tmp_path, env=ffe_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed.kill()
    assert killed.wait(timeout=60) == -signal.SIGKILL


def test_a_forked_engine_has_the_caller_s_resource_limits(tmp_path):
    # A test lowers its own limit for the engine it starts to inherit (test_control_limits: a descriptor limit).
    import resource

    starter_config(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    try:
        proc = forked_ffe.Popen(ffe_cmd("run", "--headless"), cwd=tmp_path, env=ffe_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert isinstance(proc, forked_ffe.ForkedProcess)

        def open_files() -> list[str]:  # (soft, hard), once the child has made itself the caller's process
            limits = Path(f"/proc/{proc.pid}/limits").read_text().splitlines()
            return next(x for x in limits if x.startswith("Max open files")).split()[3:5]

        wait_until(lambda: open_files() == ["128", str(hard)], timeout=10, what=f"128 open files ({open_files()})")
        assert b"ffe_fork_server" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        proc.kill()
        proc.wait(timeout=60)


def test_a_forked_command_has_the_caller_s_environment_umask_pipes_and_limits(tmp_path):
    # What the command reads of its environment and writes with its umask: a config check names the variable's
    # value, an init writes files under the umask.
    starter_config(tmp_path)
    env = ffe_env(FFE_RISK__MAX_OPEN_POSITIONS="3")
    shown = forked_ffe.run(ffe_cmd("config", "check"), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and "max_open_positions = 3" in shown.stdout, shown.stdout
    before = os.umask(0o077)
    try:
        made = forked_ffe.run(ffe_cmd("init", "site"), cwd=tmp_path, env=ffe_env(), capture_output=True, timeout=60)
    finally:
        os.umask(before)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "site" / "config.toml").stat().st_mode & 0o077 == 0
    with pytest.raises(FileNotFoundError):  # as subprocess says it, in the caller
        forked_ffe.run(ffe_cmd("config", "check"), cwd=tmp_path / "nowhere", env=ffe_env(), capture_output=True)
    read, write = os.pipe()
    try:
        piped = forked_ffe.Popen(ffe_cmd("config", "check"), cwd=tmp_path, env=ffe_env(), stdout=write,
                                 stderr=subprocess.PIPE)
        os.close(write)
        with os.fdopen(read, "rb") as r:
            assert b"max_open_positions" in r.read()
        assert piped.wait(timeout=60) == 0
    finally:
        if piped.stderr is not None:
            piped.stderr.close()
    # A file-size limit: the process's writes past it fail (SIGXFSZ ignored), as they would under a preexec_fn.
    small = forked_ffe.run([sys.executable, "-m", "ffe_cli", "run", "--headless", "--max-bars", "3"], cwd=tmp_path,
                           env=ffe_env(), capture_output=True, text=True, timeout=60,
                           preexec_fn=forked_ffe.Limits(fsize=4096))
    assert small.returncode > 0, small.stderr[-2000:]
