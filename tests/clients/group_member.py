"""One consumer group member in its own process, so a test can kill it like a crash would.

    python3 group_member.py --kind ck|kp --bootstrap HOST:PORT --group G --topic T
                            [--conf JSON] [--no-commit]

`ck` is confluent-kafka (librdkafka), `kp` is kafka-python. The member subscribes to the
topic and writes one JSON object per line on stdout:

    {"event": "ready"}                                  the consumer exists
    {"event": "assigned", "partitions": [0, 2]}         its whole assignment, on every change
    {"event": "revoked", "partitions": [2]}             partitions taken away (ck callbacks)
    {"event": "added", "partitions": [3]}               partitions given (ck callbacks)
    {"event": "record", "partition": 0, "offset": 5, "value": "..."}
    {"event": "closed"}                                 after a clean close (SIGTERM)

Each polled record is committed synchronously before the next poll (unless --no-commit), so
what the member printed is what its group has committed. SIGTERM closes the consumer
cleanly (LeaveGroup for dynamic members); SIGKILL is a crash.
"""

import argparse
import json
import signal
import sys
import time

stopping = False


def say(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def on_term(_signum, _frame):
    global stopping
    stopping = True


def run_ck(args, conf):
    from confluent_kafka import Consumer

    settings = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "broker.address.family": "v4",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    settings.update(conf)
    consumer_protocol = settings.get("group.protocol") == "consumer"
    if consumer_protocol:
        # KIP-848: the broker owns these and assigns incrementally.
        for key in ("session.timeout.ms", "heartbeat.interval.ms",
                    "partition.assignment.strategy"):
            settings.pop(key, None)
    consumer = Consumer(settings)
    cooperative = consumer_protocol or "cooperative" in str(
        settings.get("partition.assignment.strategy", ""))

    def assigned(c, partitions):
        say(event="added", partitions=sorted(p.partition for p in partitions))
        if cooperative:
            c.incremental_assign(partitions)
        else:
            c.assign(partitions)

    def revoked(c, partitions):
        say(event="revoked", partitions=sorted(p.partition for p in partitions))
        if cooperative:
            c.incremental_unassign(partitions)
        else:
            c.unassign()

    consumer.subscribe([args.topic], on_assign=assigned, on_revoke=revoked)
    say(event="ready")
    last = None
    while not stopping:
        msg = consumer.poll(0.1)
        current = sorted(p.partition for p in consumer.assignment())
        if current != last:
            say(event="assigned", partitions=current)
            last = current
        if msg is None:
            continue
        if msg.error():
            say(event="error", error=str(msg.error()))
            continue
        say(event="record", partition=msg.partition(), offset=msg.offset(),
            value=(msg.value() or b"").decode(errors="replace"))
        if args.commit:
            try:
                consumer.commit(message=msg, asynchronous=False)
            except Exception as error:  # a rebalance may fence one commit; it is reported
                say(event="commit_failed", error=str(error))
    consumer.close()
    say(event="closed")


def run_kp(args, conf):
    import logging

    from kafka import KafkaConsumer, TopicPartition

    # kafka-python's own account of joins, fetches and errors, kept beside the test's logs.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings = {
        "bootstrap_servers": args.bootstrap,
        "group_id": args.group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 100,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "request_timeout_ms": 15000,
    }
    settings.update(conf)
    consumer = KafkaConsumer(**settings)
    # kafka-python 3.0.12 loses a rejoin that a metadata change started when poll() times out
    # while its JoinGroup and SyncGroup are in flight: the leader's assignment makes
    # need_rejoin() false, so the finished join is never collected, and the member sits with
    # no partitions and no heartbeat for ever. Knowing the topic's partitions before the first
    # join (asked after subscribing, so the consumer's snapshot of its subscribed topics has
    # them) makes that metadata-driven rejoin unnecessary.
    consumer.subscribe([args.topic])
    consumer.partitions_for_topic(args.topic)
    say(event="ready")
    last = None
    while not stopping:
        batches = consumer.poll(timeout_ms=100)
        current = sorted(tp.partition for tp in consumer.assignment())
        if current != last:
            say(event="assigned", partitions=current)
            last = current
        for tp, records in batches.items():
            for msg in records:
                say(event="record", partition=msg.partition, offset=msg.offset,
                    value=(msg.value or b"").decode(errors="replace"))
            if args.commit and records:
                from kafka.structs import OffsetAndMetadata
                try:
                    consumer.commit({TopicPartition(tp.topic, tp.partition):
                                     OffsetAndMetadata(records[-1].offset + 1, "", -1)})
                except Exception as error:
                    say(event="commit_failed", error=str(error))
    consumer.close()
    say(event="closed")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["ck", "kp"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--no-commit", dest="commit", action="store_false")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    conf = json.loads(args.conf)
    started = time.monotonic()
    try:
        (run_ck if args.kind == "ck" else run_kp)(args, conf)
    except Exception as error:
        say(event="crashed", error=repr(error), after_s=time.monotonic() - started)
        raise


if __name__ == "__main__":
    main()
