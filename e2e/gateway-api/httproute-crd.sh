#!/usr/bin/env bash
# Prints the path of the Gateway API HTTPRoute CRD (standard channel), taken from
# the sigs.k8s.io/gateway-api Go module through the Go module proxy and cached in the
# Go module cache. The operator's API-server tests install it to check the weights
# the operator writes to a named HTTPRoute.
set -euo pipefail
GATEWAY_API_VERSION=v1.3.0
# e2e/cluster/build-bins.sh fetches a Go toolchain when the machine has none.
if ! command -v go >/dev/null; then
    for bin in "${SLUICE_CACHE:-$HOME/.cache/sluice}"/go-*/bin; do PATH="$bin:$PATH"; done
fi
dir="$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
crd="$dir/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
[[ -f $crd ]] || { echo "httproute-crd: $crd missing" >&2; exit 1; }
echo "$crd"
