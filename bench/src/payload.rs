//! What the bench puts into each record, byte by byte.
//!
//! ```text
//!   0        4        8                16               24                 size
//!   +--------+--------+----------------+----------------+-------------------+
//!   | "SPB1" | run id | intended ns LE |   sent ns LE   | filler (pool)     |
//!   +--------+--------+----------------+----------------+-------------------+
//! ```
//!
//! `intended ns` is the wall-clock time at which the schedule wanted the record sent (open loop)
//! or the time it was handed to the client (closed loop); `sent ns` is the time it was handed to
//! the client. Latency measured from `intended` is corrected for coordinated omission; latency
//! from `sent` is the uncorrected, "service time" view. The run id lets an end-to-end consumer
//! ignore records that other runs left in the topic.
//!
//! The filler is copied from a pool built once per producer, either random bytes (which no codec
//! can shrink) or text made of a small vocabulary (which compresses roughly like log lines), so
//! that generating a record costs one memcpy and no random numbers per byte.

use rand::Rng;
use serde::{Deserialize, Serialize};

pub const HEADER_BYTES: usize = 24;
const MAGIC: [u8; 4] = *b"SPB1";
/// Large enough that filler taken at a random offset does not repeat inside one batch, which
/// would let a codec compress the random payload by finding the repeats.
const POOL_BYTES: usize = 8 * 1024 * 1024;
/// Text filler vocabulary: enough distinct words that lz4 finds short matches, as in logs.
const VOCABULARY_WORDS: usize = 512;
const WORD_BYTES_MIN: usize = 2;
const WORD_BYTES_MAX: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub run_id: u32,
    pub intended_ns: u64,
    pub sent_ns: u64,
}

impl Header {
    pub fn write(&self, buf: &mut [u8]) {
        assert!(buf.len() >= HEADER_BYTES);
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4..8].copy_from_slice(&self.run_id.to_le_bytes());
        buf[8..16].copy_from_slice(&self.intended_ns.to_le_bytes());
        buf[16..24].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// `None` for records that another tool wrote.
    pub fn read(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_BYTES || buf[0..4] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        let mut run_id = [0u8; 4];
        run_id.copy_from_slice(&buf[4..8]);
        Some(Header {
            run_id: u32::from_le_bytes(run_id),
            intended_ns: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// Random bytes: incompressible, the worst case for a codec.
    Random,
    /// Words from a small vocabulary separated by spaces: compresses about like log text.
    Text,
}

/// Filler bytes for record values; read-only once built.
pub struct PayloadPool {
    bytes: Vec<u8>,
    record_bytes_max: usize,
}

impl PayloadPool {
    pub fn new<R: Rng>(kind: PayloadKind, record_bytes_max: usize, rng: &mut R) -> PayloadPool {
        // The pool is longer than POOL_BYTES by one record so that any offset below POOL_BYTES
        // has a full record of filler after it.
        let len = POOL_BYTES + record_bytes_max;
        let mut bytes = Vec::with_capacity(len);
        match kind {
            PayloadKind::Random => {
                bytes.resize(len, 0);
                rng.fill(bytes.as_mut_slice());
            }
            PayloadKind::Text => {
                let vocabulary: Vec<Vec<u8>> = (0..VOCABULARY_WORDS)
                    .map(|_| {
                        let word_len = rng.gen_range(WORD_BYTES_MIN..=WORD_BYTES_MAX);
                        (0..word_len).map(|_| rng.gen_range(b'a'..=b'z')).collect()
                    })
                    .collect();
                while bytes.len() < len {
                    bytes.extend_from_slice(&vocabulary[rng.gen_range(0..VOCABULARY_WORDS)]);
                    bytes.push(b' ');
                }
                bytes.truncate(len);
            }
        }
        PayloadPool { bytes, record_bytes_max }
    }

    /// Fills `buf[HEADER_BYTES..]` with filler from a random place in the pool.
    pub fn fill<R: Rng>(&self, buf: &mut [u8], rng: &mut R) {
        assert!(buf.len() <= self.record_bytes_max);
        assert!(buf.len() >= HEADER_BYTES);
        let filler = buf.len() - HEADER_BYTES;
        let at = rng.gen_range(0..POOL_BYTES);
        buf[HEADER_BYTES..].copy_from_slice(&self.bytes[at..at + filler]);
    }
}

/// Writes the key `key-<index>` into `buf` and returns its length; no allocation per record.
pub fn write_key(buf: &mut [u8; KEY_BYTES_MAX], index: u64) -> usize {
    const PREFIX: &[u8] = b"key-";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 20];
    let mut n = index;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    PREFIX.len() + len
}

/// "key-" and the 20 digits of u64::MAX.
pub const KEY_BYTES_MAX: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn header_round_trips() {
        let header = Header { run_id: 7, intended_ns: 1 << 60, sent_ns: (1 << 60) + 5 };
        let mut buf = vec![0u8; 100];
        header.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(header));
        assert_eq!(Header::read(&buf[..HEADER_BYTES - 1]), None);
        assert_eq!(Header::read(&[0u8; 100]), None);
    }

    #[test]
    fn keys_are_decimal() {
        let mut buf = [0u8; KEY_BYTES_MAX];
        let len = write_key(&mut buf, 0);
        assert_eq!(&buf[..len], b"key-0");
        let len = write_key(&mut buf, 1234);
        assert_eq!(&buf[..len], b"key-1234");
        let len = write_key(&mut buf, u64::MAX);
        assert_eq!(&buf[..len], format!("key-{}", u64::MAX).as_bytes());
    }

    #[test]
    fn filler_fits_every_size() {
        let mut rng = SmallRng::seed_from_u64(5);
        let pool = PayloadPool::new(PayloadKind::Text, 4096, &mut rng);
        for size in [HEADER_BYTES, 100, 4096] {
            let mut buf = vec![0u8; size];
            pool.fill(&mut buf, &mut rng);
        }
    }
}
