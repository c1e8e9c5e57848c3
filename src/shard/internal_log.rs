//! The coordinators' internal logs (committed offsets, transaction state): keyed records, one
//! log partition per shard, read back in full at start-up and restated by a snapshot when they
//! grow. The group and the transaction coordinators share this glue; what a record means is
//! theirs.
//!
//! Layout: the records of key `k` (a group id, a transactional id) live in the log of shard
//! `shard_for_key(k, cores)`. The core count the logs were written with is kept in
//! `__spate_meta/offsets-layout` (named when it covered the offsets logs alone). When `--cores`
//! changes, each shard replays every old log of a topic, taking from log `n` only the keys the
//! old layout put there and keeping those it now owns; the coordinator then writes a snapshot
//! of what it owns, and the last shard to finish start-up moves the marker on
//! (`commit_layout`) before any shard serves. A crash half-way repeats the migration.
//!
//! Compaction: when a log outgrows `INTERNAL_COMPACT_SEGMENTS` segments (and twice its size
//! after the previous compaction), the coordinator appends a snapshot of its whole state and
//! deletes the segments wholly before it (`Compactor`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;

use crate::constants::{INTERNAL_COMPACT_SEGMENTS, OFFSETS_COMMIT_TIMEOUT_MS};
use crate::model::records::{self, RecordIn};
use crate::model::topic::{Durability, TimestampType, TopicConfig};
use crate::model::{batch, ErrorCode, LeaderEpoch, Offset, ShardId, TopicPartition};
use crate::shard::catalog::META_DIR;
use crate::shard::table::shard_for_key;
use crate::storage::cache::CacheBudget;
use crate::storage::clean_stop::CleanStop;
use crate::storage::files::OpenFiles;
use crate::storage::log::{self, Log};

/// Kafka's name for the committed-offsets topic; Spate keeps one partition per shard.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's name for the transaction log; Spate keeps one partition per shard.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";
/// Every internal topic: users may not create topics of these names.
pub const INTERNAL_TOPICS: [&str; 2] = [OFFSETS_TOPIC, TRANSACTION_TOPIC];
/// The internal topics a cluster keeps as replicated topics (see `InternalRoles`); the
/// others stay one log per shard of the node their static placement names.
pub const REPLICATED_INTERNAL_TOPICS: [&str; 2] = [OFFSETS_TOPIC, TRANSACTION_TOPIC];

/// Whether a cluster keeps `topic` as a replicated internal topic.
pub fn replicated(topic: &str) -> bool {
    REPLICATED_INTERNAL_TOPICS.contains(&topic)
}

const LAYOUT_FILE: &str = "offsets-layout";

pub type LogRef = Rc<RefCell<Log>>;

/// The topic config of an internal log: never deleted by time or size (compaction does it).
pub fn log_config(segment_bytes: u64, durability: Durability) -> TopicConfig {
    TopicConfig {
        segment_bytes,
        segment_ms: i64::MAX,
        retention_ms: -1,
        retention_bytes: -1,
        max_message_bytes: u32::MAX,
        timestamp_type: TimestampType::CreateTime,
        durability,
        min_insync_replicas: 1,
        cleanup: Default::default(),
        delivery_delay_ms: -1,
        dead_letter_group_enable: false,
    }
}

/// Opens (recovering) the log of `topic` that `shard` writes. Nothing reads an internal log
/// back but start-up (from the files), so it keeps no batch cache.
pub async fn open(
    data_dir: &Path,
    topic: &str,
    shard: ShardId,
    config: TopicConfig,
    clean_stop: &Mutex<CleanStop>,
) -> Result<LogRef, crate::storage::Error> {
    let tp = TopicPartition::new(topic.into(), shard.0 as i32);
    let resume = clean_stop.lock().unwrap_or_else(|e| e.into_inner()).take(&tp.dir_name());
    // A handful of small logs per shard: their few descriptors are in the budget's fixed part.
    let files = OpenFiles::unbounded();
    let cache = CacheBudget::new(0);
    let (opened, _) = Log::open_in(data_dir, tp, config, cache, &files, resume.as_ref()).await?;
    Ok(Rc::new(RefCell::new(opened)))
}

