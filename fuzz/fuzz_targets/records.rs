//! Record batches: what Produce splits and validates, what recovery scans after a segment's
//! last index entry, what the internal logs parse, and what ListOffsets by timestamp
//! decompresses (bounded). The input's first byte picks whether the target first repairs the
//! batch's CRC-32C, so that the fuzzer gets past the CRC check into the records themselves.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::model::batch::{self, BatchHeader};
use spate::model::{record_scan, records};

/// Kafka's v2 batch: the CRC at bytes 17..21 covers everything from byte 21 on.
const CRC_AT: usize = 17;
const CRC_START: usize = 21;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        repair_crcs(&mut bytes);
    }
    // Produce: split into batches, each validated, under a small and an unbounded size cap.
    let _ = batch::split_batches(&bytes, 1 << 20);
    let _ = batch::split_batches(&bytes, usize::MAX);
    // Recovery: batch after batch until the first that is not whole and intact.
    let mut at = 0;
    while let Some(scanned) = batch::scan_stored(&bytes[at..]) {
        assert!(scanned.size_bytes > 0, "a scanned batch must move the scan on");
        at += scanned.size_bytes;
        if at >= bytes.len() {
            break;
        }
    }
    // The internal logs (offsets, transactions) and ListOffsets by timestamp.
    if let Ok(header) = BatchHeader::parse(&bytes) {
        let end = header.size_bytes().min(bytes.len());
        let one = &bytes[..end];
        let _ = records::parse_batch(one);
        let _ = records::control_outcome(one);
        let timestamp = header.base_timestamp().wrapping_add(i64::from(mode >> 1));
        let _ = record_scan::first_at_or_after(one, timestamp, 1 << 20);
    }
});

/// Writes the right CRC into every batch header along the bytes, as a producer would.
fn repair_crcs(bytes: &mut [u8]) {
    let mut at = 0;
    while let Ok(header) = BatchHeader::parse(&bytes[at..]) {
        let size = header.size_bytes();
        let Some(end) = at.checked_add(size).filter(|end| *end <= bytes.len()) else { return };
        if size < CRC_START {
            return;
        }
        let crc = crc32c::crc32c(&bytes[at + CRC_START..end]);
        bytes[at + CRC_AT..at + CRC_START].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}
