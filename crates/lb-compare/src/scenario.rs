//! Scenario files: a fleet, a load and a script of things going wrong, in TOML.
//!
//! ```toml
//! name = "one-slow"
//! description = "Ten equal backends; one gets ten times slower for half a minute."
//! duration = "60s"
//! timeout = "10s"          # per attempt; optional
//! attempts = 1             # tries per request; a retry goes to a backend not tried yet
//! connect_timeout = "1s"   # how long a connection to a dead backend takes to fail
//! algorithms = ["round-robin", "peak-ewma"]   # default: every algorithm
//! keys = 10000             # each request carries one of this many user ids (for the hashing algorithms)
//!
//! [load]
//! rate = 1000.0            # open loop: Poisson arrivals, requests per second
//! # clients = 64           # or closed loop: this many clients, each sending when its last answer came
//! # think = "0ms"
//!
//! [[backend]]
//! count = 10               # ten backends alike (default 1)
//! latency = "exp:20ms"     # fixed:, uniform:lo..hi, exp:mean, lognormal:median,sigma (as toy-backend)
//! capacity = 0             # concurrent requests served; more wait in a FIFO queue (0: no limit)
//!
//! [[event]]
//! at = "15s"
//! backend = 3
//! slowdown = 10.0          # service times x10 ...
//! duration = "30s"         # ... for 30 s (or latency = "fixed:2s" to replace the distribution)
//!
//! [[event]]
//! at = "20s"
//! backend = 2
//! dies = true
//! detect_after = "5s"      # marked unhealthy 5 s later, as a health check would (optional)
//!
//! [[event]]
//! at = "30s"
//! rate = 3.0               # arrival rate x3 ...
//! duration = "5s"          # ... for 5 s (a burst)
//! ```

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::rng::SimRng;

/// Simulated time and durations, in nanoseconds.
pub type Nanos = u64;

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML, or a field of the wrong type or form.
    #[error("scenario {name}: {source}")]
    Toml {
        /// The file or scenario name.
        name: String,
        /// What the parser said.
        source: toml::de::Error,
    },
    /// Valid TOML that does not describe a runnable scenario.
    #[error("scenario {name}: {reason}")]
    Invalid {
        /// The file or scenario name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Parse `20ms`, `1.5s`, `250us`, `100ns`, `2m` or `0` into nanoseconds.
pub fn parse_duration(text: &str) -> Option<Nanos> {
    let text = text.trim();
    if text == "0" {
        return Some(0);
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        _ => return None,
    };
    let ns = number * scale;
    (0.0..1e19).contains(&ns).then_some(ns.round() as Nanos)
}

/// A duration field written as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dur(pub Nanos);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(Dur)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {text:?} (e.g. 20ms, 1.5s)")))
    }
}

/// A latency distribution, in the syntax of `toy-backend --latency`. Samples are nanoseconds.
///
/// The simulator has its own copy of the parser rather than depending on `toy-backend`, because it draws
/// from its own seeded `SimRng` in nanoseconds and must not pull an HTTP server into a simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    /// The same every time.
    Fixed(f64),
    /// Uniform between the bounds.
    Uniform(f64, f64),
    /// Exponential with this mean.
    Exp(f64),
    /// `median * exp(sigma * Z)`, `Z` standard normal.
    LogNormal(f64, f64),
}

impl Dist {
    /// One draw, in nanoseconds.
    pub(crate) fn sample(&self, rng: &mut SimRng) -> f64 {
        match *self {
            Dist::Fixed(v) => v,
            Dist::Uniform(lo, hi) => lo + (hi - lo) * rng.unit(),
            Dist::Exp(mean) => mean * rng.exp1(),
            Dist::LogNormal(median, sigma) => median * (sigma * rng.normal()).exp(),
        }
    }

    /// The mean, in nanoseconds.
    #[cfg(test)]
    fn mean(&self) -> f64 {
        match *self {
            Dist::Fixed(v) | Dist::Exp(v) => v,
            Dist::Uniform(lo, hi) => (lo + hi) / 2.0,
            Dist::LogNormal(median, sigma) => median * (sigma * sigma / 2.0).exp(),
        }
    }
}

