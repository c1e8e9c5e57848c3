//! One accepted socket, shared by a connection's reader and writer on one descriptor.
//!
//! The reader and the writer are separate tasks; each holds a `Socket` to the same glommio
//! stream, which keeps separate readiness sources and timeouts for receiving and sending, so
//! neither waits for the other. A poll borrows the stream only for its own duration (the
//! shard is one thread and a poll never polls the other side), so the `RefCell` can never be
//! found borrowed. One descriptor per connection: a process allowed 20,000 descriptors holds
//! some 19,900 connections, where a `dup` for the writer (as before) halved that.
//!
//! Reads are buffered without a buffer per connection. A small read (a frame's length, a
//! small frame) receives into the shard's one scratch buffer, takes what it asked for, and
//! keeps the rest (the next frames of a pipelined client) in a buffer of exactly that size,
//! freed once read. A frame whose bytes are all in that buffer is handed out as a piece of
//! it (`FrameInput::take_received`), not copied again. A connection waiting for bytes holds
//! no buffer at all: glommio's unbuffered receive needs the buffer only during the `recv`
//! call, and waits for readiness with an io_uring poll. A 64 KiB buffer per connection
//! (glommio's `Preallocated`, as before) cost 640 MiB for 10,000 idle connections once the
//! allocator had handed out used (and so zeroed) memory, 855 MiB of broker RSS in all.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};

use glommio::net::TcpStream;

use crate::constants::CONNECTION_READ_BUFFER_BYTES;

/// Reads of at least this many bytes go straight to the socket: a frame body this large
/// rarely shares a `recv` with the next frame worth saving a system call for.
const DIRECT_READ_BYTES_MIN: usize = 16 * 1024;

thread_local! {
    /// The shard's receive buffer for small reads (one thread, one read at a time).
    static SCRATCH: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; CONNECTION_READ_BUFFER_BYTES].into_boxed_slice());
}

/// A handle to a connection's socket; `pair` gives the reader's and the writer's.
pub struct Socket {
    stream: Rc<RefCell<TcpStream>>,
    /// Received and not yet read (only the reader's handle has any).
    pending: BytesMut,
    /// Whether small reads go through the shard's scratch buffer.
    buffered: bool,
}

impl Socket {
    /// The reader's and the writer's handles on `stream`. With `buffered`, small reads take
    /// what one `recv` brings and keep the rest for the next reads; without, each read goes
    /// to the socket (the TLS reader reads ciphertext in large pieces of its own).
    pub fn pair(stream: TcpStream, buffered: bool) -> (Socket, Socket) {
        let stream = Rc::new(RefCell::new(stream));
        let handle = |stream| Socket { stream, pending: BytesMut::new(), buffered };
        (handle(stream.clone()), handle(stream))
    }

    /// Shuts the socket down for both sides (a synchronous system call, as glommio's own).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown(2) on a descriptor this handle keeps open; no pointers.
        if unsafe { libc::shutdown(self.as_raw_fd(), how) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.borrow().set_write_timeout(timeout).map_err(io::Error::from)
    }

    pub fn set_nodelay(&self, value: bool) -> io::Result<()> {
        self.stream.borrow().set_nodelay(value).map_err(io::Error::from)
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.borrow().as_raw_fd()
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let n = buf.len().min(this.pending.len());
            buf[..n].copy_from_slice(&this.pending[..n]);
            this.pending.advance(n);
            if this.pending.is_empty() {
                this.pending = BytesMut::new();
            }
            return Poll::Ready(Ok(n));
        }
        let mut stream = this.stream.borrow_mut();
        if !this.buffered || buf.len() >= DIRECT_READ_BYTES_MIN {
            return Pin::new(&mut *stream).poll_read(cx, buf);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let received = match Pin::new(&mut *stream).poll_read(cx, &mut scratch[..]) {
                Poll::Ready(Ok(received)) => received,
                other => return other,
            };
            let n = buf.len().min(received);
            buf[..n].copy_from_slice(&scratch[..n]);
            if received > n {
                this.pending = BytesMut::from(&scratch[n..received]);
            }
            Poll::Ready(Ok(n))
        })
    }
}

/// A connection's input as the frame reader (`net::read_body`) sees it: a byte stream that
/// may say how much of it has already arrived.
pub trait FrameInput: AsyncRead + Unpin {
    /// The next `size` bytes, if they have all arrived and are held here: taken without a
    /// wait and without a copy.
    fn take_received(&mut self, _size: usize) -> Option<BytesMut> {
        None
    }

    /// How many bytes can be read now without waiting (0 when not known).
    fn received(&self) -> usize {
        0
    }

    /// Whether `receive_now` can receive: the frame reader then reads into memory it has not
    /// zeroed, and waits with small reads; otherwise it zeroes its buffer and reads into it.
    fn receives_uninit(&self) -> bool {
        false
    }

    /// Receives into `spare`, memory not yet initialised, what can be had without waiting:
    /// `Some(Ok(n))` wrote its first `n` bytes (0: the stream ended), `None` has nothing now.
    fn receive_now(&mut self, _spare: &mut [MaybeUninit<u8>]) -> Option<io::Result<usize>> {
        None
    }
}

impl FrameInput for Socket {
    fn take_received(&mut self, size: usize) -> Option<BytesMut> {
        if size == 0 || self.pending.len() < size {
            return None;
        }
        let frame = self.pending.split_to(size);
        if self.pending.is_empty() {
            self.pending = BytesMut::new();
        }
        Some(frame)
    }

    /// What is held here and what waits in the socket's receive queue (`FIONREAD`, one
    /// system call).
    fn received(&self) -> usize {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which outlives the call.
        let asked = unsafe { libc::ioctl(self.as_raw_fd(), libc::FIONREAD, &mut queued) };
        let queued = if asked == 0 { usize::try_from(queued).unwrap_or(0) } else { 0 };
        self.pending.len() + queued
    }

    fn receives_uninit(&self) -> bool {
        self.buffered
    }

    /// What is held here, else a non-blocking recv(2) straight into `spare`.
    fn receive_now(&mut self, spare: &mut [MaybeUninit<u8>]) -> Option<io::Result<usize>> {
        if !self.pending.is_empty() {
            let n = spare.len().min(self.pending.len());
            // SAFETY: both ranges are `n` bytes long and do not overlap (`spare` is lent by
            // the caller, `pending` is this handle's own).
            unsafe {
                std::ptr::copy_nonoverlapping(self.pending.as_ptr(), spare.as_mut_ptr().cast(), n)
            };
            self.pending.advance(n);
            if self.pending.is_empty() {
                self.pending = BytesMut::new();
            }
            return Some(Ok(n));
        }
        loop {
            // SAFETY: recv writes at most `spare.len()` bytes into `spare`, memory the caller
            // lends for the call; the caller counts as written only what it returns.
            let received = unsafe {
                libc::recv(
                    self.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if received >= 0 {
                return Some(Ok(received as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return None,
                io::ErrorKind::Interrupted => continue,
                _ => return Some(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_close(cx)
    }
}
