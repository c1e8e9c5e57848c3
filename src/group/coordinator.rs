//! The group coordinator of one shard: the glue between the pure state machine
//! (`state::Groups`), the mesh, the clock and the shard's committed-offsets log.
//!
//! Lifecycle: built with the shard; `load` (before the shard serves) opens the log
//! `__consumer_offsets-<shard>`, replays it and starts the tick task; `handle` serves group
//! requests forwarded by any shard; `close` (shutdown) stops the tick and seals the log.
//! Lives in an `Rc` on its shard; state is in `RefCell`s never borrowed across an `.await`.
//!
//! Parked requests: JoinGroup and SyncGroup wait for other members. Each gets a `ReplyId`
//! and a oneshot; the state machine answers every parked request eventually (rebalance or
//! join timeouts, member removal), so no request waits forever.
//!
//! Time: the state machine keeps its deadlines (sessions, rebalance and join delays, sync
//! expiry) on a timing wheel (`group::timers`). One task per shard sleeps until the earliest
//! of them and is poked when a request sets an earlier one, so a timeout fires within a
//! millisecond or so of its deadline with no timer per member and no periodic polling. The
//! same task runs offset retention and compacts the log, waking at least every
//! `GROUP_IDLE_WAKE_MS`.
//!
//! Persistence: records go through one outbox and one flusher, so they reach the log in the
//! order the state changed, several requests' records in one batch. OffsetCommit answers
//! after its records are written (under the broker's durability policy); group records are
//! written behind (losing one in a crash only costs the members a rejoin).
//!
//! Compaction: when the log outgrows `OFFSETS_COMPACT_SEGMENTS` segments (and twice its size
//! after the previous compaction), the coordinator appends a snapshot of its whole state,
//! each group reset first, then deletes the segments wholly before the snapshot.
//!
//! Layout: group `g` lives in the log of shard `shard_for_key(g, cores)`. The core count the
//! logs were written with is kept in `__spate_meta/offsets-layout`; when `--cores` changes,
//! each shard replays every log (taking from log `n` only the groups the old layout put
//! there), writes a snapshot of the groups it now owns, and the last shard to finish moves
//! the marker on before any shard serves (`commit_layout`). A crash half-way repeats it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::StreamExt;

use crate::config::Config;
use crate::constants::{
    GROUP_IDLE_WAKE_MS, OFFSETS_BATCH_BYTES_MAX, OFFSETS_COMPACT_SEGMENTS,
    OFFSETS_RETENTION_CHECK_INTERVAL_MS,
};
use crate::group::records::Record;
use crate::group::state::{
    CommitPartition, CommitRequest, DescribedGroup, FetchedOffset, GroupConfig, Groups,
    HeartbeatRequest, JoinRequest, JoinResponse, LeaveMember, LeaveResponse, ListedGroup,
    PartitionCodes, Reply, ReplyId, SyncRequest, SyncResponse, TopicPartitions,
};
use crate::model::records::{self, RecordIn};
use crate::model::topic::{Durability, TimestampType, TopicConfig};
use crate::model::{batch, now_ms, ShardId, TopicPartition};
use crate::protocol::errors;
use crate::shard::catalog::META_DIR;
use crate::shard::table::shard_for_key;
use crate::storage::log::{self, Log};

/// Kafka's name for the committed-offsets topic; Spate keeps one partition per shard.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const LAYOUT_FILE: &str = "offsets-layout";

type LogRef = Rc<RefCell<Log>>;

/// A group request forwarded to the owning shard (one per client request and shard).
#[derive(Debug)]
pub enum GroupRequest {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave {
        group_id: String,
        members: Vec<LeaveMember>,
    },
    Commit(CommitRequest),
    /// OffsetFetch for several groups this shard owns; `None` partitions means all.
    Fetch {
        groups: Vec<(String, Option<TopicPartitions>)>,
    },
    Describe {
        groups: Vec<String>,
    },
    List {
        states: Vec<String>,
    },
    Delete {
        groups: Vec<String>,
    },
    DeleteOffsets {
        group_id: String,
        topics: TopicPartitions,
    },
    /// From the transaction coordinator: the producer's transaction ended; a commit carries
    /// the offsets its TxnOffsetCommit requests gave (kept in the transaction log until now).
    TxnEnd {
        group_id: String,
        producer_id: i64,
        commit: bool,
        offsets: Vec<CommitPartition>,
    },
}

