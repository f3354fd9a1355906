#!/usr/bin/env bash
# Nothing lost while pods leave: steady clients of both kinds (a connection per
# request, and keep-alive pools), every request counted, through
#   1. a canary promoted (the old revision's pods go);
#   2. a canary rolled back on latency (the canary's pods go);
#   3. a blue-green switch (the Service's selector moves, then the old pods go);
#   4. an autoscaler scale-down (a burst ends, replicas fall back);
#   5. a serving pod deleted;
# each with 0 failed requests, and
#   6. a serving container killed with SIGKILL: prints how many requests failed
#      without retries, and checks that clients retrying idempotent calls saw none.
# CHAOS_ONLY="4 5" runs only those scenarios (the first revision is always set up).
# Uses the running local cluster or starts (and stops) one.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"
# shellcheck source=e2e/rollout/lib.sh
source "$REPO_ROOT/e2e/rollout/lib.sh"
# shellcheck source=e2e/chaos/lib.sh
source "$REPO_ROOT/e2e/chaos/lib.sh"
RATE=${CHAOS_RATE:-80} # requests/s of each client kind (160 in all, as in issue 21)
scenario() { [[ " ${CHAOS_ONLY:-1 2 3 4 5 6} " == *" $1 "* ]]; }

chaos_setup

SHORT='{canary: {steps: [50], stepSeconds: 10}, analysis: {intervalSeconds: 5, windowSeconds: 20, minRequests: 5}, blueGreen: {previewSeconds: 15, postPromotionSeconds: 20, scaleDownDelaySeconds: 5}}'
apply_isvc mlp/1 "$SHORT"
wait_until 60 "status names the first revision" revision_set
wait_until 180 "the first revision becomes stable" stable_is "$(isvc_field '{.status.revision}')"
wait_served

# 1. Canary promotion.
if scenario 1; then
    start_clients "$RATE"
    sleep 5
    rollout mlp/2 "$SHORT" Promoted
    sleep 40 # the old revision's pods terminate: shutdown delay + drain
    expect_no_failure "canary promoted (old pods removed)"
fi

# 2. Canary rollback on latency.
if scenario 2; then
    start_clients "$RATE"
    sleep 5
    rollout slow/1 "$SHORT" RolledBack
    sleep 40
    expect_no_failure "canary rolled back (canary pods removed)"
fi

# 3. Blue-green switch to mlp/1, old pods removed after the scale-down delay.
if scenario 3; then
    BG="{strategy: BlueGreen, ${SHORT#\{}"
    start_clients "$RATE"
    sleep 5
    before=$(isvc_field '{.status.revision}')
    apply_isvc mlp/1 "$BG"
    wait_until 30 "the new revision is in status" revision_changed "$before"
    REV=$(isvc_field '{.status.revision}')
    preview_traffic "$REV"
    bg_promoted() { [[ $(isvc_field '{.status.rollout.revision} {.status.rollout.phase}') == "$REV Promoted" ]]; }
    wait_until 240 "the blue-green rollout promotes" bg_promoted
    sleep 40
    expect_no_failure "blue-green switch (old pods removed)"
fi

# 4. Autoscaler scale-down: a burst raises the replicas, then they fall back. With
#    130 req/s per replica and headroom 1.5, the steady 2 x RATE (160) asks for 2
#    replicas and the burst on top of it for 3 or 4.
if scenario 4; then
    k patch isvc "$ISVC" --type merge -p '{"spec":{"maxReplicas":4,"autoscaling":{"throughputPerReplica":130,"headroom":1.5,"rateWindowSeconds":10,"peakWindowSeconds":20,"scaleDownStabilizationSeconds":20,"intervalSeconds":5}}}' >/dev/null
    replicas() { k get deployments -l "serving.sluice.dev/inferenceservice=$ISVC" -o jsonpath='{range .items[*]}{.spec.replicas}{"\n"}{end}' | awk '{n += $1} END {print n + 0}'; }
    start_clients "$RATE"
    start_client burst conn "$((RATE * 3))"
    at_most() { (($(replicas) <= $1)); }
    at_least() { (($(replicas) >= $1)); }
    wait_until 120 "the burst scales the InferenceService up" at_least 3
    high=$(replicas)
    wait_until 120 "the scaled-up pods are ready" ready_pods_are "$high"
    # Only the burst stops; the steady clients keep counting through the scale-down.
    read -r _ burst_pid _ <<<"${CLIENTS[2]}"
    kill -TERM "$burst_pid"
    wait_until 180 "replicas fall back after the burst" at_most 2
    sleep 40
    low=$(replicas)
    expect_no_failure "autoscaler scale-down $high -> $low replicas"
fi

# 5. A serving pod deleted under load.
if scenario 5; then
    start_clients "$RATE"
    sleep 5
    victim=$(k get pods -l "serving.sluice.dev/inferenceservice=$ISVC" -o jsonpath='{.items[0].metadata.name}')
    ip=$(k get pod "$victim" -o jsonpath='{.status.podIP}')
    deleted_at=$(now)
    k delete pod "$victim" --wait=false >/dev/null
    # How long kube-proxy keeps sending new connections to the leaving pod: until its
    # address is gone from the NAT rules. The server's shutdown delay must outlast it.
    while iptables-save -t nat | grep -q -- "--to-destination $ip:"; do sleep 0.1; done
    unrouted=$(since "$deleted_at" "$(now)")
    wait_until 120 "the replacement pod is ready" ready_pods_are 2
    sleep 40
    expect_no_failure "pod $victim deleted (kube-proxy stopped routing to it ${unrouted}s after the delete)"
fi

# 6. A serving container killed with SIGKILL: counted without retries, none lost with them.
if scenario 6; then
    start_clients "$RATE"
    start_client conn-retry conn "$RATE" 8
    start_client keepalive-retry keepalive "$RATE" 8
    sleep 5
    victim=$(k get pods -l "serving.sluice.dev/inferenceservice=$ISVC" -o jsonpath='{.items[0].metadata.name}')
    uid=$(k get pod "$victim" -o jsonpath='{.metadata.uid}')
    pid_file="$REPO_ROOT/.cluster/node/pods/$uid/server.pid"
    [[ -s $pid_file ]] || { say "FAIL: no pid file for the server container of $victim"; exit 1; }
    read -r pid _ <"$pid_file"
    killed_at=$(now)
    kill -KILL "$pid"
    say "SIGKILL to the server of $victim (pid $pid)"
    back() { [[ $(k get pod "$victim" -o jsonpath='{.status.containerStatuses[0].restartCount}') -ge 1 ]] && ready_pods_are 2; }
    wait_until 120 "the killed container restarts and is ready" back
    recovered=$(since "$killed_at" "$(now)")
    sleep 5
    stop_clients
    retry_failed=0 plain_failed=0 plain_sent=0 retry_sent=0
    for part in $FAILED_BY; do
        [[ $part == *=* ]] || continue
        name=${part%%=*} counts=${part#*=}
        f=${counts%%/*} s=${counts#*/} s=${s%%[!0-9]*}
        if [[ $name == *-retry ]]; then retry_failed=$((retry_failed + f)) retry_sent=$((retry_sent + s))
        else plain_failed=$((plain_failed + f)) plain_sent=$((plain_sent + s)); fi
    done
    result "SIGKILL of a serving container: $plain_failed of $plain_sent requests failed without retries, $retry_failed of $retry_sent with retries; ready again ${recovered}s after the kill ($FAILED_BY)"
    ((retry_failed == 0)) || { say "FAIL: clients retrying idempotent calls saw $retry_failed failures"; exit 1; }
fi

print_results
say "drain chaos passed"
