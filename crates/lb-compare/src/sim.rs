//! A discrete-event simulation of requests through the real balancers.
//!
//! **What is simulated.** Requests arrive (Poisson at a rate, or from closed-loop clients), the balancer
//! picks a backend, the backend serves up to `capacity` requests at once and queues the rest in FIFO
//! order, and the answer comes back after a service time drawn from the backend's distribution (times a
//! slowdown, when the script says so). A dead backend fails the requests it holds at once (connection
//! reset) and new connections after `connect_timeout`. An attempt that times out, or fails, is retried on
//! a backend it has not tried, while attempts remain.
//!
//! **What is not simulated.** The balancer: it is the real one from [`lb_algorithms::build`], the code the
//! proxy runs. Each pick gets `now` = simulated time in nanoseconds; the attempt holds the
//! [`InFlightGuard`] for its whole life (queued or served), exactly as the proxy holds it until the
//! response body ends; and every attempt's outcome, a success, a timeout or a failure, feeds
//! `record_latency`, because that is what the proxy measures too: time to the outcome. (Recording only
//! successes would let a backend that fails fast look fast: the classic "black hole".)
//!
//! **What is measured.** The latency a client sees, arrival to final answer, including queueing, retries
//! and the time an error took: a request that failed after a 1 s connect timeout *was* a 1 s request for
//! the user, and an algorithm must not look good by failing instead of being slow. Errors are also counted
//! apart. Requests per backend count attempts.
//!
//! **Why a heap of events.** Unlike the supermarket model, service times here are arbitrary (fixed,
//! lognormal...), so there is no memoryless shortcut: events wait in a binary heap ordered by time, ties
//! broken by scheduling order so that a seed gives one exact run. Stale events (the answer to an attempt
//! that already timed out) stay in the heap and are ignored when they come up, cheaper than removing them.
//!
//! **Fair comparison.** Every algorithm runs the same scenario with the same seed, so the arrival times
//! are identical (the arrival stream has its own generator); service times come from another generator
//! in the order requests start service, so they are the same draws, assigned to different requests.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use hdrhistogram::Histogram;
use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, Balancer, BuildError, Health, InFlightGuard,
    PickRequest, SetOptions,
};
use serde::Serialize;

use crate::output::table;
use crate::rng::SimRng;
use crate::scenario::{Dist, Nanos, Scenario};

/// Results of one algorithm on one scenario, as printed by `lb-compare scenario --json`.
#[derive(Debug, Clone, Serialize)]
pub struct AlgorithmReport {
    /// The algorithm's name.
    pub algorithm: String,
    /// Requests sent by clients.
    pub requests: u64,
    /// Requests that failed after all their attempts (or found no backend to pick).
    pub errors: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Mean latency.
    pub mean_ms: f64,
    /// Fraction of requests slower than the threshold.
    pub above_threshold: f64,
    /// Attempts each backend received.
    pub per_backend: Vec<u64>,
    /// Most attempts on one backend over the mean.
    pub imbalance: f64,
    /// Requests still counted in flight by the backend set after the run: 0 unless a guard leaked
    /// (tests check it).
    #[serde(skip)]
    pub in_flight_at_end: u64,
}

/// Options of a run that are not part of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Seed of arrivals, service times and the randomised algorithms.
    pub seed: u64,
    /// Latency above which a request counts in `above_threshold`, in nanoseconds.
    pub threshold: Nanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The next open-loop arrival; `generation` lets a rate change void the one already scheduled.
    Arrival { generation: u32 },
    /// A closed-loop client sends its next request.
    ClientSend { client: u32 },
    /// An attempt's service ends.
    Done { attempt: u32 },
    /// A connection attempt to a dead backend gives up.
    ConnectFail { attempt: u32 },
    /// An attempt's timeout fires.
    Timeout { attempt: u32 },
    /// Script event `index` starts (`end: false`) or ends.
    Script { index: u32, end: bool },
    /// A dead backend is marked unhealthy.
    Detect { backend: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptState {
    Connecting,
    Queued,
    Serving,
    /// Answered, failed or given up on; its pending events are stale.
    Over,
}

#[derive(Debug)]
struct Attempt {
    request: u32,
    backend: usize,
    state: AttemptState,
    guard: Option<InFlightGuard>,
}

#[derive(Debug)]
struct Request {
    start: Nanos,
    /// Hash of the request's key (a user id out of `Scenario::keys`), for the hashing algorithms.
    key: u64,
    tried: Vec<usize>,
    client: Option<u32>,
}

#[derive(Debug)]
struct SimBackend {
    latency: Dist,
    /// Replacement distribution while a `latency` event is active.
    override_latency: Option<Dist>,
    slowdown: f64,
    capacity: usize,
    serving: usize,
    queue: VecDeque<u32>,
    dead: bool,
}

struct Sim<'a> {
    scenario: &'a Scenario,
    options: RunOptions,
    balancer: Arc<dyn Balancer>,
    set: Arc<BackendSet>,
    heap: BinaryHeap<Reverse<(Nanos, u64, Ev)>>,
    seq: u64,
    now: Nanos,
    arrivals_rng: SimRng,
    service_rng: SimRng,
    key_rng: SimRng,
    rate_factor: f64,
    arrival_generation: u32,
    backends: Vec<SimBackend>,
    requests: Vec<Request>,
    attempts: Vec<Attempt>,
    histogram: Histogram<u64>,
    errors: u64,
    retries: u64,
    above: u64,
    per_backend: Vec<u64>,
}

