//! `lb-compare live`: a scenario run for real, through the real proxy, next to its simulation.
//!
//! **What runs.** The scenario file that `lb-compare scenario` simulates: one toy backend
//! ([`toy_backend::Backend`]) per backend of the file, with its latency distribution and capacity as
//! knobs; the real proxy ([`lb::start`], one worker thread, one upstream) with each algorithm in turn; and
//! open-loop load from [`loadgen`] at the file's rate. The script's events are applied at their times
//! through the backends' knobs: a `slowdown` or a `latency` event sets the latency and puts it back
//! when the event ends, `dies` kills the backend ([`toy_backend::Backend::kill`]: the listener closes
//! and open requests are reset), and `detect_after` marks it unhealthy in the proxy, exactly as the
//! simulator does (its model of "a health check noticed"). A `rate` event starts a second open-loop
//! generator for the extra traffic. Requests per backend come from the backends' own counters, not from
//! the proxy, so a proxy that miscounted would show.
//!
//! **Why scaled.** A 60 s scenario times ten algorithms is ten minutes, and this machine has two cores
//! shared with everything else. By default the time line (duration, event times and lengths) is
//! squeezed so that each algorithm runs about `DEFAULT_SECONDS_PER_ALGORITHM` seconds; service times
//! are *not* scaled, since they are what queueing is made of. `--rate-scale` divides the traffic when a
//! rate is too much for the machine. The command prints both factors, and `--compare` simulates the
//! same scaled scenario, so simulation and reality sit side by side on equal terms.
//!
//! **What differs from the simulation, and why.** Arrivals are evenly spaced (loadgen's schedule), not
//! Poisson, so queues are a little shorter than simulated. A dead toy backend refuses connections at once
//! instead of making connects wait `connect_timeout`. Latency is measured by the client from each
//! request's intended send time (no coordinated omission); failed requests are counted in `errors` but,
//! having no answer, are not in the percentiles. Closed-loop scenarios run without think time. The hashing
//! algorithms are skipped: every request of the load generator carries the same key, so they would send
//! everything to one backend and say nothing about them.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use lb::config::{Config, RetryConfig, UpstreamConfig};
use lb_algorithms::{Algorithm, BackendSpec, Health};
use loadgen::{LoadSpec, Mode};
use serde::Serialize;
use tokio::task::JoinHandle;
use toy_backend::{Backend, BackendConfig, Knobs, Latency};

use crate::scenario::{BackendGroup, Dist, Dur, Event, Nanos, Scenario};
use crate::sim::{self, AlgorithmReport, ScenarioReport, Skipped};

/// Each algorithm's share of a default live run, in seconds of wall time.
const DEFAULT_SECONDS_PER_ALGORITHM: f64 = 6.0;

/// The upstream's name inside the proxy.
const UPSTREAM: &str = "live";

/// Options of a live run that are not part of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    /// Seed of the backends' latency draws and of the randomised algorithms.
    pub seed: u64,
    /// Latency above which a request counts in `above_threshold`, in nanoseconds.
    pub threshold: Nanos,
    /// Open-loop connections of the load generator: enough to carry rate x latency, queues included.
    pub connections: usize,
}

