//! Writing a response: small byte runs are gathered into one write; large in-memory record
//! data (the batch cache) is written directly from its `Bytes`; file regions go from the page
//! cache to the socket with `sendfile`, with no copy through user space.
//!
//! Why sendfile runs on a helper thread: data written with O_DIRECT is not in the page cache,
//! and a sendfile of cold data blocks in the kernel until the disk answers (measured 7-16 ms
//! for 1 MiB), which would stall every connection and partition on the shard. On a helper
//! thread the shard keeps running; the connection task awaits the helper. The socket is a
//! blocking descriptor (glommio sends with MSG_DONTWAIT), so the helper's sendfile waits for
//! socket space by itself; SO_SNDTIMEO bounds that wait for a consumer that stops reading.
//! Only bytes that will never be rewritten are read this way (see `Segment::stable_end`).

use std::os::fd::AsRawFd;

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::constants::SOCKET_SEND_TIMEOUT_MS;
use crate::storage::log::ReadChunk;

/// Memory chunks up to this size are copied into one gathered write.
const GATHER_BYTES_MAX: usize = 16 * 1024;

pub fn prepare_socket(stream: &TcpStream) {
    let timeout =
        libc::timeval { tv_sec: libc::time_t::from(SOCKET_SEND_TIMEOUT_MS / 1000), tv_usec: 0 };
    // SAFETY: the descriptor is open for the stream's lifetime; the option value is a valid
    // timeval of the size we pass.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &timeout as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

pub async fn send(stream: &mut TcpStream, chunks: Vec<ReadChunk>) -> Result<(), String> {
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
                let socket = stream.as_raw_fd();
                let sent = glommio::executor()
                    .spawn_blocking(move || sendfile_all(socket, file.as_raw_fd(), position, len))
                    .await;
                sent.map_err(|e| format!("sendfile: {e}"))?;
            }
        }
    }
    write(stream, &mut gathered).await
}

async fn write(stream: &mut TcpStream, gathered: &mut BytesMut) -> Result<(), String> {
    if gathered.is_empty() {
        return Ok(());
    }
    stream.write_all(gathered).await.map_err(|e| format!("write: {e}"))?;
    gathered.clear();
    Ok(())
}

/// Sends `len` bytes of `file` from `position`; blocking, for a helper thread.
fn sendfile_all(socket: i32, file: i32, position: u64, len: u64) -> std::io::Result<()> {
    let mut offset = position as libc::off_t;
    let end = position + len;
    while (offset as u64) < end {
        let remaining = (end - offset as u64) as usize;
        // SAFETY: both descriptors are open (the caller awaits this call while holding the
        // stream and an Arc of the file); `offset` is a valid pointer for the call.
        let sent = unsafe { libc::sendfile(socket, file, &mut offset, remaining) };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if error.kind() == std::io::ErrorKind::WouldBlock {
                wait_writable(socket)?;
                continue;
            }
            return Err(error);
        }
        if sent == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shorter than expected",
            ));
        }
    }
    Ok(())
}

/// Waits until the socket can take more bytes, bounded by the send timeout.
fn wait_writable(socket: i32) -> std::io::Result<()> {
    let mut poll = libc::pollfd { fd: socket, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, count 1.
    let ready = unsafe { libc::poll(&mut poll, 1, SOCKET_SEND_TIMEOUT_MS) };
    match ready {
        r if r > 0 => Ok(()),
        0 => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "consumer stopped reading")),
        _ => Err(std::io::Error::last_os_error()),
    }
}
