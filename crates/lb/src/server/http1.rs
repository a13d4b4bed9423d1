//! The HTTP/1.x connection loop: read a request head, hand the request to the worker, write its
//! response, and keep the connection alive or close it. The protocol pieces it uses (head parsing,
//! the request body, the `Date` cache) are in [`crate::http::h1::server`].

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::Body;
use tokio::io::AsyncWrite;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};

use crate::config::ServerLimits;
use crate::forward::{ProxyBody, Worker};
use crate::http::ClientInfo;
use crate::http::forwarding::X_REQUEST_ID;
use crate::http::h1::server::{
    BodyState, ClientConn, DATE, LINGER, MAX_QUEUED, Parsed, Refusal, SharedConn, Upgraded, lock, parse,
};
use crate::http::h1::{parse_length, put_field, write_hex};
use crate::net::io::ClientIo;

/// What a connection does after an exchange.
enum Next {
    /// Wait for the next request.
    KeepAlive,
    /// Close (already done, or the socket went to an upgrade).
    Close,
}

/// Serve one HTTP/1.x client connection until it closes, breaks a limit, upgrades, or the proxy stops.
///
/// This future lives as long as the connection, so it holds only what an idle connection needs; each
/// exchange (head, request, response) runs in a boxed future of its own that exists only while a
/// request is being served. That keeps an idle keep-alive connection to a few hundred bytes.
pub async fn serve(
    io: ClientIo,
    https: bool,
    peer: SocketAddr,
    worker: Rc<Worker>,
    mut stop: watch::Receiver<bool>,
    limits: ServerLimits,
) {
    let conn: SharedConn = Arc::new(Mutex::new(ClientConn {
        io: Some(io),
        rbuf: BytesMut::new(),
        eof: false,
        body: BodyState::Done,
        continue_at: None,
    }));
    let client = Rc::new(worker.client_info(peer, https));
    let mut idle_since = Instant::now();
    let timer = tokio::time::sleep_until(idle_since + limits.idle_timeout);
    tokio::pin!(timer);
    let mut wbuf = BytesMut::new();
    loop {
        if !wait_for_request(&conn, &limits, idle_since, timer.as_mut(), &mut stop).await {
            return;
        }
        let ctx = Exchange { conn: &conn, worker: &worker, client: &client, limits: &limits, stop: &stop };
        match Box::pin(exchange(ctx, &mut wbuf, timer.as_mut())).await {
            Next::KeepAlive => idle_since = Instant::now(),
            Next::Close => return,
        }
    }
}

/// What one exchange needs from its connection.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    conn: &'a SharedConn,
    worker: &'a Rc<Worker>,
    client: &'a Rc<ClientInfo>,
    limits: &'a ServerLimits,
    stop: &'a watch::Receiver<bool>,
}

/// When the proxy stops, how long after its last answer an idle connection still waits for a request.
///
/// Closing an idle keep-alive connection races its client: a client that sends its next request at
/// once (a load generator, a busy service) may have it on the wire when the close happens, and a
/// close with unread bytes is a reset, which the client sees as a failed request. So a connection
/// answered less than this ago is given the rest of it: a request that arrives is served with
/// `Connection: close`, and the client moves on cleanly. One idle for longer closes at once.
const LAST_CALL: std::time::Duration = std::time::Duration::from_secs(1);

/// Idle: wait until the next request's first bytes are buffered. False: close (the client left, the
/// idle timeout passed, or the proxy is stopping and [`LAST_CALL`] has passed).
async fn wait_for_request(
    conn: &SharedConn,
    limits: &ServerLimits,
    idle_since: Instant,
    mut timer: Pin<&mut Sleep>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        {
            let c = lock(conn);
            if !c.rbuf.is_empty() {
                return true;
            }
            if c.eof {
                return false;
            }
        }
        if *stop.borrow() {
            let last_call = idle_since + LAST_CALL;
            if Instant::now() >= last_call || !read_more(conn, timer.as_mut(), last_call, None).await {
                return false;
            }
        } else if !read_more(conn, timer.as_mut(), idle_since + limits.idle_timeout, Some(stop)).await
            && !*stop.borrow()
        {
            // The client left or the idle timeout passed. (When the proxy began stopping instead, the
            // loop goes round to the last call above.)
            return false;
        }
    }
}

