# The peers benchmark: sluice-server beside the naive server, the seed's FastAPI +
# ONNX Runtime app, MLServer and KServe (pinned PyPI releases), each alone on CPU 0
# with one ONNX Runtime thread, with the same client and load (docs/performance.md).
# Included by the root Makefile; not part of `make test`: it prints figures and
# asserts nothing.

.PHONY: bench-peers bench-peers-deps bench-peers-lock

PEERS_DIR := server/bench/peers
PEERS_VENVS = $(SLUICE_CACHE)/peers-venv
BENCH_PEERS_OUT := target/bench-peers
# Each peer as NAME=COMMAND, in the table's order; server/examples/bench_peers.rs
# fills in the {placeholders}, pins the command to CPU 0 and sets OMP_NUM_THREADS=1.
# sluice-server is started as `make bench` starts it, on a repository with one
# intra-op thread.
BENCH_PEERS = \
	--peer 'sluice-server=target/release/sluice-server serve --host 127.0.0.1 --model-repository {repository} --http-port {http_port} --grpc-port {grpc_port}' \
	--peer 'naive axum + ort=target/release/examples/naive_server {model} {http_port}' \
	--peer 'FastAPI + ONNX Runtime=$(PEERS_VENVS)/fastapi/bin/python $(PEERS_DIR)/fastapi/app.py --model {model} --name mlp --port {http_port}' \
	--peer 'MLServer=$(PEERS_VENVS)/mlserver/bin/python $(PEERS_DIR)/mlserver/serve.py --model {model} --name mlp --http-port {http_port} --grpc-port {grpc_port} --metrics-port {metrics_port}' \
	--peer 'KServe=$(PEERS_VENVS)/kserve/bin/python $(PEERS_DIR)/kserve/serve.py --model {model} --model_name mlp --http_port {http_port} --grpc_port {grpc_port}'

## bench-peers: sluice-server against the naive server, the seed's FastAPI app, MLServer and KServe on one core each: p50/p99 at concurrency 1, requests/s at 16 and at saturation, tritonclient protocol checks; writes the table and a plot into docs/performance.md
bench-peers: build bench-peers-deps
	$(CARGO) build --release -p sluice-server --examples
	taskset -c 1 target/release/examples/bench_peers --out $(BENCH_PEERS_OUT) \
		--checks-python $(PYTHON) $(BENCH_PEERS)
	$(PEERS_VENVS)/report/bin/python $(PEERS_DIR)/report/report.py $(BENCH_PEERS_OUT) \
		docs/performance.md docs/performance-peers.png

## bench-peers-deps: install the peers' locked PyPI packages (server/bench/peers/*/requirements.txt) into $SLUICE_CACHE/peers-venv/<peer> when missing or when a lock changed
bench-peers-deps:
	@$(PEERS_DIR)/install.sh

# The same pinned pip-tools and flags as `make python-lock` (PIP_COMPILE).
## bench-peers-lock: regenerate server/bench/peers/*/requirements.txt (hashes) from each requirements.in with the pinned pip-tools; UPGRADE=1 moves every pin
bench-peers-lock: pip-tools
	for requirements in $(PEERS_DIR)/*/requirements.in; do \
		(cd "$$(dirname "$$requirements")" && CUSTOM_COMPILE_COMMAND="make bench-peers-lock" \
			$(PIP_COMPILE) --output-file=requirements.txt requirements.in) || exit 1; \
	done
	@git diff --stat -- $(PEERS_DIR)
