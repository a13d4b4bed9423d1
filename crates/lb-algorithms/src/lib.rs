//! Load-balancing algorithms: every strategy the proxy offers, as plain Rust with no I/O.
//!
//! The proxy (`lb`), the simulator (`lb-compare`) and the benchmarks all call this crate, so the code a
//! learner reads here is exactly the code that runs in production and in the experiments.
//!
//! # Layout
//!
//! The modules are private; what other crates use is re-exported here.
//!
//! - `backend.rs`: the state every algorithm reads: weight, health, in-flight count (through an RAII
//!   [`InFlightGuard`]), latency EWMA, slow start, and the [`BackendSet`] with its panic threshold.
//! - `ewma.rs`: the lock-free peak-EWMA latency estimate.
//! - `hash_key.rs`: which part of a request the hashing algorithms hash ([`HashKey`]: ip, header,
//!   cookie, path, query).
//! - `rng.rs`: wyrand, a seedable random generator: lock-free for the randomised algorithms, and as
//!   [`Wyrand`] for one owner (the simulator's).
//! - One file per algorithm, each opening with an essay (idea, cost, when to use it, sources, the same
//!   option in nginx, HAProxy and Envoy): `round_robin.rs`, `weighted_round_robin.rs`, `random.rs`,
//!   `least_connections.rs`, `power_of_two.rs`, `peak_ewma.rs`, `ring_hash.rs`, `maglev.rs`,
//!   `bounded_load.rs`, `rendezvous.rs`. [`build`] makes any of them from an [`Algorithm`]; [`Maglev`]
//!   and [`BoundedLoad`] are also exported for the tests that look inside them.
//! - This file: the [`Balancer`] trait, [`Algorithm`], [`build`], and the helpers the algorithms share.
//!
//! # How a pick works
//!
//! ```
//! use lb_algorithms::{build, Algorithm, AlgorithmOptions, BackendSet, BackendSpec, PickRequest, SetOptions};
//!
//! let set = BackendSet::new(
//!     ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(BackendSpec::new),
//!     SetOptions::default(),
//! );
//! let balancer = build(Algorithm::RoundRobin, set.clone(), &AlgorithmOptions::default()).unwrap();
//! let picks: Vec<usize> = (0..4).map(|_| balancer.pick(&PickRequest::new(0), None).unwrap()).collect();
//! assert_eq!(picks, [0, 1, 2, 0]);
//!
//! // The proxy holds this guard until the response body is finished.
//! let guard = set.start(picks[0], 0).unwrap();
//! assert_eq!(set.backends()[0].in_flight(), 1);
//! drop(guard);
//! ```
//!
//! A balancer is immutable apart from atomics: `pick` takes `&self`, so the proxy shares one through an
//! `Arc` across all its threads with no lock on the request path. When the backend list changes, build a
//! new set with [`BackendSet::rebuild`] and a new balancer over it, and swap them in.

mod backend;
mod ewma;
mod hash_key;
mod rng;

// One module per algorithm (keep alphabetical).
mod bounded_load;
mod least_connections;
mod maglev;
mod peak_ewma;
mod power_of_two;
mod random;
mod rendezvous;
mod ring_hash;
mod round_robin;
mod weighted_round_robin;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub use backend::{Backend, BackendSet, BackendSpec, Health, InFlightGuard, SetOptions};
pub use bounded_load::BoundedLoad;
pub use hash_key::{HashKey, KeySource, hash_bytes, hash_pair};
pub use maglev::Maglev;
pub use ring_hash::RingHash;
pub use rng::Wyrand;

/// Time in nanoseconds on a monotonic clock. Everything time-dependent takes `now` as an argument, so
/// tests drive time by hand and never sleep.
pub type Nanos = u64;

/// Nanoseconds since the first call in this process (a monotonic clock for callers that have no
/// clock of their own; the proxy uses this).
pub fn now_nanos() -> Nanos {
    nanos_at(Instant::now())
}

