# Reliability on the local cluster (e2e/chaos): nothing lost while pods leave,
# operator and control-plane faults, and load held at 3x. docs/reliability.md says
# what each proves. Included by the root Makefile. Not in `make test`: together they
# take about 30 minutes on 2 cores (drain 10, operator 8, load 12), beyond its budget.

.PHONY: test-chaos test-chaos-drain test-chaos-operator test-load test-load-long

## test-chaos: every chaos scenario: test-chaos-drain, then test-chaos-operator
test-chaos: test-chaos-drain test-chaos-operator

## test-chaos-drain: rollouts, scale-down, pod deletion and SIGKILL under steady load of both client kinds; counts failed requests
test-chaos-drain: build cluster-deps
	@$(REPO_ROOT)/e2e/chaos/drain.sh

## test-chaos-operator: operator killed at each rollout step, leader failover, API server restart, unreachable model source
test-chaos-operator: build cluster-deps
	@$(REPO_ROOT)/e2e/chaos/operator.sh

## test-load: a two-replica InferenceService at 1x, 2x and 3x its rated throughput, 1 min each (LOAD_MINUTES to change)
test-load: build cluster-deps
	@$(REPO_ROOT)/e2e/chaos/load.sh $${LOAD_MINUTES:-1}

## test-load-long: the same, 10 minutes per level
test-load-long: build cluster-deps
	@$(REPO_ROOT)/e2e/chaos/load.sh 10
