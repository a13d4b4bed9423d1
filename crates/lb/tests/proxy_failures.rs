//! What the proxy does when backends fail: retries on another backend, the retry budget, timeouts,
//! and the error answers a client gets.

mod proxy_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lb::config::OutlierConfig;
use lb_algorithms::Algorithm;
use proxy_support::{backends, client, config, get, get_with, proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_no_request() {
    let b = backends(3).await;
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    // Outlier detection takes the dead backend out after 5 failures, so retries stop being needed
    // long before the budget (10 tokens to start, +0.2 per request) could run dry.
    cfg.upstreams[0].outlier_detection = Some(OutlierConfig::default());
    let lb = proxy(cfg).await;
    let url: Arc<str> = lb.url().into();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, done) = (Arc::clone(&url), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            for _ in 0..200 {
                let (status, body) = get(&c, &url).await;
                if status != 200 {
                    failures.push(format!("{status} {body}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    // Kill backend-2 a quarter of the way in, while all four clients are mid-stream.
    while done.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    b[1].kill();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(failures, Vec::<String>::new(), "client-visible failures after a kill");
    assert_eq!(done.load(Ordering::Relaxed), 800);
    assert!(lb.metrics.retries("app") > 0, "the kill must have caused at least one retry");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_when_every_backend_fails() {
    let b = backends(3).await;
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    cfg.upstreams[0].retry.attempts = 3;
    cfg.upstreams[0].retry.budget_ratio = 0.2;
    cfg.upstreams[0].retry.budget_min_per_sec = 0;
    let lb = proxy(cfg).await;
    let c = client();
    // Every backend answers 503 to /status/503. 100 sequential requests deposit 0.2 tokens each; a
    // retry costs 1, so one retry fits every fifth request: 20 retries, never a second one in a row.
    // Without the budget, attempts = 3 would have made it 300.
    for _ in 0..100 {
        let (status, _) = get(&c, &format!("{}/status/503", lb.url())).await;
        assert_eq!(status, 503);
    }
    let seen: u64 = b.iter().map(|b| b.requests()).sum();
    assert_eq!(seen, 120, "backends saw the 100 requests plus 20 retries");
    assert_eq!(lb.metrics.retries("app"), 20);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gives_504_after_the_response_headers_timeout() {
    let b = backends(1).await;
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    cfg.upstreams[0].timeouts.response_headers = Duration::from_millis(200);
    let lb = proxy(cfg).await;
    let started = std::time::Instant::now();
    let (status, body) = get(&client(), &format!("{}/delay/2000", lb.url())).await;
    let waited = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body, format!("backend {}: response_headers timeout (200ms)\n", b[0].addr()));
    assert!(waited < Duration::from_millis(1500), "answered after {waited:?}, not at the timeout");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_request_timeout_covers_every_attempt() {
    let b = backends(1).await;
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    cfg.upstreams[0].timeouts.request = Duration::from_millis(150);
    let lb = proxy(cfg).await;
    let (status, body) = get(&client(), &format!("{}/delay/2000", lb.url())).await;
    assert_eq!(status, 504);
    assert!(body.ends_with("request timeout (150ms)\n"), "{body}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_give_502_and_no_backend_gives_503() {
    let b = backends(1).await;
    let dead = b[0].addr().to_string();
    b[0].kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    cfg.upstreams[0].retry.attempts = 1;
    let lb = proxy(cfg).await;
    let c = client();
    let (status, body) = get(&c, &lb.url()).await;
    assert_eq!(status, 502);
    assert_eq!(body, format!("backend {dead}: Connection refused (os error 111)\n"));

    // Drained by the operator: nothing is selectable.
    assert!(lb.upstreams.all()[0].set_health(&dead, lb_algorithms::Health::Draining));
    let (status, body) = get(&c, &lb.url()).await;
    assert_eq!(status, 503);
    assert_eq!(body, "no healthy backend for upstream app\n");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_only_when_it_never_reached_a_backend() {
    let b = backends(2).await;
    let dead = b[0].addr().to_string();
    b[0].kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lb = proxy(config(Algorithm::RoundRobin, &b, &[])).await;
    let c = client();
    // Round robin starts at the dead backend: connection refused, nothing was sent, so even a POST
    // goes to the other backend.
    let resp = c
        .post(format!("{}/echo", lb.url()))
        .header("x-lb-explain", "1")
        .body("hello")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let retry = resp.headers().get("x-lb-retry").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(retry.starts_with(&format!("{dead}: Connection refused")), "{retry}");
    assert_eq!(resp.text().await.unwrap_or_default(), "hello");

    // A POST that the backend answered 503 is not retried: it may have done something.
    let resp =
        c.post(format!("{}/status/503", lb.url())).body("x").send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 503);
    assert_eq!(b[1].requests(), 2, "the echo and one 503, no retry of the POST");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_is_passed_over_by_the_circuit_breaker() {
    let b = backends(2).await;
    b[0].set_latency("fixed:300ms".parse().unwrap_or(toy_backend::Latency::None));
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    cfg.upstreams[0].limits.max_in_flight_per_backend = 1;
    let lb = proxy(cfg).await;
    let url = lb.url();
    // The first request occupies backend-1 for 300 ms; while it is in flight, round robin's turns for
    // backend-1 are given to backend-2 instead of queueing behind it.
    let slow = tokio::spawn({
        let url = url.clone();
        async move { get(&client(), &url).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = client();
    for _ in 0..4 {
        let (status, body) = get_with(&c, &url, &[]).await;
        assert_eq!((status, body.as_str()), (200, "backend-2\n"));
    }
    assert_eq!(slow.await.unwrap_or_else(|e| panic!("{e}")), (200, "backend-1\n".to_string()));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_refused_even_with_several_workers() {
    let b = backends(1).await;
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    cfg.server.workers = 2;
    let first = proxy(cfg.clone()).await;
    // Same port, SO_REUSEPORT on every socket: without the probe, the kernel would let the second
    // proxy share the port and steal half of the first one's clients.
    cfg.server.listen = first.listen.clone();
    match lb::start(cfg).await {
        Err(lb::Error::Bind { addr, .. }) => assert_eq!(addr, first.listen[0]),
        Err(e) => panic!("expected a bind error, got {e}"),
        Ok(second) => {
            second.shutdown().await;
            panic!("a second proxy started on a port already in use");
        }
    }
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_no_other_backend_to_go_to_is_not_counted_as_one() {
    // One backend, refusing connections, attempts = 3: each GET fails once and would retry, but
    // there is nowhere else to go. The client gets the failure; no retry happened, so none is
    // counted and the explain headers list none.
    let (dead, _held) = proxy_support::refusing_port();
    let mut cfg = config(Algorithm::RoundRobin, &[], &[]);
    cfg.upstreams[0].backends = vec![lb_algorithms::BackendSpec::new(dead.to_string())];
    cfg.upstreams[0].retry.attempts = 3;
    let lb = proxy(cfg).await;
    let c = client();
    for _ in 0..5 {
        let resp = c.get(lb.url()).header("x-lb-explain", "1").send().await;
        let resp = resp.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 502);
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(header("x-lb-attempts").as_deref(), Some("1"));
        assert_eq!(header("x-lb-retry"), None);
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(body, format!("backend {dead}: Connection refused (os error 111)\n"));
    }
    assert_eq!(lb.metrics.retries("app"), 0);
    lb.shutdown().await;
}