/// The [`now_nanos`] clock's reading at `instant`: lets a caller that already read the clock for its
/// own deadlines use the same reading here (each read costs a few tens of nanoseconds).
pub fn nanos_at(instant: Instant) -> Nanos {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // +1 so that no real time is 0, which tests use as "the beginning".
    instant.saturating_duration_since(*EPOCH.get_or_init(Instant::now)).as_nanos() as Nanos + 1
}

/// What the balancer knows about the request it is picking for.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickRequest<'a> {
    /// The hash of the request's hash key (see [`HashKey::hash`]); only hashing algorithms read it.
    pub key: Option<u64>,
    /// Backends already tried for this request (a retry must go elsewhere): indices into the set.
    pub exclude: &'a [usize],
    /// The current time, for slow start and EWMA decay.
    pub now: Nanos,
}

impl<'a> PickRequest<'a> {
    /// A request with no key and nothing excluded.
    pub fn new(now: Nanos) -> Self {
        PickRequest { key: None, exclude: &[], now }
    }

    /// The same request with a hash key.
    pub fn with_key(self, key: Option<u64>) -> Self {
        PickRequest { key, ..self }
    }

    /// The same request, avoiding these backends.
    pub fn excluding(self, exclude: &'a [usize]) -> Self {
        PickRequest { exclude, ..self }
    }

    /// Was this backend already tried?
    #[inline]
    pub fn is_excluded(&self, index: usize) -> bool {
        self.exclude.contains(&index)
    }
}

/// Why a backend was passed over, for [`Explain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its health is not `Healthy` (and the set is not in panic mode) or it is draining.
    Health(Health),
    /// This request already tried it.
    AlreadyTried,
    /// Bounded load: it is over its capacity.
    OverCapacity,
    /// Slow start: it is ramping up and this pick fell outside its share.
    SlowStart,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Health(h) => f.write_str(h.as_str()),
            SkipReason::AlreadyTried => f.write_str("already-tried"),
            SkipReason::OverCapacity => f.write_str("over-capacity"),
            SkipReason::SlowStart => f.write_str("slow-start"),
        }
    }
}

/// A record of why a pick came out as it did. Only filled when the caller asks (the proxy does for
/// requests carrying `X-Lb-Explain: 1`); on every other pick the algorithms skip this work entirely.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Explain {
    /// One line in plain words, e.g. `p2c: b (in-flight 1, weight 1) beat c (in-flight 4, weight 1)`.
    pub reason: String,
    /// Backends passed over on the way, in order.
    pub skipped: Vec<(usize, SkipReason)>,
}

impl Explain {
    /// Note a skipped backend.
    pub fn skip(&mut self, index: usize, why: SkipReason) {
        self.skipped.push((index, why));
    }
}

/// The interface every algorithm implements.
pub trait Balancer: Send + Sync + fmt::Debug {
    /// Which algorithm this is.
    fn algorithm(&self) -> Algorithm;

    /// The backends this balancer picks from.
    fn backends(&self) -> &Arc<BackendSet>;

    /// Pick a backend for `req`: an index into `backends()`, or `None` when no backend can be picked
    /// (none selectable, or all excluded). Fills `explain` when given.
    fn pick(&self, req: &PickRequest<'_>, explain: Option<&mut Explain>) -> Option<usize>;
}

/// The algorithms, by the names the proxy's config, its flags and the comparison tools use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Each backend in turn (`src/round_robin.rs`).
    RoundRobin,
    /// nginx's smooth weighted round robin (`src/weighted_round_robin.rs`).
    WeightedRoundRobin,
    /// A random backend, by weight (`src/random.rs`).
    Random,
    /// The fewest requests in flight per unit of weight (`src/least_connections.rs`).
    LeastConnections,
    /// The less loaded of two random backends (`src/power_of_two.rs`).
    PowerOfTwo,
    /// The lowest expected wait from a latency estimate (`src/peak_ewma.rs`).
    PeakEwma,
    /// Consistent hashing on a ring (`src/ring_hash.rs`).
    RingHash,
    /// Google Maglev's lookup table (`src/maglev.rs`).
    Maglev,
    /// Ring hash with a cap on any backend's load (`src/bounded_load.rs`).
    BoundedLoad,
    /// Highest random weight (`src/rendezvous.rs`).
    Rendezvous,
}