#[derive(Debug)]
pub enum GroupResponse {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(i16),
    Leave(LeaveResponse),
    Commit(Result<Vec<i16>, i16>),
    Fetch(Vec<(String, Vec<FetchedOffset>)>),
    Describe(Vec<DescribedGroup>),
    List(Vec<ListedGroup>),
    Delete(Vec<(String, i16)>),
    DeleteOffsets(Result<PartitionCodes, i16>),
    Done,
}

/// What start-up did, for its log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    pub records: usize,
    pub groups: usize,
    /// True when the core count changed and the groups were moved between logs.
    pub migrated: bool,
}

pub struct Coordinator {
    shard: ShardId,
    shards: usize,
    data_dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    state: RefCell<Groups>,
    log: RefCell<Option<LogRef>>,
    waiting: RefCell<HashMap<ReplyId, oneshot::Sender<Reply>>>,
    next_reply: Cell<ReplyId>,
    outbox: RefCell<Outbox>,
    tick: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// When the tick task will wake on its own (ms); an earlier deadline pokes it.
    planned_wake_ms: Cell<i64>,
    poke_tx: mpsc::UnboundedSender<()>,
    poke_rx: RefCell<Option<mpsc::UnboundedReceiver<()>>>,
    /// Log size right after the last compaction: the next one waits for twice that.
    compacted_bytes: Cell<u64>,
    compacting: Cell<bool>,
}

#[derive(Default)]
struct Outbox {
    records: Vec<Record>,
    /// Told the base offset of the append that carried their records.
    acks: Vec<oneshot::Sender<i64>>,
    flushing: bool,
}

impl Coordinator {
    pub fn new(shard: ShardId, config: &Config) -> Coordinator {
        let (poke_tx, poke_rx) = mpsc::unbounded();
        Coordinator {
            shard,
            shards: config.cores,
            data_dir: config.data_dir.clone(),
            durability: config.topic_defaults.durability,
            segment_bytes: config.groups.offsets_segment_bytes,
            state: RefCell::new(Groups::new(config.groups.clone())),
            log: RefCell::new(None),
            waiting: RefCell::new(HashMap::new()),
            next_reply: Cell::new(1),
            outbox: RefCell::new(Outbox::default()),
            tick: RefCell::new(None),
            planned_wake_ms: Cell::new(i64::MAX),
            poke_tx,
            poke_rx: RefCell::new(Some(poke_rx)),
            compacted_bytes: Cell::new(0),
            compacting: Cell::new(false),
        }
    }

    pub fn config(&self) -> GroupConfig {
        self.state.borrow().config().clone()
    }

    /// The shard that owns `group_id`.
    pub fn owner(&self, group_id: &str) -> ShardId {
        shard_for_key(group_id, self.shards)
    }

    // ----- start-up and shutdown -----------------------------------------------------------

    /// Opens and replays this shard's offsets log (all logs when the core count changed),
    /// then starts the tick. Must finish before the shard serves.
    pub async fn load(self: &Rc<Self>) -> Result<LoadReport, crate::storage::Error> {
        let layout = read_layout(&self.data_dir).unwrap_or(self.shards);
        let tp = TopicPartition::new(OFFSETS_TOPIC.into(), self.shard.0 as i32);
        let (log, _) = Log::open(&self.data_dir, tp, self.log_config()).await?;
        let log = Rc::new(RefCell::new(log));
        *self.log.borrow_mut() = Some(log.clone());
        let migrating = layout != self.shards;
        let sources: Vec<usize> =
            if migrating { (0..layout).collect() } else { vec![self.shard.index()] };
        let mut report = LoadReport { migrated: migrating, ..LoadReport::default() };
        let now = now_ms();
        for source in sources {
            let dir = self.data_dir.join(format!("{OFFSETS_TOPIC}-{source}"));
            let batches = glommio::executor().spawn_blocking(move || read_batches(&dir)).await?;
            let mut state = self.state.borrow_mut();
            for bytes in &batches {
                let Ok(views) = records::parse_batch(bytes) else { continue };
                for view in views {
                    let Some(key) = view.key else { continue };
                    let Ok(record) = Record::decode(key, view.value) else {
                        tracing::warn!(
                            shard = self.shard.0,
                            offset = view.offset,
                            "skipping an unreadable offsets record"
                        );
                        continue;
                    };
                    let group = record.group_id();
                    let stored_here = shard_for_key(group, layout).index() == source;
                    if stored_here && self.owner(group) == self.shard {
                        state.replay(now, record);
                        report.records += 1;
                    }
                }
            }
        }
        {
            let mut state = self.state.borrow_mut();
            state.finish_load(now);
            report.groups = state.group_count();
        }
        if migrating {
            let snapshot = self.state.borrow().snapshot();
            if let Some(done) = self.persist(snapshot, true) {
                let _ = done.await;
            }
        }
        self.compacted_bytes.set(log.borrow().size_bytes());
        let tick = glommio::spawn_local(self.clone().run_tick()).detach();
        *self.tick.borrow_mut() = Some(tick);
        Ok(report)
    }

