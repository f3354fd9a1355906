# The operator (operator/): CRD generation, its staleness check, tests, and the
# local-cluster main job. Included by the root Makefile.

OPERATOR_CRD := $(REPO_ROOT)/crds/serving.sluice.dev_inferenceservices.yaml

TEST_TARGETS += check-crds test-operator test-operator-e2e
.PHONY: crdgen check-crds test-operator test-operator-e2e up-cluster scale-operator

## crdgen: regenerate crds/ from the Rust types
crdgen:
	$(CARGO) run -q -p sluice-operator --bin crdgen > $(OPERATOR_CRD).tmp
	mv $(OPERATOR_CRD).tmp $(OPERATOR_CRD)
	cp $(OPERATOR_CRD) $(REPO_ROOT)/config/crd/bases/
	cp $(OPERATOR_CRD) $(REPO_ROOT)/charts/sluice/crds/

## check-crds: fail when crds/ (or its copies in config/ and charts/) is stale
check-crds:
	@$(CARGO) run -q -p sluice-operator --bin crdgen | diff -u $(OPERATOR_CRD) - \
		|| { echo "crds/ is stale: run 'make crdgen' and commit" >&2; exit 1; }
	@diff -q $(OPERATOR_CRD) $(REPO_ROOT)/config/crd/bases/$(notdir $(OPERATOR_CRD))
	@diff -q $(OPERATOR_CRD) $(REPO_ROOT)/charts/sluice/crds/$(notdir $(OPERATOR_CRD))

## test-operator: operator unit, fixture, API-server and Prometheus-analysis integration tests
# A plain `cargo test` ignores the tests that need the upstream binaries (so it never
# starts the Go build); this target builds them once and runs those tests too.
test-operator: build cluster-deps
	bins=$$($(REPO_ROOT)/e2e/cluster/build-bins.sh --cached) && \
		SLUICE_K8S_BIN=$$bins $(CARGO) test -p sluice-operator -- --include-ignored

## test-operator-e2e: kubectl apply a sample on the local cluster, infer, delete; a fallback model; a monitored one whose drift reaches Prometheus; one pod per edge node
test-operator-e2e: build cluster-deps
	@$(REPO_ROOT)/e2e/operator/e2e.sh

## up-cluster: local cluster, CRDs, operator, a sample InferenceService, one prediction
up-cluster: build cluster-deps
	@$(REPO_ROOT)/scripts/up-cluster.sh

## scale-operator: operator memory and reconcile p50 with 200 InferenceServices
scale-operator:
	$(CARGO) run --release -p sluice-operator --example scale
