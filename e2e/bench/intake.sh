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
# shellcheck source=SCRIPTDIR/../lib/bench.sh
. e2e/lib/bench.sh
bench_args_from "$@"

step "building previewd and the benchmark (release)"
cargo build --release --locked -p previewd -p previewd-e2e --bin previewd --bin bench_intake

step "the @octokit/webhooks receiver and the example payloads (npm ci in e2e/)"
npm ci --prefix e2e --no-audit --no-fund --loglevel=error

start_postgres

target_dir=$(target_dir)

step "benchmark"
"$target_dir/release/bench_intake" --previewd "$target_dir/release/previewd" ${bench_args[@]+"${bench_args[@]}"}
