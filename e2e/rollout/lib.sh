# Steps shared by e2e/rollout/e2e.sh and e2e/rollout/healthy.sh (sourced after
# e2e/operator/lib.sh). One InferenceService, $ISVC in $NS, serves the mlp
# fixture; each scenario changes its model and watches the rollout.

NS=sluice-rollout
ISVC=roll
LOADGEN_PIDS=()
# Set by a scenario that pauses Prometheus, so that cleanup resumes it.
PROMETHEUS_PID=""

# rollout_setup: the local cluster (started, and stopped on exit, when none runs),
# the operator, and a fresh $NS; on exit, the load stops, a paused Prometheus
# resumes and $NS goes.
rollout_setup() {
    cluster_up
    trap rollout_cleanup EXIT
    install_operator
    "$KUBECTL" delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
    "$KUBECTL" create namespace "$NS" >/dev/null
}

rollout_cleanup() {
    local code=$?
    ((code == 0)) || failure_summary
    stop_load
    [[ -n $PROMETHEUS_PID ]] && kill -CONT "$PROMETHEUS_PID" 2>/dev/null || true
    "$KUBECTL" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    if ((STARTED_CLUSTER)); then "$REPO_ROOT/e2e/cluster/cluster.sh" down; fi
}

k() { "$KUBECTL" -n "$NS" "$@"; }
isvc_field() { k get isvc "$ISVC" -o jsonpath="$1" 2>/dev/null; }

# apply_isvc MODEL [ROLLOUT [OPTIMIZE]]: server-side apply of the InferenceService
# serving /opt/sluice/models/MODEL/model.onnx (or MODEL itself when it is a URI)
# with spec.rollout ROLLOUT and spec.model.optimize OPTIMIZE (YAML flow style).
apply_isvc() {
    local rollout_spec=${2:-} uri=$1 optimize=""
    [[ $uri == *://* ]] || uri="file://$MODELS_DIR/$1/model.onnx"
    [[ -n $rollout_spec ]] || rollout_spec='{}'
    [[ -z ${3:-} ]] || optimize="
    optimize: $3"
    k apply --server-side --force-conflicts --field-manager=sluice-e2e -f - >/dev/null <<EOF
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: $ISVC, namespace: $NS}
spec:
  model:
    storageUri: $uri$optimize
  minReplicas: 2
  runtime:
    resources:
      requests: {cpu: 50m, memory: 64Mi}
      limits: {memory: 1Gi}
  rollout: $rollout_spec
EOF
}

# wait_until SECONDS WHAT CMD...: polls CMD every second.
wait_until() {
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds; i++)); do
        "$@" && return 0
        sleep 1
    done
    say "FAIL: $what within ${seconds}s"
    LAST_FAIL="$what within ${seconds}s"
    return 1
}

# failure_summary: a compact picture of $NS for a failed run, printed last so that
# the tail of a CI log holds it: the rollout, conditions, Deployments, ReplicaSets,
# pods, the latest Events and the operator's latest log lines.
LAST_FAIL=""
operator_log() {
    sed -e 's/\x1b\[[0-9;]*m//g' -e 's/reconciling object{[^}]*}: //' -e 's/sluice_operator:://' \
        "$REPO_ROOT/.cluster/logs/operator.log" 2>/dev/null | cut -c1-240
}
failure_summary() {
    {
        echo "---- state of $NS at the failure ----"
        isvc_field 'revision={.status.revision} stable={.status.stableRevision} rollout={.status.rollout.revision} {.status.rollout.phase} step={.status.rollout.step} entered={.status.rollout.stepEntered} started={.status.rollout.stepStarted}{"\n"}message={.status.rollout.message}{"\n"}'
        isvc_field '{range .status.conditions[*]}{.type}={.status} {.reason}; {end}{"\n"}'
        k get deploy -o jsonpath='{range .items[*]}deploy {.metadata.name} uid={.metadata.uid} spec={.spec.replicas} ready={.status.readyReplicas} updated={.status.updatedReplicas} gen={.metadata.generation}/{.status.observedGeneration}{"\n"}{end}'
        k get rs -o jsonpath='{range .items[*]}rs {.metadata.name} owner={.metadata.ownerReferences[0].uid} spec={.spec.replicas} ready={.status.readyReplicas} deleting={.metadata.deletionTimestamp}{"\n"}{end}'
        k get pods -o jsonpath='{range .items[*]}pod {.metadata.name} {.status.phase} ready={.status.conditions[?(@.type=="Ready")].status} deleting={.metadata.deletionTimestamp}{"\n"}{end}'
        k get events --sort-by=.lastTimestamp -o jsonpath='{range .items[*]}event {.lastTimestamp} {.involvedObject.kind}/{.involvedObject.name} {.reason}: {.message}{"\n"}{end}' | tail -8
        echo "operator log (warnings, then the tail):"
        operator_log | grep -E 'WARN|ERROR|panic' | tail -5
        operator_log | tail -6
        [[ -n $LAST_FAIL ]] && echo "FAILED: $LAST_FAIL"
    } >&2 2>/dev/null || true
}

