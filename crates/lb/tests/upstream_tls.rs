//! TLS to HTTP/1.1 backends (`[upstream.tls]` with the default protocol): small TLS backends made here
//! (hyper's HTTP/1.1 server behind a tokio-rustls acceptor, certificates from rcgen), and the proxy in
//! front: bodies byte for byte, keep-alive over one TLS connection, the certificate checks and their
//! failures, retries, health checks and a WebSocket, all over TLS.
//!
//! Run with `cargo nextest run -p lb --test upstream_tls`.

mod proxy_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb::FailureKind;
use lb::config::CertConfig;
use lb::config::HealthCheckConfig;
use lb::config::UpstreamTls;
use lb_algorithms::{Algorithm, BackendSpec, Health};
use proxy_support::{client, config, get, proxy};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(10);

/// A self-signed certificate for the DNS name `name`, its subject `CN={file}` (distinct subjects, so a
/// certificate checked against another one's CA finds no issuer at all), written into `dir` as
/// `{file}.pem` and `{file}.key`.
fn certificate(dir: &Path, file: &str, name: &str) -> CertConfig {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap_or_else(|e| panic!("{e}"));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, file);
    let key_pair = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let signed = params.self_signed(&key_pair).unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
    std::fs::write(&cert, signed.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key, key_pair.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
    CertConfig { cert, key, names: vec![] }
}

/// A running TLS backend: its address and how many TLS sessions it accepted.
struct TlsBackend {
    addr: SocketAddr,
    sessions: Arc<AtomicUsize>,
}

/// An HTTP/1.1 server behind TLS with `cert`. `GET /` answers `{name} {version} proto={X-Forwarded-Proto}`,
/// `POST /echo` echoes the body, `/health` is 200.
async fn tls_backend(cert: &CertConfig, name: &'static str) -> TlsBackend {
    let acceptor = lb::testing::acceptor(std::slice::from_ref(cert)).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let sessions = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&sessions);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                    let body = if req.uri().path() == "/echo" {
                        req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default()
                    } else {
                        let proto = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok());
                        let proto = proto.unwrap_or("none").to_string();
                        Bytes::from(format!("{name} {:?} proto={proto}\n", req.version()))
                    };
                    Ok::<_, Infallible>(http::Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsBackend { addr, sessions }
}

/// One upstream over `addrs` with `[upstream.tls]` set to `tls`.
fn tls_config(addrs: &[SocketAddr], tls: UpstreamTls) -> lb::Config {
    let mut cfg = config(Algorithm::RoundRobin, &[], &[]);
    cfg.upstreams[0].backends = addrs.iter().map(|a| BackendSpec::new(a.to_string())).collect();
    cfg.upstreams[0].tls = Some(tls);
    cfg
}

/// Trust `ca` and check the name `backend.test` (the backends are addressed by IP).
fn trusting(ca: &Path) -> UpstreamTls {
    UpstreamTls {
        ca: Some(ca.to_path_buf()),
        insecure_skip_verify: false,
        server_name: Some("backend.test".into()),
    }
}

