#!/usr/bin/env bash
# What e2e/argocd/e2e.sh needs on the host (Debian/Ubuntu, as root), installed when
# missing: redis-server (Argo CD's cache; Debian's package, started by the test on a
# port of its own, never as a system service) and git (the repo server clones the
# test's file:// repository). Then builds, or reuses, Argo CD's application
# controller and repo server (build.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v git >/dev/null || need+=(git)
if ((${#need[@]})); then
    echo "argocd-deps: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

"$here/build.sh" >/dev/null
