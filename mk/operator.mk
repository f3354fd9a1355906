# The operator (operator/): CRD generation, its staleness check, tests, and the
# local-cluster main job. Included by the root Makefile.

# Every CRD, one file each (crdgen names them <group>_<plural>.yaml), copied
# to config/crd/bases and the chart.
CRD_DIR := $(REPO_ROOT)/crds
CRD_COPIES := $(REPO_ROOT)/config/crd/bases $(REPO_ROOT)/charts/sluice/crds

TEST_TARGETS += check-crds test-operator test-operator-e2e
.PHONY: crdgen check-crds test-operator test-operator-e2e up-cluster scale-operator

## crdgen: regenerate crds/ (InferenceService, BatchInference) from the Rust types
crdgen:
	$(CARGO) run -q -p sluice-operator --bin crdgen -- --out-dir $(CRD_DIR)
	for dir in $(CRD_COPIES); do cp $(CRD_DIR)/*.yaml $$dir/; done

## check-crds: fail when crds/ (or its copies in config/ and charts/) is stale
check-crds:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(CARGO) run -q -p sluice-operator --bin crdgen -- --out-dir "$$tmp" && \
		diff -ru $(CRD_DIR) "$$tmp" \
		|| { echo "crds/ is stale: run 'make crdgen' and commit" >&2; exit 1; }
	@for dir in $(CRD_COPIES); do for crd in $(CRD_DIR)/*.yaml; do \
		diff -q $$crd $$dir/$$(basename $$crd) || exit 1; done; done

## test-operator: `helm lint` of the chart; operator unit, fixture, chart-RBAC, API-server (a namespace-scoped install among them) and Prometheus-analysis integration tests; the node agent's and kubectl-sluice's API-server tests
# A plain `cargo test` ignores the tests that need the upstream binaries (so it never
# starts the Go build); this target builds them once and runs those tests too.
test-operator: build cluster-deps
	bins=$$($(REPO_ROOT)/e2e/cluster/build-bins.sh --cached) && \
		$$bins/helm lint --strict $(REPO_ROOT)/charts/sluice && \
		$$bins/helm lint --strict $(REPO_ROOT)/charts/sluice --set 'watchNamespaces={team-a}' && \
		SLUICE_K8S_BIN=$$bins $(CARGO) test -p sluice-operator -- --include-ignored && \
		SLUICE_K8S_BIN=$$bins $(CARGO) test -p sluice-node-agent -- --include-ignored && \
		SLUICE_K8S_BIN=$$bins $(CARGO) test -p kubectl-sluice -- --include-ignored

## test-operator-e2e: kubectl apply a sample on the local cluster, infer right after Ready, delete; Argo CD health of every live state; two tenants under RBAC; a fallback model; a monitored one whose drift reaches Prometheus; one pod per edge node; BatchInference runs over S3 (a shard's pod deleted mid-run), file:// and pvc://
test-operator-e2e: build cluster-deps
	@$(REPO_ROOT)/e2e/operator/e2e.sh

## up-cluster: local cluster, CRDs, operator, a sample InferenceService, one prediction
up-cluster: build cluster-deps
	@$(REPO_ROOT)/scripts/up-cluster.sh

## scale-operator: operator memory and reconcile p50 with 200 InferenceServices
scale-operator:
	$(CARGO) run --release -p sluice-operator --example scale
