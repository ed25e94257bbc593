# The two set-up commands are `make run` and `make test`; everything else is for developers.
SHELL := /bin/bash
# Any of Python 3.11 to 3.13 (the pins install on each, Debian 12's 3.11.2 included).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: run test lint format bench system-deps clean stack stack-down

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13) and "Atelier needs Python 3.11 to 3.13 (found %s); set PYTHON=/path/to/python3.x" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt requirements-lambda.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

## make run: install, migrate and serve on http://127.0.0.1:8000 with embedded defaults.
run: $(STAMP)
	ATELIER_ENV=$${ATELIER_ENV:-dev} $(BIN)/atelier serve --migrate

## make test: install what the tests need (Redis, Postgres, SeaweedFS) and run the whole suite.
test: $(DEV_STAMP) system-deps lint
	$(BIN)/pytest

system-deps:
	@bash scripts/install-system-deps.sh

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy backend tests scripts
	$(BIN)/hadolint Dockerfile

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(DEV_STAMP) system-deps
	$(BIN)/pytest tests/bench -q -s

## make stack: the production shape locally (Postgres, Redis, S3, 2 APIs, 2 workers) in ./var/stack.
stack: $(DEV_STAMP) system-deps
	$(BIN)/python scripts/stack.py up

## make stack-down: stop every process `make stack` started.
stack-down:
	$(BIN)/python scripts/stack.py down

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
