//! The native producer (`--client native`): the Kafka protocol spoken directly, for the
//! latency-sensitive case where librdkafka's cost per request would be the limit.
//!
//! One producer is one TCP connection to the leader of the topic's partitions and one thread.
//! Every record leaves as its own Produce request holding one record batch of one record (what
//! `linger.ms=0` asks of a client that finds each record alone), to the partition the bench's
//! key routing picks. Requests are pipelined: the thread writes a request when its record is
//! due without waiting for earlier answers, up to `--max-in-flight` unanswered requests (the
//! window). Kafka answers in order on a connection, so each response belongs to the oldest
//! request in flight; its correlation id is checked against that request's.
//!
//! ```text
//!   sender side  record due --> batch (kafka-protocol) --> request --> outbox --> write()
//!                                                             |
//!                                  window (in flight, oldest first, at most N)
//!                                                             |
//!   answer side  ppoll wakes --> read() --> frames --> correlation id == oldest? --> tally
//! ```
//!
//! The one thread waits in `ppoll` for whichever comes first: the socket becoming readable (an
//! acknowledgement, timestamped when the wait returns) or the next record's due time. Nothing
//! is handed between threads, and the buffers of the batch, the request and the responses are
//! reused; what is left per record is kafka-protocol's (a temporary buffer when compressing,
//! the vectors of a decoded response).
//!
//! Open loop works as in `producer`: record k is due at its intended time, and a record that
//! could not go on time (the window was full, the thread was busy) goes as soon as it can and
//! its latency still counts from when it was due. A full window counts as a queue-full wait.
//!
//! Not done: retries, reconnects, idempotence, transactions, more than one leader. A request
//! that fails is counted (`delivery: <Kafka error>`) and not sent again; a lost connection
//! fails what was in flight and ends the producer.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::clock::{duration_ns, init_thread_timer_slack};
use crate::payload::{write_key, Header, KEY_BYTES_MAX};
use crate::producer::{count_acked, count_missed, count_sent, Gaps, ProducerSetup, Timeline};
use crate::spec::{Acks, Compression, KeySampler, Routing};
use crate::stats::{bump, ErrorCounts, ProducerStats};
use crate::wire::{self, BatchEncoder, FrameReader, Session};

/// Requests in flight per connection when `--max-in-flight` is not given: as many as Spate
/// admits per connection before it stops reading one (its CONNECTION_REQUESTS_IN_FLIGHT_MAX),
/// far more than 50,000 requests/s at a millisecond each keep in flight (about 50).
pub const MAX_IN_FLIGHT_DEFAULT: usize = 256;
/// How long the broker may take to gather the acknowledgements of a request (Produce's
/// timeout_ms), librdkafka's `request.timeout.ms` default.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Requests the sender queues in a row (when behind, or in closed loop) before it looks at the
/// socket again, so that an acknowledgement that arrives meanwhile is timestamped at most a
/// few tens of microseconds late (a request costs a few microseconds to build).
const SEND_BURST_MAX: usize = 16;
/// The longest wait in `ppoll`: how late the thread notices the stop flag or the end when
/// nothing else happens.
const WAIT_NS_MAX: u64 = 100_000_000;
/// An outbox whose written part is larger than this moves its unwritten rest to the front.
const OUTBOX_COMPACT_BYTES: usize = 64 * 1024;
/// The reader's first buffer; a burst of Produce responses is a few KiB.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What a native producer needs besides the workload (`ProducerSetup`), built before the run
/// so that connecting is not the first records' latency.
pub struct NativeProducer {
    pub session: Session,
    pub topic: String,
    pub acks: Acks,
    pub compression: Compression,
    pub max_in_flight: usize,
    pub stats: Arc<ProducerStats>,
    pub errors: Arc<ErrorCounts>,
    pub open_loop: bool,
}

/// A request written (or being written) and not yet answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub correlation_id: i32,
    pub partition: i32,
    /// Intended and actual send time of its record.
    pub header: Header,
    /// Key and value bytes of its record.
    pub bytes: u64,
    /// Where the request ends in the connection's byte stream: with acks=0, when the stream
    /// has been written past this point, the request is done.
    pub end_offset: u64,
}

