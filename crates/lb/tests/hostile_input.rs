//! Hostile and malformed requests, written byte for byte to the real proxy over raw TCP.
//!
//! Run with `cargo nextest run -p lb --test hostile_input` (add `--no-capture` to see one line per case).
//!
//! A proxy sits between clients it does not trust and backends that trust *it*. Two parsers read every
//! request: ours, and then the backend's. Wherever they could disagree about where a request ends
//! (`Content-Length` against `Transfer-Encoding`, two lengths, an obfuscated `chunked`) an attacker can
//! hide a second request inside the first one's body: the proxy forwards one request, the backend
//! reads two, and the hidden one skips every check the proxy makes and may even be answered to the
//! *next* client on the same pooled connection. That is request smuggling (Watchfire 2005; James
//! Kettle, "HTTP Desync Attacks", 2019). The safe answer to an ambiguous message is to refuse it (400)
//! and close the connection, which is what nginx and HAProxy do; RFC 9112 sections 6.1 and 6.3 spell
//! most of these cases out.
//!
//! Each case in [`cases`] is a table row: a name, the raw bytes, and what a careful proxy does with
//! them, either *refuse* (one of a few 4xx statuses, or a closed connection, and no request reaches a
//! backend) or *forward* (exactly one request reaches a backend, with a given status and body). Three
//! checks follow every case:
//!
//! - the backends' request counters went up by exactly the expected number (0 or 1), so a request
//!   smuggled to a backend shows up as one too many;
//! - a good request on a **new** connection still gets 200 from a backend, so no case broke the worker
//!   or left a desynchronised connection in the pool;
//! - in-flight counts, in the proxy and in the backends, are back to zero.
//!
//! The cases where `lb` was first found unsafe are kept apart in [`known_gaps`] (all fixed now, each
//! comment saying what `lb` used to do), with their own test.
//!
//! Every read is bounded ([`READ_TIMEOUT`]): a proxy that hangs fails the case instead of the suite.

use std::net::SocketAddr;
use std::time::Duration;

use lb::FailureKind;
use lb::config::OutlierConfig;
use lb::config::ServerLimits;
use lb::config::{Config, UpstreamConfig};
use lb::{Running, start};
use lb_algorithms::{Algorithm, BackendSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use toy_backend::{Backend, Knobs, start_many};

/// How long a case may take to be answered. Every well-handled case here is answered in milliseconds.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How long in-flight counts may take to return to zero once a connection is gone: the proxy and the
/// backend learn about a closed socket on their next poll, which is quick but not instantaneous.
const SETTLE: Duration = Duration::from_secs(3);

/// Used in an `Expect::Refused` list: the proxy closed the connection without answering.
const CLOSED: u16 = 0;

/// What a careful proxy does with a case.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answers itself with one of these statuses (or [`CLOSED`]); no request reaches a backend.
    Refused(&'static [u16]),
    /// Exactly one request reaches a backend; the answer has this status and its body contains this
    /// text (for `/echo`, the body the backend received, which shows how the proxy framed it).
    Forwarded(u16, &'static str),
    /// As `Forwarded`, and the answer closes the client connection (`connection: close`): RFC 9112
    /// section 6.1 requires it after a request that had both `Transfer-Encoding` and `Content-Length`,
    /// so whatever the client meant to follow the body is never read as a request.
    ForwardedThenClosed(u16, &'static str),
    /// The body turns out malformed after the headers may already have gone to a backend (a streaming
    /// proxy forwards as it reads): the client gets 400 or a closed connection, at most one request
    /// reaches a backend, and the backend is not blamed for it (no failure, no retry).
    BadBody,
}

/// One row of the table.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, raw: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case { name, raw: raw.into(), expect }
}

use Expect::{BadBody, Forwarded, ForwardedThenClosed, Refused};

/// A POST to `/echo` with these extra header lines (each ending in CRLF) and this body.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /echo HTTP/1.1\r\nHost: lb.test\r\n{headers}\r\n{body}").into_bytes()
}

/// A GET of `path` with these extra header lines.
fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: lb.test\r\n{headers}\r\n").into_bytes()
}

