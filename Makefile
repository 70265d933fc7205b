# MediaNest: two commands from a fresh clone.
#   make run   set up .venv from uv.lock and start the hub on http://127.0.0.1:8080
#   make test  set up, make sure the test servers run, then ruff, mypy and pytest with coverage
# Needs only python3 (3.11+), make and the package registries.

PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run demo test lint typecheck unit services bench clean help

help:
	@echo "make run    start the hub on http://127.0.0.1:8080 (embedded SQLite under ./data)"
	@echo "make test   lint, type-check and run every test against real servers"
	@echo "make bench  run the benchmarks in bench/"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	@touch $@

run: $(VENV)/.synced
	$(BIN)/medianest serve --demo-when-unconfigured

services:
	bash scripts/services.sh

lint: $(VENV)/.synced
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.synced
	$(BIN)/mypy

unit: $(VENV)/.synced
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

test: $(VENV)/.synced services
	$(MAKE) --no-print-directory lint typecheck
	MEDIANEST_REQUIRE_SERVICES=$${MEDIANEST_REQUIRE_SERVICES:-$${CI:+1}} $(MAKE) --no-print-directory unit

bench: $(VENV)/.synced
	$(BIN)/python bench/policy_overhead.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .coverage* htmlcov
