//! Metrics: counters the request path bumps with relaxed atomics, rendered as Prometheus text on demand.
//!
//! # Two halves
//!
//! A proxy handles tens of thousands of requests a second on each core; Prometheus scrapes it every 15
//! seconds or so. So the work is split accordingly:
//!
//! - **Recording** (every request) must cost a handful of nanoseconds: a few `fetch_add(1, Relaxed)` on
//!   atomics that already exist. No lock, no allocation, no hashing of label values. That is why the
//!   per-backend counters live in a [`BackendStats`] that the proxy already holds (it sits in
//!   `UpstreamState::stats`, at the same index as the backend in the set), instead of in a map keyed by
//!   `(upstream, backend, code)` as a generic metrics library would keep them.
//! - **Rendering** (every scrape) may be slow and allocate freely: it walks every upstream and backend,
//!   formats the text, and reads the live gauges (in-flight, health) straight from the backend sets, so
//!   they are never stale and cost nothing to keep.
//!
//! `Relaxed` is enough because every counter is independent: nobody reads two of them expecting an order
//! between them, and a scrape that sees a count one request behind is still a correct scrape.
//!
//! # Names
//!
//! Prometheus conventions: an `lb_` prefix, base units in the name (`_seconds`, `_bytes`), `_total` on
//! counters, and labels for the dimensions (`upstream`, `backend`, `code`, `kind`). The text follows the
//! exposition format 0.0.4: `# HELP` and `# TYPE` before each family, then `name{labels} value` lines,
//! label values escaped (`\\`, `\"`, `\n`).
//!
//! Status codes: the common ones are counted one by one; any other code is counted with its class and
//! shown as `code="2xx"`, `code="5xx"`, and so on, so a backend answering odd codes cannot grow the
//! number of series without bound. A query such as `sum by (code) (rate(lb_requests_total[1m]))` works
//! the same either way.
//!
//! Certificates: `lb_tls_certificate_expiry_seconds{name}` is each `[[server.tls]]` certificate's
//! `notAfter` as Unix seconds (a timestamp, as `process_start_time_seconds` is), so "expires within 14
//! days" is `lb_tls_certificate_expiry_seconds - time() < 14 * 86400`. Start-up and every reload set
//! the whole list, so a removed certificate's series goes away with it.
//!
//! The latency histogram uses fixed buckets from 0.5 ms to 10 s (the shape of Prometheus client
//! defaults, with finer steps at the low end where a proxy on a LAN lives). Each observation increments
//! one bucket; the cumulative counts Prometheus expects are summed at render time.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use lb_algorithms::{Backend, Health, Nanos, now_nanos};

use crate::net::tls::CertExpiry;
use crate::upstream::stats::{BUCKETS_NANOS, BUCKETS_SECONDS, BackendStats, COMMON_CODES, FailureKind};
use crate::upstream::{Upstream, UpstreamState, Upstreams};

/// How one DNS resolution of an `[upstream.dns]` group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsOutcome {
    /// An answer with at least one address: the group follows it.
    Ok = 0,
    /// No answer (timeout, refused, server failure): the group keeps its last good set.
    Error = 1,
    /// An answer with no address (no such name, no records): the group keeps its last good set.
    Empty = 2,
}

impl DnsOutcome {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsOutcome::Ok => "ok",
            DnsOutcome::Error => "error",
            DnsOutcome::Empty => "empty",
        }
    }
}

/// Per-upstream counters that have no backend (retries, the retry budget, "no backend" answers).
#[derive(Debug)]
struct UpstreamCounters {
    name: String,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    no_backend: AtomicU64,
    /// `[upstream.dns]` resolutions by outcome ([`DnsOutcome`] order), and whether the last one failed.
    dns: [AtomicU64; 3],
    dns_stale: AtomicU64,
}

impl UpstreamCounters {
    fn new(name: &str) -> Self {
        UpstreamCounters {
            name: name.to_string(),
            retries: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            no_backend: AtomicU64::new(0),
            dns: Default::default(),
            dns_stale: AtomicU64::new(0),
        }
    }
}

