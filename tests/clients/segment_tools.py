"""Reading Kafka segment files from the tests: record batch headers and CRC-32C.

A segment `.log` file is a plain concatenation of record batches (magic v2):

    offset  size  field
         0     8  base_offset
         8     4  batch_length (bytes after this field)
        12     4  partition_leader_epoch
        16     1  magic (2)
        17     4  crc (CRC-32C of bytes 21 .. end of batch)
        21     2  attributes
        23     4  last_offset_delta
        27     8  base_timestamp
        35     8  max_timestamp
        43     8  producer_id
        51     2  producer_epoch
        53     4  base_sequence
        57     4  records_count
        61        records
"""

import struct
from pathlib import Path
from typing import NamedTuple

BATCH_HEADER_BYTES = 61
LOG_OVERHEAD_BYTES = 12  # base_offset + batch_length


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class Batch(NamedTuple):
    position: int
    size: int
    base_offset: int
    last_offset: int
    records_count: int

    @property
    def end(self):
        return self.position + self.size


def valid_batches(data):
    """The complete, CRC-valid batches at the start of `data`, up to the first bad one."""
    batches = []
    position = 0
    while position + BATCH_HEADER_BYTES <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, position)
        size = LOG_OVERHEAD_BYTES + length
        if length < BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES or position + size > len(data):
            break
        magic = data[position + 16]
        (crc,) = struct.unpack_from(">I", data, position + 17)
        if magic != 2 or crc32c(data[position + 21:position + size]) != crc:
            break
        last_offset_delta, = struct.unpack_from(">i", data, position + 23)
        records_count, = struct.unpack_from(">i", data, position + 57)
        batches.append(Batch(position, size, base_offset, base_offset + last_offset_delta,
                             records_count))
        position += size
    return batches


def read_valid_prefix(path):
    """The bytes of the complete, CRC-valid batches at the start of a segment file.

    Reads batch by batch, so a file preallocated far beyond its data is not read whole.
    """
    chunks = []
    with open(path, "rb") as segment:
        while True:
            header = segment.read(BATCH_HEADER_BYTES)
            if len(header) < BATCH_HEADER_BYTES:
                break
            _, length = struct.unpack_from(">qi", header, 0)
            if length < BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES or length > 64 * 1024 * 1024:
                break
            rest = segment.read(length + LOG_OVERHEAD_BYTES - BATCH_HEADER_BYTES)
            batch = header + rest
            if len(batch) < length + LOG_OVERHEAD_BYTES or not valid_batches(batch):
                break
            chunks.append(batch)
    return b"".join(chunks)


def segment_files(partition_dir):
    """The partition's segment `.log` files, oldest first (20-digit base offset names)."""
    return sorted(Path(partition_dir).glob("*.log"))


def active_segment(partition_dir):
    files = segment_files(partition_dir)
    assert files, f"no segment in {partition_dir}"
    return files[-1]
