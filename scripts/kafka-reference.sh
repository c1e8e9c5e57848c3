#!/usr/bin/env bash
# Apache Kafka reference broker for side-by-side runs with Spate.
#
#   scripts/kafka-reference.sh start    fetch Kafka (once), start one KRaft node, print bootstrap
#   scripts/kafka-reference.sh stop     kill it and remove its temporary directory
#   scripts/kafka-reference.sh status   print "running pid=N bootstrap=H:P dir=D", exit 1 if not
#
# The broker jars and their dependencies come from Maven Central through `mvn` (no tarball
# download: this project's machines reach package registries only). They are cached under
# ~/.cache/spate/kafka-<version>. The node runs with the settings of a production broker
# (G1 with Kafka's own JVM flags, 1 GiB heap, no forced fsync, Kafka's thread counts) except for
# replication, which a single node cannot have: replication factor 1 and min.insync.replicas=1.
#
# Environment:
#   KAFKA_VERSION         Kafka version to fetch (default 4.3.1)
#   KAFKA_REF_PORT        client port on 127.0.0.1 (default 19092; the controller uses +1)
#   KAFKA_REF_STATE_DIR   where the pid and paths of the running node live
#                         (default /tmp/spate-kafka-reference-<port>, so that nodes on
#                         different ports do not share state)
#   KAFKA_REF_READY_SECS  how long start waits for the broker (default 90)
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
# The Kafka distribution of this version logs through log4j2 behind slf4j 1.x.
LOG4J_VERSION="2.25.4"
PORT="${KAFKA_REF_PORT:-19092}"
CONTROLLER_PORT="$((PORT + 1))"
STATE_DIR="${KAFKA_REF_STATE_DIR:-/tmp/spate-kafka-reference-${PORT}}"
READY_SECS="${KAFKA_REF_READY_SECS:-90}"
CACHE_DIR="${HOME}/.cache/spate/kafka-${KAFKA_VERSION}"
LIB_DIR="${CACHE_DIR}/libs"
HEAP="1g"

log() { echo "kafka-reference: $*" >&2; }

# Prints the pid of the running node, or fails when there is none.
running_pid() {
    [[ -f "${STATE_DIR}/pid" ]] || return 1
    local pid
    pid="$(cat "${STATE_DIR}/pid")"
    # A recycled pid would pass kill -0; check that it is still our java process.
    if kill -0 "${pid}" 2>/dev/null && grep -q kafka.Kafka "/proc/${pid}/cmdline" 2>/dev/null; then
        echo "${pid}"
        return 0
    fi
    return 1
}

