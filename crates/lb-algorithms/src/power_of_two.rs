//! Power of two choices: draw two backends at random, send the request to the less loaded one.
//!
//! **Idea.** Least-connections looks at every backend to find the least loaded; random looks at none.
//! Looking at just *two*, chosen at random, gets almost all of the benefit of looking at all of them. With
//! `n` requests thrown at `n` backends, purely random placement leaves the busiest backend with about
//! `ln n / ln ln n` requests; choosing the lesser of two random backends brings that down to
//! `ln ln n / ln 2 + O(1)`: an *exponential* improvement, from one extra look. (The intuition: for a
//! backend to reach load `k`, both candidates of its `k`-th request must already have been at `k - 1`;
//! the fraction of heavily loaded backends squares at each level instead of shrinking linearly.)
//!
//! Two choices also behave better than "pick the global minimum" when many proxies share the backends or
//! the load numbers are a little stale: every proxy that sees the same minimum sends everything there
//! (herding), while two random candidates spread the requests even on stale information.
//!
//! **Load and weights.** With equal weights, the candidate with fewer requests in flight wins (a tie goes
//! to the first drawn, itself random). With unequal weights (or slow start ramping one), we use Envoy's
//! score `effective_weight / (in_flight + 1)^bias`, higher is better, with `bias` =
//! [`AlgorithmOptions::active_request_bias`] (1.0 by default: load per unit of weight; 0 ignores load and
//! becomes weighted random between the two).
//!
//! **Cost.** O(1) per pick: two draws, two atomic loads. Unavailable candidates (unhealthy, draining,
//! already tried) are redrawn a few times; if that fails (most of the fleet down), one O(n) pass samples
//! two distinct candidates uniformly from the available ones, which also covers exactly zero, one or two
//! available. State: the RNG.
//!
//! **When to use it.** The default choice for a busy fleet with requests of variable cost: it reacts to
//! load like least-connections at the price of random, and scales to thousands of backends. **When not:**
//! when requests must stick to a backend (use hashing); when backends differ in *speed* rather than in
//! load, a slow backend with few in flight still looks attractive: peak EWMA sees latency.
//!
//! **Elsewhere.** Envoy: `LEAST_REQUEST` (two choices by default, `choice_count`, `active_request_bias`).
//! nginx: `random two least_conn`. HAProxy: `balance random(2)`. Sources: Mitzenmacher, "The Power of Two
//! Choices in Randomized Load Balancing" (PhD thesis 1996; IEEE TPDS 2001); Azar, Broder, Karlin and
//! Upfal, "Balanced Allocations" (STOC 1994).
//!
//! [`AlgorithmOptions::active_request_bias`]: crate::AlgorithmOptions::active_request_bias

use std::sync::Arc;

use crate::rng::Rng;
use crate::{
    Algorithm, AlgorithmOptions, BackendSet, Balancer, Explain, PickRequest, SkipReason, label, unavailable,
};

/// Draws per candidate before falling back to a scan.
const TRIES: usize = 8;

/// Two random candidates, the less loaded wins.
#[derive(Debug)]
pub struct PowerOfTwo {
    set: Arc<BackendSet>,
    rng: Rng,
    bias: f64,
    /// Every backend has the same configured weight: compare in-flight counts directly, unless slow
    /// start is configured (then a ramping backend's effective weight differs).
    equal_weights: bool,
}

impl PowerOfTwo {
    /// A balancer seeded with `options.seed`, using `options.active_request_bias` for unequal weights.
    pub fn new(set: Arc<BackendSet>, options: &AlgorithmOptions) -> Self {
        let equal_weights = set.options().slow_start.is_none()
            && set.backends().windows(2).all(|w| w[0].weight() == w[1].weight());
        PowerOfTwo { set, rng: Rng::seeded(options.seed), bias: options.active_request_bias, equal_weights }
    }

