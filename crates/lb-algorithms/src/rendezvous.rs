//! Rendezvous hashing, or highest random weight (Thaler and Ravishankar, 1998).
//!
//! **Idea.** For a key, give every backend a score from a hash of (key, backend) and pick the backend
//! with the highest score. Each key thus ranks all the backends in its own pseudo-random order; the
//! top one takes the key, and a retry takes the next one down. Removing a backend changes nothing for
//! keys that did not rank it first: they keep their backend, and the removed backend's keys go to
//! their second choice, spread evenly over the survivors. Adding one takes from each survivor only the
//! keys that rank the newcomer above it: about `1/(n+1)` of all keys, the ideal. No ring, no table, no
//! build step, no memory beyond one salt per backend.
//!
//! **Weights.** The logarithmic method of Schindelhauer and Schomaker ("Weighted Distributed Hash
//! Tables", SPAA 2005): with `u = hash(key, backend)` mapped into (0, 1), the score is
//! `-weight / ln(u)`. Then a backend wins with probability exactly `weight / total weight`: `-ln(u)` is
//! an exponential variable, dividing it by the weight makes the minimum (our maximum score) land on
//! each backend in proportion to its rate, its weight. With all weights equal (and no slow start) the
//! score is monotone in `u`, so the pick compares the hashes directly and skips the logarithm.
//!
//! **Unavailable backends and retries.** Unselectable and already-tried backends are left out of the
//! contest, which is exactly "the next highest score": a key's candidate sequence is its ranking, stable
//! while the set is unchanged. Slow start scales a ramping backend's weight in the score (effective
//! weight), so it wins a growing share of keys as it warms up.
//!
//! **No key.** A request without a hash key goes round robin over the selectable backends.
//!
//! **Cost.** O(n) per pick: one hash per backend (a logarithm only for the few backends that could
//! still beat the best so far, when weights differ). At 1,000 backends that is microseconds, not
//! nanoseconds; for large fleets use [`crate::maglev`] or
//! [`crate::ring_hash`], or rendezvous over a small group chosen first. State: one salt per backend.
//!
//! **When to use it.** A few to a few hundred backends where the best possible consistency matters:
//! caches, sharded storage, choosing `k` replicas for a key (take the top `k`). **When not:** thousands
//! of backends on a hot path (O(n)), or unequal key costs (see [`crate::bounded_load`]).
//!
//! **Elsewhere.** Not built into nginx, HAProxy or Envoy as a balancing policy; used by memcached and
//! Redis clients, Apache Ignite, GitHub's load balancer (GLB director's variant) and Twitter's EventBus.
//! Paper: D. Thaler, C. Ravishankar, "Using Name-Based Mappings to Increase Hit Rates", IEEE/ACM ToN, 1998.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::hash_key::{hash_pair, unit_open};
use crate::ring_hash::salts;
use crate::{
    Algorithm, BackendSet, Balancer, Explain, Nanos, PickRequest, SkipReason, keyless_round_robin, label,
};

/// Highest-random-weight hashing with the logarithmic method for weights.
#[derive(Debug)]
pub struct Rendezvous {
    set: Arc<BackendSet>,
    /// One per backend, from its address: the same backend scores the same under any set.
    salts: Vec<u64>,
    /// All configured weights equal: compare hashes, no logarithm.
    uniform: bool,
    /// Round-robin turn for requests with no key.
    next: AtomicUsize,
}

impl Rendezvous {
    /// Nothing to build beyond one salt per backend.
    pub fn new(set: Arc<BackendSet>) -> Self {
        let uniform = set.backends().windows(2).all(|w| w[0].weight() == w[1].weight());
        Rendezvous { salts: salts(&set), set, uniform, next: AtomicUsize::new(0) }
    }

    /// The score of backend `index` for `key` at `now` (higher wins).
    pub fn score(&self, key: u64, index: usize, now: Nanos) -> f64 {
        let u = unit_open(hash_pair(key, self.salts[index]));
        -self.set.effective_weight(index, now) / u.ln()
    }

    /// Every backend ranked for `key`, best first, ignoring health: the key's candidate sequence.
    pub fn ranking(&self, key: u64, now: Nanos) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.set.len()).collect();
        // Stable sort on descending score: ties keep index order, as the pick does.
        order.sort_by(|&a, &b| self.score(key, b, now).total_cmp(&self.score(key, a, now)));
        order
    }
}