/// Run one algorithm on a scenario. `on_progress(simulated_ns)` is called now and then.
pub fn run(
    scenario: &Scenario,
    algorithm: Algorithm,
    options: RunOptions,
    mut on_progress: impl FnMut(Nanos),
) -> Result<AlgorithmReport, BuildError> {
    let mut specs = Vec::new();
    let mut backends = Vec::new();
    for group in &scenario.backends {
        for _ in 0..group.count {
            let i = specs.len();
            specs.push(BackendSpec::weighted(format!("10.0.{}.{}:80", i / 256, i % 256), group.weight));
            backends.push(SimBackend {
                latency: group.latency,
                override_latency: None,
                slowdown: 1.0,
                capacity: group.capacity,
                serving: 0,
                queue: VecDeque::new(),
                dead: false,
            });
        }
    }
    let set = BackendSet::new(specs, SetOptions::default());
    let balancer = lb_algorithms::build(
        algorithm,
        set.clone(),
        &AlgorithmOptions { seed: options.seed, ..Default::default() },
    )?;
    let n = backends.len();
    let mut sim = Sim {
        scenario,
        options,
        balancer,
        set,
        heap: BinaryHeap::new(),
        seq: 0,
        now: 0,
        arrivals_rng: SimRng::fork(options.seed, 1),
        service_rng: SimRng::fork(options.seed, 2),
        key_rng: SimRng::fork(options.seed, 3),
        rate_factor: 1.0,
        arrival_generation: 0,
        backends,
        requests: Vec::new(),
        attempts: Vec::new(),
        // 1 µs to 1 hour at 3 significant digits; larger values are clamped (saturating_record).
        histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid bounds"),
        errors: 0,
        retries: 0,
        above: 0,
        per_backend: vec![0; n],
    };
    sim.start();
    let mut next_report = 0;
    while let Some(Reverse((at, _, ev))) = sim.heap.pop() {
        sim.now = at;
        if at >= next_report {
            on_progress(at.min(scenario.duration.0));
            next_report = at + 100_000_000;
        }
        sim.handle(ev);
    }
    on_progress(scenario.duration.0);
    Ok(sim.report(algorithm))
}

