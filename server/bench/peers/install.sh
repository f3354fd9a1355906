#!/usr/bin/env bash
# Installs the Python peers of `make bench-peers` from PyPI, one virtual environment
# per folder beside this script that holds a requirements.txt (the seed's FastAPI
# app, MLServer, KServe, and the plotting in report/), into
# $SLUICE_CACHE/peers-venv/<folder>. They cannot share one: the newest MLServer
# and the newest KServe need Starlette versions that do not overlap. Each lock
# (made by `make bench-peers-lock`) is installed as the project's own is, by
# scripts/locked-venv.sh.
set -euo pipefail
cd "$(dirname "$0")"

cache=${SLUICE_CACHE:-$HOME/.cache/sluice}
for requirements in */requirements.txt; do
  ../../../scripts/locked-venv.sh "$cache/peers-venv/${requirements%/requirements.txt}" "$requirements"
done
