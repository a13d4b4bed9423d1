//! Each knob and route, seen from a real HTTP client over loopback.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use toy_backend::{Backend, BackendConfig, Knobs, Latency, start_many};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client builds")
}

async fn start(config: BackendConfig) -> Backend {
    Backend::start((Ipv4Addr::LOCALHOST, 0).into(), config).await.expect("backend starts")
}

async fn one() -> Backend {
    start(BackendConfig::new("backend-1")).await
}

async fn get(client: &reqwest::Client, url: String) -> (u16, String) {
    let resp = client.get(url).send().await.expect("request succeeds");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body arrives"))
}

/// Bytes that do not repeat with any short period, so a reordered or duplicated chunk is caught.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
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
async fn root_answers_the_name_and_counts() {
    let backends = start_many(3, Knobs::default()).await.expect("backends start");
    let client = client();
    for (i, backend) in backends.iter().enumerate() {
        let resp = client.get(backend.url()).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(resp.text().await.expect("body"), format!("backend-{}\n", i + 1));
        assert_eq!(backend.name(), format!("backend-{}", i + 1));
        assert_eq!(backend.requests(), 1);
    }
    // Health and admin calls are not traffic, so they do not count.
    let b = &backends[0];
    get(&client, format!("{}/health", b.url())).await;
    get(&client, format!("{}/admin/knobs", b.url())).await;
    assert_eq!(b.requests(), 1);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test]
async fn fixed_latency_delays_each_request() {
    let backend = one().await;
    let client = client();
    backend.set_latency(Latency::Fixed(Duration::from_millis(50)));
    for _ in 0..3 {
        let t = Instant::now();
        let (status, _) = get(&client, backend.url()).await;
        let took = t.elapsed();
        assert_eq!(status, 200);
        assert!(took >= Duration::from_millis(50), "took {took:?}");
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }
    // Control routes are exempt: a health checker is not slowed by the latency knob.
    let t = Instant::now();
    get(&client, format!("{}/health", backend.url())).await;
    assert!(t.elapsed() < Duration::from_millis(50));
}

#[tokio::test]
async fn error_rate_fails_that_fraction_of_requests() {
    let config = BackendConfig {
        knobs: Knobs { error_rate: 0.3, ..Knobs::default() },
        seed: 42,
        ..BackendConfig::new("backend-1")
    };
    let backend = start(config).await;
    let client = client();
    let mut errors = 0;
    for _ in 0..1000 {
        let (status, body) = get(&client, backend.url()).await;
        match status {
            500 => {
                assert_eq!(body, "injected error\n");
                errors += 1;
            }
            200 => assert_eq!(body, "backend-1\n"),
            other => panic!("unexpected status {other}"),
        }
    }
    // Binomial(1000, 0.3) has a standard deviation of 14.5 requests; 60 is over four of them.
    assert!((240..=360).contains(&errors), "{errors} errors in 1000");
    backend.set_error_rate(0.0);
    assert_eq!(get(&client, backend.url()).await.0, 200);
}

/// Sends two `/delay/200` at once and returns how long both took.
async fn two_concurrent_delays(backend: &Backend) -> Duration {
    let client = client();
    let url = format!("{}/delay/200", backend.url());
    let t = Instant::now();
    let (a, b) = tokio::join!(client.get(&url).send(), client.get(&url).send());
    assert_eq!(a.expect("first request").status(), 200);
    assert_eq!(b.expect("second request").status(), 200);
    t.elapsed()
}

#[tokio::test]
async fn capacity_makes_extra_requests_wait() {
    let backend = one().await;
    backend.set_capacity(Some(1));
    // One slot: the second request queues behind the first, 200 + 200 ms.
    let took = two_concurrent_delays(&backend).await;
    assert!(took >= Duration::from_millis(400), "capacity 1 took {took:?}");
    backend.set_capacity(Some(2));
    let took = two_concurrent_delays(&backend).await;
    assert!(took < Duration::from_millis(350), "capacity 2 took {took:?}");
    assert_eq!(backend.knobs().capacity, Some(2));
}

