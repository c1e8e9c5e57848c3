//! Spate: a thread-per-core, Kafka-compatible message broker on io_uring.
//!
//! Layering, bottom to top (a module never imports one above it; `tests/tidy.rs` checks):
//! `model` -> `protocol`, `storage` -> `shard`, `group`, `txn` -> `api` -> `net` -> `broker`
//! (start-up).
//! See docs/ARCHITECTURE.md for the request paths.

pub mod api;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod constants;
pub mod controller;
pub mod fatal;
pub mod group;
pub mod host_check;
pub mod metrics;
pub mod model;
pub mod net;
pub mod partition;
pub mod protocol;
pub mod replication;
pub mod scrape;
pub mod security;
pub mod shard;
pub mod storage;
pub mod throttle;
pub mod txn;
pub mod wheel;
