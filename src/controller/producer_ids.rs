//! Producer id allocation on the controller (InitProducerId).
//!
//! Producer ids must never repeat, across restarts and crashes included: a reused id would
//! meet the producer state an earlier producer left in the partitions and see its batches
//! refused or, worse, taken for duplicates. The controller (shard 0) therefore hands ids out
//! from blocks of `PRODUCER_ID_BLOCK_SIZE` that it reserves durably before using them, as
//! Kafka's controller does for AllocateProducerIds: `<data dir>/__spate_meta/producer_ids`
//! holds the end of the last reserved block (temporary file, fsync, rename, fsync of the
//! directory). After a restart allocation continues at that end, so the unused rest of a
//! block is skipped, never reused. Other shards ask the controller over the mesh;
//! InitProducerId is rare (once per producer), so one round trip each is cheap.
//!
//! Clustered, every node allocates from its own file and `spread` interleaves the ids of the
//! nodes (`constants::CLUSTER_PRODUCER_ID_STRIDE`), so that producers that asked different
//! nodes never share an id; producer id blocks on the metadata log (Kafka's
//! ProducerIdsRecord) are a later step.
//!
//! Lifecycle: the allocator lives in every `Controller` but only shard 0's is used; it
//! reads its file on the first allocation. One allocation at a time (a shard-local async
//! semaphore), since reserving a block waits for the disk.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::constants::{CLUSTER_PRODUCER_ID_STRIDE, PRODUCER_ID_BLOCK_SIZE};
use crate::model::{NodeId, ProducerId};
use crate::shard::catalog::META_DIR;

const PRODUCER_IDS_FILE: &str = "producer_ids";

pub struct ProducerIdAllocator {
    /// The next id to hand out; below `block_end`, or equal when the block is used up.
    next: Cell<i64>,
    /// End of the block reserved on disk; -1 until the file was read.
    block_end: Cell<i64>,
    one_at_a_time: glommio::sync::Semaphore,
}

#[derive(Serialize, Deserialize)]
struct ProducerIdsFile {
    /// Every producer id below this one was handed out or reserved.
    block_end: i64,
}

impl ProducerIdAllocator {
    pub fn new() -> ProducerIdAllocator {
        ProducerIdAllocator {
            next: Cell::new(0),
            block_end: Cell::new(-1),
            one_at_a_time: glommio::sync::Semaphore::new(1),
        }
    }

    /// A producer id never handed out before by this data dir.
    pub async fn allocate(&self, data_dir: &Path) -> Result<ProducerId, String> {
        let _permit = self.one_at_a_time.acquire_permit(1).await.map_err(|e| e.to_string())?;
        if self.block_end.get() < 0 {
            let path = file_path(data_dir);
            let end = glommio::executor().spawn_blocking(move || read_file(&path)).await?;
            assert!(end >= 0);
            self.next.set(end);
            self.block_end.set(end);
        }
        if self.next.get() >= self.block_end.get() {
            let end = self.block_end.get() + PRODUCER_ID_BLOCK_SIZE;
            let dir = data_dir.to_path_buf();
            glommio::executor()
                .spawn_blocking(move || write_file(&dir, end))
                .await
                .map_err(|e| format!("cannot reserve producer ids: {e}"))?;
            self.block_end.set(end);
            tracing::info!(block_end = end, "reserved a block of producer ids");
        }
        let id = self.next.get();
        assert!(id < self.block_end.get());
        self.next.set(id + 1);
        Ok(ProducerId(id))
    }
}

impl Default for ProducerIdAllocator {
    fn default() -> Self {
        ProducerIdAllocator::new()
    }
}

/// A node's local producer id as the cluster's: interleaved with the other nodes' (see the
/// module doc).
pub fn spread(local: ProducerId, node_id: NodeId) -> ProducerId {
    let slot = i64::from(node_id.0).rem_euclid(CLUSTER_PRODUCER_ID_STRIDE);
    ProducerId(local.0 * CLUSTER_PRODUCER_ID_STRIDE + slot)
}

fn file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(META_DIR).join(PRODUCER_IDS_FILE)
}

/// The end of the last reserved block; 0 when no id was ever handed out.
fn read_file(path: &Path) -> Result<i64, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: ProducerIdsFile = toml::from_str(&text)
        .map_err(|e| format!("{} is damaged ({e}); ids cannot be handed out", path.display()))?;
    if file.block_end < 0 {
        return Err(format!("{} holds a negative block end", path.display()));
    }
    Ok(file.block_end)
}

/// Reserves every id below `block_end`: temporary file, fsync, rename, fsync of the directory.
fn write_file(data_dir: &Path, block_end: i64) -> std::io::Result<()> {
    use std::io::Write;
    let dir = data_dir.join(META_DIR);
    std::fs::create_dir_all(&dir)?;
    let text = toml::to_string(&ProducerIdsFile { block_end }).map_err(std::io::Error::other)?;
    let temporary = dir.join(format!("{PRODUCER_IDS_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, file_path(data_dir))?;
    std::fs::File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_ids_of_different_nodes_never_meet() {
        let mut seen = std::collections::BTreeSet::new();
        for node in [1, 2, 3, 1023, 1025 + 4] {
            for local in 0..2000 {
                assert!(seen.insert(spread(ProducerId(local), NodeId(node))), "{node} {local}");
            }
        }
        assert_eq!(spread(ProducerId(0), NodeId(2)), ProducerId(2));
        assert_eq!(spread(ProducerId(3), NodeId(1)), ProducerId(3 * 1024 + 1));
        assert!(spread(ProducerId(0), NodeId(-1)).0 >= 0);
    }

    #[test]
    fn ids_are_unique_across_restarts_and_skip_the_rest_of_a_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let ids = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut ids = Vec::new();
                for _restart in 0..3 {
                    let allocator = ProducerIdAllocator::new();
                    for _ in 0..(PRODUCER_ID_BLOCK_SIZE + 2) {
                        ids.push(allocator.allocate(&data_dir).await.expect("id"));
                    }
                }
                ids
            })
            .expect("executor")
            .join()
            .expect("join");
        let per_run = (PRODUCER_ID_BLOCK_SIZE + 2) as usize;
        assert_eq!(ids[0], ProducerId(0));
        assert_eq!(ids[per_run - 1], ProducerId(PRODUCER_ID_BLOCK_SIZE + 1));
        // The second run starts after the two blocks the first one reserved.
        assert_eq!(ids[per_run], ProducerId(2 * PRODUCER_ID_BLOCK_SIZE));
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "no id is handed out twice");
        assert_eq!(read_file(&file_path(dir.path())), Ok(6 * PRODUCER_ID_BLOCK_SIZE));
    }

    #[test]
    fn a_damaged_file_stops_allocation_instead_of_reusing_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(META_DIR)).expect("meta");
        std::fs::write(file_path(dir.path()), "block_end = \"x\"").expect("write");
        assert!(read_file(&file_path(dir.path())).is_err());
        std::fs::write(file_path(dir.path()), "block_end = -5").expect("write");
        assert!(read_file(&file_path(dir.path())).is_err());
    }
}