/// Wait for more bytes from the client until `deadline` (or, with `stop`, until the proxy stops).
/// False: the client left, the deadline passed, or the proxy is stopping.
///
/// The connection's one timer only ever moves *earlier* here; when it fires before the deadline (it
/// was set for an earlier one), it is moved on. See the module docs.
async fn read_more(
    conn: &SharedConn,
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
    stop: Option<&mut watch::Receiver<bool>>,
) -> bool {
    if deadline < timer.deadline() {
        timer.as_mut().reset(deadline);
    }
    let stopping = async {
        match stop {
            // Stopping, or the proxy is gone: either way this connection closes.
            Some(stop) => drop(stop.wait_for(|&s| s).await),
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            biased;
            n = poll_fn(|cx| lock(conn).poll_fill(cx)) => return matches!(n, Ok(n) if n > 0),
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return false;
                }
                timer.as_mut().reset(deadline);
            }
            () = &mut stopping => return false,
        }
    }
}

/// One request: its head, the proxy's answer, the answer written.
///
/// Each block below ends before the next `.await` on purpose: a value (even one moved out) keeps its
/// room in the future until its scope ends, and this future is copied into its box once per request.
async fn exchange(x: Exchange<'_>, wbuf: &mut BytesMut, mut timer: Pin<&mut Sleep>) -> Next {
    let conn = x.conn;
    let (handling, version, mut keep_alive, head_method, upgrade) = {
        let parsed = match read_head(conn, x.limits, timer.as_mut()).await {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Next::Close,
            Err((status, why)) => return refuse(conn, wbuf, status, why).await,
        };
        let Parsed { request, keep_alive, head_method, upgrade } = parsed;
        let version = request.version();
        (Rc::clone(x.worker).handle(request, Rc::clone(x.client)), version, keep_alive, head_method, upgrade)
    };
    let response = match handling.await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(tx) = upgrade
    {
        return hand_over(conn, wbuf, response, version, tx).await;
    }
    if *x.stop.borrow() {
        keep_alive = false;
    }
    let send_timer = SendTimer { timer, timeout: x.limits.send_timeout, armed: false };
    let written = write_response(conn, wbuf, response, version, keep_alive, head_method, Some(send_timer));
    if written.await.is_err() {
        return Next::Close;
    }
    // Keep the connection only if the request was read to its end: otherwise its unread rest would be
    // taken for the next request.
    let body_done = lock(conn).body == BodyState::Done;
    if !body_done || !keep_alive {
        linger(conn).await;
        return Next::Close;
    }
    Next::KeepAlive
}

/// Answer a request whose head was refused, and close. Boxed: rare, and its future would otherwise
/// add to the size of every exchange.
fn refuse<'a>(
    conn: &'a SharedConn,
    wbuf: &'a mut BytesMut,
    status: StatusCode,
    why: &'static str,
) -> Pin<Box<dyn Future<Output = Next> + 'a>> {
    Box::pin(async move {
        let mut response = Response::new(ProxyBody::full(Bytes::from(format!("{why}\n"))));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        let _ = write_response(conn, wbuf, response, Version::HTTP_11, false, false, None).await;
        linger(conn).await;
        Next::Close
    })
}

/// A 101 from the backend: write it, then hand the socket to the tunnel and wait until the tunnel is
/// done with it. Boxed, like [`refuse`].
fn hand_over<'a>(
    conn: &'a SharedConn,
    wbuf: &'a mut BytesMut,
    response: Response<ProxyBody>,
    version: Version,
    tx: oneshot::Sender<Upgraded>,
) -> Pin<Box<dyn Future<Output = Next> + 'a>> {
    Box::pin(async move {
        if write_response(conn, wbuf, response, version, true, true, None).await.is_ok() {
            let (ended, tunnel_done) = oneshot::channel();
            let handed = {
                let mut c = lock(conn);
                let pre = c.rbuf.split().freeze();
                c.io.take().is_some_and(|io| tx.send(Upgraded { io, pre, _ended: ended }).is_ok())
            };
            if handed {
                // Resolves (with an error: nothing is ever sent) when the tunnel drops its end.
                let _ = tunnel_done.await;
            }
        }
        Next::Close
    })
}