impl Algorithm {
    /// Every algorithm, in the order the docs present them.
    pub const ALL: [Algorithm; 10] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::Random,
        Algorithm::LeastConnections,
        Algorithm::PowerOfTwo,
        Algorithm::PeakEwma,
        Algorithm::RingHash,
        Algorithm::Maglev,
        Algorithm::BoundedLoad,
        Algorithm::Rendezvous,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::WeightedRoundRobin => "weighted-round-robin",
            Algorithm::Random => "random",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::PowerOfTwo => "power-of-two",
            Algorithm::PeakEwma => "peak-ewma",
            Algorithm::RingHash => "ring-hash",
            Algorithm::Maglev => "maglev",
            Algorithm::BoundedLoad => "bounded-load",
            Algorithm::Rendezvous => "rendezvous",
        }
    }

    /// Does this algorithm use the request's hash key?
    pub fn is_hashing(self) -> bool {
        matches!(
            self,
            Algorithm::RingHash | Algorithm::Maglev | Algorithm::BoundedLoad | Algorithm::Rendezvous
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown algorithm {0:?}; expected one of: round-robin, weighted-round-robin, random, least-connections, power-of-two, peak-ewma, ring-hash, maglev, bounded-load, rendezvous"
)]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| UnknownAlgorithm(s.to_string()))
    }
}

/// Per-algorithm tuning. Every field has the default the docs of its algorithm explain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlgorithmOptions {
    /// Ring hash: points on the ring per unit of weight (ketama uses 160 per server).
    pub ring_points_per_weight: u32,
    /// Maglev: lookup table size, a prime well above the number of backends (Envoy's default 65537).
    pub maglev_table_size: usize,
    /// Bounded load: a backend may hold at most `(1 + epsilon)` times the average in-flight load.
    pub bounded_load_epsilon: f64,
    /// Power of two / peak EWMA with unequal weights: Envoy's `active_request_bias` in
    /// `weight / (active + 1)^bias`.
    pub active_request_bias: f64,
    /// Seed of the randomised algorithms (random, power-of-two, peak-ewma).
    pub seed: u64,
}

impl Default for AlgorithmOptions {
    fn default() -> Self {
        AlgorithmOptions {
            ring_points_per_weight: 160,
            maglev_table_size: 65_537,
            bounded_load_epsilon: 0.25,
            active_request_bias: 1.0,
            seed: 0x5eed,
        }
    }
}

/// Why a balancer could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// An option is out of range for the algorithm.
    #[error("{algorithm}: {reason}")]
    BadOption {
        /// The algorithm being built.
        algorithm: Algorithm,
        /// What is wrong, in words.
        reason: String,
    },
}

/// Build a balancer of the given algorithm over a backend set.
pub fn build(
    algorithm: Algorithm,
    backends: Arc<BackendSet>,
    options: &AlgorithmOptions,
) -> Result<Arc<dyn Balancer>, BuildError> {
    Ok(match algorithm {
        Algorithm::RoundRobin => Arc::new(round_robin::RoundRobin::new(backends)),
        Algorithm::WeightedRoundRobin => Arc::new(weighted_round_robin::WeightedRoundRobin::new(backends)),
        Algorithm::Random => Arc::new(random::Random::new(backends, options.seed)),
        Algorithm::LeastConnections => Arc::new(least_connections::LeastConnections::new(backends)),
        Algorithm::PowerOfTwo => Arc::new(power_of_two::PowerOfTwo::new(backends, options)),
        Algorithm::PeakEwma => Arc::new(peak_ewma::PeakEwmaBalancer::new(backends, options)),
        Algorithm::RingHash => Arc::new(ring_hash::RingHash::new(backends, options)?),
        Algorithm::Maglev => Arc::new(maglev::Maglev::new(backends, options)?),
        Algorithm::BoundedLoad => Arc::new(bounded_load::BoundedLoad::new(backends, options)?),
        Algorithm::Rendezvous => Arc::new(rendezvous::Rendezvous::new(backends)),
    })
}

