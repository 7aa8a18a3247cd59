#!/usr/bin/env bash
# The longer fuzz run: every property target of previewd (tests named fuzz_*) with many more
# cases than the test command's short run (proptest's default, 256 cases per target).
# Targets: the webhook classifier, the /preview command parser, .preview.yaml and the platform
# policy, and DNS name handling. Each input must finish without a panic within its own time
# bound, with a typed error when it is refused; see the test files for the properties.
#
#   e2e/fuzz.sh           100,000 cases per target
#   CASES=N e2e/fuzz.sh   N cases per target
# Prints the time each target file took. A failure prints the minimal failing input and proptest
# stores its seed under the crate's proptest-regressions/ folder, so the next run tries it first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES=${CASES:-100000}
targets=(
  "-p previewd --test fuzz_webhook"
  "-p previewd --test fuzz_commands"
  "-p previewd-environments --test fuzz_yaml"
  "-p previewd-environments --test fuzz_dns"
)
# fuzz_dns_verify_name asks the test BIND (e2e/dns.sh) about the names it builds.
eval "$(e2e/dns.sh up)"
cargo build --release --locked --tests -p previewd -p previewd-environments >&2
for target in "${targets[@]}"; do
  began=$SECONDS
  # shellcheck disable=SC2086 # each entry is a list of cargo arguments
  cargo test --release --locked $target -- fuzz_ >&2
  printf '%s: %s cases per target in %ss\n' "$target" "$PROPTEST_CASES" "$((SECONDS - began))"
done
