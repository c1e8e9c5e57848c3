"""Apache Kafka Connect's distributed worker (from Maven Central) against the broker (issue 19).

A worker keeps its connector configs, source offsets and statuses in three compacted topics
that it creates itself and refuses to start on without `cleanup.policy=compact`. Here it
creates them, runs a FileStreamSource connector that copies a file's lines into a topic, and
after a restart of the worker finds its connector in the config topic and resumes from the
offset it stored in the offsets topic: the lines written while it was down arrive, and none
of the earlier ones twice.
"""

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from client_helpers import CK_COMMON, ck_consumer, unique_topic, wait_until
from conftest import free_port
from java_build import CONNECT_POM, maven_classpath

LOG4J = """status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
"""


class Worker:
    """One Connect worker process in distributed mode, with its REST port."""

    def __init__(self, workdir, classpath, bootstrap, suffix):
        self.workdir, self.classpath = workdir, classpath
        self.port = free_port()
        self.log = workdir / f"connect-{self.port}.log"
        self.topics = {kind: f"connect-{kind}-{suffix}" for kind in ("offsets", "configs",
                                                                     "status")}
        props = workdir / f"worker-{self.port}.properties"
        props.write_text("\n".join([
            f"bootstrap.servers={bootstrap}",
            f"group.id=connect-{suffix}",
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
            "value.converter=org.apache.kafka.connect.storage.StringConverter",
            f"offset.storage.topic={self.topics['offsets']}",
            f"config.storage.topic={self.topics['configs']}",
            f"status.storage.topic={self.topics['status']}",
            "offset.storage.replication.factor=1",
            "config.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "offset.flush.interval.ms=500",
            f"listeners=http://127.0.0.1:{self.port}",
            "rest.advertised.host.name=127.0.0.1",
        ]) + "\n")
        log4j = workdir / f"log4j2-{self.port}.properties"
        log4j.write_text(LOG4J.format(log=self.log))
        self.process = subprocess.Popen(
            ["java", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
             "org.apache.kafka.connect.cli.ConnectDistributed", str(props)],
            stdout=subprocess.DEVNULL, stderr=open(workdir / f"stderr-{self.port}.txt", "wb"))

    def rest(self, method, path, body=None):
        """(status, parsed JSON or None) of a REST call; (None, None) when nothing listens."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                text = answer.read()
                return answer.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None, None

    def wait_serving(self, seconds=120):
        def serving():
            assert self.process.poll() is None, f"the worker exited: {self.tail()}"
            return self.rest("GET", "/connectors")[0] == 200
        wait_until(serving, seconds, f"the Connect worker's REST API ({self.tail()})")

    def wait_running(self, name, seconds=90):
        def running():
            assert self.process.poll() is None, f"the worker exited: {self.tail()}"
            status, body = self.rest("GET", f"/connectors/{name}/status")
            if status != 200:
                return False
            tasks = body.get("tasks", [])
            return (body["connector"]["state"] == "RUNNING" and tasks
                    and all(task["state"] == "RUNNING" for task in tasks))
        wait_until(running, seconds, f"connector {name} running ({self.tail()})")

    def stop(self):
        """A graceful stop (SIGTERM): the worker commits its source offsets and leaves."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def tail(self):
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        errors = [line for line in text.splitlines() if " ERROR " in line]
        return "\n".join(errors[-5:]) or text[-1500:]


def read_lines(bootstrap, topic, count, timeout=60):
    """The values of partition 0 from its start, until `count` arrived (fails after
    `timeout`), then whatever else arrives within a second (a duplicate would)."""
    consumer = ck_consumer(bootstrap, **{"fetch.wait.max.ms": 100})
    values = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        settle = None
        while time.monotonic() < (settle or deadline):
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            values.append(message.value().decode())
            if len(values) >= count and settle is None:
                settle = time.monotonic() + 1.0
    finally:
        consumer.close()
    return values


def cleanup_policies(bootstrap, topics):
    client = AdminClient({"bootstrap.servers": bootstrap, **CK_COMMON})
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
    described = client.describe_configs(resources)
    return {resource.name: future.result(timeout=30)["cleanup.policy"].value
            for resource, future in described.items()}


@pytest.mark.timeout(600)
def test_kafka_connect_distributed_worker_runs_a_file_source(broker, tmp_path):
    classpath = maven_classpath(CONNECT_POM, 300, "the Kafka Connect test")
    suffix = unique_topic("w")
    topic = unique_topic("connect-lines")
    source = tmp_path / "input.txt"
    source.write_text("".join(f"line-{i}\n" for i in range(100)))
    worker = Worker(tmp_path, classpath, broker.bootstrap, suffix)
    try:
        worker.wait_serving()
        assert cleanup_policies(broker.bootstrap, worker.topics.values()) == {
            name: "compact" for name in worker.topics.values()}
        status, _ = worker.rest("POST", "/connectors", {"name": "lines", "config": {
            "connector.class": "FileStreamSource", "tasks.max": "1", "file": str(source),
            "topic": topic}})
        assert status == 201, f"creating the connector: HTTP {status} ({worker.tail()})"
        worker.wait_running("lines")
        assert read_lines(broker.bootstrap, topic, 100) == [f"line-{i}" for i in range(100)]
        # Let an offset flush pass (every 500 ms) before the stop, which commits too.
        time.sleep(1.5)
    finally:
        worker.stop()
    with open(source, "a") as more:
        more.write("".join(f"line-{i}\n" for i in range(100, 150)))
    worker = Worker(tmp_path, classpath, broker.bootstrap, suffix)
    try:
        worker.wait_serving()
        # The connector comes back from the config topic, not from this test.
        worker.wait_running("lines")
        assert read_lines(broker.bootstrap, topic, 150) == [f"line-{i}" for i in range(150)]
        status, body = worker.rest("GET", "/connectors")
        assert status == 200 and body == ["lines"]
    finally:
        worker.stop()
