//! Random: any backend, with a probability proportional to its weight.
//!
//! **Idea.** Draw a backend at random for every request. Over many requests every backend gets its
//! share, and no state is shared between picks except the random generator: no counter for all threads
//! to fight over, and two balancers in two proxies never fall into step with each other (two round-robin
//! proxies started together both send their first request to backend 0).
//!
//! **Weights in O(1): the alias table.** With unequal weights we use Vose's *alias method*. Cut the
//! probability mass into `n` columns of height 1, column `i` holding backend `i`'s mass up to
//! `prob[i]` and the rest of the column filled by one other backend, `alias[i]`. Building is O(n):
//! repeatedly pair a backend below the average with one above it, and let the big one fill the small
//! one's column. A pick is one random number: its high part chooses the column, its low part decides
//! between the column's owner and its alias. With equal weights we skip the table: `below(n)`.
//!
//! **Cost.** O(1) per pick (one atomic `fetch_add` on the RNG state, a multiply, a table read). State: the
//! alias table (12 bytes per backend) and the RNG.
//!
//! **Skipping and slow start.** An unavailable or already-tried backend, or a ramping backend that loses
//! its acceptance test (probability = its ramp factor), means a new draw. That keeps the other backends'
//! relative weights exact: backend `i` ends up with probability proportional to `weight x ramp`. After
//! 16 draws in vain (most of the fleet down) we fall back to the first available backend after a random
//! start, ignoring slow start.
//!
//! **When to use it.** Many proxies in front of the same backends, each knowing only its own traffic
//! (random needs no coordination and does not synchronise); or as the baseline every other algorithm is
//! measured against. **When not:** small fleets with variable request cost: random is *blind*, and with
//! `n` requests on `n` backends the busiest one gets about `ln n / ln ln n` of them (the balls-into-bins
//! bound), where power of two choices gets `ln ln n`.
//!
//! **Elsewhere.** nginx: `random` (and `random two` for power of two). HAProxy: `balance random` (with
//! `random(1)`). Envoy: `lb_policy: RANDOM`. Vose, "A linear algorithm for generating random numbers with
//! a given distribution", IEEE TSE 1991; Walker's original alias method, 1974.

use std::sync::Arc;

use crate::rng::Rng;
use crate::{
    Algorithm, BackendSet, Balancer, Explain, PickRequest, SkipReason, first_available, label, ramp_rejects,
    unavailable,
};

/// Draws before falling back to a scan.
const TRIES: usize = 16;

/// Weighted random choice over an alias table.
#[derive(Debug)]
pub struct Random {
    set: Arc<BackendSet>,
    /// `None` when every weight is equal: a plain uniform draw.
    table: Option<AliasTable>,
    rng: Rng,
}

/// Vose's alias table: column `i` is backend `i` with probability `threshold[i] / 2^64`, else `alias[i]`.
#[derive(Debug)]
struct AliasTable {
    threshold: Vec<u64>,
    alias: Vec<u32>,
}

impl AliasTable {
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        // Scale so the average column is exactly 1.
        let mut p: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut threshold = vec![u64::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| p[i] < 1.0);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            threshold[s] = to_threshold(p[s]);
            alias[s] = l as u32;
            // The large one gave `1 - p[s]` of its mass to fill column s.
            p[l] -= 1.0 - p[s];
            if p[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1 up to rounding error: a full column of its own (the defaults above).
        AliasTable { threshold, alias }
    }

    /// One draw: the high bits of `r x n` choose the column, the low bits are a fresh uniform fraction
    /// (Lemire's multiply-shift gives both from one 64-bit number).
    #[inline]
    fn sample(&self, r: u64) -> usize {
        let m = u128::from(r) * self.threshold.len() as u128;
        let column = (m >> 64) as usize;
        if (m as u64) < self.threshold[column] { column } else { self.alias[column] as usize }
    }
}

fn to_threshold(p: f64) -> u64 {
    // `as` saturates: p >= 1 becomes u64::MAX, which is "always the owner" (bar 2^-64).
    (p * 18_446_744_073_709_551_616.0) as u64
}

impl Random {
    /// A random balancer drawing from a generator seeded with `seed`.
    pub fn new(set: Arc<BackendSet>, seed: u64) -> Self {
        let backends = set.backends();
        let equal = backends.windows(2).all(|w| w[0].weight() == w[1].weight());
        let table = (!equal).then(|| {
            let weights: Vec<f64> = backends.iter().map(|b| f64::from(b.weight())).collect();
            AliasTable::new(&weights)
        });
        Random { set, table, rng: Rng::seeded(seed) }
    }

    #[inline]
    fn draw(&self) -> usize {
        match &self.table {
            Some(t) => t.sample(self.rng.next_u64()),
            None => self.rng.below(self.set.len()),
        }
    }
}

