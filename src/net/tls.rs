//! TLS on a connection, on the shard's own executor: rustls's sans-I/O `ServerConnection`
//! fed from the reader's handle of the socket and drained to the writer's, with no second runtime.
//!
//! ```text
//!  socket ─▶ TlsInput (read_tls, process_new_packets, plaintext out) ─▶ the reader
//!  the writer ─▶ send (plaintext in, write_tls under the output lock) ─▶ socket
//! ```
//!
//! Reader and writer share the one `ServerConnection` (`RefCell`, never held across an
//! await). Ciphertext leaves only under the output lock, taken out of rustls and written in
//! the same turn of the lock, so records go out in the order rustls made them even when the
//! reader has something to send (a TLS 1.3 key update answer, an alert).
//!
//! Zero-copy does not apply: record data must pass through user space to be encrypted, so a
//! file region is read (from the page cache when it is there, on a reader thread otherwise)
//! and encrypted in `TLS_WRITE_CHUNK_BYTES` pieces. kTLS would keep `sendfile`; it is not
//! used (see docs/ARCHITECTURE.md, TLS).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::lock::Mutex;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use rustls::{ServerConfig, ServerConnection};

use crate::constants::{TLS_HANDSHAKE_TIMEOUT_MS, TLS_WRITE_CHUNK_BYTES};
use crate::net::readers::Readers;
use crate::net::socket::Socket;
use crate::net::zero_copy::{read_at, read_cached};
use crate::storage::log::ReadChunk;

/// Ciphertext read from the socket at once.
const RAW_READ_BYTES: usize = 32 * 1024;

/// The state the reader and the writer of a TLS connection share.
pub struct TlsShared {
    connection: RefCell<ServerConnection>,
    output: Mutex<Socket>,
}

/// The reader's side: plaintext out of the socket's ciphertext.
pub struct TlsInput {
    socket: Socket,
    shared: Rc<TlsShared>,
    raw: Box<[u8]>,
    start: usize,
    end: usize,
}

/// Runs the handshake on the reader's and the writer's handles of an accepted socket. Gives
/// the reader's input, the shared state for the writer, and the client certificate's DER
/// (mTLS).
pub async fn accept(
    config: Arc<ServerConfig>,
    input: Socket,
    output: Socket,
) -> Result<(TlsInput, Rc<TlsShared>, Option<Vec<u8>>), String> {
    let mut connection =
        ServerConnection::new(config).map_err(|e| format!("TLS set-up failed: {e}"))?;
    // The writer bounds what it hands rustls (`TLS_WRITE_CHUNK_BYTES` per flush).
    connection.set_buffer_limit(None);
    let shared =
        Rc::new(TlsShared { connection: RefCell::new(connection), output: Mutex::new(output) });
    let mut input = TlsInput {
        socket: input,
        shared: shared.clone(),
        raw: vec![0u8; RAW_READ_BYTES].into_boxed_slice(),
        start: 0,
        end: 0,
    };
    let handshake = async {
        loop {
            flush(&shared).await?;
            if !shared.connection.borrow().is_handshaking() {
                return Ok(());
            }
            if !input.feed().await? {
                return Err("the client closed the connection during the TLS handshake".into());
            }
        }
    };
    let timeout = async {
        glommio::timer::sleep(Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS)).await;
        Err(format!("TLS handshake not done in {TLS_HANDSHAKE_TIMEOUT_MS} ms"))
    };
    futures_lite::future::or(handshake, timeout).await?;
    let certificate = shared
        .connection
        .borrow()
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|certificate| certificate.as_ref().to_vec());
    Ok((input, shared, certificate))
}

impl TlsInput {
    /// Reads ciphertext from the socket and hands it to rustls, until some was taken in.
    /// False at the end of the stream. A TLS error is answered with its alert (flushed)
    /// before it is returned.
    async fn feed(&mut self) -> Result<bool, String> {
        if self.start == self.end {
            let read = self.socket.read(&mut self.raw).await.map_err(|e| format!("read: {e}"))?;
            if read == 0 {
                return Ok(false);
            }
            (self.start, self.end) = (0, read);
        }
        let result = self.take_in();
        if let Err(e) = result {
            let _ = flush(&self.shared).await;
            return Err(e);
        }
        Ok(true)
    }

    /// Hands the buffered ciphertext to rustls (as much as it takes) and processes it.
    fn take_in(&mut self) -> Result<(), String> {
        let mut connection = self.shared.connection.borrow_mut();
        let mut pending = &self.raw[self.start..self.end];
        let taken = connection.read_tls(&mut pending).map_err(|e| format!("TLS read: {e}"))?;
        self.start += taken;
        connection.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
        Ok(())
    }
}

