//! Transactions as one partition sees them: which producers have a transaction open here
//! (and the offset of its first batch), and which transactions were aborted (Kafka's
//! `.txnindex` entries). Pure: no I/O, fed from batch headers by `log.rs`.
//!
//! ```text
//!   offsets ->   0    5    9   12   15   18 = high watermark
//!   batches      A1   B1   A2   Bc   A3
//!                          ^ A's first offset 0: A is open, so the LSO is 0
//!   Bc = B's commit marker at 12: B is closed.  When A's abort marker lands at 18, A's
//!   entry (producer A, first offset 0, last offset 18) joins the aborted list and the LSO
//!   becomes the high watermark.
//! ```
//!
//! The last stable offset (LSO) is the smallest first offset of an open transaction, or the
//! high watermark when none is open: read_committed consumers read below it. For the range
//! a fetch returns, the aborted transactions overlapping it go into the response, so the
//! consumer drops those producers' records between their first offset and the marker.
//!
//! Lifecycle: one per `Log`, rebuilt at open from the batch headers of the whole log (and
//! the control records of marker batches), then kept current by every append in the same
//! borrow that assigns offsets. Retention drops aborted entries wholly below the log start.

use std::collections::BTreeMap;

use crate::model::{Offset, ProducerId, TxnOutcome};

/// An aborted transaction: its producer, its first offset in this partition, and the offset
/// of its abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: ProducerId,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

