//! A tiny live scenario: three toy backends, one of them slow, through the real `lb` with round robin
//! and peak EWMA, about a second each.

use lb_algorithms::Algorithm;
use lb_compare::live::{self, LiveOptions};
use lb_compare::scenario::Scenario;

const TINY: &str = r#"
name = "tiny-one-slow"
description = "Three backends (fixed 2 ms); backend 0 answers in 40 ms for the whole run; 200 requests/s."
duration = "1200ms"

[load]
rate = 200.0

[[backend]]
count = 3
latency = "fixed:2ms"

[[event]]
at = "0s"
backend = 0
latency = "fixed:40ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_add_up_and_peak_ewma_sends_the_slow_backend_less_than_round_robin() {
    let s = Scenario::parse("tiny", TINY).unwrap_or_else(|e| panic!("{e}"));
    let options = LiveOptions { seed: 1, threshold: 1_000_000_000, connections: 64 };
    let report = live::run_all(&s, &[Algorithm::RoundRobin, Algorithm::PeakEwma], options, |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.results.len(), 2);
    for r in &report.results {
        // 200/s for 1.2 s = 240 due; a loaded machine may miss a few at the end, never many.
        assert!((200..=240).contains(&r.requests), "{}: {} requests", r.algorithm, r.requests);
        assert_eq!(r.errors, 0, "{}", r.algorithm);
        // Every request reached exactly one backend, counted by the backends themselves.
        assert_eq!(
            r.per_backend.iter().sum::<u64>(),
            r.requests + r.retries,
            "{}: {:?}",
            r.algorithm,
            r.per_backend
        );
    }
    let (rr, ewma) = (&report.results[0], &report.results[1]);
    // Round robin: each backend a third, whatever its speed (240 / 3 = 80, +-1 for the cut at the end).
    let third = rr.requests as f64 / 3.0;
    assert!((rr.per_backend[0] as f64 - third).abs() <= 2.0, "round robin {:?}", rr.per_backend);
    // Peak EWMA sees 40 ms against 2 ms after the first answers and sends the slow one far less; half
    // of round robin's share is a wide margin (in practice it gets a handful).
    assert!(
        ewma.per_backend[0] * 2 < rr.per_backend[0],
        "peak-ewma {:?} vs round robin {:?}",
        ewma.per_backend,
        rr.per_backend
    );
}
