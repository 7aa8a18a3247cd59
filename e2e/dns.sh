#!/usr/bin/env bash
# A private authoritative DNS server (BIND 9, from Debian's packages, installed when missing) for
# previewd's DNS tests, on a loopback port. Like a real setup, the zone (`test`) is larger than the
# previews' base domain (`preview.test`), and the TSIG key may change only what previewd needs:
# A, AAAA and CNAME records at or under the base domain (the `update-policy` the README
# documents). Anything else signed with the key is refused. It never touches the machine's
# resolver settings (/etc/resolv.conf) or a system named: it runs its own named with its own
# configuration, folder and port, and no control channel.
#
#   e2e/dns.sh up      start it (reuse it when already running); prints `export` lines
#   e2e/dns.sh env     print the `export` lines
#   e2e/dns.sh status  exit 0 when the server answers for the zone
#   e2e/dns.sh down    stop it and remove its folder
#
# Settings: PREVIEWD_DNS_PORT (default 19353: below the kernel's ephemeral range, where an
# outgoing connection could hold the port when named starts, and below the control plane's
# 20000-31999), PREVIEWD_DNS_DIR (default $TMPDIR/previewd-dns; outside $HOME because named runs
# as the `bind` user when this runs as root).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/pidfile.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pidfile.sh"

port=${PREVIEWD_DNS_PORT:-19353}
dir=${PREVIEWD_DNS_DIR:-${TMPDIR:-/tmp}/previewd-dns}
zone=test
base_domain=preview.test
key_name=previewd

say() { echo "dns.sh: $*" >&2; }

install_bind() {
  if command -v named >/dev/null && command -v tsig-keygen >/dev/null && command -v dig >/dev/null; then
    return
  fi
  if [ "$(id -u)" -ne 0 ]; then
    say "BIND 9 is not installed and installing it needs root: apt-get install bind9 bind9-utils bind9-dnsutils"
    exit 1
  fi
  say "installing BIND 9 from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  # The package would start its own named on port 53; only this script's private one is used.
  # Without a policy-rc.d, a temporary one keeps the package's service from starting.
  local policy=/usr/sbin/policy-rc.d temporary_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    temporary_policy=1
  fi
  local status=0
  { apt-get update -qq && apt-get install -y -qq bind9 bind9-utils bind9-dnsutils; } >&2 || status=$?
  if [ -n "$temporary_policy" ]; then rm -f "$policy"; fi
  if [ "$status" -ne 0 ]; then say "apt-get failed"; exit 1; fi
}

secret() {
  sed -n 's/.*secret "\([^"]*\)".*/\1/p' "$dir/tsig.key"
}

print_env() {
  if [ ! -f "$dir/tsig.key" ]; then
    say "no server in $dir: run \`e2e/dns.sh up\` first"
    exit 1
  fi
  echo "export PREVIEWD_TEST_DNS_SERVER=127.0.0.1:${port}"
  echo "export PREVIEWD_TEST_DNS_ZONE=${zone}"
  echo "export PREVIEWD_TEST_DNS_BASE_DOMAIN=${base_domain}"
  echo "export PREVIEWD_TEST_DNS_TSIG_NAME=${key_name}"
  echo "export PREVIEWD_TEST_DNS_TSIG_SECRET=$(secret)"
}

# Over UDP and TCP: previewd sends its updates over TCP, and a named whose TCP listener failed
# still answers over UDP.
answers() {
  command -v dig >/dev/null || return 1
  local out transport
  for transport in +notcp +tcp; do
    out=$(dig +short +time=1 +tries=1 "$transport" @127.0.0.1 -p "$port" SOA "$zone" 2>/dev/null) || return 1
    [ -n "$out" ] || return 1
  done
}

# Stops the named this script started, if it still runs. A pid file left from another boot may
# name an unrelated process now, so the pid is only signalled when it is our named.
stop_named() {
  local pid
  pid=$(pid_running_with "$dir/named.pid" "$dir/named.conf") || return 0
  stop_pid named "$pid"
}

# named.conf as this script writes it; `up` replaces a running server whose configuration differs
# (one started by an older version of this script, say).
named_conf() {
  cat <<EOF
include "$dir/tsig.key";

options {
  directory "$dir";
  pid-file "$dir/named.pid";
  session-keyfile "$dir/session.key";
  managed-keys-directory "$dir";
  listen-on port $port { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  allow-query { any; };
  allow-transfer { none; };
  dnssec-validation no;
  notify no;
};

// No control channel: nothing listens on rndc's port next to a system named.
controls { };

logging {
  channel private { file "$dir/named.log"; severity info; print-time yes; };
  category default { private; };
};

zone "$zone" {
  type primary;
  file "$dir/$zone.db";
  // Exactly the policy of the README's DNS section: the key may change A, AAAA and CNAME
  // records at or under the base domain, nothing else in the zone.
  update-policy { grant $key_name subdomain $base_domain. A AAAA CNAME; };
};
EOF
}

write_config() {
  mkdir -p "$dir"
  chmod 700 "$dir"
  if [ ! -f "$dir/tsig.key" ]; then
    (umask 077; tsig-keygen -a hmac-sha256 "$key_name" >"$dir/tsig.key")
  fi
  named_conf >"$dir/named.conf"
  # Negative answers are cached for 1 s only; previewd asks this server directly anyway. `www` is
  # a name outside the base domain that the key must not be able to change.
  cat >"$dir/$zone.db" <<EOF
\$TTL 60
@   IN SOA ns.$zone. hostmaster.$zone. ( 1 3600 600 86400 1 )
    IN NS  ns.$zone.
ns  IN A   127.0.0.1
www IN A   192.0.2.80
EOF
  rm -f "$dir/$zone.db.jnl"
  if [ "$(id -u)" -eq 0 ] && id bind >/dev/null 2>&1; then chown -R bind: "$dir"; fi
  named-checkconf "$dir/named.conf" >&2
}

up() {
  install_bind
  if answers && [ -f "$dir/tsig.key" ] && [ "$(cat "$dir/named.conf" 2>/dev/null)" = "$(named_conf)" ]; then
    print_env
    return
  fi
  # One that runs but does not answer on both transports, or runs with another configuration,
  # is replaced.
  stop_named
  write_config
  local user_args=()
  if [ "$(id -u)" -eq 0 ] && id bind >/dev/null 2>&1; then user_args=(-u bind); fi
  if ! named -c "$dir/named.conf" -p "$port" "${user_args[@]}" >"$dir/start.log" 2>&1; then
    say "named did not start:"; cat "$dir/start.log" >&2; tail -n 30 "$dir/named.log" >&2 2>/dev/null || true; exit 1
  fi
  for _ in $(seq 1 100); do
    if answers; then
      say "running on 127.0.0.1:${port}, zone ${zone}, base domain ${base_domain} (files in $dir)"
      print_env
      return
    fi
    sleep 0.1
  done
  say "named does not answer on 127.0.0.1:${port}; its log:"
  tail -n 30 "$dir/named.log" >&2 2>/dev/null || true
  exit 1
}

down() {
  stop_named
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  env) print_env ;;
  status) answers ;;
  down) down ;;
  *) echo "usage: $0 up|env|status|down" >&2; exit 2 ;;
esac
