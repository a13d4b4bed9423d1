//! The supermarket model: join the shortest of `d` random queues.
//!
//! **The model** (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", IEEE TPDS 12(10),
//! 2001; Vvedenskaya, Dobrushin and Karpelevich 1996). `n` servers, each a FIFO queue served at rate 1
//! (exponential service times of mean 1). Customers arrive as a Poisson stream of rate `λn`, `λ < 1`. Each
//! arrival samples `d` queues independently and uniformly at random and joins the shortest. It is balls
//! into bins ([`crate::balls`]) with balls that leave again, which is what requests do.
//!
//! **What theory says**, as `n → ∞`. Let `s_i` be the fraction of queues holding at least `i` customers.
//! With `d = 1` each queue is an M/M/1 queue: `s_i = λ^i` and the mean time in system is `1/(1-λ)`.
//! With `d ≥ 2` the fixed point is `s_i = λ^((d^i - 1)/(d - 1))`: the tail falls *doubly* exponentially,
//! and the mean time in system is `T = (1/λ) Σ_{i≥1} s_i` (Little's law over the mean queue length). At
//! `λ = 0.99` that is 100 for `d = 1` and about 5.4 for `d = 2`.
//!
//! **How this simulates it, fast.** A textbook event loop keeps a heap of departure times. This one uses
//! the memorylessness of exponential service instead: while `b` servers are busy, the next event comes
//! after an exponential time of rate `λn + b`, and it is an arrival with probability `λn/(λn + b)`, else
//! the departure of a uniformly random busy server. One uniform draw decides both which kind and which
//! server, and a swap-remove array of busy servers gives that server in O(1). The chain of queue lengths
//! it produces is exactly the model's, with no heap, no per-customer record and no allocation per event.
//! Time averages need no per-event sweep either: an event changes exactly one `s_i`, so each level keeps
//! its own "area so far" and the time of its last change, and is brought up to date only when it changes.
//! The mean time in system then follows from Little's law: `T = (mean number in system) / (λn)`.
//!
//! **Cost.** O(d) per arrival, O(1) per departure, O(n + longest queue) memory. About 10 to 20 million
//! arrivals per second on one core in a release build (`cargo bench -p lb-compare`).
//!
//! **Finite n.** The formulas are limits. With a few hundred servers the simulated values sit within a
//! few percent of them; with tens of servers the tail is visibly fatter.

use serde::Serialize;

use crate::output::table;
use crate::rng::SimRng;

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub struct SupermarketSpec {
    /// Number of servers `n`.
    pub servers: usize,
    /// Arrival rate per server, `0 < λ < 1`.
    pub lambda: f64,
    /// Queues sampled per arrival, `d >= 1`.
    pub choices: usize,
    /// Arrivals to simulate, warm-up included.
    pub arrivals: u64,
    /// Fraction of the arrivals, at the start, during which nothing is measured (the queues start empty
    /// and need time to fill up to their equilibrium).
    pub warmup: f64,
    /// Seed.
    pub seed: u64,
}

/// The result, as printed by `lb-compare supermarket --json`.
#[derive(Debug, Clone, Serialize)]
pub struct SupermarketReport {
    /// Mean time in system (waiting plus service), in units of the mean service time.
    pub mean_sojourn: f64,
    /// `tail[i]`: time-averaged fraction of queues with at least `i` customers (`tail[0]` is 1).
    pub tail: Vec<f64>,
    /// `1/(1-λ)` for `d = 1`, `(1/λ) Σ s_i` for `d ≥ 2`.
    pub theory_mean_sojourn: f64,
    /// The fixed point `s_i`, as many levels as `tail`.
    pub theory_tail: Vec<f64>,
    /// Arrivals simulated (warm-up included).
    pub arrivals: u64,
    /// Simulated time measured, after the warm-up, in mean service times.
    pub measured_time: f64,
}

impl SupermarketReport {
    /// How far the simulated mean time in system is from the theory's, in percent.
    pub(crate) fn off_theory_percent(&self) -> f64 {
        (self.mean_sojourn / self.theory_mean_sojourn - 1.0) * 100.0
    }
}