/// Run `f` on the connection's socket, if it still has one.
fn with_io<T>(
    conn: &SharedConn,
    f: impl FnOnce(&mut ClientIo) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match lock(conn).io.as_mut() {
        Some(io) => f(io),
        None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
    }
}

/// After an answer that leaves request bytes unread: send FIN, then read and discard what the client
/// is still sending for a short while, so our close does not reset the connection before the client
/// has read the answer (a reset can discard data the client has not read yet).
async fn linger(conn: &SharedConn) {
    let _ = poll_fn(|cx| with_io(conn, |io| Pin::new(io).poll_shutdown(cx))).await;
    let drain = async {
        let mut discarded = 0usize;
        loop {
            let n = poll_fn(|cx| {
                let mut c = lock(conn);
                c.rbuf.clear();
                c.poll_fill(cx)
            })
            .await;
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
            if discarded > 1024 * 1024 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Read until the request head is complete (its first bytes are buffered), then parse it. `Ok(None)`:
/// close quietly (the client left, or the header read timeout passed).
async fn read_head(
    conn: &SharedConn,
    limits: &ServerLimits,
    mut timer: Pin<&mut Sleep>,
) -> Result<Option<Parsed>, Refusal> {
    // Set when the head turns out to come in pieces; a head that arrives whole (nearly all of them)
    // costs no clock read and no timer.
    let mut deadline: Option<Instant> = None;
    loop {
        {
            let mut c = lock(conn);
            if let Some(parsed) = parse(conn, &mut c, limits)? {
                return Ok(Some(parsed));
            }
            if c.rbuf.len() > limits.max_header_bytes {
                return Err((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
            }
            if c.eof {
                // The client left after a partial head: nothing to answer.
                return Ok(None);
            }
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.header_read_timeout);
        if !read_more(conn, timer.as_mut(), deadline, None).await {
            return Ok(None);
        }
    }
}

/// How the response body is delimited on the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFraming {
    None,
    Length(u64),
    Chunked,
    /// Until we close (an HTTP/1.0 client and no known length).
    Close,
}

/// The client connection can carry no more: the client left, or the response broke off and the only
/// way left to say so is to close.
#[derive(Debug)]
pub(crate) struct Unusable;

/// The `send_timeout` of one response: the connection's timer, run while the client is not taking
/// what is written (nginx's `send_timeout`: between two successful writes, not for the whole
/// response). Waiting for the backend's next bytes does not count: the upstream `read` timer covers it.
struct SendTimer<'a> {
    timer: Pin<&'a mut Sleep>,
    timeout: std::time::Duration,
    /// Set for the current stall (cleared when the client takes bytes again).
    armed: bool,
}

impl SendTimer<'_> {
    /// The client is not taking bytes: run the timer from the start of this stall. Ready when it has
    /// run out.
    fn poll_stalled(&mut self, progressed: bool, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed || progressed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
        self.timer.as_mut().poll(cx)
    }
}

/// Write `response` to the client: head, then body. With `send_timer`, a client that stops reading
/// for its timeout has its connection closed (and the response body, with its backend connection,
/// dropped).
async fn write_response(
    conn: &SharedConn,
    wbuf: &mut BytesMut,
    response: Response<ProxyBody>,
    version: Version,
    keep_alive: bool,
    head_method: bool,
    mut send_timer: Option<SendTimer<'_>>,
) -> Result<(), Unusable> {
    let (parts, mut body) = response.into_parts();
    let out = encode_head(wbuf, &parts, &body, version, keep_alive, head_method);
    let mut sender = Sender::new(wbuf.split().freeze(), out, body.is_end_stream());
    let sent = poll_fn(|cx| {
        let polled = sender.poll_send(conn, &mut body, cx);
        if polled.is_pending()
            && sender.blocked_on_client
            && let Some(t) = send_timer.as_mut()
            && t.poll_stalled(std::mem::take(&mut sender.progressed), cx).is_ready()
        {
            tracing::debug!("closing a client connection: send timeout");
            return Poll::Ready(Err(Unusable));
        }
        polled
    });
    if let Err(unusable) = sent.await {
        if sender.body_broke && !sender.started {
            // The backend's body broke before a byte of the answer left (a bad first chunk, a body
            // shorter than its length): the client can still be told, rather than given an empty reply.
            drop(body);
            bad_gateway(conn, wbuf).await;
        }
        return Err(unusable);
    }
    if out == ResponseFraming::Close {
        // Close-delimited: the end of the connection is the end of the body.
        return Err(Unusable);
    }
    // TLS keeps written bytes in its own buffer until flushed; TCP's flush is a no-op.
    let flushed = poll_fn(|cx| {
        let polled = with_io(conn, |io| Pin::new(io).poll_flush(cx));
        if polled.is_pending()
            && let Some(t) = send_timer.as_mut()
            && t.poll_stalled(false, cx).is_ready()
        {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        polled
    });
    flushed.await.map_err(|_| Unusable)
}

/// The answer to a request whose backend response broke before any of it was written: 502, and the
/// connection closes (what the backend left unread is unknown). Boxed: rare.
fn bad_gateway<'a>(conn: &'a SharedConn, wbuf: &'a mut BytesMut) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    Box::pin(async move {
        const WHY: &str = "backend sent a malformed response\n";
        wbuf.clear();
        wbuf.put_slice(b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ndate: ");
        DATE.with(|d| wbuf.put_slice(&d.now()));
        wbuf.put_slice(b"\r\ncontent-length: ");
        wbuf.put_slice(WHY.len().to_string().as_bytes());
        wbuf.put_slice(b"\r\nconnection: close\r\n\r\n");
        wbuf.put_slice(WHY.as_bytes());
        let mut sender = Sender::new(wbuf.split().freeze(), ResponseFraming::None, true);
        let mut none = ProxyBody::empty();
        if poll_fn(|cx| sender.poll_send(conn, &mut none, cx)).await.is_ok() {
            let _ = poll_fn(|cx| with_io(conn, |io| Pin::new(io).poll_flush(cx))).await;
        }
    })
}

/// Encode the response head into `wbuf`: the status line, the fields, `Date` if none came, the body's
/// framing, and `Connection` where the client would assume otherwise. Returns how the body is delimited.
fn encode_head(
    wbuf: &mut BytesMut,
    parts: &http::response::Parts,
    body: &ProxyBody,
    version: Version,
    keep_alive: bool,
    head_method: bool,
) -> ResponseFraming {
    let status = parts.status;
    let no_body = head_method
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    wbuf.reserve(256);
    if version == Version::HTTP_11
        && let Some((fields, _)) = body.fields()
        && fields.interim > 0
    {
        // A backend's 103 Early Hints (or another 1xx) goes first (RFC 9110 section 15.2); an HTTP/1.0
        // client must not be sent one.
        wbuf.put_slice(fields.interim_heads());
    }
    wbuf.put_slice(b"HTTP/1.1 ");
    wbuf.put_slice(status.as_str().as_bytes());
    wbuf.put_u8(b' ');
    wbuf.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    wbuf.put_slice(b"\r\n");
    let (declared, has_date) = put_fields(wbuf, &parts.headers, body);
    if !has_date {
        wbuf.put_slice(b"date: ");
        DATE.with(|d| wbuf.put_slice(&d.now()));
        wbuf.put_slice(b"\r\n");
    }
    let mut keep_alive = keep_alive;
    let out = if no_body {
        ResponseFraming::None
    } else if let Some(n) = declared {
        ResponseFraming::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        wbuf.put_slice(b"content-length: ");
        wbuf.put_slice(n.to_string().as_bytes());
        wbuf.put_slice(b"\r\n");
        ResponseFraming::Length(n)
    } else if version == Version::HTTP_11 {
        wbuf.put_slice(b"transfer-encoding: chunked\r\n");
        ResponseFraming::Chunked
    } else {
        keep_alive = false;
        ResponseFraming::Close
    };
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if !keep_alive {
            wbuf.put_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            wbuf.put_slice(b"connection: keep-alive\r\n");
        }
    }
    wbuf.put_slice(b"\r\n");
    out
}

