# recstream: `make run` starts the stack and the worker; `make test` runs every test against a real
# Kafka broker and Redis, then stops them. Services run from this clone: jars in .cache/, state in
# .stack/, Python in .venv/ (all ignored by git). Override e.g. `make up BROKERS=3 KAFKA_PORT=9192`.
# BROKERS: Kafka's node count; empty = the running (or stopped) cluster's, else 1 (so `make up
# BROKERS=3` then `make run` runs on the 3 nodes, with replication factor 3: deploy/run.sh).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
KAFKA_PORT ?= 9092
REDIS_PORT ?= 6379
# Redis's admin password; empty: the random one deploy/redis/redis.sh keeps in
# .stack/redis/admin.password (the worker has its own ACL user: README, Security)
REDIS_PASSWORD ?=
PROMETHEUS_PORT ?= 9090
BROKERS ?=
# SECURE=1: `make up`, `status` and `run` use the secure Kafka instead, SASL_SSL with ACLs on
# 127.0.0.1:9392 (deploy/README.md, "Secure Kafka"); it runs next to the plaintext one.
SECURE ?= 0
export SECURE
PYTEST_ARGS ?=
export KAFKA_PORT REDIS_PORT REDIS_PASSWORD PROMETHEUS_PORT BROKERS

STOP_UNLESS_SHARED := mkdir -p .stack; flock -n -E 75 .stack/test-sessions.lock \
	$(MAKE) --no-print-directory down || { [ $$? != 75 ] || echo "test: stack left running: in use"; }
KAFKA := deploy/kafka/kafka.sh
REDIS := deploy/redis/redis.sh
PROMETHEUS := deploy/prometheus/prometheus.sh

.PHONY: help setup stack up down status test lint run bench chaos clean distclean

help:
	@echo "make setup   create .venv and install the project (seconds when up to date)"
	@echo "make up      start Kafka (BROKERS=N nodes, 127.0.0.1:$(KAFKA_PORT)...), Redis, Prometheus"
	@echo "make up SECURE=1   the same with the secure Kafka (SASL_SSL + ACLs, 127.0.0.1:9392)"
	@echo "make run     setup + up + the streaming worker (deploy/run.sh)"
	@echo "make test    setup + up + pytest (unit, streams, integration) + ruff, then down"
	@echo "make down    stop every service started by make up"
	@echo "make chaos   setup + up + reliability experiments -> docs/reliability.md (~6-8 min)"
	@echo "make status | lint | bench | stack | clean | distclean"

# The stamp depends on pyproject.toml: a changed dependency list reinstalls, otherwise no-op.
setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "setup: python3.11 not found (apt-get install -y python3)"; exit 1; }
	@test -x $(PY) || { echo "setup: creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

# System packages (apt-get when root and missing), the Kafka jars (Maven Central, once), and
# Debian's headless Chromium + chromedriver for the live page's browser test.
stack:
	@$(REDIS) install
	@$(PROMETHEUS) install || echo "stack: continuing without Prometheus"
	@$(KAFKA) fetch
	@$(KAFKA) tools
	@deploy/browser.sh install

up: stack
	@$(KAFKA) start $(if $(BROKERS),--brokers $(BROKERS))
	@$(REDIS) start
	@$(PROMETHEUS) start

# Every service is stopped even when another one fails to stop; both Kafka clusters, whatever
# SECURE says.
down:
	@rc=0; for s in $(PROMETHEUS) $(REDIS); do $$s stop || rc=1; done; \
	for secure in 0 1; do SECURE=$$secure $(KAFKA) stop || rc=1; done; exit $$rc

status:
	@rc=0; for s in $(KAFKA) $(REDIS) $(PROMETHEUS); do $$s status || rc=1; done; exit $$rc

lint: setup
	$(VENV)/bin/ruff check .

# The stack is stopped whatever happens (trap), unless a pytest session of someone else working in
# this clone holds .stack/test-sessions.lock (see tests/integration/conftest.py). The exit status
# is pytest's, or ruff's when the tests pass.
test: setup
	@trap '$(STOP_UNLESS_SHARED)' EXIT; \
	$(MAKE) --no-print-directory up; \
	rc=0; $(VENV)/bin/pytest $(PYTEST_ARGS) || rc=$$?; \
	lint=0; $(VENV)/bin/ruff check . || lint=$$?; \
	if ((rc == 0 && lint != 0)); then echo "test: tests passed but ruff failed"; rc=$$lint; fi; \
	exit $$rc

run: setup up
	bash deploy/run.sh

bench: setup up
	$(PY) bench/run.py

# Reliability experiments (bench/chaos.py): hostile stream, Redis and broker outages (private
# servers: the shared ones are never stopped), SIGKILL, a re-created topic. Writes
# docs/reliability.md and bench/chaos.json; fails when an experiment finds a defect.
chaos: setup up
	$(PY) bench/chaos.py

clean: down
	rm -rf .stack .pytest_cache .ruff_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also the virtualenv and the Maven/Kafka jar cache (the next setup/up re-downloads them).
distclean: clean
	rm -rf $(VENV) .cache
