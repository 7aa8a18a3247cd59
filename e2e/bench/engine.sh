#!/usr/bin/env bash
# The engine benchmark: previewd's reconciler against the local Kubernetes control plane, from
# "desired state stored" to Ready for one environment and for 50 at once, and the time to tear
# 50 down. Prints p50/p99 per environment, the total, where the time goes, and the CPU used.
# See e2e/bench/README.md.
#
#   e2e/bench/engine.sh                     everything, with the defaults (SQLite store)
#   e2e/bench/engine.sh -- ARGS             passes ARGS to the benchmark
#                                           (e.g. -- --store postgres --runs 10 --count 100)
#
# It starts the control plane (e2e/controlplane/cluster.sh) and the private Postgres of
# e2e/postgres.sh when they are not running, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/../lib/bench.sh
. e2e/lib/bench.sh
bench_args_from "$@"

step "building the benchmark (release)"
cargo build --release --locked -p previewd-e2e --bin bench_engine

start_cluster

start_postgres

target_dir=$(target_dir)

step "benchmark"
"$target_dir/release/bench_engine" ${bench_args[@]+"${bench_args[@]}"}
