#!/usr/bin/env bash
# The README's first command: previewd end to end on the embedded SQLite store.
#
# Builds previewd, brings up the local Kubernetes control plane (the first run builds it from
# source; later runs reuse the build) unless KUBECONFIG already names a reachable cluster,
# starts `previewd serve` with the demo policy (e2e/demo/), sends it a signed pull request
# delivery, shows the environment being provisioned and torn down, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*" >&2; }

say "building previewd and the demo driver"
cargo build --quiet -p previewd -p previewd-e2e --bin previewd --bin demo
npm ci --prefix e2e --no-audit --no-fund --loglevel=error >&2

started_cluster=""
cleanup() {
  if [ -n "$started_cluster" ]; then
    say "stopping the local control plane"
    e2e/controlplane/cluster.sh down >&2 || true
  fi
}
trap cleanup EXIT

if [ -n "${KUBECONFIG:-}" ] && [ -z "${PREVIEWD_DEMO_LOCAL:-}" ]; then
  say "using the cluster in \$KUBECONFIG (previewd runs with your credentials)"
  export DEMO_PREVIEWD_KUBECONFIG="$KUBECONFIG" DEMO_VIEWER_KUBECONFIG="$KUBECONFIG"
else
  if ! e2e/controlplane/cluster.sh status >/dev/null 2>&1; then started_cluster=1; fi
  say "bringing up the local control plane"
  e2e/controlplane/cluster.sh up >&2
  eval "$(e2e/controlplane/cluster.sh env)"
  # previewd gets the least-privilege identity the Helm chart grants; the demo looks with admin.
  export DEMO_PREVIEWD_KUBECONFIG="$PREVIEWD_TEST_KUBECONFIG" DEMO_VIEWER_KUBECONFIG="$PREVIEWD_TEST_KUBECONFIG_ADMIN"
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# Errors read as messages, not backtraces.
RUST_LIB_BACKTRACE=0 DEMO_PREVIEWD_BIN="$target_dir/debug/previewd" "$target_dir/debug/demo"
