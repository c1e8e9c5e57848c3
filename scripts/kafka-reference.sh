#!/usr/bin/env bash
# Apache Kafka reference broker for side-by-side runs with Spate.
#
#   scripts/kafka-reference.sh start    fetch Kafka (once), start one KRaft node, print bootstrap
#   scripts/kafka-reference.sh stop     kill it and remove its temporary directory
#   scripts/kafka-reference.sh status   print "running pid=N bootstrap=H:P dir=D"; exit 1 if not
#                                       running (printing "stopped dir=D" when data is kept)
#   scripts/kafka-reference.sh term     SIGTERM, wait for the process to exit (a controlled
#                                       shutdown), print the seconds it took; the data is kept
#   scripts/kafka-reference.sh kill9    SIGKILL, wait until the process is gone; the data is kept
#   scripts/kafka-reference.sh fetch    only fetch the jars
#
# `start` on the data a `term` or `kill9` kept starts the node again on it (no new format: the
# restart a real broker makes, log recovery after kill9 included); otherwise it formats a new
# temporary directory. `stop` removes the data either way, running or not.
#
# The broker jars and their dependencies come from Maven Central through `mvn` (no tarball
# download: this project's machines reach package registries only). They are cached under
# ~/.cache/spate/kafka-<version>. The node runs with the settings of a production broker
# (G1 with Kafka's own JVM flags, 1 GiB heap, no forced fsync, Kafka's thread counts) except for
# replication, which a single node cannot have: replication factor 1 and min.insync.replicas=1.
#
# Many partitions: Kafka's operations guide ("OS": file descriptor limits, max_map_count) asks
# for at least 100,000 open files for a broker, which keeps one descriptor per log segment (its
# .log file; the indexes are mapped and their descriptors closed), and counts two memory map
# areas per segment (its index and time index): a node with N partitions needs
# vm.max_map_count above 2N, and the guide warns that 50,000 partitions under the Linux default
# (65530) end in "OutOfMemoryError: Map failed". `start` raises the node's open-file limit to
# KAFKA_REF_NOFILE (beyond the hard limit that needs CAP_SYS_RESOURCE; without it, to the hard
# limit, saying so) and says when vm.max_map_count is below 262144, a machine-wide setting this
# script leaves alone (as root: `sysctl -w vm.max_map_count=262144`). Many partitions may also
# need more than the default heap: KAFKA_REF_HEAP.
#
# Environment:
#   KAFKA_VERSION         Kafka version to fetch (default 4.3.1)
#   KAFKA_REF_PORT        client port on 127.0.0.1 (default 19092; the controller uses +1)
#   KAFKA_REF_STATE_DIR   where the pid and paths of the node live (and the data dir it keeps
#                         between `term`/`kill9` and the next `start`)
#                         (default /tmp/spate-kafka-reference-<port>, so that nodes on
#                         different ports do not share state)
#   KAFKA_REF_READY_SECS  how long start waits for the broker (default 90)
#   KAFKA_REF_HEAP        the JVM heap, -Xms and -Xmx (default 1g)
#   KAFKA_REF_NOFILE      the node's open-file limit (default 1048576, at most fs.nr_open)
#   KAFKA_REF_TERM_SECS   how long `term` waits for the exit before it sends SIGKILL and fails
#                         (default 600)
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
# The Kafka distribution of this version logs through log4j2 behind slf4j 1.x.
LOG4J_VERSION="2.25.4"
PORT="${KAFKA_REF_PORT:-19092}"
CONTROLLER_PORT="$((PORT + 1))"
STATE_DIR="${KAFKA_REF_STATE_DIR:-/tmp/spate-kafka-reference-${PORT}}"
READY_SECS="${KAFKA_REF_READY_SECS:-90}"
TERM_SECS="${KAFKA_REF_TERM_SECS:-600}"
NOFILE="${KAFKA_REF_NOFILE:-1048576}"
# Below this many map areas, the Linux default among them, many partitions fail (see above).
MAP_COUNT_WANTED=262144
CACHE_DIR="${HOME}/.cache/spate/kafka-${KAFKA_VERSION}"
LIB_DIR="${CACHE_DIR}/libs"
HEAP="${KAFKA_REF_HEAP:-1g}"

