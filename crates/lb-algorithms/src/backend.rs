//! Backend state shared by every algorithm: weight, health, in-flight count, latency EWMA, slow start.
//!
//! Load signals live here, not in the algorithms (see CONTRIBUTING.md: load signals belong to the backend): least-connections, power of
//! two choices, peak EWMA and bounded load all read the same `in_flight` counter, and the proxy updates it
//! in exactly one place, the [`InFlightGuard`].
//!
//! A [`BackendSet`] is an immutable list of `Arc<Backend>`. When backends are added or removed the proxy
//! calls [`BackendSet::rebuild`], which keeps the `Arc<Backend>` of every backend that stays (so its
//! in-flight count, EWMA and health survive), and builds a new balancer over the new set; the old set
//! lives on until the last request that picked from it finishes. Health flips do not rebuild anything:
//! they are one atomic store, and every pick checks health as it goes.
//!
//! # Panic threshold
//!
//! Envoy's *panic threshold*: when fewer than `panic_threshold` (a fraction, default 0.5) of the backends
//! are healthy, health checking is probably wrong or the fleet is in trouble, and concentrating all
//! traffic on the few survivors would knock them over too. In panic mode, unhealthy and ejected backends
//! are selectable again (draining ones never are: draining is an operator's decision, not a measurement).
//! Set the threshold to 0 to disable it.
//!
//! # Slow start
//!
//! A backend that was just added or just recovered starts with a cold cache, cold JIT, empty pools. With
//! `slow_start` set, its effective weight ramps linearly from 10% (Envoy's default `min_weight_percent`)
//! to 100% over the window. Weighted and load-aware algorithms honour it (see each algorithm's docs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::Nanos;
use crate::ewma::PeakEwma;

/// Where a backend stands. Only `Healthy` backends are picked, except in panic mode (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Passing health checks (or not checked at all).
    Healthy,
    /// Failed its active health checks `fall` times in a row.
    Unhealthy,
    /// Ejected by passive outlier detection until some time passes.
    Ejected,
    /// Taken out by an operator: finishes what it has, gets nothing new.
    Draining,
}

impl Health {
    fn to_u8(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Unhealthy => 1,
            Health::Ejected => 2,
            Health::Draining => 3,
        }
    }

    fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Healthy,
            1 => Health::Unhealthy,
            2 => Health::Ejected,
            _ => Health::Draining,
        }
    }

    /// The word used in metrics, JSON and explain headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Ejected => "ejected",
            Health::Draining => "draining",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the configuration says about one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// `host:port`; the algorithms only use it as a stable identity (the hashing ones hash it).
    pub addr: String,
    /// Relative weight, at least 1.
    pub weight: u32,
}

impl BackendSpec {
    /// A backend with weight 1.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::weighted(addr, 1)
    }

    /// A backend with the given weight (0 is raised to 1: a weight-0 backend would never be picked,
    /// which is what draining is for).
    pub fn weighted(addr: impl Into<String>, weight: u32) -> Self {
        BackendSpec { addr: addr.into(), weight: weight.max(1) }
    }
}

/// Options that belong to the backend state rather than to one algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SetOptions {
    /// Fraction of healthy backends below which panic mode starts (0 disables it). Envoy's default is 0.5.
    pub panic_threshold: f64,
    /// Slow-start window in nanoseconds (`None`: no slow start).
    pub slow_start: Option<Nanos>,
    /// Decay time constant of the peak-EWMA latency (Finagle and Linkerd use 10 s).
    pub ewma_decay: Nanos,
    /// The latency assumed for a backend with no measurement yet. Linkerd's default is 30 ms.
    pub ewma_default_rtt: Nanos,
}

impl Default for SetOptions {
    fn default() -> Self {
        SetOptions {
            panic_threshold: 0.5,
            slow_start: None,
            ewma_decay: 10_000_000_000,
            ewma_default_rtt: 30_000_000,
        }
    }
}

