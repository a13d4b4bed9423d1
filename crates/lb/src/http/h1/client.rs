//! The upstream leg's HTTP/1.1 client, run inside the request's own task.
//!
//! # Why not `hyper::client::conn::http1`
//!
//! hyper's client connection is a separate task: the proxy hands it the request through a channel,
//! the connection task writes it, reads the response head and hands that back through a second
//! channel, and each piece of a body crosses a third. On a one-core worker every crossing is a task
//! wake-up and a trip through the scheduler, and `perf` put that machinery, not the parsing, at the top
//! of the proxy's user time. Here the request's own task (the client connection's task in `server.rs`)
//! writes the request head straight into the pooled connection (a `TcpStream`, or TLS over one for an
//! upstream with `[upstream.tls]`: see `upstream_tls.rs`), parses the response head with
//! `httparse` (the parser hyper uses), and the response body is an [`http_body::Body`] that reads the
//! backend's socket when the client side asks for more. Nothing crosses a task. Pingora and HAProxy
//! work the same way: one event loop turn moves bytes from one socket to the other.
//!
//! # What it speaks (RFC 9112)
//!
//! - **Requests**: origin-form head, header names as the `HeaderMap` holds them (lower case, which
//!   HTTP/1.1 allows), then the proxy's forwarding fields (`X-Forwarded-*`, a request id, a `Host` for
//!   a request without one), which are written as bytes rather than inserted into the map first (see
//!   [`Forwarding`]). The body goes with `Content-Length` when the client gave one, otherwise chunked.
//! - **Responses**: body length from, in order: a HEAD request, 1xx/204/304 (no body), a final
//!   `Transfer-Encoding: chunked` (chunked; a `Content-Length` beside it is dropped, as the RFC says),
//!   any other `Transfer-Encoding` or no length at all (the body runs to the close), `Content-Length`
//!   (two equal lines are one: the client gets one). `100 Continue` is skipped (the proxy answers its
//!   own client's `Expect`); other interim answers (`103 Early Hints`, `102`) are kept, their
//!   hop-by-hop and framing fields left out, and go to an HTTP/1.1 client before the final answer
//!   (RFC 9110 section 15.2: a proxy forwards 1xx). A `101` is an error: this client never asks for an
//!   upgrade (the upgrade path has its own), and relaying an unsolicited one would tell the client its
//!   connection now speaks another protocol; the proxy answers 502 instead. Chunk extensions and
//!   trailers are read and dropped.
//! - **Connection-level fields are consumed**: `Transfer-Encoding`, `Keep-Alive`, and a `Connection`
//!   that only says `keep-alive` or `close` decide the framing and reuse here and are not handed on;
//!   a `Connection` naming other fields is, so the proxy removes those (RFC 9110 7.6.1).
//! - **Full duplex**: the request body keeps streaming while the response comes back (an echo backend
//!   answers before it has read everything), and a response may arrive before the request body is
//!   done (a 413): it is forwarded, and that connection is closed afterwards rather than reused.
//! - **No pipelining**: one request at a time per connection.
//!
//! # When a connection goes back to the pool
//!
//! Only when the whole response was read, the whole request body was written, the backend did not say
//! `Connection: close` (or, for HTTP/1.0, did say `keep-alive`), and no byte beyond the response
//! arrived. Anything else closes it: a connection in an unknown state would hand the next request
//! someone else's bytes.
//!
//! # Finding dead idle connections for free
//!
//! A backend that closes an idle connection sends a FIN, which makes the socket readable. tokio
//! remembers readiness from the last `epoll` turn, so [`Conn::is_reusable`] asks for it with a no-op
//! waker: no system call unless the socket looks readable. A close that races the request is still
//! possible; it surfaces as a broken connection, handled by the proxy's retry rules.
//!
//! Over TLS a backend closes with a `close_notify` alert before the FIN, and rustls may have read it
//! (or a harmless session ticket) together with the end of the last response. So the TLS check reads
//! through rustls, still without waiting: nothing to hand over means open and idle; the end of the
//! stream, an error or unasked bytes mean the connection is not reused.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use crate::http::ClientBody;
use crate::http::forwarding::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_LB_EXPLAIN};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::http::h1::{
    Chunk, ChunkStep, chunk_step, is_hop_by_hop, parse_length, put_field, tokens, write_hex,
};
use crate::net::backend_tls::BackendStream;

/// The body sent upstream: the client's body streamed as it arrives, or none (which lets a request be
/// built again for a retry). The client is generic over the body so tests can drive it without a
/// hyper server in front.
pub type UpstreamBody<B = ClientBody> = Option<B>;

/// An error from the client's body, boxed (hyper's own body error type is boxable the same way).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The read buffer's size. A response head and a small body fit in one read.
const READ_BUF: usize = 16 * 1024;
/// The largest response head accepted (hyper's client allows about the same order).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
const MAX_HEADERS: usize = 128;

/// What can go wrong talking to a backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or write failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before the response head (or body) was complete.
    #[error("connection closed before the response was complete")]
    Incomplete,
    /// The response head is not HTTP/1.x.
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    /// The response head is larger than [`MAX_HEAD`].
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The length of the response body cannot be determined safely.
    #[error("invalid response framing: {0}")]
    Framing(&'static str),
    /// A response header value is not a valid header value.
    #[error("invalid response header")]
    Header,
    /// The client's request body broke off (its fault, not the backend's).
    #[error("{0}")]
    ClientBody(BoxError),
    /// One of the exchange's [`Timers`] ran out.
    #[error("{0} timeout")]
    Timeout(Timer),
}

/// The timers of one exchange, each blaming the side that is slow (see [`send`]).
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// When the response head must have arrived, for a request with nothing left to send when the
    /// exchange starts. A request body moves it later by the time the body takes to send: a client
    /// that uploads slowly is never the backend's fault.
    pub head: Instant,
    /// While a request body is sent: how long the backend may leave written bytes unaccepted.
    /// Waiting for the client's next bytes does not count (the client's own timer covers that).
    pub send: Duration,
    /// While the response body is read: how long the backend may stay silent.
    pub read: Duration,
}

/// Which of the [`Timers`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No response head in time.
    Head,
    /// The backend stopped accepting the request body.
    Send,
    /// The backend went silent in the middle of its response body.
    Read,
}

impl std::fmt::Display for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Timer::Head => "response head",
            Timer::Send => "send",
            Timer::Read => "read",
        })
    }
}

/// A failed exchange, and whether the backend may have seen the request.
#[derive(Debug)]
pub struct SendError {
    /// Why.
    pub error: Error,
    /// False when no byte of the request was written and no byte of its body consumed: the request is
    /// intact and can go to another connection or backend, whatever its method.
    pub sent: bool,
}

/// One keep-alive connection to a backend, plain or TLS, with its buffers (kept across requests, so a
/// reused connection allocates nothing for them).
pub struct Conn {
    stream: BackendStream,
    /// 0 for plain TCP; for TLS, the id of the settings it was verified with (the pool keeps the
    /// kinds apart: see `BackendTls::pool_id`).
    pool_id: u64,
    /// Bytes read from the backend: `rbuf[pos..filled]` are not consumed yet. Zeroed once, when the
    /// connection is made (safe code cannot read into uninitialised memory).
    rbuf: Vec<u8>,
    pos: usize,
    filled: usize,
    /// Where request heads and chunk-size lines are written before they are queued.
    wbuf: BytesMut,
    /// Bytes waiting to be written, in order.
    queue: VecDeque<Bytes>,
    /// The deadline for the response head of the request in progress: made with the connection's
    /// first request and moved for each next one. A later deadline only updates tokio's registered
    /// entry (no timer-wheel insert and remove per request, which a `timeout` per request costs).
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.stream.peer_addr().ok()).finish()
    }
}

