//! Peak EWMA: a latency estimate that jumps up at once and decays down slowly.
//!
//! An exponentially weighted moving average smooths noise, but a plain one also hides a backend that has
//! *just* become slow: it takes many slow responses to move the average. The *peak* variant (Finagle's
//! `PeakEwma`, used by Linkerd and tower) takes any sample above the current estimate as the new estimate
//! immediately, and only averages samples below it, with a weight that depends on the time since the last
//! sample: `w = exp(-elapsed / decay)`, `cost = cost * w + sample * (1 - w)`.
//!
//! Reading the estimate also decays it toward zero with the time since the last sample. That is the
//! *probe*: a backend that was slow and then got no traffic slowly looks attractive again, receives a
//! request, and its estimate is refreshed by a real measurement.
//!
//! State: two `AtomicU64` (the estimate as `f64` bits, the time of the last sample). Updates are
//! load-compute-store without a lock; two samples racing may lose one of them, which an estimator that
//! already forgets old samples on purpose can afford. Reads never write.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Nanos;

/// Bits meaning "no sample yet" (a NaN that `f64` arithmetic never produces from our inputs).
const EMPTY: u64 = u64::MAX;

/// A lock-free peak-EWMA latency estimate, in nanoseconds.
#[derive(Debug)]
pub struct PeakEwma {
    cost: AtomicU64,
    stamp: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new()
    }
}

impl PeakEwma {
    /// No sample yet.
    pub fn new() -> Self {
        PeakEwma { cost: AtomicU64::new(EMPTY), stamp: AtomicU64::new(0) }
    }

    /// The estimate at `now`, decayed toward zero since the last sample; `None` before the first sample.
    #[inline]
    pub fn get(&self, now: Nanos, decay: Nanos) -> Option<f64> {
        let bits = self.cost.load(Ordering::Relaxed);
        if bits == EMPTY {
            return None;
        }
        let cost = f64::from_bits(bits);
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed));
        // Within decay / 1024 of the last sample the factor is above e^(-1/1024) = 0.99902: skip it, an
        // error under 0.1% (far below latency noise) that costs one integer compare instead of the float
        // work, which is half of a peak-EWMA pick. Reads never store, so the error does not accumulate.
        if elapsed <= decay >> 10 {
            return Some(cost);
        }
        Some(cost * weight(elapsed, decay))
    }

    /// Add one sample taken at `now`.
    pub fn observe(&self, sample: f64, now: Nanos, decay: Nanos) {
        let bits = self.cost.load(Ordering::Relaxed);
        let next = if bits == EMPTY {
            sample
        } else {
            let cost = f64::from_bits(bits);
            if sample > cost {
                sample
            } else {
                let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed));
                let w = weight(elapsed, decay);
                cost * w + sample * (1.0 - w)
            }
        };
        self.stamp.store(now, Ordering::Relaxed);
        self.cost.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// Below this `elapsed / decay`, [`weight`] uses a polynomial instead of `exp`.
const TAYLOR_LIMIT: f64 = 1.0 / 64.0;

/// `exp(-elapsed / decay)`: 1 for no time passed, toward 0 as time passes.
///
/// Peak EWMA reads two estimates per pick, and `exp` costs about as much as the rest of the pick. On a
/// busy backend `elapsed` (time since its last response) is tiny next to a decay of seconds, where the
/// cubic Taylor polynomial `1 - x + x^2/2 - x^3/6` is off by at most `x^4 / 24`: below 2.5e-9 for
/// `x < 1/64`, far below the noise of any latency measurement.
#[inline]
fn weight(elapsed: Nanos, decay: Nanos) -> f64 {
    if decay == 0 {
        return 0.0;
    }
    // Through i64: a signed conversion is one instruction, an unsigned one a branchy sequence (times
    // beyond 2^63 ns, 292 years, do not occur).
    let x = elapsed as i64 as f64 / decay as i64 as f64;
    if x < TAYLOR_LIMIT { 1.0 - x * (1.0 - x * (0.5 - x * (1.0 / 6.0))) } else { (-x).exp() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const DECAY: u64 = 10_000 * MS;

    #[test]
    fn the_cheap_decay_factor_matches_exp() {
        // Both sides of the switch to the polynomial, and points in between.
        for x in [0.0, 1e-9, 1e-6, 1e-3, 0.01, 0.015, 1.0 / 64.0 - 1e-12, 1.0 / 64.0, 0.02, 0.5, 3.0] {
            let elapsed = (x * DECAY as f64) as u64;
            let exact = (-(elapsed as f64) / DECAY as f64).exp();
            let got = weight(elapsed, DECAY);
            assert!((got - exact).abs() <= 2.5e-9, "x {x}: {got} vs {exact}");
        }
    }

    #[test]
    fn reads_just_after_a_sample_skip_the_decay_within_a_tenth_of_a_percent() {
        let e = PeakEwma::new();
        e.observe(1_000.0, 0, DECAY);
        let skip_limit = DECAY >> 10;
        assert_eq!(e.get(skip_limit, DECAY), Some(1_000.0), "skipped: exact value was 999.02");
        let after = e.get(skip_limit + 1, DECAY).unwrap_or(0.0);
        assert!((after - 1_000.0 * (-((skip_limit + 1) as f64) / DECAY as f64).exp()).abs() < 1e-6);
        assert!(1_000.0 - after < 1.0, "the jump at the limit is under 0.1%: {after}");
    }

    #[test]
    fn empty_until_first_sample() {
        let e = PeakEwma::new();
        assert_eq!(e.get(0, DECAY), None);
        e.observe(5.0 * MS as f64, 0, DECAY);
        assert_eq!(e.get(0, DECAY), Some(5.0 * MS as f64));
    }

    #[test]
    fn a_peak_is_taken_at_once() {
        let e = PeakEwma::new();
        e.observe(10.0 * MS as f64, 0, DECAY);
        e.observe(500.0 * MS as f64, MS, DECAY);
        assert_eq!(e.get(MS, DECAY), Some(500.0 * MS as f64));
    }

    #[test]
    fn lower_samples_pull_the_estimate_down_by_time_weight() {
        let e = PeakEwma::new();
        e.observe(100.0, 0, DECAY);
        // One decay constant later, w = e^-1 ~ 0.3679: cost = 100 * 0.3679 + 0 * 0.6321.
        e.observe(0.0, DECAY, DECAY);
        let got = e.get(DECAY, DECAY).unwrap_or(f64::NAN);
        assert!((got - 100.0 * (-1.0f64).exp()).abs() < 1e-9, "{got}");
    }

    #[test]
    fn reading_decays_toward_zero_with_idle_time() {
        let e = PeakEwma::new();
        e.observe(100.0, 0, DECAY);
        let half_life = (DECAY as f64 * std::f64::consts::LN_2) as u64;
        let got = e.get(half_life, DECAY).unwrap_or(f64::NAN);
        assert!((got - 50.0).abs() < 1e-6, "{got}");
        // Reading did not change the stored state.
        assert_eq!(e.get(0, DECAY), Some(100.0));
    }
}
