//! Several balancers, and load information that is old: when "send it to the least loaded" backfires.
//!
//! **The question.** Least-connections (join the shortest queue, JSQ) is the best policy there is when
//! the balancer knows every queue's length *now*. Two things break that once there is more than one
//! `lb`: each instance counts only the requests *it* sent (its own in-flight), and any shared load report
//! (a gossip round, a metrics scrape, a control plane pushing weights) is some time old when it is used.
//!
//! **The model** (Mitzenmacher, "How Useful Is Old Information?", IEEE TPDS 11(1), 2000: the periodic
//! update, or bulletin board, model). The supermarket model of [`crate::supermarket`] (`n` FIFO servers
//! with exponential service of mean 1, Poisson arrivals of rate `λn`), but an arrival does not see the
//! queues: it sees a **board** that is refreshed with the true queue lengths every `period` time units
//! and stays unchanged in between, even as arrivals join the queues it shows. Strategies, on what the
//! board says:
//!
//! - `random`: ignores it (one uniform choice, `d = 1`);
//! - `power-of-two`: two distinct random servers, the one the board shows shorter (ties at random);
//! - `least-connections`: the shortest on the board, of all `n` (ties at random).
//!
//! **The herd.** Between two refreshes, least-connections sends *every* arrival to the few servers that
//! were shortest at the last refresh: they fill up while the board still calls them empty, and the next
//! refresh names a new set of victims. With a period of a few service times, JSQ does worse than
//! choosing at random. Two random choices herd far less: each arrival looks at two servers of its own,
//! so arrivals spread over many servers, and the paper finds `d = 2` better than random over a wide
//! range of periods (and smaller `d` better as information gets older).
//!
//! **Own view** (`--view own --balancers B`): no board; `B` balancers, each arrival goes to one of them
//! at random, and each sees only its own requests still in the system (the in-flight counts one `lb`
//! keeps). The view is always current but partial: it does not herd, since each balancer's own
//! decisions update its own view at once; `B = 1` is plain JSQ.
//!
//! **How it runs.** As the supermarket model: with `b` busy servers the next event comes after an
//! exponential time of rate `λn + b`, an arrival with probability `λn / (λn + b)`, else the departure
//! of a uniformly random busy server; a board refresh due before that event happens first, and the
//! draw is made again from there (memorylessness makes that exact). The mean time in system comes from
//! Little's law over the time-averaged number in system. Cost: O(n) per arrival for least-connections,
//! O(1) otherwise. Deterministic for a seed.

use std::collections::VecDeque;

use serde::Serialize;

use crate::output::table;
use crate::rng::SimRng;

/// What the balancers know about the queues.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "view")]
pub enum View {
    /// One board of true queue lengths, refreshed every `period` (0: always current).
    Board {
        /// Time between refreshes, in mean service times.
        period: f64,
    },
    /// `balancers` balancers, each seeing only its own requests in the system.
    Own {
        /// How many.
        balancers: usize,
    },
}

/// How an arrival picks a server from what it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// One uniform choice.
    Random,
    /// The shorter of two distinct random servers.
    PowerOfTwo,
    /// The shortest of all.
    LeastConnections,
}

impl Strategy {
    /// All three, in the order tables show them.
    pub const ALL: [Strategy; 3] = [Strategy::Random, Strategy::PowerOfTwo, Strategy::LeastConnections];

    /// The name `lb` gives the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::PowerOfTwo => "power-of-two",
            Strategy::LeastConnections => "least-connections",
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub struct StaleSpec {
    /// Number of servers `n`.
    pub servers: usize,
    /// Arrival rate per server, `0 < λ < 1`.
    pub lambda: f64,
    /// What the balancers see.
    pub view: View,
    /// Arrivals to simulate, warm-up included.
    pub arrivals: u64,
    /// Fraction of the arrivals, at the start, during which nothing is measured.
    pub warmup: f64,
    /// Seed.
    pub seed: u64,
}

/// One strategy's result.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StaleResult {
    /// The strategy.
    pub strategy: Strategy,
    /// Mean time in system (waiting plus service), in mean service times.
    pub mean_sojourn: f64,
    /// The longest queue seen after the warm-up.
    pub max_queue: u32,
}

/// The queues and what the balancers see of them.
struct World {
    queue: Vec<u32>,
    /// Servers with a customer, for an O(1) uniform pick of the one that finishes next.
    busy: Vec<usize>,
    /// Where each server sits in `busy` (`usize::MAX`: idle).
    slot: Vec<usize>,
    /// The board (`View::Board` with a period), else empty.
    board: Vec<u32>,
    /// `View::Own`: which balancer sent each customer, in queue order, and each balancer's counts.
    sender: Vec<VecDeque<u16>>,
    own: Vec<Vec<u32>>,
}

