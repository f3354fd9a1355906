# Security of the serving path (server/src/security, operator/src/security.rs):
# fuzzing the request parsers, and what authentication and rate limiting cost.
# The security tests themselves run in test-rust (server/tests/security.rs) and
# test-operator (operator/tests/{build_fixtures,rbac}.rs).
# Included by the root Makefile.

FUZZ_SECONDS ?= 60
TEST_TARGETS += fuzz
.PHONY: fuzz bench-security

## fuzz: fuzz the request parsers and the refusal path (a refused request gets its whole answer) with cargo-fuzz (nightly, ASan), each for FUZZ_SECONDS (default 60)
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

## bench-security: CPU per request with authentication + rate limiting on vs off, servers loaded side by side (prints figures)
bench-security: build
	$(CARGO) build --release -p sluice-server --examples
	taskset -c 1 target/release/examples/bench_security
