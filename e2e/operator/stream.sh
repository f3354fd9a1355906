#!/usr/bin/env bash
# Streaming on the local cluster (make test-stream-e2e): an InferenceService with
# spec.streaming runs `sluice-server stream` workers in pods, between two topics of
# the host's Kafka broker (e2e/kafka/kafka.sh, on the pods' gateway address).
#
# 1. Lag-driven scale-out: one worker (minReplicas 1), made slow on purpose by
#    micro-batches of 10 records (a transaction each), meets a backlog of EVENTS
#    events. The operator reads the workers' lag from Prometheus and scales them to
#    the input topic's 4 partitions (maxReplicas is 6: the partitions cap it); once
#    the backlog is gone they fall back to 1. Prints the timings: backlog written
#    -> scale-up decided -> workers ready -> backlog drained -> back to 1.
# 2. A canary on the stream: a new revision (another env value) joins the same
#    consumer group; at the 50% step it has half the group's members, so about
#    half the partitions. The analysis judges it on its records (the share
#    dead-lettered, end-to-end latency) and promotes it. Prints each revision's
#    share of the records during the canary.
# 3. Every event of both phases has exactly one outcome: a prediction, or, for the
#    malformed ones (every 997th), a dead letter; 0 lost and 0 duplicated,
#    whatever the rebalances of scaling, a worker pod killed mid-stream (right
#    after the scale-out) and the rollout did.
#
# Uses the running local cluster or starts (and stops) one; starts the broker
# unless it runs.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"
NAME=stream
EVENTS="${SLUICE_STREAM_EVENTS:-20000}"
PARTITIONS=4
TOOL="$REPO_ROOT/target/release/examples/stream_e2e"
KAFKA_SH="$REPO_ROOT/e2e/kafka/kafka.sh"

cluster_up
cleanup() {
    "$KUBECTL" delete isvc "$NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    if ((STARTED_CLUSTER)); then "$REPO_ROOT/e2e/cluster/cluster.sh" down; fi
}
trap cleanup EXIT
REPO_ROOT="$REPO_ROOT" "$KAFKA_SH" start >/dev/null
BOOTSTRAP=$(REPO_ROOT="$REPO_ROOT" "$KAFKA_SH" env | sed -n 's/^KAFKA_BOOTSTRAP_SERVERS=//p')
[[ -n $BOOTSTRAP ]] || { say "FAIL: no Kafka broker address"; exit 1; }
install_operator
"$KUBECTL" delete isvc "$NAME" --ignore-not-found --wait=true >/dev/null

# Fresh topics each run, so that nothing of an earlier run is counted.
run=$(date +%s)
IN="stream-in-$run" OUT="stream-out-$run" DLQ="stream-dlq-$run"
for topic in "$IN" "$OUT"; do REPO_ROOT="$REPO_ROOT" "$KAFKA_SH" topic "$topic" "$PARTITIONS" >/dev/null; done
REPO_ROOT="$REPO_ROOT" "$KAFKA_SH" topic "$DLQ" 1 >/dev/null

# isvc ENV_VALUE: the InferenceService; a new ENV_VALUE is a new revision.
isvc() {
    cat <<EOF
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: $NAME, namespace: default}
spec:
  model:
    storageUri: file://$MODELS_DIR/iris/1/model.onnx
  minReplicas: 1
  maxReplicas: 6
  runtime:
    env: [{name: E2E_REVISION, value: "$1"}]
    resources:
      requests: {cpu: 50m, memory: 96Mi}
      limits: {cpu: "1", memory: 512Mi}
  streaming:
    brokers: $BOOTSTRAP
    inputTopic: $IN
    outputTopic: $OUT
    deadLetterTopic: $DLQ
    maxBatchRecords: 10
    lingerMs: 0
  autoscaling:
    rateWindowSeconds: 10
    scaleDownStabilizationSeconds: 30
    intervalSeconds: 5
    triggers: {consumerLagRecords: 500, cpuUtilizationPercent: 0, queueDepth: 0}
  rollout:
    canary: {steps: [50], stepSeconds: 30}
    analysis:
      intervalSeconds: 10
      windowSeconds: 20
      minRequests: 20
      predictionAgreement: {enabled: false}
EOF
}
field() { "$KUBECTL" get isvc "$NAME" -o jsonpath="$1" 2>/dev/null; }

isvc one | "$KUBECTL" apply -f - >/dev/null
if ! "$KUBECTL" wait "isvc/$NAME" --for=condition=Ready --timeout=240s >/dev/null; then
    "$KUBECTL" describe isvc "$NAME" >&2 || true
    "$KUBECTL" get pods -o wide >&2 || true
    exit 1
fi
say "stream workers Ready: $(field '{.status.readyReplicas}') pod, group of revision $(field '{.status.revision}')"

# 1. The backlog, and the scale-out it causes.
start=$(now)
"$TOOL" produce "$BOOTSTRAP" "$IN" 0 "$EVENTS"
written=$(now)
say "$EVENTS events written in $(since "$start" "$written") s"
decided="" ready="" peak=1 signal=""
deadline=$(($(date +%s) + 240))
while (($(date +%s) < deadline)); do
    read -r desired ready_now signal_now < <(field '{.status.autoscaling.desiredReplicas} {.status.readyReplicas} {.status.autoscaling.signal}') || true
    desired=${desired:-1} ready_now=${ready_now:-0}
    if [[ -z $decided && $desired -gt 1 ]]; then decided=$(now); signal=$signal_now; fi
    ((desired > peak)) && peak=$desired
    if [[ -n $decided && -z $ready && $ready_now -ge $peak && $peak -gt 1 ]]; then ready=$(now); fi
    [[ -n $ready ]] && break
    sleep 1