impl Conn {
    /// Wrap a connected plain TCP stream.
    pub fn new(stream: TcpStream) -> Self {
        Conn::with_stream(BackendStream::Plain(stream), 0)
    }

    /// Wrap a connected stream, plain or TLS, made with the settings `pool_id` stands for.
    pub fn with_stream(stream: BackendStream, pool_id: u64) -> Self {
        Conn {
            stream,
            pool_id,
            rbuf: vec![0; READ_BUF],
            pos: 0,
            filled: 0,
            wbuf: BytesMut::with_capacity(1024),
            queue: VecDeque::with_capacity(4),
            timer: None,
        }
    }

    /// The connection underneath.
    pub fn stream(&self) -> &BackendStream {
        &self.stream
    }

    /// Which pooled connections this one may stand in for: 0 plain, otherwise its TLS settings' id.
    pub fn pool_id(&self) -> u64 {
        self.pool_id
    }

    /// Can this idle connection carry another request? False when the backend closed it (or sent
    /// something unasked). No system call unless the socket looks readable.
    pub fn is_reusable(&mut self) -> bool {
        if self.pos != self.filled {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match &mut self.stream {
            BackendStream::Plain(stream) => match stream.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                // Readiness can be left over from a read that exactly filled the buffer; ask the
                // socket. `WouldBlock` clears it, so the next check is free again.
                Poll::Ready(Ok(())) => {
                    let mut probe = [0u8; 1];
                    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
            },
            // TLS cannot peek at the socket: what arrived may be a record rustls must decrypt first
            // (a session ticket, harmless) or a `close_notify` (the backend is closing), and rustls
            // may already hold such records from the read that ended the last response. So read,
            // through rustls, without waiting: `Pending` means nothing to hand us and the session
            // open (tickets are absorbed on the way); end of stream, an error or unasked bytes mean
            // the connection cannot be trusted with a request. Same cost as the plain check when
            // nothing arrived: tokio answers `Pending` from its readiness flag, without a syscall.
            BackendStream::Tls(tls) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(tls.as_mut()).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.pos..self.filled]
    }

    /// Read more bytes from the backend; `Ok(0)` is end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.pos == self.filled {
            self.pos = 0;
            self.filled = 0;
        } else if self.filled == self.rbuf.len() {
            if self.pos > 0 {
                self.rbuf.copy_within(self.pos..self.filled, 0);
                self.filled -= self.pos;
                self.pos = 0;
            } else {
                // A head longer than the buffer: grow, up to the head limit (checked by the caller).
                let len = self.rbuf.len();
                self.rbuf.resize(len * 2, 0);
            }
        }
        let mut buf = ReadBuf::new(&mut self.rbuf[self.filled..]);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.filled += n;
        Poll::Ready(Ok(n))
    }

    /// Write everything queued. `wrote` turns true once any byte has left.
    fn poll_flush_queue(&mut self, cx: &mut Context<'_>, wrote: &mut bool) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); 4];
            let mut count = 0;
            for (slot, b) in slices.iter_mut().zip(self.queue.iter()) {
                *slot = IoSlice::new(b);
                count += 1;
            }
            let n = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *wrote = true;
            let mut left = n;
            while left > 0 {
                let Some(front) = self.queue.front_mut() else { break };
                if front.len() <= left {
                    left -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        // TLS accepts plaintext into rustls and may leave encrypted records behind when the socket is
        // full; flushing pushes them out (for plain TCP this is a no-op).
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn queue_wbuf(&mut self) {
        let bytes = self.wbuf.split().freeze();
        self.queue.push_back(bytes);
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// As the request's `Content-Length` says (or no body at all).
    Length,
    /// Chunked: the client gave no length.
    Chunked,
}

/// The request side of an exchange: what is left of the body to send.
struct Sending<B> {
    body: UpstreamBody<B>,
    out: RequestFraming,
    /// Everything, body included, has been written.
    done: bool,
    /// Writing failed or was abandoned: the connection cannot be reused.
    failed: bool,
    /// A byte reached the socket or a frame was taken from the client's body.
    sent: bool,
    /// A byte reached the socket since the send timer was last armed.
    progress: bool,
}

enum SendProblem {
    Io(io::Error),
    Client(BoxError),
}

impl<B> Sending<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Move the request forward: write what is queued, then the next body frame, until done or waiting.
    fn poll(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), SendProblem>> {
        loop {
            let mut wrote = false;
            let flushed = conn.poll_flush_queue(cx, &mut wrote);
            if wrote {
                self.sent = true;
                self.progress = true;
            }
            ready!(flushed).map_err(SendProblem::Io)?;
            let Some(body) = self.body.as_mut() else {
                self.done = true;
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    if self.out == RequestFraming::Chunked {
                        conn.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    self.body = None;
                }
                Some(Ok(frame)) => {
                    self.sent = true;
                    // Trailers are dropped: few backends read them, and a proxy may (RFC 9110 6.5.1).
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    if self.out == RequestFraming::Chunked {
                        write_hex(&mut conn.wbuf, data.len());
                        conn.queue_wbuf();
                        conn.queue.push_back(data);
                        conn.queue.push_back(Bytes::from_static(b"\r\n"));
                    } else {
                        conn.queue.push_back(data);
                    }
                }
                Some(Err(e)) => {
                    self.sent = true;
                    return Poll::Ready(Err(SendProblem::Client(e.into())));
                }
            }
        }
    }
}

/// The fields a proxy adds to a request on its way to the backend, written by `encode_head` after the
/// client's own instead of inserted into the request's `HeaderMap`.
///
/// # Why bytes, not map entries
///
/// Each field inserted into a `HeaderMap` is a hash of its name, a probe, maybe a growth of the map,
/// and one more entry to walk when the head is written; then the map is thrown away. Four such fields
/// on every request (`X-Request-Id`, `X-Forwarded-For`, `-Proto`, `-Host`) cost more than the
/// forwarding they describe. Written here, they are a few `memcpy`s into the head being built, and
/// the request's map stays exactly as the client sent it (minus hop-by-hop fields), which is also
/// what lets a retry encode the same head again.
///
/// # What the backend receives
///
/// The same fields, with the same values, as `proxy::add_forwarding_headers` puts into a map
/// (the HTTP/2 and upgrade paths still use it); only their place differs: ours come last.
///
/// - `X-Forwarded-For`: the client's first `X-Forwarded-For` value (a proxy in front of us) with
///   `, <client ip>` appended, or the client's IP alone; further client lines are dropped, one line
///   goes out. (Both parts are valid field values, so the joined one is too: unlike a `HeaderValue`
///   built from them, there is no failure to fall back from.)
/// - `X-Forwarded-Proto`: ours; a client's is dropped (only we know how it reached us).
/// - `X-Forwarded-Host`: the request's `Host` (the last one, as the map scan found it); a client's is
///   dropped, and none goes out for a request without `Host`.
/// - `X-Lb-Explain` is dropped: it is addressed to the proxy.
/// - `X-Request-Id`: a trusted proxy's is forwarded as it is (the proxy's `prepare` removed anyone
///   else's, see `forwarding.rs`); otherwise ours, when there is one to add.
/// - `Host`: for a request without one (HTTP/1.0 may omit it), the backend's address, which differs
///   per attempt.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client's IP, as an `X-Forwarded-For` element.
    pub client_ip: &'a HeaderValue,
    /// `X-Forwarded-Proto`: `http` or `https`.
    pub proto: &'a HeaderValue,
    /// An `X-Request-Id` to add; `None` when the request carries its own.
    pub request_id: Option<&'a HeaderValue>,
    /// A `Host` to add (the backend's address); `None` when the request has one.
    pub host: Option<&'a str>,
    /// The request may carry fields this replaces (`X-Forwarded-*`, `X-Lb-Explain`). False when the
    /// proxy's scan of the request found none, which spares `encode_head` four name comparisons per
    /// line on nearly every request.
    pub replaces: bool,
}

impl Forwarding<'_> {
    /// Write our fields: `prior_for` is the client's first `X-Forwarded-For` value, `host` the
    /// request's `Host`, both seen while its own lines were written.
    fn write(&self, buf: &mut BytesMut, prior_for: Option<&HeaderValue>, host: Option<&HeaderValue>) {
        if let Some(id) = self.request_id {
            put_field(buf, b"x-request-id", id.as_bytes());
        }
        buf.put_slice(b"x-forwarded-for: ");
        if let Some(prior) = prior_for {
            buf.put_slice(prior.as_bytes());
            buf.put_slice(b", ");
        }
        buf.put_slice(self.client_ip.as_bytes());
        buf.put_slice(b"\r\n");
        put_field(buf, b"x-forwarded-proto", self.proto.as_bytes());
        if let Some(host) = host {
            put_field(buf, b"x-forwarded-host", host.as_bytes());
        }
        if let Some(addr) = self.host {
            put_field(buf, b"host", addr.as_bytes());
        }
    }

    /// One of the fields the client may not pass on (ours replace them).
    pub(crate) fn replaced(name: &HeaderName) -> bool {
        *name == X_FORWARDED_FOR
            || *name == X_FORWARDED_PROTO
            || *name == X_FORWARDED_HOST
            || *name == X_LB_EXPLAIN
    }
}