/// Clustered: the partitions of the replicated internal topics that this shard owns, with
/// their logs and whether this node leads them, as `partition` applies their roles from
/// the metadata log. A key's coordinator is the leader of its partition (Kafka's model):
/// when this node starts leading one, its coordinator replays the partition's log and
/// serves its keys; when it stops, the coordinator forgets them (NOT_COORDINATOR) and the
/// log follows the new leader like any replica. Shard-local; `partition` writes it and
/// notifies `Key::InternalRoles(topic)`, the coordinators read it.
#[derive(Default)]
pub struct InternalRoles {
    roles: RefCell<BTreeMap<TopicPartition, InternalRole>>,
    /// The last `InternalRole::led_since` given.
    leaderships: Cell<u64>,
}

/// One internal partition's log and this node's part in it.
#[derive(Clone)]
pub struct InternalRole {
    pub log: LogRef,
    pub leader_epoch: LeaderEpoch,
    /// How many replicas are in sync (the metadata log's ISR), for min.insync.replicas.
    pub isr: usize,
    /// This node leads the partition: its coordinator serves the partition's keys and is
    /// the only writer of its log.
    pub leads: bool,
    /// Which stretch of leadership this is (set by `InternalRoles::set`, unique per shard):
    /// a coordinator that loaded the partition in another one (it lost and regained it
    /// between two looks) must load it again, since the log may have changed meanwhile.
    pub led_since: u64,
}

impl InternalRoles {
    /// Records `tp`'s role (None: this shard no longer holds its log). True when whether
    /// this node leads it changed (the caller wakes the coordinator).
    pub fn set(&self, tp: &TopicPartition, role: Option<InternalRole>) -> bool {
        let mut roles = self.roles.borrow_mut();
        let before = roles.get(tp).filter(|role| role.leads).map(|role| role.led_since);
        let Some(mut role) = role else {
            roles.remove(tp);
            return before.is_some();
        };
        role.led_since = match (before, role.leads) {
            (Some(since), true) => since,
            (None, true) => {
                self.leaderships.set(self.leaderships.get() + 1);
                self.leaderships.get()
            }
            (_, false) => 0,
        };
        let leads = role.leads;
        roles.insert(tp.clone(), role);
        before.is_some() != leads
    }

    /// The partition `partition` of `topic` (None: its log is not on this shard).
    pub fn get(&self, topic: &str, partition: i32) -> Option<InternalRole> {
        self.roles.borrow().get(&TopicPartition::new(topic.into(), partition)).cloned()
    }

    /// The partitions of `topic` this node leads, with their logs.
    pub fn led(&self, topic: &str) -> BTreeMap<i32, InternalRole> {
        let roles = self.roles.borrow();
        let led = roles.iter().filter(|(tp, role)| &*tp.topic == topic && role.leads);
        led.map(|(tp, role)| (tp.partition, role.clone())).collect()
    }
}

/// A partition of a replicated internal topic that a coordinator loaded (in the stretch of
/// leadership `led_since`), to write to.
pub struct Led<'a> {
    pub roles: &'a InternalRoles,
    pub tp: &'a TopicPartition,
    pub log: &'a LogRef,
    pub led_since: u64,
}

