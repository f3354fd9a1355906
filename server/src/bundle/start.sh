#!/bin/sh
# Serves the models of this Sluice edge bundle: no network needed, no Python,
# nothing but this folder (made by `sluice-server bundle`; docs/edge.md).
#
#   ./start                                  REST on 127.0.0.1:8080, gRPC on 127.0.0.1:8081
#   SLUICE_HOST=0.0.0.0 ./start              listen on every interface instead
#   ./start --http-port 9080 --grpc-port 9081
#
# Arguments go to `sluice-server serve` (bin/sluice-server serve --help lists
# them); SLUICE_HOST, SLUICE_HTTP_PORT and SLUICE_GRPC_PORT set the address
# and ports too. The server loads this folder's ONNX Runtime (lib/) and serves
# its model repository (models/). The script runs no other program.
set -eu
case $0 in
*/*) here=${0%/*} ;;
*) here=. ;;
esac
here=$(CDPATH='' cd -- "$here" && pwd -P)
ORT_DYLIB_PATH=$here/lib/libonnxruntime.so
SLUICE_HOST=${SLUICE_HOST:-127.0.0.1}
export ORT_DYLIB_PATH SLUICE_HOST
exec "$here/bin/sluice-server" serve --model-repository "$here/models" "$@"
