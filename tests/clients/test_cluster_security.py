"""SCRAM credentials and ACLs on the metadata log, and authenticated inter-broker traffic
(issue 17 in a cluster), on three real `spate` processes with confluent-kafka.

A SCRAM user created through one node's AlterUserScramCredentials logs in on the other two
and, after every node restarted (a metadata snapshot every few records), on all three; one
deleted through a third node no longer logs in anywhere. With `--authorizer acl` and the
brokers logging in to each other with SCRAM (`--sasl-mechanism-inter-broker-protocol`, the
brokers' user a super user), an acks=all producer writes to a topic of three replicas with
min.insync.replicas=3 (so every follower fetched as an authorized broker); an ACL created
through one node lets a user write to partitions led by each node (refused with
TOPIC_AUTHORIZATION_FAILED before), survives a restart of every node, and its deletion
through another node refuses the user again everywhere. Every wait is bounded.
"""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, NewTopic,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

from conftest import TARGET
from test_cluster import start_cluster, wait_for

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

TOPIC_AUTHORIZATION_FAILED = 29
BOOTSTRAP = {"admin": "admin-secret", "broker": "broker-secret", "alice": "alice-secret"}
WAIT_S = 60


def sasl_conf(port, user, password, mechanism="SCRAM-SHA-256"):
    return {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}


def logs_in(port, user, password, mechanism="SCRAM-SHA-256", timeout=4):
    """Whether `user` authenticates on the listener at `port` (a Metadata request answered
    over the authenticated connection) within `timeout` seconds."""
    # One attempt per call (librdkafka would retry a refused login every 100 ms, and ten
    # failures from one address in a minute block its logins).
    client = AdminClient({**sasl_conf(port, user, password, mechanism),
                          "socket.timeout.ms": timeout * 1000,
                          "reconnect.backoff.ms": timeout * 1000 + 1000,
                          "reconnect.backoff.max.ms": timeout * 1000 + 1000})
    try:
        client.list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


def upsert(client, user, password, mechanism=ScramMechanism.SCRAM_SHA_256):
    info = ScramCredentialInfo(mechanism, 4096)
    upsertion = UserScramCredentialUpsertion(user, info, password.encode(),
                                             b"salt-" + user.encode())
    for attempt in range(3):
        futures = client.alter_user_scram_credentials([upsertion])
        try:
            for future in futures.values():
                future.result(timeout=30)
            return
        except KafkaException as e:
            # librdkafka (2.10 and later) drops its bootstrap connection once Metadata names
            # the brokers, and a request in flight on it fails in the client, unanswered
            # (seen once, on an upsert sent right after the nodes' first start). The same
            # upsert again is harmless; any answer from a broker is final.
            if e.args[0].code() != KafkaError._DESTROY_BROKER or attempt == 2:
                raise


def delete(client, user, mechanism=ScramMechanism.SCRAM_SHA_256):
    futures = client.alter_user_scram_credentials([UserScramCredentialDeletion(user, mechanism)])
    for future in futures.values():
        future.result(timeout=30)


CARRIED = "SCRAM credentials and ACLs of this node are on the metadata log"


def bootstrapped(nodes):
    """Waits until every node applied its `--scram-bootstrap` credentials in its latest
    start (its log says so): logging in before would fail, and ten failed logins from one
    address in a minute block its logins."""
    wait_for("the bootstrap credentials on every node",
             lambda: all(node.broker.log_text().count(CARRIED) >= node.broker.starts
                         for node in nodes), timeout=WAIT_S)