#[tokio::test]
async fn in_flight_counts_queued_requests_too() {
    let backend = one().await;
    backend.set_capacity(Some(1));
    let client = client();
    let url = format!("{}/delay/300", backend.url());
    let requests = tokio::spawn({
        let client = client.clone();
        async move { tokio::join!(client.get(&url).send(), client.get(&url).send()) }
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while backend.in_flight() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(backend.in_flight(), 2, "one served, one queued");
    let (a, b) = requests.await.expect("task");
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(backend.in_flight(), 0);
}

#[tokio::test]
async fn health_flips_through_the_library_and_the_admin_endpoint() {
    let backend = one().await;
    let client = client();
    let health = format!("{}/health", backend.url());
    assert_eq!(get(&client, health.clone()).await, (200, "ok\n".into()));
    backend.set_healthy(false);
    assert_eq!(get(&client, health.clone()).await, (503, "unhealthy\n".into()));
    backend.set_healthy(true);
    assert_eq!(get(&client, health.clone()).await.0, 200);

    let resp = client
        .post(format!("{}/admin/health", backend.url()))
        .body(r#"{"healthy":false}"#)
        .send()
        .await
        .expect("admin call");
    assert_eq!(resp.status(), 200);
    let knobs: serde_json::Value = resp.json().await.expect("knobs JSON");
    assert_eq!(knobs["healthy"], false);
    assert_eq!(get(&client, health.clone()).await.0, 503);
    assert!(!backend.knobs().healthy);
    client
        .post(format!("{}/admin/health", backend.url()))
        .body(r#"{"healthy":true}"#)
        .send()
        .await
        .expect("admin call");
    assert_eq!(get(&client, health).await.0, 200);
}

#[tokio::test]
async fn fail_mode_drops_connections_and_recovers() {
    let backend = one().await;
    let pooled = client();
    // Open a keep-alive connection first, so both kinds of failure are seen.
    assert_eq!(get(&pooled, backend.url()).await.0, 200);
    backend.set_fail(true);
    let served_before = backend.requests();

    // A request on the already-open connection: hyper closes it without a response.
    let err = pooled.get(backend.url()).send().await.expect_err("no response in fail mode");
    assert!(!err.is_status(), "{err}");
    // A new connection: reset.
    let err = client().get(backend.url()).send().await.expect_err("reset");
    assert!(!err.is_status(), "{err}");
    assert_eq!(backend.requests(), served_before, "dropped requests are not served");

    // The control routes still answer, which is how a failing backend is switched back.
    assert_eq!(get(&client(), format!("{}/health", backend.url())).await.0, 200);
    let resp = client()
        .post(format!("{}/admin/fail", backend.url()))
        .body(r#"{"fail":false}"#)
        .send()
        .await
        .expect("admin reaches a failing backend");
    assert_eq!(resp.status(), 200);
    assert!(!backend.knobs().fail);
    assert_eq!(get(&pooled, backend.url()).await, (200, "backend-1\n".into()));

    // And through the library.
    backend.set_fail(true);
    assert!(client().get(backend.url()).send().await.is_err());
    backend.set_fail(false);
    assert_eq!(get(&client(), backend.url()).await.0, 200);
}

#[tokio::test]
async fn bytes_streams_exactly_n_bytes() {
    let backend = one().await;
    let client = client();
    for n in [0usize, 1, 65_536, 65_537, 5_000_000] {
        let resp = client.get(format!("{}/bytes/{n}", backend.url())).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.content_length(), Some(n as u64));
        let body = resp.bytes().await.expect("body");
        assert_eq!(body.len(), n);
    }
    let (status, _) = get(&client, format!("{}/bytes/2000000000", backend.url())).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn echo_returns_the_body_byte_for_byte() {
    let backend = one().await;
    let client = client();
    let body = noise(1 << 20);
    for method in [reqwest::Method::POST, reqwest::Method::PUT] {
        let resp = client
            .request(method, format!("{}/echo", backend.url()))
            .header("content-type", "application/x-test")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/x-test");
        let echoed = resp.bytes().await.expect("body");
        assert!(echoed == body[..], "echo differs ({} bytes back)", echoed.len());
    }
}

#[tokio::test]
async fn echo_streams_a_chunked_body_too() {
    let backend = one().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        noise(300_000).chunks(7_000).map(|c| Ok(c.to_vec())).collect();
    let expected: Vec<u8> = noise(300_000);
    let resp = client()
        .post(format!("{}/echo", backend.url()))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.bytes().await.expect("body")[..], expected[..]);
}

#[tokio::test]
async fn info_shows_the_request_as_received() {
    let backend = one().await;
    let client = client();
    for _ in 0..3 {
        get(&client, backend.url()).await;
    }
    let info: serde_json::Value = client
        .post(format!("{}/info?lesson=1", backend.url()))
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Lesson", "one")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(info["name"], "backend-1");
    assert_eq!(info["port"], backend.addr().port());
    assert_eq!(info["requests"], 4, "three GETs and this one");
    assert_eq!(info["method"], "POST");
    assert_eq!(info["path"], "/info");
    assert_eq!(info["query"], "lesson=1");
    assert_eq!(info["headers"]["x-lesson"], "one");
    assert_eq!(info["headers"]["x-forwarded-for"], "203.0.113.7");
    let remote = info["remote_addr"].as_str().expect("remote_addr");
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
}

#[tokio::test]
async fn status_and_delay_helpers() {
    let backend = one().await;
    let client = client();
    assert_eq!(
        get(&client, format!("{}/status/418", backend.url())).await,
        (418, "418 I'm a teapot\n".into())
    );
    assert_eq!(get(&client, format!("{}/status/503", backend.url())).await.0, 503);
    assert_eq!(get(&client, format!("{}/status/204", backend.url())).await, (204, String::new()));
    assert_eq!(get(&client, format!("{}/status/99", backend.url())).await.0, 400);
    assert_eq!(get(&client, format!("{}/status/abc", backend.url())).await.0, 400);

    let t = Instant::now();
    let (status, body) = get(&client, format!("{}/delay/100", backend.url())).await;
    assert_eq!((status, body.as_str()), (200, "backend-1 waited 100ms\n"));
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(get(&client, format!("{}/delay/x", backend.url())).await.0, 400);
    assert_eq!(get(&client, format!("{}/nope", backend.url())).await.0, 404);
}

#[tokio::test]
async fn admin_endpoints_change_knobs_and_reject_bad_input() {
    let backend = one().await;
    let client = client();
    let post = |path: &str, body: &'static str| {
        client.post(format!("{}/admin/{path}", backend.url())).body(body).send()
    };

    let bad = [
        ("latency", "not json"),
        ("latency", r#"{"latency":"fixed:soon"}"#),
        ("latency", r#"{"latency":"fixed:20ms","extra":1}"#),
        ("error-rate", r#"{"rate":1.5}"#),
        ("error-rate", r#"{"rate":"high"}"#),
        ("capacity", r#"{"max":0}"#),
        ("capacity", r#"{}"#),
        ("capacity", r#"{"max":-1}"#),
        ("health", r#"{"healthy":"yes"}"#),
        ("fail", r#"{}"#),
    ];
    for (path, body) in bad {
        let resp = post(path, body).await.expect("request");
        assert_eq!(resp.status(), 400, "{path} {body}");
        let reason = resp.text().await.expect("body");
        assert!(!reason.trim().is_empty() && reason.len() < 300, "{reason}");
    }
    assert_eq!(backend.knobs(), Knobs::default(), "bad input changes nothing");

    let knobs: serde_json::Value = post("latency", r#"{"latency":"uniform:1ms..2ms"}"#)
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(knobs["latency"], "uniform:1ms..2ms");
    post("error-rate", r#"{"rate":0.2}"#).await.expect("request");
    post("capacity", r#"{"max":4}"#).await.expect("request");
    let knobs = backend.knobs();
    assert_eq!(knobs.error_rate, 0.2);
    assert_eq!(knobs.capacity, Some(4));
    post("capacity", r#"{"max":null}"#).await.expect("request");
    assert_eq!(backend.knobs().capacity, None);

    let knobs: serde_json::Value = client
        .get(format!("{}/admin/knobs", backend.url()))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        knobs,
        serde_json::json!({"latency":"uniform:1ms..2ms","error_rate":0.2,"capacity":null,"healthy":true,"fail":false})
    );
    post("reset", "").await.expect("request");
    assert_eq!(backend.knobs(), Knobs::default());
}

#[tokio::test]
async fn websocket_echoes_messages() {
    let backend = one().await;
    let mut ws = TcpStream::connect(backend.addr()).await.expect("connect");
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        backend.addr()
    );
    ws.write_all(handshake.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        ws.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455's own example key and accept value.
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

    // A masked text frame "hello" (clients must mask; the server answers unmasked).
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&mask);
    frame.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.write_all(&frame).await.expect("write frame");
    let mut reply = [0u8; 7];
    ws.read_exact(&mut reply).await.expect("read frame");
    assert_eq!(&reply, b"\x81\x05hello");
}

#[tokio::test]
async fn kill_drops_open_connections_and_refuses_new_ones() {
    let backend = one().await;
    let url = format!("{}/delay/5000", backend.url());
    let slow = tokio::spawn(async move { client().get(url).send().await });
    let deadline = Instant::now() + Duration::from_secs(2);
    while backend.in_flight() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    backend.kill();
    let result = slow.await.expect("task");
    assert!(result.is_err(), "the open request is cut off");
    assert!(t.elapsed() < Duration::from_secs(2), "at once, not after the delay");
    assert!(TcpStream::connect(backend.addr()).await.is_err(), "refused");
}

#[tokio::test]
async fn graceful_shutdown_finishes_open_requests() {
    let backend = one().await;
    let addr = backend.addr();
    let url = format!("{}/delay/300", backend.url());
    let slow = tokio::spawn(async move { client().get(url).send().await });
    let deadline = Instant::now() + Duration::from_secs(2);
    while backend.in_flight() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    backend.shutdown().await;
    let resp = slow.await.expect("task").expect("the open request completes");
    assert_eq!(resp.status(), 200);
    assert!(TcpStream::connect(addr).await.is_err(), "refused after shutdown");
}
