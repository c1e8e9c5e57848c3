//! The topic catalog: names, ids, partition counts and config overrides.
//!
//! Shard 0 is the controller: it alone changes the catalog and writes it to
//! `<data dir>/__spate_meta/topics.toml` (write to a temporary file, fsync, rename), then
//! sends the change to every shard, which applies it to its own copy and opens or deletes the
//! logs it owns. Every shard reads its copy without locks; it is at most one broadcast behind.
//! Clustered, the catalog comes from the metadata log instead (`controller::quorum` applies
//! the committed topics, with each partition's leader) and the file is neither read nor
//! written; its cluster id is not used.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::dynamic_config::{self, DynamicConfigs};
use crate::model::topic::TopicConfig;
use crate::model::{LeaderEpoch, NodeId, PartitionEpoch, TopicPartition};
use crate::shard::internal_log::INTERNAL_TOPICS;

pub const META_DIR: &str = "__spate_meta";
const CATALOG_FILE: &str = "topics.toml";

/// One topic as every shard knows it. Cheap to clone and send across cores.
#[derive(Debug, Clone)]
pub struct TopicMeta {
    pub name: Arc<str>,
    pub id: [u8; 16],
    pub partitions: i32,
    /// Configs set explicitly for this topic (Kafka names); the rest are broker defaults.
    pub overrides: BTreeMap<String, String>,
    /// Effective configs: defaults with the overrides applied.
    pub config: TopicConfig,
    /// Clustered: each partition's replicas, in-sync replicas, leader and leader epoch, by
    /// partition index, as the metadata log says. Empty on a single node, which leads every
    /// partition.
    pub leaders: Arc<[PartitionLeader]>,
}

/// A partition's placement and leadership on a clustered node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    /// Where it was placed, the preferred leader first.
    pub replicas: Arc<[NodeId]>,
    /// The in-sync replicas.
    pub isr: Arc<[NodeId]>,
    /// NONE: no leader (no in-sync replica is unfenced).
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    /// Moves with every change of the partition on the metadata log (the ISR's too, which
    /// leave the leader epoch): what the leader's ISR changes are based on.
    pub partition_epoch: PartitionEpoch,
    /// A reassignment in progress: the replicas it adds and removes (both in `replicas`);
    /// empty when none is.
    pub adding: Arc<[NodeId]>,
    pub removing: Arc<[NodeId]>,
}

impl PartitionLeader {
    /// Whether `node` keeps a copy of the partition (leads or follows it).
    pub fn is_replica(&self, node: NodeId) -> bool {
        self.replicas.contains(&node)
    }
}

impl TopicMeta {
    /// The leadership of `partition` (None: this node, on a single node).
    pub fn placement(&self, partition: i32) -> Option<&PartitionLeader> {
        usize::try_from(partition).ok().and_then(|index| self.leaders.get(index))
    }

    /// Whether `node` keeps a copy of `partition` (every partition on a single node).
    pub fn has_replica_on(&self, partition: i32, node: NodeId) -> bool {
        self.placement(partition).is_none_or(|placement| placement.is_replica(node))
    }

    /// Whether `partition` has replicas beyond its leader (never on a single node).
    pub fn is_replicated(&self, partition: i32) -> bool {
        self.placement(partition).is_some_and(|placement| placement.replicas.len() > 1)
    }

    /// The leader of `partition` (None: this node, on a single node; NONE: no leader).
    pub fn leader(&self, partition: i32) -> Option<NodeId> {
        self.placement(partition).map(|placement| placement.leader)
    }

    /// Whether `node` leads `partition` (every partition on a single node).
    pub fn is_led_by(&self, partition: i32, node: NodeId) -> bool {
        self.leaders.is_empty() || self.leader(partition) == Some(node)
    }

    /// Whether this is a cluster's replicated internal topic (`__consumer_offsets`): on the
    /// metadata log and replicated like any topic, but not listed in Metadata, not produced
    /// to and not changed by clients, as on a single node, where it is no topic at all.
    pub fn is_internal(&self) -> bool {
        INTERNAL_TOPICS.contains(&&*self.name)
    }

    /// Whether `partition` exists and another node than `node` leads it: a request for it
    /// here is NOT_LEADER_OR_FOLLOWER.
    pub fn led_elsewhere(&self, partition: i32, node: NodeId) -> bool {
        (0..self.partitions).contains(&partition) && !self.is_led_by(partition, node)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub cluster_id: String,
    pub topics: BTreeMap<Arc<str>, TopicMeta>,
    /// The dynamic configs of broker and group resources.
    pub configs: DynamicConfigs,
    by_id: HashMap<[u8; 16], Arc<str>>,
}

#[derive(Serialize, Deserialize, Default)]
struct CatalogFile {
    cluster_id: String,
    #[serde(default)]
    topics: Vec<TopicRecord>,
    #[serde(default)]
    configs: Vec<ConfigsRecord>,
}

#[derive(Serialize, Deserialize)]
struct ConfigsRecord {
    resource_type: i8,
    name: String,
    #[serde(default)]
    values: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// The leader of `tp` when that is a node other than `me` (None: `me` leads it, or no
    /// leader or topic is known).
    pub fn leader_other_than(&self, tp: &TopicPartition, me: NodeId) -> Option<NodeId> {
        let leader = self.get(&tp.topic).and_then(|meta| meta.leader(tp.partition));
        leader.filter(|leader| *leader != me)
    }

