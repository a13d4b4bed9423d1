//! `GET /live` and `GET /ready` on the admin port, as a Kubernetes kubelet calls them: plain GETs to
//! the pod's IP, with no token. Each test drives a real proxy on 127.0.0.1 (port 0) and a backend it
//! holds by hand, so "before the first health round" and "while draining" last exactly as long as the
//! test wants, with no timing.
//!
//! - the probes need no token and no own `Host`, and say one word; the rest of the API still refuses;
//! - `/ready` is 503 `starting` until the first round of health checks has an answer, then 200;
//! - from shutdown until the last request in flight has finished, `/ready` is 503 `draining` while
//!   `/live` stays 200; then the admin API closes.
//!
//! Run with `cargo test -p lb --test probes`.

use std::net::SocketAddr;
use std::time::Duration;

use lb::config::{AdminConfig, AdminToken, Config, HealthCheckConfig, UpstreamConfig};
use lb_algorithms::{Algorithm, BackendSpec};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Longest any step may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(10);
/// What a kubelet sends as `Host`: the pod's IP and the probe's port, never a name lb knows.
const KUBELET_HOST: &str = "Host: 10.244.1.7:9900";

fn config(backend: SocketAddr, token: Option<&str>) -> Config {
    let mut config = Config::default();
    config.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.server.workers = 1;
    config.server.shutdown_grace = DEADLINE;
    let token = token.map(|t| AdminToken::new(t).unwrap_or_else(|e| panic!("{e}")));
    config.admin = Some(AdminConfig { token, ..AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 0))) });
    let backends = vec![BackendSpec::new(backend.to_string())];
    config.upstreams.push(UpstreamConfig::new("app", Algorithm::RoundRobin, backends));
    config
}

/// Status, lowercase head and body of `GET path` sent as raw HTTP/1.1 with `fields`.
async fn send(addr: SocketAddr, method: &str, path: &str, fields: &[&str]) -> (u16, String, String) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for f in fields {
        request += &format!("{f}\r\n");
    }
    request += "\r\n";
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer"))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{answer:?}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `/ready`'s status and body, as the kubelet would see them.
async fn ready(admin: SocketAddr) -> (u16, String) {
    let (status, _, body) = send(admin, "GET", "/ready", &[KUBELET_HOST]).await;
    (status, body)
}

/// Poll `/ready` until it answers `want` (every 10 ms, at most [`DEADLINE`]).
async fn ready_becomes(admin: SocketAddr, want: (u16, &str)) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = ready(admin).await;
        if (got.0, got.1.as_str()) == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "/ready still {got:?}, wanted {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Accept one connection on `backend` and read one request head from it, unanswered.
async fn accept_request(backend: &TcpListener) -> (TcpStream, String) {
    let exchange = async {
        let (mut stream, _) = backend.accept().await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        Ok::<_, std::io::Error>((stream, String::from_utf8_lossy(&head).into_owned()))
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no request reached the backend"))
        .unwrap_or_else(|e| panic!("backend: {e}"))
}

async fn answer_ok(stream: &mut TcpStream) {
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    stream.write_all(response).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_kubelet_needs_no_token_and_learns_one_word() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = backend.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let running = lb::start(config(addr, Some("s3cret-token"))).await.unwrap_or_else(|e| panic!("{e}"));
    let admin = running.admin.unwrap_or_else(|| panic!("no admin"));

    let (status, head, body) = send(admin, "GET", "/live", &[KUBELET_HOST]).await;
    assert_eq!((status, body.as_str()), (200, "live\n"));
    assert!(head.contains("cache-control: no-store"), "{head}");
    // No health checks configured: ready at once.
    assert_eq!(ready(admin).await, (200, "ready\n".to_string()));
    // Not even a `Host` is needed: the Host rule does not apply to the probes.
    assert_eq!(send(admin, "GET", "/live", &[]).await.0, 200);
    // HEAD is answered like GET, without a body; anything else is not a probe.
    let (status, _, body) = send(admin, "HEAD", "/ready", &[KUBELET_HOST]).await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(send(admin, "POST", "/ready", &[KUBELET_HOST]).await.0, 405);

    // The rest of the API is as closed as before, from the same caller.
    assert_eq!(send(admin, "GET", "/backends", &[KUBELET_HOST]).await.0, 401);
    assert_eq!(send(admin, "GET", "/metrics", &[KUBELET_HOST]).await.0, 401);
    assert_eq!(send(admin, "GET", "/nope", &[KUBELET_HOST]).await.0, 401);
    running.shutdown().await;
}

#[tokio::test]
async fn ready_waits_for_the_first_round_of_health_checks() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = backend.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let mut config = config(addr, None);
    // jitter 0: the first round starts at once; timeout 30 s: it waits for the answer this test holds.
    config.upstreams[0].health_check = Some(HealthCheckConfig {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
        jitter: 0.0,
        ..HealthCheckConfig::default()
    });
    let running = lb::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let admin = running.admin.unwrap_or_else(|| panic!("no admin"));

    let (mut check, head) = accept_request(&backend).await;
    assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
    // The check is in flight, unanswered: lb does not yet know whether its backend is up.
    assert_eq!(ready(admin).await, (503, "starting\n".to_string()));
    assert_eq!(send(admin, "GET", "/live", &[KUBELET_HOST]).await.0, 200, "alive meanwhile");
    answer_ok(&mut check).await;
    ready_becomes(admin, (200, "ready\n")).await;
    running.shutdown().await;
}

#[tokio::test]
async fn ready_is_503_while_draining_and_live_stays_200_until_the_last_request_ends() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = backend.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let running = lb::start(config(addr, None)).await.unwrap_or_else(|e| panic!("{e}"));
    let admin = running.admin.unwrap_or_else(|| panic!("no admin"));
    let proxy = running.listen[0];
    assert_eq!(ready(admin).await, (200, "ready\n".to_string()));

    // One request in flight, held at the backend.
    let client = tokio::spawn(send(proxy, "GET", "/slow", &["Host: app.example"]));
    let (mut held, head) = accept_request(&backend).await;
    assert!(head.starts_with("GET /slow HTTP/1.1\r\n"), "{head}");

    let stopping = tokio::spawn(running.shutdown());
    ready_becomes(admin, (503, "draining\n")).await;
    assert_eq!(send(admin, "GET", "/live", &[KUBELET_HOST]).await.0, 200);
    assert!(!stopping.is_finished(), "shutdown waits for the request in flight");

    answer_ok(&mut held).await;
    let (status, _, body) = client.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((status, body.as_str()), (200, "ok"), "the request in flight finished");
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .unwrap_or_else(|_| panic!("shutdown did not finish"))
        .unwrap_or_else(|e| panic!("{e}"));
    // Then the admin API is gone too.
    assert!(TcpStream::connect(admin).await.is_err(), "admin API still accepting after shutdown");
}
