//! The demo, run in-process against real toy backends on loopback.

use std::time::Duration;

use client_side::{RunConfig, run};
use lb_algorithms::Algorithm;
use toy_backend::Latency;

#[tokio::test]
async fn round_robin_gives_every_instance_exactly_a_third() {
    let config = RunConfig { algorithm: Algorithm::RoundRobin, requests: 300, ..RunConfig::default() };
    let report = run(config).await.unwrap_or_else(|e| panic!("{e}"));
    // 300 tickets over 3 healthy instances: each ticket is handed out once, so 100 each, whatever the
    // interleaving of the 8 workers.
    assert_eq!(report.counts, vec![100, 100, 100]);
    assert_eq!(report.names, ["backend-1", "backend-2", "backend-3"]);
}

#[tokio::test]
async fn round_robin_keeps_feeding_a_slow_instance_its_share() {
    let config = RunConfig {
        algorithm: Algorithm::RoundRobin,
        requests: 60,
        slow: Some(2),
        slow_latency: Latency::Fixed(Duration::from_millis(20)),
        ..RunConfig::default()
    };
    let report = run(config).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.counts, vec![20, 20, 20]);
    assert!(report.mean_latency[1] >= Duration::from_millis(20), "{report}");
}

#[tokio::test]
async fn peak_ewma_sends_the_slow_instance_clearly_less() {
    let config = RunConfig {
        algorithm: Algorithm::PeakEwma,
        requests: 300,
        slow: Some(2),
        slow_latency: Latency::Fixed(Duration::from_millis(50)),
        ..RunConfig::default()
    };
    let report = run(config).await.unwrap_or_else(|e| panic!("{e}"));
    // Its fair share would be 100. The first 8 calls go out before anything has answered, so it gets
    // a few (5 in our runs); once it has answered, its cost (~50 ms x in-flight) is ~50x a fast
    // instance's and it loses every comparison with one. Allow up to 10%.
    assert!(report.counts[1] <= 30, "{report}");
    assert_eq!(report.counts.iter().sum::<usize>(), 300);
}

#[tokio::test]
async fn least_connections_also_avoids_the_slow_instance_under_concurrency() {
    let config = RunConfig {
        algorithm: Algorithm::LeastConnections,
        requests: 300,
        slow: Some(2),
        slow_latency: Latency::Fixed(Duration::from_millis(50)),
        ..RunConfig::default()
    };
    let report = run(config).await.unwrap_or_else(|e| panic!("{e}"));
    // Calls pile up at the slow instance (each holds its slot for 50 ms) while the fast ones free theirs
    // in well under a millisecond, so it is rarely the least loaded.
    assert!(report.counts[1] <= 50, "{report}");
}

#[tokio::test]
async fn hashing_sends_each_user_to_one_instance() {
    let config =
        RunConfig { algorithm: Algorithm::Maglev, requests: 90, concurrency: 1, ..RunConfig::default() };
    let report = run(config).await.unwrap_or_else(|e| panic!("{e}"));
    // 30 users x 3 calls: each user sticks to one instance, so every count is a multiple of 3.
    assert!(report.counts.iter().all(|c| c % 3 == 0), "{report}");
    assert_eq!(report.counts.iter().sum::<usize>(), 90);
}