impl FromStr for Dist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid latency {s:?} (expected fixed:20ms, uniform:10ms..50ms, exp:20ms or lognormal:20ms,0.5)"
            )
        };
        let s = s.trim();
        if s == "0" || s == "none" {
            return Ok(Dist::Fixed(0.0));
        }
        let (kind, arg) = s.split_once(':').ok_or_else(bad)?;
        let dur = |t: &str| parse_duration(t).map(|n| n as f64).ok_or_else(bad);
        match kind {
            "fixed" => Ok(Dist::Fixed(dur(arg)?)),
            "exp" => Ok(Dist::Exp(dur(arg)?)),
            "uniform" => {
                let (lo, hi) = arg.split_once("..").ok_or_else(bad)?;
                let (lo, hi) = (dur(lo)?, dur(hi)?);
                if lo > hi {
                    return Err(bad());
                }
                Ok(Dist::Uniform(lo, hi))
            }
            "lognormal" => {
                let (median, sigma) = arg.split_once(',').ok_or_else(bad)?;
                let sigma: f64 = sigma.trim().parse().map_err(|_| bad())?;
                if !sigma.is_finite() || sigma < 0.0 {
                    return Err(bad());
                }
                Ok(Dist::LogNormal(dur(median)?, sigma))
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: f64| v / 1e6;
        match *self {
            Dist::Fixed(v) => write!(f, "fixed:{}ms", ms(v)),
            Dist::Uniform(lo, hi) => write!(f, "uniform:{}ms..{}ms", ms(lo), ms(hi)),
            Dist::Exp(m) => write!(f, "exp:{}ms", ms(m)),
            Dist::LogNormal(m, s) => write!(f, "lognormal:{}ms,{s}", ms(m)),
        }
    }
}

impl<'de> Deserialize<'de> for Dist {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Open or closed loop.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Open loop: Poisson arrivals at this many requests per second.
    pub rate: Option<f64>,
    /// Closed loop: this many clients.
    pub clients: Option<u32>,
    /// Closed loop: pause between an answer and the client's next request.
    #[serde(default)]
    pub think: Dur,
}

/// A group of identical backends.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendGroup {
    /// How many.
    #[serde(default = "one")]
    pub count: usize,
    /// Service time distribution.
    pub latency: Dist,
    /// Concurrent requests served (0: unlimited); the rest wait in FIFO order.
    #[serde(default)]
    pub capacity: usize,
    /// Weight given to the balancer.
    #[serde(default = "one_u32")]
    pub weight: u32,
}

fn one() -> usize {
    1
}

fn one_u32() -> u32 {
    1
}

fn default_keys() -> usize {
    10_000
}

fn default_attempts() -> u32 {
    1
}

fn default_connect_timeout() -> Dur {
    Dur(1_000_000_000)
}

/// Something that happens during the run.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When.
    pub at: Dur,
    /// Which backend (index, from 0, counting through the groups in order); not for `rate`.
    pub backend: Option<usize>,
    /// Multiply the backend's service times by this.
    pub slowdown: Option<f64>,
    /// Replace the backend's latency distribution.
    pub latency: Option<Dist>,
    /// Multiply the arrival rate (open loop) by this.
    pub rate: Option<f64>,
    /// How long a slowdown, latency change or rate change lasts (default: to the end).
    pub duration: Option<Dur>,
    /// The backend dies: requests on it fail at once, new connections fail after `connect_timeout`.
    #[serde(default)]
    pub dies: bool,
    /// After dying, the backend is marked unhealthy this much later (default: never).
    pub detect_after: Option<Dur>,
}

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    #[serde(default)]
    pub name: String,
    /// One or two sentences for the report.
    #[serde(default)]
    pub description: String,
    /// How long requests keep arriving (requests already sent are then let finish).
    pub duration: Dur,
    /// Per-attempt timeout (none by default).
    pub timeout: Option<Dur>,
    /// Tries per request, at least 1.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// How long connecting to a dead backend takes to fail.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Each request carries a user id drawn uniformly from this many (default 10,000); the hashing
    /// algorithms hash it, the others ignore it.
    #[serde(default = "default_keys")]
    pub keys: usize,
    /// The algorithms to compare when the command line names none (default: all).
    #[serde(default)]
    pub algorithms: Vec<lb_algorithms::Algorithm>,
    /// The default seed (the command line's `--seed` wins).
    pub seed: Option<u64>,
    /// The load.
    pub load: Load,
    /// The fleet, group by group.
    #[serde(rename = "backend")]
    pub backends: Vec<BackendGroup>,
    /// The script.
    #[serde(default, rename = "event")]
    pub events: Vec<Event>,
}