/// The proxy's metrics: the per-upstream counters plus, at render time, every backend's [`BackendStats`].
///
/// Upstream groups are fixed by the configuration (only their backends change at run time), so the
/// per-upstream counters are a plain `Vec` built once; [`Metrics::record_retry`] and friends find theirs
/// by comparing names, a scan of a few short strings with no hashing or lock.
#[derive(Debug)]
pub struct Metrics {
    /// Grows on a reload that adds upstreams; counters of removed upstreams stay (Prometheus counters
    /// must not go backwards while the process lives).
    upstreams: arc_swap::ArcSwap<Vec<Arc<UpstreamCounters>>>,
    /// Counts for names that were not configured (a bug if it ever moves; shown as `upstream=""`).
    unknown: UpstreamCounters,
    started: std::time::SystemTime,
    /// Client connections: open now, the cap, refusals.
    pub connections: Arc<crate::net::limits::ConnectionCount>,
    /// The certificates in force and when they expire; replaced whole on start and reload.
    certificates: arc_swap::ArcSwap<Vec<CertExpiry>>,
    /// The routing decisions, for the admin dashboard while one is open (see `decisions.rs`).
    pub decisions: crate::observe::decisions::Decisions,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(std::iter::empty::<&str>())
    }
}

impl Metrics {
    /// Metrics for the upstream groups with these names.
    pub fn new<S: AsRef<str>>(upstream_names: impl IntoIterator<Item = S>) -> Self {
        Metrics {
            upstreams: arc_swap::ArcSwap::from_pointee(
                upstream_names.into_iter().map(|n| Arc::new(UpstreamCounters::new(n.as_ref()))).collect(),
            ),
            unknown: UpstreamCounters::new(""),
            started: std::time::SystemTime::now(),
            connections: crate::net::limits::ConnectionCount::new(usize::MAX),
            certificates: arc_swap::ArcSwap::from_pointee(Vec::new()),
            decisions: crate::observe::decisions::Decisions::default(),
        }
    }

    /// Metrics for every group in `upstreams`.
    pub fn for_upstreams(upstreams: &Upstreams) -> Self {
        Metrics::new(upstreams.all().iter().map(|u| u.name.as_str()))
    }

    /// Make sure every group in `upstreams` has counters (after a reload added some).
    pub fn add_upstreams(&self, upstreams: &Upstreams) {
        let have = self.upstreams.load_full();
        let mut next: Vec<Arc<UpstreamCounters>> = have.iter().cloned().collect();
        for u in upstreams.all().iter() {
            if !next.iter().any(|c| c.name == u.name) {
                next.push(Arc::new(UpstreamCounters::new(&u.name)));
            }
        }
        if next.len() != have.len() {
            self.upstreams.store(Arc::new(next));
        }
    }

    /// The certificates in force from now on (at start, and by every reload that succeeds).
    pub fn set_certificates(&self, certificates: &[CertExpiry]) {
        self.certificates.store(Arc::new(certificates.to_vec()));
    }

    #[inline]
    fn with_counters<R>(&self, upstream: &str, f: impl FnOnce(&UpstreamCounters) -> R) -> R {
        let all = self.upstreams.load();
        match all.iter().find(|c| c.name == upstream) {
            Some(c) => f(c),
            None => f(&self.unknown),
        }
    }

    /// Count a response from a backend (any status: a 500 from the backend is a response; a failure to
    /// get one is [`Metrics::record_failure`]).
    #[inline]
    pub fn record_response(&self, upstream: &Upstream, stats: &BackendStats, status: u16, elapsed: Duration) {
        // Everything per backend lives in `stats`; per-upstream totals are sums made at render time.
        let _ = upstream;
        stats.record_response(status, elapsed);
    }

    /// Count an attempt that got no response.
    #[inline]
    pub fn record_failure(&self, stats: &BackendStats, kind: FailureKind) {
        stats.record_failure(kind);
    }

    /// Count a retry (a second or later attempt of one request).
    #[inline]
    pub fn record_retry(&self, upstream: &str) {
        self.with_counters(upstream, |c| c.retries.fetch_add(1, Relaxed));
    }

    /// Count a retry that was not made because the retry budget was spent.
    #[inline]
    pub fn record_retry_budget_exhausted(&self, upstream: &str) {
        self.with_counters(upstream, |c| c.budget_exhausted.fetch_add(1, Relaxed));
    }

    /// Count a request answered 503 because no backend could be picked.
    #[inline]
    pub fn record_no_backend(&self, upstream: &str) {
        self.with_counters(upstream, |c| c.no_backend.fetch_add(1, Relaxed));
    }

    /// Count one DNS resolution of an `[upstream.dns]` group; anything but `Ok` means the group kept its
    /// last good set, and `lb_dns_stale` says so until a resolution succeeds again.
    pub fn record_dns(&self, upstream: &str, outcome: DnsOutcome) {
        self.with_counters(upstream, |c| {
            c.dns[outcome as usize].fetch_add(1, Relaxed);
            c.dns_stale.store(u64::from(outcome != DnsOutcome::Ok), Relaxed);
        });
    }

