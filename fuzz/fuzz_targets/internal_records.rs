//! The records of the broker's own logs, read back at start-up: consumer group offsets and
//! metadata (`__consumer_offsets` format), transaction coordinator records
//! (`__transaction_state` format), cluster metadata records and snapshots, and the
//! controller transport's Raft frames from peers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::cluster::{frame, records::MetadataRecord, snapshot};
use spate::{group, txn};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 | 1 => {
            // A record's key and value: two bytes give the key's length; an odd selector
            // reads the value as null (a tombstone).
            if rest.len() < 2 {
                return;
            }
            let key_len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let rest = &rest[2..];
            let (key, value) = rest.split_at(key_len.min(rest.len()));
            let value = (which & 4 == 0).then_some(value);
            if which % 4 == 0 {
                let _ = group::records::Record::decode(key, value);
            } else {
                let _ = txn::records::decode(key, value);
            }
        }
        2 => {
            let _ = MetadataRecord::decode(rest);
        }
        // Selector 3 with bit 4 set: a metadata snapshot (a valid CRC is rare at random;
        // the seeds give real snapshots, and the unit tests feed bodies with good CRCs).
        _ if which & 4 != 0 => {
            let _ = snapshot::decode(rest);
        }
        _ => {
            let _ = frame::decode(&bytes::Bytes::copy_from_slice(rest), 1, &[1, 2, 3]);
        }
    }
});
