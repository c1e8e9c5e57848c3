//! Every limit and default in one place, with compile-time checks on how they relate.
//!
//! Units come last in a name (`_bytes`, `_ms`); a `_max` suffix is an upper bound that the
//! broker enforces, a `_default` suffix is what a user gets without configuring anything.

/// Largest request frame we accept before reading its body (Kafka's `socket.request.max.bytes`).
pub const FRAME_SIZE_BYTES_MAX_DEFAULT: u32 = 100 * 1024 * 1024;

/// Largest record batch a producer may send (Kafka's `message.max.bytes` default, 1 MiB + 12).
pub const MESSAGE_SIZE_BYTES_MAX_DEFAULT: u32 = 1024 * 1024 + 12;

/// Kafka's default segment size, 1 GiB.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;

/// Smallest segment size a topic may configure; keeps the number of files sane.
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 64 * 1024;

/// Kafka's default segment roll time, 7 days.
pub const SEGMENT_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;

/// Kafka's default retention time, 7 days; -1 means forever.
pub const RETENTION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;

/// Kafka's default retention size: unlimited.
pub const RETENTION_BYTES_DEFAULT: i64 = -1;

/// Kafka's default `min.insync.replicas`: an acks=all write needs the leader alone.
pub const MIN_INSYNC_REPLICAS_DEFAULT: i32 = 1;

/// Bytes of log between two sparse offset index entries (Kafka's `index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// Size of one `.index` entry: relative offset (u32) and position (u32).
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;

/// Size of one `.timeindex` entry: timestamp (i64) and relative offset (u32).
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// O_DIRECT alignment we assume at most; the real value comes from the file system.
pub const DIRECT_IO_ALIGNMENT_BYTES_MAX: u64 = 4096;

/// Memory each shard keeps for the batches it wrote last, shared by its partitions, to serve
/// tail consumers without I/O (`--batch-cache-bytes`; `storage::cache`).
pub const BATCH_CACHE_BYTES_PER_SHARD_DEFAULT: u64 = 128 * 1024 * 1024;
/// The batch cache of a log outside a shard's shared budget (tests).
pub const BATCH_CACHE_BYTES_PER_LOG: usize = 4 * 1024 * 1024;

/// Partition logs a shard opens (recovers) or closes at once at start-up and shutdown: each
/// is a few small reads and an open, or an fdatasync, through io_uring, and the device serves
/// many at a time (10,000 partitions one at a time: 1.5 s to start, 7.4 s to stop).
pub const LOG_OPENS_IN_FLIGHT: usize = 64;

/// Segment files grow their preallocated space (fallocate, growing the file's size: see
/// `Segment::reserve`) in steps that double from `PREALLOCATE_STEP_BYTES_MIN` to
/// `PREALLOCATE_STEP_BYTES`, so appends write inside the file and a busy partition calls
/// fallocate once per 16 MiB, while a partition that holds a few records holds a few blocks.
/// A fixed 16 MiB first step cost 16 MiB per partition written once: 10,000 partitions with
/// one record each took 160 GB and filled this machine's disk. Preallocating whole 1 GiB
/// segments up front would cost 1 GiB per partition.
pub const PREALLOCATE_STEP_BYTES: u64 = 16 * 1024 * 1024;
pub const PREALLOCATE_STEP_BYTES_MIN: u64 = 16 * 1024;

/// Under `--durability fsync`, how far ahead of an active segment's data its idle flusher
/// keeps the preallocated blocks written with zeros, and the size of one such write
/// (`storage::log::zero_ahead_due`).
pub const ZERO_AHEAD_BYTES: u64 = 1024 * 1024;
pub const ZERO_AHEAD_STEP_BYTES: u64 = 256 * 1024;

/// The default free-space reserve of the data dir's file system (`--min-free-bytes`): the
/// smaller of this share of the file system and `MIN_FREE_BYTES_CAP_DEFAULT`. Below the
/// reserve, writes that clients ask for are refused with a retriable error
/// (`storage::space`). 5% is the share ext4 keeps for root by default.
pub const MIN_FREE_PERCENT_DEFAULT: u64 = 5;
/// The cap of the default reserve: on a large disk 1 GiB is a minute or more of writes at
/// this broker's rates, time for retention or an operator to act.
pub const MIN_FREE_BYTES_CAP_DEFAULT: u64 = 1024 * 1024 * 1024;

/// How often a shard's free-space gate looks at the file system (`statvfs`, about a
/// microsecond), at most; between looks it counts the bytes it admitted.
pub const SPACE_CHECK_INTERVAL_MS: u64 = 100;

/// A write that met a full file system is retried after this long, doubling up to
/// `NO_SPACE_RETRY_MS_MAX`: soon after space is freed, without spinning while it is not.
pub const NO_SPACE_RETRY_MS_MIN: u64 = 10;
pub const NO_SPACE_RETRY_MS_MAX: u64 = 1000;

/// How much of a segment recovery reads at once while scanning batch headers and CRCs.
pub const RECOVERY_READ_BYTES: usize = 1024 * 1024;

