//! Snapshots of the metadata log: the whole `MetadataState` at an applied index, so that the
//! journal can drop the entries before it and a follower too far behind can be sent the
//! state instead of entries the leader no longer has.
//!
//! ```text
//!   file <data-dir>/__cluster_metadata/<20-digit index>.snapshot, big-endian:
//!   +---------+-----+-------------+------------+--------------------------------------+
//!   | "SPMS"  | ver | body_length | crc32c     | body                                 |
//!   | 4 bytes | u8  | u32         | u32 (body) |                                      |
//!   +---------+-----+-------------+------------+--------------------------------------+
//!   ver 1, 2, 3 or 4 (2: partitions carry a reassignment; written only when one is in
//!   progress, so a cluster that never reassigns writes what the previous version reads;
//!   3: as 2, and the dynamic configs follow the requests; written only when some are
//!   set; 4: as 3, and each partition's partition epoch follows its leader epoch; written
//!   only when some partition's differs from its leader epoch, as an ISR change without a
//!   new leader makes it; before 4 a partition's partition epoch is its leader epoch, which
//!   it was when every change moved the leader epoch; 5: as 4, and the producer ids and the
//!   unregistered nodes follow the configs; written once producer ids were asked for or a
//!   broker unregistered; 6: as 5, and every config value of `overrides` is a long string,
//!   written only when some value is longer than a string holds, as record version 1;
//!   7: as 6, and the SCRAM credentials and the ACLs follow the unregistered nodes; written
//!   only when some are set);
//!   body:
//!     index u64, term u64                      the last entry the snapshot covers
//!     conf state: voters, learners, voters_outgoing, learners_next (ids), auto_leave u8
//!     leader: u8 present + i32, leader_term u64, cluster id: u8 present + string
//!     brokers   count + (node_id i32, host string, port u16, incarnation u64,
//!                        epoch u64, fenced u8, rack: u8 present + string), by node id
//!     topics    count + (name string, topic_id 16 bytes, overrides,
//!                        count + (replicas ids, isr ids, leader i32, leader_epoch i32,
//!                        ver 4: partition_epoch i32,
//!                        ver 2: adding ids, removing ids) per partition), by name
//!     internal  count + (name string, leaders ids), by name
//!     requests  count + request (node_id i32, serial u64), oldest first
//!     ver 3: configs  count + (resource_type i8, name string, overrides), by resource
//!     ver 5: producer ids  next i64, started u8, reported ids (i32 each)
//!            unregistered  count + (node_id i32, index u64), by node id
//!     ver 7: scram  count + (user string, mechanism u8, iterations u32, salt bytes,
//!                    stored_key bytes, server_key bytes), by user and mechanism
//!            acls   count + acl, in order
//!
//!   ids: u32 count + u64 (conf state) or i32 (brokers) each; string, overrides, request,
//!   bytes, mechanism and acl as in `records`
//! ```
//!
//! The state's applied index is the snapshot's index. The topic-id index and the set of
//! remembered requests are rebuilt from the topics and the request list, so a decoded state
//! equals the encoded one field for field (`MetadataState: PartialEq`), and applying the same
//! entries to both gives equal states (tests below). A file that is short, has a bad CRC,
//! another magic or version, or fields that do not fit together (a topic id twice, a
//! request twice, bytes left over) is an error; decoding never panics (fuzzed:
//! `fuzz/fuzz_targets/internal_records.rs`).
//!
//! Files: written to `<name>.tmp`, fsynced, renamed, and the directory fsynced (so a crash
//! leaves the old file set or the new one, never a torn snapshot under its name); a start
//! loads the newest file that decodes, and removes `.tmp` leftovers. The driver's order
//! around a snapshot, and why each crash point recovers the same committed state, is in
//! `node` (`Driver::take_snapshot`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use raft::prelude::ConfState;

use super::records::{
    has_long_values, put_acl, put_bytes, put_leaders, put_overrides, put_request, put_string,
    Reader, RecordError, RequestId,
};
use super::state::{BrokerRegistration, MetadataState, PartitionState, TopicState};
use crate::constants::CLUSTER_REQUESTS_REMEMBERED_MAX;
use crate::model::{LeaderEpoch, NodeId, PartitionEpoch};

const MAGIC: [u8; 4] = *b"SPMS";
const VERSION: u8 = 1;
/// Partitions with `adding` and `removing` (a reassignment in progress somewhere).
const VERSION_REASSIGNING: u8 = 2;
/// As `VERSION_REASSIGNING`, with the dynamic configs (some are set).
const VERSION_CONFIGS: u8 = 3;
/// As `VERSION_CONFIGS`, with partition epochs (some differ from their leader epochs).
const VERSION_EPOCHS: u8 = 4;
/// As `VERSION_EPOCHS`, with the producer id blocks (some were asked for).
const VERSION_PRODUCER_IDS: u8 = 5;
/// As `VERSION_PRODUCER_IDS`, with config values as long strings (some need it).
const VERSION_LONG_VALUES: u8 = 6;
/// As `VERSION_LONG_VALUES`, with the SCRAM credentials and the ACLs (some are set).
const VERSION_SECURITY: u8 = 7;
const HEADER_BYTES: usize = 13;
const SUFFIX: &str = ".snapshot";
const TEMP_SUFFIX: &str = ".tmp";
/// A snapshot being fetched from the leader in chunks (`snapshot_fetch`).
const DOWNLOAD_SUFFIX: &str = ".download";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {0} bytes, shorter than its header")]
    Short(usize),
    #[error("snapshot does not start with the magic SPMS")]
    Magic,
    #[error("snapshot version {0} is unknown (written by a newer spate?)")]
    Version(u8),
    #[error("snapshot body is {have} bytes, its header says {want}")]
    Length { have: usize, want: usize },
    #[error("snapshot body fails its CRC")]
    Crc,
    #[error("snapshot fields: {0}")]
    Fields(#[from] RecordError),
    #[error("snapshot does not fit together: {0}")]
    Inconsistent(String),
}

