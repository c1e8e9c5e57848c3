"""Catch-up reads cannot be held up by clients (issue 11): a consumer that asks for a large
region of cold data and then stops reading its socket must delay neither another consumer's
catch-up read nor a producer, on the same shard.

Before, catch-up reads ran a blocking `sendfile` on the shard's two helper threads, which
waited for the stopped consumer's socket until a 30 s send timeout: two such consumers held
both threads, every other catch-up read of the shard got nothing for 30 s, and a segment roll
(which used the same threads) stopped every produce to the rolling partition as long.
"""

import os
import socket
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from client_helpers import CK_COMMON, ck_consume, unique_topic
from kafka_wire import connect, fetch_v4, produce_v3, produce_v3_result, read_response, record_batch

NONE = 0
RECORD_BYTES = 1024 * 1024 - 100
BACKLOG_RECORDS = 96
# The broker gives up on a client that takes nothing for this long (SOCKET_SEND_TIMEOUT_MS);
# the old code freed its threads only then.
SEND_TIMEOUT_S = 30


def fill(broker, topic, count, value):
    """`count` records of ~1 MiB on partition 0, pipelined on one connection."""
    batch = record_batch([value])
    with connect(broker.port, timeout=120) as sock:
        for i in range(count):
            sock.sendall(produce_v3(topic.encode(), 0, batch, i, timeout_ms=60_000))
        results = [produce_v3_result(read_response(sock)[1]) for _ in range(count)]
    assert all(error_code == NONE for error_code, _ in results)


def drop_from_page_cache(data_dir):
    """Makes every segment cold, as after a restart: O_DIRECT writes leave nothing in the page
    cache, but a test's own reads could."""
    for root, _, files in os.walk(data_dir):
        for name in files:
            if name.endswith(".log"):
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


# Serial: times 96 MiB of cold reads from the disk against a bound.
@pytest.mark.serial
def test_stalled_cold_fetches_hold_up_no_one(spate_factory):
    """Three clients fetch 64 MiB of cold backlog each and never read the answer. While they
    hang, on the same shard: a consumer reads the whole 96 MiB backlog from the start, and a
    producer writes 24 MiB to a topic with 8 MiB segments (three rolls) with every produce
    acknowledged. Both finish long before the broker's send timeout could have freed
    anything: nothing they needed was held by the stalled clients."""
    # A small batch cache, so that the reads go to the segment files, as for any backlog.
    broker = spate_factory("--cores", "1", "--batch-cache-bytes", str(1024 * 1024))
    topic, rolling = unique_topic("catch-up"), unique_topic("rolling")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    created = admin.create_topics([NewTopic(rolling, 1, 1,
                                            config={"segment.bytes": str(8 * 1024 * 1024)})])
    created[rolling].result(30)
    fill(broker, topic, BACKLOG_RECORDS, b"b" * RECORD_BYTES)
    drop_from_page_cache(broker.data_dir)
    stalled = []
    try:
        for i in range(3):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A small receive window, so that the broker's send really stops.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(60)
            sock.connect(("127.0.0.1", broker.port))
            sock.sendall(fetch_v4(topic.encode(), 0, 0, 100 + i, max_wait_ms=0,
                                  max_bytes=64 * 1024 * 1024))
            stalled.append(sock)
        time.sleep(1)  # let the stalled answers fill their sockets
        started = time.monotonic()
        done = []
        produced = threading.Thread(
            target=lambda: done.append(fill(broker, rolling, 24, b"p" * RECORD_BYTES)))
        produced.start()
        records = ck_consume(broker.bootstrap, topic, 0, 0, BACKLOG_RECORDS,
                             timeout=SEND_TIMEOUT_S - 5)
        produced.join(SEND_TIMEOUT_S)
        elapsed = time.monotonic() - started
        assert not produced.is_alive(), "the producer was held up"
        assert done, "the producer failed (see its traceback above)"
        assert [r.offset for r in records] == list(range(BACKLOG_RECORDS))
        # Not a speed assertion: a read held up by the stalled clients takes the whole send
        # timeout; 96 MiB take a few seconds at this machine's slowest measured disk read.
        assert elapsed < SEND_TIMEOUT_S - 5
        assert all(len(r.value) == RECORD_BYTES for r in records)
    finally:
        for sock in stalled:
            sock.close()


IOPRIO_GET = 252  # x86_64
IOPRIO_WHO_PROCESS = 1
IOPRIO_BEST_EFFORT_LOWEST = (2 << 13) | 7


def test_reader_threads_yield_the_core_and_the_disk_to_the_shards(broker):
    """The catch-up reader threads (two per shard) run under SCHED_IDLE, so that a shard's
    thread waking on their core takes it at once, and at the lowest best-effort I/O priority;
    the shards' own threads keep the normal policy."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    tasks = {int(task): (f"/proc/{broker.pid}/task/{task}/comm")
             for task in os.listdir(f"/proc/{broker.pid}/task")}
    names = {tid: open(path).read().strip() for tid, path in tasks.items()}
    readers = [tid for tid, name in names.items() if name.startswith("spate-read")]
    shards = [tid for tid, name in names.items() if name.startswith("spate-shard")]
    assert len(readers) == 4 and shards, names
    for tid in readers:
        assert os.sched_getscheduler(tid) == os.SCHED_IDLE, names[tid]
        assert libc.syscall(IOPRIO_GET, IOPRIO_WHO_PROCESS, tid) == IOPRIO_BEST_EFFORT_LOWEST
    for tid in shards:
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER, names[tid]
