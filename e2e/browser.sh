#!/usr/bin/env bash
# The dashboard's browser tests' Chromium: Debian's `chromium` package (installed with apt-get
# when missing; nothing is downloaded by the tests themselves), driven by playwright-core.
#
#   e2e/browser.sh up      install when missing; print `export PREVIEWD_TEST_CHROMIUM=...`
#   e2e/browser.sh status  exit 0 when Chromium is there
set -euo pipefail
say() { printf '[browser] %s\n' "$*" >&2; }

find_chromium() { command -v chromium || command -v chromium-browser || true; }

case "${1:-}" in
  up)
    found=$(find_chromium)
    if [ -z "$found" ]; then
      if [ "$(id -u)" != 0 ]; then
        say "Chromium is not installed and installing it needs root: apt-get install chromium"
        exit 1
      fi
      say "installing Debian's chromium (about 290 MB, a minute or two)"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
      found=$(find_chromium)
    fi
    [ -n "$found" ] || { say "chromium is still missing after installing it"; exit 1; }
    say "$("$found" --version 2>/dev/null || echo chromium) at $found"
    printf 'export PREVIEWD_TEST_CHROMIUM=%q\n' "$found"
    ;;
  status)
    [ -n "$(find_chromium)" ]
    ;;
  *)
    echo "usage: $0 up|status" >&2
    exit 2
    ;;
esac
