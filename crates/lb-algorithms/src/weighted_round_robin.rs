//! Smooth weighted round robin: each backend in turn, as often as its weight says, interleaved.
//!
//! **Idea.** With weights {a: 5, b: 1, c: 1}, the naive rotation `[a a a a a b c]` sends five requests
//! in a row to `a`: bursts, and `b` and `c` sit idle in between. nginx's *smooth* weighted round robin
//! spreads the heavy backend's turns through the cycle instead. Every backend keeps a `current` score;
//! on each pick every score grows by its weight, the highest score wins (the first one on a tie), and the
//! winner pays back the total weight. For {5, 1, 1} that gives `a a b a c a a`: the same 5:1:1 counts,
//! but `a` never gets more than two in a row and `b` and `c` are spread out. (The lesson
//! `docs/lessons/weights.md` traces the scores step by step.)
//!
//! **Lock-free by precomputing.** nginx updates the scores under a lock on every pick. The sequence only
//! depends on the weights, so we run nginx's procedure once, when the balancer is built, and store the
//! whole cycle (length = sum of weights). A pick is then one atomic `fetch_add` and one table read, like
//! plain round robin. The weights are first divided by their greatest common divisor ({500, 100, 100}
//! has the same cycle as {5, 1, 1}). If the sum is still above [`MAX_CYCLE`] (65,536 slots), the
//! weights are scaled down proportionally (each at least 1), so the shares are then exact only to about
//! `1 / 65,536` of the total: the price of a bounded table (256 KiB at most).
//!
//! **Cost.** O(1) per pick. Building is O(sum of weights x number of distinct weights) (see
//! `smooth_cycle`): well under a millisecond for 10,000 backends of weights 1 to 3, paid once per
//! backend-list change. State: the cycle (`u32` per slot), one `AtomicUsize` and the RNG for slow start.
//!
//! **Skipping.** A slot whose backend is unhealthy, draining or already tried by this request passes to
//! the next slot of the cycle, so the remaining backends keep their relative weights. After a bounded
//! walk (64 slots) we fall back to the first available backend in configuration order, so a pick with
//! most of the fleet down is O(n), never O(sum of weights).
//!
//! **Slow start** by acceptance: a slot of a ramping backend is taken with probability equal to its ramp
//! factor, otherwise it passes on, and that backend is not tested again in the same pick. A backend at
//! ramp 0.1 thus gets about a tenth of its usual share.
//!
//! **When to use it.** Backends of different, *known* capacity (a 16-core and a 4-core machine: weights
//! 4 and 1) serving requests of similar cost. **When not:** when capacity changes at run time or
//! requests vary in cost: the weights are a guess made in advance, and load-aware algorithms
//! (least-connections, power-of-two, peak EWMA) measure instead of guessing.
//!
//! **Elsewhere.** nginx: `server ... weight=N` in an `upstream` block (the default algorithm;
//! `ngx_http_upstream_get_peer` in `ngx_http_upstream_round_robin.c` is the smooth procedure). HAProxy:
//! `balance roundrobin` with `weight N` (its own interleaving, dynamic weights). Envoy: `ROUND_ROBIN`
//! with `load_balancing_weight`, implemented as earliest-deadline-first scheduling, which also interleaves.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::rng::Rng;
use crate::{
    Algorithm, BackendSet, Balancer, Explain, PickRequest, SkipReason, first_available, label, ramp_rejects,
    unavailable,
};

/// The largest cycle we build; larger weight sums are scaled down to fit (see module docs).
pub const MAX_CYCLE: u64 = 1 << 16;

/// How many slots a pick walks past unavailable backends before falling back to a scan of the set.
const WALK: usize = 64;

/// How many ramping backends one pick may turn down before falling back to a scan of the set.
const MAX_REJECTED: usize = 4;

/// nginx's smooth weighted round robin over a precomputed cycle.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    set: Arc<BackendSet>,
    /// Backend index per slot, in nginx's order.
    cycle: Vec<u32>,
    next: AtomicUsize,
    /// Only drawn from for the slow-start acceptance test; the seed is fixed so runs are reproducible.
    rng: Rng,
}

