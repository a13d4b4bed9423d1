//! What can go wrong in the proxy outside a single request (requests fail with an HTTP status instead).

use crate::net::listeners::BindError;
use crate::net::tls::TlsError;

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
    Config(#[from] crate::config::ConfigErrors),
    /// The admin API would listen beyond loopback with no token (the message says what to do).
    #[error("{0}")]
    AdminOpen(String),
    /// TLS could not be set up (a certificate or key file).
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
}

impl From<BindError> for Error {
    fn from(e: BindError) -> Self {
        Error::Bind { addr: e.addr, error: e.error }
    }
}
