//! The round-robin proxy in front of three in-process toy backends.

use std::collections::HashMap;
use std::time::Duration;

use http::Uri;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use toy_backend::{Backend, Knobs, start_many};

/// Three backends and the proxy in front of them. Dropping it stops everything.
struct Lab {
    backends: Vec<Backend>,
    url: String,
    _stop: oneshot::Sender<()>,
}

async fn lab() -> Lab {
    let backends = start_many(3, Knobs::default()).await.expect("backends start");
    let uris: Vec<Uri> = backends.iter().map(|b| b.url().parse().expect("valid URL")).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        round_robin::run(listener, uris, shutdown).await.expect("valid backends");
    });
    Lab { backends, url, _stop: stop }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client builds")
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = client.get(url).send().await.expect("request succeeds");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body arrives"))
}

/// Bytes that do not repeat with any short period, so a reordered or duplicated chunk is caught.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[tokio::test]
async fn requests_go_round_in_order_and_split_evenly() {
    let lab = lab().await;
    let client = client();
    let mut bodies = Vec::new();
    for _ in 0..300 {
        let (status, body) = get(&client, &lab.url).await;
        assert_eq!(status, 200);
        bodies.push(body);
    }
    // The counter starts at 0, so request k (from 0) goes to backend k % 3 + 1.
    assert_eq!(
        bodies[..6],
        ["backend-1\n", "backend-2\n", "backend-3\n", "backend-1\n", "backend-2\n", "backend-3\n"]
    );
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for body in &bodies {
        *seen.entry(body.as_str()).or_default() += 1;
    }
    for (i, backend) in lab.backends.iter().enumerate() {
        assert_eq!(backend.requests(), 100, "{}", backend.name());
        assert_eq!(seen[format!("backend-{}\n", i + 1).as_str()], 100);
    }
}

#[tokio::test]
async fn bodies_stream_through_both_ways() {
    let lab = lab().await;
    let client = client();
    let body = noise(1 << 20);
    let resp = client.post(format!("{}/echo", lab.url)).body(body.clone()).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let echoed = resp.bytes().await.expect("body");
    assert!(echoed == body[..], "echo differs ({} bytes back)", echoed.len());

    let resp = client.get(format!("{}/bytes/5000000", lab.url)).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").len(), 5_000_000);
}

#[tokio::test]
async fn hop_by_hop_headers_stay_behind_and_forwarded_for_is_added() {
    let lab = lab().await;
    let info: serde_json::Value = client()
        .get(format!("{}/info?x=1", lab.url))
        .header("Connection", "keep-alive, x-secret")
        .header("X-Secret", "1")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Authorization", "Basic c2VjcmV0")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Lesson", "one")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let headers = &info["headers"];
    for gone in ["connection", "x-secret", "keep-alive", "proxy-authorization"] {
        assert!(headers.get(gone).is_none(), "{gone} reached the backend: {headers}");
    }
    // End-to-end headers pass; the client's IP is appended to the chain.
    assert_eq!(headers["x-lesson"], "one");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(info["path"], "/info");
    assert_eq!(info["query"], "x=1");
}

#[tokio::test]
async fn a_dead_backend_gives_502_and_the_others_keep_serving() {
    let lab = lab().await;
    let client = client();
    // Warm the pool so the proxy holds a connection to backend-2 when it dies.
    for _ in 0..3 {
        assert_eq!(get(&client, &lab.url).await.0, 200);
    }
    lab.backends[1].kill();
    let dead = lab.backends[1].url();
    for _ in 0..3 {
        assert_eq!(get(&client, &lab.url).await, (200, "backend-1\n".into()));
        let (status, body) = get(&client, &lab.url).await;
        assert_eq!(status, 502);
        assert_eq!(body, format!("502 Bad Gateway: backend {dead} is unavailable\n"));
        assert_eq!(get(&client, &lab.url).await, (200, "backend-3\n".into()));
    }
}

#[tokio::test]
async fn a_closed_port_gives_502() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let backend: Uri = format!("http://{addr}").parse().expect("valid URL");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(round_robin::run(listener, vec![backend], async {
        let _ = stopped.await;
    }));
    let (status, body) = get(&client(), &url).await;
    assert_eq!(status, 502);
    assert!(body.contains(&addr.to_string()), "{body}");
    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
}

#[tokio::test]
async fn bad_backend_lists_are_refused_at_start() {
    for bad in [vec![], vec!["https://127.0.0.1:1"], vec!["http://127.0.0.1:1/api"]] {
        let uris = bad.iter().map(|u| u.parse().expect("a URI")).collect();
        assert!(round_robin::RoundRobin::new(uris).is_err(), "{bad:?}");
    }
}

#[test]
fn strip_hop_by_hop_also_removes_headers_named_in_connection() {
    // The same function cleans responses on their way back, so test it on its own too.
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("connection", "close, X-Backend-Internal"),
        ("x-backend-internal", "1"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("content-type", "text/plain"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    round_robin::strip_hop_by_hop(&mut headers);
    let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    left.sort_unstable();
    assert_eq!(left, ["cache-control", "content-type"]);
}

/// The backend ports the proxy's connections came from, for `n` requests sent one after another to a
/// proxy with `max_idle` idle connections per backend in front of one backend.
async fn upstream_ports(max_idle: usize, n: usize) -> std::collections::HashSet<String> {
    let backends = start_many(1, Knobs::default()).await.expect("backend starts");
    let uri: Uri = backends[0].url().parse().expect("valid URL");
    let lb = round_robin::RoundRobin::with_idle_pool(vec![uri], max_idle).expect("valid backend");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/info", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(round_robin::serve(listener, lb, async {
        let _ = stopped.await;
    }));
    let client = client();
    let mut ports = std::collections::HashSet::new();
    for _ in 0..n {
        let (_, body) = get(&client, &url).await;
        let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        ports.insert(info["remote_addr"].as_str().expect("remote_addr").to_string());
    }
    let _ = stop.send(());
    ports
}

#[tokio::test]
async fn the_idle_pool_reuses_one_upstream_connection_and_no_pool_dials_every_time() {
    // Requests one at a time: with a pool, each finds the previous one's connection idle and takes it,
    // so the backend sees a single client port. With no idle slot, each connection is closed after its
    // response, so every request dials anew from a fresh port.
    assert_eq!(upstream_ports(1024, 5).await.len(), 1);
    assert_eq!(upstream_ports(0, 5).await.len(), 5);
}
