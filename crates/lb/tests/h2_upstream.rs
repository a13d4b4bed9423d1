//! HTTP/2 to backends: `protocol = "h2c"` to toy backends (which speak h2c with prior knowledge), and
//! `protocol = "h2"` over TLS to a small HTTP/2-only TLS server made here, with the CA checked, with
//! verification off, and with the wrong CA; retries around a backend that is down or answers 503, a
//! POST body that survives a refused connection, and the explain headers.
//!
//! Run with `cargo nextest run -p lb --test h2_upstream`.

mod proxy_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb::config::CertConfig;
use lb::config::{Protocol, UpstreamTls};
use lb_algorithms::{Algorithm, BackendSpec};
use proxy_support::{backends, client, config, get, proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstreams_get_http2_and_bodies_stream_both_ways() {
    let all = backends(2).await;
    let mut cfg = config(Algorithm::RoundRobin, &all, &[]);
    cfg.upstreams[0].protocol = Protocol::H2c;
    let lb = proxy(cfg).await;
    let http = client();
    // Round robin as on the HTTP/1.1 path: 1, 2, 1, 2.
    let mut names = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(&http, &lb.url()).await;
        assert_eq!(status, 200, "{body}");
        names.push(body.trim().to_string());
    }
    assert_eq!(names, ["backend-1", "backend-2", "backend-1", "backend-2"]);
    let echoed = http.post(format!("{}/echo", lb.url())).body("x".repeat(100_000)).send().await;
    let echoed = echoed.unwrap_or_else(|e| panic!("{e}")).text().await.unwrap_or_default();
    assert_eq!(echoed.len(), 100_000);
    assert_eq!(lb.upstreams.all()[0].load().set.total_in_flight(), 0);
    lb.shutdown().await;
}