    /// DNS resolutions of `upstream` that ended with `outcome`.
    pub fn dns_resolutions(&self, upstream: &str, outcome: DnsOutcome) -> u64 {
        self.with_counters(upstream, |c| c.dns[outcome as usize].load(Relaxed))
    }

    /// Retries counted for `upstream`.
    pub fn retries(&self, upstream: &str) -> u64 {
        self.with_counters(upstream, |c| c.retries.load(Relaxed))
    }

    /// "No backend" answers counted for `upstream`.
    pub fn no_backend(&self, upstream: &str) -> u64 {
        self.with_counters(upstream, |c| c.no_backend.load(Relaxed))
    }

    /// Everything, in the Prometheus text exposition format 0.0.4
    /// (`Content-Type: text/plain; version=0.0.4`).
    pub fn render(&self, upstreams: &Upstreams) -> String {
        // One snapshot per upstream, so every family below describes the same backend list even if an
        // operator adds a backend halfway through the scrape.
        let snapshots: Vec<Snapshot> = upstreams.all().iter().map(|u| (Arc::clone(u), u.load())).collect();
        let mut out = String::with_capacity(4096);
        let mut w = Writer { out: &mut out };
        render_requests(&mut w, &snapshots);
        render_durations(&mut w, &snapshots);
        render_backend_gauges(&mut w, &snapshots, now_nanos());
        self.render_upstreams(&mut w, &snapshots);
        self.render_dns(&mut w, &snapshots);
        self.render_certificates(&mut w);
        self.render_process(&mut w);
        out
    }

    /// The families per upstream: panic mode, retries, the retry budget, "no backend" answers.
    fn render_upstreams(&self, w: &mut Writer<'_>, snapshots: &[Snapshot]) {
        w.family(
            "lb_upstream_panic",
            "gauge",
            "1 while the group is in panic mode (too few healthy backends).",
        );
        for (u, state) in snapshots {
            w.sample(
                "lb_upstream_panic",
                &[("upstream", &u.name)],
                None,
                f64::from(u8::from(state.set.in_panic())),
            );
        }
        let per_upstream: [(&str, &str, CounterField); 3] = [
            ("lb_retries_total", "Retries: second and later attempts of a request.", |c| &c.retries),
            (
                "lb_retry_budget_exhausted_total",
                "Retries not made because the retry budget was spent.",
                |c| &c.budget_exhausted,
            ),
            ("lb_no_backend_total", "Requests answered 503 because no backend could be picked.", |c| {
                &c.no_backend
            }),
        ];
        for (name, help, field) in per_upstream {
            w.family(name, "counter", help);
            for c in self.upstreams.load().iter() {
                w.sample(name, &[("upstream", &c.name)], None, field(c).load(Relaxed) as f64);
            }
            let stray = field(&self.unknown).load(Relaxed);
            if stray > 0 {
                w.sample(name, &[("upstream", "")], None, stray as f64);
            }
        }
    }

    /// `lb_dns_resolutions_total` and `lb_dns_stale`, for the groups with `[upstream.dns]` only.
    fn render_dns(&self, w: &mut Writer<'_>, snapshots: &[Snapshot]) {
        let dns: Vec<&str> =
            snapshots.iter().filter(|(u, _)| u.config.dns.is_some()).map(|(u, _)| u.name.as_str()).collect();
        if dns.is_empty() {
            return;
        }
        const TOTAL: &str = "lb_dns_resolutions_total";
        w.family(
            TOTAL,
            "counter",
            "DNS resolutions of [upstream.dns] groups: ok, error or empty (the last good set is kept).",
        );
        for &name in &dns {
            for outcome in [DnsOutcome::Ok, DnsOutcome::Error, DnsOutcome::Empty] {
                let n = self.dns_resolutions(name, outcome);
                w.sample(TOTAL, &[("upstream", name)], Some(("result", outcome.as_str())), n as f64);
            }
        }
        const STALE: &str = "lb_dns_stale";
        w.family(
            STALE,
            "gauge",
            "1 while the last DNS resolution failed and the group serves its last good set.",
        );
        for &name in &dns {
            let stale = self.with_counters(name, |c| c.dns_stale.load(Relaxed));
            w.sample(STALE, &[("upstream", name)], None, stale as f64);
        }
    }