/// Send `request` on `conn` and wait for the response head; with `forwarding`, the proxy's fields go
/// with it (see [`Forwarding`]). On success the request's body has moved into the returned response
/// body, which keeps sending it while the response streams. On failure with `sent == false` the request
/// is untouched (its head is only read, so a retry sends the same one).
///
/// # Which timer runs when
///
/// One timer per connection, measuring one thing at a time, so that a timeout blames the side that
/// is slow:
///
/// - the request head and body are being written and the backend is not taking them: [`Timers::send`]
///   since the last byte it took;
/// - the next piece of the request body is awaited from the client: no backend timer (the client's
///   `body_read_timeout` runs in the server, and its failure is the client's);
/// - everything is sent: the response head is due at [`Timers::head`], moved later by however long
///   the body took (a request without a body starts here at once);
/// - the response body is read: [`Timers::read`] since the backend's last byte (in [`ResponseBody`]).
pub async fn send<B>(
    mut conn: Conn,
    request: &mut Request<UpstreamBody<B>>,
    forwarding: Option<&Forwarding<'_>>,
    timers: Timers,
) -> Result<http::Response<ResponseBody<B>>, SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut timer = match conn.timer.take() {
        Some(mut timer) => {
            timer.as_mut().reset(timers.head);
            timer
        }
        None => Box::pin(tokio::time::sleep_until(timers.head)),
    };
    let out = encode_head(&mut conn.wbuf, request, forwarding);
    conn.queue_wbuf();
    let head_request = request.method() == Method::HEAD;
    let mut sending = Sending { body: None, out, done: false, failed: false, sent: false, progress: false };
    let mut write_error: Option<io::Error> = None;
    // The body is taken only once a byte of the head has left; until then a failure leaves the
    // request whole, to be sent elsewhere.
    let mut body_slot = Some(request.body_mut());
    // When the body started to go out, while it does (a request without one never reads the clock).
    let mut body_since: Option<Instant> = None;
    let mut measuring = Timer::Head;
    // Interim (1xx) answers to hand on, as bytes; empty (no allocation) nearly always.
    let mut interim = BytesMut::new();
    let result = poll_fn(|cx| {
        while !sending.done && !sending.failed {
            match sending.poll(&mut conn, cx) {
                Poll::Ready(Err(SendProblem::Client(e))) => return Poll::Ready(Err(Error::ClientBody(e))),
                Poll::Ready(Err(SendProblem::Io(e))) => {
                    // Keep reading: a backend that refused the body may still have answered.
                    sending.failed = true;
                    write_error = Some(e);
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
            if sending.sent
                && !sending.failed
                && let Some(slot) = body_slot.take()
                && let Some(body) = slot.take()
            {
                sending.body = Some(body);
                sending.done = false;
                body_since = Some(Instant::now());
                continue;
            }
            break;
        }
        let waiting_on_client = match body_since {
            None => false,
            Some(since) => body_timer(&mut sending, &conn, &mut timer, &mut measuring, since, timers),
        };
        if sending.done || sending.failed {
            body_since = None;
        }
        match poll_head(&mut conn, cx, head_request, &mut interim) {
            Poll::Pending if !waiting_on_client && timer.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(Error::Timeout(measuring)))
            }
            polled => polled,
        }
    })
    .await;
    match result {
        Ok(head) => {
            conn.timer = Some(timer);
            Ok(head.into_response(conn, sending, timers.read))
        }
        Err(error) => Err(send_error(error, write_error, sending.sent)),
    }
}

/// What a failed [`send`] reports.
fn send_error(error: Error, write_error: Option<io::Error>, sent: bool) -> SendError {
    match (error, write_error) {
        // Whatever was sent, the backend may be working on it: never resent on another connection.
        (error @ (Error::Timeout(_) | Error::ClientBody(_)), _) => SendError { error, sent: true },
        // Prefer the write error when writing failed first: "broken pipe" says more than "closed".
        (Error::Incomplete | Error::Io(_), Some(e)) => SendError { error: Error::Io(e), sent },
        (error, _) => SendError { error, sent },
    }
}

/// While a request body goes out, point the connection's timer at the side being waited for (see
/// [`send`]). True when that is the client, whose slowness no backend timer may count.
fn body_timer<B>(
    sending: &mut Sending<B>,
    conn: &Conn,
    timer: &mut Pin<Box<Sleep>>,
    measuring: &mut Timer,
    since: Instant,
    timers: Timers,
) -> bool {
    if sending.done || sending.failed {
        // All sent (or the backend stopped reading): the response head is due, as late as the body
        // made it.
        timer.as_mut().reset(timers.head + since.elapsed());
        *measuring = Timer::Head;
        false
    } else if !conn.queue.is_empty() {
        // Bytes wait for the backend: the send timer runs from its last progress.
        if *measuring != Timer::Send || sending.progress {
            sending.progress = false;
            timer.as_mut().reset(Instant::now() + timers.send);
            *measuring = Timer::Send;
        }
        false
    } else {
        // Waiting for the client's next bytes.
        *measuring = Timer::Head;
        true
    }
}

