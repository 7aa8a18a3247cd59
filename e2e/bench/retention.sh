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

step() { printf '\n==> %s\n' "$*" >&2; }

bench_args=()
if [ "${1:-}" = "--" ]; then shift; bench_args=("$@"); fi

started_pg=""
cleanup() {
  if [ -n "$started_pg" ]; then e2e/postgres.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "building the benchmark (release)"
cargo build --release --locked -p previewd-e2e --bin bench_retention

step "Postgres"
if ! e2e/postgres.sh status >/dev/null 2>&1; then started_pg=1; fi
eval "$(e2e/postgres.sh up)"

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

step "benchmark"
"$target_dir/release/bench_retention" ${bench_args[@]+"${bench_args[@]}"}
