#!/usr/bin/env bash
# The forward-authentication benchmark: the release previewd binary with 1,000 environments in
# its store; p50/p99/max of the decision on a visit (GET /_previewd/auth?mode=nginx, as nginx's
# auth_request asks it) for each kind of visitor, one at a time and 8 at once, on SQLite and
# Postgres. See e2e/bench/README.md.
#
#   e2e/bench/access.sh                     both stores, with the defaults
#   e2e/bench/access.sh -- ARGS             passes ARGS to the benchmark
#                                           (e.g. -- --store sqlite --environments 5000)
#
# It starts the control plane (previewd serves the endpoint only with a policy, which starts
# its engine) and the private Postgres of e2e/postgres.sh when they are not running, and stops
# what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/../lib/bench.sh
. e2e/lib/bench.sh
bench_args_from "$@"

step "building previewd and the benchmark (release)"
cargo build --release --locked -p previewd -p previewd-e2e --bin previewd --bin bench_access

start_cluster

start_postgres
target_dir=$(target_dir)

step "benchmark"
"$target_dir/release/bench_access" --previewd "$target_dir/release/previewd" ${bench_args[@]+"${bench_args[@]}"}