done
[[ -n $decided ]] || { say "FAIL: the workers were never scaled out"; "$KUBECTL" get isvc "$NAME" -o yaml >&2; exit 1; }
[[ -n $ready ]] || { say "FAIL: $peak workers never became ready"; "$KUBECTL" get pods -o wide >&2; exit 1; }
say "scale-out: desired 1 -> $peak ($signal) $(since "$written" "$decided") s after the backlog was written; $peak workers ready after $(since "$written" "$ready") s"
# A worker killed mid-stream (SIGKILL, no grace): its open transaction is aborted,
# its partitions move to the others, and its replacement joins the group.
victim=$("$KUBECTL" get pods -l serving.sluice.dev/inferenceservice="$NAME" -o jsonpath='{.items[0].metadata.name}')
"$KUBECTL" delete pod "$victim" --grace-period=0 --force >/dev/null 2>&1
say "worker pod $victim killed mid-stream"
((peak <= PARTITIONS)) || { say "FAIL: $peak workers for $PARTITIONS partitions"; exit 1; }
[[ $peak -eq $PARTITIONS ]] || { say "FAIL: the lag asked for $PARTITIONS workers (the partitions), got $peak"; exit 1; }
account=$("$TOOL" account "$BOOTSTRAP" "$OUT" "$DLQ" "$EVENTS") || { say "FAIL: $account"; exit 1; }
drained=$(now)
say "every event answered once $(since "$written" "$drained") s after the backlog was written: $account"
deadline=$(($(date +%s) + 180))
until [[ "$(field '{.status.autoscaling.desiredReplicas}')" == 1 ]]; do
    (($(date +%s) < deadline)) || { say "FAIL: the workers never fell back to 1"; field '{.status.autoscaling}' >&2; exit 1; }
    sleep 2
done
say "back to 1 worker $(since "$drained" "$(now)") s after the backlog drained ($(field '{.status.autoscaling.reason}'))"

# 2. A canary: the new revision's workers join the group at the 50% step. Events
# keep coming, 200 every 2 s, until the rollout ends; once the step has run 20 s,
# each revision's share of the last 15 s of records is read from Prometheus.
stable=$(field '{.status.stableRevision}')
isvc two | "$KUBECTL" apply -f - >/dev/null
deadline=$(($(date +%s) + 60))
until [[ "$(field '{.status.rollout.revision}')" != "$stable" ]]; do
    (($(date +%s) < deadline)) || { say "FAIL: no rollout started"; field '{.status}' >&2; exit 1; }
    sleep 1
done
# share: "<stable records> <canary records>" consumed over the last 15 s.
share() {
    python3 - "$PROMETHEUS_URL" "$NAME" "$stable" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
prometheus, isvc, stable, canary = sys.argv[1:]
query = f'sum by (revision) (increase(sluice_stream_records_total{{namespace="default",isvc="{isvc}",outcome="consumed"}}[15s]))'
with urllib.request.urlopen(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})) as answer:
    series = json.load(answer)["data"]["result"]
counts = {s["metric"].get("revision"): float(s["value"][1]) for s in series}
print(f"{counts.get(stable, 0):.0f} {counts.get(canary, 0):.0f}")
PY
}
deadline=$(($(date +%s) + 300))
next=$EVENTS
phase="" sampled=""
while (($(date +%s) < deadline)); do
    phase=$(field '{.status.rollout.phase}')
    [[ $phase == Promoted || $phase == RolledBack || $phase == Aborted ]] && break
    "$TOOL" produce "$BOOTSTRAP" "$IN" "$next" $((next + 200))
    next=$((next + 200))
    started=$(field '{.status.rollout.stepStarted}')
    weight=$(field '{.status.canaryWeight}')
    if [[ -z $sampled && -n $started && -n $weight ]] && (($(date +%s) - $(date -d "$started" +%s) >= 20)); then
        read -r from_stable from_canary < <(share "$(field '{.status.rollout.revision}')")
        sampled="canary weight $weight% ($(field '{.status.replicas}') workers): stable $from_stable, canary $from_canary records in 15 s"
        say "$sampled"
    fi
    sleep 2
done
[[ $phase == Promoted ]] || { say "FAIL: the canary ended '$phase'"; field '{.status.rollout}' >&2; exit 1; }
[[ -n $sampled ]] || { say "FAIL: the canary step was never sampled"; exit 1; }
say "canary promoted: $(field '{.status.rollout.message}')"
say "its last analysis: $(field '{range .status.rollout.checks[*]}{.name}={.value} ({.verdict}) {end}')"
[[ ${from_canary%.*} -gt 0 ]] || { say "FAIL: the canary's workers read no record"; exit 1; }
account=$("$TOOL" account "$BOOTSTRAP" "$OUT" "$DLQ" "$next") || { say "FAIL: $account"; exit 1; }
say "after the rollout every event answered once: $account"
say "stream e2e passed"
