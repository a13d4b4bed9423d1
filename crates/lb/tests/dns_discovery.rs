//! `[upstream.dns]` against a real DNS server: dnsmasq on a loopback port, answering from a hosts
//! directory it re-reads when a file changes (`--hostsdir`), so the records change while lb runs.
//! Backends are toy backends on 127.0.0.11, 127.0.0.12, ... with the same port, as replicas behind one
//! name are.
//!
//! Covered: growing from 2 to 4 addresses and shrinking back to 2 under load with zero failed
//! requests (the backends that stay keep their state), a dead resolver and an empty answer keeping the
//! last set (and the metrics saying so), SRV weights.
//!
//! Needs dnsmasq (`apt-get install dnsmasq`): without it each test prints that it skipped, and fails
//! under `LB_REQUIRE_EXTERNAL=1` (CI installs it).

mod proxy_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lb::BackendsView;
use lb::config::{AdminConfig, Config, DnsConfig, UpstreamConfig};
use lb_algorithms::Algorithm;
use proxy_support::dns::{
    Dnsmasq, PATIENCE, backends, dnsmasq_program, free_port, hosts_dir, set_mode, set_records,
};
use proxy_support::{client, proxy};
use toy_backend::Latency;

/// lb with one upstream "app" found by `dns`, refreshed every 100 ms, and its admin API.
async fn lb_over(algorithm: Algorithm, mut dns: DnsConfig) -> lb::Running {
    dns.min_refresh = Duration::from_millis(100);
    dns.max_refresh = Duration::from_millis(100);
    let mut upstream = UpstreamConfig::new("app", algorithm, Vec::new());
    upstream.dns = Some(dns);
    let mut config = Config::default();
    config.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.server.workers = 2;
    config.admin = Some(AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 0))));
    config.upstreams.push(upstream);
    proxy(config).await
}

