# Shoal developer entry points. `make run` and `make test` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install dev run test lint format bench clean

install: $(VENV)/.installed ## create .venv and install the runtime from requirements.lock (idempotent)

# --no-compile: byte-compiling all of torch doubles the install (104 s → 54 s here); Python
# compiles what it imports on first use instead.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --no-compile --no-deps -r requirements.lock
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $@

dev: $(VENV)/.dev-installed ## runtime plus test and lint tools (requirements-dev.lock)

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.lock
	$(PIP) install -q --no-compile --no-deps -r requirements-dev.lock
	$(PIP) check
	touch $@

run: install ## migrate the embedded database and serve on 127.0.0.1:8000
	$(VENV)/bin/shoal serve

test: dev ## the whole suite: unit, API, storage on SQLite and Postgres, real model
	$(VENV)/bin/pytest

lint: dev ## ruff, formatting, mypy, import contracts
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: dev ## ingestion throughput against the raw model on SciFact (prints a ratio; ~20 min on 2 cores)
	$(PY) bench/ingest.py

format: dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .shoal .mypy_cache .pytest_cache .ruff_cache
