//! Knobs: how badly a backend should behave.
//!
//! A load balancer only shows its character when backends differ: one is slow, one fails now and
//! then, one can serve only a few requests at once, one is down. Each [`Knobs`] field is one of those
//! behaviours, and every one of them can be changed while the backend runs (from the library, or
//! from the `/admin/*` endpoints), so a lesson can make a backend slow in the middle of a benchmark
//! and watch the balancer react.
//!
//! - **latency** ([`Latency`]): a delay drawn per request from a distribution. Real service times are
//!   not fixed: `exp` (memoryless, the M/M/1 textbook case) and `lognormal` (a long right tail, what
//!   measured web latencies tend to look like) are the interesting ones for tail-latency lessons.
//! - **error rate**: that fraction of requests answers `500 injected error`.
//! - **capacity**: at most N requests are served at once; the rest wait in FIFO order. Latency is
//!   applied while a request holds its slot, so an overloaded backend really does get slower, which
//!   is what least-connections and EWMA balancers are built to notice.
//! - **healthy**: what `/health` answers (200 or 503), for active health checks.
//! - **fail**: the process is "broken": connections are reset with no response, for passive health
//!   checks and retries.
//!
//! The live values sit in atomics and [`ArcSwap`]s (`KnobState`), so the request path reads them
//! without taking a lock.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rand::Rng;
use rand_distr::{Exp1, StandardNormal};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::Semaphore;

/// Longest delay a random distribution may produce. An `exp` or `lognormal` tail can in principle
/// draw hours; a lesson wants a slow request, not a hung one, so samples are capped here.
/// `fixed` and `uniform` are taken as written.
pub const MAX_RANDOM_LATENCY: Duration = Duration::from_secs(60);

/// Behaviour a backend shows to every request except `/health` and `/admin/*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knobs {
    /// Delay added to each request, drawn per request.
    pub latency: Latency,
    /// Fraction of requests (0.0..=1.0) that answer `500 injected error`.
    pub error_rate: f64,
    /// At most this many requests are served at once (`None`: unlimited). `Some(0)` is taken as 1.
    pub capacity: Option<usize>,
    /// What `/health` reports.
    pub healthy: bool,
    /// Reset connections instead of answering.
    pub fail: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { latency: Latency::None, error_rate: 0.0, capacity: None, healthy: true, fail: false }
    }
}

/// A latency distribution, written on the command line and in `/admin/latency` as
/// `none` (or `0`), `fixed:20ms`, `uniform:10ms..50ms`, `exp:20ms` (mean) or `lognormal:20ms,0.5`
/// (median, sigma). Durations take the units `ns`, `us`, `ms` and `s`, and may be fractional
/// (`1.5ms`). [`Display`](fmt::Display) writes the same syntax back.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Latency {
    /// No added delay.
    #[default]
    None,
    /// The same delay for every request.
    Fixed(Duration),
    /// Uniformly distributed between the two bounds (inclusive).
    Uniform(Duration, Duration),
    /// Exponentially distributed with this mean.
    Exponential {
        /// Mean delay.
        mean: Duration,
    },
    /// Log-normally distributed: `median * exp(sigma * Z)` with `Z` standard normal.
    LogNormal {
        /// Median delay (half of the requests are faster).
        median: Duration,
        /// Spread of the underlying normal; 0.5 gives a p99 of about 3.2x the median.
        sigma: f64,
    },
}

impl Latency {
    /// Draws one delay. Random tails are capped at a minute (`MAX_RANDOM_LATENCY`).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let secs = match *self {
            Latency::None => return Duration::ZERO,
            Latency::Fixed(d) => return d,
            Latency::Uniform(lo, hi) => {
                let span = hi.saturating_sub(lo);
                return lo + span.mul_f64(rng.random::<f64>());
            }
            Latency::Exponential { mean } => mean.as_secs_f64() * rng.sample::<f64, _>(Exp1),
            Latency::LogNormal { median, sigma } => {
                let z: f64 = rng.sample(StandardNormal);
                median.as_secs_f64() * (sigma * z).exp()
            }
        };
        Duration::try_from_secs_f64(secs).unwrap_or(MAX_RANDOM_LATENCY).min(MAX_RANDOM_LATENCY)
    }
}

/// A latency string that does not follow the flag syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid latency {input:?}: {reason} (expected none, fixed:20ms, uniform:10ms..50ms, exp:20ms or lognormal:20ms,0.5)"
)]
pub struct ParseLatencyError {
    input: String,
    reason: &'static str,
}

