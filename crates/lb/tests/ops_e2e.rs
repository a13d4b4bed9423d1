//! End-to-end tests of the operations side of `lb`: active health checks, passive outlier detection,
//! `/metrics`, `/backends`, drain/undrain and adding/removing backends at run time.
//!
//! Everything runs in-process on 127.0.0.1 with port 0: toy backends, the proxy (through
//! `lb::start`, exactly as the binary starts it) and its admin API. One worker thread, so round-robin
//! sequences are exact. Health checks run on real timers (100 ms), so the tests that wait for them poll
//! with a deadline instead of sleeping a fixed time: fast when things work, bounded when they do not.
//!
//! Run with `cargo test -p lb --test ops_e2e`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb::BackendsView;
use lb::Running;
use lb::config::HealthCheckConfig;
use lb::config::OutlierConfig;
use lb::config::{AdminConfig, Config, UpstreamConfig};
use lb_algorithms::{Algorithm, BackendSpec, Health};
use toy_backend::{Backend, Knobs, start_many};

/// Longest any condition may take to come true (health flips take about 0.2 s here).
const DEADLINE: Duration = Duration::from_secs(10);

async fn backends(n: usize) -> Vec<Backend> {
    start_many(n, Knobs::default()).await.unwrap_or_else(|e| panic!("cannot start toy backends: {e}"))
}

/// One worker, port 0, admin API on port 0, one round-robin upstream "app" over `backends`.
fn config(backends: &[Backend]) -> Config {
    let specs = backends.iter().map(|b| BackendSpec::new(b.addr().to_string())).collect();
    let mut config = Config::default();
    config.server.listen = vec![loopback()];
    config.server.workers = 1;
    config.server.shutdown_grace = Duration::from_secs(2);
    config.admin = Some(AdminConfig { explain: true, ..AdminConfig::on(loopback()) });
    config.upstreams.push(UpstreamConfig::new("app", Algorithm::RoundRobin, specs));
    config
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(config: Config) -> (Running, String) {
    let running = lb::start(config).await.unwrap_or_else(|e| panic!("cannot start lb: {e}"));
    let admin = running.admin.map(|a| format!("http://{a}")).unwrap_or_else(|| panic!("admin API not bound"));
    (running, admin)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Send `n` sequential `GET path` requests through the proxy; returns the statuses.
async fn send(client: &reqwest::Client, proxy: &Running, path: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let status = match client.get(format!("{}{path}", proxy.url())).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let _ = r.bytes().await;
                s
            }
            Err(e) => panic!("request failed: {e}"),
        };
        statuses.push(status);
    }
    statuses
}

fn requests(backends: &[Backend]) -> Vec<u64> {
    backends.iter().map(|b| b.requests()).collect()
}

fn health_of(proxy: &Running, backend: &Backend) -> Option<Health> {
    let state = proxy.upstreams.all()[0].load();
    let addr = backend.addr().to_string();
    state.set.backends().iter().find(|b| b.addr() == addr).map(|b| b.health())
}

/// Poll `cond` every 10 ms until it holds; fail the test after [`DEADLINE`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn post(client: &reqwest::Client, url: &str, body: Option<&str>) -> (u16, String) {
    let mut req = client.post(url);
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body.to_string());
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn health_checks_take_out_an_unhealthy_backend_and_bring_it_back_after_rise_passes() {
    let bs = backends(3).await;
    let mut config = config(&bs);
    config.upstreams[0].health_check = Some(HealthCheckConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        fall: 2,
        rise: 2,
        jitter: 0.0,
        ..HealthCheckConfig::default()
    });
    let (proxy, _) = start(config).await;
    let c = client();

    bs[1].set_healthy(false);
    // fall = 2 at 100 ms: out after about 200 ms (two failed rounds), never after one round.
    let took =
        eventually("backend-2 unhealthy", || health_of(&proxy, &bs[1]) == Some(Health::Unhealthy)).await;
    assert!(took >= Duration::from_millis(90), "flipped after {took:?}: one check is not enough");

    let before = requests(&bs);
    let statuses = send(&c, &proxy, "/", 30).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let after = requests(&bs);
    assert_eq!(after[1], before[1], "no traffic reaches the unhealthy backend");
    assert_eq!(after[0] - before[0] + after[2] - before[2], 30);

    bs[1].set_healthy(true);
    eventually("backend-2 healthy again", || health_of(&proxy, &bs[1]) == Some(Health::Healthy)).await;
    let before = requests(&bs);
    send(&c, &proxy, "/", 30).await;
    assert_eq!(requests(&bs)[1] - before[1], 10, "round robin over three again: one in three");

    proxy.shutdown().await;
}

