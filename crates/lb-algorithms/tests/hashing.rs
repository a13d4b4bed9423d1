//! The hashing algorithms against the claims in their docs: how evenly they spread keys, and how many
//! keys move when a backend is removed or added.
//!
//! Run with `cargo test -p lb-algorithms --test hashing -- --nocapture` to see the measured figures.
//!
//! A removal or addition is what the proxy does: a new `BackendSet` from the changed list and a new
//! balancer over it. Indices shift when a backend leaves, so picks are compared by address.

use std::sync::Arc;

use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, Balancer, BoundedLoad, Maglev, PickRequest,
    SetOptions, build, hash_bytes,
};

const BACKENDS: usize = 100;
const KEYS: u32 = 100_000;

fn addr(i: usize) -> String {
    format!("10.0.{}.{}:8080", i / 256, i % 256)
}

fn specs(n: usize) -> Vec<BackendSpec> {
    (0..n).map(|i| BackendSpec::new(addr(i))).collect()
}

fn keys() -> Vec<u64> {
    (0..KEYS).map(|k| hash_bytes(format!("key-{k}").as_bytes())).collect()
}

fn balancer(algorithm: Algorithm, set: Arc<BackendSet>) -> Arc<dyn Balancer> {
    build(algorithm, set, &AlgorithmOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The address each key goes to.
fn assign(b: &dyn Balancer, keys: &[u64]) -> Vec<String> {
    keys.iter()
        .map(|&k| {
            let i = b.pick(&PickRequest::new(0).with_key(Some(k)), None).unwrap_or(usize::MAX);
            b.backends().get(i).map_or_else(|| "none".to_string(), |x| x.addr().to_string())
        })
        .collect()
}

/// Coefficient of variation (standard deviation over mean) and max over mean of the keys per backend.
fn spread(b: &dyn Balancer, keys: &[u64]) -> (f64, f64) {
    let mut counts = vec![0f64; b.backends().len()];
    for &k in keys {
        if let Some(i) = b.pick(&PickRequest::new(0).with_key(Some(k)), None) {
            counts[i] += 1.0;
        }
    }
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / counts.len() as f64;
    let max = counts.iter().copied().fold(0.0, f64::max);
    (var.sqrt() / mean, max / mean)
}

#[test]
fn balance_across_100_backends() {
    let keys = keys();
    // 100,000 keys over 100 backends is 1,000 a backend: sampling alone gives a CV of 1/sqrt(1000) =
    // 0.032. Maglev's table and rendezvous add nothing to it; the ring adds the unevenness of its arcs,
    // about 1/sqrt(160) = 0.079, for ~0.085 in all.
    for (algorithm, max_cv, max_peak) in [
        (Algorithm::RingHash, 0.12, 1.35),
        (Algorithm::Maglev, 0.05, 1.15),
        (Algorithm::Rendezvous, 0.05, 1.15),
    ] {
        let b = balancer(algorithm, BackendSet::new(specs(BACKENDS), SetOptions::default()));
        let (cv, peak) = spread(b.as_ref(), &keys);
        eprintln!("{algorithm:>11}: coefficient of variation {cv:.3}, max/mean {peak:.3}");
        assert!(cv < max_cv, "{algorithm}: cv {cv}");
        assert!(peak < max_peak, "{algorithm}: max/mean {peak}");
    }
}

#[test]
fn maglev_slot_counts_differ_by_at_most_one_with_equal_weights() {
    // Every round of the populate loop gives every backend one slot; the table fills during the last
    // round, so each backend has floor(M/n) or ceil(M/n) slots. The paper's looser wording ("almost
    // equal") is, for this loop, exact.
    for n in [3, 100, 1_000] {
        let g = Maglev::new(BackendSet::new(specs(n), SetOptions::default()), &AlgorithmOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let counts = g.slots_per_backend();
        let (min, max) = (counts.iter().min().copied(), counts.iter().max().copied());
        assert_eq!((min, max), (Some(65_537 / n), Some(65_537_usize.div_ceil(n))), "{n} backends");
    }
}

/// Fractions of keys that (a) changed backend at all, (b) changed between two backends that are in
/// both sets.
fn movement(before: &[String], after: &[String], both: impl Fn(&str) -> bool) -> (f64, f64) {
    let moved = before.iter().zip(after).filter(|(a, b)| a != b).count();
    let among = before.iter().zip(after).filter(|(a, b)| a != b && both(a) && both(b)).count();
    (moved as f64 / before.len() as f64, among as f64 / before.len() as f64)
}

#[test]
fn removing_one_backend_moves_only_its_keys_or_a_little_more_for_maglev() {
    let keys = keys();
    let removed = addr(37);
    let full = BackendSet::new(specs(BACKENDS), SetOptions::default());
    let fewer = full.rebuild(specs(BACKENDS).into_iter().filter(|s| s.addr != removed), 0);
    for algorithm in [Algorithm::RingHash, Algorithm::Maglev, Algorithm::Rendezvous, Algorithm::BoundedLoad] {
        let before = assign(balancer(algorithm, full.clone()).as_ref(), &keys);
        let after = assign(balancer(algorithm, fewer.clone()).as_ref(), &keys);
        let owned = before.iter().filter(|a| **a == removed).count() as f64 / keys.len() as f64;
        let (moved, among) = movement(&before, &after, |a| a != removed);
        eprintln!(
            "{algorithm:>11}: remove 1 of {BACKENDS}: {:.2}% of keys moved (the removed backend had {:.2}%; ideal 1/n = 1%), {:.2}% between survivors",
            moved * 100.0,
            owned * 100.0,
            among * 100.0
        );
        assert!(after.iter().all(|a| *a != removed));
        match algorithm {
            // Only the removed backend's keys move: each survivor's points or scores are unchanged.
            Algorithm::RingHash | Algorithm::Rendezvous | Algorithm::BoundedLoad => {
                assert_eq!(among, 0.0, "{algorithm}");
                assert_eq!(moved, owned, "{algorithm}");
            }
            // Maglev: the removed backend's 1% moves, and the turns of the others shift, so some slots
            // change hands between survivors. At M = 65,537 = 655 x n we measure 0.6% of all keys
            // (1.6% moved in all, against the ideal 1%); bound it at 1.5%.
            _ => {
                assert!(among > 0.0 && among < 0.015, "maglev: {among}");
                assert!(moved < owned + 0.015, "maglev: {moved}");
            }
        }
    }
}

#[test]
fn adding_one_backend_takes_about_one_share_from_the_others() {
    let keys = keys();
    let added = "10.0.99.99:8080".to_string();
    let base = BackendSet::new(specs(BACKENDS), SetOptions::default());
    let more = base.rebuild(specs(BACKENDS).into_iter().chain([BackendSpec::new(added.clone())]), 0);
    for algorithm in [Algorithm::RingHash, Algorithm::Maglev, Algorithm::Rendezvous] {
        let before = assign(balancer(algorithm, base.clone()).as_ref(), &keys);
        let after = assign(balancer(algorithm, more.clone()).as_ref(), &keys);
        let gained = after.iter().filter(|a| **a == added).count() as f64 / keys.len() as f64;
        let (moved, among) = movement(&before, &after, |a| a != added);
        eprintln!(
            "{algorithm:>11}: add a 101st backend: {:.2}% of keys moved (ideal 1/101 = 0.99%), the new one took {:.2}%, {:.2}% between old backends",
            moved * 100.0,
            gained * 100.0,
            among * 100.0
        );
        // The newcomer's share: 1/101 with sampling noise (sigma ~0.03 points) for rendezvous and
        // Maglev, plus the arc noise (~8% of it) for the ring.
        assert!((0.006..0.014).contains(&gained), "{algorithm}: {gained}");
        if algorithm == Algorithm::Maglev {
            // Measured 0.6%, as for a removal.
            assert!(among < 0.015, "maglev: {among}");
        } else {
            assert_eq!(among, 0.0, "{algorithm}");
        }
    }
}

#[test]
fn bounded_load_holds_the_cap_under_one_hot_key_for_any_epsilon() {
    for epsilon in [0.1, 0.25, 1.0] {
        let set = BackendSet::new(specs(20), SetOptions::default());
        let options = AlgorithmOptions { bounded_load_epsilon: epsilon, ..AlgorithmOptions::default() };
        let b = BoundedLoad::new(set.clone(), &options).unwrap_or_else(|e| panic!("{e}"));
        let hot = hash_bytes(b"celebrity");
        let mut held = Vec::new();
        for _ in 0..2_000 {
            let total = set.total_in_flight();
            let cap = ((1.0 + epsilon) * (total + 1) as f64 / 20.0).ceil() as u64;
            let i = b.pick(&PickRequest::new(0).with_key(Some(hot)), None).unwrap_or(usize::MAX);
            let load = set.get(i).map_or(u64::MAX, |x| x.in_flight());
            assert!(load < cap, "epsilon {epsilon}: backend {i} had {load} with cap {cap}");
            held.extend(set.start(i, 0));
        }
        let max = set.backends().iter().map(|x| x.in_flight()).max().unwrap_or(0);
        let bound = ((1.0 + epsilon) * 2_000.0 / 20.0).ceil() as u64;
        eprintln!(
            "bounded-load epsilon {epsilon}: 2,000 requests for one key, busiest backend {max} (bound {bound})"
        );
        assert!(max <= bound);
    }
}