    /// `lb_tls_certificate_expiry_seconds`: one series per `[[server.tls]]` certificate.
    fn render_certificates(&self, w: &mut Writer<'_>) {
        const NAME: &str = "lb_tls_certificate_expiry_seconds";
        w.family(
            NAME,
            "gauge",
            "When the certificate expires (its notAfter), in seconds since the Unix epoch.",
        );
        for c in self.certificates.load().iter() {
            w.sample(NAME, &[("name", &c.name)], None, c.not_after as f64);
        }
    }

    /// The families of the process: client connections, memory, start time.
    fn render_process(&self, w: &mut Writer<'_>) {
        w.family("lb_client_connections", "gauge", "Client connections open now.");
        w.sample("lb_client_connections", &[], None, self.connections.open() as f64);
        w.family(
            "lb_client_connections_refused_total",
            "counter",
            "Client connections closed at once because server.limits.max_connections were open.",
        );
        w.sample("lb_client_connections_refused_total", &[], None, self.connections.refused() as f64);
        if let Some(rss) = resident_memory_bytes() {
            w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            w.sample("process_resident_memory_bytes", &[], None, rss as f64);
        }
        if let Ok(since_epoch) = self.started.duration_since(std::time::UNIX_EPOCH) {
            w.family(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch.",
            );
            w.sample("process_start_time_seconds", &[], None, since_epoch.as_secs() as f64);
        }
    }
}

/// Which counter of an upstream a family renders.
/// An upstream and its state, read once per scrape.
type Snapshot = (Arc<Upstream>, Arc<UpstreamState>);

/// One backend of one upstream, as a scrape sees it.
struct Row<'a> {
    upstream: &'a Upstream,
    state: &'a UpstreamState,
    backend: &'a Backend,
    stats: &'a BackendStats,
}

impl<'a> Row<'a> {
    /// The labels every per-backend sample carries.
    fn labels(&self) -> [(&'static str, &'a str); 2] {
        [("upstream", self.upstream.name.as_str()), ("backend", self.backend.addr())]
    }
}

/// Every backend of every upstream, in order.
fn rows(snapshots: &[Snapshot]) -> impl Iterator<Item = Row<'_>> {
    snapshots.iter().flat_map(|(u, state)| {
        state.set.backends().iter().zip(&state.stats).map(move |(b, s)| Row {
            upstream: u,
            state,
            backend: b,
            stats: s,
        })
    })
}

/// `lb_requests_total`: responses by status code, the common ones one by one, the rest by class.
fn render_requests(w: &mut Writer<'_>, snapshots: &[Snapshot]) {
    w.family("lb_requests_total", "counter", "Responses received from backends, by status code.");
    for row in rows(snapshots) {
        let (labels, s) = (row.labels(), row.stats);
        for (i, code) in COMMON_CODES.iter().enumerate() {
            let n = s.by_code[i].load(Relaxed);
            if n > 0 {
                w.sample("lb_requests_total", &labels, Some(("code", &code.to_string())), n as f64);
            }
        }
        for class in 1..=5u8 {
            let in_class = s.by_class[usize::from(class)].load(Relaxed);
            let common: u64 = COMMON_CODES
                .iter()
                .enumerate()
                .filter(|(_, c)| **c / 100 == u16::from(class))
                .map(|(i, _)| s.by_code[i].load(Relaxed))
                .sum();
            // Concurrent increments can make `common` overtake `in_class` for an instant.
            let other = in_class.saturating_sub(common);
            if other > 0 {
                w.sample("lb_requests_total", &labels, Some(("code", &format!("{class}xx"))), other as f64);
            }
        }
    }
}

/// `lb_request_duration_seconds`: the latency histogram, its buckets summed into the cumulative counts
/// Prometheus expects.
fn render_durations(w: &mut Writer<'_>, snapshots: &[Snapshot]) {
    w.family(
        "lb_request_duration_seconds",
        "histogram",
        "Time from sending a request to a backend to receiving its response headers.",
    );
    for row in rows(snapshots) {
        let (labels, s) = (row.labels(), row.stats);
        let mut cumulative = 0u64;
        for (i, le) in BUCKETS_SECONDS.iter().enumerate() {
            cumulative += s.buckets[i].load(Relaxed);
            w.sample(
                "lb_request_duration_seconds_bucket",
                &labels,
                Some(("le", &le.to_string())),
                cumulative as f64,
            );
        }
        cumulative += s.buckets[BUCKETS_NANOS.len()].load(Relaxed);
        w.sample("lb_request_duration_seconds_bucket", &labels, Some(("le", "+Inf")), cumulative as f64);
        w.sample("lb_request_duration_seconds_sum", &labels, None, s.latency_sum().as_secs_f64());
        w.sample("lb_request_duration_seconds_count", &labels, None, cumulative as f64);
    }
}