#[tokio::test]
async fn health_checks_leave_a_drained_backend_drained() {
    let bs = backends(2).await;
    let mut config = config(&bs);
    config.upstreams[0].health_check = Some(HealthCheckConfig {
        interval: Duration::from_millis(50),
        jitter: 0.0,
        ..HealthCheckConfig::default()
    });
    let (proxy, admin) = start(config).await;
    let c = client();
    let (status, _) = post(&c, &format!("{admin}/upstreams/app/backends/{}/drain", bs[0].addr()), None).await;
    assert_eq!(status, 200);
    // Four check rounds pass; the checks (all passing) must not undo the operator's drain.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(health_of(&proxy, &bs[0]), Some(Health::Draining));
    proxy.shutdown().await;
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_backend_and_returns_it_after_the_ejection_time() {
    let bs = backends(3).await;
    let mut config = config(&bs);
    config.upstreams[0].outlier_detection = Some(OutlierConfig {
        consecutive_failures: 3,
        base_ejection_time: Duration::from_millis(300),
        ..OutlierConfig::default()
    });
    let (proxy, _) = start(config).await;
    let c = client();

    bs[0].set_error_rate(1.0);
    // Round robin: backend-1 gets requests 1, 4, 7; its third 500 in a row (request 7) ejects it.
    let statuses = send(&c, &proxy, "/", 7).await;
    assert_eq!(statuses, [500, 200, 200, 500, 200, 200, 500]);
    assert_eq!(health_of(&proxy, &bs[0]), Some(Health::Ejected));
    let stats = &proxy.upstreams.all()[0].load().stats;
    assert_eq!(stats[0].ejections(), 1);

    let before = requests(&bs);
    let statuses = send(&c, &proxy, "/", 10).await;
    // Ejected for 300 ms: these 10 fast requests all go to the other two (unless this machine is so
    // slow that 10 loopback requests took 300 ms, which the check below would then point out).
    if health_of(&proxy, &bs[0]) == Some(Health::Ejected) {
        assert_eq!(requests(&bs)[0], before[0], "no traffic to the ejected backend");
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    }

    bs[0].set_error_rate(0.0);
    eventually("backend-1 returned", || health_of(&proxy, &bs[0]) == Some(Health::Healthy)).await;
    let before = requests(&bs);
    send(&c, &proxy, "/", 30).await;
    assert_eq!(requests(&bs)[0] - before[0], 10, "back in the rotation");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_resets_connections_is_ejected_and_its_failures_are_counted_by_kind() {
    let bs = backends(3).await;
    let mut config = config(&bs);
    config.upstreams[0].outlier_detection =
        Some(OutlierConfig { consecutive_failures: 2, ..OutlierConfig::default() });
    let (proxy, admin) = start(config).await;
    let c = client();
    bs[0].set_fail(true);
    // Backend-1's turns are requests 1 and 4: two broken connections in a row eject it. (Whether the
    // client saw a 502 or a retried 200 depends on the retry budget, not on what is tested here.)
    send(&c, &proxy, "/", 6).await;
    assert_eq!(health_of(&proxy, &bs[0]), Some(Health::Ejected));
    let statuses = send(&c, &proxy, "/", 10).await;
    assert!(statuses.iter().all(|&s| s == 200), "the ejected backend is no longer tried: {statuses:?}");

    let text = c.get(format!("{admin}/metrics")).send().await.unwrap_or_else(|e| panic!("{e}"));
    let m = parse_metrics(&text.text().await.unwrap_or_default());
    let labels = format!("upstream=\"app\",backend=\"{}\"", bs[0].addr());
    let failures: f64 = ["connect", "timeout", "broken"]
        .iter()
        .filter_map(|k| m.get(&format!("lb_backend_failures_total{{{labels},kind=\"{k}\"}}")))
        .sum();
    assert_eq!(failures, 2.0, "one failure per attempt, two attempts");
    assert_eq!(m.get(&format!("lb_backend_ejections_total{{{labels}}}")), Some(&1.0));
    assert_eq!(m.get(&format!("lb_backend_state{{{labels},state=\"ejected\"}}")), Some(&1.0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn outlier_detection_never_ejects_more_than_max_ejection_percent() {
    let bs = backends(4).await;
    let mut config = config(&bs);
    config.upstreams[0].panic_threshold = 0.0;
    config.upstreams[0].outlier_detection = Some(OutlierConfig {
        consecutive_failures: 2,
        max_ejection_percent: 50,
        ..OutlierConfig::default() // 10 s ejections: nobody returns during the test
    });
    let (proxy, _) = start(config).await;
    for b in &bs[..3] {
        b.set_error_rate(1.0);
    }
    send(&client(), &proxy, "/", 40).await;
    let state = proxy.upstreams.all()[0].load();
    let ejected = state.set.backends().iter().filter(|b| b.health() == Health::Ejected).count();
    assert_eq!(ejected, 2, "50% of 4");
    assert_eq!(health_of(&proxy, &bs[3]), Some(Health::Healthy), "the good one is never ejected");
    proxy.shutdown().await;
}

/// Parse the exposition text: every line is a comment or `name{labels} value`. Returns
/// `"name{labels}" -> value`.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.insert(series.to_string(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_count_exactly_the_requests_sent() {
    let bs = backends(3).await;
    let (proxy, admin) = start(config(&bs)).await;
    let c = client();
    // 30 requests round robin: 10 per backend. Then 3 more answering 404 and 3 answering 418 (not a
    // common code, so counted as "4xx"): one of each per backend.
    send(&c, &proxy, "/", 30).await;
    assert_eq!(send(&c, &proxy, "/status/404", 3).await, [404; 3]);
    assert_eq!(send(&c, &proxy, "/status/418", 3).await, [418; 3]);

    let resp = c.get(format!("{admin}/metrics")).send().await.unwrap_or_else(|e| panic!("{e}"));
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(content_type.as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = resp.text().await.unwrap_or_default();
    let m = parse_metrics(&text);
    for b in &bs {
        let labels = format!("upstream=\"app\",backend=\"{}\"", b.addr());
        assert_eq!(m.get(&format!("lb_requests_total{{{labels},code=\"200\"}}")), Some(&10.0), "{text}");
        assert_eq!(m.get(&format!("lb_requests_total{{{labels},code=\"404\"}}")), Some(&1.0));
        assert_eq!(m.get(&format!("lb_requests_total{{{labels},code=\"4xx\"}}")), Some(&1.0));
        assert_eq!(m.get(&format!("lb_request_duration_seconds_count{{{labels}}}")), Some(&12.0));
        assert_eq!(
            m.get(&format!("lb_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}}")),
            Some(&12.0)
        );
        assert_eq!(m.get(&format!("lb_backend_in_flight{{{labels}}}")), Some(&0.0));
        assert_eq!(m.get(&format!("lb_backend_healthy{{{labels}}}")), Some(&1.0));
        assert_eq!(m.get(&format!("lb_backend_ejections_total{{{labels}}}")), Some(&0.0));
    }
    assert_eq!(m.get("lb_retries_total{upstream=\"app\"}"), Some(&0.0));
    assert_eq!(m.get("lb_no_backend_total{upstream=\"app\"}"), Some(&0.0));
    // Buckets are cumulative: never decreasing with `le`.
    let labels = format!("upstream=\"app\",backend=\"{}\"", bs[0].addr());
    let buckets: Vec<f64> = lb::BUCKETS_SECONDS
        .iter()
        .filter_map(|le| {
            m.get(&format!("lb_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}")).copied()
        })
        .collect();
    assert_eq!(buckets.len(), lb::BUCKETS_SECONDS.len());
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn backends_json_shows_live_state() {
    let bs = backends(2).await;
    let (proxy, admin) = start(config(&bs)).await;
    let c = client();
    send(&c, &proxy, "/", 4).await;
    let v: BackendsView = c
        .get(format!("{admin}/backends"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let app = &v.upstreams[0];
    assert_eq!((app.name.as_str(), app.algorithm.as_str(), app.panic), ("app", "round-robin", false));
    for (view, b) in app.backends.iter().zip(&bs) {
        assert_eq!(view.addr, b.addr().to_string());
        assert_eq!((view.requests, view.in_flight, view.health.as_str()), (2, 0, "healthy"));
        assert!(view.ewma_ms.is_some(), "measured after a response");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn drain_stops_new_traffic_while_the_others_serve_and_undrain_brings_it_back() {
    let bs = backends(3).await;
    let (proxy, admin) = start(config(&bs)).await;
    let c = client();
    let url = |action: &str| format!("{admin}/upstreams/app/backends/{}/{action}", bs[0].addr());

    assert_eq!(post(&c, &url("drain"), None).await.0, 200);
    let before = requests(&bs);
    let statuses = send(&c, &proxy, "/", 30).await;
    assert!(statuses.iter().all(|&s| s == 200), "the others keep serving: {statuses:?}");
    let after = requests(&bs);
    assert_eq!(after[0], before[0], "nothing new to the drained backend");
    assert!(after[1] > before[1] && after[2] > before[2]);

    assert_eq!(post(&c, &url("undrain"), None).await.0, 200);
    let before = requests(&bs);
    send(&c, &proxy, "/", 30).await;
    assert_eq!(requests(&bs)[0] - before[0], 10, "one in three again");
    proxy.shutdown().await;
}

#[tokio::test]
async fn adding_and_removing_backends_at_run_time_changes_the_distribution() {
    let bs = backends(3).await;
    let (proxy, admin) = start(config(&bs[..2])).await;
    let c = client();

    let before = requests(&bs);
    send(&c, &proxy, "/", 30).await;
    let d: Vec<u64> = requests(&bs).iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(d, [15, 15, 0], "two backends to start with");

    let body = format!(r#"{{"addr":"{}"}}"#, bs[2].addr());
    let (status, text) = post(&c, &format!("{admin}/upstreams/app/backends"), Some(&body)).await;
    assert_eq!(status, 201, "{text}");
    let before = requests(&bs);
    send(&c, &proxy, "/", 30).await;
    let d: Vec<u64> = requests(&bs).iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(d, [10, 10, 10], "the new balancer deals one in three to each");

    let resp = c
        .delete(format!("{admin}/upstreams/app/backends/{}", bs[0].addr()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let before = requests(&bs);
    send(&c, &proxy, "/", 30).await;
    let d: Vec<u64> = requests(&bs).iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(d, [0, 15, 15], "the removed backend gets nothing");
    proxy.shutdown().await;
}