/// Why backend `i` cannot be picked for `req` (not selectable, or already tried), or `None` if it can.
/// `panic` is [`BackendSet::in_panic`], read once per pick by the caller.
#[inline]
pub(crate) fn unavailable(
    set: &BackendSet,
    panic: bool,
    i: usize,
    req: &PickRequest<'_>,
) -> Option<SkipReason> {
    let b = &set.backends()[i];
    if !b.is_selectable(panic) {
        Some(SkipReason::Health(b.health()))
    } else if req.is_excluded(i) {
        Some(SkipReason::AlreadyTried)
    } else {
        None
    }
}

/// Slow start by acceptance, for algorithms that draw or rotate rather than weigh: turn backend `i` down
/// with probability `1 - ramp`. Draws from `rng` only while `i` is ramping, so the common case costs no
/// shared atomic write.
#[inline]
pub(crate) fn ramp_rejects(set: &BackendSet, i: usize, now: Nanos, rng: &rng::Rng) -> bool {
    let ramp = set.ramp(i, now);
    ramp < 1.0 && rng.unit() >= ramp
}

/// Walk the backends from `start`, wrapping around, and return the first one that is selectable and not
/// excluded, noting what was skipped. The round-robin family and the hashing fallbacks use this.
pub(crate) fn first_available(
    set: &BackendSet,
    start: usize,
    req: &PickRequest<'_>,
    mut explain: Option<&mut Explain>,
) -> Option<usize> {
    let n = set.len();
    if n == 0 {
        return None;
    }
    let panic = set.in_panic();
    let backends = set.backends();
    for step in 0..n {
        let i = (start + step) % n;
        let b = &backends[i];
        if !b.is_selectable(panic) {
            if let Some(e) = explain.as_deref_mut() {
                e.skip(i, SkipReason::Health(b.health()));
            }
        } else if req.is_excluded(i) {
            if let Some(e) = explain.as_deref_mut() {
                e.skip(i, SkipReason::AlreadyTried);
            }
        } else {
            return Some(i);
        }
    }
    None
}

/// The documented choice of every hashing algorithm for a request with no key: round robin over the
/// selectable backends, on the algorithm's own counter. Keyless traffic is spread evenly instead of
/// piling onto whichever backend an empty key would hash to.
pub(crate) fn keyless_round_robin(
    algorithm: Algorithm,
    set: &BackendSet,
    next: &std::sync::atomic::AtomicUsize,
    req: &PickRequest<'_>,
    mut explain: Option<&mut Explain>,
) -> Option<usize> {
    let n = set.len();
    if n == 0 {
        return None;
    }
    let turn = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
    let picked = first_available(set, turn, req, explain.as_deref_mut())?;
    if let Some(e) = explain {
        e.reason = format!("{algorithm}: no key, round robin turn {turn}, picked {}", label(set, picked));
    }
    Some(picked)
}

/// A short name for backend `i` in explanations: its address.
pub(crate) fn label(set: &BackendSet, i: usize) -> &str {
    set.get(i).map_or("?", |b| b.addr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
        }
        assert!("fastest".parse::<Algorithm>().is_err());
    }

    #[test]
    fn every_algorithm_says_none_for_an_empty_set() {
        let set = BackendSet::new(Vec::new(), SetOptions::default());
        for a in Algorithm::ALL {
            let b = build(a, set.clone(), &AlgorithmOptions::default());
            if let Ok(b) = b {
                assert_eq!(b.pick(&PickRequest::new(1).with_key(Some(42)), None), None, "{a}");
            }
        }
    }
}