/// Chunk size for reading a region of a segment while locating a batch by offset.
pub const LOCATE_READ_BYTES: usize = 64 * 1024;

/// Capacity of each cross-core channel (messages, per ordered pair of shards).
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// How often each shard checks time-based retention and segment roll, unless
/// --log-retention-check-interval-ms says otherwise (Kafka checks every 5 minutes).
pub const RETENTION_CHECK_INTERVAL_MS: u64 = 5_000;

/// Longest a client may ask a fetch to wait; protects the broker from a wait of days.
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;

/// How long a partition leader waits for a share group's coordinator on another node to
/// answer a share call (`group::share_call`): an acquisition or acknowledgement waits for its
/// replicated write there, which a slow follower can hold up to `replica.lag.time.max.ms`.
pub const SHARE_CALL_TIMEOUT_MS: u64 = 35_000;
/// How long DescribeShareGroupOffsets waits for another node's high watermarks (its lags):
/// well inside the Admin client's 30 s request timeout; past it those lags are -1.
pub const SHARE_LAG_CALL_TIMEOUT_MS: u64 = 5_000;

/// Idle connections a shard keeps to each other broker for share calls; more are opened
/// when more calls are in flight at once, and closed after.
pub const PEER_IDLE_CONNECTIONS_MAX: usize = 8;

/// Dead letters (KIP-1191): a write that failed for a reason that may pass (the disk, a
/// topic being created) is tried again after this long; its warning repeats at most every
/// `DEAD_LETTER_WARN_INTERVAL_MS`.
pub const DEAD_LETTER_RETRY_MS: u64 = 1_000;
pub const DEAD_LETTER_WARN_INTERVAL_MS: u64 = 10_000;
/// How long a dead letter's write may wait for its partition (acks=all).
pub const DEAD_LETTER_WRITE_TIMEOUT_MS: i32 = 30_000;
/// Bytes read of the source partition to copy a record into its dead letter (Kafka's
/// `DLQ_MAX_FETCH_BYTES`: a dead letter is one record), and what its batch may decompress to.
pub const DEAD_LETTER_READ_BYTES_MAX: usize = 1 << 20;
pub const DEAD_LETTER_DECOMPRESSED_BYTES_MAX: u64 = 64 << 20;

/// Bytes a ShareFetch reads of one partition at most per round (the response then carries
/// only the batches holding records it hands out).
pub const SHARE_FETCH_PARTITION_BYTES_MAX: usize = 1 << 20;

/// Records a ShareFetch hands out when it names no limit (v1's MaxRecords 0; the Java
/// client's `max.poll.records`).
pub const SHARE_FETCH_MAX_RECORDS_DEFAULT: usize = 500;

/// Threads per shard that run `sendfile` calls for catch-up reads (`net::readers`).
pub const READER_THREADS_PER_SHARD: usize = 2;

/// Threads per shard in glommio's blocking pool: segment creation and index writes at a
/// roll, file deletions, catalog and snapshot writes.
pub const BLOCKING_THREADS_PER_SHARD: usize = 2;

/// Submission entries of each of a shard's io_uring rings (glommio's default is 128). The
/// kernel sizes a ring's cancellation hash from its completion queue (twice this) and never
/// above 256 buckets, reached at this depth; every cancellation (glommio cancels timeouts and
/// dropped sources by user data) walks one bucket of the armed polls, one per connection
/// waiting for bytes. At 128, 10,000 idle connections filled 8 buckets and those walks took
/// 72% of the shard's CPU (`io_poll_find`).
pub const SHARD_RING_DEPTH: usize = 4096;

/// The longest `--idle-poll-time-us` accepted.
pub const IDLE_POLL_TIME_US_MAX: u64 = 100_000;

/// Requests one connection may have admitted and not yet answered; past it the connection's
/// reader stops reading the socket (backpressure). Far above what a pipelining client needs
/// to keep the disk busy (one write takes ~0.2-0.3 ms, so 50,000 requests/s keep ~15 in
/// flight); Java clients send at most 5, librdkafka up to 1,000,000 (its default).
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX: usize = 256;

/// Request bytes one connection may have admitted and not yet answered (the frames held in
/// memory until their writes land); the same backpressure as the request count. A single
/// request larger than this (up to the frame limit) is admitted alone.
pub const CONNECTION_BYTES_IN_FLIGHT_MAX: usize = 16 * 1024 * 1024;

/// Request bytes all the connections of one shard may have admitted and not yet answered:
/// the connection windows' bound for many connections at once.
pub const SHARD_REQUEST_BYTES_IN_FLIGHT_MAX: usize = 256 * 1024 * 1024;

/// A shard's receive buffer for connections' small reads (`net::socket`): many small requests
/// come in with one recv.
pub const CONNECTION_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Kafka's connections.max.idle.ms: a connection that sent no whole request for this long is
/// closed (`--connections-max-idle-ms`). A client reconnects when it needs to.
pub const CONNECTIONS_MAX_IDLE_MS_DEFAULT: u64 = 600_000;

/// The shortest idle limit accepted: the sweep that enforces it runs every
/// `CONNECTIONS_IDLE_SWEEP_MS` at most.
pub const CONNECTIONS_MAX_IDLE_MS_MIN: u64 = 100;