    /// Does `b` beat `a` on Envoy's score `effective_weight / (in_flight + 1)^bias` (higher is better)?
    /// Compared by cross-multiplication, `w_b x load_a > w_a x load_b`, to keep divisions off the pick.
    #[inline]
    fn b_scores_higher(&self, a: usize, b: usize, now: u64) -> bool {
        let backends = self.set.backends();
        let load = |i: usize| {
            let active = backends[i].in_flight() as f64 + 1.0;
            if self.bias == 1.0 {
                active
            } else if self.bias == 0.0 {
                1.0
            } else {
                active.powf(self.bias)
            }
        };
        self.set.effective_weight(b, now) * load(a) > self.set.effective_weight(a, now) * load(b)
    }
}

/// Two distinct random backends that can be picked for `req`: `(a, b)` with `b` `None` when only one is
/// available, `None` when none is. Shared with peak EWMA.
pub(crate) fn two_candidates(
    set: &BackendSet,
    rng: &Rng,
    req: &PickRequest<'_>,
    mut explain: Option<&mut Explain>,
) -> Option<(usize, Option<usize>)> {
    let n = set.len();
    if n == 0 {
        return None;
    }
    let panic = set.in_panic();
    let mut note = |i: usize, why: SkipReason| {
        if let Some(e) = explain.as_deref_mut() {
            e.skip(i, why);
        }
    };
    // One 64-bit draw gives both candidates: the high half of `r x n` is the first (Lemire's
    // multiply-shift), and the low half is a fresh uniform number for the second. Each draw is an
    // atomic read-modify-write on the shared RNG, the dearest step of a pick, so this saves one.
    let mut first = None;
    for _ in 0..TRIES {
        let m = u128::from(rng.next_u64()) * n as u128;
        let i = (m >> 64) as usize;
        match unavailable(set, panic, i, req) {
            None => {
                first = Some((i, m as u64));
                break;
            }
            Some(why) => note(i, why),
        }
    }
    let Some((a, mut spare)) = first else { return sample_scan(set, panic, rng, req, None) };
    if n > 1 {
        for attempt in 0..TRIES {
            let bits = if attempt == 0 { spare } else { rng.next_u64() };
            spare = 0;
            // Uniform over the other n - 1 backends: a distinct second candidate, without a division.
            let mut j = a + 1 + ((u128::from(bits) * (n - 1) as u128) >> 64) as usize;
            if j >= n {
                j -= n;
            }
            match unavailable(set, panic, j, req) {
                None => return Some((a, Some(j))),
                Some(why) => note(j, why),
            }
        }
    }
    sample_scan(set, panic, rng, req, Some(a))
}

/// The slow path: reservoir-sample two distinct available backends (or one besides `first`, when the
/// first draw succeeded) in one pass.
fn sample_scan(
    set: &BackendSet,
    panic: bool,
    rng: &Rng,
    req: &PickRequest<'_>,
    first: Option<usize>,
) -> Option<(usize, Option<usize>)> {
    let want = if first.is_some() { 1 } else { 2 };
    let mut chosen = [usize::MAX; 2];
    let mut seen = 0usize;
    for i in 0..set.len() {
        if Some(i) == first || unavailable(set, panic, i, req).is_some() {
            continue;
        }
        seen += 1;
        if seen <= want {
            chosen[seen - 1] = i;
        } else {
            // Algorithm R: keep the k-th item with probability want / k, in a uniformly chosen slot.
            let r = rng.below(seen);
            if r < want {
                chosen[r] = i;
            }
        }
    }
    let found = seen.min(want);
    match (first, found) {
        (Some(a), 0) => Some((a, None)),
        (Some(a), _) => Some((a, Some(chosen[0]))),
        (None, 0) => None,
        (None, 1) => Some((chosen[0], None)),
        // The reservoir keeps scan order; shuffle the pair so a tie (won by the first) is a coin flip.
        (None, _) if rng.below(2) == 0 => Some((chosen[0], Some(chosen[1]))),
        (None, _) => Some((chosen[1], Some(chosen[0]))),
    }
}

impl Balancer for PowerOfTwo {
    fn algorithm(&self) -> Algorithm {
        Algorithm::PowerOfTwo
    }

