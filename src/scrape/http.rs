//! The `--metrics-listen` endpoint: a minimal HTTP/1.1 server on one shard's executor (no
//! second runtime), answering `GET /metrics` with the text exposition of every shard.
//!
//! One request per connection (`Connection: close`), at most
//! `METRICS_SCRAPES_IN_FLIGHT_MAX` at once. It runs in a task queue of its own, so that a
//! shard saturated by client requests still schedules it at its share (glommio picks task
//! queues by their runtime weighted by shares): a scrape waits for a turn of the
//! scheduler, not for the client requests queued before it. The text is rendered on the
//! executor's blocking thread pool, off the shard: at 100,000 partitions it is tens of
//! megabytes.

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::Either;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use glommio::{Latency, Shares};

use crate::constants::{
    METRICS_REQUEST_BYTES_MAX, METRICS_SCRAPES_IN_FLIGHT_MAX, METRICS_SCRAPE_TIMEOUT_MS,
};
use crate::metrics::text;
use crate::metrics::ShardReport;
use crate::scrape::Scraper;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (or HEAD: the same head, no body).
    Metrics {
        body: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Starts the endpoint on this shard, in a task queue of its own; runs until the returned
/// task is dropped or cancelled.
pub fn start(scraper: Rc<Scraper>, listener: TcpListener) -> glommio::Task<()> {
    let queue = glommio::executor().create_task_queue(
        Shares::Static(1000),
        Latency::Matters(Duration::from_millis(5)),
        "metrics",
    );
    let serving = glommio::spawn_local_into(serve(scraper, listener), queue);
    // Only fails for a queue that does not exist, and this one was just made.
    serving.unwrap_or_else(|e| unreachable!("metrics task queue: {e}"))
}

async fn serve(scraper: Rc<Scraper>, listener: TcpListener) {
    let slots = Rc::new(Semaphore::new(METRICS_SCRAPES_IN_FLIGHT_MAX as u64));
    loop {
        // Never closed: it lives as long as this loop.
        let Ok(slot) = slots.clone().acquire_static_permit(1).await else { return };
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors, most likely: the scraper retries on its next interval.
                tracing::warn!("metrics endpoint cannot accept a connection: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scraper = scraper.clone();
        // Spawned into the current (metrics) task queue.
        glommio::spawn_local(async move {
            let _slot = slot;
            if let Err(e) = answer(&scraper, stream).await {
                tracing::debug!("metrics request not answered: {e}");
            }
        })
        .detach();
    }
}

async fn answer(scraper: &Scraper, mut stream: TcpStream) -> std::io::Result<()> {
    let timeout = std::io::ErrorKind::TimedOut;
    let head = within(read_head(&mut stream)).await.ok_or(timeout)??;
    let (status, body) = match head.as_deref().map(route).unwrap_or(Route::BadRequest) {
        Route::Metrics { body } => {
            let started = Instant::now();
            let (status, text) = match within(scrape(scraper)).await {
                Some(Ok(text)) => ("200 OK", text),
                Some(Err(reason)) => ("503 Service Unavailable", reason),
                None => ("503 Service Unavailable", "a shard did not answer in time\n".into()),
            };
            let bytes = text.len();
            tracing::debug!(bytes, elapsed_us = started.elapsed().as_micros() as u64, "scraped");
            (status, if body { text } else { String::new() })
        }
        Route::NotFound => ("404 Not Found", "metrics are at /metrics\n".into()),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "use GET\n".into()),
        Route::BadRequest => ("400 Bad Request", "bad request\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown(std::net::Shutdown::Both).await.map_err(std::io::Error::from)
}

/// Every shard's report, merged and rendered (on the blocking pool, off the shard).
async fn scrape(scraper: &Scraper) -> Result<String, String> {
    let mut reports: Vec<ShardReport> = Vec::with_capacity(scraper.shard.shards());
    for (shard, report) in scraper.collect().await.into_iter().enumerate() {
        match report {
            Some(report) => reports.push(*report),
            None => return Err(format!("shard {shard} did not answer (shutting down?)\n")),
        }
    }
    let names = scraper.listener_names();
    let rendered = move || text::render(&reports, &names);
    Ok(glommio::executor().spawn_blocking(rendered).await)
}

/// Reads the request head (up to the blank line); `None` when it is longer than
/// `METRICS_REQUEST_BYTES_MAX` or the client closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > METRICS_REQUEST_BYTES_MAX {
            return Ok(None);
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(Some(head))
}

/// The route of a request head: its first line's method and path (a query is ignored).
fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with(b"HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => Route::Metrics { body: true },
        (b"HEAD", b"/metrics") => Route::Metrics { body: false },
        (b"GET" | b"HEAD", _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

/// `work`, or `None` after `METRICS_SCRAPE_TIMEOUT_MS`.
async fn within<T>(work: impl Future<Output = T>) -> Option<T> {
    let timer = glommio::timer::sleep(Duration::from_millis(METRICS_SCRAPE_TIMEOUT_MS));
    match futures::future::select(Box::pin(work), Box::pin(timer)).await {
        Either::Left((done, _)) => Some(done),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(route(get), Route::Metrics { body: true });
        assert_eq!(route(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"), Route::Metrics { body: true });
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { body: false });
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\x16\x03\x01 garbage"), Route::BadRequest);
    }
}
