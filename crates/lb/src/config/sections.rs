//! The sections of the config that name how the runtime behaves (limits, TLS, backend protocol, health
//! checks, outlier detection): plain data with their defaults, read by the layers above. They live here so
//! the schema imports nothing of the runtime.

use std::net::SocketAddr;
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
    /// Longest wait for a client to take more of a response (nginx's `send_timeout`): an HTTP/1
    /// connection is closed, an HTTP/2 stream reset, and the backend connection released.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
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
            send_timeout: Duration::from_secs(60),
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

/// One entry of `[server] trusted_proxies`: an address (`10.0.0.7`, `::1`) or a network in CIDR form
/// (`10.0.0.0/8`, `fd00::/8`). A client connecting from one is a proxy in front of `lb` whose
/// `Forwarded`, `X-Real-IP`, `X-Forwarded-Port` and `X-Request-Id` are passed on; anyone else's are
/// removed or replaced (nginx's `set_real_ip_from` draws the same line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl ProxyNet {
    /// Does this network hold `ip`? An IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = u32::from(self.prefix);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad trusted proxy {s:?}: expected an IP address or a network like 10.0.0.0/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
        };
        Ok(ProxyNet { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for ProxyNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed inside the visitor, so an error points at the entry (see `one_or_many_addrs`).
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ProxyNet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an IP address or a network like \"10.0.0.0/8\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ProxyNet, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> ProxyNet {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn trusted_proxy_networks_hold_what_their_prefix_says() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")), "IPv4-mapped counts as IPv4");
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")), "an address alone is a /32");
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")), "no mixing of families");
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "::/129", "x", "10.0.0.0/", ""] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad}");
        }
    }
}

/// `[upstream.dns]`: the upstream's backends are what a DNS name resolves to, re-resolved as the records'
/// TTL says (clamped to `min_refresh..=max_refresh`). Either `name` (A and AAAA records: one backend per
/// address, on `port`) or `srv` (SRV records: target, port and weight from each record).
///
/// Checked as it is read (one of `name`/`srv`, a port with `name` only, `min_refresh <= max_refresh`),
/// so a mistake points at the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// What to resolve, and how its answer becomes backends.
    pub query: DnsQuery,
    /// The DNS server to ask (`IP` or `IP:PORT`, port 53 by default); `None`: the system's
    /// `/etc/resolv.conf`.
    pub resolver: Option<SocketAddr>,
    /// The shortest wait between two resolutions, whatever the TTL (and the wait after a failure).
    pub min_refresh: Duration,
    /// The longest wait between two resolutions, whatever the TTL.
    pub max_refresh: Duration,
}

/// What `[upstream.dns]` resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsQuery {
    /// A and AAAA records of `name`: every address is a backend on `port`, weight 1.
    Name {
        /// The DNS name.
        name: String,
        /// The backends' port.
        port: u16,
    },
    /// SRV records: each record's target (resolved to its addresses), port and weight; only the records
    /// of the lowest priority are used, as RFC 2782 asks.
    Srv(String),
}

impl DnsConfig {
    /// A config that resolves `name` to backends on `port`, through `resolver` (or the system's), with
    /// the default refresh bounds.
    pub fn name(name: impl Into<String>, port: u16, resolver: Option<SocketAddr>) -> DnsConfig {
        DnsConfig::of(DnsQuery::Name { name: name.into(), port }, resolver)
    }

    /// A config that reads the SRV records of `srv`.
    pub fn srv(srv: impl Into<String>, resolver: Option<SocketAddr>) -> DnsConfig {
        DnsConfig::of(DnsQuery::Srv(srv.into()), resolver)
    }

    fn of(query: DnsQuery, resolver: Option<SocketAddr>) -> DnsConfig {
        DnsConfig { query, resolver, min_refresh: DNS_MIN_REFRESH, max_refresh: DNS_MAX_REFRESH }
    }

    /// The name asked for: `app.internal` or `_http._tcp.app.internal`.
    pub fn target(&self) -> &str {
        match &self.query {
            DnsQuery::Name { name, .. } => name,
            DnsQuery::Srv(srv) => srv,
        }
    }

    /// How long to wait before the next resolution, for an answer valid `ttl` more.
    pub fn refresh_after(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_refresh, self.max_refresh.max(self.min_refresh))
    }
}

/// Default `min_refresh`.
pub const DNS_MIN_REFRESH: Duration = Duration::from_secs(1);
/// Default `max_refresh`.
pub const DNS_MAX_REFRESH: Duration = Duration::from_secs(30);
/// The shortest `min_refresh` accepted: a resolver is not to be asked in a busy loop.
pub const DNS_FLOOR: Duration = Duration::from_millis(100);

impl<'de> Deserialize<'de> for DnsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: Option<String>,
            srv: Option<String>,
            port: Option<u16>,
            resolver: Option<String>,
            #[serde(default, with = "humantime_serde")]
            min_refresh: Option<Duration>,
            #[serde(default, with = "humantime_serde")]
            max_refresh: Option<Duration>,
        }
        let raw = Raw::deserialize(d)?;
        raw_to_dns(raw.name, raw.srv, raw.port, raw.resolver.as_deref(), raw.min_refresh, raw.max_refresh)
            .map_err(serde::de::Error::custom)
    }
}

fn raw_to_dns(
    name: Option<String>,
    srv: Option<String>,
    port: Option<u16>,
    resolver: Option<&str>,
    min_refresh: Option<Duration>,
    max_refresh: Option<Duration>,
) -> Result<DnsConfig, String> {
    let query = match (name, srv, port) {
        (Some(_), Some(_), _) => return Err("[upstream.dns]: name and srv both set; keep one".to_string()),
        (None, None, _) => {
            return Err(
                "[upstream.dns]: set name (A/AAAA records, with port) or srv (SRV records)".to_string()
            );
        }
        (Some(name), None, Some(port)) if port > 0 => DnsQuery::Name { name: check_dns_name(name)?, port },
        (Some(_), None, _) => {
            return Err("[upstream.dns]: name needs port, the backends' port (1 to 65535)".to_string());
        }
        (None, Some(srv), None) => DnsQuery::Srv(check_dns_name(srv)?),
        (None, Some(_), Some(_)) => {
            return Err("[upstream.dns]: srv records carry their own port; remove port".to_string());
        }
    };
    let resolver = resolver.map(parse_resolver).transpose()?;
    let min_refresh = min_refresh.unwrap_or(DNS_MIN_REFRESH);
    let max_refresh = max_refresh.unwrap_or(DNS_MAX_REFRESH.max(min_refresh));
    if min_refresh < DNS_FLOOR {
        return Err(format!("[upstream.dns]: min_refresh must be at least {}ms", DNS_FLOOR.as_millis()));
    }
    if max_refresh < min_refresh {
        return Err("[upstream.dns]: max_refresh is shorter than min_refresh".to_string());
    }
    Ok(DnsConfig { query, resolver, min_refresh, max_refresh })
}

/// A DNS name as `[upstream.dns]` and `--dns` take it: labels of letters, digits, `-` and `_` (SRV
/// names start with `_service._proto`), a final dot allowed.
pub fn check_dns_name(name: String) -> Result<String, String> {
    let labels = name.strip_suffix('.').unwrap_or(&name);
    let ok = !labels.is_empty()
        && labels.len() <= 253
        && labels.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok { Ok(name) } else { Err(format!("[upstream.dns]: {name:?} is not a DNS name")) }
}

/// `IP` or `IP:PORT` (port 53 when absent).
pub fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("resolver {s:?}: expected IP or IP:PORT, such as \"127.0.0.1:5353\""))
}
