"""The repository stands alone: no test, benchmark, example, CI step or package reads a path outside it.

A fresh clone with nothing beside it must pass `make test` and run every README example, so a path that climbs out
of the repository (a parent directory, a folder next to the clone, a machine's own absolute path) is refused here,
naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What is scanned: everything a user runs or reads to run something, and every package in the repository.
SCANNED = ["tests", "bench", "README.md", "Makefile", "config.toml", ".ci"]
TEXT_SUFFIXES = {"", ".py", ".md", ".toml", ".cfg", ".ini", ".sh", ".yml", ".yaml", ".txt", ".json"}

# `__file__` followed by `.parent` chains or `.parents[N]`: outside when it climbs above the repository root.
_FROM_FILE = re.compile(r"__file__\)(?:\.resolve\(\))?(?:\.absolute\(\))?((?:\.parent\b)+|\.parents\[(\d+)\])")
_PLAIN = [
    (re.compile(r"\.\.[/\\]"), "a parent directory"),
    (re.compile(r"\b(?:ROOT|REPO|HERE)\.parent\b"), "the directory above the repository"),
    (re.compile(r"""["'/]shared["'/]"""), "a folder named shared beside the repository"),
    (re.compile(r"(?<![\w.])(?:/work|/home|/Users|/root|~)/"), "a machine's own absolute path"),
]


def packages(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/__init__.py"))


def scanned_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for name in SCANNED + packages(root):
        target = root / name
        if target.is_file():
            files.append(target)
        elif target.is_dir():
            files += sorted(p for p in target.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
                            and "__pycache__" not in p.parts and "__snapshots__" not in p.parts)
    return files


def outside_paths(root: Path) -> list[str]:
    """`file:line: what` for every reference that leaves the repository.

    Whole-line comments of code, shell and config files are prose (.ci/run's comment names the folder the clone
    must not depend on) and read nothing, so they are not scanned; Markdown is scanned whole, its examples are run.
    """
    found: list[str] = []
    for path in scanned_files(root):
        rel = path.relative_to(root)
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if path.suffix != ".md" and line.lstrip().startswith("#"):
                continue
            for m in _FROM_FILE.finditer(line):
                up = int(m.group(2)) + 1 if m.group(2) is not None else m.group(1).count(".parent")
                if up > len(rel.parts):  # tests/x.py: up 2 levels is the repository root itself
                    found.append(f"{rel}:{number}: climbs {up} levels from __file__, out of the repository")
            for pattern, what in _PLAIN:
                if pattern.search(line):
                    found.append(f"{rel}:{number}: {what}: {line.strip()}")
    return found


def test_nothing_reaches_outside_the_repository() -> None:
    found = outside_paths(REPO)
    assert not found, "paths outside the repository:\n" + "\n".join(found)


def test_the_scan_covers_the_packages_and_the_samples_are_inside() -> None:
    assert {"ffe_engine", "ffe_tui"} <= set(packages(REPO))
    scanned = {p.relative_to(REPO).as_posix() for p in scanned_files(REPO)}
    assert {"README.md", "Makefile", "config.toml", ".ci/run", "tests/conftest.py",
            "ffe_engine/market/csvdata.py"} <= scanned
    assert sorted(p.name for p in (REPO / "samples").iterdir()) == ["BTC-USD_1h_2020-2023.csv.gz",
                                                                   "ETH-USD_1h_2020-2023.csv.gz"]


def test_the_scan_finds_each_way_out_and_names_the_file(tmp_path: Path) -> None:
    # Spelled in pieces so that this file does not hold what it looks for.
    up, shared, from_file = "." * 2 + "/", "sha" + "red", "Path(__file__).resolve()"
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "deep.py").write_text(
        f"ROOT = {from_file}.parents[{2}]\n"  # pkg/sub/deep.py: up 3 levels is the root itself, allowed
        f"DATA = {from_file}.parents[{3}] / 'x'\n"
        f"OTHER = Path(__file__){'.parent' * 4}\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(f"CSV = '{up}{shared}/data/a.csv'\nNEXT = ROOT{'.parent'} / 'x'\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "b.py").write_text("D = '/work" + "/data'\n")
    (tmp_path / "README.md").write_text(f"see the '{shared}/' folder\n")
    (tmp_path / "Makefile").write_text(f"# a comment may name {up}{shared} without reading it\nrun:\n\tpython x.py\n")
    found = outside_paths(tmp_path)
    assert [f.split(": ", 1)[0] for f in found] == [
        "tests/test_x.py:1", "tests/test_x.py:1", "tests/test_x.py:2", "bench/b.py:1", "README.md:1",
        "pkg/sub/deep.py:2", "pkg/sub/deep.py:3"]