log() { echo "kafka-reference: $*" >&2; }

# Prints the pid of the running node, or fails when there is none.
running_pid() {
    [[ -f "${STATE_DIR}/pid" ]] || return 1
    local pid
    pid="$(cat "${STATE_DIR}/pid")"
    # A recycled pid would pass kill -0; check that it is still our java process (a zombie's
    # cmdline is empty).
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

# True while the process exists and has not exited (a zombie has exited).
alive() {
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "${state}" && "${state}" != Z ]]
}

# Prints the data directory a `term` or `kill9` kept, or fails when there is none.
kept_dir() {
    local dir
    dir="$(cat "${STATE_DIR}/dir" 2>/dev/null)" || return 1
    [[ "${dir}" == /tmp/spate-kafka-ref.* && -f "${dir}/data/meta.properties" \
        && -f "${dir}/server.properties" ]] || return 1
    echo "${dir}"
}

# Raises this shell's open-file limit, which the node inherits, to NOFILE (capped by fs.nr_open).
raise_nofile() {
    local want="${NOFILE}" most hard
    most="$(cat /proc/sys/fs/nr_open 2>/dev/null || echo "${want}")"
    (( want <= most )) || want="${most}"
    hard="$(ulimit -Hn)"
    if [[ "${hard}" != unlimited ]] && (( hard < want )); then
        if ! ulimit -Hn "${want}" 2>/dev/null; then
            log "the open-file limit stays at ${hard} (raising a hard limit needs" \
                "CAP_SYS_RESOURCE), and Kafka keeps one descriptor per log segment: more than" \
                "about $(( hard - 500 )) partitions will fail."
            want="${hard}"
        fi
    fi
    ulimit -Sn "${want}"
}

