"""Pipelined requests on one connection (issue 11): the broker keeps reading while earlier
requests wait for the disk or for data, admits them in arrival order, and answers strictly in
request order; a client that sends faster than the disk writes is held back by the
connection's window, not buffered without bound.

Requests are written by hand on raw sockets (kafka_wire.py), so that what is in flight on the
connection is exactly what the test wrote, and then with librdkafka, which pipelines produce
requests by itself.
"""

import struct
import threading
import time

import pytest

from client_helpers import (Msg, ck_consume_all, ck_produce, ck_producer, ck_watermarks,
                            rss_bytes, unique_topic)
from conftest import TARGET
from kafka_wire import (batch_offsets, connect, fetch_v4, fetch_v4_result, init_producer_id_v0,
                        init_producer_id_v0_result, list_offsets_latest_v1,
                        list_offsets_v1_result, produce_v3, produce_v3_result, read_response,
                        record_batch)

NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def new_topic(broker, prefix, partitions=1):
    """A topic with `partitions` partitions, each holding one record (so it exists)."""
    topic = unique_topic(prefix)
    producer = ck_producer(broker.bootstrap)
    for partition in range(partitions):
        producer.produce(topic, b"first", partition=partition)
    assert producer.flush(30) == 0
    return topic


def test_pipelined_produces_get_offsets_in_arrival_order(spate_factory):
    """600 acks=all produces written back to back on one connection, over three partitions,
    before any answer is read: answered in request order, each partition's offsets in the
    order the requests were sent, and the records read back in that order."""
    broker = spate_factory("--default-partitions", "3")
    topic = new_topic(broker, "pipelined", partitions=3)
    count = 600
    requests = [produce_v3(topic.encode(), i % 3, record_batch([b"r%d" % i]), i)
                for i in range(count)]
    with connect(broker.port, timeout=60) as sock:
        sock.sendall(b"".join(requests))
        answers = [read_response(sock) for _ in range(count)]
    assert [correlation_id for correlation_id, _ in answers] == list(range(count))
    results = [produce_v3_result(body) for _, body in answers]
    assert all(error_code == NONE for error_code, _ in results)
    for partition in range(3):
        offsets = [offset for i, (_, offset) in enumerate(results) if i % 3 == partition]
        assert offsets == list(range(1, 1 + count // 3))
        values = [r.value for r in ck_consume_all(broker.bootstrap, topic, partition)]
        assert values == [b"first"] + [b"r%d" % i for i in range(partition, count, 3)]


def init_producer_id(sock, correlation_id=1):
    sock.sendall(init_producer_id_v0(correlation_id))
    got, body = read_response(sock)
    assert got == correlation_id
    error_code, producer_id, epoch = init_producer_id_v0_result(body)
    assert error_code == NONE
    return producer_id, epoch


def test_pipelined_idempotent_produces_and_their_retries(broker):
    """An idempotent producer pipelines 200 batches (sequences 0..199), then, as a client does
    after a lost connection, sends its last five again (the window Kafka remembers) followed
    by new ones, all pipelined: each retry gets the offset of its original, the new ones
    follow, and the log holds every record once. A
    batch that skips a sequence is refused with OUT_OF_ORDER_SEQUENCE_NUMBER, in its place in
    the answers, and the batches after it are still admitted in order."""
    topic = new_topic(broker, "idem-pipelined")
    with connect(broker.port, timeout=60) as sock:
        producer_id, epoch = init_producer_id(sock)

        def batch(sequence):
            return record_batch([b"s%d" % sequence], producer_id=producer_id,
                                producer_epoch=epoch, base_sequence=sequence)

        def send(sequences, first_correlation_id):
            requests = [produce_v3(topic.encode(), 0, batch(sequence), first_correlation_id + i)
                        for i, sequence in enumerate(sequences)]
            sock.sendall(b"".join(requests))
            answers = [read_response(sock) for _ in sequences]
            assert [c for c, _ in answers] == [first_correlation_id + i
                                               for i in range(len(sequences))]
            return [produce_v3_result(body) for _, body in answers]

        first = send(range(200), 100)
        assert first == [(NONE, 1 + sequence) for sequence in range(200)]
        # Retries of 195..199, then new batches 200..299.
        again = list(range(195, 300))
        assert send(again, 1000) == [(NONE, 1 + sequence) for sequence in again]
        # A gap (301 after 299), then 300 and 301 in order.
        gap = send([301, 300, 301], 2000)
        assert gap[0][0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        assert gap[1:] == [(NONE, 301), (NONE, 302)]
    values = [r.value for r in ck_consume_all(broker.bootstrap, topic, 0)]
    assert values == [b"first"] + [b"s%d" % s for s in range(302)]


def test_long_poll_fetch_then_produce_on_one_connection(broker):
    """A fetch waiting at the end of a partition (max_wait 15 s) and, behind it on the same
    connection, a produce to that partition: the produce is admitted while the fetch waits,
    its record wakes the fetch, and both are answered, in request order, long before the
    fetch's wait is over. A broker that handled one request at a time would let the fetch
    run out its wait with nothing and only then take the produce."""
    topic = new_topic(broker, "poll-then-produce")
    wait_ms = 15_000
    with connect(broker.port, timeout=60) as sock:
        started = time.monotonic()
        sock.sendall(fetch_v4(topic.encode(), 0, 1, 7, max_wait_ms=wait_ms) +
                     produce_v3(topic.encode(), 0, record_batch([b"wake"]), 8))
        fetch_id, fetch_body = read_response(sock)
        produce_id, produce_body = read_response(sock)
        elapsed = time.monotonic() - started
    assert (fetch_id, produce_id) == (7, 8)
    assert produce_v3_result(produce_body) == (NONE, 1)
    error_code, high_watermark, records = fetch_v4_result(fetch_body)
    assert error_code == NONE
    assert high_watermark == 2
    assert batch_offsets(records) == [(1, 1)]
    assert b"wake" in records
    # Not a latency assertion: the fetch must have been woken, not have run out its wait.
    assert elapsed < wait_ms / 1000


def test_produce_behind_a_waiting_fetch_of_another_topic(broker):
    """A fetch that nothing wakes (another topic) holds its place at the front of the answers:
    a produce behind it is written at once (a second connection reads the record while the
    fetch still waits) but answered only after the fetch, in request order."""
    idle = new_topic(broker, "idle")
    busy = new_topic(broker, "busy")
    with connect(broker.port, timeout=60) as sock:
        sock.sendall(fetch_v4(idle.encode(), 0, 1, 1, max_wait_ms=8_000) +
                     produce_v3(busy.encode(), 0, record_batch([b"behind"]), 2))
        # The record is stored and readable while the fetch in front of it still waits (the
        # broker may not have read the produce off the socket yet: wait for it, well within
        # the fetch's 8 s).
        deadline = time.monotonic() + 5
        while (ck_watermarks(broker.bootstrap, busy, 0)[1] < 2
               and time.monotonic() < deadline):
            time.sleep(0.05)
        values = [r.value for r in ck_consume_all(broker.bootstrap, busy, 0, timeout=6)]
        assert values == [b"first", b"behind"]
        assert [read_response(sock)[0] for _ in range(2)] == [1, 2]


def test_other_requests_wait_for_the_produces_before_them(broker):
    """A request that is not a produce or fetch runs in its turn: a ListOffsets written right
    behind 50 pipelined produces sees all of them (the high watermark after the last), as it
    would on Kafka's one-request-at-a-time connection."""
    topic = new_topic(broker, "in-turn")
    count = 50
    requests = [produce_v3(topic.encode(), 0, record_batch([b"x%d" % i]), i)
                for i in range(count)]
    with connect(broker.port, timeout=60) as sock:
        sock.sendall(b"".join(requests) + list_offsets_latest_v1(topic.encode(), 0, 999))
        answers = [read_response(sock) for _ in range(count + 1)]
    assert [c for c, _ in answers] == list(range(count)) + [999]
    assert list_offsets_v1_result(answers[-1][1]) == (NONE, 1 + count)


@pytest.mark.skipif(TARGET != "spate", reason="reads the broker's memory")
def test_a_producer_faster_than_the_disk_is_held_back(spate_factory):
    """One connection writes 1 GiB of 1 MiB acks=all produces as fast as the socket takes
    them (loopback is several times faster than the disk), reading answers on another
    thread. The broker's window stops reading the socket while 16 MiB are in flight, so its
    memory stays bounded: a broker that read ahead without a bound would hold the backlog.
    Every answer comes back, in order, and every batch is stored."""
    broker = spate_factory("--batch-cache-bytes", str(8 * 1024 * 1024))
    topic = new_topic(broker, "flood")
    batch = record_batch([b"f" * (1024 * 1024 - 100)])
    count = 1024
    rss_before = rss_bytes(broker.pid)
    rss_peak = rss_before
    answers = []
    with connect(broker.port, timeout=120) as sock:
        def read_answers():
            for _ in range(count):
                answers.append(read_response(sock))

        reader = threading.Thread(target=read_answers, daemon=True)
        reader.start()
        for i in range(count):
            sock.sendall(produce_v3(topic.encode(), 0, batch, i, timeout_ms=60_000))
            if i % 32 == 0:
                rss_peak = max(rss_peak, rss_bytes(broker.pid))
        reader.join(120)
    rss_peak = max(rss_peak, rss_bytes(broker.pid))
    assert len(answers) == count
    assert [c for c, _ in answers] == list(range(count))
    results = [produce_v3_result(body) for _, body in answers]
    assert [offset for _, offset in results] == list(range(1, count + 1))
    assert all(error_code == NONE for error_code, _ in results)
    growth = rss_peak - rss_before
    assert growth < 160 * 1024 * 1024, f"broker grew {growth >> 20} MiB for a 1 GiB flood"


def test_librdkafka_pipelining_keeps_order_under_idempotence(broker4):
    """librdkafka with linger.ms=0 sends every record as its own request, up to five in flight
    per connection under idempotence: 20,000 records over four partitions arrive complete,
    each partition in send order, without duplicates."""
    topic = unique_topic("rdkafka-pipelined")
    count = 20_000
    msgs = [Msg(None, b"m%06d" % i, partition=i % 4) for i in range(count)]
    ck_produce(broker4.bootstrap, topic, msgs, **{
        "enable.idempotence": True, "linger.ms": 0, "acks": "all",
        "max.in.flight.requests.per.connection": 5})
    for partition in range(4):
        values = [r.value for r in ck_consume_all(broker4.bootstrap, topic, partition)]
        assert values == [b"m%06d" % i for i in range(partition, count, 4)]


def test_frames_announced_but_never_sent_hold_up_no_one(spate_factory):
    """Twenty connections each announce a 90 MiB produce and send only its first bytes; 20 x
    16 MiB is more than the shard's whole 256 MiB request window. They hold only their own
    connections' windows (the shard's share is taken once a body is complete), so a client
    on the same shard still produces and consumes."""
    broker = spate_factory("--cores", "1")
    topic = unique_topic("announced")
    stalled = []
    try:
        for i in range(20):
            sock = connect(broker.port, timeout=30)
            header = produce_v3(topic.encode(), 0, b"", i)[4:40]
            sock.sendall(struct.pack(">i", 90 * 1024 * 1024) + header)
            stalled.append(sock)
        time.sleep(0.5)
        ck_produce(broker.bootstrap, topic, [Msg(b"k", b"through")], flush_timeout=20)
        values = [r.value for r in ck_consume_all(broker.bootstrap, topic, 0, timeout=20)]
        assert values == [b"through"]
    finally:
        for sock in stalled:
            sock.close()
