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
//!    are closed or idle for too long; otherwise [`connect`] a new one within the connect timeout
//!    (TCP, then the TLS handshake for an upstream with `[upstream.tls]`: see `upstream_tls.rs`).
//! 2. The proxy sends one request on it ([`crate::http::h1::client::send`], in the request's own task).
//! 3. **Return** ([`Pool::put`]): when the response body has ended (not when the headers arrive: HTTP/1.1
//!    cannot start the next request before the previous response is fully read), the proxy's body
//!    wrapper puts it back. A connection whose response was abandoned half-way is dropped instead,
//!    which closes it.
//!
//! Connections are filed by backend address, and each carries the id of how it was made (plain, or
//! TLS with given settings): checkout for an upstream only takes connections of its own kind, so a TLS
//! connection never carries a plain upstream's request, nor the reverse, even when two upstreams (or the
//! same upstream before and after a reload) name the same address.
//!
//! A background sweep every few seconds closes connections that sat idle past their upstream's `idle`
//! timeout, so a quiet proxy does not hold sockets open forever.
//!
//! A pooled connection can die while idle (the backend closed it, or was killed). Checkout skips the ones
//! whose socket already saw the close ([`Conn::is_reusable`], free unless the socket looks readable);
//! one that fails *before any byte of the request was written* is not a failure either: the proxy sends
//! the intact request on another connection; see `proxy.rs`.

use std::cell::RefCell;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use lb_algorithms::Nanos;
use rustc_hash::FxHashMap;

pub use crate::http::h1::client::Conn;
pub use crate::net::backend_tls::ConnectError;
use crate::net::backend_tls::{self, BackendTls};

/// How many idle connections to keep per backend and worker; more are closed when returned. Enough for
/// the concurrency one core can drive.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

struct Idle {
    conn: Conn,
    expires: Nanos,
}

/// One worker's idle connections, by backend address.
///
/// Keyed with `FxHash`, not the standard library's SipHash: the keys are the configured backend
/// addresses (nothing a client chooses, so no flooding to defend against), and the map is read twice
/// per request.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<FxHashMap<String, Vec<Idle>>>,
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

    /// An idle connection to `addr` of the kind `pool_id` names (0 plain, otherwise the upstream's
    /// [`BackendTls::pool_id`]) that is still open and not past its idle deadline at `now`.
    pub fn take(&self, addr: &str, pool_id: u64, now: Nanos) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(addr)?;
        // Newest of our kind first. An address is nearly always used by one kind only, so the match is
        // the last entry and `remove` is a pop; other kinds stay for their own upstream.
        while let Some(i) = list.iter().rposition(|e| e.conn.pool_id() == pool_id) {
            let mut entry = list.remove(i);
            if entry.expires > now && entry.conn.is_reusable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Return a connection whose last response has fully arrived; it may be reused until `expires`.
    pub fn put(&self, addr: &str, conn: Conn, expires: Nanos) {
        let mut idle = self.idle.borrow_mut();
        let entry = Idle { conn, expires };
        match idle.get_mut(addr) {
            Some(list) if list.len() >= MAX_IDLE_PER_BACKEND => {}
            Some(list) => list.push(entry),
            None => {
                // The only allocation a return makes, once per backend and worker.
                idle.insert(addr.to_string(), vec![entry]);
            }
        }
    }

    /// Close connections idle past their deadline, or already closed by the backend.
    pub fn sweep(&self, now: Nanos) {
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain_mut(|e| e.expires > now && e.conn.is_reusable());
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Idle connections held for `addr` (for tests).
    pub fn idle_count(&self, addr: &str) -> usize {
        self.idle.borrow().get(addr).map_or(0, Vec::len)
    }
}

/// Open a new connection to `addr` (`ip:port`, or `host:port` resolved now) within `timeout`: TCP with
/// `TCP_NODELAY`, then the TLS handshake when the upstream has `tls`. No task is spawned: the
/// connection is driven by whichever request uses it.
///
/// The future is boxed: a connect (a DNS lookup, TCP, maybe a TLS handshake) is a large state machine
/// that a pooled request never needs, and inlined it would make every request's future larger.
pub fn connect<'a>(
    addr: &'a str,
    timeout: Duration,
    tls: Option<&'a BackendTls>,
) -> Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + 'a>> {
    Box::pin(async move {
        let stream = backend_tls::connect(addr, timeout, tls).await?;
        Ok(Conn::with_stream(stream, tls.map_or(0, BackendTls::pool_id)))
    })
}
