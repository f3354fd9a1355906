# Argo CD's view of live InferenceServices (sourced by e2e.sh; needs lib.sh): the
# health check of integrations/argocd, run by Argo CD's Lua VM (sluice-argocd-health),
# must call each state the operator writes what docs/gitops.md says: Healthy,
# Progressing (pods starting, a rollout, a stale status, no status yet), Suspended (a paused
# rollout), Degraded (a rollback command, an aborted rollout, a digest mismatch, a
# model that cannot be fetched). A rollback command must leave the
# spec as Git wrote it, and a revert must end it.
#
# SLUICE_CAPTURE_HEALTH=1 also writes each object as `kubectl get -o yaml` prints it
# into the check's testdata/ (the cases of its health_test.yaml). A crash loop is
# staged with a typo in the server's environment (a byte limit that is no number):
# the server refuses it and exits at once, each time it is restarted.
#
# batch.sh uses expect_health_of and operator_paused for BatchInference's check,
# and e2e/rollout/e2e.sh expect_health_of for an analysis rollback.

# The Argo CD checks' tree: resource_customizations/<group>/<Kind>/{health.lua,testdata/}.
HEALTH_CHECKS="$REPO_ROOT/integrations/argocd/resource_customizations/serving.sluice.dev"

# field PATH: the value at PATH (dots; a condition by its type, as in
# status.conditions.Ready.reason) of the JSON object on stdin; empty when absent.
field() {
    python3 -c '
import json, sys
o = json.load(sys.stdin)
for part in sys.argv[1].split("."):
    if isinstance(o, list):
        o = next((c for c in o if c.get("type") == part), None)
    else:
        o = (o or {}).get(part)
print("" if o is None else o)' "$1"
}