/// How long a failed SASL login waits before its answer (Kafka's
/// connection.failed.authentication.delay.ms, 100 by default): a password guesser gets at
/// most one try per this on a connection.
pub const SASL_FAILED_LOGIN_DELAY_MS: u64 = 100;

/// Failed SASL logins one source address may have in `SASL_FAILED_LOGIN_WINDOW_MS` on one
/// shard; past it, its logins are refused unchecked until the window ends.
pub const SASL_FAILED_LOGINS_PER_WINDOW_MAX: u32 = 10;
pub const SASL_FAILED_LOGIN_WINDOW_MS: u64 = 60_000;

/// Source addresses a shard remembers failed logins of; older entries are dropped first.
pub const SASL_FAILED_LOGIN_SOURCES_MAX: usize = 10_000;

/// How long a SCRAM login waits on a clustered node that has not yet applied the metadata
/// log's credentials (after its start, until its bootstrap credentials are on the log)
/// before it is refused, uncounted, as "not ready"; and how often it looks meanwhile.
pub const SASL_CREDENTIALS_WAIT_MS: u64 = 10_000;
pub const SASL_CREDENTIALS_POLL_MS: u64 = 20;

/// A TLS handshake that has not completed in this long closes the connection.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Plaintext bytes encrypted and written per TLS write: bounds the ciphertext a connection
/// holds in memory while the socket is full.
pub const TLS_WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// The longest interval between two sweeps for idle connections; a shorter idle limit sweeps
/// four times per limit.
pub const CONNECTIONS_IDLE_SWEEP_MS: u64 = 1_000;

/// The first step a frame's buffer grows by while its body is read; each later step is what
/// arrived so far (at most `FRAME_READ_STEP_BYTES_MAX`), so that a frame announced large and
/// trickled in holds memory in proportion to the bytes that came, not to its announced size.
pub const FRAME_READ_STEP_BYTES_MIN: usize = 4 * 1024;
pub const FRAME_READ_STEP_BYTES_MAX: usize = 1024 * 1024;

/// How long a connection waits for a client to take more of a response before closing it.
pub const SOCKET_SEND_TIMEOUT_MS: i32 = 30_000;

/// First wait before retrying a failed `accept` (out of descriptors or memory); it doubles on
/// each failure in a row up to `ACCEPT_RETRY_MS_MAX`, so a full descriptor table neither spins
/// a core nor leaves a freed descriptor unused for long.
pub const ACCEPT_RETRY_MS_MIN: u64 = 10;
pub const ACCEPT_RETRY_MS_MAX: u64 = 1000;

/// A warning that repeats (a failing `accept`, a full disk) is logged at most this often, with
/// the count of the ones held back.
pub const REPEATED_WARNING_INTERVAL_MS: u64 = 1000;

/// glommio needs this much locked memory per executor for its io_uring rings and buffers.
pub const MEMLOCK_BYTES_PER_SHARD_MIN: u64 = 512 * 1024;

/// Longest topic name Kafka allows (249, so that `<topic>-<partition>` fits in a file name).
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// Most partitions one topic may have on this broker.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Most partitions one DescribeTopicPartitions answer holds, whatever the client's
/// `response_partition_limit` (Kafka's `max.request.partition.size.limit` default).
pub const DESCRIBE_TOPIC_PARTITIONS_LIMIT_MAX: i32 = 2000;

/// The record batch header: fixed-size prefix of every magic v2 batch.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes before `batch_length` ends: base offset (8) and batch length (4).
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;

// ----- consumer groups ----------------------------------------------------------------------

/// Longest group id. Kafka sets no limit of its own, but its offsets records hold the id in
/// an int16-length string, so nothing longer could be stored.
pub const GROUP_ID_LENGTH_MAX: usize = i16::MAX as usize;

/// Generated member ids are `<client id>-<uuid>`; the client id part is cut to this length
/// so the id stays small and storable (a client id may be 32 KiB).
pub const MEMBER_ID_PREFIX_BYTES_MAX: usize = 255;

/// The longest each shard's group coordinator sleeps with no group deadline due: it then runs
/// offset retention and checks whether its log needs compacting. Group timeouts themselves
/// wake it at their deadline (the timing wheel in `group::timers`).
pub const GROUP_IDLE_WAKE_MS: u64 = 100;
/// How often each transaction coordinator does its housekeeping: the log's compaction
/// check, and the shortest period of the transactional id expiration (timeouts themselves
/// are exact, each in the shard's purgatory).
pub const TXN_HOUSEKEEPING_MS: u64 = 1000;
/// The longest between two looks for expired transactional ids (Kafka's
/// transaction.remove.expired.transaction.cleanup.interval.ms is an hour; the check is a scan
/// of one shard's ids, and shorter expirations are looked at more often).
pub const TXN_ID_EXPIRATION_CHECK_MS: i64 = 60_000;

