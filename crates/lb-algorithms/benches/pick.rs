//! One pick, for every algorithm, at 3, 100, 1,000 and 10,000 backends, on one thread and with two
//! threads picking from the same balancer at once; and the table rebuilds of ring hash and Maglev.
//!
//! Run with `cargo bench -p lb-algorithms --bench pick` (add a filter such as `-- 1000/` to narrow it).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, PickRequest, SetOptions, build, hash_bytes,
};

const SIZES: [usize; 4] = [3, 100, 1_000, 10_000];

fn set(n: usize) -> Arc<BackendSet> {
    BackendSet::new(
        (0..n).map(|i| {
            BackendSpec::weighted(
                format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255),
                1 + (i % 3) as u32,
            )
        }),
        SetOptions::default(),
    )
}

/// Some in-flight load, so load-aware algorithms compare real numbers.
fn load(set: &BackendSet) -> Vec<lb_algorithms::InFlightGuard> {
    (0..set.len()).step_by(3).filter_map(|i| set.start(i, 1)).collect()
}

fn keys() -> Vec<u64> {
    (0..1024u32).map(|k| hash_bytes(format!("user-{k}").as_bytes())).collect()
}

fn single_thread(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick");
    for algorithm in Algorithm::ALL {
        for n in SIZES {
            let set = set(n);
            let _guards = load(&set);
            let Ok(balancer) = build(algorithm, set, &AlgorithmOptions::default()) else {
                continue;
            };
            let mut k = 0usize;
            group.bench_with_input(BenchmarkId::new(algorithm.name(), n), &n, |b, _| {
                b.iter(|| {
                    k = (k + 1) & 1023;
                    let req = PickRequest::new(1_000).with_key(Some(keys[k]));
                    black_box(balancer.pick(black_box(&req), None))
                })
            });
        }
    }
    group.finish();
}

/// Two threads picking from one balancer: the second thread runs flat out in the background while
/// criterion times the first, so shared atomics (counters, RNG state) bounce between the cores.
fn two_threads(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick-contended");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    for algorithm in Algorithm::ALL {
        for n in [3, 1_000] {
            let set = set(n);
            let _guards = load(&set);
            let Ok(balancer) = build(algorithm, set, &AlgorithmOptions::default()) else {
                continue;
            };
            let stop = Arc::new(AtomicBool::new(false));
            let rival = {
                let (balancer, stop) = (Arc::clone(&balancer), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        k = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        black_box(balancer.pick(&PickRequest::new(1_000).with_key(Some(k)), None));
                    }
                })
            };
            let mut k = 0usize;
            group.bench_with_input(BenchmarkId::new(algorithm.name(), n), &n, |b, _| {
                b.iter(|| {
                    k = (k + 1) & 1023;
                    black_box(balancer.pick(&PickRequest::new(1_000).with_key(Some(keys[k])), None))
                })
            });
            stop.store(true, Ordering::Relaxed);
            let _ = rival.join();
        }
    }
    group.finish();
}

fn rebuilds(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(10);
    for algorithm in [Algorithm::RingHash, Algorithm::Maglev, Algorithm::BoundedLoad] {
        let set = set(1_000);
        if build(algorithm, set.clone(), &AlgorithmOptions::default()).is_err() {
            continue;
        }
        group.bench_function(BenchmarkId::new(algorithm.name(), 1_000), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(build(algorithm, set.clone(), &AlgorithmOptions::default()).ok());
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, single_thread, two_threads, rebuilds);
criterion_main!(benches);