/// Counters shared by all backends of one upstream group, kept across rebuilds.
#[derive(Debug, Default)]
struct GroupLoad {
    total_in_flight: AtomicU64,
}

const NO_RAMP: u64 = u64::MAX;

/// One backend's live state. Everything is an atomic, so any number of threads can read and update it
/// without a lock.
#[derive(Debug)]
pub struct Backend {
    addr: String,
    weight: u32,
    health: AtomicU8,
    in_flight: AtomicU64,
    ewma: PeakEwma,
    /// When the slow-start ramp began, or `NO_RAMP`.
    ramp_start: AtomicU64,
    group: Arc<GroupLoad>,
}

impl Backend {
    fn new(spec: BackendSpec, group: Arc<GroupLoad>, ramp_start: u64) -> Self {
        Backend {
            addr: spec.addr,
            weight: spec.weight.max(1),
            health: AtomicU8::new(Health::Healthy.to_u8()),
            in_flight: AtomicU64::new(0),
            ewma: PeakEwma::new(),
            ramp_start: AtomicU64::new(ramp_start),
            group,
        }
    }

    /// `host:port` as configured.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Configured weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Current health.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Requests sent to this backend whose response has not finished yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// May this backend be picked? Healthy always; unhealthy or ejected only in panic mode; draining never.
    #[inline]
    pub fn is_selectable(&self, panic: bool) -> bool {
        match self.health() {
            Health::Healthy => true,
            Health::Unhealthy | Health::Ejected => panic,
            Health::Draining => false,
        }
    }

    /// The peak-EWMA latency estimate in nanoseconds at `now`, or `None` before the first response.
    pub fn ewma(&self, now: Nanos, decay: Nanos) -> Option<f64> {
        self.ewma.get(now, decay)
    }

    /// Record one response latency (the proxy does this through [`InFlightGuard::record_latency`]).
    pub fn record_latency(&self, rtt: Nanos, now: Nanos, decay: Nanos) {
        self.ewma.observe(rtt as f64, now, decay);
    }

    /// The slow-start factor in `[0.1, 1]` at `now` (1 when not ramping or no window is set).
    #[inline]
    pub fn ramp(&self, now: Nanos, window: Option<Nanos>) -> f64 {
        let Some(window) = window else { return 1.0 };
        let start = self.ramp_start.load(Ordering::Relaxed);
        if start == NO_RAMP || window == 0 {
            return 1.0;
        }
        let elapsed = now.saturating_sub(start);
        if elapsed >= window {
            // Ramp done: store NO_RAMP so later calls take the fast path above.
            self.ramp_start.store(NO_RAMP, Ordering::Relaxed);
            return 1.0;
        }
        (elapsed as f64 / window as f64).max(0.1)
    }

    /// Weight times the slow-start factor.
    #[inline]
    pub fn effective_weight(&self, now: Nanos, window: Option<Nanos>) -> f64 {
        f64::from(self.weight) * self.ramp(now, window)
    }

    /// Count one request as in flight until the returned guard drops.
    pub fn start(self: &Arc<Self>, now: Nanos) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.group.total_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { backend: Arc::clone(self), started: now }
    }

    fn start_ramp(&self, now: Nanos) {
        self.ramp_start.store(now, Ordering::Relaxed);
    }
}

/// Counts one request in flight on one backend; dropping it (when the response body has ended or the
/// request was abandoned) releases the count.
///
/// Why a guard: a streaming response can last minutes after its headers arrived. Releasing the count when
/// headers arrive would make least-connections blind to exactly the long requests it exists to spread.
#[derive(Debug)]
pub struct InFlightGuard {
    backend: Arc<Backend>,
    started: Nanos,
}

impl InFlightGuard {
    /// The backend this request went to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// When the request started (as passed to [`Backend::start`]).
    pub fn started(&self) -> Nanos {
        self.started
    }

