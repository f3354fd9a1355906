#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy
# and kubectl from their published Go modules (e2e/k8s-bins/go.mod) into
# $SLUICE_CACHE/k8s-<version>/bin. A finished build is reused: only the first run
# of a given go.mod compiles anything.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod_dir="$here/../k8s-bins"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"

k8s_version="$(awk '($1 == "k8s.io/kubernetes" && $2 ~ /^v/) {print $2; exit} ($1 == "require" && $2 == "k8s.io/kubernetes") {print $3; exit}' "$mod_dir/go.mod")"
# The cache key covers go.mod and go.sum, so changing a pin rebuilds.
key="$(cat "$mod_dir/go.mod" "$mod_dir/go.sum" | sha256sum | cut -c1-12)"
out="$cache/k8s-$k8s_version-$key/bin"
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl)

complete() {
    local t
    for t in "${tools[@]}"; do [[ -x "$out/$t" ]] || return 1; done
}

if complete; then
    echo "$out"
    exit 0
fi
# --cached: report only; never build.
[[ ${1:-} == --cached ]] && exit 1

command -v go >/dev/null || { echo "build-bins: go is required (https://go.dev/dl)" >&2; exit 1; }

# Version stamps, as Kubernetes' own build sets them (kubectl and clients read them).
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

staging="$out.partial"
mkdir -p "$staging"
declare -A pkgs=(
    [etcd]=go.etcd.io/etcd/server/v3
    [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
    [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
    [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
    [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
    [kubectl]=k8s.io/kubernetes/cmd/kubectl
)
start=$SECONDS
echo "build-bins: building Kubernetes $k8s_version control plane into $out (first run only; ~20-40 min on 2 cores)" >&2
i=0
for t in "${tools[@]}"; do
    i=$((i + 1))
    if [[ -x "$staging/$t" ]]; then
        echo "build-bins: [$i/${#tools[@]}] $t already built" >&2
        continue
    fi
    echo "build-bins: [$i/${#tools[@]}] $t (${pkgs[$t]}) ... elapsed $((SECONDS - start))s" >&2
    (cd "$mod_dir" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$staging/$t.tmp" "${pkgs[$t]}")
    mv "$staging/$t.tmp" "$staging/$t"
done
rm -rf "$out"
mv "$staging" "$out"
echo "build-bins: done in $((SECONDS - start))s" >&2
echo "$out"