/// Where a snapshot sits in the Raft log: the last entry it covers and the configuration
/// there (raft-rs's SnapshotMetadata).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
}

/// The file bytes of `state` (applied up to `meta.index`, which it must be).
pub fn encode(meta: &SnapshotMeta, state: &MetadataState) -> Vec<u8> {
    assert_eq!(meta.index, state.applied_index, "a snapshot is of the state at its index");
    let mut body = Vec::new();
    body.extend_from_slice(&meta.index.to_be_bytes());
    body.extend_from_slice(&meta.term.to_be_bytes());
    let conf = &meta.conf_state;
    for ids in [&conf.voters, &conf.learners, &conf.voters_outgoing, &conf.learners_next] {
        body.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            body.extend_from_slice(&id.to_be_bytes());
        }
    }
    body.push(u8::from(conf.auto_leave));
    match state.leader_id {
        Some(leader) => {
            body.push(1);
            body.extend_from_slice(&leader.0.to_be_bytes());
        }
        None => body.push(0),
    }
    body.extend_from_slice(&state.leader_term.to_be_bytes());
    match &state.cluster_id {
        Some(id) => {
            body.push(1);
            put_string(&mut body, id);
        }
        None => body.push(0),
    }
    body.extend_from_slice(&(state.brokers.len() as u32).to_be_bytes());
    for broker in state.brokers.values() {
        body.extend_from_slice(&broker.node_id.0.to_be_bytes());
        put_string(&mut body, &broker.host);
        body.extend_from_slice(&broker.port.to_be_bytes());
        body.extend_from_slice(&broker.incarnation.to_be_bytes());
        body.extend_from_slice(&broker.epoch.to_be_bytes());
        body.push(u8::from(broker.fenced));
        match &broker.rack {
            Some(rack) => {
                body.push(1);
                put_string(&mut body, rack);
            }
            None => body.push(0),
        }
    }
    let topics = state.topics.values();
    let reassigning = topics.flat_map(|topic| &topic.partitions).any(PartitionState::reassigning);
    let configs = !state.configs.resources.is_empty();
    let epochs = state
        .topics
        .values()
        .flat_map(|topic| &topic.partitions)
        .any(|p| p.partition_epoch.0 != p.leader_epoch.0);
    let producer_ids = state.producer_ids != Default::default() || !state.unregistered.is_empty();
    let security = !state.scram.is_empty() || !state.acls.is_empty();
    let long_values = security
        || state.topics.values().any(|topic| has_long_values(&topic.overrides))
        || state.configs.resources.values().any(has_long_values);
    let version = match (epochs, configs, reassigning) {
        _ if security => VERSION_SECURITY,
        _ if long_values => VERSION_LONG_VALUES,
        _ if producer_ids => VERSION_PRODUCER_IDS,
        (true, _, _) => VERSION_EPOCHS,
        (false, true, _) => VERSION_CONFIGS,
        (false, false, true) => VERSION_REASSIGNING,
        (false, false, false) => VERSION,
    };
    let reassigning = version != VERSION;
    body.extend_from_slice(&(state.topics.len() as u32).to_be_bytes());
    for (name, topic) in &state.topics {
        put_string(&mut body, name);
        body.extend_from_slice(&topic.topic_id);
        put_overrides(&mut body, &topic.overrides, long_values);
        body.extend_from_slice(&(topic.partitions.len() as u32).to_be_bytes());
        for partition in &topic.partitions {
            put_leaders(&mut body, &partition.replicas);
            put_leaders(&mut body, &partition.isr);
            body.extend_from_slice(&partition.leader.0.to_be_bytes());
            body.extend_from_slice(&partition.leader_epoch.0.to_be_bytes());
            if version >= VERSION_EPOCHS {
                body.extend_from_slice(&partition.partition_epoch.0.to_be_bytes());
            }
            if reassigning {
                put_leaders(&mut body, &partition.adding);
                put_leaders(&mut body, &partition.removing);
            }
        }
    }
    body.extend_from_slice(&(state.internal.len() as u32).to_be_bytes());
    for (name, leaders) in &state.internal {
        put_string(&mut body, name);
        put_leaders(&mut body, leaders);
    }
    body.extend_from_slice(&(state.requests_order.len() as u32).to_be_bytes());
    for request in &state.requests_order {
        put_request(&mut body, request);
    }
    if version >= VERSION_CONFIGS {
        body.extend_from_slice(&(state.configs.resources.len() as u32).to_be_bytes());
        for ((resource_type, name), values) in &state.configs.resources {
            body.push(*resource_type as u8);
            put_string(&mut body, name);
            put_overrides(&mut body, values, long_values);
        }
    }
    if version >= VERSION_PRODUCER_IDS {
        let ids = &state.producer_ids;
        body.extend_from_slice(&ids.next.to_be_bytes());
        body.push(u8::from(ids.started));
        let reported: Vec<NodeId> = ids.reported.iter().copied().collect();
        put_leaders(&mut body, &reported);
        body.extend_from_slice(&(state.unregistered.len() as u32).to_be_bytes());
        for (node_id, index) in &state.unregistered {
            body.extend_from_slice(&node_id.0.to_be_bytes());
            body.extend_from_slice(&index.to_be_bytes());
        }
    }
    if version >= VERSION_SECURITY {
        body.extend_from_slice(&(state.scram.len() as u32).to_be_bytes());
        for ((user, mechanism), credential) in &state.scram {
            put_string(&mut body, user);
            body.push(mechanism.type_id() as u8);
            body.extend_from_slice(&credential.iterations.to_be_bytes());
            for bytes in [&credential.salt, &credential.stored_key, &credential.server_key] {
                put_bytes(&mut body, bytes);
            }
        }
        body.extend_from_slice(&(state.acls.len() as u32).to_be_bytes());
        for acl in &state.acls {
            put_acl(&mut body, acl);
        }
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The snapshot in `bytes` (see the module doc for what is an error).
pub fn decode(bytes: &[u8]) -> Result<(SnapshotMeta, MetadataState), SnapshotError> {
    if bytes.len() < HEADER_BYTES {
        return Err(SnapshotError::Short(bytes.len()));
    }
    if bytes[..4] != MAGIC {
        return Err(SnapshotError::Magic);
    }
    let version = bytes[4];
    let versions = [
        VERSION,
        VERSION_REASSIGNING,
        VERSION_CONFIGS,
        VERSION_EPOCHS,
        VERSION_PRODUCER_IDS,
        VERSION_LONG_VALUES,
        VERSION_SECURITY,
    ];
    if !versions.contains(&version) {
        return Err(SnapshotError::Version(version));
    }
    let want = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let crc = u32::from_be_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]);
    let body = &bytes[HEADER_BYTES..];
    if body.len() != want {
        return Err(SnapshotError::Length { have: body.len(), want });
    }
    if crc32c::crc32c(body) != crc {
        return Err(SnapshotError::Crc);
    }
    let mut reader = Reader::new(body);
    reader.long_values = version >= VERSION_LONG_VALUES;
    let index = reader.u64()?;
    let term = reader.u64()?;
    let mut lists: [Vec<u64>; 4] = Default::default();
    for list in &mut lists {
        let count = reader.count(8)?;
        *list = (0..count).map(|_| reader.u64()).collect::<Result<_, _>>()?;
    }
    let [voters, learners, voters_outgoing, learners_next] = lists;
    let auto_leave = flag(&mut reader)?;
    let conf_state = ConfState {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave,
        ..Default::default()
    };
    let mut state = MetadataState { applied_index: index, ..Default::default() };
    state.leader_id = if flag(&mut reader)? { Some(NodeId(reader.i32()?)) } else { None };
    state.leader_term = reader.u64()?;
    state.cluster_id = if flag(&mut reader)? { Some(reader.string()?) } else { None };
    let brokers = reader.count(4 + 2 + 2 + 8 + 8 + 1 + 1)?;
    for _ in 0..brokers {
        let node_id = NodeId(reader.i32()?);
        let broker = BrokerRegistration {
            node_id,
            host: reader.string()?,
            port: reader.u16()?,
            incarnation: reader.u64()?,
            epoch: reader.u64()?,
            fenced: flag(&mut reader)?,
            rack: if flag(&mut reader)? { Some(reader.string()?) } else { None },
        };
        if state.brokers.insert(node_id, broker).is_some() {
            return inconsistent(format!("broker {node_id} twice"));
        }
    }
    let topics = reader.count(2 + 16 + 4 + 4)?;
    for _ in 0..topics {
        let name = reader.string()?;
        let topic_id: [u8; 16] = reader.array()?;
        let overrides = reader.overrides()?;
        let count = reader.count(4 + 4 + 4 + 4)?;
        let mut partitions = Vec::with_capacity(count);
        for _ in 0..count {
            let replicas = reader.leaders()?;
            let isr = reader.leaders()?;
            let leader = NodeId(reader.i32()?);
            let leader_epoch = LeaderEpoch(reader.i32()?);
            let partition_epoch = if version >= VERSION_EPOCHS {
                PartitionEpoch(reader.i32()?)
            } else {
                PartitionEpoch(leader_epoch.0)
            };
            let mut partition = PartitionState {
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding: Vec::new(),
                removing: Vec::new(),
            };
            if version != VERSION {
                partition.adding = reader.leaders()?;
                partition.removing = reader.leaders()?;
            }
            partitions.push(partition);
        }
        if state.topic_names.insert(topic_id, name.clone()).is_some() {
            return inconsistent(format!("topic id of {name} twice"));
        }
        let topic = TopicState { topic_id, partitions, overrides };
        if state.topics.insert(name.clone(), topic).is_some() {
            return inconsistent(format!("topic {name} twice"));
        }
    }
    let internal = reader.count(2 + 4)?;
    for _ in 0..internal {
        let name = reader.string()?;
        let leaders = reader.leaders()?;
        if state.internal.insert(name.clone(), leaders).is_some() {
            return inconsistent(format!("internal topic {name} twice"));
        }
    }
    let requests = reader.count(12)?;
    if requests > CLUSTER_REQUESTS_REMEMBERED_MAX {
        return inconsistent(format!("{requests} requests remembered"));
    }
    for _ in 0..requests {
        let request: RequestId = reader.request()?;
        if !state.requests_seen.insert(request) {
            return inconsistent(format!("request {request} twice"));
        }
        state.requests_order.push_back(request);
    }
    if version >= VERSION_CONFIGS {
        let resources = reader.count(1 + 2 + 4)?;
        for _ in 0..resources {
            let resource_type = reader.u8()? as i8;
            let name = reader.string()?;
            let values = reader.overrides()?;
            if values.is_empty() {
                return inconsistent(format!("configs of {resource_type}/{name:?} empty"));
            }
            let key = (resource_type, name.clone());
            if state.configs.resources.insert(key, values).is_some() {
                return inconsistent(format!("configs of {resource_type}/{name:?} twice"));
            }
        }
    }
    if version >= VERSION_PRODUCER_IDS {
        state.producer_ids.next = reader.u64()? as i64;
        state.producer_ids.started = flag(&mut reader)?;
        let reported = reader.leaders()?;
        state.producer_ids.reported = reported.iter().copied().collect();
        if state.producer_ids.reported.len() != reported.len() {
            return inconsistent("a producer id report twice".into());
        }
        let unregistered = reader.count(4 + 8)?;
        for _ in 0..unregistered {
            let node_id = NodeId(reader.i32()?);
            if state.unregistered.insert(node_id, reader.u64()?).is_some() {
                return inconsistent(format!("node {node_id} unregistered twice"));
            }
        }
    }
    if version >= VERSION_SECURITY {
        let credentials = reader.count(2 + 1 + 4 + 2 + 2 + 2)?;
        for _ in 0..credentials {
            let user = reader.string()?;
            let mechanism = reader.mechanism()?;
            let credential = reader.credential()?;
            if state.scram.insert((user.clone(), mechanism), credential).is_some() {
                return inconsistent(format!("SCRAM credential of {user:?} twice"));
            }
        }
        let acls = reader.count(1 + 2 + 1 + 2 + 2 + 1 + 1)?;
        for _ in 0..acls {
            let acl = reader.acl()?;
            if !state.acls.insert(acl) {
                return inconsistent("an ACL twice".into());
            }
        }
    }
    if reader.left() > 0 {
        return Err(RecordError::Trailing(reader.left()).into());
    }
    Ok((SnapshotMeta { index, term, conf_state }, state))
}

