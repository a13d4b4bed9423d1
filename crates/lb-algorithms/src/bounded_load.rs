//! Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, SODA 2018).
//!
//! **Idea.** Plain consistent hashing keeps a key on its backend whatever happens, so a hot key (one
//! celebrity user, one viral image) overloads its backend while the others idle. Bounded load keeps the
//! ring of [`crate::ring_hash`] but gives every backend a capacity: with `T` requests in flight over the
//! whole group, a backend of weight `w` may hold at most
//!
//! ```text
//! cap(w) = ceil((1 + epsilon) x (T + 1) x w / W)        W = total weight of the selectable backends
//! ```
//!
//! (the `+ 1` counts the request being placed; with equal weights `w / W = 1 / n`, the paper's bound).
//! A key goes to the first backend clockwise from its point that is available *and* would stay within
//! its capacity after taking this request; full backends are passed over (and named in `Explain` as
//! `over-capacity`). So no backend ever carries more than `1 + epsilon` times its fair share, and a key
//! still reaches the same backend whenever that backend has room: a cache keeps most of its hit rate.
//! Smaller `epsilon` is a tighter bound and more keys sent away from their home; the paper shows the
//! number of keys that move on a change grows like `1/epsilon^2`. Default 0.25 (HAProxy's
//! `hash-balance-factor 125`).
//!
//! **Why a free backend always exists.** The capacities add up to `(1 + epsilon)(T + 1) > T`, and the
//! selectable backends hold at most `T` requests between them, so at least one has room. Only when this
//! request has excluded backends (a retry), or a slow-starting backend has a shrunken capacity, can every
//! remaining candidate be full; then the pick takes the first available candidate clockwise, as plain
//! ring hash would, rather than fail the request. The in-flight counts are read without a lock, so two
//! picks at the same instant can both see room in the last slot: the bound can be exceeded by the
//! number of picks racing, never more.
//!
//! **Slow start.** A ramping backend's capacity uses its effective weight (weight x ramp), so it is
//! handed a proportionally smaller share of the load while it warms up.
//!
//! **No key.** A request without a hash key goes round robin over the selectable backends.
//!
//! **Cost.** The ring lookup of [`crate::ring_hash`] (O(1) expected with its index) plus one step per
//! full or unavailable point passed; `T` and `W` are O(1) (a group-wide atomic counter, and a sum kept up
//! to date on every health change). In the worst case the walk goes around the ring.
//!
//! **When to use it.** Consistent hashing for cache locality with keys of uneven popularity, or any
//! time one key's burst must not take a backend down. **When not:** when a key *must* reach one backend
//! (sharded state with no replica): bounded load will send it elsewhere when that backend is full.
//!
//! **Elsewhere.** HAProxy: `hash-type consistent` with `hash-balance-factor <percent>`. Envoy: `RING_HASH`
//! or `MAGLEV` with `hash_balance_factor` in `consistent_hashing_lb_config`. Vimeo added it to HAProxy
//! (2016), and Google describes it in "Consistent Hashing with Bounded Loads" (Google Research blog,
//! 2017). Paper: V. Mirrokni, M. Thorup, M. Zadimoghaddam, "Consistent Hashing with Bounded Loads",
//! SODA 2018.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::ring_hash::{Ring, noted};
use crate::{
    Algorithm, AlgorithmOptions, BackendSet, Balancer, BuildError, Explain, Nanos, PickRequest, SkipReason,
    keyless_round_robin, label,
};

/// Ring hash that passes over backends above `(1 + epsilon)` times their fair share of the load.
#[derive(Debug)]
pub struct BoundedLoad {
    set: Arc<BackendSet>,
    ring: Ring,
    epsilon: f64,
    /// Round-robin turn for requests with no key.
    next: AtomicUsize,
}

