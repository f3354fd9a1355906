#!/usr/bin/env bash
# `make fresh-check`: what a newcomer gets. Clones the current HEAD into a new folder
# under /tmp (a real target/ in the clone, no link into a cache, as after
# `git clone`), then runs the README's two commands there, `make up` and then
# `make test`, with empty caches: SLUICE_CACHE (the Python venv, the Kubernetes and
# Prometheus binaries, cargo-deny), CARGO_HOME and Go's build and module caches all
# start empty under the same folder. Prints the wall time of each command, stops the
# clone's cluster (make cluster-down) and removes the folder at the end, whatever
# happened (FRESH_KEEP=1 keeps it, with the logs).
#
# It takes as long as a first build (40 minutes or more on two cores), so it is not
# part of `make test`. It tests HEAD: commit first. The local cluster is one per
# machine (bridge, ports, /opt/sluice/models), so stop any running one first.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "fresh-check: $*" >&2; }

head=$(git -C "$repo" rev-parse HEAD)
if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]]; then
    say "note: uncommitted changes in $repo are not part of the check (it clones HEAD $head)"
fi
if ip link show "${SLUICE_BRIDGE:-sluice0}" >/dev/null 2>&1 \
    || (exec 3<>"/dev/tcp/127.0.0.1/${SLUICE_API_PORT:-6443}") 2>/dev/null; then
    say "a local cluster is running on this machine; stop it first (make cluster-down in its checkout)"
    exit 1
fi

work=$(mktemp -d /tmp/sluice-fresh.XXXXXX)
clone=$work/sluice
logs=$work/logs
mkdir -p "$logs"
# Caches a newcomer does not have; Rust itself (rustup), Python 3, curl and root are
# the README's prerequisites and come from the machine.
export SLUICE_CACHE=$work/cache
export CARGO_HOME=$work/cargo-home
export GOCACHE=$work/go-build GOMODCACHE=$work/go-mod GOPATH=$work/go
# Nothing from this shell may point into another checkout or cache.
unset SLUICE_SERVER_BIN SLUICE_OPERATOR_BIN SLUICE_NODE_AGENT_BIN ORT_DYLIB_PATH \
    KUBECONFIG PROMETHEUS_URL CARGO_TARGET_DIR VIRTUAL_ENV

cleanup() {
    local rc=$?
    if [[ -d $clone ]]; then
        say "stopping the clone's cluster (make cluster-down)"
        make -C "$clone" cluster-down >>"$logs/cluster-down.log" 2>&1 || say "cluster-down failed (log: $logs/cluster-down.log)"
    fi
    if [[ -n ${FRESH_KEEP:-} ]]; then
        say "kept $work (logs in $logs)"
    else
        if ((rc != 0)) && [[ -d $logs ]]; then
            local kept
            kept=$(mktemp -d /tmp/sluice-fresh-logs.XXXXXX)
            mv "$logs"/* "$kept"/ 2>/dev/null || true
            say "failed; logs kept in $kept"
        fi
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "cloning $head into $clone; caches under $work"
git clone --quiet --no-hardlinks "$repo" "$clone"
git -C "$clone" checkout --quiet --detach "$head"

# run NAME: `make NAME` in the clone, logged (and shown); sets elapsed and status.
declare -A elapsed status
run() {
    local start=$SECONDS rc=0
    say "make $1 (log: $logs/$1.log)"
    make -C "$clone" "$1" 2>&1 | tee "$logs/$1.log" || rc=$?
    elapsed[$1]=$((SECONDS - start))
    status[$1]=$rc
}
run up
run test

minutes() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
failed=0
echo
echo "fresh-check of $head (SLUICE_CACHE=$SLUICE_CACHE, empty at the start):"
for step in up test; do
    if ((status[$step] == 0)); then result=ok; else result="FAILED (exit ${status[$step]})"; failed=1; fi
    printf '  make %-5s %8s  %s\n' "$step" "$(minutes "${elapsed[$step]}")" "$result"
done
exit "$failed"
