//! The configuration: a TOML file, checked before anything starts, with every error pointing at a line.
//!
//! ```toml
//! [server]
//! listen = ["127.0.0.1:8080"]     # one or more
//! workers = 0                     # 0 = one per core
//!
//! [admin]                         # optional
//! listen = "127.0.0.1:9900"
//! explain = true                  # honour X-Lb-Explain: 1
//!
//! [[upstream]]
//! name = "app"
//! algorithm = "round-robin"
//! backends = ["127.0.0.1:9001", "127.0.0.1:9002=3", { addr = "127.0.0.1:9003", weight = 2 }]
//! ```
//!
//! The full schema, with every default, is in `crates/lb/config/reference.toml`.
//!
//! # Why every error has a position
//!
//! A proxy that refuses to start with "invalid config" makes its operator bisect the file. So every
//! value that can be wrong is checked *while it is deserialized* (a bad address, an unknown algorithm, a
//! weight of 0, an unknown key through `deny_unknown_fields`): the TOML parser then attaches the byte span
//! of the offending value to our error, and [`ConfigError`] turns it into `file:line:column`. The few
//! checks that need the whole file (two upstreams with the same name) run afterwards, on a second pass
//! that keeps the spans of the names with [`toml::Spanned`].
//!
//! # Layer
//!
//! The bottom layer: it owns the schema and its checks, and imports nothing of the proxy. The settings
//! the runtime reads (limits, TLS, backend protocol, health checks, outlier detection) are plain data in
//! [`sections`]. Checks that need the runtime (can the certificates be loaded?) run in the callers
//! ([`crate::control::reload`], the command line).

mod sections;

pub use sections::*;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use lb_algorithms::{Algorithm, AlgorithmOptions, BackendSpec, HashKey, SetOptions};
use serde::{Deserialize, Deserializer};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen and how many worker threads.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin API (metrics, backends, drain); off when absent.
    pub admin: Option<AdminConfig>,
    /// The upstream groups, each with its backends and its algorithm.
    #[serde(rename = "upstream", default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// The file this was loaded from, if any: a reload (`SIGHUP`, admin `POST /reload`) reads it again.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to accept clients on (port 0 picks a free port; tests do that).
    #[serde(default = "default_listen", deserialize_with = "one_or_many_addrs")]
    pub listen: Vec<SocketAddr>,
    /// Worker threads, each a single-threaded runtime with its own listener and connection pool.
    /// 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// On shutdown, how long requests in flight may take to finish before they are cut
    /// (`shutdown_timeout` in the file; the older name `shutdown_grace` is still read).
    #[serde(
        default = "default_grace",
        with = "humantime_serde",
        rename = "shutdown_timeout",
        alias = "shutdown_grace"
    )]
    pub shutdown_grace: Duration,
    /// `[server.limits]`: what one client may cost (connections, header size, body size, timeouts).
    #[serde(default)]
    pub limits: ServerLimits,
    /// Addresses that accept TLS clients (HTTPS, with HTTP/2 through ALPN); needs `[[server.tls]]`.
    #[serde(default, deserialize_with = "one_or_many_addrs")]
    pub listen_tls: Vec<SocketAddr>,
    /// `[[server.tls]]`: certificates for `listen_tls`, picked by SNI; the first is the default.
    #[serde(default)]
    pub tls: Vec<CertConfig>,
    /// Proxies in front of `lb` whose `Forwarded`, `X-Real-IP`, `X-Forwarded-Port` and `X-Request-Id`
    /// are passed on (addresses or CIDR networks). From anyone else they are removed (and the request
    /// id replaced by `lb`'s own), so a client cannot pose as a proxy to a backend that trusts them.
    #[serde(default)]
    pub trusted_proxies: Vec<ProxyNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            workers: 0,
            shutdown_grace: default_grace(),
            limits: ServerLimits::default(),
            listen_tls: Vec::new(),
            tls: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
}

fn default_grace() -> Duration {
    // nginx's worker_shutdown_timeout is off (wait forever) and Envoy drains for 600 s; 30 s is what
    // Kubernetes gives a pod between SIGTERM and SIGKILL, so lb finishes before it is killed.
    Duration::from_secs(30)
}

