# Shared steps of e2e/operator/e2e.sh and scripts/up-cluster.sh (sourced; needs
# REPO_ROOT). Everything goes through kubectl against the local cluster.

SAMPLE="$REPO_ROOT/config/samples/serving_v1alpha1_inferenceservice_iris.yaml"
MODELS_DIR=/opt/sluice/models

say() { echo "sluice: $*" >&2; }
# now: the time, in seconds with a fraction; since START END: END - START, one decimal.
now() { date +%s.%N; }
since() { python3 -c "print(f'{$2 - $1:.1f}')"; }

# probe URL: one GET that must answer 2xx, bounded in time: a SYN that nobody
# answers (a Service whose rules or endpoints are still settling) fails after 2 s
# instead of waiting out the kernel's SYN retries, so a poll tries again soon.
probe() { curl -fsS --connect-timeout 2 --max-time 5 -o /dev/null "$1"; }

# cluster_up: start the local cluster unless it runs; sets STARTED_CLUSTER and KUBECTL.
cluster_up() {
    STARTED_CLUSTER=0
    if ! "$REPO_ROOT/e2e/cluster/cluster.sh" status >/dev/null 2>&1; then
        "$REPO_ROOT/e2e/cluster/cluster.sh" up
        STARTED_CLUSTER=1
    fi
    set -a
    # shellcheck source=/dev/null
    source "$REPO_ROOT/.cluster/env"
    set +a
    KUBECTL="$("$REPO_ROOT/e2e/cluster/build-bins.sh")/kubectl"
    export KUBECONFIG
}

# wait_until SECONDS WHAT KINDS CMD...: polls CMD every second until it succeeds;
# after SECONDS says what it waited for and lists KINDS (kubectl get) for the log.
wait_until() {
    local seconds=$1 what=$2 kinds=$3 i
    shift 3
    for ((i = 0; i < seconds; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    say "FAIL: $what within ${seconds}s"
    "$KUBECTL" get "$kinds" -o wide >&2 || true
    return 1
}

# crds_established: waits until every Sluice CRD is Established. `kubectl wait`
# fails at once ("accessor error: <nil>") on a CRD whose status the API server has
# not written yet, so it is retried.
crds_established() {
    local crd i
    for crd in inferenceservices batchinferences servingpolicies; do
        for ((i = 0; i < 60; i++)); do
            "$KUBECTL" wait --for=condition=Established "crd/$crd.serving.sluice.dev" --timeout=1s \
                >/dev/null 2>&1 && break
            sleep 1
        done
        ((i < 60)) || { say "CRD $crd.serving.sluice.dev never became Established"; return 1; }
    done
}

# install_operator: the CRD, and the operator itself as a host process. The local
# cluster's API server listens on 127.0.0.1 only, out of pods' reach, so the
# operator runs on the host with the cluster's kubeconfig (in a real cluster it is
# the Deployment in config/manager). It is recorded in .cluster/pids, so that
# `make cluster-down` stops it with the rest of the cluster.
OPERATOR_METRICS_ADDR=127.0.0.1:18480
install_operator() {
    # A copy, not a link into the checkout: the pods' own volumes (an emptyDir at
    # /tmp) may hide the checkout's folder.
    rm -rf "$MODELS_DIR"
    mkdir -p "$MODELS_DIR"
    cp -r "$REPO_ROOT/server/fixtures/models/." "$MODELS_DIR/"
    "$KUBECTL" apply --server-side --force-conflicts -f "$REPO_ROOT/crds/" >/dev/null
    crds_established
    # An operator Deployment left by an earlier `kubectl apply -k config/default`
    # could never reach this API server; remove it rather than run two operators.
    "$KUBECTL" -n sluice-system delete deployment sluice-operator --ignore-not-found >/dev/null 2>&1 || true
    local record="$REPO_ROOT/.cluster/pids/operator" pid _
    if [[ -f $record ]]; then
        read -r pid _ <"$record" || true
        kill -TERM "$pid" 2>/dev/null && sleep 1 || true
    fi
    start_operator
    say "operator running on the host (log: .cluster/logs/operator.log)"
}

# start_operator [NAME [METRICS_ADDR]]: one operator replica on the host, recorded in
# .cluster/pids/NAME (default operator) with the Lease identity NAME, logging to
# .cluster/logs/NAME.log; waits until its /healthz answers. Sets OPERATOR_PID.
# SLUICE_OPERATOR_BIN runs another binary (as in e2e/cluster/cluster.sh).
start_operator() {
    local name=${1:-operator} addr=${2:-$OPERATOR_METRICS_ADDR} i
    local record="$REPO_ROOT/.cluster/pids/$name" log="$REPO_ROOT/.cluster/logs/$name.log"
    setsid "${SLUICE_OPERATOR_BIN:-$REPO_ROOT/target/release/sluice-operator}" --metrics-addr "$addr" \
        --lease-namespace default --identity "$name" >>"$log" 2>&1 </dev/null &
    OPERATOR_PID=$!
    echo "$OPERATOR_PID $(awk '{sub(/.*\) /, ""); print $20}' "/proc/$OPERATOR_PID/stat")" >"$record"
    for ((i = 0; i < 120; i++)); do
        curl -fs "http://$addr/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$OPERATOR_PID" 2>/dev/null || { tail -20 "$log" >&2; return 1; }
        sleep 0.5
    done
    say "FAIL: operator $name did not answer /healthz on $addr"
    return 1
}

# apply_sample_and_wait: kubectl apply the iris sample; prints seconds to Ready.
apply_sample_and_wait() {
    local start end
    start=$(date +%s.%N)
    "$KUBECTL" apply -f "$SAMPLE" >/dev/null
    if ! "$KUBECTL" wait isvc/iris --for=condition=Ready --timeout=240s >/dev/null; then
        "$KUBECTL" describe isvc iris >&2 || true
        "$KUBECTL" get pods -A -o wide >&2 || true
        return 1
    fi
    end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.1f}')"
}

# service_url: http://<ClusterIP>:8080 of the iris Service (reachable from the host).
service_url() {
    echo "http://$("$KUBECTL" get svc iris -o jsonpath='{.spec.clusterIP}'):8080"
}

# reference_request: an inference request with the fixture's reference inputs.
reference_request() {
    python3 - "$REPO_ROOT/server/fixtures/models/iris/1/reference.json" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))
print(json.dumps({"id": "sluice-e2e", "inputs": [
    {"name": n, "datatype": t["datatype"], "shape": t["shape"], "data": t["data"]}
    for n, t in ref["inputs"].items()]}))
PY
}
