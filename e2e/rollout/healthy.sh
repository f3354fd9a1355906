#!/usr/bin/env bash
# Healthy canaries in a row (default 20, ROUNDS to change): mlp v1 and v2 alternately,
# two healthy versions of the same network (v2 is v1 retrained: they pick the same
# class on about 92% of rows), so every canary is healthy, rolled out with the default
# checks and thresholds (prediction agreement included) but one short step, under
# steady traffic. Prints each promotion's last prediction-agreement PSI.
# Prints how many were wrongly rolled back (the goal is none) and exits non-zero
# when any was. Uses the running local cluster or starts (and stops) one.
set -euo pipefail
REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=e2e/operator/lib.sh
source "$REPO_ROOT/e2e/operator/lib.sh"
# shellcheck source=e2e/rollout/lib.sh
source "$REPO_ROOT/e2e/rollout/lib.sh"
ROUNDS=${ROUNDS:-20}

rollout_setup

# Default checks and thresholds; one 10 s step so that 20 rounds take minutes.
SPEC='{canary: {steps: [50], stepSeconds: 10}}'
apply_isvc mlp/1 "$SPEC"
wait_until 60 "status names the first revision" revision_set
wait_until 180 "the first revision becomes stable" stable_is "$(isvc_field '{.status.revision}')"
start_callers "$ISVC" 20

wrong=0
current=mlp/1
for ((round = 1; round <= ROUNDS; round++)); do
    candidate=mlp/2
    [[ $current == mlp/2 ]] && candidate=mlp/1
    if rollout "$candidate" "$SPEC" Promoted 240; then
        psi=$(isvc_field '{.status.rollout.checks[?(@.name=="prediction-agreement")].value}')
        say "round $round/$ROUNDS: $candidate promoted ${T_END}s after apply (prediction-agreement PSI ${psi:-none})"
        current=$candidate
    else
        wrong=$((wrong + 1))
        say "round $round/$ROUNDS: $candidate NOT promoted: $(isvc_field '{.status.rollout.message}')"
        # Back to the stable model; the next round tries the candidate again.
        apply_isvc "$current" "$SPEC"
        sleep 5
    fi
done
say "healthy canaries wrongly rolled back: $wrong of $ROUNDS"
((wrong == 0))
