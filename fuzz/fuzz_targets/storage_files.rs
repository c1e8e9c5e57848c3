//! The files a start-up reads besides segments: a segment's offset and time indexes, the
//! clean-stop record of a shard, a partition's producer-state snapshot and a shard's high
//! watermark checkpoint. Damaged files
//! must be refused (and rebuilt or recovered from the log), never panic or over-allocate.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::storage::clean_stop;
use spate::storage::high_watermarks;
use spate::storage::index::SegmentIndex;
use spate::storage::producer_state::ProducerStateTable;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            // An index pair and the length of the log it indexes: the first 8 bytes are the
            // log's size, the next 2 where the offset index ends and the time index starts.
            if rest.len() < 10 {
                return;
            }
            let log_size = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
            let files = &rest[10..];
            let split = usize::from(u16::from_le_bytes([rest[8], rest[9]])).min(files.len());
            let (offsets, times) = files.split_at(split);
            if let Some(index) = SegmentIndex::decode(offsets, times, log_size) {
                // What is accepted must survive its own encoding.
                let again =
                    SegmentIndex::decode(&index.encode_offsets(), &index.encode_times(), log_size);
                assert!(again.is_some(), "a decoded index must decode again once encoded");
            }
        }
        1 => {
            let _ = clean_stop::decode(rest);
        }
        2 => {
            let _ = ProducerStateTable::decode_snapshot(rest);
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Some(entries) = high_watermarks::decode(text) {
                let again = high_watermarks::decode(&high_watermarks::encode(&entries));
                assert_eq!(again, Some(entries), "a checkpoint must read back as it was written");
            }
        }
    }
});
