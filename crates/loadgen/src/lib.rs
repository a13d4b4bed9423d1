//! `loadgen`: an HTTP/1.1 load generator that measures latency honestly.
//!
//! Two ways to load a server:
//!
//! - **Closed loop** ([`Mode::Closed`]): `N` connections, each sending its next request when the last
//!   answer arrived. It finds the throughput limit (what `wrk` does). Its latencies are optimistic: when
//!   the server stalls, the clients stop sending, so the stall is measured once instead of once per request
//!   that should have been sent meanwhile.
//! - **Open loop** ([`Mode::Open`]): requests are *due* on a fixed schedule, request `k` at
//!   `start + k / rate`, whatever the server does, and each latency is measured from that **intended** send
//!   time, not from when a connection got round to sending it. A stall then shows up in every request that
//!   queued behind it. Measuring from the actual send time instead is *coordinated omission* (Gil Tene,
//!   "How NOT to Measure Latency", 2015; wrk2 applies the same correction): the load generator silently
//!   coordinates with the server it measures and omits the bad samples.
//!
//! Connections are hyper 1.x client connections made directly (an HTTP/1 handshake per connection over a
//! tokio `TcpStream`, `TCP_NODELAY` on), with no pool, redirects or decompression in the way: per request
//! the generator does one write and one read, as cheap as a client can be. Keep-alive can be turned off
//! (a new connection per request, sent with `Connection: close`) to measure connection setup too.
//!
//! Each connection keeps its own HDR histogram (microseconds, 3 significant digits) and counters; they are
//! merged at the end, so nothing is shared on the request path but the open loop's ticket counter (one
//! atomic add per request). With [`LoadSpec::threads`] above 1 the connections are spread over that many
//! OS threads, each running a current-thread tokio runtime: no work stealing, no cross-thread wakeups.
//!
//! # Layout
//!
//! - [`LoadSpec`], [`Mode`]: what to send. [`run`]: send it. [`Report`]: what came back.
//! - `conn.rs`: one connection's loop (connect, send, read, record).
//! - `main.rs`: the `loadgen` command.
//!
//! ```no_run
//! # async fn demo() -> Result<(), loadgen::LoadError> {
//! use std::time::Duration;
//! use loadgen::{LoadSpec, Mode, run};
//! let mut spec = LoadSpec::new("127.0.0.1:8080".parse().expect("an address"));
//! spec.mode = Mode::Open { rate_per_sec: 1_000.0, connections: 16 };
//! spec.duration = Duration::from_secs(5);
//! let report = run(spec).await?;
//! println!("{:.0} req/s, p99 {:?}", report.rps(), report.percentile(99.0));
//! # Ok(()) }
//! ```

mod conn;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms hold, in microseconds (one hour); longer ones are clamped.
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each of `connections` sends its next request as soon as the last one is answered.
    Closed {
        /// Concurrent connections.
        connections: usize,
    },
    /// Requests are due at `rate_per_sec`, evenly spaced; `connections` take them in turn. When every
    /// connection is busy, due requests wait (and that wait counts in their latency).
    Open {
        /// Requests per second.
        rate_per_sec: f64,
        /// Concurrent connections: enough to carry the rate (rate x latency), or the wait shows.
        connections: usize,
    },
}

impl Mode {
    /// Number of connections.
    pub(crate) fn connections(&self) -> usize {
        match *self {
            Mode::Closed { connections } | Mode::Open { connections, .. } => connections,
        }
    }
}

/// What to send, where, for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server.
    pub target: SocketAddr,
    /// Path and query of every request.
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// Open or closed loop.
    pub mode: Mode,
    /// How long requests are sent; requests in flight at the end are waited for.
    pub duration: Duration,
    /// Reuse connections (HTTP/1.1 keep-alive); off: one connection per request.
    pub keep_alive: bool,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Give up on a request after this long (counted as an error).
    pub timeout: Option<Duration>,
    /// OS threads, each with a current-thread runtime; 0 or 1: run in the caller's runtime.
    pub threads: usize,
}

impl LoadSpec {
    /// `GET /` on `target`, closed loop, 16 connections, 5 s, keep-alive.
    pub fn new(target: SocketAddr) -> Self {
        LoadSpec {
            target,
            path: "/".to_string(),
            host: target.to_string(),
            mode: Mode::Closed { connections: 16 },
            duration: Duration::from_secs(5),
            keep_alive: true,
            headers: Vec::new(),
            timeout: None,
            threads: 0,
        }
    }
}

/// A spec that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// Zero connections, a rate that is not a positive number, a bad header...
    #[error("invalid load spec: {0}")]
    Invalid(String),
    /// A worker thread could not start or panicked.
    #[error("worker thread: {0}")]
    Thread(String),
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests that got no answer: connect failures, resets, timeouts.
    pub errors: u64,
    /// Open loop: requests that fell due during the run but were never sent, because every connection was
    /// still busy when the run ended. Not in the histogram; a large number means the latencies above are a
    /// lower bound.
    pub missed: u64,
    /// Answers by status code.
    pub status_counts: BTreeMap<u16, u64>,
    /// Latencies of answered requests in microseconds (from the intended send time in open loop).
    pub histogram: Histogram<u64>,
    /// Wall time from the start to the last answer.
    pub elapsed: Duration,
}