/// How often expired committed offsets are purged (Kafka's
/// offsets.retention.check.interval.ms default).
pub const OFFSETS_RETENTION_CHECK_INTERVAL_MS: i64 = 600_000;
/// How long a clustered coordinator waits for its records to be replicated (the high
/// watermark to pass them) before it answers REQUEST_TIMED_OUT: Kafka's
/// offsets.commit.timeout.ms.
pub const OFFSETS_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// Segment size of each shard's committed-offsets log (Kafka's offsets.topic.segment.bytes
/// is 100 MiB; our logs hold one shard's groups, so smaller segments compact sooner).
pub const OFFSETS_SEGMENT_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;

/// Segment size of each shard's transaction log (Kafka's transaction.state.log.segment.bytes
/// is 100 MiB; ours holds one shard's transactional ids).
pub const TXN_LOG_SEGMENT_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;
/// How long a transactional id with no transaction open is kept after its last use (Kafka's
/// transactional.id.expiration.ms default, 7 days).
pub const TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;

/// An internal log (committed offsets, transaction state) is compacted (state snapshot
/// appended, older segments deleted) once it spans this many segments' worth of bytes and
/// twice its size after the last compaction.
pub const INTERNAL_COMPACT_SEGMENTS: u64 = 4;

/// Largest record batch a coordinator writes to its log (at most a quarter segment).
pub const INTERNAL_BATCH_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(OFFSETS_SEGMENT_BYTES_DEFAULT >= SEGMENT_SIZE_BYTES_MIN);
const _: () = assert!(TXN_LOG_SEGMENT_BYTES_DEFAULT >= SEGMENT_SIZE_BYTES_MIN);
const _: () = assert!((INTERNAL_BATCH_BYTES_MAX as u64) < OFFSETS_SEGMENT_BYTES_DEFAULT);
const _: () = assert!(INTERNAL_COMPACT_SEGMENTS > 2);
const _: () = assert!(MEMBER_ID_PREFIX_BYTES_MAX + 40 < GROUP_ID_LENGTH_MAX);
/// Batches remembered per idempotent producer and partition for duplicate detection (Kafka's
/// `NUM_BATCHES_TO_RETAIN`; clients keep at most 5 requests in flight per partition).
pub const PRODUCER_BATCHES_RETAINED: usize = 5;

/// A producer id idle this long is forgotten by a partition (Kafka's
/// `producer.id.expiration.ms` default, 1 day); its next batch may then use any sequence.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

/// Producer ids the controller reserves durably at once (Kafka's AllocateProducerIds block).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Producer-state snapshots kept per partition (the newest ones; an older one is the fallback
/// when the newest covers offsets a crash lost).
pub const PRODUCER_SNAPSHOTS_RETAINED: usize = 2;