# expect_health_of KIND [NAMESPACE/]NAME STATUS CASE [PATH VALUE]: waits (up
# to 3 minutes) until the health of the KIND (InferenceService, BatchInference)
# NAME (in default unless NAMESPACE is given), as Argo CD's Lua says it
# (sluice-argocd-health), is STATUS and, if given, its field PATH is VALUE, both
# read from one version of the object; with SLUICE_CAPTURE_HEALTH writes that
# version to KIND's testdata/CASE.yaml.
expect_health_of() {
    local kind=$1 name=${2#*/} want=$3 case=$4 path=${5:-} value=${6:-} object got version yaml i
    local namespace=default
    [[ $2 == */* ]] && namespace=${2%%/*}
    ARGOCD_HEALTH=${ARGOCD_HEALTH:-"$("$REPO_ROOT/integrations/argocd/health.sh" bin)/sluice-argocd-health"}
    for ((i = 0; i < 360; i++)); do
        object=$("$KUBECTL" -n "$namespace" get "$kind" "$name" -o json)
        got=$("$ARGOCD_HEALTH" - <<<"$object" || true)
        if [[ ${got%%$'\t'*} == "$want" ]] && { [[ -z $path ]] || [[ $(field "$path" <<<"$object") == "$value" ]]; }; then
            if [[ -n ${SLUICE_CAPTURE_HEALTH:-} ]]; then
                version=$(field metadata.resourceVersion <<<"$object")
                yaml=$("$KUBECTL" -n "$namespace" get "$kind" "$name" -o yaml)
                if [[ $yaml != *"resourceVersion: \"$version\""* ]]; then
                    continue
                fi
                { echo "# Captured from the local cluster by expect_health_of (e2e/operator/gitops.sh), SLUICE_CAPTURE_HEALTH=1."
                  echo "$yaml"; } >"$HEALTH_CHECKS/$kind/testdata/$case.yaml"
            fi
            say "argocd health of $kind $name ($case): $got"
            return 0
        fi
        sleep 0.5
    done
    say "FAIL: argocd health of $kind $name never became $want ($case); last: $got"
    echo "$object" >&2
    return 1
}

# expect_health NAME STATUS CASE [PATH VALUE]: expect_health_of an InferenceService.
expect_health() { expect_health_of InferenceService "$@"; }

# operator_paused CMD...: runs CMD while the operator is stopped (SIGSTOP), so
# that what CMD sees was written before it; the operator goes on afterwards
# whatever CMD returns, and CMD's status is returned.
operator_paused() {
    local operator_pid status=0
    read -r operator_pid _ <"$REPO_ROOT/.cluster/pids/operator"
    kill -STOP "$operator_pid"
    "$@" || status=$?
    kill -CONT "$operator_pid"
    return $status
}

# rollout_command NAME COMMAND: the manual command annotation, as kubectl sets it.
rollout_command() {
    "$KUBECTL" annotate isvc "$1" "serving.sluice.dev/rollout=$2" --overwrite >/dev/null
}

gitops_e2e() {
    local version
    expect_health iris Healthy healthy

    # health: one pod of the iris model, its version as Git would set it.
    manifest() {
        cat <<YAML
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: health, namespace: default}
spec:
  minReplicas: 1
  model: {storageUri: "file://$MODELS_DIR/iris/1/model.onnx", version: "$1"}
YAML
    }
    manifest 1 | "$KUBECTL" apply --server-side --field-manager=argocd-controller -f - >/dev/null
    expect_health health Progressing progressing_pods_starting status.conditions.Ready.reason ReplicasUnavailable
    expect_health health Healthy healthy_one_pod

    # While the operator is stopped (SIGSTOP), Git changes the spec (a stale
    # status) and adds an InferenceService (no status yet).
    unseen_specs() {
        manifest 2 | "$KUBECTL" apply --server-side --field-manager=argocd-controller -f - >/dev/null
        expect_health health Progressing progressing_stale_generation &&
            manifest 1 | sed 's/name: health/name: unseen/' | "$KUBECTL" apply -f - >/dev/null &&
            expect_health unseen Progressing progressing_no_status status ''
    }
    operator_paused unseen_specs
    "$KUBECTL" delete isvc unseen --wait=true >/dev/null

    # Version 2 rolls out: Progressing, then Suspended while paused.
    expect_health health Progressing progressing_rollout status.conditions.Ready.reason RollingOut
    rollout_command health pause
    expect_health health Suspended suspended_paused
    rollout_command health resume
    expect_health health Progressing progressing_resumed status.conditions.Ready.reason RollingOut
    rollout_command health promote
    expect_health health Healthy healthy_promoted status.stableRevision "$("$KUBECTL" get isvc health -o jsonpath='{.status.revision}')"

    # A rollback command: version 1 serves again, the spec stays Git's (version 2).
    rollout_command health rollback
    expect_health health Degraded degraded_rollback_command status.rollback.model.version 1
    version=$("$KUBECTL" get isvc health -o jsonpath='{.spec.model.version}')
    [[ $version == 2 ]] || { say "FAIL: the rollback wrote the spec (model version $version)"; return 1; }
    local dry
    dry=$(manifest 2 | "$KUBECTL" diff --server-side --field-manager=argocd-controller -f - 2>&1 || true)
    [[ -z $dry ]] || { say "FAIL: after the rollback, kubectl diff of Git's manifest shows: $dry"; return 1; }
    # Promoted without analysis (nothing sends traffic here), then the revert in
    # Git ends it: the spec asks for the revision that already serves.
    local rolled_back
    rolled_back=$("$KUBECTL" get isvc health -o jsonpath='{.status.rollback.revision}')
    rollout_command health promote
    expect_health health Degraded degraded_rollback_promoted status.stableRevision "$rolled_back"
    manifest 1 | "$KUBECTL" apply --server-side --field-manager=argocd-controller -f - >/dev/null
    expect_health health Healthy healthy_reverted status.rollback ''

    # An aborted rollout stays Degraded until the spec changes.
    manifest 3 | "$KUBECTL" apply --server-side --field-manager=argocd-controller -f - >/dev/null
    expect_health health Progressing progressing_rollout_3 status.conditions.Ready.reason RollingOut
    rollout_command health abort
    expect_health health Degraded degraded_aborted status.conditions.Ready.reason RolloutAborted
    "$KUBECTL" delete isvc health --wait=true >/dev/null

    # Failures that waiting does not cure. broken NAME MODEL [ENV]: an
    # InferenceService of the model fields MODEL and the server environment ENV.
    broken() {
        cat <<YAML
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: $1, namespace: default}
spec:
  minReplicas: 1
  model: {$2}
  runtime: {env: [${3:-}]}
YAML
    }
    local iris="storageUri: \"file://$MODELS_DIR/iris/1/model.onnx\""
    broken digest "$iris, sha256: \"$(printf '0%.0s' {1..64})\"" | "$KUBECTL" apply -f - >/dev/null
    broken missing "storageUri: \"file://$MODELS_DIR/iris/9/model.onnx\"" | "$KUBECTL" apply -f - >/dev/null
    broken crashing "$iris" "{name: SLUICE_MAX_BODY_BYTES, value: lots}" | "$KUBECTL" apply -f - >/dev/null
    broken invalid "$iris" "{name: SLUICE_REVISION, value: mine}" | "$KUBECTL" apply -f - >/dev/null
    expect_health digest Degraded degraded_digest_mismatch
    expect_health missing Degraded degraded_fetch_failed
    expect_health crashing Degraded degraded_crash_loop status.conditions.Available.reason CrashLooping
    expect_health invalid Degraded degraded_invalid_spec status.conditions.Reconciled.reason InvalidSpec
    "$KUBECTL" delete isvc digest missing crashing invalid --wait=true >/dev/null
    say "Argo CD's health check called every live state as documented"
}
