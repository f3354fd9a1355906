#!/usr/bin/env bash
# A real Argo CD syncs a Sluice InferenceService on the local cluster (make
# test-argocd-e2e): Argo CD v3.6.1's application controller and repo server
# (e2e/argocd/build.sh) and a redis-server run as host processes, like the
# operator, with Sluice's health checks in argocd-cm
# (integrations/argocd/argocd-cm-patch.yaml). An Application with automated sync and
# self-heal, server-side apply and CreateNamespace=true follows a file:// Git
# repository that holds one InferenceService (namespace gitops-e2e, the iris model).
#
# 1. Created, the Application becomes Synced and Healthy (the InferenceService's
#    health from our Lua); then it stays Synced over 3 forced refreshes after the
#    operator reconciled, its resource entry for the InferenceService Synced too: the
#    operator writes no field that Argo CD applied, and no ignoreDifferences is set.
# 2. A commit of model version 2: Argo CD syncs it, the InferenceService is
#    Progressing (the canary), the promote command makes it Healthy; Synced
#    throughout once synced.
# 3. The rollback command: still Synced (the rollback is held in status.rollback,
#    never in the spec), Degraded "Rolled back by command ..."; promoted, then the
#    version-2 commit reverted in Git: Healthy, Synced, status.rollback gone.
#
# Every Application write is recorded by a watch; the script prints the sync/health
# sequence and the figures, and fails if the Application was ever OutOfSync while
# Git did not change. Uses the running local cluster or starts (and stops) one;
# reuses the running operator when it runs the current build (else install_operator).
# Stops everything it started on exit; one run at a time (a lock in $TMPDIR).
# SLUICE_ARGOCD_PORT_BASE (default 18370) moves its ports: redis +9, repo server +11
# (metrics +14), controller metrics +12.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"

APP=sluice-iris
NS=gitops-e2e
ISVC=iris
ARGOCD_NS=argocd
PORT_BASE=${SLUICE_ARGOCD_PORT_BASE:-18370}
REDIS_PORT=$((PORT_BASE + 9))
REPO_PORT=$((PORT_BASE + 11))
REPO_METRICS_PORT=$((PORT_BASE + 14))
CONTROLLER_METRICS_PORT=$((PORT_BASE + 12))
LOGS="$REPO_ROOT/.cluster/logs"
mkdir -p "$LOGS"
# Recorded as .cluster/pids/operator.argocd-NAME: `make cluster-down` stops every
# .cluster/pids/operator* (controllers that scripts start on the host) before the
# cluster, and nothing else reads these names (the chaos tests' standbys are
# operator-*, install_operator's replica is operator).
PID_PREFIX="$REPO_ROOT/.cluster/pids/operator.argocd-"
GIT_USER=(-c user.name="Sluice e2e" -c user.email=e2e@sluice.invalid -c commit.gpgsign=false)

command -v redis-server >/dev/null || { say "FAIL: redis-server is missing (make argocd-e2e-deps installs it)"; exit 1; }
command -v git >/dev/null || { say "FAIL: git is missing (make argocd-e2e-deps installs it)"; exit 1; }
ARGOCD_BIN="$("$REPO_ROOT/e2e/argocd/build.sh")"

# Every write of the Application, one line each (kept after the run):
# time|phase|resourceVersion|sync|health|revision|operation phase|InferenceService's
# sync|its health|its health message.
WATCH_LOG="$REPO_ROOT/.cluster/logs/argocd-watch.log"
RECORDS=()
WATCHER_PID=
DUMPED=0
T_CREATE=

k() { "$KUBECTL" "$@"; }
app() { k -n "$ARGOCD_NS" "$@"; }
isvc_field() { k -n "$NS" get isvc "$ISVC" -o jsonpath="$1" 2>/dev/null; }

# --- host processes ------------------------------------------------------------

start_time() { awk '{sub(/.*\) /, ""); print $20}' "/proc/$1/stat" 2>/dev/null; }

# start_proc NAME CMD...: CMD in its own session, logging to .cluster/logs/argocd-NAME.log,
# recorded ("PID STARTTIME") in .cluster/pids/operator.argocd-NAME.
start_proc() {
    local name=$1 pid
    shift
    setsid "$@" >"$LOGS/argocd-$name.log" 2>&1 </dev/null 8>&- &
    pid=$!
    echo "$pid $(start_time "$pid")" >"$PID_PREFIX$name"
    RECORDS+=("$PID_PREFIX$name")
}