/// Mitzenmacher's fixed point: the fraction of queues with at least `i` customers as `n → ∞`.
fn theory_tail(lambda: f64, d: usize, i: u32) -> f64 {
    if d <= 1 {
        return lambda.powi(i as i32);
    }
    let d = d as f64;
    // (d^i - 1)/(d - 1) = 1 + d + ... + d^(i-1); in f64 it overflows to infinity, and λ^∞ = 0, as it should.
    let exponent = (d.powi(i as i32) - 1.0) / (d - 1.0);
    lambda.powf(exponent)
}

/// Expected time in system as `n → ∞`: `1/(1-λ)` for one choice, `(1/λ) Σ_{i≥1} s_i` for more.
pub fn theory_mean_sojourn(lambda: f64, d: usize) -> f64 {
    if d <= 1 {
        return 1.0 / (1.0 - lambda);
    }
    let mut sum = 0.0;
    for i in 1..10_000 {
        let s = theory_tail(lambda, d, i);
        sum += s;
        if s < 1e-18 {
            break;
        }
    }
    sum / lambda
}

/// The relaxation time of an M/M/1 queue at load `λ`, `1/(1-√λ)²` mean service times (Morse 1955): how
/// long a queue takes to forget how it started. With `d = 1` every queue of the model is one, and a run
/// that starts with empty queues reads low until a few of these have passed: 1,560 at λ = 0.95, 39,600
/// at λ = 0.99. With `d ≥ 2` the model settles faster, so this is a safe warm-up for every `d`.
pub fn relaxation_time(lambda: f64) -> f64 {
    1.0 / (1.0 - lambda.sqrt()).powi(2)
}

/// The relative standard error of a d = 1 run's mean time in system once warmed up: `measured` arrivals
/// over `servers` independent M/M/1 queues at load `λ`. The time average of an M/M/1 queue's length over
/// a time `t` has variance about `2λ(1+λ)/(1-λ)⁴ / t` (Whitt, "Planning queueing simulations",
/// Management Science 35(11), 1989); the servers average it down by `servers`, and the mean is
/// `λ/(1-λ)`. At λ = 0.95 with 300,000 arrivals over 100 servers that is about 7%.
pub fn mm1_relative_error(lambda: f64, servers: usize, measured: u64) -> f64 {
    let per_queue_time = measured as f64 / (lambda * servers as f64);
    let variance = 2.0 * lambda * (1.0 + lambda) / (1.0 - lambda).powi(4) / per_queue_time / servers as f64;
    variance.sqrt() / (lambda / (1.0 - lambda))
}

/// Queue lengths plus the bookkeeping for time averages.
struct State {
    queue: Vec<u32>,
    /// Busy servers, in no particular order; `slot[s]` is the position of server `s` in it.
    busy: Vec<u32>,
    slot: Vec<u32>,
    /// `count[k]`: queues with at least `k` customers (index 0 unused), and for each level the integral
    /// of `count[k]` over time up to `since[k]`.
    count: Vec<u64>,
    area: Vec<f64>,
    since: Vec<f64>,
}

impl State {
    fn new(n: usize) -> Self {
        State {
            queue: vec![0; n],
            busy: Vec::with_capacity(n),
            slot: vec![u32::MAX; n],
            count: vec![0; 64],
            area: vec![0.0; 64],
            since: vec![0.0; 64],
        }
    }

    #[inline]
    fn touch(&mut self, level: usize, now: f64) {
        if level >= self.count.len() {
            // A queue longer than ever before: rare (the queues only get this long once), so growing here
            // is not allocation per event.
            let len = (level + 1).next_power_of_two();
            self.count.resize(len, 0);
            self.area.resize(len, 0.0);
            self.since.resize(len, now);
        }
        self.area[level] += self.count[level] as f64 * (now - self.since[level]);
        self.since[level] = now;
    }