impl Sim<'_> {
    fn schedule(&mut self, at: Nanos, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn start(&mut self) {
        for (index, e) in self.scenario.events.iter().enumerate() {
            self.schedule(e.at.0, Ev::Script { index: index as u32, end: false });
            if let Some(d) = e.duration {
                self.schedule(e.at.0 + d.0, Ev::Script { index: index as u32, end: true });
            }
        }
        if let Some(clients) = self.scenario.load.clients {
            for client in 0..clients {
                // Clients start spread over the first millisecond, not all at the same instant.
                let at = client as u64 * 1_000_000 / u64::from(clients);
                self.schedule(at, Ev::ClientSend { client });
            }
        } else {
            self.schedule_arrival();
        }
    }

    fn schedule_arrival(&mut self) {
        let rate = self.scenario.load.rate.unwrap_or(0.0) * self.rate_factor;
        let gap = self.arrivals_rng.exp1() / rate * 1e9;
        let at = self.now + gap as Nanos;
        if at < self.scenario.duration.0 {
            let generation = self.arrival_generation;
            self.schedule(at, Ev::Arrival { generation });
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrival { generation } => {
                if generation == self.arrival_generation {
                    self.new_request(None);
                    self.schedule_arrival();
                }
            }
            Ev::ClientSend { client } => {
                if self.now < self.scenario.duration.0 {
                    self.new_request(Some(client));
                }
            }
            Ev::Done { attempt } => self.done(attempt as usize),
            Ev::ConnectFail { attempt } | Ev::Timeout { attempt } => self.fail_attempt(attempt as usize),
            Ev::Script { index, end } => self.script(index as usize, end),
            Ev::Detect { backend } => {
                self.set.set_health(backend as usize, Health::Unhealthy, self.now);
            }
        }
    }

    fn script(&mut self, index: usize, end: bool) {
        let e = &self.scenario.events[index];
        if let Some(factor) = e.rate {
            self.rate_factor = if end { 1.0 } else { factor };
            // Arrivals are memoryless, so voiding the scheduled one and drawing afresh at the new rate
            // gives exactly a Poisson process whose rate changes here.
            self.arrival_generation += 1;
            self.schedule_arrival();
            return;
        }
        let Some(b) = e.backend else { return };
        if let Some(f) = e.slowdown {
            self.backends[b].slowdown = if end { 1.0 } else { f };
        }
        if let Some(d) = e.latency {
            self.backends[b].override_latency = if end { None } else { Some(d) };
        }
        if e.dies && !end {
            self.backends[b].dead = true;
            self.backends[b].serving = 0;
            // Everything the backend held fails now, as a reset connection would.
            let held: Vec<u32> = self.backends[b].queue.drain(..).collect();
            let serving: Vec<usize> = (0..self.attempts.len())
                .filter(|&a| self.attempts[a].backend == b && self.attempts[a].state == AttemptState::Serving)
                .collect();
            for a in held.into_iter().map(|a| a as usize).chain(serving) {
                self.fail_attempt(a);
            }
            if let Some(delay) = e.detect_after {
                self.schedule(self.now + delay.0, Ev::Detect { backend: b as u32 });
            }
        }
    }

    fn new_request(&mut self, client: Option<u32>) {
        let id = self.requests.len() as u32;
        let user = self.key_rng.below(self.scenario.keys.max(1));
        let key = lb_algorithms::hash_bytes(format!("user-{user}").as_bytes());
        self.requests.push(Request { start: self.now, key, tried: Vec::new(), client });
        self.try_attempt(id);
    }

    fn try_attempt(&mut self, request: u32) {
        let now = self.now;
        let req = &self.requests[request as usize];
        let pick =
            self.balancer.pick(&PickRequest::new(now).with_key(Some(req.key)).excluding(&req.tried), None);
        let Some(b) = pick else {
            // Nothing left to pick: the proxy would answer 503 at once.
            self.finish(request, false);
            return;
        };
        if !self.requests[request as usize].tried.is_empty() {
            self.retries += 1;
        }
        self.requests[request as usize].tried.push(b);
        self.per_backend[b] += 1;
        let attempt = self.attempts.len() as u32;
        self.attempts.push(Attempt {
            request,
            backend: b,
            state: AttemptState::Connecting,
            guard: self.set.start(b, now),
        });
        if let Some(t) = self.scenario.timeout {
            self.schedule(now + t.0, Ev::Timeout { attempt });
        }
        if self.backends[b].dead {
            self.schedule(now + self.scenario.connect_timeout.0, Ev::ConnectFail { attempt });
            return;
        }
        let backend = &mut self.backends[b];
        if backend.capacity == 0 || backend.serving < backend.capacity {
            self.serve(attempt as usize);
        } else {
            backend.queue.push_back(attempt);
            self.attempts[attempt as usize].state = AttemptState::Queued;
        }
    }

    fn serve(&mut self, attempt: usize) {
        let b = self.attempts[attempt].backend;
        let backend = &mut self.backends[b];
        backend.serving += 1;
        let dist = backend.override_latency.unwrap_or(backend.latency);
        let service = (dist.sample(&mut self.service_rng) * backend.slowdown).max(0.0) as Nanos;
        self.attempts[attempt].state = AttemptState::Serving;
        self.schedule(self.now + service, Ev::Done { attempt: attempt as u32 });
    }

    /// The backend finished serving `attempt`: free the slot, start the next queued request that its
    /// client still waits for, and answer the client if it still waits for this one.
    ///
    /// Only [`Sim::serve`] schedules `Done`, so the attempt did hold a slot. If its client gave up meanwhile
    /// (timeout) the slot was held all the same: servers rarely notice a client leaving mid-request.
    fn done(&mut self, attempt: usize) {
        let b = self.attempts[attempt].backend;
        if self.backends[b].dead {
            // Its slot went with the backend (see `script`).
            return;
        }
        self.backends[b].serving = self.backends[b].serving.saturating_sub(1);
        while let Some(next) = self.backends[b].queue.pop_front() {
            // A queued request whose client gave up is dropped when the backend reaches it: the proxy
            // closed that connection.
            if self.attempts[next as usize].state == AttemptState::Queued {
                self.serve(next as usize);
                break;
            }
        }
        let a = &mut self.attempts[attempt];
        if a.state == AttemptState::Serving {
            a.state = AttemptState::Over;
            if let Some(g) = a.guard.take() {
                g.record_latency(self.now, self.set.options().ewma_decay);
            }
            let request = a.request;
            self.finish(request, true);
        }
    }

    /// Timeout, connect failure or reset: give up on the attempt, retry if allowed.
    fn fail_attempt(&mut self, attempt: usize) {
        let a = &mut self.attempts[attempt];
        if a.state == AttemptState::Over {
            return;
        }
        a.state = AttemptState::Over;
        if let Some(g) = a.guard.take() {
            g.record_latency(self.now, self.set.options().ewma_decay);
        }
        let request = a.request;
        let req = &self.requests[request as usize];
        if (req.tried.len() as u32) < self.scenario.attempts && req.tried.len() < self.set.len() {
            self.try_attempt(request);
        } else {
            self.finish(request, false);
        }
    }

    fn finish(&mut self, request: u32, ok: bool) {
        let req = &self.requests[request as usize];
        let latency = self.now - req.start;
        if !ok {
            self.errors += 1;
        }
        if latency > self.options.threshold {
            self.above += 1;
        }
        self.histogram.saturating_record((latency / 1_000).max(1));
        if let Some(client) = req.client {
            let think = self.scenario.load.think.0;
            self.schedule(self.now + think, Ev::ClientSend { client });
        }
    }

    fn report(&self, algorithm: Algorithm) -> AlgorithmReport {
        let h = &self.histogram;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        let total = self.requests.len() as u64;
        let n = self.per_backend.len().max(1) as f64;
        let mean = self.per_backend.iter().sum::<u64>() as f64 / n;
        let max = self.per_backend.iter().copied().max().unwrap_or(0) as f64;
        AlgorithmReport {
            algorithm: algorithm.name().to_string(),
            requests: total,
            errors: self.errors,
            retries: self.retries,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1e3,
            mean_ms: h.mean() / 1e3,
            above_threshold: if total == 0 { 0.0 } else { self.above as f64 / total as f64 },
            per_backend: self.per_backend.clone(),
            imbalance: if mean > 0.0 { max / mean } else { 0.0 },
            in_flight_at_end: self.set.total_in_flight(),
        }
    }
}