/// Write the request head into `buf`: the request line, the request's fields, then (with
/// `forwarding`) the proxy's own, then the body's framing. Returns how the body will be framed.
///
/// The request is only read: every attempt at it encodes the same head.
pub(crate) fn encode_head<B>(
    buf: &mut BytesMut,
    request: &Request<UpstreamBody<B>>,
    forwarding: Option<&Forwarding<'_>>,
) -> RequestFraming {
    buf.put_slice(request.method().as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(request.uri().path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    buf.put_slice(b" HTTP/1.1\r\n");
    let replaces = forwarding.is_some_and(|f| f.replaces);
    // What our fields and the framing are decided by, picked up on the way rather than looked up (a
    // lookup hashes).
    let (mut host, mut prior_for, mut has_length) = (None, None, false);
    for (name, value) in request.headers() {
        if *name == header::HOST {
            host = Some(value);
        } else if *name == header::CONTENT_LENGTH {
            has_length = true;
        } else if replaces && Forwarding::replaced(name) {
            if *name == X_FORWARDED_FOR && prior_for.is_none() {
                prior_for = Some(value);
            }
            continue;
        }
        put_field(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(forwarding) = forwarding {
        forwarding.write(buf, prior_for, host);
    }
    let out = if has_length || request.body().is_none() {
        RequestFraming::Length
    } else {
        buf.put_slice(b"transfer-encoding: chunked\r\n");
        RequestFraming::Chunked
    };
    buf.put_slice(b"\r\n");
    out
}

/// A parsed response head, before the body is attached.
#[derive(Debug)]
pub struct Head {
    status: StatusCode,
    version: Version,
    fields: Fields,
    framing: Framing,
    keep_alive: bool,
}

impl Head {
    fn into_response<B>(
        self,
        conn: Conn,
        sending: Sending<B>,
        read: Duration,
    ) -> http::Response<ResponseBody<B>> {
        let mut response = http::Response::new(ResponseBody {
            conn: Some(conn),
            sending,
            framing: self.framing,
            keep_alive: self.keep_alive,
            fields: self.fields,
            read,
            read_armed: false,
        });
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        response
    }
}

/// Read until a final (non-1xx) response head is parsed; the interim answers to hand on are added to
/// `interim`, and put in front of the final head's lines (see [`Fields::interim`]).
fn poll_head(
    conn: &mut Conn,
    cx: &mut Context<'_>,
    head_request: bool,
    interim: &mut BytesMut,
) -> Poll<Result<Head, Error>> {
    loop {
        if conn.pos < conn.filled {
            match parse_head(conn.buffered(), head_request)? {
                ParsedHead::Interim(len, forward) => {
                    conn.pos += len;
                    // Bounded like a head: a backend cannot queue up 1xx answers without end.
                    if interim.len() + forward.len() > MAX_HEAD {
                        return Poll::Ready(Err(Error::HeadTooLarge));
                    }
                    interim.extend_from_slice(&forward);
                    continue;
                }
                ParsedHead::Final(len, mut head) => {
                    conn.pos += len;
                    if !interim.is_empty() {
                        // Rare: one copy to put the interim answers in front of the final lines.
                        head.fields.interim = interim.len();
                        interim.extend_from_slice(&head.fields.lines);
                        head.fields.lines = interim.split().freeze();
                    }
                    return Poll::Ready(Ok(head));
                }
                ParsedHead::Partial if conn.filled - conn.pos >= MAX_HEAD => {
                    return Poll::Ready(Err(Error::HeadTooLarge));
                }
                ParsedHead::Partial => {}
            }
        }
        let n = ready!(conn.poll_fill(cx))?;
        if n == 0 {
            return Poll::Ready(Err(Error::Incomplete));
        }
    }
}

/// What [`parse_head`] found at the start of the buffered bytes.
#[derive(Debug)]
pub enum ParsedHead {
    /// Not a whole head yet: read more.
    Partial,
    /// An interim 1xx response of this many bytes, and what of it goes to the client: for `103 Early
    /// Hints` and the other 1xx but `100` (and `101`, which is final), its status line and its
    /// message fields, the hop-by-hop and framing ones left out; empty for `100 Continue`.
    Interim(usize, Bytes),
    /// The final response head, of this many bytes.
    Final(usize, Head),
}

/// Parse one response head from `bytes`. Never panics, whatever the input (see the property test).
pub fn parse_head(bytes: &[u8], head_request: bool) -> Result<ParsedHead, Error> {
    // Uninitialised slots: initialising 128 of them would cost a 4 KiB memset per response.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, bytes, &mut slots);
    let len = match parsing.map_err(Error::Parse)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(ParsedHead::Partial),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Framing("status code"))?;
    if code == 101 {
        // Only the upgrade path asks for a protocol switch, and it has its own client.
        return Err(Error::Framing("101 Switching Protocols to a request that asked for no upgrade"));
    }
    if status.is_informational() {
        return Ok(ParsedHead::Interim(len, interim_head(status, parsed.headers)));
    }
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let declared = Declared::scan(parsed.headers, version)?;
    let no_body = head_request || code == 204 || code == 304;
    let (framing, close, drop_length) = declared.framing(no_body);
    let fields = message_fields(parsed.headers, len, &declared, drop_length);
    Ok(ParsedHead::Final(len, Head { status, version, fields, framing, keep_alive: !close }))
}

/// What of an interim answer goes on to the client: nothing for `100 Continue`, otherwise its status
/// line and its fields (`Link` for `103`), less the hop-by-hop and framing ones, which a 1xx must not
/// carry anyway.
fn interim_head(status: StatusCode, headers: &[httparse::Header<'_>]) -> Bytes {
    if status == StatusCode::CONTINUE {
        return Bytes::new();
    }
    let mut out = BytesMut::with_capacity(64);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for h in headers {
        let name = h.name.as_bytes();
        if is_hop_by_hop(name) || name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        put_field(&mut out, name, h.value);
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// What a response's fields say about its framing and its connection: the first pass over them, in
/// which nothing is copied.
#[derive(Debug, Clone, Copy)]
struct Declared {
    content_length: Option<u64>,
    /// The last coding of the last `Transfer-Encoding` line is `chunked`.
    chunked: bool,
    /// Any Transfer-Encoding at all; with `chunked` last the body is chunked, otherwise it runs to the
    /// close.
    other_coding: bool,
    close: bool,
    /// A `Connection` line that names other fields (they are this connection's too, and left out).
    names_others: bool,
}

impl Declared {
    #[inline]
    fn scan(headers: &[httparse::Header<'_>], version: Version) -> Result<Declared, Error> {
        let mut d = Declared {
            content_length: None,
            chunked: false,
            other_coding: false,
            close: version == Version::HTTP_10,
            names_others: false,
        };
        for h in headers {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_length(h.value).ok_or(Error::Framing("bad content-length"))?;
                if d.content_length.is_some_and(|prior| prior != n) {
                    return Err(Error::Framing("conflicting content-length"));
                }
                d.content_length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Only the last coding decides; `chunked` anywhere but last means read to the close.
                for coding in tokens(h.value) {
                    d.chunked = coding.eq_ignore_ascii_case(b"chunked");
                    d.other_coding = true;
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        d.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        d.close &= version != Version::HTTP_10;
                    } else {
                        d.names_others = true;
                    }
                }
            }
        }
        Ok(d)
    }

    /// How the body is delimited, whether the connection closes after it, and whether `Content-Length`
    /// is left out of what the client gets. Transfer-Encoding wins over Content-Length, which must not
    /// reach the client beside it (RFC 9112 6.3); a sender of both is suspect, so its connection is not
    /// reused either.
    #[inline]
    fn framing(&self, no_body: bool) -> (Framing, bool, bool) {
        let mut close = self.close;
        let drop_length = !no_body && self.other_coding && self.content_length.is_some();
        let framing = if no_body {
            Framing::Length(0)
        } else if self.chunked || self.other_coding {
            close |= self.content_length.is_some();
            if self.chunked {
                // `chunked` last (`gzip, chunked` too): chunked framing; other codings are the client's.
                Framing::Chunked(Chunk::Size)
            } else {
                close = true;
                Framing::Eof
            }
        } else if let Some(n) = self.content_length {
            Framing::Length(n)
        } else {
            close = true;
            Framing::Eof
        };
        (framing, close, drop_length)
    }
}

/// The second pass: the fields that are the message's, as lines for the client. The hop-by-hop ones
/// (RFC 9110 7.6.1) and the framing are this connection's: the proxy frames the body again for its
/// client. This is the whole of what the proxy does with a response head: no map of fields is built,
/// and the lines are written out as they are here (see `server/http1.rs`).
#[inline]
fn message_fields(
    headers: &[httparse::Header<'_>],
    len: usize,
    declared: &Declared,
    drop_length: bool,
) -> Fields {
    let mut lines = BytesMut::with_capacity(len);
    let mut fields = Fields::default();
    for h in headers {
        let name = h.name.as_bytes();
        if is_hop_by_hop(name)
            || (drop_length && name.eq_ignore_ascii_case(b"content-length"))
            || (declared.names_others && named_in_connection(headers, name))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if fields.content_length.is_some() {
                // Equal to the first (unequal ones were refused): one line reaches the client.
                continue;
            }
            fields.content_length = declared.content_length;
        } else if name.eq_ignore_ascii_case(b"date") {
            fields.has_date = true;
        } else if name.eq_ignore_ascii_case(b"x-request-id") {
            fields.has_request_id = true;
        }
        put_field(&mut lines, name, h.value);
    }
    fields.lines = lines.freeze();
    fields
}

/// Is `name` one of the tokens of a `Connection` field among `headers`?
fn named_in_connection(headers: &[httparse::Header<'_>], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| tokens(h.value).any(|token| token.eq_ignore_ascii_case(name)))
}

/// A backend response's header fields as they go on to the client: `name: value` lines (CRLF after
/// each), in the backend's order and spelling, the hop-by-hop and framing fields left out. Written to
/// an HTTP/1 client as they are; turned into a `HeaderMap` only for an HTTP/2 client
/// ([`Fields::append_to`]).
#[derive(Debug, Clone, Default)]
pub struct Fields {
    /// The lines; the first [`Fields::interim`] bytes are interim answers, not fields.
    pub lines: Bytes,
    /// How many bytes at the front of `lines` are interim (1xx) answers, whole (status line, fields,
    /// blank line), which an HTTP/1.1 client gets before the final head (RFC 9110 section 15.2). Kept
    /// in the same buffer so a response without them pays one word, not another `Bytes`.
    pub interim: usize,
    /// The backend's `Content-Length`, when its line is among them.
    pub content_length: Option<u64>,
    /// A `Date` line is among them.
    pub has_date: bool,
    /// An `X-Request-Id` line is among them.
    pub has_request_id: bool,
}

impl Fields {
    /// The final head's field lines, without the interim answers in front.
    pub fn field_lines(&self) -> &[u8] {
        self.lines.get(self.interim..).unwrap_or_default()
    }

    /// The interim answers, for an HTTP/1.1 client (empty nearly always).
    pub fn interim_heads(&self) -> &[u8] {
        self.lines.get(..self.interim).unwrap_or_default()
    }

    /// Each field as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.field_lines().split(|&b| b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r")?;
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], line[colon + 1..].trim_ascii_start()))
        })
    }

    /// Add every field to `headers` (values share the lines' memory). The parser accepted these
    /// names and values already; one `http` would refuse is left out rather than failing the response.
    pub fn append_to(&self, headers: &mut HeaderMap) {
        for (name, value) in self.iter() {
            let Ok(name) = HeaderName::from_bytes(name) else { continue };
            let Ok(value) = HeaderValue::from_maybe_shared(self.lines.slice_ref(value)) else { continue };
            headers.append(name, value);
        }
    }
}

