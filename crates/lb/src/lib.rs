//! `lb`: an HTTP load balancer built on `lb-algorithms`, small enough to read in an afternoon and fast
//! enough to stand next to nginx and HAProxy.
//!
//! It accepts HTTP/1.1 clients, routes each request by host and path to an upstream group, lets the
//! group's algorithm pick a backend, and streams the request and the response through a pooled
//! keep-alive connection. Failed attempts are retried on another backend within a budget; failing
//! backends are taken out by active health checks and passive outlier detection; every decision can be
//! explained to the client (`X-Lb-Explain: 1`) and is counted in Prometheus metrics.
//!
//! # Layout
//!
//! - [`config`]: the TOML schema, checked with `file:line:column` errors.
//! - [`upstream`]: upstream groups (backend set + balancer + stats, swapped atomically) and routing.
//! - [`server`]: worker threads, `SO_REUSEPORT` listeners, the accept loop, graceful shutdown.
//! - [`listeners`]: the listening sockets, bound at start and added or removed by a reload.
//! - [`proxy`]: the forwarding function: pick, connect, send, retry, map failures to 502/503/504.
//! - [`pool`]: each worker's pool of keep-alive connections to backends.
//! - [`h1`]: the HTTP/1.1 client for the upstream leg, run inside the request's own task.
//! - [`retry`]: which failures are retried, and the retry budget. `attempts`: the retry loop's
//!   bookkeeping (pick, outcome, explain headers), shared by every way of reaching a backend.
//! - [`health`]: active health checks. [`outlier`]: passive ejection of failing backends.
//! - [`metrics`]: counters and the Prometheus text. [`admin`]: the admin HTTP API. [`access_log`]: JSON lines.
//! - [`limits`]: `[server.limits]` and the per-connection watchdog (header, body, idle timeouts).
//! - [`validate`]: requests refused before routing (bad `Host`, a host we do not serve, too large a body).
//! - [`h2_upstream`]: HTTP/2 (h2c, or h2 over TLS) to backends of upstreams that ask for it.
//! - [`tls`]: TLS termination (certificates, SNI, ALPN h2/http1.1).
//! - [`upstream_tls`]: TLS to backends (`[upstream.tls]`: CA, name, the plain-or-TLS stream).
//! - [`upgrade`]: WebSocket and other `Upgrade` requests tunnelled to a backend.
//! - [`reload`]: hot reload of the configuration file (`SIGHUP`, admin `POST /reload`).
//! - [`cli`]: the command line (demo mode, quick mode, `--config`, `check`); `main.rs` only calls it.
//!
//! # Using it as a library
//!
//! Tests and the demo start the proxy in-process, on port 0, and stop it when done:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use lb::config::{Config, UpstreamConfig};
//! use lb_algorithms::{Algorithm, BackendSpec};
//!
//! let mut config = Config::default();
//! config.server.listen = vec!["127.0.0.1:0".parse()?];
//! config.server.workers = 1;
//! config.upstreams.push(UpstreamConfig::new(
//!     "app",
//!     Algorithm::RoundRobin,
//!     vec![BackendSpec::new("127.0.0.1:9001"), BackendSpec::new("127.0.0.1:9002")],
//! ));
//! let running = lb::start(config).await?;
//! println!("proxy on http://{}", running.listen[0]);
//! running.shutdown().await;
//! # Ok(()) }
//! ```

pub mod access_log;
pub mod admin;
pub(crate) mod attempts;
pub mod cli;
pub mod config;
pub mod h1;
pub mod h1_server;
pub mod h2_upstream;
pub mod health;
pub mod limits;
pub mod listeners;
pub mod metrics;
pub mod outlier;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod retry;
pub mod server;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod upstream_tls;
pub mod validate;

pub use config::Config;
pub use server::{Running, run, start};

/// What can go wrong in the proxy outside a single request (requests fail with an HTTP status instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why (in the message rather than as a `source`, so an error chain prints it once).
        error: std::io::Error,
    },
    /// A worker thread or runtime could not be started.
    #[error("cannot start worker {worker}: {error}")]
    Worker {
        /// Its number.
        worker: usize,
        /// Why.
        error: std::io::Error,
    },
    /// The algorithm refused its options.
    #[error("upstream {upstream}: {error}")]
    Algorithm {
        /// The upstream.
        upstream: String,
        /// Why.
        error: lb_algorithms::BuildError,
    },
    /// A backend address or list is not acceptable.
    #[error("upstream {upstream}: {reason}")]
    BadBackend {
        /// The upstream.
        upstream: String,
        /// Why.
        reason: String,
    },
    /// No backend with this address in this upstream.
    #[error("upstream {upstream}: no backend {addr}")]
    UnknownBackend {
        /// The upstream.
        upstream: String,
        /// The address asked for.
        addr: String,
    },
    /// No upstream with this name.
    #[error("no upstream named {0:?}")]
    UnknownUpstream(String),
    /// The configuration has errors.
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    /// TLS could not be set up (a certificate or key file).
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
}
