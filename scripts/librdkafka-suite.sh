#!/usr/bin/env bash
# Runs librdkafka's own test suite against Spate (or any Kafka broker) and checks the allowlist.
#
#   scripts/librdkafka-suite.sh                      the allowlisted tests, against a Spate
#                                                    broker this script starts and stops
#   scripts/librdkafka-suite.sh --tests 0001,0017    just these tests (by number)
#   scripts/librdkafka-suite.sh --tests all          every test: to count how many pass
#   scripts/librdkafka-suite.sh --bootstrap H:P      against a broker that is already running
#   scripts/librdkafka-suite.sh --tests 0081 --allowlist   these tests and the allowlist
#   scripts/librdkafka-suite.sh --summarize /tmp/librdkafka-suite.XXXXXX   verdicts of a past run
#   scripts/librdkafka-suite.sh --group-protocol consumer   the consumer groups' tests with
#                                                    KIP-848's protocol, against their own
#                                                    allowlist (allowlist-consumer-protocol.txt)
#   scripts/librdkafka-suite.sh --share              the share consumer's tests (KIP-932), as a
#                                                    Kafka 4.2 broker, in full rather than quick
#                                                    mode, against their own allowlist
#                                                    (allowlist-share.txt)
#   scripts/librdkafka-suite.sh --prepare            only fetch and build what the runs need
#                                                    (scripts/test.sh does it while other tests
#                                                    run)
#
# librdkafka's source comes from the npm package @confluentinc/kafka-javascript, which ships it
# in deps/librdkafka (this project's machines reach package registries, not GitHub). The
# source, its libraries and its test-runner are built once and cached under ~/.cache/spate/;
# nothing of librdkafka is written into the repository.
#
# Some tests call Kafka's command-line tools (kafka-topics.sh, kafka-configs.sh, kafka-acls.sh)
# through $KAFKA_PATH/bin. Apache Kafka's jars come from Maven Central through `mvn` (Java 17+
# runs them), are cached under ~/.cache/spate/kafka-tools-<version>/, and small wrappers there
# run the tools' Java classes; KAFKA_PATH and BROKERS point the tests at them.
#
# The broker runs as librdkafka's own test clusters run Kafka (trivup): the ACL authorizer on
# with allow.everyone.if.no.acl.found=true and super.users=User:admin, so that the
# authorization tests (0115, 0119, 0109's unauthorized topic) can deny a topic with
# kafka-acls.sh, and Kafka's default log.retention.check.interval.ms (5 minutes): 0052 writes
# records stamped in 1970 (seconds + 24 h added as milliseconds) and reads them back, which
# only a retention check that does not come round within seconds allows.
#
# The test-runner's summary table, not only its exit code, decides the result: every test in
# tests/librdkafka/allowlist.txt that ran must be PASSED. The script exits 0 when all of them
# pass, 1 when one fails (or the run timed out before the table), 2 on a set-up problem.
#
# Environment:
#   SPATE_REPO            the repository (default: this script's parent directory)
#   SPATE_BIN             broker binary (default <repo>/target/release/spate)
#   LIBRDKAFKA_NPM_PKG    npm package that carries librdkafka's source
#                         (default @confluentinc/kafka-javascript@1.10.1)
#   SUITE_TIMEOUT_SECS    bound on the whole test-runner run (default 1800; 7200 for "all")
#   TEST_KAFKA_VERSION    broker version the tests assume (default 4.0.0: Spate speaks Kafka 4's
#                         protocol, without the pre-0.10 requests and message formats that
#                         Kafka 4.0 removed (KIP-896), which tests then leave out, as 0052 does)
#   SHARE_KAFKA_VERSION   the broker version --share runs as (default 4.2.0, the first Kafka
#                         whose share groups are generally available; the tests ask for it)
#   TEST_TIMEOUT_MULT     test.timeout.multiplier in test.conf (default 2: a busy 2-core box)
#   TEST_TIMEOUT_SECS     bound on each test number's run (default 600)
#   SUITE_JOBS            test numbers run at once against the one broker (default 3: most
#                         of a test's time is spent waiting on timeouts, not on the CPU)
#   KAFKA_TOOLS_VERSION   Apache Kafka version whose tools the tests call (default 4.3.1)
#   SPATE_SUITE_ARGS      extra broker flags (default "--segment-bytes 2097152": the suite
#                         creates hundreds of 4-partition topics and each partition's segment
#                         reserves disk ahead of its writes; small segments keep that small)
set -euo pipefail

