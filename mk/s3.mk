# The S3 server of the tests and the local cluster (e2e/s3): s3s-fs, which verifies
# request signatures. `make deps` installs it; server/tests/common/s3.rs starts one
# per test. Included by the root Makefile.

.PHONY: s3-deps

## s3-deps: install the pinned S3 test server (s3s-fs, e2e/s3/deps.sh) into $SLUICE_CACHE/s3s-fs when missing (also part of deps)
s3-deps:
	@$(REPO_ROOT)/e2e/s3/deps.sh >/dev/null