/// The requests in flight, oldest first, at most `capacity` of them.
pub struct Window {
    entries: VecDeque<InFlight>,
    capacity: usize,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        assert!(capacity >= 1, "a window of no requests sends nothing");
        Window { entries: VecDeque::with_capacity(capacity), capacity }
    }

    pub fn has_room(&self) -> bool {
        self.entries.len() < self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, entry: InFlight) {
        assert!(self.has_room(), "the sender checks for room before it queues a request");
        self.entries.push_back(entry);
    }

    /// The request a response with `correlation_id` answers: the oldest one, since Kafka
    /// answers in order. Any other id means the stream is out of step, and nothing is taken.
    pub fn complete(&mut self, correlation_id: i32) -> Result<InFlight, String> {
        match self.entries.front() {
            Some(oldest) if oldest.correlation_id == correlation_id => {
                Ok(self.entries.pop_front().expect("the front was just seen"))
            }
            Some(oldest) => Err(format!(
                "a response with correlation id {correlation_id} while the oldest request in \
                 flight has {} (Kafka answers in order)",
                oldest.correlation_id
            )),
            None => Err(format!(
                "a response with correlation id {correlation_id} but no request in flight"
            )),
        }
    }

    /// acks=0: the oldest request, if the stream has been written up to its end.
    pub fn complete_written(&mut self, written: u64) -> Option<InFlight> {
        if self.entries.front()?.end_offset <= written {
            self.entries.pop_front()
        } else {
            None
        }
    }

    /// Takes every request, for a connection that is lost or given up on.
    pub fn take_all(&mut self) -> usize {
        let count = self.entries.len();
        self.entries.clear();
        count
    }
}

/// Request bytes not yet written to the socket, in one buffer that is reused.
#[derive(Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    written: usize,
    /// Bytes of the stream written so far.
    written_total: u64,
}

impl Outbox {
    pub fn is_pending(&self) -> bool {
        self.written < self.bytes.len()
    }

    /// Where the stream ends once everything queued is written.
    pub fn queued_end(&self) -> u64 {
        self.written_total + (self.bytes.len() - self.written) as u64
    }

    pub fn written_total(&self) -> u64 {
        self.written_total
    }

