# Local cluster (e2e/cluster): upstream control plane built from Go modules, the
# sluice node agent running pods as processes, Prometheus with pod discovery.
# Included by the root Makefile.

SLUICE_CACHE ?= $(HOME)/.cache/sluice
REPO_ROOT ?= $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
CARGO ?= cargo
CLUSTER_SH := $(REPO_ROOT)/e2e/cluster/cluster.sh
CLUSTER_ENV := REPO_ROOT=$(REPO_ROOT) SLUICE_CACHE=$(SLUICE_CACHE) \
	SLUICE_NODE_AGENT_BIN=$(REPO_ROOT)/target/release/sluice-node-agent

TEST_TARGETS += test-cluster
.PHONY: cluster-deps cluster-agent cluster cluster-down test-cluster

## cluster-deps: host packages (prometheus, iptables, ...) and the cached Kubernetes binaries
cluster-deps:
	@$(CLUSTER_ENV) $(REPO_ROOT)/e2e/cluster/deps.sh

# The same build as `make build`: building the agent alone would unify crate
# features differently and rebuild half the dependency tree each time.
cluster-agent:
	$(CARGO) build --release --workspace --bins

## cluster: start the local cluster (or reuse the running one); writes .cluster/env
cluster: cluster-deps cluster-agent
	@$(CLUSTER_ENV) $(CLUSTER_SH) up

## cluster-down: stop every process the local cluster started and undo its network setup
cluster-down:
	@$(CLUSTER_ENV) $(CLUSTER_SH) down

## test-cluster: harness tests on the local cluster (starts and stops it unless it was running)
test-cluster: cluster-deps cluster-agent
	@$(CLUSTER_ENV) $(REPO_ROOT)/e2e/cluster/test.sh