impl WeightedRoundRobin {
    /// Precompute the smooth cycle of the set's configured weights.
    pub fn new(set: Arc<BackendSet>) -> Self {
        let weights: Vec<u64> = set.backends().iter().map(|b| u64::from(b.weight())).collect();
        let cycle = smooth_cycle(&reduce(&weights));
        WeightedRoundRobin { set, cycle, next: AtomicUsize::new(0), rng: Rng::seeded(0x5eed_0001) }
    }

    /// The precomputed cycle (backend indices), for the tests.
    #[cfg(test)]
    fn cycle(&self) -> &[u32] {
        &self.cycle
    }
}

/// Divide by the greatest common divisor, then scale down proportionally if the sum is still above
/// [`MAX_CYCLE`] (each weight stays at least 1, so no backend disappears from the cycle).
fn reduce(weights: &[u64]) -> Vec<u64> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let mut w: Vec<u64> = weights.iter().map(|&x| x / g).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_CYCLE {
        // Floor keeps the scaled sum at most MAX_CYCLE plus n (for the weights raised to 1).
        w = w
            .iter()
            .map(|&x| (u128::from(x) * u128::from(MAX_CYCLE) / u128::from(sum)).max(1) as u64)
            .collect();
    }
    w
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// nginx's smooth weighted round robin, run for one full cycle (sum of weights picks), after which every
/// score is back to 0 and the sequence repeats.
///
/// Run naively this is O(sum x n): 330 ms for 10,000 backends. But after `t` picks a backend's score is
/// `t x weight - total x (times it won)`, so backends of equal weight differ only by how often they
/// have won, and among them the one that has won least (the lowest index on a tie) is the best: they
/// take their turns in index order. So we track one candidate per distinct weight, and the cost is
/// O(sum x distinct weights), with exactly nginx's sequence (`matches_the_naive_procedure` checks it).
fn smooth_cycle(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let mut classes: Vec<WeightClass> = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        match classes.iter_mut().find(|c| c.weight == w) {
            Some(c) => c.members.push(i as u32),
            None => classes.push(WeightClass { weight: w, members: vec![i as u32], turns: 0 }),
        }
    }
    let mut cycle = Vec::with_capacity(total as usize);
    for t in 1..=total {
        // The best of each class: score t x w - total x (its wins), and its wins are turns / size.
        let mut best: Option<Turn> = None;
        for (class, c) in classes.iter().enumerate() {
            let size = c.members.len() as u64;
            let score = i128::from(t) * i128::from(c.weight) - i128::from(total) * i128::from(c.turns / size);
            let index = c.members[(c.turns % size) as usize];
            // Highest score; on a tie the lowest backend index, as nginx's first-wins scan.
            if best.is_none_or(|b| score > b.score || (score == b.score && index < b.index)) {
                best = Some(Turn { score, index, class });
            }
        }
        let Some(Turn { index, class, .. }) = best else { break };
        classes[class].turns += 1;
        cycle.push(index);
    }
    cycle
}

/// Backends of equal weight in [`smooth_cycle`]: they take their turns in index order.
#[derive(Debug)]
struct WeightClass {
    weight: u64,
    /// Backend indices, in order.
    members: Vec<u32>,
    /// Turns the class has had so far.
    turns: u64,
}

/// A class's candidate for one turn of [`smooth_cycle`].
#[derive(Debug, Clone, Copy)]
struct Turn {
    /// nginx's current weight of the backend.
    score: i128,
    /// The backend.
    index: u32,
    /// Its class, an index into the classes.
    class: usize,
}

impl Balancer for WeightedRoundRobin {
    fn algorithm(&self) -> Algorithm {
        Algorithm::WeightedRoundRobin
    }

    fn backends(&self) -> &Arc<BackendSet> {
        &self.set
    }

