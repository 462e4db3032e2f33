# lorapod's tasks. `make demo` sets everything up and runs the demo; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup services demo test lint types contracts format pytest bench clean constraints

# A virtual environment with lorapod, its training stack and the dev tools. constraints.txt pins every
# package (torch at its CPU build), so no step can swap in a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -c constraints.txt -e ".[train,dev]"
	touch $(STAMP)

setup: $(STAMP)

# A real local training run of the tiny demo model on the sample dataset, followed live (about a minute).
demo: setup
	$(BIN)/lorapod run --preset smoke --dataset samples/brightrun-sample.json --name demo

test: setup services lint pytest

# The servers and programs the tests start (sshd, PostgreSQL, tmux, node): installed when missing and
# possible, else the command to run is named.
services:
	bash tests/ensure-services.sh

pytest: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python -m benchmarks

# Re-resolve the pins after changing dependencies in pyproject.toml.
constraints:
	rm -rf /tmp/lorapod-constraints && $(PYTHON) -m venv /tmp/lorapod-constraints
	/tmp/lorapod-constraints/bin/pip install --quiet "torch==2.13.0" && /tmp/lorapod-constraints/bin/pip install --quiet ".[train,gpu,dev]" "torch==2.13.0"
	( echo "# Every package lorapod installs, pinned (make constraints). torch stays at its CPU build here."; \
	  /tmp/lorapod-constraints/bin/pip freeze --exclude-editable | grep -v -i '^lorapod' | sed 's/+cpu$$//' ) > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
