#!/usr/bin/env bash
# Installs the Python peers of `make bench-peers` from PyPI, one virtual environment
# per folder beside this script that holds a requirements.txt (the seed's FastAPI
# app, MLServer, KServe, and the plotting in report/), into
# $SLUICE_CACHE/peers-venv/<folder>. They cannot share one: the newest MLServer
# and the newest KServe need Starlette versions that do not overlap.
#
# Each lock pins every package with hashes (made by `make bench-peers-lock`, as
# scripts/deps.sh installs scripts/requirements.txt). A venv is made again only
# when it is missing or when Python, pip or a pin or hash changed; comments (the
# lock's header, its "# via" notes) do not count.
set -euo pipefail
cd "$(dirname "$0")"

cache=${SLUICE_CACHE:-$HOME/.cache/sluice}
# The pip the project's own venv is made with.
pip_version=$(sed -n 's/^PIP_VERSION=//p' ../../../scripts/deps.sh)

for requirements in */requirements.txt; do
  peer=${requirements%/requirements.txt}
  venv=$cache/peers-venv/$peer
  wanted=$( (python3 --version; echo "pip $pip_version"; grep -v '^ *#' "$requirements") | sha256sum | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$wanted" ]; then
    continue
  fi
  echo "bench-peers: installing $peer's packages into $venv"
  started=$SECONDS
  rm -rf "$venv"
  mkdir -p "$cache/peers-venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "pip==$pip_version"
  "$venv/bin/pip" install --quiet --require-hashes --no-deps -r "$requirements"
  echo "$wanted" > "$venv/.requirements"
  echo "bench-peers: $peer installed in $((SECONDS - started)) s"
done
