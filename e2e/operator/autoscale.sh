#!/usr/bin/env bash
# Autoscaling on the local cluster, with the operator reading the cluster's Prometheus.
#   autoscale.sh [burst]        (make test-autoscale-e2e) load rises 3x and the replicas
#                               follow; the load stops and they fall back after the
#                               (shortened) windows, never below minReplicas; then mode
#                               External hands the count to `kubectl scale`.
#   autoscale.sh steady [MIN]   (make autoscale-steady) MIN minutes (10) of steady load;
#                               prints the number of scale changes (the goal is none).
# Prints the desired and ready replica counts over time. Uses the running local
# cluster or starts (and stops) one.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"
mode="${1:-burst}"
NAME=autoscale
SERVER="$REPO_ROOT/target/release/sluice-server"

cluster_up
LOAD_PID=
cleanup() {
    [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null || true
    "$KUBECTL" delete isvc "$NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    if ((STARTED_CLUSTER)); then "$REPO_ROOT/e2e/cluster/cluster.sh" down; fi
}
trap cleanup EXIT
install_operator
"$KUBECTL" delete isvc "$NAME" --ignore-not-found --wait=true >/dev/null

# The fixture MLP. A declared throughput of 20 requests/s per replica keeps the load
# (and the CPU it costs on a small machine) low while exercising the real formula.
# The windows are shortened so that the test takes minutes: rates over 10 s (two
# 5 s scrapes), a 30 s peak window and a 30 s scale-down window, evaluated every 5 s.
"$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: $NAME, namespace: default}
spec:
  model:
    storageUri: file://$MODELS_DIR/mlp/1/model.onnx
  minReplicas: 2
  maxReplicas: 6
  runtime:
    resources:
      requests: {cpu: 100m, memory: 128Mi}
      limits: {cpu: "1", memory: 1Gi}
  autoscaling:
    throughputPerReplica: 20
    headroom: 1.5
    rateWindowSeconds: 10
    peakWindowSeconds: 30
    scaleDownStabilizationSeconds: 30
    intervalSeconds: 5
EOF
"$KUBECTL" wait "isvc/$NAME" --for=condition=Ready --timeout=240s >/dev/null
url="$(echo "http://$("$KUBECTL" get svc "$NAME" -o jsonpath='{.spec.clusterIP}'):8080")"
# Ready pods reach the Service's endpoints (and the node's NAT rules) a moment
# later: wait until the Service itself answers before the load starts.
for _ in $(seq 60); do
    probe "$url/v2/models/$NAME/ready" 2>/dev/null && break
    sleep 1
done
probe "$url/v2/models/$NAME/ready" || { say "FAIL: the Service $url never answered"; exit 1; }

# load RATE SECONDS: an open-loop load at RATE requests/s in the background.
load() {
    "$SERVER" loadtest --url "$url" --model "$NAME" --rate "$1" --step-seconds "$2" \
        --connections 16 >>"$REPO_ROOT/.cluster/logs/autoscale-load.log" 2>&1 &
    LOAD_PID=$!
}

# sample: "<seconds since start> <desired> <ready> <signal>", appended to SAMPLES.
START=$(date +%s)
SAMPLES=()
sample() {
    local line
    line=$("$KUBECTL" get isvc "$NAME" -o \
        jsonpath='{.status.autoscaling.desiredReplicas} {.status.readyReplicas} {.status.autoscaling.signal}')
    line="$(($(date +%s) - START)) $line"
    SAMPLES+=("$line")
    echo "  t=${line%% *}s desired/ready/signal: ${line#* }" >&2
}
desired() { "$KUBECTL" get isvc "$NAME" -o jsonpath='{.status.autoscaling.desiredReplicas}'; }

# watch_for SECONDS CONDITION: samples every 2 s until CONDITION (bash, on $d) holds.
watch_for() {
    local until=$(($(date +%s) + $1)) d
    while (($(date +%s) < until)); do
        sample
        d=$(desired)
        if eval "$2"; then return 0; fi
        sleep 2
    done
    return 1
}

case "$mode" in
burst)
    say "base load: 20 req/s (the formula asks for 1.5, so the floor of 2 holds)"
    load 20 200
    watch_for 30 'false' || true
    [[ $(desired) -eq 2 ]] || { say "FAIL: expected 2 replicas at the base load, have $(desired)"; exit 1; }
    kill "$LOAD_PID"
    say "3x burst: 60 req/s (the formula asks for ceil(60 x 1.5 / 20) = 5)"
    burst_start=$(date +%s)
    load 60 300
    watch_for 60 '[[ $d -ge 5 ]]' || { say "FAIL: replicas did not follow the burst"; exit 1; }
    reaction=$(($(date +%s) - burst_start))
    say "desired replicas reached $(desired) ${reaction}s after the burst began"
    "$KUBECTL" wait "isvc/$NAME" --for=condition=Ready --timeout=120s >/dev/null
    ready_after=$(($(date +%s) - burst_start))
    say "all $(desired) replicas ready ${ready_after}s after the burst began"
    watch_for 20 'false' || true
    kill "$LOAD_PID"; LOAD_PID=
    stop=$(date +%s)
    say "load stopped: replicas must stay until the 30 s peak and 30 s scale-down windows pass, then fall to 2"
    watch_for 150 '[[ $d -le 2 ]]' || { say "FAIL: replicas did not fall back to the floor"; exit 1; }
    fell=$(($(date +%s) - stop))
    watch_for 10 'false' || true
    low=$(printf '%s\n' "${SAMPLES[@]}" | awk '{print $2}' | sort -n | head -1)
    ((low >= 2)) || { say "FAIL: replicas went below minReplicas (lowest $low)"; exit 1; }
    say "replicas fell to the floor ${fell}s after the load stopped; lowest count seen: $low"

    say "mode External: kubectl scale owns the count"
    "$KUBECTL" patch isvc "$NAME" --type merge -p '{"spec":{"autoscaling":{"mode":"External"}}}' >/dev/null
    "$KUBECTL" scale isvc "$NAME" --replicas 3 >/dev/null
    # One revision, so its Deployment (`$NAME-<revision>`) runs the whole count.
    running() {
        "$KUBECTL" get deployments -l "serving.sluice.dev/inferenceservice=$NAME" \
            -o jsonpath='{range .items[*]}{.spec.replicas}{"\n"}{end}' | awk '{n += $1} END {print n + 0}'
    }
    for _ in $(seq 60); do
        [[ $(running) == 3 ]] && break
        sleep 1
    done
    [[ $(running) == 3 ]] ||
        { say "FAIL: kubectl scale --replicas 3 did not reach the Deployment"; exit 1; }
    [[ $("$KUBECTL" get isvc "$NAME" -o jsonpath='{.status.autoscaling.signal}') == External ]] ||
        { say "FAIL: status.autoscaling.signal is not External"; exit 1; }
    say "kubectl scale --replicas 3 reached the Deployment; autoscaling e2e passed"
    ;;
steady)
    minutes="${2:-10}"
    rate=50
    say "steady load: $rate req/s for $minutes min (the formula asks for ceil($rate x 1.5 / 20) = 4)"
    load "$rate" $((minutes * 60 + 120))
    watch_for 90 '[[ $d -ge 4 ]]' || { say "FAIL: replicas did not reach 4"; exit 1; }
    sleep 30
    settled=$(desired)
    START=$(date +%s)
    SAMPLES=()
    watch_for $((minutes * 60)) 'false' || true
    changes=$(printf '%s\n' "${SAMPLES[@]}" | awk 'NR > 1 && $2 != prev {n++} {prev = $2} END {print n + 0}')
    say "settled at $settled replicas; scale changes during $minutes min of steady load: $changes"
    ;;
*)
    echo "usage: autoscale.sh [burst | steady [MINUTES]]" >&2
    exit 2
    ;;
esac