/// `GET /backends` of the admin API.
async fn backends_view(running: &lb::Running) -> BackendsView {
    let admin = running.admin.unwrap_or_else(|| panic!("no admin API"));
    let text = client()
        .get(format!("http://{admin}/backends"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `(addr, health, source)` of each backend, in order.
async fn table(running: &lb::Running) -> Vec<(String, String, String)> {
    let view = backends_view(running).await;
    view.upstreams[0].backends.iter().map(|b| (b.addr.clone(), b.health.clone(), b.source.clone())).collect()
}

/// Wait until the backend addresses are exactly `want` (by last byte, on `port`).
async fn wait_for_set(running: &lb::Running, want: &[u8], port: u16) {
    let want: Vec<String> = want.iter().map(|l| format!("127.0.0.{l}:{port}")).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now: Vec<String> = table(running).await.into_iter().map(|(a, _, _)| a).collect();
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "backends {now:?}, waited for {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one metrics line (`name{labels}`), 0 when absent.
async fn metric(running: &lb::Running, series: &str) -> f64 {
    let text = running.metrics.render(&running.upstreams);
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// Clients sending requests through lb in a loop until stopped, counting answers by body and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let http = client();
                    while !stop.load(Ordering::Relaxed) {
                        match http.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.bytes().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failed.lock().unwrap_or_else(|p| p.into_inner()).push(r.status().to_string())
                            }
                            Err(e) => failed.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load { stop, ok, failed, tasks }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stop, and return (answered 200, failures).
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

/// Requests each backend has answered, by address.
async fn requests(running: &lb::Running) -> Vec<(String, u64)> {
    let view = backends_view(running).await;
    view.upstreams[0].backends.iter().map(|b| (b.addr.clone(), b.requests)).collect()
}

/// Wait until the load has made `more` requests past what it had.
async fn let_load_run(load: &Load, more: u64) {
    let target = load.ok() + more;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while load.ok() < target {
        assert!(tokio::time::Instant::now() < deadline, "the load stalled at {} requests", load.ok());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_and_shrinking_the_answer_under_load_loses_no_request() {
    let Some(program) = dnsmasq_program("growing_and_shrinking_the_answer_under_load_loses_no_request")
    else {
        return;
    };
    let port = free_port();
    let dir = hosts_dir();
    set_records(dir.path(), &[11, 12]);
    let _dns = Dnsmasq::start(&program, SocketAddr::from(([127, 0, 0, 1], port)), dir.path(), &[]);
    // A little latency, so that requests are in flight when a backend starts draining.
    let _backends = backends(&[11, 12, 13, 14], port, Latency::Fixed(Duration::from_millis(3))).await;
    let running = lb_over(
        Algorithm::LeastConnections,
        DnsConfig::name("app.lb.test", port, Some(SocketAddr::from(([127, 0, 0, 1], port)))),
    )
    .await;
    wait_for_set(&running, &[11, 12], port).await;
    let rows = table(&running).await;
    assert!(rows.iter().all(|(_, h, s)| h == "healthy" && s == "dns app.lb.test"), "{rows:?}");

    let load = Load::start(running.url(), 8);
    let_load_run(&load, 100).await;
    let before = requests(&running).await;

    // Grow: two more replicas appear in DNS.
    set_records(dir.path(), &[11, 12, 13, 14]);
    wait_for_set(&running, &[11, 12, 13, 14], port).await;
    let_load_run(&load, 200).await;
    let grown = requests(&running).await;
    for (addr, n) in &before {
        let now = grown.iter().find(|(a, _)| a == addr).map_or(0, |(_, n)| *n);
        assert!(now > *n, "{addr} kept its counters and went on serving: {n} then {now}");
    }
    assert!(grown.iter().all(|(_, n)| *n > 0), "every backend serves: {grown:?}");

    // Shrink: two go away; they drain, then leave the set.
    set_records(dir.path(), &[11, 12]);
    wait_for_set(&running, &[11, 12], port).await;
    let_load_run(&load, 100).await;
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, Vec::<String>::new(), "no request failed across the changes ({ok} answered)");
    assert_eq!(metric(&running, "lb_retries_total{upstream=\"app\"}").await, 0.0, "nor needed a retry");
    assert!(metric(&running, "lb_dns_resolutions_total{upstream=\"app\",result=\"ok\"}").await >= 3.0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_resolver_or_an_empty_answer_keeps_the_last_set_and_says_so() {
    let Some(program) = dnsmasq_program("a_dead_resolver_or_an_empty_answer_keeps_the_last_set_and_says_so")
    else {
        return;
    };
    let port = free_port();
    let dir = hosts_dir();
    set_records(dir.path(), &[11, 12]);
    let resolver = SocketAddr::from(([127, 0, 0, 1], port));
    let mut dns = Dnsmasq::start(&program, resolver, dir.path(), &[]);
    let _backends = backends(&[11, 12], port, Latency::None).await;
    let running = lb_over(Algorithm::RoundRobin, DnsConfig::name("app.lb.test", port, Some(resolver))).await;
    wait_for_set(&running, &[11, 12], port).await;
    let http = client();
    let stale = "lb_dns_stale{upstream=\"app\"}";
    assert_eq!(metric(&running, stale).await, 0.0);

    // An answer with no address (the name is gone: NXDOMAIN): the set stays.
    set_records(dir.path(), &[]);
    wait_for_metric(&running, "lb_dns_resolutions_total{upstream=\"app\",result=\"empty\"}").await;
    assert_eq!(metric(&running, stale).await, 1.0);
    wait_for_set(&running, &[11, 12], port).await;

    // The resolver dies: the set stays, and every request is still answered.
    dns.kill();
    wait_for_metric(&running, "lb_dns_resolutions_total{upstream=\"app\",result=\"error\"}").await;
    assert_eq!(metric(&running, stale).await, 1.0);
    let rows = table(&running).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|(_, h, _)| h == "healthy"), "{rows:?}");
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let (status, body) = proxy_support::get(&http, &running.url()).await;
        assert_eq!(status, 200, "{body}");
        bodies.push(body.trim().to_string());
    }
    assert_eq!(bodies, ["b11", "b12", "b11", "b12"]);

    // It comes back with a new answer: followed, and no longer stale.
    set_records(dir.path(), &[12]);
    let _dns = Dnsmasq::start(&program, resolver, dir.path(), &[]);
    wait_for_set(&running, &[12], port).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(&running, stale).await != 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "lb_dns_stale stayed 1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
}

async fn wait_for_metric(running: &lb::Running, series: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(running, series).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "{series} stayed 0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_targets_ports_and_weights() {
    let Some(program) = dnsmasq_program("srv_records_give_targets_ports_and_weights") else { return };
    let port = free_port();
    let dir = hosts_dir();
    std::fs::write(
        dir.path().join("srv"),
        "127.0.0.11 one.lb.test\n127.0.0.12 three.lb.test\n127.0.0.13 backup.lb.test\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    set_mode(&dir.path().join("srv"), 0o644);
    let srv = "_http._tcp.app.lb.test";
    let records = [
        format!("--srv-host={srv},one.lb.test,{port},0,1"),
        format!("--srv-host={srv},three.lb.test,{port},0,3"),
        // A higher priority number: only used when none of priority 0 is there (RFC 2782).
        format!("--srv-host={srv},backup.lb.test,{port},1,5"),
    ];
    let resolver = SocketAddr::from(([127, 0, 0, 1], port));
    let _dns = Dnsmasq::start(&program, resolver, dir.path(), &records);
    let _backends = backends(&[11, 12, 13], port, Latency::None).await;
    let running = lb_over(Algorithm::WeightedRoundRobin, DnsConfig::srv(srv, Some(resolver))).await;
    wait_for_set(&running, &[11, 12], port).await;
    let view = backends_view(&running).await;
    let weights: Vec<(String, u32, String)> =
        view.upstreams[0].backends.iter().map(|b| (b.addr.clone(), b.weight, b.source.clone())).collect();
    let source = format!("dns {srv}");
    assert_eq!(
        weights,
        [(format!("127.0.0.11:{port}"), 1, source.clone()), (format!("127.0.0.12:{port}"), 3, source)]
    );
    let http = client();
    let mut bodies = Vec::new();
    for _ in 0..8 {
        let (status, body) = proxy_support::get(&http, &running.url()).await;
        assert_eq!(status, 200, "{body}");
        bodies.push(body.trim().to_string());
    }
    assert_eq!(bodies.iter().filter(|b| *b == "b11").count(), 2, "{bodies:?}");
    assert_eq!(bodies.iter().filter(|b| *b == "b12").count(), 6, "{bodies:?}");
    running.shutdown().await;
}
