//! loadgen against `wrk` on the same toy backend: closed loop, same connections, same duration.
//!
//! Not a benchmark (benchmarks print figures: see CONTRIBUTING.md) but a sanity check that the generator is
//! not the bottleneck it is meant to measure: it must reach at least half of wrk's throughput. Both
//! figures are printed (`cargo test -p loadgen --test versus_wrk -- --nocapture`). Skipped with a message
//! when `wrk` is not installed, unless `LB_REQUIRE_EXTERNAL=1` (CI), where a missing wrk fails.
//!
//! The ratio is only checked in a release build (`cargo test --release -p loadgen --test versus_wrk`): in a
//! debug build the generator's own hyper code is unoptimised and shares the process with the backend.

use std::process::Command;
use std::time::Duration;

use loadgen::{LoadSpec, Mode, run};
use toy_backend::{Knobs, start_many};

fn wrk_rps(url: &str, connections: usize, secs: u64) -> Option<f64> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s"), url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_is_within_reason_of_wrk() {
    if Command::new("wrk").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("LB_REQUIRE_EXTERNAL").is_none(),
            "wrk is required (LB_REQUIRE_EXTERNAL is set)"
        );
        eprintln!("SKIPPED: wrk is not installed (apt-get install wrk)");
        return;
    }
    let backends = start_many(1, Knobs::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let b = &backends[0];
    let url = format!("http://{}/", b.addr());
    let connections = 16;
    let wrk = tokio::task::spawn_blocking(move || wrk_rps(&url, connections, 2))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("could not run wrk or read its Requests/sec"));

    let mut spec = LoadSpec::new(b.addr());
    spec.mode = Mode::Closed { connections };
    spec.duration = Duration::from_secs(2);
    let ours = run(spec).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "wrk: {wrk:.0} requests/s; loadgen: {:.0} requests/s ({:.0}%)",
        ours.rps(),
        ours.rps() / wrk * 100.0
    );
    assert_eq!(ours.errors, 0);
    if cfg!(debug_assertions) {
        // Unoptimised hyper is several times slower than the same code optimised, and here it also shares
        // the process with the (equally unoptimised) backend, while wrk is a separate optimised C program:
        // the ratio says nothing about the generator. Measured in release: 88% of wrk (see README).
        eprintln!("debug build: ratio not checked; run with --release to compare the generators");
        assert!(ours.requests > 0);
    } else {
        assert!(ours.rps() >= 0.5 * wrk, "loadgen {:.0} vs wrk {wrk:.0}", ours.rps());
    }
}