/// Why a live run could not run.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A toy backend could not bind.
    #[error("starting toy backend {index}: {source}")]
    Backend {
        /// Its index in the scenario.
        index: usize,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy refused to start.
    #[error("starting lb: {0}")]
    Lb(#[from] lb::Error),
    /// The load generator refused its spec or lost a thread.
    #[error("load generator: {0}")]
    Load(#[from] loadgen::LoadError),
    /// The scenario asks for something a live run cannot do.
    #[error("scenario {name}: {reason}")]
    Unsupported {
        /// The scenario.
        name: String,
        /// What and why.
        reason: String,
    },
}

/// A live run's report: the same fields as `lb-compare scenario --json`, plus how it was scaled.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    /// Per algorithm, as the simulator reports it.
    #[serde(flatten)]
    pub report: ScenarioReport,
    /// `"live"`, so a JSON reader can tell it from a simulation.
    pub mode: &'static str,
    /// Time line factor applied to the file (0.1: a 60 s file ran 6 s).
    pub duration_scale: f64,
    /// Rate factor applied to the file.
    pub rate_scale: f64,
}

/// The time scale that makes one algorithm's run last about `DEFAULT_SECONDS_PER_ALGORITHM` (never
/// stretched above 1).
pub fn default_duration_scale(scenario: &Scenario) -> f64 {
    let secs = scenario.duration.0 as f64 / 1e9;
    (DEFAULT_SECONDS_PER_ALGORITHM / secs).min(1.0)
}

/// The scenario with its time line multiplied by `duration_scale` and its rate (or clients) by
/// `rate_scale`. Service times stay as written. The simulator runs this same scaled file under
/// `--compare`, so both sides see one experiment.
pub fn scale(scenario: &Scenario, duration_scale: f64, rate_scale: f64) -> Scenario {
    let t = |d: Dur| Dur((d.0 as f64 * duration_scale).round() as Nanos);
    let mut s = scenario.clone();
    s.duration = t(s.duration);
    s.load.rate = s.load.rate.map(|r| r * rate_scale);
    s.load.clients = s.load.clients.map(|c| ((f64::from(c) * rate_scale).round() as u32).max(1));
    for e in &mut s.events {
        e.at = t(e.at);
        e.duration = e.duration.map(t);
        e.detect_after = e.detect_after.map(t);
    }
    s
}

/// Run an (already scaled) scenario through each algorithm, one after the other, for real.
pub async fn run_all(
    scenario: &Scenario,
    algorithms: &[Algorithm],
    options: LiveOptions,
    mut on_start: impl FnMut(usize),
) -> Result<ScenarioReport, LiveError> {
    check(scenario)?;
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for (i, &algorithm) in algorithms.iter().enumerate() {
        if algorithm.is_hashing() {
            let reason = "every live request carries the same key, so a hashing algorithm would send \
                          them all to one backend";
            skipped.push(Skipped { algorithm: algorithm.name().to_string(), reason: reason.to_string() });
            continue;
        }
        on_start(i);
        results.push(run_one(scenario, algorithm, options).await?);
    }
    Ok(ScenarioReport {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seed: options.seed,
        threshold_ms: options.threshold as f64 / 1e6,
        results,
        skipped,
    })
}

fn check(s: &Scenario) -> Result<(), LiveError> {
    let unsupported =
        |reason: &str| Err(LiveError::Unsupported { name: s.name.clone(), reason: reason.into() });
    if s.events.iter().any(|e| e.rate.is_some_and(|f| f < 1.0)) {
        // Extra traffic is a second generator; taking traffic away would need a generator that changes
        // its rate mid-run, which loadgen does not do.
        return unsupported("a live run can raise the rate (rate >= 1.0) but not lower it");
    }
    Ok(())
}

/// The toy backend's latency knob for a scenario distribution.
fn to_latency(d: Dist) -> Latency {
    let ns = |v: f64| Duration::from_nanos(v.max(0.0).round() as u64);
    match d {
        Dist::Fixed(v) if v <= 0.0 => Latency::None,
        Dist::Fixed(v) => Latency::Fixed(ns(v)),
        Dist::Uniform(lo, hi) => Latency::Uniform(ns(lo), ns(hi)),
        Dist::Exp(mean) => Latency::Exponential { mean: ns(mean) },
        Dist::LogNormal(median, sigma) => Latency::LogNormal { median: ns(median), sigma },
    }
}

/// `d` with every service time multiplied by `factor` (a slowdown event).
fn slowed(d: Dist, factor: f64) -> Dist {
    match d {
        Dist::Fixed(v) => Dist::Fixed(v * factor),
        Dist::Uniform(lo, hi) => Dist::Uniform(lo * factor, hi * factor),
        Dist::Exp(mean) => Dist::Exp(mean * factor),
        Dist::LogNormal(median, sigma) => Dist::LogNormal(median * factor, sigma),
    }
}

fn nanos(n: Nanos) -> Duration {
    Duration::from_nanos(n)
}

async fn run_one(
    s: &Scenario,
    algorithm: Algorithm,
    options: LiveOptions,
) -> Result<AlgorithmReport, LiveError> {
    let fleet = fleet(s);
    let backends = Arc::new(start_backends(&fleet, options.seed).await?);
    let specs = backends
        .iter()
        .zip(&fleet)
        .map(|(b, g)| BackendSpec::weighted(b.addr().to_string(), g.weight))
        .collect();
    let running = lb::start(proxy_config(s, algorithm, options, specs)).await?;
    let target = running.listen.first().copied().ok_or_else(|| LiveError::Unsupported {
        name: s.name.clone(),
        reason: "the proxy bound no listener".into(),
    })?;

    let script = spawn_script(s, &backends, &running, target, options.connections);
    let main = loadgen::run(main_load(s, target, options.connections)).await;
    let mut extras = Vec::new();
    for task in script {
        // The load is over; an event still waiting (it would fall after the end) has nothing to do.
        if task.is_finished() {
            if let Ok(Some(report)) = task.await {
                extras.push(report);
            }
        } else {
            task.abort();
        }
    }
    let main = main?;
    let retries = running.metrics.retries(UPSTREAM);
    let per_backend: Vec<u64> = backends.iter().map(Backend::requests).collect();
    running.shutdown().await;
    for b in backends.iter() {
        b.kill();
    }
    Ok(report(algorithm, Totals::of(&main, &extras), retries, per_backend, options))
}

/// The group of each backend, in index order: a group of `count` backends appears `count` times.
fn fleet(s: &Scenario) -> Vec<&BackendGroup> {
    s.backends.iter().flat_map(|g| std::iter::repeat_n(g, g.count)).collect()
}

/// A toy backend per backend of the fleet, with its group's latency and capacity as knobs.
async fn start_backends(fleet: &[&BackendGroup], seed: u64) -> Result<Vec<Backend>, LiveError> {
    let mut backends = Vec::with_capacity(fleet.len());
    for (index, group) in fleet.iter().enumerate() {
        let knobs = Knobs {
            latency: to_latency(group.latency),
            capacity: (group.capacity > 0).then_some(group.capacity),
            ..Knobs::default()
        };
        let config = BackendConfig { name: format!("backend-{index}"), knobs, seed: seed + index as u64 };
        let backend = Backend::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config)
            .await
            .map_err(|source| LiveError::Backend { index, source })?;
        backends.push(backend);
    }
    Ok(backends)
}