/// The controller quorum's Raft clock (src/cluster): one tick every `RAFT_TICK_MS`. A leader
/// heartbeats every `RAFT_HEARTBEAT_TICKS`; a follower that hears nothing for a randomized
/// `RAFT_ELECTION_TICKS` to twice that campaigns (1-2 s, Kafka's
/// controller.quorum.election.timeout.ms is 1 s plus up to 1 s of back-off), so a killed
/// leader is replaced in about 1-3 s, inside the 3 s median the cluster issue targets.
pub const RAFT_TICK_MS: u64 = 100;
pub const RAFT_HEARTBEAT_TICKS: usize = 1;
pub const RAFT_ELECTION_TICKS: usize = 10;
/// Entries raft-rs may put in one append message, in bytes, and messages in flight per peer.
pub const RAFT_MESSAGE_SIZE_BYTES_MAX: u64 = 1024 * 1024;
pub const RAFT_INFLIGHT_MESSAGES_MAX: usize = 256;
/// Largest frame a controller listener accepts (a full append message and its envelope).
pub const RAFT_FRAME_SIZE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Events (ticks, peer messages, proposals) queued for the Raft driver; senders wait beyond.
pub const RAFT_EVENTS_QUEUED_MAX: usize = 1024;
/// Messages queued for one peer; beyond it (a peer that is down) new ones are dropped, and
/// Raft sends again what still matters.
pub const RAFT_PEER_MESSAGES_QUEUED_MAX: usize = 256;
/// Reconnecting to a peer backs off from the first to the second (doubling), and a connect
/// gives up after the third.
pub const RAFT_PEER_RETRY_MS_MIN: u64 = 50;
pub const RAFT_PEER_RETRY_MS_MAX: u64 = 1000;
pub const RAFT_PEER_CONNECT_TIMEOUT_MS: u64 = 1000;
/// How often a node checks that its broker registration is committed and proposes it again
/// if not (a proposal can be lost with a leader).
pub const BROKER_REGISTRATION_RETRY_MS: u64 = 500;
/// A topic request proposed to the metadata log and not applied after this long is proposed
/// again (its proposal may have been lost with a leader, or dropped when there was none):
/// above a commit's round trips, below an election (1-2 s).
pub const CLUSTER_PROPOSAL_RETRY_MS: u64 = 500;
/// How often a waiting topic request looks for a new leader (then proposes again at once,
/// rather than waiting out the retry interval after a failover).
pub const CLUSTER_PROPOSAL_POLL_MS: u64 = 50;
/// How long a topic request waits for its record to be applied when the request names no
/// timeout (AlterConfigs, auto-creation) or 0; then REQUEST_TIMED_OUT.
pub const CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Topic requests whose ids the metadata state remembers, so that one proposed twice takes
/// effect once (a retry commits within seconds, thousands of requests apart at most).
pub const CLUSTER_REQUESTS_REMEMBERED_MAX: usize = 10_000;
/// Applied metadata log entries between two snapshots (`--metadata-snapshot-interval-records`;
/// Kafka counts bytes, 20 MiB by default, about 100,000 of its records; a smaller count keeps
/// the journal and its replay short, and a snapshot costs one encoding of the state).
pub const METADATA_SNAPSHOT_INTERVAL_RECORDS_DEFAULT: u64 = 10_000;
/// A metadata snapshot goes to a follower in chunks of this many bytes (KRaft's
/// FetchSnapshot; a snapshot may be far larger than a controller frame), each asked again
/// after the retry interval without an answer, the transfer given up after the idle time
/// without a chunk (the leader offers it again). A follower takes snapshots up to the
/// largest size (it reads one back whole to check and install it).
pub const METADATA_SNAPSHOT_CHUNK_BYTES: u32 = 1024 * 1024;
pub const METADATA_SNAPSHOT_FETCH_RETRY_MS: u64 = 1000;
pub const METADATA_SNAPSHOT_FETCH_IDLE_MS: u64 = 10_000;
pub const METADATA_SNAPSHOT_SIZE_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Before producer id blocks were on the metadata log, each clustered node handed out ids
/// from its own blocks and interleaved them: node n's local id i was `i * STRIDE + n mod
/// STRIDE`. Kept to bound those ids on upgrade (`controller::producer_ids::legacy_end`).
pub const CLUSTER_PRODUCER_ID_STRIDE: i64 = 1024;
/// The first producer id of the metadata log's blocks (2^50): a node that interleaved ids
/// (an earlier version, perhaps still running beside upgraded nodes) stays below it until
/// it has handed out 2^40 ids, so blocks never hold one of its ids without waiting for its
/// report. Ids up to 2^63 remain, some 8,000 times as many.
pub const CLUSTER_PRODUCER_ID_BLOCKS_START: i64 = CLUSTER_PRODUCER_ID_STRIDE << 40;
/// Clustered, how long an InitProducerId waits for a block of producer ids when this node
/// has none left (COORDINATOR_LOAD_IN_PROGRESS after it, which clients retry).
pub const PRODUCER_ID_BLOCK_WAIT_MS: u64 = 5_000;
/// Partitions of each internal topic in a cluster (Kafka's offsets.topic.num.partitions and
/// transaction.state.log.num.partitions, 50 by default): a group's or transactional id's
/// coordinator is the leader of its partition.
pub const CLUSTER_INTERNAL_TOPIC_PARTITIONS: usize = 50;
/// Replicas of each partition of a replicated internal topic, at most the brokers of the
/// formed cluster (Kafka's offsets.topic.replication.factor, 3 by default).
pub const CLUSTER_INTERNAL_TOPIC_REPLICATION_FACTOR: usize = 3;
/// The most bytes of config names and values one metadata record holds (a topic's overrides,
/// a broker or group resource's whole dynamic set; INVALID_CONFIG beyond it): with a topic's
/// replicas (at most `PARTITIONS_PER_TOPIC_MAX`) it fits a controller frame, which an append
/// of one entry must.
pub const CLUSTER_RECORD_CONFIG_BYTES_MAX: usize = 1024 * 1024;
/// Committed topic changes queued from the Raft driver to the controller; the driver waits
/// beyond (the controller applies each to every shard).
pub const CLUSTER_COMMITTED_QUEUED_MAX: usize = 64;
/// How often a broker heartbeats to the active controller, and how long the controller
/// waits without one before it fences the broker (Kafka's broker.heartbeat.interval.ms and
/// broker.session.timeout.ms defaults); `--broker-heartbeat-interval-ms` and
/// `--broker-session-timeout-ms` change them.
pub const BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 2000;
pub const BROKER_SESSION_TIMEOUT_MS_DEFAULT: u64 = 9000;
/// The smallest heartbeat interval accepted: the controller checks sessions on its 100 ms
/// tick, and a heartbeat is one frame per node.
pub const BROKER_HEARTBEAT_INTERVAL_MS_MIN: u64 = 10;
/// How often the heartbeat task looks for a change (its registration committed, a shutdown
/// begun), and how often a controlled shutdown looks whether it was fenced.
pub const BROKER_HEARTBEAT_POLL_MS: u64 = 50;
/// The longest a controlled shutdown (SIGTERM on a clustered node) waits for the controller
/// to fence this node and move its partitions' leadership; then it stops anyway (a node
/// whose quorum is gone must still stop).
pub const BROKER_CONTROLLED_SHUTDOWN_WAIT_MS_MAX: u64 = 5000;
/// A controlled shutdown of the quorum's leader asks it to hand leadership over again after
/// this long if no other voter has taken it (raft-rs abandons a transfer after an election
/// timeout).
pub const BROKER_RESIGN_RETRY_MS: u64 = 500;
/// The longest a topic request waits for an unfenced broker to place partitions on (the
/// brokers of a cluster that is forming send their first heartbeats), before it answers
/// that all brokers are fenced.
pub const CLUSTER_LIVE_BROKER_WAIT_MS_MAX: u64 = 5000;

