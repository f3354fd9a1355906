#!/usr/bin/env bash
# Load held at 3x: a two-replica InferenceService driven by `sluice-server loadtest`
# at 1x, 2x and 3x its rated throughput, MINUTES each (argument, default 1). The
# rated throughput is measured first, with the InferenceService held at two replicas:
# the loadtest search against its Service prints the highest rate within p99 <= 100 ms
# (its throughputPerReplica line). Then autoscaling may go up to 4 replicas, rated at
# half that rate each, and each model queue holds 64 requests (beyond, 429). For each
# level it prints the accepted rate, the 429s, p50/p99 of the accepted requests
# (from when each was due, so a client that falls behind counts), the highest queue
# depth, each pod's RSS (first, last, highest), restarts and the autoscaler's desired
# replicas; it fails on a restart or a network error (a request with no HTTP answer).
# Uses the running local cluster or starts (and stops) one.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"
MINUTES=${1:-1}
NS=sluice-load
NAME=load
SERVER="${SLUICE_SERVER_BIN:-$REPO_ROOT/target/release/sluice-server}"
LOGS="$REPO_ROOT/.cluster/logs/load"

cluster_up
SAMPLER=""
cleanup() {
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null || true
    "$KUBECTL" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    if ((STARTED_CLUSTER)); then "$REPO_ROOT/e2e/cluster/cluster.sh" down; fi
}
trap cleanup EXIT
install_operator
mkdir -p "$LOGS"
k() { "$KUBECTL" -n "$NS" "$@"; }
"$KUBECTL" delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
"$KUBECTL" create namespace "$NS" >/dev/null

# apply THROUGHPUT MAX: the InferenceService, autoscaled on THROUGHPUT per replica
# between 2 and MAX replicas.
apply() {
    k apply --server-side --force-conflicts --field-manager=sluice-e2e -f - >/dev/null <<EOF
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: $NAME, namespace: $NS}
spec:
  model:
    storageUri: file://$MODELS_DIR/mlp/1/model.onnx
  minReplicas: 2
  maxReplicas: $2
  runtime:
    batching: {maxQueueSize: 64}
    resources:
      requests: {cpu: 100m, memory: 128Mi}
      limits: {memory: 1Gi}
  autoscaling:
    throughputPerReplica: $1
    headroom: 1.5
    rateWindowSeconds: 20
    peakWindowSeconds: 60
    scaleDownStabilizationSeconds: 60
    intervalSeconds: 5
EOF
}
apply 1000 2
k wait "isvc/$NAME" --for=condition=Ready --timeout=240s >/dev/null
svc="http://$(k get svc "$NAME" -o jsonpath='{.spec.clusterIP}'):8080"
for _ in $(seq 60); do probe "$svc/v2/models/$NAME/ready" 2>/dev/null && break; sleep 1; done

# The rated throughput: the loadtest search against the two-replica Service.
"$SERVER" loadtest --url "$svc" --model "$NAME" --step-seconds 3 --connections 64 \
    >"$LOGS/rating.txt" 2>"$LOGS/rating.log"
rated=$(sed -n 's/.*throughputPerReplica: \([0-9]*\).*/\1/p' "$LOGS/rating.txt")
[[ -n $rated && $rated -gt 0 ]] || { say "FAIL: no throughputPerReplica line: $(cat "$LOGS/rating.txt")"; exit 1; }
apply $((rated / 2)) 4
say "rated: $rated req/s for the two replicas (loadtest search, p99 <= 100 ms); autoscaling on $((rated / 2)) per replica, up to 4"

REPORT=()
failed=0
for level in 1 2 3; do
    rate=$((rated * level))
    samples="$LOGS/samples-${level}x.jsonl"
    rm -f "$samples"
    python3 "$REPO_ROOT/e2e/chaos/sample.py" watch --out "$samples" --namespace "$NS" --isvc "$NAME" \
        --kubectl "$KUBECTL" --pods-dir "$REPO_ROOT/.cluster/node/pods" --every 5 &
    SAMPLER=$!
    say "${level}x: $rate req/s for $MINUTES min"
    "$SERVER" loadtest --url "$svc" --model "$NAME" --rate "$rate" --step-seconds $((MINUTES * 60)) \
        --connections 512 --json >"$LOGS/step-${level}x.json" 2>"$LOGS/step-${level}x.log"
    kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
    sleep 10 # one more Prometheus scrape of the level's last seconds
    line=$(python3 - "$LOGS/step-${level}x.json" "$samples" "$level" "$REPO_ROOT/e2e/chaos/sample.py" \
        "$PROMETHEUS_URL" "$NAME" "$((MINUTES * 60))" <<'PY'
import json, subprocess, sys, urllib.parse, urllib.request
step = json.load(open(sys.argv[1]))
def server_ms(q):
    """The q quantile of the servers' own request duration over the level (ms)."""
    query = (f'1000 * histogram_quantile({q}, sum by (le) (increase('
             f'sluice_inference_request_duration_seconds_bucket{{isvc="{sys.argv[6]}"}}[{sys.argv[7]}s])))')
    url = sys.argv[5] + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    result = json.load(urllib.request.urlopen(url, timeout=10))["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")
env = json.loads(subprocess.run([sys.executable, sys.argv[4], "summary", "--out", sys.argv[2]],
                                check=True, capture_output=True, text=True).stdout)
network = step["errors"] - step["refused"]
rss = "; ".join(f'{n[-5:]} {r["first"]}->{r["last"]} (max {r["max"]}) MiB' for n, r in env["rss_mib"].items())
print(f'{sys.argv[3]}x {step["rate"]:.0f} req/s offered: accepted {step["achieved"]:.0f} req/s, '
      f'429 {step["refused"]}, other errors {network}, accepted p50 {step["p50_ms"]:.1f} ms '
      f'p99 {step["p99_ms"]:.1f} ms from when due (inside the servers, every answer: p50 {server_ms(0.5):.1f} ms '
      f'p99 {server_ms(0.99):.1f} ms), queue depth max {env["queue_depth_max"]:.0f}, '
      f'restarts {env["restarts"]}, desired replicas {env["desired_first_last"][0]} -> '
      f'{env["desired_first_last"][1]} (seen {env["desired_replicas"]}), RSS {rss}')
bad = env["restarts"] > 0 or network > 0
sys.exit(1 if bad else 0)
PY
    ) || failed=1
    REPORT+=("$line")
    say "$line"
done
printf 'sluice: %s\n' "${REPORT[@]}" >&2
((failed == 0)) || { say "FAIL: a level had restarts or network errors"; exit 1; }
say "load held at 1x, 2x and 3x"