/// The proxy's configuration: one worker, one upstream of `backends` balanced by `algorithm`, with the
/// scenario's attempts and timeouts.
fn proxy_config(
    s: &Scenario,
    algorithm: Algorithm,
    options: LiveOptions,
    backends: Vec<BackendSpec>,
) -> Config {
    let mut upstream = UpstreamConfig::new(UPSTREAM, algorithm, backends);
    // The simulator retries while attempts remain, with no budget: a budget as large as the traffic
    // gives the same behaviour.
    upstream.retry = RetryConfig { attempts: s.attempts, budget_ratio: 1.0, budget_min_per_sec: 1_000_000 };
    upstream.timeouts.connect = nanos(s.connect_timeout.0);
    if let Some(t) = s.timeout {
        upstream.timeouts.response_headers = nanos(t.0);
    }
    upstream.options.seed = Some(options.seed);
    let mut config = Config { upstreams: vec![upstream], ..Config::default() };
    config.server.listen = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))];
    config.server.workers = 1;
    config.server.shutdown_grace = Duration::from_secs(2);
    config
}

/// The scenario's load on `target`: open loop at its rate, or closed loop with its clients.
fn main_load(s: &Scenario, target: SocketAddr, connections: usize) -> LoadSpec {
    let mut spec = LoadSpec::new(target);
    spec.duration = nanos(s.duration.0);
    spec.mode = match (s.load.rate, s.load.clients) {
        (Some(rate_per_sec), _) => Mode::Open { rate_per_sec, connections },
        (None, Some(clients)) => Mode::Closed { connections: clients as usize },
        (None, None) => Mode::Closed { connections: 1 },
    };
    spec
}