/// `[admin]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens (none: no admin API, but `explain` and `access_log` still apply).
    /// Keep it on loopback: it can add and remove backends. Any other address needs a `token`.
    pub listen: Option<SocketAddr>,
    /// Honour `X-Lb-Explain: 1` on client requests (answers say which backend and why).
    #[serde(default)]
    pub explain: bool,
    /// Log one JSON line per request through `tracing` (off by default: it costs throughput).
    #[serde(default)]
    pub access_log: bool,
    /// Every admin request must carry `Authorization: Bearer <token>`. Set by `token`, or read from
    /// `token_file` by [`Config::read`].
    #[serde(default)]
    pub token: Option<AdminToken>,
    /// A file holding the token (surrounding whitespace ignored), relative to the config file: keeps
    /// the secret out of a file that is shared or committed.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

/// The admin API's bearer token: visible ASCII, never printed (its `Debug` is `AdminToken(..)`).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Check a token: not empty, and only the characters an `Authorization` header carries unchanged.
    pub fn new(token: &str) -> Result<AdminToken, String> {
        if token.is_empty() {
            return Err("the admin token is empty".to_string());
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be visible ASCII, with no spaces".to_string());
        }
        Ok(AdminToken(token.to_string()))
    }

    /// The secret itself, for the comparison and for the demo's banner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl FromStr for AdminToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AdminToken::new(s)
    }
}

impl<'de> Deserialize<'de> for AdminToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d)
    }
}

