#!/usr/bin/env bash
# The README's first command: a local demo of previewd on the embedded SQLite store.
# Builds previewd, installs GitHub's published example payloads (npm), starts `previewd serve`,
# sends it a signed pull request delivery and prints what it recorded, then stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> building previewd and the demo driver" >&2
cargo build --quiet -p previewd -p previewd-e2e --bin previewd --bin demo
npm ci --prefix e2e --no-audit --no-fund --loglevel=error >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PREVIEWD_BIN="$target_dir/debug/previewd" exec "$target_dir/debug/demo"
