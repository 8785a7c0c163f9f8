"""`ffe init` writes the starting files of a new installation; `ffe run` refuses to start without a config file."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import forked_ffe
from conftest import REPO, ffe_cmd, ffe_env, run_ffe
from ffe_engine.config import Settings, load_settings
from ffe_engine.scaffold import template_text


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ffe: error: ")
    return lines[0]


def test_the_shipped_templates_are_the_repository_files():
    # After editing the repository's file: cp config.toml ffe_engine/templates/config.toml (and the same for
    # .env.example -> env.example), so that `ffe init` writes what the repository documents.
    assert template_text("config.toml") == (REPO / "config.toml").read_text(), "copy config.toml to the template"
    assert template_text("env.example") == (REPO / ".env.example").read_text(), "copy .env.example to the template"


def test_ffe_init_writes_a_config_that_is_the_documented_defaults(tmp_path):
    proc = run_ffe(tmp_path, "init", "site")
    assert proc.returncode == 0, proc.stderr
    site = tmp_path / "site"
    assert sorted(p.name for p in site.iterdir()) == [".env.example", "config.toml"]
    assert (site / "config.toml").read_text() == (REPO / "config.toml").read_text()
    assert (site / ".env.example").read_text() == (REPO / ".env.example").read_text()
    assert load_settings(site / "config.toml", environ={}).model_dump() == Settings().model_dump()
    assert proc.stdout.splitlines()[:2] == ["wrote site/config.toml", "wrote site/.env.example"]


def test_ffe_init_says_the_next_command_as_the_operator_can_type_it(tmp_path):
    # `make install` puts ffe in .venv/bin, not on the PATH: the next step names the program that was run, whole
    # once it follows a cd.
    script = Path(sys.executable).parent / "ffe"
    env = ffe_env(PATH="/usr/bin:/bin")
    proc = subprocess.run([str(script), "init", "site"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].endswith(f"then cd site && {script} run"), proc.stdout


def test_ffe_init_says_the_next_command_quoted_for_the_shell(tmp_path):
    # A directory name with a space or a non-ASCII letter, pasted as printed, is one word to the shell.
    script = Path(sys.executable).parent / "ffe"
    proc = subprocess.run([str(script), "init", "my site/ü"], cwd=tmp_path, env=ffe_env(PATH="/usr/bin:/bin"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    command = proc.stdout.splitlines()[-1].split("; then ", 1)[1]
    assert shlex.split(command) == ["cd", "my site/ü", "&&", str(script), "run"], command
    cd = command.rsplit(" && ", 1)[0]
    shell = subprocess.run(["sh", "-c", f"{cd} && pwd"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0 and shell.stdout.strip() == str(tmp_path / "my site" / "ü"), shell.stderr


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


@pytest.mark.parametrize("blocked", ["config.toml", ".env.example"])
def test_ffe_init_force_over_a_directory_names_it_and_writes_nothing(tmp_path, blocked):
    """A directory where a starting file goes: the one line names it, and the other file is left as it was (it
    was overwritten first, then the line named the directory the files go into)."""
    (tmp_path / "config.toml").write_text("# my own\n")
    (tmp_path / ".env.example").write_text("# mine too\n")
    (tmp_path / blocked).unlink()
    (tmp_path / blocked).mkdir()
    proc = run_ffe(tmp_path, "init", "--force")
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert line == f"ffe: error: {Path('.') / blocked}: is a directory, not a file: nothing written", line
    other = ".env.example" if blocked == "config.toml" else "config.toml"
    assert (tmp_path / other).read_text() == ("# my own\n" if other == "config.toml" else "# mine too\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.toml", ".env.example"])


@pytest.mark.parametrize("through_a_link", [False, True])
def test_ffe_init_force_over_a_fifo_names_it_and_writes_nothing(tmp_path, through_a_link):
    """A FIFO (or a device) where a starting file goes, or a link to one: refused as ffe refuses one among its
    files, never replaced by a regular file nor written into."""
    if through_a_link:
        os.mkfifo(tmp_path / "pipe")
        (tmp_path / "config.toml").symlink_to("pipe")
        kind = "a FIFO (a link to pipe)"
    else:
        os.mkfifo(tmp_path / "config.toml")
        kind = "a FIFO"
    for force in (["--force"], []):  # without --force too: not told that --force would overwrite it
        proc = run_ffe(tmp_path, "init", *force)
        assert proc.returncode == 2, proc.stderr
        line = one_error_line(proc.stderr)
        assert line == f"ffe: error: {Path('.') / 'config.toml'}: is {kind}, not a file: nothing written", line
    assert (tmp_path / "config.toml").is_fifo()
    assert not (tmp_path / ".env.example").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.toml", *(["pipe"] if through_a_link else [])])


@pytest.mark.parametrize("force", [False, True])
def test_ffe_init_into_a_directory_it_cannot_write_says_so_in_one_line(tmp_path, force):
    """A read-only directory (for root a read-only mount, where even removing a file that is not there fails):
    one line, exit 2, and what was there is left as it was."""
    from test_disk_failures import read_only

    site = tmp_path / "site"
    site.mkdir()
    if force:
        (site / "config.toml").write_text("# my own\n")
        (site / ".env.example").write_text("# mine too\n")
    with read_only(site):
        proc = run_ffe(tmp_path, "init", "site", *(["--force"] if force else []))
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert line.startswith(f"ffe: error: {Path('site') / 'config.toml'}: cannot write: "), line
    assert line.endswith(": nothing written"), line
    if force:
        assert (site / "config.toml").read_text() == "# my own\n"
        assert (site / ".env.example").read_text() == "# mine too\n"
    else:
        assert list(site.iterdir()) == []


def test_ffe_run_without_a_config_file_says_where_it_looked_and_starts_nothing(tmp_path):
    # Not through run_ffe: that gives `ffe run` the starter config, as `ffe init` would.
    proc = forked_ffe.run(ffe_cmd("run", "--headless", "--max-bars", "1"), cwd=tmp_path, env=ffe_env(),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert f"{tmp_path / 'config.toml'} not found" in line and "ffe init" in line and "--config" in line
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


def test_ffe_run_after_ffe_init_names_its_config_file_and_data_directory(tmp_path):
    assert run_ffe(tmp_path, "init").returncode == 0
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "2", "--data-dir", "state")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [line] = [line for line in proc.stderr.splitlines() if "settings" in line and "data_dir=" in line]
    assert f"files={tmp_path / 'config.toml'}" in line and f"data_dir={tmp_path / 'state'}" in line
    assert (tmp_path / "state" / "ffe.db").exists()


def test_ffe_init_says_a_cd_that_works_for_a_directory_named_like_an_option(tmp_path):
    # `cd -x` is an invalid option and `cd -` goes to the previous directory: the printed command must reach DIR.
    script = Path(sys.executable).parent / "ffe"
    for name in ("-x", "-"):
        proc = subprocess.run([str(script), "init", "--", name], cwd=tmp_path, env=ffe_env(PATH="/usr/bin:/bin"),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        cd = proc.stdout.splitlines()[-1].split("; then ", 1)[1].rsplit(" && ", 1)[0]
        shell = subprocess.run(["sh", "-c", f"{cd} && pwd"], cwd=tmp_path, capture_output=True, text=True,
                               timeout=60, env={"PATH": "/usr/bin:/bin", "OLDPWD": "/"})
        assert shell.returncode == 0 and shell.stdout.strip() == str(tmp_path / name), (cd, shell.stderr)


def test_ffe_init_shows_a_directory_name_holding_control_characters_escaped(tmp_path):
    proc = run_ffe(tmp_path, "init", "a\x1b[31mb\nc")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and len(proc.stdout.splitlines()) == 3, proc.stdout
    assert proc.stdout.splitlines()[0] == "wrote a\\x1b[31mb\\nc/config.toml", proc.stdout
    assert (tmp_path / "a\x1b[31mb\nc" / "config.toml").exists()
    # The next step, pasted as printed into bash, reaches the directory: the name in bash's $'...' quoting.
    cd = proc.stdout.splitlines()[-1].split("; then ", 1)[1].rsplit(" && ", 1)[0]
    assert cd == "cd $'a\\x1b[31mb\\nc'", cd
    shell = subprocess.run(["bash", "-c", f"{cd} && pwd"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0 and shell.stdout.strip() == str(tmp_path / "a\x1b[31mb\nc"), shell.stderr


def test_ffe_init_s_next_step_reaches_a_directory_whose_name_is_not_utf_8(tmp_path):
    # A name's bytes that are no UTF-8 reach Python as surrogate escapes: said as \uDCxx, bash made other bytes of
    # them. In $'...' they are the name's own bytes, \xHH.
    name = os.fsdecode(b"lat\xe9-\xff\x9b")
    proc = run_ffe(tmp_path, "init", name)
    assert proc.returncode == 0, proc.stderr
    cd = proc.stdout.splitlines()[-1].split("; then ", 1)[1].rsplit(" && ", 1)[0]
    assert cd == "cd $'lat\\xe9-\\xff\\x9b'", cd
    shell = subprocess.run(["bash", "-c", f"{cd} && pwd"], cwd=tmp_path, capture_output=True, timeout=60)
    assert shell.returncode == 0 and shell.stdout.strip() == os.fsencode(tmp_path) + b"/lat\xe9-\xff\x9b", shell.stderr

