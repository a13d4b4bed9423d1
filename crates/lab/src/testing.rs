//! The fixture the integration tests share: three toy backends in-process and one balancer on a
//! committed config, all on a block of free loopback ports, so the tests can run in parallel with
//! each other and with a developer's `lab up` on the fixed ports.
//!
//! A test that needs a program that is not installed prints
//! `SKIPPED: <test> needs <program>: install with bash scripts/install-balancers.sh` and passes;
//! with `LB_REQUIRE_EXTERNAL=1` it fails instead.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use toy_backend::{Backend, BackendConfig, Knobs};

use crate::balancer::Balancer;
use crate::programs;
use crate::render::Ports;
use crate::repo;
use crate::run::{Output, Prepared, Running};
use crate::traffic;

/// Test ports come from here: below the kernel's range for outgoing connections (32768-60999), so a
/// listener never collides with one, and above the ports the lab and the bench script use.
const PORT_RANGE: std::ops::Range<u16> = 22000..32000;

/// Five free loopback ports: backends, traffic, admin. Tries blocks from a start that differs per
/// process, and checks every port by binding it.
pub fn free_ports() -> Ports {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let seed = (std::process::id() as u16).wrapping_mul(37);
    for _ in 0..400 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let start = PORT_RANGE.start + (seed.wrapping_add(n.wrapping_mul(5))) % (span - 5);
        let ports: Vec<u16> = (start..start + 5).collect();
        let free =
            ports.iter().all(|p| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, *p))).is_ok());
        if free {
            return Ports { backends: [ports[0], ports[1], ports[2]], listen: ports[3], admin: ports[4] };
        }
    }
    panic!("no block of 5 free ports in {PORT_RANGE:?}");
}

/// The program for `balancer`, or `None` after printing the skip line (a panic when
/// `LB_REQUIRE_EXTERNAL=1`, except for lb, which `cargo build -p lb` provides).
pub fn require(balancer: Balancer, test: &str) -> Option<PathBuf> {
    match programs::find(balancer) {
        Some(p) => Some(p),
        None => {
            let what = match balancer {
                Balancer::Lb => "build it with cargo build -p lb".to_string(),
                _ => format!("install with {}", programs::INSTALL_HINT),
            };
            let line = format!("SKIPPED: {test} needs {}: {what}", balancer.program());
            // lb is this workspace's own binary, built only when its package is: never external.
            let external = balancer != Balancer::Lb;
            assert!(!(external && programs::external_required()), "{line} ({}=1)", programs::REQUIRE_ENV);
            eprintln!("{line}");
            None
        }
    }
}

/// A program other than a balancer (`promtool`), or `None` after printing the skip line with `install`
/// (how to get it); a panic instead when `LB_REQUIRE_EXTERNAL=1`.
pub fn require_program(name: &str, install: &str, test: &str) -> Option<PathBuf> {
    if let Some(p) = programs::find_on_path(name) {
        return Some(p);
    }
    let line = format!("SKIPPED: {test} needs {name}: install with {install}");
    assert!(!programs::external_required(), "{line} ({}=1)", programs::REQUIRE_ENV);
    eprintln!("{line}");
    None
}

/// Backends and a balancer, running. Dropping it stops the balancer, then the backends.
#[derive(Debug)]
pub struct Lab {
    /// The balancer (drops first: fields drop in order).
    pub balancer: Running,
    /// backend-1, backend-2, backend-3.
    pub backends: Vec<Backend>,
    /// A keep-alive client.
    pub client: reqwest::Client,
    /// `http://127.0.0.1:PORT/` of the balancer.
    pub url: String,
}

