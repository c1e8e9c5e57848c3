//! The network edge: one listener per shard (SO_REUSEPORT spreads connections over cores),
//! one task per connection, requests answered strictly in order.
//!
//! A connection processes one request at a time, as Kafka does (it mutes a channel while a
//! request is in flight), so pipelined requests are answered in order by construction.

pub mod zero_copy;

use std::cell::Cell;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::api::{self, Outcome};
use crate::shard::Shard;

/// Counts requests being processed, so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    pub requests: Cell<usize>,
    pub closing: Cell<bool>,
}

/// Accepts connections until the task is cancelled.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, in_flight: Rc<InFlight>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let shard = shard.clone();
                let in_flight = in_flight.clone();
                glommio::spawn_local(async move {
                    let peer = stream.peer_addr().ok();
                    if let Err(reason) = serve(&shard, stream, &in_flight, peer).await {
                        tracing::debug!(?peer, "connection closed: {reason}");
                    }
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    in_flight: &InFlight,
    peer: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    zero_copy::prepare_socket(&stream);
    let frame_max = shard.config.frame_max_bytes as usize;
    loop {
        let mut size = [0u8; 4];
        if let Err(e) = stream.read_exact(&mut size).await {
            return Err(format!("read: {e}"));
        }
        let size = i32::from_be_bytes(size);
        // Refuse before buffering: a huge or negative length never allocates.
        if size < 8 || size as usize > frame_max {
            return Err(format!("frame size {size} outside 8..={frame_max}"));
        }
        let mut frame = BytesMut::zeroed(size as usize);
        if let Err(e) = stream.read_exact(&mut frame).await {
            return Err(format!("read body: {e}"));
        }
        if in_flight.closing.get() {
            return Err("broker shutting down".into());
        }
        in_flight.requests.set(in_flight.requests.get() + 1);
        let outcome = api::dispatch(shard, frame.freeze(), peer).await;
        let result = match outcome {
            Outcome::Reply(chunks) => zero_copy::send(&mut stream, chunks).await,
            Outcome::NoReply => Ok(()),
            Outcome::Close(reason) => Err(reason),
        };
        in_flight.requests.set(in_flight.requests.get() - 1);
        result?;
        if in_flight.closing.get() {
            let _ = stream.flush().await;
            return Err("broker shutting down".into());
        }
    }
}
