# The S3 server of the tests and the local cluster (e2e/s3): s3s-fs, which verifies
# request signatures. `make deps` installs it; server/tests/common/s3.rs starts one
# per Rust test; e2e/s3/s3.sh runs one on the host for the cluster's pods.
# Included by the root Makefile.

S3_SH := $(REPO_ROOT)/e2e/s3/s3.sh
.PHONY: s3-deps s3-up s3-down

## s3-deps: install the pinned S3 test server (s3s-fs, e2e/s3/deps.sh) into $SLUICE_CACHE/s3s-fs when missing (also part of deps)
s3-deps:
	@$(REPO_ROOT)/e2e/s3/deps.sh >/dev/null

## s3-up: start (or reuse) the local cluster's S3 server on the bridge address (SLUICE_S3_ADDRESS, SLUICE_S3_PORT to move it); prints and writes .cluster/s3/env
s3-up: s3-deps
	@REPO_ROOT=$(REPO_ROOT) $(S3_SH) start

## s3-down: stop the local cluster's S3 server (its objects stay until cluster-down)
s3-down:
	@REPO_ROOT=$(REPO_ROOT) $(S3_SH) stop
