# The one entry point for people and CI. `make run` and `make test` work on a fresh
# machine with Python 3.11+ and make: they create .venv and, without DATABASE_URL,
# an embedded PostgreSQL under .data/.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
# Runs a command with DATABASE_URL set: the given one, or the embedded server
# (started if needed, and stopped afterwards if it was started for this command).
WITH_DB := $(PY) -m tools.devdb exec --

.PHONY: help run test test-fast lint typecheck suite browser-deps pooler-deps format worker manage chaos failover partition bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (found: $(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME): requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(DEV): requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@ $(RUNTIME)

run: $(RUNTIME)  ## Start the service: web on http://127.0.0.1:8000 plus one worker
	$(PY) -m tools.run

test: lint typecheck suite  ## Lint, type checks and the whole test suite

# The pure tier: no database, no processes; seconds. The suite's other tiers are
# tests/db (real PostgreSQL) and tests/system (workers, browser, chaos, compose).
test-fast: $(DEV)  ## Unit tests only (tests/unit: pure rules, the layer test)
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

lint: $(DEV)  ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(DEV)  ## mypy (strict, with the django-stubs plugin)
	$(WITH_DB) $(VENV)/bin/mypy .

suite: $(DEV) browser-deps pooler-deps  ## The pytest suite on real PostgreSQL (pytest exits 5 if no test ran)
	$(WITH_DB) $(PY) -m pytest $(PYTEST_ARGS)

# The browser tests drive Debian's chromium through Playwright; Playwright's own
# browser download is never used. Installs the package only when it is missing
# (as root; CI is), and refreshes apt's lists only when they are missing or stale.
CHROMIUM := /usr/bin/chromium
browser-deps: $(DEV)  ## Debian's chromium for the browser tests (apt-get, as root)
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
			echo "browser-deps: $(CHROMIUM) is missing and cannot be installed here;" \
				"the browser tests will be skipped (as root: apt-get install chromium)"; \
		else \
			echo "browser-deps: installing chromium (apt-get)"; \
			export DEBIAN_FRONTEND=noninteractive; log=$$(mktemp); \
			install="apt-get install -y -q --no-install-recommends chromium fonts-liberation"; \
			{ { apt-cache show chromium && $$install; } \
				|| { apt-get update -q && $$install; }; } >"$$log" 2>&1 \
				|| { cat "$$log"; rm -f "$$log"; exit 1; }; \
			rm -f "$$log"; \
		fi; \
	fi

# The PgBouncer test (tests/system/test_pgbouncer.py) runs Debian's pgbouncer;
# the same pattern as browser-deps: installed only when missing, as root. (Where
# services run, the package also enables its own on port 6432; the test starts
# a pgbouncer of its own and never uses that one.)
PGBOUNCER := /usr/sbin/pgbouncer
pooler-deps:  ## Debian's pgbouncer for the pooler test (apt-get, as root)
	@if [ ! -x $(PGBOUNCER) ]; then \
		if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
			echo "pooler-deps: $(PGBOUNCER) is missing and cannot be installed here;" \
				"the PgBouncer test will be skipped (as root: apt-get install pgbouncer)"; \
		else \
			echo "pooler-deps: installing pgbouncer (apt-get)"; \
			export DEBIAN_FRONTEND=noninteractive; log=$$(mktemp); \
			install="apt-get install -y -q --no-install-recommends pgbouncer"; \
			{ { apt-cache show pgbouncer && $$install; } \
				|| { apt-get update -q && $$install; }; } >"$$log" 2>&1 \
				|| { cat "$$log"; rm -f "$$log"; exit 1; }; \
			rm -f "$$log"; \
		fi; \
	fi

format: $(DEV)  ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

worker: $(RUNTIME)  ## One more worker against the same database (as on another machine)
	$(WITH_DB) $(PY) manage.py procrastinate worker

manage: $(RUNTIME)  ## manage.py with ARGS="...", e.g. make manage ARGS="doctor"
	$(WITH_DB) $(PY) manage.py $(ARGS)

# Not part of `make test` (the suite runs a short version). It starts a PostgreSQL
# of its own under .data/chaos (the embedded one; CHAOS_ARGS="--postgres system"
# for this machine's programs), never the DATABASE_URL one; see tools/chaos.py.
chaos: $(RUNTIME)  ## Chaos run: 2000 payments, dups, refunds, SIGKILLs, a PG restart
	$(PY) -m tools.chaos $(CHAOS_ARGS)

# Not part of `make test` (the suite runs a short one): two PostgreSQL servers of
# its own under .data/failover (this machine's programs; FAILOVER_ARGS="--postgres
# embedded" for the embedded 18), a synchronous standby promoted after the primary
# is SIGKILLed under load; see tools/failover.py and docs/deploy.md.
failover: $(RUNTIME)  ## Failover run: SIGKILL the primary, promote the standby, 0 lost
	$(PY) -m tools.failover $(FAILOVER_ARGS)

# Not part of `make test`: about 5 minutes; its own PostgreSQL under .data/bench
# (BENCH_ARGS="--postgres system" for this machine's). See docs/performance.md.
bench: $(RUNTIME)  ## Benchmark: webhook, latency, bursts with 1/2/4 workers, ceiling
	$(PY) -m tools.benchmark $(BENCH_ARGS)

# Not part of `make test` (the suite runs a short version); root and iproute2: hosts
# as network namespaces of its own, one cut off mid-job; see tools/partition.py.
partition: $(RUNTIME)  ## Workers on other hosts: a 60 s partition and a 100 ms link
	$(PY) -m tools.partition $(PARTITION_ARGS)

clean:  ## Remove .venv and caches (keeps .data/, the embedded database)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
