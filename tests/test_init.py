"""`ffe init` writes the starting files of a new installation."""

from __future__ import annotations

from conftest import REPO, run_ffe
from ffe_engine.config import Settings, load_settings
from ffe_engine.scaffold import template_text


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ffe: error: ")
    return lines[0]


def test_the_shipped_templates_are_the_repository_files():
    assert template_text("config.toml") == (REPO / "config.toml").read_text()
    assert template_text("env.example") == (REPO / ".env.example").read_text()


def test_ffe_init_writes_a_config_that_is_the_documented_defaults(tmp_path):
    proc = run_ffe(tmp_path, "init", "site")
    assert proc.returncode == 0, proc.stderr
    site = tmp_path / "site"
    assert sorted(p.name for p in site.iterdir()) == [".env.example", "config.toml"]
    assert (site / "config.toml").read_text() == (REPO / "config.toml").read_text()
    assert (site / ".env.example").read_text() == (REPO / ".env.example").read_text()
    assert load_settings(site / "config.toml", environ={}).model_dump() == Settings().model_dump()
    assert proc.stdout.splitlines()[:2] == ["wrote site/config.toml", "wrote site/.env.example"]


def test_ffe_init_keeps_existing_files_unless_forced(tmp_path):
    (tmp_path / "config.toml").write_text('mode = "paper"\n')
    proc = run_ffe(tmp_path, "init")
    assert proc.returncode == 2
    assert "config.toml already exists (--force overwrites)" in one_error_line(proc.stderr)
    assert (tmp_path / "config.toml").read_text() == 'mode = "paper"\n'
    assert not (tmp_path / ".env.example").exists()  # all or nothing
    proc = run_ffe(tmp_path, "init", "--force")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "config.toml").read_text() == template_text("config.toml")