revision_changed() { [[ "$(isvc_field '{.status.revision}')" != "$1" ]]; }
stable_is() { [[ "$(isvc_field '{.status.stableRevision}')" == "$1" ]]; }
revision_set() { [[ -n "$(isvc_field '{.status.revision}')" ]]; }

# service_ip NAME: the ClusterIP of a Service (reachable from the host).
service_ip() { k get svc "$1" -o jsonpath='{.spec.clusterIP}'; }

# start_load SERVICE RATE KIND [--zeros]: steady traffic to a Service, in the
# background, from LOAD_WORKERS (64) callers of loadgen.py's client KIND: keepalive
# (HTTP/1.1 pools) or grpc (tritonclient channels), whose connections stay open as
# real callers' do, or conn (a connection per request).
start_load() {
    local url="http://$(service_ip "$1"):8080/v2/models/$ISVC/infer"
    "${SLUICE_CACHE:-$HOME/.cache/sluice}/venv/bin/python" "$REPO_ROOT/e2e/rollout/loadgen.py" --url "$url" --rate "$2" \
        --client "$3" --workers "${LOAD_WORKERS:-64}" ${4:-} --stats "$REPO_ROOT/.cluster/logs/loadgen-$1-$3.log" &
    LOADGEN_PIDS+=($!)
}

# start_callers SERVICE RATE: RATE requests/s to a Service, half from HTTP/1.1
# keep-alive callers and half from gRPC callers.
start_callers() {
    start_load "$1" "$(python3 -c "print($2 / 2)")" keepalive
    start_load "$1" "$(python3 -c "print($2 / 2)")" grpc
}

# request_share REVISION SECONDS: REVISION's percentage of this InferenceService's
# requests over the last SECONDS, from Prometheus ("none" without requests).
request_share() {
    python3 - "$PROMETHEUS_URL" "$NS" "$ISVC" "$1" "$2" <<'PY'
import json, sys, urllib.parse, urllib.request
prometheus, ns, isvc, revision, seconds = sys.argv[1:]
query = f'sum by (revision) (increase(sluice_inference_requests_total{{namespace="{ns}",isvc="{isvc}"}}[{seconds}s]))'
with urllib.request.urlopen(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})) as answer:
    series = json.load(answer)["data"]["result"]
counts = {s["metric"].get("revision"): float(s["value"][1]) for s in series}
total = sum(counts.values())
print(f"{100 * counts.get(revision, 0.0) / total:.0f}" if total else "none")
PY
}

