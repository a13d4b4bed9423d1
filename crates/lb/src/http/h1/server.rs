//! The client-facing HTTP/1.1 server: one loop per connection that reads requests, hands each to the
//! proxy, and writes its response.
//!
//! # Why not hyper's server
//!
//! hyper's `http1` server is a general-purpose dispatcher: it parses into its own state machine, boxes
//! the service future, moves the request and response through its slots, reads bodies through a
//! channel-like `Incoming`, and arms a timer per connection state change. For a proxy whose whole job is
//! "read a head, pick a backend, copy bytes", `perf` put that machinery at about a sixth of the proxy's
//! user time, and its per-connection buffers (8 KiB read, 8 KiB write, the boxed service future) at
//! most of the memory an idle keep-alive connection costs. This loop does the same work the way nginx
//! and HAProxy do: one buffer per connection that exists only while there is something in it, the
//! request head parsed by `httparse` (hyper's parser) with header values sliced out of the read buffer
//! without a copy, the response head and the first piece of its body written with one `writev`, and
//! timers that are not touched at all while a connection behaves.
//!
//! HTTP/2 clients (h2c with prior knowledge, or ALPN `h2` over TLS) are still served by hyper: its
//! HTTP/2 server is a protocol implementation this project has no reason to rewrite.
//!
//! # One connection's loop
//!
//! ```text
//!   read until a whole head is buffered     (idle_timeout before the first byte,
//!   parse: request line, headers, framing    header_read_timeout from the first byte)
//!   worker.handle(request) -> response      (the request body is read by whoever forwards it)
//!   write the head, stream the body
//!   keep-alive? and the request body read to its end? -> loop, else close
//! ```
//!
//! # Framing rules (RFC 9112 section 6), the smuggling defences
//!
//! - `Transfer-Encoding` in an HTTP/1.0 request: 400. Any coding other than `chunked` (`gzip, chunked`,
//!   `identity, chunked`): 501 Not Implemented, as nginx answers (RFC 9112 section 6.1: a server that
//!   receives a transfer coding it does not understand should answer 501); the proxy would otherwise
//!   drop the coding while decoding the chunks, and hand on a body the client meant to be decoded
//!   twice. A final coding other than `chunked`: 400.
//! - `Transfer-Encoding` and `Content-Length` together: `Transfer-Encoding` wins, `Content-Length` is
//!   dropped, and the connection is closed after the response (whatever followed the body is never
//!   read as a request).
//! - `Content-Length` must be digits only; several lines must agree, else 400.
//! - Header names and values, the request line, bare CR, obs-fold, NUL: whatever `httparse` refuses
//!   is 400; more header bytes than `max_header_bytes`, or more than [`MAX_HEADERS`] lines: 431.
//! - A request whose body was not read to its end (the backend answered early, or the proxy refused
//!   it) closes the connection after the response: the unread rest must not be parsed as a request.
//!
//! # Timeouts without timer traffic
//!
//! A connection has one timer. It is armed at the idle deadline when the connection opens and is only
//! moved *earlier* (when a head arrives in pieces: the header read deadline). When it fires, the loop
//! compares the real deadline (last activity plus the limit) with the clock and either closes or
//! re-arms it. A keep-alive connection serving request after request therefore never touches the timer
//! wheel; a lazy timer like this is what nginx and HAProxy use too. The request body has its own
//! `body_read_timeout` timer, created only when a body read has to wait.

use std::io::{self};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use crate::config::ServerLimits;
use crate::http::ClientBody;
use crate::http::h1::{Chunk, ChunkStep, chunk_step, parse_length, tokens};
use crate::net::io::ClientIo;

