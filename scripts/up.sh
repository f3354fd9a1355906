#!/usr/bin/env bash
# `make up-server`: starts sluice-server on the fixture model repository, waits until it
# is ready, prints one prediction from the iris classifier over the Open Inference
# Protocol, and shuts the server down gracefully (SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${SLUICE_UP_PORT:-8080}
log=$(mktemp -t sluice-up.XXXXXX.log)
target/release/sluice-server serve --host 127.0.0.1 \
  --model-repository server/fixtures/models \
  --http-port "$port" --grpc-port "$((port + 1))" 2>"$log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT

for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/v2/health/ready" >/dev/null || { echo "server never became ready"; cat "$log"; exit 1; }

echo "sluice-server is ready on http://127.0.0.1:$port; asking the iris model about one flower:"
request='{"id":"make-up","inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[[6.3,3.3,6.0,2.5]]}]}'
echo "POST /v2/models/iris/infer $request"
curl -fsS -H 'Content-Type: application/json' -d "$request" "http://127.0.0.1:$port/v2/models/iris/infer"
echo
