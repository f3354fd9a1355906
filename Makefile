# Sluice: `make up` runs the main job, `make test` runs every test CI runs, and a bare
# `make` lists the targets from their `## target: text` comments (here and in mk/*.mk).
SHELL := /bin/bash
REPO_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
SLUICE_CACHE ?= $(HOME)/.cache/sluice
VENV := $(SLUICE_CACHE)/venv
PYTHON := $(VENV)/bin/python
CARGO ?= cargo
export SLUICE_CACHE

# A bare `make` prints the help, whichever fragment's rule make reads first.
.DEFAULT_GOAL := help

# Each mk/*.mk fragment adds its own targets and appends its test targets to
# TEST_TARGETS, which `make test` runs after the server's tests.
TEST_TARGETS :=
-include mk/*.mk
.PHONY: help deps build test lint lint-tools test-rust test-python bench bench-stream bench-rotation bench-optimize bench-bundle up \
	up-server fmt python-lock pip-tools fresh-check

## help: this list (also what a bare `make` prints)
help:
	@echo "usage: make TARGET   (rustfmt.toml, rust-toolchain.toml and deny.toml hold the policies)"
	@awk 'FNR == 1 { title = $$0; sub(/^# */, "", title); sub(/ *[(:].*/, "", title); shown = 0 } \
	  /^## [A-Za-z0-9_.\/-]+:/ { \
	    if (!shown) { printf "\n%s\n", title; shown = 1 } \
	    line = substr($$0, 4); i = index(line, ":"); \
	    printf "  %-20s %s\n", substr(line, 1, i - 1), substr(line, i + 2) }' $(MAKEFILE_LIST)

## deps: install the ONNX Runtime library, Python tools and fixture models (cached)
deps:
	@scripts/deps.sh

## build: release binaries in target/release (sluice-server finds ONNX Runtime beside itself)
build: deps
	$(CARGO) build --release --workspace --bins
	@scripts/profiles.sh target/release/sluice-server

# cargo-deny, pinned, installed into the cache on first use.
CARGO_DENY_VERSION := 0.20.2
CARGO_DENY := $(SLUICE_CACHE)/cargo-deny/bin/cargo-deny

## lint: rustfmt (rustfmt.toml), clippy with warnings as errors (also the server without ONNX Runtime), cargo deny (deny.toml: bans, licenses, sources)
lint: lint-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# The request parsers build without ONNX Runtime (what `make fuzz` relies on).
	$(CARGO) clippy -p sluice-server --lib --no-default-features -- -D warnings
	$(CARGO_DENY) check --hide-inclusion-graph bans licenses sources

## lint-tools: install the pinned cargo-deny (CARGO_DENY_VERSION) into $SLUICE_CACHE/cargo-deny when missing
lint-tools:
	@if ! "$(CARGO_DENY)" --version 2>/dev/null | grep -qx 'cargo-deny $(CARGO_DENY_VERSION)'; then \
		echo "lint: installing cargo-deny $(CARGO_DENY_VERSION) into $(SLUICE_CACHE)/cargo-deny (first run only)"; \
		$(CARGO) install cargo-deny --locked --version $(CARGO_DENY_VERSION) --root $(SLUICE_CACHE)/cargo-deny; \
	fi

# The operator's tests need the local cluster's API server binaries: they run
# in test-operator (mk/operator.mk), after cluster-deps. The server's tests need
# the fixtures' reference profiles, which `build` writes with the release binary.
## test-rust: the workspace's Rust tests except the operator's (those run in test-operator)
test-rust: build
	$(CARGO) test --workspace --exclude sluice-operator

## test-python: protocol conformance, drift statistics, fixture and sample-digest checks (pytest)
test-python: build
	SLUICE_SERVER_BIN=$(REPO_ROOT)/target/release/sluice-server $(PYTHON) -m pytest -q server/tests/python

## test: everything CI runs
test: lint test-rust test-python $(TEST_TARGETS)

## bench: server overhead and throughput against raw ONNX Runtime, drift tracking's cost, and `batch` rows/s and peak RSS against raw session.run and pandas + onnxruntime (prints figures)
bench: build
	$(CARGO) build --release -p sluice-server --examples
	taskset -c 1 target/release/examples/bench
	target/release/examples/bench_monitoring
	taskset -c 1 target/release/examples/bench_batch target/release/sluice-server $(PYTHON)

## bench-stream: `stream` records/s (exactly-once and at-least-once) against raw session.run on one core, and end-to-end p50/p99 at a steady 2,000 events/s, on a Kafka broker started for the run (prints figures)
bench-stream: build kafka-deps
	$(CARGO) build --release -p sluice-server --examples
	@scripts/bench-stream.sh