# alive RECORD: the recorded process still runs (same PID and start time).
alive() {
    local pid start
    [[ -f $1 ]] && read -r pid start <"$1" && [[ -n $pid && "$(start_time "$pid")" == "$start" ]]
}

# stop_proc RECORD: SIGTERM to the recorded process group, SIGKILL after 10 s.
stop_proc() {
    local pid _ i
    if alive "$1"; then
        read -r pid _ <"$1"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do alive "$1" || break; sleep 0.1; done
        alive "$1" && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$1"
}

# serving NAME URL: waits (60 s) until URL answers, or fails when NAME died.
serving() {
    local name=$1 url=$2 i
    for ((i = 0; i < 120; i++)); do
        curl -fs --max-time 2 -o /dev/null "$url" && return 0
        alive "$PID_PREFIX$name" || break
        sleep 0.5
    done
    say "FAIL: argocd $name did not answer $url"
    tail -20 "$LOGS/argocd-$name.log" >&2 || true
    exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- Application state -----------------------------------------------------------

# One line per read (and per watch event): resourceVersion, the Application's sync
# and health, the synced revision, the last operation's phase, then the
# InferenceService's entry in status.resources: its sync status, health and message.
# (No {range}: `kubectl get -w` stops after the first object with a template that has one.)
R='.status.resources[?(@.kind=="InferenceService")]'
FIELDS="{.metadata.resourceVersion}|{.status.sync.status}|{.status.health.status}|{.status.sync.revision}|{.status.operationState.phase}|{$R.status}|{$R.health.status}|{$R.health.message}"

# read_state: sets RV SYNC HEALTH REV OP ISVC_SYNC ISVC_HEALTH ISVC_MSG.
read_state() {
    local line
    line=$(app get application "$APP" -o jsonpath="$FIELDS" 2>/dev/null) || return 1
    IFS='|' read -r RV SYNC HEALTH REV OP ISVC_SYNC ISVC_HEALTH ISVC_MSG <<<"$line"
}

# dump: what a failure needs to be read (once).
dump() {
    ((DUMPED)) && return 0
    DUMPED=1
    say "--- Application $APP, status (summary):"
    app get application "$APP" -o json 2>&1 | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin).get("status", {})
except ValueError:
    sys.exit("no Application")
op = s.get("operationState", {})
print("  sync:", s.get("sync", {}).get("status"), "at", s.get("sync", {}).get("revision"))
print("  health:", s.get("health", {}).get("status"), s.get("health", {}).get("message", ""))
print("  last operation:", op.get("phase"), "-", op.get("message"), "(retries:", str(op.get("retryCount", 0)) + ")")
for c in s.get("conditions", []):
    print("  condition", c.get("type") + ":", c.get("message"))
for r in s.get("resources", []):
    h = r.get("health", {})
    print("  resource", r.get("kind") + "/" + r.get("name") + ":", r.get("status"), h.get("status"), h.get("message", ""))
print("  reconciledAt:", s.get("reconciledAt"))' >&2 || true
    say "--- InferenceService $NS/$ISVC, status:"
    k -n "$NS" get isvc "$ISVC" -o yaml 2>&1 | sed -n '/^status:/,$p' | head -60 >&2 || true
    say "--- sync/health sequence so far:"
    print_sequence >&2 || true
    say "--- application controller log, last lines:"
    tail -40 "$LOGS/argocd-application-controller.log" 2>/dev/null | cut -c1-400 >&2 || true
    say "--- repo server log, last lines:"
    tail -10 "$LOGS/argocd-repo-server.log" 2>/dev/null | cut -c1-400 >&2 || true
}

fail() {
    say "FAIL: $*"
    dump
    exit 1
}

# wait_app SECONDS WHAT CONDITION: re-reads the Application every second until
# CONDITION (a shell expression over read_state's variables) holds.
wait_app() {
    local seconds=$1 what=$2 cond=$3 i
    for ((i = 0; i < seconds; i++)); do
        if read_state && eval "$cond"; then return 0; fi
        sleep 1
    done
    fail "$what within ${seconds}s (last: sync=${SYNC:-} health=${HEALTH:-} op=${OP:-} isvc=${ISVC_SYNC:-}/${ISVC_HEALTH:-} '${ISVC_MSG:-}')"
}

