//! What one client may cost: connections, header bytes, body bytes, and time.
//!
//! # Why a proxy needs limits of its own
//!
//! Every open client connection costs the proxy a socket, a task and buffers, and a request being
//! forwarded also holds a backend connection and an in-flight slot that least-connections counts. A
//! client that opens connections and never sends anything, sends its headers one byte a second
//! (slowloris), or promises a megabyte of body and trickles it (slow POST, "R.U.D.Y.") can exhaust a
//! proxy, and through it the backends, with almost no bandwidth. nginx and HAProxy answer with a
//! handful of limits; `[server.limits]` has the same ones, with defaults an operator of either
//! expects:
//!
//! | limit | default | over it | nginx / HAProxy |
//! |---|---|---|---|
//! | `max_connections` | 10 000 | accepted and closed at once, counted in `lb_client_connections_refused_total` | `worker_connections` / `maxconn` |
//! | `max_header_bytes` | 16 KiB | 431, connection closed | `large_client_header_buffers 4 8k` / `tune.bufsize 16384` |
//! | `max_body_bytes` | none | 413 when `Content-Length` says so; a streamed body that passes it has its connection cut | `client_max_body_size 1m` / none |
//! | `header_read_timeout` | 10 s | connection closed | `client_header_timeout 60s` / `timeout http-request 10s` |
//! | `body_read_timeout` | 60 s | connection closed | `client_body_timeout 60s` / `timeout client` |
//! | `idle_timeout` | 60 s | idle keep-alive connection closed | `keepalive_timeout 75s` / `timeout http-keep-alive` |
//! | `send_timeout` | 60 s | a client that takes no response bytes: HTTP/1 connection closed, HTTP/2 stream reset, backend connection released | `send_timeout 60s` / `timeout client` |
//!
//! 16 KiB of headers is HAProxy's figure: twice what one nginx header line may hold, enough for large
//! cookies and bearer tokens, and small enough that ten thousand idle connections cannot pin much
//! memory. The header read timeout follows HAProxy's recommended `timeout http-request 10s` rather than
//! nginx's 60 s: a real client sends its whole head in one packet, so ten seconds only matters to one
//! that is deliberately slow.
//!
//! A reload changes the limits without a restart ([`crate::control::reload`]): `max_connections` at once, the
//! others for connections accepted from then on. A connection keeps the limits it was accepted with,
//! since its parser and its watchdog were set up with them.
//!
//! # Where the timeouts are kept
//!
//! On HTTP/1.x the server loop keeps them itself ([`crate::http::h1::server`]): it knows when it is waiting
//! between requests (`idle_timeout`), for the rest of a head (`header_read_timeout`, from the first
//! byte) or for body bytes (`body_read_timeout`, only while a body read actually waits), with one lazy
//! timer per connection.
//!
//! `send_timeout` is kept where the writing happens: the HTTP/1 loop's writer
//! ([`crate::server::http1`]) and, for HTTP/2, a per-stream sweeper (`server/h2_streams.rs`), since
//! an HTTP/2 client stops a stream with flow control rather than a full socket.
//!
//! # The HTTP/2 connection watchdog
//!
//! hyper's HTTP/2 server has no such phases, so an HTTP/2 connection gets a small state machine
//! ([`ConnWatch`]) that sees every read through [`WatchedIo`], and the proxy tells it when a request
//! starts and when its response ends:
//!
//! ```text
//!            bytes arrive              service called                response ends
//!   Idle ----------------> Head ----------------------> Active ----------------------> Idle
//!   (idle_timeout since    (header_read_timeout since   (with a body: body_read_timeout since the
//!    the last response)     the first byte)              last byte read; without: no limit here,
//!                                                        the upstream timeouts bound it)
//! ```
//!
//! A deadline that passes drops the connection: the client sees it close, the request body it was
//! streaming ends in an error, and the backend connection carrying it is closed too, so a trickled
//! body cannot hold a backend forever.
//!
//! On HTTP/2 the same watchdog sees frames, not messages: any bytes on an idle connection (a client's
//! `PING`, say) start the header clock, so an HTTP/2 connection that pings but sends no request for
//! `header_read_timeout` is closed; a client simply opens a new one.
//!
//! The body size limit counts bytes on the wire after the head, so chunked framing counts too, and
//! the head's own size is allowed on top. A body that declares its length is refused with 413 before
//! anything is forwarded; only a chunked body can run over, and then the connection is cut.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::config::ServerLimits;

