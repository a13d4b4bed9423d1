//! Client-side load balancing: the caller picks the instance, no proxy in between.
//!
//! In a microservice system, service A often calls several instances of service B. Instead of sending
//! every call through a load balancer (one more hop, one more thing to run and scale), A can hold the
//! list of B's instances and pick one itself, per call, with the same algorithms a proxy uses. That is
//! what gRPC's client balancing (`round_robin`, `pick_first`, xDS), Finagle and Linkerd (as a sidecar
//! next to each client) do. This crate is a small, complete version: a [`BalancedClient`] that wraps a
//! [`Balancer`] from `lb-algorithms` and a `reqwest` client, and a demo ([`run`]) that starts three toy
//! backends in-process and calls them.
//!
//! What a client-side balancer must do right, and where this crate does it:
//!
//! - hold the in-flight count for the whole call, body included ([`InFlightGuard`], dropped after the
//!   body is read), so least-connections and power-of-two see the client's own queue at each instance;
//! - feed every response's latency into the backend's EWMA, so peak EWMA can steer away from a slow
//!   instance within one response;
//! - retry a call that could not connect on a *different* instance (`PickRequest::excluding`).
//!
//! # Layout
//!
//! - [`BalancedClient`]: pick, call, count, measure, retry elsewhere on a connect failure.
//! - [`RunConfig`], [`run`] and [`Report`]: the demo the `client-side` binary runs: three toy backends,
//!   one of them optionally slow, `requests` calls at `concurrency` at a time, counts per backend.
//! - `main.rs`: the command line.
//!
//! [`InFlightGuard`]: lb_algorithms::InFlightGuard

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, Balancer, BuildError, PickRequest, SetOptions,
    build, hash_bytes, now_nanos,
};
use toy_backend::{Knobs, Latency};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Every instance is down or was already tried by this call.
    #[error("no instance available")]
    NoInstance,
    /// The request failed at the HTTP level.
    #[error("instance {url}: {source}")]
    Http {
        /// The URL that was called.
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
}

/// One successful call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Which instance answered (an index into the balancer's backend set).
    pub instance: usize,
    /// The HTTP status.
    pub status: u16,
    /// From the pick to the end of the body.
    pub latency: Duration,
}

/// An HTTP client that balances its calls over the instances of one service.
#[derive(Debug, Clone)]
pub struct BalancedClient {
    balancer: Arc<dyn Balancer>,
    /// Base URL (`http://ip:port`) of each instance, in the order of the balancer's set.
    urls: Vec<String>,
    http: reqwest::Client,
    /// How many other instances a call may try after a connect failure.
    retries: usize,
}

impl BalancedClient {
    /// A client over `balancer`, whose backends are reached at `urls` (same order). One retry.
    pub fn new(balancer: Arc<dyn Balancer>, urls: Vec<String>) -> Self {
        // One pooled client for all calls: a connection per call would measure the TCP handshake, not
        // the instance.
        BalancedClient { balancer, urls, http: reqwest::Client::new(), retries: 1 }
    }

    /// `GET path` on an instance picked for `key` (hashing algorithms use it; `None` for the others).
    pub async fn get(&self, path: &str, key: Option<u64>) -> Result<Answer, CallError> {
        let set = self.balancer.backends();
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let start = now_nanos();
            let req = PickRequest::new(start).with_key(key).excluding(&tried);
            let instance = self.balancer.pick(&req, None).ok_or(CallError::NoInstance)?;
            let (Some(guard), Some(base)) = (set.start(instance, start), self.urls.get(instance)) else {
                return Err(CallError::NoInstance);
            };
            let url = format!("{base}{path}");
            let call = async {
                let response = self.http.get(&url).send().await?;
                let status = response.status().as_u16();
                // Read the whole body while the guard is held: the call is in flight until then.
                response.bytes().await?;
                Ok::<u16, reqwest::Error>(status)
            };
            match call.await {
                Ok(status) => {
                    let end = now_nanos();
                    guard.record_latency(end, set.options().ewma_decay);
                    let latency = Duration::from_nanos(end.saturating_sub(start));
                    return Ok(Answer { instance, status, latency });
                }
                // Nothing reached the instance: safe to try another, whatever the method.
                Err(e) if e.is_connect() && tried.len() < self.retries => tried.push(instance),
                Err(source) => return Err(CallError::Http { url, source }),
            }
        }
    }
}

