#!/usr/bin/env bash
# The local cluster's S3 server: s3s-fs (e2e/s3/deps.sh), run on the host and
# serving a folder under the cluster's state directory. By default it listens on
# the bridge's host address (10.213.0.1, the pods' gateway), which pods and the
# host both reach. It verifies AWS Signature Version 4 and refuses unsigned
# requests, as S3 does.
#
#   s3.sh start    start it, or reuse the running one; prints its env lines
#   s3.sh stop     stop it; its objects and credentials stay for the next start
#   s3.sh env      print the env lines of the running one (exit 1 when none runs)
#   s3.sh status   exit 0 when it runs and answers
#   s3.sh mb BUCKET | put FILE BUCKET/KEY | get BUCKET/KEY [FILE] | ls BUCKET [PREFIX] | rm BUCKET/KEY
#                  requests to the running server, signed with its credentials (curl
#                  --aws-sigv4); ls prints every key under PREFIX, one a line
#
# The env lines, also in $CLUSTER_DIR/s3/env: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY and AWS_REGION, what `sluice-server fetch` and `batch` read;
# the file makes the Secret a model's credentialsSecret names:
#   $KUBECTL create secret generic model-store --from-env-file=.cluster/s3/env
#
# Settings: SLUICE_S3_ADDRESS (default: the bridge's address, from SLUICE_POD_CIDR
# as in cluster.sh; 127.0.0.1 works without a cluster), SLUICE_S3_PORT (9000),
# SLUICE_S3_ACCESS_KEY and SLUICE_S3_SECRET_KEY (default: random, made at the first
# start and kept with the objects), CLUSTER_DIR. Only the process recorded in
# $CLUSTER_DIR/s3/pid (PID plus start time) is ever signalled; `make cluster-down`
# stops it too and removes its objects with the rest of .cluster/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="${REPO_ROOT:-$(cd "$here/../.." && pwd)}"
CLUSTER_DIR="${CLUSTER_DIR:-$REPO_ROOT/.cluster}"
POD_CIDR="${SLUICE_POD_CIDR:-10.213.0.0/24}"
prefix=${POD_CIDR%/*}; prefix=${prefix%.*}
ADDRESS="${SLUICE_S3_ADDRESS:-$prefix.1}"
PORT="${SLUICE_S3_PORT:-9000}"
S3_DIR="$CLUSTER_DIR/s3"
PIDFILE="$S3_DIR/pid"
ENV_FILE="$S3_DIR/env"
LOG="$CLUSTER_DIR/logs/s3.log"

log() { echo "s3: $*" >&2; }
die() { log "error: $*"; exit 1; }

start_time() { [[ -r /proc/$1/stat ]] && awk '{sub(/.*\) /, ""); print $20}' "/proc/$1/stat"; }

# alive: the recorded process still runs (a zombie waiting for its reaper does not).
alive() {
    local pid start
    [[ -f $PIDFILE ]] || return 1
    read -r pid start <"$PIDFILE" || return 1
    [[ -n $pid && -r /proc/$pid/stat ]] || return 1
    [[ "$(awk '{sub(/.*\) /, ""); print $1, $20}' "/proc/$pid/stat" 2>/dev/null)" =~ ^[^Z]\ $start$ ]]
}

# value NAME: NAME's value in the env file.
value() { if [[ -f $ENV_FILE ]]; then sed -n "s/^$1=//p" "$ENV_FILE"; fi; }

# answers URL: an S3 server answers there (s3s-fs refuses an unsigned request with 403).
answers() { [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1/" 2>/dev/null)" == 403 ]]; }

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

start() {
    local endpoint="http://$ADDRESS:$PORT" bin key secret i
    if alive; then
        [[ "$(value AWS_ENDPOINT_URL)" == "$endpoint" ]] ||
            die "already running at $(value AWS_ENDPOINT_URL); stop it first (make s3-down) to move it to $endpoint"
        [[ ${SLUICE_S3_ACCESS_KEY:-$(value AWS_ACCESS_KEY_ID)} == "$(value AWS_ACCESS_KEY_ID)" &&
            ${SLUICE_S3_SECRET_KEY:-$(value AWS_SECRET_ACCESS_KEY)} == "$(value AWS_SECRET_ACCESS_KEY)" ]] ||
            die "already running with other credentials than SLUICE_S3_*; stop it first (make s3-down)"
        answers "$endpoint" || die "the recorded server does not answer at $endpoint (log: $LOG); stop it (make s3-down) and start again"
        log "reusing the running S3 server at $endpoint ($ENV_FILE)"
        cat "$ENV_FILE"
        return 0
    fi
    bin="$("$here/deps.sh")"
    if [[ "$(ip -o addr show 2>/dev/null)" != *" inet $ADDRESS/"* ]]; then
        die "no interface of this host has the address $ADDRESS: start the local cluster first (make cluster), or set SLUICE_S3_ADDRESS (127.0.0.1 needs no cluster)"
    fi
    if (exec 3<>"/dev/tcp/$ADDRESS/$PORT") 2>/dev/null; then
        die "port $PORT on $ADDRESS is already in use (set SLUICE_S3_PORT)"
    fi
    mkdir -p "$S3_DIR/data" "$(dirname "$LOG")"
    # Credentials are made once per state directory, so objects and Secrets made
    # with them stay valid across restarts; SLUICE_S3_* replace them.
    key="${SLUICE_S3_ACCESS_KEY:-$(value AWS_ACCESS_KEY_ID)}"
    secret="${SLUICE_S3_SECRET_KEY:-$(value AWS_SECRET_ACCESS_KEY)}"
    [[ -n $key ]] || key="sluice-$(random_hex 4)"
    [[ -n $secret ]] || secret="$(random_hex 20)"
    (
        umask 077
        printf '%s\n' "AWS_ENDPOINT_URL=$endpoint" "AWS_ACCESS_KEY_ID=$key" \
            "AWS_SECRET_ACCESS_KEY=$secret" "AWS_REGION=us-east-1" >"$ENV_FILE"
    )
    # 9>&-: the server must not inherit (and hold) the cluster lock.
    setsid env RUST_LOG="${RUST_LOG:-s3s_fs=info,s3s=warn}" "$bin" --host "$ADDRESS" --port "$PORT" \
        --access-key "$key" --secret-key "$secret" "$S3_DIR/data" >>"$LOG" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$PIDFILE"
    for ((i = 0; i < 100; i++)); do
        answers "$endpoint" && break
        alive || die "s3s-fs exited at once; its log ($LOG) ends with:
$(tail -n 5 "$LOG")"
        sleep 0.1
    done
    answers "$endpoint" || { stop_server; die "s3s-fs did not answer at $endpoint within 10s (log: $LOG)"; }
    log "S3 server at $endpoint (objects in $S3_DIR/data, log $LOG); env lines in $ENV_FILE"
    cat "$ENV_FILE"
}

# stop_server: SIGTERM to the recorded process, SIGKILL after 10 s.
stop_server() {
    local pid start i
    if alive; then
        read -r pid start <"$PIDFILE"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do alive || break; sleep 0.1; done
        if alive; then
            log "s3s-fs ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$PIDFILE"
}

# s3curl PATH [CURL ARGS...]: a request to the running server, signed in its
# Authorization header. S3 wants the payload's hash header; UNSIGNED-PAYLOAD is one.
s3curl() {
    alive || die "no S3 server runs for $CLUSTER_DIR (make s3-up)"
    local path=$1; shift
    curl -sS --fail-with-body --aws-sigv4 "aws:amz:$(value AWS_REGION):s3" \
        --user "$(value AWS_ACCESS_KEY_ID):$(value AWS_SECRET_ACCESS_KEY)" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" "$(value AWS_ENDPOINT_URL)/$path"
}

# encode BUCKET/KEY: the path percent-encoded as S3 signs it (all but A-Za-z0-9-._~/).
encode() { python3 -c 'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe="/~"))' "$1"; }

# query NAME VALUE...: a query string of the pairs whose value is not empty,
# percent-encoded (curl signs the query as written).
query() {
    python3 -c 'import sys, urllib.parse as u
a = sys.argv[1:]
print(u.urlencode([(k, v) for k, v in zip(a[::2], a[1::2]) if v], quote_via=u.quote, safe=""))' "$@"
}

# list BUCKET PREFIX: every key under PREFIX, following continuation tokens.
list() {
    local token="" page line
    while :; do
        page=$(s3curl "$(encode "$1")?$(query continuation-token "$token" list-type 2 prefix "$2")")
        token=""
        while IFS= read -r line; do
            case $line in
            K\ *) printf '%s\n' "${line#K }" ;;
            T\ *) token=${line#T } ;;
            esac
        done < <(python3 -c 'import sys, xml.etree.ElementTree as T
root = T.fromstring(sys.stdin.read())
for key in root.iterfind("{*}Contents/{*}Key"): print("K", key.text)
if root.findtext("{*}IsTruncated") == "true": print("T", root.findtext("{*}NextContinuationToken"))' <<<"$page")
        [[ -n $token ]] || break
    done
}

case "${1:-}" in
start | stop)
    exec 9>"${CLUSTER_LOCK:-/tmp/sluice-cluster.lock}"
    flock 9
    if [[ $1 == start ]]; then
        start
    elif alive; then
        stop_server
        log "stopped (objects kept in $S3_DIR/data)"
    else
        rm -f "$PIDFILE"
        log "no S3 server runs for $CLUSTER_DIR"
    fi
    ;;
env)
    alive || die "no S3 server runs for $CLUSTER_DIR (make s3-up)"
    cat "$ENV_FILE"
    ;;
status)
    alive && answers "$(value AWS_ENDPOINT_URL)"
    ;;
mb) # An existing bucket is no error.
    alive || die "no S3 server runs for $CLUSTER_DIR (make s3-up)"
    s3curl "$(encode "${2:?usage: $0 mb BUCKET}")" -o /dev/null -I 2>/dev/null ||
        s3curl "$(encode "$2")" -o /dev/null -X PUT
    ;;
put) s3curl "$(encode "${3:?usage: $0 put FILE BUCKET/KEY}")" -o /dev/null -T "$2" ;;
get) s3curl "$(encode "${2:?usage: $0 get BUCKET/KEY [FILE]}")" -o "${3:--}" ;;
rm) s3curl "$(encode "${2:?usage: $0 rm BUCKET/KEY}")" -o /dev/null -X DELETE ;;
ls) list "${2:?usage: $0 ls BUCKET [PREFIX]}" "${3:-}" ;;
*)
    echo "usage: $0 start|stop|env|status|mb|put|get|ls|rm" >&2
    exit 2
    ;;
esac
