# Shared steps of e2e/operator/e2e.sh and scripts/up-cluster.sh (sourced; needs
# REPO_ROOT). Everything goes through kubectl against the local cluster.

SAMPLE="$REPO_ROOT/config/samples/serving_v1alpha1_inferenceservice_iris.yaml"
MODELS_LINK=/opt/sluice/models

say() { echo "sluice: $*" >&2; }

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

# install_operator: the CRD, RBAC and the operator Deployment (config/default); the
# local cluster runs target/release/sluice-operator for the operator image.
install_operator() {
    mkdir -p "$(dirname "$MODELS_LINK")"
    ln -sfn "$REPO_ROOT/server/fixtures/models" "$MODELS_LINK"
    "$KUBECTL" apply --server-side --force-conflicts -k "$REPO_ROOT/config/default" >/dev/null
    "$KUBECTL" wait --for=condition=Established crd/inferenceservices.serving.sluice.dev --timeout=60s >/dev/null
    if [[ -n ${PROMETHEUS_URL:-} ]]; then
        "$KUBECTL" -n sluice-system set env deployment/sluice-operator PROMETHEUS_URL="$PROMETHEUS_URL" >/dev/null
    fi
    "$KUBECTL" -n sluice-system rollout status deployment/sluice-operator --timeout=120s >/dev/null
    say "operator running in sluice-system"
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