fn flag(reader: &mut Reader) -> Result<bool, SnapshotError> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => inconsistent(format!("a flag of {other}")),
    }
}

fn inconsistent<T>(reason: String) -> Result<T, SnapshotError> {
    Err(SnapshotError::Inconsistent(reason))
}

/// The file name of the snapshot at `index`.
pub fn file_name(index: u64) -> String {
    format!("{index:020}{SUFFIX}")
}

/// The index a snapshot file name stands for (None: not a snapshot's name).
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes a snapshot file durably (temp, fsync, rename, directory fsync). Blocking: call
/// it on the blocking pool. An error must end the process (an fsync that failed is never
/// retried).
pub fn write(dir: &Path, index: u64, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(file_name(index));
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", file_name(index)));
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// The snapshot files in `dir` by index, newest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(index) = name.to_str().and_then(parse_file_name) {
            found.push((index, entry.path()));
        }
    }
    found.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
    Ok(found)
}

/// A snapshot loaded at start-up: its place, the state, and the file's bytes (what a
/// follower is sent).
pub struct Loaded {
    pub meta: SnapshotMeta,
    pub state: MetadataState,
    pub bytes: Vec<u8>,
}

/// Snapshot files that did not decode: path and reason.
pub type Skipped = Vec<(PathBuf, String)>;

