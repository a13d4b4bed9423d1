//! Changing a running proxy without losing a request: hot reload under steady load, and graceful
//! shutdown with slow requests in flight.
//!
//! Run with `cargo nextest run -p lb --test reload_shutdown`.
//!
//! The library tests start `lb` in-process (`lb::start` on a config file in a temp dir, so a reload has
//! a file to read again); the signal tests run the real binary and send it `SIGHUP` and `SIGTERM`.
//! Load comes from a few tasks that loop over keep-alive connections for a bounded time; every answer
//! must be 200.

mod proxy_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lb::Config;
use proxy_support::load::{Tally, free_port, load};
use proxy_support::{LbProcess, backends, client};
use tokio::time::Instant;
use toy_backend::Backend;

/// Longest any condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(10);

/// A config file over these backends: one round-robin upstream "app", one worker, admin on port 0.
fn write_config(path: &Path, listen: &str, backends: &[&Backend]) {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr())).collect();
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nworkers = 1\nshutdown_timeout = \"5s\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstream]]\nname = \"app\"\nalgorithm = \"round-robin\"\nbackends = [{}]\n",
        list.join(", ")
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Wait (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        // Polling counters that other tasks move; the deadline bounds it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests each backend has received.
fn counts(b: &[Backend]) -> Vec<u64> {
    b.iter().map(|b| b.requests()).collect()
}

/// After a reload to `on`, every backend in `on` receives requests and every other one receives none.
async fn only_these_receive(all: &[Backend], on: &[usize]) {
    // Requests routed before the swap may still be arriving: let them land, then measure a window.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = counts(all);
    eventually("every backend of the new list is receiving", || {
        let now = counts(all);
        on.iter().all(|&i| now[i] > before[i] + 5)
    })
    .await;
    let after = counts(all);
    for i in 0..all.len() {
        if !on.contains(&i) {
            assert_eq!(after[i], before[i], "backend {i} was removed but still receives requests");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_lose_no_request() {
    let all = backends(4).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    write_config(&path, "127.0.0.1:0", &[&all[0], &all[1]]);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let lb = lb::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let admin = format!("http://{}", lb.admin.unwrap_or_else(|| panic!("no admin")));

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let loops = load(&lb.url(), 4, &stop, &tally);
    only_these_receive(&all, &[0, 1]).await;

    // Three reloads, each adding one backend and removing one; the first two through the admin API,
    // the third through the library call that SIGHUP uses.
    let http = client();
    let steps: [&[usize]; 3] = [&[1, 2], &[2, 3], &[3, 0]];
    for (n, on) in steps.iter().enumerate() {
        let list: Vec<&Backend> = on.iter().map(|&i| &all[i]).collect();
        write_config(&path, "127.0.0.1:0", &list);
        if n < 2 {
            let resp = http.post(format!("{admin}/reload")).send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("\"kept_backends\":1"), "{body}");
        } else {
            let report = lb.reload().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(report.summary.kept_backends, 1);
            assert_eq!(report.summary.removed_backends, [format!("app/{}", all[2].addr())]);
        }
        only_these_receive(&all, on).await;
    }

    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    let (ok, bad) = (tally.ok.load(Ordering::Relaxed), tally.bad.load(Ordering::Relaxed));
    let first_bad = tally.reasons();
    assert_eq!(bad, 0, "{bad} of {} requests failed across the reloads: {first_bad:?}", ok + bad);
    assert!(ok > 100, "only {ok} requests ran");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_with_its_position_and_the_old_config_keeps_serving() {
    let all = backends(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    write_config(&path, "127.0.0.1:0", &[&all[0]]);
    let lb = lb::start(Config::load(&path).unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let admin = format!("http://{}", lb.admin.unwrap_or_else(|| panic!("no admin")));
    let text = std::fs::read_to_string(&path).unwrap_or_default().replace("round-robin", "fastest");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));

    let http = client();
    let resp = http.post(format!("{admin}/reload")).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap_or_else(|e| panic!("{e}"));
    let first = body["errors"][0].as_str().unwrap_or_default().to_string();
    // Line 11 of the file is `algorithm = "fastest"`; the value starts at column 13.
    let expected = format!("{}:11:13: unknown algorithm \"fastest\"", path.display());
    assert!(first.starts_with(&expected), "{first}");

    let r = http.get(lb.url()).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200, "the old configuration serves on");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_slow_requests_finish_and_refuses_new_connections() {
    let all = backends(2).await;
    let mut config = proxy_support::config(lb_algorithms::Algorithm::RoundRobin, &all, &[]);
    config.server.shutdown_grace = Duration::from_secs(5);
    let lb = proxy_support::proxy(config).await;
    let addr = lb.listen[0];
    let url = format!("{}/delay/1000", lb.url());
    // Five slow requests, each on its own connection.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client().get(&url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let in_flight = || all.iter().map(|b| b.in_flight()).sum::<usize>();
    eventually("five requests in flight at the backends", || in_flight() == 5).await;

    let started = Instant::now();
    let shutdown = tokio::spawn(lb.shutdown());
    // Within a moment the listener is closed: a new connection is refused while the slow ones run.
    eventually("new connections refused", || std::net::TcpStream::connect(addr).is_err()).await;
    assert!(in_flight() > 0, "the slow requests should still be running");
    for s in slow {
        let status = s.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.ok(), Some(200), "a request in flight did not complete");
    }
    let _ = shutdown.await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?}, it should end when the last request does"
    );
}

// ------------------------------------------------------------------------------------------------
// The binary, driven by signals.

/// The `lb` binary running a config file; killed if the test fails before it exits.
struct Proc(LbProcess);

impl Proc {
    fn start(config: &Path) -> Proc {
        Proc(LbProcess::start(&[std::ffi::OsStr::new("--config"), config.as_os_str()]))
    }

    /// The next stdout line that starts with `prefix` (bounded wait).
    fn wait_line(&self, prefix: &str) -> String {
        self.0.wait_line(prefix, DEADLINE)
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.0.child.id() as i32).unwrap_or_else(|| panic!("pid 0"));
        rustix::process::kill_process(pid, signal).unwrap_or_else(|e| panic!("kill: {e}"));
    }
}

