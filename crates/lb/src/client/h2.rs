//! HTTP/2 to backends (`protocol = "h2c"` or `"h2"` on an upstream), optionally over TLS.
//!
//! # When a backend wants HTTP/2
//!
//! Most backends are happy with HTTP/1.1 over a warm keep-alive pool, which is `lb`'s default path
//! (`h1.rs`, `pool.rs`). Some speak only HTTP/2: gRPC services, and servers that multiplex thousands
//! of slow streams over a few connections. For those, an upstream says `protocol = "h2c"` (HTTP/2 in
//! clear text, with prior knowledge) or `protocol = "h2"` (HTTP/2 over TLS, negotiated with ALPN), and
//! requests to it take this separate path: hyper-util's pooled client with `http2_only`, one
//! multiplexed connection per backend shared by every worker thread (HTTP/2 needs no more: streams,
//! not connections, carry the concurrency).
//!
//! # TLS to backends
//!
//! `[upstream.tls]` sets how `lb` checks the backend's certificate (see `upstream_tls.rs`, which the
//! HTTP/1.1 path shares); here the handshake offers `h2` in ALPN.
//!
//! # Retries
//!
//! The same rules as the HTTP/1.1 path, from the same code (`attempts.rs`): a request goes to a
//! *different* backend after a connect failure (refused, timed out, TLS handshake), and an idempotent
//! request without a body also after a broken stream or a 502/503/504, within `[upstream.retry]
//! attempts` and the retry budget. One thing is particular to this path: hyper's client takes the
//! request by value and does not give it back when the connection fails, so a request *with* a body
//! travels in a [`Reclaimable`] wrapper that hands the untouched body back for the next attempt.
//!
//! The same elsewhere: nginx `grpc_pass grpcs://...` (nginx's `proxy_pass` speaks only HTTP/1.x to
//! backends); HAProxy `server s1 10.0.0.1:443 ssl alpn h2 ca-file ca.pem` or `proto h2`; Envoy
//! `http2_protocol_options` on the cluster with a `transport_socket` for TLS.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Protocol;
use crate::http::ClientBody;
use crate::net::backend_tls::{BackendConnector, BackendTls};
use crate::net::tls::TlsError;

/// The body sent to an HTTP/2 backend.
pub type H2Body = Either<Reclaimable, Empty<Bytes>>;

/// One upstream's HTTP/2 client (cheap to clone; the pool inside is shared).
#[derive(Clone)]
pub struct H2Client {
    pub(crate) client: Client<BackendConnector, H2Body>,
    pub(crate) scheme: &'static str,
}

impl std::fmt::Debug for H2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Client").field("scheme", &self.scheme).finish()
    }
}

impl H2Client {
    /// The client for an upstream with this protocol and its TLS settings (built once per upstream,
    /// see `upstream_tls.rs`); `None` for HTTP/1.1.
    pub fn new(
        protocol: Protocol,
        tls: Option<Arc<BackendTls>>,
        connect: Duration,
    ) -> Result<Option<H2Client>, TlsError> {
        let tls = match (protocol, tls) {
            (Protocol::Http1, _) => return Ok(None),
            (Protocol::H2c, _) => None,
            (Protocol::H2, Some(t)) => Some(t),
            (Protocol::H2, None) => {
                return Err(TlsError::File {
                    path: "[upstream.tls]".into(),
                    why: "protocol = \"h2\" needs [upstream.tls] with ca or insecure_skip_verify = true"
                        .into(),
                });
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client =
            Client::builder(TokioExecutor::new()).http2_only(true).build(BackendConnector::new(tls, connect));
        Ok(Some(H2Client { client, scheme }))
    }
}

/// The client's request body on its way to an HTTP/2 backend, given back if the attempt ends before
/// hyper ever read from it.
///
/// hyper's client takes the request by value and does not return it when the connection cannot be
/// made, so a request with a body could not go to another backend after a refused connection,
/// though not a byte of it was sent. This wrapper is dropped with the failed request, and when it was
/// never polled it puts the body back where the retry loop finds it. (A lock taken once per attempt,
/// not per chunk: the body is polled directly.)
#[derive(Debug)]
pub struct Reclaimable {
    body: Option<ClientBody>,
    home: Arc<Mutex<Option<ClientBody>>>,
    touched: bool,
}

impl Reclaimable {
    /// Wrap `body`; if the attempt drops it unpolled, it goes back into `home`.
    pub(crate) fn new(body: ClientBody, home: Arc<Mutex<Option<ClientBody>>>) -> Self {
        Reclaimable { body: Some(body), home, touched: false }
    }
}

impl http_body::Body for Reclaimable {
    type Data = Bytes;
    type Error = <ClientBody as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        this.touched = true;
        match this.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.as_ref().map_or_else(|| http_body::SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for Reclaimable {
    fn drop(&mut self) {
        if !self.touched
            && let Some(body) = self.body.take()
        {
            *self.home.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
        }
    }
}
