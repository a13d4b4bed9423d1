//! Peak EWMA: power of two choices where the load is *expected latency*, not a request count.
//!
//! **Idea.** Least-connections and power of two count requests in flight, so a backend that answers in
//! 200 ms with 2 requests in flight looks better than one that answers in 2 ms with 3. Peak EWMA scores
//! each backend by `latency estimate x (in_flight + 1)`: roughly how long a new request would wait there
//! if the backend worked through its queue one by one. The latency estimate is the backend's peak EWMA
//! ([`crate::ewma`]): it jumps up at once on a slow response (a backend that just started to struggle is
//! avoided immediately) and comes down smoothly over the decay time [`SetOptions::ewma_decay`] (10 s by
//! default, Finagle's and Linkerd's value). Reading the estimate also decays it with idle time, so a
//! backend that was slow once is eventually tried again and re-measured. Two random candidates are
//! compared, as in [`crate::power_of_two`]; the lower cost wins. With unequal weights (or slow start) the
//! cost is divided by the effective weight and the in-flight term is raised to
//! [`AlgorithmOptions::active_request_bias`] (1 by default, the plain product).
//!
//! **A backend with no measurement yet** is costed at the *mean of the fleet's current estimates* (over
//! the selectable backends that have one), or at [`SetOptions::ewma_default_rtt`] when nobody has one.
//! Why not a fixed default: Linkerd assumes 30 ms, so among backends answering in 1 ms a new one would be
//! avoided until the others held 30 requests each (starved); assuming 0 would make it win every
//! comparison until its first response came back (flooded, which is the cold-cache moment slow start
//! exists to protect). At the fleet mean it takes an average backend's share, and its in-flight term
//! still counts while the first requests are out. The mean is an O(n) scan, so it is cached and
//! recomputed at most every [`MEAN_REFRESH`] (100 ms) of the pick clock, and only when a candidate has no
//! data: two threads may race to refresh it, which is harmless.
//!
//! **Cost.** O(1) per pick: one draw, two estimate reads (two atomic loads each and a decay factor).
//! The decay factor `exp(-elapsed / decay)` is the dear part, so `ewma.rs` skips it within
//! `decay / 1024` of the last sample (under 0.1% off; 10 ms at the default decay, the common case on a
//! busy backend), uses a cubic Taylor polynomial up to `decay / 64` (error below 2.5e-9) and `exp` only
//! beyond. Measured at 1,000 backends: about 25 ns a pick with estimates, 23 ns without (criterion).
//! State: the RNG and the cached mean; the estimates live in the backends.
//!
//! **When to use it.** Backends that differ in speed or slow down unpredictably (GC pauses, noisy
//! neighbours, a degraded disk): peak EWMA moves traffic away within one response. **When not:** when the
//! proxy's view of latency is not the backend's (a long-polling or streaming endpoint whose "latency" is
//! the stream's length), or with very little traffic, where the estimates are mostly stale defaults.
//!
//! **Elsewhere.** Finagle: `Balancers.p2cPeakEwma` (its origin; Twitter's 2016 "Load balancing at
//! scale" talk). Linkerd 2: the proxy's default balancer. tower: `tower::balance::p2c` over
//! `tower::load::PeakEwma`. Not built into nginx, HAProxy or Envoy (Envoy's `LEAST_REQUEST` counts
//! requests only).
//!
//! [`SetOptions::ewma_decay`]: crate::SetOptions::ewma_decay
//! [`SetOptions::ewma_default_rtt`]: crate::SetOptions::ewma_default_rtt
//! [`AlgorithmOptions::active_request_bias`]: crate::AlgorithmOptions::active_request_bias

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::power_of_two::two_candidates;
use crate::rng::Rng;
use crate::{Algorithm, AlgorithmOptions, BackendSet, Balancer, Explain, Nanos, PickRequest, label};

/// How long the cached fleet mean is reused before it is recomputed (nanoseconds of the pick clock).
pub const MEAN_REFRESH: Nanos = 100_000_000;

/// The mean has never been computed.
const NEVER: u64 = u64::MAX;

