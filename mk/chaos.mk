# Reliability on the local cluster (e2e/chaos): nothing lost while pods leave,
# operator and control-plane faults, and load held at 3x. docs/reliability.md says
# what each proves. Included by the root Makefile. The whole suite takes about 30
# minutes on 2 cores (drain 10, operator 8, load 12), beyond `make test`'s budget, so
# `make test` runs a CI-sized subset (test-chaos-ci) and the rest has its own targets.

TEST_TARGETS += test-chaos-ci
.PHONY: test-chaos test-chaos-ci test-chaos-drain test-chaos-operator test-load test-load-long

## test-chaos-ci: the subset in `make test`: canary promotion and a pod deleted under load (0 failed), the operator killed at each rollout step, an unreachable model source
test-chaos-ci: build cluster-deps
	@CHAOS_ONLY="1 5" $(REPO_ROOT)/e2e/chaos/drain.sh
	@CHAOS_ONLY="1 4" $(REPO_ROOT)/e2e/chaos/operator.sh

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