/// One row per algorithm, plus the algorithms that could not be built.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: String,
    /// Its description.
    pub description: String,
    /// The seed used.
    pub seed: u64,
    /// The threshold of `above_threshold`, in milliseconds.
    pub threshold_ms: f64,
    /// One entry per algorithm that ran.
    pub results: Vec<AlgorithmReport>,
    /// Algorithms skipped, with the reason (e.g. not written yet).
    pub skipped: Vec<Skipped>,
}

/// An algorithm that did not run.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Its name.
    pub algorithm: String,
    /// Why.
    pub reason: String,
}

/// Run every algorithm in `algorithms` on the scenario, skipping those that cannot be built.
/// `on_progress(algorithm_index, simulated_ns)` is called now and then.
pub fn run_all(
    scenario: &Scenario,
    algorithms: &[Algorithm],
    options: RunOptions,
    mut on_progress: impl FnMut(usize, Nanos),
) -> ScenarioReport {
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for (i, &algorithm) in algorithms.iter().enumerate() {
        match run(scenario, algorithm, options, |t| on_progress(i, t)) {
            Ok(r) => results.push(r),
            Err(e) => {
                skipped.push(Skipped { algorithm: algorithm.name().to_string(), reason: e.to_string() })
            }
        }
    }
    ScenarioReport {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seed: options.seed,
        threshold_ms: options.threshold as f64 / 1e6,
        results,
        skipped,
    }
}

/// `scenario NAME: DESCRIPTION`, the line `lb-compare scenario` and `live` print above [`text`].
pub fn heading(r: &ScenarioReport) -> String {
    format!("scenario {}: {}\n", r.scenario, r.description.trim())
}

/// The tables of a scenario report (simulated or live): latency per algorithm, then requests per
/// backend. `lb-compare scenario`, `live` and `report` all print this.
pub fn text(r: &ScenarioReport) -> String {
    let mut out = format!("seed {}, threshold {} ms; latencies in ms\n", r.seed, r.threshold_ms);
    let rows: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|a| {
            vec![
                a.algorithm.clone(),
                a.requests.to_string(),
                a.errors.to_string(),
                format!("{:.1}", a.p50_ms),
                format!("{:.1}", a.p90_ms),
                format!("{:.1}", a.p99_ms),
                format!("{:.1}", a.p999_ms),
                format!("{:.1}", a.max_ms),
                format!("{:.2}%", a.above_threshold * 100.0),
                format!("{:.2}", a.imbalance),
            ]
        })
        .collect();
    out += &table(
        &["algorithm", "requests", "errors", "p50", "p90", "p99", "p99.9", "max", "above", "imbalance"],
        &rows,
    );
    out += "requests per backend:\n";
    for a in &r.results {
        let counts: Vec<String> = a.per_backend.iter().map(u64::to_string).collect();
        out += &format!("  {:<22} {}\n", a.algorithm, counts.join(" "));
    }
    for s in &r.skipped {
        out += &format!("skipped {}: {}\n", s.algorithm, s.reason);
    }
    out
}
