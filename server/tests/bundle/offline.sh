#!/bin/sh
# Runs inside a fresh network namespace (`unshare --net sh offline.sh ...`, from
# tests/bundle.rs): starts an unpacked bundle's ./start with an empty PATH and
# an empty environment, waits until it is ready, records what the test checks
# and the figures it prints into OUT, waits for the test's check from the host
# (OUT/host-checked) and stops the server.
#
# usage: offline.sh BUNDLE_DIR OUT EMPTY_PATH_DIR HTTP_PORT GRPC_PORT
set -eu
bundle=$1 out=$2 empty=$3 http=$4 grpc=$5
base=http://127.0.0.1:$http

ip link set lo up
ip -o link show > "$out/links"

cd "$bundle"
started=$(date +%s%N)
env -i PATH="$empty" ./start --http-port "$http" --grpc-port "$grpc" > "$out/server.log" 2>&1 &
pid=$!
tries=0
until curl -sf -o /dev/null "$base/v2/health/ready"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the server exited before it was ready" >&2
    exit 1
  fi
  tries=$((tries + 1))
  if [ "$tries" -ge 12000 ]; then
    echo "the server was not ready within a minute" >&2
    kill "$pid"
    exit 1
  fi
  sleep 0.005
done
ready=$(date +%s%N)
echo $(((ready - started) / 1000)) > "$out/cold_start_us"

# Idle: ready, warmed up, no request yet.
sleep 1
grep VmRSS "/proc/$pid/status" > "$out/rss_idle"
grep libonnxruntime "/proc/$pid/maps" > "$out/maps" || true
cat /proc/net/tcp > "$out/tcp"
cat /proc/net/tcp6 > "$out/tcp6" 2>/dev/null || true

curl -s -o /dev/null -w '%{http_code}' "$base/v2/health/ready" > "$out/ready_status"
for model in mlp flower; do
  curl -s -H 'Content-Type: application/json' --data-binary "@$out/$model.json" \
    "$base/v2/models/$model/infer" > "$out/$model.answer.json"
done

# 200 requests of one row, one after another on one keep-alive connection.
set --
i=0
while [ "$i" -lt 200 ]; do
  set -- "$@" -o /dev/null "$base/v2/models/mlp/infer"
  i=$((i + 1))
done
curl -s -H 'Content-Type: application/json' --data-binary "@$out/mlp.json" \
  -w '%{http_code} %{num_connects} %{time_total}\n' "$@" > "$out/latencies"
grep VmRSS "/proc/$pid/status" > "$out/rss_after"

# The test checks from the host that nothing answers there, then lets us stop.
touch "$out/ready"
waited=0
until [ -e "$out/host-checked" ] || [ "$waited" -ge 600 ]; do
  sleep 0.1
  waited=$((waited + 1))
done
kill "$pid"
wait "$pid"