/// The per-backend families read live from the sets: failures, in flight, health and state, weight,
/// ejections, consecutive failures.
fn render_backend_gauges(w: &mut Writer<'_>, snapshots: &[Snapshot], now: Nanos) {
    w.family("lb_backend_failures_total", "counter", "Attempts that got no response, by kind.");
    for row in rows(snapshots) {
        for kind in FailureKind::ALL {
            let n = row.stats.failures(kind) as f64;
            w.sample("lb_backend_failures_total", &row.labels(), Some(("kind", kind.as_str())), n);
        }
    }
    w.family(
        "lb_backend_in_flight",
        "gauge",
        "Requests sent to the backend whose response has not finished.",
    );
    for row in rows(snapshots) {
        w.sample("lb_backend_in_flight", &row.labels(), None, row.backend.in_flight() as f64);
    }
    w.family(
        "lb_backend_healthy",
        "gauge",
        "1 if the backend is healthy (may be picked outside panic mode).",
    );
    for row in rows(snapshots) {
        let healthy = row.backend.health() == Health::Healthy;
        w.sample("lb_backend_healthy", &row.labels(), None, f64::from(u8::from(healthy)));
    }
    w.family(
        "lb_backend_state",
        "gauge",
        "The backend's current state: 1 for the state it is in, 0 for the others.",
    );
    for row in rows(snapshots) {
        for h in [Health::Healthy, Health::Unhealthy, Health::Ejected, Health::Draining] {
            let is = f64::from(u8::from(row.backend.health() == h));
            w.sample("lb_backend_state", &row.labels(), Some(("state", h.as_str())), is);
        }
    }
    w.family("lb_backend_weight", "gauge", "Configured weight times the slow-start factor.");
    for row in rows(snapshots) {
        let weight = row.backend.effective_weight(now, row.state.set.options().slow_start);
        w.sample("lb_backend_weight", &row.labels(), None, weight);
    }
    w.family("lb_backend_ejections_total", "counter", "Times outlier detection ejected the backend.");
    for row in rows(snapshots) {
        w.sample("lb_backend_ejections_total", &row.labels(), None, row.stats.ejections() as f64);
    }
    w.family(
        "lb_backend_consecutive_failures",
        "gauge",
        "Failed attempts in a row, as outlier detection counts them.",
    );
    for row in rows(snapshots) {
        let n = f64::from(row.stats.consecutive_failures());
        w.sample("lb_backend_consecutive_failures", &row.labels(), None, n);
    }
}

type CounterField = fn(&UpstreamCounters) -> &AtomicU64;

