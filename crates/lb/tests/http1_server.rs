//! The client-facing HTTP/1.1 server (`src/http/h1/server.rs`) over raw sockets: the behaviours a real
//! client relies on that the hostile-input table does not cover: `Expect: 100-continue`, HTTP/1.0
//! keep-alive, HEAD, how a streamed response is framed for 1.1 and 1.0 clients, pipelined requests
//! with bodies, and the `Date` on lb's own answers.
//!
//! Run with `cargo nextest run -p lb --test http1_server`.

mod proxy_support;

use std::net::SocketAddr;
use std::time::Duration;

use lb_algorithms::Algorithm;
use proxy_support::{backends, config, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect: {e}"))
}

async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap_or_else(|e| panic!("write: {e}"));
}

/// Read until `buf` contains `needle` (or the peer closes, or the deadline passes); returns what was
/// read, as text.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &str) -> String {
    let mut chunk = [0u8; 8192];
    while !String::from_utf8_lossy(buf).contains(needle) {
        match timeout(DEADLINE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(buf).into_owned()
}

/// Read everything until the peer closes.
async fn read_to_close(stream: &mut TcpStream) -> (String, bool) {
    let mut all = Vec::new();
    let closed = matches!(timeout(DEADLINE, stream.read_to_end(&mut all)).await, Ok(Ok(_)));
    (String::from_utf8_lossy(&all).into_owned(), closed)
}

/// The (lower-cased) value of `name` in a response head.
fn header(head: &str, name: &str) -> Option<String> {
    head.split("\r\n\r\n").next()?.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_its_interim_answer_before_the_body_is_sent() {
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    let mut s = connect(lb.listen[0]).await;
    send(
        &mut s,
        b"POST /echo HTTP/1.1\r\nHost: lb.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    // Nothing of the body has been sent: the client waits for the 100 (curl waits up to 1 s).
    let mut buf = Vec::new();
    let interim = read_until(&mut s, &mut buf, "\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue\r\n\r\n"), "{interim:?}");
    send(&mut s, b"hello").await;
    // The echo backend may answer (200, streaming) before the body is all there, so its head can
    // come right behind the 100; the body comes back after it.
    let answer = read_until(&mut s, &mut buf, "hello").await;
    let answer = answer.strip_prefix("HTTP/1.1 100 Continue\r\n\r\n").unwrap_or(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer:?}");
    assert_eq!(answer.matches("100 Continue").count(), 0, "one interim answer only: {answer:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_keeps_alive_only_when_asked() {
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;

    // Asked: the answer says keep-alive, and a second request on the same connection is served.
    let mut s = connect(lb.listen[0]).await;
    let mut buf = Vec::new();
    for round in 0..2 {
        send(&mut s, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
        let answer = read_until(&mut s, &mut buf, "backend-1\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "round {round}: {answer:?}");
        assert_eq!(header(&answer, "connection").as_deref(), Some("keep-alive"), "{answer:?}");
        assert!(header(&answer, "content-length").is_some(), "a 1.0 keep-alive answer needs a length");
        buf.clear();
    }

    // Not asked: the answer says close, and lb closes.
    let mut s = connect(lb.listen[0]).await;
    send(&mut s, b"GET / HTTP/1.0\r\n\r\n").await;
    let (answer, closed) = read_to_close(&mut s).await;
    assert!(closed, "lb left an HTTP/1.0 connection open");
    assert_eq!(header(&answer, "connection").as_deref(), Some("close"), "{answer:?}");
    assert!(answer.ends_with("backend-1\n"), "{answer:?}");
    // lb read our end for a moment after its close (so its answer cannot be lost to a reset); a real
    // client closes too, and so do we, or the shutdown would wait for that.
    drop(s);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_keep_the_length_and_carry_no_body() {
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    let mut s = connect(lb.listen[0]).await;
    // HEAD, then GET on the same connection: if lb sent (or waited for) a body after the HEAD, the
    // GET's answer would be misread or never come.
    send(&mut s, b"HEAD /bytes/100 HTTP/1.1\r\nHost: lb.test\r\n\r\nGET / HTTP/1.1\r\nHost: lb.test\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let both = read_until(&mut s, &mut buf, "backend-1\n").await;
    let (head_answer, rest) = both.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{both:?}"));
    assert!(head_answer.starts_with("HTTP/1.1 200 OK"), "{head_answer:?}");
    assert_eq!(header(head_answer, "content-length").as_deref(), Some("100"));
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "the GET's answer follows at once: {rest:?}");
    assert!(rest.ends_with("\r\n\r\nbackend-1\n"), "{rest:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_is_chunked_for_1_1_and_runs_to_the_close_for_1_0() {
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    // A chunked request to /echo comes back with no length: the backend streams it.
    let request = |version: &str| {
        format!(
            "POST /echo HTTP/{version}\r\nHost: lb.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
    };
    let mut s = connect(lb.listen[0]).await;
    send(&mut s, request("1.1").as_bytes()).await;
    let mut buf = Vec::new();
    let answer = read_until(&mut s, &mut buf, "\r\n0\r\n\r\n").await;
    assert_eq!(header(&answer, "transfer-encoding").as_deref(), Some("chunked"), "{answer:?}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let decoded: String = body
        .split("\r\n")
        .collect::<Vec<_>>()
        .chunks(2)
        .filter_map(|pair| match pair {
            [size, data] if usize::from_str_radix(size, 16).is_ok_and(|n| n == data.len()) => Some(*data),
            _ => None,
        })
        .collect();
    assert_eq!(decoded, "hello world", "{body:?}");

    // HTTP/1.0 has no chunked encoding: the body runs to the close, and the answer says so. (A 1.0
    // request cannot carry a chunked body either, so this one sends its length.)
    let mut s = connect(lb.listen[0]).await;
    send(&mut s, b"POST /echo HTTP/1.0\r\nHost: lb.test\r\nContent-Length: 11\r\n\r\nhello world").await;
    let (answer, closed) = read_to_close(&mut s).await;
    assert!(closed);
    assert!(answer.ends_with("\r\n\r\nhello world"), "{answer:?}");
    assert_eq!(header(&answer, "transfer-encoding"), None, "{answer:?}");
    drop(s);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_bodies_are_answered_in_order() {
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    let mut s = connect(lb.listen[0]).await;
    // Three requests in one write: a POST with a length, a chunked POST, a GET. Each body must end
    // exactly where its framing says, or the next request would be read from the middle of it.
    send(
        &mut s,
        b"POST /echo HTTP/1.1\r\nHost: lb.test\r\nContent-Length: 5\r\n\r\nfirst\
          POST /echo HTTP/1.1\r\nHost: lb.test\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n\
          GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n",
    )
    .await;
    let mut buf = Vec::new();
    let all_answers = read_until(&mut s, &mut buf, "backend-1\n").await;
    let first = all_answers.find("first").unwrap_or(usize::MAX);
    let second = all_answers.find("second").unwrap_or(usize::MAX);
    let third = all_answers.find("backend-1\n").unwrap_or(usize::MAX);
    assert!(first < second && second < third && third != usize::MAX, "{all_answers:?}");
    assert_eq!(all_answers.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{all_answers:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_s_own_answers_carry_a_date_and_a_length() {
    let all = backends(1).await;
    let mut cfg = config(Algorithm::RoundRobin, &all, &[]);
    cfg.upstreams[0].path_prefix = "/info".into();
    let lb = proxy(cfg).await;
    let mut s = connect(lb.listen[0]).await;
    // No route for `/`: lb answers 404 itself, and the connection stays usable.
    send(&mut s, b"GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n").await;
    let mut buf = Vec::new();
    let answer = read_until(&mut s, &mut buf, "\r\n\r\n").await;
    let length: usize = header(&answer, "content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let head_len = answer.find("\r\n\r\n").map_or(0, |i| i + 4);
    let mut chunk = [0u8; 1024];
    while buf.len() < head_len + length {
        match timeout(DEADLINE, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let answer = String::from_utf8_lossy(&buf).into_owned();
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer:?}");
    let date = header(&answer, "date").unwrap_or_else(|| panic!("no date: {answer:?}"));
    assert!(date.ends_with(" gmt") && date.len() == 29, "{date:?}");
    assert!(length > 0, "{answer:?}");
    assert_eq!(answer.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len()), length, "{answer:?}");
    buf.clear();
    send(&mut s, b"GET /info HTTP/1.1\r\nHost: lb.test\r\n\r\n").await;
    let next = read_until(&mut s, &mut buf, "backend-1").await;
    assert!(next.starts_with("HTTP/1.1 200 OK\r\n"), "{next:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_chunked_body_streams_both_ways_byte_for_byte() {
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    let s = connect(lb.listen[0]).await;
    let (mut rd, mut wr) = s.into_split();
    // 4 MiB in 64 KiB chunks, each chunk a different byte so a lost, repeated or reordered piece shows.
    let chunks = 64usize;
    let size = 64 * 1024;
    let writer = tokio::spawn(async move {
        let head = "POST /echo HTTP/1.1\r\nHost: lb.test\r\nTransfer-Encoding: chunked\r\n\r\n";
        wr.write_all(head.as_bytes()).await?;
        for i in 0..chunks {
            wr.write_all(format!("{size:x}\r\n").as_bytes()).await?;
            wr.write_all(&vec![(i % 251) as u8; size]).await?;
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(wr)
    });
    // Read the answer while the body is still being sent (the echo streams it back), de-chunk it.
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let body = loop {
        match timeout(DEADLINE, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&chunk[..n]),
            other => panic!("the answer stopped after {} bytes: {other:?}", raw.len()),
        }
        if raw.ends_with(b"\r\n0\r\n\r\n") {
            break dechunk(&raw);
        }
    };
    let _wr = writer.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body.len(), chunks * size);
    for (i, piece) in body.chunks(size).enumerate() {
        assert!(piece.iter().all(|&b| b == (i % 251) as u8), "piece {i} differs");
    }
    lb.shutdown().await;
}

/// The body of a complete chunked answer (head included in `raw`).
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let start = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |i| i + 4);
    let mut rest = &raw[start..];
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { panic!("no size line") };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap_or("x"), 16)
            .unwrap_or_else(|e| panic!("chunk size: {e}"));
        rest = &rest[eol + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "chunk data must end with CRLF");
        rest = &rest[size + 2..];
    }
}