check_map_count() {
    local count
    count="$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo "${MAP_COUNT_WANTED}")"
    if (( count < MAP_COUNT_WANTED )); then
        log "vm.max_map_count is ${count}, and Kafka maps two index files per partition, so" \
            "beyond about $(( count / 2 - 1000 )) partitions it fails with 'Map failed';" \
            "as root, 'sysctl -w vm.max_map_count=${MAP_COUNT_WANTED}' raises it."
    fi
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
# scripts/compare.sh's sweeps stop the whole process (SIGSTOP) while the other broker is
# measured (spate-bench sweep --pause-idle-brokers), up to a 30 s warm-up: the controller must
# not then fence its own broker for the heartbeats it missed (default 9 s).
broker.session.timeout.ms=120000
PROPS
    cat > "${dir}/log4j2.properties" <<LOG4J
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=${dir}/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
appender.state.type=File
appender.state.name=STATE
appender.state.fileName=${dir}/state.log
appender.state.layout.type=PatternLayout
appender.state.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
# Start-up and shutdown lines only, emptied before each start: start waits for this run's
# "Kafka Server started" without reading server.log, which grows by a few lines per partition.
logger.raft.name=kafka.server.KafkaRaftServer
logger.raft.level=INFO
logger.raft.appenderRef.state.ref=STATE
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
    local classpath="${LIB_DIR}/*"
    local dir
    if dir="$(kept_dir)"; then
        log "starting again on the data in ${dir}"
    else
        dir="$(mktemp -d /tmp/spate-kafka-ref.XXXXXX)"
        write_config "${dir}"
        # A cluster id is a base64url-encoded random 16-byte UUID (22 characters, no padding).
        local cluster_id
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        log "formatting ${dir} (cluster id ${cluster_id})"
        if ! java -cp "${classpath}" "-Dlog4j2.configurationFile=${dir}/log4j2.properties" \
            kafka.tools.StorageTool format -t "${cluster_id}" -c "${dir}/server.properties" \
            > "${dir}/format.log" 2>&1; then
            log "formatting the storage failed:"
            cat "${dir}/format.log" >&2
            rm -rf "${dir}"
            exit 1
        fi
    fi
    raise_nofile
    check_map_count
    # Kafka's kafka-run-class.sh and kafka-server-start.sh defaults.
    local jvm_opts=("-Xms${HEAP}" "-Xmx${HEAP}" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
        -XX:MaxInlineLevel=15 -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=${dir}/log4j2.properties")
    : > "${dir}/state.log"
    setsid java "${jvm_opts[@]}" -cp "${classpath}" kafka.Kafka "${dir}/server.properties" \
        >> "${dir}/stdout.log" 2>&1 < /dev/null &
    pid=$!
    echo "${pid}" > "${STATE_DIR}/pid"
    echo "${dir}" > "${STATE_DIR}/dir"
    echo "127.0.0.1:${PORT}" > "${STATE_DIR}/bootstrap"
    local waited=0
    until grep -q "Kafka Server started" "${dir}/state.log" 2>/dev/null && port_open "${PORT}"
    do
        if ! alive "${pid}"; then
            log "the broker exited during start-up; last lines of its log:"
            tail -20 "${dir}/server.log" "${dir}/stdout.log" >&2 || true
            grep -q "Map failed" "${dir}/server.log" "${dir}/stdout.log" 2>/dev/null \
                && check_map_count
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
        while alive "${pid}" && (( waited < 150 )); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if alive "${pid}"; then
            kill -KILL "${pid}" 2>/dev/null || true
            waited=0
            while alive "${pid}" && (( waited < 600 )); do
                sleep 0.1
                waited=$((waited + 1))
            done
        fi
        log "stopped pid ${pid}"
    else
        log "not running"
    fi
    cleanup_state
}

# Waits up to $2 times 50 ms for pid $1 to exit; fails if it has not.
wait_exit() {
    local waited=0
    while alive "$1"; do
        (( waited < $2 )) || return 1
        sleep 0.05
        waited=$((waited + 1))
    done
}

# SIGTERM, then the seconds until the process exited; the data stays for the next start.
term() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        exit 1
    fi
    local began="${EPOCHREALTIME}"
    kill -TERM "${pid}"
    if ! wait_exit "${pid}" $((TERM_SECS * 20)); then
        log "pid ${pid} still ran ${TERM_SECS} s after SIGTERM; killing it (the data is kept)."
        kill -KILL "${pid}" 2>/dev/null || true
        wait_exit "${pid}" 1200 || true
        rm -f "${STATE_DIR}/pid" "${STATE_DIR}/bootstrap"
        exit 1
    fi
    local ended="${EPOCHREALTIME}"
    rm -f "${STATE_DIR}/pid" "${STATE_DIR}/bootstrap"
    log "pid ${pid} exited after SIGTERM; data kept in $(cat "${STATE_DIR}/dir")"
    awk -v a="${began}" -v b="${ended}" 'BEGIN { printf "%.2f\n", b - a }'
}

# SIGKILL: no shutdown at all; the data stays for the next start (which recovers the logs).
kill9() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        exit 1
    fi
    kill -KILL "${pid}"
    if ! wait_exit "${pid}" 1200; then
        log "pid ${pid} still exists 60 s after SIGKILL."
        exit 1
    fi
    rm -f "${STATE_DIR}/pid" "${STATE_DIR}/bootstrap"
    log "killed pid ${pid}; data kept in $(cat "${STATE_DIR}/dir")"
}

status() {
    local pid dir
    if pid="$(running_pid)"; then
        echo "running pid=${pid} bootstrap=$(cat "${STATE_DIR}/bootstrap")" \
            "dir=$(cat "${STATE_DIR}/dir")"
    elif dir="$(kept_dir)"; then
        echo "stopped dir=${dir}"
        exit 1
    else
        echo "not running"
        exit 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    term) term ;;
    kill9) kill9 ;;
    fetch) fetch_jars ;;
    *)
        echo "usage: $0 start|stop|status|term|kill9|fetch" >&2
        exit 64
        ;;
esac