/// Write the message's fields: an HTTP/1 backend's as the lines the client half kept (see
/// `h1::client::Fields`) with the request id after them, then the map's (what the proxy added, or the
/// whole head of an answer made here). Returns the `Content-Length` they declare and whether one is
/// `Date`.
#[inline]
fn put_fields(wbuf: &mut BytesMut, headers: &HeaderMap, body: &ProxyBody) -> (Option<u64>, bool) {
    let mut declared: Option<u64> = None;
    let mut has_date = false;
    if let Some((fields, request_id)) = body.fields() {
        wbuf.put_slice(fields.field_lines());
        declared = fields.content_length;
        has_date = fields.has_date;
        if let Some(id) = request_id {
            put_field(wbuf, X_REQUEST_ID.as_str().as_bytes(), id.as_bytes());
        }
    }
    for (name, value) in headers {
        if *name == header::CONTENT_LENGTH {
            declared = parse_length(value.as_bytes()).or(declared);
        } else if *name == header::DATE {
            has_date = true;
        }
        put_field(wbuf, name.as_str().as_bytes(), value.as_bytes());
    }
    (declared, has_date)
}

/// The bytes on their way to the client: the head, then the body's pieces as the body yields them, with
/// their chunk framing, written with one `writev` per turn.
struct Sender {
    /// Inline room for the usual head + body (+ chunk framing): no allocation per response.
    queue: smallvec::SmallVec<[Bytes; 4]>,
    /// Every byte in the queue, framing included: the body is not asked for more past [`MAX_QUEUED`].
    queued: usize,
    body_done: bool,
    /// Bytes the declared length still expects.
    left: u64,
    out: ResponseFraming,
    /// Some byte has been written to the client.
    started: bool,
    /// The body failed (not the client's socket).
    body_broke: bool,
    /// The last `Pending` was the client's socket not taking bytes (not the body having none).
    blocked_on_client: bool,
    /// Bytes were written since the send timer looked last.
    progressed: bool,
}

