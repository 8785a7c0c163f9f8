"""A release that changes the database's schema says so in its version: `ffe backup verify` tells backups apart by
the ffe version they were taken with (docs/runbook.md, rolling back), and the schema is what an older release cannot
read. The package's version and ffe_engine.__version__ are one."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ffe_engine import __version__
from ffe_engine.store import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
# Each release's version and the schema it writes; a new schema takes a new entry (and a new version).
RELEASES = {"0.1.0": 4, "0.2.0": 5, "0.3.0": 6}


def test_the_version_names_the_release_of_the_schema_it_writes():
    assert RELEASES[__version__] == SCHEMA_VERSION, (__version__, SCHEMA_VERSION)
    assert len(set(RELEASES.values())) == len(RELEASES)


def test_the_package_and_the_code_give_one_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
