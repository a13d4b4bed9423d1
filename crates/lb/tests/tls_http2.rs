//! TLS termination with SNI and ALPN, and HTTP/2 from clients (over TLS, and h2c with prior knowledge
//! on a plain listener), tested with reqwest as a real client.
//!
//! Run with `cargo nextest run -p lb --test tls_http2`.
//!
//! Certificates are made per test with rcgen into a temp dir: two self-signed ones, for `a.lb.test`
//! and `b.lb.test`. A client that trusts only one of them can only complete a handshake in which `lb`
//! presented that one, which is how the tests see which certificate SNI picked.

mod proxy_support;

use std::net::SocketAddr;
use std::path::Path;

use lb::config::CertConfig;
use lb_algorithms::Algorithm;
use proxy_support::{CLIENT_TIMEOUT, backends, config, proxy};
use reqwest::{Certificate, Version};

/// A self-signed certificate for `name`, written as `name.pem` and `name.key`.
fn cert(dir: &Path, name: &str) -> (CertConfig, Certificate) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, ck.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
    let trusted = Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    (CertConfig { cert, key, names: vec![name.to_string()] }, trusted)
}

/// A client that trusts only `root` and resolves both test names to `addr`.
fn https_client(root: &Certificate, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root.clone())
        .resolve("a.lb.test", addr)
        .resolve("b.lb.test", addr);
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_terminates_with_sni_picking_the_certificate_and_alpn_picking_h2() {
    let all = backends(2).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, trust_a) = cert(dir.path(), "a.lb.test");
    let (b, trust_b) = cert(dir.path(), "b.lb.test");
    let mut cfg = config(Algorithm::RoundRobin, &all, &[]);
    cfg.server.listen_tls = vec!["127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))];
    cfg.server.tls = vec![a, b];
    let lb = proxy(cfg).await;
    let addr = lb.listen_tls[0];
    let port = addr.port();

    // SNI b.lb.test: lb presents b's certificate (the client trusts nothing else), ALPN picks h2, and
    // the backend is told the client came over HTTPS.
    let client = https_client(&trust_b, addr, false);
    let resp =
        client.get(format!("https://b.lb.test:{port}/info")).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2, "ALPN should pick h2");
    let body = resp.text().await.unwrap_or_default();
    assert!(body.contains("\"x-forwarded-proto\":\"https\""), "{body}");

    // The same client asking for a.lb.test gets a's certificate, which it does not trust.
    let wrong = client.get(format!("https://a.lb.test:{port}/")).send().await;
    assert!(wrong.is_err(), "a.lb.test must be served with a's certificate");

    // a.lb.test with a client that trusts a, over HTTP/1.1 only (ALPN offers http/1.1 too).
    let h1 = https_client(&trust_a, addr, true);
    let resp = h1.get(format!("https://a.lb.test:{port}/")).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((resp.status().as_u16(), resp.version()), (200, Version::HTTP_11));

    // The plain listener is still plain.
    let (status, _) = proxy_support::get(&proxy_support::client(), &lb.url()).await;
    assert_eq!(status, 200);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_is_served_on_the_plain_listener() {
    let all = backends(2).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Four requests on one HTTP/2 connection, round robin over two backends: 1, 2, 1, 2.
    let mut names = Vec::new();
    for _ in 0..4 {
        let resp = client.get(lb.url()).send().await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((resp.status().as_u16(), resp.version()), (200, Version::HTTP_2));
        // The HTTP/1 backend's fields reach the HTTP/2 client as a map, with the request id added.
        let h = resp.headers();
        assert_eq!(h.get("content-type").map(|v| v.as_bytes()), Some(&b"text/plain; charset=utf-8"[..]));
        assert!(h.get("x-request-id").is_some_and(|v| !v.is_empty()), "{h:?}");
        assert!(h.get("connection").is_none() && h.get("keep-alive").is_none(), "{h:?}");
        names.push(resp.text().await.unwrap_or_default().trim().to_string());
    }
    assert_eq!(names, ["backend-1", "backend-2", "backend-1", "backend-2"]);
    // A POST body streams through too.
    let resp = client
        .post(format!("{}/echo", lb.url()))
        .body("over h2c")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(resp.text().await.unwrap_or_default(), "over h2c");
    assert_eq!(all.iter().map(|b| b.requests()).sum::<u64>(), 5, "every request reached a backend");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_fails_at_start_with_the_file_name() {
    let all = backends(1).await;
    let mut cfg = config(Algorithm::RoundRobin, &all, &[]);
    cfg.server.listen_tls = vec!["127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))];
    cfg.server.tls = vec![CertConfig {
        cert: "/nonexistent/lb.pem".into(),
        key: "/nonexistent/lb.key".into(),
        names: vec![],
    }];
    match lb::start(cfg).await {
        Ok(_) => panic!("started without a certificate"),
        Err(e) => assert!(e.to_string().contains("/nonexistent/lb.pem"), "{e}"),
    }
}

/// The request id goes to an HTTP/2 client as a never-indexed HPACK field: a value that never repeats
/// would otherwise be added to the connection's header table on every response, pushing out the fields
/// that do repeat, for nothing. Read from the raw frames, since an HTTP/2 library hides how a field was
/// encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_reaches_h2_clients_never_indexed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    let addr = lb.url().trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap_or_else(|e| panic!("{e}"));
    // Preface, an empty SETTINGS, then GET / on stream 1 (END_STREAM | END_HEADERS): :method GET,
    // :scheme http and :path / from the static table, :authority as a literal.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    let mut block = vec![0x82, 0x86, 0x84, 0x41, addr.len() as u8];
    block.extend_from_slice(addr.as_bytes());
    hello.extend_from_slice(&[0, 0, block.len() as u8, 0x01, 0x05, 0, 0, 0, 1]);
    hello.extend_from_slice(&block);
    conn.write_all(&hello).await.unwrap_or_else(|e| panic!("{e}"));
    // Frames until the response's HEADERS on stream 1.
    let block = tokio::time::timeout(CLIENT_TIMEOUT, async {
        loop {
            let mut head = [0u8; 9];
            conn.read_exact(&mut head).await.unwrap_or_else(|e| panic!("{e}"));
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload).await.unwrap_or_else(|e| panic!("{e}"));
            let (kind, flags, stream) =
                (head[3], head[4], u32::from_be_bytes([head[5], head[6], head[7], head[8]]));
            if kind == 0x01 && stream == 1 {
                assert_eq!(flags & 0x04, 0x04, "a small response head fits one frame");
                assert_eq!(flags & 0x28, 0, "no padding or priority from the server");
                return payload;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no response HEADERS within {CLIENT_TIMEOUT:?}"));
    // The backend's fields all have names from HPACK's static table; the request id's name is the one
    // written as a literal. 0x10 is "never indexed" (RFC 7541, 6.2.3); 0x40 would add it to the table.
    assert_eq!(literal_name_fields(&block), [0x10], "HPACK block {block:02x?}");
    lb.shutdown().await;
}

/// The representation (0x40 with incremental indexing, 0x00 without, 0x10 never indexed) of each field
/// in an HPACK block whose name is a literal rather than a table index.
fn literal_name_fields(block: &[u8]) -> Vec<u8> {
    // An HPACK integer with an N-bit prefix (RFC 7541, 5.1), from `at`; returns it and the next offset.
    fn int(block: &[u8], at: usize, bits: u32) -> (usize, usize) {
        let mask = (1usize << bits) - 1;
        let mut value = usize::from(block[at]) & mask;
        let mut i = at + 1;
        if value == mask {
            let mut shift = 0;
            loop {
                let b = block[i];
                i += 1;
                value += usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        (value, i)
    }
    // A string literal (5.2): its length after the Huffman bit, then its bytes.
    let string = |at: usize| {
        let (len, i) = int(block, at, 7);
        i + len
    };
    let mut kinds = Vec::new();
    let mut i = 0;
    while i < block.len() {
        let b = block[i];
        let (kind, bits) = match b {
            _ if b & 0x80 != 0 => (None, 7),
            _ if b & 0xc0 == 0x40 => (Some(0x40), 6),
            _ if b & 0xe0 == 0x20 => (None, 5),
            _ => (Some(b & 0xf0), 4),
        };
        let (index, next) = int(block, i, bits);
        i = next;
        let Some(kind) = kind else { continue };
        if index == 0 {
            kinds.push(kind);
            i = string(i);
        }
        i = string(i);
    }
    kinds
}