/// Whether the transactional batch of `producer_id` at `base_offset` belongs to one of the
/// `aborted` transactions (a read's list: those overlapping what it read): its producer's,
/// begun at or before the batch and ended by a marker after it.
pub fn is_aborted(aborted: &[AbortedTxn], producer_id: ProducerId, base_offset: Offset) -> bool {
    aborted.iter().any(|txn| {
        txn.producer_id == producer_id
            && txn.first_offset <= base_offset
            && base_offset < txn.last_offset
    })
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxnIndex {
    /// Producer id -> first offset of its open transaction.
    ongoing: BTreeMap<ProducerId, Offset>,
    /// In marker order (so sorted by `last_offset`).
    aborted: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// A transactional data batch of `producer_id` at `base_offset`.
    pub fn on_data(&mut self, producer_id: ProducerId, base_offset: Offset) {
        assert!(producer_id.is_valid());
        self.ongoing.entry(producer_id).or_insert(base_offset);
    }

    /// A marker of `producer_id` at `offset`. A marker for a producer without an open
    /// transaction here (it added the partition but wrote nothing) only ends nothing.
    pub fn on_marker(&mut self, producer_id: ProducerId, offset: Offset, outcome: TxnOutcome) {
        let Some(first_offset) = self.ongoing.remove(&producer_id) else { return };
        assert!(first_offset <= offset);
        if outcome == TxnOutcome::Abort {
            if let Some(last) = self.aborted.last() {
                assert!(last.last_offset < offset);
            }
            self.aborted.push(AbortedTxn { producer_id, first_offset, last_offset: offset });
        }
    }

    /// The last stable offset given the high watermark.
    pub fn last_stable_offset(&self, high_watermark: Offset) -> Offset {
        self.ongoing.values().copied().min().map_or(high_watermark, |o| o.min(high_watermark))
    }

    /// The first offset of `producer_id`'s open transaction here, if any.
    pub fn open_transaction(&self, producer_id: ProducerId) -> Option<Offset> {
        self.ongoing.get(&producer_id).copied()
    }

    /// Open transactions: (producer id, first offset).
    pub fn ongoing(&self) -> impl Iterator<Item = (ProducerId, Offset)> + '_ {
        self.ongoing.iter().map(|(p, o)| (*p, *o))
    }

    /// Aborted transactions that overlap the offsets `[start, end)`, as Kafka's
    /// `collectAbortedTxns`: every one whose marker is at or after `start` and whose first
    /// offset is before `end`.
    pub fn aborted_between(&self, start: Offset, end: Offset) -> Vec<AbortedTxn> {
        let from = self.aborted.partition_point(|a| a.last_offset < start);
        self.aborted[from..].iter().filter(|a| a.first_offset < end).copied().collect()
    }

    /// Drops what retention removed: aborted entries whose marker is below `log_start`, and
    /// open transactions whose first offset is gone move up to `log_start`.
    pub fn truncate_start(&mut self, log_start: Offset) {
        self.aborted.retain(|a| a.last_offset >= log_start);
        for first in self.ongoing.values_mut() {
            *first = (*first).max(log_start);
        }
    }

    /// Adds an aborted entry read from a snapshot; false when it is out of marker order.
    pub fn restore_aborted(&mut self, aborted: AbortedTxn) -> bool {
        let in_order =
            self.aborted.last().is_none_or(|last| last.last_offset < aborted.last_offset);
        if in_order && aborted.first_offset <= aborted.last_offset {
            self.aborted.push(aborted);
        }
        in_order
    }

    pub fn aborted_count(&self) -> usize {
        self.aborted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_aborted_between_its_producers_first_offset_and_abort_marker() {
        // Producer 7 aborted a transaction of offsets 3..=8, its marker at 9.
        let aborted = [AbortedTxn {
            producer_id: ProducerId(7),
            first_offset: Offset(3),
            last_offset: Offset(9),
        }];
        assert!(is_aborted(&aborted, ProducerId(7), Offset(3)));
        assert!(is_aborted(&aborted, ProducerId(7), Offset(8)));
        assert!(!is_aborted(&aborted, ProducerId(7), Offset(2)), "before it began");
        assert!(!is_aborted(&aborted, ProducerId(7), Offset(10)), "its next transaction");
        assert!(!is_aborted(&aborted, ProducerId(8), Offset(5)), "another producer's");
        assert!(!is_aborted(&[], ProducerId(7), Offset(5)));
    }

    #[test]
    fn the_lso_is_the_first_offset_of_the_oldest_open_transaction() {
        let mut index = TxnIndex::default();
        assert_eq!(index.last_stable_offset(Offset(10)), Offset(10));
        index.on_data(ProducerId(7), Offset(3));
        index.on_data(ProducerId(7), Offset(5));
        assert_eq!(index.open_transaction(ProducerId(7)), Some(Offset(3)));
        index.on_data(ProducerId(8), Offset(6));
        assert_eq!(index.last_stable_offset(Offset(10)), Offset(3));
        // The high watermark may trail the first offset of a queued batch.
        assert_eq!(index.last_stable_offset(Offset(2)), Offset(2));
        index.on_marker(ProducerId(7), Offset(9), TxnOutcome::Commit);
        assert_eq!(index.last_stable_offset(Offset(10)), Offset(6));
        index.on_marker(ProducerId(8), Offset(10), TxnOutcome::Abort);
        assert_eq!(index.last_stable_offset(Offset(11)), Offset(11));
        assert_eq!(index.ongoing().count(), 0);
        assert_eq!(
            index.aborted_between(Offset(0), Offset(11)),
            vec![AbortedTxn {
                producer_id: ProducerId(8),
                first_offset: Offset(6),
                last_offset: Offset(10)
            }]
        );
    }

    #[test]
    fn a_marker_without_data_changes_nothing() {
        let mut index = TxnIndex::default();
        index.on_marker(ProducerId(4), Offset(0), TxnOutcome::Abort);
        assert_eq!(index.aborted_count(), 0);
        assert_eq!(index.last_stable_offset(Offset(1)), Offset(1));
    }

    #[test]
    fn aborted_between_returns_exactly_the_overlapping_transactions() {
        let mut index = TxnIndex::default();
        // (producer, first, marker): [0..4], [2..8], [10..12]
        index.on_data(ProducerId(1), Offset(0));
        index.on_data(ProducerId(2), Offset(2));
        index.on_marker(ProducerId(1), Offset(4), TxnOutcome::Abort);
        index.on_marker(ProducerId(2), Offset(8), TxnOutcome::Abort);
        index.on_data(ProducerId(3), Offset(10));
        index.on_marker(ProducerId(3), Offset(12), TxnOutcome::Abort);
        let ids = |s, e| -> Vec<i64> {
            index.aborted_between(Offset(s), Offset(e)).iter().map(|a| a.producer_id.0).collect()
        };
        for start in 0..14 {
            for end in start + 1..15 {
                let expected: Vec<i64> = [(1, 0, 4), (2, 2, 8), (3, 10, 12)]
                    .iter()
                    .filter(|(_, first, last)| *last >= start && *first < end)
                    .map(|(p, _, _)| *p)
                    .collect();
                assert_eq!(ids(start, end), expected, "[{start}, {end})");
            }
        }
    }

    #[test]
    fn retention_drops_old_entries_and_moves_open_starts_up() {
        let mut index = TxnIndex::default();
        index.on_data(ProducerId(1), Offset(0));
        index.on_marker(ProducerId(1), Offset(4), TxnOutcome::Abort);
        index.on_data(ProducerId(2), Offset(5));
        index.truncate_start(Offset(5));
        assert_eq!(index.aborted_count(), 0);
        assert_eq!(index.last_stable_offset(Offset(9)), Offset(5));
        index.truncate_start(Offset(7));
        assert_eq!(index.last_stable_offset(Offset(9)), Offset(7));
    }
}