REPO="${SPATE_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
ALLOWLIST="${REPO}/tests/librdkafka/allowlist.txt"
SPATE_BIN="${SPATE_BIN:-${REPO}/target/release/spate}"
NPM_PKG="${LIBRDKAFKA_NPM_PKG:-@confluentinc/kafka-javascript@1.10.1}"
CACHE="${HOME}/.cache/spate"
PKG_VERSION="${NPM_PKG##*@}"
SRC="${CACHE}/librdkafka-src-${PKG_VERSION}"
KAFKA_TOOLS_VERSION="${KAFKA_TOOLS_VERSION:-4.3.1}"
# The Kafka distribution of this version logs through log4j2 behind slf4j 1.x.
KAFKA_TOOLS_LOG4J_VERSION="2.25.4"
KAFKA_TOOLS="${CACHE}/kafka-tools-${KAFKA_TOOLS_VERSION}"
export TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.0.0}"
QUICK="-Q"
# librdkafka reads CI: longer timeouts, at most 3 tests at once, and timing-only tests skip
# themselves. Set it always so that a run here behaves as the CI run does.
export CI="${CI:-1}"
TIMEOUT_MULT="${TEST_TIMEOUT_MULT:-2}"

log() { echo "librdkafka-suite: $*" >&2; }
die() { log "$*"; exit 2; }

usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 64
}

bootstrap=""
tests=""
use_allowlist=0
summarize_dir=""
prepare_only=0
while (( $# )); do
    case "$1" in
        --prepare) prepare_only=1; shift ;;
        --bootstrap) bootstrap="${2:?--bootstrap needs HOST:PORT}"; shift 2 ;;
        --tests) tests="${2:?--tests needs a list such as 0001,0017 or all}"; shift 2 ;;
        --allowlist) use_allowlist=1; shift ;;
        --summarize) summarize_dir="${2:?--summarize needs a run directory}"; shift 2 ;;
        --group-protocol)
            # librdkafka's tests read TEST_CONSUMER_GROUP_PROTOCOL (test.c): "consumer" runs
            # their consumers with group.protocol=consumer (KIP-848) and skips the tests
            # that only apply to the classic protocol.
            case "${2:-}" in
                consumer)
                    export TEST_CONSUMER_GROUP_PROTOCOL=consumer
                    ALLOWLIST="${REPO}/tests/librdkafka/allowlist-consumer-protocol.txt" ;;
                classic) ;;
                *) die "--group-protocol takes classic or consumer" ;;
            esac
            shift 2 ;;
        --share)
            # The share consumer's tests ask for a 4.2 broker, and most of their sub-tests
            # are not "quick": in quick mode (-Q) they pass without running.
            export TEST_KAFKA_VERSION="${SHARE_KAFKA_VERSION:-4.2.0}"
            QUICK=""
            ALLOWLIST="${REPO}/tests/librdkafka/allowlist-share.txt"
            shift ;;
        -h|--help) usage ;;
        *) log "unknown argument $1"; usage ;;
    esac
done
if [[ -z "${tests}" ]]; then
    use_allowlist=1
fi

# Test numbers in the allowlist: lines are full test names (e.g. 0001_multiobj); the runner
# selects by number, and only the listed names are required to pass. A name followed by
# `retry-once` is run a second time when its first run fails: only for a race inside the
# client that a loaded machine exposes, each with its reason in the allowlist.
allowlisted_names() {
    [[ -f "${ALLOWLIST}" ]] || return 0
    sed -e 's/#.*//' "${ALLOWLIST}" | awk 'NF { print $1 }' || true
}

retry_once_numbers() {
    [[ -f "${ALLOWLIST}" ]] || return 0
    sed -e 's/#.*//' "${ALLOWLIST}" | awk '$2 == "retry-once" { print substr($1, 1, 4) }' || true
}

