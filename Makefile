# Sluice: `make up` runs the main job, `make test` runs every test CI runs.
SHELL := /bin/bash
REPO_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
SLUICE_CACHE ?= $(HOME)/.cache/sluice
VENV := $(SLUICE_CACHE)/venv
PYTHON := $(VENV)/bin/python
CARGO ?= cargo
export SLUICE_CACHE

# Each mk/*.mk fragment adds its own targets and appends its test targets to
# TEST_TARGETS, which `make test` runs after the server's tests.
TEST_TARGETS :=
-include mk/*.mk
.PHONY: deps build test lint test-rust test-python bench up up-server fmt

## deps: install the ONNX Runtime library, Python tools and fixture models (cached)
deps:
	@scripts/deps.sh

## build: release binaries in target/release (sluice-server finds ONNX Runtime beside itself)
build: deps
	$(CARGO) build --release --workspace --bins
	@scripts/profiles.sh target/release/sluice-server

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The operator's tests need the local cluster's API server binaries: they run
# in test-operator (mk/operator.mk), after cluster-deps.
test-rust: deps
	$(CARGO) test --workspace --exclude sluice-operator

test-python: build
	SLUICE_SERVER_BIN=$(REPO_ROOT)/target/release/sluice-server $(PYTHON) -m pytest -q server/tests/python

## test: everything CI runs
test: lint test-rust test-python $(TEST_TARGETS)

## bench: server overhead and throughput against raw ONNX Runtime, and drift tracking's cost (prints figures)
bench: build
	$(CARGO) build --release -p sluice-server --examples
	taskset -c 1 target/release/examples/bench
	target/release/examples/bench_monitoring

## up: the main job: local cluster, CRDs, operator, a sample InferenceService, one prediction
up: up-cluster

## up-server: just the model server on the fixture models, one prediction, then stop
up-server: build
	@scripts/up.sh

fmt:
	$(CARGO) fmt --all

