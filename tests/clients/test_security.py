"""Listeners, TLS and SASL (issue 17, items 1-3) with real clients.

Each test starts its own broker with a PLAINTEXT listener on the fixture's port (the suite's
readiness check) and secured listeners on ports of their own, 127.0.0.1 only. Certificates are
made in the test (tls_certs.py): a CA the broker and clients trust, a server certificate for
127.0.0.1, client certificates, and a second CA nobody trusts.

Clients: confluent-kafka (librdkafka) over SASL_SSL with PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512 and over SSL with client certificates; the Java client over SASL_SSL with SCRAM;
kcat over SSL; raw sockets for what clients hide (the SASL state machine, session expiry).
"""

import base64
import hashlib
import hmac
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

from client_helpers import Msg, ck_consume, ck_produce, unique_topic
from conftest import SPATE_BIN, TARGET, free_port
from kafka_wire import (api_versions_request, closed_by_peer, connect, frame,
                        metadata_request_v1, parse_api_versions_v0, read_response,
                        request_header)
from tls_certs import Authority

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="Spate's listener options")

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
ADMIN_PASSWORD = "admin-secret"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """The test PKI: trusted CA, server and client certificates, and an untrusted CA's."""
    directory = tmp_path_factory.mktemp("pki")
    trusted = Authority(directory, "trusted")
    server = trusted.issue("server", "broker", server=True)
    client = trusted.issue("client", "client")
    rogue_ca = Authority(directory, "rogue")
    rogue = rogue_ca.issue("rogue-client", "client")
    rogue_server = rogue_ca.issue("rogue-server", "broker", server=True)
    return {"ca": trusted.ca_file, "server": server, "client": client, "rogue": rogue,
            "rogue_server": rogue_server, "rogue_ca": rogue_ca.ca_file, "authority": trusted}


def plain_users_file(path, users):
    """The --sasl-plain-users-file format: name:pbkdf2-sha256:iterations:salt:hash."""
    lines = []
    for name, password in users.items():
        salt = os.urandom(16)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10000)
        lines.append(f"{name}:pbkdf2-sha256:10000:{base64.b64encode(salt).decode()}:"
                     f"{base64.b64encode(digest).decode()}")
    path.write_text("# test users\n" + "\n".join(lines) + "\n")
    return path


def secure_broker(spate_factory, certs, *extra, listeners=("SASL_SSL",), client_ca=False,
                  advertised=None):
    """A broker with PLAINTEXT on its fixture port plus `listeners`, each on a free port;
    returns it with `.ports` by listener name."""
    broker = spate_factory(start=False)
    ports = {"PLAINTEXT": broker.port, **{name: free_port() for name in listeners}}
    spec = ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items())
    args = ["--listen", None, "--listeners", spec, "--cores", "2"]
    if any("SSL" in name for name in listeners):
        cert, key = certs["server"]
        args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    if client_ca:
        args += ["--tls-client-ca-file", str(certs["ca"])]
    if any(name.startswith("SASL") for name in listeners):
        args += ["--scram-bootstrap", f"SCRAM-SHA-256=[name=admin,password={ADMIN_PASSWORD}]",
                 "--scram-bootstrap", f"SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]",
                 "--sasl-plain-users-file",
                 str(plain_users_file(broker.workdir / "plain-users",
                                      {"admin": ADMIN_PASSWORD, "alice": "alice-pw"}))]
    if advertised:
        args += ["--advertised-listeners", advertised(ports)]
    broker.extra_args = args + list(extra)
    broker.ports = ports
    return broker.start()