impl Lab {
    /// Starts the backends and `balancer` on its committed config `config` (a file name in its
    /// folder), and waits until a request through it succeeds. `None` if the program is missing.
    pub async fn start(balancer: Balancer, config: &str, test: &str) -> Option<Lab> {
        let program = require(balancer, test)?;
        let root = repo::source_root();
        let committed = balancer.config_path(&root, config);
        // Two tries: another process may take a port between the check and the bind.
        let mut last_err = String::new();
        for _ in 0..2 {
            let ports = free_ports();
            let mut backends = Vec::new();
            for (i, port) in ports.backends.iter().enumerate() {
                let cfg = BackendConfig {
                    name: format!("backend-{}", i + 1),
                    knobs: Knobs::default(),
                    seed: i as u64 + 1,
                };
                match Backend::start(SocketAddr::from((Ipv4Addr::LOCALHOST, *port)), cfg).await {
                    Ok(b) => backends.push(b),
                    Err(e) => last_err = format!("backend on {port}: {e}"),
                }
            }
            if backends.len() < 3 {
                continue;
            }
            let prepared = Prepared::new(balancer, &committed, ports).unwrap_or_else(|e| panic!("{e}"));
            match Running::start(prepared, &program, Output::Capture).await {
                Ok(running) => {
                    let url = format!("{}/", running.url());
                    let lab = Lab { balancer: running, backends, client: traffic::client(), url };
                    lab.wait_ready().await;
                    return Some(lab);
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        panic!("{test}: could not start {balancer} on {config}: {last_err}");
    }

    /// Waits (at most 15 s) until a request through the balancer gets a 200 from a backend. Envoy
    /// opens its port before its first health-check round ends.
    async fn wait_ready(&self) {
        let ok = traffic::wait_until(Duration::from_secs(15), Duration::from_millis(100), || async {
            traffic::get(&self.client, &self.url, None).await.starts_with("backend-")
        })
        .await;
        assert!(
            ok.is_some(),
            "{} never answered 200 through {}:\n{}",
            self.balancer.balancer(),
            self.url,
            self.balancer.log_tail()
        );
    }

    /// Waits (at most `timeout`) until all three backends answer within a run of requests; true if
    /// they did. Health checkers bring hosts in one by one.
    pub async fn wait_all_backends(&self, timeout: Duration) -> bool {
        traffic::wait_until(timeout, Duration::from_millis(100), || async {
            traffic::send(&self.client, &self.url, 12, None).await.backends().len() == 3
        })
        .await
        .is_some()
    }

    /// `n` sequential requests through the balancer.
    pub async fn send(&self, n: usize, user: Option<&str>) -> traffic::Tally {
        traffic::send(&self.client, &self.url, n, user).await
    }

    /// Asserts `cond`, showing the balancer's log when it fails.
    pub fn check(&self, cond: bool, msg: impl std::fmt::Display) {
        assert!(cond, "{msg}\n--- {} log ---\n{}", self.balancer.balancer(), self.balancer.log_tail());
    }
}

/// Validates `config` of `balancer` with the real program, as `lab check` does. Returns false (after
/// the skip line) when the program is missing.
pub async fn validates(balancer: Balancer, config: &str, test: &str) -> bool {
    let Some(program) = require(balancer, test) else { return false };
    let path = balancer.config_path(&repo::source_root(), config);
    let status = crate::check::validate(balancer, &program, &path).await;
    assert_eq!(status, crate::check::Status::Ok, "{} rejects {}", balancer.program(), path.display());
    true
}

/// `count` is within `tolerance` (a fraction) of `expected`.
pub fn near(count: u64, expected: f64, tolerance: f64) -> bool {
    (count as f64 - expected).abs() <= expected * tolerance
}

impl Lab {
    /// Round robin: `n` sequential requests split evenly, each backend within 5% of n/3.
    pub async fn assert_even_spread(&self, n: usize) {
        let tally = self.send(n, None).await;
        let each = n as f64 / 3.0;
        for b in ["backend-1", "backend-2", "backend-3"] {
            self.check(
                near(tally.get(b), each, 0.05),
                format!("{b}: {} of {n}, expected {each} +-5%: {tally:?}", tally.get(b)),
            );
        }
    }

    /// Weights 3:1:1: `n` requests split 60/20/20 %, each within 5% of its share.
    pub async fn assert_weighted_3_1_1(&self, n: usize) {
        let tally = self.send(n, None).await;
        for (b, share) in [("backend-1", 0.6), ("backend-2", 0.2), ("backend-3", 0.2)] {
            let want = n as f64 * share;
            self.check(
                near(tally.get(b), want, 0.05),
                format!("{b}: {} of {n}, expected {want} +-5%: {tally:?}", tally.get(b)),
            );
        }
    }

    /// Load-aware strategies: backend-1 made slow (200 ms a request) under 12 concurrent clients for
    /// 2 s gets fewer than half the requests of either fast backend. Round robin would give it a
    /// third of all requests, each client waiting on it every third request.
    pub async fn assert_avoids_slow_backend(&self) -> crate::traffic::Tally {
        self.backends[0].set_latency(toy_backend::Latency::Fixed(Duration::from_millis(200)));
        let tally = crate::traffic::load(&self.url, 12, Duration::from_secs(2)).await;
        self.backends[0].set_latency(toy_backend::Latency::None);
        let (slow, f2, f3) = (tally.get("backend-1"), tally.get("backend-2"), tally.get("backend-3"));
        self.check(tally.failures() == 0, format!("failures under load: {tally:?}"));
        self.check(
            slow * 2 < f2.min(f3),
            format!("slow backend-1 got {slow}, fast ones {f2} and {f3}: {tally:?}"),
        );
        tally
    }

    /// Hashing on X-User: each of 24 users gets 8 requests, all to one backend; the users spread over
    /// more than one backend.
    pub async fn assert_sticky_by_user(&self) {
        let mut homes = std::collections::BTreeSet::new();
        for u in 0..24 {
            let user = format!("user-{u}");
            let tally = self.send(8, Some(&user)).await;
            let backends = tally.backends();
            self.check(backends.len() == 1 && tally.failures() == 0, format!("{user} landed on {tally:?}"));
            homes.insert(backends[0].to_string());
        }
        self.check(homes.len() > 1, format!("24 users all hashed to {homes:?}"));
    }

    /// Active health checks: backend-2 set unhealthy leaves the rotation within 8 s, and comes back
    /// within 8 s once healthy again. Returns how long each took.
    pub async fn assert_active_health(&self) -> HealthTimes {
        self.check(
            self.wait_all_backends(Duration::from_secs(10)).await,
            "not all backends in rotation at start",
        );
        self.backends[1].set_healthy(false);
        let out = crate::traffic::wait_until(Duration::from_secs(8), Duration::from_millis(100), || async {
            let t = self.send(9, None).await;
            t.get("backend-2") == 0 && t.failures() == 0
        })
        .await;
        self.check(out.is_some(), "unhealthy backend-2 still gets traffic after 8 s");
        let steady = self.send(30, None).await;
        self.check(
            steady.get("backend-2") == 0 && steady.failures() == 0,
            format!("after removal: {steady:?}"),
        );
        self.backends[1].set_healthy(true);
        let back = crate::traffic::wait_until(Duration::from_secs(8), Duration::from_millis(100), || async {
            self.send(9, None).await.get("backend-2") > 0
        })
        .await;
        self.check(back.is_some(), "healthy backend-2 did not come back within 8 s");
        HealthTimes { out: out.unwrap_or_default(), back: back.unwrap_or_default() }
    }
}

/// How long a balancer's active health checks took to react, from [`Lab::assert_active_health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTimes {
    /// From the backend turning unhealthy to the balancer sending it nothing.
    pub out: Duration,
    /// From the backend turning healthy again to its first request.
    pub back: Duration,
}
