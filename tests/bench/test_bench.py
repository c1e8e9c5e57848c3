"""spate-bench against a real broker: short runs, then check what the bench wrote.

Each test uses its own topic, so counts can be checked against what the broker holds.
"""

import json
import os
import signal
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ElementTree
import zlib

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import PARTITIONS

# Generous: a run of a few seconds, plus topic creation and drain, on a busy two-core machine.
RUN_TIMEOUT_S = 120
PERCENTILE_FIELDS = ["p50_us", "p90_us", "p99_us", "p99_9_us", "p99_99_us", "max_us"]
EXIT_OK = 0
# A run that could not start (bad options refused by validation, an unreachable broker).
EXIT_FAILED = 1
EXIT_DEGRADED = 3
# The broker pause of the coordinated-omission test.
PAUSE_S = 0.2
PAUSE_US = int(PAUSE_S * 1e6)
SVG_NS = "{http://www.w3.org/2000/svg}"


def run_bench(bench_bin, *args, expect=(EXIT_OK,)):
    result = subprocess.run([bench_bin, *map(str, args)], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    assert result.returncode in expect, (
        f"spate-bench exited {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr[-3000:]}")
    return result


def run_json(bench_bin, tmp_path, *args, expect=(EXIT_OK,), name="run"):
    path = tmp_path / f"{name}.json"
    result = run_bench(bench_bin, *args, "--json", path, expect=expect)
    with open(path) as f:
        return json.load(f), result


def watermarks(bootstrap, topic):
    """(low, high) per partition, from ListOffsets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "spate-bench-test"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in range(PARTITIONS)]
    finally:
        consumer.close()


def records_held(bootstrap, topic):
    return sum(high - low for low, high in watermarks(bootstrap, topic))


def assert_latency_complete(summary):
    for field in PERCENTILE_FIELDS:
        assert field in summary, f"missing {field}"
    values = [summary[f] for f in PERCENTILE_FIELDS]
    assert values == sorted(values), f"percentiles not ascending: {values}"
    assert summary["min_us"] <= summary["p50_us"]
    assert summary["count"] > 0
    assert summary["curve"], "no curve for plots"


def parse_hgrm(path):
    """Rows (value, percentile, total count) of an HdrHistogram percentile distribution."""
    rows, footer = [], {}
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    for line in lines[1:]:
        if not line.strip():
            continue
        if line.startswith("#["):
            for part in line.strip("#[]").split(","):
                key, value = part.split("=")
                footer[key.strip()] = float(value)
            continue
        fields = line.split()
        assert len(fields) in (3, 4), f"bad row: {line!r}"
        rows.append((float(fields[0]), float(fields[1]), int(fields[2])))
    return rows, footer


def svg_texts(path):
    """The text of every <text> element of an SVG (titles, tick labels, legend entries)."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == f"{SVG_NS}svg"
    return [(t.text or "").strip() for t in root.iter(f"{SVG_NS}text")]


def svg_lines(path):
    """How many lines an SVG draws: plotters writes a solid line as one <polyline> and a dashed
    or dotted one as one <polyline> per dash."""
    root = ElementTree.parse(path).getroot()
    return len(list(root.iter(f"{SVG_NS}polyline")))


def test_produce_counts_match_the_broker(broker, bench_bin, topic, tmp_path):
    records = 5000
    result, _ = run_json(bench_bin, tmp_path, "produce", "-b", broker.bootstrap, "-t", topic,
                         "--partitions", PARTITIONS, "--records", records, "--warmup", "500ms",
                         "--record-size", "uniform:100:2000", "--keys", "zipf:100",
                         "--compression", "lz4", "--acks", "all", "-q")
    produce = result["produce"]
    assert result["workload"] == "produce"
    assert result["errors"] == {}
    assert produce["acked"] == records, "the measured records are exactly --records"
    assert produce["sent_total"] == produce["acked_total"]
    assert produce["acked_total"] >= records
    assert records_held(broker.bootstrap, topic) == produce["acked_total"]
    assert produce["records_per_sec"] > 0
    assert set(result["latency"]) == {"publish"}
    assert_latency_complete(result["latency"]["publish"])
    assert result["latency"]["publish"]["count"] == records
    assert result["open_loop"] is None


def test_idempotent_producers(broker, bench_bin, topic, tmp_path):
    records = 2000
    result, _ = run_json(bench_bin, tmp_path, "produce", "-b", broker.bootstrap, "-t", topic,
                         "--records", records, "--warmup", "0", "--idempotence", "-P", 2, "-q",
                         expect=(EXIT_OK, EXIT_DEGRADED))
    # Errors exit "degraded"; the assertion names them.
    assert result["errors"] == {}
    assert result["config"]["producer_config"]["enable.idempotence"] == "true"
    assert result["produce"]["acked_total"] == records
    assert records_held(broker.bootstrap, topic) == records


def test_round_robin_spreads_records_evenly(broker, bench_bin, topic, tmp_path):
    records = 4000
    result, _ = run_json(bench_bin, tmp_path, "produce", "-b", broker.bootstrap, "-t", topic,
                         "--partitions", PARTITIONS, "--records", records, "--warmup", "0",
                         "--keys", "round-robin", "--compression", "zstd", "-q")
    assert result["produce"]["acked_total"] == records
    held = [high - low for low, high in watermarks(broker.bootstrap, topic)]
    assert held == [records // PARTITIONS] * PARTITIONS


def test_end_to_end_open_loop_outputs(broker, bench_bin, topic, tmp_path):
    rate = 1000
    hgrm_base = tmp_path / "e2e.hgrm"
    plot = tmp_path / "e2e.svg"
    result, run = run_json(bench_bin, tmp_path, "e2e", "-b", broker.bootstrap, "-t", topic,
                           "--partitions", PARTITIONS, "--rate", rate, "--duration", "3s",
                           "--warmup", "500ms", "--compression", "snappy",
                           "--hgrm", hgrm_base, "--plot", plot, "--label", "under test",
                           expect=(EXIT_OK, EXIT_DEGRADED))
    # Degraded is allowed only for being late on a busy machine, never for errors.
    assert result["errors"] == {}

    # The intended rate is reported, and the bench says whether it generated it.
    open_loop = result["open_loop"]
    assert open_loop["target_rate"] == rate
    assert abs(open_loop["achieved_rate"] - rate) / rate < 0.05
    assert open_loop["scheduled"] == open_loop["sent"] + open_loop["missed"]
    assert abs(open_loop["scheduled"] - rate * 3) <= 2
    assert isinstance(open_loop["kept_up"], bool)
    assert ("kept up" in open_loop["verdict"]) == open_loop["kept_up"]

    # Every percentile of every series, and counts that add up with the broker's.
    assert set(result["latency"]) == {"publish", "publish_uncorrected", "end_to_end",
                                      "end_to_end_uncorrected"}
    for summary in result["latency"].values():
        assert_latency_complete(summary)
    assert result["latency"]["publish"]["corrected"] is True
    assert result["latency"]["publish_uncorrected"]["corrected"] is False
    produce, consume = result["produce"], result["consume"]
    assert records_held(broker.bootstrap, topic) == produce["acked_total"]
    assert consume["consumed_total"] == produce["acked_total"]
    assert consume["consumed"] == produce["acked"]
    assert result["latency"]["end_to_end"]["count"] == produce["acked"]
    assert result["latency"]["publish"]["count"] == produce["acked"]
    # Corrected latency starts at the intended send time, never after the actual one.
    for field in PERCENTILE_FIELDS:
        assert (result["latency"]["publish"][field]
                >= result["latency"]["publish_uncorrected"][field])

    # Host steal (this machine is a VM): every record is either steal-free or counted as one
    # an episode touched, and the steal-free series is never slower than the whole.
    host_steal = result["host_steal"]
    assert set(host_steal["steal_free"]) == set(result["latency"])
    for series, summary in result["latency"].items():
        steal_free = host_steal["steal_free"][series]
        assert steal_free["count"] + host_steal["touched"][series] == summary["count"]
        if host_steal["episodes"] == 0:
            assert host_steal["touched"][series] == 0
        assert steal_free["count"] == 0 or steal_free["max_us"] <= summary["max_us"]

    # The summary table on stdout has the throughput and latency rows.
    for text in ("produced (acknowledged)", "consumed", "end-to-end", "p99.99", "open loop:",
                 "host steal:"):
        assert text in run.stdout

    # .hgrm files: one per series, parseable, consistent with the JSON.
    for series, summary in result["latency"].items():
        rows, footer = parse_hgrm(tmp_path / f"e2e.{series}.hgrm")
        assert len(rows) > 10
        assert [r[1] for r in rows] == sorted(r[1] for r in rows)
        assert rows[-1][1] == 1.0
        assert rows[-1][2] == summary["count"]
        assert footer["Total count"] == summary["count"]
        assert abs(footer["Max"] * 1000 - summary["max_us"]) <= 1

    # The SVG is well-formed XML, titled, with a legend entry per series.
    texts = svg_texts(plot)
    for series in ("publish", "publish (uncorrected)", "end-to-end", "end-to-end (uncorrected)"):
        assert series in texts
    assert svg_lines(plot) >= 4
    assert "spate-bench: under test" in texts
    assert "latency (log scale)" in texts
    assert any(t and t.startswith("percentile") for t in texts)


def test_open_loop_flags_a_rate_it_cannot_generate(broker, bench_bin, topic, tmp_path):
    # Far beyond what one producer thread can hand to librdkafka.
    rate = 20_000_000
    result, run = run_json(bench_bin, tmp_path, "produce", "-b", broker.bootstrap, "-t", topic,
                           "--rate", rate, "--duration", "2s", "--warmup", "0",
                           "--record-size", "100", "--acks", "1", "-q",
                           expect=(EXIT_DEGRADED,))
    open_loop = result["open_loop"]
    assert open_loop["target_rate"] == rate
    assert open_loop["kept_up"] is False
    assert open_loop["missed"] > 0
    assert open_loop["achieved_rate"] < rate / 2
    assert "COULD NOT KEEP UP" in open_loop["verdict"]
    assert "COULD NOT KEEP UP" in run.stdout
    assert records_held(broker.bootstrap, topic) == result["produce"]["acked_total"]


def run_with_pause(bench_bin, tmp_path, pid, name, *args, expect=(EXIT_OK, EXIT_DEGRADED)):
    """Runs the bench and stops the broker for PAUSE_S once the measured window has begun.

    The bench's progress line (stderr, once a second) says "measuring" from the end of the
    warm-up on; the pause starts when the first such line appears, so it falls inside the
    window however long topic creation and connecting took.
    """
    path = tmp_path / f"{name}.json"
    command = [bench_bin, *map(str, args), "--json", str(path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    paused = threading.Event()
    stderr_lines = []

    def watch():
        for line in proc.stderr:
            stderr_lines.append(line)
            if "measuring" in line and not paused.is_set():
                paused.set()
                os.kill(pid, signal.SIGSTOP)
                try:
                    time.sleep(PAUSE_S)
                finally:
                    os.kill(pid, signal.SIGCONT)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        stdout = proc.stdout.read()
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=RUN_TIMEOUT_S)
        watcher.join(timeout=RUN_TIMEOUT_S)
    assert proc.returncode in expect, (
        f"spate-bench exited {proc.returncode}\nstdout:\n{stdout}\n"
        f"stderr:\n{''.join(stderr_lines)[-3000:]}")
    assert paused.is_set(), "the run never reached its measured window"
    with open(path) as f:
        return json.load(f)


def test_broker_pause_shows_in_corrected_latency(broker, bench_bin, topic, tmp_path):
    assert broker.pid, "the pause test needs the broker's pid (SPATE_BENCH_BROKER_PID)"
    # The records that wait longer than the pause itself are those in flight when it starts
    # (a linger's worth, a few ms); a short measured window keeps them above 0.1 % of all.
    # The first progress line comes 1 s after the start, 0.5 s into the 1.5 s window.
    common = ["-b", broker.bootstrap, "-t", topic, "--partitions", PARTITIONS,
              "--warmup", "500ms", "--duration", "1500ms"]

    # Open loop: records due while the broker is stopped wait, and their latency counts from
    # when they were due.
    result = run_with_pause(bench_bin, tmp_path, broker.pid, "open", "e2e", *common,
                            "--rate", 2000)
    assert result["errors"] == {}
    for series in ("publish", "end_to_end"):
        assert result["latency"][series]["p99_9_us"] > PAUSE_US, series
        assert result["latency"][series]["max_us"] > PAUSE_US, series

    # Closed loop with one record in flight (the classic naive benchmark): the sender waits
    # out the pause itself, so only one record sees it and the tail percentiles hide it.
    naive = run_with_pause(bench_bin, tmp_path, broker.pid, "naive", "produce", *common,
                           "--linger-ms", 0, "--producer-config",
                           "queue.buffering.max.messages=1", expect=(EXIT_OK,))
    publish = naive["latency"]["publish"]
    assert publish["max_us"] > PAUSE_US, "the pause happened during the naive run"
    assert publish["p99_us"] < PAUSE_US, "one slow record out of hundreds is below p99"
    assert naive["produce"]["acked"] > 200


def test_consume_from_earliest_reads_what_was_produced(broker, bench_bin, topic, tmp_path):
    records = 3000
    produced, _ = run_json(bench_bin, tmp_path, "produce", "-b", broker.bootstrap, "-t", topic,
                           "--records", records, "--warmup", "0", "-q", name="produce")
    assert produced["produce"]["acked_total"] == records
    consumed, _ = run_json(bench_bin, tmp_path, "consume", "-b", broker.bootstrap, "-t", topic,
                           "--from", "earliest", "--records", records, "--warmup", "0",
                           "--consumers", 2, "-q", name="consume")
    assert consumed["consume"]["consumed"] == records
    assert consumed["consume"]["consumed_total"] == records
    assert consumed["consume"]["records_per_sec"] > 0
    assert consumed["produce"] is None
    assert consumed["latency"] == {}


def test_compare_prints_ratios_and_plots_every_run(broker, bench_bin, topic, tmp_path):
    runs = []
    for label, rate in (("slow", 500), ("fast", 1000)):
        result, _ = run_json(bench_bin, tmp_path, "e2e", "-b", broker.bootstrap, "-t", topic,
                             "--rate", rate, "--duration", "2s", "--warmup", "0", "-q",
                             "--label", label, expect=(EXIT_OK, EXIT_DEGRADED), name=label)
        runs.append(tmp_path / f"{label}.json")
    plot = tmp_path / "compare.svg"
    table = run_bench(bench_bin, "compare", *runs, "--plot", plot).stdout
    header = table.splitlines()[0].split()
    assert header == ["metric", "slow", "fast", "fast/slow"]
    target = next(line for line in table.splitlines() if line.startswith("target rate"))
    assert target.split()[-3:] == ["500", "1000", "-"]
    produced = next(line for line in table.splitlines() if line.startswith("produced records/s"))
    ratio = float(produced.split()[-1].rstrip("x"))
    assert 1.8 < ratio < 2.2
    texts = svg_texts(plot)
    for series in ("slow: publish", "slow: end-to-end", "fast: publish", "fast: end-to-end"):
        assert series in texts
    assert "slow: publish (uncorrected)" not in texts, "uncorrected only with --uncorrected"
    markdown = run_bench(bench_bin, "compare", *runs, "--markdown").stdout
    assert markdown.startswith("| metric")


def test_sweep_writes_every_step_to_json_table_and_chart(broker, bench_bin, topic, tmp_path):
    rates = [500, 1000]
    json_path, table, plot = tmp_path / "sweep.json", tmp_path / "sweep.md", tmp_path / "sweep.svg"
    pid_args = ["--broker-pid", broker.pid] if broker.pid else []
    # --keep-going: on a busy machine a step may fall behind, and the test is about the outputs.
    run = run_bench(bench_bin, "sweep", "-b", broker.bootstrap, "--label", "under test",
                    *pid_args, "-t", topic, "--rates", ",".join(map(str, rates)),
                    "--duration", "1s", "--warmup", "500ms", "--settle", "0", "--keep-going",
                    "--warm-up-brokers", "1s",
                    "--json", json_path, "--table", table, "--plot", plot, "-q")
    # Each broker is loaded, unmeasured, before the ladder (a JVM broker's JIT warm-up).
    assert "sweep: warming under test up at 500 records/s for 1 s" in run.stderr, run.stderr
    with open(json_path) as f:
        result = json.load(f)
    assert result["workload"] == "produce"
    assert result["series"] == "publish"
    assert result["rates"] == rates
    assert [b["label"] for b in result["brokers"]] == ["under test"]
    assert result["brokers"][0]["bootstrap"] == broker.bootstrap
    points = result["points"]
    assert [p["rate"] for p in points] == rates
    for point in points:
        assert point["label"] == "under test"
        assert point["errors"] == 0
        assert point["achieved_rate"] > 0
        latency = point["publish_ms"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["p99_9"]
        # Each step is a complete produce run on a topic of its own, deleted afterwards.
        step = point["result"]
        assert step["workload"] == "produce"
        assert step["config"]["rate"] == point["rate"]
        assert step["config"]["topic"].startswith(topic)
        assert step["open_loop"]["kept_up"] == point["kept_up"]
        assert_latency_complete(step["latency"]["publish"])
        if broker.pid:
            assert point["broker_cpu_percent"] is not None
    assert len({p["result"]["config"]["topic"] for p in points}) == len(points)

    # The table on stdout and as Markdown: a row per step.
    rows = [line for line in run.stdout.splitlines() if line.startswith("under test")]
    assert [row.split()[2] for row in rows] == [str(r) for r in rates]
    markdown = table.read_text().splitlines()
    assert markdown[0].startswith("| broker") and "publish p99.9 ms" in markdown[0]
    assert len([line for line in markdown if line.startswith("| under test")]) == len(rates)

    # The chart: well-formed SVG with a legend entry per percentile and the rates as ticks.
    texts = svg_texts(plot)
    for series in ("under test p50", "under test p99", "under test p99.9"):
        assert series in texts
    assert "500" in texts and "1k" in texts
    assert any(t.startswith("offered load") for t in texts)
    # A dot per percentile of every step that kept up (one that did not is a cross).
    root = ElementTree.parse(plot).getroot()
    kept_up = sum(1 for p in points if p["kept_up"])
    assert len(list(root.iter(f"{SVG_NS}circle"))) == 3 * kept_up


TICKER = """
import sys, time
with open(sys.argv[1], "a", buffering=1) as out:
    while True:
        out.write(f"{time.monotonic()}\\n")
        time.sleep(0.02)
"""


def ticks_stopped(path, start, end):
    """The longest time (s) a ticker went without a tick within [start, end]."""
    ticks = [float(line) for line in path.read_text().split()]
    inside = [start] + [t for t in ticks if start <= t <= end] + [end]
    return max(b - a for a, b in zip(inside, inside[1:]))


def test_sweep_pauses_the_idle_brokers_during_each_step(broker, bench_bin, topic, tmp_path):
    # Two "brokers" that are the same broker under two labels, each given the pid of a ticker
    # of its own: while one label is loaded, the other's ticker must be stopped, and both
    # must run again after the sweep.
    tickers, logs = [], []
    for name in ("a", "b"):
        log = tmp_path / f"{name}.ticks"
        log.touch()
        tickers.append(subprocess.Popen(["python3", "-c", TICKER, str(log)]))
        logs.append(log)
    try:
        start = time.monotonic()
        run = run_bench(bench_bin, "sweep", "-b", broker.bootstrap, "--label", "a",
                        "--broker-pid", tickers[0].pid, "-b", broker.bootstrap, "--label", "b",
                        "--broker-pid", tickers[1].pid, "-t", topic, "--rates", "500",
                        "--duration", "2s", "--warmup", "0", "--settle", "1s", "--keep-going",
                        "--pause-idle-brokers", "-q")
        end = time.monotonic()
        assert len([line for line in run.stdout.splitlines() if line[:2] in ("a ", "b ")]) == 2
        time.sleep(0.5)
        for ticker, log in zip(tickers, logs):
            assert ticker.poll() is None
            with open(f"/proc/{ticker.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            assert state != "T", "a paused broker must be continued after the sweep"
            # Stopped for one step (at least its 2 s), running otherwise.
            assert ticks_stopped(log, start, end) >= 1.9, log.read_text()[-400:]
            assert ticks_stopped(log, end, time.monotonic()) < 0.3
    finally:
        for ticker in tickers:
            os.kill(ticker.pid, signal.SIGCONT)
            ticker.kill()
            ticker.wait()

    refused = run_bench(bench_bin, "sweep", "-b", broker.bootstrap, "--label", "a",
                        "--broker-pid", os.getpid(), "-b", broker.bootstrap, "--label", "b",
                        "--rates", "500", "--pause-idle-brokers", "-q", expect=(EXIT_FAILED,))
    assert "--pause-idle-brokers needs the pid of every broker; give b a --broker-pid" in (
        refused.stderr), refused.stderr


def read_topic(bootstrap, topic, expected, timeout_s=30):
    """Every record of `topic` as (partition, key, value), read from the start by librdkafka
    (which checks each batch's CRC and decompresses it) until `expected` records came or the
    timeout passed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "spate-bench-test",
                         "enable.auto.commit": False, "check.crcs": True})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            records.append((message.partition(), message.key(), message.value()))
        # Anything beyond what was expected would show up within a short extra wait.
        extra = consumer.poll(1.0)
        assert extra is None or extra.error() is not None, "more records than acknowledged"
        return records
    finally:
        consumer.close()


def bench_header(value):
    """(run id, intended ns, sent ns) of a record the bench wrote (see bench/src/payload.rs)."""
    assert value[:4] == b"SPB1", "not a spate-bench record"
    return struct.unpack_from("<IQQ", value, 4)


def test_native_producer_open_and_closed_loop_hold_what_was_acknowledged(broker, bench_bin,
                                                                           topic, tmp_path):
    # Open loop, keyless (round robin over the partitions), lz4, acks=all.
    open_topic = f"{topic}-open"
    rate = 2000
    result, run = run_json(bench_bin, tmp_path, "produce", "-b", broker.bootstrap,
                           "-t", open_topic, "--partitions", PARTITIONS, "--client", "native",
                           "--rate", rate, "--duration", "2s", "--warmup", "500ms",
                           "--compression", "lz4", "--acks", "all", "-q",
                           expect=(EXIT_OK, EXIT_DEGRADED), name="open")
    # Degraded is allowed only for being late on a busy machine, never for errors.
    assert result["errors"] == {}
    config = result["config"]
    assert config["client"] == "native"
    assert config["native"]["max_in_flight"] == 256
    assert 3 <= config["native"]["produce_version"] <= 12
    assert config["producer_config"] == {}, "no librdkafka properties: no librdkafka"
    assert config["linger_ms"] == 0
    assert "producer client: native" in run.stdout
    produce = result["produce"]
    acked = produce["acked_total"]
    assert produce["sent_total"] == acked and produce["failed_total"] == 0
    open_loop = result["open_loop"]
    assert open_loop["scheduled"] == open_loop["sent"] + open_loop["missed"]
    assert abs(open_loop["scheduled"] - rate * 2) <= 2
    assert abs(open_loop["achieved_rate"] - rate) / rate < 0.05
    assert set(result["latency"]) == {"publish", "publish_uncorrected"}
    assert result["latency"]["publish"]["count"] == produce["acked"]
    assert_latency_complete(result["latency"]["publish"])
    records = read_topic(broker.bootstrap, open_topic, acked)
    # Round robin from partition 0: the first acked % P partitions hold one more.
    per_partition = [sum(1 for r in records if r[0] == p) for p in range(PARTITIONS)]
    assert per_partition == [acked // PARTITIONS + (p < acked % PARTITIONS)
                             for p in range(PARTITIONS)]
    headers = [bench_header(value) for _, _, value in records]
    assert len({h[0] for h in headers}) == 1, "one run"
    assert len({h[1] for h in headers}) == acked, "each due record once, none twice"
    assert all(len(value) == 1024 and key is None for _, key, value in records)

    # Closed loop, keyed (librdkafka's partitioner: CRC-32 of the key), zstd, acks=1.
    closed_topic = f"{topic}-closed"
    records_asked = 3000
    result, _ = run_json(bench_bin, tmp_path, "produce", "-b", broker.bootstrap,
                         "-t", closed_topic, "--partitions", PARTITIONS, "--client", "native",
                         "--records", records_asked, "--warmup", "0", "--keys", "uniform:50",
                         "--record-size", "uniform:100:2000", "--compression", "zstd",
                         "--acks", "1", "--max-in-flight", 32, "-q", name="closed")
    assert result["errors"] == {}
    assert result["config"]["native"]["max_in_flight"] == 32
    assert result["open_loop"] is None
    produce = result["produce"]
    assert produce["acked"] == produce["acked_total"] == produce["sent_total"] == records_asked
    assert result["latency"]["publish"]["count"] == records_asked
    records = read_topic(broker.bootstrap, closed_topic, records_asked)
    assert len(records) == records_asked
    for partition, key, value in records:
        assert partition == zlib.crc32(key) % PARTITIONS, key
        assert 100 <= len(value) <= 2000
    held = [high - low for low, high in watermarks(broker.bootstrap, closed_topic)]
    assert held == [sum(1 for r in records if r[0] == p) for p in range(PARTITIONS)]


def test_native_producers_with_librdkafka_consumers_end_to_end(broker, bench_bin, topic,
                                                              tmp_path):
    result, _ = run_json(bench_bin, tmp_path, "e2e", "-b", broker.bootstrap, "-t", topic,
                         "--partitions", PARTITIONS, "--client", "native", "-P", 2,
                         "--rate", 1000, "--duration", "2s", "--warmup", "500ms", "-q",
                         expect=(EXIT_OK, EXIT_DEGRADED))
    assert result["errors"] == {}
    assert result["config"]["client"] == "native"
    produce, consume = result["produce"], result["consume"]
    assert consume["consumed_total"] == produce["acked_total"] == produce["sent_total"]
    assert result["latency"]["end_to_end"]["count"] == produce["acked"]
    assert records_held(broker.bootstrap, topic) == produce["acked_total"]


def test_native_client_refuses_what_it_does_not_do(broker, bench_bin, topic):
    cases = [
        (["produce", "--idempotence"], "--client native has no idempotence"),
        (["produce", "--transactional-id", "t"], "--client native has no transactions"),
        (["produce", "--linger-ms", "5"], "not --linger-ms 5"),
        (["produce", "-X", "linger.ms=1"], "takes no librdkafka properties"),
        (["consume"], "--client native only produces"),
    ]
    for args, message in cases:
        run = run_bench(bench_bin, *args, "-b", broker.bootstrap, "-t", topic,
                        "--client", "native", "--duration", "1s", expect=(EXIT_FAILED,))
        assert message in run.stderr, run.stderr
        assert "use --client librdkafka" in run.stderr, run.stderr
        assert run.stdout == "", "refused before anything ran"
    topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert topic not in topics.topics, "refused before the topic was created"
