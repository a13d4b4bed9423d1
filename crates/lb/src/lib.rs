//! `lb`: an HTTP load balancer built on `lb-algorithms`, small enough to read in an afternoon and fast
//! enough to stand next to nginx and HAProxy.
//!
//! It accepts HTTP/1.1 and HTTP/2 clients, routes each request by host and path to an upstream group,
//! lets the group's algorithm pick a backend, and streams the request and the response through a pooled
//! keep-alive connection. Failed attempts are retried on another backend within a budget; failing
//! backends are taken out by active health checks and passive outlier detection; every decision can be
//! explained to the client (`X-Lb-Explain: 1`) and is counted in Prometheus metrics.
//!
//! # Layout
//!
//! One folder per layer, bottom to top; a module imports only from the layers above it in this list
//! (`tests/layers.rs` fails on an import that points up):
//!
//! - [`config`]: the TOML schema and its checks, with `file:line:column` errors. Imports nothing of ours.
//! - `net/`: listening sockets, TLS toward clients and backends, a client connection's transport, the
//!   connection limits and watchdog.
//! - `http/`: HTTP/1.1 (one codec, a client half and a server half), the forwarding fields
//!   (hop-by-hop, `X-Forwarded-*`), the client's request body. Nothing of upstreams or balancing.
//! - `error.rs`: [`Error`], what can fail outside a request.
//! - `client/`: each worker's pool of HTTP/1.1 connections to backends, the HTTP/2 client.
//! - `upstream/`: upstream groups (backend set + balancer + stats, swapped atomically), routing, the
//!   retry budget.
//! - `observe/`: the Prometheus metrics and the access log.
//! - `control/`: the live state workers read, health checks, outlier detection, reload, the admin API.
//! - `forward/`: the request path: prepare, route, attempts and retries, validation, the response body,
//!   the HTTP/2 and upgrade paths.
//! - `server/`: worker threads, the accept loop, the HTTP/1.x connection loop, graceful shutdown.
//! - `cli.rs`: the command line (demo mode, quick mode, `--config`, `check`); `main.rs` only calls it.
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

pub mod config;

pub mod cli;
pub(crate) mod client;
pub(crate) mod control;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod http;
pub(crate) mod net;
pub(crate) mod observe;
pub(crate) mod server;
pub(crate) mod upstream;

pub use config::Config;
pub use control::admin::BackendsView;
pub use error::Error;
pub use forward::RequestKeys;
pub use net::tls::TlsError;
pub use server::{Running, run, start, start_with};
pub use upstream::stats::{BUCKETS_SECONDS, FailureKind};

/// Pieces of the proxy that its own integration tests drive directly (a backend connection over TLS,
/// the TLS acceptor). Not a stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::client::pool::{Pool, connect};
    pub use crate::http::h1::client::{Timers, send};
    pub use crate::net::backend_tls::BackendTls;
    pub use crate::net::tls::acceptor;
}
