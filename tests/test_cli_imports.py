"""Every `ffe` process imports only what its command needs: a mistake on the command line is said before the
settings' sections, asyncio or the engine are loaded, and `ffe ctl` reaches an engine without the engine's
own modules, the console or the exchange library. The test suite starts a few hundred `ffe` processes; what each
imports is most of what it costs. Checked on real processes, from every import they made (`python -X importtime`).
"""

from __future__ import annotations

import re

from conftest import run_ffe

# Never needed to parse a command line, nor to talk to an engine over its socket.
HEAVY = ("textual", "rich", "ccxt", "aiohttp", "tenacity", "sqlite3", "zstandard", "prometheus_client",
         "ffe_engine.engine", "ffe_engine.host", "ffe_engine.kernel", "ffe_engine.events", "ffe_engine.model",
         "ffe_engine.store", "ffe_engine.audit", "ffe_engine.control_args", "ffe_tui")


def imported_by(*args: str, cwd) -> tuple[int, str, list[str]]:
    proc = run_ffe(cwd, *args, python_flags=("-X", "importtime"))
    # "import time:   self [us] | cumulative | imported package", one line per module the process imported
    modules = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", proc.stderr, re.MULTILINE)
    assert "ffe_cli.main" in modules  # the listing is there, so the checks below see every import
    said = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return proc.returncode, said, modules


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted({m for m in modules for name in names if m == name or m.startswith(name + ".")})


def test_a_usage_error_is_said_before_the_settings_asyncio_or_the_engine_are_imported(tmp_path):
    code, said, modules = imported_by("--version", cwd=tmp_path)
    assert code == 2 and said == "ffe: error: unrecognized arguments: --version (see `ffe --help`)"
    assert loaded(modules, HEAVY + ("asyncio", "dataclasses", "ffe_engine.config", "ffe_engine.schema",
                                    "ffe_engine.control")) == []


def test_ffe_ctl_imports_the_settings_and_the_socket_s_client_only(tmp_path):
    code, said, modules = imported_by("ctl", "status", "--data-dir", "data", cwd=tmp_path)
    assert code == 1 and said == "ffe: error: no engine is running on data/ffe.sock"
    assert "ffe_engine.config" in modules and "ffe_engine.control" in modules
    assert loaded(modules, HEAVY) == []
