#!/usr/bin/env bash
# The end-to-end benchmark: the previewd binary (release build, embedded SQLite) against the local
# Kubernetes control plane and the GitHub stand-in. Prints, from a signed `pull_request`
# delivery accepted to the `success` deployment status sent to GitHub, p50/p99/max for pull
# requests opened one after another (20) and all at once (50), and from `closed` accepted to the
# namespace gone. See e2e/bench/README.md.
#
#   e2e/bench/story.sh                        the defaults
#   e2e/bench/story.sh -- --sequential 10 --burst 20
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/../lib/bench.sh
. e2e/lib/bench.sh
bench_args_from "$@"

step "building previewd and the benchmark (release)"
cargo build --release --locked -p previewd -p previewd-e2e --bin previewd --bin bench_story
npm ci --prefix e2e --no-audit --no-fund --loglevel=error

start_cluster

target_dir=$(target_dir)

step "benchmark"
BENCH_PREVIEWD_BIN="$target_dir/release/previewd" "$target_dir/release/bench_story" ${bench_args[@]+"${bench_args[@]}"}
