//! One accepted socket, shared by a connection's reader and writer on one descriptor.
//!
//! The reader and the writer are separate tasks; each holds a `Socket` to the same glommio
//! stream, which keeps separate readiness sources and timeouts for receiving and sending, so
//! neither waits for the other. A poll borrows the stream only for its own duration (the
//! shard is one thread and a poll never polls the other side), so the `RefCell` can never be
//! found borrowed. One descriptor per connection: a process allowed 20,000 descriptors holds
//! some 19,900 connections, where a `dup` for the writer (as before) halved that.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{Preallocated, TcpStream};

/// A handle to a connection's socket; `pair` gives the reader's and the writer's.
pub struct Socket(Rc<RefCell<TcpStream<Preallocated>>>);

impl Socket {
    /// The reader's and the writer's handles on `stream`, received through a buffer of
    /// `read_buffer_bytes` (0: none, each read goes to the socket).
    pub fn pair(stream: TcpStream, read_buffer_bytes: usize) -> (Socket, Socket) {
        let shared =
            Rc::new(RefCell::new(stream.buffered_with(Preallocated::new(read_buffer_bytes))));
        (Socket(shared.clone()), Socket(shared))
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
        self.0.borrow().set_write_timeout(timeout).map_err(io::Error::from)
    }

    pub fn set_nodelay(&self, value: bool) -> io::Result<()> {
        self.0.borrow().set_nodelay(value).map_err(io::Error::from)
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.borrow().as_raw_fd()
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}
