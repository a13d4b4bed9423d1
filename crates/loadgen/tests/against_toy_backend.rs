//! loadgen against a real toy backend on 127.0.0.1: counts, pacing, and no coordinated omission.

use std::time::Duration;

use loadgen::{LoadSpec, Mode, run};
use toy_backend::{Knobs, start_many};

async fn backend() -> toy_backend::Backend {
    let mut backends = start_many(1, Knobs::default()).await.unwrap_or_else(|e| panic!("toy backend: {e}"));
    backends.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_match_what_the_backend_saw() {
    let b = backend().await;
    let mut spec = LoadSpec::new(b.addr());
    spec.mode = Mode::Closed { connections: 8 };
    spec.duration = Duration::from_millis(500);
    let report = run(spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.requests > 100, "{report:?}");
    assert_eq!(report.errors, 0);
    assert_eq!(report.status_counts.get(&200).copied(), Some(report.requests));
    // Every request the generator counts was answered, and it waits for the last answers before
    // returning, so the backend saw exactly as many.
    assert_eq!(b.requests(), report.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keepalive_opens_a_connection_per_request_and_still_counts_right() {
    let b = backend().await;
    let mut spec = LoadSpec::new(b.addr());
    spec.mode = Mode::Closed { connections: 2 };
    spec.duration = Duration::from_millis(300);
    spec.keep_alive = false;
    let report = run(spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.requests > 10 && report.errors == 0, "{report:?}");
    assert_eq!(b.requests(), report.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_rate_asked() {
    let b = backend().await;
    let mut spec = LoadSpec::new(b.addr());
    // 500 requests/s for 2 s: 1,000 requests, +-10%.
    spec.mode = Mode::Open { rate_per_sec: 500.0, connections: 4 };
    spec.duration = Duration::from_secs(2);
    spec.threads = 2;
    let report = run(spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert!((900..=1_100).contains(&report.requests), "{report:?}");
    assert_eq!((report.errors, report.missed), (0, 0));
    assert_eq!(b.requests(), report.requests);
}

/// One connection, a backend that takes 200 ms, requests due every 20 ms (50/s) for 2 s. The connection
/// can carry 5 requests/s, so request k (due at 20k ms) is sent when the previous one ends, at about
/// 200k ms, and answered 200 ms later: latency from its due time about 180k + 200 ms. Over the ~10
/// requests sent the latencies climb 0.2, 0.38, 0.56 ... 1.8 s. A generator that measured from the
/// actual send time would report 200 ms for every one of them: that is coordinated omission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_counts_the_queue_behind_a_stall() {
    let b = backend().await;
    b.set_latency("fixed:200ms".parse().unwrap_or_else(|e| panic!("{e}")));
    let mut spec = LoadSpec::new(b.addr());
    spec.mode = Mode::Open { rate_per_sec: 50.0, connections: 1 };
    spec.duration = Duration::from_secs(2);
    let report = run(spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert!((9..=11).contains(&report.requests), "{report:?}");
    let p50 = report.percentile(50.0);
    let p99 = report.percentile(99.0);
    assert!(p50 > Duration::from_millis(700), "p50 {p50:?}");
    assert!(p99 > Duration::from_millis(1_500), "p99 {p99:?}: should include the wait from the due time");
    // About 100 were due; the ~90 never sent are reported, not hidden.
    assert!(report.missed >= 85, "{report:?}");
}

#[tokio::test]
async fn a_refused_port_counts_errors_without_spinning() {
    // Bind and drop a listener to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut spec = LoadSpec::new(addr);
    spec.mode = Mode::Closed { connections: 1 };
    spec.duration = Duration::from_millis(200);
    let report = run(spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.requests, 0);
    // One try per 10 ms pause: about 20, never thousands.
    assert!((1..=40).contains(&report.errors), "{report:?}");
}

#[tokio::test]
async fn bad_specs_are_refused() {
    let mut spec = LoadSpec::new("127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}")));
    spec.mode = Mode::Open { rate_per_sec: 0.0, connections: 1 };
    assert!(run(spec.clone()).await.is_err());
    spec.mode = Mode::Closed { connections: 0 };
    assert!(run(spec).await.is_err());
}