    #[inline]
    fn arrive(&mut self, server: usize, now: f64) {
        let level = self.queue[server] as usize + 1;
        self.touch(level, now);
        self.count[level] += 1;
        self.queue[server] += 1;
        if level == 1 {
            self.slot[server] = self.busy.len() as u32;
            self.busy.push(server as u32);
        }
    }

    #[inline]
    fn depart(&mut self, busy_index: usize, now: f64) {
        let server = self.busy[busy_index] as usize;
        let level = self.queue[server] as usize;
        self.touch(level, now);
        self.count[level] -= 1;
        self.queue[server] -= 1;
        if level == 1 {
            self.busy.swap_remove(busy_index);
            if let Some(&moved) = self.busy.get(busy_index) {
                self.slot[moved as usize] = busy_index as u32;
            }
            self.slot[server] = u32::MAX;
        }
    }

    /// Forget the areas so far (end of warm-up) without touching the queues.
    fn restart_clock(&mut self, now: f64) {
        self.area.fill(0.0);
        self.since.fill(now);
    }
}

/// Run the model; `on_progress(arrivals_so_far)` is called every 65,536 arrivals.
pub fn run(spec: &SupermarketSpec, mut on_progress: impl FnMut(u64)) -> SupermarketReport {
    let n = spec.servers.max(1);
    let d = spec.choices.max(1);
    let arrival_rate = spec.lambda * n as f64;
    let warmup_arrivals = (spec.arrivals as f64 * spec.warmup.clamp(0.0, 0.99)) as u64;
    let mut rng = SimRng::seeded(spec.seed);
    let mut st = State::new(n);
    let mut now = 0.0f64;
    let mut start = 0.0f64;
    let mut arrivals = 0u64;

    while arrivals < spec.arrivals {
        let total = arrival_rate + st.busy.len() as f64;
        now += rng.exp1() / total;
        // One uniform on [0, total): below the arrival rate it is an arrival; above, the excess is uniform
        // on [0, busy) and names the departing server.
        let u = rng.unit() * total;
        if u < arrival_rate {
            let mut best = rng.below(n);
            for _ in 1..d {
                let other = rng.below(n);
                if st.queue[other] < st.queue[best] {
                    best = other;
                }
            }
            st.arrive(best, now);
            arrivals += 1;
            if arrivals == warmup_arrivals {
                st.restart_clock(now);
                start = now;
            }
            if arrivals & 0xffff == 0 {
                on_progress(arrivals);
            }
        } else {
            // min() guards the one-in-2^53 case where rounding puts u a hair past the end.
            let index = ((u - arrival_rate) as usize).min(st.busy.len() - 1);
            st.depart(index, now);
        }
    }

    let measured_time = now - start;
    let levels = st.count.len();
    for level in 1..levels {
        st.touch(level, now);
    }
    let denom = measured_time * n as f64;
    let mut tail = vec![1.0];
    tail.extend(st.area[1..].iter().map(|a| if denom > 0.0 { a / denom } else { 0.0 }));
    while tail.len() > 1 && tail.last().is_some_and(|&s| s == 0.0) {
        tail.pop();
    }
    // Little's law: mean number in system per queue is Σ_{i≥1} s_i; divide by the per-queue arrival rate.
    let mean_sojourn = tail[1..].iter().sum::<f64>() / spec.lambda;
    let theory_tail = (0..tail.len() as u32).map(|i| theory_tail(spec.lambda, d, i)).collect();
    SupermarketReport {
        mean_sojourn,
        tail,
        theory_mean_sojourn: theory_mean_sojourn(spec.lambda, d),
        theory_tail,
        arrivals,
        measured_time,
    }
}