/// 1 MiB that is not one repeated byte, so a reordering or a lost chunk shows.
fn pattern() -> Vec<u8> {
    (0..1024 * 1024).map(|i: u32| (i.wrapping_mul(31) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_gets_posts_and_reuses_one_connection() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "backend", "backend.test");
    let backend = tls_backend(&cert, "tls-backend").await;
    let lb = proxy(tls_config(&[backend.addr], trusting(&cert.cert))).await;
    let http = client();

    // HTTP/1.1 inside TLS, and X-Forwarded-Proto still says how the *client* came (plain HTTP).
    for _ in 0..20 {
        let (status, body) = get(&http, &lb.url()).await;
        assert_eq!((status, body.as_str()), (200, "tls-backend HTTP/1.1 proto=http\n"));
    }
    assert_eq!(backend.sessions.load(Ordering::SeqCst), 1, "20 requests over one pooled TLS connection");

    let sent = pattern();
    let resp = http.post(format!("{}/echo", lb.url())).body(sent.clone()).send().await;
    let resp = resp.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let got = resp.bytes().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.len(), sent.len());
    assert!(got[..] == sent[..], "the 1 MiB body came back byte for byte");
    assert_eq!(backend.sessions.load(Ordering::SeqCst), 1, "and on the same connection");
    assert_eq!(lb.upstreams.all()[0].load().set.total_in_flight(), 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_ca_did_not_sign_is_a_502_naming_backend_and_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "backend", "backend.test");
    let stranger = certificate(dir.path(), "stranger", "backend.test");
    let backend = tls_backend(&stranger, "stranger").await;
    let mut cfg = tls_config(&[backend.addr], trusting(&cert.cert));
    cfg.upstreams[0].retry.attempts = 1;
    let lb = proxy(cfg).await;
    let (status, body) = get(&client(), &lb.url()).await;
    assert_eq!(status, 502);
    assert_eq!(
        body,
        format!(
            "backend {}: TLS handshake with backend.test: invalid peer certificate: UnknownIssuer\n",
            backend.addr
        )
    );
    let stats = &lb.upstreams.all()[0].load().stats[0];
    assert_eq!(stats.failures(FailureKind::Connect), 1, "a failed handshake is a connect failure");
    assert_eq!(backend.sessions.load(Ordering::SeqCst), 0, "no session was established");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_backend_whose_certificate_keeps_failing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "backend", "backend.test");
    let stranger = certificate(dir.path(), "stranger", "backend.test");
    let good = tls_backend(&cert, "good").await;
    let bad = tls_backend(&stranger, "bad").await;
    let mut cfg = tls_config(&[bad.addr, good.addr], trusting(&cert.cert));
    cfg.upstreams[0].outlier_detection = Some(lb::config::OutlierConfig {
        enabled: true,
        consecutive_failures: 2,
        // A failed handshake is a failed connect, which ejects at once by default; two here, to
        // show that the count is of failures in a row.
        consecutive_connect_failures: 2,
        base_ejection_time: Duration::from_secs(60),
        max_ejection_time: Duration::from_secs(60),
        max_ejection_percent: 50,
    });
    cfg.upstreams[0].retry.budget_min_per_sec = 1000;
    let lb = proxy(cfg).await;
    let http = client();
    for _ in 0..6 {
        let (status, body) = get(&http, &lb.url()).await;
        assert_eq!((status, body.as_str()), (200, "good HTTP/1.1 proto=http\n"));
    }
    // Two handshake failures in a row took it out; after that nothing more is sent its way.
    let state = lb.upstreams.all()[0].load();
    assert_eq!(state.set.backends()[0].health(), Health::Ejected);
    assert_eq!(state.stats[0].failures(FailureKind::Connect), 2);
    assert_eq!(state.stats[0].ejections(), 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_around_a_backend_whose_certificate_fails_and_one_that_is_down() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "backend", "backend.test");
    let stranger = certificate(dir.path(), "stranger", "backend.test");
    let good = tls_backend(&cert, "good").await;
    let bad = tls_backend(&stranger, "bad").await;
    let (down, _held) = proxy_support::refusing_port();
    let mut cfg = tls_config(&[bad.addr, down, good.addr], trusting(&cert.cert));
    // A budget that never runs dry here: this test is about where retries go, not how many may.
    cfg.upstreams[0].retry.budget_min_per_sec = 1000;
    let lb = proxy(cfg).await;
    let http = client();
    for _ in 0..9 {
        let (status, body) = get(&http, &lb.url()).await;
        assert_eq!((status, body.as_str()), (200, "good HTTP/1.1 proto=http\n"));
    }
    // Three attempts reach every backend (each retry excludes the ones tried), so every request ends
    // on the good one, after zero, one or two connect failures, each retried.
    let state = lb.upstreams.all()[0].load();
    let (bad_fails, down_fails) =
        (state.stats[0].failures(FailureKind::Connect), state.stats[1].failures(FailureKind::Connect));
    assert!(bad_fails >= 1 && down_fails >= 1, "bad {bad_fails}, down {down_fails}");
    assert_eq!(lb.metrics.retries("app"), bad_fails + down_fails, "every failure was retried");
    assert_eq!(state.stats[2].requests(), 9);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_server_name_the_backends_host_is_the_name_sent_and_checked() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "localhost", "localhost");
    let backend = tls_backend(&cert, "by-name").await;
    let tls = UpstreamTls { ca: Some(cert.cert.clone()), ..UpstreamTls::default() };
    // The same backend by name (its certificate's name) and by IP (a name it does not carry).
    let mut cfg = tls_config(&[], tls);
    cfg.upstreams[0].backends = vec![BackendSpec::new(format!("localhost:{}", backend.addr.port()))];
    let lb = proxy(cfg.clone()).await;
    let (status, body) = get(&client(), &lb.url()).await;
    assert_eq!((status, body.as_str()), (200, "by-name HTTP/1.1 proto=http\n"));
    lb.shutdown().await;

    cfg.upstreams[0].backends = vec![BackendSpec::new(backend.addr.to_string())];
    cfg.upstreams[0].retry.attempts = 1;
    let lb = proxy(cfg).await;
    let (status, body) = get(&client(), &lb.url()).await;
    assert_eq!(status, 502);
    assert!(
        body.starts_with(&format!(
            "backend {}: TLS handshake with 127.0.0.1: invalid peer certificate: ",
            backend.addr
        )),
        "{body}"
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_talks_to_a_self_signed_backend() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "self-signed", "whatever.test");
    let backend = tls_backend(&cert, "self-signed").await;
    let tls = UpstreamTls { insecure_skip_verify: true, ..UpstreamTls::default() };
    let lb = proxy(tls_config(&[backend.addr], tls)).await;
    let (status, body) = get(&client(), &lb.url()).await;
    assert_eq!((status, body.as_str()), (200, "self-signed HTTP/1.1 proto=http\n"));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_speak_tls_and_fail_a_backend_that_speaks_only_plain_http() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "backend", "backend.test");
    let tls = tls_backend(&cert, "tls").await;
    let plain = proxy_support::backends(1).await;
    let mut cfg = tls_config(&[tls.addr, plain[0].addr()], trusting(&cert.cert));
    cfg.upstreams[0].health_check = Some(HealthCheckConfig {
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(500),
        fall: 2,
        rise: 1,
        jitter: 0.0,
        ..HealthCheckConfig::default()
    });
    let lb = proxy(cfg).await;
    let health = |i: usize| lb.upstreams.all()[0].load().set.backends()[i].health();
    let deadline = Instant::now() + DEADLINE;
    while health(1) != Health::Unhealthy {
        assert!(Instant::now() < deadline, "the plain-HTTP backend was never taken out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Checks kept passing on the TLS backend meanwhile (each check a TLS session or a reused one).
    assert_eq!(health(0), Health::Healthy);
    assert!(tls.sessions.load(Ordering::SeqCst) >= 1, "the checks reached the TLS backend over TLS");
    assert_eq!(plain[0].requests(), 0, "the plain backend never saw an HTTP request, only a handshake");
    lb.shutdown().await;
}

/// A WebSocket echo server behind TLS.
async fn tls_websocket_backend(cert: &CertConfig) -> SocketAddr {
    let acceptor = lb::testing::acceptor(std::slice::from_ref(cert)).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_tunnelled_to_a_tls_backend() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "backend", "backend.test");
    let addr = tls_websocket_backend(&cert).await;
    let lb = proxy(tls_config(&[addr], trusting(&cert.cert))).await;
    let url = format!("ws://{}/ws", lb.listen[0]);
    let (mut ws, response) = timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap_or_else(|_| panic!("handshake timed out"))
        .unwrap_or_else(|e| panic!("handshake: {e}"));
    assert_eq!(response.status().as_u16(), 101);
    for text in ["through", "tls"] {
        ws.send(Message::text(text)).await.unwrap_or_else(|e| panic!("send: {e}"));
        let echoed = timeout(DEADLINE, ws.next()).await.ok().flatten().and_then(|m| m.ok());
        assert_eq!(echoed, Some(Message::text(text)));
    }
    drop(ws);
    lb.shutdown().await;
}