impl BoundedLoad {
    /// Build the ring (`options.ring_points_per_weight`, at least 1) with the load bound
    /// `options.bounded_load_epsilon`, which must be above 0 and finite.
    pub fn new(set: Arc<BackendSet>, options: &AlgorithmOptions) -> Result<Self, BuildError> {
        let epsilon = options.bounded_load_epsilon;
        let bad = |reason: String| Err(BuildError::BadOption { algorithm: Algorithm::BoundedLoad, reason });
        if !(epsilon > 0.0 && epsilon.is_finite()) {
            return bad(format!(
                "bounded_load_epsilon must be above 0 (0.25 lets a backend carry 125% of the average), got {epsilon}"
            ));
        }
        Ring::check(&set, options.ring_points_per_weight, Algorithm::BoundedLoad)?;
        let ring = Ring::new(&set, options.ring_points_per_weight);
        Ok(BoundedLoad { set, ring, epsilon, next: AtomicUsize::new(0) })
    }

    /// The most requests backend `index` may have in flight once it takes one more, given the load right
    /// now. Public so that tests and the docs can check the bound.
    pub fn capacity(&self, index: usize, now: Nanos) -> u64 {
        let total = self.set.total_in_flight();
        let weight = self.set.selectable_weight().max(1);
        self.capacity_with(index, now, total, weight)
    }

    #[inline]
    fn capacity_with(&self, index: usize, now: Nanos, total: u64, weight: u64) -> u64 {
        // Divide last: `1.25 x 24 x 1 / 10` is exactly 3, while `1.25 x 24 x (1 / 10)` rounds to
        // 3.0000000000000004 and its ceiling to 4.
        ((1.0 + self.epsilon) * (total + 1) as f64 * self.set.effective_weight(index, now) / weight as f64)
            .ceil() as u64
    }
}

impl Balancer for BoundedLoad {
    fn algorithm(&self) -> Algorithm {
        Algorithm::BoundedLoad
    }

    fn backends(&self) -> &Arc<BackendSet> {
        &self.set
    }

    fn pick(&self, req: &PickRequest<'_>, mut explain: Option<&mut Explain>) -> Option<usize> {
        let n = self.set.len();
        if n == 0 || self.ring.len() == 0 {
            return None;
        }
        let Some(key) = req.key else {
            return keyless_round_robin(Algorithm::BoundedLoad, &self.set, &self.next, req, explain);
        };
        // Read the load once: every capacity in this pick is against the same snapshot.
        let total = self.set.total_in_flight();
        let weight = self.set.selectable_weight().max(1);
        let panic = self.set.in_panic();
        let backends = self.set.backends();
        let start = self.ring.locate(key);
        let len = self.ring.len();
        // The first available candidate, full or not: the answer if every one is full.
        let mut first_full = None;
        for step in 0..len {
            let p = if start + step < len { start + step } else { start + step - len };
            let i = self.ring.owner(p);
            let b = &backends[i];
            let why = if !b.is_selectable(panic) {
                SkipReason::Health(b.health())
            } else if req.is_excluded(i) {
                SkipReason::AlreadyTried
            } else {
                let cap = self.capacity_with(i, req.now, total, weight);
                if b.in_flight() < cap {
                    if let Some(e) = explain {
                        e.reason = format!(
                            "bounded-load: key {key:#018x} lands on {}; picked {} (in-flight {} < cap {cap}; {total} in flight in the group, epsilon {})",
                            label(&self.set, self.ring.owner(start)),
                            label(&self.set, i),
                            b.in_flight(),
                            self.epsilon,
                        );
                    }
                    return Some(i);
                }
                first_full.get_or_insert(i);
                SkipReason::OverCapacity
            };
            if let Some(e) = explain.as_deref_mut()
                && !noted(e, i)
            {
                e.skip(i, why);
            }
        }
        if let (Some(e), Some(i)) = (explain, first_full) {
            e.reason = format!(
                "bounded-load: every available backend is at capacity; picked {}, the first clockwise",
                label(&self.set, i)
            );
        }
        first_full
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Health, InFlightGuard, SetOptions, hash_bytes};

    fn bounded(specs: Vec<BackendSpec>, epsilon: f64) -> BoundedLoad {
        let set = BackendSet::new(specs, SetOptions::default());
        let options = AlgorithmOptions { bounded_load_epsilon: epsilon, ..AlgorithmOptions::default() };
        BoundedLoad::new(set, &options).unwrap_or_else(|e| panic!("{e}"))
    }

