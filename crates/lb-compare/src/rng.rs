//! The simulator's random numbers: a plain (not atomic) wyrand, and the distributions the experiments draw.
//!
//! Why not `lb_algorithms::rng::Rng`: that one is shared between threads through an `AtomicU64`, which
//! the balancers need and a single-threaded event loop does not; the supermarket model draws several
//! numbers per simulated request and has to do 5 million requests a second, so it keeps its state in a
//! register. Same generator (wyrand), so the same quality.
//!
//! Every experiment takes a seed and derives its generators from it, so a table in a lesson can be
//! reproduced exactly from the command that printed it.

const INCREMENT: u64 = 0xa076_1d64_78bd_642f;
const MIX: u64 = 0xe703_7ed1_a0b4_28db;

/// A seedable wyrand generator.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// The same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        SimRng { state: seed }
    }

    /// An independent generator for stream `stream` of the same seed (one per trial, per algorithm...).
    pub fn fork(seed: u64, stream: u64) -> Self {
        // Spread the stream number over all bits so that streams 0, 1, 2 do not start as neighbours.
        SimRng::seeded(seed ^ lb_algorithms::hash_bytes(&stream.to_le_bytes()))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(INCREMENT);
        let t = u128::from(self.state) * u128::from(self.state ^ MIX);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift, no division).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Exponential with mean 1 (inversion: `-ln U` with `U` in `(0, 1]`, so never infinite).
    #[inline]
    pub fn exp1(&mut self) -> f64 {
        -(1.0 - self.unit()).ln()
    }

    /// Standard normal (Box-Muller; one of the pair is thrown away, which is fine off the hot path).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_forks_differ() {
        let a: Vec<u64> = {
            let mut r = SimRng::seeded(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SimRng::seeded(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(SimRng::fork(7, 0).next_u64(), SimRng::fork(7, 1).next_u64());
    }

    #[test]
    fn exponential_has_mean_one_and_normal_has_unit_variance() {
        // 200,000 draws: the standard error of the mean is 1/sqrt(200k) = 0.0022 for both; 0.01 is
        // over 4 standard errors.
        let mut r = SimRng::seeded(1);
        let n = 200_000;
        let mean_exp = (0..n).map(|_| r.exp1()).sum::<f64>() / n as f64;
        assert!((mean_exp - 1.0).abs() < 0.01, "{mean_exp}");
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "{mean} {var}");
    }

    #[test]
    fn below_is_uniform() {
        // 100,000 draws into 10 bins: 10,000 expected each, standard deviation ~95; +-500 is 5 sigma.
        let mut r = SimRng::seeded(3);
        let mut bins = [0u32; 10];
        for _ in 0..100_000 {
            bins[r.below(10)] += 1;
        }
        assert!(bins.iter().all(|&b| (9_500..=10_500).contains(&b)), "{bins:?}");
    }
}