    pub fn name_of(&self, id: &[u8; 16]) -> Option<Arc<str>> {
        self.by_id.get(id).cloned()
    }

    pub fn apply(&mut self, meta: TopicMeta) {
        self.by_id.insert(meta.id, meta.name.clone());
        self.topics.insert(meta.name.clone(), meta);
    }

    pub fn remove(&mut self, name: &str) -> Option<TopicMeta> {
        let meta = self.topics.remove(name)?;
        self.by_id.remove(&meta.id);
        Some(meta)
    }

    /// The topic defaults of node `node`: `static_defaults` under the dynamic log configs.
    pub fn topic_defaults(&self, static_defaults: &TopicConfig, node: NodeId) -> TopicConfig {
        dynamic_config::topic_defaults(static_defaults, &self.configs, node)
    }

    /// Loads the catalog, or starts a new one with a fresh cluster id. Topics whose stored
    /// configs no longer validate keep the defaults for those keys, with a warning.
    /// `defaults` are node `node`'s static topic defaults (the file's dynamic broker configs
    /// go on top of them).
    pub fn load(data_dir: &Path, defaults: &TopicConfig, node: NodeId) -> std::io::Result<Catalog> {
        let path = catalog_path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Catalog::parse(&text, defaults, node)
                .map_err(|e| std::io::Error::other(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = CatalogFile { cluster_id: new_cluster_id(), ..CatalogFile::default() };
                Ok(Catalog::from_file(file, defaults, node))
            }
            // Not UTF-8 (damaged bytes) or unreadable: the message names the file, as above.
            Err(e) => {
                let message = format!("{} cannot be read: {e}", path.display());
                Err(std::io::Error::new(e.kind(), message))
            }
        }
    }

    /// The catalog in the text of a catalog file (pure; `load` reads the file).
    pub fn parse(
        text: &str,
        defaults: &TopicConfig,
        node: NodeId,
    ) -> Result<Catalog, toml::de::Error> {
        Ok(Catalog::from_file(toml::from_str(text)?, defaults, node))
    }

    fn from_file(file: CatalogFile, static_defaults: &TopicConfig, node: NodeId) -> Catalog {
        let mut catalog = Catalog { cluster_id: file.cluster_id, ..Catalog::default() };
        for record in file.configs {
            catalog.configs.set(record.resource_type, &record.name, record.values);
        }
        let defaults = &catalog.topic_defaults(static_defaults, node);
        for record in file.topics {
            let id = parse_id(&record.id).unwrap_or_else(|| *uuid::Uuid::new_v4().as_bytes());
            let config = defaults.with_overrides(&record.configs).unwrap_or_else(|e| {
                tracing::warn!(
                    topic = record.name,
                    "stored topic configs are invalid ({e}); using defaults"
                );
                defaults.clone()
            });
            catalog.apply(TopicMeta {
                name: record.name.into(),
                id,
                partitions: record.partitions,
                overrides: record.configs,
                config,
                leaders: Arc::from([]),
            });
        }
        catalog
    }