/// The result as `lb-compare supermarket` prints it: the mean time in system, and the tail against the
/// fixed point (the first levels, and on while either is at least 10^-6).
pub fn text(spec: &SupermarketSpec, r: &SupermarketReport) -> String {
    let mut out = format!(
        "supermarket: n={} servers, lambda={}, d={}, {} arrivals ({}% warm-up), seed {}\n",
        spec.servers,
        spec.lambda,
        spec.choices,
        spec.arrivals,
        (spec.warmup * 100.0).round(),
        spec.seed
    );
    out += &format!(
        "mean time in system: {:.4} (theory {:.4}, {:+.1}%)\n",
        r.mean_sojourn,
        r.theory_mean_sojourn,
        r.off_theory_percent()
    );
    let rows: Vec<Vec<String>> = r
        .tail
        .iter()
        .zip(&r.theory_tail)
        .enumerate()
        .take_while(|(i, (s, t))| *i < 3 || **s >= 1e-6 || **t >= 1e-6)
        .take(16)
        .map(|(i, (s, t))| vec![i.to_string(), format!("{s:.6}"), format!("{t:.6}")])
        .collect();
    out + &table(&["i", "simulated s_i", "theory s_i"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theory_matches_hand_computed_values() {
        // d = 1 is M/M/1: 1/(1 - 0.5) = 2.
        assert!((theory_mean_sojourn(0.5, 1) - 2.0).abs() < 1e-12);
        // d = 2, λ = 0.5: s_i = 0.5^(2^i - 1) = 0.5, 0.125, 0.0078125, 0.000030518, ...;
        // T = (0.5 + 0.125 + 0.0078125 + 0.0000305 + ...) / 0.5 = 1.2656861...
        assert!((theory_mean_sojourn(0.5, 2) - 1.265_686_1).abs() < 1e-6, "{}", theory_mean_sojourn(0.5, 2));
        // d = 3: exponent (3^i - 1)/2 = 1, 4, 13: s = 0.5, 0.0625, 0.000122 => T = 1.1252...
        assert!((theory_tail(0.5, 3, 2) - 0.0625).abs() < 1e-12);
        assert!((theory_mean_sojourn(0.5, 3) - 1.125_244_1).abs() < 1e-6, "{}", theory_mean_sojourn(0.5, 3));
        assert_eq!(theory_tail(0.9, 2, 0), 1.0);
    }

    #[test]
    fn warm_up_and_error_estimates_match_hand_computed_values() {
        // √0.95 = 0.974679; 1/(1 - 0.974679)² = 1/0.00064115 = 1559.7.
        assert!((relaxation_time(0.95) - 1559.7).abs() < 0.1, "{}", relaxation_time(0.95));
        // 300,000 arrivals at 95 per unit of time: 3157.9 per queue. Variance 2·0.95·1.95/0.05⁴ = 592,800,
        // over 3157.9 · 100 = 1.8772; √ = 1.3701 against a mean of 0.95/0.05 = 19: 0.0721.
        let e = mm1_relative_error(0.95, 100, 300_000);
        assert!((e - 0.0721).abs() < 1e-4, "{e}");
    }

    #[test]
    fn queue_bookkeeping_stays_consistent() {
        let mut rng = SimRng::seeded(5);
        let mut st = State::new(20);
        let mut now = 0.0;
        for _ in 0..10_000 {
            now += 0.01;
            if st.busy.is_empty() || rng.unit() < 0.55 {
                st.arrive(rng.below(20), now);
            } else {
                st.depart(rng.below(st.busy.len()), now);
            }
            // Invariants: busy holds exactly the non-empty queues, slot points back at them, and
            // count[k] is the number of queues with at least k customers.
            assert_eq!(st.busy.len(), st.queue.iter().filter(|&&q| q > 0).count());
            for (i, &s) in st.busy.iter().enumerate() {
                assert_eq!(st.slot[s as usize], i as u32);
            }
            for k in 1..st.count.len() {
                assert_eq!(st.count[k], st.queue.iter().filter(|&&q| q as usize >= k).count() as u64);
            }
        }
    }

    #[test]
    fn same_seed_same_result() {
        let spec =
            SupermarketSpec { servers: 50, lambda: 0.7, choices: 2, arrivals: 50_000, warmup: 0.1, seed: 9 };
        let (a, b) = (run(&spec, |_| {}), run(&spec, |_| {}));
        assert_eq!(a.mean_sojourn, b.mean_sojourn);
        assert_eq!(a.tail, b.tail);
    }
}