/// Resident set size from `/proc/self/statm` (Linux only; `None` elsewhere). The second field is in
/// pages; 4 KiB pages are assumed, which holds on x86-64 and the usual arm64 kernels.
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Writes exposition-format lines.
struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample: `name{labels,extra} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], extra: Option<(&str, &str)>, value: f64) {
        self.out.push_str(name);
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_some() {
            self.out.push('{');
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_value(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(self.out, value);
        self.out.push('\n');
    }
}

/// Label values may hold any UTF-8; the format reserves `\`, `"` and newline.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Integers without a fraction (counts stay readable), the special values as Prometheus spells them.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_code_class_and_bucket() {
        let s = BackendStats::new("10.0.0.1:80");
        s.record_response(200, Duration::from_micros(300)); // bucket 0 (<= 0.5 ms)
        s.record_response(200, Duration::from_millis(1)); // bucket 1 (<= 1 ms, bounds are inclusive)
        s.record_response(418, Duration::from_secs(3)); // bucket 12 (<= 5 s); not a common code
        s.record_response(503, Duration::from_secs(60)); // +Inf
        assert_eq!(s.requests(), 4);
        assert_eq!(s.requests_with_code(200), Some(2));
        assert_eq!(s.requests_with_code(418), None);
        assert_eq!(s.requests_in_class(4), 1);
        assert_eq!(s.requests_in_class(5), 1);
        let buckets: Vec<u64> = s.buckets.iter().map(|b| b.load(Relaxed)).collect();
        assert_eq!(buckets, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(s.latency_sum(), Duration::from_micros(300 + 1_000 + 3_000_000 + 60_000_000));
    }

    #[test]
    fn nanosecond_bounds_match_the_second_bounds() {
        for (s, n) in BUCKETS_SECONDS.iter().zip(BUCKETS_NANOS) {
            assert_eq!((s * 1e9).round() as u64, n);
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\"b\\c\nd");
        assert_eq!(out, r#"a\"b\\c\nd"#);
    }

    #[test]
    fn samples_format_as_the_exposition_format_expects() {
        let mut out = String::new();
        let mut w = Writer { out: &mut out };
        w.sample("x_total", &[("upstream", "app")], Some(("code", "200")), 3.0);
        w.sample("y", &[], None, 0.25);
        w.sample("z", &[], None, f64::INFINITY);
        assert_eq!(out, "x_total{upstream=\"app\",code=\"200\"} 3\ny 0.25\nz +Inf\n");
    }

    #[test]
    fn render_covers_every_backend_and_escapes_names() -> Result<(), crate::Error> {
        use crate::config::UpstreamConfig;
        use lb_algorithms::{Algorithm, BackendSpec};
        let config = UpstreamConfig::new(
            "we\"ird",
            Algorithm::RoundRobin,
            vec![BackendSpec::new("127.0.0.1:1"), BackendSpec::new("127.0.0.1:2")],
        );
        let upstreams = Upstreams::new(&[config])?;
        let m = Metrics::for_upstreams(&upstreams);
        let state = upstreams.all()[0].load();
        m.record_response(&upstreams.all()[0], &state.stats[1], 503, Duration::from_millis(7));
        m.record_failure(&state.stats[0], FailureKind::Timeout);
        m.record_no_backend("we\"ird");
        let text = m.render(&upstreams);
        for expected in [
            r#"lb_requests_total{upstream="we\"ird",backend="127.0.0.1:2",code="503"} 1"#,
            r#"lb_request_duration_seconds_bucket{upstream="we\"ird",backend="127.0.0.1:2",le="0.005"} 0"#,
            r#"lb_request_duration_seconds_bucket{upstream="we\"ird",backend="127.0.0.1:2",le="0.01"} 1"#,
            r#"lb_request_duration_seconds_sum{upstream="we\"ird",backend="127.0.0.1:2"} 0.007"#,
            r#"lb_backend_failures_total{upstream="we\"ird",backend="127.0.0.1:1",kind="timeout"} 1"#,
            r#"lb_backend_state{upstream="we\"ird",backend="127.0.0.1:1",state="healthy"} 1"#,
            r#"lb_no_backend_total{upstream="we\"ird"} 1"#,
            "# TYPE lb_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == expected), "missing {expected}\n{text}");
        }
        // Each family is declared once, before its samples.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut unique = types.clone();
        unique.dedup();
        assert_eq!(types, unique);
        Ok(())
    }

    #[test]
    fn certificate_expiry_is_one_series_per_certificate_and_replaced_whole() {
        let m = Metrics::default();
        let family = "# TYPE lb_tls_certificate_expiry_seconds gauge";
        let series = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("lb_tls_certificate_expiry_seconds"))
                .map(String::from)
                .collect()
        };
        let upstreams = Upstreams::new(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(m.render(&upstreams).contains(family));
        assert_eq!(series(&m.render(&upstreams)), Vec::<String>::new());
        let at = |name: &str, not_after| CertExpiry { name: name.into(), not_after };
        m.set_certificates(&[at("a.lb.test", 2_111_073_656), at("b.lb.test", 2_111_079_196)]);
        assert_eq!(
            series(&m.render(&upstreams)),
            [
                r#"lb_tls_certificate_expiry_seconds{name="a.lb.test"} 2111073656"#,
                r#"lb_tls_certificate_expiry_seconds{name="b.lb.test"} 2111079196"#,
            ]
        );
        // A reload that drops a certificate drops its series.
        m.set_certificates(&[at("b.lb.test", 2_111_079_196)]);
        assert_eq!(
            series(&m.render(&upstreams)),
            [r#"lb_tls_certificate_expiry_seconds{name="b.lb.test"} 2111079196"#]
        );
    }

    #[test]
    fn unknown_upstream_names_do_not_panic_and_are_kept_apart() {
        let m = Metrics::new(["app"]);
        m.record_retry("app");
        m.record_retry("nope");
        assert_eq!(m.retries("app"), 1);
        assert_eq!(m.unknown.retries.load(Relaxed), 1);
    }
}