impl Led<'_> {
    /// Appends `batches` while this node still leads the partition in the stretch it was
    /// loaded in (only the leader writes the log: a follower's takes only what its leader
    /// wrote), and waits until the high watermark passes them (Kafka's coordinators append
    /// with acks=all), within offsets.commit.timeout.ms. The base offset, or the code Kafka's
    /// coordinators turn the append's error into. `queued` runs once the batches are queued:
    /// the caller wakes the followers' fetches waiting at this leader there (the partition
    /// service does, which this layer does not reach), so that they take the batches now.
    pub async fn append(
        &self,
        batches: Vec<Bytes>,
        queued: impl FnOnce(),
    ) -> Result<Offset, ErrorCode> {
        let role = self.roles.get(&self.tp.topic, self.tp.partition);
        let Some(role) = role.filter(|role| role.leads && role.led_since == self.led_since) else {
            return Err(ErrorCode::NotCoordinator);
        };
        // Kafka: NOT_ENOUGH_REPLICAS(_AFTER_APPEND) become COORDINATOR_NOT_AVAILABLE.
        let min_insync = self.log.borrow().config.min_insync_replicas.max(1) as usize;
        if role.isr < min_insync {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        // No await between the check above and this.
        // A coordinator's own append: the group coordinator writes producers'
        // transactional offsets and markers, which the idempotence checks are not for.
        let mut appending =
            log::enqueue_coordinator(self.log, batches).map_err(|_| ErrorCode::NotCoordinator)?;
        let last_offset = Offset(log::log_end(self.log).0 - 1);
        queued();
        appending.wait().await;
        let info = match appending.outcome() {
            Some(Ok(info)) => info,
            // Kafka: KAFKA_STORAGE_ERROR becomes NOT_COORDINATOR.
            _ => return Err(ErrorCode::NotCoordinator),
        };
        if let Some(replicated) = log::wait_high_watermark(self.log, last_offset) {
            let timeout = glommio::timer::sleep(Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS));
            match futures::future::select(replicated, Box::pin(timeout)).await {
                Either::Left((Ok(()), _)) => {}
                // Dropped: this node stopped leading; the new leader may cut the records.
                Either::Left((Err(_), _)) => return Err(ErrorCode::NotCoordinator),
                Either::Right(_) => return Err(ErrorCode::RequestTimedOut),
            }
        }
        let isr = self.roles.get(&self.tp.topic, self.tp.partition).map_or(0, |role| role.isr);
        if isr < min_insync {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        Ok(info.base_offset)
    }
}

/// Every intact batch of an internal partition's log, oldest first, once its queued writes
/// (a follower's last appends before this node led it) are written: what its coordinator
/// replays when this node starts leading it.
pub async fn read_led_log(log: &LogRef) -> std::io::Result<Vec<Vec<u8>>> {
    log::wait_idle(log).await;
    let dir = log.borrow().dir().to_path_buf();
    glommio::executor().spawn_blocking(move || read_batches(&dir)).await
}

/// The records of `batches` (a led partition's log as `read_led_log` read it), decoded by
/// `decode` (None: unreadable, skipped with a warning), oldest first.
pub fn decode_records<R>(
    tp: &TopicPartition,
    batches: &[Vec<u8>],
    decode: impl Fn(&[u8], Option<&[u8]>) -> Option<R>,
) -> Vec<R> {
    let mut out = Vec::new();
    for bytes in batches {
        let Ok(views) = records::parse_batch(bytes) else { continue };
        for view in views {
            let Some(record_key) = view.key.as_deref() else { continue };
            match decode(record_key, view.value.as_deref()) {
                Some(record) => out.push(record),
                None => tracing::warn!(%tp, offset = view.offset, "skipping an unreadable record"),
            }
        }
    }
    out
}

/// The old logs a shard replays (`replay`, `replay_batches`): its own, or every log of the
/// old layout when the core count changed (`layout` shards then, `shards` now).
struct Sources {
    layout: usize,
    sources: Vec<usize>,
    /// No record yet; `migrated` set.
    replayed: Replayed,
}

fn sources(data_dir: &Path, shard: ShardId, shards: usize) -> Sources {
    let layout = read_layout(data_dir).unwrap_or(shards);
    let migrated = layout != shards;
    let sources = if migrated { (0..layout).collect() } else { vec![shard.index()] };
    Sources { layout, sources, replayed: Replayed { records: 0, migrated } }
}

/// Every intact batch of old log `source` of `topic` (`read_batches`, off the shard).
async fn read_source(data_dir: &Path, topic: &str, source: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let dir = data_dir.join(format!("{topic}-{source}"));
    glommio::executor().spawn_blocking(move || read_batches(&dir)).await
}

/// What `replay` read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Replayed {
    /// Records applied (those of keys this shard owns).
    pub records: usize,
    /// True when the core count changed: every old log was read, and the caller must write
    /// a snapshot of what it now owns before it serves.
    pub migrated: bool,
}

