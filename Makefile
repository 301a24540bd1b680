# ehrsync: `make demo` and `make test` are the two commands a new machine needs (see README.md).
SHELL := /bin/bash
PY_VERSION := 3.11
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STATE ?= var/demo
# Test processes (pytest-xdist; each file runs whole in one worker, each worker starts its own Postgres/sandbox):
# one per core plus one, since much of the suite waits on subprocesses (Dagster, uvicorn) and sockets. On 2 cores,
# 3 workers ran the suite in 12 min 14 s against 14 min 16 s for 2 (fresh clone, same hour, 2026-12-05).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

.PHONY: install install-system demo test lint typecheck pytest ui bench clean

$(PY):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv==0.13.8
	uv venv -q $(VENV) --python $(PY_VERSION)

# This machine sets PYTHONDONTWRITEBYTECODE=1: no process caches the bytecode of what it imports. uv compiles the
# installed packages; ehrsync's own (an editable install) are compiled here, so each process (the demo's, every
# CLI and Dagster subprocess) reads them instead of compiling ~240 modules again (checked against a hash of each
# source file, so an edited one is compiled again, never served stale).
PACKAGES := connectors warehouse settings store engine auth_service pipelines sandbox ehrsync bench

install: $(PY) ## install ehrsync and its dev tools into .venv (exact pins from pyproject.toml)
	uv pip install -q --python $(PY) --compile-bytecode -e '.[dev]'
	$(PY) -m compileall -q -j 0 --invalidation-mode checked-hash $(PACKAGES)

install-system: ## Debian packages the browser, Postgres and nginx -t tests need (needs root, idempotent)
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: install Debian's 'chromium' package (browser tests need it)"; exit 1; fi; fi
	@# postgresql for its server programs (the tests start their own server on a free port), nginx only for `nginx -t`
	@# (tests/deploy/test_nginx_example.py). Both postinsts would start their service: scripts/apt-install-stopped
	@# keeps a policy-rc.d refusing every start in place while they install.
	@if ! command -v pg_config >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then scripts/apt-install-stopped postgresql; \
	  else echo "PostgreSQL server programs are missing: install Debian's 'postgresql' package"; exit 1; fi; fi
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" != "0" ]; then \
	    echo "nginx is missing: install Debian's 'nginx' package (the tests only run nginx -t; stop its service)"; exit 1; fi; \
	  scripts/apt-install-stopped nginx || exit 1; \
	  if grep -qsx nginx /proc/[0-9]*/comm; then \
	    echo "nginx was installed but a nginx process is running: stop it (service nginx stop)"; exit 1; fi; fi

demo: install ## sandbox EHR -> authorize -> sync -> Parquet -> DuckDB -> summary
	$(BIN)/ehrsync demo --state $(STATE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy connectors warehouse settings store engine auth_service pipelines sandbox ehrsync

# Each worker collects every test module: their bytecode (and pytest's assertion rewrites, ~20 s of CPU per worker
# otherwise) is written once here, on every core, since this machine's Python caches none by itself. A speed-up only:
# a file that does not compile is left for pytest to report.
pytest: install install-system ## the suite starts (and stops) its own throwaway Postgres and sandbox servers
	-$(PY) -m compileall -q -j 0 --invalidation-mode checked-hash tests
	$(PY) -m tests.assertion_cache
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test: lint typecheck pytest

ui: install ## Dagster UI over the demo's state; Ctrl-C stops every process it started
	$(BIN)/ehrsync ui --state $(STATE)

bench: install
	$(PY) -m bench

clean:
	rm -rf var .mypy_cache .ruff_cache .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
