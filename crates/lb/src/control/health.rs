//! Active health checks: ask every backend "are you well?" on a timer, and take it out after a few noes.
//!
//! # The idea
//!
//! Every `interval` the proxy sends `GET {path}` to each backend of an upstream that has
//! `[upstream.health_check]`, and counts the answer as a pass if it is `expect_status` within `timeout`.
//! Anything else (another status, a refused or reset connection, no answer in time) is a fail.
//!
//! One check is weak evidence: a single timeout may be a lost packet or a GC pause. So the state flips
//! only after a run of the same result (**hysteresis**): `fall` fails in a row take a healthy backend out
//! (`Unhealthy`), `rise` passes in a row bring it back. A backend whose checks alternate pass/fail stays
//! where it is instead of flapping in and out on every check. The cost of hysteresis is detection time: a
//! dead backend keeps receiving traffic for up to `fall x interval` (plus one timeout), which is why
//! passive outlier detection (`outlier.rs`) exists too: it notices failures on real traffic at once.
//!
//! # First state
//!
//! Backends start `Healthy`, as HAProxy's servers start up, so a freshly started proxy serves at once and
//! a demo needs no warm-up; a backend that is really down is taken out after `fall` checks. Envoy does
//! the opposite by default: a new host counts as failing until its first check passes, which is safer
//! when the backend list comes from a discovery service that may name hosts that are not up yet. Here the
//! list comes from a file or an operator, so trusting it until proven wrong is the smoother choice.
//!
//! # Jitter
//!
//! Each round of checks waits `interval x (1 ± jitter)`, drawn afresh each time. Without it, many proxies
//! started together (a deploy, a reboot of a rack) check in lockstep forever, and every backend sees all
//! of them at the same instant: a small synchronized storm every interval. The draw is deliberately not
//! seeded: identical seeds on identical proxies would reproduce exactly the lockstep jitter exists to
//! break. Nothing that a test asserts depends on it.
//!
//! # What a check never touches
//!
//! Checks flip only between `Healthy` and `Unhealthy`. `Draining` is an operator's decision and stays
//! until the operator undoes it. `Ejected` belongs to outlier detection, which returns the backend when
//! its ejection ends. Meanwhile the checker keeps its own verdict per backend and applies it as soon as
//! the backend is back to `Healthy`/`Unhealthy` (so a drained-then-undrained backend that is down is taken
//! out by the next check, not after `fall` more).
//!
//! # Cost
//!
//! One request per backend per interval, made from one HTTP client per upstream (its own small
//! connection pool, apart from the proxy's, so checks neither wait behind nor count as real traffic).
//! Checks of one upstream run concurrently; nothing here runs on the request path.
//!
//! A check travels the way the upstream's traffic does, or it would check the wrong thing: over TLS
//! with the upstream's `[upstream.tls]` settings (CA, name), so a backend whose certificate no longer
//! checks out fails its checks as it fails requests, and a backend that speaks only plain HTTP on a TLS
//! upstream's port is unhealthy; and in HTTP/2 for `protocol = "h2c"` or `"h2"` upstreams.
//!
//! # The same thing elsewhere
//!
//! - HAProxy: `option httpchk GET /health`, `http-check expect status 200`, `server ... check inter 2s
//!   fall 3 rise 2`, and `spread-checks 10` for jitter.
//! - Envoy: `health_checks { http_health_check { path: /health }, interval: 2s, timeout: 1s,
//!   unhealthy_threshold: 3, healthy_threshold: 2, interval_jitter_percent: 10 }`.
//! - nginx: active checks are in the commercial edition only (`health_check`); open-source nginx relies
//!   on passive `max_fails`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lb_algorithms::{Health, now_nanos};
use rand::Rng;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::HealthCheckConfig;
use crate::config::Protocol;
use crate::control::probes::{FirstRound, Readiness};
use crate::net::backend_tls::BackendConnector;
use crate::upstream::{Upstream, Upstreams};

/// The checker's verdict on one backend and the run that led to it: a pure state machine, so the
/// hysteresis is tested without a network or a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckState {
    /// What the checks say, independent of what else (drain, ejection) holds the backend.
    pub healthy: bool,
    /// Results in a row that disagree with `healthy`, i.e. progress towards a flip.
    pub streak: u32,
}

impl Default for CheckState {
    /// Healthy with no evidence yet (see "First state" in the module docs).
    fn default() -> Self {
        CheckState { healthy: true, streak: 0 }
    }
}

