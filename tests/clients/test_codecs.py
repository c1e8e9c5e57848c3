"""Records survive the broker byte for byte, whatever the codec and whichever client.

The broker stores producer batches as they arrive (passthrough), so what matters is that the
batches it hands back decode to exactly what was produced: keys (including null and empty),
values (binary, empty, null, large and compressible), headers (repeated keys, empty and null
values) and offsets, for every codec, produced by one client and read by another.
"""

import random

import pytest

from client_helpers import (CODECS, Msg, ck_consume, ck_produce, kcat, kp_consume, kp_produce,
                            unique_topic)

SEED = 20240611


def sample_records(seed=SEED, null_header_values=True):
    """Records that cover the shapes of key, value and header a client can send.

    kafka-python refuses to send a header with a null value, so it sends an empty one instead.
    """
    rng = random.Random(seed)
    null = None if null_header_values else b""
    binary = bytes(range(256)) * 4
    records = [
        Msg(b"key-binary", binary, (("h1", b"v1"),)),
        Msg(None, rng.randbytes(1000), ()),
        Msg(b"", b"", (("empty", b""),)),
        Msg(b"tombstone", None, ()),
        Msg(b"", None, (("only-header", b"\x00\xff"),)),
        Msg(b"headers", b"x", (("dup", b"a"), ("dup", b"b"), ("null", null),
                               ("bin", bytes(range(256))), ("utf8-\u00e9", b"\xc3\xa9"))),
        Msg("ключ".encode(), "значение".encode(), ()),
        Msg(b"compressible", b"spate " * 20000, (("size", b"120000"),)),
    ]
    for i in range(60):
        key = None if i % 7 == 0 else f"key-{i % 5}".encode()
        headers = (("seq", str(i).encode()),) if i % 3 == 0 else ()
        records.append(Msg(key, rng.randbytes(rng.randrange(0, 300)), headers))
    return records


def check_read_back(records, msgs, first_offset):
    assert [r.offset for r in records] == list(range(first_offset, first_offset + len(msgs)))
    for rec, msg in zip(records, msgs):
        assert rec.key == msg.key, f"offset {rec.offset}: key"
        assert rec.value == msg.value, f"offset {rec.offset}: value"
        assert rec.headers == tuple(msg.headers), f"offset {rec.offset}: headers"


PRODUCERS = {"confluent": ck_produce, "kafka-python": kp_produce}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_codec_round_trip_across_clients(broker, producer, codec):
    """Each client's batches in each codec read back identically by both clients.

    Two rounds go to the same partition so the second starts at a non-zero offset; the
    delivery reports must give consecutive offsets, and both confluent-kafka and kafka-python
    must read every key, value and header back byte for byte at those offsets.
    """
    topic = unique_topic(f"codec-{codec}")
    msgs = sample_records(null_header_values=producer == "confluent")
    first = PRODUCERS[producer](broker.bootstrap, topic, msgs, compression=codec)
    second = PRODUCERS[producer](broker.bootstrap, topic, msgs[:10], compression=codec)
    assert first == [(0, i) for i in range(len(msgs))]
    assert second == [(0, len(msgs) + i) for i in range(10)]

    everything = msgs + msgs[:10]
    by_confluent = ck_consume(broker.bootstrap, topic, 0, 0, len(everything))
    by_kafka_python = kp_consume(broker.bootstrap, topic, 0, 0, len(everything))
    check_read_back(by_confluent, everything, 0)
    check_read_back(by_kafka_python, everything, 0)
    assert by_confluent == by_kafka_python


def test_mixed_codecs_in_one_partition(broker):
    """Batches of all five codecs from both clients, interleaved in one partition, read back
    in order by both clients (a consumer must switch codec from one batch to the next)."""
    topic = unique_topic("mixed")
    expected = []
    for round_ in range(2):
        for codec in CODECS:
            for name, produce in sorted(PRODUCERS.items()):
                msgs = [Msg(f"{name}-{codec}-{round_}".encode(), f"v{i}".encode() * (i + 1))
                        for i in range(5)]
                offsets = produce(broker.bootstrap, topic, msgs, compression=codec)
                assert offsets == [(0, len(expected) + i) for i in range(5)]
                expected.extend(msgs)
    check_read_back(ck_consume(broker.bootstrap, topic, 0, 0, len(expected)), expected, 0)
    check_read_back(kp_consume(broker.bootstrap, topic, 0, 0, len(expected)), expected, 0)


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_round_trip(broker, codec):
    """kcat (librdkafka 2.0.2, the old-client canary) produces with each codec, lists the
    topic's metadata, and reads keys, values and headers back; confluent-kafka agrees."""
    topic = unique_topic(f"kcat-{codec}")
    lines = [f"k{i}\tvalue-{i}-{'x' * (i * 37)}" for i in range(40)]
    kcat(broker.bootstrap, "-P", "-t", topic, "-z", codec, "-K", "\t", "-H", "source=kcat",
         "-H", "codec=" + codec, input_bytes=("\n".join(lines) + "\n").encode())

    listing = kcat(broker.bootstrap, "-L", "-t", topic).decode()
    assert f'topic "{topic}" with 1 partitions' in listing, listing

    out = kcat(broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-c", "40",
               "-f", "%o|%k|%s|%h\n")
    got = out.decode().splitlines()
    expected = [f"{i}|{line.split(chr(9))[0]}|{line.split(chr(9))[1]}|source=kcat,codec={codec}"
                for i, line in enumerate(lines)]
    assert got == expected

    records = ck_consume(broker.bootstrap, topic, 0, 0, 40)
    assert [(r.key, r.value) for r in records] == [
        tuple(part.encode() for part in line.split("\t")) for line in lines]
    assert all(r.headers == (("source", b"kcat"), ("codec", codec.encode())) for r in records)


def test_kcat_reads_what_python_clients_wrote(broker):
    """kcat consumes batches written by confluent-kafka (zstd) and kafka-python (snappy with
    xerial framing) back to back, keys and values intact."""
    topic = unique_topic("kcat-read")
    ck_produce(broker.bootstrap, topic, [Msg(b"a", b"from-confluent")], compression="zstd")
    kp_produce(broker.bootstrap, topic, [Msg(b"b", b"from-kafka-python")], compression="snappy")
    out = kcat(broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-c", "2",
               "-f", "%o %k %s\n")
    assert out.decode().splitlines() == ["0 a from-confluent", "1 b from-kafka-python"]
