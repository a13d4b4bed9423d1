//! nginx on every committed config: each validates, and traffic through it reaches the toy backends
//! as its strategy says. nginx OSS has no active health checks: the last test kills a backend and
//! checks that the passive check (max_fails, proxy_next_upstream) hides it from clients.
//!
//! Run with `cargo nextest run -p lab --test nginx` (needs nginx: `bash scripts/install-balancers.sh`).

use std::time::Duration;

use lab::Balancer::Nginx;
use lab::testing::{Lab, validates};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    let test = "nginx::round_robin_spreads_evenly";
    if !validates(Nginx, "round-robin.conf", test).await {
        return;
    }
    let Some(lab) = Lab::start(Nginx, "round-robin.conf", test).await else { return };
    // One worker and no failures: nginx cycles 1,2,3 exactly, so 300 requests are 100 each.
    lab.assert_even_spread(300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_3_1_1() {
    let test = "nginx::weighted_follows_3_1_1";
    if !validates(Nginx, "weighted.conf", test).await {
        return;
    }
    let Some(lab) = Lab::start(Nginx, "weighted.conf", test).await else { return };
    // Smooth weighted round robin: every 5 requests are 1,2,1,3,1, so 500 are 300/100/100.
    lab.assert_weighted_3_1_1(500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_a_slow_backend() {
    let test = "nginx::least_conn_avoids_a_slow_backend";
    if !validates(Nginx, "least-conn.conf", test).await {
        return;
    }
    let Some(lab) = Lab::start(Nginx, "least-conn.conf", test).await else { return };
    lab.assert_avoids_slow_backend().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_avoids_a_slow_backend() {
    let test = "nginx::power_of_two_avoids_a_slow_backend";
    if !validates(Nginx, "power-of-two.conf", test).await {
        return;
    }
    let Some(lab) = Lab::start(Nginx, "power-of-two.conf", test).await else { return };
    lab.assert_avoids_slow_backend().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_header_is_sticky_per_user() {
    let test = "nginx::hash_header_is_sticky_per_user";
    if !validates(Nginx, "hash-header.conf", test).await {
        return;
    }
    let Some(lab) = Lab::start(Nginx, "hash-header.conf", test).await else { return };
    lab.assert_sticky_by_user().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_skipped_passively() {
    let test = "nginx::killed_backend_is_skipped_passively";
    let Some(lab) = Lab::start(Nginx, "round-robin.conf", test).await else { return };
    lab.check(lab.wait_all_backends(Duration::from_secs(5)).await, "not all backends answer at start");
    lab.backends[2].kill();
    // Every request still succeeds: a refused connection to backend-3 is retried on the next server
    // (proxy_next_upstream error), and after max_fails=2 nginx stops trying backend-3 for 5 s.
    let tally = lab.send(60, None).await;
    lab.check(tally.failures() == 0 && tally.get("backend-3") == 0, format!("after kill: {tally:?}"));
    lab.check(
        tally.get("backend-1") >= 20 && tally.get("backend-2") >= 20,
        format!("survivors uneven: {tally:?}"),
    );
}
