"""Just enough of the Kafka wire protocol to send hand-made (and broken) requests.

A request on the wire is a 4-byte big-endian size, then the request header
(api_key int16, api_version int16, correlation_id int32, client_id nullable string int16 size,
and for flexible versions an empty tagged-field section), then the body. A response is a size,
the correlation id, and the body (ApiVersions always answers with header v0, KIP-511).
"""

import socket
import struct
import time

from segment_tools import crc32c

API_VERSIONS = 18
FETCH = 1
INIT_PRODUCER_ID = 22
LIST_OFFSETS = 2
METADATA = 3
PRODUCE = 0
UNSUPPORTED_VERSION = 35


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def request_header(api_key, api_version, correlation_id, client_id=b"spate-tests",
                   flexible=False):
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id))
    header += client_id
    if flexible:
        header += b"\x00"  # no tagged fields
    return header


def api_versions_request(version=0, correlation_id=1):
    """ApiVersions: v0-v2 have an empty body; v3+ are flexible, with client software name and
    version as compact strings."""
    if version < 3:
        return frame(request_header(API_VERSIONS, version, correlation_id))
    body = b"".join(bytes([len(s) + 1]) + s for s in (b"spate-tests", b"1.0")) + b"\x00"
    return frame(request_header(API_VERSIONS, version, correlation_id, flexible=True) + body)


def metadata_request_v1(topics=(), correlation_id=2):
    """Metadata v1: an array of topic names (empty array: no topics; None: all topics)."""
    body = struct.pack(">i", -1 if topics is None else len(topics))
    for topic in topics or ():
        body += struct.pack(">h", len(topic)) + topic
    return frame(request_header(METADATA, 1, correlation_id) + body)


def connect(port, timeout=10.0):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def read_response(sock):
    """One response frame: (correlation_id, rest of the frame after the correlation id)."""
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 4 <= size <= 100 * 1024 * 1024, f"implausible response size {size}"
    payload = recv_exact(sock, size)
    return struct.unpack_from(">i", payload)[0], payload[4:]


def parse_api_versions_v0(body):
    """ApiVersions response v0 body: error_code, [api_key, min_version, max_version]."""
    error_code, count = struct.unpack_from(">hi", body)
    ranges = {}
    for i in range(count):
        key, low, high = struct.unpack_from(">hhh", body, 6 + 6 * i)
        ranges[key] = (low, high)
    return error_code, ranges


def parse_api_versions_v3(body):
    """ApiVersions response v3 body (flexible): error_code, compact array of
    (api_key, min, max, tagged fields), throttle_time_ms, tagged fields."""
    (error_code,) = struct.unpack_from(">h", body)
    position = 2
    count, position = read_uvarint(body, position)
    ranges = {}
    for _ in range(count - 1):
        key, low, high = struct.unpack_from(">hhh", body, position)
        position += 6
        position = skip_tagged_fields(body, position)
        ranges[key] = (low, high)
    position += 4  # throttle_time_ms
    position = skip_tagged_fields(body, position)
    assert position == len(body), f"{len(body) - position} bytes left after the response"
    return error_code, ranges


def read_uvarint(data, position):
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def write_txn_markers_v1(markers, correlation_id):
    """WriteTxnMarkers v1 (flexible), one single-byte count per array: `markers` is a list of
    (producer_id, producer_epoch, commit, {topic: [partitions]})."""
    body = bytes([len(markers) + 1])
    for producer_id, producer_epoch, commit, topics in markers:
        body += struct.pack(">qhb", producer_id, producer_epoch, commit) + bytes([len(topics) + 1])
        for topic, partitions in topics.items():
            body += bytes([len(topic) + 1]) + topic + bytes([len(partitions) + 1])
            body += b"".join(struct.pack(">i", p) for p in partitions) + b"\x00"
        body += struct.pack(">i", 0) + b"\x00"  # coordinator epoch, no tagged fields
    body += b"\x00"
    return frame(request_header(27, 1, correlation_id, flexible=True) + body)