/// Client connections open now, shared by every worker, with the cap and the count of refusals. Lives
/// in [`crate::observe::metrics::Metrics`], which renders it.
#[derive(Debug)]
pub struct ConnectionCount {
    open: AtomicUsize,
    max: AtomicUsize,
    refused: AtomicU64,
}

/// One counted connection; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionSlot {
    count: Arc<ConnectionCount>,
}

impl ConnectionCount {
    /// A count with this cap.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionCount {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            refused: AtomicU64::new(0),
        })
    }

    /// Change the cap (connections already open stay).
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A place for one more connection, or `None` (counted as a refusal) when the cap is reached.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        // Increment first and undo when over: one atomic op in the common case; being briefly one
        // over under a race between workers is harmless.
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= self.max.load(Ordering::Relaxed) {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionSlot { count: Arc::clone(self) })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the cap was reached, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::Relaxed);
    }
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const ACTIVE: u8 = 2;

/// One client connection's timeouts and body accounting (see the module docs).
///
/// Only its own worker thread touches it, but an upgraded connection (WebSocket) hands its I/O to
/// hyper as `Send`, so the I/O wrapper's handle must be an `Arc` and the fields atomics; all are
/// relaxed, as nothing else is ordered by them. Instants are kept as nanoseconds since `base`.
#[derive(Debug)]
pub struct ConnWatch {
    limits: ServerLimits,
    base: Instant,
    /// `IDLE` (between requests, since `phase_since`), `HEAD` (first bytes of a request arrived at
    /// `phase_since`, headers incomplete) or `ACTIVE` (requests being served; HTTP/2 may have several).
    phase: AtomicU8,
    phase_since: AtomicU64,
    /// Requests whose response has not ended.
    active: AtomicU32,
    /// Of those, requests that came with a body.
    with_body: AtomicU32,
    last_read: AtomicU64,
    /// Bytes read while a request with a body was active.
    body_bytes: AtomicU64,
    /// Wakes the watchdog when a deadline may have moved *earlier* (a phase change, a body over the
    /// limit); it sleeps until the current deadline otherwise, so an idle connection costs no wake-ups.
    changed: tokio::sync::Notify,
}

