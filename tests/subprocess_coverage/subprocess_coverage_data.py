"""Turn the lines the test suite's subprocesses recorded (sitecustomize.py beside this) into one coverage data
file, .coverage.subprocesses in the current directory, for `coverage combine`. Usage: python -m
subprocess_coverage_data DIR (with this directory on the path). Prints how many processes it read."""

import json
import sys
from pathlib import Path

from coverage import CoverageData


def main() -> int:
    source = Path(sys.argv[1])
    data = CoverageData(basename=".coverage", suffix="subprocesses")
    merged: dict[str, set[int]] = {}
    files = sorted(source.glob("*.json"))
    for path in files:
        for name, numbers in json.loads(path.read_text()).items():
            merged.setdefault(name, set()).update(numbers)
    data.add_lines({name: sorted(numbers) for name, numbers in merged.items()})
    data.write()
    print(f"coverage of {len(files)} subprocesses, {len(merged)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