fn temp_config() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_and_sigterm_drains_then_exits_zero() {
    let all = backends(2).await;
    let (_dir, path) = temp_config();
    let listen = format!("127.0.0.1:{}", free_port());
    write_config(&path, &listen, &[&all[0]]);
    let proc = Proc::start(&path);
    let line = proc.wait_line("lb listening on ");
    let url = line.trim_start_matches("lb listening on ").to_string();
    let addr: SocketAddr =
        url.trim_start_matches("http://").parse().unwrap_or_else(|e| panic!("{line}: {e}"));

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let loops = load(&url, 3, &stop, &tally);
    only_these_receive(&all, &[0]).await;

    // SIGHUP: backend 1 replaces backend 0.
    write_config(&path, &listen, &[&all[1]]);
    proc.signal(rustix::process::Signal::HUP);
    let reloaded = proc.wait_line("reloaded ");
    assert!(reloaded.contains("1 backends added, 1 removed, 0 kept"), "{reloaded}");
    only_these_receive(&all, &[1]).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    assert_eq!(tally.bad.load(Ordering::Relaxed), 0, "failures across SIGHUP: {:?}", tally.reasons());

    // SIGTERM with three slow requests in flight: they finish, new connections are refused, exit 0.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{url}/delay/1000");
            tokio::spawn(async move { client().get(&url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    eventually("three requests in flight", || all[1].in_flight() == 3).await;
    proc.signal(rustix::process::Signal::TERM);
    eventually("new connections refused", || std::net::TcpStream::connect(addr).is_err()).await;
    for s in slow {
        assert_eq!(s.await.ok().and_then(|r| r.ok()), Some(200), "a request in flight was cut");
    }
    let mut proc = proc;
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = proc.0.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "lb did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "lb exited with {status}");
}
