"""The real command in a real terminal: `make run` (and `ffe run`) inside a private tmux server at 80x24, driven
with keys and signals the way an operator over SSH would, checked on screen and in the engine's database."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from conftest import REPO, audit_lines, db_value, ffe_env, run_ffe, starter_config, wait_until


class Tmux:
    """A tmux server of the test's own (its socket under tmp_path), running one command in an 80x24 pane."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.socket = tmp_path / "tmux.sock"
        self.env = env

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], env=self.env, capture_output=True, text=True,
                              check=True, timeout=30).stdout

    def start(self, command: str, cwd: Path) -> None:
        self("new-session", "-d", "-x", "80", "-y", "24", "-c", str(cwd), command)

    def screen(self) -> str:
        try:
            return self("capture-pane", "-p")
        except subprocess.CalledProcessError:
            return ""  # the pane is gone

    def press(self, key: str) -> None:
        self("send-keys", key)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        return wait_until(lambda: text in (s := self.screen()) and s, timeout=timeout,
                          what=f"{text!r} on screen; last screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], env=self.env, capture_output=True, timeout=30)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return ffe_env(FFE_STORAGE__PATH=str(tmp_path / "data" / "ffe.db"), FFE_LOGGING__DIR=str(tmp_path / "logs"),
                   FFE_MARKET__SPEED="4", TERM="xterm-256color", **extra)


def test_make_run_in_tmux_shows_its_panes_and_K_y_q_y_halts_then_quits(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    rc = tmp_path / "rc"
    tmux = Tmux(tmp_path, _env(tmp_path))
    try:
        # `-o .venv/.installed`: run the installed console, never reinstall from inside a test.
        tmux.start(f"make -o .venv/.installed run; echo $? > {rc}", REPO)
        screen = tmux.wait_for("RUNNING")
        for pane in ("PAPER", "equity", "Positions", "Ensemble votes", "Log", "K Kill switch", "q Quit"):
            assert pane in screen, screen
        tmux.press("d")  # decisions in the log (off at start)
        tmux.wait_for(" decision ")  # events flow into the log pane
        tmux.press("K")
        tmux.wait_for("KILL SWITCH")
        tmux.press("y")
        tmux.wait_for("HALTED")
        wait_until(lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", timeout=30, what="HALTED")
        tmux.press("q")
        tmux.wait_for("Quit the console")
        tmux.press("y")
        wait_until(rc.exists, timeout=60, what="the console to exit")
        assert rc.read_text().strip() == "0"
    finally:
        tmux.close()
    assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
    events = audit_lines(tmp_path / "logs" / "audit.jsonl")
    assert any(e["event"] == "kill_switch" and e["by"] == "operator" for e in events)
    assert events[-1]["event"] == "run" and events[-1]["phase"] == "stop"


def _start_ffe(tmp_path: Path, tmux: Tmux, rc: Path) -> int:
    pid_file = tmp_path / "pid"
    starter_config(tmp_path)
    tmux.start(f"sh -c 'echo $$ > {pid_file}; exec {REPO / '.venv' / 'bin' / 'ffe'} run'; echo $? > {rc}", tmp_path)
    tmux.wait_for("RUNNING")
    return int(pid_file.read_text())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigusr1_halts_and_sigterm_stops_the_console_in_order(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    rc = tmp_path / "rc"
    tmux = Tmux(tmp_path, _env(tmp_path))
    try:
        pid = _start_ffe(tmp_path, tmux, rc)
        os.kill(pid, signal.SIGUSR1)
        tmux.wait_for("HALTED")
        assert db_value(db, "SELECT by FROM engine_state") == "signal"
        os.kill(pid, signal.SIGTERM)
        wait_until(rc.exists, timeout=60, what="the console to exit on SIGTERM")
        assert rc.read_text().strip() == "0"
    finally:
        tmux.close()
    events = audit_lines(tmp_path / "logs" / "audit.jsonl")
    assert events[-1]["event"] == "run" and events[-1]["phase"] == "stop" and events[-1]["detail"]["state"] == "HALTED"
    assert not (tmp_path / "data" / "ffe.sock").exists()


def test_the_terminal_going_away_stops_the_engine_in_order(tmp_path):
    """Killing the tmux server closes the pane's terminal: the console gets SIGHUP, as over a dropped SSH link."""
    db = tmp_path / "data" / "ffe.db"
    tmux = Tmux(tmp_path, _env(tmp_path))
    try:
        pid = _start_ffe(tmp_path, tmux, tmp_path / "rc")
        tmux.press("p")
        wait_until(lambda: db_value(db, "SELECT state FROM engine_state") == "PAUSED", timeout=30, what="PAUSED")
    finally:
        tmux.close()
    wait_until(lambda: _gone(pid), timeout=60, what="the console to exit after SIGHUP")
    events = audit_lines(tmp_path / "logs" / "audit.jsonl")
    assert events[-1]["event"] == "run" and events[-1]["phase"] == "stop"
    assert events[-1]["detail"]["state"] == "PAUSED"
    # The data-dir lock was released: an engine starts on the same directory, in the state left behind.
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "1", env=_env(tmp_path), timeout=90)
    assert again.returncode == 0, again.stderr
    assert db_value(db, "SELECT state FROM engine_state") == "PAUSED"
