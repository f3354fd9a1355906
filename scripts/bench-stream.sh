#!/usr/bin/env bash
# `make bench-stream`: starts a Kafka broker of its own (e2e/kafka/kafka.sh, on
# loopback, in a temporary folder, on free ports), runs
# target/release/examples/bench_stream against it pinned to core 1 (the broker
# runs on the other core), then stops the broker and removes its folder.
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

dir=$(mktemp -d -t sluice-bench-stream.XXXXXX)
export CLUSTER_DIR=$dir SLUICE_KAFKA_ADDRESS=127.0.0.1
SLUICE_KAFKA_PORT=$(free_port)
SLUICE_KAFKA_CONTROLLER_PORT=$(free_port)
export SLUICE_KAFKA_PORT SLUICE_KAFKA_CONTROLLER_PORT
trap 'e2e/kafka/kafka.sh stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
e2e/kafka/kafka.sh start >/dev/null
taskset -c 1 target/release/examples/bench_stream target/release/sluice-server "127.0.0.1:$SLUICE_KAFKA_PORT"
