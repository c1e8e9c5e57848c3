//! The high watermarks of a clustered node's replicated logs, checkpointed (Kafka's
//! `replication-offset-checkpoint`).
//!
//! A log opens with its high watermark at its log end; on a replica that is not safe: the
//! end may hold records no other replica has (acks=1 writes, or the tail of a leader that
//! died), which consumers must not see until they are committed, and which a leader change
//! may still truncate. So a clustered node's replicated logs start from the high watermark
//! they had, as Kafka's do: each shard writes the high watermarks of the replicated logs it
//! owns to `__spate_meta/high-watermarks-<shard>` every `HIGH_WATERMARK_CHECKPOINT_MS` and at
//! a clean stop, and a start reads every shard's file (the shard count may have changed).
//! A log missing from them starts at its log start, as Kafka's does with no entry. A stale
//! checkpoint is safe: it is lower than the truth, and the high watermark climbs back as soon
//! as the in-sync replicas (leader) or the leader's answers (follower) say so.
//!
//! The file is Kafka's format: a version line (0), a count line, then one line per
//! partition, `topic partition offset`; topic names have no spaces or line breaks.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use crate::model::{Offset, TopicPartition};

const FILE_PREFIX: &str = "high-watermarks-";
const VERSION: &str = "0";

pub fn encode(entries: &[(TopicPartition, Offset)]) -> String {
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    for (tp, offset) in entries {
        text.push_str(&format!("{} {} {}\n", tp.topic, tp.partition, offset.0));
    }
    text
}

/// The entries of a checkpoint, None when it is not one (another version, a count that does
/// not match its lines, a line that does not parse).
pub fn decode(text: &str) -> Option<Vec<(TopicPartition, Offset)>> {
    let mut lines = text.lines();
    if lines.next()? != VERSION {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let mut entries = Vec::with_capacity(count.min(1 << 20));
    for line in lines {
        let mut fields = line.split(' ');
        let (Some(topic), Some(partition), Some(offset), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        let partition: i32 = partition.parse().ok()?;
        let offset: i64 = offset.parse().ok()?;
        if topic.is_empty() || partition < 0 || offset < 0 {
            return None;
        }
        entries.push((TopicPartition::new(topic.into(), partition), Offset(offset)));
    }
    (entries.len() == count).then_some(entries)
}

/// Writes shard `shard`'s checkpoint (temporary file, fsync, rename). The directory is not
/// synced: a checkpoint lost with it only leaves an older, lower one.
pub fn write(
    meta_dir: &Path,
    shard: usize,
    entries: &[(TopicPartition, Offset)],
) -> std::io::Result<()> {
    let path = meta_dir.join(format!("{FILE_PREFIX}{shard}"));
    let temporary = meta_dir.join(format!("{FILE_PREFIX}{shard}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(encode(entries).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)
}

/// Every shard's checkpoint in `meta_dir`, merged (a partition moved between shards keeps the
/// lower of two entries). A file that does not parse is skipped with a warning: its logs
/// start at their log start.
pub fn read_all(meta_dir: &Path) -> HashMap<TopicPartition, Offset> {
    let mut merged: HashMap<TopicPartition, Offset> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(meta_dir) else { return merged };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(shard) = name.strip_prefix(FILE_PREFIX) else { continue };
        if shard.parse::<usize>().is_err() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let Some(found) = decode(&text) else {
            tracing::warn!(
                file = %entry.path().display(),
                "high watermark checkpoint does not parse; its logs start at their log start"
            );
            continue;
        };
        for (tp, offset) in found {
            merged.entry(tp).and_modify(|kept| *kept = (*kept).min(offset)).or_insert(offset);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic.into(), partition)
    }

    #[test]
    fn a_checkpoint_reads_back_what_was_written() {
        let entries = vec![(tp("orders", 0), Offset(42)), (tp("a.b-c_d", 17), Offset(0))];
        let text = encode(&entries);
        assert_eq!(text, "0\n2\norders 0 42\na.b-c_d 17 0\n");
        assert_eq!(decode(&text), Some(entries));
        assert_eq!(decode(&encode(&[])), Some(Vec::new()));
    }

    #[test]
    fn anything_else_is_not_a_checkpoint() {
        for text in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\norders 0 42\n",
            "0\n1\norders 0\n",
            "0\n1\norders 0 42 7\n",
            "0\n1\norders x 42\n",
            "0\n1\norders 0 -1\n",
            "0\n1\norders -3 1\n",
            "0\nmany\n",
            "0\n0\norders 0 1\n",
        ] {
            assert_eq!(decode(text), None, "{text:?}");
        }
    }

    #[test]
    fn every_shards_file_is_read_and_a_damaged_one_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 0, &[(tp("t", 0), Offset(10)), (tp("t", 1), Offset(5))]).unwrap();
        write(dir.path(), 1, &[(tp("t", 1), Offset(3)), (tp("u", 0), Offset(7))]).unwrap();
        std::fs::write(dir.path().join("high-watermarks-2"), "0\n1\nbroken").unwrap();
        std::fs::write(dir.path().join("high-watermarks-3.tmp"), "0\n1\nv 0 9\n").unwrap();
        let read = read_all(dir.path());
        assert_eq!(read.len(), 3);
        assert_eq!(read[&tp("t", 0)], Offset(10));
        assert_eq!(read[&tp("t", 1)], Offset(3), "the lower of two entries");
        assert_eq!(read[&tp("u", 0)], Offset(7));
        assert!(read_all(&dir.path().join("missing")).is_empty());
    }
}
