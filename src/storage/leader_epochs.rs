//! The leader epoch cache of a partition on a clustered node (Kafka's
//! `leader-epoch-checkpoint`): for each leader epoch, the offset of its first batch. A
//! follower finds where its log diverges from a new leader's with it (the leader answers
//! the end offset of the follower's last epoch, KIP-101/KIP-279), and truncates there.
//!
//! File `leader-epoch-checkpoint` in the partition directory: a line `0` (the format), a
//! line with the count, then `epoch start_offset` per line. Written whole (temporary file,
//! fsync, rename, directory fsync) by the log's flusher before the first batch of a new
//! epoch is written, so the file always covers what the segments hold; entries past the log
//! end (a batch that never landed) are dropped at load. The data structure is pure.

use std::path::Path;

use crate::model::{LeaderEpoch, Offset};

pub const FILE_NAME: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl LeaderEpochs {
    /// Records that batches of `epoch` start at `start`, if `epoch` is newer than the last
    /// one known; whether it was.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> bool {
        if epoch.0 < 0 || self.latest().is_some_and(|latest| epoch.0 <= latest.0) {
            return false;
        }
        // A start at or below the last entry's (a log truncated and rewritten) replaces it.
        while self.entries.last().is_some_and(|(_, last)| *last >= start) {
            self.entries.pop();
        }
        self.entries.push((epoch, start));
        true
    }

    pub fn latest(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|(epoch, _)| *epoch)
    }

    /// The epoch of the batch at `offset` (the last entry starting at or below it).
    pub fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        let after = self.entries.partition_point(|(_, start)| *start <= offset);
        after.checked_sub(1).map(|i| self.entries[i].0)
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` this log has and
    /// the offset where the epoch after it starts (`log_end` for the latest epoch). None
    /// when `requested` is newer than every epoch known here or none is known.
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let latest = self.latest()?;
        if requested == latest {
            return Some((latest, log_end));
        }
        let after = self.entries.partition_point(|(epoch, _)| epoch.0 <= requested.0);
        let next_start = self.entries.get(after)?.1;
        match after.checked_sub(1) {
            Some(i) => Some((self.entries[i].0, next_start)),
            // Older than the first epoch known: it ends where the first one starts.
            None => Some((requested, next_start)),
        }
    }

    /// Forgets the epochs that start at or after `offset` (a truncation there).
    pub fn truncate_from(&mut self, offset: Offset) {
        while self.entries.last().is_some_and(|(_, start)| *start >= offset) {
            self.entries.pop();
        }
    }

    pub fn encode(&self) -> String {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{} {}\n", epoch.0, start.0));
        }
        text
    }

    /// Parses `encode`'s text; None when it is damaged (the caller starts empty).
    pub fn decode(text: &str) -> Option<LeaderEpochs> {
        let mut lines = text.lines();
        if lines.next()? != "0" {
            return None;
        }
        let count: usize = lines.next()?.parse().ok()?;
        let mut epochs = LeaderEpochs::default();
        for _ in 0..count {
            let (epoch, start) = lines.next()?.split_once(' ')?;
            let (epoch, start) = (LeaderEpoch(epoch.parse().ok()?), Offset(start.parse().ok()?));
            if !epochs.assign(epoch, start) {
                return None;
            }
        }
        lines.next().is_none().then_some(epochs)
    }

    /// Loads the file of the partition in `dir`, without the entries starting at or past
    /// `log_end`; empty when there is none or it is damaged (with a warning).
    pub fn load(dir: &Path, log_end: Offset) -> LeaderEpochs {
        let path = dir.join(FILE_NAME);
        let mut epochs = match std::fs::read_to_string(&path) {
            Ok(text) => LeaderEpochs::decode(&text).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "damaged leader epoch file; ignored");
                LeaderEpochs::default()
            }),
            Err(_) => LeaderEpochs::default(),
        };
        epochs.truncate_from(log_end);
        epochs
    }
}

/// Writes `text` (an `encode`) as the file of the partition in `dir`, durably.
pub fn write(dir: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(FILE_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs(entries: &[(i32, i64)]) -> LeaderEpochs {
        let mut epochs = LeaderEpochs::default();
        for (epoch, start) in entries {
            assert!(epochs.assign(LeaderEpoch(*epoch), Offset(*start)));
        }
        epochs
    }

    #[test]
    fn only_newer_epochs_are_assigned() {
        let mut e = epochs(&[(0, 0), (2, 10)]);
        assert!(!e.assign(LeaderEpoch(2), Offset(12)));
        assert!(!e.assign(LeaderEpoch(1), Offset(12)));
        assert!(!e.assign(LeaderEpoch(-1), Offset(12)));
        assert!(e.assign(LeaderEpoch(5), Offset(10)), "replaces an entry at the same start");
        assert_eq!(e, epochs(&[(0, 0), (5, 10)]));
        assert_eq!(e.epoch_at(Offset(9)), Some(LeaderEpoch(0)));
        assert_eq!(e.epoch_at(Offset(10)), Some(LeaderEpoch(5)));
        assert_eq!(LeaderEpochs::default().epoch_at(Offset(0)), None);
    }

    /// Kafka's endOffsetFor cases.
    #[test]
    fn end_offsets_for_requested_epochs() {
        let e = epochs(&[(1, 0), (3, 10), (4, 25)]);
        let end = Offset(40);
        assert_eq!(e.end_offset_for(LeaderEpoch(4), end), Some((LeaderEpoch(4), end)));
        assert_eq!(e.end_offset_for(LeaderEpoch(3), end), Some((LeaderEpoch(3), Offset(25))));
        // An epoch this log never had: the largest below it and where the next starts.
        assert_eq!(e.end_offset_for(LeaderEpoch(2), end), Some((LeaderEpoch(1), Offset(10))));
        assert_eq!(e.end_offset_for(LeaderEpoch(0), end), Some((LeaderEpoch(0), Offset(0))));
        assert_eq!(e.end_offset_for(LeaderEpoch(5), end), None, "newer than any here");
        assert_eq!(LeaderEpochs::default().end_offset_for(LeaderEpoch(0), end), None);
    }

    #[test]
    fn truncation_and_the_file_text() {
        let mut e = epochs(&[(1, 0), (3, 10), (4, 25)]);
        let text = e.encode();
        assert_eq!(text, "0\n3\n1 0\n3 10\n4 25\n");
        assert_eq!(LeaderEpochs::decode(&text), Some(e.clone()));
        for bad in ["", "1\n0\n", "0\n2\n1 0\n", "0\n1\n1 x\n", "0\n2\n3 0\n1 5\n", "0\n0\n9"] {
            assert_eq!(LeaderEpochs::decode(bad), None, "{bad:?}");
        }
        e.truncate_from(Offset(25));
        assert_eq!(e, epochs(&[(1, 0), (3, 10)]));
        e.truncate_from(Offset(3));
        assert_eq!(e, epochs(&[(1, 0)]));
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &epochs(&[(1, 0), (3, 10), (4, 25)]).encode()).expect("write");
        assert_eq!(LeaderEpochs::load(dir.path(), Offset(25)), epochs(&[(1, 0), (3, 10)]));
        assert_eq!(
            LeaderEpochs::load(&dir.path().join("none"), Offset(5)),
            LeaderEpochs::default()
        );
    }
}
