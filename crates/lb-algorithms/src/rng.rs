//! A tiny, seedable, lock-free random number generator for picks.
//!
//! `random`, `power-of-two` and `peak-ewma` draw one or two random numbers per pick. A `Mutex<StdRng>`
//! would put a lock on the hot path; a thread-local generator would make seeded runs depend on thread
//! scheduling. wyrand's state update is a plain addition, so one `fetch_add` on an `AtomicU64` gives every
//! caller its own distinct state, with no lock, and a single-threaded run with a given seed is exactly
//! reproducible. The output function (a 128-bit multiply and fold) passes BigCrush and PractRand.

use std::sync::atomic::{AtomicU64, Ordering};

const INCREMENT: u64 = 0xa076_1d64_78bd_642f;
const MIX: u64 = 0xe703_7ed1_a0b4_28db;

/// A shared wyrand generator.
#[derive(Debug)]
pub struct Rng {
    state: AtomicU64,
}

impl Rng {
    /// A generator that yields the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        Rng { state: AtomicU64::new(seed) }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&self) -> u64 {
        let s = self.state.fetch_add(INCREMENT, Ordering::Relaxed).wrapping_add(INCREMENT);
        let t = u128::from(s) * u128::from(s ^ MIX);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    #[inline]
    pub fn below(&self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a = Rng::seeded(7);
        let b = Rng::seeded(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn below_is_uniform_within_tolerance() {
        let r = Rng::seeded(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10)] += 1;
        }
        // Expected 10,000 each; the standard deviation is ~95, so +-500 is over 5 sigma.
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn unit_is_in_range() {
        let r = Rng::seeded(3);
        assert!((0..10_000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));
    }
}
