//! The timers that blame the right side: a slow client is never a backend failure, and a slow
//! backend or a client that stops reading never holds a connection forever.
//!
//! Run with `cargo test -p lb --test timers`.
//!
//! Each test puts `lb` in front of a raw-socket backend with the timer under test shortened to a
//! fraction of a second (the defaults are nginx's 60 s), and plays the slow side by hand:
//!
//! - a client that uploads slowly to a backend that answers after reading the body gets its answer,
//!   however long the upload takes (`response_headers` starts when the body has been sent);
//! - a backend that goes silent in the middle of its body has the client's response cut (`read`): an
//!   HTTP/1.1 client sees the connection close without the body's end, never a hang;
//! - a client that stops reading is dropped (`send_timeout`), over HTTP/1.1 and, per stream, over
//!   HTTP/2 with a zero window, and the backend connection it held is closed with it.

mod proxy_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_support::proxy_to;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};

/// The timer under test, wherever one is shortened.
const SHORT: Duration = Duration::from_millis(400);
/// Longer than any of these tests should take when the proxy behaves.
const PATIENCE: Duration = Duration::from_secs(8);

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (listener, addr)
}

/// Read a request head from `s`; what came after it (the body's start) is returned.
async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return buf.split_off(end + 4);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return Vec::new(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A backend that reads each request's whole `Content-Length` body before it answers with how many
/// bytes it got (as a backend that parses a JSON upload does).
async fn reads_then_answers() -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head_rest = read_head(&mut s).await;
                let mut got = head_rest.len();
                let mut chunk = [0u8; 8192];
                while got < UPLOAD {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let body = format!("got {got}");
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

const UPLOAD: usize = 64 * 1024;

/// A 64 KiB upload trickled over about 1.6 s, four times the proxy's `response_headers` and
/// `request` timeouts. Those timers wait for the backend, and the backend cannot answer before the
/// body is in: they start when the body has been sent. They used to start with the request head, so
/// this upload was cut with 504 and counted against a healthy backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_a_backend_timeout() {
    let backend = reads_then_answers().await;
    let lb = proxy_to(backend, |c| {
        c.upstreams[0].timeouts.response_headers = SHORT;
        c.upstreams[0].timeouts.request = SHORT;
    })
    .await;
    for _ in 0..2 {
        let mut s = TcpStream::connect(lb.listen[0]).await.unwrap_or_else(|e| panic!("{e}"));
        let head = format!("POST /upload HTTP/1.1\r\nHost: lb.test\r\nContent-Length: {UPLOAD}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..16 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.write_all(&[b'x'; UPLOAD / 16]).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let mut buf = vec![0u8; 4096];
        let n =
            timeout(PATIENCE, s.read(&mut buf)).await.unwrap_or_else(|_| panic!("no answer")).unwrap_or(0);
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with(&format!("got {UPLOAD}")), "{got}");
    }
    lb.shutdown().await;
}

/// A backend that sends `answer` and then holds the connection open without a word.
async fn goes_silent(answer: &'static [u8]) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_head(&mut s).await;
                let _ = s.write_all(answer).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

/// Everything the proxy sends until it closes, or a failure after [`PATIENCE`].
async fn read_until_closed(addr: SocketAddr, request: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
    s.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    let read = timeout(PATIENCE, s.read_to_end(&mut buf)).await;
    let got = String::from_utf8_lossy(&buf).into_owned();
    assert!(read.is_ok(), "the proxy still holds the connection after {PATIENCE:?}; got {got:?}");
    (got, started.elapsed())
}

const GET: &str = "GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n";

/// 5 of 10 promised bytes, then silence: after `read` the client's connection closes, so the client
/// sees a body shorter than its `Content-Length` (an error, as it must be), not a wait without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_silent_mid_body_is_cut_after_the_read_timeout() {
    let backend = goes_silent(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").await;
    let lb = proxy_to(backend, |c| c.upstreams[0].timeouts.read = SHORT).await;
    let (got, took) = read_until_closed(lb.listen[0], GET).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("Content-Length: 10\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nhello"), "only what the backend sent: {got:?}");
    assert!(took >= SHORT, "cut before the read timeout: {took:?}");
    lb.shutdown().await;
}

/// The same with a chunked body: the client gets the chunk that came and never the last chunk
/// (`0\r\n\r\n`), so it cannot take the truncated body for a whole one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_chunked_body_never_gets_its_last_chunk() {
    let backend = goes_silent(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
    let lb = proxy_to(backend, |c| c.upstreams[0].timeouts.read = SHORT).await;
    let (got, _) = read_until_closed(lb.listen[0], GET).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.to_ascii_lowercase().contains("transfer-encoding: chunked\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\n5\r\nhello\r\n"), "{got:?}");
    lb.shutdown().await;
}