# sample_shares FILE: in the background, once per canary step, when it has run 26 s
# (steps last 30 s by default), appends "<step> <status.canaryWeight> <share of the
# last 14 s>" to FILE. With the servers rotating connections every 10 s, every
# caller's connection has been placed again by the start of that window, but for
# Prometheus's scrape lag (up to 5 s).
sample_shares() {
    (
        local sampled="" step weight started age
        while sleep 2; do
            step=$(isvc_field '{.status.rollout.step}')
            weight=$(isvc_field '{.status.canaryWeight}')
            started=$(isvc_field '{.status.rollout.stepStarted}')
            [[ -n $weight && -n $started && $step != "$sampled" ]] || continue
            age=$(($(date +%s) - $(date -d "$started" +%s)))
            ((age >= 26)) || continue
            echo "$step $weight $(request_share "$(isvc_field '{.status.rollout.revision}')" 14)" >>"$1"
            sampled=$step
        done
    ) &
    LOADGEN_PIDS+=($!)
}

stop_load() {
    local pid
    for pid in "${LOADGEN_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    LOADGEN_PIDS=()
}

# serving_pods REVISION [SINCE]: pods of REVISION that are Ready and not terminating
# (the ones the Services send traffic to), counting only those created at or after
# SINCE (an RFC 3339 time) when it is given.
serving_pods() {
    k get pods -l "serving.sluice.dev/revision=$1" -o json | python3 -c '
import json, sys
since, pods = sys.argv[1], json.load(sys.stdin)["items"]
print(sum(1 for p in pods if p["metadata"]["creationTimestamp"] >= since
          and not p["metadata"].get("deletionTimestamp") and any(
    c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))))' "${2:-}"
}

# rollout MODEL ROLLOUT WANT: applies MODEL and follows its rollout to the outcome
# WANT (Promoted or RolledBack), polling every second. Sets REV, T_TRAFFIC (first
# pod of the new revision ready, i.e. its first traffic), T_END (the outcome in
# status) and T_GONE (no pod of a rolled-back revision serves any more), all
# seconds after the apply. With OPTIMIZE set, the model has that spec.model.optimize.
rollout() {
    local model=$1 spec=$2 want=$3 timeout=${4:-300} old start t phase i
    old=$(isvc_field '{.status.revision}')
    start=$(now)
    apply_isvc "$model" "$spec" "${OPTIMIZE:-}"
    REV="" T_TRAFFIC="" T_END="" T_GONE=""
    for ((i = 0; i < timeout; i++)); do
        t=$(now)
        [[ -z $REV ]] && { REV=$(isvc_field '{.status.revision}'); [[ $REV == "$old" ]] && REV=""; }
        if [[ -n $REV ]]; then
            if [[ -z $T_TRAFFIC && $(serving_pods "$REV") -ge 1 ]]; then T_TRAFFIC=$(since "$start" "$t"); fi
            phase=$(isvc_field "{.status.rollout.phase}")
            if [[ -z $T_END && $(isvc_field '{.status.rollout.revision}') == "$REV" ]] &&
                [[ $phase == Promoted || $phase == RolledBack || $phase == Aborted ]]; then
                T_END=$(since "$start" "$t")
                [[ $phase == "$want" ]] || { say "FAIL: revision $REV ended $phase, want $want: $(isvc_field '{.status.rollout.message}')"; return 1; }
            fi
            if [[ -n $T_END ]]; then
                [[ $want == Promoted ]] && return 0
                if [[ $(serving_pods "$REV") -eq 0 ]]; then T_GONE=$(since "$start" "$t"); return 0; fi
            fi
        fi
        sleep 1
    done
    say "FAIL: rollout of $model did not end within ${timeout}s: $(isvc_field '{.status.rollout.message}')"
    k get isvc "$ISVC" -o yaml >&2 || true
    return 1
}

# last_history FIELD: a field of the newest status.history entry.
last_history() { isvc_field "{.status.history[-1:].$1}"; }

# has_event REASON PATTERN: an Event with REASON whose message matches PATTERN
# (grep -c reads everything, so kubectl never dies of SIGPIPE under pipefail).
has_event() { events_with "$1" | grep -c -- "$2" >/dev/null; }

# events_with REASON: the notes of this InferenceService's Events with REASON.
events_with() {
    k get events --field-selector "involvedObject.name=$ISVC,reason=$1" \
        -o jsonpath='{range .items[*]}{.message}{"\n"}{end}'
}
