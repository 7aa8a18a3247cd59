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

step() { printf '\n==> %s\n' "$*" >&2; }

bench_args=()
if [ "${1:-}" = "--" ]; then shift; bench_args=("$@"); fi

started_pg=""
started_cluster=""
cleanup() {
  if [ -n "$started_cluster" ]; then e2e/controlplane/cluster.sh down >/dev/null 2>&1 || true; fi
  if [ -n "$started_pg" ]; then e2e/postgres.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "building the benchmark (release)"
cargo build --release --locked -p previewd-e2e --bin bench_engine

step "Kubernetes control plane"
if ! e2e/controlplane/cluster.sh status >/dev/null 2>&1; then started_cluster=1; fi
e2e/controlplane/cluster.sh up >&2
eval "$(e2e/controlplane/cluster.sh env)"

step "Postgres"
if ! e2e/postgres.sh status >/dev/null 2>&1; then started_pg=1; fi
eval "$(e2e/postgres.sh up)"

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

step "benchmark"
"$target_dir/release/bench_engine" ${bench_args[@]+"${bench_args[@]}"}