/// The script: one task per event, each sleeping to its start, acting, and undoing at its end. The task
/// of a rate event returns the report of its extra load.
fn spawn_script(
    s: &Scenario,
    backends: &Arc<Vec<Backend>>,
    running: &lb::Running,
    target: SocketAddr,
    connections: usize,
) -> Vec<JoinHandle<Option<loadgen::Report>>> {
    let (base_rate, end) = (s.load.rate.unwrap_or(0.0), s.duration.0);
    let mut script = Vec::new();
    for e in &s.events {
        let e = e.clone();
        let backends = Arc::clone(backends);
        let upstreams = Arc::clone(&running.upstreams);
        script.push(tokio::spawn(async move {
            tokio::time::sleep(nanos(e.at.0)).await;
            let until = e.duration.map_or(end, |d| (e.at.0 + d.0).min(end));
            let Some(backend) = e.backend.and_then(|i| backends.get(i)) else {
                return extra_load(&e, target, base_rate, until, connections).await;
            };
            let mark_unhealthy = || {
                for u in upstreams.all() {
                    u.set_health(&backend.addr().to_string(), Health::Unhealthy);
                }
            };
            change_backend(&e, backend, until, mark_unhealthy).await;
            None
        }));
    }
    script
}

/// A rate event: the extra traffic comes from a second generator for the event's length.
async fn extra_load(
    e: &Event,
    target: SocketAddr,
    base_rate: f64,
    until: Nanos,
    connections: usize,
) -> Option<loadgen::Report> {
    let factor = e.rate.unwrap_or(1.0);
    if factor <= 1.0 || until <= e.at.0 {
        return None;
    }
    let mut extra = LoadSpec::new(target);
    extra.duration = nanos(until - e.at.0);
    extra.mode = Mode::Open { rate_per_sec: base_rate * (factor - 1.0), connections };
    loadgen::run(extra).await.ok()
}

/// A backend event, at its time: a slowdown or a latency change until `until`, or death (and, after
/// `detect_after`, `mark_unhealthy`).
async fn change_backend(e: &Event, backend: &Backend, until: Nanos, mark_unhealthy: impl FnOnce()) {
    let original = backend.knobs().latency;
    if let Some(f) = e.slowdown {
        backend.set_latency(to_latency(slowed(dist_of(original), f)));
    } else if let Some(d) = e.latency {
        backend.set_latency(to_latency(d));
    } else if e.dies {
        backend.kill();
        if let Some(after) = e.detect_after {
            tokio::time::sleep(nanos(after.0)).await;
            mark_unhealthy();
        }
        return;
    }
    if e.duration.is_some() {
        tokio::time::sleep(nanos(until - e.at.0)).await;
        backend.set_latency(original);
    }
}

/// The scenario distribution of a toy backend's latency knob (a slowdown multiplies what it has now).
fn dist_of(latency: Latency) -> Dist {
    match latency {
        Latency::None => Dist::Fixed(0.0),
        Latency::Fixed(d) => Dist::Fixed(d.as_nanos() as f64),
        Latency::Uniform(lo, hi) => Dist::Uniform(lo.as_nanos() as f64, hi.as_nanos() as f64),
        Latency::Exponential { mean } => Dist::Exp(mean.as_nanos() as f64),
        Latency::LogNormal { median, sigma } => Dist::LogNormal(median.as_nanos() as f64, sigma),
    }
}

/// The main load and the extra loads of rate events, added up.
#[derive(Debug)]
struct Totals {
    /// Latencies of the answered requests, µs.
    histogram: Histogram<u64>,
    /// Requests due: answered, failed or never sent.
    requests: u64,
    /// Requests failed, answered with a status outside 2xx, or never sent.
    errors: u64,
}

impl Totals {
    fn of(main: &loadgen::Report, extras: &[loadgen::Report]) -> Totals {
        let mut histogram = main.histogram.clone();
        let (mut answered, mut failed, mut bad_status, mut missed) =
            (main.requests, main.errors, 0, main.missed);
        for r in extras {
            // Same bounds on both sides, so adding cannot fail.
            let _ = histogram.add(&r.histogram);
            answered += r.requests;
            failed += r.errors;
            missed += r.missed;
        }
        for r in std::iter::once(main).chain(extras) {
            bad_status +=
                r.status_counts.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(_, n)| n).sum::<u64>();
        }
        Totals { histogram, requests: answered + failed + missed, errors: failed + bad_status + missed }
    }
}