/// Power of two choices over `latency x (in_flight + 1)`.
#[derive(Debug)]
pub struct PeakEwmaBalancer {
    set: Arc<BackendSet>,
    rng: Rng,
    bias: f64,
    /// Every weight equal and no slow start: skip the weight division.
    equal_weights: bool,
    /// The fleet's mean estimate (`f64` bits) and when it was computed.
    mean_bits: AtomicU64,
    mean_stamp: AtomicU64,
}

impl PeakEwmaBalancer {
    /// A balancer seeded with `options.seed`.
    pub fn new(set: Arc<BackendSet>, options: &AlgorithmOptions) -> Self {
        let equal_weights = set.options().slow_start.is_none()
            && set.backends().windows(2).all(|w| w[0].weight() == w[1].weight());
        PeakEwmaBalancer {
            set,
            rng: Rng::seeded(options.seed),
            bias: options.active_request_bias,
            equal_weights,
            mean_bits: AtomicU64::new(0),
            mean_stamp: AtomicU64::new(NEVER),
        }
    }

    /// The latency estimate of backend `i` at `now`, and whether it was measured (or is the fleet mean).
    #[inline]
    fn latency(&self, i: usize, now: Nanos) -> (f64, bool) {
        match self.set.backends()[i].ewma(now, self.set.options().ewma_decay) {
            Some(l) => (l, true),
            None => (self.fleet_mean(now), false),
        }
    }

    /// The mean current estimate of the selectable backends that have one (cached, see module docs).
    fn fleet_mean(&self, now: Nanos) -> f64 {
        let stamp = self.mean_stamp.load(Ordering::Relaxed);
        if stamp != NEVER && now.wrapping_sub(stamp) < MEAN_REFRESH {
            return f64::from_bits(self.mean_bits.load(Ordering::Relaxed));
        }
        let options = self.set.options();
        let panic = self.set.in_panic();
        let (sum, count) = self
            .set
            .backends()
            .iter()
            .filter(|b| b.is_selectable(panic))
            .filter_map(|b| b.ewma(now, options.ewma_decay))
            .fold((0.0, 0u32), |(s, c), l| (s + l, c + 1));
        let mean = if count == 0 { options.ewma_default_rtt as f64 } else { sum / f64::from(count) };
        self.mean_bits.store(mean.to_bits(), Ordering::Relaxed);
        self.mean_stamp.store(now, Ordering::Relaxed);
        mean
    }

    /// Expected wait, `latency x (in_flight + 1)^bias`, still to be divided by the effective weight
    /// (see [`Self::weight`]); lower is better.
    #[inline]
    fn cost(&self, i: usize, latency: f64) -> f64 {
        let active = self.set.backends()[i].in_flight() as f64 + 1.0;
        latency * if self.bias == 1.0 { active } else { active.powf(self.bias) }
    }

    /// The divisor of the cost: 1 when every weight is equal and nothing ramps.
    #[inline]
    fn weight(&self, i: usize, now: Nanos) -> f64 {
        if self.equal_weights { 1.0 } else { self.set.effective_weight(i, now) }
    }
}