def wait_login(what, check):
    """Polls a login check once a second (each failed login counts towards the limit)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {WAIT_S} s"
        time.sleep(1)


def restart_all(nodes, wait=True):
    for node in nodes:
        node.broker.stop()
    for node in nodes:
        node.broker.start()
    if wait:
        bootstrapped(nodes)


BLOCKED = "too many failed SASL logins"
REFUSED = "SASL authentication failed"


def test_logins_and_admin_requests_while_the_nodes_start(spate_factory):
    """A clustered node has no SCRAM credentials until it applied the metadata log's (its
    own bootstrap ones included). Logins that come meanwhile, the brokers' own to each
    other and a client's, wait for them and succeed, after the first start and after a
    restart of every node; none is counted as failed. (Counted, the brokers' logins to a
    node that was starting blocked 127.0.0.1 on it for a minute, every client with it.)
    An AlterUserScramCredentials sent at once, before the brokers' registrations commit,
    is answered (Metadata named no controller then, and librdkafka's admin client waited
    out its timeout), and the user it made logs in on every node after the restart."""
    nodes = secured_cluster(spate_factory, authorizer=False, wait=False)
    for phase in ("first start", "restart"):
        for node in nodes:
            port = node.broker.port
            assert logs_in(port, "admin", "admin-secret", timeout=20), (
                f"admin's login on :{port} during the {phase}")
        if phase == "first start":
            upsert(admin_of(nodes[0]), "carol", "carol-secret")
        bootstrapped(nodes)
        for node in nodes:
            text = node.broker.log_text()
            assert BLOCKED not in text and REFUSED not in text, (
                f"node {node.node_id} refused a login during the {phase}")
        if phase == "first start":
            restart_all(nodes, wait=False)
    for node in nodes:
        port = node.broker.port
        wait_login(f"carol logs in on :{port}", lambda: logs_in(port, "carol", "carol-secret"))


def test_scram_credentials_are_on_the_metadata_log(spate_factory):
    """A user created through node 1 logs in on nodes 2 and 3 (a node's own file would
    not have it); it still does on every node after all three restarted (journal and
    snapshot replayed); deleted through node 3, it logs in nowhere."""
    nodes = secured_cluster(spate_factory, authorizer=False)
    ports = [node.broker.port for node in nodes]
    first = admin_of(nodes[0])
    upsert(first, "carol", "carol-secret")
    upsert(first, "dave", "dave-secret")
    for port in ports:
        wait_login(f"carol logs in on :{port}", lambda: logs_in(port, "carol", "carol-secret"))
    restart_all(nodes)
    for port in ports:
        wait_login(f"carol logs in on :{port} after the restart",
                   lambda: logs_in(port, "carol", "carol-secret"))
        assert logs_in(port, "dave", "dave-secret")
    delete(admin_of(nodes[2]), "dave")
    # Before the refusals below: ten failed logins from one address block it for a minute.
    assert logs_in(ports[0], "carol", "carol-secret")
    for port in ports:
        wait_login(f"dave refused on :{port}", lambda: not logs_in(port, "dave", "dave-secret"))
    for node in nodes:
        text = node.broker.log_text()
        assert "carol-secret" not in text and "dave-secret" not in text


def secured_cluster(spate_factory, *extra, authorizer=True, wait=True):
    """Three nodes whose one listener is SASL_PLAINTEXT (the fixture port), the ACL
    authorizer with admin and broker as super users (unless `authorizer` is false), and the
    brokers logging in to each other as broker with SCRAM-SHA-256; once started, waits
    until every node carried its bootstrap credentials to the log (unless `wait` is
    false)."""
    args = ["--listen", None, "--listeners", "SASL_PLAINTEXT://127.0.0.1:{port}",
            *(["--authorizer", "acl", "--super-users", "User:admin,User:broker"]
              if authorizer else []),
            "--sasl-mechanism-inter-broker-protocol", "SCRAM-SHA-256",
            "--inter-broker-sasl-username", "broker",
            "--inter-broker-sasl-password", BOOTSTRAP["broker"],
            "--metadata-snapshot-interval-records", "5", *extra]
    for user, password in BOOTSTRAP.items():
        args += ["--scram-bootstrap", f"SCRAM-SHA-256=[name={user},password={password}]"]
    nodes = start_cluster(spate_factory, args_of=lambda _: args)
    if wait:
        bootstrapped(nodes)
    return nodes


def admin_of(node, user="admin"):
    clients = node.broker.__dict__.setdefault("admins", {})
    if user not in clients:
        clients[user] = AdminClient(sasl_conf(node.broker.port, user, BOOTSTRAP[user]))
    return clients[user]


def produce_code(node, user, topic, partition, timeout=10.0):
    """One acks=all record as `user` through `node` to `partition`: None when delivered,
    else the error code."""
    producer = Producer({**sasl_conf(node.broker.port, user, BOOTSTRAP[user]),
                         "acks": "all", "message.timeout.ms": int(timeout * 1000)})
    results = []
    producer.produce(topic, b"v", partition=partition,
                     on_delivery=lambda err, _: results.append(err))
    producer.flush(timeout + 5)
    assert results, "no delivery report"
    return results[0].code() if results[0] else None


def create_led_by_each(node, topic):
    """A topic of three partitions whose preferred leaders are nodes 1, 2 and 3, each with
    every node a replica and min.insync.replicas=3 (retried while the brokers register)."""
    def created():
        futures = admin_of(node).create_topics(
            [NewTopic(topic, 3, replica_assignment=[[1, 2, 3], [2, 3, 1], [3, 1, 2]],
                      config={"min.insync.replicas": "3"})], request_timeout=20)
        try:
            futures[topic].result(timeout=25)
            return True
        except KafkaException as e:
            if "already exists" in str(e).lower():
                return True
            raise AssertionError(str(e))
    wait_for(f"topic {topic} created", created, timeout=WAIT_S)


def allow_alice(topic):
    return AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                      AclOperation.WRITE, AclPermissionType.ALLOW)


def test_acls_are_on_the_metadata_log_and_brokers_authenticate(spate_factory):
    """With the authorizer on, the brokers' followers authenticate (acks=all with three
    in-sync replicas succeeds); an ACL created through node 1 is enforced by every leader,
    kept across a restart of every node, and its deletion through node 2 is too."""
    nodes = secured_cluster(spate_factory)
    topic = "secured"
    create_led_by_each(nodes[0], topic)
    # Every follower fetches as User:broker: acks=all needs all three replicas in sync.
    for partition in range(3):
        wait_for(f"admin writes partition {partition} with acks=all",
                 lambda: produce_code(nodes[0], "admin", topic, partition) is None,
                 timeout=WAIT_S)
    for partition in range(3):
        assert produce_code(nodes[1], "alice", topic, partition) == TOPIC_AUTHORIZATION_FAILED
    for binding_, future in admin_of(nodes[0]).create_acls([allow_alice(topic)]).items():
        assert future.result(timeout=30) is None, binding_
    # The partitions are led by nodes 1, 2 and 3: each leader authorizes alice's Produce.
    for partition in range(3):
        wait_for(f"alice writes partition {partition}",
                 lambda: produce_code(nodes[2], "alice", topic, partition) is None,
                 timeout=WAIT_S)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    listed = admin_of(nodes[2]).describe_acls(everything).result(timeout=30)
    assert [(b.name, b.principal) for b in listed] == [(topic, "User:alice")]
    restart_all(nodes)
    for partition in range(3):
        wait_for(f"alice writes partition {partition} after the restart",
                 lambda: produce_code(nodes[1], "alice", topic, partition) is None,
                 timeout=WAIT_S)
    futures = admin_of(nodes[1]).delete_acls([everything])
    deleted = futures[everything].result(timeout=30)
    assert [(b.name, b.principal) for b in deleted] == [(topic, "User:alice")]
    for partition in range(3):
        wait_for(f"alice refused on partition {partition}",
                 lambda: produce_code(nodes[0], "alice", topic, partition)
                 == TOPIC_AUTHORIZATION_FAILED, timeout=WAIT_S)


def test_a_broker_user_without_cluster_action_cannot_replicate(spate_factory):
    """The follower fetch checks CLUSTER_ACTION: brokers logging in as a user that is no
    super user and has no ACL are refused, so a topic needing three in-sync replicas takes
    no acks=all write; an ACL granting that user CLUSTER_ACTION on the cluster (created
    through one node, applied by all) lets replication and the write through."""
    args = ["--listen", None, "--listeners", "SASL_PLAINTEXT://127.0.0.1:{port}",
            "--authorizer", "acl", "--super-users", "User:admin",
            "--sasl-mechanism-inter-broker-protocol", "SCRAM-SHA-256",
            "--inter-broker-sasl-username", "broker",
            "--inter-broker-sasl-password", BOOTSTRAP["broker"],
            "--replica-lag-time-max-ms", "2000"]
    for user, password in BOOTSTRAP.items():
        args += ["--scram-bootstrap", f"SCRAM-SHA-256=[name={user},password={password}]"]
    nodes = start_cluster(spate_factory, args_of=lambda _: args)
    bootstrapped(nodes)
    topic = "needs-followers"
    create_led_by_each(nodes[0], topic)
    assert produce_code(nodes[0], "admin", topic, 0, timeout=6) is not None
    grant = AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL,
                       "User:broker", "*", AclOperation.CLUSTER_ACTION, AclPermissionType.ALLOW)
    for binding_, future in admin_of(nodes[1]).create_acls([grant]).items():
        assert future.result(timeout=30) is None, binding_
    for partition in range(3):
        wait_for(f"admin writes partition {partition} with acks=all",
                 lambda: produce_code(nodes[0], "admin", topic, partition) is None,
                 timeout=WAIT_S)


def test_a_sasl_listener_needs_an_inter_broker_login(spate_factory):
    """A clustered node whose listener is SASL (the one the brokers connect to each other
    on) without an inter-broker login refuses to start, naming the options."""
    nodes = start_cluster(spate_factory, args_of=lambda _: [
        "--listen", None, "--listeners", "SASL_PLAINTEXT://127.0.0.1:{port}"], start=False)
    broker = nodes[0].broker
    with pytest.raises(AssertionError) as refused:
        broker.start()
    assert "--sasl-mechanism-inter-broker-protocol" in str(refused.value)