/// How the rest of the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Until the backend closes.
    Eof,
    /// Read completely.
    Done,
}

/// The response body: reads the backend's socket when polled, keeps sending the request body, and
/// gives the connection back ([`ResponseBody::take_reusable`]) when everything was exchanged cleanly.
pub struct ResponseBody<B = ClientBody> {
    conn: Option<Conn>,
    sending: Sending<B>,
    framing: Framing,
    keep_alive: bool,
    /// The response's header fields (the `http::Response` around this body has an empty map).
    fields: Fields,
    /// How long the backend may stay silent mid-body ([`Timers::read`]).
    read: Duration,
    /// The connection's timer is set for the current silence (cleared by every byte read).
    read_armed: bool,
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("framing", &self.framing).finish()
    }
}

impl<B> ResponseBody<B> {
    /// The backend's header fields, to be forwarded.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The fields, taken out (the body keeps an empty set).
    pub fn take_fields(&mut self) -> Fields {
        std::mem::take(&mut self.fields)
    }
}

impl<B> ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The connection, if the exchange is complete and the connection can carry another request.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        let clean = self.framing == Framing::Done
            && self.keep_alive
            && self.sending.done
            && !self.sending.failed
            && self.sending.body.is_none();
        if !clean {
            return None;
        }
        let conn = self.conn.take()?;
        (conn.pos == conn.filled).then_some(conn)
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
        if !self.sending.done && !self.sending.failed {
            match self.sending.poll(conn, cx) {
                Poll::Ready(Ok(())) | Poll::Pending => {}
                // The backend answered and stopped reading; the answer still counts.
                Poll::Ready(Err(SendProblem::Io(_))) => self.sending.failed = true,
                // The client's body broke off: end the response too, the exchange is void.
                Poll::Ready(Err(SendProblem::Client(e))) => {
                    self.sending.failed = true;
                    return Poll::Ready(Some(Err(Error::ClientBody(e))));
                }
            }
        }
        loop {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => return Poll::Ready(None),
            };
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if conn.pos < conn.filled {
                        let take = (conn.filled - conn.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                        let data = Bytes::copy_from_slice(&conn.rbuf[conn.pos..conn.pos + take]);
                        conn.pos += take;
                        let left = left - take as u64;
                        self.framing = if left == 0 { Framing::Done } else { Framing::Length(left) };
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Framing::Eof => {
                    if conn.pos < conn.filled {
                        let data = Bytes::copy_from_slice(conn.buffered());
                        conn.pos = conn.filled;
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Framing::Chunked(state) => {
                    match chunk_step(conn.buffered(), state).map_err(Error::Framing)? {
                        ChunkStep::Data(n, next) => {
                            let data = Bytes::copy_from_slice(&conn.buffered()[..n]);
                            conn.pos += n;
                            self.framing = Framing::Chunked(next);
                            return Poll::Ready(Some(Ok(data)));
                        }
                        ChunkStep::Skip(n, Some(next)) => {
                            conn.pos += n;
                            self.framing = Framing::Chunked(next);
                            continue;
                        }
                        ChunkStep::Skip(n, None) => {
                            conn.pos += n;
                            self.framing = Framing::Done;
                            return Poll::Ready(None);
                        }
                        ChunkStep::NeedMore => {}
                    }
                }
            }
            let n = match conn.poll_fill(cx) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(Error::Io(e)))),
                Poll::Pending => return Self::poll_silence(conn, &mut self.read_armed, self.read, cx),
            };
            self.read_armed = false;
            if n == 0 {
                if self.framing == Framing::Eof {
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(Error::Incomplete)));
            }
        }
    }
}

