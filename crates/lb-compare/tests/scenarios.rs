//! The simulator on the shipped scenarios and on small hand-checkable ones.

use lb_algorithms::Algorithm;
use lb_compare::scenario::Scenario;
use lb_compare::sim::{self, AlgorithmReport, RunOptions};
use proptest::prelude::*;

const SECOND: u64 = 1_000_000_000;

fn load(file: &str) -> Scenario {
    let path = format!("{}/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Scenario::parse(file, &text).unwrap_or_else(|e| panic!("{e}"))
}

fn run(s: &Scenario, a: Algorithm, seed: u64) -> AlgorithmReport {
    sim::run(s, a, RunOptions { seed, threshold: SECOND }, |_| {}).unwrap_or_else(|e| panic!("{a}: {e}"))
}

#[test]
fn every_shipped_scenario_runs_every_algorithm_and_releases_every_guard() {
    for file in [
        "homogeneous.toml",
        "one-slow.toml",
        "heterogeneous.toml",
        "backend-dies.toml",
        "burst.toml",
        "linkerd-beyond-round-robin.toml",
    ] {
        let s = load(file);
        let report = sim::run_all(&s, &Algorithm::ALL, RunOptions { seed: 1, threshold: SECOND }, |_, _| {});
        assert!(report.skipped.is_empty(), "{file}: {:?}", report.skipped);
        for r in &report.results {
            assert_eq!(r.in_flight_at_end, 0, "{file} {}: a guard leaked", r.algorithm);
            assert!(r.requests > 0 && r.errors <= r.requests, "{file} {}", r.algorithm);
            // Every attempt is counted on one backend: one first attempt per request plus the retries (no
            // shipped scenario ever finds no backend to pick, which would make a request with no attempt).
            assert_eq!(r.per_backend.iter().sum::<u64>(), r.requests + r.retries, "{file} {}", r.algorithm);
        }
    }
}

/// Linkerd, "Beyond Round Robin: Load Balancing for Latency" (2016): with one of 11 backends taking 2 s
/// for 30 s of 60, round robin sends that backend 1/11 of the traffic, so about 1/11 x 30/60 = 4.5% of all
/// requests take 2 s. Least-connections sees the slow backend's requests pile up in flight and stops
/// sending to it; peak EWMA sees the 2 s latency after one response. The blog reported the same order.
#[test]
fn linkerd_beyond_round_robin() {
    let s = load("linkerd-beyond-round-robin.toml");
    let rr = run(&s, Algorithm::RoundRobin, 1);
    let lc = run(&s, Algorithm::LeastConnections, 1);
    let p2c = run(&s, Algorithm::PowerOfTwo, 1);
    let ewma = run(&s, Algorithm::PeakEwma, 1);
    // 4.5% expected; the Poisson arrivals make it 4.4% to 4.7%.
    assert!((0.04..0.05).contains(&rr.above_threshold), "round robin {}", rr.above_threshold);
    // Adaptive algorithms: at least ten times fewer slow requests than round robin.
    for r in [&lc, &p2c, &ewma] {
        assert!(r.above_threshold < rr.above_threshold / 10.0, "{} {}", r.algorithm, r.above_threshold);
        assert!(r.p99_ms < 200.0, "{} p99 {}", r.algorithm, r.p99_ms);
    }
    assert!(
        ewma.above_threshold <= lc.above_threshold,
        "peak-ewma {} vs least-connections {}",
        ewma.above_threshold,
        lc.above_threshold
    );
    assert!(rr.p99_ms > 1_900.0, "round robin's p99 is a 2 s request: {}", rr.p99_ms);
}

/// Two backends that can each serve 80 requests/s get 150/s from round robin: their queues grow for the
/// whole minute, and a fifth of all requests wait for seconds. Load-aware algorithms send them less.
#[test]
fn adaptive_algorithms_route_around_slow_machines() {
    let s = load("heterogeneous.toml");
    let rr = run(&s, Algorithm::RoundRobin, 1);
    assert!(rr.p99_ms > 10_000.0 && rr.above_threshold > 0.1, "{rr:?}");
    for a in [Algorithm::LeastConnections, Algorithm::PowerOfTwo, Algorithm::PeakEwma] {
        let r = run(&s, a, 1);
        assert!(r.p99_ms < 500.0 && r.above_threshold < 0.001, "{r:?}");
        // The two old backends (indices 8, 9) get well under a tenth each.
        assert!(r.per_backend[8] * 20 < r.requests, "{r:?}");
    }
}

/// Round robin skips a dead backend by walking to the next one, so the neighbour takes both shares until
/// the health check marks it down ("skipping is not quite fair", round_robin.rs).
#[test]
fn a_dead_backends_share_lands_on_its_round_robin_neighbour() {
    let s = load("backend-dies.toml");
    let rr = run(&s, Algorithm::RoundRobin, 1);
    assert_eq!(rr.errors, 0, "every failed attempt was retried on a live backend");
    assert!(rr.per_backend[3] as f64 > 1.4 * rr.per_backend[0] as f64, "{:?}", rr.per_backend);
}

#[test]
fn same_seed_same_run() {
    let s = load("one-slow.toml");
    let (a, b) = (run(&s, Algorithm::PowerOfTwo, 5), run(&s, Algorithm::PowerOfTwo, 5));
    assert_eq!((a.p99_ms, a.per_backend.clone()), (b.p99_ms, b.per_backend.clone()));
}

#[test]
fn one_client_one_backend_is_exact() {
    // One closed-loop client, one backend answering in exactly 10 ms: requests go out at 0, 10, ..., 990 ms
    // and the one due at 1,000 ms is not sent (the run is over): 100 requests of exactly 10 ms.
    let s = Scenario::parse(
        "exact",
        r#"
        duration = "1s"
        [load]
        clients = 1
        [[backend]]
        latency = "fixed:10ms"
        capacity = 1
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = run(&s, Algorithm::RoundRobin, 1);
    assert_eq!((r.requests, r.errors, r.per_backend.as_slice()), (100, 0, [100].as_slice()));
    // The histogram keeps 3 significant digits: 10 ms reads back as 10.007 ms at most.
    assert!((r.p50_ms - 10.0).abs() < 0.01 && (r.max_ms - 10.0).abs() < 0.01, "{r:?}");
}

#[test]
fn a_dead_backend_fails_after_the_connect_timeout() {
    // The only backend is dead from the start: every request waits the 250 ms connect timeout and fails.
    let s = Scenario::parse(
        "dead",
        r#"
        duration = "1s"
        connect_timeout = "250ms"
        [load]
        clients = 2
        [[backend]]
        latency = "fixed:1ms"
        [[event]]
        at = "0s"
        backend = 0
        dies = true
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = run(&s, Algorithm::LeastConnections, 1);
    // Each client sends at ~0, 250, 500, 750 ms: 8 requests, all errors, all 250 ms.
    assert_eq!((r.requests, r.errors), (8, 8));
    assert!((r.p50_ms - 250.0).abs() < 0.5 && (r.max_ms - 250.0).abs() < 0.5, "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the fleet and the load, every guard is released and no request is lost.
    #[test]
    fn no_request_lost_no_guard_leaked(
        seed in 0u64..1_000,
        backends in 1usize..6,
        capacity in 0usize..4,
        rate in 50.0f64..400.0,
        attempts in 1u32..3,
        dies in proptest::option::of(0usize..6),
        algorithm in proptest::sample::select(Algorithm::ALL.to_vec()),
    ) {
        let dies = dies.filter(|&d| d < backends)
            .map(|d| format!("[[event]]\nat = \"500ms\"\nbackend = {d}\ndies = true\ndetect_after = \"200ms\"\n"))
            .unwrap_or_default();
        let text = format!(
            "duration = \"2s\"\ntimeout = \"300ms\"\nattempts = {attempts}\nconnect_timeout = \"100ms\"\n\
             [load]\nrate = {rate}\n[[backend]]\ncount = {backends}\nlatency = \"exp:20ms\"\ncapacity = {capacity}\n{dies}"
        );
        let s = Scenario::parse("prop", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let r = run(&s, algorithm, seed);
        prop_assert_eq!(r.in_flight_at_end, 0);
        prop_assert!(r.errors <= r.requests);
        prop_assert!(r.per_backend.iter().sum::<u64>() >= r.requests - r.errors);
        prop_assert!(r.per_backend.iter().sum::<u64>() <= r.requests * u64::from(attempts));
    }
}
