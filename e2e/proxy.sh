#!/usr/bin/env bash
# The reverse proxy of the forward-authentication tests: Debian's `nginx` package (installed with
# apt-get when missing; nothing is downloaded by the tests themselves), whose build includes the
# `auth_request` module. The tests start their own nginx processes, each with its own
# configuration in a temporary directory (e2e/src/proxy.rs); the package's own server is never
# left running.
#
#   e2e/proxy.sh up      install when missing; print `export PREVIEWD_TEST_NGINX=...`
#   e2e/proxy.sh status  exit 0 when nginx is there
set -euo pipefail
say() { printf '[proxy] %s\n' "$*" >&2; }

find_nginx() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }

# The pid of the system nginx (the package's default site on port 80), when one runs.
system_nginx_pid() {
  local pid
  pid=$(cat /run/nginx.pid 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# Stops the system nginx that installing the package started (an install where no policy-rc.d
# forbids starting services starts it): by its init script when there is one, else by its pid.
stop_system_nginx() {
  local pid
  pid=$(system_nginx_pid)
  [ -n "$pid" ] || return 0
  say "installing nginx started the package's own server (pid $pid); stopping it"
  service nginx stop >/dev/null 2>&1 || true
  if [ -n "$(system_nginx_pid)" ]; then "$1" -s stop >/dev/null 2>&1 || true; fi
  for _ in $(seq 50); do
    [ -n "$(system_nginx_pid)" ] || return 0
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
}

case "${1:-}" in
  up)
    found=$(find_nginx)
    if [ -z "$found" ]; then
      if [ "$(id -u)" != 0 ]; then
        say "nginx is not installed and installing it needs root: apt-get install nginx"
        exit 1
      fi
      running_before=$(system_nginx_pid)
      say "installing Debian's nginx (a few MB)"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >&2
      found=$(find_nginx)
      [ -n "$found" ] || { say "nginx is still missing after installing it"; exit 1; }
      # Only a server this install started is stopped, never one that ran before it.
      if [ -z "$running_before" ]; then stop_system_nginx "$found"; fi
    fi
    [ -n "$found" ] || { say "nginx is missing"; exit 1; }
    # Read whole before grep: `grep -q` closing the pipe early would fail the pipeline.
    built_with=$("$found" -V 2>&1 || true)
    if ! grep -q 'http_auth_request_module' <<<"$built_with"; then
      say "$found is built without the auth_request module (http_auth_request_module is not in" \
        "\`nginx -V\`); the forward-authentication tests need Debian's nginx package, which has it"
      exit 1
    fi
    say "$("$found" -v 2>&1 | sed 's/^nginx version: //') at $found, with http_auth_request_module"
    printf 'export PREVIEWD_TEST_NGINX=%q\n' "$found"
    ;;
  status)
    [ -n "$(find_nginx)" ]
    ;;
  *)
    echo "usage: $0 up|status" >&2
    exit 2
    ;;
esac