/// One algorithm's live run in the simulator's terms.
fn report(
    algorithm: Algorithm,
    totals: Totals,
    retries: u64,
    per_backend: Vec<u64>,
    options: LiveOptions,
) -> AlgorithmReport {
    let h = &totals.histogram;
    let ms = |us: u64| us as f64 / 1e3;
    let q = |x: f64| if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(x)) };
    let threshold_us = options.threshold / 1_000;
    let above = if h.is_empty() { 0.0 } else { 1.0 - h.quantile_below(threshold_us) };
    let total: u64 = per_backend.iter().sum();
    let mean = total as f64 / per_backend.len().max(1) as f64;
    let imbalance =
        if mean > 0.0 { per_backend.iter().copied().max().unwrap_or(0) as f64 / mean } else { 0.0 };
    AlgorithmReport {
        algorithm: algorithm.name().to_string(),
        requests: totals.requests,
        errors: totals.errors,
        retries,
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1e3,
        above_threshold: above,
        per_backend,
        imbalance,
        in_flight_at_end: 0,
    }
}

/// The line that says how the file was scaled for a live run of `algorithms` algorithms.
pub fn scaling_note(
    original: &Scenario,
    scaled: &Scenario,
    duration_scale: f64,
    rate_scale: f64,
    algorithms: usize,
) -> String {
    let secs = scaled.duration.0 as f64 / 1e9;
    format!(
        "live run: the file's {:.0} s ran in {secs:.1} s per algorithm (--duration-scale {duration_scale:.3}; service times unscaled), rate x{rate_scale} (--rate-scale); about {:.0} s for {} algorithms",
        original.duration.0 as f64 / 1e9,
        secs * algorithms as f64 + algorithms as f64,
        algorithms
    )
}

/// A live run as `lb-compare live` prints it: the scenario, the scaling note, the simulation of the
/// same scaled file when there is one (`--compare`), then the live tables.
pub fn text(note: &str, live: &LiveReport, simulated: Option<&ScenarioReport>) -> String {
    let mut out = sim::heading(&live.report) + note + "\n";
    if let Some(simulated) = simulated {
        out += "\nsimulated (same scaled scenario):\n";
        out += &sim::text(simulated);
        out += "\nlive (toy backends, lb, loadgen):\n";
    }
    out + &sim::text(&live.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_squeezes_the_time_line_but_not_service_times() {
        let text = r#"
            duration = "60s"
            [load]
            rate = 1000.0
            [[backend]]
            count = 2
            latency = "exp:20ms"
            [[event]]
            at = "15s"
            backend = 1
            slowdown = 10.0
            duration = "30s"
        "#;
        let s = Scenario::parse("t", text).unwrap_or_else(|e| panic!("{e}"));
        assert!((default_duration_scale(&s) - 0.1).abs() < 1e-12);
        let scaled = scale(&s, 0.1, 0.5);
        assert_eq!(scaled.duration, Dur(6_000_000_000));
        assert_eq!(
            (scaled.events[0].at, scaled.events[0].duration),
            (Dur(1_500_000_000), Some(Dur(3_000_000_000)))
        );
        assert_eq!(scaled.load.rate, Some(500.0));
        assert_eq!(scaled.backends[0].latency, Dist::Exp(20e6));
    }

    #[test]
    fn distributions_become_the_same_toy_backend_knobs() {
        assert_eq!(to_latency(Dist::Fixed(0.0)), Latency::None);
        assert_eq!(to_latency(Dist::Exp(20e6)), Latency::Exponential { mean: Duration::from_millis(20) });
        let slow = slowed(Dist::LogNormal(20e6, 0.5), 10.0);
        assert_eq!(to_latency(slow), Latency::LogNormal { median: Duration::from_millis(200), sigma: 0.5 });
        assert_eq!(
            dist_of(Latency::Uniform(Duration::from_millis(1), Duration::from_millis(3))),
            Dist::Uniform(1e6, 3e6)
        );
    }
}
