# shellcheck shell=bash
# What the benchmark scripts (e2e/bench/*.sh) share. Sourced from the repository's root, after
# `set -euo pipefail`:
#
#   step TEXT             a heading, on stderr
#   bench_args_from "$@"  the arguments after a leading `--`, into the array bench_args
#   start_postgres        the private Postgres of e2e/postgres.sh, started when it is not running
#                         (and then stopped on exit); exports PREVIEWD_TEST_POSTGRES_URL
#   start_cluster         the local control plane of e2e/controlplane/cluster.sh, likewise;
#                         exports its variables
#   target_dir            cargo's target folder, on stdout

step() { printf '\n==> %s\n' "$*" >&2; }

# shellcheck disable=SC2034 # read by the scripts that source this file
bench_args=()
bench_args_from() {
  # shellcheck disable=SC2034
  if [ "${1:-}" = "--" ]; then shift; bench_args=("$@"); fi
}

started_pg=""
started_cluster=""
stop_started() {
  if [ -n "$started_cluster" ]; then e2e/controlplane/cluster.sh down >/dev/null 2>&1 || true; fi
  if [ -n "$started_pg" ]; then e2e/postgres.sh down >/dev/null 2>&1 || true; fi
}
trap stop_started EXIT

start_postgres() {
  step "Postgres"
  if ! e2e/postgres.sh status >/dev/null 2>&1; then started_pg=1; fi
  eval "$(e2e/postgres.sh up)"
}

start_cluster() {
  step "Kubernetes control plane"
  if ! e2e/controlplane/cluster.sh status >/dev/null 2>&1; then started_cluster=1; fi
  e2e/controlplane/cluster.sh up >&2
  eval "$(e2e/controlplane/cluster.sh env)"
}

target_dir() {
  cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}
