#!/usr/bin/env bash
# Runs every check and test of previewd, from a clean checkout on a fresh machine:
#   formatting, clippy, then all tests on SQLite and on a real Postgres, against a real
#   Kubernetes control plane built from pinned upstream releases.
# It installs and starts what it needs (Postgres and BIND 9 from Debian's packages, the npm test
# fixtures, the control plane) and stops the services it started when it ends.
#
#   e2e/test.sh              everything
#   e2e/test.sh -- ARGS      passes ARGS to `cargo test` (e.g. `-- -p previewd --test webhook`)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

cargo_args=()
if [ "${1:-}" = "--" ]; then shift; cargo_args=("$@"); fi

started_pg=""
started_dns=""
started_cluster=""
cleanup() {
  if [ -n "$started_cluster" ]; then e2e/controlplane/cluster.sh down >/dev/null 2>&1 || true; fi
  if [ -n "$started_dns" ]; then e2e/dns.sh down >/dev/null 2>&1 || true; fi
  if [ -n "$started_pg" ]; then e2e/postgres.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "formatting (cargo fmt --check)"
cargo fmt --all --check

step "lints (cargo clippy --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "test fixtures (npm ci in e2e/)"
npm ci --prefix e2e --no-audit --no-fund --loglevel=error

step "Postgres"
if ! e2e/postgres.sh status >/dev/null 2>&1; then started_pg=1; fi
eval "$(e2e/postgres.sh up)"

step "DNS server (BIND 9 on a loopback port)"
if ! e2e/dns.sh status >/dev/null 2>&1; then started_dns=1; fi
eval "$(e2e/dns.sh up)"

step "Kubernetes control plane (the first run builds it from source)"
if ! e2e/controlplane/cluster.sh status >/dev/null 2>&1; then started_cluster=1; fi
e2e/controlplane/cluster.sh up >&2
eval "$(e2e/controlplane/cluster.sh env)"

step "Helm chart (helm lint, helm template: default and production-like values)"
for values in "" charts/previewd/ci/production-values.yaml; do
  "$PREVIEWD_TEST_HELM" lint --strict charts/previewd ${values:+-f "$values"} >&2
  "$PREVIEWD_TEST_HELM" template previewd charts/previewd ${values:+-f "$values"} >/dev/null
done

step "tests"
cargo test --workspace --locked "${cargo_args[@]}"

step "all checks and tests passed"