impl CheckState {
    /// Record one result; returns the new verdict if this result flipped it.
    pub fn record(&mut self, passed: bool, rise: u32, fall: u32) -> Option<bool> {
        if passed == self.healthy {
            // Agreement resets the run: fail, fail, pass, fail never reaches fall = 3.
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { fall } else { rise };
        if self.streak >= needed.max(1) {
            self.healthy = passed;
            self.streak = 0;
            Some(passed)
        } else {
            None
        }
    }
}

type CheckClient = Client<BackendConnector, Empty<Bytes>>;

/// The checks' client for one upstream: its protocol, its TLS settings, its connect timeout.
fn check_client(upstream: &Upstream) -> (CheckClient, &'static str) {
    let connector = BackendConnector::new(upstream.tls.clone(), upstream.config.timeouts.connect);
    let client = Client::builder(TokioExecutor::new())
        // One idle connection per backend is all a check every few seconds can reuse.
        .pool_max_idle_per_host(1)
        .http2_only(upstream.config.protocol != Protocol::Http1)
        .build(connector);
    (client, if upstream.tls.is_some() { "https" } else { "http" })
}

/// Start checking every upstream that has `health_check` set; runs until `shutdown` completes.
/// `readiness` is marked checked once every one of them has run its first round (`/ready`, see
/// `probes.rs`).
pub fn spawn(
    upstreams: Arc<Upstreams>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        let checked = upstreams.all().iter().filter(|u| u.config.health_check.is_some()).count();
        let first_round = Arc::new(FirstRound::new(readiness, checked));
        for upstream in upstreams.all().iter() {
            if let Some(config) = upstream.config.health_check.clone() {
                tracing::info!(
                    upstream = %upstream.name,
                    path = %config.path,
                    interval = %crate::config::format_duration(config.interval),
                    rise = config.rise,
                    fall = config.fall,
                    "active health checks on"
                );
                let loop_ = check_loop(
                    Arc::clone(upstream),
                    config,
                    check_client(upstream),
                    Arc::clone(&first_round),
                );
                tasks.spawn(loop_);
            }
        }
        if tasks.is_empty() {
            return;
        }
        // The loops never end on their own; shutdown aborts them mid-wait or mid-check, which is safe:
        // a check that is cut short changes nothing.
        shutdown.await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    })
}

