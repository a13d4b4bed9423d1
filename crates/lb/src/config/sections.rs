//! The sections of the config that name how the runtime behaves (limits, TLS, backend protocol, health
//! checks, outlier detection): plain data with their defaults, read by the layers above. They live here so
//! the schema imports nothing of the runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[server.limits]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// Client connections open at once, over all workers; more are accepted and closed at once.
    pub max_connections: usize,
    /// Request line plus headers, in bytes; more is answered 431.
    pub max_header_bytes: usize,
    /// Request body, in bytes (no limit when absent); more is answered 413.
    pub max_body_bytes: Option<u64>,
    /// From the first byte of a request to the end of its headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest wait for the next bytes of a request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// One `[[server.tls]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// PEM file with the certificate chain, leaf first (relative paths: to the config file).
    pub cert: PathBuf,
    /// PEM file with its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Server names (SNI) this certificate is for; `*.example.com` matches one label. The first entry
    /// also answers clients whose name matches no entry.
    #[serde(default)]
    pub names: Vec<String>,
}

/// Make the certificate paths of `certs` relative to `dir` (the config file's directory).
pub fn resolve_paths(certs: &mut [CertConfig], dir: &Path) {
    for c in certs {
        for p in [&mut c.cert, &mut c.key] {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}

/// `[upstream.tls]`: how to check a backend's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the CA certificates to trust (relative paths: to the config file).
    pub ca: Option<PathBuf>,
    /// Accept any certificate. Only when written out, and only for a trusted network.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name to send in SNI and check in the certificate (default: the backend's host).
    pub server_name: Option<String>,
}

/// `protocol` of an upstream: how `lb` talks to its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 over TCP, pooled (the default).
    #[default]
    Http1,
    /// HTTP/2 in clear text, with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (needs `[upstream.tls]`).
    H2,
}

impl Protocol {
    /// The protocol to offer in the TLS handshake's ALPN.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Http1 => b"http/1.1",
            Protocol::H2c | Protocol::H2 => b"h2",
        }
    }
}

/// The shortest wait between two rounds of checks, whatever the config says.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// `[upstream.health_check]` in the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The path to `GET`.
    pub path: String,
    /// Time between two rounds of checks (before jitter).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A check with no response headers by then fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The status a passing check answers.
    pub expect_status: u16,
    /// Passes in a row that bring an unhealthy backend back.
    pub rise: u32,
    /// Fails in a row that take a healthy backend out.
    pub fall: u32,
    /// Random spread of the interval, as a fraction of it (0.1: each wait is 90% to 110% of `interval`).
    pub jitter: f64,
    /// The `Host` header to send (default: the backend's address).
    pub host: Option<String>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/health".to_string(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            expect_status: 200,
            rise: 2,
            fall: 3,
            jitter: 0.1,
            host: None,
        }
    }
}

impl HealthCheckConfig {
    /// The wait before the next round, for a uniform draw `u` in `[0, 1)`.
    pub fn jittered_interval(&self, u: f64) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0);
        // The floor keeps `interval = "0s"` from turning the checker into a busy loop.
        self.interval.mul_f64(1.0 - jitter + 2.0 * jitter * u).max(MIN_INTERVAL)
    }
}

/// `[upstream.outlier_detection]` in the config: on by default (`enabled = false` turns it off).
///
/// The defaults follow nginx's for a plain `server` line (`max_fails=1 fail_timeout=10s`) where nginx
/// counts failures, connecting: one refused or timed-out connect takes a backend out for 10 s. Other
/// failures (timeouts, broken connections, 5xx) take five in a row, as Envoy's `consecutive_5xx`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// `false` turns passive health off for the upstream (the parser then keeps no config at all).
    pub enabled: bool,
    /// Failed attempts in a row, of any kind, that eject a backend.
    pub consecutive_failures: u32,
    /// Failed connects in a row that eject a backend (never more than `consecutive_failures`; 0: no
    /// rule of their own, they count like any failure).
    pub consecutive_connect_failures: u32,
    /// How long the first ejection lasts; the n-th in a row lasts n times this.
    #[serde(with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// The longest an ejection may last.
    #[serde(with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// At most this percentage of the group's backends may be ejected at once (at least one always may).
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            enabled: true,
            consecutive_failures: 5,
            consecutive_connect_failures: 1,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl OutlierConfig {
    /// How many failures in a row eject a backend, when the latest was a connect failure (`connect`)
    /// or any other.
    #[inline]
    pub fn threshold(&self, connect: bool) -> u32 {
        let any = self.consecutive_failures.max(1);
        match self.consecutive_connect_failures {
            n if connect && n > 0 => n.min(any),
            _ => any,
        }
    }

    /// How long the `level`-th ejection in a row lasts.
    pub fn ejection_time(&self, level: u32) -> Duration {
        // The cap never cuts below the base: a config with max < base means "always base".
        let cap = self.max_ejection_time.max(self.base_ejection_time);
        self.base_ejection_time.saturating_mul(level.max(1)).min(cap)
    }

    /// How many of `n` backends may be ejected at once.
    pub fn max_ejected(&self, n: usize) -> usize {
        (n * self.max_ejection_percent.min(100) as usize / 100).max(1)
    }
}
