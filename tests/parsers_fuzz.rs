//! Random and mutated input against the pure parsers that see bytes from the network or the
//! disk: record batch headers and validation, splitting a produce request's records,
//! scanning stored segments, reading records of Spate's own internal logs, and decoding the
//! group coordinator's records. None may panic, read out of bounds or loop; what they accept
//! must be self-consistent. Each test prints its seed (set SPATE_FUZZ_SEED to replay one) and
//! SPATE_FUZZ_ROUNDS scales the work (the default keeps the test under a second).

use spate::group::records::Record;
use spate::model::batch::{self, BatchHeader};
use spate::model::records::{self, RecordIn};

const ROUNDS_DEFAULT: usize = 20_000;
const SIZE_MAX: usize = 1 << 20;

struct Random(u64);

impl Random {
    fn from_env() -> Random {
        let seed = std::env::var("SPATE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
            });
        println!("seed {seed} (SPATE_FUZZ_SEED={seed} replays it)");
        Random(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn rounds() -> usize {
    std::env::var("SPATE_FUZZ_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(ROUNDS_DEFAULT)
}

/// A valid batch with a few records, then one to four random edits: flipped bytes,
/// overwritten big-endian fields (lengths, counts), truncation or garbage appended.
fn mutated_batch(random: &mut Random) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..1 + random.below(5)).map(|i| random.bytes(i * 7)).collect();
    let input: Vec<RecordIn<'_>> =
        values.iter().map(|v| RecordIn { key: Some(b"k"), value: Some(v) }).collect();
    let mut bytes = records::build_batch(1_700_000_000_000, &input);
    for _ in 0..1 + random.below(4) {
        match random.below(5) {
            0 if !bytes.is_empty() => {
                let at = random.below(bytes.len());
                bytes[at] ^= 1 << random.below(8);
            }
            1 if bytes.len() >= 4 => {
                let at = random.below(bytes.len() - 3);
                let value = match random.below(4) {
                    0 => 0_i32,
                    1 => -1,
                    2 => i32::MAX,
                    _ => random.next() as i32,
                };
                bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            2 => bytes.truncate(random.below(bytes.len() + 1)),
            3 => {
                let extra = random.below(64);
                bytes.extend(random.bytes(extra));
            }
            _ => {
                let copy = bytes.clone();
                bytes.extend(copy);
            }
        }
    }
    bytes
}

fn input(random: &mut Random) -> Vec<u8> {
    match random.below(3) {
        0 => {
            let len = random.below(200);
            random.bytes(len)
        }
        _ => mutated_batch(random),
    }
}

#[test]
fn batch_validation_never_panics_and_accepts_only_consistent_batches() {
    let mut random = Random::from_env();
    for _ in 0..rounds() {
        let bytes = input(&mut random);
        if let Ok(header) = batch::validate(&bytes, SIZE_MAX) {
            assert!(header.size_bytes() <= bytes.len());
            assert!(header.last_offset() >= header.base_offset());
            assert_eq!(header.magic(), 2);
        }
        if let Ok(header) = BatchHeader::parse(&bytes) {
            let _ = (header.records_count(), header.producer_id(), header.is_control());
        }
        if let Ok(ends) = batch::split_batches(&bytes, SIZE_MAX) {
            assert!(ends.windows(2).all(|pair| pair[0] < pair[1]));
            assert_eq!(ends.last().copied().unwrap_or(0), bytes.len());
        }
    }
}

#[test]
fn stored_scan_and_record_reading_never_panic() {
    let mut random = Random::from_env();
    for _ in 0..rounds() {
        let bytes = input(&mut random);
        if let Some(scanned) = batch::scan_stored(&bytes) {
            let _ = scanned;
        }
        if let Ok(views) = records::parse_batch(&bytes) {
            for view in views {
                assert!(view.value.is_none_or(|v| v.len() <= bytes.len()));
            }
        }
    }
}

#[test]
fn group_records_decode_never_panics() {
    let mut random = Random::from_env();
    for _ in 0..rounds() {
        let key_len = random.below(64);
        let mut key = random.bytes(key_len);
        if key.len() >= 2 && random.below(2) == 0 {
            // Steer half of the keys to the record versions the decoder knows (0, 1 and 2).
            key[0] = 0;
            key[1] = random.below(3) as u8;
        }
        let value = match random.below(3) {
            0 => None,
            _ => {
                let len = random.below(128);
                Some(random.bytes(len))
            }
        };
        let _ = Record::decode(&key, value.as_deref());
    }
}
