//! Chunked transfer of a metadata snapshot to a follower (KRaft's FetchSnapshot): the
//! snapshot can be far larger than a controller frame. Pure (STYLE.md R6): offers, chunks
//! and ticks in, steps out; the driver (`node`) does the file and socket work.
//!
//! ```text
//!   leader                                   follower
//!   raft-rs MsgSnapshot (data stripped) ---> offer: not yet that far (index > commit)
//!                                              start: drop partial files, ask position 0
//!   serve: bytes [position, +max_bytes)  <--- FetchSnapshot {index, term, position, max}
//!   SnapshotChunk {size, position, bytes} --> write at position (temp file), ask the next
//!                                              ... position == size: complete: fsync,
//!                                              decode (CRC, fields), step the offer with
//!                                              the bytes into raft-rs, which installs it
//!                                              (rename into place, directory fsync)
//! ```
//!
//! A download is keyed by the node that offered it and the snapshot's index and term. An
//! offer of the same snapshot again (raft-rs offers it every heartbeat round while the
//! follower is behind) only refreshes the message to step; an offer of another snapshot by
//! the same node (it took a newer one meanwhile) keeps the download going: that node still
//! serves its previous snapshot and keeps the log entries after it (`node`), so the
//! follower installs what it started and catches up from the log, as a KRaft follower
//! finishes the snapshot it fetches (a download that outlasted two snapshots gets
//! SNAPSHOT_NOT_FOUND and the next offer starts over). Another leader starts over. A chunk
//! that is not the one awaited (another snapshot, another position: a late duplicate) is
//! ignored; an answer that does not fit (a size that changed, bytes past the size, an empty
//! chunk before the end) or SNAPSHOT_NOT_FOUND (the leader no longer has it) abandons the
//! download, and the leader's next offer starts the next.
//! The request awaited is asked again after `retry_ms` (resumable: from the position
//! reached, the bytes before it stay in the file), and a download with no chunk for
//! `idle_ms` is abandoned (its leader is gone; the new one offers its own).
//!
//! Lifecycle: one `Fetcher` in the Raft driver of shard 0, for the process's life.

use bytes::Bytes;
use raft::prelude::Message;

/// A snapshot's place in the Raft log: the last entry it covers and that entry's term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotKey {
    pub index: u64,
    pub term: u64,
}

/// A follower's request for the bytes of `key` from `position` on (KRaft's FetchSnapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSnapshot {
    /// The Raft id of the node asking (`from`) and of the node asked (`to`).
    pub from: u64,
    pub to: u64,
    pub key: SnapshotKey,
    pub position: u64,
    pub max_bytes: u32,
}

/// Whether the node asked has the snapshot and the position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStatus {
    Ok = 0,
    /// KRaft's SNAPSHOT_NOT_FOUND: neither the node's newest snapshot nor its previous one.
    NotFound = 1,
    /// KRaft's POSITION_OUT_OF_RANGE: a position past the snapshot's end.
    OutOfRange = 2,
}

impl ChunkStatus {
    pub fn from_code(code: u8) -> Option<ChunkStatus> {
        match code {
            0 => Some(ChunkStatus::Ok),
            1 => Some(ChunkStatus::NotFound),
            2 => Some(ChunkStatus::OutOfRange),
            _ => None,
        }
    }
}

/// The answer to a `FetchSnapshot`: bytes of the snapshot from `position`, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub from: u64,
    pub to: u64,
    pub key: SnapshotKey,
    pub status: ChunkStatus,
    /// The whole snapshot's size in bytes (0 unless `Ok`).
    pub size: u64,
    pub position: u64,
    pub bytes: Bytes,
}

/// What the driver does next, in this order: remove partial files, write the bytes at
/// their position, send the request, finish the download.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Remove the partial snapshot files (a download abandoned or started over).
    pub discard: bool,
    /// Write these bytes at their position of the partial file.
    pub write: Option<Write>,
    pub request: Option<FetchSnapshot>,
    /// Every byte is in the file: check it whole, then step this offer with it.
    pub complete: Option<Completed>,
}

/// Bytes of the snapshot `key` for its partial file, at `position`.
#[derive(Debug, PartialEq)]
pub struct Write {
    pub key: SnapshotKey,
    pub position: u64,
    pub bytes: Bytes,
}

/// A download whose bytes are all in the partial file.
#[derive(Debug, PartialEq)]
pub struct Completed {
    pub key: SnapshotKey,
    pub size: u64,
    /// The leader's latest offer (raft-rs's MsgSnapshot, data stripped).
    pub offer: Message,
}

