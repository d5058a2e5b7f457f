# One front door for every command. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test lint typecheck unit clean

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

# Debian's nginx, docker-compose and wrk, for the gateway, compose and bench-harness tests
# (installed when root).
system-deps:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || missing="$$missing nginx"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "note: install$$missing (Debian packages) for the gateway and compose tests"; fi; \
	fi

test: lint typecheck system-deps
	@$(MAKE) --no-print-directory audit AUDIT_UNREACHABLE=warn
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

# Known vulnerabilities in the pinned dependencies, from PyPI's advisory data. `make audit` fails
# when that data cannot be reached (then nothing was audited); `make test` says so loudly and
# goes on, so a machine without that service can still run the suite.
AUDIT_UNREACHABLE ?= fail
.PHONY: audit

audit: install
	@out=$$($(BIN)/pip-audit --strict --no-deps --disable-pip --progress-spinner off \
	    -r requirements.lock 2>&1); rc=$$?; \
	if [ $$rc -eq 0 ]; then echo "pip-audit: no known vulnerabilities in requirements.lock"; exit 0; fi; \
	if echo "$$out" | grep -qE "could not be audited|ConnectionError|Max retries|NameResolution|timed out"; then \
	  echo "pip-audit could NOT reach its vulnerability service (PyPI's JSON API): requirements.lock was NOT audited."; \
	  echo "$$out" | grep -E "ERROR|Error" | tail -n 2; \
	  if [ "$(AUDIT_UNREACHABLE)" = warn ]; then echo "audit: continuing without it (AUDIT_UNREACHABLE=warn)"; exit 0; fi; \
	  exit 2; \
	fi; \
	echo "$$out"; echo "pip-audit: known vulnerabilities above; bump those pins in requirements.lock"; exit 1

# A bounded soak (docs/reliability.md): mixed reads and writes for SOAK_ARGS' time and count.
.PHONY: soak

soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# Contract fuzzing for longer than the default suite does (FUZZ_EXAMPLES per operation,
# FUZZ_SCENARIOS linked sequences); `make test` runs the same tests with a small count.
FUZZ_EXAMPLES ?= 1000
FUZZ_SCENARIOS ?= 500
.PHONY: fuzz

fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SCENARIOS=$(FUZZ_SCENARIOS) $(BIN)/pytest tests/fuzz