    /// Stops the tick and seals the log (shutdown, after in-flight requests finished).
    pub async fn close(&self) {
        if let Some(tick) = self.tick.borrow_mut().take() {
            tick.cancel();
        }
        while self.outbox.borrow().flushing {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let log = self.log.borrow().clone();
        if let Some(log) = log {
            if let Err(e) = log::close(&log).await {
                tracing::warn!(shard = self.shard.0, "closing the offsets log failed: {e}");
            }
        }
    }

    fn log_config(&self) -> TopicConfig {
        TopicConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: i64::MAX,
            retention_ms: -1,
            retention_bytes: -1,
            max_message_bytes: u32::MAX,
            timestamp_type: TimestampType::CreateTime,
            durability: self.durability,
        }
    }

    // ----- requests --------------------------------------------------------------------------

    pub async fn handle(self: &Rc<Self>, request: GroupRequest) -> GroupResponse {
        let now = now_ms();
        match request {
            GroupRequest::Join(req) => {
                let member_id = req.member_id.clone();
                let (id, answer) = self.park();
                self.state.borrow_mut().join(now, id, req);
                self.dispatch(false);
                match answer.await {
                    Ok(Reply::Join(response)) => GroupResponse::Join(response),
                    _ => GroupResponse::Join(JoinResponse::error(
                        &member_id,
                        errors::COORDINATOR_NOT_AVAILABLE,
                    )),
                }
            }
            GroupRequest::Sync(req) => {
                let (id, answer) = self.park();
                self.state.borrow_mut().sync(now, id, req);
                self.dispatch(false);
                match answer.await {
                    Ok(Reply::Sync(response)) => GroupResponse::Sync(response),
                    _ => {
                        GroupResponse::Sync(SyncResponse::error(errors::COORDINATOR_NOT_AVAILABLE))
                    }
                }
            }
            GroupRequest::Heartbeat(req) => {
                let code = self.state.borrow_mut().heartbeat(now, req);
                self.dispatch(false);
                GroupResponse::Heartbeat(code)
            }
            GroupRequest::Leave { group_id, members } => {
                let response = self.state.borrow_mut().leave(now, &group_id, members);
                self.dispatch(false);
                GroupResponse::Leave(response)
            }
            GroupRequest::Commit(req) => {
                let result = self.state.borrow_mut().commit_offsets(now, req);
                if let Some(written) = self.dispatch(true) {
                    if written.await.is_err() {
                        return GroupResponse::Commit(Err(errors::COORDINATOR_NOT_AVAILABLE));
                    }
                }
                GroupResponse::Commit(result)
            }
            GroupRequest::TxnEnd { group_id, producer_id, commit, offsets } => {
                if commit && !offsets.is_empty() {
                    self.state.borrow_mut().commit_transactional_offsets(now, &group_id, offsets);
                    if let Some(written) = self.dispatch(true) {
                        let _ = written.await;
                    }
                }
                tracing::debug!(group = %group_id, producer_id, commit, "transaction ended");
                GroupResponse::Done
            }
            GroupRequest::Fetch { groups } => {
                // Answer after every record already queued is written (require_stable in
                // spirit: nothing not yet durable is reported), at most one write's wait.
                if let Some(written) = self.barrier() {
                    let _ = written.await;
                }
                let state = self.state.borrow();
                let found = groups
                    .into_iter()
                    .map(|(group, partitions)| {
                        let offsets = state.fetch_offsets(&group, partitions);
                        (group, offsets)
                    })
                    .collect();
                GroupResponse::Fetch(found)
            }
            GroupRequest::Describe { groups } => {
                let state = self.state.borrow();
                GroupResponse::Describe(groups.iter().map(|g| state.describe(g)).collect())
            }
            GroupRequest::List { states } => GroupResponse::List(self.state.borrow().list(&states)),
            GroupRequest::Delete { groups } => {
                let results: Vec<(String, i16)> = {
                    let mut state = self.state.borrow_mut();
                    groups
                        .into_iter()
                        .map(|g| {
                            let code = state.delete_group(&g);
                            (g, code)
                        })
                        .collect()
                };
                if let Some(written) = self.dispatch(true) {
                    let _ = written.await;
                }
                GroupResponse::Delete(results)
            }
            GroupRequest::DeleteOffsets { group_id, topics } => {
                let result = self.state.borrow_mut().delete_offsets(&group_id, topics);
                if let Some(written) = self.dispatch(true) {
                    let _ = written.await;
                }
                GroupResponse::DeleteOffsets(result)
            }
        }
    }