/// The settings of a follower's downloads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes asked per chunk.
    pub chunk_bytes: u32,
    /// Largest snapshot taken (read back whole to install).
    pub size_bytes_max: u64,
    /// Ask again after this long without an answer.
    pub retry_ms: u64,
    /// Give up after this long without a chunk.
    pub idle_ms: u64,
}

/// The follower's side: at most one download at a time.
#[derive(Debug)]
pub struct Fetcher {
    me: u64,
    limits: Limits,
    download: Option<Download>,
}

#[derive(Debug)]
struct Download {
    leader: u64,
    key: SnapshotKey,
    offer: Message,
    /// Bytes written so far (the next position to ask for).
    position: u64,
    /// The size the leader gave with its first chunk.
    size: Option<u64>,
    asked_at_ms: u64,
    progressed_at_ms: u64,
}

impl Fetcher {
    pub fn new(me: u64, limits: Limits) -> Fetcher {
        assert!(limits.chunk_bytes > 0);
        Fetcher { me, limits, download: None }
    }

    /// The download in progress: its snapshot and the bytes it has.
    pub fn progress(&self) -> Option<(SnapshotKey, u64)> {
        self.download.as_ref().map(|d| (d.key, d.position))
    }

    /// An offer (a MsgSnapshot without data) of a snapshot this node needs.
    pub fn offer(&mut self, now_ms: u64, offer: Message) -> Step {
        let leader = offer.from;
        let metadata = offer.get_snapshot().get_metadata();
        let key = SnapshotKey { index: metadata.index, term: metadata.term };
        if let Some(download) = &mut self.download {
            if download.leader == leader && download.key == key {
                download.offer = offer;
                return Step::default();
            }
            if download.leader == leader {
                // A newer snapshot of the same node: finish the one started.
                return Step::default();
            }
        }
        let download = Download {
            leader,
            key,
            offer,
            position: 0,
            size: None,
            asked_at_ms: now_ms,
            progressed_at_ms: now_ms,
        };
        let request = download.request(self.me, self.limits.chunk_bytes);
        self.download = Some(download);
        Step { discard: true, request: Some(request), ..Step::default() }
    }

    /// A chunk from a peer.
    pub fn chunk(&mut self, now_ms: u64, chunk: SnapshotChunk) -> Step {
        let Some(download) = &mut self.download else { return Step::default() };
        let awaited = chunk.from == download.leader
            && chunk.key == download.key
            && chunk.position == download.position;
        if !awaited {
            return Step::default();
        }
        if chunk.status != ChunkStatus::Ok {
            return self.abandon();
        }
        let end = chunk.position.checked_add(chunk.bytes.len() as u64);
        let fits = chunk.size <= self.limits.size_bytes_max
            && download.size.is_none_or(|size| size == chunk.size)
            && end.is_some_and(|end| end <= chunk.size)
            && (!chunk.bytes.is_empty() || chunk.position == chunk.size);
        if !fits {
            return self.abandon();
        }
        download.size = Some(chunk.size);
        download.position += chunk.bytes.len() as u64;
        download.progressed_at_ms = now_ms;
        download.asked_at_ms = now_ms;
        let write = (!chunk.bytes.is_empty()).then_some(Write {
            key: chunk.key,
            position: chunk.position,
            bytes: chunk.bytes,
        });
        if download.position == chunk.size {
            let Some(done) = self.download.take() else { unreachable!("a download is on") };
            let complete = Completed { key: done.key, size: chunk.size, offer: done.offer };
            return Step { write, complete: Some(complete), ..Step::default() };
        }
        let request = download.request(self.me, self.limits.chunk_bytes);
        Step { write, request: Some(request), ..Step::default() }
    }

    /// Time passes: the request awaited is asked again, or the download given up.
    pub fn tick(&mut self, now_ms: u64) -> Step {
        let Some(download) = &mut self.download else { return Step::default() };
        if now_ms >= download.progressed_at_ms + self.limits.idle_ms {
            return self.abandon();
        }
        if now_ms < download.asked_at_ms + self.limits.retry_ms {
            return Step::default();
        }
        download.asked_at_ms = now_ms;
        let request = download.request(self.me, self.limits.chunk_bytes);
        Step { request: Some(request), ..Step::default() }
    }

    fn abandon(&mut self) -> Step {
        self.download = None;
        Step { discard: true, ..Step::default() }
    }
}