impl ConnWatch {
    /// A watch for a connection accepted now.
    pub fn new(limits: ServerLimits) -> Arc<Self> {
        Arc::new(ConnWatch {
            limits,
            base: Instant::now(),
            phase: AtomicU8::new(IDLE),
            phase_since: AtomicU64::new(0),
            active: AtomicU32::new(0),
            with_body: AtomicU32::new(0),
            last_read: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// The limits it enforces.
    pub fn limits(&self) -> ServerLimits {
        self.limits
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    /// The proxy received a request's head. Hold the returned guard until its response has ended.
    pub fn request_started(self: &Arc<Self>, has_body: bool) -> RequestGuard {
        self.phase.store(ACTIVE, Relaxed);
        self.active.fetch_add(1, Relaxed);
        if has_body {
            if self.with_body.fetch_add(1, Relaxed) == 0 {
                self.body_bytes.store(0, Relaxed);
            }
            self.last_read.store(self.now(), Relaxed);
        }
        self.changed.notify_one();
        RequestGuard { watch: Arc::clone(self), has_body }
    }

    fn read(&self, n: usize) {
        let now = self.now();
        self.last_read.store(now, Relaxed);
        match self.phase.load(Relaxed) {
            IDLE => {
                self.phase_since.store(now, Relaxed);
                self.phase.store(HEAD, Relaxed);
                self.changed.notify_one();
            }
            ACTIVE if self.with_body.load(Relaxed) > 0 => {
                self.body_bytes.fetch_add(n as u64, Relaxed);
                if self.body_too_large() {
                    self.changed.notify_one();
                }
            }
            _ => {}
        }
    }

    /// When the connection must be dropped if nothing changes, and why; `None`: no deadline now.
    pub fn deadline(&self) -> Option<(Instant, &'static str)> {
        let since = self.at(self.phase_since.load(Relaxed));
        match self.phase.load(Relaxed) {
            IDLE => Some((since + self.limits.idle_timeout, "idle timeout")),
            HEAD => Some((since + self.limits.header_read_timeout, "header read timeout")),
            _ if self.with_body.load(Relaxed) > 0 => Some((
                self.at(self.last_read.load(Relaxed)) + self.limits.body_read_timeout,
                "body read timeout",
            )),
            _ => None,
        }
    }

    /// True when a streamed body has passed `max_body_bytes` (plus one head's worth of slack: the
    /// count is of raw bytes and may include the head's tail and chunk framing).
    pub fn body_too_large(&self) -> bool {
        self.limits.max_body_bytes.is_some_and(|max| {
            self.with_body.load(Relaxed) > 0
                && self.body_bytes.load(Relaxed) > max.saturating_add(self.limits.max_header_bytes as u64)
        })
    }

    /// Resolves when the connection has broken a limit: the caller drops it. Never resolves for a
    /// connection that behaves.
    pub async fn expired(&self) -> &'static str {
        // Within a phase a deadline only moves later (a read pushes the body deadline on), so sleeping
        // until it and checking again is exact; a change that can bring it earlier notifies.
        loop {
            if self.body_too_large() {
                return "request body over max_body_bytes";
            }
            let changed = self.changed.notified();
            match self.deadline() {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Marks one request as active on its connection until dropped (when its response body ends or is
/// abandoned).
#[derive(Debug)]
pub struct RequestGuard {
    watch: Arc<ConnWatch>,
    has_body: bool,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let w = &self.watch;
        if self.has_body {
            w.with_body.fetch_sub(1, Relaxed);
        }
        if w.active.fetch_sub(1, Relaxed) == 1 {
            w.phase_since.store(w.now(), Relaxed);
            w.phase.store(IDLE, Relaxed);
        }
        w.changed.notify_one();
    }
}

/// A response body that keeps its request marked active (see [`ConnWatch::request_started`]) until it
/// ends or is dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> Tracked<B> {
    /// Wrap `inner`, holding `guard`.
    pub fn new(inner: B, guard: RequestGuard) -> Self {
        Tracked { inner, _guard: guard }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection's I/O, reporting every read to its [`ConnWatch`].
#[derive(Debug)]
pub struct WatchedIo<T> {
    inner: T,
    watch: Arc<ConnWatch>,
}

impl<T> WatchedIo<T> {
    /// Wrap `inner`.
    pub fn new(inner: T, watch: Arc<ConnWatch>) -> Self {
        WatchedIo { inner, watch }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.watch.read(n);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_body_bytes: Some(100),
            ..ServerLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_own_deadline() {
        let w = ConnWatch::new(limits());
        let t0 = Instant::now();
        // A new connection is idle: 75 s.
        assert_eq!(w.deadline(), Some((t0 + Duration::from_secs(75), "idle timeout")));
        // First byte 5 s later: the head must be complete 10 s after it, whatever the idle time was.
        tokio::time::advance(Duration::from_secs(5)).await;
        w.read(1);
        assert_eq!(w.deadline(), Some((t0 + Duration::from_secs(15), "header read timeout")));
        // A GET without a body: no client-side deadline while it is served.
        let get = w.request_started(false);
        assert_eq!(w.deadline(), None);
        drop(get);
        let t1 = Instant::now();
        assert_eq!(w.deadline(), Some((t1 + Duration::from_secs(75), "idle timeout")));
        // A POST: 60 s from the last byte read, moved on by every read.
        let post = w.request_started(true);
        tokio::time::advance(Duration::from_secs(30)).await;
        w.read(10);
        let t2 = Instant::now();
        assert_eq!(w.deadline(), Some((t2 + Duration::from_secs(60), "body read timeout")));
        assert!(!w.body_too_large());
        // 100 bytes allowed plus 16 KiB of slack for the head.
        w.read(16 * 1024 + 91);
        assert!(w.body_too_large());
        drop(post);
        assert!(!w.body_too_large(), "the count belongs to a request that ended");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_fires_at_the_deadline_and_not_before() {
        let w = ConnWatch::new(limits());
        let t0 = Instant::now();
        w.read(1);
        let why = w.expired().await;
        assert_eq!(why, "header read timeout");
        assert_eq!(Instant::now() - t0, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_that_moves_earlier_wakes_the_watchdog() {
        // Idle for 75 s, but the first byte at 5 s starts the 10 s header clock: cut at 15 s, not 75 s.
        let w = ConnWatch::new(limits());
        let t0 = Instant::now();
        let watcher = Arc::clone(&w);
        let cut = tokio::spawn(async move { watcher.expired().await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        w.read(1);
        let why = cut.await.unwrap_or("join failed");
        assert_eq!(why, "header read timeout");
        assert_eq!(Instant::now() - t0, Duration::from_secs(15));
    }

    #[test]
    fn connection_count_caps_and_frees() {
        let count = ConnectionCount::new(2);
        let a = count.try_acquire();
        let b = count.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(count.try_acquire().is_none(), "a third is refused");
        assert_eq!((count.open(), count.refused()), (2, 1));
        drop(a);
        assert!(count.try_acquire().is_some(), "a freed place is reused");
    }
}
