#!/usr/bin/env bash
# locked-venv.sh VENV REQUIREMENTS: makes the Python virtual environment VENV from
# REQUIREMENTS, a lock made by pip-compile that pins every package with hashes. It
# is made again only when it is missing or when Python, pip or a pin or hash
# changed; comments (the lock's header, its "# via" notes) do not count.
# Used by scripts/deps.sh (the project's venv) and server/bench/peers/install.sh
# (one venv per peer).
set -euo pipefail

# The pip that installs every lock (the Makefile's python-lock reads it here too).
PIP_VERSION=26.3

venv=$1
requirements=$2
wanted=$( (python3 --version; echo "pip $PIP_VERSION"; grep -v '^ *#' "$requirements") | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi
echo "locked-venv: installing $requirements into $venv"
started=$SECONDS
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "pip==$PIP_VERSION"
"$venv/bin/pip" install --quiet --require-hashes --no-deps -r "$requirements"
echo "$wanted" > "$venv/.requirements"
echo "locked-venv: $venv ready in $((SECONDS - started)) s"
