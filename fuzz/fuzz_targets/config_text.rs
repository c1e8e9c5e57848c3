//! Text the broker reads as configuration: the topic catalog of a data dir (`topics.toml`),
//! the config file, topic config overrides as CreateTopics and AlterConfigs pass them, and
//! the controller quorum's voter list.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use spate::model::quorum::QuorumVoters;
use spate::model::topic::{Durability, TimestampType, TopicConfig};
use spate::shard::catalog::Catalog;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    // Spate's own defaults, then a few that make the catalog's and the overrides' paths
    // differ from them (so a new TopicConfig field needs no change here).
    let defaults = TopicConfig {
        segment_bytes: 1 << 30,
        retention_bytes: -1,
        timestamp_type: TimestampType::CreateTime,
        durability: Durability::Write,
        ..TopicConfig::spate_defaults()
    };
    match which % 4 {
        0 => {
            let _ = Catalog::parse(text, &defaults, spate::model::NodeId(1));
        }
        1 => {
            let _ = spate::config::check_file_text(text);
        }
        2 => {
            // Lines of `key=value`, as a CreateTopics request's configs.
            let overrides: BTreeMap<String, String> = text
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let _ = defaults.with_overrides(&overrides);
        }
        _ => {
            let _ = QuorumVoters::parse(text);
        }
    }
});
