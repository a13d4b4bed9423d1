//! Invariants every algorithm keeps, checked over random fleets through `build()`.
//!
//! Each case draws a fleet (0 to 12 backends, weights 1 to 5, a health per backend, maybe slow start),
//! a set of already-tried backends, a hash key and a time, then asks every algorithm for picks. Whatever
//! the algorithm, a pick is in range, selectable, not already tried, and `None` only when no backend is
//! both selectable and untried. An algorithm whose `build()` fails for these options is skipped, so the
//! file covers each algorithm as soon as it exists.
//!
//! Run with `cargo test -p lb-algorithms --test properties`.

use std::sync::Arc;

use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, Balancer, Explain, Health, PickRequest, SetOptions,
    build,
};
use proptest::prelude::*;

const HEALTHS: [Health; 4] = [Health::Healthy, Health::Unhealthy, Health::Ejected, Health::Draining];

#[derive(Debug, Clone)]
struct Fleet {
    /// (weight, health index) per backend.
    backends: Vec<(u32, usize)>,
    slow_start: bool,
    exclude: Vec<usize>,
    key: Option<u64>,
    now: u64,
    seed: u64,
}

fn fleet() -> impl Strategy<Value = Fleet> {
    (
        prop::collection::vec((1u32..=5, 0usize..4), 0..=12),
        any::<bool>(),
        prop::collection::vec(0usize..14, 0..4),
        prop::option::of(any::<u64>()),
        0u64..2_000,
        any::<u64>(),
    )
        .prop_map(|(backends, slow_start, exclude, key, now, seed)| Fleet {
            backends,
            slow_start,
            exclude,
            key,
            now,
            seed,
        })
}

/// The set described by `f`. Health changes happen at time 0; with slow start (a 1,000 ns window),
/// backends set back to healthy ramp, so picks at `now` < 1,000 see ramping backends.
fn make_set(f: &Fleet) -> Arc<BackendSet> {
    let options = SetOptions { slow_start: f.slow_start.then_some(1_000), ..SetOptions::default() };
    let set = BackendSet::new(
        f.backends.iter().enumerate().map(|(i, &(w, _))| BackendSpec::weighted(format!("10.0.0.{i}:80"), w)),
        options,
    );
    for (i, &(_, h)) in f.backends.iter().enumerate() {
        if h == 0 && i % 2 == 1 {
            // Cycle every other healthy backend through unhealthy so it ramps under slow start.
            set.set_health(i, Health::Unhealthy, 0);
        }
        set.set_health(i, HEALTHS[h], 0);
    }
    set
}

fn balancers(set: &Arc<BackendSet>, seed: u64) -> Vec<Arc<dyn Balancer>> {
    let options = AlgorithmOptions { seed, ..AlgorithmOptions::default() };
    Algorithm::ALL.into_iter().filter_map(|a| build(a, Arc::clone(set), &options).ok()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn picks_are_selectable_untried_and_none_only_when_nothing_is(f in fleet()) {
        let set = make_set(&f);
        let available = (0..set.len()).any(|i| set.is_selectable(i) && !f.exclude.contains(&i));
        for b in balancers(&set, f.seed) {
            // Hold some picks so the load-aware algorithms see varying in-flight counts.
            let mut guards = Vec::new();
            for round in 0..20 {
                let req = PickRequest::new(f.now + round).with_key(f.key).excluding(&f.exclude);
                let mut explain = Explain::default();
                let explain_this = round % 2 == 1;
                let picked = b.pick(&req, explain_this.then_some(&mut explain));
                let a = b.algorithm();
                match picked {
                    Some(i) => {
                        prop_assert!(i < set.len(), "{a}: {i} out of range");
                        prop_assert!(set.is_selectable(i), "{a}: picked unselectable {i}");
                        prop_assert!(!f.exclude.contains(&i), "{a}: picked already-tried {i}");
                        if round % 3 == 0 {
                            guards.extend(set.start(i, f.now));
                        }
                    }
                    None => prop_assert!(!available, "{a}: None although a backend was available"),
                }
                if explain_this && picked.is_some() {
                    prop_assert!(!explain.reason.is_empty(), "{a}: asked to explain, said nothing");
                }
            }
        }
        prop_assert_eq!(set.total_in_flight(), 0, "every guard dropped");
    }

    #[test]
    fn the_same_seed_gives_the_same_picks(f in fleet()) {
        // Two balancers built alike, on two identical sets, pick alike: runs are reproducible.
        let (s1, s2) = (make_set(&f), make_set(&f));
        for (b1, b2) in balancers(&s1, f.seed).into_iter().zip(balancers(&s2, f.seed)) {
            for round in 0..10 {
                let req = PickRequest::new(f.now + round).with_key(f.key).excluding(&f.exclude);
                prop_assert_eq!(b1.pick(&req, None), b2.pick(&req, None), "{}", b1.algorithm());
            }
        }
    }
}

/// Many threads picking, holding and releasing at once: the in-flight counts stay exact.
#[test]
fn concurrent_picks_keep_in_flight_counts_consistent() {
    let set = BackendSet::new(
        (0..8).map(|i| BackendSpec::weighted(format!("b{i}"), 1 + i % 3)),
        SetOptions::default(),
    );
    for b in balancers(&set, 7) {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    let mut held = std::collections::VecDeque::new();
                    let mut picks = 0u64;
                    for k in 0..5_000u64 {
                        let req =
                            PickRequest::new(k).with_key(Some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ t));
                        let Some(i) = b.pick(&req, None) else { continue };
                        picks += 1;
                        if let Some(g) = b.backends().start(i, k) {
                            held.push_back(g);
                        }
                        // Keep up to 16 requests in flight per thread, released oldest first.
                        if held.len() > 16
                            && let Some(g) = held.pop_front()
                        {
                            g.record_latency(k + 1_000, 10_000_000_000);
                        }
                    }
                    picks
                })
            })
            .collect();
        let mut picks = 0;
        for h in handles {
            picks += h.join().unwrap_or(0);
        }
        let a = b.algorithm();
        assert_eq!(picks, 20_000, "{a}: every pick found a backend");
        assert!(set.backends().iter().all(|x| x.in_flight() == 0), "{a}: a count leaked");
        assert_eq!(set.total_in_flight(), 0, "{a}");
    }
}

/// Every algorithm that weighs backends (all but the hashing ones, which follow keys) honours weights
/// over many independent picks within 2 percentage points.
#[test]
fn weights_are_respected_by_the_weighing_algorithms() {
    for a in [Algorithm::WeightedRoundRobin, Algorithm::Random] {
        let set = BackendSet::new(
            [BackendSpec::weighted("a", 1), BackendSpec::weighted("b", 2), BackendSpec::weighted("c", 5)],
            SetOptions::default(),
        );
        let Ok(b) = build(a, set, &AlgorithmOptions::default()) else { continue };
        let mut counts = [0u32; 3];
        for _ in 0..80_000 {
            if let Some(i) = b.pick(&PickRequest::new(0), None) {
                counts[i] += 1;
            }
        }
        for (c, w) in counts.iter().zip([1.0, 2.0, 5.0]) {
            // Expected 10,000 / 20,000 / 50,000; +-1,600 is 2% of the picks and over 10 sigma.
            assert!((f64::from(*c) - 10_000.0 * w).abs() <= 1_600.0, "{a}: {counts:?}");
        }
    }
}