def sasl_conf(broker, certs, mechanism="SCRAM-SHA-256", user="admin", password=ADMIN_PASSWORD,
              listener="SASL_SSL"):
    conf = {"bootstrap.servers": f"127.0.0.1:{broker.ports[listener]}",
            "security.protocol": listener, "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password}
    if "SSL" in listener:
        conf["ssl.ca.location"] = str(certs["ca"])
    return conf


def ssl_conf(broker, certs, client="client"):
    conf = {"bootstrap.servers": f"127.0.0.1:{broker.ports['SSL']}", "security.protocol": "SSL",
            "ssl.ca.location": str(certs["ca"])}
    if client:
        cert, key = certs[client]
        conf.update({"ssl.certificate.location": str(cert), "ssl.key.location": str(key)})
    return conf


def failure_of(conf, timeout=15.0):
    """Produces one record with `conf`; returns the client's error (None: it was delivered)."""
    errors = []
    conf = {**conf, "error_cb": errors.append, "message.timeout.ms": int(timeout * 1000),
            "socket.connection.setup.timeout.ms": 5000, "reconnect.backoff.max.ms": 1000}
    producer = Producer(conf)
    delivered = []
    producer.produce(unique_topic("nope"), b"v", on_delivery=lambda err, _: delivered.append(err))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not errors and not delivered:
        producer.poll(0.2)
    producer.purge()
    producer.flush(1)
    if delivered and delivered[0] is None:
        return None
    return errors[0] if errors else delivered[0] if delivered else "timed out"


def round_trip(conf, count=50):
    topic = unique_topic("sec")
    msgs = [Msg(f"k{i}".encode(), f"v{i}".encode()) for i in range(count)]
    ck_produce(conf["bootstrap.servers"], topic, msgs, **conf)
    records = ck_consume(conf["bootstrap.servers"], topic, count=count, **conf)
    assert [r.value for r in records] == [m.value for m in msgs]


# ---------------------------------------------------------------------------------------------
# SASL over TLS with confluent-kafka


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_produce_and_consume(spate_factory, certs, mechanism):
    """Each mechanism over SASL_SSL: produce and consume through every advertised address (a
    client sent to the PLAINTEXT port would fail its TLS handshake), and the broker logs the
    principal."""
    broker = secure_broker(spate_factory, certs)
    round_trip(sasl_conf(broker, certs, mechanism))
    log = broker.log_text()
    assert f'authenticated principal=User:admin mechanism="{mechanism}"' in strip_ansi(log), \
        broker.log_tail()


def test_metadata_advertises_the_listener_the_client_came_in_on(spate_factory, certs):
    """Kafka answers Metadata with the brokers' endpoints of the listener the request arrived
    on: PLAINTEXT clients see the PLAINTEXT port, SASL_SSL clients the advertised SASL_SSL
    address (here localhost, from --advertised-listeners)."""
    broker = secure_broker(spate_factory, certs, listeners=("SASL_SSL", "SASL_PLAINTEXT"),
                           advertised=lambda p: f"SASL_SSL://localhost:{p['SASL_SSL']}")
    plain = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert [(b.host, b.port) for b in plain.brokers.values()] == [("127.0.0.1", broker.port)]
    secured = AdminClient(sasl_conf(broker, certs)).list_topics(timeout=10)
    assert [(b.host, b.port) for b in secured.brokers.values()] == \
        [("localhost", broker.ports["SASL_SSL"])]
    sasl_plain = AdminClient(sasl_conf(broker, certs, listener="SASL_PLAINTEXT"))
    listed = sasl_plain.list_topics(timeout=10)
    assert [(b.host, b.port) for b in listed.brokers.values()] == \
        [("127.0.0.1", broker.ports["SASL_PLAINTEXT"])]


def test_wrong_password_fails_clearly_and_the_broker_serves_others(spate_factory, certs):
    """A wrong password is an authentication error at the client; the broker logs the user,
    never the password, and goes on serving a client with the right one."""
    broker = secure_broker(spate_factory, certs)
    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        error = failure_of(sasl_conf(broker, certs, mechanism, password="guessed-wrong-pw"))
        assert error is not None and error.code() == KafkaError._AUTHENTICATION, error
        assert "Authentication failed" in error.str(), error
    error = failure_of(sasl_conf(broker, certs, "SCRAM-SHA-256", user="nobody"))
    assert error is not None and error.code() == KafkaError._AUTHENTICATION, error
    round_trip(sasl_conf(broker, certs, "SCRAM-SHA-512"), count=5)
    log = strip_ansi(broker.log_text())
    assert "SASL authentication failed" in log and 'user="admin"' in log, broker.log_tail()
    assert "guessed-wrong-pw" not in log


# ---------------------------------------------------------------------------------------------
# TLS


def test_mtls_principal_from_the_certificate_and_untrusted_certificates(spate_factory, certs):
    """SSL with --tls-client-ca-file: a client certificate from the trusted CA gets in with
    its subject as principal; one from another CA, or none, fails the handshake; the broker
    keeps serving."""
    broker = secure_broker(spate_factory, certs, listeners=("SSL",), client_ca=True)
    round_trip(ssl_conf(broker, certs))
    for client in ("rogue", None):
        error = failure_of(ssl_conf(broker, certs, client))
        assert error is not None and error.code() in (KafkaError._SSL, KafkaError._TRANSPORT), \
            error
    round_trip(ssl_conf(broker, certs), count=5)
    log = strip_ansi(broker.log_text())
    assert "principal=User:CN=client,O=Spate Tests" in log, broker.log_tail()
    assert "TLS handshake failed" in log, broker.log_tail()


def test_untrusted_server_certificate_is_refused_by_the_client(spate_factory, certs):
    """A client that trusts another CA refuses the broker's certificate (SSL error)."""
    broker = secure_broker(spate_factory, certs, listeners=("SSL",))
    conf = {**ssl_conf(broker, certs, None), "ssl.ca.location": str(certs["rogue_ca"])}
    error = failure_of(conf)
    # librdkafka reports the failed verification as an SSL error, or on a loaded machine at
    # times as a transport error whose text names it.
    assert error is not None and (error.code() == KafkaError._SSL or (
        error.code() == KafkaError._TRANSPORT and "certificate verify failed" in error.str())), \
        error
    round_trip(ssl_conf(broker, certs, None), count=5)


def test_wrong_protocol_on_either_port_fails_and_others_are_served(spate_factory, certs):
    """A plaintext client on the TLS port and a TLS client on the plaintext port each fail
    with a transport or SSL error, and the broker serves both ports right after."""
    broker = secure_broker(spate_factory, certs, listeners=("SSL",))
    plaintext_to_tls = {"bootstrap.servers": f"127.0.0.1:{broker.ports['SSL']}"}
    error = failure_of(plaintext_to_tls, timeout=8)
    assert error is not None, "a plaintext client got through a TLS port"
    tls_to_plaintext = {"bootstrap.servers": broker.bootstrap, "security.protocol": "SSL",
                        "ssl.ca.location": str(certs["ca"])}
    error = failure_of(tls_to_plaintext, timeout=8)
    assert error is not None and error.code() in (KafkaError._SSL, KafkaError._TRANSPORT), error
    round_trip(ssl_conf(broker, certs, None), count=5)
    round_trip({"bootstrap.servers": broker.bootstrap}, count=5)


def server_certificate(port):
    """The DER certificate the TLS listener presents to a new connection."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def test_sighup_reloads_the_certificate_without_dropping_connections(spate_factory, certs,
                                                                      tmp_path):
    """SIGHUP: new connections get the new certificate; a producer connected before keeps
    producing on its connection; a broken replacement is refused and the old one kept."""
    cert, key = certs["authority"].issue("reload-a", "broker", server=True)
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    broker = spate_factory(start=False)
    port = free_port()
    broker.extra_args = ["--listen", None, "--listeners",
                         f"PLAINTEXT://127.0.0.1:{broker.port},SSL://127.0.0.1:{port}",
                         "--tls-cert-file", str(live_cert), "--tls-key-file", str(live_key)]
    broker.ports = {"PLAINTEXT": broker.port, "SSL": port}
    broker.start()
    before = server_certificate(port)
    conf = ssl_conf(broker, certs, None)
    topic = unique_topic("reload")
    producer = Producer({**conf, "acks": "all", "linger.ms": 0})
    delivered = []

    def produce(count):
        for i in range(count):
            producer.produce(topic, f"v{i}".encode(), on_delivery=lambda e, m: delivered.append(e))
        assert producer.flush(20) == 0

    produce(20)
    new_cert, new_key = certs["authority"].issue("reload-b", "broker", server=True)
    shutil.copy(new_cert, live_cert)
    shutil.copy(new_key, live_key)
    os.kill(broker.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server_certificate(port) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    after = server_certificate(port)
    assert after != before, "SIGHUP did not load the new certificate"
    produce(20)
    assert delivered == [None] * 40
    # A key that does not go with the certificate: logged, the current pair kept.
    live_key.write_bytes(certs["client"][1].read_bytes())
    os.kill(broker.pid, signal.SIGHUP)
    time.sleep(1)
    assert server_certificate(port) == after
    assert "TLS reload failed" in broker.log_text()
    assert broker.alive()
    round_trip(ssl_conf(broker, certs, None), count=5)


def test_kcat_over_ssl(spate_factory, certs):
    """kcat (librdkafka's CLI) produces and consumes over SSL."""
    if not shutil.which("kcat"):
        pytest.skip("kcat is not installed")
    broker = secure_broker(spate_factory, certs, listeners=("SSL",))
    topic = unique_topic("kcat")
    common = ["-b", f"127.0.0.1:{broker.ports['SSL']}", "-X", "security.protocol=SSL",
              "-X", f"ssl.ca.location={certs['ca']}", "-t", topic]
    lines = "".join(f"line-{i}\n" for i in range(20))
    done = subprocess.run(["kcat", "-P", *common], input=lines.encode(), capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(["kcat", "-C", "-e", "-o", "beginning", "-c", "20", *common],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == lines


@pytest.mark.timeout(420)
def test_java_client_over_sasl_ssl_scram(spate_factory, certs, tmp_path):
    """The Java client (kafka-clients 4.3) with SASL_SSL and SCRAM-SHA-512, truststore in
    PEM: produces and reads back 500 records."""
    from java_build import compile_java
    classpath = compile_java("SecureClient")
    broker = secure_broker(spate_factory, certs)
    properties = tmp_path / "client.properties"
    properties.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{ADMIN_PASSWORD}";\n'
        f"ssl.truststore.type=PEM\nssl.truststore.location={certs['ca']}\n")
    done = subprocess.run(
        ["java", "-cp", classpath, "SecureClient", f"127.0.0.1:{broker.ports['SASL_SSL']}",
         unique_topic("java"), "500", str(properties)], capture_output=True, timeout=180)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, output[-3000:]
    assert "acknowledged 500" in output and "consumed 500" in output, output[-3000:]


# ---------------------------------------------------------------------------------------------
# SCRAM credentials through the admin API


def test_scram_credentials_through_the_admin_api_survive_a_restart(spate_factory, certs):
    """AlterUserScramCredentials creates a user (the client sends only a salted password),
    DescribeUserScramCredentials lists it, the user logs in, and after a restart still does;
    the file holds no password; a deleted credential no longer logs in."""
    broker = secure_broker(spate_factory, certs)
    admin = AdminClient(sasl_conf(broker, certs))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("carol", info, b"carol-password", b"carol-salt")])
    futures["carol"].result(timeout=10)
    described = {user: future.result(timeout=10) for user, future in
                 admin.describe_user_scram_credentials(["carol", "admin"]).items()}
    assert [(c.mechanism, c.iterations) for c in described["carol"].scram_credential_infos] == \
        [(ScramMechanism.SCRAM_SHA_512, 8192)]
    assert {c.mechanism for c in described["admin"].scram_credential_infos} == \
        {ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512}
    with pytest.raises(Exception) as missing:
        admin.describe_user_scram_credentials(["nobody"])["nobody"].result(timeout=10)
    assert "RESOURCE_NOT_FOUND" in str(missing.value)
    bad = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 10)
    with pytest.raises(Exception) as refused:
        admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("dave", bad, b"pw")])["dave"].result(timeout=10)
    assert "UNACCEPTABLE_CREDENTIAL" in str(refused.value)
    carol = sasl_conf(broker, certs, "SCRAM-SHA-512", "carol", "carol-password")
    round_trip(carol, count=5)
    stored = (broker.data_dir / "__spate_meta" / "scram-credentials").read_text()
    assert "carol" in stored and "carol-password" not in stored and ADMIN_PASSWORD not in stored
    broker.restart()
    round_trip(carol, count=5)
    assert failure_of(sasl_conf(broker, certs, "SCRAM-SHA-256", "carol", "carol-password"))
    admin = AdminClient(sasl_conf(broker, certs))
    admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)])["carol"].result(10)
    error = failure_of(carol)
    assert error is not None and error.code() == KafkaError._AUTHENTICATION, error


