#!/usr/bin/env bash
# Fuzzes what request bytes reach (server/fuzz) with cargo-fuzz: libFuzzer plus
# AddressSanitizer, on the nightly that server/fuzz/rust-toolchain.toml pins,
# each target for FUZZ_SECONDS (default 60): request_parsers (every parser;
# seeds in server/fuzz/seeds) and refused_requests (a refused request gets its
# complete answer over a real connection; seeds in server/fuzz/seeds-refused).
# Installs cargo-fuzz (into $SLUICE_CACHE) and that nightly when missing.
# Prints the number of executions;
# exits non-zero, leaving the crashing input under server/fuzz/artifacts/, on a
# crash, a timeout or running out of memory.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}

pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' server/fuzz/rust-toolchain.toml)
toolchain=$pinned
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
  # An installed `nightly` built on the pinned date is the pinned toolchain
  # under its moving name: use it. (rustup refuses to link it under the
  # pinned name, which it reserves for the official download.) Otherwise
  # install the pinned nightly where rustup can download.
  date=${pinned#nightly-}
  installed=$(rustc +nightly --version 2>/dev/null || true)
  if [[ $installed == *" $date)" ]]; then
    echo "fuzz: $pinned is the installed nightly ($installed); using it"
    toolchain=nightly
  elif ! rustup toolchain install "$pinned" --profile minimal; then
    echo "fuzz: cannot get $pinned (pinned in server/fuzz/rust-toolchain.toml):" \
      "rustup could not install it and the installed nightly is '${installed:-none}'." \
      "Install that nightly, or move the pin to the installed nightly's date." >&2
    exit 1
  fi
fi
if [ ! -x "$cache/cargo-fuzz/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into $cache/cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$cache/cargo-fuzz"
fi
export PATH=$cache/cargo-fuzz/bin:$PATH

# libFuzzer adds new inputs to the first corpus folder: keep that one out of git,
# and read the checked-in seeds from the second.
for run in request_parsers:seeds refused_requests:seeds-refused; do
  target=${run%%:*}
  seeds=server/fuzz/${run#*:}
  corpus=target/fuzz/corpus/$target
  mkdir -p "$corpus"
  log=target/fuzz/$target.log
  echo "fuzz: $target for ${seconds}s (log: $log)"
  status=0
  cargo "+$toolchain" fuzz run "$target" --fuzz-dir server/fuzz --target-dir target/fuzz \
    "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz: $target FAILED (exit $status); the input is under server/fuzz/artifacts/" >&2
    exit "$status"
  fi
  echo "fuzz: $target: no crash"
done
