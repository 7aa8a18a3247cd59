#!/usr/bin/env bash
# The intake benchmark: signed 25 KB `pull_request` deliveries over loopback against the real
# `POST /webhooks/github` of a release `previewd serve`, on SQLite and on Postgres, and the same
# load against a minimal `@octokit/webhooks` receiver. Prints deliveries/s, p50/p99 latency and
# the ratio. See e2e/bench/README.md.
#
#   e2e/bench/intake.sh                     everything, with the defaults
#   e2e/bench/intake.sh -- ARGS             passes ARGS to the benchmark
#                                           (e.g. -- --duration 30 --connections 128 --targets sqlite)
#
# It starts the private Postgres of e2e/postgres.sh when it is not running and stops it again.
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n==> %s\n' "$*" >&2; }

bench_args=()
if [ "${1:-}" = "--" ]; then shift; bench_args=("$@"); fi

started_pg=""
cleanup() {
  if [ -n "$started_pg" ]; then e2e/postgres.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "building previewd and the benchmark (release)"
cargo build --release --locked -p previewd -p previewd-e2e --bin previewd --bin bench_intake

step "the @octokit/webhooks receiver and the example payloads (npm ci in e2e/)"
npm ci --prefix e2e --no-audit --no-fund --loglevel=error

step "Postgres"
if ! e2e/postgres.sh status >/dev/null 2>&1; then started_pg=1; fi
eval "$(e2e/postgres.sh up)"

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

step "benchmark"
"$target_dir/release/bench_intake" --previewd "$target_dir/release/previewd" ${bench_args[@]+"${bench_args[@]}"}
