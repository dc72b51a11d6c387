# Two commands set up a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck unit install install-dev clean test-dates

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cc-auditor needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install -e '.[all]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make demo: install with all extras and audit the embedded demo fleet end to end
demo: install
	$(BIN)/ccaudit demo

## make test: install the dev extras, lint, type-check and run the whole test suite
test: install-dev lint typecheck unit

lint: install-dev
	$(BIN)/ruff check auditor tests benchmarks
	$(BIN)/ruff format --check auditor tests benchmarks

typecheck: install-dev
	$(BIN)/mypy

unit: install-dev
	$(BIN)/pytest -q

## make test-dates: the whole suite with the clock moved +1 and +3 years (Debian's faketime);
## the shim's path is absolute so that subprocesses started elsewhere (the notebook's kernel) get it
test-dates: install-dev
	for offset in +365d +1095d; do \
	  PYTHONPATH=$(CURDIR)/tools/faketime FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f $$offset \
	    $(BIN)/pytest -q -p no:cacheprovider || exit 1; \
	done

clean:
	rm -rf $(VENV) ccaudit-demo ccaudit-runs .pytest_cache .mypy_cache .ruff_cache
