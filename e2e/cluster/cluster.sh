#!/usr/bin/env bash
# Sluice's local cluster: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kube-proxy built from upstream, the sluice node agent running
# pods as host processes, and Prometheus discovering pods through the API server.
#
#   cluster.sh up      start it, or reuse the running one; recovers a stale .cluster/
#   cluster.sh down    stop every process it started and undo its network changes
#   cluster.sh status  exit 0 when it runs and is healthy
#
# Everything lives in $REPO_ROOT/.cluster; only processes recorded there (PID plus
# start time, so a reused PID is never hit) are ever signalled.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="${REPO_ROOT:-$(cd "$here/../.." && pwd)}"
CLUSTER_DIR="${CLUSTER_DIR:-$REPO_ROOT/.cluster}"
SLUICE_CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"

NODE_NAME="${SLUICE_NODE_NAME:-sluice-node}"
BRIDGE="${SLUICE_BRIDGE:-sluice0}"
POD_CIDR="${SLUICE_POD_CIDR:-10.213.0.0/24}"
SERVICE_CIDR="${SLUICE_SERVICE_CIDR:-10.213.16.0/24}"
API_PORT="${SLUICE_API_PORT:-6443}"
ETCD_PORT="${SLUICE_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${SLUICE_ETCD_PEER_PORT:-12380}"
PROMETHEUS_PORT="${SLUICE_PROMETHEUS_PORT:-9090}"
SCRAPE_INTERVAL="${SLUICE_SCRAPE_INTERVAL:-5s}"
NODE_AGENT_BIN="${SLUICE_NODE_AGENT_BIN:-$REPO_ROOT/target/release/sluice-node-agent}"
SERVER_BIN="${SLUICE_SERVER_BIN:-$REPO_ROOT/target/release/sluice-server}"
OPERATOR_BIN="${SLUICE_OPERATOR_BIN:-$REPO_ROOT/target/release/sluice-operator}"
# The node's image store: the agent installs the mapped binaries (with the shared
# libraries beside them) here, one folder per SHA-256, and runs containers from it, as
# a node runs images from its own store. It lies outside the checkout, $SLUICE_CACHE
# and /tmp, any of which a pod's volumes (an emptyDir at /tmp) may cover. Kept across
# restarts; the agent removes images unused for a day.
IMAGE_STORE="${SLUICE_IMAGE_STORE:-/var/lib/sluice/images}"

