#!/usr/bin/env bash
# The admin API benchmark: the release previewd binary with 1,000 environments and 30 days of
# their transitions in its store; p50/p99/max of GET /api/v1/environments (first page, every
# page, filtered), GET /api/v1/environments/{id} and GET /api/v1/usage, on SQLite and Postgres.
# See e2e/bench/README.md.
#
#   e2e/bench/api.sh                        both stores, with the defaults
#   e2e/bench/api.sh -- ARGS                passes ARGS to the benchmark
#                                           (e.g. -- --store sqlite --environments 5000)
#
# It starts the private Postgres of e2e/postgres.sh when it is not running, and stops it if so.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/../lib/bench.sh
. e2e/lib/bench.sh
bench_args_from "$@"

step "building previewd and the benchmark (release)"
cargo build --release --locked -p previewd -p previewd-e2e --bin previewd --bin bench_api

start_postgres
target_dir=$(target_dir)

step "benchmark"
"$target_dir/release/bench_api" --previewd "$target_dir/release/previewd" ${bench_args[@]+"${bench_args[@]}"}