/// One `[[upstream]]`: a group of interchangeable backends and how to spread requests over them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, used in metrics, the admin API and error bodies.
    pub name: String,
    /// The algorithm (the names of `lb_algorithms::Algorithm`).
    #[serde(deserialize_with = "from_str")]
    pub algorithm: Algorithm,
    /// Which part of the request the hashing algorithms hash.
    #[serde(default, deserialize_with = "opt_from_str")]
    pub hash_key: Option<HashKey>,
    /// Host header values this upstream serves; empty means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Requests whose path starts with this go here; the longest matching prefix wins.
    #[serde(default = "default_prefix", deserialize_with = "path_prefix")]
    pub path_prefix: String,
    /// `host:port[=weight]` strings or `{ addr, weight }` tables. Required unless `[upstream.dns]`
    /// finds the backends instead (one or the other, never both).
    #[serde(default, deserialize_with = "backend_list")]
    pub backends: Vec<BackendSpec>,
    /// `[upstream.dns]`: the backends are what a DNS name resolves to, kept up to date
    /// (`control/discovery.rs`).
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// Ramp a new or recovered backend's weight from 10% to 100% over this window.
    #[serde(default, with = "humantime_serde")]
    pub slow_start: Option<Duration>,
    /// Below this fraction of healthy backends, ignore health (Envoy's panic threshold; 0 disables).
    #[serde(default = "default_panic", deserialize_with = "fraction")]
    pub panic_threshold: f64,
    /// Time constant of the peak-EWMA latency estimate.
    #[serde(default = "default_ewma_decay", with = "humantime_serde")]
    pub ewma_decay: Duration,
    /// `[upstream.timeouts]`
    #[serde(default)]
    pub timeouts: Timeouts,
    /// `[upstream.retry]`
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[upstream.limits]`
    #[serde(default)]
    pub limits: UpstreamLimits,
    /// `[upstream.health_check]`: active health checks; off when absent.
    pub health_check: Option<HealthCheckConfig>,
    /// `[upstream.outlier_detection]`: passive ejection of failing backends; on with its defaults when
    /// absent, `None` (off) when the table says `enabled = false`.
    #[serde(default = "default_outlier", deserialize_with = "outlier_detection")]
    pub outlier_detection: Option<OutlierConfig>,
    /// `[upstream.options]`: per-algorithm tuning.
    #[serde(default)]
    pub options: OptionsConfig,
    /// How to talk to the backends: `"http1"` (default, pooled), `"h2c"` or `"h2"` (HTTP/2 over TLS).
    #[serde(default)]
    pub protocol: Protocol,
    /// `[upstream.tls]`: talk TLS to the backends, and how to check their certificates.
    pub tls: Option<UpstreamTls>,
}

fn default_prefix() -> String {
    "/".to_string()
}

fn default_panic() -> f64 {
    0.5
}

/// Passive health is on unless a config turns it off: a dead backend must not keep its share of the
/// traffic because nobody thought of writing a table (nginx counts failures without being asked, too).
fn default_outlier() -> Option<OutlierConfig> {
    Some(OutlierConfig::default())
}

fn outlier_detection<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OutlierConfig>, D::Error> {
    let config = OutlierConfig::deserialize(d)?;
    Ok(config.enabled.then_some(config))
}

fn default_ewma_decay() -> Duration {
    Duration::from_secs(10)
}

impl UpstreamConfig {
    /// An upstream with every default, as quick mode and tests build them.
    pub fn new(name: impl Into<String>, algorithm: Algorithm, backends: Vec<BackendSpec>) -> Self {
        UpstreamConfig {
            name: name.into(),
            algorithm,
            hash_key: None,
            hosts: Vec::new(),
            path_prefix: default_prefix(),
            backends,
            dns: None,
            slow_start: None,
            panic_threshold: default_panic(),
            ewma_decay: default_ewma_decay(),
            timeouts: Timeouts::default(),
            retry: RetryConfig::default(),
            limits: UpstreamLimits::default(),
            health_check: None,
            outlier_detection: default_outlier(),
            options: OptionsConfig::default(),
            protocol: Protocol::default(),
            tls: None,
        }
    }

    /// The backend-state options this upstream's set is built with.
    pub fn set_options(&self) -> SetOptions {
        SetOptions {
            panic_threshold: self.panic_threshold,
            slow_start: self.slow_start.map(|d| d.as_nanos() as u64),
            ewma_decay: self.ewma_decay.as_nanos() as u64,
            ..SetOptions::default()
        }
    }
}

/// `[upstream.timeouts]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP connect to a backend.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From the end of sending a request (its body included) to receiving the response headers, per
    /// attempt.
    #[serde(with = "humantime_serde")]
    pub response_headers: Duration,
    /// From receiving the request to the response headers, over all attempts together, not counting
    /// the time the client takes to send its body.
    #[serde(with = "humantime_serde")]
    pub request: Duration,
    /// Longest silence from a backend while its response body is read (nginx's
    /// `proxy_read_timeout`, HAProxy's `timeout server`): the client's response ends as an error.
    #[serde(with = "humantime_serde")]
    pub read: Duration,
    /// Longest time a backend may leave request bytes unaccepted while a body is sent (nginx's
    /// `proxy_send_timeout`). Waiting for the client's next bytes does not count.
    #[serde(with = "humantime_serde")]
    pub send: Duration,
    /// How long a pooled upstream connection may sit idle before it is closed.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            response_headers: Duration::from_secs(30),
            request: Duration::from_secs(60),
            read: Duration::from_secs(60),
            send: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

/// `[upstream.retry]`
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per request, the first one included (1 disables retries).
    pub attempts: u32,
    /// Each request deposits this many retry tokens into the upstream's budget.
    pub budget_ratio: f64,
    /// And the budget also refills by this many tokens per second, so low traffic can still retry.
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { attempts: 3, budget_ratio: 0.2, budget_min_per_sec: 10 }
    }
}

/// `[upstream.limits]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamLimits {
    /// Circuit breaker: a backend with this many requests in flight is passed over.
    pub max_in_flight_per_backend: u64,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        UpstreamLimits { max_in_flight_per_backend: 10_000 }
    }
}

/// `[upstream.options]`: each field overrides one of [`AlgorithmOptions`]' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsConfig {
    /// Ring hash: points per unit of weight.
    pub ring_points_per_weight: Option<u32>,
    /// Maglev: table size (a prime).
    pub maglev_table_size: Option<usize>,
    /// Bounded load: the epsilon in `(1 + epsilon) * average`.
    pub bounded_load_epsilon: Option<f64>,
    /// Power of two / peak EWMA with weights: the bias exponent.
    pub active_request_bias: Option<f64>,
    /// Seed of the randomised algorithms.
    pub seed: Option<u64>,
}

