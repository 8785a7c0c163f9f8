"""`ffe init`: the starting files of a new installation, written from the templates shipped with the package.

The templates are the repository's own config.toml (every key, its default and what it does) and .env.example
(where credentials go); a test keeps the copies identical.
"""

from __future__ import annotations

import contextlib
import os
from importlib import resources
from pathlib import Path

from . import reach
from .errors import UsageError, kind_of

# file written -> template in ffe_engine/templates
STARTER_FILES = {"config.toml": "config.toml", ".env.example": "env.example"}


class ScaffoldError(UsageError):
    """The starting files cannot be written as asked (printed as one line, exit code 2)."""


def template_text(name: str) -> str:
    """The text of a shipped template: "config.toml" or "env.example"."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def write_starter_files(directory: str | Path, *, force: bool = False) -> list[Path]:
    """Write config.toml and .env.example into `directory` (created if missing). Existing files are kept unless
    `force` (then nothing at all is written); so is everything when one of them cannot be written: a
    half-initialised directory never results."""
    target = Path(directory)
    if reach.exists(target) and not target.is_dir():
        raise ScaffoldError(f"{target}: not a directory")
    paths = [target / name for name in STARTER_FILES]
    for path in paths:
        # A directory, a FIFO or a device (or a link to one) is never replaced by a file nor written into: said
        # first, as --force would not overwrite it either.
        kind = kind_of(path)
        if kind is not None:
            raise ScaffoldError(f"{path}: is {kind}, not a file: nothing written")
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ScaffoldError(f"{', '.join(map(str, existing))} already {verb} (--force overwrites)")
    # Each file written beside its place first, then all moved into place: a failure part way (a full disk, a
    # read-only file) leaves what was there as it was.
    staged: list[tuple[Path, Path]] = []
    try:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ScaffoldError(f"{target}: cannot write: {exc.strerror or exc}: nothing written") from None
        for path, template in zip(paths, STARTER_FILES.values()):
            dest = path.resolve() if path.is_symlink() else path  # a link: the file it names is written
            beside = dest.with_name(f".{dest.name}.ffe-init")
            staged.append((beside, dest))
            try:
                beside.write_text(template_text(template), encoding="utf-8")
            except OSError as exc:
                raise ScaffoldError(f"{path}: cannot write: {exc.strerror or exc}: nothing written") from None
        for beside, path in staged:
            try:
                os.replace(beside, path)
            except OSError as exc:
                raise ScaffoldError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        for beside, _ in staged:
            # On a read-only file system even removing a file that was never created fails: the error raised
            # above is the one to tell.
            with contextlib.suppress(OSError):
                beside.unlink(missing_ok=True)
    return paths
