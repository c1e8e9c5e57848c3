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
//! Clustered, the blocks come from the metadata log instead, as in KRaft (KIP-730): shard 0
//! of each node proposes a ProducerIds record, every node's apply gives the block after
//! the last one given (`cluster::state::ProducerIds`), and the node hands ids out from it
//! (`Blocks`, asking for the next one when 90% of the current one is used, as Kafka's
//! RPCProducerIdManager; `controller::quorum`). A block is durable once committed, and the
//! node never writes its file then: a restart simply asks for a new block. The file of a
//! node that ran an earlier version, which interleaved the nodes' ids
//! (`local * CLUSTER_PRODUCER_ID_STRIDE + node_id mod CLUSTER_PRODUCER_ID_STRIDE`), bounds
//! every id it handed out (`legacy_end`); the log's blocks start at 2^50 and above every
//! node's legacy end it was told (`cluster::state::ProducerIds`).
//!
//! Lifecycle: the allocator lives in every `Controller` but only shard 0's is used; it
//! reads its file on the first allocation. One allocation at a time (a shard-local async
//! semaphore), since reserving a block waits for the disk. `Blocks` likewise lives on shard
//! 0 of a clustered node, with at most one request for a block in flight.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::state::ProducerIdBlock;
use crate::constants::{CLUSTER_PRODUCER_ID_STRIDE, PRODUCER_ID_BLOCK_SIZE};
use crate::model::ProducerId;
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

/// Clustered: the producer id blocks this node got from the metadata log, used in order.
/// Pure: the controller asks for a block when `wants_block` says so and hands it in with
/// `add`.
#[derive(Debug, Default)]
pub struct Blocks {
    /// The next id to hand out and the end of its block (used up: `next == end`).
    next: i64,
    end: i64,
    /// The current block's size (0 before the first).
    size: i64,
    /// A block got ahead of need, used once the current one is.
    following: Option<ProducerIdBlock>,
    /// A request for a block is in flight.
    asking: bool,
}

impl Blocks {
    /// The next id, if a block has one left.
    pub fn take(&mut self) -> Option<ProducerId> {
        if self.next >= self.end {
            let block = self.following.take()?;
            self.next = block.first;
            self.size = i64::from(block.size);
            self.end = block.first + self.size;
        }
        let id = self.next;
        self.next += 1;
        Some(ProducerId(id))
    }

    /// Whether to ask for the next block: none is asked or got ahead, and 90% of the current
    /// one is used (Kafka's prefetch threshold), or there is none.
    pub fn wants_block(&self) -> bool {
        !self.asking && self.following.is_none() && (self.end - self.next) * 10 <= self.size
    }

    pub fn set_asking(&mut self, asking: bool) {
        self.asking = asking;
    }

    /// A block the log gave this node: used after the current one.
    pub fn add(&mut self, block: ProducerIdBlock) {
        assert!(block.size > 0 && block.first >= 0, "{block:?}");
        assert!(self.following.is_none(), "one block ahead at most");
        self.following = Some(block);
    }
}

/// Every producer id this node handed out before producer id blocks were on the log is
/// below this (0 when it handed out none): its file bounds the local ids, which the
/// interleaving spread to `local * stride + slot`, each below `(local + 1) * stride`.
pub fn legacy_end(data_dir: &Path) -> Result<i64, String> {
    let local_end = read_file(&file_path(data_dir))?;
    local_end
        .checked_mul(CLUSTER_PRODUCER_ID_STRIDE)
        .ok_or_else(|| format!("{} holds a block end too large", file_path(data_dir).display()))
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
    fn blocks_are_used_in_order_and_the_next_is_asked_for_at_90_percent() {
        let mut blocks = Blocks::default();
        assert!(blocks.wants_block());
        assert_eq!(blocks.take(), None);
        blocks.set_asking(true);
        assert!(!blocks.wants_block());
        blocks.add(ProducerIdBlock { first: 5000, size: 10 });
        blocks.set_asking(false);
        let mut ids = Vec::new();
        for _ in 0..9 {
            assert!(!blocks.wants_block());
            ids.push(blocks.take().expect("id").0);
        }
        assert!(blocks.wants_block(), "9 of 10 used");
        blocks.add(ProducerIdBlock { first: 7000, size: 3 });
        assert!(!blocks.wants_block());
        for _ in 0..4 {
            ids.push(blocks.take().expect("id").0);
        }
        assert_eq!(
            ids,
            [5000, 5001, 5002, 5003, 5004, 5005, 5006, 5007, 5008, 5009, 7000, 7001, 7002]
        );
        assert!(blocks.wants_block());
        assert_eq!(blocks.take(), None);
    }

    #[test]
    fn the_legacy_end_is_above_every_interleaved_id_a_node_handed_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(legacy_end(dir.path()), Ok(0));
        write_file(dir.path(), 2 * PRODUCER_ID_BLOCK_SIZE).expect("write");
        let end = legacy_end(dir.path()).expect("end");
        // The previous version's largest id: local id 1999 of node 1023.
        let largest = (2 * PRODUCER_ID_BLOCK_SIZE - 1) * CLUSTER_PRODUCER_ID_STRIDE + 1023;
        assert!(largest < end, "{largest} {end}");
        assert_eq!(end, largest + 1);
        write_file(dir.path(), i64::MAX / 2).expect("write");
        assert!(legacy_end(dir.path()).is_err());
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