    fn park(&self) -> (ReplyId, oneshot::Receiver<Reply>) {
        let id = self.next_reply.get();
        self.next_reply.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(id, tx);
        (id, rx)
    }

    /// Delivers the state machine's answers and queues its records. With `ack`, returns a
    /// receiver that fires once those records are in the log (None: nothing to write).
    fn dispatch(self: &Rc<Self>, ack: bool) -> Option<oneshot::Receiver<i64>> {
        let (replies, records, next_deadline) = {
            let mut state = self.state.borrow_mut();
            (state.take_replies(), state.take_records(), state.next_deadline())
        };
        if next_deadline.is_some_and(|deadline| deadline < self.planned_wake_ms.get()) {
            self.planned_wake_ms.set(next_deadline.unwrap_or(i64::MAX));
            let _ = self.poke_tx.unbounded_send(());
        }
        for (id, reply) in replies {
            if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
                let _ = tx.send(reply);
            }
        }
        self.persist(records, ack)
    }

    /// A receiver that fires when everything queued so far is written (None: nothing queued).
    fn barrier(&self) -> Option<oneshot::Receiver<i64>> {
        let mut out = self.outbox.borrow_mut();
        if !out.flushing {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        out.acks.push(tx);
        Some(rx)
    }

    // ----- persistence -----------------------------------------------------------------------

    fn persist(self: &Rc<Self>, records: Vec<Record>, ack: bool) -> Option<oneshot::Receiver<i64>> {
        if records.is_empty() {
            return None;
        }
        let (answer, start) = {
            let mut out = self.outbox.borrow_mut();
            out.records.extend(records);
            let answer = ack.then(|| {
                let (tx, rx) = oneshot::channel();
                out.acks.push(tx);
                rx
            });
            let start = !out.flushing;
            out.flushing = true;
            (answer, start)
        };
        // Spawned with no borrow held: the new task may run before this returns.
        if start {
            glommio::spawn_local(self.clone().flush_loop()).detach();
        }
        answer
    }

    /// Writes queued records until the outbox is empty. Exactly one runs at a time.
    async fn flush_loop(self: Rc<Self>) {
        loop {
            let (records, acks) = {
                let mut out = self.outbox.borrow_mut();
                if out.records.is_empty() {
                    out.flushing = false;
                    // Barrier waiters queued with nothing to write: everything is written.
                    for ack in out.acks.drain(..) {
                        let _ = ack.send(-1);
                    }
                    return;
                }
                (std::mem::take(&mut out.records), std::mem::take(&mut out.acks))
            };
            let log = self.log.borrow().clone();
            let Some(log) = log else {
                tracing::error!(shard = self.shard.0, "offsets log not open; records dropped");
                continue;
            };
            let batch_bytes_max = OFFSETS_BATCH_BYTES_MAX.min(self.segment_bytes as usize / 4);
            let batches = encode_batches(&records, now_ms(), batch_bytes_max);
            match log::append(&log, batches).await {
                Ok(info) => {
                    for ack in acks {
                        let _ = ack.send(info.base_offset);
                    }
                }
                Err(e) => tracing::warn!(shard = self.shard.0, "offsets append failed: {e}"),
            }
        }
    }

    // ----- time --------------------------------------------------------------------------------

    async fn run_tick(self: Rc<Self>) {
        let Some(mut pokes) = self.poke_rx.borrow_mut().take() else {
            return;
        };
        let mut last_retention = now_ms();
        loop {
            let now = now_ms();
            self.state.borrow_mut().advance(now);
            if now - last_retention >= OFFSETS_RETENTION_CHECK_INTERVAL_MS {
                last_retention = now;
                let expired = self.state.borrow_mut().expire_offsets(now);
                if expired > 0 {
                    tracing::info!(shard = self.shard.0, expired, "expired committed offsets");
                }
            }
            self.planned_wake_ms.set(i64::MIN);
            self.dispatch(false);
            self.maybe_compact().await;
            let now = now_ms();
            let idle_wake = now + GROUP_IDLE_WAKE_MS as i64;
            let wake = self.state.borrow().next_deadline().map_or(idle_wake, |d| d.min(idle_wake));
            self.planned_wake_ms.set(wake);
            let sleep_ms = wake.saturating_sub(now).max(1) as u64;
            let sleep = glommio::timer::sleep(Duration::from_millis(sleep_ms));
            match select(Box::pin(sleep), pokes.next()).await {
                Either::Left(_) | Either::Right((Some(()), _)) => {}
                Either::Right((None, _)) => return,
            }
        }
    }

    async fn maybe_compact(self: &Rc<Self>) {
        let log = self.log.borrow().clone();
        let Some(log) = log else { return };
        let size = log.borrow().size_bytes();
        let threshold =
            (OFFSETS_COMPACT_SEGMENTS * self.segment_bytes).max(2 * self.compacted_bytes.get());
        if size < threshold || self.compacting.get() {
            return;
        }
        self.compacting.set(true);
        let snapshot = self.state.borrow().snapshot();
        let written = if snapshot.is_empty() {
            // No state at all: an empty append still gives a boundary to cut at.
            self.barrier()
        } else {
            self.persist(snapshot, true)
        };
        let base = match written {
            Some(rx) => rx.await.unwrap_or(-1),
            None => -1,
        };
        let cut = if base >= 0 { base } else { log.borrow().high_watermark };
        let removed = log::delete_segments_before(&log, cut);
        let after = log.borrow().size_bytes();
        self.compacted_bytes.set(after);
        self.compacting.set(false);
        tracing::info!(
            shard = self.shard.0,
            removed,
            size_before = size,
            size_after = after,
            "compacted the offsets log"
        );
    }
}