/// Header lines a request may have (hyper's default is 100; nginx has no count, only bytes).
pub const MAX_HEADERS: usize = 100;
/// Bytes read at a time into a connection's buffer.
pub(crate) const READ_CHUNK: usize = 4 * 1024;
/// At most this much response data is queued for the client before the body is asked for more.
pub(crate) const MAX_QUEUED: usize = 64 * 1024;
/// After answering a request whose body was not read, keep reading (and discarding) for this long so
/// the answer is not destroyed by a TCP reset (nginx's `lingering_time`, shortened).
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Where the request body being read stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyState {
    /// No body, or all of it has been read.
    Done,
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// The body broke (bad framing, timeout, the client left): the connection cannot carry another
    /// request.
    Failed,
}

/// What the connection loop and the request body share: the socket and the bytes read from it. They
/// take turns within one task (the body is read while the proxy forwards, the response written after),
/// so the lock is never contended; it is a `Mutex` rather than a `RefCell` only because a body sent to
/// an HTTP/2 backend goes through hyper's client, which wants `Send`.
#[derive(Debug)]
pub(crate) struct ClientConn {
    /// `None` once an upgrade took it.
    pub(crate) io: Option<ClientIo>,
    /// Bytes read and not consumed yet. Empty, with no allocation, while the connection is idle.
    pub(crate) rbuf: BytesMut,
    /// The client closed its side.
    pub(crate) eof: bool,
    pub(crate) body: BodyState,
    /// `Expect: 100-continue` bytes still to write before the body is read (an offset into
    /// [`CONTINUE`]), or `None`.
    pub(crate) continue_at: Option<usize>,
}

pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

pub(crate) type SharedConn = Arc<Mutex<ClientConn>>;

pub(crate) fn lock(conn: &SharedConn) -> MutexGuard<'_, ClientConn> {
    // Poisoned only if a panic happened while it was held; the data is still consistent enough to
    // close the connection cleanly.
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientConn {
    /// Read more bytes into `rbuf`: `Ok(0)` is the client's end of stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Ok(0)) };
        let was_empty = self.rbuf.is_empty();
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            if was_empty && self.rbuf.capacity() == 0 {
                self.rbuf = READ_BUFS.with(BufPool::take);
            }
            self.rbuf.reserve(READ_CHUNK);
        }
        let n = match tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.rbuf) {
            Poll::Ready(r) => r?,
            Poll::Pending => {
                if was_empty {
                    // Nothing to hold while waiting: give the buffer back, so a thousand idle
                    // connections hold no buffers (nginx frees its header buffer the same way).
                    let buf = std::mem::take(&mut self.rbuf);
                    READ_BUFS.with(|pool| pool.give(buf));
                }
                return Poll::Pending;
            }
        };
        if n == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(n))
    }
}

/// Read buffers given back by connections that went idle, for the next connection that has bytes to
/// read: one worker thread's, at most [`BufPool::KEEP`] of them. A keep-alive connection gives its
/// buffer back after every request and takes one again when the next arrives; from this list that is a
/// pop and a push, not an allocation and a free (HAProxy keeps pools of buffers for the same reason).
/// Idle connections still hold none.
pub(crate) struct BufPool(pub(crate) std::cell::RefCell<Vec<BytesMut>>);

impl BufPool {
    /// Enough for the connections one worker serves at once; beyond that, buffers are freed.
    pub(crate) const KEEP: usize = 64;

    pub(crate) fn take(&self) -> BytesMut {
        self.0.borrow_mut().pop().unwrap_or_default()
    }

    pub(crate) fn give(&self, mut buf: BytesMut) {
        buf.clear();
        // Only a buffer of the usual size that nothing else shares (a request head sliced from it
        // may still be alive): anything else would not save an allocation.
        if buf.try_reclaim(READ_CHUNK) && buf.capacity() <= 4 * READ_CHUNK {
            let mut pool = self.0.borrow_mut();
            if pool.len() < Self::KEEP {
                pool.push(buf);
            }
        }
    }
}

thread_local! {
    pub(crate) static READ_BUFS: BufPool = const { BufPool(std::cell::RefCell::new(Vec::new())) };
}