impl FromStr for Latency {
    type Err = ParseLatencyError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseLatencyError { input: input.to_owned(), reason };
        let s = input.trim();
        if s == "0" || s.eq_ignore_ascii_case("none") {
            return Ok(Latency::None);
        }
        let (kind, arg) = s.split_once(':').ok_or(err("missing `kind:`"))?;
        let dur = |text: &str| parse_duration(text).ok_or(err("bad duration"));
        match kind.to_ascii_lowercase().as_str() {
            "fixed" => Ok(Latency::Fixed(dur(arg)?)),
            "uniform" => {
                let (lo, hi) = arg.split_once("..").ok_or(err("uniform needs lo..hi"))?;
                let (lo, hi) = (dur(lo)?, dur(hi)?);
                if lo > hi {
                    return Err(err("uniform needs lo <= hi"));
                }
                Ok(Latency::Uniform(lo, hi))
            }
            "exp" => Ok(Latency::Exponential { mean: dur(arg)? }),
            "lognormal" => {
                let (median, sigma) = arg.split_once(',').ok_or(err("lognormal needs median,sigma"))?;
                let sigma: f64 = sigma.trim().parse().map_err(|_| err("bad sigma"))?;
                if !sigma.is_finite() || sigma < 0.0 {
                    return Err(err("sigma must be a finite number >= 0"));
                }
                Ok(Latency::LogNormal { median: dur(median)?, sigma })
            }
            _ => Err(err("unknown kind")),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::None => f.write_str("none"),
            Latency::Fixed(d) => write!(f, "fixed:{}", Dur(*d)),
            Latency::Uniform(lo, hi) => write!(f, "uniform:{}..{}", Dur(*lo), Dur(*hi)),
            Latency::Exponential { mean } => write!(f, "exp:{}", Dur(*mean)),
            Latency::LogNormal { median, sigma } => {
                write!(f, "lognormal:{},{sigma}", Dur(*median))
            }
        }
    }
}

impl Serialize for Latency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `20ms`, `1.5s`, `250us`, `100ns` or a bare `0`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let digits = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(digits);
    let nanos_per_unit = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    let nanos = (number.parse::<f64>().ok()? * nanos_per_unit).round();
    // The upper bound keeps the cast exact and rejects absurd values (~584 years).
    (nanos.is_finite() && (0.0..1.8e19).contains(&nanos)).then(|| Duration::from_nanos(nanos as u64))
}

/// Writes a duration in the largest unit that keeps it exact, so `Display` round-trips.
struct Dur(Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        match nanos {
            0 => f.write_str("0ms"),
            n if n % 1_000_000_000 == 0 => write!(f, "{}s", n / 1_000_000_000),
            n if n % 1_000_000 == 0 => write!(f, "{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => write!(f, "{}us", n / 1_000),
            n => write!(f, "{n}ns"),
        }
    }
}

/// A capacity limit: the configured maximum and the FIFO queue that enforces it. Tokio's
/// [`Semaphore`] is fair, so waiting requests are served in arrival order.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) max: usize,
    pub(crate) permits: Arc<Semaphore>,
}

/// The live knobs, readable from the request path without a lock.
///
/// Changing the capacity swaps in a fresh semaphore: requests already queued on the old one finish
/// under the old limit, new requests see the new one. That keeps a change O(1) and lock-free at the
/// cost of a short overlap where both limits are in force.
#[derive(Debug)]
pub(crate) struct KnobState {
    latency: ArcSwap<Latency>,
    /// `f64` bits: there is no `AtomicF64`.
    error_rate: AtomicU64,
    limiter: ArcSwapOption<Limiter>,
    healthy: AtomicBool,
    fail: AtomicBool,
}

impl KnobState {
    pub(crate) fn new(knobs: &Knobs) -> Self {
        let state = KnobState {
            latency: ArcSwap::from_pointee(Latency::None),
            error_rate: AtomicU64::new(0),
            limiter: ArcSwapOption::empty(),
            healthy: AtomicBool::new(true),
            fail: AtomicBool::new(false),
        };
        state.set_all(knobs);
        state
    }

    pub(crate) fn set_all(&self, knobs: &Knobs) {
        self.set_latency(knobs.latency);
        self.set_error_rate(knobs.error_rate);
        self.set_capacity(knobs.capacity);
        self.set_healthy(knobs.healthy);
        self.set_fail(knobs.fail);
    }

    pub(crate) fn snapshot(&self) -> Knobs {
        Knobs {
            latency: self.latency(),
            error_rate: self.error_rate(),
            capacity: self.limiter().map(|l| l.max),
            healthy: self.healthy(),
            fail: self.fail(),
        }
    }

    pub(crate) fn latency(&self) -> Latency {
        **self.latency.load()
    }

    pub(crate) fn set_latency(&self, latency: Latency) {
        self.latency.store(Arc::new(latency));
    }

