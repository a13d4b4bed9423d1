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