impl Scenario {
    /// Parse and check a scenario; `name` is used in errors (and as the name if the file has none).
    pub fn parse(name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario =
            toml::from_str(text).map_err(|source| ScenarioError::Toml { name: name.to_string(), source })?;
        if s.name.is_empty() {
            s.name = name.to_string();
        }
        s.validate().map_err(|reason| ScenarioError::Invalid { name: name.to_string(), reason })?;
        Ok(s)
    }

    /// Number of backends over all groups.
    fn backend_count(&self) -> usize {
        self.backends.iter().map(|g| g.count).sum()
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.backend_count();
        if n == 0 {
            return Err("no backends".into());
        }
        match (self.load.rate, self.load.clients) {
            (Some(r), None) if r > 0.0 && r.is_finite() => {}
            (None, Some(c)) if c > 0 => {}
            _ => return Err("[load] needs exactly one of rate (> 0) or clients (> 0)".into()),
        }
        if self.attempts == 0 {
            return Err("attempts must be at least 1".into());
        }
        if self.duration.0 == 0 {
            return Err("duration must be above 0".into());
        }
        for (i, e) in self.events.iter().enumerate() {
            let what = [e.slowdown.is_some(), e.latency.is_some(), e.rate.is_some(), e.dies];
            if what.iter().filter(|&&w| w).count() != 1 {
                return Err(format!("event {i}: give exactly one of slowdown, latency, rate, dies"));
            }
            if e.rate.is_none() && e.backend.is_none_or(|b| b >= n) {
                return Err(format!("event {i}: backend must be an index below {n}"));
            }
            if e.rate.is_some() && self.load.rate.is_none() {
                return Err(format!("event {i}: a rate change needs an open-loop [load] rate"));
            }
            if e.slowdown.is_some_and(|f| !(f > 0.0 && f.is_finite()))
                || e.rate.is_some_and(|f| !(f > 0.0 && f.is_finite()))
            {
                return Err(format!("event {i}: factors must be finite and above 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("20ms"), Some(20_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("250us"), Some(250_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("2m"), Some(120_000_000_000));
        assert_eq!(parse_duration("20"), None);
        assert_eq!(parse_duration("fast"), None);
    }

    #[test]
    fn distributions_parse_and_have_the_right_mean() {
        assert_eq!("fixed:20ms".parse::<Dist>(), Ok(Dist::Fixed(20e6)));
        assert_eq!("exp:1s".parse::<Dist>(), Ok(Dist::Exp(1e9)));
        assert_eq!("uniform:10ms..30ms".parse::<Dist>().map(|d| d.mean()), Ok(20e6));
        assert!("uniform:30ms..10ms".parse::<Dist>().is_err());
        assert!("gamma:1s".parse::<Dist>().is_err());
        // Lognormal: mean = median * exp(sigma^2 / 2); with 100,000 draws the sample mean of a sigma-0.5
        // lognormal has a relative standard error of about 0.17%; 1% is a wide margin.
        let d: Dist = "lognormal:20ms,0.5".parse().unwrap_or(Dist::Fixed(0.0));
        let mut rng = SimRng::seeded(2);
        let mean = (0..100_000).map(|_| d.sample(&mut rng)).sum::<f64>() / 100_000.0;
        assert!((mean / d.mean() - 1.0).abs() < 0.01, "{mean} vs {}", d.mean());
    }

    #[test]
    fn a_scenario_parses_and_bad_ones_say_why() {
        let ok = r#"
            duration = "10s"
            [load]
            rate = 100.0
            [[backend]]
            count = 3
            latency = "exp:20ms"
            [[event]]
            at = "1s"
            backend = 2
            dies = true
        "#;
        let s = Scenario::parse("t", ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.name.as_str(), s.backend_count(), s.attempts), ("t", 3, 1));
        let bad_backend = ok.replace("backend = 2", "backend = 3");
        let err = Scenario::parse("t", &bad_backend).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("backend must be an index below 3"), "{err}");
        let both = ok.replace("rate = 100.0", "rate = 100.0\nclients = 4");
        assert!(Scenario::parse("t", &both).is_err());
    }
}
