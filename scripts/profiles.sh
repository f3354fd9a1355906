#!/usr/bin/env bash
# Writes the reference profile of every fixture model that is monitored (its
# config.yaml names a profile and it ships train.csv with a `target` column),
# using the given sluice-server binary. Skips profiles newer than their inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:?usage: scripts/profiles.sh SLUICE_SERVER_BINARY}

for dir in server/fixtures/models/*/; do
  dir=${dir%/}
  [ -f "$dir/train.csv" ] && [ -f "$dir/config.yaml" ] || continue
  profile=$(sed -n 's/^ *profile: *//p' "$dir/config.yaml" | head -1)
  [ -n "$profile" ] || continue
  if [ "$dir/$profile" -nt "$dir/train.csv" ] && [ "$dir/$profile" -nt "$dir/1/model.onnx" ]; then
    continue
  fi
  echo "profiles: $dir/$profile"
  "$server" profile --model "$dir/1/model.onnx" --data "$dir/train.csv" \
    --label-column target --output "$dir/$profile" 2>/dev/null
done
