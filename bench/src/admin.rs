//! Topic set-up and offset queries, through the Admin API and ListOffsets, before load starts.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;

/// How long one metadata or admin request may take before the run gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a newly created topic may take to get a leader for every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC_READY_POLL: Duration = Duration::from_millis(100);

pub fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config.set("client.id", "spate-bench");
    // The broker may advertise `localhost`; librdkafka could then try ::1 first.
    config.set("broker.address.family", "v4");
    config
}

/// Creates `topic` with `partitions` partitions unless it exists; returns its partition count.
pub fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
) -> Result<i32, String> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap)
        .create()
        .map_err(|e| format!("cannot create an admin client for {bootstrap}: {e}"))?;
    // Asking for all topics never auto-creates one, unlike a metadata request naming it.
    let metadata = admin
        .inner()
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map_err(|e| format!("cannot fetch metadata from {bootstrap}: {e}"))?;
    if let Some(existing) = partition_count(&metadata, topic) {
        if existing != partitions {
            eprintln!(
                "note: topic {topic} already exists with {existing} partitions \
                 (not {partitions}); using it as it is"
            );
        }
        return Ok(existing);
    }
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication_factor));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics([&new_topic], &options))
        .map_err(|e| format!("CreateTopics for {topic} failed: {e}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("CreateTopics for {name} failed: {code}")),
        }
    }
    wait_for_leaders(&admin, topic, partitions)
}

/// Deletes `topic` (DeleteTopics); for runs whose data should not outlive them.
pub fn delete_topic(bootstrap: &str, topic: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap)
        .create()
        .map_err(|e| format!("cannot create an admin client for {bootstrap}: {e}"))?;
    let options = AdminOptions::new()
        .operation_timeout(Some(REQUEST_TIMEOUT))
        .request_timeout(Some(REQUEST_TIMEOUT));
    let results = futures_executor::block_on(admin.delete_topics(&[topic], &options))
        .map_err(|e| format!("DeleteTopics for {topic} failed: {e}"))?;
    for result in results {
        if let Err((name, code)) = result {
            return Err(format!("DeleteTopics for {name} failed: {code}"));
        }
    }
    Ok(())
}

fn partition_count(metadata: &Metadata, topic: &str) -> Option<i32> {
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
}

fn wait_for_leaders(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
) -> Result<i32, String> {
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        if let Ok(metadata) = admin.inner().fetch_metadata(None, REQUEST_TIMEOUT) {
            let ready = metadata.topics().iter().find(|t| t.name() == topic).and_then(|t| {
                let all_led = t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none());
                (t.error().is_none() && all_led).then(|| t.partitions().len() as i32)
            });
            if let Some(count) = ready.filter(|count| *count >= partitions) {
                return Ok(count);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "topic {topic} was created but did not get a leader for every partition within \
                 {} s",
                TOPIC_READY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(TOPIC_READY_POLL);
    }
}

/// (low, high) watermark of every partition of `topic`, in partition order.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i64, i64)>, String> {
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                .map_err(|e| format!("ListOffsets for {topic}/{p} failed: {e}"))
        })
        .collect()
}
