# Autoscaling (operator/src/autoscale): its end-to-end test on the local cluster and
# the 10-minute steady-load measurement. Included by the root Makefile.

TEST_TARGETS += test-autoscale-e2e
.PHONY: test-autoscale-e2e autoscale-steady

# The operator's Prometheus integration test (tests/prometheus_signals.rs) scrapes
# the release sluice-server.
test-operator: build

## test-autoscale-e2e: 3x load burst on the local cluster: replicas follow, then fall back to the floor
test-autoscale-e2e: build cluster-deps
	@$(REPO_ROOT)/e2e/operator/autoscale.sh burst

## autoscale-steady: 10 minutes of steady load on the local cluster; prints the number of scale changes
autoscale-steady: build cluster-deps
	@$(REPO_ROOT)/e2e/operator/autoscale.sh steady 10
