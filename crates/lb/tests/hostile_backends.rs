//! Backends that answer strangely, written byte for byte from raw sockets, and what the proxy's client
//! gets from them.
//!
//! Run with `cargo nextest run -p lb --test hostile_backends`.
//!
//! `tests/hostile_input.rs` attacks the proxy from the client side; these are the same idea from the
//! other side. A backend is trusted to serve, not to frame its messages well: a proxy must not relay an
//! answer that would leave its client's connection in a state the client does not expect (a protocol
//! switch it never asked for), must not pass on framing the client could read two ways (two
//! `Content-Length` lines), and must answer 502 rather than nothing when the backend's answer breaks
//! before any of it was sent. What it must pass on, it does: interim answers such as `103 Early
//! Hints` (RFC 9110 section 15.2).
//!
//! Each test starts a one-shot backend on 127.0.0.1:0 that reads a request head and writes a scripted
//! answer, puts `lb` in front of it, and reads the client's answer with a deadline ([`READ_TIMEOUT`]).

mod proxy_support;

use std::net::SocketAddr;
use std::time::Duration;

use proxy_support::proxy_to;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};

/// How long any exchange may take; each is answered in milliseconds when the proxy behaves.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// A backend that answers every request head it reads with `answer`, then closes the connection.
async fn scripted_backend(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Send `raw` to the proxy and read everything until it closes (bounded): the bytes as text.
async fn exchange(addr: SocketAddr, raw: &str) -> String {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        other => panic!("cannot connect to the proxy at {addr}: {other:?}"),
    };
    let _ = timeout_at(deadline, stream.write_all(raw.as_bytes())).await;
    let mut buf = Vec::new();
    let read = timeout_at(deadline, stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the proxy did not close within {READ_TIMEOUT:?}; got {:?}",
        String::from_utf8_lossy(&buf)
    );
    String::from_utf8_lossy(&buf).into_owned()
}

/// What the client gets from `lb` in front of a backend that answers `answer`, for `request`.
async fn through(answer: &'static [u8], request: &str) -> String {
    let lb = proxy_to(scripted_backend(answer).await, |_| {}).await;
    let got = exchange(lb.listen[0], request).await;
    lb.shutdown().await;
    got
}

const GET: &str = "GET / HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n";

/// A `101` to a request that asked for no upgrade would tell the client its connection now speaks
/// another protocol, and whatever the backend sends next would be read as that. lb used to relay it as
/// the final answer; now it is a broken response: 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_101_is_a_502() {
    let got =
        through(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", GET)
            .await;
    assert!(got.starts_with("HTTP/1.1 502 "), "{got}");
    assert!(!got.contains("HTTP/1.1 101"), "the 101 is not relayed: {got}");
}

/// RFC 9110 15.2: a proxy forwards 1xx answers. lb used to drop `103 Early Hints`, so a browser never
/// got its preload hints. Hop-by-hop fields stay behind; `100 Continue` is the proxy's own business
/// with its client (it answers `Expect` itself) and is not passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_an_http11_client_before_the_answer() {
    const ANSWER: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: keep-alive\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let got = through(ANSWER, GET).await;
    assert!(
        got.starts_with(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
        ),
        "{got}"
    );
    assert!(got.ends_with("\r\n\r\nok"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 2, "no 100 Continue: {got}");
    // An HTTP/1.0 client must not be sent a 1xx (RFC 9110 15.2): it gets the final answer only.
    let got = through(ANSWER, "GET / HTTP/1.0\r\nHost: lb.test\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
}

/// RFC 9110 8.6 lets a recipient accept equal repeated lengths; passing both on makes the client
/// decide again. lb used to forward both lines; now one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_equal_content_lengths_reach_the_client_once() {
    let got = through(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", GET).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert_eq!(got.to_ascii_lowercase().matches("content-length:").count(), 1, "{got}");
    assert!(got.ends_with("\r\n\r\nok"), "{got}");
}

/// A chunked answer whose first chunk is malformed breaks before any of it has gone to the client, so
/// the client can still be told: 502. lb used to close the connection with no answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_first_chunk_is_a_502_not_an_empty_reply() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        // A chunk size with a leading space is malformed from a backend too (RFC 9112 7.1).
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n"[..],
    ] {
        let got = through(answer, GET).await;
        assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got}");
        assert!(got.ends_with("backend sent a malformed response\n"), "{got}");
    }
}