impl World {
    fn new(spec: &StaleSpec) -> World {
        let n = spec.servers;
        let balancers = match spec.view {
            View::Own { balancers } => balancers.max(1),
            View::Board { .. } => 0,
        };
        World {
            queue: vec![0; n],
            busy: Vec::with_capacity(n),
            slot: vec![usize::MAX; n],
            board: vec![0; n],
            sender: if balancers > 0 { vec![VecDeque::new(); n] } else { Vec::new() },
            own: vec![vec![0; n]; balancers],
        }
    }

    /// The load `balancer` sees on `server`.
    fn seen(&self, view: View, balancer: usize, server: usize) -> u32 {
        match view {
            View::Board { period } if period > 0.0 => self.board[server],
            View::Board { .. } => self.queue[server],
            View::Own { .. } => self.own[balancer][server],
        }
    }

    fn pick(&self, spec: &StaleSpec, strategy: Strategy, balancer: usize, rng: &mut SimRng) -> usize {
        let n = spec.servers;
        let seen = |s| self.seen(spec.view, balancer, s);
        match strategy {
            Strategy::Random => rng.below(n),
            Strategy::PowerOfTwo => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(n - 1)) % n;
                match seen(a).cmp(&seen(b)) {
                    std::cmp::Ordering::Less => a,
                    std::cmp::Ordering::Greater => b,
                    std::cmp::Ordering::Equal => [a, b][rng.below(2)],
                }
            }
            Strategy::LeastConnections => {
                // The minimum, with ties broken uniformly (reservoir sampling): a fixed tie-break would
                // herd even on fresh information.
                let (mut best, mut low, mut ties) = (0, u32::MAX, 0);
                for s in 0..n {
                    let v = seen(s);
                    if v < low {
                        (best, low, ties) = (s, v, 1);
                    } else if v == low {
                        ties += 1;
                        if rng.below(ties) == 0 {
                            best = s;
                        }
                    }
                }
                best
            }
        }
    }

    fn arrive(&mut self, server: usize, balancer: usize) {
        self.queue[server] += 1;
        if self.queue[server] == 1 {
            self.slot[server] = self.busy.len();
            self.busy.push(server);
        }
        if let Some(own) = self.own.get_mut(balancer) {
            own[server] += 1;
            self.sender[server].push_back(balancer as u16);
        }
    }

    fn depart(&mut self, server: usize) {
        self.queue[server] -= 1;
        if self.queue[server] == 0 {
            let at = self.slot[server];
            self.busy.swap_remove(at);
            if let Some(&moved) = self.busy.get(at) {
                self.slot[moved] = at;
            }
            self.slot[server] = usize::MAX;
        }
        if let Some(b) = self.sender.get_mut(server).and_then(VecDeque::pop_front) {
            self.own[usize::from(b)][server] -= 1;
        }
    }
}

/// Simulate one strategy.
pub fn run(spec: &StaleSpec, strategy: Strategy) -> StaleResult {
    assert!(spec.servers >= 2, "at least two servers");
    assert!(spec.lambda > 0.0 && spec.lambda < 1.0, "0 < lambda < 1");
    let mut rng = SimRng::seeded(spec.seed);
    let mut world = World::new(spec);
    let arrival_rate = spec.lambda * spec.servers as f64;
    let period = match spec.view {
        View::Board { period } if period > 0.0 => Some(period),
        _ => None,
    };
    let balancers = world.own.len().max(1);
    let warmup = (spec.arrivals as f64 * spec.warmup.clamp(0.0, 0.99)) as u64;
    let (mut now, mut next_refresh) = (0.0f64, period.unwrap_or(f64::INFINITY));
    let (mut arrivals, mut in_system) = (0u64, 0u64);
    let (mut area, mut measured_since, mut max_queue) = (0.0f64, None::<f64>, 0u32);
    while arrivals < spec.arrivals {
        let rate = arrival_rate + world.busy.len() as f64;
        let dt = rng.exp1() / rate;
        if now + dt >= next_refresh {
            // Refresh first, then draw the next event afresh (memoryless).
            if measured_since.is_some() {
                area += in_system as f64 * (next_refresh - now);
            }
            now = next_refresh;
            world.board.clone_from(&world.queue);
            next_refresh += period.unwrap_or(f64::INFINITY);
            continue;
        }
        if measured_since.is_some() {
            area += in_system as f64 * dt;
        }
        now += dt;
        if rng.unit() * rate < arrival_rate {
            let balancer = rng.below(balancers);
            let server = world.pick(spec, strategy, balancer, &mut rng);
            world.arrive(server, balancer);
            in_system += 1;
            arrivals += 1;
            if arrivals == warmup {
                measured_since = Some(now);
            }
            if measured_since.is_some() {
                max_queue = max_queue.max(world.queue[server]);
            }
        } else {
            let server = world.busy[rng.below(world.busy.len())];
            world.depart(server);
            in_system -= 1;
        }
    }
    let measured = now - measured_since.unwrap_or(0.0);
    // Little's law: mean number in system = arrival rate x mean time in system.
    let mean_sojourn = area / measured.max(f64::MIN_POSITIVE) / arrival_rate;
    StaleResult { strategy, mean_sojourn, max_queue }
}

