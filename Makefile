# auditpipe — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test test-fast lint format bench stack-up stack-down venv schemas clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

system-deps:
	@bash deploy/local/system-deps.sh

stack-up: venv
	$(BIN)/auditpipe stack up

stack-down:
	@test -x $(BIN)/auditpipe && $(BIN)/auditpipe stack down || true

# Runs the pipeline end to end on local defaults; Ctrl-C stops everything it started.
demo: venv system-deps
	$(BIN)/auditpipe stack up
	$(BIN)/auditpipe migrate
	$(BIN)/auditpipe demo

# Brings the stack up, runs every test against the real Kafka and ClickHouse, and always brings it down.
test: venv system-deps
	@$(BIN)/auditpipe stack up; \
	status=$$?; \
	if [ $$status -eq 0 ]; then $(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; fi; \
	$(BIN)/auditpipe stack down; \
	exit $$status

# Tests without the slow end-to-end fault suite (stack must be up).
test-fast: venv
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: venv
	$(BIN)/python -m schemas.generate

bench: venv system-deps
	$(BIN)/auditpipe stack up
	$(BIN)/python -m benchmarks.run_all

clean: stack-down
	rm -rf .stack