/// Loads the newest snapshot in `dir` that decodes (and names the index its file does),
/// after removing temporary files a crash left. Files that do not decode are reported in
/// `skipped` (path and reason) and left in place. Blocking.
pub fn load_newest(dir: &Path) -> std::io::Result<(Option<Loaded>, Skipped)> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let download = name.ends_with(&format!("{SUFFIX}{DOWNLOAD_SUFFIX}"));
            if download || name.ends_with(&format!("{SUFFIX}{TEMP_SUFFIX}")) {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    let mut skipped = Vec::new();
    for (index, path) in list(dir)? {
        let bytes = std::fs::read(&path)?;
        match decode(&bytes) {
            Ok((meta, state)) if meta.index == index => {
                return Ok((Some(Loaded { meta, state, bytes }), skipped));
            }
            Ok((meta, _)) => skipped.push((path, format!("holds index {}", meta.index))),
            Err(e) => skipped.push((path, e.to_string())),
        }
    }
    Ok((None, skipped))
}

/// Writes a chunk of the snapshot at `index` being fetched at `position` of its partial file
/// `<index>.snapshot.download` (position 0 starts the file afresh). The file must end at
/// `position`: chunks come in order. No fsync: `finish_download` syncs the whole. Blocking.
pub fn write_chunk(dir: &Path, index: u64, position: u64, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(format!("{}{DOWNLOAD_SUFFIX}", file_name(index)));
    let mut file = if position == 0 {
        File::create(&path)?
    } else {
        std::fs::OpenOptions::new().append(true).open(&path)?
    };
    let length = file.metadata()?.len();
    if length != position {
        let message = format!("{} ends at {length}, not at {position}", path.display());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, message));
    }
    file.write_all(bytes)
}

