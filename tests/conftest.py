"""Shared fixtures: settings under the test's tmp_path, the `ffe` command as a real subprocess, an engine opened
in-process exactly as the console and the headless runner open it, and readers for the audit file and database.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import forked_ffe
from ffe_engine.config import Settings

# A suite started in the background of a shell without job control (`make test &`, a script) inherits SIGINT
# ignored, and so would every process it starts: an ffe started so would never see the ^C the tests send it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]

# Under `make test`, coverage.py measures each test worker, and would measure every subprocess the same way, at
# about 0.1 s of CPU each to start: on Python 3.12 and newer a worker's subprocesses are measured by the light
# collector in tests/subprocess_coverage instead (its docstring says how), the Makefile merging what they record.
if (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("SUBPROCESS_COVERAGE_DIR")
        and "COVERAGE_PROCESS_CONFIG" in os.environ and sys.version_info >= (3, 12)):
    del os.environ["COVERAGE_PROCESS_CONFIG"]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "tests" / "subprocess_coverage"), os.environ.get("PYTHONPATH")) if p)

SAMPLES = REPO / "samples"
BTC_CSV = SAMPLES / "BTC-USD_1h_2020-2023.csv.gz"
ETH_CSV = SAMPLES / "ETH-USD_1h_2020-2023.csv.gz"


def sample_head(path: Path, rows: int) -> list[str]:
    """The header line and the first `rows` data lines of a sample file, as text lines."""
    with gzip.open(path, "rt", newline="") as f:
        return [next(f) for _ in range(rows + 1)]


# ---------------------------------------------------------------------------------------------------- settings
def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with the database and logs under tmp_path, an unpaced market with a fixed seed and warm-up.

    Each keyword is a config table (`risk={"max_open_positions": 1}`) merged over these defaults, or a
    top-level key (`mode="paper"`).
    """
    values: dict[str, Any] = {
        "engine": {"warmup_bars": 100},
        "market": {"speed": 0.0, "seed": 7},
        "storage": {"path": str(tmp_path / "data" / "ffe.db")},
        "logging": {"dir": str(tmp_path / "logs")},
        "monitor": {"port": 0},  # any free port: engines of other tests may be up at the same time
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            values.setdefault(key, {}).update(value)
        else:
            values[key] = value
    return Settings.model_validate(values)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    return make_settings


# ---------------------------------------------------------------------------------------------------- the CLI
def ffe_env(**extra: Any) -> dict[str, str]:
    """The environment for an `ffe` subprocess: no FFE_ variable from the caller's shell, an unpaced market."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFE_")}
    env["FFE_MARKET__SPEED"] = "0"
    env["FFE_MONITOR__PORT"] = "0"  # any free port: engines of other tests may be up at the same time
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


# A subprocess's preexec_fn: as root, it starts without the capabilities that pass files' permissions, so a directory
# or file made read-only refuses it for real, as it would any user (ffe_fork_server.limit).
without_permission_overrides = forked_ffe.Limits(no_permission_overrides=True)


def starter_config(cwd: Path) -> Path:
    """The config.toml `ffe init` writes (the documented defaults), in cwd unless one is there already."""
    from ffe_engine.scaffold import template_text

    path = cwd / "config.toml"
    if not path.exists():
        path.write_text(template_text("config.toml"))
    return path


def config_for_run(cwd: Path, args: tuple[str, ...] | list[str]) -> None:
    """`ffe run` starts only from a config file, as an operator's does after `ffe init`: a test that runs the
    engine without writing a config of its own runs it on the documented defaults."""
    if args and args[0] == "run" and "--config" not in args:
        starter_config(cwd)


def ffe_cmd(*args: str, python_flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_flags, "-m", "ffe_cli", *map(str, args)]


def run_ffe(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 90.0,
            python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run `ffe ARGS` to the end in cwd; stdout and stderr as text."""
    config_for_run(cwd, args)
    return forked_ffe.run(ffe_cmd(*args, python_flags=python_flags), cwd=cwd, env=env or ffe_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_bounded(cwd: Path, *args: str, pass_fds: tuple[int, ...] = (),
                timeout: float = 30) -> subprocess.CompletedProcess:
    """`ffe ARGS` with its memory bounded (3 GB of address space) and its time (`timeout`): a command that reads a
    device without end, or waits on a FIFO, fails the test instead of taking the machine's memory or hanging.
    `pass_fds`: descriptors of the test's the command inherits (a pipe it reads as /dev/fd/N)."""
    starter_config(cwd)
    try:
        return forked_ffe.run(ffe_cmd(*args), cwd=cwd, env=ffe_env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL,
                              preexec_fn=forked_ffe.Limits(address_space=3 << 30), pass_fds=pass_fds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ffe {' '.join(args)} still running after {timeout:g} s")


async def run_ffe_paging(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, Any]:
    """Run `ffe ARGS` to the end in cwd with its alerts going to a webhook receiver of the test's: the process, and
    the receiver (stopped) with what it was sent."""
    import asyncio

    from receiver import Receiver

    hook = await Receiver().start()
    try:
        proc = await asyncio.to_thread(run_ffe, cwd, *args, env=ffe_env(FFE_ALERTS__WEBHOOK_URL=hook.url + "/hook"))
    finally:
        await hook.stop()
    return proc, hook


def ffe_in_process(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`ffe ARGS` in cwd, run by this process through the command's own entry point (`ffe_cli.main.main`): its
    output captured, its exit code returned, the environment and directory put back after. For the many variants
    of one refusal (a value out of bounds, a damaged record): each family's first variant runs as a real `ffe`
    process (`run_ffe`), and the rest here, as a process costs ~0.3 s of CPU to start and a few hundred of them
    are most of the suite's time. Only for commands that end before logging is set up or an engine starts."""
    from ffe_cli.main import main

    config_for_run(cwd, args)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env if env is not None else ffe_env())
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["ffe", *args], code, out.getvalue(), err.getvalue())


class FfeProcess:
    """A running `ffe` subprocess whose output goes to files (a pipe nobody reads could stall it)."""

    def __init__(self, cwd: Path, args: tuple[str, ...], env: dict[str, str], name: str) -> None:
        self.cwd = cwd
        self.stdout_path = cwd / f"{name}.stdout"
        self.stderr_path = cwd / f"{name}.stderr"
        config_for_run(cwd, args)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = forked_ffe.Popen(ffe_cmd(*args), cwd=cwd, env=env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def spawn_ffe():
    """Start `ffe ARGS` in the background: spawn_ffe(cwd, *args, env=..., name=...). Killed at teardown if alive."""
    started: list[FfeProcess] = []

    def spawn(cwd: Path, *args: str, env: dict[str, str] | None = None, name: str = "ffe") -> FfeProcess:
        p = FfeProcess(cwd, tuple(map(str, args)), env or ffe_env(), f"{name}{len(started)}")
        started.append(p)
        return p

    yield spawn
    for p in started:
        p.kill()


# ---------------------------------------------------------------------------------------------------- reading results
def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until predicate() is truthy and return its value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)


def db_rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows from a database that an engine may be writing at the same moment (WAL: readers do not block)."""
    conn = sqlite3.connect(str(db), timeout=10)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def db_value(db: Path, sql: str, params: tuple = ()) -> Any:
    rows = db_rows(db, sql, params)
    return rows[0][0] if rows else None


def audit_lines(path: Path) -> list[dict]:
    """Every line of an audit file (a backtest's compressed one too), each required to be one whole JSON object with
    ts, seq and event."""
    if path.suffix == ".zst":
        from ffe_engine.records import read_lines

        raw = b"".join(line + b"\n" for line in read_lines(path))
    else:
        raw = path.read_bytes()
    assert raw, f"{path} is empty"
    assert raw.endswith(b"\n"), f"{path} ends in a partial line: {raw[-120:]!r}"
    records = []
    for n, line in enumerate(raw.split(b"\n")[:-1], 1):
        rec = json.loads(line)  # a partial or corrupt line fails here
        assert isinstance(rec, dict), f"{path}:{n} is not a JSON object"
        for key in ("ts", "seq", "event"):
            assert key in rec, f"{path}:{n} has no {key!r}: {line[:200]!r}"
        records.append(rec)
    return records


def count_events(path: Path, name: str) -> int:
    """How many whole lines of an audit file that may still be growing are `name` events."""
    if not path.exists():
        return 0
    needle = f'"event":"{name}"'.encode()
    return sum(1 for line in path.read_bytes().split(b"\n")[:-1] if needle in line)


def kill_rounds(seed: int, rounds: list[int], at_least: int) -> set[int]:
    """The rounds of a chaos soak that end in SIGKILL rather than the orderly stop: three in four, drawn from the seed
    alone before the soak starts, so that how many random acts a round's timing let in cannot change them, and never
    fewer than `at_least` (a soak that killed once would prove little about restarts)."""
    rng = random.Random(seed)
    killed = {n for n in rounds if rng.random() < 0.75}
    spared = [n for n in rounds if n not in killed]
    killed.update(rng.sample(spared, max(0, at_least - len(killed))))
    return killed


def assert_strictly_increasing(seqs: list[int]) -> None:
    bad = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
    assert not bad, f"seq not strictly increasing at {bad[:5]}"


# ---------------------------------------------------------------------------------------------------- in-process engine
@contextlib.asynccontextmanager
async def engine_session(settings: Settings, **kwargs: Any):
    """An engine opened by `open_engine` (state restored, orders recovered, indicators warmed), closed in order
    at the end: stopped, store closed, data-dir lock released. Its log lines go to `running.log` (StringIO)."""
    from ffe_engine.host import EngineHost

    log = io.StringIO()
    running = await EngineHost.open(settings, log_stream=log, **kwargs)
    running.log = log  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        await running.close()


# ---------------------------------------------------------------------------------------------------- order
# The longest modules first (by `pytest --durations=0`). `make test` hands whole modules to its workers (a
# module's fixtures are built once, on one worker) in this order, so the long ones run side by side from the start
# and the many short ones fill in the end, instead of one long module keeping a worker busy after the others are
# done. Several modules mostly wait (on an exchange's settle window or Retry-After, a breaker, a poll: live_books,
# reconcile_stuck_in_doubt, chaos_soak_live, reconcile, chaos_soak, download): with six workers on two cores, those
# that compute keep the cores busy meanwhile. Within a module the order is kept; a module not named here runs after
# these, in its usual order.
LONGEST_FIRST = (
    "test_live_books.py", "test_reconcile_stuck_in_doubt.py", "test_chaos_soak.py", "test_tui_console.py",
    "test_tui_attach.py", "test_tui_snapshots.py", "test_live_engine.py", "test_chaos_soak_live.py",
    "test_audit_cli.py", "test_reconcile.py", "test_audit_trail_complete.py",
    "test_tui_pressure.py", "test_tui_views.py", "test_backtest_memory.py",
    "test_disk_failures.py", "test_backtest_columns.py", "test_backup.py", "test_monitor.py",
    "test_backtest_records.py", "test_fill_records_atomic.py", "test_alerts.py", "test_damaged_database.py",
    "test_signals_stop.py", "test_ccxt_venue.py", "test_tui_keys.py", "test_console_terminal.py", "test_ctl_views.py",
    "test_paper_book_durable.py", "test_download.py", "test_control_socket.py", "test_max_positions.py",
    "test_indicator_columns.py", "test_live_faults.py", "test_restore_recovery.py", "test_report_cli.py",
    "test_live_restart.py", "test_live_start.py", "test_engine_ended.py", "test_datacache.py", "test_gates_basic.py",
    "test_ensemble.py",
)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _process_state() -> dict[str, Any]:
    return {**{sig.name: signal.getsignal(sig) for sig in STOP_SIGNALS}, "umask": _umask(), "cwd": os.getcwd(),
            "environment": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}}  # pytest's own


@pytest.fixture(autouse=True)
def process_left_as_it_was():
    """A test that leaves this process's stop signals, umask, directory or environment changed fails: every test
    after it on the worker, and every process they start, would inherit them (SIGINT ignored: an `ffe` that the
    tests' ^C cannot stop, on one worker and not another; a umask: files made with other modes)."""
    before = _process_state()
    yield
    after = _process_state()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    if "environment" in changed:
        env_before, env_after = changed.pop("environment")
        changed.update({f"${k}": "changed" for k in set(env_before) | set(env_after)
                        if env_before.get(k) != env_after.get(k)})  # names only: a value may be a secret
    assert not changed, f"process state changed by the test: {changed}"


def pytest_sessionstart(session: pytest.Session) -> None:
    forked_ffe.start(ffe_env())  # before any test's event loop runs: its imports take most of a second


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort: the rest keep their order


# ---------------------------------------------------------------------------------------------------- the collector
# The console tests allocate heavily (each Textual frame makes thousands of short-lived containers) and leave each
# app as cyclic garbage: at the default thresholds the collector ran a full collection every test or two, each walking
# every object the worker holds (the imports included), about a fifth of the console tests' CPU. What the worker has
# imported by the end of collection lives to the end: it is frozen out of the collections, and young objects are
# collected less often, most of them dead by then.
def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    # Textual caches a method of each widget's render cache (lru_cache on StylesCache.get_inner_outer), which keeps
    # the last 1024 of them alive with the lines they rendered: across tests, the ended apps' widgets, which every
    # full collection then walks again.
    styles = sys.modules.get("textual._styles_cache")
    if styles is not None:
        styles.StylesCache.get_inner_outer.cache_clear()


# ---------------------------------------------------------------------------------------------------- no skips
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:  # a skip or an xfail, in setup or in the call
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped or xfailed test proves nothing: it fails the run."""
    if _SKIPPED and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\n{len(_SKIPPED)} skipped or xfailed tests (not allowed): {', '.join(_SKIPPED[:10])}",
              file=sys.stderr)
