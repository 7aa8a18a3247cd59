#!/usr/bin/env bash
# Local Kubernetes control plane for previewd's tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, built from upstream Go modules.
# See README.md in this folder.
#
#   cluster.sh build    build the binaries into the cache (no-op when cached)
#   cluster.sh up       build, then start the cluster or reuse a healthy one
#   cluster.sh down     stop every process `up` started and remove the state
#   cluster.sh status   show components and health; exit 1 when not healthy
#   cluster.sh env      print `export` lines for the kubeconfigs and tools
#   cluster.sh restart-apiserver [S]  stop kube-apiserver for S seconds (5), then start it again
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${PREVIEWD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/previewd}
STATE=${PREVIEWD_CLUSTER_DIR:-$CACHE_ROOT/cluster}
# Bump when the build commands change, so cached binaries are rebuilt.
RECIPE=1
# Every environment renders a Service: a /24 (254 addresses) filled at about 250 live
# environments in the fleet benchmark ("range is full"); a /16 holds 65,534.
SERVICE_RANGE=10.0.0.0/16
# Pods each fake node takes: kwok's nodes cost nothing, and the fleet benchmark keeps 1,000
# environments' pods (the kubelet default of 110 would stop it at 330 on 3 nodes).
NODE_PODS=500
# And the CPU and memory they offer, for the same reason: with 32 CPUs a node, the fixture's
# 100m requests filled 3 nodes at 960 pods, and the fleet benchmark's last 40 stayed Pending.
NODE_CPU=256
NODE_MEMORY=1Ti
# Gateway API release whose standard-channel CRDs `up` installs: the newest stable release that
# Go 1.26 can download (v1.7.0's go.mod asks for Go 1.27). Its module sum is checked too, so a
# module cache or proxy that serves other content is refused. See README.md, "Gateway API".
GATEWAY_API_VERSION=v1.6.3
GATEWAY_API_SUM=h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc=
# Pre-provisioned PersistentVolumes of the StorageClass preview-standard (storage.yaml): enough
# for the tests' databases at once, each the size of previewd's default database (1Gi).
PV_COUNT=20
PV_SIZE=1Gi

# shellcheck source=SCRIPTDIR/../lib/pidfile.sh
. "$HERE/../lib/pidfile.sh"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------

# Cache folder for one Go module's binaries, keyed by its go.mod, go.sum and the recipe,
# so a version change builds anew and anything else reuses the cache.
bin_dir() {
  local name=$1 dir=$2 key
  key=$({ cat "$dir/go.mod" "$dir/go.sum"; echo "recipe=$RECIPE"; } | sha256sum | cut -c1-16)
  echo "$CACHE_ROOT/bin/$name-$key"
}
K8S_BIN=$(bin_dir k8s "$HERE")
KWOK_BIN=$(bin_dir kwok "$HERE/kwok")
HELM_BIN=$(bin_dir helm "$HERE/helm")
# The Gateway API CRDs, copied from the Go module cache once (so `up` needs no Go afterwards).
GATEWAY_API_DIR=$CACHE_ROOT/gateway-api-$GATEWAY_API_VERSION

# go_build NAME MODULE_DIR OUT_DIR LDFLAGS PACKAGE...: one `go build` for all packages of a
# module, so the packages they share compile once; the result appears atomically.
go_build() {
  local name=$1 dir=$2 out=$3 ldflags=$4
  shift 4
  [[ -f $out/.complete ]] && return 0
  command -v go >/dev/null || die "go is needed to build $name (see README.md)"
  local tmp="$out.tmp.$$" blog="$CACHE_ROOT/bin/build-$name.log" start=$SECONDS
  rm -rf "$tmp" && mkdir -p "$tmp"
  log "building $name (cold builds take many minutes; log: $blog)"
  (cd "$dir" && exec go build -v -buildvcs=false -ldflags "-s -w $ldflags" -o "$tmp/" "$@") \
    >"$blog" 2>&1 8>&- &
  local pid=$! rc=0 next=$((SECONDS + 60))
  # A sign of life for CI logs: packages compiled so far, once a minute.
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= next)); then
      log "still building $name: $(grep -cv '^go: ' "$blog") packages after $((SECONDS - start))s"
      next=$((SECONDS + 60))
    fi
    sleep 1
  done
  wait "$pid" || rc=$?
  if ((rc != 0)); then
    tail -n 40 "$blog" >&2
    rm -rf "$tmp"
    die "building $name failed"
  fi
  # go names the binary of go.etcd.io/etcd/server/v3 after its "server" folder.
  if [[ -e $tmp/server ]]; then mv "$tmp/server" "$tmp/etcd"; fi
  touch "$tmp/.complete"
  rm -rf "$out" && mv "$tmp" "$out"
  log "built $name in $((SECONDS - start))s"
}

