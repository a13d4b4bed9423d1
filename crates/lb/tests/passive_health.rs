//! Passive health is on by default: a backend that dies under load costs clients nothing, and shows as
//! out in the admin API within a second, in quick mode, with a minimal config file and in demo mode,
//! with no health-check or outlier settings written anywhere. And a failed connect is retried on
//! another backend whatever the retry budget says.
//!
//! The load is what `wrk -c32` does: 32 keep-alive connections, each sending GETs back to back, for 2 s;
//! one of three backends is killed (or switched to failing) half a second in.

mod proxy_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser as _;
use lb_algorithms::{Algorithm, BackendSpec};
use proxy_support::{LbProcess, backends, client, config, get, proxy, refusing_port};
use toy_backend::Backend;

/// Concurrent keep-alive connections of the load.
const CONNECTIONS: usize = 32;
/// How long the load runs, and when the backend is broken.
const LOAD_FOR: Duration = Duration::from_secs(2);
const BREAK_AT: Duration = Duration::from_millis(500);
/// The backend must show as out in `/backends` within this.
const SHOWN_WITHIN: Duration = Duration::from_secs(1);

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    /// The first few non-2xx answers or request errors, as `status body`.
    failures: std::sync::Mutex<Vec<String>>,
    failed: AtomicU64,
}

/// Start the load on `url`: `CONNECTIONS` loops of GETs, each on its own keep-alive connection.
fn start_load(url: &str, stop: &Arc<AtomicBool>, tally: &Arc<Tally>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CONNECTIONS)
        .map(|_| {
            let (url, stop, tally) = (url.to_string(), Arc::clone(stop), Arc::clone(tally));
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = get(&c, &url).await;
                    if (200..300).contains(&status) {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        let mut failures = tally.failures.lock().unwrap_or_else(|e| e.into_inner());
                        if failures.len() < 10 {
                            failures.push(format!("{status} {body}"));
                        }
                    }
                }
            })
        })
        .collect()
}

/// The health `GET /backends` shows for `addr`.
async fn health_of(admin: &str, addr: &str) -> String {
    let body = match client().get(format!("{admin}/backends")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return format!("<{e}>"),
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let backends = v["upstreams"][0]["backends"].as_array().cloned().unwrap_or_default();
    let backend = backends.iter().find(|b| b["addr"] == addr);
    backend.and_then(|b| b["health"].as_str()).unwrap_or("<missing>").to_string()
}

/// Run the load against `url`, call `break_it` half a second in, and check that no client saw a
/// failure and that `victim` was shown as out of the pick within a second.
async fn break_one_under_load(url: &str, admin: &str, victim: &str, break_it: impl AsyncFnOnce()) {
    assert_eq!(health_of(admin, victim).await, "healthy");
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let loops = start_load(url, &stop, &tally);
    tokio::time::sleep(BREAK_AT).await;
    let before = tally.ok.load(Ordering::Relaxed);
    break_it().await;
    let broken = Instant::now();
    let mut shown_after = None;
    while broken.elapsed() < 2 * SHOWN_WITHIN {
        if health_of(admin, victim).await != "healthy" {
            shown_after = Some(broken.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(LOAD_FOR.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let failures = tally.failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        (tally.failed.load(Ordering::Relaxed), failures),
        (0, Vec::<String>::new()),
        "non-2xx answers under load ({ok} ok)"
    );
    assert!(before > 0 && ok > before, "the load ran before and after the break: {before}, {ok}");
    let shown = shown_after.unwrap_or_else(|| panic!("{victim} still healthy in /backends"));
    assert!(shown < SHOWN_WITHIN, "{victim} shown as out after {shown:?}");
    assert_eq!(health_of(admin, victim).await, "ejected");
}

/// The `lb` binary, with what it prints at start.
struct Proc(LbProcess);

impl Proc {
    fn start(args: &[&str]) -> Proc {
        Proc(LbProcess::start(args))
    }

    /// What follows `prefix` on the next stdout line that starts with it (bounded wait).
    fn wait_line(&self, prefix: &str) -> String {
        let line = self.0.wait_line(prefix, Duration::from_secs(20));
        line[prefix.len()..].trim_end_matches('/').to_string()
    }

    /// The proxy's and the admin API's URLs, from what it prints at start.
    fn urls(&self) -> (String, String) {
        let url = self.wait_line("lb listening on ");
        let admin = self.wait_line("admin on ");
        (url, admin)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_mode_loses_nothing_when_a_backend_dies_under_load() {
    let b = backends(3).await;
    let addrs: Vec<String> = b.iter().map(|b| b.addr().to_string()).collect();
    let mut args = vec!["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    for a in &addrs {
        args.extend(["--backend", a.as_str()]);
    }
    let lb = Proc::start(&args);
    let (url, admin) = lb.urls();
    break_one_under_load(&url, &admin, &addrs[1], async || b[1].kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_config_file_loses_nothing_when_a_backend_dies_under_load() {
    let b = backends(3).await;
    let addrs: Vec<String> = b.iter().map(|b| format!("{:?}", b.addr().to_string())).collect();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[upstream]]\n\
         name = \"app\"\nalgorithm = \"round-robin\"\nbackends = [{}]\n",
        addrs.join(", ")
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let lb = Proc::start(&["--config", &path.to_string_lossy()]);
    let (url, admin) = lb.urls();
    break_one_under_load(&url, &admin, &b[1].addr().to_string(), async || b[1].kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_loses_nothing_when_a_backend_is_switched_to_failing() {
    let args = lb::cli::Args::parse_from(["lb", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let demo = lb::cli::start_demo(&args).await.unwrap_or_else(|e| panic!("{e:#}"));
    let admin = format!("http://{}", demo.running.admin.unwrap_or_else(|| panic!("no admin")));
    let victim: &Backend = &demo.backends[1];
    // The toy backend's own knob, as the lesson turns it: from now on its connections are reset
    // without an answer, while its `/health` still says yes (so only passive health can see it).
    let fail = async || {
        let resp =
            client().post(format!("{}/admin/fail", victim.url())).body(r#"{"fail":true}"#).send().await;
        assert_eq!(resp.map(|r| r.status().as_u16()).ok(), Some(200));
    };
    break_one_under_load(&demo.running.url(), &admin, &victim.addr().to_string(), fail).await;
    demo.running.shutdown().await;
    for b in demo.backends {
        b.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_is_retried_even_when_the_retry_budget_is_empty() {
    let b = backends(1).await;
    let (dead, _held) = refusing_port();
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    let upstream = &mut cfg.upstreams[0];
    upstream.backends.insert(0, BackendSpec::new(dead.to_string()));
    // No budget at all, and no ejection, so the dead backend keeps its turns: every one of them is a
    // retry the budget could not pay for.
    upstream.retry.budget_ratio = 0.0;
    upstream.retry.budget_min_per_sec = 0;
    upstream.outlier_detection = None;
    let lb = proxy(cfg).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &lb.url()).await, (200, "backend-1\n".to_string()));
    }
    assert!(lb.metrics.retries("app") >= 5, "round robin gave the dead backend half the first picks");
    lb.shutdown().await;
}