/// An HTTP/2-only TLS server that answers `tls-backend HTTP/2.0`.
async fn tls_h2_backend(dir: &Path) -> (SocketAddr, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["backend.test".into()]).unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = (dir.join("backend.pem"), dir.join("backend.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
    let acceptor = lb::testing::acceptor(&[CertConfig { cert: cert.clone(), key, names: vec![] }])
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!("tls-backend {:?}\n", req.version());
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_checks_the_backend_certificate_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (addr, ca) = tls_h2_backend(dir.path()).await;
    let other =
        rcgen::generate_simple_self_signed(vec!["other.test".into()]).unwrap_or_else(|e| panic!("{e}"));
    let wrong_ca = dir.path().join("other.pem");
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap_or_else(|e| panic!("{e}"));

    let with = |tls: UpstreamTls| {
        let mut cfg = config(Algorithm::RoundRobin, &[], &[]);
        cfg.upstreams[0].backends = vec![BackendSpec::new(addr.to_string())];
        cfg.upstreams[0].protocol = Protocol::H2;
        cfg.upstreams[0].tls = Some(tls);
        cfg.upstreams[0].retry.attempts = 1;
        cfg
    };
    let named = |ca: &Path| UpstreamTls {
        ca: Some(ca.to_path_buf()),
        insecure_skip_verify: false,
        server_name: Some("backend.test".into()),
    };
    let http = client();
    for (what, tls, expected) in [
        ("the right CA", named(&ca), 200),
        ("verification off", UpstreamTls { insecure_skip_verify: true, ..UpstreamTls::default() }, 200),
        ("the wrong CA", named(&wrong_ca), 502),
    ] {
        let lb = proxy(with(tls)).await;
        let (status, body) = get(&http, &lb.url()).await;
        assert_eq!(status, expected, "{what}: {body}");
        if expected == 200 {
            assert_eq!(body, "tls-backend HTTP/2.0\n", "{what}");
        }
        lb.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_reaches_a_backend_that_speaks_only_http2() {
    // An HTTP/2-only server in clear text: an HTTP/1.1 request would be refused, so a 200 saying
    // HTTP/2.0 shows lb spoke h2c.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let body = format!("h2c-backend {:?}\n", req.version());
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    let mut cfg = config(Algorithm::RoundRobin, &[], &[]);
    cfg.upstreams[0].backends = vec![BackendSpec::new(addr.to_string())];
    cfg.upstreams[0].protocol = Protocol::H2c;
    let lb = proxy(cfg).await;
    let (status, body) = get(&client(), &lb.url()).await;
    assert_eq!((status, body.as_str()), (200, "h2c-backend HTTP/2.0\n"));
    lb.shutdown().await;
}

#[test]
fn h2_without_tls_settings_is_a_config_error() {
    let text = "[[upstream]]\nname = \"grpc\"\nalgorithm = \"random\"\nprotocol = \"h2\"\nbackends = [\"127.0.0.1:9\"]\n";
    let e = lb::Config::parse(text, "lb.toml").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("protocol = \"h2\" needs [upstream.tls]"), "{e}");
    let text = text.replace("protocol = \"h2\"", "protocol = \"h2\"\ntls = { insecure_skip_verify = true }");
    assert!(lb::Config::parse(&text, "lb.toml").is_ok());
}

/// An HTTP/2-only clear-text server that answers every request `503`; returns its address and how many
/// requests it answered.
async fn h2c_answering_503() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counted = std::sync::Arc::clone(&counted);
            let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut r = http::Response::new(Full::new(Bytes::from_static(b"overloaded\n")));
                    *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_are_retried_around_a_backend_that_is_down_or_answers_503() {
    let good = backends(1).await;
    let (busy, busy_count) = h2c_answering_503().await;
    let (down, _held) = proxy_support::refusing_port();
    let mut cfg = config(Algorithm::RoundRobin, &good, &[]);
    cfg.upstreams[0].backends = vec![
        BackendSpec::new(busy.to_string()),
        BackendSpec::new(down.to_string()),
        cfg.upstreams[0].backends[0].clone(),
    ];
    cfg.upstreams[0].protocol = Protocol::H2c;
    // A budget that never runs dry here: this test is about where retries go.
    cfg.upstreams[0].retry.budget_min_per_sec = 1000;
    let lb = proxy(cfg).await;
    let http = client();
    for _ in 0..9 {
        let (status, body) = get(&http, &lb.url()).await;
        assert_eq!((status, body.as_str()), (200, "backend-1\n"));
    }
    // Three attempts reach all three backends, so each GET ends on the good one; every 503 and every
    // refused connection on the way was one retry.
    let state = lb.upstreams.all()[0].load();
    let answered_503 = busy_count.load(std::sync::atomic::Ordering::SeqCst) as u64;
    let refused = state.stats[1].failures(lb::FailureKind::Connect);
    assert!(answered_503 >= 1 && refused >= 1, "503s {answered_503}, refused {refused}");
    assert_eq!(state.stats[0].requests_with_code(503), Some(answered_503));
    assert_eq!(lb.metrics.retries("app"), answered_503 + refused);
    assert_eq!(good[0].requests(), 9);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_post_whose_connection_was_refused_goes_elsewhere_body_and_all() {
    let good = backends(1).await;
    let (down, _held) = proxy_support::refusing_port();
    let mut cfg = config(Algorithm::RoundRobin, &good, &[]);
    cfg.upstreams[0].backends.insert(0, BackendSpec::new(down.to_string()));
    cfg.upstreams[0].protocol = Protocol::H2c;
    let lb = proxy(cfg).await;
    // Round robin starts at the first backend, the closed port: the POST never left, so it goes to
    // the next backend with its body, though a POST is never retried once sent.
    let sent: String = (0..100_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let resp = client()
        .post(format!("{}/echo", lb.url()))
        .header("x-lb-explain", "1")
        .body(sent.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let header =
        |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(header("x-lb-attempts"), "2");
    assert!(header("x-lb-retry").starts_with(&format!("{down}: ")), "{}", header("x-lb-retry"));
    assert_eq!(header("x-lb-backend"), good[0].addr().to_string());
    let echoed = resp.text().await.unwrap_or_default();
    assert!(echoed == sent, "the body arrived whole ({} of {} bytes)", echoed.len(), sent.len());
    assert_eq!(lb.metrics.retries("app"), 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_answers_carry_the_explain_headers() {
    let all = backends(2).await;
    let mut cfg = config(Algorithm::RoundRobin, &all, &[]);
    cfg.upstreams[0].protocol = Protocol::H2c;
    let lb = proxy(cfg).await;
    let resp =
        client().get(lb.url()).header("x-lb-explain", "1").send().await.unwrap_or_else(|e| panic!("{e}"));
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("x-lb-backend"), Some(all[0].addr().to_string()));
    assert_eq!(header("x-lb-algorithm").as_deref(), Some("round-robin"));
    assert!(header("x-lb-reason").is_some_and(|r| !r.is_empty()));
    assert_eq!(header("x-lb-attempts").as_deref(), Some("1"));
    assert_eq!(header("x-lb-retry"), None, "no retry happened");
    // Without the request header, none of them.
    let plain = client().get(lb.url()).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(plain.headers().get("x-lb-backend").is_none());
    lb.shutdown().await;
}

/// Everything logged through `tracing` in this test process, as text.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_records_the_h2_paths_attempts_and_backend() {
    // The workers log from their own threads, so the subscriber is the process-wide one (nextest runs
    // each test in its own process).
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("lb::access=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap_or_else(|e| panic!("{e}"));
    let good = backends(1).await;
    let (down, _held) = proxy_support::refusing_port();
    let mut cfg = config(Algorithm::RoundRobin, &good, &[]);
    cfg.upstreams[0].backends.insert(0, BackendSpec::new(down.to_string()));
    cfg.upstreams[0].protocol = Protocol::H2c;
    if let Some(admin) = cfg.admin.as_mut() {
        admin.access_log = true;
    }
    let lb = proxy(cfg).await;
    let (status, _) = get(&client(), &lb.url()).await;
    assert_eq!(status, 200);
    lb.shutdown().await;
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let expected = format!("\"upstream\":\"app\",\"backend\":\"{}\",\"status\":200,", good[0].addr());
    assert!(log.contains(&expected), "{log}");
    assert!(log.contains("\"attempts\":2,"), "{log}");
}

/// An h2c backend whose every answer sends `hello` and then nothing more, holding the stream open.
async fn h2c_silent_after_hello() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service_fn(|_req: http::Request<hyper::body::Incoming>| async move {
                let hello = futures_util::stream::once(async {
                    Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"hello")))
                });
                let silence = futures_util::stream::pending();
                let body = http_body_util::StreamBody::new(futures_util::StreamExt::chain(hello, silence));
                Ok::<_, Infallible>(http::Response::new(body))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

/// `[upstream.timeouts] read` holds for HTTP/2 backends too: a body that stops half way ends the
/// client's response as an error after the timeout, instead of holding it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_backend_silent_mid_body_is_cut_after_the_read_timeout() {
    let addr = h2c_silent_after_hello().await;
    let lb = proxy_support::proxy_to(addr, |c| {
        c.upstreams[0].protocol = Protocol::H2c;
        c.upstreams[0].timeouts.read = std::time::Duration::from_millis(300);
    })
    .await;
    let response = client().get(lb.url()).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), response.bytes()).await;
    let body = body.unwrap_or_else(|_| panic!("the response is still open after 5 s"));
    assert!(body.is_err(), "a cut body is an error, never a short success: {body:?}");
    lb.shutdown().await;
}