# ---------------------------------------------------------------------------------------------
# The SASL state machine on the wire


def scram_client_first(user, nonce):
    return f"n,,n={user},r={nonce}".encode()


def scram_client_final(password, client_first, server_first, algorithm="sha256"):
    fields = dict(item.split("=", 1) for item in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(algorithm, password.encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", algorithm).digest()
    stored_key = hashlib.new(algorithm, client_key).digest()
    without_proof = f"c=biws,r={fields['r']}"
    auth = b",".join([client_first[3:], server_first, without_proof.encode()])
    signature = hmac.new(stored_key, auth, algorithm).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def sasl_handshake(sock, mechanism, correlation_id=10):
    body = struct.pack(">h", len(mechanism)) + mechanism.encode()
    sock.sendall(frame(request_header(SASL_HANDSHAKE, 1, correlation_id) + body))
    got_id, response = read_response(sock)
    assert got_id == correlation_id
    return struct.unpack_from(">h", response)[0]


def sasl_authenticate(sock, token, correlation_id=11):
    """SaslAuthenticate v1: (error_code, auth_bytes, session_lifetime_ms)."""
    body = struct.pack(">i", len(token)) + token
    sock.sendall(frame(request_header(SASL_AUTHENTICATE, 1, correlation_id) + body))
    got_id, response = read_response(sock)
    assert got_id == correlation_id
    error_code, message_size = struct.unpack_from(">hh", response)
    position = 4 + max(message_size, 0)
    (size,) = struct.unpack_from(">i", response, position)
    auth_bytes = response[position + 4:position + 4 + size]
    (lifetime,) = struct.unpack_from(">q", response, position + 4 + size)
    return error_code, auth_bytes, lifetime


def scram_login(sock, password=ADMIN_PASSWORD, user="admin"):
    assert sasl_handshake(sock, "SCRAM-SHA-256") == 0
    first = scram_client_first(user, "abcdefgh")
    code, server_first, _ = sasl_authenticate(sock, first)
    assert code == 0
    return sasl_authenticate(sock, scram_client_final(password, first, server_first), 12)


def metadata_answered(sock, correlation_id=20):
    sock.sendall(metadata_request_v1([], correlation_id))
    return read_response(sock)[0] == correlation_id


def test_requests_before_authentication_close_the_connection(spate_factory, certs):
    """On a SASL listener ApiVersions is answered before authentication; any other request
    closes the connection unanswered, as Kafka does; an unknown mechanism is answered
    UNSUPPORTED_SASL_MECHANISM and closes; a login then lets Metadata through."""
    broker = secure_broker(spate_factory, certs, listeners=("SASL_PLAINTEXT",))
    port = broker.ports["SASL_PLAINTEXT"]
    with connect(port) as sock:
        sock.sendall(api_versions_request(0, 1))
        assert parse_api_versions_v0(read_response(sock)[1])[0] == 0
        sock.sendall(metadata_request_v1([], 2))
        assert closed_by_peer(sock, timeout=5)
    with connect(port) as sock:
        assert sasl_handshake(sock, "GSSAPI") == 33
        assert closed_by_peer(sock, timeout=5)
    with connect(port) as sock:
        code, server_final, lifetime = scram_login(sock)
        assert code == 0 and server_final.startswith(b"v=") and lifetime == 0
        assert metadata_answered(sock)
    with connect(port) as sock:
        code, _, _ = scram_login(sock, password="wrong")
        assert code == 58  # SASL_AUTHENTICATION_FAILED, then the connection closes
        assert closed_by_peer(sock, timeout=5)
    # The PLAINTEXT listener of the same broker needs no login.
    with connect(broker.port) as sock:
        assert metadata_answered(sock)


# Serial: logins and requests timed within a 1.5 s session (0.5 s to spare).
@pytest.mark.serial
def test_reauthentication_extends_the_session_and_expiry_closes(spate_factory, certs):
    """--connections-max-reauth-ms: SaslAuthenticate answers the session lifetime; a request
    after it ran out closes the connection; a re-authentication on the same connection before
    then (KIP-368) keeps it going; librdkafka re-authenticates by itself and keeps producing
    across several lifetimes."""
    broker = secure_broker(spate_factory, certs, "--connections-max-reauth-ms", "1500",
                           listeners=("SASL_PLAINTEXT", "SASL_SSL"))
    port = broker.ports["SASL_PLAINTEXT"]
    with connect(port) as expiring, connect(port) as renewing:
        for sock in (expiring, renewing):
            code, _, lifetime = scram_login(sock)
            assert code == 0 and lifetime == 1500
            assert metadata_answered(sock)
        time.sleep(1.0)
        code, _, lifetime = scram_login(renewing)
        assert code == 0 and lifetime == 1500
        time.sleep(0.8)
        assert metadata_answered(renewing)
        expiring.sendall(metadata_request_v1([], 30))
        assert closed_by_peer(expiring, timeout=5)
    # Re-authentication with another mechanism is refused.
    with connect(port) as sock:
        assert scram_login(sock)[0] == 0
        assert sasl_handshake(sock, "PLAIN") == 33
    conf = sasl_conf(broker, certs, "SCRAM-SHA-512")
    topic = unique_topic("reauth")
    errors, delivered = [], []
    producer = Producer({**conf, "error_cb": errors.append, "linger.ms": 0})
    deadline = time.monotonic() + 6
    sent = 0
    while time.monotonic() < deadline:
        producer.produce(topic, f"v{sent}".encode(), on_delivery=lambda e, m: delivered.append(e))
        sent += 1
        producer.poll(0.05)
    assert producer.flush(20) == 0
    assert delivered == [None] * sent, [e for e in delivered if e][:3]
    assert not [e for e in errors if e.code() == KafkaError._AUTHENTICATION], errors
    logins = strip_ansi(broker.log_text()).count('principal=User:admin mechanism="SCRAM-SHA-512"')
    assert logins >= 4, f"{logins} logins in 6 s with a 1.5 s session"


def test_failed_logins_are_rate_limited_per_source(spate_factory, certs):
    """After ten failed logins in a minute from one address, its next login is refused
    without checking, even with the right password; the limit is logged."""
    broker = secure_broker(spate_factory, certs, "--cores", "1",
                           listeners=("SASL_PLAINTEXT",))
    port = broker.ports["SASL_PLAINTEXT"]
    for _ in range(10):
        with connect(port) as sock:
            assert scram_login(sock, password="wrong")[0] == 58
    with connect(port) as sock:
        assert sasl_handshake(sock, "SCRAM-SHA-256") == 0
        code, _, _ = sasl_authenticate(sock, scram_client_first("admin", "n1"))
        assert code == 58
    assert "too many failed SASL logins" in broker.log_text()


# ---------------------------------------------------------------------------------------------
# Start-up problems


@pytest.mark.parametrize("problem", [
    "missing-cert", "key-not-matching", "bad-listener", "ssl-without-cert", "port-in-use",
    "bad-scram-bootstrap", "bad-users-file",
])
def test_security_startup_problems_end_with_one_sentence(tmp_path, certs, problem):
    """Each bad set-up exits non-zero with one line that names the option and the fix."""
    port = free_port()
    cert, key = certs["server"]
    base = ["--data-dir", str(tmp_path / "data"), "--cores", "1"]
    listeners = ["--listeners", f"SSL://127.0.0.1:{port}"]
    args, expected = {
        "missing-cert": (listeners + ["--tls-cert-file", str(tmp_path / "none.pem"),
                                      "--tls-key-file", str(key)], "--tls-cert-file"),
        "key-not-matching": (listeners + ["--tls-cert-file", str(cert), "--tls-key-file",
                                          str(certs["client"][1])], "does not go with"),
        "bad-listener": (["--listeners", f"HTTP://127.0.0.1:{port}"], "unknown listener"),
        "ssl-without-cert": (listeners, "needs --tls-cert-file"),
        "port-in-use": (["--listeners", f"SASL_PLAINTEXT://127.0.0.1:{port}"], "in use"),
        "bad-scram-bootstrap": (["--listeners", f"SASL_PLAINTEXT://127.0.0.1:{port}",
                                 "--scram-bootstrap", "SCRAM-SHA-1=[name=a,password=b]"],
                                "unknown mechanism"),
        "bad-users-file": (["--listeners", f"SASL_PLAINTEXT://127.0.0.1:{port}",
                            "--sasl-plain-users-file", str(cert)], "line 1"),
    }[problem]
    holder = None
    if problem == "port-in-use":
        holder = socket.socket()
        holder.bind(("127.0.0.1", port))
        holder.listen()
    try:
        done = subprocess.run([SPATE_BIN, *base, *args], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)
    finally:
        if holder:
            holder.close()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "panicked" not in output
    lines = [line for line in done.stderr.splitlines() if line.startswith("spate:")]
    assert len(lines) == 1 and expected in lines[0], output


def strip_ansi(text):
    """The broker's log without terminal colours."""
    import re
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