/// The body of a request read by this server: bytes come off the client's socket when the forwarding
/// side asks for them, framed by `Content-Length` or chunked, never buffered whole.
#[derive(Debug)]
pub struct RequestBody {
    pub(crate) conn: SharedConn,
    /// Body bytes delivered so far, against `max_body`.
    pub(crate) read: u64,
    pub(crate) max_body: Option<u64>,
    pub(crate) read_timeout: Duration,
    /// Armed only while a read waits; dropped on progress.
    pub(crate) timer: Option<Pin<Box<Sleep>>>,
    /// The last frame was delivered (or the body failed).
    pub(crate) ended: bool,
    /// Exact length, when `Content-Length` gave one.
    pub(crate) length: Option<u64>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Malformed chunked framing, and what was wrong.
    #[error("invalid chunked body: {0}")]
    Framing(&'static str),
    /// The client closed the connection before the body ended.
    #[error("client closed the connection mid-body")]
    Incomplete,
    /// Reading the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No byte for `body_read_timeout`.
    #[error("body read timeout")]
    Timeout,
    /// More than `max_body_bytes`.
    #[error("request body over max_body_bytes")]
    TooLarge,
}

impl RequestBody {
    pub(crate) fn fail(
        &mut self,
        conn: &mut ClientConn,
        e: BodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        conn.body = BodyState::Failed;
        self.ended = true;
        Poll::Ready(Some(Err(e)))
    }

    pub(crate) fn data(
        &mut self,
        conn: &mut ClientConn,
        bytes: Bytes,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.timer = None;
        self.read += bytes.len() as u64;
        if self.max_body.is_some_and(|max| self.read > max) {
            return self.fail(conn, BodyError::TooLarge);
        }
        if conn.body == BodyState::Done {
            self.ended = true;
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let shared = Arc::clone(&this.conn);
        let mut conn = lock(&shared);
        let conn = &mut *conn;
        // `Expect: 100-continue`: the client waits for this before it sends the body, and it is sent
        // only now that somebody wants the body (a request refused before is answered without it).
        while let Some(at) = conn.continue_at {
            if !conn.rbuf.is_empty() || at >= CONTINUE.len() {
                conn.continue_at = None;
                break;
            }
            let Some(io) = conn.io.as_mut() else { break };
            match ready!(Pin::new(io).poll_write(cx, &CONTINUE[at..])) {
                Ok(n) if n > 0 => conn.continue_at = Some(at + n),
                Ok(_) => return this.fail(conn, BodyError::Incomplete),
                Err(e) => return this.fail(conn, e.into()),
            }
        }
        loop {
            match conn.body {
                BodyState::Done => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                BodyState::Failed => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(BodyError::Incomplete)));
                }
                BodyState::Length(0) => conn.body = BodyState::Done,
                BodyState::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let take = conn.rbuf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        let bytes = conn.rbuf.split_to(take).freeze();
                        let left = left - take as u64;
                        conn.body = if left == 0 { BodyState::Done } else { BodyState::Length(left) };
                        return this.data(conn, bytes);
                    }
                }
                BodyState::Chunked(state) => match chunk_step(&conn.rbuf, state) {
                    Err(why) => return this.fail(conn, BodyError::Framing(why)),
                    Ok(ChunkStep::Data(n, next)) => {
                        let bytes = conn.rbuf.split_to(n).freeze();
                        conn.body = BodyState::Chunked(next);
                        return this.data(conn, bytes);
                    }
                    Ok(ChunkStep::Skip(n, next)) => {
                        conn.rbuf.advance(n);
                        conn.body = next.map_or(BodyState::Done, BodyState::Chunked);
                        continue;
                    }
                    Ok(ChunkStep::NeedMore) => {}
                },
            }
            if conn.eof {
                return this.fail(conn, BodyError::Incomplete);
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return this.fail(conn, BodyError::Incomplete),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(conn, e.into()),
                Poll::Pending => {
                    let timeout = this.read_timeout;
                    let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return this.fail(conn, BodyError::Timeout);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.read)),
            None => SizeHint::default(),
        }
    }
}

