"""A kill switch asked for while the engine started, kept for the next start when that start failed or was given
up.

The signal (SIGUSR1) or the console's kill switch during a start halts the engine as soon as it has started; a
start that fails instead (its exchange stops answering: exit 1, and the service starts it again), or that a stop
signal gives up, has no database open to store HALTED in. The halt is written here, beside the database
(`ffe.halt-asked`: reason and who asked, one JSON object, synced), and the next start comes up HALTED by it,
recorded as any halt, then removes the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FILE_NAME = "ffe.halt-asked"


def path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def keep(data_dir: Path, reason: str, by: str) -> bool:
    """Write the halt asked for; whether it was (a directory that takes no write cannot keep it)."""
    target = path(data_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"reason": reason, "by": by}).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def asked(data_dir: Path) -> tuple[str, str] | None:
    """(reason, by) of a halt kept for this start, or None. A file that cannot be read or holds something else is
    a halt all the same: a kill switch is never dropped for its record's damage."""
    target = path(data_dir)
    if not target.exists():
        return None
    try:
        kept = json.loads(target.read_text())
        return str(kept["reason"]), str(kept["by"])
    except (OSError, ValueError, KeyError, TypeError):
        return "kill switch asked during a start that failed (its record unreadable)", "engine"


def done(data_dir: Path) -> bool:
    """The halt is stored with the engine's state: its file goes. Whether it went (a directory in its place, a
    read-only data directory: the next start halts again, which is the safe side)."""
    try:
        path(data_dir).unlink(missing_ok=True)
    except OSError:
        return False
    return True