const _: () = assert!(SEGMENT_SIZE_BYTES_MIN.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES_MAX));
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES_MAX));
const _: () = assert!((RECOVERY_READ_BYTES as u64).is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES_MAX));
const _: () = assert!(LOCATE_READ_BYTES >= BATCH_HEADER_BYTES);
const _: () = assert!((MESSAGE_SIZE_BYTES_MAX_DEFAULT as u64) < SEGMENT_SIZE_BYTES_DEFAULT);
const _: () = assert!(MESSAGE_SIZE_BYTES_MAX_DEFAULT < FRAME_SIZE_BYTES_MAX_DEFAULT);
const _: () = assert!(CONNECTION_REQUESTS_IN_FLIGHT_MAX >= 2); // room for pipelining
const _: () = assert!(CONNECTION_BYTES_IN_FLIGHT_MAX >= MESSAGE_SIZE_BYTES_MAX_DEFAULT as usize);
const _: () = assert!(SHARD_REQUEST_BYTES_IN_FLIGHT_MAX >= CONNECTION_BYTES_IN_FLIGHT_MAX);
const _: () = assert!(BATCH_CACHE_BYTES_PER_LOG > MESSAGE_SIZE_BYTES_MAX_DEFAULT as usize);
const _: () = assert!(BATCH_CACHE_BYTES_PER_SHARD_DEFAULT > MESSAGE_SIZE_BYTES_MAX_DEFAULT as u64);
const _: () = assert!(PRODUCER_BATCHES_RETAINED >= 5 && PRODUCER_BATCHES_RETAINED <= 255);
const _: () = assert!(PRODUCER_ID_BLOCK_SIZE > 0 && PRODUCER_ID_BLOCK_SIZE <= i32::MAX as i64);
const _: () = assert!(MIN_FREE_PERCENT_DEFAULT < 100);
const _: () = assert!(NO_SPACE_RETRY_MS_MIN > 0 && NO_SPACE_RETRY_MS_MIN <= NO_SPACE_RETRY_MS_MAX);
const _: () = assert!(RAFT_HEARTBEAT_TICKS < RAFT_ELECTION_TICKS);
const _: () = assert!(RAFT_FRAME_SIZE_BYTES_MAX as u64 > 2 * RAFT_MESSAGE_SIZE_BYTES_MAX);
// One entry of the largest configs and a topic of the most partitions of 32 replicas.
const _: () = assert!(
    CLUSTER_RECORD_CONFIG_BYTES_MAX + PARTITIONS_PER_TOPIC_MAX as usize * 4 * 33
        < RAFT_FRAME_SIZE_BYTES_MAX - 64 * 1024
);
// A chunk and its header fit in a frame.
const _: () = assert!((METADATA_SNAPSHOT_CHUNK_BYTES as usize) < RAFT_FRAME_SIZE_BYTES_MAX - 64);
const _: () = assert!(METADATA_SNAPSHOT_FETCH_RETRY_MS < METADATA_SNAPSHOT_FETCH_IDLE_MS);
const _: () = assert!(RAFT_PEER_RETRY_MS_MIN <= RAFT_PEER_RETRY_MS_MAX);
const _: () = assert!(CLUSTER_PROPOSAL_RETRY_MS < CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT);
const _: () = assert!(CLUSTER_PROPOSAL_POLL_MS < CLUSTER_PROPOSAL_RETRY_MS);
const _: () = assert!(CLUSTER_REQUESTS_REMEMBERED_MAX > 0 && CLUSTER_COMMITTED_QUEUED_MAX > 0);
const _: () = assert!(BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT < BROKER_SESSION_TIMEOUT_MS_DEFAULT);
const _: () = assert!(BROKER_HEARTBEAT_INTERVAL_MS_MIN <= BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT);
const _: () = assert!(BROKER_HEARTBEAT_POLL_MS < CLUSTER_PROPOSAL_RETRY_MS);

/// Most bytes a ListOffsets-by-timestamp lookup decompresses from one batch before it gives
/// up and answers the batch's first offset (`model::record_scan`): a producer can store a
/// batch that decompresses to gigabytes, since produce passes batches through. Kafka's
/// default max.message.bytes of 1 MiB compresses text about 5-10x.
pub const TIMESTAMP_SCAN_DECOMPRESSED_MAX: u64 = 64 * 1024 * 1024;

// ----- compaction ---------------------------------------------------------------------------

/// Most bytes a produce to a compacted topic decompresses from one batch to check that every
/// record has a key; a batch beyond it is refused (INVALID_RECORD), as a keyless one is.
pub const PRODUCE_KEY_CHECK_DECOMPRESSED_MAX: u64 = 64 * 1024 * 1024;