    /// Feed the latency of this request (start to `now`) into the backend's EWMA.
    pub fn record_latency(&self, now: Nanos, decay: Nanos) {
        self.backend.record_latency(now.saturating_sub(self.started), now, decay);
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.backend.group.total_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An immutable list of backends plus the set-wide flags. Algorithms hold an `Arc<BackendSet>`.
#[derive(Debug)]
pub struct BackendSet {
    backends: Vec<Arc<Backend>>,
    options: SetOptions,
    panic: AtomicBool,
    /// Sum of the configured weights of the selectable backends, kept up to date on every health change
    /// so that bounded load can compute its capacity in O(1).
    selectable_weight: AtomicU64,
    group: Arc<GroupLoad>,
}

impl BackendSet {
    /// A new set; every backend starts healthy, with no slow start (there is nothing to protect yet).
    pub fn new(specs: impl IntoIterator<Item = BackendSpec>, options: SetOptions) -> Arc<Self> {
        let group = Arc::new(GroupLoad::default());
        let backends =
            specs.into_iter().map(|s| Arc::new(Backend::new(s, Arc::clone(&group), NO_RAMP))).collect();
        Self::assemble(backends, options, group)
    }

    fn assemble(backends: Vec<Arc<Backend>>, options: SetOptions, group: Arc<GroupLoad>) -> Arc<Self> {
        let set = BackendSet {
            backends,
            options,
            panic: AtomicBool::new(false),
            selectable_weight: AtomicU64::new(0),
            group,
        };
        set.refresh_panic();
        Arc::new(set)
    }

    /// A new set for a changed backend list. Backends whose address and weight are unchanged keep their
    /// state (the same `Arc<Backend>`); new ones start healthy and, with slow start, ramping from `now`.
    pub fn rebuild(&self, specs: impl IntoIterator<Item = BackendSpec>, now: Nanos) -> Arc<Self> {
        let ramp = if self.options.slow_start.is_some() { now } else { NO_RAMP };
        let backends = specs
            .into_iter()
            .map(|s| match self.backends.iter().find(|b| b.addr == s.addr && b.weight == s.weight.max(1)) {
                Some(b) => Arc::clone(b),
                None => Arc::new(Backend::new(s, Arc::clone(&self.group), ramp)),
            })
            .collect();
        Self::assemble(backends, self.options, Arc::clone(&self.group))
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// True when there are no backends at all.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The backends, in configuration order; an algorithm's pick is an index into this slice.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// One backend.
    pub fn get(&self, index: usize) -> Option<&Arc<Backend>> {
        self.backends.get(index)
    }

    /// The index of the backend with this address.
    pub fn position(&self, addr: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.addr == addr)
    }

    /// The options this set was built with.
    pub fn options(&self) -> &SetOptions {
        &self.options
    }

    /// Is the set in panic mode (too few healthy backends, see module docs)?
    #[inline]
    pub fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Can `index` be picked right now? Out-of-range indices cannot.
    #[inline]
    pub fn is_selectable(&self, index: usize) -> bool {
        self.backends.get(index).is_some_and(|b| b.is_selectable(self.in_panic()))
    }

    /// Number of backends that could be picked right now.
    pub fn selectable_count(&self) -> usize {
        let panic = self.in_panic();
        self.backends.iter().filter(|b| b.is_selectable(panic)).count()
    }

    /// Sum of the configured weights (not slow-start adjusted) of the backends selectable right now.
    #[inline]
    pub fn selectable_weight(&self) -> u64 {
        self.selectable_weight.load(Ordering::Relaxed)
    }

    /// Slow start for algorithms that cannot scale a weight (rotations, tables, rings): admit backend
    /// `index` with probability equal to its ramp factor, drawing from `draw()` (a hash of the key, so
    /// that a key admitted once stays admitted while the ramp grows). Always true when not ramping; the
    /// draw is a closure so that the common case, no ramp, does not pay for hashing.
    #[inline]
    pub fn ramp_admits(&self, index: usize, now: Nanos, draw: impl FnOnce() -> u64) -> bool {
        let ramp = self.ramp(index, now);
        ramp >= 1.0 || crate::hash_key::unit_open(draw()) < ramp
    }

    /// Requests in flight over the whole group (all backends, across rebuilds).
    #[inline]
    pub fn total_in_flight(&self) -> u64 {
        self.group.total_in_flight.load(Ordering::Relaxed)
    }

    /// Change a backend's health; returns the previous health, or `None` for an unknown index.
    /// A backend coming back to `Healthy` starts its slow-start ramp at `now`.
    pub fn set_health(&self, index: usize, health: Health, now: Nanos) -> Option<Health> {
        let backend = self.backends.get(index)?;
        let old = Health::from_u8(backend.health.swap(health.to_u8(), Ordering::Relaxed));
        if old != health {
            if health == Health::Healthy && self.options.slow_start.is_some() {
                backend.start_ramp(now);
            }
            self.refresh_panic();
        }
        Some(old)
    }

    /// Count a request in flight on `index` (see [`InFlightGuard`]).
    pub fn start(&self, index: usize, now: Nanos) -> Option<InFlightGuard> {
        self.backends.get(index).map(|b| b.start(now))
    }

    /// The slow-start factor of a backend at `now`, using this set's window.
    #[inline]
    pub fn ramp(&self, index: usize, now: Nanos) -> f64 {
        self.backends[index].ramp(now, self.options.slow_start)
    }

    /// Weight times slow-start factor at `now`.
    #[inline]
    pub fn effective_weight(&self, index: usize, now: Nanos) -> f64 {
        self.backends[index].effective_weight(now, self.options.slow_start)
    }

    fn refresh_panic(&self) {
        let n = self.backends.len();
        let healthy = self.backends.iter().filter(|b| b.health() == Health::Healthy).count();
        let panic = n > 0 && (healthy as f64) < self.options.panic_threshold * n as f64;
        self.panic.store(panic, Ordering::Relaxed);
        let weight =
            self.backends.iter().filter(|b| b.is_selectable(panic)).map(|b| u64::from(b.weight)).sum();
        self.selectable_weight.store(weight, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize, options: SetOptions) -> Arc<BackendSet> {
        BackendSet::new((0..n).map(|i| BackendSpec::new(format!("10.0.0.{i}:80"))), options)
    }

    #[test]
    fn guard_counts_in_flight_until_dropped() {
        let s = set(2, SetOptions::default());
        let g1 = s.start(0, 0);
        let g2 = s.start(0, 0);
        let g3 = s.start(1, 0);
        assert_eq!(s.backends()[0].in_flight(), 2);
        assert_eq!(s.total_in_flight(), 3);
        drop((g1, g3));
        assert_eq!(s.backends()[0].in_flight(), 1);
        assert_eq!(s.backends()[1].in_flight(), 0);
        assert_eq!(s.total_in_flight(), 1);
        drop(g2);
        assert_eq!(s.total_in_flight(), 0);
    }

    #[test]
    fn panic_mode_starts_below_threshold_and_never_includes_draining() {
        let s = set(4, SetOptions::default());
        s.set_health(0, Health::Unhealthy, 0);
        // 3 of 4 healthy (75%) >= 50%: no panic, the unhealthy one is skipped.
        assert!(!s.in_panic());
        assert!(!s.is_selectable(0));
        s.set_health(1, Health::Ejected, 0);
        // 2 of 4 (50%) is not below 50%.
        assert!(!s.in_panic());
        s.set_health(2, Health::Draining, 0);
        // 1 of 4 (25%) < 50%: panic; unhealthy and ejected come back, draining stays out.
        assert!(s.in_panic());
        assert!(s.is_selectable(0) && s.is_selectable(1) && !s.is_selectable(2) && s.is_selectable(3));
        s.set_health(0, Health::Healthy, 0);
        assert!(!s.in_panic());
    }

    #[test]
    fn selectable_weight_follows_health_and_panic() {
        let s = BackendSet::new(
            [BackendSpec::weighted("a", 1), BackendSpec::weighted("b", 2), BackendSpec::weighted("c", 3)],
            SetOptions::default(),
        );
        assert_eq!(s.selectable_weight(), 6);
        s.set_health(2, Health::Draining, 0);
        assert_eq!(s.selectable_weight(), 3);
        // 1 of 3 healthy: panic lets the unhealthy "b" back in, never the draining "c".
        s.set_health(1, Health::Unhealthy, 0);
        assert!(s.in_panic());
        assert_eq!(s.selectable_weight(), 3);
    }

    #[test]
    fn ramp_admits_a_share_of_keys_equal_to_the_ramp() {
        let s = set(1, SetOptions { slow_start: Some(10_000), ..SetOptions::default() });
        assert!((0..100u64).all(|k| s.ramp_admits(0, 0, || k.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
        s.set_health(0, Health::Unhealthy, 0);
        s.set_health(0, Health::Healthy, 0);
        // At 3,000 ns of 10,000 the ramp is 0.3: about 30% of 10,000 well-mixed draws pass; the standard
        // deviation is ~46, so +-300 is over 6 sigma.
        let admitted = (0..10_000u64)
            .filter(|&k| s.ramp_admits(0, 3_000, || crate::hash_bytes(&k.to_le_bytes())))
            .count();
        assert!((2_700..=3_300).contains(&admitted), "{admitted}");
    }

    #[test]
    fn panic_threshold_zero_disables_panic() {
        let s = set(2, SetOptions { panic_threshold: 0.0, ..SetOptions::default() });
        s.set_health(0, Health::Unhealthy, 0);
        s.set_health(1, Health::Unhealthy, 0);
        assert!(!s.in_panic());
        assert_eq!(s.selectable_count(), 0);
    }

    #[test]
    fn slow_start_ramps_linearly_from_ten_percent() {
        let window = 10_000;
        let s = set(2, SetOptions { slow_start: Some(window), ..SetOptions::default() });
        assert_eq!(s.ramp(0, 0), 1.0, "backends of a new set do not ramp");
        s.set_health(0, Health::Unhealthy, 1_000);
        s.set_health(0, Health::Healthy, 2_000);
        assert_eq!(s.ramp(0, 2_000), 0.1, "floor at 10%");
        assert!((s.ramp(0, 2_000 + 5_000) - 0.5).abs() < 1e-9, "half way through the window");
        assert_eq!(s.effective_weight(0, 2_000 + 5_000), 0.5);
        assert_eq!(s.ramp(0, 2_000 + window), 1.0);
        assert_eq!(s.ramp(0, 0), 1.0, "once done, the ramp stays done");
    }

    #[test]
    fn rebuild_keeps_state_of_unchanged_backends_and_ramps_new_ones() {
        let s = set(2, SetOptions { slow_start: Some(1_000), ..SetOptions::default() });
        let guard = s.start(1, 0);
        s.set_health(0, Health::Draining, 0);
        let t = s.rebuild(
            vec![
                BackendSpec::new("10.0.0.1:80"),
                BackendSpec::new("10.0.0.9:80"),
                BackendSpec::new("10.0.0.0:80"),
            ],
            500,
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t.backends()[0].in_flight(), 1, "10.0.0.1 kept its in-flight count");
        assert_eq!(t.backends()[2].health(), Health::Draining, "10.0.0.0 kept its health");
        assert_eq!(t.ramp(1, 600), 0.1, "the new backend ramps");
        assert_eq!(t.ramp(0, 600), 1.0, "the kept one does not");
        drop(guard);
        assert_eq!(t.backends()[0].in_flight(), 0);
        assert_eq!(t.total_in_flight(), 0);
    }
}