impl Sender {
    fn new(head: Bytes, out: ResponseFraming, end_stream: bool) -> Self {
        let mut sender = Sender {
            queued: head.len(),
            queue: smallvec::smallvec![head],
            body_done: out == ResponseFraming::None || end_stream,
            left: match out {
                ResponseFraming::Length(n) => n,
                _ => u64::MAX,
            },
            out,
            started: false,
            body_broke: false,
            blocked_on_client: false,
            progressed: false,
        };
        if sender.body_done && out == ResponseFraming::Chunked {
            sender.push(Bytes::from_static(b"0\r\n\r\n"));
        }
        sender
    }

    #[inline]
    fn push(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.queue.push(bytes);
    }

    /// Send everything: ready when the last byte is written, `Unusable` if the body or the socket broke.
    fn poll_send(
        &mut self,
        conn: &SharedConn,
        body: &mut ProxyBody,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Unusable>> {
        loop {
            // Take what the body has ready (not holding the connection's lock: the body may be the
            // one reading the client's request body on this same connection).
            self.take_ready(body, cx)?;
            if self.queue.is_empty() {
                self.blocked_on_client = false;
                return if self.body_done { Poll::Ready(Ok(())) } else { Poll::Pending };
            }
            self.blocked_on_client = true;
            let n = ready!(self.poll_write(conn, cx))?;
            self.advance(n);
        }
    }

    /// Queue what the body has ready, up to [`MAX_QUEUED`] bytes.
    fn take_ready(&mut self, body: &mut ProxyBody, cx: &mut Context<'_>) -> Result<(), Unusable> {
        while !self.body_done && self.queued < MAX_QUEUED {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    self.body_done = true;
                    match self.out {
                        ResponseFraming::Chunked => self.push(Bytes::from_static(b"0\r\n\r\n")),
                        // Shorter than it said: the client would wait for the rest forever.
                        ResponseFraming::Length(_) if self.left > 0 => {
                            self.body_broke = true;
                            return Err(Unusable);
                        }
                        _ => {}
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!("response body broke off: {e}");
                    self.body_broke = true;
                    return Err(Unusable);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.push_data(data)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Queue one piece of the body, framed as the head said.
    #[inline]
    fn push_data(&mut self, data: Bytes) -> Result<(), Unusable> {
        match self.out {
            ResponseFraming::Chunked => {
                let mut size = BytesMut::with_capacity(18);
                write_hex(&mut size, data.len());
                self.push(size.freeze());
                self.push(data);
                self.push(Bytes::from_static(b"\r\n"));
            }
            ResponseFraming::Length(_) => {
                if data.len() as u64 > self.left {
                    return Err(Unusable);
                }
                self.left -= data.len() as u64;
                self.push(data);
            }
            ResponseFraming::Close => self.push(data),
            ResponseFraming::None => {}
        }
        Ok(())
    }

    /// Write as much of the queue as the socket takes, in one `writev`.
    fn poll_write(&self, conn: &SharedConn, cx: &mut Context<'_>) -> Poll<Result<usize, Unusable>> {
        let mut c = lock(conn);
        let Some(io) = c.io.as_mut() else { return Poll::Ready(Err(Unusable)) };
        let mut slices = [IoSlice::new(&[]); 16];
        let mut count = 0;
        for (slot, b) in slices.iter_mut().zip(self.queue.iter()) {
            *slot = IoSlice::new(b);
            count += 1;
        }
        match ready!(Pin::new(io).poll_write_vectored(cx, &slices[..count])) {
            Ok(0) | Err(_) => Poll::Ready(Err(Unusable)),
            Ok(n) => Poll::Ready(Ok(n)),
        }
    }

    /// Drop the `n` bytes the socket took from the front of the queue.
    fn advance(&mut self, n: usize) {
        self.started = true;
        self.progressed = true;
        self.queued = self.queued.saturating_sub(n);
        let mut written = n;
        let mut drained = 0;
        for b in self.queue.iter_mut() {
            if written >= b.len() {
                written -= b.len();
                drained += 1;
            } else {
                b.advance(written);
                break;
            }
        }
        self.queue.drain(..drained);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// An idle keep-alive connection costs its task's future, all the time; what a request needs is
    /// boxed per exchange. This is what keeps 1,000 idle connections within nginx's memory (see
    /// `crates/lb/README.md`); a change that inlines a request or response into the loop again fails
    /// here (it was 2.5 KiB before the exchange was boxed).
    #[tokio::test]
    async fn the_per_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        let (_stop_tx, stop) = watch::channel(false);
        let shared = Arc::new(crate::control::Shared {
            upstreams: Arc::new(crate::upstream::Upstreams::new(&[]).unwrap_or_else(|e| panic!("{e}"))),
            metrics: Arc::new(crate::observe::metrics::Metrics::default()),
            settings: arc_swap::ArcSwap::from_pointee(
                crate::control::Settings::of(&crate::Config::default()),
            ),
            trusted_proxies: arc_swap::ArcSwap::from_pointee(Vec::new()),
        });
        let worker = Rc::new(Worker::new(shared, 1));
        let serving = serve(ClientIo::Plain(stream), false, addr, worker, stop, ServerLimits::default());
        let size = std::mem::size_of_val(&serving);
        assert!(size <= 1024, "the connection loop's future is {size} bytes");
    }
}
