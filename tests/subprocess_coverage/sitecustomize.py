"""Line coverage of ffe's own modules in the test suite's subprocesses, for `make test`.

coverage.py measures the test workers; the several hundred `ffe` processes the tests start are measured here
instead, because importing coverage.py costs each of them about 0.1 s of CPU before it runs a line (40 s or more
per suite), while this costs a few milliseconds. It records the same thing coverage.py's sys.monitoring core does:
the lines executed in files under ffe_engine/, ffe_tui/ and ffe_cli/, each line reported once and then switched
off. At exit the lines are written as JSON to SUBPROCESS_COVERAGE_DIR; `python -m subprocess_coverage_data`
turns them into a coverage data file that `coverage combine` merges with the workers'.

Python puts this directory first on the path of a test's subprocesses (tests/conftest.py sets PYTHONPATH and
SUBPROCESS_COVERAGE_DIR for them when the suite runs under coverage on Python 3.12 or newer), and imports this
module at start-up as it would any sitecustomize. Without the variable it does nothing. It never prints, and a
failure to write is ignored: a process's output and exit code are the test's to check.
"""

import os
import sys

_DIR = os.environ.get("SUBPROCESS_COVERAGE_DIR")


def _collect(out_dir: str) -> None:
    import atexit

    mon = sys.monitoring
    tool = 3  # not coverage.py's COVERAGE_ID, not a debugger's or a profiler's
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    roots = tuple(os.path.join(repo, package) + os.sep for package in ("ffe_engine", "ffe_tui", "ffe_cli"))
    lines: dict[str, set[int]] = {}

    def started(code, offset):  # noqa: ANN001, ANN202 - sys.monitoring's callback signature
        if code.co_filename.startswith(roots):
            mon.set_local_events(tool, code, mon.events.LINE)
        return mon.DISABLE  # each code object is looked at once

    def line(code, number):  # noqa: ANN001, ANN202
        seen = lines.get(code.co_filename)
        if seen is None:
            seen = lines[code.co_filename] = set()
        seen.add(number)
        return mon.DISABLE  # each line is reported once

    def save() -> None:
        mon.set_events(tool, 0)
        if not lines:
            return
        import json

        path = os.path.join(out_dir, f"{os.getpid()}.{os.urandom(4).hex()}.json")
        try:
            with open(path + ".tmp", "w") as f:
                json.dump({name: sorted(seen) for name, seen in lines.items()}, f)
            os.replace(path + ".tmp", path)
        except OSError:
            pass

    try:
        mon.use_tool_id(tool, "ffe subprocess coverage")
    except ValueError:  # the id is taken (a debugger): this process goes unmeasured
        return
    mon.register_callback(tool, mon.events.PY_START, started)
    mon.register_callback(tool, mon.events.LINE, line)
    mon.set_events(tool, mon.events.PY_START)
    atexit.register(save)


if _DIR and hasattr(sys, "monitoring"):
    _collect(_DIR)