impl<B> ResponseBody<B> {
    /// The backend has nothing more for now: run the read timer from the start of this silence
    /// (armed once per silence, so a body that streams steadily reads the clock once per wait).
    fn poll_silence(
        conn: &mut Conn,
        armed: &mut bool,
        read: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Error>>> {
        let timer = conn.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(read)));
        if !*armed {
            *armed = true;
            timer.as_mut().reset(Instant::now() + read);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Error::Timeout(Timer::Read)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = ready!(this.poll_data(cx));
        if let Some(Err(_)) = &polled {
            // Broken mid-body: this connection is in an unknown state; close it.
            this.conn = None;
        }
        Poll::Ready(polled.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::{StreamExt, stream};
    use http_body_util::{BodyExt, Full, StreamBody};
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the scripted backend does after reading each request head.
    enum Step {
        /// Write these bytes.
        Answer(&'static [u8]),
        /// Write these bytes and close the connection.
        AnswerAndClose(&'static [u8]),
        /// Wait, then write these bytes.
        AnswerAfter(std::time::Duration, &'static [u8]),
        /// Never answer (the connection stays open).
        Silent,
    }

    /// A backend on 127.0.0.1 that reads one request head per step and answers as scripted, on as many
    /// connections as it gets (the script restarts on each). Returns its address, the number of
    /// connections accepted, and every request head received.
    async fn backend(script: Vec<Step>) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().map_or_else(|e| panic!("{e}"), |a| a.to_string());
        let accepts = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (a, h) = (Arc::clone(&accepts), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (script, h) = (Arc::clone(&script), Arc::clone(&h));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for step in script.iter() {
                        let Some(head) = read_head(&mut s, &mut buf).await else { return };
                        h.lock().unwrap_or_else(|e| e.into_inner()).push(head);
                        match step {
                            Step::Answer(bytes) => {
                                let _ = s.write_all(bytes).await;
                            }
                            Step::AnswerAndClose(bytes) => {
                                let _ = s.write_all(bytes).await;
                                return;
                            }
                            Step::AnswerAfter(delay, bytes) => {
                                tokio::time::sleep(*delay).await;
                                let _ = s.write_all(bytes).await;
                            }
                            Step::Silent => std::future::pending::<()>().await,
                        }
                    }
                    // Script done: hold the connection open until the client closes it.
                    let _ = s.read(&mut [0u8; 64]).await;
                });
            }
        });
        (addr, accepts, heads)
    }

    /// Read up to and including the next blank line; what follows stays in `buf`.
    async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = buf.drain(..end + 4).collect();
                return Some(String::from_utf8_lossy(&head).into_owned());
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Timers with the response head due at `head`, the others out of reach.
    fn due(head: Instant) -> Timers {
        Timers { head, send: Duration::from_secs(3600), read: Duration::from_secs(3600) }
    }

