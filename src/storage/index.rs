//! Sparse offset and time indexes for one segment, in Kafka's on-disk format.
//!
//! `.index`: entries of 8 bytes, big endian:
//! ```text
//!   relative_offset: u32   offset of the batch's last record minus the segment base offset
//!   position:        u32   byte position of the batch in the .log file
//! ```
//! `.timeindex`: entries of 12 bytes, big endian:
//! ```text
//!   timestamp:       i64   largest timestamp seen in the segment up to this batch
//!   relative_offset: u32   as above
//! ```
//! An entry is added after at least `INDEX_INTERVAL_BYTES` of log since the previous one, so a
//! lookup lands within a few KiB of the batch it wants and a short scan finishes the job.
//! Indexes live in memory while the segment is active and are written when it is closed;
//! recovery rebuilds any index that is missing or does not match the log.

use crate::constants::{OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// In-memory sparse indexes of one segment. Entries are strictly increasing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// Records a batch that ends at `relative_offset` and starts at `position`.
    pub fn add(&mut self, relative_offset: u32, position: u32, max_timestamp: i64) {
        if let Some(last) = self.offsets.last() {
            assert!(relative_offset > last.relative_offset);
            assert!(position > last.position);
        }
        self.offsets.push(OffsetEntry { relative_offset, position });
        let newer = self.times.last().is_none_or(|last| max_timestamp > last.timestamp);
        if newer {
            self.times.push(TimeEntry { timestamp: max_timestamp, relative_offset });
        }
    }

    /// Position to start scanning from to find the batch holding `relative_offset`: the
    /// position of the last indexed batch that ends before it, or 0.
    pub fn position_before(&self, relative_offset: u32) -> u32 {
        let count = self.offsets.partition_point(|e| e.relative_offset < relative_offset);
        if count == 0 {
            0
        } else {
            // The batch at this entry ends before the target, so the target's batch starts at
            // or after the entry's batch: scanning from it is safe and short.
            self.offsets[count - 1].position
        }
    }

    /// Relative offset to start a timestamp search from: the last entry whose timestamp is
    /// below `timestamp` marks a batch that cannot hold the answer, nor can any before it.
    pub fn offset_before_time(&self, timestamp: i64) -> Option<u32> {
        let count = self.times.partition_point(|e| e.timestamp < timestamp);
        if count == 0 {
            None
        } else {
            Some(self.times[count - 1].relative_offset)
        }
    }

    /// Drops entries at or past `position` (after the log was truncated there).
    pub fn truncate_to_position(&mut self, position: u32) {
        self.offsets.retain(|e| e.position < position);
        let last = self.offsets.last().map(|e| e.relative_offset);
        self.times.retain(|e| last.is_some_and(|l| e.relative_offset <= l));
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_INDEX_ENTRY_BYTES);
        for entry in &self.offsets {
            out.extend(entry.relative_offset.to_be_bytes());
            out.extend(entry.position.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_INDEX_ENTRY_BYTES);
        for entry in &self.times {
            out.extend(entry.timestamp.to_be_bytes());
            out.extend(entry.relative_offset.to_be_bytes());
        }
        out
    }

    /// Parses both files. Returns None when either is damaged: a partial entry, entries that
    /// do not increase, or positions past `log_size` (Kafka's sanity check does the same).
    /// Trailing all-zero entries (Kafka preallocates index files) are ignored.
    pub fn decode(offsets: &[u8], times: &[u8], log_size: u64) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(OFFSET_INDEX_ENTRY_BYTES) {
            return None;
        }
        if !times.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut index = SegmentIndex::default();
        for chunk in offsets.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let relative_offset = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if relative_offset == 0 && position == 0 && !index.offsets.is_empty() {
                break;
            }
            if let Some(last) = index.offsets.last() {
                if relative_offset <= last.relative_offset || position <= last.position {
                    return None;
                }
            }
            if u64::from(position) >= log_size {
                return None;
            }
            index.offsets.push(OffsetEntry { relative_offset, position });
        }
        for chunk in times.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&chunk[0..8]);
            let timestamp = i64::from_be_bytes(timestamp);
            let relative_offset = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if timestamp == 0 && relative_offset == 0 && !index.times.is_empty() {
                break;
            }
            if let Some(last) = index.times.last() {
                if timestamp <= last.timestamp || relative_offset < last.relative_offset {
                    return None;
                }
            }
            index.times.push(TimeEntry { timestamp, relative_offset });
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::default();
        index.add(9, 0, 100);
        index.add(19, 4200, 90);
        index.add(29, 8400, 300);
        index
    }

    #[test]
    fn lookups_land_before_the_target() {
        let index = sample();
        assert_eq!(index.position_before(0), 0);
        assert_eq!(index.position_before(9), 0);
        assert_eq!(index.position_before(10), 0);
        assert_eq!(index.position_before(20), 4200);
        assert_eq!(index.position_before(1000), 8400);
        assert_eq!(index.offset_before_time(50), None);
        assert_eq!(index.offset_before_time(100), None);
        assert_eq!(index.offset_before_time(101), Some(9));
        assert_eq!(index.offset_before_time(1000), Some(29));
    }

    #[test]
    fn encode_decode_round_trip_and_damage_is_detected() {
        let index = sample();
        let offsets = index.encode_offsets();
        let times = index.encode_times();
        let decoded = SegmentIndex::decode(&offsets, &times, 10_000).expect("valid");
        assert_eq!(decoded.offsets, index.offsets);
        assert_eq!(decoded.times, index.times);
        assert!(SegmentIndex::decode(&offsets[..5], &times, 10_000).is_none());
        assert!(SegmentIndex::decode(&offsets, &times, 8_000).is_none());
        let mut swapped = offsets.clone();
        swapped.swap(3, 11);
        assert!(SegmentIndex::decode(&swapped, &times, 10_000).is_none());
        let mut padded = offsets.clone();
        padded.extend([0u8; 16]);
        let decoded = SegmentIndex::decode(&padded, &times, 10_000).expect("zero tail ignored");
        assert_eq!(decoded.offsets.len(), 3);
    }

    #[test]
    fn truncation_drops_entries_past_the_cut() {
        let mut index = sample();
        index.truncate_to_position(8400);
        assert_eq!(index.offsets.len(), 2);
        assert_eq!(index.times.len(), 1);
    }
}