cmd_build() {
  mkdir -p "$CACHE_ROOT/bin"
  exec 8>"$CACHE_ROOT/bin/.lock"
  flock 8
  if [[ ! -f $K8S_BIN/.complete ]]; then
    # Stamp versions as upstream's hack/lib/version.sh does; unstamped builds say v0.0.0.
    local v major minor ld="" p
    v=$(cd "$HERE" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
    major=${v#v}; major=${major%%.*}
    minor=${v#v"$major".}; minor=${minor%%.*}
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    done
    go_build k8s "$HERE" "$K8S_BIN" "$ld" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl \
      go.etcd.io/etcd/server/v3
  fi
  if [[ ! -f $KWOK_BIN/.complete ]]; then
    go_build kwok "$HERE/kwok" "$KWOK_BIN" "" sigs.k8s.io/kwok/cmd/kwok
  fi
  if [[ ! -f $HELM_BIN/.complete ]]; then
    local hv
    hv=$(cd "$HERE/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
    go_build helm "$HERE/helm" "$HELM_BIN" "-X helm.sh/helm/v3/internal/version.version=$hv" \
      helm.sh/helm/v3/cmd/helm
  fi
  fetch_gateway_api
  flock -u 8
}

# Copies the standard channel of the pinned Gateway API release (its CRDs and the
# ValidatingAdmissionPolicy `safe-upgrades.gateway.networking.k8s.io` that comes with them) from
# the Go module cache, downloading the module through the Go proxy when it is not there.
fetch_gateway_api() {
  [[ -f $GATEWAY_API_DIR/.complete ]] && return 0
  command -v go >/dev/null || die "go is needed to fetch the Gateway API CRDs (see README.md)"
  local json dir sum tmp="$GATEWAY_API_DIR.tmp.$$"
  log "fetching the Gateway API $GATEWAY_API_VERSION CRDs (go mod download)"
  # Outside any module, so no go.mod or go.work decides anything; the toolchain is the one
  # installed (a go.mod asking for a newer Go fails instead of downloading a toolchain).
  json=$(cd "$CACHE_ROOT" && GOWORK=off GOTOOLCHAIN=local go mod download -json \
    "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" 2>&1) ||
    die "go mod download sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION failed: $json"
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  sum=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' <<<"$json")
  [[ $sum == "$GATEWAY_API_SUM" ]] ||
    die "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION has sum '$sum', expected $GATEWAY_API_SUM: $json"
  [[ -n $dir && -d $dir/config/crd/standard ]] ||
    die "no config/crd/standard in sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION: $json"
  rm -rf "$tmp" && mkdir -p "$tmp"
  cp "$dir"/config/crd/standard/*.yaml "$tmp/"
  # The module cache is read-only; the copy need not be.
  chmod u+w "$tmp"/*.yaml
  touch "$tmp/.complete"
  rm -rf "$GATEWAY_API_DIR" && mv "$tmp" "$GATEWAY_API_DIR"
}

# ---------------------------------------------------------------------------------------
# cluster
# ---------------------------------------------------------------------------------------

PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids
ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
PREVIEWD_KUBECONFIG=$STATE/previewd.kubeconfig
# Start order; `down` stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
NODES=3
# Controllers previewd's behaviour depends on (namespace finalisation, owner-reference
# garbage collection, Deployment -> ReplicaSet -> Pod, quota status, default
# ServiceAccounts and their tokens, kube-root-ca.crt in every namespace, removal of the
# not-ready taint of new nodes), the workload controllers a real cluster runs, and the volume
# controllers that bind PersistentVolumeClaims and let a namespace holding one be deleted
# (binder; the protection controllers remove the finalizers `kubernetes.io/pvc-protection` and
# `kubernetes.io/pv-protection` once nothing uses the claim or volume; ephemeral-volume makes
# the claims of generic ephemeral volumes). Changing the list (or any flag of
# kube-controller-manager) makes `up` restart kube-controller-manager on a reused cluster.
CONTROLLERS=namespace-controller,garbage-collector-controller,deployment-controller
CONTROLLERS+=,replicaset-controller,resourcequota-controller,serviceaccount-controller
CONTROLLERS+=,serviceaccount-token-controller,root-ca-certificate-publisher-controller
CONTROLLERS+=,node-lifecycle-controller,taint-eviction-controller,pod-garbage-collector-controller
CONTROLLERS+=,endpoints-controller,endpointslice-controller,statefulset-controller
CONTROLLERS+=,daemonset-controller,job-controller,cronjob-controller,ttl-after-finished-controller
CONTROLLERS+=,disruption-controller,clusterrole-aggregation-controller
CONTROLLERS+=,validatingadmissionpolicy-status-controller
CONTROLLERS+=,persistentvolume-binder-controller,persistentvolume-protection-controller
CONTROLLERS+=,persistentvolumeclaim-protection-controller,ephemeral-volume-controller

# Every call is bounded: a check that hangs would stop wait_for from ever reaching its deadline.
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=20s "$@"; }

# A port nothing listens on now, below Linux's ephemeral range (32768+) so that outgoing
# connections do not take it before the component binds it; not repeated within a run.
TAKEN=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    [[ $TAKEN == *" $p "* ]] && continue
    # Bounded: a loopback port that drops packets instead of refusing would block connect().
    # shellcheck disable=SC2016
    if ! timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$p" 2>/dev/null; then
      TAKEN+="$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# ---- certificates (ECDSA P-256: fast to generate) ----

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# new_ca NAME COMMON_NAME
new_ca() {
  new_key "$PKI/$1.key"
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/$1.crt" 2>/dev/null
}

# issue CA NAME SUBJECT EXTENSIONS: a certificate signed by CA.
issue() {
  local ca=$1 name=$2 subj=$3 ext=$4
  new_key "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  command -v openssl >/dev/null || die "openssl is needed (apt-get install openssl)"
  mkdir -p "$PKI"
  new_ca ca previewd-test-ca
  local client="keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  issue ca apiserver "/CN=kube-apiserver" "keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue ca admin "/O=system:masters/CN=previewd-test-admin" "$client"
  issue ca kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  issue ca kube-scheduler "/CN=system:kube-scheduler" "$client"
  # kwok writes node and pod status as the kubelets would; it runs with admin rights, as
  # kwokctl runs it.
  issue ca kwok "/O=system:masters/CN=kwok-controller" "$client"
  # The aggregation layer's front proxy, with its own CA as kubeadm sets it up; without it
  # the controller manager and the scheduler keep logging a missing requestheader CA.
  new_ca front-proxy-ca previewd-test-front-proxy-ca
  issue front-proxy-ca front-proxy-client "/CN=front-proxy-client" "$client"
  # ServiceAccount token signing key.
  new_key "$PKI/sa.key"
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# kubeconfig FILE USER_FIELDS: a self-contained kubeconfig for the API server.
kubeconfig() {
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: previewd-test
    cluster:
      server: https://127.0.0.1:$API_PORT
      certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
  - name: user
    user:
$2
contexts:
  - name: previewd-test
    context:
      cluster: previewd-test
      user: user
current-context: previewd-test
KUBECONFIG
  chmod 600 "$1"
}

cert_kubeconfig() {
  kubeconfig "$1" "      client-certificate-data: $(base64 -w0 <"$PKI/$2.crt")
      client-key-data: $(base64 -w0 <"$PKI/$2.key")"
}

# ---- processes ----

# start NAME BINARY ARGS...: runs a component detached from this shell (its own session,
# no inherited lock descriptors) so it outlives `up`, with its pid and log in the state.
start() {
  local name=$1 bin=$2 launcher deadline=$((SECONDS + 10))
  shift 2
  rm -f "$PIDS/$name"
  # The component's shell writes its own pid, then execs the component in place: $! would not
  # do, because setsid forks when it happens to lead a process group, and then $! is a
  # launcher that exits at once (a CI run once saw a healthy etcd "exit" with an empty log).
  # The command line names the pid file (in $STATE) before and after the exec, so live_pid
  # never sees a starting component as gone.
  # shellcheck disable=SC2016
  setsid bash -c 'echo "$$" >"$1.tmp" && mv "$1.tmp" "$1" && shift && exec "$@"' \
    "$name" "$PIDS/$name" "$bin" "$@" </dev/null >"$LOGS/$name.log" 2>&1 8>&- 9>&- &
  launcher=$!
  # A component that fails right after its exec is wait_for's to report, with its status.
  until [[ -s $PIDS/$name ]]; do
    if ((SECONDS >= deadline)); then
      show_log "$name"
      die "$name (launcher pid $launcher) did not write its pid file within 10s"
    fi
    sleep 0.05
  done
}

# The pid of a component if that process is still the one `up` started (its command line
# names this state folder), else nothing.
live_pid() { pid_running_with "$PIDS/$1" "$STATE"; }

stop_all() {
  local i name pid
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    pid=$(live_pid "$name") || continue
    stop_pid "$name" "$pid"
  done
  rm -f "$PIDS"/*
}

show_log() {
  local name=$1
  [[ -f $LOGS/$name.log ]] || return 0
  printf '[cluster] ---- last lines of %s ----\n' "$LOGS/$name.log" >&2
  tail -n 30 "$LOGS/$name.log" >&2
}

# fail_start COMPONENT WHAT: report a failed start with the logs, stop what started.
fail_start() {
  local name=$1 what=$2 c rc pid
  for c in "${COMPONENTS[@]}"; do
    if [[ -f $PIDS/$c ]] && ! live_pid "$c" >/dev/null; then
      pid=$(<"$PIDS/$c")
      if ! pid_exited "$pid"; then
        # Never `wait` for a process that still runs: that would block for ever.
        log "$c: pid $pid still runs but no longer looks like $c"
      else
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        # 127: not a child of this run (restart-apiserver), so its status is unknown.
        if ((rc == 127)); then log "$c exited"; else log "$c exited with status $rc"; fi
      fi
      [[ $c == "$name" ]] || show_log "$c"
    fi
  done
  show_log "$name"
  stop_all
  die "$what (all logs: $LOGS)"
}

# wait_for COMPONENT TIMEOUT_S DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local name=$1 timeout=$2 what=$3 deadline c
  shift 3
  deadline=$((SECONDS + timeout))
  until "$@" >"$STATE/wait.out" 2>&1; do
    for c in "${COMPONENTS[@]}"; do
      if [[ -f $PIDS/$c ]] && ! live_pid "$c" >/dev/null; then
        fail_start "$c" "$c exited while waiting for $what"
      fi
    done
    if ((SECONDS >= deadline)); then
      printf '[cluster] last output of the check: %s\n' "$*" >&2
      tail -n 20 "$STATE/wait.out" >&2
      fail_start "$name" "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.2
  done
  rm -f "$STATE/wait.out"
}

api_get() {
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$API_PORT$1"
}
api_ready() { [[ $(api_get /readyz) == ok ]]; }
etcd_healthy() { [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health") == *'"health":"true"'* ]]; }
component_healthy() { [[ $(curl -ksS --max-time 2 "https://127.0.0.1:$1/healthz") == ok ]]; }

# All fake nodes Ready, without taints (the node lifecycle controller removes the
# not-ready taint that new nodes get), so pods can be scheduled.
nodes_ready() {
  local out
  out=$(kubectl get nodes -l type=kwok -o \
    jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{.spec.taints}{"\n"}{end}')
  [[ $(grep -c '=True$' <<<"$out") -ge $NODES ]]
}

default_sa_exists() { kubectl get serviceaccount default -n default; }

nodes_manifest() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    node-role.kubernetes.io/agent: ""
spec:
  podCIDR: 10.244.$i.0/24
  podCIDRs: [10.244.$i.0/24]
status:
  addresses:
    - type: InternalIP
      address: 192.0.2.$((i + 10))
    - type: Hostname
      address: kwok-node-$i
  allocatable: {cpu: "$NODE_CPU", memory: $NODE_MEMORY, pods: "$NODE_PODS"}
  capacity: {cpu: "$NODE_CPU", memory: $NODE_MEMORY, pods: "$NODE_PODS"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
NODE
  done
}

healthy() {
  [[ -f $STATE/ports.env && -f $ADMIN_KUBECONFIG && -f $PREVIEWD_KUBECONFIG ]] || return 1
  # shellcheck disable=SC1091
  source "$STATE/ports.env"
  local c
  for c in "${COMPONENTS[@]}"; do live_pid "$c" >/dev/null || return 1; done
  api_ready && nodes_ready &&
    "$K8S_BIN/kubectl" --kubeconfig "$PREVIEWD_KUBECONFIG" --request-timeout=20s auth can-i create namespaces >/dev/null 2>&1
}

# Serialises up and down (tests start `up` from parallel processes). The lock is held on
# the folder that contains the state, so no lock file is left behind.
cluster_lock() {
  mkdir -p "$(dirname "$STATE")"
  exec 9<"$(dirname "$STATE")"
  flock 9
}

cmd_up() {
  local tool
  for tool in curl openssl flock setsid base64; do
    command -v "$tool" >/dev/null || die "$tool is needed (see README.md)"
  done
  cmd_build
  cluster_lock
  if healthy; then
    refresh_kwok_stages
    refresh_controller_manager
    refresh_platform
    # previewd's RBAC and admission policies as this checkout has them (a reused cluster may
    # have been started by an older one); server-side apply changes only what differs.
    kubectl apply --server-side --field-manager=previewd-test-cluster -f "$HERE/previewd-rbac.yaml" >/dev/null ||
      die "applying previewd-rbac.yaml to the reused cluster failed"
    log "cluster is up (reused): $(api_server_url)"
    return 0
  fi
  if [[ -d $STATE ]]; then
    log "cluster at $STATE is not healthy; starting it anew"
  fi
  # A start that fails (a component exits or never gets healthy) has printed its logs; it is
  # tried once more with new ports before the run gives up, so one unlucky start on a busy
  # machine does not fail a whole test run.
  local attempt rc
  for attempt in 1 2; do
    set +e
    (
      set -e
      start_cluster
    )
    rc=$?
    set -e
    ((rc == 0)) && return 0
    ((attempt == 2)) && exit "$rc"
    log "starting the cluster failed; trying once more with new ports"
  done
}

# Starts every component from a clean state folder; exits non-zero, with the logs printed, when
# one does not come up.
start_cluster() {
  local start=$SECONDS
  if [[ -d $STATE ]]; then
    stop_all
    rm -rf "$STATE"
  fi
  mkdir -p "$STATE" "$LOGS" "$PIDS"
  ETCD_PORT=$(free_port)
  ETCD_PEER_PORT=$(free_port)
  API_PORT=$(free_port)
  KCM_PORT=$(free_port)
  SCHEDULER_PORT=$(free_port)
  cat >"$STATE/ports.env" <<PORTS
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
PORTS
  make_pki
  cert_kubeconfig "$ADMIN_KUBECONFIG" admin
  cert_kubeconfig "$STATE/kube-controller-manager.kubeconfig" kube-controller-manager
  cert_kubeconfig "$STATE/kube-scheduler.kubeconfig" kube-scheduler
  cert_kubeconfig "$STATE/kwok.kubeconfig" kwok

  start etcd "$K8S_BIN/etcd" \
    --name=previewd --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="previewd=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --auto-compaction-retention=1 --log-level=warn
  wait_for etcd 30 "etcd to be healthy" etcd_healthy

  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --cert-dir="$PKI/generated" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,ResourceQuota,NodeRestriction \
    --allow-privileged=true \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_RANGE" \
    --endpoint-reconciler-type=none \
    --profiling=false
  wait_for kube-apiserver 90 "kube-apiserver /readyz" api_ready

  start_controller_manager
  cat >"$STATE/kube-scheduler.yaml" <<SCHED
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE/kube-scheduler.kubeconfig
  qps: 100
  burst: 200
leaderElection:
  leaderElect: false
SCHED
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --config="$STATE/kube-scheduler.yaml" \
    --authentication-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$PKI/generated"
  start_kwok

  {
    nodes_manifest
    echo ---
    cat "$HERE/previewd-rbac.yaml"
    echo ---
    cat "$HERE/test-identity.yaml"
  } >"$STATE/bootstrap.yaml"
  wait_for kube-apiserver 30 "the bootstrap objects to apply" \
    kubectl apply --server-side --field-manager=previewd-test-cluster -f "$STATE/bootstrap.yaml"
  wait_for kube-apiserver 60 "the Gateway API CRDs to apply" apply_gateway_api
  wait_for kube-apiserver 60 "the Gateway API CRDs to be Established" gateway_api_established
  wait_for kube-apiserver 30 "the Gateway, StorageClass and PersistentVolumes to apply" apply_platform
  platform_digest >"$STATE/platform.sha256"
  wait_for kube-controller-manager 60 "kube-controller-manager /healthz" component_healthy "$KCM_PORT"
  wait_for kube-scheduler 60 "kube-scheduler /healthz" component_healthy "$SCHEDULER_PORT"
  wait_for kwok 60 "$NODES kwok nodes to be Ready without taints" nodes_ready
  wait_for kube-controller-manager 60 "the default ServiceAccount" default_sa_exists

  # A token for the previewd ServiceAccount; a year, so a reused cluster keeps working.
  local token
  token=$(kubectl create token previewd -n previewd-system --duration=8760h) ||
    fail_start kube-apiserver "creating a token for the previewd ServiceAccount failed"
  kubeconfig "$PREVIEWD_KUBECONFIG" "      token: $token"
  log "cluster is up in $((SECONDS - start))s: $(api_server_url)"
}

# kwok reads its Stage file once, at start. It is started with a copy in the state folder, and
# the copy's SHA-256 is kept beside it, so that `up` can tell a running kwok whose stages differ
# from kwok-stages.yaml and restart it (nothing else of the cluster needs to restart).
stages_digest() { sha256sum "$HERE/kwok-stages.yaml" | cut -d' ' -f1; }

start_kwok() {
  cp "$HERE/kwok-stages.yaml" "$STATE/kwok-stages.yaml"
  stages_digest >"$STATE/kwok-stages.sha256"
  start kwok "$KWOK_BIN/kwok" \
    --kubeconfig="$STATE/kwok.kubeconfig" \
    --config="$STATE/kwok-stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.0/16 --node-ip=192.0.2.10 --node-lease-duration-seconds=40
}

# A healthy cluster whose kwok runs other stages than kwok-stages.yaml (the file changed, or an
# older cluster.sh started it) gets kwok restarted with the current file.
refresh_kwok_stages() {
  local pid
  [[ $(cat "$STATE/kwok-stages.sha256" 2>/dev/null) == "$(stages_digest)" ]] && return 0
  log "kwok-stages.yaml changed; restarting kwok"
  if pid=$(live_pid kwok); then stop_pid kwok "$pid"; fi
  start_kwok
  wait_for kwok 60 "$NODES kwok nodes to be Ready without taints" nodes_ready
}

# kube-controller-manager's command line; its digest, kept in the state folder, tells `up`
# whether a running one was started with other flags (CONTROLLERS changed, or an older
# cluster.sh started it).
controller_manager_args() {
  KCM_ARGS=(
    --kubeconfig="$STATE/kube-controller-manager.kubeconfig"
    --authentication-kubeconfig="$STATE/kube-controller-manager.kubeconfig"
    --authorization-kubeconfig="$STATE/kube-controller-manager.kubeconfig"
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$PKI/generated"
    --controllers="$CONTROLLERS"
    --use-service-account-credentials=true
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt"
    --leader-elect=false --kube-api-qps=100 --kube-api-burst=200 --profiling=false
  )
}
controller_manager_digest() {
  controller_manager_args
  # The flags only: new binaries (another Kubernetes version) restart nothing, as before.
  printf '%s\n' "${KCM_ARGS[@]}" | sha256sum | cut -d' ' -f1
}

start_controller_manager() {
  controller_manager_args
  controller_manager_digest >"$STATE/kube-controller-manager.sha256"
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" "${KCM_ARGS[@]}"
}

# A healthy cluster whose kube-controller-manager runs with other flags than this script's gets
# it restarted (etcd, the API server and the objects stay; its controllers resync on start).
refresh_controller_manager() {
  local pid
  [[ $(cat "$STATE/kube-controller-manager.sha256" 2>/dev/null) == "$(controller_manager_digest)" ]] && return 0
  log "kube-controller-manager's flags changed (controllers); restarting it"
  if pid=$(live_pid kube-controller-manager); then stop_pid kube-controller-manager "$pid"; fi
  start_controller_manager
  wait_for kube-controller-manager 60 "kube-controller-manager /healthz" component_healthy "$KCM_PORT"
}

# ---- Gateway API and storage ----

# The CRDs of the pinned Gateway API release and their ValidatingAdmissionPolicy, server-side
# (idempotent: a reused cluster gets only what differs).
apply_gateway_api() {
  kubectl apply --server-side --field-manager=previewd-test-cluster -f "$GATEWAY_API_DIR"
}

# Every CRD of the release served: objects of a CRD cannot be created before it is Established.
gateway_api_established() {
  local f files=()
  for f in "$GATEWAY_API_DIR"/*.yaml; do
    if grep -q '^kind: CustomResourceDefinition$' "$f"; then files+=(-f "$f"); fi
  done
  ((${#files[@]} > 0)) || return 1
  kubectl wait --for=condition=Established --timeout=30s "${files[@]}" >/dev/null
}

# PV_COUNT hostPath PersistentVolumes of PV_SIZE for the StorageClass preview-standard. No
# kubelet runs, so the path is never created or read; it names the volume.
volumes_manifest() {
  local i name
  for ((i = 0; i < PV_COUNT; i++)); do
    printf -v name 'preview-standard-%02d' "$i"
    cat <<VOLUME
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $name
  labels:
    previewd.dev/test-volume: "true"
spec:
  storageClassName: preview-standard
  capacity: {storage: $PV_SIZE}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  volumeMode: Filesystem
  hostPath:
    path: /var/lib/previewd-test-volumes/$name
VOLUME
  done
}

# The platform's Gateway (gateway.yaml), the StorageClass (storage.yaml) and its volumes.
apply_platform() {
  volumes_manifest >"$STATE/volumes.yaml"
  kubectl apply --server-side --field-manager=previewd-test-cluster \
    -f "$HERE/gateway.yaml" -f "$HERE/storage.yaml" -f "$STATE/volumes.yaml"
}

# What apply_gateway_api and apply_platform apply; its digest is kept in the state folder.
platform_digest() {
  { cat "$GATEWAY_API_DIR"/*.yaml "$HERE/gateway.yaml" "$HERE/storage.yaml"; volumes_manifest; } |
    sha256sum | cut -d' ' -f1
}

# One request: are the Gateway, the StorageClass and the last volume there?
platform_present() {
  local last
  printf -v last 'preview-standard-%02d' $((PV_COUNT - 1))
  kubectl get -n previewd-gateway gateway/previews storageclass/preview-standard \
    "persistentvolume/$last" -o name >/dev/null 2>&1
}

# On a reused cluster: the Gateway API CRDs, the Gateway and the storage as this checkout has
# them. Applying the CRDs takes about 2 s, so it is skipped when what was applied last (its
# digest) is what this checkout would apply and the objects are still there.
refresh_platform() {
  if [[ $(cat "$STATE/platform.sha256" 2>/dev/null) == "$(platform_digest)" ]] && platform_present; then
    return 0
  fi
  log "applying the Gateway API $GATEWAY_API_VERSION CRDs, gateway.yaml and storage.yaml"
  apply_gateway_api >/dev/null || die "applying the Gateway API CRDs to the reused cluster failed"
  gateway_api_established || die "the Gateway API CRDs are not Established on the reused cluster"
  apply_platform >/dev/null || die "applying gateway.yaml and storage.yaml to the reused cluster failed"
  platform_digest >"$STATE/platform.sha256"
}

api_server_url() { echo "https://127.0.0.1:$API_PORT (kubeconfig: $ADMIN_KUBECONFIG)"; }

cmd_down() {
  cluster_lock
  if [[ -d $STATE ]]; then
    stop_all
    rm -rf "$STATE"
    log "cluster stopped and $STATE removed"
  fi
}

cmd_status() {
  if [[ ! -f $STATE/ports.env ]]; then
    echo "no cluster at $STATE"
    return 1
  fi
  # shellcheck disable=SC1091
  source "$STATE/ports.env"
  local c pid ok=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(live_pid "$c"); then
      printf '%-24s running  pid %-8s rss %s MiB\n' "$c" "$pid" \
        "$(($(awk '/^VmRSS/{print $2}' "/proc/$pid/status") / 1024))"
    else
      printf '%-24s STOPPED  (log: %s)\n' "$c" "$LOGS/$c.log"
      ok=1
    fi
  done
  if api_ready; then echo "kube-apiserver           /readyz ok at https://127.0.0.1:$API_PORT"; else
    echo "kube-apiserver           /readyz NOT ok"
    ok=1
  fi
  if ((ok == 0)); then
    kubectl get nodes -o wide 2>&1 || ok=1
    nodes_ready || ok=1
  fi
  return "$ok"
}

# Stops component $1 and starts it again with the same command line after $2 seconds.
restart_component() {
  local name=$1 down=$2 pid args=()
  pid=$(live_pid "$name") || die "$name is not running"
  mapfile -d '' args <"/proc/$pid/cmdline"
  stop_pid "$name" "$pid"
  log "$name stopped; starting it again in ${down}s"
  sleep "$down"
  start "$name" "${args[@]}"
}

# Stops kube-apiserver, keeps it down for $1 seconds (default 5), and starts it again with the
# same command line: etcd and the data stay. For the test that previewd resumes its work after
# an API server outage. kube-controller-manager is restarted afterwards too: after a long outage
# its namespace controller can sit in backoff for many minutes with a namespace emptied but not
# finalized, which is the cluster's recovery, not previewd's.
cmd_restart_apiserver() {
  local down=${1:-5}
  [[ -f $STATE/ports.env ]] || die "no cluster at $STATE; run \`$0 up\` first"
  # shellcheck disable=SC1091
  source "$STATE/ports.env"
  restart_component kube-apiserver "$down"
  wait_for kube-apiserver 120 "the API server to be ready again" api_ready
  restart_component kube-controller-manager 0
  wait_for kube-controller-manager 60 "the controller manager" component_healthy "$KCM_PORT"
  log "kube-apiserver is back: $(api_server_url)"
}

cmd_env() {
  printf 'export %s=%q\n' \
    PREVIEWD_TEST_KUBECONFIG_ADMIN "$ADMIN_KUBECONFIG" \
    PREVIEWD_TEST_KUBECONFIG "$PREVIEWD_KUBECONFIG" \
    PREVIEWD_TEST_SOURCE_NAMESPACE previewd-source \
    PREVIEWD_TEST_KUBECTL "$K8S_BIN/kubectl" \
    PREVIEWD_TEST_HELM "$HELM_BIN/helm" \
    KUBECONFIG "$ADMIN_KUBECONFIG"
}

case ${1:-} in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  restart-apiserver) cluster_lock; cmd_restart_apiserver "${2:-5}" ;;
  *) die "usage: $0 build|up|down|status|env|restart-apiserver [seconds down]" ;;
esac