# refresh: a normal refresh (Git resolved again, manifests compared with the live
# objects); the controller removes the annotation once the new status is written.
refresh() {
    local i
    app annotate application "$APP" argocd.argoproj.io/refresh=normal --overwrite >/dev/null
    for ((i = 0; i < 60; i++)); do
        [[ -z $(app get application "$APP" -o jsonpath='{.metadata.annotations.argocd\.argoproj\.io/refresh}') ]] &&
            return 0
        sleep 1
    done
    fail "the controller did not finish a refresh within 60s"
}

# The watch: every write of the Application, stamped with the time and the phase
# of the test it happened in. set_phase waits until the watch has delivered the
# write the script last read (RV), so that every earlier write keeps the phase
# before it.
stamp() {
    local line
    while IFS= read -r line; do printf '%s|%s|%s\n' "$EPOCHREALTIME" "$(cat "$WORK/phase" 2>/dev/null)" "$line"; done
}
# A watch that ends early (writes it did not see are lost) is started again and
# counted in watch.restarts; the test fails if there was any.
watch_app() {
    local pid
    while true; do
        # kubectl itself (not through a function, which would run in a subshell):
        # $! is then its PID, for cleanup to stop it.
        "$KUBECTL" -n "$ARGOCD_NS" get application "$APP" -w -o jsonpath="$FIELDS{\"\\n\"}" \
            2>>"$LOGS/argocd-watch.err" 8>&- > >(stamp >>"$WATCH_LOG") &
        pid=$!
        echo "$pid" >"$WORK/watch.pid"
        wait "$pid" || true
        [[ -e $WORK/stop ]] && return 0
        echo "$EPOCHREALTIME" >>"$WORK/watch.restarts"
        sleep 0.5
    done
}
watch_restarts() { [[ -f $WORK/watch.restarts ]] && wc -l <"$WORK/watch.restarts" || echo 0; }
set_phase() {
    local i
    if [[ -n ${RV:-} ]]; then
        for ((i = 0; i < 100; i++)); do
            cut -d'|' -f3 "$WATCH_LOG" 2>/dev/null | grep -qx "$RV" && break
            sleep 0.1
        done
    fi
    echo "$1" >"$WORK/phase"
}

# no_out_of_sync PHASE...: every write in these phases had the Application and
# the InferenceService's entry Synced.
no_out_of_sync() {
    local bad
    bad=$(awk -F'|' -v phases="$*" 'BEGIN { n = split(phases, p, " "); for (i = 1; i <= n; i++) want[p[i]] = 1 }
        ($2 in want) && ($4 != "Synced" || $8 != "Synced") { print $2 ": sync=" $4 " isvc=" $8 " rv=" $3 }' "$WATCH_LOG")
    [[ -z $bad ]] || fail "OutOfSync while Git did not change:"$'\n'"$bad"
}

# print_sequence: the watch's writes, consecutive repeats of (sync, health,
# InferenceService sync, health and message) folded, with seconds since the
# Application was created; then how many writes each phase had, and how many of
# them were not Synced.
print_sequence() {
    [[ -s $WATCH_LOG ]] || return 0
    awk -F'|' -v t0="${T_CREATE:-0}" '{
        count[$2]++; if ($4 != "Synced" || $8 != "Synced") out[$2]++
        if (!($2 in count_order)) { count_order[$2] = ++phases; name[phases] = $2 }
        key = $4 "/" $5 " isvc " $8 "/" $9 " " $10
        if (key == last) next
        last = key
        msg = $10; if (length(msg) > 110) msg = substr(msg, 1, 107) "..."
        printf "  +%6.1fs  %-16s app %-10s %-12s isvc %-9s %-12s %s\n", $1 - t0, $2, ($4 == "" ? "-" : $4), ($5 == "" ? "-" : $5), ($8 == "" ? "-" : $8), ($9 == "" ? "-" : $9), msg
    }
    END {
        printf "  writes per phase:"
        for (i = 1; i <= phases; i++) printf " %s %d (%d not Synced)%s", name[i], count[name[i]], out[name[i]], (i < phases ? "," : "\n")
    }' "$WATCH_LOG"
}