impl Download {
    /// The request for the bytes from the position reached.
    fn request(&self, me: u64, max_bytes: u32) -> FetchSnapshot {
        FetchSnapshot {
            from: me,
            to: self.leader,
            key: self.key,
            position: self.position,
            max_bytes,
        }
    }
}

/// The leader's side: the answer to `request` from the snapshots this node serves (`have`:
/// their keys and bytes, the newest and the previous one), at most `max_bytes` (and the
/// request's) of it. A slice of `have`'s bytes, no copy.
pub fn serve<'a>(
    request: &FetchSnapshot,
    have: impl IntoIterator<Item = (SnapshotKey, &'a Bytes)>,
    max_bytes: usize,
) -> SnapshotChunk {
    let mut chunk = SnapshotChunk {
        from: request.to,
        to: request.from,
        key: request.key,
        status: ChunkStatus::NotFound,
        size: 0,
        position: request.position,
        bytes: Bytes::new(),
    };
    let found = have.into_iter().find(|(key, _)| *key == request.key);
    let Some((key, bytes)) = found else { return chunk };
    let size = bytes.len() as u64;
    if request.position > size {
        chunk.status = ChunkStatus::OutOfRange;
        return chunk;
    }
    let start = request.position as usize;
    let take = max_bytes.min(request.max_bytes as usize).max(1);
    let end = bytes.len().min(start.saturating_add(take));
    chunk.key = key;
    chunk.status = ChunkStatus::Ok;
    chunk.size = size;
    chunk.bytes = bytes.slice(start..end);
    chunk
}

#[cfg(test)]
mod tests {
    use raft::prelude::MessageType;

    use super::*;

    const LIMITS: Limits =
        Limits { chunk_bytes: 4, size_bytes_max: 64, retry_ms: 1000, idle_ms: 10_000 };

    fn offer(from: u64, index: u64, term: u64, message_term: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.from = from;
        message.to = 2;
        message.term = message_term;
        let metadata = message.mut_snapshot().mut_metadata();
        metadata.index = index;
        metadata.term = term;
        message
    }

    fn key(index: u64, term: u64) -> SnapshotKey {
        SnapshotKey { index, term }
    }

    fn ask(to: u64, key: SnapshotKey, position: u64) -> FetchSnapshot {
        FetchSnapshot { from: 2, to, key, position, max_bytes: LIMITS.chunk_bytes }
    }