/// The cases `lb` handles safely today. Expectations are what nginx 1.22 and HAProxy 2.6 do, or the
/// RFC 9112 rule when they differ; the comment on a case says which.
fn cases() -> Vec<Case> {
    let big_header = format!("X-Big: {}\r\n", "a".repeat(600 * 1024));
    let many_headers: String = (0..200).map(|i| format!("X-H-{i}: v\r\n")).collect();
    let huge_uri = format!("/{}", "a".repeat(100 * 1024));
    vec![
        // ---- Message framing: where does the body end? (request smuggling) ----
        // CL.TE: a parser that trusts the length reads "0\r\n\r\nX" as the body; one that trusts
        // chunked reads an empty body and "X" as the start of the next request. lb lets
        // Transfer-Encoding win, drops Content-Length, forwards the decoded body re-framed as chunked
        // and closes the connection, exactly as RFC 9112 6.1 and HAProxy do (nginx answers 400).
        case(
            "CL.TE: Content-Length and chunked",
            post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nX"),
            ForwardedThenClosed(200, ""),
        ),
        // TE.CL: the chunked body carries more than Content-Length says; a parser that trusts the
        // length would read "8\r\n" as the body and "SMUGGLED..." as a second request. Same rule:
        // the backend gets the 8 decoded bytes and nothing else.
        case(
            "TE.CL: chunked body longer than Content-Length",
            post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n"),
            ForwardedThenClosed(200, "SMUGGLED"),
        ),
        case(
            "two different Content-Length headers",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            Refused(&[400]),
        ),
        // RFC 9110 8.6 allows a recipient to accept identical repeated lengths (HAProxy does; nginx
        // refuses any duplicate). Both lines reach the backend, but they agree, so no parser can differ.
        case(
            "two equal Content-Length headers",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            Forwarded(200, "hello"),
        ),
        case("Content-Length with a plus sign", post("Content-Length: +5\r\n", "hello"), Refused(&[400])),
        case("Content-Length negative", post("Content-Length: -1\r\n", "hello"), Refused(&[400])),
        case("Content-Length with an inner space", post("Content-Length: 5 5\r\n", "hello"), Refused(&[400])),
        case("Content-Length in hex", post("Content-Length: 0x5\r\n", "hello"), Refused(&[400])),
        case("Content-Length not a number", post("Content-Length: abc\r\n", "hello"), Refused(&[400])),
        case(
            "Content-Length beyond u64",
            post("Content-Length: 99999999999999999999999\r\n", "hello"),
            Refused(&[400]),
        ),
        // ---- Transfer-Encoding obfuscation (TE.TE): one parser sees chunked, the other does not ----
        // RFC 9112 6.3: a request whose final coding is not chunked has no reliable length: 400.
        case(
            "TE.TE: Transfer-Encoding: xchunked",
            post("Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", "hello"),
            Refused(&[400, 501]),
        ),
        // Whitespace between a field name and the colon: RFC 9112 5.1 says MUST reject with 400.
        case(
            "TE.TE: space before the colon",
            post("Transfer-Encoding : chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(&[400]),
        ),
        case(
            "TE.TE: chunked, identity (chunked not last)",
            post("Transfer-Encoding: chunked, identity\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(&[400, 501]),
        ),
        case(
            "TE.TE: second Transfer-Encoding line undoes chunked",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(&[400, 501]),
        ),
        // A tab is legal whitespace before a field value, so this *is* chunked: the proxy must decode it
        // as such (the backend receives exactly "hello"), not pass it on as an unknown coding.
        case(
            "Transfer-Encoding with a tab before chunked",
            post("Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Forwarded(200, "hello"),
        ),
        case(
            "Transfer-Encoding: CHUNKED in capitals",
            post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Forwarded(200, "hello"),
        ),
        // RFC 9112 7: chunked must not be applied twice. lb decodes once and re-frames the body
        // itself, so the backend cannot read it differently; nginx refuses the duplicate line (400).
        case(
            "chunked on two Transfer-Encoding lines",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Forwarded(200, "hello"),
        ),
        // RFC 9112 6.1: a coding the proxy does not implement is 501, as nginx answers (HAProxy 422).
        // lb used to decode the chunks and drop `gzip` silently, handing the backend a body the
        // client meant to be decoded once more.
        case(
            "Transfer-Encoding: gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(&[501]),
        ),
        // `identity` was removed from the registry (RFC 9112 7); nginx answers 501 to it too.
        case(
            "Transfer-Encoding: identity, chunked",
            post("Transfer-Encoding: identity, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(&[501]),
        ),
        // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request means a faulty or hostile client.
        case(
            "Transfer-Encoding in an HTTP/1.0 request",
            &b"POST /echo HTTP/1.0\r\nHost: lb.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
            Refused(&[400]),
        ),
        // ---- Chunked bodies ----
        case(
            "chunk extension (legal, ignored)",
            post("Transfer-Encoding: chunked\r\n", "5;name=value\r\nhello\r\n0\r\n\r\n"),
            Forwarded(200, "hello"),
        ),
        // A body that breaks off is the client's fault: 400 "bad request body", and the backend that
        // received the headers is not charged a failure (before a854b6f lb answered 502 and charged
        // it, so a client could feed outlier detection; see `malformed_bodies_do_not_eject_backends`).
        case("chunk size not hex", post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"), BadBody),
        case(
            "chunk size beyond u64",
            post("Transfer-Encoding: chunked\r\n", "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            BadBody,
        ),
        // RFC 9112 7.1: chunk-size is hex digits and nothing before them; lb used to trim the spaces
        // and forward "hello".
        case(
            "chunk size with a leading space",
            post("Transfer-Encoding: chunked\r\n", " 5\r\nhello\r\n0\r\n\r\n"),
            BadBody,
        ),
        case("chunk size negative", post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"), BadBody),
        // A chunk-size line (extensions included) is capped at 8 KiB; past it the body fails.
        case(
            "64 KiB of chunk extensions",
            post("Transfer-Encoding: chunked\r\n", &format!("5;{}\r\nhello\r\n0\r\n\r\n", "a=b;".repeat(16 * 1024))),
            BadBody,
        ),
        case(
            "chunk data without its CRLF",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n"),
            BadBody,
        ),
        // ---- Header section ----
        case("600 KiB header", get("/", &big_header), Refused(&[431, 400, CLOSED])),
        case("200 header lines", get("/", &many_headers), Refused(&[431, 400])),
        case("space inside a header name", get("/", "Bad Header: x\r\n"), Refused(&[400])),
        case("parenthesis inside a header name", get("/", "X(bad): x\r\n"), Refused(&[400])),
        case(
            "non-ASCII header name",
            &b"GET / HTTP/1.1\r\nHost: lb.test\r\nX-\xc3\x9cber: 1\r\n\r\n"[..],
            Refused(&[400]),
        ),
        case("NUL in a header name", get("/", "X-N\0ul: 1\r\n"), Refused(&[400])),
        case("NUL in a header value", get("/", "X-Nul: a\0b\r\n"), Refused(&[400])),
        // RFC 9112 5.2: obs-fold must be rejected or replaced by spaces; forwarding it as-is would let
        // the backend read " X-Admin: 1" as a header of its own.
        case("obs-fold continuation line", get("/", "X-Folded: a\r\n X-Admin: 1\r\n"), Refused(&[400])),
        // RFC 9112 2.2: a bare CR must be rejected (or replaced by SP).
        case("bare CR inside the header section", get("/", "X-A: 1\rX-B: 2\r\n"), Refused(&[400])),
        // RFC 9112 2.2 lets a recipient accept bare LF; lb (via httparse) does, and re-serialises the
        // request with CRLF, so the backend never sees a bare LF. nginx accepts it too.
        case("bare LF line endings", &b"GET / HTTP/1.1\nHost: lb.test\n\n"[..], Forwarded(200, "backend-")),
        // ---- Request line ----
        case("invalid method G@T", &b"G@T / HTTP/1.1\r\nHost: lb.test\r\n\r\n"[..], Refused(&[400])),
        case("two spaces in the request line", &b"GET  /  HTTP/1.1\r\nHost: lb.test\r\n\r\n"[..], Refused(&[400])),
        case("missing HTTP version", &b"GET / \r\nHost: lb.test\r\n\r\n"[..], Refused(&[400])),
        case("HTTP/0.9 simple request", &b"GET /\r\n\r\n"[..], Refused(&[400, CLOSED])),
        // nginx answers 505; httparse knows only HTTP/1.x and lb answers 400.
        case("HTTP/2.0 in an HTTP/1 request line", &b"GET / HTTP/2.0\r\nHost: lb.test\r\n\r\n"[..], Refused(&[400, 505])),
        case("NUL inside the URI", &b"GET /a\0b HTTP/1.1\r\nHost: lb.test\r\n\r\n"[..], Refused(&[400])),
        // The request line counts towards max_header_bytes (16 KiB by default): 431, as HAProxy's
        // bufsize gives 400 and nginx's 8 KiB buffers give 414.
        case("100 KiB URI", get(&huge_uri, ""), Refused(&[414, 431, 400])),
        case(
            "TLS ClientHello sent to the plain-text port",
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
            Refused(&[400, CLOSED]),
        ),
        // ---- Routing: lb is a reverse proxy, never an open forward proxy ----
        // An absolute-form target is accepted (RFC 9112 3.2.2) only for a host some upstream names in
        // `hosts`; this lab's upstream takes any Host header but names none, so 421 Misdirected Request.
        // (Until the production issue, lb routed these by Host and answered from a backend.)
        case(
            "absolute-form URI naming another host",
            &b"GET http://evil.example/info HTTP/1.1\r\nHost: evil.example\r\n\r\n"[..],
            Refused(&[421]),
        ),
        // RFC 9112 3.2.2: the URI's authority wins over Host, so this asks for evil.example too.
        case(
            "absolute-form URI whose host differs from Host",
            &b"GET http://evil.example/info HTTP/1.1\r\nHost: lb.test\r\n\r\n"[..],
            Refused(&[421]),
        ),
        // CONNECT would turn the proxy into a tunnel to anywhere. An authority-form target has no path,
        // so no route matches: 404, and nothing reaches a backend.
        case(
            "CONNECT to another host",
            &b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"[..],
            Refused(&[400, 403, 404, 405, 501]),
        ),
        case("HTTP/1.0 request without Host", &b"GET / HTTP/1.0\r\n\r\n"[..], Forwarded(200, "backend-")),
        // ---- Hop-by-hop abuse ----
        // h2c smuggling (Bishop Fox, 2020): a proxy that forwards Upgrade lets the client switch the
        // backend connection to HTTP/2 and talk to the backend directly. lb drops Upgrade.
        case(
            "h2c upgrade smuggling",
            get("/", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"),
            Forwarded(200, "backend-"),
        ),
        // Naming X-Forwarded-For in Connection would make a naive proxy strip the header it is about to
        // rely on; lb strips first and adds its own afterwards.
        case(
            "Connection naming X-Forwarded-For",
            get("/info", "Connection: X-Forwarded-For\r\n"),
            Forwarded(200, "\"x-forwarded-for\":\"127.0.0.1\""),
        ),
        // `Connection: close, Host` used to delete Host: the backend got a request without one. Host and
        // the fields lb sends are never connection options (see `NEVER_CONNECTION_OPTIONS`).
        case(
            "Connection naming Host",
            get("/info", "Connection: close, Host\r\n"),
            Forwarded(200, "\"host\":\"lb.test\""),
        ),
        // Naming X-Request-Id used to suppress the proxy's own id: the backend got none.
        case(
            "Connection naming X-Request-Id",
            get("/info", "Connection: X-Request-Id\r\n"),
            Forwarded(200, "\"x-request-id\":\""),
        ),
        // A client-supplied X-Forwarded-For is kept and the real peer appended, as nginx's
        // $proxy_add_x_forwarded_for does; the backend must trust only the last hop it knows.
        case(
            "spoofed X-Forwarded-For",
            get("/info", "X-Forwarded-For: 203.0.113.9\r\n"),
            Forwarded(200, "\"x-forwarded-for\":\"203.0.113.9, 127.0.0.1\""),
        ),
    ]
}

/// The cases the corpus first found `lb` unsafe on, kept apart so their history stays readable; all
/// fixed by the production issue (`validate.rs` for Host, `server.limits.max_header_bytes` for size).
/// Each comment says what `lb` did before and why it matters.
fn known_gaps() -> Vec<Case> {
    vec![
        // RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host. lb forwarded it
        // with Host set to the backend's address.
        case("HTTP/1.1 without Host", &b"GET / HTTP/1.1\r\n\r\n"[..], Refused(&[400])),
        // RFC 9112 3.2: MUST 400 on more than one Host line. lb routed by the first and forwarded both
        // ("host: lb.test, evil.example" at the backend): with `hosts` routing, the proxy and an
        // application that reads the last Host disagree on which site this is (cache poisoning,
        // routing bypass).
        case(
            "two Host headers",
            &b"GET / HTTP/1.1\r\nHost: lb.test\r\nHost: evil.example\r\n\r\n"[..],
            Refused(&[400]),
        ),
        // RFC 9112 3.2: MUST 400 on an invalid Host value. lb forwarded it.
        case("Host with a space in it", &b"GET / HTTP/1.1\r\nHost: lb test\r\n\r\n"[..], Refused(&[400])),
        // hyper's default read buffer (~400 KiB) was the only limit: a 100 KiB header reached the
        // backend. nginx stops at 8 KiB per line (400), HAProxy at its 16 KiB buffer (400). Each idle
        // connection could pin that much memory in lb and in the backend. Now 431 past 16 KiB.
        case(
            "100 KiB header",
            get("/", &format!("X-Big: {}\r\n", "a".repeat(100 * 1024))),
            Refused(&[431, 400]),
        ),
    ]
}

// ------------------------------------------------------------------------------------------------
// The harness.

/// One response as read off the wire.
#[derive(Debug, Default)]
struct Reply {
    /// The status of the first response, if one arrived.
    status: Option<u16>,
    /// Its head, for failure messages.
    head: String,
    /// Its body, de-chunked.
    body: Vec<u8>,
    /// Nothing arrived within [`READ_TIMEOUT`] and the connection stayed open: the proxy hung.
    timed_out: bool,
}

impl Reply {
    fn describe(&self) -> String {
        match self.status {
            _ if self.timed_out && self.status.is_none() => "no answer (hung)".to_string(),
            None => "closed without an answer".to_string(),
            Some(s) => {
                let body = String::from_utf8_lossy(&self.body);
                let body: String = body.chars().take(80).collect();
                format!("{s} {:?}", body.trim_end())
            }
        }
    }
}

/// Parse one complete response at the start of `buf`: `(status, head, body)`, or `None` if more
/// bytes are needed. A response framed by connection close is completed by the caller at EOF.
fn parse_response(buf: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse::<u16>().ok()?;
    let rest = &buf[head_end + 4..];
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = pos + rest[pos..].windows(2).position(|w| w == b"\r\n")?;
            let line = std::str::from_utf8(&rest[pos..line_end]).ok()?;
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                return (rest.len() >= pos + 2).then_some((status, head, body));
            }
            if rest.len() < pos + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
    }
    let length = match header("content-length") {
        Some(n) => n.parse::<usize>().ok()?,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => return None,
    };
    (rest.len() >= length).then(|| (status, head, rest[..length].to_vec()))
}

/// Connect, write `raw`, and read the first response (or the close, or the timeout).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        other => panic!("cannot connect to the proxy at {addr}: {other:?}"),
    };
    // The proxy may answer and close before taking the whole request (a 431 after the first few KiB),
    // so a failed write is not a failure of the case: the answer is what matters.
    let _ = timeout_at(deadline, stream.write_all(raw)).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((status, head, body)) = parse_response(&buf) {
            return Reply { status: Some(status), head, body, timed_out: false };
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            // EOF or reset: whatever arrived is the whole answer (close-delimited body).
            Ok(_) => return close_delimited(&buf, false),
            Err(_) => return close_delimited(&buf, true),
        }
    }
}

fn close_delimited(buf: &[u8], timed_out: bool) -> Reply {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Reply { timed_out, ..Reply::default() };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    Reply { status, head, body: buf[head_end + 4..].to_vec(), timed_out }
}

/// A proxy with one upstream over two toy backends.
struct Lab {
    backends: Vec<Backend>,
    lb: Running,
}

impl Lab {
    async fn start() -> Lab {
        Lab::start_with(|_| {}).await
    }

    /// Start with a change to the upstream's config (outlier detection, say).
    async fn start_with(change: impl FnOnce(&mut UpstreamConfig)) -> Lab {
        Lab::start_limited(|_| {}, change).await
    }

    /// Start with changes to `[server.limits]` and to the upstream's config.
    async fn start_limited(
        limits: impl FnOnce(&mut ServerLimits),
        change: impl FnOnce(&mut UpstreamConfig),
    ) -> Lab {
        let backends = match start_many(2, Knobs::default()).await {
            Ok(b) => b,
            Err(e) => panic!("cannot start toy backends: {e}"),
        };
        let mut config = Config::default();
        config.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
        config.server.workers = 1;
        config.server.shutdown_grace = Duration::from_secs(1);
        limits(&mut config.server.limits);
        let specs = backends.iter().map(|b| BackendSpec::new(b.addr().to_string())).collect();
        let mut upstream = UpstreamConfig::new("app", Algorithm::RoundRobin, specs);
        change(&mut upstream);
        config.upstreams.push(upstream);
        let lb = match start(config).await {
            Ok(r) => r,
            Err(e) => panic!("cannot start lb: {e}"),
        };
        Lab { backends, lb }
    }

    fn addr(&self) -> SocketAddr {
        self.lb.listen[0]
    }

    /// Requests the backends have received, all together.
    fn backend_requests(&self) -> u64 {
        self.backends.iter().map(|b| b.requests()).sum()
    }

    /// Failed attempts lb has charged to its backends, plus its retries: a client's bad input must
    /// move neither.
    fn blamed(&self) -> u64 {
        let state = self.lb.upstreams.all().iter().map(|u| u.load()).collect::<Vec<_>>();
        let failures: u64 = state
            .iter()
            .flat_map(|s| s.stats.iter())
            .map(|b| FailureKind::ALL.iter().map(|&k| b.failures(k)).sum::<u64>())
            .sum();
        failures + self.lb.metrics.retries("app")
    }

    /// Outlier ejections so far, over every backend.
    fn ejections(&self) -> u64 {
        self.lb.upstreams.all().iter().flat_map(|u| u.load().stats.clone()).map(|b| b.ejections()).sum()
    }

    /// Requests in flight, as the proxy counts them and as the backends do.
    fn in_flight(&self) -> (u64, usize) {
        let proxy = self.lb.upstreams.all().iter().map(|u| u.load().set.total_in_flight()).sum();
        let backends = self.backends.iter().map(|b| b.in_flight()).sum();
        (proxy, backends)
    }

    /// Wait (bounded) until `done` holds; false if it never did.
    async fn eventually(&self, done: impl Fn(&Lab) -> bool) -> bool {
        let deadline = Instant::now() + SETTLE;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Polling counters that other threads update when they notice a closed socket; there is
            // no event to wait on, and the deadline bounds it.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A good request on a new connection gets 200 from a backend: the worker still serves, and no
    /// pooled upstream connection was left half-way through a message.
    async fn still_serves(&self) -> Result<(), String> {
        let good =
            exchange(self.addr(), b"GET / HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n").await;
        if good.status == Some(200) && good.body.starts_with(b"backend-") {
            Ok(())
        } else {
            Err(format!("the next good request got {}", good.describe()))
        }
    }

    /// Run one case and its follow-up checks: what was seen, and what went wrong if anything.
    async fn run(&self, case: &Case) -> Result<String, String> {
        let (before, blamed_before) = (self.backend_requests(), self.blamed());
        let reply = exchange(self.addr(), &case.raw).await;
        let seen = reply.describe();
        let mut problems = Vec::new();
        let closes = reply.head.to_ascii_lowercase().contains("\r\nconnection: close");
        let (reached_ok, what): (fn(u64) -> bool, &str) = match case.expect {
            Refused(statuses) => {
                let got = if reply.timed_out { None } else { Some(reply.status.unwrap_or(CLOSED)) };
                if !got.is_some_and(|s| statuses.contains(&s)) {
                    problems.push(format!("expected one of {statuses:?} (0 = closed)"));
                }
                (|n| n == 0, "none")
            }
            Forwarded(status, text) | ForwardedThenClosed(status, text) => {
                let body = String::from_utf8_lossy(&reply.body);
                if reply.status != Some(status) || !body.contains(text) {
                    problems.push(format!("expected {status} with {text:?} in the body"));
                }
                if matches!(case.expect, ForwardedThenClosed(..)) && !closes {
                    problems.push("expected connection: close".to_string());
                }
                (|n| n == 1, "exactly one")
            }
            BadBody => {
                if !matches!(reply.status, None | Some(400)) || reply.timed_out {
                    problems.push("expected 400 or a closed connection".to_string());
                }
                (|n| n <= 1, "at most one")
            }
        };
        if let Err(e) = self.still_serves().await {
            problems.push(e);
        }
        // Counted after the follow-up (minus its own request), so a smuggled request that a backend
        // reads a little later is still caught.
        let reached = (self.backend_requests() - before).saturating_sub(1);
        if !reached_ok(reached) {
            problems.push(format!("{reached} requests reached a backend, expected {what}"));
        }
        let blamed = self.blamed() - blamed_before;
        if blamed > 0 {
            problems.push(format!("{blamed} backend failures or retries recorded for a client's fault"));
        }
        if !self.eventually(|lab| lab.in_flight() == (0, 0)).await {
            let (proxy, backends) = self.in_flight();
            problems.push(format!("still in flight after {SETTLE:?}: {proxy} in lb, {backends} in backends"));
        }
        if problems.is_empty() { Ok(seen) } else { Err(format!("got {seen}: {}", problems.join("; "))) }
    }

    async fn run_all(&self, cases: &[Case]) -> Vec<String> {
        let mut failures = Vec::new();
        for case in cases {
            match self.run(case).await {
                Ok(seen) => println!("ok   {:<52} {seen}", case.name),
                Err(why) => {
                    println!("FAIL {:<52} {why}", case.name);
                    failures.push(format!("{}: {why}", case.name));
                }
            }
        }
        failures
    }
}

/// Read every response on `stream` until the proxy closes it (bounded): their statuses and bodies.
async fn read_all_responses(mut stream: TcpStream) -> Vec<(u16, String)> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::new();
    let _ = timeout_at(deadline, stream.read_to_end(&mut buf)).await;
    let mut out = Vec::new();
    let mut rest = &buf[..];
    while let Some((status, head, body)) = parse_response(rest) {
        out.push((status, String::from_utf8_lossy(&body).into_owned()));
        // Advance past this response: its head, the blank line and its framed body. The bodies here
        // are all Content-Length framed (toy backend and lb error texts).
        let len = head.len() + 4 + body.len();
        rest = &rest[len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_or_forwarded_safely() {
    let lab = Lab::start().await;
    let cases = cases();
    assert!(cases.len() + known_gaps().len() >= 30, "the corpus shrank");
    let failures = lab.run_all(&cases).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_gaps_get_the_safe_answer() {
    let lab = Lab::start().await;
    let failures = lab.run_all(&known_gaps()).await;
    assert!(failures.is_empty(), "{} known gaps still open:\n{}", failures.len(), failures.join("\n"));
    lab.lb.shutdown().await;
}

/// RFC 9113 8.3.1: a request from an HTTP/2 client names its host in `:authority`, and a proxy that
/// forwards it over HTTP/1.1 makes `Host` from it. lb used to route by the authority and then send
/// `Host: <the backend's address>`, so a backend serving several sites saw the wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_requests_authority_reaches_the_backend_as_host() {
    let lab = Lab::start().await;
    let port = lab.addr().port();
    let client = reqwest::Client::builder()
        .timeout(READ_TIMEOUT)
        .no_proxy()
        .http2_prior_knowledge()
        .resolve("shop.example", lab.addr())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://shop.example:{port}/info");
    let resp = client.get(&url).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((resp.status().as_u16(), resp.version()), (200, reqwest::Version::HTTP_2));
    let body = resp.text().await.unwrap_or_default();
    let host = format!("shop.example:{port}");
    assert!(body.contains(&format!("\"host\":\"{host}\"")), "{body}");
    assert!(body.contains(&format!("\"x-forwarded-host\":\"{host}\"")), "{body}");
    // A `Host` beside `:authority` naming another site is malformed (RFC 9113 8.3.1): 400, and no
    // backend sees it.
    let before = lab.backend_requests();
    let resp = client.get(&url).header("host", "evil.example").send().await;
    let status = resp.map(|r| r.status().as_u16()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(status, 400);
    assert_eq!(lab.backend_requests(), before);
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelined_requests_get_two_answers_in_order() {
    let lab = Lab::start().await;
    let mut stream = TcpStream::connect(lab.addr()).await.unwrap_or_else(|e| panic!("{e}"));
    let both = b"GET /info HTTP/1.1\r\nHost: lb.test\r\n\r\nGET / HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n";
    stream.write_all(both).await.unwrap_or_else(|e| panic!("{e}"));
    let answers = read_all_responses(stream).await;
    // One worker, round robin over two backends: /info goes to backend-1 and / to backend-2, and the
    // answers come back in the order the requests were sent (HTTP/1.1 has no other way to match them).
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].1.contains("\"path\":\"/info\""), "{answers:?}");
    assert_eq!(answers[1], (200, "backend-2\n".to_string()));
    assert_eq!(lab.backend_requests(), 2);
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_hidden_in_a_get_body_stays_a_body() {
    let lab = Lab::start().await;
    let hidden = "GET /info HTTP/1.1\r\nHost: lb.test\r\n\r\n";
    let raw = format!(
        "GET /info HTTP/1.1\r\nHost: lb.test\r\nContent-Length: {}\r\n\r\n{hidden}\
         GET / HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n",
        hidden.len()
    );
    let mut stream = TcpStream::connect(lab.addr()).await.unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(raw.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let answers = read_all_responses(stream).await;
    // The GET's Content-Length covers the hidden request, so it is body, not a request: two answers
    // (the /info and the closing /), and the backends saw exactly two requests. A proxy that ignored
    // Content-Length on GET would produce three.
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].1.contains("\"content-length\":\"37\""), "the body went along: {answers:?}");
    assert_eq!(answers[1].0, 200, "{answers:?}");
    assert_eq!(lab.backend_requests(), 2, "a hidden request reached a backend");
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_body_releases_the_backend() {
    let lab = Lab::start().await;
    let mut stream = TcpStream::connect(lab.addr()).await.unwrap_or_else(|e| panic!("{e}"));
    // Promise a megabyte, send ten bytes, and wait until the request is in flight at a backend.
    let head = "POST /echo HTTP/1.1\r\nHost: lb.test\r\nContent-Length: 1000000\r\n\r\n0123456789";
    stream.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(lab.eventually(|lab| lab.in_flight() == (1, 1)).await, "never in flight: {:?}", lab.in_flight());
    drop(stream);
    // lb must notice the client is gone, drop the upstream request (closing that connection, which is
    // half-way through a body and can never be reused), and release its in-flight slot.
    assert!(lab.eventually(|lab| lab.in_flight() == (0, 0)).await, "still in flight: {:?}", lab.in_flight());
    assert_eq!(lab.blamed(), 0, "the backend was blamed for the client leaving");
    assert_eq!(lab.still_serves().await, Ok(()));
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_do_not_eject_backends() {
    let lab = Lab::start_with(|u| u.outlier_detection = Some(OutlierConfig::default())).await;
    // Default outlier detection ejects a backend after 5 failures in a row. Ten requests with a bad
    // chunk size are ten client errors; no backend did anything wrong.
    for _ in 0..10 {
        let _ = exchange(lab.addr(), &post("Transfer-Encoding: chunked\r\n", "zz\r\n")).await;
    }
    assert_eq!(lab.ejections(), 0, "a client got backends ejected");
    lab.lb.shutdown().await;
}

/// Send the head of a request one byte every `every` until the proxy closes the connection (or
/// `give_up`); how long that took.
async fn trickle(addr: SocketAddr, bytes: &[u8], every: Duration, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut probe = [0u8; 1024];
    for byte in bytes.iter().cycle() {
        if started.elapsed() > give_up {
            return None;
        }
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            return Some(started.elapsed());
        }
        // Anything readable (a 408, an EOF) means the proxy has given up on us.
        if let Ok(Ok(_)) = tokio::time::timeout(every, stream.read(&mut probe)).await {
            return Some(started.elapsed());
        }
    }
    None
}

/// Limits short enough for a test to wait them out.
fn short_limits(limits: &mut ServerLimits) {
    limits.header_read_timeout = Duration::from_millis(1500);
    limits.body_read_timeout = Duration::from_millis(1000);
    limits.idle_timeout = Duration::from_millis(1500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_by_the_header_read_timeout() {
    let lab = Lab::start_limited(short_limits, |_| {}).await;
    let limit = Duration::from_millis(1500);
    // The timeout is a deadline for the whole head, not per byte: a byte every 200 ms must not keep
    // the connection alive past it. The head never ends because the header line repeats.
    let slow = trickle(
        lab.addr(),
        b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaa",
        Duration::from_millis(200),
        limit * 4,
    );
    let (cut, good) = tokio::join!(slow, lab.still_serves());
    assert_eq!(good, Ok(()), "a slow client must not hold up others");
    let cut = cut.unwrap_or_else(|| panic!("the slow client was never cut off"));
    // Cut at the deadline; the bound leaves room for a trickle step and a loaded machine.
    assert!(
        cut >= limit && cut < limit + Duration::from_millis(1500),
        "cut after {cut:?}, the limit is {limit:?}"
    );
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_are_cut() {
    let lab = Lab::start_limited(short_limits, |_| {}).await;
    let limit = Duration::from_millis(1000);
    // Headers at once, then a body byte every 2 s: each gap is longer than body_read_timeout (1 s
    // here, 60 s by default as nginx's client_body_timeout), so the first gap ends it, although /echo
    // has already answered and is streaming the body back.
    let head = b"POST /echo HTTP/1.1\r\nHost: lb.test\r\nContent-Length: 1000000\r\n\r\n";
    let mut stream = TcpStream::connect(lab.addr()).await.unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(head).await.unwrap_or_else(|e| panic!("{e}"));
    let give_up = limit * 8;
    let cut = trickle_stream(stream, Duration::from_secs(2), give_up).await;
    let cut = cut.unwrap_or_else(|| panic!("the slow body was still being accepted after {give_up:?}"));
    assert!(cut < limit * 4, "cut after {cut:?}");
    // The backend connection that carried the body is gone too, and nobody was blamed.
    assert!(lab.eventually(|lab| lab.in_flight() == (0, 0)).await, "still in flight: {:?}", lab.in_flight());
    assert_eq!(lab.blamed(), 0);
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_and_busy_ones_are_not() {
    let lab = Lab::start_limited(short_limits, |_| {}).await;
    // A request that takes longer than every client-side timeout (2.5 s > 1.5 s) is not cut: a GET has
    // no body to wait for, and its response is the backend's business (the upstream timeouts).
    let slow = exchange(lab.addr(), b"GET /delay/2500 HTTP/1.1\r\nHost: lb.test\r\n\r\n");
    let idle = async {
        let started = Instant::now();
        let mut stream = TcpStream::connect(lab.addr()).await.ok()?;
        let mut buf = [0u8; 16];
        // Nothing sent: the connection is idle, and closed after idle_timeout.
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.ok()?.ok()?;
        (n == 0).then(|| started.elapsed())
    };
    let (slow, idle) = tokio::join!(slow, idle);
    assert_eq!(slow.status, Some(200), "{}", slow.describe());
    let idle = idle.unwrap_or_else(|| panic!("the idle connection was not closed"));
    assert!(idle >= Duration::from_millis(1500) && idle < Duration::from_secs(3), "closed after {idle:?}");
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_bytes_are_refused() {
    let lab = Lab::start_limited(|l| l.max_body_bytes = Some(1000), |_| {}).await;
    // Declared: 413 before anything is forwarded.
    let declared = exchange(lab.addr(), &post("Content-Length: 1001\r\n", &"x".repeat(1001))).await;
    assert_eq!(declared.status, Some(413), "{}", declared.describe());
    let fits =
        exchange(lab.addr(), &post("Content-Length: 1000\r\nConnection: close\r\n", &"x".repeat(1000))).await;
    assert_eq!(fits.status, Some(200), "{}", fits.describe());
    // Streamed (chunked, no length up front): the connection is cut once the count passes the limit
    // plus the head allowance (16 KiB), so 64 KiB in 1 KiB chunks is cut part-way.
    let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
    let mut stream = TcpStream::connect(lab.addr()).await.unwrap_or_else(|e| panic!("{e}"));
    let head = "POST /echo HTTP/1.1\r\nHost: lb.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut cut = false;
    for _ in 0..64 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(READ_TIMEOUT, stream.read_to_end(&mut rest)).await;
    assert!(cut || matches!(read, Ok(Ok(_)) | Ok(Err(_))), "the streamed body was never cut");
    assert!(lab.eventually(|lab| lab.in_flight() == (0, 0)).await, "still in flight: {:?}", lab.in_flight());
    lab.lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_and_counted() {
    let lab = Lab::start_limited(|l| l.max_connections = 2, |_| {}).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(lab.addr()).await.unwrap_or_else(|e| panic!("{e}")));
    }
    assert!(lab.eventually(|lab| lab.lb.metrics.connections.open() == 2).await);
    let third = exchange(lab.addr(), b"GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n").await;
    assert_eq!(third.status, None, "the third connection was served: {}", third.describe());
    assert!(!third.timed_out, "it was left hanging instead of closed");
    assert_eq!(lab.lb.metrics.connections.refused(), 1);
    drop(held);
    assert!(lab.eventually(|lab| lab.lb.metrics.connections.open() == 0).await);
    assert_eq!(lab.still_serves().await, Ok(()), "places are freed when connections close");
    lab.lb.shutdown().await;
}

/// As [`trickle`], on a stream whose head is already sent: a body byte every `every` until the proxy
/// gives up. Whatever the proxy sends back meanwhile (/echo streams the body back) is read and ignored:
/// only a close counts as a cut, and the next byte still waits for its turn.
async fn trickle_stream(mut stream: TcpStream, every: Duration, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut probe = [0u8; 4096];
    while started.elapsed() < give_up {
        if stream.write_all(b"x").await.is_err() {
            return Some(started.elapsed());
        }
        let next = Instant::now() + every;
        loop {
            match timeout_at(next, stream.read(&mut probe)).await {
                // EOF or reset: cut off.
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    None
}