impl Balancer for PeakEwmaBalancer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::PeakEwma
    }

    fn backends(&self) -> &Arc<BackendSet> {
        &self.set
    }

    fn pick(&self, req: &PickRequest<'_>, mut explain: Option<&mut Explain>) -> Option<usize> {
        let (a, b) = two_candidates(&self.set, &self.rng, req, explain.as_deref_mut())?;
        let Some(b) = b else {
            if let Some(e) = explain {
                e.reason = format!("peak-ewma: {} was the only candidate", label(&self.set, a));
            }
            return Some(a);
        };
        let now = req.now;
        let (la, measured_a) = self.latency(a, now);
        let (lb, measured_b) = self.latency(b, now);
        let (ca, cb) = (self.cost(a, la), self.cost(b, lb));
        let (wa, wb) = (self.weight(a, now), self.weight(b, now));
        // ca / wa versus cb / wb, by cross-multiplication: no division on the pick.
        let winner = if cb * wa < ca * wb { b } else { a };
        if let Some(e) = explain {
            let backends = self.set.backends();
            let describe = |i: usize, latency: f64, measured: bool, cost: f64| {
                format!(
                    "{} (ewma {:.3} ms{}, in-flight {}, cost {:.3})",
                    label(&self.set, i),
                    latency / 1e6,
                    if measured { "" } else { " = fleet mean, no data yet" },
                    backends[i].in_flight(),
                    cost / 1e6
                )
            };
            let (w, l) = if winner == a {
                (describe(a, la, measured_a, ca / wa), describe(b, lb, measured_b, cb / wb))
            } else {
                (describe(b, lb, measured_b, cb / wb), describe(a, la, measured_a, ca / wa))
            };
            e.reason = format!("peak-ewma: {w} beat {l}");
        }
        Some(winner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Health, InFlightGuard, SetOptions};

    const MS: u64 = 1_000_000;
    const SECOND: u64 = 1_000 * MS;

    fn balancer(n: usize, options: SetOptions) -> PeakEwmaBalancer {
        let set = BackendSet::new((0..n).map(|i| BackendSpec::new(format!("b{i}"))), options);
        PeakEwmaBalancer::new(set, &AlgorithmOptions { seed: 11, ..AlgorithmOptions::default() })
    }

    fn decay_1s() -> SetOptions {
        SetOptions { ewma_decay: SECOND, ..SetOptions::default() }
    }

    /// Record one response of `rtt` on backend `i`, finishing at `now`.
    fn respond(b: &PeakEwmaBalancer, i: usize, rtt: u64, now: u64) {
        b.set.backends()[i].record_latency(rtt, now, b.set.options().ewma_decay);
    }

    #[test]
    fn the_faster_backend_wins_at_equal_load() {
        let b = balancer(2, decay_1s());
        respond(&b, 0, 20 * MS, 0);
        respond(&b, 1, 2 * MS, 0);
        for _ in 0..50 {
            assert_eq!(b.pick(&PickRequest::new(0), None), Some(1));
        }
    }

    #[test]
    fn load_counts_too_latency_times_in_flight() {
        let b = balancer(2, decay_1s());
        respond(&b, 0, 10 * MS, 0);
        respond(&b, 1, 2 * MS, 0);
        // Costs: b0 = 10 x 1 = 10; b1 = 2 x (in_flight + 1). b1 wins up to 4 in flight (cost 10 ties,
        // and the tie goes to the first candidate: random), loses from 5 (cost 12).
        let guards: Vec<InFlightGuard> = (0..5).filter_map(|_| b.set.start(1, 0)).collect();
        assert_eq!(b.pick(&PickRequest::new(0), None), Some(0));
        drop(guards);
        assert_eq!(b.pick(&PickRequest::new(0), None), Some(1));
    }

    #[test]
    fn a_peak_moves_traffic_at_once_and_decay_brings_it_back() {
        let b = balancer(2, decay_1s());
        respond(&b, 0, MS, 0);
        respond(&b, 1, MS, 0);
        // One 50 ms response on b1: its estimate is 50 ms at once, not an average with the old 1 ms.
        respond(&b, 1, 50 * MS, 10 * MS);
        assert_eq!(b.set.backends()[1].ewma(10 * MS, SECOND), Some(50.0 * MS as f64));
        assert_eq!(b.pick(&PickRequest::new(10 * MS), None), Some(0));
        // b0 keeps answering in 1 ms; b1 gets nothing and its estimate decays by e^(-t / 1 s).
        // 50 ms x e^(-t) < 1 ms when t > ln 50 = 3.91 s.
        let at = |t: u64| {
            respond(&b, 0, MS, t);
            b.pick(&PickRequest::new(t), None)
        };
        assert_eq!(at(3_800 * MS), Some(0), "50 x e^-3.79 = 1.13 ms > 1 ms");
        assert_eq!(at(4_000 * MS), Some(1), "50 x e^-3.99 = 0.93 ms < 1 ms: probed again");
    }

    #[test]
    fn decay_time_is_configurable() {
        // Same as above with a 10 s decay: at 4 s b1 is still at 50 x e^-0.4 = 33.5 ms.
        let b = balancer(2, SetOptions { ewma_decay: 10 * SECOND, ..SetOptions::default() });
        respond(&b, 0, MS, 0);
        respond(&b, 1, 50 * MS, 0);
        respond(&b, 0, MS, 4 * SECOND);
        assert_eq!(b.pick(&PickRequest::new(4 * SECOND), None), Some(0));
        let got = b.set.backends()[1].ewma(4 * SECOND, 10 * SECOND).unwrap_or(0.0);
        assert!((got - 50.0 * MS as f64 * (-0.4f64).exp()).abs() < 1.0, "{got}");
    }

    #[test]
    fn a_new_backend_is_neither_starved_nor_flooded() {
        // Four backends answering in 1 ms, a fifth just added with no data. Every pick is held (no
        // response comes back), so each pick sees the in-flight counts of the ones before it.
        let b = balancer(5, decay_1s());
        for i in 0..4 {
            respond(&b, i, MS, 0);
        }
        let mut guards = Vec::new();
        let mut counts = [0usize; 5];
        for _ in 0..100 {
            let i = b.pick(&PickRequest::new(0), None).unwrap_or(0);
            counts[i] += 1;
            guards.extend(b.set.start(i, 0));
        }
        // At the fleet mean (1 ms) the newcomer is costed like the others: about a fifth of the picks.
        // Starved would be 0 (a 30 ms default loses until the others hold 30 each); flooded would be
        // most of them. P2C on held picks keeps every count near 20; allow 15..=25.
        assert!((15..=25).contains(&counts[4]), "{counts:?}");
    }

    #[test]
    fn with_no_data_anywhere_it_is_least_loaded_p2c() {
        let b = balancer(2, SetOptions::default());
        let _load: Vec<InFlightGuard> = (0..2).filter_map(|_| b.set.start(0, 0)).collect();
        // Both at the 30 ms default: cost 30 x 3 against 30 x 1.
        assert_eq!(b.pick(&PickRequest::new(0), None), Some(1));
        let mut e = Explain::default();
        b.pick(&PickRequest::new(0), Some(&mut e));
        assert_eq!(
            e.reason,
            "peak-ewma: b1 (ewma 30.000 ms = fleet mean, no data yet, in-flight 0, cost 30.000) \
             beat b0 (ewma 30.000 ms = fleet mean, no data yet, in-flight 2, cost 90.000)"
        );
    }

    #[test]
    fn the_fleet_mean_is_cached_for_a_while() {
        let b = balancer(3, decay_1s());
        respond(&b, 0, 4 * MS, 0);
        assert_eq!(b.fleet_mean(0), 4.0 * MS as f64);
        respond(&b, 1, 8 * MS, 0);
        assert_eq!(b.fleet_mean(MEAN_REFRESH - 1), 4.0 * MS as f64, "still cached");
        let fresh = b.fleet_mean(MEAN_REFRESH);
        // (4 + 8) / 2 = 6 ms, decayed by e^-0.1 over the 100 ms since both samples.
        assert!((fresh - 6.0 * MS as f64 * (-0.1f64).exp()).abs() < 1.0, "{fresh}");
    }

    #[test]
    fn skips_unavailable_and_tried_backends() {
        let b = balancer(3, decay_1s());
        respond(&b, 0, MS, 0);
        respond(&b, 1, 10 * MS, 0);
        respond(&b, 2, 100 * MS, 0);
        b.set.set_health(0, Health::Ejected, 0);
        let tried = [1];
        // The fastest is ejected and the next was tried: only the slowest is left.
        assert!((0..50).all(|_| b.pick(&PickRequest::new(0).excluding(&tried), None) == Some(2)));
        let all = [1, 2];
        assert_eq!(b.pick(&PickRequest::new(0).excluding(&all), None), None);
    }

    #[test]
    fn slow_start_divides_the_cost_by_the_ramp() {
        let b = balancer(2, SetOptions { slow_start: Some(SECOND), ..decay_1s() });
        respond(&b, 0, MS, 0);
        respond(&b, 1, 5 * MS, 0);
        b.set.set_health(0, Health::Unhealthy, 0);
        b.set.set_health(0, Health::Healthy, 0);
        // b0 is 5x faster but ramping at 0.1: cost 1 / 0.1 = 10 against 5. At half the window the
        // ramp is 0.5 and its estimate has decayed by the same e^-0.5 as b1's: 2 against 5.
        assert_eq!(b.pick(&PickRequest::new(0), None), Some(1));
        assert_eq!(b.pick(&PickRequest::new(SECOND / 2), None), Some(0));
    }
}