fetch_source() {
    if [[ -f "${SRC}/.spate-extracted" ]]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm is not installed; install it with 'apt-get install -y npm'."
    mkdir -p "${CACHE}"
    local work
    work="$(mktemp -d "${CACHE}/npm-pack.XXXXXX")"
    log "fetching librdkafka's source: npm pack ${NPM_PKG}"
    if ! (cd "${work}" && npm pack --silent "${NPM_PKG}" > pack.out 2> pack.err); then
        cat "${work}/pack.err" >&2
        rm -rf "${work}"
        die "npm pack ${NPM_PKG} failed (is the npm registry reachable?)."
    fi
    local tgz
    tgz="${work}/$(tail -1 "${work}/pack.out")"
    rm -rf "${SRC}"
    mkdir -p "${SRC}"
    tar xzf "${tgz}" -C "${SRC}" --strip-components=3 package/deps/librdkafka
    rm -rf "${work}"
    [[ -x "${SRC}/configure" ]] || die "${NPM_PKG} carries no deps/librdkafka."
    touch "${SRC}/.spate-extracted"
}

build() {
    local missing=()
    for header in zstd.h lz4.h zlib.h openssl/ssl.h; do
        [[ -f "/usr/include/${header}" ]] || missing+=("${header}")
    done
    # The marker names the headers the build had: one made without some of them is made
    # again once they are installed.
    local marker="${SRC}/.spate-built"
    local had="all"
    (( ${#missing[@]} )) && had="without ${missing[*]}"
    if [[ -f "${marker}" && -x "${SRC}/tests/test-runner" && "$(cat "${marker}")" == "${had}" ]]
    then
        return 0
    fi
    if (( ${#missing[@]} )); then
        log "warning: ${missing[*]} not found; the compression and SSL tests need" \
            "'apt-get install -y libzstd-dev liblz4-dev zlib1g-dev libssl-dev'."
    fi
    log "building librdkafka and its test-runner in ${SRC} (a few minutes, once)"
    local build_log="${SRC}/spate-build.log"
    if ! (cd "${SRC}" && ./configure --disable-gssapi && make -j"$(nproc)" libs \
            && make -j"$(nproc)" -C tests build) > "${build_log}" 2>&1; then
        tail -30 "${build_log}" >&2
        die "building librdkafka failed; the full log is ${build_log}."
    fi
    echo "${had}" > "${marker}"
}

# Kafka's command-line tools as librdkafka's tests call them: $KAFKA_PATH/bin/<tool>.sh. The
# jars of kafka-tools (TopicCommand, AclCommand) and of the broker (ConfigCommand) with their
# dependencies are fetched once; each wrapper runs one class with them on the classpath.
fetch_kafka_tools() {
    if [[ -f "${KAFKA_TOOLS}/.complete" ]]; then
        return 0
    fi
    command -v java >/dev/null || die "Java is not installed, and Kafka's tools that some tests" \
        "call need Java 17 or newer: 'apt-get install -y default-jre-headless'."
    command -v mvn >/dev/null || die "Maven (mvn) is not installed, so Kafka's tools cannot be" \
        "fetched: 'apt-get install -y maven'."
    rm -rf "${KAFKA_TOOLS}"
    mkdir -p "${KAFKA_TOOLS}/bin"
    cat > "${KAFKA_TOOLS}/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>spate.local</groupId>
  <artifactId>librdkafka-suite-kafka-tools</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>${KAFKA_TOOLS_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>${KAFKA_TOOLS_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>${KAFKA_TOOLS_LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
POM
    log "fetching Apache Kafka ${KAFKA_TOOLS_VERSION}'s tools from Maven Central into ${KAFKA_TOOLS}"
    # Maven's local repository is not safe for two Maven processes downloading into it at
    # once: the client tests' Maven runs take the same lock (tests/clients/java_build.py).
    local maven_lock=()
    if command -v flock >/dev/null; then
        mkdir -p "${CACHE}/tests"
        maven_lock=(flock "${CACHE}/tests/.lock")
    fi
    if ! "${maven_lock[@]}" mvn -q -B -f "${KAFKA_TOOLS}/pom.xml" dependency:copy-dependencies \
            -DoutputDirectory="${KAFKA_TOOLS}/libs" -DincludeScope=runtime \
            > "${KAFKA_TOOLS}/mvn.log" 2>&1; then
        tail -20 "${KAFKA_TOOLS}/mvn.log" >&2
        die "fetching Kafka ${KAFKA_TOOLS_VERSION}'s jars failed (is Maven Central reachable?);" \
            "see ${KAFKA_TOOLS}/mvn.log."
    fi
    # Warnings and errors only, on stderr (the tools print their results on stdout).
    cat > "${KAFKA_TOOLS}/log4j2.properties" <<'LOG4J'
status = error
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
LOG4J
    local tool class
    for tool in kafka-topics:org.apache.kafka.tools.TopicCommand \
            kafka-configs:kafka.admin.ConfigCommand kafka-acls:org.apache.kafka.tools.AclCommand; do
        class="${tool#*:}"
        tool="${tool%%:*}"
        python3 - "${KAFKA_TOOLS}/libs" "${class//.//}.class" <<'PY' \
            || die "no class ${class} in Kafka ${KAFKA_TOOLS_VERSION}'s jars (${KAFKA_TOOLS}/libs)."
import glob, sys, zipfile
libs, entry = sys.argv[1:3]
sys.exit(0 if any(entry in zipfile.ZipFile(jar).namelist()
                  for jar in glob.glob(f"{libs}/*.jar")) else 1)
PY
        cat > "${KAFKA_TOOLS}/bin/${tool}.sh" <<WRAPPER
#!/bin/sh
# ${tool}.sh of Apache Kafka ${KAFKA_TOOLS_VERSION}, written by scripts/librdkafka-suite.sh.
exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \\
    -Dlog4j2.configurationFile="${KAFKA_TOOLS}/log4j2.properties" \\
    -cp "${KAFKA_TOOLS}/libs/*" ${class} "\$@"
WRAPPER
        chmod +x "${KAFKA_TOOLS}/bin/${tool}.sh"
    done
    touch "${KAFKA_TOOLS}/.complete"
}

# librdkafka's transaction test creates its topics with a hard-coded replication factor of 3
# (its own test cluster has 3 brokers); a single-node broker refuses that, as Kafka does. The
# test's subject is transactions, not replication, so its source is changed to ask for 1, once
# per cache, and the test-runner relinked (seconds).
single_broker_patch() {
    local marker="${SRC}/.spate-patched-replication-factor"
    [[ -f "${marker}" ]] && return 0
    local source="${SRC}/tests/0103-transactions.c"
    [[ -f "${source}" ]] || return 0
    sed -i 's/, 3, 5000);/, 1, 5000);/' "${source}"
    log "0103-transactions.c: replication factor 3 -> 1 (single broker); relinking test-runner"
    if ! make -C "${SRC}/tests" build >> "${SRC}/spate-build.log" 2>&1; then
        die "rebuilding the test-runner failed; the full log is ${SRC}/spate-build.log."
    fi
    touch "${marker}"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

broker_pid=""
run_dir=""
cleanup() {
    if [[ -n "${broker_pid}" ]] && kill -0 "${broker_pid}" 2>/dev/null; then
        kill -TERM "${broker_pid}" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "${broker_pid}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${broker_pid}" 2>/dev/null || true
    fi
    if [[ -n "${run_dir}" && -d "${run_dir}/data" ]]; then
        rm -rf "${run_dir}/data"
    fi
}
trap cleanup EXIT

start_broker() {
    [[ -x "${SPATE_BIN}" ]] || die "broker binary ${SPATE_BIN} is missing; build it" \
        "(cargo build --release) or pass --bootstrap."
    local port
    port="$(free_port)"
    bootstrap="127.0.0.1:${port}"
    mkdir -p "${run_dir}/data"
    # librdkafka's tests expect topics to be auto-created with 4 partitions.
    # shellcheck disable=SC2086 # SPATE_SUITE_ARGS is a list of flags
    "${SPATE_BIN}" --listen "${bootstrap}" --data-dir "${run_dir}/data" --cores 2 \
        --default-partitions 4 --authorizer acl --allow-everyone-if-no-acl-found true \
        --super-users User:admin --log-retention-check-interval-ms 300000 \
        ${SPATE_SUITE_ARGS---segment-bytes 2097152} \
        > "${run_dir}/broker.log" 2>&1 < /dev/null &
    broker_pid=$!
    for _ in $(seq 300); do
        if ! kill -0 "${broker_pid}" 2>/dev/null; then
            tail -20 "${run_dir}/broker.log" >&2
            die "the broker exited during start-up (log: ${run_dir}/broker.log)."
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            log "broker pid ${broker_pid} on ${bootstrap}, log ${run_dir}/broker.log"
            return 0
        fi
        sleep 0.1
    done
    die "the broker did not accept connections on ${bootstrap} within 30 s."
}

# Classifies every test of the runner from tests/test.c: local (needs no broker), manual (run
# only on request) or broker. Prints "name<TAB>local|manual|broker" lines.
classify_tests() {
    python3 - "${SRC}/tests/test.c" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
table = src[src.index("struct test tests[] = {"):]
for m in re.finditer(r"_TEST\(\s*(\w+)\s*,\s*([^,)]*)", table):
    name, flags = m.group(1), m.group(2)
    kind = ("local" if "TEST_F_LOCAL" in flags else
            "manual" if "TEST_F_MANUAL" in flags or name[0] == "8" else "broker")
    print(f"{name}\t{kind}")
PY
}

# Verdicts: the summary table ("| <name> | <STATE> | <secs>s | <reason>") when the runner got
# to print it, otherwise the per-test lines ("Test <name> PASSED", '### Test "<name> ..."
# failed'); a test that started without a verdict (crash, time bound) counts as FAILED.
summarize() {
    python3 - "$1" "${ALLOWLIST}" <(classify_tests) <<'PY'
import glob, os, re, sys
out_dir, allowlist_path, classes_path = sys.argv[1:4]
ansi = re.compile(r"\x1b\[[0-9;]*m")
row = re.compile(r"^\|\s*(\S+)\s*\|\s*(\w+)\s*\|\s*([\d.]+)s\s*\|\s*(.*)$")
kinds = dict(l.rstrip("\n").split("\t") for l in open(classes_path) if "\t" in l)
results = {}
for path in sorted(glob.glob(os.path.join(out_dir, "*.log"))):
    number = os.path.basename(path)[:4]
    rc = open(path[:-4] + ".rc").read().strip() if os.path.exists(path[:-4] + ".rc") else "?"
    text = ansi.sub("", open(path, errors="replace").read())
    table, in_table, inline = {}, False, {}
    for line in text.splitlines():
        if re.match(r"^TEST \d+ .*SUMMARY", line):
            in_table = True
            continue
        m = row.match(line) if in_table else None
        if m:
            if m.group(1) != "<MAIN>":
                table[m.group(1)] = (m.group(2), m.group(4).strip())
            continue
        if m := re.search(r"={5,} Running test (\S+) ={5,}", line):
            inline.setdefault(m.group(1), ("FAILED", f"no verdict (runner exit code {rc})"))
        elif m := re.search(r"={5,} Test (\S+) (PASSED|SKIPPED) ={5,}", line):
            inline[m.group(1)] = (m.group(2), "")
        elif m := re.search(r'^### Test "(\S+?)[ "].*failed (at .*?) at \w{3} ', line):
            if m.group(1) != "<MAIN>":
                inline[m.group(1)] = ("FAILED", m.group(2))
        elif m := re.search(r"Skipping test (\S+) \((.*)\)", line):
            inline.setdefault(m.group(1), ("SKIPPED", m.group(2)))
    for name, verdict in {**inline, **table}.items():
        if name[:4] == number:
            if name in inline and inline[name][0] == "FAILED" and verdict[0] == "FAILED":
                verdict = (verdict[0], verdict[1] or inline[name][1])
            results[name] = verdict
for path in glob.glob(os.path.join(out_dir, "*.skipped")):
    number = os.path.basename(path)[:4]
    for name in kinds:
        if name[:4] == number:
            results[name] = ("NOTRUN", open(path).read().strip())
try:
    allowlist = [l.split("#")[0].split() for l in open(allowlist_path)]
    allowlist = [words[0] for words in allowlist if words]
except FileNotFoundError:
    allowlist = []

print(f"{'test':<48} {'kind':<7} {'state':<8} reason")
for name, (state, reason) in sorted(results.items()):
    if state == "SKIPPED" and ("TESTS list" in reason or "flags" in reason):
        continue
    print(f"{name:<48} {kinds.get(name, '?'):<7} {state:<8} {reason[:110]}")

ran = {n: s for n, (s, _) in results.items() if s in ("PASSED", "FAILED")}
broker_ran = {n: s for n, s in ran.items() if kinds.get(n) == "broker"}
broker_passed = sorted(n for n, s in broker_ran.items() if s == "PASSED")
print(f"\nbroker tests: {len(broker_passed)} passed of {len(broker_ran)} run; "
      f"all tests: {sum(s == 'PASSED' for s in ran.values())} passed of {len(ran)} run")

selected = set(n[:4] for n in results)
bad = [f"{name} ({results.get(name, ('MISSING',))[0]})" for name in allowlist
       if name[:4] in selected and results.get(name, ("MISSING",))[0] != "PASSED"]
new = sorted(n for n, s in ran.items() if s == "PASSED" and n not in allowlist)
if new:
    print("passing but not allowlisted (add them):", " ".join(new))
if bad:
    print("ALLOWLISTED TESTS FAILED:", ", ".join(bad))
    # What each failed test number was doing last: CI keeps only this output.
    for number in sorted(set(name[:4] for name in bad)):
        path = os.path.join(out_dir, number + ".log")
        if not os.path.exists(path):
            continue
        lines = [l for l in ansi.sub("", open(path, errors="replace").read()).splitlines()
                 if l.strip()]
        started = [l for l in lines if re.search(r"\[ \w+:\d+ \]$", l)]
        print(f"\n--- {number}: last sub-test started: "
              f"{started[-1].strip() if started else 'none'}; last lines of {path}:")
        for line in lines[-25:]:
            print("  " + line[:200])
    sys.exit(1)
print(f"allowlist: all {sum(1 for n in allowlist if n[:4] in selected)} selected tests passed")
PY
}

if [[ -n "${summarize_dir}" ]]; then
    fetch_source
    summarize "${summarize_dir}/out"
    exit $?
fi

# Kafka's tools first: scripts/test.sh prepares this in the background while other steps
# run, and Maven's downloads are then over before the client tests start theirs.
fetch_kafka_tools
fetch_source
build
single_broker_patch
if (( prepare_only )); then
    log "librdkafka's test-runner and Kafka's tools are ready in ${CACHE}"
    exit 0
fi

run_dir="$(mktemp -d /tmp/librdkafka-suite.XXXXXX)"
if [[ -z "${bootstrap}" ]]; then
    start_broker
fi

# The test numbers to run, one test-runner process each: a test that fails leaves librdkafka
# threads behind, and the runner then aborts before printing its summary, so one process per
# number keeps every other number's verdict.
if [[ "${tests}" == "all" ]]; then
    numbers="$(classify_tests | grep -v manual | cut -c1-4 | sort -u | tr '\n' ' ')"
else
    numbers="$(echo "${tests}" | tr ',' ' ')"
    if (( use_allowlist )); then
        numbers="${numbers} $(allowlisted_names | cut -c1-4 | tr '\n' ' ')"
    fi
    numbers="$(echo "${numbers}" | tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' ')"
fi
[[ -n "${numbers// /}" ]] || die "nothing to run: the allowlist is empty and --tests is unset."

conf="${run_dir}/test.conf"
cat > "${conf}" <<CONF
bootstrap.servers=${bootstrap}
broker.address.family=v4
test.timeout.multiplier=${TIMEOUT_MULT}
test.topic.random=true
CONF

suite_secs="${SUITE_TIMEOUT_SECS:-$([[ "${tests}" == "all" ]] && echo 10800 || echo 1800)}"
test_secs="${TEST_TIMEOUT_SECS:-600}"
deadline=$(( $(date +%s) + suite_secs ))
mkdir -p "${run_dir}/out"
log "running ${numbers}against ${bootstrap}; bound ${test_secs} s per test number," \
    "${suite_secs} s in all; output in ${run_dir}/out"
jobs_max="${SUITE_JOBS:-3}"

# One test number in its own test-runner process, bounded by `left` seconds.
run_number() {
    local number=$1 left=$2
    # The group's stderr catches bash's own "Aborted" notice when the runner aborts.
    { (
        cd "${SRC}/tests"
        export LD_LIBRARY_PATH="../src:../src-cpp" RDKAFKA_TEST_CONF="${conf}" TESTS="${number}"
        # Kafka's tools ($KAFKA_PATH/bin/kafka-topics.sh ...) and the bootstrap they are given.
        export KAFKA_PATH="${KAFKA_TOOLS}" BROKERS="${bootstrap}"
        # -Q quick mode (not for --share); -p1 one test of this number at a time (the
        # broker shares a 2-core machine with SUITE_JOBS runners).
        exec timeout --kill-after=30 "${left}" ./test-runner ${QUICK} -p1
    ) > "${run_dir}/out/${number}.log" 2>&1; } 2>> "${run_dir}/out/${number}.log"
    echo "$?" > "${run_dir}/out/${number}.rc"
}

# A broker that died is restarted for the tests still to come (those running lose it).
check_broker() {
    if [[ -n "${broker_pid}" ]] && ! kill -0 "${broker_pid}" 2>/dev/null; then
        log "the broker died; last lines of ${run_dir}/broker.log:"
        tail -20 "${run_dir}/broker.log" >&2
        start_broker
        sed -i "s/^bootstrap.servers=.*/bootstrap.servers=${bootstrap}/" "${conf}"
        for running in "${run_dir}"/out/*.log; do
            [[ -e "${running%.log}.rc" ]] || echo "broker died during this test" >> "${running}"
        done
    fi
}

# The runners still going (the broker is a background job too, so `jobs` cannot count them).
# `reap` waits for those that ended (a child that ended stays a zombie until then, and a
# zombie still answers kill -0) and leaves the rest in `runners`.
runners=()
reap() {
    local still=() pid state
    for pid in "${runners[@]}"; do
        state="$(ps -o stat= -p "${pid}" 2>/dev/null)"
        if [[ -n "${state}" && "${state}" != Z* ]]; then
            still+=("${pid}")
        else
            wait "${pid}" 2>/dev/null
        fi
    done
    runners=("${still[@]}")
}

set +e
for number in ${numbers}; do
    reap
    while (( ${#runners[@]} >= jobs_max )); do
        sleep 0.2
        check_broker
        reap
    done
    left=$(( deadline - $(date +%s) ))
    if (( left <= 0 )); then
        echo "time bound reached before this test started" > "${run_dir}/out/${number}.skipped"
        continue
    fi
    (( left < test_secs )) || left="${test_secs}"
    run_number "${number}" "${left}" &
    runners+=("$!")
done
reap
while (( ${#runners[@]} > 0 )); do
    sleep 0.2
    check_broker
    reap
done
# The allowlist's `retry-once` numbers that failed run once more, alone; the first run's log
# stays beside the second as <number>.first-try.
for number in $(retry_once_numbers); do
    [[ -f "${run_dir}/out/${number}.rc" && "$(cat "${run_dir}/out/${number}.rc")" != 0 ]] \
        || continue
    left=$(( deadline - $(date +%s) ))
    (( left > 0 )) || break
    (( left < test_secs )) || left="${test_secs}"
    log "${number} failed; running it once more (retry-once in the allowlist)"
    mv "${run_dir}/out/${number}.log" "${run_dir}/out/${number}.first-try"
    rm -f "${run_dir}/out/${number}.rc"
    check_broker
    run_number "${number}" "${left}"
done
set -e

summarize "${run_dir}/out"
