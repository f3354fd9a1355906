#!/usr/bin/env bash
# Runs the harness tests (e2e/tests) against the local cluster. A cluster that was
# already running is used and left running; otherwise one is started for the tests
# and stopped afterwards.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="${REPO_ROOT:-$(cd "$here/../.." && pwd)}"
CLUSTER_DIR="${CLUSTER_DIR:-$REPO_ROOT/.cluster}"

started=0
if ! "$here/cluster.sh" status 2>/dev/null; then
    "$here/cluster.sh" up
    started=1
fi
cleanup() { if ((started)); then "$here/cluster.sh" down; fi; }
trap cleanup EXIT

set -a
# shellcheck source=/dev/null
source "$CLUSTER_DIR/env"
set +a
export SLUICE_CLUSTER_DIR="$CLUSTER_DIR"
python3 -m unittest discover -v -s "$REPO_ROOT/e2e/tests" -p 'test_*.py'
