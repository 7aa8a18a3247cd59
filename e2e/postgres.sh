#!/usr/bin/env bash
# A private PostgreSQL server for previewd's tests and benchmarks, on a loopback port, from
# Debian's packages (installed when missing). It never touches a system cluster.
#
#   e2e/postgres.sh up      start it (reuse it when already running); prints `export` lines
#   e2e/postgres.sh env     print the `export` lines
#   e2e/postgres.sh status  exit 0 when the server answers
#   e2e/postgres.sh down    stop it and remove its data
#   e2e/postgres.sh restart [S]  stop it (fast: connections are cut) for S seconds (5), then
#                           start it again with its data: the fault tests' outage
#
# Settings: PREVIEWD_PG_PORT (default 19432: below the kernel's ephemeral range and the control
# plane's 20000-31999, so no other socket holds it when the server starts), PREVIEWD_PG_DIR (default $TMPDIR/previewd-postgres;
# outside $HOME because the server runs as the `postgres` user when this runs as root).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/pidfile.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pidfile.sh"

port=${PREVIEWD_PG_PORT:-19432}
dir=${PREVIEWD_PG_DIR:-${TMPDIR:-/tmp}/previewd-postgres}
url="postgres://previewd@127.0.0.1:${port}/postgres"

say() { echo "postgres.sh: $*" >&2; }

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bin" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      say "PostgreSQL is not installed and installing it needs root: apt-get install postgresql"
      exit 1
    fi
    say "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # The package's own cluster is not used; tests run a private one below.
    apt-get install -y -qq postgresql >&2
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$bin"
}

# Runs a server command as the `postgres` user when we are root (initdb refuses root).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

print_env() {
  echo "export PREVIEWD_TEST_POSTGRES_URL=${url}"
}

# Client authentication: the test role `previewd` connects without a password; every other role
# must give its password (SCRAM), so that tests can create a role with a real password and check
# what previewd does with it (a wrong one must be refused, and never shown). Rewritten on every
# `up`; a running server rereads it (a reload keeps its connections).
write_hba() {
  local bin=$1 hba="$dir/data/pg_hba.conf" wanted
  wanted=$(cat <<'HBA'
# Written by e2e/postgres.sh.
local all all trust
host all previewd 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
)
  if [ "$(cat "$hba" 2>/dev/null)" = "$wanted" ]; then return 1; fi
  printf '%s\n' "$wanted" >"$hba"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$hba"; fi
}

up() {
  local bin
  bin=$(pg_bin)
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    if [ -f "$dir/data/PG_VERSION" ] && write_hba "$bin"; then
      as_owner "$bin/pg_ctl" -D "$dir/data" reload >/dev/null
    fi
    print_env
    return
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U previewd -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || {
      say "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
  fi
  write_hba "$bin" || true
  # A server of this data folder that does not answer on $port (started on another port, or
  # hung) is stopped first. Only when its pid is really that server: a postmaster.pid left from
  # another boot may name an unrelated process now, which pg_ctl would signal.
  if pid_running_with "$dir/data/postmaster.pid" "$dir/data" >/dev/null; then
    say "stopping the server of $dir that does not answer on port $port"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  elif [ -f "$dir/data/postmaster.pid" ]; then
    # Left by a server that is gone; the server would refuse to start if the pid is alive now.
    rm -f "$dir/data/postmaster.pid"
  fi
  start_server "$bin"
  say "running on 127.0.0.1:${port} (data in $dir)"
  print_env
}

start_server() {
  local bin=$1
  if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB" >/dev/null; then
    say "the server did not start; its log:"; tail -n 50 "$dir/server.log" >&2; exit 1
  fi
}

restart() {
  local seconds=${1:-5} bin
  bin=$(pg_bin)
  [ -f "$dir/data/PG_VERSION" ] || { say "no server to restart: run \`$0 up\` first"; exit 1; }
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  say "stopped for ${seconds}s"
  sleep "$seconds"
  start_server "$bin"
  say "running again on 127.0.0.1:${port}"
}

down() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  env) print_env ;;
  status)
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$bin" ] && "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" ;;
  down) down ;;
  restart) restart "${2:-5}" ;;
  *) echo "usage: $0 up|env|status|down|restart [S]" >&2; exit 2 ;;
esac
