#!/usr/bin/env bash
# Operator and control-plane faults on the local cluster, under steady traffic:
#   1. the operator is killed (SIGKILL) at each step of a canary, then of a blue-green
#      rollout, and started again: each rollout ends Promoted with every step taken
#      exactly once (status.history and the Events say so);
#   2. two operator replicas: the leader is killed and the standby takes over within
#      the Lease duration (15 s);
#   3. the API server is restarted mid-rollout: the rollout completes;
#   4. the model source is unreachable for a new revision: the stable revision keeps
#      serving every request and status says why.
# Prints each fault's recovery time. CHAOS_ONLY="2 3" runs only those scenarios (1
# is 1a and 1b). Uses the running local cluster or starts (and stops) one.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"
# shellcheck source=e2e/rollout/lib.sh
source "$REPO_ROOT/e2e/rollout/lib.sh"
# shellcheck source=e2e/chaos/lib.sh
source "$REPO_ROOT/e2e/chaos/lib.sh"
LEASE_SECONDS=15 # operator/src/run.rs LEASE_DURATION
scenario() { [[ " ${CHAOS_ONLY:-1 2 3 4} " == *" $1 "* ]]; }

chaos_setup

SHORT='{canary: {steps: [25, 50], stepSeconds: 10}, analysis: {intervalSeconds: 5, windowSeconds: 20, minRequests: 5}, blueGreen: {previewSeconds: 15, postPromotionSeconds: 20, scaleDownDelaySeconds: 5}}'
BG="{strategy: BlueGreen, ${SHORT#\{}"
apply_isvc mlp/1 "$SHORT"
wait_until 60 "status names the first revision" revision_set
wait_until 180 "the first revision becomes stable" stable_is "$(isvc_field '{.status.revision}')"
wait_served

