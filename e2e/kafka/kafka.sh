#!/usr/bin/env bash
# The local cluster's Kafka broker: Apache Kafka 4.4 (the jars e2e/kafka/deps.sh
# installs), run on the host as one JVM in KRaft mode, broker and controller in one
# process, with its log directory under the cluster's state directory. By default
# it listens on the bridge's host address (10.213.0.1, the pods' gateway), which
# pods and the host both reach; the controller listens on the same address.
#
#   kafka.sh start     start it, or reuse the running one; prints its env line
#   kafka.sh stop      stop it; its topics, offsets and transactions stay for the next start
#   kafka.sh restart   stop it, then start it on the same log directory (a broker restart)
#   kafka.sh env       print the env line of the running one (exit 1 when none runs)
#   kafka.sh status    exit 0 when it runs and accepts connections
#   kafka.sh topic NAME PARTITIONS
#                      create the topic (replication factor 1) with the broker's own
#                      TopicCommand; an existing topic is no error (its partitions stay)
#
# The env line, also in $CLUSTER_DIR/kafka/env: KAFKA_BOOTSTRAP_SERVERS=host:port.
#
# The broker's settings (written to $CLUSTER_DIR/kafka/server.properties at each
# start) make one node do what a cluster does for the tests: the internal topics
# (consumer offsets, transaction state) have replication factor 1 and min.insync 1,
# or consumer groups and transactions would wait for replicas that never come; one
# partition each, not 50, so the first group or transaction does not create 50;
# group.initial.rebalance.delay.ms=0, so a consumer group's first member gets its
# partitions at once, not after 3 s. auto.create.topics.enable=false: a topic
# exists only when created (`kafka.sh topic`, or the code under test), with the
# partitions it was created with; a misspelt topic is an error, as on most
# production clusters, not a new one-partition topic. The controller's address is
# a static voter (controller.quorum.voters), read from the settings at each start,
# so the broker may move (SLUICE_KAFKA_ADDRESS, ports) between starts and keep its
# data. Memory: heap SLUICE_KAFKA_HEAP (256m), the log cleaner's dedupe buffer
# 4 MiB (128 MiB by default, on the heap); idle, the broker holds about 200 MB.
#
# Settings: SLUICE_KAFKA_ADDRESS (default: the bridge's address, from
# SLUICE_POD_CIDR as in cluster.sh; 127.0.0.1 works without a cluster),
# SLUICE_KAFKA_PORT (9092), SLUICE_KAFKA_CONTROLLER_PORT (9093),
# SLUICE_KAFKA_HEAP (256m), SLUICE_KAFKA_TIMEOUT (seconds to wait for the broker,
# 60), JAVA_HOME, CLUSTER_DIR. Only the process recorded in $CLUSTER_DIR/kafka/pid
# (PID plus start time) is ever signalled; `make cluster-down` stops it too and
# removes its data with the rest of .cluster/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="${REPO_ROOT:-$(cd "$here/../.." && pwd)}"
CLUSTER_DIR="${CLUSTER_DIR:-$REPO_ROOT/.cluster}"
POD_CIDR="${SLUICE_POD_CIDR:-10.213.0.0/24}"
prefix=${POD_CIDR%/*}; prefix=${prefix%.*}
ADDRESS="${SLUICE_KAFKA_ADDRESS:-$prefix.1}"
PORT="${SLUICE_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${SLUICE_KAFKA_CONTROLLER_PORT:-9093}"
HEAP="${SLUICE_KAFKA_HEAP:-256m}"
TIMEOUT="${SLUICE_KAFKA_TIMEOUT:-60}"
KAFKA_DIR="$CLUSTER_DIR/kafka"
PIDFILE="$KAFKA_DIR/pid"
ENV_FILE="$KAFKA_DIR/env"
LOG="$CLUSTER_DIR/logs/kafka.log"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
# The line KafkaRaftServer logs once the broker is registered, unfenced and its
# listeners accept requests.
READY="Kafka Server started"

log() { echo "kafka: $*" >&2; }
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

# answers HOST:PORT: something accepts TCP connections there.
answers() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# kafka_java HEAP ARGS...: a JVM for a tool on the installed jars ($LIBS).
kafka_java() {
    local heap=$1; shift
    command -v "$JAVA" >/dev/null || die "Kafka needs Java 17 or newer: no $JAVA (install a JDK or set JAVA_HOME)"
    "$JAVA" "-Xmx$heap" -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
        -cp "$LIBS/*" "$@"
}

# log4j_config LEVEL TARGET: a Log4j 2 configuration that writes LEVEL and above
# to TARGET (SYSTEM_OUT or SYSTEM_ERR).
log4j_config() {
    printf '%s\n' "status = warn" "appender.out.type = Console" "appender.out.name = out" \
        "appender.out.target = $2" "appender.out.layout.type = PatternLayout" \
        "appender.out.layout.pattern = [%d] %p %m (%c)%n" "rootLogger.level = $1" \
        "rootLogger.appenderRef.out.ref = out"
}

# write_config: the broker's and the tools' settings, from this start's environment.
write_config() {
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by e2e/kafka/kafka.sh at each start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$ADDRESS:$CONTROLLER_PORT
listeners=PLAINTEXT://$ADDRESS:$PORT,CONTROLLER://$ADDRESS:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$ADDRESS:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.dedupe.buffer.size=4194304
EOF
    # The broker logs INFO to stdout (the log file); the tools only warnings and
    # errors, to stderr.
    log4j_config INFO SYSTEM_OUT >"$KAFKA_DIR/log4j2.properties"
    log4j_config WARN SYSTEM_ERR >"$KAFKA_DIR/tools-log4j2.properties"
}

start() {
    local bootstrap="$ADDRESS:$PORT" id from pid i
    if alive; then
        [[ "$(value KAFKA_BOOTSTRAP_SERVERS)" == "$bootstrap" ]] ||
            die "already running at $(value KAFKA_BOOTSTRAP_SERVERS); stop it first (make kafka-down) to move it to $bootstrap"
        answers "$bootstrap" || die "the recorded broker does not accept connections at $bootstrap (log: $LOG); stop it (make kafka-down) and start again"
        log "reusing the running Kafka broker at $bootstrap ($ENV_FILE)"
        cat "$ENV_FILE"
        return 0
    fi
    LIBS="$("$here/deps.sh")"
    if [[ "$(ip -o addr show 2>/dev/null)" != *" inet $ADDRESS/"* ]]; then
        die "no interface of this host has the address $ADDRESS: start the local cluster first (make cluster), or set SLUICE_KAFKA_ADDRESS (127.0.0.1 needs no cluster)"
    fi
    for i in "$PORT" "$CONTROLLER_PORT"; do
        ! answers "$ADDRESS:$i" ||
            die "port $i on $ADDRESS is already in use (set SLUICE_KAFKA_PORT and SLUICE_KAFKA_CONTROLLER_PORT)"
    done
    mkdir -p "$KAFKA_DIR" "$(dirname "$LOG")"
    write_config
    # The log directory is formatted once per state directory, with a random cluster
    # ID (16 bytes, base64url, as `kafka-storage random-uuid` makes it).
    if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
        log "formatting $KAFKA_DIR/data (KRaft, cluster ID $id)"
        kafka_java 128m -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format \
            --cluster-id="$id" --config "$KAFKA_DIR/server.properties" >>"$LOG" 2>&1 ||
            die "formatting $KAFKA_DIR/data failed; its log ($LOG) ends with:
$(tail -n 20 "$LOG")"
    fi
    from=$(($(stat -c %s "$LOG" 2>/dev/null || echo 0) + 1))
    # 9>&-: the broker must not inherit (and hold) the cluster lock.
    setsid "$JAVA" "-Xmx$HEAP" -Xms32m -XX:+UseSerialGC \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
        -cp "$LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" >>"$LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid $(start_time "$pid")" >"$PIDFILE"
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        tail -c "+$from" "$LOG" | grep -q "$READY" && answers "$bootstrap" && break
        alive || { rm -f "$PIDFILE"; die "the broker exited; its log ($LOG) ends with:
$(tail -c "+$from" "$LOG" | tail -n 20)"; }
        sleep 0.1
    done
    if ! answers "$bootstrap"; then
        stop_broker
        die "the broker was not ready at $bootstrap within ${TIMEOUT}s; its log ($LOG) ends with:
$(tail -c "+$from" "$LOG" | tail -n 20)"
    fi
    echo "KAFKA_BOOTSTRAP_SERVERS=$bootstrap" >"$ENV_FILE"
    log "Kafka broker at $bootstrap (data in $KAFKA_DIR/data, log $LOG); env line in $ENV_FILE"
    cat "$ENV_FILE"
}

# stop_broker: SIGTERM to the recorded process (a controlled shutdown, usually under
# a second), SIGKILL after 30 s.
stop_broker() {
    local pid start i
    if alive; then
        read -r pid start <"$PIDFILE"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do alive || break; sleep 0.1; done
        if alive; then
            log "the broker ignored SIGTERM for 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$PIDFILE"
}

stop() {
    if alive; then
        stop_broker
        log "stopped (data kept in $KAFKA_DIR/data)"
    else
        rm -f "$PIDFILE"
        log "no Kafka broker runs for $CLUSTER_DIR"
    fi
}

case "${1:-}" in
start | stop | restart)
    exec 9>"${CLUSTER_LOCK:-/tmp/sluice-cluster.lock}"
    flock 9
    case $1 in
    start) start ;;
    stop) stop ;;
    restart) stop && start ;;
    esac
    ;;
env)
    alive || die "no Kafka broker runs for $CLUSTER_DIR (make kafka-up)"
    cat "$ENV_FILE"
    ;;
status)
    alive && answers "$(value KAFKA_BOOTSTRAP_SERVERS)"
    ;;
topic)
    [[ $# == 3 && $3 =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 topic NAME PARTITIONS" >&2; exit 2; }
    alive || die "no Kafka broker runs for $CLUSTER_DIR (make kafka-up)"
    LIBS="$("$here/deps.sh" --cached)" || die "the Kafka jars are missing (make kafka-deps)"
    kafka_java 128m -XX:TieredStopAtLevel=1 org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$(value KAFKA_BOOTSTRAP_SERVERS)" --create --if-not-exists \
        --topic "$2" --partitions "$3" --replication-factor 1
    ;;
*)
    echo "usage: $0 start|stop|restart|env|status|topic" >&2
    exit 2
    ;;
esac