    /// Writes what the socket takes without blocking.
    pub fn flush(&mut self, socket: &mut impl Write) -> io::Result<()> {
        while self.is_pending() {
            match socket.write(&self.bytes[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => {
                    self.written += count;
                    self.written_total += count as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if !self.is_pending() {
            self.bytes.clear();
            self.written = 0;
        } else if self.written > OUTBOX_COMPACT_BYTES {
            self.bytes.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}

/// How the broker answered one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Acked,
    /// Refused, with the Kafka error's name (or why the answer does not fit the request).
    Rejected(String),
}

/// Matches one Produce response frame to the oldest request in flight and reads its answer. An
/// error means the stream cannot be trusted any more (malformed, or out of step); then nothing
/// is taken from the window.
pub fn answer(
    frame: &[u8],
    version: i16,
    topic: &str,
    window: &mut Window,
) -> Result<(InFlight, Answer), String> {
    let mut body = frame;
    let correlation_id = wire::response_correlation_id::<ProduceRequest>(&mut body, version)?;
    let response = ProduceResponse::decode(&mut body, version)
        .map_err(|e| format!("malformed Produce response {correlation_id}: {e}"))?;
    let entry = window.complete(correlation_id)?;
    let found = response
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == entry.partition);
    let answer = match found {
        None => Answer::Rejected(format!("no answer for {topic}/{}", entry.partition)),
        Some(partition) => match ResponseError::try_from_code(partition.error_code) {
            None => Answer::Acked,
            Some(error) => Answer::Rejected(error.to_string()),
        },
    };
    Ok((entry, answer))
}

/// Where outcomes are counted: the producer's stats and the run's errors.
struct Tally {
    stats: Arc<ProducerStats>,
    errors: Arc<ErrorCounts>,
    warmup_end_ns: u64,
    open_loop: bool,
}

impl Tally {
    fn acked(&self, entry: &InFlight, now_ns: u64) {
        let (stats, warmup_end_ns) = (&self.stats, self.warmup_end_ns);
        count_acked(stats, now_ns, &entry.header, entry.bytes, warmup_end_ns, self.open_loop);
    }

    fn answered(&self, entry: &InFlight, answer: Answer, now_ns: u64) {
        match answer {
            Answer::Acked => self.acked(entry, now_ns),
            Answer::Rejected(kind) => {
                bump(&self.stats.failed_total, 1);
                self.errors.add(format!("delivery: {kind}"));
            }
        }
    }
}

/// The connection with everything a request needs, reused from one request to the next.
struct Connection {
    stream: TcpStream,
    leader: String,
    topic: String,
    version: i16,
    acks: Acks,
    window: Window,
    outbox: Outbox,
    reader: FrameReader,
    encoder: BatchEncoder,
    header: RequestHeader,
    request: ProduceRequest,
    next_correlation_id: i32,
    /// Why the connection was given up, once it was.
    lost: Option<String>,
}

impl Connection {
    fn new(producer: &NativeProducer, value_bytes_max: usize) -> Result<Connection, String> {
        let session = &producer.session;
        let stream = session.stream.try_clone().map_err(|e| format!("{}: {e}", session.leader))?;
        stream.set_nonblocking(true).map_err(|e| format!("{}: {e}", session.leader))?;
        let version = session.produce_version;
        let mut topic_data = TopicProduceData::default();
        topic_data.name = TopicName(StrBytes::from_string(producer.topic.clone()));
        topic_data.partition_data = vec![PartitionProduceData::default()];
        let mut request = ProduceRequest::default();
        request.acks = match producer.acks {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        };
        request.timeout_ms = PRODUCE_TIMEOUT_MS;
        request.topic_data = vec![topic_data];
        Ok(Connection {
            stream,
            leader: session.leader.clone(),
            topic: producer.topic.clone(),
            version,
            acks: producer.acks,
            window: Window::new(producer.max_in_flight),
            outbox: Outbox::default(),
            reader: FrameReader::new(READ_BUFFER_BYTES),
            encoder: BatchEncoder::new(producer.compression, value_bytes_max)?,
            header: wire::request_header::<ProduceRequest>(version),
            request,
            next_correlation_id: session.next_correlation_id,
            lost: None,
        })
    }

    /// Queues one Produce request for the record whose value was filled in through
    /// `encoder.value_mut`.
    fn queue(
        &mut self,
        partition: i32,
        key: &[u8],
        header: Header,
        bytes: u64,
    ) -> Result<(), String> {
        let timestamp_ms = i64::try_from(header.sent_ns / 1_000_000).unwrap_or(i64::MAX);
        let batch = self.encoder.encode(key, timestamp_ms)?;
        let correlation_id = self.next_correlation_id;
        // Correlation ids stay positive, as Kafka clients keep them.
        self.next_correlation_id = correlation_id.checked_add(1).unwrap_or(0);
        self.header.correlation_id = correlation_id;
        let data = &mut self.request.topic_data[0].partition_data[0];
        data.index = partition;
        data.records = Some(batch);
        let encoded =
            wire::encode_request(&mut self.outbox.bytes, &self.header, &self.request, self.version);
        // Drop the batch, so that the encoder gets its buffer back.
        self.request.topic_data[0].partition_data[0].records = None;
        encoded?;
        let end_offset = self.outbox.queued_end();
        self.window.push(InFlight { correlation_id, partition, header, bytes, end_offset });
        Ok(())
    }

    /// Writes what the socket takes; with acks=0 a request is done once written.
    fn flush(&mut self, tally: &Tally, clock: &crate::clock::Clock) {
        if self.lost.is_some() || !self.outbox.is_pending() {
            return;
        }
        if let Err(e) = self.outbox.flush(&mut self.stream) {
            self.lose(tally, &format!("write: {e}"));
            return;
        }
        if self.acks == Acks::None {
            let now_ns = clock.wall_ns();
            while let Some(entry) = self.window.complete_written(self.outbox.written_total()) {
                tally.acked(&entry, now_ns);
            }
        }
    }

    /// Waits until the socket is readable (true) or writable with bytes to write, or
    /// `timeout_ns` passed (false).
    fn wait(&self, timeout_ns: u64) -> io::Result<bool> {
        let mut events = libc::POLLIN;
        if self.outbox.is_pending() {
            events |= libc::POLLOUT;
        }
        let mut poll = libc::pollfd { fd: self.stream.as_raw_fd(), events, revents: 0 };
        let timeout = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: ppoll reads one pollfd and one timespec on this stack frame and writes the
        // pollfd's revents; no signal mask is passed.
        let ready = unsafe { libc::ppoll(&mut poll, 1, &timeout, std::ptr::null()) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(error) };
        }
        Ok(poll.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
    }

    /// Reads every response that has arrived and counts its answer as of `now_ns`.
    fn read_answers(&mut self, tally: &Tally, now_ns: u64) {
        while self.lost.is_none() {
            let spare = self.reader.spare();
            let room = spare.len();
            match self.stream.read(spare) {
                Ok(0) => {
                    self.lose(tally, "the broker closed the connection");
                    return;
                }
                Ok(read) => {
                    self.reader.filled(read);
                    if let Err(e) = self.take_answers(tally, now_ns) {
                        self.lose(tally, &e);
                        return;
                    }
                    if read < room {
                        // Most likely all there is; the next ppoll says if not.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.lose(tally, &format!("read: {e}"));
                    return;
                }
            }
        }
    }

    fn take_answers(&mut self, tally: &Tally, now_ns: u64) -> Result<(), String> {
        while let Some(frame) = self.reader.next_frame()? {
            let (entry, answer) = answer(frame, self.version, &self.topic, &mut self.window)?;
            tally.answered(&entry, answer, now_ns);
        }
        Ok(())
    }

    /// Gives the connection up: what is in flight fails, and the producer stops sending.
    fn lose(&mut self, tally: &Tally, reason: &str) {
        let in_flight = self.window.take_all();
        bump(&tally.stats.failed_total, in_flight as u64);
        tally.errors.add(format!(
            "native producer: connection to {} lost with {in_flight} requests in flight: \
             {reason}",
            self.leader
        ));
        self.lost = Some(reason.to_string());
    }
}

/// Runs one native producer until the timeline's end, the quota, or `stop`; then waits up to
/// the drain timeout for the answers still due.
pub fn run(
    setup: ProducerSetup,
    producer: NativeProducer,
    timeline: Arc<Timeline>,
    stop: Arc<AtomicBool>,
) {
    init_thread_timer_slack();
    let stats = Arc::clone(&producer.stats);
    let clock = setup.clock;
    let start_ns = timeline.start_ns();
    let warmup_end_ns = timeline.warmup_end_ns();
    let end_ns = timeline.end_ns();
    let tally = Tally {
        stats: Arc::clone(&stats),
        errors: Arc::clone(&producer.errors),
        warmup_end_ns,
        open_loop: producer.open_loop,
    };
    let finish_sending = |now_ns: u64| {
        stats.send_end_ns.store(now_ns, Ordering::Release);
        stats.done_sending.store(true, Ordering::Release);
    };
    let connection = Connection::new(&producer, setup.record_size.max_bytes());
    // The spec was validated when parsed, so building the sampler cannot fail here.
    let (mut connection, mut keys) = match (connection, KeySampler::new(setup.keys)) {
        (Ok(connection), Ok(keys)) => (connection, keys),
        (Err(message), _) | (_, Err(message)) => {
            tally.errors.add(format!("native producer: {message}"));
            finish_sending(clock.wall_ns());
            return;
        }
    };
    let partitions = producer.session.partitions;
    let mut rng = SmallRng::seed_from_u64(setup.seed);
    let normal = setup.record_size.normal();
    let mut key_buf = [0u8; KEY_BYTES_MAX];
    let mut next_partition = 0i32;
    let origin_ns = start_ns + setup.phase_ns;
    let mut gaps = setup.rate.map(|rate| Gaps::new(rate, setup.arrival));
    let open_loop = gaps.is_some();
    let mut next_intended_ns = origin_ns;
    let mut measured_attempts = 0u64;
    let mut sending = true;
    let mut window_was_full = false;
    let mut drain_deadline_ns = u64::MAX;

    loop {
        let now_ns = clock.wall_ns();
        if sending {
            let quota_reached = setup.quota.is_some_and(|quota| measured_attempts >= quota);
            let over = stop.load(Ordering::Relaxed)
                || connection.lost.is_some()
                || now_ns >= end_ns
                || (open_loop && next_intended_ns >= end_ns);
            if quota_reached || over {
                sending = false;
                // A sender that sent its whole --records quota missed nothing.
                if let (Some(gaps), false) = (gaps.as_mut(), quota_reached) {
                    let cutoff_ns = end_ns.min(now_ns);
                    let missed = count_missed(
                        gaps,
                        &mut rng,
                        next_intended_ns,
                        origin_ns,
                        warmup_end_ns,
                        cutoff_ns,
                    );
                    bump(&stats.missed_measured, missed);
                }
                finish_sending(now_ns);
                drain_deadline_ns = now_ns.saturating_add(duration_ns(setup.drain_timeout));
            }
        }
        if sending {
            for burst in 0..SEND_BURST_MAX {
                let now_ns = if burst == 0 { now_ns } else { clock.wall_ns() };
                let intended_ns = if open_loop { next_intended_ns } else { now_ns };
                let quota_reached = setup.quota.is_some_and(|quota| measured_attempts >= quota);
                if intended_ns > now_ns || intended_ns >= end_ns || quota_reached {
                    break;
                }
                if !connection.window.has_room() {
                    if !window_was_full {
                        bump(&stats.queue_full_waits, 1);
                        window_was_full = true;
                    }
                    break;
                }
                window_was_full = false;
                let size = setup.record_size.sample(&mut rng, normal.as_ref());
                let (key_len, partition) = match keys.next(&mut rng, partitions) {
                    Routing::Key(index) => {
                        let len = write_key(&mut key_buf, index);
                        (len, wire::partition_for_key(&key_buf[..len], partitions))
                    }
                    Routing::Partition(partition) => (0, partition),
                    Routing::Unkeyed => {
                        let partition = next_partition;
                        next_partition = (next_partition + 1) % partitions;
                        (0, partition)
                    }
                };
                let header = Header { run_id: setup.run_id, intended_ns, sent_ns: now_ns };
                let value = connection.encoder.value_mut(size);
                setup.pool.fill(value, &mut rng);
                header.write(value);
                let measured = intended_ns >= warmup_end_ns;
                if measured {
                    measured_attempts += 1;
                }
                let bytes = (size + key_len) as u64;
                match connection.queue(partition, &key_buf[..key_len], header, bytes) {
                    Ok(()) => count_sent(&stats, &header, warmup_end_ns, open_loop),
                    Err(message) => {
                        bump(&stats.failed_total, 1);
                        tally.errors.add(format!("send: {message}"));
                        if measured && open_loop {
                            bump(&stats.missed_measured, 1);
                        }
                    }
                }
                if let Some(gaps) = gaps.as_mut() {
                    next_intended_ns = origin_ns + gaps.next_offset_ns(&mut rng);
                }
            }
        }
        connection.flush(&tally, &clock);
        if !sending {
            if connection.window.is_empty() {
                break;
            }
            if now_ns >= drain_deadline_ns {
                let unanswered = connection.window.take_all();
                bump(&stats.failed_total, unanswered as u64);
                tally.errors.add(format!(
                    "flush: {unanswered} records unacknowledged after the drain timeout"
                ));
                break;
            }
        }
        let wake_ns = if !sending {
            drain_deadline_ns
        } else if !connection.window.has_room() {
            end_ns
        } else if open_loop {
            next_intended_ns.min(end_ns)
        } else {
            // Closed loop with room: only the burst limit stopped the sender.
            0
        };
        let timeout_ns = wake_ns.saturating_sub(clock.wall_ns()).min(WAIT_NS_MAX);
        match connection.wait(timeout_ns) {
            Ok(true) => connection.read_answers(&tally, clock.wall_ns()),
            Ok(false) => {}
            Err(e) => connection.lose(&tally, &format!("ppoll: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::{Encodable, HeaderVersion};

    fn entry(correlation_id: i32, partition: i32, end_offset: u64) -> InFlight {
        let header = Header { run_id: 1, intended_ns: 10, sent_ns: 20 };
        InFlight { correlation_id, partition, header, bytes: 100, end_offset }
    }

    #[test]
    fn the_window_holds_at_most_its_capacity_and_answers_in_order() {
        let mut window = Window::new(2);
        assert!(window.has_room());
        window.push(entry(5, 0, 10));
        window.push(entry(6, 1, 20));
        assert!(!window.has_room(), "two of two in flight");
        assert!(window.complete(6).is_err(), "6 cannot be answered before 5");
        assert_eq!(window.entries.len(), 2, "a mismatch takes nothing");
        assert_eq!(window.complete(5), Ok(entry(5, 0, 10)));
        assert!(window.has_room());
        assert_eq!(window.complete(6), Ok(entry(6, 1, 20)));
        assert!(window.complete(7).is_err(), "nothing in flight");
        assert!(window.is_empty());
    }

    #[test]
    fn with_acks_0_requests_are_done_once_written() {
        let mut window = Window::new(4);
        for (id, end) in [(0, 100), (1, 250), (2, 400)] {
            window.push(entry(id, 0, end));
        }
        assert_eq!(window.complete_written(99), None);
        assert_eq!(window.complete_written(250).map(|e| e.correlation_id), Some(0));
        assert_eq!(window.complete_written(250).map(|e| e.correlation_id), Some(1));
        assert_eq!(window.complete_written(250), None, "request 2 is not all written");
        assert_eq!(window.take_all(), 1);
    }

    /// Takes at most `room` bytes per write, then would block.
    struct Trickle {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let count = buf.len().min(self.room);
            self.room -= count;
            self.taken.extend_from_slice(&buf[..count]);
            Ok(count)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_outbox_keeps_what_the_socket_did_not_take_and_counts_offsets() {
        let mut outbox = Outbox::default();
        let mut socket = Trickle { taken: Vec::new(), room: 3 };
        outbox.bytes.extend_from_slice(b"abcde");
        assert_eq!(outbox.queued_end(), 5);
        outbox.flush(&mut socket).expect("would block is no error");
        assert!(outbox.is_pending());
        assert_eq!(outbox.written_total(), 3);
        outbox.bytes.extend_from_slice(b"fg");
        assert_eq!(outbox.queued_end(), 7, "offsets count the whole stream");
        socket.room = 100;
        outbox.flush(&mut socket).expect("writes");
        assert!(!outbox.is_pending());
        assert_eq!(socket.taken, b"abcdefg");
        assert_eq!((outbox.written_total(), outbox.queued_end()), (7, 7));
        assert!(outbox.bytes.is_empty(), "the buffer is reused from its start");
    }

    fn response_frame(correlation_id: i32, topic: &str, partition: i32, error: i16) -> Vec<u8> {
        let version = 9;
        let mut partition_response = PartitionProduceResponse::default();
        partition_response.index = partition;
        partition_response.error_code = error;
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = TopicName(StrBytes::from_string(topic.to_string()));
        topic_response.partition_responses.push(partition_response);
        let mut response = ProduceResponse::default();
        response.responses.push(topic_response);
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        let mut out = Vec::new();
        header.encode(&mut out, ProduceResponse::header_version(version)).expect("header");
        response.encode(&mut out, version).expect("body");
        out
    }

    #[test]
    fn responses_are_matched_by_correlation_id_and_read_per_partition() {
        let mut window = Window::new(8);
        for id in 0..4 {
            window.push(entry(id, id % 2, 0));
        }
        let answered = |frame: Vec<u8>, window: &mut Window| answer(&frame, 9, "t", window);
        let (done, acked) = answered(response_frame(0, "t", 0, 0), &mut window).expect("ok");
        assert_eq!((done.correlation_id, acked), (0, Answer::Acked));
        // NOT_LEADER_OR_FOLLOWER (6) is the request's failure, not the stream's.
        let (_, rejected) = answered(response_frame(1, "t", 1, 6), &mut window).expect("ok");
        assert_eq!(rejected, Answer::Rejected("NotLeaderOrFollower".to_string()));
        let (_, wrong) = answered(response_frame(2, "t", 1, 0), &mut window).expect("ok");
        assert_eq!(wrong, Answer::Rejected("no answer for t/0".to_string()));
        assert!(answered(response_frame(9, "t", 1, 0), &mut window).is_err(), "out of order");
        assert!(answer(&[0, 0, 0, 3, 1], 9, "t", &mut window).is_err(), "malformed");
        assert_eq!(window.entries.len(), 1, "errors of the stream take nothing");
    }
}
