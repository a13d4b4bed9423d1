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
/// `LB_REQUIRE_EXTERNAL=1`).
pub fn require(balancer: Balancer, test: &str) -> Option<PathBuf> {
    match programs::find(balancer) {
        Some(p) => Some(p),
        None => {
            let what = match balancer {
                Balancer::Lb => "build it with cargo build -p lb".to_string(),
                _ => format!("install with {}", programs::INSTALL_HINT),
            };
            let line = format!("SKIPPED: {test} needs {}: {what}", balancer.program());
            assert!(!programs::external_required(), "{line} ({}=1)", programs::REQUIRE_ENV);
            eprintln!("{line}");
            None
        }
    }
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