    fn equal(n: usize) -> BoundedLoad {
        bounded((0..n).map(|i| BackendSpec::new(format!("10.0.0.{i}:80"))).collect(), 0.25)
    }

    fn key(k: u32) -> Option<u64> {
        Some(hash_bytes(format!("user-{k}").as_bytes()))
    }

    fn clockwise(b: &BoundedLoad, key: u64) -> Vec<usize> {
        let start = b.ring.locate(key);
        let mut seen = Vec::new();
        for step in 0..b.ring.len() {
            let i = b.ring.owner((start + step) % b.ring.len());
            if !seen.contains(&i) {
                seen.push(i);
            }
        }
        seen
    }

    #[test]
    fn epsilon_must_be_positive() {
        let set = BackendSet::new([BackendSpec::new("a")], SetOptions::default());
        for epsilon in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let options = AlgorithmOptions { bounded_load_epsilon: epsilon, ..AlgorithmOptions::default() };
            assert!(BoundedLoad::new(set.clone(), &options).is_err(), "{epsilon}");
        }
    }

    #[test]
    fn with_no_load_it_is_plain_ring_hash() {
        let b = equal(5);
        let ring = crate::ring_hash::RingHash::new(b.backends().clone(), &AlgorithmOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        for k in 0..500 {
            let req = PickRequest::new(0).with_key(key(k));
            assert_eq!(b.pick(&req, None), ring.pick(&req, None));
            assert_eq!(b.pick(&req, None), b.pick(&req, None), "stable");
        }
    }

    #[test]
    fn no_key_falls_back_to_round_robin() {
        let b = equal(3);
        let picks: Vec<_> = (0..4).map(|_| b.pick(&PickRequest::new(0), None)).collect();
        assert_eq!(picks, [0, 1, 2, 0].map(Some));
    }

    #[test]
    fn retries_get_the_next_distinct_backend_clockwise() {
        let b = equal(4);
        let h = key(11).unwrap_or_default();
        let order = clockwise(&b, h);
        let mut tried = Vec::new();
        for want in &order {
            assert_eq!(b.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&tried), None), Some(*want));
            tried.push(*want);
        }
        assert_eq!(b.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&tried), None), None);
    }

    #[test]
    fn one_hot_key_spills_over_in_ring_order_and_the_explain_names_the_full_backends() {
        let b = equal(4);
        let h = key(5).unwrap_or_default();
        let order = clockwise(&b, h);
        let mut guards: Vec<InFlightGuard> = Vec::new();
        let mut picks = Vec::new();
        for _ in 0..8 {
            let i = b.pick(&PickRequest::new(0).with_key(Some(h)), None).unwrap_or(usize::MAX);
            picks.push(i);
            guards.extend(b.backends().start(i, 0));
        }
        // cap = ceil(1.25 x (T + 1) / 4) before each pick, T = 0..7: 1, 1, 1, 2, 2, 2, 3, 3.
        // T=0: home has 0 < 1 -> home.   T=1: home full (1), next has 0 < 1 -> o1.
        // T=2: home, o1 full -> o2.      T=3: cap 2; home 1 < 2 -> home.
        // T=4: cap 2; home 2 full, o1 1 < 2 -> o1.  T=5: cap 2 -> o2.  T=6: cap 3 -> home.  T=7: cap 3 -> o1.
        let [home, o1, o2, _] = [order[0], order[1], order[2], order[3]];
        assert_eq!(picks, [home, o1, o2, home, o1, o2, home, o1]);
        let mut e = Explain::default();
        // T=8: cap ceil(1.25 x 9 / 4) = 3: home (3) and o1 (3) are full; o2 (2) takes it.
        assert_eq!(b.pick(&PickRequest::new(0).with_key(Some(h)), Some(&mut e)), Some(o2));
        assert_eq!(e.skipped, vec![(home, SkipReason::OverCapacity), (o1, SkipReason::OverCapacity)]);
        assert!(e.reason.contains("cap 3"), "{}", e.reason);
    }

    #[test]
    fn no_backend_exceeds_the_cap_with_all_keys_on_one_backend_and_load_held() {
        let b = equal(10);
        // Pick keys that all hash to the same home backend, then hold every request.
        let home = b.pick(&PickRequest::new(0).with_key(key(0)), None);
        let keys: Vec<u64> = (0..20_000)
            .filter_map(key)
            .filter(|&h| b.pick(&PickRequest::new(0).with_key(Some(h)), None) == home)
            .take(1_000)
            .collect();
        let mut guards = Vec::new();
        for h in keys {
            let total = b.backends().total_in_flight();
            let i = b.pick(&PickRequest::new(0).with_key(Some(h)), None).unwrap_or(usize::MAX);
            let cap = ((1.25 * (total + 1) as f64) / 10.0).ceil() as u64;
            let load = b.backends().backends()[i].in_flight();
            assert!(load < cap, "pick {total}: backend {i} had {load}, cap {cap}");
            guards.extend(b.backends().start(i, 0));
        }
        // 1,000 held: nobody above ceil(1.25 x 1,000 / 10) = 125; the home backend is at the bound.
        let loads: Vec<u64> = b.backends().backends().iter().map(|x| x.in_flight()).collect();
        assert!(loads.iter().all(|&l| l <= 125), "{loads:?}");
        assert!(loads[home.unwrap_or(0)] >= 120, "{loads:?}");
    }

    #[test]
    fn weights_scale_the_capacity_and_the_share_of_keys() {
        let b = bounded(
            vec![BackendSpec::weighted("10.0.0.1:80", 1), BackendSpec::weighted("10.0.0.2:80", 2)],
            0.25,
        );
        let _held: Vec<_> = (0..30).filter_map(|i| b.backends().start(i % 2, 0)).collect();
        // T = 30, W = 3: weight 1 may hold ceil(1.25 x 31 / 3) = 13, weight 2 ceil(1.25 x 31 x 2 / 3) = 26.
        assert_eq!(b.capacity(0, 0), 13);
        assert_eq!(b.capacity(1, 0), 26);
        let mut counts = [0u32; 2];
        let fresh = bounded(
            vec![BackendSpec::weighted("10.0.0.1:80", 1), BackendSpec::weighted("10.0.0.2:80", 2)],
            0.25,
        );
        for k in 0..30_000 {
            if let Some(i) = fresh.pick(&PickRequest::new(0).with_key(key(k)), None) {
                counts[i] += 1;
            }
        }
        // With no load held it is the weighted ring: ideally 1 : 2; the arcs vary ~8%, allow 1.5..2.6.
        let ratio = f64::from(counts[1]) / f64::from(counts[0]);
        assert!((1.5..2.6).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn unavailable_backends_are_skipped_and_explained() {
        let b = equal(4);
        let h = key(9).unwrap_or_default();
        let order = clockwise(&b, h);
        b.backends().set_health(order[0], Health::Draining, 0);
        let mut e = Explain::default();
        assert_eq!(
            b.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&[order[1]]), Some(&mut e)),
            Some(order[2])
        );
        assert_eq!(
            e.skipped,
            vec![(order[0], SkipReason::Health(Health::Draining)), (order[1], SkipReason::AlreadyTried)]
        );
        for i in 0..4 {
            b.backends().set_health(i, Health::Draining, 0);
        }
        assert_eq!(b.pick(&PickRequest::new(0).with_key(Some(h)), None), None);
    }

    #[test]
    fn when_a_retry_leaves_only_full_backends_it_still_gets_one() {
        let b = equal(2);
        let h = key(1).unwrap_or_default();
        let order = clockwise(&b, h);
        // T = 4, all on the second candidate: cap ceil(1.25 x 5 / 2) = 4, and it holds 4.
        let _held: Vec<_> = (0..4).filter_map(|_| b.backends().start(order[1], 0)).collect();
        let mut e = Explain::default();
        let got = b.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&[order[0]]), Some(&mut e));
        assert_eq!(got, Some(order[1]));
        assert!(e.reason.contains("every available backend is at capacity"), "{}", e.reason);
    }
}
