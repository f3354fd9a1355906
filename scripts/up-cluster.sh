#!/usr/bin/env bash
# `make up` on the local cluster: starts it (or reuses it), installs the CRD, RBAC
# and the operator, applies the iris sample InferenceService, waits until it is
# Ready and prints one prediction from its Service. Leaves everything running;
# `make cluster-down` stops it.
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