    /// Runs a whole transfer of `snapshot` from leader 1, answering every request with
    /// `serve`, and gives the bytes written (in order of position) and the steps taken.
    fn transfer(snapshot: &Bytes, leader_max: usize) -> (Vec<u8>, usize) {
        let mut fetcher = Fetcher::new(2, LIMITS);
        let the_key = key(40, 3);
        let mut step = fetcher.offer(0, offer(1, 40, 3, 5));
        assert!(step.discard);
        let mut file = Vec::new();
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 1000);
            if let Some(write) = step.write.take() {
                assert_eq!(write.key, the_key);
                assert_eq!(write.position as usize, file.len(), "writes come in order");
                file.extend_from_slice(&write.bytes);
            }
            if let Some(complete) = step.complete.take() {
                assert_eq!(complete.key, the_key);
                assert_eq!(complete.size as usize, file.len());
                assert_eq!(complete.offer.term, 5);
                assert!(fetcher.progress().is_none());
                return (file, steps);
            }
            let request = step.request.take().expect("a request while not complete");
            let chunk = serve(&request, Some((the_key, snapshot)), leader_max);
            step = fetcher.chunk(steps as u64, chunk);
        }
    }

    #[test]
    fn every_size_transfers_whole_in_chunks() {
        for size in 1..=40usize {
            let snapshot: Bytes = (0..size).map(|i| i as u8).collect::<Vec<u8>>().into();
            for leader_max in [1, 3, 4, 100] {
                let (file, steps) = transfer(&snapshot, leader_max);
                assert_eq!(file, snapshot, "size {size}, leader max {leader_max}");
                let chunk = leader_max.min(LIMITS.chunk_bytes as usize);
                assert_eq!(steps - 1, size.div_ceil(chunk), "chunks for size {size}");
            }
        }
    }

    #[test]
    fn a_repeated_or_newer_offer_keeps_the_download_and_another_node_starts_over() {
        let mut fetcher = Fetcher::new(2, LIMITS);
        let first = fetcher.offer(0, offer(1, 40, 3, 5));
        assert_eq!(first.request, Some(ask(1, key(40, 3), 0)));
        let data: Bytes = vec![7; 10].into();
        let step = fetcher.chunk(1, serve(&ask(1, key(40, 3), 0), Some((key(40, 3), &data)), 9));
        let write = Write { key: key(40, 3), position: 0, bytes: data.slice(0..4) };
        assert_eq!(step.write, Some(write));
        assert_eq!(step.request, Some(ask(1, key(40, 3), 4)));
        // The same snapshot offered again (a later term's message): kept, message refreshed.
        assert_eq!(fetcher.offer(2, offer(1, 40, 3, 6)), Step::default());
        assert_eq!(fetcher.progress(), Some((key(40, 3), 4)));
        // Another snapshot of the same node (a newer one): the download goes on with the
        // snapshot started and its offer.
        assert_eq!(fetcher.offer(3, offer(1, 50, 3, 6)), Step::default());
        assert_eq!(fetcher.progress(), Some((key(40, 3), 4)));
        let step = fetcher.chunk(4, serve(&ask(1, key(40, 3), 4), Some((key(40, 3), &data)), 9));
        assert_eq!(step.request, Some(ask(1, key(40, 3), 8)));
        // Another node's: start over.
        let moved = fetcher.offer(4, offer(3, 50, 3, 7));
        assert!(moved.discard);
        assert_eq!(moved.request, Some(ask(3, key(50, 3), 0)));
        // The refreshed offer is the one completed.
        let small: Bytes = vec![1, 2].into();
        let mut fetcher = Fetcher::new(2, LIMITS);
        fetcher.offer(0, offer(1, 40, 3, 5));
        fetcher.offer(1, offer(1, 40, 3, 9));
        fetcher.offer(1, offer(1, 60, 4, 10));
        let done = fetcher.chunk(2, serve(&ask(1, key(40, 3), 0), Some((key(40, 3), &small)), 9));
        let completed = done.complete.expect("complete");
        assert_eq!(completed.key, key(40, 3));
        assert_eq!(completed.offer.term, 9);
        assert_eq!(completed.offer.get_snapshot().get_metadata().index, 40);
        // Gone on the leader meanwhile (two snapshots later): abandoned, the next starts.
        let mut fetcher = Fetcher::new(2, LIMITS);
        fetcher.offer(0, offer(1, 40, 3, 5));
        fetcher.offer(1, offer(1, 60, 4, 6));
        let newer: Bytes = vec![5; 6].into();
        let have = [(key(60, 4), &newer)];
        assert!(fetcher.chunk(2, serve(&ask(1, key(40, 3), 0), have, 9)).discard);
        assert_eq!(fetcher.offer(3, offer(1, 60, 4, 6)).request, Some(ask(1, key(60, 4), 0)));
    }

    #[test]
    fn chunks_not_awaited_are_ignored() {
        let data: Bytes = vec![7; 10].into();
        let mut fetcher = Fetcher::new(2, LIMITS);
        assert_eq!(fetcher.chunk(0, serve(&ask(1, key(40, 3), 0), None, 9)), Step::default());
        fetcher.offer(0, offer(1, 40, 3, 5));
        let good = serve(&ask(1, key(40, 3), 0), Some((key(40, 3), &data)), 9);
        let mut other_node = good.clone();
        other_node.from = 3;
        let mut other_key = good.clone();
        other_key.key = key(40, 4);
        let mut other_position = good.clone();
        other_position.position = 4;
        for chunk in [other_node, other_key, other_position] {
            assert_eq!(fetcher.chunk(1, chunk), Step::default());
            assert_eq!(fetcher.progress(), Some((key(40, 3), 0)));
        }
        assert!(fetcher.chunk(1, good.clone()).write.is_some());
        // The same chunk again (a late duplicate of a retry): its position is behind.
        assert_eq!(fetcher.chunk(2, good), Step::default());
        assert_eq!(fetcher.progress(), Some((key(40, 3), 4)));
    }

    #[test]
    fn answers_that_do_not_fit_abandon_the_download() {
        let data: Bytes = vec![7; 10].into();
        let at = |position| ask(1, key(40, 3), position);
        type Spoil = Box<dyn Fn(&mut SnapshotChunk)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("not found", Box::new(|c| c.status = ChunkStatus::NotFound)),
            ("out of range", Box::new(|c| c.status = ChunkStatus::OutOfRange)),
            ("size changed", Box::new(|c| c.size = 12)),
            ("past the size", Box::new(|c| c.bytes = vec![0; 7].into())),
            ("empty before the end", Box::new(|c| c.bytes = Bytes::new())),
            ("too large", Box::new(|c| c.size = LIMITS.size_bytes_max + 1)),
        ];
        for (name, spoil) in cases {
            let mut fetcher = Fetcher::new(2, LIMITS);
            fetcher.offer(0, offer(1, 40, 3, 5));
            fetcher.chunk(1, serve(&at(0), Some((key(40, 3), &data)), 9));
            let mut chunk = serve(&at(4), Some((key(40, 3), &data)), 9);
            spoil(&mut chunk);
            let step = fetcher.chunk(2, chunk);
            assert!(step.discard && step.request.is_none() && step.write.is_none(), "{name}");
            assert_eq!(fetcher.progress(), None, "{name}");
            // The leader's next offer starts over.
            assert_eq!(fetcher.offer(3, offer(1, 40, 3, 5)).request, Some(at(0)), "{name}");
        }
        // A first chunk may not be larger than the limit either.
        let mut fetcher = Fetcher::new(2, LIMITS);
        fetcher.offer(0, offer(1, 40, 3, 5));
        let big: Bytes = vec![0; 65].into();
        assert!(fetcher.chunk(1, serve(&at(0), Some((key(40, 3), &big)), 9)).discard);
    }

    #[test]
    fn a_lost_answer_is_asked_again_from_the_position_reached_then_given_up() {
        let data: Bytes = vec![7; 10].into();
        let mut fetcher = Fetcher::new(2, LIMITS);
        assert_eq!(fetcher.tick(5), Step::default());
        fetcher.offer(100, offer(1, 40, 3, 5));
        fetcher.chunk(200, serve(&ask(1, key(40, 3), 0), Some((key(40, 3), &data)), 9));
        assert_eq!(fetcher.tick(1199), Step::default());
        assert_eq!(fetcher.tick(1200).request, Some(ask(1, key(40, 3), 4)));
        assert_eq!(fetcher.tick(1300), Step::default());
        assert_eq!(fetcher.tick(2200).request, Some(ask(1, key(40, 3), 4)));
        // A chunk resets both clocks.
        let step = fetcher.chunk(2300, serve(&ask(1, key(40, 3), 4), Some((key(40, 3), &data)), 9));
        assert_eq!(step.request, Some(ask(1, key(40, 3), 8)));
        assert_eq!(fetcher.tick(3299), Step::default());
        // Nothing for idle_ms: abandoned.
        let gone = fetcher.tick(12_300);
        assert!(gone.discard && gone.request.is_none());
        assert_eq!(fetcher.progress(), None);
    }

    #[test]
    fn the_leader_serves_slices_of_its_newest_and_previous_snapshots() {
        let data: Bytes = (0..10u8).collect::<Vec<u8>>().into();
        let have = Some((key(40, 3), &data));
        let chunk = serve(&ask(1, key(40, 3), 8), have, 100);
        assert_eq!((chunk.status, chunk.size, chunk.position), (ChunkStatus::Ok, 10, 8));
        assert_eq!(&chunk.bytes[..], &[8, 9]);
        assert_eq!((chunk.from, chunk.to), (1, 2));
        // The request's max and the leader's both bound it.
        assert_eq!(serve(&ask(1, key(40, 3), 0), have, 3).bytes.len(), 3);
        assert_eq!(serve(&ask(1, key(40, 3), 0), have, 100).bytes.len(), 4);
        // At the end: no bytes; past it: out of range; another snapshot: not found.
        let end = serve(&ask(1, key(40, 3), 10), have, 100);
        assert_eq!((end.status, end.bytes.len()), (ChunkStatus::Ok, 0));
        assert_eq!(serve(&ask(1, key(40, 3), 11), have, 100).status, ChunkStatus::OutOfRange);
        assert_eq!(serve(&ask(1, key(41, 3), 0), have, 100).status, ChunkStatus::NotFound);
        assert_eq!(serve(&ask(1, key(40, 3), 0), None, 100).status, ChunkStatus::NotFound);
        // The previous snapshot is served too.
        let newer: Bytes = vec![9; 3].into();
        let both = [(key(50, 4), &newer), (key(40, 3), &data)];
        let previous = serve(&ask(1, key(40, 3), 2), both, 100);
        assert_eq!(
            (previous.status, previous.size, &previous.bytes[..2]),
            (ChunkStatus::Ok, 10, &[2u8, 3][..])
        );
        assert_eq!(serve(&ask(1, key(50, 4), 0), both, 100).size, 3);
        for code in 0..=3u8 {
            let status = ChunkStatus::from_code(code);
            assert_eq!(status.map(|s| s as u8), (code < 3).then_some(code));
        }
    }
}
