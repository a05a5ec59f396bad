# Two entry points a newcomer needs: `make demo` and `make test`. Both create .venv on first use;
# `make test` first runs `make deps` (scripts/deps.sh): the system packages and the local PostgreSQL the
# tests use, installed/started when running as root or with passwordless sudo, else one line saying how.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test deps lint install clean

# The venv, the package (editable, with the dev tools) and pyproject's build requirements, so the wheel can
# be built without the network (tests/test_packaging.py builds it with --no-build-isolation).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(None if sys.version_info >= (3, 11) else "sre-watchdog needs Python >= 3.11; $(PYTHON) is " + sys.version.split()[0] + " (try: make PYTHON=python3.11 ...)")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $$($(VENV)/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"])')
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/watchdog demo

deps:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/deps.sh

# WATCHDOG_PG_BIN: the server binaries for the throwaway clusters (tests/pgcluster.py); the newest installed.
test: deps $(STAMP)
	WATCHDOG_PG_BIN=$${WATCHDOG_PG_BIN:-$$(bash scripts/deps.sh --pg-bin)} $(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict watchdog tests
	MYPYPATH=tests $(VENV)/bin/mypy --strict bench
	$(VENV)/bin/mypy --strict scripts
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
