//! HAProxy on every committed config: each validates, and traffic through it reaches the toy
//! backends as its strategy says; its active health check (GET /health every second, fall 2, rise 2)
//! takes an unhealthy backend out and brings it back.
//!
//! Run with `cargo nextest run -p lab --test haproxy` (needs haproxy: `bash scripts/install-balancers.sh`).

use lab::Balancer::Haproxy;
use lab::testing::{Lab, validates};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    let test = "haproxy::round_robin_spreads_evenly";
    if !validates(Haproxy, "round-robin.cfg", test).await {
        return;
    }
    let Some(lab) = Lab::start(Haproxy, "round-robin.cfg", test).await else { return };
    // One thread, equal weights: HAProxy cycles through the three servers, so 300 requests are 100 each.
    lab.assert_even_spread(300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_3_1_1() {
    let test = "haproxy::weighted_follows_3_1_1";
    if !validates(Haproxy, "weighted.cfg", test).await {
        return;
    }
    let Some(lab) = Lab::start(Haproxy, "weighted.cfg", test).await else { return };
    // roundrobin with weights 3:1:1 interleaves: backend-1 3 of every 5 requests.
    lab.assert_weighted_3_1_1(500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_a_slow_backend() {
    let test = "haproxy::least_conn_avoids_a_slow_backend";
    if !validates(Haproxy, "least-conn.cfg", test).await {
        return;
    }
    let Some(lab) = Lab::start(Haproxy, "least-conn.cfg", test).await else { return };
    lab.assert_avoids_slow_backend().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_avoids_a_slow_backend() {
    let test = "haproxy::power_of_two_avoids_a_slow_backend";
    if !validates(Haproxy, "power-of-two.cfg", test).await {
        return;
    }
    let Some(lab) = Lab::start(Haproxy, "power-of-two.cfg", test).await else { return };
    lab.assert_avoids_slow_backend().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_header_is_sticky_per_user() {
    let test = "haproxy::hash_header_is_sticky_per_user";
    if !validates(Haproxy, "hash-header.cfg", test).await {
        return;
    }
    let Some(lab) = Lab::start(Haproxy, "hash-header.cfg", test).await else { return };
    lab.assert_sticky_by_user().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_backend_leaves_and_returns() {
    let test = "haproxy::unhealthy_backend_leaves_and_returns";
    let Some(lab) = Lab::start(Haproxy, "round-robin.cfg", test).await else { return };
    let times = lab.assert_active_health().await;
    eprintln!("haproxy: backend-2 out after {:?}, back after {:?}", times.out, times.back);
}
