#!/usr/bin/env bash
# Runs every check and test of previewd, from a clean checkout on a fresh machine:
#   formatting, clippy, then all tests on SQLite and on a real Postgres, against a real
#   Kubernetes control plane built from pinned upstream releases.
# It installs and starts what it needs (Postgres, BIND 9 and Chromium from Debian's packages, the
# npm test fixtures, the control plane) and stops the services it started when it ends.
#
#   e2e/test.sh              everything
#   e2e/test.sh -- ARGS      passes ARGS to `cargo test` (e.g. `-- -p previewd --test webhook`)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# within SECONDS WHAT COMMAND...: runs COMMAND; if it has not finished in SECONDS, prints the
# processes still running, stops it and returns 124, which ends the run unless the caller handles
# it. So a hang is a named failure with evidence rather than a CI job killed at its own limit. The
# limits are far above the slowest run measured (see README.md): a slow but working run passes.
within() {
  local limit=$1 what=$2 rc=0 began=$SECONDS watchdog
  shift 2
  (
    sleep "$limit" >/dev/null 2>&1 # holds no pipe of the run open after the run ends
    printf '\nerror: %s did not finish within %ss; processes still running:\n' "$what" "$limit" >&2
    # Kernel threads (children of pid 2) left out.
    timeout -s KILL 20 ps -eo pid,ppid,etimes,stat,wchan:24,args --forest |
      awk 'NR == 1 || ($1 != 2 && $2 != 2)' >&2 || true
  ) &
  watchdog=$!
  timeout --kill-after=30 "$((limit + 5))" "$@" || rc=$?
  kill "$watchdog" 2>/dev/null || true
  wait "$watchdog" 2>/dev/null || true
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "error: stopped $what after ${limit}s" >&2
    return 124
  fi
  printf '    (%s: %ss)\n' "$what" "$((SECONDS - began))" >&2
  return "$rc"
}

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

# What the machine has, so a failure from a full disk or a loaded machine can be told apart.
step "machine"
{ nproc; uptime; df -h . "${TMPDIR:-/tmp}" "${CARGO_TARGET_DIR:-target}" 2>/dev/null || df -h .; } >&2

step "formatting (cargo fmt --check)"
within 600 "cargo fmt" cargo fmt --all --check

step "test scripts' own checks (e2e/lib/pidfile_test.sh)"
within 120 "pidfile_test.sh" e2e/lib/pidfile_test.sh >&2

step "lints (cargo clippy --all-targets -- -D warnings)"
within 2400 "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings

step "test fixtures (npm ci in e2e/)"
within 900 "npm ci" npm ci --prefix e2e --no-audit --no-fund --loglevel=error

step "Postgres"
if ! e2e/postgres.sh status >/dev/null 2>&1; then started_pg=1; fi
pg_env=$(within 900 "e2e/postgres.sh up" e2e/postgres.sh up)
eval "$pg_env"

step "DNS server (BIND 9 on a loopback port)"
if ! e2e/dns.sh status >/dev/null 2>&1; then started_dns=1; fi
dns_env=$(within 900 "e2e/dns.sh up" e2e/dns.sh up)
eval "$dns_env"

step "Chromium (Debian's package, for the dashboard's browser tests)"
browser_env=$(within 900 "e2e/browser.sh up" e2e/browser.sh up)
eval "$browser_env"

step "nginx (Debian's package, the reverse proxy of the forward-authentication tests)"
proxy_env=$(within 900 "e2e/proxy.sh up" e2e/proxy.sh up)
eval "$proxy_env"

step "Kubernetes control plane (the first run builds it from source)"
if ! e2e/controlplane/cluster.sh status >/dev/null 2>&1; then started_cluster=1; fi
within 3600 "building the control plane" e2e/controlplane/cluster.sh build >&2
# One more try after a hang, with the processes printed: a start takes 10 s, so a hang is an
# accident of this machine (a second one fails the run). A start that fails has been retried by
# `up` itself and ends the run.
rc=0
within 600 "starting the control plane" e2e/controlplane/cluster.sh up >&2 || rc=$?
if [ "$rc" = 124 ]; then
  echo "starting the control plane again" >&2
  e2e/controlplane/cluster.sh down >&2 || true
  within 600 "starting the control plane (second try)" e2e/controlplane/cluster.sh up >&2
elif [ "$rc" != 0 ]; then
  exit "$rc"
fi
eval "$(e2e/controlplane/cluster.sh env)"

step "Helm chart (helm lint, helm template: default and production-like values)"
for values in "" charts/previewd/ci/production-values.yaml; do
  "$PREVIEWD_TEST_HELM" lint --strict charts/previewd ${values:+-f "$values"} >&2
  "$PREVIEWD_TEST_HELM" template previewd charts/previewd ${values:+-f "$values"} >/dev/null
done

step "tests"
within 3600 "cargo test" cargo test --workspace --locked --no-fail-fast "${cargo_args[@]}"

# The dashboard's browser tests leave screenshots of each page at desktop and phone widths, for
# a person to look at (not committed).
shots="${CARGO_TARGET_DIR:-target}/tmp/dashboard-screenshots"
if [ -d "$shots" ]; then
  step "screenshots of the dashboard (service/tests/dashboard.rs)"
  ls -1 "$shots"/*.png >&2 || true
fi

step "all checks and tests passed"
