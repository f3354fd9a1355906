#!/usr/bin/env bash
# Installs what building and testing Sluice needs, caching it under
# $SLUICE_CACHE (default ~/.cache/sluice) so that only the first run is slow:
#   - a Python virtual environment with scripts/requirements.txt, a lock with a
#     version and hashes for every package (ONNX Runtime, fixture generators,
#     third-party protocol clients), so fixtures are byte-identical everywhere;
#   - the ONNX Runtime shared library from the onnxruntime wheel, copied beside
#     the server binaries in target/{debug,release}/ where sluice-server finds it;
#   - the fixture models (server/fixtures/generate.py);
#   - the S3 server the S3 tests run against (s3s-fs, pinned; e2e/s3/deps.sh);
#   - the Kafka broker the Kafka tests run against (Apache Kafka's jars, pinned in
#     e2e/kafka/pom.xml; e2e/kafka/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${SLUICE_CACHE:-$HOME/.cache/sluice}

# apt_install PACKAGE...: Debian's packages, as root or through sudo.
apt_install() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# promtool (Debian's prometheus package) checks the alert rules in the tests.
if ! command -v promtool >/dev/null 2>&1; then
  echo "deps: installing Debian's prometheus package (promtool)"
  apt_install prometheus
fi
# `python3 -m venv` needs ensurepip, which Debian and Ubuntu ship apart from python3.
if ! python3 -c 'import ensurepip' 2>/dev/null; then
  echo "deps: installing Debian's python3-venv (python3 -m venv needs it)"
  apt_install python3-venv
fi
venv=$cache/venv
scripts/locked-venv.sh "$venv" scripts/requirements.txt

library=$("$venv/bin/python" - <<'PY'
import glob, os, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
print(sorted(glob.glob(os.path.join(capi, "libonnxruntime.so*")))[0])
PY
)
for profile in debug release; do
  mkdir -p "target/$profile"
  if ! cmp -s "$library" "target/$profile/libonnxruntime.so"; then
    cp "$library" "target/$profile/libonnxruntime.so"
  fi
done

models=server/fixtures/models
if [ ! -f "$models/.generated" ] || [ server/fixtures/generate.py -nt "$models/.generated" ]; then
  echo "deps: generating fixture models into $models"
  "$venv/bin/python" server/fixtures/generate.py --out "$models"
  touch "$models/.generated"
fi

# The S3 tests' server: built once with cargo (a few minutes), then reused.
e2e/s3/deps.sh >/dev/null
# The Kafka tests' broker: jars from Maven Central, copied once (about 15 s), then reused.
e2e/kafka/deps.sh >/dev/null