def write_txn_markers_v1_result(response):
    """{(producer_id, topic, partition): error_code} of a WriteTxnMarkers v1 response body
    (after the response header's tagged fields)."""
    codes = {}
    position = skip_tagged_fields(response, 0)
    count, position = read_uvarint(response, position)
    for _ in range(count - 1):
        (producer_id,) = struct.unpack_from(">q", response, position)
        topics, position = read_uvarint(response, position + 8)
        for _ in range(topics - 1):
            size, position = read_uvarint(response, position)
            topic = response[position:position + size - 1].decode()
            partitions, position = read_uvarint(response, position + size - 1)
            for _ in range(partitions - 1):
                partition, code = struct.unpack_from(">ih", response, position)
                codes[(producer_id, topic, partition)] = code
                position = skip_tagged_fields(response, position + 6)
            position = skip_tagged_fields(response, position)
        position = skip_tagged_fields(response, position)
    return codes


def skip_tagged_fields(data, position):
    count, position = read_uvarint(data, position)
    for _ in range(count):
        _, position = read_uvarint(data, position)
        size, position = read_uvarint(data, position)
        position += size
    return position


def closed_by_peer(sock, timeout=10.0):
    """True when the broker closes the connection (EOF or reset) within `timeout` without
    sending anything; False when it stays open; raises if it sends bytes."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
        if not data:
            return True
        raise AssertionError(f"the broker answered {data[:64]!r} instead of closing")
    return False


def api_versions_answered(port, timeout=2.0):
    """True when an ApiVersions v0 request on a new connection gets its response."""
    try:
        with connect(port, timeout) as sock:
            sock.sendall(api_versions_request(0, 7))
            correlation_id, body = read_response(sock)
            return correlation_id == 7 and parse_api_versions_v0(body)[0] == 0
    except (OSError, AssertionError, struct.error):
        return False


def zigzag(value):
    return (value << 1) ^ (value >> 63)


def varint(value):
    value = zigzag(value)
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def record_batch(values, timestamp=1_700_000_000_000, producer_id=-1, producer_epoch=-1,
                 base_sequence=-1):
    """An uncompressed magic v2 batch with one record per value, CRC-32C filled in; with a
    producer id, epoch and first sequence for an idempotent producer."""
    records = b""
    for delta, value in enumerate(values):
        body = b"\x00" + varint(0) + varint(delta) + varint(-1) + varint(len(value)) + value
        body += varint(0)
        records += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, timestamp, timestamp, producer_id,
                            producer_epoch, base_sequence, len(values)) + records
    crc = crc32c(after_crc)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_v3(topic, partition, batch, correlation_id, acks=-1, timeout_ms=10000):
    """Produce v3: transactional_id, acks, timeout, [topic, [partition, records]]."""
    body = struct.pack(">hhi", -1, acks, timeout_ms) + struct.pack(">i", 1)
    body += struct.pack(">h", len(topic)) + topic + struct.pack(">i", 1)
    body += struct.pack(">ii", partition, len(batch)) + batch
    return frame(request_header(PRODUCE, 3, correlation_id) + body)


def produce_v3_result(response):
    """(error_code, base_offset) of the single partition in a Produce v3 response."""
    position = 4
    (name_size,) = struct.unpack_from(">h", response, position)
    position += 2 + name_size + 4
    _, error_code, base_offset = struct.unpack_from(">ihq", response, position)
    return error_code, base_offset


def produce_v8(topic, partition, batch, correlation_id, acks=-1, timeout_ms=10000):
    """Produce v8: the v3 request layout; its answer carries an error message per partition."""
    body = struct.pack(">hhi", -1, acks, timeout_ms) + struct.pack(">i", 1)
    body += struct.pack(">h", len(topic)) + topic + struct.pack(">i", 1)
    body += struct.pack(">ii", partition, len(batch)) + batch
    return frame(request_header(PRODUCE, 8, correlation_id) + body)


def uvarint(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def produce_v10(topic, partition, batch, correlation_id, acks=-1, timeout_ms=10000):
    """Produce v10 (flexible): the v3 fields as compact strings, arrays and bytes."""
    body = b"\x00" + struct.pack(">hi", acks, timeout_ms)  # null transactional_id
    body += uvarint(2) + uvarint(len(topic) + 1) + topic + uvarint(2)
    body += struct.pack(">i", partition) + uvarint(len(batch) + 1) + batch
    body += b"\x00" + b"\x00" + b"\x00"  # partition, topic and request tagged fields
    return frame(request_header(PRODUCE, 10, correlation_id, flexible=True) + body)


def read_compact_string(data, position):
    size, position = read_uvarint(data, position)
    if size == 0:
        return None, position
    return data[position:position + size - 1].decode(), position + size - 1


def produce_v10_result(response):
    """The single partition of a Produce v10 response (after the response header's tagged
    fields): (error_code, base_offset, current_leader as (leader_id, leader_epoch) or None,
    node_endpoints as {node_id: (host, port, rack)}) (KIP-951's tagged fields)."""
    position = skip_tagged_fields(response, 0)
    topics, position = read_uvarint(response, position)
    assert topics == 2, topics
    _, position = read_compact_string(response, position)
    partitions, position = read_uvarint(response, position)
    assert partitions == 2, partitions
    _, error_code, base_offset = struct.unpack_from(">ihq", response, position)
    position += 4 + 2 + 8 + 8 + 8
    record_errors, position = read_uvarint(response, position)
    for _ in range(max(record_errors - 1, 0)):
        _, position = read_compact_string(response, position + 4)
        position = skip_tagged_fields(response, position)
    _, position = read_compact_string(response, position)  # error_message
    current_leader = None
    tags, position = read_uvarint(response, position)
    for _ in range(tags):
        tag, position = read_uvarint(response, position)
        size, position = read_uvarint(response, position)
        if tag == 0:
            current_leader = struct.unpack_from(">ii", response, position)
        position += size
    position = skip_tagged_fields(response, position)  # topic
    position += 4  # throttle_time_ms
    endpoints, position = read_node_endpoints(response, position)
    assert position == len(response), f"{len(response) - position} bytes left"
    return error_code, base_offset, current_leader, endpoints


def read_node_endpoints(data, position):
    """A response's last tagged fields, where tag 0 is KIP-951's node_endpoints:
    ({node_id: (host, port, rack)}, position after them)."""
    endpoints = {}
    tags, position = read_uvarint(data, position)
    for _ in range(tags):
        tag, position = read_uvarint(data, position)
        size, position = read_uvarint(data, position)
        end = position + size
        if tag == 0:
            count, position = read_uvarint(data, position)
            for _ in range(count - 1):
                (node_id,) = struct.unpack_from(">i", data, position)
                host, position = read_compact_string(data, position + 4)
                (port,) = struct.unpack_from(">i", data, position)
                rack, position = read_compact_string(data, position + 4)
                position = skip_tagged_fields(data, position)
                endpoints[node_id] = (host, port, rack)
        position = end
    return endpoints, position


def fetch_v16(topic_id, partition, offset, correlation_id, current_leader_epoch=-1):
    """A consumer's Fetch v16 (flexible, topic ids) of one partition, no wait."""
    body = struct.pack(">iiibii", 0, 1, 1 << 20, 0, 0, -1)  # wait, bytes, isolation, session
    body += uvarint(2) + topic_id + uvarint(2)
    body += struct.pack(">iiqiqi", partition, current_leader_epoch, offset, -1, -1, 1 << 20)
    body += b"\x00" + b"\x00"  # partition and topic tagged fields
    body += uvarint(1) + uvarint(1) + b"\x00"  # no forgotten topics, rack "", tagged fields
    return frame(request_header(FETCH, 16, correlation_id, flexible=True) + body)


def fetch_v16_result(response):
    """The single partition of a Fetch v16 response: (error_code, current_leader as
    (leader_id, leader_epoch) or None, node_endpoints as {node_id: (host, port, rack)})."""
    position = skip_tagged_fields(response, 0)
    position += 4 + 2 + 4  # throttle_time_ms, error_code, session_id
    topics, position = read_uvarint(response, position)
    assert topics == 2, topics
    partitions, position = read_uvarint(response, position + 16)
    assert partitions == 2, partitions
    _, error_code = struct.unpack_from(">ih", response, position)
    position += 4 + 2 + 8 + 8 + 8
    aborted, position = read_uvarint(response, position)
    for _ in range(max(aborted - 1, 0)):
        position = skip_tagged_fields(response, position + 16)
    position += 4  # preferred_read_replica
    size, position = read_uvarint(response, position)
    position += max(size - 1, 0)
    current_leader = None
    tags, position = read_uvarint(response, position)
    for _ in range(tags):
        tag, position = read_uvarint(response, position)
        size, position = read_uvarint(response, position)
        if tag == 1:
            current_leader = struct.unpack_from(">ii", response, position)
        position += size
    position = skip_tagged_fields(response, position)  # topic
    endpoints, position = read_node_endpoints(response, position)
    assert position == len(response), f"{len(response) - position} bytes left"
    return error_code, current_leader, endpoints


def read_nullable_string(data, position):
    (size,) = struct.unpack_from(">h", data, position)
    position += 2
    if size < 0:
        return None, position
    return data[position:position + size].decode(), position + size


def produce_v8_result(response):
    """(error_code, base_offset, error_message) of the single partition in a Produce v8
    response."""
    position = 4
    (name_size,) = struct.unpack_from(">h", response, position)
    position += 2 + name_size + 4
    _, error_code, base_offset, _, _ = struct.unpack_from(">ihqqq", response, position)
    position += 4 + 2 + 8 + 8 + 8
    (record_errors,) = struct.unpack_from(">i", response, position)
    position += 4
    for _ in range(max(record_errors, 0)):
        position += 4
        _, position = read_nullable_string(response, position)
    message, position = read_nullable_string(response, position)
    return error_code, base_offset, message


def fetch_v4(topic, partition, offset, correlation_id, max_wait_ms=500, min_bytes=1,
             max_bytes=1 << 20):
    """Fetch v4 of one partition: replica_id -1, read_uncommitted."""
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    return frame(request_header(FETCH, 4, correlation_id) + body)


def fetch_v4_result(response):
    """(error_code, high_watermark, record bytes) of the single partition in a Fetch v4
    response."""
    position = 4 + 4  # throttle_time_ms, topic count
    (name_size,) = struct.unpack_from(">h", response, position)
    position += 2 + name_size + 4  # name, partition count
    _, error_code, high_watermark, _ = struct.unpack_from(">ihqq", response, position)
    position += 4 + 2 + 8 + 8
    (aborted,) = struct.unpack_from(">i", response, position)
    position += 4 + max(aborted, 0) * 16
    (size,) = struct.unpack_from(">i", response, position)
    position += 4
    return error_code, high_watermark, response[position:position + max(size, 0)]


def batch_offsets(records):
    """(base_offset, last_offset) of each whole batch in a fetch's record bytes."""
    out = []
    position = 0
    while position + 61 <= len(records):
        base_offset, length = struct.unpack_from(">qi", records, position)
        (last_delta,) = struct.unpack_from(">i", records, position + 23)
        if position + 12 + length > len(records):
            break
        out.append((base_offset, base_offset + last_delta))
        position += 12 + length
    return out


def init_producer_id_v0(correlation_id, transaction_timeout_ms=60000):
    """InitProducerId v0 for an idempotent (not transactional) producer."""
    body = struct.pack(">hi", -1, transaction_timeout_ms)
    return frame(request_header(INIT_PRODUCER_ID, 0, correlation_id) + body)


def init_producer_id_v0_result(response):
    """(error_code, producer_id, producer_epoch) of an InitProducerId v0 response."""
    _, error_code, producer_id, producer_epoch = struct.unpack_from(">ihqh", response)
    return error_code, producer_id, producer_epoch


def list_offsets_latest_v1(topic, partition, correlation_id):
    """ListOffsets v1 of the latest offset of one partition."""
    return list_offsets_v1(topic, partition, -1, correlation_id)


def list_offsets_v1(topic, partition, timestamp, correlation_id):
    """ListOffsets v1 of one partition: the first offset whose timestamp is at least
    `timestamp` (-1: the latest offset, -2: the earliest)."""
    body = struct.pack(">i", -1) + struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
    body += struct.pack(">i", 1) + struct.pack(">iq", partition, timestamp)
    return frame(request_header(LIST_OFFSETS, 1, correlation_id) + body)


def list_offsets_v1_result(response):
    """(error_code, offset) of the single partition of a ListOffsets v1 response."""
    position = 4
    (name_size,) = struct.unpack_from(">h", response, position)
    position += 2 + name_size + 4
    _, error_code, _, offset = struct.unpack_from(">ihqq", response, position)
    return error_code, offset