# --- setup and cleanup -------------------------------------------------------------

cleanup() {
    local code=$? f
    ((code == 0)) || dump
    touch "$WORK/stop"
    [[ -f $WORK/watch.pid ]] && kill "$(<"$WORK/watch.pid")" 2>/dev/null || true
    [[ -n $WATCHER_PID ]] && wait "$WATCHER_PID" 2>/dev/null || true
    # The controller first, so that nothing syncs what is being deleted.
    for ((f = ${#RECORDS[@]} - 1; f >= 0; f--)); do stop_proc "${RECORDS[f]}"; done
    app delete application "$APP" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    k -n "$NS" delete isvc "$ISVC" --ignore-not-found --timeout=60s >/dev/null 2>&1 || true
    k delete namespace "$NS" "$ARGOCD_NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    rm -rf "$WORK"
    if ((STARTED_CLUSTER)); then "$REPO_ROOT/e2e/cluster/cluster.sh" down; fi
}

# operator_current: the recorded operator runs the binary that install_operator
# would start (not a deleted, since rebuilt, one) and answers /healthz.
operator_current() {
    local pid _ exe
    alive "$REPO_ROOT/.cluster/pids/operator" || return 1
    read -r pid _ <"$REPO_ROOT/.cluster/pids/operator"
    exe=$(readlink "/proc/$pid/exe") || return 1
    [[ $exe == "$(readlink -f "${SLUICE_OPERATOR_BIN:-$REPO_ROOT/target/release/sluice-operator}")" ]] &&
        curl -fs --max-time 2 -o /dev/null "http://$OPERATOR_METRICS_ADDR/healthz" &&
        [[ -f $MODELS_DIR/iris/1/model.onnx ]]
}

# One run at a time (fd 8, which the processes started below do not inherit): two
# would share the namespaces, the ports and the Application.
exec 8>"${TMPDIR:-/tmp}/sluice-argocd-e2e.lock"
if ! flock -n 8; then
    say "waiting for another run of e2e/argocd/e2e.sh to finish (up to 15 min)"
    flock -w 900 8 || { say "FAIL: another run of e2e/argocd/e2e.sh holds its lock"; exit 1; }
fi
: >"$WATCH_LOG"
: >"$LOGS/argocd-watch.err"
cluster_up 8>&-
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-argocd-e2e.XXXXXX")"
GIT_DIR_="$WORK/git"
trap cleanup EXIT
# Argo CD processes an earlier run left (killed before its cleanup; not another
# run's: this one holds the lock).
for f in "$PID_PREFIX"*; do [[ -e $f ]] && stop_proc "$f"; done
for port in "$REDIS_PORT" "$REPO_PORT" "$REPO_METRICS_PORT" "$CONTROLLER_METRICS_PORT"; do
    port_open "$port" && { say "FAIL: port $port is taken (SLUICE_ARGOCD_PORT_BASE moves the ports)"; exit 1; }
done
if operator_current; then
    say "reusing the running operator (the current build)"
else
    install_operator 8>&-
fi

# A clean slate: the objects an earlier run may have left.
if k get namespace "$ARGOCD_NS" >/dev/null 2>&1 || k get namespace "$NS" >/dev/null 2>&1; then
    app delete application "$APP" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    app patch application "$APP" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    k -n "$NS" delete isvc --all --timeout=60s >/dev/null 2>&1 || true
    k delete namespace "$ARGOCD_NS" "$NS" --ignore-not-found --timeout=120s >/dev/null
fi

# Argo CD's CRDs (server-side: the Application CRD is too big for the last-applied
# annotation), its namespace and settings, and the default AppProject (which Argo
# CD's API server would create; this test runs none).
k apply --server-side --force-conflicts -f "$ARGOCD_BIN/crds/" >/dev/null
for crd in applications.argoproj.io appprojects.argoproj.io; do
    wait_until 60 "CRD $crd Established" crd k wait --for=condition=Established "crd/$crd" --timeout=1s
done
k create namespace "$ARGOCD_NS" >/dev/null
app create configmap argocd-cm >/dev/null
app create secret generic argocd-secret --from-literal=server.secretkey="$(openssl rand -hex 16)" >/dev/null
app label configmap/argocd-cm secret/argocd-secret app.kubernetes.io/part-of=argocd >/dev/null
app patch configmap argocd-cm --patch-file "$REPO_ROOT/integrations/argocd/argocd-cm-patch.yaml" >/dev/null
for key in InferenceService BatchInference; do
    [[ -n $(app get configmap argocd-cm -o jsonpath="{.data.resource\.customizations\.health\.serving\.sluice\.dev_$key}") ]] ||
        fail "argocd-cm has no health check for $key after the patch"
done
app apply -f - >/dev/null <<'YAML'
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: default, namespace: argocd}
spec:
  sourceRepos: ['*']
  destinations: [{server: '*', namespace: '*'}]
  clusterResourceWhitelist: [{group: '*', kind: '*'}]
YAML

# The host processes. The repo server runs git-verify-wrapper.sh from PATH (the
# build directory has it); ARGOCD_FAKE_IN_CLUSTER makes both use KUBECONFIG as their
# in-cluster config, the cluster https://kubernetes.default.svc.
mkdir -p "$WORK/tls" "$WORK/ssh" "$WORK/tmp" "$WORK/redis"
ARGOCD_ENV=(
    PATH="$ARGOCD_BIN:$PATH" KUBECONFIG="$KUBECONFIG" TMPDIR="$WORK/tmp"
    ARGOCD_FAKE_IN_CLUSTER=true ARGOCD_GPG_ENABLED=false
    ARGOCD_TLS_DATA_PATH="$WORK/tls" ARGOCD_SSH_DATA_PATH="$WORK/ssh"
)
start_proc redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK/redis"
for ((i = 0; i < 50; i++)); do port_open "$REDIS_PORT" && break; sleep 0.1; done
port_open "$REDIS_PORT" || { tail "$LOGS/argocd-redis.log" >&2; fail "redis-server did not listen on $REDIS_PORT"; }
start_proc repo-server env "${ARGOCD_ENV[@]}" "$ARGOCD_BIN/argocd-repo-server" \
    --address 127.0.0.1 --port "$REPO_PORT" --metrics-address 127.0.0.1 --metrics-port "$REPO_METRICS_PORT" \
    --redis "127.0.0.1:$REDIS_PORT" --disable-tls --client-ca-path=
serving repo-server "http://127.0.0.1:$REPO_METRICS_PORT/healthz"
# --persist-resource-health (controller.resource.health.persist in
# argocd-cmd-params-cm): since 3.0 the controller keeps each resource's health in the
# resource tree in Redis, for the API server and UI, and no longer in the
# Application's status.resources[].health, where this test reads the
# InferenceService's health and message. The Application's own health is in its
# status either way.
start_proc application-controller env "${ARGOCD_ENV[@]}" "$ARGOCD_BIN/argocd-application-controller" \
    --namespace "$ARGOCD_NS" --repo-server "127.0.0.1:$REPO_PORT" --repo-server-plaintext \
    --redis "127.0.0.1:$REDIS_PORT" --metrics-port "$CONTROLLER_METRICS_PORT" --persist-resource-health
serving application-controller "http://127.0.0.1:$CONTROLLER_METRICS_PORT/healthz"
say "argocd v3.6.1 running on the host ($ARGOCD_BIN; logs: .cluster/logs/argocd-*.log)"

# The Git repository.
manifest() {
    cat <<YAML
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata:
  name: $ISVC
  namespace: $NS
spec:
  minReplicas: 1
  model:
    storageUri: file://$MODELS_DIR/iris/1/model.onnx
    version: "$1"
YAML
}
mkdir -p "$GIT_DIR_/models/iris"
git -C "$GIT_DIR_" init -q -b main
manifest 1 >"$GIT_DIR_/models/iris/inferenceservice.yaml"
git -C "$GIT_DIR_" add -A
git -C "$GIT_DIR_" "${GIT_USER[@]}" commit -qm "iris: model version 1"
COMMIT1=$(git -C "$GIT_DIR_" rev-parse HEAD)

# --- 1. create: Synced and Healthy; then Synced over refreshes -----------------------

echo create >"$WORK/phase"
T_CREATE=$(now)
app apply -f - >/dev/null <<YAML
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: $APP, namespace: $ARGOCD_NS}
spec:
  project: default
  source: {repoURL: "file://$GIT_DIR_", targetRevision: main, path: models/iris}
  destination: {server: https://kubernetes.default.svc, namespace: $NS}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
    syncOptions: [ServerSideApply=true, CreateNamespace=true]
YAML
watch_app 8>&- &
WATCHER_PID=$!

wait_app 240 "the Application Synced and Healthy" \
    '[[ $SYNC == Synced && $HEALTH == Healthy && $REV == "$COMMIT1" && $ISVC_SYNC == Synced && $ISVC_HEALTH == Healthy ]]'
T_HEALTHY=$(now)
say "Application Synced and Healthy $(since "$T_CREATE" "$T_HEALTHY")s after it was created (InferenceService: $ISVC_HEALTH, '$ISVC_MSG')"
[[ $(isvc_field '{.status.observedGeneration}') == "$(isvc_field '{.metadata.generation}')" ]] ||
    fail "Healthy while the operator's status is stale"
# The health is our Lua's: Argo CD has none for a custom resource without a check,
# and the message is Ready's. (A status change that keeps the health, such as a
# new message, does not make Argo CD refresh the Application: v3 ignores such
# updates of live objects by default. A refresh brings the message up to date.)
ready_message() { isvc_field '{.status.conditions[?(@.type=="Ready")].message}'; }
for ((i = 0; i < 3; i++)); do
    [[ $ISVC_MSG == "$(ready_message)" ]] && break
    refresh
    read_state
done
((i < 3)) || fail "the InferenceService's health message '$ISVC_MSG' is not Ready's ('$(ready_message)'): is the health check from argocd-cm in use?"

set_phase steady
for n in 1 2 3; do
    refresh
    read_state
    [[ $SYNC == Synced && $ISVC_SYNC == Synced && $HEALTH == Healthy ]] ||
        fail "after refresh $n: sync=$SYNC health=$HEALTH, InferenceService entry $ISVC_SYNC"
    say "refresh $n after the operator reconciled: app $SYNC/$HEALTH, InferenceService entry status: $ISVC_SYNC"
done
no_out_of_sync steady

# --- 2. a new model version in Git: Progressing, promoted, Healthy --------------------

set_phase v2-commit
manifest 2 >"$GIT_DIR_/models/iris/inferenceservice.yaml"
git -C "$GIT_DIR_" "${GIT_USER[@]}" commit -qam "iris: model version 2"
COMMIT2=$(git -C "$GIT_DIR_" rev-parse HEAD)
T_COMMIT2=$(now)
refresh
wait_app 120 "version 2 synced" '[[ $REV == "$COMMIT2" && $SYNC == Synced && $OP == Succeeded ]]'
T_SYNC2=$(now)
set_phase v2-rollout
ready_reason() { isvc_field '{.status.conditions[?(@.type=="Ready")].reason}'; }
# The Application's message for it may still be the stale status's (see above);
# its health is current, and Ready says the canary runs.
wait_app 120 "the InferenceService Progressing (the canary of version 2)" \
    '[[ $ISVC_HEALTH == Progressing && $HEALTH == Progressing && $SYNC == Synced && $(ready_reason) == RollingOut ]]'
say "version 2 synced $(since "$T_COMMIT2" "$T_SYNC2")s after the commit; InferenceService Progressing (Ready: RollingOut, '$(ready_message)')"
REV2=$(isvc_field '{.status.revision}')

set_phase v2-promote
T_PROMOTE=$(now)
k -n "$NS" annotate isvc "$ISVC" serving.sluice.dev/rollout=promote --overwrite >/dev/null
wait_app 180 "Healthy after the promote command" '[[ $HEALTH == Healthy && $ISVC_HEALTH == Healthy && $SYNC == Synced ]]'
[[ $(isvc_field '{.status.stableRevision}') == "$REV2" ]] || fail "Healthy, but the stable revision is not version 2's ($REV2)"
T_PROMOTED=$(now)
say "promoted: Healthy $(since "$T_PROMOTE" "$T_PROMOTED")s after the promote command"
refresh
no_out_of_sync v2-rollout v2-promote

# --- 3. the rollback command, then a Git revert ----------------------------------------

set_phase rollback
T_ROLLBACK=$(now)
k -n "$NS" annotate isvc "$ISVC" serving.sluice.dev/rollout=rollback --overwrite >/dev/null
wait_app 120 "Degraded by the rollback command" \
    '[[ $HEALTH == Degraded && $ISVC_HEALTH == Degraded && $ISVC_MSG == "Rolled back by command"* ]]'
T_DEGRADED=$(now)
say "rollback command: Degraded $(since "$T_ROLLBACK" "$T_DEGRADED")s later: '$ISVC_MSG'"
[[ $(isvc_field '{.spec.model.version}') == 2 ]] || fail "the rollback wrote the spec (model version $(isvc_field '{.spec.model.version}'))"
ROLLED_BACK=$(isvc_field '{.status.rollback.revision}')
[[ -n $ROLLED_BACK ]] || fail "no status.rollback"
refresh
read_state
[[ $SYNC == Synced && $ISVC_SYNC == Synced && $HEALTH == Degraded ]] ||
    fail "after the rollback command and a refresh: sync=$SYNC health=$HEALTH, InferenceService entry $ISVC_SYNC"

# Promoted without analysis (nothing sends traffic here).
set_phase rollback-promote
k -n "$NS" annotate isvc "$ISVC" serving.sluice.dev/rollout=promote --overwrite >/dev/null
for ((i = 0; i < 180; i++)); do
    [[ $(isvc_field '{.status.stableRevision}') == "$ROLLED_BACK" ]] && break
    sleep 1
done
((i < 180)) || fail "the rolled-back revision $ROLLED_BACK was not promoted within 180s"
refresh
wait_app 60 "still Degraded and Synced once the rollback is promoted" \
    '[[ $SYNC == Synced && $HEALTH == Degraded && $ISVC_MSG == "Rolled back by command"* ]]'
no_out_of_sync rollback rollback-promote

set_phase revert
git -C "$GIT_DIR_" "${GIT_USER[@]}" revert --no-edit HEAD >/dev/null
COMMIT3=$(git -C "$GIT_DIR_" rev-parse HEAD)
T_REVERT=$(now)
refresh
wait_app 180 "Healthy and Synced after the revert" \
    '[[ $REV == "$COMMIT3" && $SYNC == Synced && $HEALTH == Healthy && $ISVC_SYNC == Synced && $ISVC_HEALTH == Healthy ]]'
T_REVERTED=$(now)
[[ -z $(isvc_field '{.status.rollback}') ]] || fail "status.rollback is still there after the revert"
[[ $(isvc_field '{.status.revision}') == "$ROLLED_BACK" ]] ||
    fail "the revert rolled out revision $(isvc_field '{.status.revision}'), not the one that served ($ROLLED_BACK)"
say "revert: Healthy and Synced $(since "$T_REVERT" "$T_REVERTED")s after the commit; status.rollback gone; revision $ROLLED_BACK kept"
set_phase done
refresh
read_state
[[ $SYNC == Synced && $HEALTH == Healthy ]] || fail "after a last refresh: sync=$SYNC health=$HEALTH"
# Again over every phase in which Git did not change, now that the watch has
# delivered every write.
no_out_of_sync steady v2-rollout v2-promote rollback rollback-promote done
(($(watch_restarts) == 0)) || fail "the watch of the Application ended $(watch_restarts) times: writes may have been missed"

say "sync/health sequence (every Application write, repeats folded; seconds since it was created):"
print_sequence >&2
writes=$(wc -l <"$WATCH_LOG")
say "figures: created -> Synced+Healthy $(since "$T_CREATE" "$T_HEALTHY")s;" \
    "v2 commit -> synced $(since "$T_COMMIT2" "$T_SYNC2")s; promote -> Healthy $(since "$T_PROMOTE" "$T_PROMOTED")s;" \
    "rollback -> Degraded $(since "$T_ROLLBACK" "$T_DEGRADED")s; revert -> Healthy $(since "$T_REVERT" "$T_REVERTED")s;" \
    "$writes Application writes, OutOfSync only between a commit and its sync"
say "PASS: Argo CD v3.6.1 synced the InferenceService, its health from Sluice's checks; Synced through reconciles, promote and rollback"