impl Report {
    /// Answered requests per second.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.requests as f64 / secs } else { 0.0 }
    }

    /// The latency at percentile `q` (0 to 100, e.g. 99.9).
    pub fn percentile(&self, q: f64) -> Duration {
        Duration::from_micros(self.histogram.value_at_quantile((q / 100.0).clamp(0.0, 1.0)))
    }

    /// A flat summary for JSON output.
    pub fn summary(&self) -> Summary {
        let us = |q: f64| self.histogram.value_at_quantile(q);
        Summary {
            requests: self.requests,
            errors: self.errors,
            missed: self.missed,
            rps: self.rps(),
            elapsed_s: self.elapsed.as_secs_f64(),
            status_counts: self.status_counts.clone(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: self.histogram.max(),
            mean_us: self.histogram.mean(),
        }
    }
}

/// [`Report`] without the histogram, as `loadgen --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// See [`Report::requests`].
    pub requests: u64,
    /// See [`Report::errors`].
    pub errors: u64,
    /// See [`Report::missed`].
    pub missed: u64,
    /// Answered requests per second.
    pub rps: f64,
    /// Seconds from start to last answer.
    pub elapsed_s: f64,
    /// Answers by status.
    pub status_counts: BTreeMap<u16, u64>,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Slowest, µs.
    pub max_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
}

/// What every connection shares: the spec, the clock and (open loop) the next ticket.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) spec: LoadSpec,
    pub(crate) start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) next_ticket: AtomicU64,
}

/// One connection's results, merged into the [`Report`].
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) status_counts: BTreeMap<u16, u64>,
    pub(crate) histogram: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally { requests: 0, errors: 0, status_counts: BTreeMap::new(), histogram: new_histogram() }
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (status, count) in other.status_counts {
            *self.status_counts.entry(status).or_default() += count;
        }
        // Both histograms have the same bounds, so adding cannot fail; ignoring the Result is safe.
        let _ = self.histogram.add(&other.histogram);
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant, valid histogram bounds")
}

fn validate(spec: &LoadSpec) -> Result<(), LoadError> {
    if spec.mode.connections() == 0 {
        return Err(LoadError::Invalid("connections must be at least 1".into()));
    }
    if let Mode::Open { rate_per_sec, .. } = spec.mode
        && !(rate_per_sec > 0.0 && rate_per_sec.is_finite())
    {
        return Err(LoadError::Invalid(format!("rate must be a positive number, not {rate_per_sec}")));
    }
    for (name, value) in &spec.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            return Err(LoadError::Invalid(format!("bad header {name:?}: {value:?}")));
        }
    }
    if http::Uri::try_from(spec.path.as_str()).is_err() {
        return Err(LoadError::Invalid(format!("bad path {:?}", spec.path)));
    }
    Ok(())
}

/// Send the load and wait for every answer.
pub async fn run(spec: LoadSpec) -> Result<Report, LoadError> {
    validate(&spec)?;
    let connections = spec.mode.connections();
    let threads = spec.threads.clamp(1, connections);
    let start = Instant::now();
    let shared =
        Arc::new(Shared { deadline: start + spec.duration, start, next_ticket: AtomicU64::new(0), spec });

    let mut total = Tally::new();
    if threads == 1 {
        for tally in run_connections(Arc::clone(&shared), 0..connections).await {
            total.merge(tally);
        }
    } else {
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            // Connections t, t + threads, t + 2*threads...: an even split.
            let ids: Vec<usize> = (t..connections).step_by(threads).collect();
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || -> Result<Vec<Tally>, String> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    Ok(rt.block_on(run_connections(shared, ids)))
                })
                .map_err(|e| LoadError::Thread(e.to_string()))?;
            handles.push(handle);
        }
        let joined = tokio::task::spawn_blocking(move || {
            handles.into_iter().map(|h| h.join().map_err(|_| "panicked".to_string())?).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| LoadError::Thread(e.to_string()))?;
        for tallies in joined {
            for tally in tallies.map_err(LoadError::Thread)? {
                total.merge(tally);
            }
        }
    }
    let elapsed = shared.start.elapsed();

    let missed = match shared.spec.mode {
        Mode::Open { rate_per_sec, .. } => {
            // Every request sent had a due time before the deadline; the rest of those due were not sent.
            let due = (shared.spec.duration.as_secs_f64() * rate_per_sec).ceil() as u64;
            due.saturating_sub(total.requests + total.errors)
        }
        Mode::Closed { .. } => 0,
    };
    Ok(Report {
        requests: total.requests,
        errors: total.errors,
        missed,
        status_counts: total.status_counts,
        histogram: total.histogram,
        elapsed,
    })
}

async fn run_connections(shared: Arc<Shared>, ids: impl IntoIterator<Item = usize>) -> Vec<Tally> {
    let tasks: Vec<_> = ids.into_iter().map(|_| tokio::spawn(conn::drive(Arc::clone(&shared)))).collect();
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        // A connection task only ends by returning its tally; a panic there is a bug, and its requests
        // are then lost from the report rather than taking the whole run down.
        if let Ok(tally) = task.await {
            tallies.push(tally);
        }
    }
    tallies
}