impl OptionsConfig {
    /// The algorithm options: these overrides on top of the defaults.
    pub fn algorithm_options(&self) -> AlgorithmOptions {
        let d = AlgorithmOptions::default();
        AlgorithmOptions {
            ring_points_per_weight: self.ring_points_per_weight.unwrap_or(d.ring_points_per_weight),
            maglev_table_size: self.maglev_table_size.unwrap_or(d.maglev_table_size),
            bounded_load_epsilon: self.bounded_load_epsilon.unwrap_or(d.bounded_load_epsilon),
            active_request_bias: self.active_request_bias.unwrap_or(d.active_request_bias),
            seed: self.seed.unwrap_or(d.seed),
        }
    }
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Not a position in the file (it could not be read at all).
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in one file (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Read and parse a file, and make its certificate paths relative to the file's directory, so a
    /// config works from any directory. Also returns the text, for the positions of later errors.
    /// Whether the certificates load is checked above this layer ([`Config::load`], in
    /// `control/reload.rs`), where TLS lives.
    pub fn read(path: &std::path::Path) -> Result<(Config, String), ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError { file: file.clone(), line: 0, column: 0, message: e.to_string() }])
        })?;
        let mut c = Config::parse(&text, &file)?;
        if let Some(dir) = path.parent() {
            resolve_paths(&mut c.server.tls, dir);
            for u in &mut c.upstreams {
                if let Some(ca) = u.tls.as_mut().and_then(|t| t.ca.as_mut())
                    && ca.is_relative()
                {
                    *ca = dir.join(&*ca);
                }
            }
        }
        if let Some(admin) = c.admin.as_mut()
            && let Some(token_file) = admin.token_file.as_mut()
        {
            if let Some(dir) = path.parent()
                && token_file.is_relative()
            {
                *token_file = dir.join(&*token_file);
            }
            match read_token(token_file) {
                Ok(token) => admin.token = Some(token),
                Err(message) => {
                    let (line, column) = admin_key_position(&text, "token_file");
                    return Err(ConfigErrors(vec![ConfigError { file, line, column, message }]));
                }
            }
        }
        c.source = Some(path.to_path_buf());
        Ok((c, text))
    }

    /// Parse and check the text of a config file; `file` only labels the errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
            ConfigError { file: file.to_string(), line, column, message }
        };
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigErrors(vec![at(e.span(), e.message().trim_end().to_string())]))?;

        let mut errors = upstream_name_errors(text, &at);
        if !config.server.listen_tls.is_empty() && config.server.tls.is_empty() {
            errors.push(at(
                None,
                "server.listen_tls needs at least one [[server.tls]] certificate".to_string(),
            ));
        }
        if config.upstreams.is_empty() {
            errors.push(at(None, "no [[upstream]]: nothing to balance".to_string()));
        }
        if let Some(message) = config.admin.as_ref().and_then(AdminConfig::open_to_the_network) {
            errors.push(at(Some(admin_key_span(text, "listen")), message));
        }
        if let Some(admin) = &config.admin
            && admin.token.is_some()
            && admin.token_file.is_some()
        {
            errors.push(at(
                Some(admin_key_span(text, "token_file")),
                "admin: token and token_file both set; keep one".to_string(),
            ));
        }
        for u in &config.upstreams {
            use Protocol;
            match (u.protocol, &u.tls) {
                (Protocol::H2c, Some(_)) => errors.push(at(
                    None,
                    format!("upstream {:?}: protocol = \"h2c\" is HTTP/2 in clear text; with [upstream.tls] use \"h2\"", u.name),
                )),
                (Protocol::H2, None) => errors.push(at(
                    None,
                    format!("upstream {:?}: protocol = \"h2\" needs [upstream.tls] with ca or insecure_skip_verify = true", u.name),
                )),
                _ => {}
            }
            if let Err(e) = lb_algorithms::build(
                u.algorithm,
                lb_algorithms::BackendSet::new(u.backends.clone(), u.set_options()),
                &u.options.algorithm_options(),
            ) {
                errors.push(at(None, format!("upstream {:?}: {e}", u.name)));
            }
        }
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    /// A one-line summary, as `lb check` prints it.
    pub fn summary(&self) -> String {
        let listen: Vec<String> = self.server.listen.iter().map(|a| a.to_string()).collect();
        let ups: Vec<String> = self
            .upstreams
            .iter()
            .map(|u| {
                let n = u.backends.len();
                let plural = if n == 1 { "" } else { "s" };
                let found = match u.dns.as_ref().map(|d| &d.query) {
                    Some(DnsQuery::Name { name, port }) => format!("backends from dns {name}:{port}"),
                    Some(DnsQuery::Srv(srv)) => format!("backends from dns srv {srv}"),
                    None => format!("{n} backend{plural}"),
                };
                // How the backends are spoken to, when it is not plain HTTP/1.1.
                let how = match (u.protocol, u.tls.is_some()) {
                    (Protocol::Http1, false) => "",
                    (Protocol::Http1, true) => ", tls",
                    (Protocol::H2c, _) => ", h2c",
                    (Protocol::H2, _) => ", h2 over tls",
                };
                format!("{} ({}, {found}{how})", u.name, u.algorithm)
            })
            .collect();
        let tls = if self.server.listen_tls.is_empty() {
            String::new()
        } else {
            let addrs: Vec<String> = self.server.listen_tls.iter().map(|a| a.to_string()).collect();
            let n = self.server.tls.len();
            format!("; tls {} ({n} certificate{})", addrs.join(", "), if n == 1 { "" } else { "s" })
        };
        format!("listen {}{tls}; upstreams: {}", listen.join(", "), ups.join(", "))
    }
}

