# Two entry points a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/watchdog demo

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict watchdog tests
	MYPYPATH=tests $(VENV)/bin/mypy --strict bench
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
