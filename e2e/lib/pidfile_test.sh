#!/usr/bin/env bash
# Tests of e2e/lib/pidfile.sh, run by e2e/test.sh: which pid files count as a running service.
set -euo pipefail
# shellcheck source=SCRIPTDIR/pidfile.sh
. "$(dirname "${BASH_SOURCE[0]}")/pidfile.sh"

tmp=$(mktemp -d)
needle="$tmp/state"
child=""
trap 'if [[ -n $child ]]; then kill "$child" 2>/dev/null || true; fi; rm -rf "$tmp"' EXIT
failures=0
# check WHAT COMMAND...: COMMAND must succeed. refuse WHAT COMMAND...: it must fail, and for a
# reason of its own (status 1), not because it could not run (127).
check() {
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what" >&2; failures=$((failures + 1)); fi
}
refuse() {
  local what=$1 rc=0
  shift
  "$@" >/dev/null || rc=$?
  if ((rc == 1)); then echo "ok: $what"; else echo "FAILED: $what (status $rc)" >&2; failures=$((failures + 1)); fi
}

# A stand-in service: its command line names its state folder, as the real ones do. It waits in
# a builtin (a read from a FIFO nobody writes), so killing it leaves no child behind.
mkfifo "$tmp/fifo"
# shellcheck disable=SC2016
printf 'read -r -t 300 _ <>"$1/fifo" || true\n' >"$tmp/service.sh"
bash "$tmp/service.sh" "$tmp" "$needle" </dev/null >/dev/null 2>&1 &
child=$!
sleep 1.2 # the pid files below are then written a second or more after it started

echo "$child" >"$tmp/current.pid"
check "a file written after its process started names that process" \
  test "$(pid_running_with "$tmp/current.pid" "$needle")" = "$child"
refuse "a process whose command line does not name the folder is not the service" \
  pid_running_with "$tmp/current.pid" /elsewhere

# Before this boot is also before the process started: the boot check decides the same, but
# without reading the /proc entry of whatever process has that number now.
echo "$child" >"$tmp/before-boot.pid"
touch -d 2020-01-01 "$tmp/before-boot.pid"
refuse "a file from before this boot is stale" pid_running_with "$tmp/before-boot.pid" "$needle"

echo "$child" >"$tmp/reused.pid"
touch -d "@$(($(date +%s) - 600))" "$tmp/reused.pid"
refuse "a file older than the process it names is stale (the pid was reused)" \
  pid_running_with "$tmp/reused.pid" "$needle"

echo "not a pid" >"$tmp/garbage.pid"
refuse "a file without a pid names nothing" pid_running_with "$tmp/garbage.pid" "$needle"
refuse "a missing file names nothing" pid_running_with "$tmp/missing.pid" "$needle"

refuse "a running process has not exited" pid_exited "$child"
kill "$child"
wait "$child" 2>/dev/null || true
check "a reaped process has exited" pid_exited "$child"
refuse "the file of an exited process names nothing" pid_running_with "$tmp/current.pid" "$needle"
child=""

# A zombie: its parent execs a program that never reaps children (bash itself reaps its own at
# once, so a child of this script never stays a zombie for long).
bash -c 'bash -c "exit 3" & echo "$!" >"$1"; exec sleep 30' _ "$tmp/zombie.pid" </dev/null >/dev/null 2>&1 &
child=$!
for _ in $(seq 100); do
  [[ -s $tmp/zombie.pid && $(stat_fields "$(<"$tmp/zombie.pid")") == Z* ]] && break
  sleep 0.05
done
check "a zombie has exited" pid_exited "$(<"$tmp/zombie.pid")"
kill "$child"
wait "$child" 2>/dev/null || true
child=""

if ((failures > 0)); then
  echo "pidfile_test.sh: $failures check(s) failed" >&2
  exit 1
fi
