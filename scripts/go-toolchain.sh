# ensure_go MINOR: puts a Go toolchain of at least 1.MINOR on PATH: the one already
# there, or upstream's, fetched once from the Go module proxy (golang.org/toolchain,
# the module `go` itself downloads toolchains from) into $SLUICE_CACHE. Sourced by
# e2e/cluster/build-bins.sh and integrations/argocd/health.sh.
GO_TOOLCHAIN=v0.0.1-go1.26.11.linux-amd64
ensure_go() {
    local minor=$1 have dir tmp
    have="$(go env GOVERSION 2>/dev/null || true)"
    if [[ $have =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] >= minor)); then return 0; fi
    dir="${SLUICE_CACHE:-$HOME/.cache/sluice}/go-$GO_TOOLCHAIN"
    if [[ ! -x $dir/bin/go ]]; then
        command -v unzip >/dev/null || { echo "ensure_go: unzip is required to fetch Go" >&2; return 1; }
        echo "ensure_go: fetching Go toolchain $GO_TOOLCHAIN from the Go module proxy" >&2
        tmp="$dir.partial"
        rm -rf "$tmp" && mkdir -p "$tmp"
        curl -fsSL "${GOPROXY_URL:-https://proxy.golang.org}/golang.org/toolchain/@v/$GO_TOOLCHAIN.zip" -o "$tmp/go.zip"
        unzip -q "$tmp/go.zip" -d "$tmp"
        mv "$tmp/golang.org/toolchain@$GO_TOOLCHAIN" "$dir"
        rm -rf "$tmp"
    fi
    export PATH="$dir/bin:$PATH" GOTOOLCHAIN=local
}