/// Reads back, oldest first, every record of `topic` whose key `shard` owns among `shards`,
/// from this shard's log or, when the core count changed, from every log of the old layout.
/// `decode` turns a record's key and value into the caller's record (None: unreadable,
/// skipped with a warning); `key` names the record's owner key; `apply` takes it.
pub async fn replay<R>(
    data_dir: &Path,
    topic: &'static str,
    shard: ShardId,
    shards: usize,
    decode: impl Fn(&[u8], Option<&[u8]>) -> Option<R>,
    key: impl Fn(&R) -> &str,
    mut apply: impl FnMut(R),
) -> std::io::Result<Replayed> {
    let Sources { layout, sources, mut replayed } = sources(data_dir, shard, shards);
    for source in sources {
        let batches = read_source(data_dir, topic, source).await?;
        for bytes in &batches {
            let Ok(views) = records::parse_batch(bytes) else { continue };
            for view in views {
                let Some(record_key) = view.key.as_deref() else { continue };
                let Some(record) = decode(record_key, view.value.as_deref()) else {
                    tracing::warn!(
                        topic,
                        source,
                        offset = view.offset,
                        "skipping an unreadable record"
                    );
                    continue;
                };
                let owner_key = key(&record);
                let stored_here = shard_for_key(owner_key, layout).index() == source;
                if stored_here && shard_for_key(owner_key, shards) == shard {
                    apply(record);
                    replayed.records += 1;
                }
            }
        }
    }
    Ok(replayed)
}

/// As `replay`, for a log whose batches mean more than their records (the group
/// coordinator's: transactional batches and markers): `decode` turns one old log's batches
/// (its index in the old layout, its batches oldest first) into records, and `key` names a
/// record's owner key, None for one that belongs to the log rather than to a key (a
/// marker), which `apply` always gets. `apply` also gets whether an owner key's records
/// were stored in that log (a marker settles only what its own log held).
pub async fn replay_batches<R>(
    data_dir: &Path,
    topic: &'static str,
    shard: ShardId,
    shards: usize,
    decode: impl Fn(usize, &[Vec<u8>]) -> Vec<R>,
    key: impl Fn(&R) -> Option<&str>,
    mut apply: impl FnMut(R, &dyn Fn(&str) -> bool),
) -> std::io::Result<Replayed> {
    let Sources { layout, sources, mut replayed } = sources(data_dir, shard, shards);
    for source in sources {
        let batches = read_source(data_dir, topic, source).await?;
        let stored_here = |owner_key: &str| shard_for_key(owner_key, layout).index() == source;
        for record in decode(source, &batches) {
            let mine = match key(&record) {
                Some(owner_key) => {
                    stored_here(owner_key) && shard_for_key(owner_key, shards) == shard
                }
                None => true,
            };
            if mine {
                apply(record, &stored_here);
                replayed.records += 1;
            }
        }
    }
    Ok(replayed)
}

/// Every intact batch of the log in `dir`, oldest first, read straight from the segment
/// files (blocking; start-up only). Stops at the first torn or invalid batch: what follows a
/// damaged spot is not a prefix of the history. (Only the last segment may end in padding.)
pub fn read_batches(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let bases = match crate::storage::segment::list_segments(dir) {
        Ok(bases) => bases,
        Err(crate::storage::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(out)
        }
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    for base in bases {
        let path = dir.join(crate::storage::segment::file_name(base, "log"));
        let bytes = std::fs::read(&path)?;
        let mut at = 0;
        while let Some(scanned) = batch::scan_stored(&bytes[at..]) {
            out.push(bytes[at..at + scanned.size_bytes].to_vec());
            at += scanned.size_bytes;
        }
        if at < bytes.len() {
            break;
        }
    }
    Ok(out)
}

/// Encodes keyed records (None value: a tombstone) into uncompressed batches of at most
/// `batch_bytes_max` (at least one record each), as Kafka's coordinators write them.
pub fn encode_batches(
    encoded: &[(Vec<u8>, Option<Vec<u8>>)],
    timestamp: i64,
    batch_bytes_max: usize,
) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < encoded.len() {
        let mut end = start;
        let mut size = 0;
        while end < encoded.len() {
            let (key, value) = &encoded[end];
            let record_size = key.len() + value.as_ref().map_or(0, Vec::len) + 16;
            if end > start && size + record_size > batch_bytes_max {
                break;
            }
            size += record_size;
            end += 1;
        }
        let ins: Vec<RecordIn<'_>> = encoded[start..end]
            .iter()
            .map(|(key, value)| RecordIn { key: Some(key), value: value.as_deref() })
            .collect();
        batches.push(Bytes::from(records::build_batch(timestamp, &ins)));
        start = end;
    }
    batches
}