impl AdminConfig {
    /// An admin API on `listen` with every switch off and no token.
    pub fn on(listen: SocketAddr) -> Self {
        AdminConfig { listen: Some(listen), ..AdminConfig::default() }
    }

    /// Why this admin API may not start as configured: an address other than loopback with no token,
    /// which would let anyone who can reach it add, remove and drain backends.
    pub fn open_to_the_network(&self) -> Option<String> {
        let addr = self.listen?;
        if addr.ip().is_loopback() || self.token.is_some() || self.token_file.is_some() {
            return None;
        }
        Some(format!(
            "admin.listen = \"{addr}\" is not a loopback address and there is no token: anyone who can \
             reach it could add, remove and drain backends; set [admin] token_file (or token), or listen \
             on 127.0.0.1"
        ))
    }
}

/// Read a token file: the token is the file's text without surrounding whitespace (the newline an
/// editor or `echo` adds).
fn read_token(path: &std::path::Path) -> Result<AdminToken, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("admin.token_file {}: {e}", path.display()))?;
    AdminToken::new(text.trim()).map_err(|e| format!("admin.token_file {}: {e}", path.display()))
}

/// Where `[admin] key = ...`'s value is in `text` (the `[admin]` table when the key is absent).
fn admin_key_span(text: &str, key: &str) -> std::ops::Range<usize> {
    type Table = std::collections::BTreeMap<String, toml::Spanned<toml::Value>>;
    #[derive(Deserialize)]
    struct File {
        admin: Option<toml::Spanned<Table>>,
    }
    match toml::from_str::<File>(text) {
        Ok(File { admin: Some(admin) }) => {
            admin.get_ref().get(key).map_or_else(|| admin.span(), toml::Spanned::span)
        }
        _ => 0..0,
    }
}

fn admin_key_position(text: &str, key: &str) -> (usize, usize) {
    line_col(text, admin_key_span(text, key).start)
}

/// Where the `[upstream.tls]` of the `index`th upstream is wrong: its `ca` value, else its
/// `server_name`, else the table itself (what `lb check` points at when the CA file is missing, empty
/// or not PEM).
pub fn upstream_tls_position(text: &str, index: usize) -> (usize, usize) {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        upstream: Vec<Up>,
    }
    #[derive(Deserialize)]
    struct Up {
        tls: Option<toml::Spanned<Tls>>,
    }
    #[derive(Deserialize)]
    struct Tls {
        ca: Option<toml::Spanned<String>>,
        server_name: Option<toml::Spanned<String>>,
    }
    let span = toml::from_str::<File>(text).ok().and_then(|f| {
        let tls = f.upstream.into_iter().nth(index)?.tls?;
        let table = tls.span();
        let tls = tls.into_inner();
        Some(tls.ca.map(|c| c.span()).or(tls.server_name.map(|n| n.span())).unwrap_or(table))
    });
    span.map_or((1, 1), |s| line_col(text, s.start))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn opt_from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    from_str(d).map(Some)
}

fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!("{v} is not a fraction between 0 and 1")))
    }
}

fn path_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.starts_with('/') {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!("path_prefix {s:?} must start with '/'")))
    }
}

fn one_or_many_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    /// One address, parsed where it stands so an error points at it (not at the list).
    struct Listen(SocketAddr);
    impl<'de> Deserialize<'de> for Listen {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            // The error must be raised inside the visitor: only errors raised while the parser is
            // handing us the value get that value's position.
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Listen;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an address \"IP:PORT\"")
                }
                fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Listen, E> {
                    s.parse()
                        .map(Listen)
                        .map_err(|_| E::custom(format!("bad listen address {s:?}: expected IP:PORT")))
                }
            }
            d.deserialize_str(V)
        }
    }
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<SocketAddr>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an address \"IP:PORT\" or a list of them")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            s.parse()
                .map(|a| vec![a])
                .map_err(|_| E::custom(format!("bad listen address {s:?}: expected IP:PORT")))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Listen(a)) = seq.next_element()? {
                out.push(a);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visitor)
}

/// Check a backend address: `host:port`, where host is an IP or a DNS name, resolved when connecting.
pub fn check_backend_addr(addr: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad backend address {addr:?}: {why}"));
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = addr.rsplit_once(':') else { return bad("expected host:port") };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return bad("the port must be a number from 1 to 65535");
    }
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if host_ok { Ok(()) } else { bad("expected host:port") }
}

/// Parse `host:port[=weight]`.
pub fn parse_backend(s: &str) -> Result<BackendSpec, String> {
    let (addr, weight) = match s.split_once('=') {
        Some((a, w)) => (a.trim(), Some(w.trim())),
        None => (s.trim(), None),
    };
    check_backend_addr(addr)?;
    let weight = match weight {
        None => 1,
        Some(w) => match w.parse::<u32>() {
            Ok(0) => return Err(format!("backend {addr}: weight 0; use drain to stop sending it traffic")),
            Ok(w) => w,
            Err(_) => return Err(format!("backend {addr}: bad weight {w:?}, expected a whole number >= 1")),
        },
    };
    Ok(BackendSpec { addr: addr.to_string(), weight })
}

fn backend_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BackendSpec>, D::Error> {
    Vec::<BackendEntry>::deserialize(d).map(|v| v.into_iter().map(|e| e.0).collect())
}

/// One entry of `backends`: either form, checked as it is read so an error points at the entry.
struct BackendEntry(BackendSpec);

impl<'de> Deserialize<'de> for BackendEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A hand-written visitor rather than `#[serde(untagged)]`: untagged buffers the value first,
        // and the parser's position for the error would then be the whole list, not this entry.
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BackendEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""host:port", "host:port=weight" or { addr = "host:port", weight = N }"#)
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<BackendEntry, E> {
                parse_backend(s).map(BackendEntry).map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<BackendEntry, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    addr: String,
                    #[serde(default = "one")]
                    weight: u32,
                }
                fn one() -> u32 {
                    1
                }
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if t.weight == 0 {
                    return Err(serde::de::Error::custom(format!(
                        "backend {}: weight 0; use drain to stop sending it traffic",
                        t.addr
                    )));
                }
                check_backend_addr(&t.addr).map_err(serde::de::Error::custom)?;
                Ok(BackendEntry(BackendSpec { addr: t.addr, weight: t.weight }))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A duration as the config writes it (`1s`, `250ms`, `1m 30s`), for logs and error messages that echo a