/// Check one upstream's backends forever.
async fn check_loop(
    upstream: Arc<Upstream>,
    config: HealthCheckConfig,
    client: (CheckClient, &'static str),
    first_round: Arc<FirstRound>,
) {
    let (client, scheme) = client;
    let mut first_round = Some(first_round);
    let mut verdicts: HashMap<String, CheckState> = HashMap::new();
    // Spread the first round too, so proxies started together do not begin in step.
    let first = config.interval.mul_f64(config.jitter.clamp(0.0, 1.0) * rand::rng().random::<f64>());
    tokio::time::sleep(first).await;
    loop {
        let addrs: Vec<String> =
            upstream.load().set.backends().iter().map(|b| b.addr().to_string()).collect();
        let checks = addrs.iter().map(|addr| check_once(&client, scheme, &config, addr));
        let results = futures_util::future::join_all(checks).await;

        // Forget backends that were removed, so one re-added later starts fresh (healthy).
        verdicts.retain(|addr, _| addrs.contains(addr));
        for (addr, passed) in addrs.iter().zip(results) {
            // A backend first seen by this loop starts from its current health, not from "healthy":
            // after a reload restarts the checks, a backend that was down stays down until it rises.
            let verdict = verdicts.entry(addr.clone()).or_insert_with(|| CheckState {
                healthy: upstream
                    .load()
                    .set
                    .position(addr)
                    .map(|i| upstream.load().set.backends()[i].health())
                    != Some(Health::Unhealthy),
                streak: 0,
            });
            if let Some(now_healthy) = verdict.record(passed, config.rise, config.fall) {
                tracing::debug!(upstream = %upstream.name, backend = %addr, healthy = now_healthy, "check verdict changed");
            }
            apply(&upstream, addr, verdict.healthy);
        }
        if let Some(round) = first_round.take() {
            round.done();
        }
        // Drawn before the await: the thread-local generator must not be held across it.
        let wait = config.jittered_interval(rand::rng().random());
        tokio::time::sleep(wait).await;
    }
}

/// Bring the backend's health in line with the checks' verdict, unless it is draining or ejected.
fn apply(upstream: &Upstream, addr: &str, healthy: bool) {
    let state = upstream.load();
    let Some(index) = state.set.position(addr) else { return };
    let from = state.set.backends()[index].health();
    let to = if healthy { Health::Healthy } else { Health::Unhealthy };
    if from == to || matches!(from, Health::Draining | Health::Ejected) {
        return;
    }
    // `set_health` swaps, so we learn what we really replaced; if an operator drained the backend or
    // outlier detection ejected it since we looked, put that back.
    match state.set.set_health(index, to, now_nanos()) {
        Some(prev @ (Health::Draining | Health::Ejected)) => {
            state.set.set_health(index, prev, now_nanos());
        }
        Some(prev) => {
            tracing::info!(
                upstream = %upstream.name,
                backend = %addr,
                from = %prev,
                to = %to,
                "health changed"
            );
        }
        None => {}
    }
}

/// One check: true if the backend answered `expect_status` in time.
async fn check_once(client: &CheckClient, scheme: &str, config: &HealthCheckConfig, addr: &str) -> bool {
    let uri = format!("{scheme}://{addr}{}", config.path);
    let mut request = http::Request::get(uri.as_str()).header(http::header::USER_AGENT, "lb-health-check");
    if let Some(host) = &config.host {
        request = request.header(http::header::HOST, host.as_str());
    }
    let Ok(request) = request.body(Empty::new()) else {
        // An address or path that makes no valid URI can never pass; say so once per check.
        tracing::warn!(backend = addr, path = %config.path, "health check: invalid request URI");
        return false;
    };
    // The body is read to its end inside the same timeout: only a fully read response leaves the
    // connection reusable for the next check, and a backend that sends headers then stalls is not well.
    let check = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        response.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(config.timeout, check).await {
        Ok(Ok(status)) if status == config.expect_status => true,
        Ok(Ok(status)) => {
            tracing::debug!(backend = addr, status, "health check failed");
            false
        }
        Ok(Err(error)) => {
            tracing::debug!(backend = addr, %error, "health check failed");
            false
        }
        Err(_) => {
            tracing::debug!(backend = addr, timeout = ?config.timeout, "health check timed out");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MIN_INTERVAL;
    use serde::Deserialize;
    use std::time::Duration;

    #[test]
    fn fall_fails_in_a_row_take_it_out_and_rise_passes_bring_it_back() {
        let mut s = CheckState::default();
        let (rise, fall) = (2, 3);
        // fail, fail, pass: the pass breaks the run, so no flip; then three fails flip on the third.
        let flips: Vec<Option<bool>> =
            [false, false, true, false, false, false].iter().map(|&p| s.record(p, rise, fall)).collect();
        assert_eq!(flips, [None, None, None, None, None, Some(false)]);
        assert!(!s.healthy);
        // pass, fail, pass, pass: the fail breaks the first run; the second run of two flips back.
        let flips: Vec<Option<bool>> =
            [true, false, true, true].iter().map(|&p| s.record(p, rise, fall)).collect();
        assert_eq!(flips, [None, None, None, Some(true)]);
        assert!(s.healthy);
    }

    #[test]
    fn thresholds_of_zero_act_as_one() {
        let mut s = CheckState::default();
        assert_eq!(s.record(false, 0, 0), Some(false));
        assert_eq!(s.record(true, 0, 0), Some(true));
    }

    #[test]
    fn jitter_stays_within_the_stated_fraction() {
        let c = HealthCheckConfig { interval: Duration::from_secs(2), jitter: 0.1, ..Default::default() };
        assert_eq!(c.jittered_interval(0.0), Duration::from_millis(1800));
        assert_eq!(c.jittered_interval(0.5), Duration::from_secs(2));
        assert!(c.jittered_interval(0.999_999) <= Duration::from_millis(2200));
        let none = HealthCheckConfig { jitter: 0.0, ..c.clone() };
        assert_eq!(none.jittered_interval(0.7), Duration::from_secs(2));
        let zero = HealthCheckConfig { interval: Duration::ZERO, ..c };
        assert_eq!(zero.jittered_interval(0.5), MIN_INTERVAL);
    }

    #[test]
    fn config_defaults_and_parsing() {
        #[derive(Deserialize)]
        struct Wrap {
            h: HealthCheckConfig,
        }
        let w: Wrap =
            toml::from_str("[h]\ninterval = \"100ms\"\nfall = 2\nhost = \"app.local\"").expect("valid");
        assert_eq!(w.h.interval, Duration::from_millis(100));
        assert_eq!(w.h.fall, 2);
        assert_eq!(w.h.rise, 2, "default");
        assert_eq!(w.h.path, "/health", "default");
        assert_eq!(w.h.host.as_deref(), Some("app.local"));
        assert!(toml::from_str::<Wrap>("[h]\nunhealthy_threshold = 2").is_err());
    }
}