/// A fetched snapshot, checked whole and durable under its partial name.
#[derive(Debug)]
pub struct Downloaded {
    pub meta: SnapshotMeta,
    pub state: MetadataState,
    pub bytes: Vec<u8>,
}

/// Checks the fetched snapshot at `index`: fsynced, `size` bytes, decodes (magic, length,
/// CRC, fields), and is the snapshot at `index` and `term`. The error says why not (the
/// caller removes the file and fetches again). Blocking.
pub fn finish_download(dir: &Path, index: u64, term: u64, size: u64) -> Result<Downloaded, String> {
    let path = dir.join(format!("{}{DOWNLOAD_SUFFIX}", file_name(index)));
    let read = || -> std::io::Result<Vec<u8>> {
        let file = File::open(&path)?;
        file.sync_all()?;
        std::fs::read(&path)
    };
    let bytes = read().map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 != size {
        return Err(format!("{} holds {} bytes, not {size}", path.display(), bytes.len()));
    }
    let (meta, state) = decode(&bytes).map_err(|e| e.to_string())?;
    if meta.index != index || meta.term != term {
        return Err(format!("it holds index {} term {}", meta.index, meta.term));
    }
    Ok(Downloaded { meta, state, bytes })
}

/// Installs the fetched snapshot at `index` under its name (rename, directory fsync), the
/// same end state as `write`. Blocking.
pub fn install_download(dir: &Path, index: u64) -> std::io::Result<PathBuf> {
    let path = dir.join(file_name(index));
    std::fs::rename(dir.join(format!("{}{DOWNLOAD_SUFFIX}", file_name(index))), &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Removes every partial snapshot file (a fetch abandoned or started over). Blocking.
pub fn remove_downloads(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(&format!("{SUFFIX}{DOWNLOAD_SUFFIX}")) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the snapshot files older than the newest `keep`. Blocking.
pub fn remove_older(dir: &Path, keep: usize) -> std::io::Result<usize> {
    let mut removed = 0;
    for (_, path) in list(dir)?.into_iter().skip(keep) {
        std::fs::remove_file(path)?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::cluster::records::{Election, FenceReason, MetadataRecord, STRING_BYTES_MAX};

    fn meta(index: u64) -> SnapshotMeta {
        let conf_state = ConfState { voters: vec![1, 2, 3], ..Default::default() };
        SnapshotMeta { index, term: 7, conf_state }
    }

    /// A random record over a few brokers, topics and ids, so that records often meet the
    /// state they need (existing topics, current epochs) and often do not.
    fn random_record(rng: &mut StdRng, state: &MetadataState) -> Option<MetadataRecord> {
        let node = |rng: &mut StdRng| NodeId(rng.gen_range(1..=4));
        let name = |rng: &mut StdRng| format!("t{}", rng.gen_range(0..6));
        let request = |rng: &mut StdRng| RequestId {
            node_id: NodeId(rng.gen_range(1..=3)),
            serial: rng.gen_range(0..40),
        };
        let epoch = |rng: &mut StdRng, state: &MetadataState, id: NodeId| {
            let current = state.brokers.get(&id).map(|b| b.epoch).unwrap_or(0);
            if rng.gen_bool(0.8) {
                current
            } else {
                rng.gen_range(0..50)
            }
        };
        let sets = |rng: &mut StdRng, count: usize| -> Vec<Vec<NodeId>> {
            (0..count)
                .map(|_| {
                    let first = rng.gen_range(1..=4);
                    let size = rng.gen_range(1..=2);
                    (0..size).map(|k| NodeId((first + k - 1) % 4 + 1)).collect()
                })
                .collect()
        };
        let record = match rng.gen_range(0..26) {
            0 => return None,
            22 | 23 => {
                use crate::security::scram::{Credential, Mechanism};
                let user = format!("u{}", rng.gen_range(0..3));
                let mechanism = [Mechanism::Sha256, Mechanism::Sha512][rng.gen_range(0..2)];
                if rng.gen_bool(0.3) {
                    MetadataRecord::RemoveScramCredential { request: request(rng), user, mechanism }
                } else {
                    let key = |rng: &mut StdRng| vec![rng.gen_range(0..4u8); rng.gen_range(1..4)];
                    let credential = Credential {
                        salt: key(rng),
                        stored_key: key(rng),
                        server_key: key(rng),
                        iterations: 4096,
                    };
                    let if_absent = rng.gen_bool(0.5);
                    let request = request(rng);
                    MetadataRecord::ScramCredential {
                        request,
                        user,
                        mechanism,
                        credential,
                        if_absent,
                    }
                }
            }
            24 | 25 => {
                use crate::security::acl::{
                    AclBinding, Operation, PatternType, Permission, ResourceType,
                };
                let acl = AclBinding {
                    resource_type: [ResourceType::Topic, ResourceType::Group][rng.gen_range(0..2)],
                    name: name(rng),
                    pattern: [PatternType::Literal, PatternType::Prefixed][rng.gen_range(0..2)],
                    principal: format!("User:u{}", rng.gen_range(0..3)),
                    host: "*".into(),
                    operation: [Operation::Read, Operation::Write][rng.gen_range(0..2)],
                    permission: [Permission::Allow, Permission::Deny][rng.gen_range(0..2)],
                };
                match rng.gen_bool(0.3) {
                    true => MetadataRecord::RemoveAccessControlEntry { request: request(rng), acl },
                    false => MetadataRecord::AccessControlEntry { request: request(rng), acl },
                }
            }
            21 => MetadataRecord::UnregisterBroker { request: request(rng), node_id: node(rng) },
            20 => MetadataRecord::ProducerIds {
                request: request(rng),
                legacy_end: rng.gen_range(0..3) * 1024,
                block_size: 1000,
            },
            1 => MetadataRecord::LeaderChange { leader_id: node(rng), term: rng.gen_range(0..9) },
            2 => MetadataRecord::RegisterBroker {
                node_id: node(rng),
                host: format!("h{}", rng.gen_range(0..3)),
                port: rng.gen_range(9000..9003),
                incarnation: rng.gen_range(0..4),
                rack: match rng.gen_range(0..3) {
                    0 => None,
                    r => Some(format!("rack-{r}")),
                },
            },
            3 => MetadataRecord::ClusterId { cluster_id: format!("c{}", rng.gen_range(0..3)) },
            4 | 5 => {
                let id = node(rng);
                let broker_epoch = epoch(rng, state, id);
                MetadataRecord::UnfenceBroker { node_id: id, broker_epoch }
            }
            6 => {
                let id = node(rng);
                let broker_epoch = epoch(rng, state, id);
                let reason = FenceReason::SessionExpired;
                MetadataRecord::FenceBroker { node_id: id, broker_epoch, reason }
            }
            7 | 8 => {
                let partitions = rng.gen_range(0..4);
                MetadataRecord::CreateTopic {
                    request: request(rng),
                    name: name(rng),
                    topic_id: [rng.gen_range(0..8); 16],
                    replicas: sets(rng, partitions),
                    overrides: BTreeMap::from([("a".into(), format!("{}", rng.gen::<u8>()))]),
                }
            }
            9 => MetadataRecord::DeleteTopic { request: request(rng), name: name(rng) },
            10 => {
                let name = name(rng);
                let current = state.topics.get(&name).map_or(1, |t| t.partitions.len());
                let added = rng.gen_range(0..3);
                MetadataRecord::CreatePartitions {
                    request: request(rng),
                    name,
                    count: (current + added) as i32,
                    replicas: sets(rng, added),
                }
            }
            11 => MetadataRecord::AlterTopicConfig {
                request: request(rng),
                name: name(rng),
                overrides: BTreeMap::from([("b".into(), "1".into())]),
            },
            12 => MetadataRecord::InternalTopic {
                name: format!("__i{}", rng.gen_range(0..2)),
                leaders: (0..rng.gen_range(0..3)).map(|_| node(rng)).collect(),
            },
            13 | 14 => MetadataRecord::AlterReassignment {
                request: request(rng),
                name: name(rng),
                partition: rng.gen_range(0..3),
                allow_factor_change: rng.gen_bool(0.8),
                target: rng.gen_bool(0.8).then(|| sets(rng, 1).remove(0)),
            },
            16 => MetadataRecord::AlterConfigs {
                request: request(rng),
                resource_type: if rng.gen_bool(0.5) { 4 } else { 32 },
                name: format!("{}", rng.gen_range(0..3)),
                configs: match rng.gen_range(0..3) {
                    0 => BTreeMap::new(),
                    n => BTreeMap::from([("c".into(), format!("{n}"))]),
                },
            },
            17 | 18 => {
                // A leader's ISR change, mostly in the partition's current epochs (so that
                // partition epochs move apart from leader epochs).
                let topic = state.topics.values().nth(rng.gen_range(0..6));
                let partition: i32 = rng.gen_range(0..3);
                let current = topic.and_then(|t| t.partitions.get(partition as usize));
                let (leader, leader_epoch, partition_epoch) = match current {
                    Some(p) if rng.gen_bool(0.8) => (p.leader, p.leader_epoch, p.partition_epoch),
                    _ => (
                        node(rng),
                        LeaderEpoch(rng.gen_range(0..3)),
                        PartitionEpoch(rng.gen_range(0..3)),
                    ),
                };
                let mut isr = vec![leader];
                isr.extend((0..rng.gen_range(0..2)).map(|_| node(rng)).filter(|id| *id != leader));
                MetadataRecord::AlterPartition {
                    topic_id: topic.map_or([0; 16], |t| t.topic_id),
                    partition,
                    leader,
                    leader_epoch,
                    partition_epoch,
                    isr,
                }
            }
            15 => MetadataRecord::ElectLeader {
                request: request(rng),
                name: name(rng),
                partition: rng.gen_range(0..3),
                election: if rng.gen_bool(0.5) { Election::Preferred } else { Election::Unclean },
            },
            _ => {
                // Mostly the changes the state calls for (so leaders and ISRs move).
                let changes = state.partition_changes();
                if !changes.is_empty() && rng.gen_bool(0.7) {
                    changes[rng.gen_range(0..changes.len())].clone()
                } else {
                    MetadataRecord::PartitionChange {
                        topic_id: [rng.gen_range(0..8); 16],
                        partition: rng.gen_range(0..3),
                        leader: node(rng),
                        leader_epoch: LeaderEpoch(rng.gen_range(0..3)),
                        partition_epoch: PartitionEpoch(rng.gen_range(0..3)),
                        isr: vec![node(rng)],
                    }
                }
            }
        };
        Some(record)
    }

    /// Applies `count` random records after `state`'s index.
    fn apply_random(rng: &mut StdRng, state: &mut MetadataState, count: usize) {
        for _ in 0..count {
            let record = random_record(rng, state);
            // Through the codec, as the driver applies them.
            let record = record.map(|r| MetadataRecord::decode(&r.encode()).unwrap());
            let index = state.applied_index + 1;
            state.apply(index, record.as_ref());
        }
    }

    #[test]
    fn a_state_built_from_random_records_round_trips_and_evolves_alike() {
        let seed: u64 = std::env::var("SPATE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("seed {seed} (SPATE_SEED={seed} replays it)");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut populated = 0;
        for trial in 0..300 {
            let mut state = MetadataState::default();
            let count = rng.gen_range(0..400);
            apply_random(&mut rng, &mut state, count);
            let meta = meta(state.applied_index);
            let bytes = encode(&meta, &state);
            let (decoded_meta, mut decoded) = decode(&bytes).expect("decodes");
            assert_eq!(decoded_meta, meta, "seed {seed} trial {trial}");
            assert_eq!(decoded, state, "seed {seed} trial {trial}");
            assert_eq!(encode(&decoded_meta, &decoded), bytes, "seed {seed} trial {trial}");
            populated += usize::from(!state.topics.is_empty() && !state.brokers.is_empty());
            // The same further records on both: still equal.
            let further: u64 = rng.gen();
            apply_random(&mut StdRng::seed_from_u64(further), &mut state, 200);
            apply_random(&mut StdRng::seed_from_u64(further), &mut decoded, 200);
            assert_eq!(decoded, state, "seed {seed} trial {trial} after more records");
        }
        // The generator reaches interesting states, not only empty ones.
        assert!(populated > 100, "only {populated} states with topics and brokers");
    }

    #[test]
    fn remembered_requests_survive_a_snapshot_and_still_deduplicate() {
        let mut state = MetadataState::default();
        let register = MetadataRecord::RegisterBroker {
            node_id: NodeId(1),
            host: "h".into(),
            port: 1,
            incarnation: 5,
            rack: None,
        };
        state.apply(1, Some(&register));
        let create = MetadataRecord::CreateTopic {
            request: RequestId { node_id: NodeId(1), serial: 9 },
            name: "t".into(),
            topic_id: [3; 16],
            replicas: vec![vec![NodeId(1)]],
            overrides: BTreeMap::new(),
        };
        state.apply(2, Some(&create));
        let (_, mut decoded) = decode(&encode(&meta(2), &state)).unwrap();
        let delete = MetadataRecord::DeleteTopic {
            request: RequestId { node_id: NodeId(1), serial: 10 },
            name: "t".into(),
        };
        decoded.apply(3, Some(&delete));
        // The create's retry after the snapshot is still recognised.
        assert!(!decoded.apply(4, Some(&create)).changed);
        assert!(decoded.topics.is_empty());
        // The same registration again is still a repeat.
        assert!(!decoded.apply(5, Some(&register)).changed);
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_an_error() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut state = MetadataState::default();
        apply_random(&mut rng, &mut state, 300);
        let bytes = encode(&meta(state.applied_index), &state);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            assert!(decode(&flipped).is_err(), "flipped at {position}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(SnapshotError::Length { .. })));
    }

    /// A body with a good header and CRC whose fields lie: errors, never panics.
    #[test]
    fn garbage_bodies_with_good_crcs_are_errors() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let length = rng.gen_range(0..200);
            let mut body: Vec<u8> = (0..length).map(|_| rng.gen()).collect();
            if rng.gen_bool(0.5) && body.len() > 40 {
                // Small counts, so decoding goes deeper.
                for byte in body.iter_mut().skip(16).step_by(3) {
                    *byte %= 3;
                }
            }
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            bytes.extend_from_slice(&body);
            let _ = decode(&bytes);
        }
        // Two copies of one topic id are refused.
        let mut state = MetadataState { applied_index: 1, ..Default::default() };
        let topic =
            TopicState { topic_id: [1; 16], partitions: vec![], overrides: BTreeMap::new() };
        state.topics.insert("a".into(), topic.clone());
        state.topics.insert("b".into(), topic);
        let error = decode(&encode(&meta(1), &state)).unwrap_err();
        assert!(matches!(error, SnapshotError::Inconsistent(_)), "{error}");
    }

    /// Config values longer than a u16 string make the snapshot version 6 (long strings);
    /// without them it stays the version the previous one wrote.
    #[test]
    fn long_config_values_are_kept_whole_in_version_6() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut state = MetadataState::default();
        apply_random(&mut rng, &mut state, 200);
        // Credentials or ACLs make it version 7 (below); this test is of the configs.
        let (scram, acls) = (std::mem::take(&mut state.scram), std::mem::take(&mut state.acls));
        assert!(!scram.is_empty() || !acls.is_empty(), "the random records made none");
        let with_security = MetadataState { scram, acls, ..state.clone() };
        let bytes = encode(&meta(state.applied_index), &with_security);
        assert_eq!(bytes[4], VERSION_SECURITY);
        assert_eq!(decode(&bytes).expect("decodes").1, with_security);
        let without = encode(&meta(state.applied_index), &state);
        assert!(without[4] < VERSION_LONG_VALUES, "version {}", without[4]);
        let long = "y".repeat(STRING_BYTES_MAX + 10);
        let topic =
            TopicState { topic_id: [9; 16], partitions: vec![], overrides: BTreeMap::new() };
        state.topic_names.insert(topic.topic_id, "long".into());
        state.topics.insert("long".into(), topic);
        let mut expected = state.clone();
        let long_topic = state.topics.get_mut("long").unwrap();
        long_topic.overrides.insert("leader.replication.throttled.replicas".into(), long.clone());
        let broker_config = BTreeMap::from([("custom.long".to_string(), long.clone())]);
        state.configs.resources.insert((4, String::new()), broker_config);
        let bytes = encode(&meta(state.applied_index), &state);
        assert_eq!(bytes[4], VERSION_LONG_VALUES);
        let (_, decoded) = decode(&bytes).expect("decodes");
        assert_eq!(decoded, state);
        for cut in [HEADER_BYTES, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A value at the bound still fits a string: the earlier version.
        let at_bound = "z".repeat(STRING_BYTES_MAX);
        let long_topic = expected.topics.get_mut("long").unwrap();
        long_topic.overrides.insert("a".into(), at_bound);
        let bytes = encode(&meta(expected.applied_index), &expected);
        assert!(bytes[4] < VERSION_LONG_VALUES, "version {}", bytes[4]);
        assert_eq!(decode(&bytes).expect("decodes").1, expected);
    }

    #[test]
    fn files_are_written_whole_and_the_newest_valid_one_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (loaded, _) = load_newest(dir.path()).unwrap();
        assert!(loaded.is_none());
        let mut rng = StdRng::seed_from_u64(5);
        let mut state = MetadataState::default();
        apply_random(&mut rng, &mut state, 50);
        let older = state.clone();
        write(dir.path(), 50, &encode(&meta(50), &state)).unwrap();
        apply_random(&mut rng, &mut state, 50);
        let newest = write(dir.path(), 100, &encode(&meta(100), &state)).unwrap();
        // A crash inside a write leaves only a temporary file: removed, never loaded.
        let temp = dir.path().join(format!("{}{TEMP_SUFFIX}", file_name(150)));
        std::fs::write(&temp, b"SPMS partial").unwrap();
        let (loaded, skipped) = load_newest(dir.path()).unwrap();
        let loaded = loaded.unwrap();
        assert_eq!((loaded.meta.index, &loaded.state), (100, &state));
        assert!(skipped.is_empty());
        assert!(!temp.exists());
        // A damaged newest file: the older one is loaded and the damage reported.
        let mut bytes = std::fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        let (loaded, skipped) = load_newest(dir.path()).unwrap();
        assert_eq!(loaded.unwrap().state, older);
        assert_eq!(skipped.len(), 1);
        assert_eq!(remove_older(dir.path(), 1).unwrap(), 1);
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("42.snapshot"), None);
        assert_eq!(parse_file_name("journal"), None);
    }

    #[test]
    fn a_fetched_snapshot_is_written_in_chunks_checked_whole_and_installed_by_rename() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let mut state = MetadataState::default();
        apply_random(&mut rng, &mut state, 80);
        let bytes = encode(&meta(80), &state);
        let partial = dir.path().join(format!("{}{DOWNLOAD_SUFFIX}", file_name(80)));
        for chunk in [1, 7, bytes.len()] {
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                write_chunk(dir.path(), 80, (i * chunk) as u64, piece).unwrap();
            }
            let size = bytes.len() as u64;
            let done = finish_download(dir.path(), 80, 7, size).unwrap();
            assert_eq!((done.meta.index, &done.state, &done.bytes), (80, &state, &bytes));
        }
        // A chunk out of order is refused; position 0 starts the file again.
        assert!(write_chunk(dir.path(), 80, 3, &bytes[3..9]).is_err());
        write_chunk(dir.path(), 80, 0, &bytes[..5]).unwrap();
        assert_eq!(std::fs::metadata(&partial).unwrap().len(), 5);
        // Short, damaged or another snapshot's bytes: errors naming why.
        let size = bytes.len() as u64;
        assert!(finish_download(dir.path(), 80, 7, size).unwrap_err().contains("holds 5 bytes"));
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        std::fs::write(&partial, &damaged).unwrap();
        assert!(finish_download(dir.path(), 80, 7, size).unwrap_err().contains("CRC"));
        std::fs::write(&partial, &bytes).unwrap();
        assert!(finish_download(dir.path(), 80, 8, size).unwrap_err().contains("term 7"));
        assert!(finish_download(dir.path(), 81, 7, size).is_err());
        // Installed: the snapshot under its name, loaded at the next start.
        install_download(dir.path(), 80).unwrap();
        assert!(!partial.exists());
        let (loaded, _) = load_newest(dir.path()).unwrap();
        assert_eq!(loaded.unwrap().state, state);
        // Partial files are removed when a fetch starts over, and at start.
        write_chunk(dir.path(), 90, 0, b"SPMS").unwrap();
        assert_eq!(remove_downloads(dir.path()).unwrap(), 1);
        write_chunk(dir.path(), 90, 0, b"SPMS").unwrap();
        load_newest(dir.path()).unwrap();
        assert_eq!(remove_downloads(dir.path()).unwrap(), 0);
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }
}