/// Most bytes the cleaner decompresses from one batch; a batch beyond it is kept as it is
/// (its keys neither cleaned nor counted).
pub const CLEANER_DECOMPRESSED_MAX: u64 = 64 * 1024 * 1024;

/// Kafka's `log.cleaner.dedupe.buffer.size` default: the memory of the cleaners' offset maps,
/// shared by all shards (each shard's map gets its share).
pub const CLEANER_DEDUPE_BUFFER_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;

/// What one key costs in an offset map, as Kafka counts it (a 16-byte hash and an 8-byte
/// offset), and the share of the slots a map fills (`log.cleaner.io.buffer.load.factor`).
pub const OFFSET_MAP_ENTRY_BYTES: u64 = 24;
pub const OFFSET_MAP_LOAD_PERCENT: u64 = 90;

/// Kafka's `log.cleaner.backoff.ms` default: how often a shard's cleaner looks for a log to
/// clean when it found none (`--log-cleaner-backoff-ms`).
pub const CLEANER_BACKOFF_MS_DEFAULT: u64 = 15_000;

/// Bytes a cleaner reads from a segment at once (an O_DIRECT read), and gathers before it
/// writes to a cleaned segment (an O_DIRECT write). Small, because the device serves the
/// cleaner's I/O and produce's appends in one queue: an append queued behind a 1 MiB write
/// waits for all of it. fio on the 2-core machine's virtual disk (4 KiB O_DIRECT writes at
/// 1,000/s beside 50 MB/s of O_DIRECT writes of another file, 20 s each, same run): the small
/// writes' p99 237 us alone, 594-807 us beside 1 MiB writes, 293-342 us beside 128 KiB ones
/// (313 us beside 64 KiB); reads hurt less (1 MiB: 198 to 272 us). Smaller gives little more
/// and costs a submission per 128 KiB.
pub const CLEANER_READ_BYTES: usize = 128 * 1024;
pub const CLEANER_WRITE_BYTES: usize = 128 * 1024;

/// The share of the shard's CPU and I/O the cleaner's task queue gets against the serving
/// queue's default (glommio shares; the default queue has 1000): compaction yields to
/// produce and fetch whenever both have work.
pub const CLEANER_SHARES: usize = 50;

/// The longest the cleaner works on the shard's CPU before it lets the executor reap I/O
/// completions (`storage::cleaner`'s `Turns`), and how long it then sleeps. glommio reaps
/// network completions only between task-queue runs and preempts a queue on its 100 ms
/// timer, so shares alone do not bound how long a request that arrives mid-clean waits.
pub const CLEANER_TURN: std::time::Duration = std::time::Duration::from_micros(500);
pub const CLEANER_PAUSE: std::time::Duration = std::time::Duration::from_micros(20);

const _: () = assert!(OFFSET_MAP_LOAD_PERCENT > 0 && OFFSET_MAP_LOAD_PERCENT <= 100);
const _: () = assert!(CLEANER_READ_BYTES as u64 <= CLEANER_DECOMPRESSED_MAX);

// ----- replication ----------------------------------------------------------------------

/// Kafka's `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
pub const REPLICA_LAG_TIME_MS_DEFAULT: u64 = 30_000;

/// The longest rack id (`--rack`) in bytes: it travels in the broker's registration on the
/// metadata log (a u16-length string there) and in every Metadata response.
pub const RACK_ID_BYTES_MAX: usize = 255;

/// How long a follower's fetch waits at the leader for new data by default (Kafka's
/// `replica.fetch.wait.max.ms`; `--replica-fetch-wait-max-ms`).
pub const REPLICA_FETCH_WAIT_MS_DEFAULT: u64 = 500;

/// A follower fetch's response limit and per-partition limit (Kafka's
/// `replica.fetch.response.max.bytes` and `replica.fetch.max.bytes`).
pub const REPLICA_FETCH_BYTES_MAX: i32 = 10 << 20;
pub const REPLICA_FETCH_PARTITION_BYTES_MAX: i32 = 1 << 20;

/// Largest fetch response a follower reads; a bigger length is a broken stream.
pub const REPLICA_FETCH_RESPONSE_BYTES_MAX: usize = 64 << 20;

/// A follower gives up on a fetch response after this long and connects again (Kafka's
/// `replica.socket.timeout.ms`).
pub const REPLICA_FETCH_TIMEOUT_MS: u64 = 30_000;

/// Back-off of a follower that cannot reach its leader, or whose fetch failed (Kafka's
/// `replica.fetch.backoff.ms` is 1 s; failovers here are measured in it).
pub const REPLICA_FETCH_BACKOFF_MS_MIN: u64 = 50;
pub const REPLICA_FETCH_BACKOFF_MS_MAX: u64 = 1_000;

/// How often the nudge thread wakes every shard's executor (`broker::start_nudger`): the
/// most a lost io_uring wake-up can stall a shard.
pub const SHARD_NUDGE_MS: u64 = 10;

/// How often the active controller moves leadership back to preferred replicas (Kafka's
/// `leader.imbalance.check.interval.seconds`, 300).
pub const LEADER_IMBALANCE_CHECK_INTERVAL_MS_DEFAULT: u64 = 300_000;