/// The client connection after a `101 Switching Protocols`: the socket, and the bytes the client sent
/// after its request head (already read into the buffer), which come out first.
#[derive(Debug)]
pub struct Upgraded {
    pub(crate) io: ClientIo,
    pub(crate) pre: Bytes,
    /// Dropped with the tunnel: tells the connection's task, which waits for it, that the tunnel has
    /// ended. Until then the connection counts as open, so a graceful shutdown waits for WebSocket
    /// tunnels (up to `shutdown_timeout`) as it waits for requests, as nginx does.
    pub(crate) _ended: oneshot::Sender<()>,
}

impl AsyncRead for Upgraded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Put in a request's extensions when it asks for an upgrade: resolves to the client's connection once
/// a `101` answer to it has been written. Taken with [`on_upgrade`]. (Extensions must be `Clone`,
/// hence the shared slot; there is only ever one taker.)
#[derive(Debug, Clone)]
pub(crate) struct PendingUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// The client's side of an upgrade requested by `req`: resolves after the proxy's `101` response has
/// been written, with the raw connection; an error if the request cannot be upgraded (it did not come
/// through this server, or the answer was not `101`).
pub fn on_upgrade<B>(req: &mut Request<B>) -> oneshot::Receiver<Upgraded> {
    let taken = req
        .extensions_mut()
        .remove::<PendingUpgrade>()
        .and_then(|p| p.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
    taken.unwrap_or_else(|| {
        // A dropped sender makes the receiver fail at once: the same error as an upgrade that never
        // happened.
        oneshot::channel().1
    })
}

/// A parsed request head, ready for the proxy.
pub(crate) struct Parsed {
    pub(crate) request: Request<ClientBody>,
    pub(crate) keep_alive: bool,
    pub(crate) head_method: bool,
    pub(crate) upgrade: Option<oneshot::Sender<Upgraded>>,
}

/// Why a head was refused: the status and a one-line reason for the body.
pub(crate) type Refusal = (StatusCode, &'static str);

/// Where a header's name and value lie in the head: offsets, so they can be sliced out of the frozen
/// buffer without copying.
#[derive(Clone, Copy)]
pub(crate) struct Span {
    pub(crate) name: (usize, usize),
    pub(crate) value: (usize, usize),
}

pub(crate) fn offset_in(base: &[u8], part: &[u8]) -> (usize, usize) {
    let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
    (start, start + part.len())
}

thread_local! {
    /// The offsets of the head being parsed: one list per worker, reused (a fresh array of
    /// [`MAX_HEADERS`] spans per request was a 3 KiB memset each time).
    pub(crate) static SPANS: std::cell::RefCell<Vec<Span>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Try to parse a request head from the buffered bytes. `Ok(None)`: incomplete.
pub(crate) fn parse(
    shared: &SharedConn,
    c: &mut ClientConn,
    limits: &ServerLimits,
) -> Result<Option<Parsed>, Refusal> {
    SPANS.with_borrow_mut(|spans| parse_into(spans, shared, c, limits))
}

pub(crate) fn parse_into(
    spans: &mut Vec<Span>,
    shared: &SharedConn,
    c: &mut ClientConn,
    limits: &ServerLimits,
) -> Result<Option<Parsed>, Refusal> {
    let Some(line) = scan_head(spans, &c.rbuf, limits)? else { return Ok(None) };
    let head = c.rbuf.split_to(line.len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(line.path.0..line.path.1))
        .map_err(|_| (StatusCode::BAD_REQUEST, "invalid request target"))?;
    let version = if line.minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let (mut map, declared) = read_fields(&head, &spans[..line.count])?;
    let (body, keep_alive) = declared.body(version, &mut map)?;
    let mut request = Request::new(ClientBody::Empty);
    *request.method_mut() = line.method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    c.body = body;
    c.continue_at = None;
    if body != BodyState::Done {
        if declared.expect_continue && version == Version::HTTP_11 {
            c.continue_at = Some(0);
        }
        *request.body_mut() = ClientBody::H1(RequestBody {
            conn: Arc::clone(shared),
            read: 0,
            max_body: limits.max_body_bytes,
            read_timeout: limits.body_read_timeout,
            timer: None,
            ended: false,
            length: if declared.te_seen { None } else { declared.length },
        });
    }
    let upgrade = (declared.wants_upgrade
        && version == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE))
    .then(|| {
        let (tx, rx) = oneshot::channel();
        request.extensions_mut().insert(PendingUpgrade(Arc::new(Mutex::new(Some(rx)))));
        tx
    });
    let head_method = request.method() == Method::HEAD;
    Ok(Some(Parsed { request, keep_alive, head_method, upgrade }))
}

/// The request line and where the head's pieces lie, as `httparse` found them.
struct RequestLine {
    /// Bytes of the whole head.
    len: usize,
    /// Header lines (their offsets are the first `count` of the spans).
    count: usize,
    method: Method,
    /// The request target's offsets.
    path: (usize, usize),
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    minor: u8,
}

/// Parse the head at the start of `buf`, leaving its fields' offsets in `spans`. `Ok(None)`: incomplete.
#[inline]
fn scan_head(
    spans: &mut Vec<Span>,
    buf: &[u8],
    limits: &ServerLimits,
) -> Result<Option<RequestLine>, Refusal> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    spans.clear();
    match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => {
            if len > limits.max_header_bytes {
                return Err((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
            }
            spans.extend(
                req.headers.iter().map(|h| Span {
                    name: offset_in(buf, h.name.as_bytes()),
                    value: offset_in(buf, h.value),
                }),
            );
            let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
                .map_err(|_| (StatusCode::BAD_REQUEST, "invalid method"))?;
            let path = offset_in(buf, req.path.unwrap_or("").as_bytes());
            Ok(Some(RequestLine {
                len,
                count: req.headers.len(),
                method,
                path,
                minor: req.version.unwrap_or(1),
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header lines"))
        }
        Err(_) => Err((StatusCode::BAD_REQUEST, "malformed request head")),
    }
}

/// What a request's fields say about its framing and its connection (RFC 9112 sections 6 and 9).
#[derive(Debug, Default, Clone, Copy)]
struct Declared {
    length: Option<u64>,
    te_seen: bool,
    /// The last coding of the last `Transfer-Encoding` line is `chunked`.
    chunked_last: bool,
    /// A coding other than `chunked`, which this proxy does not implement.
    other_coding: bool,
    close: bool,
    keep_alive_token: bool,
    expect_continue: bool,
    wants_upgrade: bool,
}

impl Declared {
    /// Note one field.
    #[inline]
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Refusal> {
        if name == header::CONTENT_LENGTH {
            let n =
                parse_length(value.as_bytes()).ok_or((StatusCode::BAD_REQUEST, "invalid Content-Length"))?;
            if self.length.is_some_and(|l| l != n) {
                return Err((StatusCode::BAD_REQUEST, "conflicting Content-Length headers"));
            }
            self.length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            self.te_seen = true;
            // The last coding of the last line decides; anything after `chunked` undoes it.
            for coding in tokens(value.as_bytes()) {
                self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                self.other_coding |= !self.chunked_last;
            }
        } else if name == header::CONNECTION {
            for token in tokens(value.as_bytes()) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                self.wants_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name == header::EXPECT {
            self.expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// How the body is framed, and whether the connection may carry another request: the smuggling
    /// defences. With both `Transfer-Encoding` and `Content-Length`, chunked wins, the length goes from
    /// `map`, and the connection closes afterwards (RFC 9112 section 6.1).
    #[inline]
    fn body(&self, version: Version, map: &mut HeaderMap) -> Result<(BodyState, bool), Refusal> {
        let mut keep_alive = match version {
            Version::HTTP_10 => self.keep_alive_token && !self.close,
            _ => !self.close,
        };
        let body = if self.te_seen {
            if version == Version::HTTP_10 {
                return Err((StatusCode::BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request"));
            }
            if !self.chunked_last {
                return Err((StatusCode::BAD_REQUEST, "Transfer-Encoding whose final coding is not chunked"));
            }
            if self.other_coding {
                return Err((StatusCode::NOT_IMPLEMENTED, "Transfer-Encoding other than chunked"));
            }
            if self.length.is_some() {
                map.remove(header::CONTENT_LENGTH);
                keep_alive = false;
            }
            BodyState::Chunked(Chunk::Size)
        } else {
            match self.length {
                Some(n) if n > 0 => BodyState::Length(n),
                _ => BodyState::Done,
            }
        };
        Ok((body, keep_alive))
    }
}

/// The head's fields as a map (values sliced out of `head`, not copied), and what they declare.
#[inline]
fn read_fields(head: &Bytes, spans: &[Span]) -> Result<(HeaderMap, Declared), Refusal> {
    // Room for what the proxy may add (request id, X-Forwarded-*: on the HTTP/2 and upgrade paths, which
    // hand hyper a map; the pooled path writes them as bytes), so the map is not grown and rehashed on
    // the way.
    let mut map = HeaderMap::with_capacity(spans.len() + 6);
    let mut declared = Declared::default();
    for span in spans {
        let name = HeaderName::from_bytes(&head[span.name.0..span.name.1])
            .map_err(|_| (StatusCode::BAD_REQUEST, "invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value.0..span.value.1))
            .map_err(|_| (StatusCode::BAD_REQUEST, "invalid header value"))?;
        declared.note(&name, &value)?;
        map.append(name, value);
    }
    Ok((map, declared))
}

/// The `Date` header, formatted once per second per thread.
pub(crate) struct DateCache {
    pub(crate) second: std::cell::Cell<u64>,
    pub(crate) text: std::cell::Cell<[u8; 29]>,
}

impl DateCache {
    pub(crate) fn now(&self) -> [u8; 29] {
        let now = std::time::SystemTime::now();
        let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second.get() {
            let text = httpdate::fmt_http_date(now);
            let mut bytes = [b' '; 29];
            for (dst, src) in bytes.iter_mut().zip(text.as_bytes()) {
                *dst = *src;
            }
            self.text.set(bytes);
            self.second.set(second);
        }
        self.text.get()
    }
}

thread_local! {
    pub(crate) static DATE: DateCache = const {
        DateCache { second: std::cell::Cell::new(u64::MAX), text: std::cell::Cell::new([b' '; 29]) }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn read_buffers_are_reused_only_when_nothing_else_holds_them() {
        let pool = BufPool(std::cell::RefCell::new(Vec::new()));
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        buf.put_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(18).freeze();
        // The head is still alive: the memory is shared, and the buffer is not kept.
        pool.give(buf.split());
        assert_eq!(pool.0.borrow().len(), 0);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        buf.put_slice(b"x");
        let ptr2 = buf.as_ptr();
        pool.give(buf);
        let again = pool.take();
        assert_eq!((again.as_ptr(), again.len()), (ptr2, 0), "the same allocation, emptied");
        assert!(again.capacity() >= READ_CHUNK);
        assert_eq!(pool.take().capacity(), 0, "an empty pool hands out an unallocated buffer");
        drop(head);
        pool.give(BytesMut::with_capacity(64 * READ_CHUNK));
        assert_eq!(pool.0.borrow().len(), 0, "a buffer grown for a large head is freed");
        for _ in 0..BufPool::KEEP + 5 {
            pool.give(BytesMut::with_capacity(READ_CHUNK));
        }
        assert_eq!(pool.0.borrow().len(), BufPool::KEEP, "bounded");
    }
}
