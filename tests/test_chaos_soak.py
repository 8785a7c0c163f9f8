"""A seeded chaos soak of a paper session: a headless engine trading while it is killed (SIGKILL), frozen and
thawed (SIGSTOP/SIGCONT), stopped in order (SIGTERM), starved of disk (a file size limit), and driven by the
operator (pause, resume, halt, re-arm, approval mode, approve, reject, flatten) at random times, then restarted.
The doctor's checks must pass after every ending, beside the running engine, and at the end (`ffe doctor`).

The operator's commands go over the engine's control socket as `ffe ctl` sends them, and the doctor's checks run
in this process: the soak spends its seconds on the engine, not on starting interpreters (the `ffe ctl` and
`ffe doctor` command lines have tests of their own, and the soak ends with one `ffe doctor`).

The schedule comes from one seed (FFE_CHAOS_SEED, printed with the counts, so a failure can be replayed; the
timing of a loaded machine still varies). Bounded: a fixed number of rounds of one to three seconds each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import forked_ffe
from conftest import db_value, ffe_cmd, ffe_env, kill_rounds, run_ffe, starter_config
from ffe_engine.config import load_settings
from ffe_engine.control import request
from ffe_engine.doctor import check

ROUNDS = 12
SEED = int(os.environ.get("FFE_CHAOS_SEED", "20261201"))


class Soak:
    def __init__(self, cwd: Path, seed: int) -> None:
        self.cwd = cwd
        self.rng = random.Random(seed)
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self.env = ffe_env(FFE_MARKET__SPEED="300", FFE_RISK__MIN_CONFIDENCE="0.3", FFE_MARKET__SEED=str(seed % 1000),
                           FFE_ENGINE__WARMUP_BARS="40", FFE_ENGINE__APPROVAL_TTL_S="5",
                           FFE_RISK__MAX_ORDERS_PER_MINUTE="1000", FFE_RISK__MAX_DAILY_TRADES="100000")
        self.proc: subprocess.Popen | None = None

    def where(self) -> str:
        return f"[chaos seed={self.seed} {dict(self.counts)}]"

    # ------------------------------------------------------------------ the engine
    def start(self, fsize: int | None = None) -> None:
        self.counts["starts"] += 1
        self.stderr = self.cwd / f"engine{self.counts['starts']}.stderr"

        starter_config(self.cwd)
        with open(self.stderr, "wb") as err:
            self.proc = forked_ffe.Popen(ffe_cmd("run", "--headless"), cwd=self.cwd, env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                         preexec_fn=forked_ffe.Limits(fsize=fsize))
        deadline = time.monotonic() + 60
        while "engine started" not in self.stderr.read_text(errors="replace"):
            if self.proc.poll() is not None:
                return  # it stopped by itself (a full disk at start): the round's checks say whether rightly
            assert time.monotonic() < deadline, f"{self.where()} the engine did not start: {self.log()}"
            time.sleep(0.05)

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ctl(self, command: str, **args: object) -> dict | None:
        """One operator command, as `ffe ctl` sends it; None when the engine did not answer (frozen, or gone)."""
        self.counts[f"ctl {command}"] += 1
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            return asyncio.run(request(self.cwd / "data" / "ffe.sock", command, {"by": "ctl", **args}, timeout=10))
        return None

    def doctor(self, when: str) -> None:
        settings = load_settings(self.cwd / "config.toml", environ=self.env, data_dir=self.cwd / "data",
                                 log_dir=self.cwd / "logs")
        self.counts["doctor"] += 1
        try:
            check(settings)
        except Exception as exc:
            raise AssertionError(f"{self.where()} doctor {when}: {exc}\n{self.log()}") from exc

    # ------------------------------------------------------------------ one random act
    def act(self) -> None:
        roll = self.rng.random()
        if roll < 0.12:
            self.counts["sigstop"] += 1
            self.proc.send_signal(signal.SIGSTOP)
            time.sleep(self.rng.uniform(0.05, 0.6))
            self.proc.send_signal(signal.SIGCONT)
        elif roll < 0.17:
            self.ctl("pause")
        elif roll < 0.42:
            self.ctl("resume", confirm=True)
        elif roll < 0.46:
            self.ctl("halt")
        elif roll < 0.49:
            self.ctl("flatten")
        elif roll < 0.57:
            self.ctl("mode", mode=self.rng.choice(["auto", "manual"]))
        elif roll < 0.80:
            status = self.ctl("status")
            if status is not None and status["ok"]:
                pending = status["result"]["approvals"]
                if pending:
                    verb = "approve" if self.rng.random() < 0.8 else "reject"
                    self.ctl(verb, id=self.rng.choice(pending)["approval_id"])
        elif roll < 0.85:
            self.doctor("beside the running engine")
        else:
            time.sleep(self.rng.uniform(0.1, 0.5))

    def end(self, kill: bool) -> None:
        """SIGKILL, or the orderly stop."""
        if kill:
            self.counts["sigkill"] += 1
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        else:
            self.counts["sigterm"] += 1
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=60)
            assert code == 0, f"{self.where()} orderly stop exited {code}: {self.log()}"


@pytest.fixture
def soak(tmp_path):
    s = Soak(tmp_path, SEED)
    yield s
    if s.alive():  # a failed round must not leave its engine running after the test
        s.proc.send_signal(signal.SIGCONT)
        s.proc.kill()
        s.proc.wait(timeout=30)


def test_a_paper_session_under_kills_stops_operator_commands_and_a_full_disk_keeps_every_invariant(tmp_path, soak):
    print(f"chaos seed={SEED} (replay with FFE_CHAOS_SEED={SEED})")
    full_disk_round = soak.rng.randrange(3, ROUNDS - 1)
    kills = kill_rounds(SEED, [n for n in range(ROUNDS) if n != full_disk_round], at_least=3)
    for n in range(ROUNDS):
        if n == full_disk_round and (tmp_path / "data" / "ffe.db").exists():
            # A disk that fills: the engine must stop by itself, HALTED, with one line, and nothing torn.
            soak.counts["disk full"] += 1
            soak.start(fsize=(tmp_path / "data" / "ffe.db").stat().st_size + 200_000)
            code = soak.proc.wait(timeout=120)
            log = soak.log()
            assert code == 1 and "Traceback" not in log, f"{soak.where()} {code}: {log}"
            assert log.rstrip().splitlines()[-1].startswith("ffe: error: "), f"{soak.where()} {log}"
            soak.doctor("after the disk filled")
            continue
        soak.start()
        if soak.rng.random() < 0.8:  # mostly re-armed: a HALTED or PAUSED engine places no orders
            soak.ctl("resume", confirm=True)
        # An operator command takes milliseconds: a round of one to three seconds holds a dozen random acts or more.
        until = time.monotonic() + soak.rng.uniform(1.0, 3.0)
        while time.monotonic() < until and soak.alive():
            soak.act()
        assert soak.alive(), f"{soak.where()} the engine stopped by itself: {soak.log()}"
        soak.end(kill=n in kills)
        soak.doctor(f"after round {n}")
    # The end: one last start and orderly stop, then every invariant once more.
    soak.start()
    soak.ctl("resume", confirm=True)
    time.sleep(1.0)
    soak.counts["sigterm"] += 1
    soak.proc.send_signal(signal.SIGTERM)
    assert soak.proc.wait(timeout=60) == 0, soak.log()
    soak.doctor("at the end")
    proc = run_ffe(tmp_path, "doctor", env=soak.env, timeout=120)  # and as the operator runs it
    assert proc.returncode == 0, f"{soak.where()} ffe doctor at the end: {proc.stderr.strip()}"
    db = tmp_path / "data" / "ffe.db"
    orders = db_value(db, "SELECT COUNT(*) FROM orders")
    fills = db_value(db, "SELECT COUNT(*) FROM fills")
    print(f"chaos seed={SEED} rounds={ROUNDS} orders={orders} fills={fills} {dict(sorted(soak.counts.items()))}")
    assert soak.counts["sigkill"] >= 3 and orders > 0 and fills > 0, soak.where()
