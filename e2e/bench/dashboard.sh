#!/usr/bin/env bash
# The dashboard benchmark: the release previewd binary with 1,000 environments and 30 days of
# their transitions in its store; p50/p99 of the environments page (for an API token and a
# signed-in person), searched and filtered, and of one environment's page; the time from a change
# in the store to its event on the dashboard's stream, with 1 and 200 streams open; previewd's
# memory and CPU with 200 streams open. On SQLite and Postgres. See e2e/bench/README.md.
#
#   e2e/bench/dashboard.sh                  both stores, with the defaults
#   e2e/bench/dashboard.sh -- ARGS          passes ARGS to the benchmark
#                                           (e.g. -- --store sqlite --streams 500)
#
# It starts the private Postgres of e2e/postgres.sh when it is not running, and stops it if so.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/../lib/bench.sh
. e2e/lib/bench.sh
bench_args_from "$@"

step "building previewd and the benchmark (release)"
cargo build --release --locked -p previewd -p previewd-e2e --bin previewd --bin bench_dashboard

start_postgres
target_dir=$(target_dir)

step "benchmark"
"$target_dir/release/bench_dashboard" --previewd "$target_dir/release/previewd" ${bench_args[@]+"${bench_args[@]}"}