/// configured value: one formatter for every message, the same one `humantime_serde` reads.
pub fn format_duration(d: std::time::Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

/// The upstreams' names and backend sources, checked on a second pass over the text that keeps their
/// positions: each name once, and backends from a list or from DNS, exactly one of the two.
fn upstream_name_errors(
    text: &str,
    at: &dyn Fn(Option<std::ops::Range<usize>>, String) -> ConfigError,
) -> Vec<ConfigError> {
    #[derive(Deserialize)]
    struct Names {
        #[serde(default)]
        upstream: Vec<NameOnly>,
    }
    #[derive(Deserialize)]
    struct NameOnly {
        name: toml::Spanned<String>,
        backends: Option<toml::Spanned<toml::Value>>,
        dns: Option<toml::Spanned<toml::Value>>,
    }
    let mut errors = Vec::new();
    if let Ok(names) = toml::from_str::<Names>(text) {
        for n in &names.upstream {
            let name = n.name.get_ref();
            match (&n.backends, &n.dns) {
                (Some(b), Some(_)) => errors.push(at(
                    Some(b.span()),
                    format!(
                        "upstream {name:?}: backends and [upstream.dns] are both set: the backends \
                         come from the list or from DNS, not both; keep one"
                    ),
                )),
                (None, None) => errors.push(at(
                    Some(n.name.span()),
                    format!("upstream {name:?}: no backends: set backends = [...] or [upstream.dns]"),
                )),
                _ => {}
            }
        }
        for (i, n) in names.upstream.iter().enumerate() {
            if names.upstream[..i].iter().any(|m| m.name.get_ref() == n.name.get_ref()) {
                errors
                    .push(at(Some(n.name.span()), format!("duplicate upstream name {:?}", n.name.get_ref())));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "lb.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[upstream]]
name = "app"
algorithm = "round-robin"
backends = ["127.0.0.1:9001", "backend-2:9002=3", { addr = "127.0.0.1:9003", weight = 2 }]
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = Config::parse(GOOD, "lb.toml");
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let u = &c.upstreams[0];
        assert_eq!(
            u.backends,
            vec![
                BackendSpec::new("127.0.0.1:9001"),
                BackendSpec::weighted("backend-2:9002", 3),
                BackendSpec::weighted("127.0.0.1:9003", 2)
            ]
        );
        assert_eq!(u.timeouts, Timeouts::default());
        assert_eq!(u.retry.attempts, 3);
        assert_eq!(u.path_prefix, "/");
    }

    #[test]
    fn passive_health_is_on_unless_turned_off() {
        let parse = |text: &str| Config::parse(text, "lb.toml").unwrap_or_else(|e| panic!("{e}"));
        let outlier = |c: &Config| c.upstreams[0].outlier_detection.clone();
        assert_eq!(outlier(&parse(GOOD)), Some(OutlierConfig::default()), "no table: the defaults");
        let tuned = parse(&format!("{GOOD}[upstream.outlier_detection]\nbase_ejection_time = \"3s\"\n"));
        assert_eq!(outlier(&tuned).map(|o| o.base_ejection_time), Some(Duration::from_secs(3)));
        let off = parse(&format!("{GOOD}[upstream.outlier_detection]\nenabled = false\n"));
        assert_eq!(outlier(&off), None);
    }

    #[test]
    fn semantic_errors_point_at_the_value() {
        // Line 7 is `algorithm = "fastest"`; the value starts at column 13.
        let text = GOOD.replace("\"round-robin\"", "\"fastest\"");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("lb.toml:7:13: unknown algorithm \"fastest\"; expected one of"), "{e:?}");

        let e = errors(&GOOD.replace("backend-2:9002=3", "backend-2:9002=0"));
        assert!(e[0].starts_with("lb.toml:8:"), "{e:?}");
        assert!(e[0].contains("weight 0"), "{e:?}");

        let e = errors(&GOOD.replace("127.0.0.1:9001", "127.0.0.1"));
        assert!(e[0].starts_with("lb.toml:8:"), "{e:?}");
        assert!(e[0].contains("bad backend address \"127.0.0.1\""), "{e:?}");
    }

    #[test]
    fn trusted_proxies_are_read_and_a_bad_one_is_pointed_at() -> Result<(), String> {
        let text = GOOD.replace("listen = [", "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nlisten = [");
        let c = Config::parse(&text, "lb.toml").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.server.trusted_proxies, ["10.0.0.0/8".parse()?, "::1".parse()?]);
        // Line 3 is the list; the bad entry starts at column 34.
        let e = errors(
            &GOOD.replace("listen = [", "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\nlisten = ["),
        );
        assert!(e[0].starts_with("lb.toml:3:34: bad trusted proxy \"10.0.0.0/33\""), "{e:?}");
        Ok(())
    }

    #[test]
    fn unknown_fields_and_bad_hash_keys_are_rejected_in_place() {
        let e = errors(&GOOD.replace("name = \"app\"", "name = \"app\"\nalgoritm = \"random\""));
        assert!(e[0].starts_with("lb.toml:7:1: unknown field `algoritm`"), "{e:?}");
        let e = errors(&GOOD.replace("name = \"app\"", "name = \"app\"\nhash_key = \"body\""));
        assert!(e[0].starts_with("lb.toml:7:12: invalid hash key \"body\""), "{e:?}");
    }

    #[test]
    fn duplicate_names_are_reported_at_the_second_one() {
        let text = format!("{GOOD}\n[[upstream]]\nname = \"app\"\nalgorithm = \"random\"\nbackends = []\n");
        let e = errors(&text);
        assert!(e.iter().any(|e| e.starts_with("lb.toml:11:8: duplicate upstream name \"app\"")), "{e:?}");
    }

    #[test]
    fn dns_replaces_backends_and_is_checked_in_place() {
        let dns = GOOD.replace(
            "backends = [\"127.0.0.1:9001\", \"backend-2:9002=3\", { addr = \"127.0.0.1:9003\", weight = 2 }]",
            "[upstream.dns]\nname = \"app.internal\"\nport = 9001\nresolver = \"127.0.0.1:5353\"\nmin_refresh = \"200ms\"",
        );
        let c = Config::parse(&dns, "lb.toml").unwrap_or_else(|e| panic!("{e}"));
        let d = c.upstreams[0].dns.clone().unwrap_or_else(|| panic!("no dns"));
        assert_eq!(d.query, DnsQuery::Name { name: "app.internal".into(), port: 9001 });
        assert_eq!(d.resolver, Some("127.0.0.1:5353".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert_eq!((d.min_refresh, d.max_refresh), (Duration::from_millis(200), DNS_MAX_REFRESH));
        assert_eq!(d.refresh_after(Duration::ZERO), Duration::from_millis(200), "TTL 0: min_refresh");
        assert_eq!(d.refresh_after(Duration::from_secs(3600)), DNS_MAX_REFRESH);
        assert!(c.upstreams[0].backends.is_empty());
        assert!(
            c.summary().ends_with("app (round-robin, backends from dns app.internal:9001)"),
            "{}",
            c.summary()
        );

        // Both: pointed at `backends` (line 8, column 12).
        let e = errors(&format!("{GOOD}[upstream.dns]\nname = \"app.internal\"\nport = 9001\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("lb.toml:8:12: upstream \"app\": backends and [upstream.dns] are both set"),
            "{e:?}"
        );
        // Neither: pointed at the name.
        let e = errors(&GOOD.replace("backends = [", "#"));
        assert!(e[0].starts_with("lb.toml:6:8: upstream \"app\": no backends"), "{e:?}");
        // Mistakes inside the table point at it (line 8).
        for (table, reason) in [
            ("name = \"a.test\"", "name needs port"),
            ("srv = \"_h._tcp.a.test\"\nport = 1", "srv records carry their own port"),
            ("name = \"a.test\"\nsrv = \"_h._tcp.a.test\"", "name and srv both set"),
            ("name = \"a test\"\nport = 1", "\"a test\" is not a DNS name"),
            ("name = \"a.test\"\nport = 1\nresolver = \"dns.test\"", "expected IP or IP:PORT"),
            (
                "name = \"a.test\"\nport = 1\nmin_refresh = \"10s\"\nmax_refresh = \"1s\"",
                "max_refresh is shorter",
            ),
            ("name = \"a.test\"\nport = 1\nmin_refresh = \"1ms\"", "at least 100ms"),
        ] {
            let e = errors(&GOOD.replace("backends = [\"127.0.0.1:9001\", \"backend-2:9002=3\", { addr = \"127.0.0.1:9003\", weight = 2 }]", &format!("[upstream.dns]\n{table}")));
            assert!(e[0].starts_with("lb.toml:8:1: ") && e[0].contains(reason), "{table}: {e:?}");
        }
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
