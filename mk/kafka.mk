# The Kafka broker of the tests and the local cluster (e2e/kafka): Apache Kafka 4.4 in
# KRaft mode, one JVM on the jars e2e/kafka/pom.xml pins. `make deps` installs them;
# server/tests/common/kafka.rs starts a broker per Rust test; e2e/kafka/kafka.sh runs
# one on the host for the cluster's pods.
# Included by the root Makefile.

KAFKA_SH := $(REPO_ROOT)/e2e/kafka/kafka.sh
TEST_TARGETS += test-stream-e2e
.PHONY: kafka-deps kafka-up kafka-down test-stream-e2e

## kafka-deps: copy the pinned Kafka broker's jars (e2e/kafka/deps.sh, Maven) into $SLUICE_CACHE/kafka-4.4.0 when missing (also part of deps)
kafka-deps:
	@$(REPO_ROOT)/e2e/kafka/deps.sh >/dev/null

## kafka-up: start (or reuse) the local cluster's Kafka broker on the bridge address (SLUICE_KAFKA_ADDRESS, SLUICE_KAFKA_PORT to move it); prints and writes .cluster/kafka/env
kafka-up: kafka-deps
	@REPO_ROOT=$(REPO_ROOT) $(KAFKA_SH) start

## kafka-down: stop the local cluster's Kafka broker (its topics stay until cluster-down)
kafka-down:
	@REPO_ROOT=$(REPO_ROOT) $(KAFKA_SH) stop

## test-stream-e2e: spec.streaming on the local cluster: workers scaled out on consumer lag up to the partitions and back, a canary on the stream promoted, every event answered exactly once (SLUICE_STREAM_EVENTS, default 20000)
test-stream-e2e: build cluster-deps kafka-deps
	$(CARGO) build --release -p sluice-server --example stream_e2e
	@$(REPO_ROOT)/e2e/operator/stream.sh