# kill_operator: SIGKILL to the operator recorded in .cluster/pids/operator.
kill_operator() {
    local pid _
    read -r pid _ <"$REPO_ROOT/.cluster/pids/operator"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

# rollout_state: the rollout's phase, step and whether the step's clock started.
rollout_state() {
    isvc_field '{.status.rollout.revision} {.status.rollout.phase} {.status.rollout.step} {.status.rollout.stepStarted}' |
        awk '{print $1, $2, $3, ($4 == "" ? "waiting" : "started")}'
}

# killed_rollout MODEL SPEC: rolls MODEL out with SPEC, killing the operator each time
# the rollout's state (phase, step, step clock) changes and starting it again 3 s
# later; fails unless it ends Promoted. Sets REV and KILLS.
killed_rollout() {
    local before state last="" i
    before=$(isvc_field '{.status.revision}')
    mark
    apply_isvc "$1" "$2"
    wait_until 30 "the new revision is in status" revision_changed "$before"
    REV=$(isvc_field '{.status.revision}')
    [[ $2 == *BlueGreen* ]] && preview_traffic "$REV"
    KILLS=0
    for ((i = 0; i < 600; i++)); do
        state=$(rollout_state)
        if [[ $state == "$REV "* && $state != "$last" ]]; then
            last=$state
            [[ $state == *" Promoted "* || $state == *" RolledBack "* || $state == *" Aborted "* ]] && break
            kill_operator
            KILLS=$((KILLS + 1))
            say "killed the operator at: $state"
            sleep 3
            start_operator
        fi
        sleep 0.5
    done
    [[ $last == "$REV Promoted "* ]] || { say "FAIL: rollout of $1 ended at '$last', want Promoted"; return 1; }
}

# mark: remembers the Events and status.history so far; once and history_once
# count only what came after (a revision may have been rolled out before).
MARK=$(mktemp -d)
mark() {
    local r
    for r in RolloutStarted StepAdvanced Switched PostPromotionPassed Promoted; do
        events_with "$r" >"$MARK/$r"
    done
    history_lines >"$MARK/history"
}
history_lines() { isvc_field '{range .status.history[*]}{.revision} {.outcome}{"\n"}{end}'; }

# other_model: the mlp version the InferenceService does not serve now.
other_model() { [[ $(isvc_field '{.spec.model.storageUri}') == */mlp/1/* ]] && echo mlp/2 || echo mlp/1; }

# once REASON PATTERN: exactly one new Event with REASON whose note matches PATTERN.
once() {
    local before after
    before=$(grep -c -- "$2" "$MARK/$1" || true)
    after=$(events_with "$1" | grep -c -- "$2" || true)
    ((after - before == 1)) || { say "FAIL: $((after - before)) new $1 Events matching '$2', want exactly 1"; return 1; }
}

# history_once REVISION: exactly one new status.history entry, REVISION Promoted.
history_once() {
    local before after
    before=$(grep -c "^$1 " "$MARK/history" || true)
    after=$(history_lines | grep -c "^$1 " || true)
    ((after - before == 1)) && [[ $(last_history outcome) == Promoted && $(last_history revision) == "$1" ]] ||
        { say "FAIL: $((after - before)) new history entries for $1 (last: $(last_history revision) $(last_history outcome))"; return 1; }
}

# 1a. Canary with two steps (25%, 50%), then full size.
if scenario 1; then
    start_clients 20
    t0=$(now)
    killed_rollout mlp/2 "$SHORT"
    took=$(since "$t0" "$(now)")
    once RolloutStarted "revision $REV"
    once StepAdvanced "step 1: 50% of traffic to revision $REV"
    once StepAdvanced "promoting revision $REV"
    once Promoted "revision $REV Promoted"
    history_once "$REV"
    expect_no_failure "canary, operator killed $KILLS times (once per state), promoted ${took}s after apply, every step once"
fi

# 1b. Blue-green: preview, switch, post-promotion analysis, scale-down delay.
if scenario 1; then
    start_clients 20
    t0=$(now)
    killed_rollout mlp/1 "$BG"
    took=$(since "$t0" "$(now)")
    once RolloutStarted "revision $REV"
    once Switched "switched traffic to revision $REV"
    once PostPromotionPassed "post-promotion analysis passed"
    once Promoted "revision $REV Promoted"
    history_once "$REV"
    expect_no_failure "blue-green, operator killed $KILLS times (once per state), promoted ${took}s after apply, every step once"
fi

# 2. Two replicas: the leader (operator) is killed; operator-b takes over.
if scenario 2; then
    start_operator operator-b 127.0.0.1:18481
    b_pid=$OPERATOR_PID
    start_clients 20
    leader_of() { curl -fs "http://$1/metrics" | awk '$1 == "sluice_operator_leader" {print $2}'; }
    [[ $(leader_of "$OPERATOR_METRICS_ADDR") == 1 && $(leader_of 127.0.0.1:18481) == 0 ]] ||
        { say "FAIL: want operator leading and operator-b standing by"; exit 1; }
    t0=$(now)
    kill_operator
    b_leads() { [[ $(leader_of 127.0.0.1:18481) == 1 ]]; }
    wait_until 30 "operator-b takes the Lease" b_leads
    took=$(since "$t0" "$(now)")
    python3 -c "import sys; sys.exit(0 if $took <= $LEASE_SECONDS + 2 else 1)" ||
        { say "FAIL: operator-b took over ${took}s after the leader died, Lease is ${LEASE_SECONDS}s"; exit 1; }
    # The new leader reconciles: a canary goes through to Promoted.
    say "operator-b leads ${took}s after the leader was killed"
    rollout mlp/2 "$SHORT" Promoted
    expect_no_failure "leader killed: the standby led ${took}s later (Lease ${LEASE_SECONDS}s) and promoted the next canary"
    stop_standbys
    while kill -0 "$b_pid" 2>/dev/null; do sleep 0.2; done
    start_operator
fi

# 3. The API server restarted mid-rollout.
if scenario 3; then
    start_clients 20
    before=$(isvc_field '{.status.revision}')
    mark
    apply_isvc "$(other_model)" "$SHORT"
    wait_until 30 "the new revision is in status" revision_changed "$before"
    REV=$(isvc_field '{.status.revision}')
    canary_ready() { [[ $(rollout_state) == "$REV Progressing 0 started" ]]; }
    wait_until 120 "the canary's first step starts" canary_ready
    t0=$(now)
    "$REPO_ROOT/e2e/cluster/cluster.sh" restart kube-apiserver
    wait_until 90 "the API server is ready again" "$KUBECTL" get --raw /readyz
    api_back=$(since "$t0" "$(now)")
    # An operator that cannot renew its Lease for 10 s exits rather than act without
    # leadership; in a cluster its Deployment restarts it, here the script does.
    restarted=""
    if ! kill -0 "$OPERATOR_PID" 2>/dev/null; then
        restarted="; the operator had exited (Lease not renewable) and was restarted"
        start_operator
    fi
    promoted() { stable_is "$REV"; }
    wait_until 180 "the rollout completes after the API server restart" promoted
    once Promoted "revision $REV Promoted"
    history_once "$REV"
    expect_no_failure "API server restarted mid-canary (ready again ${api_back}s after SIGTERM$restarted): promoted $(since "$t0" "$(now)")s after the restart began"
fi

# 4. The model source is unreachable for a new revision.
if scenario 4; then
    start_clients 20
    stable=$(isvc_field '{.status.stableRevision}')
    before=$(isvc_field '{.status.revision}')
    # The node's address, where nothing listens on port 9: connections are refused.
    apply_isvc "http://${SLUICE_POD_CIDR%.*}.1:9/mlp/1/model.onnx" "$SHORT"
    wait_until 30 "the new revision is in status" revision_changed "$before"
    fetched() { isvc_field '{.status.conditions[?(@.type=="ModelFetched")].'"$1"'}'; }
    says_why() { [[ $(fetched status) == False && $(fetched reason) == FetchFailed ]]; }
    t0=$(now)
    wait_until 120 "status says why the new revision is not ready" says_why
    told=$(since "$t0" "$(now)")
    sleep 30
    stable_is "$stable" || { say "FAIL: the stable revision changed"; exit 1; }
    [[ $(isvc_field '{.status.rollout.phase}') == Progressing && $(isvc_field '{.status.rollout.step}') == 0 ]] ||
        { say "FAIL: the rollout moved on without a fetched model: $(isvc_field '{.status.rollout.phase} {.status.rollout.step}')"; exit 1; }
    why="ModelFetched=False FetchFailed ${told}s after apply: $(fetched message)"
    expect_no_failure "model source unreachable: stable $stable kept serving; status: $why"
    apply_isvc mlp/1 "$SHORT"
fi

print_results
say "operator chaos passed"