/// The pool side: a TLS connection the backend closed (with `close_notify`) while it sat idle is not
/// handed out again, and the pool never mixes plain and TLS connections to one address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_drops_closed_tls_connections_and_keeps_kinds_apart() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "backend", "backend.test");
    let acceptor = lb::testing::acceptor(std::slice::from_ref(&cert)).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string();
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let _ = close_rx.await;
        // A clean TLS close: close_notify, then FIN.
        let _ = tls.shutdown().await;
        let _ = tls.read(&mut buf).await;
    });
    let settings =
        lb::testing::BackendTls::new(&trusting(&cert.cert), b"http/1.1").unwrap_or_else(|e| panic!("{e}"));
    let conn = lb::testing::connect(&addr, DEADLINE, Some(&settings)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(conn.pool_id(), settings.pool_id());
    let mut req = http::Request::new(None::<Full<Bytes>>);
    req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("backend.test"));
    let response = lb::testing::send(
        conn,
        &mut req,
        None,
        lb::testing::Timers {
            head: tokio::time::Instant::now() + std::time::Duration::from_secs(30),
            send: std::time::Duration::from_secs(30),
            read: std::time::Duration::from_secs(30),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{}", e.error));
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(&frame.unwrap_or_else(|e| panic!("{e}")).into_data().unwrap_or_default());
    }
    assert_eq!(got, b"ok");
    let mut conn = body.take_reusable().unwrap_or_else(|| panic!("complete and keep-alive"));
    assert!(conn.is_reusable(), "open and quiet");

    let pool = lb::testing::Pool::new();
    let far = u64::MAX;
    pool.put(&addr, conn, far);
    assert!(pool.take(&addr, 0, 1).is_none(), "a plain upstream never gets the TLS connection");
    assert!(pool.take(&addr, settings.pool_id() ^ 1, 1).is_none(), "nor one trusting another CA");
    assert_eq!(pool.idle_count(&addr), 1, "it stays for its own kind");
    let mut conn = pool.take(&addr, settings.pool_id(), 1).unwrap_or_else(|| panic!("its own kind gets it"));

    let _ = close_tx.send(());
    conn.stream().readable().await.unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + DEADLINE;
    // The close_notify and the FIN may arrive in separate reads; either one ends reuse.
    while conn.is_reusable() {
        assert!(Instant::now() < deadline, "a closed TLS connection still looks reusable");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pool.put(&addr, conn, far);
    assert!(pool.take(&addr, settings.pool_id(), 1).is_none(), "closed by the backend: not handed out");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn lb_check_accepts_tls_with_http1_and_points_at_a_missing_ca_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "ca", "backend.test");
    let text = format!(
        "[[upstream]]\nname = \"app\"\nalgorithm = \"round-robin\"\nbackends = [\"127.0.0.1:9443\"]\n\
         [upstream.tls]\nca = {:?}\nserver_name = \"backend.test\"\n",
        cert.cert.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    );
    let good = write(dir.path(), "good.toml", &text);
    let loaded = lb::Config::load(&good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.upstreams[0].tls.as_ref().and_then(|t| t.ca.clone()), Some(cert.cert.clone()));

    // Line 6 is `ca = "missing.pem"`; the value starts at column 6.
    let missing = write(dir.path(), "missing.toml", &text.replace("ca.pem", "missing.pem"));
    let errors = lb::Config::load(&missing).err().map(|e| e.to_string()).unwrap_or_default();
    let expected = format!(
        "{}:6:6: upstream \"app\": {}: No such file or directory (os error 2)",
        missing.display(),
        dir.path().join("missing.pem").display()
    );
    assert_eq!(errors, expected);

    // h2c is clear text: [upstream.tls] beside it is a contradiction, said so.
    let h2c = text.replace("[upstream.tls]", "protocol = \"h2c\"\n[upstream.tls]");
    let errors = lb::Config::parse(&h2c, "lb.toml").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(errors.contains("protocol = \"h2c\" is HTTP/2 in clear text"), "{errors}");
}

/// A TLS connection lb closes (here: dropped, as the pool drops one it no longer keeps) ends with a
/// `close_notify`, so the backend reads a clean end of stream rather than a truncation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_tls_connection_says_close_notify() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = certificate(dir.path(), "backend", "backend.test");
    let acceptor = lb::testing::acceptor(std::slice::from_ref(&cert)).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string();
    let backend = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        // Ok(0): a clean close; a bare FIN is an UnexpectedEof error instead.
        tls.read(&mut [0u8; 64]).await.map_err(|e| e.to_string())
    });
    let settings =
        lb::testing::BackendTls::new(&trusting(&cert.cert), b"http/1.1").unwrap_or_else(|e| panic!("{e}"));
    let conn = lb::testing::connect(&addr, DEADLINE, Some(&settings)).await.unwrap_or_else(|e| panic!("{e}"));
    drop(conn);
    let read = timeout(DEADLINE, backend).await.unwrap_or_else(|_| panic!("the backend never saw the close"));
    assert_eq!(read.unwrap_or_else(|e| panic!("{e}")), Ok(0));
}