    /// Serialised form, written by the controller through `write_file`.
    pub fn to_file_text(&self) -> String {
        let file = CatalogFile {
            cluster_id: self.cluster_id.clone(),
            topics: self
                .topics
                .values()
                .map(|t| TopicRecord {
                    name: t.name.to_string(),
                    id: uuid::Uuid::from_bytes(t.id).to_string(),
                    partitions: t.partitions,
                    configs: t.overrides.clone(),
                })
                .collect(),
            configs: self
                .configs
                .resources
                .iter()
                .map(|((resource_type, name), values)| ConfigsRecord {
                    resource_type: *resource_type,
                    name: name.clone(),
                    values: values.clone(),
                })
                .collect(),
        };
        toml::to_string(&file).unwrap_or_default()
    }
}

/// Writes the catalog durably: temporary file, fsync, rename, fsync of the directory.
/// Blocking; the controller runs it on a helper thread.
pub fn write_file(data_dir: &Path, text: String) -> std::io::Result<()> {
    use std::io::Write;
    let dir = data_dir.join(META_DIR);
    std::fs::create_dir_all(&dir)?;
    let temporary = dir.join(format!("{CATALOG_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, catalog_path(data_dir))?;
    std::fs::File::open(&dir)?.sync_all()
}

pub fn catalog_path(data_dir: &Path) -> PathBuf {
    data_dir.join(META_DIR).join(CATALOG_FILE)
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 chars).
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4();
    let mut bits: u128 = u128::from_be_bytes(*bytes.as_bytes());
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    out
}

fn parse_id(text: &str) -> Option<[u8; 16]> {
    uuid::Uuid::parse_str(text).ok().map(|u| *u.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::topic::{Durability, TimestampType};

    fn defaults() -> TopicConfig {
        TopicConfig {
            segment_bytes: 1 << 20,
            segment_ms: 1000,
            retention_ms: -1,
            retention_bytes: -1,
            max_message_bytes: 1 << 16,
            timestamp_type: TimestampType::CreateTime,
            durability: Durability::Write,
            min_insync_replicas: 1,
            cleanup: Default::default(),
            delivery_delay_ms: -1,
            dead_letter_group_enable: false,
        }
    }

    #[test]
    fn catalog_survives_a_write_and_a_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::load(dir.path(), &defaults(), NodeId(1)).expect("new");
        assert_eq!(catalog.cluster_id.len(), 22);
        let overrides = BTreeMap::from([("retention.ms".to_string(), "5000".to_string())]);
        let config = defaults().with_overrides(&overrides).expect("valid");
        catalog.apply(TopicMeta {
            name: "a".into(),
            id: [1; 16],
            partitions: 3,
            overrides,
            config,
            leaders: Arc::from([]),
        });
        let dynamic = BTreeMap::from([("log.retention.ms".to_string(), "7000".to_string())]);
        catalog.configs.set(dynamic_config::RESOURCE_BROKER, "", dynamic);
        let group = BTreeMap::from([("consumer.session.timeout.ms".to_string(), "50000".into())]);
        catalog.configs.set(dynamic_config::RESOURCE_GROUP, "g", group);
        catalog.apply(TopicMeta {
            name: "b".into(),
            id: [2; 16],
            partitions: 1,
            overrides: BTreeMap::new(),
            config: defaults(),
            leaders: Arc::from([]),
        });
        write_file(dir.path(), catalog.to_file_text()).expect("write");
        let loaded = Catalog::load(dir.path(), &defaults(), NodeId(1)).expect("load");
        assert_eq!(loaded.configs, catalog.configs);
        // The dynamic default applies to the topic without an override, not to the other.
        assert_eq!(loaded.get("b").expect("topic b").config.retention_ms, 7000);
        assert_eq!(loaded.cluster_id, catalog.cluster_id);
        let topic = loaded.get("a").expect("topic");
        assert_eq!(topic.partitions, 3);
        assert_eq!(topic.config.retention_ms, 5000);
        assert_eq!(loaded.name_of(&[1; 16]).as_deref(), Some("a"));
    }

    #[test]
    fn the_leader_other_than_a_node_is_none_for_its_own_and_unknown_partitions() {
        let led_by = |leader: i32| PartitionLeader {
            replicas: Arc::from([NodeId(1), NodeId(2)]),
            isr: Arc::from([NodeId(1), NodeId(2)]),
            leader: NodeId(leader),
            leader_epoch: LeaderEpoch(1),
            partition_epoch: PartitionEpoch(1),
            adding: Arc::from([]),
            removing: Arc::from([]),
        };
        let mut catalog = Catalog::default();
        catalog.apply(TopicMeta {
            name: "t".into(),
            id: [3; 16],
            partitions: 2,
            overrides: BTreeMap::new(),
            config: defaults(),
            leaders: Arc::from([led_by(1), led_by(2)]),
        });
        let tp = |topic: &str, partition| TopicPartition::new(topic.into(), partition);
        assert_eq!(catalog.leader_other_than(&tp("t", 0), NodeId(1)), None);
        assert_eq!(catalog.leader_other_than(&tp("t", 1), NodeId(1)), Some(NodeId(2)));
        assert_eq!(catalog.leader_other_than(&tp("t", 1), NodeId(2)), None);
        assert_eq!(catalog.leader_other_than(&tp("t", 2), NodeId(1)), None);
        assert_eq!(catalog.leader_other_than(&tp("gone", 0), NodeId(1)), None);
    }

    #[test]
    fn a_damaged_catalog_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = catalog_path(dir.path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("meta dir");
        for damage in [&b"cluster_id = \"x\"\n[[topi"[..], &b"cluster_id = \"\xff\xfe\"\n"[..]] {
            std::fs::write(&path, damage).expect("write");
            let Err(e) = Catalog::load(dir.path(), &defaults(), NodeId(1)) else {
                panic!("a damaged catalog loaded")
            };
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
    }
}