/// Decides when an internal log is due for a snapshot and cuts the history before it.
#[derive(Debug)]
pub struct Compactor {
    topic: &'static str,
    segment_bytes: u64,
    /// Log size right after the last compaction: the next one waits for twice that.
    compacted_bytes: Cell<u64>,
    running: Cell<bool>,
}

/// What a compaction is cutting: handed back to `Compactor::finish`.
#[derive(Debug)]
pub struct Compacting {
    size_before: u64,
}

impl Compactor {
    pub fn new(topic: &'static str, segment_bytes: u64) -> Compactor {
        Compactor { topic, segment_bytes, compacted_bytes: Cell::new(0), running: Cell::new(false) }
    }

    /// The log as loaded: growth is counted from here.
    pub fn loaded(&self, log: &LogRef) {
        self.compacted_bytes.set(log.borrow().size_bytes());
    }

    /// Some when the log has outgrown its threshold and no compaction runs: the caller
    /// appends a snapshot of its whole state, then calls `finish`.
    pub fn begin(&self, log: &LogRef) -> Option<Compacting> {
        let size = log.borrow().size_bytes();
        let threshold =
            (INTERNAL_COMPACT_SEGMENTS * self.segment_bytes).max(2 * self.compacted_bytes.get());
        if size < threshold || self.running.get() {
            return None;
        }
        self.running.set(true);
        Some(Compacting { size_before: size })
    }

    /// The snapshot starts at `snapshot_base` (None: the state was empty, so everything
    /// written so far is history): deletes the whole segments before it.
    pub fn finish(
        &self,
        log: &LogRef,
        shard: ShardId,
        snapshot_base: Option<Offset>,
        run: Compacting,
    ) {
        let cut = snapshot_base.unwrap_or_else(|| log.borrow().high_watermark);
        let removed = log::delete_segments_before(log, cut);
        let after = log.borrow().size_bytes();
        self.compacted_bytes.set(after);
        self.running.set(false);
        tracing::info!(
            topic = self.topic,
            shard = shard.0,
            removed,
            size_before = run.size_before,
            size_after = after,
            "compacted an internal log"
        );
    }

    /// The snapshot could not be written: try again at the next check.
    pub fn abandon(&self, _run: Compacting) {
        self.running.set(false);
    }
}

fn read_layout(data_dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(data_dir.join(META_DIR).join(LAYOUT_FILE)).ok()?;
    text.trim().parse().ok()
}

/// Called once at start-up by the last shard to finish loading, before any shard serves:
/// records the core count the internal logs are now laid out for, and removes the logs of
/// shards that no longer exist (not, in a cluster, the partitions of the replicated internal
/// topics, whose directories have the same names). Blocking (a small file and a rename).
pub fn commit_layout(data_dir: &Path, cores: usize, clustered: bool) -> std::io::Result<()> {
    if read_layout(data_dir) != Some(cores) {
        let dir = data_dir.join(META_DIR);
        let temporary = dir.join(format!("{LAYOUT_FILE}.tmp"));
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            writeln!(file, "{cores}")?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, dir.join(LAYOUT_FILE))?;
        std::fs::File::open(&dir)?.sync_all()?;
    }
    for entry in std::fs::read_dir(data_dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A cluster's replicated internal topics are partition logs, not one per shard.
        let per_shard = INTERNAL_TOPICS.iter().filter(|topic| !(clustered && replicated(topic)));
        let gone = per_shard.into_iter().any(|topic| {
            name.strip_prefix(topic)
                .and_then(|s| s.strip_prefix('-'))
                .and_then(|index| index.parse::<usize>().ok())
                .is_some_and(|index| index >= cores)
        });
        if gone {
            tracing::info!(dir = %name, "removing the internal log of a shard that is gone");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
