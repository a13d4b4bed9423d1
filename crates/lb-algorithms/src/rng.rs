//! wyrand, the random number generator of this workspace, in two forms.
//!
//! - [`Rng`], for picks. `random`, `power-of-two` and `peak-ewma` draw one or two random numbers per
//!   pick. A `Mutex<StdRng>` would put a lock on the hot path; a thread-local generator would make seeded
//!   runs depend on thread scheduling. wyrand's state update is a plain addition, so one `fetch_add` on an
//!   `AtomicU64` gives every caller its own distinct state, with no lock, and a single-threaded run with a
//!   given seed is exactly reproducible.
//! - [`Wyrand`], for one owner: the same generator with its state in a plain `u64` (`&mut self`, no
//!   atomic), for a single-threaded loop that draws millions of numbers a second (`lb-compare`'s
//!   simulator builds its distributions on it).
//!
//! Both run the one step below ([`wyrand`]): add a constant to the state, then fold a 128-bit multiply of
//! the state; the output function passes BigCrush and PractRand. The same seed gives the same sequence
//! from both.

use std::sync::atomic::{AtomicU64, Ordering};

/// What each step adds to the state.
const INCREMENT: u64 = 0xa076_1d64_78bd_642f;
/// What the output function multiplies the state with (XORed in).
const MIX: u64 = 0xe703_7ed1_a0b4_28db;

/// wyrand's output for a state that has just been advanced by [`INCREMENT`].
#[inline]
fn wyrand(state: u64) -> u64 {
    let t = u128::from(state) * u128::from(state ^ MIX);
    ((t >> 64) as u64) ^ (t as u64)
}

/// 64 random bits as a uniform integer in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for
/// n < 2^32).
#[inline]
fn below(bits: u64, n: usize) -> usize {
    ((u128::from(bits) * n as u128) >> 64) as usize
}

/// 64 random bits as a uniform float in `[0, 1)` (the top 53 bits).
#[inline]
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A shared wyrand generator.
#[derive(Debug)]
pub(crate) struct Rng {
    state: AtomicU64,
}

impl Rng {
    /// A generator that yields the same sequence for the same seed.
    pub(crate) fn seeded(seed: u64) -> Self {
        Rng { state: AtomicU64::new(seed) }
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        wyrand(self.state.fetch_add(INCREMENT, Ordering::Relaxed).wrapping_add(INCREMENT))
    }

    /// A uniform integer in `0..n`.
    #[inline]
    pub(crate) fn below(&self, n: usize) -> usize {
        below(self.next_u64(), n)
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&self) -> f64 {
        unit(self.next_u64())
    }
}

/// A wyrand generator with one owner: the same sequence as the balancers' shared generator for the same
/// seed, with no atomic.
#[derive(Debug, Clone)]
pub struct Wyrand {
    state: u64,
}

impl Wyrand {
    /// A generator that yields the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        Wyrand { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(INCREMENT);
        wyrand(self.state)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift, no division).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        below(self.next_u64(), n)
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        unit(self.next_u64())
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
    fn shared_and_owned_generators_agree() {
        let shared = Rng::seeded(11);
        let mut owned = Wyrand::seeded(11);
        for _ in 0..100 {
            assert_eq!(shared.next_u64(), owned.next_u64());
        }
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
