# Steps shared by the chaos scenarios (sourced after e2e/operator/lib.sh and
# e2e/rollout/lib.sh): steady clients of both kinds whose every request is counted,
# and the checks on those counts.

CHAOS_LOGS=""
CLIENTS=()       # "name pid summary-file" of the running clients
RESULTS=()       # one line per scenario, printed at the end

chaos_setup() {
    stop_standbys
    rollout_setup
    CHAOS_LOGS="$REPO_ROOT/.cluster/logs/chaos"
    mkdir -p "$CHAOS_LOGS"
    trap chaos_cleanup EXIT
}

chaos_cleanup() {
    local code=$?
    ((code == 0)) || failure_summary
    stop_clients >/dev/null 2>&1 || true
    stop_standbys
    rollout_cleanup
}

# stop_standbys: stops the extra operator replicas (.cluster/pids/operator-*) a
# scenario started, so that the next run's operator leads at once.
stop_standbys() {
    local f pid _
    for f in "$REPO_ROOT"/.cluster/pids/operator-*; do
        [[ -e $f ]] || continue
        read -r pid _ <"$f" || true
        [[ -n ${pid:-} ]] && kill -TERM "$pid" 2>/dev/null || true
        rm -f "$f"
    done
}

result() { RESULTS+=("$*"); say "$*"; }
print_results() { printf 'sluice: %s\n' "${RESULTS[@]}" >&2; }

# start_client NAME KIND RATE [RETRIES] [SERVICE]: a steady client of KIND (conn:
# a connection per request, keepalive: a requests.Session pool) at RATE requests/s
# to SERVICE (the InferenceService's Service by default), counting every outcome.
start_client() {
    local name=$1 kind=$2 rate=$3 retries=${4:-0} service=${5:-$ISVC}
    local url="http://$(service_ip "$service"):8080/v2/models/$ISVC/infer"
    local summary="$CHAOS_LOGS/$name.json"
    rm -f "$summary"
    "${SLUICE_CACHE:-$HOME/.cache/sluice}/venv/bin/python" "$REPO_ROOT/e2e/rollout/loadgen.py" --url "$url" --rate "$rate" --client "$kind" \
        --retries "$retries" --summary "$summary" --stats "$CHAOS_LOGS/$name.log" &
    CLIENTS+=("$name $! $summary")
}

# start_clients RATE: the two kinds of client, without retries, at RATE each.
start_clients() {
    start_client conn conn "$1"
    start_client keepalive keepalive "$1"
}

# stop_clients: stops every client, waits for its summary, and sets SENT, FAILED and
# FAILED_BY ("name=failed/sent ...") from the counted outcomes.
stop_clients() {
    local entry name pid summary i counts s f r errors
    SENT=0 FAILED=0 FAILED_BY=""
    for entry in "${CLIENTS[@]}"; do
        read -r name pid summary <<<"$entry"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for entry in "${CLIENTS[@]}"; do
        read -r name pid summary <<<"$entry"
        wait "$pid" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            [[ -s $summary ]] && break
            sleep 0.5
        done
        [[ -s $summary ]] || { say "FAIL: client $name wrote no summary"; return 1; }
        counts=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["sent"], s["failed"], s["retried"], json.dumps(s["errors"]))' "$summary")
        read -r s f r errors <<<"$counts"
        SENT=$((SENT + s)) FAILED=$((FAILED + f))
        FAILED_BY+="$name=$f/$s"
        ((r > 0)) && FAILED_BY+="(retried $r)"
        ((f > 0)) && FAILED_BY+="$errors"
        FAILED_BY+=" "
    done
    CLIENTS=()
    ((SENT > 0)) || { say "FAIL: the clients sent no request"; return 1; }
}

# expect_no_failure WHAT: stops the clients; fails unless every request succeeded.
expect_no_failure() {
    stop_clients
    if ((FAILED > 0)); then
        say "FAIL: $1: $FAILED of $SENT requests failed: $FAILED_BY"
        say "first errors: $(cat "$CHAOS_LOGS"/*.json | python3 -c 'import json,sys; [print(e) for l in sys.stdin for e in json.loads(l)["first_errors"][:5]]')"
        return 1
    fi
    result "$1: 0 of $SENT requests failed ($FAILED_BY)"
}

# wait_served: until the InferenceService's Service answers an inference.
wait_served() {
    local url="http://$(service_ip "$ISVC"):8080/v2/models/$ISVC/ready"
    wait_until 60 "the Service answers" probe "$url"
}

# ready_pods_are N: exactly N pods of the InferenceService are Ready and not
# terminating (the ones its Service sends traffic to).
ready_pods_are() {
    [[ $(k get pods -l "serving.sluice.dev/inferenceservice=$ISVC" -o json | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
print(sum(1 for p in pods if not p["metadata"].get("deletionTimestamp") and any(
    c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))))') == "$1" ]]
}

# preview_traffic REVISION: smoke traffic to a blue-green preview's own Service (the
# pre-promotion analysis needs requests), counted like the rest, once every pod of
# that revision is new and ready and the Service answers. A revision rolled out again
# a few seconds after it was removed shares its labels with its old pods, still
# terminating, so until they are gone the preview Service selects them too: a probe
# may be answered by an old pod in its shutdown delay, and connections sent to one
# that then goes away get no SYN-ACK, or are refused once no endpoint is left
# (docs/reliability.md). The client retries a connection up to 3 times (counted).
preview_traffic() {
    preview_ready() {
        local want since ip
        want=$(isvc_field '{.spec.minReplicas}')
        since=$(k get deploy "$ISVC-$1" -o jsonpath='{.metadata.creationTimestamp}') || return 1
        [[ $(serving_pods "$1" "$since") == "$want" &&
            $(k get pods -l "serving.sluice.dev/revision=$1" -o name | wc -l) == "$want" ]] || return 1
        ip=$(service_ip "$ISVC-$1") && [[ -n $ip ]] && probe "http://$ip:8080/v2/models/$ISVC/ready"
    }
    wait_until 180 "the preview's pods are all new and ready, and its Service answers" preview_ready "$1"
    start_client preview conn 5 3 "$ISVC-$1"
}