/// Encodes records into batches of at most `batch_bytes_max` (at least one record each),
/// as Kafka's coordinator writes uncompressed batches of keyed records.
fn encode_batches(records: &[Record], timestamp: i64, batch_bytes_max: usize) -> Vec<Bytes> {
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = records.iter().map(Record::encode).collect();
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

/// Every intact batch of the log in `dir`, oldest first, read straight from the segment
/// files (blocking; start-up only). Stops at the first torn or invalid batch: what follows a
/// damaged spot is not a prefix of the history. (Only the last segment may end in padding.)
pub(crate) fn read_batches(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
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

fn read_layout(data_dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(data_dir.join(META_DIR).join(LAYOUT_FILE)).ok()?;
    text.trim().parse().ok()
}

/// Called once at start-up by the last shard to finish `load`, before any shard serves:
/// records the core count the offsets logs are now laid out for, and removes the logs of
/// shards that no longer exist. Blocking (a small file and a rename).
pub fn commit_layout(data_dir: &Path, cores: usize) -> std::io::Result<()> {
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
        let Some(index) = name.strip_prefix(OFFSETS_TOPIC).and_then(|s| s.strip_prefix('-')) else {
            continue;
        };
        if index.parse::<usize>().is_ok_and(|i| i >= cores) {
            tracing::info!(dir = %name, "removing the offsets log of a shard that is gone");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
