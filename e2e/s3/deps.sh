#!/usr/bin/env bash
# Installs the S3 server the tests run against and prints its path: s3s-fs, pinned,
# built with `cargo install --locked` into $SLUICE_CACHE/s3s-fs (first run only,
# 4 to 7 minutes on 2 cores), as the Makefile's lint-tools installs cargo-deny.
#   deps.sh           install it when missing (or of another version), print the binary
#   deps.sh --cached  print it only if the pinned version is installed; never build
#
# Why s3s-fs: the S3 tests must prove that requests are signed correctly, and moto
# (what server/tests/fetch.rs used before) accepts any signature or none. s3s-fs
# (Apache-2.0, from the s3s project; crates.io) serves a folder over the S3 API and,
# given --access-key/--secret-key, verifies AWS Signature Version 4 in the
# Authorization header and in presigned URLs (X-Amz-Signature, X-Amz-Expires) and
# refuses unsigned requests; checked by hand with requests signed with a wrong
# secret, a tampered and an expired presigned URL (all 403) and by
# server/tests/s3_harness.rs. It has what the tests use: CreateBucket, PutObject,
# GetObject, HeadObject, DeleteObject, ListObjectsV2 (prefix, continuation,
# delimiter) and multipart uploads. One small Rust binary, no JVM or Go toolchain.
# 0.14.1 is the newest release that builds with this repository's Rust (1.95).
set -euo pipefail

S3S_FS_VERSION=0.14.1
root="${SLUICE_CACHE:-$HOME/.cache/sluice}/s3s-fs"
bin="$root/bin/s3s-fs"

if [[ "$("$bin" --version 2>/dev/null)" != "s3s-fs $S3S_FS_VERSION" ]]; then
    [[ ${1:-} == --cached ]] && exit 1
    echo "s3-deps: installing s3s-fs $S3S_FS_VERSION into $root (first run only, a few minutes)" >&2
    # Without CARGO_TARGET_DIR, cargo builds in a temporary folder and removes it, so
    # a shared target directory does not keep s3s-fs's dependencies.
    env -u CARGO_TARGET_DIR "${CARGO:-cargo}" install s3s-fs --locked --version "$S3S_FS_VERSION" \
        --features binary --root "$root" >&2
fi
echo "$bin"
