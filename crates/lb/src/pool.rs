//! Each worker's pool of keep-alive HTTP/1.1 connections to backends.
//!
//! # Why a pool of our own, one per worker
//!
//! Opening a TCP connection per request costs a handshake (a round trip, two extra system calls on each
//! side, a `TIME_WAIT` socket left behind) and is the classic way a proxy falls over under load. So
//! connections are kept open and reused. A shared pool (hyper-util's `Client`) sits behind a mutex that
//! every request on every core takes twice. Here each worker thread owns its pool outright: it is a
//! plain `RefCell<HashMap>` touched only by that thread, and a borrow never lasts across an `.await`,
//! so it can never be held while another task on the same thread wants it.
//!
//! # The life of a connection
//!
//! 1. **Checkout** ([`Pool::take`]): pop the most recently returned idle connection to that backend
//!    (the warmest, and the least likely to have hit the backend's own idle timeout), skipping any that
//!    are closed or idle for too long; otherwise [`connect`] a new one within the connect timeout.
//! 2. The proxy sends one request on it.
//! 3. **Return** ([`Pool::put`]): when the response body has ended (not when the headers arrive: HTTP/1.1
//!    cannot start the next request before the previous response is fully read), the proxy's body
//!    wrapper puts it back. A connection whose response was abandoned half-way is dropped instead; hyper
//!    closes it.
//!
//! A background sweep every few seconds closes connections that sat idle past their upstream's `idle`
//! timeout, so a quiet proxy does not hold sockets open forever.
//!
//! A pooled connection can die while idle (the backend closed it, or was killed). The proxy notices when
//! the request fails *before anything was written* (hyper gives the request back) and then retries on a
//! fresh connection; see `proxy.rs`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use lb_algorithms::Nanos;
use tokio::net::TcpStream;

/// The body type sent upstream: the client's body streamed as it arrives, or nothing at all (which lets a
/// request be re-sent on a retry).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// A connection's sending half.
pub type Sender = SendRequest<UpstreamBody>;

/// How many idle connections to keep per backend and worker; more are closed when returned. Enough for
/// the concurrency one core can drive.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

struct Idle {
    sender: Sender,
    expires: Nanos,
}

/// One worker's idle connections, by backend address.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<String, Vec<Idle>>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle = self.idle.borrow();
        f.debug_map().entries(idle.iter().map(|(k, v)| (k, v.len()))).finish()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Pool::default()
    }

    /// An idle connection to `addr` that is still open and not past its idle deadline at `now`.
    pub fn take(&self, addr: &str, now: Nanos) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(addr)?;
        while let Some(entry) = list.pop() {
            if entry.expires > now && !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Return a connection whose last response has fully arrived; it may be reused until `expires`.
    pub fn put(&self, addr: &str, sender: Sender, expires: Nanos) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let entry = Idle { sender, expires };
        match idle.get_mut(addr) {
            Some(list) if list.len() >= MAX_IDLE_PER_BACKEND => {}
            Some(list) => list.push(entry),
            None => {
                idle.insert(addr.to_string(), vec![entry]);
            }
        }
    }

    /// Close connections idle past their deadline, or already closed by the backend.
    pub fn sweep(&self, now: Nanos) {
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|e| e.expires > now && !e.sender.is_closed());
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Idle connections held for `addr` (for tests).
    pub fn idle_count(&self, addr: &str) -> usize {
        self.idle.borrow().get(addr).map_or(0, Vec::len)
    }
}

/// Why a new connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect or DNS failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The connect timeout passed.
    #[error("connect timeout ({0:?})")]
    Timeout(Duration),
    /// The HTTP/1.1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Open a new connection to `addr` (`ip:port`, or `host:port` resolved now) within `timeout`, with
/// `TCP_NODELAY` (a proxy writes whole requests and wants them on the wire now, not after Nagle's
/// 40 ms). The connection's I/O is driven by a local task, so it stays on this worker. Must be called
/// inside a `tokio::task::LocalSet` (every worker runs in one).
pub async fn connect(addr: &str, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(stream) => stream?,
        Err(_) => return Err(ConnectError::Timeout(timeout)),
    };
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)).await?;
    // The connection task ends when the connection closes; its error (if any) reaches the request that
    // was using it through `send_request`, so there is nothing more to do with it here.
    // On this worker's own thread (a `LocalSet`): the request that waits for this connection runs here
    // too, so waking it never crosses threads.
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
