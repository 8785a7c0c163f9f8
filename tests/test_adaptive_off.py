"""`ensemble.adaptive = false` as real subprocesses: the learner still scores every closed trade, but the weights it
learns are never applied, so no record says the weights moved (no `weights` event, no weight history) and
`ffe report providers` shows the equal weights in force, saying the learned ones are not applied."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import forked_ffe
from conftest import BTC_CSV, db_rows, ffe_cmd, ffe_env, run_ffe, sample_head
from ffe_engine import records

PROVIDERS = ("trend", "momentum", "mean_reversion", "breakout")  # the default ensemble
OFF = {"FFE_ENSEMBLE__ADAPTIVE": "false"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A full and a trades backtest run with adaptive off, each a whole process of its own: the data folder of each."""
    cwd = tmp_path_factory.mktemp("adaptive_off")
    (cwd / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 6000)))
    started = {level: forked_ffe.Popen(
        ffe_cmd("backtest", "BTC-USD_1h.csv", "--records", level, "--data-dir", f"data-{level}", "--log-dir",
                f"logs-{level}"), cwd=cwd, env=ffe_env(**OFF), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for level in ("full", "trades")}
    out = {}
    for level, proc in started.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        [out[level]] = (cwd / f"data-{level}" / "backtests").iterdir()
    return out


def learned(db: Path) -> dict[str, float]:
    [(value,)] = db_rows(db, "SELECT value FROM kv WHERE key = 'weights'")
    return json.loads(value)["weights"]


def assert_equal_weights_shown(cwd: Path, data: Path, env: dict[str, str] | None = None) -> None:
    data = data.relative_to(cwd)  # a control socket's path there fits
    text = run_ffe(cwd, "report", "providers", "--data-dir", str(data), env=env)
    assert text.returncode == 0, text.stderr
    first = text.stdout.splitlines()[0]
    assert "equal weights" in first and "ensemble.adaptive = false" in first, first
    assert "the learned ones are not applied" in text.stdout, text.stdout
    as_json = run_ffe(cwd, "report", "providers", "--data-dir", str(data), "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    r = json.loads(as_json.stdout)
    assert (r["weights"], r["adaptive"], r["weights_updated"]) == ("equal", False, None), r
    assert {p["provider"]: p["weight"] for p in r["providers"]} == {p: 0.25 for p in PROVIDERS}, r
    for line in text.stdout.splitlines()[3:3 + len(PROVIDERS)]:
        assert line.split()[1] == "0.250", text.stdout


def test_a_full_run_records_no_weights_event_for_weights_it_never_applied(runs):
    run = runs["full"]
    db = run / "ffe.db"
    assert db_rows(db, "SELECT COUNT(*) FROM provider_scores")[0][0] > 100  # the learner scored its trades
    assert max(abs(w - 0.25) for w in learned(db).values()) > 0.01  # and learned weights unlike the equal ones
    assert db_rows(db, "SELECT COUNT(*) FROM events WHERE event = 'weights'") == [(0,)]
    trail = run.parent.parent.parent / "logs-full" / "backtests" / run.name / "audit.jsonl.zst"
    lines = records.read_lines(trail)
    assert len(lines) > 1000 and not [r for r in lines if b'"event":"weights"' in r]


def test_a_trades_run_keeps_no_weight_history_of_weights_it_never_applied(runs):
    db = runs["trades"] / "ffe.db"
    [(value,)] = db_rows(db, "SELECT value FROM kv WHERE key = 'weight_history'")
    assert records.unpacked_value(json.loads(value)) == []
    assert max(abs(w - 0.25) for w in learned(db).values()) > 0.01


@pytest.mark.parametrize("level", ["full", "trades"])
def test_report_providers_of_a_run_shows_the_equal_weights_it_traded_on_whatever_the_config_says_now(runs, level):
    """The run says it ran with adaptive off: the report, asked with the default configuration (adaptive on), still
    shows the equal weights the run traded on, not the learned ones as the weights in force."""
    run = runs[level]
    assert_equal_weights_shown(run.parent.parent.parent, run)


def test_an_account_with_adaptive_off_records_no_weights_event_and_reports_the_equal_weights(tmp_path):
    env = ffe_env(FFE_MARKET__SEED=7, FFE_ENSEMBLE__WARMUP_TRADES=0, **OFF)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "400", env=env)
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "data" / "ffe.db"
    assert db_rows(db, "SELECT COUNT(*) FROM provider_scores")[0][0] > 10
    assert max(abs(w - 0.25) for w in learned(db).values()) > 0.01
    assert db_rows(db, "SELECT COUNT(*) FROM events WHERE event = 'weights'") == [(0,)]
    assert b'"event":"weights"' not in (tmp_path / "logs" / "audit.jsonl").read_bytes()
    assert_equal_weights_shown(tmp_path, tmp_path / "data", env=ffe_env(**OFF))
    # Adaptive on again, the next start applies what was learned: shown as the weights in force.
    on = run_ffe(tmp_path, "report", "providers", "--data-dir", "data", "--json")
    assert on.returncode == 0, on.stderr
    r = json.loads(on.stdout)
    assert r["weights"] == "stored" and r["adaptive"] is True, r
    assert {p["provider"]: p["weight"] for p in r["providers"]} == pytest.approx(learned(db)), r