/// How long a transaction marker on a replicated partition waits for its high watermark
/// (Kafka appends markers with acks=all and its `request.timeout.ms`, 30 s); the
/// coordinator writes it again after that.
pub const TXN_MARKER_REPLICATION_TIMEOUT_MS: u64 = 30_000;

/// Markers for partitions another node leads go there as WriteTxnMarkers (v1): the
/// response wait, and the back-off between rounds while some marker is not written yet
/// (the leader moved, is fenced, unreachable), doubling from the least to the most.
pub const TXN_MARKER_REQUEST_TIMEOUT_MS: u64 = 35_000;
pub const TXN_MARKER_RETRY_MS_MIN: u64 = 100;
pub const TXN_MARKER_RETRY_MS_MAX: u64 = 2_000;

/// How often a clustered node's shards checkpoint their replicated logs' high watermarks
/// (Kafka's `replica.high.watermark.checkpoint.interval.ms`, 5 s).
pub const HIGH_WATERMARK_CHECKPOINT_MS: u64 = 5_000;

/// How often each shard's replica manager looks for fetchers to start and ISR changes to
/// ask for, and how long before it asks for the same ISR change again (doubling each time
/// the same change from the same epoch is asked, up to the max: `replication::Asked`).
pub const REPLICA_MANAGER_TICK_MS: u64 = 100;
pub const REPLICA_ISR_CHANGE_RETRY_MS: u64 = 500;
pub const REPLICA_ISR_CHANGE_RETRY_MS_MAX: u64 = 8_000;
const _: () = assert!(REPLICA_MANAGER_TICK_MS < REPLICA_ISR_CHANGE_RETRY_MS);
const _: () = assert!(REPLICA_ISR_CHANGE_RETRY_MS <= REPLICA_ISR_CHANGE_RETRY_MS_MAX);

/// Largest Kafka API key the per-API counters have a slot for (Kafka 4 ends in the 80s);
/// a request with a larger key is closed before it is counted (`api::admit`).
pub const API_KEY_MAX: usize = 127;

/// Upper bounds of the request latency histogram's buckets, in microseconds (then +Inf):
/// from a cached tail fetch (~100 us on loopback) to a long poll or a rebalance (seconds).
pub const API_LATENCY_BUCKETS_US: [u64; 17] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];
const _: () = {
    let mut i = 1;
    while i < API_LATENCY_BUCKETS_US.len() {
        assert!(API_LATENCY_BUCKETS_US[i - 1] < API_LATENCY_BUCKETS_US[i]);
        i += 1;
    }
};

/// Scrapes of `--metrics-listen` served at once; more connections wait in the listen queue.
pub const METRICS_SCRAPES_IN_FLIGHT_MAX: usize = 4;

/// Largest HTTP request head the metrics endpoint reads (a scrape's GET is a few hundred
/// bytes); a longer one is answered 431 and closed.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How long the metrics endpoint waits for a request head or for a shard's report before
/// it gives up on that scrape (Prometheus's default scrape timeout is 10 s).
pub const METRICS_SCRAPE_TIMEOUT_MS: u64 = 10_000;

/// Partitions a shard reads into its report between two `yield_if_needed` (a scrape at
/// 100,000 partitions must not hold a saturated shard's requests back).
pub const METRICS_PARTITIONS_PER_YIELD: usize = 1024;

// ----- delayed delivery ---------------------------------------------------------------------

/// The longest delay a record may ask for (`spate-delay-ms`, or `spate-deliver-at` this far
/// ahead of the broker's clock) or a topic may set (`spate.delivery.delay.ms`): 366 days.
/// Beyond it the header is refused with INVALID_RECORD naming it ("absurdly far").
pub const DELIVERY_DELAY_MS_MAX: i64 = 366 * 24 * 60 * 60 * 1000;

/// How far ahead of now the delivery schedule keeps records in memory (on its timing wheel,
/// with their batches). Records due later stay only in the partition's delay log and are
/// loaded when the window moves over them (`wheel::schedule`), so memory does not grow with
/// records due next month.
pub const DELIVERY_HORIZON_MS: u64 = 10 * 60 * 1000;
/// The shortest horizon `--delivery-horizon-ms` takes (tests use it to cross the horizon
/// in seconds).
pub const DELIVERY_HORIZON_MS_MIN: u64 = 1_000;

/// Most bytes a produce to a topic with delayed delivery decompresses from one batch to read
/// its records' headers; a batch beyond it is refused (INVALID_RECORD).
pub const DELIVERY_HEADER_SCAN_DECOMPRESSED_MAX: u64 = 64 * 1024 * 1024;

/// Most records' batches one delivery round appends to one partition (the rest wait for the
/// next round, a moment later).
pub const DELIVERY_ROUND_BATCHES_MAX: usize = 1024;

/// The segment size of a partition's delay log.
pub const DELAY_LOG_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

const _: () = assert!(DELIVERY_HORIZON_MS >= DELIVERY_HORIZON_MS_MIN);
const _: () = assert!(DELIVERY_ROUND_BATCHES_MAX > 0);
