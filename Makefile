# The interpreter .venv is made with: CPython 3.12 (or 3.13) where the machine has one, on the PATH or installed by
# pyenv, else python3 (3.11 or newer). On 3.12 and newer coverage measures through sys.monitoring, which costs the
# tests a fraction of what 3.11's tracer does (make test sets COVERAGE_CORE for it). `make PYTHON=...` overrides.
PYTHON ?= $(shell for v in 3.12 3.13; do for p in "$$(command -v python$$v)" "$$(pyenv root 2>/dev/null)"/versions/$$v.*/bin/python$$v; do \
	test -x "$$p" && "$$p" -c '' 2>/dev/null && { echo "$$p"; exit 0; }; done; done; echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The checkout itself on the path (a .pth line), not setuptools' import hook: the hook costs every Python process
# about 11 ms to start, and the tests start several hundred.
EDITABLE := --config-settings editable_mode=compat -e
# What the tests' subprocesses record of their coverage (tests/subprocess_coverage), merged after the tests.
SUBCOV := .coverage-subprocesses
WORKERS ?= 6

.PHONY: run test bench install clean

# pip compiles what it installs on one core (about half of a fresh install's time, ccxt being most of it); the
# packages are compiled after it on every core instead, so no process compiles them, with or without a cache (what
# no test imports is left out: ccxt's websocket classes and tests, pip, mypy's sources beside its compiled modules).
# ffe itself is built with the venv's setuptools (the version pyproject.toml's build-system names): an isolated
# build environment would install and compile setuptools again on every install.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3 setuptools==84.2.1
	$(BIN)/python -m pip install --quiet --no-compile --no-build-isolation $(EDITABLE) '.[test]'
	$(BIN)/python -m compileall -q -j 0 -x '/(ccxt/(pro|test)|pip|mypy|mypyc|setuptools)/' \
		"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" > /dev/null
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ffe run

# The quality gates run with the tests: layer contracts (tests/test_layers.py), no skipped test (tests/conftest.py),
# mypy --strict on the engine, and line coverage of ffe_engine, ffe_tui and ffe_cli (subprocesses included) of at least
# the fail_under figure in pyproject.toml: coverage.py measures the workers, and on Python 3.12 and newer the light
# collector in tests/subprocess_coverage the ffe processes they start (coverage.py's own start-up would cost each of
# them 0.1 s of CPU); the lines they record are merged with the workers' after the tests. The tests run on six workers,
# a module at a time, the longest modules first (tests/conftest.py): six rather than one per core, because the workers
# mostly wait, on the subprocesses, sockets, disks and exchange windows the tests use (on 2 cores, quiet, Python 3.12,
# the same tree: the tests 180 s on six workers, 207 on four; `make test WORKERS=N` changes it). mypy runs
# beside them and its verdict is printed after theirs. The tests start some two thousand `ffe` processes, most of them
# forked from a server per worker that has imported ffe once (tests/ffe_fork_server.py), the rest by exec (Python's
# start-up flags, a terminal of their own): ffe's modules are compiled once first, so each reads them compiled, even
# where PYTHONDONTWRITEBYTECODE keeps Python from caching; the test modules are collected once first for the same
# reason, which leaves pytest's rewritten modules cached for the workers (each would spend ~3 s of CPU on them).
test: $(STAMP)
	$(BIN)/coverage erase
	rm -rf $(SUBCOV) && mkdir $(SUBCOV)
	$(BIN)/python -m compileall -q ffe_engine ffe_tui ffe_cli > /dev/null
	@types=$$(mktemp); $(BIN)/python -m mypy > $$types 2>&1 & mypy=$$!; \
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest --collect-only -q -p no:cacheprovider > /dev/null 2>&1; \
	SUBPROCESS_COVERAGE_DIR="$(CURDIR)/$(SUBCOV)" \
	COVERAGE_CORE=$$($(BIN)/python -c 'import sys; print("sysmon" if sys.version_info >= (3, 12) else "ctrace")') \
	$(BIN)/coverage run -m pytest -q -n $(WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS); tests=$$?; \
	wait $$mypy; typed=$$?; echo "mypy:"; cat $$types; rm -f $$types; \
	test $$tests -eq 0 && test $$typed -eq 0
	PYTHONPATH=tests/subprocess_coverage $(BIN)/python -m subprocess_coverage_data $(SUBCOV)
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-build-isolation $(EDITABLE) '.[bench]'
	$(BIN)/python bench/backtest_bench.py
	$(BIN)/python bench/live_bench.py
	$(BIN)/python bench/killswitch_bench.py
	$(BIN)/python bench/monitor_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .coverage .coverage.* $(SUBCOV) .mypy_cache
