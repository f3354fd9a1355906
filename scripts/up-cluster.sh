#!/usr/bin/env bash
# `make up` on the local cluster: starts it (or reuses it); copies the fixture
# models to /opt/sluice/models (where the iris sample's file:// URI points), applies
# the CRD from crds/ and starts sluice-operator as a process on the host with the
# cluster's admin kubeconfig (e2e/operator/lib.sh install_operator: the API server
# listens on 127.0.0.1 only, so the operator cannot run in a pod here, and no RBAC
# objects are applied; config/rbac and the Helm chart carry those for real
# clusters); then applies the iris sample InferenceService, waits until it is Ready
# and prints one prediction from its Service. The pods run the locally built
# sluice-server, which the node agent installs into its image store first. Leaves
# everything running; `make cluster-down` stops it.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"

cluster_up
install_operator
seconds=$(apply_sample_and_wait)
say "InferenceService iris is Ready (${seconds}s after kubectl apply):"
"$KUBECTL" get isvc iris
url="$(service_url)/v2/models/iris/infer"
request='{"id":"make-up","inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[[6.3,3.3,6.0,2.5]]}]}'
echo "POST $url $request"
curl -fsS --retry 5 --retry-all-errors -H 'Content-Type: application/json' -d "$request" "$url"
echo
