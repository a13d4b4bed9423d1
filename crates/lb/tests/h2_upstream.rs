//! HTTP/2 to backends: `protocol = "h2c"` to toy backends (which speak h2c with prior knowledge), and
//! `protocol = "h2"` over TLS to a small HTTP/2-only TLS server made here, with the CA checked, with
//! verification off, and with the wrong CA.
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
use lb::h2_upstream::{Protocol, UpstreamTls};
use lb::tls::CertConfig;
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
    let acceptor = lb::tls::acceptor(&[CertConfig { cert: cert.clone(), key, names: vec![] }])
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
