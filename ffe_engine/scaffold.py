"""`ffe init`: the starting files of a new installation, written from the templates shipped with the package.

The templates are the repository's own config.toml (every key, its default and what it does) and .env.example
(where credentials go); a test keeps the copies identical.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import UsageError

# file written -> template in ffe_engine/templates
STARTER_FILES = {"config.toml": "config.toml", ".env.example": "env.example"}


class ScaffoldError(UsageError):
    """The starting files cannot be written as asked (printed as one line, exit code 2)."""


def template_text(name: str) -> str:
    """The text of a shipped template: "config.toml" or "env.example"."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def write_starter_files(directory: str | Path, *, force: bool = False) -> list[Path]:
    """Write config.toml and .env.example into `directory` (created if missing). Existing files are kept unless
    `force`: then nothing at all is written, so a half-initialised directory never results."""
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise ScaffoldError(f"{target}: not a directory")
    paths = [target / name for name in STARTER_FILES]
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ScaffoldError(f"{', '.join(map(str, existing))} already {verb} (--force overwrites)")
    try:
        target.mkdir(parents=True, exist_ok=True)
        for path, template in zip(paths, STARTER_FILES.values()):
            path.write_text(template_text(template), encoding="utf-8")
    except OSError as exc:
        raise ScaffoldError(f"{target}: cannot write: {exc.strerror or exc}") from None
    return paths