/// Plaintext is read through rustls: no frame is taken whole from a buffer here.
impl crate::net::socket::FrameInput for TlsInput {}

impl AsyncRead for TlsInput {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let read = this.shared.connection.borrow_mut().reader().read(buf);
            match read {
                // 0: the client's close_notify, the end of the stream.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.start == this.end {
                let socket = Pin::new(&mut this.socket);
                match socket.poll_read(cx, &mut this.raw) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                    Poll::Ready(Ok(n)) => (this.start, this.end) = (0, n),
                }
            }
            if let Err(e) = this.take_in() {
                // The alert rustls queued goes out before the connection closes.
                let shared = this.shared.clone();
                glommio::spawn_local(async move { flush(&shared).await }).detach();
                return Poll::Ready(Err(std::io::Error::other(e)));
            }
            if this.shared.connection.borrow().wants_write() {
                // Something to answer at the TLS level (a key update): the output lock
                // orders it with the writer's records.
                let shared = this.shared.clone();
                glommio::spawn_local(async move { flush(&shared).await }).detach();
            }
        }
    }
}

/// Writes what rustls has to send, under the output lock.
async fn flush(shared: &TlsShared) -> Result<(), String> {
    let mut output = shared.output.lock().await;
    let mut ciphertext = Vec::new();
    loop {
        ciphertext.clear();
        {
            let mut connection = shared.connection.borrow_mut();
            while connection.wants_write() {
                connection.write_tls(&mut ciphertext).map_err(|e| format!("TLS write: {e}"))?;
            }
        }
        if ciphertext.is_empty() {
            return Ok(());
        }
        output.write_all(&ciphertext).await.map_err(|e| format!("write: {e}"))?;
    }
}

/// Encrypts and writes `plaintext`, `TLS_WRITE_CHUNK_BYTES` at a time.
async fn write_plain(shared: &TlsShared, plaintext: &[u8]) -> Result<(), String> {
    for piece in plaintext.chunks(TLS_WRITE_CHUNK_BYTES) {
        shared
            .connection
            .borrow_mut()
            .writer()
            .write_all(piece)
            .map_err(|e| format!("TLS write: {e}"))?;
        flush(shared).await?;
    }
    Ok(())
}

/// The writer's side: an answer's chunks, encrypted. Small memory chunks are gathered into
/// one TLS record run; file regions are read and encrypted piece by piece.
pub async fn send(
    shared: &TlsShared,
    chunks: Vec<ReadChunk>,
    readers: &Readers,
) -> Result<(), String> {
    let mut gathered: Vec<u8> = Vec::with_capacity(TLS_WRITE_CHUNK_BYTES);
    for chunk in chunks {
        match chunk {
            ReadChunk::Memory(bytes) => {
                if gathered.len() + bytes.len() > TLS_WRITE_CHUNK_BYTES && !gathered.is_empty() {
                    write_plain(shared, &gathered).await?;
                    gathered.clear();
                }
                if bytes.len() >= TLS_WRITE_CHUNK_BYTES {
                    write_plain(shared, &bytes).await?;
                } else {
                    gathered.extend_from_slice(&bytes);
                }
            }
            ReadChunk::File { file, position, len } => {
                if !gathered.is_empty() {
                    write_plain(shared, &gathered).await?;
                    gathered.clear();
                }
                let end = position + len;
                let mut at = position;
                while at < end {
                    let piece = (end - at).min(TLS_WRITE_CHUNK_BYTES as u64) as usize;
                    let bytes = match read_cached(&file, at, piece) {
                        Some(bytes) => bytes,
                        None => {
                            let source = file.clone();
                            readers
                                .run(move || read_at(&source, at, piece))
                                .await
                                .ok_or("the reader threads stopped")?
                                .map_err(|e| format!("read: {e}"))?
                        }
                    };
                    write_plain(shared, &bytes).await?;
                    at += bytes.len() as u64;
                }
            }
        }
    }
    if !gathered.is_empty() {
        write_plain(shared, &gathered).await?;
    }
    Ok(())
}

/// Sends close_notify and shuts the socket down (the end of the writer).
pub async fn close(shared: &TlsShared) {
    shared.connection.borrow_mut().send_close_notify();
    let _ = flush(shared).await;
    let output = shared.output.lock().await;
    let _ = output.shutdown(std::net::Shutdown::Both);
}
