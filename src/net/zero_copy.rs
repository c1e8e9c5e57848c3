//! Writing a response: small byte runs are gathered into one write; large in-memory record
//! data (the batch cache) is written directly from its `Bytes`; file regions go from the page
//! cache to the socket with `sendfile`, with no copy through user space.
//!
//! `sendfile` runs on the shard's reader threads (`readers`: it may wait for the disk), on a
//! non-blocking socket, one bounded call at a time. When a call finds the socket full, the
//! connection waits for room on its own executor, where waiting costs nothing: glommio has no
//! public "wait until writable", but a write through the stream waits for exactly that, so
//! the next few KiB of the region are read (from the page cache the `sendfile` just filled,
//! without blocking; from a reader thread otherwise) and written through the stream, then
//! `sendfile` goes on. A consumer that stops reading therefore holds no thread, only its own
//! connection, until the stream's write timeout closes it. Only bytes that will never be
//! rewritten are read this way (see `Segment::stable_end`).

use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;

use crate::net::readers::Readers;
use crate::net::socket::Socket;
use crate::storage::log::ReadChunk;

/// Memory chunks up to this size are copied into one gathered write.
const GATHER_BYTES_MAX: usize = 16 * 1024;

/// Most bytes one `sendfile` call may send: bounds how long a cold read holds a reader
/// thread (a disk read of this much), so that other connections' reads take turns.
const SENDFILE_CALL_BYTES_MAX: u64 = 1024 * 1024;

/// Bytes written through the stream to wait for room when the socket is full.
const WRITABLE_WAIT_BYTES: u64 = 16 * 1024;

/// Makes the socket non-blocking for `sendfile` (glommio itself sends and receives with
/// MSG_DONTWAIT, so this changes nothing for it). The flag is on the open socket, shared by
/// the reader and the writer.
pub fn prepare_socket(stream: &Socket) {
    let fd = stream.as_raw_fd();
    // SAFETY: fcntl on a descriptor the stream keeps open; no pointers.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

pub async fn send(
    stream: &mut Socket,
    chunks: Vec<ReadChunk>,
    readers: &Readers,
) -> Result<(), String> {
    let mut gathered = BytesMut::with_capacity(GATHER_BYTES_MAX);
    for chunk in chunks {
        match chunk {
            ReadChunk::Memory(bytes) if bytes.len() <= GATHER_BYTES_MAX => {
                if gathered.len() + bytes.len() > GATHER_BYTES_MAX {
                    write(stream, &mut gathered).await?;
                }
                gathered.extend_from_slice(&bytes);
            }
            ReadChunk::Memory(bytes) => {
                write(stream, &mut gathered).await?;
                stream.write_all(&bytes).await.map_err(|e| format!("write: {e}"))?;
            }
            ReadChunk::File { file, position, len } => {
                write(stream, &mut gathered).await?;
                send_file(stream, readers, file, position, len).await?;
            }
        }
    }
    write(stream, &mut gathered).await
}

async fn write(stream: &mut Socket, gathered: &mut BytesMut) -> Result<(), String> {
    if gathered.is_empty() {
        return Ok(());
    }
    stream.write_all(gathered).await.map_err(|e| format!("write: {e}"))?;
    gathered.clear();
    Ok(())
}

/// Sends `len` bytes of `file` from `position`: `sendfile` on a reader thread while the
/// socket takes them, a wait on the executor when it is full.
async fn send_file(
    stream: &mut Socket,
    readers: &Readers,
    file: Arc<crate::storage::files::Buffered>,
    mut position: u64,
    len: u64,
) -> Result<(), String> {
    let end = position + len;
    let socket = stream.as_raw_fd();
    while position < end {
        let count = (end - position).min(SENDFILE_CALL_BYTES_MAX);
        let source = file.clone();
        // The stream (so the socket descriptor) outlives the call: this task holds it while
        // it waits for the result.
        let sent = readers
            .run(move || sendfile_once(socket, source.as_raw_fd(), position, count))
            .await
            .ok_or("the reader threads stopped")?
            .map_err(|e| format!("sendfile: {e}"))?;
        position += sent;
        if sent < count && position < end {
            // The socket is full: wait for room by writing the next bytes through the stream.
            let piece = (end - position).min(WRITABLE_WAIT_BYTES) as usize;
            let bytes = match read_cached(&file, position, piece) {
                Some(bytes) => bytes,
                None => {
                    let source = file.clone();
                    readers
                        .run(move || read_at(&source, position, piece))
                        .await
                        .ok_or("the reader threads stopped")?
                        .map_err(|e| format!("read: {e}"))?
                }
            };
            stream.write_all(&bytes).await.map_err(|e| format!("write: {e}"))?;
            position += bytes.len() as u64;
        }
    }
    Ok(())
}

/// One `sendfile` of at most `count` bytes on a non-blocking socket: the bytes sent, 0 when
/// the socket is full. For a reader thread (it may wait for the disk).
fn sendfile_once(socket: i32, file: i32, position: u64, count: u64) -> std::io::Result<u64> {
    let mut offset = position as libc::off_t;
    loop {
        // SAFETY: both descriptors are open (the caller holds the stream and an Arc of the
        // file until this returns); `offset` is a valid pointer for the call.
        let sent = unsafe { libc::sendfile(socket, file, &mut offset, count as usize) };
        if sent > 0 {
            return Ok(sent as u64);
        }
        if sent == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shorter than expected",
            ));
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(error),
        }
    }
}

/// Up to `len` bytes at `position` if they are in the page cache, without waiting for the
/// disk (`RWF_NOWAIT`); `None` when they are not (or nothing could be read).
pub(crate) fn read_cached(file: &std::fs::File, position: u64, len: usize) -> Option<Vec<u8>> {
    let mut buffer = vec![0u8; len];
    let iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: len };
    // SAFETY: one iovec over `buffer`, which lives across the call; the descriptor is open.
    let read = unsafe {
        libc::preadv2(file.as_raw_fd(), &iov, 1, position as libc::off_t, libc::RWF_NOWAIT)
    };
    if read <= 0 {
        return None;
    }
    buffer.truncate(read as usize);
    Some(buffer)
}

/// `len` bytes at `position` (fewer at the end of the file); for a reader thread.
pub(crate) fn read_at(file: &std::fs::File, position: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buffer = vec![0u8; len];
    let read = file.read_at(&mut buffer, position)?;
    if read == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file shorter than expected",
        ));
    }
    buffer.truncate(read);
    Ok(buffer)
}
