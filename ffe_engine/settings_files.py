"""Where a command's settings files are (the config file, and the .env file beside it or named), and a careful read
of them: nothing but a regular file is opened, and no more of it than a settings file may hold. Kept apart from
config.py, which validates what they say, so that a command's first moments (an argument mistake said before the
settings are read) can look at the .env file it names without importing the settings."""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_CONFIG = Path("config.toml")
MAX_SETTINGS_BYTES = 4 << 20


def settings_paths(config_path: str | Path | None, env_file: str | Path | None) -> tuple[Path, Path]:
    """The config file and the .env file load_settings reads, whether they exist or not: a file written there later
    is read by every command after."""
    config = Path(config_path) if config_path is not None else DEFAULT_CONFIG
    return config, Path(env_file) if env_file is not None else config.parent / ".env"


def named_in(argv: list[str]) -> Path:
    """The .env file a command's arguments name, as typed (`--env-file`, else the one beside `--config`, else
    ./.env): for a mistake in them, said before they are parsed."""
    found: dict[str, str] = {}
    for i, arg in enumerate(argv):
        for option in ("--env-file", "--config"):
            if arg == option and i + 1 < len(argv):
                found[option] = argv[i + 1]
            elif arg.startswith(option + "="):
                found[option] = arg[len(option) + 1:]
    return settings_paths(found.get("--config"), found.get("--env-file"))[1]


def regular_bytes(path: Path, *, head: bool = False) -> bytes | None:
    """The bytes of a settings file that is a regular file no larger than MAX_SETTINGS_BYTES (with `head`, its first
    MAX_SETTINGS_BYTES whatever its size); None otherwise, or when it cannot be read. A FIFO would be waited on for
    ever (deaf to SIGTERM) and a device read until memory runs out: opened without waiting, and only a regular file
    is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # (a directory opens too)
            return None
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_SETTINGS_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if head:
        return data[:MAX_SETTINGS_BYTES]
    return data if len(data) <= MAX_SETTINGS_BYTES else None
