#!/usr/bin/env bash
# End-to-end: kubectl apply -f config/samples/... -> sluice-server pods run -> the
# Service answers a request made right after `kubectl wait` with the fixture's
# reference output -> kubectl delete removes everything; then Argo CD's health of
# every live state (gitops.sh), two tenants' RBAC (tenants.sh), a fallback model, drift monitoring (monitoring.sh),
# edge placement (placement.sh) and batch inference (batch.sh: a scheduled run over
# S3 with a shard's pod deleted mid-run, and a one-time run over file://). Uses the
# running local cluster or starts (and stops) one.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"
# shellcheck source=e2e/operator/monitoring.sh
source "$REPO_ROOT/e2e/operator/monitoring.sh"
# shellcheck source=e2e/operator/placement.sh
source "$REPO_ROOT/e2e/operator/placement.sh"
# shellcheck source=e2e/operator/batch.sh
source "$REPO_ROOT/e2e/operator/batch.sh"
# shellcheck source=e2e/operator/gitops.sh
source "$REPO_ROOT/e2e/operator/gitops.sh"
# shellcheck source=e2e/operator/tenants.sh
source "$REPO_ROOT/e2e/operator/tenants.sh"

cluster_up
cleanup() {
    "$KUBECTL" delete -f "$SAMPLE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    if ((STARTED_CLUSTER)); then "$REPO_ROOT/e2e/cluster/cluster.sh" down; fi
}
trap cleanup EXIT

install_operator
# docs/getting-started.md "On any cluster": the kustomize install it gives must be
# accepted by the API server as it is (a server-side dry run: this cluster's
# operator runs on the host, see lib.sh). A dry run creates no namespace, so the
# install's own namespace is made first.
"$KUBECTL" create namespace sluice-system --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" apply --server-side --force-conflicts --dry-run=server -k "$REPO_ROOT/config/default" >/dev/null ||
    { say "FAIL: kubectl apply -k config/default (docs/getting-started.md) is refused"; exit 1; }
say "kubectl apply --server-side -k config/default passes a server-side dry run"
"$KUBECTL" delete -f "$SAMPLE" --ignore-not-found --wait=true >/dev/null
seconds=$(apply_sample_and_wait)
say "InferenceService iris Ready ${seconds}s after kubectl apply"
"$KUBECTL" get isvc iris
pods=$("$KUBECTL" get pods -l serving.sluice.dev/inferenceservice=iris --field-selector=status.phase=Running -o name | wc -l)
[[ $pods -ge 2 ]] || { say "FAIL: expected 2 running sluice-server pods, found $pods"; exit 1; }

# Ready means servable: the first request goes out right after the wait, with no
# retry (Ready waits until the Service's EndpointSlices list a ready endpoint).
url="$(service_url)/v2/models/iris/infer"
response=$(curl -fsS -H 'Content-Type: application/json' -d "$(reference_request)" "$url")
python3 - "$REPO_ROOT/server/fixtures/models/iris/1/reference.json" "$response" <<'PY'
import json, math, sys
ref = json.load(open(sys.argv[1]))["outputs"]
got = {o["name"]: o for o in json.loads(sys.argv[2])["outputs"]}
for name, want in ref.items():
    data = got[name]["data"]
    flat = lambda d: [y for x in d for y in flat(x)] if isinstance(d, list) else [d]
    a, b = flat(data), flat(want["data"])
    assert got[name]["shape"] == want["shape"], (name, got[name]["shape"], want["shape"])
    assert all(math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5) for x, y in zip(a, b)) and len(a) == len(b), name
print("sluice: the Service answered with the reference outputs:", ", ".join(ref), file=sys.stderr)
PY

gitops_e2e
tenants_e2e

# Degraded mode through the operator: a model that fails on every non-zero row
# (the faulty fixture) with mlp as its fallback model, fetched by a second init
# container; the answer must be mlp's, marked as the fallback's.
FALLBACK_ISVC=$(cat <<YAML
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: scorer, namespace: default}
spec:
  minReplicas: 1
  model: {storageUri: "file://$MODELS_DIR/faulty/1/model.onnx"}
  fallback:
    model: {storageUri: "file://$MODELS_DIR/mlp/1/model.onnx"}
  circuitBreaker: {failureThreshold: 3, openSeconds: 60}
YAML
)
trap 'cleanup; echo "$FALLBACK_ISVC" | "$KUBECTL" delete -f - --ignore-not-found --wait=false >/dev/null 2>&1 || true' EXIT
echo "$FALLBACK_ISVC" | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" wait isvc/scorer --for=condition=Ready --timeout=240s >/dev/null || {
    "$KUBECTL" describe isvc scorer >&2; exit 1; }
scorer="http://$("$KUBECTL" get svc scorer -o jsonpath='{.spec.clusterIP}'):8080/v2/models/scorer/infer"
PYTHONPATH="$REPO_ROOT/e2e/operator" python3 - "$scorer" "$REPO_ROOT/server/fixtures/models/mlp/1/reference.json" <<'PY'
import json, math, sys
from post_retrying import post
url, reference = sys.argv[1], json.load(open(sys.argv[2]))

x = reference["inputs"]["input"]
rows = x["shape"][0]
reasons = []
for attempt in range(5):
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": x["shape"], "data": x["data"]}]})
    answer = post(url, body)
    parameters = answer.get("parameters", {})
    assert parameters.get("sluice_fallback") == "model", answer
    reasons.append(parameters["sluice_fallback_reason"])
    got = answer["outputs"][0]["data"]
    want = reference["outputs"]["logits"]["data"]
    flat = lambda d: [y for v in d for y in flat(v)] if isinstance(d, list) else [d]
    assert all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5) for a, b in zip(flat(got), flat(want))), "not mlp's answer"
assert reasons == ["failure"] * 3 + ["circuit_open"] * 2, reasons
print(f"sluice: fallback model answered all 5 requests of {rows} rows with mlp's outputs; reasons {reasons}", file=sys.stderr)
PY
echo "$FALLBACK_ISVC" | "$KUBECTL" delete -f - --wait=true >/dev/null

monitoring_e2e
placement_e2e
batch_e2e

"$KUBECTL" delete -f "$SAMPLE" --wait=true >/dev/null
for _ in $(seq 120); do
    left=$("$KUBECTL" get deployments,daemonsets,services,configmaps,poddisruptionbudgets,pods \
        -l serving.sluice.dev/inferenceservice=iris -o name 2>/dev/null | wc -l)
    [[ $left -eq 0 ]] && break
    sleep 1
done
[[ $left -eq 0 ]] || { say "FAIL: objects left after delete:"; "$KUBECTL" get all -l serving.sluice.dev/inferenceservice=iris; exit 1; }
say "delete removed every object and pod; e2e passed"
