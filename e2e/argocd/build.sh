#!/usr/bin/env bash
# Builds Argo CD's application controller and repo server for e2e/argocd/e2e.sh from
# their published Go module (e2e/argocd-bins: our own multi-call main over argo-cd
# v3.6.1's commands; its go.mod says why that version). It builds into
# $SLUICE_CACHE/argocd-<version>-<hash of go.mod, go.sum and main.go>/, so only the
# first run compiles (about 7 min on 2 cores, with the modules already downloaded),
# and prints that directory, which holds:
#   argocd                          the binary
#   argocd-application-controller   links to it (it dispatches on its name)
#   argocd-repo-server
#   git-verify-wrapper.sh           from the module's hack/: the repo server runs it
#                                   from PATH on every sync (the image ships it)
#   crds/                           the Application and AppProject CRDs, from the
#                                   module's manifests/crds/ (the same release)
# Put the directory on PATH before starting the repo server.
#   build.sh           build what is missing, print the directory
#   build.sh --cached  print it only if it is built; never build
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
module="$root/e2e/argocd-bins"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
cached_only=0
[[ ${1:-} == --cached ]] && cached_only=1
say() { echo "argocd-build: $*" >&2; }

# shellcheck source=scripts/go-toolchain.sh
source "$root/scripts/go-toolchain.sh"

argocd_module=github.com/argoproj/argo-cd/v3
version="$(awk -v m="$argocd_module" '($1 == m && $2 ~ /^v/) {print $2; exit}' "$module/go.mod")"
[[ -n $version ]] || { say "no $argocd_module version in $module/go.mod"; exit 1; }
key="$(cat "$module/go.mod" "$module/go.sum" "$module/main.go" | sha256sum | cut -c1-12)"
out="$cache/argocd-$version-$key"
links=(argocd-application-controller argocd-repo-server)
crds=(application-crd.yaml appproject-crd.yaml)

built() {
    local f
    for f in argocd git-verify-wrapper.sh "${links[@]}"; do [[ -x $out/$f ]] || return 1; done
    for f in "${crds[@]}"; do [[ -f $out/crds/$f ]] || return 1; done
}
if built; then echo "$out"; exit 0; fi
((cached_only)) && exit 1

# Any Go of 1.21 or later on PATH (or the one ensure_go fetches) downloads the
# toolchain that argo-cd v3.6 needs, 1.27, from the Go module proxy (once, into the
# module cache) and runs it: GOTOOLCHAIN names it.
ensure_go 21
export GOTOOLCHAIN="${SLUICE_ARGOCD_GOTOOLCHAIN:-go1.27.3}"
start=$SECONDS
say "building Argo CD $version into $out (first run only; a few minutes on 2 cores)"
staging="$out.partial"
rm -rf "$staging"
mkdir -p "$staging"

# Version stamps, as Argo CD's Makefile sets them (the controller logs them at
# start); kubectlVersion is the client-go version, as there. No gitCommit: the
# module proxy does not say which commit the tag is, so the version reads
# v3.6.1+unknown.
pkg="$argocd_module/common"
client_go="$(cd "$module" && go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' k8s.io/client-go)"
ldflags="-s -w -X $pkg.version=${version#v} -X $pkg.gitTag=$version -X $pkg.gitTreeState=clean"
ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z -X $pkg.kubectlVersion=$client_go"
# -buildvcs=false: the binary does not depend on the state of Sluice's checkout.
(cd "$module" && CGO_ENABLED=0 nice -n 19 go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$staging/argocd" .)
for link in "${links[@]}"; do ln -s argocd "$staging/$link"; done

moddir="$(cd "$module" && go list -m -f '{{.Dir}}' "$argocd_module")"
install -m 755 "$moddir/hack/git-verify-wrapper.sh" "$staging/git-verify-wrapper.sh"
mkdir -p "$staging/crds"
for f in "${crds[@]}"; do install -m 644 "$moddir/manifests/crds/$f" "$staging/crds/$f"; done

"$staging/argocd-repo-server" --help >/dev/null
rm -rf "$out"
mv "$staging" "$out"
say "done in $((SECONDS - start))s"
echo "$out"
