# Rollouts (operator/src/rollout): end-to-end scenarios on the local cluster with
# real traffic and Prometheus. Included by the root Makefile.

TEST_TARGETS += test-rollout-e2e
.PHONY: test-rollout-e2e rollout-healthy

## test-rollout-e2e: canary promote, latency/error rollbacks, Prometheus-down hold, blue-green
test-rollout-e2e: build cluster-deps
	@$(REPO_ROOT)/e2e/rollout/e2e.sh

## rollout-healthy: 20 healthy canaries in a row with the default checks; counts wrong rollbacks
rollout-healthy: build cluster-deps
	@$(REPO_ROOT)/e2e/rollout/healthy.sh
