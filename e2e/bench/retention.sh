#!/usr/bin/env bash
# The retention benchmark: the database's size after simulated days of 100 live environments,
# with the retention sweep at its defaults and without it, on SQLite and Postgres.
# See e2e/bench/README.md.
#
#   e2e/bench/retention.sh                  everything, with the defaults
#   e2e/bench/retention.sh -- ARGS          passes ARGS to the benchmark
#                                           (e.g. -- --store sqlite --days 7 --environments 200)
#
# It starts the private Postgres of e2e/postgres.sh when it is not running, and stops it if so.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/../lib/bench.sh
. e2e/lib/bench.sh
bench_args_from "$@"

step "building the benchmark (release)"
cargo build --release --locked -p previewd-e2e --bin bench_retention

start_postgres

target_dir=$(target_dir)

step "benchmark"
"$target_dir/release/bench_retention" ${bench_args[@]+"${bench_args[@]}"}
