# One front door for every command. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run run-split test lint typecheck unit clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python cli.py serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (docs/benchmarks.md); BENCH_ARGS passes more options, e.g. BENCH_ARGS='--tasks 1000000'.
# wrk comes from Debian's package when it is missing.
WRK := command -v wrk >/dev/null 2>&1 || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
.PHONY: bench bench-quick

bench: install
	@$(WRK)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: install
	@$(WRK)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)
