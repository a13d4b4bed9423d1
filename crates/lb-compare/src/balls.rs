//! Balls into bins: why two random choices beat one by an exponential margin.
//!
//! **The experiment.** Throw `m` balls into `n` bins. With one choice, each ball goes to a bin picked
//! uniformly at random; with `d` choices, each ball samples `d` bins and goes to the least loaded of them.
//! Measure the fullest bin (the *max load*) at the end.
//!
//! **What theory says** (for `m = n`). One choice: the max load is about `ln n / ln ln n` (Gonnet 1981;
//! Raab and Steger 1998), which is 5 to 8 for n between 10^4 and 10^5, and it keeps growing with `n`.
//! Two or more choices: `ln ln n / ln d + O(1)` (Azar, Broder, Karlin and Upfal, "Balanced
//! Allocations", STOC 1994), which is 3 to 4 in the same range and almost does not grow at all. The
//! second choice is worth more than every choice after it: going from 1 to 2 turns a log into a log log,
//! going from 2 to 3 only changes the base of that log log.
//!
//! **Why a load balancer cares.** "Random" is the one-choice process and "power of two choices" the
//! two-choice one, with in-flight requests as the balls: picking the less busy of two random backends
//! keeps the busiest backend close to the average with no global state. That is the whole argument for
//! `power_of_two.rs` in `lb-algorithms`.
//!
//! **Cost.** O(m·d) per trial; ties between the `d` sampled bins go to the first sampled, which is a
//! uniformly random one.

use serde::Serialize;

use crate::rng::SimRng;

/// What to throw.
#[derive(Debug, Clone, Copy)]
pub struct BallsSpec {
    /// Number of bins `n`.
    pub bins: usize,
    /// Number of balls `m`.
    pub balls: usize,
    /// Bins sampled per ball, `d >= 1`.
    pub choices: usize,
    /// Independent repetitions.
    pub trials: usize,
    /// Seed of the first trial (trial `t` uses stream `t` of it).
    pub seed: u64,
}

/// The result, as printed by `lb-compare balls --json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BallsReport {
    /// Max load of each trial.
    pub max_load: Vec<u32>,
    /// Mean of `max_load`.
    pub mean_max_load: f64,
}

/// Throw the balls, `trials` times. `on_trial` is called after each trial (for a progress bar).
pub fn run(spec: &BallsSpec, mut on_trial: impl FnMut()) -> BallsReport {
    let mut loads = vec![0u32; spec.bins.max(1)];
    let max_load: Vec<u32> = (0..spec.trials)
        .map(|t| {
            let mut rng = SimRng::fork(spec.seed, t as u64);
            let max = one_trial(&mut loads, spec.balls, spec.choices.max(1), &mut rng);
            on_trial();
            max
        })
        .collect();
    let mean_max_load = if max_load.is_empty() {
        0.0
    } else {
        max_load.iter().map(|&m| f64::from(m)).sum::<f64>() / max_load.len() as f64
    };
    BallsReport { max_load, mean_max_load }
}

fn one_trial(loads: &mut [u32], balls: usize, choices: usize, rng: &mut SimRng) -> u32 {
    loads.fill(0);
    let n = loads.len();
    let mut max = 0;
    for _ in 0..balls {
        let mut best = rng.below(n);
        for _ in 1..choices {
            let other = rng.below(n);
            if loads[other] < loads[best] {
                best = other;
            }
        }
        loads[best] += 1;
        max = max.max(loads[best]);
    }
    max
}

/// `ln n / ln ln n`, the first-order max load with one choice and `m = n`.
fn one_choice_estimate(n: usize) -> f64 {
    let ln = (n as f64).ln();
    ln / ln.ln()
}

/// `ln ln n / ln d`, the max load with `d >= 2` choices and `m = n`, up to an additive constant.
fn d_choice_estimate(n: usize, d: usize) -> f64 {
    (n as f64).ln().ln() / (d as f64).ln()
}

/// The first-order theory's max load for `n` bins, `n` balls and `d` choices, with its formula.
pub(crate) fn theory_text(n: usize, d: usize) -> String {
    if d == 1 {
        format!("ln n / ln ln n = {:.2}", one_choice_estimate(n))
    } else {
        format!("ln ln n / ln d = {:.2} (+ a constant)", d_choice_estimate(n, d))
    }
}

/// The result as `lb-compare balls` prints it: the max load of each trial, their mean, and the theory.
pub fn text(spec: &BallsSpec, r: &BallsReport) -> String {
    let BallsSpec { bins, balls, choices, trials, seed } = *spec;
    let loads: Vec<String> = r.max_load.iter().map(u32::to_string).collect();
    format!(
        "balls into bins: n={bins} bins, m={balls} balls, d={choices}, {trials} trials, seed {seed}\n\
         max load per trial: {}\n\
         mean max load: {:.2}\n\
         first-order theory (m = n): {}\n",
        loads.join(" "),
        r.mean_max_load,
        theory_text(bins, choices)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ball_lands_and_max_load_is_at_least_the_average() {
        let mut loads = vec![0; 100];
        let mut rng = SimRng::seeded(1);
        let max = one_trial(&mut loads, 1_000, 2, &mut rng);
        assert_eq!(loads.iter().sum::<u32>(), 1_000);
        assert!(max >= 10 && max == *loads.iter().max().unwrap_or(&0));
    }

    #[test]
    fn one_bin_takes_everything() {
        let r = run(&BallsSpec { bins: 1, balls: 50, choices: 3, trials: 2, seed: 0 }, || {});
        assert_eq!(r.max_load, [50, 50]);
        assert_eq!(r.mean_max_load, 50.0);
    }

    #[test]
    fn same_seed_same_result() {
        let spec = BallsSpec { bins: 1_000, balls: 1_000, choices: 1, trials: 3, seed: 42 };
        assert_eq!(run(&spec, || {}), run(&spec, || {}));
    }
}