impl Balancer for Random {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Random
    }

    fn backends(&self) -> &Arc<BackendSet> {
        &self.set
    }

    fn pick(&self, req: &PickRequest<'_>, mut explain: Option<&mut Explain>) -> Option<usize> {
        let n = self.set.len();
        if n == 0 {
            return None;
        }
        let panic = self.set.in_panic();
        for attempt in 1..=TRIES {
            let i = self.draw();
            let why = match unavailable(&self.set, panic, i, req) {
                None if ramp_rejects(&self.set, i, req.now, &self.rng) => Some(SkipReason::SlowStart),
                other => other,
            };
            match why {
                Some(why) => {
                    if let Some(e) = explain.as_deref_mut() {
                        e.skip(i, why);
                    }
                }
                None => {
                    if let Some(e) = explain {
                        let weight = self.set.backends()[i].weight();
                        e.reason = format!(
                            "random: draw {attempt} picked {} (weight {weight})",
                            label(&self.set, i)
                        );
                    }
                    return Some(i);
                }
            }
        }
        let picked = first_available(&self.set, self.rng.below(n), req, explain.as_deref_mut())?;
        if let Some(e) = explain {
            e.reason = format!("random: {TRIES} draws in vain, fell back to {}", label(&self.set, picked));
        }
        Some(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Health, SetOptions};

    fn random(weights: &[u32], options: SetOptions, seed: u64) -> Random {
        let specs = weights.iter().enumerate().map(|(i, &w)| BackendSpec::weighted(format!("b{i}"), w));
        Random::new(BackendSet::new(specs, options), seed)
    }

    fn counts(b: &Random, picks: usize, now: u64) -> Vec<usize> {
        let mut counts = vec![0; b.set.len()];
        for _ in 0..picks {
            if let Some(i) = b.pick(&PickRequest::new(now), None) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn alias_table_columns_hold_exactly_the_weights() {
        // Weights 3:1 on 2 columns of height 1 (scaled p = 1.5, 0.5): column 1 is half b1, half b0;
        // column 0 is all b0. So b0 = 1 + 0.5 = 1.5 of 2 = 75%.
        let t = AliasTable::new(&[3.0, 1.0]);
        assert_eq!(t.alias, [0, 0]);
        assert_eq!(t.threshold, [u64::MAX, 1 << 63]);
        // The mass of each backend, read back from the table, equals its weight share.
        let t = AliasTable::new(&[5.0, 1.0, 1.0, 3.0]);
        let mut mass = [0.0f64; 4];
        for c in 0..4 {
            let own = t.threshold[c] as f64 / 18_446_744_073_709_551_616.0;
            mass[c] += own;
            mass[t.alias[c] as usize] += 1.0 - own;
        }
        for (m, w) in mass.iter().zip([5.0, 1.0, 1.0, 3.0]) {
            assert!((m / 4.0 - w / 10.0).abs() < 1e-12, "{mass:?}");
        }
    }

    #[test]
    fn uniform_within_one_percent() {
        let b = random(&[1, 1, 1, 1], SetOptions::default(), 1);
        // 25,000 expected each; standard deviation ~137, so +-1,000 (1% of the picks) is over 7 sigma.
        for c in counts(&b, 100_000, 0) {
            assert!((24_000..=26_000).contains(&c), "{c}");
        }
    }

    #[test]
    fn weights_three_to_one_within_one_percent() {
        let b = random(&[3, 1], SetOptions::default(), 2);
        let c = counts(&b, 100_000, 0);
        // 75,000 expected; standard deviation sqrt(100,000 x 0.75 x 0.25) ~ 137; +-1,000 is 7 sigma.
        assert!((74_000..=76_000).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn same_seed_same_picks() {
        let a = random(&[1, 2, 3], SetOptions::default(), 42);
        let b = random(&[1, 2, 3], SetOptions::default(), 42);
        let pa: Vec<_> = (0..50).map(|_| a.pick(&PickRequest::new(0), None)).collect();
        let pb: Vec<_> = (0..50).map(|_| b.pick(&PickRequest::new(0), None)).collect();
        assert_eq!(pa, pb);
    }

    #[test]
    fn never_an_unavailable_or_excluded_backend_and_none_when_all_are() {
        let b = random(&[1, 5, 1, 1], SetOptions::default(), 3);
        b.set.set_health(1, Health::Ejected, 0);
        let tried = [2];
        let req = PickRequest::new(0).excluding(&tried);
        for _ in 0..1_000 {
            let i = b.pick(&req, None);
            assert!(matches!(i, Some(0 | 3)), "{i:?}");
        }
        let all = [0, 2, 3];
        assert_eq!(b.pick(&PickRequest::new(0).excluding(&all), None), None);
    }

    #[test]
    fn a_backend_ramping_at_a_tenth_gets_a_tenth_of_its_weight() {
        let b = random(&[1; 10], SetOptions { slow_start: Some(1_000_000), ..SetOptions::default() }, 4);
        b.set.set_health(0, Health::Unhealthy, 0);
        b.set.set_health(0, Health::Healthy, 0);
        let c = counts(&b, 100_000, 0);
        // Effective weights 0.1 and 9 x 1: backend 0's share is 0.1 / 9.1 = 1.1%, 1,099 picks expected,
        // standard deviation ~33; +-200 is 6 sigma (without slow start it would get 10,000).
        assert!((899..=1_299).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn explains_the_draws() {
        let b = random(&[1, 1], SetOptions::default(), 5);
        b.set.set_health(0, Health::Draining, 0);
        let mut e = Explain::default();
        assert_eq!(b.pick(&PickRequest::new(0), Some(&mut e)), Some(1));
        let draws = e.skipped.len() + 1;
        assert!(e.skipped.iter().all(|&s| s == (0, SkipReason::Health(Health::Draining))));
        assert_eq!(e.reason, format!("random: draw {draws} picked b1 (weight 1)"));
    }
}
