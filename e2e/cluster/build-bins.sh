#!/usr/bin/env bash
# Builds the local cluster's upstream binaries from their published Go modules:
#   e2e/k8s-bins        etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                       kube-proxy, kubectl (k8s.io/kubernetes at the k8s-openapi version)
#   e2e/prometheus-bin  prometheus (with Kubernetes service discovery only)
#   e2e/helm-bin        helm (the chart's lint, template and install tests)
# Each module builds into $SLUICE_CACHE/<name>-<version>-<hash of go.mod+go.sum>/, so
# only the first run compiles; the directory printed on stdout links them all.
#   build-bins.sh           build what is missing, print the bin directory
#   build-bins.sh --cached  print it only if everything is built; never build
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
cached_only=0
[[ ${1:-} == --cached ]] && cached_only=1

# module_version DIR MODULE: the version DIR/go.mod requires of MODULE.
module_version() {
    awk -v m="$2" '($1 == m && $2 ~ /^v/) {print $2; exit} ($1 == "require" && $2 == m) {print $3; exit}' "$1/go.mod"
}

# shellcheck source=scripts/go-toolchain.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/go-toolchain.sh"

# build NAME DIR TAGS LDFLAGS TOOL=PACKAGE...: builds into the module's cache directory
# and prints it.
build() {
    local name=$1 dir=$2 tags=$3 ldflags=$4; shift 4
    local key out staging spec tool pkg i=0 start=$SECONDS missing=0
    key="$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-12)"
    out="$cache/$name-$key"
    for spec in "$@"; do [[ -x "$out/${spec%%=*}" ]] || missing=1; done
    if ((missing == 0)); then echo "$out"; return 0; fi
    ((cached_only)) && return 1
    ensure_go 26 # Prometheus needs Go 1.26
    echo "build-bins: building $name into $out (first run only; Kubernetes takes ~15 min on 2 cores)" >&2
    staging="$out.partial"
    mkdir -p "$staging"
    for spec in "$@"; do
        i=$((i + 1)); tool=${spec%%=*}; pkg=${spec#*=}
        if [[ -x "$staging/$tool" ]]; then
            echo "build-bins: [$i/$#] $tool already built" >&2
            continue
        fi
        echo "build-bins: [$i/$#] $tool ($pkg) ... elapsed $((SECONDS - start))s" >&2
        (cd "$dir" && CGO_ENABLED=0 nice -n 10 go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$staging/$tool.tmp" "$pkg")
        mv "$staging/$tool.tmp" "$staging/$tool"
    done
    rm -rf "$out"
    mv "$staging" "$out"
    echo "build-bins: $name done in $((SECONDS - start))s" >&2
    echo "$out"
}

k8s_dir="$here/../k8s-bins"
k8s_version="$(module_version "$k8s_dir" k8s.io/kubernetes)"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
# Version stamps, as Kubernetes' own build sets them (kubectl and clients read them).
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
k8s_out="$(build "k8s-$k8s_version" "$k8s_dir" "" "$k8s_ldflags" \
    etcd=go.etcd.io/etcd/server/v3 \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
    kube-proxy=k8s.io/kubernetes/cmd/kube-proxy \
    kubectl=k8s.io/kubernetes/cmd/kubectl)"

prom_dir="$here/../prometheus-bin"
prom_module=github.com/prometheus/prometheus
prom_version="$(module_version "$prom_dir" "$prom_module")"
# Upstream tags Prometheus 3.x.y as module version v0.(300+x).y.
IFS=. read -r _ prom_minor prom_patch <<<"$prom_version"
prom_semver="3.$((prom_minor - 300)).$prom_patch"
prom_ldflags="-s -w -X github.com/prometheus/common/version.Version=$prom_semver"
prom_out="$(build "prometheus-$prom_version" "$prom_dir" "remove_all_sd,enable_kubernetes_sd" "$prom_ldflags" \
    prometheus="$prom_module/cmd/prometheus")"

helm_dir="$here/../helm-bin"
helm_version="$(module_version "$helm_dir" helm.sh/helm/v4)"
helm_out="$(build "helm-$helm_version" "$helm_dir" "" \
    "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    helm=helm.sh/helm/v4/cmd/helm)"

# One directory that links every binary, named after the builds.
bin="$cache/bin-$(basename "$k8s_out")-$(basename "$prom_out")-$(basename "$helm_out")"
if [[ ! -d $bin ]]; then
    mkdir -p "$bin.tmp"
    ln -sf "$k8s_out"/* "$prom_out"/* "$helm_out"/* "$bin.tmp/"
    mv "$bin.tmp" "$bin"
fi
echo "$bin"