    pub(crate) fn error_rate(&self) -> f64 {
        f64::from_bits(self.error_rate.load(Ordering::Relaxed))
    }

    /// Clamped to 0.0..=1.0; NaN counts as 0.
    pub(crate) fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) };
        self.error_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn limiter(&self) -> Option<Arc<Limiter>> {
        self.limiter.load_full()
    }

    pub(crate) fn set_capacity(&self, capacity: Option<usize>) {
        let limiter = capacity.map(|max| {
            // Zero permits would park every request forever; a hung backend is what `/delay` is for.
            let max = max.clamp(1, Semaphore::MAX_PERMITS);
            Arc::new(Limiter { max, permits: Arc::new(Semaphore::new(max)) })
        });
        self.limiter.store(limiter);
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub(crate) fn fail(&self) -> bool {
        self.fail.load(Ordering::Relaxed)
    }

    pub(crate) fn set_fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_the_flag_syntax() {
        let cases = [
            ("0", Latency::None),
            ("none", Latency::None),
            ("fixed:20ms", Latency::Fixed(ms(20))),
            ("fixed:1.5s", Latency::Fixed(ms(1500))),
            ("fixed:250us", Latency::Fixed(Duration::from_micros(250))),
            ("uniform:10ms..50ms", Latency::Uniform(ms(10), ms(50))),
            ("exp:20ms", Latency::Exponential { mean: ms(20) }),
            ("lognormal:20ms,0.5", Latency::LogNormal { median: ms(20), sigma: 0.5 }),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Latency>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "none",
            "fixed:20ms",
            "fixed:2s",
            "fixed:1500us",
            "uniform:10ms..50ms",
            "exp:20ms",
            "lognormal:20ms,0.5",
        ] {
            let latency: Latency = text.parse().expect("valid latency");
            assert_eq!(latency.to_string(), text);
        }
        // 1.5s has no exact whole-second form, so it comes back in milliseconds.
        let latency: Latency = "fixed:1.5s".parse().expect("valid latency");
        assert_eq!(latency.to_string(), "fixed:1500ms");
    }

    #[test]
    fn rejects_nonsense() {
        for text in [
            "",
            "fixed",
            "fixed:20",
            "fixed:-5ms",
            "fixed:20 parsecs",
            "uniform:50ms..10ms",
            "uniform:10ms",
            "lognormal:20ms",
            "lognormal:20ms,-1",
            "lognormal:20ms,NaN",
            "gamma:20ms",
        ] {
            assert!(text.parse::<Latency>().is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn samples_stay_in_their_distribution() {
        let mut rng = SmallRng::seed_from_u64(7);
        let uniform = Latency::Uniform(ms(10), ms(50));
        let exp = Latency::Exponential { mean: ms(20) };
        let lognormal = Latency::LogNormal { median: ms(20), sigma: 0.5 };
        let n = 20_000;
        let mut exp_total = Duration::ZERO;
        let mut lognormal_below_median = 0;
        for _ in 0..n {
            let u = uniform.sample(&mut rng);
            assert!((ms(10)..=ms(50)).contains(&u), "{u:?}");
            exp_total += exp.sample(&mut rng);
            if lognormal.sample(&mut rng) < ms(20) {
                lognormal_below_median += 1;
            }
        }
        // The mean of 20 000 exponential draws has a standard error of 20ms/sqrt(20 000) = 0.14ms;
        // 1ms is seven standard errors.
        let mean = exp_total / n;
        assert!(mean > ms(19) && mean < ms(21), "exp mean {mean:?}");
        // Half of a lognormal's draws fall below its median; the standard error is 0.35%.
        let below = f64::from(lognormal_below_median) / f64::from(n);
        assert!((below - 0.5).abs() < 0.02, "below median: {below}");
    }

    #[test]
    fn random_tails_are_capped() {
        let mut rng = SmallRng::seed_from_u64(1);
        let wild = Latency::LogNormal { median: Duration::from_secs(30), sigma: 50.0 };
        for _ in 0..1000 {
            assert!(wild.sample(&mut rng) <= MAX_RANDOM_LATENCY);
        }
    }

    #[test]
    fn knob_state_clamps_and_snapshots() {
        let state = KnobState::new(&Knobs::default());
        assert_eq!(state.snapshot(), Knobs::default());
        state.set_error_rate(1.7);
        assert_eq!(state.error_rate(), 1.0);
        state.set_error_rate(f64::NAN);
        assert_eq!(state.error_rate(), 0.0);
        state.set_capacity(Some(0));
        assert_eq!(state.snapshot().capacity, Some(1));
        state.set_capacity(None);
        assert_eq!(state.snapshot().capacity, None);
    }
}
