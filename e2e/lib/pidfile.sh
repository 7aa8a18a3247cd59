# shellcheck shell=bash
# Pid files of the test services (sourced by e2e/postgres.sh, e2e/dns.sh and
# e2e/controlplane/cluster.sh).
#
# Their state folders outlive the machine: a cache restored on a new machine, or /tmp kept over a
# reboot, brings pid files whose numbers now name unrelated processes. Reading such a process's
# /proc entry is not harmless either (a process stuck with its memory map locked blocks the read),
# so a pid file written before this boot is stale without looking at the process at all.

# written_this_boot FILE: true when FILE was last written after the machine booted.
written_this_boot() {
  local btime mtime
  btime=$(awk '$1 == "btime" { print $2 }' /proc/stat)
  mtime=$(stat -c %Y "$1" 2>/dev/null) || return 1
  [[ -n $btime ]] && ((mtime >= btime))
}

# pid_running_with PIDFILE NEEDLE: prints the pid named by PIDFILE when that process runs now,
# was started this boot and has NEEDLE (a path of its own state folder) in its command line.
pid_running_with() {
  local file=$1 needle=$2 pid cmdline
  [[ -f $file ]] && written_this_boot "$file" || return 1
  pid=$(head -n 1 "$file" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  # A substitution, not a pipe into `grep -q`: under pipefail a writer's SIGPIPE after grep has
  # matched would turn a running process into a false "no".
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$needle"* ]] || return 1
  echo "$pid"
}