/// Every strategy on the same spec (each from the same seed).
pub fn run_all(spec: &StaleSpec) -> Vec<StaleResult> {
    Strategy::ALL.iter().map(|&s| run(spec, s)).collect()
}

/// One row of a sweep: a view and the three strategies' results.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// What the balancers saw.
    pub view: View,
    /// Random, power-of-two, least-connections.
    pub results: Vec<StaleResult>,
}

/// The table `lb-compare stale` prints: one row per view, mean time in system per strategy.
pub fn text(spec: &StaleSpec, rows: &[SweepRow]) -> String {
    let mut out = format!(
        "{} servers, load {}, {} arrivals (first {:.0}% not measured), seed {}\nmean time in system (1 = one service time); max queue in brackets\n",
        spec.servers,
        spec.lambda,
        spec.arrivals,
        spec.warmup * 100.0,
        spec.seed
    );
    let mut header = vec!["view".to_string()];
    header.extend(Strategy::ALL.iter().map(|s| s.name().to_string()));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let view = match row.view {
                View::Board { period } if period > 0.0 => format!("board, refreshed every {period}"),
                View::Board { .. } => "current".to_string(),
                View::Own { balancers } => format!("own in-flight, {balancers} balancers"),
            };
            let mut cells = vec![view];
            cells.extend(row.results.iter().map(|r| format!("{:.2} [{}]", r.mean_sojourn, r.max_queue)));
            cells
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    out += &table(&header, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(view: View) -> StaleSpec {
        StaleSpec { servers: 50, lambda: 0.9, view, arrivals: 200_000, warmup: 0.2, seed: 7 }
    }

    fn sojourns(view: View) -> [f64; 3] {
        let r = run_all(&spec(view));
        [r[0].mean_sojourn, r[1].mean_sojourn, r[2].mean_sojourn]
    }

    #[test]
    fn with_current_information_least_connections_is_best_and_random_worst() {
        let [random, p2c, jsq] = sojourns(View::Board { period: 0.0 });
        // Random is n independent M/M/1 queues: 1/(1 - 0.9) = 10, within 15% on this short run.
        assert!((random - 10.0).abs() < 1.5, "random {random}");
        // d = 2 at λ = 0.9: the fixed point gives about 2.35 (finite n sits a little above).
        assert!(p2c > 2.0 && p2c < 3.0, "power-of-two {p2c}");
        assert!(jsq < p2c && jsq < 1.6, "least-connections {jsq}");
    }

    #[test]
    fn stale_information_makes_least_connections_herd_worse_than_random_while_p2c_stays_good() {
        // Refreshed every 10 service times: Mitzenmacher's herd. Seed 7 gives random 9.2, power of
        // two 5.2, least-connections 23.9; the bounds leave room for another seed's noise.
        let [random, p2c, jsq] = sojourns(View::Board { period: 10.0 });
        assert!(jsq > 2.0 * random, "least-connections {jsq} should herd well past random {random}");
        assert!(p2c < 0.7 * random, "power-of-two {p2c} should stay better than random {random}");
        // Already at 5 (13.3 against 9.6), least-connections is worse than not looking at all.
        let [random, _, jsq] = sojourns(View::Board { period: 5.0 });
        assert!(jsq > random, "period 5: least-connections {jsq}, random {random}");
        // And one service time old is enough for two choices to beat the shortest queue (3.0, 4.4).
        let [_, p2c, jsq_fresher] = sojourns(View::Board { period: 1.0 });
        assert!(p2c < jsq_fresher, "period 1: power-of-two {p2c}, least-connections {jsq_fresher}");
        assert!(jsq_fresher < jsq, "the herd grows with the age: period 1 {jsq_fresher}, 5 {jsq}");
    }

    #[test]
    fn a_partial_but_current_view_does_not_herd() {
        // Ten balancers, each knowing only its own requests: worse than one omniscient JSQ (1.2 against
        // 3.6 for seed 7), far better than random (9.8), and no herd.
        let [random, p2c, jsq] = sojourns(View::Own { balancers: 10 });
        let [_, _, omniscient] = sojourns(View::Own { balancers: 1 });
        assert!(omniscient < jsq, "one balancer {omniscient}, ten {jsq}");
        assert!(jsq < 0.6 * random && p2c < 0.6 * random, "random {random} p2c {p2c} jsq {jsq}");
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let a = run(&spec(View::Board { period: 2.0 }), Strategy::PowerOfTwo);
        let b = run(&spec(View::Board { period: 2.0 }), Strategy::PowerOfTwo);
        assert_eq!((a.mean_sojourn, a.max_queue), (b.mean_sojourn, b.max_queue));
    }
}