    /// A deadline no test reaches.
    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(60)
    }

    /// Read a response's body to its end and take its connection back.
    async fn finish(response: Result<http::Response<ResponseBody<Full<Bytes>>>, SendError>) -> Conn {
        let mut body = response.unwrap_or_else(|e| panic!("{}", e.error)).into_body();
        while let Some(frame) = body.frame().await {
            assert!(frame.is_ok());
        }
        body.take_reusable().unwrap_or_else(|| panic!("complete and keep-alive"))
    }

    #[tokio::test]
    async fn the_connections_timer_moves_with_each_request_and_still_fires() {
        use std::time::Duration;
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let (addr, _, _) =
            backend(vec![Step::Answer(OK), Step::AnswerAfter(Duration::from_millis(600), OK), Step::Silent])
                .await;
        let started = Instant::now();
        // Answered at once, within a short deadline.
        let conn = finish(
            send(open(&addr).await, &mut get("GET", "/"), None, due(started + Duration::from_millis(300)))
                .await,
        )
        .await;
        // The backend takes 600 ms, past the first request's deadline: this request's own, later one counts.
        let conn = finish(
            send(conn, &mut get("GET", "/"), None, due(Instant::now() + Duration::from_secs(5))).await,
        )
        .await;
        assert!(started.elapsed() >= Duration::from_millis(600));
        // No answer at all: the deadline fires, and the request counts as sent (never resent elsewhere).
        let asked = Instant::now();
        let err = send(conn, &mut get("GET", "/"), None, due(asked + Duration::from_millis(200))).await.err();
        assert!(matches!(err, Some(SendError { error: Error::Timeout(Timer::Head), sent: true })), "{err:?}");
        let waited = asked.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(3), "{waited:?}");
    }

    async fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        Conn::new(stream)
    }

    fn get(method: &str, path: &str) -> Request<UpstreamBody<Full<Bytes>>> {
        let mut r = Request::new(None);
        *r.method_mut() = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        *r.uri_mut() = path.parse().unwrap_or_else(|e| panic!("{e}"));
        r.headers_mut().insert(header::HOST, HeaderValue::from_static("backend.test"));
        r
    }

    /// Send, read the whole body; returns status, body, and the connection if it may be reused.
    async fn exchange<B>(
        conn: Conn,
        mut req: Request<UpstreamBody<B>>,
    ) -> (u16, Result<Vec<u8>, String>, Option<Conn>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let response =
            send(conn, &mut req, None, due(far())).await.unwrap_or_else(|e| panic!("send: {}", e.error));
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        let outcome = loop {
            match body.frame().await {
                None => break Ok(bytes),
                Some(Ok(f)) => bytes.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
                Some(Err(e)) => break Err(e.to_string()),
            }
        };
        (status, outcome, body.take_reusable())
    }

    #[tokio::test]
    async fn content_length_bodies_and_keep_alive_reuse_one_connection() {
        let (addr, accepts, heads) = backend(vec![
            Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            Step::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX-B: 2\r\n\r\nworld"),
        ])
        .await;
        let (status, body, conn) = exchange(open(&addr).await, get("GET", "/a?x=1")).await;
        assert_eq!((status, body), (200, Ok(b"hello".to_vec())));
        let mut conn =
            conn.unwrap_or_else(|| panic!("a complete keep-alive response must give the connection back"));
        assert!(conn.is_reusable());
        let (status, body, conn) = exchange(conn, get("GET", "/b")).await;
        assert_eq!((status, body), (200, Ok(b"world".to_vec())));
        assert!(conn.is_some());
        assert_eq!(accepts.load(Ordering::SeqCst), 1, "both requests on one connection");
        let heads = heads.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(heads[0], "GET /a?x=1 HTTP/1.1\r\nhost: backend.test\r\n\r\n");
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_with_extensions_and_trailers_dropped() {
        let (addr, _, _) = backend(vec![Step::Answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nB\r\n, chunked!!\r\n0\r\nX-Trailer: t\r\n\r\n",
        )])
        .await;
        let (status, body, conn) = exchange(open(&addr).await, get("GET", "/")).await;
        assert_eq!((status, body), (200, Ok(b"hello, chunked!!".to_vec())));
        assert!(conn.is_some(), "a complete chunked response leaves the connection reusable");
    }

    #[tokio::test]
    async fn a_body_without_length_runs_to_the_close_and_the_connection_is_not_reused() {
        let (addr, _, _) = backend(vec![Step::AnswerAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")]).await;
        let (status, body, conn) = exchange(open(&addr).await, get("GET", "/")).await;
        assert_eq!((status, body), (200, Ok(b"until the end".to_vec())));
        assert!(conn.is_none());
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body_whatever_the_length_says() {
        let (addr, accepts, _) = backend(vec![
            Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            Step::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Step::Answer(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"),
            Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ])
        .await;
        let mut conn = open(&addr).await;
        for (method, want) in [("HEAD", 200), ("GET", 204), ("GET", 304), ("GET", 200)] {
            let (status, body, c) = exchange(conn, get(method, "/")).await;
            assert_eq!(status, want);
            assert_eq!(body, Ok(if want == 200 && method == "GET" { b"ok".to_vec() } else { Vec::new() }));
            conn = c.unwrap_or_else(|| panic!("{method} {want} must leave the connection reusable"));
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn interim_100_continue_is_skipped() {
        let (addr, _, _) = backend(vec![Step::Answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        )])
        .await;
        let (status, body, conn) = exchange(open(&addr).await, get("GET", "/")).await;
        assert_eq!((status, body), (201, Ok(b"ok".to_vec())));
        assert!(conn.is_some());
    }

    #[tokio::test]
    async fn connection_close_and_http_1_0_decide_reuse() {
        for (answer, reusable) in [
            (&b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"[..], false),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false),
            (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", true),
        ] {
            let (addr, _, _) = backend(vec![Step::Answer(answer)]).await;
            let (status, body, conn) = exchange(open(&addr).await, get("GET", "/")).await;
            assert_eq!((status, body), (200, Ok(b"x".to_vec())));
            assert_eq!(conn.is_some(), reusable, "{}", String::from_utf8_lossy(answer));
        }
    }

    #[tokio::test]
    async fn a_backend_closing_mid_body_cuts_the_body() {
        let (addr, _, _) =
            backend(vec![Step::AnswerAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")]).await;
        let (status, body, conn) = exchange(open(&addr).await, get("GET", "/")).await;
        assert_eq!(status, 200);
        assert_eq!(body, Err("connection closed before the response was complete".to_string()));
        assert!(conn.is_none());
        // The same for a chunked body that stops between chunks.
        let (addr, _, _) = backend(vec![Step::AnswerAndClose(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
        )])
        .await;
        let (_, body, conn) = exchange(open(&addr).await, get("GET", "/")).await;
        assert!(body.is_err(), "{body:?}");
        assert!(conn.is_none());
    }

    #[tokio::test]
    async fn a_close_before_any_answer_is_an_error_and_says_the_request_was_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().map_or_else(|e| panic!("{e}"), |a| a.to_string());
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = read_head(&mut s, &mut Vec::new()).await;
            }
        });
        let err = send(open(&addr).await, &mut get("GET", "/"), None, due(far())).await.err();
        let err = err.unwrap_or_else(|| panic!("a response out of nowhere"));
        assert!(err.sent);
        assert_eq!(err.error.to_string(), "connection closed before the response was complete");
    }

    #[tokio::test]
    async fn request_bodies_go_with_content_length_or_chunked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().map_or_else(|e| panic!("{e}"), |a| a.to_string());
        let server = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else { return Vec::new() };
            let mut got = Vec::new();
            // Two requests; each body ends where its framing says, so read until both are in.
            while !got.ends_with(b"0\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
                if got.ends_with(b"hello") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            got
        });
        let mut with_length = get("POST", "/cl");
        with_length.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        *with_length.body_mut() = Some(Full::new(Bytes::from_static(b"hello")));
        let (status, _, conn) = exchange(open(&addr).await, with_length).await;
        assert_eq!(status, 200);
        let conn = conn.unwrap_or_else(|| panic!("request and response complete: reusable"));
        let mut chunked = get("POST", "/chunked");
        *chunked.body_mut() = Some(Full::new(Bytes::from_static(b"0123456789abcdefX")));
        let (status, _, _) = exchange(conn, chunked).await;
        assert_eq!(status, 200);
        let got = String::from_utf8(server.await.unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            got,
            "POST /cl HTTP/1.1\r\nhost: backend.test\r\ncontent-length: 5\r\n\r\nhello\
             POST /chunked HTTP/1.1\r\nhost: backend.test\r\ntransfer-encoding: chunked\r\n\r\n\
             11\r\n0123456789abcdefX\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn an_answer_before_the_request_body_is_read_is_forwarded_and_the_connection_dropped() {
        // The backend reads only the head and answers 413; the request body never ends.
        let (addr, _, _) =
            backend(vec![Step::Answer(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig")]).await;
        let frames = stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"some")))])
            .chain(stream::pending());
        let mut req = Request::new(Some(StreamBody::new(frames)));
        *req.method_mut() = Method::POST;
        let (status, body, conn) = exchange(open(&addr).await, req).await;
        assert_eq!((status, body), (413, Ok(b"big".to_vec())));
        assert!(conn.is_none(), "the request body was not finished: the connection is in an unknown state");
    }

    #[tokio::test]
    async fn an_idle_connection_closed_by_the_backend_is_not_reusable() {
        let (addr, _, _) =
            backend(vec![Step::AnswerAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")]).await;
        // Keep-alive by the headers, but the backend closes right after: the pool must notice.
        let mut req = get("GET", "/");
        let response = send(open(&addr).await, &mut req, None, due(far()))
            .await
            .unwrap_or_else(|e| panic!("{}", e.error));
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            assert!(frame.is_ok());
        }
        let mut conn = body.take_reusable().unwrap_or_else(|| panic!("complete and keep-alive"));
        // Wait for the FIN to be seen by the reactor (a socket event, not a clock).
        conn.stream.readable().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!conn.is_reusable());
    }

    #[test]
    fn framing_rules() {
        let head = |raw: &[u8], head_request: bool| match parse_head(raw, head_request) {
            Ok(ParsedHead::Final(_, h)) => Ok((h.framing, h.keep_alive, h.fields.content_length.is_some())),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        };
        // TE and CL together: chunked wins, CL removed, connection not reused.
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            Ok((Framing::Chunked(Chunk::Size), false, false))
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false),
            Ok((Framing::Chunked(Chunk::Size), true, false))
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            Ok((Framing::Eof, false, false))
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false),
            Err("invalid response framing: conflicting content-length".into())
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n", false),
            Err("invalid response framing: bad content-length".into())
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
            Ok((Framing::Length(0), true, true))
        );
        // An unsolicited 101 (this client never asks to upgrade) is an error, answered 502: it used to
        // be relayed to the client as the final answer.
        assert_eq!(
            head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", false),
            Err("invalid response framing: 101 Switching Protocols to a request that asked for no upgrade"
                .into())
        );
        assert!(matches!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false), Ok(ParsedHead::Partial)));
        assert!(matches!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(ParsedHead::Interim(25, ref kept)) if kept.is_empty()
        ));
        match parse_head(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x\r\n\r\n",
            false,
        ) {
            Ok(ParsedHead::Interim(_, kept)) => {
                assert_eq!(kept, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
            }
            other => panic!("{other:?}"),
        }
        // Two equal lengths: one line goes on.
        match parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", false) {
            Ok(ParsedHead::Final(_, h)) => assert_eq!(h.fields.lines, "Content-Length: 2\r\n"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connection_level_fields_and_those_named_in_connection_are_left_out() {
        let lines = |raw: &[u8]| match parse_head(raw, false) {
            Ok(ParsedHead::Final(_, h)) => String::from_utf8_lossy(&h.fields.lines).into_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            lines(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"),
            "X-A: 1\r\nContent-Length: 0\r\n"
        );
        assert_eq!(lines(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), "");
        // A field that Connection names is this connection's too, whichever comes first.
        assert_eq!(
            lines(b"HTTP/1.1 200 OK\r\nX-Secret: s\r\nConnection: close, x-secret\r\nX-Kept: k\r\n\r\n"),
            "X-Kept: k\r\n"
        );
        let all_hop =
            b"HTTP/1.1 200 OK\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n\
            Proxy-Authenticate: Basic\r\nProxy-Authorization: x\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(lines(all_hop), "Content-Length: 0\r\n");
    }

    #[test]
    fn forwarded_fields_say_what_the_server_must_not_add_again() {
        let fields = |raw: &[u8]| match parse_head(raw, false) {
            Ok(ParsedHead::Final(_, h)) => h.fields,
            other => panic!("{other:?}"),
        };
        let f = fields(b"HTTP/1.1 200 OK\r\nDate: Thu, 26 Nov 2026 20:00:00 GMT\r\nX-Request-Id: abc\r\nContent-Length: 7\r\n\r\n");
        assert_eq!((f.has_date, f.has_request_id, f.content_length), (true, true, Some(7)));
        let f = fields(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((f.has_date, f.has_request_id, f.content_length), (false, false, None));
        assert_eq!(f.lines, "", "the length is dropped beside chunked framing");
        // The same fields as a map, for an HTTP/2 client.
        let f = fields(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nContent-Type: text/plain\r\n\r\n");
        let mut map = HeaderMap::new();
        f.append_to(&mut map);
        let cookies: Vec<_> = map.get_all("set-cookie").iter().map(|v| v.as_bytes().to_vec()).collect();
        assert_eq!(cookies, [b"a=1".to_vec(), b"b=2".to_vec()]);
        assert_eq!(map.get("x-empty").map(|v| v.as_bytes()), Some(&b""[..]));
        assert_eq!(map.get("content-type").map(|v| v.as_bytes()), Some(&b"text/plain"[..]));
        assert_eq!(map.len(), 4);
    }

    /// The head `encode_head` writes for a GET with these fields (in this order), with `forwarding`.
    fn head_of(fields: &[(&str, &str)], forwarding: Option<&Forwarding<'_>>) -> String {
        let mut r: Request<UpstreamBody<Full<Bytes>>> = Request::new(None);
        *r.uri_mut() = http::Uri::from_static("/p?q=1");
        for (name, value) in fields {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let value = HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}"));
            r.headers_mut().append(name, value);
        }
        let mut buf = BytesMut::new();
        assert_eq!(encode_head(&mut buf, &r, forwarding), RequestFraming::Length);
        String::from_utf8_lossy(&buf).into_owned()
    }

    static IP: HeaderValue = HeaderValue::from_static("192.0.2.7");
    static HTTP: HeaderValue = HeaderValue::from_static("http");
    static ID: HeaderValue = HeaderValue::from_static("0000002a-0000000000000001");

    /// Ours for a plain request: an id to add, nothing of the client's to replace, a Host present.
    fn ours<'a>(replaces: bool) -> Forwarding<'a> {
        Forwarding { client_ip: &IP, proto: &HTTP, request_id: Some(&ID), host: None, replaces }
    }

    #[test]
    fn forwarding_fields_follow_the_clients_own() {
        assert_eq!(
            head_of(&[("host", "app.example"), ("accept", "*/*")], Some(&ours(false))),
            "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\naccept: */*\r\n\
             x-request-id: 0000002a-0000000000000001\r\nx-forwarded-for: 192.0.2.7\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: app.example\r\n\r\n"
        );
        // Without forwarding the head is the map, as it is.
        assert_eq!(
            head_of(&[("host", "app.example")], None),
            "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\n\r\n"
        );
    }

    #[test]
    fn a_prior_forwarded_for_is_extended_and_only_its_first_line_kept() {
        let fields = [
            ("x-forwarded-for", "203.0.113.9, 198.51.100.1"),
            ("host", "app.example"),
            ("x-forwarded-for", "10.0.0.1"),
        ];
        assert_eq!(
            head_of(&fields, Some(&ours(true))),
            "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\n\
             x-request-id: 0000002a-0000000000000001\r\n\
             x-forwarded-for: 203.0.113.9, 198.51.100.1, 192.0.2.7\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: app.example\r\n\r\n"
        );
    }

    #[test]
    fn a_clients_forwarded_proto_and_host_are_replaced_and_explain_dropped() {
        let fields = [
            ("host", "app.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-lb-explain", "1"),
            ("x-kept", "yes"),
        ];
        let https = HeaderValue::from_static("https");
        let forwarding = Forwarding { proto: &https, ..ours(true) };
        assert_eq!(
            head_of(&fields, Some(&forwarding)),
            "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\nx-kept: yes\r\n\
             x-request-id: 0000002a-0000000000000001\r\nx-forwarded-for: 192.0.2.7\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: app.example\r\n\r\n"
        );
    }

    #[test]
    fn without_host_the_backend_is_named_and_no_forwarded_host_goes_out() {
        // HTTP/1.0 without Host, which sent an X-Forwarded-Host of its own.
        let forwarding = Forwarding { host: Some("10.0.0.5:8080"), ..ours(true) };
        assert_eq!(
            head_of(&[("x-forwarded-host", "evil.example"), ("accept", "*/*")], Some(&forwarding)),
            "GET /p?q=1 HTTP/1.1\r\naccept: */*\r\n\
             x-request-id: 0000002a-0000000000000001\r\nx-forwarded-for: 192.0.2.7\r\n\
             x-forwarded-proto: http\r\nhost: 10.0.0.5:8080\r\n\r\n"
        );
    }

    #[test]
    fn a_clients_request_id_is_forwarded_as_it_is() {
        let forwarding = Forwarding { request_id: None, ..ours(false) };
        assert_eq!(
            head_of(&[("x-request-id", "abc-123"), ("host", "app.example")], Some(&forwarding)),
            "GET /p?q=1 HTTP/1.1\r\nx-request-id: abc-123\r\nhost: app.example\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-forwarded-host: app.example\r\n\r\n"
        );
    }

    #[test]
    fn a_retry_encodes_the_same_head() {
        let mut r: Request<UpstreamBody<Full<Bytes>>> =
            Request::new(Some(Full::new(Bytes::from_static(b"x"))));
        r.headers_mut().insert(header::HOST, HeaderValue::from_static("app.example"));
        r.headers_mut().insert(X_FORWARDED_FOR.clone(), HeaderValue::from_static("203.0.113.9"));
        let before = r.headers().clone();
        let (mut first, mut second) = (BytesMut::new(), BytesMut::new());
        assert_eq!(encode_head(&mut first, &r, Some(&ours(true))), RequestFraming::Chunked);
        assert_eq!(encode_head(&mut second, &r, Some(&ours(true))), RequestFraming::Chunked);
        assert_eq!(first, second);
        assert_eq!(r.headers(), &before, "encoding leaves the request as it was");
        assert!(String::from_utf8_lossy(&first).ends_with(
            "x-forwarded-for: 203.0.113.9, 192.0.2.7\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: app.example\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
    }

    #[test]
    fn chunk_sizes_are_hex_and_bounded() {
        assert_eq!(write_hex_string(0), "0\r\n");
        assert_eq!(write_hex_string(17), "11\r\n");
        assert_eq!(write_hex_string(0x10000), "10000\r\n");
    }

    fn write_hex_string(n: usize) -> String {
        let mut b = BytesMut::new();
        write_hex(&mut b, n);
        String::from_utf8_lossy(&b).into_owned()
    }

    proptest! {
        /// Whatever a backend sends, parsing its head returns (complete, partial or an error) and never
        /// panics; a complete head's length is within the input.
        #[test]
        fn parse_head_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), head_request: bool) {
            if let Ok(ParsedHead::Interim(len, _) | ParsedHead::Final(len, _)) = parse_head(&bytes, head_request) {
                prop_assert!(len <= bytes.len());
            }
        }

        /// Mostly-valid heads (a real status line, then arbitrary header-ish lines) exercise the header
        /// and framing paths rather than stopping at the status line.
        #[test]
        fn parse_head_never_panics_on_near_valid_heads(
            code in 100u16..1000,
            lines in proptest::collection::vec("[ -~]{0,40}", 0..8),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut raw = format!("HTTP/1.1 {code} X\r\n").into_bytes();
            for l in &lines {
                raw.extend_from_slice(l.as_bytes());
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(&tail);
            let _ = parse_head(&raw, false);
        }

        /// A valid Content-Length round-trips exactly.
        #[test]
        fn content_length_round_trips(n in any::<u64>()) {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
            let parsed = parse_head(raw.as_bytes(), false);
            let framing = match parsed {
                Ok(ParsedHead::Final(_, head)) => Some(head.framing),
                _ => None,
            };
            prop_assert_eq!(framing, Some(Framing::Length(n)));
        }
    }
}