    fn pick(&self, req: &PickRequest<'_>, mut explain: Option<&mut Explain>) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        let panic = self.set.in_panic();
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % len;
        let mut rejected = [usize::MAX; MAX_REJECTED];
        let mut n_rejected = 0;
        for step in 0..len.min(WALK) {
            let i = self.cycle[(slot + step) % len] as usize;
            if let Some(why) = unavailable(&self.set, panic, i, req) {
                if let Some(e) = explain.as_deref_mut() {
                    e.skip(i, why);
                }
                continue;
            }
            if rejected[..n_rejected].contains(&i) {
                continue;
            }
            if ramp_rejects(&self.set, i, req.now, &self.rng) {
                if let Some(e) = explain.as_deref_mut() {
                    e.skip(i, SkipReason::SlowStart);
                }
                if n_rejected == MAX_REJECTED {
                    break;
                }
                rejected[n_rejected] = i;
                n_rejected += 1;
                continue;
            }
            if let Some(e) = explain {
                e.reason = format!(
                    "weighted-round-robin: slot {slot} of {len}, picked {} (weight {})",
                    label(&self.set, i),
                    self.set.backends()[i].weight()
                );
            }
            return Some(i);
        }
        // Most of the fleet is down (or ramping): take the first available backend after the slot's,
        // ignoring slow start, rather than walk the whole cycle.
        let start = self.cycle[slot] as usize;
        let picked = first_available(&self.set, start, req, explain.as_deref_mut())?;
        if let Some(e) = explain {
            e.reason = format!(
                "weighted-round-robin: slot {slot} of {len}, fell back to {}",
                label(&self.set, picked)
            );
        }
        Some(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Health, SetOptions};

    fn wrr(weights: &[u32]) -> WeightedRoundRobin {
        wrr_with(weights, SetOptions::default())
    }

    fn wrr_with(weights: &[u32], options: SetOptions) -> WeightedRoundRobin {
        let specs = weights.iter().enumerate().map(|(i, &w)| BackendSpec::weighted(format!("b{i}"), w));
        WeightedRoundRobin::new(BackendSet::new(specs, options))
    }

    fn letters(b: &WeightedRoundRobin, count: usize) -> String {
        (0..count)
            .map(|_| b.pick(&PickRequest::new(0), None).map_or('-', |i| (b'a' + i as u8) as char))
            .collect()
    }

    #[test]
    fn five_one_one_interleaves_like_nginx() {
        // nginx's scores (current += weight for all; the highest wins; the winner pays back 7):
        //   pick  after += weight   winner  after -= 7
        //   1     [ 5,  1,  1]      a       [-2,  1,  1]
        //   2     [ 3,  2,  2]      a       [-4,  2,  2]
        //   3     [ 1,  3,  3]      b       [ 1, -4,  3]   (tie b/c: the first wins)
        //   4     [ 6, -3,  4]      a       [-1, -3,  4]
        //   5     [ 4, -2,  5]      c       [ 4, -2, -2]
        //   6     [ 9, -1, -1]      a       [ 2, -1, -1]
        //   7     [ 7,  0,  0]      a       [ 0,  0,  0]   back to the start: the cycle repeats
        let b = wrr(&[5, 1, 1]);
        assert_eq!(b.cycle(), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(letters(&b, 14), "aabacaaaabacaa");
    }

    #[test]
    fn one_to_three_gives_exactly_a_hundred_and_three_hundred_in_four_hundred() {
        // Scores for {1, 3}, total 4:
        //   1: [1, 3] -> b, [ 1, -1];  2: [2, 2] -> a (tie, first), [-2, 2]
        //   3: [-1, 5] -> b, [-1, 1];  4: [0, 4] -> b, [ 0, 0]
        // Cycle "b a b b"; 400 picks are 100 whole cycles.
        assert_eq!(letters(&wrr(&[1, 3]), 8), "babbbabb");
        let b = wrr(&[1, 3]);
        let mut counts = [0usize; 2];
        for _ in 0..400 {
            counts[b.pick(&PickRequest::new(0), None).unwrap_or(9)] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn common_factors_are_divided_out_and_huge_sums_are_capped() {
        assert_eq!(wrr(&[500, 100, 100]).cycle(), wrr(&[5, 1, 1]).cycle());
        assert_eq!(wrr(&[7, 7, 7]).cycle(), [0, 1, 2]);
        // Sum 300,001 (no common factor) > 65,536: scaled by 65,536 / 300,001 and floored: 43,690 and
        // 21,845.
        let big = wrr(&[200_001, 100_000]);
        assert_eq!(big.cycle().len(), 43_690 + 21_845);
        let a = big.cycle().iter().filter(|&&i| i == 0).count();
        assert_eq!(a, 43_690);
    }

    #[test]
    fn an_unavailable_backend_passes_its_slots_on_and_the_rest_keep_their_ratio() {
        let b = wrr(&[5, 1, 1]);
        b.backends().set_health(1, Health::Unhealthy, 0);
        // Cycle a a b a c a a: b's slot (3rd) walks on to the next slot, a.
        assert_eq!(letters(&b, 7), "aaaacaa");
        let retry = [0];
        let req = PickRequest::new(0).excluding(&retry);
        // Ticket 7 is slot 0: a (already tried), a (tried), b (down), a (tried), then c at slot 4.
        assert_eq!(b.pick(&req, None), Some(2));
    }

    #[test]
    fn none_when_nothing_is_selectable_and_a_fallback_past_a_long_walk() {
        let b = wrr(&[100, 1]);
        b.backends().set_health(0, Health::Draining, 0);
        // 101-slot cycle, 100 of them `a`: the 64-slot walk may not reach `b`; the fallback scan does.
        for _ in 0..202 {
            assert_eq!(b.pick(&PickRequest::new(0), None), Some(1));
        }
        b.backends().set_health(1, Health::Draining, 0);
        assert_eq!(b.pick(&PickRequest::new(0), None), None);
    }

    #[test]
    fn a_backend_ramping_at_a_tenth_gets_about_a_tenth_of_its_share() {
        let b = wrr_with(&[1; 10], SetOptions { slow_start: Some(1_000_000), ..SetOptions::default() });
        b.backends().set_health(0, Health::Unhealthy, 0);
        b.backends().set_health(0, Health::Healthy, 0);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[b.pick(&PickRequest::new(0), None).unwrap_or(0)] += 1;
        }
        // Backend 0 owns 10,000 slots and takes each with probability 0.1: 1,000 expected, standard
        // deviation 30, so +-150 is 5 sigma. Its turned-down slots go to backend 1, the next slot.
        assert!((850..=1_150).contains(&counts[0]), "{counts:?}");
        assert!(counts[2..].iter().all(|&c| c == 10_000), "{counts:?}");
    }

    /// nginx's procedure as written: every score grows, the highest wins, the winner pays the total.
    fn naive_cycle(weights: &[u64]) -> Vec<u32> {
        let total: u64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::new();
        for _ in 0..total {
            let mut best = 0;
            for i in 0..weights.len() {
                current[i] += weights[i] as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            cycle.push(best as u32);
        }
        cycle
    }

    #[test]
    fn matches_the_naive_procedure() {
        let rng = crate::rng::Rng::seeded(9);
        for case in 0..300 {
            let n = 1 + rng.below(12);
            let weights: Vec<u64> =
                (0..n).map(|_| 1 + rng.below(if case % 2 == 0 { 4 } else { 40 }) as u64).collect();
            assert_eq!(smooth_cycle(&weights), naive_cycle(&weights), "{weights:?}");
        }
    }

    #[test]
    fn explains_the_slot() {
        let b = wrr(&[5, 1, 1]);
        b.backends().set_health(0, Health::Ejected, 0);
        let mut e = Explain::default();
        assert_eq!(b.pick(&PickRequest::new(0), Some(&mut e)), Some(1));
        assert_eq!(e.skipped, vec![(0, SkipReason::Health(Health::Ejected)); 2]);
        assert_eq!(e.reason, "weighted-round-robin: slot 0 of 7, picked b1 (weight 1)");
    }
}
