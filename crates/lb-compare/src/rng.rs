//! The simulator's random numbers: the distributions the experiments draw, on wyrand.
//!
//! The generator itself is `lb-algorithms`'s [`Wyrand`]: the same wyrand the randomised balancers use,
//! in its single-owner form, with no atomic. The supermarket model draws several numbers per simulated
//! request and has to do 5 million requests a second, so its generator keeps its state in a register;
//! the balancers' shared one, an `AtomicU64` that every thread can draw from, is for the proxy.
//!
//! Every experiment takes a seed and derives its generators from it, so a table in a lesson can be
//! reproduced exactly from the command that printed it.

use lb_algorithms::Wyrand;

/// A seedable generator with the distributions the simulator draws.
#[derive(Debug, Clone)]
pub(crate) struct SimRng(Wyrand);

impl SimRng {
    /// The same sequence for the same seed.
    pub(crate) fn seeded(seed: u64) -> Self {
        SimRng(Wyrand::seeded(seed))
    }

    /// An independent generator for stream `stream` of the same seed (one per trial, per algorithm...).
    pub(crate) fn fork(seed: u64, stream: u64) -> Self {
        // Spread the stream number over all bits so that streams 0, 1, 2 do not start as neighbours.
        SimRng::seeded(seed ^ lb_algorithms::hash_bytes(&stream.to_le_bytes()))
    }

    /// The next 64 random bits.
    #[cfg(test)]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (Lemire's multiply-shift, no division).
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        self.0.unit()
    }

    /// Exponential with mean 1 (inversion: `-ln U` with `U` in `(0, 1]`, so never infinite).
    #[inline]
    pub(crate) fn exp1(&mut self) -> f64 {
        -(1.0 - self.unit()).ln()
    }

    /// Standard normal (Box-Muller; one of the pair is thrown away, which is fine off the hot path).
    pub(crate) fn normal(&mut self) -> f64 {
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