prefix=${POD_CIDR%/*}; prefix=${prefix%.*}
GATEWAY="$prefix.1"
svc_prefix=${SERVICE_CIDR%/*}; svc_prefix=${svc_prefix%.*}
KUBERNETES_SVC_IP="$svc_prefix.1"

PKI="$CLUSTER_DIR/pki"
PIDS="$CLUSTER_DIR/pids"
LOGS="$CLUSTER_DIR/logs"
KUBECONFIG_FILE="$CLUSTER_DIR/kubeconfig"
# Started in this order, stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy node-agent prometheus)

log() { echo "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes -----------------------------------------------------------------

start_time() { [[ -r /proc/$1/stat ]] && awk '{sub(/.*\) /, ""); print $20}' "/proc/$1/stat"; }

# alive FILE: the process recorded in FILE ("PID STARTTIME") still runs.
alive() {
    local pid start
    [[ -f $1 ]] || return 1
    read -r pid start <"$1" || return 1
    [[ -n $pid && "$(start_time "$pid" 2>/dev/null)" == "$start" ]]
}

# start NAME CMD...: runs CMD in its own session, logging to logs/NAME.log.
start() {
    local name=$1; shift
    # 9>&-: the cluster's processes must not inherit (and hold) the lock.
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$PIDS/$name"
}

# stop FILE [SECONDS]: SIGTERM to the recorded process group, SIGKILL after SECONDS.
stop() {
    local file=$1 wait=${2:-10} pid start i
    if alive "$file"; then
        read -r pid start <"$file"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < wait * 10; i++)); do alive "$file" || break; sleep 0.1; done
        if alive "$file"; then
            log "$(basename "$file") ignored SIGTERM; killing it"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

wait_for() { # wait_for SECONDS WHAT CMD...
    local seconds=$1 what=$2 i; shift 2
    for ((i = 0; i < seconds * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "$what did not come up within ${seconds}s (logs: $LOGS)"
}

# --- certificates ----------------------------------------------------------------

gen_pki() {
    mkdir -p "$PKI"
    local o="$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=sluice-local-ca" \
        -keyout "$o/ca.key" -out "$o/ca.crt" 2>/dev/null
    sign() { # sign NAME SUBJECT EXTENSIONS
        openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$o/$1.key" -out "$o/$1.csr" 2>/dev/null
        openssl x509 -req -in "$o/$1.csr" -CA "$o/ca.crt" -CAkey "$o/ca.key" -CAcreateserial \
            -days 3650 -out "$o/$1.crt" -extfile <(printf '%s\n' "$3") 2>/dev/null
        rm -f "$o/$1.csr"
    }
    sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,IP:$GATEWAY,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
    sign admin "/O=system:masters/CN=kubernetes-admin" "extendedKeyUsage=clientAuth"
    # The node agent's log endpoint (kubectl logs), on the node address only.
    sign node "/O=system:nodes/CN=system:node:$NODE_NAME" "subjectAltName=IP:$GATEWAY,DNS:$NODE_NAME
extendedKeyUsage=serverAuth"
    openssl genrsa -out "$o/sa.key" 2048 2>/dev/null
    openssl rsa -in "$o/sa.key" -pubout -out "$o/sa.pub" 2>/dev/null
    chmod 600 "$o"/*.key
}

write_kubeconfig() {
    cat >"$KUBECONFIG_FILE" <<KC
apiVersion: v1
kind: Config
clusters:
- name: sluice
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: sluice
  context: {cluster: sluice, user: admin}
current-context: sluice
KC
    chmod 600 "$KUBECONFIG_FILE"
}

# --- network -------------------------------------------------------------------

net_up() {
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip addr replace "$GATEWAY/${POD_CIDR#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # The Service range belongs to the bridge, never to the default route.
    ip route replace "$SERVICE_CIDR" dev "$BRIDGE"
    # Pods on the bridge reach each other and Service backends through the host, so
    # the host forwards, but only between bridge ports: nothing leaves the machine.
    [[ -f $CLUSTER_DIR/ip_forward.orig ]] || cat /proc/sys/net/ipv4/ip_forward >"$CLUSTER_DIR/ip_forward.orig"
    echo 1 >/proc/sys/net/ipv4/ip_forward
    iptables -w -N SLUICE-FORWARD 2>/dev/null || iptables -w -F SLUICE-FORWARD
    iptables -w -A SLUICE-FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
    iptables -w -A SLUICE-FORWARD -i "$BRIDGE" -j DROP
    iptables -w -A SLUICE-FORWARD -o "$BRIDGE" -j DROP
    iptables -w -C FORWARD -j SLUICE-FORWARD 2>/dev/null || iptables -w -I FORWARD 1 -j SLUICE-FORWARD
    # kube-proxy adds KUBE-FIREWALL and its --cleanup keeps it; remove it on the way
    # down only if this cluster brought it.
    iptables -w -S KUBE-FIREWALL >/dev/null 2>&1 || touch "$CLUSTER_DIR/kube-firewall.ours"
}

net_down() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^sluice-' || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [[ -n ${BINS:-} && -x $BINS/kube-proxy ]]; then
        "$BINS/kube-proxy" --cleanup >/dev/null 2>&1 || true
    fi
    if command -v iptables >/dev/null; then
        iptables -w -D FORWARD -j SLUICE-FORWARD 2>/dev/null || true
        iptables -w -F SLUICE-FORWARD 2>/dev/null || true
        iptables -w -X SLUICE-FORWARD 2>/dev/null || true
        if [[ -f $CLUSTER_DIR/kube-firewall.ours ]]; then
            iptables -w -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
            iptables -w -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
            iptables -w -F KUBE-FIREWALL 2>/dev/null || true
            iptables -w -X KUBE-FIREWALL 2>/dev/null || true
        fi
    fi
    ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
    ip link del "$BRIDGE" 2>/dev/null || true
    if [[ -f $CLUSTER_DIR/ip_forward.orig ]]; then
        cat "$CLUSTER_DIR/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward
        rm -f "$CLUSTER_DIR/ip_forward.orig"
    fi
}

# --- prometheus ----------------------------------------------------------------

write_prometheus_config() {
    mkdir -p "$CLUSTER_DIR/prometheus"
    cat >"$CLUSTER_DIR/prometheus/prometheus.yml" <<PROM
# Generated by e2e/cluster/cluster.sh. Pods opt in to scraping with annotations:
#   prometheus.io/scrape: "true"
#   prometheus.io/port: "<port>"      (default: each declared container port)
#   prometheus.io/path: "/metrics"    (default /metrics)
# Targets keep the labels namespace, pod and every pod label.
global:
  scrape_interval: $SCRAPE_INTERVAL
  evaluation_interval: $SCRAPE_INTERVAL
scrape_configs:
- job_name: kubernetes-pods
  # Plain files served without a Prometheus Content-Type still parse as text.
  fallback_scrape_protocol: PrometheusText0.0.4
  kubernetes_sd_configs:
  - role: pod
    api_server: https://127.0.0.1:$API_PORT
    tls_config:
      ca_file: $PKI/ca.crt
      cert_file: $PKI/admin.crt
      key_file: $PKI/admin.key
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: "true"
  - source_labels: [__meta_kubernetes_pod_phase]
    action: drop
    regex: Pending|Succeeded|Failed
  - source_labels: [__meta_kubernetes_pod_container_init]
    action: drop
    regex: "true"
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    action: replace
    regex: (.+)
    target_label: __metrics_path__
  - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
    action: replace
    regex: (.+);([0-9]+)
    replacement: \$1:\$2
    target_label: __address__
  - action: labelmap
    regex: __meta_kubernetes_pod_label_(.+)
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
PROM
}

# --- lifecycle -----------------------------------------------------------------

healthy() {
    local c
    for c in "${COMPONENTS[@]}"; do alive "$PIDS/$c" || return 1; done
    "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz >/dev/null 2>&1 || return 1
    curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null 2>&1
}

node_ready() {
    [[ "$("$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get node "$NODE_NAME" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

write_env() {
    mkdir -p "$CLUSTER_DIR/bin"
    ln -sfn "$BINS/kubectl" "$CLUSTER_DIR/bin/kubectl"
    cat >"$CLUSTER_DIR/env" <<ENV
KUBECONFIG=$KUBECONFIG_FILE
PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT
KUBECTL=$CLUSTER_DIR/bin/kubectl
SLUICE_NODE_NAME=$NODE_NAME
SLUICE_POD_CIDR=$POD_CIDR
SLUICE_SERVICE_CIDR=$SERVICE_CIDR
SLUICE_CLUSTER_LOGS=$LOGS
ENV
}

up() {
    BINS="$("$here/build-bins.sh")"
    KUBECTL="$BINS/kubectl"
    mkdir -p "$CLUSTER_DIR"
    if [[ -d $PIDS ]] && healthy; then
        write_env
        log "reusing the running cluster ($CLUSTER_DIR/env)"
        return 0
    fi
    if [[ -d $PIDS || -d $PKI ]]; then
        log "found a stale cluster in $CLUSTER_DIR; cleaning it up"
        down_inner
    fi
    [[ -x $NODE_AGENT_BIN ]] || die "node agent binary $NODE_AGENT_BIN missing (cargo build --release -p sluice-node-agent)"
    for port in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$PROMETHEUS_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port on 127.0.0.1 is already in use (set SLUICE_*_PORT to move the cluster)"
        fi
    done
    local t0=$SECONDS
    # A start that fails half-way stops what it started; the logs stay.
    trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping what was started (logs: $LOGS)"; down_inner; fi' EXIT
    mkdir -p "$PIDS" "$LOGS"
    gen_pki
    write_kubeconfig
    net_up

    start etcd "$BINS/etcd" --name sluice --data-dir "$CLUSTER_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "sluice=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
    wait_for 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

    start kube-apiserver "$BINS/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address "$GATEWAY" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
        --authorization-mode RBAC --allow-privileged=true --enable-priority-and-fairness=false \
        --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
        --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
        --profiling=false --cert-dir "$PKI"
    wait_for 90 kube-apiserver "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz

    start kube-controller-manager "$BINS/kube-controller-manager" \
        --kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" \
        --authorization-kubeconfig "$KUBECONFIG_FILE" --bind-address 127.0.0.1 --secure-port 10257 \
        --leader-elect=false --use-service-account-credentials \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
    start kube-scheduler "$BINS/kube-scheduler" \
        --kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" \
        --authorization-kubeconfig "$KUBECONFIG_FILE" --bind-address 127.0.0.1 --secure-port 10259 \
        --leader-elect=false --profiling=false
    start kube-proxy "$BINS/kube-proxy" --kubeconfig "$KUBECONFIG_FILE" \
        --hostname-override "$NODE_NAME" --proxy-mode iptables --cluster-cidr "$POD_CIDR" \
        --masquerade-all --conntrack-max-per-core 0 --iptables-localhost-nodeports=false \
        --nodeport-addresses "$GATEWAY/32" --metrics-bind-address 127.0.0.1:10249 \
        --healthz-bind-address 127.0.0.1:10256
    start node-agent env KUBECONFIG="$KUBECONFIG_FILE" RUST_LOG="${RUST_LOG:-info}" "$NODE_AGENT_BIN" run \
        --node-name "$NODE_NAME" --bridge "$BRIDGE" --pod-cidr "$POD_CIDR" \
        --state-dir "$CLUSTER_DIR/node" --log-dir "$LOGS/pods" \
        --tls-cert "$PKI/node.crt" --tls-key "$PKI/node.key" --client-ca "$PKI/ca.crt" \
        --image-store "$IMAGE_STORE" \
        --image-map "sluice-server=$SERVER_BIN" --image-map "sluice-operator=$OPERATOR_BIN"
    write_prometheus_config
    start prometheus "$BINS/prometheus" --config.file "$CLUSTER_DIR/prometheus/prometheus.yml" \
        --storage.tsdb.path "$CLUSTER_DIR/prometheus/data" --storage.tsdb.retention.time 1d \
        --web.listen-address "127.0.0.1:$PROMETHEUS_PORT" --web.enable-lifecycle

    wait_for 60 "node $NODE_NAME" node_ready
    wait_for 60 "the default ServiceAccount" "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get serviceaccount default -n default
    wait_for 60 prometheus curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"
    write_env
    trap - EXIT
    log "cluster up in $((SECONDS - t0))s: node $NODE_NAME Ready; source $CLUSTER_DIR/env"
}

down_inner() {
    local i c f
    # A controller that scripts started on the host against this cluster (the
    # operator, by e2e/operator/lib.sh, and its standby replicas in the chaos
    # tests) goes first.
    for f in "$PIDS"/operator*; do
        [[ -e $f ]] && stop "$f" 10
    done
    # The S3 server (e2e/s3/s3.sh) keeps its objects here and may listen on the bridge.
    [[ -e $CLUSTER_DIR/s3/pid ]] && stop "$CLUSTER_DIR/s3/pid" 10
    # So does the Kafka broker (e2e/kafka/kafka.sh); a controlled shutdown takes a second or two.
    [[ -e $CLUSTER_DIR/kafka/pid ]] && stop "$CLUSTER_DIR/kafka/pid" 30
    # The node agent first: it stops its pods (SIGTERM, then SIGKILL).
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        c=${COMPONENTS[i]}
        [[ $c == node-agent ]] && stop "$PIDS/$c" 20
    done
    # Containers whose agent died without stopping them.
    for f in "$CLUSTER_DIR"/node/pods/*/*.pid; do
        [[ -e $f ]] && stop "$f" 5
    done
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        c=${COMPONENTS[i]}
        [[ $c == node-agent ]] || stop "$PIDS/$c" 10
    done
    net_down
    # Mount points the agent had to create on the host, deepest first, if empty.
    if [[ -f $CLUSTER_DIR/node/mountpoints ]]; then
        tac "$CLUSTER_DIR/node/mountpoints" | while read -r p; do
            if [[ -d $p ]]; then rmdir "$p" 2>/dev/null || true
            elif [[ -f $p && ! -s $p ]]; then rm -f "$p"; fi
        done
    fi
    # Keep logs for post-mortems; everything else is state of the stopped cluster.
    find "$CLUSTER_DIR" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
}

down() {
    [[ -d $CLUSTER_DIR ]] || { log "no cluster in $CLUSTER_DIR"; return 0; }
    BINS="$("$here/build-bins.sh" --cached || true)"
    down_inner
    log "cluster stopped"
}

# restart NAME: stops a running cluster process (kube-apiserver, kube-proxy, ...) and
# starts it again with the same command line; the chaos tests use it mid-rollout.
restart() {
    local name=$1 file="$PIDS/$1" pid _ argv=()
    alive "$file" || die "$name is not running"
    read -r pid _ <"$file"
    mapfile -d '' argv <"/proc/$pid/cmdline"
    stop "$file" 20
    start "$name" "${argv[@]}"
    log "$name restarted"
}

status() {
    BINS="$("$here/build-bins.sh")"
    KUBECTL="$BINS/kubectl"
    healthy && node_ready
}

exec 9>"${CLUSTER_LOCK:-/tmp/sluice-cluster.lock}"
flock 9
case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
restart) restart "${2:?usage: $0 restart COMPONENT}" ;;
*) echo "usage: $0 up|down|status|restart COMPONENT" >&2; exit 2 ;;
esac
