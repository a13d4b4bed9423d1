//! Envoy on every committed config: each validates, and traffic through it reaches the toy backends
//! as its strategy says; its active health check (GET /health every second, thresholds 2) takes an
//! unhealthy backend out and brings it back.
//!
//! Run with `cargo nextest run -p lab --test envoy` (needs envoy: `bash scripts/install-balancers.sh`).

use std::time::Duration;

use lab::Balancer::Envoy;
use lab::testing::{Lab, validates};

/// Starts Envoy on `config` after validating it, and waits until every host has passed its first
/// health check (Envoy opens its listener before that).
async fn start(config: &str, test: &str) -> Option<Lab> {
    if !validates(Envoy, config, test).await {
        return None;
    }
    let lab = Lab::start(Envoy, config, test).await?;
    Some(lab)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    let Some(lab) = start("round-robin.yaml", "envoy::round_robin_spreads_evenly").await else { return };
    lab.check(lab.wait_all_backends(Duration::from_secs(10)).await, "not all hosts healthy");
    // One worker (--concurrency 1) and one cursor: 300 requests are 100 each.
    lab.assert_even_spread(300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_3_1_1() {
    let Some(lab) = start("weighted.yaml", "envoy::weighted_follows_3_1_1").await else { return };
    lab.check(lab.wait_all_backends(Duration::from_secs(10)).await, "not all hosts healthy");
    // Earliest-deadline-first scheduling: backend-1 3 of every 5 requests.
    lab.assert_weighted_3_1_1(500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_full_scan_avoids_a_slow_backend() {
    let Some(lab) = start("least-conn.yaml", "envoy::least_request_full_scan_avoids_a_slow_backend").await
    else {
        return;
    };
    lab.check(lab.wait_all_backends(Duration::from_secs(10)).await, "not all hosts healthy");
    lab.assert_avoids_slow_backend().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_avoids_a_slow_backend() {
    let Some(lab) = start("power-of-two.yaml", "envoy::power_of_two_avoids_a_slow_backend").await else {
        return;
    };
    lab.check(lab.wait_all_backends(Duration::from_secs(10)).await, "not all hosts healthy");
    lab.assert_avoids_slow_backend().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_is_sticky_per_user() {
    let Some(lab) = start("ring-hash.yaml", "envoy::ring_hash_is_sticky_per_user").await else { return };
    lab.check(lab.wait_all_backends(Duration::from_secs(10)).await, "not all hosts healthy");
    lab.assert_sticky_by_user().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_is_sticky_per_user() {
    let Some(lab) = start("maglev.yaml", "envoy::maglev_is_sticky_per_user").await else { return };
    lab.check(lab.wait_all_backends(Duration::from_secs(10)).await, "not all hosts healthy");
    lab.assert_sticky_by_user().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_backend_leaves_and_returns() {
    let Some(lab) =
        Lab::start(Envoy, "round-robin.yaml", "envoy::unhealthy_backend_leaves_and_returns").await
    else {
        return;
    };
    let times = lab.assert_active_health().await;
    eprintln!("envoy: backend-2 out after {:?}, back after {:?}", times.out, times.back);
}