    fn backends(&self) -> &Arc<BackendSet> {
        &self.set
    }

    fn pick(&self, req: &PickRequest<'_>, mut explain: Option<&mut Explain>) -> Option<usize> {
        let (a, b) = two_candidates(&self.set, &self.rng, req, explain.as_deref_mut())?;
        let Some(b) = b else {
            if let Some(e) = explain {
                e.reason = format!("p2c: {} was the only candidate", label(&self.set, a));
            }
            return Some(a);
        };
        let backends = self.set.backends();
        let b_wins = if self.equal_weights {
            backends[b].in_flight() < backends[a].in_flight()
        } else {
            self.b_scores_higher(a, b, req.now)
        };
        let (winner, loser) = if b_wins { (b, a) } else { (a, b) };
        if let Some(e) = explain {
            let describe = |i: usize| {
                format!(
                    "{} (in-flight {}, weight {})",
                    label(&self.set, i),
                    backends[i].in_flight(),
                    self.set.effective_weight(i, req.now)
                )
            };
            e.reason = format!("p2c: {} beat {}", describe(winner), describe(loser));
        }
        Some(winner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Health, InFlightGuard, SetOptions};

    fn p2c(weights: &[u32], options: SetOptions, seed: u64) -> PowerOfTwo {
        let specs = weights.iter().enumerate().map(|(i, &w)| BackendSpec::weighted(format!("b{i}"), w));
        PowerOfTwo::new(
            BackendSet::new(specs, options),
            &AlgorithmOptions { seed, ..AlgorithmOptions::default() },
        )
    }

    fn hold(b: &PowerOfTwo, index: usize, count: usize) -> Vec<InFlightGuard> {
        (0..count).filter_map(|_| b.set.start(index, 0)).collect()
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        let b = p2c(&[1, 1], SetOptions::default(), 1);
        let _load = hold(&b, 0, 3);
        // Two backends: both are always the candidates, and b1 (0 in flight) beats b0 (3).
        for _ in 0..100 {
            assert_eq!(b.pick(&PickRequest::new(0), None), Some(1));
        }
    }

    #[test]
    fn the_most_loaded_backend_is_never_picked() {
        // It can only be picked if it is compared with itself, and the candidates are distinct.
        let b = p2c(&[1; 10], SetOptions::default(), 2);
        let _load = hold(&b, 7, 1);
        let mut counts = [0usize; 10];
        for _ in 0..10_000 {
            counts[b.pick(&PickRequest::new(0), None).unwrap_or(7)] += 1;
        }
        assert_eq!(counts[7], 0, "{counts:?}");
        // The other nine share evenly: 1,111 expected; a backend is picked when it is a candidate and
        // wins the tie: standard deviation ~32, so +-250 is a wide margin.
        assert!(counts.iter().enumerate().all(|(i, &c)| i == 7 || (861..=1_361).contains(&c)), "{counts:?}");
    }

    #[test]
    fn held_picks_stay_balanced_where_random_would_not() {
        // 1,000 requests held on 100 backends: each pick sees the load of the ones before it. Two
        // choices keep the busiest at the average of 10 plus a small constant; random placement would
        // reach about 19 (ln n / ln ln n above the mean, for this many balls).
        let b = p2c(&[1; 100], SetOptions::default(), 3);
        let mut guards = Vec::new();
        for _ in 0..1_000 {
            let i = b.pick(&PickRequest::new(0), None).unwrap_or(0);
            guards.extend(b.set.start(i, 0));
        }
        let max = b.set.backends().iter().map(|x| x.in_flight()).max().unwrap_or(0);
        assert!(max <= 13, "busiest backend holds {max}");
    }

    #[test]
    fn unequal_weights_share_load_by_weight() {
        // Score weight / (in_flight + 1): with weights 1 and 3 and every pick held, b1 keeps
        // (in_flight + 1) about 3x b0's. Of 400 held picks b0 holds 100, give or take one (ties).
        let b = p2c(&[1, 3], SetOptions::default(), 4);
        let mut guards = Vec::new();
        for _ in 0..400 {
            let i = b.pick(&PickRequest::new(0), None).unwrap_or(0);
            guards.extend(b.set.start(i, 0));
        }
        let a = b.set.backends()[0].in_flight();
        assert!((99..=101).contains(&a), "b0 holds {a}");
    }

    #[test]
    fn bias_zero_ignores_load() {
        let specs = [BackendSpec::weighted("a", 1), BackendSpec::weighted("b", 3)];
        let set = BackendSet::new(specs, SetOptions::default());
        let options = AlgorithmOptions { active_request_bias: 0.0, ..AlgorithmOptions::default() };
        let b = PowerOfTwo::new(set, &options);
        let _load = hold(&b, 1, 50);
        assert_eq!(b.pick(&PickRequest::new(0), None), Some(1), "weight 3 beats 1 whatever the load");
    }

    #[test]
    fn zero_one_and_two_available() {
        let b = p2c(&[1, 1, 1], SetOptions { panic_threshold: 0.0, ..SetOptions::default() }, 5);
        b.set.set_health(0, Health::Unhealthy, 0);
        let _load = hold(&b, 1, 2);
        // Two available, b1 loaded: always b2.
        assert!((0..100).all(|_| b.pick(&PickRequest::new(0), None) == Some(2)));
        // One available: it, however loaded.
        let tried = [2];
        assert!((0..100).all(|_| b.pick(&PickRequest::new(0).excluding(&tried), None) == Some(1)));
        // None available.
        b.set.set_health(1, Health::Draining, 0);
        assert_eq!(b.pick(&PickRequest::new(0).excluding(&tried), None), None);
    }

    #[test]
    fn the_scan_fallback_samples_uniformly() {
        // 1,000 backends, only 0 and 999 up: draws almost always fail and the scan finds both.
        let b = p2c(&[1; 1_000], SetOptions { panic_threshold: 0.0, ..SetOptions::default() }, 6);
        for i in 1..999 {
            b.set.set_health(i, Health::Ejected, 0);
        }
        let mut counts = [0usize; 2];
        for _ in 0..1_000 {
            match b.pick(&PickRequest::new(0), None) {
                Some(0) => counts[0] += 1,
                Some(999) => counts[1] += 1,
                other => panic!("picked {other:?}"),
            }
        }
        // Equal load: the first of the two candidates wins the tie; both orders are equally likely.
        assert!(counts.iter().all(|&c| (400..=600).contains(&c)), "{counts:?}");
    }

    #[test]
    fn slow_start_lowers_the_score_of_a_ramping_backend() {
        let b = p2c(&[1, 1], SetOptions { slow_start: Some(1_000), ..SetOptions::default() }, 7);
        b.set.set_health(0, Health::Unhealthy, 0);
        b.set.set_health(0, Health::Healthy, 0);
        // b0 at ramp 0.1 scores 0.1 / 1; b1 with 5 in flight scores 1 / 6 = 0.17: b1 still wins.
        let _load = hold(&b, 1, 5);
        assert_eq!(b.pick(&PickRequest::new(0), None), Some(1));
        // Past the window both weigh 1 and the idle b0 wins.
        assert_eq!(b.pick(&PickRequest::new(1_000), None), Some(0));
    }

    #[test]
    fn same_seed_same_picks_and_explained() {
        let a = p2c(&[1; 5], SetOptions::default(), 8);
        let c = p2c(&[1; 5], SetOptions::default(), 8);
        let pa: Vec<_> = (0..50).map(|_| a.pick(&PickRequest::new(0), None)).collect();
        let pc: Vec<_> = (0..50).map(|_| c.pick(&PickRequest::new(0), None)).collect();
        assert_eq!(pa, pc);

        let b = p2c(&[1, 1], SetOptions::default(), 9);
        let _load = hold(&b, 0, 4);
        let mut e = Explain::default();
        assert_eq!(b.pick(&PickRequest::new(0), Some(&mut e)), Some(1));
        assert_eq!(e.reason, "p2c: b1 (in-flight 0, weight 1) beat b0 (in-flight 4, weight 1)");
    }
}