fetch_jars() {
    if [[ -f "${LIB_DIR}/.complete" ]]; then
        return 0
    fi
    if ! command -v mvn >/dev/null; then
        log "Maven (mvn) is not installed, so Apache Kafka cannot be fetched; install it" \
            "with 'apt-get install -y maven'."
        exit 3
    fi
    if ! command -v java >/dev/null; then
        log "Java is not installed; Kafka ${KAFKA_VERSION} needs Java 17 or newer."
        exit 3
    fi
    mkdir -p "${CACHE_DIR}"
    cat > "${CACHE_DIR}/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>spate.local</groupId>
  <artifactId>kafka-reference</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
POM
    log "fetching Apache Kafka ${KAFKA_VERSION} jars from Maven Central into ${LIB_DIR}"
    rm -rf "${LIB_DIR}"
    if ! mvn -q -B -f "${CACHE_DIR}/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="${LIB_DIR}" -DincludeScope=runtime > "${CACHE_DIR}/mvn.log" 2>&1; then
        log "Maven Central is not reachable from this machine (or does not serve Kafka" \
            "${KAFKA_VERSION}), so the reference broker cannot start; see ${CACHE_DIR}/mvn.log."
        exit 2
    fi
    touch "${LIB_DIR}/.complete"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_config() {
    local dir="$1"
    cat > "${dir}/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${CONTROLLER_PORT}
listeners=PLAINTEXT://127.0.0.1:${PORT},CONTROLLER://127.0.0.1:${CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:${PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=${dir}/data
metadata.log.dir=${dir}/metadata
# Kafka's shipped server.properties values: durability comes from replication, not fsync.
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.segment.bytes=1073741824
log.retention.hours=168
log.retention.check.interval.ms=300000
num.recovery.threads.per.data.dir=1
# One node: nothing to replicate to. Topics created on first use get 4 partitions, like
# Spate's default in the side-by-side runs.
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
    cat > "${dir}/log4j2.properties" <<LOG4J
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=${dir}/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.apache.name=org.apache.kafka
logger.apache.level=INFO
LOG4J
}

start() {
    local pid
    if pid="$(running_pid)"; then
        log "already running (pid ${pid})"
        echo "127.0.0.1:${PORT}"
        return 0
    fi
    if port_open "${PORT}"; then
        log "port ${PORT} on 127.0.0.1 is taken by another process; set KAFKA_REF_PORT."
        exit 1
    fi
    fetch_jars
    mkdir -p "${STATE_DIR}"
    local dir
    dir="$(mktemp -d /tmp/spate-kafka-ref.XXXXXX)"
    write_config "${dir}"
    # A cluster id is a base64url-encoded random 16-byte UUID (22 characters, no padding).
    local cluster_id
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    local classpath="${LIB_DIR}/*"
    # Kafka's kafka-run-class.sh and kafka-server-start.sh defaults.
    local jvm_opts=(-Xms${HEAP} -Xmx${HEAP} -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
        -XX:MaxInlineLevel=15 -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=${dir}/log4j2.properties")
    log "formatting ${dir} (cluster id ${cluster_id})"
    if ! java -cp "${classpath}" "-Dlog4j2.configurationFile=${dir}/log4j2.properties" \
        kafka.tools.StorageTool format -t "${cluster_id}" -c "${dir}/server.properties" \
        > "${dir}/format.log" 2>&1; then
        log "formatting the storage failed:"
        cat "${dir}/format.log" >&2
        rm -rf "${dir}"
        exit 1
    fi
    setsid java "${jvm_opts[@]}" -cp "${classpath}" kafka.Kafka "${dir}/server.properties" \
        > "${dir}/stdout.log" 2>&1 < /dev/null &
    pid=$!
    echo "${pid}" > "${STATE_DIR}/pid"
    echo "${dir}" > "${STATE_DIR}/dir"
    echo "127.0.0.1:${PORT}" > "${STATE_DIR}/bootstrap"
    local waited=0
    until grep -q "Kafka Server started" "${dir}/server.log" 2>/dev/null && port_open "${PORT}"
    do
        if ! kill -0 "${pid}" 2>/dev/null; then
            log "the broker exited during start-up; last lines of its log:"
            tail -20 "${dir}/server.log" "${dir}/stdout.log" >&2 || true
            cleanup_state
            exit 1
        fi
        if (( waited >= READY_SECS * 10 )); then
            log "the broker was not ready after ${READY_SECS} s; stopping it."
            stop
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    log "ready: pid ${pid}, data in ${dir}"
    echo "127.0.0.1:${PORT}"
}

cleanup_state() {
    local dir
    dir="$(cat "${STATE_DIR}/dir" 2>/dev/null || true)"
    if [[ -n "${dir}" && "${dir}" == /tmp/spate-kafka-ref.* ]]; then
        rm -rf "${dir}"
    fi
    rm -f "${STATE_DIR}/pid" "${STATE_DIR}/dir" "${STATE_DIR}/bootstrap"
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        kill -TERM "${pid}" 2>/dev/null || true
        # A controlled shutdown takes a few seconds; after that, stop waiting.
        local waited=0
        while kill -0 "${pid}" 2>/dev/null && (( waited < 150 )); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "${pid}" 2>/dev/null; then
            kill -KILL "${pid}" 2>/dev/null || true
        fi
        log "stopped pid ${pid}"
    else
        log "not running"
    fi
    cleanup_state
}

status() {
    local pid
    if pid="$(running_pid)"; then
        echo "running pid=${pid} bootstrap=$(cat "${STATE_DIR}/bootstrap")" \
            "dir=$(cat "${STATE_DIR}/dir")"
    else
        echo "not running"
        exit 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    fetch) fetch_jars ;;
    *)
        echo "usage: $0 start|stop|status|fetch" >&2
        exit 64
        ;;
esac