/// A backend that streams a 256 MiB body as fast as it may, and reports when a write fails (the
/// proxy closed the connection).
async fn endless_body() -> (SocketAddr, oneshot::Receiver<()>) {
    let (listener, addr) = listener().await;
    let (closed_tx, closed) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = listener.accept().await {
            read_head(&mut s).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 256u64 << 20);
            let _ = s.write_all(head.as_bytes()).await;
            let block = vec![b'z'; 64 * 1024];
            for _ in 0..4096 {
                if s.write_all(&block).await.is_err() {
                    let _ = closed_tx.send(());
                    return;
                }
            }
        }
    });
    (addr, closed)
}

/// A client that reads the response head and then nothing: after `send_timeout` the proxy closes its
/// connection and the backend's, which used to stay open as long as the client liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_frees_the_backend() {
    let (backend, closed) = endless_body().await;
    let lb = proxy_to(backend, |c| c.server.limits.send_timeout = SHORT).await;
    let mut s = TcpStream::connect(lb.listen[0]).await.unwrap_or_else(|e| panic!("{e}"));
    s.write_all(GET.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut head = [0u8; 512];
    let n = s.read(&mut head).await.unwrap_or(0);
    assert!(head[..n].starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&head[..n]));
    // Stop reading. The socket buffers fill, then the proxy's send timer runs.
    let freed = timeout(PATIENCE, closed).await;
    assert!(matches!(freed, Ok(Ok(()))), "the backend connection is still open after {PATIENCE:?}");
    // The client's connection was closed too: what is buffered drains, then the end (or a reset).
    let mut sink = vec![0u8; 1 << 20];
    let ended = timeout(PATIENCE, async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client's connection is still open");
    lb.shutdown().await;
}

/// HTTP/2 says "stop" with flow control, not with a full socket: a client that opens its streams
/// with a zero window gets the response head and then cannot be sent a byte. After `send_timeout`
/// the stream's body is dropped and the backend connection closed, where it used to be pinned for as
/// long as the client stayed connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_with_no_window_frees_the_backend() {
    let (backend, closed) = endless_body().await;
    let lb = proxy_to(backend, |c| c.server.limits.send_timeout = SHORT).await;
    let tcp = TcpStream::connect(lb.listen[0]).await.unwrap_or_else(|e| panic!("{e}"));
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.initial_stream_window_size(0).adaptive_window(false);
    let (mut sender, conn) =
        builder.handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await.unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(conn);
    let request = http::Request::get("http://lb.test/").body(Empty::new()).unwrap_or_else(|e| panic!("{e}"));
    let response = timeout(PATIENCE, sender.send_request(request))
        .await
        .unwrap_or_else(|_| panic!("no response head"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 200);
    // Hold the response without reading it: no window is ever granted.
    let freed = timeout(PATIENCE, closed).await;
    assert!(matches!(freed, Ok(Ok(()))), "the backend connection is still open after {PATIENCE:?}");
    drop(response);
    lb.shutdown().await;
}
