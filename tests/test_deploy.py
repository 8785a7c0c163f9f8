"""What ships in deploy/: the systemd unit, the Prometheus alert rules and the Grafana dashboard.

Each file is checked structurally everywhere, and by the real tool where it is installed (`systemd-analyze
verify`, `promtool check rules` from Debian's prometheus package): a machine without the tool still checks what
the tool would read. Every metric the rules and the dashboard name must be exported by a running engine's
/metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import yaml

from conftest import REPO, engine_session, make_settings
from test_monitor import exported, get

UNIT = REPO / "deploy" / "systemd" / "ffe.service"
BACKUP_UNIT = REPO / "deploy" / "systemd" / "ffe-backup.service"
BACKUP_TIMER = REPO / "deploy" / "systemd" / "ffe-backup.timer"
CRON = REPO / "deploy" / "cron" / "ffe-backup"
RULES = REPO / "deploy" / "prometheus" / "ffe-rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "ffe-dashboard.json"
METRIC = re.compile(r"\bffe_[a-z0-9_]+\b")


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: sections of keys, each key with every value it is given (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"ffe.service:{n}: bad section header"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"ffe.service:{n}: not KEY=VALUE inside a section"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_systemd_unit_is_hardened_and_speaks_sd_notify():
    s = unit_sections(UNIT.read_text())
    service = {k: v[-1] for k, v in s["Service"].items()}
    assert service["Type"] == "notify"  # READY after start-up and reconciliation, the watchdog from the loop
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    # A configuration error (exit 2) is the same at every start: not started again; a runtime failure (exit 1) is.
    # Nor a process SIGUSR1 (the kill switch) ended before ffe could take it, in the interpreter's first moments:
    # started again, it would trade with no halt stored.
    assert service["RestartPreventExitStatus"].split() == ["2", "SIGUSR1"]
    assert service["User"] not in ("root", "0") and service["Group"] not in ("root", "0")
    assert service["ProtectSystem"] == "strict"
    paths = service["ReadWritePaths"].split()
    assert any(p.endswith("/data") for p in paths) and any(p.endswith("/logs") for p in paths)
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["ProtectHome"] == "yes" and service["CapabilityBoundingSet"] == ""
    assert service["KillSignal"] == "SIGTERM"  # the ordered stop
    assert service["ExecStart"].split()[1:] == ["run", "--headless"]
    assert s["Install"]["WantedBy"] == ["multi-user.target"]
    assert "StartLimitBurst" in s["Unit"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """The unit as shipped names /opt/ffe; here its ExecStart points at this checkout's interpreter."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/ffe/.venv/bin/ffe run --headless" in text
    local = tmp_path / "ffe.service"
    local.write_text(text.replace("/opt/ffe/.venv/bin/ffe run", f"{sys.executable} -m ffe_cli run"))
    assert unit_sections(local.read_text())["Service"]["ExecStart"] == [f"{sys.executable} -m ffe_cli run --headless"]
    tool = shutil.which("systemd-analyze")
    if tool is not None:
        proc = subprocess.run([tool, "verify", str(local)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip() == "", proc.stderr  # a warning (an unknown key) is an error here


def test_the_backup_units_run_ffe_backup_hourly_where_the_engine_writes_it():
    service = {k: v[-1] for k, v in unit_sections(BACKUP_UNIT.read_text())["Service"].items()}
    assert service["Type"] == "oneshot" and service["ExecStart"].split()[1:] == ["backup"]
    assert service["User"] == "ffe" and service["ProtectSystem"] == "strict" and service["UMask"] == "0077"
    assert service["WorkingDirectory"] == "/opt/ffe"  # backup.dir ("backups") is relative to it
    backups = "/opt/ffe/backups"
    assert backups in service["ReadWritePaths"].split()
    # a running engine writes the backup itself: its own unit must be allowed to
    engine = {k: v[-1] for k, v in unit_sections(UNIT.read_text())["Service"].items()}
    assert backups in engine["ReadWritePaths"].split()
    timer = unit_sections(BACKUP_TIMER.read_text())
    assert timer["Timer"]["OnCalendar"] == ["hourly"] and timer["Timer"]["Persistent"] == ["yes"]
    assert timer["Timer"]["Unit"] == ["ffe-backup.service"] and timer["Install"]["WantedBy"] == ["timers.target"]
    # the cron line: minute hour day month weekday, the user, then the same command
    (line,) = [x for x in CRON.read_text().splitlines() if x and not x.startswith("#") and "=" not in x.split()[0]]
    fields = line.split(None, 6)
    assert fields[:5] == ["17", "*", "*", "*", "*"] and fields[5] == "ffe"
    assert "cd /opt/ffe && /opt/ffe/.venv/bin/ffe backup" in fields[6]


def test_systemd_analyze_verify_accepts_the_backup_service_and_timer(tmp_path):
    text = BACKUP_UNIT.read_text()
    assert "ExecStart=/opt/ffe/.venv/bin/ffe backup" in text
    (tmp_path / "ffe-backup.service").write_text(
        text.replace("/opt/ffe/.venv/bin/ffe backup", f"{sys.executable} -m ffe_cli backup"))
    (tmp_path / "ffe-backup.timer").write_text(BACKUP_TIMER.read_text())
    tool = shutil.which("systemd-analyze")
    if tool is not None:
        proc = subprocess.run([tool, "verify", str(tmp_path / "ffe-backup.timer"), str(tmp_path / "ffe-backup.service")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip() == "", proc.stderr


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for group in doc["groups"] for r in group["rules"]]


def test_the_alert_rules_cover_what_an_on_call_operator_needs(tmp_path):
    found = {r["alert"]: r for r in rules()}
    for name in ("FfeEngineDown", "FfeLoopStalled", "FfeHaltedTooLong", "FfeBreakerOpen", "FfeDrawdownNearLimit",
                 "FfeReconcileMismatch", "FfeAlertsNotLeaving", "FfeAlertingWatchdog"):
        assert name in found, name
    for r in found.values():
        assert r["labels"]["severity"] in ("page", "warn", "none"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
    assert found["FfeAlertingWatchdog"]["expr"].strip() == "vector(1)"  # always firing: a dead pipeline shows
    tool = shutil.which("promtool")
    if tool is not None:
        proc = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"SUCCESS: {len(found)} rules found" in proc.stdout


def test_the_dashboard_is_grafana_json_with_a_prometheus_query_per_panel():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["targets"] and all(METRIC.search(t["expr"]) for t in p["targets"]), p["title"]


async def test_every_metric_named_in_the_rules_and_the_dashboard_is_exported(tmp_path):
    named = set()
    for r in rules():
        named |= set(METRIC.findall(r["expr"]))
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        for t in p["targets"]:
            named |= set(METRIC.findall(t["expr"]))
    assert len(named) > 15
    settings = make_settings(tmp_path, alerts={"webhook_url": "http://127.0.0.1:9/hook"})
    async with engine_session(settings) as host:
        status, text = await get(host.monitor.url + "/metrics")
    assert status == 200
    missing = named - exported(text)
    assert not missing, f"named in deploy/ but not exported: {sorted(missing)}"
