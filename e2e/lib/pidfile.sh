# shellcheck shell=bash
# Pid files of the test services, and stopping them (sourced by e2e/postgres.sh, e2e/dns.sh and
# e2e/controlplane/cluster.sh).
#
# Their state folders outlive the process that wrote them: a cache restored on a new machine, a
# container started again on the same host, or /tmp kept over a reboot bring pid files whose
# numbers now name unrelated processes. Reading such a process's /proc/<pid>/cmdline is not
# harmless either (a process stuck with its memory map locked blocks the read), so a pid counts
# only when cheaper facts agree first: the file was written after the machine booted, and the
# process it names had started by the time the file was written (a pid reused later started
# after; a minute of slack covers clock steps, which shift the computed start time).

# When the machine booted, in seconds since the epoch, and the unit of /proc start times: read
# once, because the scripts check their pids in polling loops.
PIDFILE_BOOT_EPOCH=$(awk '$1 == "btime" { print $2 }' /proc/stat)
PIDFILE_CLK_TCK=$(getconf CLK_TCK)

# stat_fields PID: the fields of /proc/PID/stat after the command name (which is in parentheses
# and may hold spaces), so field N of proc(5) is at index N-3.
stat_fields() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  echo "${stat##*) }"
}

# started_epoch PID: when process PID started, in seconds since the epoch (rounded down).
started_epoch() {
  local fields
  read -r -a fields <<<"$(stat_fields "$1")" && ((${#fields[@]} > 19)) || return 1
  # Field 22: start time in clock ticks after boot.
  echo $((PIDFILE_BOOT_EPOCH + fields[19] / PIDFILE_CLK_TCK))
}

# pid_exited PID: true when PID has exited: no such process, or a zombie not yet reaped.
pid_exited() {
  local fields
  read -r -a fields <<<"$(stat_fields "$1")" && ((${#fields[@]} > 0)) || return 0
  [[ ${fields[0]} == Z ]]
}

# pid_running_with PIDFILE NEEDLE: prints the pid named by PIDFILE when that process runs now,
# wrote (or was about to write) that file, and has NEEDLE, a path of its own state folder, in
# its command line.
pid_running_with() {
  local file=$1 needle=$2 pid written started cmdline
  [[ -f $file ]] || return 1
  written=$(stat -c %Y "$file" 2>/dev/null) || return 1
  ((written >= PIDFILE_BOOT_EPOCH)) || return 1
  pid=$(head -n 1 "$file" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  started=$(started_epoch "$pid") || return 1
  ((started <= written + 60)) || return 1
  # A substitution, not a pipe into `grep -q`: under pipefail a writer's SIGPIPE after grep has
  # matched would turn a running process into a false "no".
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$needle"* ]] || return 1
  echo "$pid"
}

# stop_pid NAME PID: SIGTERM, up to 15 s to exit, then SIGKILL; so stopping never hangs.
stop_pid() {
  local name=$1 pid=$2 deadline=$((SECONDS + 15))
  kill -TERM "$pid" 2>/dev/null || return 0
  while ! pid_exited "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if ! pid_exited "$pid"; then
    echo "$name (pid $pid) did not stop in 15s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
}