impl Balancer for Rendezvous {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Rendezvous
    }

    fn backends(&self) -> &Arc<BackendSet> {
        &self.set
    }

    fn pick(&self, req: &PickRequest<'_>, explain: Option<&mut Explain>) -> Option<usize> {
        let n = self.set.len();
        if n == 0 {
            return None;
        }
        let Some(key) = req.key else {
            return keyless_round_robin(Algorithm::Rendezvous, &self.set, &self.next, req, explain);
        };
        let panic = self.set.in_panic();
        let backends = self.set.backends();
        let available = |i: usize| backends[i].is_selectable(panic) && !req.is_excluded(i);
        // With equal weights and no ramp, the score is monotone in the hash's top 52 bits (what
        // `unit_open` keeps), so compare those: same winner, no logarithm.
        let fast = self.uniform && self.set.options().slow_start.is_none();
        let mut winner = None;
        if fast {
            let mut best = 0u64;
            for i in 0..n {
                let h = hash_pair(key, self.salts[i]) >> 12;
                // Strictly greater: ties go to the lower index, deterministically, as in `ranking`.
                if (winner.is_none() || h > best) && available(i) {
                    (winner, best) = (Some(i), h);
                }
            }
        } else {
            // Minimise the cost `-ln(u) / w`, the inverse of the score. Since `-ln(u) >= 1 - u`, a
            // backend whose `(1 - u) / w` is already no better than the best cost so far cannot win, and
            // its logarithm is never taken: after the first few backends, almost none are.
            let mut best = f64::INFINITY;
            for i in 0..n {
                let u = unit_open(hash_pair(key, self.salts[i]));
                let w = self.set.effective_weight(i, req.now);
                if (1.0 - u) / w >= best || !available(i) {
                    continue;
                }
                let cost = -u.ln() / w;
                if cost < best {
                    (winner, best) = (Some(i), cost);
                }
            }
        }
        let winner = winner?;
        if let Some(e) = explain {
            // The backends that outranked the winner are the ones passed over, in rank order.
            for i in self.ranking(key, req.now) {
                if i == winner {
                    break;
                }
                let b = &backends[i];
                e.skip(
                    i,
                    if b.is_selectable(panic) {
                        SkipReason::AlreadyTried
                    } else {
                        SkipReason::Health(b.health())
                    },
                );
            }
            e.reason = format!(
                "rendezvous: key {key:#018x}, picked {} with score {:.3} ({} ranked above it)",
                label(&self.set, winner),
                self.score(key, winner, req.now),
                e.skipped.len(),
            );
        }
        Some(winner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Health, SetOptions, hash_bytes};

    fn hrw(n: usize) -> Rendezvous {
        Rendezvous::new(BackendSet::new(
            (0..n).map(|i| BackendSpec::new(format!("10.0.0.{i}:80"))),
            SetOptions::default(),
        ))
    }

    fn key(k: u32) -> Option<u64> {
        Some(hash_bytes(format!("user-{k}").as_bytes()))
    }

    #[test]
    fn picks_the_top_of_the_ranking_and_is_stable() {
        let r = hrw(7);
        for k in 0..300 {
            let h = key(k).unwrap_or_default();
            let pick = r.pick(&PickRequest::new(0).with_key(Some(h)), None);
            assert_eq!(pick, Some(r.ranking(h, 0)[0]));
            assert_eq!(pick, r.pick(&PickRequest::new(0).with_key(Some(h)), None));
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_logarithm() {
        // Same backends, one with slow start configured (so the pick takes the scoring path).
        let specs = || (0..9).map(|i| BackendSpec::new(format!("10.0.0.{i}:80")));
        let fast = Rendezvous::new(BackendSet::new(specs(), SetOptions::default()));
        let slow = Rendezvous::new(BackendSet::new(
            specs(),
            SetOptions { slow_start: Some(1), ..SetOptions::default() },
        ));
        for k in 0..2_000 {
            let req = PickRequest::new(0).with_key(key(k));
            assert_eq!(fast.pick(&req, None), slow.pick(&req, None), "key {k}");
        }
    }

    #[test]
    fn no_key_falls_back_to_round_robin() {
        let r = hrw(3);
        r.backends().set_health(0, Health::Unhealthy, 0);
        let picks: Vec<_> = (0..4).map(|_| r.pick(&PickRequest::new(0), None)).collect();
        // Turns 0..3 -> (0 down ->) 1, 1, 2, (0 down ->) 1.
        assert_eq!(picks, [1, 1, 2, 1].map(Some));
    }

    #[test]
    fn retries_follow_the_ranking() {
        let r = hrw(6);
        for k in 0..50 {
            let h = key(k).unwrap_or_default();
            let mut tried = Vec::new();
            for want in r.ranking(h, 0) {
                assert_eq!(
                    r.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&tried), None),
                    Some(want)
                );
                tried.push(want);
            }
            assert_eq!(r.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&tried), None), None);
        }
    }

    #[test]
    fn unavailable_backends_are_passed_over_in_rank_order_and_explained() {
        let r = hrw(5);
        let h = key(42).unwrap_or_default();
        let rank = r.ranking(h, 0);
        r.backends().set_health(rank[0], Health::Ejected, 0);
        r.backends().set_health(rank[3], Health::Draining, 0);
        let mut e = Explain::default();
        let got = r.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&[rank[1]]), Some(&mut e));
        assert_eq!(got, Some(rank[2]));
        // rank[3] is down too but ranks below the winner: it was never in the way.
        assert_eq!(
            e.skipped,
            vec![(rank[0], SkipReason::Health(Health::Ejected)), (rank[1], SkipReason::AlreadyTried)]
        );
        assert!(e.reason.contains("2 ranked above it"), "{}", e.reason);
    }

    #[test]
    fn keys_of_survivors_stay_when_a_backend_goes_down() {
        let r = hrw(8);
        let before: Vec<_> =
            (0..3_000).map(|k| r.pick(&PickRequest::new(0).with_key(key(k)), None)).collect();
        r.backends().set_health(5, Health::Unhealthy, 0);
        for k in 0..3_000u32 {
            let after = r.pick(&PickRequest::new(0).with_key(key(k)), None);
            if before[k as usize] == Some(5) {
                let h = key(k).unwrap_or_default();
                assert_eq!(after, Some(r.ranking(h, 0)[1]), "moves to its second choice");
            } else {
                assert_eq!(after, before[k as usize]);
            }
        }
    }

    #[test]
    fn weights_give_proportional_shares() {
        let r = Rendezvous::new(BackendSet::new(
            [
                BackendSpec::weighted("10.0.0.1:80", 1),
                BackendSpec::weighted("10.0.0.2:80", 2),
                BackendSpec::weighted("10.0.0.3:80", 1),
            ],
            SetOptions::default(),
        ));
        let mut counts = [0u32; 3];
        for k in 0..40_000 {
            if let Some(i) = r.pick(&PickRequest::new(0).with_key(key(k)), None) {
                counts[i] += 1;
                // The pruned pick agrees with the full ranking by score.
                assert_eq!(i, r.ranking(key(k).unwrap_or_default(), 0)[0]);
            }
        }
        // Exactly 1/4, 1/2, 1/4 in expectation (no arcs, no table): 10,000 / 20,000 / 10,000 with a
        // sampling sigma of ~87 and ~100; allow +-4%.
        assert!((9_600..=10_400).contains(&counts[0]), "{counts:?}");
        assert!((19_200..=20_800).contains(&counts[1]), "{counts:?}");
        assert!((9_600..=10_400).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn a_ramping_backend_wins_a_share_that_grows_with_its_ramp() {
        let set = BackendSet::new(
            (0..2).map(|i| BackendSpec::new(format!("10.0.0.{i}:80"))),
            SetOptions { slow_start: Some(1_000), ..SetOptions::default() },
        );
        let r = Rendezvous::new(set);
        r.backends().set_health(0, Health::Unhealthy, 0);
        r.backends().set_health(0, Health::Healthy, 0);
        let share = |now| {
            (0..20_000).filter(|&k| r.pick(&PickRequest::new(now).with_key(key(k)), None) == Some(0)).count()
                as f64
                / 20_000.0
        };
        // Effective weights 0.5 : 1 at 500 ns: share 0.5 / 1.5 = 1/3. Sampling sigma ~0.33 points; +-2.
        assert!((share(500) - 1.0 / 3.0).abs() < 0.02, "{}", share(500));
        assert!((share(2_000) - 0.5).abs() < 0.02, "{}", share(2_000));
    }

    #[test]
    fn none_when_everything_is_excluded_or_down() {
        let r = hrw(2);
        r.backends().set_health(0, Health::Draining, 0);
        assert_eq!(r.pick(&PickRequest::new(0).with_key(key(1)).excluding(&[1]), None), None);
    }
}