/// What the demo does.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// The balancing algorithm.
    pub algorithm: Algorithm,
    /// How many calls in all.
    pub requests: usize,
    /// How many calls are in flight at once.
    pub concurrency: usize,
    /// Make this instance (1-based, as in the names `backend-1` to `backend-3`) slow.
    pub slow: Option<usize>,
    /// How slow.
    pub slow_latency: Latency,
    /// Seed of the randomised algorithms.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            algorithm: Algorithm::RoundRobin,
            requests: 300,
            concurrency: 8,
            slow: None,
            slow_latency: Latency::Fixed(Duration::from_millis(50)),
            seed: AlgorithmOptions::default().seed,
        }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A toy backend did not start.
    #[error("starting the toy backends: {0}")]
    Start(#[from] std::io::Error),
    /// The algorithm rejected its options.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// `--slow` names no instance.
    #[error("--slow {0}: there are instances 1 to 3")]
    NoSuchInstance(usize),
    /// A call failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Calls per instance, and how long they took.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// What was run.
    pub config: RunConfig,
    /// Instance names, `backend-1` to `backend-3`.
    pub names: Vec<String>,
    /// Calls answered by each instance.
    pub counts: Vec<usize>,
    /// Mean latency of each instance's calls.
    pub mean_latency: Vec<Duration>,
}

/// Start three toy backends, make one slow if asked, make `requests` calls through a
/// [`BalancedClient`] and count where they went.
pub async fn run(config: RunConfig) -> Result<Report, RunError> {
    const INSTANCES: usize = 3;
    let backends = toy_backend::start_many(INSTANCES, Knobs::default()).await?;
    if let Some(slow) = config.slow {
        let backend =
            slow.checked_sub(1).and_then(|i| backends.get(i)).ok_or(RunError::NoSuchInstance(slow))?;
        backend.set_latency(config.slow_latency);
    }
    let set = BackendSet::new(
        backends.iter().map(|b| BackendSpec::new(b.addr().to_string())),
        SetOptions::default(),
    );
    let options = AlgorithmOptions { seed: config.seed, ..AlgorithmOptions::default() };
    let balancer = build(config.algorithm, set, &options)?;
    let client = BalancedClient::new(balancer, backends.iter().map(|b| b.url()).collect());

    // `concurrency` workers share one ticket counter, so exactly `requests` calls are made.
    let tickets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (client, tickets, requests) = (client.clone(), Arc::clone(&tickets), config.requests);
        let hashing = config.algorithm.is_hashing();
        workers.spawn(async move {
            let mut answers = Vec::new();
            loop {
                let ticket = tickets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if ticket >= requests {
                    return Ok::<_, CallError>(answers);
                }
                // Hashing algorithms get a key: 30 users, each calling 10 times.
                let key = hashing.then(|| hash_bytes(format!("user-{}", ticket % 30).as_bytes()));
                answers.push(client.get("/", key).await?);
            }
        });
    }
    let mut counts = vec![0; INSTANCES];
    let mut total = vec![Duration::ZERO; INSTANCES];
    while let Some(joined) = workers.join_next().await {
        // A worker only panics if the runtime is shutting down; count it as no answers.
        for answer in joined.unwrap_or_else(|_| Ok(Vec::new()))? {
            counts[answer.instance] += 1;
            total[answer.instance] += answer.latency;
        }
    }
    let mean_latency = counts
        .iter()
        .zip(&total)
        .map(|(&c, &t)| if c == 0 { Duration::ZERO } else { t / c as u32 })
        .collect();
    let names = backends.iter().map(|b| b.name().to_string()).collect();
    Ok(Report { config, names, counts, mean_latency })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(f, "{}: {} calls, {} at a time", c.algorithm, c.requests, c.concurrency)?;
        if let Some(slow) = c.slow {
            write!(f, ", backend-{slow} slow ({})", c.slow_latency)?;
        }
        writeln!(f)?;
        for ((name, count), latency) in self.names.iter().zip(&self.counts).zip(&self.mean_latency) {
            let share = 100.0 * *count as f64 / c.requests.max(1) as f64;
            writeln!(
                f,
                "{name}  {count:>5} calls  {share:>5.1}%  mean {:>6.1} ms",
                latency.as_secs_f64() * 1e3
            )?;
        }
        Ok(())
    }
}
