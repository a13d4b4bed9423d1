//! What each backend has done: requests by status, failures by kind, latency histogram. Bumped on the
//! request path with relaxed atomics (see [`crate::observe::metrics`] for why), read by the renderers.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds (the `le` label).
pub const BUCKETS_SECONDS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The same bounds in nanoseconds, for the comparison on the request path (integers, no float math).
pub(crate) const BUCKETS_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Status codes counted one by one; every other code is counted by its class only.
pub const COMMON_CODES: [u16; 16] =
    [200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 499, 500, 502, 503, 504];

/// Why an attempt to a backend produced no HTTP response at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The TCP connection could not be made (refused, unreachable, connect timeout).
    Connect,
    /// The backend did not answer in time.
    Timeout,
    /// The connection broke mid-request or mid-response (reset, closed early, malformed response).
    Broken,
}

impl FailureKind {
    /// Every kind, in the order they are stored and rendered.
    pub const ALL: [FailureKind; 3] = [FailureKind::Connect, FailureKind::Timeout, FailureKind::Broken];

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Broken => "broken",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Per-backend counters and the outlier-detection state of one backend.
///
/// Everything is an atomic so the proxy's threads share one `Arc<BackendStats>` with no lock. The owner
/// (`Upstream`) keeps the same `Arc` across backend-list rebuilds for every backend whose address stays,
/// so counters never reset because an unrelated backend was added.
#[derive(Debug)]
pub struct BackendStats {
    addr: String,
    /// Responses by the first digit of the status: index 1..=5 (0 collects anything out of range).
    pub(crate) by_class: [AtomicU64; 6],
    /// Responses per code in [`COMMON_CODES`], same order.
    pub(crate) by_code: [AtomicU64; COMMON_CODES.len()],
    failures: [AtomicU64; 3],
    /// Histogram: non-cumulative counts per bucket, the last slot is `+Inf`.
    pub(crate) buckets: [AtomicU64; BUCKETS_NANOS.len() + 1],
    latency_sum_nanos: AtomicU64,
    // Outlier detection (see `outlier.rs`, which owns the meaning of these).
    pub(crate) consecutive_failures: AtomicU32,
    /// When the current ejection ends (nanoseconds on the `now_nanos` clock), 0 when not ejected.
    pub(crate) ejected_until: AtomicU64,
    /// The multiplier of the base ejection time: ejections since the backend last stayed clean.
    pub(crate) ejection_level: AtomicU32,
    /// When the backend last came back from an ejection (0: never).
    pub(crate) returned_at: AtomicU64,
    ejections: AtomicU64,
}

impl BackendStats {
    /// Fresh, zeroed counters for the backend at `addr`.
    pub fn new(addr: &str) -> Self {
        BackendStats {
            addr: addr.to_string(),
            by_class: Default::default(),
            by_code: Default::default(),
            failures: Default::default(),
            buckets: Default::default(),
            latency_sum_nanos: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejection_level: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// The backend's address, as configured.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Count one response. Called by [`Metrics::record_response`].
    #[inline]
    pub fn record_response(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100);
        self.by_class[if (1..=5).contains(&class) { class } else { 0 }].fetch_add(1, Relaxed);
        // A linear scan of 16 small integers beats a hash and compiles to a few compares.
        if let Some(i) = COMMON_CODES.iter().position(|&c| c == status) {
            self.by_code[i].fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NANOS.iter().position(|&b| nanos <= b).unwrap_or(BUCKETS_NANOS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Count one attempt that got no response.
    #[inline]
    pub fn record_failure(&self, kind: FailureKind) {
        self.failures[kind.index()].fetch_add(1, Relaxed);
    }

    /// Responses of any status.
    pub fn requests(&self) -> u64 {
        self.by_class.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Responses with this exact status: exact for [`COMMON_CODES`], `None` for others (they are only
    /// counted by class, see [`BackendStats::requests_in_class`]).
    pub fn requests_with_code(&self, status: u16) -> Option<u64> {
        COMMON_CODES.iter().position(|&c| c == status).map(|i| self.by_code[i].load(Relaxed))
    }

    /// Responses whose status starts with `class` (1 to 5).
    pub fn requests_in_class(&self, class: u8) -> u64 {
        self.by_class.get(usize::from(class)).map_or(0, |c| c.load(Relaxed))
    }

    /// Attempts that failed this way.
    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind.index()].load(Relaxed)
    }

    /// Failures (of any kind, or 5xx responses as reported to outlier detection) in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    /// How many times outlier detection has ejected this backend.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Relaxed)
    }

    pub(crate) fn count_ejection(&self) {
        self.ejections.fetch_add(1, Relaxed);
    }

    /// When the current ejection ends, if the backend is ejected.
    pub fn ejected_until(&self) -> Option<u64> {
        match self.ejected_until.load(Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Sum of all recorded latencies.
    pub fn latency_sum(&self) -> Duration {
        Duration::from_nanos(self.latency_sum_nanos.load(Relaxed))
    }
}