## bench-rotation: reconnects/s, p50/p99, throughput and CPU per request with connection rotation against a server without, loaded side by side (prints figures)
bench-rotation: build
	$(CARGO) build --release -p sluice-server --examples
	taskset -c 1 target/release/examples/bench_rotation

## bench-optimize: sluice-server optimize (INT8, FP16) against ONNX Runtime's Python quantizer and FP16 converter on a trained classifier and the fixtures (prints figures)
bench-optimize: build
	SLUICE_SERVER_BIN=$(REPO_ROOT)/target/release/sluice-server taskset -c 1 $(PYTHON) server/bench/bench_optimize.py

## bench-bundle: an edge bundle of the release server served offline from ./start in a network namespace (root): size, cold start, idle RSS, p50 at 1 row (prints figures)
bench-bundle: build
	SLUICE_SERVER_BIN=$(REPO_ROOT)/target/release/sluice-server $(CARGO) test -p sluice-server --test bundle a_bundle_serves_offline -- --nocapture

## up: the main job: local cluster, CRDs, operator, a sample InferenceService, one prediction
up: up-cluster

## up-server: just the model server on the fixture models, one prediction, then stop
up-server: build
	@scripts/up.sh

## fmt: format the workspace (rustfmt.toml)
fmt:
	$(CARGO) fmt --all

# pip-compile and what it runs on, pinned, so that the same requirements.in and the
# same Python give the same lock on every machine. The lock pins versions for the
# Python that made it (its header names it: 3.11 or newer, which pip-tools needs no
# tomli for); deps.sh installs it with python3 (scripts/locked-venv.sh).
PIP_VERSION = $(shell sed -n 's/^PIP_VERSION=//p' $(REPO_ROOT)/scripts/locked-venv.sh)
PIP_TOOLS := pip-tools==7.6.2 build==1.6.1 click==8.5.1 packaging==26.4 \
	pyproject_hooks==1.3.3 setuptools==80.9.0 wheel==0.48.0
PIP_TOOLS_VENV = $(SLUICE_CACHE)/pip-tools-$(shell echo '$(PIP_VERSION) $(PIP_TOOLS)' | sha256sum | cut -c1-12)
# How every lock is made (python-lock, bench-peers-lock): versions and hashes of
# every package, nothing of this machine's index or wheel folders.
PIP_COMPILE = "$(PIP_TOOLS_VENV)/bin/pip-compile" --quiet --generate-hashes --no-emit-index-url \
	--no-emit-find-links --strip-extras $(if $(UPGRADE),--upgrade)
LOCK_PYTHON = $(shell sed -n 's/.*pip-compile with Python \([0-9.]*\).*/\1/p' $(REPO_ROOT)/scripts/requirements.txt)

## python-lock: regenerate scripts/requirements.txt (hashes) from scripts/requirements.in with pinned pip-tools; UPGRADE=1 moves every pin
python-lock:
	@have=$$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	if [ -n "$(LOCK_PYTHON)" ] && [ "$$have" != "$(LOCK_PYTHON)" ] && [ -z "$(UPGRADE)" ]; then \
		echo "python-lock: the lock was made with Python $(LOCK_PYTHON) but python3 is $$have;" \
			"pins would differ (use Python $(LOCK_PYTHON), or UPGRADE=1 to re-resolve on purpose)" >&2; \
		exit 1; \
	fi
	@$(MAKE) --no-print-directory pip-tools
	cd scripts && CUSTOM_COMPILE_COMMAND="make python-lock" $(PIP_COMPILE) \
		--output-file=requirements.txt requirements.in
	@git diff --stat -- scripts/requirements.txt

# pip-tools: the pinned pip-compile in $(PIP_TOOLS_VENV), installed when missing.
pip-tools:
	@if [ ! -x "$(PIP_TOOLS_VENV)/bin/pip-compile" ]; then \
		echo "pip-tools: installing pip $(PIP_VERSION) and pip-tools into $(PIP_TOOLS_VENV)"; \
		rm -rf "$(PIP_TOOLS_VENV)" && python3 -m venv "$(PIP_TOOLS_VENV)" \
		&& "$(PIP_TOOLS_VENV)/bin/pip" install --quiet "pip==$(PIP_VERSION)" \
		&& "$(PIP_TOOLS_VENV)/bin/pip" install --quiet --no-deps $(PIP_TOOLS); \
	fi

## fresh-check: `make up` then `make test` in a fresh clone of HEAD under /tmp with empty caches; prints each wall time (slow: not in `make test`)
fresh-check:
	@scripts/fresh-check.sh

